//! BLE lifecycle through the real daemon on `sim://ble`: availability from each
//! device's own advertising interval (a trigger-based button exempt), beacon presence
//! as lifecycle events, bindkey rotation through the CLI, and policy adoption by
//! advertised name and service UUID.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{device, radio, radio_status, status, wait_for, ENCRYPTED, RUUVI};
use crate::common::{stderr, stdout, TestDaemon};
use fieldgate::store::{self, outbox};

const BEACON: &str = "ble:f0:0d:be:ac:00:01";
const BUTTON: &str = "ble:3c:2e:f5:00:00:01";
const XIAOMI: &str = "ble:a4:c1:38:5a:6b:7c";
const KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";

/// The outbox messages about `address` of `kind`, as (data) JSON, oldest first.
fn messages(d: &TestDaemon, kind: &str, address: &str) -> Vec<Value> {
    let c = store::open_reader(&d.db()).unwrap();
    outbox::pending(&c, 0, 1_000_000)
        .unwrap()
        .iter()
        .filter(|r| r.kind == kind && r.topic.contains(address))
        .filter_map(|r| serde_json::from_slice::<Value>(&r.payload).ok())
        .map(|v| v["data"].clone())
        .collect()
}

fn audit(d: &TestDaemon, action: &str, target: &str) -> Vec<store::audit::AuditRecord> {
    let c = store::open_reader(&d.db()).unwrap();
    store::audit::tail(&c, 100_000, None)
        .unwrap()
        .into_iter()
        .filter(|r| r.action == action && r.target == target)
        .collect()
}

