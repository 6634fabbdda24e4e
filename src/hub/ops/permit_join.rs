//! Opening a join window on a radio (bounded by the policy and the radio).

use super::*;

impl Hub {
    pub(in crate::hub) async fn permit_join(
        &mut self,
        radio: &str,
        seconds: u32,
        actor: &str,
    ) -> Result<PermitJoinAccepted, HubError> {
        let max = self
            .policy
            .policy
            .admission
            .max_join_window_s
            .min(MAX_PERMIT_JOIN_SECONDS);
        let check = (|| {
            if seconds == 0 || seconds > max {
                return Err(HubError::Invalid(format!(
                    "seconds must be between 1 and {max}"
                )));
            }
            let handle = self
                .radios
                .get(radio)
                .ok_or_else(|| HubError::UnknownRadio(radio.to_string()))?;
            let state = handle.state.borrow().clone();
            match (&handle.commands, &state) {
                (Some(tx), RadioState::Up) => Ok(tx.clone()),
                (_, RadioState::Unavailable(why) | RadioState::Down(why)) => {
                    Err(HubError::RadioUnavailable(radio.to_string(), why.clone()))
                }
                _ => Err(HubError::RadioUnavailable(
                    radio.to_string(),
                    "starting".into(),
                )),
            }
        })();
        let sender = match check {
            Ok(s) => s,
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
}
