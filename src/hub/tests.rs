use super::*;
use crate::config::Protocol;
use crate::model::{DeviceInfo, PowerSource, Reading, Value};
use crate::store::{Store, WriterOptions};

/// The hub decides nothing from the protocol; its tests use the first driver
/// compiled in, so the radio has capabilities (join window, credentials, backup).
fn protocol() -> Protocol {
    crate::radio::DRIVERS[0].protocol
}

const ADDR: &str = "0x00124b0001abcdef";

/// A running radio named `name` (the test protocol, these capabilities), with a command
/// queue of `depth`: its handle, the queue's other end and its state's sender (keep it).
fn radio_handle(
    name: &str,
    capabilities: Option<&'static crate::radio::Capabilities>,
    depth: usize,
) -> (
    RadioHandle,
    mpsc::Receiver<RadioCommand>,
    watch::Sender<RadioState>,
) {
    let (tx, rx) = mpsc::channel(depth);
    let (state_tx, state) = watch::channel(RadioState::Up);
    let handle = RadioHandle {
        name: name.into(),
        protocol: protocol(),
        port: crate::config::PortSpec::Sim(protocol()),
        capabilities,
        state,
        commands: Some(tx),
        counters: Default::default(),
    };
    (handle, rx, state_tx)
}

fn event(addr: &str, kind: DeviceEventKind) -> DeviceEvent {
    DeviceEvent {
        radio: "zb0".into(),
        protocol: protocol(),
        native_address: addr.into(),
        received_at: SystemTime::now(),
        kind,
        link: None,
    }
}

fn info(model: &str, firmware: &str) -> DeviceEventKind {
    DeviceEventKind::Interviewed(DeviceInfo {
        manufacturer: Some("LUMI".into()),
        model: Some(model.into()),
        firmware: Some(firmware.into()),
        power_source: Some(PowerSource::Battery),
        capabilities: vec!["temperature".into()],
        reachability: None,
        silence: None,
    })
}

fn reading(name: &str, value: Value) -> DeviceEventKind {
    DeviceEventKind::Readings(vec![Reading {
        name: name.into(),
        value,
        unit: None,
    }])
}

// Fields drop in order: the hub (holding a writer handle) before the store,
// whose drop waits for every writer handle to go.
struct Rig {
    hub: Option<Hub>,
    store: Store,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
    let (mut hub, _, _) = Hub::new("gw", store.writer(), &[]);
    hub.join_windows
        .insert("zb0".into(), Instant::now() + Duration::from_secs(60));
    Rig {
        hub: Some(hub),
        store,
        _dir: dir,
    }
}

impl Rig {
    async fn events(&mut self, evs: Vec<DeviceEvent>) -> Vec<Notice> {
        let hub = self.hub.as_mut().unwrap();
        let mut rx = hub.notices.subscribe();
        hub.on_events(evs).await;
        let mut out = Vec::new();
        while let Ok(n) = rx.try_recv() {
            out.push(n);
        }
        out
    }

    fn device(&self, addr: &str) -> registry::Device {
        let r = self.store.reader().unwrap();
        registry::get(&r, &DeviceId::new(protocol(), addr))
            .unwrap()
            .unwrap()
    }

    async fn policy(&mut self, doc: serde_json::Value) -> Result<PolicyApplied, HubError> {
        self.hub
            .as_mut()
            .unwrap()
            .apply_policy(doc.to_string().as_bytes(), "test", "test")
            .await
    }
}

