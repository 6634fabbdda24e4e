//! Network key rotation: checked and audited here, carried out by the radio.

use super::*;

impl Hub {
    /// Checks and audits a rotation request, hands it to the radio, and audits the outcome
    /// from a task when the radio answers (the switch waits `key_switch_delay`).
    pub(in crate::hub) async fn rotate_network_key(
        &mut self,
        radio: String,
        actor: String,
        reply: oneshot::Sender<Result<KeyRotated, HubError>>,
    ) {
        let entry = |outcome, details| {
            AuditEntry::new(&actor, "radio.rotate_network_key", &radio, outcome, details)
        };
        let checked = self
            .running_radio(&radio)
            .and_then(|(caps, _)| match caps.key_rotation {
                Some(longest) => self.reserve(&radio).map(|p| (p, longest)),
                None => Err(HubError::Invalid(format!(
                    "radio `{radio}` cannot rotate its network key"
                ))),
            });
        let (permit, longest) = match checked {
            Ok(s) => s,
            Err(e) => {
                let details = json!({"error": e.to_string()});
                return self
                    .refuse(entry(Outcome::Refused, details), e, reply)
                    .await;
            }
        };
        // Durable record first, then the action.
        if let Err(e) = self
            .audit(entry(Outcome::Accepted, json!({"phase": "started"})))
            .await
        {
            let _ = reply.send(Err(e));
            return;
        }
        self.relay(
            permit,
            RelayJob {
                radio,
                actor,
                action: "radio.rotate_network_key",
                timeout: longest + ROTATION_MARGIN,
                stopped: "the driver stopped before the switch; the old network key stays active",
            },
            |reply| RadioCommand::RotateNetworkKey { reply },
            |v: &KeyRotated| {
                json!({"phase": "completed", "previous_key_seq": v.previous_key_seq,
                       "key_seq": v.key_seq, "switch_delay_ms": v.switch_delay_ms})
            },
            |e: &HubError| json!({"phase": "failed", "error": e.to_string()}),
            reply,
        )
        .await;
    }
}
