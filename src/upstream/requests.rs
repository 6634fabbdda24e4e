//! Inbound requests from the cloud: `<prefix>/request/<operation>` in,
//! `<prefix>/response/<operation>` out.
//!
//! Owns parsing and validating requests (size limit, UTF-8, JSON, strict schemas
//! with unknown fields rejected, a correlation id), authorizing them against the
//! registry, routing them to the hub, the audit record every request gets, and the
//! response. It never touches the MQTT connection: the session hands it payloads
//! and publishes what it returns. Nothing here may panic on input.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::topics::{response_level, Topics};
use super::UpstreamStatus;
use crate::hub::{
    response_body, DeviceAction, DeviceAnswer, DeviceRequest, HubError, HubHandle, RequestOrigin,
    MAX_PERMIT_JOIN_SECONDS, MAX_REQUEST_TTL_S,
};
use crate::model::{now_rfc3339, DeviceId, Lifecycle, RadioState};
use crate::radio::RadioHandle;
use crate::store::audit::{AuditEntry, Outcome};
use crate::store::replay::{self, Seen};
use crate::store::{self, outbox, registry, Writer};

/// Largest request payload accepted (larger ones get `payload_too_large`).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// The limit for `rotate_client_cert`, which carries a certificate chain and key.
pub const MAX_ROTATION_REQUEST_BYTES: usize = 64 * 1024;
const MAX_CORRELATION_ID: usize = 128;
const MAX_CLIENT_ID: usize = 64;
/// How long a `get` of an awake device may take before it is answered `device_timeout`
/// (the radio driver gives up earlier and reports what it could read).
const REFRESH_WAIT: Duration = Duration::from_secs(20);

/// The operations the gateway answers.
pub const OPERATIONS: [&str; 11] = [
    "permit_join",
    "remove",
    "readmit",
    "set",
    "get",
    "policy",
    "health_check",
    "info",
    "rotate_client_cert",
    "install_code",
    "rotate_network_key",
];

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PermitJoinBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    radio: String,
    seconds: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    device: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    device: String,
    state: Map<String, Value>,
    /// Seconds to hold the request for a sleeping device.
    #[serde(default)]
    ttl_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    device: String,
    #[serde(default)]
    attributes: Option<Vec<String>>,
    #[serde(default)]
    ttl_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    version: u64,
    document: Map<String, Value>,
    /// Hex ed25519 signature over the canonical JSON of `document`.
    #[serde(default)]
    signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    cert_pem: String,
    key_pem: String,
}

/// A PEM private key: compared and cloned like a string, never printed.
#[derive(Clone, PartialEq)]
pub struct SecretPem(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem(<redacted>)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallCodeBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    action: InstallCodeAction,
    device: String,
    /// Hex digits of the code and its CRC (`add` only); never echoed.
    #[serde(default)]
    code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallCodeAction {
    Add,
    Remove,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RadioBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    radio: String,
}

/// A validated install code (code + CRC bytes): compared and cloned, never printed.
#[derive(Clone, PartialEq)]
pub struct SecretCode(pub zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SecretCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCode(<redacted>)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    PermitJoin {
        radio: String,
        seconds: u32,
    },
    Remove {
        device: DeviceId,
    },
    Readmit {
        device: DeviceId,
    },
    Set {
        device: DeviceId,
        state: Map<String, Value>,
        ttl_s: Option<u64>,
    },
    Get {
        device: DeviceId,
        attributes: Vec<String>,
        ttl_s: Option<u64>,
    },
    Policy {
        version: u64,
        document: Map<String, Value>,
        signature: Option<String>,
    },
    HealthCheck,
    Info,
    RotateClientCert {
        cert_pem: String,
        key_pem: SecretPem,
    },
    AddInstallCode {
        device: DeviceId,
        code: SecretCode,
    },
    RemoveInstallCode {
        device: DeviceId,
    },
    RotateNetworkKey {
        radio: String,
    },
}

impl Request {
    fn target(&self, gateway_id: &str) -> String {
        match self {
            Request::PermitJoin { radio, .. } | Request::RotateNetworkKey { radio } => {
                radio.clone()
            }
            Request::Remove { device }
            | Request::Readmit { device }
            | Request::Set { device, .. }
            | Request::Get { device, .. }
            | Request::AddInstallCode { device, .. }
            | Request::RemoveInstallCode { device } => device.to_string(),
            Request::Policy { .. }
            | Request::HealthCheck
            | Request::Info
            | Request::RotateClientCert { .. } => gateway_id.to_string(),
        }
    }
}

/// A request as parsed: who asked, with which correlation id, and what (or why not).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub correlation_id: Option<String>,
    pub client_id: Option<String>,
    pub request: Result<Request, Rejection>,
}

