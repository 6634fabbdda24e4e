//! `fieldgate emulate zigbee`: serves the ZNP coordinator emulator (`fieldgate_zigbee::emulator`,
//! pumped by [`crate::radio::zigbee_sim`]) to any host stack, over TCP (like a network
//! coordinator or a dongle behind ser2net) or a pseudo-terminal (like a USB dongle), so that
//! zigbee-herdsman, zigpy-znp or our own driver can be run against it.
//!
//! This module owns the command's options and the fault schedule; it knows
//! nothing of the protocol. One emulated coordinator lives as long as the process: a host
//! that reconnects finds the network (NV, joined devices) it left.
//!
//! The first line on stdout says where to connect (`listening tcp://127.0.0.1:PORT` or
//! `pty /dev/pts/N`); logs go to stderr. SIGTERM or SIGINT ends it with exit code 0.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fieldgate_zigbee::emulator::{DeviceKind, EmulatorConfig, Fault, Firmware, IncomingForm};
use fieldgate_zigbee::IeeeAddr;

use super::Endpoint;
use crate::radio::zigbee_sim::SimEmulator;

/// `fieldgate emulate zigbee` options.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("endpoint").required(true).args(["listen", "pty"])))]
pub struct ZigbeeArgs {
    /// Serve on this TCP address, one connection at a time (`127.0.0.1:0` picks a free port).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Serve on a new pseudo-terminal; its slave path is printed.
    #[arg(long)]
    pub pty: bool,
    /// The emulated devices, in join order: kinds, each optionally `=COUNT`
    /// (temp-humidity, plug, contact, occupancy, and the manufacturer-specific
    /// tuya-temp-humidity and aqara-weather), e.g. `plug=3,temp-humidity`.
    /// `none` for an empty network.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "temp-humidity,plug,contact,occupancy"
    )]
    pub devices: Vec<String>,
    /// Z-Stack build to play: `3x0` (CC26xx/CC13xx, aligned NV structs) or `30x` (CC2531,
    /// packed NV structs).
    #[arg(long, default_value = "3x0", value_parser = parse_firmware)]
    pub firmware: Firmware,
    /// The coordinator's IEEE address (hex), e.g. 0x00124b001cdd0001.
    #[arg(long, value_parser = parse_ieee)]
    pub ieee: Option<IeeeAddr>,
    /// Start in the CC253x serial bootloader: frames are ignored until the 0xEF skip byte.
    #[arg(long)]
    pub bootloader: bool,
    /// How device frames reach the host: `standard` (AF_INCOMING_MSG; AF_INCOMING_MSG_EXT
    /// with the payload held back for AF_DATA_RETRIEVE when it is over 220 bytes), `ext`
    /// (every frame as AF_INCOMING_MSG_EXT) or `ext-ieee` (the same, addressed by the
    /// device's IEEE address).
    #[arg(long, default_value = "standard", value_parser = parse_incoming)]
    pub incoming: IncomingForm,
    /// How often devices with reporting configured send their values.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub report_interval: Duration,
    /// Delay between a join window opening and each successive device joining.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub join_spacing: Duration,
    /// How often the sleepy occupancy sensor wakes up.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    pub sleepy_wake_interval: Duration,
    /// How many requests the sleepy sensor answers right after joining before it first
    /// falls asleep (a host that interviews at once needs about ten).
    #[arg(long, default_value_t = 2)]
    pub sleepy_answers_after_join: u32,
    /// A fault to inject, repeatable: `WHAT[@AFTER][/EVERY]`, times from start-up.
    /// WHAT: `reset` (unsolicited SYS_RESET_IND, watchdog), `garbage[:HEX]` (bytes between
    /// frames), `corrupt-frame` (next frame gets a bad FCS), `drop-srsp` (next SRSP is not
    /// sent), `freeze` / `thaw` (the firmware locks up: reads, answers and sends nothing;
    /// then runs again), `leave:DEVICE` (the device leaves), `stuck-interview:DEVICE`
    /// (never answers simple-descriptor requests; from start-up). DEVICE is a kind (its first instance) or
    /// an IEEE address. E.g. `reset@30s`, `corrupt-frame@5s/10s`, `leave:plug@1m`.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
}

