//! The emulator's state machines driven byte for byte, as a host would.

use super::*;
use crate::cc::Cc;
use crate::frame::{Frame, FrameType};
use proptest::prelude::*;

/// A scripted host: sends requests, ACKs what the controller sends (unless told not to),
/// keeps the data frames it received, and moves time forward deadline by deadline.
struct Host {
    emu: Emulator,
    now: Duration,
    parser: SerialParser,
    frames: Vec<DataFrame>,
    controls: Vec<Frame>,
    auto_ack: bool,
}

impl Host {
    fn new(cfg: EmulatorConfig) -> Self {
        Self {
            emu: Emulator::new(cfg),
            now: Duration::ZERO,
            parser: SerialParser::new(),
            frames: Vec::new(),
            controls: Vec::new(),
            auto_ack: true,
        }
    }

    fn quiet() -> Self {
        // Reports far in the future, so that tests see only what they asked for.
        Self::new(EmulatorConfig {
            report_interval: Duration::from_secs(3600),
            wake_interval: Duration::from_secs(3600),
            ..EmulatorConfig::default()
        })
    }

    fn write(&mut self, bytes: &[u8]) {
        self.emu.receive(self.now, bytes);
        self.pump();
    }

    fn send(&mut self, function: u8, payload: &[u8]) {
        let bytes = DataFrame::request(function, payload.to_vec())
            .to_bytes()
            .unwrap();
        self.write(&bytes);
    }

