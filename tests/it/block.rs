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
    let out = d.cli(&["readmit", id, "--json"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    // Never seen: no lifecycle to name (not a made-up one).
    let v: serde_json::Value = serde_json::from_str(&crate::common::stdout(&out)).unwrap();
    assert!(v["lifecycle"].is_null(), "{v}");
    assert_eq!(v["known"], false, "{v}");
    let blocks: i64 = c
        .query_row("SELECT COUNT(*) FROM device_blocks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(blocks, 0);
    // Nothing left to re-admit.
    assert!(!d.cli(&["readmit", id]).status.success());
}

/// What a technician types goes to the daemon as the device id, whole: a `?`, `#` or `/`
/// in it does not cut the id short (and act on the device it starts with), and an
/// address that no device of its protocol can have is not blocked.
#[test]
fn a_mistyped_id_is_refused_not_cut_short() {
    let d = TestDaemon::start("");
    let id = "zigbee:0x00124b0001abcdef";
    assert!(d.cli(&["remove", id, "--block"]).status.success());
    for typo in [
        format!("{id}?typo"),
        format!("{id}#typo"),
        format!("{id}/block"),
        format!("{id} x"),
    ] {
        for args in [
            vec!["readmit", typo.as_str()],
            vec!["remove", typo.as_str()],
            vec!["device", typo.as_str()],
        ] {
            let out = d.cli(&args);
            assert!(!out.status.success(), "{args:?}: {}", stdout(&out));
            let err = crate::common::stderr(&out);
            assert!(err.contains("bad_device_id"), "{args:?}: {err}");
        }
    }
    // Still blocked: no typo reached it.
    let c = rusqlite::Connection::open(d.db()).unwrap();
    let blocked = |id: &str| -> i64 {
        c.query_row(
            "SELECT COUNT(*) FROM device_blocks WHERE device_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(blocked(id), 1);
    let out = d.cli(&["device", ""]);
    assert!(!out.status.success());
    assert!(
        crate::common::stderr(&out).contains("the device id is empty"),
        "{}",
        crate::common::stderr(&out)
    );
    for bad in ["zigbee:0x1234", "ble:zz:zz", "zwave:fa116a7e-999"] {
        let out = d.cli(&["remove", bad, "--block"]);
        assert!(!out.status.success(), "{bad}: {}", stdout(&out));
        assert!(
            crate::common::stderr(&out).contains("bad_device_id"),
            "{bad}: {}",
            crate::common::stderr(&out)
        );
        assert_eq!(blocked(bad), 0, "{bad}");
    }
}
