//! MQTT 5 (`[upstream] protocol = 5`): requests answered on the requester's Response
//! Topic with its Correlation Data, the outcome (and on errors the reason) as user
//! properties, message expiry on telemetry. Runs on the embedded rumqttd's MQTT 5
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

use super::{fast, reading, unique, BrokerAddr, Rig};

fn broker_v5() -> &'static BrokerAddr {
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
        let deadline = Instant::now() + Duration::from_secs(10);
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
