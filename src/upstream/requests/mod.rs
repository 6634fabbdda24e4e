//! Inbound requests from the cloud: `<prefix>/request/<operation>` in,
//! `<prefix>/response/<operation>` out.
//!
//! Owns parsing and validating requests (size limit, UTF-8, JSON, strict schemas
//! with unknown fields rejected, a correlation id), authorizing them against the
//! registry, routing them to the hub, the audit record every request gets, and the
//! response. It never touches the MQTT connection: the session hands it payloads
//! and publishes what it returns. Nothing here may panic on input.
//!
//! This file holds the serve loop, what it is handed and hands back, and the
//! refusal every step may end in. One room each: `parse` (payload -> a validated
//! [`Request`], pure), `handle` (one request end to end: de-duplication, audit,
//! the response), `execute` (carrying a request out through the hub) and `gateway`
//! (the `info` and `health_check` answers).

mod execute;
mod gateway;
mod handle;
mod parse;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::link::{Props, ReplyTo};
use super::topics::Topics;
use super::UpstreamStatus;
use crate::hub::{HubError, HubHandle};
use crate::radio::RadioHandle;
use crate::store::audit::Outcome;
use crate::store::{self, Writer};

pub use gateway::info;
use handle::handle;
pub use handle::{refusal, Refusal};
pub use parse::{
    duplicate_key, parse, InstallCodeAction, Parsed, Request, SecretCode, SecretPem,
    MAX_REQUEST_BYTES, MAX_ROTATION_REQUEST_BYTES, OPERATIONS,
};

/// A refusal, with a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
        }
    }

    /// Server-side failures are audited as `failed`, the rest as `refused`.
    fn outcome(&self) -> Outcome {
        match self.code {
            "store_error"
            | "shutting_down"
            | "internal"
            | "audit_unavailable"
            | "busy"
            | "rotation_failed"
            | "key_rotation_failed" => Outcome::Failed,
            _ => Outcome::Refused,
        }
    }
}

impl From<HubError> for Rejection {
    fn from(e: HubError) -> Self {
        Rejection::new(e.code(), e.to_string())
    }
}
/// Something for the session to publish (QoS 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// MQTT 5 properties (none on MQTT 3.1.1).
    pub props: Props,
}

/// What the session hands the request task.
#[derive(Debug)]
pub enum Inbound {
    Request {
        /// The topic it came on (a retained request is cleared there once answered).
        topic: String,
        /// The device named by a per-device topic (`device/<device>/set`).
        device: Option<String>,
        operation: String,
        payload: Vec<u8>,
        retained: bool,
        /// MQTT 5: the requester's Response Topic and Correlation Data.
        reply_to: Option<ReplyTo>,
    },
    /// Publish the retained `info` document now.
    PublishInfo,
}

/// What a request handler needs from the rest of the daemon.
#[derive(Clone)]
pub struct RequestContext {
    pub gateway_id: Arc<str>,
    pub topics: Topics,
    pub hub: HubHandle,
    pub writer: Writer,
    pub db_path: PathBuf,
    pub radios: Arc<Vec<RadioHandle>>,
    pub status: Arc<UpstreamStatus>,
    /// The connection speaks MQTT 5: answers carry properties.
    pub v5: bool,
    /// Device topics by friendly name (`topic_names = "name"`).
    pub levels: Option<Arc<super::topics::DeviceLevels>>,
    /// Set when a stop has run out of time to carry out the requests still queued: they
    /// are answered `shutting_down` (and audited) instead, so none taken goes unanswered.
    pub giving_up: Arc<std::sync::atomic::AtomicBool>,
}

