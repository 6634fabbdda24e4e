//! The store: the only place that persists anything (SQLite, WAL).
//!
//! One dedicated writer thread owns the write connection and commits writes in
//! batches (group commit): a write is reported done only after the transaction
//! holding it has committed, so "acknowledged" always means "on disk". Readers open
//! their own read-only connections. Nothing outside this module writes SQL.

pub mod audit;
pub mod audit_guard;
pub mod audit_seal;
pub mod blocks;
pub(crate) mod capture;
pub mod credentials;
pub mod disk;
pub mod names;
pub mod outbox;
pub mod policies;
pub mod registry;
pub mod replay;
pub mod requests;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::config::{StoreConfig, Synchronous};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("cannot create the state directory {0}: {1}")]
    StateDir(PathBuf, std::io::Error),
    #[error("the store writer has stopped")]
    WriterGone,
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("{0}")]
    Invalid(String),
    /// An audit record the action needs was not stored (something on the audit table
    /// discarded it): the action does not go ahead.
    #[error("{0}")]
    AuditNotStored(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Tuning for the writer thread.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    pub commit_window: Duration,
    pub commit_max_ops: usize,
    pub synchronous: Synchronous,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            commit_window: Duration::from_millis(50),
            commit_max_ops: 1000,
            synchronous: Synchronous::Full,
        }
    }
}

impl From<&StoreConfig> for WriterOptions {
    fn from(c: &StoreConfig) -> Self {
        WriterOptions {
            commit_window: c.commit_window,
            commit_max_ops: *c.commit_max_ops.get_ref(),
            synchronous: c.synchronous,
        }
    }
}

/// Counters the writer keeps, shown by `fieldgate status`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub transactions: AtomicU64,
    pub operations: AtomicU64,
    pub failed_operations: AtomicU64,
    pub failed_commits: AtomicU64,
    /// Times the audit high-water mark could not be rewritten after a commit.
    pub audit_mark_failures: AtomicU64,
    /// Raised when the audit log is found broken (`audit_chain_broken`): why.
    pub audit_alarm: std::sync::Mutex<Option<String>>,
    /// The gateway id the writer's own audit records are queued under.
    pub gateway_id: std::sync::OnceLock<String>,
    /// A full disk: the reserve, the state, the counts.
    pub disk: disk::DiskState,
    /// One error line per cause per 10 s.
    pub log: disk::RateLog,
    /// When the WAL was last checkpointed for a full disk.
    wal_reclaimed: std::sync::Mutex<Option<std::time::Instant>>,
}

impl WriterStats {
    /// The `audit_chain_broken` alarm's text, if raised.
    pub fn audit_alarm(&self) -> Option<String> {
        self.audit_alarm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn raise_audit_alarm(&self, why: String) {
        *self.audit_alarm.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }
}

type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Done + Send>;

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
    side: Arc<Side>,
}

/// What the writer thread shares with its handles besides the job queue.
#[derive(Default)]
struct Side {
    /// Jobs that ride the next batch committed for another reason ([`Writer::defer`]).
    deferred: std::sync::Mutex<Vec<Job>>,
    /// Signalled after a commit whose new outbox rows were not handed over through
    /// the tap ([`Writer::committed`]).
    committed: tokio::sync::Notify,
    /// Where the outbox rows each commit added go ([`Writer::tap_outbox`]).
    tap: std::sync::Mutex<Option<mpsc::Sender<CommittedRows>>>,
    /// The tap's reader keeps up and wants the rows ([`Writer::want_committed_rows`]).
    tap_wanted: std::sync::atomic::AtomicBool,
}

/// The outbox messages one commit added, read back by the writer right after the
/// commit (its pages are still in the writer's cache): every message with a seq
/// above `after`, up to `upto` (the highest seq handed out), or the first
/// [`TAP_MESSAGES`] of them.
#[derive(Debug)]
pub struct CommittedRows {
    pub after: i64,
    pub upto: i64,
    pub rows: Vec<outbox::OutboxRow>,
    /// At most this many were read: as many rows means there may be more.
    pub capacity: usize,
}

