//! Radios: the driver contract, the table of drivers compiled in, and the hub's
//! handle on each running radio.
//!
//! A driver turns protocol frames into [`DeviceEvent`]s for the hub and carries out
//! the hub's [`RadioCommand`]s. What the hub may ask of it is declared once, in its
//! [`DriverSpec`]: its [`Capabilities`] (join window, credential kinds, backup,
//! network-key rotation, how its devices are reached), the ports it accepts, how it
//! checks its `[radio.options]` (for `config check`, before anything starts) and how
//! it gets its transport (a byte stream the supervisor opens, or its own: a UDP
//! socket, D-Bus). The hub decides from capabilities and never from the protocol.
//!
//! Adding a radio: a `protocols/<p>` codec crate, a `src/radio/<p>/` driver, and one
//! entry in [`DRIVERS`]. The supervisor (`supervisor.rs`) runs every driver alike.

pub mod ble;
pub mod link;
pub mod lora;
pub mod lora_p2p;
pub mod session;
pub mod sim;
mod supervisor;
pub mod zigbee;
pub mod zigbee_sim;
pub mod zwave;
pub mod zwave_sim;

pub use supervisor::{spawn_all, Backoff, CLOSE_AT_STOP};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::{PortSpec, Protocol};
use crate::model::{CredentialKind, DeviceEvent, RadioCommand, RadioState, Reachability};
use crate::secrets::{MasterKey, Secret};
use crate::store::{credentials, Writer};

/// Where a driver keeps its network secrets: encrypted with the gateway master key in
/// the credentials table, owner `radio:<name>`. Never logs a secret.
#[derive(Clone)]
pub struct SecretSink {
    writer: Writer,
    key: Arc<MasterKey>,
}

impl std::fmt::Debug for SecretSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretSink({:?})", self.key)
    }
}

/// What [`SecretSink::keep`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// There was none: stored.
    Stored,
    /// The stored one was the same: nothing written.
    Unchanged,
    /// A different one was stored: replaced (recorded as a rotation).
    Replaced,
}

impl SecretSink {
    pub fn new(writer: Writer, key: Arc<MasterKey>) -> SecretSink {
        SecretSink { writer, key }
    }

    /// Whether the disk holding the database is full: what is left is kept for audit
    /// records and a clean stop, so a driver writes nothing for a device event then.
    pub fn disk_full(&self) -> bool {
        let stats = self.writer.stats();
        stats.disk.recheck(&stats.log);
        stats.disk.is_full()
    }

    /// Counts a device event the driver dropped because the disk is full.
    pub fn event_not_stored(&self) {
        self.writer
            .stats()
            .disk
            .events_not_stored
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The credential owner for radio `radio`'s network secrets.
    pub fn owner(radio: &str) -> String {
        format!("radio:{radio}")
    }

    /// Stores `secret` as credential (`radio:<radio>`, `kind`) unless the same value is
    /// already stored; one transaction. A stored value that no longer opens is replaced.
    pub async fn keep(&self, radio: &str, kind: &str, secret: Secret) -> anyhow::Result<Kept> {
        let key = self.key.clone();
        let owner = Self::owner(radio);
        let kind = kind.to_string();
        let kept = self
            .writer
            .write(move |c| {
                let kept = match credentials::get(c, &key, &owner, &kind) {
                    Ok(Some(old)) if old == secret => return Ok(Kept::Unchanged),
                    Ok(None) => Kept::Stored,
                    // Different, or no longer opening with this master key.
                    Ok(Some(_)) | Err(_) => Kept::Replaced,
                };
                credentials::put(c, &key, &owner, &kind, &secret).map(|_| kept)
            })
            .await?;
        Ok(kept)
    }
}

impl SecretSink {
    /// Every stored credential of `kind` with its owner, opened. Credentials that no longer
    /// open (another master key) are skipped and counted in the second value.
    pub async fn all_of_kind(&self, kind: &str) -> anyhow::Result<(Vec<(String, Secret)>, usize)> {
        let key = self.key.clone();
        let kind = kind.to_string();
        Ok(self
            .writer
            .write(move |c| {
                let mut out = Vec::new();
                let mut unreadable = 0;
                for info in credentials::list_kind(c, &kind)? {
                    match credentials::get(c, &key, &info.owner, &kind) {
                        Ok(Some(s)) => out.push((info.owner, s)),
                        Ok(None) => {}
                        Err(_) => unreadable += 1,
                    }
                }
                Ok((out, unreadable))
            })
            .await?)
    }

