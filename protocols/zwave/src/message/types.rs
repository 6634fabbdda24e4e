//! Structures shared by several Serial API messages: node protocol info, node information
//! frames (NIF), command class lists, transmit status and the SendData TX report.

use crate::error::{Error, Result};
use crate::macros::byte_enum;
use crate::wire::Reader;
use serde::Serialize;

/// First byte of an extended (two-byte) command class id (zwave-js `NodeInfo.ts`
/// `isExtendedCCId`).
pub const EXTENDED_CC_START: u8 = 0xF1;
/// Separates supported from controlled command classes in a NIF ("Support/Control Mark").
pub const SUPPORT_CONTROL_MARK: u16 = 0xEF;

/// Supported and controlled command classes of a node or endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct CcList {
    pub supported: Vec<u16>,
    pub controlled: Vec<u16>,
}

impl CcList {
    /// Parses a CC list (zwave-js `NodeInfo.ts` `parseCCList`): ids of 0xF1 and up take two
    /// bytes, and 0xEF switches from supported to controlled.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "command class list");
        let mut list = Self::default();
        let mut after_mark = false;
        while !r.is_empty() {
            let first = r.u8()?;
            let id = if first >= EXTENDED_CC_START {
                u16::from_be_bytes([first, r.u8()?])
            } else {
                u16::from(first)
            };
            if id == SUPPORT_CONTROL_MARK {
                after_mark = true;
            } else if after_mark {
                list.controlled.push(id);
            } else {
                list.supported.push(id);
            }
        }
        Ok(list)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        fn put(out: &mut Vec<u8>, id: u16) {
            if id >= u16::from(EXTENDED_CC_START) {
                out.extend_from_slice(&id.to_be_bytes());
            } else {
                out.push(id as u8);
            }
        }
        for &id in &self.supported {
            put(out, id);
        }
        if !self.controlled.is_empty() {
            out.push(SUPPORT_CONTROL_MARK as u8);
            for &id in &self.controlled {
                put(out, id);
            }
        }
    }

    pub fn encoded_len(&self) -> usize {
        let len = |ids: &[u16]| {
            ids.iter()
                .map(|&i| {
                    if i >= u16::from(EXTENDED_CC_START) {
                        2
                    } else {
                        1
                    }
                })
                .sum::<usize>()
        };
        len(&self.supported) + len(&self.controlled) + usize::from(!self.controlled.is_empty())
    }
}

/// Basic, generic and specific device class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct DeviceClass {
    pub basic: u8,
    pub generic: u8,
    pub specific: u8,
}

/// A node information frame as carried by ApplicationUpdate (0x49) and the AddNode /
/// RemoveNode callbacks: `nodeId, len, basic, generic, specific, CCs…` (zwave-js
/// `parseNodeUpdatePayload`). Controllers send `len = 0` and no classes while the NIF is
/// not known yet, hence the `Option`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct NodeInfo {
    pub node_id: u8,
    pub device_class: Option<DeviceClass>,
    pub command_classes: CcList,
}

