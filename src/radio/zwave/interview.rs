//! Interviews: what a node is (NIF, Manufacturer Specific, Version, Z-Wave Plus Info, its
//! sensor types and scales), and what it needs to report to us (the lifeline association
//! to the controller, its wake-up interval), then its battery level.
//!
//! One step at a time from [`Node::next_step`](super::nodes::Node::next_step). A step the
//! node does not answer is tried again; a sleeping node that stops answering keeps what it
//! answered and continues at the same step on its next Wake Up Notification (never from
//! the start: Z-Wave JS users have to wake battery devices again and again for that).
//! A listening node's step that stays unanswered is given up after `send_attempts` tries,
//! so one broken command class cannot stall the interview.

use anyhow::Result;
use fieldgate_zwave::cc::{
    id, Association, Battery, ManufacturerSpecific, MultilevelSensor, Version, WakeUp,
    ZwavePlusInfo,
};
use fieldgate_zwave::message::{ApplicationUpdate, Inbound as Decoded, Unsolicited};
use fieldgate_zwave::{Cc, DataFrame, Request};
use tokio::time::Instant;

use super::nodes::Step;
use super::{Controller, Sent};
use crate::model::DeviceEventKind;

/// What a node sent: source and command class, if the frame is a node's command.
pub(super) fn node_command(frame: &DataFrame) -> Option<(u8, Vec<u8>, Option<i8>)> {
    match Decoded::decode(frame).ok()? {
        Decoded::Unsolicited(Unsolicited::ApplicationCommand(c)) => {
            Some((c.source, c.payload, c.rssi))
        }
        Decoded::Unsolicited(Unsolicited::BridgeApplicationCommand(c)) => {
            Some((c.source, c.payload, c.rssi))
        }
        _ => None,
    }
}

