//! The technician CLI: each command is one or a few API calls, rendered as a
//! readable table by default or as JSON with `--json`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hyper::Method;
use serde_json::{json, Value};

use super::client::{segment, ApiClient, ClientError};
use crate::store::audit;

/// A value as one field of a line: a string's newlines and other control characters
/// escaped (a device names itself), anything else as compact JSON.
pub(super) fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => crate::output::one_line(s).into_owned(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        crate::outln!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn print_json(v: &Value) -> Result<()> {
    crate::outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn status(api: &ApiClient, as_json: bool) -> Result<()> {
    let v = api.call(Method::GET, "/v1/status", None).await?;
    if as_json {
        return print_json(&v);
    }
    crate::outln!(
        "gateway   {} (fieldgate {})",
        s(&v["gateway_id"]),
        s(&v["version"])
    );
    crate::outln!(
        "uptime    {}",
        humantime::format_duration(Duration::from_secs(v["uptime_s"].as_u64().unwrap_or(0)))
    );
    let d = &v["devices"];
    crate::outln!(
        "devices   {} total: {} active, {} pending, {} quarantined, {} decommissioned",
        d["total"].as_u64().unwrap_or(0),
        d["active"].as_u64().unwrap_or(0),
        d["pending"].as_u64().unwrap_or(0),
        d["quarantined"].as_u64().unwrap_or(0),
        d["decommissioned"].as_u64().unwrap_or(0)
    );
    let o = &v["outbox"];
    crate::outln!(
        "outbox    {} messages, {} bytes, oldest {}",
        o["depth"].as_u64().unwrap_or(0),
        o["bytes"].as_u64().unwrap_or(0),
        age(&o["oldest_age_ms"])
    );
    let disk = &v["store"]["disk"];
    if disk["disk_full"].as_bool() == Some(true) {
        crate::outln!(
            "DISK FULL the filesystem of the state directory is full ({} bytes free): {} write(s) failed, {} device event(s) not stored; free some space",
            disk["free_bytes"].as_u64().unwrap_or(0),
            disk["full_errors"].as_u64().unwrap_or(0),
            disk["events_not_stored"].as_u64().unwrap_or(0)
        );
    }
    let a = &v["audit"];
    crate::outln!(
        "audit     {} records, head {} {}, sealed through {} ({} epochs)",
        a["records"].as_i64().unwrap_or(0),
        a["head_seq"].as_i64().unwrap_or(0),
        s(&a["head_hash"]),
        a["sealed_through_seq"].as_i64().unwrap_or(0),
        a["sealed_epochs"].as_i64().unwrap_or(0)
    );
    if !a["alarm"].is_null() {
        crate::outln!(
            "ALARM     {}: {}",
            s(&a["alarm"]["name"]),
            s(&a["alarm"]["reason"])
        );
    }
    // The high-water mark lags the log while it cannot be rewritten: a cut of the
    // newest records would then go unseen.
    if let Some(n) = v["store"]["audit_mark_failures"]
        .as_u64()
        .filter(|n| *n > 0)
    {
        crate::outln!(
            "WARNING   the audit high-water mark could not be written {n} time(s): check the state directory (space, permissions)"
        );
    }
    let h = &v["held_requests"];
    match h["total"].as_u64().unwrap_or(0) {
        0 => crate::outln!("held      no requests held for sleeping devices"),
        n => crate::outln!(
            "held      {n} request(s) for sleeping devices ({} waiting for a wake, {} sent), oldest {}",
            h["queued"].as_u64().unwrap_or(0),
            h["sent"].as_u64().unwrap_or(0),
            age(&h["oldest_age_ms"])
        ),
    }
    let creds = &v["credentials"];
    if let Some(total) = creds["total"].as_u64() {
        let due = creds["due_for_rotation"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        crate::outln!(
            "secrets   {total} stored{}",
            if due > 0 {
                format!(
                    ", {due} due for rotation (policy: {} days)",
                    s(&creds["rotate_after_days"])
                )
            } else {
                String::new()
            }
        );
    }
    print_upstream(&v["upstream"]);
    crate::outln!();
    let rows: Vec<Vec<String>> = v["radios"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    vec![
                        s(&r["name"]),
                        s(&r["protocol"]),
                        s(&r["port"]),
                        s(&r["state"]),
                        s(&r["counters"]["startups"]),
                        radio_problems(&r["counters"]),
                        s(&r["detail"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        crate::outln!("no radios configured");
    } else {
        table(
            &[
                "radio", "protocol", "port", "state", "starts", "problems", "detail",
            ],
            &rows,
        );
        for r in v["radios"].as_array().into_iter().flatten() {
            if let Some(line) = forwarder_line(&r["counters"]["forwarder"]) {
                crate::outln!("{}: {line}", s(&r["name"]));
            }
        }
    }
    Ok(())
}

/// An age in milliseconds as whole seconds (`5m 3s`), `-` when absent.
fn age(ms: &Value) -> String {
    ms.as_u64()
        .map(|ms| humantime::format_duration(Duration::from_secs(ms / 1000)).to_string())
        .unwrap_or_else(|| "-".into())
}

/// The uplink lines of `fieldgate status` (see `crate::upstream::UpstreamSnapshot`).
/// A packet forwarder's own statistics in one line, if it reported any.
fn forwarder_line(f: &Value) -> Option<String> {
    let n = |k: &str| f[k].as_u64().unwrap_or(0);
    if n("reports") == 0 {
        return None;
    }
    let ackr = f["ackr"]
        .as_f64()
        .map(|a| format!(", {a:.0}% of its datagrams acknowledged"))
        .unwrap_or_default();
    Some(format!(
        "packet forwarder heard {} frames ({} CRC ok, {} forwarded), got {} downlinks, sent {}{ackr} ({} reports)",
        n("rxnb"),
        n("rxok"),
        n("rxfw"),
        n("dwnb"),
        n("txnb"),
        n("reports")
    ))
}

/// A radio's error counters that are not zero, e.g. `undecodable 3, timeouts 1`.
fn radio_problems(counters: &Value) -> String {
    let names = [
        ("undecodable", "undecodable"),
        ("line_errors", "line errors"),
        ("timeouts", "timeouts"),
        ("bad_nv_items", "bad NV items"),
        ("incomplete", "incomplete messages"),
        ("not_decrypted", "not decrypted"),
        ("refused", "refused (security)"),
        ("busy", "busy (retried)"),
        ("unsupported", "unsupported by the firmware"),
    ];
    let found: Vec<String> = names
        .iter()
        .filter_map(|(key, label)| {
            let n = counters[key].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{label} {n}"))
        })
        .collect();
    if found.is_empty() {
        "-".into()
    } else {
        found.join(", ")
    }
}

fn print_upstream(u: &Value) {
    if u.is_null() {
        crate::outln!("uplink    not configured (no [upstream] section)");
        return;
    }
    crate::outln!("uplink    {} to {}", s(&u["state"]), s(&u["broker"]));
    crate::outln!(
        "          delivered {} ({:.1}/s), dropped telemetry {} (expired {}, for space {}), refused {}",
        u["delivered"].as_u64().unwrap_or(0),
        u["delivered_per_s"].as_f64().unwrap_or(0.0),
        u["dropped_telemetry_expired"].as_u64().unwrap_or(0)
            + u["dropped_telemetry_for_space"].as_u64().unwrap_or(0),
        u["dropped_telemetry_expired"].as_u64().unwrap_or(0),
        u["dropped_telemetry_for_space"].as_u64().unwrap_or(0),
        u["refused_telemetry"].as_u64().unwrap_or(0),
    );
    let refused = u["refused_by_broker"].as_u64().unwrap_or(0);
    if refused > 0 {
        crate::outln!("          refused by the broker {refused} (kept in the outbox)");
    }
    if !u["last_error"].is_null() {
        crate::outln!("          last error: {}", s(&u["last_error"]));
    }
    if !u["alarm"].is_null() {
        crate::outln!("ALARM     {}", s(&u["alarm"]));
    }
}

fn device_rows(list: &[Value]) -> Vec<Vec<String>> {
    list.iter()
        .map(|d| {
            vec![
                s(&d["id"]),
                s(&d["name"]),
                s(&d["radio"]),
                s(&d["lifecycle"]),
                s(&d["manufacturer"]),
                s(&d["model"]),
                s(&d["firmware"]),
                s(&d["power_source"]),
                s(&d["last_seen"]),
                health_text(&d["health"]),
            ]
        })
        .collect()
}

pub async fn devices(
    api: &ApiClient,
    as_json: bool,
    lifecycle: Option<&str>,
    unhealthy: bool,
) -> Result<()> {
    let mut query = Vec::new();
    if let Some(l) = lifecycle {
        query.push(format!("lifecycle={l}"));
    }
    if unhealthy {
        query.push("unhealthy=true".to_string());
    }
    let path = if query.is_empty() {
        "/v1/devices".to_string()
    } else {
        format!("/v1/devices?{}", query.join("&"))
    };
    let v = api.call(Method::GET, &path, None).await?;
    if as_json {
        return print_json(&v);
    }
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        crate::outln!("no devices");
        return Ok(());
    }
    table(
        &[
            "id",
            "name",
            "radio",
            "lifecycle",
            "manufacturer",
            "model",
            "firmware",
            "power",
            "last seen",
            "health",
        ],
        &device_rows(&list),
    );
    Ok(())
}

pub async fn device(api: &ApiClient, id: &str, as_json: bool) -> Result<()> {
    let v = api
        .call(
            Method::GET,
            &format!("/v1/devices/{}", segment("the device id", id)?),
            None,
        )
        .await?;
    if as_json {
        return print_json(&v);
    }
    for key in [
        "id",
        "name",
        "protocol",
        "radio",
        "native_address",
        "lifecycle",
        "manufacturer",
        "model",
        "firmware",
        "power_source",
        "first_seen",
        "last_seen",
    ] {
        crate::outln!("{key:<15} {}", s(&v[key]));
    }
    crate::outln!("{:<15} {}", "capabilities", s(&v["capabilities"]));
    crate::outln!("{:<15} {}", "reachability", s(&v["reachability"]));
    // The silence after which the device is offline, as its radio learnt it; absent
    // when the policy decides.
    let offline_after = match v["offline_after_ms"].as_i64() {
        Some(0) => "never (speaks only when something happens)".to_string(),
        Some(ms) => format!("{} s (learnt by its radio)", ms as f64 / 1000.0),
        None => "as the policy says".to_string(),
    };
    crate::outln!("{:<15} {offline_after}", "offline_after");
    crate::outln!("{:<15} {}", "health", s(&v["health"]));
    crate::outln!("{:<15} {}", "last_state", s(&v["last_state"]));
    let held = v["held_requests"].as_array().cloned().unwrap_or_default();
    if held.is_empty() {
        crate::outln!("{:<15} none", "held_requests");
        return Ok(());
    }
    crate::outln!("{:<15} {}", "held_requests", held.len());
    let rows: Vec<Vec<String>> = held
        .iter()
        .map(|r| {
            vec![
                s(&r["id"]),
                s(&r["operation"]),
                s(&r["command"]),
                s(&r["state"]),
                s(&r["origin"]),
                s(&r["created_at"]),
                s(&r["expires_at"]),
            ]
        })
        .collect();
    table(
        &[
            "request",
            "operation",
            "command",
            "state",
            "from",
            "created",
            "expires",
        ],
        &rows,
    );
    Ok(())
}

pub async fn readmit(api: &ApiClient, id: &str, as_json: bool) -> Result<()> {
    let v = api
        .call(
            Method::POST,
            &format!("/v1/devices/{}/readmit", segment("the device id", id)?),
            None,
        )
        .await?;
    if as_json {
        return print_json(&v);
    }
    crate::outln!(
        "{} re-admitted ({}): {}",
        s(&v["device"]),
        v["lifecycle"].as_str().unwrap_or("never seen"),
        s(&v["note"])
    );
    Ok(())
}

pub async fn remove(api: &ApiClient, id: &str, as_json: bool) -> Result<()> {
    let v = api
        .call(
            Method::DELETE,
            &format!("/v1/devices/{}", segment("the device id", id)?),
            None,
        )
        .await?;
    if as_json {
        return print_json(&v);
    }
    crate::outln!(
        "{} decommissioned: {} credential(s) destroyed; radio: {}",
        s(&v["device"]["id"]),
        v["credentials_destroyed"].as_u64().unwrap_or(0),
        s(&v["radio_removal"])
    );
    say_device_action(&v);
    Ok(())
}

/// A removal the device must take part in (a Z-Wave exclusion): what to do, and by when.
pub(super) fn say_device_action(decommissioned: &Value) {
    if let Some(secs) = decommissioned["device_action_within_s"].as_u64() {
        crate::outln!(
            "now press the device's button (or do its exclusion / reset action, see its manual) within {secs} s: the radio waits for the device to confirm it leaves"
        );
    }
}

fn print_audit(records: &[Value], as_json: bool) -> Result<()> {
    if as_json {
        for r in records {
            crate::outln!("{r}");
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                s(&r["seq"]),
                s(&r["ts"]),
                s(&r["actor"]),
                s(&r["action"]),
                s(&r["target"]),
                s(&r["outcome"]),
            ]
        })
        .collect();
    table(
        &["seq", "time", "actor", "action", "target", "outcome"],
        &rows,
    );
    Ok(())
}

pub async fn audit_tail(
    api: &ApiClient,
    n: usize,
    filter: &audit::AuditFilter,
    as_json: bool,
) -> Result<()> {
    let mut path = format!("/v1/audit?limit={n}");
    if !filter.actions.is_empty() {
        let actions = filter.actions.join(",");
        path.push_str(&format!("&action={}", segment("the actions", &actions)?));
    }
    for (key, value) in [("actor", &filter.actor), ("target", &filter.target)] {
        if let Some(v) = value {
            path.push_str(&format!("&{key}={}", segment(key, v)?));
        }
    }
    let v = api.call(Method::GET, &path, None).await?;
    print_audit(v.as_array().map(Vec::as_slice).unwrap_or(&[]), as_json)
}

/// Reads the audit log straight from a database file (works with the daemon stopped).
pub fn audit_tail_offline(
    db: &Path,
    n: usize,
    filter: &audit::AuditFilter,
    as_json: bool,
) -> Result<()> {
    let conn =
        crate::store::open_reader(db).with_context(|| format!("cannot open {}", db.display()))?;
    let records = audit::tail_matching(&conn, n, None, filter)?;
    let values: Vec<Value> = records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    print_audit(&values, as_json)
}

pub(crate) fn report_verify(report: audit::VerifyReport, as_json: bool) -> Result<()> {
    if as_json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.ok {
        crate::outln!(
            "audit log OK: {} records, head {} {}",
            report.records,
            report.head_seq,
            report.head_hash
        );
        if report.mark_seq.is_none() && report.records > 0 {
            crate::outln!(
                "note: no high-water mark beside this database: records cut from its end would not show"
            );
        }
        if let Some(seals) = &report.seals {
            crate::outln!(
                "sealed: {} epoch(s) verified with the seed, records 1..={} ({} newer record(s) not sealed yet)",
                seals.sealed_epochs,
                seals.sealed_through_seq,
                report.head_seq - seals.sealed_through_seq
            );
        }
        if let Some(last) = report.tampering_recorded.last() {
            crate::outln!(
                "WARNING: the log records tampering found by the daemon {} time(s); the latest, record {} at {}: {}",
                report.tampering_recorded.len(),
                last.seq,
                last.ts,
                last.reason
            );
        }
    } else if report.first_bad_seq.is_none() && report.seals.is_some() {
        // The chain verified; the seals could not be checked.
        crate::outln!(
            "audit chain OK: {} records, head {} {}; seals NOT VERIFIED: {}",
            report.records,
            report.head_seq,
            report.head_hash,
            report.reason.as_deref().unwrap_or("unknown")
        );
    } else {
        let bad = report.first_bad_seq.unwrap_or(0);
        // The chain can link up past the break the seals or the mark found (a re-hashed
        // log, records appended after the mark): then no count comes "before" it.
        let context = if bad > 0 && i64::try_from(report.records).unwrap_or(i64::MAX) >= bad {
            format!(
                "the hash chain of its {} records links up: the seals or the high-water mark found this",
                report.records
            )
        } else {
            format!("{} records verified before it", report.records)
        };
        crate::outln!(
            "audit log BROKEN at record {bad}: {} ({context})",
            report.reason.as_deref().unwrap_or("unknown"),
        );
    }
    if report.ok {
        Ok(())
    } else {
        Err(anyhow!(VerifyFailed))
    }
}

/// Marker error: `audit verify` found a broken chain (exit code 1, already reported).
#[derive(Debug)]
pub struct VerifyFailed;

impl std::fmt::Display for VerifyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the audit log does not verify")
    }
}

impl std::error::Error for VerifyFailed {}

pub async fn audit_verify(api: &ApiClient, as_json: bool) -> Result<()> {
    let v = api.call(Method::GET, "/v1/audit/verify", None).await?;
    let report: audit::VerifyReport = serde_json::from_value(v)?;
    report_verify(report, as_json)
}

pub fn audit_verify_offline(db: &Path, configured: Option<&Path>, as_json: bool) -> Result<()> {
    super::audit_cli::verify_offline(db, configured, as_json)
}

fn health_text(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m.keys().cloned().collect::<Vec<_>>().join(","),
        _ => "ok".into(),
    }
}

pub async fn set(
    api: &ApiClient,
    id: &str,
    action: &str,
    value: Option<u8>,
    as_json: bool,
) -> Result<()> {
    let body = match (action, value) {
        ("level", Some(v)) if v <= 100 => json!({"level": v}),
        ("level", _) => return Err(anyhow!("`level` needs a value from 0 to 100")),
        ("on" | "off" | "toggle", None) => json!({"state": action}),
        _ => return Err(anyhow!("the action is on, off, toggle or level N")),
    };
    send_command(api, id, body, as_json).await
}

/// `fieldgate configure ID PARAMETER VALUE --size N`: a configuration parameter, checked
/// by the daemon as MQTT `set` is.
pub async fn configure(
    api: &ApiClient,
    id: &str,
    parameter: u16,
    size: u8,
    value: i64,
    as_json: bool,
) -> Result<()> {
    let body = json!({"config_parameter": parameter, "config_size": size, "config_value": value});
    send_command(api, id, body, as_json).await
}

/// Sends a command and waits (up to 20 s in the daemon) for what the device made of it:
/// exit 1 when it was not carried out, with the device's or radio's reason.
async fn send_command(api: &ApiClient, id: &str, body: Value, as_json: bool) -> Result<()> {
    let v = api
        .call(
            Method::POST,
            &format!(
                "/v1/devices/{}/command?wait=true",
                segment("the device id", id)?
            ),
            Some(body),
        )
        .await
        .map_err(device_error)?;
    let failed = v["ok"] == false;
    if as_json {
        print_json(&v)?;
    } else if v["status"] == "queued" {
        print_held(&v);
    } else if !failed {
        crate::outln!(
            "done on {} (command {}): {}",
            s(&v["device"]),
            s(&v["command_id"]),
            s(&v["detail"])
        );
    }
    if failed {
        return Err(anyhow!(
            "{} did not carry out command {}: {}",
            v["device"].as_str().unwrap_or(id),
            s(&v["command_id"]),
            s(&v["detail"])
        ));
    }
    Ok(())
}

/// The answer to `set` or `refresh` for a sleeping device (202 from the API).
fn print_held(v: &Value) {
    crate::outln!(
        "{} is asleep: held as request {} until it wakes (expires {})",
        s(&v["device"]),
        v["request_id"],
        s(&v["expires_at"])
    );
}

/// A refused `set` or `refresh`, with what to look at next.
fn device_error(e: ClientError) -> anyhow::Error {
    let hint = match &e {
        ClientError::Api { code, .. } => match code.as_str() {
            "unknown_device" => "`fieldgate devices` lists the devices this gateway knows",
            "bad_device_id" => "device ids are as `fieldgate devices` shows them",
            "device_quarantined" => "`fieldgate policy show` has the firmware minimum",
            "radio_unavailable" => "`fieldgate status` shows the radio's state",
            "device_unreachable" | "device_timeout" => {
                "it may be out of range or off; `fieldgate device ID` shows when it was last heard"
            }
            _ => "",
        },
        _ => "",
    };
    if hint.is_empty() {
        anyhow!(e)
    } else {
        anyhow!("{e}; {hint}")
    }
}

/// `fieldgate refresh ID [--attributes a,b]`: reads fresh values from an awake device
/// and prints them; a sleeping device's refresh is held until it wakes.
pub async fn refresh(
    api: &ApiClient,
    id: &str,
    attributes: &[String],
    as_json: bool,
) -> Result<()> {
    if let Some(bad) = attributes
        .iter()
        .find(|a| a.is_empty() || a.chars().any(char::is_whitespace))
    {
        return Err(anyhow!(
            "{bad:?} is not an attribute name (names are as in the device's last_state, e.g. on,voltage)"
        ));
    }
    let body = (!attributes.is_empty()).then(|| json!({ "attributes": attributes }));
    let v = api
        .call(
            Method::POST,
            &format!("/v1/devices/{}/refresh", segment("the device id", id)?),
            body,
        )
        .await
        .map_err(device_error)?;
    if as_json {
        return print_json(&v);
    }
    if v["status"] == "queued" {
        print_held(&v);
        return Ok(());
    }
    crate::outln!(
        "{id}: {} (command {})",
        s(&v["detail"]),
        s(&v["command_id"])
    );
    let state = v["state"].as_object().cloned().unwrap_or_default();
    // Named attributes the device does not have: an error (exit 1), as MQTT's `get`
    // answers `unknown_attribute`, so that a script's typo does not pass.
    let missing: Vec<&str> = attributes
        .iter()
        .filter(|a| !state.contains_key(a.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let rows: Vec<Vec<String>> = state.iter().map(|(k, v)| vec![k.clone(), s(v)]).collect();
        if !rows.is_empty() {
            table(&["attribute", "value"], &rows);
        }
        return Err(anyhow!(
            "the device has no `{}` (after the refresh); names are as in its last_state (unknown_attribute)",
            missing.join("`, `")
        ));
    }
    if state.is_empty() {
        crate::outln!(
            "no values{}",
            if attributes.is_empty() {
                ""
            } else {
                " for the attributes asked for"
            }
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = state.iter().map(|(k, v)| vec![k.clone(), s(v)]).collect();
    table(&["attribute", "value"], &rows);
    Ok(())
}

pub async fn policy_apply(api: &ApiClient, file: &Path, as_json: bool) -> Result<()> {
    let bytes = if file == Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .context("cannot read the policy from standard input")?;
        b
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let v = api
        .call_bytes(Method::POST, "/v1/policy", Some(bytes))
        .await?;
    if as_json {
        return print_json(&v);
    }
    crate::outln!(
        "policy version {} applied ({}, {} rule(s))",
        s(&v["version"]),
        if v["signed"] == json!(true) {
            "signed"
        } else {
            "unsigned"
        },
        s(&v["rules"])
    );
    Ok(())
}

/// `fieldgate upstream rotate-cert`: sends the new pair to the daemon, which
/// keeps it only if the broker accepts it.
pub async fn upstream_rotate_cert(
    api: &ApiClient,
    cert: &Path,
    key: &Path,
    as_json: bool,
) -> Result<()> {
    let cert_pem =
        std::fs::read_to_string(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?,
    );
    let body = zeroize::Zeroizing::new(
        json!({"cert_pem": cert_pem, "key_pem": key_pem.as_str()})
            .to_string()
            .into_bytes(),
    );
    let v = api
        .call_bytes(
            Method::POST,
            "/v1/upstream/client-cert",
            Some(body.to_vec()),
        )
        .await?;
    if as_json {
        return print_json(&v);
    }
    crate::outln!(
        "client certificate rotated (sha256 {}); the previous pair is kept as {}.previous",
        s(&v["certificate_sha256"]),
        s(&v["client_cert"])
    );
    Ok(())
}

pub async fn policy_show(api: &ApiClient, as_json: bool) -> Result<()> {
    let v = api.call(Method::GET, "/v1/policy", None).await?;
    if as_json {
        return print_json(&v);
    }
    crate::outln!(
        "version {} ({}, from {}{})",
        s(&v["version"]),
        if v["signed"] == json!(true) {
            "signed"
        } else {
            "unsigned"
        },
        s(&v["source"]),
        v["received_at"]
            .as_str()
            .map(|t| format!(", {t}"))
            .unwrap_or_default()
    );
    crate::outln!("{}", serde_json::to_string_pretty(&v["document"])?);
    Ok(())
}

fn read_seed(key: &Path) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(key)
            .with_context(|| format!("cannot read the signing key {}", key.display()))?,
    );
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), &mut seed[..])
        .map_err(|_| anyhow!("{} is not a signing key (64 hex characters)", key.display()))?;
    Ok(seed)
}

