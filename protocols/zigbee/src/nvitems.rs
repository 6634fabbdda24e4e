//! Z-Stack NV item structures a backup needs: the NWK information base (NIB, item 0x0021),
//! the active network key descriptor (NWK_ACTIVE_KEY_INFO, 0x003A), the entries of the
//! network security material table, which hold the outgoing NWK frame counter per extended
//! PAN id, and the tables that hold the devices' APS link keys (address manager, security
//! manager, APS link key data, trust center link keys and the TCLK seed), with the
//! derivation that gives each device its key ([`LinkKeyTables::devices`]). Pure parsing and
//! encoding; reading them from a coordinator is the driver's job. Keys never show in `Debug`.
//!
//! Z-Stack stores C structs as they sit in memory, so the bytes depend on the target: the
//! 8051 (CC2531, Z-Stack 3.0.x) packs them ("unaligned"), the ARM parts (CC26xx/CC13xx,
//! Z-Stack 3.x.0) align every u16/u32 to an even offset and pad the struct to an even length
//! ("aligned"). As zigbee-herdsman 11.1.1 does (`structs/struct.js build`), the layout is
//! told apart by the item's length alone: each structure has one length per layout.
//!
//! Layouts: zigbee-herdsman 11.1.1 `dist/adapter/z-stack/structs/entries/nib.js`,
//! `nwk-key-descriptor.js`, `nwk-sec-material-descriptor-entry.js`,
//! `address-manager-entry.js`, `security-manager-entry.js`, `aps-link-key-data-entry.js`,
//! `aps-tc-link-key-entry.js` and their `-table.js` (from Z-Stack 3.0.2 `nwk.h`, `ssp.h`,
//! `ZDSecMgr.h`, `AddrMgr.h`, `APSMEDE.h`). Every multi-byte field is little-endian. Tables
//! kept as one inline item (address manager on Z-Stack 3.0.x, security manager) have no
//! per-entry length to tell the layout by; the caller gives it (the NIB's length tells it).

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

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.pos += N;
        self.r.array()
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

/// The writing twin of [`NvReader`]; pads with 0x00 as herdsman does (0xFF for the
/// structures herdsman declares that padding for).
struct NvWriter {
    out: Vec<u8>,
    layout: NvLayout,
    pad: u8,
}

impl NvWriter {
    fn new(layout: NvLayout) -> Self {
        Self {
            out: Vec::with_capacity(128),
            layout,
            pad: 0,
        }
    }

    fn padded_with(mut self, pad: u8) -> Self {
        self.pad = pad;
        self
    }

    fn align(&mut self) {
        if self.layout == NvLayout::Aligned && self.out.len() % 2 == 1 {
            self.out.push(self.pad);
        }
    }

    fn bytes(&mut self, v: &[u8]) {
        self.out.extend_from_slice(v);
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

// ---- APS link keys ----
//
// Where a Z-Stack 3 coordinator keeps the link key of each device (zigbee-herdsman 11.1.1
// `adapter-backup.js createBackup`): the address manager table lists the devices; a device
// with a key of its own has a security manager entry that points at an entry of the APS link
// key data table; a device that did the Zigbee 3.0 key exchange has an entry in the trust
// center link key table instead, and its key is derived from the TCLK seed and its IEEE
// address ([`seed_derived_link_key`]).

/// Address manager `user` bit: the device is associated with (a child of) the coordinator.
pub const ADDRMGR_USER_ASSOC: u8 = 0x01;
/// Address manager `user` bit: the device has security material (a link key).
pub const ADDRMGR_USER_SECURITY: u8 = 0x02;

/// One address manager entry (`AddrMgr.h AddrMgrEntry_t`, NV item ADDRMGR 0x0023 on Z-Stack
/// 3.0.x as one inline table, extended table `ZCD_NV_EX_ADDRMGR` on Z-Stack 3.x.0): a device
/// the coordinator knows by NWK and IEEE address. 11 bytes packed, 12 aligned (padded with
/// 0xFF, herdsman `address-manager-entry.js`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressManagerEntry {
    /// [`ADDRMGR_USER_ASSOC`], [`ADDRMGR_USER_SECURITY`], binding (0x04), private (0x08).
    pub user: u8,
    pub nwk_addr: u16,
    pub ext_addr: IeeeAddr,
}

impl Default for AddressManagerEntry {
    /// A free entry as Z-Stack initialises it.
    fn default() -> Self {
        Self {
            user: 0,
            nwk_addr: 0xFFFF,
            ext_addr: IeeeAddr(u64::MAX),
        }
    }
}

impl AddressManagerEntry {
    pub const LEN_UNALIGNED: usize = 11;
    pub const LEN_ALIGNED: usize = 12;

