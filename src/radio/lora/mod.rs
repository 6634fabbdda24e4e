//! LoRaWAN through a packet forwarder (GWMP over UDP): the gateway owns the devices it was
//! given keys for and answers them itself, with no network server.
//!
//! This module owns the driver loop: datagrams from the forwarder (`gwmp`), frames to the
//! session table (`sessions`: joins, counters, MICs, decryption), payloads to readings
//! (`readings`), and the hub's commands (credentials, removal). Rules it keeps:
//! - every datagram and frame that does not parse is counted (`undecodable`), a frame with
//!   a bad CRC is counted (`line_errors`), a frame from a device we do not own is counted
//!   (`unhandled`), and none of them panics or stops the loop;
//! - a frame from one of our devices that is refused (bad MIC, replayed or regressed
//!   counter, reused DevNonce) is reported to the hub, which audits it;
//! - the session state (counters, DevNonces) is durable no later than what the gateway
//!   makes of a frame: written before a Join-Accept or a downlink is sent, and for a data
//!   uplink in the same commit as its reading (or an earlier one), so neither a restart
//!   nor SIGKILL lets a frame be accepted twice, and an uplink costs no fsync of its own;
//! - downlinks (Join-Accepts, ACKs, MAC answers) go out in RX1 timed from the uplink's
//!   `tmst`, with RX2 as the fallback when the forwarder refuses RX1;
//! - with the ChirpStack bridge on (`bridge`), every frame and stats report is also (or
//!   only) queued for ChirpStack, and its downlink commands are sent (`bridge.rs`).
//!
//! Nothing here decides admission: the hub does, from the events.

pub mod bridge;
mod gwmp;
pub mod keys;
pub(crate) mod options;
pub(crate) mod readings;
mod sessions;
pub mod sim;
pub mod sim_forwarder;
mod spec;

pub use options::{BridgeMode, BridgeOptions, Decoder, LoraOptions};
pub use sessions::{AbpCredential, OtaaCredential, SessionState, SESSION_KIND};
pub use spec::SPEC;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use fieldgate_lora::gwmp::{CrcStatus, Packet, RxPk, TxPk};
use fieldgate_lora::lorawan::mac::{encode_commands, MacCommand};
use fieldgate_lora::lorawan::{DataFrame, DataMessage, DlSettings, FCtrl, PhyPayload};
use fieldgate_lora::region::{Modulation, Region};
use fieldgate_lora::{Direction, Eui64};
use tokio::net::UdpSocket;

use self::gwmp::{ForwarderLink, TxOutcome};
use self::sessions::{Refusal, Sessions};
use super::{DriverFuture, DriverIo, OwnTransportDriver, RadioCounters};
use crate::config::PortSpec;
use crate::model::{
    CredentialKind, DeviceEvent, DeviceEventKind, DeviceInfo, LinkMetrics, RadioCommand,
    RadioError, RadioState, Reachability,
};
use crate::secrets::Secret;
use crate::store::{credentials, StoreResult, Writer};

/// The LoRaWAN gateway driver. Its session table is reloaded from the store at every start.
#[derive(Default)]
pub struct LoraDriver {
    sessions: Sessions,
    /// Until when a device's first Join-Request is answered (the hub's join window, as
    /// `PermitJoin` said); kept across re-opens.
    join_until: Option<Instant>,
    /// What the forwarder's log lines are limited by; kept across re-opens, so that a
    /// forwarder that keeps the radio re-opening cannot reset the limits.
    logs: LogLimits,
}

/// When a rate-limited kind of line was last written, and how many were held back.
#[derive(Default)]
struct LogLimits {
    malformed: Option<(Instant, u64)>,
    stat: Option<(Instant, u64)>,
    /// The forwarder that sent PULL_DATA last (where downlinks go).
    puller: Option<Eui64>,
}

impl LogLimits {
    /// Whether a line of this kind is written now (and how many were held back since the
    /// last one), or only counted.
    fn due(slot: &mut Option<(Instant, u64)>, every: Duration) -> Option<u64> {
        let now = Instant::now();
        match slot {
            Some((at, held)) if now.duration_since(*at) < every => {
                *held += 1;
                None
            }
            logged => {
                let held = logged.map_or(0, |(_, held)| held);
                *logged = Some((now, 0));
                Some(held)
            }
        }
    }
}

/// Text from a forwarder as a log field: control characters escaped, at most 200
/// characters (a forwarder's error string is its own to choose).
fn from_forwarder(text: impl std::fmt::Display) -> String {
    let text = text.to_string();
    let cut: String = text.chars().take(200).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!("{}{more}", crate::output::one_line(&cut))
}

