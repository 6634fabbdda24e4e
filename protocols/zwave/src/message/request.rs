//! Host-to-controller requests ([`Request`]): what the host sends, typed, with the callback id
//! the callback will carry. Decoding is there for the emulator and for captured traffic.
//! Layouts: zwave-js `packages/serial/src/serialapi/**` (named per variant).

use crate::error::{Error, Result};
use crate::frame::{DataFrame, FrameType};
use crate::function as func;
use crate::macros::byte_enum;
use crate::wire::Reader;
use serde::Serialize;

byte_enum! {
    /// Mode of AddNodeToNetwork, low nibble of its first byte (zwave-js `AddNodeType`).
    pub enum AddNodeMode {
        Any = 0x01,
        Controller = 0x02,
        EndNode = 0x03,
        Existing = 0x04,
        Stop = 0x05,
        StopControllerReplication = 0x06,
        SmartStartDsk = 0x08,
        SmartStartListen = 0x09,
    }
}

byte_enum! {
    /// Mode of RemoveNodeFromNetwork, low bits of its first byte (zwave-js `RemoveNodeType`).
    pub enum RemoveNodeMode {
        Any = 0x01,
        Controller = 0x02,
        EndNode = 0x03,
        Stop = 0x05,
    }
}

/// Flag bits next to the AddNode / RemoveNode mode.
pub mod add_node_flags {
    pub const HIGH_POWER: u8 = 0x80;
    pub const NETWORK_WIDE: u8 = 0x40;
    /// AddNode only: include as Long Range.
    pub const LONG_RANGE: u8 = 0x20;
}

/// SendData (0x13): `nodeId, len, CC bytes…, txOptions, callbackId`
/// (`transport/SendDataMessages.ts`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SendData {
    pub node_id: u8,
    /// The encoded command class (see [`crate::cc::Cc::encode`]).
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub payload: Vec<u8>,
    /// [`crate::message::tx_options`] bits.
    pub tx_options: u8,
    /// 1..=255; 0 asks the controller for no callback.
    pub callback_id: u8,
}

/// One step of a 700/800-series NVM backup or restore (NVM_BACKUP_RESTORE 0x2E,
/// `nvm/NVMOperationsMessages.ts`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NvmOperation {
    /// Opens the NVM; the response's `offset_or_size` is the NVM size.
    Open,
    Read {
        length: u8,
        offset: u16,
    },
    Write {
        offset: u16,
        #[serde(serialize_with = "crate::wire::serde_hex")]
        data: Vec<u8>,
    },
    Close,
}

/// A request from the host to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// 0x07: firmware version, manufacturer, product and the supported function bitmask.
    GetSerialApiCapabilities,
    /// 0x02: API version, role and the node list.
    GetSerialApiInitData,
    /// 0x15: library version string and type.
    GetControllerVersion,
    /// 0x20 (MemoryGetId): home id and own node id.
    MemoryGetId,
    /// 0x05: controller role flags.
    GetControllerCapabilities,
    /// 0x56: the SUC node id.
    GetSucNodeId,
    /// 0x41: listening / FLiRS / routing and device class of a node.
    GetNodeProtocolInfo { node_id: u8 },
    /// 0x13: send a command class to a node.
    SendData(SendData),
    /// 0x16: abort the SendData in flight (no response, no callback).
    SendDataAbort,
    /// 0x4A: start or stop inclusion; `flags` are [`add_node_flags`].
    AddNodeToNetwork {
        mode: AddNodeMode,
        flags: u8,
        callback_id: u8,
    },
    /// 0x4B: start or stop exclusion; `flags` are [`add_node_flags`] (no Long Range bit).
    RemoveNodeFromNetwork {
        mode: RemoveNodeMode,
        flags: u8,
        callback_id: u8,
    },
    /// 0x61: remove a node the controller has marked failed.
    RemoveFailedNode { node_id: u8, callback_id: u8 },
    /// 0x62: whether the controller has marked a node failed.
    IsFailedNode { node_id: u8 },
    /// 0x60: ask a node for its NIF; answered by ApplicationUpdate (0x49), not a callback.
    RequestNodeInfo { node_id: u8 },
    /// 0x08: restart the controller; it announces itself with SerialApiStarted (0x0A).
    SoftReset,
    /// 0x2E: 700/800-series NVM backup and restore.
    NvmBackupRestore(NvmOperation),
    /// 0x29: 500-series NVM chip id.
    GetNvmId,
    /// 0x2A: 500-series NVM read (`offset` is 24 bits).
    NvmExtReadLongBuffer { offset: u32, length: u16 },
    /// Any other function, as framed.
    Unknown(DataFrame),
}

