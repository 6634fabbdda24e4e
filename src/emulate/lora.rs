//! `fieldgate emulate lora-gwmp`: a Semtech UDP packet forwarder with two emulated LoRaWAN
//! end devices (one OTAA, one ABP; their public test keys are in `docs/lora.md`), sending
//! real GWMP datagrams to a gateway (ours, or any network server's UDP port) and reading
//! its answers: the OTAA device joins, both send Cayenne LPP uplinks, every fourth one
//! confirmed, and the faults asked for are committed once each after the join.
//!
//! For load, `--abp-devices N` adds N more ABP devices with public test keys (see
//! [`sim::extra_abp`]), each sending an unconfirmed uplink once per `--interval`,
//! spread evenly; `--write-keys FILE` writes every device's keys as the local API's
//! `POST /v1/lora/devices` bodies, one per line, and exits, for the gateway to be
//! given the keys before the devices speak.

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
    /// Stop after this many data uplinks (of the two devices; the extra ones run on).
    #[arg(long)]
    pub uplinks: Option<u32>,
    /// Further ABP devices (public test keys), each sending an unconfirmed uplink once
    /// per --interval, spread evenly over it.
    #[arg(long, default_value_t = 0)]
    pub abp_devices: u32,
    /// Write every device's keys (with --abp-devices' ones) to this file (mode 0600)
    /// as `POST /v1/lora/devices` bodies, one JSON object per line, and exit.
    #[arg(long)]
    pub write_keys: Option<std::path::PathBuf>,
}

/// Every device's keys as `POST /v1/lora/devices` bodies, one per line.
fn keys_lines(extra: u32) -> String {
    let mut out = String::new();
    let mut line = |v: serde_json::Value| {
        out.push_str(&v.to_string());
        out.push('\n');
    };
    line(serde_json::json!({
        "dev_eui": sim::OTAA_DEV_EUI, "join_eui": sim::OTAA_JOIN_EUI, "app_key": sim::OTAA_APP_KEY,
    }));
    line(serde_json::json!({
        "dev_eui": sim::ABP_DEV_EUI, "dev_addr": sim::ABP_DEV_ADDR,
        "nwk_s_key": sim::ABP_NWK_S_KEY, "app_s_key": sim::ABP_APP_S_KEY,
    }));
    for i in 0..extra {
        let k = sim::extra_abp(i);
        line(serde_json::json!({
            "dev_eui": k.dev_eui, "dev_addr": k.dev_addr,
            "nwk_s_key": k.nwk_s_key, "app_s_key": k.app_s_key,
        }));
    }
    out
}

fn write_keys(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Runs the forwarder until the uplinks are sent (or for ever), through restarts of the
/// gateway.
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
    if args.abp_devices > sim::MAX_EXTRA_DEVICES {
        return Err(anyhow!(
            "--abp-devices is at most {}",
            sim::MAX_EXTRA_DEVICES
        ));
    }
    if let Some(path) = &args.write_keys {
        write_keys(path, &keys_lines(args.abp_devices))?;
        crate::outln!(
            "wrote the keys of {} devices to {}",
            2 + args.abp_devices,
            path.display()
        );
        return Ok(());
    }
    let extra = (0..args.abp_devices)
        .filter_map(|i| sim::extra_abp(i).device())
        .collect();
    let plan = Plan {
        interval: Duration::from_secs(args.interval),
        faults,
        uplinks: args.uplinks,
        extra,
        keep_going: true,
    };
    crate::outln!("forwarding to udp://{server}");
    sim::forward(server, plan, |line| crate::outln!("{line}"))
        .await
        .context("packet forwarder")
}
