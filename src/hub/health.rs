//! Availability and health flags: devices silent past their timeout go offline
//! (and back), battery-low and weak-link flags raised and cleared on crossings.

use super::*;

pub(super) fn parse_health(text: &str) -> serde_json::Value {
    if text == "{}" {
        json!({})
    } else {
        serde_json::from_str(text)
            .ok()
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| json!({}))
    }
}

/// Battery-low and weak-link flags from readings, raised and cleared on crossings.
#[allow(clippy::too_many_arguments)] // readings_recorded's context, passed on
pub(super) fn health_flags(
    c: &Connection,
    sink: &mut TelemetrySink<'_, '_>,
    ctx: &EventContext,
    id: &DeviceId,
    current: &mut serde_json::Value,
    readings: &[Reading],
    out: &mut Applied,
    at: SystemTime,
) -> Result<(), StoreError> {
    let h = &ctx.policy.policy.health;
    for r in readings {
        let Value::Number(v) = r.value else { continue };
        let flag = match r.name.as_str() {
            "battery" | "battery_percent" | "battery_percentage" => {
                Some(("battery_low", v < h.battery_low_pct))
            }
            "linkquality" | "lqi" => h.weak_lqi.map(|min| ("weak_link", v < f64::from(min))),
            "rssi" => h.weak_rssi.map(|min| ("weak_link", v < f64::from(min))),
            _ => None,
        };
        if let Some((flag, raised)) = flag {
            // Most readings change nothing: decide from the row already read.
            let unchanged = current.get(flag).is_some() == raised;
            if !unchanged && registry::set_health_flag(c, id, flag, raised)? {
                sink.flush(c, ctx, id)?;
                if let Some(flags) = current.as_object_mut() {
                    if raised {
                        flags.insert(flag.to_string(), serde_json::Value::Bool(true));
                    } else {
                        flags.remove(flag);
                    }
                }
                lifecycle_msg(
                    c,
                    &ctx.gateway_id,
                    id,
                    "health",
                    json!({"flag": flag, "raised": raised, "value": v}),
                    at,
                )?;
                out.notices.push(Notice::Health {
                    device: id.to_string(),
                    flag: flag.into(),
                    raised,
                });
            }
        }
    }
    Ok(())
}

/// A `presence` reading is a change of a beacon's or tag's presence (its radio sends
/// one only then): recorded in its state like any reading, and for a device in service
/// (not pending: passers-by are not announced) published and audited as a lifecycle
/// event.
pub(super) fn presence_changes(
    c: &Connection,
    sink: &mut TelemetrySink<'_, '_>,
    ctx: &EventContext,
    id: &DeviceId,
    readings: &[Reading],
    at: SystemTime,
) -> Result<(), StoreError> {
    let Some(state) = readings.iter().find_map(|r| match (&*r.name, &r.value) {
        ("presence", Value::Text(s)) => Some(s.as_str()),
        _ => None,
    }) else {
        return Ok(());
    };
    let Some(d) = registry::get(c, id)? else {
        return Ok(());
    };
    if d.lifecycle == Lifecycle::Pending.as_str()
        || d.lifecycle == Lifecycle::Decommissioned.as_str()
    {
        return Ok(());
    }
    let rssi = readings.iter().find_map(|r| match (&*r.name, &r.value) {
        ("presence_rssi", Value::Number(n)) => Some(*n),
        _ => None,
    });
    let data = json!({"state": state, "rssi": rssi});
    // The reading's telemetry first, then the event, as with health flags.
    sink.flush(c, ctx, id)?;
    lifecycle_msg(c, &ctx.gateway_id, id, "presence", data.clone(), at)?;
    store::record_audit(
        c,
        &ctx.gateway_id,
        &AuditEntry::new(
            format!("radio:{}", d.radio),
            "device.presence",
            id.as_str(),
            Outcome::Accepted,
            data,
        ),
    )?;
    Ok(())
}

impl Hub {
    /// Marks devices silent for longer than their timeout offline (and back).
    pub(super) async fn check_availability(&mut self) {
        let gw = self.gateway_id.clone();
        let engine = self.policy.clone();
        let result = self
            .writer
            .write(move |c| {
                let now = SystemTime::now();
                let mut notices = Vec::new();
                let changes = registry::offline_changes(c, |d| {
                    // A last-seen time that does not parse leaves the flag as it is.
                    let last = humantime::parse_rfc3339(d.last_seen).ok()?;
                    let capabilities: Vec<String> = serde_json::from_str(d.capabilities).unwrap_or_default();
                    let facts = DeviceFacts {
                        protocol: crate::config::Protocol::parse(d.protocol),
                        address: d.native_address,
                        manufacturer: d.manufacturer,
                        model: d.model,
                        capabilities: &capabilities,
                    };
                    // A policy override first, then what the radio learnt of the device
                    // (a BLE advertiser's own interval), then the power-source default.
                    let timeout = match (engine.availability_override(&facts), d.offline_after_ms) {
                        (Some(t), _) => t,
                        // It speaks only when something happens: silence is no outage
                        // (`None`: a raised flag is only lowered, with no health event).
                        (None, Some(0)) => return Some((false, None)),
                        (None, Some(ms)) => Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)),
                        (None, None) => engine.availability_timeout(&facts, PowerSource::parse(d.power_source)),
                    };
                    Some((now.duration_since(last).unwrap_or_default() > timeout, Some(timeout)))
                })?;
                for (id, silent, timeout) in changes {
                    let Some(timeout) = timeout else {
                        if registry::set_health_flag(c, &id, "offline", false)? {
                            availability_msg(c, &gw, &id, true, now)?;
                        }
                        continue;
                    };
                    if registry::set_health_flag(c, &id, "offline", silent)? {
                        availability_msg(c, &gw, &id, !silent, now)?;
                        lifecycle_msg(c, &gw, &id, "health", json!({"flag": "offline", "raised": silent, "timeout_s": timeout.as_secs()}), now)?;
                        notices.push(Notice::Health { device: id.to_string(), flag: "offline".into(), raised: silent });
                    }
                }
                Ok(notices)
            })
            .await;
        match result {
            Ok(notices) => notices.into_iter().for_each(|n| self.notify(n)),
            Err(e) => tracing::error!(error = %e, "availability check failed"),
        }
        // The check read every device: what it freed goes back to the system.
        crate::memory::release_free();
    }
}