#[tokio::test]
async fn a_burst_merges_readings_per_device_in_event_order() {
    let mut rig = rig();
    rig.events(vec![
        event("0x0001", DeviceEventKind::Joined),
        event("0x0002", DeviceEventKind::Joined),
    ])
    .await;
    let reader = rig.store.reader().unwrap();
    let after = outbox::pending(&reader, 0, 10_000)
        .unwrap()
        .last()
        .unwrap()
        .seq;
    let notices = rig
        .events(vec![
            event("0x0001", reading("temperature", Value::Number(20.0))),
            event("0x0002", reading("battery", Value::Number(5.0))),
            event("0x0001", reading("humidity", Value::Number(40.0))),
            // Low twice in one burst: the flag is raised once.
            event("0x0002", reading("battery", Value::Number(4.0))),
            // Another kind of event for device 1 sees its readings so far.
            event("0x0001", DeviceEventKind::Left),
            event("0x0001", reading("temperature", Value::Number(21.0))),
        ])
        .await;
    let health: Vec<_> = notices
        .iter()
        .filter(|n| matches!(n, Notice::Health { flag, .. } if flag == "battery_low"))
        .collect();
    assert_eq!(health.len(), 1);
    let readings = notices
        .iter()
        .filter(|n| matches!(n, Notice::Readings { .. }))
        .count();
    assert_eq!(readings, 5);
    let rows = outbox::pending(&reader, after, 10_000).unwrap();
    let of = |kind: &str, dev: &str| -> Vec<serde_json::Value> {
        rows.iter()
            .filter(|r| r.kind == kind && r.topic.contains(dev))
            .map(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["data"].clone()
            })
            .collect()
    };
    // Every reading is its own telemetry message.
    assert_eq!(of("telemetry", "0x0001").len(), 3);
    assert_eq!(of("telemetry", "0x0002").len(), 2);
    // Device 1: its state before the `left` event, then the state at the end.
    assert_eq!(
        of("state", "0x0001"),
        [
            json!({"temperature": 20.0, "humidity": 40.0}),
            json!({"temperature": 21.0, "humidity": 40.0})
        ]
    );
    assert_eq!(of("state", "0x0002"), [json!({"battery": 4.0})]);
    // The state message for device 1 comes before the `left` lifecycle message.
    let pos = |pred: &dyn Fn(&outbox::OutboxRow) -> bool| rows.iter().position(pred).unwrap();
    assert!(
        pos(&|r| r.kind == "state" && r.topic.contains("0x0001"))
            < pos(&|r| r.kind == "lifecycle" && r.topic.contains("0x0001"))
    );
    assert_eq!(
        rig.device("0x0001").last_state,
        json!({"temperature": 21.0, "humidity": 40.0})
    );
    assert_eq!(rig.device("0x0002").health, json!({"battery_low": true}));

    // Seqs run on without gaps, in publish order.
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (after + 1..after + 1 + rows.len() as i64).collect::<Vec<_>>()
    );
    // Device 1's first two readings share a row (written before its `left`).
    let tele1: Vec<&outbox::OutboxRow> = rows
        .iter()
        .filter(|r| r.kind == "telemetry" && r.topic.contains("0x0001"))
        .collect();
    assert_eq!(tele1[0].row, tele1[1].row);
    assert_eq!(
        (tele1[0].row, tele1[0].row_last),
        (tele1[0].seq, tele1[1].seq)
    );
    let stored: i64 = reader
        .query_row("SELECT count(*) FROM outbox WHERE id > ?1", [after], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        stored < rows.len() as i64,
        "{stored} rows for {} messages",
        rows.len()
    );
    // Device 2: the reading that raised the flag, the flag, then the next reading.
    let battery = |v: f64| {
        pos(&|r| {
            r.kind == "telemetry"
                && serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["data"]
                    ["readings"][0]["value"]
                    == json!(v)
        })
    };
    let flag = pos(&|r| r.kind == "lifecycle" && r.topic.contains("0x0002"));
    assert!(battery(5.0) < flag && flag < battery(4.0));
    // Every reading notice names its own telemetry message.
    let mut told: Vec<i64> = notices
        .iter()
        .filter_map(|n| match n {
            Notice::Readings { outbox_seq, .. } => *outbox_seq,
            _ => None,
        })
        .collect();
    told.sort();
    let mut telemetry: Vec<i64> = rows
        .iter()
        .filter(|r| r.kind == "telemetry")
        .map(|r| r.seq)
        .collect();
    telemetry.sort();
    assert_eq!(told, telemetry);
}

