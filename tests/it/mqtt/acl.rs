//! Brokers that limit the gateway, on MQTT 5 where they say so: an ACL that refuses
//! some publishes (nothing refused is taken for delivered), a maximum packet size
//! smaller than a live message (no reconnect loop). Needs mosquitto, so it runs in
//! the mosquitto step (`FIELDGATE_TEST_BROKER` set), with its own instance.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{stdout, TestDaemon};

pub(super) struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// mosquitto on a free port that lets anyone publish anywhere except `deny`.
pub(super) fn mosquitto_denying(dir: &std::path::Path, deny: &str) -> (Mosquitto, u16) {
    let acl = dir.join("acl");
    std::fs::write(&acl, format!("topic readwrite #\ntopic deny {deny}\n")).unwrap();
    mosquitto(dir, &format!("acl_file {}\n", acl.display()))
}

/// mosquitto on a free port, anonymous, with `extra` in its config.
fn mosquitto(dir: &std::path::Path, extra: &str) -> (Mosquitto, u16) {
    let port = super::free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}"),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (installed by .ci/run)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Mosquitto(child), port)
}

fn upstream(d: &TestDaemon) -> Value {
    let out = d.cli(&["status", "--json"]);
    assert!(out.status.success());
    serde_json::from_str::<Value>(&stdout(&out)).unwrap()["upstream"].clone()
}

#[test]
fn publishes_the_broker_refuses_stay_in_the_outbox_and_are_counted() {
    if std::env::var_os("FIELDGATE_TEST_BROKER").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = mosquitto_denying(dir.path(), "fgacl/audit");
    let d = TestDaemon::start(&format!(
        "[upstream]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"acl-gw\"\ntopic_prefix = \"fgacl\"\nprotocol = 5\n"
    ));
    // Every CLI call is audited; its record goes to `fgacl/audit`, which the
    // broker refuses.
    let deadline = Instant::now() + Duration::from_secs(20);
    let u = loop {
        let u = upstream(&d);
        if u["refused_by_broker"].as_u64().unwrap_or(0) >= 3 {
            break u;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal counted: {u}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        u["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("refused a publish"),
        "{u}"
    );
    // The refused audit records are still in the outbox.
    let c = rusqlite::Connection::open(d.db()).unwrap();
    let audit: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM outbox WHERE topic = 'audit'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        audit >= 3,
        "refused audit records were deleted: {audit} left; {u}"
    );
    assert_eq!(u["delivered"], 0, "refused rows counted as delivered: {u}");
    // Said once per cause by the uplink, not once per refused PUBACK by the client.
    assert!(!d.log().contains("PubAck Pkid"), "{}", d.log());
}

/// A broker whose Maximum Packet Size (MQTT 5 CONNACK) is smaller than the `info`
/// message: `info` is not sent (counted as undeliverable) instead of the connection
/// being closed over it again at every reconnect.
#[test]
fn a_live_message_over_the_brokers_packet_size_does_not_loop_the_connection() {
    if std::env::var_os("FIELDGATE_TEST_BROKER").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = mosquitto(dir.path(), "max_packet_size 400\n");
    let d = TestDaemon::start(&format!(
        "[upstream]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"mps-gw\"\ntopic_prefix = \"fgmps\"\nprotocol = 5\n\n[[radio]]\nname = \"zw0\"\nprotocol = \"zwave\"\nport = \"sim://zwave\"\n"
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let u = loop {
        let u = upstream(&d);
        if u["undeliverable"].as_u64().unwrap_or(0) >= 1 {
            break u;
        }
        assert!(
            Instant::now() < deadline,
            "nothing found undeliverable: {u}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(3));
    let later = upstream(&d);
    assert_eq!(
        later["connects"],
        1,
        "reconnected: {u} / {later}\n{}",
        d.log()
    );
    assert_eq!(later["state"], "connected", "{later}");
}
