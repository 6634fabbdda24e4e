//! De-duplication by packet id. Devices send each advertisement several times (and a
//! gateway with two adapters hears each twice); BTHome's packet id (object 0x00), the
//! pvvx/ATC frame counter and Ruuvi's sequence number say which are the same packet.
//!
//! The rule is bthome-ble's: a packet id is new when there is no earlier one, when more
//! than the window (4 s) has passed since the last accepted packet, or when it is ahead
//! of the last one by 1 to 63 (mod 256; ids wrap, and more than 63 packets in 4 s is
//! not a rate real devices reach). Anything else is a repeat or an older packet.
//! The clock is the caller's: pass `now` in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::advert::Address;

/// Remembers the last accepted packet id of each device.
#[derive(Debug, Clone)]
pub struct PacketIdFilter {
    last: HashMap<Address, (u8, Instant)>,
    window: Duration,
}

impl Default for PacketIdFilter {
    fn default() -> Self {
        PacketIdFilter::new(Duration::from_secs(4))
    }
}

impl PacketIdFilter {
    /// A filter that treats any id as new once `window` has passed since the last one.
    pub fn new(window: Duration) -> PacketIdFilter {
        PacketIdFilter {
            last: HashMap::new(),
            window,
        }
    }

    /// True (and remembered) when `packet_id` is a new packet from `address`; false for a
    /// repeat or an older packet. Only the low 8 bits of the id are compared.
    pub fn accept(&mut self, address: Address, packet_id: u32, now: Instant) -> bool {
        let id = packet_id as u8;
        let new = match self.last.get(&address) {
            None => true,
            Some(&(last, at)) => {
                now.saturating_duration_since(at) > self.window
                    || (1..64).contains(&id.wrapping_sub(last))
            }
        };
        if new {
            self.last.insert(address, (id, now));
        }
        new
    }

    /// Forgets a device (e.g. once it is removed).
    pub fn forget(&mut self, address: &Address) {
        self.last.remove(address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_older_and_wrapping_ids() {
        let t0 = Instant::now();
        let a = [1; 6];
        let mut f = PacketIdFilter::default();
        assert!(f.accept(a, 10, t0));
        assert!(!f.accept(a, 10, t0), "repeat");
        assert!(!f.accept(a, 9, t0), "older");
        assert!(f.accept(a, 11, t0));
        assert!(f.accept(a, 74, t0), "63 ahead");
        assert!(!f.accept(a, 74 + 64, t0), "64 ahead counts as older");
        assert!(
            f.accept(a, 74 + 64, t0 + Duration::from_secs(5)),
            "after the window"
        );
        // Wrap-around: 250 -> 3 is 9 ahead.
        let b = [2; 6];
        assert!(f.accept(b, 250, t0));
        assert!(f.accept(b, 3, t0));
        assert!(!f.accept(b, 250, t0));
        // Devices are independent.
        assert!(f.accept([3; 6], 10, t0));
        f.forget(&b);
        assert!(f.accept(b, 250, t0));
    }
}
