//! BLE end to end: the real daemon binary scanning the in-process emulator (`sim://ble`),
//! with the real store: decoded advertisements in the registry and the outbox, attacks
//! refused, counted and audited, adoption by a policy allow rule, and a BlueZ adapter
//! with no D-Bus to reach (radio down with the reason, the rest running).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{stdout, TestDaemon};
use fieldgate::store::{self, outbox, registry};

mod adopt;
mod bluez;
mod lifecycle;

const ENCRYPTED: &str = "ble:54:48:e6:8f:80:a5";
const RUUVI: &str = "ble:cb:b8:33:4c:88:4f";

fn radio(name: &str, port: &str, options: &str) -> String {
    format!("\n[[radio]]\nname = \"{name}\"\nprotocol = \"ble\"\nport = \"{port}\"\n\n[radio.options]\n{options}\n")
}

/// Polls until `f` holds (or panics after `limit` with the daemon's log).
fn wait_for(d: &TestDaemon, limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn device(d: &TestDaemon, id: &str) -> Option<registry::Device> {
    let c = store::open_reader(&d.db()).ok()?;
    registry::get(&c, &fieldgate::model::DeviceId::parse(id)?).ok()?
}

fn status(d: &TestDaemon) -> Value {
    let out = d.cli(&["status", "--json"]);
    serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null)
}

fn radio_status<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["radios"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name))
        .unwrap_or(&Value::Null)
}

#[test]
fn emulated_sensors_reach_the_registry_and_the_outbox_and_attacks_are_refused() {
    let d = TestDaemon::start(&radio(
        "ble0",
        "sim://ble",
        "min_interval = \"1s\"\nsim_speed = 5",
    ));
    wait_for(
        &d,
        Duration::from_secs(30),
        "the encrypted sensor's reading",
        || {
            device(&d, ENCRYPTED).is_some_and(|x| x.last_state["temperature"].is_number())
                && device(&d, RUUVI).is_some_and(|x| x.model.is_some())
        },
    );
    let enc = device(&d, ENCRYPTED).unwrap();
    let t = enc.last_state["temperature"].as_f64().unwrap();
    assert!((25.06..25.13).contains(&t), "{t}");
    assert_eq!(enc.last_state["humidity"], json!(50.55));
    assert_eq!(enc.model.as_deref(), Some("bthome"));
    assert!(
        enc.capabilities.contains(&"encrypted".to_string()),
        "{:?}",
        enc.capabilities
    );
    assert_eq!(enc.reachability.as_deref(), Some("after_uplink"));
    // Discovered, not joined: an open policy does not make them active.
    assert_eq!(enc.lifecycle, "pending");
    let ruuvi = device(&d, RUUVI).unwrap();
    assert_eq!(ruuvi.model.as_deref(), Some("ruuvi_rawv2"));
    assert!(
        ruuvi.last_state["pressure"].is_number(),
        "{}",
        ruuvi.last_state
    );

    // Pending devices' readings stay in the gateway: their discovery goes upstream
    // (a lifecycle message), their telemetry does not until they are adopted.
    let c = store::open_reader(&d.db()).unwrap();
    let rows = outbox::pending(&c, 0, 100_000).unwrap();
    let about = |kind: &str| {
        rows.iter()
            .any(|r| r.kind == kind && r.topic.contains("54:48:e6:8f:80:a5"))
    };
    assert!(
        about("lifecycle"),
        "{:?}",
        rows.iter().map(|r| (&r.kind, &r.topic)).collect::<Vec<_>>()
    );
    assert!(!about("telemetry"));

    // Replays, forged MICs and downgrades: counted, and audited as refusals.
    wait_for(&d, Duration::from_secs(20), "a refusal", || {
        radio_status(&status(&d), "ble0")["counters"]["refused"].as_u64() > Some(2)
    });
    let s = status(&d);
    let counters = &radio_status(&s, "ble0")["counters"];
    assert!(counters["rate_limited"].as_u64() > Some(0), "{counters}");
    let records = store::audit::tail(&c, 100_000, None).unwrap();
    let refusal = records
        .iter()
        .find(|r| r.action == "device.message" && r.target == ENCRYPTED)
        .expect("refusal audited");
    assert_eq!(refusal.outcome.as_str(), "refused");
    assert!(store::audit::verify(&c).unwrap().ok);
    // No downgraded (-40 °C) reading was stored.
    let enc = device(&d, ENCRYPTED).unwrap();
    assert_ne!(enc.last_state["temperature"], json!(-40.0));
    // The bindkey never reaches the log.
    assert!(!d.log().contains("231d39c1d7cc1ab1aee224cd096db932"));
}

