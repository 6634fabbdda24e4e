//! `fieldgate emulate lora-gwmp` against a running gateway: the emulator process joins,
//! sends its faults and uplinks over real UDP and exits; the gateway decoded the uplinks
//! and audited each fault.

use std::time::Duration;

use fieldgate::api::client::ApiClient;
use fieldgate::radio::lora::sim;
use fieldgate::store;
use hyper::Method;
use serde_json::json;

use super::free_udp_port;
use crate::common::{fieldgate, stdout, TestDaemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_command_joins_reports_and_commits_its_faults() {
    let udp = free_udp_port();
    let d = TestDaemon::start(&format!(
        "[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n"
    ));
    for args in [
        vec![
            "--deveui",
            sim::OTAA_DEV_EUI,
            "--joineui",
            sim::OTAA_JOIN_EUI,
            "--appkey",
            sim::OTAA_APP_KEY,
        ],
        vec![
            "--deveui",
            sim::ABP_DEV_EUI,
            "--devaddr",
            sim::ABP_DEV_ADDR,
            "--nwkskey",
            sim::ABP_NWK_S_KEY,
            "--appskey",
            sim::ABP_APP_S_KEY,
        ],
    ] {
        let mut a = vec!["lora", "add"];
        a.extend(args);
        assert!(d.cli(&a).status.success());
    }
    ApiClient::new(&d.socket)
        .call(
            Method::POST,
            "/v1/radios/lora0/permit-join",
            Some(json!({"seconds": 120})),
        )
        .await
        .unwrap();
    let server = format!("127.0.0.1:{udp}");
    let out = tokio::task::spawn_blocking(move || {
        fieldgate(&[
            "emulate",
            "lora-gwmp",
            "--server",
            &server,
            "--interval",
            "1",
            "--faults",
            "bad-mic,replay,devnonce-reuse",
            "--uplinks",
            "4",
        ])
    })
    .await
    .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("joined as"), "{text}");
    assert!(text.contains("got a downlink (ack: true)"), "{text}");
    assert!(!text.contains(sim::OTAA_APP_KEY));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = store::open_reader(&d.db()).unwrap();
    let reasons: Vec<String> = store::audit::tail(&c, 10_000, None)
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "lorawan.frame")
        .map(|r| r.details["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(reasons, ["bad_mic", "replayed_counter", "dev_nonce_reused"]);
    for eui in [sim::OTAA_DEV_EUI, sim::ABP_DEV_EUI] {
        let dev = store::registry::get(&c, &fieldgate::model::DeviceId(format!("lora:{eui}")))
            .unwrap()
            .expect("device registered");
        assert!(
            dev.last_state["temperature"].is_number(),
            "{:?}",
            dev.last_state
        );
    }
}

/// Load on a gateway: `--abp-devices` adds ABP devices whose keys `--write-keys` writes
/// as API bodies (and exits, sending nothing); once the gateway has them, every one of
/// them reports, spread over the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_abp_devices_report_once_the_gateway_has_their_keys() {
    use std::os::unix::fs::PermissionsExt;
    const EXTRA: u32 = 30;
    let udp = free_udp_port();
    let d = TestDaemon::start(&format!(
        "[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:{udp}\"\n"
    ));
    let keys = d.dir.path().join("keys.jsonl");
    let extra = EXTRA.to_string();
    let out = fieldgate(&[
        "emulate",
        "lora-gwmp",
        "--abp-devices",
        &extra,
        "--write-keys",
        keys.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(!stdout(&out).contains(sim::ABP_NWK_S_KEY));
    let mode = std::fs::metadata(&keys).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&keys).unwrap();
    let bodies: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(bodies.len(), 2 + EXTRA as usize);
    let api = ApiClient::new(&d.socket);
    for body in bodies {
        api.call(Method::POST, "/v1/lora/devices", Some(body))
            .await
            .unwrap();
    }
    api.call(
        Method::POST,
        "/v1/radios/lora0/permit-join",
        Some(json!({"seconds": 120})),
    )
    .await
    .unwrap();
    let mut emu = std::process::Command::new(crate::common::bin())
        .args([
            "emulate",
            "lora-gwmp",
            "--server",
            &format!("127.0.0.1:{udp}"),
            "--interval",
            "1",
            "--abp-devices",
            &extra,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reporting = |c: &rusqlite::Connection| {
        (0..EXTRA)
            .filter(|&i| {
                let id = fieldgate::model::DeviceId(format!("lora:{}", sim::extra_abp(i).dev_eui));
                store::registry::get(c, &id)
                    .unwrap()
                    .is_some_and(|dev| dev.last_state["temperature"].is_number())
            })
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while std::time::Instant::now() < deadline {
        let c = store::open_reader(&d.db()).unwrap();
        seen = reporting(&c);
        if seen == EXTRA as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    emu.kill().ok();
    emu.wait().ok();
    assert_eq!(seen, EXTRA as usize, "extra devices reporting");
    let c = store::open_reader(&d.db()).unwrap();
    let refused = store::audit::tail(&c, 10_000, None)
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "lorawan.frame")
        .count();
    assert_eq!(refused, 0, "no frame refused");
}

/// The extra devices' keys are distinct, and their DevAddrs too.
#[test]
fn extra_abp_devices_have_distinct_addresses_and_keys() {
    let all: Vec<_> = (0..sim::MAX_EXTRA_DEVICES).map(sim::extra_abp).collect();
    for field in [
        |k: &sim::ExtraAbp| k.dev_eui.clone(),
        |k: &sim::ExtraAbp| k.dev_addr.clone(),
        |k: &sim::ExtraAbp| k.nwk_s_key.clone(),
    ] {
        let set: std::collections::HashSet<String> = all.iter().map(field).collect();
        assert_eq!(set.len(), all.len());
    }
    assert!(all.iter().all(|k| k.device().is_some()));
    assert_ne!(sim::extra_abp(0).dev_addr, sim::ABP_DEV_ADDR);
}

/// A real packet forwarder keeps sending while the gateway's port is closed (the
/// daemon restarting); the emulator does too, and says so once.
#[test]
fn the_emulator_keeps_sending_while_the_gateway_port_is_closed() {
    use std::io::Read;
    let udp = free_udp_port();
    let mut emu = std::process::Command::new(crate::common::bin())
        .args([
            "emulate",
            "lora-gwmp",
            "--server",
            &format!("127.0.0.1:{udp}"),
            "--interval",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let running = emu.try_wait().unwrap().is_none();
    emu.kill().ok();
    emu.wait().ok();
    let mut text = String::new();
    emu.stdout.take().unwrap().read_to_string(&mut text).ok();
    assert!(running, "the emulator stopped: {text}");
    assert_eq!(
        text.matches("port is closed").count(),
        1,
        "said once: {text}"
    );
    assert!(text.matches("join-request from").count() >= 2, "{text}");
}
