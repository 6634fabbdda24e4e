//! The hub: the one place that decides.
//!
//! It takes device events from the radios and requests from the two doors (local
//! API, MQTT), applies the rules, and turns each into one store transaction that
//! updates the registry, appends the audit record and queues the outbox messages
//! together. It never does IO itself beyond asking the store and the radios.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::model::{
    rfc3339, DeviceEvent, DeviceEventKind, DeviceId, Lifecycle, RadioCommand, RadioState,
};
use crate::radio::RadioHandle;
use crate::store::audit::{AuditEntry, Outcome};
use crate::store::outbox::{self, MessageKind, NewMessage, OutboxGate};
use crate::store::{self, registry, StoreError, Writer};

/// Longest join window anyone may open (Zigbee's own limit is 254 s).
pub const MAX_PERMIT_JOIN_SECONDS: u32 = 254;

/// A request to the hub; each carries who asked, for the audit record.
#[derive(Debug)]
pub enum HubRequest {
    PermitJoin {
        radio: String,
        seconds: u32,
        actor: String,
        reply: oneshot::Sender<Result<PermitJoinAccepted, HubError>>,
    },
    Decommission {
        device: DeviceId,
        actor: String,
        reply: oneshot::Sender<Result<Decommissioned, HubError>>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PermitJoinAccepted {
    pub radio: String,
    pub seconds: u32,
    pub open_until: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decommissioned {
    pub device: registry::Device,
    pub credentials_destroyed: usize,
    /// What happened on the radio side.
    pub radio_removal: String,
}

/// Why the hub refused or failed a request; `code` is stable for API clients.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error("no radio named `{0}`")]
    UnknownRadio(String),
    #[error("radio `{0}` is not running: {1}")]
    RadioUnavailable(String, String),
    #[error("no device `{0}`")]
    UnknownDevice(String),
    #[error("device `{0}` is already decommissioned")]
    AlreadyDecommissioned(String),
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Store(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl HubError {
    pub fn code(&self) -> &'static str {
        match self {
            HubError::UnknownRadio(_) => "unknown_radio",
            HubError::RadioUnavailable(..) => "radio_unavailable",
            HubError::UnknownDevice(_) => "unknown_device",
            HubError::AlreadyDecommissioned(_) => "already_decommissioned",
            HubError::Invalid(_) => "invalid_request",
            HubError::Store(_) => "store_error",
            HubError::ShuttingDown => "shutting_down",
        }
    }
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        HubError::Store(e.to_string())
    }
}

/// What the hub tells observers (the demo console, `pair`'s live view).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    DeviceJoined {
        device: String,
        radio: String,
        new: bool,
    },
    DeviceInterviewed {
        device: String,
        manufacturer: Option<String>,
        model: Option<String>,
    },
    Readings {
        device: String,
        readings: Vec<crate::model::Reading>,
        outbox_seq: i64,
    },
    DeviceLeft {
        device: String,
    },
    PermitJoin {
        radio: String,
        seconds: u32,
    },
    Decommissioned {
        device: String,
    },
}

/// A handle to send requests to the hub.
#[derive(Clone)]
pub struct HubHandle {
    requests: mpsc::Sender<HubRequest>,
    notices: broadcast::Sender<Notice>,
}

impl HubHandle {
    pub async fn request(&self, req: HubRequest) -> Result<(), HubError> {
        self.requests
            .send(req)
            .await
            .map_err(|_| HubError::ShuttingDown)
    }

    pub async fn permit_join(
        &self,
        radio: String,
        seconds: u32,
        actor: String,
    ) -> Result<PermitJoinAccepted, HubError> {
        let (reply, rx) = oneshot::channel();
        self.request(HubRequest::PermitJoin {
            radio,
            seconds,
            actor,
            reply,
        })
        .await?;
        rx.await.map_err(|_| HubError::ShuttingDown)?
    }