impl NodeInfo {
    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Self> {
        let node_id = r.u8()?;
        let len = usize::from(r.u8()?);
        let body = r.take(len)?;
        if body.len() < 3 {
            return Ok(Self {
                node_id,
                device_class: None,
                command_classes: CcList::default(),
            });
        }
        Ok(Self {
            node_id,
            device_class: Some(DeviceClass {
                basic: body[0],
                generic: body[1],
                specific: body[2],
            }),
            command_classes: CcList::parse(&body[3..])?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.push(self.node_id);
        match self.device_class {
            None => out.push(0),
            Some(dc) => {
                let len = 3 + self.command_classes.encoded_len();
                let len = u8::try_from(len).map_err(|_| Error::TooLong {
                    what: "node information frame",
                    len,
                    max: 255,
                })?;
                out.extend_from_slice(&[len, dc.basic, dc.generic, dc.specific]);
                self.command_classes.encode(out);
            }
        }
        Ok(())
    }
}

/// FLiRS wake-up beam interval of a frequently listening node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flirs {
    Ms250,
    Ms1000,
}

/// The answer to GetNodeProtocolInfo (0x41): three capability bytes and the device class
/// (zwave-js `core/src/definitions/NodeInfo.ts` `parseNodeProtocolInfo`). The bytes are kept
/// as sent; the methods read the bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct NodeProtocolInfo {
    /// bit7 listening, bit6 routing, bits 4-3 speed (40k / 9.6k), bits 2-0 protocol version.
    pub capability: u8,
    /// bit7 optional functionality, bits 6-5 FLiRS 1000/250 ms, bit4 beaming, bit3 end node,
    /// bit2 specific device class present, bit1 controller, bit0 security.
    pub security: u8,
    /// bit0 100 kbit/s (bit1 for Long Range nodes).
    pub reserved: u8,
    /// `specific` is 0 when bit2 of `security` says it is absent.
    pub device_class: DeviceClass,
}

impl NodeProtocolInfo {
    pub fn is_listening(&self) -> bool {
        self.capability & 0x80 != 0
    }
    pub fn is_routing(&self) -> bool {
        self.capability & 0x40 != 0
    }
    pub fn protocol_version(&self) -> u8 {
        self.capability & 0x07
    }
    /// Supported data rates in bit/s, as zwave-js lists them (9600 when none is flagged).
    pub fn data_rates(&self) -> Vec<u32> {
        let mut rates = Vec::new();
        if self.capability & 0x10 != 0 {
            rates.push(40_000);
        }
        if self.capability & 0x08 != 0 {
            rates.push(9_600);
        }
        if self.reserved & 0x01 != 0 {
            rates.push(100_000);
        }
        if rates.is_empty() {
            rates.push(9_600);
        }
        rates
    }
    pub fn optional_functionality(&self) -> bool {
        self.security & 0x80 != 0
    }
    /// `Some` for frequently listening (FLiRS) nodes, which wake on a beam every 250 or
    /// 1000 ms.
    pub fn flirs(&self) -> Option<Flirs> {
        match self.security & 0x60 {
            0x40 => Some(Flirs::Ms1000),
            0x20 => Some(Flirs::Ms250),
            _ => None,
        }
    }
    pub fn supports_beaming(&self) -> bool {
        self.security & 0x10 != 0
    }
    /// Controller (computes routes) rather than end node: bits 3/1 = `01` (zwave-js: any
    /// other combination is an end node).
    pub fn is_controller(&self) -> bool {
        self.security & 0x0A == 0x02
    }
    pub fn has_specific_device_class(&self) -> bool {
        self.security & 0x04 != 0
    }
    pub fn supports_security(&self) -> bool {
        self.security & 0x01 != 0
    }
    /// Neither listening nor FLiRS: a sleeping node reached only when it wakes up.
    pub fn is_sleeping(&self) -> bool {
        !self.is_listening() && self.flirs().is_none()
    }

