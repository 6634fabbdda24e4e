//! The emulated end nodes: what each kind is (protocol info, NIF, command classes and their
//! versions), the state its command classes expose, and the answers it gives to the
//! commands the host sends it. No timing and no Serial API here: the emulator decides when
//! a node can hear and when its answers reach the host.
//!
//! Layouts: zwave-js `packages/cc/src/cc/*CC.ts` (named per command class below) and the
//! Z-Wave Application Command Class specification. Every answer is built from raw bytes so
//! that it is exactly what a device sends, and the emulator's tests decode it with this
//! crate's own [`crate::cc::Cc`].

use std::collections::BTreeMap;

/// The home id of the default network (the committed NVM image carries the same one).
pub const HOME_ID: u32 = 0xFA11_6A7E;
/// The controller's own node id.
pub const CONTROLLER_NODE_ID: u8 = 1;
/// Manufacturer id the emulated nodes report (0xFFFF: "not a registered manufacturer", so
/// host stacks load no device-specific configuration or quirks for them).
pub const MANUFACTURER_ID: u16 = 0xFFFF;
/// Most node ids one Association group (the lifeline) holds.
pub const LIFELINE_CAPACITY: u8 = 5;

/// Command class ids the nodes implement.
pub mod cc_id {
    pub const NO_OPERATION: u8 = 0x00;
    pub const BASIC: u8 = 0x20;
    pub const BINARY_SWITCH: u8 = 0x25;
    pub const MULTILEVEL_SWITCH: u8 = 0x26;
    pub const MULTILEVEL_SENSOR: u8 = 0x31;
    pub const METER: u8 = 0x32;
    pub const ZWAVE_PLUS_INFO: u8 = 0x5E;
    pub const SUPERVISION: u8 = 0x6C;
    pub const CONFIGURATION: u8 = 0x70;
    pub const NOTIFICATION: u8 = 0x71;
    pub const MANUFACTURER_SPECIFIC: u8 = 0x72;
    pub const BATTERY: u8 = 0x80;
    pub const WAKE_UP: u8 = 0x84;
    pub const ASSOCIATION: u8 = 0x85;
    pub const VERSION: u8 = 0x86;
}

/// Multilevel Sensor types used here.
pub mod sensor {
    pub const AIR_TEMPERATURE: u8 = 0x01;
    pub const ILLUMINANCE: u8 = 0x03;
    pub const HUMIDITY: u8 = 0x05;
}

/// Notification type Access Control and its door events.
pub const NOTIFICATION_ACCESS_CONTROL: u8 = 0x06;
pub const EVENT_DOOR_OPEN: u8 = 0x16;
pub const EVENT_DOOR_CLOSED: u8 = 0x17;

/// What an emulated node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// Mains-powered plug: Binary Switch + Meter (electric, kWh and W). Always listening.
    SwitchMeter,
    /// Mains-powered multisensor: temperature, humidity, illuminance. Always listening.
    Multisensor,
    /// Door sensor: Notification (Access Control, door open / closed). Always listening.
    DoorSensor,
    /// Battery temperature sensor that sleeps: Wake Up + Battery + Multilevel Sensor. Hears
    /// nothing while asleep; its readings wait for its next wake-up.
    BatterySensor,
    /// Battery lock-like switch that is a FLiRS (frequently listening, 1000 ms beam): Binary
    /// Switch + Battery. Reachable at any time, each frame after a wake-up beam.
    FlirsSwitch,
    /// Mains-powered dimmer: Multilevel Switch v1 (0-99, 0xFF = the last level). Always
    /// listening. Not in the default network; `--nodes` or a test adds it.
    Dimmer,
}

impl NodeKind {
    /// The kinds of the default network, one node each.
    pub const DEFAULT: [NodeKind; 5] = [
        Self::SwitchMeter,
        Self::Multisensor,
        Self::DoorSensor,
        Self::BatterySensor,
        Self::FlirsSwitch,
    ];

    pub const ALL: [NodeKind; 6] = [
        Self::SwitchMeter,
        Self::Multisensor,
        Self::DoorSensor,
        Self::BatterySensor,
        Self::FlirsSwitch,
        Self::Dimmer,
    ];

