//! Admission and compliance inside the ingest transaction: registering a device
//! first heard, the policy's allow/deny decision, firmware quarantine, and
//! retiring a device (lifecycle, credentials destroyed, events).

use super::*;

pub(super) fn facts_of(d: &registry::Device) -> DeviceFacts<'_> {
    DeviceFacts {
        protocol: crate::config::Protocol::parse(&d.protocol),
        address: &d.native_address,
        manufacturer: d.manufacturer.as_deref(),
        model: d.model.as_deref(),
        capabilities: &d.capabilities,
    }
}

/// Decommissions inside a transaction: lifecycle, credentials, events. Returns
/// how many credentials were destroyed.
pub(super) fn retire(
    c: &Connection,
    gw: &str,
    id: &DeviceId,
    event: &str,
    mut data: serde_json::Value,
) -> Result<usize, StoreError> {
    registry::set_lifecycle(c, id, Lifecycle::Decommissioned)?;
    for req in requests::take_for_device(c, id.as_str())? {
        finish_held(
            c,
            gw,
            &req,
            "error",
            json!({}),
            Some((
                "device_decommissioned",
                format!("device `{id}` was decommissioned before it woke up"),
            )),
        )?;
    }
    let destroyed = credentials::destroy(c, id.as_str())?;
    if let Some(o) = data.as_object_mut() {
        o.insert("credentials_destroyed".into(), json!(destroyed));
    }
    let now = SystemTime::now();
    lifecycle_msg(c, gw, id, event, data, now)?;
    availability_msg(c, gw, id, false, now)?;
    Ok(destroyed)
}

/// Registers a device first heard through its readings, or first described by its
/// radio (`described`: what the policy then sees of it), unless the policy denies it.
pub(super) fn discover(
    c: &Connection,
    ctx: &EventContext,
    ev: &DeviceEvent,
    id: &DeviceId,
    described: Option<&crate::model::DeviceInfo>,
    out: &mut Applied,
) -> Result<Option<registry::Device>, StoreError> {
    let gw: &str = &ctx.gateway_id;
    let radio = ev.radio.as_str();
    let facts = DeviceFacts {
        protocol: Some(ev.protocol),
        address: &ev.native_address,
        manufacturer: described.and_then(|i| i.manufacturer.as_deref()),
        model: described.and_then(|i| i.model.as_deref()),
        capabilities: described.map_or(&[], |i| &i.capabilities),
    };
    if store::blocks::is_blocked(c, id.as_str())? {
        // On the denylist: told to leave, never registered; not audited per reading
        // (a beacon would flood the log), its join attempts are.
        out.radio_actions.push((
            radio.to_string(),
            RadioCommand::Remove {
                native_address: ev.native_address.clone(),
            },
        ));
        return Ok(None);
    }
    if let Admit::Deny { reason } = ctx.policy.admit(&facts) {
        store::record_audit(
            c,
            gw,
            &AuditEntry::new(
                format!("radio:{radio}"),
                "device.discover",
                id.as_str(),
                Outcome::Refused,
                json!({"native_address": ev.native_address, "reason": reason}),
            ),
        )?;
        out.denied(radio, &ev.native_address, id, reason);
        return Ok(None);
    }
    let (device, _) = registry::upsert_joined(
        c,
        id,
        ev.protocol.as_str(),
        radio,
        &ev.native_address,
        &rfc3339(ev.received_at),
    )?;
    lifecycle_msg(
        c,
        gw,
        id,
        "discovered",
        json!({"radio": radio, "lifecycle": device.lifecycle}),
        ev.received_at,
    )?;
    // A pending discovered device (a passer-by) gets no retained availability on the
    // broker: it is queued when the device is adopted (`release_held`).
    if !super::ingest::held_back(c, id)? {
        availability_msg(c, gw, id, true, ev.received_at)?;
    }
    store::record_audit(
        c,
        gw,
        &AuditEntry::new(
            format!("radio:{radio}"),
            "device.discover",
            id.as_str(),
            Outcome::Accepted,
            json!({"native_address": ev.native_address}),
        ),
    )?;
    out.notices.push(Notice::DeviceJoined {
        device: id.to_string(),
        radio: radio.to_string(),
        new: true,
    });
    let discovered =
        crate::radio::capabilities(ev.protocol).is_some_and(|c| c.max_join_window.is_none());
    if discovered {
        for gone in registry::forget_oldest_pending(c, radio, MAX_PENDING_DISCOVERED)? {
            if let Some(gone) = DeviceId::parse(&gone) {
                lifecycle_msg(
                    c,
                    gw,
                    &gone,
                    "forgotten",
                    json!({"radio": radio, "reason": "pending limit", "limit": MAX_PENDING_DISCOVERED}),
                    ev.received_at,
                )?;
            }
        }
    }
    Ok(Some(device))
}

/// Pending devices a radio that discovers devices (rather than letting them join) may
/// have in the registry; beyond it the least recently heard are forgotten.
pub(in crate::hub) const MAX_PENDING_DISCOVERED: usize = 1000;

