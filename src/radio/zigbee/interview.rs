//! Interviews as one state machine per device, driven by answers and timers: node and
//! simple descriptors, the Basic cluster, then the reporting set-up. Several devices are
//! interviewed at once; a sleepy device that stops answering keeps what was learnt and
//! resumes the moment it next speaks (or after a backoff).
//!
//! Owns the steps' requests and their retries; the device model itself is `devices`, and
//! what arrives is routed here by `indications`.

use std::time::Duration;

use anyhow::Result;
use fieldgate_zigbee::zcl::clusters::id as cluster_id;
use fieldgate_zigbee::zcl::{AttributeRecord, ZclCommand, ZclFrame, ZclValue};
use fieldgate_zigbee::znp::BindTarget;
use fieldgate_zigbee::{IeeeAddr, ZnpCommand};
use tokio::time::Instant;

use super::devices::{BasicInfo, Setup, Step, Waiting};
use super::{Coordinator, OUR_ENDPOINT};
use crate::model::DeviceEventKind;
use crate::radio::session::RetryPolicy;

/// When a stalled interview that the device did not resume by speaking is tried again:
/// 30 s after the first stall, doubling per stall in a row up to 15 min, for as long as the
/// device is known.
const STALL_BACKOFF: RetryPolicy = RetryPolicy {
    attempts: u32::MAX,
    first_delay: Duration::from_secs(30),
    max_delay: Duration::from_secs(15 * 60),
};

