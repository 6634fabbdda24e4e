//! A full disk: a small reserve file in the state directory, given back the moment
//! SQLite reports the disk full, so that the audit records of `status`, `doctor`
//! and `audit verify` and a clean checkpoint at stop still fit; the disk-full state
//! shown by `status`; and error lines limited to one per cause per 10 s, with the
//! count of what was held back.
//!
//! Owns the reserve file; never deletes anything else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Size of the reserve file.
pub const RESERVE_BYTES: u64 = 1 << 20;

/// Less free space than this is taken as a full disk.
pub const LOW_BYTES: u64 = 256 * 1024;

/// How often a cause may log a line.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The reserve file beside a database.
pub fn reserve_path(db: &Path) -> PathBuf {
    super::sidecar(db, "-reserve")
}

/// Creates the reserve when missing (best effort: with no space for it, there is
/// nothing to keep in reserve).
pub fn ensure_reserve(path: &Path) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.len() >= RESERVE_BYTES {
            return Ok(false);
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // Real blocks, not a sparse file: zeros written out.
    let chunk = vec![0u8; 64 * 1024];
    let result = (|| {
        for _ in 0..(RESERVE_BYTES / chunk.len() as u64) {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(true)
}

/// Free bytes for an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

pub fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// The disk-full state the writer keeps.
#[derive(Debug, Default)]
pub struct DiskState {
    reserve: Mutex<Option<PathBuf>>,
    full: AtomicBool,
    /// Writes that failed because the disk was full.
    pub full_errors: AtomicU64,
    /// Times the reserve was given back.
    pub reserve_released: AtomicU64,
    /// Device events not stored because the disk was full (the reserve given back is
    /// kept for audit records and a clean stop, not spent on readings).
    pub events_not_stored: AtomicU64,
    checked: Mutex<Option<Instant>>,
}

impl DiskState {
    pub fn set_reserve(&self, path: PathBuf) {
        *self.reserve.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
    }

    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// SQLite said the disk is full: remember it and give the reserve back.
    pub fn hit_full(&self, log: &RateLog) {
        self.full_errors.fetch_add(1, Ordering::Relaxed);
        self.become_full(log);
    }

    fn become_full(&self, log: &RateLog) {
        let first = !self.full.swap(true, Ordering::Relaxed);
        let reserve = self
            .reserve
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(path) = reserve {
            if std::fs::remove_file(&path).is_ok() {
                self.reserve_released.fetch_add(1, Ordering::Relaxed);
                tracing::error!(reserve = %path.display(), "the disk is full: the reserve was released so that audit records and a clean stop still fit");
            }
        }
        if let Some(n) = log.hit("disk_full") {
            tracing::error!(
                failed_writes = self.full_errors.load(Ordering::Relaxed),
                seen = n,
                first,
                "the disk holding the database is full"
            );
        }
    }

    /// At most once a second (before a batch): below [`LOW_BYTES`] free the disk is
    /// taken as full before SQLite fails (the reserve is given back); while full,
    /// whether space came back, and then the reserve is put back.
    pub fn recheck(&self, log: &RateLog) {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *checked = Some(Instant::now());
        }
        let Some(path) = self
            .reserve
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let Some(free) = free_bytes(dir) else {
            return;
        };
        if !self.is_full() {
            if free < LOW_BYTES {
                self.become_full(log);
            }
        } else if free >= 2 * RESERVE_BYTES + LOW_BYTES && ensure_reserve(&path).is_ok() {
            self.full.store(false, Ordering::Relaxed);
            tracing::info!(
                free_bytes = free,
                "disk space is back: the reserve is in place again"
            );
        }
    }

    /// What `status` shows.
    pub fn snapshot(&self) -> serde_json::Value {
        let reserve = self
            .reserve
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let free = reserve
            .as_ref()
            .and_then(|p| p.parent())
            .and_then(free_bytes);
        serde_json::json!({
            "disk_full": self.is_full(),
            "free_bytes": free,
            "full_errors": self.full_errors.load(Ordering::Relaxed),
            "reserve_released": self.reserve_released.load(Ordering::Relaxed),
            "events_not_stored": self.events_not_stored.load(Ordering::Relaxed),
        })
    }
}

/// One log line per cause per [`LOG_EVERY`]: `hit` says when to write one and how
/// many occurrences it stands for.
#[derive(Debug, Default)]
pub struct RateLog {
    causes: Mutex<HashMap<&'static str, (Option<Instant>, u64)>>,
}

impl RateLog {
    pub fn hit(&self, cause: &'static str) -> Option<u64> {
        let mut causes = self.causes.lock().unwrap_or_else(|e| e.into_inner());
        let entry = causes.entry(cause).or_insert((None, 0));
        entry.1 += 1;
        match entry.0 {
            Some(t) if t.elapsed() < LOG_EVERY => None,
            _ => {
                entry.0 = Some(Instant::now());
                Some(std::mem::take(&mut entry.1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_cause_per_period_with_the_count() {
        let log = RateLog::default();
        assert_eq!(log.hit("a"), Some(1));
        for _ in 0..5 {
            assert_eq!(log.hit("a"), None);
        }
        assert_eq!(log.hit("b"), Some(1));
        log.causes.lock().unwrap().get_mut("a").unwrap().0 = Some(Instant::now() - LOG_EVERY);
        assert_eq!(log.hit("a"), Some(6));
    }

    #[test]
    fn the_reserve_is_real_and_given_back_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let p = reserve_path(&dir.path().join("x.db"));
        assert!(ensure_reserve(&p).unwrap());
        assert!(!ensure_reserve(&p).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), RESERVE_BYTES);
        let d = DiskState::default();
        d.set_reserve(p.clone());
        d.hit_full(&RateLog::default());
        assert!(d.is_full() && !p.exists());
        assert_eq!(d.snapshot()["full_errors"], 1);
        *d.checked.lock().unwrap() = None;
        d.recheck(&RateLog::default());
        assert!(!d.is_full() && p.exists());
    }
}
