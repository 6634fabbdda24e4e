//! The normalized vocabulary every part of the daemon speaks: device ids,
//! lifecycle states, readings, the events radios report and the commands they take.
//!
//! Pure data, no IO: drivers translate protocol frames into these types and the
//! hub, the store and the two doors (API, MQTT) only ever see these.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::Protocol;

pub mod vocabulary;

/// A device's identity inside the gateway: `<protocol>:<native address>`, e.g.
/// `zigbee:0x00124b0001abcdef` or `zwave:5`. Stable across re-pairing when the
/// native address is stable (IEEE address, DevEUI, BLE MAC).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub String);

impl DeviceId {
    pub fn new(protocol: Protocol, native_address: &str) -> DeviceId {
        DeviceId(format!(
            "{}:{}",
            protocol.as_str(),
            native_address.to_ascii_lowercase()
        ))
    }

    /// Accepts only well-formed ids (known protocol, non-empty printable address).
    pub fn parse(s: &str) -> Option<DeviceId> {
        let (proto, addr) = s.split_once(':')?;
        // Ids are lower case throughout (`ZIGBEE:0x00124B...` is the same device).
        let proto = proto.to_ascii_lowercase();
        let proto = proto.as_str();
        Protocol::parse(proto)?;
        if addr.is_empty()
            || addr.len() > 64
            || !addr
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":-_.".contains(c))
        {
            return None;
        }
        let id = s.to_ascii_lowercase();
        // A Z-Wave node number is written without leading zeros (`-2`, not `-02`), the
        // way the driver names its nodes, so that both spellings find the same device.
        if Protocol::parse(proto) == Some(Protocol::Zwave) {
            if let Some((home, node)) = id[proto.len() + 1..].split_once('-') {
                let digits = node.bytes().all(|b| b.is_ascii_digit());
                if digits && node.len() > 1 && node.starts_with('0') {
                    let node = node.trim_start_matches('0');
                    let node = if node.is_empty() { "0" } else { node };
                    return Some(DeviceId(format!(
                        "{}:{home}-{node}",
                        Protocol::Zwave.as_str()
                    )));
                }
            }
        }
        Some(DeviceId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The protocol part (`zigbee` in `zigbee:0x...`).
    pub fn protocol(&self) -> Option<Protocol> {
        Protocol::parse(self.0.split_once(':')?.0)
    }

    /// Whether the address has the form the protocol's drivers name their devices by:
    /// a Zigbee IEEE address (`0x` and 16 hex digits), a Z-Wave node (`<home id>-<node>`,
    /// 8 hex digits and 1-232), a BLE MAC (`aa:bb:cc:dd:ee:ff`), a LoRaWAN DevEUI (16 hex
    /// digits). LoRa P2P addresses are the peers' own and are not checked. Used where an
    /// id may name a device the gateway has never seen (a block), so that a mistyped one
    /// is refused instead of blocking an address no device can have.
    pub fn well_formed(&self) -> bool {
        fn hex(s: &str, digits: usize) -> bool {
            s.len() == digits && s.bytes().all(|b| b.is_ascii_hexdigit())
        }
        let addr = self.native_address();
        match self.protocol() {
            Some(Protocol::Zigbee) => addr.strip_prefix("0x").is_some_and(|h| hex(h, 16)),
            Some(Protocol::Zwave) => addr.split_once('-').is_some_and(|(home, node)| {
                hex(home, 8)
                    && node.bytes().all(|b| b.is_ascii_digit())
                    && node.parse::<u8>().is_ok_and(|n| (1..=232).contains(&n))
            }),
            Some(Protocol::Ble) => {
                let parts: Vec<&str> = addr.split(':').collect();
                parts.len() == 6 && parts.iter().all(|p| hex(p, 2))
            }
            Some(Protocol::Lora) => hex(addr, 16),
            Some(Protocol::LoraP2p) => true,
            None => false,
        }
    }

    /// The native address part (`0x...` in `zigbee:0x...`).
    pub fn native_address(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, a)| a)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Joined the network, not yet admitted (interview or admission pending).
    Pending,
    Active,
    /// Kept on the network but flagged (e.g. firmware below the policy minimum).
    Quarantined,
    /// Removed from service; kept in the registry for the record.
    Decommissioned,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Pending => "pending",
            Lifecycle::Active => "active",
            Lifecycle::Quarantined => "quarantined",
            Lifecycle::Decommissioned => "decommissioned",
        }
    }

    pub fn parse(s: &str) -> Option<Lifecycle> {
        match s {
            "pending" => Some(Lifecycle::Pending),
            "active" => Some(Lifecycle::Active),
            "quarantined" => Some(Lifecycle::Quarantined),
            "decommissioned" => Some(Lifecycle::Decommissioned),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerSource {
    Mains,
    Battery,
    Unknown,
}

impl PowerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerSource::Mains => "mains",
            PowerSource::Battery => "battery",
            PowerSource::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> PowerSource {
        match s {
            "mains" => PowerSource::Mains,
            "battery" => PowerSource::Battery,
            _ => PowerSource::Unknown,
        }
    }
}

/// A measured or reported value. A number that is not finite is written as the
/// string `"NaN"`, `"Infinity"` or `"-Infinity"` (JSON has no such numbers, and
/// `null` would not say which it was).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Number(#[serde(serialize_with = "serialize_number")] f64),
    Text(String),
}