#[test]
fn an_allow_rule_adopts_discovered_devices_by_format() {
    let d = TestDaemon::start(&radio(
        "ble0",
        "sim://ble",
        "min_interval = \"1s\"\nsim_speed = 5\nsim_faults = false",
    ));
    let policy = json!({"version": 2, "admission": {
        "allow": [{"protocol": "ble", "model": "ruuvi*"}]}});
    let path = d.dir.path().join("policy.json");
    std::fs::write(&path, policy.to_string()).unwrap();
    let out = d.cli(&["policy", "apply", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    wait_for(&d, Duration::from_secs(30), "the Ruuvi tag adopted", || {
        device(&d, RUUVI).is_some_and(|x| x.lifecycle == "active")
    });
    // Adopted: its readings now go upstream.
    wait_for(
        &d,
        Duration::from_secs(30),
        "the Ruuvi tag's telemetry",
        || {
            let c = store::open_reader(&d.db()).unwrap();
            outbox::pending(&c, 0, 100_000)
                .unwrap()
                .iter()
                .any(|r| r.kind == "telemetry" && r.topic.contains("cb:b8:33:4c:88:4f"))
        },
    );
    // The others in range stay pending.
    wait_for(&d, Duration::from_secs(30), "the encrypted sensor", || {
        device(&d, ENCRYPTED).is_some_and(|x| x.model.is_some())
    });
    assert_eq!(device(&d, ENCRYPTED).unwrap().lifecycle, "pending");
}

#[test]
fn no_dbus_means_the_radio_is_down_with_the_reason_and_the_rest_runs() {
    let mut d = TestDaemon::prepare(&format!(
        "{}{}",
        radio("hci", "bluez://hci0", ""),
        radio("ble0", "sim://ble", "sim_speed = 5")
    ));
    let nowhere = format!("unix:path={}", d.dir.path().join("no-bus").display());
    d.spawn_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", nowhere.as_str())]);
    wait_for(&d, Duration::from_secs(20), "the BlueZ radio down", || {
        radio_status(&status(&d), "hci")["state"] == "down"
    });
    let s = status(&d);
    let detail = radio_status(&s, "hci")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains("D-Bus"), "{s}");
    assert_eq!(radio_status(&s, "ble0")["state"], "up", "{s}");
    wait_for(
        &d,
        Duration::from_secs(30),
        "the emulated radio's devices",
        || device(&d, RUUVI).is_some(),
    );
}

#[test]
fn emulate_ble_prints_the_scene_as_json_lines_a_decoder_reads_back() {
    let out = crate::common::fieldgate(&["emulate", "ble", "--duration", "6s", "--speed", "1000"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(lines.len() > 30, "{}", lines.len());
    let enc = lines
        .iter()
        .find(|l| l["address"] == "54:48:E6:8F:80:A5")
        .expect("the encrypted sensor");
    let sd = enc["service_data"]["fcd2"].as_str().unwrap();
    assert!(sd.starts_with("41"), "{sd}");
    // The line decodes with the emulator's (public, spec example) key.
    let mut child = std::process::Command::new(crate::common::bin())
        .args([
            "decode",
            "ble",
            "--service-data",
            &format!("fcd2={sd}"),
            "--mac",
            "54:48:E6:8F:80:A5",
            "--bindkey",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"231d39c1d7cc1ab1aee224cd096db932\n")
        .unwrap();
    let decoded = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&decoded.stdout);
    assert!(decoded.status.success(), "{text}");
    assert!(text.contains("temperature"), "{text}");
    // Faults and formats are all there.
    assert!(lines
        .iter()
        .any(|l| l["manufacturer_data"]["0499"].is_string()));
    assert!(lines.iter().any(|l| l["service_data"]["181a"].is_string()));
}
