//! Upstream: the MQTT door to the cloud.
//!
//! Owns the connection to the broker (rumqttc over TCP or rustls), the durable
//! outbox pump (outbox row -> QoS 1 publish -> delete on PUBACK), the outbox
//! limits (drop telemetry oldest-first, never lifecycle/audit), inbound requests
//! and the status `fieldgate status` shows. It must not decide anything about
//! devices (that is the hub) nor write SQL (that is the store).
//!
//! - `topics.rs`: the topic scheme (`docs/mqtt-api.md` is its contract)
//! - `client.rs`: `[upstream]` -> rumqttc options, TLS, credentials, last will
//! - `link.rs`: one client over rumqttc's MQTT 3.1.1 and MQTT 5 clients
//! - `pump.rs`: packet id <-> outbox row bookkeeping, no IO
//! - `session.rs`: the task that drives the connection and the pump
//! - `requests/`: inbound requests: parsing and validation, carrying them out
//!   through the hub, audit, responses
//! - `rotate.rs`: rotation of the gateway's own client certificate, with rollback

pub mod client;
mod limit_check;
pub mod link;
pub mod pump;
pub mod requests;
pub mod rotate;
mod session;
pub mod topics;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{OutboxLimits, UpstreamConfig};
use crate::hub::HubHandle;
use crate::radio::RadioHandle;
use crate::store::outbox::OutboxGate;
use crate::store::Writer;

pub use client::{ClientError, ClientSettings};

/// The connection as `fieldgate status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    Connecting,
    Connected,
    Disconnected,
    Stopped,
}

/// Live counters and state of the upstream task, shared with the API.
#[derive(Debug)]
pub struct UpstreamStatus {
    broker: String,
    client_id: String,
    topic_prefix: String,
    gate: Arc<OutboxGate>,
    state: Mutex<ConnectionState>,
    last_error: Mutex<Option<String>>,
    alarm: Mutex<Option<String>>,
    requests: Mutex<BTreeMap<String, u64>>,
    /// Outbox rows acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Publishes handed to the client (rows, retries, live messages).
    pub published: AtomicU64,
    pub connects: AtomicU64,
    pub connection_errors: AtomicU64,
    /// Delivered rows per second over the last second, times 1000.
    delivered_rate_milli: AtomicU64,
    pub dropped_expired: AtomicU64,
    pub dropped_for_space: AtomicU64,
    pub compacted: AtomicU64,
    /// Rows too large to ever be published (deleted, counted, alarmed).
    pub undeliverable: AtomicU64,
    /// Responses that could not be published (not connected, queue full).
    pub responses_dropped: AtomicU64,
    /// Publishes the broker refused in its PUBACK (MQTT 5: not authorized, quota
    /// exceeded ...); their rows stay in the outbox.
    pub refused_by_broker: AtomicU64,
    /// Client certificate rotation (set by [`Upstream::start`]).
    rotator: Option<rotate::Rotator>,
}

