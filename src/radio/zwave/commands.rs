//! The hub's commands: permit join, remove, set (on / off / toggle / level, answered with
//! the TX status and the state the device reports after it), read (fresh values of what the
//! node reports), backup; what a Z-Wave controller cannot do (device credentials, network
//! key rotation) is refused with `not_supported`.

use anyhow::Result;
use fieldgate_zwave::cc::{id, Basic, BinarySwitch, Meter, MultilevelSensor, MultilevelSwitch};
use fieldgate_zwave::Cc;
use tokio::time::Instant;

use super::{Controller, Sent};
use crate::model::{DeviceCommand, DeviceEventKind, NetworkBackup, RadioCommand, RadioError};

impl Controller<'_> {
    pub(super) async fn on_command(&mut self, cmd: RadioCommand) -> Result<()> {
        match cmd {
            RadioCommand::PermitJoin { seconds } => self.permit_join(seconds).await?,
            RadioCommand::Remove { native_address } => match self.node_of(&native_address) {
                Some(node) => self.remove(node).await?,
                None => {
                    tracing::warn!(radio = %self.io.radio, address = %native_address, "remove: not a node of this controller's network")
                }
            },
            RadioCommand::Set {
                native_address,
                command,
                command_id,
            } => self.set(&native_address, command, command_id).await?,
            RadioCommand::Read {
                native_address,
                command_id,
            } => self.read(&native_address, command_id).await?,
            RadioCommand::Backup { reply } => {
                let answer = self.backup().await?;
                let _ = reply.send(answer.map(|doc| NetworkBackup {
                    format: super::BACKUP_FORMAT.into(),
                    devices: doc["nodes"].as_array().map_or(0, Vec::len),
                    document: doc,
                }));
            }
            RadioCommand::ProvisionCredential { reply, .. } => {
                let _ = reply.send(Err(RadioError::NotSupported(
                    "device credentials (S2 bootstrapping is not supported by this driver)".into(),
                )));
            }
            RadioCommand::Policy(_) | RadioCommand::Bridged { .. } => {}
            RadioCommand::RotateNetworkKey { reply } => {
                let _ = reply.send(Err(RadioError::NotSupported(
                    "Z-Wave network keys cannot be rotated".into(),
                )));
            }
        }
        Ok(())
    }

    /// The node a command is for, awake for a while longer if it is a sleeping one.
    fn target(&mut self, native_address: &str) -> Option<u8> {
        let node = self.node_of(native_address)?;
        let hold = self.opts.wake_up_hold;
        let n = self.nodes.get_mut(&node)?;
        if let Some(t) = &mut n.awake_until {
            *t = (*t).max(Instant::now() + hold);
        }
        Some(node)
    }

    async fn answer(
        &mut self,
        node: u8,
        command_id: String,
        ok: bool,
        detail: String,
    ) -> Result<()> {
        self.emit(
            node,
            DeviceEventKind::CommandResult {
                command_id,
                ok,
                detail,
            },
        )
        .await
    }

    /// A command for a node this controller does not have: answered, not dropped.
    async fn unknown(&mut self, address: &str, command_id: String) -> Result<()> {
        tracing::warn!(radio = %self.io.radio, address, "command for a node this controller does not have");
        let ev = crate::model::DeviceEvent {
            radio: self.io.radio.clone(),
            protocol: self.io.protocol,
            native_address: address.to_string(),
            received_at: std::time::SystemTime::now(),
            kind: DeviceEventKind::CommandResult {
                command_id,
                ok: false,
                detail: "no such node on this controller".into(),
            },
            link: None,
        };
        self.io
            .events
            .send(ev)
            .await
            .map_err(|_| anyhow::anyhow!("the hub stopped taking events"))
    }

    async fn set(
        &mut self,
        address: &str,
        command: DeviceCommand,
        command_id: String,
    ) -> Result<()> {
        let Some(node) = self.target(address) else {
            return self.unknown(address, command_id).await;
        };
        let (binary, multilevel, on) = match self.nodes.get(&node) {
            Some(n) => (
                n.supports(id::BINARY_SWITCH),
                n.supports(id::MULTILEVEL_SWITCH),
                n.on,
            ),
            None => return Ok(()),
        };
        let value = match command {
            DeviceCommand::On => 0xFF,
            DeviceCommand::Off => 0x00,
            DeviceCommand::Toggle => {
                if on.unwrap_or(false) {
                    0x00
                } else {
                    0xFF
                }
            }
            DeviceCommand::Level { percent } => percent.min(99),
        };
        let is_level = matches!(command, DeviceCommand::Level { .. });
        let (set, get) = if multilevel && (is_level || !binary) {
            (
                Cc::MultilevelSwitch(MultilevelSwitch::Set {
                    value,
                    duration: None,
                }),
                Cc::MultilevelSwitch(MultilevelSwitch::Get),
            )
        } else if binary && !is_level {
            (
                Cc::BinarySwitch(BinarySwitch::Set {
                    value,
                    duration: None,
                }),
                Cc::BinarySwitch(BinarySwitch::Get),
            )
        } else {
            (Cc::Basic(Basic::Set { value }), Cc::Basic(Basic::Get))
        };
        match self.send_cc(node, &set).await? {
            Sent::Delivered { .. } => {
                // The state it reports now (its readings reach the hub on their own).
                let confirmed = self.ask(node, get).await?.is_some();
                let detail = if confirmed {
                    "delivered; the device reported its new state"
                } else {
                    "delivered (TX status OK); no state report"
                };
                self.answer(node, command_id, true, detail.into()).await
            }
            Sent::NotDelivered(why) => self.answer(node, command_id, false, why).await,
        }
    }

    async fn read(&mut self, address: &str, command_id: String) -> Result<()> {
        let Some(node) = self.target(address) else {
            return self.unknown(address, command_id).await;
        };
        let Some(n) = self.nodes.get(&node) else {
            return Ok(());
        };
        let mut gets = Vec::new();
        if n.supports(id::BINARY_SWITCH) {
            gets.push(Cc::BinarySwitch(BinarySwitch::Get));
        }
        if n.supports(id::MULTILEVEL_SWITCH) {
            gets.push(Cc::MultilevelSwitch(MultilevelSwitch::Get));
        }
        if n.supports(id::MULTILEVEL_SENSOR) {
            if n.sensor_types.is_empty() {
                gets.push(Cc::MultilevelSensor(MultilevelSensor::Get { sensor: None }));
            }
            for (sensor_type, scales) in &n.sensor_types {
                let scale = scales.first().copied().unwrap_or(0);
                gets.push(Cc::MultilevelSensor(MultilevelSensor::Get {
                    sensor: Some((*sensor_type, scale)),
                }));
            }
        }
        if n.supports(id::METER) {
            gets.push(Cc::Meter(Meter::Get { selector: None }));
        }
        if n.supports(id::BATTERY) {
            gets.push(Cc::Battery(fieldgate_zwave::cc::Battery::Get));
        }
        let asked = gets.len();
        let mut answered = 0;
        for get in gets {
            if self.ask(node, get).await?.is_some() {
                answered += 1;
            }
        }
        let ok = answered > 0 || asked == 0;
        self.answer(
            node,
            command_id,
            ok,
            format!("{answered} of {asked} values answered"),
        )
        .await
    }
}
