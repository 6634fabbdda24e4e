//! What the driver knows about each node, with no IO: protocol info, the command classes
//! from its NIF, what its interview learnt and which steps are done. It outlives a link
//! (the driver keeps it across re-opens), so an interview resumes where it stopped: a
//! battery node that fell asleep mid-interview continues at the next step when it wakes,
//! never from the start. `progress` keeps it across restarts of the daemon too.
//!
//! Must not send anything: the interview (`interview.rs`) asks it what to do next.

use std::collections::BTreeSet;

use fieldgate_zwave::cc::id;
use fieldgate_zwave::message::{DeviceClass, NodeProtocolInfo};
use tokio::time::Instant;

use crate::model::{DeviceInfo, PowerSource, Reachability};

/// One step of a node's interview, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Step {
    /// Its node information frame (the command classes it supports).
    NodeInfo,
    ManufacturerSpecific,
    Version,
    ZwavePlusInfo,
    /// Supported sensor types and their scales.
    SensorTypes,
    /// Group 1 (the lifeline) pointed at the controller, or no report ever arrives.
    Lifeline,
    /// The wake-up interval, and the controller as the node to notify.
    WakeUpInterval,
    Battery,
}

impl Step {
    const ORDER: [Step; 8] = [
        Step::NodeInfo,
        Step::ManufacturerSpecific,
        Step::Version,
        Step::ZwavePlusInfo,
        Step::SensorTypes,
        Step::Lifeline,
        Step::WakeUpInterval,
        Step::Battery,
    ];

    /// The command class a step needs (`None`: every node).
    fn needs(self) -> Option<u16> {
        match self {
            Step::NodeInfo => None,
            Step::ManufacturerSpecific => Some(id::MANUFACTURER_SPECIFIC),
            Step::Version => Some(id::VERSION),
            Step::ZwavePlusInfo => Some(id::ZWAVE_PLUS_INFO),
            Step::SensorTypes => Some(id::MULTILEVEL_SENSOR),
            Step::Lifeline => Some(id::ASSOCIATION),
            Step::WakeUpInterval => Some(id::WAKE_UP),
            Step::Battery => Some(id::BATTERY),
        }
    }

    pub(super) fn from_name(name: &str) -> Option<Step> {
        Step::ORDER.into_iter().find(|s| s.name() == name)
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Step::NodeInfo => "node_info",
            Step::ManufacturerSpecific => "manufacturer_specific",
            Step::Version => "version",
            Step::ZwavePlusInfo => "zwave_plus_info",
            Step::SensorTypes => "sensor_types",
            Step::Lifeline => "lifeline",
            Step::WakeUpInterval => "wake_up_interval",
            Step::Battery => "battery",
        }
    }
}

/// One node of the controller's network.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub id: u8,
    pub protocol: Option<NodeProtocolInfo>,
    pub device_class: Option<DeviceClass>,
    /// Supported command classes, from its NIF (set with [`Node::set_command_classes`]).
    command_classes: Vec<u16>,
    pub manufacturer: Option<(u16, u16, u16)>,
    pub firmware: Option<(u8, u8)>,
    /// Z-Wave Plus role type (5 always on, 6 sleeping reporting, 7 sleeping listening).
    pub role_type: Option<u8>,
    pub sensor_types: Vec<(u8, Vec<u8>)>,
    pub wake_up_seconds: Option<u32>,
    /// The switch state it last reported (what a toggle inverts).
    pub on: Option<bool>,
    /// Steps done (or given up after their tries, see `failed`); changed only through
    /// [`Node::finish_step`] and [`Node::set_done`].
    done: BTreeSet<Step>,
    /// The next step, kept from `done` and `command_classes` whenever they change: the
    /// driver asks for every node's after every frame it reads.
    next: Option<Step>,
    /// Tries of the current step that got no answer (reset when a step finishes).
    pub failed_tries: u32,
    /// The interview's result was reported to the hub.
    pub reported: bool,
    /// The hub was told the node joined (after its inclusion, or in a join window).
    pub announced: bool,
    /// Awake after a Wake Up Notification until then (requests held for it flow now).
    pub awake_until: Option<Instant>,
}

impl Node {
    pub(super) fn new(id: u8) -> Self {
        Self {
            id,
            protocol: None,
            device_class: None,
            command_classes: Vec::new(),
            manufacturer: None,
            firmware: None,
            role_type: None,
            sensor_types: Vec::new(),
            wake_up_seconds: None,
            on: None,
            done: BTreeSet::new(),
            next: Some(Step::ORDER[0]),
            failed_tries: 0,
            reported: false,
            announced: false,
            awake_until: None,
        }
    }

    pub(super) fn supports(&self, cc: u16) -> bool {
        self.command_classes.contains(&cc)
    }

    /// Its command classes are known (its NIF was heard).
    pub(super) fn described(&self) -> bool {
        !self.command_classes.is_empty()
    }

    /// Battery devices that are neither listening nor FLiRS hear only after a wake-up.
    pub(super) fn sleeps(&self) -> bool {
        self.protocol.as_ref().is_some_and(|p| p.is_sleeping())
    }

    pub(super) fn reachability(&self) -> Reachability {
        if self.sleeps() {
            Reachability::WakeUp
        } else {
            Reachability::AlwaysListening
        }
    }

    /// Whether a frame sent now is heard.
    pub(super) fn can_hear(&self, now: Instant) -> bool {
        !self.sleeps() || self.awake_until.is_some_and(|t| now < t)
    }

    /// The next interview step to run, `None` when the interview is complete.
    pub(super) fn next_step(&self) -> Option<Step> {
        self.next
    }

