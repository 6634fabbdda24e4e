//! The Serial API functions the emulated controller answers: one handler per function, each
//! with the layout it answers (zwave-js `packages/serial/src/serialapi/**`, named per
//! handler). Called with the frame already ACKed; a frame too short for its function is
//! counted and answered as a controller does.

use std::time::Duration;

use super::nodes::CONTROLLER_NODE_ID;
use super::{Action, Emulator, Fault, Jam};
use crate::frame::{DataFrame, FrameType};
use crate::function as func;

/// Firmware version the controller reports (GetSerialApiCapabilities) and its SDK
/// (GetProtocolVersion, GetControllerVersion).
pub const FIRMWARE: (u8, u8) = (7, 18);
pub const SDK_VERSION: (u8, u8, u8) = (7, 18, 1);
/// GetSerialApiCapabilities: manufacturer, product type and product id (0xFFFF: no real
/// stick, so host stacks apply no stick-specific quirks).
pub const PRODUCT: (u16, u16, u16) = (0xFFFF, 0xFFFF, 0xFFFE);
/// Chip type and version in GetSerialApiInitData: EFR32ZG14 (700 series).
pub const CHIP: (u8, u8) = (0x07, 0x00);
/// FUNC_ID_ZW_SET_RF_RECEIVE_MODE: `mode (0 off, 1 on)` → RES `success`
/// (network-mgmt/SetRFReceiveModeMessages.ts; zwave-js turns the radio off around an NVM
/// backup).
pub const SET_RF_RECEIVE_MODE: u8 = 0x10;
/// Serial API setup sub-commands answered.
const SETUP_GET_SUPPORTED: u8 = 0x01;
const SETUP_SET_TX_STATUS_REPORT: u8 = 0x02;
const SETUP_GET_POWERLEVEL: u8 = 0x08;
const SETUP_GET_MAX_PAYLOAD: u8 = 0x10;
const SETUP_GET_RF_REGION: u8 = 0x20;
/// The largest SendData payload it takes (a 700-series controller without Long Range).
pub const MAX_PAYLOAD: u8 = 46;
/// How long a transmission to a listening node takes, and to a FLiRS node (wake-up beam).
pub const TX_TIME: Duration = Duration::from_millis(20);
pub const TX_TIME_FLIRS: Duration = Duration::from_millis(1100);
/// How long a FLiRS node keeps listening after a frame (no beam needed meanwhile).
pub const FLIRS_AWAKE: Duration = Duration::from_secs(3);
/// How long routing attempts take before a transmission reports no ACK.
pub const TX_TIME_NO_ACK: Duration = Duration::from_millis(400);
/// Between a node receiving a command and its answer reaching the controller.
pub const NODE_ANSWER_DELAY: Duration = Duration::from_millis(30);
/// TransmitStatus values (zwave-js `core/src/definitions/Transmission.ts`).
pub const TRANSMIT_OK: u8 = 0x00;
pub const TRANSMIT_NO_ACK: u8 = 0x01;
pub const TRANSMIT_FAIL: u8 = 0x02;

/// Every function the controller answers (the GetSerialApiCapabilities bitmask).
pub const SUPPORTED_FUNCTIONS: &[u8] = &[
    func::GET_SERIAL_API_INIT_DATA,
    func::GET_CONTROLLER_CAPABILITIES,
    func::GET_SERIAL_API_CAPABILITIES,
    func::SOFT_RESET,
    func::GET_PROTOCOL_VERSION,
    SET_RF_RECEIVE_MODE,
    func::SERIAL_API_SETUP,
    func::SEND_DATA,
    func::GET_CONTROLLER_VERSION,
    func::SEND_DATA_ABORT,
    func::MEMORY_GET_ID,
    func::NVM_BACKUP_RESTORE,
    func::GET_NODE_PROTOCOL_INFO,
    func::ASSIGN_RETURN_ROUTE,
    func::DELETE_RETURN_ROUTE,
    func::REQUEST_NODE_NEIGHBOR_UPDATE,
    func::ADD_NODE_TO_NETWORK,
    func::REMOVE_NODE_FROM_NETWORK,
    func::ASSIGN_SUC_RETURN_ROUTE,
    func::DELETE_SUC_RETURN_ROUTE,
    func::GET_SUC_NODE_ID,
    func::REQUEST_NODE_INFO,
    func::REMOVE_FAILED_NODE,
    func::IS_FAILED_NODE,
    func::GET_ROUTING_INFO,
];

