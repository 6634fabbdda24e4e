//! Building the MQTT client from `[upstream]`: broker address, identity,
//! credentials, TLS (rustls on the `ring` provider) and the last will.
//!
//! Owns turning configuration and files (password, CA, client cert/key) into
//! `rumqttc::MqttOptions`. It never logs a secret and never connects: the session
//! does that.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use super::link::{self, Options};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::topics::Topics;
use crate::config::{is_loopback_host, UpstreamConfig};

/// Largest MQTT packet we accept from the broker: the protocol's own maximum
/// (remaining length 268,435,455). A packet over rumqttc's limit drops the
/// connection without an answer (and a retained one would do so on every
/// reconnect), so the limit is the broker's (mosquitto `message_size_limit`);
/// a request over the documented size is read and answered `payload_too_large`.
pub const MAX_INCOMING_PACKET: usize = 268_435_455 + 5;
/// Largest packet we send; an outbox row larger than this is undeliverable.
pub const MAX_OUTGOING_PACKET: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("upstream.url `{0}` is not a valid mqtt:// or mqtts:// URL: {1}")]
    Url(String, String),
    #[error("plaintext MQTT to `{0}` is refused: use mqtts:// or set allow_plaintext = true")]
    PlaintextRefused(String),
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("no trusted CA: {0}")]
    NoRoots(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("upstream.keepalive must be 0 or between 1 s and 65535 s")]
    Keepalive,
    #[error("upstream.reconnect_max must be between 1 s and 1 h")]
    ReconnectMax,
    #[error("upstream.password_file is set but upstream.username is not")]
    PasswordWithoutUser,
}

impl ClientError {
    /// The `[upstream]` key whose value this error is about, for a located message.
    pub fn key(&self) -> &'static str {
        let what = match self {
            ClientError::File { what, .. } | ClientError::Pem { what, .. } => *what,
            ClientError::Url(..) | ClientError::PlaintextRefused(_) => return "upstream.url",
            ClientError::Keepalive => return "upstream.keepalive",
            ClientError::ReconnectMax => return "upstream.reconnect_max",
            ClientError::PasswordWithoutUser => return "upstream.password_file",
            ClientError::NoRoots(_) | ClientError::Tls(_) => return "upstream",
        };
        match what {
            "the password file" => "upstream.password_file",
            "the CA file" => "upstream.ca_file",
            "the client key" => "upstream.client_key",
            "the client certificate" => "upstream.client_cert",
            _ => "upstream",
        }
    }
}

/// What the session needs to connect, derived from the config once at start.
pub struct ClientSettings {
    pub options: Options,
    /// `mqtt[s]://host:port`, for status and logs (never with credentials).
    pub broker: String,
    pub client_id: String,
    pub topics: Topics,
    /// The longest wait between reconnect attempts.
    pub reconnect_max: Duration,
    /// MQTT 5: the message expiry interval put on telemetry, seconds.
    pub telemetry_expiry: Option<u32>,
    /// Device topics by friendly name (`topic_names = "name"`).
    pub topic_names: crate::config::TopicNames,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // MqttOptions holds the password: never print it.
        f.debug_struct("ClientSettings")
            .field("broker", &self.broker)
            .field("client_id", &self.client_id)
            .field("topics", &self.topics)
            .field("protocol", &self.options.protocol())
            .finish_non_exhaustive()
    }
}

/// The JSON of the last will, published by the broker when the link is lost.
pub fn offline_payload(gateway_id: &str) -> Vec<u8> {
    serde_json::json!({"state": "offline", "gateway": gateway_id})
        .to_string()
        .into_bytes()
}