impl Coordinator<'_> {
    /// Sends the request for the device's next step (if any) and records what it waits for.
    pub(super) async fn advance(&mut self, ieee: IeeeAddr, attempts: u32) -> Result<()> {
        let Some(dev) = self.devices.get_mut(&ieee) else {
            return Ok(());
        };
        dev.stalled = false;
        dev.retry_at = None;
        let Some(step) = dev.next_step() else {
            dev.waiting = None;
            return Ok(());
        };
        let nwk = dev.nwk;
        let tsn = match &step {
            Step::Basic(_)
            | Step::Setup(
                Setup::Configure { .. } | Setup::ReadAttrs { .. } | Setup::IasCie { .. },
            ) => Some(self.next_tsn()),
            _ => None,
        };
        let now = Instant::now();
        if let Some(dev) = self.devices.get_mut(&ieee) {
            dev.waiting = Some(Waiting {
                step: step.clone(),
                tsn,
                sent_at: now,
                deadline: now + self.opts.response_timeout,
                attempts: attempts + 1,
            });
        }
        tracing::debug!(radio = %self.io.radio, device = %ieee, step = ?step, attempt = attempts + 1, "interview step");
        let request = match &step {
            Step::NodeDesc => ZnpCommand::ZdoNodeDescReq {
                dst_addr: nwk,
                nwk_addr_of_interest: nwk,
            },
            Step::ActiveEp => ZnpCommand::ZdoActiveEpReq {
                dst_addr: nwk,
                nwk_addr_of_interest: nwk,
            },
            Step::SimpleDesc(ep) => ZnpCommand::ZdoSimpleDescReq {
                dst_addr: nwk,
                nwk_addr_of_interest: nwk,
                endpoint: *ep,
            },
            Step::Basic(ep) => self.zcl_request(
                nwk,
                *ep,
                cluster_id::BASIC,
                ZclFrame::read_attributes(tsn.unwrap_or(0), vec![0x0004, 0x0005, 0x0007, 0x4000]),
            )?,
            Step::Setup(Setup::Bind { ep, cluster }) => ZnpCommand::ZdoBindReq {
                dst_addr: nwk,
                src_ieee: ieee,
                src_endpoint: *ep,
                cluster_id: *cluster,
                target: BindTarget::Endpoint {
                    ieee: self.coordinator_ieee,
                    endpoint: OUR_ENDPOINT,
                },
            },
            Step::Setup(Setup::Configure {
                ep,
                cluster,
                records,
            }) => self.zcl_request(
                nwk,
                *ep,
                *cluster,
                ZclFrame::configure_reporting(tsn.unwrap_or(0), records.clone()),
            )?,
            Step::Setup(Setup::ReadAttrs { ep, cluster, attrs }) => self.zcl_request(
                nwk,
                *ep,
                *cluster,
                ZclFrame::read_attributes(tsn.unwrap_or(0), attrs.clone()),
            )?,
            Step::Setup(Setup::IasCie { ep }) => self.zcl_request(
                nwk,
                *ep,
                cluster_id::IAS_ZONE,
                ZclFrame::write_attributes(
                    tsn.unwrap_or(0),
                    vec![AttributeRecord {
                        attribute_id: 0x0010,
                        value: ZclValue::IeeeAddr(self.coordinator_ieee),
                    }],
                ),
            )?,
        };
        if let Err(fail) = self.request(&request).await? {
            tracing::debug!(radio = %self.io.radio, device = %ieee, error = %fail, "interview request not accepted; will retry");
        }
        Ok(())
    }

    pub(super) async fn retry_step(&mut self, ieee: IeeeAddr) -> Result<()> {
        let Some(dev) = self.devices.get_mut(&ieee) else {
            return Ok(());
        };
        let Some(w) = dev.waiting.take() else {
            return Ok(());
        };
        if w.attempts < self.opts.interview_attempts {
            return self.advance(ieee, w.attempts).await;
        }
        if let Step::Setup(_) = w.step {
            // Set-up is best effort: skip what the device will not do.
            tracing::warn!(radio = %self.io.radio, device = %ieee, step = ?w.step, "no answer to a reporting set-up step; skipped");
            dev.setup_done += 1;
            return self.advance(ieee, 0).await;
        }
        dev.stalled = true;
        dev.stalls = dev.stalls.saturating_add(1);
        let backoff = STALL_BACKOFF.delay(dev.stalls);
        dev.retry_at = Some(Instant::now() + backoff);
        tracing::info!(radio = %self.io.radio, device = %ieee, step = ?w.step, retry_in = ?backoff, "interview paused until the device speaks again (partial results kept)");
        Ok(())
    }

    /// The device sent something: a sleeping device is awake now, so ask again at once.
    pub(super) async fn device_spoke(&mut self, ieee: IeeeAddr) -> Result<()> {
        let Some(dev) = self.devices.get(&ieee) else {
            return Ok(());
        };
        let resend = dev.stalled
            || (!dev.rx_on_when_idle
                && dev
                    .waiting
                    .as_ref()
                    .is_some_and(|w| w.sent_at.elapsed() > Duration::from_millis(200)));
        if resend {
            tracing::debug!(radio = %self.io.radio, device = %ieee, "device awake: resuming its interview");
            self.advance(ieee, 0).await?;
        }
        Ok(())
    }

    /// The waiting step, if it is `pred`.
    pub(super) fn waiting_for(
        &self,
        nwk: u16,
        pred: impl Fn(&Waiting) -> bool,
    ) -> Option<IeeeAddr> {
        let ieee = self.ieee_of(nwk)?;
        let w = self.devices.get(&ieee)?.waiting.as_ref()?;
        pred(w).then_some(ieee)
    }

    pub(super) fn ieee_of(&self, nwk: u16) -> Option<IeeeAddr> {
        self.devices.values().find(|d| d.nwk == nwk).map(|d| d.ieee)
    }

    /// A step finished: record progress, report the interview when it completes, go on.
    pub(super) async fn step_done(&mut self, ieee: IeeeAddr) -> Result<()> {
        let Some(dev) = self.devices.get_mut(&ieee) else {
            return Ok(());
        };
        if let Some(Waiting {
            step: Step::Setup(_),
            ..
        }) = dev.waiting
        {
            dev.setup_done += 1;
        }
        dev.waiting = None;
        dev.stalls = 0;
        if dev.basic.is_some() && !dev.interviewed {
            dev.interviewed = true;
            dev.plan_setup();
            let info = dev.info();
            let native = dev.native();
            tracing::info!(radio = %self.io.radio, device = %native, manufacturer = ?info.manufacturer, model = ?info.model, "interview complete");
            self.emit(native, DeviceEventKind::Interviewed(info))
                .await?;
        }
        self.advance(ieee, 0).await
    }

    /// A ZCL frame from the device: if it answers the step its interview waits for, records
    /// what it says and goes on.
    pub(super) async fn interview_answer(
        &mut self,
        ieee: IeeeAddr,
        cluster: u16,
        frame: &ZclFrame,
    ) -> Result<()> {
        let Some(dev) = self.devices.get_mut(&ieee) else {
            return Ok(());
        };
        let Some(step) = dev
            .waiting
            .as_ref()
            .filter(|w| w.answered_by(cluster, frame))
            .map(|w| w.step.clone())
        else {
            return Ok(());
        };
        if let Step::Basic(_) = step {
            let basic = BasicInfo::from_frame(frame);
            dev.definition = self
                .catalog
                .find(basic.manufacturer.as_deref(), basic.model.as_deref());
            match &dev.definition {
                Some(d) => {
                    tracing::info!(radio = %self.io.radio, device = %ieee, model = %d.model, vendor = %d.vendor, origin = %d.origin, "device definition matched")
                }
                None => {
                    tracing::debug!(radio = %self.io.radio, device = %ieee, manufacturer = ?basic.manufacturer, model = ?basic.model, "no device definition: generic clusters only")
                }
            }
            dev.basic = Some(basic);
        }
        if let ZclCommand::ConfigureReportingRsp { failures } = &frame.command {
            if !failures.is_empty() {
                tracing::warn!(radio = %self.io.radio, device = %ieee, cluster, failures = failures.len(), "reporting not configured for every attribute");
            }
        }
        self.step_done(ieee).await
    }
}