    /// The name `fieldgate emulate zwave --nodes` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::SwitchMeter => "switch-meter",
            Self::Multisensor => "multisensor",
            Self::DoorSensor => "door",
            Self::BatterySensor => "battery-sensor",
            Self::FlirsSwitch => "flirs-switch",
            Self::Dimmer => "dimmer",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn is_listening(self) -> bool {
        matches!(
            self,
            Self::SwitchMeter | Self::Multisensor | Self::DoorSensor | Self::Dimmer
        )
    }

    pub fn is_flirs(self) -> bool {
        self == Self::FlirsSwitch
    }

    pub fn sleeps(self) -> bool {
        self == Self::BatterySensor
    }

    /// Basic, generic and specific device class.
    pub fn device_class(self) -> [u8; 3] {
        match self {
            // Routing end node; Binary Switch / Power Switch Binary.
            Self::SwitchMeter | Self::FlirsSwitch => [0x04, 0x10, 0x01],
            // Routing end node; Multilevel Sensor / Routing Multilevel Sensor.
            Self::Multisensor | Self::BatterySensor => [0x04, 0x21, 0x01],
            // Routing end node; Notification Sensor.
            Self::DoorSensor => [0x04, 0x07, 0x01],
            // Routing end node; Multilevel Switch / Power Switch Multilevel.
            Self::Dimmer => [0x04, 0x11, 0x01],
        }
    }

    /// The three protocol info bytes of GetNodeProtocolInfo (zwave-js
    /// `core/src/definitions/NodeInfo.ts: parseNodeProtocolInfo`): routing, 9.6/40 kbit/s,
    /// protocol version 3; optional functionality, beaming, specific class, end node; 100
    /// kbit/s. Listening sets bit 7 of byte 0; FLiRS 1000 ms sets bit 6 of byte 1.
    pub fn protocol_info(self) -> [u8; 3] {
        let b0 = if self.is_listening() { 0xDB } else { 0x5B };
        let b1 = if self.is_flirs() { 0xDC } else { 0x9C };
        [b0, b1, 0x01]
    }

    /// Supported command classes and their versions, in NIF order.
    pub fn command_classes(self) -> Vec<(u8, u8)> {
        use cc_id::*;
        let mut ccs = vec![
            (ZWAVE_PLUS_INFO, 2),
            (VERSION, 2),
            (MANUFACTURER_SPECIFIC, 2),
            (ASSOCIATION, 2),
            (CONFIGURATION, 1),
            (SUPERVISION, 1),
        ];
        ccs.extend_from_slice(match self {
            Self::SwitchMeter => &[(BINARY_SWITCH, 2), (METER, 3)][..],
            Self::Multisensor => &[(MULTILEVEL_SENSOR, 5)][..],
            Self::DoorSensor => &[(NOTIFICATION, 4)][..],
            Self::BatterySensor => &[(MULTILEVEL_SENSOR, 5), (BATTERY, 1), (WAKE_UP, 2)][..],
            Self::FlirsSwitch => &[(BINARY_SWITCH, 2), (BATTERY, 1)][..],
            Self::Dimmer => &[(MULTILEVEL_SWITCH, 1)][..],
        });
        ccs
    }

    /// The NIF body: basic, generic, specific, then the supported command classes.
    pub fn node_info(self) -> Vec<u8> {
        let mut nif = self.device_class().to_vec();
        nif.extend(self.command_classes().into_iter().map(|(cc, _)| cc));
        nif
    }

    /// Z-Wave Plus role type: 5 always on, 6 sleeping reporting, 7 sleeping listening.
    fn role_type(self) -> u8 {
        if self.is_listening() {
            0x05
        } else if self.is_flirs() {
            0x07
        } else {
            0x06
        }
    }

    fn product_type(self) -> u16 {
        match self {
            Self::SwitchMeter => 0x0001,
            Self::Multisensor => 0x0002,
            Self::DoorSensor => 0x0003,
            Self::BatterySensor => 0x0004,
            Self::FlirsSwitch => 0x0005,
            Self::Dimmer => 0x0006,
        }
    }

    /// Supported Multilevel Sensor types with (scale, precision, size).
    fn sensors(self) -> &'static [(u8, u8, u8, u8)] {
        match self {
            Self::Multisensor => &[
                (sensor::AIR_TEMPERATURE, 0, 1, 2),
                (sensor::ILLUMINANCE, 1, 0, 2),
                (sensor::HUMIDITY, 0, 0, 1),
            ],
            Self::BatterySensor => &[(sensor::AIR_TEMPERATURE, 0, 1, 2)],
            _ => &[],
        }
    }
}

