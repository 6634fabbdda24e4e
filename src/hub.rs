//! The hub: the one place that decides.
//!
//! It takes device events from the radios and requests from the two doors (local
//! API, MQTT), applies the policy (admission, firmware compliance, health, local
//! rules), and turns what it decides into store transactions that update the
//! registry, append the audit record and queue the outbox messages together.
//! Events that arrive together are applied in one transaction (each under its own
//! savepoint), so a burst costs one commit. It never does IO itself beyond asking
//! the store and the radios.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::VerifyingKey;
use rusqlite::Connection;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Protocol;
use crate::model::{
    rfc3339, DeviceCommand, DeviceEvent, DeviceEventKind, DeviceId, KeyRotated, Lifecycle,
    PowerSource, RadioCommand, RadioState, Reading, Value,
};
use crate::policy::{self, Admit, Compliance, DeviceFacts, Firing, PolicyEngine, RuleStates};
use crate::radio::zigbee::INSTALL_CODE_KIND;
use crate::radio::RadioHandle;
use crate::secrets::{MasterKey, Secret};
use crate::store::audit::{AuditEntry, Outcome};
use crate::store::outbox::{self, MessageKind, NewMessage, OutboxGate};
use crate::store::requests::{self as held, PendingRequest};
use crate::store::{self, credentials, policies, registry, StoreError, Writer};

/// Longest join window anyone may open (Zigbee's own limit is 254 s); the policy
/// may lower it.
pub const MAX_PERMIT_JOIN_SECONDS: u32 = policy::MAX_JOIN_WINDOW_S;

/// Device events the radios may queue for the hub before they wait.
pub const EVENT_QUEUE: usize = 4096;

/// Most events applied in one transaction: half the queue, so the radios keep
/// queueing while a burst commits. Per-device work (the registry merge, the retained
/// state, an outbox row) is done once per burst, so under load larger bursts cost
/// less per event; a burst of 2,048 readings commits in a few milliseconds.
const MAX_EVENT_BATCH: usize = EVENT_QUEUE / 2;

/// How often availability is re-evaluated against the policy's timeouts.
const HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// How long a request for a sleeping device is held when the request does not say.
pub const DEFAULT_REQUEST_TTL_S: u64 = 3600;
/// The longest a request for a sleeping device may be held (`ttl_s`).
pub const MAX_REQUEST_TTL_S: u64 = 7 * 24 * 3600;
/// How often held requests are checked for expiry.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// What a `set` or `get` asks of a device.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceAction {
    Set(DeviceCommand),
    /// Refresh: read fresh values; `attributes` narrows what the answer shows.
    Get {
        attributes: Vec<String>,
    },
}

impl DeviceAction {
    fn operation(&self) -> &'static str {
        match self {
            DeviceAction::Set(_) => "set",
            DeviceAction::Get { .. } => "get",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            DeviceAction::Set(c) => serde_json::to_value(c).unwrap_or_default(),
            DeviceAction::Get { attributes } => json!({ "attributes": attributes }),
        }
    }
}

/// Who asked, and so who is told when a held request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOrigin {
    /// An MQTT request: the outcome is published on `response/<operation>`.
    Mqtt,
    /// The local API: the outcome is in the audit log and the device's events.
    Api,
}

impl RequestOrigin {
    fn as_str(self) -> &'static str {
        match self {
            RequestOrigin::Mqtt => "mqtt",
            RequestOrigin::Api => "api",
        }
    }
}

/// A `set` or `get` for one device.
#[derive(Debug, Clone)]
pub struct DeviceRequest {
    pub device: DeviceId,
    pub action: DeviceAction,
    pub origin: RequestOrigin,
    pub correlation_id: Option<String>,
    /// How long to hold it for a sleeping device (default [`DEFAULT_REQUEST_TTL_S`]).
    pub ttl: Option<Duration>,
    pub actor: String,
}

/// A request held for a sleeping device.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedRequest {
    pub status: &'static str,
    pub request_id: i64,
    pub device: String,
    pub operation: String,
    pub command: serde_json::Value,
    pub expires_at: String,
}

/// The outcome of a refresh: `Ok` with the response data, or why it failed.
pub type RefreshResult = Result<serde_json::Value, String>;

/// How the hub took a [`DeviceRequest`].
#[derive(Debug)]
pub enum DeviceAnswer {
    /// Handed to the radio (an awake device's `set`).
    Sent(CommandSent),
    /// An awake device is being read; the result follows on `result`.
    Refreshing {
        command_id: String,
        result: oneshot::Receiver<RefreshResult>,
    },
    /// Held until the sleeping device next speaks. For an MQTT request the `queued`
    /// response is already in the outbox: `response` is its payload.
    Queued {
        queued: QueuedRequest,
        response: Option<Vec<u8>>,
    },
}

/// Whether the hub holds requests for this device until it speaks: battery powered
/// devices sleep between polls (Zigbee end devices that are not rx-on-when-idle).
pub fn is_sleeping(d: &registry::Device) -> bool {
    PowerSource::parse(&d.power_source) == PowerSource::Battery
}

/// A request to the hub; each carries who asked, for the audit record.
#[derive(Debug)]
pub enum HubRequest {
    PermitJoin {
        radio: String,
        seconds: u32,
        actor: String,
        reply: oneshot::Sender<Result<PermitJoinAccepted, HubError>>,
    },
    Decommission {
        device: DeviceId,
        actor: String,
        reply: oneshot::Sender<Result<Decommissioned, HubError>>,
    },
    Command {
        device: DeviceId,
        command: DeviceCommand,
        actor: String,
        reply: oneshot::Sender<Result<CommandSent, HubError>>,
    },
    /// A `set` or `get` that is held for the device when it sleeps.
    Device {
        request: DeviceRequest,
        reply: oneshot::Sender<Result<DeviceAnswer, HubError>>,
    },
    ApplyPolicy {
        /// A bare policy document or a signed envelope, as received.
        document: Vec<u8>,
        source: String,
        actor: String,
        reply: oneshot::Sender<Result<PolicyApplied, HubError>>,
    },
    /// A network backup of `radio` (open-coordinator-backup JSON for Zigbee). The answer
    /// holds the network key: only for the local technician API.
    Backup {
        radio: String,
        actor: String,
        reply: oneshot::Sender<Result<serde_json::Value, HubError>>,
    },
    /// Registers a Zigbee device's install code: sealed as the device's credential, then
    /// pushed to every running Zigbee coordinator.
    AddInstallCode {
        device: DeviceId,
        code: Secret,
        actor: String,
        reply: oneshot::Sender<Result<InstallCodeAdded, HubError>>,
    },
    RemoveInstallCode {
        device: DeviceId,
        actor: String,
        reply: oneshot::Sender<Result<InstallCodeRemoved, HubError>>,
    },
    /// Rotates a Zigbee radio's network key (see `radio::zigbee`).
    RotateNetworkKey {
        radio: String,
        actor: String,
        reply: oneshot::Sender<Result<KeyRotated, HubError>>,
    },
}

/// How long a radio may take to push an install code to its coordinator.
pub const INSTALL_CODE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a key rotation may take: the longest switch delay plus the coordinator's answers.
pub const ROTATION_TIMEOUT: Duration =
    Duration::from_secs(crate::radio::zigbee::MAX_KEY_SWITCH_DELAY.as_secs() + 60);

/// What happened to an install code on one radio.
#[derive(Debug, Clone, Serialize)]
pub struct InstallCodePush {
    pub radio: String,
    pub ok: bool,
    pub detail: String,
}

/// A registered install code (never the code).
#[derive(Debug, Clone, Serialize)]
pub struct InstallCodeAdded {
    pub device: String,
    /// `true` when a code was already registered for the device and is now replaced.
    pub replaced: bool,
    pub coordinators: Vec<InstallCodePush>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstallCodeRemoved {
    pub device: String,
    pub note: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyRotationDone {
    pub radio: String,
    #[serde(flatten)]
    pub rotation: KeyRotated,
}

/// How long a radio may take to answer a backup request.
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize)]
pub struct PermitJoinAccepted {
    pub radio: String,
    pub seconds: u32,
    pub open_until: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decommissioned {
    pub device: registry::Device,
    pub credentials_destroyed: usize,
    /// What happened on the radio side.
    pub radio_removal: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandSent {
    pub device: String,
    pub command: DeviceCommand,
    /// Matches the `command_result` event the radio reports when it is done.
    pub command_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyApplied {
    pub version: u64,
    pub signed: bool,
    pub rules: usize,
}

/// Why the hub refused or failed a request; `code` is stable for API clients.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error("no radio named `{0}`")]
    UnknownRadio(String),
    #[error("radio `{0}` is not running: {1}")]
    RadioUnavailable(String, String),
    #[error("no device `{0}`")]
    UnknownDevice(String),
    #[error("device `{0}` is already decommissioned")]
    AlreadyDecommissioned(String),
    #[error("device `{0}` is decommissioned and takes no commands")]
    DeviceDecommissioned(String),
    #[error("device `{0}` is quarantined (firmware below the policy minimum) and the policy refuses commands to it")]
    DeviceQuarantined(String),
    #[error("policy refused: {0}")]
    PolicyRefused(String),
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Store(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl HubError {
    pub fn code(&self) -> &'static str {
        match self {
            HubError::UnknownRadio(_) => "unknown_radio",
            HubError::RadioUnavailable(..) => "radio_unavailable",
            HubError::UnknownDevice(_) => "unknown_device",
            HubError::AlreadyDecommissioned(_) => "already_decommissioned",
            HubError::DeviceDecommissioned(_) => "device_decommissioned",
            HubError::DeviceQuarantined(_) => "device_quarantined",
            HubError::PolicyRefused(_) => "policy_refused",
            HubError::Invalid(_) => "invalid_request",
            HubError::Store(_) => "store_error",
            HubError::ShuttingDown => "shutting_down",
        }
    }
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        HubError::Store(e.to_string())
    }
}

/// What the hub tells observers (the demo console, tests).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    DeviceJoined {
        device: String,
        radio: String,
        new: bool,
    },
    DeviceInterviewed {
        device: String,
        manufacturer: Option<String>,
        model: Option<String>,
    },
    Readings {
        device: String,
        readings: Vec<Reading>,
        /// The telemetry message's seq; `None` when the full outbox refused telemetry.
        outbox_seq: Option<i64>,
    },
    DeviceLeft {
        device: String,
    },
    PermitJoin {
        radio: String,
        seconds: u32,
    },
    Decommissioned {
        device: String,
    },
    /// Admission refused: the device is being removed from the network.
    Denied {
        device: String,
        reason: String,
    },
    Quarantined {
        device: String,
        firmware: Option<String>,
        min_version: String,
    },
    Released {
        device: String,
    },
    Health {
        device: String,
        flag: String,
        raised: bool,
    },
    RuleFired {
        rule: String,
        target: String,
        sent: bool,
    },
    PolicyApplied {
        version: u64,
    },
}

/// A handle to send requests to the hub.
#[derive(Clone)]
pub struct HubHandle {
    requests: mpsc::Sender<HubRequest>,
    notices: broadcast::Sender<Notice>,
}

impl HubHandle {
    pub async fn request(&self, req: HubRequest) -> Result<(), HubError> {
        self.requests
            .send(req)
            .await
            .map_err(|_| HubError::ShuttingDown)
    }

    /// Sends a request built around a reply channel and waits for the answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, HubError>>) -> HubRequest,
    ) -> Result<T, HubError> {
        let (reply, rx) = oneshot::channel();
        self.request(make(reply)).await?;
        rx.await.map_err(|_| HubError::ShuttingDown)?
    }

    pub async fn permit_join(
        &self,
        radio: String,
        seconds: u32,
        actor: String,
    ) -> Result<PermitJoinAccepted, HubError> {
        self.ask(|reply| HubRequest::PermitJoin {
            radio,
            seconds,
            actor,
            reply,
        })
        .await
    }

    pub async fn decommission(
        &self,
        device: DeviceId,
        actor: String,
    ) -> Result<Decommissioned, HubError> {
        self.ask(|reply| HubRequest::Decommission {
            device,
            actor,
            reply,
        })
        .await
    }

    pub async fn command(
        &self,
        device: DeviceId,
        command: DeviceCommand,
        actor: String,
    ) -> Result<CommandSent, HubError> {
        self.ask(|reply| HubRequest::Command {
            device,
            command,
            actor,
            reply,
        })
        .await
    }

    /// A `set` or `get`: sent now to an awake device, held for a sleeping one.
    pub async fn device_request(&self, request: DeviceRequest) -> Result<DeviceAnswer, HubError> {
        self.ask(|reply| HubRequest::Device { request, reply })
            .await
    }

    pub async fn apply_policy(
        &self,
        document: Vec<u8>,
        source: String,
        actor: String,
    ) -> Result<PolicyApplied, HubError> {
        self.ask(|reply| HubRequest::ApplyPolicy {
            document,
            source,
            actor,
            reply,
        })
        .await
    }

    /// A network backup of `radio`; holds the network key (local technician API only).
    pub async fn backup(
        &self,
        radio: String,
        actor: String,
    ) -> Result<serde_json::Value, HubError> {
        self.ask(|reply| HubRequest::Backup {
            radio,
            actor,
            reply,
        })
        .await
    }

    /// Registers (or replaces) a Zigbee device's install code.
    pub async fn add_install_code(
        &self,
        device: DeviceId,
        code: Secret,
        actor: String,
    ) -> Result<InstallCodeAdded, HubError> {
        self.ask(|reply| HubRequest::AddInstallCode {
            device,
            code,
            actor,
            reply,
        })
        .await
    }

    pub async fn remove_install_code(
        &self,
        device: DeviceId,
        actor: String,
    ) -> Result<InstallCodeRemoved, HubError> {
        self.ask(|reply| HubRequest::RemoveInstallCode {
            device,
            actor,
            reply,
        })
        .await
    }

    /// Rotates `radio`'s network key; answers when the switch is done or failed.
    pub async fn rotate_network_key(
        &self,
        radio: String,
        actor: String,
    ) -> Result<KeyRotationDone, HubError> {
        self.ask(|reply| HubRequest::RotateNetworkKey {
            radio: radio.clone(),
            actor,
            reply,
        })
        .await
        .map(|rotation| KeyRotationDone { radio, rotation })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}

