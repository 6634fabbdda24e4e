//! AF_INCOMING_MSG_EXT end to end: payloads the coordinator holds back (a large read
//! response during the interview, a large attribute report) retrieved by the driver with
//! AF_DATA_RETRIEVE and arriving whole in the hub's readings; every device frame as EXT by
//! IEEE address, across a daemon restart; a payload that cannot be retrieved counted and
//! survived; Green Power frames reaching the GP endpoint, decoded and counted.

use std::time::{Duration, Instant};

use fieldgate::hub::Notice;
use fieldgate::model::Value;
use fieldgate::radio::zigbee_sim::PtyEmulator;
use fieldgate_zigbee::emulator::{DeviceKind, EmulatorConfig, Fault, IncomingForm};
use fieldgate_zigbee::zcl::clusters::id;
use fieldgate_zigbee::zcl::green_power::{GpNotification, GpdId};
use fieldgate_zigbee::zcl::{AttributeRecord, ZclBytes, ZclValue};

use super::{emulator_config, paired_rig, poll, Rig, FAST};

/// Printable text of `n` bytes, different per `seed`, so a cut or a shuffled chunk shows.
fn text(n: usize, seed: u8) -> String {
    (0..n)
        .map(|i| char::from(b'a' + ((i + usize::from(seed)) % 26) as u8))
        .collect()
}

