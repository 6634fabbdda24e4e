//! GWMP tests: the PROTOCOL.TXT examples, round trips of every packet type, and refusals.

use super::*;

const GW: Eui64 = Eui64(0xaa55_5a00_0000_0101);

fn datagram(id: u8, with_gw: bool, json: &str) -> Vec<u8> {
    let mut v = vec![2, 0x12, 0x34, id];
    if with_gw {
        v.extend_from_slice(&GW.0.to_be_bytes());
    }
    v.extend_from_slice(json.as_bytes());
    v
}

/// The second and third rxpk examples of PROTOCOL.TXT §4 (FSK and LoRa; their data is
/// base64 without padding in the LoRa one), plus the §4 stat example.
#[test]
fn protocol_txt_push_data() {
    let json = r#"{"rxpk":[{"time":"2013-03-31T16:21:17.530974Z","tmst":3512348514,"chan":9,"rfch":1,"freq":869.1,"stat":1,"modu":"FSK","datr":50000,"rssi":-75,"size":16,"data":"VEVTVF9QQUNLRVRfMTIzNA=="},{"time":"2013-03-31T16:21:17.532038Z","tmst":3316387610,"chan":0,"rfch":0,"freq":863.00981,"stat":1,"modu":"LORA","datr":"SF10BW125","codr":"4/7","rssi":-38,"lsnr":5.5,"size":32,"data":"ysgRl452xNLep9S1NTIg2lomKDxUgn3DJ7DE+b00Ass"}],
        "stat":{"time":"2014-01-12 08:59:28 GMT","lati":46.24000,"long":3.25230,"alti":145,"rxnb":2,"rxok":2,"rxfw":2,"ackr":100.0,"dwnb":2,"txnb":2}}"#;
    let p = Packet::parse(&datagram(0, true, json)).unwrap();
    let Packet::PushData {
        token,
        gateway,
        data,
    } = &p
    else {
        panic!("not PUSH_DATA: {p:?}")
    };
    assert_eq!((*token, *gateway), (0x1234, GW));
    assert_eq!(data.rxpk.len(), 2);
    let fsk = &data.rxpk[0];
    assert_eq!(fsk.data.0, b"TEST_PACKET_1234");
    assert_eq!(fsk.datr, DataRate::Fsk(50_000));
    assert_eq!(fsk.freq_hz(), 869_100_000);
    let lora = &data.rxpk[1];
    assert_eq!(
        lora.datr,
        DataRate::Lora {
            sf: 10,
            bw_khz: 125
        }
    );
    assert_eq!(lora.stat, CrcStatus::Ok);
    assert_eq!(lora.data.0.len(), 32);
    assert_eq!(lora.freq_hz(), 863_009_810);
    assert_eq!(lora.lsnr, Some(5.5));
    let stat = data.stat.as_ref().unwrap();
    assert_eq!(stat.alti, Some(145));
    assert_eq!(stat.ackr, Some(100.0));
    // Round trip through our encoder.
    assert_eq!(Packet::parse(&p.to_bytes()).unwrap(), p);
    assert_eq!(p.ack(), Some(Packet::PushAck { token: 0x1234 }));
}

#[test]
fn protocol_txt_pull_resp_and_tx_ack() {
    let json = r#"{"txpk":{"imme":true,"freq":864.123456,"rfch":0,"powe":14,"modu":"LORA","datr":"SF11BW125","codr":"4/6","ipol":false,"size":32,"data":"H3P3N2i9qc4yt7rK7ldqoeCVJGBybzPY5h1Dd7P7p8v"}}"#;
    let p = Packet::parse(&datagram(3, false, json)).unwrap();
    let Packet::PullResp { data, .. } = &p else {
        panic!()
    };
    assert!(data.txpk.imme);
    assert_eq!(data.txpk.powe, Some(14));
    assert_eq!(data.txpk.data.0.len(), 32);
    assert_eq!(Packet::parse(&p.to_bytes()).unwrap(), p);

    let ack = Packet::parse(&datagram(
        5,
        true,
        r#"{"txpk_ack":{"error":"COLLISION_PACKET"}}"#,
    ))
    .unwrap();
    let Packet::TxAck { ack: Some(a), .. } = &ack else {
        panic!()
    };
    assert_eq!(a.txpk_ack.error, Some(TxAckError::CollisionPacket));
    assert!(!a.accepted());
    assert_eq!(Packet::parse(&ack.to_bytes()).unwrap(), ack);
    // No JSON at all means no error (PROTOCOL.TXT §5.5); a trailing NUL is tolerated.
    let bare = Packet::parse(&datagram(5, true, "")).unwrap();
    assert_eq!(
        bare,
        Packet::TxAck {
            token: 0x1234,
            gateway: GW,
            ack: None
        }
    );
    let nul = Packet::parse(&datagram(5, true, "{\"txpk_ack\":{\"error\":\"NONE\"}}\0")).unwrap();
    let Packet::TxAck { ack: Some(a), .. } = nul else {
        panic!()
    };
    assert!(a.accepted());
}

#[test]
fn acks_and_pull_data() {
    for p in [
        Packet::PushAck { token: 1 },
        Packet::PullAck { token: 0xffff },
        Packet::PullData {
            token: 7,
            gateway: GW,
        },
    ] {
        assert_eq!(Packet::parse(&p.to_bytes()).unwrap(), p);
    }
    let pull = Packet::PullData {
        token: 9,
        gateway: GW,
    };
    assert_eq!(pull.to_bytes().len(), 12);
    assert_eq!(pull.ack(), Some(Packet::PullAck { token: 9 }));
}

