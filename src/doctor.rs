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

use std::fmt;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;

use crate::config::{Config, PortSpec, UpstreamConfig};

/// The user the packaged unit runs the daemon as.
pub const SERVICE_USER: &str = "fieldgate";
/// Groups the unit adds with `SupplementaryGroups=`.
pub const UNIT_SUPPLEMENTARY_GROUPS: [&str; 2] = ["dialout", "bluetooth"];
/// The key file the unit loads with `LoadCredential=master-key:...`.
pub const DEFAULT_MASTER_KEY: &str = "/etc/fieldgate/master.key";
/// The credential name under `$CREDENTIALS_DIRECTORY`.
pub const MASTER_KEY_CREDENTIAL: &str = "master-key";
/// Where the packaged unit may write (StateDirectory=); the API socket in
/// /run/fieldgate is made by fieldgate.socket, not by the daemon.
const UNIT_STATE_DIR: &str = "/var/lib/fieldgate";
/// Device name prefixes the unit's `DeviceAllow=` lines cover.
const UNIT_DEVICE_PREFIXES: [&str; 3] = ["ttyUSB", "ttyACM", "ttyAMA"];
/// Places where the installed unit is looked for.
const UNIT_PATHS: [&str; 3] = [
    "/etc/systemd/system/fieldgate.service",
    "/usr/lib/systemd/system/fieldgate.service",
    "/lib/systemd/system/fieldgate.service",
];
/// Places where the installed socket unit is looked for: with it, systemd
/// creates the API socket and hands it to the daemon.
const SOCKET_UNIT_PATHS: [&str; 3] = [
    "/etc/systemd/system/fieldgate.socket",
    "/usr/lib/systemd/system/fieldgate.socket",
    "/lib/systemd/system/fieldgate.socket",
];
/// Free space below this in the state directory is a failure whatever the config.
const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// 2024-01-01T00:00:00Z: a clock before this is certainly wrong.
const EARLIEST_SANE_TIME: u64 = 1_704_067_200;

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
    /// Per network operation (resolve, connect, TLS handshake).
    pub timeout: Duration,
}

