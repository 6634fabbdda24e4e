//! ZCL data types and typed attribute values: [`DataType`] ids and [`ZclValue`].
//!
//! Ids, sizes and invalid values follow ZH `src/zspec/zcl/definition/enums.ts DataType` and
//! `buffaloZcl.ts`. Every type the spec sizes is decoded, so one odd attribute never makes the
//! rest of a report unreadable; a type id with no defined size gives [`Error::UnknownDataType`].

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};
use crate::IeeeAddr;

/// Maximum nesting of arrays/structs accepted when decoding (untrusted input guard).
pub const MAX_NESTING: usize = 8;

/// A ZCL data type id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataType(pub u8);

impl DataType {
    pub const NO_DATA: Self = Self(0x00);
    pub const DATA8: Self = Self(0x08);
    pub const DATA16: Self = Self(0x09);
    pub const DATA24: Self = Self(0x0A);
    pub const DATA32: Self = Self(0x0B);
    pub const DATA40: Self = Self(0x0C);
    pub const DATA48: Self = Self(0x0D);
    pub const DATA56: Self = Self(0x0E);
    pub const DATA64: Self = Self(0x0F);
    pub const BOOL: Self = Self(0x10);
    pub const BITMAP8: Self = Self(0x18);
    pub const BITMAP16: Self = Self(0x19);
    pub const BITMAP24: Self = Self(0x1A);
    pub const BITMAP32: Self = Self(0x1B);
    pub const BITMAP40: Self = Self(0x1C);
    pub const BITMAP48: Self = Self(0x1D);
    pub const BITMAP56: Self = Self(0x1E);
    pub const BITMAP64: Self = Self(0x1F);
    pub const UINT8: Self = Self(0x20);
    pub const UINT16: Self = Self(0x21);
    pub const UINT24: Self = Self(0x22);
    pub const UINT32: Self = Self(0x23);
    pub const UINT40: Self = Self(0x24);
    pub const UINT48: Self = Self(0x25);
    pub const UINT56: Self = Self(0x26);
    pub const UINT64: Self = Self(0x27);
    pub const INT8: Self = Self(0x28);
    pub const INT16: Self = Self(0x29);
    pub const INT24: Self = Self(0x2A);
    pub const INT32: Self = Self(0x2B);
    pub const INT40: Self = Self(0x2C);
    pub const INT48: Self = Self(0x2D);
    pub const INT56: Self = Self(0x2E);
    pub const INT64: Self = Self(0x2F);
    pub const ENUM8: Self = Self(0x30);
    pub const ENUM16: Self = Self(0x31);
    pub const SEMI_FLOAT: Self = Self(0x38);
    pub const SINGLE: Self = Self(0x39);
    pub const DOUBLE: Self = Self(0x3A);
    pub const OCTET_STR: Self = Self(0x41);
    pub const CHAR_STR: Self = Self(0x42);
    pub const LONG_OCTET_STR: Self = Self(0x43);
    pub const LONG_CHAR_STR: Self = Self(0x44);
    pub const ARRAY: Self = Self(0x48);
    pub const STRUCT: Self = Self(0x4C);
    pub const SET: Self = Self(0x50);
    pub const BAG: Self = Self(0x51);
    pub const TIME_OF_DAY: Self = Self(0xE0);
    pub const DATE: Self = Self(0xE1);
    pub const UTC: Self = Self(0xE2);
    pub const CLUSTER_ID: Self = Self(0xE8);
    pub const ATTR_ID: Self = Self(0xE9);
    pub const BAC_OID: Self = Self(0xEA);
    pub const IEEE_ADDR: Self = Self(0xF0);
    pub const SEC_KEY: Self = Self(0xF1);
    pub const UNKNOWN: Self = Self(0xFF);

    /// Whether configure-reporting carries a reportable change for this type: the types the
    /// ZCL specification (07-5123, the Data Types table) classes as analog, which are every
    /// unsigned and signed integer from 8 to 64 bits, the three floats, time of day, date and
    /// UTC time.
    ///
    /// zigbee-herdsman differs (`src/zspec/zcl/utils.ts isAnalogDataType`, 11.1.1): it leaves
    /// out uint64 and int64, so it writes no reportable change for them and, reading a
    /// configure-reporting record that has one, takes its 8 bytes for the start of the next
    /// record. This follows the specification; the herdsman differential test lists the
    /// difference among its accepted ones.
    pub fn is_analog(self) -> bool {
        matches!(self.0, 0x20..=0x2F | 0x38..=0x3A | 0xE0..=0xE2)
    }

