//! The coordinator's network: formation from NV, resets, the network key and its
//! alternate, the security material and frame counters, and the NV items they live in, as
//! Z-Stack 3 keeps them.

use super::*;

/// `BDB_COMMISSIONING_FORMATION_FAILURE`: what formation reports on a stick that is on
/// a network already.
const BDB_FORMATION_FAILURE: u8 = 8;

impl Emulator {
    /// The network the NV says the stick is on (`bdbNodeIsOnANetwork` and a NIB with a
    /// PAN and a channel), as a host's restore writes it.
    fn network_in_nv(&self) -> Option<NetworkParams> {
        if self.nv.get(&nv::BDB_NODE_IS_ON_A_NETWORK)?.first() != Some(&1) {
            return None;
        }
        let nib = self.nib()?;
        ((11..=26).contains(&nib.nwk_logical_channel)
            && nib.nwk_pan_id != 0xFFFF
            && nib.extended_pan_id != 0
            && nib.extended_pan_id != u64::MAX)
            .then_some(NetworkParams {
                channel: nib.nwk_logical_channel,
                pan_id: nib.nwk_pan_id,
                extended_pan_id: nib.extended_pan_id,
            })
    }

    /// BDB formation. On a stick that is on a network already (a resumed or restored
    /// one), Z-Stack does not form: it starts the network its NV holds (the NIB, keys
    /// and tables as they are) and reports `FormationFailure` (8), which hosts such as
    /// zigpy-znp send formation for at every start and expect. Otherwise it forms from
    /// the channel, PAN ids and key in NV.
    pub(super) fn form(&mut self) {
        if let Some(params) = self.network_in_nv() {
            self.init_link_key_state(false);
            self.run_network(Some(params));
            self.start_coordinator(BDB_FORMATION_FAILURE);
            return;
        }
        let mask = self
            .bdb_primary_mask
            .or_else(|| self.nv_u32(nv::CHANLIST))
            .unwrap_or(1 << 11);
        let channel = (11u8..=26).find(|c| mask & (1u32 << c) != 0).unwrap_or(11);
        let pan_id = self
            .nv_u16(nv::PANID)
            .filter(|p| *p != 0xFFFF && *p != 0)
            .unwrap_or(0x1A62);
        let extended_pan_id = self
            .nv
            .get(&nv::EXTENDED_PAN_ID)
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_le_bytes)
            .filter(|e| *e != 0 && *e != u64::MAX)
            .unwrap_or(self.cfg.ieee.0);
        let params = NetworkParams {
            channel,
            pan_id,
            extended_pan_id,
        };
        let fresh = self.network != Some(params);
        self.run_network(None);
        // Z-Stack keeps the live network parameters in NV (the NIB); mirror them.
        self.nv.insert(nv::PANID, pan_id.to_le_bytes().to_vec());
        self.nv
            .insert(nv::CHANLIST, (1u32 << channel).to_le_bytes().to_vec());
        self.nv
            .insert(nv::EXTENDED_PAN_ID, extended_pan_id.to_le_bytes().to_vec());
        if !self.nv.contains_key(&nv::PRECFGKEY) {
            // No key configured: the stack makes one up (deterministic here).
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&self.cfg.ieee.0.to_le_bytes());
            key[8..].copy_from_slice(&extended_pan_id.to_be_bytes());
            self.nv.insert(nv::PRECFGKEY, key.to_vec());
        }
        self.write_network_state(params);
        self.init_link_key_state(fresh);
        self.run_network(Some(params));
        self.start_coordinator(0);
    }

    /// The coordinator runs `params` from now on, or no network. The devices of the
    /// network it ran stay on that network, unheard. On the new one, the devices there are
    /// heard again if they hold its active key: those that were on it before, and those
    /// its address manager lists, which a restore onto another stick writes (a real
    /// network's devices stay with it when its coordinator is replaced).
    pub(super) fn run_network(&mut self, params: Option<NetworkParams>) {
        if self.network == params {
            return;
        }
        if let Some(old) = self.network {
            for d in &mut self.devices {
                d.coordinator_away(old.extended_pan_id);
            }
        }
        self.network = params;
        let Some(new) = params else {
            return;
        };
        let active = self.active_key_info().map(|k| k.key.to_vec());
        let (now, timing) = (self.now, self.cfg.timing);
        for idx in 0..self.devices.len() {
            let Some(d) = self.devices.get(idx) else {
                continue;
            };
            let ieee = d.ieee;
            let holds_key = match (self.device_keys.get(&ieee), &active) {
                (Some(k), Some(a)) => k.active == *a,
                _ => true,
            };
            if d.nwk.is_some() || !holds_key {
                continue;
            }
            let home = d.home_network();
            let nwk = self.address_of_member(ieee);
            let member = match home {
                Some(home) => home == new.extended_pan_id,
                None => nwk.is_some(),
            };
            if !member {
                continue;
            }
            let Some(d) = self.devices.get_mut(idx) else {
                continue;
            };
            if !d.coordinator_back(new.extended_pan_id, now, &timing) {
                let Some(nwk) = nwk else {
                    continue;
                };
                d.joined(nwk, now, &timing);
            }
            if let (Some(key), false) = (&active, self.device_keys.contains_key(&ieee)) {
                self.device_keys.insert(
                    ieee,
                    DeviceKeys {
                        active: key.clone(),
                        alternate: None,
                    },
                );
            }
        }
    }

    /// The coordinator starts its network: it says it is starting, runs, and ends the
    /// formation commissioning with `status` (0 formed, 8 on a network already).
    fn start_coordinator(&mut self, status: u8) {
        self.schedule(
            Duration::from_millis(5),
            Action::Send(ZnpCommand::ZdoStateChangeInd { state: 8 }),
        );
        self.schedule(Duration::from_millis(50), Action::Started);
        self.schedule(
            Duration::from_millis(55),
            Action::Send(ZnpCommand::BdbCommissioningNotification {
                status,
                mode: Some(crate::znp::BDB_MODE_FORMATION),
                remaining_modes: Some(0),
            }),
        );
    }

    pub(super) fn reset(&mut self, reason: u8) {
        self.stats.resets += 1;
        let startup = self
            .nv
            .get(&nv::STARTUP_OPTION)
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        if startup & nv::STARTUP_CLEAR_ALL != 0 {
            // The stack writes its defaults back (`zgInitItems(TRUE)`): a factory-new NV.
            // Then it clears the bits it applied (`zgWriteStartupOptions(ZG_STARTUP_CLEAR,
            // ...)` in ZDApp_Init), so the next reset keeps what was set up in between.
            self.nv = factory::factory_nv(self.cfg.firmware, self.cfg.ieee);
            self.nv
                .insert(nv::STARTUP_OPTION, vec![startup & !nv::STARTUP_CLEAR_ALL]);
            self.ext_nv.clear();
            self.groups.clear();
        }
        // A deleted EXTADDR is written back from the chip's own address at boot.
        self.nv
            .entry(factory::EXTADDR)
            .or_insert_with(|| self.cfg.ieee.0.to_le_bytes().to_vec());
        // At boot the stack takes its network from NV (the NIB, as a host's restore may
        // have rewritten it), not from what it ran before the reset.
        let in_nv = self.network_in_nv();
        self.run_network(in_nv);
        self.state = 0;
        self.registered_codes.clear();
        self.join_uses_install_code = false;
        self.endpoints.clear();
        self.zdo_callbacks.clear();
        self.zdo_tsn.clear();
        self.bdb_primary_mask = None;
        self.permit_join_until = None;
        self.held.clear();
        // Whatever was in flight is lost with the reboot.
        self.queue.clear();
        self.parser.reset();
        let v = version_rsp(self.cfg.firmware);
        let ZnpCommand::SysVersionRsp {
            transport_rev,
            product,
            major_rel,
            minor_rel,
            ..
        } = v
        else {
            return;
        };
        self.emit(&ZnpCommand::SysResetInd {
            reason,
            transport_rev,
            product_id: product,
            major_rel,
            minor_rel,
            hw_rev: 1,
        });
    }

    /// Whether device `idx` holds the coordinator's active network key.
    pub(super) fn on_active_key(&self, idx: usize) -> bool {
        let Some(dev) = self.devices.get(idx) else {
            return false;
        };
        match (self.device_keys.get(&dev.ieee), self.active_key_info()) {
            (Some(k), Some(active)) => k.active[..] == active.key[..],
            // Joined before any key was known: nothing to compare.
            _ => true,
        }
    }

    /// The joined devices a broadcast or unicast to `dst_addr` reaches: 0xFFFF every device
    /// (sleepy ones through their parent), 0xFFFD / 0xFFFC only those with the receiver on.
    pub(super) fn reached_by(&self, dst_addr: u16) -> Vec<IeeeAddr> {
        self.devices
            .iter()
            .filter(|d| match (dst_addr, d.nwk) {
                (_, None) => false,
                (0xFFFF, _) => true,
                (0xFFFC | 0xFFFD, _) => !d.is_sleepy(),
                (dst, Some(nwk)) => dst == nwk,
            })
            .map(|d| d.ieee)
            .collect()
    }

    /// The SRSP status of a key update or switch: the stack must run, and a unicast must go
    /// to a device it knows (1 = ZFailure otherwise, as `ZDSecMgrSwitchNwkKey` answers).
    pub(super) fn key_command_status(&self, running: bool, dst_addr: u16) -> u8 {
        if !running {
            STATUS_INVALID_REQUEST
        } else if dst_addr >= 0xFFFC || self.devices.iter().any(|d| d.nwk == Some(dst_addr)) {
            0
        } else {
            1
        }
    }

    /// `SSP_SwitchNwkKey`: when the alternate key carries `key_seq_num`, it and the active key
    /// trade places and the outgoing NWK frame counter starts again at 0 (a new key, so no
    /// nonce is reused); otherwise nothing changes.
    pub(super) fn switch_coordinator_key(&mut self, key_seq_num: u8) {
        let (Some(alternate), Some(active)) = (self.alternate_key_info(), self.active_key_info())
        else {
            return;
        };
        if alternate.key_seq_num != key_seq_num {
            return;
        }
        self.write_key_info(nv::NWK_ACTIVE_KEY_INFO, alternate);
        self.write_key_info(nv::NWK_ALTERN_KEY_INFO, active);
        if let Some(ext) = self.network.map(|n| n.extended_pan_id) {
            self.set_frame_counter(ext, 0);
        }
    }

    /// Key descriptors are 17 packed bytes in both firmware layouts (nothing to align).
    /// The active key also goes to NWKKEY (`nwkActiveKeyItems`: the descriptor and a u32
    /// frame counter Z-Stack 3 no longer keeps there), 21 bytes packed or 24 aligned.
    pub(super) fn write_key_info(&mut self, id: u16, key: NwkKeyDescriptor) {
        let bytes = key.to_bytes(NvLayout::Unaligned);
        if id == nv::NWK_ACTIVE_KEY_INFO {
            let mut item = bytes.clone();
            if self.cfg.firmware.layout() == NvLayout::Aligned {
                item.resize(20, 0);
            }
            item.extend_from_slice(&0u32.to_le_bytes());
            self.nv.insert(nv::NWKKEY, item);
        }
        self.nv.insert(id, bytes);
    }

    /// The NV a formation leaves: the NIB, the active and alternate keys (sequence 0) and a security
    /// material table with the new network's entry first and a generic entry last. A
    /// re-formation of the same network keeps its frame counter (Z-Stack never reuses one).
    pub(super) fn write_network_state(&mut self, params: NetworkParams) {
        let layout = self.cfg.firmware.layout();
        let nib = Nib {
            passive_ack_timeout: 5,
            max_broadcast_retries: 2,
            max_children: 20,
            max_depth: 15,
            max_routers: 20,
            broadcast_delivery_time: 30,
            report_constant_cost: 0,
            route_disc_retries: 0,
            secure_all_frames: 1,
            security_level: 5,
            capability_flags: 0x8F,
            transaction_persistence_time: 7,
            nwk_protocol_version: 2,
            route_discovery_time: 13,
            route_expiry_time: 30,
            nwk_dev_address: 0x0000,
            nwk_logical_channel: params.channel,
            nwk_coord_address: 0x0000,
            nwk_pan_id: params.pan_id,
            // NWK_ROUTER: a coordinator that runs its network.
            nwk_state: 8,
            channel_list: 1u32 << params.channel,
            beacon_order: 15,
            super_frame_order: 15,
            scan_duration: 4,
            extended_pan_id: params.extended_pan_id,
            nwk_key_loaded: 1,
            nwk_link_status_period: 15,
            nwk_router_age_limit: 3,
            nwk_is_concentrator: 1,
            nwk_concentrator_discovery_time: 120,
            nwk_concentrator_radius: 10,
            nwk_all_fresh: 1,
            ..Nib::default()
        };
        self.nv.insert(nv::NIB, nib.to_bytes(layout));
        let key: [u8; 16] = self
            .nv
            .get(&nv::PRECFGKEY)
            .and_then(|k| <[u8; 16]>::try_from(k.as_slice()).ok())
            .unwrap_or_default();
        let descriptor = NwkKeyDescriptor {
            key_seq_num: 0,
            key,
        };
        self.write_key_info(nv::NWK_ACTIVE_KEY_INFO, descriptor);
        // Z-Stack starts a network with the same key in both items (as read from formed
        // sticks; zigbee-herdsman resumes only when both hold the configured key).
        self.write_key_info(nv::NWK_ALTERN_KEY_INFO, descriptor);
        self.nv.insert(nv::BDB_NODE_IS_ON_A_NETWORK, vec![1]);
        let kept = self
            .nwk_frame_counter_of(params.extended_pan_id)
            .unwrap_or(0);
        for i in 0..SEC_MATERIAL_TABLE_LEN {
            let entry = if i == 0 {
                NwkSecMaterialEntry {
                    frame_counter: kept,
                    extended_pan_id: params.extended_pan_id,
                }
            } else if i == SEC_MATERIAL_TABLE_LEN - 1 {
                NwkSecMaterialEntry {
                    frame_counter: kept,
                    extended_pan_id: GENERIC_EXTENDED_PAN_ID,
                }
            } else {
                NwkSecMaterialEntry::default()
            };
            self.set_sec_material(i, entry);
        }
    }

    pub(super) fn nwk_frame_counter_of(&self, extended_pan_id: u64) -> Option<u32> {
        self.sec_material_table()
            .into_iter()
            .find(|e| e.extended_pan_id == extended_pan_id)
            .map(|e| e.frame_counter)
    }

    pub(super) fn sec_material_raw(&self, index: u16) -> Option<&Vec<u8>> {
        match self.cfg.firmware {
            Firmware::ZStack3x0 => {
                self.ext_nv
                    .get(&(nv::SYSTEM_ZSTACK, nv::EX_NWK_SEC_MATERIAL_TABLE, index))
            }
            Firmware::ZStack30x => self
                .nv
                .get(&(nv::LEGACY_NWK_SEC_MATERIAL_TABLE_START + index)),
        }
    }

    pub(super) fn set_sec_material(&mut self, index: u16, entry: NwkSecMaterialEntry) {
        let bytes = entry.to_bytes();
        match self.cfg.firmware {
            Firmware::ZStack3x0 => {
                self.ext_nv.insert(
                    (nv::SYSTEM_ZSTACK, nv::EX_NWK_SEC_MATERIAL_TABLE, index),
                    bytes,
                );
            }
            Firmware::ZStack30x => {
                self.nv
                    .insert(nv::LEGACY_NWK_SEC_MATERIAL_TABLE_START + index, bytes);
            }
        }
    }

    /// The coordinator sent one NWK frame: its outgoing frame counter moves on (written
    /// through to NV, so it survives a reset).
    pub(super) fn transmitted(&mut self) {
        let Some(ext) = self.network.map(|n| n.extended_pan_id) else {
            return;
        };
        if let Some(fc) = self.nwk_frame_counter_of(ext) {
            self.set_frame_counter(ext, fc.wrapping_add(1));
        }
    }

    /// Rewrites the frame counter of the network entry for `extended_pan_id`, if it has one.
    pub(super) fn set_frame_counter(&mut self, extended_pan_id: u64, frame_counter: u32) {
        let hit = (0..SEC_MATERIAL_TABLE_LEN).find_map(|i| {
            let e = NwkSecMaterialEntry::parse(self.sec_material_raw(i)?).ok()?;
            (e.extended_pan_id == extended_pan_id).then_some((i, e))
        });
        if let Some((i, mut e)) = hit {
            e.frame_counter = frame_counter;
            self.set_sec_material(i, e);
        }
    }

    pub(super) fn nv_u16(&self, id: u16) -> Option<u16> {
        let v = self.nv.get(&id)?;
        Some(u16::from_le_bytes([*v.first()?, *v.get(1)?]))
    }

    pub(super) fn nv_u32(&self, id: u16) -> Option<u32> {
        let v = self.nv.get(&id)?;
        <[u8; 4]>::try_from(v.get(..4)?)
            .ok()
            .map(u32::from_le_bytes)
    }
}
