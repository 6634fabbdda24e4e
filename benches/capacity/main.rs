//! Capacity benchmark: emulated radios at a set offered load and device count
//! through the real hub, store and uplink into a real broker, against a bare
//! rumqttc QoS 1 loop in the same run.
//!
//! The devices join through the normal join path (joined, interviewed, inside an
//! open join window); then each offered load in turn runs for a fixed time (or, at
//! `0`, a fixed number of events as fast as the hub's queue takes them). For each
//! step: sustained events/s and messages/s until every message is PUBACKed and
//! deleted, radio -> subscriber latency p50/p99 of a sample of devices, CPU per event
//! of the gateway's own threads, RSS, the writer's commits; the outbox depth over
//! the whole run. Results go to `capacity.json` and `capacity.svg` in `--out`.
//!
//! Run: `cargo bench --bench capacity -- --help` (defaults: Zigbee, 1,000 devices,
//! `synchronous = full`, embedded rumqttd).

mod load;
mod probe;
mod report;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fieldgate::config::Config;
use fieldgate::upstream::{ConnectionState, Tuning};
use gateway_support::TestGateway;
use load::Radio;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

#[path = "../../tests/support/gateway.rs"]
mod gateway_support;
#[path = "../../tests/support/rumqttd.rs"]
mod rumqttd_support;

/// The gateway's threads: its runtime's workers and blocking pool, and the store's
/// writer. Everything else in the process (broker, load, subscriber) is not counted.
const GATEWAY_THREADS: &[&str] = &["gw-", "store-writer"];

#[derive(Parser, Debug)]
#[command(about = "fieldgate capacity benchmark")]
struct Args {
    /// Radios the devices are spread over: zigbee, zwave, ble, lora (comma separated).
    #[arg(long, default_value = "zigbee", value_delimiter = ',')]
    radios: Vec<String>,
    /// Devices joined before the load starts.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Offered loads in events/s, one step each; 0 = as fast as the hub takes them.
    #[arg(long, default_value = "1000,5000,20000,50000,0", value_delimiter = ',')]
    rates: Vec<f64>,
    /// Seconds per paced step.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Events of the unpaced step (rate 0).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// The store's `synchronous` setting (the shipped one is `full`).
    #[arg(long, default_value = "full")]
    sync: String,
    /// The store's `linger` (under light load, bursts are handed to the writer at
    /// most once per linger), e.g. `0ms` to hand every burst over at once; the
    /// shipped default when not given.
    #[arg(long)]
    linger: Option<String>,
    /// Broker URL (`mqtt://host:port`); an embedded rumqttd when not given.
    #[arg(long)]
    url: Option<String>,
    /// Messages of the bare rumqttc baseline loop (run before and after the steps).
    #[arg(long, default_value_t = 200_000)]
    bare: usize,
    /// Devices whose readings carry a send time and are timed at a subscriber.
    #[arg(long, default_value_t = 20)]
    sampled: usize,
    /// Where capacity.json and capacity.svg go.
    #[arg(long, default_value = "target/capacity")]
    out: PathBuf,
    /// Keep the gateway's state (the registry of joined devices) in this directory
    /// instead of a temporary one, e.g. for `benches/footprint.py`.
    #[arg(long)]
    keep_state: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One offered-load step's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub offered: f64,
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub messages_per_s: f64,
    pub ratio_to_bare: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_samples: usize,
    pub gateway_cpu_us_per_event: f64,
    pub gateway_core_percent: f64,
    pub process_cpu_us_per_event: f64,
    pub commits: u64,
    pub events_per_commit: f64,
    pub max_outbox_depth: u64,
    pub rss_kib: u64,
}

