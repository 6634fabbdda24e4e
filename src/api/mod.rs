//! The local technician API: HTTP/1.1 + JSON on a Unix socket.
//!
//! Access is guarded by the socket's permissions (0660, group from config). Every
//! request, refused ones included, is written to the audit log with the caller's
//! uid/gid/pid (SO_PEERCRED) before the response leaves. Handlers only read the
//! store and send requests to the hub; they never write the store themselves.

mod adopt;
pub mod audit_cli;
mod audit_log;
pub mod cli;
pub mod cli_adopt;
pub mod cli_block;
pub mod cli_pair;
pub mod cli_radio;
pub mod client;
mod commands;
mod listen;
mod lora;
mod serve;

pub use listen::{open_listener, refuse_pending, ApiListener, BindError};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::UnixListener;

use crate::hub::{HubError, HubHandle};
use crate::model::{DeviceId, Lifecycle, RadioState};
use crate::radio::RadioHandle;
use crate::store::audit::{AuditEntry, Outcome};
use crate::store::{self, outbox, registry, Writer, WriterStats};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The caller, from SO_PEERCRED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl PeerCred {
    pub fn actor(&self) -> String {
        match self.pid {
            Some(pid) => format!("local:uid={},gid={},pid={pid}", self.uid, self.gid),
            None => format!("local:uid={},gid={}", self.uid, self.gid),
        }
    }
}

#[derive(Debug, Default)]
pub struct ApiStats {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    /// Requests refused because their audit record could not be written.
    pub audit_unavailable: AtomicU64,
    /// Connection handling: accepted, evicted when full, rate-limited requests.
    pub connections: Arc<serve::ConnectionStats>,
}

#[derive(Clone)]
pub struct ApiState {
    pub gateway_id: Arc<str>,
    pub db_path: PathBuf,
    pub writer: Writer,
    pub hub: HubHandle,
    pub radios: Arc<Vec<RadioHandle>>,
    pub started: Instant,
    pub stats: Arc<ApiStats>,
    /// The MQTT uplink's status, when `[upstream]` is configured.
    pub upstream: Option<Arc<crate::upstream::UpstreamStatus>>,
    /// Flips when the daemon stops: requests that wait (`GET /v1/audit?wait_s=`)
    /// answer then. They run on tasks of their own and hold the store until they end,
    /// so one left waiting would hold the daemon's stop for as long.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// An error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// Well-formed, but out of range.
    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        (self.status, body).into_response()
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        let status = match e {
            HubError::UnknownRadio(_) | HubError::UnknownDevice(_) | HubError::NoInstallCode(_) => {
                StatusCode::NOT_FOUND
            }
            HubError::RadioUnavailable(..) | HubError::AlreadyDecommissioned(_) => {
                StatusCode::CONFLICT
            }
            HubError::DeviceDecommissioned(_) | HubError::DeviceQuarantined(_) => {
                StatusCode::CONFLICT
            }
            HubError::Invalid(_) | HubError::PolicyRefused(_) | HubError::NotSupported(_) => {
                StatusCode::BAD_REQUEST
            }
            HubError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            HubError::ShuttingDown | HubError::RadioBusy(_) | HubError::AuditUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        ApiError::internal(e.to_string())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Runs a read on its own connection, off the async threads.
async fn read<T, F>(state: &ApiState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> store::StoreResult<T> + Send + 'static,
{
    let path = state.db_path.clone();
    tokio::task::spawn_blocking(move || {
        let conn = store::open_reader(&path)?;
        f(&conn)
    })
    .await
    .map_err(|e| ApiError::internal(format!("reader task failed: {e}")))?
    .map_err(ApiError::from)
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    // Every body is an object; serde would also fill a struct from an array (`[]`).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body: {}",
            without_values(&without_type_names(&e.to_string()))
        ))
    })
}