    pub async fn decommission(
        &self,
        device: DeviceId,
        actor: String,
    ) -> Result<Decommissioned, HubError> {
        let (reply, rx) = oneshot::channel();
        self.request(HubRequest::Decommission {
            device,
            actor,
            reply,
        })
        .await?;
        rx.await.map_err(|_| HubError::ShuttingDown)?
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}

pub struct Hub {
    gateway_id: Arc<str>,
    writer: Writer,
    radios: HashMap<String, RadioHandle>,
    join_windows: HashMap<String, Instant>,
    notices: broadcast::Sender<Notice>,
    /// Closed to telemetry by the upstream task when the outbox is full of
    /// messages that are never dropped.
    outbox_gate: Arc<OutboxGate>,
}

/// How often the hub proves it is alive (store round trip + `WATCHDOG=1`).
pub struct Liveness {
    pub interval: Duration,
    pub on_alive: Box<dyn Fn() + Send + Sync>,
}

impl Hub {
    pub fn new(
        gateway_id: &str,
        writer: Writer,
        radios: &[RadioHandle],
    ) -> (Hub, HubHandle, mpsc::Receiver<HubRequest>) {
        let (req_tx, req_rx) = mpsc::channel(256);
        let (notices, _) = broadcast::channel(1024);
        let hub = Hub {
            gateway_id: gateway_id.into(),
            writer,
            radios: radios.iter().map(|r| (r.name.clone(), r.clone())).collect(),
            join_windows: HashMap::new(),
            notices: notices.clone(),
            outbox_gate: Arc::new(OutboxGate::default()),
        };
        (
            hub,
            HubHandle {
                requests: req_tx,
                notices,
            },
            req_rx,
        )
    }

    /// The gate the hub consults before queueing telemetry (shared with upstream).
    pub fn outbox_gate(&self) -> Arc<OutboxGate> {
        self.outbox_gate.clone()
    }

