//! Z-Stack NV item structures a backup needs: the NWK information base (NIB, item 0x0021),
//! the active network key descriptor (NWK_ACTIVE_KEY_INFO, 0x003A) and the entries of the
//! network security material table, which hold the outgoing NWK frame counter per extended
//! PAN id. Pure parsing and encoding; reading them from a coordinator is the driver's job.
//!
//! Z-Stack stores C structs as they sit in memory, so the bytes depend on the target: the
//! 8051 (CC2531, Z-Stack 3.0.x) packs them ("unaligned"), the ARM parts (CC26xx/CC13xx,
//! Z-Stack 3.x.0) align every u16/u32 to an even offset and pad the struct to an even length
//! ("aligned"). As zigbee-herdsman 11.1.1 does (`structs/struct.js build`), the layout is
//! told apart by the item's length alone: each structure has one length per layout.
//!
//! Layouts: zigbee-herdsman 11.1.1 `dist/adapter/z-stack/structs/entries/nib.js`,
//! `nwk-key-descriptor.js`, `nwk-sec-material-descriptor-entry.js` (from Z-Stack 3.0.2
//! `nwk.h`, `ssp.h`, `ZDSecMgr.h`). Every multi-byte field is little-endian.

use std::fmt;

use crate::error::{Error, Result};
use crate::wire::Reader;
use crate::IeeeAddr;

/// How a target lays out structs in NV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NvLayout {
    /// Packed, as on the 8051 (CC2531).
    Unaligned,
    /// u16/u32 fields on even offsets, total length even, as on ARM (CC26xx/CC13xx).
    Aligned,
}

/// Extended PAN id of the security material entry that applies to any network (all 0xFF).
pub const GENERIC_EXTENDED_PAN_ID: u64 = u64::MAX;

/// A reader that skips the padding the aligned layout puts before u16/u32 fields.
struct NvReader<'a> {
    r: Reader<'a>,
    pos: usize,
    layout: NvLayout,
}

impl<'a> NvReader<'a> {
    fn new(buf: &'a [u8], what: &'static str, layout: NvLayout) -> Self {
        Self {
            r: Reader::new(buf, what),
            pos: 0,
            layout,
        }
    }

    fn align(&mut self) -> Result<()> {
        if self.layout == NvLayout::Aligned && self.pos % 2 == 1 {
            self.r.u8()?;
            self.pos += 1;
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8> {
        self.pos += 1;
        self.r.u8()
    }

    fn u16(&mut self) -> Result<u16> {
        self.align()?;
        self.pos += 2;
        self.r.u16()
    }

    fn u32(&mut self) -> Result<u32> {
        self.align()?;
        self.pos += 4;
        self.r.u32()
    }

    fn u64(&mut self) -> Result<u64> {
        // `uint8array-reversed` of 8 bytes: no alignment, little-endian.
        self.pos += 8;
        Ok(u64::from_le_bytes(self.r.array()?))
    }

    fn key(&mut self) -> Result<NwkKeyDescriptor> {
        // A nested struct of u8 + 16 bytes: nothing inside it to align.
        self.pos += 17;
        Ok(NwkKeyDescriptor {
            key_seq_num: self.r.u8()?,
            key: self.r.array()?,
        })
    }
}

/// The writing twin of [`NvReader`]; pads with 0x00 as herdsman does.
struct NvWriter {
    out: Vec<u8>,
    layout: NvLayout,
}

impl NvWriter {
    fn new(layout: NvLayout) -> Self {
        Self {
            out: Vec::with_capacity(128),
            layout,
        }
    }

    fn align(&mut self) {
        if self.layout == NvLayout::Aligned && self.out.len() % 2 == 1 {
            self.out.push(0);
        }
    }

    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.align();
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.align();
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    fn key(&mut self, k: &NwkKeyDescriptor) {
        self.out.push(k.key_seq_num);
        self.out.extend_from_slice(&k.key);
    }

    fn finish(mut self) -> Vec<u8> {
        self.align();
        self.out
    }
}

fn layout_of(
    what: &'static str,
    len: usize,
    unaligned: usize,
    aligned: usize,
    expected: &'static str,
) -> Result<NvLayout> {
    if len == unaligned {
        Ok(NvLayout::Unaligned)
    } else if len == aligned {
        Ok(NvLayout::Aligned)
    } else {
        Err(Error::NvItemLength {
            what,
            len,
            expected,
        })
    }
}

/// Security Service Provider network key descriptor (`ssp.h nwkKeyDesc`): the network key
/// and its sequence number. Its `Debug` never shows the key.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct NwkKeyDescriptor {
    pub key_seq_num: u8,
    pub key: [u8; 16],
}

impl fmt::Debug for NwkKeyDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NwkKeyDescriptor")
            .field("key_seq_num", &self.key_seq_num)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl NwkKeyDescriptor {
    /// Unaligned length (17); the aligned item is padded to 18.
    pub const LEN: usize = 17;

    /// Parses NWK_ACTIVE_KEY_INFO (17 bytes, or 18 with the aligned layout's padding).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let layout = layout_of(
            "NWK_ACTIVE_KEY_INFO",
            bytes.len(),
            Self::LEN,
            Self::LEN + 1,
            "17 (packed) or 18 (aligned)",
        )?;
        NvReader::new(bytes, "network key descriptor", layout).key()
    }

    pub fn to_bytes(&self, layout: NvLayout) -> Vec<u8> {
        let mut w = NvWriter::new(layout);
        w.key(self);
        w.finish()
    }
}

