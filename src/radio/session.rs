//! What every serial driver shares: one request in flight with its deadline; its response,
//! and optionally a later callback, matched by predicates the driver gives; unsolicited
//! frames queued in arrival order while a request waits; a resyncing frame reader generic
//! over the protocol's parser; retries with backoff.
//!
//! Split the way rumqttc splits its client: [`Exchange`] (`session/exchange.rs`) and
//! [`Retries`] (`session/retry.rs`) are state with no IO, driven by the frames and the
//! instants handed to them (their tests need no link); [`FrameReader`] and [`Session`], in
//! this file, are the thin async shell that reads and writes a link.
//!
//! A driver brings three things: a [`FrameParser`] (bytes in, frames out, line errors
//! counted), the [`Frame`] trait on what it yields (which frames are replies), and per
//! request an [`Expect`] (which reply answers it, which callback completes it, how long
//! each may take). ZNP's SREQ/SRSP, Z-Wave's request/response/callback and an AT modem's
//! command/`OK`/`+EVT` fit the same shape.
//!
//! Knows no protocol. Must not decode payloads, log them (they may hold keys) or decide
//! what a timeout means: that is the driver's.
mod exchange;
mod retry;
#[cfg(test)]
mod test_frames;

pub use exchange::{Arrival, Busy, Exchange, ExchangeCounts, Expect, Outcome, Stage};
pub use retry::{Retries, RetryPolicy};

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// What a driver provides

/// A protocol's incremental parser: bytes as they arrive in, whole frames out, resyncing
/// by itself after garbage.
pub trait FrameParser {
    type Frame;
    /// Takes bytes read from the link.
    fn push(&mut self, bytes: &[u8]);
    /// The next complete frame, if the bytes so far hold one.
    fn next_frame(&mut self) -> Option<Self::Frame>;
    /// Bytes held that do not make a frame yet.
    fn buffered(&self) -> usize;
    /// The line went quiet with a partial frame held: give it up, and return what frames the
    /// rest of the held bytes still make.
    fn flush_stalled(&mut self) -> Vec<Self::Frame>;
    /// Frames lost to line errors since the parser was made (bad checksum, oversize,
    /// stalled...).
    fn line_errors(&self) -> u64;
}

/// What the session needs to know about a frame.
pub trait Frame {
    /// A reply to a request (a ZNP SRSP, a Z-Wave response, an AT final result code). A
    /// reply only ever answers the request in flight: one that answers none is dropped.
    /// Everything else is unsolicited (or a callback) and is queued when nobody waits for it.
    fn is_reply(&self) -> bool;
    /// Names the frame in a debug log: ids only, never the payload.
    fn describe(&self) -> String;
}

// ---------------------------------------------------------------------------------------
// The IO shell

