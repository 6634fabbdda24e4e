//! The device registry: what the gateway knows about each device.
//!
//! Functions here run inside a writer transaction (writes) or on a reader
//! connection (queries). Decisions about lifecycle belong to the hub; this module
//! only records them.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::StoreResult;
use crate::model::{DeviceId, DeviceInfo, Lifecycle, Reading};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub protocol: String,
    pub radio: String,
    pub native_address: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub power_source: String,
    pub capabilities: Vec<String>,
    pub last_state: serde_json::Value,
    pub lifecycle: String,
    pub first_seen: String,
    pub last_seen: String,
    /// Health flags currently raised (`offline`, `battery_low`, `weak_link`); `{}` when healthy.
    #[serde(default = "empty_object")]
    pub health: serde_json::Value,
    /// How the device is reached, as its radio reported it (`always_listening`,
    /// `wake_up`, `after_uplink`); `None` until an interview says.
    #[serde(default)]
    pub reachability: Option<String>,
    /// Silence after which it is offline as its radio learnt it (ms; 0: never, it
    /// speaks only when something happens); `None` leaves it to the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_after_ms: Option<i64>,
    /// Its friendly name (`null` when it has none; see `names`).
    #[serde(default)]
    pub name: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

/// The registry's own columns, as [`insert`] writes them.
macro_rules! stored_columns {
    () => {
        "id, protocol, radio, native_address, manufacturer, model, firmware, power_source, \
         capabilities, last_state, lifecycle, first_seen, last_seen, health, \
         reachability, offline_after_ms"
    };
}

/// What a [`Device`] is read from: the registry's columns and the friendly name.
const COLUMNS: &str = concat!(
    stored_columns!(),
    ", (SELECT name FROM device_names WHERE device_id = devices.id)"
);

fn from_row(r: &Row<'_>) -> rusqlite::Result<Device> {
    let caps: String = r.get(8)?;
    let state: String = r.get(9)?;
    Ok(Device {
        id: r.get(0)?,
        protocol: r.get(1)?,
        radio: r.get(2)?,
        native_address: r.get(3)?,
        manufacturer: r.get(4)?,
        model: r.get(5)?,
        firmware: r.get(6)?,
        power_source: r.get(7)?,
        capabilities: serde_json::from_str(&caps).unwrap_or_default(),
        last_state: serde_json::from_str(&state).unwrap_or(serde_json::Value::Null),
        lifecycle: r.get(10)?,
        first_seen: r.get(11)?,
        last_seen: r.get(12)?,
        health: serde_json::from_str(&r.get::<_, String>(13)?).unwrap_or_else(|_| empty_object()),
        reachability: r.get(14)?,
        offline_after_ms: r.get(15)?,
        name: r.get(16)?,
    })
}

pub fn get(conn: &Connection, id: &DeviceId) -> StoreResult<Option<Device>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM devices WHERE id = ?1"))?
        .query_row([id.as_str()], from_row)
        .optional()?)
}

/// Filters for [`list`]; `None` means any.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFilter {
    pub lifecycle: Option<String>,
    pub protocol: Option<String>,
    pub radio: Option<String>,
    /// Only devices first seen at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only devices with a health flag raised, or quarantined.
    pub unhealthy: Option<bool>,
}

pub fn list(conn: &Connection, f: &DeviceFilter) -> StoreResult<Vec<Device>> {
    let mut stmt = conn.prepare(&list_sql())?;
    let rows = stmt.query_map(
        params![f.lifecycle, f.protocol, f.radio, f.since, f.unhealthy],
        from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn list_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM devices
         WHERE (?1 IS NULL OR lifecycle = ?1) AND (?2 IS NULL OR protocol = ?2)
           AND (?3 IS NULL OR radio = ?3) AND (?4 IS NULL OR first_seen >= ?4)
           AND (?5 IS NOT 1 OR health != '{{}}' OR lifecycle = 'quarantined')
         ORDER BY id"
    )
}

/// [`list`] as the JSON array `serde_json` makes of it, written one row at a time:
/// a registry of 10,000 devices costs its JSON bytes, not a `Device` per row on
/// top of them (listing one grew the daemon's RSS from 12 to 60 MB, kept by the
/// allocator afterwards).
pub fn list_json(conn: &Connection, f: &DeviceFilter) -> StoreResult<Vec<u8>> {
    let mut out = Vec::new();
    list_json_chunks(conn, f, usize::MAX, |chunk| {
        out.extend_from_slice(&chunk);
        true
    })?;
    Ok(out)
}

