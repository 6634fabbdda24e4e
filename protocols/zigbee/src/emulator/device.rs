//! Virtual Zigbee devices behind the emulated coordinator: what each one is (descriptors,
//! Basic attributes, clusters), how it answers ZDO and ZCL requests, and what it reports
//! on its own. Sans-IO like the rest of the emulator: methods take `now` and return the
//! frames to deliver, each with a delay; the coordinator ([`super::Emulator`]) schedules them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::zcl::clusters::id;
use crate::zcl::{
    global, status, AttributeRecord, AttributeStatus, Direction, FrameType, ReadAttributeStatus,
    ZclCommand, ZclFrame, ZclHeader, ZclValue,
};
use crate::znp::{AfDataRequest, AfIncomingMsg, MacCapabilities, NodeDescriptor, SimpleDescriptor};
use crate::{IeeeAddr, ZnpCommand};

/// Home Automation profile.
pub const PROFILE_HA: u16 = 0x0104;
/// Manufacturer name every virtual device reports in Basic.
pub const MANUFACTURER: &str = "fieldgate";
/// Z-Stack AF status "MAC transaction expired": a sleeping end device never polled.
pub const STATUS_MAC_TRANSACTION_EXPIRED: u8 = 0xF0;

/// The kinds of virtual device the emulator can host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Battery temperature + humidity sensor (0x0402, 0x0405, 0x0001).
    TempHumidity,
    /// Mains smart plug, a router: On/Off, Level, Metering, Electrical Measurement.
    SmartPlug,
    /// Battery door/window contact as an IAS Zone (type 0x0015); needs enrollment.
    ContactSensor,
    /// Sleepy battery occupancy sensor: answers only while awake, wakes periodically.
    SleepySensor,
    /// A Tuya TS0601 temperature/humidity sensor (`_TZE200_s1xgth2u`): datapoints 1
    /// (temperature × 10), 2 (humidity %) and 4 (battery %) in 0xEF00 data reports.
    TuyaTempHumidity,
    /// An Aqara WSDCGQ11LM (`lumi.weather`): standard temperature, humidity and pressure
    /// clusters plus the Basic 0xFF01 struct (battery mV, temperature, humidity, pressure).
    AqaraWeather,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 4] = [
        DeviceKind::TempHumidity,
        DeviceKind::SmartPlug,
        DeviceKind::ContactSensor,
        DeviceKind::SleepySensor,
    ];

    /// Kinds that speak manufacturer-specific payloads (not in [`DeviceKind::ALL`], the
    /// default set): device definitions are tested on them.
    pub const MANUFACTURER_SPECIFIC: [DeviceKind; 2] =
        [DeviceKind::TuyaTempHumidity, DeviceKind::AqaraWeather];

    /// Whether this kind does the Zigbee 3.0 trust center link key exchange after joining
    /// (so the coordinator keeps a seed-derived key for it). The sleepy occupancy sensor
    /// plays a Zigbee HA 1.2 device that keeps the well-known default key.
    pub fn does_key_exchange(self) -> bool {
        self != DeviceKind::SleepySensor
    }

    /// The stable IEEE address of this kind's first instance.
    pub fn default_ieee(self) -> IeeeAddr {
        IeeeAddr(match self {
            DeviceKind::TempHumidity => 0x00124b00_0a000001,
            DeviceKind::SmartPlug => 0x00124b00_0a000002,
            DeviceKind::ContactSensor => 0x00124b00_0a000003,
            DeviceKind::SleepySensor => 0x00124b00_0a000004,
            DeviceKind::TuyaTempHumidity => 0xa4c13800_0a000005,
            DeviceKind::AqaraWeather => 0x00158d00_0a000006,
        })
    }

    /// Basic `modelId`.
    pub fn model(self) -> &'static str {
        match self {
            DeviceKind::TempHumidity => "FG-TH01",
            DeviceKind::SmartPlug => "FG-PLUG01",
            DeviceKind::ContactSensor => "FG-DOOR01",
            DeviceKind::SleepySensor => "FG-PIR01",
            DeviceKind::TuyaTempHumidity => "TS0601",
            DeviceKind::AqaraWeather => "lumi.weather",
        }
    }

    /// Basic `manufacturerName`.
    pub fn manufacturer(self) -> &'static str {
        match self {
            DeviceKind::TuyaTempHumidity => "_TZE200_s1xgth2u",
            DeviceKind::AqaraWeather => "LUMI",
            _ => MANUFACTURER,
        }
    }

    /// Mains powered: a router (the others are end devices).
    pub(super) fn mains(self) -> bool {
        self == DeviceKind::SmartPlug
    }

    fn capabilities(self) -> MacCapabilities {
        // bit1 router, bit2 mains, bit3 rx-on-when-idle, bit7 allocate address.
        MacCapabilities(if self.mains() { 0x8E } else { 0x80 })
    }

    fn device_id(self) -> u16 {
        match self {
            DeviceKind::TempHumidity => 0x0302,
            DeviceKind::SmartPlug => 0x0051,
            DeviceKind::ContactSensor => 0x0402,
            DeviceKind::SleepySensor => 0x0107,
            DeviceKind::TuyaTempHumidity => 0x0051,
            DeviceKind::AqaraWeather => 0x5F01,
        }
    }

    fn in_clusters(self) -> Vec<u16> {
        match self {
            DeviceKind::TempHumidity => vec![
                id::BASIC,
                id::POWER_CONFIG,
                0x0003,
                id::TEMPERATURE,
                id::HUMIDITY,
            ],
            DeviceKind::SmartPlug => vec![
                id::BASIC,
                0x0003,
                0x0004,
                0x0005,
                id::ON_OFF,
                id::LEVEL_CONTROL,
                id::METERING,
                id::ELECTRICAL_MEASUREMENT,
            ],
            DeviceKind::ContactSensor => vec![id::BASIC, id::POWER_CONFIG, 0x0003, id::IAS_ZONE],
            DeviceKind::SleepySensor => vec![id::BASIC, id::POWER_CONFIG, id::OCCUPANCY],
            DeviceKind::TuyaTempHumidity => vec![id::BASIC, 0x0004, 0x0005, 0xEF00],
            DeviceKind::AqaraWeather => vec![
                id::BASIC,
                0x0003,
                0xFFFF,
                id::TEMPERATURE,
                id::PRESSURE,
                id::HUMIDITY,
            ],
        }
    }

    /// Attributes each reporting cluster sends in a report.
    fn reported(self, cluster: u16) -> &'static [u16] {
        match cluster {
            id::TEMPERATURE | id::HUMIDITY | id::ON_OFF | id::LEVEL_CONTROL | id::OCCUPANCY => {
                &[0x0000]
            }
            id::POWER_CONFIG => &[0x0020, 0x0021],
            id::METERING => &[0x0000, 0x0400],
            id::ELECTRICAL_MEASUREMENT => &[0x0505, 0x0508, 0x050B],
            _ => &[],
        }
    }
}

