//! The BlueZ backend (`bluez://hci0`, btleplug) against a stand-in bluetoothd on a real
//! D-Bus: a private `dbus-daemon` (its own socket in a temp dir) and python-dbusmock's
//! `bluez5` template, extended in `tests/peers/bluez/bluez_scanner.py` with what a real
//! bluetoothd does while discovering (devices appearing with InterfacesAdded, their
//! RSSI, ServiceData and ManufacturerData changing with PropertiesChanged). The daemon
//! under test reaches it through `DBUS_SYSTEM_BUS_ADDRESS`, as it would the system bus.
//!
//! Runs with `FIELDGATE_PEERS=1` after `tests/peers/bluez/setup.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dbus::blocking::Connection;
use fieldgate::store::{self, outbox};
use fieldgate_ble::encode::{bthome_objects, bthome_service_data, BtHomeObject, BtHomeOptions};
use fieldgate_ble::BindKey;
use serde_json::{json, Value};

use super::{device, radio, radio_status, status, wait_for};
use crate::common::{stderr, stdout, TestDaemon};

const BTHOME_UUID: &str = "0000fcd2-0000-1000-8000-00805f9b34fb";
const PLAIN: &str = "a4:c1:38:11:22:33";
const ENCRYPTED: &str = "54:48:e6:8f:80:a5";
/// The bthome.io encryption example's key (public, from the spec).
const KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";
const RUUVI: &str = "cb:b8:33:4c:88:4f";
/// Ruuvi RAWv2 (format 5) vector of Ruuvi's documentation: 24.3 °C, 53.49 %, 1000.44 hPa.
const RUUVI_DATA: &str = "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F";

fn peers() -> bool {
    if !std::env::var("FIELDGATE_PEERS").is_ok_and(|v| v == "1") {
        println!("skipped: set FIELDGATE_PEERS=1 (after tests/peers/bluez/setup.sh) to run the BlueZ backend on a stand-in bluetoothd");
        return false;
    }
    true
}

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/bluez")
}

/// A private bus: `dbus-daemon` with a session-style config, its socket in a temp dir.
struct Bus {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    address: String,
}

impl Bus {
    fn start() -> Bus {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("system_bus_socket");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("bus config");
        let daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon on PATH (tests/peers/bluez/setup.sh installs it)");
        let address = format!("unix:path={}", socket.display());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "dbus-daemon did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Bus {
            dir,
            daemon: Some(daemon),
            address,
        }
    }

    /// A client connection of the test's own.
    fn connect(&self) -> Connection {
        let mut channel =
            dbus::channel::Channel::open_private(&self.address).expect("connect to the bus");
        channel.register().expect("register on the bus");
        Connection::from(channel)
    }

    /// The unique names on the bus: one per connected client.
    fn clients(&self) -> usize {
        let conn = self.connect();
        let proxy = conn.with_proxy(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            Duration::from_secs(5),
        );
        let (names,): (Vec<String>,) = proxy
            .method_call("org.freedesktop.DBus", "ListNames", ())
            .expect("ListNames");
        // Less this connection of the test's.
        names.iter().filter(|n| n.starts_with(':')).count() - 1
    }

    /// [`Bus::clients`], the least of a few samples: a connection made for a moment
    /// (the daemon checking the bus after a failure) is not counted.
    fn lasting_clients(&self) -> usize {
        (0..3)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(150));
                self.clients()
            })
            .min()
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The stand-in bluetoothd on `bus`, with a test connection to drive it.
struct BlueZ {
    process: Option<Child>,
    conn: Connection,
}

