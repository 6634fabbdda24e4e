//! Leave requests for devices that must not stay on a network (denied by the
//! policy, blocked, decommissioned), waiting for room in their radio's command
//! queue. A flood of joins can decide more of them in one burst than a radio's
//! queue holds; those that do not fit wait here, in order, and go out as the
//! driver takes commands, instead of waiting for the device to speak again.

use std::collections::{HashSet, VecDeque};

use super::*;

/// Leave requests that may wait at once; past it the oldest are given up (each is
/// asked again when its device next speaks) and counted.
pub(super) const MAX_WAITING: usize = 4096;

/// How often waiting leave requests are offered to their radio again.
pub(super) const RETRY: Duration = Duration::from_millis(100);

#[derive(Default)]
pub(super) struct Leaves {
    waiting: VecDeque<(String, String)>,
    /// What `waiting` holds, to ask each device once however often it speaks.
    known: HashSet<(String, String)>,
    /// Given up for lack of room (the device is asked again when it next speaks).
    pub(super) dropped: u64,
}

impl Leaves {
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Queues a leave request unless the same one already waits.
    pub(super) fn push(&mut self, radio: &str, native_address: &str) {
        let key = (radio.to_string(), native_address.to_string());
        if !self.known.insert(key.clone()) {
            return;
        }
        if self.waiting.len() >= MAX_WAITING {
            if let Some(old) = self.waiting.pop_front() {
                self.known.remove(&old);
                self.dropped += 1;
            }
        }
        self.waiting.push_back(key);
    }

    /// A device re-admitted: its waiting leave request, if any, is not sent.
    pub(super) fn cancel(&mut self, radio: &str, native_address: &str) {
        let key = (radio.to_string(), native_address.to_string());
        if self.known.remove(&key) {
            self.waiting.retain(|k| *k != key);
        }
    }

    fn pop(&mut self) -> Option<(String, String)> {
        let key = self.waiting.pop_front()?;
        self.known.remove(&key);
        Some(key)
    }

    fn unpop(&mut self, key: (String, String)) {
        self.known.insert(key.clone());
        self.waiting.push_front(key);
    }
}

impl Hub {
    /// Hands waiting leave requests to their radios while their command queues have
    /// room. A radio whose queue is full keeps its requests (and holds back those
    /// behind them: a flood's order is kept); one that is not running loses them, as
    /// it would lose the command anyway (each device is asked again when it speaks).
    pub(super) fn send_leaves(&mut self) {
        let mut full: HashSet<String> = HashSet::new();
        let mut kept: VecDeque<(String, String)> = VecDeque::new();
        let mut lost = 0usize;
        while let Some((radio, native_address)) = self.leaves.pop() {
            if full.contains(&radio) {
                kept.push_back((radio, native_address));
                continue;
            }
            match self.reserve(&radio) {
                Ok(permit) => {
                    permit.send(RadioCommand::Remove { native_address });
                }
                Err(HubError::RadioBusy(_)) => {
                    full.insert(radio.clone());
                    kept.push_back((radio, native_address));
                }
                Err(e) => {
                    lost += 1;
                    tracing::debug!(radio, error = %e, "leave request not delivered");
                }
            }
        }
        while let Some(key) = kept.pop_back() {
            self.leaves.unpop(key);
        }
        if lost > 0 {
            tracing::warn!(
                requests = lost,
                "leave requests not delivered: their radio is not running (each device is asked again when it next speaks)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_waits_once_and_the_oldest_are_given_up_past_the_bound() {
        let mut l = Leaves::default();
        l.push("zb0", "0x01");
        l.push("zb0", "0x01");
        assert_eq!(l.len(), 1);
        for i in 0..MAX_WAITING + 10 {
            l.push("zb0", &format!("0x{i:04x}"));
        }
        assert_eq!(l.len(), MAX_WAITING);
        assert_eq!(l.dropped, 11);
        // The newest are kept, in order.
        assert_eq!(l.pop(), Some(("zb0".to_string(), format!("0x{:04x}", 10))));
    }
}