#[test]
fn unknown_fields_pass_malformed_ones_do_not() {
    // sx1302 forwarders add fields such as rsig, brd, jver: ignored.
    let extra = r#"{"rxpk":[{"jver":1,"tmst":1,"chan":0,"rfch":0,"freq":868.1,"brd":0,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-50,"lsnr":9.2,"rsig":[{"ant":0}],"size":2,"data":"AQI="}],"future":true}"#;
    assert!(Packet::parse(&datagram(0, true, extra)).is_ok());
    let base = r#"{"rxpk":[{"tmst":1,"chan":0,"rfch":0,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","rssi":-50,"size":2,"data":"AQI="}]}"#;
    assert!(Packet::parse(&datagram(0, true, base)).is_ok());
    // A frame entry that does not parse or is out of range is left out, with why; the
    // datagram (and the good frame beside it) is kept, so it is still acknowledged.
    let good = &base[9..base.len() - 2];
    for bad in [
        good.replace("\"size\":2", "\"size\":3"),
        good.replace("SF7BW125", "SF13BW125"),
        good.replace("SF7BW125", "SF7BW126"),
        good.replace("\"modu\":\"LORA\"", "\"modu\":\"FSK\""),
        good.replace("\"modu\":\"LORA\"", "\"modu\":\"LR-FHSS\""),
        good.replace("\"stat\":1", "\"stat\":2"),
        good.replace("\"data\":\"AQI=\"", "\"data\":\"A!I=\""),
        good.replace("\"tmst\":1,", ""),
        good.replace("\"rssi\":-50", "\"rssi\":\"-50\""),
        good.replace("\"rssi\":-50", "\"rssi\":1e30"),
        good.replace("\"freq\":868.1", "\"freq\":-1"),
        good.replace("\"rssi\":-50", "\"rssi\":-50,\"lsnr\":1e308"),
        "7".to_string(),
    ] {
        let body = format!("{{\"rxpk\":[{bad},{good}]}}");
        match Packet::parse(&datagram(0, true, &body)) {
            Ok(Packet::PushData { data, .. }) => {
                assert_eq!(data.rxpk.len(), 1, "{bad}");
                assert_eq!(data.rejected.len(), 1, "{bad}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // The datagram itself must still be a JSON object with an array of frames.
    for bad in [
        base.replace("}]}", "}]"),
        "[]".to_string(),
        r#"{"rxpk":{"tmst":1}}"#.to_string(),
    ] {
        let err = Packet::parse(&datagram(0, true, &bad));
        assert!(err.is_err(), "accepted {bad}");
    }
    let no_time = r#"{"txpk":{"freq":869.525,"rfch":0,"modu":"LORA","datr":"SF9BW125","size":1,"data":"AA=="}}"#;
    assert!(matches!(
        Packet::parse(&datagram(3, false, no_time)),
        Err(GwmpError::Invalid { what: "txpk", .. })
    ));
    assert!(Packet::parse(&datagram(5, true, r#"{"txpk_ack":{"error":"LATE"}}"#)).is_err());
}

#[test]
fn header_errors() {
    assert!(matches!(
        Packet::parse(&[2, 0, 0]),
        Err(GwmpError::Short { .. })
    ));
    assert!(matches!(
        Packet::parse(&[1, 0, 0, 0]),
        Err(GwmpError::Version(1))
    ));
    assert!(matches!(
        Packet::parse(&[2, 0, 0, 9]),
        Err(GwmpError::Identifier(9))
    ));
    assert!(matches!(
        Packet::parse(&[2, 0, 0, 2, 1, 2]),
        Err(GwmpError::Short { need: 12, .. })
    ));
    assert!(Packet::parse(&[2, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]).is_err());
}

#[test]
fn downlink_builder() {
    let tx = TxPk::lorawan_downlink(1_000_000, 869_525_000, 9, 125, 14, vec![0x60, 1, 2]);
    let p = Packet::PullResp {
        token: 3,
        data: PullResp { txpk: tx },
    };
    let text = String::from_utf8(p.to_bytes()[4..].to_vec()).unwrap();
    assert!(text.contains("\"datr\":\"SF9BW125\""), "{text}");
    assert!(text.contains("\"ipol\":true"), "{text}");
    assert!(text.contains("\"freq\":869.525"), "{text}");
    assert!(text.contains("\"data\":\"YAEC\""), "{text}");
    assert_eq!(Packet::parse(&p.to_bytes()).unwrap(), p);
}

/// A status report that does not parse is left out; the frames beside it are kept.
#[test]
fn a_malformed_stat_does_not_drop_the_frames_beside_it() {
    let rxpk = r#"{"tmst":1,"chan":0,"rfch":0,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","rssi":-50,"size":2,"data":"AQI="}"#;
    for stat in [
        r#"{"ackr":-5e300}"#,
        r#"{"lati":91.5}"#,
        r#"{"rxnb":9223372036854775808}"#,
        r#"{"rxnb":"many"}"#,
        r#"{"lati":[1]}"#,
        r#""up""#,
    ] {
        let json = format!(r#"{{"rxpk":[{rxpk}],"stat":{stat}}}"#);
        let mut dgram = vec![2, 0x12, 0x34, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        dgram.extend_from_slice(json.as_bytes());
        match Packet::parse(&dgram) {
            Ok(Packet::PushData { data, .. }) => {
                assert_eq!(data.rxpk.len(), 1, "{stat}");
                assert!(data.stat.is_none(), "{stat}");
            }
            other => panic!("{stat}: {other:?}"),
        }
    }
}
