//! The Z-Wave driver on the built-in controller emulator (`fieldgate_zwave::emulator`, pumped
//! by `radio::zwave_sim`): the NVM backup, every controller fault the emulator injects and
//! how the driver recovers from it, a sleeping node's requests sent while it is awake,
//! then sent back to sleep at once, levels on the 0-99 scale, configuration parameters.
//!
//! The emulator is attached through an in-memory pipe (as `sim://zwave` is); the hub is
//! left out so each assertion is about the driver.

use std::time::Duration;

use fieldgate::config::{PortSpec, Protocol};
use fieldgate::model::Value;
use fieldgate::model::{DeviceCommand, DeviceEventKind, RadioCommand};
use fieldgate::radio::zwave_sim::SimEmulator;
use fieldgate_zwave::emulator::{default_nodes, EmulatorConfig, Fault, NodeKind, HOME_ID};

use crate::zwave_mock::harness::Driven;

/// Quick timeouts so that faults cost seconds, not minutes.
const OPTIONS: &str = "callback_timeout = \"2s\"\nresponse_timeout = \"2s\"\nreport_timeout = \"1s\"\nwake_up_hold = \"1s\"\n";
const PLUG: u8 = 2;
const SLEEPER: u8 = 5;

fn address(node: u8) -> String {
    format!("{HOME_ID:08x}-{node}")
}

fn start() -> (SimEmulator, Driven) {
    start_with(EmulatorConfig::default())
}

fn start_with(config: EmulatorConfig) -> (SimEmulator, Driven) {
    let sim = emulator(config);
    let zw = attach(&sim, None);
    (sim, zw)
}

/// The emulator with quick wake-ups and slow periodic reports.
fn emulator(config: EmulatorConfig) -> SimEmulator {
    SimEmulator::new(EmulatorConfig {
        wake_interval: Duration::from_secs(3),
        awake_time: Duration::from_secs(10),
        report_interval: Duration::from_secs(60),
        ..config
    })
}

/// A driver on the emulator (a new connection), keeping its state in `state_dir` if given.
fn attach(sim: &SimEmulator, state_dir: Option<std::path::PathBuf>) -> Driven {
    let (ours, theirs) = tokio::io::duplex(4096);
    let served = sim.clone();
    tokio::spawn(async move {
        let _ = served.serve(theirs).await;
    });
    Driven::start_in(
        PortSpec::Sim(Protocol::Zwave),
        Some(Box::new(ours)),
        OPTIONS,
        state_dir,
    )
}

async fn plug_ready(zw: &mut Driven) {
    zw.wait("the plug interviewed", 30, |e| {
        e.native_address == address(PLUG)
            && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
    })
    .await;
}

/// Opens (or with 0 closes) the driver's join window; the driver's answer.
async fn permit_join(zw: &mut Driven, seconds: u32) -> Result<(), fieldgate::model::RadioError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    zw.command(RadioCommand::PermitJoin { seconds, reply })
        .await;
    answer.await.expect("an answer")
}

/// Sets the plug and returns the result's `ok`.
async fn switch(zw: &mut Driven, id: &str, command: DeviceCommand) -> bool {
    set(zw, PLUG, id, command).await.0
}

