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
use crate::model::DeviceId;

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
    /// A response to a request, answered later (a request held for a sleeping device):
    /// never dropped silently. Its payload is the response object, not an envelope.
    Response,
    /// A frame or event bridged to a network server in that server's own format (the
    /// ChirpStack gateway events): no envelope, and an absolute topic outside the prefix.
    /// Dropped like telemetry (by age, then oldest first) when the outbox is full.
    Bridge,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Telemetry => "telemetry",
            MessageKind::State => "state",
            MessageKind::Availability => "availability",
            MessageKind::Lifecycle => "lifecycle",
            MessageKind::Audit => "audit",
            MessageKind::Response => "response",
            MessageKind::Bridge => "bridge",
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

/// Where an MQTT 5 requester asked for its answer: the request's Response Topic and
/// Correlation Data (bytes, copied as they came). Kept with a held request and with
/// the answers it gets later through the outbox; the publisher checks the topic
/// again before using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub topic: String,
    pub correlation_data: Option<Vec<u8>>,
}

/// A queued message, as read back for publishing. Most rows hold one message; a
/// row written by [`append_batch`] holds several, with consecutive seqs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRow {
    pub seq: i64,
    /// The stored row this message is part of: its first seq ...
    #[serde(skip)]
    pub row: i64,
    /// ... and its last. The row is deleted once every message in it is acknowledged.
    #[serde(skip)]
    pub row_last: i64,
    pub msg_id: String,
    pub kind: String,
    pub topic: String,
    pub retain: bool,
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub created_ms: i64,
    /// A [`MessageKind::Response`] to an MQTT 5 request that named its Response Topic.
    #[serde(skip)]
    pub reply_to: Option<ReplyTo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct OutboxStats {
    pub depth: u64,
    pub bytes: u64,
    /// Age of the oldest undelivered message, in milliseconds.
    pub oldest_age_ms: Option<u64>,
}

/// What a row costs against `[upstream.outbox] max_bytes`: its payload and topic,
/// and an MQTT 5 answer's Response Topic and Correlation Data (up to 64 KiB each).
const ROW_BYTES: &str = "length(payload) + length(topic) + coalesce(length(response_topic), 0)
     + coalesce(length(correlation_data), 0)";

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Appends a message inside the caller's transaction; returns its `seq`.
pub fn append(conn: &Connection, gateway_id: &str, msg: &NewMessage) -> StoreResult<i64> {
    append_data(
        conn,
        &mut SeqCursor::default(),
        gateway_id,
        &Header {
            kind: msg.kind,
            device: msg.device.as_ref(),
            topic: &msg.topic,
            retain: msg.retain,
            event_time: msg.event_time,
        },
        &msg.data,
    )
}

/// Everything about a message but its data.
pub struct Header<'a> {
    pub kind: MessageKind,
    pub device: Option<&'a DeviceId>,
    pub topic: &'a str,
    pub retain: bool,
    pub event_time: SystemTime,
}

/// [`append`] for data that serializes itself (readings on the hot path), without an
/// intermediate JSON tree.
pub fn append_data<D: Serialize + ?Sized>(
    conn: &Connection,
    seqs: &mut SeqCursor,
    gateway_id: &str,
    header: &Header<'_>,
    data: &D,
) -> StoreResult<i64> {
    let seq = seqs.next(conn)?;
    let life = seqs.life(conn)?;
    let mut payload = Vec::with_capacity(320);
    let msg_id = write_envelope(
        &mut payload,
        gateway_id,
        header,
        data,
        seq,
        header.event_time,
        &life,
    )?;
    insert_row(conn, header, seq, &msg_id.to_string(), &payload, 1)?;
    seqs.last = Some((seq, seq));
    Ok(seq)
}

/// Serializes one message's envelope onto `out`, straight from borrowed parts, and
/// returns its `msg_id`. The ts and msg_id are written into stack buffers: this runs
/// for every message. Fields in alphabetical order: the same bytes a JSON map
/// would give.
fn write_envelope<D: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    gateway_id: &str,
    header: &Header<'_>,
    data: &D,
    seq: i64,
    at: SystemTime,
    life: &str,
) -> StoreResult<uuid::Uuid> {
    let id = uuid::Uuid::now_v7();
    let mut id_buf = uuid::Uuid::encode_buffer();
    let mut ts_buf = [0u8; 24];
    serde_json::to_writer(
        out,
        &Envelope {
            data,
            device: header.device.map(DeviceId::as_str),
            gateway: gateway_id,
            life,
            msg_id: id.hyphenated().encode_lower(&mut id_buf),
            seq,
            ts: crate::model::rfc3339_into(at, &mut ts_buf),
            kind: header.kind.as_str(),
        },
    )
    .map_err(|e| super::StoreError::Invalid(e.to_string()))?;
    Ok(id)
}

