//! The CLI's side of the local API: one HTTP/1.1 request per call over the Unix
//! socket, with errors that tell a technician what to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the fieldgate daemon is not running (no API socket at {0}); start it with `systemctl start fieldgate`, or pass --socket")]
    NotRunning(PathBuf),
    #[error("the fieldgate daemon is not running (stale socket at {0})")]
    Stale(PathBuf),
    #[error("permission denied on {0}: the socket is for its owner and its group `{1}` (`sudo usermod -aG {1} $USER`, then log in again)")]
    Denied(PathBuf, String),
    #[error("permission denied on {0}: the socket's group is root, as no `[api] group` is set: run the command with sudo, or set `[api] group` (e.g. `fieldgate`) in the config, restart the daemon and join that group")]
    DeniedRoot(PathBuf),
    #[error("{0} is not a socket: pass the daemon's API socket with --socket (or its config with --config)")]
    NotASocket(PathBuf),
    #[error("cannot reach {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("HTTP error talking to the daemon: {0}")]
    Http(String),
    #[error("the daemon sent an unreadable answer: {0}")]
    Body(String),
    #[error("{0}")]
    Usage(String),
    #[error("no answer on {0} within {1} s: the daemon is stopped, overloaded or not fieldgate (`systemctl status fieldgate`)")]
    Timeout(PathBuf, u64),
    #[error("{message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

/// `value` as one segment of a request path: escaped so that whatever a technician typed
/// (`?`, `#`, `/`, spaces) reaches the daemon as part of that segment, to be checked there,
/// instead of ending the path early and naming another resource. An empty value is refused
/// here: it would name the collection, not one of its members.
pub fn segment(what: &str, value: &str) -> Result<String, ClientError> {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    // RFC 3986 unreserved characters, plus `:` (device ids are `protocol:address`).
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b':');
    if value.is_empty() {
        return Err(ClientError::Usage(format!("{what} is empty")));
    }
    Ok(utf8_percent_encode(value, KEEP).to_string())
}

pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

/// How long a command waits for the daemon's whole answer: a daemon that is stopped
/// (SIGSTOP), wedged or not the daemon at all must not hang a technician's shell.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// For the commands that wait on a radio by design: a network key rotation waits out
/// the key switch delay, a backup or restore reads or writes the radio's memory.
pub const RADIO_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl ApiClient {
    pub fn new(socket: &Path) -> ApiClient {
        ApiClient {
            socket: socket.to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client, waiting up to `timeout` for each answer.
    pub fn with_timeout(&self, timeout: Duration) -> ApiClient {
        ApiClient {
            socket: self.socket.clone(),
            timeout,
        }
    }

    async fn connect(&self) -> Result<UnixStream, ClientError> {
        UnixStream::connect(&self.socket).await.map_err(|e| {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let meta = std::fs::metadata(&self.socket).ok();
            match e.kind() {
                std::io::ErrorKind::NotFound => ClientError::NotRunning(self.socket.clone()),
                std::io::ErrorKind::ConnectionRefused
                    if meta.as_ref().is_some_and(|m| !m.file_type().is_socket()) =>
                {
                    ClientError::NotASocket(self.socket.clone())
                }
                std::io::ErrorKind::ConnectionRefused => ClientError::Stale(self.socket.clone()),
                std::io::ErrorKind::PermissionDenied => {
                    // The group that opens it, as the installer set it (`[api] group`);
                    // joining root's group is no advice to give.
                    if meta.as_ref().is_some_and(|m| m.gid() == 0) {
                        return ClientError::DeniedRoot(self.socket.clone());
                    }
                    let group = meta
                        .and_then(|m| {
                            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.gid()))
                                .ok()
                                .flatten()
                        })
                        .map_or_else(|| "fieldgate".to_string(), |g| g.name);
                    ClientError::Denied(self.socket.clone(), group)
                }
                _ => ClientError::Io(self.socket.clone(), e),
            }
        })
    }

    /// Sends one JSON request; a non-2xx answer becomes [`ClientError::Api`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        self.call_bytes(method, path, body.map(|b| b.to_string().into_bytes()))
            .await
    }

    /// Sends a body as given (a file's bytes, say); a non-2xx answer becomes
    /// [`ClientError::Api`].
    pub async fn call_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, ClientError> {
        let (status, value) = self.call_raw(method, path, body).await?;
        if status.is_success() {
            return Ok(value);
        }
        let code = value["error"]["code"]
            .as_str()
            .unwrap_or("error")
            .to_string();
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(ClientError::Api {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// Sends raw bytes and returns the status and the JSON answer as-is.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, serde_json::Value), ClientError> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(self.socket.clone(), self.timeout.as_secs()))?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, serde_json::Value), ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "fieldgate");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Body(e.to_string()))?
        };
        Ok((status, value))
    }
}
