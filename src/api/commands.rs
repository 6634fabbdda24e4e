//! `POST /v1/devices/{id}/command` (optionally waiting for the device's result) and
//! `POST /v1/devices/{id}/refresh`: set and get for one device, held for a sleeping one.

use std::time::Duration;

use super::*;
use crate::hub::{DeviceAction, DeviceAnswer, DeviceRequest, RequestOrigin, MAX_REQUEST_TTL_S};

#[derive(Deserialize)]
pub(super) struct CommandQuery {
    /// Answer with the device's result (or after [`COMMAND_WAIT`] without one).
    #[serde(default)]
    wait: bool,
}

/// How long `POST /v1/devices/{id}/command?wait=true` waits for the device's result.
const COMMAND_WAIT: Duration = Duration::from_secs(20);

pub(super) async fn device_command(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(raw): UrlPath<String>,
    q: Result<Query<CommandQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = device_id(&s, &raw).await?;
    let mut v: serde_json::Value = parse_json(&body)?;
    let ttl = ttl_field(&mut v)?;
    let config = v
        .as_object()
        .filter(|o| o.keys().any(|k| k.starts_with("config_")));
    let command = match config {
        // A configuration parameter: the same checks and messages as MQTT `set`.
        Some(o) => crate::model::vocabulary::desired_state(o).map_err(|e| match e {
            crate::model::vocabulary::SetError::Invalid(_) => ApiError::invalid(e.to_string()),
            crate::model::vocabulary::SetError::NotSupported(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "not_supported", e.to_string())
            }
        })?,
        None => crate::hub::device_command_from_json(&v).ok_or_else(|| {
            // A level that is a number out of 0-100 is well-formed but out of range.
            let out_of_range = v["level"].as_f64().is_some_and(|l| !(0.0..=100.0).contains(&l));
            if out_of_range {
                return ApiError::invalid("`level` is a number from 0 to 100");
            }
            ApiError::bad_request(
                "a command is {\"state\": \"on\"|\"off\"|\"toggle\"}, {\"level\": 0-100} or {\"config_parameter\": N, \"config_size\": 1|2|4, \"config_value\": V}, with an optional \"ttl_s\"",
            )
        })?,
    };
    let answer = s
        .hub
        .device_request(DeviceRequest {
            device: id,
            action: DeviceAction::Set(command),
            origin: RequestOrigin::Api,
            correlation_id: None,
            ttl,
            actor: peer.actor(),
            reply_to: None,
            wait_result: q.wait,
        })
        .await?;
    device_answer(answer, &[]).await
}

/// `get` (refresh): reads fresh values from an awake device (200 with the device's state
/// after the refresh), or holds the request for a sleeping one (202).
pub(super) async fn device_refresh(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(raw): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = device_id(&s, &raw).await?;
    let mut v: serde_json::Value = if body.is_empty() {
        json!({})
    } else {
        parse_json(&body)?
    };
    let ttl = ttl_field(&mut v)?;
    let attributes: Vec<String> = match v.as_object_mut().and_then(|o| o.remove("attributes")) {
        None => Vec::new(),
        Some(a) => serde_json::from_value(a)
            .map_err(|_| ApiError::bad_request("`attributes` is an array of names"))?,
    };
    if v.as_object().is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::bad_request(
            "a refresh takes only `attributes` and `ttl_s`",
        ));
    }
    let answer = s
        .hub
        .device_request(DeviceRequest {
            device: id,
            action: DeviceAction::Get {
                attributes: attributes.clone(),
            },
            origin: RequestOrigin::Api,
            correlation_id: None,
            ttl,
            actor: peer.actor(),
            reply_to: None,
            wait_result: false,
        })
        .await?;
    device_answer(answer, &attributes).await
}

fn ttl_field(v: &mut serde_json::Value) -> Result<Option<Duration>, ApiError> {
    match v.as_object_mut().and_then(|o| o.remove("ttl_s")) {
        None => Ok(None),
        Some(t) => {
            let why = format!("`ttl_s` is a number of seconds from 1 to {MAX_REQUEST_TTL_S}");
            match t.as_f64() {
                // A number, but not a whole one in range: out of range.
                Some(_) => t
                    .as_u64()
                    .filter(|t| (1..=MAX_REQUEST_TTL_S).contains(t))
                    .map(|t| Some(Duration::from_secs(t)))
                    .ok_or_else(|| ApiError::invalid(why)),
                None => Err(ApiError::bad_request(why)),
            }
        }
    }
}

/// Answers a device request; `attributes`: those a refresh asked for, each of which
/// the device must have afterwards (`unknown_attribute`, as MQTT's `get`).
async fn device_answer(answer: DeviceAnswer, attributes: &[String]) -> Result<Response, ApiError> {
    match answer {
        DeviceAnswer::Sent(sent) => Ok(Json(sent).into_response()),
        DeviceAnswer::Commanded { sent, result } => {
            let mut v = serde_json::to_value(&sent).unwrap_or_default();
            // No state here: the result comes when the radio has the device's word (a
            // Zigbee data confirm), which may be before the device reports its new state.
            let (ok, detail) = match tokio::time::timeout(COMMAND_WAIT, result).await {
                Ok(Ok(Ok(data))) => (true, data["detail"].clone()),
                Ok(Ok(Err(detail))) => (false, json!(detail)),
                Ok(Err(_)) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shutting_down",
                        format!(
                            "command {} was sent; the gateway stopped before its result came",
                            sent.command_id
                        ),
                    ))
                }
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "device_timeout",
                        format!(
                            "command {} was sent; no result from the device within {} s",
                            sent.command_id,
                            COMMAND_WAIT.as_secs()
                        ),
                    ))
                }
            };
            if let Some(o) = v.as_object_mut() {
                o.insert("ok".into(), json!(ok));
                o.insert("detail".into(), detail);
            }
            Ok(Json(v).into_response())
        }
        DeviceAnswer::Queued { queued, .. } => {
            Ok((StatusCode::ACCEPTED, Json(queued)).into_response())
        }
        DeviceAnswer::Refreshing { result, .. } => {
            match tokio::time::timeout(Duration::from_secs(20), result).await {
                Ok(Ok(Ok(data))) => {
                    let state = data.get("state").and_then(serde_json::Value::as_object);
                    let missing: Vec<&str> = attributes
                        .iter()
                        .filter(|a| !state.is_some_and(|s| s.contains_key(a.as_str())))
                        .map(String::as_str)
                        .collect();
                    if !missing.is_empty() {
                        return Err(ApiError::new(
                            StatusCode::NOT_FOUND,
                            "unknown_attribute",
                            format!(
                                "the device has no `{}` (after the refresh); names are as in its state",
                                missing.join("`, `")
                            ),
                        ));
                    }
                    Ok(Json(data).into_response())
                }
                Ok(Ok(Err(detail))) => Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "device_unreachable",
                    format!("the device did not answer the refresh: {detail}"),
                )),
                Ok(Err(_)) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the gateway stopped before the refresh ended",
                )),
                Err(_) => Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "device_timeout",
                    "no refresh result within 20 s",
                )),
            }
        }
    }
}