/// Signs a policy file; prints the signed envelope on stdout.
pub fn policy_sign(file: &Path, key: &Path) -> Result<()> {
    let seed = read_seed(key)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let doc: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", file.display()))?;
    let doc = doc.get("policy").cloned().unwrap_or(doc);
    // Refuse to sign what the gateway would refuse anyway.
    crate::policy::Policy::parse(&serde_json::to_vec(&doc)?).map_err(|e| anyhow!("{e}"))?;
    let signed = crate::policy::sign(&doc, &seed);
    crate::outln!("{}", serde_json::to_string_pretty(&signed)?);
    Ok(())
}

/// Writes a new signing key (hex seed, mode 0600) and prints the public key.
pub fn policy_keygen(out: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let seed = crate::secrets::Secret::random(32);
    let mut arr = zeroize::Zeroizing::new([0u8; 32]);
    arr.copy_from_slice(seed.expose());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(&arr[..])));
    f.write_all(text.as_bytes())?;
    crate::outln!(
        "signing key written to {} (keep it off the gateway)",
        out.display()
    );
    crate::outln!("pin it on gateways with, in [gateway]:");
    crate::outln!(
        "policy_public_key = \"{}\"",
        crate::policy::public_key_hex(&arr)
    );
    Ok(())
}

/// `fieldgate install-code add IEEE CODE`: the code goes only into the request body.
pub async fn install_code_add(
    api: &ApiClient,
    ieee: &str,
    code: &str,
    as_json: bool,
) -> Result<()> {
    let code = if code == "-" {
        let mut text = zeroize::Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the install code from standard input")?;
        zeroize::Zeroizing::new(text.trim().to_string())
    } else {
        zeroize::Zeroizing::new(code.to_string())
    };
    let v = api
        .call(
            Method::POST,
            "/v1/install-codes",
            Some(json!({"device": ieee, "code": code.as_str()})),
        )
        .await?;
    if as_json {
        return print_json(&v);
    }
    let verb = if v["replaced"].as_bool() == Some(true) {
        "replaced"
    } else {
        "registered"
    };
    crate::outln!(
        "install code {verb} for {} (stored encrypted)",
        s(&v["device"])
    );
    for c in v["coordinators"].as_array().cloned().unwrap_or_default() {
        let mark = if c["ok"].as_bool() == Some(true) {
            "ok"
        } else {
            "not yet"
        };
        crate::outln!("  {}: {mark} — {}", s(&c["radio"]), s(&c["detail"]));
    }
    Ok(())
}

