//! The crate's one error type. Every decoder returns it instead of panicking.

use thiserror::Error;

/// Why a byte sequence could not be decoded or a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The input ended before a field was complete.
    #[error("truncated {what}: need {need} more byte(s), {have} left")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// An MT frame did not start with the start-of-frame byte 0xFE.
    #[error("MT frame does not start with SOF 0xFE (found {0:#04x})")]
    BadSof(u8),
    /// An MT frame's XOR checksum did not match.
    #[error("MT frame check sequence mismatch: expected {expected:#04x}, found {found:#04x}")]
    BadFcs { expected: u8, found: u8 },
    /// An MT frame's payload is longer than Z-Stack's 250-byte limit.
    #[error("MT payload of {0} bytes exceeds the 250-byte limit")]
    PayloadTooLong(usize),
    /// Bytes were left over where a frame had to end exactly.
    #[error("{0} unexpected trailing byte(s)")]
    TrailingBytes(usize),
    /// A ZCL data type id this codec cannot size (so the rest is unparseable).
    #[error("unknown ZCL data type {0:#04x}")]
    UnknownDataType(u8),
    /// A value does not fit the field it must be encoded into.
    #[error("{what}: value does not fit ({detail})")]
    ValueOutOfRange { what: &'static str, detail: String },
    /// Nested arrays/structs deeper than the codec accepts.
    #[error("ZCL value nesting deeper than {0} levels")]
    TooDeep(usize),
    /// An NV item had a length that matches none of the layouts its structure is known in
    /// (e.g. a NIB that is neither the 110-byte CC2531 nor the 116-byte CC26xx form).
    #[error("NV item {what} is {len} byte(s) long; expected {expected}")]
    NvItemLength {
        what: &'static str,
        len: usize,
        expected: &'static str,
    },
    /// Input text was not valid hexadecimal.
    #[error("invalid hex input: {0}")]
    BadHex(String),
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
