//! Feeds arbitrary bytes to every BLE decoder: as raw AD structures, and as the payload
//! under each UUID or company id a decoder listens to, with and without a BTHome key and a
//! last counter. Run with `cargo +nightly fuzz run advertisement` from protocols/ble.
//! Nothing may panic, and every report must serialize.
#![no_main]

use fieldgate_ble::{decode, Advertisement, AddressType, BindKey, Context, Counters, Keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let address = [0xA4, 0xC1, 0x38, 0x00, 0x00, 0x01];
    let keys: Keys = if selector & 0x80 != 0 {
        [(address, BindKey::from_bytes([0x5A; 16]))].into_iter().collect()
    } else {
        Keys::new()
    };
    let counters: Counters = if selector & 0x40 != 0 {
        [(address, 1000u32)].into_iter().collect()
    } else {
        Counters::new()
    };
    let ctx = Context::new(&keys, &counters);
    let adv = match selector % 7 {
        0 => match Advertisement::from_ad_bytes(address, AddressType::Public, None, bytes) {
            Ok(adv) => adv,
            Err(_) => return,
        },
        1 => Advertisement::new(address).with_service_data(0xFCD2, bytes),
        2 => Advertisement::new(address).with_service_data(0x181A, bytes),
        3 => Advertisement::new(address).with_manufacturer_data(0x0499, bytes),
        4 => Advertisement::new(address).with_manufacturer_data(0x004C, bytes),
        5 => Advertisement::new(address).with_service_data(0xFEAA, bytes),
        _ => Advertisement::new(address).with_service_data(0x1234, bytes),
    };
    if let Ok(decoded) = decode(&adv, &ctx) {
        let _ = serde_json::to_string(&decoded);
    }
});
