//! The radios' ports as the service will open them: serial devices (present, a
//! character device, readable and writable by the service user, allowed by the
//! unit, named by a stable /dev/serial/by-id link, with their USB identity from
//! sysfs), tcp:// coordinators and udp:// binds (BlueZ adapters: `bluez.rs`). It never opens a
//! serial port: the daemon may hold it.

use std::fs;
use std::io;
use std::net::UdpSocket;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::files::io_reason;
use super::identity::{describe_owner, group_name, Identity, Sandbox, UNIT_DEVICE_PREFIXES};
use super::net::connect;
use super::Check;
use crate::config::PortSpec;

/// The pid of the daemon running on `db`'s state directory, if one is: the pid its
/// lock file names, when that process is a fieldgate. (Taking the lock to find out
/// would make a daemon starting at that moment refuse to.)
pub(super) fn running_daemon(db: &Path) -> Option<u32> {
    let text = fs::read_to_string(crate::store::sidecar(db, ".lock")).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    comm.trim().starts_with("fieldgate").then_some(pid)
}

pub(super) fn check_radio(
    radio: &crate::config::RadioConfig,
    id: &Identity,
    sandbox: &Sandbox,
    timeout: Duration,
    daemon: Option<u32>,
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
        // A coordinator behind ser2net takes one client: with `kickolduser` a probe
        // would knock the running daemon's link off.
        PortSpec::Tcp { host, port } if daemon.is_some() => Check::ok(
            name,
            format!(
                "tcp://{host}:{port}: not probed, the running daemon (pid {}) holds the link; `fieldgate status` shows its state",
                daemon.unwrap_or_default()
            ),
        ),
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
        PortSpec::Bluez(adapter) => super::bluez::check_adapter(name, &adapter, timeout),
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
    // A character device of another kind (/dev/null, /dev/zero): the kernel says which
    // subsystem it belongs to; a serial port is a tty. Asked of sysfs, not by opening
    // it (opening a serial port can reset the stick behind it).
    if let Some(subsystem) = char_subsystem(meta.rdev()).filter(|s| s != "tty") {
        return Check::fail(
            name,
            format!("{shown} is not a serial device (a `{subsystem}` device)"),
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

/// The kernel subsystem of the character device `rdev` (`tty` for serial ports), from
/// sysfs; `None` where sysfs does not say.
fn char_subsystem(rdev: u64) -> Option<String> {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let link = fs::read_link(format!("/sys/dev/char/{major}:{minor}/subsystem")).ok()?;
    link.file_name().map(|n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
