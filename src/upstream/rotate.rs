//! Rotation of the gateway's own MQTT client certificate and key, with rollback.
//!
//! Owns validating a new identity (PEM chain + key that match), staging it next
//! to the configured `client_cert`/`client_key`, asking the session to reconnect
//! with it, and then either persisting it (atomic rename, the old pair kept as
//! `<path>.previous`) or discarding it. The session owns the connection: it
//! switches identity, and rolls back to the old one by itself when the broker
//! refuses the new one. Every attempt is audited as `upstream.rotate_client_cert`.
//! Key material is never logged, audited or returned.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use super::client::{rustls_config, rustls_config_with_identity};
use super::requests::Rejection;
use crate::config::UpstreamConfig;
use crate::store::audit::{AuditEntry, Outcome};
use crate::store::{self, Writer};

/// Largest certificate chain or key accepted, in bytes of PEM each.
pub const MAX_ROTATION_PEM: usize = 60 * 1024;
/// The audit action of every rotation attempt.
pub const AUDIT_ACTION: &str = "upstream.rotate_client_cert";
/// A guard only: the session answers within its connect timeouts.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Asks the session to reconnect with another TLS identity.
pub(super) struct SwitchIdentity {
    pub transport: Transport,
    pub reply: oneshot::Sender<Switched>,
}

/// How a switch of identity ended.
#[derive(Debug)]
pub(super) enum Switched {
    /// The broker accepted the new identity (CONNACK success): connected with it.
    Accepted,
    /// The TLS handshake or CONNECT was refused or timed out; the session went
    /// back to the previous identity (`reconnected` when that worked at once,
    /// otherwise it keeps retrying with it under the normal backoff).
    Refused {
        reason: String,
        reconnected: bool,
    },
    /// The uplink was not connected: nothing was tried.
    NotConnected,
    Failed(String),
}

struct Paths {
    ca_file: Option<PathBuf>,
    cert: PathBuf,
    key: PathBuf,
}

/// The upstream's rotation entry point, shared by MQTT requests and the local API.
pub struct Rotator {
    paths: Result<Paths, String>,
    tx: mpsc::Sender<SwitchIdentity>,
    busy: tokio::sync::Mutex<()>,
    gateway_id: Arc<str>,
}

impl std::fmt::Debug for Rotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotator")
            .field("configured", &self.paths.is_ok())
            .finish_non_exhaustive()
    }
}