/// Why a link cannot be used any more (the driver returns it and the supervisor re-opens
/// the link).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the {peer} link closed")]
    Closed { peer: &'static str },
    #[error("reading from the {peer}")]
    Read {
        peer: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("writing to the {peer}")]
    Write {
        peer: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Names and timing of one serial session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The radio's name, for logs.
    pub radio: String,
    /// What is at the other end, for errors: "coordinator", "controller", "modem".
    pub peer: &'static str,
    /// How long a partial frame may sit with no new byte before it is given up.
    pub stall: Duration,
}

/// A link read through a [`FrameParser`]: frames out, a partial frame given up when the
/// line goes quiet for [`SessionConfig::stall`], line errors counted.
pub struct FrameReader<L, P: FrameParser> {
    link: L,
    parser: P,
    ready: VecDeque<P::Frame>,
    buf: Vec<u8>,
    config: SessionConfig,
    line_errors_taken: u64,
}

impl<L, P> FrameReader<L, P>
where
    L: AsyncRead + AsyncWrite + Unpin,
    P: FrameParser,
{
    pub fn new(link: L, parser: P, config: SessionConfig) -> Self {
        Self {
            link,
            parser,
            ready: VecDeque::new(),
            buf: vec![0; 1024],
            config,
            line_errors_taken: 0,
        }
    }

    /// The next frame, or `None` at `deadline`. Cancel-safe: bytes read are parsed at once
    /// and frames not returned yet are kept.
    pub async fn next_frame(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<P::Frame>, SessionError> {
        let peer = self.config.peer;
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            if let Some(f) = self.parser.next_frame() {
                return Ok(Some(f));
            }
            let stall = (self.parser.buffered() > 0).then(|| Instant::now() + self.config.stall);
            let until = stall.map_or(deadline, |s| s.min(deadline));
            match tokio::time::timeout_at(until, self.link.read(&mut self.buf)).await {
                Ok(Ok(0)) => return Err(SessionError::Closed { peer }),
                Ok(Ok(n)) => self.parser.push(self.buf.get(..n).unwrap_or_default()),
                Ok(Err(source)) => return Err(SessionError::Read { peer, source }),
                Err(_) if Instant::now() >= deadline => return Ok(None),
                Err(_) => {
                    let held = self.parser.buffered();
                    let frames = self.parser.flush_stalled();
                    tracing::debug!(
                        radio = %self.config.radio,
                        held_bytes = held,
                        recovered = frames.len(),
                        "stale partial frame dropped after the line went quiet"
                    );
                    self.ready.extend(frames);
                }
            }
        }
    }

    /// Writes `bytes` and flushes them.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let peer = self.config.peer;
        let write = async {
            self.link.write_all(bytes).await?;
            self.link.flush().await
        };
        write
            .await
            .map_err(|source| SessionError::Write { peer, source })
    }

    pub fn parser(&self) -> &P {
        &self.parser
    }

    /// Frames lost to line errors since the last call.
    pub fn take_line_errors(&mut self) -> u64 {
        let total = self.parser.line_errors();
        let new = total.saturating_sub(self.line_errors_taken);
        self.line_errors_taken = total;
        new
    }
}

/// A serial session: a [`FrameReader`] and an [`Exchange`] together. One request at a time
/// (`&mut self`); what arrives meanwhile is queued, and read back with
/// [`next_unsolicited`](Session::next_unsolicited) once the driver is idle.
pub struct Session<L, P: FrameParser> {
    reader: FrameReader<L, P>,
    exchange: Exchange<P::Frame>,
}

