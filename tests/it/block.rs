//! `fieldgate remove ID --block` on a device never seen: it goes on the denylist,
//! audited, and `readmit` takes it off again.

use crate::common::{stdout, TestDaemon};

#[test]
fn a_device_never_seen_can_be_blocked_and_readmitted() {
    let d = TestDaemon::start("");
    let id = "zigbee:0x00124b0001abcdef";
    let out = d.cli(&["remove", id, "--block"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert!(
        stdout(&out).contains("blocked (not seen here yet)"),
        "{}",
        stdout(&out)
    );
    // Blocking again is no error: it stays blocked.
    let out = d.cli(&["remove", id, "--block", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["newly_blocked"], false);
    let c = rusqlite::Connection::open(d.db()).unwrap();
    let blocks: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM device_blocks WHERE device_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(blocks, 1);
    let audited: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE action = 'device.block' AND target = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 2);
    let out = d.cli(&["readmit", id]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let blocks: i64 = c
        .query_row("SELECT COUNT(*) FROM device_blocks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(blocks, 0);
    // Nothing left to re-admit.
    assert!(!d.cli(&["readmit", id]).status.success());
}
