//! Requests as a careless or hostile cloud would send them: every size from empty
//! to 2 MB (retained too), every field with the wrong type or out of range, extra
//! topic levels, duplicate keys, NUL and bidirectional-formatting characters, and
//! a flood of 5,000 in well under a second. After each: exactly one response per
//! request, one audit record per request, the gateway still connected (never a
//! reconnect) and still publishing.
//!
//! The suite runs over MQTT 3.1.1 and over MQTT 5. Over MQTT 5 every request names
//! its own Response Topic and Correlation Data, and then come the abuses only MQTT 5
//! allows: Response Topics with wildcards, NUL, too long or among the gateway's own
//! topics, Correlation Data as large as MQTT allows, floods of user properties, a
//! payload format indicator or a content type that lies, topic aliases. A broker may
//! refuse some of those itself (the gateway then never sees them); what reaches the
//! gateway gets its answer.
//!
//! Runs on the embedded rumqttd, and on mosquitto with `FIELDGATE_TEST_BROKER`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fieldgate::model::{DeviceEventKind, DeviceId};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::json;

use super::{broker, fast, reading, unique, until, Probe, Rig};

/// One hostile request: where it goes, what it carries, the answer it must get.
struct Case {
    name: String,
    /// The topic level(s) after `request/` (`None`: `<prefix>/request` itself).
    op: Option<String>,
    payload: Vec<u8>,
    retain: bool,
    /// The response topic level and error code (`"ok"` for a success).
    level: String,
    code: &'static str,
}

fn case(name: &str, op: &str, payload: impl Into<Vec<u8>>, code: &'static str) -> Case {
    Case {
        name: name.to_string(),
        op: Some(op.to_string()),
        payload: payload.into(),
        retain: false,
        level: fieldgate::upstream::topics::response_level(op).to_string(),
        code,
    }
}

fn body(cid: &str, fields: serde_json::Value) -> Vec<u8> {
    let mut v = fields;
    v["correlation_id"] = json!(cid);
    v.to_string().into_bytes()
}

