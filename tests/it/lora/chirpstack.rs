//! The ChirpStack bridge checked by ChirpStack's own code: what the gateway publishes is
//! decoded with the `chirpstack_api` crate's `gw` types (prost + pbjson, as ChirpStack's
//! MQTT gateway backend decodes it), and the downlink commands fed to the gateway are
//! encoded by them, not written by hand here.
//!
//! The peer is a separate program (`tests/peers/chirpstack/`, it needs `protoc`): build it
//! with `cargo build --release --manifest-path tests/peers/chirpstack/Cargo.toml` and run
//! with `FIELDGATE_PEERS=1` (`FIELDGATE_CHIRPSTACK_PEER` names the binary when it is not in
//! that project's `target/release/`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use fieldgate::api::client::ApiClient;
use fieldgate_lora::gwmp::{
    hz_to_mhz, CrcStatus, DataRate, Modulation, Packet, Payload, PushData, RxPk, Stat, TxAckError,
};
use rumqttc::QoS;
use serde_json::{json, Value};

use super::bridge::{foreign_device, online, pull_resp, radio_up, GATEWAY};
use super::{free_udp_port, PacketForwarder};
use crate::common::TestDaemon;
use crate::mqtt::{broker, unique, Probe};

/// The peer program, one request and one answer per line.
struct ChirpStack {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChirpStack {
    /// `None` (with the reason printed) when the test is not to run here.
    fn start() -> Option<ChirpStack> {
        if !std::env::var("FIELDGATE_PEERS").is_ok_and(|v| v == "1") {
            println!("skipped: set FIELDGATE_PEERS=1 (and build tests/peers/chirpstack) to check the bridge with ChirpStack's own decoder");
            return None;
        }
        let named = std::env::var_os("FIELDGATE_CHIRPSTACK_PEER").map(PathBuf::from);
        let path = named.clone().unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/peers/chirpstack/target/release/chirpstack-peer")
        });
        if !path.exists() {
            // Named explicitly (CI): its absence is a failure, not a skip.
            assert!(
                named.is_none(),
                "FIELDGATE_CHIRPSTACK_PEER={} does not exist",
                path.display()
            );
            println!(
                "skipped: no ChirpStack peer at {}: build it with `cargo build --release --manifest-path tests/peers/chirpstack/Cargo.toml` (needs protoc)",
                path.display()
            );
            return None;
        }
        let mut child = Command::new(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Some(ChirpStack {
            child,
            stdin,
            stdout,
        })
    }

    fn ask(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the peer answered {line:?}: {e}"));
        assert_eq!(
            v["ok"], true,
            "ChirpStack refused it: {v}\nrequest: {request}"
        );
        v
    }

    /// Decodes a published message as ChirpStack's gateway backend does.
    fn decode(&mut self, kind: &str, payload: &[u8]) -> Value {
        let text = String::from_utf8(payload.to_vec()).expect("UTF-8 JSON");
        self.ask(json!({"kind": kind, "json": text}))
    }

