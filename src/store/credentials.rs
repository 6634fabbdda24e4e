//! Credentials at rest: device and network secrets, always encrypted with the
//! gateway master key (see `crate::secrets`). This module stores, reads, rotates
//! and destroys them; it never returns or logs a secret except through
//! [`get`], whose [`Secret`] does not print.
//!
//! `owner` is a device id (`zigbee:0x…`), `radio:<name>` for a radio's network
//! secrets, or `gateway` for the gateway's own.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{StoreError, StoreResult};
use crate::model::now_rfc3339;
use crate::secrets::{MasterKey, Secret};

fn aad(owner: &str, kind: &str) -> Vec<u8> {
    format!("fieldgate-credential\0{owner}\0{kind}").into_bytes()
}

/// What may be shown about a credential: never its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CredentialInfo {
    pub owner: String,
    pub kind: String,
    pub created_at: String,
    pub rotated_at: Option<String>,
}

/// Stores (or replaces, as a rotation) a secret.
pub fn put(
    conn: &Connection,
    key: &MasterKey,
    owner: &str,
    kind: &str,
    secret: &Secret,
) -> StoreResult<()> {
    let (nonce, ct) = key
        .seal(&aad(owner, kind), secret)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let now = now_rfc3339();
    // Cached: a LoRa device's session state is put with every uplink.
    conn.prepare_cached(
        "INSERT INTO credentials (device_id, kind, nonce, ciphertext, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (device_id, kind) DO UPDATE SET
            nonce = excluded.nonce, ciphertext = excluded.ciphertext, rotated_at = ?5",
    )?
    .execute(params![owner, kind, nonce, ct, now])?;
    Ok(())
}

/// Reads and decrypts a secret.
pub fn get(
    conn: &Connection,
    key: &MasterKey,
    owner: &str,
    kind: &str,
) -> StoreResult<Option<Secret>> {
    let row: Option<(Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT nonce, ciphertext FROM credentials WHERE device_id = ?1 AND kind = ?2",
            params![owner, kind],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        None => Ok(None),
        Some((nonce, ct)) => key
            .open(&aad(owner, kind), &nonce, &ct)
            .map(Some)
            .map_err(|e| StoreError::Invalid(e.to_string())),
    }
}

pub fn list(conn: &Connection, owner: Option<&str>) -> StoreResult<Vec<CredentialInfo>> {
    let mut stmt = conn.prepare(
        "SELECT device_id, kind, created_at, rotated_at FROM credentials
         WHERE ?1 IS NULL OR device_id = ?1 ORDER BY device_id, kind",
    )?;
    let rows = stmt.query_map(params![owner], |r| {
        Ok(CredentialInfo {
            owner: r.get(0)?,
            kind: r.get(1)?,
            created_at: r.get(2)?,
            rotated_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Credentials last set (created or rotated) more than `max_age` before `now`:
/// due for rotation under the policy.
pub fn due_for_rotation(
    conn: &Connection,
    max_age: std::time::Duration,
    now: std::time::SystemTime,
) -> StoreResult<Vec<CredentialInfo>> {
    Ok(list(conn, None)?
        .into_iter()
        .filter(|c| {
            let last = c.rotated_at.as_deref().unwrap_or(&c.created_at);
            humantime::parse_rfc3339(last)
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > max_age)
        })
        .collect())
}

/// Whether `owner` has a credential of `kind` (without opening it).
pub fn exists(conn: &Connection, owner: &str, kind: &str) -> StoreResult<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM credentials WHERE device_id = ?1 AND kind = ?2",
            params![owner, kind],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Every credential of `kind`, metadata only.
pub fn list_kind(conn: &Connection, kind: &str) -> StoreResult<Vec<CredentialInfo>> {
    Ok(list(conn, None)?
        .into_iter()
        .filter(|c| c.kind == kind)
        .collect())
}

/// Destroys one credential; returns whether there was one.
pub fn remove(conn: &Connection, owner: &str, kind: &str) -> StoreResult<bool> {
    Ok(conn.execute(
        "DELETE FROM credentials WHERE device_id = ?1 AND kind = ?2",
        params![owner, kind],
    )? > 0)
}

/// Destroys every credential of `owner`; returns how many.
pub fn destroy(conn: &Connection, owner: &str) -> StoreResult<usize> {
    Ok(conn.execute("DELETE FROM credentials WHERE device_id = ?1", [owner])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_encrypted_rotated_and_destroyed() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrations()
            .to_latest(&mut c)
            .unwrap();
        let key = MasterKey::from_bytes(&[3u8; 32], "test".into());
        let bindkey = Secret::new(b"231d39c1d7cc1ab1aee224cd096db932".to_vec());
        put(
            &c,
            &key,
            "ble:a4:c1:38:00:00:01",
            "bthome_bindkey",
            &bindkey,
        )
        .unwrap();
        let raw: Vec<u8> = c
            .query_row("SELECT ciphertext FROM credentials", [], |r| r.get(0))
            .unwrap();
        assert!(
            !raw.windows(8).any(|w| w == &bindkey.expose()[..8]),
            "stored in clear"
        );
        assert_eq!(
            get(&c, &key, "ble:a4:c1:38:00:00:01", "bthome_bindkey").unwrap(),
            Some(bindkey)
        );
        // A ciphertext moved to another owner does not open.
        c.execute(
            "UPDATE credentials SET device_id = 'ble:a4:c1:38:00:00:02'",
            [],
        )
        .unwrap();
        assert!(get(&c, &key, "ble:a4:c1:38:00:00:02", "bthome_bindkey").is_err());
        c.execute(
            "UPDATE credentials SET device_id = 'ble:a4:c1:38:00:00:01'",
            [],
        )
        .unwrap();
        put(
            &c,
            &key,
            "ble:a4:c1:38:00:00:01",
            "bthome_bindkey",
            &Secret::new(vec![9; 16]),
        )
        .unwrap();
        let info = list(&c, None).unwrap();
        assert_eq!(info.len(), 1);
        assert!(info[0].rotated_at.is_some());
        assert_eq!(
            get(&c, &key, "ble:a4:c1:38:00:00:01", "bthome_bindkey")
                .unwrap()
                .unwrap()
                .expose(),
            &[9; 16]
        );
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        assert!(due_for_rotation(&c, day, now).unwrap().is_empty());
        assert_eq!(due_for_rotation(&c, day, now + 2 * day).unwrap().len(), 1);
        assert_eq!(destroy(&c, "ble:a4:c1:38:00:00:01").unwrap(), 1);
        assert!(get(&c, &key, "ble:a4:c1:38:00:00:01", "bthome_bindkey")
            .unwrap()
            .is_none());
    }
}
