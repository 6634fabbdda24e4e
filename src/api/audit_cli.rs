//! The audit commands that work on the database files directly, with or without a
//! running daemon: `audit seal init` (sets up forward-secure sealing and shows the
//! seed once) and `audit verify --seed` (checks the chain, the mark and every seal).
//! The seed is taken from the command line or standard input and never logged.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use zeroize::Zeroizing;

use crate::store::{audit_guard, audit_seal};

fn open(db: &Path) -> Result<rusqlite::Connection> {
    crate::store::open_reader(db).with_context(|| format!("cannot open {}", db.display()))
}

fn has_seal_table(conn: &rusqlite::Connection) -> Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_seals'",
        [],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// `fieldgate audit seal init`: creates the seal key file beside the database (owned
/// like the database, mode 0600) and prints the seed, once.
pub fn seal_init(db: &Path, as_json: bool) -> Result<()> {
    let conn = open(db)?;
    if !has_seal_table(&conn)? {
        return Err(anyhow!(
            "{} predates audit seals: start the daemon once to upgrade it, then run this again",
            db.display()
        ));
    }
    let key_file = audit_seal::key_path(db);
    let seed = audit_seal::init(&conn, &key_file)?;
    // The daemon runs as the database's owner: the key file must be its, not root's.
    let meta = std::fs::metadata(db).with_context(|| format!("cannot stat {}", db.display()))?;
    {
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(&key_file, Some(meta.uid()), Some(meta.gid())).with_context(
            || format!("cannot give {} to the database's owner", key_file.display()),
        )?;
    }
    // The seed exists nowhere else: it goes out in one write, and if that fails (the
    // reader went away, a full disk) sealing is undone, so that it can be set up again
    // and no seals are made that nobody can check.
    let text = Zeroizing::new(if as_json {
        serde_json::json!({"seed": seed.as_str(), "key_file": key_file, "epoch": 1}).to_string()
    } else {
        format!(
            "audit sealing set up: key file {} (epoch 1); the daemon seals every store.audit_seal_interval\n\
             verification seed (shown only this once; keep it off this gateway):\n\
             {}\n\
             check with: fieldgate audit verify --seed -   (reads the seed from standard input)",
            key_file.display(),
            seed.as_str()
        )
    });
    if let Err(e) = crate::output::try_line(format_args!("{}", text.as_str())) {
        let undone = std::fs::remove_file(&key_file);
        return Err(anyhow!(
            "cannot write the verification seed to standard output ({e}); {}",
            match undone {
                Ok(()) => "sealing was not set up, run this again".to_string(),
                Err(r) => format!("remove {} ({r}) and run this again", key_file.display()),
            }
        ));
    }
    Ok(())
}

pub fn read_seed(arg: &str) -> Result<Zeroizing<Vec<u8>>> {
    let text = if arg == "-" {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the seed from standard input")?;
        line
    } else {
        Zeroizing::new(arg.to_string())
    };
    audit_seal::parse_seed(&text).map_err(|e| anyhow!(e))
}

/// `fieldgate audit verify --seed HEX|-`: the chain, the mark (strictly when `strict`,
/// i.e. the daemon is stopped) and every seal, with keys recomputed from the seed.
pub fn verify_with_seed(
    db: &Path,
    seed: &str,
    strict: bool,
    configured: Option<&Path>,
    as_json: bool,
) -> Result<()> {
    let seed = read_seed(seed)?;
    let conn = open(db)?;
    let mut report = audit_guard::verify(&conn, &audit_guard::mark_path(db), strict)?;
    let live = is_gateway_database(db, configured);
    missing_mark(&mut report, db, live);
    // A copy (an online backup) has neither the mark nor the key file beside it: its
    // seals are checked from the seed alone. Not a gateway's own database, whose mark
    // and key deleted are what hides a cut log.
    let key_file = audit_seal::key_path(db);
    let copy = strict && !live && !key_file.exists() && !audit_guard::mark_path(db).exists();
    let seals = if has_seal_table(&conn)? {
        audit_seal::verify(&conn, &seed, (!copy).then_some(key_file.as_path()))?
    } else {
        audit_seal::SealReport {
            ok: false,
            sealed_epochs: 0,
            sealed_through_seq: 0,
            reason: Some("this database has no audit seals".into()),
        }
    };
    if report.ok && !seals.ok {
        report.ok = false;
        // No seal and no key file: sealing was never set up (or all of it was
        // removed), and no record is where the seals stop.
        let unset = seals.sealed_epochs == 0 && !audit_seal::key_path(db).exists();
        report.reason = if unset {
            Some(format!(
                "sealing is not set up for this database (no seal key file, no seals), so the seed has nothing to check: set it up with `fieldgate audit seal init`{}",
                if has_seal_table(&conn)? { "; if it was set up, its key file and every seal were removed" } else { "" }
            ))
        } else {
            seals.reason.clone()
        };
        report.first_bad_seq = (!unset).then_some(seals.sealed_through_seq + 1);
    }
    report.seals = Some(seals);
    super::cli::report_verify(report, as_json)
}

/// `fieldgate audit verify --db FILE` (no seed): the chain and, strictly, the mark.
pub fn verify_offline(db: &Path, configured: Option<&Path>, as_json: bool) -> Result<()> {
    let conn = open(db)?;
    let mut report = audit_guard::verify(&conn, &audit_guard::mark_path(db), true)?;
    missing_mark(&mut report, db, is_gateway_database(db, configured));
    super::cli::report_verify(report, as_json)
}

/// Whether `db` is a gateway's own database, not a copy: a daemon has run on it (the
/// lock file it takes at every start is beside it) or it is the database the config
/// names. Its mark and seal key belong beside it.
pub fn is_gateway_database(db: &Path, configured: Option<&Path>) -> bool {
    if crate::store::sidecar(db, ".lock").exists() {
        return true;
    }
    match (
        configured.map(std::fs::canonicalize),
        std::fs::canonicalize(db),
    ) {
        (Some(Ok(c)), Ok(d)) => c == d,
        _ => false,
    }
}

/// A gateway's own database without its mark: records cut from its end would not
/// show, as the daemon's start-up check says too. A copy has none, and that is noted.
fn missing_mark(report: &mut crate::store::audit::VerifyReport, db: &Path, live: bool) {
    if live && report.ok && report.mark_seq.is_none() && report.records > 0 {
        report.ok = false;
        report.reason = Some(format!(
            "the audit mark {} is missing beside this gateway's database, which holds {} records: records cut from its end would not show (the daemon raises the alarm for this at its next start)",
            audit_guard::mark_path(db).display(),
            report.records
        ));
    }
}
