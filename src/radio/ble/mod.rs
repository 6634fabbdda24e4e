//! The BLE driver: a scanner (BlueZ through btleplug, or the in-process emulator) whose
//! advertisements are decoded (`fieldgate_ble`: BTHome v2 with encryption, Xiaomi custom
//! firmware, Ruuvi, iBeacon, Eddystone), checked and rate-limited, then handed to the hub
//! as readings of the device that sent them.
//!
//! BLE devices are discovered, not joined: the first advertisement of a known format from
//! an address makes the hub register it (`pending` until adopted or admitted by policy).
//! What this driver decides and the hub does not:
//! - **security**: encrypted BTHome is decrypted with the device's bindkey (a device
//!   credential); a forged MIC, a replayed counter and plaintext from a device that has a
//!   key are refused, counted (`refused`) and audited (a `Refused` event, at most one per
//!   device per minute); the last accepted counter is persisted (`security.rs`);
//! - **load**: one advertisement per address per `min_interval` (events such as button
//!   presses excepted), a budget of new addresses per minute (`limiter.rs`); formats no
//!   decoder knows are counted (`unknown_format`), not errors.
//!
//! This module owns the loop; it must not decode bytes itself or touch the store except
//! through `SecretSink`.

mod backend;
mod bluez;
mod cadence;
mod limiter;
mod options;
mod presence;
mod security;
mod sim;
mod spec;

pub use options::BleOptions;
pub use spec::SPEC;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use anyhow::anyhow;
use fieldgate_ble::{format_address, Address, Advertisement, Context, Decoded, Report};

use crate::model::{
    CredentialKind, DeviceEvent, DeviceEventKind, DeviceInfo, LinkMetrics, RadioCommand,
    RadioError, RadioState, Reachability, Reading, Silence, Value,
};
use crate::radio::{DriverFuture, DriverIo, OwnTransportDriver, RadioCounters};
use cadence::{Cadence, SilenceRule};
use limiter::{Limiter, Verdict};
use presence::{PresenceRule, Presences, Transition};
use security::SecurityState;

/// How often a device's refusals are audited (all are counted).
const REFUSAL_AUDIT_INTERVAL: Duration = Duration::from_secs(60);
/// Bound on the per-device bookkeeping besides the limiter (described, refused).
const MAX_REMEMBERED: usize = 10_000;

