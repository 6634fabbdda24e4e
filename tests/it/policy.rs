//! Policies through the CLI, offline (no broker configured): signatures against a
//! pinned key, refusal of unsigned, tampered and older policies, the cache across
//! a restart, and no secret in the daemon's logs even at trace level.

mod uplink;

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{fieldgate, stderr, stdout, TestDaemon};
use fieldgate::store;

fn write(path: &std::path::Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

#[test]
fn signed_policies_only_when_a_key_is_pinned_and_secrets_stay_out_of_logs() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("signing.key");
    let out = fieldgate(&["policy", "keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let pubkey = text
        .lines()
        .find_map(|l| l.strip_prefix("policy_public_key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("public key printed")
        .to_string();
    let seed = std::fs::read_to_string(&key).unwrap().trim().to_string();

    let mut d = TestDaemon::prepare("");
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let cfg = cfg.replace(
        "log_level = \"info\"",
        &format!("log_level = \"trace\"\npolicy_public_key = \"{pubkey}\""),
    );
    std::fs::write(&d.config, cfg).unwrap();
    d.spawn();

    let doc = json!({"version": 3, "admission": {"max_join_window_s": 60},
                     "firmware": [{"match": {"model": "plug*"}, "min_version": "2.0"}]});
    let bare = d.dir.path().join("bare.json");
    write(&bare, &doc);

    // Unsigned: refused, the old (default) policy stays.
    let out = d.cli(&["policy", "apply", bare.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("signature is required"),
        "{}",
        stderr(&out)
    );

    // Signed with the pinned key: accepted.
    let out = fieldgate(&[
        "policy",
        "sign",
        "--key",
        key.to_str().unwrap(),
        bare.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let signed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let signed_path = d.dir.path().join("signed.json");
    write(&signed_path, &signed);

    // Tampered after signing: refused.
    let mut tampered = signed.clone();
    tampered["policy"]["admission"]["max_join_window_s"] = json!(254);
    let tampered_path = d.dir.path().join("tampered.json");
    write(&tampered_path, &tampered);
    let out = d.cli(&["policy", "apply", tampered_path.to_str().unwrap()]);
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));

    let out = d.cli(&["policy", "apply", signed_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("version 3 applied (signed"),
        "{}",
        stdout(&out)
    );

    // The same version again (from standard input, `-`): refused as not newer.
    let out = crate::common::fieldgate_with_input(
        &[
            "--socket",
            d.socket.to_str().unwrap(),
            "policy",
            "apply",
            "-",
        ],
        &std::fs::read(&signed_path).unwrap(),
    );
    assert!(stderr(&out).contains("not newer"), "{}", stderr(&out));

    // The new join limit is enforced (no radio runs here, so the limit is what refuses).
    let out = d.cli(&["policy", "show", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["version"], 3);
    assert_eq!(shown["signed"], true);

    // The cached policy survives a restart with no uplink.
    assert!(d.terminate(Duration::from_secs(5)).unwrap().success());
    d.spawn();
    let out = d.cli(&["policy", "show", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["version"], 3);
    assert!(d.terminate(Duration::from_secs(5)).unwrap().success());

    // Every attempt is in the audit log.
    let c = store::open_reader(&d.db()).unwrap();
    let audit = store::audit::tail(&c, 10_000, None).unwrap();
    let applies: Vec<&str> = audit
        .iter()
        .filter(|r| r.action == "policy.apply")
        .map(|r| r.outcome.as_str())
        .collect();
    assert_eq!(applies, vec!["refused", "refused", "accepted", "refused"]);

    // No secret reaches the log: not the master key, not the signing key.
    let master = std::fs::read_to_string(d.dir.path().join("state").join("master.key")).unwrap();
    let log = d.log();
    assert!(log.len() > 1000, "trace logging produced little: {log}");
    for secret in [master.trim(), seed.as_str()] {
        assert!(!log.contains(secret), "a secret reached the log");
        assert!(
            !log.contains(&secret[..16]),
            "part of a secret reached the log"
        );
    }
}

#[test]
fn commands_and_health_views_through_the_cli() {
    let d = TestDaemon::start("[[radio]]\nname = \"zb0\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\nenabled = false\n");
    let out = d.cli(&["devices", "--unhealthy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("no devices"), "{}", stdout(&out));
    let out = d.cli(&["set", "zigbee:0x1", "level", "150"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("0 to 100"), "{}", stderr(&out));
    let out = d.cli(&["set", "zigbee:0x1", "on"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no device"), "{}", stderr(&out));
}

/// The policy against real joins: a Zigbee coordinator emulator behind the real
/// daemon, no broker. A denylisted model is removed after its interview; a plug
/// with firmware below the minimum is quarantined and refuses commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_devices_are_removed_and_quarantine_blocks_commands_offline() {
    use fieldgate::api::client::ApiClient;
    use hyper::Method;

    let d = TestDaemon::start(
        "[[radio]]\nname = \"zb0\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\n",
    );
    let api = ApiClient::new(&d.socket);
    let policy = json!({"version": 1,
        "admission": {"deny": [{"model": "FG-PIR01"}]},
        "firmware": [{"match": {"model": "FG-PLUG01"}, "min_version": "2.0.0"}]});
    api.call(Method::POST, "/v1/policy", Some(policy))
        .await
        .expect("policy applied");

    // Wait for the radio, then open a window.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = api.call(Method::GET, "/v1/status", None).await.unwrap();
        if s["radios"][0]["state"] == "up" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "radio never came up: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.call(
        Method::POST,
        "/v1/radios/zb0/permit-join",
        Some(json!({"seconds": 120})),
    )
    .await
    .unwrap();

    let lifecycle_of = |devs: &Value, model: &str| -> Option<String> {
        devs.as_array()?
            .iter()
            .find(|d| d["model"] == model)
            .and_then(|d| d["lifecycle"].as_str().map(str::to_string))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let devs = loop {
        let devs = api.call(Method::GET, "/v1/devices", None).await.unwrap();
        let plug = lifecycle_of(&devs, "FG-PLUG01");
        let pir = lifecycle_of(&devs, "FG-PIR01");
        if plug.as_deref() == Some("quarantined") && pir.as_deref() == Some("decommissioned") {
            break devs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "policy not applied to joins: {devs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        lifecycle_of(&devs, "FG-TH01").as_deref(),
        Some("active"),
        "{devs}"
    );

    // The quarantined plug refuses commands; its telemetry still flows.
    let plug = devs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["model"] == "FG-PLUG01")
        .unwrap();
    let id = plug["id"].as_str().unwrap();
    let (status, body) = api
        .call_raw(
            Method::POST,
            &format!("/v1/devices/{id}/command"),
            Some(br#"{"state":"on"}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(status, hyper::StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "device_quarantined");
    assert!(
        plug["last_state"]
            .as_object()
            .is_some_and(|s| !s.is_empty()),
        "{plug}"
    );

    let unhealthy = api
        .call(Method::GET, "/v1/devices?unhealthy=true", None)
        .await
        .unwrap();
    assert!(
        unhealthy.as_array().unwrap().iter().any(|d| d["id"] == id),
        "{unhealthy}"
    );

    let c = store::open_reader(&d.db()).unwrap();
    let audit = store::audit::tail(&c, 10_000, None).unwrap();
    assert!(audit
        .iter()
        .any(|r| r.action == "device.admission" && r.outcome == "refused"));
    assert!(audit.iter().any(|r| r.action == "device.quarantine"));
    assert!(audit
        .iter()
        .any(|r| r.action == "device.command" && r.outcome == "refused"));
}