/// Sends a command to a node and returns the result's `ok` and detail.
async fn set(zw: &mut Driven, node: u8, id: &str, command: DeviceCommand) -> (bool, String) {
    zw.command(RadioCommand::Set {
        stale_at: std::time::Instant::now() + fieldgate::model::COMMAND_STALE_AFTER,
        native_address: address(node),
        command,
        command_id: id.into(),
    })
    .await;
    let ev = zw
        .wait(id, 40, |e| {
            matches!(&e.kind, DeviceEventKind::CommandResult { command_id, .. } if command_id == id)
        })
        .await;
    match ev.kind {
        DeviceEventKind::CommandResult { ok, detail, .. } => (ok, detail),
        _ => (false, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_holds_the_controllers_nvm_and_network() {
    let (sim, mut zw) = start();
    plug_ready(&mut zw).await;
    let (reply, answer) = tokio::sync::oneshot::channel();
    zw.command(RadioCommand::Backup { reply }).await;
    let backup = tokio::time::timeout(Duration::from_secs(60), answer)
        .await
        .expect("the backup in time")
        .expect("an answer")
        .expect("a backup");
    assert_eq!(backup.format, "zwave-nvm");
    let doc = backup.document;
    let image = sim.with(|e, _| e.nvm_image().to_vec());
    assert_eq!(doc["nvm"]["size"], image.len());
    assert_eq!(
        doc["nvm"]["hex"],
        hex::encode(&image),
        "the image as the controller holds it"
    );
    assert_eq!(doc["home_id"], format!("{HOME_ID:08x}"));
    assert_eq!(backup.devices, sim.node_ids().len());
    assert!(
        doc["controller"]["chip_family"].is_string(),
        "{}",
        doc["controller"]
    );
    assert!(doc["controller"]["library_version"]
        .as_str()
        .is_some_and(|v| v.starts_with("Z-Wave")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_from_every_controller_fault() {
    let (sim, mut zw) = start();
    plug_ready(&mut zw).await;
    assert!(switch(&mut zw, "before", DeviceCommand::On).await);
    // Link-level faults: the frame is sent again and the command goes through.
    for (i, fault) in [
        Fault::Nak,
        Fault::Can,
        Fault::MissingAck,
        Fault::CorruptFrame,
    ]
    .into_iter()
    .enumerate()
    {
        sim.inject(fault.clone());
        let id = format!("after-{fault:?}");
        let command = if i % 2 == 0 {
            DeviceCommand::Off
        } else {
            DeviceCommand::On
        };
        assert!(
            switch(&mut zw, &id, command).await,
            "{fault:?} not recovered"
        );
    }
    assert!(
        zw.counters().line_errors >= 1,
        "the corrupt frame is counted"
    );
    // A lost callback: the command fails (aborted), the next one works.
    sim.inject(Fault::MissingCallback);
    let _ = switch(&mut zw, "lost-callback", DeviceCommand::On).await;
    assert!(switch(&mut zw, "after-lost-callback", DeviceCommand::Off).await);
    // A jammed transmitter and a silent one are freed by a soft reset.
    for fault in [Fault::Jam, Fault::JamSilent] {
        let resets = sim.with(|e, _| e.stats().soft_resets);
        let startups = zw.counters().startups;
        sim.inject(fault.clone());
        let _ = switch(&mut zw, &format!("{fault:?}"), DeviceCommand::On).await;
        let _ = switch(&mut zw, &format!("{fault:?}-2"), DeviceCommand::On).await;
        assert!(
            sim.with(|e, _| e.stats().soft_resets) > resets,
            "{fault:?}: no soft reset"
        );
        assert!(
            zw.counters().startups > startups,
            "{fault:?}: not started again"
        );
        assert!(
            switch(&mut zw, &format!("after-{fault:?}"), DeviceCommand::Off).await,
            "{fault:?}: commands do not work after the soft reset"
        );
    }
    // The controller restarting on its own: started up again.
    let startups = zw.counters().startups;
    sim.inject(Fault::Reset);
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while zw.counters().startups == startups {
        assert!(
            tokio::time::Instant::now() < until,
            "the restart was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switch(&mut zw, "after-reset", DeviceCommand::On).await);
    zw.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_nodes_requests_go_while_it_is_awake_then_it_sleeps_at_once() {
    let (sim, mut zw) = start();
    zw.wait("the sleeper interviewed", 40, |e| {
        e.native_address == address(SLEEPER)
            && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
    })
    .await;
    // Its next wake-up: the hub is told it spoke, and hands over what it held.
    let t0 = std::time::SystemTime::now();
    zw.wait("a wake-up (its battery level, asked at each one)", 10, |e| {
        e.native_address == address(SLEEPER)
            && e.received_at > t0
            && matches!(&e.kind, DeviceEventKind::Readings(r) if r.iter().any(|r| r.name == "battery"))
    })
    .await;
    assert!(sim.with(|e, _| e.is_awake(SLEEPER)));
    zw.command(RadioCommand::Read {
        native_address: address(SLEEPER),
        command_id: "held-read".into(),
    })
    .await;
    zw.wait("the held read answered", 10, |e| {
        matches!(&e.kind, DeviceEventKind::CommandResult { command_id, ok: true, .. } if command_id == "held-read")
    })
    .await;
    // Then Wake Up No More Information: asleep well before its 10 s awake time runs out.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while sim.with(|e, _| e.is_awake(SLEEPER)) {
        assert!(
            tokio::time::Instant::now() < until,
            "the node was not sent back to sleep"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `fieldgate radio backup` end to end (the real daemon on `sim://zwave`, the API, the hub):
/// the controller's NVM image to a new 0600 file, its description next to it.
#[test]
fn radio_backup_writes_the_nvm_image_and_its_description() {
    use std::os::unix::fs::PermissionsExt;
    let d = crate::common::TestDaemon::start(
        "\n[[radio]]\nname = \"zwave0\"\nprotocol = \"zwave\"\nport = \"sim://zwave\"\n",
    );
    let image = d.dir.path().join("zwave0.nvm");
    let image_arg = image.to_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = d.cli(&["radio", "backup", "zwave0", "--out", &image_arg]);
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no backup: {}\n{}",
            crate::common::stderr(&out),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let bytes = std::fs::read(&image).unwrap();
    assert_eq!(bytes, fieldgate_zwave::emulator::nvm::DEFAULT_IMAGE);
    let sidecar = d.dir.path().join("zwave0.nvm.json");
    for f in [&image, &sidecar] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    assert_eq!(doc["format"], "zwave-nvm");
    assert_eq!(doc["home_id"], format!("{HOME_ID:08x}"));
    assert_eq!(doc["nvm"]["size"], bytes.len());
    assert_eq!(doc["nvm"]["image"], "zwave0.nvm");
    assert!(doc["nvm"].get("hex").is_none(), "the image is not repeated");
    assert!(
        doc["nodes"].as_array().is_some_and(|n| !n.is_empty()),
        "{doc}"
    );
    assert!(doc["controller"]["chip_family"].is_string(), "{doc}");
    // Never overwrites.
    assert!(!d
        .cli(&["radio", "backup", "zwave0", "--out", &image_arg])
        .status
        .success());
    // The image (network keys) never reaches the log.
    assert!(!d.log().contains(&hex::encode(&bytes[..64])));

    // Restore: only with --yes, only onto the same chip family, then the image goes back.
    let out = d.cli(&["radio", "restore", "zwave0", "--in", &image_arg]);
    assert!(!out.status.success());
    assert!(
        crate::common::stderr(&out).contains("--yes"),
        "{}",
        crate::common::stderr(&out)
    );
    let foreign = d.dir.path().join("foreign.nvm");
    std::fs::write(&foreign, &bytes).unwrap();
    let mut foreign_doc = doc.clone();
    foreign_doc["controller"]["chip_family"] = serde_json::json!("800");
    std::fs::write(
        d.dir.path().join("foreign.nvm.json"),
        foreign_doc.to_string(),
    )
    .unwrap();
    let out = d.cli(&[
        "radio",
        "restore",
        "zwave0",
        "--in",
        foreign.to_str().unwrap(),
        "--yes",
    ]);
    assert!(!out.status.success());
    assert!(
        crate::common::stderr(&out).contains("chip family"),
        "{}",
        crate::common::stderr(&out)
    );
    let out = d.cli(&[
        "radio", "restore", "zwave0", "--in", &image_arg, "--yes", "--json",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::common::stderr(&out),
        d.log()
    );
    let restored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restored["bytes"], bytes.len(), "{restored}");
    assert_eq!(restored["home_id"], format!("{HOME_ID:08x}"));
    let audit = String::from_utf8_lossy(&d.cli(&["audit", "tail", "-n", "5"]).stdout).into_owned();
    assert!(audit.contains("radio.restore"), "{audit}");
    assert!(!d.log().contains(&hex::encode(&bytes[..64])));
    assert!(!audit.contains(&hex::encode(&bytes[..64])));
}

/// Multilevel Switch levels are 0-99 on the wire: 100 % is sent as 99 and 99 reads as
/// 100 %, with the device's own number beside it as `level_raw`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dimmer_at_99_reads_100_percent_and_100_percent_is_sent_as_99() {
    const DIMMER: u8 = 7;
    let mut nodes = default_nodes();
    nodes.push((DIMMER, NodeKind::Dimmer));
    let (sim, mut zw) = start_with(EmulatorConfig {
        nodes,
        ..EmulatorConfig::default()
    });
    zw.wait("the dimmer interviewed", 30, |e| {
        e.native_address == address(DIMMER)
            && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
    })
    .await;
    let number =
        |e: &fieldgate::model::DeviceEvent, name: &str| match &e.kind {
            DeviceEventKind::Readings(r) => r.iter().find(|r| r.name == name).and_then(|r| match r
                .value
            {
                Value::Number(n) => Some(n),
                _ => None,
            }),
            _ => None,
        };
    for (percent, raw, reads) in [
        (100u8, 99u8, 100.0),
        (50, 50, 50.5),
        (0, 0, 0.0),
        (1, 1, 1.0),
    ] {
        let t0 = std::time::SystemTime::now();
        let id = format!("level-{percent}");
        let (ok, detail) = set(&mut zw, DIMMER, &id, DeviceCommand::Level { percent }).await;
        assert!(ok, "{percent} %: {detail}");
        assert_eq!(sim.with(|e, _| e.node(DIMMER).map(|n| n.level)), Some(raw));
        // The state it reported after the Set (Multilevel Switch Get), before the result.
        let ev = zw
            .seen(|e| {
                e.native_address == address(DIMMER)
                    && e.received_at >= t0
                    && number(e, "level").is_some()
            })
            .unwrap_or_else(|| panic!("no level reported after {percent} %"));
        assert_eq!(number(&ev, "level"), Some(reads), "{percent} %");
        assert_eq!(number(&ev, "level_raw"), Some(f64::from(raw)));
    }
    // "On" is 0xFF: the device goes back to its last level.
    assert!(set(&mut zw, DIMMER, "on", DeviceCommand::On).await.0);
    assert_eq!(sim.with(|e, _| e.node(DIMMER).map(|n| n.level)), Some(1));
}

/// A configuration parameter is set (under Supervision: the node says it took it), read
/// back, and the answer says the value the node holds; a parameter the node lacks, or a
/// value that does not fit, fails with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_parameters_are_set_and_read_back() {
    let (sim, mut zw) = start();
    plug_ready(&mut zw).await;
    let param = |n: u8| sim.with(|e, _| e.node(PLUG).and_then(|v| v.parameters.get(&n).copied()));
    assert_eq!(param(1), Some((2, 300)), "the emulator's default");
    let configure = |parameter, size, value| DeviceCommand::Configure {
        parameter,
        size,
        value,
    };
    let (ok, detail) = set(&mut zw, PLUG, "p1", configure(1, 2, 600)).await;
    assert!(ok, "{detail}");
    assert!(detail.contains("parameter 1 is now 600"), "{detail}");
    assert_eq!(param(1), Some((2, 600)));
    // Unsigned in its size: 255 in one byte is sent (and held) as 0xFF.
    let (ok, detail) = set(&mut zw, PLUG, "p2", configure(2, 1, 255)).await;
    assert!(ok, "{detail}");
    assert_eq!(param(2), Some((1, -1)));
    // A parameter the node does not have: it answers with another one.
    let (ok, detail) = set(&mut zw, PLUG, "p9", configure(9, 1, 5)).await;
    assert!(!ok);
    assert!(detail.contains("no parameter 9"), "{detail}");
    assert_eq!(param(9), None);
    // Too big for its size, or a number Configuration cannot carry: refused before sending.
    let (ok, detail) = set(&mut zw, PLUG, "big", configure(1, 1, 300)).await;
    assert!(!ok && detail.contains("does not fit"), "{detail}");
    let (ok, detail) = set(&mut zw, PLUG, "p300", configure(300, 1, 1)).await;
    assert!(!ok && detail.contains("0-255"), "{detail}");
    assert_eq!(param(1), Some((2, 600)), "unchanged by the refusals");
    // A level for an on/off plug (Binary Switch, no Multilevel Switch) is refused, not
    // sent as a Basic Set that switches it on and answered ok.
    let on_before = sim.with(|e, _| e.node(PLUG).map(|n| n.level));
    let (ok, detail) = set(&mut zw, PLUG, "lvl", DeviceCommand::Level { percent: 40 }).await;
    assert!(!ok && detail.starts_with("not_supported"), "{detail}");
    assert_eq!(sim.with(|e, _| e.node(PLUG).map(|n| n.level)), on_before);
    // A sensor (no switch class) takes no level: refused, not answered "delivered"
    // after a Basic Set and its Basic Report taken for a dimmer's state.
    const SENSOR: u8 = 3;
    let interviewed = |e: &fieldgate::model::DeviceEvent| {
        e.native_address == address(SENSOR)
            && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
    };
    if zw.seen(interviewed).is_none() {
        zw.wait("the multisensor interviewed", 60, interviewed)
            .await;
    }
    let (ok, detail) = set(
        &mut zw,
        SENSOR,
        "sensor-level",
        DeviceCommand::Level { percent: 40 },
    )
    .await;
    assert!(!ok && detail.starts_with("not_supported"), "{detail}");
    zw.assert_running();
}

/// What interviews learnt is kept in the radio's state directory: after a restart of the
/// daemon no node is interviewed again (no Manufacturer Specific or Version Get reaches
/// it), the sleeping node's next wake-up is an ordinary one (its battery level, asked only
/// of nodes whose interview is done), and commands work at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interviews_are_not_started_over_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("zwave0");
    let sim = emulator(EmulatorConfig::default());
    let mut zw = attach(&sim, Some(state.clone()));
    zw.wait("the sleeper interviewed", 40, |e| {
        e.native_address == address(SLEEPER)
            && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
    })
    .await;
    let plug_done = |e: &fieldgate::model::DeviceEvent| {
        e.native_address == address(PLUG)
            && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
    };
    if zw.seen(plug_done).is_none() {
        plug_ready(&mut zw).await;
    }
    let asked = |node: u8| {
        sim.with(|e, _| {
            (
                e.delivered(node, 0x72, 0x04), // Manufacturer Specific Get
                e.delivered(node, 0x86, 0x11), // Version Get
            )
        })
    };
    let before = (asked(PLUG), asked(SLEEPER));
    assert!(before.0 .0 >= 1 && before.1 .0 >= 1, "{before:?}");
    assert!(state.join("zwave-nodes.json").is_file());
    // The daemon stops and starts again.
    drop(zw);
    let mut zw = attach(&sim, Some(state));
    let t0 = std::time::SystemTime::now();
    zw.wait("the sleeper's next wake-up (its battery level)", 20, |e| {
        e.native_address == address(SLEEPER)
            && e.received_at > t0
            && matches!(&e.kind, DeviceEventKind::Readings(r) if r.iter().any(|r| r.name == "battery"))
    })
    .await;
    assert!(switch(&mut zw, "after-restart", DeviceCommand::On).await);
    assert_eq!((asked(PLUG), asked(SLEEPER)), before, "interviewed again");
    zw.assert_running();
}

/// The technician's side, end to end (the real daemon on `sim://zwave`): the emulator's
/// network adopted in a join window, a configuration parameter set from the CLI (a wrong
/// size refused with the reason), and `remove` telling the technician to press the
/// device's button now, because the radio's capabilities say exclusion needs it.
#[test]
fn configure_and_remove_from_the_cli() {
    use crate::common::{stderr, stdout};
    let d = crate::common::TestDaemon::start(
        "\n[[radio]]\nname = \"zwave0\"\nprotocol = \"zwave\"\nport = \"sim://zwave\"\n",
    );
    let id = format!("zwave:{}", address(PLUG));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let until = |what: &str, args: &[&str]| loop {
        let out = d.cli(args);
        if out.status.success() {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {}\n{}",
            stderr(&out),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    until("a join window", &["pair", "zwave0", "--seconds", "2"]);
    until("the plug known", &["device", &id]);
    // The CLI waits for the node's read-back and says it; a parameter the node lacks
    // fails with the node's answer.
    let out = until("configure", &["configure", &id, "1", "600", "--size", "2"]);
    assert!(
        stdout(&out).contains("parameter 1 is now 600"),
        "{}",
        stdout(&out)
    );
    let out = d.cli(&["configure", &id, "9", "5", "--size", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no parameter 9"), "{}", stderr(&out));
    let out = d.cli(&["configure", &id, "1", "600", "--size", "3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("1, 2 or 4"), "{}", stderr(&out));
    let out = d.cli(&["remove", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("decommissioned"), "{text}");
    assert!(
        text.contains("press the device's button") && text.contains("within 60 s"),
        "{text}"
    );
    // The technician changes their mind before pressing it: re-admitted, the exclusion
    // waiting for the button is closed, so a join window opens at once (it was refused
    // for the rest of the 60 s) and takes the node, still on the network, back.
    let out = d.cli(&["readmit", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d.cli(&["pair", "zwave0", "--seconds", "3"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.log());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = d.cli(&["device", &id, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["lifecycle"] == "active" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(d.log().contains("its exclusion is closed"), "{}", d.log());
    // Removed and blocked: the technician is told to press the button too.
    let out = d.cli(&["remove", &id, "--block"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("blocked") && text.contains("press the device's button"),
        "{text}"
    );
}

/// Nodes the controller already had (a stick moved from another system), end to end on
/// the real daemon: before any join window they are listed as `pending` with what their
/// interview found (manufacturer, model), not as blank entries; `pair` admits them.
#[test]
fn nodes_the_controller_had_are_listed_pending_with_their_description_until_paired() {
    use crate::common::{stderr, TestDaemon};
    let d = TestDaemon::start(
        "\n[[radio]]\nname = \"zwave0\"\nprotocol = \"zwave\"\nport = \"sim://zwave\"\n",
    );
    let id = format!("zwave:{}", address(PLUG));
    // `fieldgate device ID --json` polled until `ok` says yes.
    let device_until = |what: &str, secs: u64, ok: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let out = d.cli(&["device", &id, "--json"]);
            let v = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if ok(&v) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {v} {}\n{}",
                stderr(&out),
                d.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let described = device_until("the plug listed with its manufacturer", 60, &|v| {
        !v["manufacturer"].is_null()
    });
    assert_eq!(described["lifecycle"], "pending", "{described}");
    assert!(described["model"].is_string(), "{described}");
    let out = d.cli(&["pair", "zwave0", "--seconds", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let admitted = device_until("admitted by the join window", 30, &|v| {
        v["lifecycle"] == "active"
    });
    assert_eq!(admitted["manufacturer"], described["manufacturer"]);
}

/// Restores an NVM backup through the driver: an image from another chip family is refused
/// with nothing written; the controller's own (changed) image is written, the controller
/// restarts, and a backup after it reads the restored image back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_writes_the_image_back_only_onto_the_same_chip_family() {
    let (sim, mut zw) = start();
    plug_ready(&mut zw).await;
    async fn ask<T>(
        zw: &mut Driven,
        make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> RadioCommand,
    ) -> T {
        let (reply, answer) = tokio::sync::oneshot::channel();
        zw.command(make(reply)).await;
        tokio::time::timeout(Duration::from_secs(60), answer)
            .await
            .expect("an answer in time")
            .expect("an answer")
    }
    let backup = ask(&mut zw, |reply| RadioCommand::Backup { reply })
        .await
        .expect("a backup");
    let original = sim.with(|e, _| e.nvm_image().to_vec());

    // The same image with one byte changed near the end, so a restore is visible.
    let mut changed = original.clone();
    let at = changed.len() - 100;
    changed[at] ^= 0xA5;
    let mut doc = backup.document.clone();
    doc["nvm"]["hex"] = serde_json::json!(hex::encode(&changed));

    let mut foreign = doc.clone();
    foreign["controller"]["chip_family"] = serde_json::json!("800");
    let refused = ask(&mut zw, |reply| RadioCommand::Restore {
        document: foreign,
        reply,
    })
    .await
    .expect_err("another chip family is refused");
    assert!(refused.to_string().contains("chip family"), "{refused}");
    assert_eq!(
        sim.with(|e, _| e.nvm_image().to_vec()),
        original,
        "nothing written"
    );

    let restored = ask(&mut zw, |reply| RadioCommand::Restore {
        document: doc,
        reply,
    })
    .await
    .expect("restored");
    assert_eq!(restored["bytes"], changed.len(), "{restored}");
    assert_eq!(sim.with(|e, _| e.nvm_image().to_vec()), changed);

    // After the restart the driver answers again, from the restored memory.
    let again = ask(&mut zw, |reply| RadioCommand::Backup { reply })
        .await
        .expect("a backup after the restore");
    assert_eq!(again.document["nvm"]["hex"], hex::encode(&changed));
}

/// An exclusion that ends with no node removed (nobody pressed the button; here a
/// join window closes it) is not the node leaving, and a node asked to leave again
/// soon after (it is still heard) gets no new exclusion that would close the
/// technician's join windows each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpressed_exclusion_is_no_leave_and_is_not_restarted_at_once() {
    let (sim, mut zw) = start();
    plug_ready(&mut zw).await;
    zw.command(RadioCommand::Remove {
        native_address: address(PLUG),
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sim.with(|e, _| e.excluding()) {
        assert!(std::time::Instant::now() < deadline, "no exclusion started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A join window does not cut the exclusion short: it is refused, saying why.
    match permit_join(&mut zw, 5).await {
        Err(fieldgate::model::RadioError::Refused(why)) => {
            assert!(why.contains("exclusion is in progress"), "{why}")
        }
        other => panic!("a join window during an exclusion: {other:?}"),
    }
    assert!(sim.with(|e, _| e.excluding()), "the exclusion was closed");
    // Closing the windows (as at a stop) ends it (Stop; the controller: done, no node).
    assert_eq!(permit_join(&mut zw, 0).await, Ok(()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        zw.seen(|e| e.native_address == address(PLUG) && e.kind == DeviceEventKind::Left)
            .is_none(),
        "the plug was said to leave"
    );
    // Asked again at once: no new exclusion.
    zw.command(RadioCommand::Remove {
        native_address: address(PLUG),
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sim.with(|e, _| e.excluding()), "a new exclusion started");
    zw.assert_running();
}

/// A controller that locks up while the network is idle is found by the watchdog (a
/// version request once it has been quiet for `watchdog_interval`), not at the next
/// command: its failures lead to a soft reset it does not answer either, and the link
/// is handed back to the supervisor. A controller that answers is asked and left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_locks_up_while_idle_is_found_by_the_watchdog() {
    let sim = emulator(EmulatorConfig::default());
    let (ours, theirs) = tokio::io::duplex(4096);
    let served = sim.clone();
    tokio::spawn(async move {
        let _ = served.serve(theirs).await;
    });
    let mut zw = Driven::start_with(
        PortSpec::Sim(Protocol::Zwave),
        Some(Box::new(ours)),
        &format!("{OPTIONS}watchdog_interval = \"1s\"\n"),
    );
    plug_ready(&mut zw).await;
    // Healthy: the watchdog's requests are answered; no soft reset, no new start-up.
    let startups = zw.counters().startups;
    let resets = sim.with(|e, _| e.stats().soft_resets);
    tokio::time::sleep(Duration::from_secs(4)).await;
    zw.assert_running();
    assert_eq!(zw.counters().startups, startups);
    assert_eq!(sim.with(|e, _| e.stats().soft_resets), resets);

    sim.inject(Fault::Freeze(true));
    let ended = zw.finished(40).await;
    let why = format!("{:#}", ended.expect_err("the driver gave the link up"));
    assert!(why.contains("soft reset"), "{why}");
}

/// A sleeping node's readings held while it slept reach the driver in the order they
/// were taken, over the served link as on a gateway: the newest is the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_nodes_held_readings_arrive_oldest_first() {
    let sim = SimEmulator::new(EmulatorConfig {
        wake_interval: Duration::from_secs(9),
        awake_time: Duration::from_secs(2),
        report_interval: Duration::from_secs(2),
        ..EmulatorConfig::default()
    });
    let mut zw = attach(&sim, None);
    let mut batteries = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while batteries.len() < 4 && tokio::time::Instant::now() < until {
        let ev = zw
            .wait("a reading of the sleeper", 30, |e| {
                e.native_address == address(SLEEPER)
                    && matches!(&e.kind, DeviceEventKind::Readings(r) if r.iter().any(|r| r.name == "battery"))
            })
            .await;
        if let DeviceEventKind::Readings(r) = &ev.kind {
            for r in r.iter().filter(|r| r.name == "battery") {
                if let Value::Number(n) = &r.value {
                    batteries.push(*n);
                }
            }
        }
    }
    assert!(
        batteries.windows(2).all(|w| w[0] >= w[1]),
        "readings out of order: {batteries:?}"
    );
}

/// The controller leaves inclusion mode after each node it adds (the spec's Stop); the
/// driver starts it again for the rest of the technician's window, so every device
/// included in one window joins, not only the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_included_in_one_join_window_joins() {
    let (sim, mut zw) = start_with(EmulatorConfig {
        pending: vec![NodeKind::Dimmer, NodeKind::DoorSensor],
        ..EmulatorConfig::default()
    });
    plug_ready(&mut zw).await;
    let before = sim.node_ids();
    assert_eq!(permit_join(&mut zw, 30).await, Ok(()));
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while sim.node_ids().len() < before.len() + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "included: {:?} (before: {before:?})",
            sim.node_ids()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let added: Vec<u8> = sim
        .node_ids()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    for node in added {
        zw.wait("the new node joined", 20, |e| {
            e.native_address == address(node) && e.kind == DeviceEventKind::Joined
        })
        .await;
    }
    // Closed by the hub, the controller is out of inclusion and stays so.
    assert_eq!(permit_join(&mut zw, 0).await, Ok(()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!sim.with(|e, _| e.including()), "inclusion still on");
    zw.assert_running();
}