fn is_word(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

fn typed<T: DeserializeOwned>(v: Value) -> Result<T, Rejection> {
    serde_json::from_value(v).map_err(|e| Rejection::new("invalid_request", e.to_string()))
}

fn ttl(ttl_s: Option<u64>) -> Result<Option<u64>, Rejection> {
    match ttl_s {
        Some(t) if t == 0 || t > MAX_REQUEST_TTL_S => Err(Rejection::new(
            "invalid_request",
            format!("`ttl_s` must be between 1 and {MAX_REQUEST_TTL_S} seconds"),
        )),
        t => Ok(t),
    }
}

/// Like [`typed`], for bodies that carry a secret: serde's type errors quote the
/// offending value, so only the errors that name a field alone are passed on.
fn typed_secret<T: DeserializeOwned>(v: Value, schema: &str) -> Result<T, Rejection> {
    serde_json::from_value(v).map_err(|e| {
        let text = e.to_string();
        let message = if text.starts_with("unknown field") || text.starts_with("missing field") {
            format!("{text}; {schema}")
        } else {
            schema.to_string()
        };
        Rejection::new("invalid_request", message)
    })
}

/// A Zigbee device id with a real IEEE address (`zigbee:0x00124b0001abcdef`).
fn zigbee_device_id(raw: &str) -> Result<DeviceId, Rejection> {
    let ieee = raw
        .strip_prefix("zigbee:")
        .and_then(|a| a.parse::<fieldgate_zigbee::IeeeAddr>().ok())
        .ok_or_else(|| {
            Rejection::new(
                "bad_device_id",
                "`device` is not a Zigbee device id (expected zigbee:<IEEE address>, e.g. zigbee:0x00124b0001abcdef)",
            )
        })?;
    Ok(DeviceId::new(
        crate::config::Protocol::Zigbee,
        &ieee.to_string(),
    ))
}

fn device_id(raw: &str) -> Result<DeviceId, Rejection> {
    DeviceId::parse(raw).ok_or_else(|| {
        Rejection::new(
            "bad_device_id",
            "`device` is not a device id (expected <protocol>:<address>, e.g. zigbee:0x00124b0001abcdef)",
        )
    })
}

/// Parses and validates one request. Pure: no IO, never panics.
pub fn parse(operation: &str, payload: &[u8]) -> Parsed {
    let fail = |c: Option<String>, client: Option<String>, r: Rejection| Parsed {
        correlation_id: c,
        client_id: client,
        request: Err(r),
    };
    let max = if operation == "rotate_client_cert" {
        MAX_ROTATION_REQUEST_BYTES
    } else {
        MAX_REQUEST_BYTES
    };
    if payload.len() > max {
        return fail(
            None,
            None,
            Rejection::new(
                "payload_too_large",
                format!(
                    "{} bytes: `{}` requests are at most {max} bytes",
                    payload.len(),
                    response_level(operation),
                ),
            ),
        );
    }
    if payload.is_empty() {
        return fail(
            None,
            None,
            Rejection::new(
                "empty_payload",
                "the request has no payload: a JSON object is required",
            ),
        );
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        return fail(
            None,
            None,
            Rejection::new(
                "not_utf8",
                "the payload is not UTF-8 text: a JSON object is required",
            ),
        );
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                None,
                None,
                Rejection::new("bad_json", format!("the payload is not valid JSON: {e}")),
            )
        }
    };
    let Value::Object(obj) = &value else {
        return fail(
            None,
            None,
            Rejection::new("not_an_object", "the payload must be a JSON object"),
        );
    };
    let correlation_id = match obj.get("correlation_id") {
        None | Some(Value::Null) => {
            return fail(None, None, Rejection::new("missing_correlation_id", "`correlation_id` is required"))
        }
        Some(Value::String(s))
            if !s.is_empty()
                && s.chars().count() <= MAX_CORRELATION_ID
                && !s.chars().any(char::is_control) =>
        {
            s.clone()
        }
        Some(_) => {
            return fail(
                None,
                None,
                Rejection::new(
                    "invalid_correlation_id",
                    format!("`correlation_id` must be a string of 1 to {MAX_CORRELATION_ID} printable characters"),
                ),
            )
        }
    };
    let cid = Some(correlation_id.clone());
    let client_id = match obj.get("client_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_word(s, MAX_CLIENT_ID) => Some(s.clone()),
        Some(_) => {
            return fail(
                cid,
                None,
                Rejection::new(
                    "invalid_request",
                    format!(
                    "`client_id` must be 1 to {MAX_CLIENT_ID} characters of A-Z a-z 0-9 _ - . :"
                ),
                ),
            )
        }
    };
    let request = parse_operation(operation, value);
    Parsed {
        correlation_id: cid,
        client_id,
        request,
    }
}

