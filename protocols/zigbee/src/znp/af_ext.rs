//! AF_INCOMING_MSG_EXT (AREQ 0x44 0x82) and AF_DATA_RETRIEVE (SREQ 0x24 0x12 / SRSP 0x64
//! 0x12): how a Z-Stack coordinator hands over an incoming APS frame that AF_INCOMING_MSG
//! cannot carry.
//!
//! When Z-Stack sends the extended form (`MT_AfIncomingMsg` in Z-Stack's `mt_af.c`, TI
//! SimpleLink SDK):
//! - the source is addressed by its IEEE address (address mode 3), or the frame came from
//!   another PAN (inter-PAN builds): the payload is in the frame, as in AF_INCOMING_MSG;
//! - the payload is longer than [`MAX_INLINE_PAYLOAD`] bytes (AF_INCOMING_MSG would not fit
//!   MT's 250-byte limit): the coordinator keeps the payload, sends the indication with its
//!   length but **none of its bytes**, and the host reads it with AF_DATA_RETRIEVE, keyed by
//!   the indication's timestamp, in chunks from index 0; a retrieve of length 0 frees it.
//!   Z-Stack frees an unretrieved payload by itself after about 15 s (`MT_AF_EXEC_CNT` ticks
//!   of `MT_AF_EXEC_DLY` ms).
//!
//! Field order: zigbee-herdsman `src/adapter/z-stack/znp/definition.ts` (`incomingMsgExt`,
//! `dataRetrieve`), zigpy-znp `commands/af.py` (`IncomingMsgExt`, `DataRetrieve`), both
//! checked against `mt_af.c`. The source address field is always 8 bytes; in address mode 2
//! only its first two are written (the rest is whatever the coordinator's buffer held).
//! Like AF_INCOMING_MSG, the frame ends with two fields TI does not document, the MAC source
//! address and the message's result radius; Z-Stack writes them after the payload, or right
//! after the length when the payload is held back (zigbee-herdsman takes those 3 bytes for
//! the start of the payload; its `zStackAdapter.ts` retrieves whenever fewer than `len`
//! bytes came, so the misreading does not matter there).

use serde::Serialize;

use crate::error::Result;
use crate::wire::{Reader, Writer};
use crate::IeeeAddr;

/// Longest payload AF_INCOMING_MSG carries: Z-Stack switches to AF_INCOMING_MSG_EXT with the
/// payload held back above this (20 bytes of fields + payload must stay within 240 of MT's
/// 250, `mt_af.c`).
pub const MAX_INLINE_PAYLOAD: usize = 220;

/// Bytes asked for per AF_DATA_RETRIEVE: zigbee-herdsman's block size (`dataRetrieveAll`);
/// the answer (status, length, data) then fills 242 of MT's 250 bytes.
pub const DATA_RETRIEVE_CHUNK: u8 = 240;

/// AF address mode of a 16-bit network address (Z-Stack `afAddr16Bit`).
pub const AF_ADDR_MODE_16BIT: u8 = 0x02;
/// AF address mode of a 64-bit IEEE address (Z-Stack `afAddr64Bit`).
pub const AF_ADDR_MODE_64BIT: u8 = 0x03;

/// Z-Stack's `afStatus_FAILED`: AF_DATA_RETRIEVE names no payload the coordinator holds.
pub const AF_STATUS_FAILED: u8 = 0x01;

/// The trailing MAC source address and result radius (3 bytes).
const TRAILER: usize = 3;

/// AF_INCOMING_MSG_EXT: an APS frame received from a device (see the module comment for
/// when Z-Stack sends this form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AfIncomingMsgExt {
    pub group_id: u16,
    pub cluster_id: u16,
    /// [`AF_ADDR_MODE_16BIT`] or [`AF_ADDR_MODE_64BIT`].
    pub src_addr_mode: u8,
    /// The 8-byte source address field as sent (little-endian); see [`Self::src_nwk`] and
    /// [`Self::src_ieee`].
    #[serde(serialize_with = "crate::serde_hex_u64")]
    pub src_addr: u64,
    pub src_endpoint: u8,
    pub src_pan_id: u16,
    pub dst_endpoint: u8,
    pub was_broadcast: bool,
    pub link_quality: u8,
    pub security_use: bool,
    /// The coordinator's receive timestamp; also the key of a held-back payload.
    pub timestamp: u32,
    pub trans_seq_num: u8,
    /// The payload's full length.
    pub len: u16,
    /// The payload bytes this frame carries: all `len` of them, or fewer (Z-Stack: none)
    /// when the coordinator holds the payload back ([`Self::is_complete`]).
    #[serde(serialize_with = "crate::serde_hex")]
    pub data: Vec<u8>,
    /// Undocumented trailing MAC source address (as in AF_INCOMING_MSG).
    pub mac_src_addr: Option<u16>,
    /// Undocumented trailing message result radius.
    pub msg_result_radius: Option<u8>,
}