    /// A short lowercase name (`"uint16"`, `"char_str"`…), or `"0xNN"` for unnamed ids.
    pub fn name(self) -> String {
        let n = self.0;
        let fixed = match n {
            0x00 => "no_data",
            0x10 => "bool",
            0x30 => "enum8",
            0x31 => "enum16",
            0x38 => "semi_float",
            0x39 => "single",
            0x3A => "double",
            0x41 => "octet_str",
            0x42 => "char_str",
            0x43 => "long_octet_str",
            0x44 => "long_char_str",
            0x48 => "array",
            0x4C => "struct",
            0x50 => "set",
            0x51 => "bag",
            0xE0 => "time_of_day",
            0xE1 => "date",
            0xE2 => "utc",
            0xE8 => "cluster_id",
            0xE9 => "attr_id",
            0xEA => "bac_oid",
            0xF0 => "ieee_addr",
            0xF1 => "sec_key",
            0xFF => "unknown",
            0x08..=0x0F => return format!("data{}", (n - 0x07) * 8),
            0x18..=0x1F => return format!("bitmap{}", (n - 0x17) * 8),
            0x20..=0x27 => return format!("uint{}", (n - 0x1F) * 8),
            0x28..=0x2F => return format!("int{}", (n - 0x27) * 8),
            _ => return format!("{n:#04x}"),
        };
        fixed.to_string()
    }
}

impl Serialize for DataType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// A ZCL octet/char string payload. Char strings are kept as bytes (devices send non-UTF-8)
/// and shown lossily as text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZclBytes(pub Vec<u8>);

