//! An opened uplink's payload to readings: always the raw payload (`payload_hex`) and the
//! port and counter; Cayenne LPP values by name when the device's decoder is LPP; battery
//! and margin from a DevStatusAns. No IO.

use fieldgate_lora::lorawan::{DataMessage, MacCommand};
use fieldgate_lora::lpp::{self, LppValue};
use fieldgate_lora::types::hex_encode;

use super::options::Decoder;
use crate::model::{Reading, Value};

fn number(name: &str, v: f64, unit: &str) -> Reading {
    Reading {
        name: name.to_string(),
        value: Value::Number(v),
        unit: (!unit.is_empty()).then(|| unit.to_string()),
    }
}

/// LPP's names where the daemon's reading vocabulary (docs/mqtt-api.md) has its own.
fn normalized(lpp_name: &str) -> &str {
    match lpp_name {
        "relative_humidity" => "humidity",
        other => other,
    }
}

/// The readings of one uplink, and whether its payload did not decode with `decoder`.
pub fn readings(msg: &DataMessage, decoder: Decoder, mac: &[MacCommand]) -> (Vec<Reading>, bool) {
    let mut out = vec![
        Reading {
            name: "payload_hex".into(),
            value: Value::Text(hex_encode(&msg.payload)),
            unit: None,
        },
        number("fcnt", f64::from(msg.fcnt), ""),
    ];
    if let Some(port) = msg.fport {
        out.push(number("fport", f64::from(port), ""));
    }
    for c in mac {
        if let MacCommand::DevStatusAns { battery, margin } = c {
            // 0: external power, 255: the device cannot tell.
            if (1..=254).contains(battery) {
                out.push(number(
                    "battery",
                    (f64::from(*battery) * 100.0 / 254.0).round(),
                    "%",
                ));
            }
            out.push(number("devstatus_margin", f64::from(*margin), "dB"));
        }
    }
    let mut undecodable = false;
    if decoder == Decoder::Lpp && msg.fport.is_some_and(|p| p > 0) && !msg.payload.is_empty() {
        match lpp_readings(&msg.payload) {
            Some(values) => out.extend(values),
            None => undecodable = true,
        }
    }
    (out, undecodable)
}

/// A Cayenne LPP payload as named readings (a name that occurs twice gets its channel
/// appended); `None` when it is not LPP. Shared with the LoRa P2P driver.
pub(crate) fn lpp_readings(payload: &[u8]) -> Option<Vec<Reading>> {
    let values = lpp::decode(payload).ok()?;
    let mut out = Vec::new();
    for r in &values {
        let twins = values.iter().filter(|o| o.name() == r.name()).count();
        let base = normalized(r.name());
        let name = if twins > 1 {
            format!("{base}_{}", r.channel)
        } else {
            base.to_string()
        };
        match r.value {
            LppValue::Number(v) => out.push(number(&name, v, r.unit())),
            LppValue::Xyz { x, y, z } => {
                for (axis, v) in [("x", x), ("y", y), ("z", z)] {
                    out.push(number(&format!("{name}_{axis}"), v, r.unit()));
                }
            }
            LppValue::Gps {
                latitude,
                longitude,
                altitude,
            } => {
                out.push(number("latitude", latitude, "°"));
                out.push(number("longitude", longitude, "°"));
                out.push(number("altitude", altitude, "m"));
            }
            LppValue::Rgb { r: red, g, b } => out.push(Reading {
                name,
                value: Value::Text(format!("#{red:02x}{g:02x}{b:02x}")),
                unit: None,
            }),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldgate_lora::lorawan::FCtrl;
    use fieldgate_lora::{DevAddr, Direction};

    fn msg(payload: Vec<u8>) -> DataMessage {
        DataMessage {
            direction: Direction::Uplink,
            confirmed: false,
            dev_addr: DevAddr(1),
            fctrl: FCtrl::default(),
            fcnt: 7,
            fopts: vec![],
            fport: Some(2),
            payload,
        }
    }

    fn find<'a>(r: &'a [Reading], name: &str) -> &'a Value {
        &r.iter().find(|x| x.name == name).unwrap().value
    }

    #[test]
    fn lpp_payloads_become_named_readings_next_to_the_raw_hex() {
        // Cayenne LPP spec example: channel 3 temperature 27.2 °C, channel 5 humidity 50 %.
        let (r, bad) = readings(
            &msg(vec![0x03, 0x67, 0x01, 0x10, 0x05, 0x68, 0x64]),
            Decoder::Lpp,
            &[MacCommand::DevStatusAns {
                battery: 254,
                margin: 5,
            }],
        );
        assert!(!bad);
        assert_eq!(find(&r, "temperature"), &Value::Number(27.2));
        assert_eq!(find(&r, "humidity"), &Value::Number(50.0));
        assert_eq!(
            find(&r, "payload_hex"),
            &Value::Text("03670110056864".into())
        );
        assert_eq!(find(&r, "battery"), &Value::Number(100.0));
        let (raw, _) = readings(&msg(vec![0x03, 0x67, 0x01, 0x10]), Decoder::Raw, &[]);
        assert!(raw.iter().all(|x| x.name != "temperature"));
        let (_, bad) = readings(&msg(vec![0x03, 0xee]), Decoder::Lpp, &[]);
        assert!(bad);
    }
}