/// Most messages a commit may add to be handed over: a bigger commit is only
/// signalled, and the uplink reads it on its own thread. Under full load the writer
/// is the bottleneck and reading back thousands of rows there would slow every
/// commit; under light load the read-back saves the uplink a read of the file (and
/// a thread hop) per commit.
const TAP_MESSAGES: usize = 256;

impl Side {
    fn take_deferred(&self) -> Vec<Job> {
        std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The running store: the writer handle plus what readers need.
pub struct Store {
    path: PathBuf,
    /// This open created the audit seal table (a database from before seals and marks).
    audit_upgraded: bool,
    writer: Writer,
    thread: Option<JoinHandle<()>>,
}

/// How many prepared statements the writer keeps (each a few KiB, only once used).
const WRITER_STATEMENTS: usize = 96;

fn configure(conn: &Connection, sync: Synchronous) -> StoreResult<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoint journals live in memory rather than in temp files: every write job
    // runs in a savepoint, and a file-backed sub-journal costs a pwrite per page.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoint every 4,000 WAL pages (16 MiB) instead of 1,000: outbox pages are
    // written and freed again within seconds, so a longer interval copies fewer
    // superseded page versions into the database file (less CPU, fewer flash writes).
    conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database, migrates it and starts the writer.
    pub fn open(path: &Path, options: WriterOptions) -> StoreResult<Store> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                private_dir(dir).map_err(|e| StoreError::StateDir(dir.into(), e))?;
            }
        }
        let mut conn = Connection::open(path)?;
        configure(&conn, options.synchronous)?;
        // Every statement the writer runs per event, per commit and per delivery is
        // prepared once and kept: more of them than rusqlite's default of 16, which
        // made the least recently used ones be parsed again on every commit.
        conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
        // The registry, credentials and audit log are the daemon's alone, whatever
        // the umask it was started with (SQLite gives -wal/-shm the same mode); so are
        // the audit seal key (whoever reads it can seal what comes next) and the mark.
        for file in [
            path.to_path_buf(),
            sidecar(path, "-wal"),
            sidecar(path, "-shm"),
            audit_seal::key_path(path),
            audit_guard::mark_path(path),
        ] {
            private_file(&file).map_err(|e| StoreError::StateDir(file.clone(), e))?;
        }
        let had_seals: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_seals'",
            [],
            |r| r.get(0),
        )?;
        schema::migrations().to_latest(&mut conn)?;

        let (tx, rx) = mpsc::channel::<Job>(4096);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let side = Arc::new(Side::default());
        let thread_side = side.clone();
        let mark = audit_guard::mark_path(path);
        let reserve = disk::reserve_path(path);
        if let Err(e) = disk::ensure_reserve(&reserve) {
            tracing::warn!(error = %e, reserve = %reserve.display(), "cannot set the disk-full reserve aside");
        }
        stats.disk.set_reserve(reserve);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, options, &thread_stats, &thread_side, &mark))
            .map_err(|e| StoreError::Commit(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            path: path.to_path_buf(),
            audit_upgraded: had_seals == 0,
            writer: Writer {
                jobs: tx,
                stats,
                side,
            },
            thread: Some(thread),
        })
    }

    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this open created the audit seal table: the database predates audit
    /// marks, so a missing mark is expected once.
    pub fn audit_upgraded(&self) -> bool {
        self.audit_upgraded
    }

    /// A new read-only connection (WAL readers do not block the writer).
    pub fn reader(&self) -> StoreResult<Connection> {
        open_reader(&self.path)
    }

    /// Stops accepting writes, commits what is queued and joins the writer thread.
    /// Writer handles still held elsewhere keep the thread alive until dropped, so
    /// callers drop theirs first.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Replace our sender with a closed one so the thread sees the channel end
        // once every other handle is gone.
        let (closed, _) = mpsc::channel(1);
        self.writer.jobs = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Creates `dir` (and its parents) as 0700, or takes others' access away from an
