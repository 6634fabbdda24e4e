//! `bluez://hciN`: scanning through BlueZ's D-Bus API with btleplug. btleplug connects to
//! the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else `/run/dbus/system_bus_socket`), finds
//! the adapter, sets a discovery filter with duplicate data on and starts discovery; BlueZ
//! reports each advertisement as a property change of its device object, which btleplug
//! turns into events. No raw AD bytes come through: service data, manufacturer data, name
//! and RSSI are read back from the device's properties.
//!
//! Every failure here (no bus, no bluetoothd, no such adapter, adapter powered off, the
//! bus or bluetoothd going away while scanning) is an error the supervisor reports as the
//! radio's `down` reason. A bus connection that dies sends nothing more, so while
//! scanning the adapter is asked for its state every [`HEALTH_INTERVAL`], and every call
//! has a deadline: a silent bus is noticed, not waited on forever.
//!
//! The bus connection is one per process, kept across re-opens: btleplug's connection
//! lives as long as the bus does (its reader task holds it), so a new one per retry would
//! pile up connections until the bus refuses more. It is replaced only when the bus it
//! was made on is gone (a bus restarted has another id).

use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use btleplug::api::{
    Central, CentralEvent, CentralState, Manager as _, Peripheral as _, ScanFilter,
};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use fieldgate_ble::{AddressType, Advertisement, BleUuid};
use futures_util::{Stream, StreamExt};

use super::backend::{AdvertSource, NextFuture};

/// The longest device name Bluetooth allows, in bytes.
const MAX_NAME_BYTES: usize = 248;

/// How often a running scan checks that BlueZ still has the adapter, powered.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// The longest any one D-Bus call may take before BlueZ counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct BluezSource {
    name: String,
    adapter: Adapter,
    events: Pin<Box<dyn Stream<Item = CentralEvent> + Send>>,
    health: tokio::time::Interval,
    /// The health check under way. Kept here, not in [`AdvertSource::next`]'s future: the
    /// driver drops that future whenever something else is due (a command, the presence
    /// timer), and a check that takes longer than that gap would otherwise never finish.
    checking: Option<Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>>,
    /// Who owned `org.bluez` when discovery started (`None` if that could not be read).
    owner: Option<String>,
}

/// The process's connection to the system bus and the id of the bus it was made on.
struct SharedBus {
    manager: Manager,
    bus_id: String,
}

static BUS: tokio::sync::Mutex<Option<SharedBus>> = tokio::sync::Mutex::const_new(None);

/// The system bus as `DBUS_SYSTEM_BUS_ADDRESS` or the standard path names it (for messages).
fn bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".into())
}

/// One call to the bus itself (`org.freedesktop.DBus`) that answers a string, over a
/// short-lived connection of its own: `Err` when the bus cannot be reached or refuses.
async fn ask_bus<A: dbus::arg::AppendAll + Send + 'static>(
    method: &'static str,
    args: A,
) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let conn = dbus::blocking::Connection::new_system()?;
        let proxy = conn.with_proxy(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            CALL_TIMEOUT,
        );
        let (answer,): (String,) = proxy.method_call("org.freedesktop.DBus", method, args)?;
        Ok::<_, dbus::Error>(answer)
    })
    .await?
    .map_err(|e| anyhow::anyhow!("{}", e.message().unwrap_or("no reason given")))
}

/// The system bus's id (`GetId`): another one after the bus restarted.
async fn bus_id() -> anyhow::Result<String> {
    ask_bus("GetId", ()).await
}

/// The unique bus name that owns `org.bluez` now: a bluetoothd restarted, even within
/// one health interval, has another one, and knows nothing of the discovery asked of
/// the one before it.
async fn bluez_owner() -> anyhow::Result<String> {
    ask_bus("GetNameOwner", ("org.bluez",)).await
}

/// The shared btleplug manager, connecting first when there is none.
async fn manager() -> anyhow::Result<Manager> {
    let mut bus = BUS.lock().await;
    if let Some(shared) = bus.as_ref() {
        return Ok(shared.manager.clone());
    }
    let unreachable = || {
        format!(
            "cannot reach BlueZ on the system D-Bus at {} (is dbus running? see `fieldgate doctor`)",
            bus_address()
        )
    };
    let bus_id = bus_id().await.with_context(unreachable)?;
    let manager = deadline("connecting to the system D-Bus", Manager::new())
        .await
        .with_context(unreachable)?;
    *bus = Some(SharedBus {
        manager: manager.clone(),
        bus_id,
    });
    Ok(manager)
}

