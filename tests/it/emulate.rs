//! `fieldgate emulate zigbee`: the emulator as its own process, served over TCP and a PTY,
//! with our own daemon's driver as the host (`tcp://`), and its flags.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, stderr, stdout, TestDaemon};

/// A running `fieldgate emulate zigbee`; SIGTERM on drop.
pub struct Emulate {
    child: Option<Child>,
    /// What the first line said: `tcp://HOST:PORT` or a PTY path.
    pub endpoint: String,
}

impl Emulate {
    /// Starts it with `args` (after `emulate zigbee`) and reads the first line.
    pub fn start(args: &[&str]) -> Emulate {
        let mut child = Command::new(bin())
            .args(["emulate", "zigbee"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fieldgate emulate");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("first line");
        let endpoint = if let Some(rest) = line.trim().strip_prefix("listening ") {
            rest.to_string()
        } else if let Some(path) = line.trim().strip_prefix("pty ") {
            path.to_string()
        } else {
            let _ = child.kill();
            panic!("unexpected first line {line:?}");
        };
        Emulate {
            child: Some(child),
            endpoint,
        }
    }

    /// The TCP port of a `--listen` emulator.
    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a tcp:// endpoint")
    }

    /// SIGTERM, then the exit status (killed after `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Emulate {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(2));
    }
}

const FAST: &str = "sreq_timeout = \"2s\"\nresponse_timeout = \"700ms\"\ninterview_attempts = 2\n";

