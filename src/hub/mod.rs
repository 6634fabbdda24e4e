//! The hub: the one place that decides.
//!
//! It takes device events from the radios and requests from the two doors (local
//! API, MQTT), applies the policy (admission, firmware compliance, health, local
//! rules), and turns what it decides into store transactions that update the
//! registry, append the audit record and queue the outbox messages together.
//! Events that arrive together are applied in one transaction (each under its own
//! savepoint), so a burst costs one commit. It never does IO itself beyond asking
//! the store and the radios.
//!
//! This file holds the loop and the dispatch. The rest, one room each:
//! `handle` (what the doors send and get back), `ingest/` (events -> one
//! transaction), `ops/` (one file per operation: validate -> audit -> act),
//! `held` (requests waiting for a device to wake), `health`, `admission`, `rules`
//! and `messages` (lifecycle, availability and response messages).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::VerifyingKey;
use rusqlite::Connection;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::model::{
    rfc3339, CredentialKind, DeviceCommand, DeviceCredential, DeviceEvent, DeviceEventKind,
    DeviceId, KeyRotated, Lifecycle, NetworkBackup, PowerSource, RadioCommand, RadioError,
    RadioPolicy, RadioState, Reachability, Reading, Value,
};
use crate::policy::{self, Admit, Compliance, DeviceFacts, Firing, PolicyEngine, RuleStates};
use crate::radio::Capabilities;
use crate::radio::RadioHandle;
use crate::secrets::{MasterKey, Secret};
use crate::store::audit::{AuditEntry, Outcome};
use crate::store::outbox::{self, MessageKind, NewMessage, OutboxGate};
use crate::store::requests::{self, PendingRequest};
use crate::store::{self, credentials, policies, registry, StoreError, Writer};

mod admission;
mod handle;
mod health;
mod held;
mod ingest;
mod leaves;
mod messages;
mod ops;
mod rules;
#[cfg(test)]
mod tests;

use admission::*;
pub use handle::*;
use health::*;
pub use held::is_sleeping;
use held::*;
use ingest::*;
use messages::*;
pub use messages::{requeue_retained, response_body};
pub use rules::device_command_from_json;

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

/// Bursts handed to the store writer and not yet committed, at most. While one
/// commits (its fsync, with `synchronous = full`), the hub gathers and hands over
/// the next ones, and the writer commits those queued meanwhile together: under load
/// an fsync is paid per several bursts, not per burst. Each burst's effects (notices,
/// radio actions, rules) still follow its own commit, in order.
pub const BURSTS_IN_FLIGHT: usize = 4;

/// How often availability is re-evaluated against the policy's timeouts.
const HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// How fast events came in behind the previous burst, and when it was handed to the
/// writer: the hub lingers only while a linger at that pace would gather fewer than
/// [`BUSY_IN_A_LINGER`] events, and only until one linger after that hand-over.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// When the previous burst started gathering.
    since: tokio::time::Instant,
    /// How many events it took.
    events: usize,
    /// When it was handed to the writer; `None` before the first.
    handed: Option<tokio::time::Instant>,
}

impl Pace {
    fn new() -> Pace {
        Pace {
            since: tokio::time::Instant::now(),
            events: 0,
            handed: None,
        }
    }

    /// Whether events arrive fast enough that a linger of `linger` would queue at
    /// least [`BUSY_IN_A_LINGER`] of them: then the writer's own pace batches them, and
    /// lingering would only idle the hub while the queue fills and its senders wait (at
    /// full load, one linger per queue-full had capped the gateway at ~50,000 events/s).
    fn busy(&self, now: tokio::time::Instant, linger: Duration) -> bool {
        let elapsed = now.duration_since(self.since).as_secs_f64();
        self.events as f64 * linger.as_secs_f64() >= BUSY_IN_A_LINGER as f64 * elapsed
    }
}

/// Half a full burst: a pace that fills this much of the queue during a linger is load.
const BUSY_IN_A_LINGER: usize = MAX_EVENT_BATCH / 2;

