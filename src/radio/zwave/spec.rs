//! The Z-Wave driver's entry in the driver table: what a Serial API controller can do.

use std::time::Duration;

use crate::config::Protocol;
use crate::model::Reachability;
use crate::radio::{Capabilities, DriverBox, DriverSpec, OptionError, PortKind};

pub const SPEC: DriverSpec = DriverSpec {
    protocol: Protocol::Zwave,
    capabilities: Capabilities {
        // Inclusion is a mode the controller stays in until told to stop; the spec's
        // inclusion timeout is 60 s per attempt, longer windows are re-armed.
        max_join_window: Some(Duration::from_secs(600)),
        // S2 bootstrapping is not done (yet): no DSK is taken.
        credentials: &[],
        join_credential: None,
        backup: Some(super::BACKUP_FORMAT),
        restore: true,
        key_rotation: None,
        // Listening and FLiRS nodes hear at once; battery nodes only after a wake-up.
        reachability: &[Reachability::AlwaysListening, Reachability::WakeUp],
        // Configuration CC parameters (Set, then Get to read them back).
        // Configuration CC: a parameter number is one byte.
        configuration: Some(255),
        commands: true,
        sets: true,
        // Exclusion: the controller listens for the device's exclusion frame (its button).
        removal_needs_device: Some(super::inclusion::EXCLUSION_WINDOW),
    },
    ports: &[PortKind::Serial, PortKind::Tcp, PortKind::Sim],
    check_options,
    new: || DriverBox::ByteStream(Box::new(super::ZwaveDriver::new())),
    emulator: Some(crate::radio::zwave_sim::attach_sim),
};

fn check_options(table: &toml::Table) -> Result<(), OptionError> {
    super::ZwaveOptions::parse(table).map(|_| ())
}
