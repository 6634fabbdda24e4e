//! Generated frames that cover the codec's breadth rather than a host's daily mix (that is
//! [`super::generate`], which the benchmark uses): ZCL global commands carrying every ZCL
//! data type, floats at NaN and ±Infinity included; AF_INCOMING_MSG_EXT in its three forms
//! and AF_DATA_RETRIEVE both ways; Green Power notifications. Same seed, same frames.

use super::{Rng, Sample, CLUSTERS};
use crate::zcl::green_power::{self, GpNotification, GpdId};
use crate::zcl::{
    global, AttributeRecord, DataType, Direction, ReadAttributeStatus, ReportingConfig, ZclBytes,
    ZclCommand, ZclFrame, ZclHeader, ZclValue,
};
use crate::znp::{
    AfIncomingMsg, AfIncomingMsgExt, AF_ADDR_MODE_16BIT, AF_ADDR_MODE_64BIT, AF_STATUS_FAILED,
    DATA_RETRIEVE_CHUNK, MAX_INLINE_PAYLOAD,
};
use crate::ZnpCommand;

/// Every data type id the ZCL defines (its Data Types table; ZH `enums.ts DataType`).
pub const EVERY_DATA_TYPE: [u8; 56] = [
    0x00, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D,
    0x1E, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D,
    0x2E, 0x2F, 0x30, 0x31, 0x38, 0x39, 0x3A, 0x41, 0x42, 0x43, 0x44, 0x48, 0x4C, 0x50, 0x51, 0xE0,
    0xE1, 0xE2, 0xE8, 0xE9, 0xEA, 0xF0, 0xF1, 0xFF,
];

/// Types an array, set, bag or struct holds here (no nesting below one level).
const ELEMENT_TYPES: [u8; 12] = [
    0x10, 0x18, 0x20, 0x21, 0x27, 0x29, 0x2F, 0x30, 0x39, 0x42, 0xE2, 0xF0,
];

fn pick<T: Copy>(rng: &mut Rng, from: &[T]) -> T {
    from[rng.below(from.len() as u64) as usize]
}

/// A width-byte unsigned value: often an edge (0, all ones), otherwise random.
fn unsigned(rng: &mut Rng, width: u8) -> u64 {
    let max = u64::MAX >> (64 - 8 * u32::from(width));
    match rng.below(6) {
        0 => 0,
        1 => max,
        _ => rng.next() & max,
    }
}

fn signed(rng: &mut Rng, width: u8) -> i64 {
    let shift = 64 - 8 * u32::from(width);
    match rng.below(6) {
        0 => i64::MIN >> shift,
        1 => i64::MAX >> shift,
        _ => ((rng.next() << shift) as i64) >> shift,
    }
}

fn single(rng: &mut Rng) -> f32 {
    match rng.below(9) {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => f32::NEG_INFINITY,
        3 => -0.0,
        4 => f32::from_bits(1), // the smallest subnormal
        5 => f32::MAX,
        _ => (rng.below(2_000_000) as f32 - 1_000_000.0) / 64.0,
    }
}

fn double(rng: &mut Rng) -> f64 {
    match rng.below(9) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => -0.0,
        4 => f64::from_bits(1),
        5 => f64::MIN,
        _ => (rng.below(2_000_000_000) as f64 - 1e9) / 1024.0,
    }
}

fn text(rng: &mut Rng) -> ZclBytes {
    const PIECES: [&str; 8] = ["a", "Z", "0", " ", "é", "温", "🌡", "_"];
    let n = rng.below(12) as usize;
    let s: String = (0..n).map(|_| pick(rng, &PIECES)).collect();
    ZclBytes(s.into_bytes())
}

fn octets(rng: &mut Rng, max: u64) -> ZclBytes {
    let n = rng.below(max) as usize;
    ZclBytes((0..n).map(|_| rng.u8()).collect())
}

/// A byte of a time of day or date: `from` + a value below `below`, or the "not specified"
/// 0xFF.
fn time_byte(rng: &mut Rng, from: u8, below: u64) -> u8 {
    if rng.below(5) == 0 {
        0xFF
    } else {
        from + rng.below(below) as u8
    }
}

