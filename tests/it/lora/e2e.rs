//! One site's day, offline first: keys added with `fieldgate lora add`, an OTAA join
//! answered locally at the right `tmst`, LPP uplinks decoded into readings, a confirmed
//! uplink acknowledged, a bad MIC, a replayed counter and a reused DevNonce refused and
//! audited, SIGKILL and restart without forgetting counters or nonces, decommissioning;
//! all with the broker down, and everything in the outbox published once it returns.

use std::time::Duration;

use fieldgate::api::client::ApiClient;
use fieldgate::store;
use fieldgate_lora::emulator::{EmulatedDevice, Heard};
use fieldgate_lora::lorawan::SessionKeys;
use fieldgate_lora::{DevAddr, Eui64};
use hyper::Method;
use serde_json::json;

use super::{free_udp_port, joined, PacketForwarder};
use crate::common::{stdout, TestDaemon};
use crate::mqtt::{broker, free_port, unique, Probe, Proxy};

const DEV_EUI: &str = "70b3d57ed0000001";
const JOIN_EUI: &str = "70b3d57ed0000000";
const APP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const ABP_EUI: &str = "70b3d57ed0000002";
const ABP_ADDR: &str = "26011bda";
const NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
const APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";

fn audit(d: &TestDaemon) -> Vec<store::audit::AuditRecord> {
    let c = store::open_reader(&d.db()).unwrap();
    store::audit::tail(&c, 10_000, None).unwrap()
}

