//! The `adopt` request through a real broker: a discovered (pending) BLE device is
//! adopted with its bindkey, its readings then go upstream; a malformed key and a device
//! that is not pending are refused, and no response carries the key.

use std::time::{Duration, SystemTime};

use fieldgate::config::Protocol;
use fieldgate::model::DeviceEvent;
use fieldgate::store::{credentials, registry};
use rumqttc::QoS;
use serde_json::json;

use super::{broker, fast, reading, until, Probe, Rig};

const DEVICE: &str = "ble:54:48:e6:8f:80:a5";
const KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";

async fn heard(rig: &Rig) {
    rig.events
        .send(DeviceEvent {
            radio: "zb0".into(),
            protocol: Protocol::Ble,
            native_address: "54:48:e6:8f:80:a5".into(),
            received_at: SystemTime::now(),
            kind: reading(21.5),
            link: None,
        })
        .await
        .expect("hub running");
}

async fn ask(probe: &Probe, topic: &str, body: serde_json::Value) -> serde_json::Value {
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
    let answer = |m: &super::Msg| {
        m.topic.contains("/response/") && m.json()["correlation_id"] == cid.as_str()
    };
    probe
        .wait_for(
            &format!("the answer to {cid}"),
            Duration::from_secs(10),
            |m| m.iter().any(answer),
        )
        .await;
    let m = probe.messages().into_iter().find(answer).unwrap();
    assert!(!String::from_utf8_lossy(&m.payload).contains(KEY));
    m.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_ble_device_is_adopted_over_mqtt_and_its_telemetry_follows() {
    let b = broker();
    let rig = Rig::start(&b.url(), "", fast()).await;
    let p = rig.prefix.clone();
    let probe = Probe::connect(b, &[format!("{p}/#")]).await;
    rig.connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    heard(&rig).await;
    let id = fieldgate::model::DeviceId::parse(DEVICE).unwrap();
    until("the device discovered", Duration::from_secs(5), || {
        registry::get(&rig.reader(), &id)
            .ok()
            .flatten()
            .is_some_and(|d| d.lifecycle == "pending")
    })
    .await;
    let telemetry = format!("/device/{DEVICE}/telemetry");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        probe.on(&telemetry).is_empty(),
        "a pending device's telemetry went up"
    );
    let topic = format!("{p}/request/adopt");

    let bad = ask(
        &probe,
        &topic,
        json!({"correlation_id": "a1", "device": DEVICE, "bindkey": &KEY[..30]}),
    )
    .await;
    assert_eq!(bad["error"]["code"], "invalid_bindkey", "{bad}");

    let v = ask(
        &probe,
        &topic,
        json!({"correlation_id": "a2", "device": DEVICE, "bindkey": KEY}),
    )
    .await;
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["data"]["lifecycle"], "active");
    assert_eq!(v["data"]["bindkey"], "stored encrypted");
    assert!(credentials::exists(&rig.reader(), DEVICE, "bthome_bindkey").unwrap());

    let again = ask(
        &probe,
        &topic,
        json!({"correlation_id": "a3", "device": DEVICE}),
    )
    .await;
    assert_eq!(again["error"]["code"], "invalid_request", "{again}");
    let zigbee = ask(
        &probe,
        &topic,
        json!({"correlation_id": "a4", "device": "zigbee:0x00124b0001abcdef"}),
    )
    .await;
    assert!(
        zigbee["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("join window"),
        "{zigbee}"
    );

    // Adopted: the next reading goes upstream, with an `adopted` lifecycle event.
    heard(&rig).await;
    probe
        .wait_for("its telemetry", Duration::from_secs(10), |m| {
            m.iter().any(|m| m.topic.ends_with(&telemetry))
        })
        .await;
    assert!(probe
        .on(&format!("/device/{DEVICE}/event"))
        .iter()
        .any(|m| m.json()["data"]["event"] == "adopted"));
    rig.stop().await;
}
