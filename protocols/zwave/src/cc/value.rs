//! Value encodings shared by command classes: durations, the precision/scale/size packed
//! numbers of sensors and meters, and switch levels.

use crate::error::{Error, Result};
use crate::wire::{fits_signed, read_int_be, write_int_be, Reader};
use serde::Serialize;

/// A Z-Wave duration byte, kept as sent (zwave-js `core/src/values/Duration.ts`):
/// 0x00-0x7F seconds, 0x80-0xFD minutes (1-126), 0xFE unknown (reports), 0xFF default (sets)
/// or reserved (reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Duration(pub u8);

impl Duration {
    pub const UNKNOWN: Self = Self(0xFE);
    pub const DEFAULT: Self = Self(0xFF);

    /// The duration in seconds, or `None` for unknown / default / reserved.
    pub fn seconds(self) -> Option<u32> {
        match self.0 {
            b @ 0x00..=0x7F => Some(u32::from(b)),
            b @ 0x80..=0xFD => Some((u32::from(b) - 0x7F) * 60),
            _ => None,
        }
    }

    /// The nearest encodable duration (seconds up to 127, then whole minutes up to 126).
    pub fn from_seconds(s: u32) -> Self {
        if s <= 0x7F {
            Self(s as u8)
        } else {
            let minutes = s.div_ceil(60).clamp(1, 126);
            Self(0x7F + minutes as u8)
        }
    }
}

/// Where a switch is heading and how long it takes (v2+ reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Transition {
    pub target: u8,
    pub duration: Duration,
}

/// A level byte of Basic / Multilevel Switch: 0-99 percent, 0xFF = on / 99 (legacy),
/// 0xFE = unknown. `None` for unknown and out-of-range values.
pub fn level_percent(raw: u8) -> Option<u8> {
    match raw {
        0..=99 => Some(raw),
        0xFF => Some(99),
        _ => None,
    }
}

/// A Binary Switch byte: 0x00 off, 0xFF on, 0xFE unknown. v1 devices may send 0x01-0x63 for
/// on; they are read as on here (zwave-js leaves them undefined).
pub fn switch_on(raw: u8) -> Option<bool> {
    match raw {
        0x00 => Some(false),
        0x01..=0x63 | 0xFF => Some(true),
        _ => None,
    }
}

/// A signed fixed-point number: `raw / 10^precision`, sent in `size` bytes (1, 2 or 4; 3 is
/// accepted too, as zwave-js does). Kept as sent so that it re-encodes byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScaledValue {
    pub raw: i32,
    /// 0-7 decimal places.
    pub precision: u8,
    /// 1-4 bytes.
    pub size: u8,
}

impl Default for ScaledValue {
    fn default() -> Self {
        Self {
            raw: 0,
            precision: 0,
            size: 1,
        }
    }
}

/// As JSON: the number it means and the fields it was sent with
/// (`{"value": 21.5, "raw": 215, "precision": 1, "size": 2}`).
impl Serialize for ScaledValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ScaledValue", 4)?;
        st.serialize_field("value", &self.value())?;
        st.serialize_field("raw", &self.raw)?;
        st.serialize_field("precision", &self.precision)?;
        st.serialize_field("size", &self.size)?;
        st.end()
    }
}

impl ScaledValue {
    /// The smallest size that holds `raw` at `precision`.
    pub fn new(raw: i32, precision: u8) -> Self {
        let size = if fits_signed(raw, 1) {
            1
        } else if fits_signed(raw, 2) {
            2
        } else {
            4
        };
        Self {
            raw,
            precision: precision.min(7),
            size,
        }
    }

    /// `value` rounded to `precision` decimals; `None` if it does not fit 32 bits.
    pub fn from_f64(value: f64, precision: u8) -> Option<Self> {
        let precision = precision.min(7);
        let scaled = (value * 10f64.powi(i32::from(precision))).round();
        if !scaled.is_finite() || scaled < f64::from(i32::MIN) || scaled > f64::from(i32::MAX) {
            return None;
        }
        Some(Self::new(scaled as i32, precision))
    }

