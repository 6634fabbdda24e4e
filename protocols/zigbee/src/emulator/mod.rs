//! A device-side emulator of a TI Z-Stack 3 ZNP coordinator with virtual devices, for tests,
//! `sim://zigbee` and the demo. Sans-IO: the host feeds the bytes the driver wrote
//! ([`Emulator::receive`]), calls [`Emulator::tick`] at [`Emulator::next_deadline`], and writes
//! out what [`Emulator::take_output`] returns. Time is a [`Duration`] since any fixed epoch the
//! host chooses; nothing here reads a clock, spawns, sleeps or does IO.
//!
//! What it emulates (the start-up sequence of reference §1.4):
//! - SYS ping/version/reset (with SYS_RESET_IND), OSAL NV item read/write/init with an NV
//!   store that survives resets and link re-opens, STARTUP_OPTION clearing on reset;
//! - UTIL_GET_DEVICE_INFO, AF_REGISTER, ZDO_STARTUP_FROM_APP, BDB set-channel and formation
//!   with STATE_CHANGE_IND and the commissioning notification;
//! - permit join (both forms): while the window is open, each virtual device not yet on the
//!   network joins (TC_DEV_IND, then END_DEVICE_ANNCE_IND);
//! - AF_DATA_REQUEST → SRSP, AF_DATA_CONFIRM for every request, then the device's answer;
//!   ZDO requests routed to the devices ([`device`]); MGMT_LEAVE → MGMT_LEAVE_RSP + LEAVE_IND;
//! - install codes (APP_CNF_BDB_ADD_INSTALLCODE) and the "join uses install code key" policy
//!   (APP_CNF_BDB_SET_JOINUSESINSTALLCODEKEY): with the policy on, a virtual device joins only
//!   when the code registered for its IEEE address equals the one it was given
//!   ([`EmulatorConfig::install_codes`]); otherwise the association is reported (TC_DEV_IND)
//!   but the device never gets the network key, so it never announces or reports. Both live in
//!   RAM and are lost on a reset, as the driver must assume of a real coordinator;
//! - network key update and switch (ZDO_EXT_UPDATE_NWK_KEY / ZDO_EXT_SWITCH_NWK_KEY): joined
//!   devices the update reaches keep the new key as their alternate and move to it on the
//!   switch; the coordinator's active key (NV `NWK_ACTIVE_KEY_INFO`, else `PRECFGKEY` with
//!   sequence 0) changes; frames from a device still on an old key are dropped and counted;
//! - a bootloader that swallows frames until the 0xEF skip byte (CC253x style);
//! - faults on request ([`Fault`]): garbage bytes, a bad FCS, a dropped SRSP, an unsolicited
//!   reset, a device that never finishes its interview.
//!
//! Unknown SREQs get the RPC error SRSP a real NCP sends; bad input never panics.

pub mod device;

use std::collections::BTreeMap;
use std::time::Duration;

pub use device::{DeviceKind, DeviceTiming, VirtualDevice};

use crate::mt::{MtFrame, MtParserStats, MtStreamParser, MtType, Subsystem};
use crate::znp::{cmd, nv, DEVICE_STATE_COORDINATOR};
use crate::{IeeeAddr, ZnpCommand};

/// Byte that makes a CC253x serial bootloader jump to the application.
pub const BOOTLOADER_SKIP: u8 = 0xEF;
/// Capabilities a CC2652 Z-Stack 3 build answers SYS_PING with (SYS, AF, ZDO, UTIL, GP, APP_CNF).
pub const PING_CAPABILITIES: u16 = 0x0659;
/// SYS_RESET_IND reasons.
pub const RESET_REASON_POWER_UP: u8 = 0x00;
pub const RESET_REASON_WATCHDOG: u8 = 0x02;
/// AF / NWK status codes the emulator uses (Z-Stack `ZComDef.h`).
pub const STATUS_INVALID_REQUEST: u8 = 0xC2;
pub const STATUS_NWK_NO_ROUTE: u8 = 0xCD;
pub const STATUS_DUPLICATE_ENTRY: u8 = 0xB8;
pub const STATUS_NV_OPER_FAILED: u8 = 0x0A;
pub const STATUS_NV_ITEM_UNINIT: u8 = 0x09;

