//! What independent host stacks (zigbee-herdsman, zigpy-znp) ask of a coordinator beyond
//! joining and reporting: a network restored into NV, group sends and the Groups cluster,
//! the network map, channel changes, errors answered as Z-Stack answers them.

use super::*;

/// A host that restores a network writes it into NV (the NIB, `bdbNodeIsOnANetwork`)
/// and sends BDB formation at every start, as zigpy-znp does: the stick starts the
/// network its NIB holds (not one from the PANID item, which zigpy-znp leaves at
/// 0xFFFF) and reports FormationFailure, as Z-Stack does on a commissioned stick.
#[test]
fn formation_on_a_stick_with_a_network_in_nv_starts_that_network() {
    let mut h = Host::new(EmulatorConfig::default());
    h.form();
    let layout = EmulatorConfig::default().firmware.layout();
    let mut nib = h.emu.nib().expect("a NIB after formation");
    nib.nwk_pan_id = 0x8888;
    nib.nwk_logical_channel = 20;
    nib.channel_list = 1 << 20;
    nib.extended_pan_id = 0x1122_3344_5566_7788;
    for (id, value) in [
        (nv::NIB, nib.to_bytes(layout)),
        (nv::PANID, vec![0xFF, 0xFF]),
    ] {
        h.send(
            ZnpCommand::SysOsalNvWriteReq {
                id,
                offset: 0,
                value,
            },
            ms(1),
        );
    }
    h.send(ZnpCommand::SysResetReq { reset_type: 1 }, ms(50));
    let r = h.send(
        ZnpCommand::BdbStartCommissioningReq {
            mode: crate::znp::BDB_MODE_FORMATION,
        },
        ms(200),
    );
    assert!(
        r.iter().any(|c| matches!(
            c,
            ZnpCommand::BdbCommissioningNotification { status: 8, .. }
        )),
        "{r:?}"
    );
    assert!(r.contains(&ZnpCommand::ZdoStateChangeInd {
        state: DEVICE_STATE_COORDINATOR
    }));
    let net = h.emu.network().unwrap();
    assert_eq!((net.channel, net.pan_id), (20, 0x8888));
    assert_eq!(net.extended_pan_id, 0x1122_3344_5566_7788);
    // The NIB is the host's, not rewritten.
    assert_eq!(h.emu.nib().unwrap().nwk_pan_id, 0x8888);
}

/// A group send (AF_DATA_REQUEST_EXT to a group address) is confirmed, as Z-Stack
/// confirms a multicast once it is out; zigbee-herdsman waits for that confirm.
#[test]
fn a_group_send_is_confirmed() {
    let mut h = Host::new(EmulatorConfig::default());
    h.form();
    let mut p = vec![0x01]; // group addressing
    p.extend_from_slice(&[0x05, 0x00, 0, 0, 0, 0, 0, 0]); // group 5
    p.push(0xFF); // endpoint
    p.extend_from_slice(&[0, 0]); // PAN
    p.push(1); // source endpoint
    p.extend_from_slice(&0x0006u16.to_le_bytes());
    p.push(42); // transaction id
    p.extend_from_slice(&[0, 30]); // options, radius
    let zcl = [0x01, 0x07, 0x01]; // cluster-specific, "on"
    p.extend_from_slice(&(zcl.len() as u16).to_le_bytes());
    p.extend_from_slice(&zcl);
    let frame = ZnpCommand::Raw(MtFrame::new(
        MtType::Sreq,
        Subsystem::Af,
        0x02, // AF_DATA_REQUEST_EXT
        p,
    ));
    let r = h.send(frame, ms(100));
    assert!(
        r.iter().any(|c| matches!(
            c,
            ZnpCommand::AfDataConfirm {
                status: 0,
                trans_id: 42,
                ..
            }
        )),
        "{r:?}"
    );
}

/// An SREQ to a subsystem Z-Stack does not have (MT's unused numbers) gets the RPC
/// error SRSP with `MT_RPC_ERR_SUBSYSTEM` (1), not silence.
#[test]
fn an_sreq_to_an_unknown_subsystem_gets_an_rpc_error() {
    let mut h = Host::new(EmulatorConfig::default());
    for cmd0 in [0x2Cu8, 0x2E, 0x30, 0x3E, 0x3F] {
        let bytes = MtFrame::new(
            MtType::Sreq,
            Subsystem::from_bits(cmd0 & 0x1F),
            0x01,
            vec![],
        )
        .to_bytes()
        .unwrap();
        h.emu.receive(h.now, &bytes);
        let r = h.wait(ms(10));
        assert_eq!(
            r,
            [ZnpCommand::RpcError {
                error_code: 1,
                request_cmd0: cmd0,
                request_cmd1: 0x01
            }],
            "{cmd0:#04x}"
        );
    }
}

