//! The session's state and what it does with each event: publishing, acknowledgements,
//! requests coming in, responses going out, the outbox read ahead.

use super::*;

pub(super) struct Session {
    pub(super) client: Client,
    /// MQTT 5: the message expiry put on telemetry.
    pub(super) telemetry_props: Props,
    /// The connection speaks MQTT 5.
    pub(super) v5: bool,
    /// The largest packet sent: ours, or the broker's (MQTT 5) when smaller.
    pub(super) max_outgoing: usize,
    /// Device topics by friendly name (`topic_names = "name"`).
    pub(super) levels: Option<Arc<crate::upstream::topics::DeviceLevels>>,
    pub(super) settings_topics: crate::upstream::topics::Topics,
    pub(super) gateway_id: String,
    pub(super) status: Arc<UpstreamStatus>,
    pub(super) window: Window,
    pub(super) connected: bool,
    /// The outbox may hold rows after the cursor.
    pub(super) more: bool,
    /// Every message up to this seq is buffered or handed over in this connection,
    /// or was not there when read (seqs of dropped rows leave holes).
    pub(super) read_upto: i64,
    /// The highest seq the writer said it handed out (see [`store::CommittedRows`]).
    pub(super) committed_upto: i64,
    /// Rows read ahead of the window, in seq order, not yet handed over.
    pub(super) buffer: VecDeque<outbox::OutboxRow>,
    /// Bumped on every (dis)connect so reads started before it are discarded.
    pub(super) epoch: u64,
    pub(super) inbound: mpsc::Sender<Inbound>,
    /// Responses (and retained-request clears) not yet handed to the client, in order.
    pub(super) responses: VecDeque<Outbound>,
    /// Acknowledgements of received publishes not yet handed to the client (its
    /// queue was full), for this connection only.
    pub(super) acks: VecDeque<crate::upstream::link::AckToken>,
    /// Requests refused here (`busy`), waiting for their audit records.
    pub(super) refusals: Vec<requests::Refusal>,
    /// The last connect failure logged as a warning, and when: a broker that stays
    /// unreachable is said once, then again only when the reason changes or every
    /// `CONNECT_FAILURE_LOG_EVERY`, not at every retry.
    pub(super) failure_logged: Option<(String, Instant)>,
    /// The last refused publish logged as a warning, and when (same pace as above).
    pub(super) refusal_logged: Option<(String, Instant)>,
    /// Request topics this session cleared (an empty retained publish) whose echo has not
    /// come back yet: it is not counted as someone else's empty payload.
    pub(super) own_clears: std::collections::HashSet<String>,
    /// The database's life (announced in the birth message).
    pub(super) life: Option<String>,
    /// Command topics of bridged network servers, each to its radio.
    pub(super) bridges: Vec<BridgeRoute>,
}

/// Live messages (responses) in flight beyond the window of rows.
const LIVE_HEADROOM: usize = 16;

impl Session {
    /// Whether a live message (the birth, `info`, a response) fits the largest packet
    /// the broker takes. One that does not is dropped, counted in `undeliverable` and
    /// alarmed: sent, it would make the broker (or the client) close the connection,
    /// again at every reconnect.
    pub(super) fn live_fits(&self, topic: &str, payload: &[u8], props: &Props) -> bool {
        let size = topic.len() + payload.len() + props.wire_len() + 16;
        if size <= self.max_outgoing {
            return true;
        }
        tracing::error!(%topic, bytes = size, max = self.max_outgoing, "message larger than the broker's maximum packet size: not sent");
        self.status.undeliverable.fetch_add(1, Ordering::Relaxed);
        self.status.set_alarm(Some(format!(
            "a message on {topic} ({size} bytes) is larger than the broker's maximum packet size ({}) and was not sent",
            self.max_outgoing
        )));
        false
    }

