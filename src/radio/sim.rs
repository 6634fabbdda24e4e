//! The pump shared by the byte-stream radio emulators (Zigbee ZNP coordinator, Z-Wave
//! controller, RAK3172 modem): a shareable handle on one sans-IO emulator ([`Sim`]), a pump
//! that moves bytes between a stream and it on the emulator's clock ([`Sim::serve`]), the
//! pool that keeps emulators while no link is attached ([`Parked`]), and a pseudo-terminal
//! whose slave path a driver opens through tokio-serial like a real dongle ([`PtySim`]).
//!
//! Nothing here knows a protocol: each emulator plugs in through [`ByteEmulator`].

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::Notify;

/// A sans-IO device emulator that speaks a byte stream: bytes in, bytes out, timers on the
/// emulator's own clock (time since the handle was made).
pub trait ByteEmulator: Send + 'static {
    type Config;
    type Fault;
    /// Names the emulator in logs.
    const NAME: &'static str;
    /// How many bytes one read from the host takes at most.
    const READ_CHUNK: usize = 4096;

    fn create(config: Self::Config) -> Self;
    fn receive(&mut self, now: Duration, bytes: &[u8]);
    fn tick(&mut self, now: Duration);
    fn take_output(&mut self) -> Vec<u8>;
    fn next_deadline(&self) -> Option<Duration>;
    fn inject(&mut self, now: Duration, fault: Self::Fault);
}

/// Implements [`ByteEmulator`] for an emulator whose own methods already have its shape
/// (`new(config)`, `receive`, `tick`, `take_output`, `next_deadline`, `inject`).
macro_rules! byte_emulator {
    ($emu:ty, $config:ty, $fault:ty, $name:literal $(, read_chunk = $chunk:expr)?) => {
        impl $crate::radio::sim::ByteEmulator for $emu {
            type Config = $config;
            type Fault = $fault;
            const NAME: &'static str = $name;
            $(const READ_CHUNK: usize = $chunk;)?

            fn create(config: $config) -> Self {
                <$emu>::new(config)
            }
            fn receive(&mut self, now: ::std::time::Duration, bytes: &[u8]) {
                <$emu>::receive(self, now, bytes)
            }
            fn tick(&mut self, now: ::std::time::Duration) {
                <$emu>::tick(self, now)
            }
            fn take_output(&mut self) -> Vec<u8> {
                <$emu>::take_output(self)
            }
            fn next_deadline(&self) -> Option<::std::time::Duration> {
                <$emu>::next_deadline(self)
            }
            fn inject(&mut self, now: ::std::time::Duration, fault: $fault) {
                <$emu>::inject(self, now, fault)
            }
        }
    };
}
pub(crate) use byte_emulator;

struct Shared<E> {
    emulator: Mutex<E>,
    wake: Notify,
    epoch: Instant,
}

/// A shareable handle on one emulator.
pub struct Sim<E> {
    shared: Arc<Shared<E>>,
}

impl<E> Clone for Sim<E> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<E: ByteEmulator> Sim<E> {
    pub fn new(config: E::Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                emulator: Mutex::new(E::create(config)),
                wake: Notify::new(),
                epoch: Instant::now(),
            }),
        }
    }

    /// Emulator time now.
    pub fn now(&self) -> Duration {
        self.shared.epoch.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, E> {
        // A panic elsewhere must not take the emulator down with it.
        self.shared
            .emulator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the emulator at the current time, then lets the pump flush its output.
    pub fn with<R>(&self, f: impl FnOnce(&mut E, Duration) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.lock(), now);
        self.shared.wake.notify_one();
        r
    }

    pub fn inject(&self, fault: E::Fault) {
        self.with(|e, now| e.inject(now, fault));
    }

    /// Pumps bytes between `stream` and the emulator until the stream closes.
    pub async fn serve<S: AsyncRead + AsyncWrite>(&self, stream: S) -> io::Result<()> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = vec![0u8; E::READ_CHUNK];
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

/// Emulators not attached to a link right now, kept so that a driver re-opening its
/// `sim://` port finds the device (and its network) it left, as with real hardware.
pub struct Parked<E> {
    idle: Mutex<Vec<Sim<E>>>,
}

impl<E: ByteEmulator> Parked<E> {
    pub const fn new() -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Sim<E>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `stream` with a parked emulator (or a new one from `config`), and parks it
    /// again when the link ends.
    pub fn attach(&'static self, stream: DuplexStream, config: impl FnOnce() -> E::Config) {
        let parked = self.idle().pop();
        let sim = parked.unwrap_or_else(|| Sim::new(config()));
        tokio::spawn(async move {
            if let Err(e) = sim.serve(stream).await {
                tracing::debug!(error = %e, "{} emulator link ended", E::NAME);
            }
            self.idle().push(sim);
        });
    }
}

impl<E: ByteEmulator> Default for Parked<E> {
    fn default() -> Self {
        Self::new()
    }
}

/// An emulator behind a pseudo-terminal: open [`PtySim::path`] as a serial port (the real
/// tokio-serial path). Must be created inside a tokio runtime; the pump stops when this is
/// dropped. The slave side stays open here too, so a driver can close and re-open the port
/// (the master would read EIO with no slave open).
pub struct PtySim<E> {
    pub sim: Sim<E>,
    path: PathBuf,
    _slave: OwnedFd,
    task: tokio::task::JoinHandle<()>,
}

impl<E: ByteEmulator> PtySim<E> {
    pub fn spawn(config: E::Config) -> io::Result<Self> {
        Self::spawn_with(Sim::new(config))
    }

    /// Serves an existing emulator (e.g. to keep its network across PTYs).
    pub fn spawn_with(sim: Sim<E>) -> io::Result<Self> {
        let (master, path, slave) = open_pty()?;
        let pump = sim.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = pump.serve(master).await {
                tracing::debug!(error = %e, "{} PTY emulator stopped", E::NAME);
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

impl<E> Drop for PtySim<E> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The master side of a pseudo-terminal as an async byte stream.
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
