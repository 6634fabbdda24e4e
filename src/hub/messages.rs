//! Outbox messages the hub queues beside the telemetry path: lifecycle events,
//! retained availability and the responses to requests (upstream publishes the same
//! response body for the requests it answers at once). Each message's topic is built
//! by the outbox from its kind.

use super::*;

pub(super) fn lifecycle_msg(
    c: &Connection,
    gw: &str,
    id: &DeviceId,
    event: &str,
    mut data: serde_json::Value,
    at: SystemTime,
) -> Result<i64, StoreError> {
    if let Some(obj) = data.as_object_mut() {
        obj.insert("event".into(), json!(event));
    }
    outbox::append(
        c,
        gw,
        &NewMessage {
            kind: MessageKind::Lifecycle,
            device: Some(id.clone()),
            topic: format!("device/{id}/event"),
            retain: false,
            data,
            event_time: at,
        },
    )
}

pub(super) fn availability_msg(
    c: &Connection,
    gw: &str,
    id: &DeviceId,
    online: bool,
    at: SystemTime,
) -> Result<i64, StoreError> {
    outbox::append(
        c,
        gw,
        &NewMessage {
            kind: MessageKind::Availability,
            device: Some(id.clone()),
            topic: format!("device/{id}/availability"),
            retain: true,
            data: json!({"state": if online { "online" } else { "offline" }}),
            event_time: at,
        },
    )
}

/// Queues a device's retained messages again (its state, and its availability
/// from its health flags) so they reach the topic it is published under now: after a
/// rename when device topics carry friendly names. A decommissioned device, or a
/// discovered one not adopted (which sends nothing upstream), gets none.
pub fn requeue_retained(
    c: &Connection,
    gw: &str,
    device: &registry::Device,
    at: SystemTime,
) -> Result<(), StoreError> {
    let id = DeviceId(device.id.clone());
    if device.lifecycle == Lifecycle::Decommissioned.as_str() || super::ingest::held_back(c, &id)? {
        return Ok(());
    }
    if device.last_state.as_object().is_some_and(|o| !o.is_empty()) {
        outbox::append(
            c,
            gw,
            &NewMessage {
                kind: MessageKind::State,
                device: Some(id.clone()),
                topic: format!("device/{id}/state"),
                retain: true,
                data: device.last_state.clone(),
                event_time: at,
            },
        )?;
    }
    let offline = device.health.get("offline").is_some();
    availability_msg(c, gw, &id, !offline, at)?;
    Ok(())
}

/// A discovered device that was just adopted (or admitted by name): its retained state
/// and availability, held back while it was pending, are queued now.
pub(in crate::hub) fn release_held(
    c: &Connection,
    gw: &str,
    id: &DeviceId,
    at: SystemTime,
) -> Result<(), StoreError> {
    if !super::ingest::discovered(id) {
        return Ok(());
    }
    match registry::get(c, id)? {
        Some(d) => requeue_retained(c, gw, &d, at),
        None => Ok(()),
    }
}

/// A response object (the schema of docs/mqtt-api.md "Responses"): the hub queues it
/// in the outbox for the answers to held requests, and upstream publishes it for the
/// requests it answers at once.
pub fn response_body(
    correlation_id: Option<&str>,
    operation: &str,
    status: &str,
    data: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
    gateway: &str,
) -> serde_json::Value {
    let mut v = json!({
        "correlation_id": correlation_id,
        "operation": operation,
        "status": status,
        "gateway": gateway,
        "ts": crate::model::now_rfc3339(),
    });
    if let Some(d) = data {
        v["data"] = d;
    }
    if let Some(e) = error {
        v["error"] = e;
    }
    v
}