    fn refresh_next(&mut self) {
        self.next = Step::ORDER
            .into_iter()
            .find(|s| !self.done.contains(s) && s.needs().is_none_or(|cc| self.supports(cc)));
    }

    pub(super) fn finish_step(&mut self, step: Step) {
        self.mark_done(step);
        self.failed_tries = 0;
    }

    /// A step found done outside the interview (a NIF that came unasked).
    pub(super) fn mark_done(&mut self, step: Step) {
        self.done.insert(step);
        self.refresh_next();
    }

    pub(super) fn command_classes(&self) -> &[u16] {
        &self.command_classes
    }

    pub(super) fn set_command_classes(&mut self, ccs: Vec<u16>) {
        self.command_classes = ccs;
        self.refresh_next();
    }

    pub(super) fn done(&self) -> &BTreeSet<Step> {
        &self.done
    }

    pub(super) fn set_done(&mut self, done: BTreeSet<Step>) {
        self.done = done;
        self.refresh_next();
    }

    /// What the hub is told about the node.
    pub(super) fn info(&self) -> DeviceInfo {
        let mut capabilities: Vec<String> = self
            .command_classes
            .iter()
            .filter_map(|cc| cc_capability(*cc))
            .map(str::to_string)
            .collect();
        capabilities.sort();
        capabilities.dedup();
        let power = if self.supports(id::BATTERY) || self.sleeps() {
            PowerSource::Battery
        } else if self.protocol.is_some() {
            PowerSource::Mains
        } else {
            PowerSource::Unknown
        };
        DeviceInfo {
            manufacturer: self.manufacturer.map(|(m, _, _)| format!("0x{m:04x}")),
            model: self
                .manufacturer
                .map(|(_, t, p)| format!("0x{t:04x}:0x{p:04x}")),
            firmware: self.firmware.map(|(a, b)| format!("{a}.{b}")),
            power_source: Some(power),
            capabilities,
            reachability: Some(self.reachability()),
            silence: None,
        }
    }
}

/// The capability a command class gives a device, as the hub lists it.
fn cc_capability(cc: u16) -> Option<&'static str> {
    Some(match cc {
        id::BINARY_SWITCH => "binary_switch",
        id::MULTILEVEL_SWITCH => "multilevel_switch",
        id::MULTILEVEL_SENSOR => "multilevel_sensor",
        id::METER => "meter",
        id::NOTIFICATION => "notification",
        id::BATTERY => "battery",
        id::WAKE_UP => "wake_up",
        id::CONFIGURATION => "configuration",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next step is kept as the node changes (it is asked for after every frame,
    /// not worked out each time): a command class learnt later reopens its step.
    #[test]
    fn the_next_step_follows_what_the_node_supports_and_has_done() {
        let mut n = Node::new(9);
        assert_eq!(n.next_step(), Some(Step::NodeInfo));
        n.set_command_classes(vec![id::MANUFACTURER_SPECIFIC]);
        n.mark_done(Step::NodeInfo);
        assert_eq!(n.next_step(), Some(Step::ManufacturerSpecific));
        n.finish_step(Step::ManufacturerSpecific);
        assert_eq!(n.next_step(), None, "nothing else it supports");
        n.set_command_classes(vec![id::MANUFACTURER_SPECIFIC, id::MULTILEVEL_SENSOR]);
        assert_eq!(n.next_step(), Some(Step::SensorTypes));
        n.set_done(Step::ORDER.into_iter().collect());
        assert_eq!(n.next_step(), None);
        n.set_done(BTreeSet::new());
        assert_eq!(n.next_step(), Some(Step::NodeInfo));
    }

    fn sleeper() -> Node {
        let mut n = Node::new(5);
        n.protocol = Some(NodeProtocolInfo {
            capability: 0x53,
            security: 0x1C,
            reserved: 0,
            device_class: DeviceClass {
                basic: 4,
                generic: 7,
                specific: 1,
            },
        });
        n.set_command_classes(vec![
            id::MANUFACTURER_SPECIFIC,
            id::WAKE_UP,
            id::BATTERY,
            id::MULTILEVEL_SENSOR,
        ]);
        n
    }

    #[test]
    fn the_interview_runs_only_the_steps_the_node_supports_and_resumes_where_it_stopped() {
        let mut n = sleeper();
        assert!(n.sleeps());
        assert_eq!(n.reachability(), Reachability::WakeUp);
        assert_eq!(n.next_step(), Some(Step::NodeInfo));
        n.finish_step(Step::NodeInfo);
        n.finish_step(Step::ManufacturerSpecific);
        // Version and Z-Wave Plus Info are not supported: skipped.
        assert_eq!(n.next_step(), Some(Step::SensorTypes));
        n.finish_step(Step::SensorTypes);
        // The node falls asleep here; the driver keeps it, and its next wake-up continues.
        let kept = n.clone();
        assert_eq!(kept.next_step(), Some(Step::WakeUpInterval));
        n.finish_step(Step::WakeUpInterval);
        n.finish_step(Step::Battery);
        assert_eq!(n.next_step(), None);
        let info = n.info();
        assert_eq!(info.power_source, Some(PowerSource::Battery));
        assert_eq!(
            info.capabilities,
            ["battery", "multilevel_sensor", "wake_up"]
        );
    }

    #[test]
    fn a_sleeping_node_hears_only_while_awake() {
        let mut n = sleeper();
        let now = Instant::now();
        assert!(!n.can_hear(now));
        n.awake_until = Some(now + std::time::Duration::from_secs(1));
        assert!(n.can_hear(now));
        assert!(!n.can_hear(now + std::time::Duration::from_secs(2)));
    }
}