impl OwnTransportDriver for LoraDriver {
    fn run<'a>(&'a mut self, io: &'a mut DriverIo) -> DriverFuture<'a> {
        Box::pin(async move {
            let opts = LoraOptions::parse(&io.options)
                .with_context(|| format!("radio `{}`: invalid [radio.options]", io.radio))?;
            let (bind, sim) = match &io.port {
                PortSpec::Udp { bind, port } => (format!("{bind}:{port}"), false),
                PortSpec::Sim(_) => ("127.0.0.1:0".to_string(), true),
                other => return Err(anyhow!("a LoRa gateway listens on udp://, not {other}")),
            };
            let sock = UdpSocket::bind(&bind)
                .await
                .with_context(|| format!("binding {bind} for the packet forwarder"))?;
            let link = ForwarderLink::new(sock);
            self.sessions = Sessions::default();
            let bridge =
                bridge::Bridge::new(opts.bridge.clone(), io.secrets.clone(), io.counters.clone());
            if bridge.mode() != BridgeMode::Off && io.secrets.is_none() {
                tracing::warn!(radio = %io.radio, "no store: the ChirpStack bridge forwards nothing");
            }
            let mut gw = Gateway {
                io,
                opts,
                link,
                sessions: &mut self.sessions,
                bridge,
                refusals: HashMap::new(),
                logs: &mut self.logs,
                join_until: &mut self.join_until,
            };
            // Up before the store is read: a key committed while it is read is then either
            // read here or pushed by the hub (which pushes only to a radio that is up).
            RadioCounters::count(&gw.io.counters.startups);
            let _ = gw.io.state.send(RadioState::Up);
            gw.load().await?;
            if sim {
                let addr = gw.link.local_addr()?;
                let keys = sim::provision(&mut *gw.sessions);
                tracing::info!(radio = %gw.io.radio, devices = keys, "sim://lora: emulated packet forwarder and devices attached");
                tokio::spawn(sim::run(addr));
            }
            tracing::info!(radio = %gw.io.radio, port = %gw.io.port, region = gw.opts.region.name(), devices = gw.sessions.len(), "LoRa gateway listening for a packet forwarder");
            gw.run().await
        })
    }
}

struct Gateway<'a> {
    io: &'a mut DriverIo,
    opts: LoraOptions,
    link: ForwarderLink,
    sessions: &'a mut Sessions,
    /// The ChirpStack bridge (inactive when `bridge = "off"`).
    bridge: bridge::Bridge,
    /// Refusals handed to the hub (and audited), per device and reason: when the
    /// last one was, and how many were held back since.
    refusals: HashMap<(Eui64, &'static str), (Instant, u64)>,
    /// The rate-limited log lines (malformed datagrams, each counted in
    /// `undecodable`; the forwarder's statistics).
    logs: &'a mut LogLimits,
    /// See [`LoraDriver`]'s field.
    join_until: &'a mut Option<Instant>,
}

/// A malformed datagram is a warning at most once per this: a broken forwarder or a
/// flood from the LAN sends thousands a second, and the log must stay readable.
const MALFORMED_LOG_EVERY: Duration = Duration::from_secs(60);

/// The forwarder's statistics are an info line at most once per this.
const STAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// A device's frames refused for the same reason reach the hub (and its audit log)
/// at most once per this; the ones in between are counted as `rate_limited` and the
/// next record says how many there were. A removed device keeps sending Join-Requests
/// (every few seconds, for hours), and a forger can send as many frames as the air
/// carries: neither may flood the audit log.
const REFUSAL_EVERY: Duration = Duration::from_secs(60);

/// How long a data uplink's session state waits for the commit that records its
/// reading before it is committed on its own (nothing else committing: the reading
/// was not recorded, e.g. the hub refused the device).
const UPLINK_STATE_IDLE: Duration = Duration::from_millis(200);

/// A store job writing a device's session state.
type SessionJob = Box<dyn FnOnce(&rusqlite::Connection) -> StoreResult<()> + Send>;

/// `lora:<DevEUI>` owner of a device's credentials, and back.
fn owner(dev_eui: Eui64) -> String {
    format!("lora:{dev_eui}")
}

fn eui_of(native_or_owner: &str) -> Option<Eui64> {
    let hex = native_or_owner
        .strip_prefix("lora:")
        .unwrap_or(native_or_owner);
    hex.parse().ok()
}

