//! The one vocabulary of device values: the names, units and scales that `set`,
//! `get`, `state` and `telemetry` use for every protocol (the table in
//! `docs/mqtt-api.md#vocabulary` is this file in prose; change both together).
//!
//! Owns the canonical reading names, mapping a driver's native names onto them
//! ([`normalize`]) and validating a desired state (`set`) into a
//! [`DeviceCommand`] ([`desired_state`]). Pure: no IO. Every driver hands its
//! readings through [`normalize`] (the conformance suite checks the names).

use serde_json::{Map, Value as Json};

use super::{DeviceCommand, Reading, Value};

/// The JSON type of a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Number,
    Text,
}

/// One entry of the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    pub name: &'static str,
    pub kind: Kind,
    /// The unit every driver reports it in (`None`: no unit).
    pub unit: Option<&'static str>,
    /// Can be asked for with `set`.
    pub settable: bool,
    pub meaning: &'static str,
}

const fn q(
    name: &'static str,
    kind: Kind,
    unit: Option<&'static str>,
    settable: bool,
    meaning: &'static str,
) -> Quantity {
    Quantity {
        name,
        kind,
        unit,
        settable,
        meaning,
    }
}

/// The canonical names. A driver may report other values too (under names of its
/// own, e.g. a ZCL attribute name), but a value that is one of these is reported
/// under this name, in this unit and scale.
pub const QUANTITIES: &[Quantity] = &[
    q("on", Kind::Bool, None, true, "switched on"),
    q(
        "level",
        Kind::Number,
        Some("%"),
        true,
        "dimming or valve level, 0-100",
    ),
    q(
        "level_raw",
        Kind::Number,
        None,
        false,
        "the level on the device's own scale (Zigbee 0-254), besides `level`",
    ),
    q(
        "temperature",
        Kind::Number,
        Some("°C"),
        false,
        "air or surface temperature",
    ),
    q(
        "humidity",
        Kind::Number,
        Some("%"),
        false,
        "relative humidity",
    ),
    q("pressure", Kind::Number, Some("hPa"), false, "air pressure"),
    q(
        "device_temperature",
        Kind::Number,
        Some("°C"),
        false,
        "the device's own internal temperature",
    ),
    q(
        "setpoint",
        Kind::Number,
        Some("°C"),
        false,
        "a thermostat's or radiator valve's target temperature",
    ),
    q(
        "soil_moisture",
        Kind::Number,
        Some("%"),
        false,
        "soil moisture",
    ),
    q(
        "illuminance",
        Kind::Number,
        Some("lx"),
        false,
        "illuminance",
    ),
    q(
        "co2",
        Kind::Number,
        Some("ppm"),
        false,
        "carbon dioxide concentration",
    ),
    q("battery", Kind::Number, Some("%"), false, "battery charge"),
    q(
        "battery_voltage",
        Kind::Number,
        Some("V"),
        false,
        "battery voltage",
    ),
    q(
        "battery_low",
        Kind::Bool,
        None,
        false,
        "the device says its battery is low",
    ),
    q(
        "voltage",
        Kind::Number,
        Some("V"),
        false,
        "mains voltage (RMS)",
    ),
    q("current", Kind::Number, Some("A"), false, "current (RMS)"),
    q("power", Kind::Number, Some("W"), false, "active power"),
    q(
        "energy",
        Kind::Number,
        Some("kWh"),
        false,
        "energy consumed (total)",
    ),
    q(
        "occupancy",
        Kind::Bool,
        None,
        false,
        "someone is there (occupancy sensor)",
    ),
    q("motion", Kind::Bool, None, false, "motion detected"),
    q(
        "contact",
        Kind::Bool,
        None,
        false,
        "door or window closed (true) or open (false)",
    ),
    q("water_leak", Kind::Bool, None, false, "water detected"),
    q("smoke", Kind::Bool, None, false, "smoke detected"),
    q("tamper", Kind::Bool, None, false, "the casing was opened"),
    q(
        "linkquality",
        Kind::Number,
        None,
        false,
        "link quality indicator 0-255 (Zigbee)",
    ),
    q(
        "rssi",
        Kind::Number,
        Some("dBm"),
        false,
        "received signal strength",
    ),
    q(
        "snr",
        Kind::Number,
        Some("dB"),
        false,
        "signal-to-noise ratio (LoRa)",
    ),
];

/// The entry for `name`, if it is a canonical name.
pub fn quantity(name: &str) -> Option<&'static Quantity> {
    QUANTITIES.iter().find(|q| q.name == name)
}

/// Highest Zigbee level (ZCL Level Control CurrentLevel: 0x00-0xFE).
pub const ZIGBEE_LEVEL_MAX: f64 = 254.0;

/// A level on the device's 0-`max` scale as a percentage, one decimal.
pub fn percent_of(raw: f64, max: f64) -> f64 {
    ((raw / max * 100.0).clamp(0.0, 100.0) * 10.0).round() / 10.0
}

/// A driver's reading in the vocabulary: native names of canonical quantities
/// are renamed and rescaled (`on_off` -> `on`; Zigbee `current_level` 0-254 ->
/// `level` in % plus `level_raw`; `battery_percentage` -> `battery`); anything
/// else is passed on unchanged.
pub fn normalize(r: Reading) -> Vec<Reading> {
    match r.name.as_str() {
        "on_off" => vec![Reading {
            name: "on".into(),
            ..r
        }],
        "current_level" => match r.value {
            Value::Number(raw) => vec![
                Reading {
                    name: "level".into(),
                    value: Value::Number(percent_of(raw, ZIGBEE_LEVEL_MAX)),
                    unit: Some("%".into()),
                },
                Reading {
                    name: "level_raw".into(),
                    value: Value::Number(raw),
                    unit: None,
                },
            ],
            _ => vec![r],
        },
        "battery_percentage" => vec![Reading {
            name: "battery".into(),
            ..r
        }],
        _ => vec![r],
    }
}

