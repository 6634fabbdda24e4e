//! Local rules: committed readings in, rule firings out, each firing carried out
//! as a device command and audited. The rule engine itself is in `crate::policy`.

use super::*;

/// Turns a rule's JSON command into a device command: `{"state": "on"|"off"|"toggle"}`,
/// `{"level": 0-100}`, or the tagged form `{"action": "level", "percent": 50}`.
pub fn device_command_from_json(v: &serde_json::Value) -> Option<DeviceCommand> {
    if let Ok(c) = serde_json::from_value::<DeviceCommand>(v.clone()) {
        return c.check().is_ok().then_some(c);
    }
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    if let Some(state) = obj.get("state").and_then(|s| s.as_str()) {
        return match state.to_ascii_lowercase().as_str() {
            "on" => Some(DeviceCommand::On),
            "off" => Some(DeviceCommand::Off),
            "toggle" => Some(DeviceCommand::Toggle),
            _ => None,
        };
    }
    let level = obj.get("level")?.as_f64()?;
    (0.0..=100.0)
        .contains(&level)
        .then(|| DeviceCommand::Level {
            percent: level.round() as u8,
        })
}

impl Hub {
    /// Feeds committed readings to the local rules and carries out what fires.
    pub(super) async fn run_rules(&mut self, device: &str, readings: &[Reading]) {
        if self.policy.policy.rules.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut firings: Vec<Firing> = Vec::new();
        for r in readings {
            firings.extend(self.policy.on_reading(
                &mut self.rule_states,
                device,
                &r.name,
                &r.value,
                now,
            ));
        }
        for f in firings {
            self.fire(f).await;
        }
    }

    pub(super) async fn fire(&mut self, f: Firing) {
        let command = device_command_from_json(&f.command);
        let target = DeviceId::parse(&f.device);
        let gw = self.gateway_id.clone();
        let lookup = target.clone();
        let device = match lookup {
            Some(id) => self
                .writer
                .write(move |c| registry::get(c, &id))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let mut detail = String::new();
        let mut sent_cmd = None;
        let mut held = None;
        match (&command, &device) {
            (None, _) => detail = "the rule's command is not one this gateway can send".into(),
            (_, None) => detail = "the target device is not in the registry".into(),
            (Some(cmd), Some(d)) => match self.command_refusal(d) {
                Some(e) => detail = e.to_string(),
                // A sleeping device hears only after it speaks: held for it, as a
                // request from the API or MQTT is.
                None if is_sleeping(d) => {
                    let action = DeviceAction::Set(*cmd);
                    let (operation, json) = (action.operation(), action.to_json());
                    let request = DeviceRequest {
                        device: DeviceId(d.id.clone()),
                        action,
                        origin: RequestOrigin::Api,
                        correlation_id: None,
                        ttl: None,
                        actor: format!("rule:{}", f.rule),
                        reply_to: None,
                        wait_result: false,
                    };
                    match self.hold(request, operation, json).await {
                        Ok(DeviceAnswer::Queued { queued, .. }) => held = Some(queued.request_id),
                        Ok(_) => {}
                        Err(e) => detail = e.to_string(),
                    }
                }
                None => {
                    let command_id = uuid::Uuid::now_v7().to_string();
                    let rc = RadioCommand::set(d.native_address.clone(), *cmd, command_id.clone());
                    match self.send_to_radio(&d.radio, rc) {
                        Ok(()) => sent_cmd = Some(command_id),
                        Err(HubError::UnknownRadio(_)) => {
                            detail = format!("radio `{}` is not running", d.radio)
                        }
                        Err(e) => detail = e.to_string(),
                    }
                }
            },
        }
        let sent = sent_cmd.is_some();
        let taken = sent || held.is_some();
        let outcome = if taken {
            Outcome::Accepted
        } else {
            Outcome::Failed
        };
        let details = json!({"target": f.device, "command": f.command, "trigger_value": f.trigger_value,
                             "command_id": sent_cmd, "held_request_id": held,
                             "error": if taken { None } else { Some(detail.clone()) }});
        let rule = f.rule.clone();
        let target_id = target.clone();
        let res = self
            .writer
            .write(move |c| {
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        format!("rule:{rule}"),
                        "rule.fire",
                        rule.as_str(),
                        outcome,
                        details.clone(),
                    ),
                )?;
                if let Some(id) = &target_id {
                    lifecycle_msg(
                        c,
                        &gw,
                        id,
                        "rule_fired",
                        json!({"rule": rule, "sent": sent, "held": held.is_some(), "detail": details}),
                        SystemTime::now(),
                    )?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = res {
            tracing::error!(rule = %f.rule, error = %e, "could not record a rule firing");
        }
        self.notify(Notice::RuleFired {
            rule: f.rule,
            target: f.device,
            sent,
        });
    }
}
