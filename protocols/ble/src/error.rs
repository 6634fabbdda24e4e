//! The crate's one error type. Every decoder returns it instead of panicking.
//!
//! An advertisement in no format this crate knows is not an error: [`crate::decode`]
//! returns [`crate::Decoded::Unknown`] for it. These errors are for advertisements that
//! claim a known format and break it, and for the security checks of encrypted BTHome.

use thiserror::Error;

use crate::advert::format_address;

/// Why an advertisement in a known format could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The data ended before a field was complete.
    #[error("truncated {what}: need {need} more byte(s), {have} left")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// A BTHome device-info byte with a version other than 2 (v1 used other UUIDs).
    #[error("BTHome version {0} is not supported (only version 2)")]
    UnsupportedVersion(u8),
    /// An encrypted BTHome advertisement from a device that has no key here.
    #[error("encrypted BTHome advertisement from {} and no key for it", format_address(.0))]
    MissingKey([u8; 6]),
    /// The AES-CCM message integrity check failed: wrong key, or forged or damaged data.
    #[error("BTHome message integrity check failed (wrong key or forged data)")]
    BadMic,
    /// An authentic encrypted advertisement whose counter is not above the last one
    /// accepted from the device: a replay, or (when `counter == last`) the same
    /// advertisement received again.
    #[error("BTHome counter {counter} is not above the last accepted {last} (replayed)")]
    Replayed { counter: u32, last: u32 },
    /// A plaintext BTHome advertisement from a device that has a key: refused, so that
    /// nobody can bypass the encryption by sending plaintext with the device's address.
    #[error("plaintext BTHome advertisement from {} refused: the device has a key", format_address(.0))]
    PlaintextRefused([u8; 6]),
    /// A field holds a value its format does not allow, or the data has a length the
    /// format does not define.
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// A bindkey that is not 32 hex digits.
    #[error("a BTHome bindkey is 32 hex digits (16 bytes): {0}")]
    BadKey(String),
}

impl Error {
    /// True for the errors a driver should count as security events (forged, replayed or
    /// downgraded advertisements), not as radio noise.
    pub fn is_security(&self) -> bool {
        matches!(
            self,
            Error::BadMic | Error::Replayed { .. } | Error::PlaintextRefused(_)
        )
    }

    /// True when the advertisement is the last accepted one received again (same counter):
    /// devices repeat each advertisement, so this is normal, not an attack.
    pub fn is_repeat(&self) -> bool {
        matches!(self, Error::Replayed { counter, last } if counter == last)
    }
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Splits `n` bytes off the front of `data`, or says how many are missing.
pub(crate) fn take<'a>(data: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8]> {
    if data.len() < n {
        return Err(Error::Truncated {
            what,
            need: n - data.len(),
            have: data.len(),
        });
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Ok(head)
}
