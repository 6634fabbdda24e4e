//! A device-side emulator of a TI Z-Stack 3 ZNP coordinator with virtual devices, for tests,
//! `sim://zigbee` and the demo. Sans-IO: the host feeds the bytes the driver wrote
//! ([`Emulator::receive`]), calls [`Emulator::tick`] at [`Emulator::next_deadline`], and writes
//! out what [`Emulator::take_output`] returns. Time is a [`Duration`] since any fixed epoch the
//! host chooses; nothing here reads a clock, spawns, sleeps or does IO.
//!
//! What it emulates (the start-up sequence of reference §1.4):
//! - SYS ping/version/reset (with SYS_RESET_IND), OSAL NV item read/write/init with an NV
//!   store that survives resets and link re-opens, STARTUP_OPTION clearing on reset;
//! - the NV state a formed network leaves behind, in the layout of the [`Firmware`] chosen:
//!   the NIB (0x0021), the active key info (0x003A) and the network security material table
//!   with the outgoing NWK frame counter, which counts every frame the coordinator sends;
//!   read with OSAL_NV_LENGTH / OSAL_NV_READ_EXT and, for the extended tables of Z-Stack
//!   3.x.0, SYS_NV_LENGTH / SYS_NV_READ (as zigbee-herdsman's backup reads them); the
//!   NWKKEY item (0x0082) whose length tells herdsman the struct layout;
//! - the devices' APS link keys in NV ([`link_keys`]): an address manager entry per joined
//!   device, a trust center link key entry (seed-derived key) for each device that did the
//!   Zigbee 3.0 key exchange, the TCLK seed written at formation, and unique keys
//!   ([`Emulator::add_unique_link_key`]) in the security manager and APS link key data tables;
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
//! - network key update and switch (ZDO_EXT_UPDATE_NWK_KEY / ZDO_EXT_SWITCH_NWK_KEY), kept in
//!   NV as Z-Stack's `SSP_UpdateNwkKey` / `SSP_SwitchNwkKey` keep them: an update writes the
//!   alternate key item (0x003B); a broadcast switch to its sequence number swaps it with the
//!   active key item (0x003A) and restarts the outgoing NWK frame counter at 0 (a unicast
//!   switch moves only that device; a sequence number that matches no alternate key changes
//!   nothing, and the SRSP is still success). Joined devices the update reaches keep the
//!   new key as their alternate and move to it on the switch; frames from a device still on
//!   an old key are dropped and counted;
//! - device frames handed over as Z-Stack does ([`incoming`]): AF_INCOMING_MSG, or
//!   AF_INCOMING_MSG_EXT with the payload held back for AF_DATA_RETRIEVE when it is over 220
//!   bytes (a large report or read response), or every frame as AF_INCOMING_MSG_EXT on
//!   request ([`IncomingForm`]); Green Power notifications from the coordinator's own proxy
//!   to a registered GP endpoint 242 ([`Emulator::green_power_frame`]);
//! - a bootloader that swallows frames until the 0xEF skip byte (CC253x style);
//! - faults on request ([`Fault`]): garbage bytes, a bad FCS, a dropped SRSP, an unsolicited
//!   reset, a device that never finishes its interview, held payloads freed early.
//!
//! Unknown SREQs get the RPC error SRSP a real NCP sends; bad input never panics.

mod commands;
pub mod device;
mod factory;
mod host_commands;
mod incoming;
mod link_keys;
pub mod manufacturer;
mod network;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub use device::{DeviceKind, DeviceTiming, VirtualDevice};
pub use incoming::{IncomingForm, HELD_PAYLOAD_LIFETIME};
pub use link_keys::{
    ADDRESS_MANAGER_CAPACITY, APS_KEY_DATA_CAPACITY, SECURITY_MANAGER_CAPACITY, TCLK_TABLE_CAPACITY,
};