fn refusals(d: &TestDaemon, target: &str) -> Vec<String> {
    audit(d)
        .into_iter()
        .filter(|r| r.action == "lorawan.frame" && r.target == target && r.outcome == "refused")
        .map(|r| r.details["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A technician adds the ABP device, with the raw decoder.
fn add_abp(d: &TestDaemon) {
    let out = d.cli(&[
        "lora",
        "add",
        "--deveui",
        ABP_EUI,
        "--devaddr",
        ABP_ADDR,
        "--nwkskey",
        NWK_S_KEY,
        "--appskey",
        APP_S_KEY,
        "--decoder",
        "raw",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
}

fn abp_device() -> EmulatedDevice {
    EmulatedDevice::abp(
        ABP_EUI.parse::<Eui64>().unwrap(),
        ABP_ADDR.parse::<DevAddr>().unwrap(),
        SessionKeys {
            nwk_s_key: NWK_S_KEY.parse().unwrap(),
            app_s_key: APP_S_KEY.parse().unwrap(),
        },
    )
}

/// SIGKILL, a restart, and a packet forwarder heard again.
async fn kill_and_restart(d: &mut TestDaemon, udp: u16) -> PacketForwarder {
    let mut child = d.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    d.spawn();
    let mut pf = PacketForwarder::connect(udp).await;
    pf.open_downlink_path().await;
    pf
}

/// Polls `f` for up to 30 s (a restart under a loaded test run takes seconds; in a CI
/// run with every other test binary busy, once more than 15).
async fn wait(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn device(api: &ApiClient, id: &str) -> serde_json::Value {
    api.call(Method::GET, &format!("/v1/devices/{id}"), None)
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otaa_joins_offline_uplinks_decode_faults_are_audited_and_sync_when_the_broker_returns() {
    let udp = free_udp_port();
    let mqtt_port = free_port();
    let prefix = unique("lora-e2e");
    let mut d = TestDaemon::start(&format!(
        "[upstream]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nclient_id = \"{prefix}\"\ntopic_prefix = \"{prefix}\"\n\n[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n[radio.options]\nregion = \"EU868\"\nnet_id = \"000013\"\n"
    ));
    let api = ApiClient::new(&d.socket);
    let otaa_id = format!("lora:{DEV_EUI}");
    let abp_id = format!("lora:{ABP_EUI}");

    // A technician adds both devices; the keys are never echoed.
    let out = d.cli(&[
        "lora",
        "add",
        "--deveui",
        DEV_EUI,
        "--joineui",
        JOIN_EUI,
        "--appkey",
        APP_KEY,
    ]);
    assert!(out.status.success(), "{}", d.log());
    assert!(stdout(&out).contains("added"), "{}", stdout(&out));
    assert!(!stdout(&out).contains(APP_KEY));
    add_abp(&d);
    let bad = d.cli(&[
        "lora",
        "add",
        "--deveui",
        DEV_EUI,
        "--joineui",
        JOIN_EUI,
        "--appkey",
        "00",
    ]);
    assert!(!bad.status.success());
    api.call(
        Method::POST,
        "/v1/radios/lora0/permit-join",
        Some(json!({"seconds": 250})),
    )
    .await
    .unwrap();

    let mut pf = PacketForwarder::connect(udp).await;
    pf.open_downlink_path().await;
    let mut dev = EmulatedDevice::otaa(
        DEV_EUI.parse().unwrap(),
        JOIN_EUI.parse().unwrap(),
        APP_KEY.parse().unwrap(),
    );

    // OTAA join, answered locally: the Join-Accept is timed JOIN_ACCEPT_DELAY1 (5 s) after
    // the Join-Request's tmst, in RX1 (EU868: same channel and rate).
    let req = dev.join_request().unwrap();
    pf.push(&req, 7_000_000).await;
    let accept = pf
        .downlink(Duration::from_secs(15))
        .await
        .expect("a Join-Accept");
    assert_eq!(accept.txpk.tmst, Some(12_000_000));
    assert_eq!(accept.txpk.freq, 868.1);
    assert_eq!(accept.txpk.datr.to_string(), "SF7BW125");
    assert!(joined(dev.hear(&accept.txpk.data.0).unwrap()));
    let (addr, _) = dev.session.unwrap();
    assert_eq!(addr.0 >> 25, 0x13, "DevAddr in the NetID's NwkID prefix");

    // Uplinks: Cayenne LPP temperature 21.0 °C and humidity 50 %.
    let lpp = [0x01, 0x67, 0x00, 0xd2, 0x02, 0x68, 0x64];
    let up = dev.uplink(2, &lpp, false).unwrap();
    pf.push(&up, 20_000_000).await;
    let mut state = serde_json::Value::Null;
    for _ in 0..250 {
        state = device(&api, &otaa_id).await;
        if state["last_state"]["temperature"].is_number() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state["last_state"]["temperature"], 21.0, "{state}");
    assert_eq!(state["last_state"]["humidity"], 50.0);
    assert_eq!(state["last_state"]["payload_hex"], "016700d2026864");
    assert_eq!(state["lifecycle"], "active", "{state}");

    // A confirmed uplink is acknowledged in RX1, one second after it.
    let conf = dev.uplink(2, &lpp, true).unwrap();
    pf.push(&conf, 30_000_000).await;
    let ack = pf.downlink(Duration::from_secs(15)).await.expect("an ACK");
    assert_eq!(ack.txpk.tmst, Some(31_000_000));
    let Heard::Data(down) = dev.hear(&ack.txpk.data.0).unwrap() else {
        panic!("the ACK is not a downlink for the device")
    };
    assert!(down.fctrl.ack);

    // Faults: a bad MIC, the last frame replayed, a Join-Request reusing its DevNonce.
    let bad_mic = dev.uplink_bad_mic(2, &lpp).unwrap();
    pf.push(&bad_mic, 40_000_000).await;
    // The confirmed frame again: its counter was accepted already.
    let replay = conf.clone();
    pf.push(&replay, 41_000_000).await;
    let reused = dev.join_request_reusing_nonce().unwrap();
    pf.push(&reused, 42_000_000).await;
    wait("three audited refusals", || {
        refusals(&d, &otaa_id).len() >= 3
    })
    .await;
    assert_eq!(
        refusals(&d, &otaa_id),
        ["bad_mic", "replayed_counter", "dev_nonce_reused"]
    );
    assert!(
        pf.downlink(Duration::from_millis(300)).await.is_none(),
        "no Join-Accept for a reused DevNonce"
    );

    // The ABP device is heard at once, with the raw decoder it was added with.
    let mut abp = abp_device();
    let a1 = abp.uplink(5, &lpp, false).unwrap();
    pf.push(&a1, 50_000_000).await;
    wait("the ABP device's reading", || {
        let c = store::open_reader(&d.db()).unwrap();
        store::registry::get(&c, &fieldgate::model::DeviceId(abp_id.clone()))
            .ok()
            .flatten()
            .is_some_and(|x| {
                x.last_state["payload_hex"] == "016700d2026864" && x.lifecycle == "active"
            })
    })
    .await;

    // SIGKILL and restart: the counters and DevNonces were stored before the gateway acted.
    let mut pf = kill_and_restart(&mut d, udp).await;
    pf.push(&replay, 60_000_000).await;
    pf.push(&a1, 61_000_000).await;
    let reused = dev.join_request_reusing_nonce().unwrap();
    pf.push(&reused, 62_000_000).await;
    wait("refusals after the restart", || {
        refusals(&d, &otaa_id).len() >= 5 && !refusals(&d, &abp_id).is_empty()
    })
    .await;
    assert_eq!(refusals(&d, &abp_id), ["replayed_counter"]);
    // The next frame of the session is still accepted after the restart.
    let next = dev.uplink(2, &[0x01, 0x67, 0x00, 0xdc], false).unwrap();
    pf.push(&next, 70_000_000).await;
    let api = ApiClient::new(&d.socket);
    let mut t = serde_json::Value::Null;
    for _ in 0..250 {
        t = device(&api, &otaa_id).await["last_state"]["temperature"].clone();
        if t == 22.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(t, 22.0);

    // The broker comes back: the joins, readings and refusals recorded offline go up.
    let probe = Probe::connect(broker(), &[format!("{prefix}/#")]).await;
    let _proxy = Proxy::start_on(mqtt_port, broker().socket()).await;
    probe
        .wait_for(
            "offline LoRa telemetry and audit",
            Duration::from_secs(30),
            |m| {
                let telemetry = m.iter().any(|x| {
                    x.topic == format!("{prefix}/device/{otaa_id}/telemetry")
                        && x.json().to_string().contains("temperature")
                });
                let audited = m
                    .iter()
                    .filter(|x| x.topic == format!("{prefix}/audit"))
                    .any(|x| x.json().to_string().contains("dev_nonce_reused"));
                telemetry && audited
            },
        )
        .await;

    // Decommissioned: credentials and session destroyed, the device no longer heard.
    let out = d.cli(&["remove", &otaa_id]);
    assert!(out.status.success(), "{}", stdout(&out));
    let after = dev.uplink(2, &lpp, false).unwrap();
    pf.push(&after, 80_000_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = device(&api, &otaa_id).await;
    assert_eq!(state["lifecycle"], "decommissioned");
    assert_eq!(
        state["last_state"]["temperature"], 22.0,
        "no reading after decommissioning"
    );
    let c = store::open_reader(&d.db()).unwrap();
    assert!(store::credentials::list(&c, Some(&otaa_id))
        .unwrap()
        .iter()
        .all(|c| c.kind != "lorawan_otaa"));
    // No key ever reached the log.
    let log = d.log();
    for k in [APP_KEY, NWK_S_KEY, APP_S_KEY] {
        assert!(!log.contains(k), "a key in the daemon log");
    }
}

async fn transactions(api: &ApiClient) -> u64 {
    let status = api.call(Method::GET, "/v1/status", None).await.unwrap();
    status["store"]["transactions"].as_u64().unwrap()
}

/// A data uplink's counter commits with its reading, not in a transaction (and an
/// fsync) of its own; a reading recorded means its counter survives a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplinks_counter_commits_with_its_reading_and_survives_sigkill() {
    const UPLINKS: u32 = 20;
    let udp = free_udp_port();
    let mut d = TestDaemon::start(&format!(
        "[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n"
    ));
    add_abp(&d);
    let api = ApiClient::new(&d.socket);
    let abp_id = fieldgate::model::DeviceId(format!("lora:{ABP_EUI}"));
    let mut abp = abp_device();
    let mut pf = PacketForwarder::connect(udp).await;
    pf.open_downlink_path().await;
    let recorded = |d: &TestDaemon, hex: &str| {
        let c = store::open_reader(&d.db()).unwrap();
        store::registry::get(&c, &abp_id)
            .ok()
            .flatten()
            .is_some_and(|x| x.last_state["payload_hex"] == hex)
    };
    // The first uplink registers the device (pending): not counted.
    let first = abp.uplink(5, &[0xa0], false).unwrap();
    pf.push(&first, 1_000_000).await;
    wait("the first reading", || recorded(&d, "a0")).await;
    let before = transactions(&api).await;
    let mut last = Vec::new();
    for i in 1..=UPLINKS {
        let payload = [0xb0, i as u8];
        last = abp.uplink(5, &payload, false).unwrap();
        pf.push(&last, 1_000_000 + i * 1_000_000).await;
        wait("a reading", || recorded(&d, &format!("b0{:02x}", i as u8))).await;
    }
    let spent = transactions(&api).await - before;
    // One commit per uplink (its reading and its counter), a few for the daemon's
    // own timers; a commit of its own for each counter would make it 2 per uplink.
    assert!(
        spent <= u64::from(UPLINKS) + 5,
        "{spent} transactions for {UPLINKS} uplinks"
    );

    // Killed right after the last reading was recorded: that frame is refused as a
    // replay after the restart.
    let mut pf = kill_and_restart(&mut d, udp).await;
    pf.push(&last, 90_000_000).await;
    wait("the replay refused", || {
        refusals(&d, &abp_id.0) == ["replayed_counter"]
    })
    .await;
}

/// A flood of malformed datagrams is counted one by one but logged as a warning once
/// (then at most once a minute, saying how many were held back): a broken forwarder or
/// a host on the LAN must not fill the journal. A frame beside a status report that
/// does not parse is still taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_are_counted_each_and_logged_once() {
    let udp = free_udp_port();
    let d = TestDaemon::start(&format!(
        "[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n"
    ));
    // Datagrams sent before the radio has bound its port are refused by the kernel and
    // never reach it: the forwarder's PULL_ACK says it is listening.
    let mut pf = PacketForwarder::connect(udp).await;
    pf.open_downlink_path().await;
    let api = ApiClient::new(&d.socket);
    let undecodable = || async {
        let status = api.call(Method::GET, "/v1/status", None).await.unwrap();
        status["radios"][0]["counters"]["undecodable"]
            .as_u64()
            .unwrap_or(0)
    };
    // Sent in bursts of 20, each counted before the next: on a loaded machine 200 at
    // once can overflow the socket's receive buffer, and the kernel drops them
    // before the daemon could count them.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for burst in 0..10u32 {
        for i in burst * 20..(burst + 1) * 20 {
            let mut junk = vec![2, 0, 0, 0x00];
            junk.extend_from_slice(&i.to_be_bytes());
            sock.send_to(&junk, ("127.0.0.1", udp)).await.unwrap();
        }
        while undecodable().await < u64::from((burst + 1) * 20) {
            assert!(std::time::Instant::now() < deadline, "{}", d.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let lines = d.log().matches("malformed GWMP datagram dropped").count();
    assert_eq!(lines, 1, "{}", d.log());
}