/// [`list_json`] handed out in chunks of about `chunk` bytes as rows are read, so
/// a caller that sends them on (the API's response body) holds one chunk at a time,
/// not the whole array. `emit` returns `false` to stop early (the client went away);
/// the bytes emitted until then are a prefix of [`list_json`]'s.
pub fn list_json_chunks(
    conn: &Connection,
    f: &DeviceFilter,
    chunk: usize,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> StoreResult<()> {
    let mut stmt = conn.prepare(&list_sql())?;
    let mut rows = stmt.query(params![
        f.lifecycle,
        f.protocol,
        f.radio,
        f.since,
        f.unhealthy
    ])?;
    let mut out = vec![b'['];
    let mut first = true;
    while let Some(r) = rows.next()? {
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, &from_row(r)?)
            .map_err(|e| super::StoreError::Invalid(e.to_string()))?;
        if out.len() >= chunk && !emit(std::mem::take(&mut out)) {
            return Ok(());
        }
    }
    out.push(b']');
    emit(out);
    Ok(())
}

/// Counts per lifecycle state.
pub fn counts(conn: &Connection) -> StoreResult<Vec<(String, u64)>> {
    let mut stmt = conn
        .prepare("SELECT lifecycle, count(*) FROM devices GROUP BY lifecycle ORDER BY lifecycle")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes `radio`'s pending devices beyond the `keep` most recently seen (the oldest
/// go first), except those holding a credential; returns the ids deleted. Bounds what
/// a radio that discovers devices (BLE: anything in range) can put in the registry.
pub fn forget_oldest_pending(
    conn: &Connection,
    radio: &str,
    keep: usize,
) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM devices WHERE id IN (
             SELECT id FROM devices
              WHERE radio = ?1 AND lifecycle = 'pending'
                AND id NOT IN (SELECT device_id FROM credentials WHERE device_id IS NOT NULL)
              ORDER BY last_seen DESC, id LIMIT -1 OFFSET ?2)
         RETURNING id",
    )?;
    let rows = stmt.query_map(params![radio, keep as i64], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records a join; a known device keeps its history and becomes pending again
/// only if it had been decommissioned. Returns the device and whether it is new.
pub fn upsert_joined(
    conn: &Connection,
    id: &DeviceId,
    protocol: &str,
    radio: &str,
    native_address: &str,
    ts: &str,
) -> StoreResult<(Device, bool)> {
    let existing = get(conn, id)?;
    let is_new = existing.is_none();
    match existing {
        None => {
            conn.prepare_cached("INSERT INTO devices (id, protocol, radio, native_address, lifecycle, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)")?.execute(params![id.as_str(), protocol, radio, native_address, ts],
            )?;
        }
        Some(d) => {
            let lifecycle = if d.lifecycle == Lifecycle::Decommissioned.as_str() {
                Lifecycle::Pending.as_str().to_string()
            } else {
                d.lifecycle
            };
            conn.prepare_cached(
                "UPDATE devices SET radio = ?2, last_seen = ?3, lifecycle = ?4 WHERE id = ?1",
            )?
            .execute(params![id.as_str(), radio, ts, lifecycle])?;
        }
    }
    let device = get(conn, id)?
        .ok_or_else(|| super::StoreError::Invalid(format!("device {id} vanished")))?;
    Ok((device, is_new))
}

/// Stores what an interview found; returns the previous firmware if it changed.
pub fn apply_info(
    conn: &Connection,
    id: &DeviceId,
    info: &DeviceInfo,
    ts: &str,
) -> StoreResult<Option<Option<String>>> {
    let before = get(conn, id)?;
    let caps = serde_json::to_string(&info.capabilities).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "UPDATE devices SET
            manufacturer = coalesce(?2, manufacturer),
            model = coalesce(?3, model),
            firmware = coalesce(?4, firmware),
            power_source = coalesce(?5, power_source),
            capabilities = CASE WHEN ?6 = '[]' THEN capabilities ELSE ?6 END,
            last_seen = ?7,
            reachability = coalesce(?8, reachability),
            offline_after_ms = coalesce(?9, offline_after_ms)
         WHERE id = ?1",
    )?
    .execute(params![
        id.as_str(),
        info.manufacturer,
        info.model,
        info.firmware,
        info.power_source.map(|p| p.as_str()),
        caps,
        ts,
        info.reachability.map(|r| r.as_str()),
        info.silence.map(|s| s.offline_after_ms()),
    ])?;
    Ok(match (before, &info.firmware) {
        (Some(b), Some(new)) if b.firmware.as_deref() != Some(new.as_str()) => Some(b.firmware),
        _ => None,
    })
}

