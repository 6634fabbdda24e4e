//! Forward-secure sealing of the audit log, in the spirit of journald's FSS.
//!
//! The log is cut into epochs. Each epoch ends with a seal row in `audit_seals`:
//! `mac = HMAC-SHA256(k_e, canonical([epoch, ts, first_seq, last_seq, head_hash,
//! prev_mac]))`, where `head_hash` is the chain hash of the epoch's last record (so
//! the seal covers every record before it) and `prev_mac` links the seals to each
//! other. The key evolves one way after every seal: `k_1 = SHA-256(seed)`,
//! `k_{e+1} = SHA-256(k_e)`. Only the current key is kept (in the key file next to
//! the database, overwritten in place); the previous one is zeroed in memory and
//! overwritten on disk. Someone who takes the gateway today holds `k_now` and can
//! compute every *later* key, but no earlier one: sealed epochs cannot be re-sealed.
//!
//! The seed is shown once, by `fieldgate audit seal init`, for the operator or the
//! cloud to keep; with it, [`verify`] recomputes every key and checks every seal,
//! and that the key file holds the key of the epoch after the last seal (so
//! removing the newest seals, and the records they cover, is seen as well).
//!
//! This module owns the seal rows and the key file; it never touches `audit`.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::audit::{canonical_json, GENESIS_HASH};
use super::{StoreError, StoreResult};

/// The key file beside a database: `<db>-seal-key`.
pub fn key_path(db: &Path) -> PathBuf {
    super::sidecar(db, "-seal-key")
}

/// An epoch's sealing key. Zeroed on drop.
pub struct SealKey {
    pub epoch: i64,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "SealKey {{ epoch: {}, key: <redacted> }}", self.epoch)
    }
}

