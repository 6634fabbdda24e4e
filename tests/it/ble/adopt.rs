//! Technician adoption of discovered BLE devices (`fieldgate adopt`, `POST
//! /v1/devices/{id}/adopt`, the MQTT `adopt` op): the encrypted sensor adopted with its
//! bindkey read from standard input and a plain one without a key; their readings then
//! reach the outbox; the key is in no answer, audit record, log or plaintext in the
//! store; what cannot be adopted is refused with the reason.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{device, radio, wait_for, ENCRYPTED, RUUVI};
use crate::common::{stderr, stdout, TestDaemon};
use fieldgate::store::{self, credentials, outbox};
use fieldgate::upstream::requests::{parse, Request};

const KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";

/// `fieldgate adopt ARGS` with `input` on standard input.
fn adopt_with_stdin(d: &TestDaemon, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(crate::common::bin())
        .arg("--socket")
        .arg(&d.socket)
        .arg("adopt")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fieldgate adopt");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn telemetry_queued(d: &TestDaemon, address: &str) -> bool {
    queued(d, "telemetry", address)
}

fn queued(d: &TestDaemon, kind: &str, address: &str) -> bool {
    let c = store::open_reader(&d.db()).unwrap();
    outbox::pending(&c, 0, 100_000)
        .unwrap()
        .iter()
        .any(|r| r.kind == kind && r.topic.contains(address))
}

#[test]
fn a_technician_adopts_discovered_sensors_and_their_readings_go_upstream() {
    let d = TestDaemon::start(&radio(
        "ble0",
        "sim://ble",
        "min_interval = \"1s\"\nsim_speed = 5\nsim_faults = false",
    ));
    wait_for(
        &d,
        Duration::from_secs(30),
        "both sensors discovered",
        || {
            device(&d, ENCRYPTED).is_some_and(|x| x.model.is_some())
                && device(&d, RUUVI).is_some_and(|x| x.model.is_some())
        },
    );
    assert_eq!(device(&d, ENCRYPTED).unwrap().lifecycle, "pending");
    assert!(!telemetry_queued(&d, "54:48:e6:8f:80:a5"));
    // Nor its state (a retained message: a passer-by's readings would stay on the
    // broker), though the registry has it for the technician.
    assert!(
        !queued(&d, "state", "cb:b8:33:4c:88:4f"),
        "a pending device's state went upstream"
    );
    // Nor a retained availability for every passer-by.
    assert!(
        !queued(&d, "availability", "cb:b8:33:4c:88:4f"),
        "a pending device's availability went upstream"
    );
    assert!(
        device(&d, RUUVI).is_some_and(|x| x.last_state.as_object().is_some_and(|o| !o.is_empty()))
    );

    // The encrypted sensor, with its bindkey from standard input.
    let out = adopt_with_stdin(&d, &[ENCRYPTED, "--bindkey", "-", "--json"], KEY);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_str(&stdout(&out)).expect("JSON answer");
    assert_eq!(answer["device"], ENCRYPTED);
    assert_eq!(answer["lifecycle"], "active");
    assert_eq!(answer["bindkey"], "stored encrypted");
    let radios = answer["radios"].as_array().expect("radios");
    assert!(
        radios
            .iter()
            .any(|r| r["radio"] == "ble0" && r["ok"] == true),
        "{answer}"
    );
    assert!(!stdout(&out).contains(KEY) && !stderr(&out).contains(KEY));

    // The plain Ruuvi tag, without a key.
    let out = d.cli(&["adopt", RUUVI]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("adopted (active)"),
        "{}",
        stdout(&out)
    );

    assert_eq!(device(&d, ENCRYPTED).unwrap().lifecycle, "active");
    assert_eq!(device(&d, RUUVI).unwrap().lifecycle, "active");
    // Adopted: the state it had goes out at once.
    assert!(
        queued(&d, "state", "cb:b8:33:4c:88:4f"),
        "no state at adoption"
    );
    assert!(
        queued(&d, "availability", "cb:b8:33:4c:88:4f"),
        "no availability at adoption"
    );
    wait_for(
        &d,
        Duration::from_secs(30),
        "both sensors' telemetry",
        || telemetry_queued(&d, "54:48:e6:8f:80:a5") && telemetry_queued(&d, "cb:b8:33:4c:88:4f"),
    );

    let c = store::open_reader(&d.db()).unwrap();
    // The key is stored as the device's credential, sealed: not in the database's bytes.
    assert!(credentials::exists(&c, ENCRYPTED, "bthome_bindkey").unwrap());
    assert!(!credentials::exists(&c, RUUVI, "bthome_bindkey").unwrap());
    let raw = std::fs::read(d.db()).unwrap();
    assert!(!raw.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
    // An `adopted` lifecycle event went upstream.
    let rows = outbox::pending(&c, 0, 100_000).unwrap();
    assert!(rows.iter().any(|r| r.kind == "lifecycle"
        && r.topic.contains("54:48:e6:8f:80:a5")
        && String::from_utf8_lossy(&r.payload).contains("adopted")));
    // Audited with the actor, never the key.
    let records = store::audit::tail(&c, 100_000, None).unwrap();
    let adoptions: Vec<_> = records
        .iter()
        .filter(|r| r.action == "device.adopt")
        .collect();
    assert_eq!(adoptions.len(), 2, "{adoptions:?}");
    let enc = adoptions.iter().find(|r| r.target == ENCRYPTED).unwrap();
    assert_eq!(enc.outcome, "accepted");
    assert!(enc.actor.starts_with("local:"), "{}", enc.actor);
    for r in &records {
        assert!(!r.details.to_string().contains(KEY), "{r:?}");
    }
    assert!(store::audit::verify(&c).unwrap().ok);
    assert!(!d.log().contains(KEY));

    // Refusals, each with its reason, each audited.
    let refused = |args: &[&str], needle: &str| {
        let out = d.cli(args);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    };
    refused(&["adopt", ENCRYPTED], "already active");
    // An advertiser takes no commands: refused at once, not queued until it speaks.
    refused(&["set", RUUVI, "on"], "take no commands");
    refused(&["adopt", "ble:11:22:33:44:55:66"], "unknown_device");
    refused(&["adopt", "zigbee:0x00124b0001abcdef"], "join window");
    refused(&["adopt", RUUVI, "--bindkey", "00112233"], "32 hex digits");
    // Decommissioned: re-admit first.
    assert!(d.cli(&["remove", RUUVI]).status.success());
    refused(&["adopt", RUUVI], "fieldgate readmit");
    let c = store::open_reader(&d.db()).unwrap();
    let refusals = store::audit::tail(&c, 100_000, None)
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "device.adopt" && r.outcome == "refused")
        .count();
    assert_eq!(refusals, 5);
}