/// Why a desired state cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// A known attribute with a wrong type or out of range, or attributes that
    /// contradict each other.
    #[error("{0}")]
    Invalid(String),
    /// A well-formed attribute this build cannot set.
    #[error("{0}")]
    NotSupported(String),
}

impl SetError {
    /// The response error code.
    pub fn code(&self) -> &'static str {
        match self {
            SetError::Invalid(_) => "invalid_request",
            SetError::NotSupported(_) => "not_supported",
        }
    }
}

const SETTABLE: &str = "settable attributes are `on` (true or false), `state` (\"on\", \"off\" or \"toggle\") and `level` (a number 0-100, in %; a level implies on)";

/// Validates a `set` request's `state` into the command it asks for:
/// `{"on": bool}`, `{"state": "on"|"off"|"toggle"}`, `{"level": 0-100}` or
/// `{"on": true, "level": 0-100}`. Wrong types, ranges and contradictions are
/// [`SetError::Invalid`]; attributes outside the vocabulary's settable ones are
/// [`SetError::NotSupported`].
pub fn desired_state(state: &Map<String, Json>) -> Result<DeviceCommand, SetError> {
    let invalid = |m: String| Err(SetError::Invalid(m));
    let mut on = None;
    let mut word = None;
    let mut level = None;
    for (k, v) in state {
        match (k.as_str(), v) {
            ("on", Json::Bool(b)) => on = Some(*b),
            ("on", _) => return invalid(format!("`on` must be true or false; {SETTABLE}")),
            ("state", Json::String(s)) if matches!(s.as_str(), "on" | "off" | "toggle") => {
                word = Some(s.clone())
            }
            ("state", _) => {
                return invalid(format!(
                    "`state` must be \"on\", \"off\" or \"toggle\"; {SETTABLE}"
                ))
            }
            ("level", Json::Number(n)) => match n.as_f64() {
                Some(l) if (0.0..=100.0).contains(&l) => level = Some(l),
                _ => return invalid(format!("`level` must be between 0 and 100 (%); {SETTABLE}")),
            },
            ("level", _) => return invalid(format!("`level` must be a number 0-100; {SETTABLE}")),
            _ => {}
        }
    }
    let unknown: Vec<&str> = state
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "on" | "state" | "level"))
        .collect();
    if !unknown.is_empty() {
        return Err(SetError::NotSupported(format!(
            "cannot set `{}`: {SETTABLE}",
            unknown.join("`, `")
        )));
    }
    match (on, word.as_deref(), level) {
        (None | Some(true), None, Some(l)) => Ok(DeviceCommand::Level {
            percent: l.round() as u8,
        }),
        (Some(false), None, Some(_)) => {
            invalid("`on: false` with a `level` contradicts itself (a level implies on)".into())
        }
        (Some(b), None, None) => Ok(if b {
            DeviceCommand::On
        } else {
            DeviceCommand::Off
        }),
        (None, Some("on"), None) => Ok(DeviceCommand::On),
        (None, Some("off"), None) => Ok(DeviceCommand::Off),
        (None, Some(_), None) => Ok(DeviceCommand::Toggle),
        _ => invalid(format!("give one of `on`, `state` or `level`; {SETTABLE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(v: Json) -> Result<DeviceCommand, &'static str> {
        desired_state(v.as_object().unwrap()).map_err(|e| e.code())
    }

    #[test]
    fn desired_states_map_to_commands_or_the_right_code() {
        assert_eq!(set(json!({"on": true})), Ok(DeviceCommand::On));
        assert_eq!(set(json!({"on": false})), Ok(DeviceCommand::Off));
        assert_eq!(set(json!({"state": "toggle"})), Ok(DeviceCommand::Toggle));
        assert_eq!(
            set(json!({"level": 40})),
            Ok(DeviceCommand::Level { percent: 40 })
        );
        assert_eq!(
            set(json!({"on": true, "level": 39.6})),
            Ok(DeviceCommand::Level { percent: 40 })
        );
        for bad in [
            json!({"level": 101}),
            json!({"level": -1}),
            json!({"level": "50"}),
            json!({"on": "yes"}),
            json!({"on": 1}),
            json!({"on": false, "level": 30}),
            json!({"state": "dim"}),
            json!({"state": "on", "on": true}),
        ] {
            assert_eq!(set(bad.clone()), Err("invalid_request"), "{bad}");
        }
        assert_eq!(set(json!({"color": "red"})), Err("not_supported"));
        assert_eq!(
            set(json!({"on": true, "color_temp": 300})),
            Err("not_supported")
        );
    }

    #[test]
    fn native_names_become_canonical_with_percent_levels() {
        let raw = Reading {
            name: "current_level".into(),
            value: Value::Number(102.0),
            unit: None,
        };
        let out = normalize(raw);
        assert_eq!(out[0].name, "level");
        assert_eq!(out[0].value, Value::Number(40.2));
        assert_eq!(out[0].unit.as_deref(), Some("%"));
        assert_eq!(out[1].name, "level_raw");
        let on = normalize(Reading {
            name: "on_off".into(),
            value: Value::Bool(true),
            unit: None,
        });
        assert_eq!(on[0].name, "on");
        assert_eq!(percent_of(254.0, ZIGBEE_LEVEL_MAX), 100.0);
        assert_eq!(percent_of(255.0, ZIGBEE_LEVEL_MAX), 100.0);
        for q in QUANTITIES {
            assert_eq!(
                normalize(Reading {
                    name: q.name.into(),
                    value: Value::Bool(true),
                    unit: None
                })
                .len(),
                1
            );
        }
    }
}