/// A request of about `size` bytes (an `info` padded with an unknown field).
fn sized(cid: &str, size: usize) -> Vec<u8> {
    let head = format!("{{\"correlation_id\":\"{cid}\",\"pad\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    let mut v = head.into_bytes();
    v.extend(std::iter::repeat_n(b'x', pad));
    v.extend_from_slice(b"\"}");
    v
}

fn cases() -> Vec<Case> {
    let dev = "zigbee:0xaaaa";
    let mut c = Vec::new();

    // Sizes: the limit is 16 KiB; anything larger, up to 2 MB, is read and answered.
    c.push(case("1 byte", "info", b"{".to_vec(), "bad_json"));
    c.push(case(
        "16 KiB exactly",
        "info",
        sized("s16k", 16 * 1024),
        "invalid_request",
    ));
    for (name, size) in [
        ("16 KiB + 1", 16 * 1024 + 1),
        ("64 KiB", 64 * 1024),
        ("256 KiB + 1 (rumqttc's old limit)", 256 * 1024 + 1),
        ("1 MB", 1_000_000),
        ("2 MB", 2_000_000),
    ] {
        c.push(case(name, "info", sized("big", size), "payload_too_large"));
    }
    c.push(case(
        "65 KiB certificate rotation",
        "rotate_client_cert",
        sized("rot", 65 * 1024),
        "payload_too_large",
    ));
    let mut retained_big = case(
        "1 MB retained",
        "info",
        sized("rbig", 1_000_000),
        "payload_too_large",
    );
    retained_big.retain = true;
    c.push(retained_big);
    let mut retained_ok = case("retained info", "info", body("r-ok", json!({})), "ok");
    retained_ok.retain = true;
    c.push(retained_ok);

    // Not JSON objects.
    c.push(case(
        "binary",
        "info",
        vec![0xff, 0x00, 0xfe, 0x80],
        "not_utf8",
    ));
    c.push(case(
        "truncated",
        "info",
        b"{\"correlation_id\":\"t\"".to_vec(),
        "bad_json",
    ));
    c.push(case("array", "info", b"[]".to_vec(), "not_an_object"));
    c.push(case(
        "deep",
        "info",
        format!("{}{}", "[".repeat(200), "]".repeat(200)),
        "bad_json",
    ));

    // The correlation id and client id.
    c.push(case(
        "no correlation id",
        "info",
        b"{\"client_id\":\"x\"}".to_vec(),
        "missing_correlation_id",
    ));
    for (name, v) in [
        ("cid number", json!(42)),
        ("cid empty", json!("")),
        ("cid 129 chars", json!("c".repeat(129))),
        ("cid NUL", json!("a\u{0}b")),
        ("cid bidi override", json!("abc\u{202e}fed")),
        ("cid bidi isolate", json!("\u{2066}x\u{2069}")),
        ("cid array", json!(["c"])),
    ] {
        c.push(case(
            name,
            "info",
            json!({"correlation_id": v}).to_string(),
            "invalid_correlation_id",
        ));
    }
    for (name, v) in [
        ("client id space", json!("has space")),
        ("client id 65 chars", json!("k".repeat(65))),
        ("client id number", json!(5)),
        ("client id NUL", json!("a\u{0}")),
        ("client id bidi", json!("ops\u{202e}")),
    ] {
        c.push(case(
            name,
            "info",
            body(name, json!({"client_id": v})),
            "invalid_request",
        ));
    }

    // Duplicate keys, at the top and nested.
    c.push(case(
        "dup cid",
        "info",
        br#"{"correlation_id":"d1","correlation_id":"d2"}"#.to_vec(),
        "invalid_request",
    ));
    c.push(case(
        "dup nested",
        "set",
        format!(r#"{{"correlation_id":"d3","device":"{dev}","state":{{"on":true,"on":false}}}}"#),
        "invalid_request",
    ));
    c.push(case(
        "dup radio",
        "permit_join",
        br#"{"correlation_id":"d4","radio":"zb0","radio":"zb1","seconds":5}"#.to_vec(),
        "invalid_request",
    ));

    // Topics: extra levels, the bare request level, odd operation names.
    c.push(case(
        "extra level",
        "info/extra",
        body("t1", json!({})),
        "unknown_operation",
    ));
    c.push(case(
        "two extra levels",
        "set/a/b",
        body("t2", json!({})),
        "unknown_operation",
    ));
    c.push(case(
        "trailing slash",
        "info/",
        body("t3", json!({})),
        "unknown_operation",
    ));
    c.push(case(
        "unicode op",
        "ïnfo",
        body("t4", json!({})),
        "unknown_operation",
    ));
    c.push(case(
        "bidi op",
        "in\u{202e}fo",
        body("t5", json!({})),
        "unknown_operation",
    ));
    c.push(case(
        "unknown op",
        "reboot",
        body("t6", json!({})),
        "unknown_operation",
    ));
    c.push(Case {
        name: "bare request topic".into(),
        op: None,
        payload: body("t7", json!({})),
        retain: false,
        level: "invalid".into(),
        code: "unknown_operation",
    });

    // permit_join: every field wrong.
    for (name, fields, code) in [
        (
            "radio number",
            json!({"radio": 5, "seconds": 5}),
            "invalid_request",
        ),
        (
            "radio null",
            json!({"radio": null, "seconds": 5}),
            "invalid_request",
        ),
        (
            "radio bidi",
            json!({"radio": "zb\u{202e}0", "seconds": 5}),
            "unknown_radio",
        ),
        (
            "radio NUL",
            json!({"radio": "zb\u{0}", "seconds": 5}),
            "unknown_radio",
        ),
        (
            "seconds string",
            json!({"radio": "zb0", "seconds": "5"}),
            "invalid_request",
        ),
        (
            "seconds float",
            json!({"radio": "zb0", "seconds": 1.5}),
            "invalid_request",
        ),
        (
            "seconds 0",
            json!({"radio": "zb0", "seconds": 0}),
            "invalid_request",
        ),
        (
            "seconds 255",
            json!({"radio": "zb0", "seconds": 255}),
            "invalid_request",
        ),
        (
            "seconds negative",
            json!({"radio": "zb0", "seconds": -1}),
            "invalid_request",
        ),
        (
            "seconds huge",
            json!({"radio": "zb0", "seconds": 1e300}),
            "invalid_request",
        ),
        (
            "seconds bool",
            json!({"radio": "zb0", "seconds": true}),
            "invalid_request",
        ),
    ] {
        c.push(case(name, "permit_join", body(name, fields), code));
    }
    // remove / readmit: the device id.
    for (name, v, code) in [
        ("device number", json!(5), "invalid_request"),
        ("device empty", json!(""), "bad_device_id"),
        ("device no address", json!("zigbee:"), "bad_device_id"),
        ("device unknown protocol", json!("x10:1"), "bad_device_id"),
        ("device NUL", json!("zigbee:0x\u{0}1"), "bad_device_id"),
        ("device bidi", json!("zigbee:0x\u{202e}1"), "bad_device_id"),
        (
            "device 2000 chars",
            json!(format!("zigbee:{}", "a".repeat(2000))),
            "bad_device_id",
        ),
        ("device unknown", json!("zigbee:0xdead"), "unknown_device"),
    ] {
        c.push(case(name, "remove", body(name, json!({"device": v})), code));
    }
    c.push(case(
        "readmit object",
        "readmit",
        body("ro", json!({"device": {}})),
        "invalid_request",
    ));
    // set: the state, its values and ttl_s.
    for (name, state, code) in [
        ("state string", json!("on"), "invalid_request"),
        ("state array", json!([]), "invalid_request"),
        ("state empty", json!({}), "invalid_request"),
        ("on yes", json!({"on": "yes"}), "invalid_request"),
        ("on 1", json!({"on": 1}), "invalid_request"),
        ("level 101", json!({"level": 101}), "invalid_request"),
        ("level -1", json!({"level": -1}), "invalid_request"),
        ("level string", json!({"level": "50"}), "invalid_request"),
        ("level null", json!({"level": null}), "invalid_request"),
        (
            "off with level",
            json!({"on": false, "level": 30}),
            "invalid_request",
        ),
        ("state dim", json!({"state": "dim"}), "invalid_request"),
        (
            "state and on",
            json!({"state": "on", "on": true}),
            "invalid_request",
        ),
        ("colour", json!({"colour": "red"}), "not_supported"),
        (
            "17 attributes",
            json!((0..17)
                .map(|i| (format!("a{i}"), json!(1)))
                .collect::<serde_json::Map<_, _>>()),
            "invalid_request",
        ),
    ] {
        c.push(case(
            name,
            "set",
            body(name, json!({"device": dev, "state": state})),
            code,
        ));
    }
    for (name, ttl) in [
        ("ttl 0", json!(0)),
        ("ttl 8 days", json!(691_200)),
        ("ttl string", json!("60")),
        ("ttl negative", json!(-5)),
    ] {
        c.push(case(
            name,
            "set",
            body(
                name,
                json!({"device": dev, "state": {"on": true}, "ttl_s": ttl}),
            ),
            "invalid_request",
        ));
    }
    // get: attributes.
    for (name, attrs) in [
        ("attributes string", json!("all")),
        ("attributes numbers", json!([1, 2])),
        (
            "33 attributes",
            json!((0..33).map(|i| format!("a{i}")).collect::<Vec<_>>()),
        ),
        ("attribute with space", json!(["a b"])),
        ("attribute bidi", json!(["on\u{202e}"])),
    ] {
        c.push(case(
            name,
            "get",
            body(name, json!({"device": dev, "attributes": attrs})),
            "invalid_request",
        ));
    }
    // policy, install codes, key rotation, certificate rotation.
    for (name, fields, code) in [
        (
            "policy version string",
            json!({"version": "1", "document": {"version": 1}}),
            "invalid_request",
        ),
        (
            "policy version 0",
            json!({"version": 0, "document": {"version": 0}}),
            "invalid_request",
        ),
        (
            "policy document array",
            json!({"version": 1, "document": []}),
            "invalid_request",
        ),
        (
            "policy version mismatch",
            json!({"version": 2, "document": {"version": 3}}),
            "invalid_request",
        ),
        (
            "policy signature number",
            json!({"version": 1, "document": {"version": 1}, "signature": 5}),
            "invalid_request",
        ),
    ] {
        c.push(case(name, "policy", body(name, fields), code));
    }
    for (name, fields, code) in [
        (
            "install action replace",
            json!({"action": "replace", "device": "zigbee:0x00124b0001abcdef"}),
            "invalid_request",
        ),
        (
            "install code number",
            json!({"action": "add", "device": "zigbee:0x00124b0001abcdef", "code": 83123}),
            "invalid_request",
        ),
        (
            "install code short",
            json!({"action": "add", "device": "zigbee:0x00124b0001abcdef", "code": "83FE"}),
            "invalid_install_code",
        ),
        (
            "install device lora",
            json!({"action": "remove", "device": "lora:0011"}),
            "bad_device_id",
        ),
    ] {
        c.push(case(name, "install_code", body(name, fields), code));
    }
    c.push(case(
        "key radio number",
        "rotate_network_key",
        body("k1", json!({"radio": 7})),
        "invalid_request",
    ));
    c.push(case(
        "key radio unknown",
        "rotate_network_key",
        body("k2", json!({"radio": "nope"})),
        "unknown_radio",
    ));
    c.push(case(
        "cert empty",
        "rotate_client_cert",
        body("c1", json!({"cert_pem": "", "key_pem": ""})),
        "invalid_request",
    ));
    c.push(case(
        "health extra field",
        "health_check",
        body("h1", json!({"deep": true})),
        "invalid_request",
    ));
    // And requests that are fine, in between, so refusals do not hide a dead service.
    c.push(case("info ok", "info", body("ok-1", json!({})), "ok"));
    c.push(case(
        "health ok",
        "health_check",
        body("ok-2", json!({"client_id": "ops"})),
        "ok",
    ));
    c.push(case(
        "set level ok",
        "set",
        body("ok-3", json!({"device": dev, "state": {"level": 40}})),
        "ok",
    ));
    c
}

/// A client that publishes raw requests (payloads up to 4 MB, any retain flag).
async fn publisher(host: &str, port: u16) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let mut opts = MqttOptions::new(unique("hostile"), host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    opts.set_inflight(1000);
    let (client, mut el) = AsyncClient::new(opts, 10_000);
    let task = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    (client, task)
}

/// The `mqtt.*` audit records, in order: (actor, action, outcome, code).
fn mqtt_audit(rig: &Rig) -> Vec<(String, String, String, Option<String>)> {
    rig.reader()
        .prepare("SELECT actor, action, outcome, details FROM audit WHERE action LIKE 'mqtt.%' ORDER BY seq")
        .unwrap()
        .query_map([], |r| {
            let details: String = r.get(3)?;
            let code = serde_json::from_str::<serde_json::Value>(&details)
                .ok()
                .and_then(|d| d["code"].as_str().map(str::to_string));
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, code))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Whether `topic` holds a retained message (a fresh subscriber gets it at once).
async fn retained_on(version: Version, topic: &str) -> bool {
    let probe = Wire::connect(version, version.broker(), &[topic.to_string()]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    probe
        .messages()
        .iter()
        .any(|m| m.retain && !m.payload.is_empty())
}

async fn joined_device(rig: &Rig, addr: &str) {
    rig.send(addr, DeviceEventKind::Joined).await;
    let id = DeviceId::parse(&format!("zigbee:{addr}")).unwrap();
    until("the device registered", Duration::from_secs(5), || {
        fieldgate::store::registry::get(&rig.reader(), &id)
            .ok()
            .flatten()
            .is_some()
    })
    .await;
}

/// The MQTT version the suite's clients and the gateway speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V4,
    V5,
}

impl Version {
    fn broker(self) -> &'static super::BrokerAddr {
        match self {
            Version::V4 => broker(),
            Version::V5 => super::v5::broker_v5(),
        }
    }
}

/// A message a [`Wire`] heard, with its MQTT 5 properties.
#[derive(Debug, Clone)]
struct Heard {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    props: PublishProperties,
}

impl Heard {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {:?}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }

    fn user(&self, key: &str) -> Option<&str> {
        self.props
            .user_properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

enum AnyClient {
    V4(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A test client of either version: publishes raw requests (up to 4 MB, any retain
/// flag, MQTT 5 properties), records what arrives on its filters, and counts what
/// the broker refused it (an MQTT 5 PUBACK with a failure reason, a DISCONNECT, a
/// dropped connection).
struct Wire {
    client: AnyClient,
    got: Arc<Mutex<Vec<Heard>>>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Wire {
    async fn connect(version: Version, addr: &super::BrokerAddr, filters: &[String]) -> Wire {
        const MAX: usize = 4 * 1024 * 1024;
        let got = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(1);
        let (sink, failures) = (got.clone(), refused.clone());
        let wanted = filters.len();
        let (client, task) = match version {
            Version::V4 => {
                let mut opts = MqttOptions::new(unique("hostile"), &addr.host, addr.port);
                opts.set_keep_alive(Duration::from_secs(30));
                opts.set_max_packet_size(MAX, MAX);
                opts.set_inflight(1000);
                let (client, mut el) = AsyncClient::new(opts, 10_000);
                let task = tokio::spawn(async move {
                    let mut subacks = 0;
                    loop {
                        match el.poll().await {
                            Ok(Event::Incoming(Incoming::Publish(p))) => {
                                sink.lock().unwrap().push(Heard {
                                    topic: p.topic.clone(),
                                    payload: p.payload.to_vec(),
                                    retain: p.retain,
                                    props: PublishProperties::default(),
                                })
                            }
                            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                                subacks += 1;
                                if subacks == wanted {
                                    let _ = ready_tx.send(()).await;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => {
                                failures.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(50)).await
                            }
                        }
                    }
                });
                (AnyClient::V4(client), task)
            }
            Version::V5 => {
                use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
                let mut opts =
                    rumqttc::v5::MqttOptions::new(unique("hostile5"), &addr.host, addr.port);
                opts.set_keep_alive(Duration::from_secs(30));
                opts.set_max_packet_size(Some(MAX as u32));
                opts.set_outgoing_inflight_upper_limit(1000);
                let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 10_000);
                let task = tokio::spawn(async move {
                    let mut subacks = 0;
                    loop {
                        match el.poll().await {
                            Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                                sink.lock().unwrap().push(Heard {
                                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                    payload: p.payload.to_vec(),
                                    retain: p.retain,
                                    props: p.properties.unwrap_or_default(),
                                })
                            }
                            Ok(rumqttc::v5::Event::Incoming(Packet::SubAck(_))) => {
                                subacks += 1;
                                if subacks == wanted {
                                    let _ = ready_tx.send(()).await;
                                }
                            }
                            Ok(rumqttc::v5::Event::Incoming(Packet::PubAck(a)))
                                if !matches!(
                                    a.reason,
                                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                                ) =>
                            {
                                failures.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(rumqttc::v5::Event::Incoming(Packet::Disconnect(_))) => {
                                failures.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(_) => {}
                            Err(_) => {
                                failures.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(50)).await
                            }
                        }
                    }
                });
                (AnyClient::V5(client), task)
            }
        };
        for f in filters {
            match &client {
                AnyClient::V4(c) => c
                    .subscribe(f.clone(), QoS::AtLeastOnce)
                    .await
                    .map_err(|e| e.to_string()),
                AnyClient::V5(c) => c
                    .subscribe(f.clone(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                    .await
                    .map_err(|e| e.to_string()),
            }
            .expect("subscribe");
        }
        if wanted > 0 {
            tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
                .await
                .expect("subscribed in time");
        }
        Wire {
            client,
            got,
            refused,
            task,
        }
    }

    /// A QoS 1 publish; `props` only on MQTT 5.
    async fn publish(
        &self,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
        props: Option<PublishProperties>,
    ) {
        match &self.client {
            AnyClient::V4(c) => c
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .expect("publish"),
            AnyClient::V5(c) => {
                let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
                match props {
                    Some(props) => c
                        .publish_with_properties(topic, qos, retain, payload, props)
                        .await
                        .expect("publish"),
                    None => c
                        .publish(topic, qos, retain, payload)
                        .await
                        .expect("publish"),
                }
            }
        }
    }

    fn messages(&self) -> Vec<Heard> {
        self.got.lock().unwrap().clone()
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    async fn wait_for(&self, what: &str, limit: Duration, mut f: impl FnMut(&[Heard]) -> bool) {
        let deadline = Instant::now() + limit;
        while !f(&self.messages()) {
            if Instant::now() > deadline {
                let got = self.messages();
                let topics: Vec<&str> = got
                    .iter()
                    .rev()
                    .take(20)
                    .map(|m| m.topic.as_str())
                    .collect();
                panic!(
                    "timed out waiting for {what}; {} messages, the last: {topics:?}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Nothing hostile comes back: no NUL, no bidi control in any answer.
fn assert_clean(what: &str, payload: &[u8]) {
    let text = String::from_utf8_lossy(payload);
    assert!(
        !text.chars().any(|ch| ch == '\0'
            || ('\u{202a}'..='\u{202e}').contains(&ch)
            || ('\u{2066}'..='\u{2069}').contains(&ch)),
        "{what}: {text}"
    );
}

/// Checks an answer's body, and on MQTT 5 its outcome user properties.
fn assert_answer(what: &str, m: &Heard, code: &str, v5: bool) {
    let v = m.json();
    if code == "ok" {
        assert_eq!(v["status"], "ok", "{what}: {v}");
    } else {
        assert_eq!(v["status"], "error", "{what}: {v}");
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
    }
    if v5 {
        assert_eq!(m.user("status"), v["status"].as_str(), "{what}: {m:?}");
        assert_eq!(m.user("code"), v["error"]["code"].as_str(), "{what}: {m:?}");
        assert_eq!(
            m.props.content_type.as_deref(),
            Some("application/json"),
            "{what}"
        );
    }
    assert_clean(what, &m.payload);
}

/// An abuse only MQTT 5 allows: a request with hostile properties.
struct V5Case {
    name: &'static str,
    /// The topic (empty with a topic alias).
    topic: String,
    payload: Vec<u8>,
    props: PublishProperties,
    /// Sent on the previous case's connection (a topic alias it set up).
    same_connection: bool,
    /// Where the answer goes and the code it carries.
    answer_topic: String,
    code: &'static str,
    /// The answer says the Response Topic was not used.
    topic_refused: bool,
    /// The broker may refuse it (a protocol error, a payload that is not what its
    /// format indicator says): then the gateway never sees it.
    broker_may_refuse: bool,
}

fn v5_cases(p: &str, replies: &str) -> Vec<V5Case> {
    let info = format!("{p}/request/info");
    let own = format!("{p}/response/info");
    let reply = |topic: String, corr: &[u8]| PublishProperties {
        response_topic: Some(topic),
        correlation_data: Some(corr.to_vec().into()),
        ..Default::default()
    };
    let base = |name: &'static str, props: PublishProperties, answer_topic: String| V5Case {
        name,
        topic: info.clone(),
        payload: body(name, json!({})),
        props,
        same_connection: false,
        answer_topic,
        code: "ok",
        topic_refused: false,
        broker_may_refuse: false,
    };
    let mut c = Vec::new();
    // Response Topics the gateway must not publish on: answered on response/<op>.
    for (name, topic, broker_may_refuse) in [
        ("response topic +", format!("{replies}/+/x"), true),
        ("response topic #", format!("{replies}/#"), true),
        ("response topic NUL", format!("{replies}/a\0b"), true),
        (
            "response topic: the status topic",
            format!("{p}/status"),
            false,
        ),
        (
            "response topic: a device command topic",
            format!("{p}/device/zigbee:0xaaaa/set"),
            false,
        ),
        ("response topic: the prefix", p.to_string(), false),
        (
            "response topic of 5,000 bytes",
            format!("{replies}/{}", "x".repeat(5000)),
            false,
        ),
    ] {
        let mut k = base(name, reply(topic, name.as_bytes()), own.clone());
        k.topic_refused = true;
        k.broker_may_refuse = broker_may_refuse;
        c.push(k);
    }
    // Correlation Data as large as MQTT allows, binary.
    let huge: Vec<u8> = (0..65_535u32).map(|i| (i % 251) as u8).collect();
    c.push(base(
        "correlation data of 65,535 bytes",
        reply(format!("{replies}/huge"), &huge),
        format!("{replies}/huge"),
    ));
    // Correlation Data without a Response Topic: response/<op>.
    c.push(base(
        "correlation data alone",
        PublishProperties {
            correlation_data: Some(b"alone".to_vec().into()),
            ..Default::default()
        },
        own.clone(),
    ));
    // User properties: a flood of small ones, then 1.2 MB of large ones.
    let mut flood = reply(format!("{replies}/flood"), b"flood");
    flood.user_properties = (0..10_000)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    c.push(base(
        "10,000 user properties",
        flood,
        format!("{replies}/flood"),
    ));
    let mut large = reply(format!("{replies}/large"), b"large");
    large.user_properties = (0..20)
        .map(|i| (format!("big{i}"), "p".repeat(60 * 1024)))
        .collect();
    let mut k = base(
        "1.2 MB of user properties",
        large,
        format!("{replies}/large"),
    );
    k.broker_may_refuse = true;
    c.push(k);
    // A payload format indicator that lies: binary said to be UTF-8.
    let mut lie = reply(format!("{replies}/pfi"), b"pfi");
    lie.payload_format_indicator = Some(1);
    let mut k = base(
        "payload format indicator on binary",
        lie,
        format!("{replies}/pfi"),
    );
    k.payload = vec![0xff, 0x00, 0xfe, 0x80];
    k.code = "not_utf8";
    k.broker_may_refuse = true;
    c.push(k);
    // A content type that lies: application/json on something that is not.
    let mut ct = reply(format!("{replies}/ct"), b"ct");
    ct.content_type = Some("application/json".into());
    let mut k = base("content type on non-JSON", ct, format!("{replies}/ct"));
    k.payload = b"not json".to_vec();
    k.code = "bad_json";
    c.push(k);
    // Topic aliases: set up, then a request by alias alone (if the broker takes them).
    let mut set_up = reply(format!("{replies}/alias1"), b"a1");
    set_up.topic_alias = Some(1);
    let mut k = base("topic alias set up", set_up, format!("{replies}/alias1"));
    k.broker_may_refuse = true;
    c.push(k);
    let mut by_alias = reply(format!("{replies}/alias2"), b"a2");
    by_alias.topic_alias = Some(1);
    let mut k = base(
        "request by topic alias",
        by_alias,
        format!("{replies}/alias2"),
    );
    k.topic = String::new();
    k.same_connection = true;
    k.broker_may_refuse = true;
    c.push(k);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_each_get_one_answer_and_one_audit_record_and_the_uplink_holds() {
    hostile_suite(Version::V4).await;
}

/// The same suite over MQTT 5, every request with a Response Topic and Correlation
/// Data, then the abuses only MQTT 5 allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_over_mqtt5_each_get_one_answer_on_their_response_topic() {
    hostile_suite(Version::V5).await;
}

async fn hostile_suite(version: Version) {
    let v5 = version == Version::V5;
    let b = version.broker();
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    eprintln!("{} hostile cases over {version:?}", cases.len());
    let p = format!("fgtest/{}", unique("gw"));
    let replies = format!("fgtest/{}", unique("replies"));
    let is_answer = |m: &Heard| m.topic.contains("/response/") || m.topic.starts_with(&replies);
    let answers_in = |m: &[Heard]| m.iter().filter(|m| is_answer(m)).count();
    let probe = Wire::connect(
        version,
        b,
        &[
            format!("{p}/response/#"),
            format!("{p}/device/#"),
            format!("{replies}/#"),
        ],
    )
    .await;
    let client = Wire::connect(version, b, &[]).await;
    // A retained request that was already on the broker before the gateway came
    // up: 1 MB, over every limit. It must not keep the gateway off the broker.
    let early = format!("{p}/request/info");
    client
        .publish(&early, true, sized("early", 1_000_000), None)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let upstream = if v5 { "protocol = 5" } else { "" };
    let mut rig = Rig::start_prefixed(&b.url(), upstream, fast(), p.clone()).await;
    rig.connected().await;
    probe
        .wait_for(
            "the early retained request's answer",
            Duration::from_secs(10),
            |m| m.iter().any(|m| m.topic.ends_with("/response/info")),
        )
        .await;
    let early_answer = probe
        .messages()
        .into_iter()
        .find(|m| m.topic.ends_with("/response/info"))
        .unwrap();
    assert_answer(
        "the early retained request",
        &early_answer,
        "payload_too_large",
        v5,
    );
    assert!(
        !retained_on(version, &early).await,
        "the gateway cleared the retained request"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    joined_device(&rig, "0xaaaa").await;

    // Empty payloads (how a retained message is cleared) are not requests: no
    // answer, no audit record.
    client
        .publish(&format!("{p}/request/info"), false, Vec::new(), None)
        .await;
    client
        .publish(&format!("{p}/request/set"), true, Vec::new(), None)
        .await;

    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in cases.iter().enumerate() {
        let topic = match &c.op {
            Some(op) => format!("{p}/request/{op}"),
            None => format!("{p}/request"),
        };
        // On MQTT 5 every request names its own Response Topic and Correlation Data.
        let corr = format!("corr-{i}").into_bytes();
        let (props, answer_topic) = if v5 {
            let props = PublishProperties {
                response_topic: Some(format!("{replies}/{i}")),
                correlation_data: Some(corr.clone().into()),
                ..Default::default()
            };
            (Some(props), format!("{replies}/{i}"))
        } else {
            (None, format!("{p}/response/{}", c.level))
        };
        let before = answers_in(&probe.messages());
        client
            .publish(&topic, c.retain, c.payload.clone(), props)
            .await;
        let what = format!("case {i} ({})", c.name);
        probe
            .wait_for(
                &format!("an answer to {what}"),
                Duration::from_secs(15),
                |m| answers_in(m) > before,
            )
            .await;
        let answer = probe
            .messages()
            .into_iter()
            .filter(|m| is_answer(m))
            .nth(before)
            .unwrap();
        assert_eq!(answer.topic, answer_topic, "{what}");
        if v5 {
            assert_eq!(
                answer.props.correlation_data.as_deref(),
                Some(&corr[..]),
                "{what}"
            );
        }
        assert_answer(&what, &answer, c.code, v5);
        *codes.entry(c.code).or_default() += 1;
    }
    assert!(codes.len() >= 12, "{codes:?}");

    // MQTT 5's own abuses, each on a connection of its own (a broker may drop a
    // client over a protocol error).
    let mut answered = cases.len() + 1;
    let mut topics_refused = 0;
    let mut broker_refused = Vec::new();
    if v5 {
        let v5_cases = v5_cases(&p, &replies);
        eprintln!("{} MQTT 5 cases", v5_cases.len());
        let mut wire: Option<Wire> = None;
        for (i, c) in v5_cases.into_iter().enumerate() {
            if !c.same_connection || wire.is_none() {
                wire = Some(Wire::connect(version, b, &[]).await);
            }
            let w = wire.as_ref().unwrap();
            let corr = c.props.correlation_data.clone();
            let what = format!("MQTT 5 case {i} ({})", c.name);
            let before = answers_in(&probe.messages());
            let refused_before = w.refused();
            w.publish(&c.topic, false, c.payload.clone(), Some(c.props))
                .await;
            let limit = Duration::from_secs(if c.broker_may_refuse { 5 } else { 15 });
            let deadline = Instant::now() + limit;
            let answer = loop {
                let got = probe.messages();
                if answers_in(&got) > before {
                    break got.into_iter().filter(|m| is_answer(m)).nth(before);
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let Some(answer) = answer else {
                assert!(
                    c.broker_may_refuse && w.refused() > refused_before,
                    "{what}: no answer, and the broker did not refuse it"
                );
                eprintln!("{what}: refused by the broker");
                broker_refused.push(c.name);
                continue;
            };
            answered += 1;
            assert_eq!(answer.topic, c.answer_topic, "{what}");
            assert_answer(&what, &answer, c.code, true);
            if c.code == "ok" {
                let v = answer.json();
                assert_eq!(v["correlation_id"], c.name, "{what}: {v}");
            }
            if c.answer_topic.starts_with(&replies) || c.topic_refused {
                assert_eq!(answer.props.correlation_data, corr, "{what}");
            }
            assert_eq!(
                answer.user("response_topic_refused").is_some(),
                c.topic_refused,
                "{what}: {answer:?}"
            );
            if c.topic_refused {
                topics_refused += 1;
            }
        }
        eprintln!("MQTT 5 cases the broker refused: {broker_refused:?}");
    }

    // Exactly one answer per request, none for the empty payloads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        answers_in(&probe.messages()),
        answered,
        "one answer per request"
    );
    // Nothing the gateway was asked to answer on landed on its own topics.
    assert!(
        !probe.messages().iter().any(|m| m
            .topic
            .starts_with(&format!("{p}/device/zigbee:0xaaaa/set"))),
        "an answer on a device command topic"
    );
    // One audit record per request (the early one included), the chain intact.
    let audit = mqtt_audit(&rig);
    assert_eq!(audit.len(), answered, "{audit:#?}");
    assert!(fieldgate::store::audit::verify(&rig.reader()).unwrap().ok);
    let snap = rig.status.snapshot();
    assert!(
        // The two sent above; the gateway's own clears of retained requests are not
        // counted.
        snap.requests.get("empty_ignored") == Some(&2),
        "{:?}",
        snap.requests
    );
    assert_eq!(
        snap.requests
            .get("response_topic_refused")
            .copied()
            .unwrap_or(0),
        topics_refused as u64,
        "{:?}",
        snap.requests
    );
    assert_eq!(snap.responses_dropped, 0);

    // Never dropped from the broker, and still publishing.
    assert_eq!(snap.connects, 1, "the gateway never reconnected: {snap:?}");
    rig.send("0xaaaa", reading(21.5)).await;
    probe
        .wait_for(
            "telemetry after the hostile requests",
            Duration::from_secs(10),
            |m| m.iter().any(|m| m.topic.ends_with("/telemetry")),
        )
        .await;
    rig.radio_commands.take();
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_5000_requests_gets_5000_answers_and_5000_audit_records() {
    const N: usize = 5000;
    let b = broker();
    let rig = Rig::start(&b.url(), "", fast()).await;
    let p = rig.prefix.clone();
    let probe = Probe::connect(b, &[format!("{p}/response/#"), format!("{p}/device/#")]).await;
    let (client, task) = publisher(&b.host, b.port).await;
    rig.connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    joined_device(&rig, "0xf100").await;

    let started = Instant::now();
    for i in 0..N {
        let (op, payload) = if i % 2 == 0 {
            ("info", body(&format!("f{i}"), json!({})))
        } else {
            (
                "health_check",
                body(&format!("f{i}"), json!({"client_id": "flood"})),
            )
        };
        client
            .publish(
                format!("{p}/request/{op}"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }
    let sent_in = started.elapsed();
    eprintln!("flood: {N} requests handed to the client in {sent_in:?}");

    probe
        .wait_for(&format!("{N} answers"), Duration::from_secs(120), |m| {
            m.iter().filter(|m| m.topic.contains("/response/")).count() >= N
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut per_cid: HashMap<String, usize> = HashMap::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for m in probe
        .messages()
        .iter()
        .filter(|m| m.topic.contains("/response/"))
    {
        let v = m.json();
        *per_cid
            .entry(v["correlation_id"].as_str().unwrap().to_string())
            .or_default() += 1;
        let s = v["error"]["code"]
            .as_str()
            .unwrap_or(v["status"].as_str().unwrap())
            .to_string();
        *statuses.entry(s).or_default() += 1;
    }
    eprintln!("flood answers: {statuses:?}");
    assert_eq!(per_cid.len(), N, "every request answered");
    assert!(per_cid.values().all(|&n| n == 1), "exactly once each");
    assert!(
        statuses.keys().all(|k| k == "ok" || k == "busy"),
        "{statuses:?}"
    );

    let audit = mqtt_audit(&rig);
    assert_eq!(audit.len(), N, "one audit record per request");
    let busy = audit
        .iter()
        .filter(|a| a.3.as_deref() == Some("busy"))
        .count();
    assert_eq!(busy, statuses.get("busy").copied().unwrap_or(0));
    assert!(audit
        .iter()
        .filter(|a| a.1 == "mqtt.health_check")
        .all(|a| a.0 == "mqtt:flood"));
    assert!(fieldgate::store::audit::verify(&rig.reader()).unwrap().ok);
    let snap = rig.status.snapshot();
    assert_eq!(snap.responses_dropped, 0);
    assert_eq!(snap.connects, 1, "never reconnected: {snap:?}");

    rig.send("0xf100", reading(20.0)).await;
    probe
        .wait_for("telemetry after the flood", Duration::from_secs(10), |m| {
            m.iter().any(|m| m.topic.ends_with("/telemetry"))
        })
        .await;
    task.abort();
    rig.stop().await;
}

/// A stop does not drop the requests the gateway has taken (acknowledged to the
/// broker): those queued are still carried out, audited and answered before the
/// connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_taken_before_a_stop_are_all_audited_and_answered() {
    const N: usize = 400;
    let b = broker();
    let mut rig = Rig::start(&b.url(), "", fast()).await;
    let p = rig.prefix.clone();
    let probe = Probe::connect(b, &[format!("{p}/response/#")]).await;
    let (client, task) = publisher(&b.host, b.port).await;
    rig.connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..N {
        client
            .publish(
                format!("{p}/request/info"),
                QoS::AtLeastOnce,
                false,
                body(&format!("s{i}"), json!({})),
            )
            .await
            .unwrap();
    }
    // The last one answered (`busy`, most likely): every request reached the gateway
    // (QoS 1, in order), and up to a queue of them are still being carried out.
    let last = format!("s{}", N - 1);
    probe
        .wait_for("the last request's answer", Duration::from_secs(60), |m| {
            m.iter()
                .any(|m| m.topic.contains("/response/") && m.json()["correlation_id"] == last)
        })
        .await;
    rig.stop_running().await;
    let audit = mqtt_audit(&rig);
    assert_eq!(audit.len(), N, "one audit record per request taken");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut per_cid: HashMap<String, usize> = HashMap::new();
    for m in probe
        .messages()
        .iter()
        .filter(|m| m.topic.contains("/response/"))
    {
        *per_cid
            .entry(m.json()["correlation_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_cid.len(), N, "every request answered");
    assert!(per_cid.values().all(|&n| n == 1), "exactly once each");
    task.abort();
    rig.close().await;
}

/// Publishes `n` requests to `topic` (QoS 1), the `i`th with `payload(i)`, from a task.
fn flood(
    client: AsyncClient,
    topic: String,
    n: usize,
    payload: impl Fn(usize) -> Vec<u8> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..n {
            if client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload(i))
                .await
                .is_err()
            {
                break;
            }
        }
    })
}

/// Waits until the probe has seen 50 responses.
async fn first_answers(probe: &Probe) {
    probe
        .wait_for("the first answers", Duration::from_secs(30), |m| {
            m.iter().filter(|m| m.topic.contains("/response/")).count() >= 50
        })
        .await;
}

/// A stop while requests are still arriving: every request the gateway took (it wrote
/// an audit record) is answered exactly once, none it did not take is, and the broker
/// keeps the gateway's own `shutdown` status rather than its last will. Closing the
/// connection while the broker was still sending used to reset it, and the broker
/// then threw away the answers, the status and the DISCONNECT it had not read yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_in_the_middle_of_a_request_flood_answers_every_request_it_took() {
    const N: usize = 3000;
    let b = broker();
    let mut rig = Rig::start(&b.url(), "", fast()).await;
    let p = rig.prefix.clone();
    let status_topic = format!("{p}/status");
    let probe = Probe::connect(b, &[format!("{p}/response/#"), status_topic.clone()]).await;
    let (client, task) = publisher(&b.host, b.port).await;
    rig.connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sender = flood(client, format!("{p}/request/info"), N, |i| {
        body(&format!("f{i}"), json!({}))
    });
    first_answers(&probe).await;
    rig.stop_running().await;
    sender.abort();
    task.abort();
    let taken: std::collections::HashSet<String> = rig
        .reader()
        .prepare("SELECT details FROM audit WHERE action LIKE 'mqtt.%'")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .filter_map(|d| {
            serde_json::from_str::<serde_json::Value>(&d.unwrap()).ok()?["correlation_id"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut per_cid: HashMap<String, usize> = HashMap::new();
    let mut statuses = Vec::new();
    for m in probe.messages().iter() {
        if m.topic == status_topic {
            statuses.push(m.json());
        } else if m.topic.contains("/response/") {
            *per_cid
                .entry(m.json()["correlation_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let unanswered: Vec<_> = taken.iter().filter(|c| !per_cid.contains_key(*c)).collect();
    assert!(
        unanswered.is_empty(),
        "{} of {} requests taken were not answered, e.g. {:?}",
        unanswered.len(),
        taken.len(),
        unanswered.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        per_cid.keys().all(|c| taken.contains(c)),
        "answered without an audit record"
    );
    assert!(per_cid.values().all(|&n| n == 1), "exactly once each");
    let last = statuses.last().cloned().unwrap_or_default();
    assert_eq!(
        last["reason"], "shutdown",
        "the last status: {last} (all: {statuses:?})"
    );
    rig.close().await;
}

/// Another client connecting with the gateway's client id (a cloned SD card) takes the
/// session over, again and again. The gateway's reconnect backoff keeps growing while
/// its connections are cut short, instead of fighting back once a second, and its last
/// error names the likely cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_same_id_does_not_make_the_gateway_fight_once_a_second() {
    let b = broker();
    let rig = Rig::start(&b.url(), "", fast()).await;
    rig.connected().await;
    let client_id = rig.status.snapshot().client_id;
    let (host, port) = (b.host.clone(), b.port);
    let kicker = tokio::spawn(async move {
        loop {
            let mut opts = MqttOptions::new(client_id.clone(), host.clone(), port);
            opts.set_keep_alive(Duration::from_secs(30));
            let (_client, mut el) = AsyncClient::new(opts, 10);
            // Connect, stay a moment, go away; then again.
            let _ = tokio::time::timeout(Duration::from_millis(300), async {
                loop {
                    if el.poll().await.is_err() {
                        break;
                    }
                }
            })
            .await;
            drop(el);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(12)).await;
    kicker.abort();
    let snap = rig.status.snapshot();
    // Once a second that is about a dozen connections; with the backoff growing
    // (1, 2, 4, 8 s) a handful.
    assert!(snap.connects <= 6, "{snap:?}");
    assert!(
        snap.last_error
            .as_deref()
            .is_some_and(|e| e.contains("client id")),
        "{snap:?}"
    );
    rig.stop().await;
}

/// The daemon itself (`fieldgate run`), stopped with SIGTERM during a flood of requests
/// that need the hub and a radio: the requests it took before the stop are carried out,
/// not answered "the daemon is shutting down" because the hub stopped with the uplink.
/// (Those arriving after the stop are still refused `shutting_down` by the uplink.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_daemon_carries_out_the_requests_it_took() {
    const N: usize = 2000;
    let b = broker();
    let prefix = format!("fgtest/{}", unique("stage"));
    let mut d = crate::common::TestDaemon::prepare(&format!(
        "[[radio]]\nname = \"zb0\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\n\n[upstream]\nurl = \"{}\"\nclient_id = \"{}\"\ntopic_prefix = \"{prefix}\"\n",
        b.url(),
        unique("fgs")
    ));
    let probe = Probe::connect(
        b,
        &[format!("{prefix}/response/#"), format!("{prefix}/status")],
    )
    .await;
    d.spawn();
    probe
        .wait_for("the birth message", Duration::from_secs(20), |m| {
            m.iter()
                .any(|m| m.topic.ends_with("/status") && m.json()["state"] == "online")
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st: serde_json::Value =
            serde_json::from_slice(&d.cli(&["status", "--json"]).stdout).unwrap_or_default();
        if st["radios"][0]["state"] == "up" {
            break;
        }
        assert!(Instant::now() < deadline, "the radio never came up: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (client, task) = publisher(&b.host, b.port).await;
    let sender = flood(client, format!("{prefix}/request/permit_join"), N, |i| {
        body(&format!("p{i}"), json!({"radio": "zb0", "seconds": 5}))
    });
    first_answers(&probe).await;
    let status = tokio::task::block_in_place(|| d.terminate(Duration::from_secs(20)));
    assert!(status.expect("stopped").success(), "{}", d.log());
    sender.abort();
    task.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers: Vec<serde_json::Value> = probe
        .messages()
        .iter()
        .filter(|m| m.topic.contains("/response/"))
        .map(|m| m.json())
        .collect();
    let ok = answers.iter().filter(|a| a["status"] == "ok").count();
    let hub_gone: Vec<&serde_json::Value> = answers
        .iter()
        .filter(|a| {
            a["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("daemon is shutting down"))
        })
        .collect();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for a in &answers {
        *codes
            .entry(a["error"]["code"].as_str().unwrap_or("ok").to_string())
            .or_default() += 1;
    }
    assert!(
        ok >= 50,
        "{ok} of {} answers ok: {codes:?} {}",
        answers.len(),
        answers[1]
    );
    assert!(
        hub_gone.is_empty(),
        "{} of {} taken requests were refused because the hub had stopped, e.g. {}",
        hub_gone.len(),
        answers.len(),
        hub_gone[0]
    );
}

/// A stop with more requests queued than can be carried out in time (Z-Wave `get`s, each
/// waiting for the node): every request sent before the stop is answered, the ones the
/// gateway had no time left for with `shutting_down`, none left without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_past_the_stop_s_time_are_answered_shutting_down() {
    const N: usize = 120;
    let b = broker();
    let prefix = format!("fgtest/{}", unique("slow"));
    let mut d = crate::common::TestDaemon::prepare(&format!(
        "[[radio]]\nname = \"zw0\"\nprotocol = \"zwave\"\nport = \"sim://zwave\"\n\n[upstream]\nurl = \"{}\"\nclient_id = \"{}\"\ntopic_prefix = \"{prefix}\"\n",
        b.url(),
        unique("fgz")
    ));
    let probe = Probe::connect(b, &[format!("{prefix}/response/#")]).await;
    d.spawn();
    // The controller's nodes join (and are admitted) through a join window.
    let api = fieldgate::api::client::ApiClient::new(&d.socket);
    let deadline = Instant::now() + Duration::from_secs(30);
    while api
        .call(
            hyper::Method::POST,
            "/v1/radios/zw0/permit-join",
            Some(json!({"seconds": 120})),
        )
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "no join window: {}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The switch node interviewed: a `get` then waits for its answer.
    let deadline = Instant::now() + Duration::from_secs(60);
    let node = loop {
        let list: serde_json::Value =
            serde_json::from_slice(&d.cli(&["devices", "--json"]).stdout).unwrap_or_default();
        // An active switch that is always listening: a `get` waits for its answer.
        let found = list.as_array().and_then(|l| {
            l.iter()
                .find(|x| {
                    x["lifecycle"] == "active"
                        && x["reachability"] == "always_listening"
                        && x["capabilities"]
                            .as_array()
                            .is_some_and(|c| c.iter().any(|c| c == "binary_switch"))
                })
                .and_then(|x| x["id"].as_str().map(str::to_string))
        });
        if let Some(id) = found {
            break id;
        }
        assert!(Instant::now() < deadline, "no switch node: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (client, task) = publisher(&b.host, b.port).await;
    let sent_before_stop = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (topic, node, sent) = (
            format!("{prefix}/request/get"),
            node.clone(),
            sent_before_stop.clone(),
        );
        tokio::spawn(async move {
            for i in 0..N {
                let payload = body(
                    &format!("g{i:04}"),
                    json!({"device": node, "attributes": ["on"]}),
                );
                if client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    break;
                }
                sent.store(i + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    // `terminate` sends SIGTERM at once.
    let before = sent_before_stop.load(Ordering::SeqCst);
    let status = tokio::task::block_in_place(|| d.terminate(Duration::from_secs(20)));
    assert!(status.expect("stopped").success(), "{}", d.log());
    sender.abort();
    task.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered: std::collections::HashSet<String> = probe
        .messages()
        .iter()
        .filter_map(|m| m.json()["correlation_id"].as_str().map(str::to_string))
        .collect();
    // Sent 10 ms apart: allow the last one before the signal to be in flight.
    let missing: Vec<String> = (0..before.saturating_sub(1))
        .map(|i| format!("g{i:04}"))
        .filter(|c| !answered.contains(c))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} requests sent before the stop got no answer, e.g. {:?}",
        missing.len(),
        before,
        &missing[..missing.len().min(5)]
    );
}

/// A burst of requests fills the MQTT client's queue while their answers and audit
/// records go out: the outbox rows that were read but could not be handed to the
/// client are read again, so every audit record arrives, in `seq` order, and the
/// outbox empties. They used to be skipped until the next reconnect (later `seq`s
/// went out first, and a retained state could go out after a newer one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_burst_that_fills_the_client_queue_leaves_no_outbox_row_behind() {
    const N: usize = 5000;
    let b = broker();
    let rig = Rig::start(&b.url(), "", fast()).await;
    let p = rig.prefix.clone();
    let audit_topic = format!("{p}/audit");
    let probe = Probe::connect(b, std::slice::from_ref(&audit_topic)).await;
    let (client, task) = publisher(&b.host, b.port).await;
    rig.connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sender = flood(client, format!("{p}/request/health_check"), N, |i| {
        body(&format!("h{i}"), json!({}))
    });
    let audits = |m: &[super::Msg]| m.iter().filter(|m| m.topic == audit_topic).count();
    probe
        .wait_for(
            "an audit record per request",
            Duration::from_secs(60),
            |m| audits(m) >= N,
        )
        .await;
    sender.abort();
    task.abort();
    let mut seqs: Vec<i64> = probe
        .messages()
        .iter()
        .filter(|m| m.topic == audit_topic)
        .filter_map(|m| m.json()["seq"].as_i64())
        .collect();
    let arrived = seqs.clone();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(arrived, seqs, "audit records arrived out of seq order");
}
