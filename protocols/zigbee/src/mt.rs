//! TI Z-Stack "MT" (Monitor and Test) framing over UART/TCP: [`MtFrame`] and the streaming
//! [`MtStreamParser`].
//!
//! Wire format (ZH `src/adapter/z-stack/unpi/{constants,frame}.ts`; ZNP `zigpy_znp/frames.py`):
//! `SOF(0xFE) | LEN | CMD0 | CMD1 | DATA(LEN) | FCS`, with `CMD0 = type << 5 | subsystem` and
//! `FCS = XOR(LEN, CMD0, CMD1, DATA…)`. This module owns framing only; what a payload means is
//! [`crate::znp`]'s business. No IO here: the driver pushes the bytes it read.

use serde::Serialize;

use crate::error::{Error, Result};

/// Start-of-frame byte.
pub const SOF: u8 = 0xFE;
/// Largest DATA field Z-Stack accepts (`MaxDataSize` in ZH, `GeneralFrame` limit in ZNP).
pub const MAX_PAYLOAD: usize = 250;
/// SOF + LEN + CMD0 + CMD1 + FCS.
pub const FRAME_OVERHEAD: usize = 5;

/// The 3-bit command type in CMD0 (ZH `unpi/constants.ts` `Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtType {
    Poll,
    /// Synchronous request; answered by exactly one SRSP with the same subsystem and cmd id.
    Sreq,
    /// Asynchronous request or indication; may arrive at any time.
    Areq,
    /// Synchronous response.
    Srsp,
    /// Types 4..=7 are reserved; kept so framing round-trips.
    Reserved(u8),
}

impl MtType {
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0x07 {
            0 => Self::Poll,
            1 => Self::Sreq,
            2 => Self::Areq,
            3 => Self::Srsp,
            other => Self::Reserved(other),
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Self::Poll => 0,
            Self::Sreq => 1,
            Self::Areq => 2,
            Self::Srsp => 3,
            Self::Reserved(b) => b & 0x07,
        }
    }
}

/// The 5-bit subsystem in CMD0 (ZNP `zigpy_znp/types/commands.py` `Subsystem`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Subsystem {
    /// Subsystem 0: RPC error replies to unknown SREQs.
    RpcError,
    Sys,
    Mac,
    Nwk,
    Af,
    Zdo,
    Sapi,
    Util,
    Debug,
    App,
    Ota,
    Znp,
    Ubl,
    AppCnf,
    Zgp,
    Other(u8),
}

impl Subsystem {
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0x1F {
            0x00 => Self::RpcError,
            0x01 => Self::Sys,
            0x02 => Self::Mac,
            0x03 => Self::Nwk,
            0x04 => Self::Af,
            0x05 => Self::Zdo,
            0x06 => Self::Sapi,
            0x07 => Self::Util,
            0x08 => Self::Debug,
            0x09 => Self::App,
            0x0A => Self::Ota,
            0x0B => Self::Znp,
            0x0D => Self::Ubl,
            0x0F => Self::AppCnf,
            0x15 => Self::Zgp,
            other => Self::Other(other),
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Self::RpcError => 0x00,
            Self::Sys => 0x01,
            Self::Mac => 0x02,
            Self::Nwk => 0x03,
            Self::Af => 0x04,
            Self::Zdo => 0x05,
            Self::Sapi => 0x06,
            Self::Util => 0x07,
            Self::Debug => 0x08,
            Self::App => 0x09,
            Self::Ota => 0x0A,
            Self::Znp => 0x0B,
            Self::Ubl => 0x0D,
            Self::AppCnf => 0x0F,
            Self::Zgp => 0x15,
            Self::Other(b) => b & 0x1F,
        }
    }
}

/// One MT frame without SOF, length and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MtFrame {
    pub cmd_type: MtType,
    pub subsystem: Subsystem,
    pub cmd_id: u8,
    #[serde(serialize_with = "crate::serde_hex")]
    pub payload: Vec<u8>,
}

impl MtFrame {
    pub fn new(cmd_type: MtType, subsystem: Subsystem, cmd_id: u8, payload: Vec<u8>) -> Self {
        Self {
            cmd_type,
            subsystem,
            cmd_id,
            payload,
        }
    }

    /// CMD0 as it goes on the wire.
    pub fn cmd0(&self) -> u8 {
        (self.cmd_type.bits() << 5) | self.subsystem.bits()
    }

