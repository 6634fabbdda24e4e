//! Z-Wave Serial API framing: [`Frame`] (ACK / NAK / CAN / data frame), the frame builder
//! ([`DataFrame::to_bytes`]) and the resyncing [`SerialParser`].
//!
//! Wire format (zwave-js `packages/serial/src/message/Message.ts`, `MessageHeaders.ts`;
//! Silicon Labs INS12350 "Serial API Host Application Programming Guide"):
//! `SOF(0x01) LEN TYPE FUNC PAYLOAD… CHK`, where LEN counts TYPE, FUNC, the payload and CHK
//! (`payload.len() + 3`), TYPE is 0x00 for a request and 0x01 for a response, and
//! `CHK = 0xFF ^ LEN ^ TYPE ^ FUNC ^ payload…`. ACK (0x06), NAK (0x15) and CAN (0x18) travel as
//! single bytes. This module owns framing only; what a payload means is [`crate::message`]'s
//! business. No IO and no clock: the driver pushes what it read and tells the parser when the
//! line went quiet.

use crate::error::{Error, Result};
use serde::Serialize;

/// Start of a data frame.
pub const SOF: u8 = 0x01;
/// Acknowledges a data frame with a good checksum.
pub const ACK: u8 = 0x06;
/// Rejects a data frame (bad checksum, truncated); the sender retransmits.
pub const NAK: u8 = 0x15;
/// Sent instead of ACK when a data frame arrived while the receiver was itself sending.
pub const CAN: u8 = 0x18;
/// The smallest LEN: TYPE, FUNC and CHK.
pub const MIN_LEN: u8 = 3;
/// The largest payload a data frame can carry (LEN is one byte: 255 - 3).
pub const MAX_PAYLOAD: usize = 252;

/// TYPE of a data frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameType {
    /// 0x00: a request from the host, or a callback / unsolicited frame from the controller.
    Request,
    /// 0x01: the controller's synchronous answer to a host request.
    Response,
    /// Any other TYPE byte; kept so that framing round-trips (no message uses it).
    Other(u8),
}

impl FrameType {
    pub fn from_byte(b: u8) -> Self {
        match b {
            0x00 => Self::Request,
            0x01 => Self::Response,
            other => Self::Other(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Self::Request => 0x00,
            Self::Response => 0x01,
            Self::Other(b) => b,
        }
    }
}

/// One data frame without SOF, LEN and CHK.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DataFrame {
    pub frame_type: FrameType,
    /// The Serial API function id (see [`crate::function`]).
    pub function: u8,
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub payload: Vec<u8>,
}

impl DataFrame {
    pub fn new(frame_type: FrameType, function: u8, payload: Vec<u8>) -> Self {
        Self {
            frame_type,
            function,
            payload,
        }
    }

    /// A REQ frame.
    pub fn request(function: u8, payload: Vec<u8>) -> Self {
        Self::new(FrameType::Request, function, payload)
    }

    /// A RES frame.
    pub fn response(function: u8, payload: Vec<u8>) -> Self {
        Self::new(FrameType::Response, function, payload)
    }

    /// Encodes SOF, LEN, TYPE, FUNC, payload and CHK. Fails only for payloads over 252 bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.payload.len() + 5);
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Appends the encoded frame to `out` (nothing is appended on error).
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<()> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(Error::TooLong {
                what: "Serial API payload",
                len: self.payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        // Cannot truncate: checked against MAX_PAYLOAD above.
        let len = (self.payload.len() + 3) as u8;
        let ty = self.frame_type.to_byte();
        let chk = self
            .payload
            .iter()
            .fold(0xFF ^ len ^ ty ^ self.function, |acc, b| acc ^ b);
        out.reserve(self.payload.len() + 5);
        out.extend_from_slice(&[SOF, len, ty, self.function]);
        out.extend_from_slice(&self.payload);
        out.push(chk);
        Ok(())
    }

    /// Decodes exactly one complete data frame (SOF through CHK, nothing after it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (frame, used) = Self::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(Error::TrailingBytes(bytes.len() - used));
        }
        Ok(frame)
    }

    /// Decodes the data frame at the start of `bytes`, returning it and the bytes it used.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Self, usize)> {
        let truncated = |need: usize| Error::Truncated {
            what: "Serial API frame",
            need,
            have: bytes.len(),
        };
        let sof = *bytes.first().ok_or_else(|| truncated(5))?;
        if sof != SOF {
            return Err(Error::BadSof(sof));
        }
        let len = *bytes.get(1).ok_or_else(|| truncated(5))?;
        if len < MIN_LEN {
            return Err(Error::BadLength(len));
        }
        let total = usize::from(len) + 2;
        let frame = bytes.get(..total).ok_or_else(|| truncated(total))?;
        let (body, tail) = frame.split_at(total - 1);
        let found = tail.first().copied().unwrap_or_default();
        let expected = checksum(body.get(1..).unwrap_or_default());
        if expected != found {
            return Err(Error::BadChecksum { expected, found });
        }
        Ok((
            Self {
                frame_type: FrameType::from_byte(body.get(2).copied().unwrap_or_default()),
                function: body.get(3).copied().unwrap_or_default(),
                payload: body.get(4..).unwrap_or_default().to_vec(),
            },
            total,
        ))
    }
}

