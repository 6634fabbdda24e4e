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
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
