//! Feeds arbitrary bytes, in arbitrary chunk sizes, to the MT stream parser and decodes every
//! frame it yields down to ZCL. Run with `cargo +nightly fuzz run mt_stream` from
//! protocols/zigbee. Nothing may panic, and every yielded frame must re-encode and re-decode.
#![no_main]

use fieldgate_zigbee::decode::describe_frame;
use fieldgate_zigbee::{MtFrame, MtStreamParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut parser = MtStreamParser::new();
    for piece in bytes.chunks(chunk) {
        for frame in parser.feed(piece) {
            let wire = frame.to_bytes().expect("parsed frames are within limits");
            assert_eq!(MtFrame::from_bytes(&wire).as_ref(), Ok(&frame));
            let decoded = describe_frame(frame);
            let _ = serde_json::to_string(&decoded);
        }
    }
});
