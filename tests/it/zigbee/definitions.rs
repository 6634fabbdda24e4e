//! The built-in Zigbee device definitions against zigbee-herdsman-converters 26.112.0
//! (`tests/peers/zigbee/definitions.js`): for every built-in device, frames for each cluster
//! it serves and each manufacturer value it defines (Xiaomi struct records, Tuya datapoints)
//! are written by zigbee-herdsman's ZCL writer and converted by zigbee-herdsman-converters'
//! own `fromZigbee` converters for that model; the same bytes go through our definition code
//! (`definitions::device_readings`). The values must agree, key by key, through the one
//! reviewed name mapping [`KEYS`]; accepted differences are in [`DIFFERENCES`], with why.
//! Runs with FIELDGATE_PEERS=1 after `tests/peers/zigbee/setup.sh`; prints the agreement.

use std::collections::BTreeMap;

use fieldgate::model::{Reading, Value};
use fieldgate::radio::zigbee::definitions::{self, Catalog, Definition, Source};
use fieldgate_zigbee::zcl::readings::ScalingContext;
use fieldgate_zigbee::zcl::ZclFrame;
use serde_json::{json, Value as J};

/// How a zigbee-herdsman-converters value becomes ours.
#[derive(Debug, Clone, Copy)]
enum Conv {
    Same,
    /// Multiply theirs by this.
    Scale(f64),
    /// "ON"/"LOCK" (true) or "OFF"/"UNLOCK" (false).
    Word,
}

/// The name mapping, reviewed: (their key, our reading name, conversion). A key maps to a
/// name only where that name is one of our readings for the frame (`voltage` is a Lumi
/// battery's mV or a plug's mains V).
const KEYS: &[(&str, &str, Conv)] = &[
    ("temperature", "temperature", Conv::Same),
    ("local_temperature", "temperature", Conv::Same),
    ("humidity", "humidity", Conv::Same),
    ("pressure", "pressure", Conv::Same),
    ("illuminance", "illuminance", Conv::Same),
    ("battery", "battery", Conv::Same),
    ("voltage", "battery_voltage", Conv::Scale(0.001)),
    ("voltage", "voltage", Conv::Same),
    ("battery_low", "battery_low", Conv::Same),
    ("tamper", "tamper", Conv::Same),
    ("contact", "contact", Conv::Same),
    ("occupancy", "occupancy", Conv::Same),
    ("water_leak", "water_leak", Conv::Same),
    ("smoke", "smoke", Conv::Same),
    ("power", "power", Conv::Same),
    ("energy", "energy", Conv::Same),
    ("current", "current", Conv::Same),
    ("state", "on", Conv::Word),
    ("brightness", "level_raw", Conv::Same),
    ("soil_moisture", "soil_moisture", Conv::Same),
    ("current_heating_setpoint", "setpoint", Conv::Same),
    ("child_lock", "child_lock", Conv::Word),
    ("frost_protection", "frost_protection", Conv::Word),
    ("device_temperature", "device_temperature", Conv::Same),
];

/// Our readings with no counterpart key by design (derived views of the same value).
const OURS_ONLY: &[(&str, &str)] = &[(
    "level",
    "the vocabulary's level in % next to level_raw; zigbee-herdsman-converters gives brightness 0-254 only",
)];

/// Per-model exceptions to [`KEYS`]: (model, their key, our name, conversion, why).
const MODEL_KEYS: &[(&str, &str, &str, Conv, &str)] = &[(
    "WSDCGQ12LM",
    "pressure",
    "pressure",
    Conv::Scale(10.0),
    "zigbee-herdsman-converters' modern pressure extend reports kPa; the vocabulary's pressure is hPa",
)];

/// Accepted differences, each with why: (model, their key or our name, which side has it).
#[derive(Clone, Copy, PartialEq)]
enum Side {
    /// They report it and we do not (or not the same).
    Theirs,
    /// We report it and they do not.
    Ours,
}

