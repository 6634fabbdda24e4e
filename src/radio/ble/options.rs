//! `[radio.options]` of a BLE radio: what may be set, the defaults, and the errors that
//! name the key and say what is allowed.
//!
//! Owns parsing and validation only; must not open anything or hold state.

use std::time::Duration;

use crate::radio::OptionError;

type Result<T> = std::result::Result<T, OptionError>;

fn wrong(key: &str, message: String) -> OptionError {
    OptionError {
        key: key.to_string(),
        message,
    }
}

/// `[radio.options]` for a BLE radio.
#[derive(Debug, Clone, PartialEq)]
pub struct BleOptions {
    /// The shortest time between two advertisements of one address handed to the hub
    /// (default 10 s). Devices advertise every 100 ms to a few seconds; what comes in
    /// between is decoded (so counters and refusals stay exact) but not forwarded.
    pub min_interval: Duration,
    /// Addresses never heard before that may be handed to the hub per minute (default
    /// 30). A busy street shows thousands of addresses; the rest wait for the next minute.
    pub new_per_minute: u32,
    /// Addresses the rate limiter remembers (default 20 000); the oldest are forgotten.
    pub max_tracked: usize,
    /// An adopted device is offline after this many of its own advertising intervals
    /// without an advertisement (default 10).
    pub availability_multiplier: u32,
    /// ... but never sooner than this (default 60 s).
    pub availability_floor: Duration,
    /// Beacon presence: away after this long unheard (default 60 s).
    pub presence_away_after: Duration,
    /// Beacon presence: the smoothed RSSI must reach this (dBm) to count as present;
    /// `None` (default): any advertisement heard counts.
    pub presence_rssi: Option<i16>,
    /// Beacon presence: how far (dB) below `presence_rssi` the smoothed RSSI must fall
    /// before the beacon counts as away (default 5).
    pub presence_hysteresis: u8,
    /// Beacon presence: the weight of a new RSSI sample in the moving average, 0 < a
    /// <= 1 (default 0.3; 1 is no smoothing).
    pub presence_smoothing: f64,
    /// Addresses (besides iBeacon and Eddystone beacons) followed for presence: phones,
    /// key tags, badges.
    pub presence_tags: Vec<String>,
    /// `sim://ble` only: random addresses passing by besides the emulated room.
    pub sim_street: usize,
    /// `sim://ble` only: send the replayed, forged and downgraded advertisements.
    pub sim_faults: bool,
    /// `sim://ble` only: emulated time runs this many times faster than real time.
    pub sim_speed: u32,
    /// `sim://ble` only: when (emulated time) the room's iBeacon leaves and comes back.
    pub sim_beacon_away: Option<(Duration, Duration)>,
}

impl Default for BleOptions {
    fn default() -> Self {
        BleOptions {
            min_interval: Duration::from_secs(10),
            new_per_minute: 30,
            max_tracked: 20_000,
            availability_multiplier: 10,
            availability_floor: Duration::from_secs(60),
            presence_away_after: Duration::from_secs(60),
            presence_rssi: None,
            presence_hysteresis: 5,
            presence_smoothing: 0.3,
            presence_tags: Vec::new(),
            sim_street: 0,
            sim_faults: true,
            sim_speed: 1,
            sim_beacon_away: None,
        }
    }
}

const KNOWN_OPTIONS: &str = "min_interval, new_per_minute, max_tracked, \
    availability_multiplier, availability_floor, presence_away_after, presence_rssi, \
    presence_hysteresis, presence_smoothing, presence_tags, sim_street, sim_faults, sim_speed, \
    sim_beacon_away";

