//! Controller-to-host responses ([`Response`]): the RES frame that answers a host request.
//! Layouts: zwave-js `packages/serial/src/serialapi/**` (named per variant).

use crate::error::{Error, Result};
use crate::frame::DataFrame;
use crate::function as func;
use crate::macros::byte_enum;
use crate::message::types::NodeProtocolInfo;
use crate::wire::{encode_bitmask, parse_bitmask, Reader};
use serde::Serialize;

/// Bytes in the node bitmask of GetSerialApiInitData (232 nodes).
pub const NODE_MASK_LEN: usize = 29;

/// GetSerialApiCapabilities (0x07) response (`capability/GetSerialApiCapabilitiesMessages.ts`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SerialApiCapabilities {
    pub firmware_major: u8,
    pub firmware_minor: u8,
    pub manufacturer_id: u16,
    pub product_type: u16,
    pub product_id: u16,
    /// Bit n-1 set = function n supported (bit 0 of byte 0 is function 1); up to 32 bytes.
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub function_bitmask: Vec<u8>,
}

impl SerialApiCapabilities {
    pub fn supports(&self, function: u8) -> bool {
        let i = usize::from(function).wrapping_sub(1);
        function != 0
            && self
                .function_bitmask
                .get(i / 8)
                .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    pub fn supported_functions(&self) -> Vec<u8> {
        parse_bitmask(&self.function_bitmask, 1)
            .into_iter()
            .filter_map(|f| u8::try_from(f).ok())
            .collect()
    }

    /// A 32-byte bitmask listing `functions`.
    pub fn bitmask_for(functions: &[u8]) -> Vec<u8> {
        let ids: Vec<u16> = functions.iter().map(|&f| u16::from(f)).collect();
        encode_bitmask(&ids, 1, 32)
    }
}

/// GetSerialApiInitData (0x02) response (`capability/GetSerialApiInitDataMessages.ts`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SerialApiInitData {
    /// Below 10: legacy numbering; from 10 on, official API version + 9.
    pub api_version: u8,
    /// bit0 end node, bit1 timers, bit2 secondary, bit3 SIS.
    pub capabilities: u8,
    /// Bit n-1 set = node n is in the network; normally 29 bytes.
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub node_bitmask: Vec<u8>,
    /// Chip type and version, when sent.
    pub chip: Option<(u8, u8)>,
}

impl SerialApiInitData {
    /// The node ids in the network, ascending (zwave-js only reads a 29-byte mask).
    pub fn node_ids(&self) -> Vec<u8> {
        parse_bitmask(&self.node_bitmask, 1)
            .into_iter()
            .filter_map(|n| u8::try_from(n).ok())
            .collect()
    }
    /// A 29-byte mask listing `nodes`.
    pub fn bitmask_for(nodes: &[u8]) -> Vec<u8> {
        let ids: Vec<u16> = nodes.iter().map(|&n| u16::from(n)).collect();
        encode_bitmask(&ids, 1, NODE_MASK_LEN)
    }
    pub fn is_end_node(&self) -> bool {
        self.capabilities & 0x01 != 0
    }
    pub fn supports_timers(&self) -> bool {
        self.capabilities & 0x02 != 0
    }
    pub fn is_primary(&self) -> bool {
        self.capabilities & 0x04 == 0
    }
    pub fn is_sis(&self) -> bool {
        self.capabilities & 0x08 != 0
    }
}

/// GetControllerCapabilities (0x05) flag bits (zwave-js `ControllerCapabilityFlags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct ControllerCapabilities(pub u8);

impl ControllerCapabilities {
    pub fn is_secondary(self) -> bool {
        self.0 & 0x01 != 0
    }
    pub fn on_other_network(self) -> bool {
        self.0 & 0x02 != 0
    }
    pub fn sis_present(self) -> bool {
        self.0 & 0x04 != 0
    }
    pub fn was_real_primary(self) -> bool {
        self.0 & 0x08 != 0
    }
    pub fn is_suc(self) -> bool {
        self.0 & 0x10 != 0
    }
    pub fn no_nodes_included(self) -> bool {
        self.0 & 0x20 != 0
    }
}

byte_enum! {
    /// Status of an NVM_BACKUP_RESTORE response (zwave-js `NVMOperationStatus`).
    pub enum NvmStatus {
        Ok = 0x00,
        Error = 0x01,
        OperationMismatch = 0x02,
        OperationInterference = 0x03,
        EndOfFile = 0xFF,
    }
}