    pub(super) fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        row: Option<Msg>,
    ) -> bool {
        if row.is_none() && !self.live_fits(&topic, &payload, &Props::default()) {
            return false;
        }
        match self
            .client
            .try_publish(topic, retain, payload, &Props::default())
        {
            Ok(()) => {
                self.window.handed_over(row);
                self.status.published.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "publish not handed over");
                false
            }
        }
    }

    /// Forgets everything tied to the current connection.
    pub(super) fn new_epoch(&mut self) {
        self.window.reset();
        self.buffer.clear();
        self.read_upto = 0;
        self.epoch += 1;
    }

    /// Takes the messages a commit added, as the writer read them back, when they
    /// continue where the pump's reading stands; otherwise (a gap: a reconnect, a
    /// backlog, a full buffer) they are left to be read from the store.
    pub(super) fn take_committed(&mut self, c: store::CommittedRows, window: usize) {
        self.committed_upto = self.committed_upto.max(c.upto);
        if !self.connected {
            return;
        }
        let at = self.read_after();
        if at >= c.upto {
            return;
        }
        if at < c.after || self.buffer.len() >= read_ahead(window) {
            self.more = true;
            return;
        }
        let whole = c.rows.len() < c.capacity;
        self.buffer
            .extend(c.rows.into_iter().filter(|r| r.seq > at));
        if whole {
            self.read_upto = self.read_upto.max(c.upto);
        } else {
            self.more = true;
        }
    }

    /// A read of the outbox came back with `rows`, all of those above `after` up to
    /// `upto` as of the read when there are fewer than `limit`.
    pub(super) fn fetched(&mut self, rows: Vec<outbox::OutboxRow>, upto: i64, limit: usize) {
        let whole = rows.len() < limit;
        // Rows the writer handed over meanwhile are not taken twice.
        let at = self.read_after();
        self.buffer.extend(rows.into_iter().filter(|r| r.seq > at));
        if whole {
            self.read_upto = self.read_upto.max(upto);
        }
        // More to read: the read was cut short, or commits after it were announced
        // while it ran (their rows were not taken: they did not continue it).
        self.more = !whole || self.committed_upto > self.read_after();
    }

    /// Where the next read of the outbox starts.
    pub(super) fn read_after(&self) -> i64 {
        self.buffer
            .back()
            .map(|r| r.seq)
            .unwrap_or(self.window.cursor())
            .max(self.read_upto)
    }

    pub(super) fn on_connected(&mut self) {
        self.connected = true;
        self.failure_logged = None;
        self.more = true;
        self.new_epoch();
        self.status.set_state(ConnectionState::Connected);
        self.status.connects.fetch_add(1, Ordering::Relaxed);
        // The broker keeps no session (clean session), or one that may have
        // expired (MQTT 5 session_expiry): subscribe again.
        let filters = std::iter::once(self.settings_topics.request_filter())
            .chain(self.settings_topics.device_command_filters())
            .chain(self.bridges.iter().map(|b| b.filter.clone()));
        for filter in filters {
            if let Err(e) = self.client.try_subscribe(filter) {
                tracing::warn!(error = %e, "cannot subscribe to requests");
            }
        }
        let birth = serde_json::json!({
            "state": "online",
            "gateway": self.gateway_id,
            "life": self.life,
            "version": env!("CARGO_PKG_VERSION"),
            "ts": crate::model::now_rfc3339(),
        });
        let topic = self.settings_topics.status();
        self.publish(topic, birth.to_string().into_bytes(), true, None);
        let _ = self.inbound.try_send(Inbound::PublishInfo);
    }

    pub(super) fn on_disconnected(&mut self, error: String) {
        if self.connected {
            tracing::warn!(error = %error, "upstream connection lost");
        } else {
            let now = Instant::now();
            let repeat = self.failure_logged.as_ref().is_some_and(|(last, at)| {
                *last == error && now.duration_since(*at) < CONNECT_FAILURE_LOG_EVERY
            });
            if repeat {
                tracing::debug!(error = %error, "upstream connect failed");
            } else {
                tracing::warn!(error = %error, "cannot connect to the broker; retrying with back-off (the outbox keeps everything meanwhile)");
                self.failure_logged = Some((error.clone(), now));
            }
        }
        self.connected = false;
        // Packet ids of a closed connection mean nothing on the next one; the broker
        // sends again what was not acknowledged.
        self.acks.clear();
        self.new_epoch();
        self.status.set_state(ConnectionState::Disconnected);
        self.status.set_error(error);
        self.status
            .connection_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The pkid bookkeeping disagrees with rumqttc: drop the connection so the
    /// outbox replays from the oldest undelivered row (duplicates, never loss).
    pub(super) fn resync(&mut self, why: &str) {
        tracing::error!(reason = %why, "upstream pump lost track of packet ids: reconnecting");
        self.status.set_error(format!("pump resync: {why}"));
        self.connected = false;
        self.new_epoch();
        let _ = self.client.try_disconnect();
    }

    pub(super) fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::ConnAck { max_packet } => {
                // A row the broker would refuse (it closes the connection over it)
                // is undeliverable, like one over our own limit.
                self.max_outgoing = max_packet.map_or(MAX_OUTGOING_PACKET, |m| {
                    (m as usize).min(MAX_OUTGOING_PACKET)
                });
                self.on_connected()
            }
            Ev::PubAck(pkid) => {
                if !self.connected {
                    return;
                }
                match self.window.on_puback(pkid) {
                    Ok(Some(_)) => {
                        self.status.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "ignored PUBACK"),
                }
            }
            Ev::PubRefused { pkid, reason } => {
                if !self.connected {
                    return;
                }
                let (carried, fallback) = match self.window.on_refused(pkid) {
                    Ok(refused) => refused,
                    Err(e) => return tracing::debug!(error = %e, "ignored PUBACK"),
                };
                self.status
                    .refused_by_broker
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(fallback) = fallback {
                    // An answer the broker would not take on the requester's Response
                    // Topic (its ACL keeps the gateway to its prefix): sent on the
                    // gateway's own response topic instead, saying why.
                    self.status.count_request("response_topic_refused");
                    let out = requests::refused_there(fallback, &reason);
                    tracing::info!(%reason, topic = %out.topic, "the broker refused an answer on the requester's Response Topic: sent on the gateway's own response topic");
                    self.answer_instead(out, carried);
                    return;
                }
                let what = if carried.is_some() {
                    "kept in the outbox and sent again at the next connection"
                } else {
                    "a live message, sent again when it next changes"
                };
                self.status.set_error(format!(
                    "the broker refused a publish ({reason}): {what}; check the broker's ACL for this client"
                ));
                let now = Instant::now();
                let repeat = self.refusal_logged.as_ref().is_some_and(|(last, at)| {
                    *last == reason && now.duration_since(*at) < CONNECT_FAILURE_LOG_EVERY
                });
                if repeat {
                    tracing::debug!(%reason, pkid, "publish refused by the broker");
                } else {
                    tracing::warn!(%reason, pkid, "the broker refused a publish ({reason}): {what}; check the broker's ACL for this client");
                    self.refusal_logged = Some((reason, now));
                }
            }
            Ev::Publish(p) => {
                // Taken (a request queued, refused or ignored, a downlink delivered):
                // acknowledged now, whatever the outcome.
                if let Some(token) = p.ack {
                    self.ack(token);
                }
                if let Some(route) = self.bridges.iter().find(|b| b.matches(&p.topic)) {
                    // A network server's downlink: the radio parses and answers it.
                    let outcome = route.deliver(&p.topic, &p.payload);
                    if let Err(code) = outcome {
                        tracing::warn!(radio = %route.radio, code, "bridged downlink command dropped");
                    }
                    self.status
                        .count_request(outcome.err().unwrap_or("bridged"));
                    return;
                }
                let (op, device) = match self.settings_topics.request_operation(&p.topic) {
                    Some(op) => (op, None),
                    None => match self.settings_topics.device_command(&p.topic) {
                        Some((device, op)) => (op, Some(device.to_string())),
                        None => return,
                    },
                };
                if p.payload.is_empty() {
                    // An empty payload is how a retained message is cleared (ours
                    // included): not a request, so neither answered nor audited; only
                    // someone else's is counted.
                    if !self.own_clears.remove(p.topic.as_str()) {
                        self.status.count_request("empty_ignored");
                    }
                    tracing::debug!(topic = %p.topic, "empty payload on a request topic ignored");
                    return;
                }
                let item = Inbound::Request {
                    topic: p.topic.clone(),
                    device,
                    operation: op.to_string(),
                    payload: p.payload.to_vec(),
                    retained: p.retain,
                    reply_to: p.reply_to,
                };
                match self.inbound.try_send(item) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(item)) => {
                        self.refuse(item, "busy", "too many requests in progress: retry later")
                    }
                    Err(mpsc::error::TrySendError::Closed(item)) => {
                        self.refuse(item, "shutting_down", "the gateway is stopping")
                    }
                }
            }
            Ev::OutgoingPublish(pkid) => {
                if !self.connected {
                    return;
                }
                if let Err(e) = self.window.on_outgoing_publish(pkid) {
                    self.resync(&e.to_string());
                }
            }
            Ev::AwaitAck(pkid) => {
                if !self.connected {
                    return;
                }
                if let Err(e) = self.window.on_await_ack(pkid) {
                    self.resync(&e.to_string());
                }
            }
            _ => {}
        }
    }

    /// Refuses a request the request task has no room for; its audit record is
    /// committed with others in one batch, then the response is published.
    pub(super) fn refuse(&mut self, item: Inbound, code: &'static str, message: &str) {
        let Inbound::Request {
            topic,
            operation,
            payload,
            retained,
            reply_to,
            ..
        } = item
        else {
            return;
        };
        self.status.count_request(code);
        requests::count_refused_topic(
            &self.status,
            reply_to.as_ref(),
            &self.settings_topics,
            self.v5,
        );
        self.refusals.push(requests::refusal(
            &self.gateway_id,
            &self.settings_topics,
            &topic,
            &operation,
            &payload,
            retained,
            reply_to.as_ref(),
            self.v5,
            code,
            message,
        ));
    }

    /// Queues a response for publishing, in order; past `RESPONSE_LIMIT` it is
    /// dropped, counted and logged.
    pub(super) fn respond(&mut self, out: Outbound) {
        if out.retain && out.payload.is_empty() && self.own_clears.len() < OWN_CLEARS {
            // Our own clear of a retained request comes back on the request filter.
            self.own_clears.insert(out.topic.clone());
        }
        if self.responses.len() >= RESPONSE_LIMIT {
            let n = self
                .status
                .responses_dropped
                .fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::error!(topic = %out.topic, dropped = n + 1, "response backlog full: response dropped");
            }
            return;
        }
        self.responses.push_back(out);
    }

    /// Sends `out`, an answer refused on the requester's Response Topic, on the
    /// gateway's own topic: a live answer goes first in the queue of responses; one
    /// from the outbox carries its row, deleted on this PUBACK (if the client's queue
    /// is full the row stays and is sent again at the next connection).
    fn answer_instead(&mut self, out: Outbound, row: Option<Msg>) {
        let Some(msg) = row else {
            self.responses.push_front(out);
            self.flush_responses();
            return;
        };
        if !self.live_fits(&out.topic, &out.payload, &out.props) {
            return;
        }
        match self
            .client
            .try_publish(out.topic, out.retain, out.payload, &out.props)
        {
            Ok(()) => {
                self.window.handed_over(Some(msg));
                self.status.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "answer not handed over: sent at the next connection")
            }
        }
    }

    /// Hands waiting responses to the client while it has room (it keeps them
    /// only for this connection: one lost with the connection is not sent again).
    fn ack(&mut self, token: crate::upstream::link::AckToken) {
        if !self.acks.is_empty() || self.client.try_ack(token).is_err() {
            self.acks.push_back(token);
        }
    }

    pub(super) fn flush_responses(&mut self) {
        while self.connected {
            let Some(&token) = self.acks.front() else {
                break;
            };
            if self.client.try_ack(token).is_err() {
                return;
            }
            self.acks.pop_front();
        }
        // Live messages may go past the window of rows, but never fill the client's
        // in-flight window (the window + 32, see `session::run`): a client with a
        // full one stops reading its queue, acknowledgements included, and a broker
        // waiting for those stops acknowledging ours.
        while self.connected && self.window.in_flight() < self.window.capacity() + LIVE_HEADROOM {
            let Some(mut out) = self.responses.pop_front() else {
                return;
            };
            if !self.live_fits(&out.topic, &out.payload, &out.props) {
                continue;
            }
            match self.client.try_publish(
                out.topic.clone(),
                out.retain,
                out.payload.clone(),
                &out.props,
            ) {
                Ok(()) => {
                    match requests::fallback(&mut out) {
                        Some(fallback) => self.window.handed_over_answer(None, fallback),
                        None => self.window.handed_over(None),
                    }
                    self.status.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.responses.push_front(out);
                    return;
                }
            }
        }
    }

    /// Clears the retained device messages under the topic levels renamed devices
    /// stopped using (queued behind everything already handed over on them).
    pub(super) fn clear_moved(&mut self) {
        let Some(levels) = &self.levels else {
            return;
        };
        for level in levels.take_moved() {
            for kind in crate::upstream::topics::RETAINED_DEVICE_TOPICS {
                let topic = self
                    .settings_topics
                    .outbox(&format!("device/{level}/{kind}"));
                self.respond(requests::clear_retained(&topic));
            }
        }
    }

    /// Hands buffered rows to rumqttc in seq order while the window has room.
    pub(super) fn pump(&mut self) {
        while self.connected && self.window.room() > 0 {
            let Some(row) = self.buffer.pop_front() else {
                return;
            };
            if self.window.is_acked(row.seq) {
                self.window.skip(row.seq);
                continue;
            }
            // An MQTT 5 answer also carries its Response Topic, Correlation Data and
            // user properties (the reason string is no longer than the payload).
            let answer = self.v5 && row.kind == outbox::MessageKind::Response.as_str();
            let extra = if answer {
                row.payload.len()
                    + row.reply_to.as_ref().map_or(0, |r| {
                        r.topic.len() + r.correlation_data.as_ref().map_or(0, Vec::len)
                    })
            } else {
                0
            };
            if row.payload.len() + row.topic.len() + extra + 64 > self.max_outgoing {
                tracing::error!(seq = row.seq, bytes = row.payload.len(), kind = %row.kind, "outbox row too large to publish: removed");
                self.status.undeliverable.fetch_add(1, Ordering::Relaxed);
                self.status.set_alarm(Some(format!(
                    "outbox row {} was too large to publish and was removed",
                    row.seq
                )));
                self.window.skip(row.seq);
                self.window.settle(msg_of(&row));
                continue;
            }
            // Bridged frames go where the network server listens, outside the prefix.
            let topic = if row.kind == outbox::MessageKind::Bridge.as_str() {
                row.topic.clone()
            } else if let Some(named) = self.levels.as_ref().and_then(|l| l.rewrite(&row.topic)) {
                self.settings_topics.outbox(&named)
            } else {
                self.settings_topics.outbox(&row.topic)
            };
            let msg = msg_of(&row);
            let mut fallback = None;
            let (topic, payload, props) = if answer {
                // An answer given later (a held request's `queued`, `delivered`, ...):
                // addressed like one given at once, to the requester's Response Topic
                // (checked again: the prefix may have changed) with its Correlation Data.
                let mut out = requests::address(
                    Outbound {
                        topic,
                        payload: row.payload,
                        retain: row.retain,
                        props: Props::default(),
                    },
                    row.reply_to.as_ref(),
                    &self.settings_topics,
                    true,
                );
                fallback = requests::fallback(&mut out);
                (out.topic, out.payload, Cow::Owned(out.props))
            } else if row.kind == "telemetry" {
                (topic, row.payload, Cow::Borrowed(&self.telemetry_props))
            } else {
                (topic, row.payload, Cow::Owned(Props::default()))
            };
            match self.client.try_publish(topic, row.retain, payload, &props) {
                Ok(()) => {
                    if answer {
                        requests::count_refused_topic(
                            &self.status,
                            row.reply_to.as_ref(),
                            &self.settings_topics,
                            true,
                        );
                    }
                    match fallback {
                        Some(fallback) => self.window.handed_over_answer(Some(msg), fallback),
                        None => self.window.handed_over(Some(msg)),
                    }
                    self.status.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // The client's queue is full: drop the read-ahead; the next
                    // read starts again after the last row handed over. What was read
                    // past it is read again: without moving `read_upto` back, the
                    // dropped rows were skipped until the next connection (later
                    // seqs went out first, a retained state after a newer one).
                    tracing::debug!(error = %e, seq = row.seq, "publish not handed over");
                    self.more = true;
                    self.buffer.clear();
                    self.read_upto = self.window.cursor();
                    // A read under way started past them too: its rows are not taken.
                    self.epoch += 1;
                    return;
                }
            }
        }
    }
}
