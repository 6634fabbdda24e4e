//! Radio events in, one transaction out: a burst of device events is applied
//! under one commit (each event under its own savepoint), merging readings per
//! device, updating the registry and queueing telemetry, state and lifecycle
//! messages; then the hub acts on what was decided (notices, radio actions, held
//! requests, rules). No radio IO happens inside the transaction.

mod event;

use super::*;
use event::*;

use crate::store::run_cached;

/// Applies one device event inside the batch transaction.
/// Applies a burst of events in the caller's transaction. The fast path runs them
/// all under one savepoint; only when one of them fails is the burst rolled back and
/// replayed with a savepoint per event, so that the failing event does not undo the
/// others. (A savepoint per event on every burst costs a page copy per event for the
/// pages it touches: about a quarter of the writer's time under load.)
pub(in crate::hub) fn apply_events(
    c: &Connection,
    ctx: &EventContext,
    batch: &[DeviceEvent],
) -> Result<Vec<Applied>, StoreError> {
    if ctx.state_interval_ms > 0 {
        // States due (and past their grace) ride this commit, ahead of the burst's
        // own messages (they hold readings of earlier bursts).
        let now = ctx.state_pace().now_ms;
        queue_due_states(c, &ctx.gateway_id, now, now - STATE_GRACE_MS)?;
    }
    run_cached(c, "SAVEPOINT events")?;
    if let Ok(out) = apply_burst(c, ctx, batch) {
        run_cached(c, "RELEASE events")?;
        return Ok(out);
    }
    run_cached(c, "ROLLBACK TO events")?;
    crate::store::capture::spoil();
    let mut out = Vec::with_capacity(batch.len());
    for ev in batch {
        run_cached(c, "SAVEPOINT event")?;
        match apply_event(c, ctx, ev) {
            Ok(applied) => {
                run_cached(c, "RELEASE event")?;
                out.push(applied);
            }
            Err(e) => {
                c.execute_batch("ROLLBACK TO event; RELEASE event")?;
                crate::store::capture::spoil();
                tracing::error!(device = %ev.device_id(), error = %e, "could not record a device event");
            }
        }
    }
    if let Err(e) = queue_states(c, ctx, &out) {
        c.execute_batch("ROLLBACK TO events; RELEASE events")?;
        crate::store::capture::spoil();
        return Err(e);
    }
    run_cached(c, "RELEASE events")?;
    Ok(out)
}

/// Readings of one live device inside a burst, merged in memory and written once.
pub(in crate::hub) struct Merging<'e> {
    id: DeviceId,
    /// The device's row in the registry, read once with its health.
    row: i64,
    /// Its telemetry stays in the gateway (see [`held_back`]).
    held: bool,
    /// Its stored state as read with its row, and how many events of the burst had
    /// gone the slow way (`apply_event`) then: when more have since, any row may
    /// have changed and the merge reads it again.
    stored: registry::StoredState,
    read_after: usize,
    patch: serde_json::Map<String, serde_json::Value>,
    at: SystemTime,
    health: serde_json::Value,
    telemetry: PendingTelemetry<'e>,
}

impl Merging<'_> {
    /// Queues the device's pending telemetry, writes the merged readings to the
    /// registry and queues the retained state.
    pub(super) fn flush(
        mut self,
        c: &Connection,
        ctx: &EventContext,
        seqs: &mut outbox::SeqCursor,
        assigned: &mut Vec<(usize, i64)>,
        slow_events: usize,
    ) -> Result<(), StoreError> {
        self.telemetry.flush(c, seqs, ctx, &self.id, assigned)?;
        let read = (self.read_after == slow_events).then_some(self.stored);
        let merged = registry::merge_state(
            c,
            self.row,
            &self.id,
            read,
            &self.patch,
            &rfc3339(self.at),
            ctx.state_pace(),
        )?;
        if let Some((state, true)) = merged {
            // A discovered device's state stays in the registry until it is adopted.
            if !self.held {
                append_state(c, seqs, &ctx.gateway_id, &self.id, &state, self.at)?;
            }
        }
        Ok(())
    }
}

