//! `fieldgate emulate zwave`: serves the Z-Wave controller emulator
//! (`fieldgate_zwave::emulator`, pumped by [`crate::radio::zwave_sim`]) to any host stack,
//! over TCP (like a stick behind ser2net; zwave-js connects with `tcp://HOST:PORT`) or a
//! pseudo-terminal (like a USB stick), so that zwave-js or our own driver can be run
//! against it.
//!
//! This module owns the command's options and the fault schedule; it knows
//! nothing of the protocol. One emulated controller lives as long as the process: a host
//! that reconnects finds the network it left.
//!
//! The first line on stdout says where to connect (`listening tcp://127.0.0.1:PORT` or
//! `pty /dev/pts/N`); logs go to stderr. SIGTERM or SIGINT ends it with exit code 0.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fieldgate_zwave::emulator::{EmulatorConfig, Fault, NodeKind};
use fieldgate_zwave::ReadingValue;

use super::Endpoint;
use crate::radio::zwave_sim::SimEmulator;

/// `fieldgate emulate zwave` options.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("endpoint").required(true).args(["listen", "pty"])))]
pub struct ZwaveArgs {
    /// Serve on this TCP address, one connection at a time (`127.0.0.1:0` picks a free port).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Serve on a new pseudo-terminal; its slave path is printed.
    #[arg(long)]
    pub pty: bool,
    /// The nodes in the network, ids from 2 in order: kinds (switch-meter, multisensor,
    /// door, battery-sensor, flirs-switch, dimmer), each optionally `=COUNT`. The default is the
    /// network the built-in NVM image describes. `none` for an empty network.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "switch-meter,multisensor,door,battery-sensor,flirs-switch"
    )]
    pub nodes: Vec<String>,
    /// Nodes waiting to be included (they join on the host's next AddNodeToNetwork), in
    /// the same form as --nodes.
    #[arg(long, value_delimiter = ',', default_value = "switch-meter")]
    pub pending: Vec<String>,
    /// How often nodes report their values.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub report_interval: Duration,
    /// How long the battery sensor sleeps between wake-ups.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub wake_interval: Duration,
    /// How long it stays awake without Wake Up No More Information.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub awake_time: Duration,
    /// Node ids whose button is pressed whenever exclusion starts (a second later); any
    /// other node never leaves and the host's exclusion times out.
    #[arg(long, value_delimiter = ',')]
    pub exclude_presses: Vec<u8>,
    /// The controller's home id (hex); the NVM image keeps the default one.
    #[arg(long, value_parser = parse_home_id)]
    pub home_id: Option<u32>,
    /// A fault to inject, repeatable: `WHAT[@AFTER][/EVERY]`, times from start-up. WHAT:
    /// `nak`, `can`, `missing-ack`, `missing-callback`, `corrupt-frame` (each for the next
    /// frame), `jam` (SendData callbacks fail until a soft reset), `jam-silent` (no
    /// SendData callback until a soft reset), `reset` (unsolicited SerialAPIStarted),
    /// `freeze` / `thaw` (the firmware locks up: reads, acknowledges and sends nothing;
    /// then runs again). E.g. `reset@30s`, `nak@5s/10s`, `freeze@1m`.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
}

fn parse_home_id(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(hex, 16).map_err(|e| format!("{s:?} is not a home id (8 hex digits): {e}"))
}

/// Parses `kind[=COUNT],…` into node kinds.
pub fn parse_kinds(specs: &[String]) -> Result<Vec<NodeKind>> {
    let mut out = Vec::new();
    for spec in specs {
        let spec = spec.trim();
        if spec.is_empty() || spec == "none" {
            continue;
        }
        let (name, count) = match spec.split_once('=') {
            Some((n, c)) => (
                n.trim(),
                c.trim()
                    .parse::<usize>()
                    .with_context(|| format!("{spec:?}: count is a number"))?,
            ),
            None => (spec, 1),
        };
        let kind = NodeKind::from_name(name).ok_or_else(|| {
            let names: Vec<_> = NodeKind::ALL.iter().map(|k| k.name()).collect();
            anyhow!("unknown node kind {name:?} ({})", names.join(", "))
        })?;
        out.extend(std::iter::repeat_n(kind, count));
    }
    if out.len() > 200 {
        bail!("at most 200 nodes");
    }
    Ok(out)
}

/// A controller fault and when to inject it.
pub type FaultPlan = super::FaultPlan<Fault>;

/// Parses one `--fault WHAT[@AFTER][/EVERY]` (first at AFTER, else at EVERY, else at once).
pub fn parse_fault(spec: &str) -> Result<FaultPlan> {
    let context = || format!("--fault {spec:?}");
    let (what, after, every) = super::fault_timing(spec, Duration::from_millis(100))?;
    let after = Some(after.or(every).unwrap_or(Duration::ZERO));
    let fault = match what {
        "nak" => Fault::Nak,
        "can" => Fault::Can,
        "missing-ack" => Fault::MissingAck,
        "missing-callback" => Fault::MissingCallback,
        "corrupt-frame" => Fault::CorruptFrame,
        "jam" => Fault::Jam,
        "jam-silent" => Fault::JamSilent,
        "reset" => Fault::Reset,
        "freeze" => Fault::Freeze(true),
        "thaw" => Fault::Freeze(false),
        _ => bail!(
            "{}: unknown fault (nak, can, missing-ack, missing-callback, corrupt-frame, jam, jam-silent, reset, freeze, thaw)",
            context()
        ),
    };
    Ok(FaultPlan {
        fault,
        after,
        every,
    })
}

