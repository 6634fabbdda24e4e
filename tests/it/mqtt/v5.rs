//! MQTT 5 (`[upstream] protocol = 5`): requests answered on the requester's Response
//! Topic with its Correlation Data, the outcome (and on errors the reason) as user
//! properties, message expiry on telemetry, and the answers a held request gets
//! later through the outbox on the same Response Topic. Runs on the embedded rumqttd's MQTT 5
//! listener, or on the broker named by `FIELDGATE_TEST_BROKER` (mosquitto speaks
//! both versions on one listener).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fieldgate::model::DeviceEventKind;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::json;
use tokio::sync::mpsc;

use super::device_requests::{dev, Site, SiteConfig};
use super::{fast, reading, unique, BrokerAddr, Proxy, Rig};
use fieldgate_zigbee::emulator::DeviceKind;

pub(super) fn broker_v5() -> &'static BrokerAddr {
    static BROKER: OnceLock<BrokerAddr> = OnceLock::new();
    BROKER.get_or_init(|| {
        if std::env::var("FIELDGATE_TEST_BROKER").is_ok() {
            return super::broker().clone();
        }
        let port = crate::rumqttd_support::start_version("v5-test", 200, true);
        BrokerAddr {
            host: "127.0.0.1".into(),
            port,
        }
    })
}

#[derive(Debug, Clone)]
struct Msg5 {
    topic: String,
    payload: Vec<u8>,
    props: PublishProperties,
}