/// Timing knobs shared by all devices.
#[derive(Debug, Clone, Copy)]
pub struct DeviceTiming {
    /// Period of attribute reports once reporting is configured.
    pub report_interval: Duration,
    /// How often the sleepy device wakes up.
    pub sleepy_wake_interval: Duration,
    /// How long it stays awake after waking.
    pub sleepy_awake_window: Duration,
    /// How many requests it answers right after joining before it first falls asleep.
    pub sleepy_answers_after_join: u32,
}

/// A frame a device sends, after `delay`.
pub(crate) type Outgoing = (Duration, ZnpCommand);

/// Device processing latency.
const LATENCY: Duration = Duration::from_millis(15);

/// One virtual device.
#[derive(Debug, Clone)]
pub struct VirtualDevice {
    pub kind: DeviceKind,
    pub ieee: IeeeAddr,
    /// Network address while joined.
    pub nwk: Option<u16>,
    /// Fault: never answers simple-descriptor requests, so its interview never finishes.
    pub stuck_interview: bool,
    attrs: BTreeMap<(u16, u16), ZclValue>,
    reporting: BTreeSet<u16>,
    next_report: Option<Duration>,
    ias_enrolled: bool,
    awake_until: Duration,
    answers_left: u32,
    next_wake: Option<Duration>,
    reads_answered: u64,
    /// Groups (ZCL Groups cluster) endpoint 1 is a member of.
    groups: BTreeSet<u16>,
    tsn: u8,
    cycle: u32,
    /// The network the device stays on while its coordinator runs another one.
    home: Option<Home>,
}

/// What a joined device keeps while its coordinator runs another network (a formation,
/// a restore's provisioning network, a factory reset): a real device stays on the network
/// it joined, with its address and its reporting, and is heard again when a coordinator
/// runs that network with the key the device holds.
#[derive(Debug, Clone)]
struct Home {
    extended_pan_id: u64,
    nwk: u16,
    reporting: BTreeSet<u16>,
    ias_enrolled: bool,
}