fn counters(rig: &Rig) -> fieldgate::radio::RadioCountersSnapshot {
    rig.radios[0].counters.snapshot()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zigbee_large_read_response_and_report_arrive_whole() {
    let pty = PtyEmulator::spawn(emulator_config()).unwrap();
    let th = DeviceKind::TempHumidity.default_ieee();
    // Long Basic strings: the interview's Basic read response comes out at 300+ bytes.
    let (manufacturer, build) = (text(140, 1), text(150, 2));
    pty.sim.with(|e, _| {
        e.set_attribute(th, id::BASIC, 0x0004, ZclValue::char_str(&manufacturer));
        e.set_attribute(th, id::BASIC, 0x4000, ZclValue::char_str(&build));
    });
    let dir = tempfile::tempdir().unwrap();
    let rig = paired_rig(&pty, dir.path()).await;
    let want = super::id(DeviceKind::TempHumidity).to_string();
    let interviewed = rig
        .wait("the sensor's interview", 20, |ns| {
            ns.iter().find_map(|(_, n)| match n {
                Notice::DeviceInterviewed {
                    device,
                    manufacturer,
                    ..
                } if *device == want => manufacturer.clone(),
                _ => None,
            })
        })
        .await;
    assert_eq!(
        interviewed, manufacturer,
        "the held-back read response, whole"
    );
    let dev = rig.device(&super::id(DeviceKind::TempHumidity)).unwrap();
    assert_eq!(dev.manufacturer.as_deref(), Some(manufacturer.as_str()));
    assert_eq!(dev.firmware.as_deref(), Some(build.as_str()));

    // A report of 500+ bytes whose temperature comes last: it is a reading only if the
    // payload arrived whole (three retrieves: 240 + 240 + the rest).
    let since = Instant::now();
    let padding = ZclValue::OctetString(Some(ZclBytes(vec![0xA5; 240])));
    let records = vec![
        AttributeRecord {
            attribute_id: 0x4100,
            value: padding.clone(),
        },
        AttributeRecord {
            attribute_id: 0x4101,
            value: padding,
        },
        AttributeRecord {
            attribute_id: 0x0000,
            value: ZclValue::i16(-1234),
        },
    ];
    assert!(pty
        .sim
        .with(|e, now| e.report_attributes(now, th, id::TEMPERATURE, records)));
    let (value, unit) = rig
        .wait_reading(DeviceKind::TempHumidity, "temperature", since, |v| {
            *v == Value::Number(-12.34)
        })
        .await;
    assert_eq!(
        (value, unit.as_deref()),
        (Value::Number(-12.34), Some("°C"))
    );

    let stats = pty.sim.with(|e, _| (e.stats(), e.held_payloads()));
    assert!(stats.0.held_payloads >= 2, "{stats:?}");
    // Every chunk plus one free per payload, and nothing left held.
    assert!(stats.0.data_retrieves >= (2 + 1) + (3 + 1), "{stats:?}");
    assert_eq!(stats.1, 0, "every held payload freed");
    let c = counters(&rig);
    assert_eq!((c.incomplete, c.undecodable), (0, 0), "{c:?}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zigbee_all_ext_traffic_by_ieee_address_pairs_reports_and_survives_a_restart() {
    let pty = PtyEmulator::spawn(EmulatorConfig {
        incoming: IncomingForm::AllExtIeee,
        ..emulator_config()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rig = paired_rig(&pty, dir.path()).await;
    let since = Instant::now();
    let th = DeviceKind::TempHumidity.default_ieee();
    assert!(pty.sim.with(|e, now| e.report_temperature(now, th, 2468)));
    let (t, _) = rig
        .wait_reading(DeviceKind::TempHumidity, "temperature", since, |v| {
            *v == Value::Number(24.68)
        })
        .await;
    assert_eq!(t, Value::Number(24.68));
    let dev = rig.device(&super::id(DeviceKind::SmartPlug)).unwrap();
    assert_eq!(dev.model.as_deref(), Some("FG-PLUG01"));
    rig.stop().await;

    // A new daemon knows no network address: the first IEEE-addressed frame makes it ask
    // (NWK_addr_req), and the frame is handled once the answer is in.
    let rig = Rig::start(dir.path(), pty.path(), FAST).await;
    let since = Instant::now();
    assert!(pty.sim.with(|e, now| e.report_temperature(now, th, -555)));
    let (t, _) = rig
        .wait_reading(DeviceKind::TempHumidity, "temperature", since, |v| {
            *v == Value::Number(-5.55)
        })
        .await;
    assert_eq!(t, Value::Number(-5.55));
    let c = counters(&rig);
    assert_eq!((c.incomplete, c.undecodable), (0, 0), "{c:?}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zigbee_a_payload_that_cannot_be_retrieved_is_counted_and_the_driver_carries_on() {
    let pty = PtyEmulator::spawn(emulator_config()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rig = paired_rig(&pty, dir.path()).await;
    let th = DeviceKind::TempHumidity.default_ieee();
    let big = vec![AttributeRecord {
        attribute_id: 0x0006,
        value: ZclValue::char_str(&text(240, 4)),
    }];
    // The coordinator frees the payload before the driver asks for it (as after 15 s).
    assert!(pty.sim.with(|e, now| {
        let sent = e.report_attributes(now, th, id::BASIC, big);
        e.inject(now, Fault::ExpireHeldPayloads);
        sent
    }));
    poll("the lost payload counted", 10, || {
        counters(&rig).incomplete == 1
    })
    .await;
    // Nothing else is lost: the next report arrives.
    let since = Instant::now();
    assert!(pty.sim.with(|e, now| e.report_temperature(now, th, 1111)));
    let (t, _) = rig
        .wait_reading(DeviceKind::TempHumidity, "temperature", since, |v| {
            *v == Value::Number(11.11)
        })
        .await;
    assert_eq!(t, Value::Number(11.11));
    let c = counters(&rig);
    assert_eq!((c.incomplete, c.undecodable), (1, 0), "{c:?}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zigbee_green_power_frames_reach_the_gp_endpoint_and_are_counted() {
    let pty = PtyEmulator::spawn(emulator_config()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(dir.path(), pty.path(), FAST).await;
    let toggle = GpNotification {
        options: 0x0000,
        gpd: GpdId::SrcId {
            src_id: 0x0155_F47A,
        },
        frame_counter: 1,
        command_id: 0x22,
        payload: Vec::new(),
        proxy: None,
        mic: None,
    };
    let commissioning = GpNotification {
        command_id: 0xE0,
        payload: vec![0x02, 0x81, 0xF2],
        ..toggle.clone()
    };
    // Delivered only because the driver registered endpoint 242 and put it in the GP group.
    let delivered = pty.sim.with(|e, now| {
        [
            e.green_power_frame(now, commissioning, true),
            e.green_power_frame(now, toggle.clone(), false),
            e.green_power_frame(
                now,
                GpNotification {
                    frame_counter: 2,
                    ..toggle
                },
                false,
            ),
        ]
    });
    assert_eq!(delivered, [true; 3]);
    poll("three GP frames counted", 10, || {
        counters(&rig).unhandled == 3
    })
    .await;
    // Not taken for a device: no join, no address lookup of the proxy (the coordinator).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let device_events = rig
        .notices
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| matches!(n, Notice::DeviceJoined { .. } | Notice::Readings { .. }))
        .count();
    assert_eq!(device_events, 0, "GP frames made no device events");
    let c = counters(&rig);
    assert_eq!((c.unhandled, c.undecodable), (3, 0), "{c:?}");
    rig.stop().await;
}
