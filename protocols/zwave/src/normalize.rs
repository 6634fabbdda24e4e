//! Reports to readings: what a decoded command class means as `name = value unit`
//! (temperature in °C or °F as sent, humidity %, illuminance lx, power W, energy kWh, …).
//! Names follow the Zigbee codec's where both exist, so that the hub sees one vocabulary.
//! Never fails: commands that carry no reading give an empty list.

use serde::Serialize;

use crate::cc::{
    level_percent, meter_scale_unit, sensor_scale_unit, switch_on, Basic, Battery, BinarySwitch,
    Cc, Meter, MultilevelSensor, MultilevelSwitch, Notification,
};

/// A reading's value (as JSON: a bare number or boolean).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReadingValue {
    Number(f64),
    Bool(bool),
}

/// One normalized reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    pub name: &'static str,
    pub value: ReadingValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
}

impl Reading {
    fn number(name: &'static str, value: f64, unit: Option<&'static str>) -> Self {
        Self {
            name,
            value: ReadingValue::Number(value),
            unit,
        }
    }

    fn flag(name: &'static str, value: bool) -> Self {
        Self {
            name,
            value: ReadingValue::Bool(value),
            unit: None,
        }
    }
}

/// The readings in a command (encapsulation unwrapped). Gets and Sets give none.
pub fn normalize(cc: &Cc) -> Vec<Reading> {
    let (cc, _endpoint) = cc.innermost();
    let mut out = Vec::new();
    match cc {
        Cc::Basic(Basic::Report { current, .. })
        | Cc::MultilevelSwitch(MultilevelSwitch::Report { current, .. }) => {
            // On the device's own 0-99 scale: the hub's vocabulary makes it a
            // percentage (99 is fully on, 100 %).
            if let Some(level) = level_percent(*current) {
                out.push(Reading::number("switch_level", f64::from(level), None));
                out.push(Reading::flag("on_off", level > 0));
            }
        }
        Cc::BinarySwitch(BinarySwitch::Report { current, .. }) => {
            if let Some(on) = switch_on(*current) {
                out.push(Reading::flag("on_off", on));
            }
        }
        Cc::MultilevelSensor(MultilevelSensor::Report {
            sensor_type,
            scale,
            value,
        }) => {
            if let Some(name) = sensor_reading_name(*sensor_type, *scale) {
                let unit = sensor_scale_unit(*sensor_type, *scale).filter(|u| !u.is_empty());
                out.push(Reading::number(name, value.value(), unit));
            }
        }
        Cc::Meter(Meter::Report { reading, .. }) => {
            let name = match (reading.meter_type, reading.scale, reading.rate_type) {
                (0x01, 0, 2) => Some("produced_energy"),
                (0x01, 0, _) => Some("energy"),
                (0x01, 1, _) => Some("apparent_energy"),
                (0x01, 2, _) => Some("power"),
                (0x01, 4, _) => Some("voltage"),
                (0x01, 5, _) => Some("current"),
                (0x01, 6, _) => Some("power_factor"),
                (0x01, 7, _) => Some("reactive_power"),
                (0x01, 8, _) => Some("reactive_energy"),
                (0x02, 0 | 1, _) => Some("gas"),
                (0x03, 0..=2, _) => Some("water"),
                (0x04, 0, _) => Some("heating_energy"),
                (0x05, 0, _) => Some("cooling_energy"),
                _ => None,
            };
            if let Some(name) = name {
                let unit = meter_scale_unit(reading.meter_type, reading.scale)
                    .filter(|u| *u != "Power Factor");
                out.push(Reading::number(name, reading.value.value(), unit));
            }
        }
        Cc::Battery(Battery::Report { level, .. }) => {
            if let Some(pct) = Battery::percent(*level) {
                out.push(Reading::number("battery", f64::from(pct), Some("%")));
            }
            out.push(Reading::flag("battery_low", *level == Battery::LOW));
        }
        Cc::Notification(Notification::Report { event: Some(e), .. }) => {
            let ended = e.parameters.first().copied();
            let reading = match (e.notification_type, e.event) {
                // Access Control: window/door open / closed, as the vocabulary's
                // `contact` (true: closed), the name and sense Zigbee's have too.
                (0x06, 0x16) => Some(Reading::flag("contact", false)),
                (0x06, 0x17) => Some(Reading::flag("contact", true)),
                // Home Security: motion (with / without location), idle after motion.
                (0x07, 0x07 | 0x08) => Some(Reading::flag("motion", true)),
                (0x07, 0x00) if matches!(ended, Some(0x07 | 0x08)) => {
                    Some(Reading::flag("motion", false))
                }
                (0x07, 0x03 | 0x04) => Some(Reading::flag("tamper", true)),
                (0x07, 0x00) if matches!(ended, Some(0x03 | 0x04)) => {
                    Some(Reading::flag("tamper", false))
                }
                // Smoke, CO, water leak: detected / idle.
                (0x01, 0x01 | 0x02) => Some(Reading::flag("smoke", true)),
                (0x01, 0x00) => Some(Reading::flag("smoke", false)),
                (0x02, 0x01 | 0x02) => Some(Reading::flag("carbon_monoxide", true)),
                (0x02, 0x00) => Some(Reading::flag("carbon_monoxide", false)),
                (0x05, 0x01 | 0x02) => Some(Reading::flag("water_leak", true)),
                (0x05, 0x00) => Some(Reading::flag("water_leak", false)),
                // Power Management: replace battery soon / now.
                (0x08, 0x0A | 0x0B) => Some(Reading::flag("battery_low", true)),
                _ => None,
            };
            out.extend(reading);
        }
        _ => {}
    }
    out
}

