//! The database schema, as an ordered list of migrations.
//!
//! Migrations only ever get appended; a released one is never edited, because
//! gateways in the field carry databases at every version.

use rusqlite_migration::{Migrations, M};

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    protocol       TEXT NOT NULL,
    radio          TEXT NOT NULL,
    native_address TEXT NOT NULL,
    manufacturer   TEXT,
    model          TEXT,
    firmware       TEXT,
    power_source   TEXT NOT NULL DEFAULT 'unknown',
    capabilities   TEXT NOT NULL DEFAULT '[]',
    last_state     TEXT NOT NULL DEFAULT '{}',
    lifecycle      TEXT NOT NULL
        CHECK (lifecycle IN ('pending', 'active', 'quarantined', 'decommissioned')),
    first_seen     TEXT NOT NULL,
    last_seen      TEXT NOT NULL
);
CREATE INDEX devices_by_radio ON devices (radio, native_address);

-- Secrets are stored encrypted with the gateway master key; never in clear.
CREATE TABLE credentials (
    id          INTEGER PRIMARY KEY,
    device_id   TEXT,
    kind        TEXT NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    rotated_at  TEXT,
    UNIQUE (device_id, kind)
);

CREATE TABLE policies (
    version     INTEGER PRIMARY KEY,
    document    TEXT NOT NULL,
    signature   TEXT,
    source      TEXT NOT NULL,
    received_at TEXT NOT NULL,
    active      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    ts        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    outcome   TEXT NOT NULL CHECK (outcome IN ('accepted', 'refused', 'failed')),
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Messages waiting for a PUBACK. id is the per-gateway sequence number.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id      TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    device_id   TEXT,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    retain      INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_by_kind ON outbox (kind, id);
"#,
        ),
        // Health flags that are currently raised, e.g. {"offline": true}; '{}' when healthy.
        M::up("ALTER TABLE devices ADD COLUMN health TEXT NOT NULL DEFAULT '{}';"),
        // Requests for sleeping devices, held until the device next speaks (or expires_ms),
        // and the answers already given to requests, so a request delivered again after a
        // restart is answered again instead of being carried out twice.
        M::up(
            r#"
CREATE TABLE device_requests (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id      TEXT NOT NULL,
    correlation_id TEXT,
    operation      TEXT NOT NULL CHECK (operation IN ('set', 'get')),
    command        TEXT NOT NULL,
    origin         TEXT NOT NULL CHECK (origin IN ('mqtt', 'api')),
    actor          TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent')),
    command_id     TEXT UNIQUE,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    expires_ms     INTEGER NOT NULL
);
CREATE INDEX device_requests_by_device ON device_requests (device_id, id);
CREATE INDEX device_requests_by_expiry ON device_requests (state, expires_ms);

CREATE TABLE request_replay (
    operation      TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    response       BLOB,
    created_ms     INTEGER NOT NULL,
    PRIMARY KEY (operation, correlation_id)
);
CREATE INDEX request_replay_by_age ON request_replay (created_ms);
"#,
        ),
        // The outbox without a unique index on msg_id: ids are UUIDv7 made here, unique
        // by construction, and the index cost a B-tree insert and delete per message.
        // The AUTOINCREMENT high-water mark is carried over so no seq is ever reused.
        M::up(
            r#"
CREATE TABLE outbox_next (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    device_id   TEXT,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    retain      INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO outbox_next (id, msg_id, kind, device_id, topic, payload, retain, created_ms, attempts)
    SELECT id, msg_id, kind, device_id, topic, payload, retain, created_ms, attempts FROM outbox;
DELETE FROM sqlite_sequence WHERE name = 'outbox_next';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_next', seq FROM sqlite_sequence WHERE name = 'outbox';
DROP TABLE outbox;
ALTER TABLE outbox_next RENAME TO outbox;
CREATE INDEX outbox_by_kind ON outbox (kind, id);
"#,
        ),
        // How many messages a row holds: one device's readings committed together
        // share a row (seqs id .. id + messages - 1), one insert and one delete for all.
        M::up("ALTER TABLE outbox ADD COLUMN messages INTEGER NOT NULL DEFAULT 1;"),
        // How the device is reached (always_listening, wake_up, after_uplink), as its
        // radio reported it; decides whether requests for it are held.
        M::up("ALTER TABLE devices ADD COLUMN reachability TEXT;"),
        // The database's life: made once, with the database (or with this migration),
        // carried in every envelope, so a consumer tells a reset gateway's new `seq`
        // from the old one. Creation time in ms (13 digits) then 8 random hex
        // digits: lives sort by creation.
        M::up(
            r#"
CREATE TABLE gateway_life (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    life TEXT NOT NULL
);
INSERT INTO gateway_life (id, life) VALUES (1,
    printf('%013d', CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
    || '-' || lower(hex(randomblob(4))));
"#,
        ),
        // Friendly names, unique per gateway, set over MQTT (`rename`); a table of
        // their own so the registry's rows and readers are untouched.
        M::up(
            r#"
CREATE TABLE device_names (
    device_id TEXT PRIMARY KEY REFERENCES devices (id),
    name      TEXT NOT NULL UNIQUE
);
"#,
        ),
        // Forward-secure seals over the audit log, one per epoch (see store/audit_seal.rs);
        // append-only like the log itself.
        M::up(
            r#"
CREATE TABLE audit_seals (
    epoch     INTEGER PRIMARY KEY,
    ts        TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    prev_mac  TEXT NOT NULL,
    mac       TEXT NOT NULL
);
CREATE TRIGGER audit_seals_no_update BEFORE UPDATE ON audit_seals
BEGIN SELECT RAISE(ABORT, 'the audit seals are append-only'); END;
CREATE TRIGGER audit_seals_no_delete BEFORE DELETE ON audit_seals
BEGIN SELECT RAISE(ABORT, 'the audit seals are append-only'); END;
"#,
        ),
        // The denylist (`remove --block`): devices refused until re-admitted, known or not.
        M::up(
            r#"
CREATE TABLE device_blocks (
    device_id  TEXT PRIMARY KEY,
    blocked_at TEXT NOT NULL,
    actor      TEXT NOT NULL
);
"#,
        ),
        // How long the device may stay silent before it is offline, when its radio
        // knows (a BLE advertiser's own interval): ms, 0 for never (it speaks only when
        // something happens); NULL leaves it to the policy's power-source timeouts.
        M::up("ALTER TABLE devices ADD COLUMN offline_after_ms INTEGER;"),
        // Where an MQTT 5 requester wants its answers: the request's Response Topic and
        // Correlation Data (bytes), kept with a held request and with each answer it
        // gets later through the outbox. NULL: `response/<operation>`.
        M::up(
            r#"
ALTER TABLE device_requests ADD COLUMN response_topic TEXT;
ALTER TABLE device_requests ADD COLUMN correlation_data BLOB;
ALTER TABLE outbox ADD COLUMN response_topic TEXT;
ALTER TABLE outbox ADD COLUMN correlation_data BLOB;
"#,
        ),
        // When the device's retained state was last queued (ms), and, while a newer
        // state waits for `[store] state_interval` to pass, when it is due (ms; NULL
        // when nothing waits). Kept with the row, so a state that waits when the
        // gateway stops is queued at the next start.
        M::up(
            r#"
ALTER TABLE devices ADD COLUMN state_sent_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN state_due_ms INTEGER;
CREATE INDEX devices_state_due ON devices (state_due_ms) WHERE state_due_ms IS NOT NULL;
"#,
        ),
        // The outbox without its index on (kind, id): every message paid a B-tree
        // insert and a delete in it, and only the outbox limits (spaced by their own
        // cost, and reading the outbox through anyway) filter by kind.
        M::up("DROP INDEX outbox_by_kind;"),
        // How device topics were last named upstream (`[upstream] topic_names`: "id" or
        // "name"; NULL: "id", the default), so that a switch clears the retained
        // messages left under the other level.
        M::up("ALTER TABLE gateway_life ADD COLUMN topic_names TEXT;"),
        // The gateway id the database was last run as (`[gateway] id`), so that a
        // database copied in from another gateway (with its mark and seal key, which
        // then agree with it) is told apart at start.
        M::up("ALTER TABLE gateway_life ADD COLUMN gateway_id TEXT;"),
        // The record the first seal writes, found at start without reading the log
        // through (it says sealing was set up). Partial: other appends only test the
        // condition.
        M::up(
            "CREATE INDEX audit_sealing_started ON audit (seq) WHERE action = 'audit.sealing_started';",
        ),
    ])
}