/// The keys `fieldgate lora add` was given (`-` reads one from standard input).
pub struct LoraKeys<'a> {
    pub dev_eui: &'a str,
    pub join_eui: Option<&'a str>,
    pub app_key: Option<&'a str>,
    pub dev_addr: Option<&'a str>,
    pub nwk_s_key: Option<&'a str>,
    pub app_s_key: Option<&'a str>,
    pub decoder: Option<&'a str>,
}

pub async fn lora_add(api: &ApiClient, k: &LoraKeys<'_>, as_json: bool) -> Result<()> {
    let mut stdin_used = false;
    let mut key = |v: Option<&str>, name: &str| -> Result<Option<zeroize::Zeroizing<String>>> {
        match v {
            Some("-") if stdin_used => {
                anyhow::bail!("only one key can be read from standard input")
            }
            Some("-") => {
                stdin_used = true;
                let mut text = zeroize::Zeroizing::new(String::new());
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .with_context(|| format!("cannot read --{name} from standard input"))?;
                Ok(Some(zeroize::Zeroizing::new(text.trim().to_string())))
            }
            Some(v) => Ok(Some(zeroize::Zeroizing::new(v.to_string()))),
            None => Ok(None),
        }
    };
    let app_key = key(k.app_key, "appkey")?;
    let nwk_s_key = key(k.nwk_s_key, "nwkskey")?;
    let app_s_key = key(k.app_s_key, "appskey")?;
    let mut body = json!({"dev_eui": k.dev_eui});
    let fields = [
        ("join_eui", k.join_eui),
        ("app_key", app_key.as_deref().map(String::as_str)),
        ("dev_addr", k.dev_addr),
        ("nwk_s_key", nwk_s_key.as_deref().map(String::as_str)),
        ("app_s_key", app_s_key.as_deref().map(String::as_str)),
        ("decoder", k.decoder),
    ];
    for (name, v) in fields {
        if let Some(v) = v {
            body[name] = json!(v);
        }
    }
    let v = api
        .call(Method::POST, "/v1/lora/devices", Some(body))
        .await?;
    if as_json {
        return print_json(&v);
    }
    let verb = if v["replaced"].as_bool() == Some(true) {
        "re-keyed"
    } else {
        "added"
    };
    crate::outln!(
        "LoRaWAN device {} {verb} (keys stored encrypted)",
        s(&v["device"])
    );
    for c in v["coordinators"].as_array().cloned().unwrap_or_default() {
        let mark = if c["ok"].as_bool() == Some(true) {
            "ok"
        } else {
            "not yet"
        };
        crate::outln!("  {}: {mark} — {}", s(&c["radio"]), s(&c["detail"]));
    }
    Ok(())
}

