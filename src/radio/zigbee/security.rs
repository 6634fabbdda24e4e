//! Network secrets on the coordinator and in the store.
//!
//! The network key is generated on first formation and written to the coordinator's NV; an
//! encrypted copy is kept as a credential (owner `radio:<name>`, kind [`NETWORK_KEY_KIND`])
//! when the network is formed, and on resume when none is stored or the stored one differs.
//!
//! Install codes: the hub seals each registered code as a credential of its device (kind
//! [`INSTALL_CODE_KIND`]) and hands it here ([`RadioCommand::AddInstallCode`]) to push to the
//! coordinator with APP_CNF_BDB_ADD_INSTALLCODE. A coordinator may lose them on a reset, so
//! every start-up pushes all stored codes again, then applies the policy's "joins must use
//! install codes" flag (APP_CNF_BDB_SET_JOINUSESINSTALLCODEKEY).
//!
//! Network key rotation ([`RadioCommand::RotateNetworkKey`]): a fresh key is sealed as a
//! pending credential, sent to every device with the next key sequence number
//! (ZDO_EXT_UPDATE_NWK_KEY to 0xFFFF), and after `key_switch_delay` made active
//! (ZDO_EXT_SWITCH_NWK_KEY); only then does it replace the network key credential. If any
//! step fails the coordinator keeps the old key and so does the store.
//!
//! Must never log or return a key or a code.

use crate::model::RadioError;
use anyhow::Result;
use fieldgate_zigbee::znp::{self, nv};
use fieldgate_zigbee::{IeeeAddr, ZnpCommand};
use tokio::time::Instant;

use super::transport::Fail;
use super::{Coordinator, INSTALL_CODE_KIND, NETWORK_KEY_KIND, PENDING_NETWORK_KEY_KIND};
use crate::radio::{Kept, SecretSink};
use crate::secrets::Secret;

/// Broadcast to every device, sleepy end devices included (through their parents).
const BROADCAST_ALL: u16 = 0xFFFF;

/// A key rotation between its update and its switch.
pub(super) struct PendingRotation {
    pub(super) previous_seq: u8,
    pub(super) seq: u8,
    pub(super) key: Secret,
    pub(super) sent_at: Instant,
    pub(super) due: Instant,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<crate::model::KeyRotated, RadioError>>,
}

