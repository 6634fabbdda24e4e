//! Property tests: build -> parse and encrypt -> decrypt round trips, frame-counter
//! reconstruction across 16-bit rollovers, and parsers that never panic on any input.

use fieldgate_lora::gwmp::Packet;
use fieldgate_lora::lorawan::crypto::xor_frm_payload;
use fieldgate_lora::lorawan::mac::{encode_commands, parse_commands};
use fieldgate_lora::lorawan::{
    reconstruct_fcnt, CfList, DataFrame, DataMessage, DlSettings, FCtrl, FcntVerdict, JoinAccept,
    JoinRequest, PhyPayload, SessionKeys, MAX_FCNT_GAP,
};
use fieldgate_lora::rak3172::AtParser;
use fieldgate_lora::{lpp, AesKey, DevAddr, DevNonce, Direction, Eui64, JoinNonce, NetId};
use proptest::prelude::*;

fn key() -> impl Strategy<Value = AesKey> {
    any::<[u8; 16]>().prop_map(AesKey)
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Uplink), Just(Direction::Downlink)]
}

prop_compose! {
    fn message()(
        direction in direction(),
        confirmed in any::<bool>(),
        dev_addr in any::<u32>(),
        flags in any::<[bool; 4]>(),
        fcnt in any::<u32>(),
        fopts in proptest::collection::vec(any::<u8>(), 0..=15),
        fport in proptest::option::of(any::<u8>()),
        payload in proptest::collection::vec(any::<u8>(), 0..=200),
    ) -> DataMessage {
        let (fopts, payload) = match fport {
            None => (fopts, vec![]),
            Some(0) => (vec![], payload),
            Some(_) => (fopts, payload),
        };
        DataMessage {
            direction,
            confirmed,
            dev_addr: DevAddr(dev_addr),
            fctrl: FCtrl { adr: flags[0], adr_ack_req: flags[1], ack: flags[2], f_pending: flags[3] },
            fcnt,
            fopts,
            fport,
            payload,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn data_frames_round_trip(msg in message(), nwk in key(), app in key()) {
        let keys = SessionKeys { nwk_s_key: nwk, app_s_key: app };
        let frame = DataFrame::seal(&msg, &keys).unwrap();
        let wire = frame.to_bytes().unwrap();
        prop_assert!(wire.len() <= 255);
        let PhyPayload::Data(back) = PhyPayload::parse(&wire).unwrap() else { panic!("not data") };
        prop_assert_eq!(&back, &frame);
        prop_assert_eq!(back.open(&keys, msg.fcnt).unwrap(), msg.clone());
        // The same 16 bits in another 2^16 era fail the MIC.
        prop_assert!(!back.verify_mic(&keys.nwk_s_key, msg.fcnt.wrapping_add(0x1_0000)));
    }

    #[test]
    fn payload_cipher_is_its_own_inverse(
        k in key(), dir in direction(), addr in any::<u32>(), fcnt in any::<u32>(),
        data in proptest::collection::vec(any::<u8>(), 0..=255),
    ) {
        let mut buf = data.clone();
        xor_frm_payload(&k, dir, DevAddr(addr), fcnt, &mut buf);
        if data.len() >= 4 {
            prop_assert_ne!(&buf, &data);
        }
        xor_frm_payload(&k, dir, DevAddr(addr), fcnt, &mut buf);
        prop_assert_eq!(buf, data);
    }

    #[test]
    fn joins_round_trip(
        app in key(), join_eui in any::<u64>(), dev_eui in any::<u64>(), dev_nonce in any::<u16>(),
        join_nonce in 0u32..1 << 24, net_id in 0u32..1 << 24, dev_addr in any::<u32>(),
        dl in any::<u8>(), rx_delay in any::<u8>(), cf in proptest::option::of(any::<[u8; 16]>()),
    ) {
        let jr = JoinRequest::new_signed(Eui64(join_eui), Eui64(dev_eui), DevNonce(dev_nonce), &app);
        let PhyPayload::JoinRequest(back) = PhyPayload::parse(&jr.to_bytes()).unwrap() else { panic!() };
        prop_assert!(back.verify_mic(&app));
        prop_assert_eq!(back, jr);

        let ja = JoinAccept::new(
            JoinNonce(join_nonce), NetId(net_id), DevAddr(dev_addr),
            DlSettings::from_byte(dl), rx_delay, cf.map(CfList),
        );
        let wire = ja.encrypt(&app).to_bytes();
        let PhyPayload::JoinAccept(enc) = PhyPayload::parse(&wire).unwrap() else { panic!() };
        prop_assert_eq!(enc.open(&app).unwrap(), ja);
        prop_assert_eq!(DlSettings::from_byte(dl).byte(), dl);
    }

    #[test]
    fn counters_rebuild_across_rollovers(last in any::<u32>(), step in 1u32..=MAX_FCNT_GAP + 1) {
        let next = u64::from(last) + u64::from(step);
        let got = reconstruct_fcnt(Some(last), next as u16, MAX_FCNT_GAP);
        if next > u64::from(u32::MAX) {
            prop_assert!(got.is_err());
        } else {
            prop_assert_eq!(got, Ok(FcntVerdict::Next { fcnt: next as u32, lost: step - 1 }));
        }
        prop_assert_eq!(reconstruct_fcnt(Some(last), last as u16, MAX_FCNT_GAP), Ok(FcntVerdict::Repeat { fcnt: last }));
    }

    #[test]
    fn counters_far_behind_are_refused(last in 0x2_0000u32.., back in 1u32..=0xffff - MAX_FCNT_GAP - 1) {
        // 1..(65535 - gap) frames behind looks more than MAX_FCNT_GAP ahead: refused.
        prop_assert!(reconstruct_fcnt(Some(last), (last - back) as u16, MAX_FCNT_GAP).is_err());
    }

    #[test]
    fn any_bytes_parse_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = PhyPayload::parse(&b) {
            // Lossless: what parsed re-encodes to the same bytes.
            prop_assert_eq!(p.to_bytes().unwrap(), b.clone());
        }
        let _ = Packet::parse(&b);
        let _ = lpp::decode(&b);
        for dir in [Direction::Uplink, Direction::Downlink] {
            // Re-encoding is stable, though not byte-exact: RFU bits (DevStatusAns margin
            // bits 7..6) are dropped. Frames keep their FOpts bytes, so MICs are unaffected.
            if let Ok(cmds) = parse_commands(dir, &b) {
                let again = encode_commands(dir, &cmds).unwrap();
                prop_assert_eq!(parse_commands(dir, &again).unwrap(), cmds);
            }
        }
        let mut at = AtParser::new();
        for chunk in b.chunks(7) {
            let _ = at.feed(chunk);
        }
    }

    #[test]
    fn gwmp_headers_with_any_json_never_panic(id in 0u8..8, body in "\\PC{0,80}") {
        let mut d = vec![2, 1, 2, id, 0, 1, 2, 3, 4, 5, 6, 7];
        d.extend_from_slice(body.as_bytes());
        if let Ok(p) = Packet::parse(&d) {
            prop_assert_eq!(Packet::parse(&p.to_bytes()).unwrap(), p);
        }
    }
}