/// How often the hub proves it is alive (store round trip + `WATCHDOG=1`).
pub struct Liveness {
    pub interval: Duration,
    pub on_alive: Box<dyn Fn() + Send + Sync>,
}

pub struct Hub {
    gateway_id: Arc<str>,
    writer: Writer,
    radios: HashMap<String, RadioHandle>,
    join_windows: HashMap<String, Instant>,
    notices: broadcast::Sender<Notice>,
    /// Closed to telemetry by the upstream task when the outbox is full of
    /// messages that are never dropped.
    outbox_gate: Arc<OutboxGate>,
    policy: Arc<PolicyEngine>,
    rule_states: RuleStates,
    /// When set, only policies signed by this key are accepted.
    pinned_key: Option<VerifyingKey>,
    /// Seals device credentials (install codes); `None` in rigs without one.
    master_key: Option<Arc<MasterKey>>,
    /// Devices with held requests (a superset: the store decides).
    queued: HashSet<String>,
    /// Refreshes of awake devices, by command id: the attributes asked for and who waits.
    refreshing: HashMap<String, (Vec<String>, oneshot::Sender<RefreshResult>)>,
}

/// What applying one event decided beyond the store: notices and radio actions.
#[derive(Default)]
struct Applied {
    notices: Vec<Notice>,
    radio_actions: Vec<(String, RadioCommand)>,
    /// Readings to feed the local rules once committed.
    readings: Option<(String, Vec<Reading>)>,
    /// A command result: (command id, ok, detail, the device's state after it).
    result: Option<(String, bool, String, serde_json::Value)>,
    /// The device itself was heard (it is awake now).
    spoke: Option<String>,
    /// Readings changed the device's state (its retained state message is due).
    state: Option<(DeviceId, String, SystemTime)>,
}

/// A radio operation the hub relays without waiting on it (see `Hub::relay`).
struct RelayJob {
    radio: String,
    actor: String,
    /// The audit action, e.g. `radio.backup`.
    action: &'static str,
    timeout: Duration,
    /// Why it failed when the driver dropped the request unanswered.
    stopped: &'static str,
}

/// The immutable context an event needs inside the writer transaction.
struct EventContext {
    gateway_id: Arc<str>,
    policy: Arc<PolicyEngine>,
    open_windows: HashSet<String>,
    queue_telemetry: bool,
    /// Someone listens to notices: build the per-reading ones.
    notify_readings: bool,
    /// The policy has local rules: hand readings to the rule engine.
    rules: bool,
}

impl Hub {
    pub fn new(
        gateway_id: &str,
        writer: Writer,
        radios: &[RadioHandle],
    ) -> (Hub, HubHandle, mpsc::Receiver<HubRequest>) {
        let (req_tx, req_rx) = mpsc::channel(256);
        let (notices, _) = broadcast::channel(1024);
        let engine = PolicyEngine::new(PolicyEngine::default_policy());
        let hub = Hub {
            gateway_id: gateway_id.into(),
            writer,
            radios: radios.iter().map(|r| (r.name.clone(), r.clone())).collect(),
            join_windows: HashMap::new(),
            notices: notices.clone(),
            outbox_gate: Arc::new(OutboxGate::default()),
            rule_states: engine.new_states(),
            policy: Arc::new(engine),
            pinned_key: None,
            master_key: None,
            queued: HashSet::new(),
            refreshing: HashMap::new(),
        };
        (
            hub,
            HubHandle {
                requests: req_tx,
                notices,
            },
            req_rx,
        )
    }

    /// Starts from a cached policy (validated earlier) and a pinned signing key.
    pub fn with_policy(
        mut self,
        policy: Option<policy::Policy>,
        pinned_key: Option<VerifyingKey>,
    ) -> Hub {
        if let Some(p) = policy {
            let engine = PolicyEngine::new(p);
            self.rule_states = engine.new_states();
            self.policy = Arc::new(engine);
        }
        self.pinned_key = pinned_key;
        self
    }

    /// The master key that seals device credentials the hub stores (install codes).
    pub fn with_master_key(mut self, key: Arc<MasterKey>) -> Hub {
        self.master_key = Some(key);
        self
    }

    /// Opens the hub's join window on `radio` without telling the radio. For
    /// radios whose joins the gateway itself accepts or refuses (LoRaWAN join
    /// requests, BLE discovery) and for rigs that drive the hub directly;
    /// technicians and the cloud use [`HubHandle::permit_join`], which is audited.
    pub fn open_join_window(&mut self, radio: &str, duration: Duration) {
        self.join_windows
            .insert(radio.to_string(), Instant::now() + duration);
    }

    /// The gate the hub consults before queueing telemetry (shared with upstream).
    pub fn outbox_gate(&self) -> Arc<OutboxGate> {
        self.outbox_gate.clone()
    }

