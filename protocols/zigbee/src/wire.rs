//! Little-endian cursor reading and writing shared by the MT, ZNP and ZCL codecs.
//!
//! Owns bounds checking: every read on untrusted input goes through [`Reader`], which returns
//! [`Error::Truncated`] instead of indexing past the end.

use crate::error::{Error, Result};
use crate::IeeeAddr;

/// A checked cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(Error::Truncated {
                what: self.what,
                need: n,
                have: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// An unsigned little-endian integer of `width` bytes (1..=8).
    pub(crate) fn uint(&mut self, width: usize) -> Result<u64> {
        let bytes = self.bytes(width.min(8))?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    pub(crate) fn ieee(&mut self) -> Result<IeeeAddr> {
        Ok(IeeeAddr(u64::from_le_bytes(self.array()?)))
    }

    /// An optional trailing u8: `None` when the input has ended.
    pub(crate) fn opt_u8(&mut self) -> Option<u8> {
        self.u8().ok()
    }
}

/// Little-endian writing helpers on a byte vector.
pub(crate) trait Writer {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_uint(&mut self, v: u64, width: usize);
    fn put_ieee(&mut self, v: IeeeAddr);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_uint(&mut self, v: u64, width: usize) {
        let bytes = v.to_le_bytes();
        self.extend_from_slice(&bytes[..width.min(8)]);
    }
    fn put_ieee(&mut self, v: IeeeAddr) {
        self.extend_from_slice(&v.0.to_le_bytes());
    }
}

/// Length prefix for a u8-counted list; saturates (an overlong list makes the whole MT payload
/// exceed 250 bytes, which [`crate::MtFrame::to_bytes`] then rejects).
pub(crate) fn len_u8(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}
