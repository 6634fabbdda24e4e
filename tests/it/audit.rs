//! `audit verify` finds tampering: an altered row or a deleted row is named;
//! an untouched log passes.

use crate::common::{stdout, TestDaemon};
use fieldgate::store;

fn populated() -> (TestDaemon, std::path::PathBuf) {
    let mut d = TestDaemon::start("");
    for _ in 0..5 {
        assert!(d.cli(&["status"]).status.success());
    }
    let status = d
        .terminate(std::time::Duration::from_secs(5))
        .expect("stopped");
    assert!(status.success());
    let db = d.db();
    (d, db)
}

fn verify(db: &std::path::Path) -> (bool, String) {
    let out = crate::common::fieldgate(&["audit", "verify", "--db", db.to_str().unwrap()]);
    (out.status.success(), stdout(&out))
}

fn tamper(db: &std::path::Path, sql: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    // An attacker with file access can drop the triggers; the chain still tells.
    c.execute_batch(
        "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;",
    )
    .unwrap();
    c.execute_batch(sql).unwrap();
}

#[test]
fn untouched_log_verifies() {
    let (_d, db) = populated();
    let (ok, out) = verify(&db);
    assert!(ok, "{out}");
    assert!(out.contains("audit log OK: 5 records"), "{out}");
}

#[test]
fn altered_row_is_named() {
    let (_d, db) = populated();
    tamper(&db, "UPDATE audit SET outcome = 'refused' WHERE seq = 3");
    let (ok, out) = verify(&db);
    assert!(!ok);
    assert!(out.contains("BROKEN at record 3"), "{out}");
    assert!(out.contains("altered"), "{out}");
}

#[test]
fn altered_hash_breaks_the_next_link() {
    let (_d, db) = populated();
    // Recomputing the hash of a changed row does not help: the next row no longer links.
    let c = rusqlite::Connection::open(&db).unwrap();
    let (seq, ts, actor, action, target, prev): (i64, String, String, String, String, String) = c
        .query_row(
            "SELECT seq, ts, actor, action, target, prev_hash FROM audit WHERE seq = 2",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .unwrap();
    let details = serde_json::json!({"status": 200, "user": "someone-else"});
    let canon = store::audit::canonical(seq, &ts, &actor, &action, &target, "accepted", &details);
    let hash = store::audit::chain_hash(&prev, &canon);
    tamper(
        &db,
        &format!(
            "UPDATE audit SET details = '{}', hash = '{hash}' WHERE seq = 2",
            details
        ),
    );
    let (ok, out) = verify(&db);
    assert!(!ok);
    assert!(out.contains("BROKEN at record 3"), "{out}");
}

#[test]
fn deleted_row_is_named() {
    let (_d, db) = populated();
    tamper(&db, "DELETE FROM audit WHERE seq = 2");
    let (ok, out) = verify(&db);
    assert!(!ok);
    assert!(out.contains("BROKEN at record 2"), "{out}");
    assert!(out.contains("missing"), "{out}");
}

/// SIGHUP (a "reload" reflex, or the terminal a daemon was started from closing) does
/// not stop the daemon: it says the config is read at start only and keeps serving;
/// SIGTERM then stops it cleanly.
#[test]
fn sighup_is_not_a_stop() {
    let mut d = TestDaemon::start("");
    let pid = d.pid().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("kill");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !d.log().contains("SIGHUP received") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        d.log().contains("systemctl restart fieldgate"),
        "{}",
        d.log()
    );
    assert!(d.cli(&["status"]).status.success(), "{}", d.log());
    let status = d
        .terminate(std::time::Duration::from_secs(10))
        .expect("stopped");
    assert!(status.success(), "{status}: {}", d.log());
}

/// `audit verify` exits 1 only for a log it found broken; when it cannot check at all
/// (no such database, a malformed seed, no daemon) it exits 3.
#[test]
fn verify_tells_broken_from_not_checked() {
    let (_d, db) = populated();
    let run = |args: &[&str]| crate::common::fieldgate(args).status.code();
    let db_s = db.to_str().unwrap();
    assert_eq!(run(&["audit", "verify", "--db", db_s]), Some(0));
    assert_eq!(
        run(&["audit", "verify", "--db", "/nonexistent/fieldgate.db"]),
        Some(3)
    );
    assert_eq!(
        run(&["audit", "verify", "--db", db_s, "--seed", "00"]),
        Some(3)
    );
    assert_eq!(
        run(&[
            "--socket",
            "/nonexistent/api.sock",
            "--timeout",
            "2s",
            "audit",
            "verify"
        ]),
        Some(3)
    );
    tamper(&db, "UPDATE audit SET actor = 'someone else' WHERE seq = 2");
    assert_eq!(run(&["audit", "verify", "--db", db_s]), Some(1));
}

/// `audit tail` takes 1 to 10,000 records, refused by the CLI itself (the daemon is
/// never asked), and `--json` prints one record per line.
#[test]
fn tail_counts_are_checked_and_json_is_one_record_per_line() {
    let (_d, db) = populated();
    let db_s = db.to_str().unwrap();
    for bad in ["0", "10001"] {
        let out = crate::common::fieldgate(&["audit", "tail", "--db", db_s, "-n", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = crate::common::stderr(&out);
        assert!(err.contains("1..=10000"), "{bad}: {err}");
    }
    let out = crate::common::fieldgate(&["audit", "tail", "--db", db_s, "-n", "3", "--json"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let seqs: Vec<i64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] + 1 == w[1]), "{seqs:?}");
}