const DIFFERENCES: &[(&str, &str, Side, &str)] = &[
    (
        "RTCGQ11LM",
        "occupancy",
        Side::Theirs,
        "zigbee-herdsman-converters infers motion from an illuminance report (lumi_illuminance \
         calls occupancy_with_timeout); we report what the frame carries, the illuminance.",
    ),
    (
        "E1524/E1810",
        "battery_voltage",
        Side::Ours,
        "IKEA remotes send Power Configuration's battery voltage too; zigbee-herdsman-converters' \
         IKEA battery extend exposes the percentage only, we report both.",
    ),
    ("E1743", "battery_voltage", Side::Ours, "as for E1524/E1810"),
    (
        "E2001/E2002/E2313",
        "battery_voltage",
        Side::Ours,
        "as for E1524/E1810",
    ),
    (
        "SJCGQ11LM",
        "tamper",
        Side::Ours,
        "the IAS zone status carries a tamper bit; zigbee-herdsman-converters' iasZoneAlarm for \
         this model is given alarm_1 and battery_low only and drops it, we report it.",
    ),
    ("SNZB-03", "tamper", Side::Ours, "as for SJCGQ11LM"),
    ("SNZB-04", "tamper", Side::Ours, "as for SJCGQ11LM"),
];

fn accepted(model: &str, name: &str, side: Side) -> bool {
    DIFFERENCES
        .iter()
        .any(|(m, n, s, _)| *m == model && *n == name && *s == side)
}

/// A standard report for a cluster a device serves: (cluster, attribute, ZCL type, value).
fn standard_reports(cluster: u16) -> Vec<(u16, u8, J)> {
    match cluster {
        0x0001 => vec![(0x0021, 0x20, json!(150)), (0x0020, 0x20, json!(29))],
        0x0006 => vec![(0x0000, 0x10, json!(1))],
        0x0008 => vec![(0x0000, 0x20, json!(127))],
        0x0400 => vec![(0x0000, 0x21, json!(530))],
        0x0402 => vec![(0x0000, 0x29, json!(2150))],
        0x0403 => vec![(0x0000, 0x29, json!(1013))],
        0x0405 => vec![(0x0000, 0x21, json!(4520))],
        0x0406 => vec![(0x0000, 0x18, json!(1))],
        0x000C => vec![(0x0055, 0x39, json!(12.5))],
        _ => Vec::new(),
    }
}

/// A sample raw value for a Xiaomi struct index: (ZCL type, value).
fn xiaomi_sample(index: u8) -> (u8, J) {
    match index {
        1 => (0x21, json!(2950)),
        3 => (0x28, json!(28)),
        11 => (0x21, json!(530)),
        100 => (0x29, json!(2191)),
        101 => (0x21, json!(4998)),
        102 => (0x2B, json!(100310)),
        149 | 152 => (0x39, json!(12.5)),
        150 => (0x21, json!(2301)),
        _ => (0x20, json!(1)),
    }
}

/// A sample Tuya datapoint for a reading name: (type, value).
fn tuya_sample(name: &str) -> (u8, i64) {
    match name {
        "child_lock" | "frost_protection" => (1, 1),
        "temperature" => (2, 215),
        "setpoint" => (2, 205),
        _ => (2, 61),
    }
}

struct Case {
    model: String,
    model_id: String,
    manufacturer: String,
    cluster: u16,
    frame: J,
}

fn cases(def: &Definition) -> Vec<Case> {
    let model_id = def.zigbee_model[0].clone();
    let manufacturer = def.manufacturer.first().cloned().unwrap_or_else(|| {
        match def.vendor.as_str() {
            "Aqara" | "Xiaomi" => "LUMI",
            "IKEA" => "IKEA of Sweden",
            "Philips" => "Signify Netherlands B.V.",
            "SONOFF" => "eWeLink",
            "Heiman" => "HEIMAN",
            _ => "_TZ3000_cphmq0q7",
        }
        .to_string()
    });
    let case = |cluster: u16, frame: J| Case {
        model: def.model.clone(),
        model_id: model_id.clone(),
        manufacturer: manufacturer.clone(),
        cluster,
        frame,
    };
    let mut out = Vec::new();
    for &cluster in &def.clusters {
        for (attr, ty, value) in standard_reports(cluster) {
            out.push(case(
                cluster,
                json!({"report": [{"attr": attr, "type": ty, "value": value}]}),
            ));
        }
        if cluster == 0x0006 {
            out.push(case(
                cluster,
                json!({"report": [{"attr": 0, "type": 0x10, "value": 0}]}),
            ));
        }
        if cluster == 0x0500 {
            for status in [0x0001, 0x0000, 0x0004, 0x0008] {
                out.push(case(cluster, json!({"zone_status": status})));
            }
        }
    }
    let xiaomi: Vec<J> = def
        .readings
        .iter()
        .filter_map(|r| match r.source {
            Source::Xiaomi(i) => Some(i),
            _ => None,
        })
        .map(|i| {
            let (ty, v) = xiaomi_sample(i);
            json!([i, ty, v])
        })
        .collect();
    if !xiaomi.is_empty() {
        out.push(case(
            0x0000,
            json!({"report": [{"attr": 0xFF01, "type": 0x42, "struct": xiaomi}]}),
        ));
    }
    for r in &def.readings {
        if let Source::Tuya(dp) = r.source {
            let (ty, v) = tuya_sample(&r.name);
            out.push(case(
                0xEF00,
                json!({"tuya": [{"dp": dp, "type": ty, "value": v}]}),
            ));
        }
    }
    out
}

