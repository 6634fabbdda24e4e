//! `fieldgate radio backup`: the network read from the coordinator (NIB, active key,
//! security material, link key tables) and shaped as open-coordinator-backup JSON
//! ([`RadioCommand::Backup`]).
//!
//! Reads only; must not write to the coordinator or log the keys it exports.

use std::time::SystemTime;

use anyhow::Result;
use fieldgate_zigbee::nvitems::{self, DeviceLinkKey, LinkKeySource, NwkKeyDescriptor, TclkSeed};
use fieldgate_zigbee::znp::{self, nv};
use fieldgate_zigbee::{IeeeAddr, ZnpCommand};

use super::Coordinator;
use crate::radio::RadioCounters;
use crate::secrets::Secret;

impl Coordinator<'_> {
    /// Reads the network from the coordinator and shapes it as open-coordinator-backup
    /// JSON (version 1). Outer `Err`: the link broke; inner `Err`: the backup failed.
    ///
    /// Reads what zigbee-herdsman 11.1.1 `adapter-backup.js createBackup` reads: the NIB
    /// (PAN ids, channel, nwkUpdateId, security level), the active key info (key and its
    /// sequence number) and the security material table (the NWK frame counter).
    pub(super) async fn backup(&mut self) -> Result<Result<serde_json::Value, String>> {
        macro_rules! step {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                }
            };
        }
        let (coordinator, children) = match self.request(&ZnpCommand::UtilGetDeviceInfoReq).await? {
            Ok(ZnpCommand::UtilGetDeviceInfoRsp {
                ieee,
                device_state,
                assoc_devices,
                ..
            }) => {
                if device_state != znp::DEVICE_STATE_COORDINATOR {
                    return Ok(Err(format!(
                        "the coordinator is not running a network (device state {device_state})"
                    )));
                }
                (ieee, assoc_devices)
            }
            Ok(other) => {
                return Ok(Err(format!(
                    "unexpected answer to UTIL_GET_DEVICE_INFO: {}",
                    other.name()
                )))
            }
            Err(f) => return Ok(Err(format!("UTIL_GET_DEVICE_INFO failed: {f}"))),
        };
        let product = match self.request(&ZnpCommand::SysVersionReq).await? {
            Ok(ZnpCommand::SysVersionRsp { product, .. }) => product,
            Ok(other) => {
                return Ok(Err(format!(
                    "unexpected answer to SYS_VERSION: {}",
                    other.name()
                )))
            }
            Err(f) => return Ok(Err(format!("SYS_VERSION failed: {f}"))),
        };
        if product == 0 {
            return Ok(Err("Z-Stack 1.2 firmware keeps no active key info in NV; \
                           backups need Z-Stack 3"
                .into()));
        }
        let (nib, layout) = match step!(self.read_nib().await?) {
            Some(found) => found,
            None => {
                return Ok(Err(
                    "the coordinator has no NIB (NV item 0x0021): it is not commissioned".into(),
                ))
            }
        };
        let key_info = match step!(self.nv_read_item(nv::NWK_ACTIVE_KEY_INFO).await?) {
            Some(raw) => step!(NwkKeyDescriptor::parse(&raw).map_err(|e| self.nv_fault(
                nv::NWK_ACTIVE_KEY_INFO,
                format!("the active key info does not parse: {e}")
            ))),
            None => {
                return Ok(Err(
                    "the coordinator has no active key info (NV item 0x003a)".into(),
                ))
            }
        };
        let table = step!(self.sec_material_table(product).await?);
        let Some(counter) = nvitems::network_frame_counter_entry(&table, nib.extended_pan_id)
        else {
            RadioCounters::count(&self.stats.bad_nv_items);
            return Ok(Err(format!(
                "the coordinator's security material table ({} entr{}) holds no NWK frame counter \
                 for this network or a generic one; a backup without it could not be restored safely",
                table.len(),
                if table.len() == 1 { "y" } else { "ies" }
            )));
        };
        let tables = step!(self.link_key_tables(product, layout).await?);
        // The coordinator's address manager names the devices (with their keys); devices
        // only the driver knows are kept too, without a key.
        let mut devices: Vec<BackupDevice> = tables
            .devices()
            .into_iter()
            .map(|d| BackupDevice {
                ieee: d.ieee,
                nwk: d.nwk_addr,
                is_child: d.is_child,
                link_key: d.link_key,
            })
            .collect();
        for d in self.devices.values() {
            if !devices.iter().any(|b| b.ieee == d.ieee) {
                devices.push(BackupDevice {
                    ieee: d.ieee,
                    nwk: d.nwk,
                    is_child: children.contains(&d.nwk),
                    link_key: None,
                });
            }
        }
        let facts = BackupFacts {
            coordinator,
            znp_version: product,
            pan_id: nib.nwk_pan_id,
            extended_pan_id: nib.extended_pan_id,
            channel: nib.nwk_logical_channel,
            channel_mask: nib.channel_list,
            nwk_update_id: nib.nwk_update_id,
            security_level: nib.security_level,
            key: Secret::new(key_info.key.to_vec()),
            key_sequence_number: key_info.key_seq_num,
            frame_counter: counter.frame_counter,
            frame_counter_generic: counter.extended_pan_id == nvitems::GENERIC_EXTENDED_PAN_ID,
            tclk_seed: tables.tclk_seed,
            devices,
        };
        let (unique, seed_derived, without) = facts.link_key_counts();
        tracing::info!(radio = %self.io.radio, nwk_update_id = facts.nwk_update_id, key_sequence_number = facts.key_sequence_number, frame_counter = facts.frame_counter, devices = facts.devices.len(), unique_link_keys = unique, seed_derived_link_keys = seed_derived, devices_without_link_key = without, "network state read for the backup");
        Ok(open_coordinator_backup(
            &facts,
            env!("CARGO_PKG_VERSION"),
            SystemTime::now(),
        ))
    }
}

