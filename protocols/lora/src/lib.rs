//! Pure LoRa codec for fieldgate: bytes in, typed frames out, and back. No IO, no async.
//!
//! - [`lorawan`]: LoRaWAN 1.0.x PHYPayload parse/build, MIC, payload and join-accept crypto,
//!   session keys, 32-bit frame-counter reconstruction, the MAC commands a local gateway answers.
//! - [`region`]: EU868 and US915 as data: channels, data rates, RX1/RX2 parameters, delays.
//! - [`gwmp`]: the Semtech UDP packet forwarder protocol (GWMP v2) and its JSON.
//! - [`rak3172`]: the RAK3172 (RUI3) AT dialogue in LoRa P2P mode, as a line parser/builder.
//! - [`lpp`]: Cayenne LPP payloads to named readings with units.
//!
//! Everything that came from outside (radio bytes, datagrams, serial lines) is parsed into
//! a typed value or a typed error; nothing here panics on input or keeps device state.

pub mod gwmp;
pub mod lorawan;
pub mod lpp;
pub mod rak3172;
pub mod region;
pub mod types;

pub use types::{AesKey, DevAddr, DevNonce, Direction, Eui64, HexError, JoinNonce, NetId};