    /// Runs until `shutdown` flips and both inputs have been drained.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<DeviceEvent>,
        mut requests: mpsc::Receiver<HubRequest>,
        mut shutdown: watch::Receiver<bool>,
        liveness: Option<Liveness>,
    ) {
        let interval = liveness
            .as_ref()
            .map(|l| l.interval)
            .unwrap_or(Duration::from_secs(3600));
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(ev) = events.recv() => self.on_event(ev).await,
                Some(req) = requests.recv() => self.on_request(req).await,
                _ = tick.tick() => {
                    if let Some(l) = &liveness {
                        // Liveness means the loop turns and the store commits.
                        match self.writer.write(|_| Ok(())).await {
                            Ok(()) => (l.on_alive)(),
                            Err(e) => tracing::error!(error = %e, "store not writable: withholding the watchdog ping"),
                        }
                    }
                }
                _ = crate::shutdown::signalled(&mut shutdown) => break,
            }
        }
        // Drain what is already queued so nothing accepted is lost.
        while let Ok(ev) = events.try_recv() {
            self.on_event(ev).await;
        }
        while let Ok(req) = requests.try_recv() {
            self.on_request(req).await;
        }
        // Wait for the last writes to commit.
        let _ = self.writer.write(|_| Ok(())).await;
        tracing::info!("hub stopped");
    }

    fn notify(&self, n: Notice) {
        let _ = self.notices.send(n);
    }

    async fn on_event(&mut self, ev: DeviceEvent) {
        let gw = self.gateway_id.clone();
        let id = ev.device_id();
        let ts = rfc3339(ev.received_at);
        let radio = ev.radio.clone();
        let result = match ev.kind.clone() {
            DeviceEventKind::Joined => {
                let protocol = ev.protocol.as_str().to_string();
                let native = ev.native_address.clone();
                let at = ev.received_at;
                let id2 = id.clone();
                let radio2 = radio.clone();
                self.writer
                    .write(move |c| {
                        let (device, is_new) =
                            registry::upsert_joined(c, &id2, &protocol, &radio2, &native, &ts)?;
                        lifecycle_msg(
                            c,
                            &gw,
                            &id2,
                            "joined",
                            json!({"radio": radio2, "new": is_new, "lifecycle": device.lifecycle}),
                            at,
                        )?;
                        availability_msg(c, &gw, &id2, true, at)?;
                        store::record_audit(
                            c,
                            &gw,
                            &AuditEntry::new(
                                format!("radio:{radio2}"),
                                "device.join",
                                id2.as_str(),
                                Outcome::Accepted,
                                json!({"native_address": native, "new": is_new}),
                            ),
                        )?;
                        Ok(is_new)
                    })
                    .await
                    .map(|is_new| {
                        self.notify(Notice::DeviceJoined {
                            device: id.to_string(),
                            radio,
                            new: is_new,
                        })
                    })
            }
            DeviceEventKind::Interviewed(info) => {
                let at = ev.received_at;
                let id2 = id.clone();
                let info2 = info.clone();
                self.writer
                    .write(move |c| {
                        let fw_change = registry::apply_info(c, &id2, &info2, &ts)?;
                        if let Some(d) = registry::get(c, &id2)? {
                            if d.lifecycle == Lifecycle::Pending.as_str() {
                                registry::set_lifecycle(c, &id2, Lifecycle::Active)?;
                            }
                        }
                        lifecycle_msg(
                            c,
                            &gw,
                            &id2,
                            "interviewed",
                            serde_json::to_value(&info2).unwrap_or_default(),
                            at,
                        )?;
                        if let Some(previous) = fw_change {
                            if previous.is_some() {
                                lifecycle_msg(
                                    c,
                                    &gw,
                                    &id2,
                                    "firmware_changed",
                                    json!({"from": previous, "to": info2.firmware}),
                                    at,
                                )?;
                            }
                        }
                        Ok(())
                    })
                    .await
                    .map(|()| {
                        self.notify(Notice::DeviceInterviewed {
                            device: id.to_string(),
                            manufacturer: info.manufacturer,
                            model: info.model,
                        })
                    })
            }
            DeviceEventKind::Readings(readings) => {
                let at = ev.received_at;
                let id2 = id.clone();
                let r2 = readings.clone();
                // Refused (and counted) when the outbox is full of undroppable kinds.
                let queue_telemetry = self.outbox_gate.admit(MessageKind::Telemetry);
                self.writer
                    .write(move |c| {
                        let state = registry::apply_readings(c, &id2, &r2, &ts)?;
                        let telemetry_seq = if queue_telemetry {
                            Some(outbox::append(
                                c,
                                &gw,
                                &NewMessage {
                                    kind: MessageKind::Telemetry,
                                    device: Some(id2.clone()),
                                    topic: format!("device/{id2}/telemetry"),
                                    retain: false,
                                    data: json!({"readings": r2}),
                                    event_time: at,
                                },
                            )?)
                        } else {
                            None
                        };
                        let state_seq = outbox::append(
                            c,
                            &gw,
                            &NewMessage {
                                kind: MessageKind::State,
                                device: Some(id2.clone()),
                                topic: format!("device/{id2}/state"),
                                retain: true,
                                data: state,
                                event_time: at,
                            },
                        )?;
                        Ok(telemetry_seq.unwrap_or(state_seq))
                    })
                    .await
                    .map(|seq| {
                        self.notify(Notice::Readings {
                            device: id.to_string(),
                            readings,
                            outbox_seq: seq,
                        })
                    })
            }
            DeviceEventKind::Left => {
                let at = ev.received_at;
                let id2 = id.clone();
                self.writer
                    .write(move |c| {
                        lifecycle_msg(c, &gw, &id2, "left", json!({}), at)?;
                        availability_msg(c, &gw, &id2, false, at)?;
                        store::record_audit(
                            c,
                            &gw,
                            &AuditEntry::new(
                                format!("radio:{radio}"),
                                "device.leave",
                                id2.as_str(),
                                Outcome::Accepted,
                                json!({}),
                            ),
                        )?;
                        Ok(())
                    })
                    .await
                    .map(|()| {
                        self.notify(Notice::DeviceLeft {
                            device: id.to_string(),
                        })
                    })
            }
            DeviceEventKind::CommandResult {
                command_id,
                ok,
                detail,
            } => {
                let at = ev.received_at;
                let id2 = id.clone();
                self.writer
                    .write(move |c| {
                        lifecycle_msg(
                            c,
                            &gw,
                            &id2,
                            "command_result",
                            json!({"command_id": command_id, "ok": ok, "detail": detail}),
                            at,
                        )?;
                        Ok(())
                    })
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(device = %id, error = %e, "could not record a device event");
        }
    }

    async fn on_request(&mut self, req: HubRequest) {
        match req {
            HubRequest::PermitJoin {
                radio,
                seconds,
                actor,
                reply,
            } => {
                let r = self.permit_join(&radio, seconds, &actor).await;
                let _ = reply.send(r);
            }
            HubRequest::Decommission {
                device,
                actor,
                reply,
            } => {
                let r = self.decommission(&device, &actor).await;
                let _ = reply.send(r);
            }
        }
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), HubError> {
        let gw = self.gateway_id.clone();
        self.writer
            .write(move |c| store::record_audit(c, &gw, &entry).map(|_| ()))
            .await?;
        Ok(())
    }

    async fn permit_join(
        &mut self,
        radio: &str,
        seconds: u32,
        actor: &str,
    ) -> Result<PermitJoinAccepted, HubError> {
        let refuse = |e: HubError| {
            AuditEntry::new(
                actor,
                "radio.permit_join",
                radio,
                Outcome::Refused,
                json!({"seconds": seconds, "error": e.to_string()}),
            )
        };
        let check = (|| {
            if seconds == 0 || seconds > MAX_PERMIT_JOIN_SECONDS {
                return Err(HubError::Invalid(format!(
                    "seconds must be between 1 and {MAX_PERMIT_JOIN_SECONDS}"
                )));
            }
            let handle = self
                .radios
                .get(radio)
                .ok_or_else(|| HubError::UnknownRadio(radio.to_string()))?;
            let state = handle.state.borrow().clone();
            let sender = match (&handle.commands, &state) {
                (Some(tx), RadioState::Up) => tx.clone(),
                (_, RadioState::Unavailable(why) | RadioState::Down(why)) => {
                    return Err(HubError::RadioUnavailable(radio.to_string(), why.clone()))
                }
                _ => {
                    return Err(HubError::RadioUnavailable(
                        radio.to_string(),
                        "starting".into(),
                    ))
                }
            };
            Ok(sender)
        })();
        let sender = match check {
            Ok(s) => s,
            Err(e) => {
                self.audit(refuse(e.clone())).await?;
                return Err(e);
            }
        };
        // Durable record first, then the action.
        let until = SystemTime::now() + Duration::from_secs(seconds as u64);
        self.audit(AuditEntry::new(
            actor,
            "radio.permit_join",
            radio,
            Outcome::Accepted,
            json!({"seconds": seconds, "open_until": rfc3339(until)}),
        ))
        .await?;
        if sender
            .send(RadioCommand::PermitJoin { seconds })
            .await
            .is_err()
        {
            let e = HubError::RadioUnavailable(radio.to_string(), "driver stopped".into());
            self.audit(AuditEntry::new(
                actor,
                "radio.permit_join",
                radio,
                Outcome::Failed,
                json!({"error": e.to_string()}),
            ))
            .await?;
            return Err(e);
        }
        self.join_windows.insert(
            radio.to_string(),
            Instant::now() + Duration::from_secs(seconds as u64),
        );
        self.notify(Notice::PermitJoin {
            radio: radio.to_string(),
            seconds,
        });
        Ok(PermitJoinAccepted {
            radio: radio.to_string(),
            seconds,
            open_until: rfc3339(until),
        })
    }

    /// Whether a join window is open on `radio` now.
    pub fn join_window_open(&self, radio: &str) -> bool {
        self.join_windows
            .get(radio)
            .is_some_and(|until| Instant::now() < *until)
    }

    async fn decommission(
        &mut self,
        device: &DeviceId,
        actor: &str,
    ) -> Result<Decommissioned, HubError> {
        let gw = self.gateway_id.clone();
        let id = device.clone();
        let actor_s = actor.to_string();
        let radios: HashMap<String, bool> = self
            .radios
            .iter()
            .map(|(n, h)| {
                (
                    n.clone(),
                    h.commands.is_some() && *h.state.borrow() == RadioState::Up,
                )
            })
            .collect();
        let outcome = self
            .writer
            .write(move |c| {
                let Some(d) = registry::get(c, &id)? else {
                    let e = HubError::UnknownDevice(id.to_string());
                    store::record_audit(
                        c,
                        &gw,
                        &AuditEntry::new(
                            &actor_s,
                            "device.decommission",
                            id.as_str(),
                            Outcome::Refused,
                            json!({"error": e.to_string()}),
                        ),
                    )?;
                    return Ok(Err(e));
                };
                if d.lifecycle == Lifecycle::Decommissioned.as_str() {
                    let e = HubError::AlreadyDecommissioned(id.to_string());
                    store::record_audit(
                        c,
                        &gw,
                        &AuditEntry::new(
                            &actor_s,
                            "device.decommission",
                            id.as_str(),
                            Outcome::Refused,
                            json!({"error": e.to_string()}),
                        ),
                    )?;
                    return Ok(Err(e));
                }
                let radio_up = radios.get(&d.radio).copied().unwrap_or(false);
                let radio_removal = if radio_up {
                    "requested"
                } else {
                    "radio not running: the device was not told to leave"
                };
                registry::set_lifecycle(c, &id, Lifecycle::Decommissioned)?;
                let destroyed = registry::destroy_credentials(c, &id)?;
                let now = SystemTime::now();
                lifecycle_msg(
                    c,
                    &gw,
                    &id,
                    "decommissioned",
                    json!({"credentials_destroyed": destroyed, "radio_removal": radio_removal}),
                    now,
                )?;
                availability_msg(c, &gw, &id, false, now)?;
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        &actor_s,
                        "device.decommission",
                        id.as_str(),
                        Outcome::Accepted,
                        json!({"credentials_destroyed": destroyed, "radio_removal": radio_removal}),
                    ),
                )?;
                let device = registry::get(c, &id)?
                    .ok_or_else(|| StoreError::Invalid("device vanished".into()))?;
                Ok(Ok((device, destroyed, radio_removal.to_string())))
            })
            .await??;
        let (d, destroyed, radio_removal) = outcome;
        if let Some(tx) = self.radios.get(&d.radio).and_then(|h| h.commands.clone()) {
            let _ = tx
                .send(RadioCommand::Remove {
                    native_address: d.native_address.clone(),
                })
                .await;
        }
        self.notify(Notice::Decommissioned {
            device: d.id.clone(),
        });
        Ok(Decommissioned {
            device: d,
            credentials_destroyed: destroyed,
            radio_removal,
        })
    }
}