impl<L, P> Session<L, P>
where
    L: AsyncRead + AsyncWrite + Unpin,
    P: FrameParser,
    P::Frame: Frame,
{
    pub fn new(link: L, parser: P, config: SessionConfig) -> Self {
        Self {
            reader: FrameReader::new(link, parser, config),
            exchange: Exchange::new(),
        }
    }

    /// Writes `bytes` with no answer to wait for.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.reader.write(bytes).await
    }

    /// Writes `bytes` and waits for what `expect` describes, queueing what else arrives.
    /// `Err` only when the link is broken; a timeout is an [`Outcome`]. A request whose
    /// future was dropped half-way is given up by the next one.
    pub async fn request(
        &mut self,
        bytes: &[u8],
        expect: Expect<P::Frame>,
    ) -> Result<Outcome<P::Frame>, SessionError> {
        self.reader.write(bytes).await?;
        self.wait(expect).await
    }

    /// [`request`](Session::request), sent again (with the policy's backoff in between)
    /// while nothing at all answers it, up to `policy.attempts` tries. A reply whose
    /// callback does not come is not retried: the peer did take the request.
    pub async fn request_with_retries(
        &mut self,
        bytes: &[u8],
        expect: impl Fn() -> Expect<P::Frame>,
        policy: RetryPolicy,
    ) -> Result<Outcome<P::Frame>, SessionError> {
        let mut retries = Retries::new(policy);
        loop {
            let outcome = self.request(bytes, expect()).await?;
            let unanswered = matches!(
                outcome,
                Outcome::TimedOut {
                    stage: Stage::Response,
                    ..
                }
            );
            if !unanswered {
                return Ok(outcome);
            }
            let Some(again) = retries.failed(Instant::now()) else {
                return Ok(outcome);
            };
            tracing::debug!(radio = %self.reader.config.radio, tries = retries.failures(), "no answer; sending the request again");
            tokio::time::sleep_until(again).await;
        }
    }

    /// Waits, without sending anything, for an unsolicited frame that `want` accepts,
    /// looking in the queue first. `None` after `timeout`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        want: impl Fn(&P::Frame) -> bool + Send + Sync + 'static,
    ) -> Result<Option<P::Frame>, SessionError> {
        Ok(self
            .wait(Expect::callback(timeout, want))
            .await?
            .into_callback())
    }

    /// The next unsolicited frame: a queued one, else the next to arrive before `deadline`
    /// (`None` then). Replies arriving now answer nothing and are dropped. Cancel-safe.
    pub async fn next_unsolicited(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<P::Frame>, SessionError> {
        loop {
            if let Some(f) = self.exchange.pop_unsolicited() {
                return Ok(Some(f));
            }
            match self.reader.next_frame(deadline).await? {
                Some(f) => self.arrive(f),
                None => return Ok(None),
            }
        }
    }

    /// The oldest queued unsolicited frame, without reading.
    pub fn pop_unsolicited(&mut self) -> Option<P::Frame> {
        self.exchange.pop_unsolicited()
    }

    /// Queues a frame the driver held back, behind those already queued.
    pub fn queue_unsolicited(&mut self, frame: P::Frame) {
        self.exchange.queue_unsolicited(frame);
    }

    /// Forgets the queued unsolicited frames.
    pub fn clear_unsolicited(&mut self) {
        self.exchange.clear_unsolicited();
    }

    pub fn reader(&self) -> &FrameReader<L, P> {
        &self.reader
    }

    /// Frames lost to line errors since the last call.
    pub fn take_line_errors(&mut self) -> u64 {
        self.reader.take_line_errors()
    }

    pub fn counts(&self) -> ExchangeCounts {
        self.exchange.counts()
    }

    /// Waits from now for what `expect` describes, giving up whatever an earlier request
    /// (dropped half-way) left in flight.
    async fn wait(&mut self, expect: Expect<P::Frame>) -> Result<Outcome<P::Frame>, SessionError> {
        self.exchange.abandon();
        let started = self.exchange.start(expect, Instant::now());
        loop {
            if let Some(outcome) = self.exchange.take_outcome() {
                return Ok(outcome);
            }
            // Once started, the exchange is either done or has a deadline.
            let (Ok(()), Some(deadline)) = (started, self.exchange.deadline()) else {
                return Ok(Outcome::TimedOut {
                    stage: Stage::Response,
                    response: None,
                });
            };
            match self.reader.next_frame(deadline).await? {
                Some(frame) => self.arrive(frame),
                None => self.exchange.on_time(Instant::now()),
            }
        }
    }

    fn arrive(&mut self, frame: P::Frame) {
        let what = tracing::enabled!(tracing::Level::DEBUG).then(|| frame.describe());
        match self.exchange.on_frame(frame, Instant::now()) {
            Arrival::Stray => {
                tracing::debug!(radio = %self.reader.config.radio, frame = ?what, "a reply that does not answer the request in flight was ignored");
            }
            Arrival::Late => {
                tracing::debug!(radio = %self.reader.config.radio, frame = ?what, "a reply with no request in flight was ignored");
            }
            Arrival::Response | Arrival::Callback | Arrival::Queued => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_frames::{line, reply_to, Line, Lines, SECOND};
    use super::*;

    // ---- the IO shell, over an in-memory pipe ----

    fn config() -> SessionConfig {
        SessionConfig {
            radio: "test".into(),
            peer: "peer",
            stall: Duration::from_millis(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_reader_joins_pieces_drops_a_stalled_frame_and_counts_it() {
        let (ours, mut theirs) = tokio::io::duplex(256);
        let mut reader = FrameReader::new(ours, Lines::default(), config());
        let later = Instant::now() + 10 * SECOND;
        theirs.write_all(b"hel").await.unwrap();
        theirs
            .write_all(b"lo\nthis line is far too long\npar")
            .await
            .unwrap();
        assert_eq!(reader.next_frame(later).await.unwrap(), Some(line("hello")));
        // The long line is lost; "par" never completes, and the quiet line gives it up.
        let next = tokio::spawn(async move {
            let f = reader.next_frame(later).await;
            (reader, f)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        theirs.write_all(b"next\n").await.unwrap();
        let (mut reader, f) = next.await.unwrap();
        assert_eq!(f.unwrap(), Some(line("next")));
        assert_eq!(reader.take_line_errors(), 2);
        assert_eq!(reader.take_line_errors(), 0);
        // Nothing more: `None` at the deadline; then the peer hangs up.
        let soon = Instant::now() + SECOND;
        assert_eq!(reader.next_frame(soon).await.unwrap(), None);
        assert!(Instant::now() >= soon);
        drop(theirs);
        let closed = reader.next_frame(later).await.unwrap_err();
        assert_eq!(closed.to_string(), "the peer link closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_matches_replies_queues_the_rest_and_times_out() {
        let (ours, theirs) = tokio::io::duplex(256);
        let mut session = Session::new(ours, Lines::default(), config());
        let (peer_rx, mut peer_tx) = tokio::io::split(theirs);
        let peer = tokio::spawn(async move {
            let mut peer_rx = tokio::io::BufReader::new(peer_rx);
            let mut req = String::new();
            tokio::io::AsyncBufReadExt::read_line(&mut peer_rx, &mut req)
                .await
                .unwrap();
            assert_eq!(req, "ping\n");
            peer_tx
                .write_all(b"joined\nRlate\nRping\nleft\n")
                .await
                .unwrap();
            (peer_rx, peer_tx)
        });
        let outcome = session.request(b"ping\n", reply_to("ping")).await.unwrap();
        assert_eq!(outcome.into_response(), Some(line("Rping")));
        let (_rx, _tx) = peer.await.unwrap();
        let soon = Instant::now() + SECOND;
        assert_eq!(
            session.next_unsolicited(soon).await.unwrap(),
            Some(line("joined"))
        );
        assert_eq!(
            session.next_unsolicited(soon).await.unwrap(),
            Some(line("left"))
        );
        assert_eq!(session.next_unsolicited(soon).await.unwrap(), None);
        assert_eq!(session.counts().stray_replies, 1);
        // Nobody answers: a timeout, after the request's own time.
        let t0 = Instant::now();
        let outcome = session.request(b"ping\n", reply_to("ping")).await.unwrap();
        assert!(matches!(
            outcome,
            Outcome::TimedOut {
                stage: Stage::Response,
                ..
            }
        ));
        assert!(Instant::now() >= t0 + SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_request_is_sent_again_after_a_backoff() {
        let (ours, theirs) = tokio::io::duplex(256);
        let mut session = Session::new(ours, Lines::default(), config());
        let peer = tokio::spawn(async move {
            let (rx, mut tx) = tokio::io::split(theirs);
            let mut rx = tokio::io::BufReader::new(rx);
            let mut seen = Vec::new();
            for _ in 0..3 {
                let mut req = String::new();
                tokio::io::AsyncBufReadExt::read_line(&mut rx, &mut req)
                    .await
                    .unwrap();
                seen.push(Instant::now());
            }
            tx.write_all(b"Rping\n").await.unwrap();
            (seen, rx, tx)
        });
        let policy = RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
        };
        let outcome = session
            .request_with_retries(b"ping\n", || reply_to("ping"), policy)
            .await
            .unwrap();
        assert_eq!(outcome.into_response(), Some(line("Rping")));
        let (seen, _rx, _tx) = peer.await.unwrap();
        // Each try waits its second for an answer, then 2 s, then 4 s.
        assert!(seen[1] - seen[0] >= Duration::from_secs(3), "{seen:?}");
        assert!(seen[2] - seen[1] >= Duration::from_secs(5), "{seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_an_indication_looks_in_the_queue_first() {
        let (ours, mut theirs) = tokio::io::duplex(256);
        let mut session = Session::new(ours, Lines::default(), config());
        theirs.write_all(b"state 1\nreset\n").await.unwrap();
        let got = session
            .wait_for(SECOND, |f: &Line| f.0 == "reset")
            .await
            .unwrap();
        assert_eq!(got, Some(line("reset")));
        // "state 1" came first and was queued; it is found there, without reading.
        drop(theirs);
        let got = session
            .wait_for(SECOND, |f: &Line| f.0 == "state 1")
            .await
            .unwrap();
        assert_eq!(got, Some(line("state 1")));
        // With the queue empty, the next wait reads, and the closed link is an error.
        let closed = session.wait_for(SECOND, |f: &Line| f.0 == "never").await;
        assert!(matches!(closed, Err(SessionError::Closed { .. })));
    }

    #[tokio::test]
    async fn send_writes_the_bytes_as_they_are() {
        let (ours, mut theirs) = tokio::io::duplex(256);
        let mut session = Session::new(ours, Lines::default(), config());
        session.send(b"bye\n").await.unwrap();
        let mut buf = [0u8; 4];
        theirs.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"bye\n");
    }
}