    pub fn value(&self) -> f64 {
        f64::from(self.raw) / 10f64.powi(i32::from(self.precision))
    }

    /// The packed byte: precision (bits 7-5), `scale` (bits 4-3), size (bits 2-0).
    pub fn pss(&self, scale: u8) -> u8 {
        ((self.precision & 0x07) << 5) | ((scale & 0x03) << 3) | (self.size & 0x07)
    }

    pub(crate) fn check(&self, what: &'static str) -> Result<()> {
        if !(1..=4).contains(&self.size) || self.precision > 7 {
            return Err(Error::ValueOutOfRange {
                what,
                detail: format!("size {} precision {}", self.size, self.precision),
            });
        }
        if !fits_signed(self.raw, self.size) {
            return Err(Error::ValueOutOfRange {
                what,
                detail: format!("{} does not fit {} byte(s)", self.raw, self.size),
            });
        }
        Ok(())
    }

    /// Writes the value bytes (not the PSS byte).
    pub(crate) fn write_value(&self, out: &mut Vec<u8>) {
        write_int_be(out, self.raw, self.size);
    }

    /// Reads a PSS byte and its value; returns the value and the 2-bit scale
    /// (zwave-js `core/src/values/Primitive.ts` `parseFloatWithScale`).
    pub(crate) fn read_with_scale(r: &mut Reader<'_>) -> Result<(Self, u8)> {
        let pss = r.u8()?;
        let v = Self::read_value(r, pss)?;
        Ok((v, (pss >> 3) & 0x03))
    }

    /// Reads the value bytes for an already-read PSS byte.
    pub(crate) fn read_value(r: &mut Reader<'_>, pss: u8) -> Result<Self> {
        let size = pss & 0x07;
        if !(1..=4).contains(&size) {
            return Err(Error::InvalidField {
                what: "value size",
                value: u32::from(size),
            });
        }
        let bytes = r.take(usize::from(size))?;
        Ok(Self {
            raw: read_int_be(bytes),
            precision: pss >> 5,
            size,
        })
    }
}

/// A signed integer of 1, 2 or 4 bytes (Configuration values; 3 is accepted on decode).
pub(crate) fn read_sized_int(r: &mut Reader<'_>, size: u8) -> Result<i32> {
    if !(1..=4).contains(&size) {
        return Err(Error::InvalidField {
            what: "value size",
            value: u32::from(size),
        });
    }
    Ok(read_int_be(r.take(usize::from(size))?))
}

pub(crate) fn check_sized_int(value: i32, size: u8, what: &'static str) -> Result<()> {
    if !(1..=4).contains(&size) || !fits_signed(value, size) {
        return Err(Error::ValueOutOfRange {
            what,
            detail: format!("{value} in {size} byte(s)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration(0x05).seconds(), Some(5));
        assert_eq!(Duration(0x80).seconds(), Some(60));
        assert_eq!(Duration(0xFD).seconds(), Some(126 * 60));
        assert_eq!(Duration::UNKNOWN.seconds(), None);
        assert_eq!(Duration::from_seconds(90), Duration(90));
        assert_eq!(Duration::from_seconds(200), Duration(0x83));
    }

    #[test]
    fn scaled_values() {
        // Reference §3: `22 00 d7` = precision 1, scale 0, size 2, 215 -> 21.5.
        let mut r = Reader::new(&[0x22, 0x00, 0xD7], "t");
        let (v, scale) = ScaledValue::read_with_scale(&mut r).unwrap();
        assert_eq!((v.value(), scale, v.size, v.pss(scale)), (21.5, 0, 2, 0x22));
        assert_eq!(ScaledValue::from_f64(-3.25, 2).unwrap().raw, -325);
    }
}