    fn pump(&mut self) {
        loop {
            let out = self.emu.take_output();
            if out.is_empty() {
                return;
            }
            for frame in self.parser.feed(&out) {
                match frame {
                    Frame::Data(d) => {
                        self.frames.push(d);
                        if self.auto_ack {
                            self.emu.receive(self.now, &[ACK]);
                        }
                    }
                    other => self.controls.push(other),
                }
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(next) = self.emu.next_deadline() {
            if next > target {
                break;
            }
            self.now = self.now.max(next);
            self.emu.tick(self.now);
            self.pump();
        }
        self.now = target;
        self.emu.tick(self.now);
        self.pump();
    }

    fn take(&mut self) -> Vec<DataFrame> {
        std::mem::take(&mut self.frames)
    }

    /// Sends a request and returns its response payload.
    fn call(&mut self, function: u8, payload: &[u8]) -> Vec<u8> {
        self.take();
        self.send(function, payload);
        let frames = self.take();
        let res = frames
            .iter()
            .find(|f| f.frame_type == FrameType::Response && f.function == function)
            .unwrap_or_else(|| panic!("no response to {function:#04x}: {frames:?}"));
        res.payload.clone()
    }

    fn requests(frames: &[DataFrame], function: u8) -> Vec<Vec<u8>> {
        frames
            .iter()
            .filter(|f| f.frame_type == FrameType::Request && f.function == function)
            .map(|f| f.payload.clone())
            .collect()
    }
}

fn send_data(node: u8, cc: &[u8], cb: u8) -> Vec<u8> {
    let mut p = vec![node, cc.len() as u8];
    p.extend_from_slice(cc);
    p.extend_from_slice(&[0x25, cb]);
    p
}

/// Command classes node `id` sent in ApplicationCommandHandler frames.
fn node_ccs(frames: &[DataFrame], id: u8) -> Vec<Vec<u8>> {
    Host::requests(frames, func::APPLICATION_COMMAND_HANDLER)
        .into_iter()
        .filter(|p| p.get(1) == Some(&id))
        .map(|p| p[3..].to_vec())
        .collect()
}

#[test]
fn start_up_queries_get_what_zwave_js_expects() {
    let mut h = Host::quiet();
    let caps = h.call(func::GET_SERIAL_API_CAPABILITIES, &[]);
    assert_eq!(caps.len(), 8 + 32);
    let listed = |f: u8| caps[8 + usize::from(f - 1) / 8] & (1 << ((f - 1) % 8)) != 0;
    for f in host::SUPPORTED_FUNCTIONS {
        assert!(listed(*f), "{f:#04x} answered but not listed");
    }
    assert!(!listed(func::SEND_DATA_BRIDGE));

    let init = h.call(func::GET_SERIAL_API_INIT_DATA, &[]);
    assert_eq!(&init[..3], &[0x0A, 0x08, 29]);
    assert_eq!(init[3], 0b0011_1111, "nodes 1-6");
    assert_eq!(&init[32..], &[0x07, 0x00]);

    let id = h.call(func::MEMORY_GET_ID, &[]);
    assert_eq!(id, [0xFA, 0x11, 0x6A, 0x7E, 0x01]);
    let version = h.call(func::GET_CONTROLLER_VERSION, &[]);
    assert_eq!(version, b"Z-Wave 7.18\0\x01");
    assert_eq!(h.call(func::GET_SUC_NODE_ID, &[]), [1]);
    assert_eq!(h.call(func::GET_CONTROLLER_CAPABILITIES, &[]), [0x1C]);

    // FLiRS bit on node 6, listening bit on node 2, not on the sleeping node 5.
    assert_eq!(h.call(func::GET_NODE_PROTOCOL_INFO, &[6])[1] & 0x60, 0x40);
    assert_eq!(h.call(func::GET_NODE_PROTOCOL_INFO, &[2])[0] & 0x80, 0x80);
    assert_eq!(h.call(func::GET_NODE_PROTOCOL_INFO, &[5])[0] & 0x80, 0x00);
    assert_eq!(h.call(func::GET_NODE_PROTOCOL_INFO, &[99]), [0; 6]);

    // Soft reset: ACK, no response, then SerialAPIStarted (software reset).
    h.take();
    h.send(func::SOFT_RESET, &[]);
    assert!(h.take().is_empty());
    h.advance(Duration::from_secs(1));
    let started = Host::requests(&h.take(), func::SERIAL_API_STARTED);
    assert_eq!(started.len(), 1);
    assert_eq!(started[0][0], 0x07);
}

#[test]
fn link_layer_acks_naks_and_cans() {
    let mut h = Host::quiet();
    h.send(func::GET_SUC_NODE_ID, &[]);
    assert_eq!(h.controls, [Frame::Ack]);
    h.controls.clear();
    // Bad checksum: NAK, nothing carried out.
    h.take();
    h.write(&[0x01, 0x03, 0x00, 0x56, 0x00]);
    assert_eq!(h.controls, [Frame::Nak]);
    assert!(h.take().is_empty());
    assert_eq!(h.emu.stats().bad_checksums, 1);
    // A host frame while the controller's own frame waits for its ACK: CAN.
    h.controls.clear();
    h.auto_ack = false;
    h.send(func::GET_SUC_NODE_ID, &[]);
    assert_eq!(h.take().len(), 1);
    h.controls.clear();
    h.send(func::GET_SUC_NODE_ID, &[]);
    assert_eq!(h.controls, [Frame::Can]);
    assert_eq!(h.emu.stats().collisions, 1);
}

#[test]
fn a_partial_host_frame_is_dropped_after_the_receive_timeout() {
    let mut h = Host::quiet();
    // A SOF and a length, then silence: the reception is aborted after 1500 ms, and the
    // next frame is understood.
    h.write(&[0x01, 0x09, 0x00]);
    h.advance(RX_TIMEOUT);
    assert_eq!(h.emu.stats().rx_timeouts, 1);
    assert_eq!(h.call(func::GET_SUC_NODE_ID, &[]), [1]);
}

#[test]
fn unacknowledged_frames_are_retransmitted_then_dropped() {
    let mut h = Host::quiet();
    h.auto_ack = false;
    h.send(func::GET_SUC_NODE_ID, &[]);
    assert_eq!(h.take().len(), 1);
    h.advance(ACK_TIMEOUT - Duration::from_millis(1));
    assert!(h.take().is_empty(), "not before 1600 ms");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take().len(), 1, "second attempt");
    h.advance(ACK_TIMEOUT);
    assert_eq!(h.take().len(), 1, "third attempt");
    h.advance(ACK_TIMEOUT * 3);
    assert!(h.take().is_empty(), "given up after three");
    assert_eq!(h.emu.link_stats().frames_dropped, 1);
    // A NAK is retransmitted after the back-off, then an ACK ends it.
    h.send(func::GET_SUC_NODE_ID, &[]);
    assert_eq!(h.take().len(), 1);
    h.write(&[NAK]);
    h.advance(Duration::from_millis(99));
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take().len(), 1);
    h.write(&[ACK]);
    h.advance(ACK_TIMEOUT * 2);
    assert!(h.take().is_empty());
}