    /// Runs until `shutdown` flips and both inputs have been drained.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<DeviceEvent>,
        mut requests: mpsc::Receiver<HubRequest>,
        mut shutdown: watch::Receiver<bool>,
        liveness: Option<Liveness>,
    ) {
        let interval = liveness
            .as_ref()
            .map(|l| l.interval)
            .unwrap_or(Duration::from_secs(3600));
        // The first ping waits one interval, so it never precedes READY=1.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health = tokio::time::interval_at(
            tokio::time::Instant::now() + HEALTH_INTERVAL,
            HEALTH_INTERVAL,
        );
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.announce_install_code_policy().await;
        let mut expiry = tokio::time::interval(EXPIRY_INTERVAL);
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.recover_held_requests().await;
        loop {
            tokio::select! {
                Some(ev) = events.recv() => {
                    let mut batch = vec![ev];
                    while batch.len() < MAX_EVENT_BATCH {
                        match events.try_recv() {
                            Ok(ev) => batch.push(ev),
                            Err(_) => break,
                        }
                    }
                    self.on_events(batch).await;
                }
                Some(req) = requests.recv() => self.on_request(req).await,
                _ = tick.tick() => {
                    if let Some(l) = &liveness {
                        // Liveness means the loop turns and the store commits.
                        match self.writer.write(|_| Ok(())).await {
                            Ok(()) => (l.on_alive)(),
                            Err(e) => tracing::error!(error = %e, "store not writable: withholding the watchdog ping"),
                        }
                    }
                }
                _ = health.tick() => self.check_availability().await,
                _ = expiry.tick(), if !self.queued.is_empty() => self.expire_held_requests().await,
                _ = crate::shutdown::signalled(&mut shutdown) => break,
            }
        }
        // Drain what is already queued so nothing accepted is lost.
        let mut rest = Vec::new();
        while let Ok(ev) = events.try_recv() {
            rest.push(ev);
        }
        if !rest.is_empty() {
            self.on_events(rest).await;
        }
        while let Ok(req) = requests.try_recv() {
            self.on_request(req).await;
        }
        // Wait for the last writes to commit.
        let _ = self.writer.write(|_| Ok(())).await;
        tracing::info!("hub stopped");
    }

    fn notify(&self, n: Notice) {
        let _ = self.notices.send(n);
    }

    fn window_open(&self, radio: &str) -> bool {
        self.join_windows
            .get(radio)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Whether a join window is open on `radio` now.
    pub fn join_window_open(&self, radio: &str) -> bool {
        self.window_open(radio)
    }

    fn radio_sender(&self, radio: &str) -> Option<mpsc::Sender<RadioCommand>> {
        let h = self.radios.get(radio)?;
        (*h.state.borrow() == RadioState::Up)
            .then(|| h.commands.clone())
            .flatten()
    }

    async fn on_events(&mut self, batch: Vec<DeviceEvent>) {
        let ctx = EventContext {
            gateway_id: self.gateway_id.clone(),
            policy: self.policy.clone(),
            open_windows: self
                .join_windows
                .keys()
                .filter(|r| self.window_open(r))
                .cloned()
                .collect(),
            queue_telemetry: self.outbox_gate.admit(MessageKind::Telemetry),
            notify_readings: self.notices.receiver_count() > 0,
            rules: !self.policy.policy.rules.is_empty(),
        };
        let count = batch.len();
        let result = self
            .writer
            .write(move |c| apply_events(c, &ctx, &batch))
            .await;
        let applied = match result {
            Ok(a) => {
                self.outbox_gate.appended();
                a
            }
            Err(e) => {
                tracing::error!(events = count, error = %e, "could not commit device events");
                return;
            }
        };
        let mut rule_input = Vec::new();
        let mut awake = Vec::new();
        let mut told_to_leave: HashSet<(String, String)> = HashSet::new();
        for a in applied {
            if let Some((command_id, ok, detail, state)) = a.result {
                if let Some((attributes, tx)) = self.refreshing.remove(&command_id) {
                    let answer = if ok {
                        Ok(json!({"command_id": command_id, "detail": detail,
                                  "state": state_subset(&state, &attributes)}))
                    } else {
                        Err(detail)
                    };
                    let _ = tx.send(answer);
                }
            }
            for n in a.notices {
                self.notify(n);
            }
            for (radio, cmd) in a.radio_actions {
                // One leave request per device per burst, however many of its frames
                // the burst held.
                if let RadioCommand::Remove { native_address } = &cmd {
                    if !told_to_leave.insert((radio.clone(), native_address.clone())) {
                        continue;
                    }
                }
                self.send_to_radio(&radio, cmd).await;
            }
            if let Some(r) = a.readings {
                rule_input.push(r);
            }
            awake.extend(a.spoke);
        }
        awake.sort();
        awake.dedup();
        for device in awake {
            if self.queued.contains(&device) {
                self.dispatch_held(&device).await;
            }
        }
        for (device, readings) in rule_input {
            self.run_rules(&device, &readings).await;
        }
    }

    async fn send_to_radio(&self, radio: &str, cmd: RadioCommand) -> bool {
        match self.radio_sender(radio) {
            Some(tx) => tx.send(cmd).await.is_ok(),
            None => {
                tracing::warn!(radio, command = ?cmd, "radio not running: command not delivered");
                false
            }
        }
    }

    /// Feeds committed readings to the local rules and carries out what fires.
    async fn run_rules(&mut self, device: &str, readings: &[Reading]) {
        if self.policy.policy.rules.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut firings: Vec<Firing> = Vec::new();
        for r in readings {
            firings.extend(self.policy.on_reading(
                &mut self.rule_states,
                device,
                &r.name,
                &r.value,
                now,
            ));
        }
        for f in firings {
            self.fire(f).await;
        }
    }

    async fn fire(&mut self, f: Firing) {
        let command = device_command_from_json(&f.command);
        let target = DeviceId::parse(&f.device);
        let gw = self.gateway_id.clone();
        let lookup = target.clone();
        let device = match lookup {
            Some(id) => self
                .writer
                .write(move |c| registry::get(c, &id))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let mut detail = String::new();
        let mut sent_cmd = None;
        match (&command, &device) {
            (None, _) => detail = "the rule's command is not one this gateway can send".into(),
            (_, None) => detail = "the target device is not in the registry".into(),
            (Some(cmd), Some(d)) => match self.command_refusal(d) {
                Some(e) => detail = e.to_string(),
                None => {
                    let command_id = uuid::Uuid::now_v7().to_string();
                    let rc = RadioCommand::Set {
                        native_address: d.native_address.clone(),
                        command: *cmd,
                        command_id: command_id.clone(),
                    };
                    if self.send_to_radio(&d.radio, rc).await {
                        sent_cmd = Some(command_id);
                    } else {
                        detail = format!("radio `{}` is not running", d.radio);
                    }
                }
            },
        }
        let sent = sent_cmd.is_some();
        let outcome = if sent {
            Outcome::Accepted
        } else {
            Outcome::Failed
        };
        let details = json!({"target": f.device, "command": f.command, "trigger_value": f.trigger_value,
                             "command_id": sent_cmd, "error": if sent { None } else { Some(detail.clone()) }});
        let rule = f.rule.clone();
        let target_id = target.clone();
        let res = self
            .writer
            .write(move |c| {
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        format!("rule:{rule}"),
                        "rule.fire",
                        rule.as_str(),
                        outcome,
                        details.clone(),
                    ),
                )?;
                if let Some(id) = &target_id {
                    lifecycle_msg(
                        c,
                        &gw,
                        id,
                        "rule_fired",
                        json!({"rule": rule, "sent": sent, "detail": details}),
                        SystemTime::now(),
                    )?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = res {
            tracing::error!(rule = %f.rule, error = %e, "could not record a rule firing");
        }
        self.notify(Notice::RuleFired {
            rule: f.rule,
            target: f.device,
            sent,
        });
    }

    /// Why a command to this device is refused, if it is.
    fn command_refusal(&self, d: &registry::Device) -> Option<HubError> {
        if d.lifecycle == Lifecycle::Decommissioned.as_str() {
            return Some(HubError::DeviceDecommissioned(d.id.clone()));
        }
        if d.lifecycle == Lifecycle::Quarantined.as_str() {
            let facts = facts_of(d);
            let allowed = matches!(
                self.policy.firmware(&facts, d.firmware.as_deref()),
                Compliance::Below {
                    commands_allowed: true,
                    ..
                }
            );
            if !allowed {
                return Some(HubError::DeviceQuarantined(d.id.clone()));
            }
        }
        None
    }

    async fn on_request(&mut self, req: HubRequest) {
        match req {
            HubRequest::PermitJoin {
                radio,
                seconds,
                actor,
                reply,
            } => {
                let r = self.permit_join(&radio, seconds, &actor).await;
                let _ = reply.send(r);
            }
            HubRequest::Decommission {
                device,
                actor,
                reply,
            } => {
                let r = self.decommission(&device, &actor).await;
                let _ = reply.send(r);
            }
            HubRequest::Command {
                device,
                command,
                actor,
                reply,
            } => {
                let r = self.command(&device, command, &actor).await;
                let _ = reply.send(r);
            }
            HubRequest::Device { request, reply } => {
                let r = self.device_request(request).await;
                let _ = reply.send(r);
            }
            HubRequest::ApplyPolicy {
                document,
                source,
                actor,
                reply,
            } => {
                let r = self.apply_policy(&document, &source, &actor).await;
                let _ = reply.send(r);
            }
            HubRequest::Backup {
                radio,
                actor,
                reply,
            } => self.backup(radio, actor, reply).await,
            HubRequest::AddInstallCode {
                device,
                code,
                actor,
                reply,
            } => self.add_install_code(device, code, actor, reply).await,
            HubRequest::RemoveInstallCode {
                device,
                actor,
                reply,
            } => {
                let r = self.remove_install_code(&device, &actor).await;
                let _ = reply.send(r);
            }
            HubRequest::RotateNetworkKey {
                radio,
                actor,
                reply,
            } => self.rotate_network_key(radio, actor, reply).await,
        }
    }

    /// Tells every Zigbee driver whether joins must use install codes. Drivers keep it and
    /// apply it after each coordinator start, so it goes to them whatever their state.
    async fn announce_install_code_policy(&self) {
        let required = self.policy.policy.admission.require_install_code;
        for h in self.radios.values() {
            if h.protocol != Protocol::Zigbee {
                continue;
            }
            if let Some(tx) = &h.commands {
                if tx
                    .send(RadioCommand::RequireInstallCodes { required })
                    .await
                    .is_err()
                {
                    tracing::warn!(radio = %h.name, "driver stopped: install-code policy not delivered");
                }
            }
        }
    }

    /// The command channel of a running radio, or why there is none.
    fn running_radio(
        &self,
        radio: &str,
    ) -> Result<(Protocol, mpsc::Sender<RadioCommand>), HubError> {
        let h = self
            .radios
            .get(radio)
            .ok_or_else(|| HubError::UnknownRadio(radio.to_string()))?;
        let state = h.state.borrow().clone();
        match (&h.commands, state) {
            (Some(tx), RadioState::Up) => Ok((h.protocol, tx.clone())),
            (None, _) => Err(HubError::RadioUnavailable(
                radio.to_string(),
                "no driver runs for it".into(),
            )),
            (_, RadioState::Unavailable(why) | RadioState::Down(why)) => {
                Err(HubError::RadioUnavailable(radio.to_string(), why))
            }
            _ => Err(HubError::RadioUnavailable(
                radio.to_string(),
                "starting".into(),
            )),
        }
    }

    /// Seals the code as the device's credential and audits it in one transaction, then
    /// pushes it to every running Zigbee coordinator from a task (the hub does not wait on
    /// radios). Radios that are not running get it at their next start.
    async fn add_install_code(
        &mut self,
        device: DeviceId,
        code: Secret,
        actor: String,
        reply: oneshot::Sender<Result<InstallCodeAdded, HubError>>,
    ) {
        let entry = |outcome, details| {
            AuditEntry::new(
                &actor,
                "device.install_code.add",
                device.as_str(),
                outcome,
                details,
            )
        };
        let refusal = if !device.as_str().starts_with("zigbee:") {
            Some(HubError::Invalid(format!(
                "`{device}` is not a Zigbee device: install codes are for Zigbee devices"
            )))
        } else if self.master_key.is_none() {
            Some(HubError::Store(
                "no master key: install codes cannot be stored encrypted".into(),
            ))
        } else {
            None
        };
        if let Some(e) = refusal {
            let audited = self
                .audit(entry(Outcome::Refused, json!({"error": e.to_string()})))
                .await;
            let _ = reply.send(audited.and(Err(e)));
            return;
        }
        let Some(key) = self.master_key.clone() else {
            return;
        };
        let gw = self.gateway_id.clone();
        let record = |replaced: bool| {
            entry(
                Outcome::Accepted,
                json!({"stored": "encrypted", "replaced": replaced, "code_bytes": code.expose().len()}),
            )
        };
        let (owner, sealed) = (device.to_string(), code.clone());
        let pre = record(false);
        let pre_replaced = record(true);
        let stored = self
            .writer
            .write(move |c| {
                let replaced = credentials::exists(c, &owner, INSTALL_CODE_KIND)?;
                credentials::put(c, &key, &owner, INSTALL_CODE_KIND, &sealed)?;
                store::record_audit(c, &gw, if replaced { &pre_replaced } else { &pre })?;
                Ok(replaced)
            })
            .await;
        let replaced = match stored {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        let native = device.as_str().trim_start_matches("zigbee:").to_string();
        let mut waiting = Vec::new();
        let mut coordinators = Vec::new();
        for h in self
            .radios
            .values()
            .filter(|h| h.protocol == Protocol::Zigbee)
        {
            match self.running_radio(&h.name) {
                Ok((_, tx)) => {
                    let (rtx, rrx) = oneshot::channel();
                    let cmd = RadioCommand::AddInstallCode {
                        native_address: native.clone(),
                        code: code.clone(),
                        reply: rtx,
                    };
                    if tx.send(cmd).await.is_ok() {
                        waiting.push((h.name.clone(), rrx));
                    } else {
                        coordinators.push(InstallCodePush {
                            radio: h.name.clone(),
                            ok: false,
                            detail: "driver stopped; pushed at its next start".into(),
                        });
                    }
                }
                Err(e) => coordinators.push(InstallCodePush {
                    radio: h.name.clone(),
                    ok: false,
                    detail: format!("{e}; pushed at its next start"),
                }),
            }
        }
        let writer = self.writer.clone();
        let gw = self.gateway_id.clone();
        tokio::spawn(async move {
            for (radio, rx) in waiting {
                let (ok, detail) = match tokio::time::timeout(INSTALL_CODE_TIMEOUT, rx).await {
                    Ok(Ok(Ok(()))) => (true, "registered with the coordinator".to_string()),
                    Ok(Ok(Err(e))) => (false, e),
                    Ok(Err(_)) => (
                        false,
                        "the driver stopped before answering; pushed at its next start".into(),
                    ),
                    Err(_) => (
                        false,
                        format!(
                            "no answer within {INSTALL_CODE_TIMEOUT:?}; pushed at the next start"
                        ),
                    ),
                };
                coordinators.push(InstallCodePush { radio, ok, detail });
            }
            let failed: Vec<&InstallCodePush> = coordinators.iter().filter(|p| !p.ok).collect();
            if !failed.is_empty() {
                let details = json!({"coordinators": failed});
                let record = AuditEntry::new(
                    &actor,
                    "device.install_code.push",
                    device.as_str(),
                    Outcome::Failed,
                    details,
                );
                let _ = writer
                    .write(move |c| store::record_audit(c, &gw, &record).map(|_| ()))
                    .await;
            }
            let _ = reply.send(Ok(InstallCodeAdded {
                device: device.to_string(),
                replaced,
                coordinators,
            }));
        });
    }

    async fn remove_install_code(
        &mut self,
        device: &DeviceId,
        actor: &str,
    ) -> Result<InstallCodeRemoved, HubError> {
        let gw = self.gateway_id.clone();
        let (owner, actor_s, id) = (device.to_string(), actor.to_string(), device.clone());
        let removed = self
            .writer
            .write(move |c| {
                let removed = credentials::remove(c, &owner, INSTALL_CODE_KIND)?;
                let (outcome, details) = if removed {
                    (Outcome::Accepted, json!({"destroyed": true}))
                } else {
                    (
                        Outcome::Refused,
                        json!({"error": "no install code registered"}),
                    )
                };
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        &actor_s,
                        "device.install_code.remove",
                        id.as_str(),
                        outcome,
                        details,
                    ),
                )?;
                Ok(removed)
            })
            .await?;
        if !removed {
            return Err(HubError::UnknownDevice(format!(
                "{device} (no install code registered)"
            )));
        }
        Ok(InstallCodeRemoved {
            device: device.to_string(),
            note: "destroyed in the gateway; a coordinator keeps the derived key until it resets",
        })
    }

    /// Checks and audits a rotation request, hands it to the radio, and audits the outcome
    /// from a task when the radio answers (the switch waits `key_switch_delay`).
    async fn rotate_network_key(
        &mut self,
        radio: String,
        actor: String,
        reply: oneshot::Sender<Result<KeyRotated, HubError>>,
    ) {
        let entry = |outcome, details| {
            AuditEntry::new(&actor, "radio.rotate_network_key", &radio, outcome, details)
        };
        let sender = self.running_radio(&radio).and_then(|(protocol, tx)| {
            if protocol == Protocol::Zigbee {
                Ok(tx)
            } else {
                Err(HubError::Invalid(format!(
                    "radio `{radio}` is a {protocol} radio: network key rotation is supported on Zigbee (Z-Stack) coordinators only"
                )))
            }
        });
        let sender = match sender {
            Ok(s) => s,
            Err(e) => {
                let audited = self
                    .audit(entry(Outcome::Refused, json!({"error": e.to_string()})))
                    .await;
                let _ = reply.send(audited.and(Err(e)));
                return;
            }
        };
        // Durable record first, then the action.
        if let Err(e) = self
            .audit(entry(Outcome::Accepted, json!({"phase": "started"})))
            .await
        {
            let _ = reply.send(Err(e));
            return;
        }
        self.relay(
            sender,
            RelayJob {
                radio,
                actor,
                action: "radio.rotate_network_key",
                timeout: ROTATION_TIMEOUT,
                stopped: "the driver stopped before the switch; the old network key stays active",
            },
            |reply| RadioCommand::RotateNetworkKey { reply },
            |v: &KeyRotated| {
                json!({"phase": "completed", "previous_key_seq": v.previous_key_seq,
                       "key_seq": v.key_seq, "switch_delay_ms": v.switch_delay_ms})
            },
            |e: &HubError| json!({"phase": "failed", "error": e.to_string()}),
            reply,
        )
        .await;
    }

    /// Checks and audits a backup request and hands it to the radio. The radio's answer goes
    /// straight back to the caller from a task (the hub does not wait on the radio); the
    /// outcome is audited there, without the key.
    async fn backup(
        &mut self,
        radio: String,
        actor: String,
        reply: oneshot::Sender<Result<serde_json::Value, HubError>>,
    ) {
        let sender = match self.running_radio(&radio) {
            Ok((_, tx)) => tx,
            Err(e) => {
                let audited = self
                    .audit(AuditEntry::new(
                        &actor,
                        "radio.backup",
                        &radio,
                        Outcome::Refused,
                        json!({"error": e.to_string()}),
                    ))
                    .await;
                let _ = reply.send(audited.and(Err(e)));
                return;
            }
        };
        self.relay(
            sender,
            RelayJob {
                radio,
                actor,
                action: "radio.backup",
                timeout: BACKUP_TIMEOUT,
                stopped: "the driver stopped before answering",
            },
            |reply| RadioCommand::Backup { reply },
            // Never the key: what was exported, and how many devices.
            |v: &serde_json::Value| {
                json!({"exported": "network parameters and network key",
                       "devices": v["devices"].as_array().map_or(0, Vec::len)})
            },
            |e: &HubError| json!({"error": e.to_string()}),
            reply,
        )
        .await;
    }

    /// Hands a checked radio operation to its driver. The answer is awaited (with a
    /// timeout), audited and sent back from a task, so the hub never waits on a radio;
    /// the caller gets the answer only once its audit record is committed.
    #[allow(clippy::too_many_arguments)]
    async fn relay<T: Send + 'static>(
        &self,
        sender: mpsc::Sender<RadioCommand>,
        job: RelayJob,
        command: impl FnOnce(oneshot::Sender<Result<T, String>>) -> RadioCommand,
        done: impl FnOnce(&T) -> serde_json::Value + Send + 'static,
        failed: impl FnOnce(&HubError) -> serde_json::Value + Send + 'static,
        reply: oneshot::Sender<Result<T, HubError>>,
    ) {
        let RelayJob {
            radio,
            actor,
            action,
            timeout,
            stopped,
        } = job;
        let (tx, rx) = oneshot::channel();
        if sender.send(command(tx)).await.is_err() {
            let e = HubError::RadioUnavailable(radio.clone(), "driver stopped".into());
            let audited = self
                .audit(AuditEntry::new(
                    &actor,
                    action,
                    &radio,
                    Outcome::Failed,
                    failed(&e),
                ))
                .await;
            let _ = reply.send(audited.and(Err(e)));
            return;
        }
        let writer = self.writer.clone();
        let gw = self.gateway_id.clone();
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Ok(v))) => Ok(v),
                Ok(Ok(Err(why))) => Err(HubError::RadioUnavailable(radio.clone(), why)),
                Ok(Err(_)) => Err(HubError::RadioUnavailable(radio.clone(), stopped.into())),
                Err(_) => Err(HubError::RadioUnavailable(
                    radio.clone(),
                    format!("no answer within {timeout:?}"),
                )),
            };
            let record = match &answer {
                Ok(v) => AuditEntry::new(&actor, action, &radio, Outcome::Accepted, done(v)),
                Err(e) => AuditEntry::new(&actor, action, &radio, Outcome::Failed, failed(e)),
            };
            let audited = writer
                .write(move |c| store::record_audit(c, &gw, &record).map(|_| ()))
                .await
                .map_err(HubError::from);
            let _ = reply.send(audited.and(answer));
        });
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), HubError> {
        let gw = self.gateway_id.clone();
        self.writer
            .write(move |c| store::record_audit(c, &gw, &entry).map(|_| ()))
            .await?;
        Ok(())
    }

    async fn permit_join(
        &mut self,
        radio: &str,
        seconds: u32,
        actor: &str,
    ) -> Result<PermitJoinAccepted, HubError> {
        let max = self
            .policy
            .policy
            .admission
            .max_join_window_s
            .min(MAX_PERMIT_JOIN_SECONDS);
        let check = (|| {
            if seconds == 0 || seconds > max {
                return Err(HubError::Invalid(format!(
                    "seconds must be between 1 and {max}"
                )));
            }
            let handle = self
                .radios
                .get(radio)
                .ok_or_else(|| HubError::UnknownRadio(radio.to_string()))?;
            let state = handle.state.borrow().clone();
            match (&handle.commands, &state) {
                (Some(tx), RadioState::Up) => Ok(tx.clone()),
                (_, RadioState::Unavailable(why) | RadioState::Down(why)) => {
                    Err(HubError::RadioUnavailable(radio.to_string(), why.clone()))
                }
                _ => Err(HubError::RadioUnavailable(
                    radio.to_string(),
                    "starting".into(),
                )),
            }
        })();
        let sender = match check {
            Ok(s) => s,
            Err(e) => {
                self.audit(AuditEntry::new(
                    actor,
                    "radio.permit_join",
                    radio,
                    Outcome::Refused,
                    json!({"seconds": seconds, "error": e.to_string()}),
                ))
                .await?;
                return Err(e);
            }
        };
        // Durable record first, then the action.
        let until = SystemTime::now() + Duration::from_secs(seconds as u64);
        self.audit(AuditEntry::new(
            actor,
            "radio.permit_join",
            radio,
            Outcome::Accepted,
            json!({"seconds": seconds, "open_until": rfc3339(until)}),
        ))
        .await?;
        if sender
            .send(RadioCommand::PermitJoin { seconds })
            .await
            .is_err()
        {
            let e = HubError::RadioUnavailable(radio.to_string(), "driver stopped".into());
            self.audit(AuditEntry::new(
                actor,
                "radio.permit_join",
                radio,
                Outcome::Failed,
                json!({"error": e.to_string()}),
            ))
            .await?;
            return Err(e);
        }
        self.join_windows.insert(
            radio.to_string(),
            Instant::now() + Duration::from_secs(seconds as u64),
        );
        self.notify(Notice::PermitJoin {
            radio: radio.to_string(),
            seconds,
        });
        Ok(PermitJoinAccepted {
            radio: radio.to_string(),
            seconds,
            open_until: rfc3339(until),
        })
    }

    async fn decommission(
        &mut self,
        device: &DeviceId,
        actor: &str,
    ) -> Result<Decommissioned, HubError> {
        let gw = self.gateway_id.clone();
        let id = device.clone();
        let actor_s = actor.to_string();
        let radios_up: HashSet<String> = self
            .radios
            .keys()
            .filter(|r| self.radio_sender(r).is_some())
            .cloned()
            .collect();
        let outcome = self
            .writer
            .write(move |c| {
                let refuse =
                    |c: &Connection, e: HubError| -> Result<Result<_, HubError>, StoreError> {
                        store::record_audit(
                            c,
                            &gw,
                            &AuditEntry::new(
                                &actor_s,
                                "device.decommission",
                                id.as_str(),
                                Outcome::Refused,
                                json!({"error": e.to_string()}),
                            ),
                        )?;
                        Ok(Err(e))
                    };
                let Some(d) = registry::get(c, &id)? else {
                    return refuse(c, HubError::UnknownDevice(id.to_string()));
                };
                if d.lifecycle == Lifecycle::Decommissioned.as_str() {
                    return refuse(c, HubError::AlreadyDecommissioned(id.to_string()));
                }
                let radio_removal = if radios_up.contains(&d.radio) {
                    "requested"
                } else {
                    "radio not running: the device was not told to leave"
                };
                let destroyed = retire(
                    c,
                    &gw,
                    &id,
                    "decommissioned",
                    json!({"radio_removal": radio_removal}),
                )?;
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        &actor_s,
                        "device.decommission",
                        id.as_str(),
                        Outcome::Accepted,
                        json!({"credentials_destroyed": destroyed, "radio_removal": radio_removal}),
                    ),
                )?;
                let device = registry::get(c, &id)?
                    .ok_or_else(|| StoreError::Invalid("device vanished".into()))?;
                Ok(Ok((device, destroyed, radio_removal.to_string())))
            })
            .await??;
        let (d, destroyed, radio_removal) = outcome;
        self.send_to_radio(
            &d.radio.clone(),
            RadioCommand::Remove {
                native_address: d.native_address.clone(),
            },
        )
        .await;
        self.notify(Notice::Decommissioned {
            device: d.id.clone(),
        });
        Ok(Decommissioned {
            device: d,
            credentials_destroyed: destroyed,
            radio_removal,
        })
    }

    async fn command(
        &mut self,
        device: &DeviceId,
        command: DeviceCommand,
        actor: &str,
    ) -> Result<CommandSent, HubError> {
        let id = device.clone();
        let d = self.writer.write(move |c| registry::get(c, &id)).await?;
        let refusal = match &d {
            None => Some(HubError::UnknownDevice(device.to_string())),
            Some(d) => self.command_refusal(d).or_else(|| {
                self.radio_sender(&d.radio)
                    .is_none()
                    .then(|| HubError::RadioUnavailable(d.radio.clone(), "not running".into()))
            }),
        };
        if let Some(e) = refusal {
            self.audit(AuditEntry::new(
                actor,
                "device.command",
                device.as_str(),
                Outcome::Refused,
                json!({"command": command, "error": e.to_string()}),
            ))
            .await?;
            return Err(e);
        }
        let Some(d) = d else {
            return Err(HubError::UnknownDevice(device.to_string()));
        };
        let command_id = uuid::Uuid::now_v7().to_string();
        self.audit(AuditEntry::new(
            actor,
            "device.command",
            device.as_str(),
            Outcome::Accepted,
            json!({"command": command, "command_id": command_id}),
        ))
        .await?;
        let rc = RadioCommand::Set {
            native_address: d.native_address.clone(),
            command,
            command_id: command_id.clone(),
        };
        if !self.send_to_radio(&d.radio, rc).await {
            return Err(HubError::RadioUnavailable(
                d.radio.clone(),
                "driver stopped".into(),
            ));
        }
        Ok(CommandSent {
            device: device.to_string(),
            command,
            command_id,
        })
    }

    /// A `set` or `get`: refused as commands are, held for a sleeping device (the row,
    /// the audit record and the `queued` response in one transaction), else carried out.
    async fn device_request(&mut self, r: DeviceRequest) -> Result<DeviceAnswer, HubError> {
        let id = r.device.clone();
        let d = self.writer.write(move |c| registry::get(c, &id)).await?;
        let operation = r.action.operation();
        let command = r.action.to_json();
        let refusal = match &d {
            None => Some(HubError::UnknownDevice(r.device.to_string())),
            Some(d) => self.command_refusal(d),
        };
        let d = match (refusal, d) {
            (None, Some(d)) => d,
            (refusal, _) => {
                let e = refusal.unwrap_or_else(|| HubError::UnknownDevice(r.device.to_string()));
                let action = match r.action {
                    DeviceAction::Set(_) => "device.command",
                    DeviceAction::Get { .. } => "device.refresh",
                };
                self.audit(AuditEntry::new(
                    &r.actor,
                    action,
                    r.device.as_str(),
                    Outcome::Refused,
                    json!({"operation": operation, "command": command,
                           "correlation_id": r.correlation_id, "error": e.to_string()}),
                ))
                .await?;
                return Err(e);
            }
        };
        if is_sleeping(&d) {
            return self.hold(r, operation, command).await;
        }
        match r.action {
            DeviceAction::Set(cmd) => Ok(DeviceAnswer::Sent(
                self.command(&r.device, cmd, &r.actor).await?,
            )),
            DeviceAction::Get { attributes } => {
                if self.radio_sender(&d.radio).is_none() {
                    let e = HubError::RadioUnavailable(d.radio.clone(), "not running".into());
                    self.audit(AuditEntry::new(
                        &r.actor,
                        "device.refresh",
                        r.device.as_str(),
                        Outcome::Refused,
                        json!({"error": e.to_string()}),
                    ))
                    .await?;
                    return Err(e);
                }
                let command_id = uuid::Uuid::now_v7().to_string();
                self.audit(AuditEntry::new(
                    &r.actor,
                    "device.refresh",
                    r.device.as_str(),
                    Outcome::Accepted,
                    json!({"command_id": command_id, "attributes": attributes,
                           "correlation_id": r.correlation_id}),
                ))
                .await?;
                let (tx, rx) = oneshot::channel();
                self.refreshing.insert(command_id.clone(), (attributes, tx));
                let rc = RadioCommand::Read {
                    native_address: d.native_address.clone(),
                    command_id: command_id.clone(),
                };
                if !self.send_to_radio(&d.radio, rc).await {
                    self.refreshing.remove(&command_id);
                    return Err(HubError::RadioUnavailable(
                        d.radio.clone(),
                        "driver stopped".into(),
                    ));
                }
                Ok(DeviceAnswer::Refreshing {
                    command_id,
                    result: rx,
                })
            }
        }
    }

    /// Holds a request for a sleeping device until it next speaks.
    async fn hold(
        &mut self,
        r: DeviceRequest,
        operation: &'static str,
        command: serde_json::Value,
    ) -> Result<DeviceAnswer, HubError> {
        let ttl = r
            .ttl
            .unwrap_or(Duration::from_secs(DEFAULT_REQUEST_TTL_S))
            .min(Duration::from_secs(MAX_REQUEST_TTL_S));
        let expires = SystemTime::now() + ttl;
        let gw = self.gateway_id.clone();
        let req = r.clone();
        let (queued, response) = self
            .writer
            .write(move |c| {
                let row = held::insert(
                    c,
                    &held::NewRequest {
                        device: &req.device,
                        correlation_id: req.correlation_id.as_deref(),
                        operation,
                        command: &command,
                        origin: req.origin.as_str(),
                        actor: &req.actor,
                        expires,
                    },
                )?;
                let queued = QueuedRequest {
                    status: "queued",
                    request_id: row.id,
                    device: req.device.to_string(),
                    operation: operation.to_string(),
                    command: command.clone(),
                    expires_at: row.expires_at.clone(),
                };
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        &req.actor,
                        "device.request",
                        req.device.as_str(),
                        Outcome::Accepted,
                        json!({"request_id": row.id, "correlation_id": req.correlation_id,
                               "operation": operation, "command": command, "origin": req.origin.as_str(),
                               "status": "queued", "expires_at": row.expires_at}),
                    ),
                )?;
                let response = if req.origin == RequestOrigin::Mqtt {
                    let body = crate::upstream::requests::response_body(
                        req.correlation_id.as_deref(),
                        operation,
                        "queued",
                        serde_json::to_value(&queued).ok(),
                        None,
                        &gw,
                    );
                    let (_, payload) =
                        outbox::append_response(c, &format!("response/{operation}"), body)?;
                    Some(payload)
                } else {
                    None
                };
                Ok((queued, response))
            })
            .await?;
        tracing::info!(device = %r.device, operation, request_id = queued.request_id, expires_at = %queued.expires_at, "request held for a sleeping device");
        self.queued.insert(r.device.to_string());
        Ok(DeviceAnswer::Queued { queued, response })
    }

    /// The device spoke, so it is awake: hands its held requests to the radio, oldest first.
    async fn dispatch_held(&mut self, device: &str) {
        let gw = self.gateway_id.clone();
        let dev = device.to_string();
        let radios_up: HashSet<String> = self
            .radios
            .keys()
            .filter(|r| self.radio_sender(r).is_some())
            .cloned()
            .collect();
        let sent = self
            .writer
            .write(move |c| {
                let rows = held::queued_for(c, &dev)?;
                let Some(d) = registry::get(c, &DeviceId(dev.clone()))? else {
                    return Ok(None);
                };
                if rows.is_empty() || !radios_up.contains(&d.radio) {
                    return Ok(Some((d, Vec::new(), rows.is_empty())));
                }
                let mut sent = Vec::new();
                for row in rows {
                    let command_id = uuid::Uuid::now_v7().to_string();
                    if held::mark_sent(c, row.id, &command_id)? {
                        store::record_audit(
                            c,
                            &gw,
                            &AuditEntry::new(
                                &row.actor,
                                "device.request",
                                dev.as_str(),
                                Outcome::Accepted,
                                json!({"request_id": row.id, "correlation_id": row.correlation_id,
                                       "operation": row.operation, "status": "sent", "command_id": command_id}),
                            ),
                        )?;
                        sent.push((row, command_id));
                    }
                }
                Ok(Some((d, sent, true)))
            })
            .await;
        let (d, sent, drained) = match sent {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.queued.remove(device);
                return;
            }
            Err(e) => {
                tracing::error!(device, error = %e, "could not hand held requests to the radio");
                return;
            }
        };
        if drained {
            self.queued.remove(device);
        }
        for (row, command_id) in sent {
            let rc = if row.operation == "get" {
                Some(RadioCommand::Read {
                    native_address: d.native_address.clone(),
                    command_id: command_id.clone(),
                })
            } else {
                serde_json::from_value::<DeviceCommand>(row.command.clone())
                    .ok()
                    .map(|command| RadioCommand::Set {
                        native_address: d.native_address.clone(),
                        command,
                        command_id: command_id.clone(),
                    })
            };
            tracing::info!(device, request_id = row.id, command_id = %command_id, "device awake: sending a held request");
            let delivered = match rc {
                Some(rc) => self.send_to_radio(&d.radio, rc).await,
                None => false,
            };
            if !delivered {
                let gw = self.gateway_id.clone();
                let r = self
                    .writer
                    .write(move |c| {
                        if let Some(req) = held::take_by_command_id(c, &command_id)? {
                            finish_held(
                                c,
                                &gw,
                                &req,
                                "error",
                                json!({"command_id": command_id}),
                                Some((
                                    "not_delivered",
                                    "the radio did not take the command".into(),
                                )),
                            )?;
                        }
                        Ok(())
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(device, error = %e, "could not answer a held request");
                }
            }
        }
    }

    /// Answers `expired` to held requests whose time ran out before the device woke.
    async fn expire_held_requests(&mut self) {
        let gw = self.gateway_id.clone();
        let r = self
            .writer
            .write(move |c| {
                let gone = held::take_expired(c, SystemTime::now())?;
                for req in &gone {
                    finish_held(c, &gw, req, "expired", json!({}), None)?;
                }
                Ok((gone.len(), held::queued_devices(c)?))
            })
            .await;
        match r {
            Ok((n, devices)) => {
                if n > 0 {
                    tracing::info!(
                        expired = n,
                        "held requests expired before their device woke"
                    );
                }
                self.queued = devices.into_iter().collect();
            }
            Err(e) => tracing::error!(error = %e, "could not expire held requests"),
        }
    }

    /// At start: requests handed to the radio before a stop are answered `error`
    /// (`interrupted`: whether the device got them is unknown, and they are not sent
    /// twice); queued ones wait for their device again.
    async fn recover_held_requests(&mut self) {
        let gw = self.gateway_id.clone();
        let r = self
            .writer
            .write(move |c| {
                for req in held::take_sent(c)? {
                    finish_held(
                        c,
                        &gw,
                        &req,
                        "error",
                        json!({"command_id": req.command_id}),
                        Some((
                            "interrupted",
                            "the gateway stopped before the radio confirmed this request; it is not sent again".into(),
                        )),
                    )?;
                }
                held::queued_devices(c)
            })
            .await;
        match r {
            Ok(devices) => self.queued = devices.into_iter().collect(),
            Err(e) => tracing::error!(error = %e, "could not read held requests"),
        }
    }

    async fn apply_policy(
        &mut self,
        document: &[u8],
        source: &str,
        actor: &str,
    ) -> Result<PolicyApplied, HubError> {
        let parsed = policy::parse_envelope(document).and_then(|env| {
            let p = policy::accept(&env, self.pinned_key.as_ref())?;
            Ok((env, p))
        });
        let current = self.policy.policy.version;
        let checked = parsed.map_err(|e| e.to_string()).and_then(|(env, p)| {
            if p.version <= current {
                Err(format!(
                    "version {} is not newer than the active version {current}",
                    p.version
                ))
            } else {
                Ok((env, p))
            }
        });
        let (env, p) = match checked {
            Ok(v) => v,
            Err(reason) => {
                self.audit(AuditEntry::new(
                    actor,
                    "policy.apply",
                    source,
                    Outcome::Refused,
                    json!({"error": reason}),
                ))
                .await?;
                return Err(HubError::PolicyRefused(reason));
            }
        };
        let gw = self.gateway_id.clone();
        let (version, signed, rules) = (p.version, env.signature.is_some(), p.rules.len());
        let actor_s = actor.to_string();
        let source_s = source.to_string();
        let doc = env.policy.clone();
        let sig = env.signature.clone();
        let stored = self
            .writer
            .write(move |c| {
                policies::activate(c, version, &doc, sig.as_deref(), &source_s)?;
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        &actor_s,
                        "policy.apply",
                        source_s.as_str(),
                        Outcome::Accepted,
                        json!({"version": version, "signed": signed, "rules": rules}),
                    ),
                )?;
                Ok(())
            })
            .await;
        if let Err(e) = stored {
            let reason = e.to_string();
            self.audit(AuditEntry::new(
                actor,
                "policy.apply",
                source,
                Outcome::Refused,
                json!({"error": reason}),
            ))
            .await?;
            return Err(HubError::PolicyRefused(reason));
        }
        let engine = PolicyEngine::new(p);
        self.rule_states = engine.new_states();
        self.policy = Arc::new(engine);
        tracing::info!(version, signed, rules, "policy applied");
        self.announce_install_code_policy().await;
        self.notify(Notice::PolicyApplied { version });
        Ok(PolicyApplied {
            version,
            signed,
            rules,
        })
    }

    /// Marks devices silent for longer than their timeout offline (and back).
    async fn check_availability(&mut self) {
        let gw = self.gateway_id.clone();
        let engine = self.policy.clone();
        let result = self
            .writer
            .write(move |c| {
                let now = SystemTime::now();
                let mut notices = Vec::new();
                let devices = registry::list(c, &registry::DeviceFilter::default())?;
                for d in devices.iter().filter(|d| d.lifecycle != Lifecycle::Decommissioned.as_str()) {
                    let Ok(last) = humantime::parse_rfc3339(&d.last_seen) else { continue };
                    let timeout = engine.availability_timeout(&facts_of(d), PowerSource::parse(&d.power_source));
                    let silent = now.duration_since(last).unwrap_or_default() > timeout;
                    let id = DeviceId(d.id.clone());
                    if registry::set_health_flag(c, &id, "offline", silent)? {
                        availability_msg(c, &gw, &id, !silent, now)?;
                        lifecycle_msg(c, &gw, &id, "health", json!({"flag": "offline", "raised": silent, "timeout_s": timeout.as_secs()}), now)?;
                        notices.push(Notice::Health { device: d.id.clone(), flag: "offline".into(), raised: silent });
                    }
                }
                Ok(notices)
            })
            .await;
        match result {
            Ok(notices) => notices.into_iter().for_each(|n| self.notify(n)),
            Err(e) => tracing::error!(error = %e, "availability check failed"),
        }
    }
}

