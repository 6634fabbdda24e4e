//! The controller's side of the Serial API link layer for the frames it sends: one data
//! frame in flight at a time, waiting for the host's ACK; retransmitted when the ACK does not
//! come within [`ACK_TIMEOUT`] (at once) or the host answers NAK or CAN (after the INS12350
//! back-off, 100 ms + n·1000 ms); given up after [`MAX_ATTEMPTS`]. Frames queue behind the one
//! in flight, in order (a response before the callbacks that follow it).
//!
//! No clock: the emulator passes `now` in and asks [`Link::deadline`] when to come back.

use std::collections::VecDeque;
use std::time::Duration;

/// "A sending interface MUST wait for 1600 ms or more for an ACK" (INS12350; zwave-js `ack`).
pub const ACK_TIMEOUT: Duration = Duration::from_millis(1600);
/// Transmissions of one frame before the controller gives up on it (INS12350: 3).
pub const MAX_ATTEMPTS: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Sent; waiting for ACK until this time.
    Ack(Duration),
    /// NAKed or CANed; sent again at this time.
    Backoff(Duration),
}

#[derive(Debug, Clone)]
struct InFlight {
    bytes: Vec<u8>,
    attempts: u8,
    wait: Wait,
}

/// Link-layer counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub frames_sent: u64,
    pub retransmissions: u64,
    pub ack_timeouts: u64,
    pub naks_received: u64,
    pub cans_received: u64,
    /// Frames given up after [`MAX_ATTEMPTS`].
    pub frames_dropped: u64,
    /// ACK / NAK / CAN with no frame of ours in flight.
    pub stray_acks: u64,
}

#[derive(Debug, Default)]
pub struct Link {
    queue: VecDeque<Vec<u8>>,
    in_flight: Option<InFlight>,
    out: Vec<u8>,
    /// The next first transmission gets a bad checksum (fault injection).
    corrupt_next: bool,
    stats: LinkStats,
}

impl Link {
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Whether a frame of ours waits for its ACK (a host frame arriving now collides).
    pub fn awaiting_ack(&self) -> bool {
        matches!(
            self.in_flight,
            Some(InFlight {
                wait: Wait::Ack(_),
                ..
            })
        )
    }

    /// Writes a single control byte (ACK / NAK / CAN) at once.
    pub fn control(&mut self, byte: u8) {
        self.out.push(byte);
    }

    /// Queues an encoded data frame.
    pub fn enqueue(&mut self, now: Duration, frame: Vec<u8>) {
        self.queue.push_back(frame);
        self.pump(now);
    }

    pub fn corrupt_next(&mut self) {
        self.corrupt_next = true;
    }

    /// Forgets everything (the controller restarted).
    pub fn reset(&mut self) {
        self.queue.clear();
        self.in_flight = None;
    }

    pub fn on_ack(&mut self, now: Duration) {
        if self.awaiting_ack() {
            self.in_flight = None;
            self.pump(now);
        } else {
            self.stats.stray_acks += 1;
        }
    }

    pub fn on_nak(&mut self, now: Duration) {
        self.stats.naks_received += 1;
        self.back_off(now);
    }

    pub fn on_can(&mut self, now: Duration) {
        self.stats.cans_received += 1;
        self.back_off(now);
    }

    fn back_off(&mut self, now: Duration) {
        let Some(f) = self.in_flight.as_mut() else {
            self.stats.stray_acks += 1;
            return;
        };
        if !matches!(f.wait, Wait::Ack(_)) {
            return;
        }
        if f.attempts >= MAX_ATTEMPTS {
            self.give_up(now);
            return;
        }
        let n = u64::from(f.attempts);
        f.wait = Wait::Backoff(now + Duration::from_millis(100 + 1000 * (n - 1)));
    }

    fn give_up(&mut self, now: Duration) {
        self.stats.frames_dropped += 1;
        self.in_flight = None;
        self.pump(now);
    }

    /// Handles a timeout or a back-off that is due, then starts the next frame.
    pub fn poll(&mut self, now: Duration) {
        if let Some(f) = self.in_flight.as_mut() {
            match f.wait {
                Wait::Ack(deadline) if now >= deadline => {
                    self.stats.ack_timeouts += 1;
                    if f.attempts >= MAX_ATTEMPTS {
                        self.give_up(now);
                    } else {
                        self.retransmit(now);
                    }
                }
                Wait::Backoff(at) if now >= at => self.retransmit(now),
                _ => {}
            }
        }
        self.pump(now);
    }

    fn retransmit(&mut self, now: Duration) {
        if let Some(f) = self.in_flight.as_mut() {
            f.attempts += 1;
            f.wait = Wait::Ack(now + ACK_TIMEOUT);
            self.out.extend_from_slice(&f.bytes);
            self.stats.retransmissions += 1;
        }
    }

    fn pump(&mut self, now: Duration) {
        if self.in_flight.is_some() {
            return;
        }
        let Some(bytes) = self.queue.pop_front() else {
            return;
        };
        if std::mem::take(&mut self.corrupt_next) {
            let mut bad = bytes.clone();
            if let Some(chk) = bad.last_mut() {
                *chk ^= 0xFF;
            }
            self.out.extend_from_slice(&bad);
        } else {
            self.out.extend_from_slice(&bytes);
        }
        self.stats.frames_sent += 1;
        self.in_flight = Some(InFlight {
            bytes,
            attempts: 1,
            wait: Wait::Ack(now + ACK_TIMEOUT),
        });
    }

    /// When [`Link::poll`] has something to do.
    pub fn deadline(&self) -> Option<Duration> {
        self.in_flight.as_ref().map(|f| match f.wait {
            Wait::Ack(t) | Wait::Backoff(t) => t,
        })
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Frames queued behind the one in flight.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}
