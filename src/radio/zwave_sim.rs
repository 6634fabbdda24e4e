//! Runs the sans-IO Z-Wave controller emulator (`fieldgate_zwave::emulator`) on a byte
//! stream: the far end of `sim://zwave`'s in-process pipe, a TCP connection
//! (`fieldgate emulate zwave --listen`), or the master side of a pseudo-terminal whose slave
//! path a driver opens through tokio-serial like a real USB stick ([`PtyEmulator`]).
//!
//! The pumping lives in [`super::sim`]; this module adds what tests do with the handle
//! ([`SimEmulator`]: add a pending node, press a node's button, inject a fault, read back
//! what the nodes sent); nothing about the protocol. The emulator
//! (and so its network) outlives a link: a driver that re-opens `sim://zwave` finds the
//! controller it left, as with real hardware.

use fieldgate_zwave::emulator::{Emulator, EmulatorConfig, Fault, NodeKind, Recorded};
use tokio::io::DuplexStream;

use super::sim::{byte_emulator, Parked, PtySim, Sim};

byte_emulator!(Emulator, EmulatorConfig, Fault, "zwave");

/// A shareable handle on one emulated controller and its nodes.
pub type SimEmulator = Sim<Emulator>;

/// An emulated controller behind a pseudo-terminal.
pub type PtyEmulator = PtySim<Emulator>;

impl Sim<Emulator> {
    /// A node that joins on the host's next AddNodeToNetwork.
    pub fn add_pending_node(&self, kind: NodeKind) {
        self.with(|e, _| e.add_pending_node(kind));
    }

    /// Presses a node's button (exclusion, wake-up, NIF).
    pub fn press_button(&self, node: u8) {
        self.with(|e, now| e.press_button(now, node));
    }

    /// Makes a node report now.
    pub fn report_now(&self, node: u8) {
        self.with(|e, now| e.report_now(now, node));
    }

    /// A node stops (or starts again) answering.
    pub fn set_node_dead(&self, node: u8, dead: bool) {
        self.with(|e, _| e.set_node_dead(node, dead));
    }

    /// Every value the nodes sent so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.with(|e, _| e.recorded().to_vec())
    }

    /// The values the nodes sent after the first `skip`.
    pub fn recorded_since(&self, skip: usize) -> Vec<Recorded> {
        self.with(|e, _| e.recorded().get(skip..).unwrap_or_default().to_vec())
    }

    /// Ids of the nodes in the network (the controller excluded).
    pub fn node_ids(&self) -> Vec<u8> {
        self.with(|e, _| e.nodes().map(|n| n.id).collect())
    }
}

/// Controllers not attached to a link right now.
static PARKED: Parked<Emulator> = Parked::new();

/// The `sim://zwave` factory (for the driver table's `emulator:` entry).
pub fn attach_sim(stream: DuplexStream) {
    PARKED.attach(stream, EmulatorConfig::default);
}
