//! The Serial API host state machine over the shared serial session pieces
//! ([`FrameReader`] and [`Exchange`] from [`crate::radio::session`]): one request in flight,
//! sent as one frame per write, then ACK → response → callback (or the unsolicited frame
//! that finishes it), each with its own deadline.
//!
//! Rules kept here (INS12350 §6, zwave-js `Driver.ts` and `SerialAPICommandMachine.ts`):
//! - every data frame from the controller is ACKed the moment it is parsed, a frame with a
//!   bad checksum is NAKed (so the controller sends it again);
//! - no ACK within the ACK timeout (1,600 ms): sent again at once, up to three tries;
//! - CAN (a collision) or NAK: sent again after 100 ms + n·1000 ms, up to three tries;
//! - callback ids run 1..=255 (the codec's [`CallbackIds`]).
//!
//! Owns the host side of the framing; must not decide what a failure means for the
//! controller (that is `recovery` in `mod.rs`) nor log payloads.

use std::sync::Arc;
use std::time::Duration;

use fieldgate_zwave::frame::Rejection;
use fieldgate_zwave::message::{
    classify_data, Callback, FrameClass, Inbound as Decoded, Response, Unsolicited,
};
use fieldgate_zwave::{DataFrame, Frame as ZFrame, FrameType, Request, SerialParser};
use tokio::time::Instant;

use crate::radio::link::Link;
use crate::radio::session::{
    self, Exchange, Expect, FrameParser, FrameReader, Outcome, SessionConfig, SessionError, Stage,
};
use crate::radio::RadioCounters;

/// How long a partial frame may sit with no new byte (zwave-js' byte timeout).
const STALL: Duration = Duration::from_millis(150);
/// Tries of one frame that gets no ACK, a CAN or a NAK.
const FRAME_ATTEMPTS: u32 = 3;

/// A frame from the controller as the session sees it.
#[derive(Debug, Clone)]
pub(super) enum Inbound {
    Ack,
    Nak,
    Can,
    Data(DataFrame),
    /// A candidate the parser refused (bad checksum, bad length): the host NAKs it.
    Rejected(Rejection),
}

impl session::Frame for Inbound {
    fn is_reply(&self) -> bool {
        match self {
            Inbound::Ack | Inbound::Nak | Inbound::Can => true,
            Inbound::Data(d) => d.frame_type == FrameType::Response,
            Inbound::Rejected(_) => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Inbound::Ack => "ACK".into(),
            Inbound::Nak => "NAK".into(),
            Inbound::Can => "CAN".into(),
            Inbound::Data(d) => format!("{:?} {:#04x}", d.frame_type, d.function),
            Inbound::Rejected(r) => format!("rejected {r:?}"),
        }
    }
}

/// The codec's resyncing parser, yielding refused candidates too (so they can be NAKed).
pub(super) struct ZwaveParser {
    serial: SerialParser,
}

impl FrameParser for ZwaveParser {
    type Frame = Inbound;

    fn push(&mut self, bytes: &[u8]) {
        self.serial.push(bytes);
    }

    fn next_frame(&mut self) -> Option<Inbound> {
        Some(match self.serial.next_event()? {
            fieldgate_zwave::ParseEvent::Frame(ZFrame::Ack) => Inbound::Ack,
            fieldgate_zwave::ParseEvent::Frame(ZFrame::Nak) => Inbound::Nak,
            fieldgate_zwave::ParseEvent::Frame(ZFrame::Can) => Inbound::Can,
            fieldgate_zwave::ParseEvent::Frame(ZFrame::Data(d)) => Inbound::Data(d),
            fieldgate_zwave::ParseEvent::Rejected(r) => Inbound::Rejected(r),
        })
    }

    fn buffered(&self) -> usize {
        self.serial.buffered()
    }

    fn flush_stalled(&mut self) -> Vec<Inbound> {
        self.serial.flush_stalled();
        std::iter::from_fn(|| self.next_frame()).collect()
    }

    fn line_errors(&self) -> u64 {
        let s = self.serial.stats();
        s.bad_checksum + s.bad_length + s.oversize + s.stalled + s.noise
    }
}

/// The timeouts of one request (options, see `options.rs`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub ack: Duration,
    pub response: Duration,
    pub callback: Duration,
}

/// What completed a request.
#[derive(Debug, Clone, Default)]
pub(super) struct Answer {
    pub response: Option<Response>,
    pub callback: Option<Callback>,
    pub update: Option<Unsolicited>,
}

/// Why a request did not complete (the link itself still works).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Failure {
    #[error("the controller did not acknowledge the frame ({0} tries)")]
    NoAck(u32),
    #[error("the controller refused the frame (CAN/NAK, {0} tries)")]
    Refused(u32),
    #[error("the controller did not answer in time")]
    NoResponse,
    #[error("the controller's callback did not come in time")]
    NoCallback,
    #[error("the controller's answer could not be decoded")]
    Undecodable,
}

