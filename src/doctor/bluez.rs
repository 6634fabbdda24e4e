//! `bluez://` radios, asked of BlueZ itself over the system D-Bus the way the daemon
//! reaches it (`DBUS_SYSTEM_BUS_ADDRESS`, else `/run/dbus/system_bus_socket`): the bus
//! answers, bluetoothd owns `org.bluez` on it, BlueZ has the adapter and it is powered.
//! And whether a D-Bus policy lets the service user talk to `org.bluez`.
//!
//! It only reads: no discovery is started, no property is set.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use dbus::arg::{prop_cast, PropMap};
use dbus::blocking::Connection;

use super::identity::{group_name, Identity};
use super::Check;

/// Where bluetoothd is installed on Debian, Ubuntu, Raspberry Pi OS and others.
const BLUETOOTHD: [&str; 3] = [
    "/usr/libexec/bluetooth/bluetoothd",
    "/usr/lib/bluetooth/bluetoothd",
    "/usr/sbin/bluetoothd",
];

/// Where the system bus reads its policy files.
const POLICY_DIRS: [&str; 2] = ["/usr/share/dbus-1/system.d", "/etc/dbus-1/system.d"];

fn bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".into())
}

/// bluetoothd, the adapter and its power, over the system bus.
pub(super) fn check_adapter(name: String, adapter: &str, timeout: Duration) -> Check {
    let port = format!("bluez://{adapter}");
    let address = bus_address();
    let conn = match Connection::new_system() {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                name,
                format!(
                    "{port}: cannot connect to the system D-Bus at {address}: {}",
                    e.message().unwrap_or("no reason given")
                ),
                "apt install dbus; systemctl start dbus (or correct DBUS_SYSTEM_BUS_ADDRESS)",
            )
        }
    };
    let bus = conn.with_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", timeout);
    let owned: Result<(bool,), _> =
        bus.method_call("org.freedesktop.DBus", "NameHasOwner", ("org.bluez",));
    match owned {
        Ok((true,)) => {}
        Ok((false,)) => {
            return match BLUETOOTHD.iter().find(|p| Path::new(p).exists()) {
                Some(path) => Check::fail(
                    name,
                    format!("{port}: bluetoothd ({path}) is not running: nothing owns org.bluez on the system D-Bus"),
                    "systemctl enable --now bluetooth; `journalctl -u bluetooth` says why it stopped",
                ),
                None => Check::fail(
                    name,
                    format!("{port}: BlueZ is not installed: no bluetoothd, nothing owns org.bluez on the system D-Bus"),
                    "apt install bluez; systemctl enable --now bluetooth",
                ),
            }
        }
        Err(e) => {
            return Check::fail(
                name,
                format!("{port}: the system D-Bus at {address} does not answer: {e}"),
                "systemctl restart dbus",
            )
        }
    }
    let bluez = conn.with_proxy("org.bluez", "/", timeout);
    type Objects = HashMap<dbus::Path<'static>, HashMap<String, PropMap>>;
    let objects: Objects = match bluez.method_call(
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
        (),
    ) {
        Ok((objects,)) => objects,
        Err(e) => {
            let denied = e.name() == Some("org.freedesktop.DBus.Error.AccessDenied");
            return Check::fail(
                name,
                format!("{port}: BlueZ does not list its adapters: {e}"),
                if denied {
                    "install the .deb's /usr/share/dbus-1/system.d/fieldgate-bluez.conf, then `systemctl reload dbus`"
                } else {
                    "systemctl restart bluetooth"
                },
            );
        }
    };
    let mut adapters: Vec<(String, &PropMap)> = objects
        .iter()
        .filter_map(|(path, ifaces)| {
            let props = ifaces.get("org.bluez.Adapter1")?;
            let id = path.rsplit('/').next()?.to_string();
            Some((id, props))
        })
        .collect();
    adapters.sort_by(|a, b| a.0.cmp(&b.0));
    let Some((_, props)) = adapters.iter().find(|(id, _)| id == adapter) else {
        let has = if adapters.is_empty() {
            "none at all".to_string()
        } else {
            let ids: Vec<&str> = adapters.iter().map(|(id, _)| id.as_str()).collect();
            format!("it has {}", ids.join(", "))
        };
        let kernel_has_it = Path::new("/sys/class/bluetooth").join(adapter).exists();
        return Check::fail(
            name,
            format!("{port}: BlueZ has no adapter {adapter} ({has})"),
            if kernel_has_it {
                format!("the kernel has {adapter} but BlueZ does not: `rfkill unblock bluetooth`, then `systemctl restart bluetooth`")
            } else if adapters.is_empty() {
                "plug the adapter in (`bluetoothctl list` shows what BlueZ has; `rfkill list` whether it is blocked)".to_string()
            } else {
                "set `port` to one of the adapters BlueZ has (`bluetoothctl list`)".to_string()
            },
        );
    };
    let mac = prop_cast::<String>(props, "Address")
        .cloned()
        .unwrap_or_default();
    if prop_cast::<bool>(props, "Powered") != Some(&true) {
        return Check::fail(
            name,
            format!("{port}: adapter {adapter} ({mac}) is powered off"),
            "bluetoothctl power on (`rfkill unblock bluetooth` first if `rfkill list` shows it blocked)",
        );
    }
    Check::ok(
        name,
        format!("{port}: bluetoothd running (org.bluez on {address}), adapter {adapter} ({mac}) powered"),
    )
}