impl BleOptions {
    /// Validates `[radio.options]`; errors name the key and say what is allowed.
    pub fn parse(table: &toml::Table) -> Result<Self> {
        let mut o = Self::default();
        for (key, value) in table {
            match key.as_str() {
                "min_interval" => {
                    o.min_interval =
                        duration(key, value, Duration::ZERO, Duration::from_secs(3600))?
                }
                "availability_multiplier" => {
                    o.availability_multiplier = int(key, value, 2, 1000)? as u32
                }
                "availability_floor" => {
                    o.availability_floor = duration(
                        key,
                        value,
                        Duration::from_secs(1),
                        Duration::from_secs(7 * 24 * 3600),
                    )?
                }
                "presence_away_after" => {
                    o.presence_away_after = duration(
                        key,
                        value,
                        Duration::from_secs(1),
                        Duration::from_secs(24 * 3600),
                    )?
                }
                "presence_rssi" => o.presence_rssi = Some(int(key, value, -120, 0)? as i16),
                "presence_hysteresis" => o.presence_hysteresis = int(key, value, 0, 40)? as u8,
                "presence_smoothing" => {
                    o.presence_smoothing = value
                        .as_float()
                        .or_else(|| value.as_integer().map(|i| i as f64))
                        .filter(|a| *a > 0.0 && *a <= 1.0)
                        .ok_or_else(|| {
                            wrong(
                                key,
                                format!("ble option `{key}` must be a number above 0 and at most 1, got {value}"),
                            )
                        })?;
                }
                "presence_tags" => {
                    let bad = || {
                        wrong(
                            key,
                            format!("ble option `{key}` must be a list of addresses such as [\"aa:bb:cc:dd:ee:ff\"], got {value}"),
                        )
                    };
                    let list = value.as_array().ok_or_else(bad)?;
                    o.presence_tags = list
                        .iter()
                        .map(|v| {
                            v.as_str()
                                .filter(|s| fieldgate_ble::parse_address(s).is_some())
                                .map(str::to_ascii_lowercase)
                                .ok_or_else(bad)
                        })
                        .collect::<Result<_>>()?;
                }
                "new_per_minute" => o.new_per_minute = int(key, value, 1, 100_000)? as u32,
                "max_tracked" => o.max_tracked = int(key, value, 100, 1_000_000)? as usize,
                "sim_street" => o.sim_street = int(key, value, 0, 100_000)? as usize,
                "sim_speed" => o.sim_speed = int(key, value, 1, 1000)? as u32,
                "sim_beacon_away" => {
                    let bad = || {
                        wrong(
                            key,
                            format!("ble option `{key}` must be two durations, leaving then back, such as [\"20s\", \"40s\"], got {value}"),
                        )
                    };
                    let list = value.as_array().filter(|l| l.len() == 2).ok_or_else(bad)?;
                    let at = |v: &toml::Value| {
                        v.as_str()
                            .and_then(|s| humantime::parse_duration(s).ok())
                            .ok_or_else(bad)
                    };
                    let (leave, back) = (at(&list[0])?, at(&list[1])?);
                    if leave >= back {
                        return Err(bad());
                    }
                    o.sim_beacon_away = Some((leave, back));
                }
                "sim_faults" => {
                    o.sim_faults = value.as_bool().ok_or_else(|| {
                        wrong(
                            key,
                            format!("ble option `{key}` must be true or false, got {value}"),
                        )
                    })?;
                }
                other => {
                    return Err(wrong(
                        other,
                        format!("unknown ble option `{other}` (known: {KNOWN_OPTIONS})"),
                    ))
                }
            }
        }
        Ok(o)
    }
}

fn duration(key: &str, value: &toml::Value, min: Duration, max: Duration) -> Result<Duration> {
    let bad = || {
        wrong(
            key,
            format!(
                "ble option `{key}` must be a duration from {} to {} such as \"10s\", got {value}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        )
    };
    let text = value.as_str().ok_or_else(bad)?;
    humantime::parse_duration(text)
        .ok()
        .filter(|d| (min..=max).contains(d))
        .ok_or_else(bad)
}

fn int(key: &str, value: &toml::Value, min: i64, max: i64) -> Result<i64> {
    value
        .as_integer()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            wrong(
                key,
                format!("ble option `{key}` must be an integer from {min} to {max}, got {value}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<BleOptions> {
        BleOptions::parse(&toml::from_str(s).unwrap())
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse("").unwrap(), BleOptions::default());
        let o = parse(
            "min_interval = \"2s\"\nnew_per_minute = 5\nsim_street = 5000\nsim_faults = false",
        )
        .unwrap();
        assert_eq!(o.min_interval, Duration::from_secs(2));
        assert_eq!(
            (o.new_per_minute, o.sim_street, o.sim_faults),
            (5, 5000, false)
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        assert_eq!(parse("min_interval = 3").unwrap_err().key, "min_interval");
        assert_eq!(
            parse("new_per_minute = 0").unwrap_err().key,
            "new_per_minute"
        );
        assert_eq!(parse("sim_faults = 1").unwrap_err().key, "sim_faults");
        for bad in [
            "availability_multiplier = 1",
            "availability_floor = \"0s\"",
            "presence_away_after = 60",
            "presence_rssi = 10",
            "presence_smoothing = 0",
            "presence_smoothing = 1.5",
            "presence_tags = [\"nope\"]",
            "sim_beacon_away = [\"40s\", \"20s\"]",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(Some(e.key.as_str()), bad.split(' ').next(), "{bad}");
        }
    }

    #[test]
    fn lifecycle_options() {
        let o = parse(
            "availability_multiplier = 4\navailability_floor = \"30s\"\npresence_away_after = \"2m\"\n\
             presence_rssi = -75\npresence_hysteresis = 8\npresence_smoothing = 0.5\n\
             presence_tags = [\"AA:BB:CC:DD:EE:FF\"]\nsim_beacon_away = [\"20s\", \"40s\"]",
        )
        .unwrap();
        assert_eq!(o.availability_multiplier, 4);
        assert_eq!(o.availability_floor, Duration::from_secs(30));
        assert_eq!(o.presence_away_after, Duration::from_secs(120));
        assert_eq!((o.presence_rssi, o.presence_hysteresis), (Some(-75), 8));
        assert_eq!(o.presence_smoothing, 0.5);
        assert_eq!(o.presence_tags, vec!["aa:bb:cc:dd:ee:ff".to_string()]);
        assert_eq!(
            o.sim_beacon_away,
            Some((Duration::from_secs(20), Duration::from_secs(40)))
        );
        let e = parse("bindkey = \"00\"").unwrap_err();
        assert_eq!(e.key, "bindkey");
        assert!(e.message.contains("known:"), "{}", e.message);
    }
}
