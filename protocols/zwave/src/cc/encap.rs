//! Encapsulation: Supervision (0x6C), Multi Channel command encapsulation (0x60 / 0x0D), and
//! the S0 (0x98) / S2 (0x9F) security classes, which are recognised but not decrypted.
//! Layouts: zwave-js `packages/cc/src/cc/{Supervision,MultiChannel,Security,Security2}CC.ts`.

use super::{len_u8, Cc};
use crate::error::Result;
use crate::macros::byte_enum;
use crate::wire::Reader;
use serde::Serialize;

byte_enum! {
    /// Supervision Report status (zwave-js `SupervisionStatus`).
    pub enum SupervisionStatus {
        NoSupport = 0x00,
        Working = 0x01,
        Fail = 0x02,
        Success = 0xFF,
    }
}

/// Supervision (0x6C): Get 01 wraps a command and asks for a Report 02 with its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Supervision {
    Get {
        /// Ask for Working updates until the command finishes.
        status_updates: bool,
        /// 6 bits; the Report echoes it.
        session_id: u8,
        encapsulated: Box<Cc>,
    },
    Report {
        more_updates_follow: bool,
        /// v2: the node asks to be woken up on demand.
        wake_up_request: bool,
        session_id: u8,
        status: SupervisionStatus,
        /// Time left while `Working` (a duration byte).
        duration: u8,
    },
}

impl Supervision {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Get { .. } => 0x01,
            Self::Report { .. } => 0x02,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>, depth: usize) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x01 => {
                let b = r.u8()?;
                // The length byte is not trusted (zwave-js ignores it too): the encapsulated
                // command is the rest of the frame.
                let _len = r.u8()?;
                let inner = r.rest();
                if inner.is_empty() {
                    r.u8()?;
                }
                Self::Get {
                    status_updates: b & 0x80 != 0,
                    session_id: b & 0x3F,
                    encapsulated: Box::new(Cc::decode_nested(inner, depth + 1)?),
                }
            }
            0x02 => {
                let b = r.u8()?;
                Self::Report {
                    more_updates_follow: b & 0x80 != 0,
                    wake_up_request: b & 0x40 != 0,
                    session_id: b & 0x3F,
                    status: SupervisionStatus::from_byte(r.u8()?),
                    duration: r.u8()?,
                }
            }
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Get {
                status_updates,
                session_id,
                encapsulated,
            } => {
                let inner = encapsulated.encode()?;
                out.push((session_id & 0x3F) | if *status_updates { 0x80 } else { 0 });
                out.push(len_u8("supervised command", inner.len())?);
                out.extend_from_slice(&inner);
            }
            Self::Report {
                more_updates_follow,
                wake_up_request,
                session_id,
                status,
                duration,
            } => {
                out.push(
                    (session_id & 0x3F)
                        | if *more_updates_follow { 0x80 } else { 0 }
                        | if *wake_up_request { 0x40 } else { 0 },
                );
                out.extend_from_slice(&[status.to_byte(), *duration]);
            }
        }
        Ok(())
    }
}

/// Multi Channel (0x60). Only command encapsulation (0x0D) is typed; the discovery commands
/// decode generically.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiChannel {
    Encapsulation {
        /// 7 bits; 0 is the root device.
        source_endpoint: u8,
        /// As sent: bit 7 set means bits 0-6 are a mask of endpoints 1-7.
        destination: u8,
        encapsulated: Box<Cc>,
    },
}

impl MultiChannel {
    pub(crate) fn command(&self) -> u8 {
        0x0D
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>, depth: usize) -> Result<Option<Self>> {
        Ok(match cmd {
            0x0D => {
                let source_endpoint = r.u8()? & 0x7F;
                let destination = r.u8()?;
                let inner = r.rest();
                if inner.is_empty() {
                    r.u8()?;
                }
                Some(Self::Encapsulation {
                    source_endpoint,
                    destination,
                    encapsulated: Box::new(Cc::decode_nested(inner, depth + 1)?),
                })
            }
            _ => None,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let Self::Encapsulation {
            source_endpoint,
            destination,
            encapsulated,
        } = self;
        out.extend_from_slice(&[source_endpoint & 0x7F, *destination]);
        encapsulated.encode_into(out)
    }

    /// The destination endpoints: one, or the set in the bit mask.
    pub fn destinations(destination: u8) -> Vec<u8> {
        if destination & 0x80 != 0 {
            (1..=7)
                .filter(|e| destination & (1 << (e - 1)) != 0)
                .collect()
        } else {
            vec![destination & 0x7F]
        }
    }
}

/// Which security class wrapped a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityScheme {
    S0,
    S2,
}

/// An S0 or S2 command, as sent: not decrypted. Decryption needs the network keys and the
/// per-node nonce state, which live in the driver; this type keeps the bytes it needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Secure {
    pub scheme: SecurityScheme,
    pub command: u8,
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub payload: Vec<u8>,
}

impl Secure {
    pub fn new(scheme: SecurityScheme, command: u8, payload: Vec<u8>) -> Self {
        Self {
            scheme,
            command,
            payload,
        }
    }

    /// Whether this carries an encrypted command (S0 MessageEncapsulation 0x81 / 0xC1 with
    /// nonce get; S2 MessageEncapsulation 0x03), as opposed to nonce or key exchange traffic.
    pub fn is_encapsulation(&self) -> bool {
        match self.scheme {
            SecurityScheme::S0 => matches!(self.command, 0x81 | 0xC1),
            SecurityScheme::S2 => self.command == 0x03,
        }
    }

    /// S2 MessageEncapsulation: the sequence number (sent in clear).
    pub fn s2_sequence_number(&self) -> Option<u8> {
        (self.scheme == SecurityScheme::S2 && self.command == 0x03)
            .then(|| self.payload.first().copied())
            .flatten()
    }

    /// S0 MessageEncapsulation: the 8-byte sender nonce (sent in clear).
    pub fn s0_sender_nonce(&self) -> Option<&[u8]> {
        (self.scheme == SecurityScheme::S0 && self.is_encapsulation())
            .then(|| self.payload.get(..8))
            .flatten()
    }
}
