//! Adopting a discovered device: radios whose devices are discovered rather than joined
//! (no join window: BLE hears anything in range) leave a new device `pending`, its
//! telemetry held in the gateway. A technician (or the cloud) adopts it here: with its
//! BTHome bindkey when it is encrypted (sealed as its `bthome_bindkey` credential and
//! handed to the radios), and it becomes `active` so its readings go upstream.

use super::*;

/// The credential an adoption may carry.
const KIND: CredentialKind = CredentialKind::BthomeBindkey;

impl Hub {
    /// Validates, then in one transaction stores the key (if any), activates the device,
    /// queues its `adopted` lifecycle message and audits it (never the key). The key then
    /// goes to every running radio that takes bindkeys, from a task that answers.
    pub(in crate::hub) async fn adopt(
        &mut self,
        device: DeviceId,
        bindkey: Option<Secret>,
        actor: String,
        reply: oneshot::Sender<Result<Adopted, HubError>>,
    ) {
        let entry = |outcome, details| {
            AuditEntry::new(&actor, "device.adopt", device.as_str(), outcome, details)
        };
        let caps = device.protocol().and_then(crate::radio::capabilities);
        let refusal = if caps.is_some_and(|c| c.max_join_window.is_some()) {
            Some(HubError::Invalid(format!(
                "`{device}` joins through a join window (`fieldgate pair`), it is not adopted: \
                 only discovered devices (BLE) are"
            )))
        } else if caps.is_none() {
            Some(HubError::UnknownDevice(device.to_string()))
        } else if bindkey.is_some() && !caps.is_some_and(|c| c.accepts(KIND)) {
            Some(HubError::Invalid(format!(
                "`{device}`: its radios take no {}",
                KIND.label()
            )))
        } else if bindkey.as_ref().is_some_and(|k| !is_bindkey(k)) {
            Some(HubError::Invalid(
                "a BTHome bindkey is 16 bytes: 32 hex digits".into(),
            ))
        } else if bindkey.is_some() && self.master_key.is_none() {
            Some(HubError::Store(format!(
                "no master key: a {} cannot be stored encrypted",
                KIND.label()
            )))
        } else {
            None
        };
        if let Some(e) = refusal {
            let details = json!({"error": e.to_string()});
            return self
                .refuse(entry(Outcome::Refused, details), e, reply)
                .await;
        }
        let gw = self.gateway_id.clone();
        let (id, key, sealed) = (device.clone(), self.master_key.clone(), bindkey.clone());
        let accepted = entry(
            Outcome::Accepted,
            json!({"lifecycle": "active", "bindkey": if bindkey.is_some() { "stored encrypted" } else { "none" }}),
        );
        let actor_s = actor.clone();
        let refused = move |e: &HubError| {
            AuditEntry::new(
                &actor_s,
                "device.adopt",
                id.as_str(),
                Outcome::Refused,
                json!({"error": e.to_string()}),
            )
        };
        let id = device.clone();
        let done = self
            .writer
            .write(move |c| {
                let refusal = match registry::get(c, &id)? {
                    None => Some(HubError::UnknownDevice(id.to_string())),
                    // Only BTHome advertisements are encrypted with a bindkey: a key given
                    // for another format would be stored and never used.
                    Some(d)
                        if sealed.is_some()
                            && d.model.as_deref().is_some_and(|m| m != "bthome") =>
                    {
                        Some(HubError::Invalid(format!(
                            "`{id}` sends {} advertisements, which are not encrypted: a bindkey is for BTHome devices; adopt it without one",
                            crate::output::one_line(d.model.as_deref().unwrap_or_default())
                        )))
                    }
                    Some(d) if sealed.is_some() && plaintext_bthome(&d) => {
                        Some(HubError::Invalid(format!(
                            "`{id}` sends unencrypted BTHome advertisements: with a bindkey each of them would be refused; adopt it without one"
                        )))
                    }
                    Some(d) if d.lifecycle == Lifecycle::Pending.as_str() => None,
                    Some(d) if d.lifecycle == Lifecycle::Decommissioned.as_str() => {
                        Some(HubError::Invalid(format!(
                            "device `{id}` is decommissioned: re-admit it first (`fieldgate readmit {id}`)"
                        )))
                    }
                    Some(d) => Some(HubError::Invalid(format!(
                        "device `{id}` is already {}: only a pending device is adopted",
                        d.lifecycle
                    ))),
                };
                if let Some(e) = refusal {
                    store::record_audit(c, &gw, &refused(&e))?;
                    return Ok(Err(e));
                }
                if let (Some(key), Some(secret)) = (&key, &sealed) {
                    credentials::put(c, key, id.as_str(), KIND.as_str(), secret)?;
                }
                registry::set_lifecycle(c, &id, Lifecycle::Active)?;
                lifecycle_msg(
                    c,
                    &gw,
                    &id,
                    "adopted",
                    json!({"lifecycle": "active", "bindkey": sealed.is_some()}),
                    SystemTime::now(),
                )?;
                release_held(c, &gw, &id, SystemTime::now())?;
                store::record_audit(c, &gw, &accepted)?;
                Ok(Ok(()))
            })
            .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = reply.send(Err(e));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        }
        let Some(secret) = bindkey else {
            let _ = reply.send(Ok(Adopted::new(&device, false, Vec::new())));
            return;
        };
        let pushed = self.push_credential(
            &device,
            DeviceCredential { kind: KIND, secret },
            "bindkey installed",
            "loaded at its next start",
        );
        tokio::spawn(async move {
            let radios = pushed.await;
            let _ = reply.send(Ok(Adopted::new(&device, true, radios)));
        });
    }
}

