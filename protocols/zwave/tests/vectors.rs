//! Reference vectors with their sources. "Reference" is the project's Z-Wave research notes
//! (frames observed from zwave-js's mock controller, and zwave-js#7815); "zwave-js <path>" is a
//! test or fixture in github.com/zwave-js/zwave-js at the path given.

use fieldgate_zwave::cc::{
    Battery, BinarySwitch, Cc, ManufacturerSpecific, Meter, MultilevelSensor, Notification,
    SecurityScheme, Supervision, SupervisionStatus, Version,
};
use fieldgate_zwave::message::{
    classify, AddNodeStatus, ApplicationUpdate, Callback, FrameClass, Inbound, RemoveNodeStatus,
    Request, Response, TransmitStatus, Unsolicited, WakeUpReason,
};
use fieldgate_zwave::{from_hex, normalize, DataFrame, Frame, ReadingValue, SerialParser};

fn hex(s: &str) -> Vec<u8> {
    from_hex(s).expect("valid hex in a test vector")
}

/// Decodes a complete controller frame given as hex.
fn inbound(s: &str) -> Inbound {
    Inbound::decode(&DataFrame::from_bytes(&hex(s)).unwrap()).unwrap()
}

/// Decodes a controller REQ/RES given as `function payload…` (the reference lists payloads).
fn req(function: u8, payload: &str) -> Inbound {
    Inbound::decode(&DataFrame::request(function, hex(payload))).unwrap()
}

fn res(function: u8, payload: &str) -> Inbound {
    Inbound::decode(&DataFrame::response(function, hex(payload))).unwrap()
}

fn app_cc(i: &Inbound) -> Cc {
    match i {
        Inbound::Unsolicited(u) => Cc::decode(u.command_class().unwrap()).unwrap(),
        other => panic!("not node traffic: {other:?}"),
    }
}

#[test]
fn send_data_binary_switch_set_from_zwave_js_issue_7815() {
    // Reference §1 (zwave-js#7815): node 52, Binary Switch Set off, duration 0xFF, tx 0x25, cb 0x88.
    let bytes = hex("010b0013340425010 0ff2588a1");
    let frame = DataFrame::from_bytes(&bytes).unwrap();
    let Request::SendData(s) = Request::decode(&frame).unwrap() else {
        panic!()
    };
    assert_eq!((s.node_id, s.tx_options, s.callback_id), (52, 0x25, 0x88));
    assert_eq!(
        Cc::decode(&s.payload).unwrap(),
        Cc::BinarySwitch(BinarySwitch::Set {
            value: 0,
            duration: Some(fieldgate_zwave::cc::Duration(0xFF))
        })
    );
    assert_eq!(Request::SendData(s).to_bytes().unwrap(), bytes);
    // … answered by `01 04 01 13 01 e8` (RES, was sent).
    assert_eq!(
        inbound("0104011301e8"),
        Inbound::Response(Response::SendData { was_sent: true })
    );
}

#[test]
fn meter_report_from_zwave_js_issue_7815() {
    // Reference §1: ApplicationCommand from node 180, Meter Report electric, 0.00 A,
    // delta time 301 s, previous value 0.
    let i = inbound("01100004 00b40a3202a14a0000012d0000a2");
    assert_eq!(i.function(), 0x04);
    let Inbound::Unsolicited(Unsolicited::ApplicationCommand(a)) = &i else {
        panic!()
    };
    assert_eq!(a.source, 180);
    let Cc::Meter(Meter::Report {
        reading,
        delta_time,
        previous,
    }) = app_cc(&i)
    else {
        panic!()
    };
    assert_eq!(
        (reading.meter_type, reading.rate_type, reading.scale),
        (1, 1, 5)
    );
    assert_eq!((reading.value.value(), reading.value.precision), (0.0, 2));
    assert_eq!(
        (delta_time, previous.map(|p| p.value())),
        (Some(301), Some(0.0))
    );
}

#[test]
fn meter_report_kwh_fixture_from_zwave_js() {
    // zwave-js packages/zwave-js/src/lib/test/cc-specific/meterReportPropertyKeyName.test.ts:
    // "Electric_kWh_Consumed", with RSSI and one more byte after the CC.
    let i = inbound("0116000400020e3202214400013707012d00013707d5004d");
    let Inbound::Unsolicited(Unsolicited::ApplicationCommand(a)) = &i else {
        panic!()
    };
    assert_eq!(a.rssi, Some(-43));
    let cc = app_cc(&i);
    let Cc::Meter(Meter::Report {
        reading,
        delta_time,
        previous,
    }) = &cc
    else {
        panic!()
    };
    assert_eq!(
        (reading.meter_type, reading.rate_type, reading.scale),
        (1, 1, 0)
    );
    assert_eq!(reading.value.value(), 796.23);
    assert_eq!(
        (*delta_time, previous.map(|p| p.value())),
        (Some(301), Some(796.23))
    );
    let r = normalize(&cc);
    assert_eq!((r[0].name, r[0].unit), ("energy", Some("kWh")));
    assert_eq!(r[0].value, ReadingValue::Number(796.23));
}

