//! Daemon lifetime: SIGTERM stops it cleanly and quickly with nothing lost, and a
//! second daemon will not steal a live socket.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin, stderr, TestDaemon};
use fieldgate::store;

#[test]
fn sigterm_exits_zero_within_5s_with_nothing_lost() {
    let mut d = TestDaemon::start(
        "[[radio]]\nname = \"zb0\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\n",
    );
    // Load the API from a few clients while the signal arrives.
    let socket = d.socket.clone();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..20 {
                    let out = crate::common::fieldgate(&[
                        "--socket",
                        socket.to_str().unwrap(),
                        "status",
                        "--json",
                    ]);
                    if out.status.success() {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let status = d
        .terminate(Duration::from_secs(5))
        .expect("did not exit within 5 s");
    assert!(status.success(), "exit status {status}: {}", d.log());
    assert!(started.elapsed() < Duration::from_secs(5));
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(!d.socket.exists(), "socket left behind");

    // Every request that got an answer has its audit record, and the chain holds.
    let c = store::open_reader(&d.db()).unwrap();
    let records = store::audit::tail(&c, 100_000, None).unwrap();
    let status_requests = records.iter().filter(|r| r.target == "/v1/status").count();
    assert!(
        status_requests >= answered,
        "{status_requests} records for {answered} answers"
    );
    assert!(store::audit::verify(&c).unwrap().ok);
    assert_eq!(store::integrity_check(&c).unwrap(), "ok");
    assert!(d.log().contains("stopped"), "{}", d.log());
}

#[test]
fn a_second_daemon_does_not_take_a_live_socket() {
    let d = TestDaemon::start("");
    // Its own state directory, the first one's socket.
    let other = d.dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "[gateway]\nid = \"test-gw\"\nstate_dir = \"{}\"\n[api]\nsocket = \"{}\"\n",
            d.dir.path().join("other-state").display(),
            d.socket.display()
        ),
    )
    .unwrap();
    let out = crate::common::fieldgate(&["run", "--config", other.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        crate::common::stderr(&out).contains("already serving"),
        "{}",
        crate::common::stderr(&out)
    );
    // The first one still answers.
    assert!(d.cli(&["status"]).status.success());
}

/// Two daemons on one state directory would write two audit chains into one table and
/// drain one outbox twice: the second is refused, naming the first, and starts once the
/// first has stopped (the lock goes with the process; the file left behind is no obstacle).
#[test]
fn a_second_daemon_does_not_take_a_state_directory_in_use() {
    let mut d = TestDaemon::start("");
    let pid = d.child.as_ref().unwrap().id();
    let other = d.dir.path().join("other.toml");
    let config = crate::common::base_config(d.dir.path(), "").replace("api.sock", "other.sock");
    std::fs::write(&other, config).unwrap();
    let out = crate::common::fieldgate(&["run", "--config", other.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = crate::common::stderr(&out);
    assert!(
        err.contains(&format!(
            "another fieldgate daemon (pid {pid}) is running on the state directory"
        )),
        "{err}"
    );
    assert!(!d.dir.path().join("other.sock").exists());
    assert!(d.cli(&["status"]).status.success());
    assert_eq!(
        d.terminate(Duration::from_secs(10)).map(|s| s.success()),
        Some(true)
    );
    let mut second = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&other)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = d.dir.path().join("other.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "the second daemon did not start");
        assert!(
            second.try_wait().unwrap().is_none(),
            "the second daemon exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = second.kill();
    let _ = second.wait();
}

#[test]
fn demo_runs_and_says_what_it_does() {
    let out = crate::common::fieldgate(&["demo", "--duration", "2s"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let text = crate::common::stdout(&out);
    assert!(text.contains("radio zigbee0"), "{text}");
    assert!(text.contains("demo stopped"), "{text}");
    // A bad --mqtt is named as the option it is, not as a line of the demo's config.
    let out = crate::common::fieldgate(&["demo", "--mqtt", "notaurl"]);
    assert!(!out.status.success());
    let err = crate::common::stderr(&out);
    assert!(
        err.contains("--mqtt: not a valid URL") && !err.contains("<demo>"),
        "{err}"
    );
}

#[test]
fn tells_systemd_ready_and_pings_the_watchdog_from_the_hub() {
    let mut d = TestDaemon::prepare("");
    let notify_path = d.dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // 300 ms watchdog: the hub must ping about every 150 ms.
    d.spawn_with_env(&[
        ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "300000"),
    ]);
    let mut seen = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(10) {
        let n = notify.recv(&mut buf).expect("a notification");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3 {
            break;
        }
    }
    let ready = seen
        .iter()
        .position(|m| m.contains("READY=1"))
        .expect("READY=1 sent");
    assert!(seen[ready].contains("STATUS=serving"), "{seen:?}");
    let pings = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 3, "{seen:?}");
    // Pings come after READY.
    assert!(seen.iter().position(|m| m.contains("WATCHDOG=1")).unwrap() > ready || ready == 0);
    let status = d.terminate(Duration::from_secs(5)).expect("stopped");
    assert!(status.success());
    let mut rest = Vec::new();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while let Ok(n) = notify.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")), "{rest:?}");
}

/// Under systemd the socket comes from `fieldgate.socket` (socket activation):
/// the daemon serves the descriptor it is handed, changes nothing on the socket
/// file (the unit's system call filter forbids chown) and leaves it in place when
/// it stops. `systemd-socket-activate` does what systemd does: it creates the
/// socket, waits for the first connection and starts the daemon with LISTEN_FDS,
/// so the CLI's first call is answered by a daemon that was not running yet.
#[test]
fn serves_the_socket_systemd_hands_over_and_leaves_it_in_place() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDaemon::prepare("");
    let Some(mut activator) = socket_activated(&d) else {
        return;
    };
    let mode_before = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;

    // The first connection starts the daemon; the call waits in the backlog.
    let out = d.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "status: {} / {}",
        stderr(&out),
        d.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(v["gateway_id"], "test-gw", "{v}");
    assert!(
        d.log().contains("API socket handed over by systemd"),
        "{}",
        d.log()
    );
    let mode_after = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode_before, mode_after,
        "the daemon changed the socket's mode"
    );

    // systemd-socket-activate execs the daemon in its own process.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(activator.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = activator.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not stop: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit {status}: {}", d.log());
    assert!(
        d.socket.exists(),
        "the daemon removed a socket systemd owns: {}",
        d.log()
    );
}

/// A closed stdout ends a command the way it ends other Unix tools: `demo | head`
/// stops the demo (its daemon shut down cleanly), `status | head -1` prints its
/// line and exits without a panic.
#[test]
fn commands_stop_quietly_when_their_reader_goes_away() {
    use std::io::{BufRead, BufReader};
    let mut demo = Command::new(bin())
        .args(["demo", "--duration", "60s"])
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo starts");
    let mut lines = BufReader::new(demo.stdout.take().expect("stdout"));
    let mut first = String::new();
    lines.read_line(&mut first).expect("a line");
    assert!(first.starts_with("fieldgate demo"), "{first}");
    let socket = {
        let mut l = String::new();
        lines.read_line(&mut l).expect("a line");
        l.split("--socket ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("the socket path")
            .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the demo's API never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // `status | head -1` against the running demo: one line, no panic.
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' --socket '{socket}' status | head -1", bin()))
        .output()
        .expect("sh");
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout).lines().count(),
        1,
        "{piped:?}"
    );
    assert!(
        !String::from_utf8_lossy(&piped.stderr).contains("panicked"),
        "{piped:?}"
    );
    // `pair | head -1`: the watch stops once its reader has its line, not when the
    // 60 s window ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = Instant::now();
        let piped = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{}' --socket '{socket}' pair zigbee0 --seconds 60 | head -1",
                bin()
            ))
            .output()
            .expect("sh");
        if String::from_utf8_lossy(&piped.stdout).contains("join window open") {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "pair kept watching: {:?}",
                started.elapsed()
            );
            break;
        }
        // The demo's radio may still be starting.
        assert!(Instant::now() < deadline, "{piped:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The reader goes away: the demo stops by itself, well before its 60 s.
    drop(lines);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = demo.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = demo.kill();
            panic!("the demo kept running after its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut demo.stderr.take().expect("stderr"), &mut err);
    assert!(status.success(), "{status}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Started by hand with a permissive umask, the daemon still keeps its state to
/// itself: the state directory 0700, the database and its WAL 0600. A master key
/// owned by another user (who could have replaced it) is refused.
#[test]
fn state_files_are_private_whatever_the_umask_and_a_foreign_key_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = TestDaemon::prepare("");
    let log = std::fs::File::create(d.dir.path().join("daemon.log")).expect("log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" run --config \"$1\"")
        .arg(bin())
        .arg(&d.config)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "daemon did not start: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let bits = |m: std::fs::Metadata| m.permissions().mode() & 0o777;
    let mode =
        |p: &Path| bits(std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    let state = d.dir.path().join("state");
    assert_eq!(mode(&state), 0o700, "state dir");
    assert_eq!(mode(&d.db()), 0o600, "database");
    // The WAL comes and goes with the connections (SQLite deletes it when the last
    // one closes), so it is checked only if it is there when looked at.
    if let Ok(wal) = std::fs::metadata(state.join("fieldgate.db-wal")) {
        assert_eq!(bits(wal), 0o600, "WAL");
    }
    let key = state.join("master.key");
    assert_eq!(mode(&key), 0o600, "master key");
    assert_eq!(mode(&state.join("fieldgate.db.lock")), 0o600, "lock");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success(), "{}", d.log());

    // The key handed to another user: refused at start, with the reason.
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
        assert_eq!(std::fs::metadata(&key).unwrap().uid(), 65534);
        let out = Command::new(bin())
            .args(["run", "--config"])
            .arg(&d.config)
            .env_remove("NOTIFY_SOCKET")
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("belongs to uid 65534"), "{err}");
    }
}

