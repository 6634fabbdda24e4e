//! What a scanner hands the decoders: one advertisement (merged with its scan response, as
//! BlueZ does), already split into its AD elements. Drivers fill it from btleplug's
//! properties or from raw AD bytes ([`Advertisement::from_ad_bytes`], for HCI and the
//! emulator). This module only holds and parses the container; it knows no format.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::error::{take, Result};

/// A 6-byte device address in display order (MSB first: `[0x54, 0x48, ..]` is
/// `54:48:..`), the order btleplug's `BDAddr::into_inner()` returns and the BTHome nonce uses.
pub type Address = [u8; 6];

/// `AA:BB:CC:DD:EE:FF` (upper case, as BlueZ prints it).
pub fn format_address(address: &Address) -> String {
    let mut s = String::with_capacity(17);
    for (i, b) in address.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push(HEX_UPPER[usize::from(b >> 4)] as char);
        s.push(HEX_UPPER[usize::from(b & 0x0F)] as char);
    }
    s
}

/// Parses `AA:BB:CC:DD:EE:FF` (or with `-`, or without separators; any case).
pub fn parse_address(s: &str) -> Option<Address> {
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b':' && *c != b'-').collect();
    if digits.len() != 12 {
        return None;
    }
    let mut out = [0u8; 6];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lower-case hex of `bytes`, no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX_LOWER[usize::from(b >> 4)] as char);
        s.push(HEX_LOWER[usize::from(b & 0x0F)] as char);
    }
    s
}

/// Parses hex (any case, no separators); `None` on odd length or a non-hex digit.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    s.chunks(2)
        .map(|p| Some((hex_digit(p[0])? << 4) | hex_digit(p[1])?))
        .collect()
}

/// A service UUID as a 128-bit number. 16- and 32-bit UUIDs are shorthands for UUIDs on
/// the Bluetooth base UUID `0000xxxx-0000-1000-8000-00805f9b34fb`, which is how btleplug
/// (and BlueZ) key service data; `BleUuid::from_u128(uuid.as_u128())` converts theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BleUuid(pub u128);

impl BleUuid {
    const BASE: u128 = 0x0000_0000_0000_1000_8000_0080_5F9B_34FB;

    pub const fn from_u128(v: u128) -> BleUuid {
        BleUuid(v)
    }

    pub const fn from_u16(v: u16) -> BleUuid {
        BleUuid(BleUuid::BASE | ((v as u128) << 96))
    }

    pub const fn from_u32(v: u32) -> BleUuid {
        BleUuid(BleUuid::BASE | ((v as u128) << 96))
    }

    /// The 16-bit form, when this is a 16-bit UUID on the base UUID.
    pub fn as_u16(self) -> Option<u16> {
        let short = self.0 >> 96;
        (self.0 & !(0xFFFF_FFFF_u128 << 96) == BleUuid::BASE && short <= 0xFFFF)
            .then_some(short as u16)
    }

    /// Parses `fcd2` (16-bit), `0000fcd2` (32-bit) or the full 36-character form.
    pub fn parse(s: &str) -> Option<BleUuid> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        let bytes = from_hex(&hex)?;
        let mut v: u128 = 0;
        for b in &bytes {
            v = (v << 8) | u128::from(*b);
        }
        match (bytes.len(), s.len()) {
            (2, 4) => Some(BleUuid::from_u16(v as u16)),
            (4, 8) => Some(BleUuid::from_u32(v as u32)),
            (16, 36) | (16, 32) => Some(BleUuid(v)),
            _ => None,
        }
    }
}

impl fmt::Display for BleUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = to_hex(&self.0.to_be_bytes());
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl Serialize for BleUuid {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The kind of device address, as the controller reports it. Decoders do not use it;
/// drivers do (a random resolvable address changes, so it is no stable device id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressType {
    Public,
    Random,
    #[default]
    Unknown,
}

/// One received advertisement (with its scan response merged in).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Advertisement {
    /// The sender's address, display order (MSB first).
    #[serde(serialize_with = "serialize_address")]
    pub address: Address,
    pub address_type: AddressType,
    /// Received signal strength in dBm, when the scanner reports it.
    pub rssi: Option<i16>,
    /// The complete local name, or the shortened one when only that was sent.
    pub local_name: Option<String>,
    /// Service data by UUID (AD types 0x16, 0x20, 0x21), UUID bytes removed.
    pub service_data: BTreeMap<BleUuid, Vec<u8>>,
    /// Manufacturer-specific data by company id (AD type 0xFF), company id removed.
    pub manufacturer_data: BTreeMap<u16, Vec<u8>>,
}

fn serialize_address<S: Serializer>(a: &Address, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format_address(a))
}

impl Advertisement {
    /// An advertisement from `address` with nothing in it yet.
    pub fn new(address: Address) -> Advertisement {
        Advertisement {
            address,
            ..Default::default()
        }
    }

    /// Adds service data under a 16-bit UUID (builder style, for drivers and tests).
    pub fn with_service_data(mut self, uuid16: u16, data: impl Into<Vec<u8>>) -> Advertisement {
        self.service_data
            .insert(BleUuid::from_u16(uuid16), data.into());
        self
    }

