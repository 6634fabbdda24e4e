//! Where attribute values and commands become readings: the one mapping from ZCL to
//! named, scaled values with units, used by the daemon's Zigbee driver and by
//! `fieldgate decode zigbee`.
//!
//! Two views of the same mapping:
//! - [`normalize`] / [`normalize_frame`]: every attribute value in a frame, known or not,
//!   with its typed raw value where it has no meaning here (what the decoder prints);
//! - [`device_readings`]: what a device reports, as the gateway publishes it: measurements
//!   only (no configuration attributes), IAS zone status as `contact`/`tamper`/
//!   `battery_low`, and nothing whose scaling factors are not known yet.
//!
//! Pure: no IO, no logging. What it holds back, and why, it says in
//! [`DeviceReadings::held_back`] so a caller can log it.

use serde::Serialize;

use super::clusters::{attribute, cluster, id, IasZoneStatus, Scale};
use super::{ZclCommand, ZclFrame, ZclValue};
use Scale::*;

/// Per-endpoint scaling factors that arrive as separate attributes (multiplier/divisor pairs,
/// the pressure scale). The driver keeps one per device endpoint and feeds it every attribute
/// value it sees with [`ScalingContext::observe`]; missing factors default to 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ScalingContext {
    pub metering_multiplier: Option<u32>,
    pub metering_divisor: Option<u32>,
    pub ac_voltage_multiplier: Option<u16>,
    pub ac_voltage_divisor: Option<u16>,
    pub ac_current_multiplier: Option<u16>,
    pub ac_current_divisor: Option<u16>,
    pub ac_power_multiplier: Option<u16>,
    pub ac_power_divisor: Option<u16>,
    pub pressure_scale: Option<i8>,
}

impl ScalingContext {
    /// Records a scaling attribute if this is one; returns whether it was.
    pub fn observe(&mut self, cluster_id: u16, attribute_id: u16, value: &ZclValue) -> bool {
        let n = value.as_i64();
        let u32v = n.and_then(|v| u32::try_from(v).ok());
        let u16v = n.and_then(|v| u16::try_from(v).ok());
        match (cluster_id, attribute_id) {
            (id::METERING, 0x0301) => self.metering_multiplier = u32v,
            (id::METERING, 0x0302) => self.metering_divisor = u32v,
            (id::ELECTRICAL_MEASUREMENT, 0x0600) => self.ac_voltage_multiplier = u16v,
            (id::ELECTRICAL_MEASUREMENT, 0x0601) => self.ac_voltage_divisor = u16v,
            (id::ELECTRICAL_MEASUREMENT, 0x0602) => self.ac_current_multiplier = u16v,
            (id::ELECTRICAL_MEASUREMENT, 0x0603) => self.ac_current_divisor = u16v,
            (id::ELECTRICAL_MEASUREMENT, 0x0604) => self.ac_power_multiplier = u16v,
            (id::ELECTRICAL_MEASUREMENT, 0x0605) => self.ac_power_divisor = u16v,
            (id::PRESSURE, 0x0014) => self.pressure_scale = n.and_then(|v| i8::try_from(v).ok()),
            _ => return false,
        }
        true
    }
}

/// `multiplier / divisor`, with absent or zero factors taken as 1.
fn ratio(mul: Option<f64>, div: Option<f64>) -> f64 {
    let m = mul.filter(|m| *m != 0.0).unwrap_or(1.0);
    let d = div.filter(|d| *d != 0.0).unwrap_or(1.0);
    m / d
}

/// A normalized reading value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReadingValue {
    Number(#[serde(serialize_with = "crate::serde_float")] f64),
    Bool(bool),
    Text(String),
    /// The attribute has no known meaning here: the typed raw value.
    Raw(ZclValue),
    /// The device sent the type's "invalid/unknown" sentinel (e.g. 0x8000 for int16).
    Invalid,
}

/// One attribute value, normalized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    pub cluster_id: u16,
    pub attribute_id: u16,
    /// `None` for unknown clusters.
    pub cluster: Option<&'static str>,
    /// `None` for unknown attributes (then `value` is [`ReadingValue::Raw`]).
    pub name: Option<&'static str>,
    pub value: ReadingValue,
    pub unit: Option<&'static str>,
}