/// Takes the events queued behind the first one of a burst, up to a full burst. Under
/// light load (see [`Pace`]) bursts are handed over at most once per `linger`: an
/// event a linger or more after the previous hand-over goes at once (a lone event
/// waits for nothing), and one that follows sooner waits out the rest of that
/// linger, once, and takes what arrived meanwhile. A steady trickle so commits once
/// per linger (one fsync, one wake of the uplink for all its events), and events
/// arriving during the wait do not wake the hub one by one: at a radio's line rate
/// (an event every millisecond or so) a wake-up per event cost more CPU than the
/// event itself.
async fn gather(
    events: &mut mpsc::Receiver<DeviceEvent>,
    batch: &mut Vec<DeviceEvent>,
    linger: Duration,
    pace: &mut Pace,
) {
    let started = tokio::time::Instant::now();
    // The first event goes at once.
    let deadline = pace.handed.map_or(started, |h| h + linger);
    let mut lingered = deadline <= started || pace.busy(started, linger);
    while batch.len() < MAX_EVENT_BATCH {
        match events.try_recv() {
            Ok(ev) => batch.push(ev),
            Err(mpsc::error::TryRecvError::Empty) if !lingered => {
                tokio::time::sleep_until(deadline).await;
                lingered = true;
            }
            Err(_) => break,
        }
    }
    *pace = Pace {
        since: started,
        events: batch.len(),
        handed: Some(tokio::time::Instant::now()),
    };
}

/// How long a request for a sleeping device is held when the request does not say.
pub const DEFAULT_REQUEST_TTL_S: u64 = 3600;
/// The longest a request for a sleeping device may be held (`ttl_s`).
pub const MAX_REQUEST_TTL_S: u64 = 7 * 24 * 3600;
/// How often held requests are checked for expiry.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Join windows sent to a radio that has not yet said it opened them (a driver
    /// busy with interviews takes its command late), by the `join_windows` deadline
    /// they were sent with: open until the radio answers, and from its answer on for
    /// their whole length.
    unconfirmed_windows: HashMap<String, Instant>,
    /// The hub's own request queue, for answers its spawned tasks bring back.
    myself: mpsc::WeakSender<HubRequest>,
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
    /// Bursts that may be in the writer's hands at once (see [`BURSTS_IN_FLIGHT`]).
    bursts_in_flight: usize,
    /// How long the first event of a short burst waits for company (see [`Hub::with_linger`]).
    linger: Duration,
    /// At most one retained state per device per this (see [`Hub::with_state_interval`]).
    state_interval: Duration,
    /// When states that wait for their interval are next looked for.
    state_flush_at: Option<tokio::time::Instant>,
    /// Radios rotating their network key now: a second rotation is refused up front.
    rotating: Arc<std::sync::Mutex<HashSet<String>>>,
    /// Leave requests waiting for room in their radio's command queue.
    leaves: leaves::Leaves,
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

impl Applied {
    /// The device is told to leave through `radio`, and its denial is noticed.
    fn denied(&mut self, radio: &str, native_address: &str, device: &DeviceId, reason: String) {
        self.radio_actions.push((
            radio.to_string(),
            RadioCommand::Remove {
                native_address: native_address.to_string(),
            },
        ));
        self.notices.push(Notice::Denied {
            device: device.to_string(),
            reason,
        });
    }
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

/// The shortest time between two looks for retained states whose interval has
/// passed, when no burst of events took them along.
const STATE_FLUSH_SPACING: Duration = Duration::from_millis(250);

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
    /// `[store] state_interval` in ms (0: a state at every change).
    state_interval_ms: i64,
}

impl EventContext {
    /// When a device's retained state may be queued, as of now.
    fn state_pace(&self) -> store::registry::StatePace {
        store::registry::StatePace {
            now_ms: crate::store::requests::millis(SystemTime::now()),
            interval_ms: self.state_interval_ms,
        }
    }
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
            unconfirmed_windows: HashMap::new(),
            myself: req_tx.downgrade(),
            notices: notices.clone(),
            outbox_gate: Arc::new(OutboxGate::default()),
            rule_states: engine.new_states(),
            policy: Arc::new(engine),
            pinned_key: None,
            master_key: None,
            queued: HashSet::new(),
            refreshing: HashMap::new(),
            bursts_in_flight: BURSTS_IN_FLIGHT,
            linger: Duration::ZERO,
            state_interval: Duration::ZERO,
            state_flush_at: None,
            rotating: Arc::default(),
            leaves: leaves::Leaves::default(),
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

