//! Configuration: the TOML file an installer writes, typed and validated.
//!
//! Owns parsing, defaults and validation, and turning every mistake into an error
//! that names the file, the line and the key. It must not start anything: a config
//! that fails here means nothing runs (exit code 2).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod error;
mod host;
mod paths;

pub use paths::{check_key_file, check_state_dir};

pub(crate) use error::line_col;
pub use error::ConfigError;
use error::{key_in_message, qualified_key, Locator};

/// Exit code for a configuration error (also used for bad command-line input).
pub const EXIT_CONFIG: i32 = 2;

/// The largest config file read (the example config is a few KiB).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default, rename = "radio")]
    pub radios: Vec<RadioConfig>,
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Stable gateway identity; used in MQTT topics, so restricted to `[A-Za-z0-9_-]`.
    pub id: Spanned<String>,
    /// Where the SQLite database and other state live.
    pub state_dir: Spanned<PathBuf>,
    /// Default log filter (`error`, `warn`, `info`, `debug`, `trace` or a tracing
    /// directive); `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: Spanned<String>,
    /// The master key file, used when systemd passes no `master-key` credential;
    /// created (mode 0600) if missing. Default: `<state_dir>/master.key`.
    #[serde(default)]
    pub master_key_file: Option<Spanned<PathBuf>>,
    /// Hex ed25519 public key: when set, only policies signed by it are accepted.
    #[serde(default)]
    pub policy_public_key: Option<Spanned<String>>,
}

fn default_log_level() -> Spanned<String> {
    Spanned::new(0..0, "info".to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: survives power loss (default).
    Full,
    /// fsync at checkpoints only: survives a crash of the process, not of the machine.
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Longest time the first write of a batch waits for company before the batch
    /// commits (group commit). A batch also closes as soon as the queue is empty.
    #[serde(default = "default_commit_window", with = "humantime_serde")]
    pub commit_window: Duration,
    /// Most writes committed in one transaction.
    #[serde(default = "default_commit_max_ops")]
    pub commit_max_ops: Spanned<usize>,
    #[serde(default = "default_synchronous")]
    pub synchronous: Synchronous,
    /// Under light load, device events are committed at most once per this long:
    /// an event after a quiet spell commits at once, the events that follow it
    /// sooner wait out the rest and commit together (one fsync and one uplink round
    /// for all). At most 1s; 0 commits every burst at once.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// A device's retained state message is queued at most once per this interval:
    /// every reading still goes out as telemetry at once, and the state after the
    /// last reading of the interval follows when it ends. At most 1min; 0 queues
    /// the state at every commit that changes it.
    #[serde(default = "default_state_interval", with = "humantime_serde")]
    pub state_interval: Duration,
    /// How often the audit log is sealed (forward-secure seals, once `fieldgate audit
    /// seal init` has set them up). From 1s to 1d.
    #[serde(default = "default_audit_seal_interval", with = "humantime_serde")]
    pub audit_seal_interval: Duration,
}

fn default_audit_seal_interval() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_commit_window() -> Duration {
    Duration::from_millis(50)
}
fn default_commit_max_ops() -> Spanned<usize> {
    Spanned::new(0..0, 1000)
}
fn default_linger() -> Duration {
    Duration::from_millis(50)
}
fn default_state_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_synchronous() -> Synchronous {
    Synchronous::Full
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            commit_window: default_commit_window(),
            commit_max_ops: default_commit_max_ops(),
            synchronous: default_synchronous(),
            linger: default_linger(),
            state_interval: default_state_interval(),
            audit_seal_interval: default_audit_seal_interval(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket of the local technician API.
    #[serde(default = "default_socket")]
    pub socket: Spanned<PathBuf>,
    /// Group that owns the socket (mode 0660); unset keeps the daemon's group.
    #[serde(default)]
    pub group: Option<Spanned<String>>,
}

pub const DEFAULT_SOCKET: &str = "/run/fieldgate/api.sock";

fn default_socket() -> Spanned<PathBuf> {
    Spanned::new(0..0, PathBuf::from(DEFAULT_SOCKET))
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: default_socket(),
            group: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Zigbee,
    Zwave,
    Ble,
    Lora,
    /// LoRa point-to-point through a serial modem (RAK3172): no LoRaWAN, no network.
    #[serde(rename = "lora-p2p")]
    LoraP2p,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::Zigbee,
        Protocol::Zwave,
        Protocol::Ble,
        Protocol::Lora,
        Protocol::LoraP2p,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Zigbee => "zigbee",
            Protocol::Zwave => "zwave",
            Protocol::Ble => "ble",
            Protocol::Lora => "lora",
            Protocol::LoraP2p => "lora-p2p",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadioConfig {
    pub name: Spanned<String>,
    pub protocol: Protocol,
    /// `/dev/...` serial path, `tcp://host:port`, `sim://<protocol>`, and for BLE
    /// `bluez://hciN`, for LoRa packet forwarders `udp://bind:port`.
    pub port: Spanned<String>,
    #[serde(default)]
    pub baud: Option<Spanned<u32>>,
    /// Start this radio (default true); a disabled radio is listed but not opened.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Protocol-specific options, checked by the protocol's driver
    /// (`radio::DriverSpec::check_options`) when the config is validated.
    #[serde(default = "no_options")]
    pub options: Spanned<toml::Table>,
}

fn no_options() -> Spanned<toml::Table> {
    Spanned::new(0..0, toml::Table::new())
}

fn yes() -> bool {
    true
}

/// Where a radio's bytes come from, parsed from `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    Serial(PathBuf),
    Tcp { host: String, port: u16 },
    Udp { bind: String, port: u16 },
    Sim(Protocol),
    Bluez(String),
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Serial(p) => write!(f, "{}", p.display()),
            PortSpec::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            PortSpec::Udp { bind, port } => write!(f, "udp://{bind}:{port}"),
            PortSpec::Sim(p) => write!(f, "sim://{p}"),
            PortSpec::Bluez(a) => write!(f, "bluez://{a}"),
        }
    }
}

