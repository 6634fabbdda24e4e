//! The Z-Wave driver on the built-in controller emulator (`fieldgate_zwave::emulator`, pumped
//! by `radio::zwave_sim`): the NVM backup, every controller fault the emulator injects and
//! how the driver recovers from it, and a sleeping node's requests sent while it is awake,
//! then sent back to sleep at once.
//!
//! The emulator is attached through an in-memory pipe (as `sim://zwave` is); the hub is
//! left out so each assertion is about the driver.

use std::time::Duration;

use fieldgate::config::{PortSpec, Protocol};
use fieldgate::model::{DeviceCommand, DeviceEventKind, RadioCommand};
use fieldgate::radio::zwave_sim::SimEmulator;
use fieldgate_zwave::emulator::{EmulatorConfig, Fault, HOME_ID};

use crate::zwave_mock::harness::Driven;

/// Quick timeouts so that faults cost seconds, not minutes.
const OPTIONS: &str = "callback_timeout = \"2s\"\nresponse_timeout = \"2s\"\nreport_timeout = \"1s\"\nwake_up_hold = \"1s\"\n";
const PLUG: u8 = 2;
const SLEEPER: u8 = 5;

fn address(node: u8) -> String {
    format!("{HOME_ID:08x}-{node}")
}

fn start() -> (SimEmulator, Driven) {
    let sim = SimEmulator::new(EmulatorConfig {
        wake_interval: Duration::from_secs(3),
        awake_time: Duration::from_secs(10),
        report_interval: Duration::from_secs(60),
        ..EmulatorConfig::default()
    });
    let (ours, theirs) = tokio::io::duplex(4096);
    let served = sim.clone();
    tokio::spawn(async move {
        let _ = served.serve(theirs).await;
    });
    let zw = Driven::start_with(
        PortSpec::Sim(Protocol::Zwave),
        Some(Box::new(ours)),
        OPTIONS,
    );
    (sim, zw)
}

async fn plug_ready(zw: &mut Driven) {
    zw.wait("the plug interviewed", 30, |e| {
        e.native_address == address(PLUG)
            && matches!(&e.kind, DeviceEventKind::Interviewed(i) if i.manufacturer.is_some())
    })
    .await;
}

/// Sets the plug and returns the result's `ok`.
async fn switch(zw: &mut Driven, id: &str, command: DeviceCommand) -> bool {
    zw.command(RadioCommand::Set {
        native_address: address(PLUG),
        command,
        command_id: id.into(),
    })
    .await;
    let ev = zw
        .wait(id, 40, |e| {
            matches!(&e.kind, DeviceEventKind::CommandResult { command_id, .. } if command_id == id)
        })
        .await;
    matches!(ev.kind, DeviceEventKind::CommandResult { ok: true, .. })
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
}