impl VirtualDevice {
    pub fn new(kind: DeviceKind, ieee: IeeeAddr) -> Self {
        let mut attrs = BTreeMap::new();
        let mut set = |c: u16, a: u16, v: ZclValue| {
            attrs.insert((c, a), v);
        };
        set(id::BASIC, 0x0000, ZclValue::u8(3));
        set(id::BASIC, 0x0004, ZclValue::char_str(kind.manufacturer()));
        set(id::BASIC, 0x0005, ZclValue::char_str(kind.model()));
        set(
            id::BASIC,
            0x0007,
            ZclValue::Enum8(if kind.mains() { 0x01 } else { 0x03 }),
        );
        set(id::BASIC, 0x4000, ZclValue::char_str("1.2.3"));
        // The OTA client (out-cluster 0x0019): currentFileVersion, read by hosts during
        // their interview.
        set(0x0019, 0x0002, uint(4, 0x0102_0300));
        if !kind.mains() {
            set(id::POWER_CONFIG, 0x0020, ZclValue::u8(30));
            set(id::POWER_CONFIG, 0x0021, ZclValue::u8(190));
        }
        match kind {
            DeviceKind::TempHumidity => {
                set(id::TEMPERATURE, 0x0000, ZclValue::i16(2150));
                set(id::HUMIDITY, 0x0000, ZclValue::u16(4520));
            }
            DeviceKind::SmartPlug => {
                set(id::ON_OFF, 0x0000, ZclValue::Bool(Some(false)));
                set(id::LEVEL_CONTROL, 0x0000, ZclValue::u8(254));
                set(id::METERING, 0x0000, uint(6, 12_345));
                set(id::METERING, 0x0300, ZclValue::Enum8(0));
                set(id::METERING, 0x0301, uint(3, 1));
                set(id::METERING, 0x0302, uint(3, 1000));
                set(id::METERING, 0x0400, int(3, 0));
                set(id::ELECTRICAL_MEASUREMENT, 0x0505, ZclValue::u16(2301));
                set(id::ELECTRICAL_MEASUREMENT, 0x0508, ZclValue::u16(0));
                set(id::ELECTRICAL_MEASUREMENT, 0x050B, ZclValue::i16(0));
                set(id::ELECTRICAL_MEASUREMENT, 0x0600, ZclValue::u16(1));
                set(id::ELECTRICAL_MEASUREMENT, 0x0601, ZclValue::u16(10));
                set(id::ELECTRICAL_MEASUREMENT, 0x0602, ZclValue::u16(1));
                set(id::ELECTRICAL_MEASUREMENT, 0x0603, ZclValue::u16(1000));
                set(id::ELECTRICAL_MEASUREMENT, 0x0604, ZclValue::u16(1));
                set(id::ELECTRICAL_MEASUREMENT, 0x0605, ZclValue::u16(10));
            }
            DeviceKind::ContactSensor => {
                set(id::IAS_ZONE, 0x0000, ZclValue::Enum8(0));
                set(id::IAS_ZONE, 0x0001, ZclValue::Enum16(0x0015));
                set(id::IAS_ZONE, 0x0002, bitmap(2, 0));
                set(id::IAS_ZONE, 0x0010, ZclValue::IeeeAddr(IeeeAddr(0)));
                set(id::IAS_ZONE, 0x0011, ZclValue::u8(0xFF));
            }
            DeviceKind::SleepySensor => {
                set(id::OCCUPANCY, 0x0000, bitmap(1, 0));
            }
            DeviceKind::TuyaTempHumidity | DeviceKind::AqaraWeather => {
                set(id::TEMPERATURE, 0x0000, ZclValue::i16(2150));
                set(id::HUMIDITY, 0x0000, ZclValue::u16(4520));
                set(id::PRESSURE, 0x0000, ZclValue::i16(1003));
                set(id::POWER_CONFIG, 0x0020, ZclValue::u8(30));
            }
        }
        Self {
            kind,
            ieee,
            nwk: None,
            stuck_interview: false,
            attrs,
            reporting: BTreeSet::new(),
            next_report: None,
            ias_enrolled: false,
            awake_until: Duration::ZERO,
            answers_left: 0,
            next_wake: None,
            reads_answered: 0,
            groups: BTreeSet::new(),
            tsn: 0,
            cycle: 0,
            home: None,
        }
    }

    /// Whether endpoint 1 is a member of group `id`.
    pub fn in_group(&self, id: u16) -> bool {
        self.groups.contains(&id)
    }