#[test]
fn the_mqtt_adopt_request_parses_strictly_without_echoing_the_key() {
    let p = parse(
        "adopt",
        format!(
            r#"{{"correlation_id":"c1","device":"{ENCRYPTED}","bindkey":"{}"}}"#,
            KEY.to_uppercase()
        )
        .as_bytes(),
    );
    match p.request {
        Ok(Request::Adopt { device, bindkey }) => {
            assert_eq!(device.as_str(), ENCRYPTED);
            assert_eq!(&bindkey.unwrap().0[..], KEY.as_bytes());
        }
        other => panic!("{other:?}"),
    }
    let p = parse(
        "adopt",
        format!(r#"{{"correlation_id":"c2","device":"{RUUVI}"}}"#).as_bytes(),
    );
    assert!(matches!(
        p.request,
        Ok(Request::Adopt { bindkey: None, .. })
    ));
    let bad = "231d39c1d7cc1ab1aee224cd096db9zz";
    let p = parse(
        "adopt",
        format!(r#"{{"correlation_id":"c3","device":"{RUUVI}","bindkey":"{bad}"}}"#).as_bytes(),
    );
    let e = p.request.unwrap_err();
    assert_eq!(e.code, "invalid_bindkey");
    assert!(!e.message.contains(bad));
    let p = parse(
        "adopt",
        format!(r#"{{"correlation_id":"c4","device":"{RUUVI}","bindkey":7}}"#).as_bytes(),
    );
    assert_eq!(p.request.unwrap_err().code, "invalid_request");
    let p = parse(
        "adopt",
        br#"{"correlation_id":"c5","device":"ble:x","key":"00"}"#,
    );
    assert!(p.request.is_err());
}

#[test]
fn the_demo_adopts_the_encrypted_sensor_and_queues_its_readings() {
    let out = crate::common::fieldgate(&["demo", "--duration", "15s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let adopted = text
        .find("ble:54:48:e6:8f:80:a5 adopted (bindkey stored encrypted)")
        .unwrap_or_else(|| panic!("not adopted in:\n{text}"));
    // After the adoption its readings are queued for upstream.
    assert!(
        text[adopted..]
            .lines()
            .any(|l| l.contains("ble:54:48:e6:8f:80:a5: temperature=") && l.contains("-> outbox #")),
        "{text}"
    );
    assert!(!text.contains(KEY));
}
