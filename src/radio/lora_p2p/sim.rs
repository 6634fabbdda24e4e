//! Runs the sans-IO RAK3172 emulator (`fieldgate_lora::rak3172::emulator`) on a byte
//! stream: the far end of `sim://lora-rak3172`'s in-process pipe, a TCP connection
//! (`fieldgate emulate lora-rak3172 --listen`), or the master side of a pseudo-terminal
//! whose slave path a driver opens through tokio-serial like a real USB modem
//! ([`PtyModem`]).
//!
//! This module owns the pumping and the handle tests use ([`SimModem`]: inject a fault, put
//! a frame on the air, read back what was transmitted); nothing about the protocol. The
//! emulated module (its work mode and settings, kept in flash on a real one) outlives a
//! link.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use fieldgate_lora::rak3172::emulator::{AirFrame, Emulator, EmulatorConfig, Fault, Sensor, Stats};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::Notify;

struct Shared {
    emulator: Mutex<Emulator>,
    wake: Notify,
    epoch: Instant,
}

/// A shareable handle on one emulated RAK3172 and the sensors around it.
#[derive(Clone)]
pub struct SimModem {
    shared: Arc<Shared>,
}

impl SimModem {
    pub fn new(config: EmulatorConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                emulator: Mutex::new(Emulator::new(config)),
                wake: Notify::new(),
                epoch: Instant::now(),
            }),
        }
    }

    fn now(&self) -> Duration {
        self.shared.epoch.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, Emulator> {
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

    /// Puts a frame on the air now; `true` when the module heard it.
    pub fn air_frame(&self, freq_hz: u32, sf: u8, bw_khz: u16, frame: AirFrame) -> bool {
        self.with(|e, _| e.air_frame(freq_hz, sf, bw_khz, frame))
    }

    pub fn stats(&self) -> Stats {
        self.with(|e, _| e.stats().clone())
    }

    /// Pumps bytes between `stream` and the emulator until the stream closes.
    pub async fn serve<S: AsyncRead + AsyncWrite>(&self, stream: S) -> io::Result<()> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = vec![0u8; 1024];
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

/// The module behind `sim://lora-rak3172`: factory LoRaWAN mode (so the driver switches
/// it), two LPP sensors on 868.0 MHz SF7, and one on SF9 that it does not hear.
pub fn sim_config() -> EmulatorConfig {
    let sensor = |id: u32, sf: u8, secs: u64, rssi: i16| Sensor {
        id,
        freq_hz: 868_000_000,
        sf,
        bw_khz: 125,
        interval: Duration::from_secs(secs),
        rssi,
        snr: 8,
    };
    EmulatorConfig {
        sensors: vec![
            sensor(0x0a0b_0c01, 7, 5, -71),
            sensor(0x0a0b_0c02, 7, 7, -88),
            sensor(0x0a0b_0c09, 9, 6, -95),
        ],
        ..EmulatorConfig::default()
    }
}

/// Modules not attached to a link right now, so a re-opened `sim://lora-rak3172` finds
/// the one it left.
fn idle_pool() -> &'static Mutex<Vec<SimModem>> {
    static POOL: OnceLock<Mutex<Vec<SimModem>>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(Vec::new()))
}

/// The `sim://lora-rak3172` factory (for the driver table's `emulator:` entry).
pub fn attach_sim(stream: DuplexStream) {
    let sim = idle_pool()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_else(|| SimModem::new(sim_config()));
    tokio::spawn(async move {
        if let Err(e) = sim.serve(stream).await {
            tracing::debug!(error = %e, "RAK3172 emulator link ended");
        }
        idle_pool()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sim);
    });
}

/// An emulated RAK3172 behind a pseudo-terminal: open [`PtyModem::path`] as a serial port
/// (the real tokio-serial path). Must be created inside a tokio runtime; the pump stops
/// when this is dropped.
pub struct PtyModem {
    pub sim: SimModem,
    path: PathBuf,
    _slave: OwnedFd,
    task: tokio::task::JoinHandle<()>,
}

impl PtyModem {
    pub fn spawn(config: EmulatorConfig) -> io::Result<Self> {
        Self::spawn_with(SimModem::new(config))
    }

    pub fn spawn_with(sim: SimModem) -> io::Result<Self> {
        let (master, path, slave) = crate::radio::zigbee_sim::open_pty()?;
        let pump = sim.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = pump.serve(master).await {
                tracing::debug!(error = %e, "RAK3172 PTY emulator stopped");
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

impl Drop for PtyModem {
    fn drop(&mut self) {
        self.task.abort();
    }
}
