//! Upstream benchmark, against rumqttd embedded on a loopback port, in one run:
//!
//! 1. **bare**: a rumqttc QoS 1 publish loop (in-flight window 100, ~250-byte
//!    payloads) until every PUBACK is in: the ceiling for this client and broker.
//! 2. **end to end**: device events into the hub -> registry + outbox (committed)
//!    -> upstream pump -> QoS 1 -> PUBACK -> row deleted, until the outbox is empty.
//!    Each reading event queues two messages (telemetry, and the retained state),
//!    so both events/s and messages/s are reported; run with the store's
//!    `synchronous = normal` (crash-safe) and `full` (power-loss-safe).
//! 3. **drain**: a backlog of 100,000 committed rows drained after the uplink
//!    comes up.
//!
//! Run: `cargo bench --bench upstream` (env FIELDGATE_BENCH_EVENTS, FIELDGATE_BENCH_PAIRS,
//! FIELDGATE_BENCH_EVENTS_FULL, FIELDGATE_BENCH_BACKLOG, FIELDGATE_BENCH_BARE;
//! FIELDGATE_BENCH_ONLY=e2e runs the end-to-end path alone, for a profiler).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::gateway_support::TestGateway;
use fieldgate::config::{Config, Protocol};
use fieldgate::hub::BURSTS_IN_FLIGHT as BURSTS;
use fieldgate::model::{DeviceEvent, DeviceEventKind, Reading, Value};
use fieldgate::store::outbox::{self, MessageKind, NewMessage};
use fieldgate::store::{Store, WriterOptions};
use fieldgate::upstream::{ConnectionState, Tuning, Upstream};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::{mpsc, watch};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[path = "../tests/support/gateway.rs"]
mod gateway_support;
#[path = "../tests/support/rumqttd.rs"]
mod rumqttd_support;

fn start_broker() -> u16 {
    rumqttd_support::start("bench", 100)
}

fn sample_payload(i: usize) -> Vec<u8> {
    serde_json::json!({
        "msg_id": uuid::Uuid::now_v7().to_string(),
        "seq": i,
        "ts": fieldgate::model::now_rfc3339(),
        "gateway": "bench-gw",
        "type": "telemetry",
        "device": "zigbee:0x00124b0001abcdef",
        "data": {"readings": [{"name": "temperature", "value": 21.5, "unit": "°C"}]},
    })
    .to_string()
    .into_bytes()
}