/// After a failure: forgets the shared connection when the bus it was made on is gone
/// (unreachable, or restarted: another id). Says which, for the radio's reason.
async fn forget_connection_if_bus_gone() -> Option<String> {
    let mut bus = BUS.lock().await;
    let known = bus.as_ref()?.bus_id.clone();
    let gone = match bus_id().await {
        Ok(id) if id == known => return None,
        Ok(_) => "the system D-Bus was restarted".to_string(),
        Err(e) => format!("the system D-Bus at {} went away: {e}", bus_address()),
    };
    *bus = None;
    Some(gone)
}

/// Runs one D-Bus call with [`CALL_TIMEOUT`].
async fn deadline<T>(
    what: &str,
    call: impl std::future::Future<Output = btleplug::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| anyhow::anyhow!(explain(&e))),
        Err(_) => anyhow::bail!("{what}: no answer within {CALL_TIMEOUT:?}"),
    }
}

/// A btleplug error in words a technician acts on: the D-Bus error's name says whether
/// bluetoothd is missing, the adapter is gone or the adapter is not ready.
fn explain(e: &btleplug::Error) -> String {
    let dbus_error = match e {
        btleplug::Error::Other(inner) => {
            match inner.downcast_ref::<bluez_async::BluetoothError>() {
                Some(bluez_async::BluetoothError::DbusError(d)) => Some(d),
                _ => None,
            }
        }
        _ => None,
    };
    let Some(d) = dbus_error else {
        return e.to_string();
    };
    let message = d.message().unwrap_or_default();
    match d.name().unwrap_or_default() {
        "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
            "bluetoothd is not running: nothing owns org.bluez on the system D-Bus (systemctl start bluetooth)".into()
        }
        "org.freedesktop.DBus.Error.UnknownObject" | "org.freedesktop.DBus.Error.UnknownMethod" | "org.freedesktop.DBus.Error.UnknownInterface" => {
            "BlueZ no longer has the adapter (unplugged, or bluetoothd restarted)".into()
        }
        "org.freedesktop.DBus.Error.AccessDenied" => format!(
            "the D-Bus policy does not let this user talk to org.bluez ({message}); install fieldgate-bluez.conf, see `fieldgate doctor`"
        ),
        "org.bluez.Error.NotReady" => "the adapter is not ready (powered off? `bluetoothctl power on`)".into(),
        name => format!("{name}: {message}"),
    }
}

impl BluezSource {
    pub async fn open(name: &str) -> anyhow::Result<BluezSource> {
        match BluezSource::try_open(name).await {
            Ok(source) => Ok(source),
            Err(e) => Err(match forget_connection_if_bus_gone().await {
                Some(gone) => e.context(gone),
                None => e,
            }),
        }
    }

