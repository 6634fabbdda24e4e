//! `bluez://hciN`: scanning through BlueZ's D-Bus API with btleplug. btleplug connects to
//! the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else `/run/dbus/system_bus_socket`), finds
//! the adapter, sets a discovery filter with duplicate data on and starts discovery; BlueZ
//! reports each advertisement as a property change of its device object, which btleplug
//! turns into events. No raw AD bytes come through: service data, manufacturer data, name
//! and RSSI are read back from the device's properties.
//!
//! Every failure here (no bus, no bluetoothd, no such adapter, adapter powered off, the
//! event stream ending) is an error the supervisor reports as the radio's `down` reason.

use std::pin::Pin;

use anyhow::Context as _;
use btleplug::api::{
    Central, CentralEvent, CentralState, Manager as _, Peripheral as _, ScanFilter,
};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use fieldgate_ble::{AddressType, Advertisement, BleUuid};
use futures_util::{Stream, StreamExt};

use super::backend::{AdvertSource, NextFuture};

pub struct BluezSource {
    adapter: Adapter,
    events: Pin<Box<dyn Stream<Item = CentralEvent> + Send>>,
}

impl BluezSource {
    pub async fn open(name: &str) -> anyhow::Result<BluezSource> {
        let manager = Manager::new().await.context(
            "cannot reach BlueZ on the system D-Bus (is dbus running? see `fieldgate doctor`)",
        )?;
        let adapters = manager
            .adapters()
            .await
            .context("BlueZ did not list its adapters (is bluetoothd running?)")?;
        let mut found = None;
        let mut seen = Vec::new();
        for a in adapters {
            let info = a.adapter_info().await.unwrap_or_default();
            let id = info
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            if id == name {
                found = Some(a);
                break;
            }
            seen.push(id);
        }
        let adapter = found.with_context(|| {
            if seen.is_empty() {
                format!("BlueZ has no adapter {name} (none at all: is one plugged in and not blocked by rfkill?)")
            } else {
                format!("BlueZ has no adapter {name} (it has {})", seen.join(", "))
            }
        })?;
        // Subscribe before scanning, so nothing heard in between is missed.
        let events = adapter
            .events()
            .await
            .with_context(|| format!("cannot watch {name}'s events"))?;
        adapter
            .start_scan(ScanFilter::default())
            .await
            .with_context(|| {
                format!("BlueZ refused to start discovery on {name} (powered off?)")
            })?;
        tracing::info!(adapter = name, "BLE scan started through BlueZ");
        Ok(BluezSource { adapter, events })
    }
}

/// The advertisement of device `id` as BlueZ last merged it (`None` when it is gone).
async fn advertisement(adapter: &Adapter, id: &PeripheralId) -> Option<Advertisement> {
    {
        let peripheral = match adapter.peripheral(id).await {
            Ok(p) => p,
            // Gone between the signal and the lookup (BlueZ expires devices).
            Err(_) => return None,
        };
        let p = peripheral.properties().await.ok().flatten()?;
        let mut adv = Advertisement::new(p.address.into_inner());
        adv.address_type = match p.address_type {
            Some(btleplug::api::AddressType::Public) => AddressType::Public,
            Some(btleplug::api::AddressType::Random) => AddressType::Random,
            None => AddressType::Unknown,
        };
        adv.rssi = p.rssi;
        adv.local_name = p.local_name;
        adv.service_data = p
            .service_data
            .into_iter()
            .map(|(u, d)| (BleUuid::from_u128(u.as_u128()), d))
            .collect();
        adv.manufacturer_data = p.manufacturer_data.into_iter().collect();
        Some(adv)
    }
}

impl AdvertSource for BluezSource {
    fn next(&mut self) -> NextFuture<'_> {
        Box::pin(async move {
            loop {
                let event = self.events.next().await.context(
                    "BlueZ's event stream ended (bluetoothd restarted or the bus went away)",
                )?;
                let id = match event {
                    CentralEvent::ServiceDataAdvertisement { id, .. }
                    | CentralEvent::ManufacturerDataAdvertisement { id, .. }
                    | CentralEvent::DeviceDiscovered(id) => id,
                    CentralEvent::StateUpdate(CentralState::PoweredOff) => {
                        anyhow::bail!("the adapter was powered off")
                    }
                    _ => continue,
                };
                if let Some(adv) = advertisement(&self.adapter, &id).await {
                    return Ok(adv);
                }
            }
        })
    }
}