fn lifecycle_msg(
    c: &rusqlite::Connection,
    gw: &str,
    id: &DeviceId,
    event: &str,
    mut data: serde_json::Value,
    at: SystemTime,
) -> Result<i64, StoreError> {
    if let Some(obj) = data.as_object_mut() {
        obj.insert("event".into(), json!(event));
    }
    outbox::append(
        c,
        gw,
        &NewMessage {
            kind: MessageKind::Lifecycle,
            device: Some(id.clone()),
            topic: format!("device/{id}/event"),
            retain: false,
            data,
            event_time: at,
        },
    )
}

fn availability_msg(
    c: &rusqlite::Connection,
    gw: &str,
    id: &DeviceId,
    online: bool,
    at: SystemTime,
) -> Result<i64, StoreError> {
    outbox::append(
        c,
        gw,
        &NewMessage {
            kind: MessageKind::Availability,
            device: Some(id.clone()),
            topic: format!("device/{id}/availability"),
            retain: true,
            data: json!({"state": if online { "online" } else { "offline" }}),
            event_time: at,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::model::{DeviceInfo, PowerSource, Reading, Value};
    use crate::store::{Store, WriterOptions};

    fn event(kind: DeviceEventKind) -> DeviceEvent {
        DeviceEvent {
            radio: "zb0".into(),
            protocol: Protocol::Zigbee,
            native_address: "0x00124b0001abcdef".into(),
            received_at: SystemTime::now(),
            kind,
        }
    }

    #[tokio::test]
    async fn events_flow_into_registry_outbox_and_audit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
        let (hub, handle, req_rx) = Hub::new("gw", store.writer(), &[]);
        let (ev_tx, ev_rx) = mpsc::channel(16);
        let (sd_tx, sd_rx) = watch::channel(false);
        let mut notices = handle.subscribe();
        let task = tokio::spawn(hub.run(ev_rx, req_rx, sd_rx, None));
        ev_tx.send(event(DeviceEventKind::Joined)).await.unwrap();
        ev_tx
            .send(event(DeviceEventKind::Interviewed(DeviceInfo {
                manufacturer: Some("LUMI".into()),
                model: Some("lumi.weather".into()),
                firmware: Some("1.0".into()),
                power_source: Some(PowerSource::Battery),
                capabilities: vec!["temperature".into()],
            })))
            .await
            .unwrap();
        ev_tx
            .send(event(DeviceEventKind::Readings(vec![Reading {
                name: "temperature".into(),
                value: Value::Number(21.5),
                unit: Some("°C".into()),
            }])))
            .await
            .unwrap();
        for _ in 0..3 {
            notices.recv().await.unwrap();
        }
        let id = DeviceId::new(Protocol::Zigbee, "0x00124b0001abcdef");
        let r = store.reader().unwrap();
        let d = registry::get(&r, &id).unwrap().unwrap();
        assert_eq!(d.lifecycle, "active");
        assert_eq!(d.model.as_deref(), Some("lumi.weather"));
        assert_eq!(d.last_state["temperature"], 21.5);
        let kinds: Vec<String> = outbox::pending(&r, 0, 100)
            .unwrap()
            .into_iter()
            .map(|m| m.kind)
            .collect();
        assert!(
            kinds.contains(&"telemetry".to_string())
                && kinds.contains(&"lifecycle".to_string())
                && kinds.contains(&"audit".to_string()),
            "{kinds:?}"
        );

        let d = handle
            .decommission(id.clone(), "test".into())
            .await
            .unwrap();
        assert_eq!(d.device.lifecycle, "decommissioned");
        let again = handle
            .decommission(id.clone(), "test".into())
            .await
            .unwrap_err();
        assert_eq!(again.code(), "already_decommissioned");
        let e = handle
            .permit_join("nope".into(), 60, "test".into())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "unknown_radio");
        assert!(crate::store::audit::verify(&r).unwrap().ok);
        sd_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
