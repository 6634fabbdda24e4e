//! Presence of beacons and tags: `present` while the device is heard (and, with an RSSI
//! threshold, close enough), `away` once it has not been heard for `away_after` (or its
//! signal fell below the threshold by more than the hysteresis). The RSSI is smoothed
//! with an exponentially weighted moving average, so one weak or strong advertisement
//! does not flip the state.
//!
//! Pure state, no IO and no clock: the driver passes the time and turns transitions
//! into `presence` readings; the hub records them in the device's state and publishes
//! and audits each transition as a lifecycle event.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fieldgate_ble::Address;

/// Tags followed at most; those away longest are forgotten first.
const MAX_TAGS: usize = 10_000;

/// How presence is decided (from the radio's options).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresenceRule {
    pub away_after: Duration,
    /// The smoothed RSSI (dBm) needed to count as present; `None`: heard is present.
    pub rssi: Option<i16>,
    /// dB below `rssi` the smoothed RSSI must fall to count as away.
    pub hysteresis: u8,
    /// Weight of a new RSSI sample in the average (0 < a <= 1).
    pub smoothing: f64,
}

/// A change of a tag's presence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub present: bool,
    /// The smoothed RSSI at the change (dBm), when the device reports one.
    pub rssi: Option<f64>,
    /// When the device was last heard.
    pub last_heard: Instant,
}

#[derive(Debug)]
struct Tag {
    smoothed: Option<f64>,
    last: Instant,
    present: bool,
}

#[derive(Debug)]
pub struct Presences {
    rule: PresenceRule,
    tags: HashMap<Address, Tag>,
}

impl Presences {
    pub fn new(rule: PresenceRule) -> Presences {
        Presences {
            rule,
            tags: HashMap::new(),
        }
    }

    /// An advertisement of `address` with `rssi` at `now`; returns a transition when
    /// its presence changed.
    pub fn heard(
        &mut self,
        address: Address,
        rssi: Option<i16>,
        now: Instant,
    ) -> Option<Transition> {
        if self.tags.len() >= MAX_TAGS && !self.tags.contains_key(&address) {
            self.forget_some();
        }
        let rule = self.rule;
        let tag = self.tags.entry(address).or_insert(Tag {
            smoothed: None,
            last: now,
            present: false,
        });
        tag.last = now;
        if let Some(r) = rssi {
            let r = f64::from(r);
            tag.smoothed = Some(match tag.smoothed {
                Some(s) => rule.smoothing * r + (1.0 - rule.smoothing) * s,
                None => r,
            });
        }
        let close = |s: Option<f64>, margin: f64| match (rule.rssi, s) {
            (None, _) => true,
            // A threshold, and the device reports no RSSI: heard is all we know.
            (Some(_), None) => true,
            (Some(t), Some(s)) => s >= f64::from(t) - margin,
        };
        let now_present = if tag.present {
            close(tag.smoothed, f64::from(rule.hysteresis))
        } else {
            close(tag.smoothed, 0.0)
        };
        if now_present == tag.present {
            return None;
        }
        tag.present = now_present;
        Some(Transition {
            present: now_present,
            rssi: tag.smoothed,
            last_heard: now,
        })
    }

    /// Tags present but unheard for `away_after` at `now`: away.
    pub fn expire(&mut self, now: Instant) -> Vec<(Address, Transition)> {
        let away_after = self.rule.away_after;
        let mut out = Vec::new();
        for (address, tag) in self.tags.iter_mut() {
            if tag.present && now.saturating_duration_since(tag.last) >= away_after {
                tag.present = false;
                // The next time it is heard starts a fresh average.
                let rssi = tag.smoothed.take();
                out.push((
                    *address,
                    Transition {
                        present: false,
                        rssi,
                        last_heard: tag.last,
                    },
                ));
            }
        }
        out
    }

    pub fn forget(&mut self, address: &Address) {
        self.tags.remove(address);
    }

    fn forget_some(&mut self) {
        let mut away: Vec<(Instant, Address)> =
            self.tags.iter().map(|(a, t)| (t.last, *a)).collect();
        away.sort_unstable();
        for (_, a) in away.iter().take(MAX_TAGS / 10 + 1) {
            self.tags.remove(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Address = [0xF0, 0x0D, 0xBE, 0xAC, 0, 1];

    fn rule(rssi: Option<i16>) -> PresenceRule {
        PresenceRule {
            away_after: Duration::from_secs(30),
            rssi,
            hysteresis: 10,
            smoothing: 0.5,
        }
    }

    #[test]
    fn heard_is_present_and_silence_is_away() {
        let mut p = Presences::new(rule(None));
        let t0 = Instant::now();
        let t = p.heard(A, Some(-60), t0).unwrap();
        assert!(t.present);
        assert_eq!(t.rssi, Some(-60.0));
        assert_eq!(p.heard(A, Some(-70), t0 + Duration::from_secs(10)), None);
        assert!(p.expire(t0 + Duration::from_secs(39)).is_empty());
        let away = p.expire(t0 + Duration::from_secs(40));
        assert_eq!(away.len(), 1);
        assert!(!away[0].1.present);
        assert_eq!(away[0].1.rssi, Some(-65.0));
        // Once only.
        assert!(p.expire(t0 + Duration::from_secs(50)).is_empty());
        assert!(
            p.heard(A, Some(-60), t0 + Duration::from_secs(60))
                .unwrap()
                .present
        );
    }

    #[test]
    fn a_threshold_with_hysteresis_and_smoothing_does_not_flap() {
        let mut p = Presences::new(rule(Some(-70)));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Far away: heard, not present.
        assert_eq!(p.heard(A, Some(-90), at(0)), None);
        // Walking closer: -70 (smoothed -80): still not.
        assert_eq!(p.heard(A, Some(-70), at(1)), None);
        // -60: smoothed -70, at the threshold.
        assert!(p.heard(A, Some(-60), at(2)).unwrap().present);
        // One weak advertisement (-85): smoothed -77.5, inside the hysteresis band.
        assert_eq!(p.heard(A, Some(-85), at(3)), None);
        // Back: stays present.
        assert_eq!(p.heard(A, Some(-65), at(4)), None);
        // Walking off for good: smoothed falls below -80.
        let mut change = None;
        for s in 5..10 {
            change = change.or(p.heard(A, Some(-90), at(s)));
        }
        let change = change.unwrap();
        assert!(!change.present);
        assert!(change.rssi.unwrap() < -80.0);
    }

    #[test]
    fn many_tags_stay_bounded() {
        let mut p = Presences::new(rule(None));
        let t0 = Instant::now();
        for i in 0..(MAX_TAGS as u32 + 100) {
            let b = i.to_le_bytes();
            p.heard([b[0], b[1], b[2], b[3], 0, 0], None, t0);
        }
        assert!(p.tags.len() <= MAX_TAGS);
    }
}
