//! Typed Z-Stack ZNP commands carried in MT frames: what a coordinator driver sends
//! (requests built with [`ZnpCommand::encode`]) and receives (responses and indications parsed
//! with [`ZnpCommand::decode`]). Requests decode too, so a device-side emulator can use it.
//!
//! Command ids and parameter order follow zigbee-herdsman `src/adapter/z-stack/znp/definition.ts`
//! (HEAD a70284a); ZDO requests carry `DstAddr u16` followed by the standard ZDO request payload
//! and ZDO AREQ responses carry `SrcAddr u16` followed by the standard ZDO response payload
//! (ZH `zStackAdapter.ts sendZdoInternal`, `zpiObject.ts fromUnpiFrame`).
//!
//! Decoding is lenient about *extra* trailing bytes (newer firmware appends fields) and strict
//! about *missing* ones. Frames this module does not model decode to [`ZnpCommand::Raw`].

mod af_ext;
mod decode;
mod encode;

use serde::Serialize;

pub use af_ext::{
    retrieve_plan, AfIncomingMsgExt, AF_ADDR_MODE_16BIT, AF_ADDR_MODE_64BIT, AF_STATUS_FAILED,
    DATA_RETRIEVE_CHUNK, MAX_INLINE_PAYLOAD,
};

use crate::error::{Error, Result};
use crate::mt::{MtFrame, MtType, Subsystem};
use crate::wire::{len_u8, Reader, Writer};
use crate::IeeeAddr;

/// Command ids (CMD1) per subsystem.
pub mod cmd {
    pub mod sys {
        pub const RESET_REQ: u8 = 0x00;
        pub const PING: u8 = 0x01;
        pub const VERSION: u8 = 0x02;
        pub const GET_EXT_ADDR: u8 = 0x04;
        pub const OSAL_NV_ITEM_INIT: u8 = 0x07;
        pub const OSAL_NV_READ: u8 = 0x08;
        pub const OSAL_NV_WRITE: u8 = 0x09;
        pub const OSAL_NV_LENGTH: u8 = 0x13;
        pub const OSAL_NV_READ_EXT: u8 = 0x1C;
        /// SimpleLink Z-Stack 3.x.0 extended NV items (sysId, itemId, subId).
        pub const NV_LENGTH: u8 = 0x32;
        pub const NV_READ: u8 = 0x33;
        pub const RESET_IND: u8 = 0x80;
    }
    pub mod util {
        pub const GET_DEVICE_INFO: u8 = 0x00;
    }
    pub mod af {
        pub const REGISTER: u8 = 0x00;
        pub const DATA_REQUEST: u8 = 0x01;
        /// AF_DATA_RETRIEVE: a chunk of a payload the coordinator held back.
        pub const DATA_RETRIEVE: u8 = 0x12;
        pub const DATA_CONFIRM: u8 = 0x80;
        pub const INCOMING_MSG: u8 = 0x81;
        /// AF_INCOMING_MSG_EXT ([`super::super::AfIncomingMsgExt`]).
        pub const INCOMING_MSG_EXT: u8 = 0x82;
    }
    pub mod zdo {
        /// ZDO NWK_addr_req: which network address an IEEE address has.
        pub const NWK_ADDR_REQ: u8 = 0x00;
        pub const IEEE_ADDR_REQ: u8 = 0x01;
        pub const NODE_DESC_REQ: u8 = 0x02;
        pub const SIMPLE_DESC_REQ: u8 = 0x04;
        pub const ACTIVE_EP_REQ: u8 = 0x05;
        pub const BIND_REQ: u8 = 0x21;
        pub const MGMT_LQI_REQ: u8 = 0x31;
        pub const MGMT_LEAVE_REQ: u8 = 0x34;
        pub const MGMT_PERMIT_JOIN_REQ: u8 = 0x36;
        pub const STARTUP_FROM_APP: u8 = 0x40;
        /// ZDO_EXT_UPDATE_NWK_KEY (ZH `definition.js extUpdateNwkKey`, ID 78).
        pub const EXT_UPDATE_NWK_KEY: u8 = 0x4E;
        /// ZDO_EXT_SWITCH_NWK_KEY (ZH `definition.js extSwitchNwkKey`, ID 79).
        pub const EXT_SWITCH_NWK_KEY: u8 = 0x4F;
        /// ZDO_EXT_ADD_GROUP: an endpoint joins an APS group (ZH `definition.ts extAddGroup`).
        pub const EXT_ADD_GROUP: u8 = 0x4B;
        pub const NWK_ADDR_RSP: u8 = 0x80;
        pub const IEEE_ADDR_RSP: u8 = 0x81;
        pub const NODE_DESC_RSP: u8 = 0x82;
        pub const SIMPLE_DESC_RSP: u8 = 0x84;
        pub const ACTIVE_EP_RSP: u8 = 0x85;
        pub const BIND_RSP: u8 = 0xA1;
        pub const MGMT_LQI_RSP: u8 = 0xB1;
        pub const MGMT_LEAVE_RSP: u8 = 0xB4;
        pub const MGMT_PERMIT_JOIN_RSP: u8 = 0xB6;
        pub const STATE_CHANGE_IND: u8 = 0xC0;
        pub const END_DEVICE_ANNCE_IND: u8 = 0xC1;
        pub const LEAVE_IND: u8 = 0xC9;
        pub const TC_DEV_IND: u8 = 0xCA;
        pub const PERMIT_JOIN_IND: u8 = 0xCB;
    }
    pub mod app_cnf {
        /// APP_CNF_BDB_ADD_INSTALLCODE (ZH `definition.js bdbAddInstallCode`, ID 4).
        pub const BDB_ADD_INSTALLCODE: u8 = 0x04;
        /// APP_CNF_BDB_SET_JOINUSESINSTALLCODEKEY (zigpy-znp `commands/app_config.py
        /// BDBSetJoinUsesInstallCodeKey`, 0x06; not in zigbee-herdsman 11.1.1's definition).
        pub const BDB_SET_JOIN_USES_INSTALL_CODE_KEY: u8 = 0x06;
        pub const BDB_START_COMMISSIONING: u8 = 0x05;
        pub const BDB_SET_CHANNEL: u8 = 0x08;
        pub const BDB_COMMISSIONING_NOTIFICATION: u8 = 0x80;
    }
}

