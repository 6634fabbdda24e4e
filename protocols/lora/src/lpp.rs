//! Cayenne LPP (Low Power Payload) decoding: `channel(1) | type(1) | value (big-endian)`
//! repeated, into named readings with units.
//!
//! Types, sizes and scales are those of the myDevices reference and the widely used
//! Arduino CayenneLPP library (ElectronicCats/TTN), which adds the extended types
//! (voltage, current, energy, ...). A type this table does not know stops decoding with
//! an error naming its offset, since its length cannot be known; so does a value cut short.

/// A value type, by its LPP type id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LppType {
    DigitalInput,
    DigitalOutput,
    AnalogInput,
    AnalogOutput,
    GenericSensor,
    Illuminance,
    Presence,
    Temperature,
    RelativeHumidity,
    Accelerometer,
    BarometricPressure,
    Voltage,
    Current,
    Frequency,
    Percentage,
    Altitude,
    Concentration,
    Power,
    Distance,
    Energy,
    Direction,
    UnixTime,
    Gyrometer,
    Colour,
    Gps,
    Switch,
}

/// How a type is laid out: id, size, scale (value = raw / divisor), signedness, name, unit.
struct Spec {
    kind: LppType,
    id: u8,
    size: usize,
    divisor: f64,
    signed: bool,
    name: &'static str,
    unit: &'static str,
}

const fn spec(
    kind: LppType,
    id: u8,
    size: usize,
    divisor: f64,
    signed: bool,
    name: &'static str,
    unit: &'static str,
) -> Spec {
    Spec {
        kind,
        id,
        size,
        divisor,
        signed,
        name,
        unit,
    }
}

use LppType as T;
const SPECS: &[Spec] = &[
    spec(T::DigitalInput, 0, 1, 1.0, false, "digital_input", ""),
    spec(T::DigitalOutput, 1, 1, 1.0, false, "digital_output", ""),
    spec(T::AnalogInput, 2, 2, 100.0, true, "analog_input", ""),
    spec(T::AnalogOutput, 3, 2, 100.0, true, "analog_output", ""),
    spec(T::GenericSensor, 100, 4, 1.0, false, "generic_sensor", ""),
    spec(T::Illuminance, 101, 2, 1.0, false, "illuminance", "lx"),
    spec(T::Presence, 102, 1, 1.0, false, "presence", ""),
    spec(T::Temperature, 103, 2, 10.0, true, "temperature", "°C"),
    spec(
        T::RelativeHumidity,
        104,
        1,
        2.0,
        false,
        "relative_humidity",
        "%",
    ),
    // Three axes of 2 bytes each.
    spec(T::Accelerometer, 113, 6, 1000.0, true, "accelerometer", "g"),
    spec(
        T::BarometricPressure,
        115,
        2,
        10.0,
        false,
        "barometric_pressure",
        "hPa",
    ),
    spec(T::Voltage, 116, 2, 100.0, false, "voltage", "V"),
    spec(T::Current, 117, 2, 1000.0, false, "current", "A"),
    spec(T::Frequency, 118, 4, 1.0, false, "frequency", "Hz"),
    spec(T::Percentage, 120, 1, 1.0, false, "percentage", "%"),
    spec(T::Altitude, 121, 2, 1.0, true, "altitude", "m"),
    spec(T::Concentration, 125, 2, 1.0, false, "concentration", "ppm"),
    spec(T::Power, 128, 2, 1.0, false, "power", "W"),
    spec(T::Distance, 130, 4, 1000.0, false, "distance", "m"),
    spec(T::Energy, 131, 4, 1000.0, false, "energy", "kWh"),
    spec(T::Direction, 132, 2, 1.0, false, "direction", "°"),
    spec(T::UnixTime, 133, 4, 1.0, false, "unix_time", "s"),
    // Three axes of 2 bytes each.
    spec(T::Gyrometer, 134, 6, 100.0, true, "gyrometer", "°/s"),
    // R, G, B bytes.
    spec(T::Colour, 135, 3, 1.0, false, "colour", ""),
    // Latitude and longitude 3 bytes / 0.0001°, altitude 3 bytes / 0.01 m.
    spec(T::Gps, 136, 9, 10_000.0, true, "gps", "°"),
    spec(T::Switch, 142, 1, 1.0, false, "switch", ""),
];

