//! Each device's own advertising interval, learnt from the gaps between its
//! advertisements (the median of the last few, so a missed advertisement or a long
//! absence does not skew it), and the silence after which it counts as offline:
//! `availability_multiplier` intervals, never less than `availability_floor` nor than
//! twice `min_interval` (the hub hears a device at most once per `min_interval`).
//!
//! Pure state, no IO and no clock of its own: the driver passes the time. The hub
//! decides availability (`hub/health.rs`); this only tells it what silence means for
//! each device (`DeviceInfo::silence`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use fieldgate_ble::Address;

use crate::model::Silence;

/// Gaps kept per device; the median of these is its interval.
const GAPS_KEPT: usize = 9;
/// Gaps needed before an interval is trusted.
const GAPS_NEEDED: usize = 3;
/// Gaps shorter than this are one advertisement heard twice (a scan response, two
/// PHYs), not the device's interval.
const SHORTEST_GAP: Duration = Duration::from_millis(20);
/// Devices followed at most; the oldest heard are forgotten first.
const MAX_DEVICES: usize = 10_000;

/// How silence turns into a timeout (from the radio's options).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SilenceRule {
    pub multiplier: u32,
    pub floor: Duration,
    pub min_interval: Duration,
}

impl SilenceRule {
    /// The silence after which a device advertising every `interval` is offline.
    pub fn offline_after(&self, interval: Duration) -> Duration {
        (interval * self.multiplier)
            .max(self.floor)
            .max(self.min_interval * 2)
    }
}

#[derive(Debug)]
struct Track {
    last: Instant,
    gaps: VecDeque<Duration>,
    /// The interval last reported to the hub.
    reported: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct Cadence {
    devices: HashMap<Address, Track>,
}

impl Cadence {
    /// Records an advertisement of `address` at `now`; returns the device's interval
    /// when it is first learnt or has moved by more than half since it was last
    /// reported (so jitter does not re-describe the device to the hub).
    pub fn heard(&mut self, address: Address, now: Instant) -> Option<Duration> {
        if self.devices.len() >= MAX_DEVICES && !self.devices.contains_key(&address) {
            self.forget_oldest();
        }
        let track = self.devices.entry(address).or_insert(Track {
            last: now,
            gaps: VecDeque::new(),
            reported: None,
        });
        let gap = now.saturating_duration_since(track.last);
        if gap < SHORTEST_GAP {
            return None;
        }
        track.last = now;
        if track.gaps.len() == GAPS_KEPT {
            track.gaps.pop_front();
        }
        track.gaps.push_back(gap);
        if track.gaps.len() < GAPS_NEEDED {
            return None;
        }
        let mut sorted: Vec<Duration> = track.gaps.iter().copied().collect();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let moved = track.reported.is_none_or(|r| {
            let (lo, hi) = (r.mul_f64(0.5), r.mul_f64(1.5));
            median < lo || median > hi
        });
        if !moved {
            return None;
        }
        track.reported = Some(median);
        Some(median)
    }

    /// The interval last reported for `address`.
    pub fn interval(&self, address: &Address) -> Option<Duration> {
        self.devices.get(address).and_then(|t| t.reported)
    }

    pub fn forget(&mut self, address: &Address) {
        self.devices.remove(address);
    }

    fn forget_oldest(&mut self) {
        // Rare (a street of thousands): drop the tenth heard longest ago.
        let mut by_age: Vec<(Instant, Address)> =
            self.devices.iter().map(|(a, t)| (t.last, *a)).collect();
        by_age.sort_unstable();
        for (_, a) in by_age.iter().take(MAX_DEVICES / 10 + 1) {
            self.devices.remove(a);
        }
    }
}

/// What silence means for a device: trigger-based devices (a button) advertise only
/// when something happens, so silence is expected; others are offline after
/// `rule.offline_after` their interval, once it is learnt.
pub fn silence_of(
    trigger_based: bool,
    interval: Option<Duration>,
    rule: &SilenceRule,
) -> Option<Silence> {
    if trigger_based {
        return Some(Silence::Expected);
    }
    interval.map(|i| {
        let ms = rule.offline_after(i).as_millis();
        Silence::OfflineAfterMs(u64::try_from(ms).unwrap_or(u64::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Address = [1, 2, 3, 4, 5, 6];

    #[test]
    fn the_interval_is_the_median_gap_and_survives_misses_and_absences() {
        let mut c = Cadence::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(c.heard(A, at(0)), None);
        assert_eq!(c.heard(A, at(1000)), None);
        assert_eq!(c.heard(A, at(2000)), None);
        // Three gaps of 1 s: learnt.
        assert_eq!(c.heard(A, at(3000)), Some(Duration::from_secs(1)));
        // A missed advertisement (2 s), one heard twice (5 ms) and a long absence:
        // the interval stays, and nothing new is reported.
        assert_eq!(c.heard(A, at(5000)), None);
        assert_eq!(c.heard(A, at(5005)), None);
        assert_eq!(c.heard(A, at(65_000)), None);
        assert_eq!(c.heard(A, at(66_000)), None);
        assert_eq!(c.interval(&A), Some(Duration::from_secs(1)));
        // The device slows down to 5 s for good: re-learnt once most gaps say so.
        let mut t = 66_000;
        let mut reported = None;
        for _ in 0..9 {
            t += 5000;
            if let Some(r) = c.heard(A, at(t)) {
                reported = Some(r);
            }
        }
        assert_eq!(reported, Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_timeout_has_a_floor_and_triggered_devices_are_never_offline() {
        let rule = SilenceRule {
            multiplier: 10,
            floor: Duration::from_secs(60),
            min_interval: Duration::from_secs(10),
        };
        assert_eq!(
            rule.offline_after(Duration::from_millis(100)),
            Duration::from_secs(60)
        );
        assert_eq!(
            rule.offline_after(Duration::from_secs(30)),
            Duration::from_secs(300)
        );
        let fast = SilenceRule {
            floor: Duration::from_secs(1),
            ..rule
        };
        // Never below twice the forwarding interval: the hub would see gaps that long.
        assert_eq!(
            fast.offline_after(Duration::from_millis(100)),
            Duration::from_secs(20)
        );
        assert_eq!(
            silence_of(true, Some(Duration::from_secs(1)), &rule),
            Some(Silence::Expected)
        );
        assert_eq!(silence_of(false, None, &rule), None);
        assert_eq!(
            silence_of(false, Some(Duration::from_secs(30)), &rule),
            Some(Silence::OfflineAfterMs(300_000))
        );
    }

    #[test]
    fn a_street_of_addresses_stays_bounded() {
        let mut c = Cadence::default();
        let t0 = Instant::now();
        for i in 0..(MAX_DEVICES as u32 + 500) {
            let b = i.to_le_bytes();
            c.heard(
                [b[0], b[1], b[2], b[3], 0, 0],
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(c.devices.len() <= MAX_DEVICES);
    }
}
