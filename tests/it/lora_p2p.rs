//! The LoRa P2P driver against an emulated RAK3172 on a real pseudo-terminal (opened by
//! tokio-serial, as a USB modem is): configuration from the factory LoRaWAN mode, frames in
//! both firmware formats becoming readings, a transmission with the receive re-armed,
//! `AT_BUSY_ERROR` retried (and given up when it lasts), a spontaneous module restart
//! recovered; P2P encryption (frames under the site key decoded, under another key counted
//! and dropped, the key written again after the module lost it, a firmware without
//! encryption keeping the radio down); then the real daemon over `fieldgate emulate
//! lora-rak3172 --pty`, including a trace-level log that must not hold the key.

use std::sync::Arc;
use std::time::Duration;

use fieldgate::config::{PortSpec, Protocol};
use fieldgate::model::{
    DeviceCommand, DeviceEvent, DeviceEventKind, RadioCommand, RadioState, Value,
};
use fieldgate::radio::lora_p2p::sim::PtyModem;
use fieldgate::radio::{link, DriverBox, DriverIo, RadioCounters, RadioCountersSnapshot};
use fieldgate_lora::rak3172::emulator::{
    AirFrame, EmulatorConfig, Fault, Firmware, P2pCipher, Sensor,
};
use tokio::sync::{mpsc, watch};

/// The channel the tests configure: 869.525 MHz, SF9, 125 kHz.
const OPTIONS: &str = "frequency = 869525000\nspreading_factor = 9\nbandwidth = 125\ncoding_rate = \"4/6\"\ntx_power = 20\nsync_word = \"3444\"\ncommand_timeout = \"1s\"";
const SENSOR: &str = "0a0b0c01";

fn config(firmware: Firmware) -> EmulatorConfig {
    let sensor = |id: u32, sf: u8| Sensor {
        id,
        freq_hz: 869_525_000,
        sf,
        bw_khz: 125,
        interval: Duration::from_millis(400),
        rssi: -71,
        snr: 9,
        cipher: None,
    };
    EmulatorConfig {
        firmware,
        // On the configured channel, and one on SF7 the modem must not hear.
        sensors: vec![sensor(0x0a0b_0c01, 9), sensor(0x0a0b_0c07, 7)],
        ..EmulatorConfig::default()
    }
}

struct Driven {
    modem: PtyModem,
    events: mpsc::Receiver<DeviceEvent>,
    commands: mpsc::Sender<RadioCommand>,
    state: watch::Receiver<RadioState>,
    counters: Arc<RadioCounters>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    seen: Vec<DeviceEvent>,
}

impl Driven {
    fn start(firmware: Firmware) -> Driven {
        Driven::start_with(config(firmware), OPTIONS)
    }

    fn start_with(emulator: EmulatorConfig, options: &str) -> Driven {
        let modem = PtyModem::spawn(emulator).expect("a pseudo-terminal");
        let spec = fieldgate::radio::spec(Protocol::LoraP2p).expect("the LoRa P2P driver");
        let options: toml::Table = options.parse().unwrap();
        (spec.check_options)(&options).expect("valid options");
        let DriverBox::ByteStream(mut driver) = (spec.new)() else {
            panic!("the LoRa P2P driver takes a byte stream")
        };
        let (events_tx, events) = mpsc::channel(256);
        let (commands, commands_rx) = mpsc::channel(16);
        let (state_tx, state) = watch::channel(RadioState::Starting);
        let counters = Arc::new(RadioCounters::default());
        let port = PortSpec::Serial(modem.path().to_path_buf());
        let mut io = DriverIo {
            radio: "p2p0".into(),
            protocol: Protocol::LoraP2p,
            port: port.clone(),
            baud: None,
            options,
            events: events_tx,
            commands: commands_rx,
            state: state_tx,
            secrets: None,
            counters: counters.clone(),
            state_dir: None,
        };
        let task = tokio::spawn(async move {
            let link = link::open(&port, None).await?;
            driver.run(link, &mut io).await
        });
        Driven {
            modem,
            events,
            commands,
            state,
            counters,
            task,
            seen: Vec::new(),
        }
    }

    fn counters(&self) -> RadioCountersSnapshot {
        self.counters.snapshot()
    }

