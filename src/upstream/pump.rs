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

use std::collections::{BTreeSet, HashMap, VecDeque};

/// One publish handed to rumqttc: an outbox row, or a live message (birth,
/// info, response) that has no row.
pub type Carried = Option<i64>;

#[derive(Debug)]
pub struct Window {
    capacity: usize,
    /// Handed to rumqttc, `Outgoing::Publish` not yet seen; in hand-over order.
    handed: VecDeque<Carried>,
    /// A publish rumqttc parked on a packet-id collision (`Outgoing::AwaitAck`);
    /// its `Outgoing::Publish` comes later, before any newer one.
    parked: Option<Carried>,
    /// Sent, waiting for PUBACK.
    inflight: HashMap<u16, Carried>,
    /// Rows acked but not yet deleted from the store: never re-read.
    acked: BTreeSet<i64>,
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
            cursor: 0,
        }
    }

    /// Publishes in flight (handed over or sent, not yet acked).
    pub fn in_flight(&self) -> usize {
        self.handed.len() + self.inflight.len() + usize::from(self.parked.is_some())
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
        if let Some(seq) = carried {
            self.cursor = self.cursor.max(seq);
        }
        self.handed.push_back(carried);
    }

    /// `Outgoing::Publish(pkid)`.
    pub fn on_outgoing_publish(&mut self, pkid: u16) -> Result<(), PumpError> {
        let carried = match self.parked.take() {
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
        if self.inflight.insert(pkid, carried).is_some() {
            return Err(PumpError::PkidReused(pkid));
        }
        Ok(())
    }

    /// `Outgoing::AwaitAck(pkid)`: the next handed-over publish is parked.
    pub fn on_await_ack(&mut self, pkid: u16) -> Result<(), PumpError> {
        let carried = self
            .handed
            .pop_front()
            .ok_or(PumpError::UnexpectedPublish(pkid))?;
        self.parked = Some(carried);
        Ok(())
    }

    /// `Incoming::PubAck(pkid)`: returns the row now safe to delete, if any.
    pub fn on_puback(&mut self, pkid: u16) -> Result<Carried, PumpError> {
        let carried = self
            .inflight
            .remove(&pkid)
            .ok_or(PumpError::UnknownAck(pkid))?;
        if let Some(seq) = carried {
            self.acked.insert(seq);
        }
        Ok(carried)
    }

    /// Rows acked and not yet being deleted, oldest first (at most `max`).
    pub fn take_deletable(&self, max: usize) -> Vec<i64> {
        self.acked.iter().take(max).copied().collect()
    }

    /// The store confirmed these rows are gone.
    pub fn deleted(&mut self, seqs: &[i64]) {
        for s in seqs {
            self.acked.remove(s);
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
        w.handed_over(Some(10));
        w.handed_over(None); // a response
        w.handed_over(Some(11));
        assert_eq!(w.room(), 0);
        assert_eq!(w.cursor(), 11);
        w.on_outgoing_publish(1).unwrap();
        w.on_outgoing_publish(2).unwrap();
        w.on_outgoing_publish(3).unwrap();
        // Out-of-order acks free the right rows.
        assert_eq!(w.on_puback(3).unwrap(), Some(11));
        assert_eq!(w.on_puback(2).unwrap(), None);
        assert_eq!(w.take_deletable(10), vec![11]);
        assert!(w.is_acked(11));
        assert_eq!(w.room(), 2);
        assert_eq!(w.on_puback(9), Err(PumpError::UnknownAck(9)));
        w.deleted(&[11]);
        assert!(!w.is_acked(11));
    }

    #[test]
    fn reset_forgets_the_unacked_and_rewinds() {
        let mut w = Window::new(4);
        w.handed_over(Some(1));
        w.handed_over(Some(2));
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
        w.handed_over(Some(5));
        w.handed_over(Some(6));
        w.on_outgoing_publish(1).unwrap();
        w.on_await_ack(1).unwrap(); // row 6 collides with pkid 1
        assert_eq!(w.on_puback(1).unwrap(), Some(5));
        w.on_outgoing_publish(1).unwrap(); // the parked one goes out
        assert_eq!(w.on_puback(1).unwrap(), Some(6));
        assert_eq!(w.take_deletable(10), vec![5, 6]);
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
