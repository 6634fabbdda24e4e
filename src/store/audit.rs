//! The tamper-evident audit log: an append-only, hash-chained table.
//!
//! `hash = SHA-256(prev_hash || canonical(record))`, hex-encoded, where the
//! canonical encoding is a JSON array with a fixed field order and objects with
//! sorted keys (see [`canonical`]). The first record's `prev_hash` is 64 zeros.
//! Changing, deleting or reordering any record breaks the chain at that record.
//! This module only appends and verifies; it never updates or deletes.

use std::cell::RefCell;
use std::fmt;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreResult;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Accepted,
    Refused,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller wants recorded.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub details: serde_json::Value,
}

impl AuditEntry {
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        outcome: Outcome,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome,
            details,
        }
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub ts: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[*k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Compact JSON with object keys sorted at every level: the same value always
/// gives the same bytes, whatever order its keys arrived in.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

/// The canonical encoding hashed for a record:
/// `[seq, ts, actor, action, target, outcome, details]` as compact JSON with
/// object keys sorted at every level.
pub fn canonical(
    seq: i64,
    ts: &str,
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    details: &serde_json::Value,
) -> String {
    let head = serde_json::json!([seq, ts, actor, action, target, outcome]);
    let mut out = String::new();
    write_canonical(&head, &mut out);
    out.pop(); // reopen the array to append details
    out.push(',');
    write_canonical(details, &mut out);
    out.push(']');
    out
}

pub fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

thread_local! {
    /// On the store's writer thread: the head the writer last committed or appended
    /// (seq, hash). `None` elsewhere, where no check is made.
    static EXPECTED_HEAD: RefCell<Option<(i64, String)>> = const { RefCell::new(None) };
    /// Set when an append found the head moved under it (records removed or changed
    /// while the daemon ran); taken by the writer, which raises the alarm.
    static TAMPERED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The newest record's seq and hash. The hash is read as text whatever it is stored
/// as: a hash rewritten as a blob is an altered record for the checks to report, not a
/// log the daemon cannot start on.
fn db_head(conn: &Connection) -> StoreResult<Option<(i64, String)>> {
    Ok(conn
        .query_row(
            "SELECT seq, CAST(hash AS TEXT) FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Makes this thread check every append against the head as it stands now (the
/// writer thread, at start and after a rollback).
pub(crate) fn track_head(conn: &Connection) -> StoreResult<()> {
    let head = db_head(conn)?.unwrap_or((0, GENESIS_HASH.to_string()));
    EXPECTED_HEAD.with(|e| *e.borrow_mut() = Some(head));
    Ok(())
}

/// Whether this thread checks appends (see [`track_head`]).
pub(crate) fn tracking() -> bool {
    EXPECTED_HEAD.with(|e| e.borrow().is_some())
}

/// The next append continues from `head` (seq, hash) whatever the table holds now:
/// numbering goes on after records that were removed, and links to the last one.
pub(crate) fn expect_head(head: (i64, String)) {
    EXPECTED_HEAD.with(|e| *e.borrow_mut() = Some(head));
}

/// Why the head moved under the writer, once.
pub(crate) fn take_tampered() -> Option<String> {
    TAMPERED.with(|t| t.borrow_mut().take())
}

/// Appends one record inside the caller's transaction and returns it.
///
/// On the writer thread, a table whose head is not the one last written means the
/// log was cut or changed underneath: the record then continues from the head as
/// written (no seq is given twice; verify shows the gap) and the tampering is noted.
pub fn append(conn: &Connection, entry: &AuditEntry, ts: &str) -> StoreResult<AuditRecord> {
    let found = db_head(conn)?.unwrap_or((0, GENESIS_HASH.to_string()));
    let expected = EXPECTED_HEAD.with(|e| e.borrow().clone());
    let (last_seq, prev_hash) = match expected {
        Some(exp) if exp != found => {
            let why = if found.0 < exp.0 {
                format!(
                    "records {}..={} were removed from the audit log while the daemon ran",
                    found.0 + 1,
                    exp.0
                )
            } else if found.0 == exp.0 {
                format!(
                    "the audit log was changed while the daemon ran: record {}, the last the daemon wrote, no longer has the hash it was written with (changed and re-hashed)",
                    exp.0
                )
            } else {
                format!(
                    "the audit log was changed while the daemon ran: it ends at record {}, after record {}, the last the daemon wrote",
                    found.0, exp.0
                )
            };
            TAMPERED.with(|t| *t.borrow_mut() = Some(why));
            // Removed or edited: continue from the daemon's own head (verify shows the
            // gap or the break). Added: after them, or the next seq would be taken
            // and every audited action refused from then on.
            if found.0 > exp.0 {
                found
            } else {
                exp
            }
        }
        _ => found,
    };
    let seq = last_seq + 1;
    let outcome = entry.outcome.as_str();
    let canon = canonical(
        seq,
        ts,
        &entry.actor,
        &entry.action,
        &entry.target,
        outcome,
        &entry.details,
    );
    let hash = chain_hash(&prev_hash, &canon);
    let mut details_text = String::new();
    write_canonical(&entry.details, &mut details_text);
    let stored = conn.execute(
        "INSERT INTO audit (seq, ts, actor, action, target, outcome, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            seq,
            ts,
            entry.actor,
            entry.action,
            entry.target,
            outcome,
            details_text,
            prev_hash,
            hash
        ],
    )?;
    if stored != 1 {
        // A trigger someone added (`RAISE(IGNORE)`) discarded it: the action it records
        // must not go ahead as if it were recorded, and the tampering is noted for the
        // writer to raise the alarm (and remove the trigger) after this batch.
        let why = format!(
            "audit record {seq} ({}) was not stored: something on the audit table discarded it",
            entry.action
        );
        TAMPERED.with(|t| *t.borrow_mut() = Some(why.clone()));
        return Err(super::StoreError::AuditNotStored(why));
    }
    super::audit_guard::note_append();
    if tracking() {
        expect_head((seq, hash.clone()));
    }
    Ok(AuditRecord {
        seq,
        ts: ts.to_string(),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        outcome: outcome.to_string(),
        details: entry.details.clone(),
        prev_hash,
        hash,
    })
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<(AuditRecord, String)> {
    let details_text: String = r.get(6)?;
    let details = serde_json::from_str(&details_text)
        .unwrap_or(serde_json::Value::String(details_text.clone()));
    Ok((
        AuditRecord {
            seq: r.get(0)?,
            ts: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            outcome: r.get(5)?,
            details,
            prev_hash: r.get(7)?,
            hash: r.get(8)?,
        },
        details_text,
    ))
}

const SELECT: &str =
    "SELECT seq, ts, actor, action, target, outcome, details, prev_hash, hash FROM audit";

/// The newest `limit` records, oldest first; or those after `after_seq`.
pub fn tail(
    conn: &Connection,
    limit: usize,
    after_seq: Option<i64>,
) -> StoreResult<Vec<AuditRecord>> {
    tail_matching(conn, limit, after_seq, &AuditFilter::default())
}

/// Which records a reader wants: any of `actions` (all when empty), from `actor`, on
/// `target` (exact values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actions: Vec<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
}

/// As [`tail`], only the records `filter` matches.
pub fn tail_matching(
    conn: &Connection,
    limit: usize,
    after_seq: Option<i64>,
    filter: &AuditFilter,
) -> StoreResult<Vec<AuditRecord>> {
    let limit = limit.min(10_000) as i64;
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    if let Some(after) = after_seq {
        args.push(after.into());
        conds.push(format!("seq > ?{}", args.len()));
    }
    if !filter.actions.is_empty() {
        let mut marks = Vec::new();
        for a in &filter.actions {
            args.push(a.clone().into());
            marks.push(format!("?{}", args.len()));
        }
        conds.push(format!("action IN ({})", marks.join(", ")));
    }
    for (column, value) in [("actor", &filter.actor), ("target", &filter.target)] {
        if let Some(v) = value {
            args.push(v.clone().into());
            conds.push(format!("{column} = ?{}", args.len()));
        }
    }
    args.push(limit.into());
    let where_ = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let order = if after_seq.is_some() { "ASC" } else { "DESC" };
    let mut stmt = conn.prepare(&format!(
        "{SELECT}{where_} ORDER BY seq {order} LIMIT ?{}",
        args.len()
    ))?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), row_to_record)?;
    let mut out: Vec<AuditRecord> = rows
        .map(|r| r.map(|(rec, _)| rec))
        .collect::<Result<_, _>>()?;
    if after_seq.is_none() {
        out.reverse();
    }
    out.shrink_to_fit();
    Ok(out)
}

/// Result of walking the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub records: u64,
    /// seq and hash of the last record that verified.
    pub head_seq: i64,
    pub head_hash: String,
    /// The first record that does not verify, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The high-water mark's seq, when a mark was compared (see `audit_guard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_seq: Option<i64>,
    /// The forward-secure seals, when checked with the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seals: Option<super::audit_seal::SealReport>,
    /// Tampering the daemon found and recorded in the log itself (`audit.chain_broken`
    /// records): the chain may verify again after it, but the log says it happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tampering_recorded: Vec<RecordedTampering>,
}

/// Walks the whole chain in order and stops at the first record that fails.
/// An `audit.chain_broken` record: when the daemon found tampering, and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedTampering {
    pub seq: i64,
    pub ts: String,
    pub reason: String,
}