/// A value of type `dt`, of a shape both sides can read back; `depth` 1 and more keeps
/// arrays and structs from nesting further.
fn value_of(rng: &mut Rng, dt: u8, depth: u8) -> ZclValue {
    let composite = |rng: &mut Rng| -> (DataType, Vec<ZclValue>) {
        let element = pick(rng, &ELEMENT_TYPES);
        let n = rng.below(4);
        let elements = (0..n).map(|_| value_of(rng, element, depth + 1)).collect();
        (DataType(element), elements)
    };
    match dt {
        0x08..=0x0F => {
            let n = dt - 0x07;
            ZclValue::Data((0..n).map(|_| rng.u8()).collect())
        }
        0x10 => ZclValue::Bool(match rng.below(3) {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }),
        0x18..=0x1F => {
            let width = dt - 0x17;
            ZclValue::Bitmap {
                width,
                value: unsigned(rng, width),
            }
        }
        0x20..=0x27 => {
            let width = dt - 0x1F;
            ZclValue::Uint {
                width,
                value: unsigned(rng, width),
            }
        }
        0x28..=0x2F => {
            let width = dt - 0x27;
            ZclValue::Int {
                width,
                value: signed(rng, width),
            }
        }
        0x30 => ZclValue::Enum8(rng.u8()),
        0x31 => ZclValue::Enum16(rng.u16()),
        0x38 => ZclValue::SemiFloat(match rng.below(5) {
            0 => 0x7C00, // +Infinity
            1 => 0xFC00, // -Infinity
            2 => 0x7E00, // NaN
            _ => rng.u16(),
        }),
        0x39 => ZclValue::Single(single(rng)),
        0x3A => ZclValue::Double(double(rng)),
        0x41 => ZclValue::OctetString((rng.below(6) != 0).then(|| octets(rng, 16))),
        0x42 => ZclValue::CharString((rng.below(6) != 0).then(|| text(rng))),
        0x43 => ZclValue::LongOctetString((rng.below(6) != 0).then(|| octets(rng, 24))),
        0x44 => ZclValue::LongCharString((rng.below(6) != 0).then(|| text(rng))),
        0x48 | 0x50 | 0x51 if depth == 0 => {
            let (element_type, elements) = composite(rng);
            match dt {
                0x48 => ZclValue::Array {
                    element_type,
                    elements,
                },
                0x50 => ZclValue::Set {
                    element_type,
                    elements,
                },
                _ => ZclValue::Bag {
                    element_type,
                    elements,
                },
            }
        }
        0x4C if depth == 0 => ZclValue::Struct(
            (0..rng.below(4))
                .map(|_| {
                    let t = pick(rng, &ELEMENT_TYPES);
                    value_of(rng, t, depth + 1)
                })
                .collect(),
        ),
        0xE0 => ZclValue::TimeOfDay([
            time_byte(rng, 0, 24),
            time_byte(rng, 0, 60),
            time_byte(rng, 0, 60),
            time_byte(rng, 0, 100),
        ]),
        0xE1 => ZclValue::Date([
            time_byte(rng, 0, 200),
            time_byte(rng, 1, 12),
            time_byte(rng, 1, 31),
            time_byte(rng, 1, 7),
        ]),
        0xE2 => ZclValue::Utc(rng.next() as u32),
        0xE8 => ZclValue::ClusterId(rng.u16()),
        0xE9 => ZclValue::AttrId(rng.u16()),
        0xEA => ZclValue::BacOid(rng.next() as u32),
        0xF0 => ZclValue::IeeeAddr(crate::IeeeAddr(rng.next())),
        0xF1 => {
            let mut key = [0u8; 16];
            key.iter_mut().for_each(|b| *b = rng.u8());
            ZclValue::SecKey(key)
        }
        0xFF => ZclValue::Unknown,
        // No data, and composites below the top level.
        _ => ZclValue::NoData,
    }
}