fn facts_of(d: &registry::Device) -> DeviceFacts<'_> {
    DeviceFacts {
        protocol: crate::config::Protocol::parse(&d.protocol),
        address: &d.native_address,
        manufacturer: d.manufacturer.as_deref(),
        model: d.model.as_deref(),
    }
}

/// Turns a rule's JSON command into a device command: `{"state": "on"|"off"|"toggle"}`,
/// `{"level": 0-100}`, or the tagged form `{"action": "level", "percent": 50}`.
pub fn device_command_from_json(v: &serde_json::Value) -> Option<DeviceCommand> {
    if let Ok(c) = serde_json::from_value::<DeviceCommand>(v.clone()) {
        return Some(c);
    }
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    if let Some(state) = obj.get("state").and_then(|s| s.as_str()) {
        return match state.to_ascii_lowercase().as_str() {
            "on" => Some(DeviceCommand::On),
            "off" => Some(DeviceCommand::Off),
            "toggle" => Some(DeviceCommand::Toggle),
            _ => None,
        };
    }
    let level = obj.get("level")?.as_f64()?;
    (0.0..=100.0)
        .contains(&level)
        .then(|| DeviceCommand::Level {
            percent: level.round() as u8,
        })
}

/// Decommissions inside a transaction: lifecycle, credentials, events. Returns
/// how many credentials were destroyed.
fn retire(
    c: &Connection,
    gw: &str,
    id: &DeviceId,
    event: &str,
    mut data: serde_json::Value,
) -> Result<usize, StoreError> {
    registry::set_lifecycle(c, id, Lifecycle::Decommissioned)?;
    for req in held::take_for_device(c, id.as_str())? {
        finish_held(
            c,
            gw,
            &req,
            "error",
            json!({}),
            Some((
                "device_decommissioned",
                format!("device `{id}` was decommissioned before it woke up"),
            )),
        )?;
    }
    let destroyed = credentials::destroy(c, id.as_str())?;
    if let Some(o) = data.as_object_mut() {
        o.insert("credentials_destroyed".into(), json!(destroyed));
    }
    let now = SystemTime::now();
    lifecycle_msg(c, gw, id, event, data, now)?;
    availability_msg(c, gw, id, false, now)?;
    Ok(destroyed)
}

