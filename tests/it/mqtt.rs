//! Upstream over MQTT against a real broker: rumqttd embedded on a random loopback
//! port, or the broker named by `FIELDGATE_TEST_BROKER` (e.g. mosquitto in CI:
//! `FIELDGATE_TEST_BROKER=mqtt://127.0.0.1:1883`).
//!
//! The gateway side is the library (store + hub + upstream, fed device events by
//! the test) or the real binary (SIGKILL test). Outages and TLS are made by a
//! small proxy in front of the broker, so the same tests run on either broker.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::gateway_support::TestGateway;
use fieldgate::config::{Config, PortSpec, Protocol};
use fieldgate::hub::HubHandle;
use fieldgate::model::{
    DeviceEvent, DeviceEventKind, DeviceInfo, RadioCommand, RadioState, Reading, Value,
};
use fieldgate::radio::RadioHandle;
use fieldgate::store::outbox::{self, MessageKind, NewMessage};
use fieldgate::store::Store;
use fieldgate::upstream::{ConnectionState, Tuning, Upstream, UpstreamStatus};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};

// ---------------------------------------------------------------- the broker

#[derive(Debug, Clone)]
pub(crate) struct BrokerAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl BrokerAddr {
    pub(crate) fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host, self.port)
    }
    pub(crate) fn socket(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The broker every test in this module shares (topics and client ids are unique
/// per test, so they do not see each other).
pub(crate) fn broker() -> &'static BrokerAddr {
    static BROKER: OnceLock<BrokerAddr> = OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(url) = std::env::var("FIELDGATE_TEST_BROKER") {
            let u = url::Url::parse(&url).expect("FIELDGATE_TEST_BROKER is a URL");
            return BrokerAddr {
                host: u.host_str().expect("broker host").to_string(),
                port: u.port().unwrap_or(1883),
            };
        }
        let port = crate::rumqttd_support::start("v4-test", 1000);
        BrokerAddr {
            host: "127.0.0.1".into(),
            port,
        }
    })
}

pub(crate) fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

// ---------------------------------------------------------------- a subscriber

#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) retain: bool,
}

impl Msg {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {:?}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// A test client: subscribes to `filters`, records what arrives, can publish.
pub(crate) struct Probe {
    pub(crate) client: AsyncClient,
    got: Arc<Mutex<Vec<Msg>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    pub(crate) async fn connect(addr: &BrokerAddr, filters: &[String]) -> Probe {
        let mut opts = MqttOptions::new(unique("probe"), addr.host.clone(), addr.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
        opts.set_inflight(500);
        let (client, mut el) = AsyncClient::new(opts, 1000);
        let got = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let sink = got.clone();
        let wanted = filters.len();
        let task = tokio::spawn(async move {
            let mut subacks = 0;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => sink.lock().unwrap().push(Msg {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        subacks += 1;
                        if subacks == wanted {
                            let _ = ready_tx.send(()).await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for f in filters {
            client
                .subscribe(f.clone(), QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
            .await
            .expect("probe subscribed in time");
        Probe { client, got, task }
    }

    pub(crate) fn messages(&self) -> Vec<Msg> {
        self.got.lock().unwrap().clone()
    }

    pub(crate) fn on(&self, suffix: &str) -> Vec<Msg> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic.ends_with(suffix))
            .collect()
    }

    pub(crate) async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&[Msg]) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            if f(&self.messages()) {
                return;
            }
            if Instant::now() > deadline {
                let got = self.messages();
                let topics: Vec<&str> = got
                    .iter()
                    .rev()
                    .take(20)
                    .map(|m| m.topic.as_str())
                    .collect();
                panic!(
                    "timed out waiting for {what}; {} messages, the last: {topics:?}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- a proxy

/// A TCP (optionally TLS-terminating) proxy in front of the broker that can be
/// switched off, which cuts every connection through it: a broker outage.
pub(crate) struct Proxy {
    port: u16,
    /// The leaf certificate each accepted TLS client presented, in order.
    peers: Arc<Mutex<Vec<Vec<u8>>>>,
    up: Arc<AtomicBool>,
    cut: broadcast::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String, tls: Option<tokio_rustls::TlsAcceptor>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        Proxy::serve(listener, target, tls)
    }

    /// A plain proxy on a port chosen earlier: a gateway configured with this port saw
    /// nothing listening (connection refused) until now, as if the broker was stopped.
    pub(crate) async fn start_on(port: u16, target: String) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("proxy bind on the chosen port");
        Proxy::serve(listener, target, None)
    }

    fn serve(
        listener: TcpListener,
        target: String,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Proxy {
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = broadcast::channel(4);
        let (up2, cut2) = (up.clone(), cut.clone());
        let peers = Arc::new(Mutex::new(Vec::new()));
        let peers2 = peers.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(sock);
                    continue;
                }
                let mut cut_rx = cut2.subscribe();
                let target = target.clone();
                let tls = tls.clone();
                let peers = peers2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    match tls {
                        Some(acceptor) => {
                            let Ok(Ok(mut client)) =
                                tokio::time::timeout(Duration::from_secs(5), acceptor.accept(sock))
                                    .await
                            else {
                                return;
                            };
                            if let Some(leaf) = client
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                            {
                                peers.lock().unwrap().push(leaf.to_vec());
                            }
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = cut_rx.recv() => {}
                            }
                        }
                        None => {
                            let mut client = sock;
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = cut_rx.recv() => {}
                            }
                        }
                    }
                });
            }
        });
        Proxy {
            port,
            peers,
            up,
            cut,
            task,
        }
    }

    pub(crate) fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = self.cut.send(());
    }

    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------- the gateway

/// Store + hub + upstream in this process, fed device events by the test.
struct Rig {
    _dir: tempfile::TempDir,
    store: Option<Store>,
    db: PathBuf,
    hub: HubHandle,
    events: mpsc::Sender<DeviceEvent>,
    shutdown: watch::Sender<bool>,
    hub_task: tokio::task::JoinHandle<()>,
    upstream: Option<Upstream>,
    status: Arc<UpstreamStatus>,
    prefix: String,
    /// Commands the fake radio `zb0` received.
    radio_commands: Option<mpsc::Receiver<RadioCommand>>,
    _radio_state: watch::Sender<RadioState>,
}

fn fast() -> Tuning {
    Tuning {
        idle_poll: Duration::from_millis(10),
        enforce_every: Duration::from_secs(1),
        ..Tuning::default()
    }
}

impl Rig {
    /// `upstream` is the body of `[upstream]` without the topic prefix and client id.
    async fn start(url: &str, upstream: &str, tuning: Tuning) -> Rig {
        Rig::start_prefixed(url, upstream, tuning, format!("fgtest/{}", unique("gw"))).await
    }

    async fn start_prefixed(url: &str, upstream: &str, tuning: Tuning, prefix: String) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        Rig::start_in(dir, url, upstream, tuning, prefix).await
    }

    /// As [`Rig::start_prefixed`], on the state kept in `dir` (a restart).
    async fn start_in(
        dir: tempfile::TempDir,
        url: &str,
        upstream: &str,
        tuning: Tuning,
        prefix: String,
    ) -> Rig {
        let text = format!(
            "[gateway]\nid = \"it-gw\"\nstate_dir = \"{}\"\n\n[store]\nsynchronous = \"normal\"\ncommit_window = \"2ms\"\n\n[upstream]\nurl = \"{url}\"\nclient_id = \"{}\"\ntopic_prefix = \"{prefix}\"\n{upstream}\n",
            dir.path().join("state").display(),
            unique("fg"),
        );
        let config = Config::parse(Path::new("rig.toml"), &text).expect("rig config");
        // One fake radio that is up and records the commands it gets; it opens every
        // join window it is asked to.
        let (cmd_tx, mut driver_rx) = mpsc::channel::<RadioCommand>(16);
        let (seen_tx, cmd_rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(c) = driver_rx.recv().await {
                let c = match c {
                    RadioCommand::PermitJoin { seconds, reply } => {
                        let _ = reply.send(Ok(()));
                        RadioCommand::PermitJoin {
                            seconds,
                            reply: tokio::sync::oneshot::channel().0,
                        }
                    }
                    c => c,
                };
                // Once the test has dropped its end, commands are only answered.
                let _ = seen_tx.send(c).await;
            }
        });
        let (state_tx, state_rx) = watch::channel(RadioState::Up);
        let radios = vec![RadioHandle {
            name: "zb0".into(),
            protocol: Protocol::Zigbee,
            port: PortSpec::Sim(Protocol::Zigbee),
            capabilities: fieldgate::radio::capabilities(Protocol::Zigbee),
            state: state_rx,
            commands: Some(cmd_tx),
            counters: Default::default(),
        }];
        let gw = TestGateway::builder(config)
            .radios(radios)
            // Devices in these tests join as if a technician had opened a window.
            .join_window("zb0", Duration::from_secs(3600))
            .event_queue(1024)
            .upstream(tuning)
            .start();
        let upstream = gw.upstream.expect("upstream");
        Rig {
            db: gw.db,
            _dir: dir,
            store: gw.store,
            hub: gw.hub,
            events: gw.events,
            shutdown: gw.shutdown,
            hub_task: gw.hub_task.expect("hub task"),
            status: upstream.status.clone(),
            upstream: Some(upstream),
            prefix,
            radio_commands: Some(cmd_rx),
            _radio_state: state_tx,
        }
    }

    fn filter(&self) -> String {
        format!("{}/#", self.prefix)
    }

    async fn send(&self, addr: &str, kind: DeviceEventKind) {
        self.events
            .send(DeviceEvent {
                radio: "zb0".into(),
                protocol: Protocol::Zigbee,
                native_address: addr.into(),
                received_at: SystemTime::now(),
                kind,
                link: None,
            })
            .await
            .expect("hub running");
    }

    async fn connected(&self) {
        let s = self.status.clone();
        until("the uplink to connect", Duration::from_secs(15), || {
            s.state() == ConnectionState::Connected
        })
        .await;
    }

    fn reader(&self) -> rusqlite::Connection {
        fieldgate::store::open_reader(&self.db).expect("reader")
    }

    fn outbox_depth(&self) -> u64 {
        outbox::stats(&self.reader()).expect("stats").depth
    }

    async fn stop(mut self) {
        self.stop_running().await;
        self.close().await;
    }

    /// Stops as the daemon does and keeps the state directory for a restart.
    async fn stop_keeping_state(mut self) -> tempfile::TempDir {
        self.stop_running().await;
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tempdir"));
        self.close().await;
        dir
    }

    /// Stops the hub and the uplink as the daemon does; the store stays open to read.
    async fn stop_running(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.hub_task).await;
        if let Some(up) = self.upstream.take() {
            up.join().await;
        }
    }

    /// Closes the store once everything has stopped.
    async fn close(mut self) {
        let store = self.store.take();
        drop(self);
        if let Some(store) = store {
            tokio::task::spawn_blocking(move || store.close())
                .await
                .expect("store closes");
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // A failed test unwinds with tasks still holding writer handles: joining
        // the writer thread here would hang the test instead of failing it.
        if let Some(store) = self.store.take() {
            std::mem::forget(store);
        }
    }
}

