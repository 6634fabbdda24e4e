//! An embedded rumqttd broker on a free loopback port, shared by the integration
//! tests and the upstream benchmark (both include this file by path).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Starts rumqttd (plaintext MQTT 3.1.1) on a free loopback port on its own thread and
/// returns the port once it accepts connections. The broker lives as long as the process.
pub fn start(name: &str, max_connections: usize) -> u16 {
    start_version(name, max_connections, false)
}

/// As [`start`], with an MQTT 5 listener instead when `v5`.
pub fn start_version(name: &str, max_connections: usize, v5: bool) -> u16 {
    start_broker(name, max_connections, v5, None)
}

/// As [`start`], taking only the login `user` / `password` (rumqttd closes the
/// connection on any other, without a CONNACK).
#[allow(dead_code)] // the benchmarks that include this file log in anonymously
pub fn start_with_login(name: &str, user: &str, password: &str) -> u16 {
    let auth = HashMap::from([(user.to_string(), password.to_string())]);
    start_broker(name, 20, false, Some(auth))
}

fn start_broker(
    name: &str,
    max_connections: usize,
    v5: bool,
    auth: Option<HashMap<String, String>>,
) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut config = rumqttd::Config {
        router: rumqttd::RouterConfig {
            max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = rumqttd::ServerSettings {
        name: name.into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            // Room for the hostile-request suite's 2 MB requests.
            max_payload_size: 4 * 1024 * 1024,
            max_inflight_count: 500,
            auth,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let listeners = Some(HashMap::from([("1".to_string(), server)]));
    if v5 {
        config.v5 = listeners;
    } else {
        config.v4 = listeners;
    }
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                eprintln!("rumqttd stopped: {e}");
            }
        })
        .expect("broker thread");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "rumqttd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    port
}
