//! Network backup and restore: the radio exports, the hub audits (never the secrets) and
//! relays the document straight to the local technician who asked; a restore goes the
//! other way, only to a radio whose backup format is the document's.

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
                let details = json!({"error": e.to_string()});
                let entry =
                    AuditEntry::new(&actor, "radio.backup", &radio, Outcome::Refused, details);
                return self.refuse(entry, e, reply).await;
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

    /// Checks and audits a restore request and hands the document to the radio: only a
    /// radio that exports backups in the document's `format` is asked (the driver checks
    /// the rest, e.g. the chip family). Audited with the format and the driver's summary,
    /// never the document.
    pub(in crate::hub) async fn restore(
        &mut self,
        radio: String,
        document: serde_json::Value,
        actor: String,
        reply: oneshot::Sender<Result<serde_json::Value, HubError>>,
    ) {
        // Ours name their format at the top; an open coordinator backup in its metadata.
        let format = document["format"]
            .as_str()
            .or_else(|| document["metadata"]["format"].as_str())
            .unwrap_or_default()
            .to_string();
        let checked = self
            .running_radio(&radio)
            .and_then(|(caps, _)| match caps.backup {
                Some(_) if !caps.restore => Err(HubError::NotSupported(format!(
                    "radio `{radio}` cannot write a backup back onto its radio: its backups are for restoring with other tools (see the radio's page in the documentation)"
                ))),
                Some(f) if format == f => self.reserve(&radio),
                Some(f) => Err(HubError::Invalid(format!(
                    "radio `{radio}` restores `{f}` backups; this document's format is {}",
                    if format.is_empty() { "not given".to_string() } else { format!("`{format}`") }
                ))),
                None => Err(HubError::Invalid(format!(
                    "radio `{radio}` has no network backup to restore"
                ))),
            });
        let permit = match checked {
            Ok(p) => p,
            Err(e) => {
                let details = json!({"format": format, "error": e.to_string()});
                let entry =
                    AuditEntry::new(&actor, "radio.restore", &radio, Outcome::Refused, details);
                return self.refuse(entry, e, reply).await;
            }
        };
        self.relay(
            permit,
            RelayJob {
                radio,
                actor,
                action: "radio.restore",
                timeout: RESTORE_TIMEOUT,
                stopped: "the driver stopped before answering",
            },
            |reply| RadioCommand::Restore { document, reply },
            move |summary: &serde_json::Value| json!({"format": format, "restored": summary}),
            |e: &HubError| json!({"error": e.to_string()}),
            reply,
        )
        .await;
    }
}