#[test]
fn send_data_answers_with_response_callback_report_and_the_node_answer() {
    let mut h = Host::quiet();
    h.send(
        func::SEND_DATA,
        &send_data(3, &[0x31, 0x04, 0x01, 0x00], 0x42),
    );
    h.advance(Duration::from_millis(200));
    let frames = h.take();
    assert_eq!(frames[0].frame_type, FrameType::Response);
    assert_eq!(frames[0].payload, [0x01]);
    let cb = Host::requests(&frames, func::SEND_DATA);
    assert_eq!(cb.len(), 1);
    assert_eq!(&cb[0][..2], &[0x42, host::TRANSMIT_OK]);
    assert!(cb[0].len() >= 2 + 17, "TX report");
    let answers = node_ccs(&frames, 3);
    assert_eq!(answers, [vec![0x31, 0x05, 0x01, 0x22, 0x00, 0xD7]]);
    let Cc::MultilevelSensor(_) = Cc::decode(&answers[0]).unwrap() else {
        panic!()
    };
    let rec = h.emu.recorded().last().unwrap();
    assert_eq!((rec.node, rec.readings[0].name), (3, "temperature"));

    // Binary Switch Set under Supervision: Report success, and the switch is on.
    h.send(
        func::SEND_DATA,
        &send_data(2, &[0x6C, 0x01, 0x05, 0x03, 0x25, 0x01, 0xFF], 0x43),
    );
    h.advance(Duration::from_millis(200));
    assert_eq!(node_ccs(&h.take(), 2), [vec![0x6C, 0x02, 0x05, 0xFF, 0x00]]);
    assert_eq!(h.emu.node(2).unwrap().switch, 0xFF);

    // Absent node: NoAck after the routing attempts, and it counts as failed.
    h.send(func::SEND_DATA, &send_data(42, &[0x25, 0x02], 0x44));
    h.advance(Duration::from_secs(1));
    let cb = Host::requests(&h.take(), func::SEND_DATA);
    assert_eq!(cb[0][1], host::TRANSMIT_NO_ACK);
}

#[test]
fn a_second_send_data_while_busy_is_not_sent() {
    let mut h = Host::quiet();
    h.send(func::SEND_DATA, &send_data(6, &[0x25, 0x02], 1));
    assert_eq!(h.take()[0].payload, [0x01]);
    h.send(func::SEND_DATA, &send_data(2, &[0x25, 0x02], 2));
    assert_eq!(h.take()[0].payload, [0x00]);
    h.advance(Duration::from_secs(2));
    let frames = h.take();
    // The FLiRS node answered after its beam; the TX report says so.
    let cb = Host::requests(&frames, func::SEND_DATA);
    assert_eq!(cb[0][2 + 15] & 0x40, 0x40);
    assert_eq!(node_ccs(&frames, 6), [vec![0x25, 0x03, 0x00, 0x00, 0x00]]);
}

