//! `fieldgate emulate <protocol>`: serves a radio's device-side emulator to any host
//! stack, over TCP (like a network coordinator or a dongle behind ser2net) or a
//! pseudo-terminal (like a USB dongle), so that other projects' host stacks and our own
//! drivers can be run against it. One module per protocol; each owns its command's
//! options, listener and fault schedule and knows nothing of the others.

pub mod ble;
pub mod lora;
pub mod lora_rak;
pub mod zigbee;
pub mod zwave;

pub use ble::{run_ble, BleArgs};
pub use lora::{run_lora, LoraArgs};
pub use lora_rak::{run_lora_rak, RakArgs};
pub use zigbee::{run_zigbee, ZigbeeArgs};
pub use zwave::{run_zwave, ZwaveArgs};

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::daemon::StopSignals;
use crate::radio::sim::{ByteEmulator, PtySim, Sim};

/// Serves one host connection at a time, like a serial port behind ser2net: a host that
/// connects while another is served waits until that one has gone. `serve` pumps one
/// connection between the host and the emulator until it ends.
pub(crate) async fn serve_tcp<F, Fut>(
    listener: tokio::net::TcpListener,
    serve: F,
) -> anyhow::Result<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: keep listening.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        stream.set_nodelay(true).ok();
        tracing::info!(%peer, "host connected");
        match serve(stream).await {
            Ok(()) => tracing::info!(%peer, "host disconnected"),
            Err(e) => tracing::info!(%peer, error = %e, "host connection ended"),
        }
    }
}

/// Where a byte-stream emulator is served: a TCP listener (`--listen`) or a new
/// pseudo-terminal (`--pty`).
pub(crate) enum Endpoint<E> {
    Tcp(tokio::net::TcpListener),
    Pty(PtySim<E>),
}

impl<E: ByteEmulator> Endpoint<E> {
    /// Binds `listen` when given, or else opens a pseudo-terminal served by `sim`.
    pub(crate) async fn open(listen: Option<&str>, pty: bool, sim: &Sim<E>) -> Result<Self> {
        Ok(match (listen, pty) {
            (Some(addr), _) => Endpoint::Tcp(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            ),
            (None, true) => Endpoint::Pty(
                PtySim::spawn_with(sim.clone()).context("cannot open a pseudo-terminal")?,
            ),
            (None, false) => bail!("give --listen HOST:PORT or --pty"),
        })
    }

    /// Prints where to connect as stdout's first line. The stop signals are caught from
    /// before anyone can know where to connect, so a signal right after that line is a
    /// clean stop.
    pub(crate) fn announce(&self) -> Result<StopSignals> {
        let first_line = match self {
            Endpoint::Tcp(l) => format!(
                "listening tcp://{}",
                l.local_addr().context("listening address")?
            ),
            Endpoint::Pty(p) => format!("pty {}", p.path().display()),
        };
        let signals = StopSignals::install()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{first_line}").context("stdout")?;
        out.flush().context("stdout")?;
        Ok(signals)
    }

    /// Serves `sim` here until SIGTERM or SIGINT.
    pub(crate) async fn serve(self, sim: &Sim<E>, signals: &mut StopSignals) -> Result<()> {
        let served = async {
            match self {
                Endpoint::Tcp(listener) => serve_tcp(listener, |s| sim.serve(s)).await,
                Endpoint::Pty(pty) => {
                    // The PTY pump runs until `pty` is dropped.
                    std::future::pending::<()>().await;
                    drop(pty);
                    Ok(())
                }
            }
        };
        tokio::select! {
            r = served => r,
            _ = signals.wait() => Ok(()),
        }
    }
}

/// A fault to inject and when: `--fault WHAT[@AFTER][/EVERY]`, times from start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan<F> {
    pub fault: F,
    /// When it first happens; `None` for a fault that holds from start-up (Zigbee's stuck
    /// interview).
    pub after: Option<Duration>,
    /// Repeats at this period.
    pub every: Option<Duration>,
}

/// Splits one `--fault WHAT[@AFTER][/EVERY]` into what, when first (if given) and the
/// period, refusing a period shorter than `min_every`.
pub(crate) fn fault_timing(
    spec: &str,
    min_every: Duration,
) -> Result<(&str, Option<Duration>, Option<Duration>)> {
    let context = || format!("--fault {spec:?}");
    let (rest, every) = match spec.split_once('/') {
        Some((rest, every)) => (
            rest,
            Some(humantime::parse_duration(every.trim()).with_context(context)?),
        ),
        None => (spec, None),
    };
    let (what, after) = match rest.split_once('@') {
        Some((what, after)) => (
            what.trim(),
            Some(humantime::parse_duration(after.trim()).with_context(context)?),
        ),
        None => (rest.trim(), None),
    };
    if every.is_some_and(|e| e < min_every) {
        bail!("{}: repeats at most every {min_every:?}", context());
    }
    Ok((what, after, every))
}

/// Injects `plan`'s fault into the emulator when it is due, and again at its period.
pub(crate) async fn run_fault<E>(sim: Sim<E>, plan: FaultPlan<E::Fault>)
where
    E: ByteEmulator,
    E::Fault: Clone + std::fmt::Debug,
{
    let Some(after) = plan.after else {
        return;
    };
    tokio::time::sleep(after).await;
    loop {
        tracing::info!(fault = ?plan.fault, "injecting a fault");
        sim.inject(plan.fault.clone());
        match plan.every {
            Some(every) => tokio::time::sleep(every).await,
            None => return,
        }
    }
}
