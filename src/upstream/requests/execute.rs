//! Carrying out a validated request: device requests (`set`, `get`) through the hub,
//! which holds them for a sleeping device, and the rest (join windows, removal,
//! policy, install codes, key and certificate rotation) through the hub or the
//! upstream status. Commands to unknown or decommissioned devices are refused here.
//! It builds no response: `handle` does.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::gateway::{health, info};
use super::{read, Rejection, Request, RequestContext};
use crate::hub::{DeviceAction, DeviceAnswer, DeviceRequest, HubError, RequestOrigin};
use crate::model::{DeviceId, Lifecycle, RadioState};
use crate::store::registry;

/// How long a `get` of an awake device may take before it is answered `device_timeout`
/// (the radio driver gives up earlier and reports what it could read).
const REFRESH_WAIT: Duration = Duration::from_secs(20);
/// What a carried-out request answers.
pub(super) enum Reply {
    Data(Value),
    /// Held for a sleeping device; the `queued` response (this payload) is in the outbox.
    Queued(Vec<u8>),
}

/// Refuses commands to devices that are unknown or decommissioned.
async fn commandable(
    ctx: &RequestContext,
    device: &DeviceId,
) -> Result<registry::Device, Rejection> {
    let id = device.clone();
    let d = read(ctx, move |c| registry::get(c, &id))
        .await?
        .ok_or_else(|| Rejection::new("unknown_device", format!("no device `{device}`")))?;
    if d.lifecycle == Lifecycle::Decommissioned.as_str() {
        return Err(Rejection::new(
            "device_decommissioned",
            format!("device `{device}` is decommissioned and takes no commands"),
        ));
    }
    Ok(d)
}

/// Sends a `set` or `get` through the hub, which holds it for a sleeping device.
async fn device_request(
    ctx: &RequestContext,
    device: DeviceId,
    action: DeviceAction,
    ttl_s: Option<u64>,
    actor: &str,
    correlation_id: Option<String>,
) -> Result<Reply, Rejection> {
    let answer = ctx
        .hub
        .device_request(DeviceRequest {
            device,
            action,
            origin: RequestOrigin::Mqtt,
            correlation_id,
            ttl: ttl_s.map(Duration::from_secs),
            actor: actor.to_string(),
        })
        .await?;
    match answer {
        DeviceAnswer::Sent(sent) => Ok(Reply::Data(
            serde_json::to_value(sent).unwrap_or(Value::Null),
        )),
        DeviceAnswer::Queued { response, queued } => match response {
            Some(payload) => Ok(Reply::Queued(payload)),
            None => Ok(Reply::Data(
                serde_json::to_value(queued).unwrap_or(Value::Null),
            )),
        },
        DeviceAnswer::Refreshing { result, .. } => {
            match tokio::time::timeout(REFRESH_WAIT, result).await {
                Ok(Ok(Ok(data))) => Ok(Reply::Data(data)),
                Ok(Ok(Err(detail))) => Err(Rejection::new(
                    "device_unreachable",
                    format!("the device did not answer the refresh: {detail}"),
                )),
                Ok(Err(_)) => Err(Rejection::new(
                    "shutting_down",
                    "the gateway stopped before the refresh ended",
                )),
                Err(_) => Err(Rejection::new(
                    "device_timeout",
                    format!("no refresh result within {}s", REFRESH_WAIT.as_secs()),
                )),
            }
        }
    }
}

pub(super) async fn execute(
    ctx: &RequestContext,
    req: Request,
    actor: &str,
    correlation_id: Option<String>,
) -> Result<Reply, Rejection> {
    match req {
        Request::Set {
            device,
            state,
            ttl_s,
        } => {
            commandable(ctx, &device).await?;
            let command = state_to_command(&state).ok_or_else(|| {
                Rejection::new(
                    "not_supported",
                    "settable attributes are `on` (boolean), `state` (\"on\", \"off\", \"toggle\") and `level` (0-100)",
                )
            })?;
            device_request(
                ctx,
                device,
                DeviceAction::Set(command),
                ttl_s,
                actor,
                correlation_id,
            )
            .await
        }
        Request::Get {
            device,
            attributes,
            ttl_s,
        } => {
            commandable(ctx, &device).await?;
            device_request(
                ctx,
                device,
                DeviceAction::Get { attributes },
                ttl_s,
                actor,
                correlation_id,
            )
            .await
        }
        other => execute_other(ctx, other, actor).await.map(Reply::Data),
    }
}