pub async fn install_code_list(api: &ApiClient, as_json: bool) -> Result<()> {
    let v = api.call(Method::GET, "/v1/install-codes", None).await?;
    if as_json {
        return print_json(&v);
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| vec![s(&c["owner"]), s(&c["created_at"]), s(&c["rotated_at"])])
        .collect();
    if rows.is_empty() {
        crate::outln!("no install codes registered");
    } else {
        table(&["DEVICE", "REGISTERED", "REPLACED"], &rows);
    }
    Ok(())
}

pub async fn install_code_remove(api: &ApiClient, ieee: &str, as_json: bool) -> Result<()> {
    let v = api
        .call(
            Method::DELETE,
            &format!("/v1/install-codes/{}", segment("the IEEE address", ieee)?),
            None,
        )
        .await?;
    if as_json {
        return print_json(&v);
    }
    crate::outln!(
        "install code of {} destroyed ({})",
        s(&v["device"]),
        s(&v["note"])
    );
    Ok(())
}

/// `fieldgate radio rotate-key NAME`: waits for the switch (the radio's `key_switch_delay`).
pub async fn radio_rotate_key(api: &ApiClient, radio: &str, as_json: bool) -> Result<()> {
    let path = format!(
        "/v1/radios/{}/rotate-key",
        segment("the radio name", radio)?
    );
    let call = api.call(Method::POST, &path, None);
    tokio::pin!(call);
    // Said only once the daemon has taken it on: a refusal (an unknown radio) comes at
    // once and is the only thing printed.
    let v = match tokio::time::timeout(Duration::from_secs(1), &mut call).await {
        Ok(answer) => answer?,
        Err(_) => {
            if !as_json {
                eprintln!("rotating the network key of {radio}: sending the new key, then switching (this takes the radio's key_switch_delay)...");
            }
            call.await?
        }
    };
    if as_json {
        return print_json(&v);
    }
    crate::outln!(
        "network key of {radio} rotated: key sequence {} -> {} at {}; the new key is stored encrypted",
        s(&v["previous_key_seq"]),
        s(&v["key_seq"]),
        s(&v["switched_at"])
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radio_problems_lists_the_error_counters_that_moved() {
        let quiet = json!({"startups": 3, "undecodable": 0, "line_errors": 0, "timeouts": 0, "bad_nv_items": 0});
        assert_eq!(radio_problems(&quiet), "-");
        let noisy = json!({"startups": 1, "undecodable": 2, "line_errors": 0, "timeouts": 5, "bad_nv_items": 1, "incomplete": 1, "unhandled": 7});
        assert_eq!(
            radio_problems(&noisy),
            "undecodable 2, timeouts 5, bad NV items 1, incomplete messages 1"
        );
        // An older daemon without counters.
        assert_eq!(radio_problems(&Value::Null), "-");
    }

    #[test]
    fn a_packet_forwarders_statistics_read_as_one_line() {
        assert_eq!(forwarder_line(&Value::Null), None);
        let f = json!({"reports": 2, "rxnb": 10, "rxok": 9, "rxfw": 9, "dwnb": 1, "txnb": 1, "ackr": 100.0});
        assert_eq!(
            forwarder_line(&f).unwrap(),
            "packet forwarder heard 10 frames (9 CRC ok, 9 forwarded), got 1 downlinks, sent 1, 100% of its datagrams acknowledged (2 reports)"
        );
    }
}
