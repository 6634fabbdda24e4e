//! `[radio.options]` of a Zigbee radio: what may be set, the defaults, and the errors that
//! name the key and say what is allowed.
//!
//! Owns parsing and validation only; must not open anything or hold state.

use std::path::PathBuf;
use std::time::Duration;

use fieldgate_zigbee::IeeeAddr;

use super::MAX_KEY_SWITCH_DELAY;
use crate::radio::OptionError;

type Result<T> = std::result::Result<T, OptionError>;

/// An error about `key`.
fn wrong(key: &str, message: String) -> OptionError {
    OptionError {
        key: key.to_string(),
        message,
    }
}

/// `[radio.options]` for a Zigbee radio.
#[derive(Debug, Clone, PartialEq)]
pub struct ZigbeeOptions {
    /// 11–26; used when forming (default 11) and checked when resuming.
    pub channel: Option<u8>,
    pub pan_id: Option<u16>,
    pub extended_pan_id: Option<u64>,
    /// Time to wait for an SRSP (ZH: 6 s).
    pub sreq_timeout: Duration,
    /// Keep-alive ping period (ZHA: 30 s).
    pub watchdog_interval: Duration,
    /// Time to wait for a device's answer during an interview.
    pub response_timeout: Duration,
    /// Tries per interview step before waiting for the device to speak again.
    pub interview_attempts: u32,
    /// Time between sending a new network key and switching to it, so that every device,
    /// sleepy ones polling their parent included, has it (default 30 s).
    pub key_switch_delay: Duration,
    /// Where the site's own device definitions (`*.toml`) are read from, besides the
    /// built-in ones (default `/etc/fieldgate/devices.d`; a missing directory is fine).
    pub definitions_dir: PathBuf,
}

impl Default for ZigbeeOptions {
    fn default() -> Self {
        Self {
            channel: None,
            pan_id: None,
            extended_pan_id: None,
            sreq_timeout: Duration::from_secs(6),
            watchdog_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(5),
            interview_attempts: 3,
            key_switch_delay: Duration::from_secs(30),
            definitions_dir: PathBuf::from(super::definitions::DEFAULT_SITE_DIR),
        }
    }
}

const KNOWN_OPTIONS: &str = "channel, pan_id, extended_pan_id, sreq_timeout, watchdog_interval, response_timeout, interview_attempts, key_switch_delay, definitions_dir";

