//! How device frames reach the host, as Z-Stack's `MT_AfIncomingMsg` (`mt_af.c`) hands them
//! over: AF_INCOMING_MSG; AF_INCOMING_MSG_EXT when the payload is over
//! [`MAX_INLINE_PAYLOAD`] bytes, with the payload held back for AF_DATA_RETRIEVE; or, on
//! request ([`IncomingForm`]), every frame as AF_INCOMING_MSG_EXT. Also Green Power
//! notifications from the coordinator's own GP proxy, which reach the host only on a
//! registered GP endpoint (and, sent to the GP group, only when that endpoint is in it).
//!
//! Held-back payloads live as Z-Stack keeps them: by the indication's timestamp, until a
//! retrieve of length 0 frees one or [`HELD_PAYLOAD_LIFETIME`] passes (a reset loses them
//! all). Where Z-Stack copies past the end of a payload for a retrieve that asks too much,
//! this answers with the bytes there are.

use std::time::Duration;

use super::{Emulator, DEVICE_STATE_COORDINATOR};
use crate::zcl::green_power::{self, GpNotification};
use crate::zcl::{Direction, ZclCommand, ZclFrame, ZclHeader};
use crate::znp::{
    AfIncomingMsg, AfIncomingMsgExt, AF_ADDR_MODE_16BIT, AF_ADDR_MODE_64BIT, AF_STATUS_FAILED,
    MAX_INLINE_PAYLOAD,
};
use crate::ZnpCommand;

/// How long the coordinator keeps a payload nobody retrieves (`MT_AF_EXEC_CNT` ticks of
/// `MT_AF_EXEC_DLY`, 15 × 1 s, in `mt_af.c`).
pub const HELD_PAYLOAD_LIFETIME: Duration = Duration::from_secs(15);

/// How device frames are handed to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncomingForm {
    /// As Z-Stack does for a device addressed by its network address: AF_INCOMING_MSG, and
    /// AF_INCOMING_MSG_EXT with the payload held back when it is too long.
    #[default]
    Standard,
    /// Every device frame as AF_INCOMING_MSG_EXT with the 16-bit source address (the payload
    /// inline when it fits, held back when not).
    AllExt,
    /// Every device frame as AF_INCOMING_MSG_EXT with the device's IEEE address as source
    /// (address mode 3, Z-Stack's form for a frame whose APS source was an IEEE address).
    AllExtIeee,
}

/// A payload the coordinator holds for AF_DATA_RETRIEVE.
#[derive(Debug, Clone)]
pub(super) struct HeldPayload {
    timestamp: u32,
    data: Vec<u8>,
    expires: Duration,
}

impl Emulator {
    /// Hands a device's frame to the host in the form Z-Stack would use.
    pub(super) fn deliver(&mut self, cmd: ZnpCommand) {
        let ZnpCommand::AfIncomingMsg(m) = cmd else {
            self.emit(&cmd);
            return;
        };
        let form = self.cfg.incoming;
        let held = m.data.len() > MAX_INLINE_PAYLOAD;
        if form == IncomingForm::Standard && !held {
            self.emit(&ZnpCommand::AfIncomingMsg(m));
            return;
        }
        let (mode, addr) = match (form, self.ieee_of_nwk(m.src_addr)) {
            (IncomingForm::AllExtIeee, Some(ieee)) => (AF_ADDR_MODE_64BIT, ieee.0),
            _ => (AF_ADDR_MODE_16BIT, u64::from(m.src_addr)),
        };
        let len = u16::try_from(m.data.len()).unwrap_or(u16::MAX);
        let (timestamp, data) = if held {
            let timestamp = self.hold_payload(m.timestamp, m.data);
            (timestamp, Vec::new())
        } else {
            (m.timestamp, m.data)
        };
        self.emit(&ZnpCommand::AfIncomingMsgExt(AfIncomingMsgExt {
            group_id: m.group_id,
            cluster_id: m.cluster_id,
            src_addr_mode: mode,
            src_addr: addr,
            src_endpoint: m.src_endpoint,
            // Only inter-PAN builds fill the PAN id in; others send 0.
            src_pan_id: 0,
            dst_endpoint: m.dst_endpoint,
            was_broadcast: m.was_broadcast,
            link_quality: m.link_quality,
            security_use: m.security_use,
            timestamp,
            trans_seq_num: m.trans_seq_num,
            len,
            data,
            mac_src_addr: m.mac_src_addr,
            msg_result_radius: m.msg_result_radius,
        }));
    }

    /// Keeps a payload for AF_DATA_RETRIEVE under a timestamp no other held payload has
    /// (Z-Stack's is the MAC receive time; two frames can share a millisecond here).
    fn hold_payload(&mut self, timestamp: u32, data: Vec<u8>) -> u32 {
        self.expire_held_payloads();
        let mut timestamp = timestamp;
        while self.held.iter().any(|h| h.timestamp == timestamp) {
            timestamp = timestamp.wrapping_add(1);
        }
        self.stats.held_payloads += 1;
        self.held.push(HeldPayload {
            timestamp,
            data,
            expires: self.now + HELD_PAYLOAD_LIFETIME,
        });
        timestamp
    }

