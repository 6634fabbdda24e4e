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
    /// `sim://ble` only: random addresses passing by besides the emulated room.
    pub sim_street: usize,
    /// `sim://ble` only: send the replayed, forged and downgraded advertisements.
    pub sim_faults: bool,
    /// `sim://ble` only: emulated time runs this many times faster than real time.
    pub sim_speed: u32,
}

impl Default for BleOptions {
    fn default() -> Self {
        BleOptions {
            min_interval: Duration::from_secs(10),
            new_per_minute: 30,
            max_tracked: 20_000,
            sim_street: 0,
            sim_faults: true,
            sim_speed: 1,
        }
    }
}

const KNOWN_OPTIONS: &str =
    "min_interval, new_per_minute, max_tracked, sim_street, sim_faults, sim_speed";

impl BleOptions {
    /// Validates `[radio.options]`; errors name the key and say what is allowed.
    pub fn parse(table: &toml::Table) -> Result<Self> {
        let mut o = Self::default();
        for (key, value) in table {
            match key.as_str() {
                "min_interval" => {
                    let text = value.as_str().ok_or_else(|| {
                        wrong(key, format!("ble option `{key}` must be a duration such as \"10s\", got {value}"))
                    })?;
                    o.min_interval = humantime::parse_duration(text)
                        .ok()
                        .filter(|d| *d <= Duration::from_secs(3600))
                        .ok_or_else(|| {
                            wrong(key, format!("ble option `{key}` must be a duration up to 1h such as \"10s\", got {value}"))
                        })?;
                }
                "new_per_minute" => o.new_per_minute = int(key, value, 1, 100_000)? as u32,
                "max_tracked" => o.max_tracked = int(key, value, 100, 1_000_000)? as usize,
                "sim_street" => o.sim_street = int(key, value, 0, 100_000)? as usize,
                "sim_speed" => o.sim_speed = int(key, value, 1, 1000)? as u32,
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
        let e = parse("bindkey = \"00\"").unwrap_err();
        assert_eq!(e.key, "bindkey");
        assert!(e.message.contains("known:"), "{}", e.message);
    }
}
