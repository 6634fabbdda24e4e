//! Deleting delivered messages: the delete rides the store's next commit, and is
//! committed on its own when nothing else commits; a gateway killed between the
//! PUBACK and the delete sends the message again with the same msg_id.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use fieldgate::model::DeviceEventKind;
use fieldgate::store::outbox::{self, MessageKind, NewMessage};
use serde_json::json;

use super::{broker, fast, reading, unique, until, Probe, Rig};

/// With nothing else committing after the last reading, its delivered rows are
/// still deleted (in a transaction of their own), within a fraction of a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_rows_are_deleted_while_the_writer_is_idle() {
    let b = broker();
    let rig = Rig::start(&b.url(), "", fast()).await;
    let probe = Probe::connect(b, &[rig.filter()]).await;
    rig.connected().await;
    rig.send("0x1234", DeviceEventKind::Joined).await;
    for i in 0..5 {
        rig.send("0x1234", reading(i as f64)).await;
    }
    probe
        .wait_for("the readings", Duration::from_secs(10), |m| {
            m.iter().filter(|m| m.topic.ends_with("/telemetry")).count() >= 5
        })
        .await;
    let writer = rig.store.as_ref().expect("store").writer();
    let before = writer.stats().transactions.load(Ordering::Relaxed);
    until("the outbox to drain", Duration::from_secs(5), || {
        rig.outbox_depth() == 0
    })
    .await;
    let commits = writer.stats().transactions.load(Ordering::Relaxed) - before;
    assert!(
        commits <= 3,
        "{commits} commits to delete one burst of rows"
    );
    // The store closes once every writer handle is gone.
    drop(writer);
    rig.stop().await;
}

/// A backlog (here 8,000 messages committed at once, as an outage leaves them) drains
/// with its deletes committed batch by batch, not each batch waiting for another
/// commit that never comes: nothing else is written meanwhile, and waiting would hold
/// the drain to one batch of 2,000 per second (4 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_without_waiting_for_other_commits() {
    const N: usize = 8_000;
    let b = broker();
    let rig = Rig::start(&b.url(), "", fast()).await;
    rig.connected().await;
    let writer = rig.store.as_ref().expect("store").writer();
    writer
        .write(|c| {
            for i in 0..N {
                outbox::append(
                    c,
                    "test-gw",
                    &NewMessage {
                        kind: MessageKind::Telemetry,
                        device: None,
                        topic: "device/zigbee:0x1/telemetry".into(),
                        retain: false,
                        data: json!({ "n": i }),
                        event_time: SystemTime::now(),
                    },
                )?;
            }
            Ok(())
        })
        .await
        .expect("backlog");
    let started = Instant::now();
    until("the backlog to drain", Duration::from_secs(30), || {
        rig.outbox_depth() == 0
    })
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_500),
        "{N} messages took {took:?} to drain"
    );
    drop(writer);
    rig.stop().await;
}

/// The daemon is SIGKILLed right after the broker passed a message on (acked, the
/// delete not yet committed): after the restart the message goes out again, with
/// the msg_id and seq it had, and then leaves the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_puback_and_delete_resends_with_the_same_msg_id() {
    let b = broker();
    let prefix = format!("fgtest/{}", unique("redo"));
    let mut d = crate::common::TestDaemon::prepare(&format!(
        "\n[upstream]\nurl = \"{}\"\nclient_id = \"{}\"\ntopic_prefix = \"{prefix}\"\n",
        b.url(),
        unique("fgr")
    ));
    let probe = Probe::connect(b, &[format!("{prefix}/device/#")]).await;
    d.spawn();
    let db = d.db();
    until("the daemon's database", Duration::from_secs(15), || {
        db.exists()
    })
    .await;
    // Wait for the uplink: the birth message is not subscribed to here, so ask the CLI.
    until("the uplink to connect", Duration::from_secs(15), || {
        let out = d.cli(&["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|v| v["upstream"]["state"] == "connected")
    })
    .await;

    // One row committed into the outbox as the hub would, outside the daemon's writer.
    let mut conn = rusqlite::Connection::open(&db).expect("db");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("tx");
    let seq = outbox::append(
        &tx,
        "test-gw",
        &NewMessage {
            kind: MessageKind::Telemetry,
            device: None,
            topic: "device/zigbee:0x1/telemetry".into(),
            retain: false,
            data: json!({ "n": 1 }),
            event_time: SystemTime::now(),
        },
    )
    .expect("append");
    tx.commit().expect("commit");
    drop(conn);

    // The daemon looks for it within a second (nothing commits through its own
    // writer to tell it sooner); kill it the moment the message reaches the subscriber, well before the
    // delete (at least 25 ms after the PUBACK) can have committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.on("/telemetry").is_empty() {
        assert!(Instant::now() < deadline, "the message was not published");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let child = d.child.take().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL");
    let mut child = child;
    let _ = child.wait();
    let reader = fieldgate::store::open_reader(&db).expect("reader");
    let left: i64 = reader
        .query_row("SELECT COUNT(*) FROM outbox WHERE id = ?1", [seq], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(left, 1, "the delivered row was deleted before the kill");

    d.spawn();
    probe
        .wait_for("the message again", Duration::from_secs(20), |m| {
            m.iter().filter(|m| m.topic.ends_with("/telemetry")).count() >= 2
        })
        .await;
    let copies: Vec<serde_json::Value> = probe.on("/telemetry").iter().map(|m| m.json()).collect();
    assert_eq!(copies[0]["msg_id"], copies[1]["msg_id"], "{copies:?}");
    assert_eq!(copies[0]["seq"], copies[1]["seq"]);
    assert_eq!(copies[1]["seq"].as_i64(), Some(seq));
    until("the row to be deleted", Duration::from_secs(10), || {
        reader
            .query_row("SELECT COUNT(*) FROM outbox WHERE id = ?1", [seq], |r| {
                r.get::<_, i64>(0)
            })
            .is_ok_and(|n| n == 0)
    })
    .await;
    assert!(
        d.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "{}",
        d.log()
    );
}
