//! Zigbee through a TI Z-Stack 3 (ZNP) coordinator: start-up (resume or form), permit join,
//! joins, interviews, reporting set-up, IAS enrollment, readings, commands, removal, recovery.
//!
//! Owns the conversation with the coordinator over one [`Link`]; the codec
//! (`fieldgate_zigbee`) owns every byte layout and this module owns none. Rules it keeps:
//! - **one outstanding SREQ** ([`Session::request`]), with a timeout; indications that arrive
//!   meanwhile are queued and handled in order afterwards;
//! - **interviews are state machines per device**, driven by responses and timers, so several
//!   devices are interviewed at once and a sleepy device that stops answering keeps what was
//!   learnt and resumes the moment it next speaks;
//! - **recovery**: an unsolicited SYS_RESET_IND or two failed watchdog pings re-run start-up on
//!   the same link; a broken link returns `Err` and the supervisor re-opens it with backoff;
//! - bad bytes cost a counter and a resync (the codec's parser), never a panic.
//!
//! The network key is generated here on first formation and written to the coordinator's NV;
//! an encrypted copy is kept as a credential (owner `radio:<name>`, kind
//! [`NETWORK_KEY_KIND`]) when the network is formed, and on resume when none is stored or
//! the stored one differs. `fieldgate radio backup` exports the network as
//! open-coordinator-backup JSON ([`RadioCommand::Backup`]). The key is never logged.
//!
//! Install codes: the hub seals each registered code as a credential of its device (kind
//! [`INSTALL_CODE_KIND`]) and hands it here ([`RadioCommand::AddInstallCode`]) to push to the
//! coordinator with APP_CNF_BDB_ADD_INSTALLCODE. A coordinator may lose them on a reset, so
//! every start-up pushes all stored codes again, then applies the policy's "joins must use
//! install codes" flag (APP_CNF_BDB_SET_JOINUSESINSTALLCODEKEY).
//!
//! Network key rotation ([`RadioCommand::RotateNetworkKey`]): a fresh key is sealed as a
//! pending credential, sent to every device with the next key sequence number
//! (ZDO_EXT_UPDATE_NWK_KEY to 0xFFFF), and after `key_switch_delay` made active
//! (ZDO_EXT_SWITCH_NWK_KEY); only then does it replace the network key credential. If any
//! step fails the coordinator keeps the old key and so does the store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use fieldgate_zigbee::mt::{MtFrame, MtParserStats, MtStreamParser, MtType, Subsystem};
use fieldgate_zigbee::nvitems::{
    self, AddressManagerEntry, ApsLinkKeyDataEntry, ApsTcLinkKeyEntry, DeviceLinkKey,
    LinkKeySource, LinkKeyTables, Nib, NvLayout, NwkKeyDescriptor, NwkSecMaterialEntry, TclkSeed,
};
use fieldgate_zigbee::zcl::clusters::{
    self, id as cluster_id, OnOffCommand, Scale, ScalingContext,
};
use fieldgate_zigbee::zcl::{
    AttributeRecord, DataType, ReportingConfig, ZclCommand, ZclFrame, ZclValue,
};
use fieldgate_zigbee::znp::{self, nv, AfRegister, BindTarget, NodeDescriptor, SimpleDescriptor};
use fieldgate_zigbee::{IeeeAddr, ZnpCommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::link::Link;
use super::{Driver, DriverFuture, DriverIo, Kept};
use crate::model::{
    DeviceCommand, DeviceEvent, DeviceEventKind, DeviceInfo, PowerSource, RadioCommand, RadioState,
    Reading, Value,
};
use crate::secrets::Secret;

/// How long a partial frame may sit with no new byte before it is declared stale.
const STALL: Duration = Duration::from_millis(60);
/// First ping, before the bootloader-skip fallback (ZH `skipBootloader`).
const FIRST_PING_TIMEOUT: Duration = Duration::from_millis(250);
/// Wait after the bootloader-skip byte before pinging again.
const BOOTLOADER_SKIP_WAIT: Duration = Duration::from_secs(1);
/// SYS_RESET_IND after a requested reset (ZH: 30 s).
const RESET_TIMEOUT: Duration = Duration::from_secs(30);
/// STATE_CHANGE_IND(9) after STARTUP_FROM_APP or formation (ZH: 40 s / 100 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a device command may wait for its AF_DATA_CONFIRM.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);
/// Failed watchdog pings in a row before start-up is re-run.
const WATCHDOG_FAILURES: u32 = 2;
/// First retry of a stalled interview that the device did not resume by speaking; doubles
/// per stall up to [`STALL_RETRY_MAX`].
const STALL_RETRY: Duration = Duration::from_secs(30);
const STALL_RETRY_MAX: Duration = Duration::from_secs(15 * 60);
/// Frames kept per unknown network address while its IEEE address is looked up.
const UNRESOLVED_BUFFER: usize = 16;
/// The coordinator's application endpoint.
const OUR_ENDPOINT: u8 = 1;
/// Credential kind of the network key (owner `radio:<name>`).
pub const NETWORK_KEY_KIND: &str = "zigbee_network_key";
/// Credential kind of a rotation's new network key until the switch (owner `radio:<name>`).
pub const PENDING_NETWORK_KEY_KIND: &str = "zigbee_network_key_pending";
/// Credential kind of a device's install code (owner: the device id, `zigbee:0x…`).
pub const INSTALL_CODE_KIND: &str = "zigbee_install_code";
/// Broadcast to every device, sleepy end devices included (through their parents).
const BROADCAST_ALL: u16 = 0xFFFF;
/// Longest `key_switch_delay` accepted.
pub const MAX_KEY_SWITCH_DELAY: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// Options

/// `[radio.options]` for a Zigbee radio.
#[derive(Debug, Clone, PartialEq)]
pub struct ZigbeeOptions {
    /// 11–26; used when forming (default 11) and checked when resuming.
    pub channel: Option<u8>,
    pub pan_id: Option<u16>,
    pub extended_pan_id: Option<u64>,
    /// Time to wait for an SRSP (ZH: 6 s).
    pub sreq_timeout: Duration,
    /// Keep-alive ping period (ZHA: 30 s).
    pub watchdog_interval: Duration,
    /// Time to wait for a device's answer during an interview.
    pub response_timeout: Duration,
    /// Tries per interview step before waiting for the device to speak again.
    pub interview_attempts: u32,
    /// Time between sending a new network key and switching to it, so that every device,
    /// sleepy ones polling their parent included, has it (default 30 s).
    pub key_switch_delay: Duration,
}

impl Default for ZigbeeOptions {
    fn default() -> Self {
        Self {
            channel: None,
            pan_id: None,
            extended_pan_id: None,
            sreq_timeout: Duration::from_secs(6),
            watchdog_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(5),
            interview_attempts: 3,
            key_switch_delay: Duration::from_secs(30),
        }
    }
}

const KNOWN_OPTIONS: &str = "channel, pan_id, extended_pan_id, sreq_timeout, watchdog_interval, response_timeout, interview_attempts, key_switch_delay";

impl ZigbeeOptions {
    /// Validates `[radio.options]`; errors name the key and say what is allowed.
    pub fn parse(table: &toml::Table) -> Result<Self> {
        let mut o = Self::default();
        for (key, value) in table {
            match key.as_str() {
                "channel" => {
                    let c = value
                        .as_integer()
                        .filter(|c| (11..=26).contains(c))
                        .ok_or_else(|| {
                            anyhow!("zigbee option `channel` must be an integer from 11 to 26, got {value}")
                        })?;
                    o.channel = u8::try_from(c).ok();
                }
                "pan_id" => {
                    let p = int_or_hex(value)
                        .filter(|p| (0x0001..=0xFFFE).contains(p))
                        .ok_or_else(|| {
                            anyhow!("zigbee option `pan_id` must be 0x0001–0xFFFE (integer or \"0x1a62\"), got {value}")
                        })?;
                    o.pan_id = u16::try_from(p).ok();
                }
                "extended_pan_id" => {
                    let text = value.as_str().ok_or_else(|| {
                        anyhow!("zigbee option `extended_pan_id` must be a string of 16 hex digits, e.g. \"0xdddddddddddddddd\"")
                    })?;
                    let e: IeeeAddr = text
                        .parse()
                        .map_err(|e| anyhow!("zigbee option `extended_pan_id`: {e}"))?;
                    if e.0 == 0 || e.0 == u64::MAX {
                        bail!("zigbee option `extended_pan_id` may not be all zeros or all ones");
                    }
                    o.extended_pan_id = Some(e.0);
                }
                "sreq_timeout" => o.sreq_timeout = duration(key, value)?,
                "watchdog_interval" => o.watchdog_interval = duration(key, value)?,
                "response_timeout" => o.response_timeout = duration(key, value)?,
                "key_switch_delay" => {
                    o.key_switch_delay = duration(key, value)?;
                    if o.key_switch_delay > MAX_KEY_SWITCH_DELAY {
                        bail!("zigbee option `key_switch_delay` must be at most 5min");
                    }
                }
                "interview_attempts" => {
                    o.interview_attempts = value
                        .as_integer()
                        .filter(|n| (1..=20).contains(n))
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            anyhow!("zigbee option `interview_attempts` must be 1–20")
                        })?;
                }
                other => bail!("unknown zigbee option `{other}` (known: {KNOWN_OPTIONS})"),
            }
        }
        Ok(o)
    }
}

fn int_or_hex(v: &toml::Value) -> Option<i64> {
    match v {
        toml::Value::Integer(i) => Some(*i),
        toml::Value::String(s) => {
            let t = s.trim();
            match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => i64::from_str_radix(hex, 16).ok(),
                None => t.parse().ok(),
            }
        }
        _ => None,
    }
}

fn duration(key: &str, v: &toml::Value) -> Result<Duration> {
    let d = v
        .as_str()
        .and_then(|s| humantime::parse_duration(s).ok())
        .ok_or_else(|| {
            anyhow!("zigbee option `{key}` must be a duration such as \"6s\" or \"500ms\", got {v}")
        })?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
        bail!("zigbee option `{key}` must be between 10ms and 1h");
    }
    Ok(d)
}

// ---------------------------------------------------------------------------------------
// Devices and interviews

/// One step of an interview or of the reporting set-up after it.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    NodeDesc,
    ActiveEp,
    SimpleDesc(u8),
    Basic(u8),
    Setup(Setup),
}

/// Reporting set-up for the clusters this driver knows.
#[derive(Debug, Clone, PartialEq)]
enum Setup {
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
struct Waiting {
    step: Step,
    tsn: Option<u8>,
    sent_at: Instant,
    deadline: Instant,
    attempts: u32,
}

/// What the driver knows about one device. Survives link re-opens (it lives in the driver).
#[derive(Debug, Clone)]
struct Device {
    ieee: IeeeAddr,
    nwk: u16,
    rx_on_when_idle: bool,
    node: Option<NodeDescriptor>,
    endpoints: Option<Vec<u8>>,
    simple: BTreeMap<u8, SimpleDescriptor>,
    basic: Option<BasicInfo>,
    setup: Vec<Setup>,
    setup_done: usize,
    waiting: Option<Waiting>,
    /// Out of attempts: waits for the device to speak, or for `retry_at`.
    stalled: bool,
    /// Stalls in a row, for the backoff of `retry_at`.
    stalls: u32,
    retry_at: Option<Instant>,
    interviewed: bool,
    scaling: HashMap<u8, ScalingContext>,
}

#[derive(Debug, Clone, Default)]
struct BasicInfo {
    manufacturer: Option<String>,
    model: Option<String>,
    sw_build: Option<String>,
    power_source: Option<u8>,
}

impl Device {
    fn new(ieee: IeeeAddr, nwk: u16) -> Self {
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
        }
    }

    fn native(&self) -> String {
        self.ieee.to_string()
    }

