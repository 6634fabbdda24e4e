//! GWMP v2: the Semtech UDP packet-forwarder protocol (`lora_pkt_fwd`, PROTOCOL.TXT), as
//! datagrams in and out. The network-server side (us) receives PUSH_DATA, PULL_DATA and
//! TX_ACK and sends PUSH_ACK, PULL_ACK and PULL_RESP; both directions are encoded here so
//! the emulator and the tests can play the gateway.
//!
//! Header: `version(1) = 2 | token(2) | identifier(1) | [gateway EUI(8, big-endian)] | [JSON]`.
//! The token is random, chosen by the sender and echoed by the acknowledgement; it is read
//! as a big-endian u16 (only equality matters). JSON bodies go through serde: unknown fields
//! are ignored (newer forwarders add `rsig`, `brd`, `jver`, ...), but a wrong type, a
//! missing required field, an unknown modulation or a `size` that does not match `data` is
//! refused. No sockets here: the driver owns the UDP socket and the timing.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::types::Eui64;

/// The protocol version this module speaks.
pub const PROTOCOL_VERSION: u8 = 2;

const PUSH_DATA: u8 = 0x00;
const PUSH_ACK: u8 = 0x01;
const PULL_DATA: u8 = 0x02;
const PULL_RESP: u8 = 0x03;
const PULL_ACK: u8 = 0x04;
const TX_ACK: u8 = 0x05;

/// Why a datagram is not a GWMP v2 packet.
#[derive(Debug, thiserror::Error)]
pub enum GwmpError {
    #[error("datagram of {got} bytes is shorter than the {need}-byte header")]
    Short { need: usize, got: usize },
    #[error("protocol version {0}, expected 2")]
    Version(u8),
    #[error("unknown packet identifier {0:#04x}")]
    Identifier(u8),
    #[error("{what} JSON: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {problem}")]
    Invalid { what: &'static str, problem: String },
}

/// One GWMP packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// Gateway -> server: received frames and/or gateway status.
    PushData {
        token: u16,
        gateway: Eui64,
        data: PushData,
    },
    /// Server -> gateway: PUSH_DATA received.
    PushAck { token: u16 },
    /// Gateway -> server: keep-alive that opens the downlink path.
    PullData { token: u16, gateway: Eui64 },
    /// Server -> gateway: PULL_DATA received.
    PullAck { token: u16 },
    /// Server -> gateway: a frame to transmit.
    PullResp { token: u16, data: PullResp },
    /// Gateway -> server: what became of a PULL_RESP (same token). `None`: no JSON, no error.
    TxAck {
        token: u16,
        gateway: Eui64,
        ack: Option<TxAck>,
    },
}

impl Packet {
    /// Parses one datagram.
    pub fn parse(datagram: &[u8]) -> Result<Packet, GwmpError> {
        if datagram.len() < 4 {
            return Err(GwmpError::Short {
                need: 4,
                got: datagram.len(),
            });
        }
        if datagram[0] != PROTOCOL_VERSION {
            return Err(GwmpError::Version(datagram[0]));
        }
        let token = u16::from_be_bytes([datagram[1], datagram[2]]);
        let gateway = || -> Result<Eui64, GwmpError> {
            let b = datagram.get(4..12).ok_or(GwmpError::Short {
                need: 12,
                got: datagram.len(),
            })?;
            let mut eui = [0u8; 8];
            eui.copy_from_slice(b);
            Ok(Eui64::from_be_bytes(eui))
        };
        // Some forwarders NUL-terminate the JSON; the terminator is not part of it.
        let body = |from: usize| trim_nul(datagram.get(from..).unwrap_or_default());
        Ok(match datagram[3] {
            PUSH_DATA => {
                let gateway = gateway()?;
                let data: PushData = json("PUSH_DATA", body(12))?;
                Packet::PushData {
                    token,
                    gateway,
                    data,
                }
            }
            PUSH_ACK => Packet::PushAck { token },
            PULL_DATA => Packet::PullData {
                token,
                gateway: gateway()?,
            },
            PULL_ACK => Packet::PullAck { token },
            PULL_RESP => {
                let data: PullResp = json("PULL_RESP", body(4))?;
                data.txpk.validate()?;
                Packet::PullResp { token, data }
            }
            TX_ACK => {
                let gateway = gateway()?;
                let rest = body(12);
                let ack = if rest.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    Some(json("TX_ACK", rest)?)
                };
                Packet::TxAck {
                    token,
                    gateway,
                    ack,
                }
            }
            other => return Err(GwmpError::Identifier(other)),
        })
    }

    /// The datagram.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![PROTOCOL_VERSION, 0, 0, 0];
        let (token, id) = match self {
            Packet::PushData { token, .. } => (token, PUSH_DATA),
            Packet::PushAck { token } => (token, PUSH_ACK),
            Packet::PullData { token, .. } => (token, PULL_DATA),
            Packet::PullAck { token } => (token, PULL_ACK),
            Packet::PullResp { token, .. } => (token, PULL_RESP),
            Packet::TxAck { token, .. } => (token, TX_ACK),
        };
        v[1..3].copy_from_slice(&token.to_be_bytes());
        v[3] = id;
        match self {
            Packet::PushData { gateway, data, .. } => {
                v.extend_from_slice(&gateway.0.to_be_bytes());
                write_json(&mut v, data);
            }
            Packet::PullData { gateway, .. } => v.extend_from_slice(&gateway.0.to_be_bytes()),
            Packet::PullResp { data, .. } => write_json(&mut v, data),
            Packet::TxAck { gateway, ack, .. } => {
                v.extend_from_slice(&gateway.0.to_be_bytes());
                if let Some(ack) = ack {
                    write_json(&mut v, ack);
                }
            }
            Packet::PushAck { .. } | Packet::PullAck { .. } => {}
        }
        v
    }

    /// The acknowledgement a server sends for this packet (PUSH_ACK / PULL_ACK), if any.
    pub fn ack(&self) -> Option<Packet> {
        match self {
            Packet::PushData { token, .. } => Some(Packet::PushAck { token: *token }),
            Packet::PullData { token, .. } => Some(Packet::PullAck { token: *token }),
            _ => None,
        }
    }
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    &b[..end]
}

