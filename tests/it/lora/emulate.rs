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
