//! Serial API function ids (the FUNC byte), named as in zwave-js
//! `packages/serial/src/message/Constants.ts` (`enum FunctionType`) and the Silicon Labs
//! Serial API (`FUNC_ID_*`). Only ids this crate types, or that a host commonly meets, are
//! listed; every other id still frames and decodes as an unknown message.

pub const GET_SERIAL_API_INIT_DATA: u8 = 0x02;
pub const APPLICATION_COMMAND_HANDLER: u8 = 0x04;
pub const GET_CONTROLLER_CAPABILITIES: u8 = 0x05;
pub const GET_SERIAL_API_CAPABILITIES: u8 = 0x07;
pub const SOFT_RESET: u8 = 0x08;
pub const GET_PROTOCOL_VERSION: u8 = 0x09;
pub const SERIAL_API_STARTED: u8 = 0x0A;
pub const SERIAL_API_SETUP: u8 = 0x0B;
pub const SEND_DATA: u8 = 0x13;
pub const SEND_DATA_MULTICAST: u8 = 0x14;
pub const GET_CONTROLLER_VERSION: u8 = 0x15;
pub const SEND_DATA_ABORT: u8 = 0x16;
/// `FUNC_ID_MEMORY_GET_ID`: home id and own node id.
pub const MEMORY_GET_ID: u8 = 0x20;
/// 500 series: NVM chip id and size.
pub const GET_NVM_ID: u8 = 0x29;
/// 500 series: read up to 64 KiB of external NVM.
pub const NVM_EXT_READ_LONG_BUFFER: u8 = 0x2A;
pub const NVM_EXT_WRITE_LONG_BUFFER: u8 = 0x2B;
/// 700/800 series `FUNC_ID_NVM_BACKUP_RESTORE`: open / read / write / close.
pub const NVM_BACKUP_RESTORE: u8 = 0x2E;
pub const GET_NODE_PROTOCOL_INFO: u8 = 0x41;
pub const ASSIGN_RETURN_ROUTE: u8 = 0x46;
pub const DELETE_RETURN_ROUTE: u8 = 0x47;
pub const REQUEST_NODE_NEIGHBOR_UPDATE: u8 = 0x48;
pub const APPLICATION_UPDATE: u8 = 0x49;
pub const ADD_NODE_TO_NETWORK: u8 = 0x4A;
pub const REMOVE_NODE_FROM_NETWORK: u8 = 0x4B;
pub const SET_LEARN_MODE: u8 = 0x50;
pub const ASSIGN_SUC_RETURN_ROUTE: u8 = 0x51;
pub const DELETE_SUC_RETURN_ROUTE: u8 = 0x55;
pub const GET_SUC_NODE_ID: u8 = 0x56;
pub const REQUEST_NODE_INFO: u8 = 0x60;
pub const REMOVE_FAILED_NODE: u8 = 0x61;
pub const IS_FAILED_NODE: u8 = 0x62;
pub const REPLACE_FAILED_NODE: u8 = 0x63;
pub const GET_ROUTING_INFO: u8 = 0x80;
pub const BRIDGE_APPLICATION_COMMAND: u8 = 0xA8;
pub const SEND_DATA_BRIDGE: u8 = 0xA9;
pub const SEND_DATA_MULTICAST_BRIDGE: u8 = 0xAB;

/// Functions whose controller-to-host REQ frames are callbacks carrying the host's callback
/// id in their first payload byte (zwave-js: every message class with `expectedCallback` and
/// `needsCallbackId()`; INS12350 lists the same `funcID` callbacks).
pub const CALLBACK_FUNCTIONS: &[u8] = &[
    SEND_DATA,
    SEND_DATA_MULTICAST,
    SEND_DATA_BRIDGE,
    SEND_DATA_MULTICAST_BRIDGE,
    ASSIGN_RETURN_ROUTE,
    DELETE_RETURN_ROUTE,
    REQUEST_NODE_NEIGHBOR_UPDATE,
    ADD_NODE_TO_NETWORK,
    REMOVE_NODE_FROM_NETWORK,
    SET_LEARN_MODE,
    ASSIGN_SUC_RETURN_ROUTE,
    DELETE_SUC_RETURN_ROUTE,
    REMOVE_FAILED_NODE,
    REPLACE_FAILED_NODE,
];

/// Whether REQ frames of `function` from the controller are callbacks (first byte: callback id).
pub fn has_callback(function: u8) -> bool {
    CALLBACK_FUNCTIONS.contains(&function)
}

/// A readable name for logs, or `None` for ids this crate does not know.
pub fn name(function: u8) -> Option<&'static str> {
    Some(match function {
        GET_SERIAL_API_INIT_DATA => "GetSerialApiInitData",
        APPLICATION_COMMAND_HANDLER => "ApplicationCommandHandler",
        GET_CONTROLLER_CAPABILITIES => "GetControllerCapabilities",
        GET_SERIAL_API_CAPABILITIES => "GetSerialApiCapabilities",
        SOFT_RESET => "SoftReset",
        GET_PROTOCOL_VERSION => "GetProtocolVersion",
        SERIAL_API_STARTED => "SerialApiStarted",
        SERIAL_API_SETUP => "SerialApiSetup",
        SEND_DATA => "SendData",
        SEND_DATA_MULTICAST => "SendDataMulticast",
        GET_CONTROLLER_VERSION => "GetControllerVersion",
        SEND_DATA_ABORT => "SendDataAbort",
        MEMORY_GET_ID => "MemoryGetId",
        GET_NVM_ID => "GetNvmId",
        NVM_EXT_READ_LONG_BUFFER => "NvmExtReadLongBuffer",
        NVM_EXT_WRITE_LONG_BUFFER => "NvmExtWriteLongBuffer",
        NVM_BACKUP_RESTORE => "NvmBackupRestore",
        GET_NODE_PROTOCOL_INFO => "GetNodeProtocolInfo",
        ASSIGN_RETURN_ROUTE => "AssignReturnRoute",
        DELETE_RETURN_ROUTE => "DeleteReturnRoute",
        REQUEST_NODE_NEIGHBOR_UPDATE => "RequestNodeNeighborUpdate",
        APPLICATION_UPDATE => "ApplicationUpdate",
        ADD_NODE_TO_NETWORK => "AddNodeToNetwork",
        REMOVE_NODE_FROM_NETWORK => "RemoveNodeFromNetwork",
        SET_LEARN_MODE => "SetLearnMode",
        ASSIGN_SUC_RETURN_ROUTE => "AssignSucReturnRoute",
        DELETE_SUC_RETURN_ROUTE => "DeleteSucReturnRoute",
        GET_SUC_NODE_ID => "GetSucNodeId",
        REQUEST_NODE_INFO => "RequestNodeInfo",
        REMOVE_FAILED_NODE => "RemoveFailedNode",
        IS_FAILED_NODE => "IsFailedNode",
        REPLACE_FAILED_NODE => "ReplaceFailedNode",
        GET_ROUTING_INFO => "GetRoutingInfo",
        BRIDGE_APPLICATION_COMMAND => "BridgeApplicationCommand",
        SEND_DATA_BRIDGE => "SendDataBridge",
        SEND_DATA_MULTICAST_BRIDGE => "SendDataMulticastBridge",
        _ => return None,
    })
}
