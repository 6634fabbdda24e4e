//! Actuating a device (on/off/toggle/level) from the technician CLI.

use super::*;

impl Hub {
    pub(in crate::hub) async fn command(
        &mut self,
        device: &DeviceId,
        command: DeviceCommand,
        actor: &str,
    ) -> Result<CommandSent, HubError> {
        let id = device.clone();
        let d = self.writer.write(move |c| registry::get(c, &id)).await?;
        let refusal = match &d {
            None => Some(HubError::UnknownDevice(device.to_string())),
            Some(d) => self.command_refusal(d).or_else(|| {
                self.radio_sender(&d.radio)
                    .is_none()
                    .then(|| HubError::RadioUnavailable(d.radio.clone(), "not running".into()))
            }),
        };
        if let Some(e) = refusal {
            self.audit(AuditEntry::new(
                actor,
                "device.command",
                device.as_str(),
                Outcome::Refused,
                json!({"command": command, "error": e.to_string()}),
            ))
            .await?;
            return Err(e);
        }
        let Some(d) = d else {
            return Err(HubError::UnknownDevice(device.to_string()));
        };
        let command_id = uuid::Uuid::now_v7().to_string();
        self.audit(AuditEntry::new(
            actor,
            "device.command",
            device.as_str(),
            Outcome::Accepted,
            json!({"command": command, "command_id": command_id}),
        ))
        .await?;
        let rc = RadioCommand::Set {
            native_address: d.native_address.clone(),
            command,
            command_id: command_id.clone(),
        };
        if !self.send_to_radio(&d.radio, rc).await {
            return Err(HubError::RadioUnavailable(
                d.radio.clone(),
                "driver stopped".into(),
            ));
        }
        Ok(CommandSent {
            device: device.to_string(),
            command,
            command_id,
        })
    }
}
