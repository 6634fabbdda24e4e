//! Runs the sans-IO Z-Wave controller emulator (`fieldgate_zwave::emulator`) on a byte
//! stream: the far end of `sim://zwave`'s in-process pipe, a TCP connection
//! (`fieldgate emulate zwave --listen`), or the master side of a pseudo-terminal whose slave
//! path a driver opens through tokio-serial like a real USB stick ([`PtyEmulator`]).
//!
//! This module owns the pumping (bytes in, bytes out, a timer for the emulator's deadlines)
//! and the handle tests use ([`SimEmulator`]: add a pending node, press a node's button,
//! inject a fault, read back what the nodes sent); nothing about the protocol. The emulator
//! (and so its network) outlives a link: a driver that re-opens `sim://zwave` finds the
//! controller it left, as with real hardware.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use fieldgate_zwave::emulator::{Emulator, EmulatorConfig, Fault, NodeKind, Recorded};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::Notify;

struct Shared {
    emulator: Mutex<Emulator>,
    wake: Notify,
    epoch: Instant,
}

/// A shareable handle on one emulated controller and its nodes.
#[derive(Clone)]
pub struct SimEmulator {
    shared: Arc<Shared>,
}

impl SimEmulator {
    pub fn new(config: EmulatorConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                emulator: Mutex::new(Emulator::new(config)),
                wake: Notify::new(),
                epoch: Instant::now(),
            }),
        }
    }

    /// Emulator time now.
    pub fn now(&self) -> Duration {
        self.shared.epoch.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, Emulator> {
        // A panic elsewhere must not take the emulator down with it.
        self.shared
            .emulator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the emulator at the current time, then lets the pump flush its output.
    pub fn with<R>(&self, f: impl FnOnce(&mut Emulator, Duration) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.lock(), now);
        self.shared.wake.notify_one();
        r
    }

    pub fn inject(&self, fault: Fault) {
        self.with(|e, now| e.inject(now, fault));
    }

    /// A node that joins on the host's next AddNodeToNetwork.
    pub fn add_pending_node(&self, kind: NodeKind) {
        self.with(|e, _| e.add_pending_node(kind));
    }

    /// Presses a node's button (exclusion, wake-up, NIF).
    pub fn press_button(&self, node: u8) {
        self.with(|e, now| e.press_button(now, node));
    }

    /// Makes a node report now.
    pub fn report_now(&self, node: u8) {
        self.with(|e, now| e.report_now(now, node));
    }

    /// A node stops (or starts again) answering.
    pub fn set_node_dead(&self, node: u8, dead: bool) {
        self.with(|e, _| e.set_node_dead(node, dead));
    }

    /// Every value the nodes sent so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.with(|e, _| e.recorded().to_vec())
    }

    /// The values the nodes sent after the first `skip`.
    pub fn recorded_since(&self, skip: usize) -> Vec<Recorded> {
        self.with(|e, _| e.recorded().get(skip..).unwrap_or_default().to_vec())
    }

    /// Ids of the nodes in the network (the controller excluded).
    pub fn node_ids(&self) -> Vec<u8> {
        self.with(|e, _| e.nodes().map(|n| n.id).collect())
    }

    /// Pumps bytes between `stream` and the emulator until the stream closes.
    pub async fn serve<S: AsyncRead + AsyncWrite>(&self, stream: S) -> io::Result<()> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = vec![0u8; 4096];
        loop {
            let (out, deadline) = {
                let now = self.now();
                let mut emu = self.lock();
                emu.tick(now);
                (emu.take_output(), emu.next_deadline())
            };
            if !out.is_empty() {
                wr.write_all(&out).await?;
                wr.flush().await?;
            }
            let sleep_for = deadline
                .map(|d| d.saturating_sub(self.now()))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                n = rd.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(());
                    }
                    let now = self.now();
                    self.lock().receive(now, buf.get(..n).unwrap_or_default());
                }
                _ = tokio::time::sleep(sleep_for) => {}
                _ = self.shared.wake.notified() => {}
            }
        }
    }
}

/// Controllers not attached to a link right now, kept so a re-opened `sim://zwave` finds
/// its network again.
fn idle_pool() -> &'static Mutex<Vec<SimEmulator>> {
    static POOL: OnceLock<Mutex<Vec<SimEmulator>>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(Vec::new()))
}

/// The `sim://zwave` factory (for the driver table's `emulator:` entry).
pub fn attach_sim(stream: DuplexStream) {
    let sim = idle_pool()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_else(|| SimEmulator::new(EmulatorConfig::default()));
    tokio::spawn(async move {
        if let Err(e) = sim.serve(stream).await {
            tracing::debug!(error = %e, "zwave emulator link ended");
        }
        idle_pool()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sim);
    });
}

/// An emulated controller behind a pseudo-terminal: open [`PtyEmulator::path`] as a serial
/// port (the real tokio-serial path). Must be created inside a tokio runtime; the pump stops
/// when this is dropped.
pub struct PtyEmulator {
    pub sim: SimEmulator,
    path: PathBuf,
    _slave: OwnedFd,
    task: tokio::task::JoinHandle<()>,
}

impl PtyEmulator {
    pub fn spawn(config: EmulatorConfig) -> io::Result<Self> {
        Self::spawn_with(SimEmulator::new(config))
    }

    /// Serves an existing emulator (e.g. to keep its network across PTYs).
    pub fn spawn_with(sim: SimEmulator) -> io::Result<Self> {
        let (master, path, slave) = super::zigbee_sim::open_pty()?;
        let pump = sim.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = pump.serve(master).await {
                tracing::debug!(error = %e, "zwave PTY emulator stopped");
            }
        });
        Ok(Self {
            sim,
            path,
            _slave: slave,
            task,
        })
    }

    /// The slave device path, e.g. `/dev/pts/7`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PtyEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
