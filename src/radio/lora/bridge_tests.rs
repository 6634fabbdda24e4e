//! Unit tests of the ChirpStack bridge (`bridge.rs`): the formats, the timing checks,
//! commands held for the forwarder.

use super::*;
use fieldgate_lora::gwmp::Packet;

fn rx() -> RxPk {
    serde_json::from_value(json!({
        "tmst": 3_512_348_611u32, "chan": 2, "rfch": 0, "freq": 868.5, "stat": 1,
        "modu": "LORA", "datr": "SF9BW125", "codr": "4/6", "rssi": -35, "lsnr": 5.1,
        "size": 4, "data": "AQIDBA==", "time": "2013-03-31T16:21:17.528002Z"
    }))
    .unwrap()
}

#[test]
fn an_uplink_is_a_chirpstack_uplink_frame() {
    let gw = Eui64(0x0016_c001_ff10_0001);
    let v = uplink_frame(&rx(), gw, 7);
    assert_eq!(v["phyPayload"], "AQIDBA==");
    assert_eq!(v["txInfo"]["frequency"], 868_500_000);
    let lora = &v["txInfo"]["modulation"]["lora"];
    assert_eq!(lora["bandwidth"], 125_000);
    assert_eq!(lora["spreadingFactor"], 9);
    assert_eq!(lora["codeRate"], "CR_4_6");
    let r = &v["rxInfo"];
    assert_eq!(r["gatewayId"], "0016c001ff100001");
    assert_eq!(r["uplinkId"], 7);
    assert_eq!(r["rssi"], -35);
    assert_eq!(r["snr"], 5.1);
    assert_eq!(r["channel"], 2);
    assert_eq!(r["crcStatus"], "CRC_OK");
    assert_eq!(r["gwTime"], "2013-03-31T16:21:17.528002Z");
    // The Semtech UDP context: tmst, big-endian (0xd15a2fc3).
    assert_eq!(r["context"], "0Vovww==");
}

#[test]
fn stats_carry_the_forwarder_counters() {
    let stat: Stat = serde_json::from_value(json!({
        "rxnb": 10, "rxok": 8, "rxfw": 8, "ackr": 100.0, "dwnb": 3, "txnb": 2,
        "lati": 46.24, "long": 3.2523, "alti": 145
    }))
    .unwrap();
    let v = gateway_stats(&stat, Eui64(1));
    assert_eq!(v["gatewayId"], "0000000000000001");
    assert_eq!(
        (
            &v["rxPacketsReceived"],
            &v["rxPacketsReceivedOk"],
            &v["txPacketsReceived"],
            &v["txPacketsEmitted"]
        ),
        (&json!(10), &json!(8), &json!(3), &json!(2))
    );
    assert_eq!(v["location"]["altitude"], 145);
}

fn item(v: Value) -> DownlinkItem {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_downlink_item_becomes_a_txpk_timed_from_the_context() {
    let tx = txpk(&item(json!({
        "phyPayload": "YAQDAgGgAQABAg==",
        "txInfo": {
            "frequency": 868100000, "power": 14,
            "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7,
                "codeRate": "CR_4_5", "polarizationInversion": true}},
            "timing": {"delay": {"delay": "1s"}},
            "context": "0Vovww=="
        }
    })))
    .unwrap();
    assert_eq!(tx.tmst, Some(3_512_348_611u32.wrapping_add(1_000_000)));
    assert!(!tx.imme);
    assert_eq!(tx.freq, 868.1);
    assert_eq!(tx.datr, DataRate::Lora { sf: 7, bw_khz: 125 });
    assert_eq!(
        (tx.powe, tx.codr.as_deref(), tx.ipol),
        (Some(14), Some("4/5"), Some(true))
    );
    assert_eq!(tx.size as usize, tx.data.0.len());
    // Immediately, GPS time, and the wrap of the 32-bit counter.
    let imme = txpk(&item(
        json!({"phyPayload": "AA==", "txInfo": {"frequency": 869525000,
        "power": 27, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 12}},
        "timing": {"immediately": {}}}}),
    ))
    .unwrap();
    assert!(imme.imme && imme.tmst.is_none());
    let gps = txpk(&item(
        json!({"phyPayload": "AA==", "txInfo": {"frequency": 869525000,
        "power": 27, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 12}},
        "timing": {"gpsEpoch": {"timeSinceGpsEpoch": "1300000000.250s"}}}}),
    ))
    .unwrap();
    assert_eq!(gps.tmms, Some(1_300_000_000_250));
    let wrap = txpk(&item(
        json!({"phyPayload": "AA==", "txInfo": {"frequency": 869525000,
        "power": 27, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 12}},
        "timing": {"delay": {"delay": "2s"}}, "context": "/////w=="}}),
    ))
    .unwrap();
    assert_eq!(wrap.tmst, Some(1_999_999));
}

