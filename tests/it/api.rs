//! The local API through its Unix socket: every endpoint, the socket's mode, the
//! caller's uid in the audit log, JSON errors for malformed requests, and the CLI
//! on top of it.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

use fieldgate::api::client::ApiClient;
use fieldgate::store::{self, registry};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{fieldgate, stderr, stdout, TestDaemon};

const RADIO: &str =
    "[[radio]]\nname = \"zb0\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\nenabled = false\n";

/// Writes a device straight into the registry (on its own thread: the store's
/// blocking calls must not run on an async worker).
fn seed_device(db: &std::path::Path, id: &str, lifecycle: &str) {
    let (db, id, lifecycle) = (db.to_path_buf(), id.to_string(), lifecycle.to_string());
    std::thread::spawn(move || seed_device_now(&db, &id, &lifecycle))
        .join()
        .unwrap();
}

fn seed_device_now(db: &std::path::Path, id: &str, lifecycle: &str) {
    let s = store::Store::open(db, Default::default()).unwrap();
    let (proto, addr) = id.split_once(':').unwrap();
    let d = registry::Device {
        id: id.into(),
        protocol: proto.into(),
        radio: "zb0".into(),
        native_address: addr.into(),
        manufacturer: Some("LUMI".into()),
        model: Some("lumi.weather".into()),
        firmware: Some("3000-0001".into()),
        power_source: "battery".into(),
        capabilities: vec!["temperature".into(), "humidity".into()],
        last_state: json!({"temperature": 21.5}),
        lifecycle: lifecycle.into(),
        first_seen: "2026-01-01T00:00:00.000Z".into(),
        last_seen: "2026-01-01T00:10:00.000Z".into(),
        health: json!({}),
        reachability: None,
        offline_after_ms: None,
        name: None,
    };
    s.writer()
        .write_blocking(move |c| registry::insert(c, &d))
        .unwrap();
}

/// A daemon whose registry holds two devices before it starts.
fn daemon_with_devices() -> TestDaemon {
    daemon_with(&[
        ("zigbee:0x00124b0001abcdef", "active"),
        ("zigbee:0x00124b0001000002", "pending"),
    ])
}

/// A daemon whose registry holds these devices (id, lifecycle) before it starts.
fn daemon_with(devices: &[(&str, &str)]) -> TestDaemon {
    let mut d = TestDaemon::prepare(RADIO);
    let db = d.db();
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    for (id, lifecycle) in devices {
        seed_device(&db, id, lifecycle);
    }
    d.spawn();
    d
}

