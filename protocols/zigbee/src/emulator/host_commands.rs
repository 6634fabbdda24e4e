//! The SREQs other host stacks send that the driver-side codec ([`crate::znp`]) does not
//! model, answered as Z-Stack 3.x answers them, straight from the MT frame: NV item delete
//! and extended write, the SimpleLink extended NV table writes, TX power, LED control, the
//! associated-device lookups zigpy-znp sizes struct alignment with, network info, APS groups,
//! route discovery, ZDO message callbacks, NWK_addr_req, and AF_DATA_REQUEST_EXT (how
//! zigpy-znp sends everything, ZDO requests included, whose answers then come back as
//! ZDO_MSG_CB_INCOMING once it registered for them).
//!
//! Command ids and layouts: zigbee-herdsman 11.1.1 `dist/adapter/z-stack/znp/definition.js`
//! and zigpy-znp 1.1.1 `zigpy_znp/commands/{sys,util,zdo,af}.py`; status codes from Z-Stack's
//! `ZComDef.h` as both libraries list them.

use std::time::Duration;

use super::{
    Action, Emulator, STATUS_INVALID_REQUEST, STATUS_NV_ITEM_UNINIT, STATUS_NV_OPER_FAILED,
};
use crate::error::Result;
use crate::mt::{MtFrame, MtType, Subsystem};
use crate::wire::Reader;
use crate::znp::{nv, AfDataRequest, ZnpCommand, DEVICE_STATE_COORDINATOR};
use crate::IeeeAddr;

mod sys {
    pub const STACK_TUNE: u8 = 0x0F;
    pub const OSAL_NV_DELETE: u8 = 0x12;
    pub const SET_TX_POWER: u8 = 0x14;
    pub const OSAL_NV_WRITE_EXT: u8 = 0x1D;
    pub const NV_CREATE: u8 = 0x30;
    pub const NV_DELETE: u8 = 0x31;
    pub const NV_WRITE: u8 = 0x34;
    pub const NV_UPDATE: u8 = 0x35;
}

mod util {
    pub const LED_CONTROL: u8 = 0x0A;
    pub const ASSOC_FIND_DEVICE: u8 = 0x49;
    pub const ASSOC_GET_WITH_ADDRESS: u8 = 0x4A;
    pub const ASSOC_REMOVE: u8 = 0x63;
    pub const ASSOC_ADD: u8 = 0x64;
}

mod zdo {
    pub const NWK_ADDR_REQ: u8 = 0x00;
    pub const UNBIND_REQ: u8 = 0x22;
    pub const MGMT_RTG_REQ: u8 = 0x32;
    pub const MGMT_BIND_REQ: u8 = 0x33;
    pub const MGMT_NWK_UPDATE_REQ: u8 = 0x37;
    pub const UNBIND_RSP: u8 = 0xA2;
    pub const MGMT_RTG_RSP: u8 = 0xB2;
    pub const MGMT_BIND_RSP: u8 = 0xB3;
    pub const MGMT_NWK_UPDATE_NOTIFY: u8 = 0xB8;
    pub const MSG_CB_REGISTER: u8 = 0x3E;
    pub const MSG_CB_REMOVE: u8 = 0x3F;
    pub const EXT_ROUTE_DISC: u8 = 0x45;
    pub const EXT_ROUTE_CHECK: u8 = 0x46;
    pub const EXT_REMOVE_GROUP: u8 = 0x47;
    pub const EXT_FIND_GROUP: u8 = 0x4A;
    pub const EXT_ADD_GROUP: u8 = 0x4B;
    pub const EXT_NWK_INFO: u8 = 0x50;
    pub const NWK_ADDR_RSP: u8 = 0x80;
    pub const MSG_CB_INCOMING: u8 = 0xFF;
}

mod af {
    pub const DATA_REQUEST_EXT: u8 = 0x02;
}

/// `ZComDef.h` statuses.
const ZSUCCESS: u8 = 0x00;
const ZFAILURE: u8 = 0x01;
const NV_BAD_ITEM_LEN: u8 = 0x0C;
const ZAPS_DUPLICATE_ENTRY: u8 = 0xB8;

/// `sizeof(associated_devices_t)` as UTIL_ASSOC_FIND_DEVICE sends it: 36 bytes with the
/// struct padding of a CC26xx build, 28 packed on a CC2531 (zigpy-znp tells the NV layout
/// from this length).
const ASSOC_DEVICE_ALIGNED: usize = 36;
const ASSOC_DEVICE_PACKED: usize = 28;

/// AF address modes of AF_DATA_REQUEST_EXT.
const ADDR_MODE_GROUP: u8 = 0x01;
const ADDR_MODE_16BIT: u8 = 0x02;
const ADDR_MODE_64BIT: u8 = 0x03;

impl Emulator {
    /// Answers `frame` if it is one of the SREQs above; false when it is not.
    pub(super) fn host_command(&mut self, frame: &MtFrame) -> bool {
        if frame.cmd_type != MtType::Sreq {
            return false;
        }
        match self.answer_host_command(frame) {
            Ok(handled) => handled,
            Err(_) => {
                // 4 = bad length: the request is shorter than its command.
                self.rpc_error(frame, 4);
                true
            }
        }
    }

