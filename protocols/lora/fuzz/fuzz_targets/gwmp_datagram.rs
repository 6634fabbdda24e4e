//! Feeds arbitrary datagrams to the GWMP parser, and every packet it accepts back through
//! the encoder. Run with `cargo fuzz run gwmp_datagram` from protocols/lora. Nothing may panic,
//! and what parses must parse again to the same packet after encoding.
#![no_main]

use fieldgate_lora::gwmp::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        let again = Packet::parse(&p.to_bytes()).expect("our own encoding parses");
        // NaN never comes out of JSON, so equality holds.
        assert_eq!(again, p);
    }
});