/// How the emulator starts.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The coordinator's IEEE address.
    pub ieee: IeeeAddr,
    /// The virtual devices, in join order.
    pub devices: Vec<(DeviceKind, IeeeAddr)>,
    pub timing: DeviceTiming,
    /// Start in the serial bootloader (frames are ignored until 0xEF arrives).
    pub start_in_bootloader: bool,
    /// Delay between a join window opening and each successive device joining.
    pub join_spacing: Duration,
    /// Install codes (code + CRC) the virtual devices were manufactured with.
    pub install_codes: BTreeMap<IeeeAddr, Vec<u8>>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            ieee: IeeeAddr(0x00124b00_1cdd0001),
            devices: DeviceKind::ALL
                .iter()
                .map(|k| (*k, k.default_ieee()))
                .collect(),
            timing: DeviceTiming {
                report_interval: Duration::from_secs(5),
                sleepy_wake_interval: Duration::from_secs(6),
                sleepy_awake_window: Duration::from_millis(1500),
                sleepy_answers_after_join: 2,
            },
            start_in_bootloader: false,
            join_spacing: Duration::from_millis(250),
            install_codes: BTreeMap::new(),
        }
    }
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// These bytes go on the wire now, between frames.
    Garbage(Vec<u8>),
    /// The next frame the coordinator sends gets a wrong FCS.
    CorruptNextFrame,
    /// The next SRSP is not sent (the request is still carried out).
    DropNextSrsp,
    /// The coordinator reboots on its own and says so with SYS_RESET_IND (watchdog).
    Reset,
    /// This device never answers simple-descriptor requests, so its interview never ends.
    StuckInterview(IeeeAddr),
    /// This device leaves the network on its own (LEAVE_IND).
    DeviceLeaves(IeeeAddr),
}

/// Counters for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmulatorStats {
    pub frames_in: u64,
    pub frames_out: u64,
    pub corrupted_out: u64,
    pub dropped_srsp: u64,
    pub garbage_bytes_out: u64,
    pub resets: u64,
    pub af_data_requests: u64,
    pub af_data_confirms: u64,
    pub unknown_sreqs: u64,
    /// Joins refused because install codes were required and the device's did not match.
    pub install_code_refusals: u64,
    /// Device frames dropped because the device was not on the coordinator's active key.
    pub stale_key_frames: u64,
}

/// What a joined device holds of the network key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceKeys {
    active: Vec<u8>,
    /// Received in an update, waiting for the switch: (sequence number, key).
    alternate: Option<(u8, Vec<u8>)>,
}

/// The network the coordinator formed (also mirrored in NV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkParams {
    pub channel: u8,
    pub pan_id: u16,
    pub extended_pan_id: u64,
}

/// What a [`Emulator::garbled_report_burst`] sent, in centi-°C.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BurstReport {
    /// Values whose frames went out intact.
    pub delivered: Vec<i16>,
    /// Values whose frames went out with a bad FCS.
    pub corrupted: Vec<i16>,
}

#[derive(Debug, Clone)]
enum Action {
    /// A coordinator frame (AREQ) to send.
    Send(ZnpCommand),
    /// A frame from device `idx`; dropped if the device left or the coordinator is not running.
    FromDevice(usize, ZnpCommand),
    Join(usize),
    Announce(usize),
    /// The coordinator finished starting: state 9.
    Started,
    Reset {
        reason: u8,
    },
}

#[derive(Debug, Clone)]
struct Scheduled {
    due: Duration,
    seq: u64,
    action: Action,
}

/// The emulated coordinator and its network.
#[derive(Debug, Clone)]
pub struct Emulator {
    cfg: EmulatorConfig,
    parser: MtStreamParser,
    out: Vec<u8>,
    now: Duration,
    nv: BTreeMap<u16, Vec<u8>>,
    network: Option<NetworkParams>,
    /// ZDO device state: 0 hold, 9 started as coordinator.
    state: u8,
    in_bootloader: bool,
    endpoints: Vec<u8>,
    bdb_primary_mask: Option<u32>,
    permit_join_until: Option<Duration>,
    devices: Vec<VirtualDevice>,
    queue: Vec<Scheduled>,
    seq: u64,
    corrupt_next: bool,
    drop_next_srsp: bool,
    next_nwk: u16,
    stats: EmulatorStats,
    /// Install codes registered by the host (RAM: lost on reset), by IEEE address.
    registered_codes: BTreeMap<IeeeAddr, Vec<u8>>,
    /// APP_CNF_BDB_SET_JOINUSESINSTALLCODEKEY (RAM: off after a reset).
    join_uses_install_code: bool,
    /// The network key each joined device holds.
    device_keys: BTreeMap<IeeeAddr, DeviceKeys>,
    /// The coordinator's alternate key from the last update: (sequence number, key).
    alternate_key: Option<(u8, Vec<u8>)>,
}

impl Default for Emulator {
    fn default() -> Self {
        Self::new(EmulatorConfig::default())
    }
}

impl Emulator {
    pub fn new(cfg: EmulatorConfig) -> Self {
        let devices = cfg
            .devices
            .iter()
            .map(|(kind, ieee)| VirtualDevice::new(*kind, *ieee))
            .collect();
        Self {
            in_bootloader: cfg.start_in_bootloader,
            cfg,
            parser: MtStreamParser::from_host(),
            out: Vec::new(),
            now: Duration::ZERO,
            nv: BTreeMap::new(),
            network: None,
            state: 0,
            endpoints: Vec::new(),
            bdb_primary_mask: None,
            permit_join_until: None,
            devices,
            queue: Vec::new(),
            seq: 0,
            corrupt_next: false,
            drop_next_srsp: false,
            next_nwk: 0x1A01,
            stats: EmulatorStats::default(),
            registered_codes: BTreeMap::new(),
            join_uses_install_code: false,
            device_keys: BTreeMap::new(),
            alternate_key: None,
        }
    }

