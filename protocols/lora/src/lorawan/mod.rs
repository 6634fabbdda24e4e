//! LoRaWAN 1.0.x PHYPayload: MHDR, data frames, Join-Request, Join-Accept, and their crypto.
//!
//! `PhyPayload::parse` takes the bytes a radio or a GWMP `rxpk.data` delivered and splits
//! them into typed frames without any key; the keyed steps (MIC, payload decryption,
//! join-accept decryption) are methods on the frames. Building goes the other way
//! (`DataFrame::seal`, `JoinRequest::new_signed`, `JoinAccept::encrypt`). Nothing here keeps
//! per-device state: the 32-bit frame counter comes from the caller (`fcnt`).
//!
//! Byte order: every multi-byte field is little-endian on the wire; the id types in
//! `crate::types` hold numbers and show them big-endian.

pub mod crypto;
pub mod data;
pub mod fcnt;
pub mod join;
pub mod mac;

pub use crypto::{Mic, SessionKeys};
pub use data::{DataFrame, DataMessage, FCtrl};
pub use fcnt::{reconstruct_fcnt, FcntError, FcntVerdict, MAX_FCNT_GAP};
pub use join::{CfList, DlSettings, EncryptedJoinAccept, JoinAccept, JoinRequest};
pub use mac::{MacCommand, MacError};

/// The longest PHYPayload a LoRa radio carries (its length field is one byte).
pub const MAX_PHY_PAYLOAD: usize = 255;

/// Why bytes are not a well-formed LoRaWAN 1.0.x frame, or a frame failed a keyed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty PHYPayload")]
    Empty,
    #[error("PHYPayload of {0} bytes: a LoRa frame holds at most 255")]
    TooLong(usize),
    #[error("LoRaWAN major version {0} is not R1 (0): the frame must be dropped")]
    UnsupportedMajor(u8),
    #[error("{what}: needs {need} bytes, got {got}")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("Join-Request must be 23 bytes, got {0}")]
    JoinRequestLength(usize),
    #[error("Join-Accept must be 17 or 33 bytes, got {0}")]
    JoinAcceptLength(usize),
    #[error("FOpts of {0} bytes: at most 15 fit in FOptsLen")]
    FOptsTooLong(usize),
    #[error("MAC commands in both FOpts and an FPort 0 payload: the frame must be dropped")]
    FOptsWithPortZero,
    #[error("a FRMPayload needs an FPort")]
    PayloadWithoutPort,
    #[error("{0:?} is not a data frame type")]
    NotDataType(MType),
    #[error("frame counter {full:#x} does not end in the {on_air:#06x} sent on air")]
    CounterMismatch { full: u32, on_air: u16 },
    #[error("MIC does not match")]
    MicMismatch,
}

/// Message type, MHDR bits 7..5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MType {
    JoinRequest,
    JoinAccept,
    UnconfirmedDataUp,
    UnconfirmedDataDown,
    ConfirmedDataUp,
    ConfirmedDataDown,
    /// 110: RFU in 1.0.x (RejoinRequest in 1.1).
    Rfu,
    Proprietary,
}

impl MType {
    pub fn from_bits(bits: u8) -> MType {
        match bits & 0x07 {
            0 => MType::JoinRequest,
            1 => MType::JoinAccept,
            2 => MType::UnconfirmedDataUp,
            3 => MType::UnconfirmedDataDown,
            4 => MType::ConfirmedDataUp,
            5 => MType::ConfirmedDataDown,
            6 => MType::Rfu,
            _ => MType::Proprietary,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            MType::JoinRequest => 0,
            MType::JoinAccept => 1,
            MType::UnconfirmedDataUp => 2,
            MType::UnconfirmedDataDown => 3,
            MType::ConfirmedDataUp => 4,
            MType::ConfirmedDataDown => 5,
            MType::Rfu => 6,
            MType::Proprietary => 7,
        }
    }

    /// The data type for a direction and confirmation flag.
    pub fn data(direction: crate::Direction, confirmed: bool) -> MType {
        use crate::Direction::*;
        match (direction, confirmed) {
            (Uplink, false) => MType::UnconfirmedDataUp,
            (Uplink, true) => MType::ConfirmedDataUp,
            (Downlink, false) => MType::UnconfirmedDataDown,
            (Downlink, true) => MType::ConfirmedDataDown,
        }
    }

    /// Direction of a data frame type; `None` for the others.
    pub fn data_direction(self) -> Option<crate::Direction> {
        match self {
            MType::UnconfirmedDataUp | MType::ConfirmedDataUp => Some(crate::Direction::Uplink),
            MType::UnconfirmedDataDown | MType::ConfirmedDataDown => {
                Some(crate::Direction::Downlink)
            }
            _ => None,
        }
    }
}

/// MAC header. Major is always R1 (0): `parse` refuses anything else, as the spec says to
/// drop it. The three RFU bits are kept because the MIC covers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mhdr {
    pub mtype: MType,
    /// Bits 4..2, zero in frames we build.
    pub rfu: u8,
}