/// existing one (its group bits are the installer's choice, e.g. 0750).
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    // A sticky directory (like /tmp) is shared by design: it is not the gateway's to
    // close, and its files are not private in it.
    if mode & 0o1000 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is a shared directory (sticky bit set, mode {mode:o}): use a directory of the gateway's own",
                dir.display()
            ),
        ));
    }
    if mode & 0o007 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o007))?;
    }
    Ok(())
}

/// Takes group and others' access away from a database file, if it exists.
fn private_file(file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(file) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

pub fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // A reader mostly scans once (a device list, an audit export) or reads the
    // outbox's newest pages: a page cache of 512 KiB instead of SQLite's 2 MiB. A
    // full scan of 10,000 devices otherwise filled 2 MiB that the allocator kept
    // after the connection closed.
    conn.pragma_update(None, "cache_size", -512)?;
    Ok(conn)
}

/// Hands the outbox messages the last commit added to the tap, if one listens and
/// has room. False when the uplink is to learn of them by the commit signal and
/// read them itself (no tap, a full tap, the first commit seen, an error).
fn hand_over_committed(conn: &Connection, side: &Side, upto: &mut Option<i64>) -> bool {
    let tap = side.tap.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let wanted = side.tap_wanted.load(std::sync::atomic::Ordering::Relaxed);
    let Some(tap) = tap.filter(|t| wanted && !t.is_closed()) else {
        *upto = None;
        return false;
    };
    let Ok(now) = outbox::last_seq(conn) else {
        *upto = None;
        return false;
    };
    let Some(before) = upto.replace(now) else {
        return false;
    };
    if now <= before {
        // Nothing was queued: nothing to tell.
        return true;
    }
    if now - before > TAP_MESSAGES as i64 {
        return false;
    }
    let Ok(permit) = tap.try_reserve() else {
        return false;
    };
    let captured = capture::take().filter(|rows| capture::covers(rows, before, now));
    match captured.map_or_else(|| outbox::pending(conn, before, TAP_MESSAGES), Ok) {
        Ok(rows) => {
            permit.send(CommittedRows {
                after: before,
                upto: now,
                rows,
                capacity: TAP_MESSAGES,
            });
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read back the committed outbox rows");
            false
        }
    }
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    options: WriterOptions,
    stats: &WriterStats,
    side: &Side,
    mark: &Path,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(options.commit_max_ops);
    // The highest outbox seq as of the last commit, once a tap is listening.
    let mut tapped_upto: Option<i64> = None;
    // From here on every append is checked against the head this thread wrote.
    if let Err(e) = audit::track_head(&conn) {
        tracing::error!(error = %e, "cannot read the audit log's head");
    }
    while let Some(first) = rx.blocking_recv() {
        let opened = Instant::now();
        batch.push(first);
        // Group commit: take what is queued now, up to the window and the op limit.
        while batch.len() < options.commit_max_ops && opened.elapsed() < options.commit_window {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        batch.extend(side.take_deferred());
        // A small commit's messages are captured as they are queued, for the tap.
        capture::begin(
            (tapped_upto.is_some() && side.tap_wanted.load(Ordering::Relaxed))
                .then_some(TAP_MESSAGES),
        );
        run_batch(&conn, &mut batch, stats);
        if !hand_over_committed(&conn, side, &mut tapped_upto) {
            side.committed.notify_one();
        }
        capture::begin(None);
        if let Some(why) = audit::take_tampered() {
            audit_guard::tampered_while_running(&conn, &why, stats);
        }
        if audit_guard::take_appended() {
            update_mark(&conn, mark, stats);
        }
    }
    // Deferred work still waiting is committed before the thread ends.
    batch.extend(side.take_deferred());
    if !batch.is_empty() {
        run_batch(&conn, &mut batch, stats);
    }
    // A clean stop: the mark says so, and a record found after it at the next start
    // was not the daemon's.
    if audit::tracking() {
        let stopped = audit_guard::head(&conn)
            .map_err(|e| e.to_string())
            .and_then(|h| audit_guard::write_stopped_mark(mark, &h).map_err(|e| e.to_string()));
        if let Err(e) = stopped {
            tracing::error!(error = %e, "cannot write the audit mark at the stop");
        }
    }
    // The WAL into the database now, so a failure is said: closing the connection would
    // try the same silently. What stays in the WAL is not lost (replayed at the next
    // open), but a full disk leaves it there.
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match checkpoint {
        Ok((log, done)) if done < log => {
            tracing::debug!(
                frames = log,
                checkpointed = done,
                "the WAL was checkpointed in part at the stop (readers still open)"
            );
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "the WAL could not be checkpointed at the stop: it stays beside the database and is replayed at the next start (nothing is lost)");
        }
    }
    tracing::debug!("store writer stopped");
}