impl AfIncomingMsgExt {
    /// Whether the whole payload is in the frame; if not, fetch it with AF_DATA_RETRIEVE
    /// ([`retrieve_plan`]).
    pub fn is_complete(&self) -> bool {
        self.data.len() >= usize::from(self.len)
    }

    /// The source's network address, when it was addressed by one (any mode but 64-bit:
    /// the first two bytes of the address field).
    pub fn src_nwk(&self) -> Option<u16> {
        (self.src_addr_mode != AF_ADDR_MODE_64BIT).then_some((self.src_addr & 0xFFFF) as u16)
    }

    /// The source's IEEE address, when it was addressed by one.
    pub fn src_ieee(&self) -> Option<IeeeAddr> {
        (self.src_addr_mode == AF_ADDR_MODE_64BIT).then_some(IeeeAddr(self.src_addr))
    }

    /// The same message with its payload complete (what AF_DATA_RETRIEVE returned).
    pub fn with_payload(mut self, data: Vec<u8>) -> Self {
        self.len = u16::try_from(data.len()).unwrap_or(u16::MAX);
        self.data = data;
        self
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let group_id = r.u16()?;
        let cluster_id = r.u16()?;
        let src_addr_mode = r.u8()?;
        let src_addr = r.uint(8)?;
        let src_endpoint = r.u8()?;
        let src_pan_id = r.u16()?;
        let dst_endpoint = r.u8()?;
        let was_broadcast = r.u8()? != 0;
        let link_quality = r.u8()?;
        let security_use = r.u8()? != 0;
        let timestamp = r.u32()?;
        let trans_seq_num = r.u8()?;
        let len = r.u16()?;
        let carried = if r.remaining() >= usize::from(len) {
            usize::from(len)
        } else {
            // Held back: whatever comes before the 3 trailing bytes (Z-Stack: nothing).
            r.remaining().saturating_sub(TRAILER)
        };
        let data = r.bytes(carried)?.to_vec();
        Ok(Self {
            group_id,
            cluster_id,
            src_addr_mode,
            src_addr,
            src_endpoint,
            src_pan_id,
            dst_endpoint,
            was_broadcast,
            link_quality,
            security_use,
            timestamp,
            trans_seq_num,
            len,
            data,
            mac_src_addr: r.u16().ok(),
            msg_result_radius: r.opt_u8(),
        })
    }

    /// The frame's payload. A held-back payload decodes back to the same message when the
    /// trailing fields are present (Z-Stack always sends them).
    pub(crate) fn write(&self, p: &mut Vec<u8>) {
        p.put_u16(self.group_id);
        p.put_u16(self.cluster_id);
        p.put_u8(self.src_addr_mode);
        p.put_uint(self.src_addr, 8);
        p.put_u8(self.src_endpoint);
        p.put_u16(self.src_pan_id);
        p.put_u8(self.dst_endpoint);
        p.put_u8(u8::from(self.was_broadcast));
        p.put_u8(self.link_quality);
        p.put_u8(u8::from(self.security_use));
        p.put_u32(self.timestamp);
        p.put_u8(self.trans_seq_num);
        p.put_u16(self.len);
        p.extend_from_slice(&self.data);
        if let Some(mac) = self.mac_src_addr {
            p.put_u16(mac);
            if let Some(radius) = self.msg_result_radius {
                p.put_u8(radius);
            }
        }
    }
}

