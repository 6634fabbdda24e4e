//! Codec benchmark: frames decoded per second by this crate and by zigbee-herdsman on the
//! same frames, in the same run (method in docs/benchmarks.md, "## Zigbee codec").
//!
//! ```text
//! tests/peers/zigbee/setup.sh        # once, for the herdsman column
//! cargo run --release -p fieldgate-zigbee --features emulator --example codec_bench
//! cargo run -p fieldgate-zigbee --features emulator --example codec_bench -- --emit > frames.jsonl
//! ```

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use fieldgate_zigbee::samples::{self, Sample};
use fieldgate_zigbee::zcl::ZclFrame;
use fieldgate_zigbee::{to_hex, MtFrame, ZnpCommand};

const FRAMES: usize = 5_000;
const ROUNDS: usize = 40;

fn jsonl(set: &[Sample]) -> String {
    set.iter()
        .map(|s| match s {
            Sample::Mt(b) => format!("{{\"mt\":\"{}\"}}\n", to_hex(b)),
            Sample::Zcl { cluster, bytes } => {
                format!("{{\"zcl\":\"{}\",\"cluster\":{cluster}}}\n", to_hex(bytes))
            }
        })
        .collect()
}

/// What a host does per frame: MT frame + typed command, and the ZCL inside AF messages.
fn decode_all(set: &[Sample]) -> usize {
    let mut ok = 0;
    for s in set {
        let good = match s {
            Sample::Mt(b) => MtFrame::from_bytes(b)
                .ok()
                .and_then(|f| ZnpCommand::decode(&f).ok())
                .map(|c| match c {
                    ZnpCommand::AfIncomingMsg(m) => ZclFrame::decode(m.cluster_id, &m.data).is_ok(),
                    _ => true,
                })
                .unwrap_or(false),
            Sample::Zcl { cluster, bytes } => ZclFrame::decode(*cluster, bytes).is_ok(),
        };
        ok += usize::from(std::hint::black_box(good));
    }
    ok
}

fn main() {
    let mut set = samples::reference_vectors();
    set.extend(samples::generate(0xF1E1D, FRAMES));
    if std::env::args().any(|a| a == "--emit") {
        print!("{}", jsonl(&set));
        return;
    }
    decode_all(&set);
    let t0 = Instant::now();
    let mut frames = 0;
    for _ in 0..ROUNDS {
        decode_all(&set);
        frames += set.len();
    }
    let ours = t0.elapsed().as_nanos() as f64 / frames as f64;
    println!("frames: {} x {ROUNDS} rounds", set.len());
    println!(
        "fieldgate-zigbee: {ours:>8.1} ns/frame ({:>10.0} frames/s)",
        1e9 / ours
    );

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/peers/zigbee/decode.js"
    );
    let child = Command::new("node")
        .arg(script)
        .args(["--bench", &ROUNDS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let Ok(mut child) = child else {
        println!("zigbee-herdsman: skipped (node not found)");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(jsonl(&set).as_bytes());
    }
    let out = child.wait_with_output().ok();
    let parsed = out
        .as_ref()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["ns_per_frame"].as_f64());
    match parsed {
        Some(theirs) => {
            println!(
                "zigbee-herdsman:  {theirs:>8.1} ns/frame ({:>10.0} frames/s)",
                1e9 / theirs
            );
            println!("ratio (herdsman / ours): {:.1}x", theirs / ours);
        }
        None => println!("zigbee-herdsman: skipped (run tests/peers/zigbee/setup.sh)"),
    }
}
