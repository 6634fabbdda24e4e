//! One request end to end: parse it, answer a repeat from the remembered response
//! instead of carrying it out again, carry it out, and commit its audit record with
//! the response it gets. Every request is audited, accepted or refused.

use std::time::SystemTime;

use serde_json::json;

use super::execute::{execute, Reply};
use super::{parse, Outbound, RequestContext};
use crate::hub::response_body;
use crate::store;
use crate::store::audit::{AuditEntry, Outcome};
use crate::store::replay::{self, Seen};
use crate::upstream::link::ReplyTo;
use crate::upstream::topics::response_level;

/// Validates, authorizes, executes and audits one request; returns its response, or
/// `None` when the response went into the outbox instead (with `reply_to`, so it
/// reaches an MQTT 5 requester's Response Topic too).
pub(super) async fn handle(
    ctx: &RequestContext,
    operation: &str,
    payload: &[u8],
    retained: bool,
    topic_device: Option<&str>,
    reply_to: Option<&ReplyTo>,
) -> Option<Outbound> {
    let mut parsed = super::parse::parse_for(operation, payload, topic_device);
    let level = response_level(operation).to_string();
    let actor = format!("mqtt:{}", parsed.client_id.as_deref().unwrap_or("cloud"));
    // A device named by its friendly name: look the name up (before the repeat check,
    // which compares the device, not how it was written).
    if let Ok(req) = &mut parsed.request {
        if let Err(r) = resolve_name(ctx, req).await {
            parsed.request = Err(r);
        }
    }
    let device = match &mut parsed.request {
        Ok(req) => req.device_mut().map(|d| d.to_string()),
        Err(_) => topic_device.map(str::to_string),
    };
    let key = parsed
        .correlation_id
        .clone()
        .map(|c| (level.clone(), repeat_key(&c, device.as_deref(), payload)));
    let respond = |payload: Vec<u8>| Outbound {
        topic: ctx.topics.response(operation),
        payload,
        retain: false,
        props: Default::default(),
    };

    // A request seen before (retained and re-delivered after a reconnect or a restart,
    // or sent twice) is answered again without being carried out again. The claim is
    // durable, so this holds across restarts.
    if let Some((op, cid)) = key.clone() {
        let seen = ctx
            .writer
            .write(move |c| replay::claim(c, &op, &cid, SystemTime::now()))
            .await;
        let repeat = match seen {
            Ok(Seen::New) => None,
            Ok(Seen::Answered(cached)) => Some(cached),
            Ok(Seen::Interrupted) => Some(
                serde_json::to_vec(&response_body(
                    parsed.correlation_id.as_deref(),
                    &level,
                    "error",
                    None,
                    Some(json!({"code": "interrupted",
                                "message": "the gateway stopped while carrying out this request; it is not carried out again"})),
                    &ctx.gateway_id,
                ))
                .unwrap_or_default(),
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot record an MQTT request for de-duplication");
                ctx.status.count_request("store_error");
                return Some(respond(
                    serde_json::to_vec(&response_body(
                        parsed.correlation_id.as_deref(),
                        &level,
                        "error",
                        None,
                        Some(json!({"code": "store_error", "message": "the request could not be recorded; it was not carried out"})),
                        &ctx.gateway_id,
                    ))
                    .unwrap_or_default(),
                ));
            }
        };
        if let Some(cached) = repeat {
            ctx.status.count_request("duplicate");
            let entry = AuditEntry::new(
                &actor,
                format!("mqtt.{level}"),
                refused_target(topic_device, payload).unwrap_or_else(|| ctx.gateway_id.to_string()),
                Outcome::Refused,
                json!({"correlation_id": parsed.correlation_id, "code": "duplicate", "retained": retained}),
            );
            let _ = audit(ctx, entry).await;
            return Some(respond(cached));
        }
    }

    let target = match &parsed.request {
        Ok(r) => r.target(&ctx.gateway_id),
        // Refused before it was understood: still named by what it was about, when
        // the body or the topic says (a device, a radio), else the gateway.
        Err(_) => {
            refused_target(topic_device, payload).unwrap_or_else(|| ctx.gateway_id.to_string())
        }
    };
    let result = match parsed.request.clone() {
        Ok(req) => {
            let cid = parsed.correlation_id.clone();
            execute(ctx, req, &actor, cid, reply_to).await
        }
        Err(r) => Err(r),
    };
    let (status, outcome, code) = match &result {
        Ok(Reply::Queued(_)) => ("queued", Outcome::Accepted, None),
        Ok(Reply::Data(_)) => ("ok", Outcome::Accepted, None),
        Err(r) => ("error", r.outcome(), Some(r.code)),
    };
    ctx.status.count_request(code.unwrap_or(status));
    let mut details = json!({"correlation_id": parsed.correlation_id, "status": status, "code": code, "retained": retained});
    if let Err(r) = &result {
        // Why, as the requester was told (never a secret: those bodies are refused
        // without quoting them).
        details["message"] = json!(r.message);
    }
    // A rename says what the name was and became: the log alone tells who named what.
    if let (Ok(parse::Request::Rename { .. }), Ok(Reply::Data(data))) = (&parsed.request, &result) {
        details["name"] = data["name"].clone();
        details["previous_name"] = data["previous"].clone();
    }
    let response = match &result {
        Ok(Reply::Queued(payload)) => payload.clone(),
        Ok(Reply::Data(data)) => serde_json::to_vec(&response_body(
            parsed.correlation_id.as_deref(),
            &level,
            "ok",
            Some(data.clone()),
            None,
            &ctx.gateway_id,
        ))
        .unwrap_or_default(),
        Err(r) => serde_json::to_vec(&response_body(
            parsed.correlation_id.as_deref(),
            &level,
            "error",
            None,
            Some(json!({"code": r.code, "message": r.message})),
            &ctx.gateway_id,
        ))
        .unwrap_or_default(),
    };
    // The audit record and the remembered answer commit together.
    let entry = AuditEntry::new(&actor, format!("mqtt.{level}"), target, outcome, details);
    let gw = ctx.gateway_id.clone();
    let remembered = response.clone();
    let recorded = ctx
        .writer
        .write(move |c| {
            store::record_audit(c, &gw, &entry)?;
            if let Some((op, cid)) = &key {
                replay::answer(c, op, cid, &remembered)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, "cannot write the audit record of an MQTT request");
        if matches!(result, Ok(Reply::Queued(_))) {
            // The hub committed the request and its `queued` response already.
            return None;
        }
        return Some(respond(
            serde_json::to_vec(&response_body(
                parsed.correlation_id.as_deref(),
                &level,
                "error",
                None,
                Some(json!({"code": "audit_unavailable", "message": "the audit log cannot be written"})),
                &ctx.gateway_id,
            ))
            .unwrap_or_default(),
        ));
    }
    match result {
        Ok(Reply::Queued(_)) => None,
        Ok(Reply::Data(_)) => Some(respond(response)),
        Err(r) => {
            tracing::info!(operation = %level, code = r.code, correlation_id = ?parsed.correlation_id, "MQTT request refused");
            Some(respond(response))
        }
    }
}

async fn audit(ctx: &RequestContext, entry: AuditEntry) -> store::StoreResult<()> {
    let gw = ctx.gateway_id.clone();
    ctx.writer
        .write(move |c| store::record_audit(c, &gw, &entry).map(|_| ()))
        .await
}

/// A request refused before it reached the request task (`busy`: the queue was
/// full; `shutting_down`): its audit record and what to publish. The session
/// collects these and commits their audit records in batches, then publishes.
#[derive(Debug)]
pub struct Refusal {
    pub audit: AuditEntry,
    pub publish: Vec<Outbound>,
}

/// Builds the refusal of one request with `code` (parsing it only for its
/// correlation id, client id and target).
#[allow(clippy::too_many_arguments)]
pub fn refusal(
    gateway_id: &str,
    topics: &crate::upstream::topics::Topics,
    request_topic: &str,
    operation: &str,
    payload: &[u8],
    retained: bool,
    reply_to: Option<&crate::upstream::link::ReplyTo>,
    v5: bool,
    code: &'static str,
    message: &str,
) -> Refusal {
    let parsed = parse(operation, payload);
    let level = response_level(operation).to_string();
    let actor = format!("mqtt:{}", parsed.client_id.as_deref().unwrap_or("cloud"));
    let target = match &parsed.request {
        Ok(r) => r.target(gateway_id),
        Err(_) => gateway_id.to_string(),
    };
    let body = response_body(
        parsed.correlation_id.as_deref(),
        &level,
        "error",
        None,
        Some(json!({"code": code, "message": message})),
        gateway_id,
    );
    let response = Outbound {
        topic: topics.response(operation),
        payload: serde_json::to_vec(&body).unwrap_or_default(),
        retain: false,
        props: Default::default(),
    };
    let mut publish = vec![super::address(response, reply_to, topics, v5)];
    if retained {
        publish.push(super::clear_retained(request_topic));
    }
    let details = json!({"correlation_id": parsed.correlation_id, "status": "error", "code": code, "retained": retained});
    Refusal {
        audit: AuditEntry::new(
            actor,
            format!("mqtt.{level}"),
            target,
            Outcome::Failed,
            details,
        ),
        publish,
    }
}

/// Replaces a friendly name (carried as `name:<name>` by the parser) with the
/// device id it belongs to.
async fn resolve_name(
    ctx: &RequestContext,
    req: &mut super::Request,
) -> Result<(), super::Rejection> {
    let Some(device) = req.device_mut() else {
        return Ok(());
    };
    let Some(name) = device
        .0
        .strip_prefix(super::parse::NAME_REF)
        .map(str::to_string)
    else {
        return Ok(());
    };
    let lookup = name.clone();
    match super::read(ctx, move |c| store::names::resolve(c, &lookup)).await? {
        Some(id) => {
            *device = id;
            Ok(())
        }
        None => Err(super::Rejection::new(
            "unknown_device",
            format!("no device named `{name}`"),
        )),
    }
}

/// What makes a request a repeat: its correlation id *and* what it asks (the device,
/// however it was named: id in any case, friendly name, on the topic or in the body;
/// the rest of the body as JSON, whatever its spacing or key order). The same id with
/// another body or another device is another request, carried out and answered on its
/// own, not answered with the first one's result.
fn repeat_key(correlation_id: &str, device: Option<&str>, payload: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let body = serde_json::from_slice::<serde_json::Value>(payload)
        .map(|mut v| {
            if device.is_some() {
                if let Some(o) = v.as_object_mut() {
                    o.remove("device");
                }
            }
            same_numbers(&mut v);
            v.to_string().into_bytes()
        })
        .unwrap_or_else(|_| payload.to_vec());
    let mut h = Sha256::new();
    h.update(device.unwrap_or_default().as_bytes());
    h.update([0]);
    h.update(&body);
    let digest = h.finalize();
    format!("{correlation_id}\u{1f}{}", hex::encode(&digest[..12]))
}

/// Writes every number as the value it is: `40`, `40.0` and `4e1` are one JSON
/// number, and a client that serialises its retry anew (floats in Python and
/// JavaScript) must not have it carried out twice. Whole floats within 2^53 (where
/// every integer is exact) become integers.
fn same_numbers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    // Exact: a whole float of at most 2^53 converts without loss.
                    *v = serde_json::Value::from(f as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(same_numbers),
        serde_json::Value::Object(o) => o.values_mut().for_each(same_numbers),
        _ => {}
    }
}