impl SealKey {
    /// The key of epoch 1 for a seed.
    pub fn first(seed: &[u8]) -> SealKey {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&Sha256::digest(seed));
        SealKey { epoch: 1, key }
    }

    /// The next epoch's key; `self` is consumed and its key zeroed.
    pub fn evolve(self) -> SealKey {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&Sha256::digest(&self.key[..]));
        SealKey {
            epoch: self.epoch + 1,
            key,
        }
    }

    /// Evolves forward until `epoch` (no-op when already there or past it).
    pub fn evolve_to(mut self, epoch: i64) -> SealKey {
        while self.epoch < epoch {
            self = self.evolve();
        }
        self
    }

    fn mac(&self, message: &str) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..])
            .expect("HMAC takes keys of any length");
        m.update(message.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// The MAC a stored seal must carry when this key made it.
    fn mac_of(&self, s: &Seal) -> String {
        self.mac(&seal_message(
            s.epoch,
            &s.ts,
            s.first_seq,
            s.last_seq,
            &s.head_hash,
            &s.prev_mac,
        ))
    }

    fn same_key(&self, other: &SealKey) -> bool {
        // Not secret-dependent timing that matters here (both are ours), but cheap to do right.
        self.key
            .iter()
            .zip(other.key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

const KEY_FILE_LEN: usize = 20 + 1 + 64 + 1;

fn encode_key_file(k: &SealKey) -> Zeroizing<String> {
    let mut hex_key = hex::encode(&k.key[..]);
    let s = Zeroizing::new(format!("{:020} {}\n", k.epoch, hex_key));
    hex_key.zeroize();
    s
}

/// Reads the key file; `Ok(None)` when sealing was never set up.
pub fn read_key(path: &Path) -> StoreResult<Option<SealKey>> {
    let mut text = Zeroizing::new(String::new());
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut text)
                .map_err(|e| StoreError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Invalid(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    }
    let bad = || StoreError::Invalid(format!("the seal key file {} is damaged", path.display()));
    let (epoch, key_hex) = text.trim_end().split_once(' ').ok_or_else(bad)?;
    let epoch: i64 = epoch.parse().map_err(|_| bad())?;
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(key_hex, &mut key[..]).map_err(|_| bad())?;
    if epoch < 1 {
        return Err(bad());
    }
    Ok(Some(SealKey { epoch, key }))
}

/// Overwrites the key file in place (same inode, same length) and syncs it, so the
/// previous key's bytes are replaced rather than left in a freed block. `create`
/// makes a new file (mode 0600) and refuses an existing one.
pub fn write_key(path: &Path, key: &SealKey, create: bool) -> StoreResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = encode_key_file(key);
    debug_assert_eq!(text.len(), KEY_FILE_LEN);
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    if create {
        opts.create_new(true);
    }
    let io =
        |e: std::io::Error| StoreError::Invalid(format!("cannot write {}: {e}", path.display()));
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.set_len(KEY_FILE_LEN as u64).map_err(io)?;
    f.sync_all().map_err(io)?;
    if create {
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }
    Ok(())
}

/// A stored seal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seal {
    pub epoch: i64,
    pub ts: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub head_hash: String,
    pub prev_mac: String,
    pub mac: String,
}

fn seal_message(
    epoch: i64,
    ts: &str,
    first_seq: i64,
    last_seq: i64,
    head_hash: &str,
    prev_mac: &str,
) -> String {
    canonical_json(&serde_json::json!([
        epoch, ts, first_seq, last_seq, head_hash, prev_mac
    ]))
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Seal> {
    Ok(Seal {
        epoch: r.get(0)?,
        ts: r.get(1)?,
        first_seq: r.get(2)?,
        last_seq: r.get(3)?,
        head_hash: r.get(4)?,
        prev_mac: r.get(5)?,
        mac: r.get(6)?,
    })
}

const SELECT: &str =
    "SELECT epoch, ts, first_seq, last_seq, head_hash, prev_mac, mac FROM audit_seals";

pub fn last_seal(conn: &Connection) -> StoreResult<Option<Seal>> {
    Ok(conn
        .query_row(&format!("{SELECT} ORDER BY epoch DESC LIMIT 1"), [], row)
        .optional()?)
}

/// The record the first seal wrote (`audit.sealing_started`), if the log holds one: it
/// commits with the first seal, so a log that has it and no seals had its seals removed.
/// Found through a partial index (`audit_sealing_started`), not by reading the log.
pub fn sealing_started(conn: &Connection) -> StoreResult<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT seq FROM audit WHERE action = 'audit.sealing_started' ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// Seals every record since the last seal with `key`, inside the caller's
/// transaction. Returns the seal and the key for the next epoch; the caller writes
/// that key to the key file once the transaction has committed (a crash in between
/// leaves the file one epoch behind, which [`seal`] and [`verify`] allow for).
///
/// A key ahead of the last seal means sealed epochs were removed: an error, unless
/// `over_gap` (the alarm for it has been raised and recorded), when the seal is made
/// with the key's own epoch and the missing epochs stay missing: [`verify`] with the
/// seed reports them for good, and what is written from then on is sealed again.
pub fn seal(
    conn: &Connection,
    key: SealKey,
    ts: &str,
    over_gap: bool,
) -> StoreResult<(Seal, SealKey)> {
    let last = last_seal(conn)?;
    let last_epoch = last.as_ref().map_or(0, |s| s.epoch);
    if key.epoch > last_epoch + 1 && !over_gap {
        return Err(StoreError::Invalid(format!(
            "the seal key is at epoch {} but the last seal is epoch {last_epoch}: sealed epochs were removed",
            key.epoch
        )));
    }
    // The key file lags after a crash between commit and key update: catch it up.
    let key = key.evolve_to(last_epoch + 1);
    let (last_seq, head_hash): (i64, String) = conn
        .query_row(
            "SELECT seq, CAST(hash AS TEXT) FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, GENESIS_HASH.to_string()));
    let first_seq = last.as_ref().map_or(1, |s| s.last_seq + 1);
    if last_seq + 1 < first_seq {
        return Err(StoreError::Invalid(format!(
            "the audit log ends at record {last_seq} but records up to {} were sealed: it was cut short",
            first_seq - 1
        )));
    }
    let prev_mac = last.map_or_else(|| GENESIS_HASH.to_string(), |s| s.mac);
    let mac = key.mac(&seal_message(
        key.epoch, ts, first_seq, last_seq, &head_hash, &prev_mac,
    ));
    let seal = Seal {
        epoch: key.epoch,
        ts: ts.to_string(),
        first_seq,
        last_seq,
        head_hash,
        prev_mac,
        mac,
    };
    conn.execute(
        "INSERT INTO audit_seals (epoch, ts, first_seq, last_seq, head_hash, prev_mac, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            seal.epoch,
            seal.ts,
            seal.first_seq,
            seal.last_seq,
            seal.head_hash,
            seal.prev_mac,
            seal.mac
        ],
    )?;
    Ok((seal, key.evolve()))
}

/// Whether the stored seals from `key`'s epoch on were made with it and the keys that
/// follow it: the check the holder of the current key can make without the seed (a
/// database whose seals were made by another gateway's key fails it).
pub fn check_with_key(conn: &Connection, key: SealKey) -> StoreResult<Result<(), String>> {
    let seals: Vec<Seal> = {
        let mut stmt = conn.prepare(&format!("{SELECT} WHERE epoch >= ?1 ORDER BY epoch ASC"))?;
        let rows = stmt.query_map([key.epoch], row)?;
        rows.collect::<Result<_, _>>()?
    };
    let mut key = key;
    for s in seals {
        if s.epoch != key.epoch {
            return Ok(Err(format!("seal {} is missing", key.epoch)));
        }
        let expected = key.mac_of(&s);
        if expected != s.mac {
            return Ok(Err(format!(
                "seal {} was not made with this gateway's seal key",
                s.epoch
            )));
        }
        key = key.evolve();
    }
    Ok(Ok(()))
}

/// What checking the seals with the seed found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealReport {
    pub ok: bool,
    /// Seals that verified.
    pub sealed_epochs: i64,
    /// Records covered by them (1 ..= sealed_through_seq).
    pub sealed_through_seq: i64,
    /// The first problem, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Checks every seal with keys recomputed from `seed`, and the key file against
/// them. The chain itself is checked by `audit::verify`; together they detect any
/// change, insertion, deletion, reordering or truncation of sealed records.
/// `key_file: None` checks the seals alone: a copy of a database (an online backup)
/// has no key file beside it, and cannot tell whether newer seals existed.
pub fn verify(conn: &Connection, seed: &[u8], key_file: Option<&Path>) -> StoreResult<SealReport> {
    let mut report = SealReport {
        ok: true,
        sealed_epochs: 0,
        sealed_through_seq: 0,
        reason: None,
    };
    let fail = |mut r: SealReport, reason: String| {
        r.ok = false;
        r.reason = Some(reason);
        r
    };
    let mut key = SealKey::first(seed);
    let mut prev_mac = GENESIS_HASH.to_string();
    let mut next_first = 1i64;
    let seals: Vec<Seal> = {
        let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY epoch ASC"))?;
        let rows = stmt.query_map([], row)?;
        rows.collect::<Result<_, _>>()?
    };
    for s in seals {
        if s.epoch != key.epoch {
            return Ok(fail(
                report,
                format!(
                    "seal {} is missing (the next seal present is {})",
                    key.epoch, s.epoch
                ),
            ));
        }
        let expected = key.mac_of(&s);
        if expected != s.mac {
            // The first seal is the seed's first check: a mistyped seed fails there too.
            let or_seed = if report.sealed_epochs == 0 {
                ", or the seed given is not this log's (check it was typed as shown)"
            } else {
                ""
            };
            return Ok(fail(
                report,
                format!(
                    "seal {} was forged or altered{or_seed}: its MAC does not verify with the seed",
                    s.epoch
                ),
            ));
        }
        if s.prev_mac != prev_mac || s.first_seq != next_first || s.last_seq + 1 < s.first_seq {
            return Ok(fail(
                report,
                format!("seal {} does not follow the seal before it", s.epoch),
            ));
        }
        if s.last_seq > 0 {
            let stored: Option<String> = conn
                .query_row("SELECT hash FROM audit WHERE seq = ?1", [s.last_seq], |r| {
                    r.get(0)
                })
                .optional()?;
            match stored {
                None => {
                    return Ok(fail(
                        report,
                        format!(
                            "record {} sealed in epoch {} is missing: the log was cut short",
                            s.last_seq, s.epoch
                        ),
                    ))
                }
                Some(h) if h != s.head_hash => {
                    return Ok(fail(
                        report,
                        format!(
                            "records {}..={} sealed in epoch {} were changed, inserted, removed or renumbered (the chain head there differs from the sealed one)",
                            s.first_seq, s.last_seq, s.epoch
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        report.sealed_epochs = s.epoch;
        report.sealed_through_seq = s.last_seq;
        next_first = s.last_seq + 1;
        prev_mac = s.mac;
        key = key.evolve();
    }
    // `key` is now the key of the epoch after the last seal; the key file must hold it
    // (or, after a crash between a seal's commit and the key update, the one before).
    let Some(key_file) = key_file else {
        return Ok(report);
    };
    match read_key(key_file)? {
        None => Ok(fail(
            report,
            format!(
                "the seal key file {} is missing: sealing stopped or was never set up",
                key_file.display()
            ),
        )),
        Some(on_disk) => {
            if on_disk.epoch > key.epoch {
                return Ok(fail(
                    report,
                    format!(
                        "the seal key is at epoch {} but the last seal present is {}: the newest seals (and what they covered) were removed",
                        on_disk.epoch,
                        key.epoch - 1
                    ),
                ));
            }
            let mut expected = SealKey::first(seed);
            expected = expected.evolve_to(on_disk.epoch);
            if on_disk.epoch + 1 < key.epoch || !expected.same_key(&on_disk) {
                return Ok(fail(
                    report,
                    format!(
                        "the seal key file does not hold the key of epoch {} (replaced, or a different seed)",
                        on_disk.epoch
                    ),
                ));
            }
            Ok(report)
        }
    }
}

/// Parses a seed given in hex (64 hex digits).
pub fn parse_seed(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let t = text.trim();
    let bytes = Zeroizing::new(
        hex::decode(t).map_err(|_| "the seed is not hex (64 hex digits expected)".to_string())?,
    );
    if bytes.len() != 32 {
        return Err(format!(
            "the seed has {} bytes; 32 (64 hex digits) expected",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Creates the key file for a new random seed and returns the seed (hex), to be
/// shown once. Refuses when the key file exists or the database holds seals already.
pub fn init(conn: &Connection, key_file: &Path) -> StoreResult<Zeroizing<String>> {
    if last_seal(conn)?.is_some() || key_file.exists() {
        return Err(StoreError::Invalid(format!(
            "audit sealing is already set up for this database ({} exists or seals are stored)",
            key_file.display()
        )));
    }
    if let Some(seq) = sealing_started(conn)? {
        return Err(StoreError::Invalid(format!(
            "audit sealing was set up for this database before (record {seq}) and its seals and key file are gone: \
             they were removed, and setting sealing up again would hide it. Check the log with the seed \
             printed then (`fieldgate audit verify --seed -`)"
        )));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed[..]);
    let key = SealKey::first(&seed[..]);
    write_key(key_file, &key, true)?;
    Ok(Zeroizing::new(hex::encode(&seed[..])))
}

#[cfg(test)]
mod tests {
    use super::super::audit::{append, AuditEntry, Outcome};
    use super::*;
    use serde_json::json;

    fn add(c: &Connection, n: usize) {
        for i in 0..n {
            append(
                c,
                &AuditEntry::new(
                    "system",
                    "t",
                    format!("x{i}"),
                    Outcome::Accepted,
                    json!({"i": i}),
                ),
                "2026-01-01T00:00:00.000Z",
            )
            .unwrap();
        }
    }

    fn seal_now(c: &Connection, kf: &Path) {
        let k = read_key(kf).unwrap().unwrap();
        let (_, next) = seal(c, k, "2026-01-01T00:00:00.000Z", false).unwrap();
        write_key(kf, &next, false).unwrap();
    }

    #[test]
    fn the_sealing_started_record_is_found_without_reading_the_log_through() {
        let c = crate::store::schema::in_memory_for_tests();
        add(&c, 3);
        assert_eq!(sealing_started(&c).unwrap(), None);
        append(
            &c,
            &AuditEntry::new(
                "system",
                "audit.sealing_started",
                "audit",
                Outcome::Accepted,
                json!({"epoch": 1}),
            ),
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap();
        assert_eq!(sealing_started(&c).unwrap(), Some(4));
        let plan: String = c
            .query_row(
                "EXPLAIN QUERY PLAN SELECT seq FROM audit WHERE action = 'audit.sealing_started' ORDER BY seq LIMIT 1",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("audit_sealing_started"), "{plan}");
    }

    #[test]
    fn keys_evolve_one_way_and_the_file_keeps_only_the_current_one() {
        let a = SealKey::first(b"seed");
        let a_hex = hex::encode(&a.key[..]);
        let b = a.evolve();
        assert_eq!(b.epoch, 2);
        assert_eq!(
            hex::encode(&b.key[..]),
            hex::encode(Sha256::digest(hex::decode(a_hex).unwrap()))
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_key(&p, &b, true).unwrap();
        let c = b.evolve();
        write_key(&p, &c, false).unwrap();
        let back = read_key(&p).unwrap().unwrap();
        assert_eq!(back.epoch, 3);
        assert!(back.same_key(&c));
        assert_eq!(std::fs::read(&p).unwrap().len(), KEY_FILE_LEN);
        assert!(!format!("{back:?}").contains(&hex::encode(&c.key[..])));
    }

    #[test]
    fn seals_verify_with_the_seed_and_catch_a_rehashed_chain() {
        let c = super::super::schema::in_memory_for_tests();
        let dir = tempfile::tempdir().unwrap();
        let kf = dir.path().join("k");
        let seed = init(&c, &kf).unwrap();
        let seed = parse_seed(&seed).unwrap();
        add(&c, 3);
        seal_now(&c, &kf);
        add(&c, 2);
        seal_now(&c, &kf);
        let r = verify(&c, &seed, Some(&kf)).unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!((r.sealed_epochs, r.sealed_through_seq), (2, 5));
        // A wrong seed fails.
        assert!(!verify(&c, &[7u8; 32], Some(&kf)).unwrap().ok);
        // Sealing again without the key file catching up is refused when epochs vanish.
        assert!(init(&c, &kf).is_err());
    }
}