impl ZclBytes {
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl From<&str> for ZclBytes {
    fn from(s: &str) -> Self {
        Self(s.as_bytes().to_vec())
    }
}

/// A decoded attribute value. `width` fields are the size in bytes (1..=8).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum ZclValue {
    NoData,
    /// General data 8..64 bit (0x08..0x0F), kept as raw little-endian bytes.
    Data(#[serde(serialize_with = "crate::serde_hex")] Vec<u8>),
    /// `None` is the invalid value 0xFF (and any byte other than 0/1).
    Bool(Option<bool>),
    Bitmap {
        width: u8,
        value: u64,
    },
    Uint {
        width: u8,
        value: u64,
    },
    Int {
        width: u8,
        value: i64,
    },
    Enum8(u8),
    Enum16(u16),
    /// IEEE 754 half precision, raw bits (see [`ZclValue::as_f64`]).
    SemiFloat(u16),
    Single(#[serde(serialize_with = "crate::serde_float32")] f32),
    Double(#[serde(serialize_with = "crate::serde_float")] f64),
    /// `None` is the invalid length 0xFF.
    OctetString(#[serde(serialize_with = "ser_opt_hex")] Option<ZclBytes>),
    CharString(#[serde(serialize_with = "ser_opt_text")] Option<ZclBytes>),
    /// `None` is the invalid length 0xFFFF.
    LongOctetString(#[serde(serialize_with = "ser_opt_hex")] Option<ZclBytes>),
    LongCharString(#[serde(serialize_with = "ser_opt_text")] Option<ZclBytes>),
    Array {
        element_type: DataType,
        elements: Vec<ZclValue>,
    },
    Set {
        element_type: DataType,
        elements: Vec<ZclValue>,
    },
    Bag {
        element_type: DataType,
        elements: Vec<ZclValue>,
    },
    Struct(Vec<ZclValue>),
    /// hours, minutes, seconds, hundredths.
    TimeOfDay([u8; 4]),
    /// year − 1900, month, day of month, day of week.
    Date([u8; 4]),
    /// Seconds since 2000-01-01 00:00 UTC.
    Utc(u32),
    ClusterId(u16),
    AttrId(u16),
    BacOid(u32),
    IeeeAddr(IeeeAddr),
    SecKey(#[serde(serialize_with = "crate::serde_hex")] [u8; 16]),
    /// Type 0xFF, "unknown": like no data, no value bytes follow (ZCL Data Types table).
    Unknown,
}

fn ser_opt_hex<S: Serializer>(v: &Option<ZclBytes>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => crate::serde_hex(&b.0, s),
        None => s.serialize_none(),
    }
}

fn ser_opt_text<S: Serializer>(v: &Option<ZclBytes>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&b.to_string_lossy()),
        None => s.serialize_none(),
    }
}

fn width_of(n: u8, base: u8) -> usize {
    usize::from(n - base) + 1
}

fn sign_extend(raw: u64, width: usize) -> i64 {
    let shift = 64 - 8 * width as u32;
    ((raw << shift) as i64) >> shift
}

impl ZclValue {
    /// The data type id this value is encoded as.
    pub fn data_type(&self) -> DataType {
        let w = |width: &u8| width.clamp(&1, &8) - 1;
        match self {
            Self::NoData => DataType::NO_DATA,
            Self::Data(b) => DataType(0x08 + (b.len().clamp(1, 8) as u8 - 1)),
            Self::Bool(_) => DataType::BOOL,
            Self::Bitmap { width, .. } => DataType(0x18 + w(width)),
            Self::Uint { width, .. } => DataType(0x20 + w(width)),
            Self::Int { width, .. } => DataType(0x28 + w(width)),
            Self::Enum8(_) => DataType::ENUM8,
            Self::Enum16(_) => DataType::ENUM16,
            Self::SemiFloat(_) => DataType::SEMI_FLOAT,
            Self::Single(_) => DataType::SINGLE,
            Self::Double(_) => DataType::DOUBLE,
            Self::OctetString(_) => DataType::OCTET_STR,
            Self::CharString(_) => DataType::CHAR_STR,
            Self::LongOctetString(_) => DataType::LONG_OCTET_STR,
            Self::LongCharString(_) => DataType::LONG_CHAR_STR,
            Self::Array { .. } => DataType::ARRAY,
            Self::Set { .. } => DataType::SET,
            Self::Bag { .. } => DataType::BAG,
            Self::Struct(_) => DataType::STRUCT,
            Self::TimeOfDay(_) => DataType::TIME_OF_DAY,
            Self::Date(_) => DataType::DATE,
            Self::Utc(_) => DataType::UTC,
            Self::ClusterId(_) => DataType::CLUSTER_ID,
            Self::AttrId(_) => DataType::ATTR_ID,
            Self::BacOid(_) => DataType::BAC_OID,
            Self::IeeeAddr(_) => DataType::IEEE_ADDR,
            Self::SecKey(_) => DataType::SEC_KEY,
            Self::Unknown => DataType::UNKNOWN,
        }
    }

    /// Decodes one value of type `dt` from the front of `bytes`; returns it and the bytes used.
    pub fn decode(dt: DataType, bytes: &[u8]) -> Result<(Self, usize)> {
        let mut r = Reader::new(bytes, "ZCL value");
        let v = Self::read(dt, &mut r, 0)?;
        Ok((v, bytes.len() - r.remaining()))
    }

    pub(crate) fn read(dt: DataType, r: &mut Reader<'_>, depth: usize) -> Result<Self> {
        if depth > MAX_NESTING {
            return Err(Error::TooDeep(MAX_NESTING));
        }
        let n = dt.0;
        Ok(match n {
            0x00 => Self::NoData,
            0x08..=0x0F => Self::Data(r.bytes(width_of(n, 0x08))?.to_vec()),
            0x10 => Self::Bool(match r.u8()? {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            }),
            0x18..=0x1F => {
                let width = width_of(n, 0x18);
                Self::Bitmap {
                    width: width as u8,
                    value: r.uint(width)?,
                }
            }
            0x20..=0x27 => {
                let width = width_of(n, 0x20);
                Self::Uint {
                    width: width as u8,
                    value: r.uint(width)?,
                }
            }
            0x28..=0x2F => {
                let width = width_of(n, 0x28);
                Self::Int {
                    width: width as u8,
                    value: sign_extend(r.uint(width)?, width),
                }
            }
            0x30 => Self::Enum8(r.u8()?),
            0x31 => Self::Enum16(r.u16()?),
            0x38 => Self::SemiFloat(r.u16()?),
            0x39 => Self::Single(f32::from_bits(r.u32()?)),
            0x3A => Self::Double(f64::from_bits(r.uint(8)?)),
            0x41 | 0x42 => {
                let len = r.u8()?;
                let s = if len == 0xFF {
                    None
                } else {
                    Some(ZclBytes(r.bytes(usize::from(len))?.to_vec()))
                };
                if n == 0x41 {
                    Self::OctetString(s)
                } else {
                    Self::CharString(s)
                }
            }
            0x43 | 0x44 => {
                let len = r.u16()?;
                let s = if len == 0xFFFF {
                    None
                } else {
                    Some(ZclBytes(r.bytes(usize::from(len))?.to_vec()))
                };
                if n == 0x43 {
                    Self::LongOctetString(s)
                } else {
                    Self::LongCharString(s)
                }
            }
            0x48 | 0x50 | 0x51 => {
                let element_type = DataType(r.u8()?);
                let count = r.u16()?;
                // 0xFFFF is the "invalid" count: no elements follow.
                let count = if count == 0xFFFF { 0 } else { count };
                let mut elements = Vec::new();
                for _ in 0..count {
                    elements.push(Self::read(element_type, r, depth + 1)?);
                }
                match n {
                    0x48 => Self::Array {
                        element_type,
                        elements,
                    },
                    0x50 => Self::Set {
                        element_type,
                        elements,
                    },
                    _ => Self::Bag {
                        element_type,
                        elements,
                    },
                }
            }
            0x4C => {
                let count = r.u16()?;
                let count = if count == 0xFFFF { 0 } else { count };
                let mut members = Vec::new();
                for _ in 0..count {
                    let t = DataType(r.u8()?);
                    members.push(Self::read(t, r, depth + 1)?);
                }
                Self::Struct(members)
            }
            0xE0 => Self::TimeOfDay(r.array()?),
            0xE1 => Self::Date(r.array()?),
            0xE2 => Self::Utc(r.u32()?),
            0xE8 => Self::ClusterId(r.u16()?),
            0xE9 => Self::AttrId(r.u16()?),
            0xEA => Self::BacOid(r.u32()?),
            0xF0 => Self::IeeeAddr(r.ieee()?),
            0xF1 => Self::SecKey(r.array()?),
            0xFF => Self::Unknown,
            other => return Err(Error::UnknownDataType(other)),
        })
    }

    /// Appends the value (without its type id) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        fn check_width(width: u8) -> Result<usize> {
            if (1..=8).contains(&width) {
                Ok(usize::from(width))
            } else {
                Err(Error::ValueOutOfRange {
                    what: "ZCL integer width",
                    detail: format!("{width} bytes"),
                })
            }
        }
        match self {
            Self::NoData | Self::Unknown => {}
            Self::Data(b) => {
                if !(1..=8).contains(&b.len()) {
                    return Err(Error::ValueOutOfRange {
                        what: "ZCL general data",
                        detail: format!("{} bytes", b.len()),
                    });
                }
                out.extend_from_slice(b);
            }
            Self::Bool(b) => out.put_u8(match b {
                Some(false) => 0,
                Some(true) => 1,
                None => 0xFF,
            }),
            Self::Bitmap { width, value } | Self::Uint { width, value } => {
                let w = check_width(*width)?;
                if w < 8 && value >> (8 * w) != 0 {
                    return Err(Error::ValueOutOfRange {
                        what: "ZCL unsigned value",
                        detail: format!("{value} in {w} bytes"),
                    });
                }
                out.put_uint(*value, w);
            }
            Self::Int { width, value } => {
                let w = check_width(*width)?;
                if sign_extend(*value as u64, w) != *value {
                    return Err(Error::ValueOutOfRange {
                        what: "ZCL signed value",
                        detail: format!("{value} in {w} bytes"),
                    });
                }
                out.put_uint(*value as u64, w);
            }
            Self::Enum8(v) => out.put_u8(*v),
            Self::Enum16(v) | Self::SemiFloat(v) | Self::ClusterId(v) | Self::AttrId(v) => {
                out.put_u16(*v)
            }
            Self::Single(f) => out.put_u32(f.to_bits()),
            Self::Double(f) => out.put_uint(f.to_bits(), 8),
            Self::OctetString(s) | Self::CharString(s) => match s {
                None => out.put_u8(0xFF),
                Some(b) if b.0.len() < 0xFF => {
                    out.put_u8(b.0.len() as u8);
                    out.extend_from_slice(&b.0);
                }
                Some(b) => {
                    return Err(Error::ValueOutOfRange {
                        what: "ZCL string",
                        detail: format!("{} bytes (max 254)", b.0.len()),
                    })
                }
            },
            Self::LongOctetString(s) | Self::LongCharString(s) => match s {
                None => out.put_u16(0xFFFF),
                Some(b) if b.0.len() < 0xFFFF => {
                    out.put_u16(b.0.len() as u16);
                    out.extend_from_slice(&b.0);
                }
                Some(b) => {
                    return Err(Error::ValueOutOfRange {
                        what: "ZCL long string",
                        detail: format!("{} bytes (max 65534)", b.0.len()),
                    })
                }
            },
            Self::Array {
                element_type,
                elements,
            }
            | Self::Set {
                element_type,
                elements,
            }
            | Self::Bag {
                element_type,
                elements,
            } => {
                if elements.len() >= 0xFFFF {
                    return Err(Error::ValueOutOfRange {
                        what: "ZCL array",
                        detail: format!("{} elements", elements.len()),
                    });
                }
                out.put_u8(element_type.0);
                out.put_u16(elements.len() as u16);
                for e in elements {
                    if e.data_type() != *element_type {
                        return Err(Error::ValueOutOfRange {
                            what: "ZCL array element",
                            detail: format!(
                                "{} in an array of {}",
                                e.data_type().name(),
                                element_type.name()
                            ),
                        });
                    }
                    e.write(out)?;
                }
            }
            Self::Struct(members) => {
                if members.len() >= 0xFFFF {
                    return Err(Error::ValueOutOfRange {
                        what: "ZCL struct",
                        detail: format!("{} members", members.len()),
                    });
                }
                out.put_u16(members.len() as u16);
                for m in members {
                    out.put_u8(m.data_type().0);
                    m.write(out)?;
                }
            }
            Self::TimeOfDay(b) | Self::Date(b) => out.extend_from_slice(b),
            Self::Utc(v) | Self::BacOid(v) => out.put_u32(*v),
            Self::IeeeAddr(a) => out.put_ieee(*a),
            Self::SecKey(k) => out.extend_from_slice(k),
        }
        Ok(())
    }

    /// Encodes the value alone (no type id).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write(&mut out)?;
        Ok(out)
    }

    /// Convenience constructors for the common fixed-width types.
    pub fn u8(v: u8) -> Self {
        Self::Uint {
            width: 1,
            value: v.into(),
        }
    }
    pub fn u16(v: u16) -> Self {
        Self::Uint {
            width: 2,
            value: v.into(),
        }
    }
    pub fn u32(v: u32) -> Self {
        Self::Uint {
            width: 4,
            value: v.into(),
        }
    }
    pub fn i16(v: i16) -> Self {
        Self::Int {
            width: 2,
            value: v.into(),
        }
    }
    pub fn char_str(s: &str) -> Self {
        Self::CharString(Some(s.into()))
    }

    /// Whether this is the type's "invalid / unknown" sentinel (ZH `enums.ts` invalid values):
    /// all ones for unsigned, the most negative value for signed, 0xFF/0xFFFF for enums and
    /// bool, NaN for floats, missing for strings.
    pub fn is_invalid(&self) -> bool {
        match self {
            Self::Bool(None) => true,
            Self::Uint { width, value } => {
                let w = u32::from((*width).clamp(1, 8));
                *value == u64::MAX >> (64 - 8 * w)
            }
            Self::Int { width, value } => {
                let w = u32::from((*width).clamp(1, 8));
                *value == i64::MIN >> (64 - 8 * w)
            }
            Self::Enum8(v) => *v == 0xFF,
            Self::Enum16(v) => *v == 0xFFFF,
            Self::SemiFloat(_) | Self::Single(_) | Self::Double(_) => {
                self.as_f64().is_none_or(f64::is_nan)
            }
            Self::OctetString(None)
            | Self::CharString(None)
            | Self::LongOctetString(None)
            | Self::LongCharString(None) => true,
            Self::Utc(v) => *v == u32::MAX,
            _ => false,
        }
    }

    /// The numeric value, for integer, enum, bitmap, float, bool and time types.
    pub fn as_f64(&self) -> Option<f64> {
        Some(match self {
            Self::Bool(Some(b)) => f64::from(u8::from(*b)),
            Self::Bitmap { value, .. } | Self::Uint { value, .. } => *value as f64,
            Self::Int { value, .. } => *value as f64,
            Self::Enum8(v) => f64::from(*v),
            Self::Enum16(v) => f64::from(*v),
            Self::SemiFloat(bits) => half_to_f64(*bits),
            Self::Single(f) => f64::from(*f),
            Self::Double(f) => *f,
            Self::Utc(v) => f64::from(*v),
            _ => return None,
        })
    }

    /// The value as a signed integer, for integer, enum and bitmap types.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int { value, .. } => Some(*value),
            Self::Uint { value, .. } | Self::Bitmap { value, .. } => i64::try_from(*value).ok(),
            Self::Enum8(v) => Some(i64::from(*v)),
            Self::Enum16(v) => Some(i64::from(*v)),
            Self::Bool(Some(b)) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The value as text, for char strings.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Self::CharString(Some(b)) | Self::LongCharString(Some(b)) => Some(b.to_string_lossy()),
            _ => None,
        }
    }
}

/// IEEE 754 binary16 to f64.
pub fn half_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1F);
    let frac = f64::from(bits & 0x3FF);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        0x1F if frac == 0.0 => sign * f64::INFINITY,
        0x1F => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}