/// One device's telemetry messages within a burst, not yet queued: they go into the
/// outbox together as one row (one insert, one delete), each still its own message
/// with its own seq, `msg_id` and `ts`. Queued before any other message about the
/// device, so the device's messages keep their order.
#[derive(Default)]
pub(in crate::hub) struct PendingTelemetry<'e> {
    /// The readings, when they were received, and the index of their event's outcome.
    items: Vec<(&'e [Reading], SystemTime, usize)>,
}

#[derive(serde::Serialize)]
pub(in crate::hub) struct Telemetry<'a> {
    readings: &'a [Reading],
}

impl<'e> PendingTelemetry<'e> {
    /// Queues what is pending; `assigned` gets (outcome index, seq) for each message.
    pub(super) fn flush(
        &mut self,
        c: &Connection,
        seqs: &mut outbox::SeqCursor,
        ctx: &EventContext,
        id: &DeviceId,
        assigned: &mut Vec<(usize, i64)>,
    ) -> Result<(), StoreError> {
        if self.items.is_empty() {
            return Ok(());
        }
        let items: Vec<(Telemetry<'e>, SystemTime)> = self
            .items
            .iter()
            .map(|(readings, at, _)| (Telemetry { readings }, *at))
            .collect();
        let got = outbox::append_batch(
            c,
            seqs,
            &ctx.gateway_id,
            &outbox::Header {
                kind: MessageKind::Telemetry,
                device: Some(id),
                topic: &format!("device/{id}/telemetry"),
                retain: false,
                event_time: items[0].1,
            },
            &items,
        )?;
        assigned.extend(self.items.drain(..).map(|(_, _, i)| i).zip(got));
        Ok(())
    }
}

/// Where a reading's telemetry message goes.
pub(in crate::hub) enum TelemetrySink<'a, 'e> {
    /// Into the outbox now.
    Now(&'a mut outbox::SeqCursor),
    /// Into the device's pending telemetry (the burst's fast path); `index` is the
    /// event's outcome in the burst; `held` says whether the device's telemetry
    /// stays in the gateway (see [`held_back`]), known from its row.
    Pending {
        held: bool,
        seqs: &'a mut outbox::SeqCursor,
        telemetry: &'a mut PendingTelemetry<'e>,
        index: usize,
        assigned: &'a mut Vec<(usize, i64)>,
    },
}

impl TelemetrySink<'_, '_> {
    /// Queues pending telemetry before another message about the device.
    pub(super) fn flush(
        &mut self,
        c: &Connection,
        ctx: &EventContext,
        id: &DeviceId,
    ) -> Result<(), StoreError> {
        match self {
            TelemetrySink::Now(_) => Ok(()),
            TelemetrySink::Pending {
                seqs,
                telemetry,
                assigned,
                ..
            } => telemetry.flush(c, seqs, ctx, id, assigned),
        }
    }
}

/// The fast path of a burst: readings from known, live devices are merged in memory
/// per device and written once per device (one registry update and one retained
/// state message per device per burst, each reading still its own telemetry);
/// every other event, and the first reading of an unknown device, goes through
/// `apply_event`, after the device's pending merge has been written so that the
/// event sees the registry as it would one event at a time.
pub(in crate::hub) fn apply_burst(
    c: &Connection,
    ctx: &EventContext,
    batch: &[DeviceEvent],
) -> Result<Vec<Applied>, StoreError> {
    let mut out: Vec<Applied> = Vec::with_capacity(batch.len());
    let mut seqs = outbox::SeqCursor::default();
    // (outcome index, seq) of each telemetry message queued from pending telemetry.
    let mut assigned: Vec<(usize, i64)> = Vec::new();
    let mut merging: Vec<Option<Merging>> = Vec::new();
    let mut slot_of: HashMap<DeviceId, usize> = HashMap::new();
    // Events that went through `apply_event`, which may write any device's row.
    let mut slow_events = 0usize;
    for ev in batch {
        let id = ev.device_id();
        if let DeviceEventKind::Readings(readings) = &ev.kind {
            let slot = match slot_of.get(&id) {
                Some(&i) => Some(i),
                None => registry::live_row(c, &id)?.map(|live| {
                    merging.push(Some(Merging {
                        id: id.clone(),
                        row: live.row,
                        held: live.pending && discovered(&id),
                        stored: live.stored,
                        read_after: slow_events,
                        patch: serde_json::Map::new(),
                        at: ev.received_at,
                        health: parse_health(&live.health),
                        telemetry: PendingTelemetry::default(),
                    }));
                    slot_of.insert(id.clone(), merging.len() - 1);
                    merging.len() - 1
                }),
            };
            if let Some(m) = slot.and_then(|i| merging[i].as_mut()) {
                for r in readings {
                    m.patch.insert(
                        r.name.clone(),
                        serde_json::to_value(&r.value).unwrap_or(serde_json::Value::Null),
                    );
                }
                m.at = ev.received_at;
                let mut applied = Applied {
                    spoke: Some(id.to_string()),
                    ..Applied::default()
                };
                readings_recorded(
                    c,
                    TelemetrySink::Pending {
                        held: m.held,
                        seqs: &mut seqs,
                        telemetry: &mut m.telemetry,
                        index: out.len(),
                        assigned: &mut assigned,
                    },
                    ctx,
                    &id,
                    readings,
                    &mut m.health,
                    ev.received_at,
                    &mut applied,
                )?;
                out.push(applied);
                continue;
            }
        }
        if let Some(m) = slot_of.remove(&id).and_then(|i| merging[i].take()) {
            m.flush(c, ctx, &mut seqs, &mut assigned, slow_events)?;
        }
        slow_events += 1;
        let mut applied = apply_event(c, ctx, ev)?;
        if let Some((id, state, at)) = applied.state.take() {
            queue_state(c, &mut seqs, ctx, &id, &state, at)?;
        }
        out.push(applied);
    }
    for m in merging.into_iter().flatten() {
        m.flush(c, ctx, &mut seqs, &mut assigned, slow_events)?;
    }
    for (index, seq) in assigned {
        for notice in &mut out[index].notices {
            if let Notice::Readings { outbox_seq, .. } = notice {
                *outbox_seq = Some(seq);
            }
        }
    }
    Ok(out)
}

/// Queues a device's retained state message now, whatever `[store] state_interval`
/// says (the device's first reading, or a burst replayed event by event), and
/// notes it as the last one queued. `seqs` is the burst's cursor: its life and the
/// next seq are then known without asking the database again (with many devices a
/// burst queues one state per device; a fresh cursor cost two lookups each).
pub(in crate::hub) fn queue_state(
    c: &Connection,
    seqs: &mut outbox::SeqCursor,
    ctx: &EventContext,
    id: &DeviceId,
    state: &str,
    at: SystemTime,
) -> Result<i64, StoreError> {
    let seq = append_state(c, seqs, &ctx.gateway_id, id, state, at)?;
    registry::state_queued(c, id, ctx.state_pace().now_ms)?;
    Ok(seq)
}

/// Appends a device's retained state message to the outbox.
fn append_state(
    c: &Connection,
    seqs: &mut outbox::SeqCursor,
    gw: &str,
    id: &DeviceId,
    state: &str,
    at: SystemTime,
) -> Result<i64, StoreError> {
    let data: serde_json::Value = serde_json::from_str(state).unwrap_or_else(|_| json!({}));
    outbox::append_data(
        c,
        seqs,
        gw,
        &outbox::Header {
            kind: MessageKind::State,
            device: Some(id),
            topic: &format!("device/{id}/state"),
            retain: true,
            event_time: at,
        },
        &data,
    )
}

/// Most waiting states queued in one transaction.
const DUE_STATES_PER_COMMIT: usize = 2_000;

/// How long a due state waits on top of its interval for the device's next reading
/// to take it along: a reading after the interval queues the state itself, from the
/// row it writes anyway, where a due state queued on its own costs a read and a
/// write of the row. Only a device that stays quiet gets its state from here.
pub(in crate::hub) const STATE_GRACE_MS: i64 = 250;

/// Queues the retained states that waited for `[store] state_interval` and are due
/// by `until_ms` (all of them with `i64::MAX`), each with the device's state now
/// and the time of its last reading; a decommissioned device's is dropped. True
/// when more may be due than one transaction takes.
pub(in crate::hub) fn queue_due_states(
    c: &Connection,
    gw: &str,
    now_ms: i64,
    until_ms: i64,
) -> Result<bool, StoreError> {
    let due = registry::due_states(c, until_ms, DUE_STATES_PER_COMMIT)?;
    if due.is_empty() {
        return Ok(false);
    }
    let full = due.len() == DUE_STATES_PER_COMMIT;
    let mut seqs = outbox::SeqCursor::default();
    for d in &due {
        // Decommissioned since, or a discovered device still pending: nothing to send.
        let held = d.pending && discovered(&d.id);
        if !d.gone && !held {
            let at = humantime::parse_rfc3339(&d.last_seen).unwrap_or_else(|_| SystemTime::now());
            append_state(c, &mut seqs, gw, &d.id, &d.state, at)?;
        }
        if full {
            registry::due_state_done(c, d.row, now_ms)?;
        }
    }
    if !full {
        // Every state due by `until_ms` was read: one statement marks them all.
        registry::due_states_done(c, until_ms, now_ms)?;
    }
    Ok(full)
}

/// Queues one retained state message per device whose readings changed it in this
/// burst, carrying its state at the end of the burst. The state topic holds the
/// latest state only, so states superseded inside the same commit are never sent;
/// every reading itself goes out as telemetry.
pub(in crate::hub) fn queue_states(
    c: &Connection,
    ctx: &EventContext,
    applied: &[Applied],
) -> Result<(), StoreError> {
    let mut last: Vec<(&DeviceId, &String, SystemTime)> = Vec::new();
    let mut slot_of: HashMap<&DeviceId, usize> = HashMap::new();
    for (id, state, at) in applied.iter().filter_map(|a| a.state.as_ref()) {
        match slot_of.get(id) {
            Some(&i) => last[i] = (id, state, *at),
            None => {
                slot_of.insert(id, last.len());
                last.push((id, state, *at));
            }
        }
    }
    for (id, state, at) in last {
        queue_state(c, &mut outbox::SeqCursor::default(), ctx, id, state, at)?;
    }
    Ok(())
}

/// Whether a device's telemetry stays in the gateway: a device that was discovered rather
/// than joined (BLE: anything in range) sends nothing upstream until it is adopted
/// (active). Its state is still recorded. Costs a lookup only for such radios' devices.
pub(in crate::hub) fn held_back(c: &Connection, id: &DeviceId) -> Result<bool, StoreError> {
    if !discovered(id) {
        return Ok(false);
    }
    Ok(registry::get(c, id)?.is_none_or(|d| d.lifecycle == Lifecycle::Pending.as_str()))
}

/// Whether the device's radio discovers devices rather than letting them join (BLE).
pub(in crate::hub) fn discovered(id: &DeviceId) -> bool {
    id.protocol()
        .and_then(crate::radio::capabilities)
        .is_some_and(|caps| caps.max_join_window.is_none())
}

/// What follows a reading once the registry knows it: its telemetry, and the health
/// flags it clears or raises (`health` is the device's current flags, kept up to date).
#[allow(clippy::too_many_arguments)] // the writer's context, the event's parts, and its output
pub(in crate::hub) fn readings_recorded<'e>(
    c: &Connection,
    mut sink: TelemetrySink<'_, 'e>,
    ctx: &EventContext,
    id: &DeviceId,
    readings: &'e [Reading],
    health: &mut serde_json::Value,
    at: SystemTime,
    out: &mut Applied,
) -> Result<bool, StoreError> {
    let gw: &str = &ctx.gateway_id;
    let held = match &sink {
        TelemetrySink::Pending { held, .. } => *held,
        TelemetrySink::Now(_) => held_back(c, id)?,
    };
    let telemetry_seq = if !ctx.queue_telemetry || held {
        None
    } else {
        match &mut sink {
            TelemetrySink::Now(seqs) => Some(outbox::append_data(
                c,
                seqs,
                gw,
                &outbox::Header {
                    kind: MessageKind::Telemetry,
                    device: Some(id),
                    topic: &format!("device/{id}/telemetry"),
                    retain: false,
                    event_time: at,
                },
                &Telemetry { readings },
            )?),
            TelemetrySink::Pending {
                seqs,
                telemetry,
                index,
                assigned,
                ..
            } => {
                if telemetry.items.len() >= outbox::MAX_ROW_MESSAGES {
                    telemetry.flush(c, seqs, ctx, id, assigned)?;
                }
                telemetry.items.push((readings, at, *index));
                // The seq is known once the row is written (end of the burst).
                None
            }
        }
    };
    if health.get("offline").is_some() && registry::set_health_flag(c, id, "offline", false)? {
        sink.flush(c, ctx, id)?;
        if let Some(flags) = health.as_object_mut() {
            flags.remove("offline");
        }
        if !held {
            availability_msg(c, gw, id, true, at)?;
        }
        lifecycle_msg(
            c,
            gw,
            id,
            "health",
            json!({"flag": "offline", "raised": false}),
            at,
        )?;
        out.notices.push(Notice::Health {
            device: id.to_string(),
            flag: "offline".into(),
            raised: false,
        });
    }
    health_flags(c, &mut sink, ctx, id, health, readings, out, at)?;
    presence_changes(c, &mut sink, ctx, id, readings, at)?;
    if ctx.notify_readings {
        out.notices.push(Notice::Readings {
            device: id.to_string(),
            readings: readings.to_vec(),
            outbox_seq: telemetry_seq,
        });
    }
    if ctx.rules {
        out.readings = Some((id.to_string(), readings.to_vec()));
    }
    Ok(held)
}

/// The link metrics of a frame that carried readings join them under their
/// documented names (`linkquality`, `rssi`, `snr`): telemetry and the weak-link
/// health flag see them like any other value.
fn with_link_readings(ev: &mut DeviceEvent) {
    if let (Some(link), DeviceEventKind::Readings(readings)) = (&ev.link, &mut ev.kind) {
        for r in link.readings() {
            if !readings.iter().any(|have| have.name == r.name) {
                readings.push(r);
            }
        }
    }
}

/// A burst handed to the store writer and not yet committed.
pub(in crate::hub) struct InFlight {
    pub(in crate::hub) done: oneshot::Receiver<Result<Vec<Applied>, StoreError>>,
    pub(in crate::hub) events: usize,
}

impl Hub {
    /// Whether the disk holding the database is full (looked at again at most once a
    /// second, so that space coming back is seen even while nothing is written).
    pub(in crate::hub) fn disk_full(&self) -> bool {
        let stats = self.writer.stats();
        stats.disk.recheck(&stats.log);
        stats.disk.is_full()
    }

