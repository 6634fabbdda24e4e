//! Outbox messages the hub queues beside the telemetry path: lifecycle events and
//! retained availability. Each message's topic is built by the outbox from its kind.

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