/// A global command frame whose first record has type `first` and the rest random types.
fn every_type_frame(rng: &mut Rng, first: u8) -> (u16, ZclFrame) {
    let cluster = pick(rng, &CLUSTERS);
    let n = 1 + rng.below(4) as usize;
    let types: Vec<u8> = std::iter::once(first)
        .chain((1..n).map(|_| pick(rng, &EVERY_DATA_TYPE)))
        .collect();
    let attr = |rng: &mut Rng| rng.below(0x0600) as u16;
    let (direction, cmd_id, command) = match rng.below(4) {
        0 => (
            Direction::ServerToClient,
            global::REPORT_ATTRIBUTES,
            ZclCommand::ReportAttributes {
                records: types
                    .iter()
                    .map(|t| AttributeRecord {
                        attribute_id: attr(rng),
                        value: value_of(rng, *t, 0),
                    })
                    .collect(),
            },
        ),
        1 => (
            Direction::ServerToClient,
            global::READ_ATTRIBUTES_RSP,
            ZclCommand::ReadAttributesRsp {
                records: types
                    .iter()
                    .map(|t| ReadAttributeStatus {
                        attribute_id: attr(rng),
                        status: 0,
                        value: Some(value_of(rng, *t, 0)),
                    })
                    .collect(),
            },
        ),
        2 => (
            Direction::ClientToServer,
            global::WRITE_ATTRIBUTES,
            ZclCommand::WriteAttributes {
                records: types
                    .iter()
                    .map(|t| AttributeRecord {
                        attribute_id: attr(rng),
                        value: value_of(rng, *t, 0),
                    })
                    .collect(),
            },
        ),
        _ => (
            Direction::ClientToServer,
            global::CONFIGURE_REPORTING,
            ZclCommand::ConfigureReporting {
                records: types
                    .iter()
                    .map(|t| {
                        let data_type = DataType(*t);
                        if rng.below(5) == 0 {
                            return ReportingConfig::Receive {
                                attribute_id: attr(rng),
                                timeout: rng.u16(),
                            };
                        }
                        ReportingConfig::Send {
                            attribute_id: attr(rng),
                            data_type,
                            min_interval: rng.u16(),
                            max_interval: rng.u16(),
                            reportable_change: data_type.is_analog().then(|| value_of(rng, *t, 0)),
                        }
                    })
                    .collect(),
            },
        ),
    };
    (
        cluster,
        ZclFrame {
            header: ZclHeader::global(direction, rng.below(2) == 0, rng.u8(), cmd_id),
            command,
        },
    )
}

fn incoming(cluster_id: u16, data: Vec<u8>, rng: &mut Rng) -> AfIncomingMsg {
    AfIncomingMsg {
        group_id: 0,
        cluster_id,
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
    }
}

/// `count` ZCL frames cycling through [`EVERY_DATA_TYPE`] (each frame's first record, the
/// others random): global reports, read responses, writes and configure-reporting, bare or
/// inside AF_INCOMING_MSG when they fit.
pub fn generate_every_type(seed: u64, count: usize) -> Vec<Sample> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(count);
    let mut i = 0;
    while out.len() < count {
        let first = EVERY_DATA_TYPE[i % EVERY_DATA_TYPE.len()];
        i += 1;
        let (cluster, frame) = every_type_frame(&mut rng, first);
        let Ok(bytes) = frame.encode() else { continue };
        if rng.below(2) == 0 && bytes.len() <= MAX_INLINE_PAYLOAD {
            let msg = ZnpCommand::AfIncomingMsg(incoming(cluster, bytes, &mut rng));
            out.extend(msg.to_bytes().ok().map(Sample::Mt));
        } else {
            out.push(Sample::Zcl { cluster, bytes });
        }
    }
    out
}