/// Merges readings into the state of a known device that is not decommissioned (a
/// JSON merge patch on the stored state, see [`merge_patch`]); returns the new state
/// and the device's health flags as JSON text, or `None` when the device is unknown
/// or decommissioned (the caller decides what that means).
pub fn merge_readings(
    conn: &Connection,
    id: &DeviceId,
    readings: &[Reading],
    ts: &str,
) -> StoreResult<Option<(String, String)>> {
    let found: Option<(i64, String, String)> = conn
        .prepare_cached(
            "SELECT rowid, last_state, health FROM devices
              WHERE id = ?1 AND lifecycle != 'decommissioned'",
        )?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((row, stored, health)) = found else {
        return Ok(None);
    };
    let mut patch = serde_json::Map::with_capacity(readings.len());
    for r in readings {
        patch.insert(
            r.name.clone(),
            serde_json::to_value(&r.value).unwrap_or(serde_json::Value::Null),
        );
    }
    let state = merged(&stored, &patch);
    write_state(conn, row, &state, ts)?;
    Ok(Some((state, health)))
}

/// A known device that is not decommissioned, as a burst reads it once: its row
/// (for [`merge_state`], within the same transaction), its health flags as JSON
/// text, whether it is pending, and its stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRow {
    pub row: i64,
    pub health: String,
    pub pending: bool,
    pub stored: StoredState,
}

/// A device's stored state and when its retained state was last queued or is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub state: String,
    pub sent_ms: i64,
    pub due_ms: Option<i64>,
}

impl StoredState {
    /// From `last_state, state_sent_ms, state_due_ms` at columns `first ..`.
    fn from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<StoredState> {
        Ok(StoredState {
            state: r.get(first)?,
            sent_ms: r.get(first + 1)?,
            due_ms: r.get(first + 2)?,
        })
    }
}

pub fn live_row(conn: &Connection, id: &DeviceId) -> StoreResult<Option<LiveRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT rowid, health, lifecycle = 'pending', last_state, state_sent_ms, state_due_ms
               FROM devices WHERE id = ?1 AND lifecycle != 'decommissioned'",
        )?
        .query_row([id.as_str()], |r| {
            Ok(LiveRow {
                row: r.get(0)?,
                health: r.get(1)?,
                pending: r.get(2)?,
                stored: StoredState::from_row(r, 3)?,
            })
        })
        .optional()?)
}

/// When a device's retained state may be queued: at most once per `interval_ms`
/// (`[store] state_interval`; 0: every time it changes), `now_ms` being the time of
/// the commit.
#[derive(Debug, Clone, Copy)]
pub struct StatePace {
    pub now_ms: i64,
    pub interval_ms: i64,
}

/// Applies a JSON merge patch of readings to the state of the device at `row` (from
/// [`live_row`] in the same transaction); returns the new state and whether it is
/// to be queued now (else it waits, due when `pace`'s interval has passed since
/// the last one queued: see [`due_states`]), or `None` when that row is no longer
/// `id`'s or the device is decommissioned since.
///
/// `read` is the stored state [`live_row`] read, when nothing else has written to
/// the registry since: then the row is not read again. Otherwise (`None`) it is
/// read again by rowid and checked to be still `id`'s and live.
///
/// A read by rowid (at most), the merge here and a plain `UPDATE` by rowid: with
/// many devices every event of a burst is another device's, and this is the store
/// writer's work per event. An `UPDATE .. RETURNING` with SQLite's `json_patch`
/// cost more: a seek through the text key's index, the JSON functions, and a
/// statement journal (its `RETURNING` makes it a multi-write statement, so each
/// page it changed was copied first).
pub fn merge_state(
    conn: &Connection,
    row: i64,
    id: &DeviceId,
    read: Option<StoredState>,
    patch: &serde_json::Map<String, serde_json::Value>,
    ts: &str,
    pace: StatePace,
) -> StoreResult<Option<(String, bool)>> {
    let stored = match read {
        Some(read) => Some(read),
        None => conn
            .prepare_cached(
                "SELECT last_state, state_sent_ms, state_due_ms FROM devices
                  WHERE rowid = ?1 AND id = ?2 AND lifecycle != 'decommissioned'",
            )?
            .query_row(params![row, id.as_str()], |r| StoredState::from_row(r, 0))
            .optional()?,
    };
    let Some(StoredState {
        state: stored,
        sent_ms,
        due_ms,
    }) = stored
    else {
        return Ok(None);
    };
    let state = merged(&stored, patch);
    // A clock set back makes the last one look recent: then it is queued now.
    let since = pace.now_ms - sent_ms;
    let now = pace.interval_ms <= 0 || !(0..pace.interval_ms).contains(&since);
    let sql = if now {
        "UPDATE devices SET last_state = ?2, last_seen = ?3, state_sent_ms = ?4,
                            state_due_ms = NULL
          WHERE rowid = ?1"
    } else if due_ms.is_some() {
        // Already waiting: the due time stands (the index is left alone).
        "UPDATE devices SET last_state = ?2, last_seen = ?3 WHERE rowid = ?1"
    } else {
        "UPDATE devices SET last_state = ?2, last_seen = ?3, state_due_ms = ?4 WHERE rowid = ?1"
    };
    let stamp = if now {
        pace.now_ms
    } else {
        sent_ms + pace.interval_ms
    };
    let args = params![row, state, ts, stamp];
    let used = if !now && due_ms.is_some() {
        &args[..3]
    } else {
        args
    };
    conn.prepare_cached(sql)?.execute(used)?;
    Ok(Some((state, now)))
}

