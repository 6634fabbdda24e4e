//! Audit benchmark: audit records/s through the store's writer (hash chain, the copy
//! queued for the cloud, and the high-water mark rewritten and synced after each
//! commit that appended) against telemetry rows/s (one outbox insert) in the same
//! run, same disk, same writer settings: what an audited request costs in the store.
//!
//! Run: `cargo bench --bench audit` (env FIELDGATE_BENCH_ROWS, FIELDGATE_BENCH_PRODUCERS).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fieldgate::config::Synchronous;
use fieldgate::store::audit::{AuditEntry, Outcome};
use fieldgate::store::outbox::{self, MessageKind, NewMessage};
use fieldgate::store::{self, Store, WriterOptions};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy)]
enum Kind {
    Audit,
    Telemetry,
}

fn run(kind: Kind, rows: usize, producers: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WriterOptions {
        commit_window: Duration::from_millis(50),
        commit_max_ops: 1000,
        synchronous: Synchronous::Full,
    };
    let store = Store::open(&dir.path().join("bench.db"), options).expect("open");
    let per = rows / producers;
    let start = Arc::new(std::sync::Barrier::new(producers + 1));
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let writer = store.writer();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for i in 0..per {
                    writer
                        .write_blocking(move |c| match kind {
                            Kind::Audit => store::record_audit(
                                c,
                                "bench-gw",
                                &AuditEntry::new(
                                    format!("local:uid=1000,gid=1000,pid={p}"),
                                    "api.get",
                                    "/v1/status",
                                    Outcome::Accepted,
                                    serde_json::json!({"status": 200, "user": "tech", "i": i}),
                                ),
                            )
                            .map(|_| ()),
                            Kind::Telemetry => outbox::append(
                                c,
                                "bench-gw",
                                &NewMessage {
                                    kind: MessageKind::Telemetry,
                                    device: None,
                                    topic: format!("device/zigbee:0x{p:016x}/telemetry"),
                                    retain: false,
                                    data: serde_json::json!({"readings": [{"name": "temperature", "value": 20.0 + (i % 50) as f64 / 10.0, "unit": "°C"}]}),
                                    event_time: SystemTime::now(),
                                },
                            )
                            .map(|_| ()),
                        })
                        .expect("write");
                }
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    for h in handles {
        h.join().expect("producer");
    }
    let rate = (per * producers) as f64 / t0.elapsed().as_secs_f64();
    let tx = store
        .writer()
        .stats()
        .transactions
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "  {:<9} rows={:<6} transactions={:<6} rows/s={rate:>10.0}",
        match kind {
            Kind::Audit => "audit",
            Kind::Telemetry => "telemetry",
        },
        per * producers,
        tx
    );
    rate
}

fn main() {
    let rows = env_usize("FIELDGATE_BENCH_ROWS", 4000);
    let producers = env_usize("FIELDGATE_BENCH_PRODUCERS", 8);
    println!(
        "synchronous=FULL, WAL, group commit, {producers} producer threads, {rows} rows per mode"
    );
    run(Kind::Telemetry, rows / 4, producers);
    let (mut a, mut t) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        a.push(run(Kind::Audit, rows, producers));
        t.push(run(Kind::Telemetry, rows, producers));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    let (am, tm) = (median(&mut a), median(&mut t));
    println!("audit records:   {am:>10.0} /s (median of 3)");
    println!("telemetry rows:  {tm:>10.0} /s (median of 3)");
    println!("ratio audit/telemetry: {:>6.2}x", am / tm);
}
