//! Configuration parameters and the radio's capabilities: refused by the hub, with
//! nothing sent, where the radio's devices cannot take them.

use super::*;

/// A hub with one running radio, `zb0` with these capabilities, and a device joined
/// on it; the radio's command queue is `rx`.
struct OneRadio {
    hub: Hub,
    rx: mpsc::Receiver<RadioCommand>,
    id: DeviceId,
    _state: watch::Sender<RadioState>,
    _store: Store,
    _dir: tempfile::TempDir,
}

async fn one_radio_with_a_device(caps: Option<&'static crate::radio::Capabilities>) -> OneRadio {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
    let (handle, rx, state_tx) = radio_handle("zb0", caps, 4);
    let (mut hub, _, _) = Hub::new("gw", store.writer(), &[handle]);
    hub.join_windows
        .insert("zb0".into(), Instant::now() + Duration::from_secs(60));
    hub.on_events(vec![event(ADDR, DeviceEventKind::Joined)])
        .await;
    OneRadio {
        hub,
        rx,
        id: DeviceId::new(protocol(), ADDR),
        _state: state_tx,
        _store: store,
        _dir: dir,
    }
}

/// A configuration parameter goes only to a radio whose capabilities say its devices have
/// them: elsewhere `not_supported`, decided by the hub, with nothing sent; a parameter that
/// does not fit its size is `invalid_request`. Removal asks the technician to act only
/// where the capabilities say the device must.
#[tokio::test]
async fn configuration_parameters_are_refused_by_capability() {
    let caps = crate::radio::capabilities(protocol());
    assert!(caps.is_some_and(|c| c.configuration.is_none()), "{caps:?}");
    // Kept whole: the store must outlive the hub's writer handles.
    let mut r = one_radio_with_a_device(caps).await;
    let (hub, rx, id) = (&mut r.hub, &mut r.rx, r.id.clone());
    let configure = DeviceCommand::Configure {
        parameter: 1,
        size: 1,
        value: 5,
    };
    let e = hub.command(&id, configure, "test").await.unwrap_err();
    assert_eq!(e.code(), "not_supported", "{e}");
    let too_big = DeviceCommand::Configure {
        parameter: 1,
        size: 1,
        value: 300,
    };
    let e = hub.command(&id, too_big, "test").await.unwrap_err();
    assert_eq!(e.code(), "invalid_request", "{e}");
    assert!(rx.try_recv().is_err(), "nothing reached the radio");
    hub.command(&id, DeviceCommand::On, "test").await.unwrap();
    assert!(matches!(rx.try_recv(), Ok(RadioCommand::Set { .. })));
    // Its devices leave without taking part: no "press the button" for the technician.
    let gone = hub.decommission(&id, "test").await.unwrap();
    assert_eq!(gone.radio_removal, "requested");
    assert_eq!(gone.device_action_within_s, None);
    assert!(matches!(rx.try_recv(), Ok(RadioCommand::Remove { .. })));
}

/// A parameter numbered past what the radio's devices can have (Z-Wave: one byte) is
/// `invalid_request` at once, not accepted and failed later by the radio.
#[tokio::test]
async fn a_configuration_parameter_past_the_radios_numbering_is_refused_at_once() {
    let caps = crate::radio::capabilities(protocol()).map(|c| {
        &*Box::leak(Box::new(crate::radio::Capabilities {
            configuration: Some(255),
            ..c.clone()
        }))
    });
    // Kept whole: the store must outlive the hub's writer handles.
    let mut r = one_radio_with_a_device(caps).await;
    let (hub, rx, id) = (&mut r.hub, &mut r.rx, r.id.clone());
    let configure = |parameter| DeviceCommand::Configure {
        parameter,
        size: 1,
        value: 1,
    };
    let e = hub.command(&id, configure(256), "test").await.unwrap_err();
    assert_eq!(e.code(), "invalid_request", "{e}");
    assert!(e.to_string().contains("0-255"), "{e}");
    assert!(rx.try_recv().is_err(), "nothing reached the radio");
    hub.command(&id, configure(255), "test").await.unwrap();
    assert!(matches!(rx.try_recv(), Ok(RadioCommand::Set { .. })));
}

/// A radio whose devices are read but take no `set` (LoRaWAN): a set is refused
/// `not_supported` at once, not held or sent and failed at the next uplink.
#[tokio::test]
async fn a_set_for_a_radio_whose_devices_take_none_is_refused_at_once() {
    let caps = crate::radio::capabilities(protocol()).map(|c| {
        &*Box::leak(Box::new(crate::radio::Capabilities {
            sets: false,
            ..c.clone()
        }))
    });
    let mut r = one_radio_with_a_device(caps).await;
    let (hub, rx, id) = (&mut r.hub, &mut r.rx, r.id.clone());
    let e = hub
        .command(&id, DeviceCommand::On, "test")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "not_supported", "{e}");
    assert!(e.to_string().contains("take no set commands"), "{e}");
    assert!(rx.try_recv().is_err(), "nothing reached the radio");
}
