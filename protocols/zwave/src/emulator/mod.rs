//! A device-side emulator of a 700-series Z-Wave Serial API controller (a static
//! controller, SDK 7.18, the network's SUC/SIS) with emulated end nodes, for tests,
//! `sim://zwave`, `fieldgate emulate zwave` and the demo. Sans-IO: the host feeds the bytes the
//! driver wrote ([`Emulator::receive`]), calls [`Emulator::tick`] at
//! [`Emulator::next_deadline`], and writes out what [`Emulator::take_output`] returns. Time is
//! a [`Duration`] since any fixed epoch the host chooses; nothing here reads a clock, spawns,
//! sleeps or does IO.
//!
//! What it emulates (reference: zwave-js `packages/serial`, `packages/zwave-js/src/lib/
//! controller/Controller.ts`, Silicon Labs INS12350):
//! - the link layer ([`link`]): every valid host frame is ACKed, a bad checksum is NAKed, a
//!   partial frame is dropped [`RX_TIMEOUT`] after its SOF, a
//!   host frame that arrives while one of the controller's own frames waits for its ACK is
//!   answered CAN (a collision); the controller's own frames are retransmitted when the ACK
//!   does not come within 1,600 ms or the host NAKs or CANs them, three attempts in all;
//! - what zwave-js's Driver sends at start-up and during interviews ([`host`]): serial API
//!   capabilities (with the bitmask of every function answered), init data with the node
//!   bitmask, controller version / capabilities / id / SUC id, protocol version, Serial API
//!   setup (supported sub-commands, TX status report, RF region, power level, max payload),
//!   node protocol info, SendData with its response, callback and TX report, SendDataAbort,
//!   RequestNodeInfo → ApplicationUpdate (NIF), GetRoutingInfo, neighbour updates, return
//!   routes, SoftReset → SerialAPIStarted, NVM_BACKUP_RESTORE over the committed NVM image
//!   ([`nvm`]); functions it does not implement are ACKed and not answered, as a real
//!   controller does;
//! - inclusion and exclusion ([`membership`]) with every status callback: a pending node
//!   joins when the host starts AddNodeToNetwork (Ready, NodeFound, AddingSlave with its
//!   NIF, ProtocolDone, then Done on Stop); a node leaves on RemoveNodeFromNetwork only
//!   when its button is pressed ([`Emulator::press_button`] or
//!   [`EmulatorConfig::exclusion_presses`]), otherwise the host times out; failed nodes
//!   (IsFailedNode / RemoveFailedNode);
//! - the nodes ([`nodes`]): a switch with a meter, a multisensor, a door sensor, a sleeping
//!   battery sensor (answers only while awake; its readings wait for its Wake Up
//!   Notification; asleep again on No More Information or after
//!   [`EmulatorConfig::awake_time`]) and a FLiRS switch; each answers the interview command
//!   classes, reports periodically to its lifeline, and every value a node sends is
//!   recorded ([`Emulator::recorded`]) so that tests can compare what the host received;
//! - faults on request ([`Fault`]): NAK, CAN, a missing ACK, a missing callback, a corrupt
//!   frame, a jammed transmitter, an unsolicited reset (SerialAPIStarted).
//!
//! Bad input never panics: frames too short for their function are counted and answered
//! as a controller does (ACK, then nothing, or a "not sent" response).

pub mod host;
pub mod link;
pub mod membership;
pub mod nodes;
pub mod nvm;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub use link::{LinkStats, ACK_TIMEOUT, MAX_ATTEMPTS};
pub use nodes::{NodeKind, VirtualNode, CONTROLLER_NODE_ID, HOME_ID};

use crate::frame::{DataFrame, ParseEvent, Rejection, SerialParser, ACK, CAN, NAK};
use crate::function as func;
use membership::Membership;