impl Msg5 {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }

    fn user(&self, key: &str) -> Option<&str> {
        self.props
            .user_properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// An MQTT 5 test client that records what arrives, with its properties.
struct Probe5 {
    client: AsyncClient,
    got: Arc<Mutex<Vec<Msg5>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Probe5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Probe5 {
    async fn connect(addr: &BrokerAddr, filters: &[String]) -> Probe5 {
        let mut opts = MqttOptions::new(unique("probe5"), addr.host.clone(), addr.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(Some(1024 * 1024));
        let (client, mut el) = AsyncClient::new(opts, 100);
        let got = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let sink = got.clone();
        let wanted = filters.len();
        let task = tokio::spawn(async move {
            let mut subacks = 0;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().unwrap().push(Msg5 {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        props: p.properties.unwrap_or_default(),
                    }),
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == wanted {
                            let _ = ready_tx.send(()).await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for f in filters {
            client
                .subscribe(f.clone(), QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
            .await
            .expect("probe subscribed in time");
        Probe5 { client, got, task }
    }

    async fn wait_for(&self, what: &str, f: impl Fn(&Msg5) -> bool) -> Msg5 {
        self.wait_within(what, Duration::from_secs(10), f).await
    }

    async fn wait_within(&self, what: &str, limit: Duration, f: impl Fn(&Msg5) -> bool) -> Msg5 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(m) = self.got.lock().unwrap().iter().find(|m| f(m)) {
                return m.clone();
            }
            let topics: Vec<String> = self
                .got
                .lock()
                .unwrap()
                .iter()
                .rev()
                .take(10)
                .map(|m| m.topic.clone())
                .collect();
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the last topics: {topics:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn request(
        &self,
        topic: String,
        body: serde_json::Value,
        response_topic: Option<&str>,
        correlation: &[u8],
    ) {
        let props = PublishProperties {
            response_topic: response_topic.map(str::to_string),
            correlation_data: response_topic.map(|_| correlation.to_vec().into()),
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                topic,
                QoS::AtLeastOnce,
                false,
                body.to_string().into_bytes(),
                props,
            )
            .await
            .expect("publish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_answers_on_the_response_topic_with_correlation_data_and_reasons() {
    let b = broker_v5();
    let rig = Rig::start(&b.url(), "protocol = 5\ntelemetry_expiry = \"10m\"", fast()).await;
    let p = rig.prefix.clone();
    let replies = format!("fgtest/{}", unique("replies"));
    let probe = Probe5::connect(b, &[format!("{replies}/#"), format!("{p}/#")]).await;
    rig.connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Answered on the Response Topic, with the Correlation Data as sent (binary).
    let corr = b"\x00\x01req-1\xff";
    probe
        .request(
            format!("{p}/request/health_check"),
            json!({"correlation_id": "h1"}),
            Some(&format!("{replies}/a")),
            corr,
        )
        .await;
    let m = probe
        .wait_for("the answer on the response topic", |m| {
            m.topic == format!("{replies}/a")
        })
        .await;
    assert_eq!(m.props.correlation_data.as_deref(), Some(&corr[..]));
    assert_eq!(m.json()["correlation_id"], "h1");
    assert_eq!(m.json()["status"], "ok", "{}", m.json());
    assert_eq!(m.user("status"), Some("ok"));
    assert_eq!(m.user("code"), None);
    assert_eq!(m.props.content_type.as_deref(), Some("application/json"));

    // An error carries its code and reason string as user properties.
    probe
        .request(
            format!("{p}/request/set"),
            json!({"correlation_id": "e1", "device": "zigbee:0xdead", "state": {"on": true}}),
            Some(&format!("{replies}/b")),
            b"e1",
        )
        .await;
    let m = probe
        .wait_for("the error answer", |m| m.topic == format!("{replies}/b"))
        .await;
    assert_eq!(m.json()["error"]["code"], "unknown_device", "{}", m.json());
    assert_eq!(m.user("status"), Some("error"));
    assert_eq!(m.user("code"), Some("unknown_device"));
    assert!(
        m.user("reason").is_some_and(|r| r.contains("0xdead")),
        "{m:?}"
    );
    assert_eq!(m.props.correlation_data.as_deref(), Some(&b"e1"[..]));

    // A Response Topic among the gateway's own topics is not used: the answer goes to
    // response/<operation> and says why.
    probe
        .request(
            format!("{p}/request/health_check"),
            json!({"correlation_id": "h2"}),
            Some(&format!("{p}/device/zigbee:0x1/state")),
            b"h2",
        )
        .await;
    let m = probe
        .wait_for("the answer to a refused response topic", |m| {
            m.topic == format!("{p}/response/health_check") && m.json()["correlation_id"] == "h2"
        })
        .await;
    assert!(m.user("response_topic_refused").is_some(), "{m:?}");
    assert_eq!(m.props.correlation_data.as_deref(), Some(&b"h2"[..]));
    assert!(
        !probe
            .got
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.topic.contains("/device/zigbee:0x1/")),
        "nothing published on a device topic"
    );

    // Without a Response Topic: response/<operation>, as on MQTT 3.1.1.
    probe
        .request(
            format!("{p}/request/health_check"),
            json!({"correlation_id": "h3"}),
            None,
            b"",
        )
        .await;
    let m = probe
        .wait_for("the answer without a response topic", |m| {
            m.topic == format!("{p}/response/health_check") && m.json()["correlation_id"] == "h3"
        })
        .await;
    assert_eq!(m.user("status"), Some("ok"));
    assert_eq!(m.props.correlation_data, None);

    // Telemetry carries the configured message expiry; state does not expire.
    rig.send("0x0b01", DeviceEventKind::Joined).await;
    rig.send("0x0b01", reading(20.5)).await;
    let dev = "zigbee:0x0b01";
    let t = probe
        .wait_for("telemetry", |m| {
            m.topic == format!("{p}/device/{dev}/telemetry")
        })
        .await;
    let expiry = t
        .props
        .message_expiry_interval
        .expect("message expiry on telemetry");
    assert!((1..=600).contains(&expiry), "{expiry}");
    let s = probe
        .wait_for("state", |m| m.topic == format!("{p}/device/{dev}/state"))
        .await;
    assert_eq!(s.props.message_expiry_interval, None);

    // One audit record per request.
    let audited: i64 = rig
        .reader()
        .query_row(
            "SELECT count(*) FROM audit WHERE action LIKE 'mqtt.%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 4);
    assert_eq!(
        rig.status.snapshot().state,
        fieldgate::upstream::ConnectionState::Connected
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_over_mutual_tls_answers_on_the_response_topic() {
    let b = broker_v5();
    let pki = super::pki();
    let _keep = pki.dir.path();
    let mutual = super::Proxy::start(b.socket(), Some(super::acceptor(&pki, true))).await;
    let rig = Rig::start(
        &format!("mqtts://127.0.0.1:{}", mutual.port),
        &format!(
            "protocol = 5\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
        fast(),
    )
    .await;
    let p = rig.prefix.clone();
    let replies = format!("fgtest/{}", unique("replies"));
    let probe = Probe5::connect(b, &[format!("{replies}/#")]).await;
    rig.connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    probe
        .request(
            format!("{p}/request/health_check"),
            json!({"correlation_id": "t1"}),
            Some(&format!("{replies}/t")),
            b"t1",
        )
        .await;
    let m = probe
        .wait_for("the answer over TLS", |m| m.topic == format!("{replies}/t"))
        .await;
    assert_eq!(m.props.correlation_data.as_deref(), Some(&b"t1"[..]));
    assert!(rig.status.snapshot().broker.starts_with("mqtts://"));
    // The proxy saw the gateway's client certificate.
    assert!(!mutual.peers.lock().unwrap().is_empty());
    rig.stop().await;
}

/// A held request's answers (`queued` at once, `delivered` when the sleeping device
/// wakes) go to the requester's Response Topic with its Correlation Data, like an
/// immediate answer: when the device wakes while the broker is unreachable (the
/// answer waits in the outbox), and across a gateway restart (SIGKILL) while the
/// request is held. Real daemon, Zigbee emulator on a PTY, the gateway reaching the
/// broker through a proxy that can be cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_held_requests_are_answered_later_on_the_response_topic() {
    let b = broker_v5();
    let proxy = Proxy::start(b.socket(), None).await;
    let mut site = Site::start_config(SiteConfig {
        broker_url: Some(format!("mqtt://127.0.0.1:{}", proxy.port)),
        upstream: "protocol = 5".into(),
        ..Default::default()
    })
    .await;
    let p = site.prefix.clone();
    let replies = format!("fgtest/{}", unique("held"));
    let probe = Probe5::connect(b, &[format!("{replies}/#"), format!("{p}/response/#")]).await;
    site.pair().await;
    let pir = dev(DeviceKind::SleepySensor);
    let answer = |topic: String, status: &'static str| {
        move |m: &Msg5| m.topic == topic && m.json()["status"] == status
    };
    let set = |cid: &str| json!({"correlation_id": cid, "device": pir, "state": {"on": true}});

    // 1. Queued at once, delivered when the sensor wakes: both on the Response Topic,
    //    with the Correlation Data (binary) and the outcome as user properties.
    let r1 = format!("{replies}/1");
    let corr1 = b"\x00held-1\xff";
    probe
        .request(format!("{p}/request/set"), set("h1"), Some(&r1), corr1)
        .await;
    let q = probe
        .wait_for("h1 queued", answer(r1.clone(), "queued"))
        .await;
    assert_eq!(q.props.correlation_data.as_deref(), Some(&corr1[..]));
    assert_eq!(q.user("status"), Some("queued"));
    assert_eq!(q.props.content_type.as_deref(), Some("application/json"));
    let request_id = q.json()["data"]["request_id"].as_i64().expect("request id");
    site.wake();
    let d = probe
        .wait_within(
            "h1 delivered",
            Duration::from_secs(20),
            answer(r1.clone(), "delivered"),
        )
        .await;
    assert_eq!(d.props.correlation_data.as_deref(), Some(&corr1[..]));
    assert_eq!(d.user("status"), Some("delivered"));
    assert_eq!(d.json()["correlation_id"], "h1");
    assert_eq!(d.json()["data"]["request_id"], request_id);
    assert!(d.json()["msg_id"].is_string(), "{}", d.json());

    // 2. The sensor wakes while the broker is unreachable: the `delivered` answer is
    //    committed to the outbox and published once the gateway is back.
    let r2 = format!("{replies}/2");
    probe
        .request(format!("{p}/request/set"), set("h2"), Some(&r2), b"held-2")
        .await;
    let q = probe
        .wait_for("h2 queued", answer(r2.clone(), "queued"))
        .await;
    let id2 = q.json()["data"]["request_id"].as_i64().expect("request id");
    proxy.down();
    let deadline = Instant::now() + Duration::from_secs(30);
    while site.held_outcome(id2).as_deref() != Some("delivered") {
        assert!(Instant::now() < deadline, "{}", site.daemon.log());
        site.wake();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !probe
            .got
            .lock()
            .unwrap()
            .iter()
            .any(answer(r2.clone(), "delivered")),
        "published while the broker was unreachable"
    );
    proxy.restore();
    let d = probe
        .wait_within(
            "h2 delivered after the outage",
            Duration::from_secs(60),
            answer(r2.clone(), "delivered"),
        )
        .await;
    assert_eq!(d.props.correlation_data.as_deref(), Some(&b"held-2"[..]));
    assert_eq!(d.user("status"), Some("delivered"));

    // 3. The gateway is killed while the request is held: after the restart the
    //    sensor's wake still answers on the Response Topic.
    let r3 = format!("{replies}/3");
    probe
        .request(format!("{p}/request/set"), set("h3"), Some(&r3), b"held-3")
        .await;
    probe
        .wait_for("h3 queued", answer(r3.clone(), "queued"))
        .await;
    site.sigkill_and_restart();
    site.wait_log("zigbee network up").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let d = loop {
        let got = probe
            .got
            .lock()
            .unwrap()
            .iter()
            .find(|m| answer(r3.clone(), "delivered")(m))
            .cloned();
        if let Some(d) = got {
            break d;
        }
        assert!(Instant::now() < deadline, "{}", site.daemon.log());
        site.wake();
        tokio::time::sleep(Duration::from_millis(700)).await;
    };
    assert_eq!(d.props.correlation_data.as_deref(), Some(&b"held-3"[..]));
    assert_eq!(d.user("status"), Some("delivered"));

    // Each answer went to its Response Topic only: none on response/set. Delivery is
    // at least once (a row acknowledged but not yet deleted when the gateway is
    // killed goes out again, with its msg_id), so copies are told apart by msg_id:
    // each topic got `queued` then `delivered`, and nothing else.
    let got = probe.got.lock().unwrap().clone();
    assert!(
        !got.iter().any(|m| m.topic == format!("{p}/response/set")),
        "an answer on response/set"
    );
    for topic in [&r1, &r2, &r3] {
        let mut seen = std::collections::HashSet::new();
        let statuses: Vec<String> = got
            .iter()
            .filter(|m| &m.topic == topic)
            .filter(|m| {
                let v = m.json();
                seen.insert(match v["msg_id"].as_str() {
                    Some(id) => id.to_string(),
                    None => String::from_utf8_lossy(&m.payload).into_owned(),
                })
            })
            .map(|m| m.json()["status"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(statuses, ["queued", "delivered"], "{topic}");
    }
}

/// A broker whose ACL keeps the gateway to its own prefix refuses its answers on a
/// requester's Response Topic elsewhere (MQTT 5 PUBACK `NotAuthorized`). An answer
/// given at once was lost, and one from the outbox (a held request's) stayed there,
/// refused again at every connection. Both now come on the gateway's own response
/// topic with the Correlation Data and `response_topic_refused` saying why, and the
/// outbox empties. Needs mosquitto (its ACL), so it runs in the mosquitto step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_broker_refuses_on_the_response_topic_come_on_the_gateways_own() {
    if std::env::var_os("FIELDGATE_TEST_BROKER").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = super::acl::mosquitto_denying(dir.path(), "fgdenied/#");
    let b = BrokerAddr {
        host: "127.0.0.1".into(),
        port,
    };
    let site = Site::start_config(SiteConfig {
        broker_url: Some(b.url()),
        upstream: "protocol = 5".into(),
        ..Default::default()
    })
    .await;
    let p = site.prefix.clone();
    let probe = Probe5::connect(&b, &[format!("{p}/response/#")]).await;
    site.pair().await;

    // At once: the health check's answer.
    probe
        .request(
            format!("{p}/request/health_check"),
            json!({"correlation_id": "now-1"}),
            Some("fgdenied/replies/1"),
            b"\x00now\xff",
        )
        .await;
    let m = probe
        .wait_within(
            "the answer on the gateway's topic",
            Duration::from_secs(20),
            |m| {
                m.topic == format!("{p}/response/health_check")
                    && m.json()["correlation_id"] == "now-1"
            },
        )
        .await;
    assert_eq!(
        m.props.correlation_data.as_deref(),
        Some(&b"\x00now\xff"[..])
    );
    assert!(
        m.user("response_topic_refused")
            .is_some_and(|w| w.contains("broker refused") && w.contains("NotAuthorized")),
        "{:?}",
        m.props.user_properties
    );
    assert_eq!(m.user("status"), Some("ok"));

    // Held: `queued` and `delivered` go through the outbox.
    let pir = dev(DeviceKind::SleepySensor);
    probe
        .request(
            format!("{p}/request/set"),
            json!({"correlation_id": "held-1", "device": pir, "state": {"on": true}}),
            Some("fgdenied/replies/2"),
            b"held",
        )
        .await;
    let answered = |status: &'static str| {
        let topic = format!("{p}/response/set");
        move |m: &Msg5| {
            m.topic == topic
                && m.json()["correlation_id"] == "held-1"
                && m.json()["status"] == status
        }
    };
    let q = probe
        .wait_within("held-1 queued", Duration::from_secs(20), answered("queued"))
        .await;
    assert_eq!(q.props.correlation_data.as_deref(), Some(&b"held"[..]));
    assert!(q.user("response_topic_refused").is_some(), "{:?}", q.props);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !probe.got.lock().unwrap().iter().any(answered("delivered")) {
        assert!(Instant::now() < deadline, "{}", site.daemon.log());
        site.wake();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Nothing is left refused in the outbox.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = fieldgate::store::open_reader(&site.daemon.db()).unwrap();
        let left: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE kind = 'response'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} answers left in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
