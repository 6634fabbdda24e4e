//! Device management over MQTT: `devices` (paged), `device`, `rename` (friendly
//! names, unique, usable wherever a device id is), and per-device command topics
//! `<prefix>/device/<device>/set`.

use std::time::Duration;

use fieldgate::model::{DeviceCommand, DeviceEventKind, RadioCommand};
use rumqttc::QoS;
use serde_json::json;

use super::{broker, fast, until, Probe, Rig};

/// A gateway connected to the test broker, a probe on its responses, and its prefix.
async fn connected_rig() -> (Rig, Probe, String) {
    let b = broker();
    let rig = Rig::start(&b.url(), "", fast()).await;
    let p = rig.prefix.clone();
    let probe = Probe::connect(b, &[format!("{p}/response/#")]).await;
    rig.connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    (rig, probe, p)
}

async fn ask(probe: &Probe, topic: String, body: serde_json::Value) -> serde_json::Value {
    let cid = body["correlation_id"].as_str().unwrap().to_string();
    probe
        .client
        .publish(
            topic,
            QoS::AtLeastOnce,
            false,
            body.to_string().into_bytes(),
        )
        .await
        .unwrap();
    answers(probe, &cid, 1).await.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_listed_paged_renamed_and_commanded_by_name_on_their_own_topic() {
    let (mut rig, probe, p) = connected_rig().await;
    for addr in ["0x0a01", "0x0a02", "0x0a03"] {
        rig.send(addr, DeviceEventKind::Joined).await;
    }
    until("three devices", Duration::from_secs(5), || {
        fieldgate::store::registry::counts(&rig.reader())
            .map(|c| c.iter().map(|(_, n)| n).sum::<u64>() == 3)
            .unwrap_or(false)
    })
    .await;
    let req = |op: &str| format!("{p}/request/{op}");

    // Paged.
    let v = ask(
        &probe,
        req("devices"),
        json!({"correlation_id": "l1", "limit": 2}),
    )
    .await;
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["data"]["total"], 3);
    assert_eq!(v["data"]["devices"].as_array().unwrap().len(), 2);
    let v = ask(
        &probe,
        req("devices"),
        json!({"correlation_id": "l2", "offset": 2, "limit": 2}),
    )
    .await;
    let page = v["data"]["devices"].as_array().unwrap();
    assert_eq!(page.len(), 1, "{v}");
    assert!(page[0]["name"].is_null());
    let v = ask(
        &probe,
        req("devices"),
        json!({"correlation_id": "l3", "limit": 101}),
    )
    .await;
    assert_eq!(v["error"]["code"], "invalid_request");

    // Renamed; names are unique and stand in for the id.
    let v = ask(
        &probe,
        req("rename"),
        json!({"correlation_id": "r1", "device": "zigbee:0x0a01", "name": "hall lamp"}),
    )
    .await;
    assert_eq!(v["status"], "ok", "{v}");
    assert!(v["data"]["previous"].is_null());
    let v = ask(
        &probe,
        req("rename"),
        json!({"correlation_id": "r2", "device": "zigbee:0x0a02", "name": "hall lamp"}),
    )
    .await;
    assert_eq!(v["error"]["code"], "name_taken", "{v}");
    let v = ask(
        &probe,
        req("rename"),
        json!({"correlation_id": "r3", "device": "zigbee:0x0a02", "name": "a/b"}),
    )
    .await;
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    // A rename that forgot `name` is refused; it does not remove the name.
    let v = ask(
        &probe,
        req("rename"),
        json!({"correlation_id": "r4", "device": "zigbee:0x0a01"}),
    )
    .await;
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    let v = ask(
        &probe,
        req("device"),
        json!({"correlation_id": "d1", "device": "hall lamp"}),
    )
    .await;
    assert_eq!(v["data"]["id"], "zigbee:0x0a01", "{v}");
    assert_eq!(v["data"]["name"], "hall lamp");
    let v = ask(
        &probe,
        req("device"),
        json!({"correlation_id": "d2", "device": "no such lamp"}),
    )
    .await;
    assert_eq!(v["error"]["code"], "unknown_device", "{v}");

    // Commanded on its own topic, by name or by id.
    let v = ask(
        &probe,
        format!("{p}/device/hall lamp/set"),
        json!({"correlation_id": "s1", "state": {"on": true}}),
    )
    .await;
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["operation"], "set");
    let v = ask(
        &probe,
        format!("{p}/device/zigbee:0x0a02/set"),
        json!({"correlation_id": "s2", "state": {"level": 40}}),
    )
    .await;
    assert_eq!(v["status"], "ok", "{v}");
    let v = ask(
        &probe,
        format!("{p}/device/zigbee:0x0a02/set"),
        json!({"correlation_id": "s3", "device": "zigbee:0x0a03", "state": {"on": true}}),
    )
    .await;
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    // An empty device level is answered too, not dropped.
    for op in ["set", "get"] {
        let v = ask(
            &probe,
            format!("{p}/device//{op}"),
            json!({"correlation_id": format!("empty-{op}"), "state": {"on": true}}),
        )
        .await;
        assert_eq!(v["status"], "error", "{v}");
        assert_eq!(v["operation"], op, "{v}");
    }
    let mut radio = rig.radio_commands.take().unwrap();
    let mut sets = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sets.len() < 2 && std::time::Instant::now() < deadline {
        if let Ok(Some(RadioCommand::Set {
            native_address,
            command,
            ..
        })) = tokio::time::timeout(Duration::from_millis(200), radio.recv()).await
        {
            sets.push((native_address, command));
        }
    }
    assert!(
        sets.contains(&("0x0a01".to_string(), DeviceCommand::On)),
        "{sets:?}"
    );
    assert!(
        sets.contains(&("0x0a02".to_string(), DeviceCommand::Level { percent: 40 })),
        "{sets:?}"
    );

    // Every one audited, by id.
    let audited: i64 = rig
        .reader()
        .query_row(
            "SELECT count(*) FROM audit WHERE action LIKE 'mqtt.%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 14, "one per request");
    rig.stop().await;
}

