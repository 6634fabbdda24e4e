//! Who the service runs as and what it may touch: the service user with the
//! unit's supplementary groups, access judged from owner, group and mode bits, and
//! the packaged unit's sandbox. It only looks: it changes no user, group or mode.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Check, SERVICE_USER, UNIT_SUPPLEMENTARY_GROUPS};

/// Where the packaged unit may write (StateDirectory=); the API socket in
/// /run/fieldgate is made by fieldgate.socket, not by the daemon.
pub(super) const UNIT_STATE_DIR: &str = "/var/lib/fieldgate";
/// Device name prefixes the unit's `DeviceAllow=` lines cover.
pub(super) const UNIT_DEVICE_PREFIXES: [&str; 3] = ["ttyUSB", "ttyACM", "ttyAMA"];

/// The packaged unit's sandbox, applied only when the unit is installed.
pub(super) struct Sandbox {
    pub(super) active: bool,
}

impl Sandbox {
    pub(super) fn writable(&self, path: &Path) -> bool {
        !self.active || path.starts_with(UNIT_STATE_DIR)
    }
    pub(super) fn hidden(&self, path: &Path) -> bool {
        self.active
            && (path.starts_with("/home")
                || path.starts_with("/root")
                || path.starts_with("/run/user"))
    }
}

pub(super) struct Identity {
    pub(super) name: String,
    /// The user fixes should name: the service user even when it does not exist yet.
    pub(super) owner: String,
    pub(super) uid: u32,
    pub(super) gids: Vec<u32>,
}

impl Identity {
    /// The service user with the unit's supplementary groups; the current user when
    /// the service user does not exist (with a warning saying so).
    pub(super) fn resolve(name: &str) -> (Identity, Check) {
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
    pub(super) fn allowed(&self, meta: &fs::Metadata, want: u32) -> bool {
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
    pub(super) fn can_reach(&self, path: &Path) -> Result<(), String> {
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

pub(super) fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string())
}

/// `root:dialout 0660`
pub(super) fn describe_owner(meta: &fs::Metadata) -> String {
    format!(
        "{}:{} {:04o}",
        user_name(meta.uid()),
        group_name(meta.gid()),
        meta.mode() & 0o7777
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
