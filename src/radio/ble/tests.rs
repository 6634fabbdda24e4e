//! The driver against the in-process emulator, on paused time: what reaches the hub,
//! what is refused and counted, and that the replay protection survives a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::*;
use crate::config::{PortSpec, Protocol};
use crate::model::DeviceCredential;
use crate::radio::SecretSink;
use crate::secrets::{MasterKey, Secret};
use crate::store::{Store, WriterOptions};

const ENCRYPTED: &str = "54:48:e6:8f:80:a5";

struct Rig {
    events: mpsc::Receiver<DeviceEvent>,
    commands: mpsc::Sender<RadioCommand>,
    counters: Arc<RadioCounters>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start(options: &str, secrets: Option<Arc<SecretSink>>) -> Rig {
    let (events_tx, events) = mpsc::channel(10_000);
    let (commands, commands_rx) = mpsc::channel(8);
    let (state, _) = watch::channel(RadioState::Starting);
    let counters: Arc<RadioCounters> = Arc::default();
    let mut io = DriverIo {
        radio: "ble0".into(),
        protocol: Protocol::Ble,
        port: PortSpec::Sim(Protocol::Ble),
        baud: None,
        options: toml::from_str(options).unwrap(),
        events: events_tx,
        commands: commands_rx,
        state,
        secrets,
        counters: counters.clone(),
        state_dir: None,
    };
    let task = tokio::spawn(async move { BleDriver::new().run_scan(&mut io).await });
    Rig {
        events,
        commands,
        counters,
        task,
    }
}

impl Rig {
    /// Everything the driver sent during `secs` seconds of emulated time.
    async fn collect(&mut self, secs: u64) -> Vec<DeviceEvent> {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let mut out = Vec::new();
        while let Ok(ev) = self.events.try_recv() {
            out.push(ev);
        }
        out
    }
}

fn readings_of_device<'a>(events: &'a [DeviceEvent], address: &str) -> Vec<&'a Vec<Reading>> {
    events
        .iter()
        .filter(|e| e.native_address == address)
        .filter_map(|e| match &e.kind {
            DeviceEventKind::Readings(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn number(readings: &[Reading], name: &str) -> Option<f64> {
    readings
        .iter()
        .find(|r| r.name == name)
        .and_then(|r| match r.value {
            Value::Number(n) => Some(n),
            _ => None,
        })
}

#[tokio::test(start_paused = true)]
async fn the_room_reaches_the_hub_decoded_and_the_attacks_are_refused() {
    let mut rig = start("min_interval = \"2s\"", None);
    let events = rig.collect(30).await;
    // Every room device was described once, with its format as the model.
    let models: HashMap<&str, String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            DeviceEventKind::Interviewed(i) => Some((e.native_address.as_str(), i.model.clone()?)),
            _ => None,
        })
        .collect();
    assert_eq!(models.len(), 6, "{models:?}");
    assert_eq!(models[ENCRYPTED], "bthome");
    assert_eq!(models["a4:c1:38:5a:6b:7c"], "xiaomi_pvvx");
    assert_eq!(models["cb:b8:33:4c:88:4f"], "ruuvi_rawv2");
    // The encrypted sensor decrypted: the spec vector's 25.06 °C (plus the emulator's wobble).
    let enc = readings_of_device(&events, ENCRYPTED);
    assert!(enc.len() >= 10, "{}", enc.len());
    for r in &enc {
        let t = number(r, "temperature").unwrap();
        assert!((25.06..25.13).contains(&t), "{t}");
    }
    // At most one per address per 2 s (30 s: <= 16 each), however fast devices send.
    assert!(readings_of_device(&events, "cb:b8:33:4c:88:4f").len() <= 16);
    assert!(
        rig.counters
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    // Replays, forged MICs and downgrades: every one counted, audited once a minute.
    let refused = rig
        .counters
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(refused >= 15, "{refused}");
    let audited: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            DeviceEventKind::Refused { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(audited.len(), 1, "{audited:?}");
    // No reading of the downgrade (-40 °C) ever got through.
    assert!(enc.iter().all(|r| number(r, "temperature") != Some(-40.0)));
    // The button's presses pass the interval (events are never held back).
    let presses = readings_of_device(&events, "3c:2e:f5:00:00:01");
    // One every 7 s from 0.2 s: 5 in 30 s, each passed despite the 2 s interval.
    assert_eq!(presses.len(), 5, "{presses:?}");
    rig.task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_street_is_counted_not_flooded() {
    let mut rig = start(
        "sim_street = 5000\nsim_faults = false\nnew_per_minute = 30",
        None,
    );
    let events = rig.collect(50).await;
    let addresses: HashSet<&str> = events.iter().map(|e| e.native_address.as_str()).collect();
    assert!(addresses.len() <= 30, "{}", addresses.len());
    let unknown = rig
        .counters
        .unknown_format
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(unknown > 10_000, "{unknown}");
    rig.task.abort();
}

#[tokio::test(start_paused = true)]
async fn commands_are_answered_not_hung() {
    let mut rig = start("sim_faults = false", None);
    let (tx, rx) = tokio::sync::oneshot::channel();
    rig.commands
        .send(RadioCommand::ProvisionCredential {
            native_address: "aa:bb:cc:dd:ee:ff".into(),
            credential: DeviceCredential {
                kind: CredentialKind::ZigbeeInstallCode,
                secret: Secret::new(vec![0; 18]),
            },
            reply: tx,
        })
        .await
        .unwrap();
    assert!(matches!(
        rx.await.unwrap(),
        Err(RadioError::NotSupported(_))
    ));
    rig.commands
        .send(RadioCommand::Set {
            stale_at: std::time::Instant::now() + crate::model::COMMAND_STALE_AFTER,
            native_address: ENCRYPTED.into(),
            command: crate::model::DeviceCommand::On,
            command_id: "c1".into(),
        })
        .await
        .unwrap();
    rig.commands
        .send(RadioCommand::Read {
            native_address: ENCRYPTED.into(),
            command_id: "c2".into(),
        })
        .await
        .unwrap();
    let events = rig.collect(1).await;
    assert!(events.iter().any(|e| matches!(&e.kind,
        DeviceEventKind::CommandResult { command_id, ok: false, .. } if command_id == "c1")));
    // A read is answered from the advertisements (the hub gives the state).
    assert!(events.iter().any(|e| matches!(&e.kind,
        DeviceEventKind::CommandResult { command_id, ok: true, .. } if command_id == "c2")));
    rig.task.abort();
}

// Real time (the store's writer is a real thread), emulated time 50 times faster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_counter_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.sqlite"), WriterOptions::default()).unwrap();
    let sink = Arc::new(SecretSink::new(
        store.writer(),
        Arc::new(MasterKey::from_bytes(&[5; 32], "test".into())),
    ));
    let mut rig = start("sim_faults = false\nsim_speed = 50", Some(sink.clone()));
    let first = rig.collect(2).await;
    assert!(!readings_of_device(&first, ENCRYPTED).is_empty());
    rig.task.abort();
    let _ = rig.task.await;
    let state = SecurityState::load(&sink, "ble0").await.unwrap();
    let last = fieldgate_ble::CounterStore::last_counter(
        &state.counters,
        &fieldgate_ble::parse_address(ENCRYPTED).unwrap(),
    )
    .unwrap();
    assert!(last > 0x0011_2233, "{last:#x}");
    // A fresh driver replays from the beginning (the emulator restarts its counter): all
    // of it is refused until the device's counter passes the persisted one.
    let mut rig = start("sim_faults = false\nsim_speed = 50", Some(sink.clone()));
    let second = rig.collect(1).await;
    assert!(readings_of_device(&second, ENCRYPTED).is_empty());
    assert!(
        rig.counters
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    rig.task.abort();
    // The store's drop waits for every writer handle: let the driver's go first.
    let _ = rig.task.await;
    drop(sink);
    drop(store);
}
