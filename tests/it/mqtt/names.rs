//! Device topics by friendly name (`[upstream] topic_names = "name"`): a named
//! device publishes under `device/<name>/...`; a rename moves its retained state
//! and availability to the new topics and clears the old ones, and so does a switch
//! of `topic_names` between two runs.

use std::time::Duration;

use fieldgate::model::DeviceEventKind;
use rumqttc::QoS;
use serde_json::json;

use super::{broker, fast, reading, Msg, Probe, Rig};

async fn rename(probe: &Probe, p: &str, cid: &str, device: &str, name: serde_json::Value) {
    let answer = rename_answer(probe, p, cid, device, name).await;
    assert_eq!(answer["status"], "ok", "{answer}");
}

/// Asks for a rename and returns the answer.
async fn rename_answer(
    probe: &Probe,
    p: &str,
    cid: &str,
    device: &str,
    name: serde_json::Value,
) -> serde_json::Value {
    let body = json!({"correlation_id": cid, "device": device, "name": name});
    probe
        .client
        .publish(
            format!("{p}/request/rename"),
            QoS::AtLeastOnce,
            false,
            body.to_string().into_bytes(),
        )
        .await
        .unwrap();
    let is_answer =
        |m: &Msg| m.topic == format!("{p}/response/rename") && m.json()["correlation_id"] == cid;
    probe
        .wait_for("the rename answer", Duration::from_secs(10), |m| {
            m.iter().any(is_answer)
        })
        .await;
    probe.messages().into_iter().find(is_answer).unwrap().json()
}

/// The retained device states a new subscriber gets, by topic.
async fn retained_states(p: &str) -> Vec<(String, Vec<u8>)> {
    let fresh = Probe::connect(broker(), &[format!("{p}/device/+/state")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fresh
        .messages()
        .into_iter()
        .filter(|m| m.retain && !m.payload.is_empty())
        .map(|m| (m.topic, m.payload))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_topics_carry_the_friendly_name_and_follow_a_rename() {
    let b = broker();
    let rig = Rig::start(&b.url(), "topic_names = \"name\"", fast()).await;
    let p = rig.prefix.clone();
    let probe = Probe::connect(b, &[format!("{p}/#")]).await;
    rig.connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dev = "zigbee:0x0c01";
    rig.send("0x0c01", DeviceEventKind::Joined).await;
    rig.send("0x0c01", reading(19.0)).await;
    // No name yet: the id.
    probe
        .wait_for("the state under the id", Duration::from_secs(10), |m| {
            m.iter()
                .any(|m| m.topic == format!("{p}/device/{dev}/state"))
        })
        .await;

    rename(&probe, &p, "n1", dev, json!("porch lamp")).await;
    // The retained messages move to the name; the old ones are cleared.
    let cleared = |m: &[Msg], level: &str, kind: &str| {
        m.iter()
            .any(|m| m.topic == format!("{p}/device/{level}/{kind}") && m.payload.is_empty())
    };
    probe
        .wait_for(
            "state and availability under the name",
            Duration::from_secs(10),
            |m| {
                ["state", "availability"].iter().all(|k| {
                    m.iter().any(|m| {
                        m.topic == format!("{p}/device/porch lamp/{k}") && !m.payload.is_empty()
                    })
                })
            },
        )
        .await;
    probe
        .wait_for(
            "the id's retained topics cleared",
            Duration::from_secs(10),
            |m| cleared(m, dev, "state") && cleared(m, dev, "availability"),
        )
        .await;
    let moved = probe
        .messages()
        .into_iter()
        .find(|m| m.topic == format!("{p}/device/porch lamp/state"))
        .unwrap()
        .json();
    assert_eq!(moved["device"], dev, "the envelope still names the id");
    assert_eq!(moved["data"]["temperature"], 19.0, "{moved}");

    // New messages go out under the name.
    rig.send("0x0c01", reading(19.5)).await;
    probe
        .wait_for("telemetry under the name", Duration::from_secs(10), |m| {
            m.iter()
                .any(|m| m.topic == format!("{p}/device/porch lamp/telemetry"))
        })
        .await;
    let states = retained_states(&p).await;
    let topics: Vec<&str> = states.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [format!("{p}/device/porch lamp/state")],
        "{topics:?}"
    );

    // Renamed again, then the name removed: back to the id.
    rename(&probe, &p, "n2", dev, json!("garden lamp")).await;
    probe
        .wait_for(
            "the old name's topics cleared",
            Duration::from_secs(10),
            |m| cleared(m, "porch lamp", "state") && cleared(m, "porch lamp", "availability"),
        )
        .await;
    let states = retained_states(&p).await;
    let topics: Vec<&str> = states.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [format!("{p}/device/garden lamp/state")],
        "{topics:?}"
    );
    rename(&probe, &p, "n3", dev, serde_json::Value::Null).await;
    probe
        .wait_for("the name's topics cleared", Duration::from_secs(10), |m| {
            cleared(m, "garden lamp", "state")
        })
        .await;
    let states = retained_states(&p).await;
    let topics: Vec<&str> = states.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, [format!("{p}/device/{dev}/state")], "{topics:?}");
    rig.stop().await;
}