/// Runs a statement the writer runs for every commit or job (`BEGIN`, `SAVEPOINT`,
/// ...) from the statement cache: parsed once, not each time.
pub(crate) fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_batch(conn: &Connection, batch: &mut Vec<Job>, stats: &WriterStats) {
    stats.disk.recheck(&stats.log);
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        stats.failed_commits.fetch_add(1, Ordering::Relaxed);
        if disk::is_disk_full(&e) {
            stats.disk.hit_full(&stats.log);
        }
        let msg = e.to_string();
        for job in batch.drain(..) {
            // Jobs were not run; report the failure without running them.
            drop(job);
        }
        if let Some(n) = stats.log.hit("begin_failed") {
            tracing::error!(error = %msg, failures = n, "store: cannot begin a transaction");
        }
        if stats.disk.is_full() {
            reclaim_wal(conn, stats);
        }
        return;
    }
    let mut done = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        done.push(job(conn));
    }
    let commit = run_cached(conn, "COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        capture::spoil();
        if audit::tracking() {
            let _ = audit::track_head(conn);
        }
        stats.failed_commits.fetch_add(1, Ordering::Relaxed);
        if disk::is_disk_full(&e) {
            stats.disk.hit_full(&stats.log);
        }
        if let Some(n) = stats.log.hit("commit_failed") {
            tracing::error!(error = %e, failures = n, "store: commit failed");
        }
        StoreError::Commit(e.to_string())
    });
    stats.transactions.fetch_add(1, Ordering::Relaxed);
    stats
        .operations
        .fetch_add(done.len() as u64, Ordering::Relaxed);
    for d in done {
        d(match &commit {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::Commit(e.to_string())),
        });
    }
    if stats.disk.is_full() {
        reclaim_wal(conn, stats);
    }
}

/// While the disk is full, the WAL is checkpointed and truncated (at most once a
/// second). Commits append to the WAL, and SQLite checkpoints it only at 1,000 pages:
/// on a disk that fills first, the WAL holds every version of the pages written since
/// the last checkpoint, and grows into the space the reserve gave back until nothing
/// fits, not even an audit record. Checkpointed, the database takes only the latest
/// version of each page, and the WAL's space is given back to the filesystem.
fn reclaim_wal(conn: &Connection, stats: &WriterStats) {
    {
        let mut last = stats
            .wal_reclaimed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return;
        }
        *last = Some(std::time::Instant::now());
    }
    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match result {
        Ok((busy, log, done)) => {
            tracing::debug!(
                busy,
                frames = log,
                checkpointed = done,
                "disk full: WAL checkpointed"
            );
        }
        Err(e) => {
            if let Some(n) = stats.log.hit("wal_reclaim") {
                tracing::error!(error = %e, failures = n, "disk full: the WAL could not be checkpointed");
            }
        }
    }
}

