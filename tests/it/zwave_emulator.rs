//! The Z-Wave controller emulator from the outside: over a pseudo-terminal through
//! tokio-serial (the path a USB stick takes), and, with `FIELDGATE_PEERS=1`, zwave-js's own
//! Driver on `fieldgate emulate zwave --listen` (tests/peers/zwave/run-driver.sh, inside a
//! network namespace with only loopback): start-up, the interview of every node to "ready",
//! the nodes' reports with the values the emulator sent, the inclusion and exclusion of a
//! node, and an NVM backup that @zwave-js/nvmedit parses to the emulator's network.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use fieldgate::radio::zwave_sim::PtyEmulator;
use fieldgate_zwave::emulator::{EmulatorConfig, NodeKind, HOME_ID};
use fieldgate_zwave::frame::{DataFrame, Frame, FrameType, SerialParser};
use fieldgate_zwave::function as func;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads frames until `want` data frames came (ACKing each) or two seconds passed.
async fn read_frames(
    port: &mut tokio_serial::SerialStream,
    parser: &mut SerialParser,
    want: usize,
) -> (Vec<Frame>, Vec<DataFrame>) {
    let mut controls = Vec::new();
    let mut data = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while data.len() < want {
        let n = match tokio::time::timeout_at(deadline, port.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => break,
        };
        for frame in parser.feed(&buf[..n]) {
            match frame {
                Frame::Data(d) => {
                    port.write_all(&[0x06]).await.expect("ACK");
                    data.push(d);
                }
                other => controls.push(other),
            }
        }
    }
    (controls, data)
}

#[tokio::test]
async fn emulator_answers_over_a_pty_and_includes_a_node() {
    use tokio_serial::SerialPortBuilderExt;
    let pty = PtyEmulator::spawn(EmulatorConfig {
        report_interval: Duration::from_secs(3600),
        wake_interval: Duration::from_secs(3600),
        pending: Vec::new(),
        ..EmulatorConfig::default()
    })
    .expect("pty");
    let mut port = tokio_serial::new(pty.path().to_string_lossy(), 115_200)
        .open_native_async()
        .expect("open the PTY as a serial port");
    let mut parser = SerialParser::new();
    let send = |f: u8, p: &[u8]| DataFrame::request(f, p.to_vec()).to_bytes().unwrap();

    port.write_all(&send(func::MEMORY_GET_ID, &[]))
        .await
        .unwrap();
    let (controls, data) = read_frames(&mut port, &mut parser, 1).await;
    assert_eq!(controls, [Frame::Ack]);
    assert_eq!(data[0].frame_type, FrameType::Response);
    assert_eq!(data[0].payload[..4], HOME_ID.to_be_bytes());

    // A node waiting to join, added through the handle, is included by AddNodeToNetwork.
    pty.sim.add_pending_node(NodeKind::Multisensor);
    port.write_all(&send(func::ADD_NODE_TO_NETWORK, &[0xC1, 0x05]))
        .await
        .unwrap();
    let (_, data) = read_frames(&mut port, &mut parser, 4).await;
    let statuses: Vec<u8> = data.iter().map(|d| d.payload[1]).collect();
    assert_eq!(statuses, [1, 2, 3, 5], "{data:?}");
    port.write_all(&send(func::ADD_NODE_TO_NETWORK, &[0xC5, 0x06]))
        .await
        .unwrap();
    let (_, data) = read_frames(&mut port, &mut parser, 1).await;
    assert_eq!(data[0].payload, [0x06, 0x06, 7, 0]);
    assert_eq!(pty.sim.node_ids(), [2, 3, 4, 5, 6, 7]);

    // Its readings reach the host once the host sets its lifeline.
    let set_lifeline = [7, 4, 0x85, 0x01, 0x01, 0x01, 0x25, 0x07];
    port.write_all(&send(func::SEND_DATA, &set_lifeline))
        .await
        .unwrap();
    read_frames(&mut port, &mut parser, 2).await;
    pty.sim.report_now(7);
    let (_, data) = read_frames(&mut port, &mut parser, 3).await;
    let recorded = pty.sim.recorded();
    assert_eq!(recorded.len(), 3);
    for (frame, rec) in data.iter().zip(&recorded) {
        assert_eq!(frame.function, func::APPLICATION_COMMAND_HANDLER);
        assert_eq!(frame.payload[1], 7);
        assert_eq!(frame.payload[3..], rec.cc[..]);
    }
}

