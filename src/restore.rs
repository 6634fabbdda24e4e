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
use rusqlite::{Connection, OptionalExtension};
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

/// The staged copy is a whole fieldgate database of this gateway whose audit log
/// verifies; returns its last seal.
fn check_backup(
    staged: &Path,
    backup: &Path,
    gateway_id: &str,
) -> Result<Option<audit_seal::Seal>> {
    let c = store::open_reader(staged)
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
    // Every queued message names its gateway: another gateway's backup would publish
    // its messages under this one's topics.
    let named: Option<Vec<u8>> = c
        .query_row("SELECT payload FROM outbox ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(payload) = named {
        let first = payload.split(|b| *b == b'\n').next().unwrap_or_default();
        let owner = serde_json::from_slice::<serde_json::Value>(first)
            .ok()
            .and_then(|v| v["gateway"].as_str().map(str::to_string));
        if let Some(owner) = owner.filter(|o| o != gateway_id) {
            bail!(
                "the backup is gateway `{}`'s, not `{gateway_id}`'s (its queued messages name it): restore a backup of this gateway",
                crate::output::one_line(&owner)
            );
        }
    }
    Ok(if has_table(&c, "audit_seals")? {
        audit_seal::last_seal(&c)?
    } else {
        None
    })
}

/// What the key file becomes (`None`: left as it is), and what to say of sealing.
/// The backup's seals from the key's epoch on must have been made with it.
fn seal_key_for(
    staged: &Path,
    key_file: &Path,
    last_seal: Option<&audit_seal::Seal>,
    seed: Option<&[u8]>,
) -> Result<(Option<audit_seal::SealKey>, String)> {
    let next = last_seal.map_or(1, |s| s.epoch + 1);
    let key = audit_seal::read_key(key_file)?;
    let ahead = match &key {
        None => last_seal.is_some(),
        Some(k) => k.epoch > next,
    };
    if !ahead {
        let Some(key) = key else {
            return Ok((None, "not set up".to_string()));
        };
        let epoch = key.epoch;
        let c = store::open_reader(staged)?;
        if let Err(why) = audit_seal::check_with_key(&c, key)? {
            bail!("the backup's seals do not follow this gateway's ({why}): another gateway's backup, or altered; nothing was changed");
        }
        if epoch == next {
            return Ok((None, "kept".to_string()));
        }
        // Behind the backup's seals (the key file of an older state): caught up, as
        // the daemon's next seal would.
        let key = audit_seal::read_key(key_file)?
            .ok_or_else(|| anyhow!("{} went away", key_file.display()))?;
        return Ok((
            Some(key.evolve_to(next)),
            format!("kept (key caught up to epoch {next})"),
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

/// Moves `db` and its WAL files aside as `aside`.
fn move_aside(db: &Path, aside: &Path) -> Result<bool> {
    if !db.exists() {
        return Ok(false);
    }
    for suffix in ["", "-wal", "-shm"] {
        let from = store::sidecar(db, suffix);
        let to = store::sidecar(aside, suffix);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow!(
                    "cannot move {} to {}: {e}",
                    from.display(),
                    to.display()
                ))
            }
        }
    }
    Ok(true)
}

/// The staged copy and its SQLite side files, removed unless the restore got through.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal", "-seal-key"] {
            let _ = std::fs::remove_file(store::sidecar(&self.0, suffix));
        }
    }
}