fn write_state(conn: &Connection, row: i64, state: &str, ts: &str) -> StoreResult<()> {
    conn.prepare_cached("UPDATE devices SET last_state = ?2, last_seen = ?3 WHERE rowid = ?1")?
        .execute(params![row, state, ts])?;
    Ok(())
}

/// The device's retained state was queued at `now_ms`: nothing of it waits.
pub fn state_queued(conn: &Connection, id: &DeviceId, now_ms: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE devices SET state_sent_ms = ?2, state_due_ms = NULL WHERE id = ?1",
    )?
    .execute(params![id.as_str(), now_ms])?;
    Ok(())
}

/// A retained state that waited for `[store] state_interval` and is due.
#[derive(Debug)]
pub struct DueState {
    pub row: i64,
    pub id: DeviceId,
    pub state: String,
    pub last_seen: String,
    /// Decommissioned since: nothing is to be queued, only the wait cleared.
    pub gone: bool,
    /// Still pending (a discovered device's state is not sent until it is adopted).
    pub pending: bool,
}

/// States due by `until_ms`, oldest due first (at most `limit`).
/// The waiting states due by ?1, oldest first. No `LIMIT ?`: SQLite reads a bound
/// LIMIT while planning, so such a statement is parsed and planned again whenever
/// the value is bound anew (every commit); the caller stops stepping instead.
const DUE_STATES: &str = "SELECT rowid, id, last_state, last_seen, lifecycle = 'decommissioned',
      lifecycle = 'pending' FROM devices WHERE state_due_ms <= ?1 ORDER BY state_due_ms";
const ALL_DUE_STATES_DONE: &str =
    "UPDATE devices SET state_sent_ms = ?2, state_due_ms = NULL WHERE state_due_ms <= ?1";

pub fn due_states(conn: &Connection, until_ms: i64, limit: usize) -> StoreResult<Vec<DueState>> {
    let mut stmt = conn.prepare_cached(DUE_STATES)?;
    let rows = stmt.query_map(params![until_ms], |r| {
        Ok(DueState {
            row: r.get(0)?,
            id: DeviceId(r.get(1)?),
            state: r.get(2)?,
            last_seen: r.get(3)?,
            gone: r.get(4)?,
            pending: r.get(5)?,
        })
    })?;
    Ok(rows.take(limit).collect::<Result<_, _>>()?)
}

/// The waiting state at `row` was queued at `now_ms` (or dropped: decommissioned).
pub fn due_state_done(conn: &Connection, row: i64, now_ms: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE devices SET state_sent_ms = ?2, state_due_ms = NULL WHERE rowid = ?1",
    )?
    .execute(params![row, now_ms])?;
    Ok(())
}

/// Every waiting state due by `until_ms` was queued at `now_ms` (or dropped).
pub fn due_states_done(conn: &Connection, until_ms: i64, now_ms: i64) -> StoreResult<()> {
    conn.prepare_cached(ALL_DUE_STATES_DONE)?
        .execute(params![until_ms, now_ms])?;
    Ok(())
}

/// When the next waiting state is due (ms), if one waits.
pub fn next_state_due(conn: &Connection) -> StoreResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT min(state_due_ms) FROM devices WHERE state_due_ms IS NOT NULL")?
        .query_row([], |r| r.get(0))?)
}

/// The stored state (JSON text) with `patch` merged into it; a stored state that is
/// not a JSON object is replaced, not an error.
fn merged(stored: &str, patch: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut state = match serde_json::from_str(stored) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    merge_patch(&mut state, patch);
    serde_json::Value::Object(state).to_string()
}

/// RFC 7396 JSON merge patch (what SQLite's `json_patch` does): a `null` removes
/// its key, an object merges into the object under its key (replacing anything
/// else there), any other value replaces.
fn merge_patch(
    target: &mut serde_json::Map<String, serde_json::Value>,
    patch: &serde_json::Map<String, serde_json::Value>,
) {
    use serde_json::Value;
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let slot = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(serde_json::Map::new());
                }
                if let Value::Object(t) = slot {
                    merge_patch(t, p);
                }
            }
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

