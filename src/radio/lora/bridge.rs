//! The ChirpStack bridge of a GWMP radio: what the packet forwarder hears goes upstream as
//! the ChirpStack gateway events, and ChirpStack's downlink commands go to the forwarder.
//!
//! The messages are those of the ChirpStack MQTT forwarder (and gateway bridge), v4, in
//! their JSON encoding: the protobuf JSON mapping of `api/proto/gw/gw.proto`
//! (`UplinkFrame`, `GatewayStats`, `DownlinkFrame`, `DownlinkTxAck`; lowerCamelCase
//! names, bytes in base64, enums by name, durations as `"1s"`), on
//! `<topic_prefix>/gateway/<gateway_id>/event/{up,stats,ack}` and
//! `.../command/down`. The class A timing context is the Semtech UDP backend's: the
//! uplink's 32-bit `tmst`, big-endian, to which a downlink's delay is added.
//!
//! Events are queued in the outbox (kind `bridge`, published as they are, on their own
//! topic), so a broker outage loses none. Commands arrive through the upstream task
//! ([`BridgeRoute`]) as [`RadioCommand::Bridged`]; the broker keeps those sent while the
//! gateway is away (a persistent MQTT session) and hands them over late, so an item
//! whose transmit time has already passed is answered `TOO_LATE` here instead of being
//! sent blind. This module owns the formats, the concentrator clock as last heard and
//! the downlinks waiting for their TX_ACK; the forwarder's socket stays with `gwmp.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fieldgate_lora::gwmp::{
    hz_to_mhz, CrcStatus, DataRate, Modulation, Payload, RxPk, Stat, TxAck, TxAckError, TxPk,
};
use fieldgate_lora::Eui64;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::gwmp::ForwarderLink;
use super::options::{BridgeMode, BridgeOptions, LoraOptions};
use crate::config::{Protocol, RadioConfig};
use crate::model::RadioCommand;
use crate::radio::{RadioCounters, RadioHandle, SecretSink};
use crate::store::outbox;

/// Bridged downlinks with no TX_ACK after this long are forgotten.
const TX_ACK_WAIT: Duration = Duration::from_secs(30);

/// The least lead a timed downlink needs to be scheduled: the Semtech packet forwarder
/// programs a packet 30 ms ahead (`TX_JIT_DELAY` in its `jitqueue.c`) and refuses it
/// `TOO_LATE` with less.
const TX_LEAD: Duration = Duration::from_millis(30);

/// Uplink timestamps remembered, so a class A downlink's context is matched to the
/// moment its uplink was heard.
const HEARD_KEPT: usize = 1024;

/// Commands held until the packet forwarder's first PULL_DATA (after a restart the broker
/// may hand over queued commands before the forwarder has been heard), and for how long.
const PARKED_MAX: usize = 32;
const PARKED_WAIT: Duration = Duration::from_secs(30);

/// Downlink ids remembered, so a command the broker delivers twice (a persistent
/// session resumed before its PUBACK went out) is sent once.
const IDS_KEPT: usize = 64;

/// Seconds from the Unix epoch to the GPS epoch (1980-01-06), and the leap seconds GPS
/// time is ahead of UTC (18 since 2017).
const GPS_EPOCH_UNIX_S: u64 = 315_964_800;
const GPS_LEAP_S: u64 = 18;

/// A downlink command being tried item by item until one is scheduled.
struct Pending {
    downlink_id: u32,
    gateway_id: Eui64,
    items: Vec<DownlinkItem>,
    /// One `TxAckStatus` name per item; `IGNORED` for those not tried.
    statuses: Vec<&'static str>,
    /// The item whose TX_ACK is awaited.
    at: usize,
    sent_at: Instant,
}

/// What the bridge did with a downlink command or a TX_ACK, for the driver's counters.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// Sent to the forwarder, or settled and acknowledged upstream.
    Done,
    /// Not for this gateway (another gateway id): ignored.
    NotOurs,
    /// Not a command that parses; nothing sent, nothing acknowledged.
    Malformed(String),
    /// A downlink id handled moments ago, delivered again: not sent twice.
    Duplicate,
}