/// What a backup is made of, as read from the coordinator (its NIB, active key info,
/// security material and link key tables) and the driver's device table.
pub(super) struct BackupFacts {
    pub(super) coordinator: IeeeAddr,
    /// SYS_VERSION product (herdsman's `ZnpVersion`: 1 Z-Stack 3.x.0, 2 Z-Stack 3.0.x).
    pub(super) znp_version: u8,
    pub(super) pan_id: u16,
    pub(super) extended_pan_id: u64,
    /// The logical channel the network runs on.
    pub(super) channel: u8,
    pub(super) channel_mask: u32,
    pub(super) nwk_update_id: u8,
    pub(super) security_level: u8,
    pub(super) key: Secret,
    pub(super) key_sequence_number: u8,
    /// The outgoing NWK frame counter.
    pub(super) frame_counter: u32,
    /// The counter came from the generic (any network) entry, not this network's own.
    pub(super) frame_counter_generic: bool,
    /// The seed of the devices' seed-derived link keys (lets a restore put them back as
    /// seed-derived keys instead of unique ones).
    pub(super) tclk_seed: Option<TclkSeed>,
    pub(super) devices: Vec<BackupDevice>,
}

impl BackupFacts {
    /// Devices with a unique link key, with a seed-derived one, and with none.
    pub(super) fn link_key_counts(&self) -> (usize, usize, usize) {
        let count = |want: Option<LinkKeySource>| {
            self.devices
                .iter()
                .filter(|d| d.link_key.map(|k| k.source) == want)
                .count()
        };
        (
            count(Some(LinkKeySource::Unique)),
            count(Some(LinkKeySource::SeedDerived)),
            count(None),
        )
    }
}

/// A device in a backup.
pub(super) struct BackupDevice {
    pub(super) ieee: IeeeAddr,
    pub(super) nwk: u16,
    /// A direct child of the coordinator.
    pub(super) is_child: bool,
    /// The APS link key the coordinator holds for it, with its frame counters.
    pub(super) link_key: Option<DeviceLinkKey>,
}