impl RadioConfig {
    /// The parsed port; valid after [`Config::validate`].
    pub fn port_spec(&self) -> PortSpec {
        parse_port(self.port.get_ref(), self.protocol).unwrap_or(PortSpec::Sim(self.protocol))
    }
}

pub const STANDARD_BAUDS: [u32; 10] = [
    9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 921600, 1000000,
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub url: Spanned<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (never the password itself in the config).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive: Duration,
    /// The longest wait between reconnect attempts (the backoff doubles from 1 s up
    /// to this, with jitter).
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Defaults to `fieldgate/<gateway id>`.
    #[serde(default)]
    pub topic_prefix: Option<Spanned<String>>,
    /// Allow `mqtt://` to a host that is not loopback.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// MQTT protocol version: 4 (3.1.1, the default) or 5.
    #[serde(default = "default_protocol")]
    pub protocol: Spanned<u8>,
    /// MQTT 3.1.1: `false` asks the broker to keep the gateway's session (its
    /// subscriptions, and QoS 1 messages for them sent while it is away). Unset: `false`
    /// when a radio bridges to a network server (its downlink commands then wait for the
    /// gateway), `true` otherwise. Resolved by [`Config::parse`].
    #[serde(default)]
    pub clean_session: Option<bool>,
    /// MQTT 5: how long the broker keeps the session (subscriptions, requests sent
    /// while the gateway is away). 0 (the default): none.
    #[serde(default, with = "humantime_serde")]
    pub session_expiry: Duration,
    /// MQTT 5: the message expiry interval put on telemetry, so a consumer that
    /// comes back late is not sent stale readings. Unset: telemetry never expires.
    #[serde(default, with = "humantime_serde")]
    pub telemetry_expiry: Option<Duration>,
    /// Device topics name a device by its id (`id`, the default) or by its
    /// friendly name when it has one (`name`).
    #[serde(default)]
    pub topic_names: TopicNames,
    #[serde(default)]
    pub outbox: OutboxLimits,
}