/// A number as JSON: itself when finite, else `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub fn serialize_number<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("NaN")
    } else if *v > 0.0 {
        s.serialize_str("Infinity")
    } else {
        s.serialize_str("-Infinity")
    }
}

/// One normalized reading, e.g. `temperature = 21.5 °C`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub name: String,
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// What the gateway learns about a device while interviewing it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub power_source: Option<PowerSource>,
    pub capabilities: Vec<String>,
    /// How the device is reached (decides whether requests for it are held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability: Option<Reachability>,
    /// How long it may stay silent before it is offline, when the radio knows better
    /// than the policy's power-source default (a BLE advertiser's own interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<Silence>,
}

/// What silence means for a device, as its radio learnt it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Silence {
    /// Offline after this long without a word (ms).
    OfflineAfterMs(u64),
    /// It speaks only when something happens (a button): silence is normal, it is
    /// never offline for it.
    Expected,
}

impl Silence {
    /// As the registry keeps it: ms, 0 for never.
    pub fn offline_after_ms(self) -> i64 {
        match self {
            Silence::OfflineAfterMs(ms) => i64::try_from(ms.max(1)).unwrap_or(i64::MAX),
            Silence::Expected => 0,
        }
    }
}

/// A kind of device credential, provisioned before or at joining. Each driver
/// declares the kinds it takes (`radio::Capabilities::credentials`); the store keeps
/// them encrypted under [`CredentialKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// Zigbee install code (the trust center derives the device's link key from it).
    ZigbeeInstallCode,
    /// Z-Wave S2 DSK (device-specific key, the first five digit groups of the QR code).
    ZwaveS2Dsk,
    /// LoRaWAN OTAA keys (DevEUI, JoinEUI, AppKey).
    LorawanOtaa,
    /// LoRaWAN ABP session (DevAddr, NwkSKey, AppSKey).
    LorawanAbp,
    /// BTHome encryption key.
    BthomeBindkey,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 5] = [
        CredentialKind::ZigbeeInstallCode,
        CredentialKind::ZwaveS2Dsk,
        CredentialKind::LorawanOtaa,
        CredentialKind::LorawanAbp,
        CredentialKind::BthomeBindkey,
    ];

    /// The name the store and the doors use.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ZigbeeInstallCode => "zigbee_install_code",
            CredentialKind::ZwaveS2Dsk => "zwave_s2_dsk",
            CredentialKind::LorawanOtaa => "lorawan_otaa",
            CredentialKind::LorawanAbp => "lorawan_abp",
            CredentialKind::BthomeBindkey => "bthome_bindkey",
        }
    }

    pub fn parse(s: &str) -> Option<CredentialKind> {
        CredentialKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What a technician calls it.
    pub fn label(self) -> &'static str {
        match self {
            CredentialKind::ZigbeeInstallCode => "install code",
            CredentialKind::ZwaveS2Dsk => "S2 DSK",
            CredentialKind::LorawanOtaa => "LoRaWAN OTAA key set",
            CredentialKind::LorawanAbp => "LoRaWAN ABP session",
            CredentialKind::BthomeBindkey => "BTHome bindkey",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a device is reached, which decides whether a request is sent now or held
/// until the device can hear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// Its receiver is always on (mains-powered routers, Z-Wave FLiRS devices that
    /// wake on a beam): send now.
    AlwaysListening,
    /// It sleeps and wakes on its own schedule (Zigbee sleepy end devices, Z-Wave
    /// Wake Up devices): hold until it next speaks.
    WakeUp,
    /// It listens only right after it sent something (LoRaWAN class A, BLE
    /// advertisers): hold until its next uplink.
    AfterUplink,
}

impl Reachability {
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::AlwaysListening => "always_listening",
            Reachability::WakeUp => "wake_up",
            Reachability::AfterUplink => "after_uplink",
        }
    }

    pub fn parse(s: &str) -> Option<Reachability> {
        [
            Reachability::AlwaysListening,
            Reachability::WakeUp,
            Reachability::AfterUplink,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Whether requests for such a device wait until it next speaks.
    pub fn holds_requests(self) -> bool {
        !matches!(self, Reachability::AlwaysListening)
    }
}

/// The state of one radio, as reported by its supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum RadioState {
    Starting,
    Up,
    /// Open failed or the link dropped; being re-opened with backoff.
    Down(String),
    /// No driver for this protocol in this build, or the radio is disabled.
    Unavailable(String),
}