/// Applies one device event inside the batch transaction.
/// Applies a burst of events in the caller's transaction. The fast path runs them
/// all under one savepoint; only when one of them fails is the burst rolled back and
/// replayed with a savepoint per event, so that the failing event does not undo the
/// others. (A savepoint per event on every burst costs a page copy per event for the
/// pages it touches: about a quarter of the writer's time under load.)
fn apply_events(
    c: &Connection,
    ctx: &EventContext,
    batch: &[DeviceEvent],
) -> Result<Vec<Applied>, StoreError> {
    c.execute_batch("SAVEPOINT events")?;
    if let Ok(out) = apply_burst(c, ctx, batch) {
        c.execute_batch("RELEASE events")?;
        return Ok(out);
    }
    c.execute_batch("ROLLBACK TO events")?;
    let mut out = Vec::with_capacity(batch.len());
    for ev in batch {
        c.execute_batch("SAVEPOINT event")?;
        match apply_event(c, ctx, ev) {
            Ok(applied) => {
                c.execute_batch("RELEASE event")?;
                out.push(applied);
            }
            Err(e) => {
                c.execute_batch("ROLLBACK TO event; RELEASE event")?;
                tracing::error!(device = %ev.device_id(), error = %e, "could not record a device event");
            }
        }
    }
    if let Err(e) = queue_states(c, ctx, &out) {
        c.execute_batch("ROLLBACK TO events; RELEASE events")?;
        return Err(e);
    }
    c.execute_batch("RELEASE events")?;
    Ok(out)
}

/// Readings of one live device inside a burst, merged in memory and written once.
struct Merging<'e> {
    id: DeviceId,
    patch: serde_json::Map<String, serde_json::Value>,
    at: SystemTime,
    health: serde_json::Value,
    telemetry: PendingTelemetry<'e>,
}

impl Merging<'_> {
    /// Queues the device's pending telemetry, writes the merged readings to the
    /// registry and queues the retained state.
    fn flush(
        mut self,
        c: &Connection,
        ctx: &EventContext,
        seqs: &mut outbox::SeqCursor,
        assigned: &mut Vec<(usize, i64)>,
    ) -> Result<(), StoreError> {
        self.telemetry.flush(c, seqs, ctx, &self.id, assigned)?;
        if let Some(state) = registry::merge_state(c, &self.id, &self.patch, &rfc3339(self.at))? {
            queue_state(c, ctx, &self.id, &state, self.at)?;
        }
        Ok(())
    }
}

/// One device's telemetry messages within a burst, not yet queued: they go into the
/// outbox together as one row (one insert, one delete), each still its own message
/// with its own seq, `msg_id` and `ts`. Queued before any other message about the
/// device, so the device's messages keep their order.
#[derive(Default)]
struct PendingTelemetry<'e> {
    /// The readings, when they were received, and the index of their event's outcome.
    items: Vec<(&'e [Reading], SystemTime, usize)>,
}

#[derive(serde::Serialize)]
struct Telemetry<'a> {
    readings: &'a [Reading],
}