fn ours(catalog: &Catalog, c: &Case, hex: &str) -> Vec<Reading> {
    let bytes = hex::decode(hex).expect("hex from the peer");
    let frame = ZclFrame::decode(c.cluster, &bytes).expect("our codec decodes herdsman's frame");
    let def = catalog.find(Some(&c.manufacturer), Some(&c.model_id));
    assert_eq!(
        def.as_ref().map(|d| d.model.as_str()),
        Some(c.model.as_str())
    );
    let found = definitions::device_readings(
        def.as_deref(),
        c.cluster,
        &frame,
        &ScalingContext::default(),
    );
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    found.readings
}

fn theirs_as_ours(v: &J, conv: Conv) -> Option<Value> {
    match (conv, v) {
        (Conv::Word, J::String(s)) => match s.as_str() {
            "ON" | "LOCK" => Some(Value::Bool(true)),
            "OFF" | "UNLOCK" => Some(Value::Bool(false)),
            _ => None,
        },
        (_, J::Bool(b)) => Some(Value::Bool(*b)),
        (Conv::Scale(k), J::Number(n)) => n.as_f64().map(|n| Value::Number(n * k)),
        (_, J::Number(n)) => n.as_f64().map(Value::Number),
        _ => None,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x - y).abs() <= 1e-6 * x.abs().max(1.0),
        _ => a == b,
    }
}