/// What the hub was told a device is: its format, firmware and what silence means.
type Description = (&'static str, Option<String>, Option<Silence>);

pub struct BleDriver {
    /// Devices whose description was handed to the hub, and what.
    described: HashMap<Address, Description>,
    /// Each device's advertising interval.
    cadence: Cadence,
    /// When each device's last refusal was audited.
    audited: HashMap<Address, Instant>,
    /// Packet ids of event-carrying devices (a button press is repeated several times).
    repeats: fieldgate_ble::PacketIdFilter,
    repeat_devices: HashSet<Address>,
}

impl Default for BleDriver {
    fn default() -> Self {
        BleDriver::new()
    }
}

impl BleDriver {
    pub fn new() -> BleDriver {
        BleDriver {
            described: HashMap::new(),
            cadence: Cadence::default(),
            audited: HashMap::new(),
            repeats: fieldgate_ble::PacketIdFilter::default(),
            repeat_devices: HashSet::new(),
        }
    }
}

impl OwnTransportDriver for BleDriver {
    fn run<'a>(&'a mut self, io: &'a mut DriverIo) -> DriverFuture<'a> {
        Box::pin(self.run_scan(io))
    }
}

/// One scan session's state.
struct Session {
    security: SecurityState,
    limiter: Limiter,
    silence: SilenceRule,
    presence: Presences,
    /// Addresses followed for presence besides beacons (`presence_tags`).
    tags: HashSet<Address>,
    /// Accepted counters that could not be stored (a full disk): their
    /// advertisements were dropped, not forwarded.
    unsaved_counters: u64,
}

impl BleDriver {
    async fn run_scan(&mut self, io: &mut DriverIo) -> anyhow::Result<()> {
        let options = BleOptions::parse(&io.options).map_err(|e| anyhow!(e))?;
        let _ = io.state.send(RadioState::Starting);
        let mut source = backend::open(&io.port, &options).await?;
        RadioCounters::count(&io.counters.startups);
        let mut security = match &io.secrets {
            Some(sink) => SecurityState::load(sink, &io.radio).await?,
            None => SecurityState::default(),
        };
        for (address, key) in source.built_in_keys() {
            if !security.keys.contains(&address) {
                security.keys.insert(address, key);
            }
        }
        let mut limiter = Limiter::new(
            options.min_interval,
            options.new_per_minute,
            options.max_tracked,
        );
        let now = tokio::time::Instant::now().into_std();
        for (address, _) in security.counters.iter() {
            limiter.know(*address, now);
        }
        let tags: HashSet<Address> = options
            .presence_tags
            .iter()
            .filter_map(|t| fieldgate_ble::parse_address(t))
            .collect();
        for address in &tags {
            limiter.know(*address, now);
        }
        let mut session = Session {
            security,
            limiter,
            silence: SilenceRule {
                multiplier: options.availability_multiplier,
                floor: options.availability_floor,
                min_interval: options.min_interval,
            },
            presence: Presences::new(PresenceRule {
                away_after: options.presence_away_after,
                rssi: options.presence_rssi,
                hysteresis: options.presence_hysteresis,
                smoothing: options.presence_smoothing,
            }),
            tags,
            unsaved_counters: 0,
        };
        let check_every = (options.presence_away_after / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut presence_check = tokio::time::interval(check_every);
        presence_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(radio = %io.radio, port = %io.port, keys = session.security.keys.len(), "BLE scanner up");
        let _ = io.state.send(RadioState::Up);
        loop {
            tokio::select! {
                biased;
                cmd = io.commands.recv() => match cmd {
                    None => return Ok(()),
                    Some(cmd) => self.command(cmd, &mut session, io).await,
                },
                adv = source.next() => self.heard(adv?, &mut session, io).await?,
                _ = presence_check.tick() => {
                    let now = tokio::time::Instant::now().into_std();
                    for (address, change) in session.presence.expire(now) {
                        presence_changed(io, address, change, now).await?;
                    }
                }
            }
        }
    }

    /// One advertisement: decode, check, limit, hand over.
    async fn heard(
        &mut self,
        adv: Advertisement,
        s: &mut Session,
        io: &mut DriverIo,
    ) -> anyhow::Result<()> {
        let received_at = SystemTime::now();
        let now = tokio::time::Instant::now().into_std();
        let decoded = {
            let ctx = Context::new(&s.security.keys, &s.security.counters);
            fieldgate_ble::decode(&adv, &ctx)
        };
        let report = match decoded {
            Ok(Decoded::Known(report)) => report,
            Ok(Decoded::Unknown) => {
                RadioCounters::count(&io.counters.unknown_format);
                // A tag the site follows (a phone, a key fob) may speak no known format.
                if s.tags.contains(&adv.address) {
                    if let Some(change) = s.presence.heard(adv.address, adv.rssi, now) {
                        presence_changed(io, adv.address, change, now).await?;
                    }
                }
                return Ok(());
            }
            // Devices repeat each advertisement: the same counter again is no attack.
            Err(e) if e.is_repeat() => return Ok(()),
            Err(e) if e.is_security() => {
                RadioCounters::count(&io.counters.refused);
                let address = match e {
                    fieldgate_ble::Error::PlaintextRefused(a) => a,
                    _ => adv.address,
                };
                return self
                    .refused(address, e.to_string(), &adv, now, received_at, io)
                    .await;
            }
            Err(fieldgate_ble::Error::MissingKey(address)) => {
                // An encrypted device with no key yet: it still shows up (pending), so a
                // technician can adopt it with its bindkey.
                if s.limiter.check(address, now, false) != Verdict::Forward {
                    RadioCounters::count(&io.counters.rate_limited);
                    return Ok(());
                }
                return send(
                    io,
                    address,
                    &adv,
                    received_at,
                    DeviceEventKind::Readings(Vec::new()),
                )
                .await;
            }
            Err(e) => {
                RadioCounters::count(&io.counters.undecodable);
                tracing::debug!(radio = %io.radio, address = %format_address(&adv.address), error = %e, "undecodable advertisement");
                return Ok(());
            }
        };
        let address = report.meta.device_address.unwrap_or(adv.address);
        let urgent = !report.events.is_empty();
        if urgent {
            if let Some(id) = report.meta.packet_id {
                if self.repeat_devices.len() >= MAX_REMEMBERED {
                    self.repeat_devices.clear();
                    self.repeats = fieldgate_ble::PacketIdFilter::default();
                }
                self.repeat_devices.insert(address);
                if !self.repeats.accept(address, id, now) {
                    return Ok(());
                }
            }
        }
        if s.security.counters.accept(&report).is_some() {
            if let Some(sink) = &io.secrets {
                // Every accepted counter is committed, forwarded or not, before anything
                // goes on: after a restart no advertisement older than the last one heard
                // is accepted. Only authentic advertisements (the key's holder) get here.
                // Not stored (a full disk): this advertisement is dropped, and the radio
                // carries on; its events would not be stored either.
                // A full disk: not even tried, so the space left stays for audit
                // records; counted with the device events not stored (and said, once per
                // 10 s, with them).
                if sink.disk_full() {
                    s.unsaved_counters += 1;
                    sink.event_not_stored();
                    return Ok(());
                }
                if let Err(e) = s.security.save_counters(sink, &io.radio).await {
                    s.unsaved_counters += 1;
                    if s.unsaved_counters.is_power_of_two() {
                        tracing::warn!(radio = %io.radio, error = %format!("{e:#}"), dropped = s.unsaved_counters, "an encrypted advertisement's counter could not be stored: advertisement dropped");
                    }
                    return Ok(());
                }
            }
        }
        let verdict = s.limiter.check(address, now, urgent);
        // Only what is in the registry (let through once) is followed: the new-address
        // budget holds for presence and cadence too.
        if s.limiter.knows(&address) {
            if report.meta.beacon_id.is_some() || s.tags.contains(&address) {
                if let Some(change) = s.presence.heard(address, adv.rssi, now) {
                    presence_changed(io, address, change, now).await?;
                }
            }
            if !report.meta.trigger_based {
                self.cadence.heard(address, now);
            }
        }
        if verdict != Verdict::Forward {
            RadioCounters::count(&io.counters.rate_limited);
            return Ok(());
        }
        let readings = readings_of(&report);
        send(
            io,
            address,
            &adv,
            received_at,
            DeviceEventKind::Readings(readings),
        )
        .await?;
        let silence = cadence::silence_of(
            report.meta.trigger_based,
            self.cadence.interval(&address),
            &s.silence,
        );
        let description = (
            report.format.as_str(),
            report.meta.firmware.clone(),
            silence,
        );
        if self.described.get(&address) != Some(&description) {
            if self.described.len() >= MAX_REMEMBERED {
                self.described.clear();
            }
            self.described.insert(address, description);
            let mut info = info_of(&report, &adv);
            info.silence = silence;
            send(
                io,
                address,
                &adv,
                received_at,
                DeviceEventKind::Interviewed(info),
            )
            .await?;
        }
        Ok(())
    }

    async fn refused(
        &mut self,
        address: Address,
        reason: String,
        adv: &Advertisement,
        now: Instant,
        received_at: SystemTime,
        io: &mut DriverIo,
    ) -> anyhow::Result<()> {
        let due = self
            .audited
            .get(&address)
            .is_none_or(|at| now.saturating_duration_since(*at) >= REFUSAL_AUDIT_INTERVAL);
        if !due {
            // Said (and audited) once per address per interval: a replaying or forging
            // neighbour would otherwise write a warning per advertisement, for ever.
            tracing::debug!(radio = %io.radio, address = %format_address(&address), %reason, "advertisement refused");
            return Ok(());
        }
        tracing::warn!(radio = %io.radio, address = %format_address(&address), %reason, "advertisement refused");
        if self.audited.len() >= MAX_REMEMBERED {
            self.audited.clear();
        }
        self.audited.insert(address, now);
        send(
            io,
            address,
            adv,
            received_at,
            DeviceEventKind::Refused {
                what: "device.message".into(),
                reason,
                detail: String::new(),
            },
        )
        .await
    }

    async fn command(&mut self, cmd: RadioCommand, s: &mut Session, io: &mut DriverIo) {
        match cmd {
            RadioCommand::ProvisionCredential {
                native_address,
                credential,
                reply,
            } => {
                let result = match (
                    credential.kind,
                    fieldgate_ble::parse_address(&native_address),
                    security::bindkey_from_secret(&credential.secret),
                ) {
                    (CredentialKind::BthomeBindkey, Some(address), Some(key)) => {
                        let replaced = s.security.keys.contains(&address);
                        s.security.set_key(address, key);
                        s.limiter
                            .know(address, tokio::time::Instant::now().into_std());
                        // A new key restarts the device's counter: committed now, so a
                        // restart does not bring back the old key's (higher) counter.
                        let saved = match &io.secrets {
                            Some(sink) => {
                                s.security
                                    .save_counters(sink, &io.radio)
                                    .await
                                    .map_err(|e| {
                                        RadioError::Refused(format!(
                                            "the counters could not be stored: {e}"
                                        ))
                                    })
                            }
                            None => Ok(()),
                        };
                        if saved.is_ok() {
                            tracing::info!(radio = %io.radio, address = %native_address, replaced, "BTHome bindkey installed");
                        }
                        saved
                    }
                    (CredentialKind::BthomeBindkey, None, _) => Err(RadioError::Invalid(format!(
                        "`{native_address}` is not a BLE address"
                    ))),
                    (CredentialKind::BthomeBindkey, _, None) => Err(RadioError::Invalid(
                        "a BTHome bindkey is 16 bytes (32 hex digits)".into(),
                    )),
                    (kind, _, _) => Err(RadioError::NotSupported(format!(
                        "BLE radios take BTHome bindkeys, not {}",
                        kind.label()
                    ))),
                };
                let _ = reply.send(result);
            }
            RadioCommand::Remove { native_address } => {
                // Nothing to leave: the device keeps advertising. Its key goes (the
                // hub destroyed the credential), so its encrypted data is unreadable here.
                if let Some(address) = fieldgate_ble::parse_address(&native_address) {
                    s.security.keys.remove(&address);
                    self.described.remove(&address);
                    self.cadence.forget(&address);
                    s.presence.forget(&address);
                }
            }
            RadioCommand::Set {
                native_address,
                command_id,
                ..
            } => {
                let detail = "BLE advertisers take no commands (they only broadcast)";
                io.answer(native_address, command_id, false, detail).await;
            }
            // Nothing can be asked of an advertiser: what it says is in its advertisements.
            // A read is held until it next advertises (it is reached only then) and
            // answered with the state that advertisement left.
            RadioCommand::Read {
                native_address,
                command_id,
            } => {
                let detail = "read from its latest advertisement";
                io.answer(native_address, command_id, true, detail).await;
            }
            RadioCommand::Backup { reply } => {
                let _ = reply.send(Err(RadioError::NotSupported("backup".into())));
            }
            RadioCommand::Restore { reply, .. } => {
                let _ = reply.send(Err(RadioError::NotSupported("restore".into())));
            }
            RadioCommand::RotateNetworkKey { reply } => {
                let _ = reply.send(Err(RadioError::NotSupported(
                    "network key rotation (BLE has no network)".into(),
                )));
            }
            RadioCommand::PermitJoin { reply, .. } => {
                let _ = reply.send(Ok(()));
            }
            RadioCommand::Policy(_)
            | RadioCommand::Bridged { .. }
            | RadioCommand::Readmitted { .. } => {}
        }
    }
}

/// Hands one event about `address` to the hub.
async fn send(
    io: &mut DriverIo,
    address: Address,
    adv: &Advertisement,
    received_at: SystemTime,
    kind: DeviceEventKind,
) -> anyhow::Result<()> {
    let ev = DeviceEvent {
        radio: io.radio.clone(),
        protocol: io.protocol,
        native_address: format_address(&address).to_ascii_lowercase(),
        received_at,
        kind,
        link: adv.rssi.map(|r| LinkMetrics {
            rssi_dbm: Some(f64::from(r)),
            ..Default::default()
        }),
    };
    io.events
        .send(ev)
        .await
        .map_err(|_| anyhow!("the hub stopped taking events"))
}

/// Hands a presence change to the hub: `presence` = `present` | `away` (and the
/// smoothed RSSI), on its own, past the rate limiter (changes are rare and matter).
async fn presence_changed(
    io: &mut DriverIo,
    address: Address,
    change: Transition,
    now: Instant,
) -> anyhow::Result<()> {
    let mut readings = vec![Reading {
        name: "presence".into(),
        value: Value::Text(if change.present { "present" } else { "away" }.into()),
        unit: None,
    }];
    if let Some(rssi) = change.rssi {
        readings.push(Reading {
            name: "presence_rssi".into(),
            value: Value::Number((rssi * 10.0).round() / 10.0),
            unit: Some("dBm".into()),
        });
    }
    tracing::debug!(radio = %io.radio, address = %format_address(&address), present = change.present, "presence changed");
    let ev = DeviceEvent {
        radio: io.radio.clone(),
        protocol: io.protocol,
        native_address: format_address(&address).to_ascii_lowercase(),
        // An away is dated from when the device was last heard.
        received_at: SystemTime::now()
            .checked_sub(now.saturating_duration_since(change.last_heard))
            .unwrap_or_else(SystemTime::now),
        kind: DeviceEventKind::Readings(readings),
        link: None,
    };
    io.events
        .send(ev)
        .await
        .map_err(|_| anyhow!("the hub stopped taking events"))
}

/// The report's readings and events as the daemon's readings (an event becomes a text
/// reading: `button = "press"`).
fn readings_of(report: &Report) -> Vec<Reading> {
    let mut out: Vec<Reading> = report
        .readings
        .iter()
        .map(|r| Reading {
            name: r.name.clone(),
            value: match &r.value {
                fieldgate_ble::Value::Bool(b) => Value::Bool(*b),
                fieldgate_ble::Value::Number(n) => Value::Number(*n),
                fieldgate_ble::Value::Text(t) => Value::Text(t.clone()),
            },
            unit: r.unit.map(str::to_string),
        })
        .collect();
    out.extend(report.events.iter().map(|e| Reading {
        name: e.name.clone(),
        value: Value::Text(e.event_type.to_string()),
        unit: None,
    }));
    out
}

/// What an advertisement says the device is: its format as the model, the firmware it
/// reports, and capabilities a policy rule can match (`format:bthome`, `name:...`,
/// `encrypted`, `trigger_based`, `beacon:<id>`).
fn info_of(report: &Report, adv: &Advertisement) -> DeviceInfo {
    let mut capabilities = vec![format!("format:{}", report.format.as_str())];
    if let Some(name) = &adv.local_name {
        capabilities.push(format!("name:{name}"));
    }
    if report.meta.encrypted {
        capabilities.push("encrypted".into());
    }
    if report.meta.trigger_based {
        capabilities.push("trigger_based".into());
    }
    if let Some(id) = &report.meta.beacon_id {
        capabilities.push(format!("beacon:{id}"));
    }
    for uuid in adv.service_data.keys() {
        capabilities.push(format!("service:{uuid}"));
    }
    DeviceInfo {
        manufacturer: None,
        model: Some(report.format.as_str().to_string()),
        firmware: report.meta.firmware.clone(),
        power_source: None,
        capabilities,
        reachability: Some(Reachability::AfterUplink),
        silence: None,
    }
}

#[cfg(test)]
mod tests;
