//! What the gateway says about itself: the `info` document (published retained and
//! answered to `info`) and the `health_check` answer. Read-only.

use serde_json::{json, Map, Value};

use super::{read, Rejection, RequestContext};
use crate::model::{now_rfc3339, Lifecycle, RadioState};
use crate::store::{outbox, registry};

fn radios_json(ctx: &RequestContext) -> Vec<Value> {
    ctx.radios
        .iter()
        .map(|r| {
            let state = r.state.borrow().clone();
            let mut v = json!({"name": r.name, "protocol": r.protocol.as_str(), "port": r.port.to_string(),
                               "counters": r.counters.snapshot()});
            if let (Some(obj), Ok(Value::Object(s))) = (v.as_object_mut(), serde_json::to_value(&state)) {
                obj.extend(s);
            }
            v
        })
        .collect()
}

/// The gateway description: published retained on `info` and answered to `info`.
pub async fn info(ctx: &RequestContext) -> Result<Value, Rejection> {
    let (ob, counts, life, mut audit) = read(ctx, |c| {
        Ok((
            outbox::stats(c)?,
            registry::counts(c)?,
            outbox::life(c)?,
            crate::store::audit_guard::summary(c)?,
        ))
    })
    .await?;
    audit["alarm"] = json!(ctx
        .writer
        .stats()
        .audit_alarm()
        .map(|why| json!({"name": crate::store::audit_guard::ALARM, "reason": why})));
    // Every lifecycle, zero or not, so the document always has the same keys.
    let mut devices = Map::new();
    for l in [
        Lifecycle::Pending,
        Lifecycle::Active,
        Lifecycle::Quarantined,
        Lifecycle::Decommissioned,
    ] {
        devices.insert(l.as_str().into(), json!(0));
    }
    let mut total = 0u64;
    for (k, v) in counts {
        total += v;
        devices.insert(k, json!(v));
    }
    devices.insert("total".into(), json!(total));
    let up = ctx.status.snapshot();
    Ok(json!({
        "gateway": &*ctx.gateway_id,
        "life": life,
        "version": env!("CARGO_PKG_VERSION"),
        "ts": now_rfc3339(),
        "radios": radios_json(ctx),
        "devices": devices,
        "outbox": ob,
        "upstream": {"broker": up.broker, "client_id": up.client_id, "delivered": up.delivered},
        "audit": audit,
    }))
}

pub(super) async fn health(ctx: &RequestContext) -> Result<Value, Rejection> {
    let store_ok = ctx.writer.write(|_| Ok(())).await.is_ok();
    let readable = read(ctx, |c| {
        Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)
    })
    .await
    .is_ok();
    let total = ctx.radios.len();
    let down: Vec<String> = ctx
        .radios
        .iter()
        .filter(|r| *r.state.borrow() != RadioState::Up)
        .map(|r| r.name.clone())
        .collect();
    let alarm = ctx.status.snapshot().alarm;
    let audit_alarm = ctx.writer.stats().audit_alarm();
    // Healthy means doing its job: storing, every radio up, nothing alarmed. What is
    // not is listed, so a monitor can say why.
    let mut problems = Vec::new();
    if !(store_ok && readable) {
        problems.push("the store is failing".to_string());
    }
    if !down.is_empty() {
        problems.push(format!("radio(s) not up: {}", down.join(", ")));
    }
    if let Some(a) = &alarm {
        problems.push(a.clone());
    }
    if let Some(a) = &audit_alarm {
        problems.push(format!("{}: {a}", crate::store::audit_guard::ALARM));
    }
    Ok(json!({
        "healthy": problems.is_empty(),
        "problems": problems,
        "store": if store_ok && readable { "ok" } else { "failing" },
        "radios": {"up": total - down.len(), "total": total, "down": down},
        "alarm": alarm,
    }))
}

/// How long requests that arrive while the radios are still starting wait for them:
/// at the daemon's start a retained request, or one a persistent session kept, comes
/// within milliseconds of the connection, before a radio has opened its port.
pub const RADIOS_START_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Waits until no radio is `starting` (each is up, down or unavailable: its own
/// answer), or until `deadline`.
pub async fn radios_started(ctx: &RequestContext, deadline: tokio::time::Instant) {
    if ctx
        .radios
        .iter()
        .all(|r| *r.state.borrow() != RadioState::Starting)
    {
        return;
    }
    let mut states: Vec<_> = ctx.radios.iter().map(|r| r.state.clone()).collect();
    let _ = tokio::time::timeout_at(deadline, async {
        for s in &mut states {
            // A radio whose driver is gone does not hold the others up.
            let _ = s.wait_for(|st| *st != RadioState::Starting).await;
        }
    })
    .await;
}

/// How long the radios' states must rest before a change republishes `info`: a radio
/// that goes down and comes back within it is one `info`, not two.
pub const RADIO_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends on `changed` whenever the kind of a radio's state (starting, up, down,
/// unavailable) differs from what it was at the last send, once the states have rested
/// for `settle`: the retained `info` published at connect often shows radios still
/// `starting`, and would say so until the next periodic one. A new reason for a radio
/// that stays down is not a change. Ends when every radio's sender is gone or the
/// receiver is dropped.
pub async fn watch_radio_states(
    mut states: Vec<tokio::sync::watch::Receiver<crate::model::RadioState>>,
    settle: std::time::Duration,
    changed: tokio::sync::mpsc::Sender<()>,
) {
    fn kinds(states: &mut [tokio::sync::watch::Receiver<crate::model::RadioState>]) -> Vec<u8> {
        states
            .iter_mut()
            .map(|s| match *s.borrow_and_update() {
                crate::model::RadioState::Starting => 0,
                crate::model::RadioState::Up => 1,
                crate::model::RadioState::Down(_) => 2,
                crate::model::RadioState::Unavailable(_) => 3,
            })
            .collect()
    }
    let mut last = kinds(&mut states);
    while !states.is_empty() {
        let (result, i, _) =
            futures_util::future::select_all(states.iter_mut().map(|s| Box::pin(s.changed())))
                .await;
        if result.is_err() {
            states.remove(i);
            last.remove(i);
            continue;
        }
        // Rest: further changes within `settle` are taken in by the next reading.
        tokio::time::sleep(settle).await;
        let now = kinds(&mut states);
        if now != last {
            last = now;
            if changed.send(()).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RadioState;
    use std::time::Duration;
    use tokio::sync::{mpsc, watch};

    #[tokio::test(start_paused = true)]
    async fn info_is_republished_when_a_radio_state_changes_kind() {
        let (a, a_rx) = watch::channel(RadioState::Starting);
        let (b, b_rx) = watch::channel(RadioState::Starting);
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(watch_radio_states(
            vec![a_rx, b_rx],
            Duration::from_secs(1),
            tx,
        ));
        tokio::task::yield_now().await;
        // Both come up within the rest: one signal.
        a.send(RadioState::Up).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.send(RadioState::Down("no such port".into())).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(rx.try_recv(), Ok(()));
        assert!(rx.try_recv().is_err());
        // A new reason for a radio still down is not a change.
        b.send(RadioState::Down("still no such port".into()))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(rx.try_recv().is_err());
        // Down and back up within the rest: nothing to say either.
        a.send(RadioState::Down("link dropped".into())).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.send(RadioState::Up).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(rx.try_recv().is_err());
        b.send(RadioState::Up).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(rx.try_recv(), Ok(()));
        // The radios gone: the watcher ends.
        drop((a, b));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
