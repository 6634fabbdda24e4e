//! The LoRa P2P encryption key file (`encryption_key_file`): two lines of 32 hex digits,
//! the key (`AT+ENCKEY`) then the IV (`AT+CRYPIV`), each 16 bytes. Read when the driver
//! opens its link and by `fieldgate config check`; never inline in the config.
//!
//! Owns reading and checking that file, nothing else. What it returns never shows the
//! bytes (`Debug` is redacted, the bytes are wiped on drop), and its errors name the file
//! and what is wrong, never what it holds.

use std::path::Path;

use zeroize::Zeroize;

/// A P2P key and IV as read from the key file.
#[derive(Clone, PartialEq, Eq)]
pub struct P2pKey {
    pub key: [u8; 16],
    pub iv: [u8; 16],
}

impl std::fmt::Debug for P2pKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("P2pKey(<redacted>)")
    }
}

impl Drop for P2pKey {
    fn drop(&mut self) {
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// How to make a key file, for error messages and docs.
pub const HOW_TO_MAKE: &str = "make one with `(umask 077; openssl rand -hex 16; openssl rand -hex 16) > FILE`, then `chown fieldgate: FILE`";

/// Reads and checks the key file at `path`.
pub fn read_key_file(path: &Path) -> Result<P2pKey, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{shown} does not exist; {HOW_TO_MAKE}"),
        std::io::ErrorKind::PermissionDenied => {
            format!("{shown} cannot be read by this user (run as root or as the service user)")
        }
        _ => format!("{shown}: {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > 4096 {
        return Err(format!(
            "{shown} is {} bytes: a key file holds two lines of 32 hex digits",
            meta.len()
        ));
    }
    let mut bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            format!("{shown} cannot be read by this user (run as root or as the service user)")
        }
        _ => format!("{shown}: {e}"),
    })?;
    let parsed = parse_key_text(&bytes).map_err(|why| format!("{shown}: {why}"));
    bytes.zeroize();
    parsed
}

/// Parses a key file's contents: two non-empty lines (blank lines and surrounding spaces
/// ignored) of exactly 32 hex digits each. Errors say which line and its length only.
pub fn parse_key_text(bytes: &[u8]) -> Result<P2pKey, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not text".to_string())?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let [key, iv] = lines.as_slice() else {
        return Err(format!(
            "must hold two lines of 32 hex digits (the key, then the IV); it has {} non-empty line(s)",
            lines.len()
        ));
    };
    Ok(P2pKey {
        key: hex16(key, "the key (line 1)")?,
        iv: hex16(iv, "the IV (line 2)")?,
    })
}

fn hex16(line: &str, what: &str) -> Result<[u8; 16], String> {
    if line.len() != 32 || !line.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{what} must be exactly 32 hex digits (16 bytes); it is {} characters{}",
            line.len(),
            if line.bytes().all(|b| b.is_ascii_hexdigit()) {
                ""
            } else {
                " with some not hex"
            }
        ));
    }
    let mut out = [0u8; 16];
    for (i, pair) in line.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
        if let (Some(slot), [hi, lo]) = (out.get_mut(i), pair) {
            *slot = digit(*hi) << 4 | digit(*lo);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_hold_a_key_and_an_iv_and_errors_never_quote_them() {
        let k = parse_key_text(
            b"\n  000102030405060708090a0b0c0d0e0f \n\nF0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF\n",
        )
        .unwrap();
        assert_eq!(k.key[15], 0x0f);
        assert_eq!(k.iv[0], 0xf0);
        assert_eq!(format!("{k:?}"), "P2pKey(<redacted>)");
        for (text, says) in [
            (&b"000102030405060708090a0b0c0d0e0f"[..], "it has 1 non-empty line"),
            (
                b"000102030405060708090a0b0c0d0e\nf0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
                "the key (line 1) must be exactly 32 hex digits (16 bytes); it is 30 characters",
            ),
            (
                b"000102030405060708090a0b0c0d0e0f\nz0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
                "the IV (line 2) must be exactly 32 hex digits (16 bytes); it is 32 characters with some not hex",
            ),
            (b"\xff\xfe", "is not text"),
        ] {
            let err = parse_key_text(text).unwrap_err();
            assert!(err.contains(says), "{err}");
            assert!(!err.contains("0102030405"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = read_key_file(&dir.path().join("nope")).unwrap_err();
        assert!(
            missing.contains("does not exist") && missing.contains("openssl rand"),
            "{missing}"
        );
        assert!(read_key_file(dir.path())
            .unwrap_err()
            .contains("not a regular file"));
    }
}