fn parse_firmware(s: &str) -> Result<Firmware, String> {
    match s.trim().to_ascii_lowercase().trim_start_matches("zstack") {
        "3x0" | "3.x.0" => Ok(Firmware::ZStack3x0),
        "30x" | "3.0.x" => Ok(Firmware::ZStack30x),
        other => Err(format!("unknown firmware {other:?} (3x0 or 30x)")),
    }
}

fn parse_incoming(s: &str) -> Result<IncomingForm, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "standard" => Ok(IncomingForm::Standard),
        "ext" => Ok(IncomingForm::AllExt),
        "ext-ieee" => Ok(IncomingForm::AllExtIeee),
        other => Err(format!(
            "unknown form {other:?} (standard, ext or ext-ieee)"
        )),
    }
}

fn parse_ieee(s: &str) -> Result<IeeeAddr, String> {
    let t = s.trim();
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t)
        .replace(':', "");
    if hex.is_empty() || hex.len() > 16 {
        return Err(format!("{s:?} is not an IEEE address (16 hex digits)"));
    }
    u64::from_str_radix(&hex, 16)
        .map(IeeeAddr)
        .map_err(|e| format!("{s:?} is not an IEEE address: {e}"))
}

/// The CLI name of a device kind.
pub fn kind_name(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::TempHumidity => "temp-humidity",
        DeviceKind::SmartPlug => "plug",
        DeviceKind::ContactSensor => "contact",
        DeviceKind::SleepySensor => "occupancy",
        DeviceKind::TuyaTempHumidity => "tuya-temp-humidity",
        DeviceKind::AqaraWeather => "aqara-weather",
    }
}

fn parse_kind(s: &str) -> Result<DeviceKind> {
    let kinds = || {
        DeviceKind::ALL
            .into_iter()
            .chain(DeviceKind::MANUFACTURER_SPECIFIC)
    };
    kinds().find(|k| kind_name(*k) == s).ok_or_else(|| {
        let names: Vec<&str> = kinds().map(kind_name).collect();
        anyhow!("unknown device kind {s:?} ({})", names.join(", "))
    })
}

/// The IEEE address of the `n`th (0-based) emulated device of `kind`: the kind's default
/// address for the first, then one step of 0x100 per further instance.
pub fn device_ieee(kind: DeviceKind, n: u64) -> IeeeAddr {
    IeeeAddr(kind.default_ieee().0 + (n << 8))
}

/// Parses `--devices`: kinds with optional counts, in join order.
pub fn parse_devices(specs: &[String]) -> Result<Vec<(DeviceKind, IeeeAddr)>> {
    let mut out: Vec<(DeviceKind, IeeeAddr)> = Vec::new();
    for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if spec == "none" {
            continue;
        }
        let (name, count) = match spec.split_once('=') {
            Some((name, n)) => (
                name.trim(),
                n.trim()
                    .parse::<u64>()
                    .with_context(|| format!("device count in {spec:?}"))?,
            ),
            None => (spec, 1),
        };
        let kind = parse_kind(name)?;
        if count > 200 {
            bail!("{spec:?}: at most 200 devices of one kind");
        }
        let have = out.iter().filter(|(k, _)| *k == kind).count() as u64;
        for n in have..have + count {
            out.push((kind, device_ieee(kind, n)));
        }
    }
    Ok(out)
}

/// A coordinator or device fault and when to inject it.
pub type FaultPlan = super::FaultPlan<Fault>;

/// Bytes a bare `garbage` fault sends: a stray SOF, a truncated frame header and noise.
const DEFAULT_GARBAGE: [u8; 8] = [0x00, 0xFE, 0x13, 0x37, 0xFF, 0xFE, 0xFA, 0x01];

