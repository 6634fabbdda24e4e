//! What guards the audit log beyond its hash chain: the high-water mark, the chain
//! head summary (`status`, MQTT `info`) and the start-up check.
//!
//! The **high-water mark** is a small file beside the database (`<db>-audit-mark`)
//! holding the seq and hash of the newest record the daemon committed, rewritten in
//! place and synced after every commit that appended to the log. A log cut short or
//! re-hashed no longer reaches the mark, which `audit verify` and the start-up check
//! see without any seed.
//!
//! The **start-up check** restores the append-only triggers when they were dropped,
//! checks the tail of the chain and compares the head with the mark. Whatever it
//! finds is appended as an `audit.chain_broken` record (and an MQTT alarm) before
//! anything else is written, rather than appending silently onto a broken chain.
//!
//! This module reads the log and writes the mark; appending is `audit`'s job.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::audit::{self, GENESIS_HASH};
use super::{StoreError, StoreResult};

thread_local! {
    /// Set by `audit::append` on the writer thread; the writer rewrites the mark
    /// after a commit that appended.
    static APPENDED: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn note_append() {
    APPENDED.with(|a| a.set(true));
}

pub(crate) fn take_appended() -> bool {
    APPENDED.with(|a| a.replace(false))
}

/// The mark file beside a database.
pub fn mark_path(db: &Path) -> PathBuf {
    super::sidecar(db, "-audit-mark")
}

/// The newest record the daemon committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub seq: i64,
    pub hash: String,
}

pub fn read_mark(path: &Path) -> StoreResult<Option<Mark>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Invalid(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let bad = || StoreError::Invalid(format!("the audit mark {} is damaged", path.display()));
    let line = text.trim_end();
    let line = line.strip_suffix(STOPPED).unwrap_or(line);
    let (seq, hash) = line.split_once(' ').ok_or_else(bad)?;
    let seq: i64 = seq.parse().map_err(|_| bad())?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(Some(Mark {
        seq,
        hash: hash.to_string(),
    }))
}

/// What the mark ends with when the daemon stopped cleanly after writing it.
const STOPPED: &str = " stopped";

/// Whether the mark says the daemon stopped cleanly at it: records after such a mark
/// were not appended by the daemon (it appends only while running, and rewrites the
/// mark without this at its start).
pub fn stopped_at_mark(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.trim_end().ends_with(STOPPED))
}

/// Rewrites the mark in place (one fixed-length line) and syncs it.
pub fn write_mark(path: &Path, mark: &Mark) -> std::io::Result<()> {
    write_mark_line(path, mark, false)
}

/// The mark a clean stop leaves (see [`stopped_at_mark`]).
pub fn write_stopped_mark(path: &Path, mark: &Mark) -> std::io::Result<()> {
    write_mark_line(path, mark, true)
}