    /// A burst that could not be committed: one log line per 10 s, with the count.
    fn commit_failed(&self, events: usize, e: &StoreError) {
        if let Some(bursts) = self.writer.stats().log.hit("device_commit") {
            tracing::error!(bursts, events, error = %e, "could not commit device events");
        }
    }

    /// Applies a burst and waits for its commit.
    pub(in crate::hub) async fn on_events(&mut self, batch: Vec<DeviceEvent>) {
        if let Some(b) = self.submit_events(batch).await {
            let result = b.done.await;
            self.committed(b.events, result).await;
        }
    }

    /// Hands a burst to the store writer without waiting for its commit, so the hub
    /// can gather the next burst while this one commits and the writer can commit
    /// several bursts (and the uplink's deletes) under one fsync.
    pub(in crate::hub) async fn submit_events(
        &mut self,
        mut batch: Vec<DeviceEvent>,
    ) -> Option<InFlight> {
        if self.disk_full() {
            let stats = self.writer.stats();
            let events = batch.len() as u64;
            stats
                .disk
                .events_not_stored
                .fetch_add(events, std::sync::atomic::Ordering::Relaxed);
            if let Some(bursts) = stats.log.hit("events_not_stored") {
                tracing::error!(
                    bursts,
                    events_not_stored = stats.disk.events_not_stored.load(std::sync::atomic::Ordering::Relaxed),
                    "the disk is full: device events are not stored until space is freed (what is left is kept for audit records and a clean stop)"
                );
            }
            return None;
        }
        for ev in &mut batch {
            with_link_readings(ev);
        }
        let ctx = EventContext {
            gateway_id: self.gateway_id.clone(),
            policy: self.policy.clone(),
            open_windows: self
                .join_windows
                .keys()
                .filter(|r| self.window_open(r))
                .cloned()
                .collect(),
            queue_telemetry: self.outbox_gate.admit(MessageKind::Telemetry),
            notify_readings: self.notices.receiver_count() > 0,
            rules: !self.policy.policy.rules.is_empty(),
            state_interval_ms: self.state_interval.as_millis().min(i64::MAX as u128) as i64,
        };
        if !self.state_interval.is_zero() && self.state_flush_at.is_none() {
            // A state this burst holds back is due within one interval.
            self.state_flush_at = Some(tokio::time::Instant::now() + self.state_interval);
        }
        let events = batch.len();
        match self
            .writer
            .queue(move |c| apply_events(c, &ctx, &batch))
            .await
        {
            Ok(done) => Some(InFlight { done, events }),
            Err(e) => {
                self.commit_failed(events, &e);
                None
            }
        }
    }