fn reading(v: f64) -> DeviceEventKind {
    DeviceEventKind::Readings(vec![Reading {
        name: "temperature".into(),
        value: Value::Number(v),
        unit: Some("°C".into()),
    }])
}

/// The envelope every outbox message carries (see docs/mqtt-api.md).
fn check_envelope(m: &Msg, kind: &str, device: Option<&str>) -> serde_json::Value {
    let v = m.json();
    let id = v["msg_id"]
        .as_str()
        .unwrap_or_else(|| panic!("msg_id in {v}"));
    assert!(uuid::Uuid::parse_str(id).is_ok(), "msg_id is a UUID: {v}");
    assert!(v["seq"].as_i64().is_some_and(|s| s > 0), "seq: {v}");
    let ts = v["ts"].as_str().expect("ts");
    assert!(
        humantime::parse_rfc3339(ts).is_ok() && ts.len() == 24,
        "ts is RFC 3339 with ms: {ts}"
    );
    assert_eq!(v["gateway"], "it-gw");
    assert_eq!(v["type"], kind, "{v}");
    match device {
        Some(d) => assert_eq!(v["device"], d),
        None => assert!(v.get("device").is_none()),
    }
    assert!(v["data"].is_object(), "data: {v}");
    v
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_flow_publishes_the_documented_topics_and_schemas() {
    let b = broker();
    let rig = Rig::start(&b.url(), "", fast()).await;
    let probe = Probe::connect(b, &[rig.filter()]).await;
    rig.connected().await;
    let p = rig.prefix.clone();

    rig.send("0x00124B0001ABCDEF", DeviceEventKind::Joined)
        .await;
    rig.send(
        "0x00124B0001ABCDEF",
        DeviceEventKind::Interviewed(DeviceInfo {
            manufacturer: Some("LUMI".into()),
            model: Some("lumi.weather".into()),
            firmware: Some("1.0".into()),
            power_source: None,
            capabilities: vec!["temperature".into()],
            reachability: None,
            silence: None,
        }),
    )
    .await;
    rig.send("0x00124B0001ABCDEF", reading(21.5)).await;
    rig.send("0x00124B0001ABCDEF", DeviceEventKind::Left).await;

    let dev = "zigbee:0x00124b0001abcdef";
    probe
        .wait_for("the left event", Duration::from_secs(10), |m| {
            m.iter()
                .filter(|m| m.topic == format!("{p}/device/{dev}/event"))
                .count()
                >= 3
        })
        .await;

    // Birth, retained.
    let status = probe.on("/status");
    assert!(status
        .iter()
        .any(|m| m.json()["state"] == "online" && m.topic == format!("{p}/status")));
    // Info, retained, with version and outbox.
    probe
        .wait_for("info", Duration::from_secs(5), |m| {
            m.iter().any(|m| m.topic == format!("{p}/info"))
        })
        .await;
    let info = probe.on("/info").remove(0).json();
    assert_eq!(info["gateway"], "it-gw");
    assert!(
        info["version"].is_string()
            && info["outbox"]["depth"].is_u64()
            && info["radios"].is_array()
            && info["radios"][0]["counters"]["startups"].is_u64()
    );
    // The audit chain head, for the cloud to compare with the records it received.
    assert!(
        info["audit"]["head_seq"].is_i64()
            && info["audit"]["head_hash"].as_str().map(str::len) == Some(64)
            && info["audit"]["records"].is_i64()
            && info["audit"]["alarm"].is_null(),
        "{info}"
    );

    let events: Vec<String> = probe
        .on(&format!("/device/{dev}/event"))
        .iter()
        .map(|m| {
            check_envelope(m, "lifecycle", Some(dev))["data"]["event"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(events, vec!["joined", "interviewed", "admitted", "left"]);
    let tele = probe.on(&format!("/device/{dev}/telemetry"));
    assert_eq!(tele.len(), 1);
    let t = check_envelope(&tele[0], "telemetry", Some(dev));
    assert_eq!(t["data"]["readings"][0]["name"], "temperature");
    assert_eq!(t["data"]["readings"][0]["value"], 21.5);
    let state = probe.on(&format!("/device/{dev}/state"));
    assert_eq!(
        check_envelope(&state[0], "state", Some(dev))["data"]["temperature"],
        21.5
    );
    let avail: Vec<String> = probe
        .on(&format!("/device/{dev}/availability"))
        .iter()
        .map(|m| {
            check_envelope(m, "availability", Some(dev))["data"]["state"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(avail, vec!["online", "offline"]);
    let audit = probe.on(&format!("{p}/audit"));
    assert!(audit.len() >= 2, "join and leave are audited");
    let a = check_envelope(&audit[0], "audit", None);
    assert_eq!(a["data"]["action"], "device.join");
    assert!(a["data"]["hash"].is_string());

    // Retained flags as documented: a late subscriber gets status/state/availability.
    let late = Probe::connect(b, &[rig.filter()]).await;
    late.wait_for("retained topics", Duration::from_secs(5), |m| {
        m.iter().any(|m| m.topic.ends_with("/state") && m.retain)
            && m.iter()
                .any(|m| m.topic.ends_with("/availability") && m.retain)
            && m.iter()
                .any(|m| m.topic == format!("{p}/status") && m.retain)
    })
    .await;
    assert!(
        !late
            .messages()
            .iter()
            .any(|m| m.topic.ends_with("/telemetry")),
        "telemetry is not retained"
    );

    // Per-gateway seq strictly increases in publish order.
    let seqs: Vec<i64> = probe
        .messages()
        .iter()
        .filter_map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload).ok()?["seq"].as_i64()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Everything acknowledged is deleted from the outbox.
    until("the outbox to drain", Duration::from_secs(10), || {
        rig.outbox_depth() == 0
    })
    .await;
    let snap = rig.status.snapshot();
    // joined, admitted and left each bring an audit record along with their events.
    assert_eq!(snap.delivered, 11, "{snap:?}");
    assert_eq!(snap.state, ConnectionState::Connected);
    rig.stop().await;

    // A graceful stop says offline (retained).
    probe
        .wait_for("offline on stop", Duration::from_secs(5), |m| {
            m.iter()
                .any(|m| m.topic == format!("{p}/status") && m.json()["state"] == "offline")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing_and_keeps_order() {
    const EVENTS: usize = 10_000;
    const DEVICES: usize = 5;
    let b = broker();
    let proxy = Proxy::start(b.socket(), None).await;
    let rig = Rig::start(&format!("mqtt://127.0.0.1:{}", proxy.port), "", fast()).await;
    let probe = Probe::connect(b, &[rig.filter()]).await;
    rig.connected().await;

    // Mid-stream: some go out, then the broker goes away while the rest arrive.
    for i in 0..200 {
        rig.send(&format!("0x{:04x}", i % DEVICES), reading(i as f64))
            .await;
    }
    proxy.down();
    for i in 200..EVENTS {
        rig.send(&format!("0x{:04x}", i % DEVICES), reading(i as f64))
            .await;
    }
    let s = rig.status.clone();
    until("the outage to be noticed", Duration::from_secs(10), || {
        s.state() != ConnectionState::Connected
    })
    .await;
    assert!(rig.outbox_depth() > 0);
    // Under this load a device's readings share outbox rows (one per device per
    // burst): the replay below goes through grouped rows.
    let rows: u64 = rig
        .reader()
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .expect("row count");
    assert!(
        rows < rig.outbox_depth(),
        "{rows} rows for {} messages",
        rig.outbox_depth()
    );
    proxy.restore();

    let p = rig.prefix.clone();
    probe
        .wait_for("every telemetry message", Duration::from_secs(90), |m| {
            let ids: HashSet<String> = m
                .iter()
                .filter(|m| m.topic.ends_with("/telemetry"))
                .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
                .filter_map(|v| v["msg_id"].as_str().map(str::to_string))
                .collect();
            ids.len() >= EVENTS
        })
        .await;

    // De-duplicated by msg_id, in first-arrival order: per device, the readings
    // come in the order they happened, with none missing.
    let mut seen = HashSet::new();
    let mut per_device: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut duplicates = 0;
    for m in probe.on("/telemetry") {
        assert!(m.topic.starts_with(&p));
        let v = m.json();
        if !seen.insert(v["msg_id"].as_str().unwrap_or_default().to_string()) {
            duplicates += 1;
            continue;
        }
        per_device
            .entry(v["device"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(v["data"]["readings"][0]["value"].as_f64().unwrap_or(-1.0));
    }
    assert_eq!(per_device.len(), DEVICES);
    let mut total = 0;
    for (dev, values) in &per_device {
        let expected: Vec<f64> = (0..EVENTS)
            .filter(|i| format!("zigbee:0x{:04x}", i % DEVICES) == *dev)
            .map(|i| i as f64)
            .collect();
        assert_eq!(values, &expected, "device {dev}: in order, no gaps");
        total += values.len();
    }
    assert_eq!(total, EVENTS);
    eprintln!(
        "outage test: {EVENTS} readings delivered, {duplicates} duplicate(s) after reconnect"
    );
    until("the outbox to drain", Duration::from_secs(30), || {
        rig.outbox_depth() == 0
    })
    .await;
    assert!(rig.status.snapshot().connects >= 2);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_errors_and_audit_records_and_service_continues() {
    let b = broker();
    let mut rig = Rig::start(&b.url(), "", fast()).await;
    let p = rig.prefix.clone();
    let probe = Probe::connect(b, &[format!("{p}/response/#")]).await;
    rig.connected().await;
    // Give the gateway's own subscription a moment to be in place.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Devices to refer to: one active, one decommissioned.
    rig.send("0xaaaa", DeviceEventKind::Joined).await;
    rig.send("0xbbbb", DeviceEventKind::Joined).await;
    until("devices registered", Duration::from_secs(5), || {
        fieldgate::store::registry::get(
            &rig.reader(),
            &fieldgate::model::DeviceId::parse("zigbee:0xbbbb").unwrap(),
        )
        .ok()
        .flatten()
        .is_some()
    })
    .await;
    rig.hub
        .decommission(
            fieldgate::model::DeviceId::parse("zigbee:0xbbbb").unwrap(),
            "test".into(),
        )
        .await
        .expect("decommission");

    let deep = format!(
        "{{\"correlation_id\":\"deep\",\"x\":{}{}}}",
        "[".repeat(300),
        "]".repeat(300)
    );
    let big = format!(
        "{{\"correlation_id\":\"big\",\"pad\":\"{}\"}}",
        "x".repeat(20 * 1024)
    );
    let long_cid = format!("{{\"correlation_id\":\"{}\"}}", "c".repeat(200));
    // (operation, payload, expected response level, expected code)
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("info", b"{not json".to_vec(), "info", "bad_json"),
        (
            "info",
            b"{\"correlation_id\":\"t1\"".to_vec(),
            "info",
            "bad_json",
        ),
        (
            "info",
            vec![0xff, 0xfe, 0x00, 0x13, 0x37, 0x80],
            "info",
            "not_utf8",
        ),
        ("info", b"[1,2,3]".to_vec(), "info", "not_an_object"),
        ("info", b"\"hello\"".to_vec(), "info", "not_an_object"),
        ("info", b"42".to_vec(), "info", "not_an_object"),
        ("info", b"null".to_vec(), "info", "not_an_object"),
        ("info", b"{}".to_vec(), "info", "missing_correlation_id"),
        (
            "info",
            br#"{"correlation_id":42}"#.to_vec(),
            "info",
            "invalid_correlation_id",
        ),
        (
            "info",
            br#"{"correlation_id":""}"#.to_vec(),
            "info",
            "invalid_correlation_id",
        ),
        (
            "info",
            br#"{"correlation_id":{"a":1}}"#.to_vec(),
            "info",
            "invalid_correlation_id",
        ),
        (
            "info",
            long_cid.into_bytes(),
            "info",
            "invalid_correlation_id",
        ),
        (
            "info",
            br#"{"correlation_id":"c14","surprise":true}"#.to_vec(),
            "info",
            "invalid_request",
        ),
        (
            "info",
            br#"{"correlation_id":"c15","client_id":"has space"}"#.to_vec(),
            "info",
            "invalid_request",
        ),
        ("info", deep.into_bytes(), "info", "bad_json"),
        ("info", big.into_bytes(), "info", "payload_too_large"),
        (
            "reboot",
            br#"{"correlation_id":"c18"}"#.to_vec(),
            "reboot",
            "unknown_operation",
        ),
        (
            "DROP TABLE",
            br#"{"correlation_id":"c19"}"#.to_vec(),
            "invalid",
            "unknown_operation",
        ),
        (
            "permit_join",
            br#"{"correlation_id":"c20","radio":"zb0","seconds":"60"}"#.to_vec(),
            "permit_join",
            "invalid_request",
        ),
        (
            "permit_join",
            br#"{"correlation_id":"c21","radio":"zb0","seconds":0}"#.to_vec(),
            "permit_join",
            "invalid_request",
        ),
        (
            "permit_join",
            br#"{"correlation_id":"c22","radio":"zb0","seconds":100000}"#.to_vec(),
            "permit_join",
            "invalid_request",
        ),
        (
            "permit_join",
            br#"{"correlation_id":"c23","radio":"zb0","seconds":-1}"#.to_vec(),
            "permit_join",
            "invalid_request",
        ),
        (
            "permit_join",
            br#"{"correlation_id":"c24","seconds":30}"#.to_vec(),
            "permit_join",
            "invalid_request",
        ),
        (
            "permit_join",
            br#"{"correlation_id":"c25","radio":"nope","seconds":30}"#.to_vec(),
            "permit_join",
            "unknown_radio",
        ),
        (
            "remove",
            br#"{"correlation_id":"c26","device":"bo/gus"}"#.to_vec(),
            "remove",
            "bad_device_id",
        ),
        (
            "remove",
            br#"{"correlation_id":"c27","device":5}"#.to_vec(),
            "remove",
            "invalid_request",
        ),
        (
            "remove",
            br#"{"correlation_id":"c28","device":"zigbee:0xdeadbeef"}"#.to_vec(),
            "remove",
            "unknown_device",
        ),
        (
            "remove",
            br#"{"correlation_id":"c29","device":"zigbee:0xbbbb"}"#.to_vec(),
            "remove",
            "already_decommissioned",
        ),
        (
            "set",
            br#"{"correlation_id":"c30","device":"zigbee:0xdeadbeef","state":{"on":true}}"#
                .to_vec(),
            "set",
            "unknown_device",
        ),
        (
            "set",
            br#"{"correlation_id":"c31","device":"zigbee:0xbbbb","state":{"on":true}}"#.to_vec(),
            "set",
            "device_decommissioned",
        ),
        (
            "set",
            br#"{"correlation_id":"c32","device":"zigbee:0xaaaa","state":{}}"#.to_vec(),
            "set",
            "invalid_request",
        ),
        (
            "set",
            br#"{"correlation_id":"c33","device":"zigbee:0xaaaa","state":{"on":[1]}}"#.to_vec(),
            "set",
            "invalid_request",
        ),
        (
            "set",
            br#"{"correlation_id":"c34","device":"zigbee:0xaaaa","state":{"colour":"red"}}"#.to_vec(),
            "set",
            "not_supported",
        ),
        (
            "get",
            br#"{"correlation_id":"c35","device":"zigbee:0xaaaa","attributes":"all"}"#.to_vec(),
            "get",
            "invalid_request",
        ),
        (
            "policy",
            br#"{"correlation_id":"c36","version":0,"document":{}}"#.to_vec(),
            "policy",
            "invalid_request",
        ),
        (
            "policy",
            br#"{"correlation_id":"c37","version":2,"document":[]}"#.to_vec(),
            "policy",
            "invalid_request",
        ),
        (
            "policy",
            br#"{"correlation_id":"c38","version":2,"document":{"version":2,"rules":[{"id":"x"}]}}"#.to_vec(),
            "policy",
            "policy_refused",
        ),
        (
            "health_check",
            br#"{"correlation_id":"c39","deep":true}"#.to_vec(),
            "health_check",
            "invalid_request",
        ),
    ];
    assert!(cases.len() >= 25);
    let mut distinct_codes = HashSet::new();
    for (i, (op, payload, level, code)) in cases.iter().enumerate() {
        let before = probe.messages().len();
        rig_publish(&probe, &format!("{p}/request/{op}"), payload.clone()).await;
        probe
            .wait_for(
                &format!("a response to case {i} ({op}, {code})"),
                Duration::from_secs(10),
                |m| m.len() > before,
            )
            .await;
        let resp = probe.messages()[before].clone();
        assert_eq!(resp.topic, format!("{p}/response/{level}"), "case {i}");
        let v = resp.json();
        assert_eq!(v["status"], "error", "case {i}: {v}");
        assert_eq!(v["error"]["code"], *code, "case {i}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "case {i}: {v}"
        );
        if let Ok(sent) = serde_json::from_slice::<serde_json::Value>(payload) {
            if let Some(cid) = sent["correlation_id"]
                .as_str()
                .filter(|c| c.len() <= 128 && !c.is_empty())
            {
                if *code != "payload_too_large" {
                    assert_eq!(v["correlation_id"], cid, "case {i}");
                }
            }
        }
        distinct_codes.insert(*code);
    }
    assert!(distinct_codes.len() >= 15, "{distinct_codes:?}");

    // Still serving: valid requests succeed.
    let ok_cases: Vec<(&str, String)> = vec![
        ("info", r#"{"correlation_id":"ok-info"}"#.into()),
        (
            "health_check",
            r#"{"correlation_id":"ok-health","client_id":"ops-console"}"#.into(),
        ),
        (
            "permit_join",
            r#"{"correlation_id":"ok-join","radio":"zb0","seconds":30}"#.into(),
        ),
        (
            "set",
            r#"{"correlation_id":"ok-set","device":"zigbee:0xaaaa","state":{"level":40}}"#.into(),
        ),
        (
            "policy",
            r#"{"correlation_id":"ok-policy","version":1,"document":{"version":1,"admission":{"max_join_window_s":120}}}"#.into(),
        ),
        (
            "remove",
            r#"{"correlation_id":"ok-remove","device":"zigbee:0xaaaa"}"#.into(),
        ),
    ];
    for (op, body) in &ok_cases {
        let before = probe.messages().len();
        rig_publish(
            &probe,
            &format!("{p}/request/{op}"),
            body.clone().into_bytes(),
        )
        .await;
        probe
            .wait_for(&format!("{op} ok"), Duration::from_secs(10), |m| {
                m.len() > before
            })
            .await;
        let v = probe.messages()[before].json();
        assert_eq!(v["status"], "ok", "{op}: {v}");
        assert_eq!(v["operation"], *op);
        assert!(v["data"].is_object(), "{v}");
    }
    let mut radio = rig.radio_commands.take().expect("radio");
    let mut commands = Vec::new();
    while let Ok(c) = radio.try_recv() {
        commands.push(c);
    }
    assert!(
        commands
            .iter()
            // 30 s asked; the rig's window, open for longer, keeps its time.
            .any(|c| matches!(c, RadioCommand::PermitJoin { seconds, .. } if *seconds >= 30)),
        "{commands:?}"
    );

    // The same request again (e.g. retained and re-delivered) is answered, not re-done.
    let before = probe.messages().len();
    rig_publish(
        &probe,
        &format!("{p}/request/remove"),
        br#"{"correlation_id":"ok-remove","device":"zigbee:0xaaaa"}"#.to_vec(),
    )
    .await;
    probe
        .wait_for("duplicate answered", Duration::from_secs(10), |m| {
            m.len() > before
        })
        .await;
    assert_eq!(probe.messages()[before].json()["status"], "ok");

    // Every request has an audit record with its outcome, and the chain verifies.
    let total = cases.len() + ok_cases.len() + 1;
    let r = rig.reader();
    let rows: Vec<(String, String, String)> = r
        .prepare("SELECT actor, action, outcome FROM audit WHERE action LIKE 'mqtt.%' ORDER BY seq")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), total, "{rows:?}");
    assert_eq!(
        rows.iter().filter(|r| r.2 == "accepted").count(),
        ok_cases.len()
    );
    assert!(rows.iter().any(|r| r.0 == "mqtt:ops-console"));
    assert!(rows.iter().all(|r| r.0.starts_with("mqtt:")));
    assert!(fieldgate::store::audit::verify(&r).unwrap().ok);
    let snap = rig.status.snapshot();
    assert_eq!(
        snap.requests.values().sum::<u64>(),
        total as u64,
        "{:?}",
        snap.requests
    );
    assert_eq!(snap.requests.get("bad_json"), Some(&3));
    rig.stop().await;
}

async fn rig_publish(probe: &Probe, topic: &str, payload: Vec<u8>) {
    probe
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("publish request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_full_drops_telemetry_first_refuses_it_when_needed_and_alarms() {
    // A broker that is never there: a port nothing listens on.
    let rig = Rig::start(
        &format!("mqtt://127.0.0.1:{}", free_port()),
        "[upstream.outbox]\nmax_bytes = 1048576\n",
        fast(),
    )
    .await;
    let pad = "x".repeat(8 * 1024);
    let writer = rig.store.as_ref().expect("store").writer();
    let seed = |kind: MessageKind, n: usize| {
        let (writer, pad) = (writer.clone(), pad.clone());
        async move {
            writer
                .write(move |c| {
                    for _ in 0..n {
                        outbox::append(
                            c,
                            "it-gw",
                            &NewMessage {
                                kind,
                                device: None,
                                topic: format!("test/{}", kind.as_str()),
                                retain: false,
                                data: json!({ "pad": pad }),
                                event_time: SystemTime::now(),
                            },
                        )?;
                    }
                    Ok(())
                })
                .await
                .expect("seed")
        }
    };
    let count = |kind: &str| -> i64 {
        rig.reader()
            .query_row("SELECT count(*) FROM outbox WHERE kind = ?1", [kind], |r| {
                r.get(0)
            })
            .unwrap()
    };
    // 2 MiB of telemetry and 40 lifecycle messages: telemetry goes, oldest first.
    seed(MessageKind::Lifecycle, 40).await;
    seed(MessageKind::Telemetry, 256).await;
    let s = rig.status.clone();
    until(
        "telemetry dropped for space",
        Duration::from_secs(10),
        || s.snapshot().dropped_telemetry_for_space > 0,
    )
    .await;
    let stats = outbox::stats(&rig.reader()).unwrap();
    assert!(stats.bytes <= 1024 * 1024, "{stats:?}");
    assert_eq!(count("lifecycle"), 40);
    let kept: Vec<i64> = outbox::pending(&rig.reader(), 0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == "telemetry")
        .map(|m| m.seq)
        .collect();
    assert_eq!(kept.last(), Some(&296), "the newest telemetry is kept");
    assert!(rig.status.snapshot().alarm.is_none());

    // Lifecycle alone past the limit: nothing of it is dropped, new telemetry is
    // refused and counted, and the alarm is raised.
    seed(MessageKind::Lifecycle, 120).await;
    until("the outbox alarm", Duration::from_secs(10), || {
        s.snapshot().alarm.is_some()
    })
    .await;
    assert_eq!(count("lifecycle"), 160);
    assert_eq!(count("telemetry"), 0, "all telemetry gave way");
    rig.send("0x0001", DeviceEventKind::Joined).await;
    rig.send("0x0001", reading(1.0)).await;
    until("the refused reading", Duration::from_secs(5), || {
        s.snapshot().refused_telemetry >= 1
    })
    .await;
    // The reading still updated the device state; only its telemetry was refused.
    until("state queued", Duration::from_secs(5), || {
        count("state") >= 1
    })
    .await;
    assert_eq!(count("telemetry"), 0);
    assert!(count("lifecycle") > 160, "the join is queued");
    let snap = rig.status.snapshot();
    assert!(
        snap.alarm.as_deref().unwrap_or("").contains("refused"),
        "{snap:?}"
    );
    assert_ne!(snap.state, ConnectionState::Connected);
    assert!(snap.last_error.is_some());
    drop(writer);
    rig.stop().await;
}

// ---------------------------------------------------------------- TLS

struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    server: (Vec<rustls::pki_types::CertificateDer<'static>>, Vec<u8>),
    ca_der: rustls::pki_types::CertificateDer<'static>,
    /// Another client identity from the trusted CA, and one from `other_ca`
    /// (certificate PEM, key PEM), for rotation tests.
    rotated: (String, String),
    rogue: (String, String),
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_for = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    };
    let ca = ca_for("fieldgate test CA");
    let other = ca_for("some other CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(vec!["gateway.test".to_string()]).unwrap();
    cp.distinguished_name.push(DnType::CommonName, "it-gw");
    let client = cp.signed_by(&client_key, &ca).unwrap();
    let identity = |issuer: &CertifiedIssuer<'_, KeyPair>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["gateway.test".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let rotated = identity(&ca, "it-gw rotated");
    let rogue = identity(&other, "it-gw rogue");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        other_ca: write("other-ca.pem", other.pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        server: (vec![server.der().clone()], server_key.serialize_der()),
        ca_der: ca.der().clone(),
        rotated,
        rogue,
        dir,
    }
}

fn acceptor(pki: &Pki, require_client_cert: bool) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server.1.clone().into());
    let config = builder.with_single_cert(pki.server.0.clone(), key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_auth_mtls_wrong_ca_and_plaintext_refusal() {
    let b = broker();
    let pki = pki();
    let _keep = pki.dir.path();
    let server_auth = Proxy::start(b.socket(), Some(acceptor(&pki, false))).await;
    let mutual = Proxy::start(b.socket(), Some(acceptor(&pki, true))).await;

    // Server authentication with our CA: connects and delivers.
    let rig = Rig::start(
        &format!("mqtts://127.0.0.1:{}", server_auth.port),
        &format!("ca_file = \"{}\"", pki.ca.display()),
        fast(),
    )
    .await;
    let probe = Probe::connect(b, &[rig.filter()]).await;
    rig.connected().await;
    rig.send("0x7a", DeviceEventKind::Joined).await;
    probe
        .wait_for("a message over TLS", Duration::from_secs(10), |m| {
            m.iter().any(|m| m.topic.ends_with("/event"))
        })
        .await;
    assert!(rig.status.snapshot().broker.starts_with("mqtts://"));
    rig.stop().await;

    // Mutual TLS: with the client certificate it connects...
    let rig = Rig::start(
        &format!("mqtts://127.0.0.1:{}", mutual.port),
        &format!(
            "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
        fast(),
    )
    .await;
    rig.connected().await;
    rig.stop().await;

    // ...without it the broker side refuses the handshake.
    let rig = Rig::start(
        &format!("mqtts://127.0.0.1:{}", mutual.port),
        &format!("ca_file = \"{}\"", pki.ca.display()),
        fast(),
    )
    .await;
    let s = rig.status.clone();
    until("a refused connection", Duration::from_secs(10), || {
        s.snapshot().connection_errors >= 1
    })
    .await;
    assert_eq!(s.snapshot().connects, 0);
    rig.stop().await;

    // A server certificate from a CA we do not trust is refused.
    let rig = Rig::start(
        &format!("mqtts://127.0.0.1:{}", server_auth.port),
        &format!("ca_file = \"{}\"", pki.other_ca.display()),
        fast(),
    )
    .await;
    let s = rig.status.clone();
    until(
        "the untrusted server refused",
        Duration::from_secs(10),
        || s.snapshot().connection_errors >= 1,
    )
    .await;
    let snap = s.snapshot();
    assert_eq!(snap.connects, 0);
    let err = snap.last_error.unwrap_or_default().to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("tls") || err.contains("issuer"),
        "{err}"
    );
    rig.stop().await;

    // Plaintext to a host that is not loopback is refused before any connection.
    let text = "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\n[upstream]\nurl = \"mqtt://192.0.2.10:1883\"\n";
    let e = Config::parse(Path::new("t.toml"), text).unwrap_err();
    assert!(e.to_string().contains("plaintext"), "{e}");
    let allowed = text.replace("1883\"\n", "1883\"\nallow_plaintext = true\n");
    assert!(Config::parse(Path::new("t.toml"), &allowed).is_ok());
}

/// The leaf certificate of a PEM chain, as DER.
fn leaf_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

/// Sends `rotate_client_cert` over MQTT and returns the response.
async fn rotate_over_mqtt(
    rig: &Rig,
    probe: &Probe,
    cid: &str,
    identity: &(String, String),
) -> serde_json::Value {
    let req = json!({"correlation_id": cid, "cert_pem": identity.0, "key_pem": identity.1});
    rig_publish(
        probe,
        &format!("{}/request/rotate_client_cert", rig.prefix),
        req.to_string().into_bytes(),
    )
    .await;
    let mut response = None;
    probe
        .wait_for("the rotation response", Duration::from_secs(30), |m| {
            response = m
                .iter()
                .filter(|m| m.topic.ends_with("/response/rotate_client_cert"))
                .map(|m| m.json())
                .find(|v| v["correlation_id"] == json!(cid));
            response.is_some()
        })
        .await;
    let text = response.clone().unwrap_or_default().to_string();
    assert!(!text.contains("PRIVATE KEY"), "key material echoed: {text}");
    response.unwrap_or_default()
}

fn rotation_audit(rig: &Rig) -> Vec<fieldgate::store::audit::AuditRecord> {
    fieldgate::store::audit::tail(&rig.reader(), 10_000, None)
        .expect("audit")
        .into_iter()
        .filter(|r| r.action == "upstream.rotate_client_cert")
        .collect()
}

async fn mtls_rig(pki: &Pki, proxy: &Proxy) -> (Rig, Probe) {
    let rig = Rig::start(
        &format!("mqtts://127.0.0.1:{}", proxy.port),
        &format!(
            "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
        fast(),
    )
    .await;
    let probe = Probe::connect(broker(), &[rig.filter()]).await;
    rig.connected().await;
    // Give the gateway's own subscription a moment to be in place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (rig, probe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_rotation_to_a_trusted_certificate_is_kept() {
    let b = broker();
    let pki = pki();
    let mutual = Proxy::start(b.socket(), Some(acceptor(&pki, true))).await;
    let (rig, probe) = mtls_rig(&pki, &mutual).await;
    let old_cert = std::fs::read_to_string(&pki.client_cert).unwrap();
    let old_key = std::fs::read_to_string(&pki.client_key).unwrap();
    assert_eq!(
        mutual.peers.lock().unwrap().last(),
        Some(&leaf_der(&old_cert))
    );

    let r = rotate_over_mqtt(&rig, &probe, "rot-ok", &pki.rotated).await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["data"]["previous_saved"], true, "{r}");

    // The broker side saw the new certificate, and the files hold it now.
    assert_eq!(
        mutual.peers.lock().unwrap().last(),
        Some(&leaf_der(&pki.rotated.0))
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let previous = |p: &Path| PathBuf::from(format!("{}.previous", p.display()));
    assert_eq!(read(&pki.client_cert), pki.rotated.0);
    assert_eq!(read(&pki.client_key), pki.rotated.1);
    assert_eq!(read(&previous(&pki.client_cert)), old_cert);
    assert_eq!(read(&previous(&pki.client_key)), old_key);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&pki.client_key), 0o600);
    assert_eq!(mode(&previous(&pki.client_key)), 0o600);

    // Still connected, and delivering.
    rig.connected().await;
    assert_eq!(rig.status.snapshot().connects, 2);
    rig.send("0x5a", DeviceEventKind::Joined).await;
    probe
        .wait_for(
            "a message after the rotation",
            Duration::from_secs(10),
            |m| m.iter().any(|m| m.topic.ends_with("/event")),
        )
        .await;

    let audit = rotation_audit(&rig);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].outcome, "accepted");
    assert!(!audit[0].details.to_string().contains("PRIVATE KEY"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_rotation_refused_by_the_broker_rolls_back() {
    let b = broker();
    let pki = pki();
    let mutual = Proxy::start(b.socket(), Some(acceptor(&pki, true))).await;
    let (rig, probe) = mtls_rig(&pki, &mutual).await;
    let old_cert = std::fs::read_to_string(&pki.client_cert).unwrap();
    let old_key = std::fs::read_to_string(&pki.client_key).unwrap();

    // A key that does not fit the certificate is refused before any reconnect.
    let mismatched = (pki.rotated.0.clone(), pki.rogue.1.clone());
    let r = rotate_over_mqtt(&rig, &probe, "rot-mismatch", &mismatched).await;
    assert_eq!(r["error"]["code"], "invalid_certificate", "{r}");
    assert_eq!(rig.status.snapshot().connects, 1);

    // A certificate from a CA the broker does not trust: refused, rolled back.
    let r = rotate_over_mqtt(&rig, &probe, "rot-rogue", &pki.rogue).await;
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(r["error"]["code"], "rotation_refused", "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("rolled back"), "{message}");

    // Connected again with the old certificate; the files are untouched.
    rig.connected().await;
    assert_eq!(rig.status.snapshot().connects, 2);
    assert_eq!(
        mutual.peers.lock().unwrap().last(),
        Some(&leaf_der(&old_cert))
    );
    assert_eq!(std::fs::read_to_string(&pki.client_cert).unwrap(), old_cert);
    assert_eq!(std::fs::read_to_string(&pki.client_key).unwrap(), old_key);
    assert!(!PathBuf::from(format!("{}.previous", pki.client_cert.display())).exists());
    assert!(!PathBuf::from(format!("{}.rotating", pki.client_key.display())).exists());

    // Still delivering.
    rig.send("0x5b", DeviceEventKind::Joined).await;
    probe
        .wait_for(
            "a message after the rollback",
            Duration::from_secs(10),
            |m| m.iter().any(|m| m.topic.ends_with("/event")),
        )
        .await;

    let audit = rotation_audit(&rig);
    let outcomes: Vec<&str> = audit.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["refused", "refused"], "{audit:?}");
    assert_eq!(audit[1].details["code"], "rotation_refused");
    for a in &audit {
        assert!(!a.details.to_string().contains("PRIVATE KEY"));
    }
    rig.stop().await;
}

// ---------------------------------------------------------------- the binary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_committed() {
    use rand::Rng;
    let b = broker();
    let prefix = format!("fgtest/{}", unique("kill"));
    let mut d = crate::common::TestDaemon::prepare(&format!(
        "\n[upstream]\nurl = \"{}\"\nclient_id = \"{}\"\ntopic_prefix = \"{prefix}\"\n",
        b.url(),
        unique("fgk")
    ));
    let probe = Probe::connect(b, &[format!("{prefix}/#")]).await;
    d.spawn();
    let db = d.db();

    // A producer commits telemetry rows straight into the outbox (as the hub
    // would), in its own transactions, while the daemon is killed and restarted.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(Mutex::new(Vec::<i64>::new()));
    let producer = {
        let (stop, committed, db) = (stop.clone(), committed.clone(), db.clone());
        std::thread::spawn(move || {
            let mut conn = rusqlite::Connection::open(&db).expect("producer db");
            conn.busy_timeout(Duration::from_secs(20)).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .expect("tx");
                let seq = outbox::append(
                    &tx,
                    "test-gw",
                    &NewMessage {
                        kind: MessageKind::Telemetry,
                        device: None,
                        topic: "device/zigbee:0x1/telemetry".into(),
                        retain: false,
                        data: json!({ "i": i }),
                        event_time: SystemTime::now(),
                    },
                )
                .expect("append");
                tx.commit().expect("commit");
                committed.lock().unwrap().push(seq);
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let mut rng = rand::rng();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        let child = d.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL");
        let mut child = child;
        let _ = child.wait();
        d.spawn();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    producer.join().expect("producer");
    let expected: HashSet<i64> = committed.lock().unwrap().iter().copied().collect();
    assert!(expected.len() > 100, "the producer ran");

    let received = |m: &[Msg]| -> HashSet<i64> {
        m.iter()
            .filter(|m| m.topic.ends_with("/telemetry"))
            .filter_map(|m| {
                serde_json::from_slice::<serde_json::Value>(&m.payload).ok()?["seq"].as_i64()
            })
            .collect()
    };
    probe
        .wait_for("every committed row", Duration::from_secs(60), |m| {
            received(m).is_superset(&expected)
        })
        .await;
    let got = received(&probe.messages());
    assert!(
        got.is_superset(&expected),
        "missing: {:?}",
        expected.difference(&got).take(10).collect::<Vec<_>>()
    );

    // The broker published the last will when the process died.
    assert!(
        probe
            .on("/status")
            .iter()
            .any(|m| m.json()["state"] == "offline"),
        "LWT offline after SIGKILL"
    );
    // `fieldgate status` shows the uplink.
    let out = d.cli(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(v["upstream"]["state"], "connected", "{v}");
    assert_eq!(
        v["upstream"]["broker"],
        b.url().replace("localhost", "127.0.0.1")
    );
    assert!(v["upstream"]["delivered"].as_u64().is_some());
    let text = crate::common::stdout(&d.cli(&["status"]));
    assert!(text.contains("uplink    connected to mqtt://"), "{text}");
    assert!(
        d.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "{}",
        d.log()
    );
}

// ---------------------------------------------------------------- device requests (binary + emulator)

/// The daemon binary on the Zigbee emulator (over a PTY) and the broker. The emulator's
/// plug does not report on its own and its sleepy sensor sleeps until the test wakes it.
pub(crate) mod device_requests {
    use super::*;
    use crate::common::{stderr, stdout, TestDaemon};
    use fieldgate::radio::zigbee_sim::PtyEmulator;
    use fieldgate_zigbee::emulator::{DeviceKind, DeviceTiming, EmulatorConfig};
    use fieldgate_zigbee::zcl::ZclValue;

    const FAST: &str = "sreq_timeout = \"2s\"\nresponse_timeout = \"700ms\"\ninterview_attempts = 2\nwatchdog_interval = \"1s\"\n";

    pub(crate) fn dev(kind: DeviceKind) -> String {
        format!("zigbee:{}", kind.default_ieee())
    }

    pub(crate) struct Site {
        pub(crate) pty: PtyEmulator,
        pub(crate) daemon: TestDaemon,
        pub(crate) probe: Probe,
        pub(crate) prefix: String,
    }

    /// How a [`Site`] differs from the default one.
    #[derive(Default)]
    pub(crate) struct SiteConfig {
        /// `[radio.options]` lines besides the fast timings.
        pub(crate) radio_options: String,
        /// `[gateway]` lines besides the id and state dir (e.g. `policy_public_key`).
        pub(crate) gateway: String,
        /// The daemon's log level (default `info`).
        pub(crate) log_level: Option<String>,
        /// The broker URL the gateway is given (default: the shared broker). The probe
        /// always listens on the shared broker.
        pub(crate) broker_url: Option<String>,
        /// The emulator's devices (default: one of each kind).
        pub(crate) devices: Option<Vec<(DeviceKind, fieldgate_zigbee::IeeeAddr)>>,
        /// `[upstream]` lines besides the url, client id and prefix (e.g. `protocol = 5`).
        pub(crate) upstream: String,
    }

    impl Site {
        async fn start() -> Site {
            Site::start_with("").await
        }

        /// A site whose radio has these `[radio.options]` besides the fast timings.
        async fn start_with(options: &str) -> Site {
            Site::start_config(SiteConfig {
                radio_options: options.into(),
                ..Default::default()
            })
            .await
        }

        pub(crate) async fn start_config(cfg: SiteConfig) -> Site {
            let defaults = EmulatorConfig::default();
            let pty = PtyEmulator::spawn(EmulatorConfig {
                devices: cfg.devices.unwrap_or(defaults.devices),
                timing: DeviceTiming {
                    report_interval: Duration::from_secs(3600),
                    sleepy_wake_interval: Duration::from_secs(3600),
                    sleepy_awake_window: Duration::from_millis(1000),
                    sleepy_answers_after_join: 2,
                },
                join_spacing: Duration::from_millis(150),
                ..Default::default()
            })
            .expect("emulator");
            let b = broker();
            let prefix = format!("fgtest/{}", unique("req"));
            let mut daemon = TestDaemon::prepare(&format!(
                "[[radio]]\nname = \"zb0\"\nprotocol = \"zigbee\"\nport = \"{}\"\n\n[radio.options]\n{FAST}{}\n[upstream]\nurl = \"{}\"\nclient_id = \"{}\"\ntopic_prefix = \"{prefix}\"\n{}\n",
                pty.path().display(),
                cfg.radio_options,
                cfg.broker_url.unwrap_or_else(|| b.url()),
                unique("fgr"),
                cfg.upstream,
            ));
            let text = std::fs::read_to_string(&daemon.config).expect("config");
            let gateway = format!(
                "log_level = \"{}\"\n{}",
                cfg.log_level.as_deref().unwrap_or("info"),
                cfg.gateway
            );
            std::fs::write(
                &daemon.config,
                text.replacen("log_level = \"info\"\n", &gateway, 1),
            )
            .expect("config");
            let probe = Probe::connect(b, &[format!("{prefix}/#")]).await;
            daemon.spawn();
            let site = Site {
                pty,
                daemon,
                probe,
                prefix,
            };
            site.wait_log("zigbee network up").await;
            site
        }

        pub(crate) async fn wait_log(&self, what: &str) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !self.daemon.log().contains(what) {
                assert!(Instant::now() < deadline, "{}", self.daemon.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        pub(crate) fn wake(&self) {
            let ieee = DeviceKind::SleepySensor.default_ieee();
            self.pty.sim.with(|e, now| e.wake(now, ieee));
        }

        pub(crate) fn device_json(&self, id: &str) -> serde_json::Value {
            let out = self.daemon.cli(&["devices", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let list = v
                .as_array()
                .cloned()
                .or_else(|| v["devices"].as_array().cloned())
                .unwrap_or_default();
            list.into_iter().find(|d| d["id"] == id).unwrap_or_default()
        }

        /// Pairs the devices; wakes the sleepy sensor until its interview is done.
        /// Opens a join window on `zb0` through the API (`fieldgate pair` would watch
        /// the window until it closes).
        pub(crate) async fn permit_join(&self, seconds: u32) {
            fieldgate::api::client::ApiClient::new(&self.daemon.socket)
                .call(
                    hyper::Method::POST,
                    "/v1/radios/zb0/permit-join",
                    Some(json!({ "seconds": seconds })),
                )
                .await
                .expect("join window opened");
        }

        pub(crate) async fn pair(&self) {
            self.permit_join(30).await;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let plug = self.device_json(&dev(DeviceKind::SmartPlug));
                let pir = self.device_json(&dev(DeviceKind::SleepySensor));
                if plug["lifecycle"] == "active"
                    && pir["lifecycle"] == "active"
                    && pir["power_source"] == "battery"
                {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "not paired: {plug} {pir}\n{}",
                    self.daemon.log()
                );
                self.wake();
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        }

        pub(crate) async fn request(&self, op: &str, body: serde_json::Value, retain: bool) {
            self.probe
                .client
                .publish(
                    format!("{}/request/{op}", self.prefix),
                    QoS::AtLeastOnce,
                    retain,
                    body.to_string().into_bytes(),
                )
                .await
                .expect("publish request");
        }

        pub(crate) fn responses(&self, cid: &str) -> Vec<serde_json::Value> {
            self.probe
                .messages()
                .iter()
                .filter(|m| m.topic.contains("/response/"))
                .map(|m| m.json())
                .filter(|v| v["correlation_id"] == cid)
                .collect()
        }

        pub(crate) async fn response(
            &self,
            cid: &str,
            status: &str,
            limit: Duration,
        ) -> serde_json::Value {
            self.probe
                .wait_for(&format!("{cid} {status}"), limit, |_| {
                    self.responses(cid).iter().any(|v| v["status"] == status)
                })
                .await;
            self.responses(cid)
                .into_iter()
                .find(|v| v["status"] == status)
                .unwrap_or_default()
        }

        pub(crate) fn sigkill_and_restart(&mut self) {
            let child = self.daemon.child.take().expect("running");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("SIGKILL");
            let mut child = child;
            let _ = child.wait();
            self.daemon.spawn();
        }

        /// How the held request `id` ended, from its last `device.request` audit record.
        pub(crate) fn held_outcome(&self, id: i64) -> Option<String> {
            let c = fieldgate::store::open_reader(&self.daemon.db()).expect("db");
            c.query_row(
                "SELECT json_extract(details, '$.status') FROM audit
                 WHERE action = 'device.request' AND json_extract(details, '$.request_id') = ?1
                 ORDER BY seq DESC LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .ok()
        }

        pub(crate) fn audit_count(&self, action: &str, target: &str, outcome: &str) -> usize {
            let c = fieldgate::store::open_reader(&self.daemon.db()).expect("db");
            c.query_row(
                "SELECT count(*) FROM audit WHERE action = ?1 AND target = ?2 AND outcome = ?3",
                [action, target, outcome],
                |r| r.get::<_, i64>(0),
            )
            .expect("audit count") as usize
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sleeping_devices_get_their_requests_when_they_wake_and_get_refreshes() {
        let mut site = Site::start().await;
        site.pair().await;
        let plug = dev(DeviceKind::SmartPlug);
        let pir = dev(DeviceKind::SleepySensor);

        // `get` on the plug reads it: a value it never reported comes back.
        let plug_ieee = DeviceKind::SmartPlug.default_ieee();
        let reads_before = site.pty.sim.with(|e, _| {
            e.set_attribute(plug_ieee, 0x0B04, 0x0505, ZclValue::u16(2345));
            e.device(plug_ieee).map_or(0, |d| d.reads_answered())
        });
        site.request(
            "get",
            json!({"correlation_id": "g1", "device": plug}),
            false,
        )
        .await;
        let v = site.response("g1", "ok", Duration::from_secs(15)).await;
        assert_eq!(v["operation"], "get");
        assert_eq!(v["data"]["state"]["voltage"], 234.5, "{v}");
        assert!(v["data"]["command_id"].is_string(), "{v}");
        let reads = site
            .pty
            .sim
            .with(|e, _| e.device(plug_ieee).map_or(0, |d| d.reads_answered()));
        assert!(reads >= reads_before + 3, "{reads_before} -> {reads}");
        // `attributes` narrows the answer.
        site.request(
            "get",
            json!({"correlation_id": "g2", "device": plug, "attributes": ["on"]}),
            false,
        )
        .await;
        let v = site.response("g2", "ok", Duration::from_secs(15)).await;
        let keys: Vec<&String> = v["data"]["state"]
            .as_object()
            .expect("state")
            .keys()
            .collect();
        assert_eq!(keys, vec!["on"], "{v}");

        // The CLI's `refresh` reads the plug too: a value it never reported, narrowed
        // to the attribute asked for.
        site.pty.sim.with(|e, _| {
            e.set_attribute(plug_ieee, 0x0B04, 0x0505, ZclValue::u16(2401));
        });
        let out = site
            .daemon
            .cli(&["refresh", &plug, "--attributes", "voltage"]);
        let text = stdout(&out);
        assert!(out.status.success(), "{text}{}", stderr(&out));
        assert!(
            text.starts_with(&format!("{plug}: refreshed: ")) && text.contains(" (command "),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["voltage", "240.1"]),
            "{text}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.split_whitespace().next() == Some("on")),
            "narrowed: {text}"
        );
        // An attribute the plug does not have fails, as MQTT's `get` does.
        let out = site
            .daemon
            .cli(&["refresh", &plug, "--attributes", "voltage,colour"]);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        assert!(
            stderr(&out).contains("`colour`") && stderr(&out).contains("unknown_attribute"),
            "{}",
            stderr(&out)
        );
        // And the API's refresh, as MQTT's `get`.
        let (code, body) = fieldgate::api::client::ApiClient::new(&site.daemon.socket)
            .call_raw(
                hyper::Method::POST,
                &format!("/v1/devices/{plug}/refresh"),
                Some(br#"{"attributes":["voltage","colour"]}"#.to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(code, hyper::StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "unknown_attribute", "{body}");

        // The CLI's `refresh` on the sleeping sensor is held, and shows in `status`
        // and `device` until the sensor wakes.
        let out = site
            .daemon
            .cli(&["refresh", &pir, "--attributes", "occupancy"]);
        let text = stdout(&out);
        assert!(out.status.success(), "{text}{}", stderr(&out));
        let held_id: i64 = text
            .strip_prefix(&format!("{pir} is asleep: held as request "))
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not held: {text}"));
        assert!(text.contains("until it wakes (expires 20"), "{text}");
        let out = site.daemon.cli(&["status"]);
        let text = stdout(&out);
        assert!(
            text.contains(
                "held      1 request(s) for sleeping devices (1 waiting for a wake, 0 sent), oldest "
            ),
            "{text}"
        );
        let out = site.daemon.cli(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
        assert_eq!(v["held_requests"]["total"], 1, "{v}");
        assert!(
            v["held_requests"]["oldest_age_ms"].as_u64().is_some(),
            "{v}"
        );
        let out = site.daemon.cli(&["device", &pir]);
        let text = stdout(&out);
        assert!(text.contains("held_requests   1\n"), "{text}");
        assert!(
            text.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.first() == Some(&held_id.to_string().as_str())
                    && cells.get(1) == Some(&"get")
                    && l.contains("\"occupancy\"")
                    && cells.contains(&"queued")
                    && cells.contains(&"api")
            }),
            "{text}"
        );
        let out = site.daemon.cli(&["device", &pir, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("device json");
        let held = v["held_requests"].as_array().expect("held_requests");
        assert_eq!(held.len(), 1, "{v}");
        assert_eq!(held[0]["id"], held_id);
        assert_eq!(held[0]["command"], json!({"attributes": ["occupancy"]}));
        let mut keys: Vec<&str> = held[0]
            .as_object()
            .expect("request")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "command",
                "correlation_id",
                "created_at",
                "expires_at",
                "id",
                "operation",
                "origin",
                "state"
            ],
            "only the documented fields: {v}"
        );

        // `set` to the sleeping sensor: queued at once, delivered when it wakes.
        site.request(
            "set",
            json!({"correlation_id": "s1", "device": pir, "state": {"on": true}}),
            false,
        )
        .await;
        let q = site.response("s1", "queued", Duration::from_secs(10)).await;
        assert_eq!(q["data"]["device"], pir.as_str());
        assert!(q["data"]["request_id"].as_i64().is_some(), "{q}");
        assert!(
            q["msg_id"].is_string() && q["seq"].as_i64().is_some(),
            "{q}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !site
                .responses("s1")
                .iter()
                .any(|v| v["status"] == "delivered"),
            "delivered while asleep"
        );
        site.wake();
        let d = site
            .response("s1", "delivered", Duration::from_secs(10))
            .await;
        assert_eq!(d["data"]["request_id"], q["data"]["request_id"]);
        assert!(d["data"]["command_id"].is_string(), "{d}");
        // The same wake carried out the CLI's held refresh: nothing is held any more.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = site.daemon.cli(&["status", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
            if v["held_requests"]["total"] == 0 {
                assert!(v["held_requests"]["oldest_age_ms"].is_null(), "{v}");
                break;
            }
            assert!(Instant::now() < deadline, "still held: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            site.held_outcome(held_id).as_deref(),
            Some("delivered"),
            "{}",
            site.daemon.log()
        );
        let text = stdout(&site.daemon.cli(&["device", &pir]));
        assert!(text.contains("held_requests   none"), "{text}");
        assert!(stdout(&site.daemon.cli(&["status"])).contains("held      no requests held"));

        // A `get` to it is held as well and answers with what it read.
        site.request("get", json!({"correlation_id": "g3", "device": pir}), false)
            .await;
        site.response("g3", "queued", Duration::from_secs(10)).await;
        site.wake();
        let d = site
            .response("g3", "delivered", Duration::from_secs(15))
            .await;
        assert!(d["data"]["state"]["occupancy"].is_boolean(), "{d}");

        // Its time runs out before it wakes: expired.
        site.request(
            "set",
            json!({"correlation_id": "s2", "device": pir, "state": {"on": false}, "ttl_s": 1}),
            false,
        )
        .await;
        site.response("s2", "queued", Duration::from_secs(10)).await;
        let e = site
            .response("s2", "expired", Duration::from_secs(10))
            .await;
        assert!(e["data"]["expires_at"].is_string(), "{e}");
        site.wake();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            site.responses("s2").len(),
            2,
            "nothing after expiry: {:?}",
            site.responses("s2")
        );

        // Held across a SIGKILL: delivered after the restart, when the sensor wakes.
        site.request(
            "set",
            json!({"correlation_id": "s3", "device": pir, "state": {"state": "toggle"}, "ttl_s": 600}),
            false,
        )
        .await;
        site.response("s3", "queued", Duration::from_secs(10)).await;
        site.sigkill_and_restart();
        site.wait_log("zigbee network up").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !site
            .responses("s3")
            .iter()
            .any(|v| v["status"] == "delivered")
        {
            assert!(
                Instant::now() < deadline,
                "s3 not delivered after the restart: {:?}\n{}",
                site.responses("s3"),
                site.daemon.log()
            );
            site.wake();
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }

        // Every step is audited.
        // queued + sent for each of s1, g3 and s3, delivered for s1, g3 and s3.
        assert!(site.audit_count("device.request", &pir, "accepted") >= 9);
        assert_eq!(
            site.audit_count("device.request", &pir, "failed"),
            1,
            "the expiry"
        );
        // The local CLI takes a friendly name wherever it takes a device id, as MQTT does.
        site.request(
            "rename",
            json!({"correlation_id": "rn1", "device": plug, "name": "porch plug"}),
            false,
        )
        .await;
        site.response("rn1", "ok", Duration::from_secs(10)).await;
        let out = site.daemon.cli(&["device", "porch plug", "--json"]);
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (&v["id"], &v["name"]),
            (&json!(plug), &json!("porch plug")),
            "{v}"
        );
        let out = site.daemon.cli(&["device", "no such plug"]);
        assert!(!out.status.success());
        assert!(
            crate::common::stderr(&out).contains("no such plug"),
            "{}",
            crate::common::stderr(&out)
        );
        let out = site.daemon.cli(&["device", "porch/plug"]);
        assert!(!out.status.success());
        assert!(
            crate::common::stderr(&out).contains("friendly name"),
            "{}",
            crate::common::stderr(&out)
        );
        assert!(site
            .daemon
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success()));
    }

    /// A retained request left on the broker while the gateway was stopped comes within
    /// milliseconds of its next connection, before its radio has opened its port: it
    /// waits for the radio and is carried out, instead of being refused
    /// `radio_unavailable` (starting) and cleared, which lost it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retained_request_waiting_at_start_waits_for_its_radio() {
        let mut site = Site::start().await;
        assert!(site
            .daemon
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success()));
        site.request(
            "permit_join",
            json!({"correlation_id": "pj-start", "radio": "zb0", "seconds": 5}),
            true,
        )
        .await;
        site.daemon.spawn();
        let r = site
            .response("pj-start", "ok", Duration::from_secs(20))
            .await;
        assert_eq!(r["status"], "ok", "{:?}", site.responses("pj-start"));
        assert_eq!(site.responses("pj-start").len(), 1, "answered once");
        site.probe
            .client
            .publish(
                format!("{}/request/permit_join", site.prefix),
                QoS::AtLeastOnce,
                true,
                Vec::new(),
            )
            .await
            .expect("clear retained");
        assert!(site
            .daemon
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success()));
    }

    /// A repeat is told by the device it names, not by how it names it: the same
    /// correlation id and body sent with the id, the id in capitals, on the device's
    /// own topic and by its friendly name is one toggle, answered four times.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeat_naming_the_device_another_way_is_not_carried_out_again() {
        let mut site = Site::start().await;
        site.pair().await;
        let plug = dev(DeviceKind::SmartPlug);
        let ieee = DeviceKind::SmartPlug.default_ieee();
        site.request(
            "rename",
            json!({"correlation_id": "name-it", "device": plug, "name": "hall lamp"}),
            false,
        )
        .await;
        site.response("name-it", "ok", Duration::from_secs(10))
            .await;
        let on = |site: &Site| {
            site.pty
                .sim
                .with(|e, _| e.device(ieee).is_some_and(|d| d.is_on()))
        };
        let was_on = on(&site);
        let toggle = json!({"correlation_id": "t-any", "state": {"state": "toggle"}});
        let mut with_device = toggle.clone();
        with_device["device"] = json!(plug);
        site.request("set", with_device, false).await;
        site.response("t-any", "ok", Duration::from_secs(10)).await;
        for topic in [plug.to_uppercase(), "hall lamp".to_string()] {
            site.probe
                .client
                .publish(
                    format!("{}/device/{topic}/set", site.prefix),
                    QoS::AtLeastOnce,
                    false,
                    toggle.to_string().into_bytes(),
                )
                .await
                .unwrap();
        }
        let mut by_name = toggle.clone();
        by_name["device"] = json!("hall lamp");
        site.request("set", by_name, false).await;
        site.probe
            .wait_for("four answers", Duration::from_secs(10), |_| {
                site.responses("t-any").len() >= 4
            })
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(on(&site), !was_on, "toggled exactly once");
        assert_eq!(site.audit_count("device.command", &plug, "accepted"), 1);
        assert!(site
            .daemon
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retained_toggle_replayed_after_a_restart_is_carried_out_once() {
        let mut site = Site::start().await;
        site.pair().await;
        let plug = dev(DeviceKind::SmartPlug);
        let ieee = DeviceKind::SmartPlug.default_ieee();
        let on = |site: &Site| {
            site.pty
                .sim
                .with(|e, _| e.device(ieee).is_some_and(|d| d.is_on()))
        };
        let was_on = on(&site);
        site.request(
            "set",
            json!({"correlation_id": "t1", "device": plug, "state": {"state": "toggle"}}),
            true,
        )
        .await;
        let first = site.response("t1", "ok", Duration::from_secs(10)).await;
        until("the plug toggled", Duration::from_secs(10), || {
            on(&site) != was_on
        })
        .await;

        // SIGKILL, then a restart: the broker hands the retained request over again.
        site.sigkill_and_restart();
        site.probe
            .wait_for("the answer again", Duration::from_secs(20), |_| {
                site.responses("t1").len() >= 2
            })
            .await;
        let again = &site.responses("t1")[1];
        assert_eq!(again["status"], "ok");
        assert_eq!(again["data"]["command_id"], first["data"]["command_id"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(on(&site), !was_on, "toggled exactly once");
        assert_eq!(site.audit_count("device.command", &plug, "accepted"), 1);
        let c = fieldgate::store::open_reader(&site.daemon.db()).expect("db");
        let duplicates: i64 = c
            .query_row(
                "SELECT count(*) FROM audit WHERE action = 'mqtt.set' AND details LIKE '%\"duplicate\"%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(duplicates >= 1);
        // Clear the retained request.
        site.probe
            .client
            .publish(
                format!("{}/request/set", site.prefix),
                QoS::AtLeastOnce,
                true,
                Vec::new(),
            )
            .await
            .expect("clear retained");
        assert!(site
            .daemon
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success()));
    }

    /// `install_code` and `rotate_network_key` over MQTT: the code goes to the coordinator
    /// and never comes back out (responses, the log, the audit log); a rotation runs beside
    /// the request queue, ends with the new key active, and a repeat of it is answered with
    /// the first answer instead of rotating again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn install_codes_and_network_key_rotation_over_mqtt() {
        const SPEC_CODE: &str = "83FED3407A939723A5C639B26916D505C3B5";
        let site = Site::start_with("key_switch_delay = \"2s\"\n").await;
        let plug = dev(DeviceKind::SmartPlug);
        let ieee = DeviceKind::SmartPlug.default_ieee();
        let second = Duration::from_secs(10);

        site.request(
            "install_code",
            json!({"correlation_id": "ic-1", "action": "add", "device": plug, "code": SPEC_CODE}),
            false,
        )
        .await;
        let r = site.response("ic-1", "ok", second).await;
        assert_eq!(r["data"]["device"], plug, "{r}");
        assert_eq!(r["data"]["coordinators"][0]["ok"], true, "{r}");
        let code = fieldgate_zigbee::install_code::InstallCode::parse(SPEC_CODE).unwrap();
        assert_eq!(
            site.pty
                .sim
                .with(|e, _| e.registered_install_code(ieee).map(<[u8]>::to_vec)),
            Some(code.as_bytes().to_vec())
        );
        // Refusals, none of which repeats the code.
        let typo = "83FED3407A939723A5C639B26916D505C3B6";
        for (cid, body, want) in [
            (
                "ic-2",
                json!({"correlation_id": "ic-2", "action": "add", "device": plug, "code": typo}),
                "invalid_install_code",
            ),
            (
                "ic-3",
                json!({"correlation_id": "ic-3", "action": "add", "device": plug, "code": 831234567}),
                "invalid_request",
            ),
            (
                "ic-4",
                json!({"correlation_id": "ic-4", "action": "remove", "device": plug, "code": SPEC_CODE}),
                "invalid_request",
            ),
            (
                "ic-5",
                json!({"correlation_id": "ic-5", "action": "add", "device": "ble:aa:bb", "code": SPEC_CODE}),
                "bad_device_id",
            ),
            (
                "ic-6",
                json!({"correlation_id": "ic-6", "action": "rename", "device": plug}),
                "invalid_request",
            ),
        ] {
            site.request("install_code", body, false).await;
            let r = site.response(cid, "error", second).await;
            assert_eq!(r["error"]["code"], want, "{r}");
        }

        // The rotation is answered after the switch delay; a health check sent after it is
        // answered before it.
        site.request(
            "rotate_network_key",
            json!({"correlation_id": "rk-1", "radio": "zb0"}),
            false,
        )
        .await;
        site.request("health_check", json!({"correlation_id": "hc-1"}), false)
            .await;
        site.response("hc-1", "ok", second).await;
        assert!(site.responses("rk-1").is_empty(), "rotation answered early");
        let r = site.response("rk-1", "ok", Duration::from_secs(20)).await;
        assert_eq!(
            (
                &r["data"]["radio"],
                &r["data"]["previous_key_seq"],
                &r["data"]["key_seq"]
            ),
            (&json!("zb0"), &json!(0), &json!(1)),
            "{r}"
        );
        let active = site.pty.sim.with(|e, _| e.active_key_info()).unwrap();
        assert_eq!(active.key_seq_num, 1);
        // A repeat gets the first answer and does not rotate again.
        site.request(
            "rotate_network_key",
            json!({"correlation_id": "rk-1", "radio": "zb0"}),
            false,
        )
        .await;
        site.probe
            .wait_for("repeat of rk-1", second, |_| {
                site.responses("rk-1").len() == 2
            })
            .await;
        let answers = site.responses("rk-1");
        assert_eq!(answers[0]["data"], answers[1]["data"]);
        assert_eq!(
            site.pty
                .sim
                .with(|e, _| e.active_key_info())
                .unwrap()
                .key_seq_num,
            1
        );
        site.request(
            "rotate_network_key",
            json!({"correlation_id": "rk-2", "radio": "nope"}),
            false,
        )
        .await;
        let r = site.response("rk-2", "error", second).await;
        assert_eq!(r["error"]["code"], "unknown_radio", "{r}");

        site.request(
            "install_code",
            json!({"correlation_id": "ic-7", "action": "remove", "device": plug}),
            false,
        )
        .await;
        site.response("ic-7", "ok", second).await;
        site.request(
            "install_code",
            json!({"correlation_id": "ic-8", "action": "remove", "device": plug}),
            false,
        )
        .await;
        let r = site.response("ic-8", "error", second).await;
        assert_eq!(r["error"]["code"], "unknown_device", "{r}");
        assert_eq!(site.audit_count("mqtt.install_code", &plug, "accepted"), 2);
        assert_eq!(
            site.audit_count("mqtt.rotate_network_key", "zb0", "accepted"),
            1
        );

        // Neither the code nor the key anywhere but the coordinator.
        let published: Vec<String> = site
            .probe
            .messages()
            .iter()
            .filter(|m| !m.topic.contains("/request/"))
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        let c = fieldgate::store::open_reader(&site.daemon.db()).expect("db");
        let audit: Vec<String> = c
            .prepare("SELECT action || ' ' || target || ' ' || details FROM audit")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = hex::encode(active.key);
        for (what, text) in [
            ("published", published.join("\n")),
            ("audit", audit.join("\n")),
            ("log", site.daemon.log()),
        ] {
            let upper = text.to_ascii_uppercase();
            assert!(
                !upper.contains("83FED3407A93"),
                "install code in the {what}"
            );
            assert!(!upper.contains("831234567"), "install code in the {what}");
            assert!(!text.contains(&key), "network key in the {what}");
        }
    }

    /// A burst of rotations never holds the other requests up: past what the rotation
    /// lane holds, rotations are answered `busy` at once (and audited), and a health
    /// check or a rotation that cannot run (no such radio) sent after the burst is
    /// answered while the first rotation still waits out its switch delay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_rotations_is_answered_busy_past_the_lane_not_held() {
        let site = Site::start_with("key_switch_delay = \"20s\"\n").await;
        let second = Duration::from_secs(10);
        for i in 0..24 {
            site.request(
                "rotate_network_key",
                json!({"correlation_id": format!("burst-{i}"), "radio": "zb0"}),
                false,
            )
            .await;
        }
        site.request(
            "rotate_network_key",
            json!({"correlation_id": "rk-nope", "radio": "nope"}),
            false,
        )
        .await;
        site.request("health_check", json!({"correlation_id": "hc-after"}), false)
            .await;
        site.response("hc-after", "ok", second).await;
        let r = site.response("rk-nope", "error", second).await;
        assert_eq!(r["error"]["code"], "unknown_radio", "{r}");
        // 1 running and 16 waiting at most: the last ones of the burst were refused.
        let busy: Vec<usize> = (0..24)
            .filter(|i| {
                site.responses(&format!("burst-{i}"))
                    .iter()
                    .any(|r| r["error"]["code"] == "busy")
            })
            .collect();
        assert!(busy.len() >= 24 - 17, "busy: {busy:?}");
        assert!(busy.contains(&23), "busy: {busy:?}");
        assert!(
            site.responses("burst-0").is_empty(),
            "the first rotation answered early"
        );
        assert_eq!(
            site.audit_count("mqtt.rotate_network_key", "zb0", "failed"),
            busy.len()
        );
    }
}

/// Requests as a careless or hostile cloud sends them.
mod hostile;

/// Publishes the broker refuses (MQTT 5 PUBACK reason codes).
mod acl;

/// The database's life in the envelope.
mod life;

/// The reference consumer in docs/examples/.
mod consumer;

/// Device management and per-device topics.
mod devices;

/// Adopting a discovered device.
mod adopt;

/// MQTT 5: Response Topic, Correlation Data, reasons, message expiry.
mod v5;

/// Device topics by friendly name, across renames.
mod names;

/// Deleting delivered rows with the next commit, and after a crash.
mod deletes;
