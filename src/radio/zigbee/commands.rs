//! The hub's commands: permit join, remove, set (On/Off, level), refresh, install codes,
//! key rotation and backup, each answered by a result event or on its reply channel.
//!
//! Owns the commands in flight until their AF_DATA_CONFIRM or read answers; must not decide
//! whether a command is allowed (the hub has done that).

use std::time::Duration;

use anyhow::Result;
use fieldgate_zigbee::zcl::clusters::{self, id as cluster_id, OnOffCommand};
use fieldgate_zigbee::zcl::ZclFrame;
use fieldgate_zigbee::{IeeeAddr, ZnpCommand};
use tokio::time::Instant;

use super::devices::refresh_plan;
use super::Coordinator;
use crate::model::{
    CredentialKind, DeviceCommand, DeviceEventKind, NetworkBackup, RadioCommand, RadioError,
};

/// How long a device command may wait for its AF_DATA_CONFIRM.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) struct PendingCommand {
    pub(super) command_id: String,
    pub(super) native: String,
    pub(super) deadline: Instant,
}

/// A refresh ([`RadioCommand::Read`]) in progress: the Read Attributes requests not yet
/// answered, as (cluster, ZCL transaction sequence number).
pub(super) struct PendingRefresh {
    pub(super) command_id: String,
    pub(super) ieee: IeeeAddr,
    pub(super) waiting: Vec<(u16, u8)>,
    pub(super) answered: usize,
    pub(super) deadline: Instant,
}

pub(super) fn level_from_percent(percent: u8) -> u8 {
    let p = u32::from(percent.min(100));
    u8::try_from((p * 254 + 50) / 100).unwrap_or(254)
}