/// A response from the controller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    SerialApiCapabilities(SerialApiCapabilities),
    SerialApiInitData(SerialApiInitData),
    /// 0x15: e.g. "Z-Wave 7.17" and library type 1 (static controller).
    ControllerVersion {
        library_version: String,
        library_type: u8,
    },
    /// 0x20 MemoryGetId (`memory/GetControllerIdMessages.ts`).
    MemoryGetId {
        home_id: u32,
        node_id: u8,
    },
    ControllerCapabilities(ControllerCapabilities),
    /// 0x56.
    SucNodeId(u8),
    /// 0x41.
    NodeProtocolInfo(NodeProtocolInfo),
    /// 0x13: whether the controller accepted the frame for transmission.
    SendData {
        was_sent: bool,
    },
    /// 0x60.
    RequestNodeInfo {
        was_sent: bool,
    },
    /// 0x61: 0 = started; otherwise zwave-js `RemoveFailedNodeStartFlags` bits.
    RemoveFailedNode {
        status: u8,
    },
    /// 0x62.
    IsFailedNode {
        failed: bool,
    },
    /// 0x2E: `status, length, offset-or-size u16, data` (for Open, the NVM size).
    NvmBackupRestore {
        status: NvmStatus,
        offset_or_size: u16,
        #[serde(serialize_with = "crate::wire::serde_hex")]
        data: Vec<u8>,
    },
    /// 0x29 (`nvm/GetNVMIdMessages.ts`; zwave-js skips byte 0).
    NvmId {
        byte0: u8,
        manufacturer_id: u8,
        memory_type: u8,
        memory_size: u8,
    },
    /// 0x2A: the bytes read.
    NvmExtReadLongBuffer {
        #[serde(serialize_with = "crate::wire::serde_hex")]
        data: Vec<u8>,
    },
    /// Any other function, as framed.
    Unknown(DataFrame),
}

impl Response {
    pub fn function(&self) -> u8 {
        match self {
            Self::SerialApiCapabilities(_) => func::GET_SERIAL_API_CAPABILITIES,
            Self::SerialApiInitData(_) => func::GET_SERIAL_API_INIT_DATA,
            Self::ControllerVersion { .. } => func::GET_CONTROLLER_VERSION,
            Self::MemoryGetId { .. } => func::MEMORY_GET_ID,
            Self::ControllerCapabilities(_) => func::GET_CONTROLLER_CAPABILITIES,
            Self::SucNodeId(_) => func::GET_SUC_NODE_ID,
            Self::NodeProtocolInfo(_) => func::GET_NODE_PROTOCOL_INFO,
            Self::SendData { .. } => func::SEND_DATA,
            Self::RequestNodeInfo { .. } => func::REQUEST_NODE_INFO,
            Self::RemoveFailedNode { .. } => func::REMOVE_FAILED_NODE,
            Self::IsFailedNode { .. } => func::IS_FAILED_NODE,
            Self::NvmBackupRestore { .. } => func::NVM_BACKUP_RESTORE,
            Self::NvmId { .. } => func::GET_NVM_ID,
            Self::NvmExtReadLongBuffer { .. } => func::NVM_EXT_READ_LONG_BUFFER,
            Self::Unknown(f) => f.function,
        }
    }

