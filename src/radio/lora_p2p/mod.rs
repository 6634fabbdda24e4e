//! LoRa point-to-point through a RAK3172 modem (RUI3 AT commands over a serial line,
//! `tcp://` through ser2net, or `sim://lora-rak3172`): private LoRa sensors on one channel,
//! no LoRaWAN.
//!
//! This module owns the conversation with one modem over one open link:
//! - **configure** at every start: prove the modem answers (`AT`, resetting it with `ATZ`
//!   when it does not), stop a receive it may have been left in, switch it to P2P mode
//!   (`AT+NWM=0`, which restarts it) when it is not, write the radio settings (`AT+P2P`,
//!   `AT+SYNCWORD`), set **P2P encryption** (below) and start **continuous receive**
//!   (`AT+PRECV=65534`);
//! - **receive**: every `+EVT:RXP2P` (RUI3's one-line format and the older two-line one,
//!   parsed by `fieldgate_lora::rak3172`) becomes readings of the device its first
//!   `id_bytes` name; the hub registers a new sender as pending, as with any device that is
//!   discovered rather than joined;
//! - **transmit** (a `set` for a device): stop receiving, `AT+PSEND`, wait for
//!   `+EVT:TXP2P DONE`, and **re-arm** the receive whatever happened;
//! - **`AT_BUSY_ERROR`**: the command is sent again with a backoff, after an `AT+PRECV=0`
//!   (busy almost always means "still receiving"), and counted;
//! - **module restarts**: the boot banner (a brown-out, a watchdog, a mode change) means the
//!   receive stopped; the driver configures the modem again. A modem that stops answering
//!   `AT` makes `run` return an error, and the supervisor re-opens the link with backoff.
//!
//! **Encryption**: with `encryption_key_file` set, the key and IV read from that file are
//! written (`AT+ENCKEY`, `AT+CRYPIV`), then `AT+ENCRY=1`, read back with `AT+ENCRY=?`, at
//! every configuration (so again after a module restart); without it, `AT+ENCRY=0`. A
//! firmware without these commands (`AT_COMMAND_NOT_FOUND`, `AT_ERROR`) or that takes only
//! 8-byte keys makes `run` fail with the reason, counted in `unsupported`: the radio stays
//! down rather than receive in the clear. The module deciphers what it hears; RUI3 P2P has
//! no MIC, so a frame sent in the clear or under another key arrives as bytes that do not
//! decode: it is counted in `not_decrypted` and dropped, never turned into a sender. The
//! key and IV are never logged: every command and modem line goes through
//! `rak3172::redact` before a log or an error sees it.
//!
//! Bytes that are not AT lines are counted as line errors and skipped. Nothing here decides
//! admission: the hub does, from the events.

mod key;
mod options;
pub mod sim;
mod spec;

pub use key::{parse_key_text, read_key_file, P2pKey, HOW_TO_MAKE as KEY_FILE_HOW_TO};
pub use options::P2pOptions;
pub use spec::SPEC;

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use fieldgate_lora::rak3172::{
    redact, AtParser, Command, Event, NetworkMode, RxMode, Secret16, StatusError, WorkMode,
};
use fieldgate_lora::types::{hex_decode, hex_encode};
use tokio::time::Instant;

use super::link::Link;
use super::lora::Decoder;
use super::session::{
    Expect, Frame, FrameParser, Outcome, Retries, RetryPolicy, Session, SessionConfig,
};
use super::{Driver, DriverFuture, DriverIo, RadioCounters};
use crate::model::{
    DeviceCommand, DeviceEvent, DeviceEventKind, DeviceInfo, LinkMetrics, RadioCommand, RadioError,
    RadioState, Reachability, Reading, Value,
};

/// `AT_BUSY_ERROR`: tries in all, and the wait between them.
const BUSY_RETRY: RetryPolicy = RetryPolicy {
    attempts: 5,
    first_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
};

