//! `GET /v1/audit` (the log, filtered, and followed with `wait_s`) and
//! `GET /v1/audit/verify`.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use super::{read, ApiError, ApiResult, ApiState};
use crate::store::{self, audit};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    limit: Option<usize>,
    after: Option<i64>,
    /// Comma-separated action names.
    action: Option<String>,
    actor: Option<String>,
    target: Option<String>,
    /// With `after`: wait up to this many seconds for a matching record.
    wait_s: Option<u64>,
}

/// The longest `GET /v1/audit?wait_s=` waits.
const MAX_AUDIT_WAIT_S: u64 = 30;
/// How often a waiting `GET /v1/audit` looks again.
const AUDIT_WAIT_STEP: Duration = Duration::from_millis(250);

pub(super) async fn audit_tail(
    State(s): State<ApiState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Vec<audit::AuditRecord>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let wait = match q.wait_s {
        None | Some(0) => Duration::ZERO,
        Some(_) if q.after.is_none() => {
            return Err(ApiError::bad_request(
                "wait_s needs after: it waits for records after that seq",
            ))
        }
        Some(n) if n > MAX_AUDIT_WAIT_S => {
            return Err(ApiError::bad_request(format!(
                "wait_s must be between 0 and {MAX_AUDIT_WAIT_S}"
            )))
        }
        Some(n) => Duration::from_secs(n),
    };
    let filter = audit::AuditFilter {
        actions: q
            .action
            .as_deref()
            .map(|a| {
                a.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        actor: q.actor.filter(|a| !a.is_empty()),
        target: q.target.filter(|t| !t.is_empty()),
    };
    if filter.actions.len() > 32 {
        return Err(ApiError::bad_request("at most 32 actions"));
    }
    // A follower (`fieldgate pair`) waits here for what it watches rather than asking
    // every second: each request is itself an audit record.
    let end = tokio::time::Instant::now() + wait;
    // A device's friendly name names its id: records always carry the id.
    let mut filter = filter;
    if let Some(t) = filter.target.clone().filter(|t| !t.contains(':')) {
        if let Some(id) = read(&s, move |c| crate::store::names::holder(c, &t)).await? {
            filter.target = Some(id.to_string());
        }
    }
    let mut stopping = s.stopping.clone();
    loop {
        let f = filter.clone();
        let after = q.after;
        let found = read(&s, move |c| audit::tail_matching(c, limit, after, &f)).await?;
        if !found.is_empty()
            || tokio::time::Instant::now() + AUDIT_WAIT_STEP > end
            || *stopping.borrow()
        {
            return Ok(Json(found));
        }
        tokio::select! {
            _ = tokio::time::sleep(AUDIT_WAIT_STEP) => {}
            _ = crate::shutdown::signalled(&mut stopping) => {}
        }
    }
}

pub(super) async fn audit_verify(State(s): State<ApiState>) -> ApiResult<audit::VerifyReport> {
    let mark = store::audit_guard::mark_path(&s.db_path);
    Ok(Json(
        read(&s, move |c| store::audit_guard::verify(c, &mark, false)).await?,
    ))
}