/// The emulator configuration `args` describe, and the faults to schedule.
pub fn emulator_config(args: &ZwaveArgs) -> Result<(EmulatorConfig, Vec<FaultPlan>)> {
    let nodes = parse_kinds(&args.nodes)?
        .into_iter()
        .enumerate()
        .map(|(i, k)| (i as u8 + 2, k))
        .collect();
    let faults = args
        .faults
        .iter()
        .map(|f| parse_fault(f))
        .collect::<Result<Vec<_>>>()?;
    let mut config = EmulatorConfig {
        nodes,
        pending: parse_kinds(&args.pending)?,
        report_interval: args.report_interval.max(Duration::from_millis(100)),
        wake_interval: args.wake_interval.max(Duration::from_millis(100)),
        awake_time: args.awake_time,
        exclusion_presses: args.exclude_presses.clone(),
        ..EmulatorConfig::default()
    };
    if let Some(home_id) = args.home_id {
        config.home_id = home_id;
    }
    Ok((config, faults))
}

/// Runs `fieldgate emulate zwave` until SIGTERM or SIGINT.
pub async fn run_zwave(args: ZwaveArgs) -> Result<()> {
    let (config, faults) = emulator_config(&args)?;
    let node_count = config.nodes.len();
    let sim = SimEmulator::new(config);
    let endpoint = Endpoint::open(args.listen.as_deref(), args.pty, &sim).await?;
    let mut signals = endpoint.announce()?;
    tracing::info!(
        nodes = node_count,
        faults = faults.len(),
        "zwave controller emulator up"
    );
    let mut fault_tasks: Vec<_> = faults
        .into_iter()
        .map(|plan| tokio::spawn(super::run_fault(sim.clone(), plan)))
        .collect();
    let logged = Arc::new(AtomicUsize::new(0));
    fault_tasks.push(tokio::spawn(log_reports(sim.clone(), logged.clone())));
    let result = endpoint.serve(&sim, &mut signals).await;
    for t in fault_tasks {
        t.abort();
    }
    // The reports of the last moments before the stop are logged too: a host may
    // have received them.
    log_recorded(&sim, &logged);
    let (stats, link) = sim.with(|e, _| (e.stats(), e.link_stats()));
    tracing::info!(?stats, ?link, "zwave controller emulator stopped");
    result
}

/// Logs every value the nodes send (`node report node=3 cc=… values=temperature=21.5`), so
/// that what a host received can be compared with what was sent; `logged` counts the
/// reports logged so far.
async fn log_reports(sim: SimEmulator, logged: Arc<AtomicUsize>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        log_recorded(&sim, &logged);
    }
}

/// Logs the reports recorded since the `logged` first ones (no await: a task aborted
/// at its sleep never leaves a report half counted).
fn log_recorded(sim: &SimEmulator, logged: &AtomicUsize) {
    let recorded = sim.recorded_since(logged.load(Ordering::Relaxed));
    logged.fetch_add(recorded.len(), Ordering::Relaxed);
    for r in recorded {
        let values: Vec<String> = r
            .readings
            .iter()
            .map(|reading| match reading.value {
                ReadingValue::Number(v) => format!("{}={v}", reading.name),
                ReadingValue::Bool(b) => format!("{}={b}", reading.name),
            })
            .collect();
        tracing::info!(
            node = r.node,
            cc = %fieldgate_zwave::to_hex(&r.cc),
            values = %values.join(","),
            "node report"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_with_counts() {
        let kinds = parse_kinds(&["switch-meter=2".into(), "door".into()]).unwrap();
        assert_eq!(
            kinds,
            [
                NodeKind::SwitchMeter,
                NodeKind::SwitchMeter,
                NodeKind::DoorSensor
            ]
        );
        assert!(parse_kinds(&["none".into()]).unwrap().is_empty());
        let err = parse_kinds(&["toaster".into()]).unwrap_err().to_string();
        assert!(
            err.contains("toaster") && err.contains("flirs-switch"),
            "{err}"
        );
    }

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
        let plan = parse_fault("nak/10s").unwrap();
        assert_eq!(plan.after, Some(Duration::from_secs(10)));
        assert_eq!(plan.every, Some(Duration::from_secs(10)));
        assert!(parse_fault("jam-silent").is_ok());
        assert_eq!(parse_fault("freeze@1m").unwrap().fault, Fault::Freeze(true));
        assert_eq!(parse_fault("thaw").unwrap().fault, Fault::Freeze(false));
        assert!(parse_fault("explode").is_err());
        assert!(parse_fault("nak/1ms").is_err());
    }

    #[test]
    fn home_id_parses_as_hex() {
        assert_eq!(parse_home_id("0xC0FFEE01"), Ok(0xC0FF_EE01));
        assert!(parse_home_id("zz").is_err());
    }
}