impl ClientSettings {
    pub fn from_config(
        up: &UpstreamConfig,
        gateway_id: &str,
    ) -> Result<ClientSettings, ClientError> {
        let raw = up.url.get_ref();
        let url = url::Url::parse(raw).map_err(|e| ClientError::Url(raw.clone(), e.to_string()))?;
        let tls = match url.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            other => {
                return Err(ClientError::Url(
                    raw.clone(),
                    format!("unsupported scheme `{other}`"),
                ))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ClientError::Url(raw.clone(), "no host".into()))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        // Checked by the config too; kept here so no other path can bypass it.
        if !tls && !up.allow_plaintext && !is_loopback_host(&host) {
            return Err(ClientError::PlaintextRefused(host));
        }
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        let client_id = up
            .client_id
            .clone()
            .unwrap_or_else(|| gateway_id.to_string());
        let topics = Topics::from_config(
            up.topic_prefix.as_ref().map(|p| p.get_ref().as_str()),
            gateway_id,
        );

        if !up.keepalive.is_zero()
            && (up.keepalive < Duration::from_secs(1) || up.keepalive > Duration::from_secs(65535))
        {
            return Err(ClientError::Keepalive);
        }
        if up.reconnect_max < Duration::from_secs(1) || up.reconnect_max > Duration::from_secs(3600)
        {
            return Err(ClientError::ReconnectMax);
        }
        let credentials = match (&up.username, &up.password_file) {
            (Some(user), Some(file)) => Some((user.clone(), read_password(file)?)),
            (Some(user), None) => Some((user.clone(), String::new())),
            (None, Some(_)) => return Err(ClientError::PasswordWithoutUser),
            (None, None) => None,
        };
        let transport = if tls {
            let config = rustls_config(
                up.ca_file.as_deref(),
                up.client_cert.as_deref().zip(up.client_key.as_deref()),
            )?;
            Some(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )))
        } else {
            None
        };
        let will_topic = topics.status();
        let will = offline_payload(gateway_id);
        let options = match *up.protocol.get_ref() {
            5 => {
                let mut o = rumqttc::v5::MqttOptions::new(client_id.clone(), host.clone(), port);
                o.set_keep_alive(up.keepalive);
                // The outbox is our session for what we publish; the broker keeps
                // one (subscriptions, requests sent meanwhile) only when asked to.
                let expiry = link::seconds(up.session_expiry);
                o.set_clean_start(expiry == 0);
                if expiry > 0 {
                    o.set_session_expiry_interval(Some(expiry));
                }
                o.set_max_packet_size(Some(MAX_INCOMING_PACKET as u32));
                // Requests are acknowledged when taken (see `link::InPublish::ack`).
                o.set_manual_acks(true);
                o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                    will_topic,
                    will,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    None,
                ));
                if let Some((user, password)) = credentials {
                    o.set_credentials(user, password);
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                Options::V5(Box::new(o))
            }
            _ => {
                let mut o = MqttOptions::new(client_id.clone(), host.clone(), port);
                o.set_keep_alive(up.keepalive);
                // Our outbox is the session for what we publish: what rumqttc keeps in
                // flight is dropped on every reconnect (`Poller::forget`) and the outbox
                // replays it, so a resumed session never re-sends rumqttc's copies. The
                // broker's session, when kept, holds our subscriptions and the QoS 1
                // commands sent to us meanwhile.
                o.set_clean_session(up.clean_session.unwrap_or(true));
                o.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
                // Requests are acknowledged when taken (see `link::InPublish::ack`).
                o.set_manual_acks(true);
                o.set_last_will(LastWill::new(will_topic, will, QoS::AtLeastOnce, true));
                if let Some((user, password)) = credentials {
                    o.set_credentials(user, password);
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                Options::V4(Box::new(o))
            }
        };
        let scheme = if tls { "mqtts" } else { "mqtt" };
        let shown_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(ClientSettings {
            options,
            broker: format!("{scheme}://{shown_host}:{port}"),
            client_id,
            topics,
            reconnect_max: up.reconnect_max,
            telemetry_expiry: up.telemetry_expiry.map(link::seconds),
            topic_names: up.topic_names,
        })
    }
}