/// A BTHome device whose advertisements were heard and are not encrypted (the BLE
/// radio lists `encrypted` among the capabilities of one whose are).
pub(super) fn plaintext_bthome(d: &registry::Device) -> bool {
    d.model.as_deref() == Some("bthome")
        && !d.capabilities.is_empty()
        && !d.capabilities.iter().any(|c| c == "encrypted")
}

/// A bindkey as a technician gives it: 32 hex digits.
pub(super) fn is_bindkey(k: &Secret) -> bool {
    let k = k.expose();
    k.len() == 32 && k.iter().all(u8::is_ascii_hexdigit)
}

impl Adopted {
    fn new(device: &DeviceId, bindkey: bool, radios: Vec<InstallCodePush>) -> Adopted {
        Adopted {
            device: device.to_string(),
            lifecycle: "active",
            bindkey: if bindkey { "stored encrypted" } else { "none" },
            radios,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::store::{Store, WriterOptions};

    const KEY: &[u8] = b"231d39c1d7cc1ab1aee224cd096db932";

    fn heard(protocol: Protocol, addr: &str) -> DeviceEvent {
        DeviceEvent {
            radio: "r0".into(),
            protocol,
            native_address: addr.into(),
            received_at: SystemTime::now(),
            kind: DeviceEventKind::Readings(vec![Reading {
                name: "temperature".into(),
                value: Value::Number(21.5),
                unit: None,
            }]),
            link: None,
        }
    }

    async fn adopt(hub: &mut Hub, id: &DeviceId, key: Option<&[u8]>) -> Result<Adopted, HubError> {
        let (tx, rx) = oneshot::channel();
        let key = key.map(|k| Secret::new(k.to_vec()));
        hub.adopt(id.clone(), key, "local:uid=0".into(), tx).await;
        rx.await.unwrap()
    }

    #[tokio::test]
    async fn only_pending_discovered_devices_are_adopted_and_the_key_is_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
        let (hub, _, _) = Hub::new("gw", store.writer(), &[]);
        let mut hub = hub.with_master_key(Arc::new(MasterKey::from_bytes(
            &[7; 32],
            dir.path().join("key"),
        )));
        let ble = DeviceId::new(Protocol::Ble, "54:48:e6:8f:80:a5");
        hub.on_events(vec![heard(Protocol::Ble, ble.native_address())])
            .await;
        let r = store.reader().unwrap();
        assert_eq!(
            registry::get(&r, &ble).unwrap().unwrap().lifecycle,
            "pending"
        );

        let e = adopt(&mut hub, &ble, Some(b"0011")).await.unwrap_err();
        assert!(e.to_string().contains("32 hex digits"), "{e}");
        let a = adopt(&mut hub, &ble, Some(KEY)).await.unwrap();
        assert_eq!((a.lifecycle, a.bindkey), ("active", "stored encrypted"));
        assert_eq!(
            registry::get(&r, &ble).unwrap().unwrap().lifecycle,
            "active"
        );
        assert!(credentials::exists(&r, ble.as_str(), KIND.as_str()).unwrap());
        let e = adopt(&mut hub, &ble, None).await.unwrap_err();
        assert!(e.to_string().contains("already active"), "{e}");

        let unknown = DeviceId::new(Protocol::Ble, "11:22:33:44:55:66");
        let e = adopt(&mut hub, &unknown, None).await.unwrap_err();
        assert_eq!(e.code(), "unknown_device");
        let zigbee = DeviceId::new(Protocol::Zigbee, "0x00124b0001abcdef");
        let e = adopt(&mut hub, &zigbee, None).await.unwrap_err();
        assert!(e.to_string().contains("join window"), "{e}");

        let audit = store::audit::tail(&r, 100, None).unwrap();
        let adopts: Vec<_> = audit
            .iter()
            .filter(|a| a.action == "device.adopt")
            .collect();
        assert_eq!(adopts.len(), 5);
        assert_eq!(adopts.iter().filter(|a| a.outcome == "accepted").count(), 1);
        let key = std::str::from_utf8(KEY).unwrap();
        assert!(adopts.iter().all(|a| !a.details.to_string().contains(key)));
        drop(hub);
    }

    #[test]
    fn a_bindkey_is_32_hex_digits() {
        assert!(is_bindkey(&Secret::new(
            b"231d39c1d7cc1ab1aee224cd096db932".to_vec()
        )));
        assert!(!is_bindkey(&Secret::new(b"231d39c1".to_vec())));
        assert!(!is_bindkey(&Secret::new(
            b"231d39c1d7cc1ab1aee224cd096db93z".to_vec()
        )));
        assert!(!is_bindkey(&Secret::new(vec![0u8; 16])));
    }
}
