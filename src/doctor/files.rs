//! The files and directories the daemon needs: files it must read (config, CA,
//! password, client certificate), the state directory and its free space, the API
//! socket (made by fieldgate.socket, or by the daemon without the unit) and the
//! master key. It writes nothing but a probe file it removes at once, and never
//! prints the key.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::identity::{describe_owner, Identity, Sandbox, UNIT_STATE_DIR};
use super::{Check, MASTER_KEY_CREDENTIAL, SERVICE_USER};
use crate::config::Config;

/// Places where the installed socket unit is looked for: with it, systemd
/// creates the API socket and hands it to the daemon.
const SOCKET_UNIT_PATHS: [&str; 3] = [
    "/etc/systemd/system/fieldgate.socket",
    "/usr/lib/systemd/system/fieldgate.socket",
    "/lib/systemd/system/fieldgate.socket",
];
/// Free space below this in the state directory is a warning whatever the config (and,
/// with the reserve given back, a full disk).
const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// A file the daemon must read (config, CA, password): present and readable.
pub(super) fn check_readable_file(
    what: &str,
    path: &Path,
    id: &Identity,
    sandbox: &Sandbox,
) -> Option<Check> {
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

/// A secret the service reads (the broker password, the client key) that its group or
/// others may read too: the service's group is also the one whose members use the API
/// socket (technicians), so they could read the uplink's credentials.
pub(super) fn check_secret_private(what: &str, path: &Path) -> Option<Check> {
    let meta = fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        Check::warn(
            what,
            format!(
                "{} has mode {mode:04o}: members of its group (technicians using the CLI) or others can read it",
                path.display()
            ),
            format!(
                "chown {SERVICE_USER}: {} && chmod 600 {}",
                path.display(),
                path.display()
            ),
        )
    })
}

pub(super) fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "does not exist".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

