//! The policy guarantees hold whether the uplink is up or down. One scenario, run
//! twice against the real daemon on the Zigbee emulator (over a PTY): once with the
//! broker running, once with the broker configured but stopped (nothing listens on
//! its port) until the end, when it is started and everything queued must arrive.
//!
//! Each run shares one daemon across its checks: denied devices (by address and by
//! model) are told to leave and audited; a quarantined plug refuses commands until a
//! compliant firmware releases it; a local rule fires once per crossing, with
//! hysteresis; a held request for a sleeping device is answered
//! `device_decommissioned` when the device is removed; unsigned and tampered
//! policies are refused while a key is pinned; and no secret (master key, network
//! key, install code, policy signing key) reaches a log line, a payload or the audit log.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{fieldgate, stderr, stdout};
use crate::mqtt::device_requests::{dev, Site, SiteConfig};
use crate::mqtt::{broker, free_port, until, Proxy};
use fieldgate::store;
use fieldgate_zigbee::emulator::{DeviceKind, Fault};
use fieldgate_zigbee::zcl::ZclValue;
use fieldgate_zigbee::IeeeAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uplink {
    Running,
    Stopped,
}

/// A second temperature sensor, on the deny list by its address.
const BANNED: IeeeAddr = IeeeAddr(0x00124b00_0a0000f1);
/// The install code example of the Zigbee Base Device Behavior spec (code + CRC).
const INSTALL_CODE: &str = "83FED3407A939723A5C639B26916D505C3B5";
const RULE: &str = "hot-toggles-plug";
const LONG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_guarantees_with_the_broker_running() {
    scenario(Uplink::Running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_guarantees_with_the_broker_stopped_then_started() {
    scenario(Uplink::Stopped).await;
}

/// What the gateway must publish: with the broker running each message is awaited on
/// the broker at once; with it stopped each is found waiting in the outbox, and
/// awaited on the broker (by its `msg_id`) once the broker has been started.
struct Published<'a> {
    site: &'a Site,
    uplink: Uplink,
    /// (what, topic, msg_id) of messages found in the outbox while the broker was down.
    waiting: Vec<(String, String, String)>,
}

impl<'a> Published<'a> {
    /// The message on `<prefix>/<topic>` whose JSON satisfies `pred`.
    async fn expect(&mut self, what: &str, topic: &str, pred: impl Fn(&Value) -> bool) -> Value {
        match self.uplink {
            Uplink::Running => {
                let full = format!("{}/{topic}", self.site.prefix);
                let find = |msgs: &[crate::mqtt::Msg]| {
                    msgs.iter()
                        .filter(|m| m.topic == full)
                        .map(|m| m.json())
                        .find(|v| pred(v))
                };
                self.site
                    .probe
                    .wait_for(what, LONG, |m| find(m).is_some())
                    .await;
                find(&self.site.probe.messages()).unwrap_or_default()
            }
            Uplink::Stopped => {
                let deadline = Instant::now() + LONG;
                let found = loop {
                    let c = store::open_reader(&self.site.daemon.db()).expect("db");
                    let rows = store::outbox::pending(&c, 0, 100_000).expect("outbox");
                    let hit = rows
                        .iter()
                        .filter(|r| r.topic == topic)
                        .filter_map(|r| serde_json::from_slice::<Value>(&r.payload).ok())
                        .find(|v| pred(v));
                    if let Some(v) = hit {
                        break v;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{what}: not in the outbox ({} rows)",
                        rows.len()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                let msg_id = found["msg_id"].as_str().expect("msg_id").to_string();
                assert!(
                    !self.site.probe.messages().iter().any(|m| m
                        .payload
                        .windows(msg_id.len())
                        .any(|w| w == msg_id.as_bytes())),
                    "{what}: published while the broker was stopped"
                );
                self.waiting
                    .push((what.to_string(), topic.to_string(), msg_id));
                found
            }
        }
    }

    /// With the broker stopped: every message found waiting arrives once it is up.
    async fn delivered_after_the_broker_returns(&self) {
        for (what, topic, msg_id) in &self.waiting {
            let full = format!("{}/{topic}", self.site.prefix);
            self.site
                .probe
                .wait_for(
                    &format!("{what} after the broker came back"),
                    Duration::from_secs(90),
                    |m| {
                        m.iter()
                            .any(|m| m.topic == full && m.json()["msg_id"] == msg_id.as_str())
                    },
                )
                .await;
        }
    }
}

fn write_json(path: &std::path::Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("json")).expect("write");
}

/// Signs `policy` with the key at `key` through the CLI.
fn sign(key: &std::path::Path, policy: &Value, dir: &std::path::Path, name: &str) -> Value {
    let bare = dir.join(format!("{name}.json"));
    write_json(&bare, policy);
    let out = fieldgate(&[
        "policy",
        "sign",
        "--key",
        key.to_str().expect("utf-8"),
        bare.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("signed envelope")
}

fn audit(site: &Site) -> Vec<store::audit::AuditRecord> {
    let c = store::open_reader(&site.daemon.db()).expect("db");
    store::audit::tail(&c, 10_000, None).expect("audit")
}

fn audited(site: &Site, action: &str, target: &str, outcome: &str) -> usize {
    audit(site)
        .iter()
        .filter(|r| r.action == action && r.target == target && r.outcome == outcome)
        .count()
}

async fn wait_audit(site: &Site, action: &str, target: &str, outcome: &str, n: usize) {
    let deadline = Instant::now() + LONG;
    while audited(site, action, target, outcome) < n {
        assert!(
            Instant::now() < deadline,
            "no {n} `{action}` `{outcome}` record(s) for {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn joined(site: &Site, ieee: IeeeAddr) -> bool {
    site.pty
        .sim
        .with(|e, _| e.device(ieee).is_some_and(|d| d.nwk.is_some()))
}

fn plug_on(site: &Site) -> bool {
    let ieee = DeviceKind::SmartPlug.default_ieee();
    site.pty
        .sim
        .with(|e, _| e.device(ieee).is_some_and(|d| d.is_on()))
}

async fn scenario(uplink: Uplink) {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = keys.path().join("signing.key");
    let out = fieldgate(&["policy", "keygen", "--out", key.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pubkey = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("policy_public_key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("public key printed")
        .to_string();
    let seed = std::fs::read_to_string(&key)
        .expect("key")
        .trim()
        .to_string();

    // "Stopped": a port nothing listens on; a proxy to the broker opens it at the end.
    let port = free_port();
    let mut devices: Vec<(DeviceKind, IeeeAddr)> = DeviceKind::ALL
        .iter()
        .map(|k| (*k, k.default_ieee()))
        .collect();
    devices.push((DeviceKind::TempHumidity, BANNED));
    let site = Site::start_config(SiteConfig {
        gateway: format!("policy_public_key = \"{pubkey}\"\n"),
        log_level: Some("trace".into()),
        broker_url: (uplink == Uplink::Stopped).then(|| format!("mqtt://127.0.0.1:{port}")),
        devices: Some(devices),
        ..Default::default()
    })
    .await;
    let mut published = Published {
        site: &site,
        uplink,
        waiting: Vec::new(),
    };
    let (th, plug, door, pir) = (
        dev(DeviceKind::TempHumidity),
        dev(DeviceKind::SmartPlug),
        dev(DeviceKind::ContactSensor),
        dev(DeviceKind::SleepySensor),
    );
    let banned = format!("zigbee:{BANNED}");
    let th_ieee = DeviceKind::TempHumidity.default_ieee();
    let plug_ieee = DeviceKind::SmartPlug.default_ieee();
    let dir = site.daemon.dir.path().to_path_buf();

    let upstream_state = || {
        let out = site.daemon.cli(&["status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["upstream"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    match uplink {
        Uplink::Running => {
            until("the uplink", LONG, || upstream_state() == "connected").await;
        }
        Uplink::Stopped => assert_ne!(upstream_state(), "connected"),
    }

    // A secret in play besides the master and network keys: an install code.
    let out = site
        .daemon
        .cli(&["install-code", "add", &th_ieee.to_string(), INSTALL_CODE]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Policy 1, signed: two denials, a firmware minimum, one rule.
    let v1 = json!({"version": 1,
        "admission": {"deny": [{"address": BANNED.to_string()}, {"model": "FG-DOOR01"}]},
        "firmware": [{"match": {"model": "FG-PLUG01"}, "min_version": "2.0.0"}],
        "rules": [{"id": RULE,
                   "when": {"device": th, "reading": "temperature", "op": ">", "value": 25.0, "hysteresis": 1.0},
                   "then": {"device": plug, "command": {"state": "toggle"}}}]});
    let signed_v1 = sign(&key, &v1, &dir, "v1");
    let v1_path = dir.join("v1.signed.json");
    write_json(&v1_path, &signed_v1);
    let out = site
        .daemon
        .cli(&["policy", "apply", v1_path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));

    // ---- admission: the denied devices join, are told to leave, and are audited.
    site.permit_join(30).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (p, t, d, s) = (
            site.device_json(&plug),
            site.device_json(&th),
            site.device_json(&door),
            site.device_json(&pir),
        );
        if p["lifecycle"] == "quarantined"
            && t["lifecycle"] == "active"
            && d["lifecycle"] == "decommissioned"
            && s["lifecycle"] == "active"
            && s["power_source"] == "battery"
            && audited(&site, "device.join", &banned, "refused") > 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not paired as the policy says: {p} {t} {d} {s}\n{}",
            site.daemon.log()
        );
        site.wake();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        site.device_json(&banned).is_null(),
        "a device denied at its join has no registry entry"
    );
    until("the denied devices left the emulated network", LONG, || {
        !joined(&site, BANNED) && !joined(&site, DeviceKind::ContactSensor.default_ieee())
    })
    .await;
    assert_eq!(audited(&site, "device.admission", &door, "refused"), 1);
    published
        .expect(
            "denied event (address)",
            &format!("device/{banned}/event"),
            |v| {
                v["data"]["event"] == "denied"
                    && v["data"]["radio"] == "zb0"
                    && v["data"]["reason"].as_str().is_some_and(|r| !r.is_empty())
            },
        )
        .await;
    published
        .expect(
            "denied event (model)",
            &format!("device/{door}/event"),
            |v| v["data"]["event"] == "denied",
        )
        .await;
    published
        .expect("audit of the denied join", "audit", |v| {
            v["type"] == "audit"
                && v["data"]["action"] == "device.join"
                && v["data"]["target"] == banned.as_str()
                && v["data"]["outcome"] == "refused"
        })
        .await;
    published
        .expect("audit of the denied admission", "audit", |v| {
            v["data"]["action"] == "device.admission"
                && v["data"]["target"] == door.as_str()
                && v["data"]["outcome"] == "refused"
        })
        .await;

    // ---- quarantine: commands refused (CLI; MQTT with the broker up) until released.
    published
        .expect("quarantined event", &format!("device/{plug}/event"), |v| {
            v["data"]["event"] == "quarantined"
                && v["data"]["firmware"] == "1.2.3"
                && v["data"]["min_version"] == "2.0.0"
        })
        .await;
    let out = site.daemon.cli(&["set", &plug, "on"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("quarantined"), "{}", stderr(&out));
    if uplink == Uplink::Running {
        site.request(
            "set",
            json!({"correlation_id": "q-set", "device": plug, "state": {"on": true}}),
            false,
        )
        .await;
        let r = site.response("q-set", "error", LONG).await;
        assert_eq!(r["error"]["code"], "device_quarantined", "{r}");
    }
    let refused = if uplink == Uplink::Running { 2 } else { 1 };
    assert_eq!(audited(&site, "device.command", &plug, "refused"), refused);
    assert!(!plug_on(&site), "a quarantined plug was switched");

    // The plug is updated to a compliant firmware and rejoins: released.
    site.pty
        .sim
        .with(|e, _| e.set_attribute(plug_ieee, 0x0000, 0x4000, ZclValue::char_str("2.1.0")));
    site.pty.sim.inject(Fault::DeviceLeaves(plug_ieee));
    wait_audit(&site, "device.leave", &plug, "accepted", 1).await;
    site.permit_join(30).await;
    until("the plug released", LONG, || {
        let p = site.device_json(&plug);
        p["lifecycle"] == "active" && p["firmware"] == "2.1.0"
    })
    .await;
    assert_eq!(audited(&site, "device.release", &plug, "accepted"), 1);
    published
        .expect("released event", &format!("device/{plug}/event"), |v| {
            v["data"]["event"] == "released" && v["data"]["firmware"] == "2.1.0"
        })
        .await;
    let out = site.daemon.cli(&["set", &plug, "on"]);
    assert!(out.status.success(), "{}", stderr(&out));
    until("the plug on", LONG, || plug_on(&site)).await;
    if uplink == Uplink::Running {
        site.request(
            "set",
            json!({"correlation_id": "r-set", "device": plug, "state": {"on": true}}),
            false,
        )
        .await;
        site.response("r-set", "ok", LONG).await;
    }

    // ---- a local rule: once per crossing, hysteresis 1 °C around 25 °C.
    let rule_fired = || audited(&site, "rule.fire", RULE, "accepted");
    let before = audit(&site).len();
    for (centi, firings, on) in [
        (2600, 1, false), // crosses: fires, the plug toggles off
        (2650, 1, false), // still above
        (2450, 1, false), // below 25 but inside the hysteresis: still active
        (2550, 1, false), // above 25 again, but it never went past the hysteresis
        (2350, 1, false), // below 24: re-armed, does not fire
        (2610, 2, true),  // crosses again: fires, the plug toggles on
        (2700, 2, true),
    ] {
        assert!(
            site.pty
                .sim
                .with(|e, now| e.report_temperature(now, th_ieee, centi)),
            "the sensor could not report"
        );
        let want = f64::from(centi) / 100.0;
        until(&format!("{want} °C recorded"), LONG, || {
            site.device_json(&th)["last_state"]["temperature"].as_f64() == Some(want)
        })
        .await;
        until(&format!("{firings} firing(s) at {want} °C"), LONG, || {
            rule_fired() >= firings
        })
        .await;
        let deadline = Instant::now() + LONG;
        while plug_on(&site) != on && rule_fired() == firings {
            assert!(
                Instant::now() < deadline,
                "the plug never switched at {want} °C"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(rule_fired(), firings, "at {want} °C");
        assert_eq!(plug_on(&site), on, "at {want} °C");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fired: Vec<_> = audit(&site)
        .into_iter()
        .skip(before)
        .filter(|r| r.action == "rule.fire")
        .collect();
    assert_eq!(fired.len(), 2, "{fired:?}");
    for (r, trigger) in fired.iter().zip([26.0, 26.1]) {
        assert_eq!(r.outcome, "accepted", "{r:?}");
        assert_eq!(r.details["target"], plug.as_str());
        assert_eq!(r.details["trigger_value"].as_f64(), Some(trigger), "{r:?}");
        assert!(r.details["command_id"].is_string(), "{r:?}");
    }
    for trigger in [26.0, 26.1] {
        published
            .expect(
                &format!("rule_fired event at {trigger}"),
                &format!("device/{plug}/event"),
                |v| {
                    v["data"]["event"] == "rule_fired"
                        && v["data"]["rule"] == RULE
                        && v["data"]["sent"] == true
                        && v["data"]["detail"]["trigger_value"].as_f64() == Some(trigger)
                },
            )
            .await;
        published
            .expect(&format!("rule.fire audit at {trigger}"), "audit", |v| {
                v["data"]["action"] == "rule.fire"
                    && v["data"]["details"]["trigger_value"].as_f64() == Some(trigger)
            })
            .await;
    }

    // ---- a request held for the sleeping sensor, then the sensor is removed.
    let request_id = match uplink {
        Uplink::Running => {
            site.request(
                "set",
                json!({"correlation_id": "held-1", "device": pir, "state": {"on": true}}),
                false,
            )
            .await;
            let q = site.response("held-1", "queued", LONG).await;
            q["data"]["request_id"].as_i64().expect("request id")
        }
        Uplink::Stopped => {
            let out = site.daemon.cli(&["set", &pir, "on", "--json"]);
            assert!(out.status.success(), "{}", stderr(&out));
            let v: Value = serde_json::from_slice(&out.stdout).expect("json");
            assert_eq!(v["status"], "queued", "{v}");
            v["request_id"].as_i64().expect("request id")
        }
    };
    let held = || {
        let c = store::open_reader(&site.daemon.db()).expect("db");
        c.query_row(
            "SELECT count(*) FROM device_requests WHERE device_id = ?1",
            [&pir],
            |r| r.get::<_, i64>(0),
        )
        .expect("held requests")
    };
    assert_eq!(held(), 1);
    let out = site.daemon.cli(&["remove", &pir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(held(), 0, "the held request was dropped");
    assert_eq!(audited(&site, "device.request", &pir, "failed"), 1);
    if uplink == Uplink::Running {
        let e = site.response("held-1", "error", LONG).await;
        assert_eq!(e["error"]["code"], "device_decommissioned", "{e}");
        assert_eq!(e["data"]["request_id"], request_id, "{e}");
    }
    published
        .expect(
            "the held request's answer",
            &format!("device/{pir}/event"),
            |v| {
                v["data"]["event"] == "request"
                    && v["data"]["request_id"] == request_id
                    && v["data"]["status"] == "error"
                    && v["data"]["code"] == "device_decommissioned"
            },
        )
        .await;
    // It slept through its leave request. It wakes: nothing is delivered to it, and
    // now that it listens it is told to leave again.
    let pir_ieee = DeviceKind::SleepySensor.default_ieee();
    assert!(joined(&site, pir_ieee));
    site.wake();
    until("the removed sensor left the network", LONG, || {
        !joined(&site, pir_ieee)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        audited(&site, "device.request", &pir, "accepted"),
        1,
        "only queued"
    );
    if uplink == Uplink::Running {
        assert_eq!(site.responses("held-1").len(), 2, "queued, then the error");
    }

    // ---- signatures: unsigned and tampered policies refused; policy 1 stays.
    let v2 = json!({"version": 2, "admission": {"max_join_window_s": 60}});
    let bare = dir.join("v2.json");
    write_json(&bare, &v2);
    let out = site
        .daemon
        .cli(&["policy", "apply", bare.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("signature is required"),
        "{}",
        stderr(&out)
    );
    let signed_v2 = sign(&key, &v2, &dir, "v2");
    let mut tampered = signed_v2.clone();
    tampered["policy"]["admission"]["max_join_window_s"] = json!(254);
    let tampered_path = dir.join("v2.tampered.json");
    write_json(&tampered_path, &tampered);
    let out = site
        .daemon
        .cli(&["policy", "apply", tampered_path.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    if uplink == Uplink::Running {
        site.request(
            "policy",
            json!({"correlation_id": "p-unsigned", "version": 2, "document": v2}),
            false,
        )
        .await;
        let r = site.response("p-unsigned", "error", LONG).await;
        assert_eq!(r["error"]["code"], "policy_refused", "{r}");
        site.request(
            "policy",
            json!({"correlation_id": "p-tampered", "version": 2,
                   "document": tampered["policy"], "signature": tampered["signature"]}),
            false,
        )
        .await;
        let r = site.response("p-tampered", "error", LONG).await;
        assert_eq!(r["error"]["code"], "policy_refused", "{r}");
    }
    let out = site.daemon.cli(&["policy", "show", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).expect("policy JSON");
    assert_eq!(
        (&shown["version"], &shown["signed"]),
        (&json!(1), &json!(true))
    );
    let refusals = audit(&site)
        .iter()
        .filter(|r| r.action == "policy.apply" && r.outcome == "refused")
        .count();
    assert_eq!(refusals, if uplink == Uplink::Running { 4 } else { 2 });
    // The signed one is accepted by the same door.
    match uplink {
        Uplink::Running => {
            site.request(
                "policy",
                json!({"correlation_id": "p-signed", "version": 2,
                       "document": signed_v2["policy"], "signature": signed_v2["signature"]}),
                false,
            )
            .await;
            let r = site.response("p-signed", "ok", LONG).await;
            assert_eq!(
                (&r["data"]["version"], &r["data"]["signed"]),
                (&json!(2), &json!(true))
            );
        }
        Uplink::Stopped => {
            let path = dir.join("v2.signed.json");
            write_json(&path, &signed_v2);
            let out = site
                .daemon
                .cli(&["policy", "apply", path.to_str().expect("utf-8")]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
    }

    // ---- the broker comes back: everything that waited is published.
    let _proxy = match uplink {
        Uplink::Running => None,
        Uplink::Stopped => {
            let proxy = Proxy::start_on(port, broker().socket()).await;
            published.delivered_after_the_broker_returns().await;
            until("the uplink", LONG, || upstream_state() == "connected").await;
            Some(proxy)
        }
    };

    // ---- no secret anywhere: the log (trace), what was published, the audit log.
    let master = std::fs::read_to_string(dir.join("state").join("master.key")).expect("master");
    let network_key = site
        .pty
        .sim
        .with(|e, _| e.active_key_info())
        .map(|k| hex::encode(k.key))
        .expect("network key");
    let log = site.daemon.log();
    assert!(log.len() > 10_000, "trace logging produced little");
    let payloads: String = site
        .probe
        .messages()
        .iter()
        .filter(|m| !m.topic.contains("/request/"))
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let audit_text: String = audit(&site)
        .iter()
        .map(|r| format!("{} {} {} {}", r.actor, r.action, r.target, r.details))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, text) in [
        ("log", &log),
        ("payloads", &payloads),
        ("audit", &audit_text),
    ] {
        let lower = text.to_ascii_lowercase();
        for (name, secret) in [
            ("master key", master.trim().to_ascii_lowercase()),
            ("network key", network_key.to_ascii_lowercase()),
            ("install code", INSTALL_CODE.to_ascii_lowercase()),
            ("policy signing key", seed.to_ascii_lowercase()),
        ] {
            assert!(
                !lower.contains(&secret[..16]),
                "the {name} is in the {what}"
            );
        }
    }
}