    pub(crate) fn parse(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload, "node protocol info");
        let capability = r.u8()?;
        let security = r.u8()?;
        let reserved = r.u8()?;
        let basic = r.opt_u8().unwrap_or(0);
        let generic = r.opt_u8().unwrap_or(0);
        let specific = if security & 0x04 != 0 {
            r.opt_u8().unwrap_or(0)
        } else {
            0
        };
        Ok(Self {
            capability,
            security,
            reserved,
            device_class: DeviceClass {
                basic,
                generic,
                specific,
            },
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let dc = self.device_class;
        out.extend_from_slice(&[
            self.capability,
            self.security,
            self.reserved,
            dc.basic,
            dc.generic,
            dc.specific,
        ]);
    }
}

byte_enum! {
    /// Transmit status of a SendData callback (zwave-js `core/src/definitions/Transmission.ts`).
    pub enum TransmitStatus {
        Ok = 0x00,
        NoAck = 0x01,
        Fail = 0x02,
        NotIdle = 0x03,
        NoRoute = 0x04,
    }
}

/// Transmit option bits of SendData (zwave-js `Transmission.ts` `TransmitOptions`).
pub mod tx_options {
    pub const ACK: u8 = 0x01;
    pub const LOW_POWER: u8 = 0x02;
    pub const AUTO_ROUTE: u8 = 0x04;
    pub const NO_ROUTE: u8 = 0x10;
    pub const EXPLORE: u8 = 0x20;
    /// ACK | AUTO_ROUTE | EXPLORE, what zwave-js sends by default.
    pub const DEFAULT: u8 = 0x25;
}

/// RSSI sentinels (zwave-js `core/src/definitions/RSSI.ts`): values from 125 up are not
/// measurements.
pub mod rssi {
    pub const NO_SIGNAL_DETECTED: i8 = 125;
    pub const RECEIVER_SATURATED: i8 = 126;
    pub const NOT_AVAILABLE: i8 = 127;
    /// A measured RSSI in dBm, or `None` for a sentinel.
    pub fn dbm(raw: i8) -> Option<i8> {
        (raw < NO_SIGNAL_DETECTED).then_some(raw)
    }
}

/// The TX report a 500-series (SDK 6.60+) or later controller appends to a SendData callback
/// (zwave-js `serialapi/transport/SendDataShared.ts` `parseTXReport`). Fields after the 17th
/// byte came with later SDKs and are `None` when the controller did not send them; the last
/// five are meaningful only on Long Range channels (`tx_channel >= 3`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct TxReport {
    /// Transmission time in 10 ms ticks.
    pub tx_ticks: u16,
    /// Number of repeaters used (0 = direct).
    pub repeater_count: u8,
    /// RSSI of the ACK from the destination (see [`rssi`]).
    pub ack_rssi: i8,
    /// RSSI of the ACK on each repeater hop.
    pub ack_repeater_rssi: [i8; 4],
    pub ack_channel: u8,
    pub tx_channel: u8,
    pub route_scheme_state: u8,
    pub repeater_node_ids: [u8; 4],
    pub beam_1000ms: bool,
    pub beam_250ms: bool,
    /// Route speed: 1 = 9.6k, 2 = 40k, 3 = 100k, 4 = Long Range.
    pub route_speed: u8,
    pub routing_attempts: u8,
    pub failed_route_last_functional_node: Option<u8>,
    pub failed_route_first_non_functional_node: Option<u8>,
    pub tx_power: Option<i8>,
    pub measured_noise_floor: Option<i8>,
    pub destination_ack_tx_power: Option<i8>,
    pub destination_ack_rssi: Option<i8>,
    pub destination_ack_noise_floor: Option<i8>,
}

impl TxReport {
    /// The shortest TX report controllers send.
    pub const MIN_LEN: usize = 17;

    /// The repeaters actually used, in hop order.
    pub fn repeaters(&self) -> &[u8] {
        &self.repeater_node_ids[..usize::from(self.repeater_count.min(4))]
    }

    /// The ACK RSSI on each repeater hop actually used.
    pub fn hop_rssi(&self) -> &[i8] {
        &self.ack_repeater_rssi[..usize::from(self.repeater_count.min(4))]
    }

    /// Transmission time in milliseconds.
    pub fn tx_time_ms(&self) -> u32 {
        u32::from(self.tx_ticks) * 10
    }