/// Serves requests one at a time until the session drops its sender.
pub async fn serve(
    ctx: RequestContext,
    mut inbound: mpsc::Receiver<Inbound>,
    outbound: mpsc::Sender<Outbound>,
) {
    // A network key rotation waits out the radio's key switch delay (up to minutes). It
    // goes to a lane of its own, so other requests are not held up behind it; rotations
    // (and repeats of one) still run one at a time, in order, so a repeat finds the first
    // one's answer.
    let (rotations, mut lane) = mpsc::channel::<Taken>(16);
    // Requests taken while the radios are still starting wait for them (see
    // `RADIOS_START_WAIT`), instead of being refused `radio_unavailable`.
    let radios_by = tokio::time::Instant::now() + gateway::RADIOS_START_WAIT;
    let lane_task = {
        let (ctx, outbound) = (ctx.clone(), outbound.clone());
        tokio::spawn(async move {
            while let Some((topic, operation, payload, retained, reply_to)) = lane.recv().await {
                gateway::radios_started(&ctx, radios_by).await;
                let out = handle(
                    &ctx,
                    &operation,
                    &payload,
                    retained,
                    None,
                    reply_to.as_ref(),
                )
                .await;
                if out.is_some() {
                    count_refused_topic(&ctx.status, reply_to.as_ref(), &ctx.topics, ctx.v5);
                }
                let out = out.map(|o| address(o, reply_to.as_ref(), &ctx.topics, ctx.v5));
                if answer(&outbound, out, &topic, retained).await.is_err() {
                    break;
                }
            }
        })
    };
    // The retained `info` again when a radio's state changes kind (one still starting
    // at connect comes up), instead of at the next periodic one.
    let (info_tx, mut radios_changed) = mpsc::channel::<()>(1);
    let watcher = tokio::spawn(gateway::watch_radio_states(
        ctx.radios.iter().map(|r| r.state.clone()).collect(),
        gateway::RADIO_SETTLE,
        info_tx,
    ));
    loop {
        let item = tokio::select! {
            item = inbound.recv() => match item {
                Some(item) => item,
                None => break,
            },
            Some(()) = radios_changed.recv() => Inbound::PublishInfo,
        };
        match item {
            Inbound::PublishInfo => match info(&ctx).await {
                Ok(data) => {
                    let out = Outbound {
                        topic: ctx.topics.info(),
                        payload: data.to_string().into_bytes(),
                        retain: true,
                        props: Props {
                            json: ctx.v5,
                            ..Props::default()
                        },
                    };
                    if outbound.send(out).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(code = e.code, error = %e.message, "cannot build the gateway info");
                }
            },
            Inbound::Request {
                topic,
                operation,
                payload,
                retained,
                reply_to,
                ..
            } if operation == "rotate_network_key" && rotation_runs(&ctx, &payload) => {
                // Never waits for room: that would hold every other request up behind
                // the rotations. A full lane answers `busy`, as the session does when
                // this task has no room.
                match rotations.try_send((topic, operation, payload, retained, reply_to)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(taken)) => {
                        let why = "too many key rotations waiting: retry later";
                        if refuse_taken(&ctx, &outbound, &taken, "busy", why)
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            Inbound::Request {
                topic,
                operation,
                payload,
                retained,
                reply_to,
                ..
            } if ctx.giving_up.load(std::sync::atomic::Ordering::Relaxed) => {
                let taken = (topic, operation, payload, retained, reply_to);
                let why = "the gateway is stopping and had no time left to carry this request out";
                if refuse_taken(&ctx, &outbound, &taken, "shutting_down", why)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Inbound::Request {
                topic,
                device,
                operation,
                payload,
                retained,
                reply_to,
            } => {
                gateway::radios_started(&ctx, radios_by).await;
                // `None`: answered through the outbox (a request held for a sleeping device).
                let out = handle(
                    &ctx,
                    &operation,
                    &payload,
                    retained,
                    device.as_deref(),
                    reply_to.as_ref(),
                )
                .await;
                if out.is_some() {
                    count_refused_topic(&ctx.status, reply_to.as_ref(), &ctx.topics, ctx.v5);
                }
                let out = out.map(|o| address(o, reply_to.as_ref(), &ctx.topics, ctx.v5));
                if answer(&outbound, out, &topic, retained).await.is_err() {
                    break;
                }
            }
        }
    }
    watcher.abort();
    // The rotations already taken are answered too before the task ends: the session
    // waits for this task (bounded) before it disconnects at a stop.
    drop(rotations);
    let _ = lane_task.await;
}

/// Whether a `rotate_network_key` request will wait out a rotation: it parses and names
/// a running radio that can rotate its key. Any other is refused at once, in order with
/// the other requests, instead of queueing behind rotations to be told so.
fn rotation_runs(ctx: &RequestContext, payload: &[u8]) -> bool {
    let Ok(Request::RotateNetworkKey { radio }) = parse("rotate_network_key", payload).request
    else {
        return false;
    };
    ctx.radios.iter().any(|r| {
        r.name == radio
            && r.capabilities.is_some_and(|c| c.key_rotation.is_some())
            && *r.state.borrow() == crate::model::RadioState::Up
    })
}

/// A request taken from the session and not carried out here: its topic, operation,
/// payload, whether it was retained, and where an MQTT 5 answer goes.
type Taken = (String, String, Vec<u8>, bool, Option<ReplyTo>);

/// Refuses a taken request with `code`: counted, audited and answered.
async fn refuse_taken(
    ctx: &RequestContext,
    outbound: &mpsc::Sender<Outbound>,
    (topic, operation, payload, retained, reply_to): &Taken,
    code: &'static str,
    message: &str,
) -> Result<(), mpsc::error::SendError<Outbound>> {
    ctx.status.count_request(code);
    count_refused_topic(&ctx.status, reply_to.as_ref(), &ctx.topics, ctx.v5);
    let r = refusal(
        &ctx.gateway_id,
        &ctx.topics,
        topic,
        operation,
        payload,
        *retained,
        reply_to.as_ref(),
        ctx.v5,
        code,
        message,
    );
    refuse(ctx, outbound, r).await
}

/// Records a refusal made here in the audit log, then hands its publishes over.
async fn refuse(
    ctx: &RequestContext,
    outbound: &mpsc::Sender<Outbound>,
    r: Refusal,
) -> Result<(), mpsc::error::SendError<Outbound>> {
    let gw = ctx.gateway_id.clone();
    let entry = r.audit;
    if let Err(e) = ctx
        .writer
        .write(move |c| store::record_audit(c, &gw, &entry).map(|_| ()))
        .await
    {
        tracing::error!(error = %e, "cannot write the audit record of a refused MQTT request");
    }
    for out in r.publish {
        outbound.send(out).await?;
    }
    Ok(())
}

/// Hands a request's response to the session and, for a retained request, the
/// empty retained publish that clears it from the broker (it was answered once;
/// left there it would come back on every reconnect).
async fn answer(
    outbound: &mpsc::Sender<Outbound>,
    response: Option<Outbound>,
    request_topic: &str,
    retained: bool,
) -> Result<(), mpsc::error::SendError<Outbound>> {
    if let Some(out) = response {
        outbound.send(out).await?;
    }
    if retained {
        outbound.send(clear_retained(request_topic)).await?;
    }
    Ok(())
}

/// The publish that removes the retained message on `topic` (MQTT: an empty
/// retained payload).
pub fn clear_retained(topic: &str) -> Outbound {
    Outbound {
        topic: topic.to_string(),
        payload: Vec::new(),
        retain: true,
        props: Props::default(),
    }
}

/// The level of the default topic prefixes (`fieldgate/<gateway id>`).
const FLEET_LEVEL: &str = "fieldgate/";

/// Longest Response Topic the gateway answers on.
const MAX_RESPONSE_TOPIC: usize = 1024;

/// Why a requester's Response Topic is not used (the answer then goes to
/// `<prefix>/response/<operation>`), or `None` when it is fine. A topic under the
/// gateway's own prefix is refused unless it is below `<prefix>/response/`: a
/// request must not be able to make the gateway publish on its device or status
/// topics.
pub fn response_topic_refusal(topic: &str, topics: &Topics) -> Option<&'static str> {
    if topic.is_empty() || topic.len() > MAX_RESPONSE_TOPIC {
        return Some("the response topic is empty or longer than 1024 bytes");
    }
    if topic.contains(['+', '#', '\0']) {
        return Some("the response topic holds a wildcard or NUL");
    }
    // `$SYS/...` and the like are the broker's: a publish there is refused by any
    // broker, and the refusal would read as the gateway's own ACL being wrong.
    if topic.starts_with('$') {
        return Some("the response topic is one of the broker's ($...)");
    }
    let own = format!("{}/", topics.prefix());
    if (topic.starts_with(&own) || topic == topics.prefix())
        && !topic.starts_with(&format!("{own}response/"))
    {
        return Some("the response topic is one of the gateway's own topics");
    }
    // `fieldgate/`, the level of the default prefixes, holds the fleet's gateways: an
    // answer there could be taken for another gateway's message (its status, its
    // answers to its own requesters).
    if topics.prefix().starts_with(FLEET_LEVEL)
        && topic.starts_with(FLEET_LEVEL)
        && !topic.starts_with(&own)
    {
        return Some("the response topic is under fieldgate/, where the fleet's gateways publish");
    }
    None
}

/// Counts an MQTT 5 answer whose Response Topic is not used (`response_topic_refused`
/// in `upstream.requests`, next to the request outcomes).
pub fn count_refused_topic(
    status: &UpstreamStatus,
    reply_to: Option<&ReplyTo>,
    topics: &Topics,
    v5: bool,
) {
    if v5 && reply_to.is_some_and(|r| response_topic_refusal(&r.topic, topics).is_some()) {
        status.count_request("response_topic_refused");
    }
}

/// Addresses an answer for MQTT 5: to the requester's Response Topic with its
/// Correlation Data when it gave one (the gateway's own topic kept as its fallback,
/// see [`fallback`]), with the outcome as user properties (`status`; on errors `code`
/// and `reason`, the reason string). On MQTT 3.1.1 the answer is left as it is.
pub fn address(
    mut out: Outbound,
    reply_to: Option<&ReplyTo>,
    topics: &Topics,
    v5: bool,
) -> Outbound {
    if !v5 {
        return out;
    }
    out.props.json = true;
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&out.payload) {
        if let Some(status) = body["status"].as_str() {
            out.props
                .user_properties
                .push(("status".into(), status.into()));
        }
        if let Some(code) = body["error"]["code"].as_str() {
            out.props.user_properties.push(("code".into(), code.into()));
        }
        if let Some(reason) = body["error"]["message"].as_str() {
            out.props
                .user_properties
                .push(("reason".into(), reason.into()));
        }
    }
    if let Some(r) = reply_to {
        match response_topic_refusal(&r.topic, topics) {
            None => {
                let own = std::mem::replace(&mut out.topic, r.topic.clone());
                out.props.response_fallback = Some(own);
                out.props.correlation_data = r.correlation_data.clone();
            }
            Some(why) => {
                tracing::info!(reason = why, "MQTT 5 response topic not used");
                out.props.correlation_data = r.correlation_data.clone();
                out.props
                    .user_properties
                    .push(("response_topic_refused".into(), why.into()));
            }
        }
    }
    out
}

/// The answer `out` on the gateway's own response topic, for when the broker refuses
/// it on the requester's Response Topic (`None` when it was not sent there). It keeps
/// the Correlation Data and says why in the user property `response_topic_refused`
/// (filled in by [`refused_there`]).
pub fn fallback(out: &mut Outbound) -> Option<Outbound> {
    let topic = out.props.response_fallback.take()?;
    Some(Outbound {
        topic,
        payload: out.payload.clone(),
        retain: out.retain,
        props: out.props.clone(),
    })
}

/// A fallback made ready to send: the broker's reason for refusing the answer on the
/// Response Topic, as the `response_topic_refused` user property.
pub fn refused_there(mut out: Outbound, reason: &str) -> Outbound {
    out.props.user_properties.push((
        "response_topic_refused".into(),
        format!("the broker refused the answer on the Response Topic ({reason})"),
    ));
    out
}
async fn read<T, F>(ctx: &RequestContext, f: F) -> Result<T, Rejection>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> store::StoreResult<T> + Send + 'static,
{
    let path = ctx.db_path.clone();
    tokio::task::spawn_blocking(move || {
        let conn = store::open_reader(&path)?;
        f(&conn)
    })
    .await
    .map_err(|e| Rejection::new("internal", format!("reader task failed: {e}")))?
    .map_err(|e| Rejection::new("store_error", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(body: serde_json::Value) -> Outbound {
        Outbound {
            topic: "p/response/set".into(),
            payload: body.to_string().into_bytes(),
            retain: false,
            props: Props::default(),
        }
    }

    #[test]
    fn mqtt5_answers_go_to_the_response_topic_unless_it_is_one_of_ours() {
        let topics = Topics::new("p");
        for ok in ["app/replies/1", "p/response/mine", "pp/x"] {
            assert_eq!(response_topic_refusal(ok, &topics), None, "{ok}");
        }
        for bad in [
            "",
            "a/+",
            "a/#",
            "a\0b",
            "p",
            "p/device/x/state",
            "p/status",
            "$SYS/broker/x",
            "$share/g/app/replies",
        ] {
            assert!(response_topic_refusal(bad, &topics).is_some(), "{bad:?}");
        }
        // With the default prefix, the level above it is the fleet's gateways.
        let fleet = Topics::new("fieldgate/gw1");
        for ok in ["fieldgate/gw1/response/x", "app/replies/1", "fieldgates/x"] {
            assert_eq!(response_topic_refusal(ok, &fleet), None, "{ok}");
        }
        for bad in [
            "fieldgate/gw2/response/set",
            "fieldgate/gw2/status",
            "fieldgate/x",
        ] {
            assert!(response_topic_refusal(bad, &fleet).is_some(), "{bad:?}");
        }
        let reply = ReplyTo {
            topic: "app/replies/1".into(),
            correlation_data: Some(vec![0, 255]),
        };
        let err = json!({"status": "error", "error": {"code": "busy", "message": "later"}});
        let out = address(answer(err.clone()), Some(&reply), &topics, true);
        assert_eq!(out.topic, "app/replies/1");
        assert_eq!(out.props.correlation_data, Some(vec![0, 255]));
        assert!(out.props.json);
        assert_eq!(
            out.props.user_properties,
            [
                ("status".to_string(), "error".to_string()),
                ("code".to_string(), "busy".to_string()),
                ("reason".to_string(), "later".to_string()),
            ]
        );
        // Refused: the usual topic, the correlation data, and why.
        let ours = ReplyTo {
            topic: "p/status".into(),
            correlation_data: None,
        };
        let out = address(answer(err.clone()), Some(&ours), &topics, true);
        assert_eq!(out.topic, "p/response/set");
        assert!(out
            .props
            .user_properties
            .iter()
            .any(|(k, _)| k == "response_topic_refused"));
        // MQTT 3.1.1: untouched.
        assert_eq!(
            address(answer(err.clone()), None, &topics, false),
            answer(err)
        );
    }
}