/// One entry of the network security material table (`ZDSecMgr.h nwkSecMaterialDesc_t`):
/// the outgoing NWK frame counter the coordinator uses on the network with this extended
/// PAN id ([`GENERIC_EXTENDED_PAN_ID`]: any network; 0: unused entry). 12 bytes in both
/// layouts. Kept in the extended NV table `ZCD_NV_EX_NWK_SEC_MATERIAL_TABLE` (SimpleLink
/// Z-Stack 3.x.0) or in legacy items 0x0075.. (Z-Stack 3.0.x and 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NwkSecMaterialEntry {
    pub frame_counter: u32,
    pub extended_pan_id: u64,
}

impl NwkSecMaterialEntry {
    pub const LEN: usize = 12;

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let layout = layout_of(
            "network security material entry",
            bytes.len(),
            Self::LEN,
            Self::LEN,
            "12",
        )?;
        let mut r = NvReader::new(bytes, "network security material entry", layout);
        Ok(Self {
            frame_counter: r.u32()?,
            extended_pan_id: r.u64()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = NvWriter::new(NvLayout::Aligned);
        w.u32(self.frame_counter);
        w.u64(self.extended_pan_id);
        w.finish()
    }

    /// herdsman's `isSet`: an entry with an extended PAN id of all zeros is free.
    pub fn is_set(&self) -> bool {
        self.extended_pan_id != 0
    }
}

/// The entry whose frame counter is the network's, chosen as zigbee-herdsman 11.1.1
/// `adapter-backup.js createBackup` does: the first used entry for `extended_pan_id`, else
/// the first generic (all 0xFF) entry. `None` when the table has neither.
pub fn network_frame_counter_entry(
    entries: &[NwkSecMaterialEntry],
    extended_pan_id: u64,
) -> Option<NwkSecMaterialEntry> {
    let used = entries.iter().filter(|e| e.is_set());
    used.clone()
        .find(|e| e.extended_pan_id == extended_pan_id)
        .or_else(|| {
            used.clone()
                .find(|e| e.extended_pan_id == GENERIC_EXTENDED_PAN_ID)
        })
        .copied()
}

/// The NWK information base (`nwk.h nwkIB_t`, Z-Stack 3.0.2), NV item 0x0021: the network
/// the coordinator actually runs. 110 bytes packed (CC2531), 116 aligned (CC26xx/CC13xx).
/// Field names follow herdsman's `nib.js`; `Debug` hides the two spare key descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nib {
    pub sequence_num: u8,
    pub passive_ack_timeout: u8,
    pub max_broadcast_retries: u8,
    pub max_children: u8,
    pub max_depth: u8,
    pub max_routers: u8,
    pub dummy_neighbor_table: u8,
    pub broadcast_delivery_time: u8,
    pub report_constant_cost: u8,
    pub route_disc_retries: u8,
    pub dummy_routing_table: u8,
    pub secure_all_frames: u8,
    /// NWK security level; 5 (ENC-MIC-32) on every Zigbee 3 network.
    pub security_level: u8,
    pub sym_link: u8,
    pub capability_flags: u8,
    pub transaction_persistence_time: u16,
    pub nwk_protocol_version: u8,
    pub route_discovery_time: u8,
    pub route_expiry_time: u8,
    pub nwk_dev_address: u16,
    pub nwk_logical_channel: u8,
    pub nwk_coord_address: u16,
    pub nwk_coord_ext_address: IeeeAddr,
    pub nwk_pan_id: u16,
    pub nwk_state: u8,
    /// Channel bit mask (bit n = channel n).
    pub channel_list: u32,
    pub beacon_order: u8,
    pub super_frame_order: u8,
    pub scan_duration: u8,
    pub batt_life_ext: u8,
    pub allocated_router_addresses: u32,
    pub allocated_end_device_addresses: u32,
    pub node_depth: u8,
    pub extended_pan_id: u64,
    pub nwk_key_loaded: u8,
    pub spare1: NwkKeyDescriptor,
    pub spare2: NwkKeyDescriptor,
    pub spare3: u8,
    pub spare4: u8,
    pub nwk_link_status_period: u8,
    pub nwk_router_age_limit: u8,
    pub nwk_use_multicast: u8,
    pub nwk_is_concentrator: u8,
    pub nwk_concentrator_discovery_time: u8,
    pub nwk_concentrator_radius: u8,
    pub nwk_all_fresh: u8,
    pub nwk_manager_addr: u16,
    pub nwk_total_transmissions: u16,
    /// Incremented by each network update (channel or PAN id change).
    pub nwk_update_id: u8,
}