impl Mhdr {
    pub fn new(mtype: MType) -> Mhdr {
        Mhdr { mtype, rfu: 0 }
    }

    pub fn from_byte(b: u8) -> Result<Mhdr, FrameError> {
        let major = b & 0x03;
        if major != 0 {
            return Err(FrameError::UnsupportedMajor(major));
        }
        Ok(Mhdr {
            mtype: MType::from_bits(b >> 5),
            rfu: (b >> 2) & 0x07,
        })
    }

    pub fn byte(&self) -> u8 {
        self.mtype.bits() << 5 | (self.rfu & 0x07) << 2
    }
}

/// A parsed PHYPayload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhyPayload {
    JoinRequest(JoinRequest),
    /// Encrypted as on air: `decrypt`/`open` it with the AppKey.
    JoinAccept(EncryptedJoinAccept),
    Data(DataFrame),
    /// MType 110 (RFU in 1.0.x): carried, not interpreted.
    Rfu {
        mhdr: Mhdr,
        body: Vec<u8>,
    },
    /// MType 111: the body's format is private to the devices that send it.
    Proprietary {
        mhdr: Mhdr,
        body: Vec<u8>,
    },
}

impl PhyPayload {
    /// Splits a PHYPayload into its fields. Needs no key and checks no MIC.
    pub fn parse(bytes: &[u8]) -> Result<PhyPayload, FrameError> {
        let (&first, body) = bytes.split_first().ok_or(FrameError::Empty)?;
        if bytes.len() > MAX_PHY_PAYLOAD {
            return Err(FrameError::TooLong(bytes.len()));
        }
        let mhdr = Mhdr::from_byte(first)?;
        Ok(match mhdr.mtype {
            MType::JoinRequest => PhyPayload::JoinRequest(JoinRequest::parse(mhdr, body)?),
            MType::JoinAccept => PhyPayload::JoinAccept(EncryptedJoinAccept::parse(mhdr, body)?),
            MType::UnconfirmedDataUp
            | MType::UnconfirmedDataDown
            | MType::ConfirmedDataUp
            | MType::ConfirmedDataDown => PhyPayload::Data(DataFrame::parse(mhdr, body)?),
            MType::Rfu => PhyPayload::Rfu {
                mhdr,
                body: body.to_vec(),
            },
            MType::Proprietary => PhyPayload::Proprietary {
                mhdr,
                body: body.to_vec(),
            },
        })
    }

    /// The wire bytes. Fails only for a hand-built frame whose fields cannot be encoded.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FrameError> {
        let out = match self {
            PhyPayload::JoinRequest(j) => j.to_bytes(),
            PhyPayload::JoinAccept(j) => j.to_bytes(),
            PhyPayload::Data(d) => d.to_bytes()?,
            PhyPayload::Rfu { mhdr, body } | PhyPayload::Proprietary { mhdr, body } => {
                let mut v = Vec::with_capacity(1 + body.len());
                v.push(mhdr.byte());
                v.extend_from_slice(body);
                v
            }
        };
        if out.len() > MAX_PHY_PAYLOAD {
            return Err(FrameError::TooLong(out.len()));
        }
        Ok(out)
    }

    pub fn mhdr(&self) -> Mhdr {
        match self {
            PhyPayload::JoinRequest(j) => j.mhdr,
            PhyPayload::JoinAccept(j) => j.mhdr,
            PhyPayload::Data(d) => d.mhdr,
            PhyPayload::Rfu { mhdr, .. } | PhyPayload::Proprietary { mhdr, .. } => *mhdr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mhdr_keeps_rfu_bits_and_refuses_other_majors() {
        for b in 0..=255u8 {
            match Mhdr::from_byte(b) {
                Ok(m) => assert_eq!(m.byte(), b),
                Err(e) => assert_eq!(e, FrameError::UnsupportedMajor(b & 3)),
            }
        }
        assert_eq!(
            Mhdr::from_byte(0x40).unwrap().mtype,
            MType::UnconfirmedDataUp
        );
        assert_eq!(Mhdr::from_byte(0x80).unwrap().mtype, MType::ConfirmedDataUp);
        assert_eq!(
            Mhdr::from_byte(0x60).unwrap().mtype,
            MType::UnconfirmedDataDown
        );
    }

    #[test]
    fn odd_frames_are_refused_not_panicked_on() {
        assert_eq!(PhyPayload::parse(&[]), Err(FrameError::Empty));
        assert!(PhyPayload::parse(&[0x40]).is_err());
        assert!(PhyPayload::parse(&[0x00; 22]).is_err());
        assert!(PhyPayload::parse(&[0x20; 20]).is_err());
        assert_eq!(
            PhyPayload::parse(&[0x41]),
            Err(FrameError::UnsupportedMajor(1))
        );
        assert_eq!(
            PhyPayload::parse(&[0xe0; 256]),
            Err(FrameError::TooLong(256))
        );
        let p = PhyPayload::parse(&[0xe0, 1, 2]).unwrap();
        assert_eq!(p.to_bytes().unwrap(), vec![0xe0, 1, 2]);
    }
}
