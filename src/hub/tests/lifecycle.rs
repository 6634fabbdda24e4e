//! A device's lifecycle: admission without a join window, back after decommissioning
//! when a join credential is required, quarantine when a firmware minimum changes, a
//! rule's command held for a sleeping device.

use super::*;

/// Decommissioning destroys a Zigbee device's install code. Re-admitted under a policy
/// that requires one, the answer says to register it again, and a join before that is
/// refused while the device stays pending (not decommissioned again), so registering
/// the code is all that is left to do.
#[tokio::test]
async fn a_readmitted_device_whose_code_was_destroyed_is_told_and_stays_pending() {
    let Some(protocol) = crate::radio::DRIVERS
        .iter()
        .map(|d| d.protocol)
        .find(|p| crate::radio::capabilities(*p).is_some_and(|c| c.join_credential.is_some()))
    else {
        return;
    };
    let mut rig = rig();
    let ev = |kind| {
        let mut e = event(ADDR, kind);
        e.protocol = protocol;
        e
    };
    let id = DeviceId::new(protocol, ADDR);
    rig.events(vec![ev(DeviceEventKind::Joined)]).await;
    rig.events(vec![ev(info("lumi.sensor_ht", "1.0"))]).await;
    rig.policy(json!({"version": 1, "admission": {"require_install_code": true}}))
        .await
        .unwrap();
    let hub = rig.hub.as_mut().unwrap();
    hub.decommission(&id, "tech").await.unwrap();
    let back = hub.readmit(&id, "tech").await.unwrap();
    assert_eq!(back.lifecycle.as_deref(), Some("pending"));
    assert!(
        back.note.contains("install code") && back.note.contains("install-code add"),
        "{}",
        back.note
    );
    let n = rig.events(vec![ev(DeviceEventKind::Joined)]).await;
    assert!(
        n.iter().any(
            |n| matches!(n, Notice::Denied { reason, .. } if reason.contains("no install code"))
        ),
        "{n:?}"
    );
    let r = rig.store.reader().unwrap();
    let d = registry::get(&r, &id).unwrap().unwrap();
    assert_eq!(
        d.lifecycle, "pending",
        "decommissioned again for a missing code"
    );
}

/// A policy that raises a firmware minimum quarantines the admitted devices below it
/// when it is applied, not when they next report their version; one that lowers it
/// releases them.
#[tokio::test]
async fn a_new_firmware_minimum_applies_to_known_devices_at_once() {
    let mut rig = rig();
    rig.events(vec![event(ADDR, DeviceEventKind::Joined)]).await;
    rig.events(vec![event(ADDR, info("plug-1", "1.9"))]).await;
    assert_eq!(rig.device(ADDR).lifecycle, "active");
    let mut notices = rig.hub.as_mut().unwrap().notices.subscribe();
    rig.policy(json!({"version": 2,
        "firmware": [{"match": {"model": "plug*"}, "min_version": "2.0"}]}))
        .await
        .unwrap();
    assert_eq!(rig.device(ADDR).lifecycle, "quarantined");
    assert!(matches!(notices.try_recv(), Ok(Notice::Quarantined { .. })));
    rig.policy(json!({"version": 3,
        "firmware": [{"match": {"model": "plug*"}, "min_version": "1.5"}]}))
        .await
        .unwrap();
    assert_eq!(rig.device(ADDR).lifecycle, "active");
    let r = rig.store.reader().unwrap();
    let actions: Vec<String> = store::audit::tail(&r, 100, None)
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "device.quarantine" || a.action == "device.release")
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, ["device.quarantine", "device.release"]);
}