/// Whether a system bus policy lets the service user send to `org.bluez`.
pub(super) fn check_policy(id: &Identity) -> Check {
    let dirs: Vec<&Path> = POLICY_DIRS.iter().map(Path::new).collect();
    let groups: Vec<String> = id.gids.iter().map(|g| group_name(*g)).collect();
    match policy_file(&dirs, &id.owner, &groups) {
        Some(file) => Check::ok(
            "bluez policy",
            format!("{file} lets {} talk to org.bluez", id.owner),
        ),
        None => Check::warn(
            "bluez policy",
            format!(
                "no D-Bus policy in {} lets {} send to org.bluez: the BLE radio will be refused (AccessDenied)",
                POLICY_DIRS.join(" or "),
                id.owner
            ),
            "install the .deb's /usr/share/dbus-1/system.d/fieldgate-bluez.conf (or run as a member of a group BlueZ's policy allows), then `systemctl reload dbus`",
        ),
    }
}

/// The first policy file in `dirs` with a `<policy user="USER">` (or `group=` one of
/// `groups`) block that allows `send_destination="org.bluez"`. `root` always may.
fn policy_file(dirs: &[&Path], user: &str, groups: &[String]) -> Option<String> {
    let mut files: Vec<_> = dirs
        .iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    files.into_iter().find_map(|path| {
        let text = fs::read_to_string(&path).ok()?;
        policy_allows(&text, user, groups).then(|| path.display().to_string())
    })
}

/// Whether a policy file's text allows `user` (or one of `groups`) to send to org.bluez.
fn policy_allows(text: &str, user: &str, groups: &[String]) -> bool {
    let mut rest = text;
    while let Some(start) = rest.find("<policy") {
        let block = &rest[start..];
        let end = block.find("</policy>").unwrap_or(block.len());
        let (head, body) = match block.find('>') {
            Some(h) if h < end => (&block[..h], &block[h..end]),
            _ => break,
        };
        let applies = head.contains(&format!("user=\"{user}\""))
            || groups
                .iter()
                .any(|g| head.contains(&format!("group=\"{g}\"")));
        if applies
            && body.split('<').any(|tag| {
                tag.starts_with("allow") && tag.contains("send_destination=\"org.bluez\"")
            })
        {
            return true;
        }
        rest = &block[end..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_policy_lets_the_service_user_talk_to_bluez() {
        let packaged = include_str!("../../packaging/fieldgate-bluez.conf");
        assert!(policy_allows(packaged, "fieldgate", &[]));
        assert!(!policy_allows(packaged, "nobody", &[]));

        // BlueZ's own file: root and, on some distributions, a group.
        let bluez = r#"<busconfig>
  <policy user="root"><allow own="org.bluez"/><allow send_destination="org.bluez"/></policy>
  <policy group="bluetooth"><allow send_destination="org.bluez"/></policy>
  <policy context="default"><deny send_destination="org.bluez"/></policy>
</busconfig>"#;
        assert!(policy_allows(bluez, "root", &[]));
        assert!(policy_allows(bluez, "fieldgate", &["bluetooth".into()]));
        assert!(!policy_allows(bluez, "fieldgate", &["dialout".into()]));
        // A deny for the user is no allow.
        let deny = r#"<policy user="fieldgate"><deny send_destination="org.bluez"/></policy>"#;
        assert!(!policy_allows(deny, "fieldgate", &[]));
    }

    #[test]
    fn policy_files_are_found_in_the_bus_directories() {
        let dir = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(policy_file(&[dir.path()], "fieldgate", &[]), None);
        fs::write(dir.path().join("other.conf"), "<busconfig/>").unwrap();
        fs::write(
            dir.path().join("fieldgate-bluez.conf"),
            include_str!("../../packaging/fieldgate-bluez.conf"),
        )
        .unwrap();
        let found = policy_file(&[empty.path(), dir.path()], "fieldgate", &[]).unwrap();
        assert!(found.ends_with("fieldgate-bluez.conf"), "{found}");
    }
}
