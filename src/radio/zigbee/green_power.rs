//! Green Power: the GP endpoint (242, profile 0xA1E0, in the GP group 0x0B84, as
//! zigbee-herdsman sets it up) and the notifications GP proxies send it about Green Power
//! devices. The driver does not commission GP devices (no GP keys, no pairing), so a GP
//! frame becomes no reading and no device: it is decoded, counted (`unhandled`) and logged,
//! at info the first time a GP device is heard on this link, at debug after that.
//!
//! Must not resolve a GP frame's network source: that is the proxy (often the coordinator
//! itself), not a device of the registry.

use std::collections::HashSet;

use anyhow::Result;
use fieldgate_zigbee::zcl::green_power::{self, GpdId};
use fieldgate_zigbee::zcl::{ZclCommand, ZclFrame};
use fieldgate_zigbee::znp::AfRegister;
use fieldgate_zigbee::ZnpCommand;

use super::transport::Fail;
use super::Coordinator;
use crate::radio::RadioCounters;

/// GP devices remembered per link for the first-heard log line.
const GPD_REMEMBERED: usize = 256;
/// Z-Stack's "already there" status (ZApsDuplicateEntry): an endpoint or group kept from
/// an earlier start.
const DUPLICATE_ENTRY: u8 = 0xB8;

/// GP devices already logged at info on this link.
pub(super) type GpdSeen = HashSet<u64>;

impl Coordinator<'_> {
    /// Registers the GP endpoint and puts it in the GP group, so GP notifications reach
    /// the driver. A coordinator that refuses either is logged; start-up goes on.
    pub(super) async fn register_green_power(&mut self) -> Result<()> {
        let register = ZnpCommand::AfRegisterReq(AfRegister {
            endpoint: green_power::ENDPOINT,
            profile_id: green_power::PROFILE,
            device_id: 0x0005,
            device_version: 0,
            latency_req: 0,
            in_clusters: Vec::new(),
            out_clusters: Vec::new(),
        });
        match self.request(&register).await? {
            Ok(_) | Err(Fail::Status(DUPLICATE_ENTRY)) => {}
            Err(f) => {
                tracing::warn!(radio = %self.io.radio, error = %f, "the coordinator refused the Green Power endpoint: GP frames will not arrive");
                return Ok(());
            }
        }
        let group = ZnpCommand::ZdoExtAddGroupReq {
            endpoint: green_power::ENDPOINT,
            group_id: green_power::GP_GROUP_ID,
            name: Vec::new(),
        };
        match self.request(&group).await? {
            Ok(_) | Err(Fail::Status(DUPLICATE_ENTRY)) => {}
            Err(f) => {
                tracing::warn!(radio = %self.io.radio, error = %f, "the coordinator refused the Green Power group: GP notifications sent to it will not arrive")
            }
        }
        Ok(())
    }

    /// A frame for the GP endpoint: decoded, counted and logged.
    pub(super) fn on_green_power(&mut self, data: &[u8]) {
        let frame = match ZclFrame::decode(green_power::CLUSTER, data) {
            Ok(f) => f,
            Err(e) => {
                RadioCounters::count(&self.stats.undecodable);
                tracing::warn!(radio = %self.io.radio, error = %e, "undecodable Green Power frame dropped");
                return;
            }
        };
        RadioCounters::count(&self.stats.unhandled);
        let (n, commissioning) = match &frame.command {
            ZclCommand::GreenPowerNotification(n) => (n, false),
            ZclCommand::GreenPowerCommissioningNotification(n) => (n, true),
            _ => {
                tracing::debug!(radio = %self.io.radio, command_id = frame.header.command_id, "Green Power command ignored");
                return;
            }
        };
        let gpd = match n.gpd {
            GpdId::SrcId { src_id } => format!("{src_id:#010x}"),
            GpdId::Ieee { ieee, endpoint } => format!("{ieee}/{endpoint}"),
            GpdId::Other { application_id } => format!("application id {application_id}"),
        };
        let first = self.gpd_seen.len() < GPD_REMEMBERED && self.gpd_seen.insert(n.gpd_address());
        if first {
            tracing::info!(radio = %self.io.radio, gpd = %gpd, commissioning, gpd_command = n.command_id, "Green Power device heard; GP devices are not commissioned here, so its frames are counted and logged, not turned into readings");
        } else {
            tracing::debug!(radio = %self.io.radio, gpd = %gpd, commissioning, gpd_command = n.command_id, frame_counter = n.frame_counter, "Green Power frame");
        }
    }
}
