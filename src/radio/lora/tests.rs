//! The driver against an emulated packet forwarder over real UDP, with no store: joins,
//! uplinks, refusals, downlink timing and malformed datagrams.

use std::sync::Arc;
use std::time::Duration;

use fieldgate_lora::emulator::{EmulatedDevice, Forwarder, Heard};
use fieldgate_lora::Eui64;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::sim;
use crate::config::{PortSpec, Protocol};
use crate::model::{DeviceCredential, DeviceEventKind, RadioCommand, Value};
use crate::radio::{DriverIo, OwnTransportDriver, RadioCounters};
use crate::secrets::Secret;

struct Rig {
    events: mpsc::Receiver<crate::model::DeviceEvent>,
    commands: mpsc::Sender<RadioCommand>,
    counters: Arc<RadioCounters>,
    fwd_sock: UdpSocket,
    fwd: Forwarder,
}

async fn rig() -> Rig {
    rig_with(toml::Table::new()).await.0
}

/// The rig with these `[radio.options]`, and the driver's run (its result when it ends).
async fn rig_with(options: toml::Table) -> (Rig, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let (etx, events) = mpsc::channel(64);
    let (commands, crx) = mpsc::channel(8);
    let (state, _) = watch::channel(crate::model::RadioState::Starting);
    let counters = Arc::new(RadioCounters::default());
    let mut io = DriverIo {
        radio: "lora0".into(),
        protocol: Protocol::Lora,
        port: PortSpec::Udp {
            bind: "127.0.0.1".into(),
            port,
        },
        baud: None,
        options,
        events: etx,
        commands: crx,
        state,
        secrets: None,
        counters: counters.clone(),
        state_dir: None,
    };
    let run = tokio::spawn(async move {
        let mut d = super::LoraDriver::default();
        d.run(&mut io).await
    });
    let fwd_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    fwd_sock.connect(("127.0.0.1", port)).await.unwrap();
    let rig = Rig {
        events,
        commands,
        counters,
        fwd_sock,
        fwd: Forwarder::new(Eui64(sim::GATEWAY_EUI)),
    };
    (rig, run)
}

impl Rig {
    async fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.fwd_sock.recv(&mut buf))
            .await
            .expect("an answer from the driver")
            .unwrap();
        buf.truncate(n);
        buf
    }

    async fn send(&self, bytes: &[u8]) {
        self.fwd_sock.send(bytes).await.unwrap();
    }

    async fn provision(&self, eui: &str, kind: crate::model::CredentialKind, json: String) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(RadioCommand::ProvisionCredential {
                native_address: eui.into(),
                credential: DeviceCredential {
                    kind,
                    secret: Secret::new(json.into_bytes()),
                },
                reply: tx,
            })
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
    }

    /// The emulator's OTAA device's keys, as `fieldgate lora add` hands them over.
    async fn provision_sim_otaa(&self) {
        self.provision(
            sim::OTAA_DEV_EUI,
            crate::model::CredentialKind::LorawanOtaa,
            format!(
                r#"{{"join_eui":"{}","app_key":"{}"}}"#,
                sim::OTAA_JOIN_EUI,
                sim::OTAA_APP_KEY
            ),
        )
        .await;
    }

    /// Opens the join window, as the hub does for `fieldgate pair`.
    async fn permit_join(&self, seconds: u32) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(RadioCommand::PermitJoin { seconds, reply: tx })
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
    }

    async fn event(&mut self) -> DeviceEventKind {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("an event")
            .unwrap()
            .kind
    }
}

