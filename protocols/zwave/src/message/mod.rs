//! Typed Serial API messages in both directions, and what a host state machine needs to
//! match them: [`classify`] sorts every incoming frame into ACK / NAK / CAN, a response to
//! function X, a callback for id N, or unsolicited, without decoding it; [`Request::expects`]
//! says what a request waits for; [`CallbackIds`] hands out ids 1..=255.
//!
//! Host to controller: [`Request`]. Controller to host: [`Inbound`] = [`Response`] (RES),
//! [`Callback`] (REQ carrying a callback id) or [`Unsolicited`] (other REQ). Every type
//! encodes too (`to_frame`), so a device-side emulator answers with the same types. Unknown
//! function ids decode as `Unknown(DataFrame)`, never as an error; a known function with a
//! payload too short for its layout is an [`crate::Error`].

mod controller;
mod request;
mod response;
mod types;

pub use controller::{
    AddNodeStatus, ApplicationCommand, ApplicationUpdate, BridgeApplicationCommand, Callback,
    RemoveFailedStatus, RemoveNodeStatus, SerialApiStarted, Unsolicited, WakeUpReason,
};
pub use request::{add_node_flags, AddNodeMode, NvmOperation, RemoveNodeMode, Request, SendData};
pub use response::{
    ControllerCapabilities, NvmStatus, Response, SerialApiCapabilities, SerialApiInitData,
    NODE_MASK_LEN,
};
pub use types::{
    rssi, tx_options, CcList, DeviceClass, Flirs, NodeInfo, NodeProtocolInfo, RxFrameType,
    RxStatus, TransmitStatus, TxReport, EXTENDED_CC_START, SUPPORT_CONTROL_MARK,
};

use crate::error::Result;
use crate::frame::{DataFrame, Frame, FrameType};
use crate::function::{self as func, has_callback};

/// What an incoming frame is, read from its first bytes only (no allocation, no decoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameClass {
    Ack,
    Nak,
    Can,
    /// A RES frame answering the host's request of `function`.
    Response {
        function: u8,
    },
    /// A REQ frame finishing the host's request of `function` sent with `callback_id`.
    Callback {
        function: u8,
        callback_id: u8,
    },
    /// Any other controller frame: node traffic, node info, SerialApiStarted, unknown ids.
    Unsolicited {
        function: u8,
    },
}

/// Sorts an incoming frame for the host state machine.
pub fn classify(frame: &Frame) -> FrameClass {
    match frame {
        Frame::Ack => FrameClass::Ack,
        Frame::Nak => FrameClass::Nak,
        Frame::Can => FrameClass::Can,
        Frame::Data(d) => classify_data(d),
    }
}

/// [`classify`] for a data frame.
pub fn classify_data(d: &DataFrame) -> FrameClass {
    match d.frame_type {
        FrameType::Response => FrameClass::Response {
            function: d.function,
        },
        FrameType::Request if has_callback(d.function) && !d.payload.is_empty() => {
            FrameClass::Callback {
                function: d.function,
                callback_id: d.payload[0],
            }
        }
        _ => FrameClass::Unsolicited {
            function: d.function,
        },
    }
}

/// A decoded controller-to-host data frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Inbound {
    Response(Response),
    Callback(Callback),
    Unsolicited(Unsolicited),
}

impl Inbound {
    /// Decodes a controller-to-host data frame.
    pub fn decode(frame: &DataFrame) -> Result<Self> {
        Ok(match classify_data(frame) {
            FrameClass::Response { function } => {
                Self::Response(Response::decode(function, &frame.payload)?)
            }
            FrameClass::Callback { function, .. } => {
                Self::Callback(Callback::decode(function, &frame.payload)?)
            }
            _ if frame.frame_type == FrameType::Request => {
                Self::Unsolicited(Unsolicited::decode(frame.function, &frame.payload)?)
            }
            _ => Self::Unsolicited(Unsolicited::Unknown(frame.clone())),
        })
    }

    /// The data frame (what an emulated controller sends).
    pub fn to_frame(&self) -> Result<DataFrame> {
        match self {
            Self::Response(r) => r.to_frame(),
            Self::Callback(c) => c.to_frame(),
            Self::Unsolicited(u) => u.to_frame(),
        }
    }

