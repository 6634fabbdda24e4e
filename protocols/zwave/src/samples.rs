//! Random but valid frames and command classes of every kind this crate types, built with the
//! crate's own encoders: the input of the differential test against zwave-js, the benchmark,
//! and property tests. Deterministic for a seed; values stay inside the ranges the spec (and
//! zwave-js) accept, so that any disagreement is a real one.

use crate::cc::{
    Association, Basic, Battery, BinarySwitch, Cc, Configuration, Duration, ManufacturerSpecific,
    Meter, MeterValue, MultiChannel, MultilevelSensor, MultilevelSwitch, Notification,
    NotificationEvent, RawCc, ScaledValue, Secure, SecurityScheme, Supervision, SupervisionStatus,
    Transition, Version, WakeUp, ZwavePlusInfo,
};
use crate::frame::DataFrame;
use crate::message::{
    AddNodeMode, AddNodeStatus, ApplicationCommand, ApplicationUpdate, BridgeApplicationCommand,
    Callback, CcList, ControllerCapabilities, DeviceClass, Inbound, NodeInfo, NodeProtocolInfo,
    NvmStatus, RemoveFailedStatus, RemoveNodeMode, RemoveNodeStatus, Request, Response, RxStatus,
    SendData, SerialApiCapabilities, SerialApiInitData, SerialApiStarted, TransmitStatus, TxReport,
    Unsolicited, WakeUpReason,
};

/// xorshift64*: small, fast, deterministic; not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn u8(&mut self) -> u8 {
        (self.u64() >> 32) as u8
    }
    pub fn u16(&mut self) -> u16 {
        (self.u64() >> 32) as u16
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.u64() % u64::from(hi - lo + 1)) as u32
    }
    pub fn byte_in(&mut self, lo: u8, hi: u8) -> u8 {
        self.range(u32::from(lo), u32::from(hi)) as u8
    }
    pub fn bool(&mut self) -> bool {
        self.u64() & 1 == 1
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.u64() % items.len() as u64) as usize]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
    pub fn maybe<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.bool() {
            Some(f(self))
        } else {
            None
        }
    }
}

/// One sample for the differential test: a data frame as sent by the controller or by the
/// host (zwave-js parses REQ frames differently by origin), or an encoded command class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    Controller(Vec<u8>),
    Host(Vec<u8>),
    Cc(Vec<u8>),
}

/// `n` samples: about 45 % controller frames, 10 % host frames, 45 % command classes.
pub fn generate(seed: u64, n: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| match rng.range(0, 99) {
            0..=44 => Sample::Controller(
                random_inbound(&mut rng)
                    .to_frame()
                    .and_then(|f| f.to_bytes())
                    .expect("generated frames encode"),
            ),
            45..=54 => Sample::Host(
                random_host_request(&mut rng)
                    .to_bytes()
                    .expect("generated requests encode"),
            ),
            _ => Sample::Cc(random_cc(&mut rng).encode().expect("generated CCs encode")),
        })
        .collect()
}

fn duration(rng: &mut Rng) -> Duration {
    Duration(rng.byte_in(0x00, 0xFE))
}

fn level(rng: &mut Rng) -> u8 {
    {
        let l = rng_level(rng);
        rng.pick(&[l, 0xFE, 0xFF, 0])
    }
}

fn rng_level(rng: &mut Rng) -> u8 {
    rng.byte_in(0, 99)
}

/// A value of random size and precision.
pub fn scaled(rng: &mut Rng) -> ScaledValue {
    let size = rng.pick(&[1u8, 2, 4]);
    let raw = match size {
        1 => i32::from(rng.u8() as i8),
        2 => i32::from(rng.u16() as i16),
        _ => rng.u64() as i32,
    };
    ScaledValue {
        raw,
        precision: rng.byte_in(0, 7),
        size,
    }
}