    // ---- host interface ----

    /// Bytes the driver wrote. Processes every complete frame and anything now due.
    pub fn receive(&mut self, now: Duration, bytes: &[u8]) {
        self.advance(now);
        if self.in_bootloader {
            if bytes.contains(&BOOTLOADER_SKIP) {
                self.in_bootloader = false;
            }
            return;
        }
        for frame in self.parser.feed(bytes) {
            self.stats.frames_in += 1;
            self.on_frame(frame);
        }
        self.run_due();
    }

    /// Advances time and runs whatever is due.
    pub fn tick(&mut self, now: Duration) {
        self.advance(now);
        self.run_due();
    }

    /// Bytes for the driver, in order; empties the buffer.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// When [`Emulator::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        let queued = self.queue.iter().map(|s| s.due).min();
        let devices = self
            .devices
            .iter()
            .filter_map(VirtualDevice::next_deadline)
            .min();
        [queued, devices, self.permit_join_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Injects a fault (see [`Fault`]).
    pub fn inject(&mut self, now: Duration, fault: Fault) {
        self.advance(now);
        match fault {
            Fault::Garbage(bytes) => {
                self.stats.garbage_bytes_out += bytes.len() as u64;
                self.out.extend_from_slice(&bytes);
            }
            Fault::CorruptNextFrame => self.corrupt_next = true,
            Fault::DropNextSrsp => self.drop_next_srsp = true,
            Fault::Reset => self.schedule(
                Duration::ZERO,
                Action::Reset {
                    reason: RESET_REASON_WATCHDOG,
                },
            ),
            Fault::StuckInterview(ieee) => {
                if let Some(d) = self.devices.iter_mut().find(|d| d.ieee == ieee) {
                    d.stuck_interview = true;
                }
            }
            Fault::DeviceLeaves(ieee) => {
                if let Some(idx) = self.devices.iter().position(|d| d.ieee == ieee) {
                    self.device_leaves(idx, false, Duration::ZERO);
                }
            }
        }
        self.run_due();
    }

    /// Makes the temperature sensor send `count` temperature reports back to back, with
    /// garbage before each and a bad FCS on every `corrupt_every`-th (0 = none). Values are
    /// 10.00 °C + 0.01 °C × i. Needs the sensor joined and the coordinator running.
    pub fn garbled_report_burst(
        &mut self,
        now: Duration,
        count: u16,
        corrupt_every: u16,
    ) -> BurstReport {
        self.advance(now);
        self.run_due();
        let mut report = BurstReport::default();
        let Some(idx) = self
            .devices
            .iter()
            .position(|d| d.kind == DeviceKind::TempHumidity && d.nwk.is_some())
        else {
            return report;
        };
        if self.state != DEVICE_STATE_COORDINATOR {
            return report;
        }
        for i in 0..count {
            let value = 1000 + i16::try_from(i).unwrap_or(i16::MAX - 1000);
            let garbage = [0x00, 0xFE, 0x13, 0x37, 0xFF, 0xFE, 0xFA, 0x01];
            self.stats.garbage_bytes_out += garbage.len() as u64;
            self.out.extend_from_slice(&garbage);
            let corrupt = corrupt_every != 0 && (i + 1) % corrupt_every == 0;
            if let Some(frame) = self.devices[idx].temperature_report(value, now) {
                self.corrupt_next = corrupt;
                self.emit(&frame);
                if corrupt {
                    report.corrupted.push(value);
                } else {
                    report.delivered.push(value);
                }
            }
        }
        report
    }

    // ---- inspection ----

    pub fn stats(&self) -> EmulatorStats {
        self.stats
    }

    /// Statistics of the parser for bytes from the driver.
    pub fn parser_stats(&self) -> MtParserStats {
        self.parser.stats()
    }

    /// The formed network, if any.
    pub fn network(&self) -> Option<NetworkParams> {
        self.network
    }

    /// The coordinator's ZDO device state (9 = running as coordinator).
    pub fn device_state(&self) -> u8 {
        self.state
    }

    pub fn devices(&self) -> &[VirtualDevice] {
        &self.devices
    }

    pub fn device(&self, ieee: IeeeAddr) -> Option<&VirtualDevice> {
        self.devices.iter().find(|d| d.ieee == ieee)
    }

    /// The raw value of an NV item.
    pub fn nv_item(&self, id: u16) -> Option<&[u8]> {
        self.nv.get(&id).map(Vec::as_slice)
    }

    pub fn permit_join_open(&self) -> bool {
        self.permit_join_until.is_some_and(|t| self.now < t)
    }

    pub fn in_bootloader(&self) -> bool {
        self.in_bootloader
    }

    /// The install code (code + CRC, or a derived key) the host registered for `ieee`.
    pub fn registered_install_code(&self, ieee: IeeeAddr) -> Option<&[u8]> {
        self.registered_codes.get(&ieee).map(Vec::as_slice)
    }

    /// Whether joins currently require an install-code link key.
    pub fn join_uses_install_code(&self) -> bool {
        self.join_uses_install_code
    }

    /// The coordinator's active network key: (sequence number, key).
    pub fn active_network_key(&self) -> Option<(u8, Vec<u8>)> {
        if let Some(v) = self.nv.get(&nv::NWK_ACTIVE_KEY_INFO) {
            if v.len() >= 17 {
                return Some((v[0], v[1..17].to_vec()));
            }
        }
        self.nv.get(&nv::PRECFGKEY).map(|k| (0, k.clone()))
    }

    /// The sequence number of the key device `ieee` is using, if it is joined.
    pub fn device_key_seq(&self, ieee: IeeeAddr) -> Option<u8> {
        let keys = self.device_keys.get(&ieee)?;
        match self.active_network_key() {
            Some((seq, key)) if key == keys.active => Some(seq),
            _ => None,
        }
    }

    // ---- internals ----

    fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    fn schedule(&mut self, delay: Duration, action: Action) {
        self.seq += 1;
        self.queue.push(Scheduled {
            due: self.now + delay,
            seq: self.seq,
            action,
        });
    }

    fn run_due(&mut self) {
        // Bounded: every action either finishes or schedules into the future.
        for _ in 0..10_000 {
            if let Some(until) = self.permit_join_until {
                if self.now >= until {
                    self.permit_join_until = None;
                }
            }
            let next = self
                .queue
                .iter()
                .enumerate()
                .filter(|(_, s)| s.due <= self.now)
                .min_by_key(|(_, s)| (s.due, s.seq))
                .map(|(i, _)| i);
            if let Some(i) = next {
                let s = self.queue.swap_remove(i);
                self.run_action(s.action);
                continue;
            }
            let timing = self.cfg.timing;
            let now = self.now;
            let mut produced = false;
            for idx in 0..self.devices.len() {
                if self.devices[idx].next_deadline().is_some_and(|d| d <= now) {
                    for (delay, frame) in self.devices[idx].tick(now, &timing) {
                        self.schedule(delay, Action::FromDevice(idx, frame));
                        produced = true;
                    }
                }
            }
            if !produced && !self.queue.iter().any(|s| s.due <= self.now) {
                return;
            }
        }
    }

    fn run_action(&mut self, action: Action) {
        match action {
            Action::Send(cmd) => self.emit(&cmd),
            Action::FromDevice(idx, cmd) => {
                let joined = self.devices.get(idx).is_some_and(|d| d.nwk.is_some());
                if joined && self.state == DEVICE_STATE_COORDINATOR {
                    if self.on_active_key(idx) {
                        self.emit(&cmd);
                    } else {
                        self.stats.stale_key_frames += 1;
                    }
                }
            }
            Action::Join(idx) => self.join(idx),
            Action::Announce(idx) => {
                if self.state == DEVICE_STATE_COORDINATOR {
                    if let Some(a) = self.devices.get(idx).and_then(VirtualDevice::announce) {
                        self.emit(&a);
                    }
                }
            }
            Action::Started => {
                self.state = DEVICE_STATE_COORDINATOR;
                self.emit(&ZnpCommand::ZdoStateChangeInd {
                    state: DEVICE_STATE_COORDINATOR,
                });
            }
            Action::Reset { reason } => self.reset(reason),
        }
    }

    /// Encodes and queues a frame, applying pending faults.
    fn emit(&mut self, cmd: &ZnpCommand) {
        let frame = cmd.encode();
        if frame.cmd_type == MtType::Srsp && self.drop_next_srsp {
            self.drop_next_srsp = false;
            self.stats.dropped_srsp += 1;
            return;
        }
        let Ok(mut bytes) = frame.to_bytes() else {
            return;
        };
        if self.corrupt_next {
            self.corrupt_next = false;
            if let Some(fcs) = bytes.last_mut() {
                *fcs ^= 0x5A;
            }
            self.stats.corrupted_out += 1;
        }
        self.stats.frames_out += 1;
        self.out.extend_from_slice(&bytes);
    }

    fn srsp(&mut self, cmd: ZnpCommand) {
        self.emit(&cmd);
    }

    fn status_srsp(&mut self, subsystem: Subsystem, cmd_id: u8, status: u8) {
        self.srsp(ZnpCommand::StatusRsp {
            subsystem,
            cmd_id,
            status,
        });
    }

    fn rpc_error(&mut self, frame: &MtFrame, error_code: u8) {
        self.stats.unknown_sreqs += 1;
        self.srsp(ZnpCommand::RpcError {
            error_code,
            request_cmd0: frame.cmd0(),
            request_cmd1: frame.cmd_id,
        });
    }

    fn on_frame(&mut self, frame: MtFrame) {
        let command = match ZnpCommand::decode(&frame) {
            Ok(c) => c,
            Err(_) => {
                if frame.cmd_type == MtType::Sreq {
                    // 4 = bad length.
                    self.rpc_error(&frame, 4);
                }
                return;
            }
        };
        let running = self.state == DEVICE_STATE_COORDINATOR;
        match command {
            ZnpCommand::SysPingReq => self.srsp(ZnpCommand::SysPingRsp {
                capabilities: PING_CAPABILITIES,
            }),
            ZnpCommand::SysVersionReq => self.srsp(version_rsp()),
            ZnpCommand::SysGetExtAddrReq => self.srsp(ZnpCommand::SysGetExtAddrRsp {
                ieee: self.cfg.ieee,
            }),
            ZnpCommand::SysResetReq { .. } => self.schedule(
                Duration::from_millis(20),
                Action::Reset {
                    reason: RESET_REASON_POWER_UP,
                },
            ),
            ZnpCommand::SysOsalNvReadReq { id, offset } => {
                let rsp = match self.nv.get(&id) {
                    Some(v) => ZnpCommand::SysOsalNvReadRsp {
                        status: 0,
                        value: v.get(usize::from(offset)..).unwrap_or_default().to_vec(),
                    },
                    None => ZnpCommand::SysOsalNvReadRsp {
                        status: STATUS_NV_OPER_FAILED,
                        value: Vec::new(),
                    },
                };
                self.srsp(rsp);
            }
            ZnpCommand::SysOsalNvWriteReq { id, offset, value } => {
                let item = self.nv.entry(id).or_default();
                let start = usize::from(offset);
                if item.len() < start + value.len() {
                    item.resize(start + value.len(), 0);
                }
                item[start..start + value.len()].copy_from_slice(&value);
                self.status_srsp(Subsystem::Sys, cmd::sys::OSAL_NV_WRITE, 0);
            }
            ZnpCommand::SysOsalNvItemInitReq {
                id,
                item_len,
                init_value,
            } => {
                let status = match self.nv.entry(id) {
                    std::collections::btree_map::Entry::Occupied(_) => 0,
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        let mut v = init_value;
                        v.resize(usize::from(item_len), 0);
                        slot.insert(v);
                        STATUS_NV_ITEM_UNINIT
                    }
                };
                self.status_srsp(Subsystem::Sys, cmd::sys::OSAL_NV_ITEM_INIT, status);
            }
            ZnpCommand::UtilGetDeviceInfoReq => {
                let assoc = self.devices.iter().filter_map(|d| d.nwk).collect();
                self.srsp(ZnpCommand::UtilGetDeviceInfoRsp {
                    status: 0,
                    ieee: self.cfg.ieee,
                    short_addr: 0x0000,
                    device_type: 0x07,
                    device_state: self.state,
                    assoc_devices: assoc,
                });
            }
            ZnpCommand::AfRegisterReq(reg) => {
                let status = if self.endpoints.contains(&reg.endpoint) {
                    STATUS_DUPLICATE_ENTRY
                } else {
                    self.endpoints.push(reg.endpoint);
                    0
                };
                self.status_srsp(Subsystem::Af, cmd::af::REGISTER, status);
            }
            ZnpCommand::ZdoStartupFromAppReq { .. } => {
                // 0 = restored network state, 2 = not started (nothing to restore).
                let status = if self.network.is_some() { 0 } else { 2 };
                self.status_srsp(Subsystem::Zdo, cmd::zdo::STARTUP_FROM_APP, status);
                if self.network.is_some() && !running {
                    self.schedule(
                        Duration::from_millis(5),
                        Action::Send(ZnpCommand::ZdoStateChangeInd { state: 8 }),
                    );
                    self.schedule(Duration::from_millis(30), Action::Started);
                }
            }
            ZnpCommand::BdbSetChannelReq {
                is_primary,
                channel_mask,
            } => {
                if is_primary {
                    self.bdb_primary_mask = Some(channel_mask);
                }
                self.status_srsp(Subsystem::AppCnf, cmd::app_cnf::BDB_SET_CHANNEL, 0);
            }
            ZnpCommand::BdbStartCommissioningReq { mode } => {
                self.status_srsp(Subsystem::AppCnf, cmd::app_cnf::BDB_START_COMMISSIONING, 0);
                if mode & crate::znp::BDB_MODE_FORMATION != 0 {
                    self.form();
                }
            }
            ZnpCommand::ZdoMgmtPermitJoinReq { duration, .. } => {
                let status = if running { 0 } else { STATUS_INVALID_REQUEST };
                self.status_srsp(Subsystem::Zdo, cmd::zdo::MGMT_PERMIT_JOIN_REQ, status);
                if running {
                    self.open_permit_join(duration);
                }
            }
            ZnpCommand::AfDataRequestReq(req) => {
                self.stats.af_data_requests += 1;
                let status = if running { 0 } else { STATUS_INVALID_REQUEST };
                self.status_srsp(Subsystem::Af, cmd::af::DATA_REQUEST, status);
                if running {
                    self.af_data(req);
                }
            }
            ZnpCommand::ZdoIeeeAddrReq { short_addr, .. } => {
                self.status_srsp(Subsystem::Zdo, cmd::zdo::IEEE_ADDR_REQ, 0);
                if let Some(d) = self.devices.iter().find(|d| d.nwk == Some(short_addr)) {
                    let rsp = ZnpCommand::ZdoIeeeAddrRsp {
                        status: 0,
                        ieee: d.ieee,
                        nwk_addr: short_addr,
                        start_index: 0,
                        assoc_devices: Vec::new(),
                    };
                    self.schedule(Duration::from_millis(10), Action::Send(rsp));
                }
            }
            ZnpCommand::ZdoMgmtLeaveReq {
                dst_addr, rejoin, ..
            } => {
                self.status_srsp(Subsystem::Zdo, cmd::zdo::MGMT_LEAVE_REQ, 0);
                let now = self.now;
                if let Some(idx) = self
                    .devices
                    .iter()
                    .position(|d| d.nwk == Some(dst_addr) && d.awake(now))
                {
                    self.schedule(
                        Duration::from_millis(15),
                        Action::Send(ZnpCommand::ZdoMgmtLeaveRsp {
                            src_addr: dst_addr,
                            status: 0,
                        }),
                    );
                    self.device_leaves(idx, rejoin, Duration::from_millis(25));
                }
            }
            ZnpCommand::ZdoNodeDescReq { dst_addr, .. }
            | ZnpCommand::ZdoActiveEpReq { dst_addr, .. }
            | ZnpCommand::ZdoSimpleDescReq { dst_addr, .. }
            | ZnpCommand::ZdoBindReq { dst_addr, .. } => {
                let f = command.encode();
                self.status_srsp(Subsystem::Zdo, f.cmd_id, 0);
                self.zdo_to_device(dst_addr, &command);
            }
            ZnpCommand::ZdoMgmtLqiReq { .. } => {
                self.status_srsp(Subsystem::Zdo, cmd::zdo::MGMT_LQI_REQ, 0);
            }
            ZnpCommand::BdbAddInstallCodeReq { format, ieee, code } => {
                let valid = match format {
                    crate::install_code::FORMAT_CODE_AND_CRC => {
                        crate::install_code::InstallCode::from_bytes(&code.0).is_ok()
                    }
                    crate::install_code::FORMAT_DERIVED_KEY => code.0.len() == 16,
                    _ => false,
                };
                // 0x02: ZInvalidParameter (Z-Stack `ZComDef.h`).
                let status = if valid {
                    self.registered_codes.insert(ieee, code.0);
                    0
                } else {
                    0x02
                };
                self.status_srsp(Subsystem::AppCnf, cmd::app_cnf::BDB_ADD_INSTALLCODE, status);
            }
            ZnpCommand::BdbSetJoinUsesInstallCodeKeyReq { enabled } => {
                self.join_uses_install_code = enabled;
                self.status_srsp(
                    Subsystem::AppCnf,
                    cmd::app_cnf::BDB_SET_JOIN_USES_INSTALL_CODE_KEY,
                    0,
                );
            }
            ZnpCommand::ZdoExtUpdateNwkKeyReq {
                dst_addr,
                key_seq_num,
                key,
            } => {
                let status = if running { 0 } else { STATUS_INVALID_REQUEST };
                self.status_srsp(Subsystem::Zdo, cmd::zdo::EXT_UPDATE_NWK_KEY, status);
                if running {
                    for ieee in self.reached_by(dst_addr) {
                        if let Some(k) = self.device_keys.get_mut(&ieee) {
                            k.alternate = Some((key_seq_num, key.0.clone()));
                        }
                    }
                    self.alternate_key = Some((key_seq_num, key.0));
                }
            }
            ZnpCommand::ZdoExtSwitchNwkKeyReq {
                dst_addr,
                key_seq_num,
            } => {
                let alternate = self
                    .alternate_key
                    .clone()
                    .filter(|(seq, _)| *seq == key_seq_num);
                let status = match (&alternate, running) {
                    (Some(_), true) => 0,
                    _ => STATUS_INVALID_REQUEST,
                };
                self.status_srsp(Subsystem::Zdo, cmd::zdo::EXT_SWITCH_NWK_KEY, status);
                if let (Some((seq, key)), true) = (alternate, running) {
                    for ieee in self.reached_by(dst_addr) {
                        if let Some(k) = self.device_keys.get_mut(&ieee) {
                            if let Some((_, new)) = k.alternate.take().filter(|(s, _)| *s == seq) {
                                k.active = new;
                            }
                        }
                    }
                    let mut info = vec![seq];
                    info.extend_from_slice(&key);
                    self.nv.insert(nv::NWK_ACTIVE_KEY_INFO, info);
                    self.alternate_key = None;
                }
            }
            _ if frame.cmd_type == MtType::Sreq => {
                // 2 = unknown command id in a known subsystem.
                self.rpc_error(&frame, 2);
            }
            // AREQs the host may send that need no answer, or stray responses.
            _ => {}
        }
    }