/// OSAL NV item ids the coordinator start-up uses (Z-Stack 3 `ZComDef.h`; ZH
/// `constants/common.ts NvItemsIds`; reference §1.4).
pub mod nv {
    /// u8: bit 0 clear config, bit 1 clear network state, applied at the next reset.
    pub const STARTUP_OPTION: u16 = 0x0003;
    /// 8 bytes, the extended PAN id (little-endian like every MT field).
    pub const EXTENDED_PAN_ID: u16 = 0x002D;
    pub const APS_USE_EXT_PANID: u16 = 0x0047;
    /// u8 [`HAS_CONFIGURED_MAGIC`] once the host has formed a network (Z-Stack 3).
    pub const HAS_CONFIGURED_ZSTACK3: u16 = 0x0060;
    /// 16 bytes, the network key.
    pub const PRECFGKEY: u16 = 0x0062;
    pub const PRECFGKEYS_ENABLE: u16 = 0x0063;
    /// u8: 1 once the node formed or joined a network (BDB `bdbNodeIsOnANetwork`).
    pub const BDB_NODE_IS_ON_A_NETWORK: u16 = 0x0055;
    /// u16.
    pub const PANID: u16 = 0x0083;
    /// u32 channel bit mask (bit n = channel n).
    pub const CHANLIST: u16 = 0x0084;
    /// u8: 0 coordinator, 1 router, 2 end device.
    pub const LOGICAL_TYPE: u16 = 0x0087;
    pub const ZDO_DIRECT_CB: u16 = 0x008F;
    /// The NWK information base ([`crate::nvitems::Nib`]).
    pub const NIB: u16 = 0x0021;
    /// The active network key and its sequence number ([`crate::nvitems::NwkKeyDescriptor`];
    /// Z-Stack `ZCD_NV_NWK_ACTIVE_KEY_INFO`). A key switch rewrites it.
    pub const NWK_ACTIVE_KEY_INFO: u16 = 0x003A;
    /// The alternate network key: the one a key update delivered and a switch to its
    /// sequence number makes active; after the switch it holds the previous key (Z-Stack
    /// `ZCD_NV_NWK_ALTERN_KEY_INFO`, written by `SSP_UpdateNwkKey` / `SSP_SwitchNwkKey`).
    pub const NWK_ALTERN_KEY_INFO: u16 = 0x003B;
    /// First of the legacy network security material items (Z-Stack 3.0.x / 1.2), one
    /// [`crate::nvitems::NwkSecMaterialEntry`] each.
    pub const LEGACY_NWK_SEC_MATERIAL_TABLE_START: u16 = 0x0075;
    /// How many legacy security material items herdsman reads at most.
    pub const LEGACY_NWK_SEC_MATERIAL_TABLE_LEN: u16 = 12;
    /// The network key and its frame counter as Z-Stack 1.2 kept them (`nwkActiveKeyItems`):
    /// 21 bytes packed, 24 aligned; zigbee-herdsman tells the NV layout by its length.
    pub const NWKKEY: u16 = 0x0082;
    /// The address manager table as one inline item (Z-Stack 3.0.x;
    /// [`crate::nvitems::parse_address_manager_table`]).
    pub const ADDRMGR: u16 = 0x0023;
    /// The security manager ("APS link key") table: which device has which APS link key
    /// data entry ([`crate::nvitems::parse_security_manager_table`]).
    pub const APS_LINK_KEY_TABLE: u16 = 0x004C;
    /// The trust center link key seed ([`crate::nvitems::TclkSeed`]).
    pub const TCLK_SEED: u16 = 0x0101;
    /// First legacy trust center link key item (Z-Stack 3.0.x), one
    /// [`crate::nvitems::ApsTcLinkKeyEntry`] each.
    pub const LEGACY_TCLK_TABLE_START: u16 = 0x0111;
    /// How many legacy TC link key items zigbee-herdsman reads at most.
    pub const LEGACY_TCLK_TABLE_LEN: u16 = 239;
    /// First legacy APS link key data item (Z-Stack 3.0.x), one
    /// [`crate::nvitems::ApsLinkKeyDataEntry`] each.
    pub const APS_LINK_KEY_DATA_START: u16 = crate::nvitems::LEGACY_APS_LINK_KEY_DATA_START;
    /// How many legacy APS link key data items zigbee-herdsman reads at most.
    pub const LEGACY_APS_LINK_KEY_DATA_LEN: u16 = 255;
    /// Extended-NV item ids (SimpleLink Z-Stack 3.x.0; the entry index is the subId):
    /// the address manager, the TC link key and the APS link key data tables.
    pub const EX_ADDRMGR: u16 = 0x0001;
    pub const EX_TCLK_TABLE: u16 = 0x0004;
    pub const EX_APS_KEY_DATA_TABLE: u16 = 0x0006;
    /// Extended-NV system id of Z-Stack's own items.
    pub const SYSTEM_ZSTACK: u8 = 0x01;
    /// Extended-NV item id of the security material table (SimpleLink Z-Stack 3.x.0); the
    /// entry index is the subId.
    pub const EX_NWK_SEC_MATERIAL_TABLE: u16 = 0x0007;
    pub const HAS_CONFIGURED_MAGIC: u8 = 0x55;
    /// STARTUP_OPTION value that wipes config and network state.
    pub const STARTUP_CLEAR_ALL: u8 = 0x03;
}

