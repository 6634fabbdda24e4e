//! Network backup: the radio exports, the hub audits (never the secrets) and
//! relays the document straight to the local technician who asked.

use super::*;

impl Hub {
    /// Checks and audits a backup request and hands it to the radio. The radio's answer goes
    /// straight back to the caller from a task (the hub does not wait on the radio); the
    /// outcome is audited there, without the key.
    pub(in crate::hub) async fn backup(
        &mut self,
        radio: String,
        actor: String,
        reply: oneshot::Sender<Result<NetworkBackup, HubError>>,
    ) {
        let checked = self
            .running_radio(&radio)
            .and_then(|(caps, _)| match caps.backup {
                Some(_) => self.reserve(&radio),
                None => Err(HubError::Invalid(format!(
                    "radio `{radio}` cannot export a network backup"
                ))),
            });
        let permit = match checked {
            Ok(p) => p,
            Err(e) => {
                let audited = self
                    .audit(AuditEntry::new(
                        &actor,
                        "radio.backup",
                        &radio,
                        Outcome::Refused,
                        json!({"error": e.to_string()}),
                    ))
                    .await;
                let _ = reply.send(audited.and(Err(e)));
                return;
            }
        };
        self.relay(
            permit,
            RelayJob {
                radio,
                actor,
                action: "radio.backup",
                timeout: BACKUP_TIMEOUT,
                stopped: "the driver stopped before answering",
            },
            |reply| RadioCommand::Backup { reply },
            // Never the key: what was exported, and how many devices.
            |b: &NetworkBackup| {
                json!({"exported": "network parameters and network key",
                       "format": b.format, "devices": b.devices})
            },
            |e: &HubError| json!({"error": e.to_string()}),
            reply,
        )
        .await;
    }
}