fn response(function: u8, payload: Vec<u8>) -> DataFrame {
    DataFrame::response(function, payload)
}

/// A bitmask where bit 0 of byte 0 is `first`.
fn bitmask(ids: impl IntoIterator<Item = u8>, first: u8, len: usize) -> Vec<u8> {
    let mut mask = vec![0u8; len];
    for id in ids {
        let Some(bit) = id.checked_sub(first).map(usize::from) else {
            continue;
        };
        if let Some(b) = mask.get_mut(bit / 8) {
            *b |= 1 << (bit % 8);
        }
    }
    mask
}

impl Emulator {
    pub(super) fn handle_host(&mut self, now: Duration, frame: &DataFrame) {
        if frame.frame_type != FrameType::Request {
            // A response or an unknown type from the host: acknowledged, ignored.
            self.stats.malformed += 1;
            return;
        }
        let p = frame.payload.as_slice();
        let f = frame.function;
        match f {
            func::GET_SERIAL_API_CAPABILITIES => {
                // `fw major, fw minor, manufacturer, product type, product id, 32-byte
                // function bitmask` (capability/GetSerialApiCapabilitiesMessages.ts).
                let mut out = vec![FIRMWARE.0, FIRMWARE.1];
                for v in [PRODUCT.0, PRODUCT.1, PRODUCT.2] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                out.extend(bitmask(SUPPORTED_FUNCTIONS.iter().copied(), 1, 32));
                self.emit(now, response(f, out));
            }
            func::GET_SERIAL_API_INIT_DATA => {
                // `API version, capabilities (bit 3: SIS), 29, node bitmask, chip type,
                // chip version` (capability/GetSerialApiInitDataMessages.ts).
                let mut ids: Vec<u8> = vec![CONTROLLER_NODE_ID];
                ids.extend(self.nodes.keys().copied());
                let mut out = vec![0x0A, 0x08, 29];
                out.extend(bitmask(ids, 1, 29));
                out.extend_from_slice(&[CHIP.0, CHIP.1]);
                self.emit(now, response(f, out));
            }
            func::GET_CONTROLLER_VERSION => {
                let mut out = format!("Z-Wave {}.{}", FIRMWARE.0, FIRMWARE.1).into_bytes();
                out.push(0x00);
                out.push(0x01); // Static Controller
                self.emit(now, response(f, out));
            }
            func::GET_CONTROLLER_CAPABILITIES => {
                // SIS present, was the real primary, is the SUC.
                self.emit(now, response(f, vec![0x1C]));
            }
            func::GET_PROTOCOL_VERSION => {
                // `protocol type (0: Z-Wave), major, minor, patch, app framework build`.
                let (a, b, c) = SDK_VERSION;
                self.emit(now, response(f, vec![0x00, a, b, c, 0x00, 0x00]));
            }
            func::SERIAL_API_SETUP => self.serial_api_setup(now, p),
            func::MEMORY_GET_ID => {
                let mut out = self.cfg.home_id.to_be_bytes().to_vec();
                out.push(CONTROLLER_NODE_ID);
                self.emit(now, response(f, out));
            }
            func::GET_SUC_NODE_ID => self.emit(now, response(f, vec![CONTROLLER_NODE_ID])),
            SET_RF_RECEIVE_MODE => {
                let Some(&mode) = p.first() else {
                    return self.malformed();
                };
                self.rf_on = mode != 0;
                self.emit(now, response(f, vec![0x01]));
            }
            func::SOFT_RESET => self.restart(now, 0x07),
            func::GET_NODE_PROTOCOL_INFO => {
                let Some(&id) = p.first() else {
                    return self.malformed();
                };
                let out = if id == CONTROLLER_NODE_ID {
                    // Listening, routing, 40k/9.6k, v3; beaming, specific class,
                    // controller; static controller / gateway.
                    vec![0xD3, 0x16, 0x01, 0x02, 0x02, 0x07]
                } else if let Some(node) = self.nodes.get(&id) {
                    let mut out = node.kind.protocol_info().to_vec();
                    out.extend_from_slice(&node.kind.device_class());
                    out
                } else {
                    vec![0; 6]
                };
                self.emit(now, response(f, out));
            }
            func::SEND_DATA => self.send_data(now, p),
            func::SEND_DATA_ABORT => {
                // The transmission stops; its callback never comes.
                self.send_busy = false;
                self.timers.retain(|_, a| !matches!(a, Action::SendDone));
            }
            func::REQUEST_NODE_INFO => {
                let Some(&id) = p.first() else {
                    return self.malformed();
                };
                self.emit(now, response(f, vec![0x01]));
                let at = now + TX_TIME + NODE_ANSWER_DELAY;
                let update = if self.reachable(id) {
                    self.node_info_update(id)
                } else {
                    // NodeInfo_RequestFailed.
                    DataFrame::request(func::APPLICATION_UPDATE, vec![0x81, 0x00, 0x00])
                };
                self.emit_at(at, update);
            }
            func::GET_ROUTING_INFO => {
                let Some(&id) = p.first() else {
                    return self.malformed();
                };
                self.emit(now, response(f, bitmask(self.neighbours(id), 1, 29)));
            }
            func::REQUEST_NODE_NEIGHBOR_UPDATE => {
                // `node, callback` → callbacks Started (0x21), Done (0x22) or Failed (0x23).
                let (Some(&id), Some(&cb)) = (p.first(), p.get(1)) else {
                    return self.malformed();
                };
                let status = if self.reachable(id) { 0x22 } else { 0x23 };
                self.callback(now + Duration::from_millis(10), f, vec![cb, 0x21]);
                self.callback(now + Duration::from_millis(800), f, vec![cb, status]);
            }
            func::ASSIGN_RETURN_ROUTE
            | func::DELETE_RETURN_ROUTE
            | func::ASSIGN_SUC_RETURN_ROUTE
            | func::DELETE_SUC_RETURN_ROUTE => {
                // `node(s)…, callback` → RES accepted, callback `callback, TransmitStatus`.
                let (Some(&id), Some(&cb)) = (p.first(), p.last()) else {
                    return self.malformed();
                };
                self.emit(now, response(f, vec![0x01]));
                let status = if self.reachable(id) {
                    TRANSMIT_OK
                } else {
                    TRANSMIT_NO_ACK
                };
                self.callback(now + Duration::from_millis(50), f, vec![cb, status]);
            }
            func::ADD_NODE_TO_NETWORK => self.add_node(now, p),
            func::REMOVE_NODE_FROM_NETWORK => self.remove_node(now, p),
            func::IS_FAILED_NODE => {
                let Some(&id) = p.first() else {
                    return self.malformed();
                };
                let failed = u8::from(self.failed.contains(&id));
                self.emit(now, response(f, vec![failed]));
            }
            func::REMOVE_FAILED_NODE => self.remove_failed_node(now, p),
            func::NVM_BACKUP_RESTORE => {
                let out = self.nvm.operation(p);
                self.emit(now, response(f, out));
            }
            _ => self.stats.unsupported += 1,
        }
    }

