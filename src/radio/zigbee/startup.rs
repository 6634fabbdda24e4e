//! Bringing the coordinator up on a fresh link: ping (with the bootloader-skip fallback),
//! resume the network it has (checked against the options and its NIB) or form a new one,
//! register our endpoint, then re-apply install codes and their policy.
//!
//! Also run after the coordinator resets on its own or stops answering the watchdog. Must
//! not forget device knowledge on a resume; only forming a new network does.

use std::time::Duration;

use anyhow::{bail, Result};
use fieldgate_zigbee::znp::{self, nv, AfRegister};
use fieldgate_zigbee::{IeeeAddr, ZnpCommand};
use tokio::time::Instant;

use super::transport::Fail;
use super::{Coordinator, OUR_ENDPOINT};
use crate::model::{DeviceEventKind, RadioState};
use crate::radio::RadioCounters;
use crate::secrets::Secret;

/// First ping, before the bootloader-skip fallback (ZH `skipBootloader`).
const FIRST_PING_TIMEOUT: Duration = Duration::from_millis(250);
/// Wait after the bootloader-skip byte before pinging again.
const BOOTLOADER_SKIP_WAIT: Duration = Duration::from_secs(1);
/// SYS_RESET_IND after a requested reset (ZH: 30 s).
const RESET_TIMEOUT: Duration = Duration::from_secs(30);
/// STATE_CHANGE_IND(9) after STARTUP_FROM_APP or formation (ZH: 40 s / 100 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl Coordinator<'_> {
    pub(super) async fn ping(&mut self, timeout: Duration) -> Result<bool> {
        Ok(self
            .request_with(&ZnpCommand::SysPingReq, timeout)
            .await?
            .is_ok())
    }

    pub(super) async fn startup(&mut self) -> Result<()> {
        let _ = self.io.state.send(RadioState::Starting);
        RadioCounters::count(&self.stats.startups);
        self.link.clear_unsolicited();
        if let Some(r) = self.rotation.take() {
            self.fail_rotation(
                r,
                "the coordinator restarted before the switch; the old network key stays active"
                    .into(),
            )
            .await;
        }
        // Commands in flight died with the coordinator's state.
        for (_, p) in std::mem::take(&mut self.commands) {
            self.emit(
                p.native,
                DeviceEventKind::CommandResult {
                    command_id: p.command_id,
                    ok: false,
                    detail: "coordinator restarted before AF_DATA_CONFIRM".into(),
                },
            )
            .await?;
        }
        for d in self.devices.values_mut() {
            d.waiting = None;
            d.stalled = d.next_step().is_some();
            d.retry_at = d.stalled.then(|| Instant::now() + Duration::from_secs(2));
        }

        if !self.ping(FIRST_PING_TIMEOUT).await? {
            tracing::info!(radio = %self.io.radio, "no answer to SYS_PING: sending the bootloader-skip byte");
            self.link.send(&[0xEF; 256]).await?;
            tokio::time::sleep(BOOTLOADER_SKIP_WAIT).await;
            if !self.ping(self.opts.sreq_timeout).await? {
                bail!("the coordinator does not answer SYS_PING, also after the bootloader-skip byte (is this a Z-Stack ZNP firmware?)");
            }
        }
        match self.request(&ZnpCommand::SysVersionReq).await? {
            Ok(ZnpCommand::SysVersionRsp {
                product,
                major_rel,
                minor_rel,
                maint_rel,
                revision,
                ..
            }) => {
                tracing::info!(radio = %self.io.radio, product, version = %format!("{major_rel}.{minor_rel}.{maint_rel}"), revision = ?revision, "Z-Stack coordinator");
                if product == 0 {
                    tracing::warn!(radio = %self.io.radio, "Z-Stack 1.2 firmware: this driver targets Z-Stack 3 NV layout");
                }
            }
            other => {
                tracing::warn!(radio = %self.io.radio, result = ?other.err(), "SYS_VERSION failed; assuming Z-Stack 3");
            }
        }

        let configured = self.nv_read(nv::HAS_CONFIGURED_ZSTACK3).await?;
        if configured.as_deref() == Some(&[nv::HAS_CONFIGURED_MAGIC][..]) {
            self.resume().await?;
        } else {
            self.form().await?;
        }

        let register = ZnpCommand::AfRegisterReq(AfRegister {
            endpoint: OUR_ENDPOINT,
            profile_id: 0x0104,
            device_id: 0x0005,
            device_version: 0,
            latency_req: 0,
            in_clusters: vec![0x0000, 0x0006, 0x000A, 0x0019, 0x0500],
            out_clusters: vec![0x0000, 0x0006, 0x0008, 0x0500, 0x0702, 0x0B04],
        });
        match self.request(&register).await? {
            // 0xB8: already registered (the NCP kept it across a host restart).
            Ok(_) | Err(Fail::Status(0xB8)) => {}
            Err(f) => {
                bail!("coordinator start-up: AF_REGISTER of endpoint {OUR_ENDPOINT} failed: {f}")
            }
        }
        self.register_green_power().await?;
        match self.must(&ZnpCommand::UtilGetDeviceInfoReq).await? {
            ZnpCommand::UtilGetDeviceInfoRsp {
                ieee, device_state, ..
            } => {
                self.coordinator_ieee = ieee;
                if device_state != znp::DEVICE_STATE_COORDINATOR {
                    bail!("coordinator start-up: device state {device_state} after start (expected 9, running as coordinator)");
                }
            }
            other => bail!(
                "coordinator start-up: unexpected answer to UTIL_GET_DEVICE_INFO: {}",
                other.name()
            ),
        }
        self.discard_stale_pending_key().await;
        self.push_stored_install_codes().await?;
        self.apply_install_code_policy().await?;
        self.restart_needed = false;
        self.ping_failures = 0;
        self.next_watchdog = Instant::now() + self.opts.watchdog_interval;
        tracing::info!(radio = %self.io.radio, coordinator = %self.coordinator_ieee, devices = self.devices.len(), "zigbee network up");
        let _ = self.io.state.send(RadioState::Up);
        Ok(())
    }

    /// The coordinator has a network: check it matches the options, then start it.
    pub(super) async fn resume(&mut self) -> Result<()> {
        let pan_id = self
            .nv_read(nv::PANID)
            .await?
            .and_then(|v| Some(u16::from_le_bytes([*v.first()?, *v.get(1)?])));
        let ext = self
            .nv_read(nv::EXTENDED_PAN_ID)
            .await?
            .and_then(|v| <[u8; 8]>::try_from(v.get(..8)?).ok())
            .map(u64::from_le_bytes);
        let channel = self
            .nv_read(nv::CHANLIST)
            .await?
            .and_then(|v| <[u8; 4]>::try_from(v.get(..4)?).ok())
            .map(u32::from_le_bytes)
            .and_then(|mask| (11u8..=26).find(|c| mask & (1 << c) != 0));
        // The key in use: the active key descriptor (a key switch rewrites it) if the
        // firmware keeps one, else the preconfigured key the network was formed with (Z-Stack
        // 1.2). A garbled descriptor leaves the stored credential as it is: the preconfigured
        // item may still hold a key the network switched away from.
        let key = match self.active_key().await? {
            Ok(Some(d)) => Some(Secret::new(d.key.to_vec())),
            Ok(None) => self.nv_read(nv::PRECFGKEY).await?.map(Secret::new),
            Err(e) => {
                tracing::warn!(radio = %self.io.radio, error = %e, "cannot read the coordinator's active network key; the stored credential is left as it is");
                None
            }
        }
        .filter(|k| k.expose().len() == 16 && k.expose().iter().any(|b| *b != 0));
        // The NIB is the network the radio actually runs; the items above are what it was
        // configured with. They must agree, or something else rewrote the coordinator.
        let (pan_id, ext, channel) = match self.read_nib().await? {
            Ok(Some((nib, _))) => {
                let mut differ = Vec::new();
                if pan_id.is_some_and(|p| p != nib.nwk_pan_id) {
                    differ.push("PAN id");
                }
                if ext.is_some_and(|e| e != nib.extended_pan_id) {
                    differ.push("extended PAN id");
                }
                if channel.is_some_and(|c| c != nib.nwk_logical_channel) {
                    differ.push("channel");
                }
                if differ.is_empty() {
                    tracing::debug!(radio = %self.io.radio, nwk_update_id = nib.nwk_update_id, security_level = nib.security_level, "NIB agrees with the network configuration items");
                } else {
                    tracing::warn!(radio = %self.io.radio, differ = %differ.join(", "), nib_pan_id = %format!("{:#06x}", nib.nwk_pan_id), nib_channel = nib.nwk_logical_channel, "the coordinator's NIB disagrees with its configuration items; the NIB (the running network) wins");
                }
                (
                    Some(nib.nwk_pan_id),
                    Some(nib.extended_pan_id),
                    Some(nib.nwk_logical_channel),
                )
            }
            Ok(None) => {
                tracing::warn!(radio = %self.io.radio, "the coordinator has no NIB although it says it is configured");
                (pan_id, ext, channel)
            }
            Err(e) => {
                tracing::warn!(radio = %self.io.radio, error = %e, "cannot read the coordinator's NIB; checking the configuration items only");
                (pan_id, ext, channel)
            }
        };
        let mut mismatch = Vec::new();
        if let (Some(want), Some(have)) = (self.opts.channel, channel) {
            if want != have {
                mismatch.push(format!("channel {have} (options say {want})"));
            }
        }
        if let (Some(want), Some(have)) = (self.opts.pan_id, pan_id) {
            if want != have {
                mismatch.push(format!("PAN id {have:#06x} (options say {want:#06x})"));
            }
        }
        if let (Some(want), Some(have)) = (self.opts.extended_pan_id, ext) {
            if want != have {
                mismatch.push(format!(
                    "extended PAN id {} (options say {})",
                    IeeeAddr(have),
                    IeeeAddr(want)
                ));
            }
        }
        if !mismatch.is_empty() {
            bail!(
                "the coordinator already runs a network with {}; forming a new one would orphan every paired device. \
                 Set [radio.options] to match, or remove them to use the coordinator's network",
                mismatch.join(", ")
            );
        }
        if key.is_none() {
            tracing::warn!(radio = %self.io.radio, "the coordinator's NV holds no network key item");
        }
        tracing::info!(radio = %self.io.radio, channel = ?channel, pan_id = ?pan_id.map(|p| format!("{p:#06x}")), extended_pan_id = ?ext.map(|e| IeeeAddr(e).to_string()), "resuming the existing network");
        let state = match self.must(&ZnpCommand::UtilGetDeviceInfoReq).await? {
            ZnpCommand::UtilGetDeviceInfoRsp { device_state, .. } => device_state,
            _ => 0,
        };
        if state != znp::DEVICE_STATE_COORDINATOR {
            let startup = ZnpCommand::ZdoStartupFromAppReq { start_delay: 100 };
            // Its status (restored, new, not started) is not a failure: the state change says
            // when the network runs. An RPC error means it never will: fail now, named.
            if let Err(f @ Fail::Rpc(_)) = self.request(&startup).await? {
                bail!("coordinator start-up: {} failed: {f}", startup.name());
            }
            self.wait_started().await?;
        }
        if let Some(key) = key {
            self.keep_network_key(key).await;
        }
        Ok(())
    }

    pub(super) async fn wait_started(&mut self) -> Result<()> {
        let started = self
            .wait_for(START_TIMEOUT, |c| {
                matches!(c, ZnpCommand::ZdoStateChangeInd { state } if *state == znp::DEVICE_STATE_COORDINATOR)
            })
            .await?;
        if started.is_none() {
            bail!("coordinator start-up: no STATE_CHANGE_IND(9) within {START_TIMEOUT:?}");
        }
        Ok(())
    }

    /// Forms a new network from the options (reference §1.4 step 5).
    pub(super) async fn form(&mut self) -> Result<()> {
        let channel = self.opts.channel.unwrap_or(11);
        let pan_id = self
            .opts
            .pan_id
            .unwrap_or_else(|| rand::random_range(0x0001..0xFFF0));
        let ext = self.opts.extended_pan_id.unwrap_or_else(|| loop {
            let e: u64 = rand::random();
            if e != 0 && e != u64::MAX {
                break e;
            }
        });
        let key = Secret::random(16);
        tracing::info!(radio = %self.io.radio, channel, pan_id = %format!("{pan_id:#06x}"), extended_pan_id = %IeeeAddr(ext), "forming a new zigbee network (new network key generated)");

        self.nv_write(nv::STARTUP_OPTION, vec![nv::STARTUP_CLEAR_ALL])
            .await?;
        self.send_areq(&ZnpCommand::SysResetReq { reset_type: 1 })
            .await?;
        if self
            .wait_for(RESET_TIMEOUT, |c| {
                matches!(c, ZnpCommand::SysResetInd { .. })
            })
            .await?
            .is_none()
        {
            bail!("coordinator start-up: no SYS_RESET_IND after the reset that clears the old network");
        }
        self.nv_write(nv::STARTUP_OPTION, vec![0]).await?;
        self.nv_write(nv::LOGICAL_TYPE, vec![0]).await?;
        self.nv_write(nv::ZDO_DIRECT_CB, vec![1]).await?;
        let mask = 1u32 << channel;
        self.nv_write(nv::CHANLIST, mask.to_le_bytes().to_vec())
            .await?;
        self.nv_write(nv::PANID, pan_id.to_le_bytes().to_vec())
            .await?;
        self.nv_write(nv::EXTENDED_PAN_ID, ext.to_le_bytes().to_vec())
            .await?;
        self.nv_write(nv::APS_USE_EXT_PANID, ext.to_le_bytes().to_vec())
            .await?;
        self.nv_write(nv::PRECFGKEYS_ENABLE, vec![0]).await?;
        self.nv_write(nv::PRECFGKEY, key.expose().to_vec()).await?;
        self.must(&ZnpCommand::BdbSetChannelReq {
            is_primary: true,
            channel_mask: mask,
        })
        .await?;
        self.must(&ZnpCommand::BdbSetChannelReq {
            is_primary: false,
            channel_mask: 0,
        })
        .await?;
        self.must(&ZnpCommand::BdbStartCommissioningReq {
            mode: znp::BDB_MODE_FORMATION,
        })
        .await?;
        self.wait_started().await?;
        self.nv_write(nv::HAS_CONFIGURED_ZSTACK3, vec![nv::HAS_CONFIGURED_MAGIC])
            .await?;
        // The old network's devices are gone with it.
        self.devices.clear();
        self.keep_network_key(key).await;
        Ok(())
    }
}