    fn zdo_to_device(&mut self, dst_addr: u16, command: &ZnpCommand) {
        if dst_addr == 0x0000 {
            if let ZnpCommand::ZdoActiveEpReq { .. } = command {
                let rsp = ZnpCommand::ZdoActiveEpRsp {
                    src_addr: 0,
                    status: 0,
                    nwk_addr: Some(0),
                    endpoints: self.endpoints.clone(),
                };
                self.schedule(Duration::from_millis(5), Action::Send(rsp));
            }
            return;
        }
        let now = self.now;
        if let Some(idx) = self.devices.iter().position(|d| d.nwk == Some(dst_addr)) {
            for (delay, rsp) in self.devices[idx].handle_zdo(command, now) {
                self.schedule(delay, Action::FromDevice(idx, rsp));
            }
        }
    }

    fn af_data(&mut self, req: crate::znp::AfDataRequest) {
        let now = self.now;
        let timing = self.cfg.timing;
        let confirm = |status: u8| {
            Action::Send(ZnpCommand::AfDataConfirm {
                status,
                endpoint: req.dst_endpoint,
                trans_id: req.trans_id,
            })
        };
        self.stats.af_data_confirms += 1;
        let Some(idx) = self
            .devices
            .iter()
            .position(|d| d.nwk == Some(req.dst_addr))
        else {
            self.schedule(Duration::from_millis(30), confirm(STATUS_NWK_NO_ROUTE));
            return;
        };
        if !self.devices[idx].awake(now) {
            // A parent holds frames for a sleeping child for 7.68 s; this one gives up sooner.
            self.schedule(
                Duration::from_millis(500),
                confirm(device::STATUS_MAC_TRANSACTION_EXPIRED),
            );
            return;
        }
        self.schedule(Duration::from_millis(5), confirm(0));
        for (delay, rsp) in self.devices[idx].handle_af(&req, now, &timing) {
            self.schedule(delay, Action::FromDevice(idx, rsp));
        }
    }