impl Options {
    pub fn new(config: PathBuf) -> Options {
        Options {
            config,
            user: SERVICE_USER.to_string(),
            master_key: PathBuf::from(DEFAULT_MASTER_KEY),
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
        for radio in &config.radios {
            checks.push(check_radio(radio, &identity, &sandbox, opts.timeout));
        }
        checks.extend(check_upstream(
            config.upstream.as_ref(),
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
    checks.push(check_master_key(opts));
    Report::new(opts, unit_installed, checks)
}

/// The packaged unit's sandbox, applied only when the unit is installed.
struct Sandbox {
    active: bool,
}

impl Sandbox {
    fn writable(&self, path: &Path) -> bool {
        !self.active || path.starts_with(UNIT_STATE_DIR)
    }
    fn hidden(&self, path: &Path) -> bool {
        self.active
            && (path.starts_with("/home")
                || path.starts_with("/root")
                || path.starts_with("/run/user"))
    }
}

// ---------------------------------------------------------------------------
// Who the service runs as, and what it may touch.

struct Identity {
    name: String,
    /// The user fixes should name: the service user even when it does not exist yet.
    owner: String,
    uid: u32,
    gids: Vec<u32>,
}

impl Identity {
    /// The service user with the unit's supplementary groups; the current user when
    /// the service user does not exist (with a warning saying so).
    fn resolve(name: &str) -> (Identity, Check) {
        let unit_gids: Vec<u32> = UNIT_SUPPLEMENTARY_GROUPS
            .iter()
            .filter_map(|g| nix::unistd::Group::from_name(g).ok().flatten())
            .map(|g| g.gid.as_raw())
            .collect();
        match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => {
                let mut gids = vec![user.gid.as_raw()];
                if let Ok(cname) = std::ffi::CString::new(name) {
                    if let Ok(list) = nix::unistd::getgrouplist(&cname, user.gid) {
                        gids.extend(list.into_iter().map(|g| g.as_raw()));
                    }
                }
                gids.extend(unit_gids);
                gids.sort_unstable();
                gids.dedup();
                let id = Identity {
                    name: name.to_string(),
                    owner: name.to_string(),
                    uid: user.uid.as_raw(),
                    gids,
                };
                let check = Check::ok(
                    "service user",
                    format!("{} (uid {}; groups {})", id.name, id.uid, id.group_names()),
                );
                (id, check)
            }
            _ => {
                let uid = nix::unistd::geteuid();
                let mut gids: Vec<u32> = nix::unistd::getgroups()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|g| g.as_raw())
                    .collect();
                gids.push(nix::unistd::getegid().as_raw());
                gids.sort_unstable();
                gids.dedup();
                let current = nix::unistd::User::from_uid(uid)
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_else(|| uid.to_string());
                let id = Identity {
                    name: current,
                    owner: name.to_string(),
                    uid: uid.as_raw(),
                    gids,
                };
                let check = Check::warn(
                    "service user",
                    format!(
                        "user `{name}` does not exist; checking access as `{}` instead",
                        id.name
                    ),
                    if name == SERVICE_USER {
                        "install the package, or run `systemd-sysusers /usr/lib/sysusers.d/fieldgate.conf`"
                            .to_string()
                    } else {
                        format!("create `{name}` or pass the right --user")
                    },
                );
                (id, check)
            }
        }
    }

    fn group_names(&self) -> String {
        self.gids
            .iter()
            .map(|g| group_name(*g))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the mode bits of `meta` grant `want` (r=4, w=2, x=1) to this user.
    fn allowed(&self, meta: &fs::Metadata, want: u32) -> bool {
        let mode = meta.mode();
        if self.uid == 0 {
            // root bypasses read/write checks; execute needs some x bit on files.
            return want & 1 == 0 || meta.is_dir() || mode & 0o111 != 0;
        }
        let bits = if meta.uid() == self.uid {
            mode >> 6
        } else if self.gids.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        } & 7;
        bits & want == want
    }

    /// Whether every existing directory above `path` can be searched; the first that
    /// cannot is the error.
    fn can_reach(&self, path: &Path) -> Result<(), String> {
        let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
        ancestors.reverse();
        for dir in ancestors {
            if dir.as_os_str().is_empty() {
                continue;
            }
            if let Ok(meta) = fs::metadata(dir) {
                if !self.allowed(&meta, 1) {
                    return Err(format!(
                        "{} cannot enter {} ({})",
                        self.name,
                        dir.display(),
                        describe_owner(&meta)
                    ));
                }
            }
        }
        Ok(())
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string())
}

/// `root:dialout 0660`
fn describe_owner(meta: &fs::Metadata) -> String {
    format!(
        "{}:{} {:04o}",
        user_name(meta.uid()),
        group_name(meta.gid()),
        meta.mode() & 0o7777
    )
}

/// A file the daemon must read (config, CA, password): present and readable.
fn check_readable_file(what: &str, path: &Path, id: &Identity, sandbox: &Sandbox) -> Option<Check> {
    let name = what.to_string();
    if sandbox.hidden(path) {
        return Some(Check::fail(
            name,
            format!(
                "{} is under a home directory, which the unit hides (ProtectHome=yes)",
                path.display()
            ),
            "move it under /etc/fieldgate",
        ));
    }
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Some(Check::fail(
                name,
                format!("{}: {}", path.display(), io_reason(&e)),
                format!("create {} or fix the path in the config", path.display()),
            ))
        }
    };
    if let Err(why) = id.can_reach(path) {
        return Some(Check::fail(
            name,
            why,
            format!("chmod o+x the directories above {}", path.display()),
        ));
    }
    if !id.allowed(&meta, 4) {
        return Some(Check::fail(
            name,
            format!(
                "{} cannot read {} ({})",
                id.name,
                path.display(),
                describe_owner(&meta)
            ),
            format!(
                "chgrp {} {} && chmod g+r {}",
                SERVICE_USER,
                path.display(),
                path.display()
            ),
        ));
    }
    // Readable: only worth a line of its own when something is wrong.
    None
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "does not exist".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Radios.

fn check_radio(
    radio: &crate::config::RadioConfig,
    id: &Identity,
    sandbox: &Sandbox,
    timeout: Duration,
) -> Check {
    let name = format!("radio {}", radio.name.get_ref());
    if !radio.enabled {
        return Check::ok(
            name,
            format!(
                "{} {}: disabled (not opened)",
                radio.protocol,
                radio.port.get_ref()
            ),
        );
    }
    match radio.port_spec() {
        PortSpec::Serial(path) => check_serial(name, &path, id, sandbox),
        PortSpec::Tcp { host, port } => match connect(&host, port, timeout) {
            Ok(addr) => Check::ok(
                name,
                format!("tcp://{host}:{port} reachable ({addr})"),
            ),
            Err(e) => Check::fail(
                name,
                format!("tcp://{host}:{port} unreachable: {e}"),
                "check that the coordinator (or ser2net) is running and listening there; test with `nc -vz HOST PORT`",
            ),
        },
        PortSpec::Udp { bind, port } => check_udp_bind(name, &bind, port),
        PortSpec::Sim(p) => Check::ok(
            name,
            format!("sim://{p}: built-in emulator, no hardware needed"),
        ),
        PortSpec::Bluez(adapter) => check_bluez(name, &adapter),
    }
}

fn check_serial(name: String, path: &Path, id: &Identity, sandbox: &Sandbox) -> Check {
    let shown = path.display().to_string();
    let target = match fs::canonicalize(path) {
        Ok(t) => t,
        Err(e) => {
            let fix = match serial_by_id() {
                list if list.is_empty() => {
                    "plug the radio in (no USB serial device is present: /dev/serial/by-id is empty)"
                        .to_string()
                }
                list => format!(
                    "plug the radio in, or set `port` to one of /dev/serial/by-id/{}",
                    list.join(", /dev/serial/by-id/")
                ),
            };
            return Check::fail(name, format!("{shown}: {}", io_reason(&e)), fix);
        }
    };
    let meta = match fs::metadata(&target) {
        Ok(m) => m,
        Err(e) => {
            return Check::fail(
                name,
                format!("{shown}: {}", io_reason(&e)),
                "plug the radio in or fix `port`",
            )
        }
    };
    if !meta.file_type().is_char_device() {
        return Check::fail(
            name,
            format!("{shown} is not a character device"),
            "`port` must name a serial device, e.g. /dev/serial/by-id/...",
        );
    }
    let dev_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut what = vec![if target.as_path() == path {
        shown.clone()
    } else {
        format!("{shown} -> {}", target.display())
    }];
    if let Some(usb) = usb_identity(&dev_name) {
        what.push(usb);
    }
    what.push(describe_owner(&meta));
    let described = what.join(", ");

    if let Err(why) = id.can_reach(&target) {
        return Check::fail(
            name,
            format!("{described}: {why}"),
            "fix the directory permissions",
        );
    }
    if !id.allowed(&meta, 6) {
        return Check::fail(
            name,
            format!("{described}: {} cannot read and write it", id.name),
            format!(
                "give the device group dialout (udev rule: SUBSYSTEM==\"tty\", KERNEL==\"{dev_name}\", GROUP=\"dialout\", MODE=\"0660\") or add {} to group {}",
                id.owner,
                group_name(meta.gid())
            ),
        );
    }
    if sandbox.active && !UNIT_DEVICE_PREFIXES.iter().any(|p| dev_name.starts_with(p)) {
        return Check::warn(
            name,
            format!("{described}: the unit's DeviceAllow= does not cover {dev_name}"),
            format!(
                "`systemctl edit fieldgate` and add: [Service] DeviceAllow={} rw",
                target.display()
            ),
        );
    }
    if !path.starts_with("/dev/serial/by-id") {
        if let Some(stable) = by_id_for(&target) {
            return Check::warn(
                name,
                format!("{described}: the kernel name can change when radios are re-plugged"),
                format!("set `port = \"{}\"`", stable.display()),
            );
        }
    }
    Check::ok(name, described)
}

/// Names in /dev/serial/by-id.
fn serial_by_id() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/dev/serial/by-id")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The /dev/serial/by-id link that points at `device`, if any.
fn by_id_for(device: &Path) -> Option<PathBuf> {
    let dir = Path::new("/dev/serial/by-id");
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| fs::canonicalize(p).ok().as_deref() == Some(device))
}