    /// Parses one entry of the extended table (its length says the layout).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let layout = layout_of(
            "address manager entry",
            bytes.len(),
            Self::LEN_UNALIGNED,
            Self::LEN_ALIGNED,
            "11 (packed) or 12 (aligned)",
        )?;
        Self::read(&mut NvReader::new(bytes, "address manager entry", layout))
    }

    fn read(r: &mut NvReader<'_>) -> Result<Self> {
        let e = Self {
            user: r.u8()?,
            nwk_addr: r.u16()?,
            ext_addr: IeeeAddr(r.u64()?),
        };
        r.align()?;
        Ok(e)
    }

    pub fn to_bytes(&self, layout: NvLayout) -> Vec<u8> {
        let mut w = NvWriter::new(layout).padded_with(0xFF);
        w.u8(self.user);
        w.u16(self.nwk_addr);
        w.u64(self.ext_addr.0);
        w.finish()
    }

    /// herdsman's `isSet`: a user bit and a real IEEE address (not all 0x00 or all 0xFF).
    pub fn is_set(&self) -> bool {
        self.user != 0 && self.ext_addr.0 != 0 && self.ext_addr.0 != u64::MAX
    }

    /// The entry names a device a backup carries: set, and associated or with a key.
    pub fn is_device(&self) -> bool {
        self.is_set() && self.user & (ADDRMGR_USER_ASSOC | ADDRMGR_USER_SECURITY) != 0
    }
}

/// Splits an inline table (no header) into entries of `entry_len` bytes; a length that is
/// not a whole number of entries is refused.
fn inline_entries<'a>(
    what: &'static str,
    bytes: &'a [u8],
    entry_len: usize,
    expected: &'static str,
) -> Result<std::slice::ChunksExact<'a, u8>> {
    if bytes.len() % entry_len != 0 {
        return Err(Error::NvItemLength {
            what,
            len: bytes.len(),
            expected,
        });
    }
    Ok(bytes.chunks_exact(entry_len))
}

/// The address manager table as one inline item (ADDRMGR 0x0023, Z-Stack 3.0.x): entries
/// back to back in `layout` (herdsman `address-manager-table.js`). Free entries included,
/// so an entry's index is its position.
pub fn parse_address_manager_table(
    bytes: &[u8],
    layout: NvLayout,
) -> Result<Vec<AddressManagerEntry>> {
    let (len, expected) = match layout {
        NvLayout::Unaligned => (
            AddressManagerEntry::LEN_UNALIGNED,
            "a multiple of 11 (packed)",
        ),
        NvLayout::Aligned => (
            AddressManagerEntry::LEN_ALIGNED,
            "a multiple of 12 (aligned)",
        ),
    };
    inline_entries("address manager table", bytes, len, expected)?
        .map(|c| AddressManagerEntry::read(&mut NvReader::new(c, "address manager entry", layout)))
        .collect()
}

/// Encodes an inline address manager table (the emulator's Z-Stack 3.0.x item).
pub fn address_manager_table_bytes(entries: &[AddressManagerEntry], layout: NvLayout) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_bytes(layout)).collect()
}