/// Whether the log holds a record of `action` on `target` with `outcome` (a scan: for
/// questions asked rarely, such as whether a device ever joined here).
pub fn recorded(conn: &Connection, action: &str, target: &str, outcome: &str) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM audit WHERE action = ?1 AND target = ?2 AND outcome = ?3)",
        )?
        .query_row(params![action, target, outcome], |r| r.get(0))?)
}

/// Whether a record's stored details are in the canonical form they were written in.
pub(crate) fn details_as_written(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
        let mut written = String::with_capacity(text.len());
        write_canonical(&v, &mut written);
        written == text
    })
}

/// A value of another type than its column's where a record is read: written by
/// hand, so the record is altered (a blob for text, a real for a seq).
pub(crate) fn mistyped(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
    )
}

pub fn verify(conn: &Connection) -> StoreResult<VerifyReport> {
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY seq ASC"))?;
    let mut rows = stmt.query([])?;
    let mut expected_seq = 1i64;
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut report = VerifyReport {
        ok: true,
        records: 0,
        head_seq: 0,
        head_hash: GENESIS_HASH.to_string(),
        first_bad_seq: None,
        reason: None,
        mark_seq: None,
        seals: None,
        tampering_recorded: Vec::new(),
    };
    let fail = |mut report: VerifyReport, seq: i64, reason: String| {
        report.ok = false;
        report.first_bad_seq = Some(seq);
        report.reason = Some(reason);
        report
    };
    while let Some(row) = rows.next()? {
        let (rec, details_text) = match row_to_record(row) {
            Ok(r) => r,
            // A field stored as another type (a blob for text) was written by hand:
            // a broken record, not a log that cannot be read.
            Err(e) if mistyped(&e) => {
                return Ok(fail(
                    report,
                    expected_seq,
                    format!("record {expected_seq} was altered: a field is not of its type ({e})"),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        if rec.seq != expected_seq {
            return Ok(fail(
                report,
                expected_seq,
                format!(
                    "record {expected_seq} is missing (the next record present is {})",
                    rec.seq
                ),
            ));
        }
        if rec.prev_hash != prev_hash {
            return Ok(fail(
                report,
                rec.seq,
                format!(
                    "record {} does not link to the record before it (prev_hash differs)",
                    rec.seq
                ),
            ));
        }
        let details: serde_json::Value = match serde_json::from_str(&details_text) {
            Ok(v) => v,
            Err(_) => {
                return Ok(fail(
                    report,
                    rec.seq,
                    format!("record {} has unreadable details", rec.seq),
                ))
            }
        };
        // Details are stored as written, in canonical form: text that reads as the
        // same JSON but is not that form (a key given twice, of which a reader sees the
        // last) was not written by the daemon.
        if !details_as_written(&details_text) {
            return Ok(fail(
                report,
                rec.seq,
                format!(
                    "record {} was altered: its details are not as they were written",
                    rec.seq
                ),
            ));
        }
        let canon = canonical(
            rec.seq,
            &rec.ts,
            &rec.actor,
            &rec.action,
            &rec.target,
            &rec.outcome,
            &details,
        );
        let hash = chain_hash(&prev_hash, &canon);
        if hash != rec.hash {
            return Ok(fail(
                report,
                rec.seq,
                format!(
                    "record {} was altered: its content does not match its hash",
                    rec.seq
                ),
            ));
        }
        if rec.action == "audit.chain_broken" {
            report.tampering_recorded.push(RecordedTampering {
                seq: rec.seq,
                ts: rec.ts.clone(),
                reason: details["reason"].as_str().unwrap_or_default().to_string(),
            });
        }
        report.records += 1;
        report.head_seq = rec.seq;
        report.head_hash = hash.clone();
        prev_hash = hash;
        expected_seq += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> Connection {
        super::super::schema::in_memory_for_tests()
    }

    #[test]
    fn canonical_sorts_keys_at_every_level() {
        let a = canonical(
            1,
            "t",
            "a",
            "x",
            "y",
            "accepted",
            &json!({"b": 1, "a": {"d": 2, "c": [3, {"f": 1, "e": 0}]}}),
        );
        assert_eq!(
            a,
            r#"[1,"t","a","x","y","accepted",{"a":{"c":[3,{"e":0,"f":1}],"d":2},"b":1}]"#
        );
    }

    #[test]
    fn chain_verifies_and_detects_tampering() {
        let c = db();
        for i in 0..5 {
            append(
                &c,
                &AuditEntry::new(
                    "system",
                    "test",
                    format!("t{i}"),
                    Outcome::Accepted,
                    json!({"i": i}),
                ),
                "2026-01-01T00:00:00.000Z",
            )
            .unwrap();
        }
        let r = verify(&c).unwrap();
        assert!(r.ok);
        assert_eq!(r.records, 5);
        c.execute_batch(
            "DROP TRIGGER audit_no_update; UPDATE audit SET target = 'evil' WHERE seq = 3",
        )
        .unwrap();
        let r = verify(&c).unwrap();
        assert!(!r.ok);
        assert_eq!(r.first_bad_seq, Some(3));
    }

    /// Edits that keep the hash right: a key given twice (readers see the last one),
    /// and a field stored as a blob. Both are altered records, not a log that cannot
    /// be read.
    #[test]
    fn details_not_as_written_and_fields_of_another_type_are_altered_records() {
        let c = db();
        for i in 0..3 {
            append(
                &c,
                &AuditEntry::new(
                    "local:uid=0",
                    "test",
                    format!("t{i}"),
                    Outcome::Accepted,
                    json!({"user": "alice"}),
                ),
                "2026-01-01T00:00:00.000Z",
            )
            .unwrap();
        }
        c.execute_batch(
            r#"DROP TRIGGER audit_no_update;
               UPDATE audit SET details = '{"user":"mallory","user":"alice"}' WHERE seq = 2"#,
        )
        .unwrap();
        let r = verify(&c).unwrap();
        assert!(!r.ok);
        assert_eq!(r.first_bad_seq, Some(2), "{r:?}");
        assert!(r.reason.unwrap().contains("details"));
        c.execute_batch(
            r#"UPDATE audit SET details = '{"user":"alice"}' WHERE seq = 2;
               UPDATE audit SET actor = CAST(actor AS BLOB) WHERE seq = 3"#,
        )
        .unwrap();
        let r = verify(&c).unwrap();
        assert!(!r.ok);
        assert_eq!(r.first_bad_seq, Some(3), "{r:?}");
        assert!(r.reason.unwrap().contains("not of its type"));
    }

    #[test]
    fn updates_and_deletes_are_refused_by_the_schema() {
        let c = db();
        append(
            &c,
            &AuditEntry::new("system", "test", "x", Outcome::Refused, json!({})),
            "t",
        )
        .unwrap();
        assert!(c.execute("UPDATE audit SET actor = 'x'", []).is_err());
        assert!(c.execute("DELETE FROM audit", []).is_err());
    }
}