pub struct Bridge {
    opts: BridgeOptions,
    sink: Option<Arc<SecretSink>>,
    counters: Arc<RadioCounters>,
    /// The packet forwarder's gateway EUI, from its last datagram.
    forwarder: Option<Eui64>,
    pending: HashMap<u16, Pending>,
    /// The concentrator's clock: uplink timestamps and when each was heard, newest last.
    heard: VecDeque<(u32, Instant)>,
    /// The last downlink ids handled, newest last.
    recent_ids: VecDeque<u32>,
    /// Commands waiting for the forwarder's first PULL_DATA, oldest first.
    parked: VecDeque<Pending>,
}

impl Bridge {
    pub fn new(
        opts: BridgeOptions,
        sink: Option<Arc<SecretSink>>,
        counters: Arc<RadioCounters>,
    ) -> Bridge {
        Bridge {
            opts,
            sink,
            counters,
            forwarder: None,
            pending: HashMap::new(),
            heard: VecDeque::new(),
            recent_ids: VecDeque::new(),
            parked: VecDeque::new(),
        }
    }

    pub fn mode(&self) -> BridgeMode {
        self.opts.mode
    }

    /// Frames go to the gateway's own sessions too (not in `only` mode).
    pub fn local(&self) -> bool {
        self.opts.mode != BridgeMode::Only
    }

    /// Notes the forwarder's EUI (the gateway id when none is configured).
    pub fn heard_forwarder(&mut self, eui: Eui64) {
        self.forwarder = Some(eui);
    }

    fn gateway_id(&self, heard_from: Option<Eui64>) -> Option<Eui64> {
        self.opts.gateway_id.or(heard_from).or(self.forwarder)
    }

    fn topic(&self, gateway: Eui64, event: &str) -> String {
        format!("{}/gateway/{gateway}/event/{event}", self.opts.topic_prefix)
    }

    /// Commits `payload` for `topic` to the outbox.
    async fn queue(&self, topic: String, payload: Value) -> Result<(), String> {
        let Some(sink) = &self.sink else {
            return Err("no store to queue bridged frames in".into());
        };
        let bytes = payload.to_string().into_bytes();
        sink.writer
            .write(move |c| outbox::append_bridged(c, &topic, &bytes).map(|_| ()))
            .await
            .map_err(|e| format!("queueing a bridged message: {e}"))
    }

    /// Queues `rx` as an `UplinkFrame` on `event/up`. Frames with a bad CRC are not
    /// bridged (the forwarder's own default). Every frame sets the concentrator clock.
    pub async fn uplink(&mut self, rx: &RxPk, from: Eui64) -> Result<bool, String> {
        self.heard_at(rx.tmst, Instant::now());
        if rx.stat == CrcStatus::Fail {
            return Ok(false);
        }
        let Some(gw) = self.gateway_id(Some(from)) else {
            return Ok(false);
        };
        self.queue(self.topic(gw, "up"), uplink_frame(rx, gw, rand::random()))
            .await?;
        Ok(true)
    }

    /// Queues the forwarder's `stat` as `GatewayStats` on `event/stats`.
    pub async fn stats(&self, stat: &Stat, from: Eui64) -> Result<(), String> {
        let Some(gw) = self.gateway_id(Some(from)) else {
            return Ok(());
        };
        self.queue(self.topic(gw, "stats"), gateway_stats(stat, gw))
            .await
    }