/// ZDO_STATE_CHANGE_IND / UTIL_GET_DEVICE_INFO device state "started as coordinator"
/// (ZH `constants/common.ts DevStates`).
pub const DEVICE_STATE_COORDINATOR: u8 = 9;
/// AF_DATA_REQUEST default radius, 2 × 15 (ZH `zStackAdapter.ts`).
pub const DEFAULT_RADIUS: u8 = 30;
/// MGMT_PERMIT_JOIN_REQ address mode: 16-bit unicast.
pub const ADDR_MODE_16BIT: u8 = 0x02;
/// MGMT_PERMIT_JOIN_REQ address mode: broadcast.
pub const ADDR_MODE_BROADCAST: u8 = 0x0F;
/// BDB_START_COMMISSIONING mode bit: network formation.
pub const BDB_MODE_FORMATION: u8 = 0x04;

/// IEEE 802.15.4 MAC capability flags from a device announce or node descriptor
/// (ZNP `commands/zdo.py MACCapabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MacCapabilities(pub u8);

impl MacCapabilities {
    pub fn alternate_pan_coordinator(self) -> bool {
        self.0 & 0x01 != 0
    }
    pub fn router(self) -> bool {
        self.0 & 0x02 != 0
    }
    pub fn mains_powered(self) -> bool {
        self.0 & 0x04 != 0
    }
    pub fn rx_on_when_idle(self) -> bool {
        self.0 & 0x08 != 0
    }
    pub fn security_capable(self) -> bool {
        self.0 & 0x40 != 0
    }
    pub fn allocate_address(self) -> bool {
        self.0 & 0x80 != 0
    }
}

impl Serialize for MacCapabilities {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("MacCapabilities", 7)?;
        st.serialize_field("raw", &self.0)?;
        st.serialize_field(
            "alternate_pan_coordinator",
            &self.alternate_pan_coordinator(),
        )?;
        st.serialize_field("router", &self.router())?;
        st.serialize_field("mains_powered", &self.mains_powered())?;
        st.serialize_field("rx_on_when_idle", &self.rx_on_when_idle())?;
        st.serialize_field("security_capable", &self.security_capable())?;
        st.serialize_field("allocate_address", &self.allocate_address())?;
        st.end()
    }
}

/// ZDO node descriptor (13 bytes; layout from ZH `buffaloZdo.ts readNodeDescriptorResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeDescriptor {
    /// 0 coordinator, 1 router, 2 end device.
    pub logical_type: u8,
    pub complex_descriptor_available: bool,
    pub user_descriptor_available: bool,
    pub aps_flags: u8,
    pub frequency_band: u8,
    pub mac_capabilities: MacCapabilities,
    pub manufacturer_code: u16,
    pub max_buffer_size: u8,
    pub max_incoming_transfer_size: u16,
    pub server_mask: u16,
    pub max_outgoing_transfer_size: u16,
    pub descriptor_capabilities: u8,
}

impl NodeDescriptor {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let b1 = r.u8()?;
        let b2 = r.u8()?;
        Ok(Self {
            logical_type: b1 & 0x07,
            complex_descriptor_available: b1 & 0x08 != 0,
            user_descriptor_available: b1 & 0x10 != 0,
            aps_flags: b2 & 0x07,
            frequency_band: b2 >> 3,
            mac_capabilities: MacCapabilities(r.u8()?),
            manufacturer_code: r.u16()?,
            max_buffer_size: r.u8()?,
            max_incoming_transfer_size: r.u16()?,
            server_mask: r.u16()?,
            max_outgoing_transfer_size: r.u16()?,
            descriptor_capabilities: r.u8()?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.put_u8(
            (self.logical_type & 0x07)
                | (u8::from(self.complex_descriptor_available) << 3)
                | (u8::from(self.user_descriptor_available) << 4),
        );
        out.put_u8((self.aps_flags & 0x07) | (self.frequency_band << 3));
        out.put_u8(self.mac_capabilities.0);
        out.put_u16(self.manufacturer_code);
        out.put_u8(self.max_buffer_size);
        out.put_u16(self.max_incoming_transfer_size);
        out.put_u16(self.server_mask);
        out.put_u16(self.max_outgoing_transfer_size);
        out.put_u8(self.descriptor_capabilities);
    }
}

/// ZDO simple descriptor of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimpleDescriptor {
    pub endpoint: u8,
    pub profile_id: u16,
    pub device_id: u16,
    pub device_version: u8,
    pub in_clusters: Vec<u16>,
    pub out_clusters: Vec<u16>,
}