/// How the emulator starts.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub home_id: u32,
    /// Nodes already in the network (id, kind), configured (lifeline to the controller).
    pub nodes: Vec<(u8, NodeKind)>,
    /// Nodes waiting to be included, in order.
    pub pending: Vec<NodeKind>,
    /// How often nodes report their values.
    pub report_interval: Duration,
    /// How long the battery sensor sleeps between wake-ups (the interval it stores and
    /// reports over Wake Up is kept apart, so that tests need not wait an hour).
    pub wake_interval: Duration,
    /// How long it stays awake without No More Information.
    pub awake_time: Duration,
    /// Nodes whose button is pressed whenever exclusion starts (after
    /// [`membership::BUTTON_DELAY`]); any other node leaves only on
    /// [`Emulator::press_button`].
    pub exclusion_presses: Vec<u8>,
    /// The NVM image read through NVM_BACKUP_RESTORE.
    pub nvm: Vec<u8>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            home_id: HOME_ID,
            nodes: default_nodes(),
            pending: vec![NodeKind::SwitchMeter],
            report_interval: Duration::from_secs(5),
            wake_interval: Duration::from_secs(30),
            awake_time: Duration::from_secs(10),
            exclusion_presses: Vec::new(),
            nvm: nvm::DEFAULT_IMAGE.to_vec(),
        }
    }
}

/// The default network (the one the committed NVM image describes): nodes 2-6, one of each
/// kind.
pub fn default_nodes() -> Vec<(u8, NodeKind)> {
    NodeKind::DEFAULT
        .into_iter()
        .enumerate()
        .map(|(i, k)| (i as u8 + 2, k))
        .collect()
}

/// Faults to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next valid host frame is answered NAK and not carried out.
    Nak,
    /// The next host frame is answered CAN and not carried out.
    Can,
    /// The next host frame is neither acknowledged nor carried out (a lost frame).
    MissingAck,
    /// The next callback (SendData, inclusion, ...) is not sent.
    MissingCallback,
    /// The next frame the controller sends has a bad checksum (retransmissions are good).
    CorruptFrame,
    /// The transmitter is jammed until the next soft reset: SendData callbacks report
    /// TRANSMIT_COMPLETE_FAIL with 0 TX ticks.
    Jam,
    /// The transmitter hangs until the next soft reset: SendData is answered, its callback
    /// never comes.
    JamSilent,
    /// The controller restarts on its own (watchdog): SerialAPIStarted, RAM state lost.
    Reset,
    /// The firmware locks up (`true`): it reads, acknowledges and sends nothing, a soft
    /// reset included, until it runs again (`false`) as it was.
    Freeze(bool),
}

/// A value a node sent to the host, as the codec normalizes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub at: Duration,
    pub node: u8,
    /// The command class frame as sent.
    pub cc: Vec<u8>,
    pub readings: Vec<crate::Reading>,
}

/// Counters for what the emulator received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmulatorStats {
    pub host_frames: u64,
    pub bad_checksums: u64,
    pub collisions: u64,
    /// Frames too short or malformed for their function.
    pub malformed: u64,
    /// Functions it does not implement (ACKed, not answered).
    pub unsupported: u64,
    pub soft_resets: u64,
    /// Partial host frames dropped after [`RX_TIMEOUT`].
    pub rx_timeouts: u64,
}

/// Jammed transmitter state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jam {
    Fail,
    Silent,
}

/// Something due at a time.
#[derive(Debug, Clone)]
enum Action {
    /// A frame to the host (controller RAM: dropped by a reset).
    Emit(DataFrame),
    /// A SendData transmission ends: the controller is idle again.
    SendDone,
    /// SerialAPIStarted with this wake-up reason.
    Started(u8),
    /// A node's periodic report.
    Report(u8),
    Wake(u8),
    Sleep(u8),
    /// A node's button is pressed.
    Press(u8),
    /// A step of inclusion / exclusion.
    Membership(membership::Step),
}

impl Action {
    /// Whether the action lives in the controller's RAM (lost on reset).
    fn is_controller_ram(&self) -> bool {
        matches!(self, Self::Emit(_) | Self::SendDone | Self::Membership(_))
    }
}