    /// How many bursts of device events may wait for their commit at once; 1 waits
    /// for each burst's commit before gathering the next (no pipelining).
    pub fn with_bursts_in_flight(mut self, bursts: usize) -> Hub {
        self.bursts_in_flight = bursts.max(1);
        self
    }

    /// Under light load, how long the first event of a burst waits for others before
    /// the burst goes to the writer (`[store] linger`). Events a few milliseconds
    /// apart then share one transaction (one fsync), one wake of the uplink and one
    /// delete, instead of one each: at a radio's line rate this is most of the
    /// gateway's CPU. Zero hands each burst over at once. Under load a burst fills
    /// (half the event queue) before the time is up, so it adds nothing there.
    pub fn with_linger(mut self, linger: Duration) -> Hub {
        self.linger = linger;
        self
    }

    /// A device's retained state message at most once per `interval` (`[store]
    /// state_interval`): readings still go out as telemetry at once; the state after
    /// the last of them is queued when the interval since the previous state has
    /// passed. With many devices under load this halves the messages (a state per
    /// reading otherwise); zero queues a state at every commit that changes it.
    pub fn with_state_interval(mut self, interval: Duration) -> Hub {
        self.state_interval = interval;
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
        let mut leave_retry = tokio::time::interval(leaves::RETRY);
        leave_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.recover_held_requests().await;
        // Bursts handed to the writer, oldest first; their effects run in this order.
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut pace = Pace::new();
        // States that waited when the gateway last stopped are queued now.
        self.state_flush_at = Some(tokio::time::Instant::now());
        loop {
            let flush_at = self.state_flush_at;
            tokio::select! {
                Some(ev) = events.recv(), if in_flight.len() < self.bursts_in_flight => {
                    let mut batch = vec![ev];
                    gather(&mut events, &mut batch, self.linger, &mut pace).await;
                    if let Some(b) = self.submit_events(batch).await {
                        in_flight.push_back(b);
                    }
                }
                result = async {
                    match in_flight.front_mut() {
                        Some(b) => (&mut b.done).await,
                        None => std::future::pending().await,
                    }
                }, if !in_flight.is_empty() => {
                    if let Some(b) = in_flight.pop_front() {
                        self.committed(b.events, result).await;
                    }
                }
                // Everything else sees every burst handed over so far committed and
                // acted on, as it would without pipelining.
                Some(req) = requests.recv() => {
                    self.settle_bursts(&mut in_flight).await;
                    self.on_request(req).await;
                }
                _ = tick.tick() => {
                    self.settle_bursts(&mut in_flight).await;
                    if let Some(l) = &liveness {
                        // Liveness means the loop turns and the store commits.
                        match self.writer.write(|_| Ok(())).await {
                            Ok(()) => (l.on_alive)(),
                            Err(e) => tracing::error!(error = %e, "store not writable: withholding the watchdog ping"),
                        }
                    }
                }
                _ = health.tick() => {
                    self.settle_bursts(&mut in_flight).await;
                    self.check_availability().await;
                }
                _ = async {
                    match flush_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.queue_due_states(false).await;
                }
                _ = expiry.tick(), if !self.queued.is_empty() => {
                    self.settle_bursts(&mut in_flight).await;
                    self.expire_held_requests().await;
                }
                _ = leave_retry.tick(), if !self.leaves.is_empty() => self.send_leaves(),
                _ = crate::shutdown::signalled(&mut shutdown) => break,
            }
        }
        self.settle_bursts(&mut in_flight).await;
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
        // Nothing waits for its interval across a stop.
        self.queue_due_states(true).await;
        // Wait for the last writes to commit.
        let _ = self.writer.write(|_| Ok(())).await;
        tracing::info!("hub stopped");
    }