/// The host session with one controller over one open link.
pub(super) struct HostSession {
    reader: FrameReader<Link, ZwaveParser>,
    exchange: Exchange<Inbound>,
    counters: Arc<RadioCounters>,
    radio: String,
}

impl HostSession {
    pub(super) fn new(link: Link, radio: &str, counters: Arc<RadioCounters>) -> Self {
        let config = SessionConfig {
            radio: radio.to_string(),
            peer: "controller",
            stall: STALL,
        };
        let parser = ZwaveParser {
            serial: SerialParser::new(),
        };
        Self {
            reader: FrameReader::new(link, parser, config),
            exchange: Exchange::new(),
            counters,
            radio: radio.to_string(),
        }
    }

    /// Writes one control byte (ACK / NAK) or one frame: one write each.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        tracing::trace!(radio = %self.radio, bytes = bytes.len(), first = bytes.first().copied().unwrap_or(0), function = bytes.get(3).copied().unwrap_or(0), "write");
        self.reader.write(bytes).await
    }

    /// The next frame from the link before `deadline`, data frames ACKed and refused
    /// candidates NAKed as they come.
    async fn next_raw(&mut self, deadline: Instant) -> Result<Option<Inbound>, SessionError> {
        loop {
            let frame = self.reader.next_frame(deadline).await?;
            let lost = self.reader.take_line_errors();
            if lost > 0 {
                self.counters
                    .line_errors
                    .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
            }
            match frame {
                None => return Ok(None),
                Some(Inbound::Rejected(why)) => {
                    tracing::debug!(radio = %self.radio, ?why, "frame refused; NAK sent");
                    if matches!(why, Rejection::BadChecksum { .. }) {
                        self.write(&[0x15]).await?;
                    }
                }
                Some(f @ Inbound::Data(_)) => {
                    self.write(&[0x06]).await?;
                    return Ok(Some(f));
                }
                Some(f) => return Ok(Some(f)),
            }
        }
    }

    /// Waits `wait` before a refused frame is sent again, reading meanwhile: a CAN means
    /// the controller has a frame of its own on the way, and until that is acknowledged
    /// it sends it again and refuses ours each time. Requests read are queued for later.
    async fn back_off(&mut self, wait: Duration) -> Result<(), SessionError> {
        let until = Instant::now() + wait;
        while let Some(f) = self.next_raw(until).await? {
            match f {
                Inbound::Data(ref d) if d.frame_type == FrameType::Request => {
                    self.exchange.queue_unsolicited(f);
                }
                other => {
                    tracing::debug!(radio = %self.radio, frame = %session::Frame::describe(&other), "ignored while backing off");
                }
            }
        }
        Ok(())
    }

    /// Waits for what `expect` describes; other frames are queued.
    async fn wait(&mut self, expect: Expect<Inbound>) -> Result<Outcome<Inbound>, SessionError> {
        self.exchange.abandon();
        let started = self.exchange.start(expect, Instant::now());
        loop {
            if let Some(outcome) = self.exchange.take_outcome() {
                return Ok(outcome);
            }
            let (Ok(()), Some(deadline)) = (started, self.exchange.deadline()) else {
                return Ok(Outcome::TimedOut {
                    stage: Stage::Response,
                    response: None,
                });
            };
            match self.next_raw(deadline).await? {
                Some(frame) => {
                    self.exchange.on_frame(frame, Instant::now());
                }
                None => self.exchange.on_time(Instant::now()),
            }
        }
    }

    /// The next unsolicited data frame: a queued one, else the next before `deadline`.
    pub(super) async fn next_unsolicited(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<DataFrame>, SessionError> {
        loop {
            if let Some(f) = self.exchange.pop_unsolicited() {
                if let Inbound::Data(d) = f {
                    return Ok(Some(d));
                }
                continue;
            }
            match self.next_raw(deadline).await? {
                Some(Inbound::Data(d)) if d.frame_type == FrameType::Request => return Ok(Some(d)),
                // A late response, or a stray ACK/NAK/CAN: nobody waits for it.
                Some(other) => {
                    tracing::debug!(radio = %self.radio, frame = %session::Frame::describe(&other), "ignored: no request in flight");
                }
                None => return Ok(None),
            }
        }
    }

    /// A queued unsolicited data frame, without reading.
    pub(super) fn pop_unsolicited(&mut self) -> Option<DataFrame> {
        while let Some(f) = self.exchange.pop_unsolicited() {
            if let Inbound::Data(d) = f {
                return Some(d);
            }
        }
        None
    }

    /// Forgets queued frames (the controller restarted: their context is gone).
    pub(super) fn clear_unsolicited(&mut self) {
        self.exchange.clear_unsolicited();
    }

    /// Sends `request` and waits for everything it expects.
    pub(super) async fn execute(
        &mut self,
        request: &Request,
        t: Timeouts,
    ) -> Result<Result<Answer, Failure>, SessionError> {
        let bytes = match request.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(radio = %self.radio, error = %e, "a request could not be encoded");
                return Ok(Err(Failure::Undecodable));
            }
        };
        // 1. The frame, until the controller ACKs it.
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.write(&bytes).await?;
            let outcome = self.wait(Expect::reply(t.ack, is_control)).await?;
            match outcome.into_response() {
                Some(Inbound::Ack) => break,
                Some(Inbound::Can) | Some(Inbound::Nak) => {
                    if attempt >= FRAME_ATTEMPTS {
                        return Ok(Err(Failure::Refused(attempt)));
                    }
                    // INS12350: 100 ms + n·1000 ms before sending again.
                    let wait = Duration::from_millis(100 + 1000 * u64::from(attempt - 1));
                    tracing::debug!(radio = %self.radio, attempt, "frame refused (CAN/NAK); sending again");
                    self.back_off(wait).await?;
                }
                _ => {
                    RadioCounters::count(&self.counters.timeouts);
                    if attempt >= FRAME_ATTEMPTS {
                        return Ok(Err(Failure::NoAck(attempt)));
                    }
                    tracing::debug!(radio = %self.radio, attempt, "no ACK; sending again");
                }
            }
        }
        // 2. The response, the callback, the update that finishes it.
        let e = request.expects();
        if !e.response && e.callback.is_none() && e.update.is_none() {
            return Ok(Ok(Answer::default()));
        }
        let function = request.function();
        let finisher = request.clone();
        let later = move |f: &Inbound| -> bool {
            let Inbound::Data(d) = f else { return false };
            if let Some(id) = e.callback {
                return classify_data(d)
                    == FrameClass::Callback {
                        function,
                        callback_id: id,
                    };
            }
            match Decoded::decode(d) {
                Ok(Decoded::Unsolicited(u)) => finisher.is_finished_by(&u),
                _ => false,
            }
        };
        let has_later = e.callback.is_some() || e.update.is_some();
        let expect = if e.response {
            let is_response = move |f: &Inbound| matches!(f, Inbound::Data(d) if d.frame_type == FrameType::Response && d.function == function);
            let x = Expect::reply(t.response, is_response);
            if has_later {
                x.then_callback(t.callback, later)
            } else {
                x
            }
        } else {
            Expect::callback(t.callback, later)
        };
        let (response, callback) = match self.wait(expect).await? {
            Outcome::Answered { response, callback } => (response, callback),
            Outcome::TimedOut { stage, response } => {
                RadioCounters::count(&self.counters.timeouts);
                // A SendData whose response says "not sent" has no callback coming.
                if let Some(Inbound::Data(d)) = &response {
                    if let Ok(Response::SendData { was_sent: false }) =
                        Response::decode(d.function, &d.payload)
                    {
                        return Ok(Ok(Answer {
                            response: Some(Response::SendData { was_sent: false }),
                            ..Answer::default()
                        }));
                    }
                }
                return Ok(Err(match stage {
                    Stage::Response => Failure::NoResponse,
                    Stage::Callback => Failure::NoCallback,
                }));
            }
        };
        let mut answer = Answer::default();
        if let Some(Inbound::Data(d)) = response {
            match Response::decode(d.function, &d.payload) {
                Ok(r) => answer.response = Some(r),
                Err(_) => return Ok(Err(self.undecodable())),
            }
        }
        if let Some(Inbound::Data(d)) = callback {
            match Decoded::decode(&d) {
                Ok(Decoded::Callback(c)) => answer.callback = Some(c),
                Ok(Decoded::Unsolicited(u)) => answer.update = Some(u),
                _ => return Ok(Err(self.undecodable())),
            }
        }
        Ok(Ok(answer))
    }

    fn undecodable(&self) -> Failure {
        RadioCounters::count(&self.counters.undecodable);
        Failure::Undecodable
    }

    /// Writes raw bytes (the NAK that starts a session).
    pub(super) async fn send_unacknowledged_bytes(
        &mut self,
        bytes: &[u8],
    ) -> Result<(), SessionError> {
        self.write(bytes).await
    }

    /// Waits up to `timeout` for an unsolicited data frame `want` accepts, looking in the
    /// queue first; the rest stays queued.
    pub(super) async fn wait_unsolicited(
        &mut self,
        timeout: Duration,
        want: impl Fn(&DataFrame) -> bool + Send + Sync + 'static,
    ) -> Result<Option<DataFrame>, SessionError> {
        let expect = Expect::callback(
            timeout,
            move |f: &Inbound| matches!(f, Inbound::Data(d) if d.frame_type == FrameType::Request && want(d)),
        );
        Ok(match self.wait(expect).await?.into_callback() {
            Some(Inbound::Data(d)) => Some(d),
            _ => None,
        })
    }

    /// Writes a request that expects nothing but the ACK, without waiting for it (the
    /// abort of a SendData in flight).
    pub(super) async fn send_unacknowledged(
        &mut self,
        request: &Request,
    ) -> Result<(), SessionError> {
        if let Ok(bytes) = request.to_bytes() {
            self.write(&bytes).await?;
        }
        Ok(())
    }
}