/// A command the device does not support gets a Default Response with the error even
/// when the sender disabled default responses (ZCL 2.5.12.2), as zigbee-herdsman does
/// by default; a successful one stays unanswered then.
#[test]
fn an_unsupported_command_is_answered_even_with_default_responses_disabled() {
    use crate::zcl::{Direction, ZclHeader};
    let mut h = Host::new(EmulatorConfig::default());
    h.form();
    h.open_join();
    let plug = h.nwk_of(DeviceKind::SmartPlug);
    // Discover Attributes (0x0C), start 0x0000, at most 16: not modelled by the device.
    let discover = ZclFrame {
        header: ZclHeader::global(Direction::ClientToServer, true, 9, 0x0C),
        command: ZclCommand::Raw {
            payload: vec![0x00, 0x00, 0x10],
        },
    };
    let r = h.zcl(plug, id::BASIC, discover, 9);
    let frames = incoming(&r);
    assert!(
        frames.iter().any(|(_, f)| matches!(
            f.command,
            ZclCommand::DefaultRsp { command_id: 0x0C, status } if status != 0
        )),
        "{frames:?}"
    );
    // "On" with default responses disabled: done, and no Default Response.
    let mut on = clusters::on_off(OnOffCommand::On, 10);
    on.header.disable_default_response = true;
    let r = h.zcl(plug, id::ON_OFF, on, 10);
    assert!(
        !incoming(&r)
            .iter()
            .any(|(_, f)| matches!(f.command, ZclCommand::DefaultRsp { .. })),
        "{r:?}"
    );
}

fn raw_zdo(h: &mut Host, cmd_id: u8, payload: Vec<u8>, wait: Duration) -> Vec<ZnpCommand> {
    h.send(
        ZnpCommand::Raw(MtFrame::new(MtType::Sreq, Subsystem::Zdo, cmd_id, payload)),
        wait,
    )
}

fn raw_areq(r: &[ZnpCommand], cmd_id: u8) -> Option<Vec<u8>> {
    r.iter().find_map(|c| match c {
        ZnpCommand::Raw(f)
            if f.cmd_type == MtType::Areq
                && f.subsystem == Subsystem::Zdo
                && f.cmd_id == cmd_id =>
        {
            Some(f.payload.clone())
        }
        _ => None,
    })
}

/// The network map requests hosts make (zigbee-herdsman's and zigpy's topology scans,
/// binding tables, unbind) are answered as a Z-Stack network answers them, instead of
/// timing out: Mgmt_Lqi with the neighbours, Mgmt_Rtg and Mgmt_Bind with their (empty)
/// tables, NOT_SUPPORTED from an end device, Unbind with success.
#[test]
fn network_map_requests_are_answered() {
    let mut h = Host::new(EmulatorConfig::default());
    h.form();
    h.open_join();
    let plug = h.nwk_of(DeviceKind::SmartPlug);
    let sensor = h.nwk_of(DeviceKind::TempHumidity);

    let r = h.send(
        ZnpCommand::ZdoMgmtLqiReq {
            dst_addr: 0x0000,
            start_index: 0,
        },
        ms(100),
    );
    let Some(ZnpCommand::ZdoMgmtLqiRsp {
        status: 0,
        total_entries,
        neighbors,
        ..
    }) = r
        .iter()
        .find(|c| matches!(c, ZnpCommand::ZdoMgmtLqiRsp { .. }))
    else {
        panic!("{r:?}")
    };
    assert_eq!(usize::from(*total_entries), h.emu.devices().len());
    assert_eq!(neighbors.len(), 3, "paged by three");
    assert!(neighbors.iter().all(|n| n.relationship == 1));
    let r = h.send(
        ZnpCommand::ZdoMgmtLqiReq {
            dst_addr: plug,
            start_index: 0,
        },
        ms(100),
    );
    assert!(
        r.iter().any(
            |c| matches!(c, ZnpCommand::ZdoMgmtLqiRsp { src_addr, status: 0, neighbors, .. }
            if *src_addr == plug && neighbors.len() == 1 && neighbors[0].nwk_addr == 0)
        ),
        "{r:?}"
    );

    let mut req = plug.to_le_bytes().to_vec();
    req.push(0);
    let r = raw_zdo(&mut h, 0x32, req.clone(), ms(100));
    let mut want = plug.to_le_bytes().to_vec();
    want.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(raw_areq(&r, 0xB2), Some(want.clone()), "{r:?}");
    let r = raw_zdo(&mut h, 0x33, req, ms(100));
    assert_eq!(raw_areq(&r, 0xB3), Some(want), "{r:?}");
    let mut req = sensor.to_le_bytes().to_vec();
    req.push(0);
    let r = raw_zdo(&mut h, 0x32, req, ms(100));
    let mut want = sensor.to_le_bytes().to_vec();
    want.push(0x84);
    assert_eq!(raw_areq(&r, 0xB2), Some(want), "{r:?}");

    // Unbind: DstAddr, SrcAddress, SrcEndpoint, ClusterID, DstAddrMode, DstAddress, DstEndpoint.
    let mut req = plug.to_le_bytes().to_vec();
    req.extend_from_slice(&DeviceKind::SmartPlug.default_ieee().0.to_le_bytes());
    req.push(1);
    req.extend_from_slice(&0x0006u16.to_le_bytes());
    req.push(3);
    req.extend_from_slice(&EmulatorConfig::default().ieee.0.to_le_bytes());
    req.push(1);
    let r = raw_zdo(&mut h, 0x22, req, ms(100));
    let mut want = plug.to_le_bytes().to_vec();
    want.push(0);
    assert_eq!(raw_areq(&r, 0xA2), Some(want), "{r:?}");
}

