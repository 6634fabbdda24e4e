//! How much of the air reaches the hub: at most one advertisement per address per
//! `min_interval`, and at most `new_per_minute` addresses never heard before per minute,
//! so a busy street (thousands of phones and passing beacons) cannot flood the hub, the
//! registry or the outbox. Memory is bounded too (`max_tracked` addresses).
//!
//! Pure state over a caller's clock; no IO.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fieldgate_ble::Address;

/// What the limiter decided for one advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// The address was forwarded less than `min_interval` ago.
    TooSoon,
    /// A new address, and this minute's budget for new addresses is spent.
    NoBudget,
}

#[derive(Debug)]
pub struct Limiter {
    min_interval: Duration,
    new_per_minute: u32,
    max_tracked: usize,
    last: HashMap<Address, Instant>,
    minute_started: Option<Instant>,
    new_this_minute: u32,
}

impl Limiter {
    pub fn new(min_interval: Duration, new_per_minute: u32, max_tracked: usize) -> Limiter {
        Limiter {
            min_interval,
            new_per_minute,
            max_tracked: max_tracked.max(2),
            last: HashMap::new(),
            minute_started: None,
            new_this_minute: 0,
        }
    }

    /// Marks `address` as known (e.g. it has a bindkey), so it needs no new-address budget.
    pub fn know(&mut self, address: Address, now: Instant) {
        self.last
            .entry(address)
            .or_insert_with(|| now.checked_sub(self.min_interval).unwrap_or(now));
    }

    /// Whether `address` has been let through (or marked known): it is in the registry.
    pub fn knows(&self, address: &Address) -> bool {
        self.last.contains_key(address)
    }

    /// Decides for an advertisement from `address` at `now`. `urgent` (an event such as a
    /// button press) skips the per-address interval but not the new-address budget.
    pub fn check(&mut self, address: Address, now: Instant, urgent: bool) -> Verdict {
        if let Some(last) = self.last.get_mut(&address) {
            if !urgent && now.saturating_duration_since(*last) < self.min_interval {
                return Verdict::TooSoon;
            }
            *last = now;
            return Verdict::Forward;
        }
        let started = *self.minute_started.get_or_insert(now);
        if now.saturating_duration_since(started) >= Duration::from_secs(60) {
            self.minute_started = Some(now);
            self.new_this_minute = 0;
        }
        if self.new_this_minute >= self.new_per_minute {
            return Verdict::NoBudget;
        }
        self.new_this_minute += 1;
        if self.last.len() >= self.max_tracked {
            self.forget_oldest_half();
        }
        self.last.insert(address, now);
        Verdict::Forward
    }

    /// Addresses remembered.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.last.len()
    }

    fn forget_oldest_half(&mut self) {
        let mut times: Vec<Instant> = self.last.values().copied().collect();
        let mid = times.len() / 2;
        let (_, cut, _) = times.select_nth_unstable(mid);
        let cut = *cut;
        self.last.retain(|_, t| *t > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Address = [1, 2, 3, 4, 5, 6];

    #[test]
    fn one_per_interval_per_address_and_events_pass() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(10), 100, 1000);
        assert_eq!(l.check(A, t0, false), Verdict::Forward);
        assert_eq!(
            l.check(A, t0 + Duration::from_secs(3), false),
            Verdict::TooSoon
        );
        assert_eq!(
            l.check(A, t0 + Duration::from_secs(4), true),
            Verdict::Forward
        );
        assert_eq!(
            l.check(A, t0 + Duration::from_secs(15), false),
            Verdict::Forward
        );
    }

    #[test]
    fn a_street_gets_a_budget_per_minute_and_bounded_memory() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(10), 30, 500);
        let mut forwarded = 0;
        for i in 0..5000u32 {
            let b = i.to_be_bytes();
            let at = t0 + Duration::from_millis(u64::from(i) * 10); // 50 s
            if l.check([0xC0, 0, b[0], b[1], b[2], b[3]], at, false) == Verdict::Forward {
                forwarded += 1;
            }
        }
        assert_eq!(forwarded, 30);
        // The next minute has a fresh budget; memory stays bounded.
        for i in 0..2000u32 {
            let b = i.to_be_bytes();
            l.check(
                [0xC1, 0, b[0], b[1], b[2], b[3]],
                t0 + Duration::from_secs(61 * (1 + u64::from(i))),
                false,
            );
        }
        assert!(l.tracked() <= 500, "{}", l.tracked());
    }

    #[test]
    fn known_addresses_need_no_budget() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Duration::from_secs(10), 1, 100);
        assert_eq!(l.check([9; 6], t0, false), Verdict::Forward);
        assert_eq!(l.check([8; 6], t0, false), Verdict::NoBudget);
        l.know(A, t0);
        assert_eq!(l.check(A, t0, false), Verdict::Forward);
    }
}