/// How well the frame behind an event was received, as the radio measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkMetrics {
    /// Received signal strength, dBm (Z-Wave, BLE, LoRa).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rssi_dbm: Option<f64>,
    /// Link quality indicator, 0-255 (Zigbee).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lqi: Option<u8>,
    /// Signal-to-noise ratio, dB (LoRa).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snr_db: Option<f64>,
}

impl LinkMetrics {
    /// The metrics as readings with their documented names (`linkquality`, `rssi`
    /// in dBm, `snr` in dB), so that telemetry and health see them like any value.
    pub fn readings(&self) -> impl Iterator<Item = Reading> + '_ {
        let lqi = self.lqi.map(|q| Reading {
            name: "linkquality".into(),
            value: Value::Number(f64::from(q)),
            unit: None,
        });
        let rssi = self.rssi_dbm.map(|r| Reading {
            name: "rssi".into(),
            value: Value::Number(r),
            unit: Some("dBm".into()),
        });
        let snr = self.snr_db.map(|s| Reading {
            name: "snr".into(),
            value: Value::Number(s),
            unit: Some("dB".into()),
        });
        lqi.into_iter().chain(rssi).chain(snr)
    }
}

/// What a radio driver reports to the hub.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvent {
    pub radio: String,
    pub protocol: Protocol,
    pub native_address: String,
    /// When the gateway received the underlying frame.
    pub received_at: SystemTime,
    pub kind: DeviceEventKind,
    /// How the frame was received, when the radio says.
    pub link: Option<LinkMetrics>,
}

impl DeviceEvent {
    pub fn device_id(&self) -> DeviceId {
        DeviceId::new(self.protocol, &self.native_address)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEventKind {
    /// The device joined (or re-joined) the network.
    Joined,
    /// Interview finished (or progressed): what the device is.
    Interviewed(DeviceInfo),
    Readings(Vec<Reading>),
    /// The device left the network on its own.
    Left,
    /// A frame from the device was refused by the radio (a bad MIC, a replayed or
    /// regressed counter, a reused join nonce): recorded in the audit log, the device's
    /// state untouched. `what` names the frame, `reason` is a stable code.
    Refused {
        what: String,
        reason: String,
        detail: String,
    },
    /// A command sent to the device finished.
    CommandResult {
        command_id: String,
        ok: bool,
        detail: String,
    },
}

/// Why a radio could not do what it was asked. Every radio operation that answers
/// answers with this, so the hub and the doors can tell the cases apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadioError {
    /// The radio does not do this (a capability it does not declare).
    #[error("not supported by this radio: {0}")]
    NotSupported(String),
    /// The request itself is wrong for this radio (an address it cannot use).
    #[error("{0}")]
    Invalid(String),
    /// The radio (coordinator, controller, modem) refused or failed it.
    #[error("{0}")]
    Refused(String),
    /// No answer in time.
    #[error("no answer in time: {0}")]
    Timeout(String),
    /// The link to the radio failed while it was being done.
    #[error("the radio link failed: {0}")]
    Link(String),
}

/// A device credential handed to a radio (an install code to its trust center, an
/// S2 DSK to its controller, LoRaWAN keys to its session table). Never logged.
#[derive(Debug, Clone)]
pub struct DeviceCredential {
    pub kind: CredentialKind,
    pub secret: crate::secrets::Secret,
}

/// What the policy asks of a radio that it must enforce itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RadioPolicy {
    /// Joining devices must present their pre-registered credential
    /// (`Capabilities::join_credential`).
    pub join_credential_required: bool,
}

/// A radio's network exported for a backup: the document in its format (e.g.
/// Zigbee's open-coordinator-backup JSON). It holds network secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkBackup {
    pub format: String,
    pub document: serde_json::Value,
    /// How many devices it covers (for the audit record, which never holds secrets).
    pub devices: usize,
}

