//! The OSAL NV items a factory-new (or cleared) Z-Stack coordinator has before any host
//! touched it. Host stacks depend on them: zigbee-herdsman sizes the NV struct layout from
//! NWKKEY (0x0082) and compares the active and alternate key items; zigpy-znp rewrites stack
//! settings with `create=False`, which fails on an item that does not exist.
//!
//! Values are the ones zigpy-znp's NVRAM fixtures read from real sticks right after a
//! reset (`tests/nvram/CC2652R-ZStack4.reset.json` for Z-Stack 3.x.0 on a CC2652R and
//! `CC2531-ZStack3.reset.json` for Z-Stack 3.0.x on a CC2531), with the coordinator's own
//! address, preconfigured key and TCLK seed in place of the sticks' ones. The NIB and the
//! "has configured" flag are absent until a network is formed, as on those sticks.

use std::collections::BTreeMap;

use super::Firmware;
use crate::znp::nv;
use crate::IeeeAddr;

/// A factory item: (id, value on 3.x.0 (empty: none), value on 3.0.x (`None`: none)).
type FactoryItem = (u16, &'static [u8], Option<&'static [u8]>);

/// Items whose factory value does not depend on the coordinator.
#[rustfmt::skip]
const ITEMS: &[FactoryItem] = &[
    (0x0003, &[0x00], Some(&[0x00])),                         // STARTUP_OPTION
    (0x0004, &[0x0a], Some(&[0x0a])),                         // START_DELAY
    (0x0024, &[0xb8, 0x0b], Some(&[0xe8, 0x03])),             // POLL_RATE_OLD16
    (0x0035, &[                                               // POLL_RATE
        0xb8, 0x0b, 0x00, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x64, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe8, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x84, 0x59, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00,
    ], Some(&[0xe8, 0x03, 0x00, 0x00])),
    (0x0028, &[0x02], Some(&[0x02])),                         // DATA_RETRIES
    (0x0029, &[0x03], Some(&[0x02])),                         // POLL_FAILURE_RETRIES
    (0x002a, &[0x02], Some(&[0x02])),                         // STACK_PROFILE
    (0x002b, &[0x14], Some(&[0x07])),                         // INDIRECT_MSG_TIMEOUT
    (0x002c, &[0x1e], Some(&[0x1e])),                         // ROUTE_EXPIRY_TIME
    (0x002e, &[0x02], Some(&[0x02])),                         // BCAST_RETRIES
    (0x002f, &[0x05], Some(&[0x05])),                         // PASSIVE_ACK_TIMEOUT
    (0x0030, &[0x1e], Some(&[0x14])),                         // BCAST_DELIVERY_TIME
    (0x0032, &[0x01], Some(&[0x01])),                         // CONCENTRATOR_ENABLE
    (0x0033, &[0x78], Some(&[0x78])),                         // CONCENTRATOR_DISCOVERY
    (0x0034, &[0x0a], Some(&[0x0a])),                         // CONCENTRATOR_RADIUS
    (0x0036, &[0x01], Some(&[0x00])),                         // CONCENTRATOR_RC
    (0x0037, &[0x01], Some(&[0x01])),                         // NWK_MGR_MODE
    (0x0038, &[0xff], Some(&[0x0a])),                         // SRC_RTG_EXPIRY_TIME
    (0x0039, &[0x05], Some(&[0x05])),                         // ROUTE_DISCOVERY_TIME
    (nv::NWK_ACTIVE_KEY_INFO, &[0; 17], Some(&[0; 17])),
    (nv::NWK_ALTERN_KEY_INFO, &[0; 17], Some(&[0; 17])),
    (0x003c, &[0x00], Some(&[0x00])),                         // ROUTER_OFF_ASSOC_CLEANUP
    (0x003d, &[0x01], Some(&[0x01])),                         // NWK_LEAVE_REQ_ALLOWED
    (0x003e, &[0x00], Some(&[0x00])),                         // NWK_CHILD_AGE_ENABLE
    (0x0043, &[0x03], Some(&[0x03])),                         // APS_FRAME_RETRIES
    (0x0044, &[0xb8, 0x0b], Some(&[0xb8, 0x0b])),             // APS_ACK_WAIT_DURATION
    (0x0045, &[0x02], Some(&[0x02])),                         // APS_ACK_WAIT_MULTIPLIER
    (0x0046, &[0x80, 0x3e], Some(&[0x80, 0x3e])),             // BINDING_TIME
    (nv::APS_USE_EXT_PANID, &[0; 8], Some(&[0; 8])),
    (0x0048, &[0x01], Some(&[0x01])),                         // APS_USE_INSECURE_JOIN
    (0x0049, &[0xfe, 0xff], Some(&[0xfe, 0xff])),             // COMMISSIONED_NWK_ADDR
    (0x004b, &[0x02], Some(&[0x02])),                         // APS_NONMEMBER_RADIUS
    (0x004d, &[0xe8, 0x03], Some(&[0xe8, 0x03])),             // APS_DUPREJ_TIMEOUT_INC
    (0x004e, &[0x0a], Some(&[0x0a])),                         // APS_DUPREJ_TIMEOUT_COUNT
    (0x004f, &[0x05, 0x00], Some(&[0x05, 0x00])),             // APS_DUPREJ_TABLE_SIZE
    (0x0051, &[0x01], Some(&[0x01])),                         // NWK_PARENT_INFO
    (0x0052, &[0x08], Some(&[0x08])),                         // NWK_ENDDEV_TIMEOUT_DEF
    (0x0053, &[0x08], Some(&[0x08])),                         // END_DEV_TIMEOUT_VALUE
    (0x0054, &[0x00], Some(&[0x00])),                         // END_DEV_CONFIGURATION
    (nv::BDB_NODE_IS_ON_A_NETWORK, &[0x00], Some(&[0x00])),
    (nv::PRECFGKEYS_ENABLE, &[0x00], Some(&[0x00])),
    (0x0064, &[], Some(&[0x04])),                             // SECURITY_MODE (3.0.x only)
    (0x0065, &[0x01], Some(&[0x01])),                         // SECURE_PERMIT_JOIN
    (0x0066, &[0x01], Some(&[0x01])),                         // APS_LINK_KEY_TYPE
    (0x0067, &[0x00], Some(&[0x00])),                         // APS_ALLOW_R19_SECURITY
    (0x006d, &[0x01], Some(&[0x01])),                         // USE_DEFAULT_TCLK
    (0x0071, &[0; 8], Some(&[0; 8])),                         // TRUSTCENTER_ADDR
    (0x0081, &[0; 17], Some(&[0; 17])),                       // USERDESC
    (nv::PANID, &[0xff, 0xff], Some(&[0xff, 0xff])),
    (nv::CHANLIST, &[0; 4], Some(&[0; 4])),
    (0x0086, &[0x04], Some(&[0x04])),                         // SCAN_DURATION
    (nv::LOGICAL_TYPE, &[0x00], Some(&[0x00])),
    (0x0088, &[0x14], Some(&[0x14])),                         // NWKMGR_MIN_TX
    (nv::ZDO_DIRECT_CB, &[0x01], Some(&[0x01])),
    (0x00a1, &[0xe0], Some(&[0xe0])),                         // SAPI_ENDPOINT
];

