//! The reference consumer (`docs/examples/fieldgate_consumer.py`, paho-mqtt) against
//! the real gateway binary, emulated Zigbee devices and the broker: it de-duplicates,
//! orders by `(life, seq)`, sends a `set` and gets its one answer. Its `jq`
//! companion (docs/mqtt-api.md) is run on what the gateway published, when `jq` is
//! installed. Runs when `FIELDGATE_PEERS=1` (after `tests/peers/consumer/setup.sh`).

use std::path::Path;
use std::process::{Command, Stdio};

use fieldgate_zigbee::emulator::DeviceKind;
use serde_json::json;

use super::broker;
use super::device_requests::{dev, Site, SiteConfig};

/// The `jq` program of the documented one-liner: first arrivals only (by
/// `msg_id`), each as `device type life seq`.
const JQ_DEDUP: &str = r#"foreach inputs as $m ({seen: {}}; if .seen[$m.msg_id] then .out = null else .seen[$m.msg_id] = true | .out = $m end; .out // empty) | select(.msg_id) | "\(.device) \(.type) \(.life) \(.seq)""#;

fn peers() -> bool {
    std::env::var("FIELDGATE_PEERS").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_consumer_dedups_orders_and_gets_its_answer() {
    if !peers() {
        eprintln!("skipped: set FIELDGATE_PEERS=1 (after tests/peers/consumer/setup.sh)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("tests/peers/consumer/.venv/bin/python");
    assert!(python.exists(), "run tests/peers/consumer/setup.sh first");
    let site = Site::start_config(SiteConfig::default()).await;
    site.pair().await;
    let plug = dev(DeviceKind::SmartPlug);
    let b = broker();
    let script = root.join("docs/examples/fieldgate_consumer.py");
    let body = json!({"device": plug, "state": {"on": true}}).to_string();
    let out = tokio::task::spawn_blocking({
        let prefix = site.prefix.clone();
        let (host, port) = (b.host.clone(), b.port.to_string());
        move || {
            Command::new(python)
                .arg(script)
                .args(["--host", &host, "--port", &port, "--prefix", &prefix])
                .args(["--request", "set", "--body", &body])
                .args(["--wait-telemetry", "1", "--timeout", "30"])
                .output()
                .expect("python runs")
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        site.daemon.log()
    );
    let s: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON summary");
    assert_eq!(s["gateway_status"], "online", "{s}");
    assert_eq!(s["response"]["status"], "ok", "{s}");
    assert_eq!(s["response"]["operation"], "set", "{s}");
    assert_eq!(s["responses_for_request"], 1, "{s}");
    assert_eq!(s["out_of_order"], 0, "{s}");
    let life = s["life"].as_str().expect("life from status/info");
    let d = &s["devices"][&plug];
    assert_eq!(d["life"], life, "{s}");
    assert_eq!(d["availability"], "online", "{s}");
    assert!(d["state"].is_object(), "{s}");
    assert!(s["telemetry"].as_u64() >= Some(1), "{s}");

    // The jq companion on everything the gateway published to the probe, each
    // device message twice (a replay): every msg_id comes out once.
    let device_msgs: Vec<Vec<u8>> = site
        .probe
        .messages()
        .into_iter()
        .filter(|m| m.topic.contains("/device/") && !m.payload.is_empty())
        .map(|m| m.payload)
        .collect();
    if Command::new("jq").arg("--version").output().is_ok() && !device_msgs.is_empty() {
        let mut input = Vec::new();
        for p in device_msgs.iter().chain(device_msgs.iter()) {
            input.extend_from_slice(p);
            input.push(b'\n');
        }
        let mut jq = Command::new("jq")
            .args(["-rn", JQ_DEDUP])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("jq");
        use std::io::Write;
        jq.stdin.take().unwrap().write_all(&input).unwrap();
        let got = jq.wait_with_output().unwrap();
        let lines = String::from_utf8_lossy(&got.stdout);
        let unique: std::collections::HashSet<String> = device_msgs
            .iter()
            .filter_map(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .filter_map(|v| v["msg_id"].as_str().map(str::to_string))
            .collect();
        assert_eq!(lines.lines().count(), unique.len(), "{lines}");
        assert!(lines.lines().all(|l| l.contains(life)), "{lines}");
    }
}
