//! A definition applied to one ZCL frame from its device: the generic cluster mapping for
//! what the definition does not mention, its rules for what it does, Xiaomi structs and Tuya
//! datapoints unpacked; every reading in the vocabulary ([`vocabulary::normalize`]).
//!
//! Pure: the driver and the differential test call the same function on the same bytes.

use fieldgate_zigbee::zcl::clusters::id as cluster_id;
use fieldgate_zigbee::zcl::manufacturer::{self, TuyaValue};
use fieldgate_zigbee::zcl::readings::{self, DeviceValue, HeldBack, ScalingContext};
use fieldgate_zigbee::zcl::{FrameType, ZclCommand, ZclFrame, ZclValue};

use super::{Definition, Rule, Source};
use crate::model::{vocabulary, Reading, Value};

/// What one frame carries, as readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameReadings {
    pub readings: Vec<Reading>,
    /// Attribute values that are not readings yet, and why (as the generic mapping says).
    pub held_back: Vec<(u16, HeldBack)>,
    /// Manufacturer payloads that could not be read (bad bytes from the device).
    pub errors: Vec<String>,
}

/// The readings in a frame received on `cluster` from a device with definition `def`
/// (or none: the generic mapping alone), scaled with `ctx`.
pub fn device_readings(
    def: Option<&Definition>,
    cluster: u16,
    frame: &ZclFrame,
    ctx: &ScalingContext,
) -> FrameReadings {
    let mut out = FrameReadings::default();
    let Some(def) = def else {
        let found = readings::device_readings(cluster, frame, ctx);
        out.held_back = found.held_back;
        out.readings = found.readings.into_iter().flat_map(generic).collect();
        return out;
    };
    // Tuya datapoints.
    if cluster == manufacturer::TUYA_CLUSTER {
        if let (FrameType::ClusterSpecific, ZclCommand::Raw { payload }) =
            (frame.header.frame_type, &frame.command)
        {
            if manufacturer::is_tuya_datapoint_command(frame.header.command_id) {
                match manufacturer::tuya_datapoints(payload) {
                    Ok((_, dps)) => {
                        for dp in dps {
                            for rule in def.rules(Source::Tuya(dp.dp)) {
                                apply(rule, &raw_of_tuya(&dp.value), &mut out.readings);
                            }
                        }
                    }
                    Err(e) => out.errors.push(format!("Tuya datapoints: {e}")),
                }
            }
        }
        return finish(out);
    }
    // Attribute values: the definition's rules where it has some, else generic.
    let mut generic_frame = frame.clone();
    let overridden = |attr: u16| {
        manufacturer::is_xiaomi_struct(cluster, attr)
            || def
                .rules(Source::Attribute {
                    cluster,
                    attribute: attr,
                })
                .next()
                .is_some()
    };
    match &mut generic_frame.command {
        ZclCommand::ReportAttributes { records } => records.retain(|r| !overridden(r.attribute_id)),
        ZclCommand::ReadAttributesRsp { records } => {
            records.retain(|r| !overridden(r.attribute_id))
        }
        _ => {}
    }
    let found = readings::device_readings(cluster, &generic_frame, ctx);
    out.held_back = found.held_back;
    for r in found.readings.into_iter().flat_map(generic) {
        out.readings.push(zone_meaning(def, cluster, r));
    }
    if !matches!(
        frame.command,
        ZclCommand::ReportAttributes { .. } | ZclCommand::ReadAttributesRsp { .. }
    ) {
        return finish(out);
    }
    for (attr, value) in frame.attribute_values() {
        if manufacturer::is_xiaomi_struct(cluster, attr) {
            if !def
                .readings
                .iter()
                .any(|r| matches!(r.source, Source::Xiaomi(_)))
            {
                continue;
            }
            let bytes = match value {
                ZclValue::CharString(Some(b)) | ZclValue::OctetString(Some(b)) => &b.0,
                _ => continue,
            };
            match manufacturer::xiaomi_struct(bytes) {
                Ok(records) => {
                    for (index, v) in records {
                        for rule in def.rules(Source::Xiaomi(index)) {
                            apply(rule, &raw_of_zcl(&v), &mut out.readings);
                        }
                    }
                }
                Err(e) => out
                    .errors
                    .push(format!("Xiaomi struct {cluster:#06x}/{attr:#06x}: {e}")),
            }
            continue;
        }
        for rule in def.rules(Source::Attribute {
            cluster,
            attribute: attr,
        }) {
            apply(rule, &raw_of_zcl(value), &mut out.readings);
        }
    }
    finish(out)
}

