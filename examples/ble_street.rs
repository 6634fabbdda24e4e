//! Benchmark: the daemon's CPU time and resident memory while its BLE radio hears a busy
//! street (5,000 random addresses, most in no known format, from `sim://ble` with
//! `sim_street = 5000`), against the same daemon hearing only the emulated room
//! (`sim_street = 0`), in the same run. Prints both and the ratio.
//!
//! Run: `cargo build --release && cargo run --release --example ble_street`
//! (`FIELDGATE_BIN` picks the daemon binary, default `target/release/fieldgate`;
//! `FIELDGATE_BENCH_SECS` the measuring time per case, default 30).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn clock_ticks() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on.
    100.0
}

/// (user + system CPU seconds, VmRSS KiB) of `pid`.
fn usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(((utime + stime) / clock_ticks(), rss))
}

fn start(bin: &str, dir: &std::path::Path, street: usize) -> Child {
    let config = dir.join("fieldgate.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"bench\"\nstate_dir = \"{}\"\nlog_level = \"warn\"\n\n[api]\nsocket = \"{}\"\n\n[[radio]]\nname = \"ble0\"\nprotocol = \"ble\"\nport = \"sim://ble\"\n\n[radio.options]\nsim_street = {street}\n",
            dir.join("state").display(),
            dir.join("api.sock").display()
        ),
    )
    .expect("write config");
    Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon (build it first)")
}

/// CPU share (percent of one core) and peak RSS (KiB) over `secs` after a 5 s warm-up.
fn measure(bin: &str, street: usize, secs: u64) -> (f64, u64) {
    let dir = std::env::temp_dir().join(format!(
        "fieldgate-ble-bench-{}-{street}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut child = start(bin, &dir, street);
    std::thread::sleep(Duration::from_secs(5));
    let pid = child.id();
    let (cpu0, _) = usage(pid).expect("daemon running");
    let t0 = Instant::now();
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(500));
        if let Some((_, rss)) = usage(pid) {
            peak = peak.max(rss);
        }
    }
    let (cpu1, _) = usage(pid).expect("daemon still running");
    let share = (cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    (share, peak)
}

fn main() {
    let bin = std::env::var("FIELDGATE_BIN").unwrap_or_else(|_| "target/release/fieldgate".into());
    let secs: u64 = std::env::var("FIELDGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let (room_cpu, room_rss) = measure(&bin, 0, secs);
    let (street_cpu, street_rss) = measure(&bin, 5000, secs);
    println!("case                      CPU (% of one core)  peak RSS (MiB)");
    println!(
        "room only (6 devices)     {room_cpu:>8.2}            {:>8.1}",
        room_rss as f64 / 1024.0
    );
    println!(
        "street (5,000 addresses)  {street_cpu:>8.2}            {:>8.1}",
        street_rss as f64 / 1024.0
    );
    println!(
        "ratio                     {:>8.1}x           {:>8.2}x",
        street_cpu / room_cpu.max(0.01),
        street_rss as f64 / room_rss.max(1) as f64
    );
}