fn audit_records(d: &TestDaemon) -> Vec<store::audit::AuditRecord> {
    let c = store::open_reader(&d.db()).unwrap();
    store::audit::tail(&c, 10_000, None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_through_the_socket() {
    let d = daemon_with_devices();
    let api = ApiClient::new(&d.socket);

    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");

    let status = api.call(Method::GET, "/v1/status", None).await.unwrap();
    assert_eq!(status["gateway_id"], "test-gw");
    assert_eq!(status["devices"]["total"], 2);
    // Every lifecycle is counted, zero or not.
    assert_eq!(status["devices"]["quarantined"], 0);
    assert_eq!(status["devices"]["decommissioned"], 0);
    assert_eq!(status["radios"][0]["name"], "zb0");
    assert_eq!(status["radios"][0]["state"], "unavailable");
    assert_eq!(status["radios"][0]["counters"]["startups"], 0);
    assert_eq!(status["radios"][0]["counters"]["timeouts"], 0);

    let list = api.call(Method::GET, "/v1/devices", None).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let pending = api
        .call(Method::GET, "/v1/devices?lifecycle=pending", None)
        .await
        .unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 1);

    let one = api
        .call(Method::GET, "/v1/devices/zigbee:0x00124b0001abcdef", None)
        .await
        .unwrap();
    assert_eq!(one["model"], "lumi.weather");
    assert_eq!(one["last_state"]["temperature"], 21.5);

    // The radio is not running (disabled): the join window is refused, clearly.
    let (code, body) = api
        .call_raw(
            Method::POST,
            "/v1/radios/zb0/permit-join",
            Some(br#"{"seconds":30}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "radio_unavailable");
    let (code, body) = api
        .call_raw(
            Method::POST,
            "/v1/radios/nope/permit-join",
            Some(br#"{"seconds":30}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "unknown_radio");

    let removed = api
        .call(
            Method::DELETE,
            "/v1/devices/zigbee:0x00124b0001abcdef",
            None,
        )
        .await
        .unwrap();
    assert_eq!(removed["device"]["lifecycle"], "decommissioned");
    let (code, body) = api
        .call_raw(
            Method::DELETE,
            "/v1/devices/zigbee:0x00124b0001abcdef",
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "already_decommissioned");

    let audit = api
        .call(Method::GET, "/v1/audit?limit=5", None)
        .await
        .unwrap();
    assert_eq!(audit.as_array().unwrap().len(), 5);
    let verify = api
        .call(Method::GET, "/v1/audit/verify", None)
        .await
        .unwrap();
    assert_eq!(verify["ok"], true);

    // The caller's uid, gid and pid are the actor of every request, refused ones too.
    let uid = nix::unistd::getuid().as_raw();
    let me = format!(
        "local:uid={uid},gid={},pid={}",
        nix::unistd::getgid().as_raw(),
        std::process::id()
    );
    let records = audit_records(&d);
    let requests: Vec<_> = records
        .iter()
        .filter(|r| r.action.starts_with("api."))
        .collect();
    assert!(requests.len() >= 9, "{requests:?}");
    assert!(requests.iter().all(|r| r.actor == me), "{requests:?}");
    assert!(records.iter().any(|r| r.action == "api.post"
        && r.outcome == "refused"
        && r.target == "/v1/radios/nope/permit-join"));
    assert!(records
        .iter()
        .any(|r| r.action == "device.decommission" && r.outcome == "accepted" && r.actor == me));
    assert!(records
        .iter()
        .any(|r| r.action == "radio.permit_join" && r.outcome == "refused"));
}

/// The audit log is read by action, actor and target, and a follower waits for what
/// it watches: the answer comes when a matching record is written (not the requests'
/// own `api.get` records, which would end every wait at once), or empty at `wait_s`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_filtered_and_followed_without_polling() {
    let d = daemon_with_devices();
    let api = ApiClient::new(&d.socket);
    let head = api
        .call(Method::GET, "/v1/audit?limit=1", None)
        .await
        .unwrap()[0]["seq"]
        .as_i64()
        .unwrap_or(0);
    let socket = d.socket.clone();
    let follower = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let v = ApiClient::new(&socket)
            .call(
                Method::GET,
                &format!("/v1/audit?after={head}&action=device.join,device.decommission&wait_s=20"),
                None,
            )
            .await
            .unwrap();
        (v, started.elapsed())
    });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(!follower.is_finished(), "answered before a matching record");
    api.call(Method::GET, "/v1/status", None).await.unwrap();
    api.call(
        Method::DELETE,
        "/v1/devices/zigbee:0x00124b0001abcdef",
        None,
    )
    .await
    .unwrap();
    let (found, waited) = follower.await.unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["action"], "device.decommission");
    assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    // By target, newest first when there is no `after`.
    let about = api
        .call(
            Method::GET,
            "/v1/audit?target=zigbee:0x00124b0001abcdef&limit=100",
            None,
        )
        .await
        .unwrap();
    let about = about.as_array().unwrap();
    assert!(!about.is_empty());
    assert!(about
        .iter()
        .all(|r| r["target"] == "zigbee:0x00124b0001abcdef"));
    // A friendly name finds the records of the device it names (they carry its id).
    rusqlite::Connection::open(d.db())
        .unwrap()
        .execute(
            "INSERT INTO device_names (device_id, name) VALUES ('zigbee:0x00124b0001000002', 'shed door')",
            [],
        )
        .unwrap();
    let _ = api
        .call_raw(
            Method::POST,
            "/v1/devices/zigbee:0x00124b0001000002/command",
            Some(br#"{"state":"on"}"#.to_vec()),
        )
        .await
        .unwrap();
    let named = api
        .call(Method::GET, "/v1/audit?target=shed%20door&limit=100", None)
        .await
        .unwrap();
    let named = named.as_array().unwrap();
    // (The device sleeps: the command is held, a `device.request` record.)
    assert!(
        named.iter().any(|r| r["action"] == "device.request"),
        "{named:?}"
    );
    assert!(named
        .iter()
        .all(|r| r["target"] == "zigbee:0x00124b0001000002"));
    // Nothing comes: an empty answer after the wait.
    let started = std::time::Instant::now();
    let none = api
        .call(
            Method::GET,
            &format!("/v1/audit?after={head}&actor=radio:nope&wait_s=1"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(none, json!([]));
    assert!(started.elapsed() >= std::time::Duration::from_millis(700));
    for bad in ["wait_s=5", &format!("after={head}&wait_s=31")] {
        let (code, body) = api
            .call_raw(Method::GET, &format!("/v1/audit?{bad}"), None)
            .await
            .unwrap();
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    // The CLI takes the same filters.
    let out = stdout(&d.cli(&["audit", "tail", "--json", "--action", "device.decommission"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("device.decommission"), "{out}");
}

/// The device list's filters: `since` is the instant it names, whatever its offset, and
/// a value that is not one (a typo) is refused instead of matching nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_filters_are_checked_and_since_is_an_instant() {
    let d = daemon_with_devices();
    let api = ApiClient::new(&d.socket);
    // Both were first seen at 2026-01-01T00:00:00Z.
    for (query, want) in [
        ("since=2026-01-01T01:00:00%2B02:00", 2),
        ("since=2026-01-01T00:00:00Z", 2),
        ("since=2025-12-31T19:00:01-05:00", 0),
        ("since=2026-01-01T00:00:00.001Z", 0),
        ("lifecycle=pending", 1),
        ("protocol=zigbee&lifecycle=active", 1),
        ("protocol=zwave", 0),
    ] {
        let (status, v) = api
            .call_raw(Method::GET, &format!("/v1/devices?{query}"), None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{query}: {v}");
        assert_eq!(v.as_array().map(Vec::len), Some(want), "{query}: {v}");
    }
    for query in [
        "since=zzz",
        "since=1",
        "since=2026-01-01",
        "lifecycle=bogus",
        "protocol=bogus",
    ] {
        let (status, v) = api
            .call_raw(Method::GET, &format!("/v1/devices?{query}"), None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert_eq!(v["error"]["code"], "bad_request", "{query}: {v}");
    }
    let out = d.cli(&["devices", "--lifecycle", "bogus"]);
    assert!(!out.status.success(), "{}", stdout(&out));
}

/// Errors speak the API's terms: no internal type names, and what the caller sent is
/// quoted back short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_quote_short_and_name_no_internal_types() {
    let d = daemon_with_devices();
    let api = ApiClient::new(&d.socket);
    let (status, v) = api
        .call_raw(
            Method::POST,
            "/v1/radios/zb0/permit-join",
            Some(br#""sixty""#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(!message.contains("Body"), "{message}");
    assert!(message.contains("a JSON object"), "{message}");
    let long = "x".repeat(60_000);
    let (status, v) = api
        .call_raw(Method::GET, &format!("/v1/devices/{long}"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "bad_device_id");
    assert!(v["error"]["message"].as_str().unwrap().len() < 300, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors() {
    let d = daemon_with_devices();
    let api = ApiClient::new(&d.socket);
    type Case<'a> = (Method, &'a str, Option<&'a [u8]>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        // Well-formed but out of range, against not well-formed.
        (
            Method::POST,
            "/v1/devices/zigbee:0x00124b0001abcdef/command",
            Some(br#"{"level": 150}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/devices/zigbee:0x00124b0001abcdef/command",
            Some(br#"{"state": "on", "ttl_s": 0}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/devices/zigbee:0x00124b0001abcdef/command",
            Some(br#"{"state": "on", "ttl_s": "soon"}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/nowhere",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PUT,
            "/v1/status",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v1/devices/not%20an%20id%21",
            None,
            StatusCode::BAD_REQUEST,
            "bad_device_id",
        ),
        // A friendly name no device has.
        (
            Method::GET,
            "/v1/devices/not-an-id",
            None,
            StatusCode::NOT_FOUND,
            "unknown_device",
        ),
        (
            Method::GET,
            "/v1/devices/zigbee:0xdeadbeef",
            None,
            StatusCode::NOT_FOUND,
            "unknown_device",
        ),
        (
            Method::GET,
            "/v1/devices?colour=red",
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/audit?limit=lots",
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/audit?limit=0",
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/radios/zb0/permit-join",
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/radios/zb0/permit-join",
            Some(b"{not json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/radios/zb0/permit-join",
            Some(br#"{"seconds":"ten"}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/radios/zb0/permit-join",
            Some(br#"{"seconds":10,"extra":1}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/radios/zb0/permit-join",
            Some(b"\xff\xfe\x00garbage"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            // serde alone would fill the body's struct from an array.
            Method::POST,
            "/v1/radios/zb0/permit-join",
            Some(b"[30]"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/devices/zigbee:0x00124b0001000002/adopt",
            Some(b"[]"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/radios/zb0/permit-join",
            Some(br#"{"seconds":0}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/radios/zb0/permit-join",
            Some(br#"{"seconds":100000}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::DELETE,
            "/v1/devices/zwave:",
            None,
            StatusCode::BAD_REQUEST,
            "bad_device_id",
        ),
    ];
    for (method, path, body, want_status, want_code) in cases {
        let (status, value) = api
            .call_raw(method.clone(), path, body.map(|b| b.to_vec()))
            .await
            .unwrap();
        assert_eq!(status, want_status, "{method} {path}: {value}");
        assert_eq!(
            value["error"]["code"], want_code,
            "{method} {path}: {value}"
        );
        assert!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{value}"
        );
    }
    // An oversized body is refused and the daemon keeps serving.
    let big = vec![b' '; fieldgate::api::MAX_BODY + 10];
    let (status, value) = api
        .call_raw(Method::POST, "/v1/radios/zb0/permit-join", Some(big))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(value["error"]["code"], "payload_too_large");
    // Raw garbage on the socket does not hurt it either.
    let mut raw = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    raw.write_all(b"\x00\x01\x02 this is not HTTP\r\n\r\n")
        .unwrap();
    let mut sink = Vec::new();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let _ = raw.read_to_end(&mut sink);
    let status = api.call(Method::GET, "/v1/status", None).await.unwrap();
    assert_eq!(status["gateway_id"], "test-gw");
    assert!(status["api"]["refused"].as_u64().unwrap() >= 15, "{status}");
}

#[test]
fn cli_renders_tables_json_and_clear_errors() {
    let d = daemon_with(&[
        ("zigbee:0x00124b0001abcdef", "active"),
        ("zigbee:0x00124b0001000002", "pending"),
        ("zigbee:0x00124b0001000003", "quarantined"),
    ]);
    let out = d.cli(&["devices"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("LIFECYCLE")
            && text.contains("zigbee:0x00124b0001abcdef")
            && text.contains("lumi.weather"),
        "{text}"
    );

    let out = d.cli(&["devices", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);

    let out = d.cli(&["status"]);
    assert!(
        stdout(&out).contains("zb0") && stdout(&out).contains("disabled"),
        "{}",
        stdout(&out)
    );

    let out = d.cli(&["device", "zigbee:0x00124b0001abcdef"]);
    assert!(stdout(&out).contains("3000-0001"), "{}", stdout(&out));

    let out = d.cli(&["device", "zigbee:0x0bad"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no device"), "{}", stderr(&out));

    let out = d.cli(&["remove", "zigbee:0x00124b0001000002"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("decommissioned"), "{}", stdout(&out));

    // `refresh` refusals: exit code 1 and a message that says why and what to look at.
    let refused = |args: &[&str], want: &[&str]| {
        let out = d.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
        for w in want {
            assert!(stderr(&out).contains(w), "{args:?}: {}", stderr(&out));
        }
    };
    refused(
        &["refresh", "zigbee:0x00124b0001000009"],
        &["error: no device", "(unknown_device)", "fieldgate devices"],
    );
    refused(
        &["refresh", "zigbee:0x00124b0001000002"],
        &["is decommissioned", "(device_decommissioned)"],
    );
    refused(
        &[
            "refresh",
            "zigbee:0x00124b0001000003",
            "--attributes",
            "temperature",
        ],
        &[
            "is quarantined",
            "(device_quarantined)",
            "fieldgate policy show",
        ],
    );
    refused(
        &["refresh", "nonsense!"],
        &["(bad_device_id)", "friendly name"],
    );
    refused(
        &["refresh", "nonsense"],
        &["no device `nonsense`", "(unknown_device)"],
    );
    refused(
        &[
            "refresh",
            "zigbee:0x00124b0001abcdef",
            "--attributes",
            "temperature,",
        ],
        &["is not an attribute name"],
    );
    // Each refusal by the hub is audited.
    let refusals = audit_records(&d)
        .into_iter()
        .filter(|r| r.action == "device.refresh" && r.outcome == "refused")
        .count();
    assert_eq!(refusals, 3);

    let out = d.cli(&["pair", "zb0", "--seconds", "5"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
    // A window no radio opens is refused by the CLI, in the daemon's range.
    for seconds in ["0", "255", "4294967295"] {
        let out = d.cli(&["pair", "zb0", "--seconds", seconds]);
        assert_eq!(out.status.code(), Some(2), "{seconds}");
        assert!(stderr(&out).contains("1..=254"), "{}", stderr(&out));
    }

    let out = d.cli(&["audit", "tail", "-n", "3"]);
    assert!(stdout(&out).contains("ACTOR"), "{}", stdout(&out));
    let out = d.cli(&["audit", "verify"]);
    assert!(
        out.status.success() && stdout(&out).contains("audit log OK"),
        "{}",
        stdout(&out)
    );

    // No daemon: a message that says so.
    let out = fieldgate(&["--socket", "/nonexistent/api.sock", "status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
}

/// Idle and half-sent connections cannot take the socket away: with thousands of
/// them open (more than the server keeps), a new `status` is answered within a
/// second, the daemon's memory stays bounded, and the idle ones are closed.
#[test]
fn a_flood_of_idle_and_half_open_connections_leaves_status_answering() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let d = daemon_with(&[]);
    let pid = d.child.as_ref().expect("running").id();
    let rss_kib = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    };
    let before = rss_kib();
    // Bounded by the test's own descriptor limit (20,000 here is plenty for 3,000).
    let mut held = Vec::new();
    for i in 0..3000 {
        let Ok(mut s) = UnixStream::connect(&d.socket) else {
            continue;
        };
        if i % 2 == 0 {
            // Half a request: headers never finished.
            let _ = s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n");
        }
        held.push(s);
    }
    let started = std::time::Instant::now();
    let out = d.cli(&["status", "--json"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert!(
        took < std::time::Duration::from_secs(1),
        "status took {took:?} under 3,000 open connections"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["api"]["connections_evicted"].as_u64().unwrap_or(0) > 2000,
        "{}",
        v["api"]
    );
    let during = rss_kib();
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} KiB to {during} KiB"
    );
    drop(held);
}

/// A request whose headers never finish is cut off after the header timeout
/// (5 s), not held open for ever.
#[test]
fn half_sent_headers_are_cut_off() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let d = daemon_with(&[]);
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(4) && took < std::time::Duration::from_secs(12),
        "closed after {took:?}"
    );
}

/// Connections that send a request's headers and part of its body, then go quiet,
/// cannot take the socket away: with more of them than the server keeps, `status`
/// is still answered at once (they count as idle and are closed for room); one of
/// them on its own is answered `400` once the body timeout passes; and a body
/// declared over the endpoint's limit is refused before any of it is read.
#[test]
fn half_sent_bodies_neither_lock_the_api_out_nor_stay_open() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let d = daemon_with(&[]);
    let partial =
        b"POST /v1/radios/zb0/permit-join HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{\"sec";
    let mut held = Vec::new();
    for _ in 0..300 {
        let Ok(mut s) = UnixStream::connect(&d.socket) else {
            continue;
        };
        let _ = s.write_all(partial);
        held.push(s);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let out = d.cli(&["--timeout", "5s", "status", "--json"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert!(
        took < std::time::Duration::from_secs(2),
        "status took {took:?} with 300 half-sent bodies open"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["api"]["connections_evicted"].as_u64().unwrap_or(0) > 0,
        "{}",
        v["api"]
    );
    drop(held);

    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.write_all(partial).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        took >= std::time::Duration::from_secs(9) && took < std::time::Duration::from_secs(15),
        "answered after {took:?}: {answer}"
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("did not arrive within 10 s"), "{answer}");

    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.write_all(
        b"POST /v1/radios/zb0/permit-join HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{",
    )
    .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

/// A caller that hangs up while its request is being carried out (a network key
/// rotation takes seconds) does not take the request's audit record with it.
#[test]
fn a_request_whose_caller_hangs_up_is_still_audited() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let mut d = TestDaemon::prepare(
        "[[radio]]\nname = \"zb0\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\n",
    );
    d.spawn();
    let up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !stdout(&d.cli(&["status", "--json"])).contains("\"up\"") {
        assert!(std::time::Instant::now() < up, "the radio never came up");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    {
        let mut s = UnixStream::connect(&d.socket).expect("connect");
        s.write_all(
            b"POST /v1/radios/zb0/rotate-key HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        // Taken and under way, then the caller is gone.
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let records = audit_records(&d);
        if records
            .iter()
            .any(|r| r.action == "api.post" && r.target.ends_with("/rotate-key"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no api.post record for the rotation: {:?}",
            records.iter().map(|r| &r.action).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// A large registry is listed as it is read, not built whole first: the answer comes
/// in chunks, parses as the same array the CLI shows, and a client that stops reading
/// half-way leaves the daemon answering (its read snapshot released).
#[test]
fn a_large_device_list_is_streamed() {
    use std::os::unix::net::UnixStream;
    const N: usize = 3_000;
    let mut d = TestDaemon::prepare(RADIO);
    let db = d.db();
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let seed = db.clone();
    std::thread::spawn(move || {
        let s = store::Store::open(&seed, Default::default()).unwrap();
        s.writer()
            .write_blocking(|c| {
                for i in 0..N {
                    let addr = format!("0x00124b00{i:08x}");
                    registry::insert(
                        c,
                        &registry::Device {
                            id: format!("zigbee:{addr}"),
                            protocol: "zigbee".into(),
                            radio: "zb0".into(),
                            native_address: addr,
                            manufacturer: Some("LUMI".into()),
                            model: Some("lumi.weather".into()),
                            firmware: None,
                            power_source: "battery".into(),
                            capabilities: vec!["temperature".into()],
                            last_state: json!({"temperature": 21.5, "humidity": 40}),
                            lifecycle: "active".into(),
                            first_seen: "2026-01-01T00:00:00.000Z".into(),
                            last_seen: "2026-01-01T00:10:00.000Z".into(),
                            health: json!({}),
                            reachability: None,
                            offline_after_ms: None,
                            name: None,
                        },
                    )?;
                }
                Ok(())
            })
            .unwrap();
    })
    .join()
    .unwrap();
    d.spawn();

    let raw = |stop_after: Option<usize>| -> Vec<u8> {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if stop_after.is_some_and(|k| out.len() >= k) {
                break;
            }
        }
        out
    };
    // Walk away after the first 16 KiB, several times over.
    for _ in 0..3 {
        raw(Some(16 * 1024));
    }
    let whole = raw(None);
    let head_end = whole.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&whole[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");

    let out = d.cli(&["devices", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), N);
    assert_eq!(list[0]["id"], "zigbee:0x00124b0000000000");
    assert_eq!(list[N - 1]["id"], format!("zigbee:0x00124b00{:08x}", N - 1));
    assert_eq!(list[7]["last_state"]["humidity"], 40);

    // The abandoned lists left nothing stuck behind them.
    let out = d.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The audit high-water mark that cannot be rewritten (here a directory where its file
/// was) is said in the plain `status`, not only counted in its JSON.
#[test]
fn status_says_when_the_audit_mark_cannot_be_written() {
    let d = daemon_with(&[]);
    assert!(d.cli(&["status"]).status.success());
    let mark = store::audit_guard::mark_path(&d.db());
    std::fs::remove_file(&mark).unwrap();
    std::fs::create_dir(&mark).unwrap();
    // Each request is an audit record, whose commit rewrites the mark.
    d.cli(&["status"]);
    let out = stdout(&d.cli(&["status"]));
    std::fs::remove_dir(&mark).unwrap();
    assert!(
        out.contains("high-water mark could not be written"),
        "{out}"
    );
}

/// Complete requests whose callers close the socket at once, before any answer, are
/// each carried out and audited: none is lost with its connection.
#[test]
fn requests_whose_callers_close_at_once_are_all_carried_out_and_audited() {
    use std::os::unix::net::UnixStream;
    let d = daemon_with(&[]);
    assert!(d.cli(&["status"]).status.success());
    const N: usize = 20;
    for i in 0..N {
        let body = format!(
            r#"{{"device":"0x00124b0002ab{i:04}","code":"83FED3407A939723A5C639B26916D505C3B5"}}"#
        );
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(
            format!(
                "POST /v1/install-codes HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        drop(s);
    }
    // A request still running when its caller goes (a follower waiting for records).
    for _ in 0..3 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(b"GET /v1/audit?after=0&actor=nobody&wait_s=1 HTTP/1.1\r\nHost: l\r\n\r\n")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(s);
    }
    let waits = || {
        audit_records(&d)
            .iter()
            .filter(|r| r.action == "api.get" && r.target == "/v1/audit")
            .count()
    };
    let count = |action: &str| {
        audit_records(&d)
            .iter()
            .filter(|r| {
                r.action == action
                    && (r.target.contains("install-codes") || r.target.contains("0002ab"))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while (count("api.post") < N || count("device.install_code.add") < N)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(count("api.post"), N, "requests lost with their connection");
    assert_eq!(count("device.install_code.add"), N);
    while waits() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(waits(), 3, "requests dropped with their connection");
}

/// A secret sent with the wrong JSON type (an install code or key as a number) is
/// refused without its value being quoted back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_of_the_wrong_type_is_refused_without_being_quoted() {
    let d = daemon_with(&[]);
    let api = ApiClient::new(&d.socket);
    for (path, body) in [
        (
            "/v1/install-codes",
            r#"{"device":"0x00124b0001abcd02","code":123456789012345678}"#,
        ),
        (
            "/v1/lora/devices",
            r#"{"dev_eui":"70b3d57ed0000004","join_eui":"70b3d57ed0000000","app_key":1234567890123}"#,
        ),
        (
            "/v1/install-codes",
            r#"{"device":"0x00124b0001abcd02","code":["83FED3407A939723A5C639B26916D505C3B5"]}"#,
        ),
    ] {
        let (code, answer) = api
            .call_raw(Method::POST, path, Some(body.as_bytes().to_vec()))
            .await
            .unwrap();
        assert_eq!(code, StatusCode::BAD_REQUEST, "{answer}");
        let text = answer.to_string();
        for secret in ["123456789012345678", "1234567890123", "83FED340"] {
            assert!(!text.contains(secret), "{path}: {text}");
        }
        assert!(text.contains("invalid type"), "{path}: {text}");
    }
}

/// A trigger someone added that discards one kind of audit record (a decommission's):
/// the request is refused `audit_unavailable` (503), as when the log cannot be written at
/// all; the alarm is raised at once (not at the next start) and the trigger is removed,
/// so the next decommission is carried out and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_discarding_one_kind_of_record_refuses_the_action_and_raises_the_alarm_at_once() {
    let d = daemon_with_devices();
    let api = ApiClient::new(&d.socket);
    rusqlite::Connection::open(d.db())
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER zz_hide BEFORE INSERT ON audit WHEN NEW.action = 'device.decommission' \
             BEGIN SELECT RAISE(IGNORE); END;",
        )
        .unwrap();
    let (code, body) = api
        .call_raw(
            Method::DELETE,
            "/v1/devices/zigbee:0x00124b0001abcdef",
            None,
        )
        .await
        .unwrap();
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
    let one = api
        .call(Method::GET, "/v1/devices/zigbee:0x00124b0001abcdef", None)
        .await
        .unwrap();
    assert_eq!(
        one["lifecycle"], "active",
        "decommissioned without its record"
    );
    let status = api.call(Method::GET, "/v1/status", None).await.unwrap();
    assert_eq!(
        status["audit"]["alarm"]["name"], "audit_chain_broken",
        "{status}"
    );
    let reason = status["audit"]["alarm"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("device.decommission"), "{reason}");
    let (code, body) = api
        .call_raw(
            Method::DELETE,
            "/v1/devices/zigbee:0x00124b0001abcdef",
            None,
        )
        .await
        .unwrap();
    assert!(code.is_success(), "{code} {body}");
    assert!(audit_records(&d)
        .iter()
        .any(|r| r.action == "device.decommission" && r.target == "zigbee:0x00124b0001abcdef"));
}

/// A follower waiting on `GET /v1/audit?wait_s=` (as `fieldgate pair` does) is answered
/// when the daemon stops; it held the store, and with it the stop, for up to 30 s.
#[test]
fn a_waiting_audit_follower_does_not_hold_the_daemons_stop() {
    let mut d = TestDaemon::start("");
    let socket = d.socket.clone();
    let follower = std::thread::spawn(move || {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            ApiClient::new(&socket)
                .call_raw(
                    Method::GET,
                    "/v1/audit?after=1000000&wait_s=30&action=radio.permit_join",
                    None,
                )
                .await
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let t0 = std::time::Instant::now();
    let status = d
        .terminate(std::time::Duration::from_secs(20))
        .expect("stopped");
    assert!(status.success(), "{}", d.log());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(8),
        "the stop took {:?}",
        t0.elapsed()
    );
    let _ = follower.join();
}