/// A serde message without the value it quotes (`invalid type: integer `1234…``): the
/// value may be a secret sent with the wrong JSON type (an install code or key as a
/// number). The kind of value and what was expected stay.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = ["invalid type: ", "invalid value: "]
        .iter()
        .filter_map(|m| rest.find(m).map(|i| i + m.len()))
        .min()
    {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail.find(", expected").unwrap_or(tail.len());
        let kind = &tail[..end];
        let kind = kind.find(['`', '"']).map_or(kind, |q| &kind[..q]);
        out.push_str(kind.trim_end());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A serde message without the daemon's own type names (`expected struct
/// PermitJoinBody`): they mean nothing to a caller.
fn without_type_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("struct ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "struct ".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push_str("a JSON object");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// At most the first 64 characters of what a caller sent, to quote it back.
fn quoted(raw: &str) -> String {
    match raw.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &raw[..at]),
        None => raw.to_string(),
    }
}

/// The device a path names: by its id, or by its friendly name (as over MQTT).
async fn device_id(s: &ApiState, raw: &str) -> Result<DeviceId, ApiError> {
    if let Some(id) = DeviceId::parse(raw) {
        return Ok(id);
    }
    if !store::names::valid(raw) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_device_id",
            format!("`{}` is neither a device id (expected <protocol>:<address>, e.g. zigbee:0x00124b0001abcdef) nor a friendly name", quoted(raw)),
        ));
    }
    let name = raw.to_string();
    read(s, move |c| store::names::resolve(c, &name))
        .await?
        .ok_or_else(|| HubError::UnknownDevice(raw.to_string()).into())
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RadioStatus {
    pub name: String,
    pub protocol: String,
    pub port: String,
    #[serde(flatten)]
    pub state: RadioState,
    /// The driver's counters since the daemon started.
    #[serde(default)]
    pub counters: crate::radio::RadioCountersSnapshot,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReply {
    pub gateway_id: String,
    pub version: String,
    pub uptime_s: u64,
    pub radios: Vec<RadioStatus>,
    pub devices: serde_json::Map<String, serde_json::Value>,
    pub outbox: outbox::OutboxStats,
    pub store: serde_json::Value,
    pub api: serde_json::Value,
    /// Absent when no `[upstream]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::upstream::UpstreamSnapshot>,
    /// Stored secrets (count) and those due for rotation.
    #[serde(default)]
    pub credentials: serde_json::Value,
    /// Requests held for sleeping devices.
    #[serde(default)]
    pub held_requests: HeldRequestsStatus,
    /// The audit chain head (seq, hash, records), its seals and the
    /// `audit_chain_broken` alarm (null when not raised).
    #[serde(default)]
    pub audit: serde_json::Value,
}

/// The `held_requests` of `GET /v1/status`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HeldRequestsStatus {
    pub total: u64,
    /// Waiting for their device to wake.
    pub queued: u64,
    /// Handed to the radio, waiting for its result.
    pub sent: u64,
    pub oldest_created_at: Option<String>,
    /// Age of the oldest held request, in milliseconds.
    pub oldest_age_ms: Option<u64>,
}

impl From<store::requests::HeldSummary> for HeldRequestsStatus {
    fn from(h: store::requests::HeldSummary) -> Self {
        let oldest_age_ms = h
            .oldest_created_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .map(|t| {
                std::time::SystemTime::now()
                    .duration_since(t)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0)
            });
        HeldRequestsStatus {
            total: h.total,
            queued: h.queued,
            sent: h.sent,
            oldest_created_at: h.oldest_created_at,
            oldest_age_ms,
        }
    }
}

/// One request held for a sleeping device, as `GET /v1/devices/{id}` shows it: an
/// explicit list of fields, so nothing added to the stored row leaks by default.
#[derive(Debug, Serialize, Deserialize)]
pub struct HeldRequestInfo {
    pub id: i64,
    /// `set` or `get`.
    pub operation: String,
    pub command: serde_json::Value,
    /// `mqtt` or `api`.
    pub origin: String,
    pub correlation_id: Option<String>,
    /// `queued` (waiting for the device to wake) or `sent` (waiting for the radio).
    pub state: String,
    pub created_at: String,
    pub expires_at: String,
}