impl Request {
    /// SendData with the default transmit options (ACK, auto route, explore).
    pub fn send_data(node_id: u8, payload: Vec<u8>, callback_id: u8) -> Self {
        Self::SendData(SendData {
            node_id,
            payload,
            tx_options: super::tx_options::DEFAULT,
            callback_id,
        })
    }

    /// The FUNC byte.
    pub fn function(&self) -> u8 {
        match self {
            Self::GetSerialApiCapabilities => func::GET_SERIAL_API_CAPABILITIES,
            Self::GetSerialApiInitData => func::GET_SERIAL_API_INIT_DATA,
            Self::GetControllerVersion => func::GET_CONTROLLER_VERSION,
            Self::MemoryGetId => func::MEMORY_GET_ID,
            Self::GetControllerCapabilities => func::GET_CONTROLLER_CAPABILITIES,
            Self::GetSucNodeId => func::GET_SUC_NODE_ID,
            Self::GetNodeProtocolInfo { .. } => func::GET_NODE_PROTOCOL_INFO,
            Self::SendData(_) => func::SEND_DATA,
            Self::SendDataAbort => func::SEND_DATA_ABORT,
            Self::AddNodeToNetwork { .. } => func::ADD_NODE_TO_NETWORK,
            Self::RemoveNodeFromNetwork { .. } => func::REMOVE_NODE_FROM_NETWORK,
            Self::RemoveFailedNode { .. } => func::REMOVE_FAILED_NODE,
            Self::IsFailedNode { .. } => func::IS_FAILED_NODE,
            Self::RequestNodeInfo { .. } => func::REQUEST_NODE_INFO,
            Self::SoftReset => func::SOFT_RESET,
            Self::NvmBackupRestore(_) => func::NVM_BACKUP_RESTORE,
            Self::GetNvmId => func::GET_NVM_ID,
            Self::NvmExtReadLongBuffer { .. } => func::NVM_EXT_READ_LONG_BUFFER,
            Self::Unknown(f) => f.function,
        }
    }

    /// The REQ frame.
    pub fn to_frame(&self) -> Result<DataFrame> {
        let mut p = Vec::new();
        match self {
            Self::GetSerialApiCapabilities
            | Self::GetSerialApiInitData
            | Self::GetControllerVersion
            | Self::MemoryGetId
            | Self::GetControllerCapabilities
            | Self::GetSucNodeId
            | Self::SendDataAbort
            | Self::SoftReset
            | Self::GetNvmId => {}
            Self::GetNodeProtocolInfo { node_id }
            | Self::IsFailedNode { node_id }
            | Self::RequestNodeInfo { node_id } => p.push(*node_id),
            Self::SendData(s) => {
                let len = u8::try_from(s.payload.len()).map_err(|_| Error::TooLong {
                    what: "SendData command class",
                    len: s.payload.len(),
                    max: 255,
                })?;
                p.extend_from_slice(&[s.node_id, len]);
                p.extend_from_slice(&s.payload);
                p.extend_from_slice(&[s.tx_options, s.callback_id]);
            }
            Self::AddNodeToNetwork {
                mode,
                flags,
                callback_id,
            } => p.extend_from_slice(&[(mode.to_byte() & 0x0F) | (flags & 0xF0), *callback_id]),
            Self::RemoveNodeFromNetwork {
                mode,
                flags,
                callback_id,
            } => p.extend_from_slice(&[(mode.to_byte() & 0x1F) | (flags & 0xE0), *callback_id]),
            Self::RemoveFailedNode {
                node_id,
                callback_id,
            } => p.extend_from_slice(&[*node_id, *callback_id]),
            Self::NvmBackupRestore(op) => match op {
                NvmOperation::Open => p.push(0x00),
                NvmOperation::Read { length, offset } => {
                    p.extend_from_slice(&[0x01, *length]);
                    p.extend_from_slice(&offset.to_be_bytes());
                }
                NvmOperation::Write { offset, data } => {
                    let len = u8::try_from(data.len()).map_err(|_| Error::TooLong {
                        what: "NVM write chunk",
                        len: data.len(),
                        max: 255,
                    })?;
                    p.extend_from_slice(&[0x02, len]);
                    p.extend_from_slice(&offset.to_be_bytes());
                    p.extend_from_slice(data);
                }
                NvmOperation::Close => p.push(0x03),
            },
            Self::NvmExtReadLongBuffer { offset, length } => {
                if *offset > 0xFF_FFFF {
                    return Err(Error::ValueOutOfRange {
                        what: "NVM offset",
                        detail: format!("{offset:#x} exceeds 24 bits"),
                    });
                }
                p.extend_from_slice(&offset.to_be_bytes()[1..]);
                p.extend_from_slice(&length.to_be_bytes());
            }
            Self::Unknown(f) => return Ok(f.clone()),
        }
        Ok(DataFrame::request(self.function(), p))
    }