#[test]
fn bad_downlink_items_are_refused_with_a_reason() {
    let base = json!({"phyPayload": "AA==", "txInfo": {"frequency": 868100000, "power": 14,
        "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7}},
        "timing": {"delay": {"delay": "1s"}}, "context": "AAAAAQ=="}});
    assert!(txpk(&item(base.clone())).is_ok());
    for (path, bad) in [
        ("/txInfo/context", json!("AAE=")),
        ("/txInfo/timing/delay/delay", json!("1 second")),
        ("/txInfo/modulation/lora/spreadingFactor", json!(13)),
        ("/txInfo/modulation/lora/bandwidth", json!(100000)),
        ("/txInfo/power", json!(-3)),
        ("/txInfo/frequency", json!(0)),
        ("/txInfo/timing", json!({})),
    ] {
        let mut v = base.clone();
        *v.pointer_mut(path).unwrap() = bad;
        assert!(txpk(&item(v)).is_err(), "{path}");
    }
    assert_eq!(duration_us("0.5s"), Some(500_000));
    assert_eq!(duration_us("5s"), Some(5_000_000));
    assert_eq!(duration_us("-1s"), None);
    assert_eq!(duration_us("s"), None);
}

fn bridge() -> Bridge {
    Bridge::new(
        LoraOptions::parse(&toml::Table::new()).unwrap().bridge,
        None,
        Arc::new(RadioCounters::default()),
    )
}

fn timed(tmst: Option<u32>, tmms: Option<u64>) -> TxPk {
    let mut tx = txpk(&item(
        json!({"phyPayload": "AA==", "txInfo": {"frequency": 869525000,
        "power": 27, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 12}},
        "timing": {"immediately": {}}}}),
    ))
    .unwrap();
    tx.imme = tmst.is_none() && tmms.is_none();
    (tx.tmst, tx.tmms) = (tmst, tmms);
    tx
}

#[test]
fn a_class_a_item_past_its_window_is_late_and_one_in_time_is_not() {
    let mut b = bridge();
    let t0 = Instant::now();
    let wall = SystemTime::now();
    // Nothing heard yet: the forwarder judges.
    assert_eq!(
        b.late_by(&timed(Some(5_000_000), None), Some(4_000_000), t0, wall),
        None
    );
    b.heard_at(4_000_000, t0);
    let rx1 = timed(Some(5_000_000), None);
    // Half a second after the uplink: RX1 (1 s) is still ahead.
    let now = t0 + Duration::from_millis(500);
    assert_eq!(b.late_by(&rx1, Some(4_000_000), now, wall), None);
    // 1.5 s after: half a second late, plus the lead the forwarder needs.
    let now = t0 + Duration::from_millis(1500);
    assert_eq!(
        b.late_by(&rx1, Some(4_000_000), now, wall),
        Some(Duration::from_millis(530))
    );
    // Within the lead: late too.
    let now = t0 + Duration::from_millis(980);
    assert!(b.late_by(&rx1, Some(4_000_000), now, wall).is_some());
    // A later uplink moved the clock on; an unknown context is timed from it.
    let t1 = t0 + Duration::from_secs(10);
    b.heard_at(14_000_000, t1);
    assert!(b.late_by(&rx1, None, t1, wall).is_some());
    assert_eq!(
        b.late_by(&timed(Some(15_000_000), None), None, t1, wall),
        None
    );
    // Across the wrap of the 32-bit counter.
    b.heard_at(u32::MAX - 100, t1);
    assert_eq!(
        b.late_by(&timed(Some(999_900), None), Some(u32::MAX - 100), t1, wall),
        None
    );
    let late = t1 + Duration::from_secs(2);
    assert!(b
        .late_by(
            &timed(Some(999_900), None),
            Some(u32::MAX - 100),
            late,
            wall
        )
        .is_some());
    // A clock not heard from for over half the wrap says nothing.
    let stale = t1 + Duration::from_secs(31 * 60);
    assert_eq!(b.late_by(&timed(Some(5), None), None, stale, wall), None);
    // Immediately is never late.
    assert_eq!(b.late_by(&timed(None, None), None, stale, wall), None);
}

