//! ZNP over the shared serial session ([`crate::radio::session`]): the coordinator's
//! frames as the session sees them, one SREQ at a time with its timeout and its SRSP matched
//! by subsystem and command id, AREQs sent without an answer, and waits for a given
//! indication. Indications that arrive meanwhile are queued and handled in order afterwards.
//!
//! Owns what a ZNP frame is to the session and what an SRSP's status means; must not
//! interpret the answers beyond that (that is the caller's).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use fieldgate_zigbee::mt::{MtFrame, MtParserStats, MtStreamParser, MtType, Subsystem};
use fieldgate_zigbee::ZnpCommand;

use super::Coordinator;
use crate::radio::link::Link;
use crate::radio::session::{self, Expect, FrameParser, Session, SessionConfig};
use crate::radio::RadioCounters;

/// How long a partial frame may sit with no new byte before it is declared stale.
const STALL: Duration = Duration::from_millis(60);

/// The session with the coordinator.
pub(super) type ZnpSession = Session<Link, ZnpParser>;

/// Opens the session on a freshly opened link.
pub(super) fn session(link: Link, radio: &str, counters: Arc<RadioCounters>) -> ZnpSession {
    let parser = ZnpParser {
        mt: MtStreamParser::from_ncp(),
        radio: radio.to_string(),
        counters,
    };
    let config = SessionConfig {
        radio: radio.to_string(),
        peer: "coordinator",
        stall: STALL,
    };
    Session::new(link, parser, config)
}

/// A frame from the coordinator: an SRSP, kept as it came until the request it answers
/// decodes it, or anything else, decoded on arrival.
#[derive(Debug)]
pub(super) enum Inbound {
    Srsp(MtFrame),
    Indication(ZnpCommand),
}

impl session::Frame for Inbound {
    fn is_reply(&self) -> bool {
        matches!(self, Inbound::Srsp(_))
    }

    fn describe(&self) -> String {
        match self {
            Inbound::Srsp(f) => format!("{:?} SRSP {:#04x}", f.subsystem, f.cmd_id),
            Inbound::Indication(c) => c.name().to_string(),
        }
    }
}

/// MT framing (resyncing on garbage) with ZNP decoding of everything but SRSPs. A frame that
/// arrives intact but does not decode is counted in `undecodable` and dropped here.
pub(super) struct ZnpParser {
    mt: MtStreamParser,
    radio: String,
    counters: Arc<RadioCounters>,
}

impl ZnpParser {
    /// The MT parser's counters (bytes dropped, bad FCS, oversize...).
    pub(super) fn mt_stats(&self) -> MtParserStats {
        self.mt.stats()
    }

    fn inbound(&self, frame: MtFrame) -> Option<Inbound> {
        if frame.cmd_type == MtType::Srsp {
            return Some(Inbound::Srsp(frame));
        }
        decode(&frame, &self.radio, &self.counters).map(Inbound::Indication)
    }
}

impl FrameParser for ZnpParser {
    type Frame = Inbound;

    fn push(&mut self, bytes: &[u8]) {
        self.mt.push(bytes);
    }

    fn next_frame(&mut self) -> Option<Inbound> {
        loop {
            let frame = self.mt.next_frame()?;
            if let Some(inbound) = self.inbound(frame) {
                return Some(inbound);
            }
        }
    }

    fn buffered(&self) -> usize {
        self.mt.buffered()
    }

    fn flush_stalled(&mut self) -> Vec<Inbound> {
        let frames = self.mt.flush_stalled();
        frames.into_iter().filter_map(|f| self.inbound(f)).collect()
    }

    fn line_errors(&self) -> u64 {
        let s = self.mt.stats();
        s.bad_fcs + s.oversize + s.implausible + s.stalled + s.noise
    }
}

/// Decodes a ZNP frame; one that does not decode is counted and logged (ids only).
fn decode(frame: &MtFrame, radio: &str, counters: &RadioCounters) -> Option<ZnpCommand> {
    match ZnpCommand::decode(frame) {
        Ok(c) => Some(c),
        Err(e) => {
            RadioCounters::count(&counters.undecodable);
            tracing::warn!(radio = %radio, subsystem = ?frame.subsystem, cmd_id = frame.cmd_id, error = %e, "undecodable ZNP frame dropped");
            None
        }
    }
}

