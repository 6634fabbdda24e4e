//! The state of one request in flight and of the frames queued meanwhile, with no IO: it
//! is handed every frame and the time, and says what each frame was and how the request
//! ended. [`Session`](super::Session) drives it from a link; a test drives it by hand.
//!
//! Must not read, write, sleep or look at the clock itself.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::Frame;

type Matcher<F> = Box<dyn Fn(&F) -> bool + Send + Sync>;

/// What a request waits for: a reply, a callback after it, or a callback alone.
pub struct Expect<F> {
    response: Option<(Matcher<F>, Duration)>,
    callback: Option<(Matcher<F>, Duration)>,
}

impl<F> Expect<F> {
    /// A reply that `is_response` accepts, within `timeout` of the request.
    pub fn reply(
        timeout: Duration,
        is_response: impl Fn(&F) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            response: Some((Box::new(is_response), timeout)),
            callback: None,
        }
    }

    /// No reply: an unsolicited frame that `is_callback` accepts, within `timeout`. Frames
    /// already queued are looked at first (an indication may beat the wait for it).
    pub fn callback(
        timeout: Duration,
        is_callback: impl Fn(&F) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            response: None,
            callback: Some((Box::new(is_callback), timeout)),
        }
    }

    /// After the reply, an unsolicited frame that `is_callback` accepts, within `timeout`
    /// of the reply (a Z-Wave send-data callback, an AT modem's `+EVT:` line). One that
    /// came before the reply is found in the queue; the predicate should tell this
    /// request's callback from an earlier one's (Z-Wave's callback id does).
    pub fn then_callback(
        mut self,
        timeout: Duration,
        is_callback: impl Fn(&F) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.callback = Some((Box::new(is_callback), timeout));
        self
    }
}

/// Which part of a request a deadline was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Response,
    Callback,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<F> {
    /// Everything expected came: the reply (if one was expected) and the callback (if one
    /// was expected).
    Answered {
        response: Option<F>,
        callback: Option<F>,
    },
    /// `stage`'s deadline passed. `response` is the reply when it was the callback that
    /// did not come.
    TimedOut { stage: Stage, response: Option<F> },
}

impl<F> Outcome<F> {
    /// The reply, if the request was answered in full.
    pub fn into_response(self) -> Option<F> {
        match self {
            Outcome::Answered { response, .. } => response,
            Outcome::TimedOut { .. } => None,
        }
    }

