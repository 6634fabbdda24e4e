//! Actuating a device (on/off/toggle/level, a configuration parameter) from the
//! technician CLI.

use super::*;

impl Hub {
    /// A command the device's radio cannot carry out, by its capabilities (a
    /// configuration parameter on a radio whose devices have none).
    pub(in crate::hub) fn command_unsupported(
        &self,
        d: &registry::Device,
        command: &DeviceCommand,
    ) -> Option<HubError> {
        if let Err(e) = command.check() {
            return Some(HubError::Invalid(e));
        }
        let caps = self.radios.get(&d.radio).and_then(|h| h.capabilities)?;
        if !caps.commands {
            return Some(HubError::NotSupported(format!(
                "devices on radio `{}` ({}) take no commands: they only broadcast",
                d.radio, d.protocol
            )));
        }
        if !caps.sets {
            return Some(HubError::NotSupported(format!(
                "devices on radio `{}` ({}) take no set commands: they are read from their uplinks, and no downlink is queued for them here",
                d.radio, d.protocol
            )));
        }
        let DeviceCommand::Configure { parameter, .. } = command else {
            return None;
        };
        match caps.configuration {
            None => Some(HubError::NotSupported(format!(
                "devices on radio `{}` ({}) have no configuration parameters",
                d.radio, d.protocol
            ))),
            Some(max) if *parameter > max => Some(HubError::Invalid(format!(
                "{} configuration parameters are numbered 0-{max}, not {parameter}",
                d.protocol
            ))),
            Some(_) => None,
        }
    }

    pub(in crate::hub) async fn command(
        &mut self,
        device: &DeviceId,
        command: DeviceCommand,
        actor: &str,
    ) -> Result<CommandSent, HubError> {
        let id = device.clone();
        let mut permit = None;
        let d = self.writer.write(move |c| registry::get(c, &id)).await?;
        let refusal = match &d {
            None => Some(HubError::UnknownDevice(device.to_string())),
            Some(d) => self
                .command_refusal(d)
                .or_else(|| self.command_unsupported(d, &command))
                .map(Err)
                .unwrap_or(Ok(()))
                .and_then(|()| {
                    self.reserve(&d.radio).map(|p| {
                        permit = Some(p);
                    })
                })
                .err(),
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
        let rc = RadioCommand::set(d.native_address.clone(), command, command_id.clone());
        match permit {
            Some(p) => {
                p.send(rc);
            }
            None => return Err(HubError::RadioUnavailable(d.radio, "not running".into())),
        }
        Ok(CommandSent {
            device: device.to_string(),
            command,
            command_id,
        })
    }
}
