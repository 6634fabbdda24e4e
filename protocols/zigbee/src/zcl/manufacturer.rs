//! Manufacturer payloads that ride inside ordinary ZCL frames:
//! - Xiaomi/Aqara's "struct" attributes: Basic 0xFF01 (a char string) and the Lumi cluster
//!   0xFCC0's attribute 0x00F7 (an octet string), each a run of `index, data type, value`
//!   records (what zigbee-herdsman calls a MI_STRUCT);
//! - Tuya's datapoints on cluster 0xEF00: commands 0x01 (data response), 0x02 (data report)
//!   and 0x06 (active status report), a 16-bit big-endian sequence number then records
//!   `dp, type, length (u16 BE), data (BE)`.
//!
//! Pure: bytes in, records out. What the records mean is a device definition's business.

use serde::Serialize;

use super::{DataType, ZclValue};
use crate::error::{Error, Result};

/// Basic cluster attribute that Xiaomi devices fill with a struct (type char string).
pub const XIAOMI_BASIC_STRUCT: u16 = 0xFF01;
/// The Lumi manufacturer cluster and its struct attribute (type octet string).
pub const LUMI_CLUSTER: u16 = 0xFCC0;
pub const LUMI_STRUCT: u16 = 0x00F7;
/// Tuya's manufacturer cluster.
pub const TUYA_CLUSTER: u16 = 0xEF00;

/// Whether `(cluster, attribute)` is one of the Xiaomi struct attributes.
pub fn is_xiaomi_struct(cluster: u16, attribute: u16) -> bool {
    (cluster == 0x0000 && attribute == XIAOMI_BASIC_STRUCT)
        || (cluster == LUMI_CLUSTER && attribute == LUMI_STRUCT)
}

/// Reads the records of a Xiaomi struct (the string's bytes, without its length prefix).
/// A record whose type this codec cannot size ends the struct: what came before is kept, as
/// is a single trailing byte some firmware appends.
pub fn xiaomi_struct(bytes: &[u8]) -> Result<Vec<(u8, ZclValue)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 2 {
        let index = bytes[at];
        let dt = DataType(bytes[at + 1]);
        let (value, used) = match ZclValue::decode(dt, &bytes[at + 2..]) {
            Ok(v) => v,
            Err(_) if !out.is_empty() => break,
            Err(e) => return Err(e),
        };
        out.push((index, value));
        at += 2 + used;
    }
    if out.is_empty() && !bytes.is_empty() {
        return Err(Error::Truncated {
            what: "Xiaomi struct record",
            need: 2,
            have: bytes.len(),
        });
    }
    Ok(out)
}

/// A Tuya datapoint's value, by the datapoint's type byte.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum TuyaValue {
    /// Type 0: bytes.
    Raw(#[serde(serialize_with = "crate::serde_hex")] Vec<u8>),
    /// Type 1.
    Bool(bool),
    /// Type 2: a 4-byte big-endian signed integer.
    Value(i32),
    /// Type 3.
    String(String),
    /// Type 4.
    Enum(u8),
    /// Type 5: 1, 2 or 4 bytes big-endian.
    Bitmap(u32),
}

impl TuyaValue {
    /// The value as a number (bools as 0/1), if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            TuyaValue::Bool(b) => Some(f64::from(u8::from(*b))),
            TuyaValue::Value(v) => Some(f64::from(*v)),
            TuyaValue::Enum(v) => Some(f64::from(*v)),
            TuyaValue::Bitmap(v) => Some(f64::from(*v)),
            TuyaValue::Raw(_) | TuyaValue::String(_) => None,
        }
    }
}

/// One Tuya datapoint record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuyaDatapoint {
    pub dp: u8,
    pub value: TuyaValue,
}

/// Tuya commands (server to client) that carry datapoints.
pub fn is_tuya_datapoint_command(command_id: u8) -> bool {
    matches!(command_id, 0x01 | 0x02 | 0x06)
}