#[test]
fn fieldgate_emulate_zwave_serves_a_tcp_host_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldgate"))
        .args(["emulate", "zwave", "--listen", "127.0.0.1:0"])
        .args(["--report-interval", "1s", "--nodes", "multisensor"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn fieldgate emulate zwave");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    let addr = first
        .trim()
        .strip_prefix("listening tcp://")
        .unwrap_or_else(|| panic!("first line {first:?}"))
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let get_id = DataFrame::request(func::MEMORY_GET_ID, vec![])
        .to_bytes()
        .unwrap();
    stream.write_all(&get_id).unwrap();
    let mut parser = SerialParser::new();
    let mut frames = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let mut buf = [0u8; 512];
    // The response, then a report from node 2 (the multisensor) within its interval.
    while std::time::Instant::now() < deadline
        && !frames
            .iter()
            .any(|f: &Frame| matches!(f, Frame::Data(d) if d.function == func::APPLICATION_COMMAND_HANDLER))
    {
        let Ok(n) = stream.read(&mut buf) else { continue };
        for f in parser.feed(&buf[..n]) {
            if matches!(f, Frame::Data(_)) {
                stream.write_all(&[0x06]).unwrap();
            }
            frames.push(f);
        }
    }
    assert_eq!(frames.first(), Some(&Frame::Ack), "{frames:?}");
    let Some(Frame::Data(res)) = frames.get(1) else {
        panic!("{frames:?}")
    };
    assert_eq!(res.payload, [0xFA, 0x11, 0x6A, 0x7E, 0x01]);
    let report = frames.iter().find_map(|f| match f {
        Frame::Data(d) if d.function == func::APPLICATION_COMMAND_HANDLER => Some(d),
        _ => None,
    });
    let report = report.unwrap_or_else(|| panic!("no report: {frames:?}"));
    assert_eq!(report.payload[1], 2, "from node 2");
    assert_eq!(report.payload[3], 0x31, "a Multilevel Sensor report");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

fn peers_enabled() -> bool {
    std::env::var("FIELDGATE_PEERS").is_ok_and(|v| v == "1")
}

/// Values the emulator logged as sent (`node report node=N … values=a=1,b=true`).
fn sent_values(log: &str) -> BTreeMap<u8, Vec<(String, String)>> {
    let mut out: BTreeMap<u8, Vec<(String, String)>> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("node report")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_owned)
        };
        let (Some(node), Some(values)) = (field("node="), field("values=")) else {
            continue;
        };
        let Ok(node) = node.parse() else { continue };
        for pair in values.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                out.entry(node).or_default().push((k.into(), v.into()));
            }
        }
    }
    out
}

/// The reading name the emulator logs for a zwave-js value, if it is one it sends.
fn reading_name(cc: u64, property: &str, key: &serde_json::Value) -> Option<&'static str> {
    Some(match (cc, property) {
        (0x31, "Air temperature") => "temperature",
        (0x31, "Humidity") => "humidity",
        (0x31, "Illuminance") => "illuminance",
        // Meter property keys: (rate type << 8 | scale) … 65537 = kWh, 66049 = W.
        (0x32, "value") if key == 65537 => "energy",
        (0x32, "value") if key == 66049 => "power",
        (0x80, "level") => "battery",
        _ => return None,
    })
}