/// `count` AF_INCOMING_MSG_EXT frames in Z-Stack's three forms (payload held back; IEEE
/// source with the payload inline; another PAN's 16-bit source with the payload inline),
/// and AF_DATA_RETRIEVE requests and answers.
pub fn generate_ext(seed: u64, count: usize) -> Vec<Sample> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let kind = rng.below(10);
        let cmd = if kind < 7 {
            let (cluster, frame) = super::zcl_frame(&mut rng);
            let Ok(zcl) = frame.encode() else { continue };
            let base = incoming(cluster, Vec::new(), &mut rng);
            let (mode, addr, pan, len, data) = match kind {
                0..=2 => (
                    AF_ADDR_MODE_16BIT,
                    u64::from(base.src_addr),
                    0,
                    (MAX_INLINE_PAYLOAD as u64 + 1 + rng.below(1500)) as u16,
                    Vec::new(),
                ),
                3..=5 => (AF_ADDR_MODE_64BIT, rng.next(), 0, zcl.len() as u16, zcl),
                _ => (
                    AF_ADDR_MODE_16BIT,
                    u64::from(base.src_addr),
                    rng.u16(),
                    zcl.len() as u16,
                    zcl,
                ),
            };
            ZnpCommand::AfIncomingMsgExt(AfIncomingMsgExt {
                group_id: base.group_id,
                cluster_id: base.cluster_id,
                src_addr_mode: mode,
                src_addr: addr,
                src_endpoint: base.src_endpoint,
                src_pan_id: pan,
                dst_endpoint: base.dst_endpoint,
                was_broadcast: rng.below(4) == 0,
                link_quality: base.link_quality,
                security_use: rng.below(2) == 0,
                timestamp: base.timestamp,
                trans_seq_num: base.trans_seq_num,
                len,
                data,
                mac_src_addr: base.mac_src_addr,
                msg_result_radius: base.msg_result_radius,
            })
        } else if kind == 7 {
            ZnpCommand::AfDataRetrieveReq {
                timestamp: rng.next() as u32,
                index: rng.u16() % 1500,
                length: if rng.below(4) == 0 {
                    0
                } else {
                    1 + rng.u8() % DATA_RETRIEVE_CHUNK
                },
            }
        } else if kind == 8 {
            let n = rng.below(u64::from(DATA_RETRIEVE_CHUNK) + 1) as usize;
            ZnpCommand::AfDataRetrieveRsp {
                status: 0,
                data: (0..n).map(|_| rng.u8()).collect(),
            }
        } else {
            ZnpCommand::AfDataRetrieveRsp {
                status: AF_STATUS_FAILED,
                data: Vec::new(),
            }
        };
        out.extend(cmd.to_bytes().ok().map(Sample::Mt));
    }
    out
}

/// GPD command ids whose payload zigbee-herdsman keeps as bytes (it parses 0xA0–0xA5, 0xE0
/// and 0xE3 into fields of their own).
const GPD_COMMANDS: [u8; 10] = [0x00, 0x10, 0x13, 0x20, 0x21, 0x22, 0x34, 0x40, 0x69, 0xF0];

