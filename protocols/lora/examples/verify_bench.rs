//! Uplinks verified and decrypted per second: ours against npm lora-packet on the same
//! frames. What a gateway does per received uplink of a device it owns: parse the
//! PHYPayload, check the MIC with the full 32-bit counter, decrypt the FRMPayload.
//!
//! `cargo run --release -p fieldgate-lora --example verify_bench [FRAMES] [ROUNDS]`
//! (defaults 20000 and 10). lora-packet runs through tests/peers/lora/lora_packet.js
//! `--bench` (install it with tests/peers/lora/setup.sh); without node or the peer it is
//! skipped. Both sides time only the work, after one warm-up pass.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use fieldgate_lora::lorawan::{DataFrame, DataMessage, FCtrl, PhyPayload, SessionKeys};
use fieldgate_lora::types::hex_encode;
use fieldgate_lora::{AesKey, DevAddr, Direction};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn key(&mut self) -> AesKey {
        let mut k = [0u8; 16];
        k.iter_mut().for_each(|b| *b = self.next() as u8);
        AesKey(k)
    }
}

struct Uplink {
    wire: Vec<u8>,
    keys: SessionKeys,
    fcnt: u32,
}

/// 200 devices sending 8..=51-byte application payloads (typical sensor uplinks) on ports
/// 1..=20, counters spread over the 32-bit range.
fn uplinks(n: usize) -> Vec<Uplink> {
    let mut rng = Rng(42);
    let devices: Vec<(DevAddr, SessionKeys)> = (0..200)
        .map(|_| {
            let addr = DevAddr(rng.next() as u32);
            let keys = SessionKeys {
                nwk_s_key: rng.key(),
                app_s_key: rng.key(),
            };
            (addr, keys)
        })
        .collect();
    (0..n)
        .map(|i| {
            let (dev_addr, keys) = devices[i % devices.len()];
            let len = 8 + (rng.next() % 44) as usize;
            let msg = DataMessage {
                direction: Direction::Uplink,
                confirmed: false,
                dev_addr,
                fctrl: FCtrl {
                    adr: true,
                    ..FCtrl::default()
                },
                fcnt: rng.next() as u32 >> 8,
                fopts: vec![],
                fport: Some(1 + (rng.next() % 20) as u8),
                payload: (0..len).map(|_| rng.next() as u8).collect(),
            };
            let wire = DataFrame::seal(&msg, &keys)
                .and_then(|f| f.to_bytes())
                .expect("valid uplink");
            Uplink {
                wire,
                keys,
                fcnt: msg.fcnt,
            }
        })
        .collect()
}

fn ours(frames: &[Uplink], rounds: usize) -> f64 {
    let pass = || {
        let mut ok = 0usize;
        for u in frames {
            if let Ok(PhyPayload::Data(f)) = PhyPayload::parse(std::hint::black_box(&u.wire)) {
                if let Ok(msg) = f.open(&u.keys, u.fcnt) {
                    ok += std::hint::black_box(msg.payload.len()).min(1);
                }
            }
        }
        ok
    };
    assert_eq!(pass(), frames.len(), "every uplink verifies");
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(pass());
    }
    (frames.len() * rounds) as f64 / start.elapsed().as_secs_f64()
}

fn lora_packet(frames: &[Uplink], rounds: usize) -> Result<f64, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/lora");
    if !dir.join("node_modules/lora-packet/package.json").exists() {
        return Err("lora-packet not installed (run tests/peers/lora/setup.sh)".into());
    }
    let mut input = String::new();
    for u in frames {
        input.push_str(&format!(
            "{{\"op\":\"data\",\"hex\":\"{}\",\"nwk\":\"{}\",\"app\":\"{}\",\"fcnt\":{}}}\n",
            hex_encode(&u.wire),
            hex_encode(&u.keys.nwk_s_key.0),
            hex_encode(&u.keys.app_s_key.0),
            u.fcnt
        ));
    }
    let mut child = Command::new("node")
        .arg(dir.join("lora_packet.js"))
        .arg("--bench")
        .arg(rounds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("node: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    writer
        .join()
        .map_err(|_| "writer panicked")?
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("peer output: {e}"))?;
    let verified = v["verified"].as_u64().unwrap_or(0) as usize;
    if verified != frames.len() * rounds {
        return Err(format!(
            "lora-packet verified {verified} of {}",
            frames.len() * rounds
        ));
    }
    v["per_sec"]
        .as_f64()
        .ok_or_else(|| format!("peer output: {v}"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let frames = uplinks(n);
    let ours = ours(&frames, rounds);
    println!("fieldgate-lora: {ours:>12.0} uplinks verified + decrypted per second ({n} frames x {rounds} rounds)");
    match lora_packet(&frames, rounds) {
        Ok(theirs) => {
            println!("lora-packet:    {theirs:>12.0} uplinks verified + decrypted per second (same frames, node {})", node_version());
            println!("ratio:          {:>12.1}x", ours / theirs);
        }
        Err(why) => println!("lora-packet:    skipped: {why}"),
    }
}

fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
