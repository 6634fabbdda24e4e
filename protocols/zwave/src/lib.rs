//! Pure Z-Wave codec for fieldgate: bytes in, typed frames out, and back. No IO, no async.
//!
//! Layers, each usable alone:
//! - [`frame`]: Serial API framing ([`Frame`], [`DataFrame`]) and the resyncing
//!   [`SerialParser`] with its counters ([`ParserStats`]);
//! - [`message`]: typed requests, responses, callbacks and unsolicited frames, and what a
//!   host state machine needs to match them ([`classify`], [`Request::expects`],
//!   [`CallbackIds`]);
//! - [`cc`]: command classes ([`Cc`]) in both directions, with S0/S2 recognised but not
//!   decrypted;
//! - [`normalize`](normalize::normalize): reports to readings (`temperature = 21.5 °C`);
//! - [`decode`]: a captured byte stream to one JSON report (`fieldgate decode zwave`).
//!
//! Frames, messages and command classes serialize (serde) as they decode: enums as
//! `{"variant": {fields}}` in snake_case, byte strings as lower-case hex.
//!
//! Nothing here panics on input: every read is bounds-checked and every failure is an
//! [`Error`]. Layouts are checked against zwave-js (`packages/serial`, `packages/cc`,
//! `packages/core`) and the Silicon Labs Serial API guide; the comment next to each layout
//! names its source. Everything encodes as well as decodes, so the device-side emulator
//! (feature `emulator`) answers with the same types the driver reads.
//!
//! ```
//! use fieldgate_zwave::cc::{Cc, MultilevelSensor};
//! use fieldgate_zwave::message::{classify, CallbackIds, FrameClass, Inbound, Request, Unsolicited};
//! use fieldgate_zwave::{Frame, SerialParser};
//!
//! // Host -> controller: ask node 3 for its temperature.
//! let mut ids = CallbackIds::new();
//! let get = Cc::MultilevelSensor(MultilevelSensor::Get { sensor: None }).encode().unwrap();
//! let request = Request::send_data(3, get, ids.next());
//! let wire = request.to_bytes().unwrap();
//! assert_eq!(wire, [0x01, 0x09, 0x00, 0x13, 0x03, 0x02, 0x31, 0x04, 0x25, 0x01, 0xF5]);
//!
//! // Controller -> host: bytes arrive in pieces; frames come out whole.
//! let mut parser = SerialParser::new();
//! let mut frames = parser.feed(&[0x06, 0x01, 0x0C, 0x00, 0x04, 0x00, 0x03, 0x06]);
//! frames.extend(parser.feed(&[0x31, 0x05, 0x01, 0x22, 0x00, 0xD7, 0x32]));
//! assert_eq!(frames[0], Frame::Ack);
//! assert_eq!(classify(&frames[1]), FrameClass::Unsolicited { function: 0x04 });
//! let Frame::Data(data) = &frames[1] else { unreachable!() };
//! let Inbound::Unsolicited(Unsolicited::ApplicationCommand(cmd)) = Inbound::decode(data).unwrap()
//! else { unreachable!() };
//! let readings = fieldgate_zwave::normalize::normalize(&Cc::decode(&cmd.payload).unwrap());
//! assert_eq!((readings[0].name, readings[0].unit), ("temperature", Some("°C")));
//! # let _ = wire;
//! ```

pub mod cc;
pub mod decode;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod error;
pub mod frame;
pub mod function;
mod macros;
pub mod message;
pub mod normalize;
pub mod samples;
mod wire;

pub use cc::Cc;
pub use error::{Error, Result};
pub use frame::{DataFrame, Frame, FrameType, ParseEvent, ParserStats, Rejection, SerialParser};
pub use message::{classify, CallbackIds, FrameClass, Inbound, Request};
pub use normalize::{normalize, Reading, ReadingValue};
pub use wire::{from_hex, to_hex};