/// The Serial API checksum over LEN, TYPE, FUNC and the payload: 0xFF XOR every byte.
pub fn checksum(len_through_payload: &[u8]) -> u8 {
    len_through_payload.iter().fold(0xFF, |acc, b| acc ^ b)
}

/// Anything that travels on a Serial API line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    Ack,
    Nak,
    Can,
    Data(DataFrame),
}

impl Frame {
    /// The bytes on the wire (one byte for ACK, NAK and CAN).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        match self {
            Self::Ack => Ok(vec![ACK]),
            Self::Nak => Ok(vec![NAK]),
            Self::Can => Ok(vec![CAN]),
            Self::Data(d) => d.to_bytes(),
        }
    }
}

impl From<DataFrame> for Frame {
    fn from(d: DataFrame) -> Self {
        Self::Data(d)
    }
}

/// Why a candidate data frame was thrown away. The host answers the first three with a NAK
/// (zwave-js `Driver.ts` `handleDecodeError`), so that the controller retransmits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// The checksum did not match.
    BadChecksum { expected: u8, found: u8 },
    /// LEN was below 3.
    BadLength(u8),
    /// LEN was above the parser's limit ([`SerialParser::with_max_len`]).
    Oversize(u8),
    /// A partial frame was abandoned because the line went quiet
    /// ([`SerialParser::flush_stalled`]); `bytes` were buffered.
    Stalled { bytes: usize },
}

/// What the parser yields: a frame, or a rejected candidate the host should NAK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseEvent {
    Frame(Frame),
    Rejected(Rejection),
}

/// Counters kept by [`SerialParser`], for the driver to export as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ParserStats {
    /// Data frames decoded with a good checksum.
    pub frames: u64,
    pub acks: u64,
    pub naks: u64,
    pub cans: u64,
    /// Bytes discarded while hunting for SOF or a control byte (noise, or the SOF of a
    /// rejected candidate).
    pub dropped_bytes: u64,
    /// Candidates rejected because the checksum did not match.
    pub bad_checksum: u64,
    /// Candidates rejected because LEN was below 3.
    pub bad_length: u64,
    /// Candidates rejected because LEN exceeded the parser's limit.
    pub oversize: u64,
    /// Partial frames given up on because the line went quiet.
    pub stalled: u64,
    /// Runs of bytes outside a frame that are none of SOF, ACK, NAK and CAN, and that no
    /// rejected candidate explains: noise or garbage on the line, one per run however
    /// long (its bytes are in `dropped_bytes`).
    pub noise: u64,
}

