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
