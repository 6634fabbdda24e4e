//! The outbox pump's bookkeeping: which outbox row each MQTT packet id carries,
//! so a row is deleted only on its own PUBACK.
//!
//! Pure state, no IO (like rumqttc's `state.rs`): the session feeds it what it
//! hands to rumqttc and what rumqttc reports, and asks it what to read next and
//! what may be deleted. rumqttc reports `Outgoing::Publish(pkid)` in the order
//! requests were handed to it, so a FIFO of "handed over, pkid not yet known"
//! entries maps each pkid to its row. After a disconnect everything unacked is
//! forgotten and the next read starts again from the oldest row still stored:
//! rumqttc's own in-RAM queue is never trusted across connections.
//!
//! A stored row may hold several messages (consecutive seqs); it becomes deletable
//! only when every one of them is acknowledged, possibly across connections.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::requests::Outbound;

/// One outbox message: its seq, and the first and last seq of the row holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    pub seq: i64,
    pub row: i64,
    pub last: i64,
}

impl Msg {
    /// A message that is a row of its own.
    pub fn single(seq: i64) -> Msg {
        Msg {
            seq,
            row: seq,
            last: seq,
        }
    }
}

/// One publish handed to rumqttc: an outbox message, or a live message (birth,
/// info, response) that has no row.
pub type Carried = Option<Msg>;

/// What the window remembers of one publish: its row, and for an MQTT 5 answer sent
/// to the requester's Response Topic, the same answer addressed to the gateway's own
/// response topic, to send instead if the broker refuses the first.
#[derive(Debug)]
struct Slot {
    carried: Carried,
    fallback: Option<Box<Outbound>>,
}

impl Slot {
    fn new(carried: Carried) -> Slot {
        Slot {
            carried,
            fallback: None,
        }
    }
}

