//! The upstream task: drives the MQTT connection and the outbox pump.
//!
//! One task owns the rumqttc client handle and the [`Window`]; a helper task only
//! polls rumqttc's event loop and forwards its events in order (so no poll is ever
//! cancelled half-way). Reads of the outbox run on a blocking thread with their own
//! reader connection; deletes go through the store writer. Reconnects use the
//! radios' jittered exponential backoff. Before each reconnect rumqttc's own
//! queues are emptied: replay always comes from the outbox.
//!
//! Requests: every request gets one answer. The request task takes up to
//! `REQUEST_QUEUE` waiting requests; more are refused `busy` here, their audit
//! records committed in batches before their answers go out. Answers wait, in
//! order, in a queue of their own until rumqttc has room (never dropped because
//! its queue was full). Empty payloads (a retained message being cleared) are not
//! requests.
//!
//! A client certificate rotation ([`super::rotate`]) is a deliberate reconnect:
//! DISCONNECT, then one connect with the new identity; if that is refused the
//! old identity is put back at once and the broker is connected to again.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::Transport;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::client::{offline_payload, ClientSettings, MAX_OUTGOING_PACKET};
use super::link::{Client, Ev, Poller, Props};
use super::pump::{Msg, Window};
use super::requests::{self, Inbound, Outbound, RequestContext};
use super::rotate::{SwitchIdentity, Switched};
use super::{limit_check, limits, ConnectionState, Tuning, UpstreamDeps, UpstreamStatus};
use crate::config::OutboxLimits;
use crate::radio::lora::bridge::BridgeRoute;
use crate::radio::Backoff;
use crate::store::{self, outbox, StoreResult};

mod state;
use state::Session;

/// Requests waiting for the request task; more are answered `busy`.
const REQUEST_QUEUE: usize = 64;
/// At a stop, how long the requests already taken (acknowledged to the broker) have
/// to be carried out, audited and answered before the connection closes. Requests
/// arriving meanwhile are answered `shutting_down`.
const REQUEST_DRAIN: Duration = Duration::from_secs(2);
/// Refusals (`busy`) whose audit records are committed in one writer job.
const REFUSAL_BATCH: usize = 1000;
/// Responses waiting for room in the client's queue: the request task waits
/// while this many are. Refusals are added regardless, up to `RESPONSE_LIMIT`;
/// past it a response is dropped, counted and logged (only a flood the broker
/// cannot take from us for minutes gets there).
const RESPONSE_BACKLOG: usize = 1000;
const RESPONSE_LIMIT: usize = 200_000;
/// Seconds `delivered_per_s` is averaged over.
const RATE_WINDOW: usize = 10;
/// Most rows deleted in one writer job.
const DELETE_BATCH: usize = 2000;
/// Delivered messages are deleted once this many are waiting, or once the oldest
/// has waited `DELETE_DELAY`. A small batch (light load) rides the writer's next
/// commit (made for new messages, usually within the hub's linger) instead of a
/// transaction and an fsync of its own, and is committed alone when nothing else
/// commits for `DELETE_IDLE`; a full one (a backlog draining) is committed at once. A delivered row not yet deleted is never sent again on this connection;
/// after a crash it would be sent again, with its msg_id (at least once).
const DELETE_MIN: usize = 512;
const DELETE_DELAY: Duration = Duration::from_millis(25);
const DELETE_IDLE: Duration = Duration::from_millis(100);
/// Rows read from the outbox per read transaction: each read starts a new WAL
/// snapshot, so fewer, larger reads cost less per row.
const FETCH_ROWS: usize = 1000;

/// Most messages read ahead of a window of `window` publishes in flight.
fn read_ahead(window: usize) -> usize {
    FETCH_ROWS.max(2 * window)
}
/// How long a rotation waits for the current connection to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Events rumqttc had ready at once (one send and one wake-up for a run of PUBACKs
/// read together), or the error that ended the connection.
type PollItem = Result<Vec<Ev>, String>;