#[tokio::test]
async fn otaa_join_is_answered_at_tmst_plus_five_seconds_and_uplinks_decode() {
    let mut r = rig().await;
    r.provision_sim_otaa().await;
    let pull = r.fwd.pull_data();
    r.send(&pull).await;
    assert_eq!(r.recv().await[3], 0x04, "PULL_ACK");
    r.permit_join(60).await;
    let (mut dev, _) = sim::devices().unwrap();
    let req = dev.join_request().unwrap();
    let push = r.fwd.push_frame(&req, 4_000_000_000, 868_100_000, 7);
    r.send(&push).await;
    assert_eq!(r.recv().await[3], 0x01, "PUSH_ACK");
    let (token, resp) = Forwarder::pull_resp(&r.recv().await).expect("a PULL_RESP");
    // JOIN_ACCEPT_DELAY1 after the uplink, on the concentrator's wrapping clock; RX1 of
    // EU868 is the uplink's channel and rate.
    assert_eq!(
        resp.txpk.tmst,
        Some(4_000_000_000u32.wrapping_add(5_000_000))
    );
    assert_eq!(resp.txpk.freq, 868.1);
    assert_eq!(resp.txpk.ipol, Some(true));
    assert!(matches!(
        dev.hear(&resp.txpk.data.0).unwrap(),
        Heard::Joined { .. }
    ));
    let ack = r.fwd.tx_ack(token, None);
    r.send(&ack).await;
    assert_eq!(r.event().await, DeviceEventKind::Joined);
    assert!(
        matches!(r.event().await, DeviceEventKind::Interviewed(i) if i.reachability == Some(crate::model::Reachability::AfterUplink))
    );
    // A confirmed uplink with LPP temperature: readings, and an ACK in RX1 (1 s).
    let up = dev.uplink(2, &[0x01, 0x67, 0x00, 0xd2], true).unwrap();
    let push = r.fwd.push_frame(&up, 10_000_000, 868_300_000, 7);
    r.send(&push).await;
    let _push_ack = r.recv().await;
    let (_, resp) = Forwarder::pull_resp(&r.recv().await).expect("the ACK downlink");
    assert_eq!(resp.txpk.tmst, Some(11_000_000));
    let Heard::Data(down) = dev.hear(&resp.txpk.data.0).unwrap() else {
        panic!("not a downlink for the device")
    };
    assert!(down.fctrl.ack);
    let DeviceEventKind::Readings(readings) = r.event().await else {
        panic!("no readings")
    };
    let t = readings.iter().find(|x| x.name == "temperature").unwrap();
    assert_eq!(t.value, Value::Number(21.0));
    // The same frame again: refused as a replay.
    r.send(&push).await;
    let _push_ack = r.recv().await;
    let DeviceEventKind::Refused { reason, .. } = r.event().await else {
        panic!("replay not refused")
    };
    assert_eq!(reason, "replayed_counter");
    // Again within the minute: counted as rate limited, not reported (and audited)
    // once more; nothing else about the device is held back.
    let limited = r.counters.snapshot().rate_limited;
    for _ in 0..3 {
        r.send(&push).await;
        let _push_ack = r.recv().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.counters.snapshot().rate_limited, limited + 3);
    assert!(r.events.try_recv().is_err(), "refusals held back");
    let up = dev.uplink(3, &[0x01, 0x67, 0x00, 0xd3], false).unwrap();
    let push = r.fwd.push_frame(&up, 20_000_000, 868_300_000, 7);
    r.send(&push).await;
    let _push_ack = r.recv().await;
    assert!(matches!(r.event().await, DeviceEventKind::Readings(_)));
}

#[tokio::test]
async fn garbage_datagrams_and_strangers_are_counted_and_the_driver_carries_on() {
    let mut r = rig().await;
    r.send(b"\x02\x00").await;
    r.send(b"\x07\x00\x00\x00garbage").await;
    r.send(&[0x02, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, b'{']).await;
    let mut stranger = EmulatedDevice::otaa(Eui64(0x99), Eui64(1), [7u8; 16].into());
    let req = stranger.join_request().unwrap();
    let push = r.fwd.push_frame(&req, 1, 868_100_000, 7);
    r.send(&push).await;
    let _ = r.recv().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = r.counters.snapshot();
    assert!(c.undecodable >= 3, "{c:?}");
    assert_eq!(c.unhandled, 1, "{c:?}");
    assert!(
        r.events.try_recv().is_err(),
        "nothing reported for strangers"
    );
}

async fn joined_device(r: &mut Rig) -> EmulatedDevice {
    r.provision_sim_otaa().await;
    let pull = r.fwd.pull_data();
    r.send(&pull).await;
    let _pull_ack = r.recv().await;
    r.permit_join(60).await;
    let (mut dev, _) = sim::devices().unwrap();
    let req = dev.join_request().unwrap();
    let push = r.fwd.push_frame(&req, 1_000_000, 868_500_000, 9);
    r.send(&push).await;
    let _push_ack = r.recv().await;
    let (token, resp) = Forwarder::pull_resp(&r.recv().await).unwrap();
    // RX1 answers at the uplink's rate (SF9) and channel.
    assert_eq!(resp.txpk.datr.to_string(), "SF9BW125");
    // The forwarder cannot make RX1: the same Join-Accept goes again for RX2 (EU868:
    // 869.525 MHz, DR0 = SF12, JOIN_ACCEPT_DELAY2 = 6 s).
    let late = r
        .fwd
        .tx_ack(token, Some(fieldgate_lora::gwmp::TxAckError::TooLate));
    r.send(&late).await;
    let (token2, rx2) = Forwarder::pull_resp(&r.recv().await).expect("the RX2 copy");
    assert_eq!(rx2.txpk.tmst, Some(7_000_000));
    assert_eq!(rx2.txpk.freq, 869.525);
    assert_eq!(rx2.txpk.datr.to_string(), "SF12BW125");
    assert_eq!(rx2.txpk.data, resp.txpk.data);
    let ok = r.fwd.tx_ack(token2, None);
    r.send(&ok).await;
    assert!(matches!(
        dev.hear(&rx2.txpk.data.0).unwrap(),
        Heard::Joined { .. }
    ));
    assert_eq!(r.event().await, DeviceEventKind::Joined);
    let _described = r.event().await;
    dev
}

