//! The ZNP commands the codec ([`crate::znp`]) models, carried out as Z-Stack 3.x does:
//! SYS, UTIL, ZDO (to the coordinator itself or passed on to an emulated device), AF data
//! requests and the app config commands.

use super::*;

/// ZDP status NOT_SUPPORTED: a request the node does not serve (an end device has no
/// neighbour or routing table).
pub(super) const ZDP_NOT_SUPPORTED: u8 = 0x84;

impl Emulator {
    /// Carries out a decoded command; false when the emulator does not handle it.
    pub(super) fn on_command(&mut self, command: ZnpCommand) -> bool {
        let running = self.state == DEVICE_STATE_COORDINATOR;
        match command {
            ZnpCommand::SysPingReq => self.srsp(ZnpCommand::SysPingRsp {
                capabilities: PING_CAPABILITIES,
            }),
            ZnpCommand::SysVersionReq => self.srsp(version_rsp(self.cfg.firmware)),
            ZnpCommand::SysGetExtAddrReq => self.srsp(ZnpCommand::SysGetExtAddrRsp {
                ieee: self.cfg.ieee,
            }),
            ZnpCommand::SysResetReq { .. } => self.schedule(
                Duration::from_millis(20),
                Action::Reset {
                    reason: RESET_REASON_POWER_UP,
                },
            ),
            ZnpCommand::SysOsalNvReadReq { id, .. } if self.nv_read_rpc_error.contains(&id) => {
                self.nv_read_rpc_error.retain(|&i| i != id);
                // SREQ SYS (0x21), SYS_OSAL_NV_READ (0x08); 2: MT_RPC_ERR_COMMAND_ID.
                self.srsp(ZnpCommand::RpcError {
                    error_code: 2,
                    request_cmd0: 0x21,
                    request_cmd1: 0x08,
                });
            }
            ZnpCommand::SysOsalNvReadReq { id, offset } => {
                let rsp = match self.nv.get(&id) {
                    Some(v) => ZnpCommand::SysOsalNvReadRsp {
                        status: 0,
                        value: v.get(usize::from(offset)..).unwrap_or_default().to_vec(),
                    },
                    None => ZnpCommand::SysOsalNvReadRsp {
                        status: STATUS_NV_OPER_FAILED,
                        value: Vec::new(),
                    },
                };
                self.srsp(rsp);
            }
            ZnpCommand::SysOsalNvLengthReq { id } => {
                let length = self
                    .nv
                    .get(&id)
                    .map_or(0, |v| u16::try_from(v.len()).unwrap_or(u16::MAX));
                self.srsp(ZnpCommand::SysOsalNvLengthRsp { length });
            }
            ZnpCommand::SysOsalNvReadExtReq { id, offset } => {
                let rsp = match self.nv.get(&id) {
                    Some(v) if usize::from(offset) <= v.len() => {
                        let rest = v.get(usize::from(offset)..).unwrap_or_default();
                        ZnpCommand::SysOsalNvReadExtRsp {
                            status: 0,
                            value: rest[..rest.len().min(NV_READ_EXT_CHUNK)].to_vec(),
                        }
                    }
                    _ => ZnpCommand::SysOsalNvReadExtRsp {
                        status: STATUS_NV_OPER_FAILED,
                        value: Vec::new(),
                    },
                };
                self.srsp(rsp);
            }
            ZnpCommand::SysNvLengthReq {
                sys_id,
                item_id,
                sub_id,
            } => {
                let length = self
                    .ext_nv
                    .get(&(sys_id, item_id, sub_id))
                    .map_or(0, |v| u32::try_from(v.len()).unwrap_or(u32::MAX));
                self.srsp(ZnpCommand::SysNvLengthRsp { length });
            }
            ZnpCommand::SysNvReadReq {
                sys_id,
                item_id,
                sub_id,
                offset,
                len,
            } => {
                let start = usize::from(offset);
                let end = start + usize::from(len);
                let rsp = match self
                    .ext_nv
                    .get(&(sys_id, item_id, sub_id))
                    .and_then(|v| v.get(start..end))
                {
                    Some(v) => ZnpCommand::SysNvReadRsp {
                        status: 0,
                        value: v.to_vec(),
                    },
                    None => ZnpCommand::SysNvReadRsp {
                        status: STATUS_NV_OPER_FAILED,
                        value: Vec::new(),
                    },
                };
                self.srsp(rsp);
            }
            ZnpCommand::SysOsalNvWriteReq { id, offset, value } => {
                let item = self.nv.entry(id).or_default();
                let start = usize::from(offset);
                if item.len() < start + value.len() {
                    item.resize(start + value.len(), 0);
                }
                item[start..start + value.len()].copy_from_slice(&value);
                self.status_srsp(Subsystem::Sys, cmd::sys::OSAL_NV_WRITE, 0);
            }
            ZnpCommand::SysOsalNvItemInitReq {
                id,
                item_len,
                init_value,
            } => {
                let status = match self.nv.entry(id) {
                    std::collections::btree_map::Entry::Occupied(_) => 0,
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        let mut v = init_value;
                        v.resize(usize::from(item_len), 0);
                        slot.insert(v);
                        STATUS_NV_ITEM_UNINIT
                    }
                };
                self.status_srsp(Subsystem::Sys, cmd::sys::OSAL_NV_ITEM_INIT, status);
            }
            ZnpCommand::UtilGetDeviceInfoReq => {
                let assoc = self.devices.iter().filter_map(|d| d.nwk).collect();
                self.srsp(ZnpCommand::UtilGetDeviceInfoRsp {
                    status: 0,
                    ieee: self.cfg.ieee,
                    short_addr: 0x0000,
                    device_type: 0x07,
                    device_state: self.state,
                    assoc_devices: assoc,
                });
            }
            ZnpCommand::AfRegisterReq(reg) => {
                let status = if self.endpoints.iter().any(|e| e.endpoint == reg.endpoint) {
                    STATUS_DUPLICATE_ENTRY
                } else {
                    self.endpoints.push(reg);
                    0
                };
                self.status_srsp(Subsystem::Af, cmd::af::REGISTER, status);
            }
            ZnpCommand::ZdoStartupFromAppReq { .. } => {
                // 0 = restored network state, 2 = not started (nothing to restore).
                let status = if self.network.is_some() { 0 } else { 2 };
                self.status_srsp(Subsystem::Zdo, cmd::zdo::STARTUP_FROM_APP, status);
                if self.network.is_some() && !running {
                    self.schedule(
                        Duration::from_millis(5),
                        Action::Send(ZnpCommand::ZdoStateChangeInd { state: 8 }),
                    );
                    self.schedule(Duration::from_millis(30), Action::Started);
                }
            }
            ZnpCommand::BdbSetChannelReq {
                is_primary,
                channel_mask,
            } => {
                if is_primary {
                    self.bdb_primary_mask = Some(channel_mask);
                }
                self.status_srsp(Subsystem::AppCnf, cmd::app_cnf::BDB_SET_CHANNEL, 0);
            }
            ZnpCommand::BdbStartCommissioningReq { mode } => {
                self.status_srsp(Subsystem::AppCnf, cmd::app_cnf::BDB_START_COMMISSIONING, 0);
                if mode & crate::znp::BDB_MODE_FORMATION != 0 {
                    self.form();
                }
            }
            ZnpCommand::ZdoMgmtPermitJoinReq { duration, .. } => {
                let status = match self.refuse_permit_join.take() {
                    Some(s) => s,
                    None if running => 0,
                    None => STATUS_INVALID_REQUEST,
                };
                self.status_srsp(Subsystem::Zdo, cmd::zdo::MGMT_PERMIT_JOIN_REQ, status);
                if status == 0 {
                    // Mgmt_Permit_Joining_req goes out as a broadcast.
                    self.transmitted();
                    self.open_permit_join(duration);
                }
            }
            ZnpCommand::AfDataRequestReq(req) => {
                self.stats.af_data_requests += 1;
                let status = if running { 0 } else { STATUS_INVALID_REQUEST };
                self.status_srsp(Subsystem::Af, cmd::af::DATA_REQUEST, status);
                if running {
                    self.af_data(req);
                }
            }
            ZnpCommand::AfDataRetrieveReq {
                timestamp,
                index,
                length,
            } => self.data_retrieve(timestamp, index, length),
            ZnpCommand::ZdoIeeeAddrReq { short_addr, .. } => {
                self.status_srsp(Subsystem::Zdo, cmd::zdo::IEEE_ADDR_REQ, 0);
                if running {
                    self.transmitted();
                }
                if let Some(d) = self.devices.iter().find(|d| d.nwk == Some(short_addr)) {
                    let rsp = ZnpCommand::ZdoIeeeAddrRsp {
                        status: 0,
                        ieee: d.ieee,
                        nwk_addr: short_addr,
                        start_index: 0,
                        assoc_devices: Vec::new(),
                    };
                    self.schedule(Duration::from_millis(10), Action::Send(rsp));
                }
            }
            ZnpCommand::ZdoMgmtLeaveReq {
                dst_addr, rejoin, ..
            } => {
                self.status_srsp(Subsystem::Zdo, cmd::zdo::MGMT_LEAVE_REQ, 0);
                let now = self.now;
                if let Some(idx) = self
                    .devices
                    .iter()
                    .position(|d| d.nwk == Some(dst_addr) && d.awake(now))
                {
                    self.transmitted();
                    self.schedule(
                        Duration::from_millis(15),
                        Action::Send(ZnpCommand::ZdoMgmtLeaveRsp {
                            src_addr: dst_addr,
                            status: 0,
                        }),
                    );
                    self.device_leaves(idx, rejoin, Duration::from_millis(25));
                }
            }
            ZnpCommand::ZdoNodeDescReq { dst_addr, .. }
            | ZnpCommand::ZdoActiveEpReq { dst_addr, .. }
            | ZnpCommand::ZdoSimpleDescReq { dst_addr, .. }
            | ZnpCommand::ZdoBindReq { dst_addr, .. } => {
                let f = command.encode();
                self.status_srsp(Subsystem::Zdo, f.cmd_id, 0);
                self.zdo_to_device(dst_addr, &command);
            }
            ZnpCommand::ZdoMgmtLqiReq {
                dst_addr,
                start_index,
            } => {
                self.status_srsp(Subsystem::Zdo, cmd::zdo::MGMT_LQI_REQ, 0);
                if let Some(rsp) = self.mgmt_lqi(dst_addr, start_index) {
                    self.transmitted();
                    self.schedule(Duration::from_millis(20), Action::Send(rsp));
                }
            }
            ZnpCommand::BdbAddInstallCodeReq { format, ieee, code } => {
                let valid = match format {
                    crate::install_code::FORMAT_CODE_AND_CRC => {
                        crate::install_code::InstallCode::from_bytes(&code.0).is_ok()
                    }
                    crate::install_code::FORMAT_DERIVED_KEY => code.0.len() == 16,
                    _ => false,
                };
                // 0x02: ZInvalidParameter (Z-Stack `ZComDef.h`).
                let status = if valid {
                    self.registered_codes.insert(ieee, code.0);
                    0
                } else {
                    0x02
                };
                self.status_srsp(Subsystem::AppCnf, cmd::app_cnf::BDB_ADD_INSTALLCODE, status);
            }
            ZnpCommand::BdbSetJoinUsesInstallCodeKeyReq { enabled } => {
                self.join_uses_install_code = enabled;
                self.status_srsp(
                    Subsystem::AppCnf,
                    cmd::app_cnf::BDB_SET_JOIN_USES_INSTALL_CODE_KEY,
                    0,
                );
            }
            ZnpCommand::ZdoExtUpdateNwkKeyReq {
                dst_addr,
                key_seq_num,
                key,
            } => {
                let status = self.key_command_status(running, dst_addr);
                self.status_srsp(Subsystem::Zdo, cmd::zdo::EXT_UPDATE_NWK_KEY, status);
                let Ok(key) = <[u8; 16]>::try_from(key.0.as_slice()) else {
                    return true;
                };
                if status == 0 {
                    self.transmitted();
                    for ieee in self.reached_by(dst_addr) {
                        if let Some(k) = self.device_keys.get_mut(&ieee) {
                            k.alternate = Some((key_seq_num, key.to_vec()));
                        }
                    }
                    // SSP_UpdateNwkKey: the coordinator keeps it as its alternate key.
                    self.write_key_info(
                        nv::NWK_ALTERN_KEY_INFO,
                        NwkKeyDescriptor { key_seq_num, key },
                    );
                }
            }
            ZnpCommand::ZdoExtSwitchNwkKeyReq {
                dst_addr,
                key_seq_num,
            } => {
                let status = self.key_command_status(running, dst_addr);
                self.status_srsp(Subsystem::Zdo, cmd::zdo::EXT_SWITCH_NWK_KEY, status);
                if status == 0 {
                    self.transmitted();
                    for ieee in self.reached_by(dst_addr) {
                        if let Some(k) = self.device_keys.get_mut(&ieee) {
                            if let Some((_, new)) =
                                k.alternate.take().filter(|(s, _)| *s == key_seq_num)
                            {
                                k.active = new;
                            }
                        }
                    }
                    // ZDSecMgrSwitchNwkKey: only a broadcast switches the coordinator too.
                    if dst_addr >= 0xFFFC {
                        self.switch_coordinator_key(key_seq_num);
                    }
                }
            }
            // Not one of these: another SREQ, an AREQ that needs no answer, a stray response.
            _ => return false,
        }
        true
    }

    pub(super) fn zdo_to_device(&mut self, dst_addr: u16, command: &ZnpCommand) {
        if dst_addr == 0x0000 {
            if let Some(rsp) = self.coordinator_zdo(command) {
                self.schedule(Duration::from_millis(5), Action::Send(rsp));
            }
            return;
        }
        let now = self.now;
        if let Some(idx) = self.devices.iter().position(|d| d.nwk == Some(dst_addr)) {
            self.transmitted();
            for (delay, rsp) in self.devices[idx].handle_zdo(command, now) {
                self.schedule(delay, Action::FromDevice(idx, rsp));
            }
        }
    }

    /// Mgmt_Lqi_rsp of the node at `dst_addr`: the coordinator's neighbours are the
    /// joined devices (its children), a router's is the coordinator (its parent); an end
    /// device has no neighbour table (NOT_SUPPORTED). At most 3 entries per answer, from
    /// `start_index`, as Z-Stack pages them. A node not on the network does not answer.
    pub(super) fn mgmt_lqi(&self, dst_addr: u16, start_index: u8) -> Option<ZnpCommand> {
        let ext = self.network?.extended_pan_id;
        let neighbors: Vec<crate::znp::Neighbor> = if dst_addr == 0x0000 {
            self.devices
                .iter()
                .filter_map(|d| {
                    let nwk = d.nwk?;
                    let router = d.kind.mains();
                    Some(crate::znp::Neighbor {
                        extended_pan_id: ext,
                        ieee: d.ieee,
                        nwk_addr: nwk,
                        device_type: if router { 1 } else { 2 },
                        rx_on_when_idle: u8::from(router),
                        relationship: 1,
                        permit_joining: 2,
                        depth: 1,
                        lqi: 200,
                    })
                })
                .collect()
        } else {
            let d = self.devices.iter().find(|d| d.nwk == Some(dst_addr))?;
            if !d.kind.mains() {
                return Some(ZnpCommand::ZdoMgmtLqiRsp {
                    src_addr: dst_addr,
                    status: ZDP_NOT_SUPPORTED,
                    total_entries: 0,
                    start_index: 0,
                    neighbors: Vec::new(),
                });
            }
            vec![crate::znp::Neighbor {
                extended_pan_id: ext,
                ieee: self.cfg.ieee,
                nwk_addr: 0x0000,
                device_type: 0,
                rx_on_when_idle: 1,
                relationship: 0,
                permit_joining: 2,
                depth: 0,
                lqi: 220,
            }]
        };
        let total = u8::try_from(neighbors.len()).unwrap_or(u8::MAX);
        Some(ZnpCommand::ZdoMgmtLqiRsp {
            src_addr: dst_addr,
            status: 0,
            total_entries: total,
            start_index,
            neighbors: neighbors
                .into_iter()
                .skip(usize::from(start_index))
                .take(3)
                .collect(),
        })
    }

    /// The coordinator's own answer to a ZDO request addressed to it: its node descriptor,
    /// its registered endpoints and their simple descriptors.
    pub(super) fn coordinator_zdo(&self, command: &ZnpCommand) -> Option<ZnpCommand> {
        Some(match command {
            ZnpCommand::ZdoActiveEpReq { .. } => ZnpCommand::ZdoActiveEpRsp {
                src_addr: 0,
                status: 0,
                nwk_addr: Some(0),
                endpoints: self.endpoints.iter().map(|e| e.endpoint).collect(),
            },
            ZnpCommand::ZdoNodeDescReq { .. } => ZnpCommand::ZdoNodeDescRsp {
                src_addr: 0,
                status: 0,
                nwk_addr: Some(0),
                descriptor: Some(crate::znp::NodeDescriptor {
                    logical_type: 0,
                    complex_descriptor_available: false,
                    user_descriptor_available: false,
                    aps_flags: 0,
                    frequency_band: 0x08,
                    mac_capabilities: crate::znp::MacCapabilities(0x8F),
                    // Texas Instruments.
                    manufacturer_code: 0x0000,
                    max_buffer_size: 80,
                    max_incoming_transfer_size: 160,
                    // Primary trust center, network manager, stack compliance revision 22.
                    server_mask: 0x2C41,
                    max_outgoing_transfer_size: 160,
                    descriptor_capabilities: 0,
                }),
            },
            ZnpCommand::ZdoSimpleDescReq { endpoint, .. } => {
                let descriptor = self
                    .endpoints
                    .iter()
                    .find(|e| e.endpoint == *endpoint)
                    .map(|e| crate::znp::SimpleDescriptor {
                        endpoint: e.endpoint,
                        profile_id: e.profile_id,
                        device_id: e.device_id,
                        device_version: e.device_version,
                        in_clusters: e.in_clusters.clone(),
                        out_clusters: e.out_clusters.clone(),
                    });
                ZnpCommand::ZdoSimpleDescRsp {
                    src_addr: 0,
                    // 0x83 = NOT_ACTIVE (ZDP status) for an endpoint not registered.
                    status: if descriptor.is_some() { 0 } else { 0x83 },
                    nwk_addr: Some(0),
                    descriptor,
                }
            }
            _ => return None,
        })
    }

    pub(super) fn af_data(&mut self, req: crate::znp::AfDataRequest) {
        let now = self.now;
        let timing = self.cfg.timing;
        let confirm = |status: u8| {
            Action::Send(ZnpCommand::AfDataConfirm {
                status,
                endpoint: req.dst_endpoint,
                trans_id: req.trans_id,
            })
        };
        self.stats.af_data_confirms += 1;
        let Some(idx) = self
            .devices
            .iter()
            .position(|d| d.nwk == Some(req.dst_addr))
        else {
            self.schedule(Duration::from_millis(30), confirm(STATUS_NWK_NO_ROUTE));
            return;
        };
        if !self.devices[idx].awake(now) {
            // A parent holds frames for a sleeping child for 7.68 s; this one gives up sooner.
            self.schedule(
                Duration::from_millis(500),
                confirm(device::STATUS_MAC_TRANSACTION_EXPIRED),
            );
            return;
        }
        self.transmitted();
        self.schedule(Duration::from_millis(5), confirm(0));
        for (delay, rsp) in self.devices[idx].handle_af(&req, now, &timing) {
            self.schedule(delay, Action::FromDevice(idx, rsp));
        }
    }
}
