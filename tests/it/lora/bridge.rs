//! The ChirpStack bridge end to end: the real daemon with a GWMP radio in `bridge = "also"`
//! mode, an emulated packet forwarder over real UDP, the MQTT broker down at first. Every
//! frame (here from a device the gateway does not own) and the forwarder's statistics
//! wait in the outbox and reach the broker as ChirpStack gateway events once it is up; a
//! ChirpStack `DownlinkFrame` on the command topic reaches the forwarder as PULL_RESP
//! (the next item after a refusal) and the `DownlinkTxAck` goes back.

use std::time::Duration;

use fieldgate::api::client::ApiClient;
use fieldgate::store;
use fieldgate_lora::emulator::{EmulatedDevice, Forwarder};
use fieldgate_lora::gwmp::{DataRate, Packet, PushData, Stat, TxAckError};
use fieldgate_lora::lorawan::SessionKeys;
use fieldgate_lora::{AesKey, DevAddr, Eui64};
use hyper::Method;
use rumqttc::QoS;
use serde_json::{json, Value};

use super::{free_udp_port, PacketForwarder};
use crate::common::TestDaemon;
use crate::mqtt::{broker, free_port, unique, Probe, Proxy};

pub(super) const GATEWAY: &str = "0016c001ff100001";

pub(super) fn b64(bytes: &[u8]) -> String {
    serde_json::to_value(fieldgate_lora::gwmp::Payload(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn bridged_rows(d: &TestDaemon) -> i64 {
    let c = store::open_reader(&d.db()).unwrap();
    c.query_row(
        "SELECT count(*) FROM outbox WHERE kind = 'bridge'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

pub(super) async fn counters(api: &ApiClient) -> Value {
    let s = api
        .call(Method::GET, "/v1/status", None)
        .await
        .unwrap_or_default();
    s["radios"][0]["counters"].clone()
}

/// Waits until the daemon's LoRa radio has started (its socket is bound).
pub(super) async fn radio_up(api: &ApiClient) {
    for _ in 0..250 {
        if counters(api).await["startups"].as_u64().unwrap_or(0) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the LoRa radio never started");
}

/// A device this gateway holds no keys for (ChirpStack's).
pub(super) fn foreign_device() -> EmulatedDevice {
    let key = |s: &str| s.parse::<AesKey>().unwrap();
    EmulatedDevice::abp(
        Eui64(0x70b3_d57e_d000_0099),
        DevAddr(0x2601_1f00),
        SessionKeys {
            nwk_s_key: key("000102030405060708090a0b0c0d0e0f"),
            app_s_key: key("0f0e0d0c0b0a09080706050403020100"),
        },
    )
}

/// The next PULL_RESP, answered with a TX_ACK carrying `error`.
pub(super) async fn pull_resp(
    pf: &PacketForwarder,
    error: Option<TxAckError>,
) -> fieldgate_lora::gwmp::TxPk {
    // Acknowledgements of earlier datagrams may come first.
    for _ in 0..10 {
        let d = pf
            .recv(Duration::from_secs(10))
            .await
            .expect("a PULL_RESP from the gateway");
        if let Some((token, resp)) = Forwarder::pull_resp(&d) {
            pf.sock.send(&pf.fwd.tx_ack(token, error)).await.unwrap();
            return resp.txpk;
        }
    }
    panic!("no PULL_RESP")
}

/// `n` birth messages seen on the gateway's status topic: it is online (and, since the
/// subscriptions go out before the birth message, subscribed) `n` times over.
pub(super) fn online(n: usize) -> impl Fn(&[crate::mqtt::Msg]) -> bool {
    move |m: &[crate::mqtt::Msg]| {
        m.iter()
            .filter(|x| x.topic.ends_with("/status") && x.json()["state"] == "online")
            .count()
            >= n
    }
}

/// Waits for `n` TX acknowledgements and returns each one's `items` by its `downlinkId`.
pub(super) async fn ack_items(probe: &Probe, n: usize) -> impl Fn(u32) -> Value {
    probe
        .wait_for("the TX acknowledgements", Duration::from_secs(20), |m| {
            m.iter().filter(|x| x.topic.ends_with("/event/ack")).count() >= n
        })
        .await;
    let acks: Vec<Value> = probe.on("/event/ack").iter().map(|m| m.json()).collect();
    move |id: u32| {
        acks.iter()
            .find(|a| a["downlinkId"] == id)
            .unwrap_or_else(|| panic!("no ack for {id}: {acks:?}"))["items"]
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chirpstack_bridge_events_survive_a_broker_outage_and_downlinks_reach_the_forwarder() {
    let udp = free_udp_port();
    let mqtt_port = free_port();
    let prefix = unique("lora-bridge");
    let cs = unique("cs");
    let d = TestDaemon::start(&format!(
        "[upstream]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nclient_id = \"{prefix}\"\ntopic_prefix = \"{prefix}\"\n\n[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n[radio.options]\nregion = \"EU868\"\nbridge = \"also\"\nbridge_topic_prefix = \"{cs}/eu868\"\n"
    ));
    let api = ApiClient::new(&d.socket);
    radio_up(&api).await;
    let mut pf = PacketForwarder::connect(udp).await;
    pf.open_downlink_path().await;

    // Broker down: five uplinks and a statistics report.
    let mut dev = foreign_device();
    let mut sent = Vec::new();
    for i in 0..5u32 {
        let phy = dev.uplink(1 + i as u8, &[i as u8; 6], false).unwrap();
        let tmst = 10_000_000 + i * 1_000_000;
        pf.push(&phy, tmst).await;
        sent.push((phy, tmst));
    }
    let stat = Packet::PushData {
        token: 7,
        gateway: pf.fwd.gateway,
        data: PushData {
            rxpk: vec![],
            stat: Some(Stat {
                rxnb: Some(6),
                rxok: Some(5),
                rxfw: Some(5),
                dwnb: Some(0),
                txnb: Some(0),
                ..Stat::default()
            }),
            ..PushData::default()
        },
    };
    pf.sock.send(&stat.to_bytes()).await.unwrap();
    crate::mqtt::until(
        "six bridged rows in the outbox",
        Duration::from_secs(10),
        || bridged_rows(&d) == 6,
    )
    .await;
    // Handled locally too ("also"): not ours, so counted.
    let c = counters(&api).await;
    assert_eq!(c["unhandled"], 5, "{c}");
    assert_eq!(
        c["bridged"], 5,
        "every uplink frame, the stats report not counted: {c}"
    );

    // The broker comes back: every event, in order, in ChirpStack's JSON.
    let probe = Probe::connect(
        broker(),
        &[
            format!("{cs}/eu868/gateway/+/event/#"),
            format!("{prefix}/status"),
        ],
    )
    .await;
    let _proxy = Proxy::start_on(mqtt_port, broker().socket()).await;
    probe
        .wait_for("the bridged events", Duration::from_secs(30), |m| {
            m.iter().filter(|x| x.topic.ends_with("/event/up")).count() >= 5
                && m.iter().any(|x| x.topic.ends_with("/event/stats"))
        })
        .await;
    let ups = probe.on("/event/up");
    assert_eq!(ups.len(), 5, "each frame once");
    for (m, (phy, tmst)) in ups.iter().zip(&sent) {
        assert_eq!(m.topic, format!("{cs}/eu868/gateway/{GATEWAY}/event/up"));
        assert!(!m.retain);
        let v = m.json();
        assert_eq!(v["phyPayload"], b64(phy), "{v}");
        assert_eq!(v["txInfo"]["frequency"], 868_100_000);
        assert_eq!(
            v["txInfo"]["modulation"],
            json!({"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}})
        );
        let rx = &v["rxInfo"];
        assert_eq!(rx["gatewayId"], GATEWAY);
        assert!(rx["uplinkId"].is_u64(), "{v}");
        assert_eq!(rx["rssi"], -57);
        assert_eq!(rx["snr"], 9.5);
        assert_eq!(rx["channel"], 0);
        assert_eq!(rx["crcStatus"], "CRC_OK");
        assert_eq!(rx["context"], b64(&tmst.to_be_bytes()));
    }
    let stats = probe.on("/event/stats")[0].json();
    assert_eq!(stats["gatewayId"], GATEWAY);
    assert_eq!(
        (&stats["rxPacketsReceived"], &stats["rxPacketsReceivedOk"]),
        (&json!(6), &json!(5))
    );
    crate::mqtt::until("the outbox emptied", Duration::from_secs(10), || {
        bridged_rows(&d) == 0
    })
    .await;

    // A downlink from ChirpStack answering the last uplink: RX1, then RX2.
    probe
        .wait_for("the gateway online", Duration::from_secs(20), online(1))
        .await;
    // A fresh uplink to answer: RX1 and RX2 are a second or two after it, and an item
    // whose window already passed is not sent at all (see the test below).
    let answered_tmst = 30_000_000u32;
    pf.push(&dev.uplink(6, &[6; 6], false).unwrap(), answered_tmst)
        .await;
    let context = b64(&answered_tmst.to_be_bytes());
    let reply = vec![
        0x60, 0x00, 0x1f, 0x01, 0x26, 0x20, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef,
    ];
    let item = |freq: u32, sf: u32, delay: &str| {
        json!({"phyPayload": b64(&reply), "txInfo": {
            "frequency": freq, "power": 14,
            "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": sf,
                "codeRate": "CR_4_5", "polarizationInversion": true}},
            "board": 0, "antenna": 0,
            "timing": {"delay": {"delay": delay}},
            "context": context}})
    };
    let command = format!("{cs}/eu868/gateway/{GATEWAY}/command/down");
    let publish = |payload: Vec<u8>| {
        let (client, topic) = (probe.client.clone(), command.clone());
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap()
        }
    };
    // Garbage first: counted, nothing sent, the next command still served.
    publish(b"{not json".to_vec()).await;
    publish(
        json!({"downlinkId": 4242, "gatewayId": GATEWAY,
            "items": [item(868_100_000, 7, "1s"), item(869_525_000, 12, "2s")]})
        .to_string()
        .into_bytes(),
    )
    .await;
    let rx1 = pull_resp(&pf, Some(TxAckError::TooLate)).await;
    assert_eq!(rx1.tmst, Some(answered_tmst + 1_000_000));
    assert_eq!(
        (rx1.freq, rx1.datr, rx1.powe, rx1.ipol),
        (
            868.1,
            DataRate::Lora { sf: 7, bw_khz: 125 },
            Some(14),
            Some(true)
        )
    );
    assert_eq!(rx1.data.0, reply);
    assert_eq!(rx1.codr.as_deref(), Some("4/5"));
    let rx2 = pull_resp(&pf, None).await;
    assert_eq!(rx2.tmst, Some(answered_tmst + 2_000_000));
    assert_eq!(
        (rx2.freq, rx2.datr),
        (
            869.525,
            DataRate::Lora {
                sf: 12,
                bw_khz: 125
            }
        )
    );
    probe
        .wait_for("the TX acknowledgement", Duration::from_secs(20), |m| {
            m.iter().any(|x| x.topic.ends_with("/event/ack"))
        })
        .await;
    let ack = &probe.on("/event/ack")[0];
    assert_eq!(ack.topic, format!("{cs}/eu868/gateway/{GATEWAY}/event/ack"));
    assert_eq!(
        ack.json(),
        json!({"gatewayId": GATEWAY, "downlinkId": 4242,
            "items": [{"status": "TOO_LATE"}, {"status": "OK"}]})
    );
    let c = counters(&api).await;
    assert_eq!(c["undecodable"], 1, "the garbage command: {c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_only_hands_every_frame_to_chirpstack_and_answers_no_join() {
    let udp = free_udp_port();
    let prefix = unique("lora-only");
    let cs = unique("cs");
    let d = TestDaemon::start(&format!(
        "[upstream]\nurl = \"{}\"\nclient_id = \"{prefix}\"\ntopic_prefix = \"{prefix}\"\n\n[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n[radio.options]\nbridge = \"only\"\nbridge_topic_prefix = \"{cs}\"\nbridge_gateway_id = \"00000000000000aa\"\n",
        broker().url()
    ));
    // The sim device's keys are the gateway's, yet in "only" mode ChirpStack answers.
    let out = d.cli(&[
        "lora",
        "add",
        "--deveui",
        fieldgate::radio::lora::sim::OTAA_DEV_EUI,
        "--joineui",
        fieldgate::radio::lora::sim::OTAA_JOIN_EUI,
        "--appkey",
        fieldgate::radio::lora::sim::OTAA_APP_KEY,
    ]);
    assert!(out.status.success());
    let probe = Probe::connect(broker(), &[format!("{cs}/gateway/+/event/up")]).await;
    let mut pf = PacketForwarder::connect(udp).await;
    pf.open_downlink_path().await;
    let (mut dev, _) = fieldgate::radio::lora::sim::devices().unwrap();
    let req = dev.join_request().unwrap();
    pf.push(&req, 5_000_000).await;
    probe
        .wait_for("the bridged Join-Request", Duration::from_secs(20), |m| {
            !m.is_empty()
        })
        .await;
    let up = &probe.messages()[0];
    // The configured gateway id, not the forwarder's EUI.
    assert_eq!(up.topic, format!("{cs}/gateway/00000000000000aa/event/up"));
    assert_eq!(up.json()["phyPayload"], b64(&req));
    assert_eq!(up.json()["rxInfo"]["gatewayId"], "00000000000000aa");
    assert!(
        pf.downlink(Duration::from_millis(1500)).await.is_none(),
        "no local Join-Accept in bridge-only mode"
    );
}

/// The upstream connection's state as the daemon reports it.
async fn upstream_state(api: &ApiClient) -> String {
    let s = api
        .call(Method::GET, "/v1/status", None)
        .await
        .unwrap_or_default();
    s["upstream"]["state"].as_str().unwrap_or("").to_string()
}

/// A ChirpStack `DownlinkFrameItem` (JSON) carrying `phy`.
fn down_item(phy: &[u8], freq: u32, sf: u32, timing: Value, context: Option<u32>) -> Value {
    let mut tx_info = json!({
        "frequency": freq, "power": 14,
        "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": sf,
            "codeRate": "CR_4_5", "polarizationInversion": true}},
        "timing": timing});
    if let Some(c) = context {
        tx_info["context"] = json!(b64(&c.to_be_bytes()));
    }
    json!({"phyPayload": b64(phy), "txInfo": tx_info})
}

/// Downlink commands published while the gateway's MQTT connection is cut: the broker
/// keeps them in the gateway's session (`clean_session` is off by default with a bridge)
/// and hands them over when it is back. What can still go out goes out (a class A item
/// timed far enough ahead, a class C `immediately`), what cannot is answered `TOO_LATE`
/// without reaching the forwarder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downlinks_sent_while_the_gateway_is_away_are_delivered_or_answered_too_late() {
    let udp = free_udp_port();
    let mqtt_port = free_port();
    let proxy = Proxy::start_on(mqtt_port, broker().socket()).await;
    let prefix = unique("lora-away");
    let cs = unique("cs");
    let d = TestDaemon::start(&format!(
        "[upstream]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nclient_id = \"{prefix}\"\ntopic_prefix = \"{prefix}\"\nreconnect_max = \"1s\"\n\n[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n[radio.options]\nregion = \"EU868\"\nbridge = \"also\"\nbridge_topic_prefix = \"{cs}\"\n"
    ));
    let api = ApiClient::new(&d.socket);
    radio_up(&api).await;
    let probe = Probe::connect(
        broker(),
        &[
            format!("{cs}/gateway/+/event/#"),
            format!("{prefix}/status"),
        ],
    )
    .await;
    // Online means subscribed: the subscription goes out before the birth message.
    probe
        .wait_for("the gateway online", Duration::from_secs(20), online(1))
        .await;
    let mut pf = PacketForwarder::connect(udp).await;
    pf.open_downlink_path().await;
    let mut dev = foreign_device();
    let tmst = 20_000_000u32;
    pf.push(&dev.uplink(1, &[1, 2, 3], false).unwrap(), tmst)
        .await;
    let heard = std::time::Instant::now();
    probe
        .wait_for("the bridged uplink", Duration::from_secs(20), |m| {
            m.iter().any(|x| x.topic.ends_with("/event/up"))
        })
        .await;

    // The gateway loses the broker; ChirpStack answers the uplink meanwhile.
    proxy.down();
    for _ in 0..250 {
        if upstream_state(&api).await != "connected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(upstream_state(&api).await, "connected");
    let command = format!("{cs}/gateway/{GATEWAY}/command/down");
    let reply = [0x60, 0x00, 0x1f, 0x01, 0x26, 0x20, 0x01, 0x00, 0xca, 0xfe];
    let delay = |d: &str| json!({"delay": {"delay": d}});
    let commands = [
        // RX1 and RX2 of the uplink: both windows close while the gateway is away.
        json!({"downlinkId": 101, "gatewayId": GATEWAY, "items": [
            down_item(&reply, 868_100_000, 7, delay("1s"), Some(tmst)),
            down_item(&reply, 869_525_000, 12, delay("2s"), Some(tmst))]}),
        // Timed from the same uplink, far enough ahead to still go out.
        json!({"downlinkId": 102, "gatewayId": GATEWAY, "items": [
            down_item(&reply, 868_300_000, 9, delay("40s"), Some(tmst))]}),
        // Class C: whenever it arrives.
        json!({"downlinkId": 103, "gatewayId": GATEWAY, "items": [
            down_item(&reply, 869_525_000, 12, json!({"immediately": {}}), None)]}),
    ];
    for c in &commands {
        probe
            .client
            .publish(command.clone(), QoS::AtLeastOnce, false, c.to_string())
            .await
            .unwrap();
    }
    // Nothing reaches the forwarder while the gateway is away.
    assert!(pf.downlink(Duration::from_millis(500)).await.is_none());
    let away = Duration::from_millis(2500).saturating_sub(heard.elapsed());
    tokio::time::sleep(away).await;
    proxy.restore();

    let class_a = pull_resp(&pf, None).await;
    assert!(!class_a.imme);
    assert_eq!(class_a.tmst, Some(tmst + 40_000_000));
    assert_eq!(class_a.freq, 868.3);
    assert_eq!(class_a.data.0, reply);
    let class_c = pull_resp(&pf, None).await;
    assert!(class_c.imme && class_c.tmst.is_none());
    assert_eq!(class_c.freq, 869.525);
    assert!(
        pf.downlink(Duration::from_millis(500)).await.is_none(),
        "the late downlink was not sent"
    );
    let ack_of = ack_items(&probe, 3).await;
    assert_eq!(
        ack_of(101),
        json!([{"status": "TOO_LATE"}, {"status": "TOO_LATE"}])
    );
    assert_eq!(ack_of(102), json!([{"status": "OK"}]));
    assert_eq!(ack_of(103), json!([{"status": "OK"}]));
    let acks = probe.on("/event/ack");
    assert_eq!(acks.len(), 3, "each command once");
    let c = counters(&api).await;
    assert_eq!(c["bridge_too_late"], 2, "{c}");
}

/// The gateway stopped (a restart) while ChirpStack sent two downlinks: the broker keeps
/// them in the gateway's session, the restarted gateway holds them until the packet
/// forwarder's PULL_DATA gives it a downlink path, then sends the class C one and answers
/// the class A one `TOO_LATE` (its window closed during the restart, as the concentrator
/// clock, heard again from a fresh uplink, says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downlinks_sent_while_the_gateway_is_stopped_wait_for_the_forwarder_after_the_restart() {
    let udp = free_udp_port();
    let prefix = unique("lora-restart");
    let cs = unique("cs");
    let mut d = TestDaemon::start(&format!(
        "[upstream]\nurl = \"{}\"\nclient_id = \"{prefix}\"\ntopic_prefix = \"{prefix}\"\n\n[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n[radio.options]\nregion = \"EU868\"\nbridge = \"also\"\nbridge_topic_prefix = \"{cs}\"\n",
        broker().url()
    ));
    let api = ApiClient::new(&d.socket);
    radio_up(&api).await;
    let probe = Probe::connect(
        broker(),
        &[
            format!("{cs}/gateway/+/event/#"),
            format!("{prefix}/status"),
        ],
    )
    .await;
    probe
        .wait_for("the gateway online", Duration::from_secs(20), online(1))
        .await;
    let mut pf = PacketForwarder::connect(udp).await;
    pf.open_downlink_path().await;
    let mut dev = foreign_device();
    let t0 = 20_000_000u32;
    pf.push(&dev.uplink(1, &[1], false).unwrap(), t0).await;
    let heard = std::time::Instant::now();
    probe
        .wait_for("the bridged uplink", Duration::from_secs(20), |m| {
            m.iter().any(|x| x.topic.ends_with("/event/up"))
        })
        .await;

    assert!(d.terminate(Duration::from_secs(20)).is_some(), "stopped");
    let command = format!("{cs}/gateway/{GATEWAY}/command/down");
    let reply = [0x60, 0x00, 0x1f, 0x01, 0x26, 0x20, 0x03, 0x00, 0x12, 0x34];
    for c in [
        json!({"downlinkId": 301, "gatewayId": GATEWAY, "items": [
            down_item(&reply, 869_525_000, 12, json!({"immediately": {}}), None)]}),
        json!({"downlinkId": 302, "gatewayId": GATEWAY, "items": [
            down_item(&reply, 868_100_000, 7, json!({"delay": {"delay": "1s"}}), Some(t0))]}),
    ] {
        probe
            .client
            .publish(command.clone(), QoS::AtLeastOnce, false, c.to_string())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(heard.elapsed())).await;

    d.spawn();
    radio_up(&api).await;
    probe
        .wait_for(
            "the gateway online again",
            Duration::from_secs(20),
            online(2),
        )
        .await;
    // The commands have arrived by now; nowhere to send them until the PULL_DATA.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t1 = t0.wrapping_add(heard.elapsed().as_micros() as u32);
    pf.push(&dev.uplink(2, &[2], false).unwrap(), t1).await;
    pf.open_downlink_path().await;
    let class_c = pull_resp(&pf, None).await;
    assert!(class_c.imme);
    assert_eq!(class_c.data.0, reply);
    assert!(
        pf.downlink(Duration::from_millis(500)).await.is_none(),
        "the late class A downlink was not sent"
    );
    let items = ack_items(&probe, 2).await;
    assert_eq!(items(301), json!([{"status": "OK"}]));
    assert_eq!(items(302), json!([{"status": "TOO_LATE"}]));
    assert_eq!(counters(&api).await["bridge_too_late"], 1);
}