/// How device topics name a device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicNames {
    /// `device/<device id>/...` always.
    #[default]
    Id,
    /// `device/<friendly name>/...` for a device that has one, the id otherwise.
    Name,
}

fn default_protocol() -> Spanned<u8> {
    Spanned::new(0..0, 4)
}

fn default_keepalive() -> Duration {
    Duration::from_secs(30)
}

fn default_reconnect_max() -> Duration {
    crate::radio::Backoff::MAX
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxLimits {
    #[serde(default = "default_outbox_bytes")]
    pub max_bytes: Spanned<u64>,
    #[serde(default = "default_outbox_age", with = "humantime_serde")]
    pub max_age: Duration,
}

fn default_outbox_bytes() -> Spanned<u64> {
    Spanned::new(0..0, 256 * 1024 * 1024)
}
/// The range of `upstream.outbox.max_age`: under a minute, a short uplink outage would
/// drop everything queued during it.
const OUTBOX_AGE_MIN: Duration = Duration::from_secs(60);
const OUTBOX_AGE_MAX: Duration = Duration::from_secs(3650 * 24 * 3600);

fn default_outbox_age() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_bytes: default_outbox_bytes(),
            max_age: default_outbox_age(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file, including the checks that need
    /// this host ([`Config::host_checks`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::load_elsewhere(path)?;
        match config.host_checks(path).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(config),
        }
    }

    /// Reads, parses and validates a config file, without the host checks.
    pub fn load_elsewhere(path: &Path) -> Result<Config, ConfigError> {
        let fail = |message: String| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message,
        };
        // Read up to a limit: a path to a device, a FIFO or a huge file is not a config.
        let text = crate::files::read_regular_text(path, MAX_CONFIG_BYTES).map_err(|e| match e
            .kind()
        {
            std::io::ErrorKind::InvalidInput => fail(format!(
                "cannot read the config file: {e}: not a config file"
            )),
            _ => fail(format!("cannot read the config file: {e}")),
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = plain_types(e.message().trim());
            let (line, column, key) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    // A missing top-level table is reported with an empty span.
                    let whole = span.is_empty();
                    let key = qualified_key(text, &message, span.start, whole);
                    (Some(l), Some(c), key)
                }
                None => (None, None, key_in_message(&message)),
            };
            ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                key,
                message,
            }
        })?;
        config.validate(&Locator { file: path, text })?;
        let mut config = config;
        config.resolve_session();
        Ok(config)
    }

    /// `upstream.clean_session` when unset: a radio bridging to a network server wants
    /// the broker to keep the commands sent while the gateway is away (MQTT 3.1.1; on
    /// MQTT 5 that is `session_expiry`).
    fn resolve_session(&mut self) {
        let bridged = self.radios.iter().any(|r| {
            r.enabled
                && r.protocol == Protocol::Lora
                && crate::radio::lora::options::LoraOptions::parse(r.options.get_ref())
                    .is_ok_and(|o| o.bridge.mode != crate::radio::lora::options::BridgeMode::Off)
        });
        if let Some(up) = self.upstream.as_mut() {
            if up.clean_session.is_none() {
                up.clean_session = Some(*up.protocol.get_ref() == 5 || !bridged);
            }
        }
    }

    fn validate(&self, loc: &Locator<'_>) -> Result<(), ConfigError> {
        let id = self.gateway.id.get_ref();
        if id.is_empty() || id.len() > 64 || !id.chars().all(is_ident_char) {
            return Err(loc.at(
                &self.gateway.id,
                "gateway.id",
                "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-' (it is used in MQTT topics)",
            ));
        }
        if let Err(why) = check_state_dir(self.gateway.state_dir.get_ref()) {
            return Err(loc.at(&self.gateway.state_dir, "gateway.state_dir", why));
        }
        if let Some(key) = &self.gateway.master_key_file {
            if let Err(why) = check_key_file(key.get_ref()) {
                return Err(loc.at(key, "gateway.master_key_file", why));
            }
        }
        let level = self.gateway.log_level.get_ref();
        if !is_log_filter(level) {
            return Err(loc.at(
                &self.gateway.log_level,
                "gateway.log_level",
                format!("`{level}` is not a log level (error, warn, info, debug, trace) or filter"),
            ));
        }

        if let Some(key) = &self.gateway.policy_public_key {
            if let Err(e) = crate::policy::parse_public_key(key.get_ref()) {
                return Err(loc.at(key, "gateway.policy_public_key", e.message));
            }
        }

        for (key, value, max) in [
            (
                "store.commit_window",
                self.store.commit_window,
                Duration::from_secs(1),
            ),
            ("store.linger", self.store.linger, Duration::from_secs(1)),
            (
                "store.state_interval",
                self.store.state_interval,
                Duration::from_secs(60),
            ),
        ] {
            if value > max {
                return Err(loc.nowhere(
                    key,
                    format!(
                        "{} is too long: at most {}",
                        humantime::format_duration(value),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        let max_ops = *self.store.commit_max_ops.get_ref();
        if !(1..=100_000).contains(&max_ops) {
            return Err(loc.at(
                &self.store.commit_max_ops,
                "store.commit_max_ops",
                "must be between 1 and 100000",
            ));
        }

        let seal = self.store.audit_seal_interval;
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&seal) {
            return Err(loc.nowhere(
                "store.audit_seal_interval",
                format!(
                    "{} is out of range: from 1s to 1d",
                    humantime::format_duration(seal)
                ),
            ));
        }

        let socket = self.api.socket.get_ref();
        if !socket.is_absolute() {
            return Err(loc.at(&self.api.socket, "api.socket", "must be an absolute path"));
        }
        // A Unix socket's path fits in `sun_path` (108 bytes with its NUL).
        if socket.as_os_str().len() > 107 {
            return Err(loc.at(
                &self.api.socket,
                "api.socket",
                format!(
                    "is {} bytes long; a Unix socket's path is at most 107",
                    socket.as_os_str().len()
                ),
            ));
        }
        if let Some(group) = &self.api.group {
            if group.get_ref().is_empty() {
                return Err(loc.at(group, "api.group", "must not be empty"));
            }
        }

        let mut names = HashSet::new();
        // A device, a listening port or a TCP endpoint (ser2net, a network coordinator:
        // one client at a time) serves one radio: two drivers on it would read each
        // other's frames or knock each other off. (Emulators and BlueZ adapters are not
        // checked: several sim:// radios are fine, and an adapter is shared by design.)
        // A serial path is compared as the device it names: `/dev/./ttyUSB0`,
        // `/dev//ttyUSB0` and a by-id link to it are `/dev/ttyUSB0`.
        let mut ports: HashMap<String, String> = HashMap::new();
        for radio in &self.radios {
            let name = radio.name.get_ref();
            if name.is_empty() || name.len() > 32 || !name.chars().all(is_ident_char) {
                return Err(loc.at(
                    &radio.name,
                    "radio.name",
                    "must be 1 to 32 characters of A-Z, a-z, 0-9, '_' or '-'",
                ));
            }
            if !names.insert(name.clone()) {
                return Err(loc.at(
                    &radio.name,
                    "radio.name",
                    format!("duplicate radio name `{name}`"),
                ));
            }
            let spec = match parse_port(radio.port.get_ref(), radio.protocol) {
                Ok(spec) => spec,
                Err(msg) => return Err(loc.at(&radio.port, "radio.port", msg)),
            };
            let exclusive = match &spec {
                PortSpec::Serial(p) => {
                    let lexical: PathBuf = p.components().collect();
                    let device = std::fs::canonicalize(&lexical).unwrap_or(lexical);
                    Some(device.display().to_string())
                }
                PortSpec::Udp { port, .. } => Some(format!("udp port {port}")),
                PortSpec::Tcp { host, port } => {
                    Some(format!("tcp://{}:{port}", host.to_ascii_lowercase()))
                }
                _ => None,
            };
            if let Some(key) = exclusive.filter(|_| radio.enabled) {
                if let Some(other) = ports.insert(key.clone(), name.clone()) {
                    return Err(loc.at(
                        &radio.port,
                        "radio.port",
                        format!("{key} is already radio `{other}`'s"),
                    ));
                }
            }
            if let Some(spec) = crate::radio::spec(radio.protocol) {
                let kind = crate::radio::PortKind::of(&radio.port_spec());
                if !spec.ports.contains(&kind) {
                    return Err(loc.at(
                        &radio.port,
                        "radio.port",
                        format!("the {} driver cannot use this kind of port", radio.protocol),
                    ));
                }
                if let Err(e) = (spec.check_options)(radio.options.get_ref()) {
                    return Err(loc.option(&radio.options, &e.key, e.message));
                }
            }
            if let Some(baud) = &radio.baud {
                if !STANDARD_BAUDS.contains(baud.get_ref()) {
                    return Err(loc.at(
                        baud,
                        "radio.baud",
                        format!(
                            "{} is not a supported baud rate (one of {:?})",
                            baud.get_ref(),
                            STANDARD_BAUDS
                        ),
                    ));
                }
            }
        }

        if let Some(up) = &self.upstream {
            validate_upstream(up, loc)?;
        }
        Ok(())
    }

    pub fn db_path(&self) -> PathBuf {
        self.gateway.state_dir.get_ref().join("fieldgate.db")
    }

    pub fn master_key_path(&self) -> PathBuf {
        self.gateway
            .master_key_file
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_else(|| self.gateway.state_dir.get_ref().join("master.key"))
    }

    pub fn gateway_id(&self) -> &str {
        self.gateway.id.get_ref()
    }

    pub fn socket_path(&self) -> &Path {
        self.api.socket.get_ref()
    }
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A level word, or comma-separated `target=level` directives with level words.
fn is_log_filter(filter: &str) -> bool {
    let filter = filter.trim();
    !filter.is_empty()
        && filter.split(',').all(|part| {
            let level = match part.split_once('=') {
                Some((target, level)) => {
                    if target.trim().is_empty() {
                        return false;
                    }
                    level
                }
                None => part,
            };
            LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
        })
}

/// The deserializer's messages name Rust's types (`expected u32`); an installer reads
/// what kind of value is wanted instead.
fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, plain) in [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("u64 value was too large", "the number is too large"),
        ("invalid value: integer", "invalid value"),
    ] {
        out = out.replace(rust, plain);
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn parse_host_port(rest: &str, what: &str) -> Result<(String, u16), String> {
    let url = url::Url::parse(&format!("x://{rest}"))
        .map_err(|e| format!("`{what}` is not a valid address: {e}"))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("`{what}` has no host"))?;
    let port = url
        .port()
        .ok_or_else(|| format!("`{what}` needs a port, as in {}", example_for(what)))?;
    if url.path() != "" && url.path() != "/" {
        return Err(format!("`{what}` must not have a path"));
    }
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

fn example_for(what: &str) -> &'static str {
    if what.starts_with("udp") {
        "udp://0.0.0.0:1700"
    } else {
        "tcp://192.0.2.10:6638"
    }
}

/// Parses a radio `port` for a protocol; the error says what is accepted.
pub fn parse_port(port: &str, protocol: Protocol) -> Result<PortSpec, String> {
    if let Some(rest) = port.strip_prefix("tcp://") {
        if protocol == Protocol::Ble {
            return Err("BLE radios are BlueZ adapters: use `bluez://hci0`".into());
        }
        let (host, p) = parse_host_port(rest, port)?;
        return Ok(PortSpec::Tcp { host, port: p });
    }
    if let Some(rest) = port.strip_prefix("udp://") {
        if protocol != Protocol::Lora {
            return Err("`udp://` is only for LoRa packet forwarders (GWMP)".into());
        }
        let (bind, p) = parse_host_port(rest, port)?;
        return Ok(PortSpec::Udp { bind, port: p });
    }
    if let Some(rest) = port.strip_prefix("sim://") {
        // The LoRa emulator is a GWMP packet forwarder; `sim://lora-gwmp` names it. The
        // LoRa P2P emulator is a RAK3172 modem.
        let rest = match rest {
            "lora-gwmp" => "lora",
            "lora-rak3172" => "lora-p2p",
            other => other,
        };
        return match Protocol::parse(rest) {
            Some(p) if p == protocol => Ok(PortSpec::Sim(p)),
            Some(p) => Err(format!(
                "`{port}` emulates a {p} radio but this radio's protocol is {protocol}"
            )),
            None => Err(format!(
                "unknown emulator `{rest}`: use sim://zigbee, sim://zwave, sim://ble, sim://lora or sim://lora-rak3172"
            )),
        };
    }
    if let Some(rest) = port.strip_prefix("bluez://") {
        if protocol != Protocol::Ble {
            return Err("`bluez://` is only for BLE radios".into());
        }
        if !rest.starts_with("hci")
            || rest.len() < 4
            || !rest[3..].chars().all(|c| c.is_ascii_digit())
        {
            return Err(format!("`{port}` must name an adapter as bluez://hciN"));
        }
        return Ok(PortSpec::Bluez(rest.to_string()));
    }
    if port.contains("://") {
        return Err(format!(
            "unsupported scheme in `{port}`: use a /dev/... path, tcp://host:port or sim://{protocol}"
        ));
    }
    if protocol == Protocol::Ble {
        return Err(format!(
            "`{port}`: BLE radios are BlueZ adapters: use `bluez://hci0`"
        ));
    }
    if !port.starts_with("/dev/") {
        return Err(format!(
            "`{port}` is not a serial device path (/dev/...), tcp://host:port or sim://{protocol}"
        ));
    }
    if std::path::Path::new(port)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!(
            "`{port}` has a `..` component: name the device itself (/dev/serial/by-id/... is stable)"
        ));
    }
    Ok(PortSpec::Serial(PathBuf::from(port)))
}

fn validate_upstream(up: &UpstreamConfig, loc: &Locator<'_>) -> Result<(), ConfigError> {
    if !up.keepalive.is_zero()
        && (up.keepalive < Duration::from_secs(1) || up.keepalive > Duration::from_secs(65535))
    {
        return Err(loc.nowhere(
            "upstream.keepalive",
            format!(
                "{} is out of range: 0 (none) or from 1s to 65535s",
                humantime::format_duration(up.keepalive)
            ),
        ));
    }
    if up.password_file.is_some() && up.username.is_none() {
        return Err(loc.nowhere(
            "upstream.password_file",
            "is set but upstream.username is not: the broker takes a password with its user name",
        ));
    }
    // Read by the service, whose working directory is not the installer's.
    for (key, file) in [
        ("upstream.password_file", &up.password_file),
        ("upstream.ca_file", &up.ca_file),
        ("upstream.client_cert", &up.client_cert),
        ("upstream.client_key", &up.client_key),
    ] {
        if let Some(file) = file.as_ref().filter(|f| !f.is_absolute()) {
            return Err(loc.nowhere(
                key,
                format!(
                    "`{}` is relative: it must be an absolute path (the service's working directory is not yours)",
                    file.display()
                ),
            ));
        }
    }
    let (lo, hi) = (Duration::from_secs(1), Duration::from_secs(3600));
    if !(lo..=hi).contains(&up.reconnect_max) {
        return Err(loc.nowhere(
            "upstream.reconnect_max",
            format!(
                "{} is out of range: from 1s to 1h",
                humantime::format_duration(up.reconnect_max)
            ),
        ));
    }
    let raw = up.url.get_ref();
    // Never quoted back: a URL may carry a password.
    let url = url::Url::parse(raw)
        .map_err(|e| loc.at(&up.url, "upstream.url", format!("not a valid URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(loc.at(
            &up.url,
            "upstream.url",
            "credentials do not belong in the URL (they are not used, and would show wherever the URL is): set upstream.username and upstream.password_file",
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(loc.at(
            &up.url,
            "upstream.url",
            "is mqtt://host[:port] or mqtts://host[:port], without a path, query or fragment",
        ));
    }
    if url.port() == Some(0) {
        return Err(loc.at(&up.url, "upstream.url", "port 0 is not a port"));
    }
    let tls = match url.scheme() {
        "mqtt" => false,
        "mqtts" => true,
        other => {
            return Err(loc.at(
                &up.url,
                "upstream.url",
                format!("unsupported scheme `{other}`: use mqtt:// or mqtts://"),
            ))
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| loc.at(&up.url, "upstream.url", "has no host"))?;
    if !tls && !up.allow_plaintext && !is_loopback_host(host) {
        return Err(loc.at(
            &up.url,
            "upstream.url",
            format!(
                "plaintext MQTT to `{host}` is refused: use mqtts:// or set allow_plaintext = true"
            ),
        ));
    }
    if up.client_cert.is_some() != up.client_key.is_some() {
        return Err(loc.nowhere(
            "upstream.client_cert",
            "client_cert and client_key must be given together",
        ));
    }
    if let Some(prefix) = &up.topic_prefix {
        let p = prefix.get_ref();
        if p.is_empty() || p.contains(['#', '+']) || p.starts_with('/') || p.ends_with('/') {
            return Err(loc.at(
                prefix,
                "upstream.topic_prefix",
                "must be non-empty, without '#', '+' or a leading/trailing '/'",
            ));
        }
    }
    let protocol = *up.protocol.get_ref();
    if protocol != 4 && protocol != 5 {
        return Err(loc.at(
            &up.protocol,
            "upstream.protocol",
            format!("{protocol} is not supported: 4 (MQTT 3.1.1, the default) or 5 (MQTT 5)"),
        ));
    }
    if protocol == 5 && up.clean_session.is_some() {
        return Err(loc.nowhere(
            "upstream.clean_session",
            "clean_session is MQTT 3.1.1: on MQTT 5 the broker keeps a session with session_expiry",
        ));
    }
    if protocol != 5 && (!up.session_expiry.is_zero() || up.telemetry_expiry.is_some()) {
        // Named as written: the key the file sets.
        let key = if up.session_expiry.is_zero() {
            "upstream.telemetry_expiry"
        } else {
            "upstream.session_expiry"
        };
        return Err(loc.nowhere(
            key,
            "session_expiry and telemetry_expiry are MQTT 5 properties: set protocol = 5",
        ));
    }
    if up.session_expiry > Duration::from_secs(u32::MAX as u64 - 1) {
        return Err(loc.nowhere(
            "upstream.session_expiry",
            "must be below 136 years (the MQTT 5 limit)",
        ));
    }
    if let Some(t) = up.telemetry_expiry {
        if t < Duration::from_secs(1) || t > Duration::from_secs(u32::MAX as u64) {
            return Err(loc.nowhere(
                "upstream.telemetry_expiry",
                "must be at least 1s (MQTT 5 counts whole seconds)",
            ));
        }
    }
    if up.client_id.as_deref().is_some_and(str::is_empty) {
        return Err(loc.nowhere(
            "upstream.client_id",
            "must not be empty (leave it unset to use the gateway id)",
        ));
    }
    let age = up.outbox.max_age;
    if age < OUTBOX_AGE_MIN || age > OUTBOX_AGE_MAX {
        return Err(loc.nowhere(
            "upstream.outbox.max_age",
            format!(
                "{} is out of range: from 1m to 3650days (messages older than it are dropped unsent)",
                humantime::format_duration(age)
            ),
        ));
    }
    if *up.outbox.max_bytes.get_ref() < 1024 * 1024 {
        return Err(loc.at(
            &up.outbox.max_bytes,
            "upstream.outbox.max_bytes",
            "must be at least 1048576 (1 MiB)",
        ));
    }
    Ok(())
}

pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_matches(|c| c == '[' || c == ']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    const MINIMAL: &str = "[gateway]\nid = \"gw1\"\nstate_dir = \"/tmp/x\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.gateway_id(), "gw1");
        assert_eq!(c.socket_path(), Path::new(DEFAULT_SOCKET));
        assert_eq!(c.store.commit_window, Duration::from_millis(50));
        assert!(c.radios.is_empty());
    }

    #[test]
    fn type_error_names_line_and_key() {
        let e = parse(
            "[gateway]\nid = \"gw1\"\nstate_dir = \"/tmp/x\"\n[store]\ncommit_max_ops = \"many\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(5));
        assert_eq!(e.key.as_deref(), Some("store.commit_max_ops"));
        // In words an installer reads, not Rust's type names.
        assert!(
            e.message.contains("expected a whole number"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("usize"), "{}", e.message);
    }

    #[test]
    fn mqtt5_settings_are_checked() {
        let base = format!("{MINIMAL}[upstream]\nurl = \"mqtt://127.0.0.1\"\n");
        let up = parse(&base).unwrap().upstream.unwrap();
        assert_eq!(*up.protocol.get_ref(), 4);
        assert_eq!(up.topic_names, TopicNames::Id);
        let up = parse(&format!(
            "{base}protocol = 5\nsession_expiry = \"1h\"\ntelemetry_expiry = \"10m\"\ntopic_names = \"name\"\n"
        ))
        .unwrap()
        .upstream
        .unwrap();
        assert_eq!(up.session_expiry, Duration::from_secs(3600));
        assert_eq!(up.telemetry_expiry, Some(Duration::from_secs(600)));
        assert_eq!(up.topic_names, TopicNames::Name);
        let e = parse(&format!("{base}protocol = 3\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("upstream.protocol"));
        assert_eq!(e.line, Some(6));
        // MQTT 5 properties without MQTT 5.
        let e = parse(&format!("{base}telemetry_expiry = \"10m\"\n")).unwrap_err();
        assert!(e.to_string().contains("protocol = 5"), "{e}");
        // The key the file sets, at its line.
        assert_eq!(e.key.as_deref(), Some("upstream.telemetry_expiry"));
        assert_eq!(e.line, Some(6));
        let e = parse(&format!(
            "{base}protocol = 5\ntelemetry_expiry = \"100ms\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("upstream.telemetry_expiry"));
        assert!(parse(&format!("{base}topic_names = \"nick\"\n")).is_err());
    }

    #[test]
    fn the_audit_seal_interval_is_bounded() {
        let base = "[gateway]\nid = \"gw1\"\nstate_dir = \"/tmp/x\"\n[store]\n";
        assert_eq!(
            parse(base).unwrap().store.audit_seal_interval,
            Duration::from_secs(900)
        );
        for bad in ["0s", "2days"] {
            let e = parse(&format!("{base}audit_seal_interval = \"{bad}\"\n")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some("store.audit_seal_interval"), "{bad}");
        }
        let ok = parse(&format!("{base}audit_seal_interval = \"30s\"\n")).unwrap();
        assert_eq!(ok.store.audit_seal_interval, Duration::from_secs(30));
    }

    #[test]
    fn ports_parse() {
        assert_eq!(
            parse_port("tcp://10.0.0.2:6638", Protocol::Zigbee).unwrap(),
            PortSpec::Tcp {
                host: "10.0.0.2".into(),
                port: 6638
            }
        );
        assert!(parse_port("tcp://host", Protocol::Zigbee).is_err());
        assert!(parse_port("sim://zwave", Protocol::Zigbee).is_err());
        assert!(parse_port("/dev/ttyUSB0", Protocol::Zwave).is_ok());
        assert!(parse_port("bluez://hci0", Protocol::Ble).is_ok());
        assert!(parse_port("ttyUSB0", Protocol::Zwave).is_err());
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("[::1]"));
        assert!(is_loopback_host("localhost"));
        assert!(!is_loopback_host("broker.example.com"));
    }
}