/// Turns an attribute value into a normalized reading. Never fails: unknown clusters or
/// attributes, and values of an unexpected type, come back as [`ReadingValue::Raw`].
pub fn normalize(
    cluster_id: u16,
    attribute_id: u16,
    value: &ZclValue,
    ctx: &ScalingContext,
) -> Reading {
    let def = attribute(cluster_id, attribute_id);
    let mut reading = Reading {
        cluster_id,
        attribute_id,
        cluster: cluster(cluster_id).map(|c| c.name),
        name: def.map(|d| d.name),
        value: ReadingValue::Raw(value.clone()),
        unit: None,
    };
    let Some(def) = def else {
        return reading;
    };
    if value.is_invalid() {
        reading.value = ReadingValue::Invalid;
        return reading;
    }
    let num = value.as_f64();
    let f = |x: Option<u16>| x.map(f64::from);
    let value_out = match def.scale {
        Raw => num.map(ReadingValue::Number),
        Div(k) => num.map(|v| ReadingValue::Number(v / k)),
        Mul(k) => num.map(|v| ReadingValue::Number(round6(v * k))),
        Illuminance => num.map(|v| {
            ReadingValue::Number(if v <= 0.0 {
                0.0
            } else {
                round6(10f64.powf((v - 1.0) / 10000.0))
            })
        }),
        Bit0 => value.as_i64().map(|v| ReadingValue::Bool(v & 1 != 0)),
        Bool => match value {
            ZclValue::Bool(Some(b)) => Some(ReadingValue::Bool(*b)),
            _ => value.as_i64().map(|v| ReadingValue::Bool(v != 0)),
        },
        Text => value.as_text().map(ReadingValue::Text),
        PressureScaled => match (num, ctx.pressure_scale) {
            (Some(v), Some(scale)) => Some(ReadingValue::Number(round6(
                v * 10f64.powi(-i32::from(scale)) / 100.0,
            ))),
            _ => None,
        },
        MeteringEnergy => num.map(|v| {
            let k = ratio(
                ctx.metering_multiplier.map(f64::from),
                ctx.metering_divisor.map(f64::from),
            );
            ReadingValue::Number(round6(v * k))
        }),
        MeteringPower => num.map(|v| {
            let k = ratio(
                ctx.metering_multiplier.map(f64::from),
                ctx.metering_divisor.map(f64::from),
            );
            ReadingValue::Number(round6(v * k * 1000.0))
        }),
        AcVoltage => num.map(|v| {
            let k = ratio(f(ctx.ac_voltage_multiplier), f(ctx.ac_voltage_divisor));
            ReadingValue::Number(round6(v * k))
        }),
        AcCurrent => num.map(|v| {
            let k = ratio(f(ctx.ac_current_multiplier), f(ctx.ac_current_divisor));
            ReadingValue::Number(round6(v * k))
        }),
        AcPower => num.map(|v| {
            let k = ratio(f(ctx.ac_power_multiplier), f(ctx.ac_power_divisor));
            ReadingValue::Number(round6(v * k))
        }),
    };
    // An unexpected type for a known attribute (or a scale not known yet) stays raw.
    if let Some(v) = value_out {
        reading.value = v;
        reading.unit = def.unit;
    }
    reading
}

/// Rounds away binary noise from scaling (e.g. 0.30000000000000004 → 0.3).
fn round6(v: f64) -> f64 {
    if v.is_finite() && v.abs() < 1e12 {
        (v * 1e6).round() / 1e6
    } else {
        v
    }
}

/// Normalizes every attribute value carried by a frame (reports, read responses, writes).
pub fn normalize_frame(cluster_id: u16, frame: &ZclFrame, ctx: &ScalingContext) -> Vec<Reading> {
    frame
        .attribute_values()
        .into_iter()
        .map(|(attr, v)| normalize(cluster_id, attr, v, ctx))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Device readings

/// The value of a [`DeviceReading`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DeviceValue {
    Number(#[serde(serialize_with = "crate::serde_float")] f64),
    Bool(bool),
    Text(String),
}

/// One reading a device reported: a measurement, scaled, with its unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReading {
    pub name: &'static str,
    pub value: DeviceValue,
    pub unit: Option<&'static str>,
}