#[tokio::test]
async fn a_refused_rx1_downlink_goes_again_in_rx2_and_link_checks_are_answered() {
    let mut r = rig().await;
    let mut dev = joined_device(&mut r).await;
    // LinkCheckReq in FOpts, heard at SNR 9.5 dB on SF7 (floor -7.5 dB): margin 17.
    let up = dev.uplink_with(2, &[], false, vec![0x02]).unwrap();
    let push = r.fwd.push_frame(&up, 2_000_000, 868_100_000, 7);
    r.send(&push).await;
    let _push_ack = r.recv().await;
    let (_, resp) = Forwarder::pull_resp(&r.recv().await).expect("LinkCheckAns");
    let Heard::Data(down) = dev.hear(&resp.txpk.data.0).unwrap() else {
        panic!("not for the device")
    };
    assert_eq!(down.fopts, [0x02, 17, 1]);
    assert!(!down.fctrl.ack);
}

#[tokio::test]
async fn random_datagrams_never_stop_the_driver() {
    let mut r = rig().await;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 300) as usize;
        let mut d: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8).collect();
        if len > 4 && i % 2 == 0 {
            // Mostly well-formed headers so the bodies get parsed too.
            d[0] = 2;
            d[3] = [0u8, 2, 5][i % 3];
        }
        r.fwd_sock.send(&d).await.unwrap();
    }
    // Drain the acknowledgements of what happened to be well-formed, then: still answering.
    let mut buf = vec![0u8; 4096];
    while tokio::time::timeout(Duration::from_millis(300), r.fwd_sock.recv(&mut buf))
        .await
        .is_ok()
    {}
    let _ = joined_device(&mut r).await;
}

#[tokio::test]
async fn the_forwarders_stat_reports_add_up_in_the_radio_counters() {
    use fieldgate_lora::gwmp::{Packet, PushData, Stat};
    let r = rig().await;
    assert_eq!(r.counters.snapshot().forwarder, None);
    // Two reports as lora_pkt_fwd sends them every stat interval (PROTOCOL.TXT §4).
    for (token, rxnb, ackr) in [(1u16, 7u32, 100.0), (2, 3, 50.0)] {
        let push = Packet::PushData {
            token,
            gateway: Eui64(sim::GATEWAY_EUI),
            data: PushData {
                rxpk: vec![],
                stat: Some(Stat {
                    time: Some("2026-01-12 08:59:28 GMT".into()),
                    rxnb: Some(rxnb),
                    rxok: Some(rxnb - 1),
                    rxfw: Some(rxnb - 1),
                    ackr: Some(ackr),
                    dwnb: Some(1),
                    txnb: Some(1),
                    ..Stat::default()
                }),
                rejected: vec![],
            },
        };
        r.send(&push.to_bytes()).await;
        assert_eq!(r.recv().await[3], 0x01, "PUSH_ACK");
    }
    // The PUSH_ACK goes out before the report is counted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let f = r
        .counters
        .snapshot()
        .forwarder
        .expect("forwarder statistics");
    assert_eq!(
        (f.reports, f.rxnb, f.rxok, f.rxfw, f.dwnb, f.txnb, f.ackr),
        (2, 10, 8, 8, 2, 2, Some(50.0))
    );
}

#[tokio::test]
async fn reads_are_answered_from_the_latest_uplink_and_a_silent_forwarder_ends_the_run() {
    let options: toml::Table = toml::from_str("forwarder_timeout = \"1s\"").unwrap();
    let (mut rig, run) = rig_with(options).await;
    // Not heard yet: no keep-alive is expected of a forwarder that never came.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!run.is_finished());
    let pull = rig.fwd.pull_data();
    rig.send(&pull).await;
    assert_eq!(rig.recv().await[3], 0x04, "PULL_ACK");
    // A held read reaches the driver right after the device spoke: answered, not refused.
    rig.commands
        .send(RadioCommand::Read {
            command_id: "c1".into(),
            native_address: sim::ABP_DEV_EUI.into(),
        })
        .await
        .unwrap();
    match rig.event().await {
        DeviceEventKind::CommandResult { ok, command_id, .. } => {
            assert!(ok);
            assert_eq!(command_id, "c1");
        }
        other => panic!("not a command result: {other:?}"),
    }
    // Then silence: the run ends with the reason, for the supervisor to show and re-open.
    let ended = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run ends once the forwarder is silent")
        .unwrap();
    let e = ended.expect_err("an error with the reason");
    assert!(e.to_string().contains("went silent"), "{e:#}");
}