    async fn wait(
        &mut self,
        what: &str,
        secs: u64,
        f: impl Fn(&DeviceEvent) -> bool,
    ) -> DeviceEvent {
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(until, self.events.recv()).await {
                Ok(Some(ev)) => {
                    self.seen.push(ev.clone());
                    if f(&ev) {
                        return ev;
                    }
                }
                Ok(None) => panic!("{what}: the driver stopped: {:?}", (&mut self.task).await),
                Err(_) => panic!("{what}: not within {secs} s; events: {:#?}", self.seen),
            }
        }
    }

    async fn reading(&mut self, what: &str) -> DeviceEvent {
        self.wait(what, 10, |e| {
            e.native_address == SENSOR && matches!(e.kind, DeviceEventKind::Readings(_))
        })
        .await
    }

    async fn up(&mut self) {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while *self.state.borrow() != RadioState::Up {
            tokio::time::timeout_at(until, self.state.changed())
                .await
                .expect("the modem comes up")
                .expect("the driver runs");
        }
    }

    async fn set(&mut self, command: DeviceCommand, id: &str) -> (bool, String) {
        self.commands
            .send(RadioCommand::Set {
                stale_at: std::time::Instant::now() + fieldgate::model::COMMAND_STALE_AFTER,
                native_address: SENSOR.into(),
                command,
                command_id: id.into(),
            })
            .await
            .unwrap();
        let id = id.to_string();
        let ev = self
            .wait("the command's result", 20, move |e| {
                matches!(&e.kind, DeviceEventKind::CommandResult { command_id, .. } if *command_id == id)
            })
            .await;
        match ev.kind {
            DeviceEventKind::CommandResult { ok, detail, .. } => (ok, detail),
            _ => unreachable!(),
        }
    }

    /// Whether the module is receiving continuously on the configured channel, read at
    /// once and then until `secs` pass.
    async fn receiving(&self, secs: u64) -> bool {
        for _ in 0..secs * 20 {
            if self.modem.sim.with(|e, _| e.receiving_continuously()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

fn value(ev: &DeviceEvent, name: &str) -> Option<Value> {
    match &ev.kind {
        DeviceEventKind::Readings(r) => r.iter().find(|r| r.name == name).map(|r| r.value.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn a_factory_module_is_switched_to_p2p_configured_and_heard_in_both_firmware_formats() {
    for firmware in [Firmware::Rui3, Firmware::Legacy] {
        let mut d = Driven::start(firmware);
        d.up().await;
        let (mode, p2p, sync) = d
            .modem
            .sim
            .with(|e, _| (e.work_mode(), e.p2p(), e.sync_word()));
        assert_eq!(mode, 0, "{firmware:?}: switched from LoRaWAN to P2P");
        assert_eq!(
            (p2p.freq_hz, p2p.sf, p2p.bw_khz, p2p.cr, p2p.tx_power_dbm),
            (869_525_000, 9, 125, 1, 20)
        );
        assert_eq!(sync, 0x3444);
        assert!(d.receiving(1).await, "continuous receive");
        let ev = d.reading("a sensor frame").await;
        // `0a0b0c01` + LPP temperature (ch 1) and humidity (ch 2).
        assert!(
            matches!(value(&ev, "temperature"), Some(Value::Number(t)) if (21.0..31.0).contains(&t))
        );
        assert!(matches!(value(&ev, "humidity"), Some(Value::Number(_))));
        assert!(matches!(value(&ev, "payload_hex"), Some(Value::Text(h)) if h.starts_with("0167")));
        let link = ev.link.expect("link metrics");
        assert_eq!((link.rssi_dbm, link.snr_db), (Some(-71.0), Some(9.0)));
        // Described once, as a sender that hears after it sends.
        d.wait("its description", 5, |e| {
            e.native_address == SENSOR && matches!(e.kind, DeviceEventKind::Interviewed(_))
        })
        .await;
        // A frame the module hears from another sender, and a short one that names nobody.
        assert!(d.modem.sim.air_frame(
            869_525_000,
            9,
            125,
            AirFrame {
                rssi: -100,
                snr: -3,
                payload: vec![0xde, 0xad, 0xbe, 0xef, 0x42]
            },
        ));
        assert!(d.modem.sim.air_frame(
            869_525_000,
            9,
            125,
            AirFrame {
                rssi: -100,
                snr: -3,
                payload: vec![0x01, 0x02]
            },
        ));
        let other = d
            .wait("another sender", 5, |e| e.native_address == "deadbeef")
            .await;
        assert_eq!(value(&other, "payload_hex"), Some(Value::Text("42".into())));
        for _ in 0..100 {
            if d.counters().undecodable >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            d.counters().undecodable,
            2,
            "the short frame, and `42` is not LPP"
        );
        // The SF7 sensor was never heard, and never reported.
        assert!(d.modem.sim.stats().missed > 0);
        assert!(d.seen.iter().all(|e| e.native_address != "0a0b0c07"));
        assert_eq!(d.counters().startups, 1);
        d.task.abort();
    }
}

#[tokio::test]
async fn a_transmission_stops_the_receive_sends_and_listens_again_through_busy_answers() {
    let mut d = Driven::start(Firmware::Rui3);
    d.up().await;
    d.reading("a first frame").await;
    let (ok, detail) = d.set(DeviceCommand::On, "c1").await;
    assert!(ok, "{detail}");
    assert_eq!(
        d.modem.sim.stats().sent,
        [vec![0x0a, 0x0b, 0x0c, 0x01, 0x01]]
    );
    assert!(d.receiving(2).await, "re-armed after the transmission");
    d.reading("a frame after the transmission").await;

    // Busy three times: retried with a backoff, and the frame still goes out.
    d.modem.sim.inject(Fault::Busy(3));
    let (ok, detail) = d.set(DeviceCommand::Level { percent: 40 }, "c2").await;
    assert!(ok, "{detail}");
    assert_eq!(
        d.modem.sim.stats().sent.last(),
        Some(&vec![0x0a, 0x0b, 0x0c, 0x01, 0x03, 40])
    );
    assert!(d.counters().busy >= 3, "{:?}", d.counters());
    assert!(d.receiving(2).await);

    // Busy for longer than the retries last: the command fails, says why, and the modem
    // still listens afterwards.
    d.modem.sim.inject(Fault::Busy(8));
    let (ok, detail) = d.set(DeviceCommand::Off, "c3").await;
    assert!(!ok);
    assert!(detail.contains("AT_BUSY_ERROR"), "{detail}");
    assert_eq!(d.modem.sim.stats().sent.len(), 2, "nothing sent");
    assert!(d.receiving(5).await, "re-armed after the failure");
    d.reading("a frame after the failure").await;

    // A command for an address that is no sender id is refused without touching the air.
    d.commands
        .send(RadioCommand::Set {
            stale_at: std::time::Instant::now() + fieldgate::model::COMMAND_STALE_AFTER,
            native_address: "xyz".into(),
            command: DeviceCommand::On,
            command_id: "c4".into(),
        })
        .await
        .unwrap();
    let ev = d
        .wait("the refusal", 5, |e| matches!(&e.kind, DeviceEventKind::CommandResult { command_id, .. } if command_id == "c4"))
        .await;
    assert!(matches!(
        ev.kind,
        DeviceEventKind::CommandResult { ok: false, .. }
    ));
    assert!(!d.task.is_finished());
    d.task.abort();
}

#[tokio::test]
async fn a_module_that_restarts_on_its_own_is_configured_again() {
    let mut d = Driven::start(Firmware::Rui3);
    d.up().await;
    d.reading("a first frame").await;
    assert_eq!(d.counters().startups, 1);
    d.modem.sim.inject(Fault::Reset);
    // Right after the restart the module does not receive; the driver sees the banner.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while d.counters().startups < 2 {
        assert!(tokio::time::Instant::now() < until, "no reconfiguration");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(d.receiving(5).await, "receiving again after the restart");
    // Frames flow again (drop those read before the restart).
    while d.events.try_recv().is_ok() {}
    d.reading("a frame after the restart").await;
    assert_eq!(
        d.modem.sim.stats().restarts,
        2,
        "the mode switch and the fault"
    );
    assert_eq!(d.counters().startups, 2);
    d.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_hears_p2p_senders_through_the_pty_emulator_and_keeps_them_pending() {
    daemon_hears_the_emulator(&["--pty"], false).await;
}

/// Over TCP (as behind ser2net), a module already in P2P mode, the old firmware's
/// two-line receive format, busy answers every second and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_hears_p2p_senders_over_tcp_through_busy_answers_and_a_restart() {
    daemon_hears_the_emulator(
        &[
            "--listen",
            "127.0.0.1:0",
            "--p2p",
            "--firmware",
            "legacy",
            "--fault",
            "busy/1s",
            "--fault",
            "reset@2s",
        ],
        true,
    )
    .await;
}

async fn daemon_hears_the_emulator(args: &[&str], restarts: bool) {
    use crate::common::TestDaemon;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut emu = Command::new(crate::common::bin())
        .args(["emulate", "lora-rak3172", "--log-level", "warn"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fieldgate emulate lora-rak3172");
    let mut line = String::new();
    BufReader::new(emu.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let line = line.trim();
    let path = line
        .strip_prefix("pty ")
        .or_else(|| line.strip_prefix("listening "))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let mut d = TestDaemon::start(&format!(
        "[[radio]]\nname = \"p2p0\"\nprotocol = \"lora-p2p\"\nport = \"{path}\"\n"
    ));
    let db = d.db();
    let mut state = None;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(c) = fieldgate::store::open_reader(&db) else {
            continue;
        };
        let id = fieldgate::model::DeviceId::new(Protocol::LoraP2p, "0a0b0c01");
        if let Ok(Some(dev)) = fieldgate::store::registry::get(&c, &id) {
            if dev.last_state.get("temperature").is_some() {
                state = Some(dev);
                break;
            }
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(emu.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = emu.wait();
    let dev = state.unwrap_or_else(|| panic!("no reading stored; log:\n{}", d.log()));
    assert_eq!(dev.lifecycle, "pending", "heard, not adopted");
    assert_eq!(
        dev.last_state["rssi"].as_f64(),
        Some(-71.0),
        "{}",
        dev.last_state
    );
    assert_eq!(dev.last_state["snr"].as_f64(), Some(8.0));
    if restarts {
        // The first frame comes after the restart: the driver configured the module again.
        assert!(
            d.log().contains("the modem restarted"),
            "no restart seen:\n{}",
            d.log()
        );
    }
    d.terminate(Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------
// P2P encryption

/// The site's key and IV, as the senders and the key file hold them.
fn site() -> P2pCipher {
    P2pCipher {
        key: *b"\x2b\x7e\x15\x16\x28\xae\xd2\xa6\xab\xf7\x15\x88\x09\xcf\x4f\x3c",
        iv: *b"\xf0\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xff",
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A key file as the docs say to make one (mode 0600), in `dir`.
fn key_file(dir: &std::path::Path, cipher: &P2pCipher) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("lora-p2p.key");
    std::fs::write(
        &path,
        format!("{}\n{}\n", hex(&cipher.key), hex(&cipher.iv)),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The test channel's emulator, its sensors enciphering with `cipher` (in the clear when
/// `None`).
fn sensors_with(cipher: Option<P2pCipher>) -> EmulatorConfig {
    let mut c = config(Firmware::Rui3);
    for s in &mut c.sensors {
        s.cipher = cipher.clone();
    }
    c
}

fn options_with_key(file: &std::path::Path) -> String {
    format!("{OPTIONS}\nencryption_key_file = \"{}\"", file.display())
}

#[tokio::test]
async fn with_the_site_key_frames_decode_and_the_key_is_written_again_after_the_module_lost_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = key_file(dir.path(), &site());
    let mut d = Driven::start_with(sensors_with(Some(site())), &options_with_key(&file));
    d.up().await;
    assert_eq!(
        d.modem.sim.with(|e, _| e.encryption(&site())),
        (true, true),
        "AT+ENCRY=1 with the key and IV from the file"
    );
    let ev = d.reading("a deciphered frame").await;
    assert!(
        matches!(value(&ev, "temperature"), Some(Value::Number(t)) if (21.0..31.0).contains(&t))
    );

    // A sender in the clear: the module deciphers it into bytes that do not decode. Counted,
    // and never a sender.
    let plain = sensors_with(None).sensors[0].payload(0);
    let mut stranger = plain.clone();
    stranger[..4].copy_from_slice(&[0x0a, 0x0b, 0x0c, 0x05]);
    assert!(d.modem.sim.air_frame(
        869_525_000,
        9,
        125,
        AirFrame {
            rssi: -60,
            snr: 7,
            payload: stranger
        }
    ));
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while d.counters().not_decrypted < 1 {
        assert!(tokio::time::Instant::now() < until, "{:?}", d.counters());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.reading("a frame after the stranger").await;
    assert!(d.seen.iter().all(|e| e.native_address == SENSOR));

    // What the gateway transmits goes on the air enciphered.
    let (ok, detail) = d.set(DeviceCommand::On, "c1").await;
    assert!(ok, "{detail}");
    let mut on_air = d.modem.sim.stats().sent_on_air[0].clone();
    assert_ne!(on_air, [0x0a, 0x0b, 0x0c, 0x01, 0x01]);
    site().apply(&mut on_air);
    assert_eq!(on_air, [0x0a, 0x0b, 0x0c, 0x01, 0x01]);

    // The module restarts with encryption off and no key: the driver writes them again.
    d.modem.sim.inject(Fault::SettingsLost);
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while d.counters().startups < 2 {
        assert!(tokio::time::Instant::now() < until, "no reconfiguration");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(d.receiving(5).await, "receiving again after the restart");
    assert_eq!(d.modem.sim.with(|e, _| e.encryption(&site())), (true, true));
    assert_eq!(d.modem.sim.stats().key_writes, 2, "the key written again");
    while d.events.try_recv().is_ok() {}
    d.reading("a deciphered frame after the restart").await;
    assert_eq!(d.counters().unsupported, 0);
    d.task.abort();
}

#[tokio::test]
async fn frames_under_another_key_are_counted_and_never_become_senders() {
    let dir = tempfile::tempdir().unwrap();
    let file = key_file(dir.path(), &site());
    let other = P2pCipher {
        key: [0x11; 16],
        ..site()
    };
    let mut d = Driven::start_with(sensors_with(Some(other)), &options_with_key(&file));
    d.up().await;
    // The sensor sends every 400 ms: after 3 s, several frames were heard and none decoded.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        if let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(100), d.events.recv()).await
        {
            panic!("an event from a frame under another key: {ev:?}");
        }
    }
    let c = d.counters();
    assert!(c.not_decrypted >= 3, "{c:?}");
    assert_eq!(c.undecodable, 0, "{c:?}");
    assert!(d.modem.sim.stats().heard >= 3);
    assert!(!d.task.is_finished(), "still running");
    d.task.abort();
}

#[tokio::test]
async fn a_firmware_without_p2p_encryption_keeps_the_radio_down_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = key_file(dir.path(), &site());
    let old = EmulatorConfig {
        encryption_commands: false,
        ..sensors_with(Some(site()))
    };
    let mut d = Driven::start_with(old.clone(), &options_with_key(&file));
    let result = tokio::time::timeout(Duration::from_secs(10), &mut d.task)
        .await
        .expect("the driver gives up")
        .expect("no panic");
    let err = format!("{:#}", result.expect_err("refuses to run in the clear"));
    assert!(
        err.contains("no LoRa P2P encryption")
            && err.contains("AT_COMMAND_NOT_FOUND")
            && err.contains("RUI3 4.0.6"),
        "{err}"
    );
    assert!(!err.contains(&hex(&site().key).to_uppercase()), "{err}");
    assert_ne!(*d.state.borrow(), RadioState::Up);
    assert_eq!(d.counters().unsupported, 1);
    assert!(!d.modem.sim.with(|e, _| e.receiving()), "never listening");
    assert!(d.events.try_recv().is_err(), "nothing heard");

    // Without a key file the same firmware is fine: there is no encryption to turn off.
    let mut d = Driven::start_with(old, OPTIONS);
    d.up().await;
    assert_eq!(d.counters().unsupported, 0);
    d.task.abort();
}

/// `config check` reads the key file: missing, of the wrong length, or named relatively,
/// each is an error naming the config file, the line and `radio.options.encryption_key_file`
/// without quoting the key; a good one passes.
#[test]
fn config_check_validates_the_key_file() {
    use crate::common::{base_config, fieldgate, stderr};
    let dir = tempfile::tempdir().unwrap();
    let good = key_file(dir.path(), &site());
    let short = dir.path().join("short.key");
    std::fs::write(
        &short,
        format!("{}\n{}\n", hex(&site().key[..8]), hex(&site().iv)),
    )
    .unwrap();
    let radio = |file: &str| {
        format!(
            "[[radio]]\nname = \"p2p0\"\nprotocol = \"lora-p2p\"\nport = \"/dev/ttyUSB0\"\n[radio.options]\nencryption_key_file = \"{file}\"\n"
        )
    };
    let config = dir.path().join("fieldgate.toml");
    let check = |extra: String| {
        std::fs::write(&config, base_config(dir.path(), &extra)).unwrap();
        fieldgate(&["config", "check", config.to_str().unwrap()])
    };
    let out = check(radio(good.to_str().unwrap()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let missing = dir.path().join("none.key");
    for (file, says) in [
        (missing.to_str().unwrap(), "does not exist"),
        (
            short.to_str().unwrap(),
            "the key (line 1) must be exactly 32 hex digits",
        ),
        ("lora-p2p.key", "must be the absolute path"),
    ] {
        let out = check(radio(file));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("{}:13:", config.display()))
                && err.contains("key `radio.options.encryption_key_file`")
                && err.contains(says),
            "{err}"
        );
        assert!(!err.contains(&hex(&site().iv)), "{err}");
    }
}

/// The daemon with a key file, against `fieldgate emulate lora-rak3172` whose senders
/// encipher with the site key and whose module echoes every command (so the key comes
/// back over the line): frames decode into a pending sender, and a log captured at trace
/// level holds neither the key nor the IV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_deciphers_with_the_key_file_and_its_trace_log_never_holds_the_key() {
    use crate::common::TestDaemon;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let keys = tempfile::tempdir().unwrap();
    let file = key_file(keys.path(), &site());
    let mut emu = Command::new(crate::common::bin())
        .args([
            "emulate",
            "lora-rak3172",
            "--log-level",
            "warn",
            "--pty",
            "--echo",
        ])
        .arg("--sender-key-file")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fieldgate emulate lora-rak3172");
    let mut line = String::new();
    BufReader::new(emu.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let path = line
        .trim()
        .strip_prefix("pty ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let mut d = TestDaemon::prepare(&format!(
        "[[radio]]\nname = \"p2p0\"\nprotocol = \"lora-p2p\"\nport = \"{path}\"\n[radio.options]\nencryption_key_file = \"{}\"\n",
        file.display()
    ));
    d.spawn_with_env(&[("RUST_LOG", "trace")]);
    let db = d.db();
    let mut state = None;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(c) = fieldgate::store::open_reader(&db) else {
            continue;
        };
        let id = fieldgate::model::DeviceId::new(Protocol::LoraP2p, "0a0b0c01");
        if let Ok(Some(dev)) = fieldgate::store::registry::get(&c, &id) {
            if dev.last_state.get("temperature").is_some() {
                state = Some(dev);
                break;
            }
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(emu.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = emu.wait();
    d.terminate(Duration::from_secs(10));
    let log = d.log();
    let dev = state.unwrap_or_else(|| panic!("no deciphered reading stored; log:\n{log}"));
    assert_eq!(dev.lifecycle, "pending", "heard, not adopted");
    assert!(log.contains("TRACE"), "the log is at trace level");
    assert!(
        log.contains("AT+ENCKEY=<redacted>"),
        "the echoed key line reached the log, masked"
    );
    let lower = log.to_ascii_lowercase();
    for secret in [hex(&site().key), hex(&site().iv)] {
        assert!(!lower.contains(&secret), "a secret in the log");
    }
}

#[tokio::test]
async fn a_read_is_answered_from_the_latest_frame_without_touching_the_air() {
    let mut d = Driven::start(Firmware::Rui3);
    d.up().await;
    d.reading("a first frame").await;
    // The hub holds a read until the sender next speaks; then it is answered with the
    // state that frame left, and nothing is transmitted.
    d.commands
        .send(RadioCommand::Read {
            native_address: SENSOR.into(),
            command_id: "r1".into(),
        })
        .await
        .unwrap();
    let ev = d
        .wait("the read's result", 5, |e| matches!(&e.kind, DeviceEventKind::CommandResult { command_id, .. } if command_id == "r1"))
        .await;
    assert!(
        matches!(ev.kind, DeviceEventKind::CommandResult { ok: true, .. }),
        "{:?}",
        ev.kind
    );
    assert!(d.modem.sim.stats().sent.is_empty());
    d.task.abort();
}