/// The emulated controller and its network.
pub struct Emulator {
    cfg: EmulatorConfig,
    parser: SerialParser,
    link: link::Link,
    timers: BTreeMap<(Duration, u64), Action>,
    seq: u64,
    nodes: BTreeMap<u8, VirtualNode>,
    pending: VecDeque<VirtualNode>,
    last_node_id: u8,
    /// Awake battery nodes: until when.
    awake: BTreeMap<u8, Duration>,
    /// Readings a sleeping node took, sent on its next wake-up.
    held: BTreeMap<u8, Vec<Vec<u8>>>,
    /// The time of the last frame each node has scheduled: a node sends one frame after
    /// another, in the order it made them.
    node_sends_at: BTreeMap<u8, Duration>,
    /// FLiRS nodes: when they last received a frame.
    beamed: BTreeMap<u8, Duration>,
    /// Nodes that no longer answer at all (dead).
    dead: BTreeSet<u8>,
    /// The controller's failed-node list.
    failed: BTreeSet<u8>,
    send_busy: bool,
    /// The radio receives (SetRFReceiveMode); while off, no node frame arrives and every
    /// transmission fails.
    rf_on: bool,
    jam: Option<Jam>,
    /// Locked up ([`Fault::Freeze`]).
    frozen: bool,
    pending_faults: Vec<Fault>,
    membership: Membership,
    nvm: nvm::Nvm,
    tx_status_report: bool,
    recorded: Vec<Recorded>,
    /// Commands nodes received from the host: (node, class, command) -> how many.
    delivered: BTreeMap<(u8, u8, u8), u64>,
    /// When the partial host frame in the parser started (reception is aborted
    /// [`RX_TIMEOUT`] later).
    partial_since: Option<Duration>,
    stats: EmulatorStats,
}

/// "The receiver aborts reception 1500 ms after SOF" (INS12350): a partial host frame is
/// dropped after this long.
pub const RX_TIMEOUT: Duration = Duration::from_millis(1500);

impl Emulator {
    pub fn new(cfg: EmulatorConfig) -> Self {
        let nodes: BTreeMap<u8, VirtualNode> = cfg
            .nodes
            .iter()
            .filter(|(id, _)| (2..=232).contains(id))
            .map(|&(id, kind)| (id, VirtualNode::configured(id, kind)))
            .collect();
        let last_node_id = nodes.keys().copied().max().unwrap_or(CONTROLLER_NODE_ID);
        let pending = cfg
            .pending
            .iter()
            .map(|&k| VirtualNode::new(0, k))
            .collect();
        let mut emu = Self {
            nvm: nvm::Nvm::new(cfg.nvm.clone()),
            parser: SerialParser::new(),
            link: link::Link::default(),
            timers: BTreeMap::new(),
            seq: 0,
            nodes,
            pending,
            last_node_id,
            awake: BTreeMap::new(),
            held: BTreeMap::new(),
            node_sends_at: BTreeMap::new(),
            beamed: BTreeMap::new(),
            dead: BTreeSet::new(),
            failed: BTreeSet::new(),
            send_busy: false,
            rf_on: true,
            jam: None,
            frozen: false,
            pending_faults: Vec::new(),
            membership: Membership::default(),
            tx_status_report: true,
            recorded: Vec::new(),
            delivered: BTreeMap::new(),
            partial_since: None,
            stats: EmulatorStats::default(),
            cfg,
        };
        let ids: Vec<u8> = emu.nodes.keys().copied().collect();
        for (i, id) in ids.into_iter().enumerate() {
            emu.start_node(Duration::ZERO, id, i as u32);
        }
        emu
    }

    /// Starts a node's timers: periodic reports (staggered), and wake-ups for sleepers.
    fn start_node(&mut self, now: Duration, id: u8, stagger: u32) {
        let offset = Duration::from_millis(300) * (stagger + 1);
        self.schedule(now + self.cfg.report_interval + offset, Action::Report(id));
        if self.nodes.get(&id).is_some_and(|n| n.kind.sleeps()) {
            self.schedule(now + self.cfg.wake_interval + offset, Action::Wake(id));
        }
    }

    fn schedule(&mut self, at: Duration, action: Action) {
        self.seq += 1;
        self.timers.insert((at, self.seq), action);
    }

    /// Queues a frame to the host at `at`.
    fn emit_at(&mut self, at: Duration, frame: DataFrame) {
        self.schedule(at, Action::Emit(frame));
    }