impl DeviceReading {
    fn new(name: &'static str, value: DeviceValue, unit: Option<&'static str>) -> Self {
        Self { name, value, unit }
    }
}

/// Why an attribute value in a frame did not become a reading (configuration attributes
/// and values of an unexpected type are skipped without a word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldBack {
    /// The attribute has no known meaning.
    UnknownAttribute,
    /// Its scaling factors (multiplier/divisor) have not been seen yet.
    ScalingUnknown,
}

/// What one frame from a device carries, as readings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceReadings {
    /// In the frame's order, with repeats of the same name and value next to each other
    /// dropped.
    pub readings: Vec<DeviceReading>,
    /// Attribute values that are not readings yet, as (attribute id, why).
    pub held_back: Vec<(u16, HeldBack)>,
}

/// The readings in a frame received on `cluster_id` from a device: attribute reports and
/// read responses (scaled with `ctx`, the device endpoint's factors) and IAS zone status
/// change notifications.
pub fn device_readings(cluster_id: u16, frame: &ZclFrame, ctx: &ScalingContext) -> DeviceReadings {
    let mut out = DeviceReadings::default();
    if let ZclCommand::IasZoneStatusChangeNotification { zone_status, .. } = &frame.command {
        out.readings = zone_readings(*zone_status);
        return out;
    }
    for (attr, value) in frame.attribute_values() {
        if cluster_id == id::IAS_ZONE && attr == 0x0002 {
            if let Some(v) = value.as_i64().and_then(|v| u16::try_from(v).ok()) {
                out.readings.extend(zone_readings(v));
            }
            continue;
        }
        if is_config_attribute(cluster_id, attr) {
            continue;
        }
        let Some(def) = attribute(cluster_id, attr) else {
            out.held_back.push((attr, HeldBack::UnknownAttribute));
            continue;
        };
        if !ctx.knows(def.scale) {
            out.held_back.push((attr, HeldBack::ScalingUnknown));
            continue;
        }
        let r = normalize(cluster_id, attr, value, ctx);
        let value = match r.value {
            ReadingValue::Number(n) => DeviceValue::Number(n),
            ReadingValue::Bool(b) => DeviceValue::Bool(b),
            ReadingValue::Text(t) => DeviceValue::Text(t),
            ReadingValue::Raw(_) | ReadingValue::Invalid => continue,
        };
        out.readings
            .push(DeviceReading::new(def.name, value, r.unit));
    }
    out.readings
        .dedup_by(|a, b| a.name == b.name && a.value == b.value);
    out
}

/// IAS zone status bits as readings (a contact switch's alarm1 means "open").
pub fn zone_readings(zone_status: u16) -> Vec<DeviceReading> {
    let s = IasZoneStatus::from(zone_status);
    vec![
        DeviceReading::new("contact", DeviceValue::Bool(!s.alarm1), None),
        DeviceReading::new("tamper", DeviceValue::Bool(s.tamper), None),
        DeviceReading::new("battery_low", DeviceValue::Bool(s.battery_low), None),
    ]
}

/// Attributes that configure other attributes (scaling, types) or describe the device,
/// rather than measure anything.
pub fn is_config_attribute(cluster_id: u16, attribute_id: u16) -> bool {
    match cluster_id {
        id::BASIC => true,
        id::METERING => matches!(attribute_id, 0x0300..=0x0303),
        id::ELECTRICAL_MEASUREMENT => {
            attribute_id == 0x0000 || (0x0600..=0x0605).contains(&attribute_id)
        }
        id::IAS_ZONE => attribute_id != 0x0002,
        id::PRESSURE => attribute_id == 0x0014,
        _ => false,
    }
}