#[test]
fn a_gps_timed_item_is_judged_by_the_system_clock() {
    let b = bridge();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(GPS_EPOCH_UNIX_S + 1_000_000);
    // GPS time is 18 s ahead of UTC: 1,000,018 s since the GPS epoch now.
    let now = Instant::now();
    assert!(b
        .late_by(&timed(None, Some(1_000_017_000)), None, now, wall)
        .is_some());
    assert_eq!(
        b.late_by(&timed(None, Some(1_000_019_000)), None, now, wall),
        None
    );
}

#[tokio::test]
async fn commands_wait_for_the_forwarder_and_a_repeated_one_is_sent_once() {
    let mut b = bridge();
    let mut link = ForwarderLink::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let forwarder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let command = |id: u32, gw: &str| {
        json!({"downlinkId": id, "gatewayId": gw, "items": [{"phyPayload": "YAA=",
            "txInfo": {"frequency": 869525000, "power": 14,
            "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 12}},
            "timing": {"immediately": {}}}}]})
        .to_string()
    };
    let gw = "0016c001ff100001";
    let topic = format!("eu868/gateway/{gw}/command/down");
    // Nothing heard yet: whose it is and where it goes are not known, so it waits.
    let first = command(7, gw);
    assert_eq!(
        b.command(&topic, first.as_bytes(), &mut link).await,
        Handled::Done
    );
    assert_eq!(
        b.command(&topic, first.as_bytes(), &mut link).await,
        Handled::Duplicate
    );
    assert_eq!(b.parked.len(), 1);
    // The forwarder's PULL_DATA names the gateway and opens the path: it goes out.
    let pull = Packet::PullData {
        token: 1,
        gateway: Eui64(0x0016_c001_ff10_0001),
    };
    link.acknowledge(&pull, forwarder.local_addr().unwrap())
        .await
        .unwrap();
    b.pull_data(Eui64(0x0016_c001_ff10_0001), &mut link).await;
    assert!(b.parked.is_empty());
    assert_eq!(b.pending.len(), 1);
    let mut buf = [0u8; 1024];
    let (_, _) = forwarder.recv_from(&mut buf).await.unwrap(); // PULL_ACK
    let (n, _) = forwarder.recv_from(&mut buf).await.unwrap();
    assert!(matches!(
        Packet::parse(&buf[..n]),
        Ok(Packet::PullResp { .. })
    ));
    // Another gateway's command is not ours; a new one for ours goes straight out.
    let other = command(8, "0016c001ff100002");
    assert_eq!(
        b.command(&topic, other.as_bytes(), &mut link).await,
        Handled::NotOurs
    );
    assert_eq!(
        b.command(&topic, command(9, gw).as_bytes(), &mut link)
            .await,
        Handled::Done
    );
    assert_eq!((b.parked.len(), b.pending.len()), (0, 2));
}

#[test]
fn routes_match_only_their_command_topic() {
    let (tx, _rx) = mpsc::channel(1);
    let any = BridgeRoute {
        radio: "lora0".into(),
        filter: "eu868/gateway/+/command/down".into(),
        prefix: "eu868".into(),
        gateway_id: None,
        commands: tx.clone(),
    };
    assert!(any.matches("eu868/gateway/0016c001ff100001/command/down"));
    assert!(!any.matches("eu868/gateway/0016c001ff100001/command/config"));
    assert!(!any.matches("us915/gateway/0016c001ff100001/command/down"));
    assert!(!any.matches("eu868/gateway//command/down"));
    let one = BridgeRoute {
        gateway_id: Some(Eui64(0x0016_c001_ff10_0001)),
        ..any
    };
    assert!(one.matches("eu868/gateway/0016c001ff100001/command/down"));
    assert!(!one.matches("eu868/gateway/0016c001ff100002/command/down"));
    assert_eq!(
        topic_gateway("a/b/gateway/0016c001ff100001/command/down"),
        Some("0016c001ff100001")
    );
}
