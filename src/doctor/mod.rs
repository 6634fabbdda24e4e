//! `fieldgate doctor`: checks the host the way the service will meet it and says,
//! for each problem, what is wrong and the one thing to do about it.
//!
//! Owns the host checks: the config, the service user, each radio's port (serial
//! devices with their USB identity, tcp:// coordinators, BlueZ adapters), the broker
//! (TCP and a real TLS handshake with rustls), the clock, the state directory and its
//! free space, the API socket directory and the master key. It is synchronous and
//! read-only: it never opens a serial port (the daemon may hold it), never writes
//! anything but a probe file it removes at once, and never prints a secret.
//!
//! Access is judged for the *service user* (`fieldgate` unless `--user` says
//! otherwise) from owner, group and mode bits, adding the groups the unit grants
//! (`SupplementaryGroups=dialout bluetooth`). POSIX ACLs are not read. When the
//! systemd unit is installed, the checks also apply its sandbox: only
//! `/var/lib/fieldgate` is writable (the API socket comes from `fieldgate.socket`), `/home` is hidden and only
//! ttyUSB/ttyACM/ttyAMA devices may be opened.
//!
//! This file holds the entry point ([`run`]), the findings and their rendering.
//! The checks, one room each: `identity` (who the service runs as, the unit's
//! sandbox), `radios` (serial, tcp://, udp://, bluez:// ports), `bluez` (bluetoothd, the
//! adapter and the D-Bus policy, asked of BlueZ over the bus), `net` (resolving and
//! connecting with a timeout), `broker` (the upstream files, TCP and TLS to the
//! broker), `login` (an MQTT login with the configured credentials), `clock`, and `files` (config file, state dir, free space, API socket,
//! master key).

mod bluez;
mod broker;
mod clock;
mod files;
mod identity;
mod login;
mod net;
mod radios;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;

use broker::check_upstream;
use clock::check_clock;
use files::{
    check_free_space, check_master_key, check_readable_file, check_socket, check_state_dir,
};
use identity::{Identity, Sandbox};
use radios::check_radio;