    /// Sends a frame to the host now (behind what is already queued).
    fn emit(&mut self, now: Duration, frame: DataFrame) {
        match frame.to_bytes() {
            Ok(bytes) => self.link.enqueue(now, bytes),
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// Feeds bytes the host wrote.
    pub fn receive(&mut self, now: Duration, bytes: &[u8]) {
        if self.frozen {
            return;
        }
        self.parser.push(bytes);
        while let Some(event) = self.parser.next_event() {
            match event {
                ParseEvent::Frame(crate::Frame::Ack) => self.link.on_ack(now),
                ParseEvent::Frame(crate::Frame::Nak) => self.link.on_nak(now),
                ParseEvent::Frame(crate::Frame::Can) => self.link.on_can(now),
                ParseEvent::Frame(crate::Frame::Data(frame)) => self.host_frame(now, frame),
                ParseEvent::Rejected(Rejection::BadChecksum { .. }) => {
                    self.stats.bad_checksums += 1;
                    self.link.control(NAK);
                }
                ParseEvent::Rejected(_) => {}
            }
        }
        self.partial_since = match (self.parser.has_partial(), self.partial_since) {
            (false, _) => None,
            (true, since) => Some(since.unwrap_or(now)),
        };
        self.tick(now);
    }

    fn take_fault(&mut self, wanted: &Fault) -> bool {
        if let Some(i) = self.pending_faults.iter().position(|f| f == wanted) {
            self.pending_faults.remove(i);
            true
        } else {
            false
        }
    }

    fn host_frame(&mut self, now: Duration, frame: DataFrame) {
        self.stats.host_frames += 1;
        if self.take_fault(&Fault::MissingAck) {
            return;
        }
        if self.take_fault(&Fault::Nak) {
            self.link.control(NAK);
            return;
        }
        if self.take_fault(&Fault::Can) || self.link.awaiting_ack() {
            self.stats.collisions += 1;
            self.link.control(CAN);
            return;
        }
        self.link.control(ACK);
        self.handle_host(now, &frame);
    }

    /// Runs what is due at `now`.
    pub fn tick(&mut self, now: Duration) {
        if self.frozen {
            return;
        }
        if self.partial_since.is_some_and(|t| now >= t + RX_TIMEOUT) {
            self.parser.flush_stalled();
            self.partial_since = None;
            self.stats.rx_timeouts += 1;
        }
        self.link.poll(now);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let action = entry.remove();
            self.run(now, action);
        }
        self.link.poll(now);
    }

    fn run(&mut self, now: Duration, action: Action) {
        match action {
            Action::Emit(frame) => self.emit(now, frame),
            Action::SendDone => self.send_busy = false,
            Action::Started(reason) => {
                let frame = self.serial_api_started(reason);
                self.emit(now, frame);
            }
            Action::Report(id) => {
                self.schedule(now + self.cfg.report_interval, Action::Report(id));
                self.periodic_report(now, id);
            }
            Action::Wake(id) => {
                self.schedule(now + self.cfg.wake_interval, Action::Wake(id));
                self.wake(now, id);
            }
            Action::Sleep(id) => {
                if self.awake.get(&id).is_some_and(|&until| until <= now) {
                    self.awake.remove(&id);
                }
            }
            Action::Press(id) => self.press_button(now, id),
            Action::Membership(step) => self.membership_step(now, step),
        }
    }

    /// Whether a node hears the controller now (listening, FLiRS, or awake; not dead).
    pub fn reachable(&self, id: u8) -> bool {
        let Some(node) = self.nodes.get(&id) else {
            return false;
        };
        !self.dead.contains(&id) && (!node.kind.sleeps() || self.awake.contains_key(&id))
    }

    fn periodic_report(&mut self, now: Duration, id: u8) {
        if self.dead.contains(&id) {
            return;
        }
        let asleep = !self.reachable(id);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let ccs = node.periodic_reports();
        if !node.reports_to_controller() {
            return;
        }
        if asleep {
            let held = self.held.entry(id).or_default();
            held.extend(ccs);
            // A sensor keeps its latest few readings, not all of them.
            let excess = held.len().saturating_sub(8);
            held.drain(..excess);
            return;
        }
        for (i, cc) in ccs.into_iter().enumerate() {
            self.node_frame(now + Duration::from_millis(10 * i as u64), id, cc, false);
        }
    }

    /// A node sends a command class to the controller: ApplicationCommandHandler (REQ 0x04:
    /// `status, source, length, command`), status bit 2 for a broadcast.
    fn node_frame(&mut self, at: Duration, id: u8, cc: Vec<u8>, broadcast: bool) {
        let Ok(len) = u8::try_from(cc.len()) else {
            return;
        };
        if !self.rf_on {
            return;
        }
        // After whatever the node has scheduled already: a reading taken the moment a
        // node wakes goes after the readings it held, not between them.
        let at = match self.node_sends_at.get(&id) {
            Some(last) if *last >= at => *last + Duration::from_millis(1),
            _ => at,
        };
        self.node_sends_at.insert(id, at);
        let readings = crate::Cc::decode(&cc)
            .map(|c| crate::normalize(&c))
            .unwrap_or_default();
        if !readings.is_empty() {
            self.recorded.push(Recorded {
                at,
                node: id,
                cc: cc.clone(),
                readings,
            });
        }
        let status = if broadcast { 0x04 } else { 0x00 };
        let mut payload = vec![status, id, len];
        payload.extend(cc);
        self.emit_at(
            at,
            DataFrame::request(func::APPLICATION_COMMAND_HANDLER, payload),
        );
    }

    /// A sleeping node wakes: the readings it held, oldest first, then the Wake Up
    /// Notification to its target (broadcast without one); awake for
    /// [`EmulatorConfig::awake_time`]. The readings go first: a host asks the node for
    /// its current values after the notification, and an older reading arriving after
    /// that answer would leave the host with a stale value.
    fn wake(&mut self, now: Duration, id: u8) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if !node.kind.sleeps() || self.dead.contains(&id) {
            return;
        }
        let target = node.wake_up_target;
        let until = now + self.cfg.awake_time;
        self.awake.insert(id, until);
        self.schedule(until, Action::Sleep(id));
        let held = self.held.remove(&id).unwrap_or_default();
        let after = Duration::from_millis(20 * held.len() as u64);
        for (i, cc) in held.into_iter().enumerate() {
            self.node_frame(now + Duration::from_millis(20 * i as u64), id, cc, false);
        }
        if target == CONTROLLER_NODE_ID || target == 0 {
            self.node_frame(
                now + after,
                id,
                vec![nodes::cc_id::WAKE_UP, 0x07],
                target == 0,
            );
        }
    }