/// "USB 10c4:ea60 Silicon Labs CP2102N (serial 1234, driver cp210x)" from sysfs.
fn usb_identity(dev_name: &str) -> Option<String> {
    usb_identity_in(Path::new("/sys"), dev_name)
}

fn usb_identity_in(sys: &Path, dev_name: &str) -> Option<String> {
    let device = fs::canonicalize(sys.join("class/tty").join(dev_name).join("device")).ok()?;
    let devices = fs::canonicalize(sys.join("devices")).ok()?;
    let driver = fs::canonicalize(device.join("driver"))
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    let read = |dir: &Path, f: &str| {
        fs::read_to_string(dir.join(f))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let usb = device
        .ancestors()
        .take_while(|d| d.starts_with(&devices))
        .find(|d| d.join("idVendor").is_file());
    let mut parts = Vec::new();
    if let Some(usb) = usb {
        let vendor = read(usb, "idVendor").unwrap_or_default();
        let product = read(usb, "idProduct").unwrap_or_default();
        let mut s = format!("USB {vendor}:{product}");
        let names: Vec<String> = ["manufacturer", "product"]
            .iter()
            .filter_map(|f| read(usb, f))
            .collect();
        if !names.is_empty() {
            s.push(' ');
            s.push_str(&names.join(" "));
        }
        if let Some(hint) = known_radio(&vendor, &product) {
            s.push_str(&format!(" [likely {hint}]"));
        }
        parts.push(s);
        if let Some(serial) = read(usb, "serial") {
            parts.push(format!("serial {serial}"));
        }
    }
    if let Some(driver) = driver {
        parts.push(format!("driver {driver}"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// USB ids of common coordinator sticks (vendor:product as in lsusb).
fn known_radio(vendor: &str, product: &str) -> Option<&'static str> {
    Some(match (vendor, product) {
        ("10c4", "ea60") => {
            "CP210x bridge: Sonoff ZBDongle-P, SkyConnect, many Zigbee/Z-Wave sticks"
        }
        ("1a86", "55d4") => "CH9102 bridge: Sonoff ZBDongle-E",
        ("1a86", "7523") => "CH340 bridge: RAK/LoRa modules and clones",
        ("0451", "16a8") => "TI CC2531 Zigbee stick",
        ("0451", "bef3") => "TI CC1352/CC2652 LaunchXL",
        ("0658", "0200") => "Z-Wave 500/700 stick (Aeotec Z-Stick, UZB)",
        ("1cf1", "0030") => "dresden elektronik ConBee II",
        ("10c4", "8a2a") => "Nortek HUSBZB-1 (Zigbee + Z-Wave)",
        ("0403", "6001") | ("0403", "6015") => "FTDI bridge",
        _ => return None,
    })
}

fn check_udp_bind(name: String, bind: &str, port: u16) -> Check {
    match UdpSocket::bind((bind, port)) {
        Ok(_) => Check::ok(name, format!("udp://{bind}:{port} can be bound")),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Check::ok(
            name,
            format!("udp://{bind}:{port} is in use (by the running daemon, if it is up)"),
        ),
        Err(e) => Check::fail(
            name,
            format!("udp://{bind}:{port} cannot be bound: {e}"),
            "use an address of this host (0.0.0.0 for all) and a free port",
        ),
    }
}

fn check_bluez(name: String, adapter: &str) -> Check {
    if !Path::new("/sys/class/bluetooth").join(adapter).exists() {
        return Check::fail(
            name,
            format!("bluez://{adapter}: no such Bluetooth adapter"),
            "check `bluetoothctl list` and `rfkill list`; `rfkill unblock bluetooth` if blocked",
        );
    }
    if !Path::new("/run/dbus/system_bus_socket").exists() {
        return Check::fail(
            name,
            format!("bluez://{adapter}: the D-Bus system bus is not running"),
            "apt install dbus bluez",
        );
    }
    Check::ok(name, format!("bluez://{adapter}: adapter present"))
}

// ---------------------------------------------------------------------------
// Network.

/// Resolves with a timeout (getaddrinfo has none of its own).
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = mpsc::channel();
    let target = (host.to_string(), port);
    std::thread::spawn(move || {
        let _ = tx.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("`{host}` resolves to no address")),
        Ok(Err(e)) => Err(format!("cannot resolve `{host}`: {e}")),
        Err(_) => Err(format!(
            "resolving `{host}` took more than {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Connects to the first address that answers.
fn connect(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, String> {
    connect_stream(host, port, timeout).map(|(_, addr)| addr)
}

fn connect_stream(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), String> {
    let mut last = String::from("no address");
    for addr in resolve(host, port, timeout)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok((s, addr)),
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
            {
                last = format!(
                    "{addr}: no answer within {}",
                    humantime::format_duration(timeout)
                )
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

fn check_upstream(
    upstream: Option<&UpstreamConfig>,
    id: &Identity,
    sandbox: &Sandbox,
    timeout: Duration,
) -> Vec<Check> {
    let Some(up) = upstream else {
        return vec![Check::ok(
            "broker",
            "no [upstream]: offline mode, everything waits in the outbox",
        )];
    };
    let mut checks = Vec::new();
    for (what, file) in [
        ("upstream.password_file", &up.password_file),
        ("upstream.ca_file", &up.ca_file),
        ("upstream.client_cert", &up.client_cert),
        ("upstream.client_key", &up.client_key),
    ] {
        if let Some(path) = file {
            if let Some(c) = check_readable_file(what, path, id, sandbox) {
                checks.push(c);
            }
        }
    }
    checks.push(check_broker(up, timeout));
    checks
}

fn check_broker(up: &UpstreamConfig, timeout: Duration) -> Check {
    let raw = up.url.get_ref();
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => return Check::fail("broker", format!("`{raw}`: {e}"), "fix upstream.url"),
    };
    let tls = url.scheme() == "mqtts";
    let Some(host) = url
        .host_str()
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').to_string())
    else {
        return Check::fail("broker", format!("`{raw}` has no host"), "fix upstream.url");
    };
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    let (stream, addr) = match connect_stream(&host, port, timeout) {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                "broker",
                format!("{raw}: cannot connect: {e}"),
                "check upstream.url, DNS, the route and the firewall (`nc -vz HOST PORT`); the gateway keeps working offline meanwhile",
            )
        }
    };
    if !tls {
        return Check::ok(
            "broker",
            format!("{raw} reachable ({addr}), plaintext MQTT"),
        );
    }
    match tls_handshake(up, &host, stream, timeout) {
        Ok(detail) => Check::ok("broker", format!("{raw} reachable ({addr}), {detail}")),
        Err((message, fix)) => Check::fail("broker", format!("{raw}: {message}"), fix),
    }
}

type Failure = (String, String);

fn tls_config(up: &UpstreamConfig) -> Result<rustls::ClientConfig, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    match &up.ca_file {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    (
                        format!("cannot read CA file {}: {e}", ca.display()),
                        "upstream.ca_file must hold PEM certificates".to_string(),
                    )
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err((
                    format!("no usable certificate in {}", ca.display()),
                    "upstream.ca_file must hold the broker's CA in PEM".to_string(),
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err((
                    "no system CA certificates found".to_string(),
                    "apt install ca-certificates, or set upstream.ca_file".to_string(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            (
                format!("TLS setup failed: {e}"),
                "report this as a bug".to_string(),
            )
        })?
        .with_root_certificates(roots);
    match (&up.client_cert, &up.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    (
                        format!("cannot read client certificate {}: {e}", cert.display()),
                        "upstream.client_cert must be a PEM certificate chain".to_string(),
                    )
                })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                (
                    format!("cannot read client key {}: {e}", key.display()),
                    "upstream.client_key must be a PEM private key".to_string(),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                (
                    format!("client certificate and key do not fit: {e}"),
                    "check that upstream.client_key belongs to upstream.client_cert".to_string(),
                )
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A full TLS handshake that validates the broker's certificate.
fn tls_handshake(
    up: &UpstreamConfig,
    host: &str,
    mut stream: TcpStream,
    timeout: Duration,
) -> Result<String, Failure> {
    let config = tls_config(up)?;
    let server_name = ServerName::try_from(host.to_string()).map_err(|e| {
        (
            format!("`{host}` is not a valid TLS server name: {e}"),
            "use the broker's DNS name in upstream.url".to_string(),
        )
    })?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).map_err(|e| {
        (
            format!("TLS setup failed: {e}"),
            "report this as a bug".to_string(),
        )
    })?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut stream) {
            return Err(explain_tls_error(&e, up, host));
        }
    }
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|| "TLS".into());
    Ok(format!(
        "{} handshake OK, certificate valid for {host} ({})",
        version.replace('_', "."),
        if up.ca_file.is_some() {
            "upstream.ca_file"
        } else {
            "system CAs"
        }
    ))
}

fn explain_tls_error(e: &io::Error, up: &UpstreamConfig, host: &str) -> Failure {
    use rustls::CertificateError as C;
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let ca_hint = match &up.ca_file {
        Some(ca) => format!("upstream.ca_file ({})", ca.display()),
        None => "the system CAs".to_string(),
    };
    match tls {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            let (why, fix) = match cert {
                C::UnknownIssuer => (
                    format!("certificate not signed by {ca_hint}"),
                    "set upstream.ca_file to the CA that signed the broker's certificate"
                        .to_string(),
                ),
                C::NotValidForName | C::NotValidForNameContext { .. } => (
                    format!("certificate is not valid for `{host}`"),
                    "use the host name the certificate was issued for in upstream.url".to_string(),
                ),
                C::Expired | C::ExpiredContext { .. } => (
                    "certificate has expired".to_string(),
                    "renew the broker's certificate (and check the clock)".to_string(),
                ),
                C::NotValidYet | C::NotValidYetContext { .. } => (
                    "certificate is not valid yet".to_string(),
                    "check this gateway's clock (timedatectl)".to_string(),
                ),
                other => (
                    format!("certificate rejected: {other:?}"),
                    format!("check the broker's certificate against {ca_hint}"),
                ),
            };
            (format!("TLS handshake failed: {why}"), fix)
        }
        Some(other) => (
            format!("TLS handshake failed: {other}"),
            "check that the port speaks MQTT over TLS (8883) and the TLS settings".to_string(),
        ),
        None if matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) =>
        {
            (
                "TLS handshake timed out".to_string(),
                "check that the port speaks TLS (mqtts:// is usually 8883)".to_string(),
            )
        }
        None => (
            format!("TLS handshake failed: {e}"),
            "check that the port speaks TLS (mqtts:// is usually 8883)".to_string(),
        ),
    }
}

// ---------------------------------------------------------------------------
// Clock, disk, directories, key.

fn check_clock() -> Check {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let shown = humantime::format_rfc3339_seconds(now).to_string();
    let fix = "set the time: `timedatectl set-ntp true` (or set it by hand with `date -s`)";
    if secs < EARLIEST_SANE_TIME {
        return Check::fail(
            "clock",
            format!("{shown} is before 2024: TLS certificates and timestamps will be wrong"),
            fix,
        );
    }
    let binary_time = std::env::current_exe()
        .and_then(fs::metadata)
        .and_then(|m| m.modified())
        .ok();
    if let Some(built) = binary_time {
        if now < built {
            return Check::fail(
                "clock",
                format!(
                    "{shown} is earlier than this fieldgate binary ({})",
                    humantime::format_rfc3339_seconds(built)
                ),
                fix,
            );
        }
    }
    let synced = Path::new("/run/systemd/timesync/synchronized").exists();
    Check::ok(
        "clock",
        format!("{shown}{}", if synced { " (NTP-synchronized)" } else { "" }),
    )
}

fn check_state_dir(config: &Config, id: &Identity, sandbox: &Sandbox) -> Check {
    let name = "state dir";
    let dir = config.gateway.state_dir.get_ref().as_path();
    let shown = dir.display();
    if !sandbox.writable(dir) {
        return Check::warn(
            name,
            format!("{shown} is read-only for the service (ProtectSystem=strict)"),
            format!(
                "use {UNIT_STATE_DIR}, or `systemctl edit fieldgate` and add: [Service] ReadWritePaths={shown}"
            ),
        );
    }
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if sandbox.active && dir == Path::new(UNIT_STATE_DIR) {
                return Check::ok(
                    name,
                    format!(
                        "{shown} does not exist yet: systemd creates it at start (StateDirectory=)"
                    ),
                );
            }
            return Check::fail(
                name,
                format!("{shown} does not exist"),
                format!(
                    "install -d -o {user} -g {user} -m 0750 {shown}",
                    user = id.owner
                ),
            );
        }
        Err(e) => {
            return Check::fail(
                name,
                format!("{shown}: {}", io_reason(&e)),
                "fix gateway.state_dir",
            )
        }
    };
    if !meta.is_dir() {
        return Check::fail(
            name,
            format!("{shown} is not a directory"),
            "point gateway.state_dir at a directory",
        );
    }
    let chown_fix = format!("chown -R {user}:{user} {shown}", user = id.owner);
    if let Err(why) = id.can_reach(dir) {
        return Check::fail(name, why, chown_fix);
    }
    if !id.allowed(&meta, 7) {
        return Check::fail(
            name,
            format!(
                "{} cannot write to {shown} ({})",
                id.name,
                describe_owner(&meta)
            ),
            chown_fix,
        );
    }
    // The bits say yes; now the filesystem (read-only mounts, full disks).
    if let Err(e) = tempfile::Builder::new()
        .prefix(".fieldgate-doctor")
        .tempfile_in(dir)
    {
        if e.kind() != io::ErrorKind::PermissionDenied {
            return Check::fail(
                name,
                format!("cannot create a file in {shown}: {e}"),
                "check that the filesystem is mounted read-write and not full",
            );
        }
    }
    let db = config.db_path();
    let db_note = match fs::metadata(&db) {
        Ok(m) => format!("; {} is {}", db.display(), human_bytes(m.len())),
        Err(_) => "; no database yet (created at first start)".to_string(),
    };
    Check::ok(
        name,
        format!(
            "{shown} writable by {} ({}){db_note}",
            id.name,
            describe_owner(&meta)
        ),
    )
}

fn check_free_space(config: &Config) -> Check {
    let name = "disk space";
    let dir = config.gateway.state_dir.get_ref();
    let Some(existing) = dir.ancestors().find(|d| d.exists()) else {
        return Check::fail(
            name,
            format!("no part of {} exists", dir.display()),
            "fix gateway.state_dir",
        );
    };
    let stat = match nix::sys::statvfs::statvfs(existing) {
        Ok(s) => s,
        Err(e) => {
            return Check::warn(
                name,
                format!("cannot measure free space at {}: {e}", existing.display()),
                "check with `df -h`",
            )
        }
    };
    let free = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
    let outbox = config
        .upstream
        .as_ref()
        .map(|u| *u.outbox.max_bytes.get_ref());
    let shown = existing.display();
    if free < MIN_FREE_BYTES {
        return Check::fail(
            name,
            format!(
                "only {} free at {shown}: the database cannot grow",
                human_bytes(free)
            ),
            "free some space (`du -sh /var/log/* /var/cache/*`) or move the state directory",
        );
    }
    match outbox {
        Some(max) if free < max => Check::warn(
            name,
            format!(
                "{} free at {shown}, less than upstream.outbox.max_bytes ({}): a long uplink outage fills the disk first",
                human_bytes(free),
                human_bytes(max)
            ),
            "free space, or lower upstream.outbox.max_bytes",
        ),
        Some(max) => Check::ok(
            name,
            format!(
                "{} free at {shown} (outbox may use up to {})",
                human_bytes(free),
                human_bytes(max)
            ),
        ),
        None => Check::ok(name, format!("{} free at {shown}", human_bytes(free))),
    }
}

/// The `ListenStream=` path of the installed `fieldgate.socket`, if there is one.
fn socket_unit_path() -> Option<(PathBuf, Option<PathBuf>)> {
    let unit = SOCKET_UNIT_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.exists())?;
    let text = fs::read_to_string(unit).unwrap_or_default();
    let listen = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ListenStream="))
        .map(|v| PathBuf::from(v.trim()))
        .find(|p| p.is_absolute());
    Some((unit.to_path_buf(), listen))
}

/// The socket belongs to `fieldgate.socket`: systemd creates it (owner, group,
/// mode) and the daemon only serves it, so the directory need not be writable for
/// the service user. What matters is that the CLI's path (`[api] socket`) is the
/// one systemd listens on.
fn check_activated_socket(config: &Config, unit: &Path, listen: Option<PathBuf>) -> Check {
    let name = "api socket";
    let socket = config.socket_path();
    let shown = socket.display();
    let Some(listen) = listen else {
        return Check::fail(
            name,
            format!("{} has no ListenStream= path", unit.display()),
            "reinstall the package, or fix the socket unit's drop-in",
        );
    };
    if listen != socket {
        return Check::fail(
            name,
            format!(
                "systemd listens on {} ({}) but api.socket is {shown}: the CLI would not find the daemon",
                listen.display(),
                unit.display()
            ),
            format!(
                "set api.socket = \"{}\", or `systemctl edit fieldgate.socket` to listen on {shown}",
                listen.display()
            ),
        );
    }
    let mut notes = vec!["created by systemd (fieldgate.socket)".to_string()];
    if let Ok(meta) = fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Check::fail(
                name,
                format!("{shown} exists and is not a socket"),
                format!("rm {shown} && systemctl restart fieldgate.socket"),
            );
        }
        if meta.mode() & 0o007 != 0 {
            return Check::fail(
                name,
                format!(
                    "{shown} is open to every user (mode {:o})",
                    meta.mode() & 0o777
                ),
                "SocketMode=0660 in fieldgate.socket, then systemctl restart fieldgate.socket",
            );
        }
        notes.push(describe_owner(&meta));
        if let Some(group) = &config.api.group {
            let want = nix::unistd::Group::from_name(group.get_ref())
                .ok()
                .flatten();
            if want.map(|g| g.gid.as_raw()) != Some(meta.gid()) {
                return Check::warn(
                    name,
                    format!(
                        "{shown} is {} but api.group is `{}`: members of that group cannot reach it",
                        describe_owner(&meta),
                        group.get_ref()
                    ),
                    format!(
                        "`systemctl edit fieldgate.socket`: [Socket] SocketGroup={}",
                        group.get_ref()
                    ),
                );
            }
        }
        let listening = std::os::unix::net::UnixStream::connect(socket).is_ok();
        notes.push(if listening {
            "listening".into()
        } else {
            "not listening: systemctl start fieldgate.socket".into()
        });
    } else {
        notes.push("not created yet: systemctl start fieldgate.socket".into());
    }
    Check::ok(name, format!("{shown} ({})", notes.join("; ")))
}

