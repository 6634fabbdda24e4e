//! `[radio.options]` of a Z-Wave radio: what may be set, the defaults (the Serial API
//! spec's and zwave-js'), and errors that name the key and say what is allowed.
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

/// `[radio.options]` for a Z-Wave radio.
#[derive(Debug, Clone, PartialEq)]
pub struct ZwaveOptions {
    /// How long the controller has to ACK a frame (INS12350: at least 1,600 ms).
    pub ack_timeout: Duration,
    /// How long the controller has to answer a request (zwave-js: 10 s).
    pub response_timeout: Duration,
    /// How long a SendData callback may take (zwave-js: 30 s; INS13954 says 65 s).
    pub callback_timeout: Duration,
    /// How long a node has to answer a Get (zwave-js `report`: 1 s; 5 s by default here,
    /// since routed frames to battery devices are slow).
    pub report_timeout: Duration,
    /// Tries of a SendData the node did not acknowledge.
    pub send_attempts: u32,
    /// How long a sleeping node is kept awake after its Wake Up Notification for the
    /// requests held for it to arrive, before it is sent back to sleep.
    pub wake_up_hold: Duration,
    /// The wake-up interval set on sleeping nodes during their interview (0: keep theirs).
    pub wake_up_interval: Duration,
    /// Requests in a row that fail at the controller (no ACK, no callback) before it is
    /// soft-reset.
    pub failures_before_reset: u32,
    /// How long the controller may be quiet (no frame, no answer) before it is asked
    /// for its version to see that it still runs; 0 turns the check off.
    pub watchdog_interval: Duration,
}

impl Default for ZwaveOptions {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_millis(1600),
            response_timeout: Duration::from_secs(10),
            callback_timeout: Duration::from_secs(30),
            report_timeout: Duration::from_secs(5),
            send_attempts: 3,
            wake_up_hold: Duration::from_secs(1),
            wake_up_interval: Duration::from_secs(3600),
            failures_before_reset: 2,
            watchdog_interval: Duration::from_secs(60),
        }
    }
}

const KNOWN_OPTIONS: &str = "ack_timeout, response_timeout, callback_timeout, report_timeout, send_attempts, wake_up_hold, wake_up_interval, failures_before_reset, watchdog_interval";

impl ZwaveOptions {
    /// Validates `[radio.options]`; errors name the key and say what is allowed.
    pub fn parse(table: &toml::Table) -> Result<Self> {
        let mut o = Self::default();
        for (key, value) in table {
            match key.as_str() {
                "ack_timeout" => {
                    o.ack_timeout = duration(key, value, Duration::from_millis(1600))?;
                }
                "response_timeout" => o.response_timeout = duration(key, value, ms(100))?,
                "callback_timeout" => o.callback_timeout = duration(key, value, ms(100))?,
                "report_timeout" => o.report_timeout = duration(key, value, ms(100))?,
                "wake_up_hold" => o.wake_up_hold = duration(key, value, ms(10))?,
                "wake_up_interval" => {
                    let d = duration(key, value, Duration::ZERO)?;
                    // 24 bits of seconds on the wire.
                    if d != Duration::ZERO
                        && (d < Duration::from_secs(60) || d.as_secs() > 0xFF_FFFF)
                    {
                        return Err(wrong(
                            key,
                            "zwave option `wake_up_interval` must be 0 (keep the device's) or from 1min to 194days".into(),
                        ));
                    }
                    o.wake_up_interval = d;
                }
                "send_attempts" => o.send_attempts = count(key, value, 1, 5)?,
                "failures_before_reset" => o.failures_before_reset = count(key, value, 1, 20)?,
                "watchdog_interval" => {
                    let d = duration(key, value, Duration::ZERO)?;
                    if d != Duration::ZERO && d < Duration::from_secs(1) {
                        return Err(wrong(
                            key,
                            "zwave option `watchdog_interval` must be 0 (off) or at least 1s"
                                .into(),
                        ));
                    }
                    o.watchdog_interval = d;
                }
                other => {
                    return Err(wrong(
                        other,
                        format!("unknown zwave option `{other}` (known: {KNOWN_OPTIONS})"),
                    ))
                }
            }
        }
        Ok(o)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn count(key: &str, v: &toml::Value, min: i64, max: i64) -> Result<u32> {
    v.as_integer()
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            wrong(
                key,
                format!("zwave option `{key}` must be an integer from {min} to {max}, got {v}"),
            )
        })
}

fn duration(key: &str, v: &toml::Value, min: Duration) -> Result<Duration> {
    let d = v
        .as_str()
        .and_then(|s| humantime::parse_duration(s).ok())
        .ok_or_else(|| {
            wrong(
                key,
                format!(
                    "zwave option `{key}` must be a duration such as \"5s\" or \"1600ms\", got {v}"
                ),
            )
        })?;
    if d < min || (d > Duration::from_secs(3600) && key != "wake_up_interval") {
        return Err(wrong(
            key,
            format!(
                "zwave option `{key}` must be between {} and 1h",
                humantime::format_duration(min)
            ),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ZwaveOptions> {
        ZwaveOptions::parse(&text.parse().unwrap())
    }

    #[test]
    fn options_have_the_spec_defaults_and_clear_errors() {
        assert_eq!(parse("").unwrap(), ZwaveOptions::default());
        let o =
            parse("report_timeout = \"2s\"\nsend_attempts = 2\nwake_up_interval = \"0s\"").unwrap();
        assert_eq!(o.report_timeout, Duration::from_secs(2));
        assert_eq!(o.send_attempts, 2);
        assert_eq!(o.wake_up_interval, Duration::ZERO);
        let err = |t: &str| parse(t).unwrap_err();
        let e = err("ack_timeout = \"500ms\"");
        assert_eq!(e.key, "ack_timeout");
        assert!(e.message.contains("between 1s 600ms and 1h"), "{e}");
        assert!(err("send_attempts = 9").message.contains("1 to 5"));
        assert!(err("wake_up_interval = \"10s\"").message.contains("1min"));
        assert!(err("report_timeout = 5").message.contains("duration"));
        assert!(err("ack_timout = \"2s\"")
            .message
            .contains("unknown zwave option `ack_timout`"));
    }
}
