//! Blocking a device (`remove ID --block`): on the denylist first, so it cannot slip
//! back in between the two steps, then decommissioned when it is known and not yet.
//! A blocked device is refused and told to leave when it tries to join or is first
//! heard, even one the gateway never saw, until `readmit` takes it off the list.

use super::*;

impl Hub {
    pub(in crate::hub) async fn block(
        &mut self,
        device: &DeviceId,
        actor: &str,
    ) -> Result<Blocked, HubError> {
        let gw = self.gateway_id.clone();
        let id = device.clone();
        let actor_s = actor.to_string();
        let (newly, lifecycle) = self
            .writer
            .write(move |c| {
                let lifecycle = registry::get(c, &id)?.map(|d| d.lifecycle);
                let newly =
                    store::blocks::add(c, id.as_str(), &crate::model::now_rfc3339(), &actor_s)?;
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        &actor_s,
                        "device.block",
                        id.as_str(),
                        Outcome::Accepted,
                        json!({"known": lifecycle.is_some(), "already_blocked": !newly}),
                    ),
                )?;
                Ok((newly, lifecycle))
            })
            .await?;
        let decommissioned = match lifecycle.as_deref() {
            Some(l) if l != Lifecycle::Decommissioned.as_str() => {
                Some(self.decommission(device, actor).await?)
            }
            _ => None,
        };
        Ok(Blocked {
            device: device.to_string(),
            blocked: true,
            newly_blocked: newly,
            known: lifecycle.is_some(),
            decommissioned,
        })
    }
}
