//! Decodes and encodes gateway messages with ChirpStack's own types, the way its MQTT
//! gateway backend does (`serde_json::from_slice::<gw::UplinkFrame>` and friends for
//! events, `serde_json::to_vec(&gw::DownlinkFrame)` for commands).
//!
//! One JSON object per stdin line, one answer per stdout line:
//! - `{"kind":"uplink"|"stats"|"ack","json":"<message text>"}` →
//!   `{"ok":true, ...decoded fields...}` or `{"ok":false,"error":"..."}`;
//! - `{"kind":"downlink","spec":{...}}` → `{"ok":true,"json":"<DownlinkFrame JSON text>"}`.

use std::io::{BufRead, Write};

use chirpstack_api::gw;
use chirpstack_api::pbjson_types::Duration;
use serde_json::{json, Value};

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match answer(&line) {
            Ok(v) => v,
            Err(e) => json!({"ok": false, "error": e}),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
}

fn answer(line: &str) -> Result<Value, String> {
    let req: Value = serde_json::from_str(line).map_err(|e| format!("request: {e}"))?;
    let kind = req["kind"].as_str().ok_or("request: no kind")?;
    let text = || req["json"].as_str().ok_or("request: no json text");
    match kind {
        "uplink" => uplink(text()?),
        "stats" => stats(text()?),
        "ack" => ack(text()?),
        "downlink" => downlink(&req["spec"]),
        other => Err(format!("request: unknown kind {other}")),
    }
}

fn uplink(text: &str) -> Result<Value, String> {
    let f: gw::UplinkFrame = serde_json::from_slice(text.as_bytes()).map_err(|e| e.to_string())?;
    let tx = f.tx_info.ok_or("uplink: no txInfo")?;
    let rx = f.rx_info.ok_or("uplink: no rxInfo")?;
    let lora = match tx.modulation.and_then(|m| m.parameters) {
        Some(gw::modulation::Parameters::Lora(l)) => l,
        _ => return Err("uplink: modulation is not LoRa".into()),
    };
    Ok(json!({
        "ok": true,
        "phy_payload": hex::encode(&f.phy_payload),
        "frequency": tx.frequency,
        "spreading_factor": lora.spreading_factor,
        "bandwidth": lora.bandwidth,
        "code_rate": lora.code_rate().as_str_name(),
        "gateway_id": rx.gateway_id,
        "uplink_id": rx.uplink_id,
        "rssi": rx.rssi,
        "snr": rx.snr,
        "channel": rx.channel,
        "rf_chain": rx.rf_chain,
        "context": hex::encode(&rx.context),
        "crc_status": rx.crc_status().as_str_name(),
    }))
}

fn stats(text: &str) -> Result<Value, String> {
    let s: gw::GatewayStats = serde_json::from_slice(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(json!({
        "ok": true,
        "gateway_id": s.gateway_id,
        "rx_packets_received": s.rx_packets_received,
        "rx_packets_received_ok": s.rx_packets_received_ok,
        "tx_packets_received": s.tx_packets_received,
        "tx_packets_emitted": s.tx_packets_emitted,
        "has_time": s.time.is_some(),
    }))
}

fn ack(text: &str) -> Result<Value, String> {
    let a: gw::DownlinkTxAck =
        serde_json::from_slice(text.as_bytes()).map_err(|e| e.to_string())?;
    let statuses: Vec<&str> = a.items.iter().map(|i| i.status().as_str_name()).collect();
    Ok(json!({
        "ok": true,
        "gateway_id": a.gateway_id,
        "downlink_id": a.downlink_id,
        "statuses": statuses,
    }))
}

/// Builds a DownlinkFrame the way ChirpStack's network server fills one in, from a
/// small description: `{"downlink_id", "gateway_id", "items": [{"phy_payload" (hex),
/// "frequency", "power", "spreading_factor", "bandwidth", "timing": "delay"|"immediately",
/// "delay_secs", "context" (hex)}]}`.
fn downlink(spec: &Value) -> Result<Value, String> {
    let num = |v: &Value, k: &str| v[k].as_u64().ok_or(format!("downlink: no {k}"));
    let mut items = Vec::new();
    for it in spec["items"].as_array().ok_or("downlink: no items")? {
        let timing = match it["timing"].as_str() {
            Some("delay") => gw::timing::Parameters::Delay(gw::DelayTimingInfo {
                delay: Some(Duration {
                    seconds: num(it, "delay_secs")? as i64,
                    nanos: 0,
                }),
            }),
            Some("immediately") => {
                gw::timing::Parameters::Immediately(gw::ImmediatelyTimingInfo {})
            }
            other => return Err(format!("downlink: timing {other:?}")),
        };
        let context = hex::decode(it["context"].as_str().unwrap_or(""))
            .map_err(|e| format!("downlink: context: {e}"))?;
        let phy = hex::decode(
            it["phy_payload"]
                .as_str()
                .ok_or("downlink: no phy_payload")?,
        )
        .map_err(|e| format!("downlink: phy_payload: {e}"))?;
        items.push(gw::DownlinkFrameItem {
            phy_payload: phy,
            tx_info_legacy: None,
            tx_info: Some(gw::DownlinkTxInfo {
                frequency: num(it, "frequency")? as u32,
                power: it["power"].as_i64().unwrap_or(14) as i32,
                modulation: Some(gw::Modulation {
                    parameters: Some(gw::modulation::Parameters::Lora(gw::LoraModulationInfo {
                        bandwidth: num(it, "bandwidth")? as u32,
                        spreading_factor: num(it, "spreading_factor")? as u32,
                        code_rate: gw::CodeRate::Cr45.into(),
                        polarization_inversion: true,
                        ..Default::default()
                    })),
                }),
                board: 0,
                antenna: 0,
                timing: Some(gw::Timing {
                    parameters: Some(timing),
                }),
                context,
            }),
        });
    }
    let frame = gw::DownlinkFrame {
        downlink_id: num(spec, "downlink_id")? as u32,
        downlink_id_legacy: Vec::new(),
        items,
        gateway_id_legacy: Vec::new(),
        gateway_id: spec["gateway_id"].as_str().unwrap_or("").to_string(),
    };
    let text = serde_json::to_vec(&frame).map_err(|e| e.to_string())?;
    Ok(json!({"ok": true, "json": String::from_utf8_lossy(&text)}))
}