impl SimpleDescriptor {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let endpoint = r.u8()?;
        let profile_id = r.u16()?;
        let device_id = r.u16()?;
        let device_version = r.u8()?;
        let in_clusters = read_u16_list(r)?;
        let out_clusters = read_u16_list(r)?;
        Ok(Self {
            endpoint,
            profile_id,
            device_id,
            device_version,
            in_clusters,
            out_clusters,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.put_u8(self.endpoint);
        out.put_u16(self.profile_id);
        out.put_u16(self.device_id);
        out.put_u8(self.device_version);
        write_u16_list(out, &self.in_clusters);
        write_u16_list(out, &self.out_clusters);
    }

    fn encoded_len(&self) -> usize {
        8 + 2 * (self.in_clusters.len() + self.out_clusters.len())
    }
}

/// One neighbour table entry of a MGMT_LQI response (22 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Neighbor {
    #[serde(serialize_with = "crate::serde_hex_u64")]
    pub extended_pan_id: u64,
    pub ieee: IeeeAddr,
    pub nwk_addr: u16,
    /// 0 coordinator, 1 router, 2 end device, 3 unknown.
    pub device_type: u8,
    /// 0 off, 1 on, 2 unknown.
    pub rx_on_when_idle: u8,
    /// 0 parent, 1 child, 2 sibling, 3 none, 4 previous child.
    pub relationship: u8,
    /// 0 not accepting, 1 accepting, 2 unknown.
    pub permit_joining: u8,
    pub depth: u8,
    pub lqi: u8,
}

impl Neighbor {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let extended_pan_id = r.uint(8)?;
        let ieee = r.ieee()?;
        let nwk_addr = r.u16()?;
        let b = r.u8()?;
        let pj = r.u8()?;
        Ok(Self {
            extended_pan_id,
            ieee,
            nwk_addr,
            device_type: b & 0x03,
            rx_on_when_idle: (b >> 2) & 0x03,
            relationship: (b >> 4) & 0x07,
            permit_joining: pj & 0x03,
            depth: r.u8()?,
            lqi: r.u8()?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.put_uint(self.extended_pan_id, 8);
        out.put_ieee(self.ieee);
        out.put_u16(self.nwk_addr);
        out.put_u8(
            (self.device_type & 0x03)
                | ((self.rx_on_when_idle & 0x03) << 2)
                | ((self.relationship & 0x07) << 4),
        );
        out.put_u8(self.permit_joining & 0x03);
        out.put_u8(self.depth);
        out.put_u8(self.lqi);
    }
}

/// Destination of a ZDO bind request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BindTarget {
    /// Address mode 3: a device endpoint.
    Endpoint { ieee: IeeeAddr, endpoint: u8 },
    /// Address mode 1: a group.
    Group { group_id: u16 },
    /// Any other address mode, kept raw.
    Other {
        mode: u8,
        address: u64,
        endpoint: u8,
    },
}

/// AF_REGISTER parameters: one application endpoint on the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AfRegister {
    pub endpoint: u8,
    pub profile_id: u16,
    pub device_id: u16,
    pub device_version: u8,
    pub latency_req: u8,
    pub in_clusters: Vec<u16>,
    pub out_clusters: Vec<u16>,
}

/// AF_DATA_REQUEST parameters: send an APS frame (usually ZCL) to a device endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AfDataRequest {
    pub dst_addr: u16,
    pub dst_endpoint: u8,
    pub src_endpoint: u8,
    pub cluster_id: u16,
    /// Matched against [`ZnpCommand::AfDataConfirm`]'s `trans_id`.
    pub trans_id: u8,
    pub options: u8,
    pub radius: u8,
    #[serde(serialize_with = "crate::serde_hex")]
    pub data: Vec<u8>,
}

/// AF_INCOMING_MSG: an APS frame received from a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AfIncomingMsg {
    pub group_id: u16,
    pub cluster_id: u16,
    pub src_addr: u16,
    pub src_endpoint: u8,
    pub dst_endpoint: u8,
    pub was_broadcast: bool,
    pub link_quality: u8,
    pub security_use: bool,
    pub timestamp: u32,
    pub trans_seq_num: u8,
    #[serde(serialize_with = "crate::serde_hex")]
    pub data: Vec<u8>,
    /// Undocumented trailing MAC source address (ZNP `commands/af.py` decodes it; ZH ignores it).
    pub mac_src_addr: Option<u16>,
    /// Undocumented trailing message result radius.
    pub msg_result_radius: Option<u8>,
}

/// Key material inside a command (network key, install code). `Debug` and `Serialize` show
/// only its length, so a command logged or printed as JSON never carries the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes redacted>", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format!("<{} bytes redacted>", self.0.len()))
    }
}

