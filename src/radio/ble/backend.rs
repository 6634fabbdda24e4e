//! Where advertisements come from: a scanner backend behind one small trait, chosen by
//! the radio's port: `bluez://hciN` is BlueZ over the system D-Bus (btleplug), `sim://ble`
//! the in-process emulator. The driver loop sees only [`AdvertSource`].
//!
//! Backends own the transport and its failures; they decode nothing.

use std::future::Future;
use std::pin::Pin;

use fieldgate_ble::{Address, Advertisement, BindKey};

use super::options::BleOptions;
use crate::config::PortSpec;

pub type NextFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Advertisement>> + Send + 'a>>;

/// A running scan.
pub trait AdvertSource: Send {
    /// The next advertisement heard (with its scan response merged in). `Err` when the
    /// scan failed: the driver returns it and the supervisor re-opens with backoff.
    fn next(&mut self) -> NextFuture<'_>;

    /// Bindkeys the source itself knows (the emulator's own devices); a real adapter
    /// knows none. Keys stored as device credentials take precedence.
    fn built_in_keys(&self) -> Vec<(Address, BindKey)> {
        Vec::new()
    }
}

/// Opens the scanner for `port`.
pub async fn open(port: &PortSpec, options: &BleOptions) -> anyhow::Result<Box<dyn AdvertSource>> {
    match port {
        PortSpec::Sim(_) => Ok(Box::new(super::sim::SimSource::new(options))),
        PortSpec::Bluez(adapter) => Ok(Box::new(super::bluez::BluezSource::open(adapter).await?)),
        other => anyhow::bail!("{other} is not a BLE scanner: use bluez://hci0 or sim://ble"),
    }
}