impl Definition {
    fn rules(&self, source: Source) -> impl Iterator<Item = &Rule> {
        self.readings.iter().filter(move |r| r.source == source)
    }
}

/// A raw value from the device, before a rule scales it.
enum Raw {
    Number(f64),
    Bool(bool),
    Text(String),
    None,
}

fn raw_of_zcl(v: &ZclValue) -> Raw {
    if v.is_invalid() {
        return Raw::None;
    }
    match v {
        ZclValue::Bool(Some(b)) => Raw::Bool(*b),
        ZclValue::CharString(_) | ZclValue::LongCharString(_) => {
            v.as_text().map_or(Raw::None, Raw::Text)
        }
        _ => v.as_f64().map_or(Raw::None, Raw::Number),
    }
}

fn raw_of_tuya(v: &TuyaValue) -> Raw {
    match v {
        TuyaValue::Bool(b) => Raw::Bool(*b),
        TuyaValue::String(s) => Raw::Text(s.clone()),
        TuyaValue::Raw(_) => Raw::None,
        other => other.as_f64().map_or(Raw::None, Raw::Number),
    }
}

fn apply(rule: &Rule, raw: &Raw, out: &mut Vec<Reading>) {
    if rule.ignore {
        return;
    }
    let value = match (raw, &rule.true_when) {
        (Raw::Number(n), Some(when)) => Value::Bool(when.iter().any(|w| *w as f64 == *n)),
        (Raw::Bool(b), Some(when)) => Value::Bool(when.contains(&i64::from(*b))),
        (Raw::Bool(b), None) => Value::Bool(*b),
        (Raw::Number(n), None) => {
            let v = round6(n * rule.multiply / rule.divide);
            if let Some((lo, hi)) = rule.range {
                if !(lo..=hi).contains(&v) {
                    return;
                }
            }
            Value::Number(v)
        }
        (Raw::Text(t), _) => Value::Text(t.clone()),
        (Raw::None, _) => return,
    };
    let battery = match (rule.battery_range, &value) {
        (Some((lo, hi)), Value::Number(volts)) => {
            Some(round6((volts.clamp(lo, hi) - lo) / (hi - lo) * 100.0).round())
        }
        _ => None,
    };
    out.push(Reading {
        name: rule.name.clone(),
        value,
        unit: rule.unit.clone(),
    });
    if let Some(percent) = battery {
        out.push(Reading {
            name: "battery".into(),
            value: Value::Number(percent),
            unit: Some("%".into()),
        });
    }
}

/// An IAS zone's alarm1 as the definition says it is meant (the generic mapping calls it
/// `contact`, closed when the alarm is off).
fn zone_meaning(def: &Definition, cluster: u16, r: Reading) -> Reading {
    match (&def.ias_zone, cluster, r.name.as_str(), &r.value) {
        (Some(name), cluster_id::IAS_ZONE, "contact", Value::Bool(closed)) if name != "contact" => {
            Reading {
                name: name.clone(),
                value: Value::Bool(!closed),
                unit: None,
            }
        }
        _ => r,
    }
}

fn generic(r: readings::DeviceReading) -> Vec<Reading> {
    vocabulary::normalize(Reading {
        name: r.name.to_string(),
        value: match r.value {
            DeviceValue::Number(n) => Value::Number(n),
            DeviceValue::Bool(b) => Value::Bool(b),
            DeviceValue::Text(t) => Value::Text(t),
        },
        unit: r.unit.map(str::to_string),
    })
}

fn finish(mut out: FrameReadings) -> FrameReadings {
    out.readings = out
        .readings
        .into_iter()
        .flat_map(vocabulary::normalize)
        .collect();
    // A reading repeated in one frame (generic and definition agree) is reported once, the
    // last one winning.
    let mut seen = Vec::new();
    for r in out.readings.into_iter().rev() {
        if !seen.iter().any(|s: &Reading| s.name == r.name) {
            seen.push(r);
        }
    }
    seen.reverse();
    out.readings = seen;
    out
}

