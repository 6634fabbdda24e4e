//! Requests for sleeping devices, held by the gateway until the device next speaks.
//!
//! A row is `queued` until the hub hands it to the radio (then `sent`, with the
//! `command_id` the radio's result will carry) and is deleted when it is answered:
//! delivered, failed, expired or cancelled. Rows are only ever written inside the
//! hub's transactions, next to the audit record and the response they go with.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::outbox::ReplyTo;
use super::StoreResult;
use crate::model::{rfc3339, DeviceId};

/// One held request.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRequest {
    pub id: i64,
    pub device_id: String,
    pub correlation_id: Option<String>,
    /// `set` or `get`.
    pub operation: String,
    /// The command as JSON: a device command for `set`, `{"attributes": [...]}` for `get`.
    pub command: serde_json::Value,
    /// `mqtt` or `api`: who is told the outcome (an MQTT response, or the audit log).
    pub origin: String,
    pub actor: String,
    pub state: String,
    pub command_id: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    /// An MQTT 5 request's Response Topic and Correlation Data: where its later
    /// answers go.
    pub reply_to: Option<ReplyTo>,
}

/// A request to hold.
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    pub device: &'a DeviceId,
    pub correlation_id: Option<&'a str>,
    pub operation: &'a str,
    pub command: &'a serde_json::Value,
    pub origin: &'a str,
    pub actor: &'a str,
    pub expires: SystemTime,
    pub reply_to: Option<&'a ReplyTo>,
}

pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

const COLUMNS: &str = "id, device_id, correlation_id, operation, command, origin, actor, state, \
                       command_id, created_at, expires_at, response_topic, correlation_data";

fn from_row(r: &Row<'_>) -> rusqlite::Result<PendingRequest> {
    let command: String = r.get(4)?;
    Ok(PendingRequest {
        id: r.get(0)?,
        device_id: r.get(1)?,
        correlation_id: r.get(2)?,
        operation: r.get(3)?,
        command: serde_json::from_str(&command).unwrap_or(serde_json::Value::Null),
        origin: r.get(5)?,
        actor: r.get(6)?,
        state: r.get(7)?,
        command_id: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
        reply_to: r
            .get::<_, Option<String>>(11)?
            .map(|topic| -> rusqlite::Result<ReplyTo> {
                Ok(ReplyTo {
                    topic,
                    correlation_data: r.get(12)?,
                })
            })
            .transpose()?,
    })
}

/// Holds a request inside the caller's transaction; returns it as stored.
pub fn insert(conn: &Connection, r: &NewRequest<'_>) -> StoreResult<PendingRequest> {
    let now = SystemTime::now();
    conn.prepare_cached(
        "INSERT INTO device_requests (device_id, correlation_id, operation, command, origin, actor,
                                      created_at, expires_at, expires_ms, response_topic,
                                      correlation_data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        r.device.as_str(),
        r.correlation_id,
        r.operation,
        r.command.to_string(),
        r.origin,
        r.actor,
        rfc3339(now),
        rfc3339(r.expires),
        millis(r.expires),
        r.reply_to.map(|t| t.topic.as_str()),
        r.reply_to.and_then(|t| t.correlation_data.as_deref()),
    ])?;
    let id = conn.last_insert_rowid();
    get(conn, id)?.ok_or_else(|| super::StoreError::Invalid("held request vanished".into()))
}

pub fn get(conn: &Connection, id: i64) -> StoreResult<Option<PendingRequest>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM device_requests WHERE id = ?1"
        ))?
        .query_row([id], from_row)
        .optional()?)
}

/// The requests still waiting for `device` to wake, oldest first.
pub fn queued_for(conn: &Connection, device: &str) -> StoreResult<Vec<PendingRequest>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM device_requests WHERE device_id = ?1 AND state = 'queued' ORDER BY id"
    ))?;
    let rows = stmt.query_map([device], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every held request, oldest first (for `status` and start-up).
pub fn all(conn: &Connection) -> StoreResult<Vec<PendingRequest>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM device_requests ORDER BY id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every request held for `device`, queued or sent, oldest first (for `device`).
pub fn for_device(conn: &Connection, device: &str) -> StoreResult<Vec<PendingRequest>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM device_requests WHERE device_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([device], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many requests are held and when the oldest was taken (for `status`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldSummary {
    pub total: u64,
    /// Still waiting for their device to wake.
    pub queued: u64,
    /// Handed to the radio, waiting for its result.
    pub sent: u64,
    pub oldest_created_at: Option<String>,
}

pub fn summary(conn: &Connection) -> StoreResult<HeldSummary> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(state = 'queued'), 0), coalesce(sum(state = 'sent'), 0),
                    (SELECT created_at FROM device_requests ORDER BY id LIMIT 1)
             FROM device_requests",
        )?
        .query_row([], |r| {
            Ok(HeldSummary {
                total: r.get::<_, i64>(0)?.max(0) as u64,
                queued: r.get::<_, i64>(1)?.max(0) as u64,
                sent: r.get::<_, i64>(2)?.max(0) as u64,
                oldest_created_at: r.get(3)?,
            })
        })?)
}

