//! What the driver knows about a device and what it still has to ask: descriptors, Basic
//! cluster facts, the interview steps and the reporting set-up planned from the clusters the
//! device serves, and what a refresh reads.
//!
//! Pure state (no IO, no async): the conversation that fills it in is `interview` and
//! `indications`. Survives link re-opens (the driver keeps it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fieldgate_zigbee::zcl::clusters::{self, id as cluster_id, ScalingContext};
use fieldgate_zigbee::zcl::{DataType, ReportingConfig, ZclCommand, ZclFrame, ZclValue};
use fieldgate_zigbee::znp::{NodeDescriptor, SimpleDescriptor};
use fieldgate_zigbee::IeeeAddr;
use tokio::time::Instant;

use super::definitions::Definition;
use crate::model::{DeviceInfo, PowerSource, Reachability};

/// One step of an interview or of the reporting set-up after it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    NodeDesc,
    ActiveEp,
    SimpleDesc(u8),
    Basic(u8),
    Setup(Setup),
}

/// Reporting set-up for the clusters this driver knows.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Setup {
    Bind {
        ep: u8,
        cluster: u16,
    },
    Configure {
        ep: u8,
        cluster: u16,
        records: Vec<ReportingConfig>,
    },
    ReadAttrs {
        ep: u8,
        cluster: u16,
        attrs: Vec<u16>,
    },
    /// Write our IEEE address as the zone's CIE address; the zone then asks to enroll.
    IasCie {
        ep: u8,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Waiting {
    pub(super) step: Step,
    pub(super) tsn: Option<u8>,
    pub(super) sent_at: Instant,
    pub(super) deadline: Instant,
    pub(super) attempts: u32,
}

impl Waiting {
    /// Whether a ZCL frame received on `cluster` answers the step waited for (same
    /// transaction sequence number, the response that step asks for, or a default response).
    pub(super) fn answered_by(&self, cluster: u16, frame: &ZclFrame) -> bool {
        self.tsn == Some(frame.header.tsn)
            && match (&self.step, &frame.command) {
                (Step::Basic(_), ZclCommand::ReadAttributesRsp { .. }) => {
                    cluster == cluster_id::BASIC
                }
                (
                    Step::Setup(Setup::ReadAttrs { cluster: c, .. }),
                    ZclCommand::ReadAttributesRsp { .. },
                )
                | (
                    Step::Setup(Setup::Configure { cluster: c, .. }),
                    ZclCommand::ConfigureReportingRsp { .. },
                ) => *c == cluster,
                (Step::Setup(Setup::IasCie { .. }), ZclCommand::WriteAttributesRsp { .. }) => {
                    cluster == cluster_id::IAS_ZONE
                }
                (_, ZclCommand::DefaultRsp { .. }) => !matches!(
                    self.step,
                    Step::NodeDesc | Step::ActiveEp | Step::SimpleDesc(_)
                ),
                _ => false,
            }
    }
}

/// What the driver knows about one device. Survives link re-opens (it lives in the driver).
#[derive(Debug, Clone)]
pub(super) struct Device {
    pub(super) ieee: IeeeAddr,
    pub(super) nwk: u16,
    pub(super) rx_on_when_idle: bool,
    pub(super) node: Option<NodeDescriptor>,
    pub(super) endpoints: Option<Vec<u8>>,
    pub(super) simple: BTreeMap<u8, SimpleDescriptor>,
    pub(super) basic: Option<BasicInfo>,
    pub(super) setup: Vec<Setup>,
    pub(super) setup_done: usize,
    pub(super) waiting: Option<Waiting>,
    /// Out of attempts: waits for the device to speak, or for `retry_at`.
    pub(super) stalled: bool,
    /// Stalls in a row, for the backoff of `retry_at`.
    pub(super) stalls: u32,
    pub(super) retry_at: Option<Instant>,
    pub(super) interviewed: bool,
    pub(super) scaling: HashMap<u8, ScalingContext>,
    /// The device definition its Basic cluster manufacturer name and model id matched.
    pub(super) definition: Option<Arc<Definition>>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct BasicInfo {
    pub(super) manufacturer: Option<String>,
    pub(super) model: Option<String>,
    pub(super) sw_build: Option<String>,
    pub(super) power_source: Option<u8>,
}

impl BasicInfo {
    /// What a read of the Basic cluster's manufacturer, model, power source and software
    /// build answered.
    pub(super) fn from_frame(frame: &ZclFrame) -> Self {
        let mut info = BasicInfo::default();
        for (attr, value) in frame.attribute_values() {
            match attr {
                0x0004 => info.manufacturer = value.as_text(),
                0x0005 => info.model = value.as_text(),
                0x4000 => info.sw_build = value.as_text(),
                0x0007 => info.power_source = value.as_i64().and_then(|v| u8::try_from(v).ok()),
                _ => {}
            }
        }
        info
    }
}

impl Device {
    pub(super) fn new(ieee: IeeeAddr, nwk: u16) -> Self {
        Self {
            ieee,
            nwk,
            rx_on_when_idle: true,
            node: None,
            endpoints: None,
            simple: BTreeMap::new(),
            basic: None,
            setup: Vec::new(),
            setup_done: 0,
            waiting: None,
            stalled: false,
            stalls: 0,
            retry_at: None,
            interviewed: false,
            scaling: HashMap::new(),
            definition: None,
        }
    }

    pub(super) fn native(&self) -> String {
        self.ieee.to_string()
    }

    /// The next thing to ask, or `None` when interview and set-up are complete.
    pub(super) fn next_step(&self) -> Option<Step> {
        if self.node.is_none() {
            return Some(Step::NodeDesc);
        }
        let Some(eps) = &self.endpoints else {
            return Some(Step::ActiveEp);
        };
        if let Some(ep) = eps.iter().find(|ep| !self.simple.contains_key(ep)) {
            return Some(Step::SimpleDesc(*ep));
        }
        if self.basic.is_none() {
            return Some(Step::Basic(
                self.endpoint_with(cluster_id::BASIC).unwrap_or(1),
            ));
        }
        self.setup.get(self.setup_done).cloned().map(Step::Setup)
    }

    pub(super) fn endpoint_with(&self, cluster: u16) -> Option<u8> {
        self.simple
            .values()
            .find(|d| d.in_clusters.contains(&cluster))
            .map(|d| d.endpoint)
    }

    pub(super) fn power_source(&self) -> Option<PowerSource> {
        let from_basic = self
            .basic
            .as_ref()
            .and_then(|b| b.power_source)
            .map(|p| match p & 0x7F {
                3 => PowerSource::Battery,
                1 | 2 | 4 | 5 | 6 => PowerSource::Mains,
                _ => PowerSource::Unknown,
            });
        let from_node = self.node.as_ref().map(|n| {
            if n.mac_capabilities.mains_powered() {
                PowerSource::Mains
            } else {
                PowerSource::Battery
            }
        });
        match from_basic {
            Some(PowerSource::Unknown) | None => from_node.or(from_basic),
            known => known,
        }
    }

    pub(super) fn info(&self) -> DeviceInfo {
        let basic = self.basic.clone().unwrap_or_default();
        let mut capabilities: Vec<String> = self
            .simple
            .values()
            .flat_map(|d| d.in_clusters.iter())
            .filter(|c| **c != cluster_id::BASIC)
            .filter_map(|c| clusters::cluster(*c).map(|d| d.name.to_string()))
            .collect();
        capabilities.sort();
        capabilities.dedup();
        DeviceInfo {
            manufacturer: basic.manufacturer,
            model: basic.model,
            firmware: basic.sw_build,
            power_source: self.power_source(),
            capabilities,
            // An end device that is not rx-on-when-idle polls its parent: it hears
            // only while awake.
            reachability: Some(if self.rx_on_when_idle {
                Reachability::AlwaysListening
            } else {
                Reachability::WakeUp
            }),
            silence: None,
        }
    }

    /// Reporting set-up for every known cluster the device serves.
    pub(super) fn plan_setup(&mut self) {
        let mut plan = Vec::new();
        for d in self.simple.values() {
            let ep = d.endpoint;
            for cluster in &d.in_clusters {
                plan.extend(setup_for(ep, *cluster));
            }
        }
        self.setup = plan;
        self.setup_done = 0;
    }
}

pub(super) fn report(
    attribute_id: u16,
    data_type: DataType,
    change: Option<ZclValue>,
) -> ReportingConfig {
    ReportingConfig::Send {
        attribute_id,
        data_type,
        min_interval: 5,
        max_interval: 300,
        reportable_change: change,
    }
}

pub(super) fn setup_for(ep: u8, cluster: u16) -> Vec<Setup> {
    use cluster_id as c;
    let uint = |width: u8, value: u64| Some(ZclValue::Uint { width, value });
    let int = |width: u8, value: i64| Some(ZclValue::Int { width, value });
    let records = match cluster {
        c::POWER_CONFIG => vec![report(0x0021, DataType::UINT8, uint(1, 2))],
        c::ON_OFF => vec![report(0x0000, DataType::BOOL, None)],
        c::LEVEL_CONTROL => vec![report(0x0000, DataType::UINT8, uint(1, 1))],
        c::TEMPERATURE => vec![report(0x0000, DataType::INT16, int(2, 10))],
        c::HUMIDITY => vec![report(0x0000, DataType::UINT16, uint(2, 100))],
        c::PRESSURE => vec![report(0x0000, DataType::INT16, int(2, 1))],
        c::ILLUMINANCE => vec![report(0x0000, DataType::UINT16, uint(2, 500))],
        c::OCCUPANCY => vec![report(0x0000, DataType::BITMAP8, None)],
        c::METERING => vec![
            report(0x0000, DataType::UINT48, uint(6, 1)),
            report(0x0400, DataType::INT24, int(3, 1)),
        ],
        c::ELECTRICAL_MEASUREMENT => vec![
            report(0x0505, DataType::UINT16, uint(2, 10)),
            report(0x0508, DataType::UINT16, uint(2, 10)),
            report(0x050B, DataType::INT16, int(2, 10)),
        ],
        c::IAS_ZONE => return vec![Setup::IasCie { ep }],
        _ => return Vec::new(),
    };
    let mut plan = Vec::new();
    // Multiplier/divisor first, so the first report is already scaled right.
    match cluster {
        c::METERING => plan.push(Setup::ReadAttrs {
            ep,
            cluster,
            attrs: vec![0x0301, 0x0302],
        }),
        c::ELECTRICAL_MEASUREMENT => plan.push(Setup::ReadAttrs {
            ep,
            cluster,
            attrs: vec![0x0600, 0x0601, 0x0602, 0x0603, 0x0604, 0x0605],
        }),
        _ => {}
    }
    plan.push(Setup::Bind { ep, cluster });
    plan.push(Setup::Configure {
        ep,
        cluster,
        records,
    });
    plan
}

/// What a refresh reads: per endpoint and cluster, the attributes reporting is set up for
/// (and an IAS zone's status).
pub(super) fn refresh_plan(dev: &Device) -> Vec<(u8, u16, Vec<u16>)> {
    let mut plan = Vec::new();
    for d in dev.simple.values() {
        for cluster in &d.in_clusters {
            if *cluster == cluster_id::IAS_ZONE {
                plan.push((d.endpoint, *cluster, vec![0x0002]));
                continue;
            }
            for step in setup_for(d.endpoint, *cluster) {
                if let Setup::Configure { records, .. } = step {
                    let attrs: Vec<u16> = records
                        .iter()
                        .filter_map(|r| match r {
                            ReportingConfig::Send { attribute_id, .. } => Some(*attribute_id),
                            _ => None,
                        })
                        .collect();
                    if !attrs.is_empty() {
                        plan.push((d.endpoint, *cluster, attrs));
                    }
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldgate_zigbee::znp::SimpleDescriptor;

    fn waiting(step: Step, tsn: u8) -> Waiting {
        let now = Instant::now();
        Waiting {
            step,
            tsn: Some(tsn),
            sent_at: now,
            deadline: now,
            attempts: 1,
        }
    }

    #[test]
    fn a_step_is_answered_by_its_own_response_only() {
        // Read Attributes Response on Basic, tsn 7: model id "plug".
        let rsp = ZclFrame::decode(
            cluster_id::BASIC,
            &[
                0x18, 0x07, 0x01, 0x05, 0x00, 0x00, 0x42, 0x04, b'p', b'l', b'u', b'g',
            ],
        )
        .unwrap();
        assert!(waiting(Step::Basic(1), 7).answered_by(cluster_id::BASIC, &rsp));
        assert!(!waiting(Step::Basic(1), 8).answered_by(cluster_id::BASIC, &rsp));
        assert!(!waiting(Step::Basic(1), 7).answered_by(cluster_id::ON_OFF, &rsp));
        let read = Step::Setup(Setup::ReadAttrs {
            ep: 1,
            cluster: cluster_id::METERING,
            attrs: vec![0x0301],
        });
        assert!(!waiting(read, 7).answered_by(cluster_id::BASIC, &rsp));
        // A default response ends any ZCL step, never a ZDO one.
        let default =
            ZclFrame::decode(cluster_id::ON_OFF, &[0x18, 0x07, 0x0B, 0x06, 0x00]).unwrap();
        assert!(waiting(Step::Basic(1), 7).answered_by(cluster_id::ON_OFF, &default));
        assert!(!waiting(Step::ActiveEp, 7).answered_by(cluster_id::ON_OFF, &default));
        assert_eq!(BasicInfo::from_frame(&rsp).model.as_deref(), Some("plug"));
    }

    #[test]
    fn metering_reads_its_scaling_before_it_reports() {
        let plan = setup_for(2, cluster_id::METERING);
        assert!(matches!(
            plan.as_slice(),
            [
                Setup::ReadAttrs { attrs, .. },
                Setup::Bind { ep: 2, .. },
                Setup::Configure { .. }
            ] if attrs == &[0x0301, 0x0302]
        ));
        assert!(matches!(
            setup_for(3, cluster_id::IAS_ZONE).as_slice(),
            [Setup::IasCie { ep: 3 }]
        ));
        assert!(setup_for(1, 0xFC00).is_empty());
    }

    #[test]
    fn a_refresh_reads_what_reports_are_set_up_for() {
        let mut dev = Device::new(IeeeAddr(1), 0x1234);
        assert_eq!(dev.next_step(), Some(Step::NodeDesc));
        dev.simple.insert(
            1,
            SimpleDescriptor {
                endpoint: 1,
                profile_id: 0x0104,
                device_id: 0x0402,
                device_version: 0,
                in_clusters: vec![
                    cluster_id::BASIC,
                    cluster_id::TEMPERATURE,
                    cluster_id::IAS_ZONE,
                ],
                out_clusters: vec![],
            },
        );
        assert_eq!(
            refresh_plan(&dev),
            vec![
                (1, cluster_id::TEMPERATURE, vec![0x0000]),
                (1, cluster_id::IAS_ZONE, vec![0x0002]),
            ]
        );
    }
}