pub(crate) fn read_password(path: &Path) -> Result<String, ClientError> {
    let text =
        crate::files::read_regular_text(path, 64 * 1024).map_err(|source| ClientError::File {
            what: "the password file",
            path: path.to_path_buf(),
            source,
        })?;
    // A trailing newline from `echo > file` is not part of the password.
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// A rustls client config on the `ring` provider: roots from `ca_file` or the
/// system store, and a client certificate for mutual TLS when given.
pub fn rustls_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, ClientError> {
    let roots = root_store(ca_file)?;
    let identity = match client {
        Some((cert, key)) => {
            let chain = read_certs(cert, "the client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ClientError::Pem {
                what: "the client key",
                path: key.to_path_buf(),
                // The error names the problem (missing section, IO), never key bytes.
                message: e.to_string(),
            })?;
            Some((chain, key))
        }
        None => None,
    };
    build_rustls(roots, identity)
}

/// A rustls client config with the roots of `ca_file` (or the system store) and
/// the given client identity: what a client certificate rotation connects with.
pub fn rustls_config_with_identity(
    ca_file: Option<&Path>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, ClientError> {
    build_rustls(root_store(ca_file)?, Some((chain, key)))
}

/// The trusted roots: `ca_file`, or the system store when it is not set.
fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path, "the CA file")? {
                roots.add(cert).map_err(|e| ClientError::Pem {
                    what: "the CA file",
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "while loading the system CA certificates");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(ClientError::NoRoots(
                    "the system store has no usable CA certificate; set upstream.ca_file".into(),
                ));
            }
        }
    }
    Ok(roots)
}