#[test]
fn bridge_command_without_rssi_from_zwave_js_issue_4335() {
    // zwave-js packages/serial/src/serialapi/application/BridgeApplicationCommandRequest.test.ts
    let i = inbound("011200a80001020a320221340000000000000069");
    let Inbound::Unsolicited(Unsolicited::BridgeApplicationCommand(b)) = &i else {
        panic!()
    };
    assert_eq!((b.destination, b.source, b.rssi), (1, 2, None));
    assert!(b.multicast_mask.is_empty());
    let Cc::Meter(Meter::Report { reading, .. }) = app_cc(&i) else {
        panic!()
    };
    assert_eq!((reading.scale, reading.value.size), (2, 4));
}

#[test]
fn send_data_callback_with_tx_report_from_zwave_js() {
    // zwave-js packages/zwave-js/src/lib/test/driver/successfulPingChangeNodeStatus.test.ts:
    // NoOperation to node 4 (`010800130401002501c5`), then its callback with a TX report.
    let req =
        Request::decode(&DataFrame::from_bytes(&hex("010800130401002501c5")).unwrap()).unwrap();
    assert_eq!(req, Request::send_data(4, vec![0x00], 1));
    let frame = Frame::Data(
        DataFrame::from_bytes(&hex("011800130100000100bd7f7f7f7f010103000000000201000049"))
            .unwrap(),
    );
    assert_eq!(
        classify(&frame),
        FrameClass::Callback {
            function: 0x13,
            callback_id: 1
        }
    );
    assert!(req.is_answered_by(&classify(&frame)));
    let Frame::Data(d) = &frame else { panic!() };
    let Inbound::Callback(Callback::SendData {
        callback_id,
        status,
        report,
    }) = Inbound::decode(d).unwrap()
    else {
        panic!()
    };
    assert_eq!((callback_id, status), (1, TransmitStatus::Ok));
    let r = report.unwrap();
    assert_eq!(
        (r.tx_ticks, r.tx_time_ms(), r.repeater_count, r.ack_rssi),
        (1, 10, 0, -67)
    );
    assert_eq!(
        (
            r.ack_channel,
            r.tx_channel,
            r.route_scheme_state,
            r.route_speed
        ),
        (1, 1, 3, 2)
    );
    assert_eq!(
        (r.routing_attempts, r.failed_route_last_functional_node),
        (1, Some(0))
    );
    assert_eq!(r.tx_power, None);
    assert!(r.repeaters().is_empty());
}

#[test]
fn two_frames_in_one_read_from_zwave_js() {
    // zwave-js packages/zwave-js/src/lib/test/driver/receiveMessages.test.ts: a short SendData
    // callback (no TX report) and a Manufacturer Specific Report arrive in one chunk.
    let mut p = SerialParser::new();
    let frames = p.feed(&hex("010700130f000002e6010e000400020872050086000200828e"));
    assert_eq!(frames.len(), 2);
    let Frame::Data(a) = &frames[0] else { panic!() };
    assert_eq!(
        Inbound::decode(a).unwrap(),
        Inbound::Callback(Callback::SendData {
            callback_id: 15,
            status: TransmitStatus::Ok,
            report: None
        })
    );
    let Frame::Data(b) = &frames[1] else { panic!() };
    assert_eq!(
        app_cc(&Inbound::decode(b).unwrap()),
        Cc::ManufacturerSpecific(ManufacturerSpecific::Report {
            manufacturer_id: 0x0086,
            product_type: 0x0002,
            product_id: 0x0082
        })
    );
}