/// One PUSH_DATA with a malformed frame entry and a good frame heard on both RF chains:
/// the datagram is acknowledged, the bad entry counted, and the good frame taken once
/// (not refused as a replay of itself).
#[tokio::test]
async fn a_bad_frame_entry_and_a_frame_heard_twice_in_one_push_data() {
    let mut r = rig().await;
    let mut dev = joined_device(&mut r).await;
    while r.events.try_recv().is_ok() {}
    let before = r.counters.snapshot();
    let up = dev.uplink(5, &[0x01, 0x67, 0x00, 0xd2], false).unwrap();
    let one = r.fwd.push_frame(&up, 30_000_000, 868_300_000, 7);
    // The frame's rxpk entry as the emulated forwarder wrote it, then by chain 1 too.
    let body: serde_json::Value = serde_json::from_slice(&one[12..]).unwrap();
    let good = body["rxpk"][0].clone();
    let mut other_chain = good.clone();
    other_chain["rfch"] = serde_json::json!(1);
    let mut bad = good.clone();
    bad["data"] = serde_json::json!("!!!!");
    let mut datagram = one[..12].to_vec();
    datagram.extend_from_slice(
        serde_json::json!({"rxpk": [bad, good, other_chain]})
            .to_string()
            .as_bytes(),
    );
    r.send(&datagram).await;
    assert_eq!(r.recv().await[3], 0x01, "PUSH_ACK");
    assert!(matches!(r.event().await, DeviceEventKind::Readings(_)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        r.events.try_recv().is_err(),
        "the second copy of the frame was taken for something"
    );
    let after = r.counters.snapshot();
    assert_eq!(after.undecodable, before.undecodable + 1, "{after:?}");
    assert_eq!(after.refused, before.refused, "{after:?}");
}

/// A device with keys whose first Join-Request comes outside a join window gets no
/// Join-Accept (it would believe it joined, and the hub would refuse it): the join is
/// refused for the hub to audit; once a window is open the same device joins, and
/// after a window closes a device in session still may (it rejoins after a reset).
#[tokio::test]
async fn a_first_join_outside_a_join_window_gets_no_join_accept() {
    let mut r = rig().await;
    r.provision_sim_otaa().await;
    let pull = r.fwd.pull_data();
    r.send(&pull).await;
    let _pull_ack = r.recv().await;
    let (mut dev, _) = sim::devices().unwrap();
    fn join(fwd: &mut Forwarder, dev: &mut EmulatedDevice, at: u32) -> Vec<u8> {
        let req = dev.join_request().unwrap();
        fwd.push_frame(&req, at, 868_100_000, 7)
    }
    let push = join(&mut r.fwd, &mut dev, 1_000_000);
    r.send(&push).await;
    assert_eq!(r.recv().await[3], 0x01, "PUSH_ACK");
    let DeviceEventKind::Refused { what, reason, .. } = r.event().await else {
        panic!("the join was not refused")
    };
    assert_eq!(
        (what.as_str(), reason.as_str()),
        ("device.join", "join_window_closed")
    );
    let mut buf = [0u8; 512];
    let sent = tokio::time::timeout(Duration::from_millis(300), r.fwd_sock.recv(&mut buf)).await;
    assert!(sent.is_err(), "a Join-Accept went out");
    // A window: the next Join-Request (a fresh DevNonce) is answered.
    r.permit_join(60).await;
    let push = join(&mut r.fwd, &mut dev, 2_000_000);
    r.send(&push).await;
    let _push_ack = r.recv().await;
    let (token, _) = Forwarder::pull_resp(&r.recv().await).expect("a Join-Accept");
    let ack = r.fwd.tx_ack(token, None);
    r.send(&ack).await;
    assert_eq!(r.event().await, DeviceEventKind::Joined);
    let _described = r.event().await;
    // Closed again: the device in session joins again after a reset.
    r.permit_join(0).await;
    let push = join(&mut r.fwd, &mut dev, 3_000_000);
    r.send(&push).await;
    let _push_ack = r.recv().await;
    assert!(
        Forwarder::pull_resp(&r.recv().await).is_some(),
        "a rejoin answered"
    );
}
