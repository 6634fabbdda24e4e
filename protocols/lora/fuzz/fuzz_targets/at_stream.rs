//! Feeds arbitrary bytes, in arbitrary chunk sizes, to the RAK3172 AT line parser. Run with
//! `cargo fuzz run at_stream` from protocols/lora. Nothing may panic, and the events must not
//! depend on how the bytes were chunked.
#![no_main]

use fieldgate_lora::rak3172::AtParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let whole = AtParser::new().feed(bytes);
    let mut parser = AtParser::new();
    let pieces: Vec<_> = bytes.chunks(chunk).flat_map(|c| parser.feed(c)).collect();
    assert_eq!(pieces, whole);
});