/// Mgmt_NWK_Update_req: a channel change (scan duration 0xFE) moves the network (the
/// NIB's channel and update id follow, as hosts poll them), an energy scan is answered
/// with Mgmt_NWK_Update_notify carrying a value per scanned channel.
#[test]
fn a_channel_change_moves_the_network_and_an_energy_scan_is_answered() {
    let mut h = Host::new(EmulatorConfig::default());
    h.form();
    h.open_join();
    let before = h.emu.nib().unwrap().nwk_update_id;
    let update = |mask: u32, duration: u8| {
        let mut p = 0xFFFCu16.to_le_bytes().to_vec();
        p.push(0x0F);
        p.extend_from_slice(&mask.to_le_bytes());
        p.push(duration);
        p.push(0);
        p.extend_from_slice(&0u16.to_le_bytes());
        p
    };
    raw_zdo(&mut h, 0x37, update(1 << 20, 0xFE), ms(100));
    assert_eq!(h.emu.network().unwrap().channel, 20);
    let nib = h.emu.nib().unwrap();
    assert_eq!(nib.nwk_logical_channel, 20);
    assert_eq!(nib.nwk_update_id, before.wrapping_add(1));
    assert!(
        h.emu.devices().iter().all(|d| d.nwk.is_some()),
        "devices follow"
    );

    let r = raw_zdo(
        &mut h,
        0x37,
        update((1 << 11) | (1 << 20) | (1 << 25), 2),
        ms(1_000),
    );
    let p = raw_areq(&r, 0xB8).expect("Mgmt_NWK_Update_notify");
    assert_eq!(p[2], 0, "status");
    assert_eq!(p[11], 3, "one value per scanned channel");
    assert_eq!(p.len(), 12 + 3);
}

/// The plug's Groups cluster: added to a group it answers Add Group Response, lists it
/// in Get Group Membership, and a group send switches it; removed, it answers and no
/// longer does.
#[test]
fn the_plug_joins_a_group_and_a_group_send_switches_it() {
    use crate::zcl::{Direction, ZclHeader};
    let mut h = Host::new(EmulatorConfig::default());
    h.form();
    h.open_join();
    let plug = h.nwk_of(DeviceKind::SmartPlug);
    let groups = |cmd: u8, payload: Vec<u8>, tsn: u8| ZclFrame {
        header: ZclHeader::cluster(Direction::ClientToServer, true, tsn, cmd),
        command: ZclCommand::Raw { payload },
    };
    let answer = |r: &[ZnpCommand], cmd: u8| -> Vec<u8> {
        incoming(r)
            .into_iter()
            .find_map(|(c, f)| match f.command {
                ZclCommand::Raw { payload } if c == 0x0004 && f.header.command_id == cmd => {
                    Some(payload)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no answer {cmd:#04x}: {r:?}"))
    };
    let r = h.zcl(plug, 0x0004, groups(0x00, vec![0x05, 0x00, 0x00], 20), 20);
    assert_eq!(answer(&r, 0x00), [0x00, 0x05, 0x00]);
    let r = h.zcl(plug, 0x0004, groups(0x02, vec![0x00], 21), 21);
    assert_eq!(answer(&r, 0x02)[1..], [1, 0x05, 0x00]);

    let group_on = |h: &mut Host, trans_id: u8| {
        let mut p = vec![0x01, 0x05, 0x00, 0, 0, 0, 0, 0, 0];
        p.push(0xFF);
        p.extend_from_slice(&[0, 0, 1]);
        p.extend_from_slice(&0x0006u16.to_le_bytes());
        p.extend_from_slice(&[trans_id, 0, 30]);
        let zcl = [0x01, trans_id, 0x01]; // cluster-specific On
        p.extend_from_slice(&(zcl.len() as u16).to_le_bytes());
        p.extend_from_slice(&zcl);
        h.send(
            ZnpCommand::Raw(MtFrame::new(MtType::Sreq, Subsystem::Af, 0x02, p)),
            ms(200),
        )
    };
    assert!(!h
        .emu
        .device(DeviceKind::SmartPlug.default_ieee())
        .unwrap()
        .is_on());
    group_on(&mut h, 30);
    assert!(h
        .emu
        .device(DeviceKind::SmartPlug.default_ieee())
        .unwrap()
        .is_on());

    let r = h.zcl(plug, 0x0004, groups(0x03, vec![0x05, 0x00], 22), 22);
    assert_eq!(answer(&r, 0x03), [0x00, 0x05, 0x00]);
    let r = h.zcl(plug, 0x0004, groups(0x03, vec![0x05, 0x00], 23), 23);
    assert_eq!(
        answer(&r, 0x03),
        [0x8B, 0x05, 0x00],
        "not a member any more"
    );
}