impl ScalingContext {
    /// Whether the factors `scale` needs are known (a reading scaled with defaults would
    /// be off by the device's multiplier).
    pub fn knows(&self, scale: Scale) -> bool {
        match scale {
            MeteringEnergy | MeteringPower => {
                self.metering_multiplier.is_some() && self.metering_divisor.is_some()
            }
            AcVoltage => self.ac_voltage_multiplier.is_some() && self.ac_voltage_divisor.is_some(),
            AcCurrent => self.ac_current_multiplier.is_some() && self.ac_current_divisor.is_some(),
            AcPower => self.ac_power_multiplier.is_some() && self.ac_power_divisor.is_some(),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(cluster: u16, bytes: &[u8]) -> ZclFrame {
        ZclFrame::decode(cluster, bytes).unwrap()
    }

    #[test]
    fn metering_readings_wait_for_their_scaling() {
        // Report of CurrentSummationDelivered (uint48) = 12345.
        let report = frame(
            0x0702,
            &[
                0x18, 0x01, 0x0A, 0x00, 0x00, 0x25, 0x39, 0x30, 0x00, 0x00, 0x00, 0x00,
            ],
        );
        let held = device_readings(0x0702, &report, &ScalingContext::default());
        assert!(held.readings.is_empty());
        assert_eq!(held.held_back, vec![(0x0000, HeldBack::ScalingUnknown)]);
        let ctx = ScalingContext {
            metering_multiplier: Some(1),
            metering_divisor: Some(1000),
            ..Default::default()
        };
        let r = device_readings(0x0702, &report, &ctx);
        assert_eq!(
            r.readings,
            vec![DeviceReading::new(
                "energy",
                DeviceValue::Number(12.345),
                Some("kWh")
            )]
        );
        assert!(r.held_back.is_empty());
    }

    #[test]
    fn zone_status_becomes_contact_tamper_and_battery() {
        // Zone status change notification: alarm1 | battery_low.
        let note = frame(
            0x0500,
            &[0x09, 0x05, 0x00, 0x09, 0x00, 0x00, 0x01, 0x00, 0x00],
        );
        let r = device_readings(0x0500, &note, &ScalingContext::default());
        assert_eq!(
            r.readings,
            vec![
                DeviceReading::new("contact", DeviceValue::Bool(false), None),
                DeviceReading::new("tamper", DeviceValue::Bool(false), None),
                DeviceReading::new("battery_low", DeviceValue::Bool(true), None),
            ]
        );
        // The same bits read as attribute 0x0002; the zone's other attributes are not
        // readings.
        let rsp = frame(
            0x0500,
            &[
                0x18, 0x06, 0x01, 0x02, 0x00, 0x00, 0x19, 0x04, 0x00, 0x00, 0x00, 0x00, 0x30, 0x01,
            ],
        );
        let r = device_readings(0x0500, &rsp, &ScalingContext::default());
        assert_eq!(r.readings.len(), 3);
        assert_eq!(
            r.readings[1],
            DeviceReading::new("tamper", DeviceValue::Bool(true), None)
        );
        assert!(r.held_back.is_empty());
    }

    #[test]
    fn configuration_and_unknown_attributes_are_not_readings() {
        // Temperature 21.5 °C, then an attribute the table does not know (0x1234, uint8).
        let report = frame(
            0x0402,
            &[
                0x18, 0x10, 0x0A, 0x00, 0x00, 0x29, 0x66, 0x08, 0x34, 0x12, 0x20, 0x07,
            ],
        );
        let r = device_readings(0x0402, &report, &ScalingContext::default());
        assert_eq!(
            r.readings,
            vec![DeviceReading::new(
                "temperature",
                DeviceValue::Number(21.5),
                Some("°C")
            )]
        );
        assert_eq!(r.held_back, vec![(0x1234, HeldBack::UnknownAttribute)]);
        assert!(is_config_attribute(0x0702, 0x0301));
        assert!(is_config_attribute(0x0000, 0x0005));
        assert!(!is_config_attribute(0x0500, 0x0002));
        // The decoder's view keeps every attribute, with its raw value where unknown.
        let all = normalize_frame(0x0402, &report, &ScalingContext::default());
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].name, None);
    }

    #[test]
    fn repeated_values_in_one_frame_are_reported_once() {
        let report = frame(
            0x0006,
            &[
                0x18, 0x02, 0x0A, 0x00, 0x00, 0x10, 0x01, 0x00, 0x00, 0x10, 0x01,
            ],
        );
        let r = device_readings(0x0006, &report, &ScalingContext::default());
        assert_eq!(
            r.readings,
            vec![DeviceReading::new("on_off", DeviceValue::Bool(true), None)]
        );
    }
}
