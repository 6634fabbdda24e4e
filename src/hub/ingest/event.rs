//! One device event applied inside the ingest transaction: joins, interviews,
//! readings, leaves and command results, with admission and health decided here.

use super::*;

pub(in crate::hub) fn apply_event(
    c: &Connection,
    ctx: &EventContext,
    ev: &DeviceEvent,
) -> Result<Applied, StoreError> {
    let gw: &str = &ctx.gateway_id;
    let id = ev.device_id();
    let ts = rfc3339(ev.received_at);
    let at = ev.received_at;
    let radio = ev.radio.as_str();
    let mut out = Applied::default();
    if !matches!(
        ev.kind,
        DeviceEventKind::CommandResult { .. } | DeviceEventKind::Refused { .. }
    ) {
        out.spoke = Some(id.to_string());
    }
    // The common case first: a reading from a known device is one UPDATE.
    if let DeviceEventKind::Readings(readings) = &ev.kind {
        if let Some((state, health)) = registry::merge_readings(c, &id, readings, &ts)? {
            let held = readings_recorded(
                c,
                TelemetrySink::Now(&mut outbox::SeqCursor::default()),
                ctx,
                &id,
                readings,
                &mut parse_health(&health),
                at,
                &mut out,
            )?;
            if !held {
                out.state = Some((id.clone(), state, at));
            }
            return Ok(out);
        }
    }
    let existing = registry::get(c, &id)?;
    let remove = |out: &mut Applied| {
        out.radio_actions.push((
            radio.to_string(),
            RadioCommand::Remove {
                native_address: ev.native_address.clone(),
            },
        ))
    };
    match &ev.kind {
        DeviceEventKind::Joined => {
            let known = existing
                .as_ref()
                .is_some_and(|d| d.lifecycle != Lifecycle::Decommissioned.as_str());
            let facts = DeviceFacts {
                protocol: Some(ev.protocol),
                address: &ev.native_address,
                manufacturer: existing.as_ref().and_then(|d| d.manufacturer.as_deref()),
                model: existing.as_ref().and_then(|d| d.model.as_deref()),
                capabilities: existing.as_ref().map_or(&[], |d| &d.capabilities),
            };
            let retired = existing
                .as_ref()
                .is_some_and(|d| d.lifecycle == Lifecycle::Decommissioned.as_str());
            // A pending device (re-admitted after decommissioning destroyed its
            // credentials) needs its join credential as a new one does.
            let pending = existing
                .as_ref()
                .is_some_and(|d| d.lifecycle == Lifecycle::Pending.as_str());
            let mut no_credential = false;
            let mut by_policy = false;
            let denial = if store::blocks::is_blocked(c, id.as_str())? {
                Some(format!(
                    "blocked: re-admit it first (`fieldgate readmit {id}`)"
                ))
            } else if retired {
                // Decommissioning holds: a removed device that tries again is refused
                // and told to leave, window or not, until a technician re-admits it.
                Some(format!(
                    "decommissioned: re-admit it first (`fieldgate readmit {id}`)"
                ))
            } else if !known && !ctx.open_windows.contains(radio) {
                Some("joined outside a join window".to_string())
            } else if let Some(kind) = ((!known || pending)
                && ctx.policy.policy.admission.require_install_code)
                .then(|| crate::radio::capabilities(ev.protocol).and_then(|c| c.join_credential))
                .flatten()
                .filter(|kind| !credentials::exists(c, id.as_str(), kind.as_str()).unwrap_or(false))
            {
                no_credential = true;
                Some(format!(
                    "no {} registered for this device (the policy requires one to join)",
                    kind.label()
                ))
            } else {
                match ctx.policy.admit(&facts) {
                    Admit::Deny { reason } => {
                        by_policy = true;
                        Some(reason)
                    }
                    Admit::Admit | Admit::Undecided => None,
                }
            };
            if let Some(reason) = denial {
                // Refused for a missing credential, a pending device stays pending: it
                // may join once one is registered.
                if known && !no_credential {
                    retire(c, gw, &id, "denied", json!({"reason": reason}))?;
                } else {
                    lifecycle_msg(
                        c,
                        gw,
                        &id,
                        "denied",
                        json!({"radio": radio, "reason": reason}),
                        at,
                    )?;
                }
                store::record_audit(
                    c,
                    gw,
                    &AuditEntry::new(
                        format!("radio:{radio}"),
                        "device.join",
                        id.as_str(),
                        Outcome::Refused,
                        json!({"native_address": ev.native_address, "reason": reason}),
                    ),
                )?;
                if by_policy {
                    // The policy's decision, under its own name (as its admissions are).
                    admission_record(c, gw, &id, Outcome::Refused, json!({"reason": reason}))?;
                }
                remove(&mut out);
                out.notices.push(Notice::Denied {
                    device: id.to_string(),
                    reason,
                });
                return Ok(out);
            }
            let (device, is_new) = registry::upsert_joined(
                c,
                &id,
                ev.protocol.as_str(),
                radio,
                &ev.native_address,
                &ts,
            )?;
            lifecycle_msg(
                c,
                gw,
                &id,
                "joined",
                json!({"radio": radio, "new": is_new, "lifecycle": device.lifecycle}),
                at,
            )?;
            availability_msg(c, gw, &id, true, at)?;
            registry::set_health_flag(c, &id, "offline", false)?;
            store::record_audit(
                c,
                gw,
                &AuditEntry::new(
                    format!("radio:{radio}"),
                    "device.join",
                    id.as_str(),
                    Outcome::Accepted,
                    json!({"native_address": ev.native_address, "new": is_new}),
                ),
            )?;
            out.notices.push(Notice::DeviceJoined {
                device: id.to_string(),
                radio: radio.to_string(),
                new: is_new,
            });
            // Described before it joined (a node the controller already had): it was
            // waiting for this join, and the policy decides now on what its interview
            // said.
            if !is_new
                && device.lifecycle == Lifecycle::Pending.as_str()
                && !discovered(&id)
                && (device.manufacturer.is_some() || device.model.is_some())
                && admit(c, ctx, ev, &device, &mut out, at)?
            {
                apply_compliance(c, ctx, &id, &mut out, at)?;
            }
        }
        DeviceEventKind::Interviewed(info) => {
            let (lifecycle, fresh) = match existing {
                Some(d) => (d.lifecycle, false),
                // Described before it joined here or spoke: the nodes a Z-Wave
                // controller already had, once interviewed at start. Registered as
                // pending with what it is, as a device first heard through its
                // readings is, so the description is not lost (and the policy sees
                // it); it is admitted when it joins through a join window. Not for a
                // description that does not say what the device is (only how it is
                // reached), nor for a radio that discovers devices: it registers them
                // by their readings, which come first, so its unknown ones were refused.
                None if !discovered(&id)
                    && (info.manufacturer.is_some() || info.model.is_some()) =>
                {
                    match discover(c, ctx, ev, &id, Some(info), &mut out)? {
                        Some(d) => (d.lifecycle, true),
                        None => return Ok(out),
                    }
                }
                None => return Ok(out),
            };
            if lifecycle == Lifecycle::Decommissioned.as_str() {
                remove(&mut out);
                return Ok(out);
            }
            let fw_change = registry::apply_info(c, &id, info, &ts)?;
            let d = registry::get(c, &id)?
                .ok_or_else(|| StoreError::Invalid("device vanished".into()))?;
            lifecycle_msg(
                c,
                gw,
                &id,
                "interviewed",
                serde_json::to_value(info).unwrap_or_default(),
                at,
            )?;
            if let Some(Some(previous)) = &fw_change {
                lifecycle_msg(
                    c,
                    gw,
                    &id,
                    "firmware_changed",
                    json!({"from": previous, "to": info.firmware}),
                    at,
                )?;
            }
            out.notices.push(Notice::DeviceInterviewed {
                device: id.to_string(),
                manufacturer: info.manufacturer.clone(),
                model: info.model.clone(),
            });
            if fresh {
                // Admitted when it joins through a join window, not by being described.
                return Ok(out);
            }
            // Heard or described before it joined here (a node the controller already
            // had, interviewed again): it waits for a join window, where it is
            // admitted as it joins.
            // A device whose keys a technician gave (LoRaWAN ABP) was let in by that.
            if d.lifecycle == Lifecycle::Pending.as_str()
                && !discovered(&id)
                && !ctx.open_windows.contains(radio)
                && !provisioned(c, ev.protocol, &id)?
                && !store::audit::recorded(c, "device.join", id.as_str(), "accepted")?
            {
                return Ok(out);
            }
            if !admit(c, ctx, ev, &d, &mut out, at)? {
                return Ok(out);
            }
            apply_compliance(c, ctx, &id, &mut out, at)?;
        }
        DeviceEventKind::Readings(readings) => {
            let d = match existing {
                Some(d) => d,
                // A device that reports without having joined here (BLE beacons,
                // a registry restored from an older backup): admitted as pending
                // unless the policy denies it, so its data is not lost.
                None => match discover(c, ctx, ev, &id, None, &mut out)? {
                    Some(d) => d,
                    None => return Ok(out),
                },
            };
            if d.lifecycle == Lifecycle::Decommissioned.as_str() {
                // Still on the network: it slept through its leave request (a sleeping
                // device hears only right after it speaks) or ignored it. It is awake
                // now, so it is told again; its readings are not recorded.
                remove(&mut out);
                return Ok(out);
            }
            if let Some((state, health)) = registry::merge_readings(c, &id, readings, &ts)? {
                let held = readings_recorded(
                    c,
                    TelemetrySink::Now(&mut outbox::SeqCursor::default()),
                    ctx,
                    &id,
                    readings,
                    &mut parse_health(&health),
                    at,
                    &mut out,
                )?;
                if !held {
                    out.state = Some((id.clone(), state, at));
                }
            }
        }
        DeviceEventKind::Left => {
            lifecycle_msg(c, gw, &id, "left", json!({}), at)?;
            availability_msg(c, gw, &id, false, at)?;
            store::record_audit(
                c,
                gw,
                &AuditEntry::new(
                    format!("radio:{radio}"),
                    "device.leave",
                    id.as_str(),
                    Outcome::Accepted,
                    json!({}),
                ),
            )?;
            out.notices.push(Notice::DeviceLeft {
                device: id.to_string(),
            });
        }
        DeviceEventKind::Refused {
            what,
            reason,
            detail,
        } => {
            // A join the radio refused itself (it holds no keys for the device any more,
            // as a LoRaWAN gateway after a decommission): a denied join like the ones
            // refused here, with the reason the registry gives when it has one.
            let join = what == "device.join";
            let reason = match &existing {
                _ if !join => reason.clone(),
                _ if store::blocks::is_blocked(c, id.as_str())? => {
                    format!("blocked: re-admit it first (`fieldgate readmit {id}`)")
                }
                Some(d) if d.lifecycle == Lifecycle::Decommissioned.as_str() => {
                    format!("decommissioned: re-admit it first (`fieldgate readmit {id}`)")
                }
                _ => reason.clone(),
            };
            store::record_audit(
                c,
                gw,
                &AuditEntry::new(
                    format!("radio:{radio}"),
                    what.as_str(),
                    id.as_str(),
                    Outcome::Refused,
                    json!({"native_address": ev.native_address, "reason": reason, "detail": detail}),
                ),
            )?;
            if join {
                out.notices.push(Notice::Denied {
                    device: id.to_string(),
                    reason,
                });
            }
        }
        DeviceEventKind::CommandResult {
            command_id,
            ok,
            detail,
        } => {
            lifecycle_msg(
                c,
                gw,
                &id,
                "command_result",
                json!({"command_id": command_id, "ok": ok, "detail": detail}),
                at,
            )?;
            let state = existing.map(|d| d.last_state).unwrap_or_default();
            if let Some(req) = requests::take_by_command_id(c, command_id)? {
                let (status, error) = if *ok {
                    ("delivered", None)
                } else {
                    ("error", Some(("not_delivered", detail.clone())))
                };
                let mut extra = json!({"command_id": command_id, "detail": detail});
                if req.operation == "get" {
                    extra["state"] = state_subset(&state, &requested_attributes(&req));
                }
                finish_held(c, gw, &req, status, extra, error)?;
            }
            out.result = Some((command_id.clone(), *ok, detail.clone(), state));
        }
    }
    Ok(out)
}

