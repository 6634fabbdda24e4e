//! Deterministic sample frames for differential tests against other implementations
//! (zigbee-herdsman) and for the codec benchmark: the reference vectors plus generated
//! frames of the kinds a coordinator host decodes most (reports, read responses, confirms,
//! joins), and ([`breadth`]) frames that cover every ZCL data type, AF_INCOMING_MSG_EXT,
//! AF_DATA_RETRIEVE and Green Power. Same seed, same frames. Test support only (behind the
//! `emulator` feature).

mod breadth;

pub use breadth::{generate_every_type, generate_ext, generate_green_power, EVERY_DATA_TYPE};

use crate::zcl::{
    global, AttributeRecord, Direction, ReadAttributeStatus, ZclCommand, ZclFrame, ZclHeader,
    ZclValue,
};
use crate::znp::{AfDataRequest, AfIncomingMsg, MacCapabilities};
use crate::{IeeeAddr, ZnpCommand};

/// One sample: a whole MT frame, or a bare ZCL frame with its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    Mt(Vec<u8>),
    Zcl { cluster: u16, bytes: Vec<u8> },
}

/// The byte vectors of `reference/zigbee.md` (sources named there: ZH tests and captures from
/// zigbee2mqtt issues, each decoded by ZH 11.1.1).
pub fn reference_vectors() -> Vec<Sample> {
    let mt = |b: &[u8]| Sample::Mt(b.to_vec());
    let zcl = |cluster: u16, b: &[u8]| Sample::Zcl {
        cluster,
        bytes: b.to_vec(),
    };
    vec![
        mt(&[0xFE, 0x02, 0x61, 0x01, 0x11, 0x00, 0x73]),
        mt(&[
            0xFE, 0x0E, 0x61, 0x02, 0x02, 0x00, 0x02, 0x06, 0x03, 0xD9, 0x14, 0x34, 0x01, 0x02,
            0x00, 0x00, 0x00, 0x00, 0x92,
        ]),
        mt(&[
            0xFE, 0x06, 0x41, 0x80, 0x00, 0x02, 0x01, 0x02, 0x07, 0x01, 0xC0,
        ]),
        mt(&[
            0xFE, 0x0F, 0x24, 0x01, 0x63, 0xFA, 0x01, 0x01, 0x00, 0xEF, 0xC8, 0x00, 0x1E, 0x05,
            0x18, 0x9D, 0x0B, 0x02, 0x00, 0x03,
        ]),
        mt(&[0xFE, 0x03, 0x44, 0x80, 0x00, 0x01, 0x07, 0xC1]),
        zcl(0x0406, &[0x18, 0xA9, 0x0A, 0x00, 0x00, 0x18, 0x01]),
        zcl(0x0402, &[0x18, 0x10, 0x0A, 0x00, 0x00, 0x29, 0x66, 0x08]),
        zcl(0x0402, &[0x10, 0x05, 0x00, 0x00, 0x00]),
    ]
}

/// xorshift64*: small, deterministic, good enough to vary fields.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn u8(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }
    fn u16(&mut self) -> u16 {
        (self.next() >> 24) as u16
    }
}

/// A random attribute value of a type every implementation decodes the same way.
fn value(rng: &mut Rng) -> ZclValue {
    match rng.below(11) {
        0 => ZclValue::Bool(Some(rng.below(2) == 1)),
        1 => ZclValue::Uint {
            width: 1,
            value: rng.below(255),
        },
        2 => ZclValue::Uint {
            width: 2,
            value: rng.below(65_535),
        },
        3 => ZclValue::Uint {
            width: 3,
            value: rng.below(0xFF_FFFF),
        },
        4 => ZclValue::Uint {
            width: 4,
            value: rng.below(0xFFFF_FFFF),
        },
        5 => ZclValue::Int {
            width: 2,
            value: rng.below(60_000) as i64 - 30_000,
        },
        6 => ZclValue::Int {
            width: 1,
            value: rng.below(200) as i64 - 100,
        },
        7 => ZclValue::Enum8(rng.u8() % 0xFE),
        8 => ZclValue::Bitmap {
            width: 1,
            value: u64::from(rng.u8()),
        },
        9 => {
            let n = rng.below(12) as usize;
            let s: String = (0..n)
                .map(|_| char::from(b'a' + (rng.below(26) as u8)))
                .collect();
            ZclValue::char_str(&s)
        }
        _ => ZclValue::Bitmap {
            width: 2,
            value: u64::from(rng.u16()),
        },
    }
}

const CLUSTERS: [u16; 9] = [
    0x0000, 0x0001, 0x0006, 0x0008, 0x0402, 0x0405, 0x0406, 0x0702, 0x0B04,
];

