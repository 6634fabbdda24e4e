//! Friendly device names: at most one per device, unique per gateway, usable
//! wherever a device id is accepted over MQTT. Owns the `device_names` table and
//! what a name may look like; it decides nothing else.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};

use super::{StoreError, StoreResult};
use crate::model::DeviceId;

/// Longest friendly name, in characters.
pub const MAX_NAME: usize = 64;

/// Whether `name` is a valid friendly name: 1 to 64 of `A-Z a-z 0-9`, space,
/// `_ - .`, not starting or ending with a space, with at least one letter or digit
/// (`-` alone is what a table shows for no name). Never contains `:`, so a name is
/// never mistaken for a device id (which always does), nor `/`, `+` or `#`, so it
/// can stand in a topic level.
pub fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && name.chars().any(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _-.".contains(c))
}

/// The device's name, if it has one.
pub fn get(conn: &Connection, id: &DeviceId) -> StoreResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT name FROM device_names WHERE device_id = ?1")?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()?)
}

/// The device a name belongs to.
pub fn resolve(conn: &Connection, name: &str) -> StoreResult<Option<DeviceId>> {
    Ok(conn
        .prepare_cached("SELECT device_id FROM device_names WHERE name = ?1")?
        .query_row([name], |r| r.get::<_, String>(0))
        .optional()?
        .map(DeviceId))
}

/// The device that holds a name: a decommissioned (or forgotten) device's name is
/// free for another (a Z-Wave node included again comes back under a new id).
pub fn holder(conn: &Connection, name: &str) -> StoreResult<Option<DeviceId>> {
    Ok(conn
        .prepare_cached(
            "SELECT n.device_id FROM device_names n JOIN devices d ON d.id = n.device_id
              WHERE n.name = ?1 AND d.lifecycle != 'decommissioned'",
        )?
        .query_row([name], |r| r.get::<_, String>(0))
        .optional()?
        .map(DeviceId))
}

/// Every name, by device id.
pub fn all(conn: &Connection) -> StoreResult<HashMap<String, String>> {
    let mut stmt = conn.prepare_cached("SELECT device_id, name FROM device_names")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Why a rename was refused.
#[derive(Debug, thiserror::Error)]
pub enum RenameError {
    #[error("the name is taken by `{0}`")]
    Taken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sets (or with `None` clears) a device's name; returns the previous one. The
/// device must exist (the caller checks).
pub fn set(
    conn: &Connection,
    id: &DeviceId,
    name: Option<&str>,
) -> Result<Option<String>, RenameError> {
    let previous = get(conn, id)?;
    let sql = |e: rusqlite::Error| RenameError::Store(StoreError::from(e));
    if let Some(n) = name {
        if let Some(owner) = holder(conn, n)? {
            if &owner != id {
                return Err(RenameError::Taken(owner.0));
            }
            return Ok(previous);
        }
        // Held by a decommissioned device, if by any: it moves to this one.
        conn.prepare_cached("DELETE FROM device_names WHERE name = ?1")
            .and_then(|mut s| s.execute([n]))
            .map_err(sql)?;
    }
    conn.prepare_cached("DELETE FROM device_names WHERE device_id = ?1")
        .and_then(|mut s| s.execute([id.as_str()]))
        .map_err(sql)?;
    if let Some(n) = name {
        conn.prepare_cached("INSERT INTO device_names (device_id, name) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute([id.as_str(), n]))
            .map_err(sql)?;
    }
    Ok(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_valid_and_resolvable() {
        let c = crate::store::schema::in_memory_for_tests();
        for id in ["zigbee:0x1", "zigbee:0x2"] {
            c.execute(
                "INSERT INTO devices (id, protocol, radio, native_address, lifecycle, first_seen, last_seen)
                 VALUES (?1, 'zigbee', 'zb0', ?1, 'active', 't', 't')",
                [id],
            )
            .unwrap();
        }
        let (a, b) = (DeviceId("zigbee:0x1".into()), DeviceId("zigbee:0x2".into()));
        assert_eq!(set(&c, &a, Some("hall lamp")).unwrap(), None);
        assert_eq!(resolve(&c, "hall lamp").unwrap(), Some(a.clone()));
        assert!(
            matches!(set(&c, &b, Some("hall lamp")), Err(RenameError::Taken(o)) if o == "zigbee:0x1")
        );
        assert_eq!(
            set(&c, &a, Some("porch")).unwrap().as_deref(),
            Some("hall lamp")
        );
        assert_eq!(resolve(&c, "hall lamp").unwrap(), None);
        assert_eq!(set(&c, &b, Some("hall lamp")).unwrap(), None);
        assert_eq!(all(&c).unwrap().len(), 2);
        assert_eq!(set(&c, &a, None).unwrap().as_deref(), Some("porch"));
        assert_eq!(get(&c, &a).unwrap(), None);
        // A decommissioned device's name is free: it moves to the device that takes it.
        c.execute(
            "UPDATE devices SET lifecycle = 'decommissioned' WHERE id = 'zigbee:0x2'",
            [],
        )
        .unwrap();
        assert_eq!(holder(&c, "hall lamp").unwrap(), None);
        assert_eq!(set(&c, &a, Some("hall lamp")).unwrap(), None);
        assert_eq!(resolve(&c, "hall lamp").unwrap(), Some(a.clone()));
        assert_eq!(get(&c, &b).unwrap(), None);
        for bad in [
            "",
            " x",
            "x ",
            "a:b",
            "a/b",
            "a+b",
            "#",
            "-",
            "._.",
            "é",
            &"n".repeat(65),
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
        assert!(valid("Hall lamp 2.0_a-b"));
    }
}