/// Why a request did not succeed (the link itself is fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fail {
    Timeout,
    /// RPC error SRSP: the NCP did not understand the request.
    Rpc(u8),
    /// A status SRSP with a non-zero status.
    Status(u8),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Timeout => write!(f, "no SRSP in time"),
            Fail::Rpc(code) => {
                // Z-Stack's MT_RPC_ERR_* codes (zigpy-znp `commands/rpc_error.py`).
                let what = match code {
                    1 => "unknown subsystem",
                    2 => "unknown command",
                    3 => "bad parameter",
                    4 => "bad length",
                    _ => "unreadable RPC error",
                };
                write!(f, "RPC error {code} ({what})")
            }
            Fail::Status(s) => write!(f, "status {s:#04x}"),
        }
    }
}

impl Coordinator<'_> {
    /// Sends an SREQ and waits for its SRSP; everything else that arrives is queued.
    /// `Err` only when the link is broken.
    pub(super) async fn request(&mut self, cmd: &ZnpCommand) -> Result<Result<ZnpCommand, Fail>> {
        self.request_with(cmd, self.opts.sreq_timeout).await
    }

    pub(super) async fn request_with(
        &mut self,
        cmd: &ZnpCommand,
        timeout: Duration,
    ) -> Result<Result<ZnpCommand, Fail>> {
        let (subsystem, cmd_id) = cmd
            .expected_srsp()
            .ok_or_else(|| anyhow!("{} is not an SREQ", cmd.name()))?;
        let bytes = cmd
            .to_bytes()
            .with_context(|| format!("encoding {}", cmd.name()))?;
        let ours = Expect::reply(timeout, move |f: &Inbound| {
            matches!(f, Inbound::Srsp(frame)
                if (frame.subsystem == subsystem && frame.cmd_id == cmd_id)
                    || frame.subsystem == Subsystem::RpcError)
        });
        let outcome = self.link.request(&bytes, ours).await;
        self.count_line_errors();
        let Some(Inbound::Srsp(frame)) = outcome?.into_response() else {
            RadioCounters::count(&self.stats.timeouts);
            tracing::warn!(radio = %self.io.radio, request = cmd.name(), timeout = ?timeout, "SREQ timed out");
            // A lost SRSP costs one request; a coordinator that stopped answering must
            // not stay `up` until the next periodic ping: the watchdog checks now.
            self.next_watchdog = self.next_watchdog.min(tokio::time::Instant::now());
            return Ok(Err(Fail::Timeout));
        };
        Ok(match decode(&frame, &self.io.radio, &self.stats) {
            Some(ZnpCommand::RpcError { error_code, .. }) => Err(Fail::Rpc(error_code)),
            Some(ZnpCommand::StatusRsp { status: 0, .. }) => Ok(ZnpCommand::StatusRsp {
                subsystem,
                cmd_id,
                status: 0,
            }),
            Some(ZnpCommand::StatusRsp { status, .. }) => Err(Fail::Status(status)),
            Some(other) => Ok(other),
            None => Err(Fail::Rpc(0xFF)),
        })
    }

    /// A request that must succeed during start-up.
    pub(super) async fn must(&mut self, cmd: &ZnpCommand) -> Result<ZnpCommand> {
        self.request(cmd)
            .await?
            .map_err(|f| anyhow!("coordinator start-up: {} failed: {f}", cmd.name()))
    }

    /// Writes an AREQ (no SRSP).
    pub(super) async fn send_areq(&mut self, cmd: &ZnpCommand) -> Result<()> {
        let bytes = cmd.to_bytes()?;
        Ok(self.link.send(&bytes).await?)
    }

    /// Waits for an indication matching `want` (looking at the queue first).
    pub(super) async fn wait_for(
        &mut self,
        timeout: Duration,
        want: impl Fn(&ZnpCommand) -> bool + Send + Sync + 'static,
    ) -> Result<Option<ZnpCommand>> {
        let wanted = move |f: &Inbound| matches!(f, Inbound::Indication(c) if want(c));
        let found = self.link.wait_for(timeout, wanted).await;
        self.count_line_errors();
        Ok(match found? {
            Some(Inbound::Indication(c)) => Some(c),
            Some(Inbound::Srsp(_)) | None => None,
        })
    }

    /// Adds the frames the parser lost since the last read (bad FCS, oversize, forged,
    /// stalled) to the radio's `line_errors`, as they happen: during start-up too, when
    /// a noisy or wrong device on the port keeps the radio from coming up.
    pub(super) fn count_line_errors(&mut self) {
        let lost = self.link.take_line_errors();
        if lost > 0 {
            self.stats
                .line_errors
                .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The oldest indication queued while a request waited.
    pub(super) fn next_queued_indication(&mut self) -> Option<ZnpCommand> {
        // Only indications are ever queued (SRSPs answer a request or are dropped).
        while let Some(inbound) = self.link.pop_unsolicited() {
            if let Inbound::Indication(c) = inbound {
                return Some(c);
            }
        }
        None
    }
}
