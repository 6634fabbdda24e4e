//! Policy evaluation cost per event with 1,000 local rules and 10,000 devices,
//! against an engine with no rules in the same run.
//!
//! Each event is what the hub asks for a reading: admission (allow/deny lists),
//! firmware compliance and the rule engine. Run: `cargo bench --bench policy`.

use std::hint::black_box;
use std::time::Instant;

use fieldgate::config::Protocol;
use fieldgate::model::Value;
use fieldgate::policy::{DeviceFacts, Policy, PolicyEngine};
use serde_json::json;

const DEVICES: usize = 10_000;
const RULES: usize = 1_000;
const EVENTS: usize = 2_000_000;

fn engine(rules: usize) -> PolicyEngine {
    let rules: Vec<_> = (0..rules)
        .map(|i| {
            json!({"id": format!("r{i}"),
                   "when": {"device": format!("zigbee:0x{:016x}", i * 7 % DEVICES), "reading": "temperature",
                            "op": ">", "value": 25.0, "hysteresis": 0.5},
                   "then": {"device": format!("zigbee:0x{:016x}", (i * 13 + 1) % DEVICES), "command": {"state": "on"}},
                   "min_interval": "1s"})
        })
        .collect();
    let doc = json!({"version": 1,
        "admission": {"mode": "allowlist",
                      "allow": [{"manufacturer": "LUMI", "model": "lumi.*"}, {"manufacturer": "ACME"}],
                      "deny": (0..50).map(|i| json!({"address": format!("0x{:016x}", 900_000 + i)})).collect::<Vec<_>>()},
        "firmware": [{"match": {"model": "lumi.weather"}, "min_version": "3000.0001"},
                     {"match": {"manufacturer": "ACME"}, "min_version": "1.4.2"}],
        "rules": rules});
    PolicyEngine::new(Policy::parse(doc.to_string().as_bytes()).expect("valid policy"))
}

fn run(e: PolicyEngine, ids: &[String], addrs: &[String]) -> (f64, usize) {
    let start = Instant::now();
    let t0 = Instant::now();
    let mut fired = 0;
    let mut states = e.new_states();
    for n in 0..EVENTS {
        let d = (n * 7919) % DEVICES;
        let facts = DeviceFacts {
            protocol: Some(Protocol::Zigbee),
            address: &addrs[d],
            manufacturer: Some("LUMI"),
            model: Some("lumi.weather"),
            capabilities: &[],
        };
        black_box(e.admit(&facts));
        black_box(e.firmware(&facts, Some("3000.0002")));
        let v = Value::Number(20.0 + (n % 13) as f64);
        fired += e
            .on_reading(
                &mut states,
                &ids[d],
                "temperature",
                &v,
                t0 + std::time::Duration::from_millis(n as u64),
            )
            .len();
    }
    (start.elapsed().as_nanos() as f64 / EVENTS as f64, fired)
}

fn main() {
    let addrs: Vec<String> = (0..DEVICES).map(|i| format!("0x{i:016x}")).collect();
    let ids: Vec<String> = addrs.iter().map(|a| format!("zigbee:{a}")).collect();
    println!("policy evaluation per event: {DEVICES} devices, {EVENTS} events");
    let (with, fired) = run(engine(RULES), &ids, &addrs);
    let (without, _) = run(engine(0), &ids, &addrs);
    println!("  {RULES} rules:  {with:>8.1} ns/event  ({fired} firings)");
    println!("  0 rules:     {without:>8.1} ns/event  (same admission and firmware lists)");
    println!("  ratio:       {:>8.2}x", with / without);
}