    async fn try_open(name: &str) -> anyhow::Result<BluezSource> {
        let manager = manager().await?;
        let adapters = deadline("listing BlueZ's adapters", manager.adapters())
            .await
            .context("BlueZ did not list its adapters")?;
        let mut found = None;
        let mut seen = Vec::new();
        for a in adapters {
            let info = deadline("reading an adapter", a.adapter_info())
                .await
                .unwrap_or_default();
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
        if deadline("reading the adapter's state", adapter.adapter_state()).await?
            != CentralState::PoweredOn
        {
            anyhow::bail!(
                "adapter {name} is powered off (`bluetoothctl power on`; `rfkill unblock bluetooth` if it is blocked)"
            );
        }
        // Subscribe before scanning, so nothing heard in between is missed.
        let events = deadline("subscribing to the adapter's events", adapter.events())
            .await
            .with_context(|| format!("cannot watch {name}'s events"))?;
        deadline(
            "starting discovery",
            adapter.start_scan(ScanFilter::default()),
        )
        .await
        .with_context(|| format!("BlueZ refused to start discovery on {name}"))?;
        let owner = bluez_owner().await.ok();
        tracing::info!(adapter = name, "BLE scan started through BlueZ");
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.reset();
        Ok(BluezSource {
            name: name.to_string(),
            adapter,
            events,
            health,
            checking: None,
            owner,
        })
    }
}

/// Whether BlueZ still has adapter `name`, powered, and is still the bluetoothd that
/// was asked to scan (`owner`, when known) (`Err` says what is wrong).
async fn check(adapter: &Adapter, name: &str, owner: Option<String>) -> anyhow::Result<()> {
    if let (Some(was), Ok(now)) = (owner, bluez_owner().await) {
        if was != now {
            anyhow::bail!("bluetoothd restarted (org.bluez is now {now}, was {was}): its discovery is not running; scanning again");
        }
    }
    let alive = async {
        deadline("reading the adapter", adapter.adapter_info()).await?;
        match deadline("reading the adapter's state", adapter.adapter_state()).await? {
            CentralState::PoweredOn => Ok(()),
            _ => anyhow::bail!("adapter {name} was powered off"),
        }
    }
    .await;
    match alive {
        Ok(()) => Ok(()),
        Err(e) => Err(match forget_connection_if_bus_gone().await {
            Some(gone) => e.context(gone),
            None => e.context(format!("lost adapter {name}")),
        }),
    }
}

/// The advertisement of device `id` as BlueZ last merged it (`None` when it is gone).
async fn advertisement(adapter: &Adapter, id: &PeripheralId) -> Option<Advertisement> {
    let peripheral = match deadline("reading a device", adapter.peripheral(id)).await {
        Ok(p) => p,
        // Gone between the signal and the lookup (BlueZ expires devices).
        Err(_) => return None,
    };
    let p = deadline("reading a device's properties", peripheral.properties())
        .await
        .ok()
        .flatten()?;
    let mut adv = Advertisement::new(p.address.into_inner());
    adv.address_type = match p.address_type {
        Some(btleplug::api::AddressType::Public) => AddressType::Public,
        Some(btleplug::api::AddressType::Random) => AddressType::Random,
        None => AddressType::Unknown,
    };
    adv.rssi = p.rssi;
    // The name the device advertised (BlueZ's `Name`), not `local_name`: that is BlueZ's
    // `Alias`, which for a device that sent no name is its address with dashes.
    // A name is at most 248 bytes (Core Spec Vol 3 Part C, 12.1); a longer one from a
    // broken or hostile bluetoothd is cut there, on a character boundary.
    adv.local_name = p.advertisement_name.map(|mut n| {
        let mut end = n.len().min(MAX_NAME_BYTES);
        while !n.is_char_boundary(end) {
            end -= 1;
        }
        n.truncate(end);
        n
    });
    adv.service_data = p
        .service_data
        .into_iter()
        .map(|(u, d)| (BleUuid::from_u128(u.as_u128()), d))
        .collect();
    adv.manufacturer_data = p.manufacturer_data.into_iter().collect();
    Some(adv)
}

impl AdvertSource for BluezSource {
    fn next(&mut self) -> NextFuture<'_> {
        Box::pin(async move {
            loop {
                let BluezSource {
                    name,
                    adapter,
                    events,
                    health,
                    checking,
                    owner,
                } = &mut *self;
                let event = tokio::select! {
                    event = events.next() => event.context(
                        "BlueZ's event stream ended (bluetoothd restarted or the bus went away)",
                    )?,
                    _ = health.tick(), if checking.is_none() => {
                        let (adapter, name, owner) = (adapter.clone(), name.clone(), owner.clone());
                        *checking = Some(Box::pin(async move { check(&adapter, &name, owner).await }));
                        continue;
                    }
                    result = async { checking.as_mut().expect("guarded").await }, if checking.is_some() => {
                        *checking = None;
                        result?;
                        continue;
                    }
                };
                let id = match event {
                    CentralEvent::ServiceDataAdvertisement { id, .. }
                    | CentralEvent::ManufacturerDataAdvertisement { id, .. }
                    | CentralEvent::DeviceDiscovered(id) => id,
                    CentralEvent::StateUpdate(CentralState::PoweredOff) => {
                        anyhow::bail!("adapter {} was powered off", self.name)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dbus_error(name: &str, message: &str) -> btleplug::Error {
        let e = dbus::Error::new_custom(name, message);
        btleplug::Error::Other(Box::new(bluez_async::BluetoothError::DbusError(e)))
    }

    #[test]
    fn dbus_errors_are_explained_by_their_name() {
        let no_bluez = dbus_error(
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "The name org.bluez was not provided by any .service files",
        );
        assert!(explain(&no_bluez).starts_with("bluetoothd is not running"));
        let gone = dbus_error(
            "org.freedesktop.DBus.Error.UnknownObject",
            "no /org/bluez/hci0",
        );
        assert!(explain(&gone).contains("no longer has the adapter"));
        let denied = dbus_error(
            "org.freedesktop.DBus.Error.AccessDenied",
            "Rejected send message",
        );
        assert!(
            explain(&denied).contains("fieldgate-bluez.conf"),
            "{}",
            explain(&denied)
        );
        let other = dbus_error("org.bluez.Error.Failed", "Operation failed");
        assert_eq!(explain(&other), "org.bluez.Error.Failed: Operation failed");
        assert_eq!(
            explain(&btleplug::Error::DeviceNotFound),
            "Device not found"
        );
    }
}