/// A plain rumqttc QoS 1 loop: messages per second until all are acked.
async fn bare(port: u16, n: usize) -> f64 {
    let mut opts = MqttOptions::new(format!("bare-{}", std::process::id()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(100);
    let (client, mut el) = AsyncClient::new(opts, 200);
    loop {
        if let Ok(Event::Incoming(Incoming::ConnAck(_))) = el.poll().await {
            break;
        }
    }
    let payloads: Vec<Vec<u8>> = (0..n).map(sample_payload).collect();
    let t0 = Instant::now();
    let producer = tokio::spawn(async move {
        for p in payloads {
            client
                .publish("bench/bare/device/x/telemetry", QoS::AtLeastOnce, false, p)
                .await
                .expect("publish");
        }
        client
    });
    let mut acked = 0;
    while acked < n {
        match el.poll().await {
            Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
            Ok(Event::Outgoing(Outgoing::Publish(_))) | Ok(_) => {}
            Err(e) => panic!("bare loop: {e}"),
        }
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let _client = producer.await;
    rate
}

struct Gateway {
    _dir: tempfile::TempDir,
    store: Option<Store>,
    db: std::path::PathBuf,
    events: mpsc::Sender<DeviceEvent>,
    shutdown: watch::Sender<bool>,
    hub_task: tokio::task::JoinHandle<()>,
    upstream: Option<Upstream>,
}

impl Gateway {
    async fn start(port: u16, synchronous: &str, tag: &str, bursts: usize) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[gateway]\nid = \"bench-gw\"\nstate_dir = \"{}\"\n[store]\nsynchronous = \"{synchronous}\"\n[upstream]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"bench-{tag}-{}\"\ntopic_prefix = \"bench/{tag}\"\n",
            dir.path().display(),
            std::process::id()
        );
        let config = Config::parse(Path::new("bench.toml"), &text).expect("config");
        // The daemon's queue between the radios and the hub, no radios.
        let mut gw = TestGateway::builder(config)
            .radios(Vec::new())
            .upstream(Tuning::default())
            .bursts_in_flight(bursts)
            .start();
        Gateway {
            db: gw.db.clone(),
            _dir: dir,
            store: gw.store.take(),
            events: gw.events.clone(),
            shutdown: gw.shutdown.clone(),
            hub_task: gw.hub_task.take().expect("hub task"),
            upstream: gw.upstream.take(),
        }
    }

    async fn wait_connected(&self) {
        let s = self.upstream.as_ref().expect("upstream").status.clone();
        while s.state() != ConnectionState::Connected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends a marked last reading and waits until the hub has committed it (and so
    /// every event before it).
    async fn finish(&self) {
        self.events
            .send(DeviceEvent {
                radio: "zb0".into(),
                protocol: Protocol::Zigbee,
                native_address: "0x0000".into(),
                received_at: SystemTime::now(),
                kind: DeviceEventKind::Readings(vec![Reading {
                    name: "bench_end".into(),
                    value: Value::Bool(true),
                    unit: None,
                }]),
                link: None,
            })
            .await
            .expect("hub");
        let id = fieldgate::model::DeviceId::new(Protocol::Zigbee, "0x0000");
        loop {
            let done = fieldgate::store::open_reader(&self.db)
                .ok()
                .and_then(|c| fieldgate::store::registry::get(&c, &id).ok().flatten())
                .is_some_and(|d| d.last_state.get("bench_end").is_some());
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn wait_empty(&self) {
        wait_outbox_empty(&self.db).await
    }

    async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.hub_task).await;
        if let Some(up) = self.upstream.take() {
            up.join().await;
        }
        let store = self.store.take();
        drop(self);
        if let Some(s) = store {
            let _ = tokio::task::spawn_blocking(move || s.close()).await;
        }
    }
}

/// Waits until every queued message has been acknowledged and deleted. The check
/// is one lookup on a connection kept open, so polling it takes next to no CPU from
/// what is measured (opening a connection and scanning the outbox with `stats`
/// every 5 ms took ~7 % of the samples of an end-to-end run).
async fn wait_outbox_empty(db: &Path) {
    let reader = fieldgate::store::open_reader(db).expect("reader");
    let mut any = reader
        .prepare("SELECT EXISTS (SELECT 1 FROM outbox)")
        .expect("statement");
    while any.query_row([], |r| r.get::<_, bool>(0)).unwrap_or(true) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `n` temperature readings from 50 devices, as a Zigbee driver would emit them.
fn readings(n: usize) -> Vec<DeviceEvent> {
    (0..n)
        .map(|i| DeviceEvent {
            radio: "zb0".into(),
            protocol: Protocol::Zigbee,
            native_address: format!("0x{:04x}", i % 50 + 1),
            received_at: SystemTime::now(),
            kind: DeviceEventKind::Readings(vec![Reading {
                name: "temperature".into(),
                value: Value::Number(20.0 + (i % 100) as f64 / 10.0),
                unit: Some("°C".into()),
            }]),
            link: None,
        })
        .collect()
}

/// Events/s and messages/s from the hub to PUBACKed-and-deleted.
async fn end_to_end(port: u16, n: usize, synchronous: &str, bursts: usize) -> (f64, f64) {
    let gw = Gateway::start(port, synchronous, &format!("e2e-{synchronous}"), bursts).await;
    gw.wait_connected().await;
    // Built before the clock starts, as the bare loop's payloads are.
    let events = readings(n);
    let t0 = Instant::now();
    for ev in events {
        gw.events.send(ev).await.expect("hub");
    }
    // Every reading queues its telemetry; the retained state is queued once per
    // device per committed burst. A last, marked reading tells when the hub has
    // committed everything; then wait until the outbox is empty (all acked).
    gw.finish().await;
    gw.wait_empty().await;
    let secs = t0.elapsed().as_secs_f64();
    if std::env::var("FIELDGATE_BENCH_ONLY").as_deref() == Ok("e2e") {
        if let Some(st) = gw.store.as_ref() {
            let w = st.writer();
            let s = w.stats();
            println!(
                "writer: {} transactions, {} jobs",
                s.transactions.load(std::sync::atomic::Ordering::Relaxed),
                s.operations.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    let delivered = gw
        .upstream
        .as_ref()
        .map(|u| u.status.snapshot().delivered)
        .unwrap_or(0);
    gw.stop().await;
    (n as f64 / secs, delivered as f64 / secs)
}

/// Events/s from the hub into the committed outbox alone (the uplink points at a
/// closed port), to show which side bounds the end-to-end figure.
async fn hub_only(n: usize, synchronous: &str) -> f64 {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let gw = Gateway::start(closed, synchronous, &format!("hub-{synchronous}"), BURSTS).await;
    // Built before the clock starts, as the bare loop's payloads are.
    let events = readings(n);
    let t0 = Instant::now();
    for ev in events {
        gw.events.send(ev).await.expect("hub");
    }
    gw.finish().await;
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    gw.stop().await;
    rate
}

/// Messages/s draining a committed backlog of `n` rows.
async fn drain(port: u16, n: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[gateway]\nid = \"bench-gw\"\nstate_dir = \"{}\"\n[upstream]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"bench-drain-{}\"\ntopic_prefix = \"bench/drain\"\n",
        dir.path().display(),
        std::process::id()
    );
    let config = Config::parse(Path::new("bench.toml"), &text).expect("config");
    let store = Store::open(&config.db_path(), WriterOptions::from(&config.store)).expect("store");
    let writer = store.writer();
    for chunk in 0..n.div_ceil(5000) {
        let count = 5000.min(n - chunk * 5000);
        writer
            .write(move |c| {
                for i in 0..count {
                    outbox::append(
                        c,
                        "bench-gw",
                        &NewMessage {
                            kind: MessageKind::Telemetry,
                            device: None,
                            topic: format!("device/zigbee:0x{:04x}/telemetry", i % 50),
                            retain: false,
                            data: serde_json::json!({"readings": [{"name": "temperature", "value": 21.5, "unit": "°C"}]}),
                            event_time: SystemTime::now(),
                        },
                    )?;
                }
                Ok(())
            })
            .await
            .expect("seed backlog");
    }
    drop(writer);
    tokio::task::spawn_blocking(move || store.close())
        .await
        .expect("seeding store closes");
    let t0 = Instant::now();
    let gw = TestGateway::builder(config)
        .radios(Vec::new())
        .upstream(Tuning::default())
        .start();
    wait_outbox_empty(&gw.db).await;
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    gw.stop().await;
    rate
}

/// Bare and end-to-end runs, alternated (FIELDGATE_BENCH_PAIRS changes it).
const PAIRS: usize = 9;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let port = start_broker();
    let n_bare = env_usize("FIELDGATE_BENCH_BARE", 200_000);
    let n_events = env_usize("FIELDGATE_BENCH_EVENTS", 100_000);
    let pairs = env_usize("FIELDGATE_BENCH_PAIRS", PAIRS).max(1);
    let n_full = env_usize("FIELDGATE_BENCH_EVENTS_FULL", 100_000);
    let full_pairs = env_usize("FIELDGATE_BENCH_FULL_PAIRS", 3).max(1);
    let backlog = env_usize("FIELDGATE_BENCH_BACKLOG", 100_000);
    if std::env::var("FIELDGATE_BENCH_ONLY").as_deref() == Ok("e2e") {
        // For profiling the gateway's own path: end to end only, no baseline.
        rt.block_on(async {
            let (ev, msg) = end_to_end(port, n_events, "normal", BURSTS).await;
            println!("end to end, sync=normal: {ev:.0} events/s = {msg:.0} msg/s");
        });
        std::process::exit(0);
    }
    if std::env::var("FIELDGATE_BENCH_ONLY").as_deref() == Ok("full") {
        // The shipped durability setting alone: pairs of bare, pipelined, one burst
        // per commit.
        rt.block_on(async {
            bare(port, 2_000).await;
            let mut ratios = (Vec::new(), Vec::new());
            for _ in 0..full_pairs {
                let b = bare(port, n_bare).await;
                let piped = end_to_end(port, n_full, "full", BURSTS).await;
                let serial = end_to_end(port, n_full, "full", 1).await;
                println!(
                    "sync=full ({n_full} events): bare {b:.0} msg/s; pipelined {:.0} events/s = {:.2} of bare; one burst per commit {:.0} events/s = {:.2} of bare",
                    piped.0, piped.0 / b, serial.0, serial.0 / b
                );
                ratios.0.push(piped.0 / b);
                ratios.1.push(serial.0 / b);
            }
            ratios.0.sort_by(f64::total_cmp);
            ratios.1.sort_by(f64::total_cmp);
            println!(
                "median ratio to bare: pipelined {:.2}, one burst per commit {:.2}",
                ratios.0[ratios.0.len() / 2],
                ratios.1[ratios.1.len() / 2]
            );
        });
        std::process::exit(0);
    }
    rt.block_on(async {
        // Warm-up of both paths.
        bare(port, 2_000).await;
        end_to_end(port, 500, "normal", BURSTS).await;

        // Pairs of runs, bare then end to end: the shared VM's speed drifts, so each
        // end-to-end run is compared with the bare run right before it.
        let mut bare_rates = Vec::new();
        let mut e2e = Vec::new();
        for _ in 0..pairs {
            bare_rates.push(bare(port, n_bare).await);
            e2e.push(end_to_end(port, n_events, "normal", BURSTS).await);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let bare_rate = median(bare_rates.clone());
        let ev_rate = median(e2e.iter().map(|r| r.0).collect());
        let msg_rate = median(e2e.iter().map(|r| r.1).collect());
        let ev_ratios: Vec<f64> = e2e.iter().zip(&bare_rates).map(|(e, b)| e.0 / b).collect();
        let msg_ratios: Vec<f64> = e2e.iter().zip(&bare_rates).map(|(e, b)| e.1 / b).collect();
        // The shipped setting: pairs of bare and end to end with synchronous = full,
        // each end-to-end run with the hub's bursts pipelined (the daemon's) and,
        // as the baseline of the change, one burst per commit.
        let mut full = Vec::new();
        for _ in 0..full_pairs {
            let b = bare(port, n_bare).await;
            let piped = end_to_end(port, n_full, "full", BURSTS).await;
            let serial = end_to_end(port, n_full, "full", 1).await;
            full.push((b, piped, serial));
        }
        let drain_rate = drain(port, backlog).await;
        let hub_rate = hub_only(n_events, "normal").await;

        println!("upstream benchmark (rumqttd on loopback, QoS 1, window 100)");
        println!("  bare rumqttc loop:          {bare_rate:>10.0} msg/s  (median of {pairs}: {bare_rates:.0?})");
        println!("  end to end, sync=normal:    {ev_rate:>10.0} events/s = {msg_rate:>8.0} msg/s (median of {pairs}, {n_events} events)");
        for (b, piped, serial) in &full {
            println!(
                "  sync=full ({n_full} events): bare {b:.0} msg/s; pipelined {:.0} events/s = {:.2} of bare; one burst per commit {:.0} events/s = {:.2} of bare",
                piped.0, piped.0 / b, serial.0, serial.0 / b
            );
        }
        let full_ratio = median(full.iter().map(|(b, p, _)| p.0 / b).collect());
        let serial_ratio = median(full.iter().map(|(b, _, s)| s.0 / b).collect());
        println!(
            "  ratio sync=full end-to-end events/s / bare msg/s, median of {full_pairs}: pipelined {full_ratio:.2}, one burst per commit {serial_ratio:.2}"
        );
        println!("  hub only (no uplink), sync=normal: {hub_rate:>10.0} events/s ({n_events} events)");
        println!("  drain of {backlog} rows:      {drain_rate:>10.0} msg/s");
        println!(
            "  ratio (end-to-end events/s / bare msg/s), median of pairs: {:.2}  (pairs: {ev_ratios:.2?})",
            median(ev_ratios.clone())
        );
        println!(
            "  ratio (end-to-end msg/s / bare msg/s), median of pairs:    {:.2}  (pairs: {msg_ratios:.2?})",
            median(msg_ratios.clone())
        );
        println!(
            "  ratio (drain msg/s / bare msg/s):         {:.2}",
            drain_rate / bare_rate
        );
    });
    // rumqttd's thread never ends: leave without waiting for it.
    std::process::exit(0);
}