/// EXTADDR: the IEEE address the stick was programmed with.
pub const EXTADDR: u16 = 0x0001;

/// The preconfigured network key a factory-new coordinator of this address holds (the
/// stack draws one at random; here it is deterministic per coordinator).
pub fn default_precfg_key(ieee: IeeeAddr) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&ieee.0.rotate_left(29).to_le_bytes());
    key[8..].copy_from_slice(&(!ieee.0).rotate_left(7).to_be_bytes());
    key
}

/// The TCLK seed of a coordinator of this address (random in the stack, fixed here).
pub fn default_tclk_seed(ieee: IeeeAddr) -> [u8; 16] {
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&ieee.0.to_be_bytes());
    seed[8..].copy_from_slice(&(!ieee.0).rotate_left(13).to_le_bytes());
    seed
}

/// The NV items of a factory-new coordinator with address `ieee`.
pub fn factory_nv(firmware: Firmware, ieee: IeeeAddr) -> BTreeMap<u16, Vec<u8>> {
    let mut items = BTreeMap::new();
    for (id, zstack3x0, zstack30x) in ITEMS {
        let value = match firmware {
            Firmware::ZStack3x0 => Some(*zstack3x0).filter(|v| !v.is_empty()),
            Firmware::ZStack30x => *zstack30x,
        };
        if let Some(v) = value {
            items.insert(*id, v.to_vec());
        }
    }
    items.insert(EXTADDR, ieee.0.to_le_bytes().to_vec());
    items.insert(nv::EXTENDED_PAN_ID, ieee.0.to_le_bytes().to_vec());
    items.insert(nv::PRECFGKEY, default_precfg_key(ieee).to_vec());
    items.insert(nv::TCLK_SEED, default_tclk_seed(ieee).to_vec());
    // The network key with its frame counter, zeroed: 21 bytes packed, 24 aligned.
    let nwkkey_len = match firmware.layout() {
        crate::nvitems::NvLayout::Aligned => 24,
        crate::nvitems::NvLayout::Unaligned => 21,
    };
    items.insert(nv::NWKKEY, vec![0; nwkkey_len]);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_firmwares_have_the_items_hosts_read_at_start_up() {
        for (fw, nwkkey) in [(Firmware::ZStack3x0, 24), (Firmware::ZStack30x, 21)] {
            let nv = factory_nv(fw, IeeeAddr(0x00124b0001020304));
            assert_eq!(nv[&nv::NWKKEY].len(), nwkkey);
            assert_eq!(nv[&nv::NWK_ACTIVE_KEY_INFO], vec![0; 17]);
            assert_eq!(nv[&nv::NWK_ALTERN_KEY_INFO], vec![0; 17]);
            assert_eq!(nv[&nv::PANID], vec![0xff, 0xff]);
            assert_eq!(nv[&EXTADDR], 0x00124b0001020304u64.to_le_bytes().to_vec());
            assert!(!nv.contains_key(&nv::NIB));
            assert!(!nv.contains_key(&nv::HAS_CONFIGURED_ZSTACK3));
        }
        assert!(factory_nv(Firmware::ZStack30x, IeeeAddr(1)).contains_key(&0x0064));
        assert!(!factory_nv(Firmware::ZStack3x0, IeeeAddr(1)).contains_key(&0x0064));
    }
}
