//! Re-admitting a decommissioned device: decommissioning holds (a removed device
//! that is heard again or tries to rejoin is refused and told to leave) until a
//! technician or the cloud says otherwise here. The device goes back to `pending`
//! and joins again through a join window, interview and admission like a new one.

use super::*;

impl Hub {
    pub(in crate::hub) async fn readmit(
        &mut self,
        device: &DeviceId,
        actor: &str,
    ) -> Result<Readmitted, HubError> {
        let gw = self.gateway_id.clone();
        let id = device.clone();
        let actor = actor.to_string();
        let codes_required = self.policy.policy.admission.require_install_code;
        // (its lifecycle now, re-admitted here (not only unblocked), a credential to
        // register again)
        let (lifecycle, readmitted, missing, on_radio) = self
            .writer
            .write(move |c| {
                let entry = |outcome, details| {
                    AuditEntry::new(&actor, "device.readmit", id.as_str(), outcome, details)
                };
                // Off the denylist first: a blocked device may be one never seen.
                let unblocked = store::blocks::remove(c, id.as_str())?;
                let refusal = match registry::get(c, &id)? {
                    None if unblocked => {
                        store::record_audit(
                            c,
                            &gw,
                            &entry(
                                Outcome::Accepted,
                                json!({"unblocked": true, "known": false}),
                            ),
                        )?;
                        return Ok(Ok((None, false, None, None)));
                    }
                    None => Some(HubError::UnknownDevice(id.to_string())),
                    Some(d) if d.lifecycle != Lifecycle::Decommissioned.as_str() && unblocked => {
                        store::record_audit(
                            c,
                            &gw,
                            &entry(Outcome::Accepted, json!({"unblocked": true, "known": true})),
                        )?;
                        return Ok(Ok((Some(d.lifecycle), false, None, None)));
                    }
                    Some(d) if d.lifecycle != Lifecycle::Decommissioned.as_str() => {
                        Some(HubError::Invalid(format!(
                            "device `{id}` is {}, not decommissioned: nothing to re-admit",
                            d.lifecycle
                        )))
                    }
                    Some(_) => None,
                };
                // Decommissioning destroyed its credentials: under a policy that needs
                // one to join, it cannot join again until a new one is registered.
                let missing = match registry::get(c, &id)? {
                    Some(d) if codes_required => crate::config::Protocol::parse(&d.protocol)
                        .and_then(crate::radio::capabilities)
                        .and_then(|caps| caps.join_credential)
                        .filter(|kind| {
                            !credentials::exists(c, id.as_str(), kind.as_str()).unwrap_or(false)
                        })
                        .map(|kind| (kind, d.native_address)),
                    _ => None,
                };
                if let Some(e) = refusal {
                    store::record_audit(
                        c,
                        &gw,
                        &entry(Outcome::Refused, json!({"error": e.to_string()})),
                    )?;
                    return Ok(Err(e));
                }
                let on_radio = registry::get(c, &id)?.map(|d| (d.radio, d.native_address));
                registry::set_lifecycle(c, &id, Lifecycle::Pending)?;
                lifecycle_msg(
                    c,
                    &gw,
                    &id,
                    "readmitted",
                    json!({"lifecycle": "pending"}),
                    SystemTime::now(),
                )?;
                store::record_audit(
                    c,
                    &gw,
                    &entry(Outcome::Accepted, json!({"unblocked": unblocked})),
                )?;
                Ok(Ok((
                    Some(Lifecycle::Pending.as_str().to_string()),
                    true,
                    missing,
                    on_radio,
                )))
            })
            .await??;
        // Its removal stops where it still runs: a leave request waiting for room, a
        // Z-Wave exclusion waiting for the device's button.
        if let Some((radio, native_address)) = on_radio {
            self.leaves.cancel(&radio, &native_address);
            let _ = self.send_to_radio(&radio, RadioCommand::Readmitted { native_address });
        }
        // A radio that discovers its devices (BLE) has no join window: the technician
        // adopts the device again.
        let discovered = super::super::ingest::discovered(device);
        let note = match (readmitted, missing) {
            (true, _) if discovered => {
                "it is pending again: adopt it (`fieldgate adopt`) to let its readings go upstream".to_string()
            }
            (true, Some((kind, address))) => format!(
                "it joins again through a join window, interview and admission; the policy requires its {label} to join, and decommissioning destroyed it: register it again first (`fieldgate install-code add {address} CODE`)",
                label = kind.label()
            ),
            (true, None) => {
                "it joins again through a join window, interview and admission".to_string()
            }
            (false, _) => "taken off the denylist: it may join through a join window".to_string(),
        };
        Ok(Readmitted {
            device: device.to_string(),
            known: lifecycle.is_some(),
            lifecycle,
            note,
        })
    }
}
