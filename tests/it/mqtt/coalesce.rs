//! Retained state under a backlog: a device's state messages still waiting in the
//! outbox collapse to the newest one, while every telemetry reading is delivered.

use std::collections::HashSet;
use std::time::Duration;

use fieldgate::model::DeviceEventKind;
use fieldgate::upstream::ConnectionState;

use super::{broker, fast, reading, until, Probe, Proxy, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_queued_in_an_outage_collapse_to_the_last_and_no_reading_is_lost() {
    const READINGS: usize = 300;
    let b = broker();
    let proxy = Proxy::start(b.socket(), None).await;
    let rig = Rig::start(&format!("mqtt://127.0.0.1:{}", proxy.port), "", fast()).await;
    let probe = Probe::connect(b, &[rig.filter()]).await;
    rig.connected().await;
    let device = "zigbee:0x0c01";
    rig.send("0x0c01", DeviceEventKind::Joined).await;
    rig.send("0x0c01", reading(-1.0)).await;
    probe
        .wait_for("the first state", Duration::from_secs(10), |m| {
            m.iter().any(|m| m.topic.ends_with("/state"))
        })
        .await;
    until("the outbox to drain", Duration::from_secs(10), || {
        rig.outbox_depth() == 0
    })
    .await;
    let before = probe.on("/state").last().expect("a state").json()["seq"]
        .as_i64()
        .expect("seq");

    proxy.down();
    let s = rig.status.clone();
    until("the outage to be noticed", Duration::from_secs(10), || {
        s.state() != ConnectionState::Connected
    })
    .await;
    // Many small bursts, each with its own state message.
    for i in 0..READINGS {
        rig.send("0x0c01", reading(i as f64)).await;
        if i % 5 == 4 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    let count = |kind: &str| -> i64 {
        rig.reader()
            .query_row(
                "SELECT coalesce(sum(messages), 0) FROM outbox WHERE kind = ?1 AND device_id = ?2",
                [kind, device],
                |r| r.get(0),
            )
            .expect("count")
    };
    until(
        "every reading to be queued",
        Duration::from_secs(10),
        || count("telemetry") == READINGS as i64,
    )
    .await;
    // The seqs handed out during the outage: the readings, and a state per burst.
    let high: i64 = rig
        .reader()
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .expect("seq");
    let states_queued = high - before - READINGS as i64;
    assert!(states_queued >= 2, "the readings came in several bursts");
    assert_eq!(
        count("state"),
        1,
        "of {states_queued} states, the last waits"
    );

    proxy.restore();
    let p = rig.prefix.clone();
    probe
        .wait_for("every reading", Duration::from_secs(60), |m| {
            let ids: HashSet<String> = m
                .iter()
                .filter(|m| m.topic.ends_with("/telemetry"))
                .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
                .filter_map(|v| v["msg_id"].as_str().map(str::to_string))
                .collect();
            ids.len() > READINGS
        })
        .await;
    until("the outbox to drain", Duration::from_secs(30), || {
        rig.outbox_depth() == 0
    })
    .await;

    // Every reading once per msg_id, in order; seqs rise with them.
    let mut seen = HashSet::new();
    let mut values = Vec::new();
    let mut last_seq = 0;
    for m in probe.on("/telemetry") {
        assert!(m.topic.starts_with(&p));
        let v = m.json();
        if !seen.insert(v["msg_id"].as_str().unwrap_or_default().to_string()) {
            continue;
        }
        let seq = v["seq"].as_i64().expect("seq");
        assert!(seq > last_seq, "telemetry seq order");
        last_seq = seq;
        values.push(
            v["data"]["readings"][0]["value"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    }
    let expected: Vec<f64> = std::iter::once(-1.0)
        .chain((0..READINGS).map(|i| i as f64))
        .collect();
    assert_eq!(values, expected);

    // One state after the outage: the registry's, sorting after every reading.
    let after: Vec<serde_json::Value> = probe
        .on("/state")
        .iter()
        .map(|m| m.json())
        .filter(|v| v["seq"].as_i64().is_some_and(|s| s > before))
        .collect();
    assert_eq!(after.len(), 1, "states after the outage: {after:?}");
    let state = &after[0];
    assert!(state["seq"].as_i64().expect("seq") > last_seq);
    let registry: String = rig
        .reader()
        .query_row(
            "SELECT last_state FROM devices WHERE id = ?1",
            [device],
            |r| r.get(0),
        )
        .expect("registry row");
    let registry: serde_json::Value = serde_json::from_str(&registry).expect("state JSON");
    assert_eq!(state["data"], registry);
    assert_eq!(state["data"]["temperature"], (READINGS - 1) as f64);
    rig.stop().await;
}