/// Wake Up interval limits the battery sensor reports (seconds).
pub const WAKE_UP_MIN: u32 = 30;
pub const WAKE_UP_MAX: u32 = 86_400;
pub const WAKE_UP_DEFAULT: u32 = 3_600;
pub const WAKE_UP_STEP: u32 = 30;

/// One emulated node and the state its command classes expose.
#[derive(Debug, Clone)]
pub struct VirtualNode {
    pub id: u8,
    pub kind: NodeKind,
    /// Binary Switch state (0x00 off / 0xFF on).
    pub switch: u8,
    /// Multilevel Switch level, 0-99, and the last level other than 0 (for 0xFF).
    pub level: u8,
    pub last_level: u8,
    /// Meter readings: energy in 0.01 kWh, power in 0.1 W.
    pub energy_centi_kwh: i32,
    pub power_deci_w: i32,
    /// Temperature in 0.1 °C, humidity in %, illuminance in lux.
    pub temperature_deci_c: i32,
    pub humidity: i32,
    pub illuminance: i32,
    pub door_open: bool,
    pub battery: u8,
    /// Wake Up interval (seconds) and the node it notifies (0: broadcast).
    pub wake_up_interval: u32,
    pub wake_up_target: u8,
    /// Association group 1 (lifeline): where unsolicited reports go.
    pub lifeline: Vec<u8>,
    /// Configuration parameters: number -> (size, value).
    pub parameters: BTreeMap<u8, (u8, i32)>,
    /// How many periodic reports it has made (drives the changing values).
    pub reports_made: u32,
}

impl VirtualNode {
    /// A node as it leaves the factory (no lifeline, default values).
    pub fn new(id: u8, kind: NodeKind) -> Self {
        let mut parameters = BTreeMap::new();
        // 1: report interval in seconds (2 bytes); 2: a one-byte option (e.g. LED mode).
        parameters.insert(1, (2, 300));
        parameters.insert(2, (1, 1));
        Self {
            id,
            kind,
            switch: 0x00,
            level: 0,
            last_level: 99,
            energy_centi_kwh: 1_250,
            power_deci_w: 0,
            temperature_deci_c: 215,
            humidity: 45,
            illuminance: 120,
            door_open: false,
            battery: 90,
            wake_up_interval: WAKE_UP_DEFAULT,
            wake_up_target: 0,
            lifeline: Vec::new(),
            parameters,
            reports_made: 0,
        }
    }

    /// A node already included and configured by a controller (lifeline and wake-up target
    /// set to it), as the nodes of the default network are.
    pub fn configured(id: u8, kind: NodeKind) -> Self {
        let mut node = Self::new(id, kind);
        node.lifeline = vec![CONTROLLER_NODE_ID];
        node.wake_up_target = CONTROLLER_NODE_ID;
        node
    }

    /// Back to factory state (after exclusion), keeping the kind.
    pub fn factory_reset(&mut self) {
        *self = Self::new(0, self.kind);
    }

    /// Whether unsolicited reports reach the controller.
    pub fn reports_to_controller(&self) -> bool {
        self.lifeline.contains(&CONTROLLER_NODE_ID)
    }

    /// The next periodic reading: values change a little every time so that a host can
    /// tell one report from the next. Returns the command classes to send.
    pub fn periodic_reports(&mut self) -> Vec<Vec<u8>> {
        self.reports_made += 1;
        let n = self.reports_made as i32;
        match self.kind {
            NodeKind::SwitchMeter => {
                self.power_deci_w = if self.switch == 0 { 0 } else { 600 + 5 * n };
                self.energy_centi_kwh += 1 + self.power_deci_w / 100;
                vec![self.meter_report(2), self.meter_report(0)]
            }
            NodeKind::Multisensor => {
                self.temperature_deci_c = 215 + n % 20;
                self.humidity = 45 + n % 10;
                self.illuminance = 120 + 10 * (n % 30);
                self.kind
                    .sensors()
                    .iter()
                    .map(|s| self.sensor_report(s.0))
                    .collect()
            }
            NodeKind::DoorSensor => {
                self.door_open = !self.door_open;
                vec![self.notification_report()]
            }
            NodeKind::BatterySensor => {
                self.temperature_deci_c = 180 + n % 20;
                self.battery = self.battery.saturating_sub(1).max(5);
                vec![
                    self.sensor_report(sensor::AIR_TEMPERATURE),
                    vec![cc_id::BATTERY, 0x03, self.battery],
                ]
            }
            NodeKind::FlirsSwitch => Vec::new(),
            NodeKind::Dimmer => vec![vec![cc_id::MULTILEVEL_SWITCH, 0x03, self.level]],
        }
    }

