//! The denylist: devices refused whatever their lifecycle (even ones never seen),
//! until a technician re-admits them. `fieldgate remove ID --block` adds to it,
//! `fieldgate readmit ID` takes off. Only the hub writes here.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::StoreResult;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Block {
    pub device_id: String,
    pub blocked_at: String,
    pub actor: String,
}

/// Adds a device to the denylist; `false` when it was on it already.
pub fn add(conn: &Connection, device_id: &str, at: &str, actor: &str) -> StoreResult<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO device_blocks (device_id, blocked_at, actor) VALUES (?1, ?2, ?3)",
        params![device_id, at, actor],
    )?;
    Ok(n == 1)
}

/// Takes a device off the denylist; `false` when it was not on it.
pub fn remove(conn: &Connection, device_id: &str) -> StoreResult<bool> {
    Ok(conn.execute(
        "DELETE FROM device_blocks WHERE device_id = ?1",
        [device_id],
    )? == 1)
}

pub fn get(conn: &Connection, device_id: &str) -> StoreResult<Option<Block>> {
    Ok(conn
        .query_row(
            "SELECT device_id, blocked_at, actor FROM device_blocks WHERE device_id = ?1",
            [device_id],
            |r| {
                Ok(Block {
                    device_id: r.get(0)?,
                    blocked_at: r.get(1)?,
                    actor: r.get(2)?,
                })
            },
        )
        .optional()?)
}

pub fn is_blocked(conn: &Connection, device_id: &str) -> StoreResult<bool> {
    Ok(get(conn, device_id)?.is_some())
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocks_are_added_once_and_removed() {
        let c = super::super::schema::in_memory_for_tests();
        assert!(super::add(&c, "zigbee:0x1", "t", "a").unwrap());
        assert!(!super::add(&c, "zigbee:0x1", "t", "b").unwrap());
        assert_eq!(super::get(&c, "zigbee:0x1").unwrap().unwrap().actor, "a");
        assert!(super::remove(&c, "zigbee:0x1").unwrap());
        assert!(!super::is_blocked(&c, "zigbee:0x1").unwrap());
    }
}
