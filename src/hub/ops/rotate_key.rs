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
                Some(_) if self.rotating_now().contains(&radio) => Err(HubError::RadioUnavailable(
                    radio.clone(),
                    "a network key rotation is already in progress".into(),
                )),
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
        // Until the radio answers (either way; before the answer is sent, so a rotation
        // asked for right after it is taken).
        self.rotating_now().insert(radio.clone());
        let ended = |rotating: &Arc<std::sync::Mutex<HashSet<String>>>, radio: &str| {
            rotating
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(radio);
        };
        let (on_done, on_failed) = (
            (self.rotating.clone(), radio.clone()),
            (self.rotating.clone(), radio.clone()),
        );
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
            move |v: &KeyRotated| {
                ended(&on_done.0, &on_done.1);
                json!({"phase": "completed", "previous_key_seq": v.previous_key_seq,
                       "key_seq": v.key_seq, "switch_delay_ms": v.switch_delay_ms})
            },
            move |e: &HubError| {
                ended(&on_failed.0, &on_failed.1);
                json!({"phase": "failed", "error": e.to_string()})
            },
            reply,
        )
        .await;
    }

    fn rotating_now(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.rotating.lock().unwrap_or_else(|e| e.into_inner())
    }
}