/// Copies the backup into `to`, readable by the daemon's user alone from the start.
fn stage(backup: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut from = std::fs::File::open(backup)
        .with_context(|| format!("cannot read the backup {}", backup.display()))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
    std::io::copy(&mut from, &mut out).with_context(|| {
        format!(
            "cannot copy {} to {} (is the disk full?)",
            backup.display(),
            to.display()
        )
    })?;
    out.sync_all()?;
    Ok(())
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
    // A regular file: not a FIFO or a device that would hang or never end.
    if !std::fs::metadata(backup)
        .with_context(|| format!("cannot read the backup {}", backup.display()))?
        .is_file()
    {
        bail!("the backup {} is not a regular file", backup.display());
    }
    if std::fs::canonicalize(backup).ok() == std::fs::canonicalize(&db).ok() {
        bail!("{} is the gateway's own database", backup.display());
    }
    let aside = store::sidecar(&db, ".replaced");
    if std::fs::symlink_metadata(&aside).is_ok() {
        bail!(
            "{} exists (the database an earlier restore replaced): move it elsewhere or remove it first; nothing was changed",
            aside.display()
        );
    }
    let owner = owner(&dir)?;
    let lock_path = store::sidecar(&db, ".lock");
    let lock_existed = lock_path.exists();
    let _lock = crate::daemon::claim_state_dir(&db).map_err(|e| {
        anyhow!(
            "{}",
            e.to_string()
                .replace(", or give this one another `gateway.state_dir`", "")
        )
        .context("the daemon must be stopped for a restore (`systemctl stop fieldgate`)")
    })?;
    if !lock_existed {
        give(&lock_path, owner)?;
    }

    // The backup is copied, then checked and changed as that copy: nothing is written
    // beside the backup (which may be on a read-only medium), and a refusal leaves the
    // state directory as it was.
    let staging = Staged(store::sidecar(&db, ".restoring"));
    drop(Staged(staging.0.clone()));
    stage(backup, &staging.0)?;
    let last_seal = check_backup(&staging.0, backup, config.gateway_id())?;
    let key_file = audit_seal::key_path(&db);
    let (new_key, sealing) = seal_key_for(&staging.0, &key_file, last_seal.as_ref(), seed)?;
    if let (Some(key), Some(seed)) = (&new_key, seed) {
        // The seed and the backup's seals agree before anything is replaced.
        let staged_key = store::sidecar(&staging.0, "-seal-key");
        audit_seal::write_key(&staged_key, key, true)?;
        let c = store::open_reader(&staging.0)?;
        let report = audit_seal::verify(&c, seed, Some(&staged_key));
        drop(c);
        match report {
            Ok(r) if r.ok => {}
            Ok(r) => bail!(
                "the backup's seals do not verify with this seed ({}): nothing was changed",
                r.reason.unwrap_or_default()
            ),
            Err(e) => return Err(anyhow!(e).context("cannot check the backup's seals")),
        }
    }
    let mark_file = audit_guard::mark_path(&db);
    let replaced_head = audit_guard::read_mark(&mark_file).ok().flatten();
    let previous_life = if db.exists() {
        store::open_reader(&db)
            .ok()
            .and_then(|c| outbox::life(&c).ok())
    } else {
        None
    };

    let (life, head) = (|| -> Result<(String, audit_guard::Mark)> {
        let c = Connection::open(&staging.0)?;
        c.execute_batch("PRAGMA journal_mode = DELETE")?;
        let tx = c.unchecked_transaction()?;
        let lives = has_table(&tx, "gateway_life")?;
        let life = if lives {
            outbox::renew_life(&tx)?
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
                    "restored_head_hash": restored_head.hash,
                    "replaced_head_seq": replaced_head.as_ref().map(|m| m.seq),
                    "replaced_head_hash": replaced_head.as_ref().map(|m| m.hash.clone()),
                    "previous_life": previous_life,
                    "life": life,
                    "sealing": sealing,
                }),
            ),
        )?;
        let head = audit_guard::head(&tx)?;
        tx.commit()?;
        drop(c);
        std::fs::File::open(&staging.0)?.sync_all()?;
        Ok((life, head))
    })()
    .context("cannot prepare the restored database")?;

    let replaced = move_aside(&db, &aside)?.then(|| aside.clone());
    std::fs::rename(&staging.0, &db)
        .with_context(|| format!("cannot move {} to {}", staging.0.display(), db.display()))?;
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
        replaced_audit_seq: replaced_head.map(|m| m.seq),
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