fn parse_operation(operation: &str, value: Value) -> Result<Request, Rejection> {
    match operation {
        "permit_join" => {
            let b: PermitJoinBody = typed(value)?;
            if b.seconds == 0 || b.seconds > MAX_PERMIT_JOIN_SECONDS {
                return Err(Rejection::new(
                    "invalid_request",
                    format!("`seconds` must be between 1 and {MAX_PERMIT_JOIN_SECONDS}"),
                ));
            }
            if !is_word(&b.radio, 32) {
                return Err(Rejection::new(
                    "unknown_radio",
                    "`radio` is not a radio name",
                ));
            }
            Ok(Request::PermitJoin {
                radio: b.radio,
                seconds: b.seconds,
            })
        }
        "remove" => {
            let b: DeviceBody = typed(value)?;
            Ok(Request::Remove {
                device: device_id(&b.device)?,
            })
        }
        "readmit" => {
            let b: DeviceBody = typed(value)?;
            Ok(Request::Readmit {
                device: device_id(&b.device)?,
            })
        }
        "set" => {
            let b: SetBody = typed(value)?;
            let device = device_id(&b.device)?;
            if b.state.is_empty() || b.state.len() > 16 {
                return Err(Rejection::new(
                    "invalid_request",
                    "`state` must have 1 to 16 attributes",
                ));
            }
            for (k, v) in &b.state {
                let scalar = match v {
                    Value::Bool(_) | Value::Number(_) => true,
                    Value::String(s) => s.len() <= 64,
                    _ => false,
                };
                if !is_word(k, 32) || !scalar {
                    return Err(Rejection::new(
                        "invalid_request",
                        format!("`state.{}`: attribute names are short words and values are booleans, numbers or short strings", k.chars().take(32).collect::<String>()),
                    ));
                }
            }
            Ok(Request::Set {
                device,
                state: b.state,
                ttl_s: ttl(b.ttl_s)?,
            })
        }
        "get" => {
            let b: GetBody = typed(value)?;
            let device = device_id(&b.device)?;
            let attributes = b.attributes.unwrap_or_default();
            if attributes.len() > 32 || !attributes.iter().all(|a| is_word(a, 32)) {
                return Err(Rejection::new(
                    "invalid_request",
                    "`attributes` must be at most 32 short attribute names",
                ));
            }
            Ok(Request::Get {
                device,
                attributes,
                ttl_s: ttl(b.ttl_s)?,
            })
        }
        "policy" => {
            let b: PolicyBody = typed(value)?;
            if b.version == 0 {
                return Err(Rejection::new(
                    "invalid_request",
                    "`version` must be at least 1",
                ));
            }
            if b.document.get("version").and_then(Value::as_u64) != Some(b.version) {
                return Err(Rejection::new(
                    "invalid_request",
                    "`version` must equal the document's own `version`",
                ));
            }
            Ok(Request::Policy {
                version: b.version,
                document: b.document,
                signature: b.signature,
            })
        }
        "health_check" => {
            typed::<EmptyBody>(value)?;
            Ok(Request::HealthCheck)
        }
        "info" => {
            typed::<EmptyBody>(value)?;
            Ok(Request::Info)
        }
        "rotate_client_cert" => {
            let b: RotateBody = typed(value)?;
            if b.cert_pem.is_empty() || b.key_pem.is_empty() {
                return Err(Rejection::new(
                    "invalid_request",
                    "`cert_pem` and `key_pem` must not be empty",
                ));
            }
            Ok(Request::RotateClientCert {
                cert_pem: b.cert_pem,
                key_pem: SecretPem(zeroize::Zeroizing::new(b.key_pem)),
            })
        }
        "install_code" => {
            let b: InstallCodeBody = typed_secret(
                value,
                "`install_code` takes `action` (\"add\" or \"remove\"), `device` (zigbee:<IEEE address>) and, for `add`, `code` (a string of hex digits)",
            )?;
            let device = zigbee_device_id(&b.device)?;
            match (b.action, b.code) {
                (InstallCodeAction::Add, Some(text)) => {
                    let text = zeroize::Zeroizing::new(text);
                    let code = fieldgate_zigbee::install_code::InstallCode::parse(&text)
                        .map_err(|e| Rejection::new("invalid_install_code", e.to_string()))?;
                    Ok(Request::AddInstallCode {
                        device,
                        code: SecretCode(zeroize::Zeroizing::new(code.as_bytes().to_vec())),
                    })
                }
                (InstallCodeAction::Add, None) => {
                    Err(Rejection::new("invalid_request", "`add` needs `code`"))
                }
                (InstallCodeAction::Remove, None) => Ok(Request::RemoveInstallCode { device }),
                (InstallCodeAction::Remove, Some(_)) => Err(Rejection::new(
                    "invalid_request",
                    "`remove` takes no `code`",
                )),
            }
        }
        "rotate_network_key" => {
            let b: RadioBody = typed(value)?;
            if !is_word(&b.radio, 32) {
                return Err(Rejection::new(
                    "unknown_radio",
                    "`radio` is not a radio name",
                ));
            }
            Ok(Request::RotateNetworkKey { radio: b.radio })
        }
        other => Err(Rejection::new(
            "unknown_operation",
            format!(
                "unknown operation `{}`: one of {}",
                other.chars().take(32).collect::<String>(),
                OPERATIONS.join(", ")
            ),
        )),
    }
}