fn runtime(name: &'static str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A plain rumqttc QoS 1 loop: messages per second until all are acked.
async fn bare(host: &str, port: u16, n: usize) -> f64 {
    let mut opts = MqttOptions::new(format!("bare-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(100);
    let (client, mut el) = AsyncClient::new(opts, 200);
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("bare loop cannot connect: {e}"),
        }
    }
    let payload = serde_json::json!({
        "msg_id": uuid::Uuid::now_v7().to_string(), "seq": 1, "ts": fieldgate::model::now_rfc3339(),
        "gateway": "bench-gw", "type": "telemetry", "device": "zigbee:0x00124b0001abcdef",
        "data": {"readings": [{"name": "temperature", "value": 21.5, "unit": "°C"}]},
    })
    .to_string()
    .into_bytes();
    let payloads: Vec<Vec<u8>> = (0..n).map(|_| payload.clone()).collect();
    let t0 = Instant::now();
    let producer = tokio::spawn(async move {
        for p in payloads {
            client
                .publish("bench/bare/telemetry", QoS::AtLeastOnce, false, p)
                .await
                .expect("publish");
        }
        client
    });
    let mut acked = 0;
    while acked < n {
        match el.poll().await {
            Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("bare loop: {e}"),
        }
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let _client = producer.await;
    rate
}

/// Messages queued: the span of seqs from the oldest row to the newest row's last
/// message. Two index lookups, so sampling it costs next to nothing (summing the
/// rows took a scan of the whole outbox, which at 170,000 queued messages was a
/// fifth of the process's CPU). Acknowledged rows are deleted oldest first, so
/// holes inside the span are rare and short; it is an upper bound.
fn outbox_depth(reader: &rusqlite::Connection) -> u64 {
    reader
        .query_row(
            "SELECT COALESCE((SELECT id + messages FROM outbox ORDER BY id DESC LIMIT 1)
                           - (SELECT id FROM outbox ORDER BY id ASC LIMIT 1), 0)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|v| v.max(0) as u64)
        .unwrap_or(0)
}

/// Whether anything is queued (one index lookup).
fn outbox_empty(reader: &rusqlite::Connection) -> bool {
    !reader
        .query_row("SELECT EXISTS (SELECT 1 FROM outbox)", [], |r| {
            r.get::<_, bool>(0)
        })
        .unwrap_or(true)
}

fn device_count(reader: &rusqlite::Connection) -> u64 {
    reader
        .query_row("SELECT COUNT(*) FROM devices", [], |r| r.get::<_, i64>(0))
        .map(|v| v.max(0) as u64)
        .unwrap_or(0)
}

/// Waits until `done` holds, checking every 5 ms.
async fn until(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() {
    let args = Args::parse();
    let radios: Vec<Radio> = args
        .radios
        .iter()
        .map(|r| Radio::parse(r))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });
    let devices = args.devices.max(1);
    let (host, port) = match &args.url {
        Some(u) => {
            let url = url::Url::parse(u).expect("--url: mqtt://host:port");
            (
                url.host_str().unwrap_or("127.0.0.1").to_string(),
                url.port().unwrap_or(1883),
            )
        }
        None => (
            "127.0.0.1".to_string(),
            rumqttd_support::start("bench", 200),
        ),
    };
    let bench_rt = runtime("bench");
    let gw_rt = runtime("gw-");
    let dir = tempfile::tempdir().expect("tempdir");
    // The config takes absolute paths only: a relative --keep-state is the caller's.
    let state_dir = match &args.keep_state {
        Some(p) => std::path::absolute(p).expect("--keep-state: an absolute path"),
        None => dir.path().into(),
    };
    let prefix = format!("bench/capacity-{}", std::process::id());
    let text = format!(
        "[gateway]\nid = \"bench-gw\"\nstate_dir = \"{}\"\n[store]\nsynchronous = \"{}\"\n{}[upstream]\nurl = \"mqtt://{host}:{port}\"\nclient_id = \"bench-capacity-{}\"\ntopic_prefix = \"{prefix}\"\n",
        state_dir.display(),
        args.sync,
        args.linger
            .as_ref()
            .map(|l| format!("linger = \"{l}\"\n"))
            .unwrap_or_default(),
        std::process::id()
    );
    let config = Config::parse(Path::new("bench.toml"), &text).expect("config");

    eprintln!("bare rumqttc QoS 1 loop ({} messages) ...", args.bare);
    let bare_before = bench_rt.block_on(bare(&host, port, args.bare));

    // The gateway's core on its own runtime, so its threads can be told apart.
    let mut builder = TestGateway::builder(config)
        .radios(Vec::new())
        .upstream(Tuning::default());
    for r in &radios {
        builder = builder.join_window(r.name, Duration::from_secs(24 * 3600));
    }
    let t_start = Instant::now();
    let gw = {
        let _enter = gw_rt.enter();
        builder.start()
    };
    let status = gw.upstream.as_ref().expect("upstream").status.clone();
    let writer = gw.store.as_ref().expect("store").writer();
    let events = gw.events.clone();
    let reader = fieldgate::store::open_reader(&gw.db).expect("reader");
    bench_rt.block_on(until(|| status.state() == ConnectionState::Connected));
    let connected_ms = t_start.elapsed().as_secs_f64() * 1000.0;

    // Devices join through the normal path: joined, then interviewed.
    eprintln!("joining {devices} devices ...");
    let t_join = Instant::now();
    bench_rt.block_on(async {
        for i in 0..devices {
            for ev in radios[i % radios.len()].join(i) {
                events.send(ev).await.expect("hub");
            }
        }
        until(|| device_count(&reader) >= devices as u64).await;
        until(|| outbox_empty(&reader)).await;
    });
    let join_s = t_join.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let (idle_rss, _) = probe::rss_kib();
    eprintln!(
        "{devices} devices joined in {join_s:.1} s; idle RSS {} MiB",
        idle_rss / 1024
    );

    // Latency subscriber on the sampled devices' telemetry, and the depth sampler.
    let epoch = Instant::now();
    let sampled = args.sampled.min(devices);
    let topics: Vec<String> = (0..sampled)
        .map(|i| {
            format!(
                "{prefix}/device/{}/telemetry",
                radios[i % radios.len()].device_id(i)
            )
        })
        .collect();
    let samples = load::Samples::default();
    let stop = Arc::new(AtomicBool::new(false));
    bench_rt.spawn(load::subscriber(
        host.clone(),
        port,
        topics,
        epoch,
        samples.clone(),
        stop.clone(),
    ));
    let depth_series = Arc::new(std::sync::Mutex::new(Vec::<(f64, u64)>::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let step_label = Arc::new(std::sync::Mutex::new(String::new()));
    {
        let (series, stop, sent, label, db) = (
            depth_series.clone(),
            stop.clone(),
            sent.clone(),
            step_label.clone(),
            gw.db.clone(),
        );
        let status = status.clone();
        bench_rt.spawn(async move {
            let reader = fieldgate::store::open_reader(&db).expect("reader");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let depth = outbox_depth(&reader);
                series
                    .lock()
                    .expect("series")
                    .push((epoch.elapsed().as_secs_f64(), depth));
                if n % 5 == 0 {
                    eprint!(
                        "\r{}: sent {:>9}  delivered {:>9}  outbox {:>7}   ",
                        label.lock().expect("label"),
                        sent.load(Ordering::Relaxed),
                        status.snapshot().delivered,
                        depth
                    );
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    std::thread::sleep(Duration::from_millis(300));

    let bare_rate = bare_before;
    let mut steps = Vec::new();
    for (k, &rate) in args.rates.iter().enumerate() {
        let total = if rate > 0.0 {
            (rate * args.seconds).round().max(1.0) as u64
        } else {
            args.events
        };
        *step_label.lock().expect("label") = format!(
            "step {}/{} offered {}",
            k + 1,
            args.rates.len(),
            if rate > 0.0 {
                format!("{rate:.0}/s")
            } else {
                "max".into()
            }
        );
        sent.store(0, Ordering::Relaxed);
        samples.take();
        let depth_from = depth_series.lock().expect("series").len();
        let cpu0 = probe::threads_cpu(GATEWAY_THREADS);
        let pcpu0 = probe::process_cpu();
        let tx0 = writer.stats().transactions.load(Ordering::Relaxed);
        let delivered0 = status.snapshot().delivered;
        let t0 = Instant::now();
        bench_rt.block_on(async {
            load::offer(
                &events, &radios, devices, sampled, rate, total, epoch, &sent,
            )
            .await;
            // A marked last reading: once the hub has committed it, it has committed
            // every event before it; then the outbox empties as the broker acks.
            let marker = radios[0].marker(0, k as u64);
            events.send(marker).await.expect("hub");
            let id = radios[0].device_id(0);
            until(|| {
                fieldgate::store::registry::get(&reader, &id)
                    .ok()
                    .flatten()
                    .and_then(|d| d.last_state.get(load::MARK).and_then(|v| v.as_f64()))
                    == Some(k as f64)
            })
            .await;
            until(|| outbox_empty(&reader)).await;
        });
        let secs = t0.elapsed().as_secs_f64();
        let cpu = probe::threads_cpu(GATEWAY_THREADS) - cpu0;
        let pcpu = probe::process_cpu() - pcpu0;
        let commits = writer.stats().transactions.load(Ordering::Relaxed) - tx0;
        let delivered = status.snapshot().delivered - delivered0;
        std::thread::sleep(Duration::from_millis(200));
        let mut lat = samples.take();
        let max_depth = depth_series.lock().expect("series")[depth_from..]
            .iter()
            .map(|d| d.1)
            .max()
            .unwrap_or(0);
        let step = Step {
            offered: rate,
            events: total,
            seconds: secs,
            events_per_s: total as f64 / secs,
            messages_per_s: delivered as f64 / secs,
            ratio_to_bare: total as f64 / secs / bare_rate,
            latency_p50_ms: probe::quantile(&mut lat, 0.5),
            latency_p99_ms: probe::quantile(&mut lat, 0.99),
            latency_samples: lat.len(),
            gateway_cpu_us_per_event: cpu.as_secs_f64() * 1e6 / total as f64,
            gateway_core_percent: cpu.as_secs_f64() / secs * 100.0,
            process_cpu_us_per_event: pcpu.as_secs_f64() * 1e6 / total as f64,
            commits,
            events_per_commit: total as f64 / commits.max(1) as f64,
            max_outbox_depth: max_depth,
            rss_kib: probe::rss_kib().0,
        };
        eprintln!(
            "\r{}: {:.0} events/s ({:.2} of bare), p50 {:.1} ms, p99 {:.1} ms, {:.1} µs CPU/event, {} commits      ",
            step_label.lock().expect("label"),
            step.events_per_s,
            step.ratio_to_bare,
            step.latency_p50_ms,
            step.latency_p99_ms,
            step.gateway_cpu_us_per_event,
            step.commits
        );
        steps.push(step);
    }
    stop.store(true, Ordering::Relaxed);
    eprintln!("bare rumqttc QoS 1 loop again ...");
    let bare_after = bench_rt.block_on(bare(&host, port, args.bare));
    let (_, peak_rss) = probe::rss_kib();
    // Stop the core the daemon's way (the store closed, its WAL checkpointed).
    drop((writer, events, reader));
    gw_rt.block_on(gw.stop());

    let result = report::Result {
        radios: args.radios.clone(),
        devices,
        synchronous: args.sync.clone(),
        broker: args
            .url
            .clone()
            .unwrap_or_else(|| "embedded rumqttd".into()),
        bare_before_msgs_per_s: bare_before,
        bare_after_msgs_per_s: bare_after,
        connected_ms,
        join_seconds: join_s,
        idle_rss_kib: idle_rss,
        peak_rss_kib: peak_rss,
        steps,
        outbox_depth: depth_series.lock().expect("series").clone(),
    };
    if let Err(e) = report::write(&args.out, &result) {
        eprintln!("cannot write the results: {e}");
        std::process::exit(1);
    }
    report::print(&result);
    println!(
        "results: {} and {}",
        args.out.join("capacity.json").display(),
        args.out.join("capacity.svg").display()
    );
    // rumqttd's thread never ends: leave without waiting for it.
    std::process::exit(0);
}