impl LppType {
    fn spec(self) -> &'static Spec {
        // Every variant has exactly one row in SPECS (tested).
        SPECS.iter().find(|s| s.kind == self).unwrap_or(&SPECS[0])
    }

    pub fn from_id(id: u8) -> Option<LppType> {
        SPECS.iter().find(|s| s.id == id).map(|s| s.kind)
    }

    pub fn id(self) -> u8 {
        self.spec().id
    }

    /// Reading name, snake_case (`temperature`, `relative_humidity`, ...).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Unit of the value ("" for counts, states and raw values; GPS altitude is in m).
    pub fn unit(self) -> &'static str {
        self.spec().unit
    }

    /// Value size in bytes.
    pub fn size(self) -> usize {
        self.spec().size
    }
}

/// A decoded value. As JSON: a number, or an object of its parts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum LppValue {
    Number(f64),
    /// Accelerometer (g) or gyrometer (°/s) axes.
    Xyz {
        x: f64,
        y: f64,
        z: f64,
    },
    /// Degrees and metres.
    Gps {
        latitude: f64,
        longitude: f64,
        altitude: f64,
    },
    Rgb {
        r: u8,
        g: u8,
        b: u8,
    },
}

/// One reading from a payload. As JSON: channel, name, value and unit (when it has one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LppReading {
    pub channel: u8,
    pub kind: LppType,
    pub value: LppValue,
}

impl serde::Serialize for LppReading {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let unit = self.unit();
        let mut st = s.serialize_struct("LppReading", 4)?;
        st.serialize_field("channel", &self.channel)?;
        st.serialize_field("name", self.name())?;
        st.serialize_field("value", &self.value)?;
        if unit.is_empty() {
            st.skip_field("unit")?;
        } else {
            st.serialize_field("unit", unit)?;
        }
        st.end()
    }
}

impl LppReading {
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    pub fn unit(&self) -> &'static str {
        self.kind.unit()
    }
}

/// Why a payload is not Cayenne LPP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LppError {
    #[error("unknown LPP type {type_id} at offset {offset}")]
    UnknownType { type_id: u8, offset: usize },
    #[error("LPP type {type_id} at offset {offset} needs {need} bytes, {got} left")]
    Truncated {
        type_id: u8,
        offset: usize,
        need: usize,
        got: usize,
    },
    #[error("a lone byte at offset {0}: no room for a channel and a type")]
    Trailing(usize),
}

fn int(bytes: &[u8], signed: bool) -> f64 {
    let raw = bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
    if signed {
        let bits = bytes.len() as u32 * 8;
        let shift = 64 - bits;
        (((raw << shift) as i64) >> shift) as f64
    } else {
        raw as f64
    }
}

