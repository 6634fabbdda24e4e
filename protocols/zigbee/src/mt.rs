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
    /// Partial frames given up on because the line went quiet ([`MtStreamParser::flush_stalled`]).
    pub stalled: u64,
    /// Checksum-valid candidates rejected because their type or subsystem cannot occur in this
    /// direction ([`MtStreamParser::accepting`]): noise that forged a frame.
    pub implausible: u64,
    /// Runs of bytes before a SOF that no rejected candidate explains: noise or garbage on
    /// the line, one per run however long (its bytes are in `dropped_bytes`).
    pub noise: u64,
}

/// Incremental MT decoder: push bytes as they arrive, pop frames as they complete.
///
/// Resync rule: bytes before a SOF are dropped; a candidate frame whose LEN is over 250 or whose
/// FCS is wrong costs only its SOF byte, and the search restarts at the next byte, so a real frame
/// that was swallowed by a false SOF in noise is still found. (ZH's parser drops the whole bad
/// frame instead; restarting after the SOF recovers more and costs nothing on a clean line.)
#[derive(Debug, Default, Clone)]
pub struct MtStreamParser {
    /// When set, only frames of these types from known subsystems are accepted.
    accept: Option<&'static [MtType]>,
    /// Frames from subsystems this crate does not know pass too (an NCP answers them
    /// with an RPC error rather than ignoring them).
    any_subsystem: bool,
    buf: Vec<u8>,
    /// Start of unparsed data in `buf`; compacted lazily to keep `push` amortised O(n).
    start: usize,
    stats: MtParserStats,
    /// The bytes being skipped are the rest of a rejected candidate (already counted).
    after_reject: bool,
    /// A noise run already counted goes on into the next bytes pushed.
    in_noise: bool,
}