    pub(super) fn malformed(&mut self) {
        self.stats.malformed += 1;
    }

    /// Schedules a callback (REQ of `function`) unless a missing-callback fault eats it or
    /// the host asked for none (callback id 0).
    pub(super) fn callback(&mut self, at: Duration, function: u8, payload: Vec<u8>) {
        if payload.first() == Some(&0) {
            return;
        }
        if self.take_fault(&Fault::MissingCallback) {
            return;
        }
        self.emit_at(at, DataFrame::request(function, payload));
    }

    /// The nodes a node hears directly: the controller and every other listening node.
    fn neighbours(&self, id: u8) -> Vec<u8> {
        if id != CONTROLLER_NODE_ID && !self.nodes.contains_key(&id) {
            return Vec::new();
        }
        let mut out: Vec<u8> = self
            .nodes
            .values()
            .filter(|n| n.id != id && n.kind.is_listening())
            .map(|n| n.id)
            .collect();
        if id != CONTROLLER_NODE_ID {
            out.push(CONTROLLER_NODE_ID);
        }
        out
    }

    /// SerialAPISetup (capability/SerialAPISetupMessages.ts): `sub-command, …` → RES
    /// `sub-command, …`; an unknown sub-command is answered `0x00, sub-command`.
    fn serial_api_setup(&mut self, now: Duration, p: &[u8]) {
        let Some(&sub) = p.first() else {
            return self.malformed();
        };
        let f = func::SERIAL_API_SETUP;
        let out = match sub {
            SETUP_GET_SUPPORTED => {
                // A legacy byte of flags, then a bitmask where bit n is sub-command n
                // (SDK before 7.19.1).
                let subs = [
                    SETUP_GET_SUPPORTED,
                    SETUP_SET_TX_STATUS_REPORT,
                    SETUP_GET_POWERLEVEL,
                    SETUP_GET_MAX_PAYLOAD,
                    SETUP_GET_RF_REGION,
                ];
                let legacy = subs.iter().fold(0u8, |acc, s| acc | s);
                let mut out = vec![sub, legacy];
                out.extend(bitmask(subs, 0, 5));
                out
            }
            SETUP_SET_TX_STATUS_REPORT => {
                self.tx_status_report = p.get(1).copied().unwrap_or_default() != 0;
                vec![sub, 0x01]
            }
            // Power level 0.0 dBm, measured 0 dBm: 0.0 dBm.
            SETUP_GET_POWERLEVEL => vec![sub, 0x00, 0x00],
            SETUP_GET_MAX_PAYLOAD => vec![sub, MAX_PAYLOAD],
            SETUP_GET_RF_REGION => vec![sub, 0x00], // Europe
            _ => vec![0x00, sub],
        };
        self.emit(now, response(f, out));
    }

