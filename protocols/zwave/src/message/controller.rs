//! Controller-to-host REQ frames: [`Callback`]s (they carry the callback id of the host
//! request they finish) and [`Unsolicited`] frames (node traffic, node info, restarts).
//! Layouts: zwave-js `packages/serial/src/serialapi/**` (named per variant).

use crate::error::{Error, Result};
use crate::frame::DataFrame;
use crate::function as func;
use crate::macros::byte_enum;
use crate::message::types::{CcList, NodeInfo, RxStatus, TransmitStatus, TxReport};
use crate::wire::Reader;
use serde::Serialize;

/// Status of an AddNodeToNetwork callback, with what it carries
/// (`network-mgmt/AddNodeToNetworkRequest.ts` `AddNodeStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddNodeStatus {
    /// 0x01: learn mode is on; press the device's button.
    Ready,
    /// 0x02: a node answered.
    NodeFound,
    /// 0x03: the node is an end node; its NIF.
    AddingEndNode(NodeInfo),
    /// 0x04: the node is a controller; its NIF.
    AddingController(NodeInfo),
    /// 0x05: the protocol part is done; the host sends Stop next.
    ProtocolDone,
    /// 0x06: finished (answer to Stop); the new node id.
    Done { node_id: u8 },
    /// 0x07.
    Failed,
    /// Any other status, with the bytes after it.
    Other {
        status: u8,
        #[serde(serialize_with = "crate::wire::serde_hex")]
        data: Vec<u8>,
    },
}

/// Status of a RemoveNodeFromNetwork callback (`RemoveNodeFromNetworkRequest.ts`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveNodeStatus {
    /// 0x01.
    Ready,
    /// 0x02.
    NodeFound,
    /// 0x03: the node being removed.
    RemovingEndNode { node_id: u8 },
    /// 0x04.
    RemovingController { node_id: u8 },
    /// 0x06: finished; some controllers repeat the removed node id.
    Done { node_id: Option<u8> },
    /// 0x07.
    Failed,
    /// Any other status (0x05 is reserved), with the bytes after it.
    Other {
        status: u8,
        #[serde(serialize_with = "crate::wire::serde_hex")]
        data: Vec<u8>,
    },
}

byte_enum! {
    /// RemoveFailedNode callback status (zwave-js `RemoveFailedNodeStatus`).
    pub enum RemoveFailedStatus {
        /// The node answered: it is not failed and was kept.
        NodeOk = 0x00,
        NodeRemoved = 0x01,
        NodeNotRemoved = 0x02,
    }
}

/// A controller REQ frame that finishes a host request; `callback_id` matches the request's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Callback {
    /// 0x13 (`transport/SendDataMessages.ts` `SendDataRequestTransmitReport`).
    SendData {
        callback_id: u8,
        status: TransmitStatus,
        report: Option<TxReport>,
    },
    /// 0x4A.
    AddNode {
        callback_id: u8,
        status: AddNodeStatus,
    },
    /// 0x4B.
    RemoveNode {
        callback_id: u8,
        status: RemoveNodeStatus,
    },
    /// 0x61.
    RemoveFailedNode {
        callback_id: u8,
        status: RemoveFailedStatus,
    },
    /// Another callback function ([`crate::function::CALLBACK_FUNCTIONS`]): its first byte is
    /// the callback id, the rest is kept as is.
    Other {
        function: u8,
        callback_id: u8,
        #[serde(serialize_with = "crate::wire::serde_hex")]
        data: Vec<u8>,
    },
}

impl Callback {
    pub fn function(&self) -> u8 {
        match self {
            Self::SendData { .. } => func::SEND_DATA,
            Self::AddNode { .. } => func::ADD_NODE_TO_NETWORK,
            Self::RemoveNode { .. } => func::REMOVE_NODE_FROM_NETWORK,
            Self::RemoveFailedNode { .. } => func::REMOVE_FAILED_NODE,
            Self::Other { function, .. } => *function,
        }
    }

    pub fn callback_id(&self) -> u8 {
        match self {
            Self::SendData { callback_id, .. }
            | Self::AddNode { callback_id, .. }
            | Self::RemoveNode { callback_id, .. }
            | Self::RemoveFailedNode { callback_id, .. }
            | Self::Other { callback_id, .. } => *callback_id,
        }
    }