fn cc_list(rng: &mut Rng) -> CcList {
    let ids = |rng: &mut Rng| -> Vec<u16> {
        (0..rng.range(0, 6))
            .map(|_| {
                if rng.range(0, 9) == 0 {
                    0xF100 | u16::from(rng.u8())
                } else {
                    u16::from(rng.byte_in(0x20, 0xEE))
                }
            })
            .collect()
    };
    CcList {
        supported: ids(rng),
        controlled: if rng.bool() { ids(rng) } else { Vec::new() },
    }
}

fn node_info(rng: &mut Rng) -> NodeInfo {
    NodeInfo {
        node_id: rng.byte_in(1, 232),
        device_class: Some(DeviceClass {
            basic: rng.byte_in(1, 4),
            generic: rng.u8(),
            specific: rng.u8(),
        }),
        command_classes: cc_list(rng),
    }
}

fn tx_report(rng: &mut Rng) -> TxReport {
    let extra = rng.range(0, 7) as usize;
    let opt_i8 = |rng: &mut Rng, i: usize| (extra > i).then(|| rng.u8() as i8);
    let failed_last = (extra > 0).then(|| rng.u8());
    let failed_first = (extra > 1).then(|| rng.u8());
    TxReport {
        tx_ticks: rng.u16(),
        repeater_count: rng.byte_in(0, 4),
        ack_rssi: {
            let v = rng.byte_in(0xA0, 0xF0) as i8;
            rng.pick(&[v, 127, 126, 125])
        },
        ack_repeater_rssi: [
            rng.u8() as i8,
            rng.u8() as i8,
            rng.u8() as i8,
            rng.u8() as i8,
        ],
        ack_channel: rng.byte_in(0, 3),
        tx_channel: rng.byte_in(0, 4),
        route_scheme_state: rng.byte_in(0, 6),
        repeater_node_ids: [rng.u8(), rng.u8(), rng.u8(), rng.u8()],
        beam_1000ms: rng.bool(),
        beam_250ms: rng.bool(),
        route_speed: rng.byte_in(1, 4),
        routing_attempts: rng.u8(),
        failed_route_last_functional_node: failed_last,
        failed_route_first_non_functional_node: failed_first,
        tx_power: opt_i8(rng, 2),
        measured_noise_floor: opt_i8(rng, 3),
        destination_ack_tx_power: opt_i8(rng, 4),
        destination_ack_rssi: opt_i8(rng, 5),
        destination_ack_noise_floor: opt_i8(rng, 6),
    }
}

