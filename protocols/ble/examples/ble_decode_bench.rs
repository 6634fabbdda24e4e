//! Decoding benchmark: BTHome advertisements decoded per second by this crate and by
//! bthome-ble (through tests/peers/ble/decode.py) on the same generated set, in the same
//! run (method in docs/benchmarks.md, "## BLE decoders").
//!
//! ```text
//! bash tests/peers/ble/setup.sh      # once, for the bthome-ble column
//! cargo run --release -p fieldgate-ble --example ble_decode_bench
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use fieldgate_ble::samples::{self, BtHomeSample, Case};
use fieldgate_ble::{decode, format_address, to_hex, Context, Decoded, Keys};

const ADVERTS: usize = 5_000;
const ROUNDS: usize = 100;
const PY_ROUNDS: usize = 3;

fn decode_all(set: &[BtHomeSample], ctx: &Context<'_>) -> usize {
    let mut readings = 0;
    for s in set {
        if let Ok(Decoded::Known(r)) = decode(&s.adv, ctx) {
            readings += std::hint::black_box(r).readings.len();
        }
    }
    readings
}

fn main() {
    // The real workload: advertisements a receiver decodes (plaintext and encrypted with
    // the right key), not the ones it refuses.
    let set: Vec<BtHomeSample> = samples::bthome(0xB7_4043, ADVERTS * 2)
        .into_iter()
        .filter(|s| matches!(s.case, Case::Plain | Case::Encrypted))
        .take(ADVERTS)
        .collect();
    let encrypted = set.iter().filter(|s| s.case == Case::Encrypted).count();
    let keys: Keys = set
        .iter()
        .filter_map(|s| s.key.clone().map(|k| (s.device, k)))
        .collect();
    let ctx = Context::new(&keys, &());

    let readings = decode_all(&set, &ctx);
    let t0 = Instant::now();
    for _ in 0..ROUNDS {
        decode_all(&set, &ctx);
    }
    let ours = t0.elapsed().as_nanos() as f64 / (ROUNDS * set.len()) as f64;
    println!(
        "advertisements: {} ({encrypted} encrypted, {readings} readings), {ROUNDS} rounds",
        set.len()
    );
    println!(
        "fieldgate-ble: {ours:>9.1} ns/advert ({:>10.0} adverts/s)",
        1e9 / ours
    );

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/ble");
    let python = dir.join(".venv/bin/python");
    if !python.exists() {
        println!("bthome-ble: skipped (run tests/peers/ble/setup.sh)");
        return;
    }
    let input: String = set
        .iter()
        .map(|s| {
            format!(
                "{}\n",
                serde_json::json!({
                    "kind": "bthome",
                    "address": format_address(&s.adv.address),
                    "service_data": to_hex(s.adv.service_data_16(0xFCD2).unwrap_or(&[])),
                    "key": s.key.as_ref().map(|k| to_hex(k.as_bytes())),
                })
            )
        })
        .collect();
    let child = Command::new(python)
        .arg(dir.join("decode.py"))
        .args(["--bench", &PY_ROUNDS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let Ok(mut child) = child else {
        println!("bthome-ble: skipped (python did not start)");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let theirs = child
        .wait_with_output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["ns_per_advert"].as_f64());
    match theirs {
        Some(theirs) => {
            println!(
                "bthome-ble:    {theirs:>9.1} ns/advert ({:>10.0} adverts/s), {PY_ROUNDS} rounds",
                1e9 / theirs
            );
            println!("ratio (bthome-ble / ours): {:.0}x", theirs / ours);
        }
        None => println!("bthome-ble: failed (see above)"),
    }
}