/// Incremental Serial API decoder: push bytes as they arrive, pop frames as they complete.
///
/// Outside a frame, ACK/NAK/CAN are yielded on their own and every other non-SOF byte is
/// skipped, as INS12350 requires ("MUST ignore all other byte values"; zwave-js
/// `SerialAPIParser.ts` does the same).
///
/// Resync rules. A candidate whose LEN is out of range costs only its SOF byte. A candidate
/// with a wrong checksum is dropped whole, as zwave-js does (the host NAKs it and the
/// controller sends it again) — unless a complete data frame with a good checksum starts
/// inside it: then the parser resumes there, so a false SOF in line noise does not swallow
/// the real frame behind it. Scanning only the inside of the rejected span for *complete,
/// valid* frames keeps the SOF-valued bytes inside a corrupted frame (every response's TYPE
/// is 0x01) from being waited on or reported as more bad frames.
///
/// The parser has no clock. The spec has the receiver abort a frame 1500 ms after its SOF
/// (zwave-js uses a 150 ms byte timeout); the driver implements that by calling
/// [`SerialParser::flush_stalled`] when [`SerialParser::has_partial`] and the line has been
/// quiet that long.
#[derive(Debug, Clone)]
pub struct SerialParser {
    buf: Vec<u8>,
    /// Start of unparsed data in `buf`; compacted lazily to keep `push` amortised O(n).
    start: usize,
    max_len: u8,
    /// 700-series firmware 7.19+ corrupts the high nibble of the first ACK after a soft reset
    /// (zwave-js `ignoreAckHighNibble`): when set, one byte with low nibble 6 counts as ACK.
    lenient_ack: bool,
    stats: ParserStats,
    /// The bytes being skipped follow a candidate rejected for its LEN (already counted).
    after_reject: bool,
    /// A noise run already counted goes on into the next bytes pushed.
    in_noise: bool,
}

impl Default for SerialParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SerialParser {
    /// A parser accepting any LEN from 3 to 255.
    pub fn new() -> Self {
        Self::with_max_len(u8::MAX)
    }

    /// A parser that rejects candidates whose LEN exceeds `max_len` (as [`Rejection::Oversize`])
    /// instead of waiting for up to 257 bytes that may be noise.
    pub fn with_max_len(max_len: u8) -> Self {
        Self {
            buf: Vec::with_capacity(512),
            start: 0,
            max_len: max_len.max(MIN_LEN),
            lenient_ack: false,
            stats: ParserStats::default(),
            after_reject: false,
            in_noise: false,
        }
    }

    /// Accepts the next byte whose low nibble is 0x6 as an ACK, once. Call it right before
    /// sending SoftReset to a 700-series controller with SDK 7.19 or later.
    pub fn accept_corrupted_ack_once(&mut self) {
        self.lenient_ack = true;
    }

    pub fn stats(&self) -> ParserStats {
        self.stats
    }

    /// Bytes held back as the start of an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether a data frame has started but not completed.
    pub fn has_partial(&self) -> bool {
        self.buffered() > 0
    }