/// A ZNP command, response or indication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ZnpCommand {
    // ---- SYS ----
    /// AREQ: 0 = hard reset, 1 = soft reset. Answered by [`ZnpCommand::SysResetInd`].
    SysResetReq {
        reset_type: u8,
    },
    SysResetInd {
        reason: u8,
        transport_rev: u8,
        product_id: u8,
        major_rel: u8,
        minor_rel: u8,
        hw_rev: u8,
    },
    SysPingReq,
    /// Bitmap of subsystems the firmware was built with (SYS 0x1, … APP_CNF 0x400).
    SysPingRsp {
        capabilities: u16,
    },
    SysVersionReq,
    SysVersionRsp {
        transport_rev: u8,
        /// 0 = Z-Stack 1.2, 1 = Z-Stack 3.x.0, 2 = Z-Stack 3.0.x.
        product: u8,
        major_rel: u8,
        minor_rel: u8,
        maint_rel: u8,
        /// Firmware build date as a decimal number, e.g. 20190425.
        revision: Option<u32>,
        bootloader_build_type: Option<u8>,
        bootloader_revision: Option<u32>,
    },
    SysGetExtAddrReq,
    SysGetExtAddrRsp {
        ieee: IeeeAddr,
    },
    SysOsalNvItemInitReq {
        id: u16,
        item_len: u16,
        #[serde(serialize_with = "crate::serde_hex")]
        init_value: Vec<u8>,
    },
    SysOsalNvReadReq {
        id: u16,
        offset: u8,
    },
    SysOsalNvReadRsp {
        status: u8,
        #[serde(serialize_with = "crate::serde_hex")]
        value: Vec<u8>,
    },
    SysOsalNvWriteReq {
        id: u16,
        offset: u8,
        #[serde(serialize_with = "crate::serde_hex")]
        value: Vec<u8>,
    },
    SysOsalNvLengthReq {
        id: u16,
    },
    /// 0 when the item does not exist.
    SysOsalNvLengthRsp {
        length: u16,
    },
    /// Like OSAL_NV_READ with a 16-bit offset, for items longer than one frame.
    SysOsalNvReadExtReq {
        id: u16,
        offset: u16,
    },
    SysOsalNvReadExtRsp {
        status: u8,
        #[serde(serialize_with = "crate::serde_hex")]
        value: Vec<u8>,
    },
    /// Length of an extended NV item (SimpleLink Z-Stack 3.x.0 tables).
    SysNvLengthReq {
        sys_id: u8,
        item_id: u16,
        sub_id: u16,
    },
    /// 0 when the item does not exist. The firmware sends a u32; zigbee-herdsman reads only
    /// its first byte, so a 1-byte answer is accepted too.
    SysNvLengthRsp {
        length: u32,
    },
    SysNvReadReq {
        sys_id: u8,
        item_id: u16,
        sub_id: u16,
        offset: u16,
        len: u8,
    },
    SysNvReadRsp {
        status: u8,
        #[serde(serialize_with = "crate::serde_hex")]
        value: Vec<u8>,
    },
    // ---- UTIL ----
    UtilGetDeviceInfoReq,
    UtilGetDeviceInfoRsp {
        status: u8,
        ieee: IeeeAddr,
        short_addr: u16,
        device_type: u8,
        device_state: u8,
        assoc_devices: Vec<u16>,
    },
    // ---- AF ----
    AfRegisterReq(AfRegister),
    AfDataRequestReq(AfDataRequest),
    AfDataConfirm {
        status: u8,
        endpoint: u8,
        trans_id: u8,
    },
    AfIncomingMsg(AfIncomingMsg),
    /// An incoming frame from an IEEE-addressed source, another PAN, or with a payload too
    /// long for AF_INCOMING_MSG (then held back: see [`AfIncomingMsgExt`]).
    AfIncomingMsgExt(AfIncomingMsgExt),
    /// Reads `length` bytes from `index` of the payload the coordinator holds for the
    /// AF_INCOMING_MSG_EXT with this `timestamp`; `length` 0 frees it.
    AfDataRetrieveReq {
        timestamp: u32,
        index: u16,
        length: u8,
    },
    /// `status` 0 and the bytes asked for, or [`AF_STATUS_FAILED`] when the coordinator holds
    /// no payload with that timestamp (none, or it expired).
    AfDataRetrieveRsp {
        status: u8,
        #[serde(serialize_with = "crate::serde_hex")]
        data: Vec<u8>,
    },
    // ---- ZDO ----
    ZdoStartupFromAppReq {
        start_delay: u16,
    },
    ZdoStateChangeInd {
        state: u8,
    },
    /// ZDO IEEE_addr_req: which IEEE address owns a network address.
    ZdoIeeeAddrReq {
        short_addr: u16,
        /// 0 = single device, 1 = extended (with associated devices).
        req_type: u8,
        start_index: u8,
    },
    /// ZDO IEEE_addr_rsp, in Z-Stack's MT order (start index before the count; ZH
    /// `definition.ts ieeeAddrRsp`).
    ZdoIeeeAddrRsp {
        status: u8,
        ieee: IeeeAddr,
        nwk_addr: u16,
        start_index: u8,
        assoc_devices: Vec<u16>,
    },
    /// ZDO NWK_addr_req: which network address owns an IEEE address (sent by broadcast).
    ZdoNwkAddrReq {
        ieee: IeeeAddr,
        /// 0 = single device, 1 = extended (with associated devices).
        req_type: u8,
        start_index: u8,
    },
    /// ZDO NWK_addr_rsp, laid out like IEEE_addr_rsp (ZH `definition.ts nwkAddrRsp`).
    ZdoNwkAddrRsp {
        status: u8,
        ieee: IeeeAddr,
        nwk_addr: u16,
        start_index: u8,
        assoc_devices: Vec<u16>,
    },
    ZdoNodeDescReq {
        dst_addr: u16,
        nwk_addr_of_interest: u16,
    },
    ZdoNodeDescRsp {
        src_addr: u16,
        status: u8,
        nwk_addr: Option<u16>,
        descriptor: Option<NodeDescriptor>,
    },
    ZdoActiveEpReq {
        dst_addr: u16,
        nwk_addr_of_interest: u16,
    },
    ZdoActiveEpRsp {
        src_addr: u16,
        status: u8,
        nwk_addr: Option<u16>,
        endpoints: Vec<u8>,
    },
    ZdoSimpleDescReq {
        dst_addr: u16,
        nwk_addr_of_interest: u16,
        endpoint: u8,
    },
    ZdoSimpleDescRsp {
        src_addr: u16,
        status: u8,
        nwk_addr: Option<u16>,
        descriptor: Option<SimpleDescriptor>,
    },
    ZdoEndDeviceAnnceInd {
        src_addr: u16,
        nwk_addr: u16,
        ieee: IeeeAddr,
        capabilities: MacCapabilities,
    },
    ZdoTcDevInd {
        nwk_addr: u16,
        ieee: IeeeAddr,
        parent_addr: u16,
    },
    ZdoMgmtPermitJoinReq {
        /// [`ADDR_MODE_16BIT`] or [`ADDR_MODE_BROADCAST`].
        addr_mode: u8,
        dst_addr: u16,
        /// Seconds; 0 closes, 0xFF = forever.
        duration: u8,
        tc_significance: u8,
    },
    ZdoMgmtPermitJoinRsp {
        src_addr: u16,
        status: u8,
    },
    ZdoPermitJoinInd {
        duration: u8,
    },
    ZdoMgmtLeaveReq {
        dst_addr: u16,
        ieee: IeeeAddr,
        /// Z-Stack MT option bit 0 (MT_ZDO.c `MT_ZdoMgmtLeaveRequest`; ZNP `LeaveOptions`).
        rejoin: bool,
        /// Z-Stack MT option bit 1.
        remove_children: bool,
    },
    ZdoMgmtLeaveRsp {
        src_addr: u16,
        status: u8,
    },
    ZdoLeaveInd {
        src_addr: u16,
        ieee: IeeeAddr,
        request: bool,
        remove_children: bool,
        rejoin: bool,
    },
    ZdoBindReq {
        dst_addr: u16,
        src_ieee: IeeeAddr,
        src_endpoint: u8,
        cluster_id: u16,
        target: BindTarget,
    },
    ZdoBindRsp {
        src_addr: u16,
        status: u8,
    },
    ZdoMgmtLqiReq {
        dst_addr: u16,
        start_index: u8,
    },
    ZdoMgmtLqiRsp {
        src_addr: u16,
        status: u8,
        total_entries: u8,
        start_index: u8,
        neighbors: Vec<Neighbor>,
    },
    // ---- APP_CNF (BDB) ----
    BdbStartCommissioningReq {
        mode: u8,
    },
    BdbSetChannelReq {
        is_primary: bool,
        channel_mask: u32,
    },
    BdbCommissioningNotification {
        status: u8,
        mode: Option<u8>,
        remaining_modes: Option<u8>,
    },
    /// Registers a joining device's install code (format [`crate::install_code::FORMAT_CODE_AND_CRC`],
    /// code + CRC) or derived key (format 2, 16 bytes) with the trust center. The code runs to
    /// the end of the frame (no length byte; ZH `BUFFER`, zigpy-znp `t.Bytes`).
    BdbAddInstallCodeReq {
        format: u8,
        ieee: IeeeAddr,
        code: SecretBytes,
    },
    /// Whether joining devices must use their install-code link key (no default TC link key).
    BdbSetJoinUsesInstallCodeKeyReq {
        enabled: bool,
    },
    // ---- ZDO network key update ----
    /// Sends a new network key with sequence number `key_seq_num` to `dst_addr` (0xFFFF: every
    /// device), kept as the alternate key until a switch (Z-Stack `ZDSecMgrUpdateNwkKey`).
    ZdoExtUpdateNwkKeyReq {
        dst_addr: u16,
        key_seq_num: u8,
        key: SecretBytes,
    },
    /// Makes key `key_seq_num` the active network key at `dst_addr` (0xFFFF: every device) and
    /// on the coordinator (Z-Stack `ZDSecMgrSwitchNwkKey`).
    ZdoExtSwitchNwkKeyReq {
        dst_addr: u16,
        key_seq_num: u8,
    },
    // ---- ZDO APS groups ----
    /// Makes a local endpoint a member of an APS group, so frames sent to the group reach it
    /// (Z-Stack keeps the group table in NV: a second add answers 0xB8, duplicate entry).
    ZdoExtAddGroupReq {
        endpoint: u8,
        group_id: u16,
        #[serde(serialize_with = "crate::serde_hex")]
        name: Vec<u8>,
    },
    // ---- generic ----
    /// An SRSP whose payload is a single status byte (AF_REGISTER, AF_DATA_REQUEST, the ZDO
    /// requests, NV writes, BDB, and ZDO_STARTUP_FROM_APP where it is the start state).
    StatusRsp {
        subsystem: Subsystem,
        cmd_id: u8,
        status: u8,
    },
    /// SRSP subsystem 0, cmd 0: the NCP did not understand a request
    /// (1 bad subsystem, 2 bad cmd id, 3 bad parameter, 4 bad length; ZNP `rpc_error.py`).
    RpcError {
        error_code: u8,
        request_cmd0: u8,
        request_cmd1: u8,
    },
    /// Any frame not modelled above.
    Raw(MtFrame),
}