    /// The next thing to ask, or `None` when interview and set-up are complete.
    fn next_step(&self) -> Option<Step> {
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

    fn endpoint_with(&self, cluster: u16) -> Option<u8> {
        self.simple
            .values()
            .find(|d| d.in_clusters.contains(&cluster))
            .map(|d| d.endpoint)
    }

    fn power_source(&self) -> Option<PowerSource> {
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

    fn info(&self) -> DeviceInfo {
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
        }
    }

    /// Reporting set-up for every known cluster the device serves.
    fn plan_setup(&mut self) {
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

fn report(attribute_id: u16, data_type: DataType, change: Option<ZclValue>) -> ReportingConfig {
    ReportingConfig::Send {
        attribute_id,
        data_type,
        min_interval: 5,
        max_interval: 300,
        reportable_change: change,
    }
}

fn setup_for(ep: u8, cluster: u16) -> Vec<Setup> {
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

/// Attributes that configure other attributes (scaling, types) rather than measure anything.
fn is_config_attribute(cluster: u16, attr: u16) -> bool {
    match cluster {
        cluster_id::BASIC => true,
        cluster_id::METERING => matches!(attr, 0x0300..=0x0303),
        cluster_id::ELECTRICAL_MEASUREMENT => attr == 0x0000 || (0x0600..=0x0605).contains(&attr),
        cluster_id::IAS_ZONE => attr != 0x0002,
        cluster_id::PRESSURE => attr == 0x0014,
        _ => false,
    }
}

/// Whether the factors an attribute's scaling needs are known.
fn scaling_known(scale: Scale, ctx: &ScalingContext) -> bool {
    match scale {
        Scale::MeteringEnergy | Scale::MeteringPower => {
            ctx.metering_multiplier.is_some() && ctx.metering_divisor.is_some()
        }
        Scale::AcVoltage => ctx.ac_voltage_multiplier.is_some() && ctx.ac_voltage_divisor.is_some(),
        Scale::AcCurrent => ctx.ac_current_multiplier.is_some() && ctx.ac_current_divisor.is_some(),
        Scale::AcPower => ctx.ac_power_multiplier.is_some() && ctx.ac_power_divisor.is_some(),
        _ => true,
    }
}

fn reading(name: &str, value: Value, unit: Option<&str>) -> Reading {
    Reading {
        name: name.to_string(),
        value,
        unit: unit.map(str::to_string),
    }
}

/// IAS zone status bits as readings (a contact switch's alarm1 means "open").
fn zone_readings(zone_status: u16) -> Vec<Reading> {
    let s = clusters::IasZoneStatus::from(zone_status);
    vec![
        reading("contact", Value::Bool(!s.alarm1), None),
        reading("tamper", Value::Bool(s.tamper), None),
        reading("battery_low", Value::Bool(s.battery_low), None),
    ]
}

/// Normalized readings in a report or read response, skipping what cannot be scaled yet.
fn frame_readings(cluster: u16, frame: &ZclFrame, ctx: &ScalingContext) -> Vec<Reading> {
    let mut out = Vec::new();
    for (attr, value) in frame.attribute_values() {
        if cluster == cluster_id::IAS_ZONE && attr == 0x0002 {
            if let Some(v) = value.as_i64().and_then(|v| u16::try_from(v).ok()) {
                out.extend(zone_readings(v));
            }
            continue;
        }
        if is_config_attribute(cluster, attr) {
            continue;
        }
        let Some(def) = clusters::attribute(cluster, attr) else {
            tracing::debug!(
                cluster,
                attr,
                "attribute without a known meaning; not a reading"
            );
            continue;
        };
        if !scaling_known(def.scale, ctx) {
            tracing::debug!(
                cluster,
                attr,
                "scaling factors not known yet; reading held back"
            );
            continue;
        }
        let r = clusters::normalize(cluster, attr, value, ctx);
        let value = match r.value {
            clusters::ReadingValue::Number(n) => Value::Number(n),
            clusters::ReadingValue::Bool(b) => Value::Bool(b),
            clusters::ReadingValue::Text(t) => Value::Text(t),
            clusters::ReadingValue::Raw(_) | clusters::ReadingValue::Invalid => continue,
        };
        out.push(reading(def.name, value, r.unit));
    }
    out
}

fn level_from_percent(percent: u8) -> u8 {
    let p = u32::from(percent.min(100));
    u8::try_from((p * 254 + 50) / 100).unwrap_or(254)
}

// ---------------------------------------------------------------------------------------
// Driver

/// The Zigbee ZNP driver. Device knowledge (interview progress included) outlives a link.
#[derive(Default)]
pub struct ZigbeeDriver {
    devices: HashMap<IeeeAddr, Device>,
    /// The policy's "joins must use install codes", applied after every coordinator start.
    require_install_codes: bool,
}

impl ZigbeeDriver {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Driver for ZigbeeDriver {
    fn run<'a>(&'a mut self, link: Link, io: &'a mut DriverIo) -> DriverFuture<'a> {
        Box::pin(async move {
            let options = ZigbeeOptions::parse(&io.options)
                .with_context(|| format!("radio `{}`: invalid [radio.options]", io.radio))?;
            let counters = io.counters.clone();
            let mut session = Session {
                reader: FrameReader {
                    link,
                    parser: MtStreamParser::from_ncp(),
                    reported: MtParserStats::default(),
                    ready: VecDeque::new(),
                    buf: vec![0; 1024],
                },
                io,
                opts: options,
                devices: &mut self.devices,
                stats: counters,
                require_install_codes: &mut self.require_install_codes,
                rotation: None,
                pending: VecDeque::new(),
                coordinator: IeeeAddr(0),
                tsn: 0,
                trans_id: 0,
                commands: HashMap::new(),
                refreshes: Vec::new(),
                unresolved: HashMap::new(),
                next_watchdog: Instant::now(),
                ping_failures: 0,
                restart_needed: true,
            };
            session.run().await
        })
    }
}

/// The link plus the frame parser; split from [`Session`] so a read can race the command
/// channel in one `select!`.
struct FrameReader {
    link: Link,
    parser: MtStreamParser,
    /// Parser counters as last logged.
    reported: MtParserStats,
    ready: VecDeque<MtFrame>,
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next frame, or `None` at `deadline`. Cancel-safe: bytes read are parsed at once.
    async fn next_frame(&mut self, deadline: Instant) -> Result<Option<MtFrame>> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            if let Some(f) = self.parser.next_frame() {
                return Ok(Some(f));
            }
            let stall = (self.parser.buffered() > 0).then(|| Instant::now() + STALL);
            let until = stall.map_or(deadline, |s| s.min(deadline));
            match tokio::time::timeout_at(until, self.link.read(&mut self.buf)).await {
                Ok(Ok(0)) => bail!("the coordinator link closed"),
                Ok(Ok(n)) => self.parser.push(self.buf.get(..n).unwrap_or_default()),
                Ok(Err(e)) => return Err(e).context("reading from the coordinator"),
                Err(_) if Instant::now() >= deadline => return Ok(None),
                Err(_) => {
                    let before = self.parser.stats();
                    let frames = self.parser.flush_stalled();
                    tracing::debug!(
                        dropped = self.parser.stats().dropped_bytes - before.dropped_bytes,
                        recovered = frames.len(),
                        "stale partial frame dropped after the line went quiet"
                    );
                    self.ready.extend(frames);
                }
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.link
            .write_all(bytes)
            .await
            .context("writing to the coordinator")?;
        self.link
            .flush()
            .await
            .context("writing to the coordinator")
    }
}

/// Why a request did not succeed (the link itself is fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Timeout,
    /// RPC error SRSP: the NCP did not understand the request.
    Rpc(u8),
    /// A status SRSP with a non-zero status.
    Status(u8),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Timeout => write!(f, "no SRSP in time"),
            Fail::Rpc(code) => {
                // Z-Stack's MT_RPC_ERR_* codes (zigpy-znp `commands/rpc_error.py`).
                let what = match code {
                    1 => "unknown subsystem",
                    2 => "unknown command",
                    3 => "bad parameter",
                    4 => "bad length",
                    _ => "unreadable RPC error",
                };
                write!(f, "RPC error {code} ({what})")
            }
            Fail::Status(s) => write!(f, "status {s:#04x}"),
        }
    }
}

struct PendingCommand {
    command_id: String,
    native: String,
    deadline: Instant,
}

/// A key rotation between its update and its switch.
struct PendingRotation {
    previous_seq: u8,
    seq: u8,
    key: Secret,
    sent_at: Instant,
    due: Instant,
    reply: tokio::sync::oneshot::Sender<Result<crate::model::KeyRotated, String>>,
}

/// A refresh ([`RadioCommand::Read`]) in progress: the Read Attributes requests not yet
/// answered, as (cluster, ZCL transaction sequence number).
struct PendingRefresh {
    command_id: String,
    ieee: IeeeAddr,
    waiting: Vec<(u16, u8)>,
    answered: usize,
    deadline: Instant,
}

/// What a refresh reads: per endpoint and cluster, the attributes reporting is set up for
/// (and an IAS zone's status).
fn refresh_plan(dev: &Device) -> Vec<(u8, u16, Vec<u16>)> {
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

struct Session<'a> {
    reader: FrameReader,
    io: &'a mut DriverIo,
    opts: ZigbeeOptions,
    devices: &'a mut HashMap<IeeeAddr, Device>,
    stats: std::sync::Arc<super::RadioCounters>,
    require_install_codes: &'a mut bool,
    rotation: Option<PendingRotation>,
    /// Indications received while waiting for an SRSP, in arrival order.
    pending: VecDeque<ZnpCommand>,
    coordinator: IeeeAddr,
    tsn: u8,
    trans_id: u8,
    commands: HashMap<u8, PendingCommand>,
    refreshes: Vec<PendingRefresh>,
    /// Frames from network addresses not mapped to an IEEE address yet.
    unresolved: HashMap<u16, (Instant, Vec<ZnpCommand>)>,
    next_watchdog: Instant,
    ping_failures: u32,
    restart_needed: bool,
}

impl Session<'_> {
    async fn run(&mut self) -> Result<()> {
        loop {
            if self.restart_needed {
                self.startup().await?;
                continue;
            }
            while let Some(cmd) = self.pending.pop_front() {
                self.on_indication(cmd).await?;
                if self.restart_needed {
                    break;
                }
            }
            if self.restart_needed {
                continue;
            }
            let deadline = self.next_timer();
            tokio::select! {
                biased;
                cmd = self.io.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await?,
                    None => return Ok(()),
                },
                frame = self.reader.next_frame(deadline) => match frame? {
                    Some(frame) => self.on_idle_frame(frame),
                    None => self.on_timers().await?,
                },
            }
        }
    }

    // ---- plumbing ----

    fn next_tsn(&mut self) -> u8 {
        self.tsn = self.tsn.wrapping_add(1);
        self.tsn
    }

    fn next_trans_id(&mut self) -> u8 {
        self.trans_id = self.trans_id.wrapping_add(1);
        self.trans_id
    }

    fn decode(&mut self, frame: &MtFrame) -> Option<ZnpCommand> {
        match ZnpCommand::decode(frame) {
            Ok(c) => Some(c),
            Err(e) => {
                super::RadioCounters::count(&self.stats.undecodable);
                tracing::warn!(radio = %self.io.radio, subsystem = ?frame.subsystem, cmd_id = frame.cmd_id, error = %e, "undecodable ZNP frame dropped");
                None
            }
        }
    }

    /// A frame that arrived while no SREQ was outstanding.
    fn on_idle_frame(&mut self, frame: MtFrame) {
        if frame.cmd_type == MtType::Srsp {
            tracing::debug!(radio = %self.io.radio, subsystem = ?frame.subsystem, cmd_id = frame.cmd_id, "late SRSP ignored");
            return;
        }
        if let Some(cmd) = self.decode(&frame) {
            self.pending.push_back(cmd);
        }
    }

    /// Sends an SREQ and waits for its SRSP; everything else that arrives is queued.
    /// `Err` only when the link is broken.
    async fn request(&mut self, cmd: &ZnpCommand) -> Result<Result<ZnpCommand, Fail>> {
        self.request_with(cmd, self.opts.sreq_timeout).await
    }