/// Reads the datapoint records of a Tuya data report/response payload (after the ZCL
/// header): sequence number, then records.
pub fn tuya_datapoints(payload: &[u8]) -> Result<(u16, Vec<TuyaDatapoint>)> {
    let truncated = |what, need: usize, have: usize| Error::Truncated { what, need, have };
    if payload.len() < 2 {
        return Err(truncated("Tuya sequence number", 2, payload.len()));
    }
    let seq = u16::from_be_bytes([payload[0], payload[1]]);
    let mut at = 2;
    let mut out = Vec::new();
    while at < payload.len() {
        let rest = &payload[at..];
        if rest.len() < 4 {
            return Err(truncated("Tuya datapoint header", 4, rest.len()));
        }
        let (dp, kind) = (rest[0], rest[1]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let data = rest
            .get(4..4 + len)
            .ok_or_else(|| truncated("Tuya datapoint value", len, rest.len() - 4))?;
        let wrong = |detail: String| Error::ValueOutOfRange {
            what: "Tuya datapoint",
            detail,
        };
        let be = |d: &[u8]| d.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        let value = match (kind, len) {
            (0, _) => TuyaValue::Raw(data.to_vec()),
            (1, 1) => TuyaValue::Bool(data[0] != 0),
            (2, 4) => TuyaValue::Value(be(data) as i32),
            (3, _) => TuyaValue::String(String::from_utf8_lossy(data).into_owned()),
            (4, 1) => TuyaValue::Enum(data[0]),
            (5, 1 | 2 | 4) => TuyaValue::Bitmap(be(data)),
            (0..=5, _) => {
                return Err(wrong(format!(
                    "dp {dp}: type {kind} with a {len}-byte value"
                )))
            }
            _ => return Err(wrong(format!("dp {dp}: unknown type {kind}"))),
        };
        out.push(TuyaDatapoint { dp, value });
        at += 4 + len;
    }
    Ok((seq, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aqara_weather_struct_reads_record_by_record() {
        // From an Aqara WSDCGQ11LM 0xFF01 report: 01 voltage uint16 3005 mV, 04 uint16
        // 0x0A03, 05 uint16 9, 06 uint40, 0A uint16 0, 64 int16 21.91 °C, 65 uint16 49.98 %,
        // 66 int32 100310 Pa.
        let bytes = [
            0x01, 0x21, 0xBD, 0x0B, 0x04, 0x21, 0x03, 0x0A, 0x05, 0x21, 0x09, 0x00, 0x06, 0x24,
            0x01, 0x00, 0x00, 0x00, 0x00, 0x0A, 0x21, 0x00, 0x00, 0x64, 0x29, 0x8F, 0x08, 0x65,
            0x21, 0x86, 0x13, 0x66, 0x2B, 0xD6, 0x87, 0x01, 0x00,
        ];
        let recs = xiaomi_struct(&bytes).unwrap();
        let get = |i: u8| recs.iter().find(|(k, _)| *k == i).unwrap().1.as_f64();
        assert_eq!(get(0x01), Some(3005.0));
        assert_eq!(get(0x64), Some(2191.0));
        assert_eq!(get(0x65), Some(4998.0));
        assert_eq!(get(0x66), Some(100310.0));
        // A trailing single byte is tolerated; a truncated value is an error.
        let mut with_tail = bytes.to_vec();
        with_tail.push(0x00);
        assert_eq!(xiaomi_struct(&with_tail).unwrap().len(), recs.len());
        assert!(xiaomi_struct(&[0x64, 0x29, 0x8F]).is_err());
        // A record that cannot be read ends the struct; the records before it stay.
        let cut = &bytes[..bytes.len() - 3];
        assert_eq!(xiaomi_struct(cut).unwrap().len(), recs.len() - 1);
        assert!(is_xiaomi_struct(0x0000, 0xFF01) && is_xiaomi_struct(0xFCC0, 0x00F7));
    }

    #[test]
    fn tuya_datapoints_read_big_endian_with_their_types() {
        // seq 0x0102; dp 1 value 235 (23.5 °C); dp 2 value 61; dp 4 enum 2; dp 36 bool.
        let payload = [
            0x01, 0x02, 0x01, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0xEB, 0x02, 0x02, 0x00, 0x04,
            0x00, 0x00, 0x00, 0x3D, 0x04, 0x04, 0x00, 0x01, 0x02, 0x24, 0x01, 0x00, 0x01, 0x01,
        ];
        let (seq, dps) = tuya_datapoints(&payload).unwrap();
        assert_eq!(seq, 0x0102);
        assert_eq!(
            dps,
            vec![
                TuyaDatapoint {
                    dp: 1,
                    value: TuyaValue::Value(235)
                },
                TuyaDatapoint {
                    dp: 2,
                    value: TuyaValue::Value(61)
                },
                TuyaDatapoint {
                    dp: 4,
                    value: TuyaValue::Enum(2)
                },
                TuyaDatapoint {
                    dp: 36,
                    value: TuyaValue::Bool(true)
                },
            ]
        );
        // Negative values are two's complement.
        let (_, neg) = tuya_datapoints(&[0, 1, 5, 2, 0, 4, 0xFF, 0xFF, 0xFF, 0x9C]).unwrap();
        assert_eq!(neg[0].value, TuyaValue::Value(-100));
        // Truncated and ill-typed records are errors, never panics.
        for bad in [
            &[0x00][..],
            &[0, 1, 1, 2, 0, 4, 0, 0][..],
            &[0, 1, 1, 2, 0, 2, 0, 0][..],
            &[0, 1, 1, 9, 0, 1, 0][..],
        ] {
            assert!(tuya_datapoints(bad).is_err(), "{bad:02x?}");
        }
    }
}