/// `ZDSecMgr.h` authentication option of a security manager entry: not authenticated.
pub const SECMGR_NOT_AUTHENTICATED: u8 = 0;
/// Authenticated with a key established by CBKE / given by the host.
pub const SECMGR_AUTHENTICATED_CBCK: u8 = 1;

/// One entry of the security manager table (`ZDSecMgr.c ZDSecMgrEntry_t`, also called the
/// APS link key table, NV item APS_LINK_KEY_TABLE 0x004C): device `ami` (an index into the
/// address manager table) has its own link key in entry `key_nv_id` of the APS link key data
/// table (Z-Stack 3.x.0: the entry's index; Z-Stack 3.0.x: the legacy NV item id,
/// 0x0201 + index). 5 bytes packed, 6 aligned (herdsman `security-manager-entry.js`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityManagerEntry {
    pub ami: u16,
    pub key_nv_id: u16,
    pub authentication_option: u8,
}

impl Default for SecurityManagerEntry {
    /// A free entry (herdsman's default `feff000000`).
    fn default() -> Self {
        Self {
            ami: 0xFFFE,
            key_nv_id: 0,
            authentication_option: SECMGR_NOT_AUTHENTICATED,
        }
    }
}

impl SecurityManagerEntry {
    pub const LEN_UNALIGNED: usize = 5;
    pub const LEN_ALIGNED: usize = 6;

    fn read(r: &mut NvReader<'_>) -> Result<Self> {
        let e = Self {
            ami: r.u16()?,
            key_nv_id: r.u16()?,
            authentication_option: r.u8()?,
        };
        r.align()?;
        Ok(e)
    }

    fn write(&self, w: &mut NvWriter) {
        w.u16(self.ami);
        w.u16(self.key_nv_id);
        w.u8(self.authentication_option);
        w.align();
    }

    /// herdsman's occupancy test (`security-manager-table.js`): an `ami` of 0xFFFE/0xFFFF is
    /// free, and so is an all-default entry for address 0.
    pub fn is_set(&self) -> bool {
        let free = matches!(self.ami, 0xFFFE | 0xFFFF)
            || (self.ami == 0 && self.authentication_option == SECMGR_NOT_AUTHENTICATED);
        !free
    }
}

/// The security manager table item: a u16 count of used entries, then the entries in
/// `layout` (free ones included). The count is informational; occupancy is per entry.
pub fn parse_security_manager_table(
    bytes: &[u8],
    layout: NvLayout,
) -> Result<Vec<SecurityManagerEntry>> {
    let (len, expected) = match layout {
        NvLayout::Unaligned => (
            SecurityManagerEntry::LEN_UNALIGNED,
            "2 + a multiple of 5 (packed)",
        ),
        NvLayout::Aligned => (
            SecurityManagerEntry::LEN_ALIGNED,
            "2 + a multiple of 6 (aligned)",
        ),
    };
    let Some(body) = bytes.get(2..) else {
        return Err(Error::NvItemLength {
            what: "security manager table",
            len: bytes.len(),
            expected,
        });
    };
    inline_entries("security manager table", body, len, expected)
        .map_err(|_| Error::NvItemLength {
            what: "security manager table",
            len: bytes.len(),
            expected,
        })?
        .map(|c| {
            SecurityManagerEntry::read(&mut NvReader::new(c, "security manager entry", layout))
        })
        .collect()
}

/// Encodes the security manager table item, its header counting the used entries.
pub fn security_manager_table_bytes(entries: &[SecurityManagerEntry], layout: NvLayout) -> Vec<u8> {
    let used = entries.iter().filter(|e| e.is_set()).count();
    let mut w = NvWriter::new(layout);
    w.u16(u16::try_from(used).unwrap_or(u16::MAX));
    for e in entries {
        e.write(&mut w);
    }
    w.finish()
}