/// The user the packaged unit runs the daemon as.
pub const SERVICE_USER: &str = "fieldgate";
/// Groups the unit adds with `SupplementaryGroups=`.
pub const UNIT_SUPPLEMENTARY_GROUPS: [&str; 2] = ["dialout", "bluetooth"];
/// The key file the unit loads with `LoadCredential=master-key:...`.
pub const DEFAULT_MASTER_KEY: &str = "/etc/fieldgate/master.key";
/// The credential name under `$CREDENTIALS_DIRECTORY`.
pub const MASTER_KEY_CREDENTIAL: &str = "master-key";
/// Places where the installed unit is looked for.
const UNIT_PATHS: [&str; 3] = [
    "/etc/systemd/system/fieldgate.service",
    "/usr/lib/systemd/system/fieldgate.service",
    "/lib/systemd/system/fieldgate.service",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One finding: what was checked, how it went, and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: impl Into<String>, message: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }
    fn warn(check: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(check: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What to check and as whom.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// The user the service runs as.
    pub user: String,
    /// Key file to check when `$CREDENTIALS_DIRECTORY` is not set.
    pub master_key: PathBuf,
    /// Whether `master_key` was given; otherwise the config's key file is checked.
    pub master_key_given: bool,
    /// Per network operation (resolve, connect, TLS handshake).
    pub timeout: Duration,
}

impl Options {
    pub fn new(config: PathBuf) -> Options {
        Options {
            config,
            user: SERVICE_USER.to_string(),
            master_key: PathBuf::from(DEFAULT_MASTER_KEY),
            master_key_given: false,
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: PathBuf,
    pub user: String,
    /// Whether the systemd unit was found, so its sandbox was taken into account.
    pub unit_installed: bool,
    pub healthy: bool,
    pub summary: Summary,
    pub checks: Vec<Check>,
}

impl Report {
    fn new(opts: &Options, unit_installed: bool, checks: Vec<Check>) -> Report {
        let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
        let summary = Summary {
            ok: count(Status::Ok),
            warn: count(Status::Warn),
            fail: count(Status::Fail),
        };
        Report {
            config: opts.config.clone(),
            user: opts.user.clone(),
            unit_installed,
            healthy: summary.fail == 0,
            summary,
            checks,
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.check.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = format!(
            "fieldgate doctor: {} (service user {}{})\n",
            self.config.display(),
            self.user,
            if self.unit_installed {
                ", systemd unit installed"
            } else {
                ""
            }
        );
        for c in &self.checks {
            out.push_str(&format!(
                "  {:<4}  {:<width$}  {}\n",
                c.status.to_string(),
                c.check,
                c.message
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("        {:<width$}  fix: {}\n", "", fix));
            }
        }
        out.push_str(&format!(
            "doctor: {} ok, {} warning(s), {} failure(s)\n",
            self.summary.ok, self.summary.warn, self.summary.fail
        ));
        out
    }
}

/// Runs every check.
pub fn run(opts: &Options) -> Report {
    let unit_installed = UNIT_PATHS.iter().any(|p| Path::new(p).exists());
    let sandbox = Sandbox {
        active: unit_installed,
    };
    let mut checks = Vec::new();
    let (identity, user_check) = Identity::resolve(&opts.user);
    // The api group is checked below with the socket, with a fix to apply.
    let config = match Config::load_elsewhere(&opts.config) {
        Ok(c) => {
            let enabled = c.radios.iter().filter(|r| r.enabled).count();
            checks.push(Check::ok(
                "config",
                format!(
                    "{}: valid (gateway {}, {} radio(s), {} enabled, {})",
                    opts.config.display(),
                    c.gateway_id(),
                    c.radios.len(),
                    enabled,
                    if c.upstream.is_some() {
                        "upstream configured"
                    } else {
                        "offline: no [upstream]"
                    }
                ),
            ));
            if let Some(c) = check_readable_file("config file", &opts.config, &identity, &sandbox) {
                checks.push(c);
            }
            Some(c)
        }
        Err(e) => {
            checks.push(Check::fail(
                "config",
                e.to_string(),
                format!(
                    "edit {} and re-run `fieldgate config check {}`",
                    opts.config.display(),
                    opts.config.display()
                ),
            ));
            None
        }
    };
    checks.push(user_check);
    if let Some(config) = &config {
        let daemon = radios::running_daemon(&config.db_path());
        for radio in &config.radios {
            checks.push(check_radio(
                radio,
                &identity,
                &sandbox,
                opts.timeout,
                daemon,
            ));
            if radio.enabled && radio.protocol == crate::config::Protocol::LoraP2p {
                let options = crate::radio::lora_p2p::P2pOptions::parse(radio.options.get_ref());
                if let Some(file) = options.ok().and_then(|o| o.encryption_key_file) {
                    checks.push(files::check_p2p_key_file(
                        radio.name.get_ref(),
                        &file,
                        &identity,
                        &sandbox,
                    ));
                }
            }
        }
        let scans_through_bluez = config
            .radios
            .iter()
            .any(|r| r.enabled && matches!(r.port_spec(), crate::config::PortSpec::Bluez(_)));
        if scans_through_bluez {
            checks.push(bluez::check_policy(&identity));
        }
        checks.extend(check_upstream(
            config.upstream.as_ref(),
            config.gateway_id(),
            &identity,
            &sandbox,
            opts.timeout,
        ));
    }
    checks.push(check_clock());
    if let Some(config) = &config {
        checks.push(check_state_dir(config, &identity, &sandbox));
        checks.push(check_free_space(config));
        checks.push(check_socket(config, &identity, &sandbox));
    }
    match (&config, opts.master_key_given) {
        (Some(c), false) => checks.push(check_master_key(&c.master_key_path(), &identity)),
        (None, false) => checks.push(Check::warn(
            "master key",
            "not checked: the config did not load, so which key file it names is unknown",
            "fix the config, or name the key with --master-key",
        )),
        (_, true) => checks.push(check_master_key(&opts.master_key, &identity)),
    }
    Report::new(opts, unit_installed, checks)
}
