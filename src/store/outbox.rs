//! The outbox: every message for the cloud, committed before anyone is told it
//! was accepted, and deleted only once the broker has acknowledged it.
//!
//! Each message gets its envelope here: a unique `msg_id`, the per-gateway `seq`
//! (the row id, strictly increasing, never reused) and `ts`, the time the gateway
//! received the underlying event. Topics are stored relative to the configured
//! prefix so a prefix change does not strand queued rows.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::StoreResult;
use crate::model::{rfc3339, DeviceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// A reading; may be dropped oldest-first when the outbox is full.
    Telemetry,
    /// Latest device state (retained).
    State,
    Availability,
    /// Joined, interviewed, admitted, left, decommissioned, ...: never dropped silently.
    Lifecycle,
    /// An audit record: never dropped silently.
    Audit,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Telemetry => "telemetry",
            MessageKind::State => "state",
            MessageKind::Availability => "availability",
            MessageKind::Lifecycle => "lifecycle",
            MessageKind::Audit => "audit",
        }
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub kind: MessageKind,
    pub device: Option<DeviceId>,
    /// Relative to the topic prefix, e.g. `device/zigbee:0x00../telemetry`.
    pub topic: String,
    pub retain: bool,
    pub data: serde_json::Value,
    /// When the gateway received the event this message reports.
    pub event_time: SystemTime,
}

/// A queued message as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRow {
    pub seq: i64,
    pub msg_id: String,
    pub kind: String,
    pub topic: String,
    pub retain: bool,
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct OutboxStats {
    pub depth: u64,
    pub bytes: u64,
    /// Age of the oldest undelivered message, in milliseconds.
    pub oldest_age_ms: Option<u64>,
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Appends a message inside the caller's transaction; returns its `seq`.
pub fn append(conn: &Connection, gateway_id: &str, msg: &NewMessage) -> StoreResult<i64> {
    // Single writer: the next AUTOINCREMENT value is known before the insert, so the
    // stored payload already carries its own seq.
    let last: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let seq = last.unwrap_or(0) + 1;
    let msg_id = uuid::Uuid::now_v7().to_string();
    let mut envelope = serde_json::json!({
        "msg_id": msg_id,
        "seq": seq,
        "ts": rfc3339(msg.event_time),
        "gateway": gateway_id,
        "type": msg.kind.as_str(),
    });
    if let Some(d) = &msg.device {
        envelope["device"] = serde_json::Value::String(d.to_string());
    }
    envelope["data"] = msg.data.clone();
    let payload =
        serde_json::to_vec(&envelope).map_err(|e| super::StoreError::Invalid(e.to_string()))?;
    conn.execute(
        "INSERT INTO outbox (id, msg_id, kind, device_id, topic, payload, retain, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            seq,
            msg_id,
            msg.kind.as_str(),
            msg.device.as_ref().map(|d| d.to_string()),
            msg.topic,
            payload,
            msg.retain,
            millis(SystemTime::now()),
        ],
    )?;
    Ok(seq)
}

/// The oldest undelivered messages after `after_seq`, in seq order.
pub fn pending(conn: &Connection, after_seq: i64, limit: usize) -> StoreResult<Vec<OutboxRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, msg_id, kind, topic, retain, payload, created_ms FROM outbox
         WHERE id > ?1 ORDER BY id ASC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after_seq, limit as i64], |r| {
        Ok(OutboxRow {
            seq: r.get(0)?,
            msg_id: r.get(1)?,
            kind: r.get(2)?,
            topic: r.get(3)?,
            retain: r.get(4)?,
            payload: r.get(5)?,
            created_ms: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes delivered messages (called on PUBACK).
pub fn delete(conn: &Connection, seqs: &[i64]) -> StoreResult<usize> {
    let mut stmt = conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
    let mut n = 0;
    for s in seqs {
        n += stmt.execute([s])?;
    }
    Ok(n)
}

pub fn stats(conn: &Connection) -> StoreResult<OutboxStats> {
    let (depth, bytes, oldest): (i64, i64, Option<i64>) = conn.query_row(
        "SELECT count(*), coalesce(sum(length(payload) + length(topic)), 0), min(created_ms) FROM outbox",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let now = millis(SystemTime::now());
    Ok(OutboxStats {
        depth: depth as u64,
        bytes: bytes as u64,
        oldest_age_ms: oldest.map(|o| (now - o).max(0) as u64),
    })
}

/// The most recent messages, newest last (for the demo and `status`).
pub fn recent(conn: &Connection, limit: usize) -> StoreResult<Vec<OutboxRow>> {
    let mut rows = pending_desc(conn, limit)?;
    rows.reverse();
    Ok(rows)
}

fn pending_desc(conn: &Connection, limit: usize) -> StoreResult<Vec<OutboxRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, msg_id, kind, topic, retain, payload, created_ms FROM outbox ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit as i64], |r| {
        Ok(OutboxRow {
            seq: r.get(0)?,
            msg_id: r.get(1)?,
            kind: r.get(2)?,
            topic: r.get(3)?,
            retain: r.get(4)?,
            payload: r.get(5)?,
            created_ms: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_monotonic_and_never_reused() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrations()
            .to_latest(&mut c)
            .unwrap();
        let msg = NewMessage {
            kind: MessageKind::Telemetry,
            device: None,
            topic: "t".into(),
            retain: false,
            data: serde_json::json!({"x": 1}),
            event_time: SystemTime::now(),
        };
        assert_eq!(append(&c, "gw", &msg).unwrap(), 1);
        assert_eq!(append(&c, "gw", &msg).unwrap(), 2);
        delete(&c, &[2]).unwrap();
        assert_eq!(append(&c, "gw", &msg).unwrap(), 3);
        let rows = pending(&c, 0, 10).unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 3]);
        let v: serde_json::Value = serde_json::from_slice(&rows[1].payload).unwrap();
        assert_eq!(v["seq"], 3);
        assert_eq!(v["gateway"], "gw");
        assert_eq!(stats(&c).unwrap().depth, 2);
    }
}
