//! Command classes: what travels inside SendData and ApplicationCommandHandler, typed in both
//! directions ([`Cc::decode`], [`Cc::encode`]).
//!
//! Command ids: zwave-js `packages/cc/src/lib/_Types.ts`; layouts: `packages/cc/src/cc/*CC.ts`
//! (named per module). Unknown command classes and unknown commands of known classes decode
//! generically as [`Cc::Unknown`] (class id, command, bytes). S0 and S2 frames are recognised
//! and returned as [`Cc::Secure`] without being decrypted. A known command whose payload is
//! too short or malformed is an [`crate::Error`] (zwave-js turns those into `InvalidCC`).
//! Values are kept as sent (raw level bytes, duration bytes, precision/size of numbers) so
//! that every decoded command re-encodes to the same bytes; the methods and
//! [`crate::normalize`] interpret them.

mod config;
mod device;
mod encap;
mod meter;
mod notification;
mod sensor;
mod switch;
mod value;

pub use config::{Association, Configuration};
pub use device::{Battery, ManufacturerSpecific, Version, WakeUp, ZwavePlusInfo};
pub use encap::{MultiChannel, Secure, SecurityScheme, Supervision, SupervisionStatus};
pub use meter::{meter_scale_unit, meter_type_name, Meter, MeterValue};
pub use notification::{Notification, NotificationEvent};
pub use sensor::{sensor_scale_unit, sensor_type_name, MultilevelSensor};
pub use switch::{Basic, BinarySwitch, MultilevelSwitch};
pub use value::{level_percent, switch_on, Duration, ScaledValue, Transition};

use crate::error::{Error, Result};
use crate::message::EXTENDED_CC_START;
use crate::wire::Reader;
use serde::Serialize;

/// Command class ids this crate types.
pub mod id {
    pub const NO_OPERATION: u16 = 0x00;
    pub const BASIC: u16 = 0x20;
    pub const BINARY_SWITCH: u16 = 0x25;
    pub const MULTILEVEL_SWITCH: u16 = 0x26;
    pub const MULTILEVEL_SENSOR: u16 = 0x31;
    pub const METER: u16 = 0x32;
    pub const ZWAVE_PLUS_INFO: u16 = 0x5E;
    pub const MULTI_CHANNEL: u16 = 0x60;
    pub const SUPERVISION: u16 = 0x6C;
    pub const CONFIGURATION: u16 = 0x70;
    pub const NOTIFICATION: u16 = 0x71;
    pub const MANUFACTURER_SPECIFIC: u16 = 0x72;
    pub const BATTERY: u16 = 0x80;
    pub const WAKE_UP: u16 = 0x84;
    pub const ASSOCIATION: u16 = 0x85;
    pub const VERSION: u16 = 0x86;
    pub const SECURITY_S0: u16 = 0x98;
    pub const SECURITY_S2: u16 = 0x9F;
}

/// How deep Supervision / Multi Channel encapsulation is followed.
pub const MAX_NESTING: usize = 4;

/// A command class this crate does not type (or a command it does not know): as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RawCc {
    pub cc_id: u16,
    /// `None` when the frame ends after the class id (e.g. No Operation).
    pub command: Option<u8>,
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub payload: Vec<u8>,
}

/// One command of a command class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cc {
    Basic(Basic),
    BinarySwitch(BinarySwitch),
    MultilevelSwitch(MultilevelSwitch),
    MultilevelSensor(MultilevelSensor),
    Meter(Meter),
    Notification(Notification),
    Battery(Battery),
    WakeUp(WakeUp),
    ManufacturerSpecific(ManufacturerSpecific),
    Version(Version),
    ZwavePlusInfo(ZwavePlusInfo),
    Configuration(Configuration),
    Association(Association),
    Supervision(Supervision),
    MultiChannel(MultiChannel),
    /// S0 / S2: recognised, not decrypted.
    Secure(Secure),
    Unknown(RawCc),
}