/// Records that the request was handed to the radio as `command_id`.
pub fn mark_sent(conn: &Connection, id: i64, command_id: &str) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE device_requests SET state = 'sent', command_id = ?2 WHERE id = ?1 AND state = 'queued'",
        )?
        .execute(params![id, command_id])?
        == 1)
}

/// Removes and returns the request the radio's result `command_id` answers.
pub fn take_by_command_id(
    conn: &Connection,
    command_id: &str,
) -> StoreResult<Option<PendingRequest>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM device_requests WHERE command_id = ?1"
        ))?
        .query_row([command_id], from_row)
        .optional()?;
    if let Some(r) = &found {
        delete(conn, r.id)?;
    }
    Ok(found)
}

/// Removes and returns the queued (not yet sent) requests whose time ran out by `now`.
pub fn take_expired(conn: &Connection, now: SystemTime) -> StoreResult<Vec<PendingRequest>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM device_requests WHERE state = 'queued' AND expires_ms <= ?1 ORDER BY id"
    ))?;
    let rows: Vec<PendingRequest> = stmt
        .query_map([millis(now)], from_row)?
        .collect::<Result<_, _>>()?;
    for r in &rows {
        delete(conn, r.id)?;
    }
    Ok(rows)
}

/// Removes and returns every request held for `device` (it is being retired).
pub fn take_for_device(conn: &Connection, device: &str) -> StoreResult<Vec<PendingRequest>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM device_requests WHERE device_id = ?1 ORDER BY id"
    ))?;
    let rows: Vec<PendingRequest> = stmt
        .query_map([device], from_row)?
        .collect::<Result<_, _>>()?;
    conn.prepare_cached("DELETE FROM device_requests WHERE device_id = ?1")?
        .execute([device])?;
    Ok(rows)
}

/// Removes and returns the requests that were handed to the radio but never answered
/// (the gateway stopped in between).
pub fn take_sent(conn: &Connection) -> StoreResult<Vec<PendingRequest>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM device_requests WHERE state = 'sent' ORDER BY id"
    ))?;
    let rows: Vec<PendingRequest> = stmt.query_map([], from_row)?.collect::<Result<_, _>>()?;
    conn.execute("DELETE FROM device_requests WHERE state = 'sent'", [])?;
    Ok(rows)
}