fn parse_device_ref(s: &str, devices: &[(DeviceKind, IeeeAddr)]) -> Result<IeeeAddr> {
    if let Ok(kind) = parse_kind(s) {
        return devices
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, ieee)| *ieee)
            .ok_or_else(|| anyhow!("no {s} device is emulated (see --devices)"));
    }
    let ieee = parse_ieee(s).map_err(|e| anyhow!("{e}, nor a device kind"))?;
    if !devices.iter().any(|(_, i)| *i == ieee) {
        bail!("no emulated device has the address {ieee} (see --devices)");
    }
    Ok(ieee)
}

/// Parses one `--fault WHAT[@AFTER][/EVERY]`.
pub fn parse_fault(spec: &str, devices: &[(DeviceKind, IeeeAddr)]) -> Result<FaultPlan> {
    let context = || format!("--fault {spec:?}");
    let (what, after, every) = super::fault_timing(spec, Duration::from_millis(100))?;
    let (name, arg) = match what.split_once(':') {
        Some((name, arg)) => (name.trim(), Some(arg.trim())),
        None => (what, None),
    };
    let fault = match (name, arg) {
        ("reset", None) => Fault::Reset,
        ("garbage", None) => Fault::Garbage(DEFAULT_GARBAGE.to_vec()),
        ("garbage", Some(bytes)) => {
            let bytes = hex::decode(bytes.replace([' ', ':'], ""))
                .with_context(|| format!("{}: garbage bytes are hex", context()))?;
            if bytes.is_empty() || bytes.len() > 1024 {
                bail!("{}: 1 to 1024 garbage bytes", context());
            }
            Fault::Garbage(bytes)
        }
        ("corrupt-frame", None) => Fault::CorruptNextFrame,
        ("drop-srsp", None) => Fault::DropNextSrsp,
        ("freeze", None) => Fault::Freeze(true),
        ("thaw", None) => Fault::Freeze(false),
        ("leave", Some(dev)) => {
            Fault::DeviceLeaves(parse_device_ref(dev, devices).with_context(context)?)
        }
        ("stuck-interview", Some(dev)) => {
            if after.is_some() || every.is_some() {
                bail!("{}: a stuck interview holds from start-up", context());
            }
            Fault::StuckInterview(parse_device_ref(dev, devices).with_context(context)?)
        }
        ("leave" | "stuck-interview", None) => bail!("{}: name the device: {name}:DEVICE", context()),
        _ => bail!(
            "{}: unknown fault (reset, garbage[:HEX], corrupt-frame, drop-srsp, freeze, thaw, leave:DEVICE, stuck-interview:DEVICE)",
            context()
        ),
    };
    let after = match (&fault, after, every) {
        (Fault::StuckInterview(_), _, _) => None,
        (_, Some(a), _) => Some(a),
        (_, None, Some(e)) => Some(e),
        (_, None, None) => Some(Duration::ZERO),
    };
    Ok(FaultPlan {
        fault,
        after,
        every,
    })
}

/// The emulator configuration `args` describe, and the faults to schedule.
pub fn emulator_config(args: &ZigbeeArgs) -> Result<(EmulatorConfig, Vec<FaultPlan>)> {
    let devices = parse_devices(&args.devices)?;
    let faults = args
        .faults
        .iter()
        .map(|f| parse_fault(f, &devices))
        .collect::<Result<Vec<_>>>()?;
    let mut config = EmulatorConfig {
        devices,
        start_in_bootloader: args.bootloader,
        join_spacing: args.join_spacing,
        firmware: args.firmware,
        incoming: args.incoming,
        ..EmulatorConfig::default()
    };
    if let Some(ieee) = args.ieee {
        config.ieee = ieee;
    }
    config.timing.report_interval = args.report_interval;
    config.timing.sleepy_wake_interval = args.sleepy_wake_interval;
    config.timing.sleepy_answers_after_join = args.sleepy_answers_after_join;
    Ok((config, faults))
}