    /// Presses a node's button: during exclusion the node leaves; a sleeping node wakes
    /// up; a listening node sends its NIF (ApplicationUpdate), as devices do.
    pub fn press_button(&mut self, now: Duration, id: u8) {
        if self.exclusion_press(now, id) {
            return;
        }
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if node.kind.sleeps() {
            self.wake(now, id);
        } else {
            let frame = self.node_info_update(id);
            self.emit_at(now, frame);
        }
    }

    /// ApplicationUpdate NodeInfo_Received (REQ 0x49: `0x84, node, length, NIF`).
    fn node_info_update(&self, id: u8) -> DataFrame {
        let nif = self
            .nodes
            .get(&id)
            .map(|n| n.kind.node_info())
            .unwrap_or_default();
        let mut payload = vec![0x84, id, nif.len() as u8];
        payload.extend(nif);
        DataFrame::request(func::APPLICATION_UPDATE, payload)
    }

    /// Injects a fault (see [`Fault`]).
    pub fn inject(&mut self, now: Duration, fault: Fault) {
        match fault {
            Fault::Jam => self.jam = Some(Jam::Fail),
            Fault::JamSilent => self.jam = Some(Jam::Silent),
            Fault::Reset => self.restart(now, 0x03),
            Fault::CorruptFrame => self.link.corrupt_next(),
            Fault::Freeze(frozen) => self.frozen = frozen,
            other => self.pending_faults.push(other),
        }
    }