    fn open_permit_join(&mut self, duration: u8) {
        self.schedule(
            Duration::from_millis(3),
            Action::Send(ZnpCommand::ZdoMgmtPermitJoinRsp {
                src_addr: 0,
                status: 0,
            }),
        );
        self.schedule(
            Duration::from_millis(4),
            Action::Send(ZnpCommand::ZdoPermitJoinInd { duration }),
        );
        if duration == 0 {
            self.permit_join_until = None;
            return;
        }
        self.permit_join_until = Some(self.now + Duration::from_secs(u64::from(duration)));
        let waiting: Vec<usize> = (0..self.devices.len())
            .filter(|i| self.devices[*i].nwk.is_none())
            .collect();
        let spacing = self.cfg.join_spacing;
        for (k, idx) in waiting.into_iter().enumerate() {
            let n = u32::try_from(k + 1).unwrap_or(u32::MAX);
            self.schedule(spacing.saturating_mul(n), Action::Join(idx));
        }
    }

    fn join(&mut self, idx: usize) {
        if !self.permit_join_open() || self.state != DEVICE_STATE_COORDINATOR {
            return;
        }
        let Some(dev) = self.devices.get(idx) else {
            return;
        };
        if dev.nwk.is_some() {
            return;
        }
        let ieee = dev.ieee;
        let code_ok = !self.join_uses_install_code
            || matches!(
                (self.cfg.install_codes.get(&ieee), self.registered_codes.get(&ieee)),
                (Some(have), Some(registered)) if have == registered
            );
        let nwk = self.next_nwk;
        self.next_nwk = match self.next_nwk.wrapping_add(0x0111) {
            n if n == 0 || n >= 0xFFF8 => 0x1A01,
            n => n,
        };
        if !code_ok {
            // The trust center saw the association but has no key to send the device: it never
            // gets the network key, never announces, and tries again in the next window.
            self.stats.install_code_refusals += 1;
            self.emit(&ZnpCommand::ZdoTcDevInd {
                nwk_addr: nwk,
                ieee,
                parent_addr: 0x0000,
            });
            return;
        }
        let (now, timing) = (self.now, self.cfg.timing);
        if let Some(dev) = self.devices.get_mut(idx) {
            dev.joined(nwk, now, &timing);
        }
        if let Some((_, key)) = self.active_network_key() {
            self.device_keys.insert(
                ieee,
                DeviceKeys {
                    active: key,
                    alternate: None,
                },
            );
        }
        self.emit(&ZnpCommand::ZdoTcDevInd {
            nwk_addr: nwk,
            ieee,
            parent_addr: 0x0000,
        });
        self.schedule(Duration::from_millis(40), Action::Announce(idx));
    }

