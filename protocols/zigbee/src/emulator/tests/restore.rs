//! A host's restore: the network it writes into NV is the one the stick runs after its
//! reset, and the devices of that network are heard again, on the same stick or on
//! another one the backup is restored onto.

use std::collections::BTreeSet;

use super::*;

/// Configures the sensor's temperature reporting and checks a report follows.
fn configure_temperature_reporting(h: &mut Host) -> u16 {
    let th = h.nwk_of(DeviceKind::TempHumidity);
    let cfg = ZclFrame::configure_reporting(
        5,
        vec![crate::zcl::ReportingConfig::Send {
            attribute_id: 0,
            data_type: crate::zcl::DataType::INT16,
            min_interval: 10,
            max_interval: 300,
            reportable_change: Some(ZclValue::i16(10)),
        }],
    );
    let frames = incoming(&h.zcl(th, id::TEMPERATURE, cfg, 5));
    assert!(frames.iter().any(|(c, _)| *c == id::TEMPERATURE));
    th
}

fn temperature_reports(r: &[ZnpCommand]) -> usize {
    incoming(r)
        .iter()
        .filter(|(c, f)| {
            *c == id::TEMPERATURE && matches!(f.command, ZclCommand::ReportAttributes { .. })
        })
        .count()
}

/// The NV items a host's restore writes for the network (zigbee-herdsman's
/// `AdapterBackup.restoreBackup`, zigpy-znp's `write_network_info`).
const NETWORK_ITEMS: [u16; 8] = [
    nv::NIB,
    nv::NWK_ACTIVE_KEY_INFO,
    nv::NWK_ALTERN_KEY_INFO,
    nv::NWKKEY,
    nv::PRECFGKEY,
    nv::PANID,
    nv::CHANLIST,
    nv::EXTENDED_PAN_ID,
];

#[test]
fn after_a_restore_the_stick_starts_the_restored_network_and_its_devices_are_heard_again() {
    // zigbee-herdsman's restore: a random provisioning network is formed over a factory
    // reset, the backup's network is written into NV over it, then the stick is reset and
    // started. A real Z-Stack then runs the network its NV holds; the devices, which never
    // left that network, are heard again as they were (address, reporting).
    let mut h = Host::new(EmulatorConfig::default());
    h.form();
    h.open_join();
    let th = configure_temperature_reporting(&mut h);
    let formed = h.emu.network().unwrap();
    let saved: Vec<(u16, Vec<u8>)> = NETWORK_ITEMS
        .iter()
        .map(|id| (*id, h.emu.nv_item(*id).unwrap().to_vec()))
        .collect();

    h.write_nv(nv::STARTUP_OPTION, vec![nv::STARTUP_CLEAR_ALL]);
    h.send(ZnpCommand::SysResetReq { reset_type: 1 }, ms(50));
    h.write_nv(nv::PANID, 0x7777u16.to_le_bytes().to_vec());
    h.write_nv(nv::CHANLIST, (1u32 << 20).to_le_bytes().to_vec());
    h.write_nv(nv::EXTENDED_PAN_ID, 0x1234u64.to_le_bytes().to_vec());
    h.write_nv(nv::PRECFGKEY, vec![0xAB; 16]);
    let r = h.send(
        ZnpCommand::BdbStartCommissioningReq {
            mode: crate::znp::BDB_MODE_FORMATION,
        },
        ms(200),
    );
    assert!(r.contains(&ZnpCommand::ZdoStateChangeInd {
        state: DEVICE_STATE_COORDINATOR
    }));
    let provisioning = h.emu.network().unwrap();
    assert_ne!(provisioning, formed);
    // The devices stay on their own network: nothing of theirs reaches this one.
    assert_eq!(temperature_reports(&h.wait(Duration::from_secs(8))), 0);
    assert!(h.emu.devices().iter().all(|d| d.nwk.is_none()));

    for (id, value) in saved {
        h.write_nv(id, value);
    }
    let r = h.send(ZnpCommand::SysResetReq { reset_type: 1 }, ms(50));
    assert!(matches!(r[..], [ZnpCommand::SysResetInd { .. }]), "{r:?}");
    let r = h.send(
        ZnpCommand::ZdoStartupFromAppReq { start_delay: 100 },
        ms(100),
    );
    assert!(
        r.contains(&ZnpCommand::ZdoStateChangeInd {
            state: DEVICE_STATE_COORDINATOR
        }),
        "{r:?}"
    );
    assert_eq!(h.emu.network(), Some(formed));
    assert_eq!(h.nwk_of(DeviceKind::TempHumidity), th);
    // Reporting configured before the restore goes on without being configured again.
    assert!(temperature_reports(&h.wait(Duration::from_secs(8))) > 0);
    // A device joining now gets an address none of the network's devices holds.
    let held: Vec<u16> = h.emu.devices().iter().filter_map(|d| d.nwk).collect();
    assert_eq!(
        held.iter().collect::<BTreeSet<_>>().len(),
        held.len(),
        "{held:?}"
    );
}

#[test]
fn a_network_restored_onto_another_stick_keeps_the_devices_its_address_manager_lists() {
    // The backup of one stick restored onto a factory-new one (a replaced coordinator):
    // the devices are on the network already, at the addresses the backup lists, and
    // answer the new coordinator without joining again.
    let mut old = Host::new(EmulatorConfig::default());
    old.form();
    old.open_join();
    let plug = old.nwk_of(DeviceKind::SmartPlug);
    let mut new = Host::new(EmulatorConfig::default());
    new.emu.nv = old.emu.nv.clone();
    new.emu.ext_nv = old.emu.ext_nv.clone();
    new.send(ZnpCommand::SysResetReq { reset_type: 1 }, ms(50));
    new.send(
        ZnpCommand::ZdoStartupFromAppReq { start_delay: 100 },
        ms(100),
    );
    assert_eq!(new.emu.network(), old.emu.network());
    assert_eq!(new.nwk_of(DeviceKind::SmartPlug), plug);
    let r = new.zcl(plug, id::ON_OFF, clusters::on_off(OnOffCommand::On, 9), 9);
    assert!(
        incoming(&r)
            .iter()
            .any(|(c, f)| *c == id::ON_OFF && f.header.tsn == 9),
        "{r:?}"
    );

    // A network with another key is not theirs, even with the same ids.
    let mut other = Host::new(EmulatorConfig::default());
    other.emu.nv = old.emu.nv.clone();
    other.emu.ext_nv = old.emu.ext_nv.clone();
    other.emu.device_keys.insert(
        old.emu.devices()[0].ieee,
        DeviceKeys {
            active: vec![0x55; 16],
            alternate: None,
        },
    );
    other.send(ZnpCommand::SysResetReq { reset_type: 1 }, ms(50));
    assert_eq!(other.emu.devices()[0].nwk, None);
    assert!(other.emu.devices()[1].nwk.is_some());
}