impl BlueZ {
    fn start(bus: &Bus) -> BlueZ {
        let python = peer_dir().join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run tests/peers/bluez/setup.sh",
            python.display()
        );
        let log = std::fs::File::create(bus.dir.path().join("bluez.log")).expect("log");
        let process = Command::new(python)
            .args(["-m", "dbusmock", "--template"])
            .arg(peer_dir().join("bluez_scanner.py"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the stand-in bluetoothd");
        let conn = bus.connect();
        let bluez = BlueZ {
            process: Some(process),
            conn,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !bluez.owned() {
            assert!(
                Instant::now() < deadline,
                "the stand-in did not take org.bluez: {}",
                std::fs::read_to_string(bus.dir.path().join("bluez.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bluez
    }

    fn owned(&self) -> bool {
        let proxy = self.conn.with_proxy(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            Duration::from_secs(5),
        );
        let owned: Result<(bool,), _> =
            proxy.method_call("org.freedesktop.DBus", "NameHasOwner", ("org.bluez",));
        owned.is_ok_and(|(o,)| o)
    }

    fn mock<A: dbus::arg::AppendAll, R: dbus::arg::ReadAll>(&self, method: &str, args: A) -> R {
        let proxy = self
            .conn
            .with_proxy("org.bluez", "/", Duration::from_secs(5));
        proxy
            .method_call("org.bluez.Mock", method, args)
            .unwrap_or_else(|e| panic!("org.bluez.Mock.{method}: {e}"))
    }

    fn add_adapter(&self, name: &str) {
        let (_path,): (String,) = self.mock("AddAdapter", (name, "gateway"));
    }

    fn set_powered(&self, name: &str, powered: bool) {
        let () = self.mock("SetPowered", (name, powered));
    }

    /// One advertisement heard by hci0.
    fn advertise(
        &self,
        address: &str,
        address_type: &str,
        name: &str,
        rssi: i16,
        service_data: &[(&str, Vec<u8>)],
        manufacturer_data: &[(u16, Vec<u8>)],
    ) {
        let sd: HashMap<String, Vec<u8>> = service_data
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let md: HashMap<u16, Vec<u8>> = manufacturer_data.iter().cloned().collect();
        let (_path,): (String,) = self.mock(
            "Advertise",
            ("hci0", address, address_type, name, rssi, sd, md),
        );
    }

    /// The methods called on an adapter, in order, with their arguments (debug-printed).
    fn calls(&self, adapter: &str) -> Vec<(String, String)> {
        let proxy = self.conn.with_proxy(
            "org.bluez",
            format!("/org/bluez/{adapter}"),
            Duration::from_secs(5),
        );
        type Calls = Vec<(
            u64,
            String,
            Vec<dbus::arg::Variant<Box<dyn dbus::arg::RefArg>>>,
        )>;
        let (calls,): (Calls,) = proxy
            .method_call("org.freedesktop.DBus.Mock", "GetCalls", ())
            .expect("GetCalls");
        calls
            .into_iter()
            .map(|(_, method, args)| (method, format!("{args:?}")))
            .collect()
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Drop for BlueZ {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_daemon(bus: &Bus, extra: &str) -> TestDaemon {
    let mut d = TestDaemon::prepare(&format!(
        "{}{extra}",
        radio("hci", "bluez://hci0", "min_interval = \"1s\"")
    ));
    d.spawn_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", bus.address.as_str())]);
    d
}

fn hci_state(d: &TestDaemon) -> (String, String) {
    let s = status(d);
    let r = radio_status(&s, "hci");
    (
        r["state"].as_str().unwrap_or_default().to_string(),
        r["detail"].as_str().unwrap_or_default().to_string(),
    )
}

fn wait_state(d: &TestDaemon, state: &str, detail: &str, limit: Duration) {
    wait_for(d, limit, &format!("radio hci {state} ({detail})"), || {
        let (s, why) = hci_state(d);
        s == state && why.contains(detail)
    });
}

fn bthome(address: &str, objects: &[BtHomeObject], key: Option<(&str, u32)>) -> Vec<u8> {
    let mac = fieldgate_ble::parse_address(address).expect("address");
    let opts = BtHomeOptions {
        encrypt: key.map(|(k, counter)| (BindKey::from_hex(k).expect("key"), counter)),
        ..Default::default()
    };
    bthome_service_data(&mac, &bthome_objects(objects), &opts)
}

fn obj(id: u8, value: &[u8]) -> BtHomeObject {
    BtHomeObject {
        id,
        value: value.to_vec(),
    }
}

fn telemetry(d: &TestDaemon, address: &str) -> Vec<Value> {
    let c = store::open_reader(&d.db()).unwrap();
    outbox::pending(&c, 0, 100_000)
        .unwrap()
        .iter()
        .filter(|r| r.kind == "telemetry" && r.topic.contains(address))
        .filter_map(|r| serde_json::from_slice(&r.payload).ok())
        .collect()
}

#[test]
fn btleplug_scans_through_bluez_on_a_real_bus_and_readings_reach_the_outbox() {
    if !peers() {
        return;
    }
    let bus = Bus::start();
    let bluez = BlueZ::start(&bus);
    let d = start_daemon(&bus, "");

    // No adapter yet: down with the reason, retried with backoff over one bus
    // connection (a new one per retry would pile up on the bus).
    wait_state(&d, "down", "no adapter hci0", Duration::from_secs(20));
    // Retries at about 1, 3 and 7 s after the first failure.
    std::thread::sleep(Duration::from_secs(4));
    // The stand-in, the test's driving connection and the daemon's one.
    assert!(
        bus.lasting_clients() <= 3,
        "connections on the bus: {}",
        bus.clients()
    );

    // The adapter appears: the next retry finds it and scans.
    bluez.add_adapter("hci0");
    wait_state(&d, "up", "", Duration::from_secs(30));
    let calls = bluez.calls("hci0");
    let filter = calls
        .iter()
        .position(|(m, _)| m == "SetDiscoveryFilter")
        .unwrap_or_else(|| panic!("no SetDiscoveryFilter: {calls:?}"));
    let start = calls
        .iter()
        .position(|(m, _)| m == "StartDiscovery")
        .unwrap_or_else(|| panic!("no StartDiscovery: {calls:?}"));
    assert!(filter < start, "{calls:?}");
    assert!(
        calls[filter].1.contains("DuplicateData") && calls[filter].1.contains("true"),
        "{calls:?}"
    );

    // A plain BTHome thermometer (no name: BlueZ's Alias is then its address), a Ruuvi
    // tag, and the encrypted sensor with no key yet.
    let plain = |packet: u8, centi: i16| {
        bthome(
            PLAIN,
            &[
                obj(0x00, &[packet]),
                obj(0x02, &centi.to_le_bytes()),
                obj(0x03, &5055u16.to_le_bytes()),
            ],
            None,
        )
    };
    let encrypted = |counter: u32, centi: i16| {
        bthome(
            ENCRYPTED,
            &[
                obj(0x02, &centi.to_le_bytes()),
                obj(0x03, &5055u16.to_le_bytes()),
            ],
            Some((KEY, counter)),
        )
    };
    bluez.advertise(
        PLAIN,
        "public",
        "",
        -58,
        &[(BTHOME_UUID, plain(1, 2500))],
        &[],
    );
    bluez.advertise(
        RUUVI,
        "random",
        "Ruuvi 884F",
        -71,
        &[],
        &[(0x0499, hex::decode(RUUVI_DATA).unwrap())],
    );
    bluez.advertise(
        ENCRYPTED,
        "public",
        "",
        -64,
        &[(BTHOME_UUID, encrypted(0x0011_2233, 2506))],
        &[],
    );
    let plain_id = format!("ble:{PLAIN}");
    let ruuvi_id = format!("ble:{RUUVI}");
    let enc_id = format!("ble:{ENCRYPTED}");
    wait_for(&d, Duration::from_secs(20), "the three devices", || {
        device(&d, &plain_id).is_some_and(|x| x.model.is_some())
            && device(&d, &ruuvi_id).is_some_and(|x| x.model.is_some())
            && device(&d, &enc_id).is_some()
    });
    let p = device(&d, &plain_id).unwrap();
    assert_eq!(p.model.as_deref(), Some("bthome"));
    assert_eq!(p.lifecycle, "pending");
    assert_eq!(p.last_state["temperature"], json!(25.0), "{}", p.last_state);
    assert_eq!(p.last_state["humidity"], json!(50.55), "{}", p.last_state);
    // The name BlueZ made up (the address with dashes) is not taken for the device's.
    assert!(
        !p.capabilities.iter().any(|c| c.starts_with("name:")),
        "{:?}",
        p.capabilities
    );
    let r = device(&d, &ruuvi_id).unwrap();
    assert_eq!(r.model.as_deref(), Some("ruuvi_rawv2"));
    assert_eq!(r.last_state["temperature"], json!(24.3), "{}", r.last_state);
    assert!(
        r.capabilities.contains(&"name:Ruuvi 884F".to_string()),
        "{:?}",
        r.capabilities
    );
    assert_eq!(device(&d, &enc_id).unwrap().lifecycle, "pending");
    // Pending: nothing upstream yet.
    assert!(telemetry(&d, PLAIN).is_empty());

    // Adopted (the encrypted one with its key), their next advertisements go upstream.
    let out = d.cli(&["adopt", &plain_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d.cli(&["adopt", &enc_id, "--bindkey", KEY]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    std::thread::sleep(Duration::from_millis(1100));
    bluez.advertise(
        PLAIN,
        "public",
        "",
        -57,
        &[(BTHOME_UUID, plain(2, 2650))],
        &[],
    );
    bluez.advertise(
        ENCRYPTED,
        "public",
        "",
        -63,
        &[(BTHOME_UUID, encrypted(0x0011_2240, 2712))],
        &[],
    );
    wait_for(&d, Duration::from_secs(20), "telemetry of both", || {
        let has = |addr: &str, t: f64| {
            telemetry(&d, addr)
                .iter()
                .any(|m| m.to_string().contains(&format!("{t}")))
        };
        has(PLAIN, 26.5) && has(ENCRYPTED, 27.12)
    });
    let e = device(&d, &enc_id).unwrap();
    assert_eq!(e.lifecycle, "active");
    assert_eq!(
        e.last_state["temperature"],
        json!(27.12),
        "{}",
        e.last_state
    );
    // Still one connection of the daemon's on the bus, and the key in no log.
    assert!(
        bus.lasting_clients() <= 3,
        "connections on the bus: {}",
        bus.clients()
    );
    assert!(!d.log().contains(KEY));
}

#[test]
fn bluez_or_the_bus_going_away_is_a_clear_radio_state_and_the_rest_runs() {
    if !peers() {
        return;
    }
    let mut bus = Bus::start();
    let bluez = BlueZ::start(&bus);
    bluez.add_adapter("hci0");
    let d = start_daemon(&bus, &radio("ble0", "sim://ble", "sim_speed = 5"));
    wait_state(&d, "up", "", Duration::from_secs(20));

    // Powered off: down with the reason; on again: back up after the backoff.
    bluez.set_powered("hci0", false);
    wait_state(&d, "down", "powered off", Duration::from_secs(20));
    bluez.set_powered("hci0", true);
    wait_state(&d, "up", "", Duration::from_secs(30));

    // bluetoothd stops: noticed by the running scan, down with the reason; it comes
    // back (with its adapter): up again, on the same bus connection.
    drop(bluez);
    wait_state(&d, "down", "", Duration::from_secs(30));
    let (_, why) = hci_state(&d);
    assert!(
        why.contains("bluetoothd is not running") || why.contains("no longer has the adapter"),
        "{why}"
    );
    let bluez = BlueZ::start(&bus);
    bluez.add_adapter("hci0");
    wait_state(&d, "up", "", Duration::from_secs(60));
    assert!(
        bus.lasting_clients() <= 3,
        "connections on the bus: {}",
        bus.clients()
    );

    // bluetoothd restarted within one health interval (the radio never sees it gone):
    // the new one knows nothing of the discovery, so it is asked to scan again.
    let started = |b: &BlueZ| b.calls("hci0").iter().any(|(m, _)| m == "StartDiscovery");
    assert!(started(&bluez));
    drop(bluez);
    let bluez = BlueZ::start(&bus);
    bluez.add_adapter("hci0");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started(&bluez) {
        assert!(
            Instant::now() < deadline,
            "the restarted bluetoothd was never asked to scan: {:?}",
            hci_state(&d)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_state(&d, "up", "", Duration::from_secs(60));
    drop(bluez);

    // The bus itself goes away: down with a reason naming D-Bus, the emulated radio
    // and the daemon carry on.
    bus.stop();
    wait_state(&d, "down", "D-Bus", Duration::from_secs(30));
    let s = status(&d);
    assert_eq!(radio_status(&s, "ble0")["state"], "up", "{s}");
    let seen = device(&d, "ble:cb:b8:33:4c:88:4f").map(|x| x.last_seen);
    wait_for(
        &d,
        Duration::from_secs(30),
        "the emulated radio still heard",
        || device(&d, "ble:cb:b8:33:4c:88:4f").map(|x| x.last_seen) != seen,
    );
}

/// `fieldgate doctor`'s BlueZ checks against the stand-in: each problem named, then ok.
#[test]
fn doctor_asks_bluez_on_the_bus_and_says_what_is_wrong() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fieldgate.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}",
            crate::common::base_config(dir.path(), ""),
            radio("hci", "bluez://hci0", "")
        ),
    )
    .unwrap();
    let doctor = |address: &str| -> Value {
        let out = Command::new(crate::common::bin())
            .args(["doctor", "--json", "--timeout", "3s", "--config"])
            .arg(&config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", address)
            .output()
            .expect("run doctor");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}): {}", stdout(&out)))
    };
    let check = |report: &Value, name: &str| -> (String, String, String) {
        let c = report["checks"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["check"] == name))
            .unwrap_or_else(|| panic!("no check {name}: {report:#}"))
            .clone();
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        (s("status"), s("message"), s("fix"))
    };

    let nowhere = format!("unix:path={}", dir.path().join("no-bus").display());
    let (status, message, fix) = check(&doctor(&nowhere), "radio hci");
    assert_eq!(status, "fail", "{message}");
    assert!(
        message.contains("cannot connect to the system D-Bus"),
        "{message}"
    );
    assert!(fix.contains("dbus"), "{fix}");

    let bus = Bus::start();
    let (status, message, fix) = check(&doctor(&bus.address), "radio hci");
    assert_eq!(status, "fail", "{message}");
    assert!(message.contains("nothing owns org.bluez"), "{message}");
    assert!(fix.contains("bluetooth"), "{fix}");

    let bluez = BlueZ::start(&bus);
    let (status, message, _) = check(&doctor(&bus.address), "radio hci");
    assert_eq!(status, "fail", "{message}");
    assert!(
        message.contains("no adapter hci0 (none at all)"),
        "{message}"
    );

    bluez.add_adapter("hci1");
    let (_, message, fix) = check(&doctor(&bus.address), "radio hci");
    assert!(message.contains("(it has hci1)"), "{message}");
    assert!(fix.contains("bluetoothctl list"), "{fix}");

    bluez.add_adapter("hci0");
    bluez.set_powered("hci0", false);
    let (status, message, fix) = check(&doctor(&bus.address), "radio hci");
    assert_eq!(status, "fail", "{message}");
    assert!(message.contains("powered off"), "{message}");
    assert!(fix.contains("bluetoothctl power on"), "{fix}");

    bluez.set_powered("hci0", true);
    let report = doctor(&bus.address);
    let (status, message, _) = check(&report, "radio hci");
    assert_eq!(status, "ok", "{message}");
    assert!(
        message.contains("adapter hci0 (00:01:02:03:04:05) powered"),
        "{message}"
    );
    // The policy for the service user: in place where the package is installed, a
    // warning naming what to install otherwise.
    let (status, message, fix) = check(&report, "bluez policy");
    match status.as_str() {
        "ok" => assert!(message.contains("org.bluez"), "{message}"),
        "warn" => assert!(fix.contains("fieldgate-bluez.conf"), "{fix}"),
        other => panic!("bluez policy: {other}: {message}"),
    }
}
