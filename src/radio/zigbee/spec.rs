//! The Zigbee driver's entry in the driver table: what a Z-Stack coordinator can do.

use std::time::Duration;

use crate::config::Protocol;
use crate::model::{CredentialKind, Reachability};
use crate::radio::{Capabilities, DriverBox, DriverSpec, OptionError, PortKind};

pub const SPEC: DriverSpec = DriverSpec {
    protocol: Protocol::Zigbee,
    capabilities: Capabilities {
        // permit_join takes one byte of seconds; 255 would mean "forever".
        max_join_window: Some(Duration::from_secs(254)),
        credentials: &[CredentialKind::ZigbeeInstallCode],
        join_credential: Some(CredentialKind::ZigbeeInstallCode),
        backup: Some("open-coordinator-backup"),
        // Restore is zigbee-herdsman's or zigpy's: they form the network anew from the file.
        restore: false,
        key_rotation: Some(super::MAX_KEY_SWITCH_DELAY),
        // Routers are always listening; sleepy end devices poll their parent.
        reachability: &[Reachability::AlwaysListening, Reachability::WakeUp],
        configuration: None,
        commands: true,
        sets: true,
        removal_needs_device: None,
    },
    ports: &[PortKind::Serial, PortKind::Tcp, PortKind::Sim],
    check_options,
    new: || DriverBox::ByteStream(Box::new(super::ZigbeeDriver::new())),
    emulator: Some(crate::radio::zigbee_sim::attach_sim),
};

fn check_options(table: &toml::Table) -> Result<(), OptionError> {
    super::ZigbeeOptions::parse(table).map(|_| ())
}
