//! Runs the sans-IO ZNP coordinator emulator (`fieldgate_zigbee::emulator`) on a byte stream:
//! the far end of `sim://zigbee`'s in-process pipe, or the master side of a pseudo-terminal
//! whose slave path a driver opens through tokio-serial like a real dongle ([`PtyEmulator`]).
//!
//! The pumping lives in [`super::sim`]; this module only plugs the coordinator in. The
//! emulator (and its NV, so its network) outlives a link: a driver that re-opens
//! `sim://zigbee` finds the coordinator it left, as with real hardware.

use fieldgate_zigbee::emulator::{Emulator, EmulatorConfig, Fault};
use tokio::io::DuplexStream;

use super::sim::{byte_emulator, Parked, PtySim, Sim};

byte_emulator!(Emulator, EmulatorConfig, Fault, "zigbee");

/// A shareable handle on one emulated coordinator.
pub type SimEmulator = Sim<Emulator>;

/// An emulated coordinator behind a pseudo-terminal.
pub type PtyEmulator = PtySim<Emulator>;

/// Coordinators not attached to a link right now.
static PARKED: Parked<Emulator> = Parked::new();

/// The `sim://zigbee` factory (see `link::emulator_for`).
pub fn attach_sim(stream: DuplexStream) {
    PARKED.attach(stream, EmulatorConfig::default);
}