fn zcl_frame(rng: &mut Rng) -> (u16, ZclFrame) {
    let cluster = CLUSTERS[rng.below(CLUSTERS.len() as u64) as usize];
    let tsn = rng.u8();
    let n = 1 + rng.below(4) as usize;
    let attr = |rng: &mut Rng| rng.below(0x0600) as u16;
    let (cmd_id, command) = match rng.below(4) {
        0 => (
            global::REPORT_ATTRIBUTES,
            ZclCommand::ReportAttributes {
                records: (0..n)
                    .map(|_| AttributeRecord {
                        attribute_id: attr(rng),
                        value: value(rng),
                    })
                    .collect(),
            },
        ),
        1 => (
            global::READ_ATTRIBUTES_RSP,
            ZclCommand::ReadAttributesRsp {
                records: (0..n)
                    .map(|_| {
                        if rng.below(5) == 0 {
                            ReadAttributeStatus {
                                attribute_id: attr(rng),
                                status: 0x86,
                                value: None,
                            }
                        } else {
                            ReadAttributeStatus {
                                attribute_id: attr(rng),
                                status: 0,
                                value: Some(value(rng)),
                            }
                        }
                    })
                    .collect(),
            },
        ),
        2 => (
            global::DEFAULT_RSP,
            ZclCommand::DefaultRsp {
                command_id: rng.u8() % 0x10,
                status: if rng.below(2) == 0 { 0 } else { 0x81 },
            },
        ),
        _ => (
            global::READ_ATTRIBUTES,
            ZclCommand::ReadAttributes {
                attribute_ids: (0..n).map(|_| attr(rng)).collect(),
            },
        ),
    };
    let direction = if cmd_id == global::READ_ATTRIBUTES {
        Direction::ClientToServer
    } else {
        Direction::ServerToClient
    };
    (
        cluster,
        ZclFrame {
            header: ZclHeader::global(direction, rng.below(2) == 0, tsn, cmd_id),
            command,
        },
    )
}

/// `count` generated samples from `seed`: about half AF_INCOMING_MSG carrying ZCL, the rest
/// other MT indications/responses and bare ZCL frames.
pub fn generate(seed: u64, count: usize) -> Vec<Sample> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let kind = rng.below(10);
        let sample = if kind < 5 {
            let (cluster, frame) = zcl_frame(&mut rng);
            let Ok(data) = frame.encode() else { continue };
            let cmd = ZnpCommand::AfIncomingMsg(AfIncomingMsg {
                group_id: 0,
                cluster_id: cluster,
                src_addr: rng.u16(),
                src_endpoint: 1 + rng.u8() % 240,
                dst_endpoint: 1,
                was_broadcast: false,
                link_quality: rng.u8(),
                security_use: false,
                timestamp: rng.next() as u32,
                trans_seq_num: rng.u8(),
                data,
                mac_src_addr: Some(rng.u16()),
                msg_result_radius: Some(rng.u8()),
            });
            cmd.to_bytes().ok().map(Sample::Mt)
        } else if kind < 7 {
            let (cluster, frame) = zcl_frame(&mut rng);
            frame
                .encode()
                .ok()
                .map(|bytes| Sample::Zcl { cluster, bytes })
        } else {
            let cmd = match rng.below(6) {
                0 => ZnpCommand::AfDataConfirm {
                    status: if rng.below(4) == 0 { 0xE9 } else { 0 },
                    endpoint: 1,
                    trans_id: rng.u8(),
                },
                1 => ZnpCommand::ZdoTcDevInd {
                    nwk_addr: rng.u16(),
                    ieee: IeeeAddr(rng.next()),
                    parent_addr: rng.u16(),
                },
                2 => ZnpCommand::ZdoEndDeviceAnnceInd {
                    src_addr: rng.u16(),
                    nwk_addr: rng.u16(),
                    ieee: IeeeAddr(rng.next()),
                    capabilities: MacCapabilities(rng.u8()),
                },
                3 => ZnpCommand::ZdoLeaveInd {
                    src_addr: rng.u16(),
                    ieee: IeeeAddr(rng.next()),
                    request: rng.below(2) == 0,
                    remove_children: rng.below(2) == 0,
                    rejoin: rng.below(2) == 0,
                },
                4 => ZnpCommand::ZdoStateChangeInd {
                    state: rng.u8() % 10,
                },
                _ => {
                    let (cluster, frame) = zcl_frame(&mut rng);
                    ZnpCommand::AfDataRequestReq(AfDataRequest {
                        dst_addr: rng.u16(),
                        dst_endpoint: 1,
                        src_endpoint: 1,
                        cluster_id: cluster,
                        trans_id: rng.u8(),
                        options: 0,
                        radius: 30,
                        data: frame.encode().unwrap_or_default(),
                    })
                }
            };
            cmd.to_bytes().ok().map(Sample::Mt)
        };
        out.extend(sample);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_and_decode() {
        let a = generate(7, 500);
        assert_eq!(a, generate(7, 500));
        for s in a.iter().chain(reference_vectors().iter()) {
            match s {
                Sample::Mt(b) => {
                    let f = crate::MtFrame::from_bytes(b).unwrap();
                    ZnpCommand::decode(&f).unwrap();
                }
                Sample::Zcl { cluster, bytes } => {
                    ZclFrame::decode(*cluster, bytes).unwrap();
                }
            }
        }
    }
}