    /// Acts on a committed burst: notices, radio actions, held requests, rules.
    pub(in crate::hub) async fn committed(
        &mut self,
        count: usize,
        result: Result<Result<Vec<Applied>, StoreError>, oneshot::error::RecvError>,
    ) {
        let applied = match result.unwrap_or(Err(StoreError::WriterGone)) {
            Ok(a) => {
                self.outbox_gate.appended();
                a
            }
            Err(e) => {
                self.commit_failed(count, &e);
                return;
            }
        };
        let mut rule_input = Vec::new();
        let mut awake = Vec::new();
        let dropped_before = self.leaves.dropped;
        for a in applied {
            if let Some((command_id, ok, detail, state)) = a.result {
                if let Some((attributes, tx)) = self.refreshing.remove(&command_id) {
                    let answer = if ok {
                        Ok(json!({"command_id": command_id, "detail": detail,
                                  "state": state_subset(&state, &attributes)}))
                    } else {
                        Err(detail)
                    };
                    let _ = tx.send(answer);
                }
            }
            for n in a.notices {
                self.notify(n);
            }
            for (radio, cmd) in a.radio_actions {
                // Leave requests queue up (one per device, however many of its frames
                // the burst held) and go out as the radio has room for them.
                match cmd {
                    RadioCommand::Remove { native_address } => {
                        self.leaves.push(&radio, &native_address)
                    }
                    cmd => {
                        let _ = self.send_to_radio(&radio, cmd);
                    }
                }
            }
            if let Some(r) = a.readings {
                rule_input.push(r);
            }
            awake.extend(a.spoke);
        }
        if !self.leaves.is_empty() {
            self.send_leaves();
        }
        if self.leaves.dropped > dropped_before {
            tracing::warn!(
                given_up = self.leaves.dropped - dropped_before,
                waiting = self.leaves.len(),
                "more devices must leave than can wait to be told: the oldest are asked again when they next speak"
            );
        }
        awake.sort();
        awake.dedup();
        for device in awake {
            if self.queued.contains(&device) {
                self.dispatch_held(&device).await;
            }
        }
        for (device, readings) in rule_input {
            self.run_rules(&device, &readings).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::model::{LinkMetrics, Reading, Value};

    fn uplink(readings: Vec<Reading>) -> DeviceEvent {
        DeviceEvent {
            radio: "lora0".into(),
            protocol: Protocol::Lora,
            native_address: "70b3d57ed0000001".into(),
            received_at: std::time::SystemTime::now(),
            kind: DeviceEventKind::Readings(readings),
            link: Some(LinkMetrics {
                rssi_dbm: Some(-60.0),
                lqi: None,
                snr_db: Some(7.5),
            }),
        }
    }

    fn names(ev: &DeviceEvent) -> Vec<String> {
        match &ev.kind {
            DeviceEventKind::Readings(r) => r.iter().map(|r| r.name.clone()).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn link_metrics_become_rssi_and_snr_readings_once() {
        let t = Reading {
            name: "temperature".into(),
            value: Value::Number(21.0),
            unit: Some("°C".into()),
        };
        let mut ev = uplink(vec![t.clone()]);
        with_link_readings(&mut ev);
        assert_eq!(names(&ev), ["temperature", "rssi", "snr"]);
        // Applied again (a re-submitted burst), or to readings that already carry them
        // from the driver: still one of each, the driver's value kept.
        with_link_readings(&mut ev);
        assert_eq!(names(&ev), ["temperature", "rssi", "snr"]);
        let own = Reading {
            name: "rssi".into(),
            value: Value::Number(-99.0),
            unit: Some("dBm".into()),
        };
        let mut ev = uplink(vec![t, own]);
        with_link_readings(&mut ev);
        assert_eq!(names(&ev), ["temperature", "rssi", "snr"]);
        let DeviceEventKind::Readings(r) = &ev.kind else {
            unreachable!()
        };
        assert_eq!(r[1].value, Value::Number(-99.0));
    }
}