#[test]
fn sleeping_node_answers_only_while_awake_and_holds_its_readings() {
    let mut h = Host::new(EmulatorConfig {
        report_interval: Duration::from_secs(4),
        wake_interval: Duration::from_secs(8),
        ..EmulatorConfig::default()
    });
    h.advance(Duration::from_millis(100));
    // Asleep: the frame never reaches it.
    h.send(func::SEND_DATA, &send_data(5, &[0x80, 0x02], 7));
    h.advance(Duration::from_secs(1));
    let frames = h.take();
    assert_eq!(
        Host::requests(&frames, func::SEND_DATA)[0][1],
        host::TRANSMIT_NO_ACK
    );
    assert!(node_ccs(&frames, 5).is_empty());
    // Reports taken while asleep wait for the wake-up (the first one 9.2 s in).
    h.advance(Duration::from_secs(7));
    assert!(node_ccs(&h.take(), 5).is_empty());
    assert!(!h.emu.is_awake(5));
    h.advance(Duration::from_secs(2));
    let woke = node_ccs(&h.take(), 5);
    // The held readings, then the Wake Up Notification (then a reading taken as it
    // woke, if one fell due then).
    let notification = woke.iter().position(|cc| cc[..] == [0x84, 0x07]);
    assert!(
        notification.is_some_and(|p| p > 0 && woke[..p].iter().all(|cc| cc[0] != 0x84)),
        "Wake Up Notification after the held readings: {woke:?}"
    );
    assert!(
        woke.iter().any(|cc| cc.starts_with(&[0x31, 0x05, 0x01])),
        "held reading"
    );
    assert!(h.emu.is_awake(5));
    // Awake: it answers.
    h.send(func::SEND_DATA, &send_data(5, &[0x80, 0x02], 8));
    h.advance(Duration::from_millis(200));
    assert_eq!(node_ccs(&h.take(), 5)[0][..2], [0x80, 0x03]);
    // No More Information: asleep again.
    h.send(func::SEND_DATA, &send_data(5, &[0x84, 0x08], 9));
    h.advance(Duration::from_millis(200));
    assert!(!h.emu.is_awake(5));
    // Without it, it falls asleep after the awake time (10 s).
    let mut h = Host::quiet();
    h.emu.press_button(h.now, 5);
    h.advance(Duration::from_millis(100));
    assert!(h.emu.is_awake(5));
    h.advance(Duration::from_secs(11));
    assert!(!h.emu.is_awake(5));
}

fn statuses(frames: &[DataFrame], function: u8) -> Vec<u8> {
    Host::requests(frames, function)
        .iter()
        .map(|p| p[1])
        .collect()
}

#[test]
fn inclusion_runs_the_full_status_sequence() {
    let mut h = Host::quiet();
    h.send(func::ADD_NODE_TO_NETWORK, &[0xC1, 0x10]);
    h.advance(Duration::from_secs(3));
    let frames = h.take();
    assert_eq!(statuses(&frames, func::ADD_NODE_TO_NETWORK), [1, 2, 3, 5]);
    let adding = &Host::requests(&frames, func::ADD_NODE_TO_NETWORK)[2];
    assert_eq!(adding[2], 7, "next node id");
    assert_eq!(&adding[4..7], &[0x04, 0x10, 0x01], "NIF: device class");
    h.send(func::ADD_NODE_TO_NETWORK, &[0xC5, 0x11]);
    h.advance(Duration::from_millis(100));
    let done = Host::requests(&h.take(), func::ADD_NODE_TO_NETWORK);
    assert_eq!(done, [vec![0x11, 6, 7, 0]]);
    assert_eq!(h.call(func::GET_SERIAL_API_INIT_DATA, &[])[3], 0b0111_1111);
    assert!(h.emu.pending_nodes().is_empty());
    // Nobody else waits: Ready, and Stop answers Done with node 0.
    h.send(func::ADD_NODE_TO_NETWORK, &[0xC1, 0x12]);
    h.advance(Duration::from_secs(3));
    assert_eq!(statuses(&h.take(), func::ADD_NODE_TO_NETWORK), [1]);
    h.send(func::ADD_NODE_TO_NETWORK, &[0xC5, 0x13]);
    h.advance(Duration::from_millis(100));
    assert_eq!(
        Host::requests(&h.take(), func::ADD_NODE_TO_NETWORK),
        [vec![0x13, 6, 0, 0]]
    );
}