/// The policy's decision on an interviewed device: denied (retired, told to leave;
/// `false`: nothing more to do), or admitted when pending (active, its held messages
/// released), or left as it is.
fn admit(
    c: &Connection,
    ctx: &EventContext,
    ev: &DeviceEvent,
    d: &registry::Device,
    out: &mut Applied,
    at: SystemTime,
) -> Result<bool, StoreError> {
    let gw: &str = &ctx.gateway_id;
    let id = ev.device_id();
    let facts = facts_of(d);
    match ctx.policy.admit(&facts) {
        Admit::Deny { reason } => {
            retire(c, gw, &id, "denied", json!({"reason": reason}))?;
            admission_record(
                c,
                gw,
                &id,
                Outcome::Refused,
                json!({"reason": reason, "manufacturer": d.manufacturer, "model": d.model}),
            )?;
            out.denied(&ev.radio, &ev.native_address, &id, reason);
            return Ok(false);
        }
        Admit::Undecided => {}
        Admit::Admit => {
            // Devices that are discovered rather than joined (BLE: anything in
            // range) are not admitted by an open policy: they stay pending until
            // a technician adopts them or an allow rule names them.
            let named = || {
                ctx.policy
                    .policy
                    .admission
                    .allow
                    .iter()
                    .any(|m| m.matches(&facts) == Some(true))
            };
            if d.lifecycle == Lifecycle::Pending.as_str() && (!discovered(&id) || named()) {
                admit_pending(c, gw, d, at)?;
            }
        }
    }
    Ok(true)
}

/// Whether a technician provisioned one of the device's credentials (its keys).
fn provisioned(
    c: &Connection,
    protocol: crate::config::Protocol,
    id: &DeviceId,
) -> Result<bool, StoreError> {
    for kind in crate::radio::capabilities(protocol).map_or(&[][..], |caps| caps.credentials) {
        if credentials::exists(c, id.as_str(), kind.as_str())? {
            return Ok(true);
        }
    }
    Ok(false)
}