    /// Decodes the payload of a callback REQ frame of `function`
    /// (one of [`crate::function::CALLBACK_FUNCTIONS`]).
    pub fn decode(function: u8, payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload, "controller callback");
        let callback_id = r.u8()?;
        Ok(match function {
            func::SEND_DATA => Self::SendData {
                callback_id,
                status: TransmitStatus::from_byte(r.u8()?),
                report: TxReport::parse(r.rest()),
            },
            func::ADD_NODE_TO_NETWORK => {
                let status = match r.u8()? {
                    0x01 => AddNodeStatus::Ready,
                    0x02 => AddNodeStatus::NodeFound,
                    0x03 => AddNodeStatus::AddingEndNode(NodeInfo::parse(&mut r)?),
                    0x04 => AddNodeStatus::AddingController(NodeInfo::parse(&mut r)?),
                    0x05 => AddNodeStatus::ProtocolDone,
                    0x06 => AddNodeStatus::Done {
                        node_id: r.opt_u8().unwrap_or(0),
                    },
                    0x07 => AddNodeStatus::Failed,
                    status => AddNodeStatus::Other {
                        status,
                        data: r.rest().to_vec(),
                    },
                };
                Self::AddNode {
                    callback_id,
                    status,
                }
            }
            func::REMOVE_NODE_FROM_NETWORK => {
                let status = match r.u8()? {
                    0x01 => RemoveNodeStatus::Ready,
                    0x02 => RemoveNodeStatus::NodeFound,
                    0x03 => RemoveNodeStatus::RemovingEndNode {
                        node_id: r.opt_u8().unwrap_or(0),
                    },
                    0x04 => RemoveNodeStatus::RemovingController {
                        node_id: r.opt_u8().unwrap_or(0),
                    },
                    0x06 => RemoveNodeStatus::Done {
                        node_id: r.opt_u8(),
                    },
                    0x07 => RemoveNodeStatus::Failed,
                    status => RemoveNodeStatus::Other {
                        status,
                        data: r.rest().to_vec(),
                    },
                };
                Self::RemoveNode {
                    callback_id,
                    status,
                }
            }
            func::REMOVE_FAILED_NODE => Self::RemoveFailedNode {
                callback_id,
                status: RemoveFailedStatus::from_byte(r.u8()?),
            },
            function => Self::Other {
                function,
                callback_id,
                data: r.rest().to_vec(),
            },
        })
    }

    /// The REQ frame.
    pub fn to_frame(&self) -> Result<DataFrame> {
        let mut p = vec![self.callback_id()];
        match self {
            Self::SendData { status, report, .. } => {
                p.push(status.to_byte());
                if let Some(report) = report {
                    report.encode(&mut p);
                }
            }
            Self::AddNode { status, .. } => match status {
                AddNodeStatus::Ready => p.push(0x01),
                AddNodeStatus::NodeFound => p.push(0x02),
                AddNodeStatus::AddingEndNode(info) => {
                    p.push(0x03);
                    info.encode(&mut p)?;
                }
                AddNodeStatus::AddingController(info) => {
                    p.push(0x04);
                    info.encode(&mut p)?;
                }
                AddNodeStatus::ProtocolDone => p.push(0x05),
                AddNodeStatus::Done { node_id } => p.extend_from_slice(&[0x06, *node_id]),
                AddNodeStatus::Failed => p.push(0x07),
                AddNodeStatus::Other { status, data } => {
                    p.push(*status);
                    p.extend_from_slice(data);
                }
            },
            Self::RemoveNode { status, .. } => match status {
                RemoveNodeStatus::Ready => p.push(0x01),
                RemoveNodeStatus::NodeFound => p.push(0x02),
                RemoveNodeStatus::RemovingEndNode { node_id } => {
                    p.extend_from_slice(&[0x03, *node_id])
                }
                RemoveNodeStatus::RemovingController { node_id } => {
                    p.extend_from_slice(&[0x04, *node_id])
                }
                RemoveNodeStatus::Done { node_id } => {
                    p.push(0x06);
                    p.extend(node_id);
                }
                RemoveNodeStatus::Failed => p.push(0x07),
                RemoveNodeStatus::Other { status, data } => {
                    p.push(*status);
                    p.extend_from_slice(data);
                }
            },
            Self::RemoveFailedNode { status, .. } => p.push(status.to_byte()),
            Self::Other { data, .. } => p.extend_from_slice(data),
        }
        Ok(DataFrame::request(self.function(), p))
    }
}

/// ApplicationCommandHandler (0x04): a command class from a node
/// (`application/ApplicationCommandRequest.ts`): `status, source, len, CC…, [rssi]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ApplicationCommand {
    pub status: RxStatus,
    pub source: u8,
    /// The encoded command class; decode it with [`crate::cc::Cc::decode`].
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub payload: Vec<u8>,
    /// Receive RSSI, which 500-series and later controllers append.
    pub rssi: Option<i8>,
}