#[tokio::test]
async fn a_failing_event_does_not_undo_its_burst_mates() {
    let mut rig = rig();
    rig.events(vec![
        event("0x0001", DeviceEventKind::Joined),
        event("0x0002", DeviceEventKind::Joined),
        event("0x0003", DeviceEventKind::Joined),
    ])
    .await;
    // Make every registry update of the middle device fail inside SQLite.
    rig.store
        .writer()
        .write(|c| {
            c.execute_batch(
                "CREATE TRIGGER refuse BEFORE UPDATE ON devices WHEN NEW.id = 'zigbee:0x0002'
                 BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let depth = |rig: &Rig| outbox::stats(&rig.store.reader().unwrap()).unwrap().depth;
    let before = depth(&rig);
    let notices = rig
        .events(vec![
            event("0x0001", reading("temperature", Value::Number(20.0))),
            event("0x0002", reading("temperature", Value::Number(21.0))),
            event("0x0003", reading("temperature", Value::Number(22.0))),
        ])
        .await;
    let readings: Vec<&str> = notices
        .iter()
        .filter_map(|n| match n {
            Notice::Readings { device, .. } => Some(device.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(readings, ["zigbee:0x0001", "zigbee:0x0003"]);
    assert_eq!(
        rig.device("0x0001").last_state,
        json!({"temperature": 20.0})
    );
    assert_eq!(
        rig.device("0x0003").last_state,
        json!({"temperature": 22.0})
    );
    assert_eq!(rig.device("0x0002").last_state, json!({}));
    // Telemetry and state for the two that succeeded, nothing for the failed one.
    assert_eq!(depth(&rig) - before, 4);
}

#[tokio::test]
async fn events_flow_into_registry_outbox_and_audit() {
    let mut rig = rig();
    rig.events(vec![
        event(ADDR, DeviceEventKind::Joined),
        event(ADDR, info("lumi.weather", "1.0")),
        event(ADDR, reading("temperature", Value::Number(21.5))),
    ])
    .await;
    let d = rig.device(ADDR);
    assert_eq!(d.lifecycle, "active");
    assert_eq!(d.model.as_deref(), Some("lumi.weather"));
    assert_eq!(d.last_state["temperature"], 21.5);
    let r = rig.store.reader().unwrap();
    let kinds: Vec<String> = outbox::pending(&r, 0, 100)
        .unwrap()
        .into_iter()
        .map(|m| m.kind)
        .collect();
    for k in ["telemetry", "lifecycle", "audit", "state", "availability"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    let hub = rig.hub.as_mut().unwrap();
    let id = DeviceId::new(protocol(), ADDR);
    let d = hub.decommission(&id, "test").await.unwrap();
    assert_eq!(d.device.lifecycle, "decommissioned");
    assert_eq!(
        hub.decommission(&id, "test").await.unwrap_err().code(),
        "already_decommissioned"
    );
    assert_eq!(
        hub.command(&id, DeviceCommand::On, "test")
            .await
            .unwrap_err()
            .code(),
        "device_decommissioned"
    );
    assert_eq!(
        permit_join(hub, "nope", 60)
            .await
            .await
            .unwrap()
            .unwrap_err()
            .code(),
        "unknown_radio"
    );
    assert!(store::audit::verify(&r).unwrap().ok);
}

/// A window sent to a radio busy with interviews is opened by it late: until the
/// radio says so it counts as open (joins it announces meanwhile are in the window),
/// and from then on for its whole length, not what was left of it.
#[tokio::test]
async fn a_window_the_radio_opens_late_is_open_until_then_and_its_whole_length_after() {
    let mut rig = rig();
    let hub = rig.hub.as_mut().unwrap();
    let sent_until = Instant::now() - Duration::from_millis(10);
    hub.join_windows.insert("zb0".into(), sent_until);
    hub.unconfirmed_windows.insert("zb0".into(), sent_until);
    assert!(hub.window_open("zb0"), "unconfirmed: open");
    let n = rig.events(vec![event(ADDR, DeviceEventKind::Joined)]).await;
    assert!(
        !n.iter().any(|x| matches!(x, Notice::Denied { .. })),
        "refused while the radio was opening its window: {n:?}"
    );
    let hub = rig.hub.as_mut().unwrap();
    hub.join_window_opened("zb0", sent_until, 5);
    assert!(hub.unconfirmed_windows.is_empty());
    assert!(
        hub.window_open("zb0"),
        "five seconds from the radio's answer"
    );
    // A radio that never opened it: closed at once.
    let hub = rig.hub.as_mut().unwrap();
    let until = Instant::now() + Duration::from_secs(1);
    hub.join_windows.insert("zb0".into(), until);
    hub.unconfirmed_windows.insert("zb0".into(), until);
    hub.join_window_not_opened("zb0", until);
    assert!(!hub.window_open("zb0"));
}

#[tokio::test]
async fn joining_outside_a_window_or_on_the_denylist_is_refused_and_removed() {
    let mut rig = rig();
    rig.hub.as_mut().unwrap().join_windows.clear();
    let n = rig.events(vec![event(ADDR, DeviceEventKind::Joined)]).await;
    assert!(
        matches!(&n[0], Notice::Denied { reason, .. } if reason.contains("outside a join window")),
        "{n:?}"
    );
    let r = rig.store.reader().unwrap();
    assert!(registry::get(&r, &DeviceId::new(protocol(), ADDR))
        .unwrap()
        .is_none());
    rig.hub
        .as_mut()
        .unwrap()
        .join_windows
        .insert("zb0".into(), Instant::now() + Duration::from_secs(60));
    rig.policy(json!({"version": 1, "admission": {"deny": [{"address": "0x00124b00000000*"}]}}))
        .await
        .unwrap();
    let n = rig
        .events(vec![event("0x00124b0000000001", DeviceEventKind::Joined)])
        .await;
    assert!(matches!(&n[0], Notice::Denied { .. }), "{n:?}");
    let audit = store::audit::tail(&r, 100, None).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.action == "device.join" && a.outcome == "refused")
            .count(),
        2
    );
    // The policy's refusal is also recorded under its own name.
    assert!(audit.iter().any(|a| a.action == "device.admission"
        && a.actor == "policy"
        && a.outcome == "refused"
        && a.target.ends_with("0x00124b0000000001")));
}

#[tokio::test]
async fn allowlist_decides_after_the_interview_and_firmware_quarantines() {
    let mut rig = rig();
    rig.policy(json!({"version": 1,
        "admission": {"mode": "allowlist", "allow": [{"manufacturer": "LUMI"}]},
        "firmware": [{"match": {"model": "plug*"}, "min_version": "2.0"}]}))
        .await
        .unwrap();
    rig.events(vec![event(ADDR, DeviceEventKind::Joined)]).await;
    assert_eq!(rig.device(ADDR).lifecycle, "pending");
    let n = rig.events(vec![event(ADDR, info("plug-1", "1.9"))]).await;
    assert!(
        n.iter().any(|n| matches!(n, Notice::Quarantined { .. })),
        "{n:?}"
    );
    assert_eq!(rig.device(ADDR).lifecycle, "quarantined");
    // Telemetry still flows from a quarantined device; commands are refused.
    rig.events(vec![event(ADDR, reading("power", Value::Number(5.0)))])
        .await;
    assert_eq!(rig.device(ADDR).last_state["power"], 5.0);
    let id = DeviceId::new(protocol(), ADDR);
    assert_eq!(
        rig.hub
            .as_mut()
            .unwrap()
            .command(&id, DeviceCommand::Off, "t")
            .await
            .unwrap_err()
            .code(),
        "device_quarantined"
    );
    // A compliant version releases it.
    let n = rig.events(vec![event(ADDR, info("plug-1", "2.1"))]).await;
    assert!(
        n.iter().any(|n| matches!(n, Notice::Released { .. })),
        "{n:?}"
    );
    assert_eq!(rig.device(ADDR).lifecycle, "active");
    // Someone else's device is denied once its manufacturer is known.
    rig.events(vec![event("0x2", DeviceEventKind::Joined)])
        .await;
    let other = DeviceEventKind::Interviewed(DeviceInfo {
        manufacturer: Some("ACME".into()),
        ..Default::default()
    });
    let n = rig.events(vec![event("0x2", other)]).await;
    assert!(
        n.iter().any(|n| matches!(n, Notice::Denied { .. })),
        "{n:?}"
    );
    assert_eq!(rig.device("0x2").lifecycle, "decommissioned");
}

#[tokio::test]
async fn rules_fire_once_per_crossing_and_are_audited() {
    let mut rig = rig();
    rig.events(vec![
        event("0x1", DeviceEventKind::Joined),
        event("0x2", DeviceEventKind::Joined),
    ])
    .await;
    rig.policy(json!({"version": 1, "rules": [{"id": "leak", "when": {"device": "zigbee:0x1", "reading": "water_leak", "op": "==", "value": true},
        "then": {"device": "zigbee:0x2", "command": {"state": "off"}}}]}))
        .await
        .unwrap();
    let mut fired = 0;
    for v in [false, true, true, false, true] {
        let n = rig
            .events(vec![event("0x1", reading("water_leak", Value::Bool(v)))])
            .await;
        fired += n
            .iter()
            .filter(|n| matches!(n, Notice::RuleFired { .. }))
            .count();
    }
    assert_eq!(fired, 2);
    let r = rig.store.reader().unwrap();
    let audit = store::audit::tail(&r, 1000, None).unwrap();
    // No radio runs in this rig, so each firing is audited as failed, with the reason.
    let firings: Vec<_> = audit.iter().filter(|a| a.action == "rule.fire").collect();
    assert_eq!(firings.len(), 2);
    assert!(firings
        .iter()
        .all(|a| a.outcome == "failed"
            && a.details["error"].as_str().unwrap().contains("not running")));
}

#[tokio::test]
async fn policies_must_be_newer_and_signed_when_a_key_is_pinned() {
    let mut rig = rig();
    let seed = [9u8; 32];
    let key = policy::parse_public_key(&policy::public_key_hex(&seed)).unwrap();
    let hub = rig.hub.take().unwrap().with_policy(None, Some(key));
    rig.hub = Some(hub);
    let doc = json!({"version": 2});
    assert_eq!(
        rig.policy(doc.clone()).await.unwrap_err().code(),
        "policy_refused"
    );
    let signed = serde_json::to_value(policy::sign(&doc, &seed)).unwrap();
    assert_eq!(rig.policy(signed.clone()).await.unwrap().version, 2);
    assert!(rig
        .policy(signed)
        .await
        .unwrap_err()
        .to_string()
        .contains("not newer"));
    let r = rig.store.reader().unwrap();
    assert_eq!(policies::active(&r).unwrap().unwrap().version, 2);
}

/// With no key pinned nothing can check a signature: a policy that carries one is
/// applied but not reported, audited or cached as signed, and a signature that is not
/// one (not 128 hex digits) is refused.
#[tokio::test]
async fn a_signature_no_pinned_key_checks_is_not_reported_as_signed() {
    let mut rig = rig();
    let doc = json!({"version": 2});
    let garbage = json!({"policy": doc, "signature": "zz"});
    assert_eq!(
        rig.policy(garbage).await.unwrap_err().code(),
        "policy_refused"
    );
    let signed = serde_json::to_value(policy::sign(&doc, &[9u8; 32])).unwrap();
    let applied = rig.policy(signed).await.unwrap();
    assert!(!applied.signed);
    let r = rig.store.reader().unwrap();
    let active = policies::active(&r).unwrap().unwrap();
    assert_eq!(active.version, 2);
    assert!(!active.signed);
    let details: String = r
        .query_row(
            "SELECT details FROM audit WHERE action = 'policy.apply' AND outcome = 'accepted'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(details.contains("\"signed\":false"), "{details}");
}

#[tokio::test]
async fn battery_low_and_silence_raise_health_flags() {
    let mut rig = rig();
    rig.events(vec![event(ADDR, DeviceEventKind::Joined)]).await;
    let n = rig
        .events(vec![event(ADDR, reading("battery", Value::Number(12.0)))])
        .await;
    assert!(
        n.iter().any(
            |n| matches!(n, Notice::Health { flag, raised: true, .. } if flag == "battery_low")
        ),
        "{n:?}"
    );
    assert_eq!(rig.device(ADDR).health["battery_low"], true);
    // Silent for longer than the timeout: offline.
    let w = rig.store.writer();
    w.write(|c| {
        c.execute(
            "UPDATE devices SET last_seen = '2020-01-01T00:00:00.000Z', power_source = 'mains'",
            [],
        )?;
        Ok(())
    })
    .await
    .unwrap();
    let hub = rig.hub.as_mut().unwrap();
    let mut rx = hub.notices.subscribe();
    hub.check_availability().await;
    assert!(matches!(
        rx.try_recv().unwrap(),
        Notice::Health { raised: true, .. }
    ));
    assert_eq!(rig.device(ADDR).health["offline"], true);
    let r = rig.store.reader().unwrap();
    let unhealthy = registry::list(
        &r,
        &registry::DeviceFilter {
            unhealthy: Some(true),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(unhealthy.len(), 1);
    // Still silent: nothing changes, nothing is said again.
    let hub = rig.hub.as_mut().unwrap();
    hub.check_availability().await;
    assert!(rx.try_recv().is_err());
    // Heard again (its battery flag still raised beside): back online.
    let now = rfc3339(SystemTime::now());
    w.write(move |c| {
        c.execute("UPDATE devices SET last_seen = ?1", [now])?;
        Ok(())
    })
    .await
    .unwrap();
    hub.check_availability().await;
    assert!(matches!(
        rx.try_recv().unwrap(),
        Notice::Health { raised: false, .. }
    ));
    let d = rig.device(ADDR);
    assert!(d.health.get("offline").is_none(), "{}", d.health);
    assert_eq!(d.health["battery_low"], true);
}

#[test]
fn rule_commands_map_to_device_commands() {
    assert_eq!(
        device_command_from_json(&json!({"state": "ON"})),
        Some(DeviceCommand::On)
    );
    assert_eq!(
        device_command_from_json(&json!({"level": 40})),
        Some(DeviceCommand::Level { percent: 40 })
    );
    assert_eq!(
        device_command_from_json(&json!({"action": "toggle"})),
        Some(DeviceCommand::Toggle)
    );
    assert_eq!(device_command_from_json(&json!({"level": 400})), None);
    assert_eq!(device_command_from_json(&json!({"colour": "red"})), None);
}

/// With bursts pipelined (several handed to the writer before the first commits),
/// every event is committed, each device's telemetry keeps the order its readings
/// came in, and the registry ends with each device's last reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_bursts_keep_every_event_and_each_devices_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
    let (mut hub, _handle, requests) = Hub::new("gw", store.writer(), &[]);
    hub.join_windows
        .insert("zb0".into(), Instant::now() + Duration::from_secs(60));
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let (shutdown, sd_rx) = watch::channel(false);
    let task = tokio::spawn(hub.run(rx, requests, sd_rx, None));
    let addrs = ["0x0001", "0x0002", "0x0003"];
    for a in addrs {
        tx.send(event(a, DeviceEventKind::Joined)).await.unwrap();
        tx.send(event(a, info("TH", "1.0"))).await.unwrap();
    }
    const N: usize = 20_000;
    for i in 0..N {
        let ev = event(addrs[i % 3], reading("n", Value::Number(i as f64)));
        tx.send(ev).await.unwrap();
    }
    shutdown.send(true).unwrap();
    task.await.unwrap();
    let reader = store.reader().unwrap();
    let mut per_device: HashMap<String, Vec<f64>> = HashMap::new();
    for row in outbox::pending(&reader, 0, 10 * N).unwrap() {
        if !row.topic.ends_with("/telemetry") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&row.payload).unwrap();
        for r in v["data"]["readings"].as_array().unwrap() {
            if r["name"] == "n" {
                per_device
                    .entry(row.topic.clone())
                    .or_default()
                    .push(r["value"].as_f64().unwrap());
            }
        }
    }
    assert_eq!(per_device.values().map(Vec::len).sum::<usize>(), N);
    for (topic, values) in &per_device {
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "{topic}: telemetry out of order"
        );
    }
    for (k, a) in addrs.iter().enumerate() {
        let d = registry::get(&reader, &DeviceId::new(protocol(), a))
            .unwrap()
            .unwrap();
        let last = (0..N).filter(|i| i % 3 == k).max().unwrap() as f64;
        assert_eq!(d.last_state["n"], serde_json::json!(last), "{a}");
    }
}

#[tokio::test]
async fn a_radio_learnt_silence_decides_availability_unless_the_policy_overrides_it() {
    let mut rig = rig();
    let with_silence = |silence| {
        DeviceEventKind::Interviewed(DeviceInfo {
            model: Some("beacon".into()),
            capabilities: vec!["format:ibeacon".into()],
            silence: Some(silence),
            ..Default::default()
        })
    };
    // Three devices silent since 2020: one whose radio learnt it is offline after a
    // minute, one that speaks only when something happens, one the policy names.
    for (addr, silence) in [
        ("0x1", crate::model::Silence::OfflineAfterMs(60_000)),
        ("0x2", crate::model::Silence::Expected),
        ("0x3", crate::model::Silence::OfflineAfterMs(60_000)),
    ] {
        rig.events(vec![
            event(addr, DeviceEventKind::Joined),
            event(addr, with_silence(silence)),
        ])
        .await;
    }
    assert_eq!(rig.device("0x1").offline_after_ms, Some(60_000));
    assert_eq!(rig.device("0x2").offline_after_ms, Some(0));
    rig.policy(json!({"version": 2, "health": {"overrides": [
        {"match": {"address": "0x3"}, "timeout": "3days"}]}}))
        .await
        .unwrap();
    rig.store
        .writer()
        .write(|c| {
            c.execute(
                "UPDATE devices SET last_seen = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days')",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    rig.hub.as_mut().unwrap().check_availability().await;
    assert_eq!(rig.device("0x1").health["offline"], true);
    assert!(rig.device("0x2").health.get("offline").is_none());
    // Two days silent, the override says three: not offline.
    assert!(rig.device("0x3").health.get("offline").is_none());
    let r = rig.store.reader().unwrap();
    let health: Vec<serde_json::Value> = outbox::pending(&r, 0, 10_000)
        .unwrap()
        .iter()
        .filter(|m| m.kind == "lifecycle" && m.topic.contains("0x1"))
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
        .map(|v| v["data"].clone())
        .filter(|d| d["event"] == "health")
        .collect();
    assert_eq!(health.last().unwrap()["timeout_s"], 60, "{health:?}");
}

/// Events trickling in a few milliseconds apart: with a linger they share
/// transactions (the writer commits far fewer times than there are events), without
/// one each is its own commit; every reading is recorded either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linger_gathers_a_trickle_of_events_into_few_commits() {
    async fn commits_for_trickle(linger: Duration) -> (u64, usize, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
        let (mut hub, _handle, requests) = Hub::new("gw", store.writer(), &[]);
        hub = hub.with_linger(linger);
        hub.join_windows
            .insert("zb0".into(), Instant::now() + Duration::from_secs(60));
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let (shutdown, sd_rx) = watch::channel(false);
        let task = tokio::spawn(hub.run(rx, requests, sd_rx, None));
        tx.send(event(ADDR, DeviceEventKind::Joined)).await.unwrap();
        tx.send(event(ADDR, info("TH", "1.0"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = store
            .writer()
            .stats()
            .transactions
            .load(std::sync::atomic::Ordering::Relaxed);
        const N: usize = 40;
        let trickle = Instant::now();
        for i in 0..N {
            tx.send(event(ADDR, reading("n", Value::Number(i as f64))))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let trickle = trickle.elapsed();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let commits = store
            .writer()
            .stats()
            .transactions
            .load(std::sync::atomic::Ordering::Relaxed)
            - before;
        shutdown.send(true).unwrap();
        task.await.unwrap();
        let reader = store.reader().unwrap();
        let telemetry = outbox::pending(&reader, 0, 10 * N)
            .unwrap()
            .iter()
            .filter(|row| row.topic.ends_with("/telemetry"))
            .count();
        (commits, telemetry, trickle)
    }
    let (lingering, recorded, took) = commits_for_trickle(Duration::from_millis(50)).await;
    assert_eq!(recorded, 40, "every reading is its own telemetry message");
    let (at_once, recorded, _) = commits_for_trickle(Duration::ZERO).await;
    assert_eq!(recorded, 40);
    // 40 events over >= 80 ms (longer on a loaded machine, so bounded by what the
    // trickle took): one commit per 50 ms window, against about one per event.
    let windows = (took.as_millis() / 50) as u64 + 2;
    assert!(
        lingering <= windows,
        "{lingering} commits with a 50 ms linger over {took:?}"
    );
    assert!(
        at_once > lingering,
        "{at_once} commits without a linger, {lingering} with one"
    );
}

#[tokio::test]
async fn a_join_the_radio_refused_itself_is_a_denial_with_the_registry_s_reason() {
    let mut rig = rig();
    rig.events(vec![
        event(ADDR, DeviceEventKind::Joined),
        event(ADDR, info("lumi.weather", "1.0")),
    ])
    .await;
    let id = DeviceId::new(protocol(), ADDR);
    rig.hub
        .as_mut()
        .unwrap()
        .decommission(&id, "test")
        .await
        .unwrap();
    let refused = |reason: &str| DeviceEventKind::Refused {
        what: "device.join".into(),
        reason: reason.into(),
        detail: "no keys for it".into(),
    };
    let n = rig.events(vec![event(ADDR, refused("no_keys"))]).await;
    assert!(
        matches!(&n[..], [Notice::Denied { device, reason }] if *device == id.to_string() && reason.starts_with("decommissioned")),
        "{n:?}"
    );
    // Another frame refused by the radio is audited, and is no denial.
    let n = rig
        .events(vec![event(
            ADDR,
            DeviceEventKind::Refused {
                what: "lorawan.frame".into(),
                reason: "bad_mic".into(),
                detail: "MIC".into(),
            },
        )])
        .await;
    assert!(n.is_empty(), "{n:?}");
    let r = rig.store.reader().unwrap();
    let audit = store::audit::tail(&r, 100, None).unwrap();
    let join = audit
        .iter()
        .find(|a| a.action == "device.join" && a.outcome == "refused")
        .expect("the refused join audited");
    assert!(join.details["reason"]
        .as_str()
        .unwrap()
        .starts_with("decommissioned"));
    assert_eq!(join.details["detail"], "no keys for it");
    assert!(audit
        .iter()
        .any(|a| a.action == "lorawan.frame" && a.details["reason"] == "bad_mic"));
}

/// Under light load a burst is handed over at most once per linger: a lone event
/// after a quiet spell goes at once, one that follows the previous hand-over sooner
/// waits out the rest of that linger; when the previous burst shows a pace that would
/// queue half a burst during a linger, it goes at once, so full load is not paced by
/// the linger.
#[tokio::test(start_paused = true)]
async fn a_burst_waits_out_the_linger_only_while_events_come_in_slowly() {
    let linger = Duration::from_millis(20);
    // (events the previous burst took, how long ago it started gathering, how long
    // ago it was handed over, how long this one waits)
    for (previous, ago_ms, handed_ms, waits_ms) in [
        (0, 1000, 1000, 0),
        (1, 3000, 3000, 0),
        (30, 25, 5, 15),
        (3, 40, 20, 0),
        (BUSY_IN_A_LINGER - 1, 20, 0, 20),
        (BUSY_IN_A_LINGER, 20, 0, 0),
        (2000, 5, 0, 0),
        (2000, 2000, 1990, 0),
    ] {
        let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
        for i in 0..3 {
            tx.send(event(ADDR, reading("n", Value::Number(i as f64))))
                .await
                .unwrap();
        }
        let now = tokio::time::Instant::now();
        let mut pace = Pace {
            since: now - Duration::from_millis(ago_ms),
            events: previous,
            handed: Some(now - Duration::from_millis(handed_ms)),
        };
        let mut batch = Vec::new();
        gather(&mut rx, &mut batch, linger, &mut pace).await;
        assert_eq!(batch.len(), 3);
        assert_eq!(
            now.elapsed(),
            Duration::from_millis(waits_ms),
            "{previous} events {ago_ms} ms ago, handed over {handed_ms} ms ago"
        );
        assert_eq!(
            (pace.since, pace.events, pace.handed),
            (now, 3, Some(now + Duration::from_millis(waits_ms)))
        );
    }
}

/// With `[store] state_interval`, a device reporting faster than the interval gets
/// every reading as telemetry at once but one retained state per interval: the first
/// at once, then the state after the last reading when the interval has passed, in
/// seq order after those readings. A state still waiting when the hub stops is
/// queued before it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_s_state_is_queued_at_most_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
    let run = |interval: Duration| {
        let (mut hub, _handle, requests) = Hub::new("gw", store.writer(), &[]);
        hub = hub.with_state_interval(interval);
        hub.join_windows
            .insert("zb0".into(), Instant::now() + Duration::from_secs(60));
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let (shutdown, sd_rx) = watch::channel(false);
        (
            tx,
            shutdown,
            tokio::spawn(hub.run(rx, requests, sd_rx, None)),
        )
    };
    // (seq, data) of the queued messages whose topic ends so.
    let queued = |suffix: &str| -> Vec<(i64, serde_json::Value)> {
        outbox::pending(&store.reader().unwrap(), 0, 1000)
            .unwrap()
            .iter()
            .filter(|row| row.topic.ends_with(suffix))
            .map(|row| {
                let v: serde_json::Value = serde_json::from_slice(&row.payload).unwrap();
                (row.seq, v["data"].clone())
            })
            .collect()
    };
    let states = || queued("/state");
    let telemetry_seqs = || -> Vec<i64> {
        queued("/telemetry")
            .into_iter()
            .map(|(seq, _)| seq)
            .collect()
    };
    let (tx, shutdown, task) = run(Duration::from_millis(400));
    tx.send(event(ADDR, DeviceEventKind::Joined)).await.unwrap();
    tx.send(event(ADDR, info("TH", "1.0"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let before = states().len();
    for (name, v) in [("t", 1.0), ("h", 50.0), ("t", 2.0)] {
        tx.send(event(ADDR, reading(name, Value::Number(v))))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let early = states();
    assert_eq!(
        early.len(),
        before + 1,
        "only the first reading's state at once"
    );
    assert_eq!(early.last().unwrap().1, json!({"t": 1.0}));
    assert_eq!(
        telemetry_seqs().len(),
        3,
        "every reading is telemetry at once"
    );
    // Due 400 ms after the first; queued after a further grace of 250 ms at most
    // (the device's next reading would have taken it along).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let late = states();
    assert_eq!(late.len(), before + 2, "{late:?}");
    let (seq, state) = late.last().unwrap();
    assert_eq!(state, &json!({"h": 50.0, "t": 2.0}));
    assert!(
        telemetry_seqs().iter().all(|t| t < seq),
        "the state follows the readings it holds"
    );
    // A reading whose state waits when the hub stops: queued before it stops.
    tx.send(event(ADDR, reading("t", Value::Number(3.0))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    tx.send(event(ADDR, reading("t", Value::Number(4.0))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    shutdown.send(true).unwrap();
    task.await.unwrap();
    let stopped = states();
    assert_eq!(
        stopped.last().unwrap().1,
        json!({"h": 50.0, "t": 4.0}),
        "{stopped:?}"
    );
    let reader = store.reader().unwrap();
    let waiting: i64 = reader
        .query_row(
            "SELECT count(*) FROM devices WHERE state_due_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(waiting, 0);
    // A state left waiting by a crash (the column set, nothing queued) is queued
    // when the hub starts again, whatever its interval now.
    store
        .writer()
        .write(|c| {
            c.execute(
                "UPDATE devices SET last_state = '{\"t\":9}', state_due_ms = 1",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let (_tx, shutdown, task) = run(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(states().last().unwrap().1, json!({"t": 9}));
    shutdown.send(true).unwrap();
    task.await.unwrap();
}

/// The nodes a Z-Wave controller already had are described by the driver at start,
/// before they joined here or spoke: each is registered as pending with what the radio
/// knows of it (manufacturer, model, how it is reached), not dropped, so a node first
/// heard later, or adopted by a technician, keeps its description. It stays pending
/// until a join window or a technician admits it, and the policy sees its description.
#[tokio::test]
async fn a_device_described_before_it_spoke_is_pending_with_its_description() {
    let mut rig = rig();
    rig.hub.as_mut().unwrap().join_windows.clear();
    // Only how it is reached (what the driver knows before the interview): not yet.
    let reach = DeviceEventKind::Interviewed(DeviceInfo {
        reachability: Some(crate::model::Reachability::WakeUp),
        ..Default::default()
    });
    rig.events(vec![event(ADDR, reach)]).await;
    let r = rig.store.reader().unwrap();
    assert!(registry::get(&r, &DeviceId::new(protocol(), ADDR))
        .unwrap()
        .is_none());
    let n = rig.events(vec![event(ADDR, info("sensor-1", "1.0"))]).await;
    assert!(
        n.iter().any(
            |n| matches!(n, Notice::DeviceInterviewed { model: Some(m), .. } if m == "sensor-1")
        ),
        "{n:?}"
    );
    let d = rig.device(ADDR);
    assert_eq!(d.lifecycle, "pending");
    assert_eq!(d.manufacturer.as_deref(), Some("LUMI"));
    assert_eq!(d.model.as_deref(), Some("sensor-1"));
    assert_eq!(d.firmware.as_deref(), Some("1.0"));
    // Its readings land on the described device, which stays pending.
    rig.events(vec![event(
        ADDR,
        reading("temperature", Value::Number(20.0)),
    )])
    .await;
    let d = rig.device(ADDR);
    assert_eq!(d.model.as_deref(), Some("sensor-1"));
    assert_eq!(d.lifecycle, "pending");
    // A policy that denies the manufacturer keeps such a device out of the registry.
    rig.policy(json!({"version": 1, "admission": {"deny": [{"manufacturer": "LUMI"}]}}))
        .await
        .unwrap();
    let n = rig
        .events(vec![event("0x2", info("sensor-1", "1.0"))])
        .await;
    assert!(
        n.iter().any(|n| matches!(n, Notice::Denied { .. })),
        "{n:?}"
    );
    assert!(registry::get(&r, &DeviceId::new(protocol(), "0x2"))
        .unwrap()
        .is_none());
}

/// A held request whose time has run out when its device wakes is answered `expired`
/// then, not sent: the periodic expiry runs only about once a second, and a wake-up
/// in between must not deliver it late.
#[tokio::test]
async fn a_held_request_past_its_time_at_the_wake_up_expires_instead_of_going_out() {
    let mut rig = rig();
    rig.events(vec![event(ADDR, DeviceEventKind::Joined)]).await;
    let id = DeviceId::new(protocol(), ADDR);
    let command = json!({"on": true});
    rig.store
        .writer()
        .write({
            let id = id.clone();
            move |c| {
                crate::store::requests::insert(
                    c,
                    &crate::store::requests::NewRequest {
                        device: &id,
                        correlation_id: Some("late"),
                        operation: "set",
                        command: &command,
                        origin: "mqtt",
                        actor: "mqtt:cloud",
                        expires: SystemTime::now() - Duration::from_millis(200),
                        reply_to: None,
                    },
                )
                .map(|_| ())
            }
        })
        .await
        .unwrap();
    rig.hub.as_mut().unwrap().dispatch_held(id.as_str()).await;
    let r = rig.store.reader().unwrap();
    assert!(crate::store::requests::all(&r).unwrap().is_empty());
    let statuses: Vec<String> = r
        .prepare("SELECT details FROM audit WHERE action = 'device.request' ORDER BY seq")
        .unwrap()
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        statuses
            .iter()
            .any(|d| d.contains("\"status\":\"expired\"")),
        "{statuses:?}"
    );
    assert!(
        !statuses.iter().any(|d| d.contains("\"status\":\"sent\"")),
        "{statuses:?}"
    );
}

/// Asks `hub` to open a join window on `radio` as a test; the answer comes on the
/// receiver once the radio has answered.
async fn permit_join(
    hub: &mut Hub,
    radio: &str,
    seconds: u32,
) -> oneshot::Receiver<Result<PermitJoinAccepted, HubError>> {
    let (tx, rx) = oneshot::channel();
    hub.permit_join(radio.into(), seconds, "test".into(), tx)
        .await;
    rx
}

mod configuration;
mod lifecycle;
mod radio_commands;