fn check_socket(config: &Config, id: &Identity, sandbox: &Sandbox) -> Check {
    if sandbox.active {
        return match socket_unit_path() {
            Some((unit, listen)) => check_activated_socket(config, &unit, listen),
            None => Check::fail(
                "api socket",
                "fieldgate.service is installed without fieldgate.socket: the service cannot start",
                "reinstall the package (apt install --reinstall fieldgate)",
            ),
        };
    }
    let name = "api socket";
    let socket = config.socket_path();
    let shown = socket.display();
    let Some(dir) = socket.parent() else {
        return Check::fail(name, format!("{shown} has no directory"), "fix api.socket");
    };
    let mut notes = Vec::new();
    if let Some(group) = &config.api.group {
        let group = group.get_ref();
        match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) => {
                if id.uid != 0 && !id.gids.contains(&g.gid.as_raw()) {
                    return Check::fail(
                        name,
                        format!("{} is not in group `{group}` (api.group), so it cannot give the socket to it", id.name),
                        format!("adduser {} {group}, or change api.group", id.owner),
                    );
                }
                notes.push(format!("group {group}"));
            }
            _ => {
                return Check::fail(
                    name,
                    format!(
                        "group `{group}` (api.group) does not exist: the daemon will not start"
                    ),
                    format!("groupadd --system {group}, or change api.group"),
                )
            }
        }
    }
    match fs::metadata(dir) {
        Ok(meta) => {
            if let Err(why) = id.can_reach(dir) {
                return Check::fail(name, why, "fix the directory permissions");
            }
            if !id.allowed(&meta, 3) {
                return Check::fail(
                    name,
                    format!(
                        "{} cannot create {shown}: {} is {}",
                        id.name,
                        dir.display(),
                        describe_owner(&meta)
                    ),
                    format!("chown {} {}", id.owner, dir.display()),
                );
            }
        }
        Err(_) => {
            let parent = dir
                .ancestors()
                .find(|d| d.exists())
                .unwrap_or(Path::new("/"));
            let writable = fs::metadata(parent)
                .map(|m| id.allowed(&m, 3))
                .unwrap_or(false);
            if !writable {
                return Check::fail(
                    name,
                    format!(
                        "{} does not exist and {} cannot create it",
                        dir.display(),
                        id.name
                    ),
                    format!(
                        "install -d -o {user} -g {user} -m 0750 {}",
                        dir.display(),
                        user = id.owner
                    ),
                );
            }
            notes.push("directory created by the daemon".into());
        }
    }
    if socket.exists() {
        let listening = std::os::unix::net::UnixStream::connect(socket).is_ok();
        notes.push(if listening {
            "a daemon is listening".into()
        } else {
            "stale socket, no daemon listening".into()
        });
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    Check::ok(name, format!("{shown}{notes}"))
}

