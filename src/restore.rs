//! `fieldgate restore BACKUP`: puts a database backup in place of the gateway's, with
//! the daemon stopped, so that the restored gateway keeps its promises:
//!
//! - **No `(life, seq)` is used twice.** The backup's outbox numbering is behind what
//!   the gateway sent since; the restored database gets a new `life`, so its new
//!   messages can never be taken for ones already sent (the messages still in its
//!   outbox go out again with their own `msg_id`, `life` and `seq`).
//! - **The audit log says what happened.** A `state.restored` record (who, from
//!   which file, which records of the replaced log are gone) is appended to the
//!   restored chain and published, and the high-water mark is set to it, so the
//!   daemon's start-up check finds the log as the restore left it rather than cut.
//! - **Sealing carries on.** The seal key evolves one way: after the backup it moved
//!   on, and the backup's last seal is behind it. With the seed, the key of the epoch
//!   after the backup's last seal is computed again and the backup's seals checked;
//!   without it, a restore that would stop sealing is refused.
//!
//! The database being replaced is kept beside it as `<db>.replaced` (with its WAL,
//! if it had one), the daemon's lock is held throughout, and nothing is changed until
//! the backup has been checked.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use rusqlite::Connection;
use serde::Serialize;

use crate::config::Config;
use crate::store::{self, audit, audit_guard, audit_seal, outbox};

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub database: PathBuf,
    /// Where the database it replaced is kept, if there was one.
    pub replaced: Option<PathBuf>,
    pub previous_life: Option<String>,
    pub life: String,
    /// The `state.restored` record.
    pub audit_seq: i64,
    /// The replaced log's last record by its mark (its records after the backup's
    /// head are gone with it).
    pub replaced_audit_seq: Option<i64>,
    /// `not set up`, `kept` (the key file already follows the backup's last seal),
    /// or `continued at epoch N from the seed`.
    pub sealing: String,
}

/// The state directory's owner: the restored files are the daemon's, whoever runs this.
fn owner(dir: &Path) -> Result<(u32, u32)> {
    let m = std::fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    Ok((m.uid(), m.gid()))
}

fn give(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_context(|| {
        format!(
            "cannot give {} to the state directory's owner",
            path.display()
        )
    })
}

fn has_table(c: &Connection, name: &str) -> Result<bool> {
    Ok(c.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// The backup is a whole fieldgate database whose audit log verifies.
fn check_backup(backup: &Path) -> Result<Option<audit_seal::Seal>> {
    // A regular file: not a FIFO or a device that would hang or never end.
    if !std::fs::metadata(backup)
        .with_context(|| format!("cannot read the backup {}", backup.display()))?
        .is_file()
    {
        bail!("the backup {} is not a regular file", backup.display());
    }
    let c = store::open_reader(backup)
        .with_context(|| format!("cannot open the backup {}", backup.display()))?;
    let check: String = c
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .with_context(|| format!("{} is not a database", backup.display()))?;
    if check != "ok" {
        bail!("the backup {} is damaged: {check}", backup.display());
    }
    if !has_table(&c, "audit")? || !has_table(&c, "outbox")? {
        bail!("{} is not a fieldgate database", backup.display());
    }
    let report = audit::verify(&c)?;
    if !report.ok {
        bail!(
            "the backup's audit log does not verify (record {}: {}): it is not restored",
            report.first_bad_seq.unwrap_or(0),
            report.reason.unwrap_or_default()
        );
    }
    Ok(if has_table(&c, "audit_seals")? {
        audit_seal::last_seal(&c)?
    } else {
        None
    })
}

/// What the key file becomes: `None` to leave it as it is.
fn seal_key_for(
    key_file: &Path,
    last_seal: Option<&audit_seal::Seal>,
    seed: Option<&[u8]>,
) -> Result<(Option<audit_seal::SealKey>, String)> {
    let next = last_seal.map_or(1, |s| s.epoch + 1);
    let key = audit_seal::read_key(key_file)?;
    let behind = match &key {
        None => last_seal.is_some(),
        Some(k) => k.epoch > next,
    };
    if !behind {
        return Ok((
            None,
            if key.is_some() { "kept" } else { "not set up" }.to_string(),
        ));
    }
    let Some(seed) = seed else {
        bail!(
            "the backup's seals end at epoch {} and the seal key {} (sealing went on after the backup, and its key cannot go back): give the verification seed (`--seed -` reads it from standard input) so that sealing carries on from the backup",
            next - 1,
            match &key {
                Some(k) => format!("is at epoch {}", k.epoch),
                None => "file is missing".to_string(),
            }
        );
    };
    Ok((
        Some(audit_seal::SealKey::first(seed).evolve_to(next)),
        format!("continued at epoch {next} from the seed"),
    ))
}

/// Moves `db` and its WAL files aside as `<db>.replaced`; returns that path.
fn move_aside(db: &Path) -> Result<Option<PathBuf>> {
    if !db.exists() {
        return Ok(None);
    }
    let aside = store::sidecar(db, ".replaced");
    for suffix in ["", "-wal", "-shm"] {
        let from = store::sidecar(db, suffix);
        let to = store::sidecar(&aside, suffix);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&to);
            }
            Err(e) => {
                return Err(anyhow!(
                    "cannot move {} to {}: {e}",
                    from.display(),
                    to.display()
                ))
            }
        }
    }
    Ok(Some(aside))
}

