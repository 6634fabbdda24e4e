//! The checks that need this host: files the config names, groups that must exist,
//! the filesystem under the state directory, and what only the daemon's own user can
//! tell (that it can write there).

use std::path::Path;

use super::error::Locator;
use super::{Config, ConfigError, Protocol, MAX_CONFIG_BYTES};

/// An error made with a [`Locator`] on the config file at `path`, read only now: the
/// host checks pass without reading it again.
pub(super) fn located(path: &Path, make: impl FnOnce(&Locator<'_>) -> ConfigError) -> ConfigError {
    let text = crate::files::read_regular_text(path, MAX_CONFIG_BYTES).unwrap_or_default();
    make(&Locator {
        file: path,
        text: &text,
    })
}

impl Config {
    /// What can only be checked on the gateway itself: the `[api] group` exists, the
    /// site's Zigbee device definitions (files on this host) are valid, and a LoRa P2P
    /// radio's encryption key file holds a key.
    /// `load` runs these; `fieldgate config check --elsewhere` reports them as
    /// warnings, for a config written on another machine.
    pub fn host_checks(&self, path: &Path) -> Vec<ConfigError> {
        let mut out = Vec::new();
        // A Zigbee radio's site device definitions (`definitions_dir`), each error located
        // in its own file.
        for radio in self
            .radios
            .iter()
            .filter(|r| r.protocol == Protocol::Zigbee)
        {
            if let Ok(o) = crate::radio::zigbee::ZigbeeOptions::parse(radio.options.get_ref()) {
                out.extend(crate::radio::zigbee::definitions::Catalog::load(&o.definitions_dir).1);
            }
        }
        // A LoRa P2P radio's encryption key file: present, readable, a key and an IV of
        // exactly 16 bytes each in hex (never quoted back).
        for radio in self
            .radios
            .iter()
            .filter(|r| r.protocol == Protocol::LoraP2p)
        {
            let Ok(o) = crate::radio::lora_p2p::P2pOptions::parse(radio.options.get_ref()) else {
                continue;
            };
            if let Some(file) = &o.encryption_key_file {
                if let Err(why) = crate::radio::lora_p2p::read_key_file(file) {
                    out.push(located(path, |loc| {
                        loc.option(&radio.options, "encryption_key_file", why)
                    }));
                }
            }
        }
        // The uplink's files (password, CA, client certificate and key), read as the
        // daemon reads them at start: a missing or malformed one is a config error (exit
        // 2, not restarted), not a failure to start that systemd would retry.
        if let Some(up) = &self.upstream {
            if let Err(e) = crate::upstream::ClientSettings::from_config(up, self.gateway_id()) {
                out.push(located(path, |loc| loc.nowhere(e.key(), e.to_string())));
            }
        }
        // The state directory on a read-only filesystem: a setup error (exit 2, not
        // restarted), not a start failure that retrying would fix.
        let state_dir = self.gateway.state_dir.get_ref();
        let read_only = state_dir
            .ancestors()
            .find(|d| d.exists())
            .and_then(|d| nix::sys::statvfs::statvfs(d).ok())
            .is_some_and(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
        if read_only {
            out.push(located(path, |loc| {
                loc.at(
                    &self.gateway.state_dir,
                    "gateway.state_dir",
                    format!(
                        "{} is on a read-only filesystem: the registry, audit log and outbox need a writable one",
                        state_dir.display()
                    ),
                )
            }));
        }
        // Paths that exist as something else: setup errors too, named as such.
        let not_a = |p: &Path, want_dir: bool| match std::fs::metadata(p) {
            Ok(m) if want_dir && !m.is_dir() => Some("is not a directory"),
            Ok(m) if !want_dir && m.is_dir() => Some("is a directory, not a file"),
            _ => None,
        };
        if let Some(why) = not_a(state_dir, true) {
            out.push(located(path, |loc| {
                loc.at(
                    &self.gateway.state_dir,
                    "gateway.state_dir",
                    format!("{} {why}", state_dir.display()),
                )
            }));
        }
        // A sticky directory (/tmp, a fresh tmpfs) is shared by design: the daemon does
        // not close it to others, so its files would not be private there.
        let sticky = std::fs::metadata(state_dir).ok().and_then(|m| {
            use std::os::unix::fs::PermissionsExt;
            let mode = m.permissions().mode() & 0o7777;
            (m.is_dir() && mode & 0o1000 != 0).then_some(mode)
        });
        if let Some(mode) = sticky {
            out.push(located(path, |loc| {
                loc.at(
                    &self.gateway.state_dir,
                    "gateway.state_dir",
                    format!(
                        "{} is a shared directory (sticky bit set, mode {mode:o}): use a directory of the gateway's own (e.g. /var/lib/fieldgate)",
                        state_dir.display()
                    ),
                )
            }));
        }
        if let Some(key) = &self.gateway.master_key_file {
            if let Some(why) = not_a(key.get_ref(), false) {
                out.push(located(path, |loc| {
                    loc.at(
                        key,
                        "gateway.master_key_file",
                        format!(
                            "{} {why}: name the key file itself",
                            key.get_ref().display()
                        ),
                    )
                }));
            }
        }
        let socket = self.api.socket.get_ref();
        if let Ok(m) = std::fs::symlink_metadata(socket) {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                out.push(located(path, |loc| {
                    loc.at(
                        &self.api.socket,
                        "api.socket",
                        format!(
                            "{} exists and is not a socket: name a path of its own (the daemon never replaces another file)",
                            socket.display()
                        ),
                    )
                }));
            }
        }
        if let Some(group) = &self.api.group {
            let exists = nix::unistd::Group::from_name(group.get_ref())
                .ok()
                .flatten()
                .is_some();
            if !exists {
                out.push(located(path, |loc| {
                    loc.at(
                        group,
                        "api.group",
                        format!(
                            "group `{}` does not exist on this host (create it, or leave api.group unset)",
                            group.get_ref()
                        ),
                    )
                }));
            }
        }
        out
    }

    /// What only the daemon checks before it starts, as the user it runs as: that it can
    /// write an existing state directory. (`config check` is often run by someone else.)
    pub fn start_checks(&self, path: &Path) -> Option<ConfigError> {
        use nix::unistd::AccessFlags;
        let state_dir = self.gateway.state_dir.get_ref();
        let writable = nix::unistd::access(state_dir, AccessFlags::W_OK | AccessFlags::X_OK);
        (state_dir.is_dir() && writable.is_err()).then(|| {
            located(path, |loc| {
                loc.at(
                    &self.gateway.state_dir,
                    "gateway.state_dir",
                    format!(
                        "{} cannot be written by this user (run the daemon as the directory's owner, or give it the directory)",
                        state_dir.display()
                    ),
                )
            })
        })
    }
}