    /// Adds manufacturer data under a company id (builder style).
    pub fn with_manufacturer_data(
        mut self,
        company: u16,
        data: impl Into<Vec<u8>>,
    ) -> Advertisement {
        self.manufacturer_data.insert(company, data.into());
        self
    }

    /// The service data under a 16-bit UUID, if any.
    pub fn service_data_16(&self, uuid16: u16) -> Option<&[u8]> {
        self.service_data
            .get(&BleUuid::from_u16(uuid16))
            .map(Vec::as_slice)
    }

    /// Builds an advertisement from raw AD structures (`len | type | data`, repeated), as an
    /// HCI LE Advertising Report or the BTHome spec's examples carry them. A zero length
    /// ends the data (the rest is padding); a structure running past the end is an error.
    /// Flags, TX power and the service UUID lists are read past; they carry no readings.
    pub fn from_ad_bytes(
        address: Address,
        address_type: AddressType,
        rssi: Option<i16>,
        mut bytes: &[u8],
    ) -> Result<Advertisement> {
        let mut adv = Advertisement {
            address,
            address_type,
            rssi,
            ..Default::default()
        };
        let mut shortened_name = None;
        while let Some((&len, rest)) = bytes.split_first() {
            if len == 0 {
                break;
            }
            bytes = rest;
            let element = take(&mut bytes, usize::from(len), "AD structure")?;
            let (ad_type, mut data) = (element[0], &element[1..]);
            match ad_type {
                0x08 => shortened_name = Some(String::from_utf8_lossy(data).into_owned()),
                0x09 => adv.local_name = Some(String::from_utf8_lossy(data).into_owned()),
                0x16 => {
                    let u = take(&mut data, 2, "16-bit service data UUID")?;
                    let uuid = BleUuid::from_u16(u16::from_le_bytes([u[0], u[1]]));
                    adv.service_data.insert(uuid, data.to_vec());
                }
                0x20 => {
                    let u = take(&mut data, 4, "32-bit service data UUID")?;
                    let uuid = BleUuid::from_u32(u32::from_le_bytes([u[0], u[1], u[2], u[3]]));
                    adv.service_data.insert(uuid, data.to_vec());
                }
                0x21 => {
                    let u = take(&mut data, 16, "128-bit service data UUID")?;
                    let mut be = [0u8; 16];
                    for (i, b) in u.iter().rev().enumerate() {
                        be[i] = *b;
                    }
                    adv.service_data
                        .insert(BleUuid(u128::from_be_bytes(be)), data.to_vec());
                }
                0xFF => {
                    let c = take(&mut data, 2, "manufacturer data company id")?;
                    adv.manufacturer_data
                        .insert(u16::from_le_bytes([c[0], c[1]]), data.to_vec());
                }
                _ => {}
            }
        }
        if adv.local_name.is_none() {
            adv.local_name = shortened_name;
        }
        Ok(adv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_forms() {
        let u = BleUuid::from_u16(0xFCD2);
        assert_eq!(u.to_string(), "0000fcd2-0000-1000-8000-00805f9b34fb");
        assert_eq!(u.as_u16(), Some(0xFCD2));
        assert_eq!(BleUuid::parse("fcd2"), Some(u));
        assert_eq!(
            BleUuid::parse("0000FCD2-0000-1000-8000-00805F9B34FB"),
            Some(u)
        );
        assert_eq!(BleUuid::from_u32(0x1234_5678).as_u16(), None);
        assert_eq!(BleUuid(1).as_u16(), None);
    }

    #[test]
    fn addresses() {
        let a = [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5];
        assert_eq!(format_address(&a), "54:48:E6:8F:80:A5");
        assert_eq!(parse_address("54:48:e6:8f:80:a5"), Some(a));
        assert_eq!(parse_address("5448E68F80A5"), Some(a));
        assert_eq!(parse_address("54:48:E6"), None);
        assert_eq!(parse_address("zz:48:E6:8F:80:A5"), None);
    }

    /// The full advertising payload from the BTHome format page (bthome.io, format.html):
    /// flags, the complete local name "DIY-sensor" and the BTHome service data.
    #[test]
    fn bthome_spec_advertising_payload() {
        let raw = from_hex("0201060B094449592D73656E736F720A16D2FC4002C40903BF13").unwrap();
        let adv =
            Advertisement::from_ad_bytes([1, 2, 3, 4, 5, 6], AddressType::Public, Some(-60), &raw)
                .unwrap();
        assert_eq!(adv.local_name.as_deref(), Some("DIY-sensor"));
        assert_eq!(
            adv.service_data_16(0xFCD2),
            Some(&[0x40, 0x02, 0xC4, 0x09, 0x03, 0xBF, 0x13][..])
        );
    }

    #[test]
    fn ad_structure_past_the_end_is_an_error() {
        let err = Advertisement::from_ad_bytes([0; 6], AddressType::Unknown, None, &[0x05, 0x16])
            .unwrap_err();
        assert!(matches!(err, crate::Error::Truncated { .. }));
        // Zero length ends the data; manufacturer data keeps its company id as the key.
        let adv = Advertisement::from_ad_bytes(
            [0; 6],
            AddressType::Unknown,
            None,
            &[0x04, 0xFF, 0x99, 0x04, 0x05, 0x00, 0x33],
        )
        .unwrap();
        assert_eq!(adv.manufacturer_data.get(&0x0499), Some(&vec![0x05]));
    }
}
