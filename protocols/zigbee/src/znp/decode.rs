//! Decoding MT frames into [`ZnpCommand`]s (responses and indications, and requests for the
//! device-side emulator).

use super::*;

impl ZnpCommand {
    /// Decodes a frame. Unknown (type, subsystem, cmd id) combinations give [`ZnpCommand::Raw`];
    /// a known command whose payload is too short gives [`Error::Truncated`].
    pub fn decode(frame: &MtFrame) -> Result<Self> {
        use cmd::*;
        use MtType::{Areq, Sreq, Srsp};
        use Subsystem::{Af, AppCnf, RpcError, Sys, Util, Zdo};
        let mut r = Reader::new(&frame.payload, "ZNP payload");
        let r = &mut r;
        let cmd = match (frame.cmd_type, frame.subsystem, frame.cmd_id) {
            (Areq, Sys, sys::RESET_REQ) => Self::SysResetReq {
                reset_type: r.u8()?,
            },
            (Areq, Sys, sys::RESET_IND) => Self::SysResetInd {
                reason: r.u8()?,
                transport_rev: r.u8()?,
                product_id: r.u8()?,
                major_rel: r.u8()?,
                minor_rel: r.u8()?,
                hw_rev: r.u8()?,
            },
            (Sreq, Sys, sys::PING) => Self::SysPingReq,
            (Srsp, Sys, sys::PING) => Self::SysPingRsp {
                capabilities: r.u16()?,
            },
            (Sreq, Sys, sys::VERSION) => Self::SysVersionReq,
            (Srsp, Sys, sys::VERSION) => Self::SysVersionRsp {
                transport_rev: r.u8()?,
                product: r.u8()?,
                major_rel: r.u8()?,
                minor_rel: r.u8()?,
                maint_rel: r.u8()?,
                revision: r.u32().ok(),
                bootloader_build_type: r.opt_u8(),
                bootloader_revision: r.u32().ok(),
            },
            (Sreq, Sys, sys::GET_EXT_ADDR) => Self::SysGetExtAddrReq,
            (Srsp, Sys, sys::GET_EXT_ADDR) => Self::SysGetExtAddrRsp { ieee: r.ieee()? },
            (Sreq, Sys, sys::OSAL_NV_ITEM_INIT) => Self::SysOsalNvItemInitReq {
                id: r.u16()?,
                item_len: r.u16()?,
                init_value: read_short_bytes(r)?,
            },
            (Sreq, Sys, sys::OSAL_NV_READ) => Self::SysOsalNvReadReq {
                id: r.u16()?,
                offset: r.u8()?,
            },
            (Srsp, Sys, sys::OSAL_NV_READ) => Self::SysOsalNvReadRsp {
                status: r.u8()?,
                value: read_short_bytes(r)?,
            },
            (Sreq, Sys, sys::OSAL_NV_WRITE) => Self::SysOsalNvWriteReq {
                id: r.u16()?,
                offset: r.u8()?,
                value: read_short_bytes(r)?,
            },
            (Sreq, Sys, sys::OSAL_NV_LENGTH) => Self::SysOsalNvLengthReq { id: r.u16()? },
            (Srsp, Sys, sys::OSAL_NV_LENGTH) => Self::SysOsalNvLengthRsp { length: r.u16()? },
            (Sreq, Sys, sys::OSAL_NV_READ_EXT) => Self::SysOsalNvReadExtReq {
                id: r.u16()?,
                offset: r.u16()?,
            },
            (Srsp, Sys, sys::OSAL_NV_READ_EXT) => Self::SysOsalNvReadExtRsp {
                status: r.u8()?,
                value: read_short_bytes(r)?,
            },
            (Sreq, Sys, sys::NV_LENGTH) => Self::SysNvLengthReq {
                sys_id: r.u8()?,
                item_id: r.u16()?,
                sub_id: r.u16()?,
            },
            (Srsp, Sys, sys::NV_LENGTH) => {
                let width = r.remaining().clamp(1, 4);
                Self::SysNvLengthRsp {
                    length: u32::try_from(r.uint(width)?).unwrap_or(u32::MAX),
                }
            }
            (Sreq, Sys, sys::NV_READ) => Self::SysNvReadReq {
                sys_id: r.u8()?,
                item_id: r.u16()?,
                sub_id: r.u16()?,
                offset: r.u16()?,
                len: r.u8()?,
            },
            (Srsp, Sys, sys::NV_READ) => Self::SysNvReadRsp {
                status: r.u8()?,
                value: read_short_bytes(r)?,
            },
            (Sreq, Util, util::GET_DEVICE_INFO) => Self::UtilGetDeviceInfoReq,
            (Srsp, Util, util::GET_DEVICE_INFO) => {
                let status = r.u8()?;
                let ieee = r.ieee()?;
                let short_addr = r.u16()?;
                let device_type = r.u8()?;
                let device_state = r.u8()?;
                let assoc_devices = read_u16_list(r)?;
                Self::UtilGetDeviceInfoRsp {
                    status,
                    ieee,
                    short_addr,
                    device_type,
                    device_state,
                    assoc_devices,
                }
            }
            (Sreq, Af, af::REGISTER) => Self::AfRegisterReq(AfRegister {
                endpoint: r.u8()?,
                profile_id: r.u16()?,
                device_id: r.u16()?,
                device_version: r.u8()?,
                latency_req: r.u8()?,
                in_clusters: read_u16_list(r)?,
                out_clusters: read_u16_list(r)?,
            }),
            (Sreq, Af, af::DATA_REQUEST) => Self::AfDataRequestReq(AfDataRequest {
                dst_addr: r.u16()?,
                dst_endpoint: r.u8()?,
                src_endpoint: r.u8()?,
                cluster_id: r.u16()?,
                trans_id: r.u8()?,
                options: r.u8()?,
                radius: r.u8()?,
                data: read_short_bytes(r)?,
            }),
            (Areq, Af, af::DATA_CONFIRM) => Self::AfDataConfirm {
                status: r.u8()?,
                endpoint: r.u8()?,
                trans_id: r.u8()?,
            },
            (Areq, Af, af::INCOMING_MSG) => Self::AfIncomingMsg(AfIncomingMsg {
                group_id: r.u16()?,
                cluster_id: r.u16()?,
                src_addr: r.u16()?,
                src_endpoint: r.u8()?,
                dst_endpoint: r.u8()?,
                was_broadcast: r.u8()? != 0,
                link_quality: r.u8()?,
                security_use: r.u8()? != 0,
                timestamp: r.u32()?,
                trans_seq_num: r.u8()?,
                data: read_short_bytes(r)?,
                mac_src_addr: r.u16().ok(),
                msg_result_radius: r.opt_u8(),
            }),
            (Areq, Af, af::INCOMING_MSG_EXT) => Self::AfIncomingMsgExt(AfIncomingMsgExt::read(r)?),
            (Sreq, Af, af::DATA_RETRIEVE) => Self::AfDataRetrieveReq {
                timestamp: r.u32()?,
                index: r.u16()?,
                length: r.u8()?,
            },
            (Srsp, Af, af::DATA_RETRIEVE) => {
                let status = r.u8()?;
                // A failure carries a zero length (`mt_af.c`); do without it if it is missing.
                let data = if status == 0 {
                    read_short_bytes(r)?
                } else {
                    read_short_bytes(r).unwrap_or_default()
                };
                Self::AfDataRetrieveRsp { status, data }
            }
            (Sreq, Zdo, zdo::STARTUP_FROM_APP) => Self::ZdoStartupFromAppReq {
                start_delay: r.u16()?,
            },
            (Areq, Zdo, zdo::STATE_CHANGE_IND) => Self::ZdoStateChangeInd { state: r.u8()? },
            (Sreq, Zdo, zdo::IEEE_ADDR_REQ) => Self::ZdoIeeeAddrReq {
                short_addr: r.u16()?,
                req_type: r.u8()?,
                start_index: r.u8()?,
            },
            (Sreq, Zdo, zdo::NWK_ADDR_REQ) => Self::ZdoNwkAddrReq {
                ieee: r.ieee()?,
                req_type: r.u8()?,
                start_index: r.u8()?,
            },
            (Areq, Zdo, id @ (zdo::IEEE_ADDR_RSP | zdo::NWK_ADDR_RSP)) => {
                let status = r.u8()?;
                let ieee = r.ieee()?;
                let nwk_addr = r.u16()?;
                let (start_index, assoc_devices) = match r.opt_u8() {
                    Some(start) => {
                        let n = r.opt_u8().unwrap_or(0);
                        let list = (0..n).map(|_| r.u16()).collect::<Result<Vec<_>>>()?;
                        (start, list)
                    }
                    None => (0, Vec::new()),
                };
                if id == zdo::NWK_ADDR_RSP {
                    Self::ZdoNwkAddrRsp {
                        status,
                        ieee,
                        nwk_addr,
                        start_index,
                        assoc_devices,
                    }
                } else {
                    Self::ZdoIeeeAddrRsp {
                        status,
                        ieee,
                        nwk_addr,
                        start_index,
                        assoc_devices,
                    }
                }
            }
            (Sreq, Zdo, zdo::NODE_DESC_REQ) => Self::ZdoNodeDescReq {
                dst_addr: r.u16()?,
                nwk_addr_of_interest: r.u16()?,
            },
            (Areq, Zdo, zdo::NODE_DESC_RSP) => {
                let src_addr = r.u16()?;
                let status = r.u8()?;
                let (nwk_addr, descriptor) = if status == 0 {
                    (Some(r.u16()?), Some(NodeDescriptor::read(r)?))
                } else {
                    (r.u16().ok(), None)
                };
                Self::ZdoNodeDescRsp {
                    src_addr,
                    status,
                    nwk_addr,
                    descriptor,
                }
            }
            (Sreq, Zdo, zdo::ACTIVE_EP_REQ) => Self::ZdoActiveEpReq {
                dst_addr: r.u16()?,
                nwk_addr_of_interest: r.u16()?,
            },
            (Areq, Zdo, zdo::ACTIVE_EP_RSP) => {
                let src_addr = r.u16()?;
                let status = r.u8()?;
                let (nwk_addr, endpoints) = if status == 0 {
                    let nwk = r.u16()?;
                    (Some(nwk), read_short_bytes(r)?)
                } else {
                    let nwk = r.u16().ok();
                    (nwk, read_short_bytes(r).unwrap_or_default())
                };
                Self::ZdoActiveEpRsp {
                    src_addr,
                    status,
                    nwk_addr,
                    endpoints,
                }
            }
            (Sreq, Zdo, zdo::SIMPLE_DESC_REQ) => Self::ZdoSimpleDescReq {
                dst_addr: r.u16()?,
                nwk_addr_of_interest: r.u16()?,
                endpoint: r.u8()?,
            },
            (Areq, Zdo, zdo::SIMPLE_DESC_RSP) => {
                let src_addr = r.u16()?;
                let status = r.u8()?;
                let (nwk_addr, descriptor) = if status == 0 {
                    let nwk = r.u16()?;
                    let len = r.u8()?;
                    let mut body = Reader::new(r.bytes(usize::from(len))?, "simple descriptor");
                    (Some(nwk), Some(SimpleDescriptor::read(&mut body)?))
                } else {
                    (r.u16().ok(), None)
                };
                Self::ZdoSimpleDescRsp {
                    src_addr,
                    status,
                    nwk_addr,
                    descriptor,
                }
            }
            (Areq, Zdo, zdo::END_DEVICE_ANNCE_IND) => Self::ZdoEndDeviceAnnceInd {
                src_addr: r.u16()?,
                nwk_addr: r.u16()?,
                ieee: r.ieee()?,
                capabilities: MacCapabilities(r.u8()?),
            },
            (Areq, Zdo, zdo::TC_DEV_IND) => Self::ZdoTcDevInd {
                nwk_addr: r.u16()?,
                ieee: r.ieee()?,
                parent_addr: r.u16()?,
            },
            (Sreq, Zdo, zdo::MGMT_PERMIT_JOIN_REQ) => Self::ZdoMgmtPermitJoinReq {
                addr_mode: r.u8()?,
                dst_addr: r.u16()?,
                duration: r.u8()?,
                tc_significance: r.u8()?,
            },
            (Areq, Zdo, zdo::MGMT_PERMIT_JOIN_RSP) => Self::ZdoMgmtPermitJoinRsp {
                src_addr: r.u16()?,
                status: r.u8()?,
            },
            (Areq, Zdo, zdo::PERMIT_JOIN_IND) => Self::ZdoPermitJoinInd { duration: r.u8()? },
            (Sreq, Zdo, zdo::MGMT_LEAVE_REQ) => {
                let dst_addr = r.u16()?;
                let ieee = r.ieee()?;
                let options = r.u8()?;
                Self::ZdoMgmtLeaveReq {
                    dst_addr,
                    ieee,
                    rejoin: options & 0x01 != 0,
                    remove_children: options & 0x02 != 0,
                }
            }
            (Areq, Zdo, zdo::MGMT_LEAVE_RSP) => Self::ZdoMgmtLeaveRsp {
                src_addr: r.u16()?,
                status: r.u8()?,
            },
            (Areq, Zdo, zdo::LEAVE_IND) => Self::ZdoLeaveInd {
                src_addr: r.u16()?,
                ieee: r.ieee()?,
                request: r.u8()? != 0,
                remove_children: r.u8()? != 0,
                rejoin: r.u8()? != 0,
            },
            (Sreq, Zdo, zdo::BIND_REQ) => {
                let dst_addr = r.u16()?;
                let src_ieee = r.ieee()?;
                let src_endpoint = r.u8()?;
                let cluster_id = r.u16()?;
                let mode = r.u8()?;
                let address = r.uint(8)?;
                let endpoint = r.u8()?;
                let target = match mode {
                    3 => BindTarget::Endpoint {
                        ieee: IeeeAddr(address),
                        endpoint,
                    },
                    1 => BindTarget::Group {
                        group_id: (address & 0xFFFF) as u16,
                    },
                    mode => BindTarget::Other {
                        mode,
                        address,
                        endpoint,
                    },
                };
                Self::ZdoBindReq {
                    dst_addr,
                    src_ieee,
                    src_endpoint,
                    cluster_id,
                    target,
                }
            }
            (Areq, Zdo, zdo::BIND_RSP) => Self::ZdoBindRsp {
                src_addr: r.u16()?,
                status: r.u8()?,
            },
            (Sreq, Zdo, zdo::MGMT_LQI_REQ) => Self::ZdoMgmtLqiReq {
                dst_addr: r.u16()?,
                start_index: r.u8()?,
            },
            (Areq, Zdo, zdo::MGMT_LQI_RSP) => {
                let src_addr = r.u16()?;
                let status = r.u8()?;
                let (total_entries, start_index, neighbors) = if status == 0 {
                    let total = r.u8()?;
                    let start = r.u8()?;
                    let count = r.u8()?;
                    let list = (0..count)
                        .map(|_| Neighbor::read(r))
                        .collect::<Result<Vec<_>>>()?;
                    (total, start, list)
                } else {
                    (0, 0, Vec::new())
                };
                Self::ZdoMgmtLqiRsp {
                    src_addr,
                    status,
                    total_entries,
                    start_index,
                    neighbors,
                }
            }
            (Sreq, AppCnf, app_cnf::BDB_START_COMMISSIONING) => {
                Self::BdbStartCommissioningReq { mode: r.u8()? }
            }
            (Sreq, AppCnf, app_cnf::BDB_SET_CHANNEL) => Self::BdbSetChannelReq {
                is_primary: r.u8()? != 0,
                channel_mask: r.u32()?,
            },
            (Sreq, AppCnf, app_cnf::BDB_ADD_INSTALLCODE) => Self::BdbAddInstallCodeReq {
                format: r.u8()?,
                ieee: r.ieee()?,
                code: SecretBytes(r.rest().to_vec()),
            },
            (Sreq, AppCnf, app_cnf::BDB_SET_JOIN_USES_INSTALL_CODE_KEY) => {
                Self::BdbSetJoinUsesInstallCodeKeyReq {
                    enabled: r.u8()? != 0,
                }
            }
            (Sreq, Zdo, zdo::EXT_UPDATE_NWK_KEY) => Self::ZdoExtUpdateNwkKeyReq {
                dst_addr: r.u16()?,
                key_seq_num: r.u8()?,
                key: SecretBytes(r.bytes(16)?.to_vec()),
            },
            (Sreq, Zdo, zdo::EXT_SWITCH_NWK_KEY) => Self::ZdoExtSwitchNwkKeyReq {
                dst_addr: r.u16()?,
                key_seq_num: r.u8()?,
            },
            (Sreq, Zdo, zdo::EXT_ADD_GROUP) => Self::ZdoExtAddGroupReq {
                endpoint: r.u8()?,
                group_id: r.u16()?,
                // The name is optional to Z-Stack; a request without its length byte is one
                // without a name.
                name: read_short_bytes(r).unwrap_or_default(),
            },
            (Areq, AppCnf, app_cnf::BDB_COMMISSIONING_NOTIFICATION) => {
                Self::BdbCommissioningNotification {
                    status: r.u8()?,
                    mode: r.opt_u8(),
                    remaining_modes: r.opt_u8(),
                }
            }
            (Srsp, RpcError, 0x00) => Self::RpcError {
                error_code: r.u8()?,
                request_cmd0: r.u8()?,
                request_cmd1: r.u8()?,
            },
            (Srsp, subsystem, cmd_id) if is_status_srsp(subsystem, cmd_id) => Self::StatusRsp {
                subsystem,
                cmd_id,
                status: r.u8()?,
            },
            _ => Self::Raw(frame.clone()),
        };
        Ok(cmd)
    }
}