    /// Removes radio `radio`'s credential of `kind`, if any.
    pub async fn forget(&self, radio: &str, kind: &str) -> anyhow::Result<bool> {
        let owner = Self::owner(radio);
        let kind = kind.to_string();
        Ok(self
            .writer
            .write(move |c| credentials::remove(c, &owner, &kind))
            .await?)
    }
}

/// What a radio's driver counts, shown by `fieldgate status` and the gateway's
/// `info` message. They survive link restarts (they count since the daemon started).
#[derive(Debug, Default)]
pub struct RadioCounters {
    /// Times the radio's network stack was started (after opening the link).
    pub startups: AtomicU64,
    /// Frames that arrived intact but could not be decoded.
    pub undecodable: AtomicU64,
    /// Frames lost to line errors (bad checksum, oversize, implausible, stalled).
    pub line_errors: AtomicU64,
    /// Requests the radio did not answer in time.
    pub timeouts: AtomicU64,
    /// Stored items the radio served that were missing, refused or did not parse.
    pub bad_nv_items: AtomicU64,
    /// Messages the radio announced but could not hand over whole (e.g. a Zigbee payload
    /// the coordinator held back that could not be retrieved).
    pub incomplete: AtomicU64,
    /// Frames that decoded but that the driver turns into nothing (e.g. Zigbee Green Power
    /// notifications: GP devices are not commissioned); each is logged.
    pub unhandled: AtomicU64,
    /// Frames that arrived encrypted in a scheme the driver does not decrypt (Z-Wave S0/S2
    /// encapsulation), or that did not decipher under the configured key (LoRa P2P); each
    /// is logged, none is guessed at.
    pub not_decrypted: AtomicU64,
    /// Messages refused for security: forged (bad MIC), replayed (old counter) or
    /// downgraded (plaintext from a device that has a key). Each is also audited.
    pub refused: AtomicU64,
    /// Messages received but not passed on, to keep a busy air from flooding the hub.
    pub rate_limited: AtomicU64,
    /// Messages in no format the driver knows (e.g. phones' BLE advertisements).
    pub unknown_format: AtomicU64,
    /// Commands the radio answered busy (a LoRa modem still receiving); each was retried.
    pub busy: AtomicU64,
    /// Frames queued for another network server (the LoRa radio's ChirpStack bridge).
    pub bridged: AtomicU64,
    /// Configured settings the radio's firmware cannot apply (P2P encryption on a RAK3172
    /// firmware without it); the radio stays down rather than run without them.
    pub unsupported: AtomicU64,
    /// Downlink items from that network server answered `TOO_LATE` without being sent:
    /// their transmit time passed before they reached the gateway (e.g. while its MQTT
    /// connection was down).
    pub bridge_too_late: AtomicU64,
    /// What a LoRaWAN packet forwarder reports about itself (GWMP `stat`).
    pub forwarder: ForwarderCounters,
}

/// The `stat` objects of a packet forwarder's PUSH_DATA, summed since the daemon started
/// (each report counts the forwarder's last interval). The acknowledgement ratio is the
/// last one reported.
#[derive(Debug)]
pub struct ForwarderCounters {
    pub reports: AtomicU64,
    /// Frames received (`rxnb`), with a good CRC (`rxok`), forwarded (`rxfw`).
    pub rxnb: AtomicU64,
    pub rxok: AtomicU64,
    pub rxfw: AtomicU64,
    /// Downlinks received from the server (`dwnb`) and transmitted (`txnb`).
    pub dwnb: AtomicU64,
    pub txnb: AtomicU64,
    /// `ackr` (percent of upstream datagrams acknowledged) as f64 bits; `u64::MAX` for none.
    ackr_bits: AtomicU64,
}

impl Default for ForwarderCounters {
    fn default() -> Self {
        ForwarderCounters {
            reports: AtomicU64::new(0),
            rxnb: AtomicU64::new(0),
            rxok: AtomicU64::new(0),
            rxfw: AtomicU64::new(0),
            dwnb: AtomicU64::new(0),
            txnb: AtomicU64::new(0),
            ackr_bits: AtomicU64::new(u64::MAX),
        }
    }
}

/// [`ForwarderCounters`] read at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForwarderSnapshot {
    pub reports: u64,
    pub rxnb: u64,
    pub rxok: u64,
    pub rxfw: u64,
    pub dwnb: u64,
    pub txnb: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ackr: Option<f64>,
}