#[test]
fn device_definitions_agree_with_zigbee_herdsman_converters() {
    let enabled = std::env::var("FIELDGATE_PEERS").is_ok_and(|v| v == "1");
    let root = env!("CARGO_MANIFEST_DIR");
    if !enabled {
        println!("skipped: set FIELDGATE_PEERS=1 (and run tests/peers/zigbee/setup.sh) to compare with zigbee-herdsman-converters");
        return;
    }
    let package =
        format!("{root}/tests/peers/zigbee/node_modules/zigbee-herdsman-converters/package.json");
    assert!(
        std::path::Path::new(&package).exists(),
        "FIELDGATE_PEERS=1 but zigbee-herdsman-converters is not installed: run tests/peers/zigbee/setup.sh"
    );
    let catalog = Catalog::built_in();
    let all: Vec<Case> = catalog.devices().iter().flat_map(|d| cases(d)).collect();
    let input: String = all
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": i, "model_id": c.model_id, "manufacturer": c.manufacturer, "cluster": c.cluster, "frame": c.frame})
                .to_string()
                + "\n"
        })
        .collect();
    let mut child = std::process::Command::new("node")
        .arg(format!("{root}/tests/peers/zigbee/definitions.js"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("FIELDGATE_PEERS=1 needs node on PATH");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<J> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), all.len());

    let (mut agreed, mut compared) = (0usize, 0usize);
    let mut accepted_count: BTreeMap<String, usize> = BTreeMap::new();
    let mut not_compared: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut devices = std::collections::BTreeSet::new();
    for (c, zh) in all.iter().zip(&answers) {
        if let Some(e) = zh.get("error") {
            failures.push(format!(
                "{} {}: zigbee-herdsman-converters failed: {e}",
                c.model, c.frame
            ));
            continue;
        }
        assert_eq!(
            zh["model"].as_str(),
            Some(c.model.as_str()),
            "zigbee-herdsman-converters chose another definition for {}",
            c.model_id
        );
        devices.insert(c.model.clone());
        let hex = zh["hex"].as_str().unwrap();
        let mine = ours(&catalog, c, hex);
        let theirs = zh["values"].as_object().cloned().unwrap_or_default();
        let mut used: Vec<&'static str> = Vec::new();
        for (key, v) in &theirs {
            let model_rows: Vec<(&str, &'static str, Conv)> = MODEL_KEYS
                .iter()
                .filter(|(m, k, ..)| *m == c.model && k == key)
                .map(|(_, k, n, conv, _)| (*k, *n, *conv))
                .collect();
            let rows: Vec<(&str, &'static str, Conv)> = if model_rows.is_empty() {
                KEYS.iter().filter(|(k, _, _)| k == key).copied().collect()
            } else {
                model_rows
            };
            if rows.is_empty() {
                *not_compared.entry(key.clone()).or_default() += 1;
                continue;
            }
            let row = rows
                .iter()
                .find(|(_, n, _)| mine.iter().any(|r| r.name == *n))
                .or(rows.first())
                .unwrap();
            compared += 1;
            let mine_v = mine.iter().find(|r| r.name == row.1);
            used.push(row.1);
            let want = theirs_as_ours(v, row.2);
            match (mine_v, want) {
                (Some(r), Some(w)) if same(&r.value, &w) => agreed += 1,
                _ if accepted(&c.model, key, Side::Theirs) => {
                    *accepted_count.entry(key.clone()).or_default() += 1;
                    agreed += 1;
                }
                (m, w) => failures.push(format!(
                    "{} {} (bytes {hex}): theirs {key}={v} (as ours {w:?}), ours {:?}",
                    c.model,
                    c.frame,
                    m.map(|r| &r.value)
                )),
            }
        }
        for r in &mine {
            if used.contains(&r.name.as_str()) || OURS_ONLY.iter().any(|(n, _)| *n == r.name) {
                continue;
            }
            compared += 1;
            if accepted(&c.model, &r.name, Side::Ours) {
                *accepted_count.entry(r.name.clone()).or_default() += 1;
                agreed += 1;
                continue;
            }
            failures.push(format!(
                "{} {} (bytes {hex}): ours {}={:?}, zigbee-herdsman-converters reports no counterpart ({theirs:?})",
                c.model, c.frame, r.name, r.value
            ));
        }
    }
    let share = 100.0 * agreed as f64 / compared.max(1) as f64;
    let differing: usize = accepted_count.values().sum();
    let exact = 100.0 * (agreed - differing) as f64 / compared.max(1) as f64;
    println!(
        "device definitions vs zigbee-herdsman-converters 26.112.0: {} devices, {} frames, {agreed}/{compared} values agree ({share:.1} %; {exact:.1} % without the {differing} accepted differences)",
        devices.len(),
        all.len()
    );
    for (key, n) in &accepted_count {
        println!("  accepted difference `{key}`: {n}");
    }
    println!("  their keys with no counterpart here (not compared): {not_compared:?}");
    assert!(
        devices.len() >= 30,
        "only {} devices compared",
        devices.len()
    );
    assert!(
        failures.is_empty(),
        "{} disagreement(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// End to end through the real driver, hub and store: the emulator's Tuya TS0601 (datapoints
/// on 0xEF00) and Aqara WSDCGQ11LM (the 0xFF01 struct) join, their definitions are matched
/// from the Basic cluster, and their manufacturer payloads arrive as vocabulary readings with
/// units, in the registry's last state too. A site definition in `definitions_dir` (read at
/// start, no rebuild) overrides the built-in one for the Aqara sensor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuya_and_aqara_payloads_become_readings_end_to_end() {
    use super::{emulator_config, id, number, Rig, FAST};
    use fieldgate::radio::zigbee_sim::PtyEmulator;
    use fieldgate_zigbee::emulator::{DeviceKind, EmulatorConfig};
    use std::time::{Duration, Instant};

    let tuya = DeviceKind::TuyaTempHumidity;
    let aqara = DeviceKind::AqaraWeather;
    let pty = PtyEmulator::spawn(EmulatorConfig {
        devices: vec![(tuya, tuya.default_ieee()), (aqara, aqara.default_ieee())],
        ..emulator_config()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("devices.d");
    std::fs::create_dir(&defs).unwrap();
    // The site's own reading of the Aqara sensor: its struct's temperature under another
    // name, and the battery voltage without the percentage.
    std::fs::write(
        defs.join("weather.toml"),
        "[[device]]\nmodel = \"SITE-WEATHER\"\nvendor = \"Site\"\nzigbee_model = [\"lumi.weather\"]\n\n[[device.reading]]\nxiaomi = 100\nname = \"struct_temperature\"\ndivide = 100\nunit = \"°C\"\n\n[[device.reading]]\nxiaomi = 1\nname = \"battery_voltage\"\ndivide = 1000\n",
    )
    .unwrap();
    let options = format!("{FAST}definitions_dir = \"{}\"\n", defs.display());
    let rig = Rig::start(dir.path(), pty.path(), &options).await;
    let t0 = Instant::now() - Duration::from_secs(60);
    rig.permit_join().await;
    rig.wait_interviewed(tuya, 20).await;
    rig.wait_interviewed(aqara, 20).await;

    // Tuya: dp 1 temperature / 10, dp 2 humidity, dp 4 battery.
    let (v, unit) = rig.wait_reading(tuya, "temperature", t0, |_| true).await;
    assert!((21.0..=22.4).contains(&number(&v)), "{v:?}");
    assert_eq!(unit.as_deref(), Some("°C"));
    let (v, unit) = rig.wait_reading(tuya, "humidity", t0, |_| true).await;
    assert!((45.0..=47.0).contains(&number(&v)), "{v:?}");
    assert_eq!(unit.as_deref(), Some("%"));
    let (v, _) = rig.wait_reading(tuya, "battery", t0, |_| true).await;
    assert_eq!(number(&v), 87.0);

    // Aqara, read with the site's definition: the struct's temperature under the site's
    // name, battery voltage in V, and no percentage (the site did not ask for one).
    let (v, unit) = rig
        .wait_reading(aqara, "struct_temperature", t0, |_| true)
        .await;
    assert!((21.5..=22.4).contains(&number(&v)), "{v:?}");
    assert_eq!(unit.as_deref(), Some("°C"));
    let (v, unit) = rig
        .wait_reading(aqara, "battery_voltage", t0, |_| true)
        .await;
    assert_eq!(number(&v), 2.995);
    assert_eq!(unit.as_deref(), Some("V"));
    // The standard clusters still read generically.
    rig.wait_reading(aqara, "humidity", t0, |_| true).await;
    let seen_battery = rig.notices.lock().unwrap().iter().any(|(_, n)| {
        matches!(n, fieldgate::hub::Notice::Readings { device, readings, .. }
            if *device == id(aqara).to_string() && readings.iter().any(|r| r.name == "battery"))
    });
    assert!(
        !seen_battery,
        "the site definition gives no battery percentage"
    );

    // The store has them as the devices' last state.
    let th = rig.device(&id(tuya)).unwrap();
    assert_eq!(th.last_state["battery"], 87.0, "{}", th.last_state);
    assert_eq!(th.model.as_deref(), Some("TS0601"));
    let w = rig.device(&id(aqara)).unwrap();
    assert_eq!(w.last_state["battery_voltage"], 2.995, "{}", w.last_state);
    rig.stop().await;
}

/// Without a site file the built-in Aqara definition applies: the 0xFF01 struct's battery
/// voltage becomes `battery` in % as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_aqara_definition_derives_the_battery_percentage() {
    use super::{emulator_config, number, Rig, FAST};
    use fieldgate::radio::zigbee_sim::PtyEmulator;
    use fieldgate_zigbee::emulator::{DeviceKind, EmulatorConfig};
    use std::time::{Duration, Instant};

    let aqara = DeviceKind::AqaraWeather;
    let pty = PtyEmulator::spawn(EmulatorConfig {
        devices: vec![(aqara, aqara.default_ieee())],
        ..emulator_config()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = format!(
        "{FAST}definitions_dir = \"{}\"\n",
        dir.path().join("none").display()
    );
    let rig = Rig::start(dir.path(), pty.path(), &options).await;
    let t0 = Instant::now() - Duration::from_secs(60);
    rig.permit_join().await;
    rig.wait_interviewed(aqara, 20).await;
    // 2995 mV over 2850-3000 mV: 97 %.
    let (v, unit) = rig.wait_reading(aqara, "battery", t0, |_| true).await;
    assert_eq!(number(&v), 97.0);
    assert_eq!(unit.as_deref(), Some("%"));
    let (v, unit) = rig.wait_reading(aqara, "pressure", t0, |_| true).await;
    assert_eq!(number(&v), 1003.0);
    assert_eq!(unit.as_deref(), Some("hPa"));
    rig.stop().await;
}