#[test]
fn exclusion_needs_a_button_press() {
    let mut h = Host::quiet();
    h.send(func::REMOVE_NODE_FROM_NETWORK, &[0xC1, 0x20]);
    h.advance(Duration::from_secs(20));
    assert_eq!(statuses(&h.take(), func::REMOVE_NODE_FROM_NETWORK), [1]);
    h.send(func::REMOVE_NODE_FROM_NETWORK, &[0xC5, 0x21]);
    h.advance(Duration::from_millis(100));
    assert_eq!(statuses(&h.take(), func::REMOVE_NODE_FROM_NETWORK), [6]);

    h.send(func::REMOVE_NODE_FROM_NETWORK, &[0xC1, 0x22]);
    h.advance(Duration::from_millis(100));
    h.emu.press_button(h.now, 4);
    h.advance(Duration::from_secs(1));
    let frames = h.take();
    assert_eq!(
        statuses(&frames, func::REMOVE_NODE_FROM_NETWORK),
        [1, 2, 3, 6]
    );
    let removed = Host::requests(&frames, func::REMOVE_NODE_FROM_NETWORK);
    assert_eq!((removed[2][2], removed[3][2]), (4, 4));
    assert!(h.emu.node(4).is_none());
    assert_eq!(
        h.emu.pending_nodes(),
        [NodeKind::SwitchMeter, NodeKind::DoorSensor]
    );
    assert_eq!(h.call(func::GET_SERIAL_API_INIT_DATA, &[])[3], 0b0011_0111);

    // Configured presses: the node leaves on its own once exclusion starts.
    let mut h = Host::new(EmulatorConfig {
        exclusion_presses: vec![2],
        report_interval: Duration::from_secs(3600),
        ..EmulatorConfig::default()
    });
    h.send(func::REMOVE_NODE_FROM_NETWORK, &[0x01, 0x30]);
    h.advance(Duration::from_secs(3));
    assert_eq!(
        statuses(&h.take(), func::REMOVE_NODE_FROM_NETWORK),
        [1, 2, 3, 6]
    );
    assert!(h.emu.node(2).is_none());
}

#[test]
fn failed_nodes_can_be_checked_and_removed() {
    let mut h = Host::quiet();
    h.emu.set_node_dead(3, true);
    assert_eq!(h.call(func::IS_FAILED_NODE, &[3]), [0]);
    assert_eq!(h.call(func::REMOVE_FAILED_NODE, &[3, 9]), [0x08]);
    h.send(func::SEND_DATA, &send_data(3, &[0x00], 1));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.call(func::IS_FAILED_NODE, &[3]), [1]);
    assert_eq!(h.call(func::REMOVE_FAILED_NODE, &[3, 9]), [0x00]);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        Host::requests(&h.take(), func::REMOVE_FAILED_NODE),
        [vec![9, 1]]
    );
    assert!(h.emu.node(3).is_none());
}

#[test]
fn faults_jam_drop_and_reset() {
    let mut h = Host::quiet();
    // Jammed: callback Fail with 0 TX ticks, until a soft reset.
    h.emu.inject(h.now, Fault::Jam);
    h.send(func::SEND_DATA, &send_data(2, &[0x25, 0x02], 1));
    h.advance(Duration::from_millis(200));
    let cb = Host::requests(&h.take(), func::SEND_DATA);
    assert_eq!(&cb[0][..4], &[1, host::TRANSMIT_FAIL, 0, 0]);
    // Silent jam: no callback at all, and the controller stays busy.
    h.emu.inject(h.now, Fault::JamSilent);
    h.send(func::SEND_DATA, &send_data(2, &[0x25, 0x02], 2));
    h.advance(Duration::from_secs(5));
    assert!(Host::requests(&h.take(), func::SEND_DATA).is_empty());
    h.send(func::SEND_DATA, &send_data(2, &[0x25, 0x02], 3));
    assert_eq!(h.take()[0].payload, [0x00]);
    h.send(func::SOFT_RESET, &[]);
    h.advance(Duration::from_secs(1));
    assert_eq!(Host::requests(&h.take(), func::SERIAL_API_STARTED).len(), 1);
    h.send(func::SEND_DATA, &send_data(2, &[0x25, 0x02], 4));
    h.advance(Duration::from_millis(200));
    assert_eq!(
        Host::requests(&h.take(), func::SEND_DATA),
        [vec![4, 0]
            .into_iter()
            .chain(h.emu.tx_report(2, true, false))
            .collect::<Vec<_>>()]
    );

    // A missing callback.
    h.emu.inject(h.now, Fault::MissingCallback);
    h.send(func::SEND_DATA, &send_data(2, &[0x00], 5));
    h.advance(Duration::from_millis(200));
    assert!(Host::requests(&h.take(), func::SEND_DATA).is_empty());

    // A missing ACK: the frame is neither acknowledged nor carried out.
    h.controls.clear();
    h.emu.inject(h.now, Fault::MissingAck);
    h.send(func::GET_SUC_NODE_ID, &[]);
    assert!(h.controls.is_empty());
    assert!(h.take().is_empty());
    // NAK and CAN on request.
    h.emu.inject(h.now, Fault::Nak);
    h.send(func::GET_SUC_NODE_ID, &[]);
    h.emu.inject(h.now, Fault::Can);
    h.send(func::GET_SUC_NODE_ID, &[]);
    assert_eq!(h.controls, [Frame::Nak, Frame::Can]);
    // A corrupt frame is NAKed by the host and comes again intact.
    h.controls.clear();
    h.take();
    h.emu.inject(h.now, Fault::CorruptFrame);
    h.send(func::GET_SUC_NODE_ID, &[]);
    assert!(h.take().is_empty(), "the parser drops the bad frame");
    h.write(&[NAK]);
    h.advance(Duration::from_millis(150));
    assert_eq!(h.take()[0].payload, [1]);

    // Unsolicited reset (watchdog).
    h.emu.inject(h.now, Fault::Reset);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        Host::requests(&h.take(), func::SERIAL_API_STARTED)[0][0],
        0x03
    );
}

