//! ZNP frames over the link: one SREQ at a time with its timeout, its SRSP matched by
//! subsystem and command id, AREQs sent without an answer, and waits for a given indication.
//! Indications that arrive meanwhile are queued and handled in order afterwards.
//!
//! Owns the link and the frame parser; must not interpret what an answer means beyond the
//! status of the SRSP (that is the caller's).

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fieldgate_zigbee::mt::{MtFrame, MtParserStats, MtStreamParser, MtType, Subsystem};
use fieldgate_zigbee::ZnpCommand;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::Coordinator;
use crate::radio::link::Link;
use crate::radio::RadioCounters;

/// How long a partial frame may sit with no new byte before it is declared stale.
const STALL: Duration = Duration::from_millis(60);

/// The link plus the frame parser; split from the `Coordinator` so a read can race the command
/// channel in one `select!`.
pub(super) struct FrameReader {
    pub(super) link: Link,
    pub(super) parser: MtStreamParser,
    /// Parser counters as last logged.
    pub(super) reported: MtParserStats,
    pub(super) ready: VecDeque<MtFrame>,
    pub(super) buf: Vec<u8>,
}

impl FrameReader {
    /// The next frame, or `None` at `deadline`. Cancel-safe: bytes read are parsed at once.
    pub(super) async fn next_frame(&mut self, deadline: Instant) -> Result<Option<MtFrame>> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            if let Some(f) = self.parser.next_frame() {
                return Ok(Some(f));
            }
            let stall = (self.parser.buffered() > 0).then(|| Instant::now() + STALL);
            let until = stall.map_or(deadline, |s| s.min(deadline));
            match tokio::time::timeout_at(until, self.link.read(&mut self.buf)).await {
                Ok(Ok(0)) => bail!("the coordinator link closed"),
                Ok(Ok(n)) => self.parser.push(self.buf.get(..n).unwrap_or_default()),
                Ok(Err(e)) => return Err(e).context("reading from the coordinator"),
                Err(_) if Instant::now() >= deadline => return Ok(None),
                Err(_) => {
                    let before = self.parser.stats();
                    let frames = self.parser.flush_stalled();
                    tracing::debug!(
                        dropped = self.parser.stats().dropped_bytes - before.dropped_bytes,
                        recovered = frames.len(),
                        "stale partial frame dropped after the line went quiet"
                    );
                    self.ready.extend(frames);
                }
            }
        }
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.link
            .write_all(bytes)
            .await
            .context("writing to the coordinator")?;
        self.link
            .flush()
            .await
            .context("writing to the coordinator")
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
            Fail::Rpc(code) => write!(f, "RPC error {code}"),
            Fail::Status(s) => write!(f, "status {s:#04x}"),
        }
    }
}

impl Coordinator<'_> {
    pub(super) fn decode(&mut self, frame: &MtFrame) -> Option<ZnpCommand> {
        match ZnpCommand::decode(frame) {
            Ok(c) => Some(c),
            Err(e) => {
                RadioCounters::count(&self.stats.undecodable);
                tracing::warn!(radio = %self.io.radio, subsystem = ?frame.subsystem, cmd_id = frame.cmd_id, error = %e, "undecodable ZNP frame dropped");
                None
            }
        }
    }

    /// A frame that arrived while no SREQ was outstanding.
    pub(super) fn on_idle_frame(&mut self, frame: MtFrame) {
        if frame.cmd_type == MtType::Srsp {
            tracing::debug!(radio = %self.io.radio, subsystem = ?frame.subsystem, cmd_id = frame.cmd_id, "late SRSP ignored");
            return;
        }
        if let Some(cmd) = self.decode(&frame) {
            self.pending.push_back(cmd);
        }
    }

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
        self.reader.write(&bytes).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let Some(frame) = self.reader.next_frame(deadline).await? else {
                RadioCounters::count(&self.stats.timeouts);
                tracing::warn!(radio = %self.io.radio, request = cmd.name(), timeout = ?timeout, "SREQ timed out");
                return Ok(Err(Fail::Timeout));
            };
            if frame.cmd_type != MtType::Srsp {
                if let Some(c) = self.decode(&frame) {
                    self.pending.push_back(c);
                }
                continue;
            }
            let ours = (frame.subsystem == subsystem && frame.cmd_id == cmd_id)
                || frame.subsystem == Subsystem::RpcError;
            if !ours {
                tracing::debug!(radio = %self.io.radio, subsystem = ?frame.subsystem, cmd_id = frame.cmd_id, "stray SRSP ignored");
                continue;
            }
            return Ok(match self.decode(&frame) {
                Some(ZnpCommand::RpcError { error_code, .. }) => Err(Fail::Rpc(error_code)),
                Some(ZnpCommand::StatusRsp { status: 0, .. }) => Ok(ZnpCommand::StatusRsp {
                    subsystem,
                    cmd_id,
                    status: 0,
                }),
                Some(ZnpCommand::StatusRsp { status, .. }) => Err(Fail::Status(status)),
                Some(other) => Ok(other),
                None => Err(Fail::Rpc(0xFF)),
            });
        }
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
        self.reader.write(&bytes).await
    }

    /// Waits for an indication matching `want` (looking at the queue first).
    pub(super) async fn wait_for(
        &mut self,
        timeout: Duration,
        want: impl Fn(&ZnpCommand) -> bool,
    ) -> Result<Option<ZnpCommand>> {
        if let Some(i) = self.pending.iter().position(&want) {
            return Ok(self.pending.remove(i));
        }
        let deadline = Instant::now() + timeout;
        while let Some(frame) = self.reader.next_frame(deadline).await? {
            if frame.cmd_type == MtType::Srsp {
                continue;
            }
            if let Some(c) = self.decode(&frame) {
                if want(&c) {
                    return Ok(Some(c));
                }
                self.pending.push_back(c);
            }
        }
        Ok(None)
    }
}
