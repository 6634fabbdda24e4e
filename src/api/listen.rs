//! Where the API's listening socket comes from.
//!
//! Under systemd the socket belongs to `fieldgate.socket`: systemd creates
//! `/run/fieldgate/api.sock` with its owner, group and mode before the daemon
//! starts and hands it over (`LISTEN_FDS`, sd_listen_fds(3)). The daemon then
//! changes nothing on disk: the unit's system call filter forbids chown, and a
//! CLI that connects while the daemon is still starting waits in the socket's
//! backlog instead of failing. Run by hand (no socket handed over), the daemon
//! binds the configured path itself with mode 0660 and the configured group.
//!
//! This module owns that choice and nothing else; it never removes a socket that
//! systemd created.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another fieldgate is already serving {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it (check [api] socket)")]
    NotASocket(PathBuf),
    #[error("cannot create {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("cannot listen on {0}: {1}")]
    Bind(PathBuf, std::io::Error),
    #[error("cannot set the owner or mode of {0}: {1}")]
    Perms(PathBuf, String),
    #[error("unknown group `{0}` for the API socket")]
    Group(String),
    #[error("the socket handed over by systemd is unusable: {0}")]
    Activation(String),
}

/// The API's listening socket and who made it.
pub struct ApiListener {
    pub listener: UnixListener,
    /// The path clients connect to.
    pub path: PathBuf,
    /// True when systemd created the socket and handed it over: the daemon must
    /// leave the file alone when it stops (the socket unit keeps listening).
    pub activated: bool,
}

impl ApiListener {
    /// Removes the socket file if the daemon made it; a socket systemd made stays.
    pub fn cleanup(path: &Path, activated: bool) {
        if !activated {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The socket systemd handed over, else a freshly bound one at `path`.
pub async fn open_listener(path: &Path, group: Option<&str>) -> Result<ApiListener, BindError> {
    if let Some(listener) = activated()? {
        let handed = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf));
        let path = match handed {
            Some(p) if p != path => {
                tracing::warn!(
                    configured = %path.display(),
                    socket = %p.display(),
                    "systemd handed over a socket at another path than [api] socket; serving it"
                );
                p
            }
            Some(p) => p,
            None => path.to_path_buf(),
        };
        tracing::info!(socket = %path.display(), "API socket handed over by systemd");
        return Ok(ApiListener {
            listener,
            path,
            activated: true,
        });
    }
    Ok(ApiListener {
        listener: bind(path, group).await?,
        path: path.to_path_buf(),
        activated: false,
    })
}

/// Whether the descriptors systemd passed have been taken (they are owned once).
static TAKEN: AtomicBool = AtomicBool::new(false);
/// A duplicate of the socket systemd passed, kept so that a start that fails can
/// still answer the connections waiting on it (see [`refuse_pending`]).
static HANDED_OVER: Mutex<Option<std::os::unix::net::UnixListener>> = Mutex::new(None);

/// The first listening Unix stream socket passed by systemd for this process
/// (`LISTEN_PID` is ours), if any. The environment is left as it is.
fn activated() -> Result<Option<UnixListener>, BindError> {
    let Some(std_listener) = handed_over()? else {
        return Ok(None);
    };
    if let Ok(dup) = std_listener.try_clone() {
        *HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(dup);
    }
    UnixListener::from_std(std_listener)
        .map(Some)
        .map_err(|e| BindError::Activation(e.to_string()))
}

/// A start that failed, under socket activation: answers every connection already
/// waiting on the socket with `503 daemon_not_started` and `reason`, so that the CLI
/// that started the service says why, and systemd does not start the service again
/// and again for the same waiting connection. Does nothing without a socket from
/// systemd.
pub fn refuse_pending(reason: &str) {
    let kept = HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner()).take();
    let listener = match kept {
        Some(l) => l,
        None => match handed_over() {
            Ok(Some(l)) => l,
            _ => return,
        },
    };
    let body = serde_json::json!({"error": {
        "code": "daemon_not_started",
        "message": format!("the daemon could not start: {reason}"),
    }})
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let Ok((mut conn, _)) = listener.accept() else {
            break; // WouldBlock: nobody else is waiting
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_millis(200)));
        let _ = conn.set_write_timeout(Some(std::time::Duration::from_millis(200)));
        // The request itself does not matter; read what has arrived of it.
        let mut buf = [0u8; 4096];
        let _ = std::io::Read::read(&mut conn, &mut buf);
        let _ = std::io::Write::write_all(&mut conn, answer.as_bytes());
        let _ = conn.shutdown(std::net::Shutdown::Both);
    }
}