/// Inserts a row holding `messages` messages with seqs `first ..`, the first with
/// `msg_id`.
fn insert_row(
    conn: &Connection,
    header: &Header<'_>,
    first: i64,
    msg_id: &str,
    payload: &[u8],
    messages: usize,
) -> StoreResult<()> {
    // A one-message row leaves `messages` at its default (1).
    let sql = if messages == 1 {
        "INSERT INTO outbox (id, msg_id, kind, device_id, topic, payload, retain, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    } else {
        "INSERT INTO outbox (id, msg_id, kind, device_id, topic, payload, retain, created_ms, messages)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    };
    let n = messages as i64;
    let created_ms = millis(SystemTime::now());
    let args = params![
        first,
        msg_id,
        header.kind.as_str(),
        header.device.map(DeviceId::as_str),
        header.topic,
        payload,
        header.retain,
        created_ms,
        n,
    ];
    let used = if messages == 1 { &args[..8] } else { args };
    conn.prepare_cached(sql)?.execute(used)?;
    super::capture::record(|| {
        (
            OutboxRow {
                seq: first,
                row: first,
                row_last: first,
                msg_id: msg_id.to_string(),
                kind: header.kind.as_str().to_string(),
                topic: header.topic.to_string(),
                retain: header.retain,
                payload: payload.to_vec(),
                created_ms,
                reply_to: None,
            },
            n,
        )
    });
    Ok(())
}

/// The most messages one row holds (see [`append_batch`]).
pub const MAX_ROW_MESSAGES: usize = 64;

/// Appends several messages that share a topic (one device's readings within one
/// commit) as one row, each message with its own envelope, `msg_id`, `ts` and
/// consecutive `seq`s, published one by one. One insert (and later one delete)
/// instead of one per message. Returns the seqs, in `items` order. `items` longer
/// than [`MAX_ROW_MESSAGES`] go into several rows.
pub fn append_batch<D: Serialize>(
    conn: &Connection,
    seqs: &mut SeqCursor,
    gateway_id: &str,
    header: &Header<'_>,
    items: &[(D, SystemTime)],
) -> StoreResult<Vec<i64>> {
    let mut out = Vec::with_capacity(items.len());
    let life = seqs.life(conn)?;
    for chunk in items.chunks(MAX_ROW_MESSAGES) {
        let first = seqs.next(conn)?;
        let mut payload = Vec::with_capacity(chunk.len() * 320);
        let mut first_id = None;
        for (i, (data, at)) in chunk.iter().enumerate() {
            if i > 0 {
                // Compact JSON never contains a raw newline: it separates the messages.
                payload.push(b'\n');
            }
            let seq = first + i as i64;
            let id = write_envelope(&mut payload, gateway_id, header, data, seq, *at, &life)?;
            first_id.get_or_insert(id);
            out.push(seq);
        }
        let last = first + chunk.len() as i64 - 1;
        let first_id = first_id.map(|id| id.to_string()).unwrap_or_default();
        insert_row(conn, header, first, &first_id, &payload, chunk.len())?;
        if last > first {
            // The row's other seqs are used too: never hand them out again, even
            // once the row is deleted.
            conn.prepare_cached(
                "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'outbox' AND seq < ?1",
            )?
            .execute([last])?;
        }
        seqs.last = Some((first, last));
    }
    Ok(out)
}

/// Hands out `seq` values for a run of appends on one connection without looking the
/// last one up each time. It trusts its own last value only while that row is still
/// the connection's last insert (no other insert, into any table, came in between);
/// otherwise it asks `sqlite_sequence`. Use one for a run of appends inside one
/// transaction with no rollback in between (a rolled-back insert would leave a gap).
#[derive(Debug, Default)]
pub struct SeqCursor {
    /// The last row this cursor wrote: its id and its last seq.
    last: Option<(i64, i64)>,
    /// The database's life, read once per cursor.
    life: Option<String>,
}

impl SeqCursor {
    fn life(&mut self, conn: &Connection) -> StoreResult<String> {
        if let Some(l) = &self.life {
            return Ok(l.clone());
        }
        let l = life(conn)?;
        self.life = Some(l.clone());
        Ok(l)
    }

    fn next(&mut self, conn: &Connection) -> StoreResult<i64> {
        match self.last {
            Some((row, last)) if conn.last_insert_rowid() == row => Ok(last + 1),
            _ => next_seq(conn),
        }
    }
}

/// The database's life: an id made with the database (creation time in ms, then
/// random hex), so `(life, seq)` orders messages across a reset of the gateway's
/// state, when `seq` starts again at 1.
pub fn life(conn: &Connection) -> StoreResult<String> {
    Ok(conn
        .prepare_cached("SELECT life FROM gateway_life WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

/// Gives the database a new life (the time in ms, then random hex, as at creation) and
/// returns it: messages queued from now on are ordered after every earlier one.
pub fn renew_life(conn: &Connection) -> StoreResult<String> {
    conn.execute(
        "UPDATE gateway_life SET life =
            printf('%013d', CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
            || '-' || lower(hex(randomblob(4)))
          WHERE id = 1",
        [],
    )?;
    life(conn)
}

/// How device topics were last named upstream (`id` or `name`), `id` when never said.
pub fn topic_names(conn: &Connection) -> StoreResult<String> {
    Ok(conn
        .prepare_cached("SELECT coalesce(topic_names, 'id') FROM gateway_life WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

/// Records how device topics are named upstream from now on.
pub fn set_topic_names(conn: &Connection, naming: &str) -> StoreResult<()> {
    conn.prepare_cached("UPDATE gateway_life SET topic_names = ?1 WHERE id = 1")?
        .execute([naming])?;
    Ok(())
}

/// The envelope every queued message carries (documented in docs/mqtt-api.md).
#[derive(Serialize)]
struct Envelope<'a, D: ?Sized> {
    data: &'a D,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    gateway: &'a str,
    life: &'a str,
    msg_id: &'a str,
    seq: i64,
    ts: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

/// Single writer: the next AUTOINCREMENT value is known before the insert, so the
/// stored payload already carries its own seq.
fn next_seq(conn: &Connection) -> StoreResult<i64> {
    Ok(last_seq(conn)? + 1)
}

/// The highest seq handed out so far (0 before the first message).
pub fn last_seq(conn: &Connection) -> StoreResult<i64> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(last.unwrap_or(0))
}

/// Appends the answer to a request inside the caller's transaction: `topic` (under
/// the prefix) is where it goes on MQTT 3.1.1 or without `reply_to`. Returns its
/// `seq` and payload.
pub fn append_response(
    conn: &Connection,
    topic: &str,
    mut response: serde_json::Value,
    reply_to: Option<&ReplyTo>,
) -> StoreResult<(i64, Vec<u8>)> {
    let seq = next_seq(conn)?;
    let msg_id = uuid::Uuid::now_v7().to_string();
    if let Some(obj) = response.as_object_mut() {
        obj.insert("msg_id".into(), serde_json::json!(msg_id));
        obj.insert("seq".into(), serde_json::json!(seq));
        obj.insert("life".into(), serde_json::json!(life(conn)?));
    }
    let payload =
        serde_json::to_vec(&response).map_err(|e| super::StoreError::Invalid(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO outbox (id, msg_id, kind, device_id, topic, payload, retain, created_ms,
                             response_topic, correlation_data)
         VALUES (?1, ?2, ?3, NULL, ?4, ?5, 0, ?6, ?7, ?8)",
    )?
    .execute(params![
        seq,
        msg_id,
        MessageKind::Response.as_str(),
        topic,
        payload,
        millis(SystemTime::now()),
        reply_to.map(|r| r.topic.as_str()),
        reply_to.and_then(|r| r.correlation_data.as_deref()),
    ])?;
    Ok((seq, payload))
}

/// Appends a [`MessageKind::Bridge`] message inside the caller's transaction: `payload`
/// published as it is on `topic` (absolute, not under the prefix). Returns its `seq`.
pub fn append_bridged(conn: &Connection, topic: &str, payload: &[u8]) -> StoreResult<i64> {
    let seq = next_seq(conn)?;
    conn.prepare_cached(
        "INSERT INTO outbox (id, msg_id, kind, device_id, topic, payload, retain, created_ms)
         VALUES (?1, ?2, ?3, NULL, ?4, ?5, 0, ?6)",
    )?
    .execute(params![
        seq,
        uuid::Uuid::now_v7().to_string(),
        MessageKind::Bridge.as_str(),
        topic,
        payload,
        millis(SystemTime::now()),
    ])?;
    Ok(seq)
}

/// The oldest undelivered messages with a seq above `after_seq`, in seq order, rows
/// holding several messages split into them; about `limit` messages (whole rows).
pub fn pending(conn: &Connection, after_seq: i64, limit: usize) -> StoreResult<Vec<OutboxRow>> {
    // A row starts at most MAX_ROW_MESSAGES - 1 seqs before the first message wanted.
    let mut stmt = conn.prepare_cached(
        "SELECT id, msg_id, kind, topic, retain, payload, created_ms, messages,
                response_topic, correlation_data FROM outbox
         WHERE id > ?1 - ?2 AND id + messages - 1 > ?1 ORDER BY id ASC",
    )?;
    let mut rows = stmt.query(params![after_seq, MAX_ROW_MESSAGES as i64])?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(r) = rows.next()? else { break };
        expand(stored(r)?, after_seq, &mut out);
    }
    Ok(out)
}

/// [`pending`] and the highest seq handed out, read in one transaction: when fewer
/// than `limit` come back, every message up to that seq was read (or is gone).
pub fn pending_now(
    conn: &Connection,
    after_seq: i64,
    limit: usize,
) -> StoreResult<(Vec<OutboxRow>, i64)> {
    let tx = conn.unchecked_transaction()?;
    let upto = last_seq(&tx)?;
    let rows = pending(&tx, after_seq, limit)?;
    tx.finish()?;
    Ok((rows, upto))
}

/// A row as stored, and how many messages it holds.
fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<(OutboxRow, i64)> {
    let seq = r.get(0)?;
    Ok((
        OutboxRow {
            seq,
            row: seq,
            row_last: seq,
            msg_id: r.get(1)?,
            kind: r.get(2)?,
            topic: r.get(3)?,
            retain: r.get(4)?,
            payload: r.get(5)?,
            created_ms: r.get(6)?,
            reply_to: r
                .get::<_, Option<String>>(8)?
                .map(|topic| -> rusqlite::Result<ReplyTo> {
                    Ok(ReplyTo {
                        topic,
                        correlation_data: r.get(9)?,
                    })
                })
                .transpose()?,
        },
        r.get(7)?,
    ))
}

/// Splits a stored row into its messages, keeping those with a seq above `after`.
pub(super) fn expand((row, messages): (OutboxRow, i64), after: i64, out: &mut Vec<OutboxRow>) {
    if messages <= 1 {
        if row.seq > after {
            out.push(row);
        }
        return;
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(messages.clamp(0, 1024) as usize);
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', &row.payload) {
        parts.push(&row.payload[start..nl]);
        start = nl + 1;
    }
    parts.push(&row.payload[start..]);
    if parts.len() as i64 != messages {
        // Not what `append_batch` wrote: sent as it is, as one message, so the row
        // still leaves the outbox once acknowledged.
        tracing::error!(
            seq = row.seq,
            messages,
            parts = parts.len(),
            "outbox row does not hold the messages it counts"
        );
        if row.seq > after {
            out.push(row);
        }
        return;
    }
    let last = row.seq + messages - 1;
    for (i, part) in parts.into_iter().enumerate() {
        let seq = row.seq + i as i64;
        if seq <= after {
            continue;
        }
        out.push(OutboxRow {
            seq,
            row: row.seq,
            row_last: last,
            msg_id: if i == 0 {
                row.msg_id.clone()
            } else {
                msg_id_of(part)
            },
            kind: row.kind.clone(),
            topic: row.topic.clone(),
            retain: row.retain,
            payload: part.to_vec(),
            created_ms: row.created_ms,
            reply_to: None,
        });
    }
}

/// The `msg_id` of an envelope written by this module (a fixed-width UUID string).
fn msg_id_of(envelope: &[u8]) -> String {
    const KEY: &[u8] = b"\"msg_id\":\"";
    memchr::memmem::find(envelope, KEY)
        .and_then(|at| envelope.get(at + KEY.len()..at + KEY.len() + 36))
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .unwrap_or_default()
}

/// Deletes delivered messages (called on PUBACK). Acknowledgements mostly come in
/// send order, so the seqs are deleted as contiguous ranges: one statement per run
/// instead of one per row. A row holding several messages is deleted when its first
/// seq is given: the caller passes only rows whose every message is acknowledged.
pub fn delete(conn: &Connection, seqs: &[i64]) -> StoreResult<usize> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if let Some(&last) = sorted.last() {
        super::capture::spoil_if_reached(last);
    }
    let mut stmt = conn.prepare_cached("DELETE FROM outbox WHERE id BETWEEN ?1 AND ?2")?;
    let mut n = 0;
    let mut rest = sorted.as_slice();
    while let Some(&first) = rest.first() {
        let run = rest
            .iter()
            .zip(first..)
            .take_while(|(seq, expected)| **seq == *expected)
            .count();
        n += stmt.execute(params![first, rest[run - 1]])?;
        rest = &rest[run..];
    }
    Ok(n)
}

pub fn stats(conn: &Connection) -> StoreResult<OutboxStats> {
    let (depth, bytes, oldest): (i64, i64, Option<i64>) = conn.query_row(
        &format!(
            "SELECT coalesce(sum(messages), 0), coalesce(sum({ROW_BYTES}), 0), min(created_ms)
               FROM outbox"
        ),
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

/// Whether the outbox is surely within `max_bytes` and `max_age`, decided without
/// reading it through: the pages the database uses bound the outbox's bytes (every
/// payload and topic byte is on one of them), and the first row is the oldest. When
/// this says `false`, [`stats`] tells for sure. Returns the bound it used.
pub fn surely_within(
    conn: &Connection,
    max_bytes: u64,
    max_age_ms: u64,
    now: SystemTime,
) -> StoreResult<Option<u64>> {
    let used: i64 = conn.query_row(
        "SELECT ((SELECT page_count FROM pragma_page_count())
                 - (SELECT freelist_count FROM pragma_freelist_count()))
                * (SELECT page_size FROM pragma_page_size())",
        [],
        |r| r.get(0),
    )?;
    let used = used.max(0) as u64;
    if used > max_bytes {
        return Ok(None);
    }
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT created_ms FROM outbox ORDER BY id LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    let cutoff = millis(now) - max_age_ms.min(i64::MAX as u64) as i64;
    Ok(match oldest {
        Some(created) if created < cutoff => None,
        _ => Some(used),
    })
}

/// The most recent messages, newest last (for the demo and `status`).
pub fn recent(conn: &Connection, limit: usize) -> StoreResult<Vec<OutboxRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, msg_id, kind, topic, retain, payload, created_ms, messages,
                response_topic, correlation_data FROM outbox
         ORDER BY id DESC LIMIT ?1",
    )?;
    let mut rows: Vec<(OutboxRow, i64)> = stmt
        .query_map(params![limit as i64], stored)?
        .collect::<Result<_, _>>()?;
    rows.reverse();
    let mut out = Vec::new();
    for row in rows {
        expand(row, i64::MIN, &mut out);
    }
    let skip = out.len().saturating_sub(limit);
    out.drain(..skip);
    Ok(out)
}

/// Whether new telemetry may enter the outbox. The upstream task sets it when even
/// the kinds that are never dropped (lifecycle, audit, ...) fill the outbox to its
/// byte limit; the hub asks it before queueing a reading. Shared, lock-free.
#[derive(Debug, Default)]
pub struct OutboxGate {
    refuse_telemetry: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicU64,
    /// Signalled after a commit that queued messages, so the pump reads them at once
    /// instead of at its next idle poll.
    appended: tokio::sync::Notify,
}

impl OutboxGate {
    /// Tells the pump that committed messages are waiting.
    pub fn appended(&self) {
        self.appended.notify_one();
    }

    /// Resolves once messages were committed since the last call.
    pub async fn wait_appended(&self) {
        self.appended.notified().await
    }

    /// True when a message of `kind` may be queued; a refusal is counted.
    pub fn admit(&self, kind: MessageKind) -> bool {
        use std::sync::atomic::Ordering;
        if kind == MessageKind::Telemetry && self.refuse_telemetry.load(Ordering::Relaxed) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn set_refuse_telemetry(&self, refuse: bool) {
        self.refuse_telemetry
            .store(refuse, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn refusing_telemetry(&self) -> bool {
        self.refuse_telemetry
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Telemetry messages refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What [`enforce_limits`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LimitReport {
    /// Telemetry messages dropped because they were older than `max_age`.
    pub dropped_expired: u64,
    /// Telemetry messages dropped, oldest first, to get under `max_bytes`.
    pub dropped_for_space: u64,
    /// Retained state/availability rows removed because a newer row for the same
    /// topic is queued (lossless: the retained topic only keeps the latest).
    pub compacted: u64,
    /// Bytes queued after enforcement (same measure as [`stats`]).
    pub bytes: u64,
    /// Bytes held by kinds that are never dropped (everything but telemetry).
    pub protected_bytes: u64,
    /// Never-dropped rows older than `max_age` (kept, and reported).
    pub protected_expired: u64,
}

/// Applies the outbox limits inside the caller's transaction:
/// 1. telemetry (and bridged frames, which count as telemetry here) older than
///    `max_age_ms` is dropped;
/// 2. over `max_bytes`, superseded retained rows (state, availability) are compacted;
/// 3. still over, telemetry is dropped oldest-first until the outbox fits.
///
/// Lifecycle, audit and the latest retained rows are never dropped here; when they
/// alone exceed the limit the caller raises the alarm (see [`OutboxGate`]).
pub fn enforce_limits(
    conn: &Connection,
    max_bytes: u64,
    max_age_ms: u64,
    now: SystemTime,
) -> StoreResult<LimitReport> {
    // It may drop messages queued in this transaction.
    super::capture::spoil();
    let mut report = LimitReport::default();
    let cutoff = millis(now) - max_age_ms.min(i64::MAX as u64) as i64;
    report.dropped_expired = delete_counting(
        conn,
        "DELETE FROM outbox WHERE kind IN ('telemetry', 'bridge') AND created_ms < ?1
         RETURNING messages",
        cutoff,
    )?;
    let mut bytes = stats(conn)?.bytes;
    if bytes > max_bytes {
        report.compacted = conn.execute(
            "DELETE FROM outbox WHERE kind IN ('state', 'availability') AND id NOT IN (
                SELECT max(id) FROM outbox WHERE kind IN ('state', 'availability')
                GROUP BY topic)",
            [],
        )? as u64;
        bytes = stats(conn)?.bytes;
    }
    if bytes > max_bytes {
        let excess = bytes - max_bytes;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, {ROW_BYTES} FROM outbox
             WHERE kind IN ('telemetry', 'bridge') ORDER BY id ASC"
        ))?;
        let mut rows = stmt.query([])?;
        let mut freed = 0u64;
        let mut last_id = None;
        while freed < excess {
            let Some(row) = rows.next()? else { break };
            let id: i64 = row.get(0)?;
            let size: i64 = row.get(1)?;
            freed += size.max(0) as u64;
            last_id = Some(id);
        }
        drop(rows);
        if let Some(last) = last_id {
            report.dropped_for_space = delete_counting(
                conn,
                "DELETE FROM outbox WHERE kind IN ('telemetry', 'bridge') AND id <= ?1
                 RETURNING messages",
                last,
            )?;
        }
        bytes = stats(conn)?.bytes;
    }
    report.bytes = bytes;
    let (protected_bytes, protected_expired): (i64, i64) = conn.query_row(
        &format!(
            "SELECT coalesce(sum({ROW_BYTES}), 0),
                coalesce(sum(created_ms < ?1), 0)
         FROM outbox WHERE kind NOT IN ('telemetry', 'bridge')"
        ),
        [cutoff],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    report.protected_bytes = protected_bytes.max(0) as u64;
    report.protected_expired = protected_expired.max(0) as u64;
    Ok(report)
}

/// Runs a `DELETE ... RETURNING messages` and counts the messages removed.
fn delete_counting(conn: &Connection, sql: &str, arg: i64) -> StoreResult<u64> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([arg])?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        n += r.get::<_, i64>(0)?.max(0) as u64;
    }
    Ok(n)
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

#[cfg(test)]
mod limit_tests {
    use super::*;
    use std::time::Duration;

    fn db() -> Connection {
        super::super::schema::in_memory_for_tests()
    }

    fn msg(kind: MessageKind, topic: &str, size: usize) -> NewMessage {
        NewMessage {
            kind,
            device: None,
            topic: topic.into(),
            retain: kind == MessageKind::State,
            data: serde_json::json!({ "pad": "x".repeat(size) }),
            event_time: SystemTime::now(),
        }
    }

    #[test]
    fn delete_removes_exactly_the_given_rows_in_runs() {
        let c = db();
        for _ in 0..20 {
            append(&c, "gw", &msg(MessageKind::Telemetry, "t", 10)).unwrap();
        }
        // Two runs, a single, duplicates and out-of-order input; 99 does not exist.
        assert_eq!(delete(&c, &[5, 3, 4, 4, 9, 15, 14, 13, 12, 99]).unwrap(), 8);
        let left: Vec<i64> = pending(&c, 0, 100).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(left, [1, 2, 6, 7, 8, 10, 11, 16, 17, 18, 19, 20]);
        assert_eq!(delete(&c, &[]).unwrap(), 0);
    }

    /// An MQTT 5 answer's Response Topic and Correlation Data count against
    /// `max_bytes` like its payload: 64 KiB of correlation data is not free.
    #[test]
    fn an_answer_s_response_topic_and_correlation_data_count_as_bytes() {
        let c = db();
        let plain = append_response(&c, "response/get", serde_json::json!({}), None).unwrap();
        let base = stats(&c).unwrap().bytes;
        assert_eq!(base, (plain.1.len() + "response/get".len()) as u64);
        let reply = ReplyTo {
            topic: "cloud/answers/7".into(),
            correlation_data: Some(vec![7u8; 65_535]),
        };
        let (_, payload) =
            append_response(&c, "response/get", serde_json::json!({}), Some(&reply)).unwrap();
        let both = stats(&c).unwrap().bytes - base;
        assert_eq!(
            both,
            (payload.len() + "response/get".len() + reply.topic.len() + 65_535) as u64
        );
        // Answers are never dropped: they are counted as protected.
        let report = enforce_limits(&c, u64::MAX, u64::MAX, SystemTime::now()).unwrap();
        assert_eq!(report.protected_bytes, base + both);
    }

    #[test]
    fn envelope_bytes_are_those_of_a_sorted_json_object() {
        let c = db();
        let mut m = msg(MessageKind::Telemetry, "device/x/telemetry", 10);
        m.device = Some(DeviceId("zigbee:0x0001".into()));
        let seq = append(&c, "gw", &m).unwrap();
        let row = &pending(&c, 0, 1).unwrap()[0];
        let parsed: serde_json::Value = serde_json::from_slice(&row.payload).unwrap();
        assert_eq!(serde_json::to_vec(&parsed).unwrap(), row.payload);
        assert_eq!(parsed["seq"], seq);
        assert_eq!(parsed["msg_id"], row.msg_id.as_str());
        assert_eq!(parsed["device"], "zigbee:0x0001");
        assert_eq!(parsed["type"], "telemetry");
        assert_eq!(parsed["gateway"], "gw");
        assert_eq!(parsed["data"], m.data);
    }

    #[test]
    fn a_seq_cursor_follows_other_inserts_without_gaps_or_reuse() {
        let c = db();
        let m = msg(MessageKind::Telemetry, "t", 10);
        let header = Header {
            kind: m.kind,
            device: None,
            topic: &m.topic,
            retain: false,
            event_time: m.event_time,
        };
        let mut cursor = SeqCursor::default();
        let mut got = vec![
            append_data(&c, &mut cursor, "gw", &header, &m.data).unwrap(),
            append_data(&c, &mut cursor, "gw", &header, &m.data).unwrap(),
        ];
        // An append that does not use the cursor, then one into another table.
        got.push(append(&c, "gw", &m).unwrap());
        got.push(append_data(&c, &mut cursor, "gw", &header, &m.data).unwrap());
        crate::store::record_audit(
            &c,
            "gw",
            &crate::store::audit::AuditEntry::new(
                "test",
                "test.action",
                "t",
                crate::store::audit::Outcome::Accepted,
                serde_json::json!({}),
            ),
        )
        .unwrap();
        got.push(append_data(&c, &mut cursor, "gw", &header, &m.data).unwrap());
        got.push(append_data(&c, &mut cursor, "gw", &header, &m.data).unwrap());
        // The audit record queued its own message (5): the cursor noticed.
        assert_eq!(got, [1, 2, 3, 4, 6, 7]);
        let stored: Vec<i64> = pending(&c, 0, 100).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(stored, (1..=7).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_row_holds_consecutive_messages_published_one_by_one() {
        let c = db();
        let device = DeviceId("zigbee:0x0001".into());
        let header = Header {
            kind: MessageKind::Telemetry,
            device: Some(&device),
            topic: "device/zigbee:0x0001/telemetry",
            retain: false,
            event_time: SystemTime::now(),
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let items: Vec<(serde_json::Value, SystemTime)> = (0..3)
            .map(|i| (serde_json::json!({ "n": i }), t0 + Duration::from_millis(i)))
            .collect();
        let mut cursor = SeqCursor::default();
        assert_eq!(
            append_batch(&c, &mut cursor, "gw", &header, &items).unwrap(),
            [1, 2, 3]
        );
        // The cursor and a fresh lookup agree on what comes next.
        assert_eq!(
            append_data(&c, &mut cursor, "gw", &header, &serde_json::json!({"n": 3})).unwrap(),
            4
        );
        assert_eq!(stats(&c).unwrap().depth, 4);
        let rows: i64 = c
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2, "three messages in one row, then one");

        let all = pending(&c, 0, 100).unwrap();
        assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let mut ids = std::collections::HashSet::new();
        for (i, m) in all.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(v["seq"], m.seq);
            assert_eq!(v["msg_id"], m.msg_id.as_str());
            assert_eq!(v["data"]["n"], i);
            assert_eq!(v["device"], "zigbee:0x0001");
            assert_eq!(m.topic, "device/zigbee:0x0001/telemetry");
            assert!(ids.insert(m.msg_id.clone()), "msg_id reused");
            if i < 3 {
                assert_eq!(
                    v["ts"],
                    crate::model::rfc3339(t0 + Duration::from_millis(i as u64))
                );
                assert_eq!((m.row, m.row_last), (1, 3));
            } else {
                assert_eq!((m.row, m.row_last), (4, 4));
            }
        }
        // Reading on from the middle of a row gives the rest of it.
        let rest = pending(&c, 2, 100).unwrap();
        assert_eq!(rest.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(pending(&c, 0, 2).unwrap().len(), 3, "whole rows");
        assert_eq!(
            recent(&c, 2)
                .unwrap()
                .iter()
                .map(|m| m.seq)
                .collect::<Vec<_>>(),
            [3, 4]
        );

        // Deleted by its first seq; its seqs are never handed out again.
        delete(&c, &[1, 2, 3, 4]).unwrap();
        assert_eq!(stats(&c).unwrap().depth, 0);
        let items: Vec<(serde_json::Value, SystemTime)> =
            vec![(serde_json::json!({}), t0), (serde_json::json!({}), t0)];
        assert_eq!(
            append_batch(&c, &mut SeqCursor::default(), "gw", &header, &items).unwrap(),
            [5, 6]
        );
        delete(&c, &[5, 6]).unwrap();
        assert_eq!(
            append(&c, "gw", &msg(MessageKind::Audit, "a", 1)).unwrap(),
            7
        );
    }

    #[test]
    fn long_batches_are_split_into_rows_and_drops_count_messages() {
        let c = db();
        let header = Header {
            kind: MessageKind::Telemetry,
            device: None,
            topic: "t",
            retain: false,
            event_time: SystemTime::now(),
        };
        let items: Vec<(serde_json::Value, SystemTime)> = (0..MAX_ROW_MESSAGES + 6)
            .map(|i| (serde_json::json!({ "n": i }), SystemTime::now()))
            .collect();
        let seqs = append_batch(&c, &mut SeqCursor::default(), "gw", &header, &items).unwrap();
        assert_eq!(seqs, (1..=items.len() as i64).collect::<Vec<_>>());
        let rows: i64 = c
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
        let later = SystemTime::now() + Duration::from_secs(3600);
        let r = enforce_limits(&c, u64::MAX / 2, 1000, later).unwrap();
        assert_eq!(r.dropped_expired, items.len() as u64);
        assert_eq!(stats(&c).unwrap().depth, 0);
    }

    #[test]
    fn telemetry_goes_first_and_protected_kinds_stay() {
        let c = db();
        for _ in 0..50 {
            append(&c, "gw", &msg(MessageKind::Telemetry, "t", 1000)).unwrap();
            append(&c, "gw", &msg(MessageKind::Lifecycle, "e", 1000)).unwrap();
            append(&c, "gw", &msg(MessageKind::State, "s", 1000)).unwrap();
        }
        let before = stats(&c).unwrap().bytes;
        let limit = before / 2;
        let r = enforce_limits(&c, limit, u64::MAX / 2, SystemTime::now()).unwrap();
        assert_eq!(r.compacted, 49, "only the latest state row is kept");
        assert!(r.dropped_for_space > 0);
        assert!(r.bytes <= limit, "{r:?}");
        let kinds: Vec<String> = pending(&c, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|m| m.kind)
            .collect();
        assert_eq!(kinds.iter().filter(|k| *k == "lifecycle").count(), 50);
        // The dropped telemetry is the oldest: what is left is a suffix.
        let tele: Vec<i64> = pending(&c, 0, 1000)
            .unwrap()
            .into_iter()
            .filter(|m| m.kind == "telemetry")
            .map(|m| m.seq)
            .collect();
        assert!(tele.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*tele.last().unwrap(), 148);

        // Only protected rows left and still over: reported, not dropped.
        let r = enforce_limits(&c, 1000, u64::MAX / 2, SystemTime::now()).unwrap();
        assert!(r.protected_bytes > 1000);
        assert_eq!(
            pending(&c, 0, 1000)
                .unwrap()
                .iter()
                .filter(|m| m.kind == "lifecycle")
                .count(),
            50
        );
    }

    #[test]
    fn the_quick_check_bounds_the_outbox_without_a_scan() {
        let c = db();
        let now = SystemTime::now();
        let day = 86_400_000;
        let bound = surely_within(&c, 1 << 30, day, now).unwrap();
        assert!(bound.is_some());
        for _ in 0..200 {
            append(&c, "gw", &msg(MessageKind::Telemetry, "t", 1000)).unwrap();
        }
        let real = stats(&c).unwrap().bytes;
        let bound = surely_within(&c, 1 << 30, day, now).unwrap().unwrap();
        assert!(bound >= real, "{bound} < {real}");
        // A limit below what the database holds: not sure, so the caller scans.
        assert_eq!(surely_within(&c, real / 2, day, now).unwrap(), None);
        // Rows older than max_age: not within.
        let later = now + Duration::from_secs(3600);
        assert_eq!(surely_within(&c, 1 << 30, 1000, later).unwrap(), None);
    }

    #[test]
    fn expired_telemetry_is_dropped_but_lifecycle_is_kept() {
        let c = db();
        append(&c, "gw", &msg(MessageKind::Telemetry, "t", 10)).unwrap();
        append(&c, "gw", &msg(MessageKind::Audit, "audit", 10)).unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        let r = enforce_limits(&c, u64::MAX / 2, 1000, later).unwrap();
        assert_eq!(r.dropped_expired, 1);
        assert_eq!(r.protected_expired, 1);
        assert_eq!(stats(&c).unwrap().depth, 1);
    }

    #[test]
    fn bridged_messages_keep_their_payload_and_topic_and_go_like_telemetry() {
        let c = db();
        let raw = br#"{"phyPayload":"AQI="}"#;
        let seq = append_bridged(&c, "eu868/gateway/0016c001ff100001/event/up", raw).unwrap();
        append(&c, "gw", &msg(MessageKind::Audit, "audit", 10)).unwrap();
        let rows = pending(&c, 0, 10).unwrap();
        assert_eq!(rows[0].seq, seq);
        assert_eq!(rows[0].kind, "bridge");
        assert_eq!(rows[0].topic, "eu868/gateway/0016c001ff100001/event/up");
        assert_eq!(rows[0].payload, raw, "published as it is, no envelope");
        // Past their age, bridged frames go and the audit record stays.
        let later = SystemTime::now() + Duration::from_secs(3600);
        let r = enforce_limits(&c, u64::MAX / 2, 1000, later).unwrap();
        assert_eq!((r.dropped_expired, r.protected_expired), (1, 1));
        // Over the byte limit, the oldest bridged frame goes first.
        append_bridged(&c, "t", &[b'x'; 500]).unwrap();
        let r = enforce_limits(&c, 100, u64::MAX / 2, SystemTime::now()).unwrap();
        assert_eq!(r.dropped_for_space, 1);
        assert_eq!(stats(&c).unwrap().depth, 1);
    }

    #[test]
    fn gate_refuses_only_telemetry_and_counts() {
        let g = OutboxGate::default();
        assert!(g.admit(MessageKind::Telemetry));
        g.set_refuse_telemetry(true);
        assert!(!g.admit(MessageKind::Telemetry));
        assert!(g.admit(MessageKind::Lifecycle));
        assert!(g.admit(MessageKind::Audit));
        assert_eq!(g.refused(), 1);
    }
}