/// The reading name of a Multilevel Sensor type (and scale, where the scale changes the
/// meaning, as illuminance in % vs lux).
fn sensor_reading_name(sensor_type: u8, scale: u8) -> Option<&'static str> {
    Some(match (sensor_type, scale) {
        (0x01, _) => "temperature",
        (0x02, _) => "general_purpose",
        (0x03, 1) => "illuminance",
        (0x03, _) => "illuminance_percent",
        (0x04, _) => "power",
        (0x05, 0) => "humidity",
        (0x05, _) => "absolute_humidity",
        (0x08, _) => "atmospheric_pressure",
        (0x09, _) => "pressure",
        (0x0B, _) => "dew_point",
        (0x0F, _) => "voltage",
        (0x10, _) => "current",
        (0x11, _) => "co2",
        (0x17, _) => "water_temperature",
        (0x18, _) => "soil_temperature",
        (0x1B, _) => "uv_index",
        (0x1E, _) => "loudness",
        (0x1F, _) => "moisture",
        (0x23, _) => "pm25",
        (0x27, _) => "voc",
        (0x28, _) => "carbon_monoxide_level",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cc::Cc;

    fn one(bytes: &[u8]) -> Vec<Reading> {
        normalize(&Cc::decode(bytes).unwrap())
    }

    #[test]
    fn sensor_meter_battery_and_door() {
        // Reference §3 (zwave-js mock, observed): air temperature 21.5 °C.
        assert_eq!(
            one(&[0x31, 0x05, 0x01, 0x22, 0x00, 0xD7]),
            vec![Reading::number("temperature", 21.5, Some("°C"))]
        );
        // Reference §1 (zwave-js#7815): Meter Report, electric, scale 5 = A, 0.00.
        let r = one(&[0x32, 0x02, 0xA1, 0x4A, 0x00, 0x00, 0x01, 0x2D, 0x00, 0x00]);
        assert_eq!(r, vec![Reading::number("current", 0.0, Some("A"))]);
        assert_eq!(
            one(&[0x80, 0x03, 0xFF]),
            vec![Reading::flag("battery_low", true)]
        );
        // Multilevel Switch Report: 99 is the top of the device's scale, 0xFF (v1) too.
        for top in [0x63, 0xFF] {
            assert_eq!(
                one(&[0x26, 0x03, top]),
                vec![
                    Reading::number("switch_level", 99.0, None),
                    Reading::flag("on_off", true)
                ]
            );
        }
        assert_eq!(
            one(&[0x71, 0x05, 0, 0, 0, 0xFF, 0x06, 0x16, 0x00]),
            vec![Reading::flag("contact", false)]
        );
    }
}
