//! The gateway master key and the encryption of secrets at rest.
//!
//! Owns finding (or creating) the master key and sealing/opening secrets with
//! XChaCha20-Poly1305. ChaCha20 is used rather than AES because the Raspberry Pi
//! 4's cores have no AES instructions, where software AES is slow and not
//! constant-time. Each ciphertext is bound to its owner and kind through the
//! associated data, so a ciphertext copied onto another row does not open.
//! Plaintext secrets live in [`Secret`], which zeroes itself on drop and never
//! prints its content; nothing in this module logs a secret.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// Name of the systemd credential (`LoadCredential=master-key:...`).
pub const CREDENTIAL_NAME: &str = "master-key";
pub const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read the master key {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("the master key {0} is not 32 bytes or 64 hex characters")]
    Format(PathBuf),
    #[error("the master key {0} is readable by others (mode {1:o}); run `chmod 600 {0}`")]
    Mode(PathBuf, u32),
    #[error("the master key {0} belongs to uid {1}, neither this daemon's user nor root: refusing it (chown it to the service user or root)")]
    Owner(PathBuf, u32),
    #[error("cannot create the master key {0}: {1}")]
    Create(PathBuf, std::io::Error),
    #[error("a secret could not be decrypted (wrong master key, or the record was tampered with)")]
    Decrypt,
    #[error("a secret could not be encrypted")]
    Encrypt,
}

/// A secret in memory: zeroed on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// `len` random bytes from the OS generator.
    pub fn random(len: usize) -> Secret {
        let mut v = vec![0u8; len];
        rand::fill(&mut v[..]);
        Secret::new(v)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// The master key, ready to seal and open secrets.
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    /// Where the key came from (shown by `doctor` and in logs; never the key).
    pub source: PathBuf,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(from {})", self.source.display())
    }
}

fn parse_key(bytes: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() == 32 {
        key.copy_from_slice(bytes);
        return Some(key);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() != 64 {
        return None;
    }
    hex::decode_to_slice(text, &mut key[..]).ok()?;
    Some(key)
}

impl MasterKey {
    pub fn from_bytes(key: &[u8; 32], source: PathBuf) -> MasterKey {
        MasterKey {
            cipher: XChaCha20Poly1305::new(key.into()),
            source,
        }
    }

    /// Reads a key file: 32 raw bytes, or 64 hex characters (and a newline).
    /// A key file others can read is refused.
    pub fn load(path: &Path) -> Result<MasterKey, SecretsError> {
        let meta = std::fs::metadata(path).map_err(|e| SecretsError::Read(path.into(), e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretsError::Mode(path.into(), mode));
        }
        // Whoever owns the key could have replaced it: only us or root.
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(SecretsError::Owner(path.into(), meta.uid()));
        }
        let bytes = Zeroizing::new(
            crate::files::read_regular(path, crate::files::MAX_SECRET_BYTES)
                .map_err(|e| SecretsError::Read(path.into(), e))?,
        );
        let key = parse_key(&bytes).ok_or_else(|| SecretsError::Format(path.into()))?;
        Ok(MasterKey::from_bytes(&key, path.into()))
    }

    /// Finds the master key: the systemd credential (`$CREDENTIALS_DIRECTORY/master-key`,
    /// whose mode systemd manages) if present, else `key_file`, created with mode
    /// 0600 and a fresh random key if it does not exist yet.
    pub fn locate(key_file: &Path) -> Result<MasterKey, SecretsError> {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let path = Path::new(&dir).join(CREDENTIAL_NAME);
            if path.exists() {
                let bytes = Zeroizing::new(
                    crate::files::read_regular(&path, crate::files::MAX_SECRET_BYTES)
                        .map_err(|e| SecretsError::Read(path.clone(), e))?,
                );
                let key = parse_key(&bytes).ok_or_else(|| SecretsError::Format(path.clone()))?;
                return Ok(MasterKey::from_bytes(&key, path));
            }
        }
        if !key_file.exists() {
            Self::create(key_file)?;
        }
        Self::load(key_file)
    }

    /// Writes a new random key (hex, mode 0600); never overwrites an existing file.
    pub fn create(path: &Path) -> Result<(), SecretsError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| SecretsError::Create(path.into(), e))?;
        }
        let key = Secret::random(32);
        let mut text = Zeroizing::new(hex::encode(key.expose()));
        text.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| SecretsError::Create(path.into(), e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| SecretsError::Create(path.into(), e))?;
        tracing::info!(path = %path.display(), "created a new gateway master key");
        Ok(())
    }

    /// Encrypts `secret` bound to `aad`; returns (nonce, ciphertext).
    pub fn seal(&self, aad: &[u8], secret: &Secret) -> Result<(Vec<u8>, Vec<u8>), SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce[..]);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose(),
                    aad,
                },
            )
            .map_err(|_| SecretsError::Encrypt)?;
        Ok((nonce.to_vec(), ct))
    }

    /// Decrypts what [`MasterKey::seal`] produced with the same `aad`.
    pub fn open(
        &self,
        aad: &[u8],
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Secret, SecretsError> {
        if nonce.len() != NONCE_LEN {
            return Err(SecretsError::Decrypt);
        }
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Secret::new)
            .map_err(|_| SecretsError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_bind_to_aad() {
        let key = MasterKey::from_bytes(&[7u8; 32], "test".into());
        let secret = Secret::new(b"network key 0123".to_vec());
        let (nonce, ct) = key.seal(b"zigbee:0x1|network_key", &secret).unwrap();
        assert!(
            !ct.windows(4).any(|w| w == b"netw"),
            "ciphertext leaks plaintext"
        );
        assert_eq!(
            key.open(b"zigbee:0x1|network_key", &nonce, &ct).unwrap(),
            secret
        );
        assert!(key.open(b"zigbee:0x2|network_key", &nonce, &ct).is_err());
        let other = MasterKey::from_bytes(&[8u8; 32], "test".into());
        assert!(other.open(b"zigbee:0x1|network_key", &nonce, &ct).is_err());
        assert!(key
            .open(b"zigbee:0x1|network_key", &nonce[..10], &ct)
            .is_err());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = Secret::new(b"hunter2hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(<14 bytes redacted>)");
    }

    #[test]
    fn key_file_is_created_private_and_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("master.key");
        let key = MasterKey::locate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (n, ct) = key.seal(b"a", &Secret::new(vec![1, 2, 3])).unwrap();
        // The same file gives the same key.
        let again = MasterKey::load(&path).unwrap();
        assert_eq!(again.open(b"a", &n, &ct).unwrap().expose(), &[1, 2, 3]);
        // Too open: refused.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::load(&path),
            Err(SecretsError::Mode(..))
        ));
        // Garbage: refused.
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            MasterKey::load(&bad),
            Err(SecretsError::Format(_))
        ));
    }
}