/// A controller-to-host frame of a random kind.
pub fn random_inbound(rng: &mut Rng) -> Inbound {
    match rng.range(0, 29) {
        0 => Inbound::Response(Response::SerialApiCapabilities(SerialApiCapabilities {
            firmware_major: rng.u8(),
            firmware_minor: rng.u8(),
            manufacturer_id: rng.u16(),
            product_type: rng.u16(),
            product_id: rng.u16(),
            function_bitmask: rng.bytes(32),
        })),
        1 => {
            let nodes: Vec<u8> = (0..rng.range(1, 20)).map(|_| rng.byte_in(1, 232)).collect();
            Inbound::Response(Response::SerialApiInitData(SerialApiInitData {
                api_version: rng.byte_in(5, 12),
                capabilities: rng.byte_in(0, 15),
                node_bitmask: SerialApiInitData::bitmask_for(&nodes),
                chip: rng.maybe(|r| (r.byte_in(5, 8), r.byte_in(0, 3))),
            }))
        }
        2 => Inbound::Response(Response::ControllerVersion {
            library_version: format!("Z-Wave {}.{:02}", rng.byte_in(2, 7), rng.byte_in(0, 99)),
            library_type: rng.byte_in(1, 8),
        }),
        3 => Inbound::Response(Response::MemoryGetId {
            home_id: rng.u64() as u32,
            node_id: rng.byte_in(1, 232),
        }),
        4 => Inbound::Response(Response::ControllerCapabilities(ControllerCapabilities(
            rng.byte_in(0, 0x3F),
        ))),
        5 => {
            let security = rng.u8();
            let specific = if security & 0x04 != 0 { rng.u8() } else { 0 };
            Inbound::Response(Response::NodeProtocolInfo(NodeProtocolInfo {
                capability: rng.u8(),
                security,
                reserved: rng.byte_in(0, 1),
                device_class: DeviceClass {
                    basic: rng.byte_in(1, 4),
                    generic: rng.u8(),
                    specific,
                },
            }))
        }
        6 => Inbound::Response(Response::SendData {
            was_sent: rng.bool(),
        }),
        7 => Inbound::Response(Response::RequestNodeInfo {
            was_sent: rng.bool(),
        }),
        8 => Inbound::Response(Response::RemoveFailedNode {
            status: rng.pick(&[0, 2, 4, 8, 16, 32]),
        }),
        9 => Inbound::Response(Response::IsFailedNode { failed: rng.bool() }),
        10 => {
            let n = rng.range(0, 64) as usize;
            Inbound::Response(Response::NvmBackupRestore {
                status: NvmStatus::from_byte(rng.pick(&[0, 1, 2, 3, 0xFF])),
                offset_or_size: rng.u16(),
                data: rng.bytes(n),
            })
        }
        11 => Inbound::Response(Response::NvmId {
            byte0: 0,
            manufacturer_id: rng.u8(),
            memory_type: rng.pick(&[0x80, 0x81, 0xFF]),
            memory_size: rng.byte_in(14, 24),
        }),
        12 => {
            let n = rng.range(1, 64) as usize;
            Inbound::Response(Response::NvmExtReadLongBuffer { data: rng.bytes(n) })
        }
        13 => Inbound::Response(Response::SucNodeId(rng.u8())),
        14..=16 => {
            let status = TransmitStatus::from_byte(rng.byte_in(0, 4));
            Inbound::Callback(Callback::SendData {
                callback_id: rng.byte_in(1, 255),
                status,
                report: rng.maybe(tx_report),
            })
        }
        17 => {
            let status = match rng.range(0, 6) {
                0 => AddNodeStatus::Ready,
                1 => AddNodeStatus::NodeFound,
                2 => AddNodeStatus::AddingEndNode(node_info(rng)),
                3 => AddNodeStatus::AddingController(node_info(rng)),
                4 => AddNodeStatus::ProtocolDone,
                5 => AddNodeStatus::Done {
                    node_id: rng.byte_in(1, 232),
                },
                _ => AddNodeStatus::Failed,
            };
            Inbound::Callback(Callback::AddNode {
                callback_id: rng.byte_in(1, 255),
                status,
            })
        }
        18 => {
            let status = match rng.range(0, 5) {
                0 => RemoveNodeStatus::Ready,
                1 => RemoveNodeStatus::NodeFound,
                2 => RemoveNodeStatus::RemovingEndNode {
                    node_id: rng.byte_in(1, 232),
                },
                3 => RemoveNodeStatus::RemovingController {
                    node_id: rng.byte_in(1, 232),
                },
                4 => RemoveNodeStatus::Done { node_id: None },
                _ => RemoveNodeStatus::Failed,
            };
            Inbound::Callback(Callback::RemoveNode {
                callback_id: rng.byte_in(1, 255),
                status,
            })
        }
        19 => Inbound::Callback(Callback::RemoveFailedNode {
            callback_id: rng.byte_in(1, 255),
            status: RemoveFailedStatus::from_byte(rng.byte_in(0, 2)),
        }),
        20..=24 => {
            let payload = random_cc(rng).encode().expect("generated CCs encode");
            Inbound::Unsolicited(Unsolicited::ApplicationCommand(ApplicationCommand {
                status: RxStatus(rng.pick(&[0x00, 0x01, 0x02, 0x04, 0x08, 0x14, 0x40, 0x80])),
                source: rng.byte_in(1, 232),
                payload,
                rssi: rng.maybe(|r| r.byte_in(0xA0, 0xF0) as i8),
            }))
        }
        25 => {
            let payload = random_cc(rng).encode().expect("generated CCs encode");
            let multicast = rng.range(0, 3) == 0;
            Inbound::Unsolicited(Unsolicited::BridgeApplicationCommand(
                BridgeApplicationCommand {
                    status: RxStatus(if multicast { 0x08 } else { 0x00 }),
                    destination: 1,
                    source: rng.byte_in(2, 232),
                    payload,
                    multicast_mask: if multicast {
                        SerialApiInitData::bitmask_for(&[rng.byte_in(1, 232), rng.byte_in(1, 232)])
                    } else {
                        Vec::new()
                    },
                    rssi: Some(rng.byte_in(0xA0, 0xF0) as i8),
                },
            ))
        }
        26 => Inbound::Unsolicited(Unsolicited::ApplicationUpdate(match rng.range(0, 4) {
            0 | 1 => ApplicationUpdate::NodeInfoReceived(node_info(rng)),
            2 => ApplicationUpdate::NodeInfoRequestFailed { node_id: 0 },
            3 => ApplicationUpdate::NodeAdded(node_info(rng)),
            _ => ApplicationUpdate::NodeRemoved {
                node_id: rng.byte_in(1, 232),
            },
        })),
        27 => Inbound::Unsolicited(Unsolicited::SerialApiStarted(SerialApiStarted {
            wake_up_reason: WakeUpReason::from_byte(
                rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xFF]),
            ),
            watchdog_started: rng.bool(),
            listening: rng.bool(),
            generic: rng.u8(),
            specific: rng.u8(),
            command_classes: cc_list(rng),
            protocols: rng.maybe(|r| r.byte_in(0, 1)),
        })),
        _ => {
            // A function zwave-js does not know either.
            let n = rng.range(0, 8) as usize;
            let payload = rng.bytes(n);
            let function = rng.pick(&[0xF0, 0xF1, 0xF2, 0xE0, 0xE5]);
            if rng.bool() {
                Inbound::Unsolicited(Unsolicited::Unknown(DataFrame::request(function, payload)))
            } else {
                Inbound::Response(Response::Unknown(DataFrame::response(function, payload)))
            }
        }
    }
}