impl<'e> PendingTelemetry<'e> {
    /// Queues what is pending; `assigned` gets (outcome index, seq) for each message.
    fn flush(
        &mut self,
        c: &Connection,
        seqs: &mut outbox::SeqCursor,
        ctx: &EventContext,
        id: &DeviceId,
        assigned: &mut Vec<(usize, i64)>,
    ) -> Result<(), StoreError> {
        if self.items.is_empty() {
            return Ok(());
        }
        let items: Vec<(Telemetry<'e>, SystemTime)> = self
            .items
            .iter()
            .map(|(readings, at, _)| (Telemetry { readings }, *at))
            .collect();
        let got = outbox::append_batch(
            c,
            seqs,
            &ctx.gateway_id,
            &outbox::Header {
                kind: MessageKind::Telemetry,
                device: Some(id),
                topic: &format!("device/{id}/telemetry"),
                retain: false,
                event_time: items[0].1,
            },
            &items,
        )?;
        assigned.extend(self.items.drain(..).map(|(_, _, i)| i).zip(got));
        Ok(())
    }
}

/// Where a reading's telemetry message goes.
enum TelemetrySink<'a, 'e> {
    /// Into the outbox now.
    Now(&'a mut outbox::SeqCursor),
    /// Into the device's pending telemetry (the burst's fast path); `index` is the
    /// event's outcome in the burst.
    Pending {
        seqs: &'a mut outbox::SeqCursor,
        telemetry: &'a mut PendingTelemetry<'e>,
        index: usize,
        assigned: &'a mut Vec<(usize, i64)>,
    },
}

impl TelemetrySink<'_, '_> {
    /// Queues pending telemetry before another message about the device.
    fn flush(
        &mut self,
        c: &Connection,
        ctx: &EventContext,
        id: &DeviceId,
    ) -> Result<(), StoreError> {
        match self {
            TelemetrySink::Now(_) => Ok(()),
            TelemetrySink::Pending {
                seqs,
                telemetry,
                assigned,
                ..
            } => telemetry.flush(c, seqs, ctx, id, assigned),
        }
    }
}

/// The fast path of a burst: readings from known, live devices are merged in memory
/// per device and written once per device (one registry update and one retained
/// state message per device per burst, each reading still its own telemetry);
/// every other event, and the first reading of an unknown device, goes through
/// `apply_event`, after the device's pending merge has been written so that the
/// event sees the registry as it would one event at a time.
fn apply_burst(
    c: &Connection,
    ctx: &EventContext,
    batch: &[DeviceEvent],
) -> Result<Vec<Applied>, StoreError> {
    let mut out: Vec<Applied> = Vec::with_capacity(batch.len());
    let mut seqs = outbox::SeqCursor::default();
    // (outcome index, seq) of each telemetry message queued from pending telemetry.
    let mut assigned: Vec<(usize, i64)> = Vec::new();
    let mut merging: Vec<Option<Merging>> = Vec::new();
    let mut slot_of: HashMap<DeviceId, usize> = HashMap::new();
    for ev in batch {
        let id = ev.device_id();
        if let DeviceEventKind::Readings(readings) = &ev.kind {
            let slot = match slot_of.get(&id) {
                Some(&i) => Some(i),
                None => registry::live_health(c, &id)?.map(|health| {
                    merging.push(Some(Merging {
                        id: id.clone(),
                        patch: serde_json::Map::new(),
                        at: ev.received_at,
                        health: parse_health(&health),
                        telemetry: PendingTelemetry::default(),
                    }));
                    slot_of.insert(id.clone(), merging.len() - 1);
                    merging.len() - 1
                }),
            };
            if let Some(m) = slot.and_then(|i| merging[i].as_mut()) {
                for r in readings {
                    m.patch.insert(
                        r.name.clone(),
                        serde_json::to_value(&r.value).unwrap_or(serde_json::Value::Null),
                    );
                }
                m.at = ev.received_at;
                let mut applied = Applied {
                    spoke: Some(id.to_string()),
                    ..Applied::default()
                };
                readings_recorded(
                    c,
                    TelemetrySink::Pending {
                        seqs: &mut seqs,
                        telemetry: &mut m.telemetry,
                        index: out.len(),
                        assigned: &mut assigned,
                    },
                    ctx,
                    &id,
                    readings,
                    &mut m.health,
                    ev.received_at,
                    &mut applied,
                )?;
                out.push(applied);
                continue;
            }
        }
        if let Some(m) = slot_of.remove(&id).and_then(|i| merging[i].take()) {
            m.flush(c, ctx, &mut seqs, &mut assigned)?;
        }
        let mut applied = apply_event(c, ctx, ev)?;
        if let Some((id, state, at)) = applied.state.take() {
            queue_state(c, ctx, &id, &state, at)?;
        }
        out.push(applied);
    }
    for m in merging.into_iter().flatten() {
        m.flush(c, ctx, &mut seqs, &mut assigned)?;
    }
    for (index, seq) in assigned {
        for notice in &mut out[index].notices {
            if let Notice::Readings { outbox_seq, .. } = notice {
                *outbox_seq = Some(seq);
            }
        }
    }
    Ok(out)
}

fn queue_state(
    c: &Connection,
    ctx: &EventContext,
    id: &DeviceId,
    state: &str,
    at: SystemTime,
) -> Result<i64, StoreError> {
    outbox::append(
        c,
        &ctx.gateway_id,
        &NewMessage {
            kind: MessageKind::State,
            device: Some(id.clone()),
            topic: format!("device/{id}/state"),
            retain: true,
            data: serde_json::from_str(state).unwrap_or_else(|_| json!({})),
            event_time: at,
        },
    )
}

/// Queues one retained state message per device whose readings changed it in this
/// burst, carrying its state at the end of the burst. The state topic holds the
/// latest state only, so states superseded inside the same commit are never sent;
/// every reading itself goes out as telemetry.
fn queue_states(c: &Connection, ctx: &EventContext, applied: &[Applied]) -> Result<(), StoreError> {
    let mut last: Vec<(&DeviceId, &String, SystemTime)> = Vec::new();
    let mut slot_of: HashMap<&DeviceId, usize> = HashMap::new();
    for (id, state, at) in applied.iter().filter_map(|a| a.state.as_ref()) {
        match slot_of.get(id) {
            Some(&i) => last[i] = (id, state, *at),
            None => {
                slot_of.insert(id, last.len());
                last.push((id, state, *at));
            }
        }
    }
    for (id, state, at) in last {
        queue_state(c, ctx, id, state, at)?;
    }
    Ok(())
}

/// What follows a reading once the registry knows it: its telemetry, and the health
/// flags it clears or raises (`health` is the device's current flags, kept up to date).
#[allow(clippy::too_many_arguments)] // the writer's context, the event's parts, and its output
fn readings_recorded<'e>(
    c: &Connection,
    mut sink: TelemetrySink<'_, 'e>,
    ctx: &EventContext,
    id: &DeviceId,
    readings: &'e [Reading],
    health: &mut serde_json::Value,
    at: SystemTime,
    out: &mut Applied,
) -> Result<(), StoreError> {
    let gw: &str = &ctx.gateway_id;
    let telemetry_seq = if !ctx.queue_telemetry {
        None
    } else {
        match &mut sink {
            TelemetrySink::Now(seqs) => Some(outbox::append_data(
                c,
                seqs,
                gw,
                &outbox::Header {
                    kind: MessageKind::Telemetry,
                    device: Some(id),
                    topic: &format!("device/{id}/telemetry"),
                    retain: false,
                    event_time: at,
                },
                &Telemetry { readings },
            )?),
            TelemetrySink::Pending {
                seqs,
                telemetry,
                index,
                assigned,
            } => {
                if telemetry.items.len() >= outbox::MAX_ROW_MESSAGES {
                    telemetry.flush(c, seqs, ctx, id, assigned)?;
                }
                telemetry.items.push((readings, at, *index));
                // The seq is known once the row is written (end of the burst).
                None
            }
        }
    };
    if health.get("offline").is_some() && registry::set_health_flag(c, id, "offline", false)? {
        sink.flush(c, ctx, id)?;
        if let Some(flags) = health.as_object_mut() {
            flags.remove("offline");
        }
        availability_msg(c, gw, id, true, at)?;
        lifecycle_msg(
            c,
            gw,
            id,
            "health",
            json!({"flag": "offline", "raised": false}),
            at,
        )?;
        out.notices.push(Notice::Health {
            device: id.to_string(),
            flag: "offline".into(),
            raised: false,
        });
    }
    health_flags(c, &mut sink, ctx, id, health, readings, out, at)?;
    if ctx.notify_readings {
        out.notices.push(Notice::Readings {
            device: id.to_string(),
            readings: readings.to_vec(),
            outbox_seq: telemetry_seq,
        });
    }
    if ctx.rules {
        out.readings = Some((id.to_string(), readings.to_vec()));
    }
    Ok(())
}

fn parse_health(text: &str) -> serde_json::Value {
    if text == "{}" {
        json!({})
    } else {
        serde_json::from_str(text)
            .ok()
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| json!({}))
    }
}

fn apply_event(
    c: &Connection,
    ctx: &EventContext,
    ev: &DeviceEvent,
) -> Result<Applied, StoreError> {
    let gw: &str = &ctx.gateway_id;
    let id = ev.device_id();
    let ts = rfc3339(ev.received_at);
    let at = ev.received_at;
    let radio = ev.radio.as_str();
    let mut out = Applied::default();
    if !matches!(ev.kind, DeviceEventKind::CommandResult { .. }) {
        out.spoke = Some(id.to_string());
    }
    // The common case first: a reading from a known device is one UPDATE.
    if let DeviceEventKind::Readings(readings) = &ev.kind {
        if let Some((state, health)) = registry::merge_readings(c, &id, readings, &ts)? {
            readings_recorded(
                c,
                TelemetrySink::Now(&mut outbox::SeqCursor::default()),
                ctx,
                &id,
                readings,
                &mut parse_health(&health),
                at,
                &mut out,
            )?;
            out.state = Some((id.clone(), state, at));
            return Ok(out);
        }
    }
    let existing = registry::get(c, &id)?;
    let remove = |out: &mut Applied| {
        out.radio_actions.push((
            radio.to_string(),
            RadioCommand::Remove {
                native_address: ev.native_address.clone(),
            },
        ))
    };
    match &ev.kind {
        DeviceEventKind::Joined => {
            let known = existing
                .as_ref()
                .is_some_and(|d| d.lifecycle != Lifecycle::Decommissioned.as_str());
            let facts = DeviceFacts {
                protocol: Some(ev.protocol),
                address: &ev.native_address,
                manufacturer: existing.as_ref().and_then(|d| d.manufacturer.as_deref()),
                model: existing.as_ref().and_then(|d| d.model.as_deref()),
            };
            let denial = if !known && !ctx.open_windows.contains(radio) {
                Some("joined outside a join window".to_string())
            } else if !known
                && ev.protocol == Protocol::Zigbee
                && ctx.policy.policy.admission.require_install_code
                && !credentials::exists(c, id.as_str(), INSTALL_CODE_KIND)?
            {
                Some(
                    "no install code registered for this device (the policy requires install codes)"
                        .to_string(),
                )
            } else {
                match ctx.policy.admit(&facts) {
                    Admit::Deny { reason } => Some(reason),
                    Admit::Admit | Admit::Undecided => None,
                }
            };
            if let Some(reason) = denial {
                if known {
                    retire(c, gw, &id, "denied", json!({"reason": reason}))?;
                } else {
                    lifecycle_msg(
                        c,
                        gw,
                        &id,
                        "denied",
                        json!({"radio": radio, "reason": reason}),
                        at,
                    )?;
                }
                store::record_audit(
                    c,
                    gw,
                    &AuditEntry::new(
                        format!("radio:{radio}"),
                        "device.join",
                        id.as_str(),
                        Outcome::Refused,
                        json!({"native_address": ev.native_address, "reason": reason}),
                    ),
                )?;
                remove(&mut out);
                out.notices.push(Notice::Denied {
                    device: id.to_string(),
                    reason,
                });
                return Ok(out);
            }
            let (device, is_new) = registry::upsert_joined(
                c,
                &id,
                ev.protocol.as_str(),
                radio,
                &ev.native_address,
                &ts,
            )?;
            lifecycle_msg(
                c,
                gw,
                &id,
                "joined",
                json!({"radio": radio, "new": is_new, "lifecycle": device.lifecycle}),
                at,
            )?;
            availability_msg(c, gw, &id, true, at)?;
            registry::set_health_flag(c, &id, "offline", false)?;
            store::record_audit(
                c,
                gw,
                &AuditEntry::new(
                    format!("radio:{radio}"),
                    "device.join",
                    id.as_str(),
                    Outcome::Accepted,
                    json!({"native_address": ev.native_address, "new": is_new}),
                ),
            )?;
            out.notices.push(Notice::DeviceJoined {
                device: id.to_string(),
                radio: radio.to_string(),
                new: is_new,
            });
        }
        DeviceEventKind::Interviewed(info) => {
            let Some(before) = existing else {
                return Ok(out);
            };
            if before.lifecycle == Lifecycle::Decommissioned.as_str() {
                remove(&mut out);
                return Ok(out);
            }
            let fw_change = registry::apply_info(c, &id, info, &ts)?;
            let d = registry::get(c, &id)?
                .ok_or_else(|| StoreError::Invalid("device vanished".into()))?;
            lifecycle_msg(
                c,
                gw,
                &id,
                "interviewed",
                serde_json::to_value(info).unwrap_or_default(),
                at,
            )?;
            if let Some(Some(previous)) = &fw_change {
                lifecycle_msg(
                    c,
                    gw,
                    &id,
                    "firmware_changed",
                    json!({"from": previous, "to": info.firmware}),
                    at,
                )?;
            }
            out.notices.push(Notice::DeviceInterviewed {
                device: id.to_string(),
                manufacturer: info.manufacturer.clone(),
                model: info.model.clone(),
            });
            let facts = facts_of(&d);
            match ctx.policy.admit(&facts) {
                Admit::Deny { reason } => {
                    retire(c, gw, &id, "denied", json!({"reason": reason}))?;
                    store::record_audit(
                        c,
                        gw,
                        &AuditEntry::new(
                            "policy",
                            "device.admission",
                            id.as_str(),
                            Outcome::Refused,
                            json!({"reason": reason, "manufacturer": d.manufacturer, "model": d.model}),
                        ),
                    )?;
                    remove(&mut out);
                    out.notices.push(Notice::Denied {
                        device: id.to_string(),
                        reason,
                    });
                    return Ok(out);
                }
                Admit::Undecided => {}
                Admit::Admit => {
                    if d.lifecycle == Lifecycle::Pending.as_str() {
                        registry::set_lifecycle(c, &id, Lifecycle::Active)?;
                        lifecycle_msg(
                            c,
                            gw,
                            &id,
                            "admitted",
                            json!({"manufacturer": d.manufacturer, "model": d.model}),
                            at,
                        )?;
                        store::record_audit(
                            c,
                            gw,
                            &AuditEntry::new(
                                "policy",
                                "device.admission",
                                id.as_str(),
                                Outcome::Accepted,
                                json!({"manufacturer": d.manufacturer, "model": d.model}),
                            ),
                        )?;
                    }
                }
            }
            apply_compliance(c, ctx, &id, &mut out, at)?;
        }
        DeviceEventKind::Readings(readings) => {
            let d = match existing {
                Some(d) => d,
                // A device that reports without having joined here (BLE beacons,
                // a registry restored from an older backup): admitted as pending
                // unless the policy denies it, so its data is not lost.
                None => match discover(c, ctx, ev, &id, &mut out)? {
                    Some(d) => d,
                    None => return Ok(out),
                },
            };
            if d.lifecycle == Lifecycle::Decommissioned.as_str() {
                // Still on the network: it slept through its leave request (a sleeping
                // device hears only right after it speaks) or ignored it. It is awake
                // now, so it is told again; its readings are not recorded.
                remove(&mut out);
                return Ok(out);
            }
            if let Some((state, health)) = registry::merge_readings(c, &id, readings, &ts)? {
                readings_recorded(
                    c,
                    TelemetrySink::Now(&mut outbox::SeqCursor::default()),
                    ctx,
                    &id,
                    readings,
                    &mut parse_health(&health),
                    at,
                    &mut out,
                )?;
                out.state = Some((id.clone(), state, at));
            }
        }
        DeviceEventKind::Left => {
            lifecycle_msg(c, gw, &id, "left", json!({}), at)?;
            availability_msg(c, gw, &id, false, at)?;
            store::record_audit(
                c,
                gw,
                &AuditEntry::new(
                    format!("radio:{radio}"),
                    "device.leave",
                    id.as_str(),
                    Outcome::Accepted,
                    json!({}),
                ),
            )?;
            out.notices.push(Notice::DeviceLeft {
                device: id.to_string(),
            });
        }
        DeviceEventKind::CommandResult {
            command_id,
            ok,
            detail,
        } => {
            lifecycle_msg(
                c,
                gw,
                &id,
                "command_result",
                json!({"command_id": command_id, "ok": ok, "detail": detail}),
                at,
            )?;
            let state = existing.map(|d| d.last_state).unwrap_or_default();
            if let Some(req) = held::take_by_command_id(c, command_id)? {
                let (status, error) = if *ok {
                    ("delivered", None)
                } else {
                    ("error", Some(("not_delivered", detail.clone())))
                };
                let mut extra = json!({"command_id": command_id, "detail": detail});
                if req.operation == "get" {
                    extra["state"] = state_subset(&state, &requested_attributes(&req));
                }
                finish_held(c, gw, &req, status, extra, error)?;
            }
            out.result = Some((command_id.clone(), *ok, detail.clone(), state));
        }
    }
    Ok(out)
}