#[test]
fn mock_controller_start_up_answers() {
    // Reference §4 RUN trace (zwave-js mock controller).
    let Inbound::Response(Response::SerialApiInitData(d)) =
        res(0x02, &format!("09081d07{}0700", "00".repeat(28)))
    else {
        panic!()
    };
    assert_eq!(
        (d.api_version, d.node_ids(), d.chip),
        (9, vec![1, 2, 3], Some((7, 0)))
    );
    assert!(d.is_primary() && d.is_sis());
    let Inbound::Response(Response::NodeProtocolInfo(info)) = res(0x41, "db9c01040601") else {
        panic!()
    };
    assert!(info.is_listening() && info.is_routing() && !info.is_controller());
    assert_eq!(
        (info.protocol_version(), info.flirs(), info.data_rates()),
        (3, None, vec![40_000, 9_600, 100_000])
    );
    assert_eq!(
        (
            info.device_class.basic,
            info.device_class.generic,
            info.device_class.specific
        ),
        (4, 6, 1)
    );
    assert!(info.supports_beaming() && info.has_specific_device_class());
    // GetControllerVersion: "Z-Wave 7.17.99", static controller (Reference §4).
    let mut payload = b"Z-Wave 7.17.99\0".to_vec();
    payload.push(1);
    assert_eq!(
        Inbound::decode(&DataFrame::response(0x15, payload)).unwrap(),
        Inbound::Response(Response::ControllerVersion {
            library_version: "Z-Wave 7.17.99".into(),
            library_type: 1
        })
    );
    // SoftReset → SerialApiStarted.
    let Inbound::Unsolicited(Unsolicited::SerialApiStarted(s)) =
        req(0x0A, "07000101000 85e989f556c568f7400")
    else {
        panic!()
    };
    assert_eq!(
        (s.wake_up_reason, s.watchdog_started, s.listening),
        (WakeUpReason::SoftwareReset, false, true)
    );
    assert_eq!((s.generic, s.specific, s.protocols), (1, 0, Some(0)));
    assert_eq!(
        s.command_classes.supported,
        vec![0x5E, 0x98, 0x9F, 0x55, 0x6C, 0x56, 0x8F, 0x74]
    );
}

#[test]
fn mock_node_traffic() {
    // Reference §4 RUN trace: SendData callback OK, Binary Switch Report, sensor, Version, NIF.
    assert_eq!(
        req(0x13, "0100"),
        Inbound::Callback(Callback::SendData {
            callback_id: 1,
            status: TransmitStatus::Ok,
            report: None
        })
    );
    assert_eq!(
        app_cc(&req(0x04, "00020325 03ff")),
        Cc::BinarySwitch(BinarySwitch::Report {
            current: 0xFF,
            transition: None
        })
    );
    let cc = app_cc(&req(0x04, "0003063105012200d7"));
    let Cc::MultilevelSensor(MultilevelSensor::Report {
        sensor_type,
        scale,
        value,
    }) = cc
    else {
        panic!()
    };
    assert_eq!(
        (
            sensor_type,
            scale,
            value.value(),
            value.precision,
            value.size
        ),
        (1, 0, 21.5, 1, 2)
    );
    assert_eq!(
        Cc::decode(&hex("861203070001000100")).unwrap(),
        Cc::Version(Version::Report {
            library_type: 3,
            protocol: (7, 0),
            firmware: vec![(1, 0)],
            hardware: Some(1)
        })
    );
    let Inbound::Unsolicited(Unsolicited::ApplicationUpdate(ApplicationUpdate::NodeInfoReceived(
        nif,
    ))) = req(0x49, "8402060406018672 25")
    else {
        panic!()
    };
    assert_eq!((nif.node_id, nif.device_class.unwrap().generic), (2, 6));
    assert_eq!(nif.command_classes.supported, vec![0x86, 0x72, 0x25]);
    let request = Request::RequestNodeInfo { node_id: 2 };
    let Inbound::Unsolicited(u) = req(0x49, "8402060406018672 25") else {
        panic!()
    };
    assert!(request.is_finished_by(&u));
}

#[test]
fn inclusion_and_exclusion_callbacks_from_the_mock() {
    // Reference §4 "Inclusion" / "Exclusion" (RUN).
    let add = |p: &str| match req(0x4A, p) {
        Inbound::Callback(Callback::AddNode { status, .. }) => status,
        other => panic!("{other:?}"),
    };
    assert_eq!(add("1001"), AddNodeStatus::Ready);
    assert_eq!(add("1002"), AddNodeStatus::NodeFound);
    let AddNodeStatus::AddingEndNode(nif) = add("1003070504060125 20") else {
        panic!()
    };
    assert_eq!(
        (nif.node_id, nif.command_classes.supported.clone()),
        (7, vec![0x25, 0x20])
    );
    assert_eq!(add("1005"), AddNodeStatus::ProtocolDone);
    assert_eq!(add("1106 07"), AddNodeStatus::Done { node_id: 7 });
    let rm = |p: &str| match req(0x4B, p) {
        Inbound::Callback(Callback::RemoveNode { status, .. }) => status,
        other => panic!("{other:?}"),
    };
    assert_eq!(rm("cb01"), RemoveNodeStatus::Ready);
    assert_eq!(
        rm("cb0302"),
        RemoveNodeStatus::RemovingEndNode { node_id: 2 }
    );
    assert_eq!(rm("cb0602"), RemoveNodeStatus::Done { node_id: Some(2) });
    assert_eq!(rm("cb07"), RemoveNodeStatus::Failed);
}