impl Gateway<'_> {
    /// The provisioned keys and the persisted sessions, from the credentials table.
    async fn load(&mut self) -> Result<()> {
        let Some(sink) = self.io.secrets.clone() else {
            return Ok(());
        };
        for kind in [
            CredentialKind::LorawanOtaa.as_str(),
            CredentialKind::LorawanAbp.as_str(),
            SESSION_KIND,
        ] {
            let (all, unreadable) = sink.all_of_kind(kind).await?;
            if unreadable > 0 {
                tracing::warn!(radio = %self.io.radio, kind, unreadable, "LoRaWAN credentials that do not open with this master key were skipped");
            }
            for (owner, secret) in all {
                let Some(eui) = eui_of(&owner) else { continue };
                if let Err(e) = self.take(eui, kind, &secret) {
                    tracing::warn!(radio = %self.io.radio, device = %owner, kind, error = %e, "stored LoRaWAN credential skipped");
                }
            }
        }
        Ok(())
    }

    fn take(&mut self, eui: Eui64, kind: &str, secret: &Secret) -> Result<(), String> {
        let parse_err = |e: serde_json::Error| format!("not a {kind} document: {e}");
        match kind {
            k if k == CredentialKind::LorawanOtaa.as_str() => {
                let c: OtaaCredential =
                    serde_json::from_slice(secret.expose()).map_err(parse_err)?;
                self.sessions.provision_otaa(eui, &c)
            }
            k if k == CredentialKind::LorawanAbp.as_str() => {
                let c: AbpCredential =
                    serde_json::from_slice(secret.expose()).map_err(parse_err)?;
                self.sessions.provision_abp(eui, &c)
            }
            SESSION_KIND => {
                let st: SessionState =
                    serde_json::from_slice(secret.expose()).map_err(parse_err)?;
                self.sessions.restore(eui, &st)
            }
            _ => Err(format!("unknown credential kind {kind}")),
        }
    }

    /// The store's writer and the job that writes `dev_eui`'s session state (sealed) as
    /// it is now; `None` without a store or a session.
    fn session_write(&self, dev_eui: Eui64) -> Result<Option<(Writer, SessionJob)>> {
        let (Some(sink), Some(d)) = (self.io.secrets.as_ref(), self.sessions.get(dev_eui)) else {
            return Ok(None);
        };
        let json = serde_json::to_vec(&d.state())?;
        let (key, owner) = (sink.key.clone(), owner(dev_eui));
        let put = move |c: &rusqlite::Connection| {
            credentials::put(c, &key, &owner, SESSION_KIND, &Secret::new(json))
        };
        Ok(Some((sink.writer.clone(), Box::new(put))))
    }

    /// Writes `dev_eui`'s session state and waits until it is committed.
    async fn persist(&self, dev_eui: Eui64) -> Result<()> {
        if let Some((writer, put)) = self.session_write(dev_eui)? {
            writer.write(put).await?;
        }
        Ok(())
    }

    /// Writes `dev_eui`'s session state in the store's next commit, without waiting:
    /// called before the uplink's reading is handed to the hub, so the state commits
    /// with that reading or before it, never after. A failure is logged (and counted
    /// in the store's failed operations).
    fn persist_with_next_commit(&self, dev_eui: Eui64) {
        let radio = self.io.radio.clone();
        match self.session_write(dev_eui) {
            Ok(Some((writer, put))) => {
                tokio::spawn(async move {
                    if let Err(e) = writer.with_next_commit(put, UPLINK_STATE_IDLE).await {
                        tracing::error!(radio = %radio, %dev_eui, error = %e, "session state not stored");
                    }
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(radio = %radio, %dev_eui, error = %e, "session state not serialized")
            }
        }
    }

    async fn run(&mut self) -> Result<()> {
        let mut buf = vec![0u8; 65_536];
        loop {
            // A forwarder heard once that falls silent (no keep-alive) is gone: the radio
            // shows down and the supervisor opens it again.
            let silent_at = self
                .link
                .last_heard
                .map(|t| t + self.opts.forwarder_timeout);
            tokio::select! {
                _ = tokio::time::sleep_until(silent_at.unwrap_or_else(far_future)), if silent_at.is_some() => {
                    return Err(anyhow!(
                        "the packet forwarder went silent: nothing for {}",
                        humantime::format_duration(self.opts.forwarder_timeout)
                    ));
                }
                cmd = self.io.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => return Ok(()),
                },
                got = self.link.recv(&mut buf) => {
                    let (n, from) = got.context("receiving from the packet forwarder")?;
                    let datagram = buf[..n].to_vec();
                    self.datagram(&datagram, from).await?;
                }
            }
        }
    }

    async fn datagram(&mut self, bytes: &[u8], from: std::net::SocketAddr) -> Result<()> {
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                RadioCounters::count(&self.io.counters.undecodable);
                let error = from_forwarder(&e);
                match LogLimits::due(&mut self.logs.malformed, MALFORMED_LOG_EVERY) {
                    None => {
                        tracing::debug!(radio = %self.io.radio, %from, len = bytes.len(), %error, "malformed GWMP datagram dropped");
                    }
                    Some(held_back) => {
                        tracing::warn!(radio = %self.io.radio, %from, len = bytes.len(), %error, held_back, "malformed GWMP datagram dropped (held_back: dropped since the last such line, without one)");
                    }
                }
                return Ok(());
            }
        };
        if let Err(e) = self.link.acknowledge(&packet, from).await {
            tracing::warn!(radio = %self.io.radio, %from, error = %e, "acknowledging the packet forwarder failed");
        }
        match packet {
            Packet::PushData { data, gateway, .. } => {
                self.bridge.heard_forwarder(gateway);
                for why in &data.rejected {
                    RadioCounters::count(&self.io.counters.undecodable);
                    if let Some(held_back) =
                        LogLimits::due(&mut self.logs.malformed, MALFORMED_LOG_EVERY)
                    {
                        tracing::warn!(radio = %self.io.radio, %from, error = %from_forwarder(why), held_back, "malformed frame in a PUSH_DATA left out; the frames beside it are kept");
                    }
                }
                if let Some(stat) = data.stat {
                    self.io.counters.forwarder.add(&stat);
                    self.link.stats.reports += 1;
                    // A forwarder reports every 30 s; a flood of reports is one line a
                    // minute, the rest at debug level (each still counted).
                    match LogLimits::due(&mut self.logs.stat, STAT_LOG_EVERY) {
                        Some(held_back) => {
                            tracing::info!(radio = %self.io.radio, %gateway, rxnb = ?stat.rxnb, rxok = ?stat.rxok, rxfw = ?stat.rxfw, ackr = ?stat.ackr, dwnb = ?stat.dwnb, txnb = ?stat.txnb, held_back, "packet forwarder statistics")
                        }
                        None => {
                            tracing::debug!(radio = %self.io.radio, %gateway, "packet forwarder statistics")
                        }
                    }
                    if self.bridge.mode() != BridgeMode::Off {
                        if let Err(e) = self.bridge.stats(&stat, gateway).await {
                            tracing::warn!(radio = %self.io.radio, error = %e, "gateway statistics not bridged");
                        }
                    }
                    self.link.stats.last = Some(stat);
                }
                // One frame heard on two RF chains (or twice by the concentrator) comes
                // twice in one datagram: it is one frame, not a replay of it.
                let mut seen: Vec<&[u8]> = Vec::with_capacity(data.rxpk.len());
                for rx in &data.rxpk {
                    if seen.contains(&rx.data.0.as_slice()) {
                        tracing::debug!(radio = %self.io.radio, %gateway, "the same frame twice in one PUSH_DATA: kept once");
                        continue;
                    }
                    seen.push(rx.data.0.as_slice());
                    self.bridged(rx, gateway).await;
                    if self.bridge.local() {
                        self.frame(rx).await?;
                    } else if rx.stat == CrcStatus::Fail {
                        RadioCounters::count(&self.io.counters.line_errors);
                    }
                }
            }
            Packet::TxAck { token, ack, .. } => {
                let outcome = self.link.tx_ack(token, ack.as_ref()).await;
                if self
                    .bridge
                    .tx_ack(token, ack.as_ref(), &mut self.link)
                    .await
                {
                    return Ok(());
                }
                self.tx_outcome(token, outcome)
            }
            // PULL_DATA was acknowledged; the rest are server-to-gateway packets that a
            // forwarder does not send.
            Packet::PullData { gateway, .. } => {
                // One forwarder per radio: another one's PULL_DATA takes the downlink
                // path over (a replaced forwarder must be able to), and says so.
                if self.logs.puller.is_some_and(|p| p != gateway) {
                    RadioCounters::count(&self.io.counters.unhandled);
                    tracing::warn!(radio = %self.io.radio, previous = %self.logs.puller.map(|p| p.to_string()).unwrap_or_default(), %gateway, %from, "another packet forwarder sent PULL_DATA: downlinks now go to it (one forwarder per radio)");
                }
                self.logs.puller = Some(gateway);
                self.bridge.pull_data(gateway, &mut self.link).await
            }
            Packet::PushAck { .. } | Packet::PullAck { .. } | Packet::PullResp { .. } => {
                RadioCounters::count(&self.io.counters.unhandled);
            }
        }
        Ok(())
    }

    /// Queues `rx` for the ChirpStack bridge when it is on.
    async fn bridged(&mut self, rx: &RxPk, gateway: Eui64) {
        if self.bridge.mode() == BridgeMode::Off {
            return;
        }
        match self.bridge.uplink(rx, gateway).await {
            Ok(true) => {
                RadioCounters::count(&self.io.counters.bridged);
                tracing::debug!(radio = %self.io.radio, tmst = rx.tmst, "frame bridged")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(radio = %self.io.radio, error = %e, "frame not bridged")
            }
        }
    }

    /// A downlink command from the bridged network server.
    async fn bridge_command(&mut self, topic: &str, payload: &[u8]) {
        if self.bridge.mode() == BridgeMode::Off {
            return;
        }
        match self.bridge.command(topic, payload, &mut self.link).await {
            bridge::Handled::Done => {}
            bridge::Handled::NotOurs => {
                RadioCounters::count(&self.io.counters.unhandled);
                tracing::debug!(radio = %self.io.radio, topic, "downlink command for another gateway ignored");
            }
            bridge::Handled::Malformed(e) => {
                RadioCounters::count(&self.io.counters.undecodable);
                tracing::warn!(radio = %self.io.radio, topic, error = %e, "malformed downlink command dropped");
            }
            bridge::Handled::Duplicate => {
                RadioCounters::count(&self.io.counters.unhandled);
                tracing::debug!(radio = %self.io.radio, topic, "downlink command delivered again: sent once");
            }
        }
    }

    fn tx_outcome(&self, token: u16, outcome: TxOutcome) {
        match outcome {
            TxOutcome::Sent { what } => {
                tracing::debug!(radio = %self.io.radio, what, "downlink scheduled by the forwarder")
            }
            TxOutcome::RetriedInRx2 { what, error } => {
                tracing::warn!(radio = %self.io.radio, what, error, "downlink refused in RX1, sent again for RX2")
            }
            TxOutcome::Failed { what, error } => {
                RadioCounters::count(&self.io.counters.timeouts);
                tracing::warn!(radio = %self.io.radio, what, error, "downlink refused by the packet forwarder")
            }
            TxOutcome::Unknown => {
                tracing::debug!(radio = %self.io.radio, token, "TX_ACK for no downlink of ours")
            }
        }
    }

    fn event(&self, dev_eui: Eui64, kind: DeviceEventKind, rx: Option<&RxPk>) -> DeviceEvent {
        DeviceEvent {
            radio: self.io.radio.clone(),
            protocol: self.io.protocol,
            native_address: dev_eui.to_string(),
            received_at: SystemTime::now(),
            kind,
            link: rx.map(|r| LinkMetrics {
                rssi_dbm: Some(f64::from(r.rssi)),
                lqi: None,
                snr_db: r.lsnr,
            }),
        }
    }

    async fn emit(&self, ev: DeviceEvent) -> Result<()> {
        self.io
            .events
            .send(ev)
            .await
            .map_err(|_| anyhow!("the hub stopped"))
    }

    async fn frame(&mut self, rx: &RxPk) -> Result<()> {
        if rx.stat == CrcStatus::Fail {
            RadioCounters::count(&self.io.counters.line_errors);
            return Ok(());
        }
        let phy = match PhyPayload::parse(&rx.data.0) {
            Ok(p) => p,
            Err(e) => {
                RadioCounters::count(&self.io.counters.undecodable);
                tracing::debug!(radio = %self.io.radio, error = %e, "undecodable LoRaWAN frame");
                return Ok(());
            }
        };
        let outcome = match phy {
            PhyPayload::JoinRequest(req) if !self.may_join(req.dev_eui) => {
                Err(Refusal::JoinWindowClosed {
                    dev_eui: req.dev_eui,
                })
            }
            PhyPayload::JoinRequest(req) => {
                let dl = DlSettings::from_byte(self.opts.region.rx2().dr & 0x0f);
                match self.sessions.join(&req, self.opts.net_id, dl) {
                    Ok(joined) => {
                        self.persist(joined.dev_eui).await?;
                        let phy = joined.accept.to_bytes();
                        let what = format!("join-accept for {}", joined.dev_eui);
                        self.downlink(rx, phy, true, what).await;
                        tracing::info!(radio = %self.io.radio, dev_eui = %joined.dev_eui, dev_addr = %joined.dev_addr, "OTAA join answered locally");
                        self.emit(self.event(joined.dev_eui, DeviceEventKind::Joined, Some(rx)))
                            .await?;
                        self.emit(self.event(joined.dev_eui, described("otaa"), None))
                            .await?;
                        Ok(())
                    }
                    Err(r) => Err(r),
                }
            }
            PhyPayload::Data(frame) if frame.direction() == Direction::Uplink => {
                match self.sessions.uplink(&frame) {
                    Ok(acc) => self.accepted(rx, acc).await,
                    Err(r) => Err(r),
                }
            }
            _ => {
                RadioCounters::count(&self.io.counters.unhandled);
                Ok(())
            }
        };
        if let Err(refusal) = outcome {
            self.refused(rx, refusal).await?;
        }
        Ok(())
    }

    /// Whether a Join-Request from `dev_eui` is answered: inside a join window, or from
    /// a device in session (one the hub admitted, joining again after a reset). A new
    /// device's join outside a window is refused before any Join-Accept goes out: an
    /// accepted join that the hub then denies leaves the device believing it joined,
    /// sending uplinks nobody takes until it gives up and joins again, hours later.
    /// A device without keys is left to [`Sessions::join`] (its refusal says why).
    fn may_join(&self, dev_eui: Eui64) -> bool {
        let Some(d) = self.sessions.get(dev_eui) else {
            return true;
        };
        d.otaa.is_none()
            || d.session.is_some()
            || self.join_until.is_some_and(|t| Instant::now() < t)
    }

    async fn refused(&mut self, rx: &RxPk, refusal: Refusal) -> Result<()> {
        match refusal.device() {
            None => {
                // Someone else's device: not ours to judge.
                RadioCounters::count(&self.io.counters.unhandled);
                tracing::debug!(radio = %self.io.radio, reason = %refusal, "frame from a device this gateway does not own");
                Ok(())
            }
            Some(dev_eui) => {
                let now = Instant::now();
                let held_back = match self.refusals.get_mut(&(dev_eui, refusal.code())) {
                    Some((last, held)) if now.duration_since(*last) < REFUSAL_EVERY => {
                        *held += 1;
                        RadioCounters::count(&self.io.counters.rate_limited);
                        tracing::debug!(radio = %self.io.radio, %dev_eui, reason = %refusal, "LoRaWAN frame refused again (counted, not recorded)");
                        return Ok(());
                    }
                    Some((_, held)) => std::mem::take(held),
                    None => 0,
                };
                if self.refusals.len() >= 4_096 {
                    self.refusals
                        .retain(|_, (last, _)| now.duration_since(*last) < REFUSAL_EVERY);
                }
                self.refusals.insert((dev_eui, refusal.code()), (now, 0));
                tracing::warn!(radio = %self.io.radio, %dev_eui, reason = %refusal, held_back, "LoRaWAN frame refused");
                // A join from a device whose keys went with its removal is a refused
                // join, for the hub to say why (decommissioned, blocked, no keys yet).
                let what = match refusal {
                    Refusal::NoKeys { .. } | Refusal::JoinWindowClosed { .. } => "device.join",
                    _ => "lorawan.frame",
                };
                let detail = if held_back > 0 {
                    format!("{refusal} (and {held_back} more refused since the last one recorded)")
                } else {
                    refusal.to_string()
                };
                let kind = DeviceEventKind::Refused {
                    what: what.into(),
                    reason: refusal.code().into(),
                    detail,
                };
                self.emit(self.event(dev_eui, kind, Some(rx))).await
            }
        }
    }

    async fn accepted(&mut self, rx: &RxPk, acc: sessions::Accepted) -> Result<(), Refusal> {
        // Before anything is made of the frame: its counter rides the commit that
        // records its reading (or an earlier one, e.g. an ACK's counter below).
        self.persist_with_next_commit(acc.dev_eui);
        let mac = acc.msg.mac_commands().unwrap_or_default();
        let decoder = self
            .sessions
            .get(acc.dev_eui)
            .and_then(|d| d.decoder)
            .unwrap_or(self.opts.decoder);
        let (readings, undecodable) = readings::readings(&acc.msg, decoder, &mac);
        if undecodable {
            RadioCounters::count(&self.io.counters.undecodable);
        }
        if acc.lost > 0 {
            tracing::info!(radio = %self.io.radio, dev_eui = %acc.dev_eui, lost = acc.lost, "uplinks lost before this one");
        }
        // RSSI and SNR go in the event's link metrics; the hub adds them as readings once.
        // Answers: an ACK for a confirmed uplink, LinkCheckAns for LinkCheckReq.
        let mut answers = Vec::new();
        if mac.contains(&MacCommand::LinkCheckReq) {
            answers.push(MacCommand::LinkCheckAns {
                margin: link_margin(rx),
                gw_cnt: 1,
            });
        }
        if acc.msg.confirmed || !answers.is_empty() {
            self.answer(rx, acc.dev_eui, acc.msg.confirmed, &answers)
                .await;
        }
        let readings = readings
            .into_iter()
            .flat_map(crate::model::vocabulary::normalize)
            .collect();
        let ev = self.event(acc.dev_eui, DeviceEventKind::Readings(readings), Some(rx));
        if self.emit(ev).await.is_err() {
            tracing::warn!(radio = %self.io.radio, "hub gone: reading not delivered");
        }
        // An ABP device has no join: its first frame is where the gateway meets it.
        let abp = self
            .sessions
            .get(acc.dev_eui)
            .is_some_and(|d| d.otaa.is_none());
        if acc.first && abp {
            let _ = self
                .emit(self.event(acc.dev_eui, described("abp"), None))
                .await;
        }
        Ok(())
    }

    /// A class A downlink in RX1 (ACK and/or MAC answers in FOpts).
    async fn answer(&mut self, rx: &RxPk, dev_eui: Eui64, ack: bool, mac: &[MacCommand]) {
        let Some((dev_addr, keys, fcnt)) = self.sessions.next_fcnt_down(dev_eui) else {
            return;
        };
        if let Err(e) = self.persist(dev_eui).await {
            tracing::warn!(radio = %self.io.radio, error = %e, "downlink counter not stored: no downlink");
            return;
        }
        let fopts = encode_commands(Direction::Downlink, mac).unwrap_or_default();
        let msg = DataMessage {
            direction: Direction::Downlink,
            confirmed: false,
            dev_addr,
            fctrl: FCtrl {
                ack,
                ..FCtrl::default()
            },
            fcnt,
            fopts,
            fport: None,
            payload: Vec::new(),
        };
        match DataFrame::seal(&msg, &keys).and_then(|f| f.to_bytes()) {
            Ok(phy) => {
                let what = format!("downlink for {dev_eui} (ack: {ack})");
                self.downlink(rx, phy, false, what).await
            }
            Err(e) => tracing::warn!(radio = %self.io.radio, error = %e, "downlink not built"),
        }
    }

    /// Sends `phy` in RX1 after `rx` (5 s for a Join-Accept, 1 s for data), with RX2 as
    /// the fallback.
    async fn downlink(&mut self, rx: &RxPk, phy: Vec<u8>, join: bool, what: String) {
        match rx_windows(self.opts.region, rx, join, self.opts.tx_power, phy) {
            Ok((rx1, rx2)) => {
                if let Err(e) = self.link.send(rx1, Some(rx2), what.clone()).await {
                    RadioCounters::count(&self.io.counters.timeouts);
                    tracing::warn!(radio = %self.io.radio, what, error = %e, "downlink not sent");
                }
            }
            Err(e) => {
                tracing::warn!(radio = %self.io.radio, what, error = %e, "no receive window for this uplink")
            }
        }
    }

    async fn command(&mut self, cmd: RadioCommand) {
        match cmd {
            RadioCommand::ProvisionCredential {
                native_address,
                credential,
                reply,
            } => {
                let r = match eui_of(&native_address) {
                    None => Err(RadioError::Invalid(format!(
                        "`{native_address}` is not a DevEUI (16 hex digits)"
                    ))),
                    Some(eui) => {
                        // New keys, a new standing: its next refusal is recorded again.
                        self.refusals.retain(|(e, _), _| *e != eui);
                        self.take(eui, credential.kind.as_str(), &credential.secret)
                            .map_err(RadioError::Invalid)
                    }
                };
                let _ = reply.send(r);
            }
            RadioCommand::Remove { native_address } => {
                let Some(eui) = eui_of(&native_address) else {
                    return;
                };
                // The session goes; the DevNonces stay on record, so an old Join-Request
                // cannot be replayed after a re-admission.
                let still_provisioned = match &self.io.secrets {
                    Some(sink) => {
                        let o = owner(eui);
                        sink.writer
                            .write(move |c| {
                                Ok(credentials::exists(
                                    c,
                                    &o,
                                    CredentialKind::LorawanOtaa.as_str(),
                                )? || credentials::exists(
                                    c,
                                    &o,
                                    CredentialKind::LorawanAbp.as_str(),
                                )?)
                            })
                            .await
                            .unwrap_or(false)
                    }
                    None => false,
                };
                self.sessions.end_session(eui);
                let _ = self.persist(eui).await;
                if !still_provisioned {
                    self.sessions.revoke(eui);
                }
                tracing::info!(radio = %self.io.radio, device = %native_address, "LoRaWAN session destroyed");
            }
            // A class A device is reached only right after its uplink: a read is held by the
            // hub until it next speaks and answered with the state that uplink left.
            RadioCommand::Read {
                command_id,
                native_address,
            } => {
                let detail = "read from its latest uplink";
                self.io
                    .answer(native_address, command_id, true, detail)
                    .await;
            }
            RadioCommand::Set {
                command_id,
                native_address,
                ..
            } => {
                let detail = "LoRaWAN devices take no set commands here";
                self.io
                    .answer(native_address, command_id, false, detail)
                    .await;
            }
            RadioCommand::Backup { reply } => {
                let _ = reply.send(Err(RadioError::NotSupported("backup".into())));
            }
            RadioCommand::Restore { reply, .. } => {
                let _ = reply.send(Err(RadioError::NotSupported("restore".into())));
            }
            RadioCommand::RotateNetworkKey { reply } => {
                let _ = reply.send(Err(RadioError::NotSupported(
                    "network key rotation (LoRaWAN keys are per device: provision new ones)".into(),
                )));
            }
            RadioCommand::Bridged { topic, payload } => self.bridge_command(&topic, &payload).await,
            // A new device's Join-Request is answered only while the window is open
            // (see `may_join`); the hub still decides on every join.
            RadioCommand::PermitJoin { seconds, reply } => {
                *self.join_until =
                    (seconds > 0).then(|| Instant::now() + Duration::from_secs(u64::from(seconds)));
                let _ = reply.send(Ok(()));
            }
            RadioCommand::Policy(_) | RadioCommand::Readmitted { .. } => {}
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(86_400)
}

/// What the gateway knows of a LoRaWAN device without asking it (LoRaWAN has no
/// interview): how it was activated, and that it hears only after its own uplinks.
fn described(activation: &str) -> DeviceEventKind {
    DeviceEventKind::Interviewed(DeviceInfo {
        capabilities: vec![format!("lorawan_{activation}")],
        reachability: Some(Reachability::AfterUplink),
        silence: None,
        ..DeviceInfo::default()
    })
}

/// Demodulation floor per spreading factor (dB, SX127x/SX130x datasheets, as used by
/// network servers for LinkCheckAns margins).
fn link_margin(rx: &RxPk) -> u8 {
    let floor = match rx.datr {
        fieldgate_lora::gwmp::DataRate::Lora { sf, .. } => -20.0 + 2.5 * (12.0 - f64::from(sf)),
        fieldgate_lora::gwmp::DataRate::Fsk(_) => 0.0,
    };
    (rx.lsnr.unwrap_or(0.0) - floor).clamp(0.0, 254.0) as u8
}

/// The RX1 and RX2 transmissions of `phy` answering `rx`.
fn rx_windows(
    region: Region,
    rx: &RxPk,
    join: bool,
    power: u8,
    phy: Vec<u8>,
) -> Result<(TxPk, TxPk), String> {
    let (d1, d2) = if join {
        (region.join_accept_delay1(), region.join_accept_delay2())
    } else {
        (region.receive_delay1(), region.receive_delay2())
    };
    let dr = region
        .dr_for(rx.datr.modulation(), true)
        .ok_or_else(|| format!("{} is not an uplink rate of {}", rx.datr, region.name()))?;
    let rx1 = region.rx1(rx.freq_hz(), dr, 0).map_err(|e| e.to_string())?;
    let rx2 = region.rx2();
    let tx = |w: fieldgate_lora::region::RxWindow, delay: std::time::Duration| {
        let Some(Modulation::Lora { sf, bw_khz }) = region.data_rate(w.dr).map(|d| d.modulation)
        else {
            return Err(format!("DR{} of {} is not LoRa", w.dr, region.name()));
        };
        let at = rx.tmst.wrapping_add(delay.as_micros() as u32);
        Ok(TxPk::lorawan_downlink(
            at,
            w.freq_hz,
            sf,
            bw_khz,
            power,
            phy.clone(),
        ))
    };
    Ok((tx(rx1, d1)?, tx(rx2, d2)?))
}

#[cfg(test)]
mod tests;