    /// The callback, if the request was answered in full.
    pub fn into_callback(self) -> Option<F> {
        match self {
            Outcome::Answered { callback, .. } => callback,
            Outcome::TimedOut { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The exchange: state, no IO

/// What became of a frame handed to [`Exchange::on_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The reply the request waited for.
    Response,
    /// The callback the request waited for.
    Callback,
    /// Unsolicited: queued for the driver.
    Queued,
    /// A reply while a request waits that does not answer it: dropped.
    Stray,
    /// A reply while no request waits (its request timed out, or was never ours): dropped.
    Late,
}

/// A request was started while another was in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a request is already in flight")]
pub struct Busy;

/// What the exchange counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeCounts {
    pub answered: u64,
    pub timed_out: u64,
    pub stray_replies: u64,
    pub late_replies: u64,
}

struct InFlight<F> {
    expect: Expect<F>,
    stage: Stage,
    deadline: Instant,
    response: Option<F>,
}

/// One request in flight and the unsolicited frames queued meanwhile, driven by the frames
/// and the instants it is given.
///
/// [`start`](Exchange::start) a request, feed it every frame ([`on_frame`](Exchange::on_frame))
/// and the time when its [`deadline`](Exchange::deadline) passes
/// ([`on_time`](Exchange::on_time)), and collect the [`Outcome`] with
/// [`take_outcome`](Exchange::take_outcome). Unsolicited frames wait in
/// [`pop_unsolicited`](Exchange::pop_unsolicited)'s queue, in arrival order.
pub struct Exchange<F> {
    in_flight: Option<InFlight<F>>,
    outcome: Option<Outcome<F>>,
    unsolicited: VecDeque<F>,
    counts: ExchangeCounts,
}

impl<F> Default for Exchange<F> {
    fn default() -> Self {
        Self {
            in_flight: None,
            outcome: None,
            unsolicited: VecDeque::new(),
            counts: ExchangeCounts::default(),
        }
    }
}

impl<F: Frame> Exchange<F> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts waiting for what `expect` describes, from `now` (just after the request went
    /// out). Refused while another request is in flight or its outcome not yet taken.
    pub fn start(&mut self, expect: Expect<F>, now: Instant) -> Result<(), Busy> {
        if self.in_flight.is_some() || self.outcome.is_some() {
            return Err(Busy);
        }
        match &expect.response {
            Some((_, timeout)) => {
                let deadline = now + *timeout;
                self.in_flight = Some(InFlight {
                    expect,
                    stage: Stage::Response,
                    deadline,
                    response: None,
                });
            }
            None => self.await_callback(expect, None, now),
        }
        Ok(())
    }

    /// Gives up the request in flight, if any, and any outcome not taken.
    pub fn abandon(&mut self) {
        self.in_flight = None;
        self.outcome = None;
    }

    /// Whether a request is in flight.
    pub fn is_waiting(&self) -> bool {
        self.in_flight.is_some()
    }

    /// When the request in flight times out, if one is.
    pub fn deadline(&self) -> Option<Instant> {
        self.in_flight.as_ref().map(|r| r.deadline)
    }

    /// A frame from the link, at `now`.
    pub fn on_frame(&mut self, frame: F, now: Instant) -> Arrival {
        let Some(req) = self.in_flight.take() else {
            if frame.is_reply() {
                self.counts.late_replies += 1;
                return Arrival::Late;
            }
            self.unsolicited.push_back(frame);
            return Arrival::Queued;
        };
        let arrival = match (req.stage, frame.is_reply()) {
            (Stage::Response, true) => {
                if req.expect.response.as_ref().is_some_and(|(m, _)| m(&frame)) {
                    self.await_callback(req.expect, Some(frame), now);
                    return Arrival::Response;
                }
                Arrival::Stray
            }
            (Stage::Callback, false) => {
                if req.expect.callback.as_ref().is_some_and(|(m, _)| m(&frame)) {
                    self.finish(Outcome::Answered {
                        response: req.response,
                        callback: Some(frame),
                    });
                    return Arrival::Callback;
                }
                Arrival::Queued
            }
            (Stage::Callback, true) => Arrival::Stray,
            (Stage::Response, false) => Arrival::Queued,
        };
        match arrival {
            Arrival::Stray => self.counts.stray_replies += 1,
            _ => self.unsolicited.push_back(frame),
        }
        self.in_flight = Some(req);
        arrival
    }

    /// The time is `now`: ends the request in flight if its deadline has passed.
    pub fn on_time(&mut self, now: Instant) {
        if self.in_flight.as_ref().is_some_and(|r| now >= r.deadline) {
            if let Some(req) = self.in_flight.take() {
                self.counts.timed_out += 1;
                self.outcome = Some(Outcome::TimedOut {
                    stage: req.stage,
                    response: req.response,
                });
            }
        }
    }

    /// How the last request ended, once it has; frees the exchange for the next one.
    pub fn take_outcome(&mut self) -> Option<Outcome<F>> {
        self.outcome.take()
    }

    /// The oldest unsolicited frame.
    pub fn pop_unsolicited(&mut self) -> Option<F> {
        self.unsolicited.pop_front()
    }

    /// Puts a frame at the back of the unsolicited queue (one the driver held back).
    pub fn queue_unsolicited(&mut self, frame: F) {
        self.unsolicited.push_back(frame);
    }

    /// Forgets every queued frame (their context died, e.g. the peer restarted).
    pub fn clear_unsolicited(&mut self) {
        self.unsolicited.clear();
    }

    /// Frames in the unsolicited queue.
    pub fn unsolicited_len(&self) -> usize {
        self.unsolicited.len()
    }

    pub fn counts(&self) -> ExchangeCounts {
        self.counts
    }

    /// The reply is in (or none was expected): wait for the callback, looking in the queue
    /// first, or finish when none is expected.
    fn await_callback(&mut self, expect: Expect<F>, response: Option<F>, now: Instant) {
        let Some((is_callback, timeout)) = &expect.callback else {
            self.finish(Outcome::Answered {
                response,
                callback: None,
            });
            return;
        };
        if let Some(i) = self.unsolicited.iter().position(is_callback) {
            let callback = self.unsolicited.remove(i);
            self.finish(Outcome::Answered { response, callback });
            return;
        }
        let deadline = now + *timeout;
        self.in_flight = Some(InFlight {
            expect,
            stage: Stage::Callback,
            deadline,
            response,
        });
    }

    fn finish(&mut self, outcome: Outcome<F>) {
        self.counts.answered += 1;
        self.in_flight = None;
        self.outcome = Some(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radio::session::test_frames::{line, reply_to, Line, SECOND};

    #[test]
    fn a_reply_answers_its_request_and_unsolicited_frames_wait_in_order() {
        let t0 = Instant::now();
        let mut x = Exchange::new();
        x.start(reply_to("ping"), t0).unwrap();
        assert_eq!(x.deadline(), Some(t0 + SECOND));
        assert_eq!(x.start(reply_to("other"), t0), Err(Busy));
        assert_eq!(x.on_frame(line("joined"), t0), Arrival::Queued);
        assert_eq!(x.on_frame(line("Rversion"), t0), Arrival::Stray);
        assert_eq!(x.on_frame(line("left"), t0), Arrival::Queued);
        assert_eq!(x.take_outcome(), None);
        assert_eq!(x.on_frame(line("Rping"), t0), Arrival::Response);
        assert!(!x.is_waiting());
        assert_eq!(
            x.take_outcome(),
            Some(Outcome::Answered {
                response: Some(line("Rping")),
                callback: None
            })
        );
        assert_eq!(x.pop_unsolicited(), Some(line("joined")));
        assert_eq!(x.pop_unsolicited(), Some(line("left")));
        assert_eq!(x.pop_unsolicited(), None);
        // With nothing in flight a reply is late; the next request may start.
        assert_eq!(x.on_frame(line("Rping"), t0), Arrival::Late);
        x.start(reply_to("ping"), t0).unwrap();
        assert_eq!(
            x.counts(),
            ExchangeCounts {
                answered: 1,
                timed_out: 0,
                stray_replies: 1,
                late_replies: 1
            }
        );
    }

    #[test]
    fn a_request_times_out_at_its_deadline_and_not_before() {
        let t0 = Instant::now();
        let mut x = Exchange::new();
        x.start(reply_to("ping"), t0).unwrap();
        x.on_time(t0 + SECOND - Duration::from_millis(1));
        assert!(x.is_waiting());
        x.on_time(t0 + SECOND);
        assert_eq!(
            x.take_outcome(),
            Some(Outcome::TimedOut {
                stage: Stage::Response,
                response: None
            })
        );
        assert_eq!(x.deadline(), None);
        // The answer after the deadline is late.
        assert_eq!(x.on_frame(line("Rping"), t0 + 2 * SECOND), Arrival::Late);
    }

    #[test]
    fn a_callback_follows_the_reply_within_its_own_time() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(300);
        let mut x = Exchange::new();
        let expect = reply_to("send").then_callback(5 * SECOND, |f: &Line| f.0 == "sent 7");
        x.start(expect, t0).unwrap();
        assert_eq!(x.on_frame(line("Rsend"), t1), Arrival::Response);
        assert_eq!(x.deadline(), Some(t1 + 5 * SECOND));
        assert_eq!(x.on_frame(line("sent 6"), t1), Arrival::Queued);
        assert_eq!(x.on_frame(line("sent 7"), t1), Arrival::Callback);
        assert_eq!(
            x.take_outcome(),
            Some(Outcome::Answered {
                response: Some(line("Rsend")),
                callback: Some(line("sent 7"))
            })
        );
        assert_eq!(x.pop_unsolicited(), Some(line("sent 6")));

        // No callback in time: the reply is kept in the outcome.
        let expect = reply_to("send").then_callback(5 * SECOND, |f: &Line| f.0 == "sent 8");
        x.start(expect, t0).unwrap();
        x.on_frame(line("Rsend"), t1);
        x.on_time(t1 + 5 * SECOND);
        assert_eq!(
            x.take_outcome(),
            Some(Outcome::TimedOut {
                stage: Stage::Callback,
                response: Some(line("Rsend"))
            })
        );
    }

    #[test]
    fn a_callback_already_queued_is_found_at_once() {
        let t0 = Instant::now();
        let mut x = Exchange::new();
        x.on_frame(line("state 1"), t0);
        x.on_frame(line("reset"), t0);
        x.on_frame(line("state 2"), t0);
        x.start(Expect::callback(SECOND, |f: &Line| f.0 == "reset"), t0)
            .unwrap();
        assert_eq!(
            x.take_outcome().and_then(Outcome::into_callback),
            Some(line("reset"))
        );
        assert_eq!(x.pop_unsolicited(), Some(line("state 1")));
        assert_eq!(x.pop_unsolicited(), Some(line("state 2")));
        // Waiting for one that is not there: replies meanwhile are stray, not callbacks.
        x.start(
            Expect::callback(SECOND, |f: &Line| f.0.ends_with("reset")),
            t0,
        )
        .unwrap();
        assert_eq!(x.on_frame(line("Rreset"), t0), Arrival::Stray);
        assert_eq!(x.on_frame(line("reset"), t0), Arrival::Callback);
    }

    #[test]
    fn abandoning_frees_the_exchange_and_keeps_the_queue() {
        let t0 = Instant::now();
        let mut x = Exchange::new();
        x.start(reply_to("ping"), t0).unwrap();
        x.on_frame(line("joined"), t0);
        x.abandon();
        assert!(!x.is_waiting());
        x.start(reply_to("ping"), t0).unwrap();
        assert_eq!(x.unsolicited_len(), 1);
        x.clear_unsolicited();
        assert_eq!(x.pop_unsolicited(), None);
    }
}