    /// A `DownlinkFrame` from `command/down`: its first item that converts is sent as a
    /// PULL_RESP; the others wait for the TX_ACK (the next one is tried on refusal).
    pub async fn command(
        &mut self,
        topic: &str,
        payload: &[u8],
        link: &mut ForwarderLink,
    ) -> Handled {
        let frame: DownlinkFrame = match serde_json::from_slice(payload) {
            Ok(f) => f,
            Err(e) => return Handled::Malformed(format!("not a DownlinkFrame: {e}")),
        };
        let named = if frame.gateway_id.is_empty() {
            topic_gateway(topic).unwrap_or("")
        } else {
            frame.gateway_id.as_str()
        };
        let Ok(named) = named.parse::<Eui64>() else {
            return Handled::NotOurs;
        };
        // With no configured id and no forwarder heard yet (just started), whose the
        // command is is known once the forwarder's PULL_DATA names it: it waits for that.
        let ours = self.gateway_id(None);
        if ours.is_some_and(|ours| ours != named) {
            return Handled::NotOurs;
        }
        if frame.items.is_empty() {
            return Handled::Malformed("a DownlinkFrame with no items".into());
        }
        if frame.downlink_id != 0 && self.recent_ids.contains(&frame.downlink_id) {
            return Handled::Duplicate;
        }
        if self.recent_ids.len() == IDS_KEPT {
            self.recent_ids.pop_front();
        }
        self.recent_ids.push_back(frame.downlink_id);
        let n = frame.items.len();
        let p = Pending {
            downlink_id: frame.downlink_id,
            gateway_id: named,
            items: frame.items,
            statuses: vec!["IGNORED"; n],
            at: 0,
            sent_at: Instant::now(),
        };
        if ours.is_none() || !link.has_downlink_path() {
            self.park(p).await;
            return Handled::Done;
        }
        self.try_from(p, 0, link).await;
        Handled::Done
    }

    /// Holds `p` until the forwarder's first PULL_DATA. What waited too long, or does not
    /// fit, is acknowledged as not sent (`INTERNAL_ERROR`).
    async fn park(&mut self, p: Pending) {
        let now = Instant::now();
        while let Some(old) = self.parked.front() {
            if now - old.sent_at < PARKED_WAIT && self.parked.len() < PARKED_MAX {
                break;
            }
            if let Some(mut old) = self.parked.pop_front() {
                tracing::warn!(
                    downlink_id = old.downlink_id,
                    "bridged downlink not sent: no PULL_DATA from a packet forwarder"
                );
                old.statuses.iter_mut().for_each(|s| *s = "INTERNAL_ERROR");
                self.acknowledge(&old).await;
            }
        }
        tracing::debug!(
            downlink_id = p.downlink_id,
            "bridged downlink held until the packet forwarder's PULL_DATA"
        );
        self.parked.push_back(p);
    }

    /// The forwarder's PULL_DATA: notes its EUI and sends what was held for it (each item
    /// checked for lateness as it goes).
    pub async fn pull_data(&mut self, eui: Eui64, link: &mut ForwarderLink) {
        self.heard_forwarder(eui);
        while let Some(p) = self.parked.pop_front() {
            if self.gateway_id(None) != Some(p.gateway_id) {
                tracing::debug!(
                    downlink_id = p.downlink_id,
                    "held downlink command for another gateway ignored"
                );
                RadioCounters::count(&self.counters.unhandled);
                continue;
            }
            self.try_from(p, 0, link).await;
        }
    }

    /// Sends item `from` of `p` or the first one after it that converts and sends; when
    /// none is left, acknowledges upstream.
    async fn try_from(&mut self, mut p: Pending, from: usize, link: &mut ForwarderLink) {
        for i in from..p.items.len() {
            let tx = match txpk(&p.items[i]) {
                Ok(tx) => tx,
                Err(e) => {
                    tracing::warn!(downlink_id = p.downlink_id, item = i, error = %e, "bridged downlink item not sent");
                    p.statuses[i] = "INTERNAL_ERROR";
                    continue;
                }
            };
            let context = p.items[i].tx_info.as_ref().and_then(context_tmst);
            if let Some(late) = self.late_by(&tx, context, Instant::now(), SystemTime::now()) {
                tracing::info!(
                    downlink_id = p.downlink_id,
                    item = i,
                    late_ms = late.as_millis() as u64,
                    "bridged downlink item past its transmit time: not sent"
                );
                RadioCounters::count(&self.counters.bridge_too_late);
                p.statuses[i] = "TOO_LATE";
                continue;
            }
            let what = format!("bridged downlink {} item {i}", p.downlink_id);
            let sent = link.send(tx, None, what).await;
            match sent {
                Ok(token) => {
                    p.at = i;
                    p.sent_at = Instant::now();
                    let now = p.sent_at;
                    self.pending.retain(|_, q| now - q.sent_at < TX_ACK_WAIT);
                    self.pending.insert(token, p);
                    return;
                }
                Err(e) => {
                    tracing::warn!(downlink_id = p.downlink_id, item = i, error = %e, "bridged downlink item not sent");
                    p.statuses[i] = "INTERNAL_ERROR";
                }
            }
        }
        self.acknowledge(&p).await;
    }