fn wait_log(d: &TestDaemon, what: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !d.log().contains(what) {
        assert!(Instant::now() < deadline, "no {what:?} in:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The device list of a daemon, as JSON values.
fn devices(d: &TestDaemon) -> Vec<serde_json::Value> {
    let out = d.cli(&["devices", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .cloned()
        .or_else(|| v["devices"].as_array().cloned())
        .unwrap_or_default()
}

/// Our daemon's driver against `fieldgate emulate zigbee --listen` over `tcp://`: it forms a
/// network on the factory-new emulator, pairs two plugs and a sensor that report values, and
/// after a daemon restart (a new TCP connection to the same emulator process) resumes that
/// network instead of forming another.
#[test]
fn daemon_pairs_through_fieldgate_emulate_over_tcp() {
    let mut emu = Emulate::start(&[
        "--listen",
        "127.0.0.1:0",
        "--devices",
        "plug=2,temp-humidity",
        "--report-interval",
        "1s",
        "--join-spacing",
        "100ms",
    ]);
    assert!(
        emu.endpoint.starts_with("tcp://127.0.0.1:"),
        "{}",
        emu.endpoint
    );
    assert_ne!(emu.port(), 0);
    let extra = format!(
        "[[radio]]\nname = \"zb0\"\nprotocol = \"zigbee\"\nport = \"{}\"\n\n[radio.options]\n{FAST}channel = 20\npan_id = \"0x4242\"\n",
        emu.endpoint
    );
    let mut d = TestDaemon::start(&extra);
    wait_log(&d, "zigbee network up", 20);
    assert!(
        d.log().contains("forming a new zigbee network"),
        "{}",
        d.log()
    );
    let out = d.cli(&["pair", "zb0", "--seconds", "3", "--json"]);
    assert!(out.status.success(), "{} {}", stderr(&out), d.log());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = devices(&d);
        let plugs = list
            .iter()
            .filter(|x| x["model"] == "FG-PLUG01" && x["last_state"]["voltage"] == 230.1)
            .count();
        let sensor = list
            .iter()
            .any(|x| x["model"] == "FG-TH01" && x["last_state"]["temperature"].is_number());
        if plugs == 2 && sensor {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "two plugs and a sensor reporting: {list:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A new connection finds the same coordinator: the network is resumed.
    assert!(d
        .terminate(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    d.spawn();
    wait_log(&d, "zigbee network up", 20);
    assert!(
        d.log().contains("resuming the existing network"),
        "{}",
        d.log()
    );
    drop(d);
    let status = emu.terminate(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// `--pty` prints the slave path, answers a ping on it, and SIGINT ends it cleanly.
#[test]
fn emulate_serves_a_pty_and_stops_on_sigint() {
    use std::io::{Read, Write};
    let mut emu = Emulate::start(&["--pty", "--devices", "none"]);
    assert!(emu.endpoint.starts_with("/dev/"), "{}", emu.endpoint);
    let mut port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&emu.endpoint)
        .expect("open the PTY slave");
    port.write_all(&[0xFE, 0x00, 0x21, 0x01, 0x20]).unwrap();
    let mut srsp = [0u8; 7];
    port.read_exact(&mut srsp).unwrap();
    assert_eq!(srsp[..4], [0xFE, 0x02, 0x61, 0x01], "{srsp:02x?}");
    let child = emu.child.take().unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
}

#[test]
fn emulate_rejects_bad_flags_with_a_clear_error() {
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(["emulate", "zigbee"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--listen", "127.0.0.1:0", "--devices", "lamp"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown device kind \"lamp\""),
        "{}",
        stderr(&out)
    );
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--devices",
        "plug",
        "--fault",
        "leave:contact",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no contact device"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--devices", "plug"]);
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty());
}

/// One host stack's run against `fieldgate emulate zigbee`: its JSON lines, or the step and
/// the MT exchanges where it and the emulator parted ways.
fn run_host(name: &str, program: &str, script: &str, models: &str) -> Vec<serde_json::Value> {
    run_host_with(name, program, script, models, &[])
}

/// [`run_host`] with more `fieldgate emulate zigbee` arguments.
fn run_host_with(
    name: &str,
    program: &str,
    script: &str,
    models: &str,
    emulate_args: &[&str],
) -> Vec<serde_json::Value> {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--report-interval",
        "1s",
        "--join-spacing",
        "150ms",
        // Real sleepy devices stay awake for the interview right after joining.
        "--sleepy-answers-after-join",
        "12",
    ];
    args.extend_from_slice(emulate_args);
    let emu = Emulate::start(&args);
    // A second, factory-new stick for a host that restores its backup onto another one.
    args.extend_from_slice(&["--ieee", "0x00124b001cdd0002"]);
    let replacement = Emulate::start(&args);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(program)
        .arg(script)
        .arg(emu.port().to_string())
        .arg(dir.path())
        .arg(models)
        .env("REPLACEMENT_PORT", replacement.port().to_string())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| {
            panic!("FIELDGATE_PEERS=1 needs {program} ({e}): run tests/peers/zigbee/setup.sh")
        });
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if let Some(err) = lines.iter().find(|l| l.get("error").is_some()) {
        let requests: Vec<&str> = err["requests"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
            .unwrap_or_default();
        panic!(
            "{name} diverged from the emulator at step {:?}: {}\nlast MT exchanges (last = where it stopped):\n  {}",
            err["step"],
            err["error"],
            requests.join("\n  ")
        );
    }
    assert!(
        out.status.success() && lines.iter().any(|l| l["done"] == true),
        "{name} did not finish ({:?}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    lines
}

/// zigbee-herdsman's Controller (zstack adapter) and zigpy-znp's ControllerApplication, each
/// on a factory-new `fieldgate emulate zigbee --listen 127.0.0.1:0`: herdsman forms a
/// network, permits joining, sees every emulated device join, interviews it, gets the
/// values the devices report, then resumes the formed network after a restart, and restores
/// its backup onto a second, factory-new emulator, whose devices answer on the restored
/// network without joining again; zigpy-znp
/// forms its network and initializes every device that joins. Runs with FIELDGATE_PEERS=1
/// (tests/peers/zigbee/setup.sh first); a failure names the step and the request.
#[test]
fn host_stacks_run_on_fieldgate_emulate() {
    if !std::env::var("FIELDGATE_PEERS").is_ok_and(|v| v == "1") {
        println!("skipped: set FIELDGATE_PEERS=1 (and run tests/peers/zigbee/setup.sh) to run zigbee-herdsman and zigpy-znp on the emulator");
        return;
    }
    let peers = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/zigbee");
    let models = "FG-TH01,FG-PLUG01,FG-DOOR01,FG-PIR01";

    let lines = run_host(
        "zigbee-herdsman",
        "node",
        &format!("{peers}/herdsman-host.js"),
        models,
    );
    let result = |step: &str| {
        lines
            .iter()
            .find(|l| l["step"] == step && l.get("result").is_some())
            .map(|l| l["result"].clone())
    };
    assert_eq!(result("form: start"), Some("reset".into()), "{lines:?}");
    assert_eq!(result("resume: start"), Some("resumed".into()), "{lines:?}");
    // Its backup restored onto another stick: that stick runs the backup's network, and
    // the devices answer on it without joining again.
    assert_eq!(
        result("restore: start"),
        Some("restored".into()),
        "{lines:?}"
    );
    let restored = lines
        .iter()
        .find(|l| l["step"] == "restore: network")
        .expect("restored network");
    assert_eq!(restored["panID"], restored["backup"]["panID"], "{restored}");
    assert_eq!(
        restored["channel"], restored["backup"]["channel"],
        "{restored}"
    );
    let answered = lines
        .iter()
        .find(|l| l["step"] == "restore: devices answer")
        .expect("devices answered on the restored network");
    assert_eq!(answered["onOff"], 1, "{answered}");
    assert!(answered["temperature"].as_i64().is_some(), "{answered}");
    let stopped = lines
        .iter()
        .find(|l| l["step"] == "restore: stop")
        .expect("backup after the restore");
    assert_eq!(stopped["sameNetwork"], true, "{stopped}");
    assert_eq!(
        stopped["devicesAfter"], stopped["backupDevices"],
        "{stopped}"
    );
    // The network map (Mgmt_Lqi, Mgmt_Rtg, Mgmt_Bind), bind and unbind, a group command.
    let map = lines
        .iter()
        .find(|l| l["step"] == "resume: network map")
        .expect("network map");
    assert_eq!(map["neighbors"], 4, "{map}");
    assert_eq!(map["plugNeighbors"], 1, "{map}");
    assert!(
        lines.iter().any(|l| l["step"] == "resume: bind and unbind"),
        "{lines:?}"
    );
    // Added to a group, the plug is switched on by the group's command.
    let group = lines
        .iter()
        .find(|l| l["step"] == "resume: group command")
        .expect("group command");
    assert_eq!(group["onOff"], 1, "{group}");
    let interviewed: Vec<&str> = lines
        .iter()
        .filter(|l| l["step"] == "form: join and interview" && l["joined"] == true)
        .filter_map(|l| l["model"].as_str())
        .collect();
    for m in models.split(',') {
        assert!(
            interviewed.contains(&m),
            "herdsman interviewed {interviewed:?}"
        );
    }
    // The values the emulated devices report: 21.50 °C rising by 0.10 °C a report, 230.1 V.
    for phase in ["form: reports", "resume: reports"] {
        let reported = |attribute: &str| -> Vec<i64> {
            lines
                .iter()
                .filter(|l| l["step"] == phase && l["report"]["type"] == "attributeReport")
                .filter(|l| l["report"]["attribute"] == attribute)
                .filter_map(|l| l["report"]["value"].as_i64())
                .collect()
        };
        let temperatures = reported("measuredValue");
        assert!(!temperatures.is_empty(), "{phase}: {lines:?}");
        assert!(
            temperatures
                .iter()
                .all(|t| (2150..=2240).contains(t) && t % 10 == 0),
            "{phase}: {temperatures:?}"
        );
        assert!(
            reported("rmsVoltage").iter().all(|v| *v == 2301) && !reported("rmsVoltage").is_empty(),
            "{phase}: {lines:?}"
        );
    }
    println!("zigbee-herdsman: formed, interviewed {interviewed:?}, got their reports, resumed, mapped the network, bound, unbound, switched the plug through a group, restored its backup onto another stick");

    let lines = run_host(
        "zigpy-znp",
        &format!("{peers}/.venv/bin/python"),
        &format!("{peers}/zigpy_host.py"),
        models,
    );
    let started = lines
        .iter()
        .find(|l| l["step"] == "start (form)")
        .expect("zigpy started");
    assert_eq!(started["channel"], 15, "{started}");
    assert_eq!(started["nwk"], "0x0000", "{started}");
    let initialized: Vec<&str> = lines
        .iter()
        .filter(|l| l["step"] == "join and initialize")
        .filter_map(|l| l["model"].as_str())
        .collect();
    for m in models.split(',') {
        assert!(
            initialized.contains(&m),
            "zigpy initialized {initialized:?}"
        );
    }
    let topology = lines
        .iter()
        .find(|l| l["step"] == "topology scan")
        .expect("topology scanned");
    assert_eq!(topology["neighbors"], 4, "{topology}");
    // Restarted, it runs the network it formed (not one made up from NV items it left
    // unset), with the devices that joined it.
    let restarted = lines
        .iter()
        .find(|l| l["step"] == "restart")
        .expect("zigpy restarted");
    for field in ["pan_id", "channel", "extended_pan_id"] {
        assert_eq!(restarted[field], started[field], "{started} / {restarted}");
    }
    // And its devices are still in the coordinator's tables (what a backup reads).
    assert_eq!(restarted["devices"], 4, "{restarted}");
    println!("zigpy-znp: formed, initialized {initialized:?}, restarted on the same network: {restarted}");
}

/// zigbee-herdsman on `fieldgate emulate zigbee --incoming ext`: every device frame reaches
/// it as AF_INCOMING_MSG_EXT, and herdsman still interviews every device and gets their
/// reports, so it reads the emulator's EXT frames as it reads a Z-Stack coordinator's.
/// (Not `ext-ieee`: herdsman 11.1.1 passes an IEEE source on as a string, and its wait for a
/// ZCL answer compares network addresses, so its interviews time out there.) Runs with
/// FIELDGATE_PEERS=1.
#[test]
fn zigbee_herdsman_reads_the_emulators_ext_frames() {
    if !std::env::var("FIELDGATE_PEERS").is_ok_and(|v| v == "1") {
        println!("skipped: set FIELDGATE_PEERS=1 (and run tests/peers/zigbee/setup.sh) to run zigbee-herdsman on the emulator");
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/zigbee/herdsman-host.js"
    );
    let models = "FG-TH01,FG-PLUG01,FG-DOOR01,FG-PIR01";
    let lines = run_host_with(
        "zigbee-herdsman",
        "node",
        script,
        models,
        &["--incoming", "ext"],
    );
    let interviewed: Vec<&str> = lines
        .iter()
        .filter(|l| l["step"] == "form: join and interview" && l["joined"] == true)
        .filter_map(|l| l["model"].as_str())
        .collect();
    for m in models.split(',') {
        assert!(
            interviewed.contains(&m),
            "herdsman interviewed {interviewed:?}"
        );
    }
    let temperatures: Vec<i64> = lines
        .iter()
        .filter(|l| l["report"]["type"] == "attributeReport")
        .filter(|l| l["report"]["attribute"] == "measuredValue")
        .filter_map(|l| l["report"]["value"].as_i64())
        .collect();
    assert!(!temperatures.is_empty(), "{lines:?}");
    println!("zigbee-herdsman with --incoming ext: interviewed {interviewed:?}, got their reports");
}

/// A coordinator that answers ZDO_STARTUP_FROM_APP with Z-Stack's RPC error frame: the
/// driver fails the start-up at once, naming the request and the error, instead of waiting
/// out its start-up timeout for a state change that never comes. The emulator resets itself
/// after the network is formed, so the driver resumes (the path that sends the request);
/// a proxy between them answers that request with `60 00 [02, 25, 40]`.
#[test]
fn an_rpc_error_to_startup_from_app_fails_the_start_up_at_once() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let emu = Emulate::start(&[
        "--listen",
        "127.0.0.1:0",
        "--devices",
        "none",
        "--fault",
        "reset@3s",
    ]);
    let upstream_port = emu.port();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for host in listener.incoming() {
            let Ok(mut host) = host else { return };
            let Ok(mut coordinator) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                return;
            };
            let (mut from_coordinator, mut to_host) =
                (coordinator.try_clone().unwrap(), host.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_coordinator, &mut to_host);
            });
            let mut buf = [0u8; 512];
            while let Ok(n) = host.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let chunk = &buf[..n];
                if chunk.windows(4).any(|w| w == [0xFE, 0x02, 0x25, 0x40]) {
                    let mut rpc = vec![0xFE, 0x03, 0x60, 0x00, 0x02, 0x25, 0x40];
                    rpc.push(rpc[1..].iter().fold(0, |a, b| a ^ b));
                    let _ = host.write_all(&rpc);
                    continue;
                }
                if coordinator.write_all(chunk).is_err() {
                    break;
                }
            }
        }
    });
    let extra = format!(
        "[[radio]]\nname = \"zb0\"\nprotocol = \"zigbee\"\nport = \"tcp://127.0.0.1:{proxy_port}\"\n\n[radio.options]\n{FAST}"
    );
    let d = TestDaemon::start(&extra);
    wait_log(&d, "zigbee network up", 20);
    let before = Instant::now();
    wait_log(
        &d,
        "zdo_startup_from_app_req failed: RPC error 2 (unknown command)",
        15,
    );
    assert!(
        before.elapsed() < Duration::from_secs(12),
        "{:?}\n{}",
        before.elapsed(),
        d.log()
    );
    assert!(!d.log().contains("no STATE_CHANGE_IND"), "{}", d.log());
}