fn json<T: for<'de> Deserialize<'de>>(what: &'static str, b: &[u8]) -> Result<T, GwmpError> {
    // The body is a JSON object (PROTOCOL.TXT: "starting with {"); serde would also map an
    // array onto a struct, so that is refused here.
    if b.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{') {
        return Err(GwmpError::Invalid {
            what,
            problem: "body is not a JSON object".into(),
        });
    }
    serde_json::from_slice(b).map_err(|source| GwmpError::Json { what, source })
}

fn write_json<T: Serialize>(v: &mut Vec<u8>, value: &T) {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no
    // fallible Serialize impls (non-finite floats become null).
    if let Err(e) = serde_json::to_writer(&mut *v, value) {
        debug_assert!(false, "GWMP JSON serialization failed: {e}");
    }
}

/// PUSH_DATA body: `{"rxpk":[...], "stat":{...}}`, either part optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "RawPushData")]
pub struct PushData {
    /// The frames that parse and are within range. An entry that does not (bad base64,
    /// a negative frequency, a CRC status that is not one) is left out and said in
    /// `rejected`, not the datagram: the other frames in it are still good, and the
    /// datagram is still acknowledged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rxpk: Vec<RxPk>,
    /// The forwarder's status report. One that does not parse (a counter out of range,
    /// a field of the wrong type) is left out, not the datagram: the frames in `rxpk`
    /// beside it are what matters, and a forwarder's statistics are advisory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<Stat>,
    /// Why each `rxpk` entry left out was.
    #[serde(skip)]
    pub rejected: Vec<String>,
}

/// PUSH_DATA as it arrives: each frame and the status still to be checked.
#[derive(Deserialize)]
struct RawPushData {
    #[serde(default)]
    rxpk: Vec<serde_json::Value>,
    #[serde(default)]
    stat: Option<serde_json::Value>,
}

impl From<RawPushData> for PushData {
    fn from(raw: RawPushData) -> PushData {
        let mut data = PushData {
            stat: raw
                .stat
                .and_then(|v| serde_json::from_value::<Stat>(v).ok())
                .filter(Stat::in_range),
            ..PushData::default()
        };
        for v in raw.rxpk {
            match serde_json::from_value::<RxPk>(v) {
                Ok(rx) => match rx.validate() {
                    Ok(()) => data.rxpk.push(rx),
                    Err(e) => data.rejected.push(e.to_string()),
                },
                Err(e) => data.rejected.push(format!("rxpk: {e}")),
            }
        }
        data
    }
}

/// A received frame and its radio metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RxPk {
    /// UTC time of reception, ISO 8601 (only with a time source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// GPS time of reception, ms since 1980-01-06.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmms: Option<u64>,
    /// Concentrator counter (µs) at "RX finished": wraps at 2^32; downlinks are timed on it.
    pub tmst: u32,
    /// Centre frequency, MHz.
    pub freq: f64,
    /// Concentrator IF channel (not the LoRaWAN channel).
    pub chan: u8,
    /// Concentrator RF chain.
    pub rfch: u8,
    pub stat: CrcStatus,
    pub modu: Modulation,
    pub datr: DataRate,
    /// LoRa coding rate, e.g. "4/5".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codr: Option<String>,
    /// RSSI, dBm.
    pub rssi: i16,
    /// LoRa SNR, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsnr: Option<f64>,
    /// Payload size in bytes; must match `data`.
    pub size: u16,
    /// The PHYPayload.
    pub data: Payload,
}

