//! The coordinator's APS link key state in NV, as Z-Stack 3 keeps it after devices join:
//! the address manager table (every joined device), the trust center link key table (devices
//! that did the Zigbee 3.0 key exchange; their key is derived from the TCLK seed), the
//! security manager and APS link key data tables (devices with a key of their own, as
//! `ZDSecMgrAddLinkKey` stores one) and the TCLK seed written at formation. Stored in the
//! firmware's layout and places: extended tables on Z-Stack 3.x.0, the inline ADDRMGR item
//! and legacy items on 3.0.x; all of it survives resets like any NV item.

use super::{Emulator, Firmware};
use crate::nvitems::{
    address_manager_table_bytes, parse_address_manager_table, parse_security_manager_table,
    security_manager_table_bytes, AddressManagerEntry, ApsLinkKeyDataEntry, ApsTcLinkKeyEntry,
    DeviceLinkKey, LinkKeyTables, SecurityManagerEntry, TclkSeed, ADDRMGR_USER_ASSOC,
    ADDRMGR_USER_SECURITY, SECMGR_AUTHENTICATED_CBCK, TCLK_VERIFIED_KEY,
};
use crate::znp::nv;
use crate::IeeeAddr;

/// Table capacities the emulated firmware initialises (small; a real build has more).
pub const ADDRESS_MANAGER_CAPACITY: u16 = 16;
pub const SECURITY_MANAGER_CAPACITY: u16 = 8;
pub const APS_KEY_DATA_CAPACITY: u16 = 8;
pub const TCLK_TABLE_CAPACITY: u16 = 8;

/// APS frames of the key exchange a joining Zigbee 3.0 device does with the trust center:
/// Transport Key and Confirm Key out, Verify Key in.
const KEY_EXCHANGE_TX: u32 = 2;
const KEY_EXCHANGE_RX: u32 = 1;

/// A free address manager entry as herdsman's empty table holds it.
const FREE_AM: AddressManagerEntry = AddressManagerEntry {
    user: 0,
    nwk_addr: 0,
    ext_addr: IeeeAddr(0),
};

/// A table kept entry by entry: an extended item on Z-Stack 3.x.0, legacy items on 3.0.x.
#[derive(Clone, Copy)]
enum EntryTable {
    ApsKeyData,
    Tclk,
    AddressManager,
}

impl EntryTable {
    fn extended_item(self) -> u16 {
        match self {
            Self::ApsKeyData => nv::EX_APS_KEY_DATA_TABLE,
            Self::Tclk => nv::EX_TCLK_TABLE,
            Self::AddressManager => nv::EX_ADDRMGR,
        }
    }

    fn legacy_start(self) -> Option<u16> {
        match self {
            Self::ApsKeyData => Some(nv::APS_LINK_KEY_DATA_START),
            Self::Tclk => Some(nv::LEGACY_TCLK_TABLE_START),
            // Z-Stack 3.0.x keeps the address manager as one inline item.
            Self::AddressManager => None,
        }
    }

    fn capacity(self) -> u16 {
        match self {
            Self::ApsKeyData => APS_KEY_DATA_CAPACITY,
            Self::Tclk => TCLK_TABLE_CAPACITY,
            Self::AddressManager => ADDRESS_MANAGER_CAPACITY,
        }
    }
}

impl Emulator {
    /// The link key tables as they are in NV (what a backup reads).
    pub fn link_key_tables(&self) -> LinkKeyTables {
        LinkKeyTables {
            address_manager: self.address_manager(),
            security_manager: self.security_manager(),
            aps_key_data: (0..APS_KEY_DATA_CAPACITY)
                .filter_map(|i| self.entry_raw(EntryTable::ApsKeyData, i))
                .filter_map(|b| ApsLinkKeyDataEntry::parse(b).ok())
                .collect(),
            tclk: (0..TCLK_TABLE_CAPACITY)
                .filter_map(|i| self.entry_raw(EntryTable::Tclk, i))
                .filter_map(|b| ApsTcLinkKeyEntry::parse(b).ok())
                .collect(),
            tclk_seed: self.tclk_seed(),
            key_nv_ids_are_legacy_items: self.cfg.firmware == Firmware::ZStack30x,
        }
    }

    /// The link key the coordinator holds for device `ieee`, if any.
    pub fn device_link_key(&self, ieee: IeeeAddr) -> Option<DeviceLinkKey> {
        self.link_key_tables()
            .devices()
            .into_iter()
            .find(|d| d.ieee == ieee)?
            .link_key
    }

    /// The TCLK seed in NV.
    pub fn tclk_seed(&self) -> Option<TclkSeed> {
        TclkSeed::parse(self.nv.get(&nv::TCLK_SEED)?).ok()
    }