/// What the hub asks a radio to do.
#[derive(Debug)]
pub enum RadioCommand {
    /// Open the radio's join window for `seconds`. Answers once the radio has opened it
    /// (or refused); radios whose joins the hub decides alone answer at once.
    PermitJoin {
        seconds: u32,
        reply: tokio::sync::oneshot::Sender<Result<(), RadioError>>,
    },
    Remove {
        native_address: String,
    },
    /// The device was re-admitted after a `Remove`: the driver stops removing it (a
    /// Z-Wave exclusion still waiting for its button is closed, and the node is not
    /// excluded again when heard). Radios with nothing in progress ignore it.
    Readmitted {
        native_address: String,
    },
    /// Actuate a device; the driver answers with a `CommandResult` carrying `command_id`.
    /// Made with [`RadioCommand::set`]; a driver that takes it after `stale_at` (it was
    /// busy: a coordinator restarting) answers it failed and does not send it.
    Set {
        stale_at: std::time::Instant,
        native_address: String,
        command: DeviceCommand,
        command_id: String,
    },
    /// Ask the device for fresh values of what it measures or reports (Zigbee: ZCL Read
    /// Attributes of its reportable clusters). The answers arrive as ordinary `Readings`
    /// events, then a `CommandResult` with `command_id` says the refresh is over.
    Read {
        native_address: String,
        command_id: String,
    },
    /// Export the radio's network (`Capabilities::backup`). The answer holds network
    /// secrets: it goes only to the local technician who asked.
    Backup {
        reply: tokio::sync::oneshot::Sender<Result<NetworkBackup, RadioError>>,
    },
    /// Write a backup (a document in the radio's `Capabilities::backup` format) back onto
    /// the radio, replacing its network. The driver checks the document fits the radio
    /// (e.g. a Z-Wave NVM image only onto the same chip family) and answers with what it
    /// restored (never the secrets); a driver that cannot write its radio answers
    /// `NotSupported`.
    Restore {
        document: serde_json::Value,
        reply: tokio::sync::oneshot::Sender<Result<serde_json::Value, RadioError>>,
    },
    /// Hand a device's credential to the radio (one of `Capabilities::credentials`),
    /// so the device can join or be heard with it. Answers once the radio took it.
    ProvisionCredential {
        native_address: String,
        credential: DeviceCredential,
        reply: tokio::sync::oneshot::Sender<Result<(), RadioError>>,
    },
    /// The policy's demands on the radio. The driver keeps it and applies it again
    /// after every start of the radio.
    Policy(RadioPolicy),
    /// Replace the network key (`Capabilities::key_rotation`): send a fresh one,
    /// wait, switch to it, keep it as the active credential. Answers when the switch
    /// is done or failed.
    RotateNetworkKey {
        reply: tokio::sync::oneshot::Sender<Result<KeyRotated, RadioError>>,
    },
    /// A command from the network server the radio bridges to (a ChirpStack downlink on
    /// `<prefix>/gateway/<id>/command/down`), as it arrived: the radio parses it. A radio
    /// with no bridge ignores it.
    Bridged {
        topic: String,
        payload: Vec<u8>,
    },
}

/// How long a `Set` may wait for its radio: by then whoever asked has been answered
/// that no result came (the API's and MQTT's wait for a result), so it must not be
/// carried out later behind their back.
pub const COMMAND_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

impl RadioCommand {
    /// A `Set` that goes stale [`COMMAND_STALE_AFTER`] from now.
    pub fn set(native_address: String, command: DeviceCommand, command_id: String) -> RadioCommand {
        RadioCommand::Set {
            stale_at: std::time::Instant::now() + COMMAND_STALE_AFTER,
            native_address,
            command,
            command_id,
        }
    }
}

/// Why a `Set` taken at `stale_at` or later is not sent, or `None` while it is fresh.
pub fn stale_command(stale_at: std::time::Instant) -> Option<String> {
    (std::time::Instant::now() >= stale_at).then(|| {
        format!(
            "not sent: it waited more than {} s for the radio (busy or restarting), and whoever asked was answered that no result came",
            COMMAND_STALE_AFTER.as_secs()
        )
    })
}

/// A finished network key rotation (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotated {
    pub previous_key_seq: u8,
    pub key_seq: u8,
    /// How long the new key was distributed before the switch.
    pub switch_delay_ms: u64,
    pub switched_at: String,
}