#[test]
fn command_classes_from_zwave_js_tests() {
    // zwave-js packages/zwave-js/src/lib/test/cc/MeterCC.test.ts "Report (V4)": scale 7 + 1 = 8.
    let Cc::Meter(Meter::Report {
        reading,
        delta_time,
        previous,
    }) = Cc::decode(&hex("3202c13937000536 01")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (reading.meter_type, reading.rate_type, reading.scale),
        (1, 2, 8)
    );
    assert_eq!(
        (reading.value.value(), delta_time, previous.unwrap().value()),
        (5.5, Some(5), 5.4)
    );
    // … "SupportedReport (V4/V5)": scales [0, 7, 15], rate type produced (bit 1).
    assert_eq!(
        Cc::decode(&hex("3204d5810201 01")).unwrap(),
        Cc::Meter(Meter::SupportedReport {
            meter_type: 21,
            supports_reset: true,
            rate_types: 2,
            scales: vec![0, 7, 15]
        })
    );
    // BatteryCC.test.ts: 0xFF is the low-battery warning.
    assert_eq!(
        Cc::decode(&hex("8003ff")).unwrap(),
        Cc::Battery(Battery::Report {
            level: 0xFF,
            flags: None
        })
    );
    // BinarySwitchCC.test.ts "Report (v2)": on, target off, 1 s.
    let Cc::BinarySwitch(BinarySwitch::Report {
        current,
        transition,
    }) = Cc::decode(&hex("2503ff0001")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (
            current,
            transition.unwrap().target,
            transition.unwrap().duration.seconds()
        ),
        (0xFF, 0, Some(1))
    );
    // Unknown command of a known class, and an unknown class: generic, not an error.
    assert!(
        matches!(Cc::decode(&hex("25ff")).unwrap(), Cc::Unknown(r) if r.cc_id == 0x25 && r.command == Some(0xFF))
    );
    assert!(
        matches!(Cc::decode(&hex("f10001")).unwrap(), Cc::Unknown(r) if r.cc_id == 0xF100 && r.command == Some(1))
    );
}

#[test]
fn encapsulation_and_security() {
    // Supervision Get wrapping Binary Switch Set (session 5, status updates), and its Report.
    let get = Cc::decode(&hex("6c0185032501ff")).unwrap();
    let Cc::Supervision(Supervision::Get {
        status_updates,
        session_id,
        encapsulated,
    }) = &get
    else {
        panic!()
    };
    assert_eq!((*status_updates, *session_id), (true, 5));
    assert_eq!(
        **encapsulated,
        Cc::BinarySwitch(BinarySwitch::Set {
            value: 0xFF,
            duration: None
        })
    );
    assert_eq!(get.encode().unwrap(), hex("6c0185032501ff"));
    assert!(matches!(
        Cc::decode(&hex("6c0205ff00")).unwrap(),
        Cc::Supervision(Supervision::Report {
            session_id: 5,
            status: SupervisionStatus::Success,
            ..
        })
    ));
    // Multi Channel encapsulation from endpoint 2: the door sensor notification inside.
    let cc = Cc::decode(&hex("600d0201 71050000 00ff0616 00")).unwrap();
    let (inner, endpoint) = cc.innermost();
    assert_eq!(endpoint, 2);
    assert!(
        matches!(inner, Cc::Notification(Notification::Report { event: Some(e), .. }) if e.event == 0x16)
    );
    // Door open: the vocabulary's `contact`, false (open).
    assert_eq!(normalize(&cc)[0].name, "contact");
    assert_eq!(normalize(&cc)[0].value, ReadingValue::Bool(false));
    // S0 / S2 encapsulation: recognised, not decrypted.
    let Cc::Secure(s0) = Cc::decode(&hex("98810102030405060708aabbcc01a1a2a3a4a5a6a7a8")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (s0.scheme, s0.is_encapsulation()),
        (SecurityScheme::S0, true)
    );
    assert_eq!(s0.s0_sender_nonce().unwrap(), hex("0102030405060708"));
    let Cc::Secure(s2) = Cc::decode(&hex("9f032a00aabbccdd")).unwrap() else {
        panic!()
    };
    assert_eq!(
        (s2.scheme, s2.s2_sequence_number()),
        (SecurityScheme::S2, Some(0x2A))
    );
}

#[test]
fn unknown_functions_are_generic_frames() {
    let f = DataFrame::request(0xF0, vec![1, 2, 3]);
    assert_eq!(
        Inbound::decode(&f).unwrap(),
        Inbound::Unsolicited(Unsolicited::Unknown(f.clone()))
    );
    let r = DataFrame::response(0xF0, vec![]);
    assert_eq!(
        Inbound::decode(&r).unwrap(),
        Inbound::Response(Response::Unknown(r.clone()))
    );
    assert_eq!(Request::decode(&f).unwrap(), Request::Unknown(f));
}