    /// A `DownlinkFrame` as ChirpStack serializes it.
    fn downlink(&mut self, spec: Value) -> String {
        self.ask(json!({"kind": "downlink", "spec": spec}))["json"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for ChirpStack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A frame as the forwarder heard it: PHYPayload, tmst, Hz, SF, RSSI, SNR, channel.
type Heard = (Vec<u8>, u32, u32, u8, i16, f64, u8);

fn rxpk(phy: &[u8], tmst: u32, freq_hz: u32, sf: u8, rssi: i16, snr: f64, chan: u8) -> RxPk {
    RxPk {
        time: None,
        tmms: None,
        tmst,
        freq: hz_to_mhz(freq_hz),
        chan,
        rfch: chan / 4,
        stat: CrcStatus::Ok,
        modu: Modulation::Lora,
        datr: DataRate::Lora { sf, bw_khz: 125 },
        codr: Some("4/5".into()),
        rssi,
        lsnr: Some(snr),
        size: phy.len() as u16,
        data: Payload(phy.to_vec()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chirpstack_decodes_what_the_bridge_publishes_and_its_downlinks_reach_the_forwarder() {
    let Some(mut cs) = ChirpStack::start() else {
        return;
    };
    let udp = free_udp_port();
    let prefix = unique("lora-cs");
    let region = unique("cs");
    let d = TestDaemon::start(&format!(
        "[upstream]\nurl = \"{}\"\nclient_id = \"{prefix}\"\ntopic_prefix = \"{prefix}\"\n\n[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n[radio.options]\nregion = \"EU868\"\nbridge = \"only\"\nbridge_topic_prefix = \"{region}\"\n",
        broker().url()
    ));
    let api = ApiClient::new(&d.socket);
    radio_up(&api).await;
    let probe = Probe::connect(
        broker(),
        &[
            format!("{region}/gateway/+/event/#"),
            format!("{prefix}/status"),
        ],
    )
    .await;
    probe
        .wait_for("the gateway online", Duration::from_secs(20), online(1))
        .await;
    let mut pf = PacketForwarder::connect(udp).await;
    pf.open_downlink_path().await;

    // Three frames heard at different frequencies, data rates and signal levels (a
    // negative SNR and a timestamp past 2^31 among them), then a statistics report.
    let mut dev = foreign_device();
    let heard: Vec<Heard> = vec![
        (
            dev.uplink(1, &[0xa1; 5], false).unwrap(),
            1_000_000,
            868_100_000,
            7,
            -57,
            9.5,
            0,
        ),
        (
            dev.uplink(2, &[0xb2; 12], true).unwrap(),
            3_000_000_123,
            868_300_000,
            9,
            -101,
            -7.25,
            1,
        ),
        (
            dev.uplink(3, &[], false).unwrap(),
            4_000_000_000,
            868_500_000,
            12,
            -120,
            -17.5,
            6,
        ),
    ];
    for (i, (phy, tmst, freq, sf, rssi, snr, chan)) in heard.iter().enumerate() {
        let push = Packet::PushData {
            token: 100 + i as u16,
            gateway: pf.fwd.gateway,
            data: PushData {
                rxpk: vec![rxpk(phy, *tmst, *freq, *sf, *rssi, *snr, *chan)],
                stat: None,
                ..PushData::default()
            },
        };
        pf.sock.send(&push.to_bytes()).await.unwrap();
    }
    let stat = Packet::PushData {
        token: 110,
        gateway: pf.fwd.gateway,
        data: PushData {
            rxpk: vec![],
            stat: Some(Stat {
                rxnb: Some(14),
                rxok: Some(11),
                rxfw: Some(11),
                dwnb: Some(4),
                txnb: Some(3),
                ..Stat::default()
            }),
            ..PushData::default()
        },
    };
    pf.sock.send(&stat.to_bytes()).await.unwrap();
    probe
        .wait_for(
            "three uplinks and the stats",
            Duration::from_secs(20),
            |m| {
                m.iter().filter(|x| x.topic.ends_with("/event/up")).count() >= 3
                    && m.iter().any(|x| x.topic.ends_with("/event/stats"))
            },
        )
        .await;
    let ups = probe.on("/event/up");
    assert_eq!(ups.len(), 3);
    for (m, (phy, tmst, freq, sf, rssi, snr, chan)) in ups.iter().zip(&heard) {
        assert_eq!(m.topic, format!("{region}/gateway/{GATEWAY}/event/up"));
        let v = cs.decode("uplink", &m.payload);
        assert_eq!(v["phy_payload"], hex::encode(phy), "{v}");
        assert_eq!(v["frequency"], *freq);
        assert_eq!(v["spreading_factor"], *sf);
        assert_eq!(v["bandwidth"], 125_000);
        assert_eq!(v["code_rate"], "CR_4_5");
        assert_eq!(v["gateway_id"], GATEWAY);
        assert_eq!(v["rssi"], *rssi);
        assert_eq!(v["snr"].as_f64(), Some(*snr), "{v}");
        assert_eq!(v["channel"], *chan);
        assert_eq!(v["rf_chain"], chan / 4);
        assert_eq!(v["context"], hex::encode(tmst.to_be_bytes()));
        assert_eq!(v["crc_status"], "CRC_OK");
    }
    let stats = cs.decode("stats", &probe.on("/event/stats")[0].payload);
    assert_eq!(stats["gateway_id"], GATEWAY);
    assert_eq!(
        (
            &stats["rx_packets_received"],
            &stats["rx_packets_received_ok"],
            &stats["tx_packets_received"],
            &stats["tx_packets_emitted"],
            &stats["has_time"]
        ),
        (&json!(14), &json!(11), &json!(4), &json!(3), &json!(true))
    );

    // ChirpStack's downlinks. A fresh uplink to answer, so RX1/RX2 are still ahead.
    let answered = 50_000_000u32;
    pf.push(&dev.uplink(4, &[4], false).unwrap(), answered)
        .await;
    let reply = [
        0x60, 0x00, 0x1f, 0x01, 0x26, 0x20, 0x02, 0x00, 0x0b, 0xad, 0xf0, 0x0d,
    ];
    let item = |freq: u32, sf: u32, timing: &str, delay: u32| {
        json!({"phy_payload": hex::encode(reply), "frequency": freq, "power": 14,
            "spreading_factor": sf, "bandwidth": 125000, "timing": timing,
            "delay_secs": delay, "context": hex::encode(answered.to_be_bytes())})
    };
    let command = format!("{region}/gateway/{GATEWAY}/command/down");
    let publish = |payload: String| {
        let (client, topic) = (probe.client.clone(), command.clone());
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap()
        }
    };
    // Class A, RX1.
    publish(
        cs.downlink(json!({"downlink_id": 2001, "gateway_id": GATEWAY,
        "items": [item(868_100_000, 7, "delay", 1)]})),
    )
    .await;
    let tx = pull_resp(&pf, None).await;
    assert_eq!((tx.imme, tx.tmst), (false, Some(answered + 1_000_000)));
    assert_eq!(
        (tx.freq, tx.datr, tx.powe, tx.ipol, tx.codr.as_deref()),
        (
            868.1,
            DataRate::Lora { sf: 7, bw_khz: 125 },
            Some(14),
            Some(true),
            Some("4/5")
        )
    );
    assert_eq!(tx.data.0, reply);
    // Class C.
    publish(
        cs.downlink(json!({"downlink_id": 2002, "gateway_id": GATEWAY,
        "items": [item(869_525_000, 12, "immediately", 0)]})),
    )
    .await;
    let tx = pull_resp(&pf, None).await;
    assert!(tx.imme && tx.tmst.is_none());
    assert_eq!(
        (tx.freq, tx.datr),
        (
            869.525,
            DataRate::Lora {
                sf: 12,
                bw_khz: 125
            }
        )
    );
    // RX1 refused by the forwarder, RX2 sent.
    publish(
        cs.downlink(json!({"downlink_id": 2003, "gateway_id": GATEWAY,
        "items": [item(868_100_000, 7, "delay", 1), item(869_525_000, 12, "delay", 2)]})),
    )
    .await;
    let rx1 = pull_resp(&pf, Some(TxAckError::CollisionPacket)).await;
    assert_eq!(rx1.tmst, Some(answered + 1_000_000));
    let rx2 = pull_resp(&pf, None).await;
    assert_eq!(rx2.tmst, Some(answered + 2_000_000));
    assert_eq!(rx2.freq, 869.525);

    // The acknowledgements, as ChirpStack reads them.
    probe
        .wait_for("three TX acknowledgements", Duration::from_secs(20), |m| {
            m.iter().filter(|x| x.topic.ends_with("/event/ack")).count() >= 3
        })
        .await;
    let mut acks: Vec<Value> = probe
        .on("/event/ack")
        .iter()
        .map(|m| cs.decode("ack", &m.payload))
        .collect();
    acks.sort_by_key(|a| a["downlink_id"].as_u64());
    let got: Vec<(Value, Value, Value)> = acks
        .iter()
        .map(|a| {
            (
                a["gateway_id"].clone(),
                a["downlink_id"].clone(),
                a["statuses"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (json!(GATEWAY), json!(2001), json!(["OK"])),
            (json!(GATEWAY), json!(2002), json!(["OK"])),
            (
                json!(GATEWAY),
                json!(2003),
                json!(["COLLISION_PACKET", "OK"])
            ),
        ]
    );
}