    /// Notes that an uplink stamped `tmst` by the concentrator was heard at `at`.
    fn heard_at(&mut self, tmst: u32, at: Instant) {
        if self.heard.len() == HEARD_KEPT {
            self.heard.pop_front();
        }
        self.heard.push_back((tmst, at));
    }

    /// How far past its transmit time (less the lead the forwarder needs) `tx` is, or
    /// `None` when it is not late or that cannot be told. A class A item (`tmst`) is timed
    /// from the uplink its `context` names when that uplink was heard here, else from the
    /// concentrator clock as last heard (up to half its 71-minute wrap); a GPS-timed one
    /// (`tmms`) from the system clock. An `immediately` item is never late.
    fn late_by(
        &self,
        tx: &TxPk,
        context: Option<u32>,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Duration> {
        if tx.imme {
            return None;
        }
        if let Some(at) = tx.tmst {
            let known = context.and_then(|c| {
                let (_, heard) = self.heard.iter().rev().find(|(t, _)| *t == c)?;
                let delay = Duration::from_micros(u64::from(at.wrapping_sub(c)));
                Some(*heard + delay)
            });
            let due = match known {
                Some(due) => due,
                None => {
                    let &(t, heard) = self.heard.back()?;
                    let ahead = at.wrapping_sub(t) as i32;
                    if now.duration_since(heard) > Duration::from_secs(30 * 60) {
                        return None;
                    }
                    if ahead >= 0 {
                        heard + Duration::from_micros(ahead as u64)
                    } else {
                        let behind = Duration::from_micros(u64::from(ahead.unsigned_abs()));
                        heard.checked_sub(behind)?
                    }
                }
            };
            let need = now + TX_LEAD;
            return (due < need).then(|| need - due);
        }
        if let Some(tmms) = tx.tmms {
            let unix = wall.duration_since(SystemTime::UNIX_EPOCH).ok()?;
            let gps_now = unix.checked_sub(Duration::from_secs(GPS_EPOCH_UNIX_S))?
                + Duration::from_secs(GPS_LEAP_S);
            let due = Duration::from_millis(tmms);
            let need = gps_now + TX_LEAD;
            return (due < need).then(|| need - due);
        }
        None
    }

    async fn acknowledge(&self, p: &Pending) {
        let topic = self.topic(p.gateway_id, "ack");
        if let Err(e) = self.queue(topic, tx_ack(p)).await {
            tracing::warn!(downlink_id = p.downlink_id, error = %e, "bridged TX acknowledgement lost");
        }
    }

    /// Settles a bridged downlink's TX_ACK: acknowledged upstream once an item is
    /// scheduled or none is left. `false`: the token is not a bridged downlink's.
    pub async fn tx_ack(
        &mut self,
        token: u16,
        ack: Option<&TxAck>,
        link: &mut ForwarderLink,
    ) -> bool {
        let Some(mut p) = self.pending.remove(&token) else {
            return false;
        };
        let status = tx_ack_status(ack.and_then(|a| a.txpk_ack.error));
        p.statuses[p.at] = status;
        if status == "OK" {
            self.acknowledge(&p).await;
        } else {
            let next = p.at + 1;
            self.try_from(p, next, link).await;
        }
        true
    }
}

/// The uplink timestamp a class A item's `context` carries (its first 4 bytes).
fn context_tmst(ti: &DownlinkTxInfo) -> Option<u32> {
    let b = ti.context.as_ref()?.0.get(..4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The gateway id level of a `.../gateway/<id>/command/down` topic.
fn topic_gateway(topic: &str) -> Option<&str> {
    let rest = topic.strip_suffix("/command/down")?;
    let (_, id) = rest.rsplit_once("/gateway/")?;
    Some(id)
}

/// `CodeRate` of gw.proto by the GWMP `codr` string.
fn code_rate(codr: Option<&str>) -> &'static str {
    match codr {
        Some("4/5") => "CR_4_5",
        Some("4/6") | Some("2/3") => "CR_4_6",
        Some("4/7") => "CR_4_7",
        Some("4/8") | Some("1/2") => "CR_4_8",
        _ => "CR_UNDEFINED",
    }
}

fn codr_of(code_rate: &Value) -> Option<String> {
    let s = match code_rate {
        Value::String(s) => s.as_str(),
        Value::Number(n) => match n.as_u64() {
            Some(1) => "CR_4_5",
            Some(2) => "CR_4_6",
            Some(3) => "CR_4_7",
            Some(4) => "CR_4_8",
            _ => return None,
        },
        _ => return None,
    };
    let r = match s {
        "CR_4_5" => "4/5",
        "CR_4_6" => "4/6",
        "CR_4_7" => "4/7",
        "CR_4_8" => "4/8",
        _ => return None,
    };
    Some(r.into())
}

fn base64(bytes: &[u8]) -> Value {
    serde_json::to_value(Payload(bytes.to_vec())).unwrap_or(Value::Null)
}

/// `gw.UplinkFrame` (JSON) for a frame heard by gateway `gw`.
pub fn uplink_frame(rx: &RxPk, gw: Eui64, uplink_id: u32) -> Value {
    let modulation = match (rx.modu, rx.datr) {
        (Modulation::Lora, DataRate::Lora { sf, bw_khz }) => json!({"lora": {
            "bandwidth": u32::from(bw_khz) * 1000,
            "spreadingFactor": sf,
            "codeRate": code_rate(rx.codr.as_deref()),
        }}),
        (_, DataRate::Fsk(bps)) => json!({"fsk": {"datarate": bps}}),
        (Modulation::Fsk, DataRate::Lora { .. }) => json!({}),
    };
    let mut rx_info = json!({
        "gatewayId": gw.to_string(),
        "uplinkId": uplink_id,
        "rssi": rx.rssi,
        "channel": rx.chan,
        "rfChain": rx.rfch,
        "context": base64(&rx.tmst.to_be_bytes()),
        "crcStatus": match rx.stat {
            CrcStatus::Ok => "CRC_OK",
            CrcStatus::NoCrc => "NO_CRC",
            CrcStatus::Fail => "BAD_CRC",
        },
    });
    if let Some(snr) = rx.lsnr {
        rx_info["snr"] = json!(snr);
    }
    if let Some(t) = &rx.time {
        rx_info["gwTime"] = json!(t);
    }
    json!({
        "phyPayload": base64(&rx.data.0),
        "txInfo": {"frequency": rx.freq_hz(), "modulation": modulation},
        "rxInfo": rx_info,
    })
}

/// `gw.GatewayStats` (JSON) from a GWMP `stat`.
pub fn gateway_stats(stat: &Stat, gw: Eui64) -> Value {
    let mut v = json!({
        "gatewayId": gw.to_string(),
        "time": crate::model::now_rfc3339(),
        "rxPacketsReceived": stat.rxnb.unwrap_or(0),
        "rxPacketsReceivedOk": stat.rxok.unwrap_or(0),
        "txPacketsReceived": stat.dwnb.unwrap_or(0),
        "txPacketsEmitted": stat.txnb.unwrap_or(0),
    });
    if let (Some(lat), Some(lon)) = (stat.lati, stat.long) {
        v["location"] = json!({
            "latitude": lat,
            "longitude": lon,
            "altitude": stat.alti.unwrap_or(0),
        });
    }
    v
}

/// `gw.TxAckStatus` by name, from a TX_ACK's error (`None`: no error).
fn tx_ack_status(error: Option<TxAckError>) -> &'static str {
    match error {
        None | Some(TxAckError::None) => "OK",
        Some(TxAckError::TooLate) => "TOO_LATE",
        Some(TxAckError::TooEarly) => "TOO_EARLY",
        Some(TxAckError::CollisionPacket) => "COLLISION_PACKET",
        Some(TxAckError::CollisionBeacon) => "COLLISION_BEACON",
        Some(TxAckError::TxFreq) => "TX_FREQ",
        Some(TxAckError::TxPower) => "TX_POWER",
        Some(TxAckError::GpsUnlocked) => "GPS_UNLOCKED",
        Some(TxAckError::Unknown) => "INTERNAL_ERROR",
    }
}

/// `gw.DownlinkTxAck` (JSON).
fn tx_ack(p: &Pending) -> Value {
    json!({
        "gatewayId": p.gateway_id.to_string(),
        "downlinkId": p.downlink_id,
        "items": p.statuses.iter().map(|s| json!({"status": s})).collect::<Vec<_>>(),
    })
}

// ------------------------------------------------------------------ DownlinkFrame

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DownlinkFrame {
    #[serde(default)]
    downlink_id: u32,
    #[serde(default)]
    gateway_id: String,
    #[serde(default)]
    items: Vec<DownlinkItem>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DownlinkItem {
    phy_payload: Payload,
    tx_info: Option<DownlinkTxInfo>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DownlinkTxInfo {
    #[serde(default)]
    frequency: u32,
    #[serde(default)]
    power: i32,
    modulation: Option<ModulationIn>,
    timing: Option<TimingIn>,
    context: Option<Payload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModulationIn {
    lora: Option<LoraIn>,
    fsk: Option<FskIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoraIn {
    #[serde(default)]
    bandwidth: u32,
    #[serde(default)]
    spreading_factor: u32,
    #[serde(default)]
    code_rate: Value,
    #[serde(default)]
    polarization_inversion: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FskIn {
    #[serde(default)]
    frequency_deviation: u32,
    #[serde(default)]
    datarate: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimingIn {
    immediately: Option<Value>,
    delay: Option<DelayIn>,
    gps_epoch: Option<GpsEpochIn>,
}

#[derive(Debug, Deserialize)]
struct DelayIn {
    delay: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GpsEpochIn {
    time_since_gps_epoch: Option<String>,
}

/// A protobuf JSON `Duration` (`"1s"`, `"0.500s"`) in microseconds.
fn duration_us(s: &str) -> Option<u64> {
    let n = s.strip_suffix('s')?;
    let (secs, frac) = n.split_once('.').unwrap_or((n, ""));
    if secs.is_empty()
        || frac.len() > 9
        || !(secs.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let mut micros = 0u64;
    for (i, d) in frac.bytes().take(6).enumerate() {
        micros += u64::from(d - b'0') * 10u64.pow(5 - i as u32);
    }
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// The PULL_RESP `txpk` for one `DownlinkFrameItem`.
fn txpk(item: &DownlinkItem) -> Result<TxPk, String> {
    let ti = item.tx_info.as_ref().ok_or("the item has no txInfo")?;
    if ti.frequency == 0 {
        return Err("txInfo.frequency is missing".into());
    }
    let powe = u8::try_from(ti.power).map_err(|_| format!("txInfo.power {} dBm", ti.power))?;
    let m = ti
        .modulation
        .as_ref()
        .ok_or("txInfo.modulation is missing")?;
    let (modu, datr, codr, ipol, fdev) = match (&m.lora, &m.fsk) {
        (Some(l), _) => {
            let sf = u8::try_from(l.spreading_factor)
                .ok()
                .filter(|sf| (5..=12).contains(sf));
            let bw = u16::try_from(l.bandwidth / 1000)
                .ok()
                .filter(|bw| l.bandwidth % 1000 == 0 && matches!(bw, 125 | 250 | 500));
            let (Some(sf), Some(bw_khz)) = (sf, bw) else {
                return Err(format!(
                    "LoRa SF{} at {} Hz is not SF5..12 at 125/250/500 kHz",
                    l.spreading_factor, l.bandwidth
                ));
            };
            let codr = codr_of(&l.code_rate).unwrap_or_else(|| "4/5".into());
            (
                Modulation::Lora,
                DataRate::Lora { sf, bw_khz },
                Some(codr),
                Some(l.polarization_inversion),
                None,
            )
        }
        (None, Some(f)) if f.datarate > 0 => (
            Modulation::Fsk,
            DataRate::Fsk(f.datarate),
            None,
            None,
            Some(f.frequency_deviation),
        ),
        _ => return Err("txInfo.modulation is neither lora nor fsk".into()),
    };
    let t = ti.timing.as_ref().ok_or("txInfo.timing is missing")?;
    let (imme, tmst, tmms) = if let Some(d) = &t.delay {
        let delay = d
            .delay
            .as_deref()
            .map_or(Some(0), duration_us)
            .ok_or("timing.delay.delay is not a duration")?;
        let ctx = ti.context.as_ref().map(|c| c.0.as_slice()).unwrap_or(&[]);
        let Some(b) = ctx.get(..4) else {
            return Err(format!(
                "context must hold the uplink's 4-byte timestamp, got {} bytes",
                ctx.len()
            ));
        };
        let at = u32::from_be_bytes([b[0], b[1], b[2], b[3]]).wrapping_add(delay as u32);
        (false, Some(at), None)
    } else if let Some(g) = &t.gps_epoch {
        let us = g
            .time_since_gps_epoch
            .as_deref()
            .and_then(duration_us)
            .ok_or("timing.gpsEpoch.timeSinceGpsEpoch is not a duration")?;
        (false, None, Some(us / 1000))
    } else if t.immediately.is_some() {
        (true, None, None)
    } else {
        return Err("timing is neither immediately, delay nor gpsEpoch".into());
    };
    let data = item.phy_payload.0.clone();
    let size = u16::try_from(data.len()).map_err(|_| "phyPayload too long".to_string())?;
    Ok(TxPk {
        imme,
        tmst,
        tmms,
        freq: hz_to_mhz(ti.frequency),
        rfch: 0,
        powe: Some(powe),
        modu,
        datr,
        codr,
        fdev,
        ipol,
        prea: None,
        size,
        data: Payload(data),
        ncrc: None,
    })
}

// ------------------------------------------------------------------ routes

/// Where the upstream task sends what arrives on a radio's `command/down` topic.
#[derive(Clone)]
pub struct BridgeRoute {
    pub radio: String,
    /// The subscription: `<topic_prefix>/gateway/<id or +>/command/down`.
    pub filter: String,
    prefix: String,
    gateway_id: Option<Eui64>,
    commands: mpsc::Sender<RadioCommand>,
}

impl std::fmt::Debug for BridgeRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BridgeRoute({} <- {})", self.radio, self.filter)
    }
}

impl BridgeRoute {
    /// Whether `topic` is this route's command topic.
    pub fn matches(&self, topic: &str) -> bool {
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix("/gateway/"))
            .and_then(|r| r.strip_suffix("/command/down"))
        else {
            return false;
        };
        match self.gateway_id {
            Some(id) => rest.parse::<Eui64>().ok() == Some(id),
            None => !rest.is_empty() && !rest.contains('/'),
        }
    }

    /// Hands a command to the radio without waiting; `Err` when its queue is full or it
    /// stopped (ChirpStack does not resend: the downlink is lost, and counted).
    pub fn deliver(&self, topic: &str, payload: &[u8]) -> Result<(), &'static str> {
        self.commands
            .try_send(RadioCommand::Bridged {
                topic: topic.to_string(),
                payload: payload.to_vec(),
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => "bridge_busy",
                mpsc::error::TrySendError::Closed(_) => "bridge_radio_stopped",
            })
    }
}

/// The command routes of the configured LoRa radios whose bridge is on.
pub fn routes(radios: &[RadioConfig], handles: &[RadioHandle]) -> Vec<BridgeRoute> {
    let mut out = Vec::new();
    for r in radios
        .iter()
        .filter(|r| r.enabled && r.protocol == Protocol::Lora)
    {
        let Ok(opts) = LoraOptions::parse(r.options.get_ref()) else {
            continue;
        };
        if opts.bridge.mode == BridgeMode::Off {
            continue;
        }
        let name = r.name.get_ref();
        let Some(commands) = handles
            .iter()
            .find(|h| &h.name == name)
            .and_then(|h| h.commands.clone())
        else {
            continue;
        };
        let id = opts
            .bridge
            .gateway_id
            .map_or_else(|| "+".to_string(), |g| g.to_string());
        out.push(BridgeRoute {
            radio: name.clone(),
            filter: format!("{}/gateway/{id}/command/down", opts.bridge.topic_prefix),
            prefix: opts.bridge.topic_prefix,
            gateway_id: opts.bridge.gateway_id,
            commands,
        });
    }
    out
}

#[cfg(test)]
#[path = "bridge_tests.rs"]
mod tests;