/// The answers with correlation id `cid`, once there are `n` of them.
async fn answers(probe: &Probe, cid: &str, n: usize) -> Vec<serde_json::Value> {
    let mine = |m: &super::Msg| m.topic.contains("/response/") && m.json()["correlation_id"] == cid;
    probe
        .wait_for(
            &format!("{n} answers to {cid}"),
            Duration::from_secs(10),
            |m| m.iter().filter(|m| mine(m)).count() >= n,
        )
        .await;
    probe
        .messages()
        .into_iter()
        .filter(|m| mine(m))
        .map(|m| m.json())
        .collect()
}

/// A repeat is the same request again: a correlation id reused with another body (or
/// for another device) is another request, carried out and answered on its own; the
/// same body again is answered from memory without being carried out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_correlation_id_with_another_body_is_another_request() {
    let (rig, probe, p) = connected_rig().await;
    rig.send("0x0b01", DeviceEventKind::Joined).await;
    until("the device", Duration::from_secs(5), || {
        fieldgate::store::registry::counts(&rig.reader())
            .map(|c| c.iter().map(|(_, n)| n).sum::<u64>() == 1)
            .unwrap_or(false)
    })
    .await;
    let publish = |body: serde_json::Value| {
        let client = probe.client.clone();
        let topic = format!("{p}/request/rename");
        async move {
            client
                .publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    body.to_string().into_bytes(),
                )
                .await
                .unwrap();
        }
    };
    publish(json!({"correlation_id": "x", "device": "zigbee:0x0b01", "name": "lamp a"})).await;
    let a = answers(&probe, "x", 1).await;
    assert_eq!(a[0]["data"]["name"], "lamp a", "{a:?}");
    publish(json!({"correlation_id": "x", "device": "zigbee:0x0b01", "name": "lamp b"})).await;
    let a = answers(&probe, "x", 2).await;
    assert_eq!(a[1]["status"], "ok", "{a:?}");
    assert_eq!(a[1]["data"]["name"], "lamp b", "carried out: {a:?}");
    // The second body again, keys in another order: a repeat, answered from memory.
    publish(json!({"name": "lamp b", "device": "zigbee:0x0b01", "correlation_id": "x"})).await;
    let a = answers(&probe, "x", 3).await;
    assert_eq!(a[2], a[1], "{a:?}");
    let dups: i64 = rig
        .reader()
        .query_row(
            "SELECT count(*) FROM audit WHERE action = 'mqtt.rename' AND details LIKE '%\"duplicate\"%'
             AND target = 'zigbee:0x0b01'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dups, 1, "one repeat, audited against its device");
    rig.stop().await;
}

/// `health_check` is unhealthy while a radio is down, and says which; healthy again
/// once it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_names_a_radio_that_is_down() {
    let (rig, probe, p) = connected_rig().await;
    let topic = format!("{p}/request/health_check");
    let v = ask(&probe, topic.clone(), json!({"correlation_id": "h1"})).await;
    assert_eq!(v["data"]["healthy"], true, "{v}");
    rig._radio_state
        .send(fieldgate::model::RadioState::Down("unplugged".into()))
        .unwrap();
    let v = ask(&probe, topic.clone(), json!({"correlation_id": "h2"})).await;
    assert_eq!(v["data"]["healthy"], false, "{v}");
    assert_eq!(v["data"]["radios"]["down"], json!(["zb0"]), "{v}");
    assert!(
        v["data"]["problems"][0].as_str().unwrap().contains("zb0"),
        "{v}"
    );
    rig._radio_state
        .send(fieldgate::model::RadioState::Up)
        .unwrap();
    let v = ask(&probe, topic, json!({"correlation_id": "h3"})).await;
    assert_eq!(v["data"]["healthy"], true, "{v}");
    rig.stop().await;
}

/// A refused request's audit record names what it was about (the radio or device the
/// body names) and why, as the requester was told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_audited_with_its_target_and_reason() {
    let (rig, probe, p) = connected_rig().await;
    let v = ask(
        &probe,
        format!("{p}/request/permit_join"),
        json!({"correlation_id": "pj-bad", "radio": "zb0", "seconds": 100000}),
    )
    .await;
    assert_eq!(v["status"], "error", "{v}");
    let (target, details): (String, String) = rig
        .reader()
        .query_row(
            "SELECT target, details FROM audit WHERE action = 'mqtt.permit_join' AND details LIKE '%pj-bad%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(target, "zb0");
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["message"], v["error"]["message"], "{details}");
    rig.stop().await;
}