    /// What the node answers to one command class frame from the controller (possibly
    /// nothing). Commands that change state change it.
    pub fn handle(&mut self, cc: &[u8]) -> Vec<Vec<u8>> {
        let (Some(&class), Some(&command)) = (cc.first(), cc.get(1)) else {
            return Vec::new(); // No Operation (a ping) or a bare class id
        };
        let body = cc.get(2..).unwrap_or_default();
        if class == cc_id::SUPERVISION {
            return self.supervision(command, body);
        }
        if !self.supports(class) {
            return Vec::new();
        }
        match class {
            cc_id::BASIC => self.basic(command, body),
            cc_id::BINARY_SWITCH => self.binary_switch(command, body),
            cc_id::MULTILEVEL_SWITCH => self.multilevel_switch(command, body),
            cc_id::MULTILEVEL_SENSOR => self.multilevel_sensor(command, body),
            cc_id::METER => self.meter(command, body),
            cc_id::NOTIFICATION => self.notification(command, body),
            cc_id::BATTERY if command == 0x02 => vec![vec![cc_id::BATTERY, 0x03, self.battery]],
            cc_id::WAKE_UP => self.wake_up(command, body),
            cc_id::MANUFACTURER_SPECIFIC => self.manufacturer_specific(command, body),
            cc_id::VERSION => self.version(command, body),
            cc_id::ZWAVE_PLUS_INFO if command == 0x01 => {
                let [i0, i1] = 0x0700u16.to_be_bytes();
                vec![vec![
                    cc_id::ZWAVE_PLUS_INFO,
                    0x02,
                    0x02,
                    self.kind.role_type(),
                    0x00,
                    i0,
                    i1,
                    i0,
                    i1,
                ]]
            }
            cc_id::ASSOCIATION => self.association(command, body),
            cc_id::CONFIGURATION => self.configuration(command, body),
            _ => Vec::new(),
        }
    }

    /// Whether the node supports a command class (Basic is always supported, as the
    /// specification requires, but not listed in the NIF).
    pub fn supports(&self, class: u8) -> bool {
        class == cc_id::BASIC || self.cc_version(class) > 0
    }

    pub fn cc_version(&self, class: u8) -> u8 {
        if class == cc_id::BASIC {
            return 1;
        }
        self.kind
            .command_classes()
            .into_iter()
            .find(|(c, _)| *c == class)
            .map_or(0, |(_, v)| v)
    }

    /// Supervision Get (`ZWaveCC` 0x6C 01: session byte, length, command): the command is
    /// carried out and answered with a Report "success" (0xFF), no more updates, duration 0.
    fn supervision(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        let (0x01, Some(&session), Some(&len)) = (command, body.first(), body.get(1)) else {
            return Vec::new();
        };
        let Some(inner) = body.get(2..2 + usize::from(len)) else {
            return Vec::new();
        };
        let supported = inner.first().is_some_and(|&c| self.supports(c));
        let mut out = self.handle(inner);
        // 0xFF success, 0x00 no support.
        let status = if supported { 0xFF } else { 0x00 };
        out.insert(
            0,
            vec![cc_id::SUPERVISION, 0x02, session & 0x3F, status, 0x00],
        );
        out
    }

    fn set_switch(&mut self, value: u8) -> Vec<Vec<u8>> {
        if self.kind == NodeKind::Dimmer {
            return self.set_level(value);
        }
        self.switch = if value == 0 { 0x00 } else { 0xFF };
        Vec::new()
    }

    /// A level byte: 0-99 as it is, 0xFF back to the last level; others ignored.
    fn set_level(&mut self, value: u8) -> Vec<Vec<u8>> {
        match value {
            0 => self.level = 0,
            1..=99 => {
                self.level = value;
                self.last_level = value;
            }
            0xFF => self.level = self.last_level,
            _ => {}
        }
        Vec::new()
    }