/// A host-to-controller request of a kind zwave-js can parse from the host side.
pub fn random_host_request(rng: &mut Rng) -> Request {
    match rng.range(0, 5) {
        0 | 1 => Request::SendData(SendData {
            node_id: rng.byte_in(1, 232),
            payload: random_cc(rng).encode().expect("generated CCs encode"),
            tx_options: rng.pick(&[0x25, 0x05, 0x01, 0x00]),
            callback_id: rng.byte_in(1, 255),
        }),
        2 => Request::AddNodeToNetwork {
            mode: AddNodeMode::from_byte(rng.pick(&[1, 2, 3, 4, 5])),
            flags: rng.pick(&[0x00, 0x80, 0xC0, 0x40]),
            callback_id: rng.byte_in(1, 255),
        },
        3 => Request::RemoveNodeFromNetwork {
            mode: RemoveNodeMode::from_byte(rng.pick(&[1, 2, 3, 5])),
            flags: rng.pick(&[0x00, 0x80, 0xC0, 0x40]),
            callback_id: rng.byte_in(1, 255),
        },
        4 => Request::GetNodeProtocolInfo {
            node_id: rng.byte_in(1, 232),
        },
        _ => Request::RemoveFailedNode {
            node_id: rng.byte_in(1, 232),
            callback_id: rng.byte_in(1, 255),
        },
    }
}