fn write_mark_line(path: &Path, mark: &Mark, stopped: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let line = format!(
        "{:020} {}{}\n",
        mark.seq,
        mark.hash,
        if stopped { STOPPED } else { "" }
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.set_len(line.len() as u64)?;
    f.sync_data()
}

/// The newest record's seq and hash (seq 0 and the genesis hash when empty).
pub fn head(conn: &Connection) -> StoreResult<Mark> {
    Ok(conn
        .query_row(
            "SELECT seq, CAST(hash AS TEXT) FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok(Mark {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            },
        )
        .optional()?
        .unwrap_or(Mark {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }))
}

/// The chain head as `status` and the MQTT `info` show it.
pub fn summary(conn: &Connection) -> StoreResult<serde_json::Value> {
    let h = head(conn)?;
    let records: i64 = conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?;
    let seal = super::audit_seal::last_seal(conn)?;
    Ok(serde_json::json!({
        "head_seq": h.seq,
        "head_hash": h.hash,
        "records": records,
        "sealed_epochs": seal.as_ref().map_or(0, |s| s.epoch),
        "sealed_through_seq": seal.as_ref().map_or(0, |s| s.last_seq),
    }))
}

/// How the chain head compares with the mark.
pub fn compare_with_mark(conn: &Connection, mark: &Mark) -> StoreResult<Result<i64, String>> {
    let h = head(conn)?;
    if h.seq < mark.seq {
        return Ok(Err(format!(
            "the log ends at record {} but the daemon had written up to record {}: the newest records were removed",
            h.seq, mark.seq
        )));
    }
    if mark.seq > 0 {
        let at: Option<String> = conn
            .query_row("SELECT hash FROM audit WHERE seq = ?1", [mark.seq], |r| {
                r.get(0)
            })
            .optional()?;
        if at.as_deref() != Some(mark.hash.as_str()) {
            return Ok(Err(format!(
                "record {} no longer has the hash the daemon wrote: the log was rewritten (changed and re-hashed, or renumbered)",
                mark.seq
            )));
        }
    }
    Ok(Ok(h.seq - mark.seq))
}

const TRIGGERS: [(&str, &str); 4] = [
    (
        "audit_no_update",
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    ),
    (
        "audit_no_delete",
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
         BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    ),
    (
        "audit_seals_no_update",
        "CREATE TRIGGER audit_seals_no_update BEFORE UPDATE ON audit_seals
         BEGIN SELECT RAISE(ABORT, 'the audit seals are append-only'); END;",
    ),
    (
        "audit_seals_no_delete",
        "CREATE TRIGGER audit_seals_no_delete BEFORE DELETE ON audit_seals
         BEGIN SELECT RAISE(ABORT, 'the audit seals are append-only'); END;",
    ),
];

/// Drops every trigger on the audit tables that is not one of ours (one that
/// discards or rewrites records as they are appended); returns their names.
pub fn drop_foreign_triggers(conn: &Connection) -> StoreResult<Vec<String>> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' \
             AND tbl_name IN ('audit', 'audit_seals') ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut dropped = Vec::new();
    for name in names {
        if TRIGGERS.iter().any(|(ours, _)| *ours == name) {
            continue;
        }
        conn.execute_batch(&format!("DROP TRIGGER \"{}\"", name.replace('"', "\"\"")))?;
        dropped.push(name);
    }
    Ok(dropped)
}

/// Re-creates any append-only trigger that was dropped; returns their names.
pub fn restore_triggers(conn: &Connection) -> StoreResult<Vec<String>> {
    let mut restored = Vec::new();
    for (name, sql) in TRIGGERS {
        let present: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
            [name],
            |r| r.get(0),
        )?;
        if present == 0 {
            conn.execute_batch(sql)?;
            restored.push(name.to_string());
        }
    }
    Ok(restored)
}

/// How many of the newest records the start-up check re-hashes.
pub const TAIL_CHECKED: i64 = 1000;

/// Checks that the newest records are numbered without gaps, link and hash.
pub fn check_tail(conn: &Connection, n: i64) -> StoreResult<Result<(), String>> {
    let h = head(conn)?;
    let from = (h.seq - n + 1).max(1);
    let records = match audit::tail(conn, n as usize, Some(from - 1)) {
        Ok(r) => r,
        Err(StoreError::Sql(e)) if audit::mistyped(&e) => {
            return Ok(Err(format!(
                "a record after record {} was altered: a field is not of its type ({e})",
                from - 1
            )))
        }
        Err(e) => return Err(e),
    };
    let mut prev: Option<audit::AuditRecord> = None;
    for rec in &records {
        let expected_seq = prev.as_ref().map_or(from, |p| p.seq + 1);
        // A gap the daemon found and recorded already (an `audit.chain_broken` record
        // numbered after the removed records) is not reported again at every start.
        let acknowledged = rec.action == "audit.chain_broken";
        if rec.seq != expected_seq && !(acknowledged && rec.seq > expected_seq) {
            return Ok(Err(format!(
                "record {expected_seq} is missing (the next record present is {})",
                rec.seq
            )));
        }
        if let Some(p) = &prev {
            if rec.prev_hash != p.hash && !acknowledged {
                return Ok(Err(format!(
                    "record {} does not link to the record before it",
                    rec.seq
                )));
            }
        } else if rec.seq == 1 && rec.prev_hash != GENESIS_HASH {
            return Ok(Err("record 1 does not start the chain".into()));
        }
        let canon = audit::canonical(
            rec.seq,
            &rec.ts,
            &rec.actor,
            &rec.action,
            &rec.target,
            &rec.outcome,
            &rec.details,
        );
        if audit::chain_hash(&rec.prev_hash, &canon) != rec.hash {
            return Ok(Err(format!(
                "record {} was altered: its content does not match its hash",
                rec.seq
            )));
        }
        prev = Some(rec.clone());
    }
    if let Some(first) = records.first() {
        if first.seq != from && first.action != "audit.chain_broken" {
            return Ok(Err(format!("record {from} is missing")));
        }
    }
    // The hash covers the details as parsed; their text must also be as written (a key
    // given twice reads as its last value, which the hash may not show).
    let mut stmt =
        conn.prepare("SELECT seq, CAST(details AS TEXT) FROM audit WHERE seq >= ?1 ORDER BY seq")?;
    let mut rows = stmt.query([from])?;
    while let Some(r) = rows.next()? {
        let (seq, text): (i64, Option<String>) = (r.get(0)?, r.get(1)?);
        if !text.as_deref().is_some_and(audit::details_as_written) {
            return Ok(Err(format!(
                "record {seq} was altered: its details are not as they were written"
            )));
        }
    }
    Ok(Ok(()))
}

