//! `fieldgate emulate lora-rak3172`: serves the RAK3172 emulator (a modem in RUI3 AT
//! firmware with LoRa P2P sensors around it, `fieldgate_lora::rak3172::emulator`) over TCP
//! (like a modem behind ser2net) or a pseudo-terminal (like the USB modem), so that our
//! driver or any other RUI3 host can be run against it.
//!
//! This module owns the command's options and the fault schedule; it knows
//! nothing of the protocol. The first line on stdout says where to connect
//! (`listening tcp://127.0.0.1:PORT` or `pty /dev/pts/N`); logs go to stderr. SIGTERM or
//! SIGINT ends it with exit code 0.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use fieldgate_lora::rak3172::emulator::{Fault, Firmware, P2pCipher};

use super::Endpoint;
use crate::radio::lora_p2p::sim::{sim_config, SimModem};

/// `fieldgate emulate lora-rak3172` options.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("endpoint").required(true).args(["listen", "pty"])))]
pub struct RakArgs {
    /// Serve on this TCP address, one connection at a time (`127.0.0.1:0` picks a free port).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Serve on a new pseudo-terminal; its slave path is printed.
    #[arg(long)]
    pub pty: bool,
    /// Which firmware's receive lines to print: `rui3` (`+EVT:RXP2P:rssi:snr:hex`) or
    /// `legacy` (`+EVT:RXP2P, RSSI r, SNR s` then `+EVT:hex`).
    #[arg(long, default_value = "rui3")]
    pub firmware: String,
    /// Start in LoRa P2P mode instead of the factory LoRaWAN mode.
    #[arg(long)]
    pub p2p: bool,
    /// The sensors encipher their frames with the site key and IV in FILE (the format of
    /// the `encryption_key_file` radio option: two lines of 32 hex digits). The module
    /// deciphers with whatever key the host set (`AT+ENCKEY`, `AT+CRYPIV`, `AT+ENCRY=1`).
    #[arg(long, value_name = "FILE")]
    pub sender_key_file: Option<std::path::PathBuf>,
    /// Imitate a firmware older than RUI3 4.0.6: no P2P encryption commands
    /// (`AT_COMMAND_NOT_FOUND`).
    #[arg(long)]
    pub no_encryption: bool,
    /// Echo every command line back before its answer (as after `ATE`).
    #[arg(long)]
    pub echo: bool,
    /// A fault to inject, repeatable: `WHAT[@AFTER][/EVERY]`, times from start-up. WHAT:
    /// `busy` (the next two commands answer AT_BUSY_ERROR), `reset` (the module restarts
    /// on its own). E.g. `reset@30s`, `busy@10s/20s`.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
}

/// A modem fault and when to inject it.
pub type FaultPlan = super::FaultPlan<Fault>;

/// Parses one `--fault WHAT[@AFTER][/EVERY]` (first at AFTER, else at EVERY, else at once).
pub fn parse_fault(spec: &str) -> Result<FaultPlan> {
    let context = || format!("--fault {spec:?}");
    let (what, after, every) = super::fault_timing(spec, Duration::from_millis(500))?;
    let after = Some(after.or(every).unwrap_or(Duration::ZERO));
    let fault = match what {
        "busy" => Fault::Busy(2),
        "reset" => Fault::Reset,
        _ => bail!("{}: unknown fault (busy, reset)", context()),
    };
    Ok(FaultPlan {
        fault,
        after,
        every,
    })
}

/// Runs `fieldgate emulate lora-rak3172` until SIGTERM or SIGINT.
pub async fn run_lora_rak(args: RakArgs) -> Result<()> {
    let mut config = sim_config();
    config.firmware = match args.firmware.as_str() {
        "rui3" => Firmware::Rui3,
        "legacy" => Firmware::Legacy,
        other => bail!("--firmware {other:?}: use rui3 or legacy"),
    };
    if args.p2p {
        config.work_mode = 0;
    }
    if let Some(file) = &args.sender_key_file {
        let k = crate::radio::lora_p2p::read_key_file(file)
            .map_err(|e| anyhow!("--sender-key-file: {e}"))?;
        for s in &mut config.sensors {
            s.cipher = Some(P2pCipher {
                key: k.key,
                iv: k.iv,
            });
        }
    }
    config.encryption_commands = !args.no_encryption;
    config.echo = args.echo;
    let faults = args
        .faults
        .iter()
        .map(|f| parse_fault(f))
        .collect::<Result<Vec<_>>>()?;
    let sim = SimModem::new(config);
    let endpoint = Endpoint::open(args.listen.as_deref(), args.pty, &sim).await?;
    let mut signals = endpoint.announce()?;
    tracing::info!(faults = faults.len(), "RAK3172 emulator up");
    let fault_tasks: Vec<_> = faults
        .into_iter()
        .map(|plan| tokio::spawn(super::run_fault(sim.clone(), plan)))
        .collect();
    let result = endpoint.serve(&sim, &mut signals).await;
    for t in fault_tasks {
        t.abort();
    }
    let stats = sim.stats();
    tracing::info!(
        commands = stats.commands,
        heard = stats.heard,
        missed = stats.missed,
        sent = stats.sent.len(),
        busy = stats.busy_answers,
        restarts = stats.restarts,
        "RAK3172 emulator stopped"
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_with_times() {
        assert_eq!(
            parse_fault("reset@30s").unwrap(),
            FaultPlan {
                fault: Fault::Reset,
                after: Some(Duration::from_secs(30)),
                every: None
            }
        );
        let plan = parse_fault("busy/10s").unwrap();
        assert_eq!(plan.fault, Fault::Busy(2));
        assert_eq!(plan.every, Some(Duration::from_secs(10)));
        assert!(parse_fault("explode").is_err());
        assert!(parse_fault("busy/1ms").is_err());
    }
}