/// BridgeApplicationCommand (0xA8): as 0x04, with the destination, a multicast node mask and
/// the RSSI (`application/BridgeApplicationCommandRequest.ts`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BridgeApplicationCommand {
    pub status: RxStatus,
    pub destination: u8,
    pub source: u8,
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub payload: Vec<u8>,
    /// Multicast destinations as a node bitmask (empty for singlecast).
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub multicast_mask: Vec<u8>,
    pub rssi: Option<i8>,
}

/// ApplicationUpdate (0x49) (`application/ApplicationUpdateRequest.ts`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationUpdate {
    /// 0x84: a node's NIF (the answer to RequestNodeInfo, or sent by the node).
    NodeInfoReceived(NodeInfo),
    /// 0x81: RequestNodeInfo got no answer. Controllers send node id 0 here.
    NodeInfoRequestFailed { node_id: u8 },
    /// 0x40: another controller added a node.
    NodeAdded(NodeInfo),
    /// 0x20: another controller removed a node.
    NodeRemoved { node_id: u8 },
    /// 0x10: the SUC changed.
    SucIdChanged { node_id: u8 },
    /// Any other update type (SmartStart 0x85-0x87, routing pending 0x80, …), as sent.
    Other {
        update_type: u8,
        #[serde(serialize_with = "crate::wire::serde_hex")]
        data: Vec<u8>,
    },
}

byte_enum! {
    /// Why the Serial API (re)started (zwave-js `SerialAPIWakeUpReason`).
    pub enum WakeUpReason {
        Reset = 0x00,
        WakeUpTimer = 0x01,
        WakeUpBeam = 0x02,
        WatchdogReset = 0x03,
        ExternalInterrupt = 0x04,
        PowerUp = 0x05,
        UsbSuspend = 0x06,
        SoftwareReset = 0x07,
        EmergencyWatchdogReset = 0x08,
        BrownoutCircuit = 0x09,
        Unknown = 0xFF,
    }
}

/// SerialApiStarted (0x0A), sent after a reset (`application/SerialAPIStartedRequest.ts`):
/// `reason, watchdog, deviceOption, generic, specific, nCC, CCs…, [protocols]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SerialApiStarted {
    pub wake_up_reason: WakeUpReason,
    pub watchdog_started: bool,
    pub listening: bool,
    pub generic: u8,
    pub specific: u8,
    pub command_classes: CcList,
    /// Supported protocols bitmask (bit0 Long Range), sent by newer firmware.
    pub protocols: Option<u8>,
}

/// A controller REQ frame that is not a callback.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unsolicited {
    ApplicationCommand(ApplicationCommand),
    BridgeApplicationCommand(BridgeApplicationCommand),
    ApplicationUpdate(ApplicationUpdate),
    SerialApiStarted(SerialApiStarted),
    /// Any other function, as framed.
    Unknown(DataFrame),
}

impl Unsolicited {
    pub fn function(&self) -> u8 {
        match self {
            Self::ApplicationCommand(_) => func::APPLICATION_COMMAND_HANDLER,
            Self::BridgeApplicationCommand(_) => func::BRIDGE_APPLICATION_COMMAND,
            Self::ApplicationUpdate(_) => func::APPLICATION_UPDATE,
            Self::SerialApiStarted(_) => func::SERIAL_API_STARTED,
            Self::Unknown(f) => f.function,
        }
    }

    /// The node this frame came from or is about, when there is one.
    pub fn node_id(&self) -> Option<u8> {
        match self {
            Self::ApplicationCommand(c) => Some(c.source),
            Self::BridgeApplicationCommand(c) => Some(c.source),
            Self::ApplicationUpdate(u) => match u {
                ApplicationUpdate::NodeInfoReceived(i) | ApplicationUpdate::NodeAdded(i) => {
                    Some(i.node_id)
                }
                ApplicationUpdate::NodeRemoved { node_id } => Some(*node_id),
                _ => None,
            },
            _ => None,
        }
    }

    /// The encoded command class carried, for 0x04 and 0xA8.
    pub fn command_class(&self) -> Option<&[u8]> {
        match self {
            Self::ApplicationCommand(c) => Some(&c.payload),
            Self::BridgeApplicationCommand(c) => Some(&c.payload),
            _ => None,
        }
    }