/// The AF_DATA_RETRIEVE requests that fetch a held-back payload of `len` bytes: (index,
/// length) chunks of [`DATA_RETRIEVE_CHUNK`] from index 0, then `(0, 0)`, which frees it.
pub fn retrieve_plan(len: u16) -> Vec<(u16, u8)> {
    let chunk = u16::from(DATA_RETRIEVE_CHUNK);
    let mut plan: Vec<(u16, u8)> = (0..len)
        .step_by(usize::from(chunk))
        .map(|index| (index, u8::try_from((len - index).min(chunk)).unwrap_or(0)))
        .collect();
    plan.push((0, 0));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mt::{MtFrame, MtType, Subsystem};
    use crate::ZnpCommand;

    fn ext(len: u16, data: Vec<u8>) -> AfIncomingMsgExt {
        AfIncomingMsgExt {
            group_id: 0,
            cluster_id: 0x0000,
            src_addr_mode: AF_ADDR_MODE_16BIT,
            src_addr: 0x1A01,
            src_endpoint: 1,
            src_pan_id: 0,
            dst_endpoint: 1,
            was_broadcast: false,
            link_quality: 0x78,
            security_use: false,
            timestamp: 0x0012_D687,
            trans_seq_num: 0,
            len,
            data,
            mac_src_addr: Some(0x1A01),
            msg_result_radius: Some(0x1D),
        }
    }

    #[test]
    fn a_held_back_payload_leaves_only_the_trailer_after_the_length() {
        // What mt_af.c sends for a 300-byte payload from 0x1A01: 25 bytes of fields, the
        // 2-byte length, no payload, then MAC source 0x1A01 and radius 0x1D.
        let payload = [
            0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x1A, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x01,
            0x00, 0x78, 0x00, 0x87, 0xD6, 0x12, 0x00, 0x00, 0x2C, 0x01, 0x01, 0x1A, 0x1D,
        ];
        let frame = MtFrame::new(MtType::Areq, Subsystem::Af, 0x82, payload.to_vec());
        let ZnpCommand::AfIncomingMsgExt(m) = ZnpCommand::decode(&frame).unwrap() else {
            panic!("not AF_INCOMING_MSG_EXT");
        };
        assert_eq!(m, ext(300, Vec::new()));
        assert!(!m.is_complete());
        assert_eq!(m.src_nwk(), Some(0x1A01));
        assert_eq!(m.src_ieee(), None);
        assert_eq!(ZnpCommand::AfIncomingMsgExt(m).encode(), frame);
    }

    #[test]
    fn an_inline_payload_is_complete_and_keeps_its_trailer() {
        let mut m = ext(5, vec![0x18, 0x01, 0x0A, 0x00, 0x00]);
        m.src_addr_mode = AF_ADDR_MODE_64BIT;
        m.src_addr = 0x00124B00_0A000001;
        let frame = ZnpCommand::AfIncomingMsgExt(m.clone()).encode();
        assert_eq!(frame.payload.len(), 25 + 2 + 5 + 3);
        assert_eq!(
            ZnpCommand::decode(&frame).unwrap(),
            ZnpCommand::AfIncomingMsgExt(m.clone())
        );
        assert!(m.is_complete());
        assert_eq!(m.src_ieee(), Some(IeeeAddr(0x00124B00_0A000001)));
        assert_eq!(m.src_nwk(), None);
    }

    #[test]
    fn a_short_frame_is_truncated_not_a_panic() {
        let full = ZnpCommand::AfIncomingMsgExt(ext(2, vec![1, 2])).encode();
        // Anything shorter than the fields and the length; past that, a frame with fewer
        // bytes than `len` reads as a held-back payload.
        for cut in 0..27 {
            let f = MtFrame::new(
                MtType::Areq,
                Subsystem::Af,
                0x82,
                full.payload[..cut].to_vec(),
            );
            assert!(ZnpCommand::decode(&f).is_err(), "{cut} bytes decoded");
        }
    }

    #[test]
    fn retrieve_plan_is_herdsmans_chunks_then_the_free() {
        assert_eq!(retrieve_plan(300), vec![(0, 240), (240, 60), (0, 0)]);
        assert_eq!(retrieve_plan(480), vec![(0, 240), (240, 240), (0, 0)]);
        assert_eq!(retrieve_plan(221), vec![(0, 221), (0, 0)]);
        assert_eq!(retrieve_plan(0), vec![(0, 0)]);
    }

    #[test]
    fn data_retrieve_request_and_answers() {
        let req = ZnpCommand::AfDataRetrieveReq {
            timestamp: 0x0012_D687,
            index: 240,
            length: 60,
        };
        let f = req.encode();
        assert_eq!(
            (f.cmd_type, f.subsystem, f.cmd_id),
            (MtType::Sreq, Subsystem::Af, 0x12)
        );
        assert_eq!(f.payload, [0x87, 0xD6, 0x12, 0x00, 0xF0, 0x00, 0x3C]);
        assert_eq!(ZnpCommand::decode(&f).unwrap(), req);
        assert_eq!(req.expected_srsp(), Some((Subsystem::Af, 0x12)));

        let ok = MtFrame::new(
            MtType::Srsp,
            Subsystem::Af,
            0x12,
            vec![0x00, 0x02, 0xAB, 0xCD],
        );
        assert_eq!(
            ZnpCommand::decode(&ok).unwrap(),
            ZnpCommand::AfDataRetrieveRsp {
                status: 0,
                data: vec![0xAB, 0xCD]
            }
        );
        // No such payload (mt_af.c: afStatus_FAILED, length 0); a failure without the
        // length byte still decodes.
        for bytes in [vec![AF_STATUS_FAILED, 0x00], vec![AF_STATUS_FAILED]] {
            let fail = MtFrame::new(MtType::Srsp, Subsystem::Af, 0x12, bytes);
            assert_eq!(
                ZnpCommand::decode(&fail).unwrap(),
                ZnpCommand::AfDataRetrieveRsp {
                    status: AF_STATUS_FAILED,
                    data: Vec::new()
                }
            );
        }
        // A success that promises more bytes than it has is truncated.
        let short = MtFrame::new(MtType::Srsp, Subsystem::Af, 0x12, vec![0x00, 0x03, 0xAB]);
        assert!(ZnpCommand::decode(&short).is_err());
    }
}