    /// Decodes the payload of a RES frame of `function`.
    pub fn decode(function: u8, payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload, "controller response");
        Ok(match function {
            func::GET_SERIAL_API_CAPABILITIES => {
                let firmware_major = r.u8()?;
                let firmware_minor = r.u8()?;
                let manufacturer_id = r.u16()?;
                let product_type = r.u16()?;
                let product_id = r.u16()?;
                let rest = r.rest();
                Self::SerialApiCapabilities(SerialApiCapabilities {
                    firmware_major,
                    firmware_minor,
                    manufacturer_id,
                    product_type,
                    product_id,
                    function_bitmask: rest[..rest.len().min(32)].to_vec(),
                })
            }
            func::GET_SERIAL_API_INIT_DATA => {
                let api_version = r.u8()?;
                let capabilities = r.u8()?;
                let node_bitmask = match r.opt_u8() {
                    Some(len) => r.take(usize::from(len))?.to_vec(),
                    None => Vec::new(),
                };
                let chip = match (r.opt_u8(), r.opt_u8()) {
                    (Some(t), Some(v)) => Some((t, v)),
                    _ => None,
                };
                Self::SerialApiInitData(SerialApiInitData {
                    api_version,
                    capabilities,
                    node_bitmask,
                    chip,
                })
            }
            func::GET_CONTROLLER_VERSION => {
                let end = payload
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(Error::Truncated {
                        what: "controller version (no NUL)",
                        need: payload.len() + 1,
                        have: payload.len(),
                    })?;
                Self::ControllerVersion {
                    library_version: String::from_utf8_lossy(&payload[..end]).into_owned(),
                    library_type: payload.get(end + 1).copied().unwrap_or(0),
                }
            }
            func::MEMORY_GET_ID => Self::MemoryGetId {
                home_id: r.u32()?,
                node_id: r.u8()?,
            },
            func::GET_CONTROLLER_CAPABILITIES => {
                Self::ControllerCapabilities(ControllerCapabilities(r.u8()?))
            }
            func::GET_SUC_NODE_ID => Self::SucNodeId(r.u8()?),
            func::GET_NODE_PROTOCOL_INFO => {
                Self::NodeProtocolInfo(NodeProtocolInfo::parse(payload)?)
            }
            func::SEND_DATA => Self::SendData {
                was_sent: r.u8()? != 0,
            },
            func::REQUEST_NODE_INFO => Self::RequestNodeInfo {
                was_sent: r.u8()? != 0,
            },
            func::REMOVE_FAILED_NODE => Self::RemoveFailedNode { status: r.u8()? },
            func::IS_FAILED_NODE => Self::IsFailedNode {
                failed: r.u8()? != 0,
            },
            func::NVM_BACKUP_RESTORE => {
                let status = NvmStatus::from_byte(r.u8()?);
                let len = usize::from(r.u8()?);
                // zwave-js reads what is there: a short frame means offset 0 / no data.
                let offset_or_size = r.u16().unwrap_or(0);
                let data = if len > 0 && r.remaining() >= len {
                    r.take(len)?.to_vec()
                } else {
                    Vec::new()
                };
                Self::NvmBackupRestore {
                    status,
                    offset_or_size,
                    data,
                }
            }
            func::GET_NVM_ID => Self::NvmId {
                byte0: r.u8()?,
                manufacturer_id: r.u8()?,
                memory_type: r.u8()?,
                memory_size: r.u8()?,
            },
            func::NVM_EXT_READ_LONG_BUFFER => Self::NvmExtReadLongBuffer {
                data: payload.to_vec(),
            },
            _ => Self::Unknown(DataFrame::response(function, payload.to_vec())),
        })
    }

    /// The RES frame.
    pub fn to_frame(&self) -> Result<DataFrame> {
        let mut p = Vec::new();
        match self {
            Self::SerialApiCapabilities(c) => {
                p.extend_from_slice(&[c.firmware_major, c.firmware_minor]);
                p.extend_from_slice(&c.manufacturer_id.to_be_bytes());
                p.extend_from_slice(&c.product_type.to_be_bytes());
                p.extend_from_slice(&c.product_id.to_be_bytes());
                p.extend_from_slice(&c.function_bitmask[..c.function_bitmask.len().min(32)]);
            }
            Self::SerialApiInitData(d) => {
                let len = u8::try_from(d.node_bitmask.len()).map_err(|_| Error::TooLong {
                    what: "node bitmask",
                    len: d.node_bitmask.len(),
                    max: 255,
                })?;
                p.extend_from_slice(&[d.api_version, d.capabilities, len]);
                p.extend_from_slice(&d.node_bitmask);
                if let Some((t, v)) = d.chip {
                    p.extend_from_slice(&[t, v]);
                }
            }
            Self::ControllerVersion {
                library_version,
                library_type,
            } => {
                p.extend(library_version.bytes().filter(|&b| b != 0));
                p.extend_from_slice(&[0, *library_type]);
            }
            Self::MemoryGetId { home_id, node_id } => {
                p.extend_from_slice(&home_id.to_be_bytes());
                p.push(*node_id);
            }
            Self::ControllerCapabilities(c) => p.push(c.0),
            Self::SucNodeId(n) => p.push(*n),
            Self::NodeProtocolInfo(info) => info.encode(&mut p),
            Self::SendData { was_sent } | Self::RequestNodeInfo { was_sent } => {
                p.push(u8::from(*was_sent))
            }
            Self::RemoveFailedNode { status } => p.push(*status),
            Self::IsFailedNode { failed } => p.push(u8::from(*failed)),
            Self::NvmBackupRestore {
                status,
                offset_or_size,
                data,
            } => {
                let len = u8::try_from(data.len()).map_err(|_| Error::TooLong {
                    what: "NVM read chunk",
                    len: data.len(),
                    max: 255,
                })?;
                p.extend_from_slice(&[status.to_byte(), len]);
                p.extend_from_slice(&offset_or_size.to_be_bytes());
                p.extend_from_slice(data);
            }
            Self::NvmId {
                byte0,
                manufacturer_id,
                memory_type,
                memory_size,
            } => p.extend_from_slice(&[*byte0, *manufacturer_id, *memory_type, *memory_size]),
            Self::NvmExtReadLongBuffer { data } => p.extend_from_slice(data),
            Self::Unknown(f) => return Ok(f.clone()),
        }
        Ok(DataFrame::response(self.function(), p))
    }
}
