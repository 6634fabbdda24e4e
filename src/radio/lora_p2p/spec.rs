//! The LoRa P2P driver's entry in the driver table: a RAK3172 modem that listens on one
//! channel and hears whatever private LoRa sensors send on it.

use crate::config::Protocol;
use crate::radio::{Capabilities, DriverBox, DriverSpec, OptionError, PortKind};

pub const SPEC: DriverSpec = DriverSpec {
    protocol: Protocol::LoraP2p,
    capabilities: Capabilities {
        // Senders are discovered from their frames, never joined: anyone on the channel
        // is heard, so each stays pending until a technician adopts it.
        max_join_window: None,
        credentials: &[],
        join_credential: None,
        backup: None,
        restore: false,
        key_rotation: None,
        // A P2P sensor listens, if at all, right after it sent.
        reachability: &[crate::model::Reachability::AfterUplink],
        configuration: None,
        commands: true,
        sets: true,
        removal_needs_device: None,
    },
    ports: &[PortKind::Serial, PortKind::Tcp, PortKind::Sim],
    check_options,
    new: || DriverBox::ByteStream(Box::new(super::P2pDriver)),
    emulator: Some(super::sim::attach_sim),
};

fn check_options(table: &toml::Table) -> Result<(), OptionError> {
    super::P2pOptions::parse(table).map(|_| ())
}
