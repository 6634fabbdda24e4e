//! Pure BLE advertisement decoders for fieldgate: an [`Advertisement`] in, normalized
//! readings out. No IO, no async, no clock: the driver scans, this crate decodes.
//!
//! Formats, tried in this order (the first one present in the advertisement wins):
//! - [`bthome`] v2 (service data 0xFCD2), with AES-CCM decryption, replay and downgrade
//!   protection ([`Keys`], [`CounterStore`]);
//! - [`xiaomi`] custom firmware (service data 0x181A): pvvx "custom" and ATC1441;
//! - [`ruuvi`] data format 5 / RAWv2 (manufacturer data 0x0499);
//! - [`beacon`]: iBeacon (manufacturer data 0x004C) and Eddystone UID/URL/TLM/EID (0xFEAA).
//!
//! [`decode::decode_to_json`] is the same, from the text a technician has, to JSON
//! (`fieldgate decode ble`).
//!
//! An advertisement in none of them is [`Decoded::Unknown`] (the caller counts it); one
//! that claims a format and breaks it is an [`Error`]. Nothing here panics on any input
//! (proptest and a cargo-fuzz target hold it to that).
//!
//! ```
//! use fieldgate_ble::{decode, Advertisement, Context, Decoded};
//!
//! // BTHome spec example: 25.00 °C and 50.55 % from a plaintext sensor.
//! let adv = Advertisement::new([0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5])
//!     .with_service_data(0xFCD2, vec![0x40, 0x02, 0xC4, 0x09, 0x03, 0xBF, 0x13]);
//! let Decoded::Known(report) = decode(&adv, &Context::none()).unwrap() else { panic!() };
//! assert_eq!(report.number("temperature"), Some(25.0));
//! assert_eq!(report.reading("humidity").unwrap().unit, Some("%"));
//! ```

pub mod advert;
pub mod beacon;
pub mod bthome;
/// Not the [`decode()`] function: the text-in, JSON-out form of it for the CLI.
pub mod decode;
mod dedup;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod encode;
pub mod error;
pub mod report;
pub mod ruuvi;
pub mod samples;
pub mod xiaomi;

pub use advert::{
    format_address, from_hex, parse_address, to_hex, Address, AddressType, Advertisement, BleUuid,
};
pub use bthome::{BindKey, Context, CounterStore, Counters, Keys};
pub use dedup::PacketIdFilter;
pub use error::{Error, Result};
pub use report::{Decoded, Event, Format, Meta, Reading, Report, Value};

/// Decodes one advertisement. `ctx` holds the BTHome keys and the last accepted
/// encryption counters ([`Context::none`] when there are none).
pub fn decode(adv: &Advertisement, ctx: &Context<'_>) -> Result<Decoded> {
    if let Some(data) = adv.service_data_16(bthome::UUID16) {
        return bthome::decode(adv, data, ctx).map(Decoded::Known);
    }
    if let Some(data) = adv.service_data_16(xiaomi::UUID16) {
        if let Some(report) = xiaomi::decode(data)? {
            return Ok(Decoded::Known(report));
        }
    }
    if let Some(data) = adv.manufacturer_data.get(&ruuvi::COMPANY_ID) {
        if let Some(report) = ruuvi::decode(data)? {
            return Ok(Decoded::Known(report));
        }
    }
    if let Some(data) = adv.manufacturer_data.get(&beacon::APPLE_COMPANY_ID) {
        if let Some(report) = beacon::decode_ibeacon(data)? {
            return Ok(Decoded::Known(report));
        }
    }
    if let Some(data) = adv.service_data_16(beacon::EDDYSTONE_UUID16) {
        if let Some(report) = beacon::decode_eddystone(data)? {
            return Ok(Decoded::Known(report));
        }
    }
    Ok(Decoded::Unknown)
}
