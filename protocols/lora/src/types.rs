//! The small value types every LoRaWAN module shares: keys, addresses, identifiers, nonces.
//!
//! Wire order is little-endian for all of them; `Display`/`FromStr` use the big-endian hex
//! that consoles, ChirpStack and lora-packet show (DevAddr `49be7df1`, EUI `0102030405060708`).
//! Keys are the exception: a key is 16 bytes in the order written in configs, not a number.
//! `AesKey`'s `Debug` never prints the key: keys must not reach a log.

use std::fmt;
use std::str::FromStr;

/// Why a hex identifier or key did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("expected {expected} hex digits, got {got}")]
    Length { expected: usize, got: usize },
    #[error("odd number of hex digits ({0})")]
    OddLength(usize),
    #[error("not a hex digit: {0:?}")]
    Digit(char),
}

/// Decodes an even-length hex string (either case, no separators) into bytes.
pub fn hex_decode(s: &str) -> Result<Vec<u8>, HexError> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return Err(HexError::OddLength(s.len()));
    }
    let digits = s.as_bytes();
    let mut out = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks_exact(2) {
        let hi = hex_digit(pair[0])?;
        let lo = hex_digit(pair[1])?;
        out.push(hi << 4 | lo);
    }
    Ok(out)
}

fn hex_digit(c: u8) -> Result<u8, HexError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(HexError::Digit(char::from(c))),
    }
}

/// Serializes bytes as lower-case hex (`#[serde(serialize_with = "crate::types::serde_hex")]`).
pub(crate) fn serde_hex<S: serde::Serializer, T: AsRef<[u8]>>(
    bytes: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex_encode(bytes.as_ref()))
}

/// Lower-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn fixed_hex<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let bytes = hex_decode(s)?;
    bytes.try_into().map_err(|v: Vec<u8>| HexError::Length {
        expected: N * 2,
        got: v.len() * 2,
    })
}

/// An AES-128 key (AppKey, NwkSKey, AppSKey). Debug output is redacted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AesKey(pub [u8; 16]);

impl AesKey {
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

impl FromStr for AesKey {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, HexError> {
        fixed_hex::<16>(s).map(AesKey)
    }
}

impl From<[u8; 16]> for AesKey {
    fn from(b: [u8; 16]) -> Self {
        AesKey(b)
    }
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $int:ty, $bytes:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $int);

        impl $name {
            /// Width on the wire, in bytes.
            pub const LEN: usize = $bytes;

            /// Reads the little-endian wire form. `b` must hold exactly `LEN` bytes.
            pub fn from_le_slice(b: &[u8]) -> Self {
                let mut v: $int = 0;
                for (i, byte) in b.iter().take(Self::LEN).enumerate() {
                    v |= <$int>::from(*byte) << (8 * i);
                }
                $name(v)
            }

            /// Appends the little-endian wire form.
            pub fn write_le(&self, out: &mut Vec<u8>) {
                for i in 0..Self::LEN {
                    out.push((self.0 >> (8 * i)) as u8);
                }
            }

            /// The little-endian wire form.
            pub fn to_le_vec(&self) -> Vec<u8> {
                let mut v = Vec::with_capacity(Self::LEN);
                self.write_le(&mut v);
                v
            }
        }

        /// As JSON: the big-endian hex string it displays as.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:0width$x}", self.0, width = Self::LEN * 2)
            }
        }

        impl FromStr for $name {
            type Err = HexError;
            fn from_str(s: &str) -> Result<Self, HexError> {
                let b = fixed_hex::<$bytes>(s)?;
                let mut v: $int = 0;
                for byte in b {
                    v = v << 8 | <$int>::from(byte);
                }
                Ok($name(v))
            }
        }
    };
}

hex_id!(
    /// Device address of an activated device (4 bytes; shown big-endian, little-endian on air).
    DevAddr,
    u32,
    4
);
hex_id!(
    /// A 64-bit EUI: DevEUI, AppEUI/JoinEUI, a gateway's EUI.
    Eui64,
    u64,
    8
);
hex_id!(
    /// Network identifier (24 bits), sent in the Join-Accept.
    NetId,
    u32,
    3
);
hex_id!(
    /// AppNonce (1.0.x) / JoinNonce (1.1): 24 bits chosen by the join server.
    JoinNonce,
    u32,
    3
);
hex_id!(
    /// DevNonce: 16 bits chosen by the device for each Join-Request.
    DevNonce,
    u16,
    2
);

impl Eui64 {
    /// Reads 8 bytes in big-endian order (how GWMP carries a gateway EUI).
    pub fn from_be_bytes(b: [u8; 8]) -> Self {
        Eui64(u64::from_be_bytes(b))
    }
}

/// Which way a frame travels: it selects the Dir byte of the MIC and cipher blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Uplink,
    Downlink,
}

impl Direction {
    /// The `Dir` byte of the B0 and A_i blocks.
    pub fn byte(self) -> u8 {
        match self {
            Direction::Uplink => 0,
            Direction::Downlink => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_show_big_endian_and_travel_little_endian() {
        let a: DevAddr = "49be7df1".parse().unwrap();
        assert_eq!(a, DevAddr(0x49be_7df1));
        assert_eq!(a.to_le_vec(), vec![0xf1, 0x7d, 0xbe, 0x49]);
        assert_eq!(DevAddr::from_le_slice(&[0xf1, 0x7d, 0xbe, 0x49]), a);
        assert_eq!(a.to_string(), "49be7df1");
        let n: JoinNonce = "000001".parse().unwrap();
        assert_eq!(n.to_le_vec(), vec![1, 0, 0]);
        assert_eq!(Eui64(1).to_string(), "0000000000000001");
        assert!("0102".parse::<Eui64>().is_err());
        assert!("zz".parse::<DevNonce>().is_err());
    }

    #[test]
    fn keys_are_never_printed() {
        let k: AesKey = "2b7e151628aed2a6abf7158809cf4f3c".parse().unwrap();
        assert_eq!(format!("{k:?}"), "AesKey(<redacted>)");
        assert_eq!(k.0[0], 0x2b);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex_encode(&hex_decode("00fFa5").unwrap()), "00ffa5");
        assert!(hex_decode("abc").is_err());
        assert!(hex_decode("0g").is_err());
    }
}