/// A migrated in-memory database, for the store's unit tests.
#[cfg(test)]
pub(crate) fn in_memory_for_tests() -> rusqlite::Connection {
    let mut c = rusqlite::Connection::open_in_memory().expect("in-memory database");
    migrations().to_latest(&mut c).expect("migrations");
    c
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }

    /// Rebuilding the outbox keeps its rows and never hands out a seq again, even
    /// when every row had been delivered (deleted) before the upgrade.
    #[test]
    fn outbox_rebuild_keeps_rows_and_the_seq_high_water_mark() {
        use crate::store::outbox::{self, MessageKind, NewMessage};
        use rusqlite_migration::SchemaVersion;
        let msg = || NewMessage {
            kind: MessageKind::Lifecycle,
            device: None,
            topic: "event".into(),
            retain: false,
            data: serde_json::json!({"n": 1}),
            event_time: std::time::SystemTime::now(),
        };
        for keep_one in [false, true] {
            let mut c = rusqlite::Connection::open_in_memory().unwrap();
            super::migrations().to_version(&mut c, 3).unwrap();
            assert_eq!(
                super::migrations().current_version(&c).unwrap(),
                SchemaVersion::Inside(std::num::NonZeroUsize::new(3).unwrap())
            );
            // Today's append writes the life into the envelope: give the old
            // schema that table by hand (the later migration makes it again).
            c.execute_batch(
                "CREATE TEMP TABLE gateway_life (id INTEGER PRIMARY KEY, life TEXT NOT NULL);
                 INSERT INTO temp.gateway_life VALUES (1, 'old');",
            )
            .unwrap();
            for _ in 0..5 {
                outbox::append(&c, "gw", &msg()).unwrap();
            }
            c.execute_batch("DROP TABLE temp.gateway_life").unwrap();
            let del: Vec<i64> = if keep_one {
                vec![1, 2, 3, 5]
            } else {
                (1..=5).collect()
            };
            outbox::delete(&c, &del).unwrap();
            super::migrations().to_latest(&mut c).unwrap();
            assert!(matches!(
                super::migrations().current_version(&c).unwrap(),
                SchemaVersion::Inside(_)
            ));
            let left: Vec<i64> = outbox::pending(&c, 0, 10)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect();
            assert_eq!(left, if keep_one { vec![4] } else { vec![] });
            assert_eq!(outbox::append(&c, "gw", &msg()).unwrap(), 6);
        }
    }
}