    fn device_leaves(&mut self, idx: usize, rejoin: bool, delay: Duration) {
        let Some(dev) = self.devices.get_mut(idx) else {
            return;
        };
        let Some(nwk) = dev.nwk else {
            return;
        };
        let ieee = dev.ieee;
        dev.left();
        self.schedule(
            delay,
            Action::Send(ZnpCommand::ZdoLeaveInd {
                src_addr: nwk,
                ieee,
                request: false,
                remove_children: false,
                rejoin,
            }),
        );
    }

    /// BDB formation: takes channel, PAN ids and key from NV (as Z-Stack does).
    fn form(&mut self) {
        let mask = self
            .bdb_primary_mask
            .or_else(|| self.nv_u32(nv::CHANLIST))
            .unwrap_or(1 << 11);
        let channel = (11u8..=26).find(|c| mask & (1u32 << c) != 0).unwrap_or(11);
        let pan_id = self
            .nv_u16(nv::PANID)
            .filter(|p| *p != 0xFFFF && *p != 0)
            .unwrap_or(0x1A62);
        let extended_pan_id = self
            .nv
            .get(&nv::EXTENDED_PAN_ID)
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_le_bytes)
            .filter(|e| *e != 0 && *e != u64::MAX)
            .unwrap_or(self.cfg.ieee.0);
        let params = NetworkParams {
            channel,
            pan_id,
            extended_pan_id,
        };
        if self.network != Some(params) {
            for d in &mut self.devices {
                d.left();
            }
        }
        self.network = Some(params);
        // Z-Stack keeps the live network parameters in NV (the NIB); mirror them.
        self.nv.insert(nv::PANID, pan_id.to_le_bytes().to_vec());
        self.nv
            .insert(nv::CHANLIST, (1u32 << channel).to_le_bytes().to_vec());
        self.nv
            .insert(nv::EXTENDED_PAN_ID, extended_pan_id.to_le_bytes().to_vec());
        if !self.nv.contains_key(&nv::PRECFGKEY) {
            // No key configured: the stack makes one up (deterministic here).
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&self.cfg.ieee.0.to_le_bytes());
            key[8..].copy_from_slice(&extended_pan_id.to_be_bytes());
            self.nv.insert(nv::PRECFGKEY, key.to_vec());
        }
        self.schedule(
            Duration::from_millis(5),
            Action::Send(ZnpCommand::ZdoStateChangeInd { state: 8 }),
        );
        self.schedule(Duration::from_millis(50), Action::Started);
        self.schedule(
            Duration::from_millis(55),
            Action::Send(ZnpCommand::BdbCommissioningNotification {
                status: 0,
                mode: Some(crate::znp::BDB_MODE_FORMATION),
                remaining_modes: Some(0),
            }),
        );
    }

    fn reset(&mut self, reason: u8) {
        self.stats.resets += 1;
        let startup = self
            .nv
            .get(&nv::STARTUP_OPTION)
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        if startup & nv::STARTUP_CLEAR_ALL != 0 {
            self.nv.retain(|id, _| *id == nv::STARTUP_OPTION);
            self.network = None;
            for d in &mut self.devices {
                d.left();
            }
        }
        self.state = 0;
        self.registered_codes.clear();
        self.join_uses_install_code = false;
        self.alternate_key = None;
        self.endpoints.clear();
        self.bdb_primary_mask = None;
        self.permit_join_until = None;
        // Whatever was in flight is lost with the reboot.
        self.queue.clear();
        self.parser.reset();
        let v = version_rsp();
        let ZnpCommand::SysVersionRsp {
            transport_rev,
            product,
            major_rel,
            minor_rel,
            ..
        } = v
        else {
            return;
        };
        self.emit(&ZnpCommand::SysResetInd {
            reason,
            transport_rev,
            product_id: product,
            major_rel,
            minor_rel,
            hw_rev: 1,
        });
    }

    /// Whether device `idx` holds the coordinator's active network key.
    fn on_active_key(&self, idx: usize) -> bool {
        let Some(dev) = self.devices.get(idx) else {
            return false;
        };
        match (self.device_keys.get(&dev.ieee), self.active_network_key()) {
            (Some(k), Some((_, active))) => k.active == active,
            // Joined before any key was known: nothing to compare.
            _ => true,
        }
    }

    /// The joined devices a broadcast or unicast to `dst_addr` reaches: 0xFFFF every device
    /// (sleepy ones through their parent), 0xFFFD / 0xFFFC only those with the receiver on.
    fn reached_by(&self, dst_addr: u16) -> Vec<IeeeAddr> {
        self.devices
            .iter()
            .filter(|d| match (dst_addr, d.nwk) {
                (_, None) => false,
                (0xFFFF, _) => true,
                (0xFFFC | 0xFFFD, _) => !d.is_sleepy(),
                (dst, Some(nwk)) => dst == nwk,
            })
            .map(|d| d.ieee)
            .collect()
    }

    fn nv_u16(&self, id: u16) -> Option<u16> {
        let v = self.nv.get(&id)?;
        Some(u16::from_le_bytes([*v.first()?, *v.get(1)?]))
    }

    fn nv_u32(&self, id: u16) -> Option<u32> {
        let v = self.nv.get(&id)?;
        <[u8; 4]>::try_from(v.get(..4)?)
            .ok()
            .map(u32::from_le_bytes)
    }
}

fn version_rsp() -> ZnpCommand {
    ZnpCommand::SysVersionRsp {
        transport_rev: 2,
        product: 1,
        major_rel: 2,
        minor_rel: 7,
        maint_rel: 1,
        revision: Some(20_230_507),
        bootloader_build_type: None,
        bootloader_revision: None,
    }
}

#[cfg(test)]
mod tests;
