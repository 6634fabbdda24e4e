//! Store benchmark: rows/s appended to the outbox with group commit versus one
//! transaction per row, in the same run, on the same disk, through the same
//! writer thread (the baseline only sets `commit_max_ops = 1`).
//!
//! Run: `cargo bench --bench store` (env FIELDGATE_BENCH_ROWS, FIELDGATE_BENCH_PRODUCERS).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fieldgate::config::Synchronous;
use fieldgate::store::outbox::{self, MessageKind, NewMessage};
use fieldgate::store::{Store, WriterOptions};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Appends `rows` outbox rows from `producers` threads; returns rows per second.
fn run(options: WriterOptions, rows: usize, producers: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
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
                        .write_blocking(move |c| {
                            outbox::append(
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
                        })
                        .expect("append");
                }
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    for h in handles {
        h.join().expect("producer");
    }
    let elapsed = t0.elapsed();
    let stats = store.writer();
    let tx = stats
        .stats()
        .transactions
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "  commit_max_ops={:<5} rows={:<6} transactions={:<6} time={:>8.3}s  rows/s={:>10.0}",
        options.commit_max_ops,
        per * producers,
        tx,
        elapsed.as_secs_f64(),
        (per * producers) as f64 / elapsed.as_secs_f64()
    );
    (per * producers) as f64 / elapsed.as_secs_f64()
}

fn main() {
    let rows = env_usize("FIELDGATE_BENCH_ROWS", 4000);
    let producers = env_usize("FIELDGATE_BENCH_PRODUCERS", 8);
    println!(
        "outbox append, synchronous=FULL, WAL, {producers} producer threads, {rows} rows per mode"
    );
    let grouped = WriterOptions {
        commit_window: Duration::from_millis(50),
        commit_max_ops: 1000,
        synchronous: Synchronous::Full,
    };
    let single = WriterOptions {
        commit_max_ops: 1,
        ..grouped
    };
    // Warm the file system once, then alternate so drift hits both modes alike.
    run(grouped, rows / 4, producers);
    let mut g = Vec::new();
    let mut s = Vec::new();
    for _ in 0..3 {
        g.push(run(grouped, rows, producers));
        s.push(run(single, rows, producers));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (gm, sm) = (median(&mut g), median(&mut s));
    println!("group commit:        {gm:>10.0} rows/s (median of 3)");
    println!("one txn per row:     {sm:>10.0} rows/s (median of 3)");
    println!("ratio group/single:  {:>10.1}x", gm / sm);
}