/// One entry of the APS link key data table (`APSMEDE.h APSME_LinkKeyData_t`): a unique link
/// key and its APS frame counters. 24 bytes in both layouts. Extended table
/// `ZCD_NV_EX_APS_KEY_DATA_TABLE` on Z-Stack 3.x.0, legacy items 0x0201.. on 3.0.x. `Debug`
/// never shows the key.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct ApsLinkKeyDataEntry {
    pub key: [u8; 16],
    pub tx_frame_counter: u32,
    pub rx_frame_counter: u32,
}

impl fmt::Debug for ApsLinkKeyDataEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApsLinkKeyDataEntry")
            .field("key", &"<redacted>")
            .field("tx_frame_counter", &self.tx_frame_counter)
            .field("rx_frame_counter", &self.rx_frame_counter)
            .finish()
    }
}

impl ApsLinkKeyDataEntry {
    pub const LEN: usize = 24;

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let layout = layout_of(
            "APS link key data entry",
            bytes.len(),
            Self::LEN,
            Self::LEN,
            "24",
        )?;
        let mut r = NvReader::new(bytes, "APS link key data entry", layout);
        Ok(Self {
            key: r.array()?,
            tx_frame_counter: r.u32()?,
            rx_frame_counter: r.u32()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = NvWriter::new(NvLayout::Aligned);
        w.bytes(&self.key);
        w.u32(self.tx_frame_counter);
        w.u32(self.rx_frame_counter);
        w.finish()
    }

    /// herdsman's occupancy test: a key that is not all zeros.
    pub fn is_set(&self) -> bool {
        self.key != [0; 16]
    }
}

/// Trust center link key `key_attributes`: the device verified its key (Zigbee 3.0 key
/// exchange done; `ZG_VERIFIED_KEY`).
pub const TCLK_VERIFIED_KEY: u8 = 2;

/// One entry of the trust center link key table (`APSMEDE.h APSME_TCLKDevEntry_t`): a device
/// whose link key is derived from the TCLK seed rotated by `seed_shift_ic_index`, with its
/// APS frame counters and key state. 19 bytes packed, 20 aligned. Extended table
/// `EX_TCLK_TABLE` on Z-Stack 3.x.0, legacy items 0x0111.. on 3.0.x (herdsman
/// `aps-tc-link-key-entry.js`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApsTcLinkKeyEntry {
    pub tx_frame_counter: u32,
    pub rx_frame_counter: u32,
    pub ext_addr: IeeeAddr,
    /// Z-Stack `ZG_PROVISIONAL_KEY` 0, `ZG_UNVERIFIED_KEY` 1, [`TCLK_VERIFIED_KEY`] 2, ...
    pub key_attributes: u8,
    pub key_type: u8,
    pub seed_shift_ic_index: u8,
}

impl ApsTcLinkKeyEntry {
    pub const LEN_UNALIGNED: usize = 19;
    pub const LEN_ALIGNED: usize = 20;

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let layout = layout_of(
            "TC link key entry",
            bytes.len(),
            Self::LEN_UNALIGNED,
            Self::LEN_ALIGNED,
            "19 (packed) or 20 (aligned)",
        )?;
        let mut r = NvReader::new(bytes, "TC link key entry", layout);
        Ok(Self {
            tx_frame_counter: r.u32()?,
            rx_frame_counter: r.u32()?,
            ext_addr: IeeeAddr(r.u64()?),
            key_attributes: r.u8()?,
            key_type: r.u8()?,
            seed_shift_ic_index: r.u8()?,
        })
    }

    pub fn to_bytes(&self, layout: NvLayout) -> Vec<u8> {
        let mut w = NvWriter::new(layout);
        w.u32(self.tx_frame_counter);
        w.u32(self.rx_frame_counter);
        w.u64(self.ext_addr.0);
        w.u8(self.key_attributes);
        w.u8(self.key_type);
        w.u8(self.seed_shift_ic_index);
        w.finish()
    }

    /// herdsman's occupancy test: an IEEE address that is not all zeros.
    pub fn is_set(&self) -> bool {
        self.ext_addr.0 != 0
    }
}