fn read_u16_list(r: &mut Reader<'_>) -> Result<Vec<u16>> {
    let n = r.u8()?;
    (0..n).map(|_| r.u16()).collect()
}

fn write_u16_list(out: &mut Vec<u8>, list: &[u16]) {
    out.put_u8(len_u8(list.len()));
    for v in list {
        out.put_u16(*v);
    }
}

fn read_short_bytes(r: &mut Reader<'_>) -> Result<Vec<u8>> {
    let n = r.u8()?;
    Ok(r.bytes(usize::from(n))?.to_vec())
}

fn write_short_bytes(out: &mut Vec<u8>, data: &[u8]) {
    out.put_u8(len_u8(data.len()));
    out.extend_from_slice(data);
}

/// Status SRSPs: (subsystem, cmd id) pairs whose SRSP is one status byte.
fn is_status_srsp(subsystem: Subsystem, cmd_id: u8) -> bool {
    use cmd::*;
    match subsystem {
        Subsystem::Sys => matches!(cmd_id, sys::OSAL_NV_ITEM_INIT | sys::OSAL_NV_WRITE),
        Subsystem::Af => matches!(cmd_id, af::REGISTER | af::DATA_REQUEST),
        Subsystem::Zdo => matches!(
            cmd_id,
            zdo::NODE_DESC_REQ
                | zdo::IEEE_ADDR_REQ
                | zdo::NWK_ADDR_REQ
                | zdo::SIMPLE_DESC_REQ
                | zdo::ACTIVE_EP_REQ
                | zdo::BIND_REQ
                | zdo::MGMT_LQI_REQ
                | zdo::MGMT_LEAVE_REQ
                | zdo::MGMT_PERMIT_JOIN_REQ
                | zdo::STARTUP_FROM_APP
                | zdo::EXT_UPDATE_NWK_KEY
                | zdo::EXT_SWITCH_NWK_KEY
                | zdo::EXT_ADD_GROUP
        ),
        Subsystem::AppCnf => matches!(
            cmd_id,
            app_cnf::BDB_START_COMMISSIONING
                | app_cnf::BDB_SET_CHANNEL
                | app_cnf::BDB_ADD_INSTALLCODE
                | app_cnf::BDB_SET_JOIN_USES_INSTALL_CODE_KEY
        ),
        _ => false,
    }
}

