//! Device credentials for joining: registering and removing install codes, and
//! telling the radios the policy's join-credential requirement. Which radios take
//! which credential comes from their capabilities, never from their protocol.

use super::*;

/// The credential kind these operations manage.
const KIND: CredentialKind = CredentialKind::ZigbeeInstallCode;

impl Hub {
    /// Tells every radio that can require a join credential whether joins must present
    /// one. Drivers keep it and apply it after each start, so it goes to them whatever
    /// their state.
    pub(in crate::hub) async fn announce_install_code_policy(&self) {
        let required = self.policy.policy.admission.require_install_code;
        for h in self.radios.values() {
            if h.capabilities.and_then(|c| c.join_credential).is_none() {
                continue;
            }
            if let Some(tx) = &h.commands {
                // Sent at start-up and on a policy change; a full queue must not
                // lose it, so this one waits (bounded) for room.
                let sent = tokio::time::timeout(
                    Duration::from_secs(5),
                    tx.send(RadioCommand::Policy(RadioPolicy {
                        join_credential_required: required,
                    })),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    tracing::warn!(radio = %h.name, "driver stopped or stuck: join-credential policy not delivered");
                }
            }
        }
    }

    /// Seals the code as the device's credential and audits it in one transaction, then
    /// pushes it to every running Zigbee coordinator from a task (the hub does not wait on
    /// radios). Radios that are not running get it at their next start.
    pub(in crate::hub) async fn add_install_code(
        &mut self,
        device: DeviceId,
        code: Secret,
        actor: String,
        reply: oneshot::Sender<Result<InstallCodeAdded, HubError>>,
    ) {
        self.add_credential(KIND, device, code, actor, reply).await
    }

