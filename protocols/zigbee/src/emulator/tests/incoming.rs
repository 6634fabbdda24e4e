//! Device frames as AF_INCOMING_MSG_EXT: held-back payloads read back with AF_DATA_RETRIEVE,
//! their expiry, the all-EXT forms, and Green Power notifications to the GP endpoint.

use super::*;
use crate::zcl::green_power::{self, GpNotification, GpdId};
use crate::zcl::AttributeRecord;
use crate::znp::{retrieve_plan, AfIncomingMsgExt, AfRegister, AF_STATUS_FAILED};

fn ext_messages(r: &[ZnpCommand]) -> Vec<AfIncomingMsgExt> {
    r.iter()
        .filter_map(|c| match c {
            ZnpCommand::AfIncomingMsgExt(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// The AF_DATA_RETRIEVE answers among `r` (devices keep reporting meanwhile).
fn retrieved(r: Vec<ZnpCommand>) -> Vec<ZnpCommand> {
    r.into_iter()
        .filter(|c| matches!(c, ZnpCommand::AfDataRetrieveRsp { .. }))
        .collect()
}

/// Reads a held-back payload the way zigbee-herdsman does: 240-byte chunks, then the free.
fn retrieve(h: &mut Host, m: &AfIncomingMsgExt) -> Vec<u8> {
    let mut payload = Vec::new();
    for (index, length) in retrieve_plan(m.len) {
        let r = retrieved(h.send(
            ZnpCommand::AfDataRetrieveReq {
                timestamp: m.timestamp,
                index,
                length,
            },
            ms(1),
        ));
        match &r[..] {
            [ZnpCommand::AfDataRetrieveRsp { status: 0, data }] => {
                assert_eq!(data.len(), usize::from(length), "chunk at {index}");
                payload.extend_from_slice(data);
            }
            other => panic!("retrieve at {index}: {other:?}"),
        }
    }
    payload
}

fn long_text(n: usize) -> ZclValue {
    let s: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    ZclValue::char_str(&s)
}

fn joined_host(incoming: IncomingForm) -> Host {
    let mut h = Host::new(EmulatorConfig {
        incoming,
        ..EmulatorConfig::default()
    });
    h.form();
    h.open_join();
    h
}

#[test]
fn a_large_report_is_held_back_and_retrieved_in_chunks_then_freed() {
    let mut h = joined_host(IncomingForm::Standard);
    let th = DeviceKind::TempHumidity.default_ieee();
    let records = vec![
        AttributeRecord {
            attribute_id: 0x4000,
            value: long_text(250),
        },
        AttributeRecord {
            attribute_id: 0x0005,
            value: long_text(200),
        },
    ];
    assert!(h
        .emu
        .report_attributes(h.now, th, id::BASIC, records.clone()));
    let r = h.collect();
    let ext = ext_messages(&r);
    let [m] = &ext[..] else { panic!("{r:?}") };
    assert!(!m.is_complete() && m.data.is_empty(), "{m:?}");
    assert_eq!(m.src_nwk(), Some(h.nwk_of(DeviceKind::TempHumidity)));
    assert_eq!(m.mac_src_addr, m.src_nwk(), "the trailer is still sent");
    assert_eq!(h.emu.held_payloads(), 1);

    let payload = retrieve(&mut h, m);
    assert_eq!(payload.len(), usize::from(m.len));
    assert!(payload.len() > 2 * 220);
    let frame = ZclFrame::decode(id::BASIC, &payload).unwrap();
    assert_eq!(frame.command, ZclCommand::ReportAttributes { records });
    // Freed: asking again fails, as Z-Stack answers for an unknown timestamp.
    assert_eq!(h.emu.held_payloads(), 0);
    let r = retrieved(h.send(
        ZnpCommand::AfDataRetrieveReq {
            timestamp: m.timestamp,
            index: 0,
            length: 10,
        },
        ms(1),
    ));
    assert_eq!(
        r,
        vec![ZnpCommand::AfDataRetrieveRsp {
            status: AF_STATUS_FAILED,
            data: Vec::new()
        }]
    );
    let stats = h.emu.stats();
    assert_eq!((stats.held_payloads, stats.data_retrieves), (1, 4));
}

#[test]
fn a_large_read_response_is_held_back_too() {
    let mut h = joined_host(IncomingForm::Standard);
    let th = DeviceKind::TempHumidity.default_ieee();
    h.emu.set_attribute(th, id::BASIC, 0x0004, long_text(150));
    h.emu.set_attribute(th, id::BASIC, 0x4000, long_text(150));
    let nwk = h.nwk_of(DeviceKind::TempHumidity);
    let r = h.zcl(
        nwk,
        id::BASIC,
        ZclFrame::read_attributes(9, vec![0x0004, 0x0005, 0x4000]),
        3,
    );
    let ext = ext_messages(&r);
    let [m] = &ext[..] else { panic!("{r:?}") };
    let payload = retrieve(&mut h, m);
    let f = ZclFrame::decode(id::BASIC, &payload).unwrap();
    let ZclCommand::ReadAttributesRsp { records } = f.command else {
        panic!("{f:?}")
    };
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].value, Some(long_text(150)));
    // A small answer still comes as AF_INCOMING_MSG.
    let r = h.zcl(
        nwk,
        id::BASIC,
        ZclFrame::read_attributes(10, vec![0x0005]),
        4,
    );
    assert!(ext_messages(&r).is_empty());
    assert_eq!(incoming(&r).len(), 1);
}

#[test]
fn held_payloads_expire_and_a_reset_loses_them() {
    let mut h = joined_host(IncomingForm::Standard);
    let th = DeviceKind::TempHumidity.default_ieee();
    let big = || {
        vec![AttributeRecord {
            attribute_id: 0x4000,
            value: long_text(240),
        }]
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        assert!(h.emu.report_attributes(h.now, th, id::BASIC, big()));
        held.extend(ext_messages(&h.collect()));
    }
    // Three payloads held back in the same millisecond keep three timestamps.
    let mut stamps: Vec<u32> = held.iter().map(|m| m.timestamp).collect();
    stamps.dedup();
    assert_eq!(stamps.len(), 3, "{held:?}");
    let failed = ZnpCommand::AfDataRetrieveRsp {
        status: AF_STATUS_FAILED,
        data: Vec::new(),
    };
    let ask = |m: &AfIncomingMsgExt| ZnpCommand::AfDataRetrieveReq {
        timestamp: m.timestamp,
        index: 0,
        length: 1,
    };
    // Nobody asked for 15 s: gone.
    h.advance(HELD_PAYLOAD_LIFETIME);
    assert_eq!(
        retrieved(h.send(ask(&held[0]), ms(1))),
        vec![failed.clone()]
    );
    assert_eq!(h.emu.stats().held_payloads_expired, 3);

    assert!(h.emu.report_attributes(h.now, th, id::BASIC, big()));
    let m = ext_messages(&h.collect()).remove(0);
    h.emu.inject(h.now, Fault::ExpireHeldPayloads);
    assert_eq!(retrieved(h.send(ask(&m), ms(1))), vec![failed.clone()]);

    assert!(h.emu.report_attributes(h.now, th, id::BASIC, big()));
    let m = ext_messages(&h.collect()).remove(0);
    h.emu.inject(h.now, Fault::Reset);
    h.collect();
    assert_eq!(retrieved(h.send(ask(&m), ms(1))), vec![failed]);
}

#[test]
fn all_device_traffic_as_ext_with_either_source_address() {
    for (form, by_ieee) in [
        (IncomingForm::AllExt, false),
        (IncomingForm::AllExtIeee, true),
    ] {
        let mut h = joined_host(form);
        let th = DeviceKind::TempHumidity.default_ieee();
        assert!(h.emu.report_temperature(h.now, th, 1234));
        let r = h.collect();
        assert!(incoming(&r).is_empty(), "{form:?}: {r:?}");
        let ext = ext_messages(&r);
        let [m] = &ext[..] else {
            panic!("{form:?}: {r:?}")
        };
        assert!(m.is_complete());
        if by_ieee {
            assert_eq!(m.src_ieee(), Some(th));
        } else {
            assert_eq!(m.src_nwk(), Some(h.nwk_of(DeviceKind::TempHumidity)));
        }
        let f = ZclFrame::decode(m.cluster_id, &m.data).unwrap();
        assert_eq!(
            f.attribute_values()[0].1.as_i64(),
            Some(1234),
            "{form:?}: {f:?}"
        );
        // A large one is still held back.
        let big = vec![AttributeRecord {
            attribute_id: 0x4000,
            value: long_text(230),
        }];
        assert!(h.emu.report_attributes(h.now, th, id::BASIC, big));
        let m = ext_messages(&h.collect()).remove(0);
        assert!(!m.is_complete());
        assert_eq!(m.src_ieee().is_some(), by_ieee);
        assert_eq!(retrieve(&mut h, &m).len(), usize::from(m.len));
    }
}

#[test]
fn green_power_reaches_only_a_registered_gp_endpoint_in_the_gp_group() {
    let mut h = joined_host(IncomingForm::Standard);
    let n = GpNotification {
        options: 0x0000,
        gpd: GpdId::SrcId {
            src_id: 0x0155_F47A,
        },
        frame_counter: 42,
        command_id: 0x22,
        payload: Vec::new(),
        proxy: None,
        mic: None,
    };
    assert!(
        !h.emu.green_power_frame(h.now, n.clone(), true),
        "no GP endpoint"
    );
    let r = h.send(
        ZnpCommand::AfRegisterReq(AfRegister {
            endpoint: green_power::ENDPOINT,
            profile_id: green_power::PROFILE,
            device_id: 0x0005,
            device_version: 0,
            latency_req: 0,
            in_clusters: Vec::new(),
            out_clusters: Vec::new(),
        }),
        ms(1),
    );
    assert!(matches!(r[..], [ZnpCommand::StatusRsp { status: 0, .. }]));
    assert!(h.emu.green_power_frame(h.now, n.clone(), true), "unicast");
    assert!(
        !h.emu.green_power_frame(h.now, n.clone(), false),
        "not in the group"
    );
    h.collect();
    let add = ZnpCommand::ZdoExtAddGroupReq {
        endpoint: green_power::ENDPOINT,
        group_id: green_power::GP_GROUP_ID,
        name: Vec::new(),
    };
    let r = h.send(add.clone(), ms(1));
    assert!(
        matches!(r[..], [ZnpCommand::StatusRsp { status: 0, .. }]),
        "{r:?}"
    );
    // Z-Stack keeps groups: adding again is a duplicate entry.
    let r = h.send(add, ms(1));
    assert!(
        matches!(r[..], [ZnpCommand::StatusRsp { status: 0xB8, .. }]),
        "{r:?}"
    );
    assert!(h.emu.green_power_frame(h.now, n.clone(), false));
    let got: Vec<_> = h
        .collect()
        .into_iter()
        .filter_map(|c| match c {
            ZnpCommand::AfIncomingMsg(m) => Some(m),
            _ => None,
        })
        .collect();
    let [m] = &got[..] else { panic!("{got:?}") };
    assert_eq!(
        (m.cluster_id, m.dst_endpoint, m.group_id),
        (
            green_power::CLUSTER,
            green_power::ENDPOINT,
            green_power::GP_GROUP_ID
        )
    );
    let f = ZclFrame::decode(m.cluster_id, &m.data).unwrap();
    assert_eq!(f.command, ZclCommand::GreenPowerNotification(n));
    assert_eq!(
        (h.emu.stats().gp_frames, h.emu.stats().gp_frames_undelivered),
        (2, 2)
    );
}