/// Decodes a whole payload.
pub fn decode(payload: &[u8]) -> Result<Vec<LppReading>, LppError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < payload.len() {
        let (Some(&channel), Some(&type_id)) = (payload.get(i), payload.get(i + 1)) else {
            return Err(LppError::Trailing(i));
        };
        let kind = LppType::from_id(type_id).ok_or(LppError::UnknownType {
            type_id,
            offset: i + 1,
        })?;
        let s = kind.spec();
        let start = i + 2;
        let v = payload
            .get(start..start + s.size)
            .ok_or(LppError::Truncated {
                type_id,
                offset: i,
                need: s.size,
                got: payload.len() - start,
            })?;
        let value = match kind {
            T::Accelerometer | T::Gyrometer => LppValue::Xyz {
                x: int(&v[0..2], true) / s.divisor,
                y: int(&v[2..4], true) / s.divisor,
                z: int(&v[4..6], true) / s.divisor,
            },
            T::Gps => LppValue::Gps {
                latitude: int(&v[0..3], true) / 10_000.0,
                longitude: int(&v[3..6], true) / 10_000.0,
                altitude: int(&v[6..9], true) / 100.0,
            },
            T::Colour => LppValue::Rgb {
                r: v[0],
                g: v[1],
                b: v[2],
            },
            _ => LppValue::Number(int(v, s.signed) / s.divisor),
        };
        out.push(LppReading {
            channel,
            kind,
            value,
        });
        i = start + s.size;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::hex_decode;

    fn one(hex: &str) -> LppReading {
        let r = decode(&hex_decode(hex).unwrap()).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        r[0]
    }

    /// The examples of the myDevices Cayenne LPP documentation (the first one is also in
    /// The Things Stack's CayenneLPP formatter docs).
    #[test]
    fn documentation_examples() {
        let r = decode(&hex_decode("03670110056700FF").unwrap()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].channel, r[0].name(), r[0].unit()),
            (3, "temperature", "°C")
        );
        assert_eq!(r[0].value, LppValue::Number(27.2));
        assert_eq!((r[1].channel, r[1].value), (5, LppValue::Number(25.5)));
        assert_eq!(one("0167FFD7").value, LppValue::Number(-4.1));
        assert_eq!(
            one("067104D2FB2E0000").value,
            LppValue::Xyz {
                x: 1.234,
                y: -1.234,
                z: 0.0
            }
        );
        assert_eq!(
            one("018806765FF2960A0003E8").value,
            LppValue::Gps {
                latitude: 42.3519,
                longitude: -87.9094,
                altitude: 10.0
            }
        );
    }

    #[test]
    fn every_type_decodes_with_its_scale() {
        assert_eq!(one("0200FF").value, LppValue::Number(255.0));
        assert_eq!(one("0201FF").kind, LppType::DigitalOutput);
        assert_eq!(one("0302FF9C").value, LppValue::Number(-1.0));
        assert_eq!(one("0265FFFF").value, LppValue::Number(65535.0));
        assert_eq!(one("016665").unit(), "");
        assert_eq!(one("01687F").value, LppValue::Number(63.5));
        assert_eq!(one("017327DD").value, LppValue::Number(1020.5));
        assert_eq!(one("01740140").value, LppValue::Number(3.2));
        assert_eq!(one("017503E8").value, LppValue::Number(1.0));
        assert_eq!(one("017600000064").value, LppValue::Number(100.0));
        assert_eq!(one("017832").value, LppValue::Number(50.0));
        assert_eq!(one("0179FF38").value, LppValue::Number(-200.0));
        assert_eq!(one("017D01F4").value, LppValue::Number(500.0));
        assert_eq!(one("01800064").value, LppValue::Number(100.0));
        assert_eq!(one("0182000003E8").value, LppValue::Number(1.0));
        assert_eq!(one("0183000007D0").value, LppValue::Number(2.0));
        assert_eq!(one("01840168").value, LppValue::Number(360.0));
        assert_eq!(one("018565000000").value, LppValue::Number(1_694_498_816.0));
        assert_eq!(
            one("01860064FF9C0000").value,
            LppValue::Xyz {
                x: 1.0,
                y: -1.0,
                z: 0.0
            }
        );
        assert_eq!(
            one("0187FF8000").value,
            LppValue::Rgb {
                r: 255,
                g: 128,
                b: 0
            }
        );
        assert_eq!(one("018E01").name(), "switch");
        assert_eq!(one("016400000001").name(), "generic_sensor");
        for s in SPECS {
            assert_eq!(LppType::from_id(s.id), Some(s.kind));
            assert_eq!(s.kind.id(), s.id);
            assert_eq!(s.kind.size(), s.size);
        }
    }

    #[test]
    fn malformed_payloads() {
        assert_eq!(decode(&[]), Ok(vec![]));
        assert_eq!(decode(&[1]), Err(LppError::Trailing(0)));
        assert_eq!(
            decode(&[1, 0x67, 0]),
            Err(LppError::Truncated {
                type_id: 0x67,
                offset: 0,
                need: 2,
                got: 1
            })
        );
        assert_eq!(
            decode(&[1, 0x67, 0, 1, 2, 0x99, 0]),
            Err(LppError::UnknownType {
                type_id: 0x99,
                offset: 5
            })
        );
    }
}