/// `topic_names` switched between two runs, both ways: the named devices' retained
/// state and availability move to the new topic level and the old level's are
/// cleared, so a subscriber to `device/+/state` finds one state per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_topic_names_moves_the_retained_messages() {
    let b = broker();
    let prefix = format!("fgtest/{}", super::unique("gw"));
    let p = prefix.clone();
    let dev = "zigbee:0x0c02";
    let rig = Rig::start_prefixed(&b.url(), "", fast(), prefix.clone()).await;
    rig.connected().await;
    rig.send("0x0c02", DeviceEventKind::Joined).await;
    rig.send("0x0c02", reading(21.0)).await;
    let probe = Probe::connect(b, &[format!("{p}/#")]).await;
    probe
        .wait_for("the state under the id", Duration::from_secs(10), |m| {
            m.iter()
                .any(|m| m.topic == format!("{p}/device/{dev}/state"))
        })
        .await;
    rename(&probe, &p, "s1", dev, json!("shed sensor")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        retained_states(&p).await.len(),
        1,
        "id naming: still one state, under the id"
    );
    let dir = rig.stop_keeping_state().await;

    // id -> name
    let rig = Rig::start_in(
        dir,
        &b.url(),
        "topic_names = \"name\"",
        fast(),
        prefix.clone(),
    )
    .await;
    rig.connected().await;
    let want = |level: &str| vec![format!("{p}/device/{level}/state")];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut topics = Vec::new();
    while tokio::time::Instant::now() < deadline {
        topics = retained_states(&p)
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        if topics == want("shed sensor") {
            break;
        }
    }
    assert_eq!(topics, want("shed sensor"));
    let dir = rig.stop_keeping_state().await;

    // name -> id
    let rig = Rig::start_in(dir, &b.url(), "", fast(), prefix.clone()).await;
    rig.connected().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        topics = retained_states(&p)
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        if topics == want(dev) {
            break;
        }
    }
    assert_eq!(topics, want(dev));
    rig.stop().await;
}

/// A rename whose audit record cannot be written is not made: the name and its record
/// commit together (the requester is told it failed, and it did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_without_its_audit_record_is_not_made() {
    let b = broker();
    let rig = Rig::start(&b.url(), "", fast()).await;
    let p = rig.prefix.clone();
    let probe = Probe::connect(b, &[format!("{p}/#")]).await;
    rig.connected().await;
    let dev = "zigbee:0x0c03";
    rig.send("0x0c03", DeviceEventKind::Joined).await;
    rig.send("0x0c03", reading(20.0)).await;
    probe
        .wait_for("the device's state", Duration::from_secs(10), |m| {
            m.iter()
                .any(|m| m.topic == format!("{p}/device/{dev}/state"))
        })
        .await;
    rusqlite::Connection::open(&rig.db)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'no'); END;",
        )
        .unwrap();
    let answer = rename_answer(&probe, &p, "r-x", dev, json!("sneaky")).await;
    assert_eq!(answer["status"], "error", "{answer}");
    let c = rusqlite::Connection::open(&rig.db).unwrap();
    c.execute_batch("DROP TRIGGER no_audit;").unwrap();
    let named: Option<String> = c
        .query_row(
            "SELECT name FROM device_names WHERE device_id = ?1",
            [dev],
            |r| r.get(0),
        )
        .ok();
    assert_eq!(named, None, "renamed without a record");
    rig.stop().await;
}