impl Nib {
    /// Packed length (CC2531, Z-Stack 3.0.x).
    pub const LEN_UNALIGNED: usize = 110;
    /// Aligned length (CC26xx/CC13xx, Z-Stack 3.x.0).
    pub const LEN_ALIGNED: usize = 116;

    /// Parses a NIB in whichever layout its length says.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let layout = layout_of(
            "NIB",
            bytes.len(),
            Self::LEN_UNALIGNED,
            Self::LEN_ALIGNED,
            "110 (packed, CC2531) or 116 (aligned, CC26xx)",
        )?;
        Self::parse_as(bytes, layout)
    }

    /// The layout a NIB of this length is in (see [`Nib::parse`]).
    pub fn layout_of(len: usize) -> Option<NvLayout> {
        match len {
            Self::LEN_UNALIGNED => Some(NvLayout::Unaligned),
            Self::LEN_ALIGNED => Some(NvLayout::Aligned),
            _ => None,
        }
    }

    fn parse_as(bytes: &[u8], layout: NvLayout) -> Result<Self> {
        let mut r = NvReader::new(bytes, "NIB", layout);
        let r = &mut r;
        Ok(Self {
            sequence_num: r.u8()?,
            passive_ack_timeout: r.u8()?,
            max_broadcast_retries: r.u8()?,
            max_children: r.u8()?,
            max_depth: r.u8()?,
            max_routers: r.u8()?,
            dummy_neighbor_table: r.u8()?,
            broadcast_delivery_time: r.u8()?,
            report_constant_cost: r.u8()?,
            route_disc_retries: r.u8()?,
            dummy_routing_table: r.u8()?,
            secure_all_frames: r.u8()?,
            security_level: r.u8()?,
            sym_link: r.u8()?,
            capability_flags: r.u8()?,
            transaction_persistence_time: r.u16()?,
            nwk_protocol_version: r.u8()?,
            route_discovery_time: r.u8()?,
            route_expiry_time: r.u8()?,
            nwk_dev_address: r.u16()?,
            nwk_logical_channel: r.u8()?,
            nwk_coord_address: r.u16()?,
            nwk_coord_ext_address: IeeeAddr(r.u64()?),
            nwk_pan_id: r.u16()?,
            nwk_state: r.u8()?,
            channel_list: r.u32()?,
            beacon_order: r.u8()?,
            super_frame_order: r.u8()?,
            scan_duration: r.u8()?,
            batt_life_ext: r.u8()?,
            allocated_router_addresses: r.u32()?,
            allocated_end_device_addresses: r.u32()?,
            node_depth: r.u8()?,
            extended_pan_id: r.u64()?,
            nwk_key_loaded: r.u8()?,
            spare1: r.key()?,
            spare2: r.key()?,
            spare3: r.u8()?,
            spare4: r.u8()?,
            nwk_link_status_period: r.u8()?,
            nwk_router_age_limit: r.u8()?,
            nwk_use_multicast: r.u8()?,
            nwk_is_concentrator: r.u8()?,
            nwk_concentrator_discovery_time: r.u8()?,
            nwk_concentrator_radius: r.u8()?,
            nwk_all_fresh: r.u8()?,
            nwk_manager_addr: r.u16()?,
            nwk_total_transmissions: r.u16()?,
            nwk_update_id: r.u8()?,
        })
    }

    pub fn to_bytes(&self, layout: NvLayout) -> Vec<u8> {
        let mut w = NvWriter::new(layout);
        w.u8(self.sequence_num);
        w.u8(self.passive_ack_timeout);
        w.u8(self.max_broadcast_retries);
        w.u8(self.max_children);
        w.u8(self.max_depth);
        w.u8(self.max_routers);
        w.u8(self.dummy_neighbor_table);
        w.u8(self.broadcast_delivery_time);
        w.u8(self.report_constant_cost);
        w.u8(self.route_disc_retries);
        w.u8(self.dummy_routing_table);
        w.u8(self.secure_all_frames);
        w.u8(self.security_level);
        w.u8(self.sym_link);
        w.u8(self.capability_flags);
        w.u16(self.transaction_persistence_time);
        w.u8(self.nwk_protocol_version);
        w.u8(self.route_discovery_time);
        w.u8(self.route_expiry_time);
        w.u16(self.nwk_dev_address);
        w.u8(self.nwk_logical_channel);
        w.u16(self.nwk_coord_address);
        w.u64(self.nwk_coord_ext_address.0);
        w.u16(self.nwk_pan_id);
        w.u8(self.nwk_state);
        w.u32(self.channel_list);
        w.u8(self.beacon_order);
        w.u8(self.super_frame_order);
        w.u8(self.scan_duration);
        w.u8(self.batt_life_ext);
        w.u32(self.allocated_router_addresses);
        w.u32(self.allocated_end_device_addresses);
        w.u8(self.node_depth);
        w.u64(self.extended_pan_id);
        w.u8(self.nwk_key_loaded);
        w.key(&self.spare1);
        w.key(&self.spare2);
        w.u8(self.spare3);
        w.u8(self.spare4);
        w.u8(self.nwk_link_status_period);
        w.u8(self.nwk_router_age_limit);
        w.u8(self.nwk_use_multicast);
        w.u8(self.nwk_is_concentrator);
        w.u8(self.nwk_concentrator_discovery_time);
        w.u8(self.nwk_concentrator_radius);
        w.u8(self.nwk_all_fresh);
        w.u16(self.nwk_manager_addr);
        w.u16(self.nwk_total_transmissions);
        w.u8(self.nwk_update_id);
        w.finish()
    }

    /// Channels in [`Nib::channel_list`], lowest first.
    pub fn channels(&self) -> Vec<u8> {
        (11u8..=26)
            .filter(|c| self.channel_list & (1u32 << c) != 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_pick_the_layout_and_anything_else_is_refused() {
        let nib = Nib {
            nwk_pan_id: 0x1A62,
            ..Nib::default()
        };
        assert_eq!(nib.to_bytes(NvLayout::Unaligned).len(), 110);
        assert_eq!(nib.to_bytes(NvLayout::Aligned).len(), 116);
        for len in [0, 1, 109, 111, 115, 117, 250] {
            assert!(matches!(
                Nib::parse(&vec![0; len]),
                Err(Error::NvItemLength { len: l, .. }) if l == len
            ));
        }
        assert!(NwkKeyDescriptor::parse(&[0; 16]).is_err());
        assert!(NwkKeyDescriptor::parse(&[0; 19]).is_err());
        assert!(NwkSecMaterialEntry::parse(&[0; 11]).is_err());
        assert!(NwkSecMaterialEntry::parse(&[0; 13]).is_err());
    }

    #[test]
    fn key_descriptor_debug_hides_the_key() {
        let k = NwkKeyDescriptor {
            key_seq_num: 3,
            key: [0xAB; 16],
        };
        let nib = Nib {
            spare1: k,
            ..Nib::default()
        };
        let text = format!("{k:?} {nib:?}");
        assert!(!text.contains("171"), "{text}");
        assert!(text.contains("key_seq_num: 3"), "{text}");
    }

    #[test]
    fn frame_counter_prefers_the_network_then_the_generic_entry() {
        let net = 0xDDDD_DDDD_DDDD_DDDD;
        let e = |frame_counter, extended_pan_id| NwkSecMaterialEntry {
            frame_counter,
            extended_pan_id,
        };
        let table = [
            e(5, 0),
            e(100, GENERIC_EXTENDED_PAN_ID),
            e(7, 0x1111),
            e(250, net),
        ];
        assert_eq!(network_frame_counter_entry(&table, net), Some(table[3]));
        assert_eq!(network_frame_counter_entry(&table, 0x2222), Some(table[1]));
        assert_eq!(network_frame_counter_entry(&table[..1], net), None);
        assert_eq!(network_frame_counter_entry(&[], net), None);
    }
}