/// Resolves with the task's output, or never when there is no task.
async fn join<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task.as_mut() {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Polls the event loop and forwards events; after an error waits for the
/// session's go-ahead (with the TLS identity to use from now on, when it
/// changes), empties rumqttc's queues and reconnects.
async fn poll_loop(
    mut el: Poller,
    tx: mpsc::Sender<PollItem>,
    mut go: mpsc::Receiver<Option<Transport>>,
) {
    loop {
        match el.poll().await {
            Ok(events) => {
                if tx.send(Ok(events)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                match go.recv().await {
                    None => return,
                    Some(Some(transport)) => el.set_transport(transport),
                    Some(None) => {}
                }
                // Whatever rumqttc kept (in flight, queued) was forgotten by the
                // session; the outbox replays it.
                el.forget();
            }
        }
    }
}

/// A read of the outbox: the connection back, the epoch and limit it was
/// started with, and the rows.
/// A read of the outbox: the rows, and the highest seq handed out as of the read.
type Fetch = JoinHandle<(
    Connection,
    u64,
    usize,
    StoreResult<(Vec<outbox::OutboxRow>, i64)>,
)>;

/// Where a client certificate rotation stands.
enum Phase {
    /// DISCONNECT sent; waiting for the connection to close.
    Draining { until: tokio::time::Instant },
    /// Connecting with the new identity.
    Trying,
    /// The new identity was refused (the reason); connecting with the old one.
    RollingBack(String),
}

struct Rotation {
    phase: Phase,
    new: Transport,
    reply: oneshot::Sender<Switched>,
}

impl Rotation {
    fn draining_until(&self) -> Option<tokio::time::Instant> {
        match self.phase {
            Phase::Draining { until } => Some(until),
            _ => None,
        }
    }
}

/// The most own clears remembered at once (a burst of retained requests).
const OWN_CLEARS: usize = 1024;

/// A connection that lasted this long was a good one: the reconnect backoff starts over
/// after it. One closed sooner (a client with the same id taking the session over, a
/// broker limit) keeps the backoff growing, so two clients do not fight once a second.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// How often a broker that keeps refusing (or staying unreachable) for the same reason
/// is logged as a warning again.
const CONNECT_FAILURE_LOG_EVERY: Duration = Duration::from_secs(600);

/// The pump's view of an outbox message.
fn msg_of(row: &outbox::OutboxRow) -> Msg {
    Msg {
        seq: row.seq,
        row: row.row,
        last: row.row_last,
    }
}

pub(super) async fn run(
    settings: ClientSettings,
    outbox_limits: OutboxLimits,
    deps: UpstreamDeps,
    status: Arc<UpstreamStatus>,
    tuning: Tuning,
    mut rotations: mpsc::Receiver<SwitchIdentity>,
) {
    let UpstreamDeps {
        gateway_id,
        db_path,
        writer,
        hub,
        radios,
        gate,
        bridges,
        mut shutdown,
    } = deps;
    let window = tuning.window.clamp(1, 10_000);
    let mut options = settings.options;
    // rumqttc's own window is a little larger than ours so live messages
    // (birth, responses) never wait behind a full window of rows, and is never
    // full: rumqttc reads no request (acknowledgements of the requests we take
    // included) while it is.
    options.set_inflight((window + 32).min(u16::MAX as usize - 1) as u16);
    // The identity in use, put back when a rotation is refused.
    let mut identity = options.transport();
    let mut rotation: Option<Rotation> = None;
    let v5 = options.protocol() == 5;
    let (client, eventloop) = Client::new(options, window + REQUEST_QUEUE + 64);
    let (poll_tx, mut poll_rx) = mpsc::channel::<PollItem>(1024);
    let (go_tx, go_rx) = mpsc::channel::<Option<Transport>>(1);
    let poller = tokio::spawn(poll_loop(eventloop, poll_tx, go_rx));

    let naming = match settings.topic_names {
        crate::config::TopicNames::Id => "id",
        crate::config::TopicNames::Name => "name",
    };
    let (names, named_before) = {
        let db = db_path.clone();
        tokio::task::spawn_blocking(move || -> store::StoreResult<_> {
            let c = store::open_reader(&db)?;
            Ok((store::names::all(&c)?, outbox::topic_names(&c)?))
        })
        .await
        .ok()
        .and_then(|r| {
            r.map_err(|e| tracing::warn!(error = %e, "cannot read the device names"))
                .ok()
        })
        .map_or((Default::default(), None), |(n, b)| (n, Some(b)))
    };
    // `topic_names` changed since the last run: the retained messages under the
    // other topic level are cleared once connected, and the named devices' state and
    // availability queued again under the new one.
    let mut topic_switch = named_before
        .filter(|before| before != naming)
        .map(|before| TopicSwitch::new(&names, &before, naming));
    let levels = match settings.topic_names {
        crate::config::TopicNames::Id => None,
        crate::config::TopicNames::Name => Some(Arc::new(super::topics::DeviceLevels::new(names))),
    };
    let (in_tx, in_rx) = mpsc::channel(REQUEST_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(REQUEST_QUEUE);
    let giving_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ctx = RequestContext {
        gateway_id: gateway_id.as_str().into(),
        topics: settings.topics.clone(),
        hub,
        writer: writer.clone(),
        db_path: db_path.clone(),
        radios,
        status: status.clone(),
        v5,
        levels: levels.clone(),
        giving_up: giving_up.clone(),
    };
    let mut request_task = Some(tokio::spawn(requests::serve(ctx, in_rx, out_tx)));

    let mut s = Session {
        client,
        telemetry_props: Props {
            message_expiry: settings.telemetry_expiry,
            ..Props::default()
        },
        v5,
        max_outgoing: MAX_OUTGOING_PACKET,
        levels,
        settings_topics: settings.topics,
        gateway_id: gateway_id.clone(),
        status: status.clone(),
        window: Window::new(window),
        connected: false,
        more: true,
        read_upto: 0,
        committed_upto: 0,
        buffer: VecDeque::new(),
        epoch: 0,
        inbound: in_tx,
        responses: VecDeque::new(),
        acks: VecDeque::new(),
        refusals: Vec::new(),
        failure_logged: None,
        refusal_logged: None,
        own_clears: Default::default(),
        bridges,
        life: {
            let db = db_path.clone();
            tokio::task::spawn_blocking(move || outbox::life(&store::open_reader(&db)?))
                .await
                .ok()
                .and_then(|r| {
                    r.map_err(|e| tracing::warn!(error = %e, "cannot read the database's life"))
                        .ok()
                })
        },
    };
    // The audit records of a batch of refusals being committed, then their publishes.
    let mut auditing: Option<JoinHandle<Vec<Outbound>>> = None;
    let (max_bytes, max_age_ms) = limits(&outbox_limits);
    let mut reader: Option<Connection> = None;
    let mut fetch: Option<Fetch> = None;
    // What each commit adds to the outbox, read back by the writer: while the pump
    // keeps up, it never reads the file itself.
    let mut committed_rows = writer.tap_outbox(8);
    let mut tap_wanted = false;
    let mut deleting: Option<JoinHandle<(Vec<i64>, StoreResult<usize>)>> = None;
    let mut enforcing: Option<JoinHandle<StoreResult<outbox::LimitReport>>> = None;
    let mut backoff = Backoff::with_max(settings.reconnect_max);
    // When the current connection was accepted: the backoff starts over only after a
    // connection that lasted (see `STABLE_CONNECTION`).
    let mut connected_at: Option<tokio::time::Instant> = None;
    // Connections in a row that the broker closed soon after accepting them.
    let mut short_lived = 0u32;
    let mut reconnect_at: Option<tokio::time::Instant> = None;
    // Since when delivered rows have been waiting to be deleted.
    let mut delete_wait: Option<Instant> = None;
    // The writer handed a commit over since the last idle tick.
    let mut handed_since_tick = false;
    let mut idle = tokio::time::interval(tuning.idle_poll);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut last_enforce = Instant::now() - tuning.enforce_every;
    // How long after the last check the next one may start (see `enforce_wait`).
    let mut enforce_wait = tuning.enforce_every;
    let mut last_info = Instant::now();
    // (when, delivered) once a second over the last `RATE_WINDOW` seconds.
    let mut rate_marks: VecDeque<(Instant, u64)> = VecDeque::from([(Instant::now(), 0u64)]);

    // Set at a stop: until then the requests already taken are finished (see
    // `REQUEST_DRAIN`).
    let mut stop_by: Option<tokio::time::Instant> = None;
    // What the stop's timer is built with while there is no stop (never polled then).
    let unset = tokio::time::Instant::now();
    loop {
        if stop_by.is_some()
            && request_task.as_ref().is_none_or(|t| t.is_finished())
            && out_rx.is_empty()
            && auditing.is_none()
            && s.refusals.is_empty()
            && (s.responses.is_empty() || !s.connected)
        {
            break;
        }
        // Caught up: the writer hands over what it commits; otherwise the pump reads.
        if tap_wanted != (s.connected && !s.more) {
            tap_wanted = !tap_wanted;
            writer.want_committed_rows(tap_wanted);
        }
        s.clear_moved();
        if s.connected {
            if let Some(switch) = topic_switch.take() {
                switch.carry_out(&mut s, &writer, &gateway_id);
            }
        }
        s.flush_responses();
        s.pump();
        if auditing.is_none() && !s.refusals.is_empty() {
            let n = s.refusals.len().min(REFUSAL_BATCH);
            let batch: Vec<requests::Refusal> = s.refusals.drain(..n).collect();
            let w = writer.clone();
            let gw = gateway_id.clone();
            auditing = Some(tokio::spawn(async move {
                let (entries, publish): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|r| (r.audit, r.publish)).unzip();
                let count = entries.len();
                let r = w
                    .write(move |c| {
                        for e in &entries {
                            store::record_audit(c, &gw, e)?;
                        }
                        Ok(())
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, refusals = count, "cannot write the audit records of refused MQTT requests");
                }
                publish.into_iter().flatten().collect()
            }));
        }
        if s.connected && s.more && fetch.is_none() && s.buffer.len() < window {
            let conn = match reader.take() {
                Some(c) => Ok(c),
                None => store::open_reader(&db_path),
            };
            match conn {
                Ok(conn) => {
                    let after = s.read_after();
                    let limit = read_ahead(window).saturating_sub(s.buffer.len());
                    let epoch = s.epoch;
                    fetch = Some(tokio::task::spawn_blocking(move || {
                        let rows = outbox::pending_now(&conn, after, limit);
                        (conn, epoch, limit, rows)
                    }));
                }
                Err(e) => {
                    status.set_error(format!("cannot read the outbox: {e}"));
                    s.more = false;
                }
            }
        }
        let ready = s.window.deletable();
        if ready == 0 {
            delete_wait = None;
        } else if delete_wait.is_none() {
            delete_wait = Some(Instant::now());
        }
        let due = ready >= DELETE_MIN || delete_wait.is_some_and(|t| t.elapsed() >= DELETE_DELAY);
        if deleting.is_none() && due {
            delete_wait = None;
            let batch = s.window.take_deletable(DELETE_BATCH);
            if !batch.is_empty() {
                let w = writer.clone();
                deleting = Some(tokio::spawn(async move {
                    let seqs = batch.clone();
                    let r = delete_with_next_commit(&w, seqs).await;
                    (batch, r)
                }));
            }
        }

        tokio::select! {
            item = poll_rx.recv() => match item {
                Some(Ok(events)) => for ev in events {
                    let connack = matches!(ev, Ev::ConnAck { .. });
                    if connack {
                        connected_at = Some(tokio::time::Instant::now());
                        tracing::info!(broker = %status.broker, "upstream connected");
                    }
                    s.on_event(ev);
                    if connack {
                        match rotation.take() {
                            Some(Rotation { phase: Phase::Trying, new, reply }) => {
                                tracing::info!("the broker accepted the new client certificate");
                                identity = new;
                                let _ = reply.send(Switched::Accepted);
                            }
                            Some(Rotation { phase: Phase::RollingBack(reason), reply, .. }) => {
                                tracing::info!("reconnected with the previous client certificate");
                                let _ = reply.send(Switched::Refused { reason, reconnected: true });
                            }
                            other => rotation = other,
                        }
                    }
                },
                Some(Err(e)) => match rotation.take() {
                    Some(Rotation { phase: Phase::Draining { .. }, new, reply }) => {
                        // The old connection is closed: one try with the new identity.
                        reconnect_at = None;
                        status.set_state(ConnectionState::Connecting);
                        if go_tx.send(Some(new.clone())).await.is_err() {
                            break;
                        }
                        rotation = Some(Rotation { phase: Phase::Trying, new, reply });
                    }
                    Some(Rotation { phase: Phase::Trying, new, reply }) => {
                        tracing::warn!(error = %e, "the broker refused the new client certificate: rolling back");
                        s.on_disconnected(e.clone());
                        reconnect_at = None;
                        status.set_state(ConnectionState::Connecting);
                        if go_tx.send(Some(identity.clone())).await.is_err() {
                            break;
                        }
                        rotation = Some(Rotation { phase: Phase::RollingBack(e), new, reply });
                    }
                    Some(Rotation { phase: Phase::RollingBack(reason), reply, .. }) => {
                        // Back on the old identity; the normal backoff takes over.
                        let _ = reply.send(Switched::Refused { reason, reconnected: false });
                        s.on_disconnected(e);
                        reconnect_at = Some(tokio::time::Instant::now() + backoff.next_delay());
                    }
                    None => {
                        let lasted = connected_at.take().map(|t| t.elapsed());
                        if lasted.is_some_and(|d| d >= STABLE_CONNECTION) {
                            backoff.reset();
                        }
                        match lasted {
                            Some(d) if d < STABLE_CONNECTION => short_lived += 1,
                            Some(_) => short_lived = 0,
                            None => {}
                        }
                        let e = match lasted {
                            // Accepted, then closed at once, again and again: most often
                            // another client with the same id taking the session over.
                            // Once is not a pattern: a broker restarting closes a
                            // connection it has just accepted too.
                            Some(d) if d < STABLE_CONNECTION && short_lived >= 2 => format!(
                                "{e} ({:.1} s after the broker accepted the connection: is another client connected with the client id `{}`?)",
                                d.as_secs_f64(),
                                status.client_id
                            ),
                            _ => e,
                        };
                        s.on_disconnected(e);
                        let delay = backoff.next_delay();
                        reconnect_at = Some(tokio::time::Instant::now() + delay);
                    }
                },
                None => {
                    status.set_error("the MQTT event loop stopped");
                    break;
                }
            },
            r = join(&mut fetch) => {
                fetch = None;
                match r {
                    Ok((conn, epoch, limit, Ok((rows, upto)))) => {
                        reader = Some(conn);
                        if epoch == s.epoch && s.connected {
                            s.fetched(rows, upto, limit);
                        }
                    }
                    Ok((_, _, _, Err(e))) => {
                        status.set_error(format!("cannot read the outbox: {e}"));
                        s.more = false;
                    }
                    Err(e) => {
                        status.set_error(format!("outbox reader failed: {e}"));
                        s.more = false;
                    }
                }
            },
            r = join(&mut deleting) => {
                deleting = None;
                match r {
                    Ok((seqs, Ok(_))) => s.window.deleted(&seqs),
                    Ok((_, Err(e))) => {
                        tracing::error!(error = %e, "cannot delete delivered outbox rows (will retry)");
                        status.set_error(format!("cannot delete delivered rows: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => tracing::error!(error = %e, "outbox delete task failed"),
                }
            },
            r = join(&mut enforcing) => {
                enforcing = None;
                let took = last_enforce.elapsed();
                enforce_wait = limit_check::spacing(tuning.enforce_every, took);
                if enforce_wait > tuning.enforce_every {
                    tracing::debug!(took_ms = took.as_millis() as u64, next_in_s = enforce_wait.as_secs(),
                        "outbox limit check read the outbox through: the next one waits longer");
                }
                match r {
                    Ok(Ok(report)) => limit_check::apply_report(&status, &gate, &report, max_bytes),
                    Ok(Err(e)) => status.set_error(format!("cannot apply the outbox limits: {e}")),
                    Err(e) => tracing::error!(error = %e, "outbox limit task failed"),
                }
            },
            Some(out) = out_rx.recv(), if s.responses.len() < RESPONSE_BACKLOG => {
                s.respond(out);
            },
            r = join(&mut auditing) => {
                auditing = None;
                match r {
                    Ok(publish) => for out in publish {
                        s.respond(out);
                    },
                    Err(e) => tracing::error!(error = %e, "refusal audit task failed"),
                }
            },
            Some(cmd) = rotations.recv(), if rotation.is_none() => {
                if !s.connected {
                    let _ = cmd.reply.send(Switched::NotConnected);
                } else if let Err(e) = s.client.try_disconnect() {
                    let _ = cmd.reply.send(Switched::Failed(format!(
                        "cannot close the current connection: {e}"
                    )));
                } else {
                    tracing::info!("upstream reconnecting with a new client certificate");
                    s.connected = false;
                    s.new_epoch();
                    status.set_state(ConnectionState::Connecting);
                    rotation = Some(Rotation {
                        phase: Phase::Draining {
                            until: tokio::time::Instant::now() + DRAIN_TIMEOUT,
                        },
                        new: cmd.transport,
                        reply: cmd.reply,
                    });
                }
            },
            _ = sleep_until_opt(rotation.as_ref().and_then(Rotation::draining_until)) => {
                // The connection did not close: give up; it is still the old identity.
                if let Some(r) = rotation.take() {
                    let _ = r.reply.send(Switched::Failed(
                        "the current connection did not close in time".into(),
                    ));
                }
            },
            _ = sleep_until_opt(reconnect_at) => {
                reconnect_at = None;
                status.set_state(ConnectionState::Connecting);
                if go_tx.send(None).await.is_err() {
                    break;
                }
            },
            // The safety net: an idle pump reads the outbox anyway. While the writer
            // hands commits over, reading the file as well would only turn the tap
            // off and on again (and the commits during the read would be signalled
            // and read, not handed over).
            _ = idle.tick() => {
                if !std::mem::take(&mut handed_since_tick) {
                    s.more = true;
                }
            },
            Some(c) = committed_rows.recv() => {
                handed_since_tick = true;
                s.take_committed(c, window);
            },
            // A commit whose messages the writer did not hand over.
            _ = writer.committed(), if !s.more => {
                s.more = true;
            },
            _ = second.tick() => {
                let now = Instant::now();
                let delivered = status.delivered.load(Ordering::Relaxed);
                status.set_rate(delivery_rate(&mut rate_marks, now, delivered));
                if enforcing.is_none() && now.duration_since(last_enforce) >= enforce_wait {
                    last_enforce = now;
                    enforcing = Some(tokio::spawn(limit_check::run(
                        writer.clone(),
                        db_path.clone(),
                        max_bytes,
                        max_age_ms,
                        gate.refusing_telemetry(),
                    )));
                }
                if s.connected && now.duration_since(last_info) >= tuning.info_every {
                    last_info = now;
                    let _ = s.inbound.try_send(Inbound::PublishInfo);
                }
            },
            _ = crate::shutdown::signalled(&mut shutdown), if stop_by.is_none() => {
                // Take no more requests (they are answered `shutting_down`); closing
                // the queue lets the request task finish those it holds, then end.
                stop_by = Some(tokio::time::Instant::now() + REQUEST_DRAIN);
                s.inbound = mpsc::channel(1).0;
            },
            _ = tokio::time::sleep_until(stop_by.unwrap_or(unset)), if stop_by.is_some() => {
                // Out of time to carry the queued requests out: they are answered
                // `shutting_down` (audited) in a second window; only what is still
                // unanswered after it (one stuck in progress) is left.
                if !giving_up.swap(true, Ordering::Relaxed) {
                    tracing::info!("the stop's time to carry out requests is up: the ones still queued are answered shutting_down");
                    stop_by = Some(tokio::time::Instant::now() + REQUEST_DRAIN);
                    continue;
                }
                tracing::warn!("requests still in progress at the stop were not all finished");
                break;
            },
        }
    }

    // Graceful stop: say so on the status topic, disconnect, and keep handling
    // PUBACKs until the broker closes the connection (bounded), so delivered rows
    // are deleted. The socket is not closed from this side while the broker may
    // still be sending (a request flood): closing with unread bytes would send a
    // reset, and a broker that gets a reset throws away what it had not read yet
    // (the answers, the `shutdown` status and the DISCONNECT itself) and publishes
    // the last will.
    if s.connected {
        s.flush_responses();
        let topic = s.settings_topics.status();
        let mut payload = offline_payload(&gateway_id);
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&payload) {
            v["reason"] = serde_json::json!("shutdown");
            v["ts"] = serde_json::json!(crate::model::now_rfc3339());
            payload = v.to_string().into_bytes();
        }
        s.publish(topic, payload, true, None);
        let _ = s.client.try_disconnect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let item = tokio::select! {
                i = poll_rx.recv() => i,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            match item {
                Some(Ok(events)) => {
                    for ev in events {
                        // A request arriving now is not taken: not acknowledged, it
                        // stays with the broker for the next connection (a persistent
                        // session), and it is neither audited nor answered here.
                        if !matches!(ev, Ev::OutgoingDisconnect | Ev::Publish(_)) {
                            s.on_event(ev);
                        }
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
    }
    status.set_state(ConnectionState::Stopped);
    poller.abort();
    let _ = poller.await;
    if let Some(f) = fetch.take() {
        let _ = f.await;
    }
    if let Some(d) = deleting.take() {
        // A delete waiting for the next commit is committed now.
        let _ = writer.flush().await;
        if let Ok((seqs, Ok(_))) = d.await {
            s.window.deleted(&seqs);
        }
    }
    let last = s.window.take_deletable(usize::MAX);
    if !last.is_empty() {
        if let Err(e) = writer.write(move |c| outbox::delete(c, &last)).await {
            tracing::warn!(error = %e, "could not delete the last delivered rows (they will be sent again)");
        }
    }
    if let Some(e) = enforcing.take() {
        let _ = e.await;
    }
    // Refusals being audited hold a writer handle: let them finish (their
    // answers are not sent any more; the requests were refused anyway).
    if let Some(a) = auditing.take() {
        let _ = a.await;
    }
    let unrecorded: Vec<_> = s.refusals.drain(..).map(|r| r.audit).collect();
    if !unrecorded.is_empty() {
        let gw = gateway_id.clone();
        let n = unrecorded.len();
        let r = writer
            .write(move |c| {
                for e in &unrecorded {
                    store::record_audit(c, &gw, e)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, refusals = n, "cannot write the audit records of refused MQTT requests");
        }
    }
    // Closing the inbound queue ends the request task (and drops its store and
    // hub handles before the store closes).
    drop(s);
    if let Some(t) = request_task.take() {
        t.abort();
        let _ = t.await;
    }
    tracing::info!("upstream stopped");
}

/// Deletes delivered rows in the writer's next commit, or in one of their own when
/// nothing else commits within `DELETE_IDLE`. A batch of `DELETE_MIN` or more (a
/// backlog draining: nothing else may commit for a while) is committed at once: its
/// own fsync is shared by hundreds of rows, and waiting would hold the drain to one
/// batch per `DELETE_IDLE`.
async fn delete_with_next_commit(writer: &store::Writer, seqs: Vec<i64>) -> StoreResult<usize> {
    if seqs.len() >= DELETE_MIN {
        return writer.write(move |c| outbox::delete(c, &seqs)).await;
    }
    writer
        .with_next_commit(move |c| outbox::delete(c, &seqs), DELETE_IDLE)
        .await
}

/// Messages delivered per second over the last `RATE_WINDOW` seconds: a backlog
/// drained in half a second still shows, not only while a second tick happens to
/// fall inside it.
fn delivery_rate(marks: &mut VecDeque<(Instant, u64)>, now: Instant, delivered: u64) -> f64 {
    marks.push_back((now, delivered));
    while marks.len() > RATE_WINDOW + 1 {
        marks.pop_front();
    }
    let (then, before) = marks.front().copied().unwrap_or((now, delivered));
    let dt = now.duration_since(then).as_secs_f64();
    if dt > 0.0 {
        delivered.saturating_sub(before) as f64 / dt
    } else {
        0.0
    }
}

/// A change of `[upstream] topic_names` since the last run.
struct TopicSwitch {
    /// The topic levels devices stop using: their retained messages are cleared.
    old_levels: Vec<String>,
    /// The named devices, whose retained messages are queued again.
    devices: Vec<String>,
    naming: &'static str,
}

impl TopicSwitch {
    fn new(
        names: &std::collections::HashMap<String, String>,
        before: &str,
        naming: &'static str,
    ) -> TopicSwitch {
        tracing::info!(
            before,
            now = naming,
            devices = names.len(),
            "device topics are named differently: moving the named devices' retained messages"
        );
        let old_levels = names
            .iter()
            .map(|(id, name)| if naming == "name" { id } else { name }.clone())
            .collect();
        TopicSwitch {
            old_levels,
            devices: names.keys().cloned().collect(),
            naming,
        }
    }

    /// Clears the old levels' retained messages (handed over first), then queues the
    /// devices' retained messages again and records the naming. Interrupted before the
    /// record, it is done again at the next start.
    fn carry_out(self, s: &mut Session, writer: &store::Writer, gateway_id: &str) {
        for level in &self.old_levels {
            for kind in super::topics::RETAINED_DEVICE_TOPICS {
                let topic = s.settings_topics.outbox(&format!("device/{level}/{kind}"));
                s.respond(requests::clear_retained(&topic));
            }
        }
        let gw = gateway_id.to_string();
        let w = writer.clone();
        tokio::spawn(async move {
            let (devices, naming) = (self.devices, self.naming);
            let r = w
                .write(move |c| {
                    let now = std::time::SystemTime::now();
                    for id in &devices {
                        if let Some(d) =
                            store::registry::get(c, &crate::model::DeviceId(id.clone()))?
                        {
                            crate::hub::requeue_retained(c, &gw, &d, now)?;
                        }
                    }
                    outbox::set_topic_names(c, naming)
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "the named devices' retained messages were not queued again under their new topics");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_rate_is_averaged_over_ten_seconds() {
        let t0 = Instant::now();
        let mut marks = VecDeque::from([(t0, 0u64)]);
        // 5,000 delivered within the first second, then nothing.
        let r1 = delivery_rate(&mut marks, t0 + Duration::from_secs(1), 5000);
        assert_eq!(r1, 5000.0);
        for s in 2..=11 {
            let r = delivery_rate(&mut marks, t0 + Duration::from_secs(s), 5000);
            if s == 5 {
                assert_eq!(r, 1000.0);
            }
        }
        assert_eq!(
            delivery_rate(&mut marks, t0 + Duration::from_secs(12), 5000),
            0.0
        );
    }
}