impl Coordinator<'_> {
    /// Keeps an encrypted copy of the network key as a credential. A failure is logged
    /// (never the key) and start-up carries on: the coordinator's NV still holds the key.
    pub(super) async fn keep_network_key(&mut self, key: Secret) {
        let Some(sink) = self.io.secrets.clone() else {
            tracing::debug!(radio = %self.io.radio, "no credential store wired: network key kept in coordinator NV only");
            return;
        };
        let owner = SecretSink::owner(&self.io.radio);
        match sink.keep(&self.io.radio, NETWORK_KEY_KIND, key).await {
            Ok(Kept::Unchanged) => {
                tracing::debug!(radio = %self.io.radio, credential = %owner, "network key credential up to date")
            }
            Ok(Kept::Stored) => {
                tracing::info!(radio = %self.io.radio, credential = %owner, kind = NETWORK_KEY_KIND, "network key stored encrypted")
            }
            Ok(Kept::Replaced) => {
                tracing::warn!(radio = %self.io.radio, credential = %owner, kind = NETWORK_KEY_KIND, "the stored network key differed from the coordinator's (new network or another coordinator): credential replaced")
            }
            Err(e) => {
                tracing::error!(radio = %self.io.radio, credential = %owner, error = %e, "cannot store the network key encrypted; it stays in coordinator NV only")
            }
        }
    }

    /// APP_CNF_BDB_ADD_INSTALLCODE with the code and its CRC. Outer `Err`: the link broke.
    pub(super) async fn push_install_code(
        &mut self,
        ieee: IeeeAddr,
        code: &Secret,
    ) -> Result<Result<(), Fail>> {
        let req = ZnpCommand::BdbAddInstallCodeReq {
            format: fieldgate_zigbee::install_code::FORMAT_CODE_AND_CRC,
            ieee,
            code: znp::SecretBytes(code.expose().to_vec()),
        };
        Ok(self.request(&req).await?.map(drop))
    }

    /// Pushes every stored install code to the coordinator, which may have lost them in a
    /// reset. A code the coordinator refuses is logged (never the code) and skipped.
    pub(super) async fn push_stored_install_codes(&mut self) -> Result<()> {
        let Some(sink) = self.io.secrets.clone() else {
            return Ok(());
        };
        let (codes, unreadable) = match sink.all_of_kind(INSTALL_CODE_KIND).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(radio = %self.io.radio, error = %e, "cannot read the stored install codes; devices that need them cannot join");
                return Ok(());
            }
        };
        if unreadable > 0 {
            tracing::error!(radio = %self.io.radio, unreadable, "stored install codes that do not open with this master key were skipped");
        }
        let mut pushed = 0;
        for (owner, code) in codes {
            let Some(ieee) = owner
                .strip_prefix("zigbee:")
                .and_then(|a| a.parse::<IeeeAddr>().ok())
            else {
                continue;
            };
            match self.push_install_code(ieee, &code).await? {
                Ok(()) => pushed += 1,
                Err(f) => {
                    tracing::warn!(radio = %self.io.radio, device = %ieee, error = %f, "the coordinator refused a stored install code")
                }
            }
        }
        if pushed > 0 {
            tracing::info!(radio = %self.io.radio, codes = pushed, "install codes pushed to the coordinator");
        }
        Ok(())
    }

    /// Tells the coordinator whether joins must use install-code keys. A coordinator that
    /// cannot (Z-Stack 1.2) is reported; the hub still refuses devices without a code.
    pub(super) async fn apply_install_code_policy(&mut self) -> Result<()> {
        let required = *self.require_install_codes;
        let req = ZnpCommand::BdbSetJoinUsesInstallCodeKeyReq { enabled: required };
        match self.request(&req).await? {
            Ok(_) => {
                tracing::info!(radio = %self.io.radio, required, "install-code joins set on the coordinator")
            }
            Err(f) if required => {
                tracing::error!(radio = %self.io.radio, error = %f, "the coordinator cannot require install codes; devices without one are still refused and removed by the gateway")
            }
            Err(f) => {
                tracing::debug!(radio = %self.io.radio, error = %f, "clearing the install-code join requirement failed")
            }
        }
        Ok(())
    }

    pub(super) async fn start_rotation(
        &mut self,
        reply: tokio::sync::oneshot::Sender<Result<crate::model::KeyRotated, RadioError>>,
    ) -> Result<()> {
        if self.rotation.is_some() {
            let _ = reply.send(Err(RadioError::Refused(
                "a network key rotation is already in progress".into(),
            )));
            return Ok(());
        }
        let Some(sink) = self.io.secrets.clone() else {
            let _ = reply.send(Err(RadioError::Refused(
                "no credential store is wired: a new key could not be kept, so none is sent".into(),
            )));
            return Ok(());
        };
        let previous_seq = match self.active_key().await? {
            Ok(d) => d.map_or(0, |d| d.key_seq_num),
            Err(e) => {
                let _ = reply.send(Err(RadioError::Refused(format!(
                    "cannot tell which key the network runs on ({e}); nothing was sent"
                ))));
                return Ok(());
            }
        };
        let seq = previous_seq.wrapping_add(1);
        let key = loop {
            let k = Secret::random(16);
            if k.expose().iter().any(|b| *b != 0) {
                break k;
            }
        };
        // Kept first: a key on the air that the store does not hold would be unrecoverable.
        if let Err(e) = sink
            .keep(&self.io.radio, PENDING_NETWORK_KEY_KIND, key.clone())
            .await
        {
            let _ = reply.send(Err(RadioError::Refused(format!(
                "cannot store the new key encrypted ({e}); nothing was sent, the old key stays active"
            ))));
            return Ok(());
        }
        let update = ZnpCommand::ZdoExtUpdateNwkKeyReq {
            dst_addr: BROADCAST_ALL,
            key_seq_num: seq,
            key: znp::SecretBytes(key.expose().to_vec()),
        };
        match self.request(&update).await {
            Ok(Ok(_)) => {}
            Ok(Err(f)) => {
                let _ = sink.forget(&self.io.radio, PENDING_NETWORK_KEY_KIND).await;
                let why = match f {
                    Fail::Rpc(_) => {
                        format!("this coordinator does not support network key updates ({f})")
                    }
                    _ => format!("the coordinator refused the key update ({f})"),
                };
                tracing::warn!(radio = %self.io.radio, error = %why, "network key rotation failed; the old key stays active");
                let _ = reply.send(Err(RadioError::Refused(format!(
                    "{why}; the old key stays active"
                ))));
                return Ok(());
            }
            Err(e) => {
                let _ = sink.forget(&self.io.radio, PENDING_NETWORK_KEY_KIND).await;
                let _ = reply.send(Err(RadioError::Refused(format!(
                    "the coordinator link failed during the key update; the old key stays active: {e:#}"
                ))));
                return Err(e);
            }
        }
        let now = Instant::now();
        tracing::info!(radio = %self.io.radio, key_seq = seq, switch_in = ?self.opts.key_switch_delay, "new network key sent to the network");
        self.rotation = Some(PendingRotation {
            previous_seq,
            seq,
            key,
            sent_at: now,
            due: now + self.opts.key_switch_delay,
            reply,
        });
        Ok(())
    }

    pub(super) async fn fail_rotation(&mut self, r: PendingRotation, why: String) {
        if let Some(sink) = self.io.secrets.clone() {
            let _ = sink.forget(&self.io.radio, PENDING_NETWORK_KEY_KIND).await;
        }
        tracing::warn!(radio = %self.io.radio, key_seq = r.seq, error = %why, "network key rotation failed");
        let _ = r.reply.send(Err(RadioError::Refused(why)));
    }

    /// A pending-key credential with no rotation in flight is from one interrupted by a
    /// daemon or link restart: the coordinator never switched to it.
    pub(super) async fn discard_stale_pending_key(&mut self) {
        if let Some(sink) = self.io.secrets.clone() {
            if let Ok(true) = sink.forget(&self.io.radio, PENDING_NETWORK_KEY_KIND).await {
                tracing::warn!(radio = %self.io.radio, "an interrupted network key rotation was discarded; the old key stays active");
            }
        }
    }

    pub(super) async fn switch_key(&mut self, r: PendingRotation) -> Result<()> {
        let switch = ZnpCommand::ZdoExtSwitchNwkKeyReq {
            dst_addr: BROADCAST_ALL,
            key_seq_num: r.seq,
        };
        let status = self.request(&switch).await?;
        // What the coordinator now says it uses decides, where it says it: Z-Stack answers
        // success even when its alternate key does not carry the sequence number (a reset
        // or another host in between), and only its active key item shows the truth.
        let active = self.active_key().await?;
        let switched = match (&status, &active) {
            (_, Ok(Some(d))) => d.key_seq_num == r.seq && d.key[..] == r.key.expose()[..],
            (Ok(_), Ok(None)) => true,
            (Err(_), Ok(None)) | (_, Err(_)) => false,
        };
        if !switched {
            let why = match (status, active) {
                (Err(f), _) => format!("the coordinator refused the key switch ({f}); the old network key stays active"),
                (Ok(_), Err(e)) => format!("the coordinator's active key cannot be read after the switch ({e}); the old network key is assumed active"),
                (Ok(_), Ok(d)) => format!(
                    "the coordinator still reports key sequence {} after the switch; the old network key stays active",
                    d.map_or(0, |d| d.key_seq_num)
                ),
            };
            self.fail_rotation(r, why).await;
            return Ok(());
        }
        if matches!(active, Ok(None)) {
            // No descriptor (Z-Stack 1.2): the preconfigured-key item is the only record of
            // the key in use, for a later resume.
            if let Err(f) = self
                .request(&ZnpCommand::SysOsalNvWriteReq {
                    id: nv::PRECFGKEY,
                    offset: 0,
                    value: r.key.expose().to_vec(),
                })
                .await?
            {
                tracing::warn!(radio = %self.io.radio, error = %f, "could not update the preconfigured key item after the switch");
            }
        }
        let delay = r.sent_at.elapsed();
        let stored = match self.io.secrets.clone() {
            Some(sink) => {
                let kept = sink
                    .keep(&self.io.radio, NETWORK_KEY_KIND, r.key.clone())
                    .await;
                let _ = sink.forget(&self.io.radio, PENDING_NETWORK_KEY_KIND).await;
                kept.map(drop)
            }
            None => Ok(()),
        };
        let answer = match stored {
            Ok(()) => {
                tracing::info!(radio = %self.io.radio, key_seq = r.seq, previous_key_seq = r.previous_seq, "network key rotated");
                Ok(crate::model::KeyRotated {
                    previous_key_seq: r.previous_seq,
                    key_seq: r.seq,
                    switch_delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    switched_at: crate::model::now_rfc3339(),
                })
            }
            Err(e) => {
                tracing::error!(radio = %self.io.radio, key_seq = r.seq, error = %e, "network key switched but the credential could not be updated; it is taken from the coordinator at the next start");
                Err(RadioError::Refused(format!("the network switched to key sequence {} but the stored credential could not be updated ({e}); it is re-read from the coordinator at the next start", r.seq)))
            }
        };
        let _ = r.reply.send(answer);
        Ok(())
    }
}
