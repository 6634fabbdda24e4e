//! The database's life in every envelope, the birth message and `info`: the same
//! within one database, different for a new one, where `seq` starts again.

use std::time::Duration;

use fieldgate::model::DeviceEventKind;

use super::{broker, fast, reading, Probe, Rig};

/// Starts a gateway on a fresh database, sends one reading and returns
/// (life in the telemetry envelope, its seq, life in `status`, life in `info`).
async fn one_life() -> (String, i64, String, String) {
    let b = broker();
    let rig = Rig::start(&b.url(), "", fast()).await;
    let probe = Probe::connect(b, &[rig.filter()]).await;
    rig.connected().await;
    rig.send("0x1234", DeviceEventKind::Joined).await;
    rig.send("0x1234", reading(20.5)).await;
    probe
        .wait_for("telemetry, status and info", Duration::from_secs(10), |m| {
            ["/telemetry", "/status", "/info"]
                .iter()
                .all(|s| m.iter().any(|m| m.topic.ends_with(s)))
        })
        .await;
    let t = probe.on("/telemetry")[0].json();
    let status = probe.on("/status")[0].json();
    let info = probe.on("/info")[0].json();
    rig.stop().await;
    (
        t["life"]
            .as_str()
            .expect("life in the envelope")
            .to_string(),
        t["seq"].as_i64().expect("seq"),
        status["life"].as_str().expect("life in status").to_string(),
        info["life"].as_str().expect("life in info").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_envelope_names_its_database_life_and_a_new_database_a_new_one() {
    let (life, seq, status, info) = one_life().await;
    assert_eq!(life, status);
    assert_eq!(life, info);
    let (millis, random) = life.split_once('-').expect("<ms>-<hex>");
    assert_eq!(millis.len(), 13, "{life}");
    assert!(millis.bytes().all(|b| b.is_ascii_digit()), "{life}");
    assert!(
        random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "{life}"
    );

    // A reset gateway (a new database): seq starts again, the life tells it apart
    // and sorts after the old one.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (later, later_seq, ..) = one_life().await;
    assert_ne!(later, life);
    assert!(later > life, "{later} sorts after {life}");
    assert!(later_seq <= seq + 1, "seq restarted: {later_seq} vs {seq}");
}
