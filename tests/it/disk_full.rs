//! A full disk, for real: the state directory on a small tmpfs (in a private mount
//! namespace, so nothing outside the test sees it) filled to the last byte. `status`,
//! `doctor` and `audit verify` still answer and say so, the log stays short, the counters
//! count, space coming back is noticed, and the daemon stops cleanly.
//! Needs root (mount); skipped otherwise.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, stdout, TestDaemon};

fn root() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("unshare")
            .args(["-m", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

fn in_namespace(pid: u32, script: &str) {
    let st = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("nsenter");
    assert!(st.success(), "{script}");
}

fn status_json(d: &TestDaemon) -> serde_json::Value {
    let out = d.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "status refused: {}",
        crate::common::stderr(&out)
    );
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Starts the daemon with its state directory on a tmpfs of `size` in a mount namespace
/// of its own; returns its pid once its API answers.
fn start_on_tmpfs(d: &mut TestDaemon, size: &str) -> u32 {
    let state = d.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let log = std::fs::File::create(d.dir.path().join("daemon.log")).unwrap();
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size={size},mode=0700 tmpfs \"$1\" && exec \"$0\" run --config \"$2\""
        ))
        .arg(bin())
        .arg(&state)
        .arg(&d.config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("unshare");
    let pid = child.id();
    d.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
        assert!(Instant::now() < deadline, "no socket: {}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    pid
}

/// The database itself fills the disk: busy adopted devices on a small filesystem. The
/// WAL, checkpointed by SQLite only at 1,000 pages, grew into the space the reserve gave
/// back, and from then on every request was refused `audit_unavailable`, `status`
/// included, until space was freed by hand. Now the WAL is checkpointed and truncated
/// while the disk is full, and requests keep being answered.
#[test]
fn a_disk_filled_by_the_database_itself_still_answers_requests() {
    if !root() {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let mut d = TestDaemon::prepare(
        "[[radio]]\nname = \"ble0\"\nprotocol = \"ble\"\nport = \"sim://ble\"\n[radio.options]\nsim_speed = 200\n",
    );
    start_on_tmpfs(&mut d, "4m");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pending = loop {
        let list: serde_json::Value =
            serde_json::from_str(&stdout(&d.cli(&["devices", "--json"]))).unwrap();
        let pending: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["lifecycle"] == "pending")
            .filter_map(|x| x["id"].as_str().map(String::from))
            .collect();
        if pending.len() >= 4 {
            break pending;
        }
        assert!(Instant::now() < deadline, "devices not seen: {list}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for id in &pending {
        d.cli(&["adopt", id]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status_json(&d);
        if st["store"]["disk"]["reserve_released"].as_u64() >= Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the disk never filled: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Requests are answered through what follows: 15 s of a full disk and its refills.
    let until = Instant::now() + Duration::from_secs(15);
    let mut answered = 0;
    while Instant::now() < until {
        status_json(&d);
        answered += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(answered > 20, "{answered}");
    let status = d.terminate(Duration::from_secs(10)).expect("stopped");
    assert!(status.success(), "{}", d.log());
}

#[test]
fn a_full_disk_is_reported_and_survived() {
    if !root() {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    // A busy radio: its readings must not spend the space given back for audit records.
    let mut d = TestDaemon::prepare(
        "[[radio]]\nname = \"ble0\"\nprotocol = \"ble\"\nport = \"sim://ble\"\n[radio.options]\nsim_speed = 50\n",
    );
    let state = d.dir.path().join("state");
    let pid = start_on_tmpfs(&mut d, "8m");
    let st = status_json(&d);
    assert_eq!(st["store"]["disk"]["disk_full"], false, "{st}");
    let db = state.join("fieldgate.db");
    in_namespace(pid, &format!("test -s '{}-reserve'", db.display()));

    // Fill the filesystem to the last block.
    in_namespace(
        pid,
        &format!(
            "dd if=/dev/zero of='{}/fill' bs=4k 2>/dev/null; true",
            state.display()
        ),
    );
    // Within a second (the writer looks before each batch), the disk is seen full.
    let deadline = Instant::now() + Duration::from_secs(5);
    let st = loop {
        let st = status_json(&d);
        if st["store"]["disk"]["disk_full"] == true {
            break st;
        }
        assert!(Instant::now() < deadline, "disk never seen full: {st}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        st["store"]["disk"]["reserve_released"].as_u64() >= Some(1),
        "{st}"
    );
    let text = stdout(&d.cli(&["status"]));
    assert!(text.contains("DISK FULL"), "{text}");
    let out = d.cli(&["audit", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
    // doctor, run where the daemon sees the disk, names it too.
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--"])
        .arg(bin())
        .args(["doctor", "--config"])
        .arg(&d.config)
        .output()
        .expect("nsenter doctor");
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.contains("disk space") && l.contains("DISK FULL")),
        "{text}"
    );
    // The radio's events are refused and counted while the disk is full...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status_json(&d);
        if st["store"]["disk"]["events_not_stored"].as_u64() > Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "no events refused: {st}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // ... so requests keep their audit records: many requests, all answered, few log lines.
    for i in 0..40 {
        let out = d.cli(&["status"]);
        assert!(
            out.status.success(),
            "status {i}: {}",
            crate::common::stderr(&out)
        );
    }
    let lines = d.log().lines().filter(|l| l.contains("full")).count();
    assert!(lines <= 6, "{lines} lines: {}", d.log());
    // The radio carried on through it: not taken down by a write it could not make.
    let st = status_json(&d);
    assert_eq!(st["radios"][0]["counters"]["startups"], 1, "{st}");
    assert!(!d.log().contains("radio down"), "{}", d.log());

    // Space comes back: noticed, the reserve is put back.
    in_namespace(pid, &format!("rm -f '{}/fill'", state.display()));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = status_json(&d);
        if st["store"]["disk"]["disk_full"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "disk still full: {st}");
        std::thread::sleep(Duration::from_millis(300));
    }
    in_namespace(pid, &format!("test -s '{}-reserve'", db.display()));
    let status = d.terminate(Duration::from_secs(10)).expect("stopped");
    assert!(status.success(), "{}", d.log());
}