    fn answer_host_command(&mut self, frame: &MtFrame) -> Result<bool> {
        let mut r = Reader::new(&frame.payload, "host SREQ");
        match (frame.subsystem, frame.cmd_id) {
            (Subsystem::Sys, sys::OSAL_NV_DELETE) => self.osal_nv_delete(&mut r),
            (Subsystem::Sys, sys::OSAL_NV_WRITE_EXT) => self.osal_nv_write_ext(&mut r),
            (Subsystem::Sys, sys::NV_CREATE) => self.nv_create(&mut r),
            (Subsystem::Sys, sys::NV_DELETE) => self.nv_delete(&mut r),
            (Subsystem::Sys, sys::NV_WRITE) => self.nv_write(&mut r),
            (Subsystem::Sys, sys::NV_UPDATE) => self.nv_update(&mut r),
            (Subsystem::Sys, sys::SET_TX_POWER) => {
                let dbm = r.u8()?;
                // Z-Stack 3.30+ answers a status; older builds the power they applied.
                let answer = match self.cfg.firmware {
                    super::Firmware::ZStack3x0 => ZSUCCESS,
                    super::Firmware::ZStack30x => dbm,
                };
                self.raw_srsp(Subsystem::Sys, sys::SET_TX_POWER, vec![answer]);
                Ok(())
            }
            (Subsystem::Sys, sys::STACK_TUNE) => {
                let _operation = r.u8()?;
                let value = r.u8()?;
                self.raw_srsp(Subsystem::Sys, sys::STACK_TUNE, vec![value]);
                Ok(())
            }
            (Subsystem::Util, util::LED_CONTROL) => {
                let (_led, _mode) = (r.u8()?, r.u8()?);
                self.raw_srsp(Subsystem::Util, util::LED_CONTROL, vec![ZSUCCESS]);
                Ok(())
            }
            (Subsystem::Util, util::ASSOC_FIND_DEVICE) => {
                let index = usize::from(r.u8()?);
                let nwk = self.devices.iter().filter_map(|d| d.nwk).nth(index);
                let body = self.associated_device(nwk, index);
                self.raw_srsp(Subsystem::Util, util::ASSOC_FIND_DEVICE, body);
                Ok(())
            }
            (Subsystem::Util, util::ASSOC_GET_WITH_ADDRESS) => {
                let ieee = r.ieee()?;
                let nwk = r.u16()?;
                let found = self.devices.iter().enumerate().find_map(|(i, d)| {
                    let joined = d.nwk?;
                    let hit = if ieee.0 == 0 {
                        joined == nwk
                    } else {
                        d.ieee == ieee
                    };
                    hit.then_some((joined, i))
                });
                let body = match found {
                    Some((nwk, i)) => self.associated_device(Some(nwk), i),
                    None => self.associated_device(None, 0),
                };
                self.raw_srsp(Subsystem::Util, util::ASSOC_GET_WITH_ADDRESS, body);
                Ok(())
            }
            (Subsystem::Util, util::ASSOC_REMOVE | util::ASSOC_ADD) => {
                let _ = r.rest();
                self.raw_srsp(Subsystem::Util, frame.cmd_id, vec![ZSUCCESS]);
                Ok(())
            }
            (Subsystem::Zdo, zdo::EXT_NWK_INFO) => {
                self.ext_nwk_info();
                Ok(())
            }
            (Subsystem::Zdo, zdo::EXT_FIND_GROUP) => {
                let (endpoint, group) = (r.u8()?, r.u16()?);
                let [lo, hi] = group.to_le_bytes();
                let status = if self.groups.contains(&(endpoint, group)) {
                    ZSUCCESS
                } else {
                    ZFAILURE
                };
                // Status, group id, an empty name.
                self.raw_srsp(Subsystem::Zdo, zdo::EXT_FIND_GROUP, vec![status, lo, hi, 0]);
                Ok(())
            }
            (Subsystem::Zdo, zdo::EXT_ADD_GROUP) => {
                let (endpoint, group) = (r.u8()?, r.u16()?);
                let _name = r.rest();
                let status = if self.groups.insert((endpoint, group)) {
                    ZSUCCESS
                } else {
                    ZAPS_DUPLICATE_ENTRY
                };
                self.raw_srsp(Subsystem::Zdo, zdo::EXT_ADD_GROUP, vec![status]);
                Ok(())
            }
            (Subsystem::Zdo, zdo::EXT_REMOVE_GROUP) => {
                let (endpoint, group) = (r.u8()?, r.u16()?);
                let status = if self.groups.remove(&(endpoint, group)) {
                    ZSUCCESS
                } else {
                    ZFAILURE
                };
                self.raw_srsp(Subsystem::Zdo, zdo::EXT_REMOVE_GROUP, vec![status]);
                Ok(())
            }
            (Subsystem::Zdo, zdo::EXT_ROUTE_DISC | zdo::EXT_ROUTE_CHECK) => {
                let dst = r.u16()?;
                let _ = r.rest();
                let known = dst == 0 || self.devices.iter().any(|d| d.nwk == Some(dst));
                let status = if frame.cmd_id == zdo::EXT_ROUTE_DISC || known {
                    ZSUCCESS
                } else {
                    ZFAILURE
                };
                self.raw_srsp(Subsystem::Zdo, frame.cmd_id, vec![status]);
                Ok(())
            }
            (Subsystem::Zdo, zdo::MSG_CB_REGISTER) => {
                let cluster = r.u16()?;
                self.zdo_callbacks.insert(cluster);
                self.raw_srsp(Subsystem::Zdo, zdo::MSG_CB_REGISTER, vec![ZSUCCESS]);
                Ok(())
            }
            (Subsystem::Zdo, zdo::MSG_CB_REMOVE) => {
                let cluster = r.u16()?;
                let status = if self.zdo_callbacks.remove(&cluster) {
                    ZSUCCESS
                } else {
                    ZFAILURE
                };
                self.raw_srsp(Subsystem::Zdo, zdo::MSG_CB_REMOVE, vec![status]);
                Ok(())
            }
            (Subsystem::Zdo, zdo::NWK_ADDR_REQ) => {
                let ieee = r.ieee()?;
                let _ = r.rest();
                self.raw_srsp(Subsystem::Zdo, zdo::NWK_ADDR_REQ, vec![ZSUCCESS]);
                self.nwk_addr_req(ieee, None);
                Ok(())
            }
            (Subsystem::Zdo, zdo::MGMT_NWK_UPDATE_REQ) => {
                let _dst_addr = r.u16()?;
                let _dst_mode = r.u8()?;
                let channel_mask = r.u32()?;
                let scan_duration = r.u8()?;
                let _ = r.rest();
                self.raw_srsp(Subsystem::Zdo, zdo::MGMT_NWK_UPDATE_REQ, vec![ZSUCCESS]);
                self.nwk_update(channel_mask, scan_duration);
                Ok(())
            }
            (Subsystem::Zdo, zdo::MGMT_RTG_REQ | zdo::MGMT_BIND_REQ) => {
                let dst_addr = r.u16()?;
                let start_index = r.u8()?;
                self.raw_srsp(Subsystem::Zdo, frame.cmd_id, vec![ZSUCCESS]);
                self.mgmt_table(frame.cmd_id, dst_addr, start_index);
                Ok(())
            }
            (Subsystem::Zdo, zdo::UNBIND_REQ) => {
                let dst_addr = r.u16()?;
                let _ = r.rest();
                self.raw_srsp(Subsystem::Zdo, zdo::UNBIND_REQ, vec![ZSUCCESS]);
                if self.node_exists(dst_addr) {
                    self.transmitted();
                    let mut p = dst_addr.to_le_bytes().to_vec();
                    p.push(ZSUCCESS);
                    self.schedule(
                        Duration::from_millis(20),
                        Action::Send(ZnpCommand::Raw(MtFrame::new(
                            MtType::Areq,
                            Subsystem::Zdo,
                            zdo::UNBIND_RSP,
                            p,
                        ))),
                    );
                }
                Ok(())
            }
            (Subsystem::Af, af::DATA_REQUEST_EXT) => self.af_data_request_ext(&mut r),
            _ => return Ok(false),
        }?;
        Ok(true)
    }