impl From<store::requests::PendingRequest> for HeldRequestInfo {
    fn from(r: store::requests::PendingRequest) -> Self {
        HeldRequestInfo {
            id: r.id,
            operation: r.operation,
            command: r.command,
            origin: r.origin,
            correlation_id: r.correlation_id,
            state: r.state,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

/// `GET /v1/devices/{id}`: the registry entry and the requests held for it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: registry::Device,
    pub held_requests: Vec<HeldRequestInfo>,
}

async fn status(State(s): State<ApiState>) -> ApiResult<StatusReply> {
    let (counts, ob, creds, held, mut audit_head) = read(&s, |c| {
        Ok((
            registry::counts(c)?,
            outbox::stats(c)?,
            credential_status(c)?,
            store::requests::summary(c)?,
            store::audit_guard::summary(c)?,
        ))
    })
    .await?;
    audit_head["alarm"] = json!(s
        .writer
        .stats()
        .audit_alarm()
        .map(|why| json!({"name": store::audit_guard::ALARM, "reason": why})));
    // Every lifecycle is there, zero or not, so a script can read any of them.
    let mut devices: serde_json::Map<String, serde_json::Value> = [
        Lifecycle::Pending,
        Lifecycle::Active,
        Lifecycle::Quarantined,
        Lifecycle::Decommissioned,
    ]
    .iter()
    .map(|l| (l.as_str().to_string(), json!(0)))
    .collect();
    let mut total = 0;
    for (k, v) in counts {
        total += v;
        devices.insert(k, json!(v));
    }
    devices.insert("total".into(), json!(total));
    let ws: &WriterStats = s.writer.stats();
    Ok(Json(StatusReply {
        gateway_id: s.gateway_id.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: s.started.elapsed().as_secs(),
        radios: s
            .radios
            .iter()
            .map(|r| RadioStatus {
                name: r.name.clone(),
                protocol: r.protocol.to_string(),
                port: r.port.to_string(),
                state: r.state.borrow().clone(),
                counters: r.counters.snapshot(),
            })
            .collect(),
        devices,
        outbox: ob,
        store: json!({
            "transactions": ws.transactions.load(Ordering::Relaxed),
            "operations": ws.operations.load(Ordering::Relaxed),
            "failed_operations": ws.failed_operations.load(Ordering::Relaxed),
            "failed_commits": ws.failed_commits.load(Ordering::Relaxed),
            "audit_mark_failures": ws.audit_mark_failures.load(Ordering::Relaxed),
            "disk": ws.disk.snapshot(),
        }),
        audit: audit_head,
        api: json!({
            "requests": s.stats.requests.load(Ordering::Relaxed),
            "refused": s.stats.refused.load(Ordering::Relaxed),
            "failed": s.stats.failed.load(Ordering::Relaxed),
            "audit_unavailable": s.stats.audit_unavailable.load(Ordering::Relaxed),
            "connections_accepted": s.stats.connections.accepted.load(Ordering::Relaxed),
            "connections_evicted": s.stats.connections.evicted.load(Ordering::Relaxed),
            "rate_limited": s.stats.connections.rate_limited.load(Ordering::Relaxed),
            "accept_errors": s.stats.connections.accept_errors.load(Ordering::Relaxed),
        }),
        upstream: s.upstream.as_ref().map(|u| u.snapshot()),
        credentials: creds,
        held_requests: held.into(),
    }))
}

/// How many secrets are stored and which are due for rotation under the active
/// policy (metadata only: never a value).
fn credential_status(c: &rusqlite::Connection) -> store::StoreResult<serde_json::Value> {
    let all = store::credentials::list(c, None)?;
    let days = store::policies::active(c)?
        .and_then(|p| p.document["credentials"]["rotate_after_days"].as_u64());
    let due = match days {
        Some(d) => store::credentials::due_for_rotation(
            c,
            std::time::Duration::from_secs(d * 86_400),
            std::time::SystemTime::now(),
        )?,
        None => Vec::new(),
    };
    Ok(json!({"total": all.len(), "rotate_after_days": days, "due_for_rotation": due}))
}

/// How much of the device list is read ahead of the client: chunks of this size,
/// at most [`LIST_CHUNKS_AHEAD`] of them queued.
const LIST_CHUNK: usize = 64 * 1024;
const LIST_CHUNKS_AHEAD: usize = 2;
/// A client that takes nothing for this long is given up on, so a stalled reader
/// cannot hold the store's read snapshot (and the WAL behind it) open.
const LIST_STALL: Duration = Duration::from_secs(30);

/// Refuses filter values that can match nothing because they are not values at all
/// (a typo would otherwise read as "no such devices"), and puts `since` in the form
/// the registry keeps times in, so that it compares as the instant it names.
fn check_device_filter(f: &mut registry::DeviceFilter) -> Result<(), ApiError> {
    use crate::config::Protocol;
    if let Some(l) = f.lifecycle.as_deref() {
        if crate::model::Lifecycle::parse(l).is_none() {
            return Err(ApiError::bad_request(format!(
                "`lifecycle` is one of pending, active, quarantined, decommissioned, not `{}`",
                quoted(l)
            )));
        }
    }
    if let Some(p) = f.protocol.as_deref() {
        if Protocol::parse(p).is_none() {
            let known: Vec<&str> = Protocol::ALL.iter().map(|p| p.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "`protocol` is one of {}, not `{}`",
                known.join(", "),
                quoted(p)
            )));
        }
    }
    if let Some(since) = f.since.as_deref() {
        let t = crate::model::parse_rfc3339(since).ok_or_else(|| {
            ApiError::bad_request(
                "`since` is an RFC 3339 time, e.g. 2026-12-07T01:00:00Z or 2026-12-07T02:00:00+01:00",
            )
        })?;
        f.since = Some(crate::model::rfc3339(t));
    }
    Ok(())
}