fn check_master_key(opts: &Options) -> Check {
    let name = "master key";
    let from_credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(MASTER_KEY_CREDENTIAL));
    let (path, source) = match from_credentials {
        Some(p) => (p, "systemd credential"),
        None => (opts.master_key.clone(), "key file"),
    };
    let shown = path.display();
    let create = format!(
        "create it: (umask 077; od -An -tx1 -N32 -v /dev/urandom | tr -d ' \\n' > {shown}); or reinstall the package"
    );
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Check::fail(
                name,
                format!(
                    "{source} {shown} is missing: the service will not start (LoadCredential=)"
                ),
                create,
            )
        }
        Err(e) => {
            return Check::warn(
                name,
                format!("{source} {shown}: {e}"),
                "run `fieldgate doctor` as root",
            )
        }
    };
    if !meta.is_file() {
        return Check::fail(name, format!("{shown} is not a regular file"), create);
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Check::fail(
            name,
            format!(
                "{shown} has mode {mode:04o}: other users can read the key to every device secret"
            ),
            format!("chmod 600 {shown}"),
        );
    }
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Check::warn(
                name,
                format!(
                    "{source} {shown} exists (mode {mode:04o}) but cannot be read by this user"
                ),
                "run `fieldgate doctor` as root to check its contents",
            )
        }
        Err(e) => return Check::fail(name, format!("{shown}: {e}"), create),
    };
    let text = String::from_utf8_lossy(&bytes);
    let trimmed = text.trim();
    let is_hex = trimmed.len() == 64 && trimmed.chars().all(|c| c.is_ascii_hexdigit());
    if bytes.is_empty() {
        return Check::fail(
            name,
            format!("{shown} is empty"),
            format!("remove it, then {create}"),
        );
    }
    if !is_hex && bytes.len() != 32 {
        return Check::warn(
            name,
            format!(
                "{shown}: unexpected format ({} bytes; expected 64 hex characters)",
                bytes.len()
            ),
            "if the daemon refuses it, restore the key from your backup",
        );
    }
    Check::ok(
        name,
        format!("{source} {shown} present ({})", describe_owner(&meta)),
    )
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(64 * 1024 * 1024), "64.0 MiB");
    }

    #[test]
    fn mode_bits_for_owner_group_other() {
        let dir = tempfile::tempdir().unwrap();
        let meta = fs::metadata(dir.path()).unwrap();
        let owner = Identity {
            name: "owner".into(),
            owner: "owner".into(),
            uid: meta.uid(),
            gids: vec![],
        };
        let stranger = Identity {
            name: "stranger".into(),
            owner: "stranger".into(),
            uid: meta.uid().wrapping_add(12345).max(1),
            gids: vec![],
        };
        // tempdir is 0700.
        assert!(owner.allowed(&meta, 7) || owner.uid == 0);
        assert!(!stranger.allowed(&meta, 2));
    }

    /// A fake sysfs laid out like a CP2102N stick on a Pi: the tty's `device` is the
    /// usb-serial port, two levels below the USB device that has the ids.
    #[test]
    fn usb_identity_walks_sysfs_up_to_the_usb_device() {
        use std::os::unix::fs::symlink;
        let sys = tempfile::tempdir().unwrap();
        let usb = sys.path().join("devices/platform/soc/usb1/1-1");
        let port = usb.join("1-1:1.0/ttyUSB0");
        fs::create_dir_all(&port).unwrap();
        for (f, v) in [
            ("idVendor", "10c4\n"),
            ("idProduct", "ea60\n"),
            ("manufacturer", "ITead\n"),
            ("product", "Sonoff Zigbee 3.0 USB Dongle Plus\n"),
            ("serial", "a1b2c3\n"),
        ] {
            fs::write(usb.join(f), v).unwrap();
        }
        let driver = sys.path().join("bus/usb-serial/drivers/cp210x");
        fs::create_dir_all(&driver).unwrap();
        symlink(&driver, port.join("driver")).unwrap();
        let class = sys.path().join("class/tty/ttyUSB0");
        fs::create_dir_all(&class).unwrap();
        symlink(&port, class.join("device")).unwrap();

        let got = usb_identity_in(sys.path(), "ttyUSB0").unwrap();
        assert!(
            got.starts_with("USB 10c4:ea60 ITead Sonoff Zigbee 3.0 USB Dongle Plus [likely CP210x"),
            "{got}"
        );
        assert!(got.contains("serial a1b2c3"), "{got}");
        assert!(got.ends_with("driver cp210x"), "{got}");
        assert_eq!(usb_identity_in(sys.path(), "ttyUSB9"), None);
    }

    #[test]
    fn sandbox_rules_only_apply_with_the_unit() {
        let off = Sandbox { active: false };
        let on = Sandbox { active: true };
        assert!(off.writable(Path::new("/srv/data")));
        assert!(!on.writable(Path::new("/srv/data")));
        assert!(on.writable(Path::new("/var/lib/fieldgate")));
        assert!(on.hidden(Path::new("/home/pi/key")));
        assert!(!off.hidden(Path::new("/home/pi/key")));
    }
}