/// Something for the session to publish (QoS 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// What the session hands the request task.
#[derive(Debug)]
pub enum Inbound {
    Request {
        operation: String,
        payload: Vec<u8>,
        retained: bool,
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
    let (rotations, mut lane) = mpsc::channel::<(String, Vec<u8>, bool)>(16);
    {
        let (ctx, outbound) = (ctx.clone(), outbound.clone());
        tokio::spawn(async move {
            while let Some((operation, payload, retained)) = lane.recv().await {
                if let Some(out) = handle(&ctx, &operation, &payload, retained).await {
                    if outbound.send(out).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
    while let Some(item) = inbound.recv().await {
        let out = match item {
            Inbound::PublishInfo => match info(&ctx).await {
                Ok(data) => Outbound {
                    topic: ctx.topics.info(),
                    payload: data.to_string().into_bytes(),
                    retain: true,
                },
                Err(e) => {
                    tracing::warn!(code = e.code, error = %e.message, "cannot build the gateway info");
                    continue;
                }
            },
            Inbound::Request {
                operation,
                payload,
                retained,
            } if operation == "rotate_network_key" => {
                if rotations
                    .send((operation, payload, retained))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
            Inbound::Request {
                operation,
                payload,
                retained,
            } => match handle(&ctx, &operation, &payload, retained).await {
                Some(out) => out,
                // Answered through the outbox (a request held for a sleeping device).
                None => continue,
            },
        };
        if outbound.send(out).await.is_err() {
            break;
        }
    }
}

/// What a carried-out request answers.
enum Reply {
    Data(Value),
    /// Held for a sleeping device; the `queued` response (this payload) is in the outbox.
    Queued(Vec<u8>),
}

/// Validates, authorizes, executes and audits one request; returns its response, or
/// `None` when the response went into the outbox instead.
async fn handle(
    ctx: &RequestContext,
    operation: &str,
    payload: &[u8],
    retained: bool,
) -> Option<Outbound> {
    let parsed = parse(operation, payload);
    let level = response_level(operation).to_string();
    let actor = format!("mqtt:{}", parsed.client_id.as_deref().unwrap_or("cloud"));
    let key = parsed.correlation_id.clone().map(|c| (level.clone(), c));
    let respond = |payload: Vec<u8>| Outbound {
        topic: ctx.topics.response(operation),
        payload,
        retain: false,
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
                ctx.gateway_id.to_string(),
                Outcome::Refused,
                json!({"correlation_id": parsed.correlation_id, "code": "duplicate", "retained": retained}),
            );
            let _ = audit(ctx, entry).await;
            return Some(respond(cached));
        }
    }

    let target = match &parsed.request {
        Ok(r) => r.target(&ctx.gateway_id),
        Err(_) => ctx.gateway_id.to_string(),
    };
    let result = match parsed.request.clone() {
        Ok(req) => execute(ctx, req, &actor, parsed.correlation_id.clone()).await,
        Err(r) => Err(r),
    };
    let (status, outcome, code) = match &result {
        Ok(Reply::Queued(_)) => ("queued", Outcome::Accepted, None),
        Ok(Reply::Data(_)) => ("ok", Outcome::Accepted, None),
        Err(r) => ("error", r.outcome(), Some(r.code)),
    };
    ctx.status.count_request(code.unwrap_or(status));
    let details = json!({"correlation_id": parsed.correlation_id, "status": status, "code": code, "retained": retained});
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

async fn execute(
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
        Request::Remove { device } => {
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
    let (ob, counts) = read(ctx, |c| Ok((outbox::stats(c)?, registry::counts(c)?))).await?;
    let mut devices = Map::new();
    let mut total = 0u64;
    for (k, v) in counts {
        total += v;
        devices.insert(k, json!(v));
    }
    devices.insert("total".into(), json!(total));
    let up = ctx.status.snapshot();
    Ok(json!({
        "gateway": &*ctx.gateway_id,
        "version": env!("CARGO_PKG_VERSION"),
        "ts": now_rfc3339(),
        "radios": radios_json(ctx),
        "devices": devices,
        "outbox": ob,
        "upstream": {"broker": up.broker, "client_id": up.client_id, "delivered": up.delivered},
    }))
}

async fn health(ctx: &RequestContext) -> Result<Value, Rejection> {
    let store_ok = ctx.writer.write(|_| Ok(())).await.is_ok();
    let readable = read(ctx, |c| {
        Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)
    })
    .await
    .is_ok();
    let total = ctx.radios.len();
    let up = ctx
        .radios
        .iter()
        .filter(|r| *r.state.borrow() == RadioState::Up)
        .count();
    let alarm = ctx.status.snapshot().alarm;
    Ok(json!({
        "healthy": store_ok && readable && alarm.is_none(),
        "store": if store_ok && readable { "ok" } else { "failing" },
        "radios": {"up": up, "total": total},
        "alarm": alarm,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn code(op: &str, payload: &[u8]) -> &'static str {
        match parse(op, payload).request {
            Ok(_) => "ok",
            Err(r) => r.code,
        }
    }

    #[test]
    fn valid_requests_parse() {
        let p = parse(
            "permit_join",
            br#"{"correlation_id":"c1","radio":"zb0","seconds":60}"#,
        );
        assert_eq!(p.correlation_id.as_deref(), Some("c1"));
        assert_eq!(
            p.request,
            Ok(Request::PermitJoin {
                radio: "zb0".into(),
                seconds: 60
            })
        );
        let p = parse("info", br#"{"correlation_id":"c2","client_id":"ops-1"}"#);
        assert_eq!(p.client_id.as_deref(), Some("ops-1"));
        assert_eq!(p.request, Ok(Request::Info));
        assert_eq!(
            code("remove", br#"{"correlation_id":"c","device":"zigbee:0x1"}"#),
            "ok"
        );
        assert_eq!(
            code(
                "set",
                br#"{"correlation_id":"c","device":"zigbee:0x1","state":{"on":true}}"#
            ),
            "ok"
        );
        assert_eq!(
            code("get", br#"{"correlation_id":"c","device":"zigbee:0x1"}"#),
            "ok"
        );
        assert_eq!(
            code(
                "policy",
                br#"{"correlation_id":"c","version":3,"document":{"version":3}}"#
            ),
            "ok"
        );
    }

    #[test]
    fn install_code_and_rotation_requests_parse_strictly_without_echoing_the_code() {
        let spec = "83FED3407A939723A5C639B26916D505C3B5";
        let p = parse(
            "install_code",
            format!(r#"{{"correlation_id":"c","action":"add","device":"zigbee:0x00124B0001ABCDEF","code":"{spec}"}}"#).as_bytes(),
        );
        let Ok(Request::AddInstallCode {
            device,
            code: sealed,
        }) = &p.request
        else {
            panic!("{:?}", p.request);
        };
        assert_eq!(device.as_str(), "zigbee:0x00124b0001abcdef");
        assert_eq!(sealed.0.len(), 18);
        assert!(!format!("{:?}", p.request).contains("131"));
        assert_eq!(
            parse(
                "install_code",
                br#"{"correlation_id":"c","action":"remove","device":"zigbee:0x00124b0001abcdef"}"#
            )
            .request,
            Ok(Request::RemoveInstallCode {
                device: DeviceId::parse("zigbee:0x00124b0001abcdef").unwrap()
            })
        );
        assert_eq!(
            parse(
                "rotate_network_key",
                br#"{"correlation_id":"c","radio":"zb0"}"#
            )
            .request,
            Ok(Request::RotateNetworkKey {
                radio: "zb0".into()
            })
        );
        let cases: Vec<(String, &str)> = vec![
            (format!(r#"{{"correlation_id":"c","action":"add","device":"zigbee:0x00124b0001abcdef","code":"{}"}}"#, &spec[..35]), "invalid_install_code"),
            (r#"{"correlation_id":"c","action":"add","device":"zigbee:0x00124b0001abcdef","code":83123}"#.into(), "invalid_request"),
            (r#"{"correlation_id":"c","action":"add","device":"zigbee:0x00124b0001abcdef","code":["83FED340"]}"#.into(), "invalid_request"),
            (r#"{"correlation_id":"c","action":"add","device":"zigbee:0x00124b0001abcdef"}"#.into(), "invalid_request"),
            (format!(r#"{{"correlation_id":"c","action":"remove","device":"zigbee:0x00124b0001abcdef","code":"{spec}"}}"#), "invalid_request"),
            (format!(r#"{{"correlation_id":"c","action":"add","device":"zigbee:nope","code":"{spec}"}}"#), "bad_device_id"),
            (format!(r#"{{"correlation_id":"c","action":"add","device":"lora:0x00124b0001abcdef","code":"{spec}"}}"#), "bad_device_id"),
            (format!(r#"{{"correlation_id":"c","action":"add","device":"zigbee:0x00124b0001abcdef","code":"{spec}","extra":1}}"#), "invalid_request"),
            (r#"{"correlation_id":"c","action":"replace","device":"zigbee:0x00124b0001abcdef"}"#.into(), "invalid_request"),
        ];
        for (body, want) in cases {
            let r = parse("install_code", body.as_bytes()).request.unwrap_err();
            assert_eq!(r.code, want, "{body}: {r:?}");
            let upper = r.message.to_ascii_uppercase();
            assert!(
                !upper.contains("83FED340") && !upper.contains("83123"),
                "{body}: {}",
                r.message
            );
        }
        for body in [
            br#"{"correlation_id":"c"}"#.as_slice(),
            br#"{"correlation_id":"c","radio":"zb0","key":"00"}"#,
            br#"{"correlation_id":"c","radio":7}"#,
        ] {
            assert_eq!(code("rotate_network_key", body), "invalid_request");
        }
        assert_eq!(
            code(
                "rotate_network_key",
                br#"{"correlation_id":"c","radio":"zb0/#"}"#
            ),
            "unknown_radio"
        );
    }

    #[test]
    fn malformed_requests_get_codes() {
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        let cases: Vec<(&str, &[u8], &str)> = vec![
            ("info", b"", "empty_payload"),
            ("info", b"\xff\xfe\x00garbage", "not_utf8"),
            ("info", b"{not json", "bad_json"),
            ("info", b"[1,2]", "not_an_object"),
            ("info", b"{}", "missing_correlation_id"),
            ("info", br#"{"correlation_id":7}"#, "invalid_correlation_id"),
            (
                "info",
                br#"{"correlation_id":""}"#,
                "invalid_correlation_id",
            ),
            (
                "info",
                br#"{"correlation_id":"c","extra":1}"#,
                "invalid_request",
            ),
            ("nope", br#"{"correlation_id":"c"}"#, "unknown_operation"),
            (
                "permit_join",
                br#"{"correlation_id":"c","radio":"zb0","seconds":"60"}"#,
                "invalid_request",
            ),
            (
                "permit_join",
                br#"{"correlation_id":"c","radio":"zb0","seconds":0}"#,
                "invalid_request",
            ),
            (
                "permit_join",
                br#"{"correlation_id":"c","radio":"zb0","seconds":-5}"#,
                "invalid_request",
            ),
            (
                "permit_join",
                br#"{"correlation_id":"c","seconds":5}"#,
                "invalid_request",
            ),
            (
                "remove",
                br#"{"correlation_id":"c","device":"bogus"}"#,
                "bad_device_id",
            ),
            (
                "set",
                br#"{"correlation_id":"c","device":"zigbee:0x1","state":{}}"#,
                "invalid_request",
            ),
            (
                "set",
                br#"{"correlation_id":"c","device":"zigbee:0x1","state":{"on":{"x":1}}}"#,
                "invalid_request",
            ),
            (
                "policy",
                br#"{"correlation_id":"c","version":0,"document":{}}"#,
                "invalid_request",
            ),
            ("info", &big, "payload_too_large"),
        ];
        for (op, payload, want) in cases {
            assert_eq!(
                code(op, payload),
                want,
                "{op} {:?}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