    fn expire_held_payloads(&mut self) {
        let now = self.now;
        let before = self.held.len();
        self.held.retain(|h| h.expires > now);
        self.stats.held_payloads_expired += (before - self.held.len()) as u64;
    }

    /// Frees every held payload now, as if the host had waited too long to retrieve them.
    pub(super) fn drop_held_payloads(&mut self) {
        self.stats.held_payloads_expired += self.held.len() as u64;
        self.held.clear();
    }

    /// AF_DATA_RETRIEVE (`MT_AfDataRetrieve`): `length` bytes from `index` of the payload
    /// held under `timestamp`; length 0 frees it; a timestamp it does not hold (never, freed,
    /// expired) gets `afStatus_FAILED` with no data.
    pub(super) fn data_retrieve(&mut self, timestamp: u32, index: u16, length: u8) {
        self.expire_held_payloads();
        self.stats.data_retrieves += 1;
        let found = self.held.iter().position(|h| h.timestamp == timestamp);
        let rsp = match found {
            None => ZnpCommand::AfDataRetrieveRsp {
                status: AF_STATUS_FAILED,
                data: Vec::new(),
            },
            Some(i) if length == 0 => {
                self.held.remove(i);
                ZnpCommand::AfDataRetrieveRsp {
                    status: 0,
                    data: Vec::new(),
                }
            }
            Some(i) => {
                let data = &self.held[i].data;
                let start = usize::from(index).min(data.len());
                let end = (start + usize::from(length)).min(data.len());
                ZnpCommand::AfDataRetrieveRsp {
                    status: 0,
                    data: data[start..end].to_vec(),
                }
            }
        };
        self.srsp(rsp);
    }

    /// Payloads held for AF_DATA_RETRIEVE right now.
    pub fn held_payloads(&self) -> usize {
        self.held.iter().filter(|h| h.expires > self.now).count()
    }

    /// Makes device `ieee` report `records` of `cluster` (any number, any size: a report over
    /// 220 bytes goes out as AF_INCOMING_MSG_EXT with its payload held back). False when
    /// `ieee` is not a joined device or the coordinator is not running.
    pub fn report_attributes(
        &mut self,
        now: Duration,
        ieee: crate::IeeeAddr,
        cluster: u16,
        records: Vec<crate::zcl::AttributeRecord>,
    ) -> bool {
        self.advance(now);
        self.run_due();
        if self.state != DEVICE_STATE_COORDINATOR {
            return false;
        }
        let Some(dev) = self
            .devices
            .iter_mut()
            .find(|d| d.ieee == ieee && d.nwk.is_some())
        else {
            return false;
        };
        match dev.custom_report(cluster, records, now) {
            Some(frame) => {
                self.deliver(frame);
                true
            }
            None => false,
        }
    }

    /// The coordinator's GP proxy hears a Green Power device and tells the sink: a GP
    /// Notification to the GP group, or (`commissioning`) a GP Commissioning Notification
    /// to the sink, from the coordinator itself (0x0000) to endpoint 242. Delivered only if
    /// the host registered the GP endpoint and, for the group, added it to the GP group;
    /// returns whether it was.
    pub fn green_power_frame(
        &mut self,
        now: Duration,
        notification: GpNotification,
        commissioning: bool,
    ) -> bool {
        self.advance(now);
        self.run_due();
        let registered = self
            .endpoints
            .iter()
            .any(|e| e.endpoint == green_power::ENDPOINT);
        let in_group = self
            .groups
            .contains(&(green_power::ENDPOINT, green_power::GP_GROUP_ID));
        if self.state != DEVICE_STATE_COORDINATOR || !registered || !(commissioning || in_group) {
            self.stats.gp_frames_undelivered += 1;
            return false;
        }
        let (cmd_id, command) = if commissioning {
            (
                green_power::COMMISSIONING_NOTIFICATION,
                ZclCommand::GreenPowerCommissioningNotification(notification),
            )
        } else {
            (
                green_power::NOTIFICATION,
                ZclCommand::GreenPowerNotification(notification),
            )
        };
        self.gp_tsn = self.gp_tsn.wrapping_add(1);
        let frame = ZclFrame {
            header: ZclHeader::cluster(Direction::ClientToServer, true, self.gp_tsn, cmd_id),
            command,
        };
        let Ok(data) = frame.encode() else {
            self.stats.gp_frames_undelivered += 1;
            return false;
        };
        self.stats.gp_frames += 1;
        self.emit(&ZnpCommand::AfIncomingMsg(AfIncomingMsg {
            group_id: if commissioning {
                0
            } else {
                green_power::GP_GROUP_ID
            },
            cluster_id: green_power::CLUSTER,
            src_addr: 0x0000,
            src_endpoint: green_power::ENDPOINT,
            dst_endpoint: green_power::ENDPOINT,
            was_broadcast: !commissioning,
            link_quality: 255,
            security_use: false,
            timestamp: u32::try_from(self.now.as_millis() & 0xFFFF_FFFF).unwrap_or(0),
            trans_seq_num: 0,
            data,
            mac_src_addr: Some(0x0000),
            msg_result_radius: Some(0),
        }));
        true
    }

    fn ieee_of_nwk(&self, nwk: u16) -> Option<crate::IeeeAddr> {
        self.devices
            .iter()
            .find(|d| d.nwk == Some(nwk))
            .map(|d| d.ieee)
    }
}