/// `count` GP Notifications and GP Commissioning Notifications (GPD by source id or IEEE
/// address, with and without proxy info and a failed MIC), bare or inside AF_INCOMING_MSG
/// to the GP endpoint. `with_unparsed_payloads` also makes the frames whose payload
/// zigbee-herdsman leaves unread (security level 3, or security processing failed).
pub fn generate_green_power(seed: u64, count: usize, with_unparsed_payloads: bool) -> Vec<Sample> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let commissioning = rng.below(2) == 0;
        let app_id: u16 = if rng.below(3) == 0 { 2 } else { 0 };
        let (proxy_bit, mic_bit, level_mask) = if commissioning {
            (0x0800, 0x0200, 0x0030)
        } else {
            (0x4000, 0, 0x00C0)
        };
        let mut options = (rng.u16() & !0x0007) | app_id;
        if !with_unparsed_payloads {
            if options & level_mask == level_mask {
                options &= !level_mask;
            }
            options &= !mic_bit;
        }
        let gpd = if app_id == 2 {
            GpdId::Ieee {
                ieee: crate::IeeeAddr(rng.next()),
                endpoint: rng.u8(),
            }
        } else {
            GpdId::SrcId {
                src_id: rng.next() as u32,
            }
        };
        let n = rng.below(12) as usize;
        let notification = GpNotification {
            options,
            gpd,
            frame_counter: rng.next() as u32,
            command_id: pick(&mut rng, &GPD_COMMANDS),
            payload: (0..n).map(|_| rng.u8()).collect(),
            proxy: (options & proxy_bit != 0).then(|| (rng.u16(), rng.u8())),
            mic: (mic_bit != 0 && options & mic_bit != 0).then(|| rng.next() as u32),
        };
        let (cmd_id, command) = if commissioning {
            (
                green_power::COMMISSIONING_NOTIFICATION,
                ZclCommand::GreenPowerCommissioningNotification(notification),
            )
        } else {
            (
                green_power::NOTIFICATION,
                ZclCommand::GreenPowerNotification(notification),
            )
        };
        let frame = ZclFrame {
            header: ZclHeader::cluster(Direction::ClientToServer, true, rng.u8(), cmd_id),
            command,
        };
        let Ok(bytes) = frame.encode() else { continue };
        if rng.below(2) == 0 {
            let mut msg = incoming(green_power::CLUSTER, bytes, &mut rng);
            msg.group_id = green_power::GP_GROUP_ID;
            msg.src_endpoint = green_power::ENDPOINT;
            msg.dst_endpoint = green_power::ENDPOINT;
            out.extend(
                ZnpCommand::AfIncomingMsg(msg)
                    .to_bytes()
                    .ok()
                    .map(Sample::Mt),
            );
        } else {
            out.push(Sample::Zcl {
                cluster: green_power::CLUSTER,
                bytes,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zcl_of(s: &Sample) -> Option<(u16, Vec<u8>)> {
        match s {
            Sample::Zcl { cluster, bytes } => Some((*cluster, bytes.clone())),
            Sample::Mt(b) => match ZnpCommand::decode(&crate::MtFrame::from_bytes(b).ok()?) {
                Ok(ZnpCommand::AfIncomingMsg(m)) => Some((m.cluster_id, m.data)),
                _ => None,
            },
        }
    }

    #[test]
    fn every_data_type_appears_and_every_frame_decodes_to_itself() {
        let set = generate_every_type(3, 600);
        assert_eq!(set, generate_every_type(3, 600));
        let mut seen = std::collections::BTreeSet::new();
        let (mut nan, mut infinite) = (0, 0);
        for s in &set {
            let (cluster, bytes) = zcl_of(s).expect("ZCL in every sample");
            let f = ZclFrame::decode(cluster, &bytes).unwrap();
            assert_eq!(f.encode().unwrap(), bytes, "{f:?}");
            for (_, v) in f.attribute_values() {
                seen.insert(v.data_type().0);
                match v.as_f64() {
                    Some(x) if x.is_nan() => nan += 1,
                    Some(x) if x.is_infinite() => infinite += 1,
                    _ => {}
                }
            }
        }
        for t in EVERY_DATA_TYPE {
            assert!(seen.contains(&t), "type {t:#04x} never generated");
        }
        assert!(nan > 5 && infinite > 5, "{nan} NaN, {infinite} infinite");
    }

    #[test]
    fn ext_samples_cover_the_three_forms_and_retrieve_both_ways() {
        let set = generate_ext(5, 400);
        let (mut held, mut ieee, mut inter_pan, mut req, mut rsp) = (0, 0, 0, 0, 0);
        for s in &set {
            let Sample::Mt(b) = s else { panic!("MT only") };
            match ZnpCommand::decode(&crate::MtFrame::from_bytes(b).unwrap()).unwrap() {
                ZnpCommand::AfIncomingMsgExt(m) if !m.is_complete() => held += 1,
                ZnpCommand::AfIncomingMsgExt(m) if m.src_ieee().is_some() => ieee += 1,
                ZnpCommand::AfIncomingMsgExt(_) => inter_pan += 1,
                ZnpCommand::AfDataRetrieveReq { .. } => req += 1,
                ZnpCommand::AfDataRetrieveRsp { .. } => rsp += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(held > 50 && ieee > 50 && inter_pan > 10 && req > 10 && rsp > 10);
    }

    #[test]
    fn green_power_samples_decode_to_themselves() {
        for s in generate_green_power(9, 300, true) {
            let (cluster, bytes) = zcl_of(&s).unwrap();
            let f = ZclFrame::decode(cluster, &bytes).unwrap();
            assert!(matches!(
                f.command,
                ZclCommand::GreenPowerNotification(_)
                    | ZclCommand::GreenPowerCommissioningNotification(_)
            ));
            assert_eq!(f.encode().unwrap(), bytes);
        }
    }
}