#[test]
fn nvm_reads_back_byte_identical() {
    let mut h = Host::quiet();
    assert_eq!(nvm::DEFAULT_IMAGE.len(), 0xC000);
    // Read before open: operation mismatch.
    assert_eq!(h.call(func::NVM_BACKUP_RESTORE, &[1, 8, 0, 0])[0], 2);
    let open = h.call(func::NVM_BACKUP_RESTORE, &[0]);
    assert_eq!(open, [0, 0, 0xC0, 0x00]);
    // 255 bytes do not fit one frame: no data (zwave-js then asks for 48).
    assert_eq!(h.call(func::NVM_BACKUP_RESTORE, &[1, 255, 0, 0])[1], 0);
    let mut image = Vec::new();
    loop {
        let [hi, lo] = (image.len() as u16).to_be_bytes();
        let res = h.call(func::NVM_BACKUP_RESTORE, &[1, 48, hi, lo]);
        image.extend_from_slice(&res[4..]);
        if res[0] == nvm::STATUS_END_OF_FILE {
            break;
        }
        assert_eq!(res[0], nvm::STATUS_OK);
    }
    assert_eq!(h.call(func::NVM_BACKUP_RESTORE, &[3])[0], 0);
    assert_eq!(image, nvm::DEFAULT_IMAGE);
}

#[test]
fn interview_commands_get_answers_the_codec_decodes() {
    let mut h = Host::quiet();
    let mut cb = 0u8;
    for (node, kind) in default_nodes() {
        let ccs = kind.command_classes();
        let mut gets: Vec<Vec<u8>> = vec![
            vec![0x72, 0x04],
            vec![0x86, 0x11],
            vec![0x5E, 0x01],
            vec![0x85, 0x05],
            vec![0x85, 0x02, 0x01],
            vec![0x70, 0x05, 0x01],
        ];
        gets.extend(ccs.iter().map(|(c, _)| vec![0x86, 0x13, *c]));
        for (class, _) in &ccs {
            gets.extend(match *class {
                0x31 => vec![
                    vec![0x31, 0x01],
                    vec![0x31, 0x03, 0x01],
                    vec![0x31, 0x04, 0x01, 0x00],
                ],
                0x32 => vec![vec![0x32, 0x03], vec![0x32, 0x01, 0x10]],
                0x71 => vec![
                    vec![0x71, 0x07],
                    vec![0x71, 0x01, 0x06],
                    vec![0x71, 0x04, 0, 6, 0],
                ],
                0x80 => vec![vec![0x80, 0x02]],
                0x84 => vec![vec![0x84, 0x09], vec![0x84, 0x05]],
                0x25 => vec![vec![0x25, 0x02]],
                _ => vec![],
            });
        }
        if kind.sleeps() {
            h.emu.press_button(h.now, node);
        }
        for get in gets {
            cb = cb.wrapping_add(1).max(1);
            h.send(func::SEND_DATA, &send_data(node, &get, cb));
            h.advance(Duration::from_millis(1500));
            let answers = node_ccs(&h.take(), node);
            let answers: Vec<_> = answers.into_iter().filter(|a| a != &[0x84, 0x07]).collect();
            assert_eq!(answers.len(), 1, "node {node} {kind:?} answers {get:02x?}");
            let decoded = Cc::decode(&answers[0]).unwrap();
            assert_eq!(decoded.cc_id(), u16::from(get[0]), "{decoded:?}");
            assert!(
                !matches!(decoded, Cc::Unknown(_)),
                "{get:02x?}: {decoded:?}"
            );
        }
    }
}

