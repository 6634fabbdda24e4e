//! The Z-Wave driver against an independent controller: zwave-js's mock controller
//! (`zwave-js` mock-server, `tests/peers/zwave/mock/gateway.cjs`) over `tcp://127.0.0.1`.
//! Start-up, interviews (a sleeping node's resumed across wake-ups), a request delivered
//! during a wake-up before Wake Up No More Information, Binary Switch set/get, Multilevel
//! Sensor, Meter and Battery readings, inclusion of a pending node, exclusion, the join
//! window closing by itself, and the link loss the supervisor recovers from.
//!
//! Run with `FIELDGATE_PEERS=1` after `tests/peers/zwave/setup.sh`, inside a network
//! namespace with only loopback (the mock always advertises itself over mDNS; `.ci/run`
//! runs these tests under `unshare -n`). A fresh mock per test; a mock that exits with an
//! error (it does on any host framing mistake) fails the test.

pub(crate) mod harness;

use std::time::Duration;

use fieldgate::model::{
    DeviceCommand, DeviceEventKind, PowerSource, RadioCommand, Reachability, Value,
};

use harness::{Driven, Mock};

fn number(ev: &DeviceEventKind, name: &str) -> Option<(f64, Option<String>)> {
    let DeviceEventKind::Readings(rs) = ev else {
        return None;
    };
    rs.iter()
        .find(|r| r.name == name)
        .and_then(|r| match r.value {
            Value::Number(n) => Some((n, r.unit.clone())),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_up_interviews_and_resumes_a_sleeping_nodes_interview() {
    let Some(mut mock) = Mock::start() else {
        return;
    };
    let mut zw = Driven::start(mock.port);
    // Start-up: every node of the controller is a device `zwave:<home id>-<node>`, described
    // but not "joining" (a join outside a window would be refused and the node removed).
    for node in [2, 3, 4] {
        zw.wait("described", 20, |e| {
            e.native_address == format!("c0ffee01-{node}")
                && matches!(e.kind, DeviceEventKind::Interviewed(_))
        })
        .await;
    }
    // The plug listens: interviewed at once.
    let plug = zw
        .wait("plug interviewed", 30, |e| {
            e.native_address == "c0ffee01-2"
                && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
        })
        .await;
    let DeviceEventKind::Interviewed(info) = plug.kind else {
        unreachable!()
    };
    assert_eq!(info.manufacturer.as_deref(), Some("0x0086"));
    assert_eq!(info.model.as_deref(), Some("0x0003:0x0060"));
    assert_eq!(info.reachability, Some(Reachability::AlwaysListening));
    assert_eq!(info.power_source, Some(PowerSource::Mains));
    assert!(
        info.capabilities.contains(&"binary_switch".to_string()),
        "{info:?}"
    );
    assert!(info.capabilities.contains(&"meter".to_string()), "{info:?}");
    // The sensor sleeps: announced as such, interviewed over its wake-ups.
    let first = zw
        .seen(|e| {
            e.native_address == "c0ffee01-3" && matches!(e.kind, DeviceEventKind::Interviewed(_))
        })
        .expect("the sleeping sensor announced at start-up");
    let DeviceEventKind::Interviewed(first) = first.kind else {
        unreachable!()
    };
    assert_eq!(first.reachability, Some(Reachability::WakeUp));
    let done = zw
        .wait("sensor interview complete", 40, |e| {
            e.native_address == "c0ffee01-3"
                && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
        })
        .await;
    let DeviceEventKind::Interviewed(done) = done.kind else {
        unreachable!()
    };
    assert_eq!(done.manufacturer.as_deref(), Some("0x0371"));
    assert_eq!(done.power_source, Some(PowerSource::Battery));
    assert!(done.capabilities.contains(&"multilevel_sensor".to_string()));
    // Its battery level came with the interview.
    let battery = zw
        .seen(|e| e.native_address == "c0ffee01-3" && number(&e.kind, "battery").is_some())
        .expect("a battery reading");
    assert_eq!(
        number(&battery.kind, "battery"),
        Some((87.0, Some("%".into())))
    );
    // Resumed, not restarted: the step answered before it fell asleep was asked once; the
    // one it slept through was asked again on the next wake-up.
    assert_eq!(mock.count("host->node 3: ManufacturerSpecificCCGet"), 1);
    assert_eq!(mock.count("host->node 3: VersionCCGet"), 2);
    assert_eq!(mock.count("node 3: lifeline group 1 -> 1"), 1);
    assert_eq!(mock.count("host->node 3: WakeUpCCIntervalSet"), 1);
    // Each wake-up ends with Wake Up No More Information.
    mock.wait_line("host->node 3: WakeUpCCNoMoreInformation", 10)
        .await;

    // A request for the sleeping node, handed over while it is awake (as the hub does when
    // it speaks), goes before it is sent back to sleep.
    let before = mock.count("host->node 3: WakeUpCCNoMoreInformation");
    zw.wait(
        "a wake-up (its battery level, asked at each one)",
        10,
        |e| e.native_address == "c0ffee01-3" && number(&e.kind, "battery").is_some(),
    )
    .await;
    zw.command(RadioCommand::Set {
        stale_at: std::time::Instant::now() + fieldgate::model::COMMAND_STALE_AFTER,
        native_address: "c0ffee01-3".into(),
        command: DeviceCommand::On,
        command_id: "held-1".into(),
    })
    .await;
    zw.wait("the held command's result", 10, |e| {
        matches!(&e.kind, DeviceEventKind::CommandResult { command_id, ok: true, .. } if command_id == "held-1")
    })
    .await;
    mock.wait_count("host->node 3: WakeUpCCNoMoreInformation", before + 1, 10)
        .await;
    let lines = mock.lines();
    let set_at = lines
        .iter()
        .rposition(|l| l == "host->node 3: BasicCCSet")
        .expect("the Set reached node 3");
    let sleep_at = lines
        .iter()
        .rposition(|l| l == "host->node 3: WakeUpCCNoMoreInformation")
        .unwrap();
    assert!(
        set_at < sleep_at,
        "sent to sleep before the held Set: {lines:?}"
    );
    assert!(
        zw.seen(|e| e.kind == DeviceEventKind::Joined).is_none(),
        "no join at start-up"
    );
    zw.assert_running();
    mock.assert_alive();
    let counters = zw.counters();
    assert_eq!(
        (counters.line_errors, counters.undecodable),
        (0, 0),
        "{counters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_and_reports_with_units() {
    let Some(mut mock) = Mock::start() else {
        return;
    };
    let mut zw = Driven::start(mock.port);
    zw.wait("plug interviewed", 30, |e| {
        e.native_address == "c0ffee01-2"
            && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
    })
    .await;
    // Unsolicited Meter reports: power in W.
    let power = zw
        .wait("a power reading", 10, |e| {
            e.native_address == "c0ffee01-2" && number(&e.kind, "power").is_some()
        })
        .await;
    assert_eq!(number(&power.kind, "power"), Some((12.5, Some("W".into()))));
    // The S2 frame it sent is counted as not decrypted, and nothing came of it.
    assert_eq!(zw.counters().not_decrypted, 1, "{:?}", zw.counters());
    // Binary Switch Set, answered with the TX status and the state the plug reports.
    zw.command(RadioCommand::Set {
        stale_at: std::time::Instant::now() + fieldgate::model::COMMAND_STALE_AFTER,
        native_address: "c0ffee01-2".into(),
        command: DeviceCommand::On,
        command_id: "on-1".into(),
    })
    .await;
    let result = zw
        .wait("the set's result", 10, |e| {
            matches!(&e.kind, DeviceEventKind::CommandResult { command_id, .. } if command_id == "on-1")
        })
        .await;
    assert!(
        matches!(&result.kind, DeviceEventKind::CommandResult { ok: true, detail, .. } if detail.contains("reported")),
        "{result:?}"
    );
    assert!(zw
        .seen(|e| e.native_address == "c0ffee01-2"
            && matches!(&e.kind, DeviceEventKind::Readings(r) if r.iter().any(|r| r.name == "on" && r.value == Value::Bool(true))))
        .is_some());
    mock.wait_line("host->node 2: BinarySwitchCCSet", 5).await;
    // A refresh: Binary Switch Get and Meter Get, the energy in kWh.
    zw.command(RadioCommand::Read {
        native_address: "c0ffee01-2".into(),
        command_id: "read-1".into(),
    })
    .await;
    zw.wait("the read's result", 10, |e| {
        matches!(&e.kind, DeviceEventKind::CommandResult { command_id, ok: true, .. } if command_id == "read-1")
    })
    .await;
    let energy = zw
        .seen(|e| number(&e.kind, "energy").is_some())
        .expect("an energy reading");
    assert_eq!(
        number(&energy.kind, "energy"),
        Some((3.25, Some("kWh".into())))
    );
    // A node that is not there: answered as failed, nothing hangs.
    zw.command(RadioCommand::Set {
        stale_at: std::time::Instant::now() + fieldgate::model::COMMAND_STALE_AFTER,
        native_address: "c0ffee01-9".into(),
        command: DeviceCommand::Off,
        command_id: "nobody".into(),
    })
    .await;
    zw.wait("the failed command's result", 5, |e| {
        matches!(&e.kind, DeviceEventKind::CommandResult { command_id, ok: false, .. } if command_id == "nobody")
    })
    .await;
    zw.command(RadioCommand::Set {
        stale_at: std::time::Instant::now() + fieldgate::model::COMMAND_STALE_AFTER,
        native_address: "c0ffee01-2".into(),
        command: DeviceCommand::Off,
        command_id: "off-1".into(),
    })
    .await;
    zw.wait("the next command still works", 15, |e| {
        matches!(&e.kind, DeviceEventKind::CommandResult { command_id, ok: true, .. } if command_id == "off-1")
    })
    .await;
    zw.assert_running();
    mock.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn includes_excludes_and_gives_up_a_dropped_link() {
    let Some(mut mock) = Mock::start() else {
        return;
    };
    let mut zw = Driven::start(mock.port);
    zw.wait("plug interviewed", 30, |e| {
        e.native_address == "c0ffee01-4"
            && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
    })
    .await;
    // Inclusion: the pending node is added, the window closed (Stop), the node interviewed.
    // The nodes the controller had join too, now that a technician opened a window.
    let (opened, window) = tokio::sync::oneshot::channel();
    zw.command(RadioCommand::PermitJoin {
        seconds: 60,
        reply: opened,
    })
    .await;
    zw.wait("node 2 adopted", 15, |e| {
        e.native_address == "c0ffee01-2" && e.kind == DeviceEventKind::Joined
    })
    .await;
    zw.wait("node 7 joined", 15, |e| {
        e.native_address == "c0ffee01-7" && e.kind == DeviceEventKind::Joined
    })
    .await;
    let seven = zw
        .wait("node 7 interviewed", 20, |e| {
            e.native_address == "c0ffee01-7"
                && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.capabilities.contains(&"binary_switch".to_string()))
        })
        .await;
    assert!(matches!(seven.kind, DeviceEventKind::Interviewed(_)));
    // The driver said the window was open once the controller was ready.
    assert_eq!(window.await.expect("an answer"), Ok(()));
    zw.command(RadioCommand::Set {
        stale_at: std::time::Instant::now() + fieldgate::model::COMMAND_STALE_AFTER,
        native_address: "c0ffee01-7".into(),
        command: DeviceCommand::On,
        command_id: "seven-on".into(),
    })
    .await;
    zw.wait("the new node switches", 10, |e| {
        matches!(&e.kind, DeviceEventKind::CommandResult { command_id, ok: true, .. } if command_id == "seven-on")
    })
    .await;
    // A join window with nobody joining closes by itself.
    zw.command(RadioCommand::PermitJoin {
        seconds: 1,
        reply: tokio::sync::oneshot::channel().0,
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Exclusion: the technician presses the button; the node is gone.
    zw.command(RadioCommand::Remove {
        native_address: "c0ffee01-4".into(),
    })
    .await;
    zw.wait("node 4 left", 15, |e| {
        e.native_address == "c0ffee01-4" && e.kind == DeviceEventKind::Left
    })
    .await;
    mock.wait_line("controller: node 4 excluded", 5).await;
    zw.assert_running();
    mock.assert_alive();
    // The controller goes away (a ser2net restart): the driver returns the error that
    // makes the supervisor re-open the link with backoff.
    mock.kill();
    let ended = zw.finished(10).await;
    assert!(ended.is_err(), "the driver must fail the link: {ended:?}");
}
