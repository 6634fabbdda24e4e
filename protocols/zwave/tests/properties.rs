//! Properties: frames built and parsed back, in any chunking and behind noise; every typed
//! message and command class round-trips through its encoder; random bytes never panic any
//! decoder, and whatever they decode to re-encodes to the same value.

use fieldgate_zwave::message::{Callback, Inbound, Request, Unsolicited};
use fieldgate_zwave::samples::{random_cc, random_inbound, random_request, Rng};
use fieldgate_zwave::{normalize, Cc, DataFrame, Frame, FrameType, SerialParser};
use proptest::prelude::*;

fn data_frame() -> impl Strategy<Value = DataFrame> {
    (
        prop_oneof![Just(0u8), Just(1u8), any::<u8>()],
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..=252),
    )
        .prop_map(|(t, f, p)| DataFrame::new(FrameType::from_byte(t), f, p))
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        1 => Just(Frame::Ack),
        1 => Just(Frame::Nak),
        1 => Just(Frame::Can),
        6 => data_frame().prop_map(Frame::Data),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frames_survive_any_chunking(frames in proptest::collection::vec(frame(), 1..12), chunk in 1usize..40) {
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(f.to_bytes().unwrap());
        }
        let mut p = SerialParser::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            got.extend(p.feed(piece));
        }
        prop_assert_eq!(&got, &frames);
        prop_assert_eq!(p.buffered(), 0);
        let s = p.stats();
        prop_assert_eq!(s.bad_checksum + s.dropped_bytes + s.bad_length, 0);
    }

    #[test]
    fn frames_are_found_after_noise(noise in proptest::collection::vec(any::<u8>(), 0..64), f in data_frame()) {
        // Noise, a quiet line (the driver flushes a stalled partial), then a real frame.
        let mut p = SerialParser::new();
        let _ = p.feed(&noise);
        while p.flush_stalled().is_some() {
            let _ = std::iter::from_fn(|| p.next_event()).count();
        }
        let got = p.feed(&f.to_bytes().unwrap());
        prop_assert_eq!(got.last(), Some(&Frame::Data(f)));
    }

    #[test]
    fn random_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..600), chunk in 1usize..64, max_len in 3u8..=255) {
        let mut p = SerialParser::with_max_len(max_len);
        for piece in bytes.chunks(chunk) {
            while let Some(ev) = { p.push(&[]); p.next_event() } {
                let _ = ev;
            }
            for f in p.feed(piece) {
                if let Frame::Data(d) = &f {
                    prop_assert_eq!(DataFrame::from_bytes(&d.to_bytes().unwrap()).unwrap(), d.clone());
                    let _ = Inbound::decode(d);
                    let _ = Request::decode(d);
                }
            }
            let _ = p.flush_stalled();
        }
    }

    #[test]
    fn typed_controller_frames_round_trip(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let msg = random_inbound(&mut rng);
        let frame = msg.to_frame().unwrap();
        let bytes = frame.to_bytes().unwrap();
        prop_assert_eq!(Inbound::decode(&DataFrame::from_bytes(&bytes).unwrap()).unwrap(), msg);
    }

    #[test]
    fn typed_requests_round_trip(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let req = random_request(&mut rng);
        let bytes = req.to_bytes().unwrap();
        prop_assert_eq!(Request::decode(&DataFrame::from_bytes(&bytes).unwrap()).unwrap(), req);
    }

    #[test]
    fn command_classes_round_trip(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let cc = random_cc(&mut rng);
        let bytes = cc.encode().unwrap();
        let back = Cc::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &cc);
        prop_assert_eq!(back.encode().unwrap(), bytes);
        let _ = normalize(&back);
    }

    #[test]
    fn random_cc_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(cc) = Cc::decode(&bytes) {
            let _ = normalize(&cc);
            let again = cc.encode().unwrap();
            prop_assert_eq!(Cc::decode(&again).unwrap(), cc);
        }
    }

    #[test]
    fn known_cc_prefixes_decode_or_fail_cleanly(
        cc_id in prop_oneof![Just(0x20u8), Just(0x25), Just(0x26), Just(0x31), Just(0x32), Just(0x5E), Just(0x60), Just(0x6C), Just(0x70), Just(0x71), Just(0x72), Just(0x80), Just(0x84), Just(0x85), Just(0x86), Just(0x98), Just(0x9F)],
        cmd in 0u8..0x20,
        rest in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut bytes = vec![cc_id, cmd];
        bytes.extend(rest);
        if let Ok(cc) = Cc::decode(&bytes) {
            let _ = normalize(&cc);
            let again = cc.encode().unwrap();
            prop_assert_eq!(Cc::decode(&again).unwrap(), cc);
        }
    }

    #[test]
    fn random_payloads_of_known_functions_decode_or_fail_cleanly(
        function in prop_oneof![Just(0x02u8), Just(0x04), Just(0x05), Just(0x07), Just(0x0A), Just(0x13), Just(0x15), Just(0x20), Just(0x29), Just(0x2A), Just(0x2E), Just(0x41), Just(0x49), Just(0x4A), Just(0x4B), Just(0x56), Just(0x60), Just(0x61), Just(0x62), Just(0xA8)],
        response in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let frame = if response { DataFrame::response(function, payload) } else { DataFrame::request(function, payload) };
        if let Ok(msg) = Inbound::decode(&frame) {
            let again = msg.to_frame().unwrap();
            prop_assert_eq!(Inbound::decode(&again).unwrap(), msg.clone());
            if let Inbound::Unsolicited(u) = &msg {
                if let Some(cc) = u.command_class() {
                    let _ = Cc::decode(cc);
                }
            }
            if let Inbound::Callback(Callback::SendData { report: Some(r), .. }) = &msg {
                prop_assert!(r.repeaters().len() <= 4);
            }
            let _ = matches!(msg, Inbound::Unsolicited(Unsolicited::Unknown(_)));
        }
        if let Ok(req) = Request::decode(&frame) {
            prop_assert_eq!(Request::decode(&req.to_frame().unwrap()).unwrap(), req);
        }
    }
}