    /// Gives joined device `ieee` a link key of its own, as `ZDSecMgrAddLinkKey` does (what
    /// ZDO_SET_LINK_KEY from a host leaves in NV): a security manager entry pointing at an APS
    /// link key data entry, which takes precedence over a seed-derived key. False when the
    /// device is not in the address manager or a table is full.
    pub fn add_unique_link_key(&mut self, ieee: IeeeAddr, key: [u8; 16]) -> bool {
        let mut am = self.address_manager();
        let Some(ami) = am.iter().position(|e| e.is_set() && e.ext_addr == ieee) else {
            return false;
        };
        let Ok(ami) = u16::try_from(ami) else {
            return false;
        };
        let data = ApsLinkKeyDataEntry {
            key,
            tx_frame_counter: 0,
            rx_frame_counter: 0,
        };
        let mut sm = self.security_manager();
        let slot = match sm.iter().position(|s| s.is_set() && s.ami == ami) {
            Some(i) => i,
            None => match sm.iter().position(|s| !s.is_set()) {
                Some(i) => i,
                None => return false,
            },
        };
        let index = match sm
            .get(slot)
            .filter(|s| s.is_set())
            .map(|s| self.key_index(s))
        {
            Some(Some(i)) => i,
            _ => match (0..APS_KEY_DATA_CAPACITY).find(|i| {
                self.entry_raw(EntryTable::ApsKeyData, *i)
                    .and_then(|b| ApsLinkKeyDataEntry::parse(b).ok())
                    .is_some_and(|e| !e.is_set())
            }) {
                Some(i) => i,
                None => return false,
            },
        };
        self.set_entry(EntryTable::ApsKeyData, index, data.to_bytes());
        sm[slot] = SecurityManagerEntry {
            ami,
            key_nv_id: match self.cfg.firmware {
                Firmware::ZStack30x => nv::APS_LINK_KEY_DATA_START + index,
                Firmware::ZStack3x0 => index,
            },
            authentication_option: SECMGR_AUTHENTICATED_CBCK,
        };
        self.set_security_manager(&sm);
        if let Some(e) = am.get_mut(usize::from(ami)) {
            e.user |= ADDRMGR_USER_SECURITY;
        }
        self.set_address_manager(&am);
        true
    }

    /// Formation: the TCLK seed (made up once, kept until NV is cleared) and the empty
    /// tables, in the firmware's layout. `fresh`: a new network, so every table starts empty.
    pub(super) fn init_link_key_state(&mut self, fresh: bool) {
        if !self.nv.contains_key(&nv::TCLK_SEED) {
            // The stack draws a random seed; here it is deterministic per coordinator.
            let seed = super::factory::default_tclk_seed(self.cfg.ieee);
            self.nv.insert(nv::TCLK_SEED, seed.to_vec());
        }
        if fresh || !self.nv.contains_key(&nv::APS_LINK_KEY_TABLE) {
            self.set_address_manager(&vec![FREE_AM; usize::from(ADDRESS_MANAGER_CAPACITY)]);
            self.set_security_manager(&vec![
                SecurityManagerEntry::default();
                usize::from(SECURITY_MANAGER_CAPACITY)
            ]);
            for i in 0..APS_KEY_DATA_CAPACITY {
                self.set_entry(
                    EntryTable::ApsKeyData,
                    i,
                    ApsLinkKeyDataEntry::default().to_bytes(),
                );
            }
            let layout = self.cfg.firmware.layout();
            for i in 0..TCLK_TABLE_CAPACITY {
                self.set_entry(
                    EntryTable::Tclk,
                    i,
                    ApsTcLinkKeyEntry::default().to_bytes(layout),
                );
            }
        }
    }

    /// A device joined: its address manager entry and, after the Zigbee 3.0 key exchange,
    /// its trust center link key entry (verified, seed-derived; the shift is the stack's pick).
    pub(super) fn record_join(&mut self, ieee: IeeeAddr, nwk: u16, key_exchange: bool) {
        let layout = self.cfg.firmware.layout();
        let mut user = ADDRMGR_USER_ASSOC;
        if key_exchange {
            let tclk = self.tclk_entries();
            let slot = tclk
                .iter()
                .position(|(_, e)| e.is_set() && e.ext_addr == ieee)
                .or_else(|| tclk.iter().position(|(_, e)| !e.is_set()));
            if let Some(slot) = slot.and_then(|s| tclk.get(s)).map(|(i, _)| *i) {
                let entry = ApsTcLinkKeyEntry {
                    tx_frame_counter: KEY_EXCHANGE_TX,
                    rx_frame_counter: KEY_EXCHANGE_RX,
                    ext_addr: ieee,
                    key_attributes: TCLK_VERIFIED_KEY,
                    key_type: 0,
                    seed_shift_ic_index: (ieee.0 ^ (ieee.0 >> 8)).to_le_bytes()[0] & 0x0F,
                };
                self.set_entry(EntryTable::Tclk, slot, entry.to_bytes(layout));
                user |= ADDRMGR_USER_SECURITY;
            }
        }
        let mut am = self.address_manager();
        let slot = am
            .iter()
            .position(|e| e.is_set() && e.ext_addr == ieee)
            .or_else(|| am.iter().position(|e| !e.is_set()));
        if let Some(e) = slot.and_then(|s| am.get_mut(s)) {
            // A device that rejoins keeps a unique key it had.
            let kept = if e.ext_addr == ieee {
                e.user & ADDRMGR_USER_SECURITY
            } else {
                0
            };
            *e = AddressManagerEntry {
                user: user | kept,
                nwk_addr: nwk,
                ext_addr: ieee,
            };
            self.set_address_manager(&am);
        }
    }