/// Any host request, including those zwave-js cannot parse back (NVM, no-payload requests).
pub fn random_request(rng: &mut Rng) -> Request {
    use crate::message::NvmOperation;
    match rng.range(0, 12) {
        0 => Request::GetSerialApiCapabilities,
        1 => Request::GetSerialApiInitData,
        2 => Request::GetControllerVersion,
        3 => Request::MemoryGetId,
        4 => Request::SoftReset,
        5 => Request::IsFailedNode {
            node_id: rng.byte_in(1, 232),
        },
        6 => Request::RequestNodeInfo {
            node_id: rng.byte_in(1, 232),
        },
        7 => Request::NvmBackupRestore(match rng.range(0, 3) {
            0 => NvmOperation::Open,
            1 => NvmOperation::Read {
                length: rng.u8(),
                offset: rng.u16(),
            },
            2 => {
                let n = rng.range(1, 64) as usize;
                NvmOperation::Write {
                    offset: rng.u16(),
                    data: rng.bytes(n),
                }
            }
            _ => NvmOperation::Close,
        }),
        8 => Request::NvmExtReadLongBuffer {
            offset: rng.range(0, 0xFF_FFFF),
            length: rng.u16(),
        },
        9 => Request::GetNvmId,
        _ => random_host_request(rng),
    }
}

/// A command class of a random kind with valid values.
pub fn random_cc(rng: &mut Rng) -> Cc {
    random_cc_depth(rng, 0)
}

