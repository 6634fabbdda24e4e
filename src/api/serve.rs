//! Serving the API socket with bounds, so that idle or half-open connections
//! cannot take it away from a technician.
//!
//! - at most [`MAX_CONNECTIONS`] at once; when full, the connection that has been
//!   idle the longest (no request in progress) is closed to make room, so a new
//!   caller always gets in;
//! - a request's headers must arrive within [`HEADER_TIMEOUT`] and its body within
//!   [`BODY_TIMEOUT`] (a connection still sending a body counts as idle when room
//!   is needed), and a connection with no request for [`IDLE_TIMEOUT`] is closed;
//! - each connection may send at most [`MAX_REQUESTS_PER_SECOND`] requests a second;
//!   beyond that it is answered 429 `rate_limited` (counted, not audited: nothing
//!   reaches the hub).
//!
//! This module owns connection handling only; what a request means is the router's.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper::body::Body as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future as _;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::PeerCred;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Time for a request's headers to arrive once the connection is open or the
/// previous request was answered.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a request's body to arrive once its headers have.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests one connection may send per second.
pub const MAX_REQUESTS_PER_SECOND: u32 = 50;

/// What the server counts (shown by `fieldgate status --json` under `api`).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub accepted: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    pub rate_limited: AtomicU64,
    /// accept() failures (e.g. out of descriptors); the server backs off and goes on.
    pub accept_errors: AtomicU64,
}

/// Where a connection is: between requests, receiving a request's body, or with a
/// request being carried out. Only the last keeps it from being closed for room.
const IDLE: u8 = 0;
const RECEIVING: u8 = 1;
const BUSY: u8 = 2;

struct Conn {
    busy: Arc<AtomicU8>,
    last_active: Arc<Mutex<Instant>>,
    abort: AbortHandle,
}

#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Conn>,
}

impl Table {
    /// Closes the connection idle the longest (one still sending a request's body
    /// counts as idle since its last request); false when every one is busy.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .open
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Relaxed) != BUSY)
            .min_by_key(|(_, c)| *c.last_active.lock().unwrap_or_else(|p| p.into_inner()))
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some(c) => {
                c.abort.abort();
                true
            }
            None => false,
        }
    }
}

fn peer_of(stream: &UnixStream) -> PeerCred {
    match stream.peer_cred() {
        Ok(c) => PeerCred {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        },
        // Unknown callers are recorded as such (u32::MAX never maps to a user).
        Err(_) => PeerCred {
            uid: u32::MAX,
            gid: u32::MAX,
            pid: None,
        },
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in
/// progress finish (bounded by a few seconds).
pub async fn serve_bounded(
    listener: UnixListener,
    app: Router,
    stats: Arc<ConnectionStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let table = Arc::new(Mutex::new(Table::default()));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "API accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let id = {
            let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
            if t.open.len() >= MAX_CONNECTIONS {
                if t.evict_one() {
                    stats.evicted.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Every connection is in a request: this one waits its turn by
                    // being refused now (the client retries).
                    drop(stream);
                    continue;
                }
            }
            t.next += 1;
            t.next
        };
        let busy = Arc::new(AtomicU8::new(IDLE));
        let last_active = Arc::new(Mutex::new(Instant::now()));
        let peer = peer_of(&stream);
        let task = tokio::spawn(serve_one(
            stream,
            app.clone(),
            peer,
            busy.clone(),
            last_active.clone(),
            stats.clone(),
        ));
        let abort = task.abort_handle();
        table.lock().unwrap_or_else(|p| p.into_inner()).open.insert(
            id,
            Conn {
                busy,
                last_active,
                abort,
            },
        );
        let table = table.clone();
        tokio::spawn(async move {
            let _ = task.await;
            table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .open
                .remove(&id);
        });
    }
    // Requests in progress get a moment to finish; idle connections are closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let busy = {
            let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
            while t.evict_one() {}
            t.open.len()
        };
        if busy == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    for (_, c) in std::mem::take(&mut t.open) {
        c.abort.abort();
    }
    Ok(())
}

async fn serve_one(
    stream: UnixStream,
    app: Router,
    peer: PeerCred,
    busy: Arc<AtomicU8>,
    last_active: Arc<Mutex<Instant>>,
    stats: Arc<ConnectionStats>,
) {
    use tower::ServiceExt;
    let window = Arc::new(Mutex::new((Instant::now(), 0u32)));
    let (busy_svc, last_svc) = (busy.clone(), last_active.clone());
    let service = hyper::service::service_fn(
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let (busy, last, window, stats) = (
                busy_svc.clone(),
                last_svc.clone(),
                window.clone(),
                stats.clone(),
            );
            async move {
                let now = Instant::now();
                let over = {
                    let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
                    if now.duration_since(w.0) >= Duration::from_secs(1) {
                        *w = (now, 0);
                    }
                    w.1 += 1;
                    w.1 > MAX_REQUESTS_PER_SECOND
                };
                if over {
                    stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    let body = axum::body::Body::from(
                        r#"{"error":{"code":"rate_limited","message":"too many requests on this connection; slow down"}}"#,
                    );
                    let mut res = axum::response::Response::new(body);
                    *res.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
                    return Ok::<_, std::convert::Infallible>(res);
                }
                req.extensions_mut().insert(ConnectInfo(peer));
                let (parts, incoming) = req.into_parts();
                let body = Arriving::new(incoming, busy.clone());
                let req = hyper::Request::from_parts(parts, axum::body::Body::new(body));
                // On its own task: a caller that hangs up once its request is sent
                // drops this connection, not the request (carried out and audited).
                let res = match tokio::spawn(app.oneshot(req)).await {
                    Ok(res) => res,
                    Err(e) => {
                        tracing::error!(error = %e, "an API request's task failed");
                        let mut res = axum::response::Response::new(axum::body::Body::from(
                            r#"{"error":{"code":"internal","message":"the request's task failed"}}"#,
                        ));
                        *res.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        Ok(res)
                    }
                };
                busy.store(IDLE, Ordering::Relaxed);
                *last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                res
            }
        },
    );
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // A caller that closes its side after sending still has its request read
        // and answered (the answer may find nobody).
        .half_close(true)
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // Idle watch: a connection that has had no request for IDLE_TIMEOUT is closed.
    loop {
        let idle_for = last_active
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::ZERO);
        let wait = IDLE_TIMEOUT.saturating_sub(idle_for);
        tokio::select! {
            _ = &mut conn => return,
            _ = tokio::time::sleep(wait) => {
                let idle = busy.load(Ordering::Relaxed) != BUSY
                    && last_active.lock().map(|t| t.elapsed() >= IDLE_TIMEOUT).unwrap_or(true);
                if idle {
                    return;
                }
            }
        }
    }
}

/// A request's body as it arrives: the connection counts as busy once all of it is
/// in (at once for a request without one), and a body that has not all come within
/// [`BODY_TIMEOUT`] ends in an error, which the handler answers as a bad request.
/// Without this a client that sends headers and part of a body holds a connection
/// (and with 256 of them, the whole socket) for as long as it likes.
struct Arriving {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    state: Arc<AtomicU8>,
}

impl Arriving {
    fn new(inner: hyper::body::Incoming, state: Arc<AtomicU8>) -> Arriving {
        let arrived = inner.is_end_stream();
        state.store(if arrived { BUSY } else { RECEIVING }, Ordering::Relaxed);
        Arriving {
            inner,
            deadline: Box::pin(tokio::time::sleep(BODY_TIMEOUT)),
            state,
        }
    }
}

impl hyper::body::Body for Arriving {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.state.store(BUSY, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.state.store(BUSY, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