async fn list_devices(
    State(s): State<ApiState>,
    q: Result<Query<registry::DeviceFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(mut filter) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_device_filter(&mut filter)?;
    // Streamed from the store as rows are read: a registry of 10,000 devices is ~5 MB
    // of JSON, and holding it whole (then keeping what the allocator kept of it) is
    // what a list used to cost the daemon's RSS.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<store::StoreResult<Vec<u8>>>(LIST_CHUNKS_AHEAD);
    let path = s.db_path.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let send = |item| {
            matches!(
                rt.block_on(tokio::time::timeout(LIST_STALL, tx.send(item))),
                Ok(Ok(()))
            )
        };
        let listed = store::open_reader(&path).and_then(|conn| {
            registry::list_json_chunks(&conn, &filter, LIST_CHUNK, |c| send(Ok(c)))
        });
        if let Err(e) = listed {
            send(Err(e));
        }
        // The list's reader cache, rows and JSON were freed on this thread.
        crate::memory::release_free();
    });
    // The first chunk decides the status: an error before any row is an error answer;
    // one after the first bytes were sent can only cut the body short.
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ApiError::internal("the device list ended before it began")),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?.map(Bytes::from).map_err(|e| {
            tracing::warn!(error = %e, "device list cut short");
            std::io::Error::other(e.to_string())
        });
        Some((item, rx))
    });
    let body = futures_util::stream::once(async move { Ok(Bytes::from(first)) }).chain(rest);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

async fn get_device(
    State(s): State<ApiState>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<DeviceDetail> {
    let id = device_id(&s, &raw).await?;
    let id2 = id.clone();
    read(&s, move |c| {
        let Some(device) = registry::get(c, &id2)? else {
            return Ok(None);
        };
        let held = store::requests::for_device(c, id2.as_str())?;
        Ok(Some(DeviceDetail {
            device,
            held_requests: held.into_iter().map(HeldRequestInfo::from).collect(),
        }))
    })
    .await?
    .map(Json)
    .ok_or_else(|| HubError::UnknownDevice(id.to_string()).into())
}

async fn delete_device(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<crate::hub::Decommissioned> {
    let id = device_id(&s, &raw).await?;
    Ok(Json(s.hub.decommission(id, peer.actor()).await?))
}

async fn block_device(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<crate::hub::Blocked> {
    let id = device_id(&s, &raw).await?;
    // A block may name a device never seen, so its address is checked against the form
    // its protocol's devices have: a mistyped one would block nothing.
    if !id.well_formed() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_device_id",
            format!(
                "`{}` is not an address a {} device can have",
                quoted(&raw),
                id.protocol().map_or("", |p| p.as_str())
            ),
        ));
    }
    Ok(Json(s.hub.block(id, peer.actor()).await?))
}