use crate::mt::{MtFrame, MtParserStats, MtStreamParser, MtType, Subsystem};
use crate::nvitems::{
    Nib, NvLayout, NwkKeyDescriptor, NwkSecMaterialEntry, GENERIC_EXTENDED_PAN_ID,
};
use crate::zcl::ZclValue;
use crate::znp::{cmd, nv, AfRegister, DEVICE_STATE_COORDINATOR};
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
/// Most bytes one OSAL_NV_READ_EXT answer carries; longer items take several reads.
pub const NV_READ_EXT_CHUNK: usize = 64;
/// Entries in the network security material table (legacy items 0x0075..=0x0080).
pub const SEC_MATERIAL_TABLE_LEN: u16 = 12;

/// Which Z-Stack build the emulator plays: it decides SYS_VERSION's product, the NV struct
/// layout and where the NWK frame counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// SimpleLink Z-Stack 3.x.0 on a CC26xx/CC13xx (product 1): aligned structs, security
    /// material in the extended NV table (sysId 1, itemId 0x0007, subId = entry).
    #[default]
    ZStack3x0,
    /// Z-Stack 3.0.x on a CC2531 (product 2): packed structs, security material in legacy
    /// items 0x0075 + entry.
    ZStack30x,
}

impl Firmware {
    /// SYS_VERSION product id.
    pub fn product(self) -> u8 {
        match self {
            Self::ZStack3x0 => 1,
            Self::ZStack30x => 2,
        }
    }

    pub fn layout(self) -> NvLayout {
        match self {
            Self::ZStack3x0 => NvLayout::Aligned,
            Self::ZStack30x => NvLayout::Unaligned,
        }
    }
}

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
    pub firmware: Firmware,
    /// How device frames are handed to the host.
    pub incoming: IncomingForm,
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
            firmware: Firmware::default(),
            incoming: IncomingForm::default(),
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
    /// The next SYS_OSAL_NV_READ of this item is answered with an RPC error SRSP (as a
    /// firmware that does not take the request), not with the item.
    NvReadRpcError(u16),
    /// The next ZDO_MGMT_PERMIT_JOIN_REQ is answered with this non-zero status and no
    /// window opens (as a coordinator whose network is not up, or whose NWK layer is busy).
    RefusePermitJoin(u8),
    /// The coordinator reboots on its own and says so with SYS_RESET_IND (watchdog).
    Reset,
    /// This device never answers simple-descriptor requests, so its interview never ends.
    StuckInterview(IeeeAddr),
    /// This device leaves the network on its own (LEAVE_IND).
    DeviceLeaves(IeeeAddr),
    /// Every payload held back for AF_DATA_RETRIEVE is freed now, as when the host waits
    /// longer than [`HELD_PAYLOAD_LIFETIME`].
    ExpireHeldPayloads,
    /// The firmware locks up (`true`): it reads nothing, answers nothing and sends
    /// nothing, until it runs again (`false`) as it was.
    Freeze(bool),
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
    /// Payloads held back for AF_DATA_RETRIEVE (AF_INCOMING_MSG_EXT without its payload).
    pub held_payloads: u64,
    /// Held payloads freed because nobody retrieved them in time.
    pub held_payloads_expired: u64,
    /// AF_DATA_RETRIEVE requests answered.
    pub data_retrieves: u64,
    /// Green Power notifications delivered to the host's GP endpoint.
    pub gp_frames: u64,
    /// Green Power notifications not delivered (no GP endpoint, or not in the GP group).
    pub gp_frames_undelivered: u64,
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

