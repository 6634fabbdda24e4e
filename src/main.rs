//! `fieldgate`: the daemon (`run`, `demo`), the radio emulators (`emulate`) and the
//! technician CLI, one binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use fieldgate::api::cli::{self, VerifyFailed};
use fieldgate::api::client::ApiClient;
use fieldgate::config::{Config, DEFAULT_SOCKET, EXIT_CONFIG};
use fieldgate::{daemon, demo};

const DEFAULT_CONFIG: &str = "/etc/fieldgate/fieldgate.toml";

#[derive(Parser)]
#[command(
    name = "fieldgate",
    version,
    about = "Edge gateway for Zigbee, Z-Wave, BLE and LoRa devices"
)]
struct Cli {
    /// Config file (for `run`, and to find the API socket for the other commands).
    #[arg(long, global = true, env = "FIELDGATE_CONFIG")]
    config: Option<PathBuf>,
    /// API socket of the running daemon (default: from the config, else /run/fieldgate/api.sock).
    #[arg(long, global = true, env = "FIELDGATE_SOCKET")]
    socket: Option<PathBuf>,
    /// How long a command waits for the daemon's answer, e.g. `10s` (default: 60s; 15min
    /// for a radio's backup, restore and key rotation).
    #[arg(long, global = true, env = "FIELDGATE_TIMEOUT", value_parser = parse_timeout)]
    timeout: Option<std::time::Duration>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run,
    /// Run the daemon on emulated radios with a temporary state directory.
    Demo {
        /// Stop after this long (e.g. `30s`); default: until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Sync the demo to this MQTT broker, e.g. `mqtt://127.0.0.1:1883`.
        #[arg(long, value_name = "URL")]
        mqtt: Option<String>,
    },
    /// Serve a device-side radio emulator to any host stack, over TCP or a pseudo-terminal.
    Emulate {
        #[command(subcommand)]
        command: EmulateCommand,
    },
    /// Check the host: config, radios, broker, clock, disk, directories, master key.
    /// Exit code 1 when any check fails.
    Doctor {
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
        /// The user the service runs as (the unit's User=).
        #[arg(long, default_value = fieldgate::doctor::SERVICE_USER)]
        user: String,
        /// Key file to check when $CREDENTIALS_DIRECTORY is unset (default: the
        /// config's `master_key_file`, else `<state_dir>/master.key`).
        #[arg(long)]
        master_key: Option<PathBuf>,
        /// Per network check (e.g. `3s`).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Gateway status: radios, devices, outbox, requests held for sleeping devices.
    Status {
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// List devices.
    Devices {
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
        /// Only devices in this lifecycle state (pending, active, quarantined, decommissioned).
        #[arg(long)]
        lifecycle: Option<String>,
        /// Only devices with a health flag raised (offline, battery low, weak link) or quarantined.
        #[arg(long)]
        unhealthy: bool,
    },
    /// Send a command to a device: on, off, toggle, or level 0-100. Waits (up to 20 s)
    /// for the device's result and exits 1 when it was not carried out.
    Set {
        /// The device: its id (e.g. zigbee:0x00124b0001abcdef) or its friendly name.
        #[arg(value_name = "DEVICE")]
        id: String,
        /// `on`, `off`, `toggle`, or `level`.
        action: String,
        /// The level in percent, for `level`.
        value: Option<u8>,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Set one of a device's configuration parameters (Z-Wave Configuration): the device
    /// takes it and reads it back; prints the value it holds now (exit 1 if refused).
    Configure {
        /// The device: its id (e.g. zigbee:0x00124b0001abcdef) or its friendly name.
        #[arg(value_name = "DEVICE")]
        id: String,
        /// The parameter number.
        parameter: u16,
        /// The value (signed or unsigned, within `--size`).
        #[arg(allow_hyphen_values = true)]
        value: i64,
        /// The parameter's size in bytes: 1, 2 or 4 (the device's manual says which).
        #[arg(long)]
        size: u8,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Read fresh values from a device; a sleeping device's read is held until it wakes.
    Refresh {
        /// The device: its id (e.g. zigbee:0x00124b0001abcdef) or its friendly name.
        #[arg(value_name = "DEVICE")]
        id: String,
        /// Only these attributes in the answer (names as in the device's state), e.g.
        /// `on,voltage`.
        #[arg(long, value_delimiter = ',')]
        attributes: Vec<String>,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// The policy: admission, health, firmware, credentials, local rules.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Show one device and the requests held for it.
    Device {
        /// The device: its id (e.g. zigbee:0x00124b0001abcdef) or its friendly name.
        #[arg(value_name = "DEVICE")]
        id: String,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Open a join window on a radio and watch devices join.
    Pair {
        radio: String,
        /// How long the window stays open (1 to 254 s; the policy may allow less).
        #[arg(long, default_value_t = 60,
              value_parser = clap::builder::RangedU64ValueParser::<u32>::new()
                  .range(1..=u64::from(fieldgate::hub::MAX_PERMIT_JOIN_SECONDS)))]
        seconds: u32,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Radio maintenance.
    Radio {
        #[command(subcommand)]
        command: RadioCmd,
    },
    /// Zigbee install codes: register a device's code before it joins.
    InstallCode {
        #[command(subcommand)]
        command: InstallCodeCmd,
    },
    /// LoRaWAN devices this gateway owns: give it a device's keys.
    Lora {
        #[command(subcommand)]
        command: LoraCmd,
    },
    /// Decommission a device: removed from the network, credentials destroyed.
    /// It is refused if it tries to join again, until `readmit`.
    Remove {
        /// The device: its id (e.g. zigbee:0x00124b0001abcdef) or its friendly name.
        #[arg(value_name = "DEVICE")]
        id: String,
        /// Also put it on the denylist: refused whenever it tries again, even if it
        /// was never seen here, until `readmit`.
        #[arg(long)]
        block: bool,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Adopt a discovered (pending) BLE device: it becomes active and its readings go
    /// upstream. An encrypted BTHome sensor takes its bindkey.
    Adopt {
        /// The device: its id (e.g. zigbee:0x00124b0001abcdef) or its friendly name.
        #[arg(value_name = "DEVICE")]
        id: String,
        /// The BTHome bindkey (32 hex digits), or `-` to read it from standard input.
        /// Stored encrypted; never printed.
        #[arg(long, value_name = "HEX|-")]
        bindkey: Option<String>,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Rotate an adopted BLE device's BTHome bindkey: the new key replaces the old one
    /// (which stops opening its advertisements) and its counter starts afresh.
    RotateBindkey {
        /// The device: its id (e.g. zigbee:0x00124b0001abcdef) or its friendly name.
        #[arg(value_name = "DEVICE")]
        id: String,
        /// The new bindkey (32 hex digits), or `-` to read it from standard input.
        #[arg(long, value_name = "HEX|-")]
        bindkey: String,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Let a decommissioned device join again (through a join window, as a new one).
    Readmit {
        /// The device: its id (e.g. zigbee:0x00124b0001abcdef) or its friendly name.
        #[arg(value_name = "DEVICE")]
        id: String,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Put a database backup in place of the gateway's, with the daemon stopped: the
    /// restored gateway numbers its new messages in a new life (none is taken for one
    /// already sent), its audit log records the restore, and sealing carries on. The
    /// database it replaces is kept beside it as `fieldgate.db.replaced`.
    Restore {
        /// The backup: a database file (from `sqlite3 ... ".backup ..."`, or the
        /// fieldgate.db of an offline backup).
        backup: PathBuf,
        /// The audit verification seed `audit seal init` showed (64 hex digits; `-`
        /// reads it from standard input): needed when sealing went on after the backup.
        #[arg(long)]
        seed: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The MQTT uplink.
    Upstream {
        #[command(subcommand)]
        command: UpstreamCommand,
    },
    /// Decode captured radio bytes and print them as JSON.
    Decode {
        #[command(subcommand)]
        command: fieldgate::decode::DecodeCommand,
    },
}

#[derive(Subcommand)]
enum EmulateCommand {
    /// A LoRaWAN packet forwarder (GWMP over UDP) with an OTAA and an ABP device, sending
    /// to a gateway's `udp://` port. Prints what it sends and hears, one line each.
    #[command(name = "lora-gwmp")]
    LoraGwmp {
        #[command(flatten)]
        args: fieldgate::emulate::LoraArgs,
        /// Log level on stderr (RUST_LOG overrides).
        #[arg(long, default_value = "warn")]
        log_level: String,
    },
    /// A RAK3172 LoRa modem (RUI3 AT firmware) with LoRa P2P sensors around it. Prints
    /// where it listens (`listening tcp://HOST:PORT` or `pty /dev/pts/N`) as its first line.
    #[command(name = "lora-rak3172")]
    LoraRak3172 {
        #[command(flatten)]
        args: fieldgate::emulate::RakArgs,
        /// Log level on stderr (RUST_LOG overrides).
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// A Z-Stack 3 ZNP coordinator with emulated devices. Prints where it listens
    /// (`listening tcp://HOST:PORT` or `pty /dev/pts/N`) as its first line.
    Zigbee {
        #[command(flatten)]
        args: fieldgate::emulate::ZigbeeArgs,
        /// Log level on stderr (RUST_LOG overrides).
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// A 700-series Z-Wave Serial API controller with emulated nodes. Prints where it
    /// listens (`listening tcp://HOST:PORT` or `pty /dev/pts/N`) as its first line.
    Zwave {
        #[command(flatten)]
        args: fieldgate::emulate::ZwaveArgs,
        /// Log level on stderr (RUST_LOG overrides).
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// BLE sensors and beacons (BTHome plain and encrypted, Xiaomi pvvx, Ruuvi, iBeacon,
    /// optionally a street of random addresses): one JSON line per advertisement.
    Ble {
        #[command(flatten)]
        args: fieldgate::emulate::BleArgs,
    },
}

#[derive(Subcommand)]
enum InstallCodeCmd {
    /// Register (or replace) a device's install code: stored encrypted and pushed to the
    /// coordinator. The code is validated (length and CRC) and never shown again.
    Add {
        /// The device's IEEE address, e.g. 0x00124b0001abcdef.
        ieee: String,
        /// The install code in hex as printed on the device (with its CRC); `-` reads it
        /// from standard input, which keeps it out of the shell history and process list.
        code: String,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Devices with a registered install code (never the codes).
    List {
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Destroy a device's registered install code.
    Remove {
        ieee: String,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LoraCmd {
    /// Add (or re-key) a LoRaWAN device: OTAA with --joineui and --appkey, or ABP with
    /// --devaddr, --nwkskey and --appskey. Keys are stored encrypted and never shown again;
    /// a key given as `-` is read from standard input.
    Add {
        #[arg(long)]
        deveui: String,
        #[arg(long, requires = "appkey", conflicts_with_all = ["devaddr", "nwkskey", "appskey"])]
        joineui: Option<String>,
        #[arg(long)]
        appkey: Option<String>,
        #[arg(long, requires_all = ["nwkskey", "appskey"])]
        devaddr: Option<String>,
        #[arg(long)]
        nwkskey: Option<String>,
        #[arg(long)]
        appskey: Option<String>,
        /// How its payloads become readings: `lpp` (Cayenne LPP) or `raw` (hex only).
        #[arg(long)]
        decoder: Option<String>,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RadioCmd {
    /// Export a radio's network (Zigbee: open-coordinator-backup JSON; Z-Wave: the NVM
    /// image with its home id and nodes, see docs/zwave.md). The output holds
    /// the network key: keep it like a password.
    Backup {
        name: String,
        /// Write to this new file (mode 0600) instead of printing (`-`: print).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a backup made by `radio backup --out` back onto the radio, replacing its
    /// network (Z-Wave: the NVM image FILE with its description FILE.json; refused before
    /// anything is written when the image is from another chip family). The controller
    /// restarts afterwards.
    Restore {
        name: String,
        /// The backup: the image file (its description next to it as FILE.json) or a JSON
        /// backup document.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Confirm: the radio's current network is replaced.
        #[arg(long)]
        yes: bool,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Replace a Zigbee radio's network key: a new random key is sent to every device,
    /// switched to after the radio's `key_switch_delay`, and stored encrypted. On failure
    /// the old key stays active.
    RotateKey {
        name: String,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UpstreamCommand {
    /// Rotate the gateway's MQTT client certificate and key; rolled back if the
    /// broker refuses the new pair.
    RotateCert {
        /// The new certificate chain (PEM, leaf first).
        #[arg(long)]
        cert: PathBuf,
        /// The new private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (PATH, else --config, else the installed one); exit
    /// code 2 when it is invalid.
    Check {
        path: Option<PathBuf>,
        /// The config is for another machine: what only that machine can tell
        /// (e.g. whether `[api] group` exists) is a warning, not an error.
        #[arg(long)]
        elsewhere: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Apply a policy document (bare, or signed with `policy sign`).
    Apply {
        /// The document's file; `-` reads it from standard input.
        file: PathBuf,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Show the active policy.
    Show {
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Sign a policy document with an ed25519 key made by `policy keygen`.
    Sign {
        file: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Make a signing key (file mode 0600) and print its public key for the config.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and name the first record that does not verify.
    Verify {
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
        /// Read this database file directly (works with the daemon stopped).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Also check every forward-secure seal with the seed `audit seal init` showed
        /// (64 hex digits; `-` reads it from standard input). Reads the database named
        /// by --db, else the config's.
        #[arg(long)]
        seed: Option<String>,
    },
    /// Forward-secure sealing of the audit log.
    Seal {
        #[command(subcommand)]
        command: SealCommand,
    },
    /// The newest records.
    Tail {
        /// How many (1 to 10000).
        #[arg(short = 'n', default_value_t = 20,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
        n: usize,
        /// One JSON object per line (JSON Lines), oldest first: the records as the
        /// daemon stores and publishes them, with their hashes.
        #[arg(long)]
        json: bool,
        /// Read this database file directly (works with the daemon stopped).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Only these actions (repeat or comma-separate: `--action device.join,device.leave`).
        #[arg(long, value_delimiter = ',')]
        action: Vec<String>,
        /// Only records by this actor (e.g. `radio:zigbee0`, `local:uid=1000,...`).
        #[arg(long)]
        actor: Option<String>,
        /// Only records about this target (a device id, a radio name).
        #[arg(long)]
        target: Option<String>,
    },
}

#[derive(Subcommand)]
enum SealCommand {
    /// Set up sealing: creates the seal key beside the database and prints the
    /// verification seed, once. Keep the seed off the gateway.
    Init {
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
        /// The database to seal (default: the config's).
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

/// --db, else the database of the config (--config or the default).
fn db_or_config(cli: &Cli, db: &Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    if let Some(db) = db {
        return Ok(db.clone());
    }
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    where_things_are(&path).map(|w| w.db)
}

/// The database the config names, if the config can be read (quietly: for telling
/// a gateway's own database from a copy given with `--db`).
fn configured_db(cli: &Cli) -> Option<PathBuf> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    Config::load_elsewhere(&path).ok().map(|c| c.db_path())
}

/// Where a command finds the daemon's socket and database.
struct Whereabouts {
    socket: PathBuf,
    db: PathBuf,
}

/// The config as far as a command needs it to find the socket or the database: the
/// host checks (radios' devices, secret files the service reads) are the daemon's
/// and `config check`'s, and a technician may not be allowed to read those files.
/// A config edited since the daemon started may not validate (a typo in a key the
/// command does not need): the socket and the database are then read from it as
/// they are, with a warning, so that the running daemon can still be reached.
fn where_things_are(path: &Path) -> Result<Whereabouts, ExitCode> {
    let e = match Config::load_elsewhere(path) {
        Ok(c) => {
            return Ok(Whereabouts {
                socket: c.socket_path().to_path_buf(),
                db: c.db_path(),
            })
        }
        Err(e) => e,
    };
    match as_written(path) {
        Some(w) => {
            eprintln!(
                "warning: {} (the daemon will refuse this config at its next start: see `fieldgate config check`); using its socket {} as written",
                fieldgate::output::clean(&e.to_string()),
                fieldgate::output::clean(&w.socket.display().to_string())
            );
            Ok(w)
        }
        None => {
            eprintln!(
                "error: {} (to reach a running daemon anyway, give its socket: fieldgate --socket PATH ...)",
                fieldgate::output::clean(&e.to_string())
            );
            Err(ExitCode::from(EXIT_CONFIG as u8))
        }
    }
}

/// `[api] socket` and `[gateway] state_dir` from a config that is TOML but does not
/// validate; `None` unless both are usable (absolute paths).
fn as_written(path: &Path) -> Option<Whereabouts> {
    let text = fieldgate::files::read_regular_text(path, 1024 * 1024).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let absolute = |v: Option<&toml::Value>| {
        v.and_then(toml::Value::as_str)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let state_dir = absolute(table.get("gateway").and_then(|g| g.get("state_dir")))?;
    let socket = match table.get("api").and_then(|a| a.get("socket")) {
        None => PathBuf::from(DEFAULT_SOCKET),
        given => absolute(given)?,
    };
    Some(Whereabouts {
        socket,
        db: state_dir.join("fieldgate.db"),
    })
}

/// The socket to talk to: --socket, else the config's, else the default.
fn socket_path(cli: &Cli) -> Result<PathBuf, ExitCode> {
    if let Some(s) = &cli.socket {
        return Ok(s.clone());
    }
    let config = cli.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG);
        default.exists().then_some(default)
    });
    match config {
        Some(path) => Ok(where_things_are(&path)?.socket),
        None => Ok(PathBuf::from(DEFAULT_SOCKET)),
    }
}

/// A `--timeout`: a duration from 1 s to 1 day.
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 30s, 5min)"))?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(86_400) {
        return Err(format!("`{s}` is out of range: from 1s to 1day"));
    }
    Ok(d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config {
        command: ConfigCommand::Check { path, elsewhere },
    } = &cli.command
    {
        let path = &path
            .clone()
            .or_else(|| cli.config.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let loaded = if *elsewhere {
            Config::load_elsewhere(path).inspect(|c| {
                for w in c.host_checks(path) {
                    eprintln!("warning: {w} (not checked: the config is for another host)");
                }
            })
        } else {
            Config::load(path)
        };
        return match loaded {
            Ok(c) => {
                fieldgate::outln!(
                    "{}: OK (gateway {}, {} radio(s))",
                    path.display(),
                    c.gateway_id(),
                    c.radios.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", fieldgate::output::clean(&e.to_string()));
                ExitCode::from(EXIT_CONFIG as u8)
            }
        };
    }
    if let Command::Decode { command } = &cli.command {
        return fieldgate::decode::command(command);
    }
    if let Command::Restore { backup, seed, json } = &cli.command {
        return restore(&cli, backup, seed.as_deref(), *json);
    }
    if let Command::Doctor {
        json,
        user,
        master_key,
        timeout,
    } = &cli.command
    {
        return doctor(&cli, *json, user, master_key, *timeout);
    }
    // tokio panics on a bad value; a mistyped drop-in is a configuration error.
    if let Some(v) = std::env::var_os("TOKIO_WORKER_THREADS") {
        let threads = v.to_str().and_then(|s| s.parse::<usize>().ok());
        if threads.unwrap_or(0) == 0 {
            eprintln!(
                "error: TOKIO_WORKER_THREADS is `{}`: it must be a number of threads, 1 or more (or unset: one per core)",
                fieldgate::output::clean(&v.to_string_lossy())
            );
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> ExitCode {
    let result = match &cli.command {
        Command::Run => {
            let Some(path) = cli
                .config
                .clone()
                .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)))
            else {
                return ExitCode::from(EXIT_CONFIG as u8);
            };
            // Under socket activation a start that fails answers the CLI waiting on
            // the socket (and so is not started again at once for it).
            let config = match Config::load(&path).and_then(|c| match c.start_checks(&path) {
                Some(e) => Err(e),
                None => Ok(c),
            }) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {}", fieldgate::output::clean(&e.to_string()));
                    fieldgate::api::refuse_pending(&e.to_string());
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            daemon::init_logging(config.gateway.log_level.get_ref());
            let db = config.db_path();
            let ran = daemon::run(config).await;
            if let Err(e) = &ran {
                fieldgate::api::refuse_pending(&format!("{e:#}"));
                // Starting again would find it as damaged: a setup error (exit 2, which
                // systemd does not restart), with what to do.
                if daemon::database_damaged(e) {
                    eprintln!("error: {}", fieldgate::output::clean(&format!("{e:#}")));
                    eprintln!(
                        "the database {} is damaged: restore the last backup (`fieldgate restore BACKUP`, docs/operations.md \"Backup and restore\"), or move it aside to start with an empty registry",
                        db.display()
                    );
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            }
            ran
        }
        Command::Demo { duration, mqtt } => demo::run_with_mqtt(*duration, mqtt.clone()).await,
        Command::Emulate {
            command: EmulateCommand::Zigbee { args, log_level },
        } => {
            daemon::init_logging(log_level);
            fieldgate::emulate::run_zigbee(args.clone()).await
        }
        Command::Emulate {
            command: EmulateCommand::Zwave { args, log_level },
        } => {
            daemon::init_logging(log_level);
            fieldgate::emulate::run_zwave(args.clone()).await
        }
        Command::Emulate {
            command: EmulateCommand::LoraGwmp { args, log_level },
        } => {
            daemon::init_logging(log_level);
            fieldgate::emulate::run_lora(args.clone()).await
        }
        Command::Emulate {
            command: EmulateCommand::LoraRak3172 { args, log_level },
        } => {
            daemon::init_logging(log_level);
            fieldgate::emulate::run_lora_rak(args.clone()).await
        }
        Command::Emulate {
            command: EmulateCommand::Ble { args },
        } => fieldgate::emulate::run_ble(args.clone()).await,
        Command::Config { .. } => unreachable_config(),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    json,
                    db,
                    seed: Some(seed),
                },
        } => match db_or_config(&cli, db) {
            Ok(path) => fieldgate::api::audit_cli::verify_with_seed(
                &path,
                seed,
                db.is_some(),
                configured_db(&cli).as_deref(),
                *json,
            ),
            Err(code) => return code,
        },
        Command::Audit {
            command:
                AuditCommand::Seal {
                    command: SealCommand::Init { json, db },
                },
        } => match db_or_config(&cli, db) {
            Ok(path) => fieldgate::api::audit_cli::seal_init(&path, *json),
            Err(code) => return code,
        },
        Command::Audit {
            command: AuditCommand::Verify {
                json, db: Some(db), ..
            },
        } => cli::audit_verify_offline(db, configured_db(&cli).as_deref(), *json),
        Command::Audit {
            command:
                AuditCommand::Tail {
                    n,
                    json,
                    db: Some(db),
                    action,
                    actor,
                    target,
                },
        } => cli::audit_tail_offline(db, *n, &audit_filter(action, actor, target), *json),
        Command::Policy {
            command: PolicyCommand::Sign { file, key },
        } => cli::policy_sign(file, key),
        Command::Policy {
            command: PolicyCommand::Keygen { out },
        } => cli::policy_keygen(out),
        _ => {
            let socket = match socket_path(&cli) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let api = ApiClient::new(&socket);
            let api = match cli.timeout {
                Some(t) => api.with_timeout(t),
                None => api,
            };
            // Commands that wait on a radio by design get longer, unless told otherwise.
            let radio_timeout = cli.timeout.unwrap_or(fieldgate::api::client::RADIO_TIMEOUT);
            match &cli.command {
                Command::Status { json } => cli::status(&api, *json).await,
                Command::Devices {
                    json,
                    lifecycle,
                    unhealthy,
                } => cli::devices(&api, *json, lifecycle.as_deref(), *unhealthy).await,
                Command::Set {
                    id,
                    action,
                    value,
                    json,
                } => cli::set(&api, id, action, *value, *json).await,
                Command::Configure {
                    id,
                    parameter,
                    value,
                    size,
                    json,
                } => cli::configure(&api, id, *parameter, *size, *value, *json).await,
                Command::Refresh {
                    id,
                    attributes,
                    json,
                } => cli::refresh(&api, id, attributes, *json).await,
                Command::Policy {
                    command: PolicyCommand::Apply { file, json },
                } => cli::policy_apply(&api, file, *json).await,
                Command::Policy {
                    command: PolicyCommand::Show { json },
                } => cli::policy_show(&api, *json).await,
                Command::Policy { .. } => Ok(()),
                Command::Upstream {
                    command: UpstreamCommand::RotateCert { cert, key, json },
                } => cli::upstream_rotate_cert(&api, cert, key, *json).await,
                Command::Device { id, json } => cli::device(&api, id, *json).await,
                Command::Pair {
                    radio,
                    seconds,
                    json,
                } => fieldgate::api::cli_pair::pair(&api, radio, *seconds, *json).await,
                Command::Remove {
                    id,
                    block: false,
                    json,
                } => cli::remove(&api, id, *json).await,
                Command::Remove {
                    id,
                    block: true,
                    json,
                } => fieldgate::api::cli_block::remove_and_block(&api, id, *json).await,
                Command::Readmit { id, json } => cli::readmit(&api, id, *json).await,
                Command::Adopt { id, bindkey, json } => {
                    fieldgate::api::cli_adopt::adopt(&api, id, bindkey.as_deref(), *json).await
                }
                Command::RotateBindkey { id, bindkey, json } => {
                    fieldgate::api::cli_adopt::rotate_bindkey(&api, id, bindkey, *json).await
                }
                Command::Radio {
                    command: RadioCmd::Backup { name, out },
                } => {
                    let api = api.with_timeout(radio_timeout);
                    // `-` is standard output, as elsewhere, not a file named `-`.
                    let out = out.as_deref().filter(|p| *p != Path::new("-"));
                    fieldgate::api::cli_radio::radio_backup(&api, name, out).await
                }
                Command::Radio {
                    command:
                        RadioCmd::Restore {
                            name,
                            input,
                            yes,
                            json,
                        },
                } => {
                    let api = api.with_timeout(radio_timeout);
                    fieldgate::api::cli_radio::radio_restore(&api, name, input, *yes, *json).await
                }
                Command::Radio {
                    command: RadioCmd::RotateKey { name, json },
                } => {
                    let api = api.with_timeout(radio_timeout);
                    cli::radio_rotate_key(&api, name, *json).await
                }
                Command::InstallCode {
                    command: InstallCodeCmd::Add { ieee, code, json },
                } => cli::install_code_add(&api, ieee, code, *json).await,
                Command::InstallCode {
                    command: InstallCodeCmd::List { json },
                } => cli::install_code_list(&api, *json).await,
                Command::InstallCode {
                    command: InstallCodeCmd::Remove { ieee, json },
                } => cli::install_code_remove(&api, ieee, *json).await,
                Command::Lora {
                    command:
                        LoraCmd::Add {
                            deveui,
                            joineui,
                            appkey,
                            devaddr,
                            nwkskey,
                            appskey,
                            decoder,
                            json,
                        },
                } => {
                    let keys = cli::LoraKeys {
                        dev_eui: deveui,
                        join_eui: joineui.as_deref(),
                        app_key: appkey.as_deref(),
                        dev_addr: devaddr.as_deref(),
                        nwk_s_key: nwkskey.as_deref(),
                        app_s_key: appskey.as_deref(),
                        decoder: decoder.as_deref(),
                    };
                    cli::lora_add(&api, &keys, *json).await
                }
                Command::Audit {
                    command: AuditCommand::Verify { json, .. },
                } => cli::audit_verify(&api, *json).await,
                Command::Audit {
                    command:
                        AuditCommand::Tail {
                            n,
                            json,
                            action,
                            actor,
                            target,
                            ..
                        },
                } => cli::audit_tail(&api, *n, &audit_filter(action, actor, target), *json).await,
                Command::Audit {
                    command: AuditCommand::Seal { .. },
                } => Ok(()),
                Command::Run
                | Command::Demo { .. }
                | Command::Emulate { .. }
                | Command::Config { .. }
                | Command::Decode { .. }
                | Command::Restore { .. }
                | Command::Doctor { .. } => Ok(()),
            }
        }
    };
    let verifying = matches!(
        cli.command,
        Command::Audit {
            command: AuditCommand::Verify { .. }
        }
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<VerifyFailed>() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", fieldgate::output::clean(&format!("{e:#}")));
            // `audit verify`: 1 is a log found broken; not being able to check is 3.
            if verifying {
                ExitCode::from(EXIT_NOT_CHECKED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `audit verify` could not check (no daemon, no database, a malformed seed): not a
/// verdict on the log, which exit code 1 is.
const EXIT_NOT_CHECKED: u8 = 3;

/// `fieldgate doctor`: synchronous, before any runtime starts.
fn doctor(
    cli: &Cli,
    json: bool,
    user: &str,
    master_key: &Option<PathBuf>,
    timeout: Duration,
) -> ExitCode {
    let mut opts = fieldgate::doctor::Options::new(
        cli.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
    );
    opts.user = user.to_string();
    if let Some(k) = master_key {
        opts.master_key = k.clone();
        opts.master_key_given = true;
    }
    opts.timeout = timeout;
    let report = fieldgate::doctor::run(&opts);
    let text = if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => format!("{text}\n"),
            Err(e) => {
                eprintln!("error: {}", fieldgate::output::clean(&e.to_string()));
                return ExitCode::FAILURE;
            }
        }
    } else {
        report.render()
    };
    // The exit code is the verdict whoever reads the report (`doctor | head`, or
    // nobody: `doctor > /dev/full`); a reader gone early does not turn it into 0.
    if let Err(e) = fieldgate::output::try_write_all(&text) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write the report: {e}");
        }
    }
    if report.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `fieldgate restore`: see [`fieldgate::restore`].
fn restore(cli: &Cli, backup: &Path, seed: Option<&str>, json: bool) -> ExitCode {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match Config::load_elsewhere(&path) {
        Ok(config) => fieldgate::restore::command(&config, backup, seed, json),
        Err(e) => {
            eprintln!("error: {}", fieldgate::output::clean(&e.to_string()));
            ExitCode::from(EXIT_CONFIG as u8)
        }
    }
}

fn unreachable_config() -> anyhow::Result<()> {
    // `config check` is handled before the runtime starts.
    Ok(())
}

/// What `audit tail` was asked to show.
fn audit_filter(
    action: &[String],
    actor: &Option<String>,
    target: &Option<String>,
) -> fieldgate::store::audit::AuditFilter {
    fieldgate::store::audit::AuditFilter {
        actions: action
            .iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect(),
        actor: actor.clone(),
        target: target.clone(),
    }
}
