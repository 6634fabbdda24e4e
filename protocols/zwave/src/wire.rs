//! Bounds-checked reading and big-endian writing shared by every decoder in the crate.
//! Nothing here panics: a short read is an [`Error::Truncated`] naming what was read.

use crate::error::{Error, Result};

/// A cursor over a payload. `what` names the structure in truncation errors.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    fn truncated(&self, need: usize) -> Error {
        Error::Truncated {
            what: self.what,
            need: self.pos + need,
            have: self.buf.len(),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.truncated(1))?;
        self.pos += 1;
        Ok(b)
    }

    /// The next byte, if there is one.
    pub(crate) fn opt_u8(&mut self) -> Option<u8> {
        let b = self.buf.get(self.pos).copied();
        if b.is_some() {
            self.pos += 1;
        }
        b
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated(n))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.truncated(n))?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    pub(crate) fn u24(&mut self) -> Result<u32> {
        let s = self.take(3)?;
        Ok(u32::from_be_bytes([0, s[0], s[1], s[2]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        s
    }
}

/// Reads a signed big-endian integer of 1 to 4 bytes.
pub(crate) fn read_int_be(bytes: &[u8]) -> i32 {
    let mut v: i64 = 0;
    for &b in bytes {
        v = (v << 8) | i64::from(b);
    }
    let bits = 8 * bytes.len() as u32;
    if bits == 0 || bits >= 64 {
        return v as i32;
    }
    // Sign-extend from the top bit of the field.
    let shift = 64 - bits;
    ((v << shift) >> shift) as i32
}

/// Writes the low `size` bytes of `value` big-endian (`size` is 1 to 4).
pub(crate) fn write_int_be(out: &mut Vec<u8>, value: i32, size: u8) {
    let bytes = value.to_be_bytes();
    let size = usize::from(size.clamp(1, 4));
    out.extend_from_slice(&bytes[4 - size..]);
}

/// Whether `value` fits a signed field of `size` bytes.
pub(crate) fn fits_signed(value: i32, size: u8) -> bool {
    match size {
        1 => i8::try_from(value).is_ok(),
        2 => i16::try_from(value).is_ok(),
        3 => (-0x80_0000..=0x7F_FFFF).contains(&value),
        4 => true,
        _ => false,
    }
}

/// Parses a bit mask into the numbers whose bits are set; bit 0 of byte 0 is `start`.
pub(crate) fn parse_bitmask(mask: &[u8], start: u16) -> Vec<u16> {
    let mut out = Vec::new();
    for (i, byte) in mask.iter().enumerate() {
        for bit in 0..8 {
            if byte & (1 << bit) != 0 {
                out.push(start + (i as u16) * 8 + bit);
            }
        }
    }
    out
}

/// Encodes numbers (each `>= start`) into a bit mask of at least `min_len` bytes.
pub(crate) fn encode_bitmask(values: &[u16], start: u16, min_len: usize) -> Vec<u8> {
    let len = values
        .iter()
        .filter(|&&v| v >= start)
        .map(|&v| usize::from(v - start) / 8 + 1)
        .max()
        .unwrap_or(0)
        .max(min_len);
    let mut out = vec![0u8; len];
    for &v in values.iter().filter(|&&v| v >= start) {
        let idx = usize::from(v - start);
        if let Some(b) = out.get_mut(idx / 8) {
            *b |= 1 << (idx % 8);
        }
    }
    out
}

/// Lower-case hex, no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Serializes bytes as lower-case hex (`#[serde(serialize_with = "crate::wire::serde_hex")]`).
pub(crate) fn serde_hex<S: serde::Serializer, T: AsRef<[u8]>>(
    bytes: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&to_hex(bytes.as_ref()))
}

/// Parses hex (whitespace, `:` and a `0x` prefix are ignored).
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let t = text.trim().trim_start_matches("0x");
    let digits: Vec<u8> = t
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b':')
        .collect();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_fields_sign_extend() {
        assert_eq!(read_int_be(&[0xFF]), -1);
        assert_eq!(read_int_be(&[0x00, 0xD7]), 215);
        assert_eq!(read_int_be(&[0xFF, 0x38]), -200);
        assert_eq!(read_int_be(&[0x80, 0x00, 0x00]), -0x80_0000);
        assert_eq!(read_int_be(&[0x80, 0, 0, 0]), i32::MIN);
    }

    #[test]
    fn bitmasks_round_trip() {
        let m = encode_bitmask(&[1, 2, 3, 9], 1, 29);
        assert_eq!(m.len(), 29);
        assert_eq!(&m[..2], &[0x07, 0x01]);
        assert_eq!(parse_bitmask(&m, 1), vec![1, 2, 3, 9]);
    }
}