    async fn request_with(
        &mut self,
        cmd: &ZnpCommand,
        timeout: Duration,
    ) -> Result<Result<ZnpCommand, Fail>> {
        let (subsystem, cmd_id) = cmd
            .expected_srsp()
            .ok_or_else(|| anyhow!("{} is not an SREQ", cmd.name()))?;
        let bytes = cmd
            .to_bytes()
            .with_context(|| format!("encoding {}", cmd.name()))?;
        self.reader.write(&bytes).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let Some(frame) = self.reader.next_frame(deadline).await? else {
                super::RadioCounters::count(&self.stats.timeouts);
                tracing::warn!(radio = %self.io.radio, request = cmd.name(), timeout = ?timeout, "SREQ timed out");
                return Ok(Err(Fail::Timeout));
            };
            if frame.cmd_type != MtType::Srsp {
                if let Some(c) = self.decode(&frame) {
                    self.pending.push_back(c);
                }
                continue;
            }
            let ours = (frame.subsystem == subsystem && frame.cmd_id == cmd_id)
                || frame.subsystem == Subsystem::RpcError;
            if !ours {
                tracing::debug!(radio = %self.io.radio, subsystem = ?frame.subsystem, cmd_id = frame.cmd_id, "stray SRSP ignored");
                continue;
            }
            return Ok(match self.decode(&frame) {
                Some(ZnpCommand::RpcError { error_code, .. }) => Err(Fail::Rpc(error_code)),
                Some(ZnpCommand::StatusRsp { status: 0, .. }) => Ok(ZnpCommand::StatusRsp {
                    subsystem,
                    cmd_id,
                    status: 0,
                }),
                Some(ZnpCommand::StatusRsp { status, .. }) => Err(Fail::Status(status)),
                Some(other) => Ok(other),
                None => Err(Fail::Rpc(0xFF)),
            });
        }
    }

    /// A request that must succeed during start-up.
    async fn must(&mut self, cmd: &ZnpCommand) -> Result<ZnpCommand> {
        self.request(cmd)
            .await?
            .map_err(|f| anyhow!("coordinator start-up: {} failed: {f}", cmd.name()))
    }

    /// Writes an AREQ (no SRSP).
    async fn send_areq(&mut self, cmd: &ZnpCommand) -> Result<()> {
        let bytes = cmd.to_bytes()?;
        self.reader.write(&bytes).await
    }

    /// Waits for an indication matching `want` (looking at the queue first).
    async fn wait_for(
        &mut self,
        timeout: Duration,
        want: impl Fn(&ZnpCommand) -> bool,
    ) -> Result<Option<ZnpCommand>> {
        if let Some(i) = self.pending.iter().position(&want) {
            return Ok(self.pending.remove(i));
        }
        let deadline = Instant::now() + timeout;
        while let Some(frame) = self.reader.next_frame(deadline).await? {
            if frame.cmd_type == MtType::Srsp {
                continue;
            }
            if let Some(c) = self.decode(&frame) {
                if want(&c) {
                    return Ok(Some(c));
                }
                self.pending.push_back(c);
            }
        }
        Ok(None)
    }

    async fn emit(&mut self, native_address: String, kind: DeviceEventKind) -> Result<()> {
        let ev = DeviceEvent {
            radio: self.io.radio.clone(),
            protocol: self.io.protocol,
            native_address,
            received_at: SystemTime::now(),
            kind,
        };
        self.io
            .events
            .send(ev)
            .await
            .map_err(|_| anyhow!("the hub stopped taking events"))
    }

    async fn nv_read(&mut self, id: u16) -> Result<Option<Vec<u8>>> {
        match self
            .request(&ZnpCommand::SysOsalNvReadReq { id, offset: 0 })
            .await?
        {
            Ok(ZnpCommand::SysOsalNvReadRsp { status: 0, value }) => Ok(Some(value)),
            Ok(_) => Ok(None),
            Err(Fail::Timeout) => {
                bail!("coordinator start-up: NV read of item {id:#06x} timed out")
            }
            Err(_) => Ok(None),
        }
    }

    async fn nv_write(&mut self, id: u16, value: Vec<u8>) -> Result<()> {
        self.must(&ZnpCommand::SysOsalNvWriteReq {
            id,
            offset: 0,
            value,
        })
        .await
        .with_context(|| format!("writing NV item {id:#06x}"))
        .map(|_| ())
    }

    /// A whole OSAL NV item, read as zigbee-herdsman's `AdapterNvMemory.readItem` does:
    /// OSAL_NV_LENGTH, then OSAL_NV_READ_EXT from growing offsets until all of it is in.
    /// `Ok(None)`: the item does not exist. Inner `Err`: the coordinator refused or
    /// answered nonsense (counted in `bad_nv_items`).
    async fn nv_read_item(&mut self, id: u16) -> Result<Result<Option<Vec<u8>>, String>> {
        let length = match self.request(&ZnpCommand::SysOsalNvLengthReq { id }).await? {
            Ok(ZnpCommand::SysOsalNvLengthRsp { length }) => usize::from(length),
            Ok(other) => {
                return Ok(Err(
                    self.nv_fault(id, format!("unexpected {}", other.name()))
                ))
            }
            Err(f) => return Ok(Err(self.nv_fault(id, format!("OSAL_NV_LENGTH failed: {f}")))),
        };
        if length == 0 {
            return Ok(Ok(None));
        }
        let mut value = Vec::with_capacity(length);
        while value.len() < length {
            let offset = u16::try_from(value.len()).unwrap_or(u16::MAX);
            match self
                .request(&ZnpCommand::SysOsalNvReadExtReq { id, offset })
                .await?
            {
                Ok(ZnpCommand::SysOsalNvReadExtRsp { status: 0, value: chunk })
                    if !chunk.is_empty() && value.len() + chunk.len() <= length =>
                {
                    value.extend_from_slice(&chunk);
                }
                Ok(ZnpCommand::SysOsalNvReadExtRsp { status: 0, value: chunk }) => {
                    return Ok(Err(self.nv_fault(
                        id,
                        format!(
                            "OSAL_NV_READ_EXT at offset {offset} gave {} byte(s) of a {length}-byte item",
                            chunk.len()
                        ),
                    )))
                }
                Ok(ZnpCommand::SysOsalNvReadExtRsp { status, .. }) => {
                    return Ok(Err(self.nv_fault(
                        id,
                        format!("OSAL_NV_READ_EXT at offset {offset}: status {status:#04x}"),
                    )))
                }
                Ok(other) => {
                    return Ok(Err(self.nv_fault(id, format!("unexpected {}", other.name()))))
                }
                Err(f) => {
                    return Ok(Err(
                        self.nv_fault(id, format!("OSAL_NV_READ_EXT failed: {f}"))
                    ))
                }
            }
        }
        Ok(Ok(Some(value)))
    }

    /// One entry of an extended NV table (SimpleLink Z-Stack 3.x.0): SYS_NV_LENGTH, then one
    /// SYS_NV_READ of that length, as herdsman's `readExtendedTableEntry` does.
    async fn nv_read_ext(
        &mut self,
        item_id: u16,
        sub_id: u16,
    ) -> Result<Result<Option<Vec<u8>>, String>> {
        let key = (nv::SYSTEM_ZSTACK, item_id, sub_id);
        let what = format!("extended NV item {item_id:#06x}/{sub_id}");
        let length = match self
            .request(&ZnpCommand::SysNvLengthReq {
                sys_id: key.0,
                item_id,
                sub_id,
            })
            .await?
        {
            Ok(ZnpCommand::SysNvLengthRsp { length }) => length,
            Ok(other) => {
                return Ok(Err(
                    self.nv_fault_named(&what, format!("unexpected {}", other.name()))
                ))
            }
            Err(f) => {
                return Ok(Err(
                    self.nv_fault_named(&what, format!("SYS_NV_LENGTH failed: {f}"))
                ))
            }
        };
        if length == 0 {
            return Ok(Ok(None));
        }
        let Ok(len) = u8::try_from(length) else {
            return Ok(Err(self.nv_fault_named(
                &what,
                format!("{length} bytes is more than one SYS_NV_READ carries"),
            )));
        };
        match self
            .request(&ZnpCommand::SysNvReadReq {
                sys_id: key.0,
                item_id,
                sub_id,
                offset: 0,
                len,
            })
            .await?
        {
            Ok(ZnpCommand::SysNvReadRsp { status: 0, value })
                if value.len() == usize::from(len) =>
            {
                Ok(Ok(Some(value)))
            }
            Ok(ZnpCommand::SysNvReadRsp { status: 0, value }) => Ok(Err(self.nv_fault_named(
                &what,
                format!("SYS_NV_READ gave {} byte(s) of {len}", value.len()),
            ))),
            Ok(ZnpCommand::SysNvReadRsp { status, .. }) => Ok(Err(
                self.nv_fault_named(&what, format!("SYS_NV_READ: status {status:#04x}"))
            )),
            Ok(other) => Ok(Err(
                self.nv_fault_named(&what, format!("unexpected {}", other.name()))
            )),
            Err(f) => Ok(Err(
                self.nv_fault_named(&what, format!("SYS_NV_READ failed: {f}"))
            )),
        }
    }

    fn nv_fault(&mut self, id: u16, detail: String) -> String {
        self.nv_fault_named(&format!("NV item {id:#06x}"), detail)
    }

    /// Counts and words a bad NV answer (the values themselves are never in the text).
    fn nv_fault_named(&mut self, what: &str, detail: String) -> String {
        super::RadioCounters::count(&self.stats.bad_nv_items);
        format!("{what}: {detail}")
    }

    /// The NIB and the struct layout its length shows (the layout of every NV struct of this
    /// coordinator): `Ok(None)` when the coordinator has none (not commissioned).
    async fn read_nib(&mut self) -> Result<Result<Option<(Nib, NvLayout)>, String>> {
        Ok(match self.nv_read_item(nv::NIB).await? {
            Ok(Some(raw)) => match Nib::parse(&raw) {
                Ok(nib) => Ok(Some((
                    nib,
                    Nib::layout_of(raw.len()).unwrap_or(NvLayout::Aligned),
                ))),
                Err(e) => Err(self.nv_fault(nv::NIB, format!("the NIB does not parse: {e}"))),
            },
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        })
    }

    /// The network security material table: the extended NV table on Z-Stack 3.x.0
    /// (product 1), legacy items 0x0075.. otherwise (zigbee-herdsman 11.1.1
    /// `adapter-backup.js getNetworkSecurityMaterialTable`). Stops at the first absent entry.
    async fn sec_material_table(
        &mut self,
        product: u8,
    ) -> Result<Result<Vec<NwkSecMaterialEntry>, String>> {
        /// Bound on extended entries, so a firmware that answers for every subId cannot
        /// keep the driver reading forever.
        const MAX_EXTENDED_ENTRIES: u16 = 64;
        let mut table = Vec::new();
        let extended = product == 1;
        let count = if extended {
            MAX_EXTENDED_ENTRIES
        } else {
            nv::LEGACY_NWK_SEC_MATERIAL_TABLE_LEN
        };
        for i in 0..count {
            let raw = if extended {
                self.nv_read_ext(nv::EX_NWK_SEC_MATERIAL_TABLE, i).await?
            } else {
                self.nv_read_item(nv::LEGACY_NWK_SEC_MATERIAL_TABLE_START + i)
                    .await?
            };
            let raw = match raw {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return Ok(Err(e)),
            };
            match NwkSecMaterialEntry::parse(&raw) {
                Ok(e) => table.push(e),
                Err(e) => {
                    return Ok(Err(self.nv_fault_named(
                        "network security material entry",
                        format!("entry {i} does not parse: {e}"),
                    )))
                }
            }
        }
        Ok(Ok(table))
    }

    /// One NV table kept entry by entry: the extended table `ext_item` on Z-Stack 3.x.0
    /// (product 1), legacy items `legacy_start`.. (at most `legacy_len`) otherwise. Stops at
    /// the first absent entry, as zigbee-herdsman 11.1.1 `AdapterNvMemory.readTable` does.
    async fn nv_entry_table<T>(
        &mut self,
        product: u8,
        (ext_item, legacy_start, legacy_len): (u16, u16, u16),
        what: &str,
        parse: fn(&[u8]) -> fieldgate_zigbee::Result<T>,
    ) -> Result<Result<Vec<T>, String>> {
        /// Bound on extended entries, so a firmware that answers for every subId cannot
        /// keep the driver reading forever.
        const MAX_EXTENDED_ENTRIES: u16 = 512;
        let extended = product == 1;
        let count = if extended {
            MAX_EXTENDED_ENTRIES
        } else {
            legacy_len
        };
        let mut table = Vec::new();
        for i in 0..count {
            let raw = if extended {
                self.nv_read_ext(ext_item, i).await?
            } else {
                self.nv_read_item(legacy_start + i).await?
            };
            let raw = match raw {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return Ok(Err(e)),
            };
            match parse(&raw) {
                Ok(e) => table.push(e),
                Err(e) => {
                    return Ok(Err(
                        self.nv_fault_named(what, format!("entry {i} does not parse: {e}"))
                    ))
                }
            }
        }
        Ok(Ok(table))
    }

    /// The tables that hold the devices' APS link keys, read as zigbee-herdsman 11.1.1
    /// `adapter-backup.js createBackup` reads them: the address manager (extended table on
    /// Z-Stack 3.x.0, the inline ADDRMGR item on 3.0.x, in the NIB's `layout`), the security
    /// manager (APS_LINK_KEY_TABLE), the APS link key data and TC link key tables and the
    /// TCLK seed. An absent item is an empty table; one that does not parse fails the backup.
    async fn link_key_tables(
        &mut self,
        product: u8,
        layout: NvLayout,
    ) -> Result<Result<LinkKeyTables, String>> {
        macro_rules! step {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                }
            };
        }
        let address_manager = if product == 1 {
            step!(
                self.nv_entry_table(
                    product,
                    (nv::EX_ADDRMGR, 0, 0),
                    "address manager entry",
                    AddressManagerEntry::parse,
                )
                .await?
            )
        } else {
            match step!(self.nv_read_item(nv::ADDRMGR).await?) {
                Some(raw) => step!(nvitems::parse_address_manager_table(&raw, layout).map_err(
                    |e| self.nv_fault(
                        nv::ADDRMGR,
                        format!("the address manager table does not parse: {e}")
                    )
                )),
                None => Vec::new(),
            }
        };
        let security_manager = match step!(self.nv_read_item(nv::APS_LINK_KEY_TABLE).await?) {
            Some(raw) => step!(
                nvitems::parse_security_manager_table(&raw, layout).map_err(|e| self.nv_fault(
                    nv::APS_LINK_KEY_TABLE,
                    format!("the security manager table does not parse: {e}")
                ))
            ),
            None => Vec::new(),
        };
        let aps_key_data = step!(
            self.nv_entry_table(
                product,
                (
                    nv::EX_APS_KEY_DATA_TABLE,
                    nv::APS_LINK_KEY_DATA_START,
                    nv::LEGACY_APS_LINK_KEY_DATA_LEN,
                ),
                "APS link key data entry",
                ApsLinkKeyDataEntry::parse,
            )
            .await?
        );
        let tclk = step!(
            self.nv_entry_table(
                product,
                (
                    nv::EX_TCLK_TABLE,
                    nv::LEGACY_TCLK_TABLE_START,
                    nv::LEGACY_TCLK_TABLE_LEN,
                ),
                "TC link key entry",
                ApsTcLinkKeyEntry::parse,
            )
            .await?
        );
        let tclk_seed = match step!(self.nv_read_item(nv::TCLK_SEED).await?) {
            Some(raw) => Some(step!(TclkSeed::parse(&raw).map_err(
                |e| self.nv_fault(nv::TCLK_SEED, format!("the TCLK seed does not parse: {e}"))
            ))),
            None => None,
        };
        Ok(Ok(LinkKeyTables {
            address_manager,
            security_manager,
            aps_key_data,
            tclk,
            tclk_seed,
            key_nv_ids_are_legacy_items: product != 1,
        }))
    }

    // ---- start-up ----

    async fn ping(&mut self, timeout: Duration) -> Result<bool> {
        Ok(self
            .request_with(&ZnpCommand::SysPingReq, timeout)
            .await?
            .is_ok())
    }

    async fn startup(&mut self) -> Result<()> {
        let _ = self.io.state.send(RadioState::Starting);
        super::RadioCounters::count(&self.stats.startups);
        self.pending.clear();
        if let Some(r) = self.rotation.take() {
            self.fail_rotation(
                r,
                "the coordinator restarted before the switch; the old network key stays active"
                    .into(),
            )
            .await;
        }
        // Commands in flight died with the coordinator's state.
        for (_, p) in std::mem::take(&mut self.commands) {
            self.emit(
                p.native,
                DeviceEventKind::CommandResult {
                    command_id: p.command_id,
                    ok: false,
                    detail: "coordinator restarted before AF_DATA_CONFIRM".into(),
                },
            )
            .await?;
        }
        for d in self.devices.values_mut() {
            d.waiting = None;
            d.stalled = d.next_step().is_some();
            d.retry_at = d.stalled.then(|| Instant::now() + Duration::from_secs(2));
        }

        if !self.ping(FIRST_PING_TIMEOUT).await? {
            tracing::info!(radio = %self.io.radio, "no answer to SYS_PING: sending the bootloader-skip byte");
            self.reader.write(&[0xEF; 256]).await?;
            tokio::time::sleep(BOOTLOADER_SKIP_WAIT).await;
            if !self.ping(self.opts.sreq_timeout).await? {
                bail!("the coordinator does not answer SYS_PING, also after the bootloader-skip byte (is this a Z-Stack ZNP firmware?)");
            }
        }
        match self.request(&ZnpCommand::SysVersionReq).await? {
            Ok(ZnpCommand::SysVersionRsp {
                product,
                major_rel,
                minor_rel,
                maint_rel,
                revision,
                ..
            }) => {
                tracing::info!(radio = %self.io.radio, product, version = %format!("{major_rel}.{minor_rel}.{maint_rel}"), revision = ?revision, "Z-Stack coordinator");
                if product == 0 {
                    tracing::warn!(radio = %self.io.radio, "Z-Stack 1.2 firmware: this driver targets Z-Stack 3 NV layout");
                }
            }
            other => {
                tracing::warn!(radio = %self.io.radio, result = ?other.err(), "SYS_VERSION failed; assuming Z-Stack 3");
            }
        }

        let configured = self.nv_read(nv::HAS_CONFIGURED_ZSTACK3).await?;
        if configured.as_deref() == Some(&[nv::HAS_CONFIGURED_MAGIC][..]) {
            self.resume().await?;
        } else {
            self.form().await?;
        }

        let register = ZnpCommand::AfRegisterReq(AfRegister {
            endpoint: OUR_ENDPOINT,
            profile_id: 0x0104,
            device_id: 0x0005,
            device_version: 0,
            latency_req: 0,
            in_clusters: vec![0x0000, 0x0006, 0x000A, 0x0019, 0x0500],
            out_clusters: vec![0x0000, 0x0006, 0x0008, 0x0500, 0x0702, 0x0B04],
        });
        match self.request(&register).await? {
            // 0xB8: already registered (the NCP kept it across a host restart).
            Ok(_) | Err(Fail::Status(0xB8)) => {}
            Err(f) => {
                bail!("coordinator start-up: AF_REGISTER of endpoint {OUR_ENDPOINT} failed: {f}")
            }
        }
        match self.must(&ZnpCommand::UtilGetDeviceInfoReq).await? {
            ZnpCommand::UtilGetDeviceInfoRsp {
                ieee, device_state, ..
            } => {
                self.coordinator = ieee;
                if device_state != znp::DEVICE_STATE_COORDINATOR {
                    bail!("coordinator start-up: device state {device_state} after start (expected 9, running as coordinator)");
                }
            }
            other => bail!(
                "coordinator start-up: unexpected answer to UTIL_GET_DEVICE_INFO: {}",
                other.name()
            ),
        }
        self.discard_stale_pending_key().await;
        self.push_stored_install_codes().await?;
        self.apply_install_code_policy().await?;
        self.restart_needed = false;
        self.ping_failures = 0;
        self.next_watchdog = Instant::now() + self.opts.watchdog_interval;
        tracing::info!(radio = %self.io.radio, coordinator = %self.coordinator, devices = self.devices.len(), "zigbee network up");
        let _ = self.io.state.send(RadioState::Up);
        Ok(())
    }

    /// The coordinator has a network: check it matches the options, then start it.
    async fn resume(&mut self) -> Result<()> {
        let pan_id = self
            .nv_read(nv::PANID)
            .await?
            .and_then(|v| Some(u16::from_le_bytes([*v.first()?, *v.get(1)?])));
        let ext = self
            .nv_read(nv::EXTENDED_PAN_ID)
            .await?
            .and_then(|v| <[u8; 8]>::try_from(v.get(..8)?).ok())
            .map(u64::from_le_bytes);
        let channel = self
            .nv_read(nv::CHANLIST)
            .await?
            .and_then(|v| <[u8; 4]>::try_from(v.get(..4)?).ok())
            .map(u32::from_le_bytes)
            .and_then(|mask| (11u8..=26).find(|c| mask & (1 << c) != 0));
        // The key in use: the active key descriptor (a key switch rewrites it) if the
        // firmware keeps one, else the preconfigured key the network was formed with (Z-Stack
        // 1.2). A garbled descriptor leaves the stored credential as it is: the preconfigured
        // item may still hold a key the network switched away from.
        let key = match self.active_key().await? {
            Ok(Some(d)) => Some(Secret::new(d.key.to_vec())),
            Ok(None) => self.nv_read(nv::PRECFGKEY).await?.map(Secret::new),
            Err(e) => {
                tracing::warn!(radio = %self.io.radio, error = %e, "cannot read the coordinator's active network key; the stored credential is left as it is");
                None
            }
        }
        .filter(|k| k.expose().len() == 16 && k.expose().iter().any(|b| *b != 0));
        // The NIB is the network the radio actually runs; the items above are what it was
        // configured with. They must agree, or something else rewrote the coordinator.
        let (pan_id, ext, channel) = match self.read_nib().await? {
            Ok(Some((nib, _))) => {
                let mut differ = Vec::new();
                if pan_id.is_some_and(|p| p != nib.nwk_pan_id) {
                    differ.push("PAN id");
                }
                if ext.is_some_and(|e| e != nib.extended_pan_id) {
                    differ.push("extended PAN id");
                }
                if channel.is_some_and(|c| c != nib.nwk_logical_channel) {
                    differ.push("channel");
                }
                if differ.is_empty() {
                    tracing::debug!(radio = %self.io.radio, nwk_update_id = nib.nwk_update_id, security_level = nib.security_level, "NIB agrees with the network configuration items");
                } else {
                    tracing::warn!(radio = %self.io.radio, differ = %differ.join(", "), nib_pan_id = %format!("{:#06x}", nib.nwk_pan_id), nib_channel = nib.nwk_logical_channel, "the coordinator's NIB disagrees with its configuration items; the NIB (the running network) wins");
                }
                (
                    Some(nib.nwk_pan_id),
                    Some(nib.extended_pan_id),
                    Some(nib.nwk_logical_channel),
                )
            }
            Ok(None) => {
                tracing::warn!(radio = %self.io.radio, "the coordinator has no NIB although it says it is configured");
                (pan_id, ext, channel)
            }
            Err(e) => {
                tracing::warn!(radio = %self.io.radio, error = %e, "cannot read the coordinator's NIB; checking the configuration items only");
                (pan_id, ext, channel)
            }
        };
        let mut mismatch = Vec::new();
        if let (Some(want), Some(have)) = (self.opts.channel, channel) {
            if want != have {
                mismatch.push(format!("channel {have} (options say {want})"));
            }
        }
        if let (Some(want), Some(have)) = (self.opts.pan_id, pan_id) {
            if want != have {
                mismatch.push(format!("PAN id {have:#06x} (options say {want:#06x})"));
            }
        }
        if let (Some(want), Some(have)) = (self.opts.extended_pan_id, ext) {
            if want != have {
                mismatch.push(format!(
                    "extended PAN id {} (options say {})",
                    IeeeAddr(have),
                    IeeeAddr(want)
                ));
            }
        }
        if !mismatch.is_empty() {
            bail!(
                "the coordinator already runs a network with {}; forming a new one would orphan every paired device. \
                 Set [radio.options] to match, or remove them to use the coordinator's network",
                mismatch.join(", ")
            );
        }
        if key.is_none() {
            tracing::warn!(radio = %self.io.radio, "the coordinator's NV holds no network key item");
        }
        tracing::info!(radio = %self.io.radio, channel = ?channel, pan_id = ?pan_id.map(|p| format!("{p:#06x}")), extended_pan_id = ?ext.map(|e| IeeeAddr(e).to_string()), "resuming the existing network");
        let state = match self.must(&ZnpCommand::UtilGetDeviceInfoReq).await? {
            ZnpCommand::UtilGetDeviceInfoRsp { device_state, .. } => device_state,
            _ => 0,
        };
        if state != znp::DEVICE_STATE_COORDINATOR {
            let startup = ZnpCommand::ZdoStartupFromAppReq { start_delay: 100 };
            // Its status (restored, new, not started) is not a failure: the state change says
            // when the network runs. An RPC error means it never will: fail now, named.
            if let Err(f @ Fail::Rpc(_)) = self.request(&startup).await? {
                bail!("coordinator start-up: {} failed: {f}", startup.name());
            }
            self.wait_started().await?;
        }
        if let Some(key) = key {
            self.keep_network_key(key).await;
        }
        Ok(())
    }

    async fn wait_started(&mut self) -> Result<()> {
        let started = self
            .wait_for(START_TIMEOUT, |c| {
                matches!(c, ZnpCommand::ZdoStateChangeInd { state } if *state == znp::DEVICE_STATE_COORDINATOR)
            })
            .await?;
        if started.is_none() {
            bail!("coordinator start-up: no STATE_CHANGE_IND(9) within {START_TIMEOUT:?}");
        }
        Ok(())
    }

    /// Forms a new network from the options (reference §1.4 step 5).
    async fn form(&mut self) -> Result<()> {
        let channel = self.opts.channel.unwrap_or(11);
        let pan_id = self
            .opts
            .pan_id
            .unwrap_or_else(|| rand::random_range(0x0001..0xFFF0));
        let ext = self.opts.extended_pan_id.unwrap_or_else(|| loop {
            let e: u64 = rand::random();
            if e != 0 && e != u64::MAX {
                break e;
            }
        });
        let key = Secret::random(16);
        tracing::info!(radio = %self.io.radio, channel, pan_id = %format!("{pan_id:#06x}"), extended_pan_id = %IeeeAddr(ext), "forming a new zigbee network (new network key generated)");

        self.nv_write(nv::STARTUP_OPTION, vec![nv::STARTUP_CLEAR_ALL])
            .await?;
        self.send_areq(&ZnpCommand::SysResetReq { reset_type: 1 })
            .await?;
        if self
            .wait_for(RESET_TIMEOUT, |c| {
                matches!(c, ZnpCommand::SysResetInd { .. })
            })
            .await?
            .is_none()
        {
            bail!("coordinator start-up: no SYS_RESET_IND after the reset that clears the old network");
        }
        self.nv_write(nv::STARTUP_OPTION, vec![0]).await?;
        self.nv_write(nv::LOGICAL_TYPE, vec![0]).await?;
        self.nv_write(nv::ZDO_DIRECT_CB, vec![1]).await?;
        let mask = 1u32 << channel;
        self.nv_write(nv::CHANLIST, mask.to_le_bytes().to_vec())
            .await?;
        self.nv_write(nv::PANID, pan_id.to_le_bytes().to_vec())
            .await?;
        self.nv_write(nv::EXTENDED_PAN_ID, ext.to_le_bytes().to_vec())
            .await?;
        self.nv_write(nv::APS_USE_EXT_PANID, ext.to_le_bytes().to_vec())
            .await?;
        self.nv_write(nv::PRECFGKEYS_ENABLE, vec![0]).await?;
        self.nv_write(nv::PRECFGKEY, key.expose().to_vec()).await?;
        self.must(&ZnpCommand::BdbSetChannelReq {
            is_primary: true,
            channel_mask: mask,
        })
        .await?;
        self.must(&ZnpCommand::BdbSetChannelReq {
            is_primary: false,
            channel_mask: 0,
        })
        .await?;
        self.must(&ZnpCommand::BdbStartCommissioningReq {
            mode: znp::BDB_MODE_FORMATION,
        })
        .await?;
        self.wait_started().await?;
        self.nv_write(nv::HAS_CONFIGURED_ZSTACK3, vec![nv::HAS_CONFIGURED_MAGIC])
            .await?;
        // The old network's devices are gone with it.
        self.devices.clear();
        self.keep_network_key(key).await;
        Ok(())
    }

    /// Keeps an encrypted copy of the network key as a credential. A failure is logged
    /// (never the key) and start-up carries on: the coordinator's NV still holds the key.
    async fn keep_network_key(&mut self, key: Secret) {
        let Some(sink) = self.io.secrets.clone() else {
            tracing::debug!(radio = %self.io.radio, "no credential store wired: network key kept in coordinator NV only");
            return;
        };
        let owner = super::SecretSink::owner(&self.io.radio);
        match sink.keep(&self.io.radio, NETWORK_KEY_KIND, key).await {
            Ok(Kept::Unchanged) => {
                tracing::debug!(radio = %self.io.radio, credential = %owner, "network key credential up to date")
            }
            Ok(Kept::Stored) => {
                tracing::info!(radio = %self.io.radio, credential = %owner, kind = NETWORK_KEY_KIND, "network key stored encrypted")
            }
            Ok(Kept::Replaced) => {
                tracing::warn!(radio = %self.io.radio, credential = %owner, kind = NETWORK_KEY_KIND, "the stored network key differed from the coordinator's (new network or another coordinator): credential replaced")
            }
            Err(e) => {
                tracing::error!(radio = %self.io.radio, credential = %owner, error = %e, "cannot store the network key encrypted; it stays in coordinator NV only")
            }
        }
    }

    // ---- install codes ----

    /// APP_CNF_BDB_ADD_INSTALLCODE with the code and its CRC. Outer `Err`: the link broke.
    async fn push_install_code(
        &mut self,
        ieee: IeeeAddr,
        code: &Secret,
    ) -> Result<Result<(), Fail>> {
        let req = ZnpCommand::BdbAddInstallCodeReq {
            format: fieldgate_zigbee::install_code::FORMAT_CODE_AND_CRC,
            ieee,
            code: znp::SecretBytes(code.expose().to_vec()),
        };
        Ok(self.request(&req).await?.map(drop))
    }

    /// Pushes every stored install code to the coordinator, which may have lost them in a
    /// reset. A code the coordinator refuses is logged (never the code) and skipped.
    async fn push_stored_install_codes(&mut self) -> Result<()> {
        let Some(sink) = self.io.secrets.clone() else {
            return Ok(());
        };
        let (codes, unreadable) = match sink.all_of_kind(INSTALL_CODE_KIND).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(radio = %self.io.radio, error = %e, "cannot read the stored install codes; devices that need them cannot join");
                return Ok(());
            }
        };
        if unreadable > 0 {
            tracing::error!(radio = %self.io.radio, unreadable, "stored install codes that do not open with this master key were skipped");
        }
        let mut pushed = 0;
        for (owner, code) in codes {
            let Some(ieee) = owner
                .strip_prefix("zigbee:")
                .and_then(|a| a.parse::<IeeeAddr>().ok())
            else {
                continue;
            };
            match self.push_install_code(ieee, &code).await? {
                Ok(()) => pushed += 1,
                Err(f) => {
                    tracing::warn!(radio = %self.io.radio, device = %ieee, error = %f, "the coordinator refused a stored install code")
                }
            }
        }
        if pushed > 0 {
            tracing::info!(radio = %self.io.radio, codes = pushed, "install codes pushed to the coordinator");
        }
        Ok(())
    }

    /// Tells the coordinator whether joins must use install-code keys. A coordinator that
    /// cannot (Z-Stack 1.2) is reported; the hub still refuses devices without a code.
    async fn apply_install_code_policy(&mut self) -> Result<()> {
        let required = *self.require_install_codes;
        let req = ZnpCommand::BdbSetJoinUsesInstallCodeKeyReq { enabled: required };
        match self.request(&req).await? {
            Ok(_) => {
                tracing::info!(radio = %self.io.radio, required, "install-code joins set on the coordinator")
            }
            Err(f) if required => {
                tracing::error!(radio = %self.io.radio, error = %f, "the coordinator cannot require install codes; devices without one are still refused and removed by the gateway")
            }
            Err(f) => {
                tracing::debug!(radio = %self.io.radio, error = %f, "clearing the install-code join requirement failed")
            }
        }
        Ok(())
    }

    // ---- network key rotation ----

    /// The active network key descriptor (NV 0x003A), the one truth about which key the
    /// network runs on and its sequence number. `Ok(None)`: the firmware keeps none (Z-Stack
    /// 1.2 runs on its preconfigured key, sequence 0). A descriptor that does not parse is
    /// counted in `bad_nv_items` and named in the error.
    async fn active_key(&mut self) -> Result<Result<Option<NwkKeyDescriptor>, String>> {
        Ok(match self.nv_read(nv::NWK_ACTIVE_KEY_INFO).await? {
            Some(raw) => match NwkKeyDescriptor::parse(&raw) {
                Ok(d) => Ok(Some(d)),
                Err(e) => Err(self.nv_fault(
                    nv::NWK_ACTIVE_KEY_INFO,
                    format!("the active key info does not parse: {e}"),
                )),
            },
            None => Ok(None),
        })
    }

    async fn start_rotation(
        &mut self,
        reply: tokio::sync::oneshot::Sender<Result<crate::model::KeyRotated, String>>,
    ) -> Result<()> {
        if self.rotation.is_some() {
            let _ = reply.send(Err("a network key rotation is already in progress".into()));
            return Ok(());
        }
        let Some(sink) = self.io.secrets.clone() else {
            let _ = reply.send(Err(
                "no credential store is wired: a new key could not be kept, so none is sent".into(),
            ));
            return Ok(());
        };
        let previous_seq = match self.active_key().await? {
            Ok(d) => d.map_or(0, |d| d.key_seq_num),
            Err(e) => {
                let _ = reply.send(Err(format!(
                    "cannot tell which key the network runs on ({e}); nothing was sent"
                )));
                return Ok(());
            }
        };
        let seq = previous_seq.wrapping_add(1);
        let key = loop {
            let k = Secret::random(16);
            if k.expose().iter().any(|b| *b != 0) {
                break k;
            }
        };
        // Kept first: a key on the air that the store does not hold would be unrecoverable.
        if let Err(e) = sink
            .keep(&self.io.radio, PENDING_NETWORK_KEY_KIND, key.clone())
            .await
        {
            let _ = reply.send(Err(format!(
                "cannot store the new key encrypted ({e}); nothing was sent, the old key stays active"
            )));
            return Ok(());
        }
        let update = ZnpCommand::ZdoExtUpdateNwkKeyReq {
            dst_addr: BROADCAST_ALL,
            key_seq_num: seq,
            key: znp::SecretBytes(key.expose().to_vec()),
        };
        match self.request(&update).await {
            Ok(Ok(_)) => {}
            Ok(Err(f)) => {
                let _ = sink.forget(&self.io.radio, PENDING_NETWORK_KEY_KIND).await;
                let why = match f {
                    Fail::Rpc(_) => {
                        format!("this coordinator does not support network key updates ({f})")
                    }
                    _ => format!("the coordinator refused the key update ({f})"),
                };
                tracing::warn!(radio = %self.io.radio, error = %why, "network key rotation failed; the old key stays active");
                let _ = reply.send(Err(format!("{why}; the old key stays active")));
                return Ok(());
            }
            Err(e) => {
                let _ = sink.forget(&self.io.radio, PENDING_NETWORK_KEY_KIND).await;
                let _ = reply.send(Err(format!(
                    "the coordinator link failed during the key update; the old key stays active: {e:#}"
                )));
                return Err(e);
            }
        }
        let now = Instant::now();
        tracing::info!(radio = %self.io.radio, key_seq = seq, switch_in = ?self.opts.key_switch_delay, "new network key sent to the network");
        self.rotation = Some(PendingRotation {
            previous_seq,
            seq,
            key,
            sent_at: now,
            due: now + self.opts.key_switch_delay,
            reply,
        });
        Ok(())
    }

    async fn fail_rotation(&mut self, r: PendingRotation, why: String) {
        if let Some(sink) = self.io.secrets.clone() {
            let _ = sink.forget(&self.io.radio, PENDING_NETWORK_KEY_KIND).await;
        }
        tracing::warn!(radio = %self.io.radio, key_seq = r.seq, error = %why, "network key rotation failed");
        let _ = r.reply.send(Err(why));
    }

    /// A pending-key credential with no rotation in flight is from one interrupted by a
    /// daemon or link restart: the coordinator never switched to it.
    async fn discard_stale_pending_key(&mut self) {
        if let Some(sink) = self.io.secrets.clone() {
            if let Ok(true) = sink.forget(&self.io.radio, PENDING_NETWORK_KEY_KIND).await {
                tracing::warn!(radio = %self.io.radio, "an interrupted network key rotation was discarded; the old key stays active");
            }
        }
    }

    async fn switch_key(&mut self, r: PendingRotation) -> Result<()> {
        let switch = ZnpCommand::ZdoExtSwitchNwkKeyReq {
            dst_addr: BROADCAST_ALL,
            key_seq_num: r.seq,
        };
        let status = self.request(&switch).await?;
        // What the coordinator now says it uses decides, where it says it: Z-Stack answers
        // success even when its alternate key does not carry the sequence number (a reset
        // or another host in between), and only its active key item shows the truth.
        let active = self.active_key().await?;
        let switched = match (&status, &active) {
            (_, Ok(Some(d))) => d.key_seq_num == r.seq && d.key[..] == r.key.expose()[..],
            (Ok(_), Ok(None)) => true,
            (Err(_), Ok(None)) | (_, Err(_)) => false,
        };
        if !switched {
            let why = match (status, active) {
                (Err(f), _) => format!("the coordinator refused the key switch ({f}); the old network key stays active"),
                (Ok(_), Err(e)) => format!("the coordinator's active key cannot be read after the switch ({e}); the old network key is assumed active"),
                (Ok(_), Ok(d)) => format!(
                    "the coordinator still reports key sequence {} after the switch; the old network key stays active",
                    d.map_or(0, |d| d.key_seq_num)
                ),
            };
            self.fail_rotation(r, why).await;
            return Ok(());
        }
        if matches!(active, Ok(None)) {
            // No descriptor (Z-Stack 1.2): the preconfigured-key item is the only record of
            // the key in use, for a later resume.
            if let Err(f) = self
                .request(&ZnpCommand::SysOsalNvWriteReq {
                    id: nv::PRECFGKEY,
                    offset: 0,
                    value: r.key.expose().to_vec(),
                })
                .await?
            {
                tracing::warn!(radio = %self.io.radio, error = %f, "could not update the preconfigured key item after the switch");
            }
        }
        let delay = r.sent_at.elapsed();
        let stored = match self.io.secrets.clone() {
            Some(sink) => {
                let kept = sink
                    .keep(&self.io.radio, NETWORK_KEY_KIND, r.key.clone())
                    .await;
                let _ = sink.forget(&self.io.radio, PENDING_NETWORK_KEY_KIND).await;
                kept.map(drop)
            }
            None => Ok(()),
        };
        let answer = match stored {
            Ok(()) => {
                tracing::info!(radio = %self.io.radio, key_seq = r.seq, previous_key_seq = r.previous_seq, "network key rotated");
                Ok(crate::model::KeyRotated {
                    previous_key_seq: r.previous_seq,
                    key_seq: r.seq,
                    switch_delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    switched_at: crate::model::now_rfc3339(),
                })
            }
            Err(e) => {
                tracing::error!(radio = %self.io.radio, key_seq = r.seq, error = %e, "network key switched but the credential could not be updated; it is taken from the coordinator at the next start");
                Err(format!("the network switched to key sequence {} but the stored credential could not be updated ({e}); it is re-read from the coordinator at the next start", r.seq))
            }
        };
        let _ = r.reply.send(answer);
        Ok(())
    }

    // ---- timers ----

    fn next_timer(&self) -> Instant {
        let mut t = self.next_watchdog;
        if let Some(r) = &self.rotation {
            t = t.min(r.due);
        }
        for d in self.devices.values() {
            if let Some(w) = &d.waiting {
                t = t.min(w.deadline);
            }
            if let Some(r) = d.retry_at {
                t = t.min(r);
            }
        }
        for c in self.commands.values() {
            t = t.min(c.deadline);
        }
        for r in &self.refreshes {
            t = t.min(r.deadline);
        }
        for (since, _) in self.unresolved.values() {
            t = t.min(*since + self.opts.response_timeout);
        }
        t
    }

    async fn on_timers(&mut self) -> Result<()> {
        let now = Instant::now();
        if self.rotation.as_ref().is_some_and(|r| r.due <= now) {
            if let Some(r) = self.rotation.take() {
                self.switch_key(r).await?;
            }
        }
        if now >= self.next_watchdog {
            if self.ping(self.opts.sreq_timeout).await? {
                self.log_line_errors();
                self.ping_failures = 0;
                self.next_watchdog = Instant::now() + self.opts.watchdog_interval;
            } else {
                self.ping_failures += 1;
                tracing::warn!(radio = %self.io.radio, failures = self.ping_failures, "watchdog ping failed");
                if self.ping_failures >= WATCHDOG_FAILURES {
                    tracing::warn!(radio = %self.io.radio, "coordinator unresponsive: re-running start-up");
                    self.restart_needed = true;
                    return Ok(());
                }
                self.next_watchdog = Instant::now() + Duration::from_secs(1);
            }
        }
        let expired: Vec<u8> = self
            .commands
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(p) = self.commands.remove(&k) {
                self.emit(
                    p.native,
                    DeviceEventKind::CommandResult {
                        command_id: p.command_id,
                        ok: false,
                        detail: "no AF_DATA_CONFIRM in time".into(),
                    },
                )
                .await?;
            }
        }
        self.refreshes_due(now).await?;
        let stale: Vec<u16> = self
            .unresolved
            .iter()
            .filter(|(_, (since, _))| *since + self.opts.response_timeout <= now)
            .map(|(k, _)| *k)
            .collect();
        for nwk in stale {
            tracing::debug!(radio = %self.io.radio, nwk, "IEEE address lookup unanswered; frames dropped");
            self.unresolved.remove(&nwk);
        }
        let due: Vec<IeeeAddr> = self
            .devices
            .values()
            .filter(|d| d.waiting.as_ref().is_some_and(|w| w.deadline <= now))
            .map(|d| d.ieee)
            .collect();
        for ieee in due {
            self.retry_step(ieee).await?;
        }
        let retry: Vec<IeeeAddr> = self
            .devices
            .values()
            .filter(|d| d.stalled && d.retry_at.is_some_and(|r| r <= now))
            .map(|d| d.ieee)
            .collect();
        for ieee in retry {
            tracing::debug!(radio = %self.io.radio, device = %ieee, "retrying a stalled interview");
            self.advance(ieee, 0).await?;
        }
        Ok(())
    }

    /// Logs the parser's bad-input counters when they moved since the last time.
    fn log_line_errors(&mut self) {
        let now = self.reader.parser.stats();
        let was = self.reader.reported;
        if (
            now.dropped_bytes,
            now.bad_fcs,
            now.oversize,
            now.implausible,
            now.stalled,
        ) != (
            was.dropped_bytes,
            was.bad_fcs,
            was.oversize,
            was.implausible,
            was.stalled,
        ) {
            tracing::warn!(
                radio = %self.io.radio,
                frames = now.frames,
                dropped_bytes = now.dropped_bytes - was.dropped_bytes,
                bad_fcs = now.bad_fcs - was.bad_fcs,
                oversize = now.oversize - was.oversize,
                forged = now.implausible - was.implausible,
                stalled = now.stalled - was.stalled,
                undecodable_total = self.stats.undecodable.load(std::sync::atomic::Ordering::Relaxed),
                sreq_timeouts_total = self.stats.timeouts.load(std::sync::atomic::Ordering::Relaxed),
                "line errors on the coordinator link (resynchronised)"
            );
            let lost = (now.bad_fcs - was.bad_fcs)
                + (now.oversize - was.oversize)
                + (now.implausible - was.implausible)
                + (now.stalled - was.stalled);
            self.stats
                .line_errors
                .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
            self.reader.reported = now;
        }
    }

    // ---- interviews ----

    /// Sends the request for the device's next step (if any) and records what it waits for.
    async fn advance(&mut self, ieee: IeeeAddr, attempts: u32) -> Result<()> {
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
                    ieee: self.coordinator,
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
                        value: ZclValue::IeeeAddr(self.coordinator),
                    }],
                ),
            )?,
        };
        if let Err(fail) = self.request(&request).await? {
            tracing::debug!(radio = %self.io.radio, device = %ieee, error = %fail, "interview request not accepted; will retry");
        }
        Ok(())
    }

    fn zcl_request(
        &mut self,
        nwk: u16,
        ep: u8,
        cluster: u16,
        frame: ZclFrame,
    ) -> Result<ZnpCommand> {
        let data = frame.encode().context("encoding a ZCL frame")?;
        let trans_id = self.next_trans_id();
        Ok(ZnpCommand::af_data_request(
            nwk,
            ep,
            OUR_ENDPOINT,
            cluster,
            trans_id,
            data,
        ))
    }

    async fn retry_step(&mut self, ieee: IeeeAddr) -> Result<()> {
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
        let backoff = STALL_RETRY
            .saturating_mul(1 << dev.stalls.saturating_sub(1).min(10))
            .min(STALL_RETRY_MAX);
        dev.retry_at = Some(Instant::now() + backoff);
        tracing::info!(radio = %self.io.radio, device = %ieee, step = ?w.step, retry_in = ?backoff, "interview paused until the device speaks again (partial results kept)");
        Ok(())
    }

    /// The device sent something: a sleeping device is awake now, so ask again at once.
    async fn device_spoke(&mut self, ieee: IeeeAddr) -> Result<()> {
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
    fn waiting_for(&self, nwk: u16, pred: impl Fn(&Waiting) -> bool) -> Option<IeeeAddr> {
        let ieee = self.ieee_of(nwk)?;
        let w = self.devices.get(&ieee)?.waiting.as_ref()?;
        pred(w).then_some(ieee)
    }

    fn ieee_of(&self, nwk: u16) -> Option<IeeeAddr> {
        self.devices.values().find(|d| d.nwk == nwk).map(|d| d.ieee)
    }

    /// A step finished: record progress, report the interview when it completes, go on.
    async fn step_done(&mut self, ieee: IeeeAddr) -> Result<()> {
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

    // ---- indications ----

    async fn on_indication(&mut self, cmd: ZnpCommand) -> Result<()> {
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
                    tracing::info!(radio = %self.io.radio, device = %ieee, nwk = nwk_addr, "known device speaking after a restart: interviewing it again");
                    self.devices
                        .entry(ieee)
                        .or_insert_with(|| Device::new(ieee, nwk_addr))
                        .nwk = nwk_addr;
                    self.advance(ieee, 0).await?;
                    for f in frames {
                        self.pending.push_back(f);
                    }
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
            ZnpCommand::Raw(frame) => {
                tracing::debug!(radio = %self.io.radio, cmd_type = ?frame.cmd_type, subsystem = ?frame.subsystem, cmd_id = frame.cmd_id, payload = %fieldgate_zigbee::to_hex(&frame.payload), "unmodelled indication ignored");
            }
            other => {
                tracing::debug!(radio = %self.io.radio, command = other.name(), "indication ignored");
            }
        }
        Ok(())
    }

    async fn spoke_nwk(&mut self, nwk: u16) -> Result<()> {
        match self.ieee_of(nwk) {
            Some(ieee) => self.device_spoke(ieee).await,
            None => Ok(()),
        }
    }

    async fn device_joined(&mut self, ieee: IeeeAddr, nwk: u16, rx_on: Option<bool>) -> Result<()> {
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

    async fn on_incoming(&mut self, m: znp::AfIncomingMsg) -> Result<()> {
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
                super::RadioCounters::count(&self.stats.undecodable);
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
        // Does this answer the step the interview waits for?
        let answers = |w: &Waiting| -> bool {
            w.tsn == Some(tsn)
                && match (&w.step, &frame.command) {
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
                        w.step,
                        Step::NodeDesc | Step::ActiveEp | Step::SimpleDesc(_)
                    ),
                    _ => false,
                }
        };
        let matched = self
            .devices
            .get(&ieee)
            .and_then(|d| d.waiting.as_ref())
            .is_some_and(answers);
        if matched {
            let step = self
                .devices
                .get(&ieee)
                .and_then(|d| d.waiting.as_ref())
                .map(|w| w.step.clone());
            if let (Some(Step::Basic(_)), Some(dev)) = (step, self.devices.get_mut(&ieee)) {
                let mut info = BasicInfo::default();
                for (attr, value) in frame.attribute_values() {
                    match attr {
                        0x0004 => info.manufacturer = value.as_text(),
                        0x0005 => info.model = value.as_text(),
                        0x4000 => info.sw_build = value.as_text(),
                        0x0007 => {
                            info.power_source = value.as_i64().and_then(|v| u8::try_from(v).ok())
                        }
                        _ => {}
                    }
                }
                dev.basic = Some(info);
            }
            if let ZclCommand::ConfigureReportingRsp { failures } = &frame.command {
                if !failures.is_empty() {
                    tracing::warn!(radio = %self.io.radio, device = %ieee, cluster, failures = failures.len(), "reporting not configured for every attribute");
                }
            }
            self.step_done(ieee).await?;
        }
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
        let mut readings = match &frame.command {
            ZclCommand::IasZoneStatusChangeNotification { zone_status, .. } => {
                zone_readings(*zone_status)
            }
            _ => {
                let ctx = self
                    .devices
                    .get(&ieee)
                    .and_then(|d| d.scaling.get(&ep))
                    .copied()
                    .unwrap_or_default();
                frame_readings(cluster, &frame, &ctx)
            }
        };
        if !readings.is_empty() {
            readings.dedup_by(|a, b| a.name == b.name && a.value == b.value);
            // The link quality of the frame that carried them (for weak-link health).
            readings.push(Reading {
                name: "linkquality".into(),
                value: Value::Number(f64::from(m.link_quality)),
                unit: None,
            });
            self.emit(ieee.to_string(), DeviceEventKind::Readings(readings))
                .await?;
        }
        if let ZclCommand::ReadAttributesRsp { .. } = &frame.command {
            self.refresh_answered(ieee, cluster, tsn).await?;
        }
        self.device_spoke(ieee).await
    }

    // ---- commands from the hub ----

    async fn on_command(&mut self, cmd: RadioCommand) -> Result<()> {
        match cmd {
            RadioCommand::PermitJoin { seconds } => {
                let duration = u8::try_from(seconds.min(254)).unwrap_or(254);
                match self
                    .request(&ZnpCommand::permit_join_coordinator(duration))
                    .await?
                {
                    Ok(_) => {
                        tracing::info!(radio = %self.io.radio, seconds = duration, "join window opened (coordinator only)")
                    }
                    Err(f) => {
                        tracing::warn!(radio = %self.io.radio, error = %f, "permit join refused by the coordinator")
                    }
                }
            }
            RadioCommand::Remove { native_address } => {
                let dev = native_address
                    .parse::<IeeeAddr>()
                    .ok()
                    .and_then(|ieee| self.devices.get(&ieee));
                match dev {
                    Some(d) => {
                        let (nwk, ieee) = (d.nwk, d.ieee);
                        tracing::info!(radio = %self.io.radio, device = %ieee, "asking the device to leave");
                        let req = ZnpCommand::ZdoMgmtLeaveReq {
                            dst_addr: nwk,
                            ieee,
                            rejoin: false,
                            remove_children: false,
                        };
                        if let Err(f) = self.request(&req).await? {
                            tracing::warn!(radio = %self.io.radio, device = %ieee, error = %f, "leave request refused");
                        }
                    }
                    None => {
                        tracing::warn!(radio = %self.io.radio, device = %native_address, "remove: device not seen on this network since start-up; it was not told to leave")
                    }
                }
            }
            RadioCommand::Set {
                native_address,
                command,
                command_id,
            } => self.set(native_address, command, command_id).await?,
            RadioCommand::AddInstallCode {
                native_address,
                code,
                reply,
            } => {
                let answer = match native_address.parse::<IeeeAddr>() {
                    Ok(ieee) => match self.push_install_code(ieee, &code).await? {
                        Ok(()) => {
                            tracing::info!(radio = %self.io.radio, device = %ieee, "install code registered with the coordinator");
                            Ok(())
                        }
                        Err(f) => {
                            tracing::warn!(radio = %self.io.radio, device = %ieee, error = %f, "the coordinator refused the install code");
                            Err(format!("the coordinator refused the install code: {f}"))
                        }
                    },
                    Err(_) => Err(format!("`{native_address}` is not an IEEE address")),
                };
                let _ = reply.send(answer);
            }
            RadioCommand::RequireInstallCodes { required } => {
                let changed = *self.require_install_codes != required;
                *self.require_install_codes = required;
                if changed {
                    self.apply_install_code_policy().await?;
                }
            }
            RadioCommand::RotateNetworkKey { reply } => self.start_rotation(reply).await?,
            RadioCommand::Read {
                native_address,
                command_id,
            } => self.refresh(native_address, command_id).await?,
            RadioCommand::Backup { reply } => {
                let result = self.backup().await;
                let answer = match &result {
                    Ok(Ok(v)) => Ok(v.clone()),
                    Ok(Err(e)) => Err(e.clone()),
                    Err(e) => Err(format!("the coordinator link failed: {e:#}")),
                };
                match &answer {
                    Ok(_) => tracing::info!(radio = %self.io.radio, "network backup exported"),
                    Err(e) => {
                        tracing::warn!(radio = %self.io.radio, error = %e, bad_nv_items_total = self.stats.bad_nv_items.load(std::sync::atomic::Ordering::Relaxed), "network backup failed")
                    }
                }
                let _ = reply.send(answer);
                // A broken link ends the session (the supervisor re-opens it).
                result.map(drop)?;
            }
        }
        Ok(())
    }

    /// Reads the network from the coordinator and shapes it as open-coordinator-backup
    /// JSON (version 1). Outer `Err`: the link broke; inner `Err`: the backup failed.
    ///
    /// Reads what zigbee-herdsman 11.1.1 `adapter-backup.js createBackup` reads: the NIB
    /// (PAN ids, channel, nwkUpdateId, security level), the active key info (key and its
    /// sequence number) and the security material table (the NWK frame counter).
    async fn backup(&mut self) -> Result<Result<serde_json::Value, String>> {
        macro_rules! step {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                }
            };
        }
        let (coordinator, children) = match self.request(&ZnpCommand::UtilGetDeviceInfoReq).await? {
            Ok(ZnpCommand::UtilGetDeviceInfoRsp {
                ieee,
                device_state,
                assoc_devices,
                ..
            }) => {
                if device_state != znp::DEVICE_STATE_COORDINATOR {
                    return Ok(Err(format!(
                        "the coordinator is not running a network (device state {device_state})"
                    )));
                }
                (ieee, assoc_devices)
            }
            Ok(other) => {
                return Ok(Err(format!(
                    "unexpected answer to UTIL_GET_DEVICE_INFO: {}",
                    other.name()
                )))
            }
            Err(f) => return Ok(Err(format!("UTIL_GET_DEVICE_INFO failed: {f}"))),
        };
        let product = match self.request(&ZnpCommand::SysVersionReq).await? {
            Ok(ZnpCommand::SysVersionRsp { product, .. }) => product,
            Ok(other) => {
                return Ok(Err(format!(
                    "unexpected answer to SYS_VERSION: {}",
                    other.name()
                )))
            }
            Err(f) => return Ok(Err(format!("SYS_VERSION failed: {f}"))),
        };
        if product == 0 {
            return Ok(Err("Z-Stack 1.2 firmware keeps no active key info in NV; \
                           backups need Z-Stack 3"
                .into()));
        }
        let (nib, layout) = match step!(self.read_nib().await?) {
            Some(found) => found,
            None => {
                return Ok(Err(
                    "the coordinator has no NIB (NV item 0x0021): it is not commissioned".into(),
                ))
            }
        };
        let key_info = match step!(self.nv_read_item(nv::NWK_ACTIVE_KEY_INFO).await?) {
            Some(raw) => step!(NwkKeyDescriptor::parse(&raw).map_err(|e| self.nv_fault(
                nv::NWK_ACTIVE_KEY_INFO,
                format!("the active key info does not parse: {e}")
            ))),
            None => {
                return Ok(Err(
                    "the coordinator has no active key info (NV item 0x003a)".into(),
                ))
            }
        };
        let table = step!(self.sec_material_table(product).await?);
        let Some(counter) = nvitems::network_frame_counter_entry(&table, nib.extended_pan_id)
        else {
            super::RadioCounters::count(&self.stats.bad_nv_items);
            return Ok(Err(format!(
                "the coordinator's security material table ({} entr{}) holds no NWK frame counter \
                 for this network or a generic one; a backup without it could not be restored safely",
                table.len(),
                if table.len() == 1 { "y" } else { "ies" }
            )));
        };
        let tables = step!(self.link_key_tables(product, layout).await?);
        // The coordinator's address manager names the devices (with their keys); devices
        // only the driver knows are kept too, without a key.
        let mut devices: Vec<BackupDevice> = tables
            .devices()
            .into_iter()
            .map(|d| BackupDevice {
                ieee: d.ieee,
                nwk: d.nwk_addr,
                is_child: d.is_child,
                link_key: d.link_key,
            })
            .collect();
        for d in self.devices.values() {
            if !devices.iter().any(|b| b.ieee == d.ieee) {
                devices.push(BackupDevice {
                    ieee: d.ieee,
                    nwk: d.nwk,
                    is_child: children.contains(&d.nwk),
                    link_key: None,
                });
            }
        }
        let facts = BackupFacts {
            coordinator,
            znp_version: product,
            pan_id: nib.nwk_pan_id,
            extended_pan_id: nib.extended_pan_id,
            channel: nib.nwk_logical_channel,
            channel_mask: nib.channel_list,
            nwk_update_id: nib.nwk_update_id,
            security_level: nib.security_level,
            key: Secret::new(key_info.key.to_vec()),
            key_sequence_number: key_info.key_seq_num,
            frame_counter: counter.frame_counter,
            frame_counter_generic: counter.extended_pan_id == nvitems::GENERIC_EXTENDED_PAN_ID,
            tclk_seed: tables.tclk_seed,
            devices,
        };
        let (unique, seed_derived, without) = facts.link_key_counts();
        tracing::info!(radio = %self.io.radio, nwk_update_id = facts.nwk_update_id, key_sequence_number = facts.key_sequence_number, frame_counter = facts.frame_counter, devices = facts.devices.len(), unique_link_keys = unique, seed_derived_link_keys = seed_derived, devices_without_link_key = without, "network state read for the backup");
        Ok(open_coordinator_backup(
            &facts,
            env!("CARGO_PKG_VERSION"),
            SystemTime::now(),
        ))
    }

    /// Reads the device's reportable attributes; the answers become readings as reports
    /// do, and a `CommandResult` follows once every read is answered or the time is up.
    async fn refresh(&mut self, native: String, command_id: String) -> Result<()> {
        let fail = |detail: &str| DeviceEventKind::CommandResult {
            command_id: command_id.clone(),
            ok: false,
            detail: detail.to_string(),
        };
        let Some(dev) = native
            .parse::<IeeeAddr>()
            .ok()
            .and_then(|i| self.devices.get(&i))
        else {
            return self
                .emit(native.clone(), fail("device not on this network"))
                .await;
        };
        let (ieee, nwk, plan) = (dev.ieee, dev.nwk, refresh_plan(dev));
        if plan.is_empty() {
            return self
                .emit(
                    native.clone(),
                    fail("nothing to read: no cluster with readings is known for this device yet"),
                )
                .await;
        }
        tracing::info!(radio = %self.io.radio, device = %native, clusters = plan.len(), command_id = %command_id, "refreshing");
        let mut waiting = Vec::new();
        for (ep, cluster, attrs) in plan {
            let tsn = self.next_tsn();
            let req = self.zcl_request(nwk, ep, cluster, ZclFrame::read_attributes(tsn, attrs))?;
            match self.request(&req).await? {
                Ok(_) => waiting.push((cluster, tsn)),
                Err(f) => {
                    tracing::warn!(radio = %self.io.radio, device = %native, cluster, error = %f, "read request refused")
                }
            }
        }
        if waiting.is_empty() {
            return self
                .emit(
                    native.clone(),
                    fail("AF_DATA_REQUEST refused for every read"),
                )
                .await;
        }
        // A sleeping device's parent holds frames for up to 7.68 s.
        let wait = self.opts.response_timeout.max(Duration::from_secs(8));
        self.refreshes.push(PendingRefresh {
            command_id,
            ieee,
            waiting,
            answered: 0,
            deadline: Instant::now() + wait,
        });
        Ok(())
    }

    /// A read response arrived: ends the refresh it completes.
    async fn refresh_answered(&mut self, ieee: IeeeAddr, cluster: u16, tsn: u8) -> Result<()> {
        let Some(i) = self
            .refreshes
            .iter()
            .position(|r| r.ieee == ieee && r.waiting.contains(&(cluster, tsn)))
        else {
            return Ok(());
        };
        let r = &mut self.refreshes[i];
        r.waiting.retain(|w| *w != (cluster, tsn));
        r.answered += 1;
        if r.waiting.is_empty() {
            let r = self.refreshes.swap_remove(i);
            let detail = format!("refreshed: {} cluster(s) read", r.answered);
            self.emit(
                r.ieee.to_string(),
                DeviceEventKind::CommandResult {
                    command_id: r.command_id,
                    ok: true,
                    detail,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Ends the refreshes whose time is up: ok when part of the device answered.
    async fn refreshes_due(&mut self, now: Instant) -> Result<()> {
        while let Some(i) = self.refreshes.iter().position(|r| r.deadline <= now) {
            let r = self.refreshes.swap_remove(i);
            let detail = format!(
                "{} cluster(s) read, {} unanswered",
                r.answered,
                r.waiting.len()
            );
            self.emit(
                r.ieee.to_string(),
                DeviceEventKind::CommandResult {
                    command_id: r.command_id,
                    ok: r.answered > 0,
                    detail,
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn set(
        &mut self,
        native: String,
        command: DeviceCommand,
        command_id: String,
    ) -> Result<()> {
        let fail = |detail: String| DeviceEventKind::CommandResult {
            command_id: command_id.clone(),
            ok: false,
            detail,
        };
        let Some(dev) = native
            .parse::<IeeeAddr>()
            .ok()
            .and_then(|i| self.devices.get(&i))
        else {
            return self
                .emit(native.clone(), fail("device not on this network".into()))
                .await;
        };
        let cluster = match command {
            DeviceCommand::Level { .. } => cluster_id::LEVEL_CONTROL,
            _ => cluster_id::ON_OFF,
        };
        let nwk = dev.nwk;
        let ep = dev.endpoint_with(cluster).unwrap_or(1);
        let tsn = self.next_tsn();
        let frame = match command {
            DeviceCommand::On => clusters::on_off(OnOffCommand::On, tsn),
            DeviceCommand::Off => clusters::on_off(OnOffCommand::Off, tsn),
            DeviceCommand::Toggle => clusters::on_off(OnOffCommand::Toggle, tsn),
            DeviceCommand::Level { percent } => {
                clusters::move_to_level_with_on_off(level_from_percent(percent), 0, tsn)
            }
        };
        let req = self.zcl_request(nwk, ep, cluster, frame)?;
        let trans_id = match &req {
            ZnpCommand::AfDataRequestReq(r) => r.trans_id,
            _ => 0,
        };
        tracing::info!(radio = %self.io.radio, device = %native, command = ?command, command_id = %command_id, "sending command");
        match self.request(&req).await? {
            Ok(_) => {
                self.commands.insert(
                    trans_id,
                    PendingCommand {
                        command_id,
                        native,
                        deadline: Instant::now() + CONFIRM_TIMEOUT,
                    },
                );
                Ok(())
            }
            Err(f) => {
                self.emit(
                    native.clone(),
                    fail(format!("AF_DATA_REQUEST refused: {f}")),
                )
                .await
            }
        }
    }
}

/// What a backup is made of, as read from the coordinator (its NIB, active key info,
/// security material and link key tables) and the driver's device table.
struct BackupFacts {
    coordinator: IeeeAddr,
    /// SYS_VERSION product (herdsman's `ZnpVersion`: 1 Z-Stack 3.x.0, 2 Z-Stack 3.0.x).
    znp_version: u8,
    pan_id: u16,
    extended_pan_id: u64,
    /// The logical channel the network runs on.
    channel: u8,
    channel_mask: u32,
    nwk_update_id: u8,
    security_level: u8,
    key: Secret,
    key_sequence_number: u8,
    /// The outgoing NWK frame counter.
    frame_counter: u32,
    /// The counter came from the generic (any network) entry, not this network's own.
    frame_counter_generic: bool,
    /// The seed of the devices' seed-derived link keys (lets a restore put them back as
    /// seed-derived keys instead of unique ones).
    tclk_seed: Option<TclkSeed>,
    devices: Vec<BackupDevice>,
}

impl BackupFacts {
    /// Devices with a unique link key, with a seed-derived one, and with none.
    fn link_key_counts(&self) -> (usize, usize, usize) {
        let count = |want: Option<LinkKeySource>| {
            self.devices
                .iter()
                .filter(|d| d.link_key.map(|k| k.source) == want)
                .count()
        };
        (
            count(Some(LinkKeySource::Unique)),
            count(Some(LinkKeySource::SeedDerived)),
            count(None),
        )
    }
}

/// A device in a backup.
struct BackupDevice {
    ieee: IeeeAddr,
    nwk: u16,
    /// A direct child of the coordinator.
    is_child: bool,
    /// The APS link key the coordinator holds for it, with its frame counters.
    link_key: Option<DeviceLinkKey>,
}

/// open-coordinator-backup version 1 (zigpy/open-coordinator-backup; the field set of
/// zigbee-herdsman's `models/backup-storage-unified.ts`). Addresses and keys are lower-case
/// hex without `0x`, most significant byte first.
fn open_coordinator_backup(
    f: &BackupFacts,
    version: &str,
    now: SystemTime,
) -> Result<serde_json::Value, String> {
    if f.pan_id == 0xFFFF {
        return Err("the coordinator's NIB holds no valid PAN id".into());
    }
    if f.extended_pan_id == 0 || f.extended_pan_id == u64::MAX {
        return Err("the coordinator's NIB holds no valid extended PAN id".into());
    }
    if !(11..=26).contains(&f.channel) {
        return Err(format!(
            "the coordinator's NIB holds no valid channel ({})",
            f.channel
        ));
    }
    let mut channels: Vec<u8> = (11u8..=26)
        .filter(|c| f.channel_mask & (1u32 << c) != 0)
        .collect();
    if channels.is_empty() {
        channels.push(f.channel);
    }
    let key = f.key.expose();
    if key.len() != 16 || key.iter().all(|b| *b == 0) {
        return Err("the coordinator's active key info holds no network key".into());
    }
    let mut devices: Vec<serde_json::Value> = f
        .devices
        .iter()
        .map(|d| {
            serde_json::json!({
                "nwk_address": format!("{:04x}", d.nwk),
                "ieee_address": format!("{:016x}", d.ieee.0),
                "is_child": d.is_child,
                "link_key": d.link_key.map(|k| serde_json::json!({
                    "key": hex::encode(k.key),
                    "rx_counter": k.rx_frame_counter,
                    "tx_counter": k.tx_frame_counter,
                })),
            })
        })
        .collect();
    let (unique, seed_derived, without) = f.link_key_counts();
    devices.sort_by(|a, b| a["ieee_address"].as_str().cmp(&b["ieee_address"].as_str()));
    Ok(serde_json::json!({
        "metadata": {
            "format": "zigpy/open-coordinator-backup",
            "version": 1,
            "source": format!("fieldgate-{version}"),
            "internal": {
                "date": crate::model::rfc3339(now),
                "znpVersion": f.znp_version,
                "frame_counter_source": if f.frame_counter_generic { "generic security material entry" } else { "this network's security material entry" },
                "link_keys": {
                    "unique": unique,
                    "seed_derived": seed_derived,
                    "devices_without": without,
                },
                "note": "The NWK frame counter and the devices' APS frame counters are the values the coordinator last stored: a restoring tool must raise them (zigbee-herdsman adds 2500). devices[].link_key is null where the coordinator holds no key for the device (one that never did the Zigbee 3.0 key exchange uses the well-known default key).",
            },
        },
        "stack_specific": {
            "zstack": {
                "tclk_seed": f.tclk_seed.map(|s| hex::encode(s.0)),
            },
        },
        "coordinator_ieee": format!("{:016x}", f.coordinator.0),
        "pan_id": format!("{:04x}", f.pan_id),
        "extended_pan_id": format!("{:016x}", f.extended_pan_id),
        "nwk_update_id": f.nwk_update_id,
        "security_level": f.security_level,
        "channel": f.channel,
        "channel_mask": channels,
        "network_key": {
            "key": hex::encode(key),
            "sequence_number": f.key_sequence_number,
            "frame_counter": f.frame_counter,
        },
        "devices": devices,
    }))
}

/// `fieldgate decode zigbee`: decodes captured MT bytes (or a bare ZCL payload) as JSON.
pub fn decode_to_json(hex: &str, zcl_cluster: Option<u16>) -> Result<String> {
    use fieldgate_zigbee::decode;
    match zcl_cluster {
        Some(cluster) => {
            let bytes = decode::parse_hex(hex).map_err(|e| anyhow!("{e}"))?;
            let report = decode::describe_zcl(cluster, &bytes);
            let ok = report.error.is_none();
            let text = serde_json::to_string_pretty(&report)?;
            if ok {
                Ok(text)
            } else {
                Err(anyhow!("{text}"))
            }
        }
        None => {
            let report = decode::decode_hex(hex).map_err(|e| anyhow!("{e}"))?;
            if report.frames.is_empty() {
                bail!(
                    "no complete MT frame found ({} byte(s) dropped, {} bad FCS, {} incomplete)",
                    report.parser.dropped_bytes,
                    report.parser.bad_fcs,
                    report.incomplete_bytes
                );
            }
            Ok(report.to_json_pretty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn options_are_validated_with_clear_errors() {
        let o = ZigbeeOptions::parse(&table(
            "channel = 15\npan_id = \"0x1a62\"\nextended_pan_id = \"0xdddddddddddddddd\"\nsreq_timeout = \"2s\"",
        ))
        .unwrap();
        assert_eq!(o.channel, Some(15));
        assert_eq!(o.pan_id, Some(0x1A62));
        assert_eq!(o.extended_pan_id, Some(0xDDDD_DDDD_DDDD_DDDD));
        assert_eq!(o.sreq_timeout, Duration::from_secs(2));
        let err = |t: &str| ZigbeeOptions::parse(&table(t)).unwrap_err().to_string();
        assert!(err("channel = 27").contains("11 to 26"));
        assert!(err("pan_id = 65535").contains("0xFFFE"));
        assert!(err("extended_pan_id = \"0x12\"").contains("16 hex digits"));
        assert!(err("chanel = 11").contains("unknown zigbee option `chanel`"));
        assert!(err("sreq_timeout = 5").contains("duration"));
    }

    #[test]
    fn percent_maps_onto_the_zigbee_level_scale() {
        assert_eq!(level_from_percent(0), 0);
        assert_eq!(level_from_percent(50), 127);
        assert_eq!(level_from_percent(100), 254);
        assert_eq!(level_from_percent(200), 254);
    }

    #[test]
    fn metering_readings_wait_for_their_scaling() {
        let report = ZclFrame::decode(
            0x0702,
            &[
                0x18, 0x01, 0x0A, 0x00, 0x00, 0x25, 0x39, 0x30, 0x00, 0x00, 0x00, 0x00,
            ],
        )
        .unwrap();
        assert!(frame_readings(0x0702, &report, &ScalingContext::default()).is_empty());
        let ctx = ScalingContext {
            metering_multiplier: Some(1),
            metering_divisor: Some(1000),
            ..Default::default()
        };
        let r = frame_readings(0x0702, &report, &ctx);
        assert_eq!(
            r,
            vec![reading("energy", Value::Number(12.345), Some("kWh"))]
        );
    }

    fn facts() -> BackupFacts {
        BackupFacts {
            coordinator: IeeeAddr(0x00124b001cdd0001),
            znp_version: 1,
            pan_id: 0x1A62,
            extended_pan_id: 0xDDDD_DDDD_DDDD_DD01,
            channel: 15,
            channel_mask: 1 << 15,
            nwk_update_id: 3,
            security_level: 5,
            key: Secret::new(vec![0x11; 16]),
            key_sequence_number: 2,
            frame_counter: 70_001,
            frame_counter_generic: false,
            tclk_seed: Some(TclkSeed([0x33; 16])),
            devices: vec![
                BackupDevice {
                    ieee: IeeeAddr(0x00158d0001a2b3c4),
                    nwk: 0x1A01,
                    is_child: true,
                    link_key: Some(DeviceLinkKey {
                        key: [0x22; 16],
                        rx_frame_counter: 7,
                        tx_frame_counter: 9,
                        source: LinkKeySource::SeedDerived,
                    }),
                },
                BackupDevice {
                    ieee: IeeeAddr(0x00158d0001a2b3c5),
                    nwk: 0x1A02,
                    is_child: false,
                    link_key: None,
                },
            ],
        }
    }

    #[test]
    fn backup_json_carries_the_values_read_from_the_coordinator() {
        let b = open_coordinator_backup(&facts(), "1.0", SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(b["pan_id"], "1a62");
        assert_eq!(b["extended_pan_id"], "dddddddddddddd01");
        assert_eq!(b["channel"], 15);
        assert_eq!(b["channel_mask"], serde_json::json!([15]));
        assert_eq!(b["nwk_update_id"], 3);
        assert_eq!(b["security_level"], 5);
        assert_eq!(b["network_key"]["sequence_number"], 2);
        assert_eq!(b["network_key"]["frame_counter"], 70_001);
        assert!(b["metadata"]["internal"]
            .get("not_read_from_coordinator")
            .is_none());
        assert_eq!(b["devices"][0]["ieee_address"], "00158d0001a2b3c4");
        assert_eq!(
            b["devices"][0]["link_key"],
            serde_json::json!({"key": "22".repeat(16), "rx_counter": 7, "tx_counter": 9})
        );
        assert_eq!(b["devices"][1]["link_key"], serde_json::Value::Null);
        assert_eq!(b["devices"][1]["is_child"], false);
        assert_eq!(
            b["metadata"]["internal"]["link_keys"],
            serde_json::json!({"unique": 0, "seed_derived": 1, "devices_without": 1})
        );
        assert_eq!(b["stack_specific"]["zstack"]["tclk_seed"], "33".repeat(16));
        let bad = |f: BackupFacts| {
            open_coordinator_backup(&f, "1.0", SystemTime::UNIX_EPOCH).unwrap_err()
        };
        assert!(bad(BackupFacts {
            channel: 0,
            ..facts()
        })
        .contains("channel"));
        assert!(bad(BackupFacts {
            pan_id: 0xFFFF,
            ..facts()
        })
        .contains("PAN id"));
        assert!(bad(BackupFacts {
            extended_pan_id: 0,
            ..facts()
        })
        .contains("extended PAN id"));
        assert!(bad(BackupFacts {
            key: Secret::new(vec![0; 16]),
            ..facts()
        })
        .contains("network key"));
    }

    #[test]
    fn decode_cli_prints_json_and_refuses_noise() {
        let json = decode_to_json("FE 02 61 01 11 00 73", None).unwrap();
        assert!(json.contains("sys_ping_rsp"), "{json}");
        assert!(decode_to_json("00 11 22", None).is_err());
        let zcl = decode_to_json("18 10 0A 00 00 29 66 08", Some(0x0402)).unwrap();
        assert!(zcl.contains("temperature") && zcl.contains("21.5"), "{zcl}");
    }
}