impl RxPk {
    /// The frequency in Hz.
    pub fn freq_hz(&self) -> u32 {
        mhz_to_hz(self.freq)
    }

    fn validate(&self) -> Result<(), GwmpError> {
        check_radio(
            "rxpk", self.freq, self.modu, self.datr, self.size, &self.data,
        )?;
        // A LoRa demodulator reports -20 to +15 dB; a value far outside is no reading.
        if let Some(snr) = self.lsnr.filter(|s| !(-50.0..=50.0).contains(s)) {
            return Err(GwmpError::Invalid {
                what: "rxpk",
                problem: format!("lsnr {snr} dB is out of range"),
            });
        }
        Ok(())
    }
}

/// Gateway status, every field optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stat {
    /// Gateway system time, as the forwarder formats it ("2014-01-12 08:59:28 GMT").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lati: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alti: Option<i32>,
    /// Frames received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxnb: Option<u32>,
    /// Frames received with a good CRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxok: Option<u32>,
    /// Frames forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxfw: Option<u32>,
    /// Percentage of upstream datagrams acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ackr: Option<f64>,
    /// Downlink datagrams received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwnb: Option<u32>,
    /// Frames transmitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txnb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp: Option<f64>,
}

impl Stat {
    /// Whether the report's numbers could be a forwarder's: a percentage from 0 to 100,
    /// a position on the globe, a temperature a board survives.
    fn in_range(&self) -> bool {
        let within = |v: Option<f64>, lo: f64, hi: f64| v.is_none_or(|v| (lo..=hi).contains(&v));
        within(self.ackr, 0.0, 100.0)
            && within(self.lati, -90.0, 90.0)
            && within(self.long, -180.0, 180.0)
            && within(self.temp, -100.0, 200.0)
    }
}

/// PULL_RESP body: `{"txpk":{...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullResp {
    pub txpk: TxPk,
}

/// A frame to transmit and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxPk {
    /// Send at once, ignoring tmst/tmms.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imme: bool,
    /// Send when the concentrator counter reaches this value (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmms: Option<u64>,
    /// MHz.
    pub freq: f64,
    pub rfch: u8,
    /// TX power, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub powe: Option<u8>,
    pub modu: Modulation,
    pub datr: DataRate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codr: Option<String>,
    /// FSK frequency deviation, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdev: Option<u32>,
    /// Inverted IQ: true for LoRaWAN downlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipol: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prea: Option<u16>,
    pub size: u16,
    pub data: Payload,
    /// Disable the physical-layer CRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ncrc: Option<bool>,
}

impl TxPk {
    /// A LoRaWAN class A downlink at concentrator time `tmst`: LoRa, inverted IQ, 4/5.
    pub fn lorawan_downlink(
        tmst: u32,
        freq_hz: u32,
        sf: u8,
        bw_khz: u16,
        powe: u8,
        phy: Vec<u8>,
    ) -> TxPk {
        TxPk {
            imme: false,
            tmst: Some(tmst),
            tmms: None,
            freq: hz_to_mhz(freq_hz),
            rfch: 0,
            powe: Some(powe),
            modu: Modulation::Lora,
            datr: DataRate::Lora { sf, bw_khz },
            codr: Some("4/5".into()),
            fdev: None,
            ipol: Some(true),
            prea: None,
            size: phy.len() as u16,
            data: Payload(phy),
            ncrc: None,
        }
    }

    fn validate(&self) -> Result<(), GwmpError> {
        if !self.imme && self.tmst.is_none() && self.tmms.is_none() {
            return Err(GwmpError::Invalid {
                what: "txpk",
                problem: "none of imme, tmst, tmms says when to send".into(),
            });
        }
        check_radio(
            "txpk", self.freq, self.modu, self.datr, self.size, &self.data,
        )
    }
}

fn check_radio(
    what: &'static str,
    freq: f64,
    modu: Modulation,
    datr: DataRate,
    size: u16,
    data: &Payload,
) -> Result<(), GwmpError> {
    let invalid = |problem: String| Err(GwmpError::Invalid { what, problem });
    if !(freq.is_finite() && freq > 0.0 && freq < 10_000.0) {
        return invalid(format!("frequency {freq} MHz"));
    }
    match (modu, datr) {
        (Modulation::Lora, DataRate::Lora { .. }) | (Modulation::Fsk, DataRate::Fsk(_)) => {}
        _ => return invalid(format!("modulation {modu:?} with data rate {datr}")),
    }
    if usize::from(size) != data.0.len() {
        return invalid(format!("size {size} but data holds {} bytes", data.0.len()));
    }
    Ok(())
}