    /// Appends bytes read from the line.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Pushes `bytes` and returns every complete frame (rejections are only counted).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Frame> {
        self.push(bytes);
        std::iter::from_fn(|| self.next_frame()).collect()
    }

    /// The next frame, skipping rejected candidates (which are counted in [`Self::stats`]).
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.next_event()? {
                ParseEvent::Frame(f) => return Some(f),
                ParseEvent::Rejected(_) => continue,
            }
        }
    }

    /// The next frame or rejected candidate, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Option<ParseEvent> {
        loop {
            let rest = &self.buf[self.start..];
            let &first = rest.first()?;
            match first {
                ACK => return Some(self.control(Frame::Ack)),
                NAK => return Some(self.control(Frame::Nak)),
                CAN => return Some(self.control(Frame::Can)),
                SOF => {}
                b if self.lenient_ack && b & 0x0F == 0x06 => {
                    self.lenient_ack = false;
                    return Some(self.control(Frame::Ack));
                }
                _ => {
                    // Noise: skip to the next byte that can start something.
                    let skip = rest
                        .iter()
                        .position(|&b| {
                            matches!(b, SOF | ACK | NAK | CAN)
                                || (self.lenient_ack && b & 0x0F == 0x06)
                        })
                        .unwrap_or(rest.len());
                    if !self.after_reject && !self.in_noise {
                        self.stats.noise += 1;
                    }
                    // Ran out of bytes: the run may go on in the next ones pushed.
                    let open = skip == rest.len();
                    self.in_noise = open && !self.after_reject;
                    if !open {
                        self.after_reject = false;
                    }
                    self.start += skip;
                    self.stats.dropped_bytes += skip as u64;
                    continue;
                }
            }
            self.in_noise = false;
            let &len = rest.get(1)?;
            if len < MIN_LEN {
                self.reject_sof();
                self.after_reject = true;
                self.stats.bad_length += 1;
                return Some(ParseEvent::Rejected(Rejection::BadLength(len)));
            }
            if len > self.max_len {
                self.reject_sof();
                self.after_reject = true;
                self.stats.oversize += 1;
                return Some(ParseEvent::Rejected(Rejection::Oversize(len)));
            }
            let total = usize::from(len) + 2;
            let candidate = rest.get(..total)?;
            match DataFrame::decode_prefix(candidate) {
                Ok((frame, used)) => {
                    self.start += used;
                    self.stats.frames += 1;
                    self.after_reject = false;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Some(ParseEvent::Frame(Frame::Data(frame)));
                }
                Err(Error::BadChecksum { expected, found }) => {
                    self.skip_span(total);
                    self.stats.bad_checksum += 1;
                    return Some(ParseEvent::Rejected(Rejection::BadChecksum {
                        expected,
                        found,
                    }));
                }
                // Unreachable for a complete candidate starting with SOF and a valid LEN;
                // treated like noise rather than trusted.
                Err(_) => {
                    self.reject_sof();
                    continue;
                }
            }
        }
    }

    /// Gives up on a partial frame because the line went quiet. Its bytes are dropped, up to a
    /// complete data frame with a good checksum inside them if there is one (a frame hidden
    /// behind a false SOF is not lost).
    pub fn flush_stalled(&mut self) -> Option<Rejection> {
        let bytes = self.buffered();
        if bytes == 0 {
            return None;
        }
        self.skip_span(bytes);
        self.stats.stalled += 1;
        Some(Rejection::Stalled { bytes })
    }

    /// Drops everything buffered (e.g. after the port was reopened).
    pub fn reset(&mut self) {
        self.stats.dropped_bytes += self.buffered() as u64;
        self.buf.clear();
        self.start = 0;
    }

    fn control(&mut self, frame: Frame) -> ParseEvent {
        self.start += 1;
        self.in_noise = false;
        self.after_reject = false;
        match frame {
            Frame::Ack => self.stats.acks += 1,
            Frame::Nak => self.stats.naks += 1,
            Frame::Can => self.stats.cans += 1,
            Frame::Data(_) => {}
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        ParseEvent::Frame(frame)
    }

    fn reject_sof(&mut self) {
        self.start += 1;
        self.stats.dropped_bytes += 1;
    }

    /// Drops the `span` bytes at `start`, or fewer if a complete, checksum-valid data frame
    /// starts inside them.
    fn skip_span(&mut self, span: usize) {
        let end = (self.start + span).min(self.buf.len());
        let resume = (self.start + 1..end)
            .find(|&i| self.valid_frame_at(i))
            .unwrap_or(end);
        self.stats.dropped_bytes += (resume - self.start) as u64;
        self.start = resume;
    }

    fn valid_frame_at(&self, i: usize) -> bool {
        let rest = &self.buf[i..];
        match (rest.first(), rest.get(1)) {
            (Some(&SOF), Some(&len)) if (MIN_LEN..=self.max_len).contains(&len) => rest
                .get(..usize::from(len) + 2)
                .is_some_and(|f| DataFrame::decode_prefix(f).is_ok()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Garbage between frames is one `noise` per run, however it is chunked; the bytes
    /// after a candidate rejected for its LEN are not counted again.
    #[test]
    fn a_run_of_garbage_is_counted_once() {
        let mut p = SerialParser::new();
        for chunk in vec![0u8; 5000].chunks(700) {
            assert!(p.feed(chunk).is_empty());
        }
        assert_eq!(p.stats().noise, 1);
        assert_eq!(p.feed(&[ACK]), vec![Frame::Ack]);
        assert!(p.feed(b"garbage").is_empty());
        assert_eq!(p.stats().noise, 2);
        // SOF, LEN 2 (too short), then its other bytes: one bad_length, no noise.
        assert!(p.feed(&[SOF, 2, 0x77, 0x55]).is_empty());
        assert_eq!(p.feed(&[ACK]), vec![Frame::Ack]);
        assert_eq!((p.stats().noise, p.stats().bad_length), (2, 1));
    }
    use crate::wire::from_hex;

    fn hex(s: &str) -> Vec<u8> {
        from_hex(s).unwrap()
    }

    #[test]
    fn get_controller_version_request_matches_the_reference() {
        // Reference (zwave-js mock, observed): `01 03 00 15 e9`.
        let f = DataFrame::request(0x15, vec![]);
        assert_eq!(f.to_bytes().unwrap(), hex("010300 15e9"));
        assert_eq!(DataFrame::from_bytes(&hex("01030015e9")).unwrap(), f);
    }

    #[test]
    fn noise_control_bytes_and_split_frames() {
        let mut p = SerialParser::new();
        // Noise, an ACK, half a frame.
        p.push(&[0xAA, 0x00, ACK, 0x01, 0x04]);
        assert_eq!(p.next_frame(), Some(Frame::Ack));
        assert_eq!(p.next_frame(), None);
        assert!(p.has_partial());
        // The rest of `01 04 01 13 01 e8` (SendData response, wasSent=1; zwave-js#7815).
        p.push(&[0x01, 0x13, 0x01, 0xE8, CAN]);
        assert_eq!(
            p.next_frame(),
            Some(Frame::Data(DataFrame::response(0x13, vec![0x01])))
        );
        assert_eq!(p.next_frame(), Some(Frame::Can));
        let s = p.stats();
        assert_eq!((s.frames, s.acks, s.cans, s.dropped_bytes), (1, 1, 1, 2));
    }

    #[test]
    fn bad_checksum_drops_the_frame_and_finds_the_next() {
        let good = DataFrame::response(0x13, vec![0x01]).to_bytes().unwrap();
        let mut bytes = good.clone();
        *bytes.last_mut().unwrap() ^= 0x55;
        bytes.extend_from_slice(&good);
        let mut p = SerialParser::new();
        p.push(&bytes);
        assert!(matches!(
            p.next_event(),
            Some(ParseEvent::Rejected(Rejection::BadChecksum { .. }))
        ));
        assert_eq!(
            p.next_frame(),
            Some(Frame::Data(DataFrame::response(0x13, vec![1])))
        );
        assert_eq!(p.next_event(), None);
        let s = p.stats();
        assert_eq!((s.bad_checksum, s.dropped_bytes, s.frames), (1, 6, 1));
    }

    #[test]
    fn a_frame_inside_a_false_candidate_is_found() {
        // Noise `01 05`, then GetControllerVersion: the false candidate spans the real frame.
        let mut p = SerialParser::new();
        p.push(&[SOF, 0x05, 0x01, 0x03, 0x00, 0x15, 0xE9]);
        assert!(matches!(
            p.next_event(),
            Some(ParseEvent::Rejected(Rejection::BadChecksum { .. }))
        ));
        assert_eq!(
            p.next_frame(),
            Some(Frame::Data(DataFrame::request(0x15, vec![])))
        );
    }

    #[test]
    fn false_sof_in_noise_does_not_hide_a_frame() {
        // A stray SOF with a huge LEN, then a real frame: the limit rejects it at once.
        let good = DataFrame::request(0x0A, vec![0x00]).to_bytes().unwrap();
        let mut bytes = vec![SOF, 0xF0];
        bytes.extend_from_slice(&good);
        let mut p = SerialParser::with_max_len(64);
        assert_eq!(
            p.feed(&bytes),
            vec![Frame::Data(DataFrame::request(0x0A, vec![0]))]
        );
        assert_eq!(p.stats().oversize, 1);
        // Without the limit the parser waits; the driver's quiet-line timeout recovers it.
        let mut p = SerialParser::new();
        assert!(p.feed(&bytes).is_empty());
        assert_eq!(
            p.flush_stalled(),
            Some(Rejection::Stalled { bytes: bytes.len() })
        );
        assert_eq!(
            p.next_frame(),
            Some(Frame::Data(DataFrame::request(0x0A, vec![0])))
        );
        assert_eq!(p.stats().stalled, 1);
    }

    #[test]
    fn corrupted_ack_after_soft_reset_is_accepted_once() {
        let mut p = SerialParser::new();
        p.accept_corrupted_ack_once();
        assert_eq!(p.feed(&[0x86, 0x86]), vec![Frame::Ack]);
        assert_eq!(p.stats().dropped_bytes, 1);
    }

    #[test]
    fn short_length_is_rejected() {
        let mut p = SerialParser::new();
        p.push(&[SOF, 0x02, 0x00, 0xFD]);
        assert_eq!(
            p.next_event(),
            Some(ParseEvent::Rejected(Rejection::BadLength(2)))
        );
        assert_eq!(p.next_event(), None);
    }
}