/// The emulated coordinator and its network. `Debug` leaves out NV contents (keys).
#[derive(Clone)]
pub struct Emulator {
    cfg: EmulatorConfig,
    parser: MtStreamParser,
    out: Vec<u8>,
    now: Duration,
    nv: BTreeMap<u16, Vec<u8>>,
    /// Extended NV items (Z-Stack 3.x.0), keyed by (sysId, itemId, subId).
    ext_nv: BTreeMap<(u8, u16, u16), Vec<u8>>,
    network: Option<NetworkParams>,
    /// ZDO device state: 0 hold, 9 started as coordinator.
    state: u8,
    in_bootloader: bool,
    /// AF_REGISTER'd endpoints (RAM: gone after a reset).
    endpoints: Vec<AfRegister>,
    /// APS group memberships (endpoint, group), kept in NV like Z-Stack's group table.
    groups: BTreeSet<(u8, u16)>,
    /// ZDO clusters registered with ZDO_MSG_CB_REGISTER (0xFFFF = all; RAM).
    zdo_callbacks: BTreeSet<u16>,
    /// TSNs of ZDO requests sent over AF, by (responder, response cluster).
    zdo_tsn: BTreeMap<(u16, u16), u8>,
    /// TSN for ZDO messages passed up that answer no request of the host's.
    zdo_seq: u8,
    bdb_primary_mask: Option<u32>,
    permit_join_until: Option<Duration>,
    devices: Vec<VirtualDevice>,
    queue: Vec<Scheduled>,
    seq: u64,
    corrupt_next: bool,
    drop_next_srsp: bool,
    /// Locked up ([`Fault::Freeze`]).
    frozen: bool,
    /// NV items whose next read is answered with an RPC error.
    nv_read_rpc_error: Vec<u16>,
    /// The status the next permit-join request gets instead of success.
    refuse_permit_join: Option<u8>,
    next_nwk: u16,
    stats: EmulatorStats,
    /// Install codes registered by the host (RAM: lost on reset), by IEEE address.
    registered_codes: BTreeMap<IeeeAddr, Vec<u8>>,
    /// APP_CNF_BDB_SET_JOINUSESINSTALLCODEKEY (RAM: off after a reset).
    join_uses_install_code: bool,
    /// The network key each joined device holds (the coordinator's own keys are in NV).
    device_keys: BTreeMap<IeeeAddr, DeviceKeys>,
    /// Payloads held back for AF_DATA_RETRIEVE (RAM: lost on reset).
    held: Vec<incoming::HeldPayload>,
    /// ZCL sequence number of the GP proxy's notifications.
    gp_tsn: u8,
}

impl Default for Emulator {
    fn default() -> Self {
        Self::new(EmulatorConfig::default())
    }
}

impl std::fmt::Debug for Emulator {
    /// NV holds the network key, the TCLK seed and link keys: only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("firmware", &self.cfg.firmware)
            .field("ieee", &self.cfg.ieee)
            .field("network", &self.network)
            .field("state", &self.state)
            .field("nv_items", &self.nv.len())
            .field("extended_nv_items", &self.ext_nv.len())
            .field("devices", &self.devices.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    pub fn new(cfg: EmulatorConfig) -> Self {
        let nv = factory::factory_nv(cfg.firmware, cfg.ieee);
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
            nv,
            ext_nv: BTreeMap::new(),
            network: None,
            state: 0,
            endpoints: Vec::new(),
            groups: BTreeSet::new(),
            zdo_callbacks: BTreeSet::new(),
            zdo_tsn: BTreeMap::new(),
            zdo_seq: 0,
            bdb_primary_mask: None,
            permit_join_until: None,
            devices,
            queue: Vec::new(),
            seq: 0,
            corrupt_next: false,
            drop_next_srsp: false,
            frozen: false,
            nv_read_rpc_error: Vec::new(),
            refuse_permit_join: None,
            next_nwk: 0x1A01,
            stats: EmulatorStats::default(),
            registered_codes: BTreeMap::new(),
            join_uses_install_code: false,
            device_keys: BTreeMap::new(),
            held: Vec::new(),
            gp_tsn: 0,
        }
    }

    // ---- host interface ----

    /// Bytes the driver wrote. Processes every complete frame and anything now due.
    pub fn receive(&mut self, now: Duration, bytes: &[u8]) {
        self.advance(now);
        if self.frozen {
            return;
        }
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
        if self.frozen {
            return;
        }
        self.run_due();
    }