impl ZnpCommand {
    /// Encodes straight to wire bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.encode().to_bytes()
    }

    /// Builds an AF_DATA_REQUEST with ZH's defaults (options 0, radius 30).
    pub fn af_data_request(
        dst_addr: u16,
        dst_endpoint: u8,
        src_endpoint: u8,
        cluster_id: u16,
        trans_id: u8,
        data: Vec<u8>,
    ) -> Self {
        Self::AfDataRequestReq(AfDataRequest {
            dst_addr,
            dst_endpoint,
            src_endpoint,
            cluster_id,
            trans_id,
            options: 0,
            radius: DEFAULT_RADIUS,
            data,
        })
    }

    /// MGMT_PERMIT_JOIN_REQ opening (or, with 0 s, closing) joining on the coordinator only
    /// (AddrMode 0x02, Dst 0x0000; ZH ≥ 10.9.6, #1888).
    pub fn permit_join_coordinator(duration: u8) -> Self {
        Self::ZdoMgmtPermitJoinReq {
            addr_mode: ADDR_MODE_16BIT,
            dst_addr: 0x0000,
            duration,
            tc_significance: 1,
        }
    }

    /// MGMT_PERMIT_JOIN_REQ broadcast to all routers (AddrMode 0x0F, Dst 0xFFFC).
    pub fn permit_join_all_routers(duration: u8) -> Self {
        Self::ZdoMgmtPermitJoinReq {
            addr_mode: ADDR_MODE_BROADCAST,
            dst_addr: 0xFFFC,
            duration,
            tc_significance: 1,
        }
    }

    /// For an SREQ, the (subsystem, cmd id) its SRSP will carry; `None` for AREQs and responses.
    pub fn expected_srsp(&self) -> Option<(Subsystem, u8)> {
        let f = self.encode();
        (f.cmd_type == MtType::Sreq).then_some((f.subsystem, f.cmd_id))
    }

    /// Short stable name for logs and metrics, e.g. `"zdo_active_ep_rsp"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SysResetReq { .. } => "sys_reset_req",
            Self::SysResetInd { .. } => "sys_reset_ind",
            Self::SysPingReq => "sys_ping_req",
            Self::SysPingRsp { .. } => "sys_ping_rsp",
            Self::SysVersionReq => "sys_version_req",
            Self::SysVersionRsp { .. } => "sys_version_rsp",
            Self::SysGetExtAddrReq => "sys_get_ext_addr_req",
            Self::SysGetExtAddrRsp { .. } => "sys_get_ext_addr_rsp",
            Self::SysOsalNvItemInitReq { .. } => "sys_osal_nv_item_init_req",
            Self::SysOsalNvReadReq { .. } => "sys_osal_nv_read_req",
            Self::SysOsalNvReadRsp { .. } => "sys_osal_nv_read_rsp",
            Self::SysOsalNvWriteReq { .. } => "sys_osal_nv_write_req",
            Self::SysOsalNvLengthReq { .. } => "sys_osal_nv_length_req",
            Self::SysOsalNvLengthRsp { .. } => "sys_osal_nv_length_rsp",
            Self::SysOsalNvReadExtReq { .. } => "sys_osal_nv_read_ext_req",
            Self::SysOsalNvReadExtRsp { .. } => "sys_osal_nv_read_ext_rsp",
            Self::SysNvLengthReq { .. } => "sys_nv_length_req",
            Self::SysNvLengthRsp { .. } => "sys_nv_length_rsp",
            Self::SysNvReadReq { .. } => "sys_nv_read_req",
            Self::SysNvReadRsp { .. } => "sys_nv_read_rsp",
            Self::UtilGetDeviceInfoReq => "util_get_device_info_req",
            Self::UtilGetDeviceInfoRsp { .. } => "util_get_device_info_rsp",
            Self::AfRegisterReq(_) => "af_register_req",
            Self::AfDataRequestReq(_) => "af_data_request_req",
            Self::AfDataConfirm { .. } => "af_data_confirm",
            Self::AfIncomingMsg(_) => "af_incoming_msg",
            Self::AfIncomingMsgExt(_) => "af_incoming_msg_ext",
            Self::AfDataRetrieveReq { .. } => "af_data_retrieve_req",
            Self::AfDataRetrieveRsp { .. } => "af_data_retrieve_rsp",
            Self::ZdoStartupFromAppReq { .. } => "zdo_startup_from_app_req",
            Self::ZdoStateChangeInd { .. } => "zdo_state_change_ind",
            Self::ZdoIeeeAddrReq { .. } => "zdo_ieee_addr_req",
            Self::ZdoIeeeAddrRsp { .. } => "zdo_ieee_addr_rsp",
            Self::ZdoNwkAddrReq { .. } => "zdo_nwk_addr_req",
            Self::ZdoNwkAddrRsp { .. } => "zdo_nwk_addr_rsp",
            Self::ZdoNodeDescReq { .. } => "zdo_node_desc_req",
            Self::ZdoNodeDescRsp { .. } => "zdo_node_desc_rsp",
            Self::ZdoActiveEpReq { .. } => "zdo_active_ep_req",
            Self::ZdoActiveEpRsp { .. } => "zdo_active_ep_rsp",
            Self::ZdoSimpleDescReq { .. } => "zdo_simple_desc_req",
            Self::ZdoSimpleDescRsp { .. } => "zdo_simple_desc_rsp",
            Self::ZdoEndDeviceAnnceInd { .. } => "zdo_end_device_annce_ind",
            Self::ZdoTcDevInd { .. } => "zdo_tc_dev_ind",
            Self::ZdoMgmtPermitJoinReq { .. } => "zdo_mgmt_permit_join_req",
            Self::ZdoMgmtPermitJoinRsp { .. } => "zdo_mgmt_permit_join_rsp",
            Self::ZdoPermitJoinInd { .. } => "zdo_permit_join_ind",
            Self::ZdoMgmtLeaveReq { .. } => "zdo_mgmt_leave_req",
            Self::ZdoMgmtLeaveRsp { .. } => "zdo_mgmt_leave_rsp",
            Self::ZdoLeaveInd { .. } => "zdo_leave_ind",
            Self::ZdoBindReq { .. } => "zdo_bind_req",
            Self::ZdoBindRsp { .. } => "zdo_bind_rsp",
            Self::ZdoMgmtLqiReq { .. } => "zdo_mgmt_lqi_req",
            Self::ZdoMgmtLqiRsp { .. } => "zdo_mgmt_lqi_rsp",
            Self::BdbStartCommissioningReq { .. } => "bdb_start_commissioning_req",
            Self::BdbSetChannelReq { .. } => "bdb_set_channel_req",
            Self::BdbCommissioningNotification { .. } => "bdb_commissioning_notification",
            Self::BdbAddInstallCodeReq { .. } => "bdb_add_install_code_req",
            Self::BdbSetJoinUsesInstallCodeKeyReq { .. } => {
                "bdb_set_join_uses_install_code_key_req"
            }
            Self::ZdoExtUpdateNwkKeyReq { .. } => "zdo_ext_update_nwk_key_req",
            Self::ZdoExtSwitchNwkKeyReq { .. } => "zdo_ext_switch_nwk_key_req",
            Self::ZdoExtAddGroupReq { .. } => "zdo_ext_add_group_req",
            Self::StatusRsp { .. } => "status_rsp",
            Self::RpcError { .. } => "rpc_error",
            Self::Raw(_) => "raw",
        }
    }
}

impl TryFrom<&MtFrame> for ZnpCommand {
    type Error = Error;
    fn try_from(frame: &MtFrame) -> Result<Self> {
        Self::decode(frame)
    }
}

impl From<&ZnpCommand> for MtFrame {
    fn from(cmd: &ZnpCommand) -> Self {
        cmd.encode()
    }
}
