//! Wiring and lifetime: open the store, start the radios, the hub and the API,
//! tell systemd we are ready, and on SIGTERM/SIGINT shut down in order so that
//! everything accepted is committed before the process exits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ed25519_dalek::VerifyingKey;
use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::hub::{Hub, HubHandle, Liveness};
use crate::policy::{self, Policy};
use crate::radio::{self, RadioHandle};
use crate::secrets::MasterKey;
use crate::store::{self, Store, WriterOptions};
use crate::upstream::{Upstream, UpstreamDeps, UpstreamStatus};

/// Starts logging: journald when stderr is connected to the journal
/// (`JOURNAL_STREAM`), else human-readable lines on stderr. `RUST_LOG` overrides
/// the configured level.
pub fn init_logging(level: &str) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let from_env = EnvFilter::try_from_default_env();
    // Set but not a filter: said once logging is up, instead of silently ignored.
    let bad_env = match (&from_env, std::env::var("RUST_LOG")) {
        (Err(e), Ok(v)) if !v.is_empty() => Some((v, e.to_string())),
        _ => None,
    };
    // The MQTT client's own lines (one per refused PUBACK, say) repeat what the uplink
    // says once per cause: below debug only its errors are kept.
    let configured = match level {
        "debug" | "trace" => level.to_string(),
        _ => format!("{level},rumqttc=error"),
    };
    let filter = from_env
        .or_else(|_| EnvFilter::try_new(&configured))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let warn_bad_env = || {
        if let Some((v, e)) = &bad_env {
            tracing::warn!(rust_log = %v, error = %e, level, "RUST_LOG is not a log filter: ignored, the configured log_level applies");
        }
    };
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journal) = crate::journal::JournalLayer::new("fieldgate") {
            let _ = registry.with(journal).try_init();
            warn_bad_env();
            return;
        }
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .try_init();
    warn_bad_env();
}

fn notify(states: &[NotifyState]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    let _ = sd_notify::notify(false, states);
}

/// A running daemon.
pub struct Daemon {
    pub config: Config,
    pub hub: HubHandle,
    pub radios: Arc<Vec<RadioHandle>>,
    store: Store,
    /// Stops what takes requests: the API and the uplink.
    shutdown: watch::Sender<bool>,
    /// Stops what carries them out (the hub, the radios, sealing), once the requests
    /// already taken have been.
    back_shutdown: watch::Sender<bool>,
    hub_task: JoinHandle<()>,
    api_task: JoinHandle<std::io::Result<()>>,
    /// The API socket's path, and whether systemd made it (then it stays on stop).
    api_socket: (std::path::PathBuf, bool),
    /// The MQTT uplink, when `[upstream]` is configured.
    upstream: Option<Upstream>,
    /// Seals device and network secrets at rest.
    pub master_key: Arc<MasterKey>,
    /// Seals the audit log every `store.audit_seal_interval`.
    seal_task: JoinHandle<()>,
    /// The state directory's lock, released when the daemon has stopped.
    _claim: nix::fcntl::Flock<std::fs::File>,
}

/// Seals the audit log at start and then every `interval` until shutdown (the last
/// seal is made by [`Daemon::stop`] once everything else has stopped writing).
async fn seal_periodically(
    writer: store::Writer,
    db: std::path::PathBuf,
    gateway_id: String,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = store::audit_guard::seal_now(&writer, &db, &gateway_id).await {
                    tracing::warn!(error = %e, "audit sealing failed");
                }
            }
            _ = crate::shutdown::signalled(&mut shutdown) => return,
        }
    }
}

