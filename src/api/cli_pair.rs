//! `fieldgate pair`: opens a join window and follows the radio's joins and leaves
//! through the audit log until it closes.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use hyper::Method;
use serde_json::{json, Value};

use super::cli::s;
use super::client::{segment, ApiClient};

async fn last_audit_seq(api: &ApiClient) -> Result<i64> {
    let v = api.call(Method::GET, "/v1/audit?limit=1", None).await?;
    Ok(v.as_array()
        .and_then(|a| a.last())
        .and_then(|r| r["seq"].as_i64())
        .unwrap_or(0))
}

/// Opens a join window and shows a countdown and each device as it joins.
pub async fn pair(api: &ApiClient, radio: &str, seconds: u32, as_json: bool) -> Result<()> {
    let mut after = last_audit_seq(api).await?;
    let v = api
        .call(
            Method::POST,
            &format!(
                "/v1/radios/{}/permit-join",
                segment("the radio name", radio)?
            ),
            Some(json!({"seconds": seconds})),
        )
        .await?;
    // A window already open for longer keeps its time: the answer says how long.
    let seconds = v["seconds"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(seconds);
    if as_json {
        crate::outln!("{v}");
    } else {
        crate::outln!("join window open on {radio} for {seconds} s (until {}); put devices in pairing mode now", s(&v["open_until"]));
    }
    let tty = std::io::stdout().is_terminal() && !as_json;
    let end = Instant::now() + Duration::from_secs(seconds as u64);
    // Devices, not join records: a device may join twice within one window.
    let mut joined: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut refused = 0usize;
    // The radio's joins and leaves, each request waiting (up to 25 s) for the next
    // one: every API request is an audit record, so it does not ask every second.
    let actor = format!("radio:{radio}");
    let watch = |after: i64, wait_s: u64| {
        let path = format!(
            "/v1/audit?after={after}&limit=1000&action=device.join,device.leave&actor={}&wait_s={wait_s}",
            segment("the radio name", &actor).unwrap_or_default()
        );
        async move { api.call(Method::GET, &path, None).await }
    };
    let left = || end.saturating_duration_since(Instant::now());
    let mut next = Box::pin(watch(after, left().as_secs().clamp(1, 25)));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = false;
    loop {
        tokio::select! {
            records = &mut next => {
                let records = records?;
                let mut show = |r: &Value| {
                    if tty {
                        crate::output::control("\r\x1b[K");
                    }
                    let (seen, accepted) = show_join(r, as_json);
                    if let Some(device) = seen {
                        if accepted {
                            joined.insert(device);
                        } else {
                            refused += 1;
                        }
                    }
                };
                for r in records.as_array().map(Vec::as_slice).unwrap_or_default() {
                    after = r["seq"].as_i64().unwrap_or(after);
                    show(r);
                }
                if last {
                    break;
                }
                // The window's last moment gets one more look, once it has passed.
                let left_now = left();
                let wait = left_now.as_secs().min(25);
                last = wait == 0;
                if last {
                    tokio::time::sleep(left_now).await;
                }
                next = Box::pin(watch(after, wait));
            }
            _ = tick.tick() => {
                // Nobody reads any more (`pair | head -1`): stop watching; the window
                // stays open in the daemon for the time it was given.
                if crate::output::reader_gone() {
                    return Ok(());
                }
                if tty {
                    crate::output::control("\r\x1b[K");
                    crate::out!(
                        "join window: {:>3} s left, {} joined, {refused} refused",
                        left().as_secs(),
                        joined.len()
                    );
                    let _ = std::io::stdout().flush();
                }
            }
        }
    }
    if tty {
        crate::outln!();
    }
    if !as_json {
        crate::outln!(
            "join window closed on {radio}: {} device(s) joined, {refused} join(s) refused",
            joined.len()
        );
    }
    Ok(())
}

/// Prints one `device.join` / `device.leave` record as `pair` shows it; the device a
/// join names and whether it was accepted (`None` for a leave).
fn show_join(r: &Value, as_json: bool) -> (Option<String>, bool) {
    let action = r["action"].as_str().unwrap_or("");
    // A join the gateway refused (blocked, decommissioned, denied by the policy, no
    // install code) is said as such, with why.
    let accepted = r["outcome"].as_str() == Some("accepted");
    if as_json {
        crate::outln!("{r}");
    } else if action == "device.join" && !accepted {
        crate::outln!(
            "{} REFUSED at {}: {}",
            s(&r["target"]),
            s(&r["ts"]),
            s(&r["details"]["reason"])
        );
    } else {
        let verb = if action == "device.join" {
            "joined"
        } else {
            "left"
        };
        crate::outln!("{} {verb} at {}", s(&r["target"]), s(&r["ts"]));
    }
    if action == "device.join" {
        (
            Some(r["target"].as_str().unwrap_or_default().to_string()),
            accepted,
        )
    } else {
        (None, accepted)
    }
}