/// A local rule's command for a sleeping (battery) device is held for its next
/// wake-up, as an API or MQTT request is, instead of sent to a device that cannot hear.
#[tokio::test]
async fn a_rule_s_command_for_a_sleeping_device_is_held() {
    let mut rig = rig();
    rig.events(vec![
        event("0x1", DeviceEventKind::Joined),
        event("0x2", DeviceEventKind::Joined),
    ])
    .await;
    // 0x2 runs on a battery: it sleeps.
    rig.events(vec![event("0x2", info("plug-1", "2.0"))]).await;
    let target = DeviceId::new(protocol(), "0x2");
    rig.policy(json!({"version": 1, "rules": [{"id": "leak", "when": {"device": DeviceId::new(protocol(), "0x1").to_string(), "reading": "water_leak", "op": "==", "value": true},
        "then": {"device": target.to_string(), "command": {"state": "off"}}}]}))
        .await
        .unwrap();
    rig.events(vec![event("0x1", reading("water_leak", Value::Bool(true)))])
        .await;
    let r = rig.store.reader().unwrap();
    let id = target.to_string();
    let held = rig
        .store
        .writer()
        .write(move |c| store::requests::take_for_device(c, &id))
        .await
        .unwrap();
    assert_eq!(
        held.len(),
        1,
        "{:?}",
        store::audit::tail(&r, 1000, None).unwrap()
    );
    assert_eq!(held[0].operation, "set");
    assert_eq!(held[0].actor, "rule:leak");
    let firing = store::audit::tail(&r, 1000, None)
        .unwrap()
        .into_iter()
        .find(|a| a.action == "rule.fire")
        .expect("the firing is audited");
    assert_eq!(firing.outcome, "accepted", "{firing:?}");
    assert_eq!(firing.details["held_request_id"], held[0].id);
}

/// A device described before it joined here (the nodes a Z-Wave controller already
/// had, interviewed at start) stays pending however often it is described again
/// outside a join window, and is admitted when it joins through one.
#[tokio::test]
async fn a_device_described_before_it_joined_waits_for_a_join_window() {
    let mut rig = rig();
    rig.hub.as_mut().unwrap().join_windows.clear();
    rig.events(vec![event("0x0031", info("lumi.sensor_ht", "1.0"))])
        .await;
    assert_eq!(rig.device("0x0031").lifecycle, "pending");
    rig.events(vec![event("0x0031", info("lumi.sensor_ht", "1.0"))])
        .await;
    assert_eq!(
        rig.device("0x0031").lifecycle,
        "pending",
        "admitted by being described again"
    );
    rig.hub
        .as_mut()
        .unwrap()
        .join_windows
        .insert("zb0".into(), Instant::now() + Duration::from_secs(60));
    rig.events(vec![event("0x0031", DeviceEventKind::Joined)])
        .await;
    assert_eq!(rig.device("0x0031").lifecycle, "active");
}

/// A device whose keys a technician gave (LoRaWAN ABP: it speaks without joining)
/// is admitted when described, window or not: the keys were its admission.
#[tokio::test]
async fn a_device_with_provisioned_keys_needs_no_join_window() {
    let mut rig = rig();
    rig.hub.as_mut().unwrap().join_windows.clear();
    let (protocol, kind) = crate::radio::DRIVERS
        .iter()
        .find_map(|d| {
            let caps = crate::radio::capabilities(d.protocol)?;
            (caps.max_join_window.is_some())
                .then(|| caps.credentials.first().map(|k| (d.protocol, *k)))
                .flatten()
        })
        .expect("a joining radio that takes device credentials");
    let key = crate::secrets::MasterKey::from_bytes(&[7u8; 32], "test".into());
    let id = DeviceId::new(protocol, "00000000000000a1");
    let owner = id.to_string();
    rig.store
        .writer()
        .write(move |c| {
            credentials::put(
                c,
                &key,
                &owner,
                kind.as_str(),
                &crate::secrets::Secret::new(b"{}".to_vec()),
            )
        })
        .await
        .unwrap();
    let mut ev = event(
        "00000000000000a1",
        reading("temperature", Value::Number(20.0)),
    );
    ev.protocol = protocol;
    let mut described = event("00000000000000a1", info("abp", "1.0"));
    described.protocol = protocol;
    rig.events(vec![ev]).await;
    rig.events(vec![described]).await;
    let r = rig.store.reader().unwrap();
    let d = registry::get(&r, &id).unwrap().unwrap();
    assert_eq!(d.lifecycle, "active", "{d:?}");
}