/// The trust center link key seed (NV item TCLK_SEED 0x0101, Z-Stack 3), 16 bytes in both
/// layouts. `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TclkSeed(pub [u8; 16]);

impl fmt::Debug for TclkSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TclkSeed(<redacted>)")
    }
}

impl TclkSeed {
    pub const LEN: usize = 16;

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        <[u8; 16]>::try_from(bytes)
            .map(Self)
            .map_err(|_| Error::NvItemLength {
                what: "TCLK_SEED",
                len: bytes.len(),
                expected: "16",
            })
    }

    /// The link key of the device `ieee` whose TC link key entry carries `shift`
    /// ([`seed_derived_link_key`]).
    pub fn derive(&self, shift: u8, ieee: IeeeAddr) -> [u8; 16] {
        seed_derived_link_key(&self.0, shift, ieee)
    }
}

/// Z-Stack's seed-derived TC link key, as zigbee-herdsman 11.1.1 `createBackup` computes it:
/// the seed rotated left by `shift` bytes, XORed with the device's IEEE address
/// (little-endian, repeated twice). A shift of 16 or more leaves the seed as it is (herdsman's
/// `subarray` arithmetic).
pub fn seed_derived_link_key(seed: &[u8; 16], shift: u8, ieee: IeeeAddr) -> [u8; 16] {
    let shift = usize::from(shift);
    let mut rotated = *seed;
    if shift < 16 {
        rotated.rotate_left(shift);
    }
    let addr = ieee.0.to_le_bytes();
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        *k = rotated[i] ^ addr[i % 8];
    }
    key
}

/// A device's link key as a backup carries it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceLinkKey {
    pub key: [u8; 16],
    pub rx_frame_counter: u32,
    pub tx_frame_counter: u32,
    /// Where it came from.
    pub source: LinkKeySource,
}

impl fmt::Debug for DeviceLinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceLinkKey")
            .field("key", &"<redacted>")
            .field("rx_frame_counter", &self.rx_frame_counter)
            .field("tx_frame_counter", &self.tx_frame_counter)
            .field("source", &self.source)
            .finish()
    }
}

/// Which table a device's link key was found through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKeySource {
    /// A key of its own in the APS link key data table (via the security manager table).
    Unique,
    /// Derived from the TCLK seed (via the trust center link key table).
    SeedDerived,
}

/// A device of the address manager table and its link key, if the coordinator holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorDevice {
    pub nwk_addr: u16,
    pub ieee: IeeeAddr,
    /// The address manager's associated bit: a direct child of the coordinator.
    pub is_child: bool,
    pub link_key: Option<DeviceLinkKey>,
}

/// The link key tables of a Z-Stack 3 coordinator, as read from NV. Every table holds its
/// free entries too, so an index is a position in the table as Z-Stack uses it.
#[derive(Debug, Clone, Default)]
pub struct LinkKeyTables {
    pub address_manager: Vec<AddressManagerEntry>,
    pub security_manager: Vec<SecurityManagerEntry>,
    pub aps_key_data: Vec<ApsLinkKeyDataEntry>,
    pub tclk: Vec<ApsTcLinkKeyEntry>,
    pub tclk_seed: Option<TclkSeed>,
    /// Z-Stack 3.0.x names APS key data entries by legacy NV item id (0x0201 + index);
    /// Z-Stack 3.x.0 by index.
    pub key_nv_ids_are_legacy_items: bool,
}

/// First legacy NV item of the APS link key data table (Z-Stack 3.0.x).
pub const LEGACY_APS_LINK_KEY_DATA_START: u16 = 0x0201;