/// Takes the descriptors systemd passed (once per process): the first listening Unix
/// stream socket among them, non-blocking.
fn handed_over() -> Result<Option<std::os::unix::net::UnixListener>, BindError> {
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let fds = sd_notify::listen_fds_with_names(false)
        .map_err(|e| BindError::Activation(e.to_string()))?;
    let mut found = None;
    for (fd, name) in fds {
        // SAFETY: systemd passed these descriptors to this process (LISTEN_PID was
        // checked) and nothing else in the daemon takes ownership of them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        if found.is_some() {
            tracing::warn!(fd, name = %name, "extra socket handed over by systemd; closed");
            continue;
        }
        let sock = socket2::Socket::from(owned);
        let domain = sock.local_addr().map(|a| a.domain());
        let kind = sock.r#type();
        let listening = sock.is_listener().unwrap_or(false);
        match (domain, kind) {
            (Ok(socket2::Domain::UNIX), Ok(socket2::Type::STREAM)) if listening => {
                sock.set_nonblocking(true)
                    .map_err(|e| BindError::Activation(e.to_string()))?;
                found = Some(std::os::unix::net::UnixListener::from(OwnedFd::from(sock)));
            }
            _ => {
                return Err(BindError::Activation(format!(
                    "descriptor {fd} ({name}) is not a listening Unix stream socket; \
                     fieldgate.socket must use ListenStream= with a path"
                )))
            }
        }
    }
    Ok(found)
}

/// Binds the socket with mode 0660 (and the configured group), replacing a stale
/// socket file left by a crash but never one a running daemon still serves, nor a
/// file that is not a socket (a mistyped path must not delete a config file).
///
/// The socket is bound inside a fresh directory only the daemon can enter, given
/// its mode and group there, then renamed into place: at no moment does `path`
/// name a socket that others than the group can connect to, whatever the umask,
/// and the mode and group are set on a name no one else can swap for a link.
/// The group is only changed when it differs from the one the file already has,
/// so a daemon running as that group needs no chown at all.
pub async fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, BindError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| BindError::Dir(dir.clone(), e))?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(path.into()));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(BindError::InUse(path.into()));
        }
    }
    let gid = match group {
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| BindError::Group(g.to_string()))?
                .gid,
        ),
        None => None,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "api.sock".into());
    let private = dir.join(format!(".{name}.{:016x}", rand::random::<u64>()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| BindError::Dir(private.clone(), e))?;
    let staged = private.join("s");
    let made = (|| {
        let listener = UnixListener::bind(&staged).map_err(|e| BindError::Bind(path.into(), e))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| BindError::Perms(path.into(), e.to_string()))?;
        if let Some(gid) = gid {
            let current = std::fs::metadata(&staged)
                .map_err(|e| BindError::Perms(path.into(), e.to_string()))?
                .gid();
            if current != gid.as_raw() {
                nix::unistd::chown(&staged, None, Some(gid))
                    .map_err(|e| BindError::Perms(path.into(), e.to_string()))?;
            }
        }
        std::fs::rename(&staged, path).map_err(|e| BindError::Bind(path.into(), e))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_path_that_is_not_a_socket_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fieldgate.toml");
        std::fs::write(&path, "[gateway]\n").unwrap();
        let err = bind(&path, None).await.expect_err("refused");
        assert!(matches!(err, BindError::NotASocket(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[gateway]\n");
    }

    #[tokio::test]
    async fn the_socket_appears_with_its_mode_and_nothing_is_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        // A stale socket from a crash is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = bind(&path, None).await.unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("api.sock")]);
        let (connected, accepted) =
            tokio::join!(tokio::net::UnixStream::connect(&path), listener.accept());
        assert!(connected.is_ok() && accepted.is_ok());
        // A second daemon on the same path is refused.
        let again = bind(&path, None).await.expect_err("in use");
        assert!(matches!(again, BindError::InUse(_)), "{again}");
    }
}