impl Writer {
    fn make_job<R, F>(f: F, reply: oneshot::Sender<StoreResult<R>>, stats: Arc<WriterStats>) -> Job
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        Box::new(move |conn: &Connection| {
            // Each job runs in its own savepoint so one failing job does not take
            // its batch-mates down with it.
            let result = match run_cached(conn, "SAVEPOINT job") {
                Ok(()) => match f(conn) {
                    Ok(r) => run_cached(conn, "RELEASE job")
                        .map(|_| r)
                        .map_err(StoreError::from),
                    Err(e) => {
                        if matches!(&e, StoreError::Sql(s) if disk::is_disk_full(s)) {
                            stats.disk.hit_full(&stats.log);
                        }
                        let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                        capture::spoil();
                        if audit::tracking() {
                            let _ = audit::track_head(conn);
                        }
                        stats.failed_operations.fetch_add(1, Ordering::Relaxed);
                        Err(e)
                    }
                },
                Err(e) => Err(StoreError::from(e)),
            };
            Box::new(move |commit: StoreResult<()>| {
                let _ = reply.send(commit.and(result));
            })
        })
    }

    /// Runs `f` inside the next batch; resolves once that batch has committed.
    pub async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Self::make_job(f, tx, self.stats.clone());
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Queues `f` for the next batch and returns at once with a receiver that
    /// resolves once that batch has committed. A caller that queues several writes
    /// before awaiting any lets the writer commit them together (one fsync for all
    /// of them); the writer runs and commits jobs in the order they were queued.
    pub async fn queue<R, F>(&self, f: F) -> StoreResult<oneshot::Receiver<StoreResult<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Self::make_job(f, tx, self.stats.clone());
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        Ok(rx)
    }

    /// The same as [`Writer::write`] for callers outside an async runtime.
    pub fn write_blocking<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Self::make_job(f, tx, self.stats.clone());
        self.jobs
            .blocking_send(job)
            .map_err(|_| StoreError::WriterGone)?;
        rx.blocking_recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Queues `f` without waiting; `on_done` is called after the commit.
    pub fn submit<R, F>(&self, f: F) -> StoreResult<oneshot::Receiver<StoreResult<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Self::make_job(f, tx, self.stats.clone());
        self.jobs
            .blocking_send(job)
            .map_err(|_| StoreError::WriterGone)?;
        Ok(rx)
    }

    /// Queues `f` to run in the next batch the writer commits for any other reason,
    /// without waking it: work that may wait (deleting delivered outbox rows) then
    /// costs no transaction and no fsync of its own while other writes come in. The
    /// receiver resolves once that batch has committed. Nothing commits it while the
    /// writer stays idle: the caller calls [`Writer::flush`] when it has waited long
    /// enough.
    pub fn defer<R, F>(&self, f: F) -> oneshot::Receiver<StoreResult<R>>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Self::make_job(f, tx, self.stats.clone());
        self.side
            .deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
        rx
    }

    /// Runs `f` in the writer's next commit, whatever brings it, and resolves once that
    /// commit is done; when nothing else commits within `idle`, commits it on its own.
    /// Work that need not be durable before the caller goes on (deleting delivered
    /// rows, a frame counter whose frame's effects commit with it) so shares an fsync
    /// with what commits anyway.
    pub async fn with_next_commit<R, F>(&self, f: F, idle: Duration) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let mut done = self.defer(f);
        let r = match tokio::time::timeout(idle, &mut done).await {
            Ok(r) => r,
            Err(_) => {
                self.flush().await?;
                done.await
            }
        };
        r.map_err(|_| StoreError::WriterGone)?
    }

    /// Commits now whatever was deferred (an empty transaction when nothing was).
    pub async fn flush(&self) -> StoreResult<()> {
        self.write(|_| Ok(())).await
    }

    /// Resolves after the writer's next commit, or at once when it committed since
    /// the last call returned (one stored signal, however many commits).
    pub async fn committed(&self) {
        self.side.committed.notified().await
    }

    /// Whether the tap's reader wants the rows now: while it is disconnected or
    /// behind (reading a backlog from the file), reading each commit back would be
    /// wasted, and commits are only signalled. Off until the reader says so.
    pub fn want_committed_rows(&self, wanted: bool) {
        self.side
            .tap_wanted
            .store(wanted, std::sync::atomic::Ordering::Relaxed);
    }

    /// From now on the outbox messages each commit adds are handed over here, read
    /// back by the writer right after its commit, instead of only signalled through
    /// [`Writer::committed`] for the reader to read them again from the file. Then
    /// the commit signal comes only when a commit's messages were not handed over
    /// (the receiver was full, or did not want them: [`Writer::want_committed_rows`]).
    /// One tap at a time: a new one replaces it.
    pub fn tap_outbox(&self, capacity: usize) -> mpsc::Receiver<CommittedRows> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        *self.side.tap.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

