//! Retries with backoff, as state with no IO: how long to wait after each failure in a row
//! and when to give up. The caller sleeps; this only counts.

use std::time::Duration;

use tokio::time::Instant;

/// How many tries, and how long to wait between them: `first_delay`, doubling per failure
/// in a row up to `max_delay`. No jitter: one radio is on the other end, not a crowd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure in a row (1 is the first).
    pub fn delay(&self, failures: u32) -> Duration {
        self.first_delay
            .saturating_mul(1 << failures.saturating_sub(1).min(10))
            .min(self.max_delay)
    }
}

/// The tries of one thing under a [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct Retries {
    policy: RetryPolicy,
    failures: u32,
}

impl Retries {
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// A try failed at `now`: when to try again, or `None` when the tries are used up.
    pub fn failed(&mut self, now: Instant) -> Option<Instant> {
        self.failures = self.failures.saturating_add(1);
        (self.failures < self.policy.attempts.max(1))
            .then(|| now + self.policy.delay(self.failures))
    }

    /// A try worked: the next failure waits the shortest time again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_to_a_cap_then_give_up() {
        let policy = RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(100),
        };
        assert_eq!(policy.delay(1), Duration::from_secs(30));
        assert_eq!(policy.delay(2), Duration::from_secs(60));
        assert_eq!(policy.delay(3), Duration::from_secs(100));
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(100));
        let t0 = Instant::now();
        let mut r = Retries::new(policy);
        assert_eq!(r.failed(t0), Some(t0 + Duration::from_secs(30)));
        assert_eq!(r.failed(t0), Some(t0 + Duration::from_secs(60)));
        r.succeeded();
        assert_eq!(r.failed(t0), Some(t0 + Duration::from_secs(30)));
        assert_eq!(r.failed(t0), Some(t0 + Duration::from_secs(60)));
        assert_eq!(r.failed(t0), Some(t0 + Duration::from_secs(100)));
        assert_eq!(r.failed(t0), None);
        assert_eq!(r.failures(), 4);
    }
}
