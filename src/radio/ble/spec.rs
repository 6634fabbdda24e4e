//! The BLE driver's entry in the driver table: what a BLE scanner can do.

use crate::config::Protocol;
use crate::model::{CredentialKind, Reachability};
use crate::radio::{Capabilities, DriverBox, DriverSpec, OptionError, PortKind};

pub const SPEC: DriverSpec = DriverSpec {
    protocol: Protocol::Ble,
    capabilities: Capabilities {
        // Devices are discovered from their advertisements, never joined.
        max_join_window: None,
        credentials: &[CredentialKind::BthomeBindkey],
        // Nothing can be enforced at joining: there is no joining.
        join_credential: None,
        backup: None,
        restore: false,
        key_rotation: None,
        // Advertisers only transmit; nothing is sent to them.
        reachability: &[Reachability::AfterUplink],
        configuration: None,
        commands: false,
        sets: false,
        removal_needs_device: None,
    },
    ports: &[PortKind::Bluez, PortKind::Sim],
    check_options,
    new: || DriverBox::OwnTransport(Box::new(super::BleDriver::new())),
    // The emulator is not a byte stream: the driver streams it itself (`sim.rs`).
    emulator: None,
};

fn check_options(table: &toml::Table) -> Result<(), OptionError> {
    super::BleOptions::parse(table).map(|_| ())
}
