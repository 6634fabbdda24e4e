//! Decommissioning a device: lifecycle, credentials destroyed, told to leave.

use super::*;

impl Hub {
    pub(in crate::hub) async fn decommission(
        &mut self,
        device: &DeviceId,
        actor: &str,
    ) -> Result<Decommissioned, HubError> {
        let gw = self.gateway_id.clone();
        let id = device.clone();
        let actor_s = actor.to_string();
        let radios_up: HashSet<String> = self
            .radios
            .keys()
            .filter(|r| self.radio_sender(r).is_some())
            .cloned()
            .collect();
        let outcome = self
            .writer
            .write(move |c| {
                let refuse =
                    |c: &Connection, e: HubError| -> Result<Result<_, HubError>, StoreError> {
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
                        Ok(Err(e))
                    };
                let Some(d) = registry::get(c, &id)? else {
                    return refuse(c, HubError::UnknownDevice(id.to_string()));
                };
                if d.lifecycle == Lifecycle::Decommissioned.as_str() {
                    return refuse(c, HubError::AlreadyDecommissioned(id.to_string()));
                }
                let radio_removal = if radios_up.contains(&d.radio) {
                    "requested"
                } else {
                    "radio not running: the device was not told to leave"
                };
                let destroyed = retire(
                    c,
                    &gw,
                    &id,
                    "decommissioned",
                    json!({"radio_removal": radio_removal}),
                )?;
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
        let device_action_within_s = (radio_removal == "requested")
            .then(|| self.radios.get(&d.radio).and_then(|h| h.capabilities))
            .flatten()
            .and_then(|c| c.removal_needs_device)
            .map(|t| t.as_secs());
        // Best effort: a radio that is down or busy tells the device to leave when
        // it is next heard (decommissioned devices are refused and removed).
        let _ = self.send_to_radio(
            &d.radio.clone(),
            RadioCommand::Remove {
                native_address: d.native_address.clone(),
            },
        );
        self.notify(Notice::Decommissioned {
            device: d.id.clone(),
        });
        Ok(Decommissioned {
            device: d,
            credentials_destroyed: destroyed,
            radio_removal,
            device_action_within_s,
        })
    }
}