#[test]
fn periodic_reports_go_to_the_lifeline_and_are_recorded() {
    let mut h = Host::new(EmulatorConfig {
        report_interval: Duration::from_secs(2),
        ..EmulatorConfig::default()
    });
    h.advance(Duration::from_secs(5));
    let frames = h.take();
    for node in [2, 3, 4] {
        assert!(!node_ccs(&frames, node).is_empty(), "node {node} reported");
    }
    let recorded: Vec<_> = h.emu.recorded().iter().map(|r| r.cc.clone()).collect();
    let sent: Vec<_> = Host::requests(&frames, func::APPLICATION_COMMAND_HANDLER)
        .into_iter()
        .map(|p| p[3..].to_vec())
        .filter(|cc| cc[..] != [0x84, 0x07])
        .collect();
    assert_eq!(recorded, sent);
    // A node without a lifeline keeps quiet.
    h.emu.node_mut(3).unwrap().lifeline.clear();
    h.advance(Duration::from_secs(4));
    assert!(node_ccs(&h.take(), 3).is_empty());
}

proptest! {
    #[test]
    fn random_host_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..24)) {
        let mut h = Host::new(EmulatorConfig::default());
        for chunk in chunks {
            h.write(&chunk);
            h.advance(Duration::from_millis(700));
        }
    }

    #[test]
    fn random_requests_never_panic(function in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut h = Host::new(EmulatorConfig::default());
        h.send(function, &payload);
        h.advance(Duration::from_secs(3));
        h.send(function, &payload);
        h.advance(Duration::from_secs(3));
    }
}

/// What a sleeping node measured while asleep reaches the host in the order it was
/// measured, so the last value a host keeps is the newest one.
#[test]
fn held_readings_go_out_oldest_first() {
    let mut h = Host::new(EmulatorConfig {
        report_interval: Duration::from_secs(4),
        wake_interval: Duration::from_secs(30),
        ..EmulatorConfig::default()
    });
    h.advance(Duration::from_secs(32));
    let batteries: Vec<u8> = node_ccs(&h.take(), 5)
        .iter()
        .filter(|cc| cc.starts_with(&[0x80, 0x03]))
        .map(|cc| cc[2])
        .collect();
    assert!(batteries.len() >= 3, "{batteries:?}");
    assert!(
        batteries.windows(2).all(|w| w[0] >= w[1]),
        "the battery rose: readings out of order {batteries:?}"
    );
}

#[test]
fn a_reading_taken_as_a_node_wakes_goes_after_the_ones_it_held() {
    // A report falls due the moment the node wakes: it went out between the held
    // readings, and the last temperature and battery a host kept were not the latest.
    let mut h = Host::new(EmulatorConfig {
        report_interval: Duration::from_secs(2),
        wake_interval: Duration::from_secs(12),
        ..EmulatorConfig::default()
    });
    h.advance(Duration::from_secs(40));
    let frames = node_ccs(&h.take(), 5);
    let temperatures: Vec<u16> = frames
        .iter()
        .filter(|cc| cc.starts_with(&[0x31, 0x05, 0x01]))
        .map(|cc| u16::from_be_bytes([cc[4], cc[5]]))
        .collect();
    let batteries: Vec<u8> = frames
        .iter()
        .filter(|cc| cc.starts_with(&[0x80, 0x03]))
        .map(|cc| cc[2])
        .collect();
    assert!(temperatures.len() > 8, "{frames:?}");
    assert!(
        temperatures.windows(2).all(|w| w[0] < w[1]),
        "temperatures out of order: {temperatures:?}"
    );
    assert!(
        batteries.windows(2).all(|w| w[0] > w[1]),
        "battery levels out of order: {batteries:?}"
    );
}