/// A socket that takes the connection and never answers (a daemon stopped with SIGSTOP,
/// something else listening there) does not hang the command: it gives up after
/// `--timeout` and says why.
#[test]
fn a_command_gives_up_on_a_socket_that_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let status_within = |timeout: &str| {
        crate::common::fieldgate(&[
            "--socket",
            path.to_str().unwrap(),
            "--timeout",
            timeout,
            "status",
        ])
    };
    let started = Instant::now();
    let out = status_within("1s");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no answer on") && err.contains("within 1 s"),
        "{err}"
    );
    let out = status_within("0s");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A path that is not a socket at all is named as such, not as a stale socket.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "x").unwrap();
    let out = crate::common::fieldgate(&["--socket", file.to_str().unwrap(), "status"]);
    assert!(stderr(&out).contains("is not a socket"), "{}", stderr(&out));
}

/// A broker that cannot be reached is said in the log at the default level, once for
/// as long as the reason stays the same, not at every retry and not only at debug.
#[test]
fn an_unreachable_broker_is_logged_once_as_a_warning() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = TestDaemon::start(&format!(
        "[upstream]\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_max = \"1s\"\n"
    ));
    let needle = "cannot connect to the broker";
    let deadline = Instant::now() + Duration::from_secs(15);
    while !d.log().contains(needle) {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Several more retries (one a second at most).
    std::thread::sleep(Duration::from_secs(4));
    let log = d.log();
    assert_eq!(log.matches(needle).count(), 1, "{log}");
    assert!(log.contains("WARN"), "{log}");
}