/// What the availability check reads of a live device: the columns that decide
/// its timeout and whether it is silent, borrowed from the row.
pub struct Presence<'r> {
    pub protocol: &'r str,
    pub native_address: &'r str,
    pub manufacturer: Option<&'r str>,
    pub model: Option<&'r str>,
    pub power_source: &'r str,
    pub last_seen: &'r str,
    /// The capabilities column as stored (a JSON array).
    pub capabilities: &'r str,
    /// What the radio learnt of its silence (see [`Device::offline_after_ms`]).
    pub offline_after_ms: Option<i64>,
}

/// The live devices whose `offline` flag is to change: `silent` says, from a
/// device's [`Presence`], whether it should be offline now (and something to keep
/// with the answer), or `None` to leave it as it is; returns (id, offline, kept)
/// for each device where that differs from its flag. One pass over the registry
/// reading only these columns: a registry of 10,000 devices costs no `Device`
/// value and no statement per device, only one per change.
pub fn offline_changes<T>(
    conn: &Connection,
    mut silent: impl FnMut(&Presence<'_>) -> Option<(bool, T)>,
) -> StoreResult<Vec<(DeviceId, bool, T)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, protocol, native_address, manufacturer, model, power_source, last_seen,
                CASE WHEN health = '{}' OR NOT json_valid(health) THEN 0
                     ELSE json_extract(health, '$.offline') IS NOT NULL END,
                capabilities, offline_after_ms
           FROM devices WHERE lifecycle != 'decommissioned'",
    )?;
    let mut rows = stmt.query([])?;
    let mut changes = Vec::new();
    while let Some(r) = rows.next()? {
        let presence = Presence {
            protocol: text(r, 1)?,
            native_address: text(r, 2)?,
            manufacturer: maybe_text(r, 3)?,
            model: maybe_text(r, 4)?,
            power_source: text(r, 5)?,
            last_seen: text(r, 6)?,
            capabilities: text(r, 8)?,
            offline_after_ms: r.get(9)?,
        };
        let offline: bool = r.get(7)?;
        if let Some((should, kept)) = silent(&presence) {
            if should != offline {
                changes.push((DeviceId(text(r, 0)?.to_string()), should, kept));
            }
        }
    }
    Ok(changes)
}

fn text<'r>(r: &'r Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    Ok(r.get_ref(i)?.as_str()?)
}

fn maybe_text<'r>(r: &'r Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    Ok(r.get_ref(i)?.as_str_or_null()?)
}

pub fn set_lifecycle(conn: &Connection, id: &DeviceId, lifecycle: Lifecycle) -> StoreResult<usize> {
    Ok(conn
        .prepare_cached("UPDATE devices SET lifecycle = ?2 WHERE id = ?1")?
        .execute(params![id.as_str(), lifecycle.as_str()])?)
}

/// Raises or clears one health flag; returns whether it changed.
pub fn set_health_flag(
    conn: &Connection,
    id: &DeviceId,
    flag: &str,
    raised: bool,
) -> StoreResult<bool> {
    let current: Option<String> = conn
        .prepare_cached("SELECT health FROM devices WHERE id = ?1")?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()?;
    let Some(current) = current else {
        return Ok(false);
    };
    let mut health: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&current).unwrap_or_default();
    if health.contains_key(flag) == raised {
        return Ok(false);
    }
    if raised {
        health.insert(flag.to_string(), serde_json::Value::Bool(true));
    } else {
        health.remove(flag);
    }
    conn.prepare_cached("UPDATE devices SET health = ?2 WHERE id = ?1")?
        .execute(params![
            id.as_str(),
            serde_json::Value::Object(health).to_string()
        ])?;
    Ok(true)
}