fn reject(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

impl Rotator {
    pub(super) fn new(
        config: &UpstreamConfig,
        tx: mpsc::Sender<SwitchIdentity>,
        gateway_id: Arc<str>,
    ) -> Rotator {
        let mqtts = config.url.get_ref().starts_with("mqtts://");
        let paths = match (mqtts, &config.client_cert, &config.client_key) {
            (false, _, _) => {
                Err("client certificate rotation needs an mqtts:// uplink".to_string())
            }
            (true, Some(cert), Some(key)) => Ok(Paths {
                ca_file: config.ca_file.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => Err(
                "client certificate rotation needs upstream.client_cert and upstream.client_key"
                    .to_string(),
            ),
        };
        Rotator {
            paths,
            tx,
            busy: tokio::sync::Mutex::new(()),
            gateway_id,
        }
    }

    /// Validates the new identity, reconnects with it and persists it when the
    /// broker accepts it; rolls back otherwise. Audited through `writer` (the
    /// caller's: the rotator holds no store handle, so it never keeps the store
    /// open); never echoes the key.
    pub async fn rotate(
        &self,
        writer: &Writer,
        cert_pem: &str,
        key_pem: Zeroizing<String>,
        actor: &str,
        via: &str,
    ) -> Result<Value, Rejection> {
        let mut details = json!({"via": via});
        let result = self.attempt(cert_pem, key_pem, &mut details).await;
        let outcome = match &result {
            Ok(_) => Outcome::Accepted,
            Err(r) if r.code == "rotation_failed" => Outcome::Failed,
            Err(_) => Outcome::Refused,
        };
        match &result {
            Ok(_) => {
                details["status"] = json!("ok");
                tracing::info!(via, certificate_sha256 = %details["certificate_sha256"], "MQTT client certificate rotated");
            }
            Err(r) => {
                details["status"] = json!("error");
                details["code"] = json!(r.code);
                details["reason"] = json!(r.message);
                tracing::warn!(via, code = r.code, reason = %r.message, "MQTT client certificate rotation not done");
            }
        }
        let entry = AuditEntry::new(
            actor,
            AUDIT_ACTION,
            self.gateway_id.to_string(),
            outcome,
            details,
        );
        let gw = self.gateway_id.clone();
        if let Err(e) = writer
            .write(move |c| store::record_audit(c, &gw, &entry).map(|_| ()))
            .await
        {
            tracing::error!(error = %e, "cannot write the audit record of a certificate rotation");
        }
        result
    }

    async fn attempt(
        &self,
        cert_pem: &str,
        key_pem: Zeroizing<String>,
        details: &mut Value,
    ) -> Result<Value, Rejection> {
        let paths = self
            .paths
            .as_ref()
            .map_err(|m| reject("rotation_not_configured", m.clone()))?;
        let _guard = self.busy.try_lock().map_err(|_| {
            reject(
                "rotation_in_progress",
                "another client certificate rotation is in progress",
            )
        })?;
        if cert_pem.len() > MAX_ROTATION_PEM || key_pem.len() > MAX_ROTATION_PEM {
            return Err(reject(
                "invalid_certificate",
                format!("`cert_pem` and `key_pem` are at most {MAX_ROTATION_PEM} bytes each"),
            ));
        }
        let (chain, key) = parse_identity(cert_pem, &key_pem)?;
        let fingerprint = hex::encode(Sha256::digest(chain[0].as_ref()));
        details["certificate_sha256"] = json!(fingerprint);
        details["chain_length"] = json!(chain.len());
        let config = rustls_config_with_identity(paths.ca_file.as_deref(), chain, key)
            .map_err(|e| reject("rotation_failed", e.to_string()))?;
        let transport = Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config)));

        // Stage the files first: a gateway that cannot write them never switches.
        let staged = stage_pair(paths, cert_pem.as_bytes().to_vec(), key_pem)
            .await
            .map_err(|e| {
                reject(
                    "rotation_failed",
                    format!("cannot stage the new files: {e}"),
                )
            })?;

        let switched = self.switch(transport).await;
        match switched {
            Switched::Accepted => match commit_pair(paths, staged.clone()).await {
                Ok(()) => Ok(json!({
                    "certificate_sha256": fingerprint,
                    "client_cert": paths.cert,
                    "client_key": paths.key,
                    "previous_saved": true,
                })),
                Err(e) => {
                    discard(&staged).await;
                    // The files still hold the old pair: go back to it.
                    let back = match rustls_config(
                        paths.ca_file.as_deref(),
                        Some((&paths.cert, &paths.key)),
                    ) {
                        Ok(c) => {
                            self.switch(Transport::tls_with_config(TlsConfiguration::Rustls(
                                Arc::new(c),
                            )))
                            .await
                        }
                        Err(e) => Switched::Failed(e.to_string()),
                    };
                    Err(reject(
                        "rotation_failed",
                        format!(
                            "the broker accepted the new certificate but it could not be saved ({e}); switching back to the previous one: {back:?}"
                        ),
                    ))
                }
            },
            Switched::Refused {
                reason,
                reconnected,
            } => {
                discard(&staged).await;
                details["rolled_back"] = json!(true);
                details["reconnected"] = json!(reconnected);
                Err(reject(
                    "rotation_refused",
                    format!(
                        "the broker refused the new client certificate ({reason}); rolled back to the previous certificate{}",
                        if reconnected { "" } else { " (reconnecting)" }
                    ),
                ))
            }
            Switched::NotConnected => {
                discard(&staged).await;
                Err(reject(
                    "not_connected",
                    "the uplink is not connected: a rotation is only tried on a working connection, so a refusal can be told from an outage",
                ))
            }
            Switched::Failed(m) => {
                discard(&staged).await;
                Err(reject("rotation_failed", m))
            }
        }
    }

    async fn switch(&self, transport: Transport) -> Switched {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(SwitchIdentity { transport, reply })
            .await
            .is_err()
        {
            return Switched::Failed("the uplink is stopping".into());
        }
        match tokio::time::timeout(ROTATION_TIMEOUT, rx).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => Switched::Failed("the uplink stopped during the rotation".into()),
            Err(_) => Switched::Failed("the uplink did not answer in time".into()),
        }
    }
}