/// A protocol-neutral actuator command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum DeviceCommand {
    On,
    Off,
    Toggle,
    /// Level (brightness, position) in percent, 0–100.
    Level {
        percent: u8,
    },
    /// Set one of the device's configuration parameters (Z-Wave Configuration CC) and read
    /// it back: parameter number, size in bytes (1, 2 or 4) and the value, signed or
    /// unsigned within that size. Radios without device parameters
    /// (`Capabilities::configuration`) refuse it.
    Configure {
        parameter: u16,
        size: u8,
        value: i64,
    },
}

impl DeviceCommand {
    /// Checks a [`DeviceCommand::Configure`]'s size and value range (`Err` says what is
    /// wrong); every other command is valid by construction.
    pub fn check(&self) -> Result<(), String> {
        if let DeviceCommand::Configure { size, value, .. } = *self {
            if !matches!(size, 1 | 2 | 4) {
                return Err(format!("a parameter size is 1, 2 or 4 bytes, not {size}"));
            }
            let bits = 8 * u32::from(size);
            let (min, max) = (-(1i64 << (bits - 1)), (1i64 << bits) - 1);
            if !(min..=max).contains(&value) {
                return Err(format!(
                    "{value} does not fit in {size} byte(s) (from {min} to {max})"
                ));
            }
        }
        Ok(())
    }
}

/// Parses an RFC 3339 time with a `Z` or a `±HH:MM` offset (`2026-12-07T01:00:00+02:00`,
/// fractional seconds optional).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (local, offset_s) = if let Some(rest) = s.strip_suffix(['Z', 'z']) {
        (rest, 0i64)
    } else {
        let at = s.len().checked_sub(6)?;
        let (rest, off) = (s.get(..at)?, s.get(at..)?);
        let sign = match off.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (h, m) = off[1..].split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 {
            return None;
        }
        (rest, sign * (h * 3600 + m * 60))
    };
    // `humantime` reads the local part (a `T` between date and time, as RFC 3339 has it).
    if local.len() < 19 || !matches!(local.as_bytes()[10], b'T' | b't') {
        return None;
    }
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = std::time::Duration::from_secs(offset_s.unsigned_abs());
    if offset_s >= 0 {
        t.checked_sub(shift)
    } else {
        t.checked_add(shift)
    }
}

/// Seconds since the epoch to RFC 3339 with milliseconds, UTC
/// (`2026-05-01T12:00:00.123Z`).
/// Times before 1970 are written as 1970-01-01T00:00:00.000Z and times after
/// 9999 as 9999-12-31T23:59:59.999Z (a clock that wrong must not stop the gateway).
pub fn rfc3339(t: SystemTime) -> String {
    let mut buf = [0u8; 24];
    rfc3339_into(t, &mut buf).to_string()
}