    /// Decodes the payload of a controller REQ frame of `function` that is not a callback.
    pub fn decode(function: u8, payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload, "unsolicited controller frame");
        Ok(match function {
            func::APPLICATION_COMMAND_HANDLER => {
                let status = RxStatus(r.u8()?);
                let source = r.u8()?;
                let len = usize::from(r.u8()?);
                let payload = r.take(len)?.to_vec();
                Self::ApplicationCommand(ApplicationCommand {
                    status,
                    source,
                    payload,
                    rssi: r.opt_u8().map(|b| b as i8),
                })
            }
            func::BRIDGE_APPLICATION_COMMAND => {
                let status = RxStatus(r.u8()?);
                let destination = r.u8()?;
                let source = r.u8()?;
                let len = usize::from(r.u8()?);
                let payload = r.take(len)?.to_vec();
                let mask_len = usize::from(r.opt_u8().unwrap_or(0));
                let multicast_mask = r.take(mask_len)?.to_vec();
                Self::BridgeApplicationCommand(BridgeApplicationCommand {
                    status,
                    destination,
                    source,
                    payload,
                    multicast_mask,
                    rssi: r.opt_u8().map(|b| b as i8),
                })
            }
            func::APPLICATION_UPDATE => Self::ApplicationUpdate(match r.u8()? {
                0x84 => ApplicationUpdate::NodeInfoReceived(NodeInfo::parse(&mut r)?),
                0x40 => ApplicationUpdate::NodeAdded(NodeInfo::parse(&mut r)?),
                0x81 => ApplicationUpdate::NodeInfoRequestFailed {
                    node_id: r.opt_u8().unwrap_or(0),
                },
                0x20 => ApplicationUpdate::NodeRemoved { node_id: r.u8()? },
                0x10 => ApplicationUpdate::SucIdChanged { node_id: r.u8()? },
                update_type => ApplicationUpdate::Other {
                    update_type,
                    data: r.rest().to_vec(),
                },
            }),
            func::SERIAL_API_STARTED => {
                let wake_up_reason = WakeUpReason::from_byte(r.u8()?);
                let watchdog_started = r.u8()? == 0x01;
                let listening = r.u8()? & 0x01 != 0;
                let generic = r.u8()?;
                let specific = r.u8()?;
                let n = usize::from(r.u8()?);
                let command_classes = CcList::parse(r.take(n)?)?;
                Self::SerialApiStarted(SerialApiStarted {
                    wake_up_reason,
                    watchdog_started,
                    listening,
                    generic,
                    specific,
                    command_classes,
                    protocols: r.opt_u8(),
                })
            }
            _ => Self::Unknown(DataFrame::request(function, payload.to_vec())),
        })
    }

    /// The REQ frame.
    pub fn to_frame(&self) -> Result<DataFrame> {
        let len_of = |what: &'static str, n: usize| {
            u8::try_from(n).map_err(|_| Error::TooLong {
                what,
                len: n,
                max: 255,
            })
        };
        let mut p = Vec::new();
        match self {
            Self::ApplicationCommand(c) => {
                p.extend_from_slice(&[
                    c.status.0,
                    c.source,
                    len_of("command class", c.payload.len())?,
                ]);
                p.extend_from_slice(&c.payload);
                p.extend(c.rssi.map(|v| v as u8));
            }
            Self::BridgeApplicationCommand(c) => {
                p.extend_from_slice(&[
                    c.status.0,
                    c.destination,
                    c.source,
                    len_of("command class", c.payload.len())?,
                ]);
                p.extend_from_slice(&c.payload);
                p.push(len_of("multicast mask", c.multicast_mask.len())?);
                p.extend_from_slice(&c.multicast_mask);
                p.extend(c.rssi.map(|v| v as u8));
            }
            Self::ApplicationUpdate(u) => match u {
                ApplicationUpdate::NodeInfoReceived(info) => {
                    p.push(0x84);
                    info.encode(&mut p)?;
                }
                ApplicationUpdate::NodeAdded(info) => {
                    p.push(0x40);
                    info.encode(&mut p)?;
                }
                ApplicationUpdate::NodeInfoRequestFailed { node_id } => {
                    p.extend_from_slice(&[0x81, *node_id, 0x00])
                }
                ApplicationUpdate::NodeRemoved { node_id } => {
                    p.extend_from_slice(&[0x20, *node_id, 0x00])
                }
                ApplicationUpdate::SucIdChanged { node_id } => {
                    p.extend_from_slice(&[0x10, *node_id, 0x00])
                }
                ApplicationUpdate::Other { update_type, data } => {
                    p.push(*update_type);
                    p.extend_from_slice(data);
                }
            },
            Self::SerialApiStarted(s) => {
                p.extend_from_slice(&[
                    s.wake_up_reason.to_byte(),
                    u8::from(s.watchdog_started),
                    u8::from(s.listening),
                    s.generic,
                    s.specific,
                    len_of("command class list", s.command_classes.encoded_len())?,
                ]);
                s.command_classes.encode(&mut p);
                p.extend(s.protocols);
            }
            Self::Unknown(f) => return Ok(f.clone()),
        }
        Ok(DataFrame::request(self.function(), p))
    }
}