    /// The Groups cluster (0x0004) server: add, view, membership, remove, remove all.
    /// Answers (status, group id ...) as the spec's responses, or `None` for a command
    /// answered with a Default Response (`Err` holds its status).
    fn groups_command(&mut self, command_id: u8, p: &[u8]) -> Result<Option<Vec<u8>>, u8> {
        const NOT_FOUND: u8 = 0x8B;
        const DUPLICATE_EXISTS: u8 = 0x8A;
        const INSUFFICIENT_SPACE: u8 = 0x89;
        const CAPACITY: usize = 16;
        let gid = || {
            p.get(..2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or(status::MALFORMED_COMMAND)
        };
        let with = |st: u8, g: u16| {
            let mut out = vec![st];
            out.extend_from_slice(&g.to_le_bytes());
            out
        };
        match command_id {
            0x00 => {
                let g = gid()?;
                let st = if self.groups.contains(&g) {
                    DUPLICATE_EXISTS
                } else if self.groups.len() >= CAPACITY {
                    INSUFFICIENT_SPACE
                } else {
                    self.groups.insert(g);
                    status::SUCCESS
                };
                Ok(Some(with(st, g)))
            }
            0x01 => {
                let g = gid()?;
                let st = if self.groups.contains(&g) {
                    status::SUCCESS
                } else {
                    NOT_FOUND
                };
                let mut out = with(st, g);
                out.push(0); // no name
                Ok(Some(out))
            }
            0x02 => {
                let asked: Vec<u16> = p
                    .get(1..)
                    .unwrap_or_default()
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect();
                let listed: Vec<u16> = self
                    .groups
                    .iter()
                    .copied()
                    .filter(|g| asked.is_empty() || asked.contains(g))
                    .collect();
                let mut out = vec![
                    u8::try_from(CAPACITY - self.groups.len()).unwrap_or(0),
                    u8::try_from(listed.len()).unwrap_or(u8::MAX),
                ];
                for g in listed {
                    out.extend_from_slice(&g.to_le_bytes());
                }
                Ok(Some(out))
            }
            0x03 => {
                let g = gid()?;
                let st = if self.groups.remove(&g) {
                    status::SUCCESS
                } else {
                    NOT_FOUND
                };
                Ok(Some(with(st, g)))
            }
            0x04 => {
                self.groups.clear();
                Ok(None)
            }
            _ => Err(status::UNSUP_COMMAND),
        }
    }

    /// The current value of an attribute (endpoint 1).
    pub fn attribute(&self, cluster: u16, attr: u16) -> Option<&ZclValue> {
        self.attrs.get(&(cluster, attr))
    }

    /// Whether the plug's relay is on.
    pub fn is_on(&self) -> bool {
        matches!(
            self.attrs.get(&(id::ON_OFF, 0x0000)),
            Some(ZclValue::Bool(Some(true)))
        )
    }

    /// The plug's current level (0–254).
    pub fn level(&self) -> Option<u8> {
        self.attrs
            .get(&(id::LEVEL_CONTROL, 0x0000))
            .and_then(ZclValue::as_i64)
            .and_then(|v| u8::try_from(v).ok())
    }

    pub fn ias_enrolled(&self) -> bool {
        self.ias_enrolled
    }

    pub fn is_sleepy(&self) -> bool {
        self.kind == DeviceKind::SleepySensor
    }

    /// Read Attributes requests this device answered.
    pub fn reads_answered(&self) -> u64 {
        self.reads_answered
    }

    /// Wakes a joined sleepy device at the next tick, as its own wake timer would.
    pub(crate) fn wake_now(&mut self, now: Duration) -> bool {
        if !self.is_sleepy() || self.nwk.is_none() {
            return false;
        }
        self.next_wake = Some(now);
        true
    }

    /// Changes an attribute's value without reporting it (the device measured something).
    pub(crate) fn set_attribute(&mut self, cluster: u16, attr: u16, value: ZclValue) {
        self.attrs.insert((cluster, attr), value);
    }

    /// Whether the device would hear a frame sent to it now.
    pub fn awake(&self, now: Duration) -> bool {
        !self.is_sleepy() || self.answers_left > 0 || now < self.awake_until
    }

    /// Called when the device hears a request: spends one post-join answer or extends the
    /// awake window a little, as a real sleepy device does while it is being talked to.
    fn heard(&mut self, now: Duration) {
        if !self.is_sleepy() {
            return;
        }
        if self.answers_left > 0 {
            self.answers_left -= 1;
        } else {
            self.awake_until = self.awake_until.max(now + Duration::from_millis(300));
        }
    }

    /// The device joined at `now` with network address `nwk`.
    pub(crate) fn joined(&mut self, nwk: u16, now: Duration, timing: &DeviceTiming) {
        self.nwk = Some(nwk);
        self.home = None;
        self.reporting.clear();
        self.next_report = None;
        self.ias_enrolled = false;
        if self.kind.speaks_manufacturer_payloads() {
            // These report on their own, unconfigured, as the real ones do.
            self.next_report = Some(now + timing.report_interval);
        }
        if self.is_sleepy() {
            self.answers_left = timing.sleepy_answers_after_join;
            self.awake_until = Duration::ZERO;
            self.next_wake = Some(now + timing.sleepy_wake_interval);
        }
    }

    /// The device left the network.
    pub(crate) fn left(&mut self) {
        self.nwk = None;
        self.home = None;
        self.reporting.clear();
        self.next_report = None;
        self.next_wake = None;
        self.ias_enrolled = false;
    }

    /// Its coordinator stopped running `extended_pan_id`, the network the device is on:
    /// the device stays there, unheard, until a coordinator runs it again.
    pub(crate) fn coordinator_away(&mut self, extended_pan_id: u64) {
        let Some(nwk) = self.nwk.take() else {
            return;
        };
        self.home = Some(Home {
            extended_pan_id,
            nwk,
            reporting: std::mem::take(&mut self.reporting),
            ias_enrolled: self.ias_enrolled,
        });
        self.next_report = None;
        self.next_wake = None;
        self.ias_enrolled = false;
    }

    /// The extended PAN id of the network the device stays on while unheard.
    pub(crate) fn home_network(&self) -> Option<u64> {
        self.home.as_ref().map(|h| h.extended_pan_id)
    }

    /// Whether the device uses network address `nwk`, heard or not.
    pub(crate) fn holds_address(&self, nwk: u16) -> bool {
        self.nwk == Some(nwk) || self.home.as_ref().is_some_and(|h| h.nwk == nwk)
    }

    /// A coordinator runs the device's network again: the device is heard as it was, at
    /// its address and with the reporting it was configured with. Whether it is back.
    pub(crate) fn coordinator_back(
        &mut self,
        extended_pan_id: u64,
        now: Duration,
        timing: &DeviceTiming,
    ) -> bool {
        let Some(home) = self.home.take_if(|h| h.extended_pan_id == extended_pan_id) else {
            return false;
        };
        self.joined(home.nwk, now, timing);
        self.ias_enrolled = home.ias_enrolled;
        self.reporting = home.reporting;
        if !self.reporting.is_empty() && !self.is_sleepy() {
            self.next_report = Some(now + timing.report_interval);
        }
        true
    }

    /// The next time this device wants [`VirtualDevice::tick`] called.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.nwk?;
        match (self.next_report, self.next_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn next_tsn(&mut self) -> u8 {
        self.tsn = self.tsn.wrapping_add(1);
        self.tsn
    }

    fn af(&self, cluster_id: u16, data: Vec<u8>, now: Duration) -> ZnpCommand {
        let nwk = self.nwk.unwrap_or(0xFFFE);
        ZnpCommand::AfIncomingMsg(AfIncomingMsg {
            group_id: 0,
            cluster_id,
            src_addr: nwk,
            src_endpoint: 1,
            dst_endpoint: 1,
            was_broadcast: false,
            link_quality: 120,
            security_use: false,
            timestamp: u32::try_from(now.as_millis() & 0xFFFF_FFFF).unwrap_or(0),
            trans_seq_num: 0,
            data,
            mac_src_addr: Some(nwk),
            msg_result_radius: Some(0x1D),
        })
    }

    fn zcl_out(&self, cluster: u16, frame: &ZclFrame, now: Duration) -> Option<ZnpCommand> {
        frame.encode().ok().map(|data| self.af(cluster, data, now))
    }

    fn node_descriptor(&self) -> NodeDescriptor {
        NodeDescriptor {
            logical_type: if self.kind.mains() { 1 } else { 2 },
            complex_descriptor_available: false,
            user_descriptor_available: false,
            aps_flags: 0,
            frequency_band: 0x08,
            mac_capabilities: self.kind.capabilities(),
            manufacturer_code: 0x1037,
            max_buffer_size: 80,
            max_incoming_transfer_size: 160,
            server_mask: 0,
            max_outgoing_transfer_size: 160,
            descriptor_capabilities: 0,
        }
    }

    /// The announce the device sends after joining.
    pub(crate) fn announce(&self) -> Option<ZnpCommand> {
        let nwk = self.nwk?;
        Some(ZnpCommand::ZdoEndDeviceAnnceInd {
            src_addr: nwk,
            nwk_addr: nwk,
            ieee: self.ieee,
            capabilities: self.kind.capabilities(),
        })
    }

    /// Answers a ZDO request addressed to this device (`None` when it does not answer).
    pub(crate) fn handle_zdo(&mut self, req: &ZnpCommand, now: Duration) -> Vec<Outgoing> {
        let Some(nwk) = self.nwk else {
            return Vec::new();
        };
        if !self.awake(now) {
            return Vec::new();
        }
        let rsp = match req {
            ZnpCommand::ZdoNodeDescReq { .. } => ZnpCommand::ZdoNodeDescRsp {
                src_addr: nwk,
                status: 0,
                nwk_addr: Some(nwk),
                descriptor: Some(self.node_descriptor()),
            },
            ZnpCommand::ZdoActiveEpReq { .. } => ZnpCommand::ZdoActiveEpRsp {
                src_addr: nwk,
                status: 0,
                nwk_addr: Some(nwk),
                endpoints: vec![1],
            },
            ZnpCommand::ZdoSimpleDescReq { endpoint, .. } => {
                if self.stuck_interview {
                    return Vec::new();
                }
                let descriptor = (*endpoint == 1).then(|| SimpleDescriptor {
                    endpoint: 1,
                    profile_id: PROFILE_HA,
                    device_id: self.kind.device_id(),
                    device_version: 1,
                    in_clusters: self.kind.in_clusters(),
                    out_clusters: vec![0x0019],
                });
                ZnpCommand::ZdoSimpleDescRsp {
                    src_addr: nwk,
                    // 0x83 = NOT_ACTIVE (ZDP status) for an endpoint the device lacks.
                    status: if descriptor.is_some() { 0 } else { 0x83 },
                    nwk_addr: Some(nwk),
                    descriptor,
                }
            }
            ZnpCommand::ZdoBindReq { cluster_id, .. } => ZnpCommand::ZdoBindRsp {
                src_addr: nwk,
                // 0x84 = NOT_SUPPORTED for a cluster the device does not have.
                status: if self.kind.in_clusters().contains(cluster_id) {
                    0
                } else {
                    0x84
                },
            },
            _ => return Vec::new(),
        };
        self.heard(now);
        vec![(LATENCY, rsp)]
    }

    /// Handles a ZCL frame sent to the device; returns what it sends back.
    pub(crate) fn handle_af(
        &mut self,
        req: &AfDataRequest,
        now: Duration,
        timing: &DeviceTiming,
    ) -> Vec<Outgoing> {
        if self.nwk.is_none() || !self.awake(now) {
            return Vec::new();
        }
        self.heard(now);
        let cluster = req.cluster_id;
        let Ok(frame) = ZclFrame::decode(cluster, &req.data) else {
            return Vec::new();
        };
        let h = &frame.header;
        let mut out = Vec::new();
        // A response goes the other way: a read of a client cluster's attributes (sent
        // server to client, like OTA's currentFileVersion) is answered client to server.
        let back = match h.direction {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        };
        let reply = |cmd_id: u8, command: ZclCommand| ZclFrame {
            header: ZclHeader {
                manufacturer_code: h.manufacturer_code,
                ..ZclHeader::global(back, true, h.tsn, cmd_id)
            },
            command,
        };
        let mut default_status = None;
        if cluster == id::GROUPS
            && h.frame_type == FrameType::ClusterSpecific
            && h.direction == Direction::ClientToServer
            && self.kind.in_clusters().contains(&id::GROUPS)
        {
            if let ZclCommand::Raw { payload } = &frame.command {
                match self.groups_command(h.command_id, payload) {
                    Ok(Some(answer)) => {
                        let f = ZclFrame {
                            header: ZclHeader::cluster(
                                Direction::ServerToClient,
                                true,
                                h.tsn,
                                h.command_id,
                            ),
                            command: ZclCommand::Raw { payload: answer },
                        };
                        out.extend(self.zcl_out(cluster, &f, now).map(|c| (LATENCY, c)));
                    }
                    Ok(None) => default_status = Some(status::SUCCESS),
                    Err(st) => default_status = Some(st),
                }
                if let Some(st) = default_status {
                    if !h.disable_default_response || st != status::SUCCESS {
                        let f = ZclFrame::default_response(h, st);
                        out.push((
                            LATENCY,
                            self.af(cluster, f.encode().unwrap_or_default(), now),
                        ));
                    }
                }
                return out;
            }
        }
        match &frame.command {
            ZclCommand::ReadAttributes { attribute_ids } => {
                self.reads_answered += 1;
                let records = attribute_ids
                    .iter()
                    .map(|a| match self.attrs.get(&(cluster, *a)) {
                        Some(v) => ReadAttributeStatus {
                            attribute_id: *a,
                            status: status::SUCCESS,
                            value: Some(v.clone()),
                        },
                        None => ReadAttributeStatus {
                            attribute_id: *a,
                            status: status::UNSUPPORTED_ATTRIBUTE,
                            value: None,
                        },
                    })
                    .collect();
                let f = reply(
                    global::READ_ATTRIBUTES_RSP,
                    ZclCommand::ReadAttributesRsp { records },
                );
                out.extend(self.zcl_out(cluster, &f, now).map(|c| (LATENCY, c)));
            }
            ZclCommand::WriteAttributes { records }
            | ZclCommand::WriteAttributesUndivided { records } => {
                let mut failures = Vec::new();
                for rec in records {
                    if let Some(slot) = self.attrs.get_mut(&(cluster, rec.attribute_id)) {
                        *slot = rec.value.clone();
                    } else {
                        failures.push(AttributeStatus {
                            status: status::UNSUPPORTED_ATTRIBUTE,
                            direction: None,
                            attribute_id: rec.attribute_id,
                        });
                    }
                }
                let f = reply(
                    global::WRITE_ATTRIBUTES_RSP,
                    ZclCommand::WriteAttributesRsp { failures },
                );
                out.extend(self.zcl_out(cluster, &f, now).map(|c| (LATENCY, c)));
                let cie_written = cluster == id::IAS_ZONE
                    && records.iter().any(|r| r.attribute_id == 0x0010)
                    && !self.ias_enrolled;
                if cie_written {
                    // A zone asks the CIE to enroll it once it knows the CIE's address.
                    let enroll = ZclFrame {
                        header: ZclHeader::cluster(
                            Direction::ServerToClient,
                            true,
                            self.next_tsn(),
                            0x01,
                        ),
                        command: ZclCommand::IasZoneEnrollRequest {
                            zone_type: 0x0015,
                            manufacturer_code: 0x1037,
                        },
                    };
                    out.extend(
                        self.zcl_out(cluster, &enroll, now)
                            .map(|c| (LATENCY * 3, c)),
                    );
                }
            }
            ZclCommand::ConfigureReporting { records } => {
                let supported = self.kind.in_clusters().contains(&cluster);
                let failures = if supported {
                    Vec::new()
                } else {
                    vec![AttributeStatus {
                        status: status::UNSUPPORTED_ATTRIBUTE,
                        direction: Some(0),
                        attribute_id: 0xFFFF,
                    }]
                };
                let _ = records;
                let f = reply(
                    global::CONFIGURE_REPORTING_RSP,
                    ZclCommand::ConfigureReportingRsp { failures },
                );
                out.extend(self.zcl_out(cluster, &f, now).map(|c| (LATENCY, c)));
                if supported && !self.kind.reported(cluster).is_empty() {
                    self.reporting.insert(cluster);
                    // Devices report once right after being configured.
                    if let Some(r) = self.report(cluster, now) {
                        out.push((LATENCY * 2, r));
                    }
                    if self.next_report.is_none() && !self.is_sleepy() {
                        self.next_report = Some(now + timing.report_interval);
                    }
                }
            }
            ZclCommand::On | ZclCommand::Off | ZclCommand::Toggle
                if cluster == id::ON_OFF && self.kind == DeviceKind::SmartPlug =>
            {
                let on = match frame.command {
                    ZclCommand::On => true,
                    ZclCommand::Off => false,
                    _ => !self.is_on(),
                };
                self.attrs
                    .insert((id::ON_OFF, 0x0000), ZclValue::Bool(Some(on)));
                self.update_power();
                default_status = Some(status::SUCCESS);
                out.extend(self.state_reports(&[id::ON_OFF, id::ELECTRICAL_MEASUREMENT], now));
            }
            ZclCommand::MoveToLevel {
                with_on_off, level, ..
            } if cluster == id::LEVEL_CONTROL && self.kind == DeviceKind::SmartPlug => {
                self.attrs
                    .insert((id::LEVEL_CONTROL, 0x0000), ZclValue::u8(*level));
                if *with_on_off {
                    self.attrs
                        .insert((id::ON_OFF, 0x0000), ZclValue::Bool(Some(*level > 0)));
                }
                self.update_power();
                default_status = Some(status::SUCCESS);
                out.extend(self.state_reports(
                    &[id::LEVEL_CONTROL, id::ON_OFF, id::ELECTRICAL_MEASUREMENT],
                    now,
                ));
            }
            ZclCommand::IasZoneEnrollResponse {
                response_code,
                zone_id,
            } if cluster == id::IAS_ZONE && self.kind == DeviceKind::ContactSensor => {
                if *response_code == 0 {
                    self.ias_enrolled = true;
                    self.attrs
                        .insert((id::IAS_ZONE, 0x0000), ZclValue::Enum8(1));
                    self.attrs
                        .insert((id::IAS_ZONE, 0x0011), ZclValue::u8(*zone_id));
                    if self.next_report.is_none() {
                        self.next_report = Some(now + timing.report_interval);
                    }
                    if let Some(n) = self.zone_notification(now) {
                        out.push((LATENCY * 2, n));
                    }
                }
            }
            ZclCommand::DefaultRsp { .. } | ZclCommand::ReadAttributesRsp { .. } => {}
            _ => {
                default_status = Some(status::UNSUP_COMMAND);
            }
        }
        if let Some(st) = default_status {
            // ZCL 2.5.12.2: a Default Response goes back unless the sender disabled it
            // *and* the command succeeded; an error is always answered.
            if !h.disable_default_response || st != status::SUCCESS {
                let f = ZclFrame::default_response(h, st);
                out.insert(
                    0,
                    (
                        LATENCY,
                        self.af(cluster, f.encode().unwrap_or_default(), now),
                    ),
                );
            }
        }
        out
    }

    fn update_power(&mut self) {
        let level = f64::from(self.level().unwrap_or(254)) / 254.0;
        let watts_x10 = if self.is_on() {
            (350.0 * level).round() as i64
        } else {
            0
        };
        // 230.1 V; current in mA from P = U·I.
        let milliamps = (watts_x10 as f64 / 10.0 / 230.1 * 1000.0).round() as u64;
        self.attrs
            .insert((id::ELECTRICAL_MEASUREMENT, 0x050B), int(2, watts_x10));
        self.attrs
            .insert((id::ELECTRICAL_MEASUREMENT, 0x0508), uint(2, milliamps));
        // Instantaneous demand in kW × 1000 / 1000 (multiplier 1, divisor 1000).
        self.attrs
            .insert((id::METERING, 0x0400), int(3, watts_x10 / 10));
    }

    fn state_reports(&mut self, clusters: &[u16], now: Duration) -> Vec<Outgoing> {
        clusters
            .iter()
            .filter_map(|c| self.report(*c, now))
            .map(|r| (LATENCY * 2, r))
            .collect()
    }

    /// An attribute report for `cluster`, or `None` if it reports nothing.
    pub(crate) fn report(&mut self, cluster: u16, now: Duration) -> Option<ZnpCommand> {
        let records: Vec<AttributeRecord> = self
            .kind
            .reported(cluster)
            .iter()
            .filter_map(|a| {
                self.attrs.get(&(cluster, *a)).map(|v| AttributeRecord {
                    attribute_id: *a,
                    value: v.clone(),
                })
            })
            .collect();
        if records.is_empty() {
            return None;
        }
        let frame = ZclFrame {
            header: ZclHeader::global(
                Direction::ServerToClient,
                true,
                self.next_tsn(),
                global::REPORT_ATTRIBUTES,
            ),
            command: ZclCommand::ReportAttributes { records },
        };
        self.zcl_out(cluster, &frame, now)
    }

    /// A report of `records` (their values become the device's), whatever their size.
    pub(crate) fn custom_report(
        &mut self,
        cluster: u16,
        records: Vec<AttributeRecord>,
        now: Duration,
    ) -> Option<ZnpCommand> {
        for r in &records {
            self.attrs
                .insert((cluster, r.attribute_id), r.value.clone());
        }
        let frame = ZclFrame {
            header: ZclHeader::global(
                Direction::ServerToClient,
                true,
                self.next_tsn(),
                global::REPORT_ATTRIBUTES,
            ),
            command: ZclCommand::ReportAttributes { records },
        };
        self.zcl_out(cluster, &frame, now)
    }

    /// A temperature report with an explicit value (for burst tests).
    pub(crate) fn temperature_report(
        &mut self,
        centi_celsius: i16,
        now: Duration,
    ) -> Option<ZnpCommand> {
        self.attrs
            .insert((id::TEMPERATURE, 0x0000), ZclValue::i16(centi_celsius));
        let frame = ZclFrame {
            header: ZclHeader::global(
                Direction::ServerToClient,
                true,
                self.next_tsn(),
                global::REPORT_ATTRIBUTES,
            ),
            command: ZclCommand::ReportAttributes {
                records: vec![AttributeRecord {
                    attribute_id: 0x0000,
                    value: ZclValue::i16(centi_celsius),
                }],
            },
        };
        self.zcl_out(id::TEMPERATURE, &frame, now)
    }

    fn zone_notification(&mut self, now: Duration) -> Option<ZnpCommand> {
        let zone_status = self
            .attrs
            .get(&(id::IAS_ZONE, 0x0002))
            .and_then(ZclValue::as_i64)
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(0);
        let zone_id = self
            .attrs
            .get(&(id::IAS_ZONE, 0x0011))
            .and_then(ZclValue::as_i64)
            .and_then(|v| u8::try_from(v).ok())
            .unwrap_or(0);
        let frame = ZclFrame {
            header: ZclHeader {
                frame_type: FrameType::ClusterSpecific,
                ..ZclHeader::global(Direction::ServerToClient, true, self.next_tsn(), 0x00)
            },
            command: ZclCommand::IasZoneStatusChangeNotification {
                zone_status,
                extended_status: 0,
                zone_id: Some(zone_id),
                delay: Some(0),
            },
        };
        self.zcl_out(id::IAS_ZONE, &frame, now)
    }

    /// Periodic behaviour: reports, the sleepy device waking. Returns frames to send.
    pub(crate) fn tick(&mut self, now: Duration, timing: &DeviceTiming) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if self.nwk.is_none() {
            return out;
        }
        if let Some(wake) = self.next_wake.filter(|w| *w <= now) {
            self.next_wake = Some(wake.max(now) + timing.sleepy_wake_interval);
            self.awake_until = now + timing.sleepy_awake_window;
            // Waking up, the sensor sends what it measured: it "speaks" first.
            self.cycle = self.cycle.wrapping_add(1);
            let occupied = self.cycle % 2;
            self.attrs
                .insert((id::OCCUPANCY, 0x0000), bitmap(1, u64::from(occupied)));
            out.extend(self.report(id::OCCUPANCY, now).map(|r| (Duration::ZERO, r)));
            if self.reporting.contains(&id::POWER_CONFIG) {
                out.extend(self.report(id::POWER_CONFIG, now).map(|r| (LATENCY, r)));
            }
        }
        if let Some(due) = self.next_report.filter(|d| *d <= now) {
            self.next_report = Some(due.max(now) + timing.report_interval);
            self.cycle = self.cycle.wrapping_add(1);
            self.drift();
            let clusters: Vec<u16> = self.reporting.iter().copied().collect();
            for c in clusters {
                out.extend(self.report(c, now).map(|r| (Duration::ZERO, r)));
            }
            if self.kind == DeviceKind::ContactSensor && self.ias_enrolled {
                out.extend(self.zone_notification(now).map(|r| (Duration::ZERO, r)));
            }
            if let Some(frame) = self.manufacturer_report() {
                let cluster = match self.kind {
                    DeviceKind::TuyaTempHumidity => super::manufacturer::TUYA_CLUSTER,
                    _ => id::BASIC,
                };
                out.extend(
                    self.zcl_out(cluster, &frame, now)
                        .map(|r| (Duration::ZERO, r)),
                );
            }
        }
        out
    }

    /// Moves measured values a little between reports.
    fn drift(&mut self) {
        let step = i64::from(self.cycle % 10);
        match self.kind {
            DeviceKind::TempHumidity => {
                self.attrs
                    .insert((id::TEMPERATURE, 0x0000), int(2, 2150 + step * 10));
                self.attrs
                    .insert((id::HUMIDITY, 0x0000), uint(2, (4520 + step * 25) as u64));
            }
            DeviceKind::SmartPlug => {
                if self.is_on() {
                    let wh = self
                        .attrs
                        .get(&(id::METERING, 0x0000))
                        .and_then(ZclValue::as_i64)
                        .unwrap_or(0);
                    self.attrs
                        .insert((id::METERING, 0x0000), uint(6, (wh + 1) as u64));
                }
            }
            DeviceKind::ContactSensor => {
                // Open / closed in turn: alarm1 is "open" for a contact switch.
                let open = self.cycle % 2 == 1;
                self.attrs
                    .insert((id::IAS_ZONE, 0x0002), bitmap(2, u64::from(open)));
            }
            DeviceKind::SleepySensor => {}
            DeviceKind::TuyaTempHumidity | DeviceKind::AqaraWeather => {
                self.attrs
                    .insert((id::TEMPERATURE, 0x0000), int(2, 2150 + step * 10));
                self.attrs
                    .insert((id::HUMIDITY, 0x0000), uint(2, (4520 + step * 25) as u64));
            }
        }
    }

    /// The manufacturer frame a Tuya or Aqara device sends with each report, carrying the
    /// current temperature and humidity.
    fn manufacturer_report(&mut self) -> Option<ZclFrame> {
        let get = |c: u16| self.attrs.get(&(c, 0x0000)).and_then(ZclValue::as_i64);
        let (t, h, p) = (
            get(id::TEMPERATURE)?,
            get(id::HUMIDITY)?,
            get(id::PRESSURE).unwrap_or(1003),
        );
        let tsn = self.next_tsn();
        match self.kind {
            DeviceKind::TuyaTempHumidity => Some(super::manufacturer::tuya_report(
                tsn,
                u16::from(tsn),
                &[(1, t / 10), (2, h / 100), (4, 87)],
            )),
            DeviceKind::AqaraWeather => {
                Some(super::manufacturer::aqara_report(tsn, 2995, t, h, p * 100))
            }
            _ => None,
        }
    }
}

impl DeviceKind {
    fn speaks_manufacturer_payloads(self) -> bool {
        Self::MANUFACTURER_SPECIFIC.contains(&self)
    }
}

fn uint(width: u8, value: u64) -> ZclValue {
    ZclValue::Uint { width, value }
}

fn int(width: u8, value: i64) -> ZclValue {
    ZclValue::Int { width, value }
}

fn bitmap(width: u8, value: u64) -> ZclValue {
    ZclValue::Bitmap { width, value }
}