fn random_cc_depth(rng: &mut Rng, depth: usize) -> Cc {
    let top = if depth >= 2 { 40 } else { 44 };
    match rng.range(0, top) {
        0 => Cc::Basic(Basic::Set { value: rng.u8() }),
        1 => Cc::Basic(Basic::Get),
        2 => Cc::Basic(Basic::Report {
            current: level(rng),
            transition: rng.maybe(|r| Transition {
                target: rng_level(r),
                duration: duration(r),
            }),
        }),
        3 => Cc::BinarySwitch(BinarySwitch::Set {
            value: rng.pick(&[0x00, 0xFF]),
            duration: rng.maybe(duration),
        }),
        4 => Cc::BinarySwitch(BinarySwitch::Report {
            current: rng.pick(&[0x00, 0xFF, 0xFE]),
            transition: rng.maybe(|r| Transition {
                target: r.pick(&[0x00, 0xFF, 0xFE]),
                duration: duration(r),
            }),
        }),
        5 => Cc::MultilevelSwitch(MultilevelSwitch::Set {
            value: {
                let v = rng_level(rng);
                rng.pick(&[v, 0xFF])
            },
            duration: rng.maybe(duration),
        }),
        6 => Cc::MultilevelSwitch(MultilevelSwitch::Report {
            current: level(rng),
            transition: rng.maybe(|r| Transition {
                target: {
                    let v = rng_level(r);
                    r.pick(&[v, 0xFE])
                },
                duration: duration(r),
            }),
        }),
        7 => Cc::MultilevelSwitch(MultilevelSwitch::StartLevelChange {
            flags: rng.pick(&[0x00, 0x20, 0x40, 0x60]),
            start_level: rng_level(rng),
            duration: rng.maybe(duration),
        }),
        8 => Cc::MultilevelSwitch(MultilevelSwitch::SupportedReport {
            primary_type: rng.byte_in(0, 7),
            secondary_type: None,
        }),
        9..=11 => Cc::MultilevelSensor(MultilevelSensor::Report {
            sensor_type: rng.byte_in(1, 0x56),
            scale: rng.byte_in(0, 3),
            value: scaled(rng),
        }),
        12 => Cc::MultilevelSensor(MultilevelSensor::Get {
            sensor: rng.maybe(|r| (r.byte_in(1, 0x56), r.byte_in(0, 3))),
        }),
        13 => {
            let types: Vec<u8> = (0..rng.range(1, 8)).map(|_| rng.byte_in(1, 0x56)).collect();
            let mut types = types;
            types.sort_unstable();
            types.dedup();
            Cc::MultilevelSensor(MultilevelSensor::SupportedSensorReport {
                sensor_types: types,
            })
        }
        14 => Cc::MultilevelSensor(MultilevelSensor::SupportedScaleReport {
            sensor_type: rng.byte_in(1, 0x56),
            scales: (0..4).filter(|_| rng.bool()).collect(),
        }),
        15..=17 => {
            let value = scaled(rng);
            let delta_time = rng.maybe(|r| {
                let v = r.u16();
                r.pick(&[0, v, 0xFFFF])
            });
            let previous = match delta_time {
                Some(dt) if dt != 0 => Some(ScaledValue {
                    raw: scaled_raw(rng, value.size),
                    ..value
                }),
                _ => None,
            };
            // Scales past 6 need the v4 scale-2 byte, which comes after the delta time.
            let scale = rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8]);
            Cc::Meter(Meter::Report {
                reading: MeterValue {
                    meter_type: rng.byte_in(1, 5),
                    rate_type: rng.byte_in(1, 2),
                    scale: if delta_time.is_none() {
                        scale.min(6)
                    } else {
                        scale
                    },
                    value,
                },
                delta_time,
                previous,
            })
        }
        18 => Cc::Meter(Meter::Get {
            selector: rng.maybe(|r| (r.byte_in(0, 2), u16::from(r.byte_in(0, 9)))),
        }),
        19 => {
            let mut scales: Vec<u16> = (0..rng.range(1, 5))
                .map(|_| u16::from(rng.byte_in(0, 12)))
                .collect();
            scales.sort_unstable();
            scales.dedup();
            Cc::Meter(Meter::SupportedReport {
                meter_type: rng.byte_in(1, 5),
                supports_reset: rng.bool(),
                rate_types: rng.byte_in(0, 3),
                scales,
            })
        }
        20..=22 => {
            let n = rng.range(0, 4) as usize;
            Cc::Notification(Notification::Report {
                alarm_type: rng.u8(),
                alarm_level: rng.u8(),
                event: if rng.range(0, 5) == 0 {
                    None
                } else {
                    Some(NotificationEvent {
                        reserved: 0,
                        status: rng.pick(&[0x00, 0xFF]),
                        notification_type: rng.byte_in(1, 0x16),
                        event: rng.u8(),
                        parameters: rng.bytes(n),
                        sequence: rng.maybe(|r| r.u8()),
                    })
                },
            })
        }
        23 => Cc::Notification(Notification::Get {
            alarm_type: 0,
            notification_type: Some(rng.byte_in(1, 0x16)),
            event: rng.maybe(|r| r.u8()),
        }),
        24 => {
            let mut types: Vec<u8> = (0..rng.range(1, 5)).map(|_| rng.byte_in(1, 0x16)).collect();
            types.sort_unstable();
            types.dedup();
            Cc::Notification(Notification::SupportedReport {
                v1_alarm: rng.bool(),
                types,
            })
        }
        25 => Cc::Battery(Battery::Report {
            level: {
                let v = rng.byte_in(0, 100);
                rng.pick(&[v, 0xFF])
            },
            flags: rng.maybe(|r| [r.u8(), r.u8() & 0x03]),
        }),
        26 => Cc::Battery(Battery::Get),
        27 => Cc::WakeUp(WakeUp::IntervalReport {
            seconds: rng.range(0, 0xFF_FFFF),
            node_id: rng.byte_in(1, 232),
        }),
        28 => Cc::WakeUp(match rng.range(0, 2) {
            0 => WakeUp::Notification,
            1 => WakeUp::NoMoreInformation,
            _ => WakeUp::IntervalGet,
        }),
        29 => Cc::WakeUp(WakeUp::IntervalCapabilitiesReport {
            min_seconds: rng.range(0, 0xFF_FFFF),
            max_seconds: rng.range(0, 0xFF_FFFF),
            default_seconds: rng.range(0, 0xFF_FFFF),
            step_seconds: rng.range(0, 0xFF_FFFF),
            on_demand: rng.maybe(|r| r.bool()),
        }),
        30 => Cc::WakeUp(WakeUp::IntervalSet {
            seconds: rng.range(0, 0xFF_FFFF),
            node_id: rng.byte_in(1, 232),
        }),
        31 => Cc::ManufacturerSpecific(ManufacturerSpecific::Report {
            manufacturer_id: rng.u16(),
            product_type: rng.u16(),
            product_id: rng.u16(),
        }),
        32 => {
            // More firmware targets need the v2 hardware version before them.
            let hardware = rng.maybe(|r| r.u8());
            let targets = if hardware.is_some() {
                rng.range(1, 3)
            } else {
                1
            };
            Cc::Version(Version::Report {
                library_type: rng.byte_in(1, 11),
                protocol: (rng.u8(), rng.u8()),
                firmware: (0..targets).map(|_| (rng.u8(), rng.u8())).collect(),
                hardware,
            })
        }
        33 => Cc::Version(Version::CommandClassReport {
            cc: rng.byte_in(0x20, 0xEE),
            version: rng.byte_in(0, 12),
        }),
        34 => Cc::ZwavePlusInfo(ZwavePlusInfo::Report {
            version: rng.byte_in(1, 2),
            role_type: rng.byte_in(0, 7),
            node_type: rng.pick(&[0, 2]),
            installer_icon: rng.u16(),
            user_icon: rng.u16(),
        }),
        35 => {
            let size = rng.pick(&[1u8, 2, 4]);
            Cc::Configuration(Configuration::Report {
                parameter: rng.u8(),
                size,
                value: scaled_raw(rng, size),
            })
        }
        36 => {
            let size = rng.pick(&[1u8, 2, 4]);
            Cc::Configuration(Configuration::Set {
                parameter: rng.u8(),
                reset_to_default: rng.range(0, 4) == 0,
                size,
                value: scaled_raw(rng, size),
            })
        }
        37 => Cc::Association(Association::Report {
            group: rng.byte_in(1, 5),
            max_nodes: rng.byte_in(1, 10),
            reports_to_follow: rng.byte_in(0, 2),
            node_ids: (0..rng.range(0, 5)).map(|_| rng.byte_in(1, 232)).collect(),
        }),
        38 => Cc::Association(Association::Set {
            group: rng.byte_in(1, 5),
            node_ids: (0..rng.range(1, 5)).map(|_| rng.byte_in(1, 232)).collect(),
        }),
        39 => {
            let status = SupervisionStatus::from_byte(rng.pick(&[0x00, 0x01, 0x02, 0xFF]));
            Cc::Supervision(Supervision::Report {
                more_updates_follow: rng.bool(),
                wake_up_request: rng.bool(),
                session_id: rng.byte_in(0, 63),
                status,
                duration: rng.byte_in(0, 0xFE),
            })
        }
        40 => {
            // Encapsulated (encrypted) frames: S0 MessageEncapsulation (with nonce get), S2
            // MessageEncapsulation.
            let n = rng.range(10, 30) as usize;
            let (scheme, command) = if rng.bool() {
                (SecurityScheme::S0, rng.pick(&[0x81, 0xC1]))
            } else {
                (SecurityScheme::S2, 0x03)
            };
            Cc::Secure(Secure::new(scheme, command, rng.bytes(n)))
        }
        41 => Cc::Unknown(RawCc {
            // Classes neither side types: Door Lock, Thermostat Mode, Central Scene, Clock.
            cc_id: rng.pick(&[0x62, 0x40, 0x5B, 0x81]),
            command: Some(rng.byte_in(0xE0, 0xFE)),
            payload: {
                let n = rng.range(0, 6) as usize;
                rng.bytes(n)
            },
        }),
        42 => Cc::Supervision(Supervision::Get {
            status_updates: rng.bool(),
            session_id: rng.byte_in(0, 63),
            encapsulated: Box::new(random_cc_depth(rng, depth + 1)),
        }),
        _ => Cc::MultiChannel(MultiChannel::Encapsulation {
            source_endpoint: rng.byte_in(1, 10),
            destination: rng.pick(&[0, 1, 2, 0x81, 0x83]),
            encapsulated: Box::new(random_cc_depth(rng, depth + 1)),
        }),
    }
}

fn scaled_raw(rng: &mut Rng, size: u8) -> i32 {
    match size {
        1 => i32::from(rng.u8() as i8),
        2 => i32::from(rng.u16() as i16),
        _ => rng.u64() as i32,
    }
}