/// Registers a device first heard through its readings, unless the policy denies it.
fn discover(
    c: &Connection,
    ctx: &EventContext,
    ev: &DeviceEvent,
    id: &DeviceId,
    out: &mut Applied,
) -> Result<Option<registry::Device>, StoreError> {
    let gw: &str = &ctx.gateway_id;
    let radio = ev.radio.as_str();
    let facts = DeviceFacts {
        protocol: Some(ev.protocol),
        address: &ev.native_address,
        manufacturer: None,
        model: None,
    };
    if let Admit::Deny { reason } = ctx.policy.admit(&facts) {
        store::record_audit(
            c,
            gw,
            &AuditEntry::new(
                format!("radio:{radio}"),
                "device.discover",
                id.as_str(),
                Outcome::Refused,
                json!({"native_address": ev.native_address, "reason": reason}),
            ),
        )?;
        out.radio_actions.push((
            radio.to_string(),
            RadioCommand::Remove {
                native_address: ev.native_address.clone(),
            },
        ));
        out.notices.push(Notice::Denied {
            device: id.to_string(),
            reason,
        });
        return Ok(None);
    }
    let (device, _) = registry::upsert_joined(
        c,
        id,
        ev.protocol.as_str(),
        radio,
        &ev.native_address,
        &rfc3339(ev.received_at),
    )?;
    lifecycle_msg(
        c,
        gw,
        id,
        "discovered",
        json!({"radio": radio, "lifecycle": device.lifecycle}),
        ev.received_at,
    )?;
    availability_msg(c, gw, id, true, ev.received_at)?;
    store::record_audit(
        c,
        gw,
        &AuditEntry::new(
            format!("radio:{radio}"),
            "device.discover",
            id.as_str(),
            Outcome::Accepted,
            json!({"native_address": ev.native_address}),
        ),
    )?;
    out.notices.push(Notice::DeviceJoined {
        device: id.to_string(),
        radio: radio.to_string(),
        new: true,
    });
    Ok(Some(device))
}

/// Quarantines a device whose firmware is below the policy minimum, and releases
/// it once it reports a compliant version.
fn apply_compliance(
    c: &Connection,
    ctx: &EventContext,
    id: &DeviceId,
    out: &mut Applied,
    at: SystemTime,
) -> Result<(), StoreError> {
    let gw: &str = &ctx.gateway_id;
    let Some(d) = registry::get(c, id)? else {
        return Ok(());
    };
    let quarantined = d.lifecycle == Lifecycle::Quarantined.as_str();
    match ctx.policy.firmware(&facts_of(&d), d.firmware.as_deref()) {
        Compliance::Below {
            min_version,
            commands_allowed,
        } if !quarantined => {
            registry::set_lifecycle(c, id, Lifecycle::Quarantined)?;
            let data = json!({"firmware": d.firmware, "min_version": min_version, "commands_allowed": commands_allowed});
            lifecycle_msg(c, gw, id, "quarantined", data.clone(), at)?;
            store::record_audit(
                c,
                gw,
                &AuditEntry::new(
                    "policy",
                    "device.quarantine",
                    id.as_str(),
                    Outcome::Accepted,
                    data,
                ),
            )?;
            out.notices.push(Notice::Quarantined {
                device: id.to_string(),
                firmware: d.firmware.clone(),
                min_version,
            });
        }
        Compliance::Compliant | Compliance::Unregulated if quarantined => {
            registry::set_lifecycle(c, id, Lifecycle::Active)?;
            lifecycle_msg(c, gw, id, "released", json!({"firmware": d.firmware}), at)?;
            store::record_audit(
                c,
                gw,
                &AuditEntry::new(
                    "policy",
                    "device.release",
                    id.as_str(),
                    Outcome::Accepted,
                    json!({"firmware": d.firmware}),
                ),
            )?;
            out.notices.push(Notice::Released {
                device: id.to_string(),
            });
        }
        _ => {}
    }
    Ok(())
}

/// Battery-low and weak-link flags from readings, raised and cleared on crossings.
#[allow(clippy::too_many_arguments)] // readings_recorded's context, passed on
fn health_flags(
    c: &Connection,
    sink: &mut TelemetrySink<'_, '_>,
    ctx: &EventContext,
    id: &DeviceId,
    current: &mut serde_json::Value,
    readings: &[Reading],
    out: &mut Applied,
    at: SystemTime,
) -> Result<(), StoreError> {
    let h = &ctx.policy.policy.health;
    for r in readings {
        let Value::Number(v) = r.value else { continue };
        let flag = match r.name.as_str() {
            "battery" | "battery_percent" | "battery_percentage" => {
                Some(("battery_low", v < h.battery_low_pct))
            }
            "linkquality" | "lqi" => h.weak_lqi.map(|min| ("weak_link", v < f64::from(min))),
            "rssi" => h.weak_rssi.map(|min| ("weak_link", v < f64::from(min))),
            _ => None,
        };
        if let Some((flag, raised)) = flag {
            // Most readings change nothing: decide from the row already read.
            let unchanged = current.get(flag).is_some() == raised;
            if !unchanged && registry::set_health_flag(c, id, flag, raised)? {
                sink.flush(c, ctx, id)?;
                if let Some(flags) = current.as_object_mut() {
                    if raised {
                        flags.insert(flag.to_string(), serde_json::Value::Bool(true));
                    } else {
                        flags.remove(flag);
                    }
                }
                lifecycle_msg(
                    c,
                    &ctx.gateway_id,
                    id,
                    "health",
                    json!({"flag": flag, "raised": raised, "value": v}),
                    at,
                )?;
                out.notices.push(Notice::Health {
                    device: id.to_string(),
                    flag: flag.into(),
                    raised,
                });
            }
        }
    }
    Ok(())
}