#[test]
fn zwave_js_driver_runs_on_fieldgate_emulate() {
    if !peers_enabled() {
        println!("skipped: set FIELDGATE_PEERS=1 (and run tests/peers/zwave/setup.sh) to run zwave-js's Driver on the emulator");
        return;
    }
    let peers = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/zwave");
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new("bash")
        .arg(format!("{peers}/run-driver.sh"))
        .arg(env!("CARGO_BIN_EXE_fieldgate"))
        .arg(dir.path())
        .arg("150")
        .args(["--report-interval", "3s", "--wake-interval", "12s"])
        .args(["--awake-time", "30s", "--exclude-presses", "7"])
        // Line faults zwave-js must ride out: a lost frame (it resends after 1.6 s), a CAN
        // (it resends), corrupt frames from the controller (it NAKs, the controller resends).
        .args(["--fault", "missing-ack@6s", "--fault", "can@7s"])
        .args(["--fault", "corrupt-frame@8s/5s"])
        .status()
        .expect("run tests/peers/zwave/run-driver.sh (needs bash, unshare, ip, node)");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let out = read("driver.out");
    let events: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with("{\"event\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let context = || {
        format!(
            "events: {events:#?}\nzwave-js stderr: {}\nemulator log tail: {}",
            read("driver.err"),
            read("emulator.log")
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    assert!(status.success(), "zwave-js did not finish: {}", context());
    let events = &events;
    let event = |name: &'static str| events.iter().filter(move |e| e["event"] == name);

    let ready = event("driver ready")
        .next()
        .unwrap_or_else(|| panic!("{}", context()));
    assert_eq!(ready["homeId"], u64::from(HOME_ID));
    assert_eq!(ready["nodes"], serde_json::json!([1, 2, 3, 4, 5, 6]));

    // Every node interviewed to "ready", as what it is.
    let nodes: BTreeMap<u64, &serde_json::Value> = event("node ready")
        .map(|e| (e["node"].as_u64().unwrap_or_default(), e))
        .collect();
    for (id, kind) in fieldgate_zwave::emulator::default_nodes() {
        let n = nodes
            .get(&u64::from(id))
            .unwrap_or_else(|| panic!("node {id} not ready: {}", context()));
        assert_eq!(n["manufacturerId"], 0xFFFF);
        assert_eq!(n["isListening"], kind.is_listening(), "node {id}");
        let ccs: BTreeSet<u64> = n["commandClasses"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c.as_u64()).collect())
            .unwrap_or_default();
        for (cc, _) in kind.command_classes() {
            assert!(
                ccs.contains(&u64::from(cc)),
                "node {id} {kind:?} lacks {cc:#04x}: {ccs:?}"
            );
        }
    }
    assert_eq!(nodes[&6]["isFrequentListening"], "1000ms");
    assert!(
        event("wake up").any(|e| e["node"] == 5),
        "the battery node woke"
    );

    // Every value zwave-js got from a node is one the emulator sent, and each listening
    // node reported after its interview.
    let sent = sent_values(&read("emulator.log"));
    let mut compared = 0;
    for e in event("value") {
        let (Some(node), Some(cc), Some(property)) = (
            e["node"].as_u64(),
            e["commandClass"].as_u64(),
            e["property"].as_str(),
        ) else {
            continue;
        };
        let Some(name) = reading_name(cc, property, &e["propertyKey"]) else {
            continue;
        };
        let Some(value) = e["value"].as_f64() else {
            continue;
        };
        let matches = sent.get(&(node as u8)).is_some_and(|values| {
            values
                .iter()
                .any(|(k, v)| k == name && v.parse::<f64>().is_ok_and(|v| (v - value).abs() < 1e-9))
        });
        assert!(
            matches,
            "node {node} {name} = {value} was never sent: {:?}",
            sent.get(&(node as u8))
        );
        compared += 1;
    }
    assert!(
        compared >= 10,
        "only {compared} values compared: {}",
        context()
    );
    for node in [2u64, 3, 4] {
        assert!(
            event("value").any(|e| e["node"] == node && e["ready"] == true),
            "node {node} reported after its interview: {}",
            context()
        );
    }
    // The door sensor's notification: the door states zwave-js saw are the events sent.
    let door_states: BTreeSet<u64> = event("value")
        .filter(|e| e["node"] == 4 && e["propertyKey"] == "Door state")
        .filter_map(|e| e["value"].as_u64())
        .collect();
    assert!(!door_states.is_empty() && door_states.is_subset(&BTreeSet::from([0x16, 0x17])));

    // The corrupt frames were NAKed by zwave-js and sent again.
    let log = read("emulator.log");
    let stopped = log
        .lines()
        .find(|l| l.contains("emulator stopped"))
        .unwrap_or_else(|| panic!("no stop line: {}", context()));
    let count = |name: &str| -> u64 {
        stopped
            .split(name)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_default()
    };
    assert!(count("naks_received: ") >= 1, "{stopped}");
    assert!(count("retransmissions: ") >= 1, "{stopped}");
    assert_eq!(count("frames_dropped: "), 0, "{stopped}");

    // zwave-js includes the waiting node (node 7), interviews it to ready, and excludes it
    // again (the emulator presses its button).
    assert!(event("node added").any(|e| e["node"] == 7), "{}", context());
    assert!(event("node ready").any(|e| e["node"] == 7), "{}", context());
    assert!(
        event("node removed").any(|e| e["node"] == 7),
        "{}",
        context()
    );

    // zwave-js's NVM backup through the Serial API is the committed image, byte for byte, and
    // nvmedit parses it to the emulator's network.
    let nvm = std::fs::read(dir.path().join("nvm.bin")).expect("nvm.bin");
    assert!(
        nvm == fieldgate_zwave::emulator::nvm::DEFAULT_IMAGE,
        "NVM read back differs"
    );
    let parsed = event("nvm")
        .next()
        .unwrap_or_else(|| panic!("{}", context()));
    assert_eq!(parsed["homeId"], format!("{HOME_ID:#010x}"));
    assert_eq!(parsed["nodeId"], 1);
    for (id, kind) in fieldgate_zwave::emulator::default_nodes() {
        let n = &parsed["nodes"][id.to_string()];
        assert_eq!(n["isListening"], kind.is_listening(), "NVM node {id}");
        assert_eq!(
            n["genericDeviceClass"],
            kind.device_class()[1],
            "NVM node {id}"
        );
    }
}