/// Under socket activation a daemon that cannot start (here a config error) answers
/// the CLI call that started it with why, instead of leaving it waiting while systemd
/// starts the service again and again for the same connection (and then refuses to
/// start it at all: `start-limit-hit`).
#[test]
fn a_start_that_fails_under_socket_activation_tells_the_waiting_cli_why() {
    let d = TestDaemon::prepare("");
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{text}\n[store]\nlinger = \"1year\"\n")).unwrap();
    let Some(mut activator) = socket_activated(&d) else {
        return;
    };
    let started = Instant::now();
    let out = crate::common::fieldgate(&[
        "--socket",
        d.socket.to_str().unwrap(),
        "--timeout",
        "20s",
        "status",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the daemon could not start") && err.contains("store.linger"),
        "{err} / {}",
        d.log()
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    let _ = activator.kill();
    let _ = activator.wait();
}

/// `d`'s daemon behind `systemd-socket-activate`, which does what systemd does: it
/// creates the socket, waits for the first connection and starts the daemon with
/// LISTEN_FDS. `None` (the test is skipped) when the tool is not installed.
fn socket_activated(d: &TestDaemon) -> Option<std::process::Child> {
    let tool = [
        "/usr/bin/systemd-socket-activate",
        "/bin/systemd-socket-activate",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let Some(tool) = tool else {
        eprintln!("systemd-socket-activate not installed (Debian package systemd); skipped");
        return None;
    };
    let log = std::fs::File::create(d.dir.path().join("daemon.log")).expect("log");
    let activator = Command::new(tool)
        .arg("-l")
        .arg(&d.socket)
        .arg(bin())
        .args(["run", "--config"])
        .arg(&d.config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn systemd-socket-activate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.socket.exists(), "the activator made no socket");
    Some(activator)
}