    fn raw_srsp(&mut self, subsystem: Subsystem, cmd_id: u8, payload: Vec<u8>) {
        self.srsp(ZnpCommand::Raw(MtFrame::new(
            MtType::Srsp,
            subsystem,
            cmd_id,
            payload,
        )));
    }

    /// `osal_nv_delete`: the length must match the item's.
    fn osal_nv_delete(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let (id, len) = (r.u16()?, r.u16()?);
        let status = match self.nv.get(&id) {
            None => STATUS_NV_ITEM_UNINIT,
            Some(v) if v.len() != usize::from(len) => NV_BAD_ITEM_LEN,
            Some(_) => {
                self.nv.remove(&id);
                ZSUCCESS
            }
        };
        self.raw_srsp(Subsystem::Sys, sys::OSAL_NV_DELETE, vec![status]);
        Ok(())
    }

    /// `osal_nv_write` with a 16-bit offset: the item must exist and hold the bytes.
    fn osal_nv_write_ext(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let (id, offset, len) = (r.u16()?, usize::from(r.u16()?), usize::from(r.u16()?));
        let value = r.bytes(len)?;
        let status = match self.nv.get_mut(&id) {
            None => STATUS_NV_ITEM_UNINIT,
            Some(item) => match item.get_mut(offset..offset + len) {
                Some(slot) => {
                    slot.copy_from_slice(value);
                    ZSUCCESS
                }
                None => STATUS_NV_OPER_FAILED,
            },
        };
        self.raw_srsp(Subsystem::Sys, sys::OSAL_NV_WRITE_EXT, vec![status]);
        Ok(())
    }

    fn ext_key(r: &mut Reader<'_>) -> Result<(u8, u16, u16)> {
        Ok((r.u8()?, r.u16()?, r.u16()?))
    }