impl LinkKeyTables {
    /// Every device of the address manager table with its link key, derived as
    /// zigbee-herdsman 11.1.1 `adapter-backup.js createBackup` derives it: a device named by a
    /// used security manager entry gets that entry's APS link key data (key and counters); any
    /// other device with a used TC link key entry for its IEEE address gets the seed-derived
    /// key with that entry's counters (none without a seed).
    ///
    /// Indexes are Z-Stack's: `ami` is the device's position in the address manager table and
    /// `key_nv_id` the position in the APS link key data table (herdsman counts used entries
    /// only, which names the same entries while the tables have no holes).
    pub fn devices(&self) -> Vec<CoordinatorDevice> {
        self.address_manager
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_device())
            .map(|(ami, e)| CoordinatorDevice {
                nwk_addr: e.nwk_addr,
                ieee: e.ext_addr,
                is_child: e.user & ADDRMGR_USER_ASSOC != 0,
                link_key: self.link_key_of(ami, e.ext_addr),
            })
            .collect()
    }

    fn link_key_of(&self, ami: usize, ieee: IeeeAddr) -> Option<DeviceLinkKey> {
        let sme = self
            .security_manager
            .iter()
            .find(|s| s.is_set() && usize::from(s.ami) == ami);
        if let Some(sme) = sme {
            let index = if self.key_nv_ids_are_legacy_items {
                sme.key_nv_id.checked_sub(LEGACY_APS_LINK_KEY_DATA_START)?
            } else {
                sme.key_nv_id
            };
            let data = self
                .aps_key_data
                .get(usize::from(index))
                .filter(|d| d.is_set())?;
            return Some(DeviceLinkKey {
                key: data.key,
                rx_frame_counter: data.rx_frame_counter,
                tx_frame_counter: data.tx_frame_counter,
                source: LinkKeySource::Unique,
            });
        }
        let tclk = self
            .tclk
            .iter()
            .find(|t| t.is_set() && t.ext_addr == ieee)?;
        let seed = self.tclk_seed?;
        Some(DeviceLinkKey {
            key: seed.derive(tclk.seed_shift_ic_index, ieee),
            rx_frame_counter: tclk.rx_frame_counter,
            tx_frame_counter: tclk.tx_frame_counter,
            source: LinkKeySource::SeedDerived,
        })
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

    #[test]
    fn link_key_tables_refuse_lengths_of_no_layout() {
        for len in [0, 10, 13, 24] {
            assert!(matches!(
                AddressManagerEntry::parse(&vec![0; len]),
                Err(Error::NvItemLength { len: l, .. }) if l == len
            ));
        }
        assert!(parse_address_manager_table(&[0; 22], NvLayout::Unaligned).is_ok());
        assert!(parse_address_manager_table(&[0; 23], NvLayout::Unaligned).is_err());
        assert!(parse_address_manager_table(&[0; 22], NvLayout::Aligned).is_err());
        assert!(parse_security_manager_table(&[0; 1], NvLayout::Unaligned).is_err());
        assert!(parse_security_manager_table(&[0; 12], NvLayout::Unaligned).is_ok());
        assert!(parse_security_manager_table(&[0; 12], NvLayout::Aligned).is_err());
        assert!(ApsLinkKeyDataEntry::parse(&[0; 23]).is_err());
        assert!(ApsTcLinkKeyEntry::parse(&[0; 21]).is_err());
        assert!(TclkSeed::parse(&[0; 17]).is_err());
        assert!(TclkSeed::parse(&[0; 15]).is_err());
    }

    #[test]
    fn link_key_debug_hides_keys() {
        let data = ApsLinkKeyDataEntry {
            key: [0xAB; 16],
            tx_frame_counter: 1,
            rx_frame_counter: 2,
        };
        let seed = TclkSeed([0xAB; 16]);
        let dev = DeviceLinkKey {
            key: [0xAB; 16],
            rx_frame_counter: 2,
            tx_frame_counter: 1,
            source: LinkKeySource::Unique,
        };
        let tables = LinkKeyTables {
            aps_key_data: vec![data],
            tclk_seed: Some(seed),
            ..LinkKeyTables::default()
        };
        let text = format!("{data:?} {seed:?} {dev:?} {tables:?}");
        assert!(
            !text.contains("171") && !text.to_lowercase().contains("ab, "),
            "{text}"
        );
    }

    #[test]
    fn devices_get_unique_keys_through_the_security_manager_and_others_seed_keys() {
        let a = IeeeAddr(0x00158d0001a2b3c4);
        let b = IeeeAddr(0x00158d0001a2b3c5);
        let c = IeeeAddr(0x00158d0001a2b3c6);
        let am = |user, nwk, ieee| AddressManagerEntry {
            user,
            nwk_addr: nwk,
            ext_addr: ieee,
        };
        let seed = TclkSeed(core::array::from_fn(|i| i as u8));
        let tables = LinkKeyTables {
            address_manager: vec![
                am(ADDRMGR_USER_ASSOC | ADDRMGR_USER_SECURITY, 0x1A01, a),
                AddressManagerEntry::default(),
                am(ADDRMGR_USER_SECURITY, 0x2B02, b),
                am(ADDRMGR_USER_ASSOC, 0x3C03, c),
                // Binding only: not a device of the backup.
                am(0x04, 0x4D04, IeeeAddr(7)),
            ],
            security_manager: vec![
                SecurityManagerEntry::default(),
                SecurityManagerEntry {
                    ami: 0,
                    key_nv_id: LEGACY_APS_LINK_KEY_DATA_START + 1,
                    authentication_option: SECMGR_AUTHENTICATED_CBCK,
                },
            ],
            aps_key_data: vec![
                ApsLinkKeyDataEntry::default(),
                ApsLinkKeyDataEntry {
                    key: [0x42; 16],
                    tx_frame_counter: 10,
                    rx_frame_counter: 20,
                },
            ],
            tclk: vec![ApsTcLinkKeyEntry {
                tx_frame_counter: 5,
                rx_frame_counter: 6,
                ext_addr: b,
                key_attributes: TCLK_VERIFIED_KEY,
                key_type: 0,
                seed_shift_ic_index: 3,
            }],
            tclk_seed: Some(seed),
            key_nv_ids_are_legacy_items: true,
        };
        let devices = tables.devices();
        assert_eq!(devices.len(), 3);
        let ka = devices[0].link_key.unwrap();
        assert_eq!(
            (ka.key, ka.tx_frame_counter, ka.rx_frame_counter),
            ([0x42; 16], 10, 20)
        );
        assert_eq!(ka.source, LinkKeySource::Unique);
        assert!(devices[0].is_child);
        let kb = devices[1].link_key.unwrap();
        assert_eq!(kb.source, LinkKeySource::SeedDerived);
        assert_eq!(kb.key, seed_derived_link_key(&seed.0, 3, b));
        assert_eq!((kb.tx_frame_counter, kb.rx_frame_counter), (5, 6));
        assert!(!devices[1].is_child);
        assert_eq!(devices[2].link_key, None);
        // Without the seed, TC link key entries give no key.
        let no_seed = LinkKeyTables {
            tclk_seed: None,
            ..tables.clone()
        };
        assert_eq!(no_seed.devices()[1].link_key, None);
        // Z-Stack 3.x.0 names the entry by index.
        let by_index = LinkKeyTables {
            key_nv_ids_are_legacy_items: false,
            security_manager: vec![SecurityManagerEntry {
                ami: 0,
                key_nv_id: 1,
                authentication_option: SECMGR_AUTHENTICATED_CBCK,
            }],
            ..tables
        };
        assert_eq!(by_index.devices()[0].link_key.unwrap().key, [0x42; 16]);
    }
}
