//! Opening a join window on a radio (bounded by the policy and the radio).

use super::*;

impl Hub {
    /// Checks, audits and opens a join window. The caller is answered once the radio has
    /// opened it: a radio that refuses (a coordinator answering the permit-join with an
    /// error) fails the request, with a second audit record saying so, and the hub's own
    /// window is closed again.
    pub(in crate::hub) async fn permit_join(
        &mut self,
        radio: String,
        seconds: u32,
        actor: String,
        reply: oneshot::Sender<Result<PermitJoinAccepted, HubError>>,
    ) {
        let policy_max = self
            .policy
            .policy
            .admission
            .max_join_window_s
            .min(MAX_PERMIT_JOIN_SECONDS);
        let in_range = |max: u32| {
            if seconds == 0 || seconds > max {
                Err(HubError::Invalid(format!(
                    "seconds must be between 1 and {max}"
                )))
            } else {
                Ok(())
            }
        };
        let check = in_range(policy_max)
            .and_then(|()| self.running_radio(&radio))
            .and_then(|(caps, _)| {
                let Some(radio_max) = caps.max_join_window else {
                    return Err(HubError::Invalid(format!(
                        "radio `{radio}` discovers its devices: there is no join window to open"
                    )));
                };
                let max = policy_max.min(u32::try_from(radio_max.as_secs()).unwrap_or(u32::MAX));
                in_range(max)?;
                Ok((self.reserve(&radio)?, max))
            });
        let (permit, max) = match check {
            Ok(p) => p,
            Err(e) => {
                let entry = AuditEntry::new(
                    &actor,
                    "radio.permit_join",
                    &radio,
                    Outcome::Refused,
                    json!({"seconds": seconds, "error": e.to_string()}),
                );
                return self.refuse(entry, e, reply).await;
            }
        };
        // A window open for longer stays open that long: a second technician's shorter
        // pair on the same radio does not cut the first one's window short.
        let requested = seconds;
        let now = Instant::now();
        let seconds = match self.join_windows.get(&radio) {
            Some(open) if *open > now + Duration::from_secs(u64::from(seconds)) => {
                u32::try_from(open.duration_since(now).as_secs())
                    .unwrap_or(seconds)
                    .clamp(seconds, max)
            }
            _ => seconds,
        };
        // Durable record first, then the action.
        let until = SystemTime::now() + Duration::from_secs(seconds as u64);
        let accepted = self
            .audit(AuditEntry::new(
                &actor,
                "radio.permit_join",
                &radio,
                Outcome::Accepted,
                json!({"seconds": seconds, "requested_seconds": requested, "open_until": rfc3339(until)}),
            ))
            .await;
        if let Err(e) = accepted {
            let _ = reply.send(Err(e));
            return;
        }
        let (tx, rx) = oneshot::channel();
        permit.send(RadioCommand::PermitJoin { seconds, reply: tx });
        // Open already: a device may join as soon as the radio opens, before its answer.
        let window_until = Instant::now() + Duration::from_secs(seconds as u64);
        self.join_windows.insert(radio.clone(), window_until);
        self.unconfirmed_windows.insert(radio.clone(), window_until);
        let opened = PermitJoinAccepted {
            radio: radio.clone(),
            seconds,
            open_until: rfc3339(until),
        };
        let notices = self.notices.clone();
        let hub = self.myself.clone();
        let writer = self.writer.clone();
        let gw = self.gateway_id.clone();
        tokio::spawn(async move {
            let answer = radio_answer(
                &radio,
                rx,
                PERMIT_JOIN_TIMEOUT,
                "the driver stopped before opening the window",
            )
            .await;
            if let Err(e) = answer {
                if let Some(hub) = hub.upgrade() {
                    let _ = hub
                        .send(HubRequest::JoinWindowNotOpened {
                            radio: radio.clone(),
                            until: window_until,
                        })
                        .await;
                }
                let record = AuditEntry::new(
                    &actor,
                    "radio.permit_join",
                    &radio,
                    Outcome::Failed,
                    json!({"seconds": seconds, "error": e.to_string()}),
                );
                let audited = writer
                    .write(move |c| store::record_audit(c, &gw, &record).map(|_| ()))
                    .await
                    .map_err(HubError::from);
                let _ = reply.send(audited.and(Err(e)));
                return;
            }
            if let Some(hub) = hub.upgrade() {
                let _ = hub
                    .send(HubRequest::JoinWindowOpened {
                        radio: radio.clone(),
                        until: window_until,
                        seconds,
                    })
                    .await;
            }
            let _ = notices.send(Notice::PermitJoin {
                radio: radio.clone(),
                seconds,
            });
            let _ = reply.send(Ok(opened));
        });
    }

    /// The radio did not open the window the hub opened for it: the hub's closes too,
    /// unless another permit-join has opened it since.
    pub(in crate::hub) fn join_window_not_opened(&mut self, radio: &str, until: Instant) {
        if self.join_windows.get(radio) == Some(&until) {
            self.join_windows.remove(radio);
        }
        if self.unconfirmed_windows.get(radio) == Some(&until) {
            self.unconfirmed_windows.remove(radio);
        }
    }

    /// The radio opened the window: from now on it is open its whole length, however
    /// late the radio took the command (a driver busy with interviews at start-up).
    /// Joins it announced before this answer came were taken as in the window.
    pub(in crate::hub) fn join_window_opened(&mut self, radio: &str, until: Instant, seconds: u32) {
        if self.unconfirmed_windows.get(radio) == Some(&until) {
            self.unconfirmed_windows.remove(radio);
        }
        if let Some(open) = self.join_windows.get_mut(radio) {
            if *open == until {
                *open = (*open).max(Instant::now() + Duration::from_secs(u64::from(seconds)));
            }
        }
    }
}
