//! Carrying out a validated request: device requests (`set`, `get`) through the hub,
//! which holds them for a sleeping device, and the rest (join windows, removal,
//! policy, install codes, key and certificate rotation) through the hub or the
//! upstream status. Commands to unknown or decommissioned devices are refused here.
//! It builds no response: `handle` does.

use std::time::Duration;

use serde_json::{json, Value};

use super::gateway::{health, info};
use super::{read, Rejection, Request, RequestContext};
use crate::hub::{DeviceAction, DeviceAnswer, DeviceRequest, HubError, RequestOrigin};
use crate::model::{DeviceId, Lifecycle, RadioState};
use crate::store::audit::{AuditEntry, Outcome};
use crate::store::{self, names, registry};
use crate::upstream::link::ReplyTo;

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
    reply_to: Option<&ReplyTo>,
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
            reply_to: reply_to.cloned(),
            // The result comes as the device's `command_result` event.
            wait_result: false,
        })
        .await?;
    match answer {
        DeviceAnswer::Sent(sent) | DeviceAnswer::Commanded { sent, .. } => Ok(Reply::Data(
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
    reply_to: Option<&ReplyTo>,
) -> Result<Reply, Rejection> {
    match req {
        Request::Set {
            device,
            state,
            ttl_s,
        } => {
            commandable(ctx, &device).await?;
            let command = crate::model::vocabulary::desired_state(&state)
                .map_err(|e| Rejection::new(e.code(), e.to_string()))?;
            device_request(
                ctx,
                device,
                DeviceAction::Set(command),
                ttl_s,
                actor,
                correlation_id,
                reply_to,
            )
            .await
        }
        Request::Get {
            device,
            attributes,
            ttl_s,
        } => {
            commandable(ctx, &device).await?;
            let reply = device_request(
                ctx,
                device,
                DeviceAction::Get {
                    attributes: attributes.clone(),
                },
                ttl_s,
                actor,
                correlation_id,
                reply_to,
            )
            .await?;
            if let Reply::Data(data) = &reply {
                unknown_attributes(&attributes, data)?;
            }
            Ok(reply)
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
        Request::RotateBindkey { device, bindkey } => {
            let secret = crate::secrets::Secret::new(bindkey.0.to_vec());
            let r = ctx
                .hub
                .add_credential(
                    device,
                    crate::model::CredentialKind::BthomeBindkey,
                    secret,
                    actor.to_string(),
                )
                .await?;
            Ok(serde_json::to_value(r).unwrap_or(Value::Null))
        }
        Request::Adopt { device, bindkey } => {
            let bindkey = bindkey.map(|k| crate::secrets::Secret::new(k.0.to_vec()));
            let r = ctx.hub.adopt(device, bindkey, actor.to_string()).await?;
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
            let mut data = json!({
                "device": r.device.id,
                "lifecycle": r.device.lifecycle,
                "credentials_destroyed": r.credentials_destroyed,
                "radio_removal": r.radio_removal,
            });
            if let Some(secs) = r.device_action_within_s {
                data["device_action_within_s"] = json!(secs);
            }
            Ok(data)
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
        Request::Devices {
            offset,
            limit,
            lifecycle,
        } => {
            read(ctx, move |c| {
                let filter = registry::DeviceFilter {
                    lifecycle,
                    ..Default::default()
                };
                let all = registry::list(c, &filter)?;
                let names = names::all(c)?;
                let page: Vec<Value> = all
                    .iter()
                    .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                    .take(limit as usize)
                    .map(|d| device_json(d, names.get(&d.id).cloned()))
                    .collect();
                Ok(json!({"total": all.len(), "offset": offset, "limit": limit, "devices": page}))
            })
            .await
        }
        Request::Device { device } => {
            let id = device.clone();
            let found = read(ctx, move |c| {
                Ok(match registry::get(c, &id)? {
                    Some(d) => Some(device_json(&d, names::get(c, &id)?)),
                    None => None,
                })
            })
            .await?;
            found.ok_or_else(|| Rejection::new("unknown_device", format!("no device `{device}`")))
        }
        Request::Rename { device, name } => {
            let (id, wanted) = (device.clone(), name.clone());
            let (found, owner) = read(ctx, move |c| {
                let owner = match &wanted {
                    Some(n) => names::holder(c, n)?,
                    None => None,
                };
                Ok((registry::get(c, &id)?, owner))
            })
            .await?;
            let found = found
                .ok_or_else(|| Rejection::new("unknown_device", format!("no device `{device}`")))?;
            let taken = |owner: String| {
                Rejection::new(
                    "name_taken",
                    format!("the name is already the name of `{owner}`"),
                )
            };
            if let Some(owner) = owner.filter(|o| o != &device) {
                return Err(taken(owner.0));
            }
            // Device topics by name: the new name is in use before the rename
            // commits, so the retained messages queued with it go out under it.
            let moved = ctx.levels.as_ref().and_then(|levels| {
                let old = levels.level(device.as_str());
                let previous = levels.set(device.as_str(), name.as_deref());
                (old != levels.level(device.as_str())).then_some((levels, old, previous))
            });
            let (id, wanted, gw) = (device.clone(), name.clone(), ctx.gateway_id.clone());
            let requeue = moved.is_some();
            let who = actor.to_string();
            let result = ctx
                .writer
                .write(move |c| match names::set(c, &id, wanted.as_deref()) {
                    Ok(p) => {
                        // Its own record, committed with the change: no rename without
                        // one (the request's record comes after, and may fail alone).
                        store::record_audit(
                            c,
                            &gw,
                            &AuditEntry::new(
                                who.as_str(),
                                "device.rename",
                                id.as_str(),
                                Outcome::Accepted,
                                json!({"name": wanted, "previous_name": p}),
                            ),
                        )?;
                        if requeue {
                            crate::hub::requeue_retained(
                                c,
                                &gw,
                                &found,
                                std::time::SystemTime::now(),
                            )?;
                        }
                        Ok(Ok(p))
                    }
                    Err(names::RenameError::Taken(owner)) => Ok(Err(owner)),
                    Err(names::RenameError::Store(e)) => Err(e),
                })
                .await;
            let previous = match result {
                Ok(Ok(p)) => {
                    if let Some((levels, old, _)) = moved {
                        levels.moved_from(old);
                    }
                    p
                }
                failed => {
                    if let Some((levels, _, previous)) = moved {
                        levels.set(device.as_str(), previous.as_deref());
                    }
                    failed
                        .map_err(|e| Rejection::new("store_error", e.to_string()))?
                        .map_err(taken)?
                }
            };
            Ok(json!({"device": device, "name": name, "previous": previous}))
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
        Request::AddLoraDevice { device, kind, keys } => {
            let secret = crate::secrets::Secret::new(keys.0.to_vec());
            let added = ctx
                .hub
                .add_credential(device, kind, secret, actor.to_string())
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

/// Refuses a `get` that named attributes the device does not have (after the
/// refresh, so a value the device reports only when asked counts).
fn unknown_attributes(attributes: &[String], data: &Value) -> Result<(), Rejection> {
    let state = data.get("state").and_then(Value::as_object);
    let missing: Vec<&str> = attributes
        .iter()
        .filter(|a| !state.is_some_and(|s| s.contains_key(a.as_str())))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Rejection::new(
        "unknown_attribute",
        format!(
            "the device has no `{}` (after the refresh); names are as in the vocabulary or the device's `state`",
            missing.join("`, `")
        ),
    ))
}

/// A registry entry as `device` and `devices` answer it: the registry's fields and
/// the friendly name (`null` when it has none).
fn device_json(d: &registry::Device, name: Option<String>) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("name".into(), json!(name));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_of_attributes_the_device_lacks_is_refused_by_name() {
        let data = json!({"command_id": "c", "state": {"on": true, "voltage": 230.1}});
        assert!(unknown_attributes(&[], &data).is_ok());
        assert!(unknown_attributes(&["on".into(), "voltage".into()], &data).is_ok());
        let r = unknown_attributes(&["on".into(), "colour".into()], &data).unwrap_err();
        assert_eq!(r.code, "unknown_attribute");
        assert!(
            r.message.contains("`colour`") && !r.message.contains("`on`"),
            "{}",
            r.message
        );
        let r = unknown_attributes(&["on".into()], &json!({"state": {}})).unwrap_err();
        assert_eq!(r.code, "unknown_attribute");
    }
}