impl ZigbeeOptions {
    /// Validates `[radio.options]`; errors name the key and say what is allowed.
    pub fn parse(table: &toml::Table) -> Result<Self> {
        let mut o = Self::default();
        for (key, value) in table {
            match key.as_str() {
                "channel" => {
                    let c = value
                        .as_integer()
                        .filter(|c| (11..=26).contains(c))
                        .ok_or_else(|| {
                            wrong("channel", format!("zigbee option `channel` must be an integer from 11 to 26, got {value}"))
                        })?;
                    o.channel = u8::try_from(c).ok();
                }
                "pan_id" => {
                    let p = int_or_hex(value)
                        .filter(|p| (0x0001..=0xFFFE).contains(p))
                        .ok_or_else(|| {
                            wrong("pan_id", format!("zigbee option `pan_id` must be 0x0001–0xFFFE (integer or \"0x1a62\"), got {value}"))
                        })?;
                    o.pan_id = u16::try_from(p).ok();
                }
                "extended_pan_id" => {
                    let text = value.as_str().ok_or_else(|| {
                        wrong("extended_pan_id", "zigbee option `extended_pan_id` must be a string of 16 hex digits, e.g. \"0xdddddddddddddddd\"".to_string())
                    })?;
                    let e: IeeeAddr = text.parse().map_err(|e| {
                        wrong(
                            "extended_pan_id",
                            format!("zigbee option `extended_pan_id`: {e}"),
                        )
                    })?;
                    if e.0 == 0 || e.0 == u64::MAX {
                        return Err(wrong(
                            "extended_pan_id",
                            "zigbee option `extended_pan_id` may not be all zeros or all ones"
                                .to_string(),
                        ));
                    }
                    o.extended_pan_id = Some(e.0);
                }
                "definitions_dir" => {
                    o.definitions_dir = value
                        .as_str()
                        .filter(|s| !s.trim().is_empty())
                        .map(PathBuf::from)
                        .ok_or_else(|| {
                            wrong(
                                "definitions_dir",
                                "zigbee option `definitions_dir` must be a directory path, e.g. \"/etc/fieldgate/devices.d\"".to_string(),
                            )
                        })?;
                    // Relative to what? The service's working directory is `/`, a
                    // technician's shell is elsewhere: the definitions would be found
                    // by one and silently missed by the other.
                    if !o.definitions_dir.is_absolute() {
                        return Err(wrong(
                            "definitions_dir",
                            format!(
                                "zigbee option `definitions_dir` = `{}` is relative: it must be an absolute path (the service's working directory is not yours)",
                                o.definitions_dir.display()
                            ),
                        ));
                    }
                }
                "sreq_timeout" => o.sreq_timeout = duration(key, value)?,
                "watchdog_interval" => o.watchdog_interval = duration(key, value)?,
                "response_timeout" => o.response_timeout = duration(key, value)?,
                "key_switch_delay" => {
                    o.key_switch_delay = duration(key, value)?;
                    if o.key_switch_delay > MAX_KEY_SWITCH_DELAY {
                        return Err(wrong(
                            "key_switch_delay",
                            "zigbee option `key_switch_delay` must be at most 5min".to_string(),
                        ));
                    }
                }
                "interview_attempts" => {
                    o.interview_attempts = value
                        .as_integer()
                        .filter(|n| (1..=20).contains(n))
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            wrong(
                                "interview_attempts",
                                "zigbee option `interview_attempts` must be 1–20".to_string(),
                            )
                        })?;
                }
                other => {
                    return Err(wrong(
                        other,
                        format!("unknown zigbee option `{other}` (known: {KNOWN_OPTIONS})"),
                    ))
                }
            }
        }
        Ok(o)
    }
}

pub(super) fn int_or_hex(v: &toml::Value) -> Option<i64> {
    match v {
        toml::Value::Integer(i) => Some(*i),
        toml::Value::String(s) => {
            let t = s.trim();
            match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => i64::from_str_radix(hex, 16).ok(),
                None => t.parse().ok(),
            }
        }
        _ => None,
    }
}

pub(super) fn duration(key: &str, v: &toml::Value) -> Result<Duration> {
    let d = v
        .as_str()
        .and_then(|s| humantime::parse_duration(s).ok())
        .ok_or_else(|| {
            wrong(
                key,
                format!(
                    "zigbee option `{key}` must be a duration such as \"6s\" or \"500ms\", got {v}"
                ),
            )
        })?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
        return Err(wrong(
            key,
            format!("zigbee option `{key}` must be between 10ms and 1h"),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn options_are_validated_with_clear_errors() {
        let o = ZigbeeOptions::parse(&table(
            "channel = 15\npan_id = \"0x1a62\"\nextended_pan_id = \"0xdddddddddddddddd\"\nsreq_timeout = \"2s\"",
        ))
        .unwrap();
        assert_eq!(o.channel, Some(15));
        assert_eq!(o.pan_id, Some(0x1A62));
        assert_eq!(o.extended_pan_id, Some(0xDDDD_DDDD_DDDD_DDDD));
        assert_eq!(o.sreq_timeout, Duration::from_secs(2));
        let err = |t: &str| ZigbeeOptions::parse(&table(t)).unwrap_err().to_string();
        assert!(err("channel = 27").contains("11 to 26"));
        assert!(err("pan_id = 65535").contains("0xFFFE"));
        assert!(err("extended_pan_id = \"0x12\"").contains("16 hex digits"));
        assert!(err("chanel = 11").contains("unknown zigbee option `chanel`"));
        assert!(err("sreq_timeout = 5").contains("duration"));
        assert!(err("definitions_dir = 3").contains("directory path"));
        assert!(err("definitions_dir = \"devices.d\"").contains("must be an absolute path"));
        assert_eq!(
            ZigbeeOptions::parse(&table("definitions_dir = \"/srv/defs\""))
                .unwrap()
                .definitions_dir,
            PathBuf::from("/srv/defs")
        );
    }
}