impl MtStreamParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that accepts only frames of `types` from known subsystems; anything else is
    /// treated like a bad checksum (the SOF is dropped and the search goes on).
    ///
    /// MT's 8-bit XOR lets noise forge a frame with a valid FCS about once in 256 false SOFs,
    /// and a forged LEN of up to 250 then swallows the real frames behind it. A host on a UART
    /// only ever receives AREQ and SRSP ([`Self::from_ncp`]); an NCP only SREQ and AREQ
    /// ([`Self::from_host`]). Checking that rejects most forgeries at no cost.
    pub fn accepting(types: &'static [MtType]) -> Self {
        Self {
            accept: Some(types),
            ..Self::default()
        }
    }

    /// For a host reading what the coordinator sends: AREQ and SRSP only.
    pub fn from_ncp() -> Self {
        Self::accepting(&[MtType::Areq, MtType::Srsp])
    }

    /// For a coordinator (or emulator) reading what the host sends: SREQ and AREQ only,
    /// from any subsystem: Z-Stack answers an SREQ to a subsystem it lacks with an RPC
    /// error (`MT_RPC_ERR_SUBSYSTEM`), so a host waiting on one is not left hanging.
    pub fn from_host() -> Self {
        Self {
            any_subsystem: true,
            ..Self::accepting(&[MtType::Sreq, MtType::Areq])
        }
    }

    fn plausible(&self, frame: &MtFrame) -> bool {
        match self.accept {
            None => true,
            Some(types) => {
                types.contains(&frame.cmd_type)
                    && (self.any_subsystem || !matches!(frame.subsystem, Subsystem::Other(_)))
            }
        }
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
                    self.count_noise();
                    self.drop_bytes(skip);
                    // The next SOF ends the run.
                    self.after_reject = false;
                    self.in_noise = false;
                    continue;
                }
                None => {
                    let n = pending.len();
                    if n > 0 {
                        self.count_noise();
                        self.in_noise = !self.after_reject;
                    }
                    self.drop_bytes(n);
                    return None;
                }
            }
            match MtFrame::decode_prefix(pending) {
                Ok((frame, _)) if !self.plausible(&frame) => {
                    self.stats.implausible += 1;
                    self.after_reject = true;
                    self.drop_bytes(1);
                }
                Ok((frame, used)) => {
                    self.start += used;
                    self.stats.frames += 1;
                    self.after_reject = false;
                    self.in_noise = false;
                    return Some(frame);
                }
                Err(Error::Truncated { .. }) => return None,
                Err(Error::BadFcs { .. }) => {
                    self.stats.bad_fcs += 1;
                    self.after_reject = true;
                    self.drop_bytes(1);
                }
                Err(_) => {
                    // Oversize LEN (the only other error decode_prefix can give after a SOF).
                    self.stats.oversize += 1;
                    self.after_reject = true;
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

    /// Gives up on a partial frame that stopped growing and rescans after its SOF.
    ///
    /// A false SOF in noise followed by a large LEN makes the parser wait for up to 255 bytes
    /// that may never come, holding back the real frames behind it. The driver calls this when
    /// no byte has arrived for longer than a frame takes on the wire (at 115200 baud a maximal
    /// frame takes 22 ms); whatever is still incomplete then is stale. Returns the frames
    /// this uncovers; the stale rest is dropped and counted.
    pub fn flush_stalled(&mut self) -> Vec<MtFrame> {
        let mut out = Vec::new();
        if self.buffered() > 0 {
            self.stats.stalled += 1;
            self.after_reject = true;
        }
        while self.buffered() > 0 {
            self.drop_bytes(1);
            out.extend(std::iter::from_fn(|| self.next_frame()));
        }
        out
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

    /// A run of bytes before a SOF begins: noise, unless it is the rest of a rejected
    /// candidate or a run already counted.
    fn count_noise(&mut self) {
        if !self.after_reject && !self.in_noise {
            self.stats.noise += 1;
        }
    }

    fn drop_bytes(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        self.stats.dropped_bytes += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Garbage on the line is one `noise` per run, however long and however it is
    /// chunked; the rest of a rejected candidate is not noise (it is counted as itself).
    #[test]
    fn a_run_of_garbage_is_counted_once() {
        let good = MtFrame::new(MtType::Areq, Subsystem::Sys, 0x80, vec![0])
            .to_bytes()
            .unwrap();
        let mut p = MtStreamParser::new();
        for chunk in vec![0u8; 5000].chunks(700) {
            assert!(p.feed(chunk).is_empty());
        }
        assert_eq!(p.stats().noise, 1);
        assert_eq!(p.feed(&good).len(), 1);
        assert_eq!(p.feed(b"garbage").len(), 0);
        assert_eq!(p.feed(&good).len(), 1);
        assert_eq!(p.stats().noise, 2);
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        bad.extend_from_slice(&good);
        assert_eq!(p.feed(&bad).len(), 1);
        assert_eq!((p.stats().noise, p.stats().bad_fcs), (2, 1));
    }

    /// A false SOF in noise whose forged LEN swallows real frames, checksum and all, is
    /// rejected by a direction-aware parser when its CMD0 is impossible (here a POLL).
    #[test]
    fn a_forged_frame_with_an_impossible_header_does_not_swallow_real_ones() {
        let real = MtFrame::new(MtType::Areq, Subsystem::Af, 0x80, vec![0, 1, 7])
            .to_bytes()
            .unwrap();
        // Noise `FE 04 01 FE` (LEN 4, CMD0 0x01 = POLL/SYS) whose 4 "data" bytes are the start
        // of a real frame and whose "FCS" happens to match.
        let mut stream = vec![SOF, 4, 0x01, 0xFE];
        stream.extend_from_slice(&real[..4]);
        stream.push(fcs(&stream[1..]));
        stream.extend_from_slice(&real[4..]);
        // A lenient parser takes the forgery and loses the real frame.
        let mut lenient = MtStreamParser::new();
        let got = lenient.feed(&stream);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].cmd_type, MtType::Poll);
        // The host-side parser rejects it and finds the real frame.
        let mut strict = MtStreamParser::from_ncp();
        let got = strict.feed(&stream);
        assert!(got.iter().all(|f| f.cmd_type == MtType::Areq), "{got:?}");
        assert_eq!(strict.stats().implausible, 1);
        let mut strict = MtStreamParser::from_ncp();
        let mut whole = stream.clone();
        whole.extend_from_slice(&real);
        let got = strict.feed(&whole);
        assert_eq!(got.last().map(|f| f.payload.clone()), Some(vec![0, 1, 7]));
    }
}