    /// The bytes on the wire, SOF through checksum.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.to_frame()?.to_bytes()
    }

    /// Decodes a host-to-controller REQ frame (what an emulated controller receives).
    pub fn decode(frame: &DataFrame) -> Result<Self> {
        if frame.frame_type != FrameType::Request {
            return Ok(Self::Unknown(frame.clone()));
        }
        let mut r = Reader::new(&frame.payload, "host request");
        Ok(match frame.function {
            func::GET_SERIAL_API_CAPABILITIES => Self::GetSerialApiCapabilities,
            func::GET_SERIAL_API_INIT_DATA => Self::GetSerialApiInitData,
            func::GET_CONTROLLER_VERSION => Self::GetControllerVersion,
            func::MEMORY_GET_ID => Self::MemoryGetId,
            func::GET_CONTROLLER_CAPABILITIES => Self::GetControllerCapabilities,
            func::GET_SUC_NODE_ID => Self::GetSucNodeId,
            func::SEND_DATA_ABORT => Self::SendDataAbort,
            func::SOFT_RESET => Self::SoftReset,
            func::GET_NVM_ID => Self::GetNvmId,
            func::GET_NODE_PROTOCOL_INFO => Self::GetNodeProtocolInfo { node_id: r.u8()? },
            func::IS_FAILED_NODE => Self::IsFailedNode { node_id: r.u8()? },
            func::REQUEST_NODE_INFO => Self::RequestNodeInfo { node_id: r.u8()? },
            func::SEND_DATA => {
                let node_id = r.u8()?;
                let len = usize::from(r.u8()?);
                let payload = r.take(len)?.to_vec();
                Self::SendData(SendData {
                    node_id,
                    payload,
                    tx_options: r.u8()?,
                    callback_id: r.u8()?,
                })
            }
            func::ADD_NODE_TO_NETWORK => {
                let b = r.u8()?;
                Self::AddNodeToNetwork {
                    mode: AddNodeMode::from_byte(b & 0x0F),
                    flags: b & 0xF0,
                    callback_id: r.u8()?,
                }
            }
            func::REMOVE_NODE_FROM_NETWORK => {
                let b = r.u8()?;
                Self::RemoveNodeFromNetwork {
                    mode: RemoveNodeMode::from_byte(b & 0x1F),
                    flags: b & 0xE0,
                    callback_id: r.u8()?,
                }
            }
            func::REMOVE_FAILED_NODE => Self::RemoveFailedNode {
                node_id: r.u8()?,
                callback_id: r.u8()?,
            },
            func::NVM_BACKUP_RESTORE => Self::NvmBackupRestore(match r.u8()? {
                0x00 => NvmOperation::Open,
                0x01 => NvmOperation::Read {
                    length: r.u8()?,
                    offset: r.u16()?,
                },
                0x02 => {
                    let len = usize::from(r.u8()?);
                    let offset = r.u16()?;
                    NvmOperation::Write {
                        offset,
                        data: r.take(len)?.to_vec(),
                    }
                }
                0x03 => NvmOperation::Close,
                _ => return Ok(Self::Unknown(frame.clone())),
            }),
            func::NVM_EXT_READ_LONG_BUFFER => Self::NvmExtReadLongBuffer {
                offset: r.u24()?,
                length: r.u16()?,
            },
            _ => Self::Unknown(frame.clone()),
        })
    }
}