impl Cc {
    /// Decodes one encoded command class (class id, command, payload).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_nested(bytes, 0)
    }

    pub(crate) fn decode_nested(bytes: &[u8], depth: usize) -> Result<Self> {
        if depth > MAX_NESTING {
            return Err(Error::TooDeep(MAX_NESTING));
        }
        let mut r = Reader::new(bytes, "command class");
        let first = r.u8()?;
        let cc_id = if first >= EXTENDED_CC_START {
            u16::from_be_bytes([first, r.u8()?])
        } else {
            u16::from(first)
        };
        let Some(command) = r.opt_u8() else {
            return Ok(Self::Unknown(RawCc {
                cc_id,
                command: None,
                payload: Vec::new(),
            }));
        };
        let body = r.rest();
        let mut p = Reader::new(body, "command class payload");
        let typed = match cc_id {
            id::BASIC => Basic::decode(command, &mut p)?.map(Self::Basic),
            id::BINARY_SWITCH => BinarySwitch::decode(command, &mut p)?.map(Self::BinarySwitch),
            id::MULTILEVEL_SWITCH => {
                MultilevelSwitch::decode(command, &mut p)?.map(Self::MultilevelSwitch)
            }
            id::MULTILEVEL_SENSOR => {
                MultilevelSensor::decode(command, &mut p)?.map(Self::MultilevelSensor)
            }
            id::METER => Meter::decode(command, &mut p)?.map(Self::Meter),
            id::NOTIFICATION => Notification::decode(command, &mut p)?.map(Self::Notification),
            id::BATTERY => Battery::decode(command, &mut p)?.map(Self::Battery),
            id::WAKE_UP => WakeUp::decode(command, &mut p)?.map(Self::WakeUp),
            id::MANUFACTURER_SPECIFIC => {
                ManufacturerSpecific::decode(command, &mut p)?.map(Self::ManufacturerSpecific)
            }
            id::VERSION => Version::decode(command, &mut p)?.map(Self::Version),
            id::ZWAVE_PLUS_INFO => ZwavePlusInfo::decode(command, &mut p)?.map(Self::ZwavePlusInfo),
            id::CONFIGURATION => Configuration::decode(command, &mut p)?.map(Self::Configuration),
            id::ASSOCIATION => Association::decode(command, &mut p)?.map(Self::Association),
            id::SUPERVISION => Supervision::decode(command, &mut p, depth)?.map(Self::Supervision),
            id::MULTI_CHANNEL => {
                MultiChannel::decode(command, &mut p, depth)?.map(Self::MultiChannel)
            }
            id::SECURITY_S0 => Some(Self::Secure(Secure::new(
                SecurityScheme::S0,
                command,
                body.to_vec(),
            ))),
            id::SECURITY_S2 => Some(Self::Secure(Secure::new(
                SecurityScheme::S2,
                command,
                body.to_vec(),
            ))),
            _ => None,
        };
        Ok(typed.unwrap_or_else(|| {
            Self::Unknown(RawCc {
                cc_id,
                command: Some(command),
                payload: body.to_vec(),
            })
        }))
    }

    /// The command class id.
    pub fn cc_id(&self) -> u16 {
        match self {
            Self::Basic(_) => id::BASIC,
            Self::BinarySwitch(_) => id::BINARY_SWITCH,
            Self::MultilevelSwitch(_) => id::MULTILEVEL_SWITCH,
            Self::MultilevelSensor(_) => id::MULTILEVEL_SENSOR,
            Self::Meter(_) => id::METER,
            Self::Notification(_) => id::NOTIFICATION,
            Self::Battery(_) => id::BATTERY,
            Self::WakeUp(_) => id::WAKE_UP,
            Self::ManufacturerSpecific(_) => id::MANUFACTURER_SPECIFIC,
            Self::Version(_) => id::VERSION,
            Self::ZwavePlusInfo(_) => id::ZWAVE_PLUS_INFO,
            Self::Configuration(_) => id::CONFIGURATION,
            Self::Association(_) => id::ASSOCIATION,
            Self::Supervision(_) => id::SUPERVISION,
            Self::MultiChannel(_) => id::MULTI_CHANNEL,
            Self::Secure(s) => match s.scheme {
                SecurityScheme::S0 => id::SECURITY_S0,
                SecurityScheme::S2 => id::SECURITY_S2,
            },
            Self::Unknown(r) => r.cc_id,
        }
    }

    /// The command id (`None` only for a bare class id).
    pub fn command(&self) -> Option<u8> {
        Some(match self {
            Self::Basic(c) => c.command(),
            Self::BinarySwitch(c) => c.command(),
            Self::MultilevelSwitch(c) => c.command(),
            Self::MultilevelSensor(c) => c.command(),
            Self::Meter(c) => c.command(),
            Self::Notification(c) => c.command(),
            Self::Battery(c) => c.command(),
            Self::WakeUp(c) => c.command(),
            Self::ManufacturerSpecific(c) => c.command(),
            Self::Version(c) => c.command(),
            Self::ZwavePlusInfo(c) => c.command(),
            Self::Configuration(c) => c.command(),
            Self::Association(c) => c.command(),
            Self::Supervision(c) => c.command(),
            Self::MultiChannel(c) => c.command(),
            Self::Secure(s) => s.command,
            Self::Unknown(r) => return r.command,
        })
    }

    /// Encodes class id, command and payload.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(16);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        let cc_id = self.cc_id();
        if cc_id >= u16::from(EXTENDED_CC_START) << 8 {
            out.extend_from_slice(&cc_id.to_be_bytes());
        } else if cc_id < 0x100 && cc_id < u16::from(EXTENDED_CC_START) {
            out.push(cc_id as u8);
        } else {
            return Err(Error::InvalidField {
                what: "command class id",
                value: u32::from(cc_id),
            });
        }
        if let Some(cmd) = self.command() {
            out.push(cmd);
        }
        match self {
            Self::Basic(c) => c.encode(out),
            Self::BinarySwitch(c) => c.encode(out),
            Self::MultilevelSwitch(c) => c.encode(out),
            Self::MultilevelSensor(c) => c.encode(out),
            Self::Meter(c) => c.encode(out),
            Self::Notification(c) => c.encode(out),
            Self::Battery(c) => c.encode(out),
            Self::WakeUp(c) => c.encode(out),
            Self::ManufacturerSpecific(c) => c.encode(out),
            Self::Version(c) => c.encode(out),
            Self::ZwavePlusInfo(c) => c.encode(out),
            Self::Configuration(c) => c.encode(out),
            Self::Association(c) => c.encode(out),
            Self::Supervision(c) => c.encode(out),
            Self::MultiChannel(c) => c.encode(out),
            Self::Secure(s) => {
                out.extend_from_slice(&s.payload);
                Ok(())
            }
            Self::Unknown(r) => {
                out.extend_from_slice(&r.payload);
                Ok(())
            }
        }
    }

    /// The innermost command: Supervision Get and Multi Channel encapsulation unwrapped, with
    /// the source endpoint (0 = the root device).
    pub fn innermost(&self) -> (&Cc, u8) {
        let mut cc = self;
        let mut endpoint = 0;
        loop {
            match cc {
                Self::Supervision(Supervision::Get { encapsulated, .. }) => cc = encapsulated,
                Self::MultiChannel(MultiChannel::Encapsulation {
                    source_endpoint,
                    encapsulated,
                    ..
                }) => {
                    endpoint = *source_endpoint;
                    cc = encapsulated;
                }
                _ => return (cc, endpoint),
            }
        }
    }
}

fn out_of_range(what: &'static str, len: usize) -> Error {
    Error::TooLong {
        what,
        len,
        max: 255,
    }
}

/// A list length as one byte.
pub(crate) fn len_u8(what: &'static str, len: usize) -> Result<u8> {
    u8::try_from(len).map_err(|_| out_of_range(what, len))
}