/// `AT` with no answer: tries before the modem is reset (or given up).
const PROBE_RETRY: RetryPolicy = RetryPolicy {
    attempts: 3,
    first_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(1),
};

/// How long a restarting module may take to print its banner.
const BOOT_WAIT: Duration = Duration::from_secs(5);

/// The LoRa P2P driver. Keeps nothing across links: the modem is configured afresh.
#[derive(Default)]
pub struct P2pDriver;

impl Driver for P2pDriver {
    fn run<'a>(&'a mut self, link: Link, io: &'a mut DriverIo) -> DriverFuture<'a> {
        Box::pin(async move {
            let opts = P2pOptions::parse(&io.options)
                .with_context(|| format!("radio `{}`: invalid [radio.options]", io.radio))?;
            let key = match &opts.encryption_key_file {
                Some(path) => {
                    Some(read_key_file(path).map_err(|e| anyhow!("encryption_key_file: {e}"))?)
                }
                None => None,
            };
            let session = Session::new(
                link,
                AtLines::default(),
                SessionConfig {
                    radio: io.radio.clone(),
                    peer: "modem",
                    stall: Duration::from_millis(500),
                },
            );
            let mut modem = Modem {
                session,
                io,
                opts,
                key,
                described: HashSet::new(),
            };
            modem.run().await
        })
    }
}

// ---------------------------------------------------------------------------------------
// AT lines as session frames

/// One line (or two, for the old RX format) from the modem.
#[derive(Debug, Clone, PartialEq)]
pub struct AtFrame(pub Event);

impl Frame for AtFrame {
    /// A status line answers the command in flight; everything else is unsolicited.
    fn is_reply(&self) -> bool {
        matches!(self.0, Event::Ok | Event::Error(_))
    }

    fn describe(&self) -> String {
        match &self.0 {
            Event::RxP2p { payload, .. } => format!("RXP2P ({} bytes)", payload.len()),
            Event::Error(e) => format!("status {e:?}"),
            // An echoed command or a query's answer may carry the P2P key or IV.
            Event::Reply(line) => format!("Reply({:?})", redact(line)),
            Event::Text(line) => format!("Text({:?})", redact(line)),
            other => format!("{other:?}"),
        }
    }
}

/// The AT parser behind the session's reader: garbage is counted, not handed on.
#[derive(Default)]
pub struct AtLines {
    parser: AtParser,
    ready: VecDeque<Event>,
    line_errors: u64,
}

impl FrameParser for AtLines {
    type Frame = AtFrame;

    fn push(&mut self, bytes: &[u8]) {
        for e in self.parser.feed(bytes) {
            match e {
                Event::Garbage { .. } => self.line_errors += 1,
                e => self.ready.push_back(e),
            }
        }
    }

    fn next_frame(&mut self) -> Option<AtFrame> {
        self.ready.pop_front().map(AtFrame)
    }

    fn buffered(&self) -> usize {
        self.parser.buffered()
    }

    fn flush_stalled(&mut self) -> Vec<AtFrame> {
        if self.parser.drop_partial() > 0 {
            self.line_errors += 1;
        }
        Vec::new()
    }

    fn line_errors(&self) -> u64 {
        self.line_errors
    }
}

// ---------------------------------------------------------------------------------------
// The conversation

/// Why a command did not succeed.
#[derive(Debug, Clone, PartialEq)]
enum Failed {
    /// `AT_BUSY_ERROR` on every try.
    Busy,
    /// Another `AT_...` status.
    Refused(StatusError),
    /// No status line in time.
    Timeout,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Busy => write!(f, "AT_BUSY_ERROR on every try"),
            Failed::Refused(e) => write!(f, "refused ({e:?})"),
            Failed::Timeout => write!(f, "no answer in time"),
        }
    }
}

struct Modem<'a> {
    session: Session<Link, AtLines>,
    io: &'a mut DriverIo,
    opts: P2pOptions,
    /// The P2P encryption key and IV, when encryption is configured.
    key: Option<P2pKey>,
    /// Senders already described to the hub on this link.
    described: HashSet<String>,
}