    /// SendData (transport/SendDataMessages.ts): `node, length, command…, TX options,
    /// callback` → RES `sent` (0 while a transmission is still going on), then the callback
    /// `callback, TransmitStatus, TX report`, then the node's answers.
    fn send_data(&mut self, now: Duration, p: &[u8]) {
        let f = func::SEND_DATA;
        let (Some(&node), Some(&len)) = (p.first(), p.get(1)) else {
            self.malformed();
            return self.emit(now, response(f, vec![0x00]));
        };
        let end = 2 + usize::from(len);
        let (Some(cc), Some(&cb)) = (p.get(2..end), p.get(end + 1)) else {
            self.malformed();
            return self.emit(now, response(f, vec![0x00]));
        };
        if self.send_busy || len > MAX_PAYLOAD {
            return self.emit(now, response(f, vec![0x00]));
        }
        self.emit(now, response(f, vec![0x01]));
        self.send_busy = true;
        let jam = if self.rf_on {
            self.jam
        } else {
            Some(Jam::Fail)
        };
        match jam {
            Some(Jam::Silent) => return,
            Some(Jam::Fail) => {
                let at = now + Duration::from_millis(60);
                self.schedule(at, Action::SendDone);
                let report = self.tx_report(0, false, false);
                let mut payload = vec![cb, TRANSMIT_FAIL];
                payload.extend(report);
                return self.callback(at, f, payload);
            }
            None => {}
        }
        let reachable = self.reachable(node);
        // A FLiRS node needs a wake-up beam unless it was reached moments ago (it listens
        // for a short while after each frame).
        let flirs = self.nodes.get(&node).is_some_and(|n| n.kind.is_flirs())
            && self
                .beamed
                .get(&node)
                .is_none_or(|&last| now.saturating_sub(last) > FLIRS_AWAKE);
        if reachable && self.nodes.get(&node).is_some_and(|n| n.kind.is_flirs()) {
            self.beamed.insert(node, now);
        }
        let took = match (reachable, flirs) {
            (false, _) => TX_TIME_NO_ACK,
            (true, true) => TX_TIME_FLIRS,
            (true, false) => TX_TIME,
        };
        let at = now + took;
        self.schedule(at, Action::SendDone);
        let ticks = u16::try_from(took.as_millis() / 10).unwrap_or(u16::MAX);
        let status = if reachable {
            TRANSMIT_OK
        } else {
            TRANSMIT_NO_ACK
        };
        let mut payload = vec![cb, status];
        payload.extend(self.tx_report(ticks, reachable, flirs));
        self.callback(at, f, payload);
        if !reachable {
            if self.nodes.get(&node).is_some_and(|n| n.kind.is_listening()) {
                self.failed.insert(node);
            }
            return;
        }
        self.failed.remove(&node);
        // A sleeping node stays awake a little longer for every frame it gets.
        if let Some(until) = self.awake.get_mut(&node) {
            *until = (*until).max(now + self.cfg.awake_time);
            let until = *until;
            self.schedule(until, Action::Sleep(node));
        }
        if cc == [super::nodes::cc_id::WAKE_UP, 0x08] {
            // No More Information: back to sleep once the ACK went out.
            self.awake.remove(&node);
            return;
        }
        let cc = cc.to_vec();
        // Counted per command, Supervision unwrapped (Get: class, command, session, length).
        let counted = match cc.as_slice() {
            [0x6C, 0x01, _, _, class, command, ..] => Some((*class, *command)),
            [class, command, ..] => Some((*class, *command)),
            _ => None,
        };
        if let Some((class, command)) = counted {
            *self.delivered.entry((node, class, command)).or_default() += 1;
        }
        let answers = self
            .nodes
            .get_mut(&node)
            .map(|n| n.handle(&cc))
            .unwrap_or_default();
        for (i, answer) in answers.into_iter().enumerate() {
            let at = at + NODE_ANSWER_DELAY * (i as u32 + 1);
            self.node_frame(at, node, answer, false);
        }
    }

    /// The TX report a 700-series controller appends to the SendData callback
    /// (transport/SendDataShared.ts `parseTXReport`): TX ticks, repeaters, ACK RSSI, four
    /// repeater RSSIs (0x7F: not available), ACK and TX channel, route scheme, four
    /// repeaters, beam and speed (40 kbit/s), routing attempts, last failed route link.
    pub(super) fn tx_report(&self, ticks: u16, acked: bool, flirs: bool) -> Vec<u8> {
        if !self.tx_status_report {
            return Vec::new();
        }
        let [t0, t1] = ticks.to_be_bytes();
        let rssi = if acked { 0xC4 } else { 0x7F }; // -60 dBm
        let beam = if flirs { 0x40 } else { 0x00 };
        vec![
            t0,
            t1,
            0x00,
            rssi,
            0x7F,
            0x7F,
            0x7F,
            0x7F,
            0x00,
            0x00,
            0x00,
            0x00,
            0x00,
            0x00,
            0x00,
            beam | 0x02,
            0x01,
            0x00,
            0x00,
        ]
    }
}