impl Coordinator<'_> {
    pub(super) async fn on_command(&mut self, cmd: RadioCommand) -> Result<()> {
        match cmd {
            RadioCommand::PermitJoin { seconds, reply } => {
                let duration = u8::try_from(seconds.min(254)).unwrap_or(254);
                // A close (0 s, as at shutdown) is sent only for a window this link opened
                // that may still be open.
                if duration == 0
                    && self
                        .join_open_until
                        .is_none_or(|until| until <= Instant::now())
                {
                    self.join_open_until = None;
                    let _ = reply.send(Ok(()));
                    return Ok(());
                }
                let answer = match self
                    .request(&ZnpCommand::permit_join_coordinator(duration))
                    .await?
                {
                    Ok(_) if duration == 0 => {
                        self.join_open_until = None;
                        tracing::info!(radio = %self.io.radio, "join window closed");
                        Ok(())
                    }
                    Ok(_) => {
                        self.join_open_until =
                            Some(Instant::now() + Duration::from_secs(u64::from(duration)));
                        tracing::info!(radio = %self.io.radio, seconds = duration, "join window opened (coordinator only)");
                        Ok(())
                    }
                    Err(f) => {
                        tracing::warn!(radio = %self.io.radio, error = %f, "permit join refused by the coordinator");
                        Err(RadioError::Refused(format!(
                            "the coordinator did not open the join window: {f}"
                        )))
                    }
                };
                let _ = reply.send(answer);
            }
            RadioCommand::Remove { native_address } => {
                let dev = native_address
                    .parse::<IeeeAddr>()
                    .ok()
                    .and_then(|ieee| self.devices.get(&ieee));
                match dev {
                    Some(d) => {
                        let (nwk, ieee) = (d.nwk, d.ieee);
                        tracing::info!(radio = %self.io.radio, device = %ieee, "asking the device to leave");
                        let req = ZnpCommand::ZdoMgmtLeaveReq {
                            dst_addr: nwk,
                            ieee,
                            rejoin: false,
                            remove_children: false,
                        };
                        if let Err(f) = self.request(&req).await? {
                            tracing::warn!(radio = %self.io.radio, device = %ieee, error = %f, "leave request refused");
                        }
                    }
                    None => {
                        tracing::warn!(radio = %self.io.radio, device = %native_address, "remove: device not seen on this network since start-up; it was not told to leave")
                    }
                }
            }
            RadioCommand::Set {
                stale_at,
                native_address,
                command,
                command_id,
            } => match crate::model::stale_command(stale_at) {
                Some(detail) => {
                    tracing::warn!(radio = %self.io.radio, device = %native_address, %command_id, "command not sent: it waited too long for the radio");
                    let result = DeviceEventKind::CommandResult {
                        command_id,
                        ok: false,
                        detail,
                    };
                    self.emit(native_address, result).await?
                }
                None => self.set(native_address, command, command_id).await?,
            },
            RadioCommand::ProvisionCredential {
                native_address,
                credential,
                reply,
            } => {
                let answer = match (credential.kind, native_address.parse::<IeeeAddr>()) {
                    (CredentialKind::ZigbeeInstallCode, Ok(ieee)) => {
                        match self.push_install_code(ieee, &credential.secret).await? {
                            Ok(()) => {
                                tracing::info!(radio = %self.io.radio, device = %ieee, "install code registered with the coordinator");
                                Ok(())
                            }
                            Err(f) => {
                                tracing::warn!(radio = %self.io.radio, device = %ieee, error = %f, "the coordinator refused the install code");
                                Err(RadioError::Refused(format!(
                                    "the coordinator refused the install code: {f}"
                                )))
                            }
                        }
                    }
                    (CredentialKind::ZigbeeInstallCode, Err(_)) => Err(RadioError::Invalid(
                        format!("`{native_address}` is not an IEEE address"),
                    )),
                    (other, _) => Err(RadioError::NotSupported(format!(
                        "a Zigbee coordinator takes no {}",
                        other.label()
                    ))),
                };
                let _ = reply.send(answer);
            }
            // A Zigbee leave is asked once, at once: nothing left to stop.
            RadioCommand::Readmitted { .. } => {}
            RadioCommand::Policy(policy) => {
                let required = policy.join_credential_required;
                let changed = *self.require_install_codes != required;
                *self.require_install_codes = required;
                if changed {
                    self.apply_install_code_policy().await?;
                }
            }
            RadioCommand::RotateNetworkKey { reply } => self.start_rotation(reply).await?,
            RadioCommand::Bridged { .. } => {}
            RadioCommand::Read {
                native_address,
                command_id,
            } => self.refresh(native_address, command_id).await?,
            RadioCommand::Restore { reply, .. } => {
                // herdsman restores an open-coordinator backup by forming the network anew
                // from it; this driver does not (form a fresh network and re-pair instead).
                let _ = reply.send(Err(RadioError::NotSupported(
                    "restoring a Zigbee backup onto the coordinator".into(),
                )));
            }
            RadioCommand::Backup { reply } => {
                let result = self.backup().await;
                let answer = match &result {
                    Ok(Ok(v)) => Ok(NetworkBackup {
                        format: "open-coordinator-backup".into(),
                        devices: v["devices"].as_array().map_or(0, Vec::len),
                        document: v.clone(),
                    }),
                    Ok(Err(e)) => Err(RadioError::Refused(e.clone())),
                    Err(e) => Err(RadioError::Link(format!("{e:#}"))),
                };
                match &answer {
                    Ok(_) => tracing::info!(radio = %self.io.radio, "network backup exported"),
                    Err(e) => {
                        tracing::warn!(radio = %self.io.radio, error = %e, bad_nv_items_total = self.stats.bad_nv_items.load(std::sync::atomic::Ordering::Relaxed), "network backup failed")
                    }
                }
                let _ = reply.send(answer);
                // A broken link ends the session (the supervisor re-opens it).
                result.map(drop)?;
            }
        }
        Ok(())
    }

    /// Reads the device's reportable attributes; the answers become readings as reports
    /// do, and a `CommandResult` follows once every read is answered or the time is up.
    pub(super) async fn refresh(&mut self, native: String, command_id: String) -> Result<()> {
        let fail = |detail: &str| DeviceEventKind::CommandResult {
            command_id: command_id.clone(),
            ok: false,
            detail: detail.to_string(),
        };
        let Some(dev) = native
            .parse::<IeeeAddr>()
            .ok()
            .and_then(|i| self.devices.get(&i))
        else {
            return self
                .emit(native.clone(), fail("device not on this network"))
                .await;
        };
        let (ieee, nwk, plan) = (dev.ieee, dev.nwk, refresh_plan(dev));
        if plan.is_empty() {
            return self
                .emit(
                    native.clone(),
                    fail("nothing to read: no cluster with readings is known for this device yet"),
                )
                .await;
        }
        tracing::info!(radio = %self.io.radio, device = %native, clusters = plan.len(), command_id = %command_id, "refreshing");
        let mut waiting = Vec::new();
        for (ep, cluster, attrs) in plan {
            let tsn = self.next_tsn();
            let req = self.zcl_request(nwk, ep, cluster, ZclFrame::read_attributes(tsn, attrs))?;
            match self.request(&req).await? {
                Ok(_) => waiting.push((cluster, tsn)),
                Err(f) => {
                    tracing::warn!(radio = %self.io.radio, device = %native, cluster, error = %f, "read request refused")
                }
            }
        }
        if waiting.is_empty() {
            return self
                .emit(
                    native.clone(),
                    fail("AF_DATA_REQUEST refused for every read"),
                )
                .await;
        }
        // A sleeping device's parent holds frames for up to 7.68 s.
        let wait = self.opts.response_timeout.max(Duration::from_secs(8));
        self.refreshes.push(PendingRefresh {
            command_id,
            ieee,
            waiting,
            answered: 0,
            deadline: Instant::now() + wait,
        });
        Ok(())
    }

    /// A read response arrived: ends the refresh it completes.
    pub(super) async fn refresh_answered(
        &mut self,
        ieee: IeeeAddr,
        cluster: u16,
        tsn: u8,
    ) -> Result<()> {
        let Some(i) = self
            .refreshes
            .iter()
            .position(|r| r.ieee == ieee && r.waiting.contains(&(cluster, tsn)))
        else {
            return Ok(());
        };
        let r = &mut self.refreshes[i];
        r.waiting.retain(|w| *w != (cluster, tsn));
        r.answered += 1;
        if r.waiting.is_empty() {
            let r = self.refreshes.swap_remove(i);
            let detail = format!("refreshed: {} cluster(s) read", r.answered);
            self.emit(
                r.ieee.to_string(),
                DeviceEventKind::CommandResult {
                    command_id: r.command_id,
                    ok: true,
                    detail,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Ends the refreshes whose time is up: ok when part of the device answered.
    pub(super) async fn refreshes_due(&mut self, now: Instant) -> Result<()> {
        while let Some(i) = self.refreshes.iter().position(|r| r.deadline <= now) {
            let r = self.refreshes.swap_remove(i);
            let detail = format!(
                "{} cluster(s) read, {} unanswered",
                r.answered,
                r.waiting.len()
            );
            self.emit(
                r.ieee.to_string(),
                DeviceEventKind::CommandResult {
                    command_id: r.command_id,
                    ok: r.answered > 0,
                    detail,
                },
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn set(
        &mut self,
        native: String,
        command: DeviceCommand,
        command_id: String,
    ) -> Result<()> {
        let fail = |detail: String| DeviceEventKind::CommandResult {
            command_id: command_id.clone(),
            ok: false,
            detail,
        };
        let Some(dev) = native
            .parse::<IeeeAddr>()
            .ok()
            .and_then(|i| self.devices.get(&i))
        else {
            return self
                .emit(native.clone(), fail("device not on this network".into()))
                .await;
        };
        if let DeviceCommand::Configure { .. } = command {
            return self
                .emit(
                    native.clone(),
                    fail(
                        "not_supported: Zigbee devices have no numbered configuration parameters"
                            .into(),
                    ),
                )
                .await;
        }
        let cluster = match command {
            DeviceCommand::Level { .. } => cluster_id::LEVEL_CONTROL,
            _ => cluster_id::ON_OFF,
        };
        // A level for a device whose endpoints are known (interviewed) and have no Level
        // Control: refused rather than sent to endpoint 1 and reported delivered. (On/off
        // still goes out: a device without an On/Off server cluster may take the command
        // on another, as many sleepy devices do through their own clusters.)
        if cluster == cluster_id::LEVEL_CONTROL
            && !dev.simple.is_empty()
            && dev.endpoint_with(cluster).is_none()
        {
            let why = if dev.endpoint_with(cluster_id::ON_OFF).is_some() {
                "not_supported: the device has no Level Control cluster (an on/off device: set on or off)"
            } else {
                "not_supported: the device has no Level Control cluster (nor On/Off: it takes no level)"
            };
            return self.emit(native.clone(), fail(why.into())).await;
        }
        let nwk = dev.nwk;
        let ep = dev.endpoint_with(cluster).unwrap_or(1);
        let tsn = self.next_tsn();
        let frame = match command {
            DeviceCommand::On => clusters::on_off(OnOffCommand::On, tsn),
            DeviceCommand::Off => clusters::on_off(OnOffCommand::Off, tsn),
            DeviceCommand::Toggle => clusters::on_off(OnOffCommand::Toggle, tsn),
            DeviceCommand::Level { percent } => {
                clusters::move_to_level_with_on_off(level_from_percent(percent), 0, tsn)
            }
            // Answered above.
            DeviceCommand::Configure { .. } => return Ok(()),
        };
        let req = self.zcl_request(nwk, ep, cluster, frame)?;
        let trans_id = match &req {
            ZnpCommand::AfDataRequestReq(r) => r.trans_id,
            _ => 0,
        };
        tracing::info!(radio = %self.io.radio, device = %native, command = ?command, command_id = %command_id, "sending command");
        match self.request(&req).await? {
            Ok(_) => {
                self.commands.insert(
                    trans_id,
                    PendingCommand {
                        command_id,
                        native,
                        deadline: Instant::now() + CONFIRM_TIMEOUT,
                    },
                );
                Ok(())
            }
            Err(f) => {
                self.emit(
                    native.clone(),
                    fail(format!("AF_DATA_REQUEST refused: {f}")),
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_maps_onto_the_zigbee_level_scale() {
        assert_eq!(level_from_percent(0), 0);
        assert_eq!(level_from_percent(50), 127);
        assert_eq!(level_from_percent(100), 254);
        assert_eq!(level_from_percent(200), 254);
    }
}