    /// Encodes SOF, LEN, CMD0, CMD1, DATA and FCS. Fails only if the payload exceeds 250 bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(Error::PayloadTooLong(self.payload.len()));
        }
        let mut out = Vec::with_capacity(self.payload.len() + FRAME_OVERHEAD);
        out.push(SOF);
        // Cannot truncate: checked against MAX_PAYLOAD above.
        out.push(self.payload.len() as u8);
        out.push(self.cmd0());
        out.push(self.cmd_id);
        out.extend_from_slice(&self.payload);
        let fcs = fcs(out.get(1..).unwrap_or_default());
        out.push(fcs);
        Ok(out)
    }

    /// Decodes exactly one complete frame (SOF through FCS, nothing after it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (frame, used) = Self::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(Error::TrailingBytes(bytes.len() - used));
        }
        Ok(frame)
    }

    /// Decodes the frame at the start of `bytes`, returning it and the number of bytes it used.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Self, usize)> {
        let truncated = |need: usize| Error::Truncated {
            what: "MT frame",
            need,
            have: bytes.len(),
        };
        let sof = *bytes.first().ok_or_else(|| truncated(FRAME_OVERHEAD))?;
        if sof != SOF {
            return Err(Error::BadSof(sof));
        }
        let len = usize::from(*bytes.get(1).ok_or_else(|| truncated(FRAME_OVERHEAD))?);
        if len > MAX_PAYLOAD {
            return Err(Error::PayloadTooLong(len));
        }
        let total = len + FRAME_OVERHEAD;
        let frame = bytes.get(..total).ok_or_else(|| truncated(total))?;
        let (body, tail) = frame.split_at(total - 1);
        let found = tail.first().copied().unwrap_or_default();
        let expected = fcs(body.get(1..).unwrap_or_default());
        if expected != found {
            return Err(Error::BadFcs { expected, found });
        }
        let cmd0 = body.get(2).copied().unwrap_or_default();
        let cmd_id = body.get(3).copied().unwrap_or_default();
        let payload = body.get(4..).unwrap_or_default().to_vec();
        Ok((
            Self {
                cmd_type: MtType::from_bits(cmd0 >> 5),
                subsystem: Subsystem::from_bits(cmd0),
                cmd_id,
                payload,
            },
            total,
        ))
    }
}

/// XOR of all bytes: the MT frame check sequence over LEN, CMD0, CMD1 and DATA.
pub fn fcs(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

/// Counters kept by [`MtStreamParser`], for the driver to export as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MtParserStats {
    /// Frames decoded with a good checksum.
    pub frames: u64,
    /// Bytes discarded while hunting for SOF (noise, or the SOF of a rejected frame).
    pub dropped_bytes: u64,
    /// Candidate frames rejected because the checksum did not match.
    pub bad_fcs: u64,
    /// Candidate frames rejected because LEN exceeded 250.
    pub oversize: u64,
}

/// Incremental MT decoder: push bytes as they arrive, pop frames as they complete.
///
/// Resync rule: bytes before a SOF are dropped; a candidate frame whose LEN is over 250 or whose
/// FCS is wrong costs only its SOF byte, and the search restarts at the next byte, so a real frame
/// that was swallowed by a false SOF in noise is still found. (ZH's parser drops the whole bad
/// frame instead; restarting after the SOF recovers more and costs nothing on a clean line.)
#[derive(Debug, Default, Clone)]
pub struct MtStreamParser {
    buf: Vec<u8>,
    /// Start of unparsed data in `buf`; compacted lazily to keep `push` amortised O(n).
    start: usize,
    stats: MtParserStats,
}

impl MtStreamParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete, checksum-valid frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<MtFrame> {
        loop {
            let pending = self.buf.get(self.start..).unwrap_or_default();
            match pending.iter().position(|&b| b == SOF) {
                Some(0) => {}
                Some(skip) => {
                    self.drop_bytes(skip);
                    continue;
                }
                None => {
                    let n = pending.len();
                    self.drop_bytes(n);
                    return None;
                }
            }
            match MtFrame::decode_prefix(pending) {
                Ok((frame, used)) => {
                    self.start += used;
                    self.stats.frames += 1;
                    return Some(frame);
                }
                Err(Error::Truncated { .. }) => return None,
                Err(Error::BadFcs { .. }) => {
                    self.stats.bad_fcs += 1;
                    self.drop_bytes(1);
                }
                Err(_) => {
                    // Oversize LEN (the only other error decode_prefix can give after a SOF).
                    self.stats.oversize += 1;
                    self.drop_bytes(1);
                }
            }
        }
    }

    /// Pushes `bytes` and returns every frame that completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<MtFrame> {
        self.push(bytes);
        std::iter::from_fn(|| self.next_frame()).collect()
    }

    /// Bytes received but not yet part of a frame (a partial frame, usually).
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// Discards any partial frame, e.g. after the link was reopened.
    pub fn reset(&mut self) {
        let n = self.buffered();
        self.drop_bytes(n);
        self.buf.clear();
        self.start = 0;
    }

    pub fn stats(&self) -> MtParserStats {
        self.stats
    }

    fn drop_bytes(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        self.stats.dropped_bytes += n as u64;
    }
}
