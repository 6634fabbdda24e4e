//! Encoding [`ZnpCommand`]s into MT frames.

use super::*;

impl ZnpCommand {
    /// Builds the MT frame for this command. Infallible; an oversize payload is caught by
    /// [`MtFrame::to_bytes`].
    pub fn encode(&self) -> MtFrame {
        use cmd::*;
        use MtType::{Areq, Sreq, Srsp};
        use Subsystem::{Af, AppCnf, RpcError, Sys, Util, Zdo};
        let mut p = Vec::new();
        let (cmd_type, subsystem, cmd_id) = match self {
            Self::SysResetReq { reset_type } => {
                p.put_u8(*reset_type);
                (Areq, Sys, sys::RESET_REQ)
            }
            Self::SysResetInd {
                reason,
                transport_rev,
                product_id,
                major_rel,
                minor_rel,
                hw_rev,
            } => {
                p.extend_from_slice(&[
                    *reason,
                    *transport_rev,
                    *product_id,
                    *major_rel,
                    *minor_rel,
                    *hw_rev,
                ]);
                (Areq, Sys, sys::RESET_IND)
            }
            Self::SysPingReq => (Sreq, Sys, sys::PING),
            Self::SysPingRsp { capabilities } => {
                p.put_u16(*capabilities);
                (Srsp, Sys, sys::PING)
            }
            Self::SysVersionReq => (Sreq, Sys, sys::VERSION),
            Self::SysVersionRsp {
                transport_rev,
                product,
                major_rel,
                minor_rel,
                maint_rel,
                revision,
                bootloader_build_type,
                bootloader_revision,
            } => {
                p.extend_from_slice(&[
                    *transport_rev,
                    *product,
                    *major_rel,
                    *minor_rel,
                    *maint_rel,
                ]);
                // Optional fields are positional: each is written only if all before it are.
                if let Some(rev) = revision {
                    p.put_u32(*rev);
                    if let Some(bt) = bootloader_build_type {
                        p.put_u8(*bt);
                        if let Some(br) = bootloader_revision {
                            p.put_u32(*br);
                        }
                    }
                }
                (Srsp, Sys, sys::VERSION)
            }
            Self::SysGetExtAddrReq => (Sreq, Sys, sys::GET_EXT_ADDR),
            Self::SysGetExtAddrRsp { ieee } => {
                p.put_ieee(*ieee);
                (Srsp, Sys, sys::GET_EXT_ADDR)
            }
            Self::SysOsalNvItemInitReq {
                id,
                item_len,
                init_value,
            } => {
                p.put_u16(*id);
                p.put_u16(*item_len);
                write_short_bytes(&mut p, init_value);
                (Sreq, Sys, sys::OSAL_NV_ITEM_INIT)
            }
            Self::SysOsalNvReadReq { id, offset } => {
                p.put_u16(*id);
                p.put_u8(*offset);
                (Sreq, Sys, sys::OSAL_NV_READ)
            }
            Self::SysOsalNvReadRsp { status, value } => {
                p.put_u8(*status);
                write_short_bytes(&mut p, value);
                (Srsp, Sys, sys::OSAL_NV_READ)
            }
            Self::SysOsalNvWriteReq { id, offset, value } => {
                p.put_u16(*id);
                p.put_u8(*offset);
                write_short_bytes(&mut p, value);
                (Sreq, Sys, sys::OSAL_NV_WRITE)
            }
            Self::SysOsalNvLengthReq { id } => {
                p.put_u16(*id);
                (Sreq, Sys, sys::OSAL_NV_LENGTH)
            }
            Self::SysOsalNvLengthRsp { length } => {
                p.put_u16(*length);
                (Srsp, Sys, sys::OSAL_NV_LENGTH)
            }
            Self::SysOsalNvReadExtReq { id, offset } => {
                p.put_u16(*id);
                p.put_u16(*offset);
                (Sreq, Sys, sys::OSAL_NV_READ_EXT)
            }
            Self::SysOsalNvReadExtRsp { status, value } => {
                p.put_u8(*status);
                write_short_bytes(&mut p, value);
                (Srsp, Sys, sys::OSAL_NV_READ_EXT)
            }
            Self::SysNvLengthReq {
                sys_id,
                item_id,
                sub_id,
            } => {
                p.put_u8(*sys_id);
                p.put_u16(*item_id);
                p.put_u16(*sub_id);
                (Sreq, Sys, sys::NV_LENGTH)
            }
            Self::SysNvLengthRsp { length } => {
                p.put_u32(*length);
                (Srsp, Sys, sys::NV_LENGTH)
            }
            Self::SysNvReadReq {
                sys_id,
                item_id,
                sub_id,
                offset,
                len,
            } => {
                p.put_u8(*sys_id);
                p.put_u16(*item_id);
                p.put_u16(*sub_id);
                p.put_u16(*offset);
                p.put_u8(*len);
                (Sreq, Sys, sys::NV_READ)
            }
            Self::SysNvReadRsp { status, value } => {
                p.put_u8(*status);
                write_short_bytes(&mut p, value);
                (Srsp, Sys, sys::NV_READ)
            }
            Self::UtilGetDeviceInfoReq => (Sreq, Util, util::GET_DEVICE_INFO),
            Self::UtilGetDeviceInfoRsp {
                status,
                ieee,
                short_addr,
                device_type,
                device_state,
                assoc_devices,
            } => {
                p.put_u8(*status);
                p.put_ieee(*ieee);
                p.put_u16(*short_addr);
                p.put_u8(*device_type);
                p.put_u8(*device_state);
                write_u16_list(&mut p, assoc_devices);
                (Srsp, Util, util::GET_DEVICE_INFO)
            }
            Self::AfRegisterReq(reg) => {
                p.put_u8(reg.endpoint);
                p.put_u16(reg.profile_id);
                p.put_u16(reg.device_id);
                p.put_u8(reg.device_version);
                p.put_u8(reg.latency_req);
                write_u16_list(&mut p, &reg.in_clusters);
                write_u16_list(&mut p, &reg.out_clusters);
                (Sreq, Af, af::REGISTER)
            }
            Self::AfDataRequestReq(req) => {
                p.put_u16(req.dst_addr);
                p.put_u8(req.dst_endpoint);
                p.put_u8(req.src_endpoint);
                p.put_u16(req.cluster_id);
                p.put_u8(req.trans_id);
                p.put_u8(req.options);
                p.put_u8(req.radius);
                write_short_bytes(&mut p, &req.data);
                (Sreq, Af, af::DATA_REQUEST)
            }
            Self::AfDataConfirm {
                status,
                endpoint,
                trans_id,
            } => {
                p.extend_from_slice(&[*status, *endpoint, *trans_id]);
                (Areq, Af, af::DATA_CONFIRM)
            }
            Self::AfIncomingMsg(m) => {
                p.put_u16(m.group_id);
                p.put_u16(m.cluster_id);
                p.put_u16(m.src_addr);
                p.put_u8(m.src_endpoint);
                p.put_u8(m.dst_endpoint);
                p.put_u8(u8::from(m.was_broadcast));
                p.put_u8(m.link_quality);
                p.put_u8(u8::from(m.security_use));
                p.put_u32(m.timestamp);
                p.put_u8(m.trans_seq_num);
                write_short_bytes(&mut p, &m.data);
                if let Some(mac) = m.mac_src_addr {
                    p.put_u16(mac);
                    if let Some(radius) = m.msg_result_radius {
                        p.put_u8(radius);
                    }
                }
                (Areq, Af, af::INCOMING_MSG)
            }
            Self::AfIncomingMsgExt(m) => {
                m.write(&mut p);
                (Areq, Af, af::INCOMING_MSG_EXT)
            }
            Self::AfDataRetrieveReq {
                timestamp,
                index,
                length,
            } => {
                p.put_u32(*timestamp);
                p.put_u16(*index);
                p.put_u8(*length);
                (Sreq, Af, af::DATA_RETRIEVE)
            }
            Self::AfDataRetrieveRsp { status, data } => {
                p.put_u8(*status);
                write_short_bytes(&mut p, data);
                (Srsp, Af, af::DATA_RETRIEVE)
            }
            Self::ZdoStartupFromAppReq { start_delay } => {
                p.put_u16(*start_delay);
                (Sreq, Zdo, zdo::STARTUP_FROM_APP)
            }
            Self::ZdoStateChangeInd { state } => {
                p.put_u8(*state);
                (Areq, Zdo, zdo::STATE_CHANGE_IND)
            }
            Self::ZdoIeeeAddrReq {
                short_addr,
                req_type,
                start_index,
            } => {
                p.put_u16(*short_addr);
                p.put_u8(*req_type);
                p.put_u8(*start_index);
                (Sreq, Zdo, zdo::IEEE_ADDR_REQ)
            }
            Self::ZdoIeeeAddrRsp {
                status,
                ieee,
                nwk_addr,
                start_index,
                assoc_devices,
            }
            | Self::ZdoNwkAddrRsp {
                status,
                ieee,
                nwk_addr,
                start_index,
                assoc_devices,
            } => {
                p.put_u8(*status);
                p.put_ieee(*ieee);
                p.put_u16(*nwk_addr);
                p.put_u8(*start_index);
                write_u16_list(&mut p, assoc_devices);
                let id = if matches!(self, Self::ZdoNwkAddrRsp { .. }) {
                    zdo::NWK_ADDR_RSP
                } else {
                    zdo::IEEE_ADDR_RSP
                };
                (Areq, Zdo, id)
            }
            Self::ZdoNwkAddrReq {
                ieee,
                req_type,
                start_index,
            } => {
                p.put_ieee(*ieee);
                p.put_u8(*req_type);
                p.put_u8(*start_index);
                (Sreq, Zdo, zdo::NWK_ADDR_REQ)
            }
            Self::ZdoNodeDescReq {
                dst_addr,
                nwk_addr_of_interest,
            } => {
                p.put_u16(*dst_addr);
                p.put_u16(*nwk_addr_of_interest);
                (Sreq, Zdo, zdo::NODE_DESC_REQ)
            }
            Self::ZdoNodeDescRsp {
                src_addr,
                status,
                nwk_addr,
                descriptor,
            } => {
                p.put_u16(*src_addr);
                p.put_u8(*status);
                if let Some(nwk) = nwk_addr {
                    p.put_u16(*nwk);
                    if let Some(d) = descriptor {
                        d.write(&mut p);
                    }
                }
                (Areq, Zdo, zdo::NODE_DESC_RSP)
            }
            Self::ZdoActiveEpReq {
                dst_addr,
                nwk_addr_of_interest,
            } => {
                p.put_u16(*dst_addr);
                p.put_u16(*nwk_addr_of_interest);
                (Sreq, Zdo, zdo::ACTIVE_EP_REQ)
            }
            Self::ZdoActiveEpRsp {
                src_addr,
                status,
                nwk_addr,
                endpoints,
            } => {
                p.put_u16(*src_addr);
                p.put_u8(*status);
                if let Some(nwk) = nwk_addr {
                    p.put_u16(*nwk);
                    write_short_bytes(&mut p, endpoints);
                }
                (Areq, Zdo, zdo::ACTIVE_EP_RSP)
            }
            Self::ZdoSimpleDescReq {
                dst_addr,
                nwk_addr_of_interest,
                endpoint,
            } => {
                p.put_u16(*dst_addr);
                p.put_u16(*nwk_addr_of_interest);
                p.put_u8(*endpoint);
                (Sreq, Zdo, zdo::SIMPLE_DESC_REQ)
            }
            Self::ZdoSimpleDescRsp {
                src_addr,
                status,
                nwk_addr,
                descriptor,
            } => {
                p.put_u16(*src_addr);
                p.put_u8(*status);
                if let Some(nwk) = nwk_addr {
                    p.put_u16(*nwk);
                    match descriptor {
                        Some(d) => {
                            p.put_u8(len_u8(d.encoded_len()));
                            d.write(&mut p);
                        }
                        None => p.put_u8(0),
                    }
                }
                (Areq, Zdo, zdo::SIMPLE_DESC_RSP)
            }
            Self::ZdoEndDeviceAnnceInd {
                src_addr,
                nwk_addr,
                ieee,
                capabilities,
            } => {
                p.put_u16(*src_addr);
                p.put_u16(*nwk_addr);
                p.put_ieee(*ieee);
                p.put_u8(capabilities.0);
                (Areq, Zdo, zdo::END_DEVICE_ANNCE_IND)
            }
            Self::ZdoTcDevInd {
                nwk_addr,
                ieee,
                parent_addr,
            } => {
                p.put_u16(*nwk_addr);
                p.put_ieee(*ieee);
                p.put_u16(*parent_addr);
                (Areq, Zdo, zdo::TC_DEV_IND)
            }
            Self::ZdoMgmtPermitJoinReq {
                addr_mode,
                dst_addr,
                duration,
                tc_significance,
            } => {
                p.put_u8(*addr_mode);
                p.put_u16(*dst_addr);
                p.put_u8(*duration);
                p.put_u8(*tc_significance);
                (Sreq, Zdo, zdo::MGMT_PERMIT_JOIN_REQ)
            }
            Self::ZdoMgmtPermitJoinRsp { src_addr, status } => {
                p.put_u16(*src_addr);
                p.put_u8(*status);
                (Areq, Zdo, zdo::MGMT_PERMIT_JOIN_RSP)
            }
            Self::ZdoPermitJoinInd { duration } => {
                p.put_u8(*duration);
                (Areq, Zdo, zdo::PERMIT_JOIN_IND)
            }
            Self::ZdoMgmtLeaveReq {
                dst_addr,
                ieee,
                rejoin,
                remove_children,
            } => {
                p.put_u16(*dst_addr);
                p.put_ieee(*ieee);
                p.put_u8(u8::from(*rejoin) | (u8::from(*remove_children) << 1));
                (Sreq, Zdo, zdo::MGMT_LEAVE_REQ)
            }
            Self::ZdoMgmtLeaveRsp { src_addr, status } => {
                p.put_u16(*src_addr);
                p.put_u8(*status);
                (Areq, Zdo, zdo::MGMT_LEAVE_RSP)
            }
            Self::ZdoLeaveInd {
                src_addr,
                ieee,
                request,
                remove_children,
                rejoin,
            } => {
                p.put_u16(*src_addr);
                p.put_ieee(*ieee);
                p.put_u8(u8::from(*request));
                p.put_u8(u8::from(*remove_children));
                p.put_u8(u8::from(*rejoin));
                (Areq, Zdo, zdo::LEAVE_IND)
            }
            Self::ZdoBindReq {
                dst_addr,
                src_ieee,
                src_endpoint,
                cluster_id,
                target,
            } => {
                p.put_u16(*dst_addr);
                p.put_ieee(*src_ieee);
                p.put_u8(*src_endpoint);
                p.put_u16(*cluster_id);
                // Z-Stack always reads an 8-byte address field and a destination endpoint
                // (ZH pads group binds with zeros to 21 bytes, `sendZdoInternal`).
                let (mode, address, endpoint) = match target {
                    BindTarget::Endpoint { ieee, endpoint } => (3, ieee.0, *endpoint),
                    BindTarget::Group { group_id } => (1, u64::from(*group_id), 0),
                    BindTarget::Other {
                        mode,
                        address,
                        endpoint,
                    } => (*mode, *address, *endpoint),
                };
                p.put_u8(mode);
                p.put_uint(address, 8);
                p.put_u8(endpoint);
                (Sreq, Zdo, zdo::BIND_REQ)
            }
            Self::ZdoBindRsp { src_addr, status } => {
                p.put_u16(*src_addr);
                p.put_u8(*status);
                (Areq, Zdo, zdo::BIND_RSP)
            }
            Self::ZdoMgmtLqiReq {
                dst_addr,
                start_index,
            } => {
                p.put_u16(*dst_addr);
                p.put_u8(*start_index);
                (Sreq, Zdo, zdo::MGMT_LQI_REQ)
            }
            Self::ZdoMgmtLqiRsp {
                src_addr,
                status,
                total_entries,
                start_index,
                neighbors,
            } => {
                p.put_u16(*src_addr);
                p.put_u8(*status);
                if *status == 0 {
                    p.put_u8(*total_entries);
                    p.put_u8(*start_index);
                    p.put_u8(len_u8(neighbors.len()));
                    for n in neighbors {
                        n.write(&mut p);
                    }
                }
                (Areq, Zdo, zdo::MGMT_LQI_RSP)
            }
            Self::BdbStartCommissioningReq { mode } => {
                p.put_u8(*mode);
                (Sreq, AppCnf, app_cnf::BDB_START_COMMISSIONING)
            }
            Self::BdbSetChannelReq {
                is_primary,
                channel_mask,
            } => {
                p.put_u8(u8::from(*is_primary));
                p.put_u32(*channel_mask);
                (Sreq, AppCnf, app_cnf::BDB_SET_CHANNEL)
            }
            Self::BdbCommissioningNotification {
                status,
                mode,
                remaining_modes,
            } => {
                p.put_u8(*status);
                if let Some(m) = mode {
                    p.put_u8(*m);
                    if let Some(rm) = remaining_modes {
                        p.put_u8(*rm);
                    }
                }
                (Areq, AppCnf, app_cnf::BDB_COMMISSIONING_NOTIFICATION)
            }
            Self::BdbAddInstallCodeReq { format, ieee, code } => {
                p.put_u8(*format);
                p.put_ieee(*ieee);
                p.extend_from_slice(&code.0);
                (Sreq, AppCnf, app_cnf::BDB_ADD_INSTALLCODE)
            }
            Self::BdbSetJoinUsesInstallCodeKeyReq { enabled } => {
                p.put_u8(u8::from(*enabled));
                (Sreq, AppCnf, app_cnf::BDB_SET_JOIN_USES_INSTALL_CODE_KEY)
            }
            Self::ZdoExtUpdateNwkKeyReq {
                dst_addr,
                key_seq_num,
                key,
            } => {
                p.put_u16(*dst_addr);
                p.put_u8(*key_seq_num);
                p.extend_from_slice(&key.0);
                (Sreq, Zdo, zdo::EXT_UPDATE_NWK_KEY)
            }
            Self::ZdoExtSwitchNwkKeyReq {
                dst_addr,
                key_seq_num,
            } => {
                p.put_u16(*dst_addr);
                p.put_u8(*key_seq_num);
                (Sreq, Zdo, zdo::EXT_SWITCH_NWK_KEY)
            }
            Self::ZdoExtAddGroupReq {
                endpoint,
                group_id,
                name,
            } => {
                p.put_u8(*endpoint);
                p.put_u16(*group_id);
                write_short_bytes(&mut p, name);
                (Sreq, Zdo, zdo::EXT_ADD_GROUP)
            }
            Self::StatusRsp {
                subsystem,
                cmd_id,
                status,
            } => {
                p.put_u8(*status);
                (Srsp, *subsystem, *cmd_id)
            }
            Self::RpcError {
                error_code,
                request_cmd0,
                request_cmd1,
            } => {
                p.extend_from_slice(&[*error_code, *request_cmd0, *request_cmd1]);
                (Srsp, RpcError, 0x00)
            }
            Self::Raw(frame) => return frame.clone(),
        };
        MtFrame::new(cmd_type, subsystem, cmd_id, p)
    }
}