/// open-coordinator-backup version 1 (zigpy/open-coordinator-backup; the field set of
/// zigbee-herdsman's `models/backup-storage-unified.ts`). Addresses and keys are lower-case
/// hex without `0x`, most significant byte first.
pub(super) fn open_coordinator_backup(
    f: &BackupFacts,
    version: &str,
    now: SystemTime,
) -> Result<serde_json::Value, String> {
    if f.pan_id == 0xFFFF {
        return Err("the coordinator's NIB holds no valid PAN id".into());
    }
    if f.extended_pan_id == 0 || f.extended_pan_id == u64::MAX {
        return Err("the coordinator's NIB holds no valid extended PAN id".into());
    }
    if !(11..=26).contains(&f.channel) {
        return Err(format!(
            "the coordinator's NIB holds no valid channel ({})",
            f.channel
        ));
    }
    let mut channels: Vec<u8> = (11u8..=26)
        .filter(|c| f.channel_mask & (1u32 << c) != 0)
        .collect();
    if channels.is_empty() {
        channels.push(f.channel);
    }
    let key = f.key.expose();
    if key.len() != 16 || key.iter().all(|b| *b == 0) {
        return Err("the coordinator's active key info holds no network key".into());
    }
    let mut devices: Vec<serde_json::Value> = f
        .devices
        .iter()
        .map(|d| {
            let mut v = serde_json::json!({
                "nwk_address": format!("{:04x}", d.nwk),
                "ieee_address": format!("{:016x}", d.ieee.0),
                "is_child": d.is_child,
            });
            // Left out, not null, where there is none: zigpy's schema takes an object
            // or nothing (as zigpy and zigbee-herdsman write their own backups).
            if let Some(k) = d.link_key {
                v["link_key"] = serde_json::json!({
                    "key": hex::encode(k.key),
                    "rx_counter": k.rx_frame_counter,
                    "tx_counter": k.tx_frame_counter,
                });
            }
            v
        })
        .collect();
    let (unique, seed_derived, without) = f.link_key_counts();
    devices.sort_by(|a, b| a["ieee_address"].as_str().cmp(&b["ieee_address"].as_str()));
    Ok(serde_json::json!({
        "metadata": {
            "format": "zigpy/open-coordinator-backup",
            "version": 1,
            // `name@version`: zigpy's schema refuses a source without the `@`.
            "source": format!("fieldgate@{version}"),
            "internal": {
                "date": crate::model::rfc3339(now),
                "znpVersion": f.znp_version,
                "frame_counter_source": if f.frame_counter_generic { "generic security material entry" } else { "this network's security material entry" },
                "link_keys": {
                    "unique": unique,
                    "seed_derived": seed_derived,
                    "devices_without": without,
                },
                "note": "The NWK frame counter and the devices' APS frame counters are the values the coordinator last stored: a restoring tool must raise them (zigbee-herdsman adds 2500). devices[].link_key is left out where the coordinator holds no key for the device (one that never did the Zigbee 3.0 key exchange uses the well-known default key).",
            },
        },
        "stack_specific": {
            "zstack": {
                "tclk_seed": f.tclk_seed.map(|s| hex::encode(s.0)),
            },
        },
        "coordinator_ieee": format!("{:016x}", f.coordinator.0),
        "pan_id": format!("{:04x}", f.pan_id),
        "extended_pan_id": format!("{:016x}", f.extended_pan_id),
        "nwk_update_id": f.nwk_update_id,
        "security_level": f.security_level,
        "channel": f.channel,
        "channel_mask": channels,
        "network_key": {
            "key": hex::encode(key),
            "sequence_number": f.key_sequence_number,
            "frame_counter": f.frame_counter,
        },
        "devices": devices,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> BackupFacts {
        BackupFacts {
            coordinator: IeeeAddr(0x00124b001cdd0001),
            znp_version: 1,
            pan_id: 0x1A62,
            extended_pan_id: 0xDDDD_DDDD_DDDD_DD01,
            channel: 15,
            channel_mask: 1 << 15,
            nwk_update_id: 3,
            security_level: 5,
            key: Secret::new(vec![0x11; 16]),
            key_sequence_number: 2,
            frame_counter: 70_001,
            frame_counter_generic: false,
            tclk_seed: Some(TclkSeed([0x33; 16])),
            devices: vec![
                BackupDevice {
                    ieee: IeeeAddr(0x00158d0001a2b3c4),
                    nwk: 0x1A01,
                    is_child: true,
                    link_key: Some(DeviceLinkKey {
                        key: [0x22; 16],
                        rx_frame_counter: 7,
                        tx_frame_counter: 9,
                        source: LinkKeySource::SeedDerived,
                    }),
                },
                BackupDevice {
                    ieee: IeeeAddr(0x00158d0001a2b3c5),
                    nwk: 0x1A02,
                    is_child: false,
                    link_key: None,
                },
            ],
        }
    }

    #[test]
    fn backup_json_carries_the_values_read_from_the_coordinator() {
        let b = open_coordinator_backup(&facts(), "1.0", SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(b["pan_id"], "1a62");
        assert_eq!(b["extended_pan_id"], "dddddddddddddd01");
        assert_eq!(b["channel"], 15);
        assert_eq!(b["channel_mask"], serde_json::json!([15]));
        assert_eq!(b["nwk_update_id"], 3);
        assert_eq!(b["security_level"], 5);
        assert_eq!(b["network_key"]["sequence_number"], 2);
        assert_eq!(b["network_key"]["frame_counter"], 70_001);
        assert!(b["metadata"]["internal"]
            .get("not_read_from_coordinator")
            .is_none());
        assert_eq!(b["devices"][0]["ieee_address"], "00158d0001a2b3c4");
        assert_eq!(
            b["devices"][0]["link_key"],
            serde_json::json!({"key": "22".repeat(16), "rx_counter": 7, "tx_counter": 9})
        );
        assert!(b["devices"][1].get("link_key").is_none(), "{b}");
        assert_eq!(b["devices"][1]["is_child"], false);
        assert_eq!(
            b["metadata"]["internal"]["link_keys"],
            serde_json::json!({"unique": 0, "seed_derived": 1, "devices_without": 1})
        );
        assert_eq!(b["stack_specific"]["zstack"]["tclk_seed"], "33".repeat(16));
        let bad = |f: BackupFacts| {
            open_coordinator_backup(&f, "1.0", SystemTime::UNIX_EPOCH).unwrap_err()
        };
        assert!(bad(BackupFacts {
            channel: 0,
            ..facts()
        })
        .contains("channel"));
        assert!(bad(BackupFacts {
            pan_id: 0xFFFF,
            ..facts()
        })
        .contains("PAN id"));
        assert!(bad(BackupFacts {
            extended_pan_id: 0,
            ..facts()
        })
        .contains("extended PAN id"));
        assert!(bad(BackupFacts {
            key: Secret::new(vec![0; 16]),
            ..facts()
        })
        .contains("network key"));
    }
}