    /// Queues the retained states whose interval and grace have passed (`all`: every
    /// one that waits), and sets when to look again.
    async fn queue_due_states(&mut self, all: bool) {
        self.state_flush_at = None;
        if self.disk_full() {
            // Kept in the registry; queued once there is room again.
            self.state_flush_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            return;
        }
        loop {
            let gw = self.gateway_id.clone();
            let now = crate::store::requests::millis(SystemTime::now());
            let until = if all {
                i64::MAX
            } else {
                now - ingest::STATE_GRACE_MS
            };
            let job = move |c: &rusqlite::Connection| {
                let full = ingest::queue_due_states(c, &gw, now, until)?;
                Ok((full, store::registry::next_state_due(c)?))
            };
            match self.writer.write(job).await {
                Ok((full, next)) => {
                    self.outbox_gate.appended();
                    if full {
                        continue;
                    }
                    if let Some(due) = next.filter(|_| !all) {
                        // Bursts take due states along as they commit; this is for
                        // when none come, so it need not wake for every due time.
                        let wait = Duration::from_millis(
                            (due + ingest::STATE_GRACE_MS - now).max(0) as u64,
                        )
                        .max(STATE_FLUSH_SPACING);
                        self.state_flush_at = Some(tokio::time::Instant::now() + wait);
                    }
                }
                Err(e) => {
                    if let Some(n) = self.writer.stats().log.hit("state_flush") {
                        tracing::error!(failures = n, error = %e, "could not queue the device states that waited");
                    }
                    // Tried again later, not in a loop.
                    self.state_flush_at =
                        Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
            return;
        }
    }

    /// Waits for every burst in flight to commit and acts on each, in order.
    async fn settle_bursts(&mut self, in_flight: &mut VecDeque<InFlight>) {
        while let Some(b) = in_flight.pop_front() {
            let result = b.done.await;
            self.committed(b.events, result).await;
        }
    }

    fn notify(&self, n: Notice) {
        let _ = self.notices.send(n);
    }

    fn window_open(&self, radio: &str) -> bool {
        self.unconfirmed_windows.contains_key(radio)
            || self
                .join_windows
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

    /// Hands `cmd` to a running radio without waiting on it (see `reserve`).
    fn send_to_radio(&self, radio: &str, cmd: RadioCommand) -> Result<(), HubError> {
        match self.reserve(radio) {
            Ok(permit) => {
                permit.send(cmd);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(radio, command = ?cmd, error = %e, "command not delivered");
                Err(e)
            }
        }
    }

    async fn on_request(&mut self, req: HubRequest) {
        match req {
            HubRequest::PermitJoin {
                radio,
                seconds,
                actor,
                reply,
            } => self.permit_join(radio, seconds, actor, reply).await,
            HubRequest::JoinWindowNotOpened { radio, until } => {
                self.join_window_not_opened(&radio, until)
            }
            HubRequest::JoinWindowOpened {
                radio,
                until,
                seconds,
            } => self.join_window_opened(&radio, until, seconds),
            HubRequest::Readmit {
                device,
                actor,
                reply,
            } => {
                let r = self.readmit(&device, &actor).await;
                let _ = reply.send(r);
            }
            HubRequest::Adopt {
                device,
                bindkey,
                actor,
                reply,
            } => self.adopt(device, bindkey, actor, reply).await,
            HubRequest::Decommission {
                device,
                actor,
                reply,
            } => {
                let r = self.decommission(&device, &actor).await;
                let _ = reply.send(r);
            }
            HubRequest::Block {
                device,
                actor,
                reply,
            } => {
                let r = self.block(&device, &actor).await;
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
            HubRequest::Restore {
                radio,
                document,
                actor,
                reply,
            } => self.restore(radio, document, actor, reply).await,
            HubRequest::AddInstallCode {
                device,
                code,
                actor,
                reply,
            } => self.add_install_code(device, code, actor, reply).await,
            HubRequest::AddCredential {
                device,
                kind,
                secret,
                actor,
                reply,
            } => {
                self.add_credential(kind, device, secret, actor, reply)
                    .await
            }
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
}