    /// Multilevel Switch v1 (`MultilevelSwitchCC.ts`): Set `value`, Get, Report `current`.
    fn multilevel_switch(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        match (command, body.first()) {
            (0x01, Some(&v)) => self.set_level(v),
            (0x02, _) => vec![vec![cc_id::MULTILEVEL_SWITCH, 0x03, self.level]],
            _ => Vec::new(),
        }
    }

    fn basic(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        match (command, body.first()) {
            (0x01, Some(&v)) => self.set_switch(v),
            (0x02, _) => vec![vec![cc_id::BASIC, 0x03, self.basic_value()]],
            _ => Vec::new(),
        }
    }

    fn basic_value(&self) -> u8 {
        match self.kind {
            NodeKind::SwitchMeter | NodeKind::FlirsSwitch => self.switch,
            NodeKind::Dimmer => self.level,
            NodeKind::DoorSensor if self.door_open => 0xFF,
            _ => 0x00,
        }
    }

    /// Binary Switch v2 (`BinarySwitchCC.ts`): Set `value [, duration]`, Report `current,
    /// target, duration`.
    fn binary_switch(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        match (command, body.first()) {
            (0x01, Some(&v)) => self.set_switch(v),
            (0x02, _) => vec![self.switch_report()],
            _ => Vec::new(),
        }
    }

    pub fn switch_report(&self) -> Vec<u8> {
        vec![cc_id::BINARY_SWITCH, 0x03, self.switch, self.switch, 0x00]
    }

    fn sensor_value(&self, sensor_type: u8) -> i32 {
        match sensor_type {
            sensor::AIR_TEMPERATURE => self.temperature_deci_c,
            sensor::HUMIDITY => self.humidity,
            sensor::ILLUMINANCE => self.illuminance,
            _ => 0,
        }
    }

    /// Multilevel Sensor Report: `type, precision<<5 | scale<<3 | size, value (BE)`.
    pub fn sensor_report(&self, sensor_type: u8) -> Vec<u8> {
        let sensors = self.kind.sensors();
        let Some(&(t, scale, precision, size)) = sensors
            .iter()
            .find(|s| s.0 == sensor_type)
            .or_else(|| sensors.first())
        else {
            return Vec::new();
        };
        let mut out = vec![
            cc_id::MULTILEVEL_SENSOR,
            0x05,
            t,
            precision << 5 | scale << 3 | size,
        ];
        push_int(&mut out, self.sensor_value(t), size);
        out
    }

    /// Multilevel Sensor v5 (`MultilevelSensorCC.ts`).
    fn multilevel_sensor(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        let sensors = self.kind.sensors();
        match command {
            0x01 => {
                // SupportedSensorReport: bit (type - 1).
                let mut mask = vec![0u8; 1];
                for &(t, ..) in sensors {
                    let bit = usize::from(t - 1);
                    if mask.len() <= bit / 8 {
                        mask.resize(bit / 8 + 1, 0);
                    }
                    if let Some(b) = mask.get_mut(bit / 8) {
                        *b |= 1 << (bit % 8);
                    }
                }
                let mut out = vec![cc_id::MULTILEVEL_SENSOR, 0x02];
                out.extend(mask);
                vec![out]
            }
            0x03 => {
                let t = body.first().copied().unwrap_or_default();
                let scales = sensors
                    .iter()
                    .find(|s| s.0 == t)
                    .map_or(0, |&(_, scale, ..)| 1u8 << scale);
                vec![vec![cc_id::MULTILEVEL_SENSOR, 0x06, t, scales]]
            }
            0x04 => {
                let t = body.first().copied().unwrap_or_default();
                vec![self.sensor_report(t)]
            }
            _ => Vec::new(),
        }
    }

    /// Meter Report v3 (`MeterCC.ts parseMeterValueAndInfo`): `scale bit 2 << 7 | rate type
    /// (1, consumed) << 5 | type (1, electric)`, PSS, value, delta time 0 (no previous value).
    /// Scale 0: kWh (precision 2, 4 bytes); scale 2: W (precision 1, 2 bytes).
    pub fn meter_report(&self, scale: u8) -> Vec<u8> {
        let (scale, precision, size, value) = if scale == 2 {
            (2u8, 1u8, 2u8, self.power_deci_w)
        } else {
            (0, 2, 4, self.energy_centi_kwh)
        };
        let mut out = vec![
            cc_id::METER,
            0x02,
            (scale & 0x04) << 5 | 0x01 << 5 | 0x01,
            precision << 5 | (scale & 0x03) << 3 | size,
        ];
        push_int(&mut out, value, size);
        out.extend_from_slice(&[0x00, 0x00]);
        out
    }

