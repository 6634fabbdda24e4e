//! The LoRa driver's entry in the driver table: a LoRaWAN gateway behind a packet
//! forwarder, answering joins and keeping sessions for the devices it owns.

use crate::config::Protocol;
use crate::model::{CredentialKind, Reachability};
use crate::radio::{Capabilities, DriverBox, DriverSpec, OptionError, PortKind};

pub const SPEC: DriverSpec = DriverSpec {
    protocol: Protocol::Lora,
    capabilities: Capabilities {
        // Joins are answered for provisioned devices whenever they come; the window is
        // the hub's admission of new devices, not a radio state.
        max_join_window: Some(std::time::Duration::from_secs(3600)),
        credentials: &[CredentialKind::LorawanOtaa, CredentialKind::LorawanAbp],
        join_credential: None,
        backup: None,
        restore: false,
        key_rotation: None,
        // Class A: a device hears only in the two windows after its own uplink.
        reachability: &[Reachability::AfterUplink],
        configuration: None,
        commands: true,
        sets: false,
        removal_needs_device: None,
    },
    ports: &[PortKind::Udp, PortKind::Sim],
    check_options,
    new: || DriverBox::OwnTransport(Box::new(super::LoraDriver::default())),
    emulator: None,
};

fn check_options(table: &toml::Table) -> Result<(), OptionError> {
    super::LoraOptions::parse(table).map(|_| ())
}
