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
        options: toml::Table::new(),
        events: etx,
        commands: crx,
        state,
        secrets: None,
        counters: counters.clone(),
    };
    tokio::spawn(async move {
        let mut d = super::LoraDriver::default();
        let _ = d.run(&mut io).await;
    });
    let fwd_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    fwd_sock.connect(("127.0.0.1", port)).await.unwrap();
    Rig {
        events,
        commands,
        counters,
        fwd_sock,
        fwd: Forwarder::new(Eui64(sim::GATEWAY_EUI)),
    }
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
    r.provision(
        sim::OTAA_DEV_EUI,
        crate::model::CredentialKind::LorawanOtaa,
        format!(
            r#"{{"join_eui":"{}","app_key":"{}"}}"#,
            sim::OTAA_JOIN_EUI,
            sim::OTAA_APP_KEY
        ),
    )
    .await;
    let pull = r.fwd.pull_data();
    r.send(&pull).await;
    assert_eq!(r.recv().await[3], 0x04, "PULL_ACK");
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
