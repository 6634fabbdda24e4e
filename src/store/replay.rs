//! The answers already given to requests, by (operation, correlation id), so a request
//! delivered again (a retained request after a reconnect or a restart, a QoS 1
//! duplicate) is answered again instead of being carried out twice.
//!
//! A request is claimed before it is carried out and its answer recorded after, so a
//! gateway that stops in between does not carry it out again either. Bounded by age
//! and row count; pruned on every claim.

use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};

use super::requests::millis;
use super::StoreResult;

/// Requests remembered at most.
pub const MAX_ROWS: i64 = 4096;
/// How long a request is remembered.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What is known about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before: it is claimed now and must be carried out.
    New,
    /// Answered before, with this response.
    Answered(Vec<u8>),
    /// Claimed but never answered: the gateway stopped while carrying it out.
    Interrupted,
}

/// Claims `(operation, correlation_id)` or says how it was seen before.
pub fn claim(
    conn: &Connection,
    operation: &str,
    correlation_id: &str,
    now: SystemTime,
) -> StoreResult<Seen> {
    let before: Option<Option<Vec<u8>>> = conn
        .prepare_cached(
            "SELECT response FROM request_replay WHERE operation = ?1 AND correlation_id = ?2",
        )?
        .query_row(params![operation, correlation_id], |r| r.get(0))
        .optional()?;
    match before {
        Some(Some(response)) => return Ok(Seen::Answered(response)),
        Some(None) => return Ok(Seen::Interrupted),
        None => {}
    }
    conn.prepare_cached(
        "INSERT INTO request_replay (operation, correlation_id, response, created_ms)
         VALUES (?1, ?2, NULL, ?3)",
    )?
    .execute(params![operation, correlation_id, millis(now)])?;
    prune(conn, now)?;
    Ok(Seen::New)
}

/// Records the answer to a claimed request.
pub fn answer(
    conn: &Connection,
    operation: &str,
    correlation_id: &str,
    response: &[u8],
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE request_replay SET response = ?3 WHERE operation = ?1 AND correlation_id = ?2",
    )?
    .execute(params![operation, correlation_id, response])?;
    Ok(())
}

fn prune(conn: &Connection, now: SystemTime) -> StoreResult<()> {
    let cutoff = millis(now) - i64::try_from(MAX_AGE.as_millis()).unwrap_or(i64::MAX);
    conn.prepare_cached("DELETE FROM request_replay WHERE created_ms < ?1")?
        .execute([cutoff])?;
    let rows: i64 = conn
        .prepare_cached("SELECT count(*) FROM request_replay")?
        .query_row([], |r| r.get(0))?;
    if rows > MAX_ROWS {
        conn.prepare_cached(
            "DELETE FROM request_replay WHERE rowid IN (
                 SELECT rowid FROM request_replay ORDER BY created_ms, rowid LIMIT ?1)",
        )?
        .execute([rows - MAX_ROWS])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        super::super::schema::in_memory_for_tests()
    }

    #[test]
    fn requests_are_claimed_once_and_answered_again() {
        let c = db();
        let now = SystemTime::now();
        assert_eq!(claim(&c, "set", "c1", now).unwrap(), Seen::New);
        assert_eq!(claim(&c, "set", "c1", now).unwrap(), Seen::Interrupted);
        answer(&c, "set", "c1", b"{\"status\":\"ok\"}").unwrap();
        assert_eq!(
            claim(&c, "set", "c1", now).unwrap(),
            Seen::Answered(b"{\"status\":\"ok\"}".to_vec())
        );
        // Another operation with the same correlation id is another request.
        assert_eq!(claim(&c, "get", "c1", now).unwrap(), Seen::New);
    }

    #[test]
    fn memory_is_bounded_by_rows_and_age() {
        let c = db();
        let t0 = SystemTime::now();
        for i in 0..(MAX_ROWS + 10) {
            claim(
                &c,
                "set",
                &format!("c{i}"),
                t0 + Duration::from_millis(i as u64),
            )
            .unwrap();
        }
        let rows: i64 = c
            .query_row("SELECT count(*) FROM request_replay", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, MAX_ROWS);
        // The oldest went first.
        assert_eq!(claim(&c, "set", "c0", t0).unwrap(), Seen::New);
        let later = t0 + MAX_AGE + Duration::from_secs(3600);
        claim(&c, "set", "fresh", later).unwrap();
        let rows: i64 = c
            .query_row("SELECT count(*) FROM request_replay", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "everything older than MAX_AGE is forgotten");
    }
}