#[derive(Debug)]
pub struct Window {
    capacity: usize,
    /// Handed to rumqttc, `Outgoing::Publish` not yet seen; in hand-over order.
    handed: VecDeque<Slot>,
    /// A publish rumqttc parked on a packet-id collision (`Outgoing::AwaitAck`);
    /// its `Outgoing::Publish` comes later, before any newer one.
    parked: Option<Slot>,
    /// Sent, waiting for PUBACK.
    inflight: HashMap<u16, Slot>,
    /// Messages acked but not yet deleted from the store: never sent again.
    acked: BTreeSet<i64>,
    /// Seqs of rows whose every message is acked: ready to delete.
    complete: BTreeSet<i64>,
    /// Rows of several messages partly acked: how many of their messages are.
    partial: HashMap<i64, i64>,
    /// Highest row seq handed over in this connection; reads continue after it.
    cursor: i64,
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        Window {
            capacity: capacity.max(1),
            handed: VecDeque::new(),
            parked: None,
            inflight: HashMap::new(),
            acked: BTreeSet::new(),
            complete: BTreeSet::new(),
            partial: HashMap::new(),
            cursor: 0,
        }
    }

    /// Publishes in flight (handed over or sent, not yet acked).
    pub fn in_flight(&self) -> usize {
        self.handed.len() + self.inflight.len() + usize::from(self.parked.is_some())
    }

    /// Rows in flight at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many more rows may be handed over now.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.in_flight())
    }

    /// Read rows with seq greater than this.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// True when a row read from the store must not be sent (already acked).
    pub fn is_acked(&self, seq: i64) -> bool {
        self.acked.contains(&seq)
    }

    /// Moves the cursor past a row that is skipped (already acked, or dropped).
    pub fn skip(&mut self, seq: i64) {
        self.cursor = self.cursor.max(seq);
    }

    /// A publish was handed to rumqttc.
    pub fn handed_over(&mut self, carried: Carried) {
        self.hand_over(Slot::new(carried));
    }

    /// An answer was handed to rumqttc on the requester's Response Topic; `fallback`
    /// is handed back by [`Window::on_refused`] if the broker refuses it there.
    pub fn handed_over_answer(&mut self, carried: Carried, fallback: Outbound) {
        self.hand_over(Slot {
            carried,
            fallback: Some(Box::new(fallback)),
        });
    }

    fn hand_over(&mut self, slot: Slot) {
        if let Some(m) = slot.carried {
            self.cursor = self.cursor.max(m.seq);
        }
        self.handed.push_back(slot);
    }

    /// `Outgoing::Publish(pkid)`.
    pub fn on_outgoing_publish(&mut self, pkid: u16) -> Result<(), PumpError> {
        let slot = match self.parked.take() {
            Some(c) => c,
            None => self
                .handed
                .pop_front()
                .ok_or(PumpError::UnexpectedPublish(pkid))?,
        };
        if pkid == 0 {
            // QoS 0 never gets a PUBACK; nothing to track.
            return Ok(());
        }
        if self.inflight.insert(pkid, slot).is_some() {
            return Err(PumpError::PkidReused(pkid));
        }
        Ok(())
    }

    /// `Outgoing::AwaitAck(pkid)`: the next handed-over publish is parked.
    pub fn on_await_ack(&mut self, pkid: u16) -> Result<(), PumpError> {
        let slot = self
            .handed
            .pop_front()
            .ok_or(PumpError::UnexpectedPublish(pkid))?;
        self.parked = Some(slot);
        Ok(())
    }

    /// `Incoming::PubAck(pkid)`: returns the message acknowledged, if it has a row.
    pub fn on_puback(&mut self, pkid: u16) -> Result<Carried, PumpError> {
        let carried = self
            .inflight
            .remove(&pkid)
            .ok_or(PumpError::UnknownAck(pkid))?
            .carried;
        if let Some(m) = carried {
            self.settle(m);
        }
        Ok(carried)
    }

    /// An MQTT 5 PUBACK that refuses the publish: no longer in flight, but not done
    /// with either. Its row stays in the outbox and is sent again after the next
    /// (re)connection, when the window re-reads the store, unless the session sends
    /// the answer's fallback (returned with it) carrying the row instead.
    pub fn on_refused(&mut self, pkid: u16) -> Result<(Carried, Option<Outbound>), PumpError> {
        let slot = self
            .inflight
            .remove(&pkid)
            .ok_or(PumpError::UnknownAck(pkid))?;
        Ok((slot.carried, slot.fallback.map(|f| *f)))
    }

    /// A message is done with: acknowledged, or found undeliverable and skipped.
    /// Its row becomes deletable once all of its messages are.
    pub fn settle(&mut self, m: Msg) {
        if !self.acked.insert(m.seq) {
            return;
        }
        if m.last <= m.row {
            self.complete.insert(m.seq);
            return;
        }
        let done = self.partial.entry(m.row).or_insert(0);
        *done += 1;
        if *done > m.last - m.row {
            self.partial.remove(&m.row);
            self.complete.extend(m.row..=m.last);
        }
    }

    /// How many seqs of completely acked rows wait to be deleted.
    pub fn deletable(&self) -> usize {
        self.complete.len()
    }

    /// Seqs of completely acked rows not yet deleted, oldest first (at most `max`).
    /// A row is deleted by its first seq, so a cut inside a row is harmless.
    pub fn take_deletable(&self, max: usize) -> Vec<i64> {
        self.complete.iter().take(max).copied().collect()
    }

    /// The store confirmed these rows are gone.
    pub fn deleted(&mut self, seqs: &[i64]) {
        for s in seqs {
            self.acked.remove(s);
            self.complete.remove(s);
        }
    }

    /// The connection is gone: unacked publishes will be re-read from the store.
    /// Acked rows still waiting for their delete stay remembered.
    pub fn reset(&mut self) {
        self.handed.clear();
        self.parked = None;
        self.inflight.clear();
        self.cursor = 0;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PumpError {
    #[error("rumqttc reported a publish (pkid {0}) the pump did not hand over")]
    UnexpectedPublish(u16),
    #[error("packet id {0} is already in flight")]
    PkidReused(u16),
    #[error("PUBACK for packet id {0}, which is not in flight")]
    UnknownAck(u16),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_map_to_pkids_in_send_order_and_free_only_on_their_ack() {
        let mut w = Window::new(3);
        w.handed_over(Some(Msg::single(10)));
        w.handed_over(None); // a response
        w.handed_over(Some(Msg::single(11)));
        assert_eq!(w.room(), 0);
        assert_eq!(w.cursor(), 11);
        w.on_outgoing_publish(1).unwrap();
        w.on_outgoing_publish(2).unwrap();
        w.on_outgoing_publish(3).unwrap();
        // Out-of-order acks free the right rows.
        assert_eq!(w.on_puback(3).unwrap(), Some(Msg::single(11)));
        assert_eq!(w.on_puback(2).unwrap(), None);
        assert_eq!(w.take_deletable(10), vec![11]);
        assert!(w.is_acked(11));
        assert_eq!(w.room(), 2);
        assert_eq!(w.on_puback(9), Err(PumpError::UnknownAck(9)));
        w.deleted(&[11]);
        assert!(!w.is_acked(11));
    }

    /// A PUBACK that refuses the publish frees its slot but does not make its row
    /// deletable; the row is sent again after the next reset.
    #[test]
    fn a_refused_publish_frees_its_slot_but_keeps_its_row() {
        let mut w = Window::new(2);
        w.handed_over(Some(Msg::single(5)));
        w.handed_over(Some(Msg::single(6)));
        w.on_outgoing_publish(1).unwrap();
        w.on_outgoing_publish(2).unwrap();
        assert_eq!(w.on_refused(1).unwrap(), (Some(Msg::single(5)), None));
        assert_eq!(w.on_puback(2).unwrap(), Some(Msg::single(6)));
        assert_eq!(w.room(), 2);
        assert_eq!(w.take_deletable(10), vec![6]);
        assert!(!w.is_acked(5));
        w.reset();
        assert_eq!(w.cursor(), 0, "re-read from the store, row 5 included");
        assert_eq!(w.on_refused(1), Err(PumpError::UnknownAck(1)));
    }

    /// An answer sent to a Response Topic carries its fallback: handed back with a
    /// refusal, forgotten with a PUBACK.
    #[test]
    fn a_refused_answer_hands_back_its_fallback_with_its_row() {
        let fallback = Outbound {
            topic: "p/response/set".into(),
            payload: b"{}".to_vec(),
            retain: false,
            props: Default::default(),
        };
        let mut w = Window::new(4);
        w.handed_over_answer(Some(Msg::single(7)), fallback.clone());
        w.handed_over_answer(None, fallback.clone());
        w.handed_over_answer(None, fallback.clone());
        w.on_outgoing_publish(1).unwrap();
        w.on_await_ack(1).unwrap();
        w.on_outgoing_publish(2).unwrap();
        assert_eq!(
            w.on_refused(1).unwrap(),
            (Some(Msg::single(7)), Some(fallback.clone()))
        );
        w.on_outgoing_publish(1).unwrap(); // the parked one keeps its fallback
        assert_eq!(w.on_refused(1).unwrap(), (None, Some(fallback)));
        assert_eq!(w.on_puback(2).unwrap(), None);
        assert!(!w.is_acked(7), "row 7 waits for its fallback's PUBACK");
    }

    #[test]
    fn reset_forgets_the_unacked_and_rewinds() {
        let mut w = Window::new(4);
        w.handed_over(Some(Msg::single(1)));
        w.handed_over(Some(Msg::single(2)));
        w.on_outgoing_publish(1).unwrap();
        w.on_outgoing_publish(2).unwrap();
        w.on_puback(1).unwrap();
        w.reset();
        assert_eq!(w.cursor(), 0);
        assert_eq!(w.room(), 4);
        // Row 1 was acked: skipped on replay; row 2 is sent again.
        assert!(w.is_acked(1));
        assert!(!w.is_acked(2));
        assert_eq!(w.on_puback(2), Err(PumpError::UnknownAck(2)));
    }

    #[test]
    fn a_collision_parks_the_next_publish() {
        let mut w = Window::new(4);
        w.handed_over(Some(Msg::single(5)));
        w.handed_over(Some(Msg::single(6)));
        w.on_outgoing_publish(1).unwrap();
        w.on_await_ack(1).unwrap(); // row 6 collides with pkid 1
        assert_eq!(w.on_puback(1).unwrap(), Some(Msg::single(5)));
        w.on_outgoing_publish(1).unwrap(); // the parked one goes out
        assert_eq!(w.on_puback(1).unwrap(), Some(Msg::single(6)));
        assert_eq!(w.take_deletable(10), vec![5, 6]);
    }

    #[test]
    fn a_row_of_several_messages_is_deletable_only_when_all_are_acked() {
        let mut w = Window::new(8);
        let m = |seq| Msg {
            seq,
            row: 20,
            last: 22,
        };
        w.handed_over(Some(m(20)));
        w.handed_over(Some(m(21)));
        w.handed_over(Some(m(22)));
        w.handed_over(Some(Msg::single(23)));
        for pkid in 1..=4 {
            w.on_outgoing_publish(pkid).unwrap();
        }
        w.on_puback(4).unwrap();
        w.on_puback(1).unwrap();
        w.on_puback(3).unwrap();
        // 23 is a row of its own; row 20 still waits for 21.
        assert_eq!(w.take_deletable(10), vec![23]);
        assert!(w.is_acked(22) && !w.is_acked(21));
        // The connection drops: 21 is sent again on the next one, the rest not.
        w.reset();
        w.handed_over(Some(m(21)));
        w.on_outgoing_publish(1).unwrap();
        w.on_puback(1).unwrap();
        assert_eq!(w.take_deletable(10), vec![20, 21, 22, 23]);
        // An ack seen twice (a duplicate) does not count twice.
        let mut w = Window::new(8);
        w.settle(m(20));
        w.settle(m(20));
        w.settle(m(21));
        assert!(w.take_deletable(10).is_empty());
        w.settle(m(22));
        assert_eq!(w.take_deletable(10), vec![20, 21, 22]);
        w.deleted(&[20, 21, 22]);
        assert!(w.take_deletable(10).is_empty() && !w.is_acked(21));
    }

    #[test]
    fn unexpected_publish_is_an_error_not_a_panic() {
        let mut w = Window::new(1);
        assert_eq!(
            w.on_outgoing_publish(7),
            Err(PumpError::UnexpectedPublish(7))
        );
    }
}
