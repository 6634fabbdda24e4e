//! The messages the store writer's open transaction has queued, kept as they are
//! inserted, so that after a small commit the writer hands them to the uplink without
//! reading them back. The writer starts a capture with each transaction while the
//! uplink wants the rows; any rollback (of a savepoint too) and any delete that may
//! reach them spoil it, and so does passing its limit. The writer checks that what
//! was captured covers exactly the seqs the commit added (an insert that is not
//! captured leaves a gap) and otherwise reads the rows back.

use std::cell::RefCell;

use super::outbox::{expand, OutboxRow};

enum Capture {
    Off,
    On { limit: usize, rows: Vec<OutboxRow> },
}

thread_local! {
    static CAPTURE: RefCell<Capture> = const { RefCell::new(Capture::Off) };
}

/// Starts capturing this thread's inserts (at most `limit` messages), or stops.
pub(crate) fn begin(limit: Option<usize>) {
    CAPTURE.with(|c| {
        *c.borrow_mut() = match limit {
            Some(limit) => Capture::On {
                limit,
                rows: Vec::new(),
            },
            None => Capture::Off,
        }
    });
}

/// Drops the capture: what it holds may not be what commits.
pub(crate) fn spoil() {
    CAPTURE.with(|c| *c.borrow_mut() = Capture::Off);
}

/// The messages captured since [`begin`], in insert order; `None` when nothing
/// captures or the capture was spoiled. Stops capturing.
pub(crate) fn take() -> Option<Vec<OutboxRow>> {
    CAPTURE.with(
        |c| match std::mem::replace(&mut *c.borrow_mut(), Capture::Off) {
            Capture::On { rows, .. } => Some(rows),
            Capture::Off => None,
        },
    )
}

/// Adds a stored row's messages to the capture, if one runs.
pub(super) fn record(row: impl FnOnce() -> (OutboxRow, i64)) {
    CAPTURE.with(|c| {
        let mut c = c.borrow_mut();
        let Capture::On { limit, rows } = &mut *c else {
            return;
        };
        let (row, messages) = row();
        if rows.len() + messages.max(1) as usize > *limit {
            *c = Capture::Off;
            return;
        }
        expand((row, messages), i64::MIN, rows);
    });
}

/// A delete of outbox rows up to `last` in this transaction. Acknowledged messages
/// were committed before it: a delete that reaches one it queued is no
/// acknowledgement, and the commit's messages are read back instead.
pub(super) fn spoil_if_reached(last: i64) {
    let reached = CAPTURE.with(|c| match &*c.borrow() {
        Capture::On { rows, .. } => rows.first().is_some_and(|r| last >= r.row),
        Capture::Off => false,
    });
    if reached {
        spoil();
    }
}

/// Whether `rows` are exactly the messages with seqs `after + 1 ..= upto`, in order.
pub(crate) fn covers(rows: &[OutboxRow], after: i64, upto: i64) -> bool {
    rows.len() as i64 == upto - after
        && rows
            .iter()
            .zip(after + 1..)
            .all(|(row, seq)| row.seq == seq)
}