pub(super) fn check_state_dir(config: &Config, id: &Identity, sandbox: &Sandbox) -> Check {
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
            // Outside the unit the daemon creates it (mode 0700) when it may write
            // where it goes, as `run` does.
            let creatable = !sandbox.active
                && dir
                    .ancestors()
                    .skip(1)
                    .find(|d| d.exists())
                    .and_then(|d| fs::metadata(d).ok().map(|m| (d, m)))
                    .is_some_and(|(d, m)| {
                        m.is_dir() && id.can_reach(d).is_ok() && id.allowed(&m, 3)
                    });
            let fix = format!(
                "install -d -o {user} -g {user} -m 0750 {shown}",
                user = id.owner
            );
            if creatable {
                return Check::warn(
                    name,
                    format!("{shown} does not exist yet: the daemon creates it (mode 0700) at its first start"),
                    format!("nothing to do, or create it now: {fix}"),
                );
            }
            return Check::fail(name, format!("{shown} does not exist"), fix);
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
    // A file of its own, not a tempfile: tempfile wraps the OS error, hiding the
    // EPERM an immutable directory answers.
    let probe = dir.join(format!(".fieldgate-doctor-{}", std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    if created.is_ok() {
        let _ = std::fs::remove_file(&probe);
    }
    if let Err(e) = created {
        // EACCES is the bits for another user than doctor's (checked above for the
        // service's); EPERM is the directory itself refusing everyone (`chattr +i`).
        let immutable = e.raw_os_error() == Some(nix::libc::EPERM);
        if e.kind() != io::ErrorKind::PermissionDenied || immutable {
            return Check::fail(
                name,
                format!("cannot create a file in {shown}: {e}"),
                if immutable {
                    "the directory refuses every write (immutable or append-only: see `lsattr -d`); `chattr -i -a` it"
                } else {
                    "check that the filesystem is mounted read-write and not full"
                },
            );
        }
    }
    if meta.mode() & 0o007 != 0 {
        return Check::fail(
            name,
            format!(
                "{shown} has mode {:04o}: other users can read the registry, credentials and audit log",
                meta.mode() & 0o7777
            ),
            format!("chmod o-rwx {shown} (0700, or 0750 for the service's group)"),
        );
    }
    let db = config.db_path();
    if let Some(c) = check_state_files(&db) {
        return c;
    }
    if let Some(damage) = database_damage(&db) {
        return Check::fail(
            name,
            format!("{} is damaged: {damage}", db.display()),
            format!(
                "stop the daemon and restore the last backup (`fieldgate restore BACKUP`, docs/operations.md \"Backup and restore\"), or move {} aside to start with an empty registry",
                db.display()
            ),
        );
    }
    let db_note = match fs::metadata(&db) {
        Ok(m) => {
            // The WAL holds committed data too; it is part of the size.
            let wal = fs::metadata(sidecar(&db, "-wal")).map_or(0, |w| w.len());
            let shm = fs::metadata(sidecar(&db, "-shm")).map_or(0, |w| w.len());
            format!(
                "; {} is {} (database {}, WAL {}, shared memory {})",
                db.display(),
                human_bytes(m.len() + wal + shm),
                human_bytes(m.len()),
                human_bytes(wal),
                human_bytes(shm)
            )
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            "; no database yet (created at first start)".to_string()
        }
        Err(e) => format!(
            "; {} not checked: {} (run doctor as root or as the service user)",
            db.display(),
            io_reason(&e)
        ),
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

/// What SQLite's `quick_check` finds wrong with the database (its structure: every
/// page reachable and well formed; a file that is no database at all), read-only;
/// `None` when it is sound, missing, or cannot be opened by this user.
fn database_damage(db: &Path) -> Option<String> {
    if !db.is_file() {
        return None;
    }
    let found = (|| -> rusqlite::Result<String> {
        let c = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        c.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
    })();
    match found {
        Ok(answer) if answer == "ok" => None,
        Ok(answer) => Some(answer),
        Err(rusqlite::Error::SqliteFailure(e, msg))
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            Some(msg.unwrap_or_else(|| e.to_string()))
        }
        Err(_) => None,
    }
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The database files may be the service group's to read (0640) but nobody
/// else's; the audit seal key and mark are the daemon's alone (0600).
fn check_state_files(db: &Path) -> Option<Check> {
    let files: [(&str, u32); 5] = [
        ("", 0o007),
        ("-wal", 0o007),
        ("-shm", 0o007),
        ("-seal-key", 0o077),
        ("-audit-mark", 0o077),
    ];
    // Every loose file at once: fixing the first one should not reveal the next.
    let mut loose = Vec::new();
    let mut fixes = Vec::new();
    for (suffix, forbidden) in files {
        let path = sidecar(db, suffix);
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        if mode & forbidden != 0 {
            let want = if forbidden == 0o077 { "600" } else { "640" };
            loose.push(format!(
                "{} has mode {mode:04o}: readable beyond the daemon{}",
                path.display(),
                if forbidden == 0o077 {
                    ""
                } else {
                    " and its group"
                }
            ));
            fixes.push(format!("chmod {want} {}", path.display()));
        }
    }
    if !loose.is_empty() {
        return Some(Check::fail(
            "state dir",
            loose.join("; "),
            fixes.join(" && "),
        ));
    }
    check_seal_key_present(db)
}

/// Sealing, once set up, needs its key file: without it the daemon stops sealing
/// (and raises the audit alarm at start).
fn check_seal_key_present(db: &Path) -> Option<Check> {
    let key = sidecar(db, "-seal-key");
    if fs::symlink_metadata(&key).is_ok() || !db.exists() {
        return None;
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let epochs: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit_seals", [], |r| r.get(0))
        .ok()?;
    (epochs > 0).then(|| {
        Check::fail(
            "state dir",
            format!(
                "the audit seal key {} is missing but {epochs} epoch(s) are sealed: sealing has stopped",
                key.display()
            ),
            format!(
                "restore {} from a backup of the state directory (mode 0600, the service user's)",
                key.display()
            ),
        )
    })
}

pub(super) fn check_free_space(config: &Config) -> Check {
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
    // The daemon gives its reserve back when the disk fills: a missing reserve beside an
    // existing database, with little free, is a disk that filled up.
    let db = config.db_path();
    let reserve_gone = db.exists()
        && std::fs::metadata(crate::store::disk::reserve_path(&db))
            .map_or(true, |m| m.len() < crate::store::disk::RESERVE_BYTES);
    if free < crate::store::disk::LOW_BYTES || (reserve_gone && free < MIN_FREE_BYTES) {
        return Check::fail(
            name,
            format!(
                "DISK FULL: {} free at {shown}; the daemon has given back its reserve and refuses new records",
                human_bytes(free)
            ),
            "free some space now (`du -sh /var/log/* /var/cache/*`); the daemon recovers by itself",
        );
    }
    if free < MIN_FREE_BYTES {
        // Low, not full: the daemon works on, and `DISK FULL` above is the failure.
        return Check::warn(
            name,
            format!(
                "only {} free at {shown}: the database has little room to grow",
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

pub(super) fn check_socket(config: &Config, id: &Identity, sandbox: &Sandbox) -> Check {
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

/// Whether an installed `fieldgate.service` loads `key_file` as its master-key
/// credential (then the service does not start without the file).
fn unit_loads(key_file: &Path) -> bool {
    let wanted = format!(
        "LoadCredential={MASTER_KEY_CREDENTIAL}:{}",
        key_file.display()
    );
    super::UNIT_PATHS.iter().any(|unit| {
        fs::read_to_string(unit).is_ok_and(|text| text.lines().any(|l| l.trim() == wanted))
    })
}

pub(super) fn check_master_key(key_file: &Path, id: &Identity) -> Check {
    let name = "master key";
    let from_credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(MASTER_KEY_CREDENTIAL));
    let (path, source) = match from_credentials {
        Some(p) => (p, "systemd credential"),
        None => (key_file.to_path_buf(), "key file"),
    };
    let shown = path.display();
    let create = format!(
        "create it: (umask 077; od -An -tx1 -N32 -v /dev/urandom | tr -d ' \\n' > {shown}); or reinstall the package"
    );
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The installed service loads it as a credential and does not start
            // without it; a daemon run otherwise creates it at its first start.
            return if source == "systemd credential" || unit_loads(key_file) {
                Check::fail(
                    name,
                    format!(
                        "{source} {shown} is missing: the service will not start (LoadCredential=)"
                    ),
                    create,
                )
            } else {
                Check::warn(
                    name,
                    format!(
                        "{source} {shown} does not exist yet: the daemon creates one (mode 0600) at its first start"
                    ),
                    format!("back it up once created: every device secret is sealed with it; or {create}"),
                )
            };
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
    if source == "key file" && meta.uid() != 0 && meta.uid() != id.uid {
        // Whoever owns it could have replaced it; the daemon refuses it too.
        return Check::fail(
            name,
            format!(
                "{shown} belongs to uid {} (neither root nor {}): the daemon refuses it",
                meta.uid(),
                id.name
            ),
            format!(
                "chown root:root {shown} (or {}) after checking it is yours",
                id.owner
            ),
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
        // The daemon reads 32 raw bytes or 64 hex characters and refuses to start on
        // anything else.
        return Check::fail(
            name,
            format!(
                "{shown}: not a key ({} bytes; expected 32 bytes or 64 hex characters): the daemon will not start",
                bytes.len()
            ),
            "restore the key from your backup (a new key cannot open the secrets sealed with the old one)",
        );
    }
    Check::ok(
        name,
        format!("{source} {shown} present ({})", describe_owner(&meta)),
    )
}

/// A LoRa P2P radio's encryption key file (`encryption_key_file`): readable by the service
/// user and nobody else (no group or other bits; owned by root or the service user), and
/// holding a key and an IV. Never prints what it holds.
pub(super) fn check_p2p_key_file(
    radio: &str,
    path: &Path,
    id: &Identity,
    sandbox: &Sandbox,
) -> Check {
    let name = format!("radio {radio} encryption key");
    let shown = path.display();
    if let Some(c) = check_readable_file(&name, path, id, sandbox) {
        return c;
    }
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Check::fail(
                name,
                format!("{shown}: {}", io_reason(&e)),
                crate::radio::lora_p2p::KEY_FILE_HOW_TO,
            )
        }
    };
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Check::fail(
            name,
            format!("{shown} has mode {mode:04o}: other users can read the LoRa P2P key"),
            format!("chmod 600 {shown} && chown {}: {shown}", id.name),
        );
    }
    if meta.uid() != 0 && meta.uid() != id.uid {
        return Check::fail(
            name,
            format!(
                "{shown} belongs to uid {} (neither root nor {})",
                meta.uid(),
                id.name
            ),
            format!("chown {}: {shown} after checking it is yours", id.name),
        );
    }
    match crate::radio::lora_p2p::read_key_file(path) {
        Ok(_) => Check::ok(
            name,
            format!("{shown} holds a key and an IV ({})", describe_owner(&meta)),
        ),
        // doctor not run as root or the service user: the mode is right, the contents unseen.
        Err(why) if why.contains("cannot be read by this user") => Check::warn(
            name,
            format!("{shown} (mode {mode:04o}) cannot be read by this user"),
            "run `fieldgate doctor` as root to check its contents",
        ),
        Err(why) => Check::fail(name, why, crate::radio::lora_p2p::KEY_FILE_HOW_TO),
    }
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
    fn every_loose_state_file_is_named_at_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fieldgate.db");
        for (suffix, mode) in [("", 0o644), ("-seal-key", 0o644), ("-audit-mark", 0o666)] {
            let f = sidecar(&db, suffix);
            fs::write(&f, b"x").unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
        }
        let c = check_state_files(&db).expect("a failed check");
        for name in ["fieldgate.db has", "-seal-key has", "-audit-mark has"] {
            assert!(c.message.contains(name), "{name}: {}", c.message);
        }
        let fix = c.fix.unwrap_or_default();
        assert_eq!(fix.matches("chmod").count(), 3, "{fix}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(64 * 1024 * 1024), "64.0 MiB");
    }
}