impl ForwarderCounters {
    /// Adds one `stat` report (absent fields count as zero).
    pub fn add(&self, stat: &fieldgate_lora::gwmp::Stat) {
        let add = |c: &AtomicU64, v: Option<u32>| {
            c.fetch_add(u64::from(v.unwrap_or(0)), Ordering::Relaxed);
        };
        self.reports.fetch_add(1, Ordering::Relaxed);
        add(&self.rxnb, stat.rxnb);
        add(&self.rxok, stat.rxok);
        add(&self.rxfw, stat.rxfw);
        add(&self.dwnb, stat.dwnb);
        add(&self.txnb, stat.txnb);
        if let Some(a) = stat.ackr.filter(|a| a.is_finite()) {
            self.ackr_bits.store(a.to_bits(), Ordering::Relaxed);
        }
    }

    /// `None` until a forwarder has reported.
    pub fn snapshot(&self) -> Option<ForwarderSnapshot> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let reports = get(&self.reports);
        (reports > 0).then(|| {
            let bits = get(&self.ackr_bits);
            ForwarderSnapshot {
                reports,
                rxnb: get(&self.rxnb),
                rxok: get(&self.rxok),
                rxfw: get(&self.rxfw),
                dwnb: get(&self.dwnb),
                txnb: get(&self.txnb),
                ackr: (bits != u64::MAX).then(|| f64::from_bits(bits)),
            }
        })
    }
}

/// [`RadioCounters`] read at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RadioCountersSnapshot {
    pub startups: u64,
    pub undecodable: u64,
    pub line_errors: u64,
    pub timeouts: u64,
    pub bad_nv_items: u64,
    /// Absent from an older daemon's answer.
    #[serde(default)]
    pub incomplete: u64,
    #[serde(default)]
    pub unhandled: u64,
    #[serde(default)]
    pub not_decrypted: u64,
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub rate_limited: u64,
    #[serde(default)]
    pub unknown_format: u64,
    #[serde(default)]
    pub busy: u64,
    #[serde(default)]
    pub bridged: u64,
    #[serde(default)]
    pub unsupported: u64,
    #[serde(default)]
    pub bridge_too_late: u64,
    /// A packet forwarder's own statistics, once it has sent some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarder: Option<ForwarderSnapshot>,
}

impl RadioCounters {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RadioCountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RadioCountersSnapshot {
            startups: get(&self.startups),
            undecodable: get(&self.undecodable),
            line_errors: get(&self.line_errors),
            timeouts: get(&self.timeouts),
            bad_nv_items: get(&self.bad_nv_items),
            incomplete: get(&self.incomplete),
            unhandled: get(&self.unhandled),
            not_decrypted: get(&self.not_decrypted),
            refused: get(&self.refused),
            rate_limited: get(&self.rate_limited),
            unknown_format: get(&self.unknown_format),
            busy: get(&self.busy),
            bridged: get(&self.bridged),
            unsupported: get(&self.unsupported),
            bridge_too_late: get(&self.bridge_too_late),
            forwarder: self.forwarder.snapshot(),
        }
    }
}

