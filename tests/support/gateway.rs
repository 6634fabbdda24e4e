//! One wiring of the gateway's core for the integration tests and the benchmarks:
//! the store, the radios (spawned from the config's `[[radio]]` tables, or handles
//! the test provides), the hub and, when asked, the MQTT uplink, connected the way
//! `fieldgate run` connects them, without the local API. The test keeps a sender
//! into the hub's event queue to feed it device events the way a radio would.

#![allow(dead_code)] // each user takes the parts it needs

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fieldgate::config::Config;
use fieldgate::hub::{Hub, HubHandle, EVENT_QUEUE};
use fieldgate::model::DeviceEvent;
use fieldgate::radio::{self, RadioHandle, SecretSink};
use fieldgate::secrets::MasterKey;
use fieldgate::store::{Store, WriterOptions};
use fieldgate::upstream::{Tuning, Upstream, UpstreamDeps};
use tokio::sync::{mpsc, watch};

/// A running core. `stop` shuts it down in the daemon's order. Users that keep
/// parts of it in their own rig take the fields apart (their rig's `Drop` then
/// decides what a failed test leaves behind).
pub struct TestGateway {
    pub config: Config,
    pub db: PathBuf,
    pub store: Option<Store>,
    pub hub: HubHandle,
    /// The hub's event queue, as the radios have it.
    pub events: mpsc::Sender<DeviceEvent>,
    pub radios: Arc<Vec<RadioHandle>>,
    pub shutdown: watch::Sender<bool>,
    pub hub_task: Option<tokio::task::JoinHandle<()>>,
    pub upstream: Option<Upstream>,
    /// Seals the radios' and devices' secrets (a fixed test key).
    pub master_key: Arc<MasterKey>,
}

enum Radios {
    FromConfig { secrets: bool },
    Given(Vec<RadioHandle>),
}

pub struct Builder {
    config: Config,
    radios: Radios,
    join_windows: Vec<(String, Duration)>,
    upstream: Option<Tuning>,
    events: usize,
    bursts_in_flight: Option<usize>,
    master_key: Arc<MasterKey>,
}

/// The key tests seal secrets with.
pub fn test_master_key() -> Arc<MasterKey> {
    Arc::new(MasterKey::from_bytes(&[0x5A; 32], "test".into()))
}

impl TestGateway {
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            radios: Radios::FromConfig { secrets: true },
            join_windows: Vec::new(),
            upstream: None,
            events: EVENT_QUEUE,
            bursts_in_flight: None,
            master_key: test_master_key(),
        }
    }

    /// Shuts down in the daemon's order: hub, uplink, then the store (everything
    /// queued committed when this returns).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.hub_task.take() {
            let _ = task.await;
        }
        if let Some(up) = self.upstream.take() {
            up.join().await;
        }
        let store = self.store.take();
        drop(self.events);
        drop(self.hub);
        drop(self.radios);
        if let Some(store) = store {
            tokio::task::spawn_blocking(move || store.close())
                .await
                .expect("store closes");
        }
    }
}

impl Builder {
    /// Use these radio handles instead of spawning the config's radios.
    pub fn radios(mut self, radios: Vec<RadioHandle>) -> Self {
        self.radios = Radios::Given(radios);
        self
    }

    /// Spawn the config's radios without a place for their network secrets.
    pub fn without_secret_store(mut self) -> Self {
        self.radios = Radios::FromConfig { secrets: false };
        self
    }

    /// Open the hub's join window on `radio` (without telling the radio).
    pub fn join_window(mut self, radio: &str, open_for: Duration) -> Self {
        self.join_windows.push((radio.to_string(), open_for));
        self
    }

    /// Start the MQTT uplink from the config's `[upstream]` with `tuning`.
    pub fn upstream(mut self, tuning: Tuning) -> Self {
        self.upstream = Some(tuning);
        self
    }

    /// The capacity of the hub's event queue (the daemon's by default).
    pub fn event_queue(mut self, capacity: usize) -> Self {
        self.events = capacity;
        self
    }

    /// Bursts the hub may hand to the writer before the first commits (the
    /// daemon's by default; 1 waits for each commit).
    pub fn bursts_in_flight(mut self, bursts: usize) -> Self {
        self.bursts_in_flight = Some(bursts);
        self
    }

    pub fn start(self) -> TestGateway {
        let config = self.config;
        let db = config.db_path();
        if let Some(dir) = db.parent() {
            std::fs::create_dir_all(dir).expect("state dir");
        }
        let store = Store::open(&db, WriterOptions::from(&config.store)).expect("store opens");
        let (shutdown, sd_rx) = watch::channel(false);
        let (events, events_rx) = mpsc::channel(self.events);
        let radios = match self.radios {
            Radios::Given(r) => r,
            Radios::FromConfig { secrets } => {
                let sink = secrets
                    .then(|| Arc::new(SecretSink::new(store.writer(), self.master_key.clone())));
                let radios_dir = config.gateway.state_dir.get_ref().join("radios");
                radio::spawn_all(
                    &config.radios,
                    events.clone(),
                    sd_rx.clone(),
                    sink,
                    Some(&radios_dir),
                )
            }
        };
        let radios = Arc::new(radios);
        let (mut hub, handle, requests) = Hub::new(config.gateway_id(), store.writer(), &radios);
        hub = hub
            .with_master_key(self.master_key.clone())
            .with_linger(config.store.linger)
            .with_state_interval(config.store.state_interval);
        if let Some(n) = self.bursts_in_flight {
            hub = hub.with_bursts_in_flight(n);
        }
        for (radio, open_for) in &self.join_windows {
            hub.open_join_window(radio, *open_for);
        }
        let upstream = self.upstream.map(|tuning| {
            Upstream::start_tuned(
                config.upstream.as_ref().expect("the config has [upstream]"),
                UpstreamDeps {
                    gateway_id: config.gateway_id().into(),
                    db_path: db.clone(),
                    writer: store.writer(),
                    hub: handle.clone(),
                    radios: radios.clone(),
                    gate: hub.outbox_gate(),
                    bridges: fieldgate::radio::lora::bridge::routes(&config.radios, &radios),
                    shutdown: sd_rx.clone(),
                },
                tuning,
            )
            .expect("upstream starts")
        });
        let hub_task = tokio::spawn(hub.run(events_rx, requests, sd_rx, None));
        TestGateway {
            config,
            db,
            store: Some(store),
            hub: handle,
            events,
            radios,
            shutdown,
            hub_task: Some(hub_task),
            upstream,
            master_key: self.master_key,
        }
    }
}