async fn execute_other(
    ctx: &RequestContext,
    req: Request,
    actor: &str,
) -> Result<Value, Rejection> {
    match req {
        Request::PermitJoin { radio, seconds } => {
            let r = ctx
                .hub
                .permit_join(radio, seconds, actor.to_string())
                .await?;
            Ok(serde_json::to_value(r).unwrap_or(Value::Null))
        }
        Request::Readmit { device } => {
            let r = ctx.hub.readmit(device, actor.to_string()).await?;
            Ok(serde_json::to_value(r).unwrap_or(Value::Null))
        }
        Request::Remove {
            device,
            block: true,
        } => {
            let r = ctx.hub.block(device, actor.to_string()).await?;
            Ok(serde_json::to_value(r).unwrap_or(Value::Null))
        }
        Request::Remove {
            device,
            block: false,
        } => {
            let r = ctx.hub.decommission(device, actor.to_string()).await?;
            Ok(json!({
                "device": r.device.id,
                "lifecycle": r.device.lifecycle,
                "credentials_destroyed": r.credentials_destroyed,
                "radio_removal": r.radio_removal,
            }))
        }
        Request::Set { .. } | Request::Get { .. } => Err(Rejection::new(
            "internal",
            "device requests go through the hub",
        )),
        Request::Policy {
            document,
            signature,
            ..
        } => {
            let envelope = json!({"policy": Value::Object(document), "signature": signature});
            let bytes = serde_json::to_vec(&envelope)
                .map_err(|e| Rejection::new("internal", e.to_string()))?;
            let applied = ctx
                .hub
                .apply_policy(bytes, "mqtt".into(), actor.to_string())
                .await?;
            Ok(serde_json::to_value(applied).unwrap_or(Value::Null))
        }
        Request::HealthCheck => health(ctx).await,
        Request::Info => info(ctx).await,
        Request::RotateClientCert { cert_pem, key_pem } => {
            ctx.status
                .rotate_client_cert(&ctx.writer, &cert_pem, key_pem.0, actor, "mqtt")
                .await
        }
        Request::AddInstallCode { device, code } => {
            let secret = crate::secrets::Secret::new(code.0.to_vec());
            let added = ctx
                .hub
                .add_install_code(device, secret, actor.to_string())
                .await?;
            Ok(serde_json::to_value(added).unwrap_or(Value::Null))
        }
        Request::RemoveInstallCode { device } => {
            let removed = ctx
                .hub
                .remove_install_code(device, actor.to_string())
                .await?;
            Ok(serde_json::to_value(removed).unwrap_or(Value::Null))
        }
        Request::RotateNetworkKey { radio } => {
            // A radio that is not running is refused as such; once the hub has handed the
            // rotation to a running radio, a failure is the rotation's.
            let state = ctx
                .radios
                .iter()
                .find(|r| r.name == radio)
                .map(|r| r.state.borrow().clone())
                .ok_or_else(|| Rejection::new("unknown_radio", format!("no radio `{radio}`")))?;
            if state != RadioState::Up {
                return Err(Rejection::new(
                    "radio_unavailable",
                    format!("radio `{radio}` is not running"),
                ));
            }
            match ctx.hub.rotate_network_key(radio, actor.to_string()).await {
                Ok(done) => Ok(serde_json::to_value(done).unwrap_or(Value::Null)),
                Err(HubError::RadioUnavailable(_, why)) => {
                    Err(Rejection::new("key_rotation_failed", why))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}
/// Maps a `set` request's attributes to a device command: `{"on": true}`,
/// `{"state": "toggle"}`, `{"level": 40}` (a level implies on).
fn state_to_command(state: &Map<String, Value>) -> Option<crate::model::DeviceCommand> {
    use crate::model::DeviceCommand;
    if let Some(level) = state.get("level") {
        let v = level.as_f64().filter(|v| (0.0..=100.0).contains(v))?;
        let others_ok = state
            .iter()
            .all(|(k, v)| k == "level" || (k == "on" && *v == Value::Bool(true)));
        return others_ok.then(|| DeviceCommand::Level {
            percent: v.round() as u8,
        });
    }
    if state.len() != 1 {
        return None;
    }
    match (state.get("on"), state.get("state").and_then(Value::as_str)) {
        (Some(Value::Bool(true)), _) => Some(DeviceCommand::On),
        (Some(Value::Bool(false)), _) => Some(DeviceCommand::Off),
        (_, Some(s)) => crate::hub::device_command_from_json(&json!({ "state": s })),
        _ => None,
    }
}
