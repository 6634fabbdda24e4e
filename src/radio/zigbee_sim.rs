//! Runs the sans-IO ZNP coordinator emulator (`fieldgate_zigbee::emulator`) on a byte stream:
//! the far end of `sim://zigbee`'s in-process pipe, or the master side of a pseudo-terminal
//! whose slave path a driver opens through tokio-serial like a real dongle ([`PtyEmulator`]).
//!
//! This module owns the pumping (bytes in, bytes out, a timer for the emulator's deadlines)
//! and nothing about the protocol. The emulator (and its NV, so its network) outlives a link:
//! a driver that re-opens `sim://zigbee` finds the coordinator it left, as with real hardware.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use fieldgate_zigbee::emulator::{Emulator, EmulatorConfig, Fault};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::Notify;

struct Shared {
    emulator: Mutex<Emulator>,
    wake: Notify,
    epoch: Instant,
}

/// A shareable handle on one emulated coordinator.
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

/// Coordinators not attached to a link right now, kept so a re-opened `sim://zigbee`
/// finds its network again.
fn idle_pool() -> &'static Mutex<Vec<SimEmulator>> {
    static POOL: OnceLock<Mutex<Vec<SimEmulator>>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(Vec::new()))
}

/// The `sim://zigbee` factory (see `link::emulator_for`).
pub fn attach_sim(stream: DuplexStream) {
    let sim = idle_pool()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_else(|| SimEmulator::new(EmulatorConfig::default()));
    tokio::spawn(async move {
        if let Err(e) = sim.serve(stream).await {
            tracing::debug!(error = %e, "zigbee emulator link ended");
        }
        idle_pool()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sim);
    });
}

/// The master side of a pseudo-terminal as an async byte stream (shared with the other
/// protocols' emulators).
pub(crate) struct PtyMaster {
    fd: AsyncFd<std::fs::File>,
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| inner.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|inner| inner.get_ref().write(data)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// An emulated coordinator behind a pseudo-terminal: open [`PtyEmulator::path`] as a serial
/// port (the real tokio-serial path). Must be created inside a tokio runtime; the pump stops
/// when this is dropped. The slave side stays open here too, so a driver can close and
/// re-open the port (the master would read EIO with no slave open).
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
        let (master, path, slave) = open_pty()?;
        let pump = sim.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = pump.serve(master).await {
                tracing::debug!(error = %e, "zigbee PTY emulator stopped");
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

/// Opens a raw pseudo-terminal: its master as an async stream, the slave's path, and the
/// slave descriptor (keep it open so that a driver can close and re-open the path).
pub(crate) fn open_pty() -> io::Result<(PtyMaster, PathBuf, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    let path = nix::unistd::ttyname(pty.slave.as_fd()).map_err(io::Error::from)?;
    // Raw slave: no echo, no line discipline, before any byte flows.
    let mut t = tcgetattr(pty.slave.as_fd()).map_err(io::Error::from)?;
    cfmakeraw(&mut t);
    tcsetattr(pty.slave.as_fd(), SetArg::TCSANOW, &t).map_err(io::Error::from)?;
    fcntl(pty.master.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    let file = std::fs::File::from(pty.master);
    // SAFETY: the File owns the master descriptor and moves into the AsyncFd, which
    // keeps it open and unchanged until it is dropped.
    let fd = unsafe { AsyncFd::register(file) }
        .map_err(|e| io::Error::other(format!("cannot register the PTY master: {e}")))?;
    let master = PtyMaster { fd };
    Ok((master, path, pty.slave))
}

impl Drop for PtyEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