/// What a driver gets to talk to the rest of the daemon.
pub struct DriverIo {
    pub radio: String,
    pub protocol: Protocol,
    /// The configured port (drivers that open their own transport read it here).
    pub port: PortSpec,
    pub baud: Option<u32>,
    pub options: toml::Table,
    pub events: mpsc::Sender<DeviceEvent>,
    pub commands: mpsc::Receiver<RadioCommand>,
    pub state: watch::Sender<RadioState>,
    /// Where network secrets are kept encrypted; `None` where no store is wired (some test
    /// rigs), in which case a driver keeps its secrets on the radio only.
    pub secrets: Option<Arc<SecretSink>>,
    /// The driver's counters, shared with the radio's handle.
    pub counters: Arc<RadioCounters>,
    /// A directory of this radio's own where the driver may keep what it learnt about its
    /// network across restarts of the daemon (created when first written); `None` where
    /// nothing is kept (test rigs).
    pub state_dir: Option<std::path::PathBuf>,
}

impl DriverIo {
    /// Answers a command with its result; false when the hub no longer takes events.
    pub async fn answer(
        &self,
        native_address: String,
        command_id: String,
        ok: bool,
        detail: &str,
    ) -> bool {
        let ev = DeviceEvent {
            radio: self.radio.clone(),
            protocol: self.protocol,
            native_address,
            received_at: std::time::SystemTime::now(),
            kind: crate::model::DeviceEventKind::CommandResult {
                command_id,
                ok,
                detail: detail.into(),
            },
            link: None,
        };
        self.events.send(ev).await.is_ok()
    }
}

pub type DriverFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// A driver that talks to its radio over a byte stream the supervisor opens
/// ([`link::open`]: a serial device, `tcp://` or `sim://`). `run` returns when the
/// link fails (the supervisor then re-opens it) or the command channel closes
/// (shutdown).
pub trait Driver: Send + 'static {
    fn run<'a>(&'a mut self, link: link::Link, io: &'a mut DriverIo) -> DriverFuture<'a>;
}

/// A driver that opens its own transport from [`DriverIo::port`] (a UDP socket for a
/// packet forwarder, D-Bus for BlueZ). Same return rules as [`Driver::run`].
pub trait OwnTransportDriver: Send + 'static {
    fn run<'a>(&'a mut self, io: &'a mut DriverIo) -> DriverFuture<'a>;
}

/// A driver instance, by how it gets its transport.
pub enum DriverBox {
    ByteStream(Box<dyn Driver>),
    OwnTransport(Box<dyn OwnTransportDriver>),
}

/// What a radio can do, as the hub sees it. The hub asks nothing else of a radio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Longest join window the radio supports; `None` when devices are discovered
    /// rather than joined (BLE): there is no window to open.
    pub max_join_window: Option<Duration>,
    /// Device credentials the radio takes (provisioned before or at joining).
    pub credentials: &'static [CredentialKind],
    /// The credential the radio policy may require of every joining device
    /// (Zigbee: an install code); the driver enforces it on the radio.
    pub join_credential: Option<CredentialKind>,
    /// The format of the network backup it exports, if it exports one.
    pub backup: Option<&'static str>,
    /// It can write such a backup back onto the radio (`radio restore`).
    pub restore: bool,
    /// It can replace its network key; the value is the longest a rotation takes.
    pub key_rotation: Option<Duration>,
    /// How its devices may be reached; each device says which applies to it.
    pub reachability: &'static [Reachability],
    /// Its devices have numbered configuration parameters it can set
    /// (`DeviceCommand::Configure`), numbered up to this.
    pub configuration: Option<u16>,
    /// Its devices can be commanded at all (a BLE advertiser only broadcasts).
    pub commands: bool,
    /// Its devices take `set` (on/off, level, configuration), not only reads: a
    /// LoRaWAN device is read from its uplinks, and no downlink is queued for it here.
    pub sets: bool,
    /// A device told to leave must take part (Z-Wave exclusion: its button): the radio
    /// waits this long for it, and the technician is told to act now.
    pub removal_needs_device: Option<Duration>,
}