    /// SimpleLink `NVOCMP` create: a new zeroed item; an existing one is left as it is.
    fn nv_create(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let key = Self::ext_key(r)?;
        let len = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        let status = match self.ext_nv.entry(key) {
            _ if len > 4096 => STATUS_NV_OPER_FAILED,
            // NVINTF_EXIST: the item is there already.
            std::collections::btree_map::Entry::Occupied(_) => STATUS_NV_ITEM_UNINIT,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(vec![0; len]);
                ZSUCCESS
            }
        };
        self.raw_srsp(Subsystem::Sys, sys::NV_CREATE, vec![status]);
        Ok(())
    }

    fn nv_delete(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let key = Self::ext_key(r)?;
        let status = if self.ext_nv.remove(&key).is_some() {
            ZSUCCESS
        } else {
            STATUS_NV_ITEM_UNINIT
        };
        self.raw_srsp(Subsystem::Sys, sys::NV_DELETE, vec![status]);
        Ok(())
    }

    fn nv_write(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let key = Self::ext_key(r)?;
        let offset = usize::from(r.u16()?);
        let len = usize::from(r.u8()?);
        let value = r.bytes(len)?;
        let status = match self.ext_nv.get_mut(&key) {
            None => STATUS_NV_ITEM_UNINIT,
            Some(item) => match item.get_mut(offset..offset + len) {
                Some(slot) => {
                    slot.copy_from_slice(value);
                    ZSUCCESS
                }
                None => STATUS_NV_OPER_FAILED,
            },
        };
        self.raw_srsp(Subsystem::Sys, sys::NV_WRITE, vec![status]);
        Ok(())
    }

    /// Creates or replaces the whole item.
    fn nv_update(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let key = Self::ext_key(r)?;
        let len = usize::from(r.u8()?);
        let value = r.bytes(len)?.to_vec();
        self.ext_nv.insert(key, value);
        self.raw_srsp(Subsystem::Sys, sys::NV_UPDATE, vec![ZSUCCESS]);
        Ok(())
    }

    /// `associated_devices_t` as MT_UtilAssocFindDevice copies it out: the entry for `nwk`
    /// (a child of the coordinator), or every byte 0xFF when there is none.
    fn associated_device(&self, nwk: Option<u16>, index: usize) -> Vec<u8> {
        let len = match self.cfg.firmware {
            super::Firmware::ZStack3x0 => ASSOC_DEVICE_ALIGNED,
            super::Firmware::ZStack30x => ASSOC_DEVICE_PACKED,
        };
        let Some(nwk) = nwk else {
            return vec![0xFF; len];
        };
        let sleepy = self
            .devices
            .iter()
            .find(|d| d.nwk == Some(nwk))
            .is_some_and(|d| d.is_sleepy());
        let mut b = vec![0u8; len];
        b[..2].copy_from_slice(&nwk.to_le_bytes());
        b[2..4].copy_from_slice(&u16::try_from(index).unwrap_or(u16::MAX).to_le_bytes());
        // nodeRelation: CHILD_RFD (1) for a sleepy child, CHILD_FFD_RX_IDLE (4) otherwise.
        b[4] = if sleepy { 1 } else { 4 };
        // devStatus: DEV_SEC_AUTH_STATUS.
        b[5] = 0x02;
        b
    }

    /// ZDO_EXT_NWK_INFO: the coordinator's view of the network it runs.
    fn ext_nwk_info(&mut self) {
        let (pan_id, ext, channel) = match self.network {
            Some(n) => (n.pan_id, n.extended_pan_id, n.channel),
            None => (0xFFFF, 0, 0),
        };
        let mut p = Vec::with_capacity(24);
        p.extend_from_slice(&0u16.to_le_bytes());
        p.push(self.state);
        p.extend_from_slice(&pan_id.to_le_bytes());
        // No parent: the coordinator's parent address is its own.
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend_from_slice(&ext.to_le_bytes());
        p.extend_from_slice(&self.cfg.ieee.0.to_le_bytes());
        p.push(channel);
        self.raw_srsp(Subsystem::Zdo, zdo::EXT_NWK_INFO, p);
    }

    /// NWK_addr_req for `ieee`: the owner answers (the coordinator itself, or a joined device
    /// that is awake); nobody answers for an address the network does not have.
    fn nwk_addr_req(&mut self, ieee: IeeeAddr, tsn: Option<u8>) {
        let nwk = if ieee == self.cfg.ieee {
            Some(0x0000)
        } else {
            let now = self.now;
            self.devices
                .iter()
                .find(|d| d.ieee == ieee && d.awake(now))
                .and_then(|d| d.nwk)
        };
        let Some(nwk) = nwk else {
            return;
        };
        if let Some(tsn) = tsn {
            self.zdo_tsn.insert((nwk, 0x8000), tsn);
        }
        // Z-Stack's MT order: start index before the (empty) associated-device count.
        let mut p = vec![ZSUCCESS];
        p.extend_from_slice(&ieee.0.to_le_bytes());
        p.extend_from_slice(&nwk.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        let rsp = ZnpCommand::Raw(MtFrame::new(
            MtType::Areq,
            Subsystem::Zdo,
            zdo::NWK_ADDR_RSP,
            p,
        ));
        self.schedule(Duration::from_millis(10), Action::Send(rsp));
    }

    /// Whether `addr` is the coordinator or a device on its network.
    fn node_exists(&self, addr: u16) -> bool {
        self.network.is_some()
            && (addr == 0x0000 || self.devices.iter().any(|d| d.nwk == Some(addr)))
    }

    /// Mgmt_Rtg_rsp / Mgmt_Bind_rsp of the node at `dst_addr`: the coordinator and the
    /// routers answer with empty tables (nothing is routed through or bound on them
    /// here); an end device has no routing table (NOT_SUPPORTED). A node not on the
    /// network does not answer.
    fn mgmt_table(&mut self, request: u8, dst_addr: u16, start_index: u8) {
        if !self.node_exists(dst_addr) {
            return;
        }
        let end_device = self
            .devices
            .iter()
            .any(|d| d.nwk == Some(dst_addr) && !d.kind.mains());
        let mut p = dst_addr.to_le_bytes().to_vec();
        if request == zdo::MGMT_RTG_REQ && end_device {
            p.push(super::commands::ZDP_NOT_SUPPORTED);
        } else {
            // Status, entries in the table, start index, entries in this answer.
            p.extend_from_slice(&[ZSUCCESS, 0, start_index, 0]);
        }
        let rsp = if request == zdo::MGMT_RTG_REQ {
            zdo::MGMT_RTG_RSP
        } else {
            zdo::MGMT_BIND_RSP
        };
        self.transmitted();
        self.schedule(
            Duration::from_millis(20),
            Action::Send(ZnpCommand::Raw(MtFrame::new(
                MtType::Areq,
                Subsystem::Zdo,
                rsp,
                p,
            ))),
        );
    }

    /// Mgmt_NWK_Update_req: 0xFE moves the network to the channel in the mask (the
    /// coordinator and its devices; the NIB's channel and update id follow), 0..=5 is an
    /// energy scan of the masked channels answered with Mgmt_NWK_Update_notify, 0xFF
    /// changes the channel mask and manager (nothing to do here).
    fn nwk_update(&mut self, channel_mask: u32, scan_duration: u8) {
        let Some(mut params) = self.network else {
            return;
        };
        match scan_duration {
            0xFE => {
                let Some(channel) = (11u8..=26).find(|c| channel_mask & (1u32 << c) != 0) else {
                    return;
                };
                self.transmitted();
                params.channel = channel;
                self.network = Some(params);
                self.nv
                    .insert(nv::CHANLIST, (1u32 << channel).to_le_bytes().to_vec());
                let layout = self.cfg.firmware.layout();
                if let Some(mut nib) = self.nib() {
                    nib.nwk_logical_channel = channel;
                    nib.channel_list = 1u32 << channel;
                    nib.nwk_update_id = nib.nwk_update_id.wrapping_add(1);
                    self.nv.insert(nv::NIB, nib.to_bytes(layout));
                }
            }
            0..=5 => {
                let channels: Vec<u8> = (11u8..=26)
                    .filter(|c| channel_mask & (1u32 << c) != 0)
                    .collect();
                // A quiet site: low energy everywhere, a little more on the network's own.
                let energies: Vec<u8> = channels
                    .iter()
                    .map(|c| if *c == params.channel { 0x30 } else { 0x0A })
                    .collect();
                let mut p = 0x0000u16.to_le_bytes().to_vec();
                p.push(ZSUCCESS);
                p.extend_from_slice(&channel_mask.to_le_bytes());
                p.extend_from_slice(&0u16.to_le_bytes()); // total transmissions
                p.extend_from_slice(&0u16.to_le_bytes()); // transmission failures
                p.push(u8::try_from(energies.len()).unwrap_or(u8::MAX));
                p.extend_from_slice(&energies);
                let per_channel = Duration::from_millis(15 * ((1 << scan_duration) + 1));
                let scan = per_channel * u32::try_from(channels.len()).unwrap_or(16);
                self.schedule(
                    scan,
                    Action::Send(ZnpCommand::Raw(MtFrame::new(
                        MtType::Areq,
                        Subsystem::Zdo,
                        zdo::MGMT_NWK_UPDATE_NOTIFY,
                        p,
                    ))),
                );
            }
            _ => {}
        }
    }

    /// AF_DATA_REQUEST_EXT: a frame to a 16- or 64-bit address, a group or a broadcast. To
    /// endpoint 0 it is a ZDO request, handed to the ZDO layer with its sequence number.
    fn af_data_request_ext(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let mode = r.u8()?;
        let addr = r.array::<8>()?;
        let dst_endpoint = r.u8()?;
        let _dst_pan = r.u16()?;
        let src_endpoint = r.u8()?;
        let cluster_id = r.u16()?;
        let trans_id = r.u8()?;
        let options = r.u8()?;
        let radius = r.u8()?;
        let len = usize::from(r.u16()?);
        let data = r.bytes(len)?.to_vec();
        let running = self.state == DEVICE_STATE_COORDINATOR;
        self.stats.af_data_requests += 1;
        let dst_addr = match mode {
            ADDR_MODE_16BIT | ADDR_MODE_GROUP => Some(u16::from_le_bytes([addr[0], addr[1]])),
            ADDR_MODE_64BIT => {
                let ieee = IeeeAddr(u64::from_le_bytes(addr));
                if ieee == self.cfg.ieee {
                    Some(0x0000)
                } else {
                    self.devices
                        .iter()
                        .find(|d| d.ieee == ieee)
                        .and_then(|d| d.nwk)
                }
            }
            // Broadcast (0x0F / 0xFF).
            _ => Some(u16::from_le_bytes([addr[0], addr[1]])),
        };
        let status = if running {
            ZSUCCESS
        } else {
            STATUS_INVALID_REQUEST
        };
        self.raw_srsp(Subsystem::Af, af::DATA_REQUEST_EXT, vec![status]);
        if !running {
            return Ok(());
        }
        let Some(dst_addr) = dst_addr else {
            // An IEEE address the coordinator cannot resolve: no route.
            self.stats.af_data_confirms += 1;
            self.schedule(
                Duration::from_millis(30),
                Action::Send(ZnpCommand::AfDataConfirm {
                    status: super::STATUS_NWK_NO_ROUTE,
                    endpoint: dst_endpoint,
                    trans_id,
                }),
            );
            return Ok(());
        };
        if dst_endpoint == 0 {
            self.zdo_over_af(dst_addr, cluster_id, &data);
            return Ok(());
        }
        if mode == ADDR_MODE_GROUP {
            // A group (multicast) send is confirmed once it is out, as Z-Stack does
            // (zigbee-herdsman waits for it). The members carry it out; nobody sends a
            // Default Response to a multicast.
            self.transmitted();
            let mut data = data;
            if let Some(fc) = data.first_mut() {
                *fc |= 0x10;
            }
            let now = self.now;
            let timing = self.cfg.timing;
            for idx in 0..self.devices.len() {
                let Some(nwk) = self.devices[idx]
                    .nwk
                    .filter(|_| self.devices[idx].in_group(dst_addr))
                else {
                    continue;
                };
                let req = AfDataRequest {
                    dst_addr: nwk,
                    dst_endpoint: 1,
                    src_endpoint,
                    cluster_id,
                    trans_id,
                    options,
                    radius,
                    data: data.clone(),
                };
                for (delay, rsp) in self.devices[idx].handle_af(&req, now, &timing) {
                    self.schedule(delay, Action::FromDevice(idx, rsp));
                }
            }
            self.stats.af_data_confirms += 1;
            self.schedule(
                Duration::from_millis(30),
                Action::Send(ZnpCommand::AfDataConfirm {
                    status: ZSUCCESS,
                    endpoint: dst_endpoint,
                    trans_id,
                }),
            );
            return Ok(());
        }
        if dst_addr >= 0xFFF8 {
            // Broadcasts: nothing to confirm, no device answers here.
            self.transmitted();
            return Ok(());
        }
        self.af_data(AfDataRequest {
            dst_addr,
            dst_endpoint,
            src_endpoint,
            cluster_id,
            trans_id,
            options,
            radius,
            data,
        });
        Ok(())
    }

    /// A ZDO request sent as an APS frame to endpoint 0 (`data` = TSN + request): handled as
    /// the matching ZDO SREQ would be, its answer tagged with the TSN for ZDO_MSG_CB_INCOMING.
    fn zdo_over_af(&mut self, dst_addr: u16, cluster: u16, data: &[u8]) {
        let Some((&tsn, payload)) = data.split_first() else {
            return;
        };
        let Ok(id) = u8::try_from(cluster) else {
            return;
        };
        // The MT form of the request: most ZDO SREQs are the destination then the ZDO
        // payload; the address requests are the ZDO payload alone.
        let mt_payload: Vec<u8> = match id {
            0x00 | 0x01 => payload.to_vec(),
            0x36 => {
                // Mgmt_Permit_Joining_req: MT puts the address mode and destination first.
                let mut p = vec![ADDR_MODE_16BIT];
                p.extend_from_slice(&dst_addr.to_le_bytes());
                p.extend_from_slice(payload);
                p
            }
            _ => {
                let mut p = dst_addr.to_le_bytes().to_vec();
                p.extend_from_slice(payload);
                p
            }
        };
        if id == zdo::NWK_ADDR_REQ {
            let mut r = Reader::new(payload, "NWK_addr_req");
            if let Ok(ieee) = r.ieee() {
                self.nwk_addr_req(ieee, Some(tsn));
            }
            return;
        }
        let frame = MtFrame::new(MtType::Sreq, Subsystem::Zdo, id, mt_payload);
        let Ok(command) = ZnpCommand::decode(&frame) else {
            // Not modelled by the codec (Mgmt_Rtg, Mgmt_Bind, Unbind): the raw SREQ
            // path answers it; its SRSP is not for this host.
            self.zdo_tsn.insert((dst_addr, 0x8000 | cluster), tsn);
            let before = self.out.len();
            let frames_out = self.stats.frames_out;
            if self.host_command(&frame) && self.out.len() > before {
                self.out.truncate(before);
                self.stats.frames_out = frames_out;
            }
            return;
        };
        let responder = match &command {
            ZnpCommand::ZdoIeeeAddrReq { short_addr, .. } => *short_addr,
            _ => dst_addr,
        };
        self.zdo_tsn.insert((responder, 0x8000 | cluster), tsn);
        match command {
            ZnpCommand::ZdoNodeDescReq { .. }
            | ZnpCommand::ZdoActiveEpReq { .. }
            | ZnpCommand::ZdoSimpleDescReq { .. }
            | ZnpCommand::ZdoBindReq { .. } => self.zdo_to_device(dst_addr, &command),
            // The rest go through the SREQ path; its SRSP is not for this host (it sent an
            // AF frame), so it is dropped.
            other => self.zdo_request_silently(other),
        }
    }

    /// Runs a typed ZDO request as its SREQ would, without the SRSP.
    fn zdo_request_silently(&mut self, command: ZnpCommand) {
        let before = self.out.len();
        let frames_out = self.stats.frames_out;
        self.on_command(command);
        // The SRSP, if any, is the first frame written now; AREQs are scheduled, not written.
        if self.out.len() > before {
            self.out.truncate(before);
            self.stats.frames_out = frames_out;
        }
    }

    /// With a ZDO message callback registered (ZDO_MSG_CB_REGISTER, 0xFFFF = all), every ZDO
    /// message the coordinator gets is also passed up whole as ZDO_MSG_CB_INCOMING: the
    /// answers to requests (with the request's TSN) and device announcements.
    pub(super) fn zdo_msg_callback(&mut self, frame: &MtFrame) {
        if self.zdo_callbacks.is_empty()
            || frame.cmd_type != MtType::Areq
            || frame.subsystem != Subsystem::Zdo
        {
            return;
        }
        let p = &frame.payload;
        let (src, cluster, data): (u16, u16, Vec<u8>) = match frame.cmd_id {
            // NWK/IEEE_addr_rsp: Z-Stack's MT order swaps the start index and the count.
            0x80 | 0x81 => {
                let (Some(head), Some(&start), Some(&count)) = (p.get(..11), p.get(11), p.get(12))
                else {
                    return;
                };
                let nwk = u16::from_le_bytes([head[9], head[10]]);
                let mut d = head.to_vec();
                d.extend_from_slice(&[count, start]);
                d.extend_from_slice(p.get(13..).unwrap_or_default());
                (nwk, 0x8000 | u16::from(frame.cmd_id - 0x80), d)
            }
            0x82..=0xBF => {
                let Some((src, rest)) = p.split_first_chunk::<2>() else {
                    return;
                };
                (
                    u16::from_le_bytes(*src),
                    0x8000 | u16::from(frame.cmd_id - 0x80),
                    rest.to_vec(),
                )
            }
            // END_DEVICE_ANNCE_IND: Device_annce.
            0xC1 => {
                let Some((src, rest)) = p.split_first_chunk::<2>() else {
                    return;
                };
                (u16::from_le_bytes(*src), 0x0013, rest.to_vec())
            }
            _ => return,
        };
        if !self.zdo_callbacks.contains(&0xFFFF) && !self.zdo_callbacks.contains(&cluster) {
            return;
        }
        let tsn = self.zdo_tsn.remove(&(src, cluster)).unwrap_or_else(|| {
            self.zdo_seq = self.zdo_seq.wrapping_add(1);
            self.zdo_seq
        });
        let mut m = Vec::with_capacity(9 + data.len());
        m.extend_from_slice(&src.to_le_bytes());
        m.push(u8::from(cluster == 0x0013));
        m.extend_from_slice(&cluster.to_le_bytes());
        m.push(0);
        m.push(tsn);
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&data);
        self.emit_frame(MtFrame::new(
            MtType::Areq,
            Subsystem::Zdo,
            zdo::MSG_CB_INCOMING,
            m,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EmulatorConfig, Firmware};
    use super::*;
    use crate::mt::MtStreamParser;
    use crate::znp::nv;

    /// Sends one SREQ at `now` and returns the frames that come back by `now + 100 ms`.
    fn exchange(
        emu: &mut Emulator,
        now: &mut Duration,
        sub: Subsystem,
        id: u8,
        p: &[u8],
    ) -> Vec<MtFrame> {
        let req = MtFrame::new(MtType::Sreq, sub, id, p.to_vec());
        emu.receive(*now, &req.to_bytes().unwrap());
        *now += Duration::from_millis(100);
        emu.tick(*now);
        MtStreamParser::from_ncp().feed(&emu.take_output())
    }

    #[test]
    fn nv_delete_and_extended_write_follow_osal_nv() {
        let (mut emu, mut now) = (Emulator::new(EmulatorConfig::default()), Duration::ZERO);
        let id = nv::PRECFGKEY.to_le_bytes();
        // Write 2 bytes at offset 14 of the 16-byte key; past its end fails.
        let r = exchange(
            &mut emu,
            &mut now,
            Subsystem::Sys,
            sys::OSAL_NV_WRITE_EXT,
            &[id[0], id[1], 14, 0, 2, 0, 0xAB, 0xCD],
        );
        assert_eq!(r[0].payload, [ZSUCCESS]);
        assert_eq!(emu.nv_item(nv::PRECFGKEY).unwrap()[14..], [0xAB, 0xCD]);
        let r = exchange(
            &mut emu,
            &mut now,
            Subsystem::Sys,
            sys::OSAL_NV_WRITE_EXT,
            &[id[0], id[1], 15, 0, 2, 0, 1, 2],
        );
        assert_eq!(r[0].payload, [STATUS_NV_OPER_FAILED]);
        // Delete needs the right length; a missing item is NV_ITEM_UNINIT.
        let r = exchange(
            &mut emu,
            &mut now,
            Subsystem::Sys,
            sys::OSAL_NV_DELETE,
            &[id[0], id[1], 3, 0],
        );
        assert_eq!(r[0].payload, [NV_BAD_ITEM_LEN]);
        let r = exchange(
            &mut emu,
            &mut now,
            Subsystem::Sys,
            sys::OSAL_NV_DELETE,
            &[id[0], id[1], 16, 0],
        );
        assert_eq!(r[0].payload, [ZSUCCESS]);
        assert_eq!(emu.nv_item(nv::PRECFGKEY), None);
        let r = exchange(
            &mut emu,
            &mut now,
            Subsystem::Sys,
            sys::OSAL_NV_DELETE,
            &[id[0], id[1], 16, 0],
        );
        assert_eq!(r[0].payload, [STATUS_NV_ITEM_UNINIT]);
    }

    #[test]
    fn led_control_and_struct_size_like_the_firmware() {
        for (firmware, len) in [(Firmware::ZStack3x0, 36), (Firmware::ZStack30x, 28)] {
            let cfg = EmulatorConfig {
                firmware,
                ..EmulatorConfig::default()
            };
            let (mut emu, mut now) = (Emulator::new(cfg), Duration::ZERO);
            let r = exchange(
                &mut emu,
                &mut now,
                Subsystem::Util,
                util::ASSOC_FIND_DEVICE,
                &[0],
            );
            assert_eq!((r[0].cmd_type, r[0].payload.len()), (MtType::Srsp, len));
            assert!(r[0].payload.iter().all(|b| *b == 0xFF));
            let r = exchange(
                &mut emu,
                &mut now,
                Subsystem::Util,
                util::LED_CONTROL,
                &[0xFF, 5],
            );
            assert_eq!(r[0].payload, [ZSUCCESS]);
        }
        // A truncated request is an RPC error, not a panic.
        let (mut emu, mut now) = (Emulator::new(EmulatorConfig::default()), Duration::ZERO);
        let r = exchange(
            &mut emu,
            &mut now,
            Subsystem::Util,
            util::LED_CONTROL,
            &[0xFF],
        );
        assert_eq!(
            (r[0].subsystem, r[0].payload.clone()),
            (Subsystem::RpcError, vec![4, 0x27, 0x0A])
        );
    }

    #[test]
    fn zdo_over_af_is_answered_through_the_message_callback_with_its_tsn() {
        let (mut emu, mut now) = (Emulator::new(EmulatorConfig::default()), Duration::ZERO);
        exchange(&mut emu, &mut now, Subsystem::AppCnf, 0x05, &[0x04]);
        let r = exchange(
            &mut emu,
            &mut now,
            Subsystem::Zdo,
            zdo::MSG_CB_REGISTER,
            &[0xFF, 0xFF],
        );
        assert_eq!(r[0].payload, [ZSUCCESS]);
        // Node_Desc_req to the coordinator itself, TSN 0x42, over AF_DATA_REQUEST_EXT.
        let mut req = vec![ADDR_MODE_16BIT];
        req.extend_from_slice(&[0; 8]); // destination 0x0000
        req.extend_from_slice(&[0, 0, 0, 0]); // endpoint 0, PAN 0, source endpoint 0
        req.extend_from_slice(&[0x02, 0x00, 0, 0x20, 0, 3, 0]); // cluster, TSN, options, radius, length
        req.extend_from_slice(&[0x42, 0x00, 0x00]);
        let r = exchange(
            &mut emu,
            &mut now,
            Subsystem::Af,
            af::DATA_REQUEST_EXT,
            &req,
        );
        assert_eq!(r[0].payload, [ZSUCCESS]);
        let cb = r
            .iter()
            .find(|f| f.subsystem == Subsystem::Zdo && f.cmd_id == zdo::MSG_CB_INCOMING)
            .expect("ZDO_MSG_CB_INCOMING");
        // Src 0x0000, unicast, Node_Desc_rsp, not secured, TSN, MAC dst, then status 0.
        assert_eq!(cb.payload[..9], [0, 0, 0, 0x02, 0x80, 0, 0x42, 0, 0]);
        assert_eq!(cb.payload[9], 0);
    }
}