    /// Seals `secret` as the device's credential of `kind` and audits it in one
    /// transaction, then hands it to every running radio whose capabilities take that kind
    /// (an install code to a trust center, LoRaWAN keys to a session table) from a task.
    /// Radios that are not running load it at their next start.
    pub(in crate::hub) async fn add_credential(
        &mut self,
        kind: CredentialKind,
        device: DeviceId,
        code: Secret,
        actor: String,
        reply: oneshot::Sender<Result<InstallCodeAdded, HubError>>,
    ) {
        let (action, push_action, done) = match kind {
            KIND => (
                "device.install_code.add",
                "device.install_code.push",
                "registered with the coordinator",
            ),
            CredentialKind::BthomeBindkey => (
                "device.bindkey.rotate",
                "device.bindkey.push",
                "bindkey installed; the old key no longer opens its advertisements",
            ),
            _ => (
                "device.credential.add",
                "device.credential.push",
                "registered with the coordinator",
            ),
        };
        let entry =
            |outcome, details| AuditEntry::new(&actor, action, device.as_str(), outcome, details);
        let takes = device
            .protocol()
            .and_then(crate::radio::capabilities)
            .is_some_and(|c| c.accepts(kind));
        let refusal = if !takes {
            Some(HubError::Invalid(format!(
                "`{device}`: its radios take no {}",
                kind.label()
            )))
        } else if self.master_key.is_none() {
            Some(HubError::Store(format!(
                "no master key: a {} cannot be stored encrypted",
                kind.label()
            )))
        } else if kind == CredentialKind::BthomeBindkey && !super::adopt::is_bindkey(&code) {
            Some(HubError::Invalid(
                "a BTHome bindkey is 16 bytes: 32 hex digits".into(),
            ))
        } else if kind == CredentialKind::BthomeBindkey {
            // A bindkey is rotated on a device in service; a discovered one is adopted
            // with its key instead.
            let id = device.clone();
            let found = self
                .writer
                .write(move |c| {
                    Ok(registry::get(c, &id)?.map(|d| {
                        let plain = super::adopt::plaintext_bthome(&d);
                        (d.lifecycle, d.model, plain)
                    }))
                })
                .await;
            match found {
                Err(e) => Some(e.into()),
                Ok(None) => Some(HubError::UnknownDevice(device.to_string())),
                Ok(Some((l, _, _))) if l == Lifecycle::Pending.as_str() => Some(HubError::Invalid(format!(
                    "`{device}` is pending: adopt it with its bindkey (`fieldgate adopt {device} --bindkey ...`)"
                ))),
                Ok(Some((l, _, _))) if l == Lifecycle::Decommissioned.as_str() => {
                    Some(HubError::Invalid(format!(
                        "`{device}` is decommissioned: re-admit it first (`fieldgate readmit {device}`)"
                    )))
                }
                // Only BTHome advertisements are encrypted with a bindkey: a key given
                // for another format would be stored and never used.
                Ok(Some((_, Some(model), _))) if model != "bthome" => Some(HubError::Invalid(format!(
                    "`{device}` sends {} advertisements, which are not encrypted: a bindkey is for BTHome devices",
                    crate::output::one_line(&model)
                ))),
                // A key for a device that sends plain BTHome would refuse every one of
                // its advertisements from then on.
                Ok(Some((_, _, true))) => Some(HubError::Invalid(format!(
                    "`{device}` sends unencrypted BTHome advertisements: with a bindkey each of them would be refused; set the device to encrypt first (its advertisements then say so)"
                ))),
                Ok(Some(_)) => None,
            }
        } else {
            None
        };
        if let Some(e) = refusal {
            let details = json!({"error": e.to_string()});
            return self
                .refuse(entry(Outcome::Refused, details), e, reply)
                .await;
        }
        let Some(key) = self.master_key.clone() else {
            return;
        };
        let gw = self.gateway_id.clone();
        let record = |replaced: bool| {
            entry(
                Outcome::Accepted,
                json!({"stored": "encrypted", "kind": kind.as_str(), "replaced": replaced, "code_bytes": code.expose().len()}),
            )
        };
        let (owner, sealed) = (device.to_string(), code.clone());
        let pre = record(false);
        let pre_replaced = record(true);
        let stored = self
            .writer
            .write(move |c| {
                let replaced = credentials::exists(c, &owner, kind.as_str())?;
                credentials::put(c, &key, &owner, kind.as_str(), &sealed)?;
                store::record_audit(c, &gw, if replaced { &pre_replaced } else { &pre })?;
                Ok(replaced)
            })
            .await;
        let replaced = match stored {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        let pushed = self.push_credential(
            &device,
            DeviceCredential { kind, secret: code },
            done,
            "pushed at its next start",
        );
        let writer = self.writer.clone();
        let gw = self.gateway_id.clone();
        tokio::spawn(async move {
            let coordinators = pushed.await;
            let failed: Vec<&InstallCodePush> = coordinators.iter().filter(|p| !p.ok).collect();
            if !failed.is_empty() {
                let details = json!({"coordinators": failed});
                let record = AuditEntry::new(
                    &actor,
                    push_action,
                    device.as_str(),
                    Outcome::Failed,
                    details,
                );
                let _ = writer
                    .write(move |c| store::record_audit(c, &gw, &record).map(|_| ()))
                    .await;
            }
            let _ = reply.send(Ok(InstallCodeAdded {
                device: device.to_string(),
                replaced,
                coordinators,
            }));
        });
    }

    pub(in crate::hub) async fn remove_install_code(
        &mut self,
        device: &DeviceId,
        actor: &str,
    ) -> Result<InstallCodeRemoved, HubError> {
        let gw = self.gateway_id.clone();
        let (owner, actor_s, id) = (device.to_string(), actor.to_string(), device.clone());
        let removed = self
            .writer
            .write(move |c| {
                let removed = credentials::remove(c, &owner, KIND.as_str())?;
                let (outcome, details) = if removed {
                    (Outcome::Accepted, json!({"destroyed": true}))
                } else {
                    (
                        Outcome::Refused,
                        json!({"error": "no install code registered"}),
                    )
                };
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        &actor_s,
                        "device.install_code.remove",
                        id.as_str(),
                        outcome,
                        details,
                    ),
                )?;
                Ok(removed)
            })
            .await?;
        if !removed {
            return Err(HubError::NoInstallCode(device.to_string()));
        }
        Ok(InstallCodeRemoved {
            device: device.to_string(),
            note: "destroyed in the gateway; a coordinator keeps the derived key until it resets",
        })
    }
}