/// The cached policy (applied again at start, with no uplink needed) and the
/// pinned policy key from the config.
fn load_policy(config: &Config, store: &Store) -> Result<(Option<Policy>, Option<VerifyingKey>)> {
    let pinned = match &config.gateway.policy_public_key {
        Some(k) => Some(policy::parse_public_key(k.get_ref()).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let reader = store.reader().context("cannot read the policy cache")?;
    let cached = match store::policies::active(&reader).context("cannot read the policy cache")? {
        None => None,
        Some(stored) => match serde_json::to_vec(&stored.document)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Policy::parse(&bytes).map_err(|e| e.to_string()))
        {
            Ok(p) => {
                tracing::info!(version = p.version, "cached policy loaded");
                Some(p)
            }
            Err(e) => {
                tracing::error!(version = stored.version, error = %e, "the cached policy no longer validates; running on the built-in default");
                None
            }
        },
    };
    Ok((cached, pinned))
}

/// Whether `e` says the database file is damaged or is no database (SQLite's
/// `SQLITE_CORRUPT` / `SQLITE_NOTADB`): nothing a restart would fix.
pub fn database_damaged(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let sqlite = cause.downcast_ref::<rusqlite::Error>().or_else(|| {
            match cause.downcast_ref::<store::StoreError>() {
                Some(store::StoreError::Sql(s)) => Some(s),
                _ => None,
            }
        });
        matches!(
            sqlite,
            Some(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    })
}

/// Claims the state directory for this daemon: an exclusive `flock` on `<db>.lock`, held
/// while the returned file is open; the kernel drops it when the process ends, however it
/// ends, so a stale file never blocks a start. A second daemon on the same directory
/// would interleave its writes with this one's (two audit chains in one table, one outbox
/// drained twice, the same radios opened twice), so it is refused. The file holds the
/// owner's pid, to name it in that refusal.
pub(crate) fn claim_state_dir(db: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = db.parent() {
        store::private_dir(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    let path = store::sidecar(db, ".lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)?;
            lock.rewind()?;
            write!(lock, "{}", std::process::id())?;
            Ok(lock)
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let owner = match pid.trim() {
                "" => String::new(),
                p => format!(" (pid {p})"),
            };
            anyhow::bail!(
                "another fieldgate daemon{owner} is running on the state directory {}; stop it first, or give this one another `gateway.state_dir`",
                db.parent().unwrap_or(db).display()
            )
        }
        Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

impl Daemon {
    /// Opens the store, starts radios, hub and API. Returns once all are up.
    pub async fn start(config: Config) -> Result<Daemon> {
        let started = Instant::now();
        let db = config.db_path();
        let claim = claim_state_dir(&db)?;
        let store = Store::open(&db, WriterOptions::from(&config.store))
            .with_context(|| format!("cannot open the database {}", db.display()))?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (back_shutdown, back_rx) = watch::channel(false);
        store::audit_guard::on_start(
            &store.writer(),
            &db,
            config.gateway_id(),
            store.audit_upgraded(),
        )
        .await
        .context("cannot check the audit log")?;
        let seal_task = tokio::spawn(seal_periodically(
            store.writer(),
            db.clone(),
            config.gateway_id().to_string(),
            config.store.audit_seal_interval,
            back_rx.clone(),
        ));

        let api_listener = api::open_listener(
            config.socket_path(),
            config.api.group.as_ref().map(|g| g.get_ref().as_str()),
        )
        .await
        .context("cannot start the local API")?;

        let master_key = Arc::new(
            MasterKey::locate(&config.master_key_path())
                .context("cannot load the gateway master key")?,
        );
        tracing::info!(source = %master_key.source.display(), "master key loaded");
        let (events_tx, events_rx) = mpsc::channel(crate::hub::EVENT_QUEUE);
        let radios = Arc::new(radio::spawn_all(
            &config.radios,
            events_tx,
            back_rx.clone(),
            Some(Arc::new(radio::SecretSink::new(
                store.writer(),
                master_key.clone(),
            ))),
            Some(&config.gateway.state_dir.get_ref().join("radios")),
        ));
        let (cached_policy, pinned_key) = load_policy(&config, &store)?;
        let (hub, hub_handle, requests_rx) = Hub::new(config.gateway_id(), store.writer(), &radios);
        let hub = hub
            .with_policy(cached_policy, pinned_key)
            .with_master_key(master_key.clone())
            .with_linger(config.store.linger)
            .with_state_interval(config.store.state_interval);
        let upstream = match &config.upstream {
            Some(up) => Some(
                Upstream::start(
                    up,
                    UpstreamDeps {
                        gateway_id: config.gateway_id().to_string(),
                        db_path: db.clone(),
                        writer: store.writer(),
                        hub: hub_handle.clone(),
                        radios: radios.clone(),
                        gate: hub.outbox_gate(),
                        bridges: radio::lora::bridge::routes(&config.radios, &radios),
                        shutdown: shutdown_rx.clone(),
                    },
                )
                .context("cannot start the MQTT uplink")?,
            ),
            None => None,
        };

        let mut usec = 0u64;
        let liveness = sd_notify::watchdog_enabled(false, &mut usec).then(|| Liveness {
            interval: Duration::from_micros(usec / 2),
            on_alive: Box::new(|| notify(&[NotifyState::Watchdog])),
        });
        let hub_task = tokio::spawn(hub.run(events_rx, requests_rx, back_rx, liveness));

        let state = ApiState {
            gateway_id: config.gateway_id().into(),
            db_path: db.clone(),
            writer: store.writer(),
            hub: hub_handle.clone(),
            radios: radios.clone(),
            started,
            stats: Default::default(),
            upstream: upstream.as_ref().map(|u| u.status.clone()),
            stopping: shutdown_rx.clone(),
        };
        let mut api_shutdown = shutdown_rx.clone();
        let api_socket = (api_listener.path.clone(), api_listener.activated);
        let api_task = tokio::spawn(api::serve(api_listener.listener, state, async move {
            crate::shutdown::signalled(&mut api_shutdown).await;
        }));

        tracing::info!(
            gateway = config.gateway_id(),
            db = %db.display(),
            socket = %api_socket.0.display(),
            radios = radios.len(),
            "fieldgate ready"
        );
        notify(&[
            NotifyState::Ready,
            NotifyState::Status(&format!(
                "serving: {} radio(s), API at {}",
                radios.len(),
                api_socket.0.display()
            )),
        ]);
        Ok(Daemon {
            config,
            hub: hub_handle,
            radios,
            store,
            shutdown,
            back_shutdown,
            hub_task,
            api_task,
            api_socket,
            upstream,
            master_key,
            seal_task,
            _claim: claim,
        })
    }

    /// The uplink's live status, when `[upstream]` is configured.
    pub fn upstream_status(&self) -> Option<Arc<UpstreamStatus>> {
        self.upstream.as_ref().map(|u| u.status.clone())
    }

    pub fn db_path(&self) -> std::path::PathBuf {
        self.store.path().to_path_buf()
    }

    /// Stops everything in order and waits until the last write has committed: first
    /// what takes requests (the API, up to 5 s for those in progress; the uplink, up
    /// to 2 s for those it took), while the hub and the radios still carry them out;
    /// then the hub and the radios.
    pub async fn stop(self) -> Result<()> {
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        tracing::info!("shutting down");
        let _ = self.shutdown.send(true);
        match self.api_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "API server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "API task failed"),
        }
        // Publishes `offline`, disconnects and drops its store handles.
        if let Some(up) = self.upstream {
            up.join().await;
        }
        let _ = self.back_shutdown.send(true);
        if let Err(e) = self.hub_task.await {
            tracing::warn!(error = %e, "hub task failed");
        }
        // Each driver closes its join window before it lets go of its radio.
        radio::stopped(&self.radios, radio::CLOSE_AT_STOP + Duration::from_secs(1)).await;
        let _ = self.seal_task.await;
        // Nothing else writes now: seal the last epoch so it is covered as well.
        if let Err(e) = store::audit_guard::seal_now(
            &self.store.writer(),
            self.store.path(),
            self.config.gateway_id(),
        )
        .await
        {
            tracing::warn!(error = %e, "audit sealing at shutdown failed");
        }
        drop(self.hub);
        drop(self.radios);
        api::ApiListener::cleanup(&self.api_socket.0, self.api_socket.1);
        // Joins the writer thread: everything queued is committed when this returns.
        tokio::task::spawn_blocking(move || self.store.close())
            .await
            .context("store writer did not stop cleanly")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made: install it before
/// anything starts, so that a signal during start-up is a clean stop, not a kill.
/// SIGHUP (a "reload" reflex, or a closed terminal) is caught too and does not stop
/// the daemon: its default action would kill it without a clean stop, and systemd
/// counts that as a clean exit, so the gateway would stay down.
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT (one that came already counts).
    pub async fn wait(&mut self) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return tracing::info!("SIGTERM received"),
                _ = self.int.recv() => return tracing::info!("SIGINT received"),
                _ = self.hup.recv() => tracing::warn!(
                    "SIGHUP received and ignored: the configuration is read at start only; \
                     apply changes with `systemctl restart fieldgate`"
                ),
            }
        }
    }
}

/// `fieldgate run`: serve until a signal arrives.
pub async fn run(config: Config) -> Result<()> {
    let mut signals = StopSignals::install()?;
    let daemon = Daemon::start(config).await?;
    signals.wait().await;
    daemon.stop().await
}