/// What a refused request was about: the device of a per-device topic, else the
/// body's `device` or `radio` (a short printable string, at most 64 characters), so
/// its audit record names it as an accepted one would.
fn refused_target(topic_device: Option<&str>, payload: &[u8]) -> Option<String> {
    let printable =
        |s: &str| !s.is_empty() && s.chars().count() <= 64 && !s.chars().any(char::is_control);
    if let Some(d) = topic_device.filter(|d| printable(d)) {
        return Some(d.to_string());
    }
    let body: serde_json::Value = serde_json::from_slice(payload).ok()?;
    ["device", "radio"].into_iter().find_map(|k| {
        body.get(k)?
            .as_str()
            .filter(|s| printable(s))
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::repeat_key;

    #[test]
    fn a_number_written_another_way_is_the_same_request() {
        let key = |body: &str| repeat_key("c1", Some("zigbee:0x1"), body.as_bytes());
        let base = key(r#"{"state":{"level":40}}"#);
        for same in [
            r#"{"state":{"level":40.0}}"#,
            r#"{"state":{"level":4e1}}"#,
            r#"{ "state" : { "level" : 40 } }"#,
        ] {
            assert_eq!(key(same), base, "{same}");
        }
        for other in [
            r#"{"state":{"level":40.5}}"#,
            r#"{"state":{"level":41}}"#,
            r#"{"state":{"level":"40"}}"#,
        ] {
            assert_ne!(key(other), base, "{other}");
        }
        // Beyond 2^53 floats are not all integers: left as they are.
        assert_ne!(key(r#"{"n":1e300}"#), key(r#"{"n":1e299}"#));
    }
}