/// The attributes a held `get` asked for.
fn requested_attributes(req: &PendingRequest) -> Vec<String> {
    req.command["attributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The device's state, narrowed to `attributes` when any are named.
fn state_subset(state: &serde_json::Value, attributes: &[String]) -> serde_json::Value {
    match state.as_object() {
        Some(obj) if !attributes.is_empty() => serde_json::Value::Object(
            obj.iter()
                .filter(|(k, _)| attributes.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => state.clone(),
    }
}

/// Answers a held request inside the caller's transaction (its row is already gone):
/// the audit record, a `request` lifecycle event, and for an MQTT request the response.
fn finish_held(
    c: &Connection,
    gw: &str,
    req: &PendingRequest,
    status: &str,
    extra: serde_json::Value,
    error: Option<(&'static str, String)>,
) -> Result<(), StoreError> {
    let id = DeviceId(req.device_id.clone());
    let mut data = json!({
        "request_id": req.id,
        "device": req.device_id,
        "operation": req.operation,
        "command": req.command,
        "queued_at": req.created_at,
        "expires_at": req.expires_at,
    });
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    let outcome = if status == "delivered" {
        Outcome::Accepted
    } else {
        Outcome::Failed
    };
    let code = error.as_ref().map(|(code, _)| *code);
    store::record_audit(
        c,
        gw,
        &AuditEntry::new(
            &req.actor,
            "device.request",
            req.device_id.as_str(),
            outcome,
            json!({"request_id": req.id, "correlation_id": req.correlation_id, "operation": req.operation,
                   "origin": req.origin, "status": status, "code": code,
                   "detail": data.get("detail")}),
        ),
    )?;
    lifecycle_msg(
        c,
        gw,
        &id,
        "request",
        json!({"request_id": req.id, "operation": req.operation, "origin": req.origin,
               "correlation_id": req.correlation_id, "status": status, "code": code}),
        SystemTime::now(),
    )?;
    if req.origin == RequestOrigin::Mqtt.as_str() {
        let body = crate::upstream::requests::response_body(
            req.correlation_id.as_deref(),
            &req.operation,
            status,
            Some(data),
            error.map(|(code, message)| json!({"code": code, "message": message})),
            gw,
        );
        outbox::append_response(c, &format!("response/{}", req.operation), body)?;
    }
    Ok(())
}

fn lifecycle_msg(
    c: &Connection,
    gw: &str,
    id: &DeviceId,
    event: &str,
    mut data: serde_json::Value,
    at: SystemTime,
) -> Result<i64, StoreError> {
    if let Some(obj) = data.as_object_mut() {
        obj.insert("event".into(), json!(event));
    }
    outbox::append(
        c,
        gw,
        &NewMessage {
            kind: MessageKind::Lifecycle,
            device: Some(id.clone()),
            topic: format!("device/{id}/event"),
            retain: false,
            data,
            event_time: at,
        },
    )
}

fn availability_msg(
    c: &Connection,
    gw: &str,
    id: &DeviceId,
    online: bool,
    at: SystemTime,
) -> Result<i64, StoreError> {
    outbox::append(
        c,
        gw,
        &NewMessage {
            kind: MessageKind::Availability,
            device: Some(id.clone()),
            topic: format!("device/{id}/availability"),
            retain: true,
            data: json!({"state": if online { "online" } else { "offline" }}),
            event_time: at,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::model::{DeviceInfo, PowerSource, Reading, Value};
    use crate::store::{Store, WriterOptions};

    const ADDR: &str = "0x00124b0001abcdef";

    fn event(addr: &str, kind: DeviceEventKind) -> DeviceEvent {
        DeviceEvent {
            radio: "zb0".into(),
            protocol: Protocol::Zigbee,
            native_address: addr.into(),
            received_at: SystemTime::now(),
            kind,
        }
    }

    fn info(model: &str, firmware: &str) -> DeviceEventKind {
        DeviceEventKind::Interviewed(DeviceInfo {
            manufacturer: Some("LUMI".into()),
            model: Some(model.into()),
            firmware: Some(firmware.into()),
            power_source: Some(PowerSource::Battery),
            capabilities: vec!["temperature".into()],
        })
    }

    fn reading(name: &str, value: Value) -> DeviceEventKind {
        DeviceEventKind::Readings(vec![Reading {
            name: name.into(),
            value,
            unit: None,
        }])
    }

    // Fields drop in order: the hub (holding a writer handle) before the store,
    // whose drop waits for every writer handle to go.
    struct Rig {
        hub: Option<Hub>,
        store: Store,
        _dir: tempfile::TempDir,
    }

    fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
        let (mut hub, _, _) = Hub::new("gw", store.writer(), &[]);
        hub.join_windows
            .insert("zb0".into(), Instant::now() + Duration::from_secs(60));
        Rig {
            hub: Some(hub),
            store,
            _dir: dir,
        }
    }

    impl Rig {
        async fn events(&mut self, evs: Vec<DeviceEvent>) -> Vec<Notice> {
            let hub = self.hub.as_mut().unwrap();
            let mut rx = hub.notices.subscribe();
            hub.on_events(evs).await;
            let mut out = Vec::new();
            while let Ok(n) = rx.try_recv() {
                out.push(n);
            }
            out
        }

        fn device(&self, addr: &str) -> registry::Device {
            let r = self.store.reader().unwrap();
            registry::get(&r, &DeviceId::new(Protocol::Zigbee, addr))
                .unwrap()
                .unwrap()
        }

        async fn policy(&mut self, doc: serde_json::Value) -> Result<PolicyApplied, HubError> {
            self.hub
                .as_mut()
                .unwrap()
                .apply_policy(doc.to_string().as_bytes(), "test", "test")
                .await
        }
    }

    #[tokio::test]
    async fn a_burst_merges_readings_per_device_in_event_order() {
        let mut rig = rig();
        rig.events(vec![
            event("0x0001", DeviceEventKind::Joined),
            event("0x0002", DeviceEventKind::Joined),
        ])
        .await;
        let reader = rig.store.reader().unwrap();
        let after = outbox::pending(&reader, 0, 10_000)
            .unwrap()
            .last()
            .unwrap()
            .seq;
        let notices = rig
            .events(vec![
                event("0x0001", reading("temperature", Value::Number(20.0))),
                event("0x0002", reading("battery", Value::Number(5.0))),
                event("0x0001", reading("humidity", Value::Number(40.0))),
                // Low twice in one burst: the flag is raised once.
                event("0x0002", reading("battery", Value::Number(4.0))),
                // Another kind of event for device 1 sees its readings so far.
                event("0x0001", DeviceEventKind::Left),
                event("0x0001", reading("temperature", Value::Number(21.0))),
            ])
            .await;
        let health: Vec<_> = notices
            .iter()
            .filter(|n| matches!(n, Notice::Health { flag, .. } if flag == "battery_low"))
            .collect();
        assert_eq!(health.len(), 1);
        let readings = notices
            .iter()
            .filter(|n| matches!(n, Notice::Readings { .. }))
            .count();
        assert_eq!(readings, 5);
        let rows = outbox::pending(&reader, after, 10_000).unwrap();
        let of = |kind: &str, dev: &str| -> Vec<serde_json::Value> {
            rows.iter()
                .filter(|r| r.kind == kind && r.topic.contains(dev))
                .map(|r| {
                    serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["data"].clone()
                })
                .collect()
        };
        // Every reading is its own telemetry message.
        assert_eq!(of("telemetry", "0x0001").len(), 3);
        assert_eq!(of("telemetry", "0x0002").len(), 2);
        // Device 1: its state before the `left` event, then the state at the end.
        assert_eq!(
            of("state", "0x0001"),
            [
                json!({"temperature": 20.0, "humidity": 40.0}),
                json!({"temperature": 21.0, "humidity": 40.0})
            ]
        );
        assert_eq!(of("state", "0x0002"), [json!({"battery": 4.0})]);
        // The state message for device 1 comes before the `left` lifecycle message.
        let pos = |pred: &dyn Fn(&outbox::OutboxRow) -> bool| rows.iter().position(pred).unwrap();
        assert!(
            pos(&|r| r.kind == "state" && r.topic.contains("0x0001"))
                < pos(&|r| r.kind == "lifecycle" && r.topic.contains("0x0001"))
        );
        assert_eq!(
            rig.device("0x0001").last_state,
            json!({"temperature": 21.0, "humidity": 40.0})
        );
        assert_eq!(rig.device("0x0002").health, json!({"battery_low": true}));

        // Seqs run on without gaps, in publish order.
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (after + 1..after + 1 + rows.len() as i64).collect::<Vec<_>>()
        );
        // Device 1's first two readings share a row (written before its `left`).
        let tele1: Vec<&outbox::OutboxRow> = rows
            .iter()
            .filter(|r| r.kind == "telemetry" && r.topic.contains("0x0001"))
            .collect();
        assert_eq!(tele1[0].row, tele1[1].row);
        assert_eq!(
            (tele1[0].row, tele1[0].row_last),
            (tele1[0].seq, tele1[1].seq)
        );
        let stored: i64 = reader
            .query_row("SELECT count(*) FROM outbox WHERE id > ?1", [after], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(
            stored < rows.len() as i64,
            "{stored} rows for {} messages",
            rows.len()
        );
        // Device 2: the reading that raised the flag, the flag, then the next reading.
        let battery = |v: f64| {
            pos(&|r| {
                r.kind == "telemetry"
                    && serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["data"]
                        ["readings"][0]["value"]
                        == json!(v)
            })
        };
        let flag = pos(&|r| r.kind == "lifecycle" && r.topic.contains("0x0002"));
        assert!(battery(5.0) < flag && flag < battery(4.0));
        // Every reading notice names its own telemetry message.
        let mut told: Vec<i64> = notices
            .iter()
            .filter_map(|n| match n {
                Notice::Readings { outbox_seq, .. } => *outbox_seq,
                _ => None,
            })
            .collect();
        told.sort();
        let mut telemetry: Vec<i64> = rows
            .iter()
            .filter(|r| r.kind == "telemetry")
            .map(|r| r.seq)
            .collect();
        telemetry.sort();
        assert_eq!(told, telemetry);
    }

    #[tokio::test]
    async fn a_failing_event_does_not_undo_its_burst_mates() {
        let mut rig = rig();
        rig.events(vec![
            event("0x0001", DeviceEventKind::Joined),
            event("0x0002", DeviceEventKind::Joined),
            event("0x0003", DeviceEventKind::Joined),
        ])
        .await;
        // Make every registry update of the middle device fail inside SQLite.
        rig.store
            .writer()
            .write(|c| {
                c.execute_batch(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON devices WHEN NEW.id = 'zigbee:0x0002'
                     BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let depth = |rig: &Rig| outbox::stats(&rig.store.reader().unwrap()).unwrap().depth;
        let before = depth(&rig);
        let notices = rig
            .events(vec![
                event("0x0001", reading("temperature", Value::Number(20.0))),
                event("0x0002", reading("temperature", Value::Number(21.0))),
                event("0x0003", reading("temperature", Value::Number(22.0))),
            ])
            .await;
        let readings: Vec<&str> = notices
            .iter()
            .filter_map(|n| match n {
                Notice::Readings { device, .. } => Some(device.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(readings, ["zigbee:0x0001", "zigbee:0x0003"]);
        assert_eq!(
            rig.device("0x0001").last_state,
            json!({"temperature": 20.0})
        );
        assert_eq!(
            rig.device("0x0003").last_state,
            json!({"temperature": 22.0})
        );
        assert_eq!(rig.device("0x0002").last_state, json!({}));
        // Telemetry and state for the two that succeeded, nothing for the failed one.
        assert_eq!(depth(&rig) - before, 4);
    }

    #[tokio::test]
    async fn events_flow_into_registry_outbox_and_audit() {
        let mut rig = rig();
        rig.events(vec![
            event(ADDR, DeviceEventKind::Joined),
            event(ADDR, info("lumi.weather", "1.0")),
            event(ADDR, reading("temperature", Value::Number(21.5))),
        ])
        .await;
        let d = rig.device(ADDR);
        assert_eq!(d.lifecycle, "active");
        assert_eq!(d.model.as_deref(), Some("lumi.weather"));
        assert_eq!(d.last_state["temperature"], 21.5);
        let r = rig.store.reader().unwrap();
        let kinds: Vec<String> = outbox::pending(&r, 0, 100)
            .unwrap()
            .into_iter()
            .map(|m| m.kind)
            .collect();
        for k in ["telemetry", "lifecycle", "audit", "state", "availability"] {
            assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
        }
        let hub = rig.hub.as_mut().unwrap();
        let id = DeviceId::new(Protocol::Zigbee, ADDR);
        let d = hub.decommission(&id, "test").await.unwrap();
        assert_eq!(d.device.lifecycle, "decommissioned");
        assert_eq!(
            hub.decommission(&id, "test").await.unwrap_err().code(),
            "already_decommissioned"
        );
        assert_eq!(
            hub.command(&id, DeviceCommand::On, "test")
                .await
                .unwrap_err()
                .code(),
            "device_decommissioned"
        );
        assert_eq!(
            hub.permit_join("nope", 60, "test")
                .await
                .unwrap_err()
                .code(),
            "unknown_radio"
        );
        assert!(store::audit::verify(&r).unwrap().ok);
    }

    #[tokio::test]
    async fn joining_outside_a_window_or_on_the_denylist_is_refused_and_removed() {
        let mut rig = rig();
        rig.hub.as_mut().unwrap().join_windows.clear();
        let n = rig.events(vec![event(ADDR, DeviceEventKind::Joined)]).await;
        assert!(
            matches!(&n[0], Notice::Denied { reason, .. } if reason.contains("outside a join window")),
            "{n:?}"
        );
        let r = rig.store.reader().unwrap();
        assert!(registry::get(&r, &DeviceId::new(Protocol::Zigbee, ADDR))
            .unwrap()
            .is_none());
        rig.hub
            .as_mut()
            .unwrap()
            .join_windows
            .insert("zb0".into(), Instant::now() + Duration::from_secs(60));
        rig.policy(
            json!({"version": 1, "admission": {"deny": [{"address": "0x00124b00000000*"}]}}),
        )
        .await
        .unwrap();
        let n = rig
            .events(vec![event("0x00124b0000000001", DeviceEventKind::Joined)])
            .await;
        assert!(matches!(&n[0], Notice::Denied { .. }), "{n:?}");
        let audit = store::audit::tail(&r, 100, None).unwrap();
        assert_eq!(
            audit
                .iter()
                .filter(|a| a.action == "device.join" && a.outcome == "refused")
                .count(),
            2
        );
    }

    #[tokio::test]
    async fn allowlist_decides_after_the_interview_and_firmware_quarantines() {
        let mut rig = rig();
        rig.policy(json!({"version": 1,
            "admission": {"mode": "allowlist", "allow": [{"manufacturer": "LUMI"}]},
            "firmware": [{"match": {"model": "plug*"}, "min_version": "2.0"}]}))
            .await
            .unwrap();
        rig.events(vec![event(ADDR, DeviceEventKind::Joined)]).await;
        assert_eq!(rig.device(ADDR).lifecycle, "pending");
        let n = rig.events(vec![event(ADDR, info("plug-1", "1.9"))]).await;
        assert!(
            n.iter().any(|n| matches!(n, Notice::Quarantined { .. })),
            "{n:?}"
        );
        assert_eq!(rig.device(ADDR).lifecycle, "quarantined");
        // Telemetry still flows from a quarantined device; commands are refused.
        rig.events(vec![event(ADDR, reading("power", Value::Number(5.0)))])
            .await;
        assert_eq!(rig.device(ADDR).last_state["power"], 5.0);
        let id = DeviceId::new(Protocol::Zigbee, ADDR);
        assert_eq!(
            rig.hub
                .as_mut()
                .unwrap()
                .command(&id, DeviceCommand::Off, "t")
                .await
                .unwrap_err()
                .code(),
            "device_quarantined"
        );
        // A compliant version releases it.
        let n = rig.events(vec![event(ADDR, info("plug-1", "2.1"))]).await;
        assert!(
            n.iter().any(|n| matches!(n, Notice::Released { .. })),
            "{n:?}"
        );
        assert_eq!(rig.device(ADDR).lifecycle, "active");
        // Someone else's device is denied once its manufacturer is known.
        rig.events(vec![event("0x2", DeviceEventKind::Joined)])
            .await;
        let other = DeviceEventKind::Interviewed(DeviceInfo {
            manufacturer: Some("ACME".into()),
            ..Default::default()
        });
        let n = rig.events(vec![event("0x2", other)]).await;
        assert!(
            n.iter().any(|n| matches!(n, Notice::Denied { .. })),
            "{n:?}"
        );
        assert_eq!(rig.device("0x2").lifecycle, "decommissioned");
    }

    #[tokio::test]
    async fn rules_fire_once_per_crossing_and_are_audited() {
        let mut rig = rig();
        rig.events(vec![
            event("0x1", DeviceEventKind::Joined),
            event("0x2", DeviceEventKind::Joined),
        ])
        .await;
        rig.policy(json!({"version": 1, "rules": [{"id": "leak", "when": {"device": "zigbee:0x1", "reading": "water_leak", "op": "==", "value": true},
            "then": {"device": "zigbee:0x2", "command": {"state": "off"}}}]}))
            .await
            .unwrap();
        let mut fired = 0;
        for v in [false, true, true, false, true] {
            let n = rig
                .events(vec![event("0x1", reading("water_leak", Value::Bool(v)))])
                .await;
            fired += n
                .iter()
                .filter(|n| matches!(n, Notice::RuleFired { .. }))
                .count();
        }
        assert_eq!(fired, 2);
        let r = rig.store.reader().unwrap();
        let audit = store::audit::tail(&r, 1000, None).unwrap();
        // No radio runs in this rig, so each firing is audited as failed, with the reason.
        let firings: Vec<_> = audit.iter().filter(|a| a.action == "rule.fire").collect();
        assert_eq!(firings.len(), 2);
        assert!(firings.iter().all(|a| a.outcome == "failed"
            && a.details["error"].as_str().unwrap().contains("not running")));
    }

    #[tokio::test]
    async fn policies_must_be_newer_and_signed_when_a_key_is_pinned() {
        let mut rig = rig();
        let seed = [9u8; 32];
        let key = policy::parse_public_key(&policy::public_key_hex(&seed)).unwrap();
        let hub = rig.hub.take().unwrap().with_policy(None, Some(key));
        rig.hub = Some(hub);
        let doc = json!({"version": 2});
        assert_eq!(
            rig.policy(doc.clone()).await.unwrap_err().code(),
            "policy_refused"
        );
        let signed = serde_json::to_value(policy::sign(&doc, &seed)).unwrap();
        assert_eq!(rig.policy(signed.clone()).await.unwrap().version, 2);
        assert!(rig
            .policy(signed)
            .await
            .unwrap_err()
            .to_string()
            .contains("not newer"));
        let r = rig.store.reader().unwrap();
        assert_eq!(policies::active(&r).unwrap().unwrap().version, 2);
    }

    #[tokio::test]
    async fn battery_low_and_silence_raise_health_flags() {
        let mut rig = rig();
        rig.events(vec![event(ADDR, DeviceEventKind::Joined)]).await;
        let n = rig
            .events(vec![event(ADDR, reading("battery", Value::Number(12.0)))])
            .await;
        assert!(
            n.iter().any(
                |n| matches!(n, Notice::Health { flag, raised: true, .. } if flag == "battery_low")
            ),
            "{n:?}"
        );
        assert_eq!(rig.device(ADDR).health["battery_low"], true);
        // Silent for longer than the timeout: offline.
        let w = rig.store.writer();
        w.write(|c| {
            c.execute(
                "UPDATE devices SET last_seen = '2020-01-01T00:00:00.000Z', power_source = 'mains'",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let hub = rig.hub.as_mut().unwrap();
        let mut rx = hub.notices.subscribe();
        hub.check_availability().await;
        assert!(matches!(
            rx.try_recv().unwrap(),
            Notice::Health { raised: true, .. }
        ));
        assert_eq!(rig.device(ADDR).health["offline"], true);
        let r = rig.store.reader().unwrap();
        let unhealthy = registry::list(
            &r,
            &registry::DeviceFilter {
                unhealthy: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(unhealthy.len(), 1);
    }

    #[test]
    fn rule_commands_map_to_device_commands() {
        assert_eq!(
            device_command_from_json(&json!({"state": "ON"})),
            Some(DeviceCommand::On)
        );
        assert_eq!(
            device_command_from_json(&json!({"level": 40})),
            Some(DeviceCommand::Level { percent: 40 })
        );
        assert_eq!(
            device_command_from_json(&json!({"action": "toggle"})),
            Some(DeviceCommand::Toggle)
        );
        assert_eq!(device_command_from_json(&json!({"level": 400})), None);
        assert_eq!(device_command_from_json(&json!({"colour": "red"})), None);
    }
}
