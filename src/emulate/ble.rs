//! `fieldgate emulate ble`: the BLE emulator's advertisements as JSON lines on stdout,
//! one per advertisement, paced in real time (or faster). BLE has no byte link a host
//! stack could be pointed at (BlueZ owns the adapter), so the emulator is offered as
//! data: each line is an advertisement as a scanner reports it (address, RSSI, local
//! name, service data and manufacturer data in hex, plus `ad`, the raw AD structures),
//! which `fieldgate decode ble` or any other decoder can read back.

use std::time::Duration;

use fieldgate_ble::emulator::{Scene, SceneOptions, TICK_MS};
use fieldgate_ble::{format_address, to_hex, Advertisement};
use serde_json::json;

/// The most passers-by a street holds (each is a few hundred bytes of state).
pub const MAX_STREET: u32 = 100_000;

#[derive(Debug, Clone, clap::Args)]
pub struct BleArgs {
    /// Random addresses passing by besides the room's devices (phones, beacons).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=MAX_STREET as i64))]
    pub street: u32,
    /// Leave out the replayed, forged and downgraded advertisements.
    #[arg(long)]
    pub no_faults: bool,
    /// Stop after this much emulated time (e.g. `30s`); runs until interrupted otherwise.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Emulated time runs this many times faster than real time (1–1000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub speed: u32,
    /// The scene's seed (same seed, same street).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One advertisement as a JSON line.
pub fn json_line(adv: &Advertisement, tick: u64) -> String {
    let service_data: serde_json::Map<String, serde_json::Value> = adv
        .service_data
        .iter()
        .map(|(u, d)| {
            (
                u.as_u16()
                    .map_or_else(|| u.to_string(), |s| format!("{s:04x}")),
                json!(to_hex(d)),
            )
        })
        .collect();
    let manufacturer_data: serde_json::Map<String, serde_json::Value> = adv
        .manufacturer_data
        .iter()
        .map(|(c, d)| (format!("{c:04x}"), json!(to_hex(d))))
        .collect();
    json!({
        "t_ms": tick * TICK_MS,
        "address": format_address(&adv.address),
        "rssi": adv.rssi,
        "name": adv.local_name,
        "service_data": service_data,
        "manufacturer_data": manufacturer_data,
        "ad": to_hex(&fieldgate_ble::encode::ad_bytes(adv)),
    })
    .to_string()
}

pub async fn run_ble(args: BleArgs) -> anyhow::Result<()> {
    let mut scene = Scene::new(&SceneOptions {
        street: args.street as usize,
        faults: !args.no_faults,
        seed: args.seed,
        beacon_away: None,
        counter_base: Some(fieldgate_ble::emulator::counter_from_clock()),
    });
    let ticks = args.duration.map(|d| d.as_millis() as u64 / TICK_MS);
    let mut pace = tokio::time::interval(Duration::from_millis(TICK_MS) / args.speed.max(1));
    loop {
        if ticks.is_some_and(|n| scene.now() >= n) {
            return Ok(());
        }
        pace.tick().await;
        let tick = scene.now();
        for adv in scene.tick() {
            if crate::output::try_line(format_args!("{}", json_line(&adv, tick))).is_err() {
                return Ok(()); // stdout closed (`| head`)
            }
        }
    }
}