    fn meter(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        match command {
            0x01 => {
                let scale = body.first().map_or(0, |b| (b >> 3) & 0x07);
                vec![self.meter_report(scale)]
            }
            // SupportedReport: reset supported, rate type consumed, electric; scales kWh, W.
            0x03 => vec![vec![cc_id::METER, 0x04, 0x80 | 0x20 | 0x01, 0x05]],
            0x05 => {
                self.energy_centi_kwh = 0;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Notification Report v3+ (`NotificationCC.ts`): `v1 type, v1 level, reserved, status
    /// 0xFF, type, event, params length 0`.
    pub fn notification_report(&self) -> Vec<u8> {
        let event = if self.door_open {
            EVENT_DOOR_OPEN
        } else {
            EVENT_DOOR_CLOSED
        };
        vec![
            cc_id::NOTIFICATION,
            0x05,
            0x00,
            0x00,
            0x00,
            0xFF,
            NOTIFICATION_ACCESS_CONTROL,
            event,
            0x00,
        ]
    }

    fn notification(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        match command {
            // SupportedReport: no v1 alarms, one bitmask byte, bit 6 = Access Control.
            0x07 => vec![vec![cc_id::NOTIFICATION, 0x08, 0x01, 1 << 6]],
            0x01 => {
                let t = body.first().copied().unwrap_or_default();
                if t == NOTIFICATION_ACCESS_CONTROL {
                    // Events 0x16 and 0x17: bits 6 and 7 of the third mask byte.
                    vec![vec![cc_id::NOTIFICATION, 0x02, t, 0x03, 0x00, 0x00, 0xC0]]
                } else {
                    vec![vec![cc_id::NOTIFICATION, 0x02, t, 0x00]]
                }
            }
            0x04 => {
                let t = body.get(1).copied().unwrap_or(NOTIFICATION_ACCESS_CONTROL);
                if t == NOTIFICATION_ACCESS_CONTROL || t == 0xFF || t == 0 {
                    vec![self.notification_report()]
                } else {
                    // "No pending notification" for a type it does not have.
                    vec![vec![
                        cc_id::NOTIFICATION,
                        0x05,
                        0x00,
                        0x00,
                        0x00,
                        0xFF,
                        t,
                        0xFE,
                        0x00,
                    ]]
                }
            }
            _ => Vec::new(),
        }
    }

    /// Wake Up v2 (`WakeUpCC.ts`): IntervalSet `seconds u24, node`, IntervalGet / Report,
    /// IntervalCapabilitiesGet / Report `min, max, default, step` (u24 each).
    fn wake_up(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        match command {
            0x04 => {
                if let (Some(s), Some(&node)) = (body.get(..3), body.get(3)) {
                    let secs = u32::from_be_bytes([0, s[0], s[1], s[2]]);
                    self.wake_up_interval = secs.clamp(WAKE_UP_MIN, WAKE_UP_MAX);
                    self.wake_up_target = node;
                }
                Vec::new()
            }
            0x05 => {
                let mut out = vec![cc_id::WAKE_UP, 0x06];
                out.extend_from_slice(&u24(self.wake_up_interval));
                out.push(self.wake_up_target);
                vec![out]
            }
            0x09 => {
                let mut out = vec![cc_id::WAKE_UP, 0x0A];
                for v in [WAKE_UP_MIN, WAKE_UP_MAX, WAKE_UP_DEFAULT, WAKE_UP_STEP] {
                    out.extend_from_slice(&u24(v));
                }
                vec![out]
            }
            _ => Vec::new(),
        }
    }

    /// Manufacturer Specific v2: Report `manufacturer, product type, product id`;
    /// DeviceSpecificReport `type, format (binary) << 5 | length, data` (a serial number).
    fn manufacturer_specific(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        match command {
            0x04 => {
                let mut out = vec![cc_id::MANUFACTURER_SPECIFIC, 0x05];
                out.extend_from_slice(&MANUFACTURER_ID.to_be_bytes());
                out.extend_from_slice(&self.kind.product_type().to_be_bytes());
                out.extend_from_slice(&0x0001u16.to_be_bytes());
                vec![out]
            }
            0x06 => {
                let t = body.first().map_or(0x01, |b| b & 0x07).max(1);
                vec![vec![
                    cc_id::MANUFACTURER_SPECIFIC,
                    0x07,
                    t,
                    0x01 << 5 | 0x04,
                    0xFA,
                    0x11,
                    t,
                    self.id,
                ]]
            }
            _ => Vec::new(),
        }
    }

    /// Version v2: Report `library type 3 (enhanced end node), protocol 7.18, firmware 1.0,
    /// hardware 1, no further targets`; CommandClassReport `class, version` (0: unsupported).
    fn version(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        match command {
            0x11 => vec![vec![
                cc_id::VERSION,
                0x12,
                0x03,
                0x07,
                0x12,
                0x01,
                0x00,
                0x01,
                0x00,
            ]],
            0x13 => {
                let class = body.first().copied().unwrap_or_default();
                vec![vec![cc_id::VERSION, 0x14, class, self.cc_version(class)]]
            }
            _ => Vec::new(),
        }
    }

    /// Association v2: one group (the lifeline) of up to [`LIFELINE_CAPACITY`] nodes.
    fn association(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        let group = body.first().copied().unwrap_or_default();
        let nodes = body.get(1..).unwrap_or_default();
        match command {
            0x01 if group == 1 => {
                for &n in nodes {
                    if n != 0
                        && !self.lifeline.contains(&n)
                        && self.lifeline.len() < usize::from(LIFELINE_CAPACITY)
                    {
                        self.lifeline.push(n);
                    }
                }
                Vec::new()
            }
            0x02 => {
                // A group it does not have is answered for group 1 (the specification).
                let mut out = vec![cc_id::ASSOCIATION, 0x03, 0x01, LIFELINE_CAPACITY, 0x00];
                out.extend_from_slice(&self.lifeline);
                vec![out]
            }
            0x04 if group == 1 || group == 0 => {
                if nodes.is_empty() {
                    self.lifeline.clear();
                } else {
                    self.lifeline.retain(|n| !nodes.contains(n));
                }
                Vec::new()
            }
            0x05 => vec![vec![cc_id::ASSOCIATION, 0x06, 0x01]],
            _ => Vec::new(),
        }
    }

    /// Configuration v1: Set `param, default << 7 | size, value`; Get `param` → Report
    /// `param, size, value`. A parameter it does not have is answered with its first one.
    fn configuration(&mut self, command: u8, body: &[u8]) -> Vec<Vec<u8>> {
        let param = body.first().copied().unwrap_or_default();
        match command {
            0x04 => {
                let Some(&flags) = body.get(1) else {
                    return Vec::new();
                };
                if let Some(entry) = self.parameters.get_mut(&param) {
                    if flags & 0x80 != 0 {
                        *entry = VirtualNode::new(0, self.kind)
                            .parameters
                            .get(&param)
                            .copied()
                            .unwrap_or(*entry);
                    } else {
                        let size = flags & 0x07;
                        if let Some(v) = body.get(2..2 + usize::from(size)) {
                            if matches!(size, 1 | 2 | 4) {
                                *entry = (size, read_int(v));
                            }
                        }
                    }
                }
                Vec::new()
            }
            0x05 => {
                let (param, (size, value)) = match self.parameters.get(&param) {
                    Some(&entry) => (param, entry),
                    None => match self.parameters.iter().next() {
                        Some((&p, &entry)) => (p, entry),
                        None => return Vec::new(),
                    },
                };
                let mut out = vec![cc_id::CONFIGURATION, 0x06, param, size];
                push_int(&mut out, value, size);
                vec![out]
            }
            _ => Vec::new(),
        }
    }
}

fn u24(v: u32) -> [u8; 3] {
    let [_, a, b, c] = v.to_be_bytes();
    [a, b, c]
}

/// Appends `value` as a signed big-endian integer of `size` (1, 2 or 4) bytes.
fn push_int(out: &mut Vec<u8>, value: i32, size: u8) {
    let bytes = value.to_be_bytes();
    let size = usize::from(size).clamp(1, 4);
    out.extend_from_slice(bytes.get(4 - size..).unwrap_or(&bytes));
}

fn read_int(bytes: &[u8]) -> i32 {
    match *bytes {
        [a] => i32::from(a as i8),
        [a, b] => i32::from(i16::from_be_bytes([a, b])),
        [a, b, c, d] => i32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}