/// Inserts a device as-is (used by import and tests).
pub fn insert(conn: &Connection, d: &Device) -> StoreResult<()> {
    conn.execute(
        concat!(
            "INSERT INTO devices (",
            stored_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ),
        params![
            d.id,
            d.protocol,
            d.radio,
            d.native_address,
            d.manufacturer,
            d.model,
            d.firmware,
            d.power_source,
            serde_json::to_string(&d.capabilities).unwrap_or_else(|_| "[]".into()),
            d.last_state.to_string(),
            d.lifecycle,
            d.first_seen,
            d.last_seen,
            d.health.to_string(),
            d.reachability,
            d.offline_after_ms
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    fn db() -> Connection {
        super::super::schema::in_memory_for_tests()
    }

    fn reading(name: &str, value: Value) -> Reading {
        Reading {
            name: name.into(),
            value,
            unit: None,
        }
    }

    #[test]
    fn the_streamed_list_is_the_list_serialized() {
        let c = db();
        let ts = "2026-01-01T00:00:00.000Z";
        let empty = DeviceFilter::default();
        assert_eq!(list_json(&c, &empty).unwrap(), b"[]");
        for a in ["0x0002", "0x0001", "0x0003"] {
            let id = DeviceId(format!("zigbee:{a}"));
            upsert_joined(&c, &id, "zigbee", "zb0", a, ts).unwrap();
            merge_readings(&c, &id, &[reading("t", Value::Number(1.5))], ts).unwrap();
        }
        let streamed = list_json(&c, &empty).unwrap();
        assert_eq!(
            streamed,
            serde_json::to_vec(&list(&c, &empty).unwrap()).unwrap()
        );
        let v: serde_json::Value = serde_json::from_slice(&streamed).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[0]["id"], "zigbee:0x0001");
        assert_eq!(v[0]["name"], serde_json::Value::Null);
        // A friendly name is listed with its device, and `get` has it too.
        let named = DeviceId("zigbee:0x0002".into());
        super::super::names::set(&c, &named, Some("hall plug")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&list_json(&c, &empty).unwrap()).unwrap();
        assert_eq!(v[1]["name"], "hall plug");
        assert_eq!(
            get(&c, &named).unwrap().unwrap().name.as_deref(),
            Some("hall plug")
        );
        let streamed = list_json(&c, &empty).unwrap();
        // In chunks of any size the concatenation is the same bytes; each chunk but the
        // last is at least the size asked for, and a stop leaves a prefix.
        for size in [1, 10, 200, 1 << 20] {
            let mut chunks = Vec::new();
            list_json_chunks(&c, &empty, size, |ch| {
                chunks.push(ch);
                true
            })
            .unwrap();
            assert_eq!(chunks.concat(), streamed, "chunk size {size}");
            for ch in &chunks[..chunks.len() - 1] {
                assert!(ch.len() >= size);
            }
        }
        let mut first = Vec::new();
        list_json_chunks(&c, &empty, 1, |ch| {
            first.push(ch);
            false
        })
        .unwrap();
        assert_eq!(first.len(), 1);
        assert!(streamed.starts_with(&first[0]));
    }

    #[test]
    fn the_oldest_pending_devices_of_a_radio_are_forgotten_first() {
        let c = db();
        for i in 0..6 {
            let id = DeviceId(format!("ble:00:00:00:00:00:0{i}"));
            let ts = format!("2026-01-01T00:00:0{i}.000Z");
            upsert_joined(&c, &id, "ble", "ble0", &id.0[4..], &ts).unwrap();
        }
        // Another radio's, an active one and one with a credential are kept.
        upsert_joined(
            &c,
            &DeviceId("ble:11:00:00:00:00:00".into()),
            "ble",
            "ble1",
            "x",
            "2025-01-01T00:00:00.000Z",
        )
        .unwrap();
        set_lifecycle(
            &c,
            &DeviceId("ble:00:00:00:00:00:01".into()),
            Lifecycle::Active,
        )
        .unwrap();
        c.execute(
            "INSERT INTO credentials (device_id, kind, nonce, ciphertext, created_at) VALUES ('ble:00:00:00:00:00:00', 'bthome_bindkey', x'00', x'00', '')",
            [],
        )
        .unwrap();
        let mut gone = forget_oldest_pending(&c, "ble0", 2).unwrap();
        gone.sort();
        assert_eq!(gone, ["ble:00:00:00:00:00:02", "ble:00:00:00:00:00:03"]);
        assert!(forget_oldest_pending(&c, "ble0", 2).unwrap().is_empty());
        assert_eq!(list(&c, &DeviceFilter::default()).unwrap().len(), 5);
    }

    /// The merge done here is SQLite's `json_patch` (RFC 7396), which the stored
    /// states were merged with before: the same states come out of both.
    #[test]
    fn the_merge_is_sqlites_json_patch() {
        let c = db();
        let cases = [
            (r#"{}"#, r#"{"t":21.5}"#),
            (r#"{"t":21.5,"on":true}"#, r#"{"t":22,"h":50}"#),
            (r#"{"t":21.5,"on":true}"#, r#"{"on":null,"gone":null}"#),
            (
                r#"{"a":{"x":1,"y":2},"b":3}"#,
                r#"{"a":{"y":null,"z":[1,2]},"b":{"c":null,"d":"e"}}"#,
            ),
            (r#"{"a":[1,2]}"#, r#"{"a":{"k":1}}"#),
            (
                r#"{"s":"é\"\n","n":-0.000123,"big":12345678901234567}"#,
                r#"{"u":1e300,"i":-7}"#,
            ),
            (r#"not json"#, r#"{"on":false}"#),
            (r#"[1,2]"#, r#"{"on":false}"#),
        ];
        for (stored, patch) in cases {
            let ours: serde_json::Value = serde_json::from_str(&merged(
                stored,
                serde_json::from_str::<serde_json::Value>(patch)
                    .unwrap()
                    .as_object()
                    .unwrap(),
            ))
            .unwrap();
            let sqlite: String = c
                .query_row(
                    "SELECT json_patch(CASE WHEN json_valid(?1) AND json_type(?1) = 'object'
                                            THEN ?1 ELSE '{}' END, ?2)",
                    [stored, patch],
                    |r| r.get(0),
                )
                .unwrap();
            let sqlite: serde_json::Value = serde_json::from_str(&sqlite).unwrap();
            assert_eq!(ours, sqlite, "{stored} + {patch}");
        }
    }

    const EVERY: StatePace = StatePace {
        now_ms: 1_000,
        interval_ms: 0,
    };

    /// With an interval, the first state after a quiet spell is queued at once, the
    /// next ones wait until the interval has passed since it and are then due once,
    /// with the state merged so far; a decommissioned device's wait is dropped.
    #[test]
    fn a_state_waits_out_the_interval_since_the_last_one_queued() {
        let c = db();
        let ts = "2026-01-01T00:00:00.000Z";
        let a = DeviceId("zigbee:0x000a".into());
        let b = DeviceId("zigbee:0x000b".into());
        upsert_joined(&c, &a, "zigbee", "zb0", "0x000a", ts).unwrap();
        upsert_joined(&c, &b, "zigbee", "zb0", "0x000b", ts).unwrap();
        let ra = live_row(&c, &a).unwrap().unwrap().row;
        let rb = live_row(&c, &b).unwrap().unwrap().row;
        let patch = |j: &str| -> serde_json::Map<String, serde_json::Value> {
            serde_json::from_str(j).unwrap()
        };
        let at = |now_ms| StatePace {
            now_ms,
            interval_ms: 1_000,
        };
        let merge = |row, id, j: &str, now_ms| {
            merge_state(&c, row, id, None, &patch(j), ts, at(now_ms))
                .unwrap()
                .map(|(_, now)| now)
        };
        assert_eq!(merge(ra, &a, r#"{"t":1}"#, 10_000), Some(true));
        assert_eq!(merge(ra, &a, r#"{"h":5}"#, 10_200), Some(false));
        assert_eq!(merge(ra, &a, r#"{"t":2}"#, 10_900), Some(false));
        assert_eq!(next_state_due(&c).unwrap(), Some(11_000));
        assert_eq!(merge(rb, &b, r#"{"t":7}"#, 10_950), Some(true));
        assert_eq!(merge(rb, &b, r#"{"t":8}"#, 11_100), Some(false));
        assert!(due_states(&c, 10_999, 10).unwrap().is_empty());
        let due = due_states(&c, 11_000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].row, &due[0].id, due[0].gone), (ra, &a, false));
        assert_eq!(due[0].state, r#"{"h":5,"t":2}"#);
        due_state_done(&c, ra, 11_000).unwrap();
        assert_eq!(next_state_due(&c).unwrap(), Some(11_950));
        // The one just queued counts: the next reading of a waits again.
        assert_eq!(merge(ra, &a, r#"{"t":3}"#, 11_500), Some(false));
        set_lifecycle(&c, &b, Lifecycle::Decommissioned).unwrap();
        let due = due_states(&c, i64::MAX, 10).unwrap();
        assert_eq!(
            due.iter().map(|d| (&d.id, d.gone)).collect::<Vec<_>>(),
            [(&b, true), (&a, false)]
        );
        due_states_done(&c, 11_950, 12_000).unwrap();
        assert_eq!(next_state_due(&c).unwrap(), Some(12_000), "only b's");
        // Once the interval has passed, the next reading is queued at once and
        // nothing waits any more.
        assert_eq!(merge(ra, &a, r#"{"t":4}"#, 12_100), Some(true));
        assert_eq!(next_state_due(&c).unwrap(), None);
        // A clock set back does not hold a state for ever.
        assert_eq!(merge(ra, &a, r#"{"t":5}"#, 5_000), Some(true));
        state_queued(&c, &a, 20_000).unwrap();
        assert_eq!(merge(ra, &a, r#"{"t":6}"#, 20_500), Some(false));
        state_queued(&c, &a, 20_600).unwrap();
        assert_eq!(next_state_due(&c).unwrap(), None);
    }

    /// The due-state statements run with a new time on every commit: they must keep
    /// their prepared plan (a re-prepare parses and plans the SQL again each time).
    #[test]
    fn due_state_statements_are_not_prepared_again_for_each_time() {
        let c = db();
        let ts = "2026-01-01T00:00:00.000Z";
        let a = DeviceId("zigbee:0x000a".into());
        upsert_joined(&c, &a, "zigbee", "zb0", "0x000a", ts).unwrap();
        for until in [1_000, 2_000, 3_000] {
            due_states(&c, until, 10).unwrap();
            due_states_done(&c, until, until).unwrap();
        }
        for sql in [DUE_STATES, ALL_DUE_STATES_DONE] {
            let stmt = c.prepare_cached(sql).unwrap();
            let again = stmt.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(again, 0, "{sql}");
        }
    }

    /// A burst reads a device's row once and writes its merged readings later in the
    /// same transaction: a row deleted meanwhile (a pending device forgotten) and
    /// handed to another device is not written.
    #[test]
    fn a_merge_writes_only_the_row_of_its_own_device() {
        let c = db();
        let ts = "2026-01-01T00:00:00.000Z";
        let a = DeviceId("ble:00:00:00:00:00:0a".into());
        let b = DeviceId("ble:00:00:00:00:00:0b".into());
        upsert_joined(&c, &a, "ble", "ble0", "a", ts).unwrap();
        let live = live_row(&c, &a).unwrap().unwrap();
        let row = live.row;
        assert_eq!((live.health.as_str(), live.pending), ("{}", true));
        let patch: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"t":1}"#).unwrap();
        assert_eq!(
            merge_state(&c, row, &a, Some(live.stored), &patch, ts, EVERY).unwrap(),
            Some((r#"{"t":1}"#.to_string(), true))
        );
        // Read again (as after other writes): the same merge.
        let patch2: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"h":2}"#).unwrap();
        assert_eq!(
            merge_state(&c, row, &a, None, &patch2, ts, EVERY).unwrap(),
            Some((r#"{"h":2,"t":1}"#.to_string(), true))
        );
        c.execute("DELETE FROM devices WHERE id = ?1", [a.as_str()])
            .unwrap();
        upsert_joined(&c, &b, "ble", "ble0", "b", ts).unwrap();
        assert_eq!(
            live_row(&c, &b).unwrap().unwrap().row,
            row,
            "the row is reused"
        );
        assert_eq!(
            merge_state(&c, row, &a, None, &patch, ts, EVERY).unwrap(),
            None
        );
        assert_eq!(
            get(&c, &b).unwrap().unwrap().last_state,
            serde_json::json!({})
        );
        set_lifecycle(&c, &b, Lifecycle::Decommissioned).unwrap();
        assert_eq!(
            merge_state(&c, row, &b, None, &patch, ts, EVERY).unwrap(),
            None
        );
        assert_eq!(live_row(&c, &b).unwrap(), None);
    }

    #[test]
    fn readings_merge_into_the_stored_state_of_known_live_devices_only() {
        let c = db();
        let id = DeviceId("zigbee:0x0001".into());
        let ts = "2026-01-01T00:00:00.000Z";
        assert_eq!(
            merge_readings(&c, &id, &[reading("t", Value::Number(1.0))], ts).unwrap(),
            None,
            "unknown device"
        );
        upsert_joined(&c, &id, "zigbee", "zb0", "0x0001", ts).unwrap();
        let (state, health) = merge_readings(
            &c,
            &id,
            &[
                reading("temperature", Value::Number(21.5)),
                reading("on", Value::Bool(true)),
            ],
            ts,
        )
        .unwrap()
        .unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state, serde_json::json!({"temperature": 21.5, "on": true}));
        assert_eq!(health, "{}");
        // Later readings replace their own keys and keep the others.
        let (state, _) = merge_readings(
            &c,
            &id,
            &[reading("temperature", Value::Number(22.0))],
            "2026-01-01T00:00:01.000Z",
        )
        .unwrap()
        .unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state, serde_json::json!({"temperature": 22.0, "on": true}));
        let d = get(&c, &id).unwrap().unwrap();
        assert_eq!(d.last_state, state);
        assert_eq!(d.last_seen, "2026-01-01T00:00:01.000Z");
        // A corrupt stored state is replaced, not an error.
        c.execute(
            "UPDATE devices SET last_state = 'not json' WHERE id = ?1",
            [id.as_str()],
        )
        .unwrap();
        let (state, _) = merge_readings(&c, &id, &[reading("on", Value::Bool(false))], ts)
            .unwrap()
            .unwrap();
        assert_eq!(state, r#"{"on":false}"#);
        set_lifecycle(&c, &id, Lifecycle::Decommissioned).unwrap();
        assert_eq!(
            merge_readings(&c, &id, &[reading("on", Value::Bool(true))], ts).unwrap(),
            None,
            "decommissioned device"
        );
    }
}
