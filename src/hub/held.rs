//! Requests held for devices that are not reachable now (a sleeping battery
//! device): holding one, handing them to the radio when the device next speaks,
//! expiring them, and recovering them after a restart. The store keeps them; this
//! module decides when they go.

use super::*;

/// Whether the hub holds requests for this device until it speaks, from how its
/// radio says it is reached: a device that wakes on its own schedule or listens
/// only after an uplink cannot hear now; one that is always listening (a mains
/// router, a Z-Wave FLiRS lock, battery powered or not) can. A device whose radio
/// has not said yet is judged by its power source.
pub fn is_sleeping(d: &registry::Device) -> bool {
    match d.reachability.as_deref().and_then(Reachability::parse) {
        Some(r) => r.holds_requests(),
        None => PowerSource::parse(&d.power_source) == PowerSource::Battery,
    }
}

/// The attributes a held `get` asked for.
pub(super) fn requested_attributes(req: &PendingRequest) -> Vec<String> {
    req.command["attributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The device's state, narrowed to `attributes` when any are named.
pub(super) fn state_subset(state: &serde_json::Value, attributes: &[String]) -> serde_json::Value {
    match state.as_object() {
        Some(obj) if !attributes.is_empty() => serde_json::Value::Object(
            obj.iter()
                .filter(|(k, _)| attributes.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => state.clone(),
    }
}

/// Answers a held request inside the caller's transaction (its row is already gone):
/// the audit record, a `request` lifecycle event, and for an MQTT request the response.
pub(super) fn finish_held(
    c: &Connection,
    gw: &str,
    req: &PendingRequest,
    status: &str,
    extra: serde_json::Value,
    error: Option<(&'static str, String)>,
) -> Result<(), StoreError> {
    let id = DeviceId(req.device_id.clone());
    let mut data = json!({
        "request_id": req.id,
        "device": req.device_id,
        "operation": req.operation,
        "command": req.command,
        "queued_at": req.created_at,
        "expires_at": req.expires_at,
    });
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    let outcome = if status == "delivered" {
        Outcome::Accepted
    } else {
        Outcome::Failed
    };
    let code = error.as_ref().map(|(code, _)| *code);
    store::record_audit(
        c,
        gw,
        &AuditEntry::new(
            &req.actor,
            "device.request",
            req.device_id.as_str(),
            outcome,
            json!({"request_id": req.id, "correlation_id": req.correlation_id, "operation": req.operation,
                   "origin": req.origin, "status": status, "code": code,
                   "detail": data.get("detail")}),
        ),
    )?;
    lifecycle_msg(
        c,
        gw,
        &id,
        "request",
        json!({"request_id": req.id, "operation": req.operation, "origin": req.origin,
               "correlation_id": req.correlation_id, "status": status, "code": code}),
        SystemTime::now(),
    )?;
    if req.origin == RequestOrigin::Mqtt.as_str() {
        let body = response_body(
            req.correlation_id.as_deref(),
            &req.operation,
            status,
            Some(data),
            error.map(|(code, message)| json!({"code": code, "message": message})),
            gw,
        );
        outbox::append_response(
            c,
            &format!("response/{}", req.operation),
            body,
            req.reply_to.as_ref(),
        )?;
    }
    Ok(())
}

impl Hub {
    /// Holds a request for a sleeping device until it next speaks.
    pub(super) async fn hold(
        &mut self,
        r: DeviceRequest,
        operation: &'static str,
        command: serde_json::Value,
    ) -> Result<DeviceAnswer, HubError> {
        let ttl = r
            .ttl
            .unwrap_or(Duration::from_secs(DEFAULT_REQUEST_TTL_S))
            .min(Duration::from_secs(MAX_REQUEST_TTL_S));
        let expires = SystemTime::now() + ttl;
        let gw = self.gateway_id.clone();
        let req = r.clone();
        let (queued, response) = self
            .writer
            .write(move |c| {
                let row = requests::insert(
                    c,
                    &requests::NewRequest {
                        device: &req.device,
                        correlation_id: req.correlation_id.as_deref(),
                        operation,
                        command: &command,
                        origin: req.origin.as_str(),
                        actor: &req.actor,
                        expires,
                        reply_to: req.reply_to.as_ref(),
                    },
                )?;
                let queued = QueuedRequest {
                    status: "queued",
                    request_id: row.id,
                    device: req.device.to_string(),
                    operation: operation.to_string(),
                    command: command.clone(),
                    expires_at: row.expires_at.clone(),
                };
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        &req.actor,
                        "device.request",
                        req.device.as_str(),
                        Outcome::Accepted,
                        json!({"request_id": row.id, "correlation_id": req.correlation_id,
                               "operation": operation, "command": command, "origin": req.origin.as_str(),
                               "status": "queued", "expires_at": row.expires_at}),
                    ),
                )?;
                let response = if req.origin == RequestOrigin::Mqtt {
                    let body = response_body(
                        req.correlation_id.as_deref(),
                        operation,
                        "queued",
                        serde_json::to_value(&queued).ok(),
                        None,
                        &gw,
                    );
                    let (_, payload) = outbox::append_response(
                        c,
                        &format!("response/{operation}"),
                        body,
                        req.reply_to.as_ref(),
                    )?;
                    Some(payload)
                } else {
                    None
                };
                Ok((queued, response))
            })
            .await?;
        tracing::info!(device = %r.device, operation, request_id = queued.request_id, expires_at = %queued.expires_at, "request held for a sleeping device");
        self.queued.insert(r.device.to_string());
        Ok(DeviceAnswer::Queued { queued, response })
    }

    /// The device spoke, so it is awake: hands its held requests to the radio, oldest first.
    pub(super) async fn dispatch_held(&mut self, device: &str) {
        let gw = self.gateway_id.clone();
        let dev = device.to_string();
        let radios_up: HashSet<String> = self
            .radios
            .keys()
            .filter(|r| self.radio_sender(r).is_some())
            .cloned()
            .collect();
        let sent = self
            .writer
            .write(move |c| {
                // A request whose time ran out before this wake-up is answered `expired`,
                // not sent: the periodic expiry runs only about once a second.
                for req in &requests::take_expired(c, SystemTime::now())? {
                    finish_held(c, &gw, req, "expired", json!({}), None)?;
                }
                let rows = requests::queued_for(c, &dev)?;
                let Some(d) = registry::get(c, &DeviceId(dev.clone()))? else {
                    return Ok(None);
                };
                if rows.is_empty() || !radios_up.contains(&d.radio) {
                    return Ok(Some((d, Vec::new(), rows.is_empty())));
                }
                let mut sent = Vec::new();
                for row in rows {
                    let command_id = uuid::Uuid::now_v7().to_string();
                    if requests::mark_sent(c, row.id, &command_id)? {
                        store::record_audit(
                            c,
                            &gw,
                            &AuditEntry::new(
                                &row.actor,
                                "device.request",
                                dev.as_str(),
                                Outcome::Accepted,
                                json!({"request_id": row.id, "correlation_id": row.correlation_id,
                                       "operation": row.operation, "status": "sent", "command_id": command_id}),
                            ),
                        )?;
                        sent.push((row, command_id));
                    }
                }
                Ok(Some((d, sent, true)))
            })
            .await;
        let (d, sent, drained) = match sent {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.queued.remove(device);
                return;
            }
            Err(e) => {
                tracing::error!(device, error = %e, "could not hand held requests to the radio");
                return;
            }
        };
        if drained {
            self.queued.remove(device);
        }
        for (row, command_id) in sent {
            let rc = if row.operation == "get" {
                Some(RadioCommand::Read {
                    native_address: d.native_address.clone(),
                    command_id: command_id.clone(),
                })
            } else {
                serde_json::from_value::<DeviceCommand>(row.command.clone())
                    .ok()
                    .map(|command| {
                        RadioCommand::set(d.native_address.clone(), command, command_id.clone())
                    })
            };
            tracing::info!(device, request_id = row.id, command_id = %command_id, "device awake: sending a held request");
            let delivered = match rc {
                Some(rc) => self.send_to_radio(&d.radio, rc).is_ok(),
                None => false,
            };
            if !delivered {
                let gw = self.gateway_id.clone();
                let r = self
                    .writer
                    .write(move |c| {
                        if let Some(req) = requests::take_by_command_id(c, &command_id)? {
                            finish_held(
                                c,
                                &gw,
                                &req,
                                "error",
                                json!({"command_id": command_id}),
                                Some((
                                    "not_delivered",
                                    "the radio did not take the command".into(),
                                )),
                            )?;
                        }
                        Ok(())
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(device, error = %e, "could not answer a held request");
                }
            }
        }
    }

    /// Answers `expired` to held requests whose time ran out before the device woke.
    pub(super) async fn expire_held_requests(&mut self) {
        let gw = self.gateway_id.clone();
        let r = self
            .writer
            .write(move |c| {
                let gone = requests::take_expired(c, SystemTime::now())?;
                for req in &gone {
                    finish_held(c, &gw, req, "expired", json!({}), None)?;
                }
                Ok((gone.len(), requests::queued_devices(c)?))
            })
            .await;
        match r {
            Ok((n, devices)) => {
                if n > 0 {
                    tracing::info!(
                        expired = n,
                        "held requests expired before their device woke"
                    );
                }
                self.queued = devices.into_iter().collect();
            }
            Err(e) => tracing::error!(error = %e, "could not expire held requests"),
        }
    }

    /// At start: requests handed to the radio before a stop are answered `error`
    /// (`interrupted`: whether the device got them is unknown, and they are not sent
    /// twice); queued ones wait for their device again.
    pub(super) async fn recover_held_requests(&mut self) {
        let gw = self.gateway_id.clone();
        let r = self
            .writer
            .write(move |c| {
                for req in requests::take_sent(c)? {
                    finish_held(
                        c,
                        &gw,
                        &req,
                        "error",
                        json!({"command_id": req.command_id}),
                        Some((
                            "interrupted",
                            "the gateway stopped before the radio confirmed this request; it is not sent again".into(),
                        )),
                    )?;
                }
                requests::queued_devices(c)
            })
            .await;
        match r {
            Ok(devices) => self.queued = devices.into_iter().collect(),
            Err(e) => tracing::error!(error = %e, "could not read held requests"),
        }
    }
}
