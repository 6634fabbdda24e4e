//! Crash safety: a child process appends to the outbox in a loop and is killed
//! with SIGKILL at random moments. After each kill the database must open, pass
//! `PRAGMA integrity_check`, and hold every row the child reported committed.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use fieldgate::store::outbox::{self, MessageKind, NewMessage};
use fieldgate::store::{self, Store, WriterOptions};

const CHILD_ENV: &str = "FIELDGATE_DURABILITY_DB";

/// The child: four threads append as fast as group commit allows and print each
/// seq once its commit has been acknowledged. Runs only when the parent asks.
#[test]
#[ignore = "child process of outbox_survives_sigkill"]
fn outbox_writer_child() {
    let Ok(db) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&db), WriterOptions::default()).expect("open");
    let (tx, rx) = mpsc::channel::<i64>();
    for t in 0..4 {
        let writer = store.writer();
        let tx = tx.clone();
        std::thread::spawn(move || loop {
            let seq = writer
                .write_blocking(move |c| {
                    outbox::append(
                        c,
                        "gw",
                        &NewMessage {
                            kind: MessageKind::Telemetry,
                            device: None,
                            topic: format!("device/t{t}/telemetry"),
                            retain: false,
                            data: serde_json::json!({"thread": t, "pad": "x".repeat(200)}),
                            event_time: SystemTime::now(),
                        },
                    )
                })
                .expect("write");
            if tx.send(seq).is_err() {
                return;
            }
        });
    }
    drop(tx);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for seq in rx {
        writeln!(out, "committed {seq}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn outbox_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let mut reported: BTreeSet<i64> = BTreeSet::new();
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args([
                "durability::outbox_writer_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(seq) = line
                    .strip_prefix("committed ")
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    let _ = tx.send(seq);
                }
            }
        });
        // Wait for the first commit, then kill at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child committed nothing");
        reported.insert(first);
        let delay = Duration::from_millis(rand::random_range(5..250));
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if let Ok(seq) = rx.recv_timeout(Duration::from_millis(1)) {
                reported.insert(seq);
            }
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = child.wait();
        reader.join().unwrap();
        reported.extend(rx.try_iter());

        let conn = rusqlite::Connection::open(&db).unwrap();
        assert_eq!(
            store::integrity_check(&conn).unwrap(),
            "ok",
            "round {round}"
        );
        let present: BTreeSet<i64> = outbox::pending(&conn, 0, usize::MAX >> 1)
            .unwrap()
            .into_iter()
            .map(|r| r.seq)
            .collect();
        let missing: Vec<_> = reported.difference(&present).take(10).collect();
        assert!(
            missing.is_empty(),
            "round {round}: committed rows missing after SIGKILL: {missing:?}"
        );
        // The database also opens for writing (migrations, WAL recovery).
        drop(conn);
        drop(Store::open(&db, WriterOptions::default()).unwrap());
    }
    assert!(reported.len() > 20, "only {} rows reported", reported.len());
}
