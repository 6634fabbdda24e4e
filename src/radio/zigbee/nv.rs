//! Reading and writing the coordinator's NV items: plain OSAL items, whole items read in
//! chunks, extended tables (Z-Stack 3.x.0) and the structures parsed from them (NIB, active
//! key, security material, link key tables).
//!
//! Counts and words a bad item (never its value, which may be a key); must not decide what
//! a missing item means for start-up or a backup (the callers do).

use anyhow::{bail, Context, Result};
use fieldgate_zigbee::nvitems::{
    self, AddressManagerEntry, ApsLinkKeyDataEntry, ApsTcLinkKeyEntry, LinkKeyTables, Nib,
    NvLayout, NwkKeyDescriptor, NwkSecMaterialEntry, TclkSeed,
};
use fieldgate_zigbee::znp::nv;
use fieldgate_zigbee::ZnpCommand;

use super::transport::Fail;
use super::Coordinator;
use crate::radio::RadioCounters;

impl Coordinator<'_> {
    /// One NV item (SYS_OSAL_NV_READ). `Ok(None)`: the coordinator says the item is
    /// missing or not initialised (a non-zero status). An RPC error, any other frame or
    /// no answer is an error: the start-up fails and is retried.
    pub(super) async fn nv_read(&mut self, id: u16) -> Result<Option<Vec<u8>>> {
        match self
            .request(&ZnpCommand::SysOsalNvReadReq { id, offset: 0 })
            .await?
        {
            Ok(ZnpCommand::SysOsalNvReadRsp { status: 0, value }) => Ok(Some(value)),
            // The coordinator's own answer: the item is missing or not initialised.
            Ok(ZnpCommand::SysOsalNvReadRsp { .. }) => Ok(None),
            // Anything else is not an answer about the item. Read as "missing", an RPC
            // error or a stray frame on the read of ZNP_HAS_CONFIGURED would have the
            // start-up form a new network over the coordinator's own.
            Ok(other) => bail!(
                "NV read of item {id:#06x}: the coordinator answered {}",
                other.name()
            ),
            Err(Fail::Timeout) => bail!("NV read of item {id:#06x} timed out"),
            Err(f) => bail!("NV read of item {id:#06x} failed: {f}"),
        }
    }

    pub(super) async fn nv_write(&mut self, id: u16, value: Vec<u8>) -> Result<()> {
        self.must(&ZnpCommand::SysOsalNvWriteReq {
            id,
            offset: 0,
            value,
        })
        .await
        .with_context(|| format!("writing NV item {id:#06x}"))
        .map(|_| ())
    }

    /// A whole OSAL NV item, read as zigbee-herdsman's `AdapterNvMemory.readItem` does:
    /// OSAL_NV_LENGTH, then OSAL_NV_READ_EXT from growing offsets until all of it is in.
    /// `Ok(None)`: the item does not exist. Inner `Err`: the coordinator refused or
    /// answered nonsense (counted in `bad_nv_items`).
    pub(super) async fn nv_read_item(
        &mut self,
        id: u16,
    ) -> Result<Result<Option<Vec<u8>>, String>> {
        let length = match self.request(&ZnpCommand::SysOsalNvLengthReq { id }).await? {
            Ok(ZnpCommand::SysOsalNvLengthRsp { length }) => usize::from(length),
            Ok(other) => {
                return Ok(Err(
                    self.nv_fault(id, format!("unexpected {}", other.name()))
                ))
            }
            Err(f) => return Ok(Err(self.nv_fault(id, format!("OSAL_NV_LENGTH failed: {f}")))),
        };
        if length == 0 {
            return Ok(Ok(None));
        }
        let mut value = Vec::with_capacity(length);
        while value.len() < length {
            let offset = u16::try_from(value.len()).unwrap_or(u16::MAX);
            match self
                .request(&ZnpCommand::SysOsalNvReadExtReq { id, offset })
                .await?
            {
                Ok(ZnpCommand::SysOsalNvReadExtRsp { status: 0, value: chunk })
                    if !chunk.is_empty() && value.len() + chunk.len() <= length =>
                {
                    value.extend_from_slice(&chunk);
                }
                Ok(ZnpCommand::SysOsalNvReadExtRsp { status: 0, value: chunk }) => {
                    return Ok(Err(self.nv_fault(
                        id,
                        format!(
                            "OSAL_NV_READ_EXT at offset {offset} gave {} byte(s) of a {length}-byte item",
                            chunk.len()
                        ),
                    )))
                }
                Ok(ZnpCommand::SysOsalNvReadExtRsp { status, .. }) => {
                    return Ok(Err(self.nv_fault(
                        id,
                        format!("OSAL_NV_READ_EXT at offset {offset}: status {status:#04x}"),
                    )))
                }
                Ok(other) => {
                    return Ok(Err(self.nv_fault(id, format!("unexpected {}", other.name()))))
                }
                Err(f) => {
                    return Ok(Err(
                        self.nv_fault(id, format!("OSAL_NV_READ_EXT failed: {f}"))
                    ))
                }
            }
        }
        Ok(Ok(Some(value)))
    }

    /// One entry of an extended NV table (SimpleLink Z-Stack 3.x.0): SYS_NV_LENGTH, then one
    /// SYS_NV_READ of that length, as herdsman's `readExtendedTableEntry` does.
    pub(super) async fn nv_read_ext(
        &mut self,
        item_id: u16,
        sub_id: u16,
    ) -> Result<Result<Option<Vec<u8>>, String>> {
        let key = (nv::SYSTEM_ZSTACK, item_id, sub_id);
        let what = format!("extended NV item {item_id:#06x}/{sub_id}");
        let length = match self
            .request(&ZnpCommand::SysNvLengthReq {
                sys_id: key.0,
                item_id,
                sub_id,
            })
            .await?
        {
            Ok(ZnpCommand::SysNvLengthRsp { length }) => length,
            Ok(other) => {
                return Ok(Err(
                    self.nv_fault_named(&what, format!("unexpected {}", other.name()))
                ))
            }
            Err(f) => {
                return Ok(Err(
                    self.nv_fault_named(&what, format!("SYS_NV_LENGTH failed: {f}"))
                ))
            }
        };
        if length == 0 {
            return Ok(Ok(None));
        }
        let Ok(len) = u8::try_from(length) else {
            return Ok(Err(self.nv_fault_named(
                &what,
                format!("{length} bytes is more than one SYS_NV_READ carries"),
            )));
        };
        match self
            .request(&ZnpCommand::SysNvReadReq {
                sys_id: key.0,
                item_id,
                sub_id,
                offset: 0,
                len,
            })
            .await?
        {
            Ok(ZnpCommand::SysNvReadRsp { status: 0, value })
                if value.len() == usize::from(len) =>
            {
                Ok(Ok(Some(value)))
            }
            Ok(ZnpCommand::SysNvReadRsp { status: 0, value }) => Ok(Err(self.nv_fault_named(
                &what,
                format!("SYS_NV_READ gave {} byte(s) of {len}", value.len()),
            ))),
            Ok(ZnpCommand::SysNvReadRsp { status, .. }) => Ok(Err(
                self.nv_fault_named(&what, format!("SYS_NV_READ: status {status:#04x}"))
            )),
            Ok(other) => Ok(Err(
                self.nv_fault_named(&what, format!("unexpected {}", other.name()))
            )),
            Err(f) => Ok(Err(
                self.nv_fault_named(&what, format!("SYS_NV_READ failed: {f}"))
            )),
        }
    }

    pub(super) fn nv_fault(&mut self, id: u16, detail: String) -> String {
        self.nv_fault_named(&format!("NV item {id:#06x}"), detail)
    }

    /// Counts and words a bad NV answer (the values themselves are never in the text).
    pub(super) fn nv_fault_named(&mut self, what: &str, detail: String) -> String {
        RadioCounters::count(&self.stats.bad_nv_items);
        format!("{what}: {detail}")
    }

    /// The NIB and the struct layout its length shows (the layout of every NV struct of this
    /// coordinator): `Ok(None)` when the coordinator has none (not commissioned).
    pub(super) async fn read_nib(&mut self) -> Result<Result<Option<(Nib, NvLayout)>, String>> {
        Ok(match self.nv_read_item(nv::NIB).await? {
            Ok(Some(raw)) => match Nib::parse(&raw) {
                Ok(nib) => Ok(Some((
                    nib,
                    Nib::layout_of(raw.len()).unwrap_or(NvLayout::Aligned),
                ))),
                Err(e) => Err(self.nv_fault(nv::NIB, format!("the NIB does not parse: {e}"))),
            },
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        })
    }

    /// The active network key descriptor (NV 0x003A), the one truth about which key the
    /// network runs on and its sequence number. `Ok(None)`: the firmware keeps none (Z-Stack
    /// 1.2 runs on its preconfigured key, sequence 0). A descriptor that does not parse is
    /// counted in `bad_nv_items` and named in the error.
    pub(super) async fn active_key(&mut self) -> Result<Result<Option<NwkKeyDescriptor>, String>> {
        Ok(match self.nv_read(nv::NWK_ACTIVE_KEY_INFO).await? {
            Some(raw) => match NwkKeyDescriptor::parse(&raw) {
                Ok(d) => Ok(Some(d)),
                Err(e) => Err(self.nv_fault(
                    nv::NWK_ACTIVE_KEY_INFO,
                    format!("the active key info does not parse: {e}"),
                )),
            },
            None => Ok(None),
        })
    }

    /// The network security material table: the extended NV table on Z-Stack 3.x.0
    /// (product 1), legacy items 0x0075.. otherwise (zigbee-herdsman 11.1.1
    /// `adapter-backup.js getNetworkSecurityMaterialTable`). Stops at the first absent entry.
    pub(super) async fn sec_material_table(
        &mut self,
        product: u8,
    ) -> Result<Result<Vec<NwkSecMaterialEntry>, String>> {
        /// Bound on extended entries, so a firmware that answers for every subId cannot
        /// keep the driver reading forever.
        const MAX_EXTENDED_ENTRIES: u16 = 64;
        let mut table = Vec::new();
        let extended = product == 1;
        let count = if extended {
            MAX_EXTENDED_ENTRIES
        } else {
            nv::LEGACY_NWK_SEC_MATERIAL_TABLE_LEN
        };
        for i in 0..count {
            let raw = if extended {
                self.nv_read_ext(nv::EX_NWK_SEC_MATERIAL_TABLE, i).await?
            } else {
                self.nv_read_item(nv::LEGACY_NWK_SEC_MATERIAL_TABLE_START + i)
                    .await?
            };
            let raw = match raw {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return Ok(Err(e)),
            };
            match NwkSecMaterialEntry::parse(&raw) {
                Ok(e) => table.push(e),
                Err(e) => {
                    return Ok(Err(self.nv_fault_named(
                        "network security material entry",
                        format!("entry {i} does not parse: {e}"),
                    )))
                }
            }
        }
        Ok(Ok(table))
    }

    /// One NV table kept entry by entry: the extended table `ext_item` on Z-Stack 3.x.0
    /// (product 1), legacy items `legacy_start`.. (at most `legacy_len`) otherwise. Stops at
    /// the first absent entry, as zigbee-herdsman 11.1.1 `AdapterNvMemory.readTable` does.
    pub(super) async fn nv_entry_table<T>(
        &mut self,
        product: u8,
        (ext_item, legacy_start, legacy_len): (u16, u16, u16),
        what: &str,
        parse: fn(&[u8]) -> fieldgate_zigbee::Result<T>,
    ) -> Result<Result<Vec<T>, String>> {
        /// Bound on extended entries, so a firmware that answers for every subId cannot
        /// keep the driver reading forever.
        const MAX_EXTENDED_ENTRIES: u16 = 512;
        let extended = product == 1;
        let count = if extended {
            MAX_EXTENDED_ENTRIES
        } else {
            legacy_len
        };
        let mut table = Vec::new();
        for i in 0..count {
            let raw = if extended {
                self.nv_read_ext(ext_item, i).await?
            } else {
                self.nv_read_item(legacy_start + i).await?
            };
            let raw = match raw {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return Ok(Err(e)),
            };
            match parse(&raw) {
                Ok(e) => table.push(e),
                Err(e) => {
                    return Ok(Err(
                        self.nv_fault_named(what, format!("entry {i} does not parse: {e}"))
                    ))
                }
            }
        }
        Ok(Ok(table))
    }

    /// The tables that hold the devices' APS link keys, read as zigbee-herdsman 11.1.1
    /// `adapter-backup.js createBackup` reads them: the address manager (extended table on
    /// Z-Stack 3.x.0, the inline ADDRMGR item on 3.0.x, in the NIB's `layout`), the security
    /// manager (APS_LINK_KEY_TABLE), the APS link key data and TC link key tables and the
    /// TCLK seed. An absent item is an empty table; one that does not parse fails the backup.
    pub(super) async fn link_key_tables(
        &mut self,
        product: u8,
        layout: NvLayout,
    ) -> Result<Result<LinkKeyTables, String>> {
        macro_rules! step {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                }
            };
        }
        let address_manager = if product == 1 {
            step!(
                self.nv_entry_table(
                    product,
                    (nv::EX_ADDRMGR, 0, 0),
                    "address manager entry",
                    AddressManagerEntry::parse,
                )
                .await?
            )
        } else {
            match step!(self.nv_read_item(nv::ADDRMGR).await?) {
                Some(raw) => step!(nvitems::parse_address_manager_table(&raw, layout).map_err(
                    |e| self.nv_fault(
                        nv::ADDRMGR,
                        format!("the address manager table does not parse: {e}")
                    )
                )),
                None => Vec::new(),
            }
        };
        let security_manager = match step!(self.nv_read_item(nv::APS_LINK_KEY_TABLE).await?) {
            Some(raw) => step!(
                nvitems::parse_security_manager_table(&raw, layout).map_err(|e| self.nv_fault(
                    nv::APS_LINK_KEY_TABLE,
                    format!("the security manager table does not parse: {e}")
                ))
            ),
            None => Vec::new(),
        };
        let aps_key_data = step!(
            self.nv_entry_table(
                product,
                (
                    nv::EX_APS_KEY_DATA_TABLE,
                    nv::APS_LINK_KEY_DATA_START,
                    nv::LEGACY_APS_LINK_KEY_DATA_LEN,
                ),
                "APS link key data entry",
                ApsLinkKeyDataEntry::parse,
            )
            .await?
        );
        let tclk = step!(
            self.nv_entry_table(
                product,
                (
                    nv::EX_TCLK_TABLE,
                    nv::LEGACY_TCLK_TABLE_START,
                    nv::LEGACY_TCLK_TABLE_LEN,
                ),
                "TC link key entry",
                ApsTcLinkKeyEntry::parse,
            )
            .await?
        );
        let tclk_seed = match step!(self.nv_read_item(nv::TCLK_SEED).await?) {
            Some(raw) => Some(step!(TclkSeed::parse(&raw).map_err(
                |e| self.nv_fault(nv::TCLK_SEED, format!("the TCLK seed does not parse: {e}"))
            ))),
            None => None,
        };
        Ok(Ok(LinkKeyTables {
            address_manager,
            security_manager,
            aps_key_data,
            tclk,
            tclk_seed,
            key_nv_ids_are_legacy_items: product != 1,
        }))
    }
}