impl Capabilities {
    pub fn accepts(&self, kind: CredentialKind) -> bool {
        self.credentials.contains(&kind)
    }
}

/// Port schemes (see `config::PortSpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Serial,
    Tcp,
    Udp,
    Sim,
    Bluez,
}

impl PortKind {
    pub fn of(port: &PortSpec) -> PortKind {
        match port {
            PortSpec::Serial(_) => PortKind::Serial,
            PortSpec::Tcp { .. } => PortKind::Tcp,
            PortSpec::Udp { .. } => PortKind::Udp,
            PortSpec::Sim(_) => PortKind::Sim,
            PortSpec::Bluez(_) => PortKind::Bluez,
        }
    }
}

/// A `[radio.options]` mistake: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OptionError {
    /// The option's key (e.g. `channel`), or the first unknown one.
    pub key: String,
    pub message: String,
}

/// One driver compiled into this build: everything the rest of the daemon may
/// know about it.
pub struct DriverSpec {
    pub protocol: Protocol,
    pub capabilities: Capabilities,
    /// The port schemes it accepts.
    pub ports: &'static [PortKind],
    /// Checks `[radio.options]` (unknown keys refused, values in range). Run by
    /// `config check` and at start, so a bad option never reaches a running radio.
    pub check_options: fn(&toml::Table) -> Result<(), OptionError>,
    /// A fresh driver instance for one radio.
    pub new: fn() -> DriverBox,
    /// Its built-in emulator, attached to the far end of `sim://<protocol>`'s
    /// in-process byte stream (`fieldgate emulate` serves it to other host stacks).
    pub emulator: Option<link::EmulatorFactory>,
}

/// The drivers compiled into this build.
pub static DRIVERS: &[DriverSpec] = &[
    zigbee::SPEC,
    zwave::SPEC,
    ble::SPEC,
    lora::SPEC,
    lora_p2p::SPEC,
];

/// The driver for `protocol`, if this build has one.
pub fn spec(protocol: Protocol) -> Option<&'static DriverSpec> {
    DRIVERS.iter().find(|d| d.protocol == protocol)
}

/// The capabilities of `protocol`'s driver, if this build has one.
pub fn capabilities(protocol: Protocol) -> Option<&'static Capabilities> {
    spec(protocol).map(|d| &d.capabilities)
}

/// The hub's view of one radio.
#[derive(Clone)]
pub struct RadioHandle {
    pub name: String,
    pub protocol: Protocol,
    pub port: PortSpec,
    /// What its driver can do; `None` when no driver runs for it.
    pub capabilities: Option<&'static Capabilities>,
    pub state: watch::Receiver<RadioState>,
    /// `None` when no driver runs for this radio.
    pub commands: Option<mpsc::Sender<RadioCommand>>,
    pub counters: Arc<RadioCounters>,
}

/// Waits until every radio's supervisor has stopped (its state's sender is gone),
/// at most `within`: at shutdown, drivers close their join windows first.
pub async fn stopped(radios: &[RadioHandle], within: Duration) {
    // They stop side by side; waiting for each in turn takes as long as the slowest.
    let all = async {
        for r in radios {
            let mut state = r.state.clone();
            while state.changed().await.is_ok() {}
        }
    };
    if tokio::time::timeout(within, all).await.is_err() {
        tracing::warn!("a radio did not stop in time");
    }
}
