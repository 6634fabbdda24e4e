//! One-call decoding of an advertisement given as text, for the `fieldgate decode ble` CLI
//! ([`decode_to_json`]): the service and manufacturer data a scanner or `btmon` showed, the
//! address, and optionally the device's bindkey and its last accepted counter. Builds on
//! the other modules; adds no formats.
//!
//! The bindkey only ever goes into [`Keys`]; nothing here prints or returns it, and the
//! errors about a bad key say what is wrong with it without quoting it.

use std::collections::BTreeMap;

use crate::advert::{from_hex, parse_address, Address, Advertisement, BleUuid};
use crate::bthome::{BindKey, Context, CounterStore, Keys};
use crate::error::Error;
use crate::report::Decoded;

/// What the CLI was given, as text (each field is parsed here, with an error naming it).
#[derive(Debug, Clone, Default)]
pub struct AdvertisementText<'a> {
    /// `UUID=HEX`: `fcd2=40...`, `0x181a=...` or a 128-bit UUID.
    pub service_data: &'a [String],
    /// `COMPANY=HEX`, the company id in hex: `0x0499=05...` or `0499=05...`.
    pub manufacturer_data: &'a [String],
    /// `AA:BB:CC:DD:EE:FF`; all zeros when absent (BTHome encryption needs the real one
    /// unless the payload carries it).
    pub mac: Option<&'a str>,
    pub name: Option<&'a str>,
    /// dBm.
    pub rssi: Option<&'a str>,
}

/// Why [`decode_to_json`] has nothing to print but an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeFailure {
    /// An argument that does not parse; the message names it.
    #[error("{0}")]
    Input(String),
    #[error("no advertisement data: give --service-data UUID=HEX or --manufacturer-data ID=HEX")]
    NoData,
    /// The advertisement claims a format and breaks it, or fails a security check (bad
    /// MIC, replayed counter, missing key, plaintext from a keyed device).
    #[error(transparent)]
    Decode(#[from] Error),
}

fn input(msg: String) -> DecodeFailure {
    DecodeFailure::Input(msg)
}

fn hex_value(arg: &str, what: &str, hex: &str) -> Result<Vec<u8>, DecodeFailure> {
    let cleaned: String = hex
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, ':' | '-'))
        .collect();
    let cleaned = cleaned
        .strip_prefix("0x")
        .or_else(|| cleaned.strip_prefix("0X"))
        .unwrap_or(&cleaned);
    from_hex(cleaned).ok_or_else(|| {
        input(format!(
            "{what} {arg:?}: the data after '=' is not hex (an even number of hex digits)"
        ))
    })
}

/// Parses `UUID=HEX` (the UUID in 16-bit, 32-bit or 128-bit form, `0x` allowed).
pub fn parse_service_data(arg: &str) -> Result<(BleUuid, Vec<u8>), DecodeFailure> {
    let (uuid, hex) = arg
        .split_once('=')
        .ok_or_else(|| input(format!("--service-data {arg:?}: expected UUID=HEX")))?;
    let uuid_text = uuid.trim();
    let uuid_text = uuid_text
        .strip_prefix("0x")
        .or_else(|| uuid_text.strip_prefix("0X"))
        .unwrap_or(uuid_text);
    let uuid = BleUuid::parse(uuid_text).ok_or_else(|| {
        input(format!(
            "--service-data {arg:?}: {uuid:?} is not a UUID (4, 8 or 32 hex digits, or the \
             dashed 128-bit form)"
        ))
    })?;
    Ok((uuid, hex_value(arg, "--service-data", hex)?))
}

/// Parses `COMPANY=HEX`, the company id in hex (`0x0499` or `0499`, as Bluetooth SIG
/// lists them).
pub fn parse_manufacturer_data(arg: &str) -> Result<(u16, Vec<u8>), DecodeFailure> {
    let (id, hex) = arg
        .split_once('=')
        .ok_or_else(|| input(format!("--manufacturer-data {arg:?}: expected ID=HEX")))?;
    let id_text = id.trim();
    let digits = id_text
        .strip_prefix("0x")
        .or_else(|| id_text.strip_prefix("0X"))
        .unwrap_or(id_text);
    let company = (!digits.is_empty() && digits.len() <= 4)
        .then(|| u16::from_str_radix(digits, 16).ok())
        .flatten()
        .ok_or_else(|| {
            input(format!(
                "--manufacturer-data {arg:?}: {id:?} is not a company id (1 to 4 hex digits, \
                 e.g. 0x0499)"
            ))
        })?;
    Ok((company, hex_value(arg, "--manufacturer-data", hex)?))
}

/// Builds the advertisement the text describes.
pub fn advertisement(text: &AdvertisementText<'_>) -> Result<Advertisement, DecodeFailure> {
    if text.service_data.is_empty() && text.manufacturer_data.is_empty() {
        return Err(DecodeFailure::NoData);
    }
    let address: Address = match text.mac {
        Some(mac) => parse_address(mac.trim()).ok_or_else(|| {
            input(format!(
                "--mac {mac:?} is not a device address (AA:BB:CC:DD:EE:FF)"
            ))
        })?,
        None => [0; 6],
    };
    let mut adv = Advertisement::new(address);
    for arg in text.service_data {
        let (uuid, data) = parse_service_data(arg)?;
        adv.service_data.insert(uuid, data);
    }
    for arg in text.manufacturer_data {
        let (company, data) = parse_manufacturer_data(arg)?;
        adv.manufacturer_data.insert(company, data);
    }
    adv.local_name = text.name.map(str::to_string);
    adv.rssi = text
        .rssi
        .map(|r| {
            r.trim()
                .parse::<i16>()
                .map_err(|_| input(format!("--rssi {r:?} is not a number of dBm (e.g. -70)")))
        })
        .transpose()?;
    Ok(adv)
}