async fn readmit_device(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<crate::hub::Readmitted> {
    let id = device_id(&s, &raw).await?;
    Ok(Json(s.hub.readmit(id, peer.actor()).await?))
}

/// The radio's network as open-coordinator-backup JSON. It holds the network key: only the
/// local technician gets it (socket 0660), the access is audited by the hub with its outcome
/// and by the request log, and the answer is marked `Cache-Control: no-store`.
async fn radio_backup(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(radio): UrlPath<String>,
    method: Method,
) -> Result<Response, ApiError> {
    // A HEAD would export the network key (and audit that) to show nobody anything.
    if method == Method::HEAD {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "HEAD is not allowed on a radio's backup (it would export the network key); use GET",
        ));
    }
    let backup = s.hub.backup(radio, peer.actor()).await?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(backup),
    )
        .into_response())
}

/// Largest restore document: a 512 KiB controller image as hex, with its description.
pub const MAX_RESTORE_BODY: usize = 1100 * 1024;

/// `POST /v1/radios/{name}/restore`: writes a backup document (as `GET .../backup` gave it)
/// back onto the radio, replacing its network. The hub audits it (never the document); the
/// driver refuses a document that does not fit the radio before writing anything.
async fn radio_restore(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(radio): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let document: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a backup document: {e}")))?;
    if !document.is_object() {
        return Err(ApiError::bad_request("the body is not a backup document"));
    }
    let restored = s.hub.restore(radio, document, peer.actor()).await?;
    Ok(Json(restored).into_response())
}

/// `POST /v1/install-codes`: the code travels only in this body; it is validated here,
/// sealed by the hub, and never echoed, logged or audited.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallCodeBody {
    /// `zigbee:0x…` or a bare IEEE address (`0x00124b0001abcdef`).
    device: String,
    code: String,
}

/// A Zigbee device id from `zigbee:0x…` or a bare IEEE address.
fn zigbee_device(raw: &str) -> Result<DeviceId, ApiError> {
    let native = raw.strip_prefix("zigbee:").unwrap_or(raw);
    let ieee: fieldgate_zigbee::IeeeAddr = native.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_device_id",
            format!("`{raw}` is not a Zigbee IEEE address (e.g. 0x00124b0001abcdef or zigbee:0x00124b0001abcdef)"),
        )
    })?;
    Ok(DeviceId::new(
        crate::config::Protocol::Zigbee,
        &ieee.to_string(),
    ))
}

async fn add_install_code(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Bytes,
) -> ApiResult<crate::hub::InstallCodeAdded> {
    let b: InstallCodeBody = parse_json(&body)?;
    let text = zeroize::Zeroizing::new(b.code);
    let id = zigbee_device(&b.device)?;
    let code = fieldgate_zigbee::install_code::InstallCode::parse(&text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_install_code",
            e.to_string(),
        )
    })?;
    let secret = crate::secrets::Secret::new(code.as_bytes().to_vec());
    Ok(Json(
        s.hub.add_install_code(id, secret, peer.actor()).await?,
    ))
}

async fn list_install_codes(
    State(s): State<ApiState>,
) -> ApiResult<Vec<store::credentials::CredentialInfo>> {
    Ok(Json(
        read(&s, |c| {
            store::credentials::list_kind(c, crate::radio::zigbee::INSTALL_CODE_KIND)
        })
        .await?,
    ))
}