    /// The controller restarts: RAM state (queued frames, a transmission, inclusion or
    /// exclusion, a jam, TX status reports) is lost; SerialAPIStarted follows.
    fn restart(&mut self, now: Duration, wake_reason: u8) {
        self.stats.soft_resets += 1;
        self.link.reset();
        self.timers.retain(|_, a| !a.is_controller_ram());
        self.send_busy = false;
        self.jam = None;
        self.rf_on = true;
        self.membership = Membership::default();
        self.tx_status_report = true;
        self.schedule(
            now + Duration::from_millis(500),
            Action::Started(wake_reason),
        );
    }

    /// SerialAPIStarted (REQ 0x0A): `wake-up reason, watchdog started, device option
    /// (listening), generic, specific, CC count, CCs, supports Long Range`.
    fn serial_api_started(&self, reason: u8) -> DataFrame {
        let ccs = [0x5E, 0x86, 0x72];
        let mut payload = vec![reason, 0x00, 0x01, 0x02, 0x07, ccs.len() as u8];
        payload.extend_from_slice(&ccs);
        payload.push(0x00);
        DataFrame::request(func::SERIAL_API_STARTED, payload)
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        self.link.take_output()
    }

    /// When [`Emulator::tick`] has something to do next.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.frozen {
            return None;
        }
        let timer = self.timers.first_key_value().map(|((t, _), _)| *t);
        let rx = self.partial_since.map(|t| t + RX_TIMEOUT);
        [timer, self.link.deadline(), rx]
            .into_iter()
            .flatten()
            .min()
    }

    /// Adds a node waiting to be included (it joins on the next AddNodeToNetwork).
    pub fn add_pending_node(&mut self, kind: NodeKind) {
        self.pending.push_back(VirtualNode::new(0, kind));
    }

    /// A node stops answering (or answers again): the controller's SendData to it fails
    /// and it sends nothing.
    pub fn set_node_dead(&mut self, id: u8, dead: bool) {
        if dead {
            self.dead.insert(id);
        } else {
            self.dead.remove(&id);
        }
    }

    /// Makes a node report now (a sleeping one holds it until it wakes).
    pub fn report_now(&mut self, now: Duration, id: u8) {
        self.periodic_report(now, id);
    }

    /// How many times node `node` received command `command` of class `class` from the
    /// host (e.g. `0x72, 0x04`: Manufacturer Specific Get), Supervision unwrapped.
    pub fn delivered(&self, node: u8, class: u8, command: u8) -> u64 {
        self.delivered
            .get(&(node, class, command))
            .copied()
            .unwrap_or(0)
    }

    /// Every value nodes sent, in order.
    pub fn recorded(&self) -> &[Recorded] {
        &self.recorded
    }

    pub fn nodes(&self) -> impl Iterator<Item = &VirtualNode> {
        self.nodes.values()
    }

    /// Whether an exclusion (RemoveNodeFromNetwork) is open.
    pub fn excluding(&self) -> bool {
        self.membership.excluding()
    }

    /// Whether an inclusion (AddNodeToNetwork) is open.
    pub fn including(&self) -> bool {
        self.membership.including()
    }

    pub fn node(&self, id: u8) -> Option<&VirtualNode> {
        self.nodes.get(&id)
    }

    pub fn node_mut(&mut self, id: u8) -> Option<&mut VirtualNode> {
        self.nodes.get_mut(&id)
    }

    /// Kinds of the nodes waiting to be included.
    pub fn pending_nodes(&self) -> Vec<NodeKind> {
        self.pending.iter().map(|n| n.kind).collect()
    }

    pub fn is_awake(&self, id: u8) -> bool {
        self.awake.contains_key(&id)
    }

    pub fn home_id(&self) -> u32 {
        self.cfg.home_id
    }

    pub fn stats(&self) -> EmulatorStats {
        self.stats
    }

    pub fn link_stats(&self) -> LinkStats {
        self.link.stats()
    }

    pub fn parser_stats(&self) -> crate::ParserStats {
        self.parser.stats()
    }

    /// The NVM image as the controller holds it now.
    pub fn nvm_image(&self) -> &[u8] {
        self.nvm.image()
    }
}
