//! Operations the doors ask of the hub, one file each: validate, audit, act.
//! What they share lives here: the one refusal path for device commands, the one
//! "is this radio running" check, the audit write, and the relay that hands a
//! radio operation to the driver without the hub waiting on it.

mod adopt;
mod apply_policy;
mod backup;
mod block;
mod command;
mod decommission;
mod device_request;
mod install_code;
mod permit_join;
mod readmit;
mod rotate_key;

use super::*;

impl Hub {
    /// Hands a device's credential to every running radio that takes its kind, and returns
    /// the future that collects their answers (each bounded by [`INSTALL_CODE_TIMEOUT`]).
    /// A radio that cannot take it now gets it at its next start: `done` and `later` say
    /// so in the operation's own words. The hub does not wait on the radios.
    pub(in crate::hub) fn push_credential(
        &mut self,
        device: &DeviceId,
        credential: DeviceCredential,
        done: &'static str,
        later: &'static str,
    ) -> impl std::future::Future<Output = Vec<InstallCodePush>> + Send + 'static {
        let native = device.native_address().to_string();
        let mut waiting = Vec::new();
        let mut pushed = Vec::new();
        let names: Vec<String> = self
            .radios
            .values()
            .filter(|h| h.capabilities.is_some_and(|c| c.accepts(credential.kind)))
            .map(|h| h.name.clone())
            .collect();
        for name in names {
            match self.reserve(&name) {
                Ok(permit) => {
                    let (rtx, rrx) = oneshot::channel();
                    permit.send(RadioCommand::ProvisionCredential {
                        native_address: native.clone(),
                        credential: credential.clone(),
                        reply: rtx,
                    });
                    waiting.push((name, rrx));
                }
                Err(e) => pushed.push(InstallCodePush {
                    radio: name,
                    ok: false,
                    detail: format!("{e}; {later}"),
                }),
            }
        }
        async move {
            for (radio, rx) in waiting {
                let (ok, detail) = match tokio::time::timeout(INSTALL_CODE_TIMEOUT, rx).await {
                    Ok(Ok(Ok(()))) => (true, done.to_string()),
                    Ok(Ok(Err(e))) => (false, e.to_string()),
                    Ok(Err(_)) => (
                        false,
                        format!("the driver stopped before answering; {later}"),
                    ),
                    Err(_) => (
                        false,
                        format!("no answer within {INSTALL_CODE_TIMEOUT:?}; {later}"),
                    ),
                };
                pushed.push(InstallCodePush { radio, ok, detail });
            }
            pushed
        }
    }

    /// Why a command to this device is refused, if it is.
    pub(in crate::hub) fn command_refusal(&self, d: &registry::Device) -> Option<HubError> {
        if d.lifecycle == Lifecycle::Decommissioned.as_str() {
            return Some(HubError::DeviceDecommissioned(d.id.clone()));
        }
        if d.lifecycle == Lifecycle::Quarantined.as_str() {
            let facts = facts_of(d);
            let allowed = matches!(
                self.policy.firmware(&facts, d.firmware.as_deref()),
                Compliance::Below {
                    commands_allowed: true,
                    ..
                }
            );
            if !allowed {
                return Some(HubError::DeviceQuarantined(d.id.clone()));
            }
        }
        None
    }

    /// The capabilities and command channel of a running radio, or why there is none.
    /// The one "is this radio running" check every operation uses.
    pub(in crate::hub) fn running_radio(
        &self,
        radio: &str,
    ) -> Result<(&'static Capabilities, mpsc::Sender<RadioCommand>), HubError> {
        let h = self
            .radios
            .get(radio)
            .ok_or_else(|| HubError::UnknownRadio(radio.to_string()))?;
        let state = h.state.borrow().clone();
        match (&h.commands, h.capabilities, state) {
            (Some(tx), Some(caps), RadioState::Up) => Ok((caps, tx.clone())),
            (None, _, _) | (_, None, _) => Err(HubError::RadioUnavailable(
                radio.to_string(),
                "not running: no driver runs for it".into(),
            )),
            (_, _, RadioState::Unavailable(why) | RadioState::Down(why)) => Err(
                HubError::RadioUnavailable(radio.to_string(), format!("not running: {why}")),
            ),
            _ => Err(HubError::RadioUnavailable(
                radio.to_string(),
                "not running yet: starting".into(),
            )),
        }
    }

    /// A slot in a running radio's command queue, taken before the audit record is
    /// written so that the action cannot then fail on a full queue. The hub never
    /// waits on a radio: a full queue is `radio_busy` at once.
    pub(in crate::hub) fn reserve(
        &self,
        radio: &str,
    ) -> Result<mpsc::OwnedPermit<RadioCommand>, HubError> {
        let (_, tx) = self.running_radio(radio)?;
        tx.try_reserve_owned().map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => HubError::RadioBusy(radio.to_string()),
            mpsc::error::TrySendError::Closed(_) => HubError::RadioUnavailable(
                radio.to_string(),
                "not running: its driver stopped".into(),
            ),
        })
    }

    /// Hands a checked radio operation to its driver. The answer is awaited (with a
    /// timeout), audited and sent back from a task, so the hub never waits on a radio;
    /// the caller gets the answer only once its audit record is committed.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::hub) async fn relay<T: Send + 'static>(
        &self,
        permit: mpsc::OwnedPermit<RadioCommand>,
        job: RelayJob,
        command: impl FnOnce(oneshot::Sender<Result<T, RadioError>>) -> RadioCommand,
        done: impl FnOnce(&T) -> serde_json::Value + Send + 'static,
        failed: impl FnOnce(&HubError) -> serde_json::Value + Send + 'static,
        reply: oneshot::Sender<Result<T, HubError>>,
    ) {
        let RelayJob {
            radio,
            actor,
            action,
            timeout,
            stopped,
        } = job;
        let (tx, rx) = oneshot::channel();
        // A driver that stops from here on drops `tx`: answered as `stopped`.
        permit.send(command(tx));
        let writer = self.writer.clone();
        let gw = self.gateway_id.clone();
        tokio::spawn(async move {
            let answer = radio_answer(&radio, rx, timeout, stopped).await;
            let record = match &answer {
                Ok(v) => AuditEntry::new(&actor, action, &radio, Outcome::Accepted, done(v)),
                Err(e) => AuditEntry::new(&actor, action, &radio, Outcome::Failed, failed(e)),
            };
            let audited = writer
                .write(move |c| store::record_audit(c, &gw, &record).map(|_| ()))
                .await
                .map_err(HubError::from);
            let _ = reply.send(audited.and(answer));
        });
    }

    /// Answers a refused operation with `e` once its audit record `entry` is committed; if
    /// the record cannot be written, with that error instead (no audit record, no answer).
    pub(in crate::hub) async fn refuse<T>(
        &self,
        entry: AuditEntry,
        e: HubError,
        reply: oneshot::Sender<Result<T, HubError>>,
    ) {
        let audited = self.audit(entry).await;
        let _ = reply.send(audited.and(Err(e)));
    }

    pub(in crate::hub) async fn audit(&self, entry: AuditEntry) -> Result<(), HubError> {
        let gw = self.gateway_id.clone();
        self.writer
            .write(move |c| store::record_audit(c, &gw, &entry).map(|_| ()))
            .await?;
        Ok(())
    }
}

/// A radio's answer to a command, waited for at most `timeout`; a driver that dropped
/// the command unanswered failed it for the reason `stopped`.
pub(in crate::hub) async fn radio_answer<T>(
    radio: &str,
    rx: oneshot::Receiver<Result<T, RadioError>>,
    timeout: Duration,
    stopped: &str,
) -> Result<T, HubError> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(HubError::from_radio(radio, e)),
        Ok(Err(_)) => Err(HubError::RadioUnavailable(radio.into(), stopped.into())),
        Err(_) => Err(HubError::RadioUnavailable(
            radio.into(),
            format!("no answer within {timeout:?}"),
        )),
    }
}