    /// `None` when fewer than 17 bytes are present (older controllers send no report).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < Self::MIN_LEN {
            return None;
        }
        let b = |i: usize| bytes.get(i).copied();
        let s = |i: usize| bytes.get(i).map(|&v| v as i8);
        Some(Self {
            tx_ticks: u16::from_be_bytes([bytes[0], bytes[1]]),
            repeater_count: bytes[2],
            ack_rssi: bytes[3] as i8,
            ack_repeater_rssi: [
                bytes[4] as i8,
                bytes[5] as i8,
                bytes[6] as i8,
                bytes[7] as i8,
            ],
            ack_channel: bytes[8],
            tx_channel: bytes[9],
            route_scheme_state: bytes[10],
            repeater_node_ids: [bytes[11], bytes[12], bytes[13], bytes[14]],
            beam_1000ms: bytes[15] & 0x40 != 0,
            beam_250ms: bytes[15] & 0x20 != 0,
            route_speed: bytes[15] & 0x07,
            routing_attempts: bytes[16],
            failed_route_last_functional_node: b(17),
            failed_route_first_non_functional_node: b(18),
            tx_power: s(19),
            measured_noise_floor: s(20),
            destination_ack_tx_power: s(21),
            destination_ack_rssi: s(22),
            destination_ack_noise_floor: s(23),
        })
    }

    /// Encodes 17 bytes plus the optional fields up to the last one present (an optional field
    /// after a missing one is written as 0 / "not available" so the layout holds).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tx_ticks.to_be_bytes());
        out.push(self.repeater_count);
        out.push(self.ack_rssi as u8);
        out.extend(self.ack_repeater_rssi.iter().map(|&v| v as u8));
        out.extend_from_slice(&[self.ack_channel, self.tx_channel, self.route_scheme_state]);
        out.extend_from_slice(&self.repeater_node_ids);
        out.push(
            (u8::from(self.beam_1000ms) << 6)
                | (u8::from(self.beam_250ms) << 5)
                | (self.route_speed & 0x07),
        );
        out.push(self.routing_attempts);
        let na = rssi::NOT_AVAILABLE as u8;
        let optional = [
            (self.failed_route_last_functional_node, 0),
            (self.failed_route_first_non_functional_node, 0),
            (self.tx_power.map(|v| v as u8), 0),
            (self.measured_noise_floor.map(|v| v as u8), na),
            (self.destination_ack_tx_power.map(|v| v as u8), 0),
            (self.destination_ack_rssi.map(|v| v as u8), na),
            (self.destination_ack_noise_floor.map(|v| v as u8), na),
        ];
        let last = optional.iter().rposition(|(v, _)| v.is_some());
        if let Some(last) = last {
            out.extend(optional[..=last].iter().map(|(v, dflt)| v.unwrap_or(*dflt)));
        }
    }
}

/// Receive status byte of ApplicationCommandHandler (zwave-js
/// `ApplicationCommandRequest.ts` `ApplicationCommandStatusFlags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RxStatus(pub u8);

/// How a received frame was addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RxFrameType {
    Singlecast,
    Broadcast,
    Multicast,
}

impl RxStatus {
    pub fn routed_busy(self) -> bool {
        self.0 & 0x01 != 0
    }
    pub fn low_power(self) -> bool {
        self.0 & 0x02 != 0
    }
    pub fn frame_type(self) -> RxFrameType {
        match self.0 & 0x0C {
            0x08 => RxFrameType::Multicast,
            0x04 => RxFrameType::Broadcast,
            _ => RxFrameType::Singlecast,
        }
    }
    /// An explore frame (only meaningful on broadcasts, as zwave-js reads it).
    pub fn explore(self) -> bool {
        self.frame_type() == RxFrameType::Broadcast && self.0 & 0x10 != 0
    }
    pub fn foreign_frame(self) -> bool {
        self.0 & 0x40 != 0
    }
    pub fn foreign_home_id(self) -> bool {
        self.0 & 0x80 != 0
    }
}

/// As JSON: the byte as sent and what its bits say.
impl Serialize for RxStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("RxStatus", 7)?;
        st.serialize_field("raw", &self.0)?;
        st.serialize_field("frame_type", &self.frame_type())?;
        st.serialize_field("routed_busy", &self.routed_busy())?;
        st.serialize_field("low_power", &self.low_power())?;
        st.serialize_field("explore", &self.explore())?;
        st.serialize_field("foreign_frame", &self.foreign_frame())?;
        st.serialize_field("foreign_home_id", &self.foreign_home_id())?;
        st.end()
    }
}