/// TX_ACK body: `{"txpk_ack":{"error":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxAck {
    pub txpk_ack: TxPkAck,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TxPkAck {
    /// Absent or `NONE` when the downlink was scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TxAckError>,
}

impl TxAck {
    /// True when the gateway scheduled the downlink.
    pub fn accepted(&self) -> bool {
        matches!(self.txpk_ack.error, None | Some(TxAckError::None))
    }
}

/// The `txpk_ack.error` values of PROTOCOL.TXT (plus `UNKNOWN`, which lora_pkt_fwd sends
/// for errors of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxAckError {
    None,
    TooLate,
    TooEarly,
    CollisionPacket,
    CollisionBeacon,
    TxFreq,
    TxPower,
    GpsUnlocked,
    Unknown,
}

/// CRC status of a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i8", into = "i8")]
pub enum CrcStatus {
    Ok,
    Fail,
    NoCrc,
}

impl TryFrom<i8> for CrcStatus {
    type Error = String;
    fn try_from(v: i8) -> Result<Self, String> {
        match v {
            1 => Ok(CrcStatus::Ok),
            -1 => Ok(CrcStatus::Fail),
            0 => Ok(CrcStatus::NoCrc),
            _ => Err(format!("stat {v} is not 1, -1 or 0")),
        }
    }
}

impl From<CrcStatus> for i8 {
    fn from(s: CrcStatus) -> i8 {
        match s {
            CrcStatus::Ok => 1,
            CrcStatus::Fail => -1,
            CrcStatus::NoCrc => 0,
        }
    }
}

/// `modu`: the two modulations PROTOCOL.TXT defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Modulation {
    #[serde(rename = "LORA")]
    Lora,
    #[serde(rename = "FSK")]
    Fsk,
}

/// `datr`: `"SF7BW125"` for LoRa, a bit rate number for FSK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataRate {
    Lora { sf: u8, bw_khz: u16 },
    Fsk(u32),
}

impl DataRate {
    /// Parses a LoRa data-rate string: SF5..=SF12, BW125/250/500.
    pub fn parse_lora(s: &str) -> Option<DataRate> {
        let rest = s.strip_prefix("SF")?;
        let (sf, bw) = rest.split_once("BW")?;
        let sf: u8 = sf.parse().ok()?;
        let bw_khz: u16 = bw.parse().ok()?;
        ((5..=12).contains(&sf) && matches!(bw_khz, 125 | 250 | 500))
            .then_some(DataRate::Lora { sf, bw_khz })
    }

    /// The matching region modulation, to look a DR index up.
    pub fn modulation(&self) -> crate::region::Modulation {
        match *self {
            DataRate::Lora { sf, bw_khz } => crate::region::Modulation::Lora { sf, bw_khz },
            DataRate::Fsk(bps) => crate::region::Modulation::Fsk { bps },
        }
    }
}

impl fmt::Display for DataRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataRate::Lora { sf, bw_khz } => write!(f, "SF{sf}BW{bw_khz}"),
            DataRate::Fsk(bps) => write!(f, "{bps}"),
        }
    }
}

impl Serialize for DataRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DataRate::Lora { .. } => s.collect_str(self),
            DataRate::Fsk(bps) => s.serialize_u32(*bps),
        }
    }
}

impl<'de> Deserialize<'de> for DataRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DataRate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a LoRa data rate like \"SF7BW125\" or an FSK bit rate")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DataRate, E> {
                DataRate::parse_lora(s)
                    .ok_or_else(|| E::custom(format!("{s:?} is not SF5..12 with BW125/250/500")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DataRate, E> {
                u32::try_from(v)
                    .map(DataRate::Fsk)
                    .map_err(|_| E::custom("FSK bit rate out of range"))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DataRate, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("negative FSK bit rate"))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// How `data` is read: padding optional (PROTOCOL.TXT: "padding optional" for txpk, and
/// its own examples omit it) and non-zero trailing bits tolerated, as lora_pkt_fwd's
/// decoder does (the txpk example of PROTOCOL.TXT has them).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Bytes carried as base64 (`data`). Written padded; read with or without padding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload(pub Vec<u8>);

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        LENIENT_BASE64
            .decode(s.as_bytes())
            .map(Payload)
            .map_err(|e| serde::de::Error::custom(format!("data is not base64: {e}")))
    }
}

/// MHz (GWMP) to Hz, rounded to the nearest Hz.
pub fn mhz_to_hz(mhz: f64) -> u32 {
    (mhz * 1_000_000.0).round() as u32
}

/// Hz to MHz.
pub fn hz_to_mhz(hz: u32) -> f64 {
    f64::from(hz) / 1_000_000.0
}

#[cfg(test)]
mod tests;