#[test]
fn availability_follows_each_devices_interval_and_beacon_presence_is_a_lifecycle_event() {
    // Emulated time runs 10x: the beacon advertises every 50 ms, leaves 15 s into the
    // run (fading first) and comes back 50 s in. The hub checks availability every 30 s.
    let d = TestDaemon::start(&radio(
        "ble0",
        "sim://ble",
        "min_interval = \"1s\"\nsim_speed = 10\nsim_faults = false\n\
         availability_multiplier = 5\navailability_floor = \"1s\"\n\
         presence_away_after = \"2s\"\nsim_beacon_away = [\"150s\", \"500s\"]",
    ));
    wait_for(&d, Duration::from_secs(10), "the beacon discovered", || {
        device(&d, BEACON).is_some()
    });
    let out = d.cli(&["adopt", BEACON]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Each device's own interval: the beacon's 50 ms, times 5, is under the floor and
    // under twice min_interval (the hub hears a device at most once a second): 2 s.
    // The button advertises only when pressed: never offline for silence.
    wait_for(&d, Duration::from_secs(10), "the intervals learnt", || {
        device(&d, BEACON).is_some_and(|x| x.offline_after_ms == Some(2000))
            && device(&d, BUTTON).is_some_and(|x| x.offline_after_ms == Some(0))
    });
    let beacon = device(&d, BEACON).unwrap();
    assert_eq!(
        beacon.last_state["presence"], "present",
        "{}",
        beacon.last_state
    );

    // It leaves: away after 2 s unheard, published and audited (it is adopted).
    wait_for(&d, Duration::from_secs(60), "the beacon away", || {
        device(&d, BEACON).is_some_and(|x| x.last_state["presence"] == "away")
    });
    let events = messages(&d, "lifecycle", "f0:0d:be:ac:00:01");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "presence" && e["state"] == "away"),
        "{events:?}"
    );
    let away = audit(&d, "device.presence", BEACON);
    assert_eq!(away.len(), 1, "{away:?}");
    assert_eq!(away[0].details["state"], "away");
    assert_eq!(away[0].actor, "radio:ble0");

    // Silent past its own timeout: offline (the availability topic), well before the
    // policy's 25 h battery default would say so.
    wait_for(&d, Duration::from_secs(75), "the beacon offline", || {
        device(&d, BEACON).is_some_and(|x| x.health["offline"] == true)
    });
    assert_eq!(
        messages(&d, "availability", "f0:0d:be:ac:00:01").last(),
        Some(&json!({"state": "offline"}))
    );
    // The button has been silent for seconds at a time all along: never offline.
    assert!(device(&d, BUTTON).unwrap().health.get("offline").is_none());

    // Back: online at its next advertisement, and present again.
    wait_for(&d, Duration::from_secs(90), "the beacon back", || {
        device(&d, BEACON).is_some_and(|x| {
            x.health.get("offline").is_none() && x.last_state["presence"] == "present"
        })
    });
    assert_eq!(
        messages(&d, "availability", "f0:0d:be:ac:00:01").last(),
        Some(&json!({"state": "online"}))
    );
    let presence: Vec<String> = audit(&d, "device.presence", BEACON)
        .iter()
        .map(|r| r.details["state"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(presence, ["away", "present"]);
    // Pending beacons and devices are not announced: no presence events for them.
    assert!(messages(&d, "lifecycle", "3c:2e:f5:00:00:01")
        .iter()
        .all(|e| e["event"] != "presence"));
}

/// `fieldgate rotate-bindkey ID --bindkey -` with `key` on standard input.
fn rotate(d: &TestDaemon, id: &str, key: &str) -> std::process::Output {
    let mut child = Command::new(crate::common::bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["rotate-bindkey", id, "--bindkey", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fieldgate rotate-bindkey");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(key.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn refused(d: &TestDaemon) -> u64 {
    radio_status(&status(d), "ble0")["counters"]["refused"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_rotated_bindkey_replaces_the_old_one_and_is_audited() {
    let d = TestDaemon::start(&radio(
        "ble0",
        "sim://ble",
        "min_interval = \"1s\"\nsim_speed = 5\nsim_faults = false",
    ));
    wait_for(&d, Duration::from_secs(30), "the encrypted sensor", || {
        device(&d, ENCRYPTED).is_some()
    });
    // Pending: a key is given by adopting it, not rotated.
    let out = rotate(&d, ENCRYPTED, KEY);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("adopt"), "{}", stderr(&out));
    let out = d.cli(&["adopt", ENCRYPTED, "--bindkey", KEY]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(refused(&d), 0);

    // A new key (the device was re-flashed with another one): the old key no longer
    // opens its advertisements here. The emulator still uses the old one, so every
    // advertisement is now refused (a MIC that does not match) and counted.
    let other = "00112233445566778899aabbccddeeff";
    let out = rotate(&d, ENCRYPTED, other);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("rotated"), "{}", stdout(&out));
    wait_for(
        &d,
        Duration::from_secs(20),
        "advertisements refused",
        || refused(&d) > 2,
    );
    let rotations = audit(&d, "device.bindkey.rotate", ENCRYPTED);
    assert_eq!(rotations.len(), 2, "{rotations:?}");
    assert_eq!(rotations[0].outcome.as_str(), "refused");
    assert_eq!(rotations[1].outcome.as_str(), "accepted");
    assert_eq!(rotations[1].details["replaced"], true);
    assert!(!audit(&d, "device.message", ENCRYPTED).is_empty());

    // Back to the device's key: readings flow again (its counter started afresh).
    let out = rotate(&d, ENCRYPTED, KEY);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = refused(&d);
    std::thread::sleep(Duration::from_secs(3));
    let seen = device(&d, ENCRYPTED).unwrap().last_seen;
    wait_for(&d, Duration::from_secs(20), "readings again", || {
        device(&d, ENCRYPTED).is_some_and(|x| x.last_seen > seen)
    });
    assert!(refused(&d) <= before + 1, "{} -> {}", before, refused(&d));

    // Malformed keys are refused before anything is stored; no key reaches the log.
    let out = rotate(&d, ENCRYPTED, "1234");
    assert!(!out.status.success());
    // A Ruuvi tag's advertisements are not encrypted: a key for it is refused, not
    // stored as "replaced" and never used.
    wait_for(&d, Duration::from_secs(30), "the Ruuvi tag", || {
        device(&d, RUUVI).is_some_and(|x| x.model.is_some())
    });
    // Adopting it with a key is refused the same way, and leaves it pending.
    let out = d.cli(&["adopt", RUUVI, "--bindkey", KEY]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("not encrypted"), "{}", stderr(&out));
    assert_eq!(device(&d, RUUVI).unwrap().lifecycle, "pending");
    assert_eq!(
        audit(&d, "device.adopt", RUUVI)[0].outcome.as_str(),
        "refused"
    );
    assert!(d.cli(&["adopt", RUUVI]).status.success());
    let out = rotate(&d, RUUVI, KEY);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("not encrypted"), "{}", stderr(&out));
    assert_eq!(
        audit(&d, "device.bindkey.rotate", RUUVI)[0]
            .outcome
            .as_str(),
        "refused"
    );
    // A BTHome sensor sending plain advertisements: a key would refuse every one of
    // them (it was stored, said "replaced", and the sensor went offline).
    const PLAIN: &str = "ble:a4:c1:38:10:20:30";
    wait_for(
        &d,
        Duration::from_secs(30),
        "the plain BTHome sensor",
        || device(&d, PLAIN).is_some_and(|x| !x.capabilities.is_empty()),
    );
    let out = d.cli(&["adopt", PLAIN, "--bindkey", KEY]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("unencrypted"), "{}", stderr(&out));
    assert!(d.cli(&["adopt", PLAIN]).status.success());
    let out = rotate(&d, PLAIN, KEY);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("unencrypted"), "{}", stderr(&out));
    for key in [KEY, other] {
        assert!(!d.log().contains(key));
        assert!(audit(&d, "device.bindkey.rotate", ENCRYPTED)
            .iter()
            .all(|r| !r.details.to_string().contains(key)));
    }
}

#[test]
fn allow_rules_adopt_by_advertised_name_and_service_uuid() {
    let d = TestDaemon::start(&radio(
        "ble0",
        "sim://ble",
        "min_interval = \"1s\"\nsim_speed = 5\nsim_faults = false",
    ));
    // Discovered and described first: the policy comes later and adopts those it
    // names then, as it would have when they were first heard.
    wait_for(&d, Duration::from_secs(30), "the devices described", || {
        device(&d, XIAOMI).is_some_and(|x| x.model.is_some())
            && device(&d, BUTTON).is_some_and(|x| x.model.is_some())
    });
    assert_eq!(device(&d, BUTTON).unwrap().lifecycle, "pending");
    // The Xiaomi thermometer by its name; BTHome devices by their service UUID, but
    // only the button among them (by name too).
    let policy = json!({"version": 2, "admission": {"allow": [
        {"protocol": "ble", "name": "ATC_*"},
        {"protocol": "ble", "service": "fcd2", "name": "SBBT-*"}
    ]}});
    let path = d.dir.path().join("policy.json");
    std::fs::write(&path, policy.to_string()).unwrap();
    let out = d.cli(&["policy", "apply", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(
        &d,
        Duration::from_secs(30),
        "both adopted by the policy",
        || {
            device(&d, XIAOMI).is_some_and(|x| x.lifecycle == "active")
                && device(&d, BUTTON).is_some_and(|x| x.lifecycle == "active")
        },
    );
    wait_for(&d, Duration::from_secs(30), "the others described", || {
        device(&d, RUUVI).is_some_and(|x| x.model.is_some())
            && device(&d, ENCRYPTED).is_some_and(|x| x.model.is_some())
    });
    // The Ruuvi tag (another name, no BTHome service) and the encrypted BTHome sensor
    // (the service, another name) stay pending.
    assert_eq!(device(&d, RUUVI).unwrap().lifecycle, "pending");
    assert_eq!(device(&d, ENCRYPTED).unwrap().lifecycle, "pending");
    let admitted = audit(&d, "device.admission", XIAOMI);
    assert!(!admitted.is_empty());

    // A service that is no UUID is refused with its path.
    let bad = json!({"version": 3, "admission": {"allow": [{"service": "fcd"}]}});
    std::fs::write(&path, bad.to_string()).unwrap();
    let out = d.cli(&["policy", "apply", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("admission.allow[0].service"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_mqtt_rotate_bindkey_request_needs_a_key_and_never_echoes_it() {
    use fieldgate::upstream::requests::{parse, Request};
    let p = parse(
        "rotate_bindkey",
        format!(
            r#"{{"correlation_id":"r1","device":"{ENCRYPTED}","bindkey":"{}"}}"#,
            KEY.to_uppercase()
        )
        .as_bytes(),
    );
    match p.request {
        Ok(Request::RotateBindkey { device, bindkey }) => {
            assert_eq!(device.as_str(), ENCRYPTED);
            assert_eq!(&bindkey.0[..], KEY.as_bytes());
        }
        other => panic!("{other:?}"),
    }
    let p = parse(
        "rotate_bindkey",
        format!(r#"{{"correlation_id":"r2","device":"{ENCRYPTED}"}}"#).as_bytes(),
    );
    assert_eq!(p.request.unwrap_err().code, "invalid_bindkey");
    let bad = "231d39c1d7cc1ab1aee224cd096db9zz";
    let p = parse(
        "rotate_bindkey",
        format!(r#"{{"correlation_id":"r3","device":"{ENCRYPTED}","bindkey":"{bad}"}}"#).as_bytes(),
    );
    let e = p.request.unwrap_err();
    assert_eq!(e.code, "invalid_bindkey");
    assert!(!e.message.contains(bad));
}