    /// A device left for good: Z-Stack drops its address, its keys and their counters.
    pub(super) fn forget_device(&mut self, ieee: IeeeAddr) {
        let layout = self.cfg.firmware.layout();
        for (i, e) in self.tclk_entries() {
            if e.is_set() && e.ext_addr == ieee {
                self.set_entry(
                    EntryTable::Tclk,
                    i,
                    ApsTcLinkKeyEntry::default().to_bytes(layout),
                );
            }
        }
        let mut am = self.address_manager();
        let Some(ami) = am.iter().position(|e| e.is_set() && e.ext_addr == ieee) else {
            return;
        };
        let mut sm = self.security_manager();
        for s in sm
            .iter_mut()
            .filter(|s| s.is_set() && usize::from(s.ami) == ami)
        {
            if let Some(i) = self.key_index(s) {
                self.set_entry(
                    EntryTable::ApsKeyData,
                    i,
                    ApsLinkKeyDataEntry::default().to_bytes(),
                );
            }
            *s = SecurityManagerEntry::default();
        }
        self.set_security_manager(&sm);
        if let Some(e) = am.get_mut(ami) {
            *e = FREE_AM;
        }
        self.set_address_manager(&am);
    }

    /// The network address the address manager holds for `ieee` as a device of the
    /// network (associated or with a key), as a restore writes it.
    pub(super) fn address_of_member(&self, ieee: IeeeAddr) -> Option<u16> {
        self.address_manager()
            .into_iter()
            .find(|e| e.is_device() && e.ext_addr == ieee)
            .map(|e| e.nwk_addr)
    }

    fn key_index(&self, s: &SecurityManagerEntry) -> Option<u16> {
        match self.cfg.firmware {
            Firmware::ZStack30x => s.key_nv_id.checked_sub(nv::APS_LINK_KEY_DATA_START),
            Firmware::ZStack3x0 => Some(s.key_nv_id),
        }
        .filter(|i| *i < APS_KEY_DATA_CAPACITY)
    }

    fn tclk_entries(&self) -> Vec<(u16, ApsTcLinkKeyEntry)> {
        (0..TCLK_TABLE_CAPACITY)
            .filter_map(|i| {
                let raw = self.entry_raw(EntryTable::Tclk, i)?;
                Some((i, ApsTcLinkKeyEntry::parse(raw).ok()?))
            })
            .collect()
    }

    fn address_manager(&self) -> Vec<AddressManagerEntry> {
        match self.cfg.firmware {
            Firmware::ZStack3x0 => (0..ADDRESS_MANAGER_CAPACITY)
                .filter_map(|i| self.entry_raw(EntryTable::AddressManager, i))
                .filter_map(|b| AddressManagerEntry::parse(b).ok())
                .collect(),
            Firmware::ZStack30x => self
                .nv
                .get(&nv::ADDRMGR)
                .and_then(|b| parse_address_manager_table(b, self.cfg.firmware.layout()).ok())
                .unwrap_or_default(),
        }
    }

    fn set_address_manager(&mut self, table: &[AddressManagerEntry]) {
        let layout = self.cfg.firmware.layout();
        match self.cfg.firmware {
            Firmware::ZStack3x0 => {
                for (i, e) in (0u16..).zip(table) {
                    self.set_entry(EntryTable::AddressManager, i, e.to_bytes(layout));
                }
            }
            Firmware::ZStack30x => {
                self.nv
                    .insert(nv::ADDRMGR, address_manager_table_bytes(table, layout));
            }
        }
    }

    fn security_manager(&self) -> Vec<SecurityManagerEntry> {
        self.nv
            .get(&nv::APS_LINK_KEY_TABLE)
            .and_then(|b| parse_security_manager_table(b, self.cfg.firmware.layout()).ok())
            .unwrap_or_default()
    }

    fn set_security_manager(&mut self, table: &[SecurityManagerEntry]) {
        let bytes = security_manager_table_bytes(table, self.cfg.firmware.layout());
        self.nv.insert(nv::APS_LINK_KEY_TABLE, bytes);
    }

    fn entry_raw(&self, table: EntryTable, index: u16) -> Option<&Vec<u8>> {
        if index >= table.capacity() {
            return None;
        }
        match (self.cfg.firmware, table.legacy_start()) {
            (Firmware::ZStack30x, Some(start)) => self.nv.get(&(start + index)),
            _ => self
                .ext_nv
                .get(&(nv::SYSTEM_ZSTACK, table.extended_item(), index)),
        }
    }

    fn set_entry(&mut self, table: EntryTable, index: u16, bytes: Vec<u8>) {
        match (self.cfg.firmware, table.legacy_start()) {
            (Firmware::ZStack30x, Some(start)) => {
                self.nv.insert(start + index, bytes);
            }
            _ => {
                self.ext_nv
                    .insert((nv::SYSTEM_ZSTACK, table.extended_item(), index), bytes);
            }
        }
    }
}