/// Quarantines a device whose firmware is below the policy minimum, and releases
/// it once it reports a compliant version.
pub(super) fn apply_compliance(
    c: &Connection,
    ctx: &EventContext,
    id: &DeviceId,
    out: &mut Applied,
    at: SystemTime,
) -> Result<(), StoreError> {
    let Some(d) = registry::get(c, id)? else {
        return Ok(());
    };
    comply(c, &ctx.gateway_id, &ctx.policy, &d, out, at)
}

/// After a new policy: every admitted device whose firmware is known is held to its
/// firmware rules now (quarantined below a raised minimum, released above a lowered
/// one), not when it next reports its version. Returns the notices to send.
pub(super) fn recheck_firmware(
    c: &Connection,
    gw: &str,
    engine: &PolicyEngine,
    at: SystemTime,
) -> Result<Vec<Notice>, StoreError> {
    let mut out = Applied::default();
    for lifecycle in [Lifecycle::Active, Lifecycle::Quarantined] {
        let devices = registry::list(
            c,
            &registry::DeviceFilter {
                lifecycle: Some(lifecycle.as_str().to_string()),
                ..Default::default()
            },
        )?;
        for d in devices.iter().filter(|d| d.firmware.is_some()) {
            comply(c, gw, engine, d, &mut out, at)?;
        }
    }
    Ok(out.notices)
}

fn comply(
    c: &Connection,
    gw: &str,
    engine: &PolicyEngine,
    d: &registry::Device,
    out: &mut Applied,
    at: SystemTime,
) -> Result<(), StoreError> {
    let id = &DeviceId(d.id.clone());
    let quarantined = d.lifecycle == Lifecycle::Quarantined.as_str();
    match engine.firmware(&facts_of(d), d.firmware.as_deref()) {
        Compliance::Below {
            min_version,
            commands_allowed,
        } if !quarantined => {
            registry::set_lifecycle(c, id, Lifecycle::Quarantined)?;
            let data = json!({"firmware": d.firmware, "min_version": min_version, "commands_allowed": commands_allowed});
            lifecycle_msg(c, gw, id, "quarantined", data.clone(), at)?;
            store::record_audit(
                c,
                gw,
                &AuditEntry::new(
                    "policy",
                    "device.quarantine",
                    id.as_str(),
                    Outcome::Accepted,
                    data,
                ),
            )?;
            out.notices.push(Notice::Quarantined {
                device: id.to_string(),
                firmware: d.firmware.clone(),
                min_version,
            });
        }
        Compliance::Compliant | Compliance::Unregulated if quarantined => {
            registry::set_lifecycle(c, id, Lifecycle::Active)?;
            lifecycle_msg(c, gw, id, "released", json!({"firmware": d.firmware}), at)?;
            store::record_audit(
                c,
                gw,
                &AuditEntry::new(
                    "policy",
                    "device.release",
                    id.as_str(),
                    Outcome::Accepted,
                    json!({"firmware": d.firmware}),
                ),
            )?;
            out.notices.push(Notice::Released {
                device: id.to_string(),
            });
        }
        _ => {}
    }
    Ok(())
}

/// After a new policy: pending discovered devices (BLE) that an allow rule now names are
/// admitted, as they would have been had the policy been there when they were first
/// described. Returns their ids.
pub(super) fn admit_named_pending(
    c: &Connection,
    gw: &str,
    engine: &PolicyEngine,
    at: SystemTime,
) -> Result<Vec<String>, StoreError> {
    let pending = registry::list(
        c,
        &registry::DeviceFilter {
            lifecycle: Some(Lifecycle::Pending.as_str().to_string()),
            ..Default::default()
        },
    )?;
    let mut admitted = Vec::new();
    for d in &pending {
        let discovered = crate::config::Protocol::parse(&d.protocol)
            .and_then(crate::radio::capabilities)
            .is_some_and(|caps| caps.max_join_window.is_none());
        if !discovered {
            continue;
        }
        let facts = facts_of(d);
        let named = engine
            .policy
            .admission
            .allow
            .iter()
            .any(|m| m.matches(&facts) == Some(true));
        if !named || engine.admit(&facts) != Admit::Admit {
            continue;
        }
        admit_pending(c, gw, d, at)?;
        admitted.push(d.id.clone());
    }
    Ok(admitted)
}

/// The policy admits a pending device: active, announced, its held messages released,
/// audited.
pub(super) fn admit_pending(
    c: &Connection,
    gw: &str,
    d: &registry::Device,
    at: SystemTime,
) -> Result<(), StoreError> {
    let id = DeviceId(d.id.clone());
    registry::set_lifecycle(c, &id, Lifecycle::Active)?;
    let data = json!({"manufacturer": d.manufacturer, "model": d.model});
    lifecycle_msg(c, gw, &id, "admitted", data.clone(), at)?;
    release_held(c, gw, &id, at)?;
    admission_record(c, gw, &id, Outcome::Accepted, data)
}

/// The policy's admission decision on `id`, recorded under its own name.
pub(super) fn admission_record(
    c: &Connection,
    gw: &str,
    id: &DeviceId,
    outcome: Outcome,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    store::record_audit(
        c,
        gw,
        &AuditEntry::new("policy", "device.admission", id.as_str(), outcome, details),
    )?;
    Ok(())
}
