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
