//! Every tamper class of the audit log against `audit verify` without and with the
//! seal seed, and the daemon's own checks at start-up and while it runs. The table
//! in docs/security.md is this file's `CLASSES`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{fieldgate, stdout, TestDaemon};
use fieldgate::store::audit::{canonical, chain_hash};
use rusqlite::Connection;
use serde_json::Value;

const SEALING: &str = "[store]\naudit_seal_interval = \"1h\"\n";

fn stop(d: &mut TestDaemon) {
    let status = d.terminate(Duration::from_secs(10)).expect("stopped");
    assert!(status.success(), "{}", d.log());
}

/// A gateway with sealing set up and two runs of audited requests: the seals cover
/// every record (the daemon seals at start and at stop).
fn sealed_gateway() -> (TestDaemon, String) {
    let mut d = TestDaemon::start(SEALING);
    stop(&mut d);
    let db = d.db();
    let out = fieldgate(&[
        "audit",
        "seal",
        "init",
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    let seed = v["seed"].as_str().expect("seed").to_string();
    assert_eq!(seed.len(), 64);
    // The seed is shown once: never in the daemon's log, never in the key file.
    let key_file = std::fs::read_to_string(crate::common::sidecar(&db, "-seal-key")).unwrap();
    assert!(!key_file.contains(&seed));
    for _ in 0..2 {
        d.spawn();
        for _ in 0..4 {
            assert!(d.cli(&["status"]).status.success());
        }
        stop(&mut d);
    }
    assert!(!d.log().contains(&seed));
    (d, seed)
}

fn copy_state(from: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let db = dir.path().join("fieldgate.db");
    (dir, db)
}

fn verify(db: &Path, seed: Option<&str>) -> (bool, String) {
    let mut args = vec!["audit", "verify", "--db", db.to_str().unwrap()];
    if let Some(s) = seed {
        args.extend_from_slice(&["--seed", s]);
    }
    let out = fieldgate(&args);
    (out.status.success(), stdout(&out))
}

fn open(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    // Root can drop the triggers; what follows is what that allows.
    c.execute_batch(
        "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;
         DROP TRIGGER IF EXISTS audit_seals_no_update; DROP TRIGGER IF EXISTS audit_seals_no_delete;",
    )
    .unwrap();
    c
}

type Row = (i64, String, String, String, String, String, String);

fn rows(c: &Connection) -> Vec<Row> {
    let mut stmt = c
        .prepare("SELECT seq, ts, actor, action, target, outcome, details FROM audit ORDER BY seq")
        .unwrap();
    let r = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap();
    r.collect::<Result<_, _>>().unwrap()
}

/// Writes `rows` as the whole log, numbered 1.. and correctly hash-chained: what an
/// attacker who knows the format can do.
fn rewrite_chain(c: &Connection, rows: Vec<Row>) {
    c.execute("DELETE FROM audit", []).unwrap();
    let mut prev = "0".repeat(64);
    for (i, (_, ts, actor, action, target, outcome, details)) in rows.into_iter().enumerate() {
        let seq = i as i64 + 1;
        let d: Value = serde_json::from_str(&details).unwrap();
        let hash = chain_hash(
            &prev,
            &canonical(seq, &ts, &actor, &action, &target, &outcome, &d),
        );
        c.execute(
            "INSERT INTO audit VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![seq, ts, actor, action, target, outcome, details, prev, hash],
        )
        .unwrap();
        prev = hash;
    }
}

/// Rewrites the high-water mark to the table's head, as an informed attacker would.
fn forge_mark(db: &Path, c: &Connection) {
    let (seq, hash): (i64, String) = c
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or((0, "0".repeat(64)));
    std::fs::write(
        crate::common::sidecar(db, "-audit-mark"),
        format!("{seq:020} {hash}\n"),
    )
    .unwrap();
}

fn forged(mut row: Row) -> Row {
    row.4 = "forged".into();
    row
}

struct Class {
    name: &'static str,
    tamper: fn(&Path, &Connection),
    /// Detected by `audit verify --db` (chain and high-water mark, no seed).
    without_seed: bool,
}

const CLASSES: &[Class] = &[
    Class {
        name: "a record edited in place",
        tamper: |_, c| {
            c.execute("UPDATE audit SET target = 'x' WHERE seq = 3", [])
                .unwrap();
        },
        without_seed: true,
    },
    Class {
        name: "a record in the middle deleted",
        tamper: |_, c| {
            c.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
        },
        without_seed: true,
    },
    Class {
        name: "two records swapped",
        tamper: |_, c| {
            c.execute_batch(
                "UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3;
                 UPDATE audit SET seq = 3 WHERE seq = -1;",
            )
            .unwrap();
        },
        without_seed: true,
    },
    Class {
        name: "a forged record with a wrong hash appended",
        tamper: |_, c| {
            c.execute(
                "INSERT INTO audit SELECT seq + 1, ts, actor, action, 'x', outcome, details, hash, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
            )
            .unwrap();
        },
        without_seed: true,
    },
    Class {
        name: "the newest records deleted",
        tamper: |_, c| {
            c.execute(
                "DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 3 FROM audit)",
                [],
            )
            .unwrap();
        },
        without_seed: true,
    },
    Class {
        name: "every record deleted",
        tamper: |_, c| {
            c.execute("DELETE FROM audit", []).unwrap();
        },
        without_seed: true,
    },
    Class {
        name: "a forged record with a correct hash appended",
        tamper: |_, c| {
            let mut r = rows(c);
            let last = r.last().cloned().unwrap();
            r.push(forged(last));
            rewrite_chain(c, r);
        },
        without_seed: true,
    },
    Class {
        name: "a record changed and the chain re-hashed from there",
        tamper: |_, c| {
            let mut r = rows(c);
            r[2] = forged(r[2].clone());
            rewrite_chain(c, r);
        },
        without_seed: true,
    },
    Class {
        name: "a record changed, the chain re-hashed and the mark rewritten",
        tamper: |db, c| {
            let mut r = rows(c);
            r[2] = forged(r[2].clone());
            rewrite_chain(c, r);
            forge_mark(db, c);
        },
        without_seed: false,
    },
    Class {
        name: "a record deleted, the rest renumbered and re-hashed, the mark rewritten",
        tamper: |db, c| {
            let mut r = rows(c);
            r.remove(2);
            rewrite_chain(c, r);
            forge_mark(db, c);
        },
        // The log now ends before what the last seal covers (the seals are read
        // without the seed).
        without_seed: true,
    },
    Class {
        name: "a record inserted, renumbered and re-hashed, the mark rewritten",
        tamper: |db, c| {
            let mut r = rows(c);
            let extra = forged(r[1].clone());
            r.insert(2, extra);
            rewrite_chain(c, r);
            forge_mark(db, c);
        },
        without_seed: false,
    },
    Class {
        name: "the newest records and their seals deleted, the mark rewritten",
        tamper: |db, c| {
            let last_two: i64 = c
                .query_row("SELECT MIN(first_seq) FROM (SELECT first_seq FROM audit_seals ORDER BY epoch DESC LIMIT 2)", [], |r| r.get(0))
                .unwrap();
            c.execute("DELETE FROM audit WHERE seq >= ?1", [last_two])
                .unwrap();
            c.execute(
                "DELETE FROM audit_seals WHERE epoch > (SELECT MAX(epoch) - 2 FROM audit_seals)",
                [],
            )
            .unwrap();
            forge_mark(db, c);
        },
        without_seed: false,
    },
    Class {
        name: "every record and seal deleted, the mark rewritten",
        tamper: |db, c| {
            c.execute_batch("DELETE FROM audit; DELETE FROM audit_seals;")
                .unwrap();
            forge_mark(db, c);
        },
        without_seed: false,
    },
];

#[test]
fn every_tamper_class_is_detected_with_the_seed() {
    let (d, seed) = sealed_gateway();
    let state = d.db().parent().unwrap().to_path_buf();
    let (ok, out) = verify(&d.db(), Some(&seed));
    assert!(ok, "untouched log: {out}");
    assert!(out.contains("sealed: "), "{out}");
    assert!(out.contains("0 newer record(s) not sealed yet"), "{out}");
    let (ok, out) = verify(&d.db(), None);
    assert!(ok, "untouched log without the seed: {out}");
    // A wrong seed is refused.
    let (ok, _) = verify(&d.db(), Some(&"ab".repeat(32)));
    assert!(!ok);
    for class in CLASSES {
        let (_dir, db) = copy_state(&state);
        {
            let c = open(&db);
            (class.tamper)(&db, &c);
        }
        let (ok, out) = verify(&db, None);
        assert_eq!(
            !ok, class.without_seed,
            "{}: verify without the seed said: {out}",
            class.name
        );
        let (ok, out) = verify(&db, Some(&seed));
        assert!(!ok, "{}: verify with the seed said OK: {out}", class.name);
        assert!(out.contains("BROKEN"), "{}: {out}", class.name);
    }
}

fn status_json(d: &TestDaemon) -> Value {
    let out = d.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn audit_actions(db: &Path) -> Vec<(i64, String)> {
    let c = Connection::open(db).unwrap();
    let mut stmt = c
        .prepare("SELECT seq, action FROM audit ORDER BY seq")
        .unwrap();
    let r = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    r.collect::<Result<_, _>>().unwrap()
}

#[test]
fn start_up_restores_the_triggers_and_raises_the_alarm_on_a_cut_log() {
    let mut d = TestDaemon::start("");
    for _ in 0..5 {
        assert!(d.cli(&["status"]).status.success());
    }
    let head = status_json(&d)["audit"].clone();
    assert!(head["alarm"].is_null(), "{head}");
    // Five records: this request's own is written once its answer is known.
    assert_eq!(head["head_seq"], 5, "{head}");
    stop(&mut d);
    let life = |db: &Path| -> String {
        Connection::open(db)
            .unwrap()
            .query_row("SELECT life FROM gateway_life", [], |r| r.get(0))
            .unwrap()
    };
    let before = life(&d.db());
    {
        let c = open(&d.db());
        c.execute("DELETE FROM audit WHERE seq > 3", []).unwrap();
    }
    d.spawn();
    // The database lost what the daemon had written, the outbox's seqs with it: what
    // follows is numbered in a new life, so no (life, seq) is used twice.
    let after = life(&d.db());
    assert_ne!(after, before);
    let st = status_json(&d);
    assert_eq!(st["audit"]["alarm"]["name"], "audit_chain_broken", "{st}");
    let reason = st["audit"]["alarm"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("triggers") && reason.contains("removed"),
        "{reason}"
    );
    let text = stdout(&d.cli(&["status"]));
    assert!(text.contains("ALARM     audit_chain_broken"), "{text}");
    // The triggers are back.
    let c = Connection::open(d.db()).unwrap();
    assert!(c.execute("DELETE FROM audit WHERE seq = 1", []).is_err());
    // No seq is given twice: the alarm record comes after the removed ones.
    let actions = audit_actions(&d.db());
    assert_eq!(
        actions[3],
        (7, "audit.chain_broken".to_string()),
        "{actions:?}"
    );
    // The cloud hears of it: an alarm message waits in the outbox.
    let alarms: Vec<String> = c
        .prepare("SELECT CAST(payload AS TEXT) FROM outbox WHERE topic = 'alarm' AND CAST(payload AS TEXT) LIKE '%audit_chain_broken%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(alarms.len(), 1);
    let alarm: Value = serde_json::from_str(&alarms[0]).unwrap();
    assert_eq!(alarm["life"], after.as_str(), "{alarm}");
    stop(&mut d);
    // The log stays visibly broken, and a restart does not raise the same alarm again.
    let (ok, out) = verify(&d.db(), None);
    assert!(!ok && out.contains("record 4 is missing"), "{out}");
    d.spawn();
    assert!(status_json(&d)["audit"]["alarm"].is_null());
}

#[test]
fn a_log_cut_while_the_daemon_runs_is_noticed_at_the_next_append() {
    let d = TestDaemon::start("");
    for _ in 0..5 {
        assert!(d.cli(&["status"]).status.success());
    }
    {
        let c = open(&d.db());
        c.execute("DELETE FROM audit WHERE seq > 2", []).unwrap();
    }
    // The next audited request finds the head moved.
    assert!(d.cli(&["status"]).status.success());
    let st = status_json(&d);
    assert_eq!(st["audit"]["alarm"]["name"], "audit_chain_broken", "{st}");
    let actions = audit_actions(&d.db());
    let seqs: Vec<i64> = actions.iter().map(|a| a.0).collect();
    // Records 3..=5 are gone; what follows is numbered after them, never reusing one.
    assert_eq!(&seqs[..3], &[1, 2, 6], "{actions:?}");
    assert!(actions
        .iter()
        .any(|(seq, a)| a == "audit.chain_broken" && *seq > 6));
    let c = Connection::open(d.db()).unwrap();
    assert!(
        c.execute("DELETE FROM audit WHERE seq = 1", []).is_err(),
        "triggers restored"
    );
}

/// A record forged onto the end of the log while the daemon runs (correctly chained):
/// the next audited request raises the alarm and is still carried out and recorded;
/// the daemon numbers on after the forged record instead of taking its seq again.
#[test]
fn a_record_appended_while_the_daemon_runs_raises_the_alarm_and_the_log_goes_on() {
    let d = TestDaemon::start("");
    for _ in 0..3 {
        assert!(d.cli(&["status"]).status.success());
    }
    {
        let c = open(&d.db());
        let (seq, prev): (i64, String) = c
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let (ts, details) = ("2026-01-01T00:00:00.000Z", serde_json::json!({}));
        let hash = chain_hash(
            &prev,
            &canonical(
                seq + 1,
                ts,
                "local:uid=0",
                "device.rename",
                "x",
                "accepted",
                &details,
            ),
        );
        c.execute(
            "INSERT INTO audit VALUES (?1, ?2, 'local:uid=0', 'device.rename', 'x', 'accepted', '{}', ?3, ?4)",
            rusqlite::params![seq + 1, ts, prev, hash],
        )
        .unwrap();
    }
    for _ in 0..3 {
        let out = d.cli(&["status"]);
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
    }
    let st = status_json(&d);
    assert_eq!(st["audit"]["alarm"]["name"], "audit_chain_broken", "{st}");
    let actions = audit_actions(&d.db());
    let seqs: Vec<i64> = actions.iter().map(|a| a.0).collect();
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(seqs, sorted, "{actions:?}");
    let forged = actions.iter().position(|a| a.1 == "device.rename").unwrap();
    assert!(
        actions[forged + 1..]
            .iter()
            .any(|a| a.1 == "audit.chain_broken"),
        "{actions:?}"
    );
}

/// The seed exists only in what `audit seal init` prints: when it cannot be written
/// (standard output closed before it), the command fails and leaves sealing not set up,
/// so that it can run again.
#[test]
fn seal_init_with_nowhere_to_show_the_seed_sets_nothing_up() {
    use std::os::fd::OwnedFd;
    use std::process::{Command, Stdio};
    let mut d = TestDaemon::start(SEALING);
    stop(&mut d);
    let db = d.db();
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = Command::new(crate::common::bin())
        .args(["audit", "seal", "init", "--db", db.to_str().unwrap()])
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sealing was not set up"), "{err}");
    assert!(!crate::common::sidecar(&db, "-seal-key").exists());
    let out = fieldgate(&["audit", "seal", "init", "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert!(
        stdout(&out).contains("verification seed"),
        "{}",
        stdout(&out)
    );
}

/// `audit seal init` works on the files alone; the daemon's first seal then says in
/// the log that sealing started, once, in a record that seal covers.
#[test]
fn the_first_seal_records_that_sealing_started() {
    let (d, seed) = sealed_gateway();
    let started: Vec<i64> = audit_actions(&d.db())
        .into_iter()
        .filter(|(_, action)| action == "audit.sealing_started")
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(started.len(), 1, "{:?}", audit_actions(&d.db()));
    let c = Connection::open(d.db()).unwrap();
    let first_sealed: i64 = c
        .query_row(
            "SELECT last_seq FROM audit_seals WHERE epoch = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(started[0] <= first_sealed, "{started:?} {first_sealed}");
    let (ok, text) = verify(&d.db(), Some(&seed));
    assert!(ok, "{text}");
}

/// The documented way back to a backup, `fieldgate restore`. The gateway went on
/// after the backup (more records, more seals, more messages); the restored one
/// numbers its messages in a new life, starts without an alarm, records the restore
/// in its log, and carries on sealing from the backup's last seal, which the seed
/// then verifies. Without the seed, a restore that would stop sealing is refused and
/// changes nothing.
#[test]
fn a_restored_backup_gets_a_new_life_a_record_of_it_and_sealing_that_carries_on() {
    let (mut d, seed) = sealed_gateway();
    let db = d.db();
    // A clean stop checkpointed the database: the file alone is the backup.
    let backup = d.dir.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();
    let life = |db: &Path| -> String {
        Connection::open(db)
            .unwrap()
            .query_row("SELECT life FROM gateway_life", [], |r| r.get(0))
            .unwrap()
    };
    let before = life(&db);
    // The copy alone (no mark, no key file beside it) verifies with the seed.
    let (ok, text) = verify(&backup, Some(&seed));
    assert!(ok, "{text}");
    for _ in 0..2 {
        d.spawn();
        assert!(d.cli(&["status"]).status.success());
        stop(&mut d);
    }
    let config = d.config.to_str().unwrap().to_string();
    let args = ["--config", &config, "restore", backup.to_str().unwrap()];

    let out = crate::common::fieldgate(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let why = crate::common::stderr(&out);
    assert!(why.contains("--seed -") && why.contains("epoch"), "{why}");
    assert_eq!(life(&db), before, "nothing changed");
    assert!(!crate::common::sidecar(&db, ".replaced").exists());

    let mut with_seed = args.to_vec();
    with_seed.extend_from_slice(&["--seed", "-", "--json"]);
    let out = crate::common::fieldgate_with_input(&with_seed, format!("{seed}\n").as_bytes());
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(v["previous_life"], before.as_str(), "{v}");
    assert_ne!(v["life"], before.as_str(), "{v}");
    assert!(
        v["sealing"]
            .as_str()
            .unwrap()
            .starts_with("continued at epoch"),
        "{v}"
    );
    assert!(crate::common::sidecar(&db, ".replaced").exists());
    assert!(!stdout(&out).contains(&seed));
    // A second restore would replace the kept database: refused until it is moved.
    let again = crate::common::fieldgate_with_input(&with_seed, format!("{seed}\n").as_bytes());
    assert_eq!(again.status.code(), Some(1));
    assert!(
        crate::common::stderr(&again).contains(".replaced"),
        "{}",
        crate::common::stderr(&again)
    );
    assert_eq!(life(&db), v["life"].as_str().unwrap(), "nothing changed");
    let leftovers: Vec<_> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    d.spawn();
    let st = status_json(&d);
    assert!(st["audit"]["alarm"].is_null(), "{st}\n{}", d.log());
    assert!(d.cli(&["status"]).status.success());
    stop(&mut d);
    assert_eq!(life(&db), v["life"].as_str().unwrap());
    let restored: Vec<i64> = audit_actions(&db)
        .into_iter()
        .filter(|(_, a)| a == "state.restored")
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(restored, [v["audit_seq"].as_i64().unwrap()]);
    let (ok, text) = verify(&db, Some(&seed));
    assert!(ok, "{text}");
    assert!(!d.log().contains(&seed));
}

/// A seed checked against a gateway that never set sealing up: the chain is reported
/// as verified and the seals as not set up, not as a log broken at its first record.
#[test]
fn a_seed_on_a_gateway_without_sealing_says_sealing_is_not_set_up() {
    let mut d = TestDaemon::start("");
    assert!(d.cli(&["status"]).status.success());
    stop(&mut d);
    let (ok, text) = verify(&d.db(), Some(&"ab".repeat(32)));
    assert!(!ok, "{text}");
    assert!(text.contains("audit chain OK"), "{text}");
    assert!(text.contains("seals NOT VERIFIED"), "{text}");
    assert!(
        text.contains("not set up") && text.contains("audit seal init"),
        "{text}"
    );
    assert!(!text.contains("BROKEN"), "{text}");
}

/// The newest seal removed (its trigger dropped first): the alarm is raised once, and
/// sealing goes on after it, so what is written from then on is sealed again; the
/// missing epoch stays missing for `verify --seed`.
#[test]
fn sealing_goes_on_after_the_alarm_for_a_removed_seal() {
    let (mut d, seed) = sealed_gateway();
    let last: i64 = {
        let c = open(&d.db());
        let last = c
            .query_row("SELECT MAX(epoch) FROM audit_seals", [], |r| r.get(0))
            .unwrap();
        c.execute("DELETE FROM audit_seals WHERE epoch = ?1", [last])
            .unwrap();
        last
    };
    d.spawn();
    let st = status_json(&d);
    assert_eq!(st["audit"]["alarm"]["name"], "audit_chain_broken", "{st}");
    for _ in 0..3 {
        assert!(d.cli(&["status"]).status.success());
    }
    stop(&mut d);
    assert!(!d.log().contains("audit sealing failed"), "{}", d.log());
    let epochs: Vec<i64> = {
        let c = Connection::open(d.db()).unwrap();
        let mut stmt = c
            .prepare("SELECT epoch FROM audit_seals ORDER BY epoch")
            .unwrap();
        let r = stmt.query_map([], |r| r.get(0)).unwrap();
        r.collect::<Result<_, _>>().unwrap()
    };
    assert!(!epochs.contains(&last), "{epochs:?}");
    assert!(
        epochs.iter().any(|e| *e > last),
        "not sealed again: {epochs:?}"
    );
    // Every record is covered by a seal again.
    let head: i64 = Connection::open(d.db())
        .unwrap()
        .query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    let sealed_to: i64 = Connection::open(d.db())
        .unwrap()
        .query_row("SELECT MAX(last_seq) FROM audit_seals", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sealed_to, head);
    let (ok, text) = verify(&d.db(), Some(&seed));
    assert!(
        !ok && text.contains(&format!("seal {last} is missing")),
        "{text}"
    );
    // Raised once: the next start finds the seals and the key in step.
    d.spawn();
    assert!(status_json(&d)["audit"]["alarm"].is_null());
    stop(&mut d);
}

/// Every seal and the key file removed, the records kept: the log's
/// `audit.sealing_started` record still says sealing was set up, so the daemon raises
/// the alarm and `audit seal init` refuses to set sealing up again over it.
#[test]
fn seals_and_key_removed_raise_the_alarm_and_sealing_cannot_be_set_up_again() {
    let (mut d, _seed) = sealed_gateway();
    {
        let c = open(&d.db());
        c.execute_batch("DELETE FROM audit_seals").unwrap();
    }
    std::fs::remove_file(crate::common::sidecar(&d.db(), "-seal-key")).unwrap();
    let out = fieldgate(&["audit", "seal", "init", "--db", d.db().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = crate::common::stderr(&out);
    assert!(err.contains("was set up for this database before"), "{err}");
    assert!(!crate::common::sidecar(&d.db(), "-seal-key").exists());
    d.spawn();
    let st = status_json(&d);
    let reason = st["audit"]["alarm"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no seal is left"), "{st}");
    stop(&mut d);
}

/// A database run as another gateway id (copied in from another gateway with its
/// mark and seal key, or the id changed): the alarm names both ids, once.
#[test]
fn a_database_of_another_gateway_raises_the_alarm_once() {
    let (mut d, _seed) = sealed_gateway();
    let config = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        config.replace("id = \"test-gw\"", "id = \"other-gw\""),
    )
    .unwrap();
    d.spawn();
    let st = status_json(&d);
    let reason = st["audit"]["alarm"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("`test-gw`") && reason.contains("`other-gw`"),
        "{st}"
    );
    stop(&mut d);
    d.spawn();
    assert!(status_json(&d)["audit"]["alarm"].is_null());
    stop(&mut d);
}

/// Sealing, once set up, cannot be switched off by deleting its key file: the daemon
/// raises the alarm at start and `doctor` fails the state directory.
#[test]
fn a_deleted_seal_key_raises_the_alarm_and_fails_doctor() {
    let (mut d, _seed) = sealed_gateway();
    std::fs::remove_file(crate::common::sidecar(&d.db(), "-seal-key")).unwrap();
    d.spawn();
    let st = status_json(&d);
    assert_eq!(st["audit"]["alarm"]["name"], "audit_chain_broken", "{st}");
    let reason = st["audit"]["alarm"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("seal key file") && reason.contains("missing"),
        "{reason}"
    );
    let doctor = fieldgate(&[
        "doctor",
        "--config",
        d.config.to_str().unwrap(),
        "--user",
        &nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap()
            .name,
    ]);
    let text = stdout(&doctor);
    assert!(
        text.contains("seal key") && text.contains("sealing has stopped"),
        "{text}"
    );
    assert!(!doctor.status.success(), "{text}");
    stop(&mut d);
}

/// A trigger added to discard audit records (`RAISE(IGNORE)`) cannot make an action
/// go ahead unrecorded: the request it discards fails, the trigger is removed at once
/// and the alarm raised (recorded with the trigger's name); the next request works.
#[test]
fn a_trigger_that_discards_records_fails_the_request_and_is_removed_at_once() {
    let mut d = TestDaemon::start("");
    assert!(d.cli(&["status"]).status.success());
    Connection::open(d.db())
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER evil BEFORE INSERT ON audit BEGIN SELECT RAISE(IGNORE); END;",
        )
        .unwrap();
    let out = d.cli(&["status"]);
    assert!(
        !out.status.success(),
        "answered while its record was discarded"
    );
    assert!(
        crate::common::stderr(&out).contains("audit"),
        "{}",
        crate::common::stderr(&out)
    );
    let st = status_json(&d);
    let reason = st["audit"]["alarm"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("discarded"), "{st}");
    let triggers: i64 = Connection::open(d.db())
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'evil'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 0);
    let details: String = Connection::open(d.db())
        .unwrap()
        .query_row(
            "SELECT details FROM audit WHERE action = 'audit.chain_broken' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(details.contains("evil"), "{details}");
    stop(&mut d);
}

/// Records cut from the tail with the mark deleted too: the last seal still names the
/// highest record, and the daemon numbers on after it (no seq is given twice).
#[test]
fn a_cut_tail_without_its_mark_is_numbered_on_after_the_last_seal() {
    let (mut d, _seed) = sealed_gateway();
    let sealed: i64 = Connection::open(d.db())
        .unwrap()
        .query_row("SELECT MAX(last_seq) FROM audit_seals", [], |r| r.get(0))
        .unwrap();
    {
        let c = open(&d.db());
        c.execute("DELETE FROM audit WHERE seq > ?1", [sealed - 3])
            .unwrap();
    }
    std::fs::remove_file(crate::common::sidecar(&d.db(), "-audit-mark")).unwrap();
    d.spawn();
    let st = status_json(&d);
    assert_eq!(st["audit"]["alarm"]["name"], "audit_chain_broken", "{st}");
    let actions = audit_actions(&d.db());
    let after: Vec<&(i64, String)> = actions.iter().filter(|a| a.0 > sealed - 3).collect();
    assert!(
        after.iter().all(|(seq, _)| *seq > sealed),
        "a removed seq was given again: {after:?}"
    );
    assert!(
        after.iter().any(|(_, a)| a == "audit.chain_broken"),
        "{after:?}"
    );
    stop(&mut d);
}

/// A record appended while the daemon was stopped, hash and all correct: the daemon
/// stopped cleanly at the mark (the mark says so), so a record after it is not its
/// own and the start raises the alarm. After a crash (no clean stop) records after
/// the mark are the daemon's own last commits and are accepted.
#[test]
fn a_record_appended_while_the_daemon_was_stopped_raises_the_alarm() {
    let mut d = TestDaemon::start("");
    for _ in 0..3 {
        assert!(d.cli(&["status"]).status.success());
    }
    stop(&mut d);
    {
        let c = open(&d.db());
        let mut r = rows(&c);
        let last = r.last().cloned().unwrap();
        r.push(forged(last));
        rewrite_chain(&c, r);
    }
    d.spawn();
    let st = status_json(&d);
    let reason = st["audit"]["alarm"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("while the daemon was stopped"), "{st}");
    stop(&mut d);
    // The chain verifies again (the forgery was hashed right), but verify says the log
    // records tampering.
    let (ok, out) = verify(&d.db(), None);
    assert!(ok, "{out}");
    assert!(
        out.contains("WARNING: the log records tampering")
            && out.contains("while the daemon was stopped"),
        "{out}"
    );

    // A crash right after commits: what follows the mark is accepted.
    let mut d = TestDaemon::start("");
    for _ in 0..3 {
        assert!(d.cli(&["status"]).status.success());
    }
    let mut child = d.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    d.spawn();
    let st = status_json(&d);
    assert!(st["audit"]["alarm"].is_null(), "{st}");
    stop(&mut d);
}

/// Records cut from below the last seal, with the mark rewritten to the new head:
/// `audit verify` without the seed reads the seals (not secret) and finds the log
/// ends before what they cover, as the daemon does at its start.
#[test]
fn verify_without_the_seed_finds_a_log_cut_below_its_seals() {
    let (d, _seed) = sealed_gateway();
    let (_copy, db) = copy_state(d.db().parent().unwrap());
    let sealed: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT MAX(last_seq) FROM audit_seals", [], |r| r.get(0))
        .unwrap();
    let hash: String = {
        let c = open(&db);
        c.execute("DELETE FROM audit WHERE seq > ?1", [sealed - 3])
            .unwrap();
        c.query_row("SELECT hash FROM audit WHERE seq = ?1", [sealed - 3], |r| {
            r.get(0)
        })
        .unwrap()
    };
    std::fs::write(
        crate::common::sidecar(&db, "-audit-mark"),
        format!("{:020} {hash} stopped\n", sealed - 3),
    )
    .unwrap();
    let (ok, text) = verify(&db, None);
    assert!(!ok, "{text}");
    assert!(text.contains("were sealed"), "{text}");
}

/// `verify --db` on the gateway's own database (the daemon's lock file is beside it)
/// is not taken for a copy when its mark and seal key are gone: deleting them with the
/// newest records and their seal made the seed's check pass on a cut log.
#[test]
fn the_gateways_own_database_without_its_mark_and_key_is_not_taken_for_a_copy() {
    let (d, seed) = sealed_gateway();
    let db = d.db();
    let last_epoch: i64 = {
        let c = open(&db);
        let (epoch, first): (i64, i64) = c
            .query_row(
                "SELECT epoch, first_seq FROM audit_seals ORDER BY epoch DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        c.execute("DELETE FROM audit WHERE seq >= ?1", [first])
            .unwrap();
        c.execute("DELETE FROM audit_seals WHERE epoch = ?1", [epoch])
            .unwrap();
        epoch
    };
    assert!(last_epoch > 1);
    std::fs::remove_file(crate::common::sidecar(&db, "-audit-mark")).unwrap();
    std::fs::remove_file(crate::common::sidecar(&db, "-seal-key")).unwrap();
    let (ok, out) = verify(&db, Some(&seed));
    assert!(!ok, "{out}");
    let (ok, out) = verify(&db, None);
    assert!(!ok && out.contains("mark"), "{out}");
    // A copy (no lock, no mark, no key beside it) is still checked from the seed
    // alone: its cut is for the seed and the cloud's copy to show.
    let (_dir, copy) = {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.db");
        Connection::open(&db)
            .unwrap()
            .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
        (dir, copy)
    };
    let (ok, out) = verify(&copy, Some(&seed));
    assert!(ok, "{out}");
}