/// The last accepted counter of the one device being decoded.
struct LastCounter(Option<u32>);

impl CounterStore for LastCounter {
    fn last_counter(&self, _: &Address) -> Option<u32> {
        self.0
    }
}

/// `fieldgate decode ble`: the decoded report (format, readings with units, events, meta)
/// as pretty JSON, or `{"format": "unknown"}` for an advertisement in no format this crate
/// knows. `bindkey` (32 hex digits) is the device's BTHome key; `last_counter` the last
/// encryption counter accepted from it, to check a capture for replay.
pub fn decode_to_json(
    text: &AdvertisementText<'_>,
    bindkey: Option<&str>,
    last_counter: Option<&str>,
) -> Result<String, DecodeFailure> {
    let adv = advertisement(text)?;
    let mut keys = Keys::new();
    if let Some(key) = bindkey {
        // BindKey's errors describe the key ("not hex", "8 bytes"), never quote it.
        let key = BindKey::from_hex(key).map_err(|e| input(format!("--bindkey: {e}")))?;
        keys.insert(adv.address, key);
    }
    let last = last_counter
        .map(|c| {
            c.trim().parse::<u32>().map_err(|_| {
                input(format!(
                    "--last-counter {c:?} is not a counter (0 to 4294967295)"
                ))
            })
        })
        .transpose()?;
    let counters = LastCounter(last);
    let decoded = crate::decode(&adv, &Context::new(&keys, &counters))?;
    let json = match decoded {
        Decoded::Known(report) => serde_json::to_string_pretty(&report),
        Decoded::Unknown => serde_json::to_string_pretty(&BTreeMap::from([("format", "unknown")])),
    };
    Ok(json.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";
    const MAC: &str = "54:48:E6:8F:80:A5";

    fn text<'a>(service: &'a [String], mac: Option<&'a str>) -> AdvertisementText<'a> {
        AdvertisementText {
            service_data: service,
            mac,
            ..Default::default()
        }
    }

    fn json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn bthome_spec_examples_plain_and_encrypted() {
        // bthome.io format.html: 25.00 °C, 50.55 %.
        let sd = ["fcd2=4002c40903bf13".to_string()];
        let v = json(&decode_to_json(&text(&sd, Some(MAC)), None, None).unwrap());
        assert_eq!(v["format"], "bthome");
        assert_eq!(v["readings"][0]["name"], "temperature");
        assert_eq!(v["readings"][0]["value"], 25.0);
        assert_eq!(v["readings"][0]["unit"], "°C");
        assert_eq!(v["meta"]["encrypted"], false);

        // bthome.io encryption.html: the same readings sealed with the spec's key.
        let sd = ["0xFCD2=41e445f3c9962b332211006c7c4519".to_string()];
        let out = decode_to_json(&text(&sd, Some(MAC)), Some(KEY), None).unwrap();
        assert!(!out.contains(KEY), "the key must not be printed");
        let v = json(&out);
        assert_eq!(v["meta"]["encrypted"], true);
        assert_eq!(v["meta"]["counter"], 0x0011_2233);
        assert_eq!(v["readings"][1]["value"], 50.55);
    }

    #[test]
    fn security_failures_are_errors_that_name_themselves() {
        let sd = ["fcd2=41e445f3c9962b332211006c7c4519".to_string()];
        let t = text(&sd, Some(MAC));
        let missing = decode_to_json(&t, None, None).unwrap_err();
        assert!(matches!(
            missing,
            DecodeFailure::Decode(Error::MissingKey(_))
        ));
        let wrong = decode_to_json(&t, Some("00112233445566778899aabbccddeeff"), None);
        assert_eq!(wrong, Err(DecodeFailure::Decode(Error::BadMic)));
        let replay = decode_to_json(&t, Some(KEY), Some("1122867")).unwrap_err();
        assert!(replay.to_string().contains("replayed"), "{replay}");
        let short = decode_to_json(&t, Some("231d39"), None).unwrap_err();
        assert!(short.to_string().starts_with("--bindkey"), "{short}");
        assert!(!short.to_string().contains("231d39"));
    }

    #[test]
    fn ruuvi_unknown_and_bad_input() {
        // ruuvi dataformat_05.md "valid data".
        let md = ["0x0499=0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F".to_string()];
        let t = AdvertisementText {
            manufacturer_data: &md,
            ..Default::default()
        };
        let v = json(&decode_to_json(&t, None, None).unwrap());
        assert_eq!(v["format"], "ruuvi_rawv2");
        assert_eq!(v["meta"]["device_address"], "CB:B8:33:4C:88:4F");

        let md = ["ffff=0102".to_string()];
        let t = AdvertisementText {
            manufacturer_data: &md,
            ..Default::default()
        };
        assert_eq!(
            json(&decode_to_json(&t, None, None).unwrap()),
            json(r#"{"format":"unknown"}"#)
        );

        for bad in ["fcd=40", "zzzz=40", "fcd2", "fcd2=4"] {
            let sd = [bad.to_string()];
            let e = decode_to_json(&text(&sd, None), None, None).unwrap_err();
            assert!(matches!(e, DecodeFailure::Input(_)), "{bad}: {e}");
        }
        let sd = ["fcd2=40".to_string()];
        assert!(decode_to_json(&text(&sd, Some("54:48")), None, None).is_err());
        assert_eq!(
            decode_to_json(&text(&[], None), None, None),
            Err(DecodeFailure::NoData)
        );
    }
}