/// Parses the chain and key and checks that they belong together. Messages never
/// quote the key.
fn parse_identity(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Rejection> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| reject("invalid_certificate", format!("`cert_pem`: {e}")))?;
    if chain.is_empty() {
        return Err(reject(
            "invalid_certificate",
            "`cert_pem` holds no PEM certificate",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
        reject(
            "invalid_certificate",
            "`key_pem` holds no readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
        |e| {
            reject(
                "invalid_certificate",
                format!("the key does not fit the certificate: {e}"),
            )
        },
    )?;
    Ok((chain, key))
}

#[derive(Clone)]
struct Staged {
    cert: PathBuf,
    key: PathBuf,
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `bytes` to `path` (created or truncated) with `mode`, and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // An existing file keeps its mode on open: set it.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

fn cert_mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o644)
}

async fn stage_pair(
    paths: &Paths,
    cert: Vec<u8>,
    key: Zeroizing<String>,
) -> std::io::Result<Staged> {
    let staged = Staged {
        cert: sibling(&paths.cert, ".rotating"),
        key: sibling(&paths.key, ".rotating"),
    };
    let (s, cert_path) = (staged.clone(), paths.cert.clone());
    tokio::task::spawn_blocking(move || {
        write_synced(&s.cert, &cert, cert_mode(&cert_path))?;
        write_synced(&s.key, key.as_bytes(), 0o600)
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(staged)
}

/// Keeps the current pair as `<path>.previous`, then renames the staged files
/// over the configured paths.
async fn commit_pair(paths: &Paths, staged: Staged) -> std::io::Result<()> {
    let (cert, key) = (paths.cert.clone(), paths.key.clone());
    tokio::task::spawn_blocking(move || {
        for (path, mode) in [(&cert, cert_mode(&cert)), (&key, 0o600)] {
            let old = Zeroizing::new(std::fs::read(path)?);
            let tmp = sibling(path, ".previous.tmp");
            write_synced(&tmp, &old, mode)?;
            std::fs::rename(&tmp, sibling(path, ".previous"))?;
        }
        std::fs::rename(&staged.cert, &cert)?;
        if let Err(e) = std::fs::rename(&staged.key, &key) {
            // Never leave a new certificate next to the old key.
            let _ = std::fs::copy(sibling(&cert, ".previous"), &cert);
            return Err(e);
        }
        sync_dir(&cert)?;
        if cert.parent() != key.parent() {
            sync_dir(&key)?;
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}

async fn discard(staged: &Staged) {
    let s = staged.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_file(&s.cert);
        let _ = std::fs::remove_file(&s.key);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["gw.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_parses_and_a_mismatch_is_refused() {
        let (cert, key) = identity();
        assert!(parse_identity(&cert, &key).is_ok());
        let (_, other_key) = identity();
        let e = parse_identity(&cert, &other_key).unwrap_err();
        assert_eq!(e.code, "invalid_certificate");
        assert!(!e.message.contains("PRIVATE KEY"), "{}", e.message);
        let e = parse_identity("not pem", &key).unwrap_err();
        assert_eq!(e.code, "invalid_certificate");
        let e = parse_identity(&cert, "-----BEGIN PRIVATE KEY-----\nAAAA").unwrap_err();
        assert_eq!(e.code, "invalid_certificate");
        assert!(!e.message.contains("AAAA"));
    }

    #[test]
    fn files_are_written_with_modes_and_previous_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let paths = Paths {
            ca_file: None,
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
        };
        std::fs::write(&paths.cert, "old cert").expect("w");
        std::fs::write(&paths.key, "old key").expect("w");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(async {
            let staged = stage_pair(
                &paths,
                b"new cert".to_vec(),
                Zeroizing::new("new key".into()),
            )
            .await
            .expect("staged");
            commit_pair(&paths, staged).await.expect("committed");
        });
        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        assert_eq!(read(&paths.cert), "new cert");
        assert_eq!(read(&paths.key), "new key");
        assert_eq!(read(&sibling(&paths.cert, ".previous")), "old cert");
        assert_eq!(read(&sibling(&paths.key, ".previous")), "old key");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&paths.key), 0o600);
        assert_eq!(mode(&sibling(&paths.key, ".previous")), 0o600);
        assert!(!sibling(&paths.key, ".rotating").exists());
    }
}