/// Restores `backup` as the database of `config`'s gateway; `actor` is who asked.
pub fn restore(
    config: &Config,
    backup: &Path,
    seed: Option<&[u8]>,
    actor: &str,
) -> Result<Restored> {
    let db = config.db_path();
    let dir = db
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", db.display()))?
        .to_path_buf();
    if !dir.is_dir() {
        bail!(
            "the state directory {} does not exist: install the package (or start the daemon once) first",
            dir.display()
        );
    }
    if std::fs::canonicalize(backup).ok() == std::fs::canonicalize(&db).ok() {
        bail!("{} is the gateway's own database", backup.display());
    }
    let owner = owner(&dir)?;
    let lock_existed = store::sidecar(&db, ".lock").exists();
    let _lock = crate::daemon::claim_state_dir(&db)?;
    if !lock_existed {
        give(&store::sidecar(&db, ".lock"), owner)?;
    }

    let last_seal = check_backup(backup)?;
    let key_file = audit_seal::key_path(&db);
    let (new_key, sealing) = seal_key_for(&key_file, last_seal.as_ref(), seed)?;
    let mark_file = audit_guard::mark_path(&db);
    let replaced_audit_seq = audit_guard::read_mark(&mark_file)
        .ok()
        .flatten()
        .map(|m| m.seq);
    let previous_life = if db.exists() {
        store::open_reader(&db)
            .ok()
            .and_then(|c| outbox::life(&c).ok())
    } else {
        None
    };

    // A copy beside the database, made whole before anything is replaced.
    let staging = store::sidecar(&db, ".restoring");
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(store::sidecar(&staging, suffix));
    }
    std::fs::copy(backup, &staging)
        .with_context(|| format!("cannot copy {} to {}", backup.display(), staging.display()))?;
    let staged = (|| -> Result<(String, audit_guard::Mark)> {
        let c = Connection::open(&staging)?;
        c.execute_batch("PRAGMA journal_mode = DELETE")?;
        let tx = c.unchecked_transaction()?;
        if has_table(&tx, "gateway_life")? {
            tx.execute(
                "UPDATE gateway_life SET life =
                    printf('%013d', CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))
                    || '-' || lower(hex(randomblob(4)))
                  WHERE id = 1",
                [],
            )?;
        }
        let life = if has_table(&tx, "gateway_life")? {
            outbox::life(&tx)?
        } else {
            String::new()
        };
        let restored_head = audit_guard::head(&tx)?;
        let file_name = backup
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        store::record_audit(
            &tx,
            config.gateway_id(),
            &audit::AuditEntry::new(
                actor,
                "state.restored",
                "gateway",
                audit::Outcome::Accepted,
                serde_json::json!({
                    "backup": file_name,
                    "restored_head_seq": restored_head.seq,
                    "replaced_head_seq": replaced_audit_seq,
                    "previous_life": previous_life,
                    "life": life,
                    "sealing": sealing,
                }),
            ),
        )?;
        let head = audit_guard::head(&tx)?;
        tx.commit()?;
        drop(c);
        std::fs::File::open(&staging)?.sync_all()?;
        Ok((life, head))
    })();
    let (life, head) = match staged {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            return Err(e.context("cannot prepare the restored database"));
        }
    };

    if let Some(key) = &new_key {
        // Checked with the seed before anything is replaced.
        let staged_key = store::sidecar(&staging, "-seal-key");
        let _ = std::fs::remove_file(&staged_key);
        audit_seal::write_key(&staged_key, key, true)?;
        let c = store::open_reader(&staging)?;
        let report = audit_seal::verify(&c, seed.unwrap_or_default(), &staged_key);
        drop(c);
        let _ = std::fs::remove_file(&staged_key);
        match report {
            Ok(r) if r.ok => {}
            Ok(r) => {
                let _ = std::fs::remove_file(&staging);
                bail!(
                    "the backup's seals do not verify with this seed ({}): nothing was changed",
                    r.reason.unwrap_or_default()
                );
            }
            Err(e) => {
                let _ = std::fs::remove_file(&staging);
                return Err(anyhow!(e).context("cannot check the backup's seals"));
            }
        }
    }

    let replaced = move_aside(&db)?;
    std::fs::rename(&staging, &db)
        .with_context(|| format!("cannot move {} to {}", staging.display(), db.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600))?;
    }
    give(&db, owner)?;
    audit_guard::write_stopped_mark(&mark_file, &head)
        .with_context(|| format!("cannot write {}", mark_file.display()))?;
    give(&mark_file, owner)?;
    if let Some(key) = new_key {
        let _ = std::fs::remove_file(&key_file);
        audit_seal::write_key(&key_file, &key, true)?;
        give(&key_file, owner)?;
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(Restored {
        database: db,
        replaced,
        previous_life,
        life,
        audit_seq: head.seq,
        replaced_audit_seq,
        sealing,
    })
}

/// `fieldgate restore BACKUP [--seed -] [--json]` with `config` loaded: says what was
/// done, or why nothing was.
pub fn command(config: &Config, backup: &Path, seed: Option<&str>, json: bool) -> ExitCode {
    let seed = match seed.map(crate::api::audit_cli::read_seed).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let actor = format!(
        "local:uid={},gid={},pid={}",
        nix::unistd::getuid(),
        nix::unistd::getgid(),
        std::process::id()
    );
    match restore(config, backup, seed.as_deref().map(|s| &s[..]), &actor) {
        Ok(done) => {
            if json {
                crate::outln!("{}", serde_json::to_string(&done).unwrap_or_default());
            } else {
                crate::outln!(
                    "restored {} from {}: new life {} (was {}); audit record {} (state.restored); sealing {}{}",
                    done.database.display(),
                    backup.display(),
                    done.life,
                    done.previous_life.as_deref().unwrap_or("-"),
                    done.audit_seq,
                    done.sealing,
                    done.replaced
                        .as_ref()
                        .map(|p| format!("; the replaced database is kept as {}", p.display()))
                        .unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", crate::output::clean(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