/// Runs `fieldgate emulate zigbee` until SIGTERM or SIGINT.
pub async fn run_zigbee(args: ZigbeeArgs) -> Result<()> {
    let (config, faults) = emulator_config(&args)?;
    let device_count = config.devices.len();
    let sim = SimEmulator::new(config);
    for plan in faults.iter().filter(|p| p.after.is_none()) {
        sim.inject(plan.fault.clone());
    }
    let endpoint = Endpoint::open(args.listen.as_deref(), args.pty, &sim).await?;
    let mut signals = endpoint.announce()?;
    tracing::info!(
        devices = device_count,
        faults = faults.len(),
        "zigbee coordinator emulator up"
    );
    let fault_tasks: Vec<_> = faults
        .into_iter()
        .filter(|p| p.after.is_some())
        .map(|plan| tokio::spawn(super::run_fault(sim.clone(), plan)))
        .collect();
    let result = endpoint.serve(&sim, &mut signals).await;
    for t in fault_tasks {
        t.abort();
    }
    tracing::info!(stats = ?sim.with(|e, _| e.stats()), "zigbee coordinator emulator stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_with_counts_and_distinct_addresses() {
        let d = parse_devices(&["plug=2".into(), "temp-humidity".into(), "plug".into()]).unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(
            d[0],
            (DeviceKind::SmartPlug, DeviceKind::SmartPlug.default_ieee())
        );
        assert_eq!(
            d[1].1,
            IeeeAddr(DeviceKind::SmartPlug.default_ieee().0 + 0x100)
        );
        assert_eq!(
            d[3].1,
            IeeeAddr(DeviceKind::SmartPlug.default_ieee().0 + 0x200)
        );
        assert!(parse_devices(&["none".into()]).unwrap().is_empty());
        assert!(parse_devices(&["lamp".into()]).is_err());
        assert!(parse_devices(&["plug=x".into()]).is_err());
    }

    #[test]
    fn faults_parse_with_times_and_devices() {
        let devices = parse_devices(&["plug".into(), "contact".into()]).unwrap();
        let f = parse_fault("reset@30s", &devices).unwrap();
        assert_eq!(f.fault, Fault::Reset);
        assert_eq!(f.after, Some(Duration::from_secs(30)));
        assert_eq!(f.every, None);
        let f = parse_fault("corrupt-frame/10s", &devices).unwrap();
        assert_eq!(f.after, Some(Duration::from_secs(10)));
        assert_eq!(f.every, Some(Duration::from_secs(10)));
        let f = parse_fault("garbage:fe00ff@1s/2s", &devices).unwrap();
        assert_eq!(f.fault, Fault::Garbage(vec![0xFE, 0x00, 0xFF]));
        let f = parse_fault("leave:plug@1m", &devices).unwrap();
        assert_eq!(
            f.fault,
            Fault::DeviceLeaves(DeviceKind::SmartPlug.default_ieee())
        );
        let f = parse_fault("stuck-interview:0x00124b000a000003", &devices).unwrap();
        assert_eq!(
            f.fault,
            Fault::StuckInterview(DeviceKind::ContactSensor.default_ieee())
        );
        assert_eq!(f.after, None);
        assert!(parse_fault("stuck-interview:temp-humidity", &devices).is_err());
        assert!(parse_fault("stuck-interview:plug@1s", &devices).is_err());
        assert!(parse_fault("leave", &devices).is_err());
        assert!(parse_fault("explode", &devices).is_err());
        assert!(parse_fault("reset/1ms", &devices).is_err());
        assert!(parse_fault("garbage:zz", &devices).is_err());
    }

    #[test]
    fn incoming_form_parses() {
        assert_eq!(parse_incoming("ext"), Ok(IncomingForm::AllExt));
        assert_eq!(parse_incoming("EXT-IEEE"), Ok(IncomingForm::AllExtIeee));
        assert_eq!(parse_incoming("standard"), Ok(IncomingForm::Standard));
        assert!(parse_incoming("msg").is_err());
    }

    #[test]
    fn firmware_parses() {
        assert_eq!(parse_firmware("30x"), Ok(Firmware::ZStack30x));
        assert_eq!(parse_firmware("zstack3x0"), Ok(Firmware::ZStack3x0));
        assert!(parse_firmware("1.2").is_err());
    }
}