/// What the start-up check found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StartupCheck {
    /// Why the log cannot be trusted as it stands; `None` when it can.
    pub broken: Option<String>,
    pub triggers_restored: Vec<String>,
    /// Records after the mark that chain correctly (a stop before the mark was
    /// rewritten, e.g. a crash): accepted, and noted.
    pub after_mark: i64,
    /// Whether a mark existed (a new database has none).
    pub had_mark: bool,
    /// The new life taken because the database lost records the daemon had written.
    pub new_life: Option<String>,
}

/// Restores the triggers and checks the tail and the mark, in the caller's
/// transaction. Appends nothing: the caller records what was found.
pub fn startup_check(
    conn: &Connection,
    mark_file: &Path,
    seal_key_file: &Path,
    first_with_marks: bool,
) -> StoreResult<StartupCheck> {
    let mut out = StartupCheck {
        triggers_restored: restore_triggers(conn)?,
        ..StartupCheck::default()
    };
    let mut problems = Vec::new();
    if !out.triggers_restored.is_empty() {
        problems.push(format!(
            "the append-only triggers had been dropped ({}); restored",
            out.triggers_restored.join(", ")
        ));
    }
    let foreign = drop_foreign_triggers(conn)?;
    if !foreign.is_empty() {
        problems.push(format!(
            "triggers that are not the daemon's were on the audit tables ({}); removed",
            foreign.join(", ")
        ));
    }
    if let Err(e) = check_tail(conn, TAIL_CHECKED)? {
        problems.push(e);
    }
    match read_mark(mark_file) {
        Ok(Some(mark)) => {
            out.had_mark = true;
            match compare_with_mark(conn, &mark)? {
                // The daemon stopped cleanly at the mark: nothing it wrote follows it.
                Ok(n) if n > 0 && stopped_at_mark(mark_file) => problems.push(format!(
                    "{n} record(s) after record {} were appended while the daemon was stopped (it stopped cleanly there)",
                    mark.seq
                )),
                Ok(n) => out.after_mark = n,
                Err(e) => problems.push(e),
            }
        }
        Ok(None) => {
            let h = head(conn)?;
            if h.seq > 0 && !first_with_marks {
                problems.push(format!(
                    "the audit mark {} is missing but the log holds {} records",
                    mark_file.display(),
                    h.seq
                ));
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    let last = super::audit_seal::last_seal(conn)?;
    match super::audit_seal::read_key(seal_key_file) {
        Ok(Some(key)) => {
            let last_epoch = last.as_ref().map_or(0, |s| s.epoch);
            if key.epoch > last_epoch + 1 {
                problems.push(format!(
                    "the seal key is at epoch {} but the last seal is epoch {last_epoch}: sealed epochs were removed",
                    key.epoch
                ));
            }
        }
        // Sealing was set up (there are seals) and its key is gone: sealing would stop
        // without a word, and what follows could be rewritten unseen.
        Ok(None) => {
            if let Some(s) = &last {
                problems.push(format!(
                    "the seal key file {} is missing but {} epoch(s) were sealed: sealing has stopped",
                    seal_key_file.display(),
                    s.epoch
                ));
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    if last.is_none() {
        if let Some(seq) = super::audit_seal::sealing_started(conn)? {
            problems.push(format!(
                "sealing was set up (record {seq}) but no seal is left: the seals were removed"
            ));
        }
    }
    if let Some(s) = &last {
        if s.last_seq > head(conn)?.seq {
            problems.push(format!(
                "records up to {} were sealed but the log ends before them",
                s.last_seq
            ));
        }
    }
    if !problems.is_empty() {
        out.broken = Some(problems.join("; "));
    }
    Ok(out)
}

/// `audit verify`: the chain, then the head against the mark. The mark is read
/// first, so a commit racing the check cannot look like a truncation. `strict` (the
/// daemon is stopped) also refuses records after the mark: nothing but the daemon
/// appends, and it rewrites the mark after each commit and at its start.
pub fn verify(
    conn: &Connection,
    mark_file: &Path,
    strict: bool,
) -> StoreResult<audit::VerifyReport> {
    let mark = read_mark(mark_file);
    let mut report = audit::verify(conn)?;
    if !report.ok {
        return Ok(report);
    }
    let fail = |mut r: audit::VerifyReport, seq: i64, why: String| {
        r.ok = false;
        r.first_bad_seq = Some(seq);
        r.reason = Some(why);
        r
    };
    // The seals (not secret) say how far the log went when it was sealed: a log that
    // ends before them was cut, whatever the mark says (the seed checks their MACs).
    if let Some(s) = super::audit_seal::last_seal(conn)? {
        if s.last_seq > report.head_seq {
            let at = report.head_seq + 1;
            let why = format!(
                "records up to {} were sealed (epoch {}) but the log ends at record {}: records were cut",
                s.last_seq, s.epoch, report.head_seq
            );
            return Ok(fail(report, at, why));
        }
    }
    match mark? {
        // A copy made with SQLite's backup API has no mark beside it: the chain is
        // all there is to check (the CLI says so; the daemon alarms on a missing mark).
        None => Ok(report),
        Some(mark) => {
            report.mark_seq = Some(mark.seq);
            match compare_with_mark(conn, &mark)? {
                Err(why) => {
                    let at = mark.seq.min(report.head_seq + 1);
                    Ok(fail(report, at, why))
                }
                Ok(after) if strict && after > 0 => {
                    let at = mark.seq + 1;
                    Ok(fail(
                        report,
                        at,
                        format!(
                            "{after} record(s) after the high-water mark (record {}): appended outside the daemon, or the daemon stopped before rewriting the mark (start it once, then verify again)",
                            mark.seq
                        ),
                    ))
                }
                Ok(_) => Ok(report),
            }
        }
    }
}

/// Queues the `audit_chain_broken` alarm for MQTT (never dropped: a lifecycle-class
/// message on `<prefix>/alarm`) and records it in the log, in the caller's transaction.
pub fn record_broken(
    conn: &Connection,
    gateway_id: &str,
    why: &str,
    details: serde_json::Value,
) -> StoreResult<()> {
    let mut details = details;
    details["reason"] = serde_json::json!(why);
    super::record_audit(
        conn,
        gateway_id,
        &audit::AuditEntry::new(
            "system",
            "audit.chain_broken",
            "audit",
            audit::Outcome::Failed,
            details.clone(),
        ),
    )?;
    let mut data = serde_json::json!({"alarm": ALARM});
    data["details"] = details;
    super::outbox::append(
        conn,
        gateway_id,
        &super::outbox::NewMessage {
            kind: super::outbox::MessageKind::Lifecycle,
            device: None,
            topic: "alarm".into(),
            retain: false,
            data,
            event_time: std::time::SystemTime::now(),
        },
    )?;
    Ok(())
}

/// On the writer thread, after a batch in which an append found the head moved:
/// restores the triggers and records the alarm in a transaction of its own.
pub(crate) fn tampered_while_running(conn: &Connection, why: &str, stats: &super::WriterStats) {
    tracing::error!(alarm = ALARM, reason = %why, "the audit log was tampered with while the daemon ran");
    stats.raise_audit_alarm(why.to_string());
    let gw = stats.gateway_id.get().cloned().unwrap_or_default();
    let result = (|| -> StoreResult<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let restored = restore_triggers(conn)?;
        // A trigger of someone else's that discards records would discard this one too.
        let removed = drop_foreign_triggers(conn)?;
        record_broken(
            conn,
            &gw,
            why,
            serde_json::json!({"triggers_restored": restored, "triggers_removed": removed, "during": "run"}),
        )?;
        conn.execute_batch("COMMIT")?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = conn.execute_batch("ROLLBACK");
        let _ = audit::track_head(conn);
        tracing::error!(error = %e, "cannot record the audit alarm");
    }
}

/// Notes `gateway_id` as the gateway the database runs as, and returns the one it ran
/// as before when that was another (none for a new or upgraded database).
fn ran_as_another_gateway(conn: &Connection, gateway_id: &str) -> StoreResult<Option<String>> {
    let before: Option<String> = conn
        .query_row(
            "SELECT gateway_id FROM gateway_life WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if before.as_deref() != Some(gateway_id) {
        conn.execute(
            "UPDATE gateway_life SET gateway_id = ?1 WHERE id = 1",
            [gateway_id],
        )?;
    }
    Ok(before.filter(|b| b != gateway_id))
}

/// The alarm's name in `status`, MQTT and the log.
pub const ALARM: &str = "audit_chain_broken";

/// The daemon's start-up check: restores, checks, records what it found (a broken
/// chain as `audit.chain_broken` plus the MQTT alarm, records found after the mark as
/// `audit.mark_recovered`) and raises the alarm in the writer's status.
pub async fn on_start(
    writer: &super::Writer,
    db: &Path,
    gateway_id: &str,
    first_with_marks: bool,
) -> StoreResult<StartupCheck> {
    let (mark, key) = (mark_path(db), super::audit_seal::key_path(db));
    let _ = writer.stats().gateway_id.set(gateway_id.to_string());
    let gw = gateway_id.to_string();
    let check = writer
        .write(move |c| {
            let mut check = startup_check(c, &mark, &key, first_with_marks)?;
            if let Some(other) = ran_as_another_gateway(c, &gw)? {
                let why = format!(
                    "this database was last run as gateway `{}`, not `{gw}`: it was copied from another gateway, or `[gateway] id` was changed",
                    crate::output::one_line(&other)
                );
                check.broken = Some(match check.broken.take() {
                    Some(b) => format!("{b}; {why}"),
                    None => why,
                });
            }
            if let Some(why) = &check.broken {
                // Records the mark names but the table lacks were removed: number on
                // after them and link to the last one written, so no seq is reused.
                // The mark, or the last seal when the mark is gone or was rewritten
                // lower: whichever names the higher record.
                let mut after = head(c)?;
                if let Ok(Some(m)) = read_mark(&mark) {
                    if m.seq > after.seq {
                        after = m;
                    }
                }
                if let Some(s) = super::audit_seal::last_seal(c)? {
                    if s.last_seq > after.seq {
                        after = Mark {
                            seq: s.last_seq,
                            hash: s.head_hash,
                        };
                    }
                }
                let mut details = serde_json::json!({"triggers_restored": check.triggers_restored});
                if after.seq > head(c)?.seq {
                    audit::expect_head((after.seq, after.hash));
                    // The database lost what the daemon had committed (records cut, a
                    // WAL removed after a crash): the outbox's seqs went back with it and
                    // would be used again in the same life. A new life, as a restore
                    // takes, so consumers ordering by (life, seq) take what follows as
                    // newer than what they had.
                    let previous = super::outbox::life(c)?;
                    let life = super::outbox::renew_life(c)?;
                    check.new_life = Some(life.clone());
                    details["previous_life"] = serde_json::json!(previous);
                    details["life"] = serde_json::json!(life);
                }
                record_broken(c, &gw, why, details)?;
                // Already being recorded: not a second alarm.
                let _ = audit::take_tampered();
            } else if check.after_mark > 0 {
                super::record_audit(
                    c,
                    &gw,
                    &audit::AuditEntry::new(
                        "system",
                        "audit.mark_recovered",
                        "audit",
                        audit::Outcome::Accepted,
                        serde_json::json!({"records_after_mark": check.after_mark}),
                    ),
                )?;
            } else {
                // Nothing appended: write the mark now, as the running daemon's (a new or
                // upgraded database has none; a clean stop left one that says stopped).
                note_append();
            }
            Ok(check)
        })
        .await?;
    if let Some(life) = &check.new_life {
        tracing::warn!(%life, "the database lost records the daemon had written: its messages are numbered in a new life from now on");
    }
    if let Some(why) = &check.broken {
        tracing::error!(alarm = ALARM, reason = %why, "the audit log was tampered with or damaged");
        writer.stats().raise_audit_alarm(why.clone());
    } else if check.after_mark > 0 {
        tracing::warn!(records = check.after_mark, "audit records found after the high-water mark (the daemon stopped before rewriting it); accepted");
    }
    Ok(check)
}

/// Seals what was appended since the last seal, when sealing is set up. A failure
/// that means the seals were tampered with raises the alarm.
pub async fn seal_now(
    writer: &super::Writer,
    db: &Path,
    gateway_id: &str,
) -> StoreResult<Option<super::audit_seal::Seal>> {
    let key_file = super::audit_seal::key_path(db);
    let Some(key) = super::audit_seal::read_key(&key_file)? else {
        return Ok(None);
    };
    let ts = crate::model::now_rfc3339();
    let gw = gateway_id.to_string();
    // Once the alarm is raised (and recorded), sealing goes on over removed epochs: the
    // evidence stays in the seals, and what is written after it is not left unsealed.
    let over_gap = writer.stats().audit_alarm().is_some();
    let sealed = writer
        .write(move |c| {
            if super::audit_seal::last_seal(c)?.is_none() {
                // `audit seal init` works on the files alone and writes no record: the
                // first seal says that sealing started, in a record it covers.
                super::record_audit(
                    c,
                    &gw,
                    &audit::AuditEntry::new(
                        "system",
                        "audit.sealing_started",
                        "audit",
                        audit::Outcome::Accepted,
                        serde_json::json!({"epoch": key.epoch}),
                    ),
                )?;
            }
            super::audit_seal::seal(c, key, &ts, over_gap)
        })
        .await;
    match sealed {
        Ok((seal, next)) => {
            // Committed: now the previous key is overwritten by the next one.
            super::audit_seal::write_key(&key_file, &next, false)?;
            drop(next);
            tracing::debug!(
                epoch = seal.epoch,
                last_seq = seal.last_seq,
                "audit epoch sealed"
            );
            Ok(Some(seal))
        }
        Err(StoreError::Invalid(why)) => {
            if writer.stats().audit_alarm().is_none() {
                tracing::error!(alarm = ALARM, reason = %why, "cannot seal the audit log");
                let gw = gateway_id.to_string();
                let why2 = why.clone();
                writer
                    .write(move |c| {
                        record_broken(c, &gw, &why2, serde_json::json!({"during": "seal"}))
                    })
                    .await?;
                writer.stats().raise_audit_alarm(why.clone());
            }
            Err(StoreError::Invalid(why))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::{append, AuditEntry, Outcome};

    fn log(n: usize) -> Connection {
        let c = crate::store::schema::in_memory_for_tests();
        for i in 0..n {
            append(
                &c,
                &AuditEntry::new(
                    "system",
                    "t",
                    format!("{i}"),
                    Outcome::Accepted,
                    serde_json::json!({}),
                ),
                "2026-01-01T00:00:00.000Z",
            )
            .unwrap();
        }
        c
    }

    /// Edits the hash does not show (a key given twice whose last value is the one
    /// written) are found at start-up, and a head hash stored as a blob is read (the
    /// daemon starts and reports it) rather than stopping the start.
    #[test]
    fn the_start_up_check_sees_details_not_as_written_and_reads_a_blob_head() {
        let c = log(2);
        append(
            &c,
            &AuditEntry::new(
                "system",
                "t",
                "x",
                Outcome::Accepted,
                serde_json::json!({"user": "alice"}),
            ),
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap();
        assert_eq!(check_tail(&c, TAIL_CHECKED).unwrap(), Ok(()));
        c.execute_batch(
            r#"DROP TRIGGER audit_no_update;
               UPDATE audit SET details = '{"user":"mallory","user":"alice"}' WHERE seq = 3"#,
        )
        .unwrap();
        let why = check_tail(&c, TAIL_CHECKED).unwrap().unwrap_err();
        assert!(why.contains("record 3") && why.contains("details"), "{why}");
        c.execute_batch(
            r#"UPDATE audit SET details = '{"user":"alice"}' WHERE seq = 3;
               UPDATE audit SET hash = CAST(hash AS BLOB) WHERE seq = 3"#,
        )
        .unwrap();
        assert_eq!(head(&c).unwrap().seq, 3);
        let why = check_tail(&c, TAIL_CHECKED).unwrap().unwrap_err();
        assert!(why.contains("not of its type"), "{why}");
    }

    #[test]
    fn the_mark_sees_truncation_and_rewrites() {
        let c = log(4);
        let mark = head(&c).unwrap();
        assert_eq!(compare_with_mark(&c, &mark).unwrap(), Ok(0));
        c.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 4")
            .unwrap();
        assert!(compare_with_mark(&c, &mark).unwrap().is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        write_mark(&p, &mark).unwrap();
        write_mark(
            &p,
            &Mark {
                seq: 3,
                hash: mark.hash.clone(),
            },
        )
        .unwrap();
        assert_eq!(read_mark(&p).unwrap().unwrap().seq, 3);
    }

    #[test]
    fn the_tail_check_sees_edits_gaps_and_swaps_but_not_a_recorded_gap() {
        let c = log(6);
        assert_eq!(check_tail(&c, TAIL_CHECKED).unwrap(), Ok(()));
        c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
        c.execute("UPDATE audit SET target = 'x' WHERE seq = 4", [])
            .unwrap();
        assert!(check_tail(&c, TAIL_CHECKED)
            .unwrap()
            .unwrap_err()
            .contains("altered"));
        c.execute("DELETE FROM audit WHERE seq = 4", []).unwrap();
        assert!(check_tail(&c, TAIL_CHECKED)
            .unwrap()
            .unwrap_err()
            .contains("missing"));
        // A gap the daemon recorded (its chain_broken record follows it) is not news.
        c.execute("DELETE FROM audit WHERE seq >= 4", []).unwrap();
        let mark = Mark {
            seq: 6,
            hash: "ab".repeat(32),
        };
        audit::expect_head((mark.seq, mark.hash));
        append(
            &c,
            &AuditEntry::new(
                "system",
                "audit.chain_broken",
                "audit",
                Outcome::Failed,
                serde_json::json!({}),
            ),
            "2026-01-01T00:00:01.000Z",
        )
        .unwrap();
        // Numbered after the removed records, and the removal noted.
        assert!(audit::take_tampered()
            .unwrap()
            .contains("records 4..=6 were removed"));
        assert_eq!(head(&c).unwrap().seq, 7);
        assert_eq!(check_tail(&c, TAIL_CHECKED).unwrap(), Ok(()));
    }

    #[test]
    fn dropped_triggers_are_restored_and_reported() {
        let c = log(2);
        c.execute_batch("DROP TRIGGER audit_no_update").unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_mark(&dir.path().join("m"), &head(&c).unwrap()).unwrap();
        let r = startup_check(&c, &dir.path().join("m"), &dir.path().join("k"), false).unwrap();
        assert_eq!(r.triggers_restored, vec!["audit_no_update".to_string()]);
        assert!(r.broken.unwrap().contains("triggers"));
        assert!(c.execute("UPDATE audit SET actor = 'x'", []).is_err());
        let r = startup_check(&c, &dir.path().join("m"), &dir.path().join("k"), false).unwrap();
        assert_eq!(r.broken, None);
    }
}