impl Controller<'_> {
    /// The first node whose interview has a step to run and that can hear now.
    pub(super) fn interview_due(&self) -> Option<u8> {
        let now = Instant::now();
        self.nodes
            .values()
            .find(|n| n.next_step().is_some() && n.can_hear(now))
            .map(|n| n.id)
    }

    /// Runs node `node`'s interview from where it stopped, until it is complete or the node
    /// stops answering.
    pub(super) async fn interview(&mut self, node: u8) -> Result<()> {
        while let Some(step) = self.nodes.get(&node).and_then(|n| n.next_step()) {
            if self.restart_needed {
                return Ok(());
            }
            let answered = self.run_step(node, step).await?;
            // Being added: the controller may not have its protocol info yet, so it
            // reads as sleeping; it is read again once the inclusion is done.
            let being_added = self.window.as_ref().is_some_and(|w| w.node == Some(node));
            let Some(n) = self.nodes.get_mut(&node) else {
                return Ok(());
            };
            if answered {
                n.finish_step(step);
                self.keep_progress();
                continue;
            }
            n.failed_tries += 1;
            tracing::debug!(radio = %self.io.radio, node, step = step.name(), tries = n.failed_tries, "interview step not answered");
            if n.sleeps() {
                // Asleep again: continue at this step on its next wake-up.
                n.awake_until = None;
                if being_added {
                    tracing::debug!(radio = %self.io.radio, node, step = step.name(), "the node being added did not answer yet; its interview goes on once the inclusion is done");
                } else {
                    tracing::info!(radio = %self.io.radio, node, step = step.name(), "sleeping node stopped answering; the interview continues at its next wake-up");
                }
                self.keep_progress();
                return Ok(());
            }
            if n.failed_tries >= self.opts.send_attempts {
                tracing::warn!(radio = %self.io.radio, node, step = step.name(), "interview step given up after its tries");
                n.finish_step(step);
            }
        }
        let Some(n) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        if !n.reported {
            n.reported = true;
            let info = n.info();
            tracing::info!(radio = %self.io.radio, node, "interview complete");
            self.keep_progress();
            self.emit(node, DeviceEventKind::Interviewed(info)).await?;
        }
        Ok(())
    }

    /// One step; `true` when the node answered it.
    async fn run_step(&mut self, node: u8, step: Step) -> Result<bool> {
        let own = self.own_node_id;
        Ok(match step {
            Step::NodeInfo => {
                let req = Request::RequestNodeInfo { node_id: node };
                let update = match self.request(&req).await? {
                    Ok(a) => a.update,
                    Err(_) => None,
                };
                match update {
                    Some(Unsolicited::ApplicationUpdate(ApplicationUpdate::NodeInfoReceived(
                        info,
                    ))) if info.node_id == node => {
                        self.learn_nif(node, &info);
                        true
                    }
                    _ => false,
                }
            }
            Step::ManufacturerSpecific => {
                match self
                    .ask(node, Cc::ManufacturerSpecific(ManufacturerSpecific::Get))
                    .await?
                {
                    Some(Cc::ManufacturerSpecific(ManufacturerSpecific::Report {
                        manufacturer_id,
                        product_type,
                        product_id,
                    })) => {
                        self.with_node(node, |n| {
                            n.manufacturer = Some((manufacturer_id, product_type, product_id))
                        });
                        true
                    }
                    _ => false,
                }
            }
            Step::Version => match self.ask(node, Cc::Version(Version::Get)).await? {
                Some(Cc::Version(Version::Report { firmware, .. })) => {
                    let fw = firmware.first().copied();
                    self.with_node(node, |n| n.firmware = fw);
                    true
                }
                _ => false,
            },
            Step::ZwavePlusInfo => match self
                .ask(node, Cc::ZwavePlusInfo(ZwavePlusInfo::Get))
                .await?
            {
                Some(Cc::ZwavePlusInfo(ZwavePlusInfo::Report { role_type, .. })) => {
                    self.with_node(node, |n| n.role_type = Some(role_type));
                    true
                }
                _ => false,
            },
            Step::SensorTypes => {
                let get = Cc::MultilevelSensor(MultilevelSensor::GetSupportedSensor);
                let Some(Cc::MultilevelSensor(MultilevelSensor::SupportedSensorReport {
                    sensor_types,
                })) = self.ask(node, get).await?
                else {
                    return Ok(false);
                };
                let mut found = Vec::new();
                for sensor_type in sensor_types {
                    let get =
                        Cc::MultilevelSensor(MultilevelSensor::GetSupportedScale { sensor_type });
                    match self.ask(node, get).await? {
                        Some(Cc::MultilevelSensor(MultilevelSensor::SupportedScaleReport {
                            scales,
                            ..
                        })) => found.push((sensor_type, scales)),
                        _ => return Ok(false),
                    }
                }
                self.with_node(node, |n| n.sensor_types = found);
                true
            }
            Step::Lifeline => {
                let set = Cc::Association(Association::Set {
                    group: 1,
                    node_ids: vec![own],
                });
                matches!(self.send_cc(node, &set).await?, Sent::Delivered { .. })
            }
            Step::WakeUpInterval => {
                let seconds = u32::try_from(self.opts.wake_up_interval.as_secs()).unwrap_or(0);
                if seconds > 0 {
                    let set = Cc::WakeUp(WakeUp::IntervalSet {
                        seconds,
                        node_id: own,
                    });
                    if !matches!(self.send_cc(node, &set).await?, Sent::Delivered { .. }) {
                        return Ok(false);
                    }
                }
                match self.ask(node, Cc::WakeUp(WakeUp::IntervalGet)).await? {
                    Some(Cc::WakeUp(WakeUp::IntervalReport { seconds, .. })) => {
                        self.with_node(node, |n| n.wake_up_seconds = Some(seconds));
                        true
                    }
                    _ => false,
                }
            }
            Step::Battery => self.ask(node, Cc::Battery(Battery::Get)).await?.is_some(),
        })
    }

    fn with_node(&mut self, node: u8, f: impl FnOnce(&mut super::nodes::Node)) {
        if let Some(n) = self.nodes.get_mut(&node) {
            f(n);
        }
    }

    /// Takes a node's NIF: its device class and the command classes it supports.
    pub(super) fn learn_nif(&mut self, node: u8, info: &fieldgate_zwave::message::NodeInfo) {
        self.with_node(node, |n| {
            if info.device_class.is_some() {
                n.device_class = info.device_class;
            }
            n.set_command_classes(info.command_classes.supported.clone());
            n.mark_done(Step::NodeInfo);
        });
    }

    /// Sends a Get and waits for the node's report (the same class, the command after the
    /// Get's). The report is handled as any report too (its readings reach the hub).
    pub(super) async fn ask(&mut self, node: u8, get: Cc) -> Result<Option<Cc>> {
        let cc_id = get.cc_id();
        let Some(command) = get.command() else {
            return Ok(None);
        };
        // Every Get this driver sends is answered by the next command id (Get 04 → Report 05,
        // Version Get 11 → Report 12, Supported Scale 03 → 06 is the exception).
        let report = if cc_id == id::MULTILEVEL_SENSOR && command == 0x03 {
            0x06
        } else {
            command + 1
        };
        if !matches!(self.send_cc(node, &get).await?, Sent::Delivered { .. }) {
            return Ok(None);
        }
        let frame = self
            .link
            .wait_unsolicited(self.opts.report_timeout, move |d| {
                node_command(d).is_some_and(|(src, payload, _)| {
                    src == node
                        && Cc::decode(&payload)
                            .is_ok_and(|cc| cc.cc_id() == cc_id && cc.command() == Some(report))
                })
            })
            .await?;
        let Some((_, payload, rssi)) = frame.as_ref().and_then(node_command) else {
            return Ok(None);
        };
        let Ok(cc) = Cc::decode(&payload) else {
            return Ok(None);
        };
        // Boxed: a report may be a Wake Up Notification, which asks again.
        Box::pin(self.on_node_cc(node, &cc, rssi)).await?;
        Ok(Some(cc))
    }
}
