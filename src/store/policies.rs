//! The policy cache: every accepted policy document, the newest one active, so
//! the gateway applies it after a restart with no uplink.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{StoreError, StoreResult};
use crate::model::now_rfc3339;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredPolicy {
    pub version: i64,
    pub document: serde_json::Value,
    pub signed: bool,
    pub source: String,
    pub received_at: String,
}

/// Stores `document` as the active policy. Refused (the old one stays) unless
/// its version is newer than the active one's.
pub fn activate(
    conn: &Connection,
    version: u64,
    document: &serde_json::Value,
    signature: Option<&str>,
    source: &str,
) -> StoreResult<()> {
    let current: Option<i64> = conn
        .query_row("SELECT max(version) FROM policies", [], |r| r.get(0))
        .optional()?
        .flatten();
    let Ok(stored) = i64::try_from(version) else {
        return Err(StoreError::Invalid(format!(
            "policy version {version} is too large to be stored"
        )));
    };
    if let Some(cur) = current {
        if stored <= cur {
            return Err(StoreError::Invalid(format!(
                "policy version {version} is not newer than the active version {cur}"
            )));
        }
    }
    conn.execute("UPDATE policies SET active = 0 WHERE active = 1", [])?;
    conn.execute(
        "INSERT INTO policies (version, document, signature, source, received_at, active)
         VALUES (?1, ?2, ?3, ?4, ?5, 1)",
        params![
            stored,
            document.to_string(),
            signature,
            source,
            now_rfc3339()
        ],
    )?;
    Ok(())
}

pub fn active(conn: &Connection) -> StoreResult<Option<StoredPolicy>> {
    Ok(conn
        .query_row(
            "SELECT version, document, signature IS NOT NULL, source, received_at
             FROM policies WHERE active = 1 ORDER BY version DESC LIMIT 1",
            [],
            |r| {
                let doc: String = r.get(1)?;
                Ok(StoredPolicy {
                    version: r.get(0)?,
                    document: serde_json::from_str(&doc).unwrap_or(serde_json::Value::Null),
                    signed: r.get(2)?,
                    source: r.get(3)?,
                    received_at: r.get(4)?,
                })
            },
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_replace_older_ones_only() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrations()
            .to_latest(&mut c)
            .unwrap();
        assert!(active(&c).unwrap().is_none());
        activate(&c, 2, &serde_json::json!({"version": 2}), None, "local").unwrap();
        assert!(activate(&c, 2, &serde_json::json!({"version": 2}), None, "local").is_err());
        assert!(activate(&c, 1, &serde_json::json!({"version": 1}), None, "local").is_err());
        // Above the signed 64-bit range: refused as such, never wrapped into "older".
        let e = activate(&c, u64::MAX, &serde_json::json!({}), None, "local").unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        activate(
            &c,
            3,
            &serde_json::json!({"version": 3}),
            Some("ab"),
            "mqtt",
        )
        .unwrap();
        let a = active(&c).unwrap().unwrap();
        assert_eq!((a.version, a.signed, a.source.as_str()), (3, true, "mqtt"));
    }
}