/// Devices with queued requests.
pub fn queued_devices(conn: &Connection) -> StoreResult<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT device_id FROM device_requests WHERE state = 'queued'")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn delete(conn: &Connection, id: i64) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM device_requests WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn db() -> Connection {
        super::super::schema::in_memory_for_tests()
    }

    #[test]
    fn requests_are_held_in_order_sent_and_expired() {
        let c = db();
        let dev = DeviceId("zigbee:0x1".into());
        let cmd = serde_json::json!({"action": "toggle"});
        let soon = SystemTime::now() + Duration::from_secs(1);
        let later = SystemTime::now() + Duration::from_secs(3600);
        let mk = |cid: &'static str, expires| NewRequest {
            device: &dev,
            correlation_id: Some(cid),
            operation: "set",
            command: &cmd,
            origin: "mqtt",
            actor: "mqtt:cloud",
            expires,
            reply_to: None,
        };
        let a = insert(&c, &mk("a", later)).unwrap();
        let b = insert(&c, &mk("b", soon)).unwrap();
        assert_eq!(queued_devices(&c).unwrap(), vec!["zigbee:0x1".to_string()]);
        let sum = summary(&c).unwrap();
        assert_eq!((sum.total, sum.queued, sum.sent), (2, 2, 0));
        assert_eq!(
            sum.oldest_created_at.as_deref(),
            Some(a.created_at.as_str())
        );
        assert!(for_device(&c, "zigbee:0x2").unwrap().is_empty());
        let q = queued_for(&c, "zigbee:0x1").unwrap();
        assert_eq!(q.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a.id, b.id]);
        assert!(mark_sent(&c, a.id, "cmd-a").unwrap());
        assert!(!mark_sent(&c, a.id, "cmd-x").unwrap(), "sent once");
        let sum = summary(&c).unwrap();
        assert_eq!((sum.total, sum.queued, sum.sent), (2, 1, 1));
        // `queued_for` is what the hub still has to send; `for_device` is everything held.
        assert_eq!(queued_for(&c, "zigbee:0x1").unwrap().len(), 1);
        let held = for_device(&c, "zigbee:0x1").unwrap();
        assert_eq!(
            held.iter()
                .map(|r| (r.id, r.state.as_str()))
                .collect::<Vec<_>>(),
            vec![(a.id, "sent"), (b.id, "queued")]
        );
        // Only the queued one expires; the sent one waits for the radio.
        let gone = take_expired(&c, SystemTime::now() + Duration::from_secs(7200)).unwrap();
        assert_eq!(gone.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b.id]);
        let done = take_by_command_id(&c, "cmd-a").unwrap().unwrap();
        assert_eq!(done.correlation_id.as_deref(), Some("a"));
        assert!(take_by_command_id(&c, "cmd-a").unwrap().is_none());
        assert!(all(&c).unwrap().is_empty());
        assert_eq!(summary(&c).unwrap(), HeldSummary::default());
    }

    #[test]
    fn a_held_request_keeps_its_response_topic_and_binary_correlation_data() {
        let c = db();
        let dev = DeviceId("zigbee:0x2".into());
        let cmd = serde_json::json!({"on": true});
        let reply = ReplyTo {
            topic: "app/replies/7".into(),
            correlation_data: Some(vec![0, 0xff, b'x', 0]),
        };
        let held = insert(
            &c,
            &NewRequest {
                device: &dev,
                correlation_id: Some("r7"),
                operation: "set",
                command: &cmd,
                origin: "mqtt",
                actor: "mqtt:cloud",
                expires: SystemTime::now() + Duration::from_secs(60),
                reply_to: Some(&reply),
            },
        )
        .unwrap();
        assert_eq!(held.reply_to.as_ref(), Some(&reply));
        let stored: String = c
            .query_row(
                "SELECT typeof(correlation_data) FROM device_requests WHERE id = ?1",
                [held.id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, "blob");
        assert!(mark_sent(&c, held.id, "cmd-7").unwrap());
        let done = take_by_command_id(&c, "cmd-7").unwrap().unwrap();
        assert_eq!(done.reply_to, Some(reply));
    }

    #[test]
    fn held_requests_and_answers_from_before_the_migration_read_back_without_a_reply_topic() {
        let mut c = Connection::open_in_memory().unwrap();
        let m = super::super::schema::migrations();
        let latest = {
            let t = super::super::schema::in_memory_for_tests();
            match m.current_version(&t).unwrap() {
                rusqlite_migration::SchemaVersion::Inside(v) => usize::from(v),
                other => panic!("{other:?}"),
            }
        };
        m.to_version(&mut c, latest - 1).unwrap();
        c.execute(
            "INSERT INTO device_requests (device_id, correlation_id, operation, command, origin,
                                          actor, created_at, expires_at, expires_ms)
             VALUES ('zigbee:0x3', 'old', 'set', '{}', 'mqtt', 'mqtt:cloud', 't', 't', 1)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO outbox (msg_id, kind, topic, payload, retain, created_ms)
             VALUES ('m', 'response', 'response/set', X'7B7D', 0, 1)",
            [],
        )
        .unwrap();
        m.to_latest(&mut c).unwrap();
        let old = all(&c).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].reply_to, None);
        let rows = super::super::outbox::pending(&c, 0, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].reply_to, None);
        // New answers keep the requester's address.
        let reply = ReplyTo {
            topic: "app/r".into(),
            correlation_data: Some(vec![1, 2, 3]),
        };
        super::super::outbox::append_response(
            &c,
            "response/set",
            serde_json::json!({"status": "queued"}),
            Some(&reply),
        )
        .unwrap();
        let rows = super::super::outbox::pending(&c, 0, 10).unwrap();
        assert_eq!(rows[1].reply_to, Some(reply));
        assert_eq!(rows[1].topic, "response/set");
    }
}
