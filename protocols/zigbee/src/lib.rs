//! Pure Zigbee codec for fieldgate: bytes in, typed frames out, and back. No IO, no async.
//!
//! Layers, each usable alone:
//! - [`mt`]: Z-Stack MT framing ([`MtFrame`]) and the resyncing [`MtStreamParser`];
//! - [`znp`]: typed ZNP commands ([`ZnpCommand`]) inside MT frames, both directions;
//! - [`zcl`]: Zigbee Cluster Library frames ([`zcl::ZclFrame`]), data types, and the
//!   cluster knowledge that turns attribute values into readings ([`zcl::readings`]);
//! - [`nvitems`]: the Z-Stack NV structures a network backup reads (NIB, active key,
//!   NWK frame counters), in both the packed (CC2531) and aligned (CC26xx) layouts;
//! - [`decode`]: one-call decoding of captured bytes into a serializable report, for
//!   `fieldgate decode zigbee HEX`.
//!
//! Nothing here panics on input: every read is bounds-checked and every failure is an [`Error`].
//! Byte layouts are checked against zigbee-herdsman, zigpy-znp and Z-Stack's MT sources; the
//! comments next to each layout name the source.
//!
//! ```
//! use fieldgate_zigbee::zcl::{clusters, ZclFrame};
//! use fieldgate_zigbee::{MtStreamParser, ZnpCommand};
//!
//! // Driver → NCP: a read of the temperature attribute, wrapped in AF_DATA_REQUEST.
//! let zcl = ZclFrame::read_attributes(5, vec![0x0000]).encode().unwrap();
//! let req = ZnpCommand::af_data_request(0x5DB1, 1, 1, 0x0402, 7, zcl);
//! let wire = req.to_bytes().unwrap();
//!
//! // NCP → driver: bytes arrive in pieces; frames come out whole.
//! let mut parser = MtStreamParser::new();
//! parser.push(&[0xFE, 0x03, 0x44, 0x80]);
//! assert!(parser.next_frame().is_none());
//! parser.push(&[0x00, 0x01, 0x07, 0xC1]);
//! let frame = parser.next_frame().unwrap();
//! assert_eq!(
//!     ZnpCommand::decode(&frame).unwrap(),
//!     ZnpCommand::AfDataConfirm { status: 0, endpoint: 1, trans_id: 7 }
//! );
//!
//! // A temperature report normalized to a reading.
//! let report = ZclFrame::decode(0x0402, &[0x18, 0x10, 0x0A, 0x00, 0x00, 0x29, 0x66, 0x08]).unwrap();
//! let readings = clusters::normalize_frame(0x0402, &report, &Default::default());
//! assert_eq!(readings[0].name, Some("temperature"));
//! # let _ = wire;
//! ```

pub mod decode;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod error;
pub mod install_code;
pub mod mt;
pub mod nvitems;
#[cfg(feature = "emulator")]
pub mod samples;
mod wire;
pub mod zcl;
pub mod znp;

use std::fmt;

use serde::{Serialize, Serializer};

pub use error::{Error, Result};
pub use mt::{MtFrame, MtParserStats, MtStreamParser, MtType, Subsystem};
pub use znp::ZnpCommand;

/// A 64-bit IEEE (EUI-64) address. Sent little-endian on the wire, shown big-endian as
/// `0x00124b0012345678` (the form zigbee-herdsman and zigbee2mqtt print).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IeeeAddr(pub u64);

impl fmt::Display for IeeeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

impl std::str::FromStr for IeeeAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let hex = s.trim().trim_start_matches("0x").replace(':', "");
        if hex.len() != 16 {
            return Err(Error::BadHex(format!(
                "IEEE address needs 16 hex digits: {s:?}"
            )));
        }
        u64::from_str_radix(&hex, 16)
            .map(IeeeAddr)
            .map_err(|e| Error::BadHex(format!("{s:?}: {e}")))
    }
}

impl Serialize for IeeeAddr {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Lowercase hex of bytes, no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub(crate) fn serde_hex<S: Serializer, T: AsRef<[u8]>>(
    bytes: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&to_hex(bytes.as_ref()))
}

/// A float as JSON: a number when finite, else the string `"NaN"`, `"Infinity"`
/// or `"-Infinity"` (JSON has no such numbers; `null` would hide which it was).
pub fn serde_float<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("NaN")
    } else if *v > 0.0 {
        s.serialize_str("Infinity")
    } else {
        s.serialize_str("-Infinity")
    }
}

pub(crate) fn serde_float32<S: Serializer>(v: &f32, s: S) -> std::result::Result<S::Ok, S::Error> {
    serde_float(&f64::from(*v), s)
}

pub(crate) fn serde_hex_u64<S: Serializer>(v: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:#018x}"))
}
