//! `fieldgate emulate lora-gwmp`: a Semtech UDP packet forwarder with two emulated LoRaWAN
//! end devices (one OTAA, one ABP; their public test keys are in `docs/lora.md`), sending
//! real GWMP datagrams to a gateway (ours, or any network server's UDP port) and reading
//! its answers: the OTAA device joins, both send Cayenne LPP uplinks, every fourth one
//! confirmed, and the faults asked for are committed once each after the join.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::radio::lora::sim::{self, Fault, Plan};

#[derive(Debug, Clone, clap::Args)]
pub struct LoraArgs {
    /// The GWMP server (the gateway's `udp://` radio port), host:port.
    #[arg(long, default_value = "127.0.0.1:1700")]
    pub server: String,
    /// Seconds between two frames.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// Faults to commit after the join, in order: bad-mic, replay, devnonce-reuse.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Stop after this many data uplinks.
    #[arg(long)]
    pub uplinks: Option<u32>,
}

/// Runs the forwarder until the server goes away or the uplinks are sent.
pub async fn run_lora(args: LoraArgs) -> Result<()> {
    let server: SocketAddr = args
        .server
        .to_socket_addrs()
        .with_context(|| format!("`{}` is not host:port", args.server))?
        .next()
        .ok_or_else(|| anyhow!("`{}` resolves to nothing", args.server))?;
    let faults = args
        .faults
        .iter()
        .map(|f| {
            Fault::parse(f).ok_or_else(|| {
                anyhow!("unknown fault `{f}`: use bad-mic, replay or devnonce-reuse")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if args.interval == 0 || args.interval > 3600 {
        return Err(anyhow!("--interval must be 1..=3600 seconds"));
    }
    let plan = Plan {
        interval: Duration::from_secs(args.interval),
        faults,
        uplinks: args.uplinks,
    };
    crate::outln!("forwarding to udp://{server}");
    sim::forward(server, plan, |line| crate::outln!("{line}"))
        .await
        .context("packet forwarder")
}