/// What an event from the modem asks of the loop.
enum Next {
    Carry,
    /// The module restarted: configure it again (after the rest of its banner when `true`).
    Reconfigure {
        banner: bool,
    },
}

fn is_status(f: &AtFrame) -> bool {
    f.is_reply()
}

fn line_of(command: &Command) -> Result<String> {
    command
        .line()
        .map_err(|e| anyhow!("cannot build an AT command: {e}"))
}

/// The value in a query's answer: `AT+<NAME>=<value>` (RUI3), or the bare value of one
/// character (older firmware).
fn queried_value(answers: &[Event], prefix: &str) -> Option<String> {
    answers.iter().rev().find_map(|e| match e {
        Event::Reply(r) => r
            .strip_prefix(prefix)
            .filter(|v| *v != "?")
            .map(str::to_string),
        Event::Text(t) => Some(t.clone()),
        _ => None,
    })
}

impl Modem<'_> {
    async fn run(&mut self) -> Result<()> {
        let mut reconfigure = Some(false);
        loop {
            if let Some(banner) = reconfigure.take() {
                self.configure(banner).await?;
            }
            while let Some(AtFrame(e)) = self.session.pop_unsolicited() {
                if let Next::Reconfigure { banner } = self.on_event(e).await? {
                    reconfigure = Some(banner);
                }
            }
            if reconfigure.is_some() {
                continue;
            }
            let quiet_until = Instant::now() + self.opts.keepalive;
            tokio::select! {
                biased;
                cmd = self.io.commands.recv() => match cmd {
                    Some(cmd) => {
                        if self.on_command(cmd).await? {
                            reconfigure = Some(false);
                        }
                    }
                    None => return Ok(()),
                },
                frame = self.session.next_unsolicited(quiet_until) => match frame? {
                    Some(AtFrame(e)) => {
                        if let Next::Reconfigure { banner } = self.on_event(e).await? {
                            reconfigure = Some(banner);
                        }
                    }
                    None => {
                        if !self.probe().await? {
                            bail!("the modem stopped answering AT");
                        }
                    }
                },
            }
            self.take_line_errors();
        }
    }

    fn take_line_errors(&mut self) {
        let n = self.session.take_line_errors();
        if n > 0 {
            self.io
                .counters
                .line_errors
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Sends `command` and waits for its status; `AT_BUSY_ERROR` is retried with a backoff
    /// after stopping the receive. `Err` only when the link is broken.
    async fn command(&mut self, command: &Command) -> Result<Result<(), Failed>> {
        let line = line_of(command)?;
        let timeout = self.opts.command_timeout;
        let mut busy = Retries::new(BUSY_RETRY);
        loop {
            let outcome = self
                .session
                .request(line.as_bytes(), Expect::reply(timeout, is_status))
                .await?;
            self.take_line_errors();
            let status = match outcome {
                Outcome::Answered {
                    response: Some(AtFrame(e)),
                    ..
                } => e,
                _ => {
                    RadioCounters::count(&self.io.counters.timeouts);
                    return Ok(Err(Failed::Timeout));
                }
            };
            match status {
                Event::Error(StatusError::Busy) => {
                    RadioCounters::count(&self.io.counters.busy);
                    let Some(again) = busy.failed(Instant::now()) else {
                        tracing::warn!(radio = %self.io.radio, command = %command.shown(), "modem busy on every try");
                        return Ok(Err(Failed::Busy));
                    };
                    tracing::debug!(radio = %self.io.radio, command = %command.shown(), tries = busy.failures(), "modem busy: stopping receive and trying again");
                    if !matches!(command, Command::Receive(RxMode::Stop)) {
                        let stop = line_of(&Command::Receive(RxMode::Stop))?;
                        self.session
                            .request(stop.as_bytes(), Expect::reply(timeout, is_status))
                            .await?;
                    }
                    tokio::time::sleep_until(again).await;
                }
                Event::Error(e) => return Ok(Err(Failed::Refused(e))),
                _ => return Ok(Ok(())),
            }
        }
    }

    /// [`command`](Modem::command) that must work for the modem to be usable.
    async fn must(&mut self, command: &Command) -> Result<()> {
        match self.command(command).await? {
            Ok(()) => Ok(()),
            Err(f) => bail!("the modem did not take `{}`: {f}", command.shown()),
        }
    }

    /// `AT`, with retries: does the modem answer at all?
    async fn probe(&mut self) -> Result<bool> {
        let timeout = self.opts.command_timeout;
        let outcome = self
            .session
            .request_with_retries(b"AT\r\n", || Expect::reply(timeout, is_status), PROBE_RETRY)
            .await?;
        let answered = matches!(outcome, Outcome::Answered { .. });
        if !answered {
            RadioCounters::count(&self.io.counters.timeouts);
        }
        Ok(answered)
    }

    /// Waits for the end of a boot banner (`Current Work Mode: ...`).
    async fn wait_for_boot(&mut self) -> Result<Option<WorkMode>> {
        let got = self
            .session
            .wait_for(BOOT_WAIT, |f: &AtFrame| matches!(f.0, Event::WorkMode(_)))
            .await?;
        self.take_queued(|e| matches!(e, Event::Banner(_) | Event::WorkMode(_)));
        Ok(got.and_then(|f| match f.0 {
            Event::WorkMode(m) => Some(m),
            _ => None,
        }))
    }

    /// Removes the queued unsolicited events `want` accepts (keeping the others in order)
    /// and returns them.
    fn take_queued(&mut self, want: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut taken = Vec::new();
        let mut kept = Vec::new();
        while let Some(AtFrame(e)) = self.session.pop_unsolicited() {
            if want(&e) {
                taken.push(e);
            } else {
                kept.push(e);
            }
        }
        for e in kept {
            self.session.queue_unsolicited(AtFrame(e));
        }
        taken
    }

    /// Asks `query` (`AT+<NAME>=?`) and returns the one-character value it answers, if the
    /// modem answers. Earlier answers and echoes still queued are dropped first.
    async fn query(&mut self, query: &Command, prefix: &str) -> Result<Option<String>> {
        let is_answer = |e: &Event| {
            matches!(e, Event::Reply(r) if r.starts_with(prefix))
                || matches!(e, Event::Text(t) if t.len() == 1)
        };
        self.take_queued(is_answer);
        if self.command(query).await?.is_err() {
            return Ok(None);
        }
        let answers = self.take_queued(is_answer);
        Ok(queried_value(&answers, prefix))
    }

    /// The work mode (`AT+NWM=?`), if the modem says.
    async fn work_mode(&mut self) -> Result<Option<u8>> {
        let value = self.query(&Command::QueryNetworkMode, "AT+NWM=").await?;
        Ok(value.and_then(|v| v.parse().ok()))
    }

    /// P2P encryption as configured: the key and IV, then `AT+ENCRY=1`, read back; or
    /// `AT+ENCRY=0` with no key file. `Err` (the radio goes down) when a key is configured
    /// and the firmware cannot use it: never receive in the clear when encryption was
    /// asked for.
    async fn encryption(&mut self) -> Result<()> {
        let Some(key) = &self.key else {
            return match self.command(&Command::Encryption(false)).await? {
                Ok(()) => Ok(()),
                // Nothing to turn off on a firmware without P2P encryption.
                Err(Failed::Refused(StatusError::CommandNotFound | StatusError::Generic)) => Ok(()),
                Err(f) => bail!("the modem did not take `AT+ENCRY=0`: {f}"),
            };
        };
        let commands = [
            Command::EncryptionKey(Secret16(key.key)),
            Command::EncryptionIv(Secret16(key.iv)),
            Command::Encryption(true),
        ];
        for c in &commands {
            match self.command(c).await? {
                Ok(()) => {}
                Err(Failed::Refused(e @ (StatusError::CommandNotFound | StatusError::Generic))) => {
                    RadioCounters::count(&self.io.counters.unsupported);
                    bail!(
                        "the modem's firmware has no LoRa P2P encryption (`{}` answered {}): refusing to receive in the clear while `encryption_key_file` is set; update the module to RUI3 4.0.6 or later",
                        c.shown(),
                        status_name(&e)
                    );
                }
                Err(Failed::Refused(StatusError::Param))
                    if !matches!(c, Command::Encryption(_)) =>
                {
                    RadioCounters::count(&self.io.counters.unsupported);
                    bail!(
                        "the modem refused a 16-byte P2P key or IV (`{}` answered AT_PARAM_ERROR): firmware before RUI3 4.0.6 takes 8-byte keys; update the module",
                        c.shown()
                    );
                }
                Err(f) => bail!("the modem did not take `{}`: {f}", c.shown()),
            }
        }
        let on = self.query(&Command::QueryEncryption, "AT+ENCRY=").await?;
        if on.as_deref() != Some("1") {
            RadioCounters::count(&self.io.counters.unsupported);
            bail!(
                "the modem reports P2P encryption {} after `AT+ENCRY=1`: refusing to receive in the clear",
                on.map_or("unknown".to_string(), |v| format!("`{v}`"))
            );
        }
        tracing::info!(radio = %self.io.radio, "LoRa P2P encryption on (key and IV from encryption_key_file)");
        Ok(())
    }

    async fn configure(&mut self, after_banner: bool) -> Result<()> {
        RadioCounters::count(&self.io.counters.startups);
        let _ = self.io.state.send(RadioState::Starting);
        if after_banner {
            self.wait_for_boot().await?;
        }
        self.take_queued(|e| matches!(e, Event::Banner(_) | Event::WorkMode(_)));
        if !self.probe().await? {
            tracing::warn!(radio = %self.io.radio, "the modem does not answer AT: resetting it (ATZ)");
            self.session.send(b"ATZ\r\n").await?;
            self.wait_for_boot().await?;
            if !self.probe().await? {
                bail!("the modem does not answer AT, even after ATZ");
            }
        }
        // A module left receiving refuses every setting until the receive stops. In
        // LoRaWAN mode the command does not exist (AT_MODE_NO_SUPPORT): nothing to stop.
        if let Err(f) = self.command(&Command::Receive(RxMode::Stop)).await? {
            tracing::debug!(radio = %self.io.radio, error = %f, "AT+PRECV=0 not taken");
        }
        let mode = self.work_mode().await?;
        if mode != Some(NetworkMode::P2p as u8) {
            tracing::info!(radio = %self.io.radio, mode = ?mode, "switching the modem to LoRa P2P (it restarts)");
            self.must(&Command::NetworkMode(NetworkMode::P2p)).await?;
            match self.wait_for_boot().await? {
                Some(WorkMode::P2p) | None => {}
                Some(other) => bail!("the modem restarted in {other:?} mode, not LoRa P2P"),
            }
            if !self.probe().await? {
                bail!("the modem does not answer AT after switching to P2P");
            }
            self.must(&Command::Receive(RxMode::Stop)).await?;
        }
        self.must(&Command::P2p(self.opts.radio)).await?;
        if let Some(w) = self.opts.sync_word {
            self.must(&Command::SyncWord(w)).await?;
        }
        self.encryption().await?;
        self.must(&Command::Receive(RxMode::Continuous)).await?;
        let r = self.opts.radio;
        tracing::info!(radio = %self.io.radio, freq_hz = r.freq_hz, sf = r.sf, bw_khz = r.bw_khz, "LoRa P2P modem receiving");
        let _ = self.io.state.send(RadioState::Up);
        Ok(())
    }

    async fn on_event(&mut self, e: Event) -> Result<Next> {
        match e {
            Event::RxP2p { rssi, snr, payload } => self.frame(rssi, snr, &payload).await?,
            Event::RxTimeout => {
                // A window ended (only a receive with a time limit does that): listen again.
                if self
                    .command(&Command::Receive(RxMode::Continuous))
                    .await?
                    .is_err()
                {
                    return Ok(Next::Reconfigure { banner: false });
                }
            }
            Event::RxError => RadioCounters::count(&self.io.counters.line_errors),
            Event::TxDone => {}
            Event::Banner(line) if line.starts_with("RAKwireless") => {
                tracing::warn!(radio = %self.io.radio, "the modem restarted: configuring it again");
                return Ok(Next::Reconfigure { banner: true });
            }
            Event::WorkMode(_) => {
                tracing::warn!(radio = %self.io.radio, "the modem restarted: configuring it again");
                return Ok(Next::Reconfigure { banner: false });
            }
            Event::OtherEvent(_) => RadioCounters::count(&self.io.counters.unhandled),
            other => {
                tracing::debug!(radio = %self.io.radio, line = %AtFrame(other).describe(), "modem line ignored")
            }
        }
        Ok(Next::Carry)
    }

    fn event(&self, native_address: String, kind: DeviceEventKind) -> DeviceEvent {
        DeviceEvent {
            radio: self.io.radio.clone(),
            protocol: self.io.protocol,
            native_address,
            received_at: SystemTime::now(),
            kind,
            link: None,
        }
    }

    async fn emit(&mut self, ev: DeviceEvent) -> Result<()> {
        self.io
            .events
            .send(ev)
            .await
            .map_err(|_| anyhow!("the hub stopped"))
    }

    /// A received frame: `<id><payload>` to readings of device `<id>`.
    async fn frame(&mut self, rssi: i16, snr: i16, payload: &[u8]) -> Result<()> {
        let n = self.opts.id_bytes;
        if payload.len() <= n {
            RadioCounters::count(&self.io.counters.undecodable);
            tracing::debug!(radio = %self.io.radio, len = payload.len(), id_bytes = n, "P2P frame too short for a sender id and a payload");
            return Ok(());
        }
        let (id, data) = payload.split_at(n);
        if self.key.is_some() && super::lora::readings::lpp_readings(data).is_none() {
            // The module deciphered it with our key; without a MIC, a payload that does not
            // decode is all that tells a frame sent in the clear or under another key.
            RadioCounters::count(&self.io.counters.not_decrypted);
            tracing::debug!(radio = %self.io.radio, len = payload.len(), "P2P frame that does not decode under our key (sent in the clear or under another key): dropped");
            return Ok(());
        }
        let native = hex_encode(id);
        let readings = p2p_readings(data, self.opts.decoder, &self.io.counters);
        let mut ev = self.event(native.clone(), DeviceEventKind::Readings(readings));
        // The hub turns these into `rssi` and `snr` readings.
        ev.link = Some(LinkMetrics {
            rssi_dbm: Some(f64::from(rssi)),
            lqi: None,
            snr_db: Some(f64::from(snr)),
        });
        self.emit(ev).await?;
        if self.described.insert(native.clone()) {
            let info = DeviceInfo {
                model: Some("LoRa P2P sender".into()),
                capabilities: vec!["lora_p2p".into()],
                reachability: Some(Reachability::AfterUplink),
                ..DeviceInfo::default()
            };
            self.emit(self.event(native, DeviceEventKind::Interviewed(info)))
                .await?;
        }
        Ok(())
    }

    /// Handles a command from the hub; `true` when the modem must be configured again.
    async fn on_command(&mut self, cmd: RadioCommand) -> Result<bool> {
        match cmd {
            RadioCommand::Set {
                stale_at,
                native_address,
                command,
                command_id,
            } => {
                let id = hex_decode(&native_address)
                    .ok()
                    .filter(|id| id.len() == self.opts.id_bytes);
                let stale = crate::model::stale_command(stale_at);
                let (result, reconfigure) = match (stale, id, downlink_body(command)) {
                    (Some(why), _, _) => (Err(why), false),
                    (None, None, _) => (
                        Err(format!(
                            "`{native_address}` is not a P2P sender id of {} bytes",
                            self.opts.id_bytes
                        )),
                        false,
                    ),
                    (None, Some(_), None) => (
                        Err("LoRa P2P devices have no configuration parameters".to_string()),
                        false,
                    ),
                    (None, Some(mut frame), Some(body)) => {
                        frame.extend(body);
                        self.transmit(frame).await?
                    }
                };
                let (ok, detail) = match result {
                    Ok(()) => (true, "sent".to_string()),
                    Err(e) => (false, e),
                };
                let ev = self.event(
                    native_address,
                    DeviceEventKind::CommandResult {
                        command_id,
                        ok,
                        detail,
                    },
                );
                self.emit(ev).await?;
                Ok(reconfigure)
            }
            // A sender cannot be asked, and is reached (if at all) right after it sent: a
            // read is held by the hub until it next sends and answered with the state that
            // frame left.
            RadioCommand::Read {
                native_address,
                command_id,
            } => {
                let ev = self.event(
                    native_address,
                    DeviceEventKind::CommandResult {
                        command_id,
                        ok: true,
                        detail: "read from its latest frame".into(),
                    },
                );
                self.emit(ev).await?;
                Ok(false)
            }
            RadioCommand::Remove { native_address } => {
                self.described.remove(&native_address);
                Ok(false)
            }
            RadioCommand::ProvisionCredential { reply, .. } => {
                let _ = reply.send(Err(RadioError::NotSupported(
                    "credentials (LoRa P2P frames are not authenticated)".into(),
                )));
                Ok(false)
            }
            RadioCommand::Backup { reply } => {
                let _ = reply.send(Err(RadioError::NotSupported("backup".into())));
                Ok(false)
            }
            RadioCommand::Restore { reply, .. } => {
                let _ = reply.send(Err(RadioError::NotSupported("restore".into())));
                Ok(false)
            }
            RadioCommand::RotateNetworkKey { reply } => {
                let _ = reply.send(Err(RadioError::NotSupported("network key rotation".into())));
                Ok(false)
            }
            RadioCommand::PermitJoin { reply, .. } => {
                let _ = reply.send(Ok(()));
                Ok(false)
            }
            RadioCommand::Policy(_)
            | RadioCommand::Bridged { .. }
            | RadioCommand::Readmitted { .. } => Ok(false),
        }
    }

    /// Stops receiving, sends `frame`, waits for the end of the transmission and listens
    /// again. The second value is `true` when listening again failed.
    async fn transmit(&mut self, frame: Vec<u8>) -> Result<(Result<(), String>, bool)> {
        let sent = match self.command(&Command::Receive(RxMode::Stop)).await? {
            Err(f) => Err(format!("stopping the receive: {f}")),
            Ok(()) => match self.command(&Command::Send(frame)).await? {
                Err(f) => Err(format!("AT+PSEND: {f}")),
                Ok(()) => {
                    let done = self
                        .session
                        .wait_for(self.opts.tx_timeout, |f: &AtFrame| f.0 == Event::TxDone)
                        .await?;
                    if done.is_some() {
                        Ok(())
                    } else {
                        RadioCounters::count(&self.io.counters.timeouts);
                        Err("no +EVT:TXP2P DONE in time".to_string())
                    }
                }
            },
        };
        let rearmed = self.command(&Command::Receive(RxMode::Continuous)).await?;
        if let Err(f) = &rearmed {
            tracing::warn!(radio = %self.io.radio, error = %f, "receive not restarted after a transmission");
        }
        Ok((sent, rearmed.is_err()))
    }
}

/// A status as the modem printed it, for messages.
fn status_name(e: &StatusError) -> String {
    match e {
        StatusError::CommandNotFound => "AT_COMMAND_NOT_FOUND".into(),
        StatusError::Generic => "AT_ERROR".into(),
        other => format!("{other:?}"),
    }
}

/// The body after the sender id of a frame the gateway sends to a P2P device
/// (`docs/lora.md`): one command byte, and the level for `level`; `None` for a command
/// P2P devices do not take (configuration parameters: the hub refuses those by
/// capability before they get here).
fn downlink_body(command: DeviceCommand) -> Option<Vec<u8>> {
    Some(match command {
        DeviceCommand::Off => vec![0x00],
        DeviceCommand::On => vec![0x01],
        DeviceCommand::Toggle => vec![0x02],
        DeviceCommand::Level { percent } => vec![0x03, percent.min(100)],
        DeviceCommand::Configure { .. } => return None,
    })
}

/// The readings of a P2P payload (after the sender id): always `payload_hex`, and the
/// Cayenne LPP values when that is the decoder and it decodes (else counted undecodable).
fn p2p_readings(data: &[u8], decoder: Decoder, counters: &RadioCounters) -> Vec<Reading> {
    let mut out = vec![Reading {
        name: "payload_hex".into(),
        value: Value::Text(hex_encode(data)),
        unit: None,
    }];
    if decoder == Decoder::Lpp {
        match super::lora::readings::lpp_readings(data) {
            Some(values) => out.extend(values),
            None => RadioCounters::count(&counters.undecodable),
        }
    }
    out.into_iter()
        .flat_map(crate::model::vocabulary::normalize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_readings_and_garbage_is_counted() {
        let counters = RadioCounters::default();
        // Cayenne LPP: channel 1 temperature 21.0 °C, channel 2 humidity 40 %.
        let r = p2p_readings(
            &[0x01, 0x67, 0x00, 0xd2, 0x02, 0x68, 0x50],
            Decoder::Lpp,
            &counters,
        );
        let get = |n: &str| r.iter().find(|x| x.name == n).map(|x| x.value.clone());
        assert_eq!(get("temperature"), Some(Value::Number(21.0)));
        assert_eq!(get("humidity"), Some(Value::Number(40.0)));
        assert_eq!(
            get("payload_hex"),
            Some(Value::Text("016700d2026850".into()))
        );
        let r = p2p_readings(&[0x01, 0xee], Decoder::Lpp, &counters);
        assert_eq!(r.len(), 1);
        assert_eq!(counters.snapshot().undecodable, 1);
        let r = p2p_readings(&[0x01, 0xee], Decoder::Raw, &counters);
        assert_eq!(r.len(), 1);
        assert_eq!(counters.snapshot().undecodable, 1);
    }

    #[test]
    fn the_parser_counts_garbage_and_gives_up_a_stalled_line() {
        let mut p = AtLines::default();
        p.push(b"\x00\xffOK\r\n+EVT:RXP2P:-60:11:AABB\r\nhalf");
        assert_eq!(p.next_frame(), Some(AtFrame(Event::Ok)));
        assert!(p.next_frame().is_some_and(|f| !f.is_reply()));
        assert_eq!(p.next_frame(), None);
        assert_eq!(p.line_errors(), 1);
        assert_eq!(p.buffered(), 4);
        assert!(p.flush_stalled().is_empty());
        assert_eq!((p.buffered(), p.line_errors()), (0, 2));
    }

    #[test]
    fn downlinks_carry_one_command_byte() {
        assert_eq!(downlink_body(DeviceCommand::On).unwrap(), [0x01]);
        assert_eq!(
            downlink_body(DeviceCommand::Level { percent: 150 }).unwrap(),
            [0x03, 100]
        );
        let configure = DeviceCommand::Configure {
            parameter: 1,
            size: 1,
            value: 0,
        };
        assert_eq!(downlink_body(configure), None);
    }
}
