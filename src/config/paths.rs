//! The paths a config names that the gateway writes: absolute, without `..`, and
//! never a system directory or one shared with the rest of the host.

use std::path::{Path, PathBuf};

/// Top-level directories the gateway must never take as its own: writing the
/// database or a key there (as root) would put files among the system's.
/// The shared ones among them (`/tmp`, `/home`, `/var/lib`) belong to everyone on the
/// host: taking one as the state directory would take others' access to it away.
const SYSTEM_DIRS: [&str; 26] = [
    "/",
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/var",
    "/tmp",
    "/var/tmp",
    "/var/lib",
    "/var/cache",
    "/var/log",
    "/var/spool",
    "/var/mail",
    "/home",
    "/root",
    "/srv",
    "/opt",
    "/mnt",
    "/media",
    "/usr/local",
    "/run/user",
];
/// Trees that are the system's throughout (nothing of the gateway belongs inside).
const SYSTEM_TREES: [&str; 7] = ["/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys"];

/// What every path the gateway writes must be: absolute, without `..`, without NUL.
fn check_path_shape(p: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    if p.as_os_str().is_empty() {
        return Err("must not be empty".into());
    }
    if p.as_os_str().as_bytes().contains(&0) {
        return Err("must not contain a NUL character".into());
    }
    if !p.is_absolute() {
        return Err(format!(
            "`{}` is relative: it must be an absolute path (the service's working directory is not yours)",
            p.display()
        ));
    }
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(format!(
            "`{}` has a `..` component: write the path it means",
            p.display()
        ));
    }
    Ok(())
}

fn is_lib_dir(p: &Path) -> bool {
    p.components()
        .nth(1)
        .and_then(|c| c.as_os_str().to_str())
        .is_some_and(|first| first.starts_with("lib"))
}

/// Where the gateway keeps its database: its own directory, never a system one.
pub fn check_state_dir(p: &Path) -> Result<(), String> {
    check_path_shape(p)?;
    let normal: PathBuf = p.components().collect();
    let system = |d: &Path| {
        SYSTEM_DIRS.iter().any(|s| d == Path::new(s))
            || SYSTEM_TREES.iter().any(|s| d.starts_with(s))
            || is_lib_dir(d)
    };
    if system(&normal) {
        return Err(format!(
            "`{}` is a system directory: use a directory of the gateway's own, e.g. /var/lib/fieldgate",
            p.display()
        ));
    }
    // A link to one is the same directory (checked where the path exists: on this host).
    if let Ok(real) = std::fs::canonicalize(&normal) {
        if real != normal && system(&real) {
            return Err(format!(
                "`{}` leads to `{}`, a system directory: use a directory of the gateway's own, e.g. /var/lib/fieldgate",
                p.display(),
                real.display()
            ));
        }
    }
    Ok(())
}

/// Where the master key file lives: not loose in a system directory.
pub fn check_key_file(p: &Path) -> Result<(), String> {
    check_path_shape(p)?;
    let normal: PathBuf = p.components().collect();
    let dir = normal.parent().unwrap_or(Path::new("/"));
    let system = SYSTEM_DIRS
        .iter()
        .any(|d| dir == Path::new(d) || normal == Path::new(d))
        || SYSTEM_TREES.iter().any(|d| normal.starts_with(d))
        || is_lib_dir(&normal);
    if system {
        return Err(format!(
            "`{}` is in a system directory: keep the key in a directory of its own, e.g. /etc/fieldgate/master.key",
            p.display()
        ));
    }
    Ok(())
}
