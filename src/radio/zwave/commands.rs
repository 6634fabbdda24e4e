//! The hub's commands: permit join, remove, set (on / off / toggle / level, answered with
//! the TX status and the state the device reports after it; a configuration parameter,
//! set with Supervision where the node has it and read back), read (fresh values of what
//! the node reports), backup and restore; what a Z-Wave controller cannot do (device credentials, network
//! key rotation) is refused with `not_supported`.

use anyhow::Result;
use fieldgate_zwave::cc::{
    id, Basic, BinarySwitch, Configuration, Meter, MultilevelSensor, MultilevelSwitch, Supervision,
    SupervisionStatus,
};
use fieldgate_zwave::Cc;
use tokio::time::Instant;

use super::{Controller, Sent};
use crate::model::{
    vocabulary, DeviceCommand, DeviceEventKind, NetworkBackup, RadioCommand, RadioError,
};

impl Controller<'_> {
    pub(super) async fn on_command(&mut self, cmd: RadioCommand) -> Result<()> {
        match cmd {
            RadioCommand::PermitJoin { seconds, reply } => {
                let answer = self.permit_join(seconds).await?;
                let _ = reply.send(answer);
            }
            RadioCommand::Remove { native_address } => match self.node_of(&native_address) {
                Some(node) => self.remove(node).await?,
                None => {
                    tracing::warn!(radio = %self.io.radio, address = %native_address, "remove: not a node of this controller's network")
                }
            },
            RadioCommand::Set {
                stale_at,
                native_address,
                command,
                command_id,
            } => match crate::model::stale_command(stale_at) {
                Some(detail) => {
                    tracing::warn!(radio = %self.io.radio, address = %native_address, %command_id, "command not sent: it waited too long for the radio");
                    if !self
                        .io
                        .answer(native_address, command_id, false, &detail)
                        .await
                    {
                        return Err(anyhow::anyhow!("the hub stopped taking events"));
                    }
                }
                None => self.set(&native_address, command, command_id).await?,
            },
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
            RadioCommand::Restore { document, reply } => {
                let answer = self.restore(&document).await?;
                let _ = reply.send(answer);
            }
            RadioCommand::ProvisionCredential { reply, .. } => {
                let _ = reply.send(Err(RadioError::NotSupported(
                    "device credentials (S2 bootstrapping is not supported by this driver)".into(),
                )));
            }
            RadioCommand::Readmitted { native_address } => {
                if let Some(node) = self.node_of(&native_address) {
                    self.keep(node).await?;
                }
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
        let detail = "no such node on this controller";
        if self
            .io
            .answer(address.to_string(), command_id, false, detail)
            .await
        {
            Ok(())
        } else {
            Err(anyhow::anyhow!("the hub stopped taking events"))
        }
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
        if let DeviceCommand::Configure {
            parameter,
            size,
            value,
        } = command
        {
            return self
                .configure(node, parameter, size, value, command_id)
                .await;
        }
        let (binary, multilevel, on, described) = match self.nodes.get(&node) {
            Some(n) => (
                n.supports(id::BINARY_SWITCH),
                n.supports(id::MULTILEVEL_SWITCH),
                n.on,
                n.described(),
            ),
            None => return Ok(()),
        };
        let is_level = matches!(command, DeviceCommand::Level { .. });
        if is_level && described && !binary && !multilevel {
            // A sensor: a level means nothing to it. (On and off still go out as Basic
            // Set, which a sleeping node's held request relies on.)
            let why =
                "not_supported: the node has no Multilevel Switch (a sensor): it takes no level"
                    .to_string();
            return self.answer(node, command_id, false, why).await;
        }
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
            // 0-99 on the wire: 100 % is 99 (0xFF would mean "the last level").
            DeviceCommand::Level { percent } => {
                vocabulary::raw_of_percent(percent, vocabulary::ZWAVE_LEVEL_MAX)
            }
            DeviceCommand::Configure { .. } => return Ok(()),
        };
        if is_level && binary && !multilevel {
            // A Basic Set of a level would switch it on and read back 100: refused
            // rather than answered ok for a level it cannot take.
            let why = "not_supported: the node is an on/off switch (Binary Switch, no Multilevel Switch): set on or off".to_string();
            return self.answer(node, command_id, false, why).await;
        }
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

    /// Configuration Set (inside Supervision Get when the node supports Supervision, so that
    /// it says whether it took the value), then Configuration Get: the answer says what the
    /// node holds now. Parameters are one byte (Configuration v1-v3); a value is sent as
    /// the two's complement of its size, so 255 and -1 in one byte are the same.
    async fn configure(
        &mut self,
        node: u8,
        parameter: u16,
        size: u8,
        value: i64,
        command_id: String,
    ) -> Result<()> {
        let (configurable, supervised) = self.nodes.get(&node).map_or((false, false), |n| {
            (n.supports(id::CONFIGURATION), n.supports(id::SUPERVISION))
        });
        let Some(wire) = wire_value(size, value) else {
            let why = format!("{value} does not fit in {size} byte(s)");
            return self.answer(node, command_id, false, why).await;
        };
        let Ok(parameter) = u8::try_from(parameter) else {
            let why =
                format!("Z-Wave configuration parameters are numbered 0-255, not {parameter}");
            return self.answer(node, command_id, false, why).await;
        };
        if !configurable {
            let why = "not_supported: the node has no Configuration command class".to_string();
            return self.answer(node, command_id, false, why).await;
        }
        let set = Cc::Configuration(Configuration::Set {
            parameter,
            reset_to_default: false,
            size,
            value: wire,
        });
        let mut supervision = None;
        if supervised {
            let get = Cc::Supervision(Supervision::Get {
                status_updates: false,
                session_id: self.ids.next() & 0x3F,
                encapsulated: Box::new(set),
            });
            match self.ask(node, get).await? {
                Some(Cc::Supervision(Supervision::Report { status, .. })) => {
                    if matches!(
                        status,
                        SupervisionStatus::NoSupport | SupervisionStatus::Fail
                    ) {
                        let why = format!("the node refused parameter {parameter} ({status:?})");
                        return self.answer(node, command_id, false, why).await;
                    }
                    supervision = Some(status);
                }
                _ => {
                    let why = "no Supervision Report from the node".to_string();
                    return self.answer(node, command_id, false, why).await;
                }
            }
        } else if let Sent::NotDelivered(why) = self.send_cc(node, &set).await? {
            return self.answer(node, command_id, false, why).await;
        }
        let get = Cc::Configuration(Configuration::Get { parameter });
        let (ok, detail) = match self.ask(node, get).await? {
            Some(Cc::Configuration(Configuration::Report {
                parameter: p,
                size: s,
                value: v,
            })) if p == parameter => {
                if s == size && v == wire {
                    (true, format!("parameter {parameter} is now {value}"))
                } else {
                    (
                        false,
                        format!("the node kept parameter {parameter} at {v} ({s} byte(s)); asked for {value} ({size} byte(s))"),
                    )
                }
            }
            // A node answers a Get for a parameter it lacks with its first parameter.
            Some(Cc::Configuration(Configuration::Report { parameter: p, .. })) => (
                false,
                format!("the node has no parameter {parameter} (it answered with parameter {p})"),
            ),
            _ => match supervision {
                Some(status) => (
                    true,
                    format!("parameter {parameter} set (Supervision {status:?}); not read back"),
                ),
                None => (
                    true,
                    format!("parameter {parameter} delivered (TX status OK); not read back"),
                ),
            },
        };
        self.answer(node, command_id, ok, detail).await
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

/// A value in `size` bytes as the signed number Configuration carries: unsigned values of
/// the upper half (255 in one byte) wrap to their two's complement (-1). `None` when it
/// does not fit.
fn wire_value(size: u8, value: i64) -> Option<i32> {
    if !matches!(size, 1 | 2 | 4) {
        return None;
    }
    let bits = 8 * u32::from(size);
    let (min, max) = (-(1i64 << (bits - 1)), (1i64 << bits) - 1);
    if !(min..=max).contains(&value) {
        return None;
    }
    let half = 1i64 << (bits - 1);
    let signed = if value >= half {
        value - (1i64 << bits)
    } else {
        value
    };
    i32::try_from(signed).ok()
}

#[cfg(test)]
mod tests {
    use super::wire_value;

    #[test]
    fn configuration_values_wrap_to_their_size() {
        assert_eq!(wire_value(1, 255), Some(-1));
        assert_eq!(wire_value(1, 127), Some(127));
        assert_eq!(wire_value(1, -128), Some(-128));
        assert_eq!(wire_value(1, 256), None);
        assert_eq!(wire_value(2, 300), Some(300));
        assert_eq!(wire_value(2, 65_535), Some(-1));
        assert_eq!(wire_value(4, 4_294_967_295), Some(-1));
        assert_eq!(wire_value(4, i64::from(i32::MIN)), Some(i32::MIN));
        assert_eq!(wire_value(3, 1), None);
    }
}
