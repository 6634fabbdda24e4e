//! `set` and `get` requests: refused as commands are, sent to a reachable device
//! now, or held for one that is asleep.

use super::*;

impl Hub {
    /// A `set` or `get`: refused as commands are, held for a sleeping device (the row,
    /// the audit record and the `queued` response in one transaction), else carried out.
    pub(in crate::hub) async fn device_request(
        &mut self,
        r: DeviceRequest,
    ) -> Result<DeviceAnswer, HubError> {
        let id = r.device.clone();
        let d = self.writer.write(move |c| registry::get(c, &id)).await?;
        let operation = r.action.operation();
        let command = r.action.to_json();
        let refusal = match &d {
            None => Some(HubError::UnknownDevice(r.device.to_string())),
            Some(d) => self.command_refusal(d).or_else(|| match &r.action {
                DeviceAction::Set(c) => self.command_unsupported(d, c),
                DeviceAction::Get { .. } => None,
            }),
        };
        let d = match (refusal, d) {
            (None, Some(d)) => d,
            (refusal, _) => {
                let e = refusal.unwrap_or_else(|| HubError::UnknownDevice(r.device.to_string()));
                let action = match r.action {
                    DeviceAction::Set(_) => "device.command",
                    DeviceAction::Get { .. } => "device.refresh",
                };
                self.audit(AuditEntry::new(
                    &r.actor,
                    action,
                    r.device.as_str(),
                    Outcome::Refused,
                    json!({"operation": operation, "command": command,
                           "correlation_id": r.correlation_id, "error": e.to_string()}),
                ))
                .await?;
                return Err(e);
            }
        };
        if is_sleeping(&d) {
            return self.hold(r, operation, command).await;
        }
        match r.action {
            DeviceAction::Set(cmd) => {
                let sent = self.command(&r.device, cmd, &r.actor).await?;
                if !r.wait_result {
                    return Ok(DeviceAnswer::Sent(sent));
                }
                // Registered before any event is applied (this task applies them), so
                // a result that comes at once is not missed.
                let (tx, rx) = oneshot::channel();
                self.await_result(sent.command_id.clone(), Vec::new(), tx);
                Ok(DeviceAnswer::Commanded { sent, result: rx })
            }
            DeviceAction::Get { attributes } => {
                let permit = match self.reserve(&d.radio) {
                    Ok(p) => p,
                    Err(e) => {
                        self.audit(AuditEntry::new(
                            &r.actor,
                            "device.refresh",
                            r.device.as_str(),
                            Outcome::Refused,
                            json!({"error": e.to_string()}),
                        ))
                        .await?;
                        return Err(e);
                    }
                };
                let command_id = uuid::Uuid::now_v7().to_string();
                self.audit(AuditEntry::new(
                    &r.actor,
                    "device.refresh",
                    r.device.as_str(),
                    Outcome::Accepted,
                    json!({"command_id": command_id, "attributes": attributes,
                           "correlation_id": r.correlation_id}),
                ))
                .await?;
                let (tx, rx) = oneshot::channel();
                self.await_result(command_id.clone(), attributes, tx);
                let rc = RadioCommand::Read {
                    native_address: d.native_address.clone(),
                    command_id: command_id.clone(),
                };
                permit.send(rc);
                Ok(DeviceAnswer::Refreshing {
                    command_id,
                    result: rx,
                })
            }
        }
    }

    /// Hands command `command_id`'s result to `tx` when the radio reports it. Waiters
    /// nobody waits on any more (the caller gave up) are dropped here, so a radio that
    /// never answers cannot grow the table.
    fn await_result(
        &mut self,
        command_id: String,
        attributes: Vec<String>,
        tx: oneshot::Sender<RefreshResult>,
    ) {
        self.refreshing
            .retain(|_, (_, waiting)| !waiting.is_closed());
        self.refreshing.insert(command_id, (attributes, tx));
    }
}