fn build_rustls(
    roots: rustls::RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientError::Tls(format!("client certificate/key: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem_err = |message: String| ClientError::Pem {
        what,
        path: path.to_path_buf(),
        message,
    };
    let bytes =
        crate::files::read_regular(path, crate::files::MAX_SECRET_BYTES).map_err(|source| {
            ClientError::File {
                what,
                path: path.to_path_buf(),
                source,
            }
        })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn upstream(extra: &str) -> Result<ClientSettings, ClientError> {
        let text =
            format!("[gateway]\nid = \"gw1\"\nstate_dir = \"/tmp/x\"\n[upstream]\n{extra}\n");
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        ClientSettings::from_config(c.upstream.as_ref().unwrap(), "gw1")
    }

    #[test]
    fn defaults_come_from_the_gateway_id() {
        let s = upstream("url = \"mqtt://127.0.0.1\"").unwrap();
        assert_eq!(s.broker, "mqtt://127.0.0.1:1883");
        assert_eq!(s.client_id, "gw1");
        assert_eq!(s.topics.prefix(), "fieldgate/gw1");
        assert!(s.options.clean_session());
        assert_eq!(s.options.protocol(), 4);
        let (will, retain) = s.options.last_will().unwrap();
        assert_eq!(will, "fieldgate/gw1/status");
        assert!(retain);
    }

    #[test]
    fn the_reconnect_cap_is_a_setting_within_bounds() {
        let url = "url = \"mqtt://127.0.0.1\"";
        assert_eq!(
            upstream(url).unwrap().reconnect_max,
            Duration::from_secs(60)
        );
        let s = upstream(&format!("{url}\nreconnect_max = \"5m\"")).unwrap();
        assert_eq!(s.reconnect_max, Duration::from_secs(300));
        // The config refuses these first; the client refuses them too.
        for bad in ["500ms", "2h"] {
            let text = format!(
                "[gateway]\nid = \"gw1\"\nstate_dir = \"/tmp/x\"\n[upstream]\n{url}\nreconnect_max = \"{bad}\"\n"
            );
            assert!(Config::parse(Path::new("t.toml"), &text).is_err(), "{bad}");
            let mut c = Config::parse(
                Path::new("t.toml"),
                &format!("[gateway]\nid = \"gw1\"\nstate_dir = \"/tmp/x\"\n[upstream]\n{url}\n"),
            )
            .unwrap();
            let up = c.upstream.as_mut().unwrap();
            up.reconnect_max = humantime::parse_duration(bad).unwrap();
            let e = ClientSettings::from_config(up, "gw1").unwrap_err();
            assert!(matches!(e, ClientError::ReconnectMax), "{bad}: {e}");
        }
    }

    #[test]
    fn mqtt5_is_chosen_by_the_config_with_its_session_expiry() {
        let s = upstream("url = \"mqtt://127.0.0.1\"\nprotocol = 5").unwrap();
        assert_eq!(s.options.protocol(), 5);
        assert!(s.options.clean_session());
        assert_eq!(s.telemetry_expiry, None);
        let (will, _) = s.options.last_will().unwrap();
        assert_eq!(will, "fieldgate/gw1/status");
        let s = upstream(
            "url = \"mqtt://127.0.0.1\"\nprotocol = 5\nsession_expiry = \"1h\"\ntelemetry_expiry = \"10m\"",
        )
        .unwrap();
        // A kept session is resumed, not started clean.
        assert!(!s.options.clean_session());
        assert_eq!(s.telemetry_expiry, Some(600));
        let Options::V5(o) = &s.options else {
            panic!("not MQTT 5")
        };
        assert_eq!(o.session_expiry_interval(), Some(3600));
    }

    #[test]
    fn a_bridge_radio_asks_the_broker_to_keep_the_session() {
        let radio = |mode: &str| {
            format!("\n[[radio]]\nname = \"lora0\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:1700\"\n[radio.options]\nregion = \"EU868\"\nbridge = \"{mode}\"\n")
        };
        let url = "url = \"mqtt://127.0.0.1\"";
        for (extra, clean) in [
            (radio("off"), true),
            (radio("also"), false),
            (radio("only"), false),
            (format!("clean_session = true\n{}", radio("only")), true),
            ("clean_session = false\n".to_string(), false),
        ] {
            let s = upstream(&format!("{url}\n{extra}")).unwrap();
            assert_eq!(s.options.clean_session(), clean, "{extra}");
        }
        // MQTT 5 keeps a session with session_expiry, not with this.
        let text = "[gateway]\nid = \"gw1\"\nstate_dir = \"/tmp/x\"\n[upstream]\nurl = \"mqtt://127.0.0.1\"\nprotocol = 5\nclean_session = false\n";
        let e = Config::parse(Path::new("t.toml"), text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("upstream.clean_session"), "{e}");
        let s = upstream(&format!("{url}\nprotocol = 5\n{}", radio("also"))).unwrap();
        assert!(s.options.clean_session());
    }

    #[test]
    fn plaintext_to_a_remote_host_needs_consent() {
        // The config refuses it first; the client refuses it too.
        let text = "[gateway]\nid = \"gw1\"\nstate_dir = \"/tmp/x\"\n[upstream]\nurl = \"mqtt://192.0.2.1\"\nallow_plaintext = true\n";
        let mut c = Config::parse(Path::new("t.toml"), text).unwrap();
        let up = c.upstream.as_mut().unwrap();
        assert!(ClientSettings::from_config(up, "gw1").is_ok());
        up.allow_plaintext = false;
        assert!(matches!(
            ClientSettings::from_config(up, "gw1"),
            Err(ClientError::PlaintextRefused(_))
        ));
    }

    #[test]
    fn missing_files_are_clear_errors() {
        let e =
            upstream("url = \"mqtts://127.0.0.1\"\nca_file = \"/nonexistent/ca.pem\"").unwrap_err();
        assert!(e.to_string().contains("CA file"), "{e}");
        let e = upstream(
            "url = \"mqtt://127.0.0.1\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("password file"), "{e}");
    }

    #[test]
    fn password_is_read_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-value\n").unwrap();
        let s = upstream(&format!(
            "url = \"mqtt://127.0.0.1\"\nusername = \"u\"\npassword_file = \"{}\"",
            pw.display()
        ))
        .unwrap();
        let (_, password) = s.options.credentials().unwrap();
        assert_eq!(password, "s3cret-value");
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
