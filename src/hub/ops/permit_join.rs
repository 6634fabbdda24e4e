//! Opening a join window on a radio (bounded by the policy and the radio).

use super::*;

impl Hub {
    pub(in crate::hub) async fn permit_join(
        &mut self,
        radio: &str,
        seconds: u32,
        actor: &str,
    ) -> Result<PermitJoinAccepted, HubError> {
        let policy_max = self
            .policy
            .policy
            .admission
            .max_join_window_s
            .min(MAX_PERMIT_JOIN_SECONDS);
        let in_range = |max: u32| {
            if seconds == 0 || seconds > max {
                Err(HubError::Invalid(format!(
                    "seconds must be between 1 and {max}"
                )))
            } else {
                Ok(())
            }
        };
        let check = in_range(policy_max)
            .and_then(|()| self.running_radio(radio))
            .and_then(|(caps, _)| {
                let Some(radio_max) = caps.max_join_window else {
                    return Err(HubError::Invalid(format!(
                        "radio `{radio}` discovers its devices: there is no join window to open"
                    )));
                };
                in_range(policy_max.min(u32::try_from(radio_max.as_secs()).unwrap_or(u32::MAX)))?;
                self.reserve(radio)
            });
        let permit = match check {
            Ok(p) => p,
            Err(e) => {
                self.audit(AuditEntry::new(
                    actor,
                    "radio.permit_join",
                    radio,
                    Outcome::Refused,
                    json!({"seconds": seconds, "error": e.to_string()}),
                ))
                .await?;
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
        permit.send(RadioCommand::PermitJoin { seconds });
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
}
