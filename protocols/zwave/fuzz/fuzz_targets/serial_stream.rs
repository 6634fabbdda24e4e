//! Feeds arbitrary bytes, in arbitrary chunk sizes, to the Serial API parser and decodes every
//! frame it yields down to command classes and readings. Run with `cargo fuzz run
//! serial_stream` from protocols/zwave. Nothing may panic, every yielded frame must re-encode
//! to itself, and every decoded message and command class must re-encode and decode back to
//! the same value.
#![no_main]

use fieldgate_zwave::message::{Inbound, Request};
use fieldgate_zwave::{normalize, Cc, DataFrame, Frame, SerialParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x3F).max(1);
    let mut parser = SerialParser::with_max_len(if control & 0x40 != 0 { 64 } else { 255 });
    for piece in bytes.chunks(chunk) {
        for frame in parser.feed(piece) {
            let Frame::Data(d) = frame else { continue };
            let wire = d.to_bytes().expect("parsed frames are within limits");
            assert_eq!(DataFrame::from_bytes(&wire).as_ref(), Ok(&d));
            if let Ok(msg) = Inbound::decode(&d) {
                let again = msg.to_frame().expect("decoded messages re-encode");
                assert_eq!(Inbound::decode(&again).as_ref(), Ok(&msg));
            }
            if let Ok(req) = Request::decode(&d) {
                let again = req.to_frame().expect("decoded requests re-encode");
                assert_eq!(Request::decode(&again).as_ref(), Ok(&req));
            }
            // Every payload is also tried as a command class.
            if let Ok(cc) = Cc::decode(&d.payload) {
                let _ = normalize(&cc);
                let again = cc.encode().expect("decoded CCs re-encode");
                assert_eq!(Cc::decode(&again).as_ref(), Ok(&cc));
            }
        }
        if control & 0x80 != 0 {
            let _ = parser.flush_stalled();
        }
    }
});
