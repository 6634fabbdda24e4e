//! Decodes arbitrary bytes as a ZCL frame on an arbitrary cluster, normalizes it, and checks
//! that a decoded frame re-encodes to bytes that decode to the same frame.
//! Run with `cargo +nightly fuzz run zcl_frame` from protocols/zigbee.
#![no_main]

use fieldgate_zigbee::decode::describe_zcl;
use fieldgate_zigbee::zcl::ZclFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cluster = u16::from_le_bytes([data[0], data[1]]);
    let bytes = &data[2..];
    if let Ok(frame) = ZclFrame::decode(cluster, bytes) {
        if let Ok(wire) = frame.encode() {
            let again = ZclFrame::decode(cluster, &wire).expect("re-encoded frame decodes");
            // NaN floats are not equal to themselves; compare the bytes instead.
            assert_eq!(again.encode().ok(), Some(wire));
        }
    }
    let _ = serde_json::to_string(&describe_zcl(cluster, bytes));
});