    /// Bytes for the driver, in order; empties the buffer.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// When [`Emulator::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.frozen {
            return None;
        }
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
            Fault::NvReadRpcError(id) => self.nv_read_rpc_error.push(id),
            Fault::RefusePermitJoin(status) => self.refuse_permit_join = Some(status),
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
            Fault::ExpireHeldPayloads => self.drop_held_payloads(),
            Fault::Freeze(frozen) => self.frozen = frozen,
        }
        if !self.frozen {
            self.run_due();
        }
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
                self.deliver(frame);
                if corrupt {
                    report.corrupted.push(value);
                } else {
                    report.delivered.push(value);
                }
            }
        }
        report
    }

    /// Makes the temperature sensor `ieee` measure `centi_celsius` (0.01 °C) and report it
    /// at once, as a sensor does when its reading moves past its reportable change. False
    /// when `ieee` is not a joined temperature sensor or the coordinator is not running.
    pub fn report_temperature(
        &mut self,
        now: Duration,
        ieee: IeeeAddr,
        centi_celsius: i16,
    ) -> bool {
        self.advance(now);
        self.run_due();
        if self.state != DEVICE_STATE_COORDINATOR {
            return false;
        }
        let Some(dev) = self
            .devices
            .iter_mut()
            .find(|d| d.ieee == ieee && d.kind == DeviceKind::TempHumidity && d.nwk.is_some())
        else {
            return false;
        };
        match dev.temperature_report(centi_celsius, now) {
            Some(frame) => {
                self.deliver(frame);
                true
            }
            None => false,
        }
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

    /// Wakes the sleepy device `ieee` now (it reports, then listens for its awake window),
    /// instead of at its next wake interval. False when it is not a joined sleepy device.
    pub fn wake(&mut self, now: Duration, ieee: IeeeAddr) -> bool {
        let Some(d) = self.devices.iter_mut().find(|d| d.ieee == ieee) else {
            return false;
        };
        let woken = d.wake_now(now);
        self.tick(now);
        woken
    }

    /// Changes what device `ieee` measures without it reporting the change; a Read
    /// Attributes request finds the new value.
    pub fn set_attribute(&mut self, ieee: IeeeAddr, cluster: u16, attr: u16, value: ZclValue) {
        if let Some(d) = self.devices.iter_mut().find(|d| d.ieee == ieee) {
            d.set_attribute(cluster, attr, value);
        }
    }

    /// The raw value of an NV item.
    pub fn nv_item(&self, id: u16) -> Option<&[u8]> {
        self.nv.get(&id).map(Vec::as_slice)
    }

    /// Replaces an NV item's bytes as they are (to serve a short or garbled item).
    pub fn set_nv_item(&mut self, id: u16, value: Vec<u8>) {
        self.nv.insert(id, value);
    }

    /// The NIB in NV, if one is there and parses.
    pub fn nib(&self) -> Option<Nib> {
        Nib::parse(self.nv.get(&nv::NIB)?).ok()
    }

    /// The active network key descriptor in NV.
    pub fn active_key_info(&self) -> Option<NwkKeyDescriptor> {
        NwkKeyDescriptor::parse(self.nv.get(&nv::NWK_ACTIVE_KEY_INFO)?).ok()
    }

    /// The security material table as stored, in entry order.
    pub fn sec_material_table(&self) -> Vec<NwkSecMaterialEntry> {
        (0..SEC_MATERIAL_TABLE_LEN)
            .filter_map(|i| self.sec_material_raw(i))
            .filter_map(|b| NwkSecMaterialEntry::parse(b).ok())
            .collect()
    }

    /// The outgoing NWK frame counter of the formed network.
    pub fn nwk_frame_counter(&self) -> Option<u32> {
        self.nwk_frame_counter_of(self.network?.extended_pan_id)
    }

    /// A network update (as after a channel change announced to the network): the NIB's
    /// nwkUpdateId goes up by one. Returns the new id.
    pub fn network_update(&mut self) -> Option<u8> {
        let mut nib = self.nib()?;
        nib.nwk_update_id = nib.nwk_update_id.wrapping_add(1);
        self.nv
            .insert(nv::NIB, nib.to_bytes(self.cfg.firmware.layout()));
        Some(nib.nwk_update_id)
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

    /// The alternate network key descriptor in NV (the last update's key until a switch,
    /// the previous key after it).
    pub fn alternate_key_info(&self) -> Option<NwkKeyDescriptor> {
        NwkKeyDescriptor::parse(self.nv.get(&nv::NWK_ALTERN_KEY_INFO)?).ok()
    }

    /// The sequence number of the coordinator's active key, if device `ieee` (joined) uses
    /// that key; `None` when it is on another key or not joined.
    pub fn device_key_seq(&self, ieee: IeeeAddr) -> Option<u8> {
        let keys = self.device_keys.get(&ieee)?;
        self.active_key_info()
            .filter(|k| k.key[..] == keys.active[..])
            .map(|k| k.key_seq_num)
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
                        self.deliver(cmd);
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
        self.emit_frame(cmd.encode());
    }

    /// Queues a frame, applying pending faults; a ZDO message also goes to the ZDO message
    /// callbacks the host registered.
    fn emit_frame(&mut self, frame: MtFrame) {
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
        self.zdo_msg_callback(&frame);
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
                if frame.cmd_type == MtType::Sreq && !self.host_command(&frame) {
                    // 4 = bad length.
                    self.rpc_error(&frame, 4);
                }
                return;
            }
        };
        if self.on_command(command) || frame.cmd_type != MtType::Sreq || self.host_command(&frame) {
            return;
        }
        // Z-Stack's MT_RPC_ERR_SUBSYSTEM for a subsystem this build lacks (see
        // PING_CAPABILITIES), MT_RPC_ERR_COMMAND_ID for an unknown command in one it has.
        let code = if subsystem_supported(frame.subsystem) {
            2
        } else {
            1
        };
        self.rpc_error(&frame, code);
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
        let nwk = self.next_free_address();
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
        let mut key_exchange = false;
        if let Some(dev) = self.devices.get_mut(idx) {
            dev.joined(nwk, now, &timing);
            key_exchange = dev.kind.does_key_exchange();
        }
        self.record_join(ieee, nwk, key_exchange);
        if let Some(k) = self.active_key_info() {
            self.device_keys.insert(
                ieee,
                DeviceKeys {
                    active: k.key.to_vec(),
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

    /// The next network address no device uses, heard or not (a restored network's
    /// devices keep theirs).
    fn next_free_address(&mut self) -> u16 {
        let mut nwk = self.next_nwk;
        // The sequence repeats after a few hundred addresses: past that, one is shared.
        for _ in 0..1024 {
            nwk = self.next_nwk;
            self.next_nwk = match self.next_nwk.wrapping_add(0x0111) {
                n if n == 0 || n >= 0xFFF8 => 0x1A01,
                n => n,
            };
            if !self.devices.iter().any(|d| d.holds_address(nwk)) {
                break;
            }
        }
        nwk
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
        if !rejoin {
            self.forget_device(ieee);
        }
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
}

/// Whether a Z-Stack 3 ZNP build has `subsystem` (the bits of [`PING_CAPABILITIES`]).
fn subsystem_supported(subsystem: Subsystem) -> bool {
    let bit = match subsystem {
        Subsystem::Sys => 0x0001,
        Subsystem::Af => 0x0008,
        Subsystem::Zdo => 0x0010,
        Subsystem::Util => 0x0040,
        Subsystem::AppCnf => 0x0400,
        _ => 0,
    };
    PING_CAPABILITIES & bit != 0
}

fn version_rsp(firmware: Firmware) -> ZnpCommand {
    ZnpCommand::SysVersionRsp {
        transport_rev: 2,
        product: firmware.product(),
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
