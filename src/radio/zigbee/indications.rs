//! What the coordinator tells us unprompted: resets, joins, announcements, leaves, ZDO
//! answers, AF data confirms and incoming ZCL frames, which become readings (through the
//! device's definition and the codec's mapping), interview progress, IAS enrollments and refresh answers.
//!
//! Must not wait on the hub: it emits events and goes on.

use anyhow::Result;
use fieldgate_zigbee::zcl::clusters::{self, id as cluster_id};
use fieldgate_zigbee::zcl::green_power;
use fieldgate_zigbee::zcl::readings::HeldBack;
use fieldgate_zigbee::zcl::{ZclCommand, ZclFrame};
use fieldgate_zigbee::znp;
use fieldgate_zigbee::{IeeeAddr, ZnpCommand};
use tokio::time::Instant;

use super::definitions;
use super::devices::{Device, Setup, Step};
use super::transport::Inbound;
use super::Coordinator;
use crate::model::DeviceEventKind;
use crate::radio::RadioCounters;

/// Frames kept per unknown address while the other address is looked up.
pub(super) const UNRESOLVED_BUFFER: usize = 16;

impl Coordinator<'_> {
    pub(super) async fn on_indication(&mut self, cmd: ZnpCommand) -> Result<()> {
        match cmd {
            ZnpCommand::SysResetInd { reason, .. } => {
                tracing::warn!(radio = %self.io.radio, reason, "the coordinator reset on its own: re-running start-up");
                self.restart_needed = true;
            }
            ZnpCommand::ZdoStateChangeInd { state } => {
                tracing::debug!(radio = %self.io.radio, state, "coordinator state");
            }
            ZnpCommand::ZdoTcDevInd { nwk_addr, ieee, .. } => {
                self.device_joined(ieee, nwk_addr, None).await?;
            }
            ZnpCommand::ZdoEndDeviceAnnceInd {
                nwk_addr,
                ieee,
                capabilities,
                ..
            } => {
                self.device_joined(ieee, nwk_addr, Some(capabilities.rx_on_when_idle()))
                    .await?;
            }
            ZnpCommand::ZdoLeaveInd {
                ieee,
                rejoin,
                src_addr,
                ..
            } => {
                if rejoin {
                    tracing::info!(radio = %self.io.radio, device = %ieee, "device left to rejoin");
                } else {
                    self.devices.remove(&ieee);
                    tracing::info!(radio = %self.io.radio, device = %ieee, nwk = src_addr, "device left the network");
                    self.emit(ieee.to_string(), DeviceEventKind::Left).await?;
                }
            }
            ZnpCommand::ZdoIeeeAddrRsp {
                status: 0,
                ieee,
                nwk_addr,
                ..
            } => {
                if let Some((_, frames)) = self.unresolved.remove(&nwk_addr) {
                    self.address_resolved(ieee, nwk_addr, frames).await?;
                }
            }
            ZnpCommand::ZdoNwkAddrRsp {
                status: 0,
                ieee,
                nwk_addr,
                ..
            } => {
                if let Some((_, frames)) = self.unresolved_ieee.remove(&ieee) {
                    self.address_resolved(ieee, nwk_addr, frames).await?;
                }
            }
            ZnpCommand::ZdoNodeDescRsp {
                src_addr,
                status,
                descriptor,
                ..
            } => {
                if let Some(ieee) = self.waiting_for(src_addr, |w| w.step == Step::NodeDesc) {
                    if let (0, Some(d), Some(dev)) =
                        (status, descriptor, self.devices.get_mut(&ieee))
                    {
                        dev.rx_on_when_idle = d.mac_capabilities.rx_on_when_idle();
                        dev.node = Some(d);
                        self.step_done(ieee).await?;
                    }
                }
                self.spoke_nwk(src_addr).await?;
            }
            ZnpCommand::ZdoActiveEpRsp {
                src_addr,
                status,
                endpoints,
                ..
            } => {
                if let Some(ieee) = self.waiting_for(src_addr, |w| w.step == Step::ActiveEp) {
                    if let (0, Some(dev)) = (status, self.devices.get_mut(&ieee)) {
                        dev.endpoints = Some(endpoints);
                        self.step_done(ieee).await?;
                    }
                }
                self.spoke_nwk(src_addr).await?;
            }
            ZnpCommand::ZdoSimpleDescRsp {
                src_addr,
                status,
                descriptor,
                ..
            } => {
                let ieee = self.waiting_for(src_addr, |w| matches!(w.step, Step::SimpleDesc(_)));
                if let (Some(ieee), Some(dev)) = (ieee, ieee.and_then(|i| self.devices.get_mut(&i)))
                {
                    let asked = match dev.waiting.as_ref().map(|w| &w.step) {
                        Some(Step::SimpleDesc(ep)) => *ep,
                        _ => 0,
                    };
                    match (status, descriptor) {
                        (0, Some(d)) if d.endpoint == asked => {
                            dev.simple.insert(d.endpoint, d);
                        }
                        _ => {
                            // The device says it has no such endpoint: forget it.
                            if let Some(eps) = dev.endpoints.as_mut() {
                                eps.retain(|e| *e != asked);
                            }
                        }
                    }
                    self.step_done(ieee).await?;
                }
                self.spoke_nwk(src_addr).await?;
            }
            ZnpCommand::ZdoBindRsp { src_addr, status } => {
                if let Some(ieee) = self.waiting_for(src_addr, |w| {
                    matches!(w.step, Step::Setup(Setup::Bind { .. }))
                }) {
                    if status != 0 {
                        tracing::warn!(radio = %self.io.radio, device = %ieee, status, "bind refused");
                    }
                    self.step_done(ieee).await?;
                }
            }
            ZnpCommand::ZdoMgmtLeaveRsp { src_addr, status } => {
                tracing::info!(radio = %self.io.radio, nwk = src_addr, status, "leave request answered");
            }
            ZnpCommand::ZdoMgmtPermitJoinRsp { status, .. } => {
                tracing::debug!(radio = %self.io.radio, status, "permit join answered");
            }
            ZnpCommand::ZdoPermitJoinInd { duration } => {
                tracing::info!(radio = %self.io.radio, seconds = duration, "join window");
            }
            ZnpCommand::AfDataConfirm {
                status, trans_id, ..
            } => {
                if let Some(p) = self.commands.remove(&trans_id) {
                    let (ok, detail) = if status == 0 {
                        (true, "delivered (AF_DATA_CONFIRM success)".to_string())
                    } else {
                        (
                            false,
                            format!("not delivered: AF_DATA_CONFIRM status {status:#04x}"),
                        )
                    };
                    self.emit(
                        p.native,
                        DeviceEventKind::CommandResult {
                            command_id: p.command_id,
                            ok,
                            detail,
                        },
                    )
                    .await?;
                } else if status != 0 {
                    tracing::debug!(radio = %self.io.radio, trans_id, status, "AF frame not delivered");
                }
            }
            ZnpCommand::AfIncomingMsg(m) => self.on_incoming(m).await?,
            ZnpCommand::AfIncomingMsgExt(m) => self.on_incoming_ext(m).await?,
            ZnpCommand::Raw(frame) => {
                tracing::debug!(radio = %self.io.radio, cmd_type = ?frame.cmd_type, subsystem = ?frame.subsystem, cmd_id = frame.cmd_id, payload = %fieldgate_zigbee::to_hex(&frame.payload), "unmodelled indication ignored");
            }
            other => {
                tracing::debug!(radio = %self.io.radio, command = other.name(), "indication ignored");
            }
        }
        Ok(())
    }

    /// A device the driver did not know (a restart) spoke: both its addresses are known
    /// now, so it is interviewed again and the frames kept meanwhile are handled.
    async fn address_resolved(
        &mut self,
        ieee: IeeeAddr,
        nwk: u16,
        frames: Vec<ZnpCommand>,
    ) -> Result<()> {
        tracing::info!(radio = %self.io.radio, device = %ieee, nwk, "known device speaking after a restart: interviewing it again");
        self.devices
            .entry(ieee)
            .or_insert_with(|| Device::new(ieee, nwk))
            .nwk = nwk;
        self.advance(ieee, 0).await?;
        for f in frames {
            self.link.queue_unsolicited(Inbound::Indication(f));
        }
        Ok(())
    }

    pub(super) async fn spoke_nwk(&mut self, nwk: u16) -> Result<()> {
        match self.ieee_of(nwk) {
            Some(ieee) => self.device_spoke(ieee).await,
            None => Ok(()),
        }
    }

    pub(super) async fn device_joined(
        &mut self,
        ieee: IeeeAddr,
        nwk: u16,
        rx_on: Option<bool>,
    ) -> Result<()> {
        let known = self.devices.contains_key(&ieee);
        // Another device may have had this address before (address conflict / rejoin).
        self.devices.retain(|k, d| *k == ieee || d.nwk != nwk);
        let dev = self
            .devices
            .entry(ieee)
            .or_insert_with(|| Device::new(ieee, nwk));
        let moved = dev.nwk != nwk;
        dev.nwk = nwk;
        if let Some(rx) = rx_on {
            dev.rx_on_when_idle = rx;
        }
        if !known || moved {
            tracing::info!(radio = %self.io.radio, device = %ieee, nwk, "device joined");
            self.emit(ieee.to_string(), DeviceEventKind::Joined).await?;
        }
        let dev = self.devices.get(&ieee);
        let idle = dev.is_some_and(|d| d.waiting.is_none());
        if idle && dev.is_some_and(|d| d.next_step().is_some()) {
            self.advance(ieee, 0).await?;
        } else {
            self.device_spoke(ieee).await?;
        }
        Ok(())
    }

    pub(super) async fn on_incoming(&mut self, m: znp::AfIncomingMsg) -> Result<()> {
        // A GP proxy's frame: its source is the proxy, not a device.
        if m.cluster_id == green_power::CLUSTER && m.dst_endpoint == green_power::ENDPOINT {
            self.on_green_power(&m.data);
            return Ok(());
        }
        let Some(ieee) = self.ieee_of(m.src_addr) else {
            let nwk = m.src_addr;
            match self.unresolved.get_mut(&nwk) {
                Some((_, frames)) => {
                    if frames.len() < UNRESOLVED_BUFFER {
                        frames.push(ZnpCommand::AfIncomingMsg(m));
                    }
                }
                None => {
                    tracing::debug!(radio = %self.io.radio, nwk, "frame from an unknown network address: asking for its IEEE address");
                    self.unresolved
                        .insert(nwk, (Instant::now(), vec![ZnpCommand::AfIncomingMsg(m)]));
                    let _ = self
                        .request(&ZnpCommand::ZdoIeeeAddrReq {
                            short_addr: nwk,
                            req_type: 0,
                            start_index: 0,
                        })
                        .await?;
                }
            }
            return Ok(());
        };
        let frame = match ZclFrame::decode(m.cluster_id, &m.data) {
            Ok(f) => f,
            Err(e) => {
                RadioCounters::count(&self.stats.undecodable);
                tracing::warn!(radio = %self.io.radio, device = %ieee, cluster = m.cluster_id, error = %e, "undecodable ZCL frame dropped");
                return Ok(());
            }
        };
        let cluster = m.cluster_id;
        let ep = m.src_endpoint;
        let tsn = frame.header.tsn;
        // Scaling factors first, so a read response that carries them scales itself.
        if let Some(dev) = self.devices.get_mut(&ieee) {
            let ctx = dev.scaling.entry(ep).or_default();
            for (attr, value) in frame.attribute_values() {
                ctx.observe(cluster, attr, value);
            }
        }
        self.interview_answer(ieee, cluster, &frame).await?;
        // IAS enrollment: answer an enroll request whenever it comes.
        if let ZclCommand::IasZoneEnrollRequest { zone_type, .. } = &frame.command {
            let zone_id = u8::try_from(self.devices.len().min(0xFE)).unwrap_or(1);
            tracing::info!(radio = %self.io.radio, device = %ieee, zone_type, zone_id, "enrolling IAS zone");
            let nwk = m.src_addr;
            let req = self.zcl_request(
                nwk,
                ep,
                cluster_id::IAS_ZONE,
                clusters::ias_enroll_response(0, zone_id, frame.header.tsn),
            )?;
            if let Err(f) = self.request(&req).await? {
                tracing::warn!(radio = %self.io.radio, device = %ieee, error = %f, "IAS enroll response not sent");
            }
        }
        let ctx = self
            .devices
            .get(&ieee)
            .and_then(|d| d.scaling.get(&ep))
            .copied()
            .unwrap_or_default();
        let definition = self.devices.get(&ieee).and_then(|d| d.definition.clone());
        let found = definitions::device_readings(definition.as_deref(), cluster, &frame, &ctx);
        for (attr, why) in found.held_back {
            match why {
                HeldBack::UnknownAttribute => tracing::debug!(
                    cluster,
                    attr,
                    "attribute without a known meaning; not a reading"
                ),
                HeldBack::ScalingUnknown => tracing::debug!(
                    cluster,
                    attr,
                    "scaling factors not known yet; reading held back"
                ),
            }
        }
        for error in &found.errors {
            RadioCounters::count(&self.stats.undecodable);
            tracing::warn!(radio = %self.io.radio, device = %ieee, cluster, error = %error, "manufacturer payload not readable; dropped");
        }
        let readings = found.readings;
        if !readings.is_empty() {
            // The link quality of the frame that carried them.
            let link = crate::model::LinkMetrics {
                lqi: Some(m.link_quality),
                ..Default::default()
            };
            self.emit_with_link(
                ieee.to_string(),
                DeviceEventKind::Readings(readings),
                Some(link),
            )
            .await?;
        }
        if let ZclCommand::ReadAttributesRsp { .. } = &frame.command {
            self.refresh_answered(ieee, cluster, tsn).await?;
        }
        self.device_spoke(ieee).await
    }
}
