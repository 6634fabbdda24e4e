//! Codec benchmark: frames and command classes decoded per second by this crate and by
//! zwave-js's parsers on the same set, in the same run (method in docs/benchmarks.md,
//! "## Z-Wave codec").
//!
//! ```text
//! tests/peers/zwave/setup.sh        # once, for the zwave-js column
//! cargo run --release -p fieldgate-zwave --example zwave_decode_bench
//! ```

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use fieldgate_zwave::message::{Inbound, Request};
use fieldgate_zwave::samples::{generate, Sample};
use fieldgate_zwave::{to_hex, Cc, DataFrame};

const ITEMS: usize = 5_000;
const ROUNDS: usize = 40;

/// What a host does per item: the frame and the command class inside node traffic; or the CC.
fn decode_all(set: &[Sample]) -> usize {
    let mut ok = 0;
    for s in set {
        let good = match s {
            Sample::Controller(b) => DataFrame::from_bytes(b)
                .ok()
                .and_then(|f| Inbound::decode(&f).ok())
                .map(|m| match m {
                    Inbound::Unsolicited(u) => {
                        u.command_class().is_none_or(|c| Cc::decode(c).is_ok())
                    }
                    _ => true,
                })
                .unwrap_or(false),
            Sample::Host(b) => DataFrame::from_bytes(b)
                .ok()
                .and_then(|f| Request::decode(&f).ok())
                .is_some(),
            Sample::Cc(b) => Cc::decode(b).is_ok(),
        };
        ok += usize::from(std::hint::black_box(good));
    }
    ok
}

fn main() {
    let set = generate(0xBE_4C4, ITEMS);
    decode_all(&set);
    let t0 = Instant::now();
    let mut items = 0;
    for _ in 0..ROUNDS {
        decode_all(&set);
        items += set.len();
    }
    let ours = t0.elapsed().as_nanos() as f64 / items as f64;
    println!(
        "items: {} x {ROUNDS} rounds (frames and command classes)",
        set.len()
    );
    println!(
        "fieldgate-zwave: {ours:>8.1} ns/item ({:>10.0} items/s)",
        1e9 / ours
    );

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/peers/zwave");
    if !std::path::Path::new(&format!("{dir}/node_modules/@zwave-js/cc")).exists() {
        println!("zwave-js: skipped (run tests/peers/zwave/setup.sh)");
        return;
    }
    let input: String = set
        .iter()
        .map(|s| match s {
            Sample::Controller(b) => format!(
                "{{\"frame\":\"{}\",\"origin\":\"controller\"}}\n",
                to_hex(b)
            ),
            Sample::Host(b) => format!("{{\"frame\":\"{}\",\"origin\":\"host\"}}\n", to_hex(b)),
            Sample::Cc(b) => format!("{{\"cc\":\"{}\"}}\n", to_hex(b)),
        })
        .collect();
    let mut child = Command::new("node")
        .arg(format!("{dir}/decode.cjs"))
        .args(["--bench", &ROUNDS.to_string()])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node on PATH");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write to node");
    let out = child.wait_with_output().expect("node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let theirs: f64 = text
        .split("\"ns_per_item\":")
        .nth(1)
        .and_then(|t| t.trim().trim_end_matches('}').parse().ok())
        .expect("zwave-js bench output");
    println!(
        "zwave-js:        {theirs:>8.1} ns/item ({:>10.0} items/s)",
        1e9 / theirs
    );
    println!("ratio: {:.1}x", theirs / ours);
}