    pub fn function(&self) -> u8 {
        match self {
            Self::Response(r) => r.function(),
            Self::Callback(c) => c.function(),
            Self::Unsolicited(u) => u.function(),
        }
    }
}

/// A frame the host waits for after its request was ACKed, besides a response and a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AwaitedUpdate {
    /// ApplicationUpdate 0x84 for this node, or 0x81 (request failed).
    NodeInfo { node_id: u8 },
    /// SerialApiStarted (0x0A) after a soft reset.
    SerialApiStarted,
}

/// What completes a request (zwave-js: `expectedResponse`, `expectedCallback`,
/// `needsCallbackId`, per message class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expectation {
    /// A RES frame of the request's function comes first.
    pub response: bool,
    /// Then a callback of the same function with this id.
    pub callback: Option<u8>,
    /// Then (or instead) this unsolicited frame.
    pub update: Option<AwaitedUpdate>,
}

impl Request {
    /// What the host waits for after the ACK. Callback id 0 means "no callback wanted".
    pub fn expects(&self) -> Expectation {
        let nonzero = |id: u8| (id != 0).then_some(id);
        let (response, callback, update) = match self {
            Self::SendData(s) => (true, nonzero(s.callback_id), None),
            Self::AddNodeToNetwork { callback_id, .. }
            | Self::RemoveNodeFromNetwork { callback_id, .. } => {
                (false, nonzero(*callback_id), None)
            }
            Self::RemoveFailedNode { callback_id, .. } => (true, nonzero(*callback_id), None),
            Self::RequestNodeInfo { node_id } => (
                true,
                None,
                Some(AwaitedUpdate::NodeInfo { node_id: *node_id }),
            ),
            Self::SoftReset => (false, None, Some(AwaitedUpdate::SerialApiStarted)),
            Self::SendDataAbort => (false, None, None),
            Self::Unknown(_) => (false, None, None),
            _ => (true, None, None),
        };
        Expectation {
            response,
            callback,
            update,
        }
    }

    /// Whether `class` is this request's response or callback.
    pub fn is_answered_by(&self, class: &FrameClass) -> bool {
        let e = self.expects();
        match *class {
            FrameClass::Response { function } => e.response && function == self.function(),
            FrameClass::Callback {
                function,
                callback_id,
            } => function == self.function() && e.callback == Some(callback_id),
            _ => false,
        }
    }

    /// Whether an unsolicited frame finishes this request (NIF after RequestNodeInfo,
    /// SerialApiStarted after SoftReset).
    pub fn is_finished_by(&self, update: &Unsolicited) -> bool {
        match (self.expects().update, update) {
            (Some(AwaitedUpdate::SerialApiStarted), Unsolicited::SerialApiStarted(_)) => true,
            (Some(AwaitedUpdate::NodeInfo { node_id }), Unsolicited::ApplicationUpdate(u)) => {
                match u {
                    ApplicationUpdate::NodeInfoReceived(info) => info.node_id == node_id,
                    ApplicationUpdate::NodeInfoRequestFailed { .. } => true,
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// Callback ids 1, 2, …, 255, 1, … (zwave-js `createWrappingCounter(0xff)`: 0 is skipped
/// because it means "no callback").
#[derive(Debug, Clone)]
pub struct CallbackIds {
    next: u8,
}

impl Default for CallbackIds {
    fn default() -> Self {
        Self::new()
    }
}

impl CallbackIds {
    pub fn new() -> Self {
        Self { next: 1 }
    }

    /// Starts at `id` (0 is taken as 1), e.g. to continue after a restart.
    pub fn starting_at(id: u8) -> Self {
        Self { next: id.max(1) }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u8 {
        let id = self.next;
        self.next = if id == u8::MAX { 1 } else { id + 1 };
        id
    }
}

/// Whether `function` is one of the SendData family (their callbacks carry TX status).
pub fn is_send_data(function: u8) -> bool {
    matches!(
        function,
        func::SEND_DATA
            | func::SEND_DATA_MULTICAST
            | func::SEND_DATA_BRIDGE
            | func::SEND_DATA_MULTICAST_BRIDGE
    )
}