/// [`rfc3339`] into a buffer, without the formatting machinery: it runs for every
/// queued message.
pub fn rfc3339_into(t: SystemTime, buf: &mut [u8; 24]) -> &str {
    const LAST: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z, in ms
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .min(std::time::Duration::from_millis(LAST));
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-Compatible
    // Low-Level Date Algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut put = |at: usize, value: u64, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year as u64, 4);
    put(5, month as u64, 2);
    put(8, day as u64, 2);
    put(11, rem / 3600, 2);
    put(14, rem % 3600 / 60, 2);
    put(17, rem % 60, 2);
    put(20, u64::from(millis), 3);
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        buf[at] = sep;
    }
    std::str::from_utf8(buf).unwrap_or("1970-01-01T00:00:00.000Z")
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_offsets_are_read_as_the_instant_they_name() {
        let utc = parse_rfc3339("2026-12-07T01:00:00Z").unwrap();
        assert_eq!(rfc3339(utc), "2026-12-07T01:00:00.000Z");
        assert_eq!(parse_rfc3339("2026-12-07T03:00:00+02:00"), Some(utc));
        assert_eq!(parse_rfc3339("2026-12-06T23:30:00-01:30"), Some(utc));
        assert_eq!(
            rfc3339(parse_rfc3339("2026-12-07T01:00:00.250z").unwrap()),
            "2026-12-07T01:00:00.250Z"
        );
        for bad in [
            "",
            "zzz",
            "1",
            "2026-12-07",
            "2026-12-07 01:00:00Z",
            "2026-12-07T01:00:00",
            "2026-12-07T01:00:00+2:00",
            "2026-12-07T01:00:00+24:00",
            "2026-13-07T01:00:00Z",
            "2026-12-07T01:00:00+02:00x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn well_formed_ids_are_the_drivers_address_forms() {
        let ok = [
            "zigbee:0x00124b0001abcdef",
            "zwave:fa116a7e-3",
            "zwave:fa116a7e-232",
            "ble:54:48:e6:8f:80:a5",
            "lora:0011223344556677",
            "lora-p2p:anything",
        ];
        for raw in ok {
            assert!(DeviceId::parse(raw).unwrap().well_formed(), "{raw}");
        }
        // A node number's leading zeros name the same node.
        for raw in [
            "zwave:fa116a7e-02",
            "zwave:FA116A7E-002",
            "zwave:fa116a7e-2",
        ] {
            assert_eq!(
                DeviceId::parse(raw).unwrap().as_str(),
                "zwave:fa116a7e-2",
                "{raw}"
            );
        }
        assert_eq!(
            DeviceId::parse("zwave:fa116a7e-00").unwrap().as_str(),
            "zwave:fa116a7e-0"
        );
        assert_eq!(
            DeviceId::parse("zigbee:0x00124b0001abcdef")
                .unwrap()
                .as_str(),
            "zigbee:0x00124b0001abcdef"
        );
        let bad = [
            "zigbee:0x1234",
            "zigbee:00124b0001abcdef",
            "zigbee:0x00124b0001abcdeg",
            "zwave:fa116a7e-0",
            "zwave:fa116a7e-233",
            "zwave:fa116a7e-+3",
            "zwave:fa116a7-3",
            "zwave:3",
            "ble:zz:zz",
            "ble:54:48:e6:8f:80",
            "ble:54:48:e6:8f:80:a5:00",
            "lora:0x0011223344556677",
            "lora:00112233",
        ];
        for raw in bad {
            assert!(
                DeviceId::parse(raw).is_none_or(|d| !d.well_formed()),
                "{raw}"
            );
        }
    }

    #[test]
    fn rfc3339_matches_humantime() {
        use std::time::{Duration, UNIX_EPOCH};
        let reference = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        // Leap days, year and century edges, the last representable year, and a
        // deterministic spread of instants in between.
        let mut times: Vec<SystemTime> = [
            0u64,
            951_782_400_999,     // 2000-02-29
            4_107_542_399_999,   // 2100-02-28T23:59:59.999
            4_107_542_400_000,   // 2100-03-01
            1_709_164_800_123,   // 2024-02-29
            253_402_300_799_999, // 9999-12-31T23:59:59.999
        ]
        .iter()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(*ms))
        .collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            times.push(UNIX_EPOCH + Duration::from_millis(x % 253_402_300_800_000));
        }
        for t in times {
            assert_eq!(rfc3339(t), reference(t), "{t:?}");
        }
        // Out of range: clamped, not a panic.
        let late = UNIX_EPOCH + Duration::from_secs(253_402_300_800 * 2);
        assert_eq!(rfc3339(late), "9999-12-31T23:59:59.999Z");
        let early = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(rfc3339(early), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn numbers_that_are_not_finite_stay_distinct_in_json() {
        let out: Vec<String> = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 21.5]
            .into_iter()
            .map(|n| serde_json::to_string(&Value::Number(n)).unwrap())
            .collect();
        assert_eq!(out, ["\"NaN\"", "\"Infinity\"", "\"-Infinity\"", "21.5"]);
        let r = Reading {
            name: "temperature".into(),
            value: Value::Number(f64::NEG_INFINITY),
            unit: Some("°C".into()),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap()["value"],
            serde_json::json!("-Infinity")
        );
    }

    #[test]
    fn device_ids_are_normalized_and_validated() {
        let id = DeviceId::new(Protocol::Zigbee, "0x00124B0001ABCDEF");
        assert_eq!(id.as_str(), "zigbee:0x00124b0001abcdef");
        assert_eq!(DeviceId::parse("zigbee:0x00124b0001abcdef"), Some(id));
        assert_eq!(
            DeviceId::parse("ZIGBEE:0x00124B0001ABCDEF"),
            DeviceId::parse("zigbee:0x00124b0001abcdef")
        );
        assert_eq!(DeviceId::parse("bogus:1"), None);
        assert_eq!(DeviceId::parse("zwave:"), None);
        assert_eq!(DeviceId::parse("zwave:5/../x"), None);
        assert_eq!(
            DeviceId::parse("ble:aa:bb:cc:dd:ee:ff").unwrap().as_str(),
            "ble:aa:bb:cc:dd:ee:ff"
        );
    }
}