fn is_control(f: &Inbound) -> bool {
    matches!(f, Inbound::Ack | Inbound::Nak | Inbound::Can)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn timeouts() -> Timeouts {
        Timeouts {
            ack: Duration::from_millis(1600),
            response: Duration::from_secs(10),
            callback: Duration::from_secs(30),
        }
    }

    fn session() -> (HostSession, tokio::io::DuplexStream, Arc<RadioCounters>) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let counters = Arc::new(RadioCounters::default());
        (
            HostSession::new(Box::new(ours), "zw", counters.clone()),
            theirs,
            counters,
        )
    }

    async fn read_frame(peer: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut head = [0u8; 2];
        peer.read_exact(&mut head).await.unwrap();
        let mut rest = vec![0u8; usize::from(head[1])];
        peer.read_exact(&mut rest).await.unwrap();
        [head.to_vec(), rest].concat()
    }

    #[tokio::test(start_paused = true)]
    async fn an_unacknowledged_frame_is_sent_three_times_then_given_up() {
        let (mut s, mut peer, counters) = session();
        let t0 = Instant::now();
        let run = tokio::spawn(async move {
            let r = s
                .execute(&Request::GetControllerVersion, timeouts())
                .await
                .unwrap();
            (r, s)
        });
        let mut seen = Vec::new();
        for _ in 0..3 {
            assert_eq!(read_frame(&mut peer).await, [0x01, 0x03, 0x00, 0x15, 0xE9]);
            seen.push(Instant::now() - t0);
        }
        let (r, _s) = run.await.unwrap();
        assert_eq!(r.unwrap_err(), Failure::NoAck(3));
        assert_eq!(seen[1], Duration::from_millis(1600));
        assert_eq!(seen[2], Duration::from_millis(3200));
        assert_eq!(counters.snapshot().timeouts, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_data_completes_with_ack_response_and_its_own_callback() {
        let (mut s, mut peer, _) = session();
        let req = Request::send_data(2, vec![0x25, 0x01, 0xFF], 7);
        let run = tokio::spawn(async move {
            let r = s.execute(&req, timeouts()).await.unwrap();
            (r, s)
        });
        read_frame(&mut peer).await;
        // CAN first: sent again 100 ms later.
        peer.write_all(&[0x18]).await.unwrap();
        read_frame(&mut peer).await;
        peer.write_all(&[0x06]).await.unwrap();
        // Response (wasSent), a callback for another id, an unsolicited report, ours.
        let frames: [&[u8]; 3] = [
            &[0x01, 0x04, 0x01, 0x13, 0x01, 0xE8],
            &DataFrame::request(0x13, vec![0x06, 0x00])
                .to_bytes()
                .unwrap(),
            &DataFrame::request(0x13, vec![0x07, 0x00])
                .to_bytes()
                .unwrap(),
        ];
        for f in frames {
            peer.write_all(f).await.unwrap();
            let mut ack = [0u8; 1];
            peer.read_exact(&mut ack).await.unwrap();
            assert_eq!(ack, [0x06], "every data frame is ACKed");
        }
        let (r, mut s) = run.await.unwrap();
        let answer = r.unwrap();
        assert_eq!(answer.response, Some(Response::SendData { was_sent: true }));
        assert!(matches!(
            answer.callback,
            Some(Callback::SendData { callback_id: 7, .. })
        ));
        // The other callback waits in the queue.
        assert_eq!(s.pop_unsolicited().unwrap().payload, [0x06, 0x00]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_checksum_is_naked_and_counted() {
        let (mut s, mut peer, counters) = session();
        peer.write_all(&[0x01, 0x03, 0x00, 0x0A, 0x00])
            .await
            .unwrap();
        let got = s
            .next_unsolicited(Instant::now() + Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(got, None);
        let mut nak = [0u8; 1];
        peer.read_exact(&mut nak).await.unwrap();
        assert_eq!(nak, [0x15]);
        assert_eq!(counters.snapshot().line_errors, 1);
    }
}