fn round6(v: f64) -> f64 {
    if v.is_finite() && v.abs() < 1e12 {
        (v * 1e6).round() / 1e6
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::Catalog;
    use super::*;

    fn readings(
        manufacturer: &str,
        model: &str,
        cluster: u16,
        bytes: &[u8],
    ) -> Vec<(String, Value)> {
        let c = Catalog::built_in();
        let def = c.find(Some(manufacturer), Some(model));
        assert!(def.is_some(), "{manufacturer} {model}");
        let frame = ZclFrame::decode(cluster, bytes).unwrap();
        let out = device_readings(def.as_deref(), cluster, &frame, &ScalingContext::default());
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        out.readings
            .into_iter()
            .map(|r| (r.name, r.value))
            .collect()
    }

    #[test]
    fn tuya_datapoints_are_scaled_by_the_definition() {
        // TS0601 data report: dp 1 = 235 (23.5 °C), dp 2 = 61 %, dp 4 = 87 %.
        let bytes = [
            0x09, 0x05, 0x02, 0x00, 0x07, 0x01, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0xEB, 0x02,
            0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x3D, 0x04, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00,
            0x57,
        ];
        assert_eq!(
            readings("_TZE200_s1xgth2u", "TS0601", 0xEF00, &bytes),
            vec![
                ("temperature".into(), Value::Number(23.5)),
                ("humidity".into(), Value::Number(61.0)),
                ("battery".into(), Value::Number(87.0)),
            ]
        );
        // A truncated datapoint is an error to count, not a panic.
        let c = Catalog::built_in();
        let def = c.find(Some("_TZE200_s1xgth2u"), Some("TS0601"));
        let frame = ZclFrame::decode(0xEF00, &bytes[..10]).unwrap();
        let out = device_readings(def.as_deref(), 0xEF00, &frame, &ScalingContext::default());
        assert!(out.readings.is_empty() && out.errors.len() == 1, "{out:?}");
    }

    #[test]
    fn an_aqara_struct_gives_battery_voltage_and_percentage() {
        // Basic report 0xFF01 (char string): 01 uint16 2950 mV, 64 int16 21.91 °C, 65 uint16
        // 49.98 %; and an implausible temperature (100 °C) dropped by the range.
        let bytes = [
            0x18, 0x01, 0x0A, 0x01, 0xFF, 0x42, 0x0C, 0x01, 0x21, 0x86, 0x0B, 0x64, 0x29, 0x8F,
            0x08, 0x65, 0x21, 0x86, 0x13,
        ];
        assert_eq!(
            readings("LUMI", "lumi.weather", 0x0000, &bytes),
            vec![
                ("battery_voltage".into(), Value::Number(2.95)),
                ("battery".into(), Value::Number(67.0)),
                ("temperature".into(), Value::Number(21.91)),
                ("humidity".into(), Value::Number(49.98)),
            ]
        );
        let hot = [0x18, 0x02, 0x0A, 0x00, 0x00, 0x29, 0x10, 0x27];
        assert!(readings("LUMI", "lumi.weather", 0x0402, &hot).is_empty());
    }

    #[test]
    fn an_ias_zone_alarm_means_what_the_definition_says() {
        // Zone status change notification, alarm1 set.
        let note = [0x09, 0x05, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00];
        let smoke = readings("HEIMAN", "SmokeSensor-N", 0x0500, &note);
        assert_eq!(smoke[0], ("smoke".into(), Value::Bool(true)));
        let door = readings("eWeLink", "DS01", 0x0500, &note);
        assert_eq!(door[0], ("contact".into(), Value::Bool(false)));
        // A Lumi door sensor's On/Off is its contact (0 = closed); a button's is ignored.
        let closed = [0x18, 0x03, 0x0A, 0x00, 0x00, 0x10, 0x00];
        assert_eq!(
            readings("LUMI", "lumi.sensor_magnet.aq2", 0x0006, &closed),
            vec![("contact".into(), Value::Bool(true))]
        );
        assert!(readings("LUMI", "lumi.sensor_switch.aq2", 0x0006, &closed).is_empty());
        // Without a definition the generic mapping alone.
        let frame = ZclFrame::decode(0x0006, &closed).unwrap();
        let out = device_readings(None, 0x0006, &frame, &ScalingContext::default());
        assert_eq!(out.readings[0].name, "on");
    }
}
