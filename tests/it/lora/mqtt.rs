//! `lora_device` over MQTT: the cloud gives the gateway a device's keys; refusals never
//! repeat a key, and the device joins with the keys it was given.

use std::time::Duration;

use fieldgate::api::client::ApiClient;
use fieldgate::radio::lora::sim;
use hyper::Method;
use rumqttc::QoS;
use serde_json::json;

use super::{free_udp_port, joined, PacketForwarder};
use crate::common::TestDaemon;
use crate::mqtt::{broker, unique, Probe};

async fn answer(probe: &Probe, cid: &str) -> serde_json::Value {
    let find = |p: &Probe| {
        p.messages()
            .iter()
            .filter(|m| m.topic.ends_with("/response/lora_device"))
            .map(|m| m.json())
            .find(|v| v["correlation_id"] == cid)
    };
    probe
        .wait_for(cid, Duration::from_secs(10), |_| find(probe).is_some())
        .await;
    find(probe).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_keys_over_mqtt_are_sealed_and_let_the_device_join() {
    let udp = free_udp_port();
    let prefix = unique("lora-mqtt");
    let d = TestDaemon::start(&format!(
        "[upstream]\nurl = \"{}\"\nclient_id = \"{prefix}\"\ntopic_prefix = \"{prefix}\"\n\n[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n",
        broker().url()
    ));
    let probe = Probe::connect(
        broker(),
        &[format!("{prefix}/response/#"), format!("{prefix}/status")],
    )
    .await;
    // Requests are not retained: send them once the gateway is online (subscribed).
    probe
        .wait_for("the gateway online", Duration::from_secs(20), |m| {
            m.iter()
                .any(|x| x.topic.ends_with("/status") && x.json()["state"] == "online")
        })
        .await;
    let send = |body: serde_json::Value| {
        let client = probe.client.clone();
        let topic = format!("{prefix}/request/lora_device");
        async move {
            client
                .publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    body.to_string().into_bytes(),
                )
                .await
                .unwrap()
        }
    };
    let device = format!("lora:{}", sim::OTAA_DEV_EUI);
    let typo = "2b7e151628aed2a6abf7158809cf4fXX";
    for (cid, body, code) in [
        (
            "l-1",
            json!({"correlation_id": "l-1", "device": device, "join_eui": sim::OTAA_JOIN_EUI, "app_key": typo}),
            "invalid_lorawan_key",
        ),
        (
            "l-2",
            json!({"correlation_id": "l-2", "device": device, "join_eui": sim::OTAA_JOIN_EUI}),
            "invalid_lorawan_keys",
        ),
        (
            "l-3",
            json!({"correlation_id": "l-3", "device": "zigbee:0x1", "join_eui": sim::OTAA_JOIN_EUI, "app_key": sim::OTAA_APP_KEY}),
            "bad_device_id",
        ),
    ] {
        send(body).await;
        let r = answer(&probe, cid).await;
        assert_eq!(r["error"]["code"], code, "{r}");
        assert!(!r.to_string().contains(typo) && !r.to_string().contains(sim::OTAA_APP_KEY));
    }
    send(json!({"correlation_id": "l-4", "device": device, "join_eui": sim::OTAA_JOIN_EUI, "app_key": sim::OTAA_APP_KEY})).await;
    let r = answer(&probe, "l-4").await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["data"]["device"], device);
    assert_eq!(r["data"]["coordinators"][0]["ok"], true, "{r}");
    assert!(!r.to_string().contains(sim::OTAA_APP_KEY));

    ApiClient::new(&d.socket)
        .call(
            Method::POST,
            "/v1/radios/lora0/permit-join",
            Some(json!({"seconds": 60})),
        )
        .await
        .unwrap();
    let mut pf = PacketForwarder::connect(udp).await;
    pf.open_downlink_path().await;
    let (mut dev, _) = sim::devices().unwrap();
    let req = dev.join_request().unwrap();
    pf.push(&req, 5_000_000).await;
    let accept = pf
        .downlink(Duration::from_secs(5))
        .await
        .expect("Join-Accept");
    assert!(joined(dev.hear(&accept.txpk.data.0).unwrap()));
    assert!(!d.log().contains(sim::OTAA_APP_KEY));
}
