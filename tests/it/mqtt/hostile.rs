//! Requests as a careless or hostile cloud would send them: every size from empty
//! to 2 MB (retained too), every field with the wrong type or out of range, extra
//! topic levels, duplicate keys, NUL and bidirectional-formatting characters, and
//! a flood of 5,000 in well under a second. After each: exactly one response per
//! request, one audit record per request, the gateway still connected (never a
//! reconnect) and still publishing.
//!
//! Runs on the embedded rumqttd, and on mosquitto with `FIELDGATE_TEST_BROKER`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use fieldgate::model::{DeviceEventKind, DeviceId};
use rumqttc::{AsyncClient, MqttOptions, QoS};
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

fn is_answer_count(m: &[super::Msg]) -> usize {
    m.iter().filter(|m| m.topic.contains("/response/")).count()
}

fn answers_so_far(probe: &Probe) -> usize {
    is_answer_count(&probe.messages())
}

/// Whether `topic` holds a retained message (a fresh subscriber gets it at once).
async fn retained_on(topic: &str) -> bool {
    let probe = Probe::connect(broker(), &[topic.to_string()]).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_each_get_one_answer_and_one_audit_record_and_the_uplink_holds() {
    let b = broker();
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    eprintln!("{} hostile cases", cases.len());
    let p = format!("fgtest/{}", unique("gw"));
    let probe = Probe::connect(b, &[format!("{p}/response/#"), format!("{p}/device/#")]).await;
    let (client, task) = publisher(&b.host, b.port).await;
    // A retained request that was already on the broker before the gateway came
    // up: 1 MB, over every limit. It must not keep the gateway off the broker.
    let early = format!("{p}/request/info");
    client
        .publish(&early, QoS::AtLeastOnce, true, sized("early", 1_000_000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rig = Rig::start_prefixed(&b.url(), "", fast(), p.clone()).await;
    rig.connected().await;
    probe
        .wait_for(
            "the early retained request's answer",
            Duration::from_secs(10),
            |m| m.iter().any(|m| m.topic.ends_with("/response/info")),
        )
        .await;
    let early_answer = probe.on("/response/info")[0].json();
    assert_eq!(
        early_answer["error"]["code"], "payload_too_large",
        "{early_answer}"
    );
    assert!(
        !retained_on(&early).await,
        "the gateway cleared the retained request"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    joined_device(&rig, "0xaaaa").await;

    // Empty payloads (how a retained message is cleared) are not requests: no
    // answer, no audit record.
    client
        .publish(
            format!("{p}/request/info"),
            QoS::AtLeastOnce,
            false,
            Vec::new(),
        )
        .await
        .unwrap();
    client
        .publish(
            format!("{p}/request/set"),
            QoS::AtLeastOnce,
            true,
            Vec::new(),
        )
        .await
        .unwrap();

    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in cases.iter().enumerate() {
        let topic = match &c.op {
            Some(op) => format!("{p}/request/{op}"),
            None => format!("{p}/request"),
        };
        let before = answers_so_far(&probe);
        client
            .publish(&topic, QoS::AtLeastOnce, c.retain, c.payload.clone())
            .await
            .unwrap();
        probe
            .wait_for(
                &format!("an answer to case {i} ({})", c.name),
                Duration::from_secs(15),
                |m| is_answer_count(m) > before,
            )
            .await;
        let answer = probe
            .messages()
            .into_iter()
            .filter(|m| m.topic.contains("/response/"))
            .nth(before)
            .unwrap();
        assert_eq!(
            answer.topic,
            format!("{p}/response/{}", c.level),
            "case {i} ({})",
            c.name
        );
        let v = answer.json();
        if c.code == "ok" {
            assert_eq!(v["status"], "ok", "case {i} ({}): {v}", c.name);
        } else {
            assert_eq!(v["status"], "error", "case {i} ({}): {v}", c.name);
            assert_eq!(v["error"]["code"], c.code, "case {i} ({}): {v}", c.name);
        }
        // Nothing hostile comes back: no NUL, no bidi control in any answer.
        let text = String::from_utf8_lossy(&answer.payload);
        assert!(
            !text.chars().any(|ch| ch == '\0'
                || ('\u{202a}'..='\u{202e}').contains(&ch)
                || ('\u{2066}'..='\u{2069}').contains(&ch)),
            "case {i} ({}): {text}",
            c.name
        );
        *codes.entry(c.code).or_default() += 1;
    }
    assert!(codes.len() >= 12, "{codes:?}");

    // Exactly one answer per request, none for the empty payloads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers = answers_so_far(&probe);
    assert_eq!(answers, cases.len() + 1, "one answer per request");
    // One audit record per request (the early one included), the chain intact.
    let audit = mqtt_audit(&rig);
    assert_eq!(audit.len(), cases.len() + 1, "{audit:#?}");
    assert!(fieldgate::store::audit::verify(&rig.reader()).unwrap().ok);
    let snap = rig.status.snapshot();
    assert!(
        snap.requests.get("empty_ignored").is_some_and(|&n| n >= 2),
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
    task.abort();
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