/// Rewrites the audit high-water mark after a batch that appended to the log (when
/// the batch rolled back, the head read here is the old one, which is still right).
fn update_mark(conn: &Connection, mark: &Path, stats: &WriterStats) {
    let result = audit_guard::head(conn)
        .map_err(|e| e.to_string())
        .and_then(|h| audit_guard::write_mark(mark, &h).map_err(|e| e.to_string()));
    if let Err(e) = result {
        let n = stats.audit_mark_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n.is_power_of_two() {
            tracing::error!(error = %e, failures = n, "cannot rewrite the audit high-water mark");
        }
    }
}

/// Runs `PRAGMA integrity_check` and returns its first line ("ok" when healthy).
pub fn integrity_check(conn: &Connection) -> StoreResult<String> {
    Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?)
}

/// Appends an audit record and queues it for the upstream audit stream, in the
/// caller's transaction, so the record and its copy for the cloud commit together.
pub fn record_audit(
    conn: &Connection,
    gateway_id: &str,
    entry: &audit::AuditEntry,
) -> StoreResult<audit::AuditRecord> {
    let now = std::time::SystemTime::now();
    let record = audit::append(conn, entry, &crate::model::rfc3339(now))?;
    outbox::append(
        conn,
        gateway_id,
        &outbox::NewMessage {
            kind: outbox::MessageKind::Audit,
            device: None,
            topic: "audit".into(),
            retain: false,
            data: serde_json::to_value(&record).unwrap_or(serde_json::Value::Null),
            event_time: now,
        },
    )?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_commit_and_failures_stay_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), WriterOptions::default()).unwrap();
        let w = store.writer();
        let ok = w.submit(|c| {
            c.execute("INSERT INTO policies (version, document, source, received_at) VALUES (1, '{}', 'test', 'now')", [])?;
            Ok(())
        });
        let bad = w.submit(|c| {
            c.execute("INSERT INTO policies (version, document, source, received_at) VALUES (2, '{}', 'test', 'now')", [])?;
            Err::<(), _>(StoreError::Invalid("refused".into()))
        });
        ok.unwrap().blocking_recv().unwrap().unwrap();
        assert!(bad.unwrap().blocking_recv().unwrap().is_err());
        let r = store.reader().unwrap();
        let versions: Vec<i64> = r
            .prepare("SELECT version FROM policies")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(versions, vec![1]);
        assert_eq!(integrity_check(&r).unwrap(), "ok");
    }

    /// The tap gets each commit's new outbox messages, read back after the commit,
    /// while its reader wants them; otherwise (the first commit it sees, not wanted,
    /// full) the commit is signalled instead, and the reader reads the file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_outbox_rows_are_handed_over_or_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), WriterOptions::default()).unwrap();
        let w = store.writer();
        let append = |n: usize| {
            move |c: &Connection| {
                for _ in 0..n {
                    outbox::append(
                        c,
                        "gw",
                        &outbox::NewMessage {
                            kind: outbox::MessageKind::Lifecycle,
                            device: None,
                            topic: "event".into(),
                            retain: false,
                            data: serde_json::json!({}),
                            event_time: std::time::SystemTime::now(),
                        },
                    )?;
                }
                Ok(())
            }
        };
        let signalled = |w: &Writer| {
            let w = w.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(200), w.committed())
                    .await
                    .is_ok()
            }
        };
        let mut tap = w.tap_outbox(2);
        w.write(append(1)).await.unwrap();
        assert!(signalled(&w).await, "not wanted yet: signalled");
        w.want_committed_rows(true);
        w.write(append(1)).await.unwrap();
        assert!(signalled(&w).await, "the first commit it sees: signalled");
        assert!(tap.try_recv().is_err());
        w.write(append(3)).await.unwrap();
        let c = tap.recv().await.unwrap();
        assert_eq!((c.after, c.upto), (2, 5));
        assert_eq!(c.rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(!signalled(&w).await, "handed over, not signalled");
        // A commit that queues nothing tells nothing.
        w.flush().await.unwrap();
        assert!(tap.try_recv().is_err() && !signalled(&w).await);
        // Full: signalled, and the next one handed over starts after it.
        w.write(append(1)).await.unwrap();
        w.write(append(1)).await.unwrap();
        w.write(append(1)).await.unwrap();
        assert!(signalled(&w).await, "the tap was full");
        assert_eq!(tap.recv().await.unwrap().rows[0].seq, 6);
        assert_eq!(tap.recv().await.unwrap().rows[0].seq, 7);
        w.write(append(1)).await.unwrap();
        let c = tap.recv().await.unwrap();
        assert_eq!((c.after, c.upto, c.rows[0].seq), (8, 9, 9));
        // Not wanted: signalled.
        w.want_committed_rows(false);
        w.write(append(1)).await.unwrap();
        assert!(signalled(&w).await && tap.try_recv().is_err());
        // Wanted again; a commit bigger than TAP_MESSAGES is only signalled (read on
        // the uplink's thread), and the next small one is handed over after it.
        w.want_committed_rows(true);
        w.write(append(1)).await.unwrap();
        assert!(signalled(&w).await);
        w.write(append(TAP_MESSAGES + 1)).await.unwrap();
        assert!(signalled(&w).await && tap.try_recv().is_err());
        w.write(append(1)).await.unwrap();
        let c = tap.recv().await.unwrap();
        let last = 11 + TAP_MESSAGES as i64 + 1;
        assert_eq!((c.after, c.upto), (last, last + 1));
    }

    /// What the writer hands over is what committed, whether it was captured as it
    /// was queued or read back: a job that failed after queueing (its savepoint
    /// rolled back, its seq given out again, here to a message queued in a way that
    /// is not captured) leaves nothing of its own behind in it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handed_over_rows_are_what_committed() {
        // The first round's jobs commit together, or (as a busy machine may make
        // them) the writer's first job commits alone.
        for split in [false, true] {
            handed_over_rows_are_what_committed_when(split).await;
        }
    }

    async fn handed_over_rows_are_what_committed_when(split_first: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), WriterOptions::default()).unwrap();
        let w = store.writer();
        let message = |topic: &str| outbox::NewMessage {
            kind: outbox::MessageKind::Lifecycle,
            device: None,
            topic: topic.into(),
            retain: false,
            data: serde_json::json!({"topic": topic}),
            event_time: std::time::SystemTime::now(),
        };
        let mut tap = w.tap_outbox(8);
        w.want_committed_rows(true);
        let reader = store.reader().unwrap();
        // (topic, how it is queued: 0 captured, 1 captured then the job fails,
        // 2 not captured)
        let rounds: [&[(&str, u8)]; 4] = [
            &[("first", 0)],
            &[("a", 0), ("b", 0)],
            &[("lost", 1), ("bridged", 2)],
            &[("c", 0), ("lost", 1), ("d", 0), ("bridged", 2)],
        ];
        let mut after = 0;
        for (round, jobs) in rounds.into_iter().enumerate() {
            // The writer is held busy while the round's jobs queue, so that they
            // commit together.
            let mut waits = vec![w
                .queue(|_| {
                    std::thread::sleep(Duration::from_millis(100));
                    Ok(())
                })
                .await
                .unwrap()];
            if round == 0 && split_first {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            for &(topic, how) in jobs {
                let m = message(topic);
                waits.push(
                    w.queue(move |c| match how {
                        2 => outbox::append_bridged(c, &m.topic, b"{}").map(drop),
                        _ => {
                            let seq = outbox::append(c, "gw", &m)?;
                            match how {
                                1 => Err(StoreError::Invalid(format!("failed after seq {seq}"))),
                                _ => Ok(()),
                            }
                        }
                    })
                    .await
                    .unwrap(),
                );
            }
            for done in waits {
                let _ = done.await.unwrap();
            }
            let committed = outbox::pending(&reader, after, 100).unwrap();
            let upto = committed.last().unwrap().seq;
            if round == 0 {
                // The first commit the tap sees is only signalled. When a busy
                // machine lets the sleeping job commit alone, the next commit (the
                // round's message) is handed over: round 1 skips it.
                after = upto;
                continue;
            }
            let mut handed = Vec::new();
            while handed
                .last()
                .is_none_or(|r: &outbox::OutboxRow| r.seq < upto)
            {
                let c = tokio::time::timeout(Duration::from_secs(5), tap.recv())
                    .await
                    .unwrap()
                    .unwrap();
                handed.extend(c.rows.into_iter().filter(|r| round > 1 || r.seq > after));
            }
            let key = |rows: &[outbox::OutboxRow]| -> Vec<(i64, String, String, Vec<u8>)> {
                rows.iter()
                    .map(|r| (r.seq, r.msg_id.clone(), r.topic.clone(), r.payload.clone()))
                    .collect()
            };
            assert_eq!(key(&handed), key(&committed), "round {round}");
            assert!(committed.iter().all(|r| r.topic != "lost"), "round {round}");
            after = upto;
        }
    }

    /// Deferred work waits for a commit made for another reason (no transaction of
    /// its own), or for a flush; work deferred when the writer stops still commits.
    #[test]
    fn deferred_work_rides_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), WriterOptions::default()).unwrap();
        let w = store.writer();
        let insert = |v: i64| {
            move |c: &Connection| {
                c.execute("INSERT INTO policies (version, document, source, received_at) VALUES (?1, '{}', 'test', 'now')", [v])?;
                Ok(())
            }
        };
        let count = || -> i64 {
            store
                .reader()
                .unwrap()
                .query_row("SELECT COUNT(*) FROM policies", [], |r| r.get(0))
                .unwrap()
        };
        let before = w.stats().transactions.load(Ordering::Relaxed);
        let mut deferred = w.defer(insert(1));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            deferred.try_recv().is_err(),
            "committed with nothing else to commit"
        );
        assert_eq!(count(), 0);
        w.write_blocking(insert(2)).unwrap();
        deferred.blocking_recv().unwrap().unwrap();
        assert_eq!(count(), 2);
        assert_eq!(
            w.stats().transactions.load(Ordering::Relaxed) - before,
            1,
            "the deferred insert had a transaction of its own"
        );
        let deferred = w.defer(insert(3));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(w.flush()).unwrap();
        deferred.blocking_recv().unwrap().unwrap();
        assert_eq!(count(), 3);
        let last = w.defer(insert(4));
        drop(w);
        store.close();
        last.blocking_recv().unwrap().unwrap();
        let c = Connection::open(dir.path().join("t.db")).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM policies", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 4);
    }
}
