//! Radios: one supervisor task per configured radio, each running its protocol's
//! driver over a [`link::Link`] and re-opening it with backoff when it fails.
//!
//! Drivers turn protocol frames into [`DeviceEvent`]s for the hub and carry out the
//! hub's [`RadioCommand`]s. A radio failing never touches another radio or the
//! uplink: each supervisor reports its own [`RadioState`].

pub mod link;
pub mod zigbee;
pub mod zigbee_sim;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::{PortSpec, Protocol, RadioConfig};
use crate::model::{DeviceEvent, RadioCommand, RadioState};
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
}

/// [`RadioCounters`] read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RadioCountersSnapshot {
    pub startups: u64,
    pub undecodable: u64,
    pub line_errors: u64,
    pub timeouts: u64,
    pub bad_nv_items: u64,
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
        }
    }
}

/// What a driver gets to talk to the rest of the daemon.
pub struct DriverIo {
    pub radio: String,
    pub protocol: Protocol,
    pub options: toml::Table,
    pub events: mpsc::Sender<DeviceEvent>,
    pub commands: mpsc::Receiver<RadioCommand>,
    pub state: watch::Sender<RadioState>,
    /// Where network secrets are kept encrypted; `None` where no store is wired (some test
    /// rigs), in which case a driver keeps its secrets on the radio only.
    pub secrets: Option<Arc<SecretSink>>,
    /// The driver's counters, shared with the radio's handle.
    pub counters: Arc<RadioCounters>,
}

pub type DriverFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// A protocol driver. `run` returns when the link fails (the supervisor then
/// re-opens it) or the command channel closes (shutdown).
pub trait Driver: Send + 'static {
    fn run<'a>(&'a mut self, link: link::Link, io: &'a mut DriverIo) -> DriverFuture<'a>;
}

/// The drivers compiled into this build.
pub fn driver_for(protocol: Protocol) -> Option<Box<dyn Driver>> {
    match protocol {
        Protocol::Zigbee => Some(Box::new(zigbee::ZigbeeDriver::new())),
        Protocol::Zwave | Protocol::Ble | Protocol::Lora => None,
    }
}

/// The hub's view of one radio.
#[derive(Clone)]
pub struct RadioHandle {
    pub name: String,
    pub protocol: Protocol,
    pub port: PortSpec,
    pub state: watch::Receiver<RadioState>,
    /// `None` when no driver runs for this radio.
    pub commands: Option<mpsc::Sender<RadioCommand>>,
    pub counters: Arc<RadioCounters>,
}

/// Starts a supervisor for each radio. Supervisors stop when `shutdown` flips. `secrets`
/// is where drivers keep network secrets (the daemon always passes one).
pub fn spawn_all(
    radios: &[RadioConfig],
    events: mpsc::Sender<DeviceEvent>,
    shutdown: watch::Receiver<bool>,
    secrets: Option<Arc<SecretSink>>,
) -> Vec<RadioHandle> {
    radios
        .iter()
        .map(|cfg| spawn_one(cfg, events.clone(), shutdown.clone(), secrets.clone()))
        .collect()
}

fn spawn_one(
    cfg: &RadioConfig,
    events: mpsc::Sender<DeviceEvent>,
    mut shutdown: watch::Receiver<bool>,
    secrets: Option<Arc<SecretSink>>,
) -> RadioHandle {
    let name = cfg.name.get_ref().clone();
    let port = cfg.port_spec();
    let (state_tx, state_rx) = watch::channel(RadioState::Starting);
    let counters = Arc::new(RadioCounters::default());
    let driver = if cfg.enabled {
        driver_for(cfg.protocol)
    } else {
        None
    };
    let Some(mut driver) = driver else {
        let why = if cfg.enabled {
            format!("no {} driver in this build yet", cfg.protocol)
        } else {
            "disabled in the config".to_string()
        };
        tracing::warn!(radio = %name, protocol = %cfg.protocol, reason = %why, "radio not started");
        let _ = state_tx.send(RadioState::Unavailable(why));
        // Keep the sender alive so readers see the final state.
        tokio::spawn(async move {
            crate::shutdown::signalled(&mut shutdown).await;
            drop(state_tx);
        });
        return RadioHandle {
            name,
            protocol: cfg.protocol,
            port,
            state: state_rx,
            commands: None,
            counters,
        };
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let mut io = DriverIo {
        radio: name.clone(),
        protocol: cfg.protocol,
        options: cfg.options.clone(),
        events,
        commands: cmd_rx,
        state: state_tx,
        secrets,
        counters: counters.clone(),
    };
    let baud = cfg.baud.as_ref().map(|b| *b.get_ref());
    let spec = port.clone();
    tokio::spawn(async move {
        let mut backoff = Backoff::new();
        loop {
            let attempt = async {
                let link = link::open(&spec, baud).await?;
                backoff.reset();
                driver.run(link, &mut io).await
            };
            let result = tokio::select! {
                r = attempt => r,
                _ = crate::shutdown::signalled(&mut shutdown) => break,
            };
            let reason = match result {
                Ok(()) if io.commands.is_closed() => break,
                Ok(()) => "link closed".to_string(),
                Err(e) => format!("{e:#}"),
            };
            let delay = backoff.next_delay();
            tracing::warn!(radio = %io.radio, error = %reason, retry_in = ?delay, "radio down");
            let _ = io.state.send(RadioState::Down(reason));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = crate::shutdown::signalled(&mut shutdown) => break,
            }
        }
        tracing::info!(radio = %io.radio, "radio stopped");
    });
    RadioHandle {
        name,
        protocol: cfg.protocol,
        port,
        state: state_rx,
        commands: Some(cmd_tx),
        counters,
    }
}

/// Exponential backoff with jitter, 1 s doubling to 60 s.
pub struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        Backoff::with_max(Self::MAX)
    }

    /// Doubling from [`Backoff::MIN`] up to `max` (at least `MIN`).
    pub fn with_max(max: Duration) -> Backoff {
        Backoff {
            current: Self::MIN,
            max: max.max(Self::MIN),
        }
    }

    pub fn reset(&mut self) {
        self.current = Self::MIN;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = rand::random_range(0.0..0.25);
        base.mul_f64(1.0 + jitter)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_caps_where_it_is_told() {
        let mut b = Backoff::with_max(Duration::from_secs(300));
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        // 1, 2, 4, ... 256, then 300 s, each with up to 25 % jitter.
        assert!(delays[8] >= Duration::from_secs(256));
        let last = *delays.last().unwrap();
        assert!(last >= Duration::from_secs(300) && last <= Duration::from_secs(375));
        b.reset();
        assert!(b.next_delay() <= Backoff::MIN.mul_f64(1.25));
        // Never below the minimum.
        let mut tiny = Backoff::with_max(Duration::ZERO);
        assert!(tiny.next_delay() >= Backoff::MIN);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Backoff::MIN && first <= Backoff::MIN.mul_f64(1.25));
        for _ in 0..20 {
            b.next_delay();
        }
        let last = b.next_delay();
        assert!(last >= Backoff::MAX && last <= Backoff::MAX.mul_f64(1.25));
        b.reset();
        assert!(b.next_delay() <= Backoff::MIN.mul_f64(1.25));
    }
}