/// A serializable copy of [`UpstreamStatus`] (the `upstream` field of `/v1/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamSnapshot {
    pub state: ConnectionState,
    pub broker: String,
    pub client_id: String,
    pub topic_prefix: String,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub published: u64,
    pub connects: u64,
    pub connection_errors: u64,
    pub dropped_telemetry_expired: u64,
    pub dropped_telemetry_for_space: u64,
    pub compacted: u64,
    pub refused_telemetry: u64,
    pub undeliverable: u64,
    pub responses_dropped: u64,
    /// Publishes the broker refused (MQTT 5 PUBACK reason codes); kept and sent again.
    #[serde(default)]
    pub refused_by_broker: u64,
    pub last_error: Option<String>,
    /// Set while the outbox needs attention (full of undroppable messages, stale).
    pub alarm: Option<String>,
    /// Inbound requests by outcome code (`ok`, or the error code).
    pub requests: BTreeMap<String, u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl UpstreamStatus {
    pub fn new(settings: &ClientSettings, gate: Arc<OutboxGate>) -> UpstreamStatus {
        UpstreamStatus {
            broker: settings.broker.clone(),
            client_id: settings.client_id.clone(),
            topic_prefix: settings.topics.prefix().to_string(),
            gate,
            state: Mutex::new(ConnectionState::Connecting),
            last_error: Mutex::new(None),
            alarm: Mutex::new(None),
            requests: Mutex::new(BTreeMap::new()),
            delivered: AtomicU64::new(0),
            published: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            delivered_rate_milli: AtomicU64::new(0),
            dropped_expired: AtomicU64::new(0),
            dropped_for_space: AtomicU64::new(0),
            compacted: AtomicU64::new(0),
            undeliverable: AtomicU64::new(0),
            responses_dropped: AtomicU64::new(0),
            refused_by_broker: AtomicU64::new(0),
            rotator: None,
        }
    }

    /// Rotates the gateway's MQTT client certificate and key: reconnects with the
    /// new pair and persists it when the broker accepts it, rolls back when it
    /// does not. `actor` and `via` go to the audit record.
    pub async fn rotate_client_cert(
        &self,
        writer: &crate::store::Writer,
        cert_pem: &str,
        key_pem: zeroize::Zeroizing<String>,
        actor: &str,
        via: &str,
    ) -> Result<serde_json::Value, requests::Rejection> {
        match &self.rotator {
            Some(r) => r.rotate(writer, cert_pem, key_pem, actor, via).await,
            None => Err(requests::Rejection {
                code: "rotation_not_configured",
                message: "this uplink was not started with rotation support".into(),
            }),
        }
    }

    pub fn snapshot(&self) -> UpstreamSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UpstreamSnapshot {
            state: *lock(&self.state),
            broker: self.broker.clone(),
            client_id: self.client_id.clone(),
            topic_prefix: self.topic_prefix.clone(),
            delivered: r(&self.delivered),
            delivered_per_s: r(&self.delivered_rate_milli) as f64 / 1000.0,
            published: r(&self.published),
            connects: r(&self.connects),
            connection_errors: r(&self.connection_errors),
            dropped_telemetry_expired: r(&self.dropped_expired),
            dropped_telemetry_for_space: r(&self.dropped_for_space),
            compacted: r(&self.compacted),
            refused_telemetry: self.gate.refused(),
            undeliverable: r(&self.undeliverable),
            responses_dropped: r(&self.responses_dropped),
            refused_by_broker: r(&self.refused_by_broker),
            last_error: lock(&self.last_error).clone(),
            alarm: lock(&self.alarm).clone(),
            requests: lock(&self.requests).clone(),
        }
    }

    pub fn state(&self) -> ConnectionState {
        *lock(&self.state)
    }

    fn set_state(&self, s: ConnectionState) {
        *lock(&self.state) = s;
    }

    fn set_error(&self, e: impl Into<String>) {
        *lock(&self.last_error) = Some(e.into());
    }

    fn set_alarm(&self, a: Option<String>) {
        let mut cur = lock(&self.alarm);
        if *cur != a {
            match &a {
                Some(text) => tracing::error!(alarm = %text, "upstream outbox alarm raised"),
                None => tracing::info!("upstream outbox alarm cleared"),
            }
            *cur = a;
        }
    }

    fn set_rate(&self, per_s: f64) {
        self.delivered_rate_milli
            .store((per_s.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
    }

    fn count_request(&self, code: &str) {
        *lock(&self.requests).entry(code.to_string()).or_insert(0) += 1;
    }
}

/// Everything the upstream task needs from the daemon.
pub struct UpstreamDeps {
    pub gateway_id: String,
    pub db_path: PathBuf,
    pub writer: Writer,
    pub hub: HubHandle,
    pub radios: Arc<Vec<RadioHandle>>,
    pub gate: Arc<OutboxGate>,
    /// Network-server command topics bridged to radios (ChirpStack `command/down`).
    pub bridges: Vec<crate::radio::lora::bridge::BridgeRoute>,
    pub shutdown: watch::Receiver<bool>,
}

/// The running upstream task.
pub struct Upstream {
    pub status: Arc<UpstreamStatus>,
    task: JoinHandle<()>,
}

/// Tuning with defaults that suit a gateway; tests and the benchmark adjust them.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Publishes in flight (handed to rumqttc, not yet acked).
    pub window: usize,
    /// How often to look for new rows when the outbox looked empty, besides after
    /// every commit of the store (which is when rows appear): a safety net only.
    pub idle_poll: std::time::Duration,
    /// How often the outbox limits are applied.
    pub enforce_every: std::time::Duration,
    /// How often the retained `info` document is refreshed while connected.
    pub info_every: std::time::Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            window: 100,
            idle_poll: std::time::Duration::from_millis(100),
            enforce_every: std::time::Duration::from_secs(2),
            info_every: std::time::Duration::from_secs(300),
        }
    }
}

impl Upstream {
    /// Validates `[upstream]` (files, TLS) and starts the task. Errors here are
    /// configuration errors: the daemon does not start.
    pub fn start(config: &UpstreamConfig, deps: UpstreamDeps) -> Result<Upstream, ClientError> {
        Self::start_tuned(config, deps, Tuning::default())
    }

    pub fn start_tuned(
        config: &UpstreamConfig,
        deps: UpstreamDeps,
        tuning: Tuning,
    ) -> Result<Upstream, ClientError> {
        let settings = ClientSettings::from_config(config, &deps.gateway_id)?;
        let (rotate_tx, rotate_rx) = tokio::sync::mpsc::channel(1);
        let mut status = UpstreamStatus::new(&settings, deps.gate.clone());
        status.rotator = Some(rotate::Rotator::new(
            config,
            rotate_tx,
            deps.gateway_id.as_str().into(),
        ));
        let status = Arc::new(status);
        tracing::info!(broker = %settings.broker, client_id = %settings.client_id, prefix = %settings.topics.prefix(), "upstream starting");
        let task = tokio::spawn(session::run(
            settings,
            config.outbox.clone(),
            deps,
            status.clone(),
            tuning,
            rotate_rx,
        ));
        Ok(Upstream { status, task })
    }

    /// Waits for the task to finish (it stops when the shutdown signal flips).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "upstream task failed");
        }
    }
}

/// The limits in the form the store takes.
fn limits(l: &OutboxLimits) -> (u64, u64) {
    (
        *l.max_bytes.get_ref(),
        l.max_age.as_millis().min(u64::MAX as u128) as u64,
    )
}