async fn delete_install_code(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<crate::hub::InstallCodeRemoved> {
    let id = zigbee_device(&raw)?;
    Ok(Json(s.hub.remove_install_code(id, peer.actor()).await?))
}

/// Rotates a Zigbee radio's network key; answers when the switch is done (after the radio's
/// `key_switch_delay`) or failed. Audited by the hub with its outcome; never returns a key.
async fn rotate_network_key(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(radio): UrlPath<String>,
) -> ApiResult<crate::hub::KeyRotationDone> {
    Ok(Json(s.hub.rotate_network_key(radio, peer.actor()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PermitJoinBody {
    seconds: u32,
}

async fn permit_join(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(radio): UrlPath<String>,
    body: Bytes,
) -> ApiResult<crate::hub::PermitJoinAccepted> {
    let b: PermitJoinBody = parse_json(&body)?;
    Ok(Json(
        s.hub.permit_join(radio, b.seconds, peer.actor()).await?,
    ))
}

/// `set`: sent now to an awake device (200 with the command id), held for a sleeping one
/// until it next speaks (202 with the held request). Optional `ttl_s` (seconds).
/// Largest policy document accepted (a few thousand rules).
pub const MAX_POLICY_BODY: usize = 4 * 1024 * 1024;

async fn get_policy(State(s): State<ApiState>) -> ApiResult<serde_json::Value> {
    let stored = read(&s, store::policies::active).await?;
    Ok(Json(match stored {
        Some(p) => serde_json::to_value(p).unwrap_or_default(),
        None => json!({"version": 0, "document": crate::policy::PolicyEngine::default_policy(),
                       "signed": false, "source": "built-in default"}),
    }))
}

/// Largest `POST /v1/upstream/client-cert` body (two PEM documents in JSON).
pub const MAX_CLIENT_CERT_BODY: usize = 160 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientCertBody {
    cert_pem: String,
    key_pem: String,
}

/// Rotates the gateway's MQTT client certificate (see `upstream::rotate`).
async fn rotate_client_cert(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Bytes,
) -> ApiResult<serde_json::Value> {
    let Some(up) = s.upstream.as_ref() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "rotation_not_configured",
            "no [upstream] is configured",
        ));
    };
    let b: ClientCertBody = parse_json(&body)?;
    let key = zeroize::Zeroizing::new(b.key_pem);
    match up
        .rotate_client_cert(&s.writer, &b.cert_pem, key, &peer.actor(), "api")
        .await
    {
        Ok(v) => Ok(Json(v)),
        Err(r) => {
            let status = match r.code {
                "invalid_certificate" | "invalid_request" => StatusCode::BAD_REQUEST,
                "rotation_not_configured" | "rotation_in_progress" => StatusCode::CONFLICT,
                "rotation_refused" => StatusCode::UNPROCESSABLE_ENTITY,
                "not_connected" => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(ApiError::new(status, r.code, r.message))
        }
    }
}

async fn put_policy(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Bytes,
) -> ApiResult<crate::hub::PolicyApplied> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a policy document is required"));
    }
    Ok(Json(
        s.hub
            .apply_policy(body.to_vec(), "local".into(), peer.actor())
            .await?,
    ))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no endpoint {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Turns the plain-text rejections of axum's extractors (body too large, bad
/// path encoding, ...) into the API's JSON error shape.
async fn jsonify_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.is_success() || is_json {
        return response;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let bytes = axum::body::to_bytes(response.into_body(), MAX_BODY)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let message = if text.is_empty() {
        status.to_string()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}

/// The most a request's body may hold on `path` (the router's limits, known here so
/// that a `Content-Length` over it is refused before any of the body is read).
fn body_limit(path: &str) -> usize {
    if path == "/v1/policy" {
        MAX_POLICY_BODY
    } else if path == "/v1/upstream/client-cert" {
        MAX_CLIENT_CERT_BODY
    } else if path.starts_with("/v1/radios/") && path.ends_with("/restore") {
        MAX_RESTORE_BODY
    } else {
        MAX_BODY
    }
}

/// Audits every request with its caller and outcome before the response leaves. The
/// request runs on a task of its own, so that a caller who hangs up before the answer
/// neither cuts the request short nor leaves it out of the audit log.
async fn audit_requests(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    match tokio::spawn(audited(s, req, next)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "an API request's handler failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request failed inside the daemon",
            )
            .into_response()
        }
    }
}

async fn audited(s: ApiState, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerCred>>()
        .map(|c| c.0)
        .unwrap_or(PeerCred {
            uid: u32::MAX,
            gid: u32::MAX,
            pid: None,
        });
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    s.stats.requests.fetch_add(1, Ordering::Relaxed);
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limit = body_limit(&path);
    let response = match declared {
        Some(n) if n > limit as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a body of {n} bytes is over this endpoint's limit of {limit} bytes"),
        )
        .into_response(),
        _ => jsonify_errors(next.run(req).await).await,
    };
    let status = response.status();
    let outcome = if status.is_success() {
        Outcome::Accepted
    } else if status.is_client_error() {
        s.stats.refused.fetch_add(1, Ordering::Relaxed);
        Outcome::Refused
    } else {
        s.stats.failed.fetch_add(1, Ordering::Relaxed);
        Outcome::Failed
    };
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    let entry = AuditEntry::new(
        peer.actor(),
        format!("api.{}", method.as_str().to_ascii_lowercase()),
        path.clone(),
        outcome,
        json!({"status": status.as_u16(), "user": user}),
    );
    let gw = s.gateway_id.clone();
    let write = |entry: AuditEntry| {
        let gw = gw.clone();
        s.writer
            .write(move |c| store::record_audit(c, &gw, &entry).map(|_| ()))
    };
    let mut written = write(entry.clone()).await;
    if written.is_err() && s.writer.stats().disk.is_full() {
        // The failure gave the reserve back: the record fits now.
        written = write(entry).await;
    }
    match written {
        Ok(()) => response,
        Err(e) => {
            s.stats.failed.fetch_add(1, Ordering::Relaxed);
            s.stats.audit_unavailable.fetch_add(1, Ordering::Relaxed);
            let disk_full = s.writer.stats().disk.is_full();
            if let Some(n) = s.writer.stats().log.hit("audit_unavailable") {
                tracing::error!(error = %e, %path, disk_full, refused = n, "cannot write the audit record; refusing to answer");
            }
            let message = if disk_full {
                "the audit log cannot be written: the disk holding the state directory is full"
            } else {
                "the audit log cannot be written"
            };
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                message,
            )
            .into_response()
        }
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/devices", get(list_devices))
        .route("/v1/devices/{id}", get(get_device).delete(delete_device))
        .route("/v1/devices/{id}/command", post(commands::device_command))
        .route("/v1/devices/{id}/refresh", post(commands::device_refresh))
        .route("/v1/devices/{id}/readmit", post(readmit_device))
        .route("/v1/devices/{id}/adopt", post(adopt::adopt_device))
        .route("/v1/devices/{id}/bindkey", post(adopt::rotate_bindkey))
        .route("/v1/devices/{id}/block", post(block_device))
        .route("/v1/radios/{name}/permit-join", post(permit_join))
        .route("/v1/radios/{name}/backup", get(radio_backup))
        .route(
            "/v1/radios/{name}/restore",
            post(radio_restore).layer(DefaultBodyLimit::max(MAX_RESTORE_BODY)),
        )
        .route("/v1/radios/{name}/rotate-key", post(rotate_network_key))
        .route(
            "/v1/install-codes",
            get(list_install_codes).post(add_install_code),
        )
        .route("/v1/lora/devices", post(lora::add_lora_device))
        .route(
            "/v1/install-codes/{device}",
            axum::routing::delete(delete_install_code),
        )
        .route(
            "/v1/policy",
            get(get_policy)
                .post(put_policy)
                .layer(DefaultBodyLimit::max(MAX_POLICY_BODY)),
        )
        .route(
            "/v1/upstream/client-cert",
            post(rotate_client_cert).layer(DefaultBodyLimit::max(MAX_CLIENT_CERT_BODY)),
        )
        .route("/v1/audit", get(audit_log::audit_tail))
        .route("/v1/audit/verify", get(audit_log::audit_verify))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            audit_requests,
        ))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stats = state.stats.connections.clone();
    serve::serve_bounded(listener, router(state), stats, shutdown).await
}
