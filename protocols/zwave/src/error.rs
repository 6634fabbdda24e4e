//! The crate's one error type. Every decoder returns it instead of panicking.

use thiserror::Error;

/// Why bytes could not be decoded or a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The input ended before a field was complete.
    #[error("truncated {what}: need {need} byte(s), have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// A data frame did not start with SOF 0x01.
    #[error("Serial API frame does not start with SOF 0x01 (found {0:#04x})")]
    BadSof(u8),
    /// A data frame's LEN is below 3 (TYPE, FUNC and CHK are always there).
    #[error("Serial API frame length {0} is below the minimum of 3")]
    BadLength(u8),
    /// A data frame's XOR checksum did not match.
    #[error("Serial API checksum mismatch: expected {expected:#04x}, found {found:#04x}")]
    BadChecksum { expected: u8, found: u8 },
    /// A payload is too long for the one-byte length field it must fit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// Bytes were left over where a frame had to end exactly.
    #[error("{0} unexpected trailing byte(s)")]
    TrailingBytes(usize),
    /// A field holds a value the layout does not allow (e.g. a value size of 5).
    #[error("{what}: invalid value {value:#x}")]
    InvalidField { what: &'static str, value: u32 },
    /// A value does not fit the field it must be encoded into.
    #[error("{what}: value does not fit ({detail})")]
    ValueOutOfRange { what: &'static str, detail: String },
    /// Encapsulated command classes nested deeper than the codec follows.
    #[error("command classes nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
