//! Commands the hub hands to radios without waiting on them: a stuck driver's full
//! queue, and a join window the radio refuses.

use super::*;

/// A radio whose driver is stuck (its queue full, nobody reading) answers
/// `radio_busy` at once, and the hub keeps serving the other radio: it never
/// waits on a radio's queue.
#[tokio::test]
async fn a_full_radio_queue_answers_radio_busy_and_other_radios_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
    let radio = |name: &str, depth: usize| {
        let (handle, rx, state_tx) =
            radio_handle(name, crate::radio::capabilities(protocol()), depth);
        // Keep the state sender alive for the test's length.
        std::mem::forget(state_tx);
        (handle, rx)
    };
    let (stuck, stuck_rx) = radio("stuck", 1);
    let (fine, mut fine_rx) = radio("fine", 4);
    let (mut hub, _, _) = Hub::new("gw", store.writer(), &[stuck, fine]);

    // Queued (no answer while nobody reads the queue).
    let queued = permit_join(&mut hub, "stuck", 30).await;
    let started = Instant::now();
    let busy = permit_join(&mut hub, "stuck", 30)
        .await
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(busy.code(), "radio_busy", "{busy}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let fine = permit_join(&mut hub, "fine", 30).await;
    match fine_rx.try_recv() {
        Ok(RadioCommand::PermitJoin { seconds: 30, reply }) => reply.send(Ok(())).unwrap(),
        other => panic!("{other:?}"),
    }
    assert_eq!(fine.await.unwrap().unwrap().seconds, 30);
    // The stuck driver goes away: its queued permit-join fails.
    drop(stuck_rx);
    let stopped = queued.await.unwrap().unwrap_err();
    assert_eq!(stopped.code(), "radio_unavailable", "{stopped}");

    // The refusal is in the audit log like any other.
    let r = store.reader().unwrap();
    let refused: i64 = r
        .query_row(
            "SELECT count(*) FROM audit WHERE action = 'radio.permit_join' AND outcome = 'refused'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(refused, 1);
    drop(hub);
}

/// A radio that refuses to open its join window (a coordinator answering the
/// permit-join with an error) fails the request: the caller is told, the refusal is
/// in the audit log after the acceptance, and the hub's own window closes again.
#[tokio::test]
async fn a_join_window_the_radio_refuses_fails_the_request_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
    let (handle, mut rx, state_tx) = radio_handle("zb0", crate::radio::capabilities(protocol()), 4);
    let (hub, hub_handle, requests) = Hub::new("gw", store.writer(), &[handle]);
    let (shutdown, sd_rx) = watch::channel(false);
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let task = tokio::spawn(hub.run(events, requests, sd_rx, None));
    let radio = tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if let RadioCommand::PermitJoin { reply, .. } = cmd {
                let _ = reply.send(Err(RadioError::Refused(
                    "the coordinator did not open the join window: status 0xc2".into(),
                )));
            }
        }
    });
    let err = hub_handle
        .permit_join("zb0".into(), 30, "tech".into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "radio_unavailable", "{err}");
    assert!(err.to_string().contains("status 0xc2"), "{err}");

    let r = store.reader().unwrap();
    let outcomes: Vec<String> = r
        .prepare("SELECT outcome FROM audit WHERE action = 'radio.permit_join' ORDER BY seq")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(outcomes, ["accepted", "failed"]);
    // The hub's window closed again: a join now is refused as outside a window.
    let mut notices = hub_handle.subscribe();
    events_tx
        .send(event(ADDR, DeviceEventKind::Joined))
        .await
        .unwrap();
    let denied = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match notices.recv().await.unwrap() {
                Notice::Denied { reason, .. } => break reason,
                Notice::PermitJoin { .. } => panic!("a window the radio refused was announced"),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(denied.contains("outside a join window"), "{denied}");
    shutdown.send(true).unwrap();
    task.await.unwrap();
    drop(state_tx);
    radio.abort();
}

/// A second key rotation asked for while one runs is refused up front, audited as
/// refused (not as started, then failed), and the next one after the first ended goes
/// through.
#[tokio::test]
async fn a_second_key_rotation_while_one_runs_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
    let caps = crate::radio::capabilities(protocol());
    assert!(caps.is_some_and(|c| c.key_rotation.is_some()));
    let (handle, mut rx, state_tx) = radio_handle("zb0", caps, 4);
    let (hub, hub_handle, requests) = Hub::new("gw", store.writer(), &[handle]);
    let (shutdown, sd_rx) = watch::channel(false);
    let (_events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let task = tokio::spawn(hub.run(events, requests, sd_rx, None));
    let rotate = || {
        let h = hub_handle.clone();
        tokio::spawn(async move { h.rotate_network_key("zb0".into(), "tech".into()).await })
    };
    // The rotation's reply, past whatever else the hub tells the radio.
    async fn rotation(
        rx: &mut mpsc::Receiver<RadioCommand>,
    ) -> oneshot::Sender<Result<KeyRotated, RadioError>> {
        loop {
            match rx.recv().await {
                Some(RadioCommand::RotateNetworkKey { reply }) => return reply,
                Some(_) => {}
                None => panic!("the radio's queue closed"),
            }
        }
    }
    let first = rotate();
    let reply = rotation(&mut rx).await;
    let second = rotate().await.unwrap().unwrap_err();
    assert_eq!(second.code(), "radio_unavailable", "{second}");
    assert!(
        second.to_string().contains("already in progress"),
        "{second}"
    );
    reply
        .send(Ok(KeyRotated {
            previous_key_seq: 0,
            key_seq: 1,
            switch_delay_ms: 10,
            switched_at: crate::model::now_rfc3339(),
        }))
        .unwrap();
    assert_eq!(first.await.unwrap().unwrap().rotation.key_seq, 1);
    // Ended: the next one is taken.
    let third = rotate();
    let _ = rotation(&mut rx)
        .await
        .send(Err(RadioError::Refused("no".into())));
    assert!(third.await.unwrap().is_err());

    let r = store.reader().unwrap();
    let records: Vec<(String, String)> = r
        .prepare(
            "SELECT outcome, coalesce(json_extract(details, '$.phase'), '') FROM audit \
             WHERE action = 'radio.rotate_network_key' ORDER BY seq",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let records: Vec<(&str, &str)> = records
        .iter()
        .map(|(o, p)| (o.as_str(), p.as_str()))
        .collect();
    assert_eq!(
        records,
        [
            ("accepted", "started"),
            ("refused", ""),
            ("accepted", "completed"),
            ("accepted", "started"),
            ("failed", "failed"),
        ]
    );
    shutdown.send(true).unwrap();
    task.await.unwrap();
    drop(state_tx);
}

/// A flood of joins outside a join window asks every device to leave, as the radio
/// takes commands, not only as many as its queue holds when the burst commits; a
/// device that tries again meanwhile is asked once.
#[tokio::test]
async fn every_device_refused_in_a_flood_is_asked_to_leave_as_the_radio_has_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
    let (handle, mut rx, _state) = radio_handle("zb0", crate::radio::capabilities(protocol()), 4);
    let (mut hub, _, _) = Hub::new("gw", store.writer(), &[handle]);
    let addr = |i: usize| format!("0x00124b00{i:08x}");
    let flood: Vec<DeviceEvent> = (0..30)
        .map(|i| event(&addr(i), DeviceEventKind::Joined))
        .collect();
    hub.on_events(flood).await;
    // Only the queue's depth went out at once.
    let mut asked = Vec::new();
    let take = |rx: &mut mpsc::Receiver<RadioCommand>, asked: &mut Vec<String>| {
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                RadioCommand::Remove { native_address } => asked.push(native_address),
                other => panic!("{other:?}"),
            }
        }
    };
    take(&mut rx, &mut asked);
    assert_eq!(asked.len(), 4, "{asked:?}");
    // One of the waiting devices tries again: still one request for it.
    hub.on_events(vec![event(&addr(20), DeviceEventKind::Joined)])
        .await;
    // The driver takes commands; the rest follow, in order.
    for _ in 0..20 {
        take(&mut rx, &mut asked);
        hub.send_leaves();
    }
    take(&mut rx, &mut asked);
    assert_eq!(asked, (0..30).map(addr).collect::<Vec<_>>());
    assert!(hub.leaves.is_empty());
}

/// A second permit-join with a shorter time on a radio whose window is open for
/// longer (two technicians pairing) keeps the longer window: the radio is told the
/// time left, and the answer says it.
#[tokio::test]
async fn a_shorter_second_join_window_does_not_cut_the_first_one_short() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), WriterOptions::default()).unwrap();
    let (handle, mut rx, _state) = radio_handle("zb0", crate::radio::capabilities(protocol()), 4);
    let (mut hub, _, _) = Hub::new("gw", store.writer(), &[handle]);
    let open = |hub_rx: &mut mpsc::Receiver<RadioCommand>| match hub_rx.try_recv() {
        Ok(RadioCommand::PermitJoin { seconds, reply }) => {
            reply.send(Ok(())).unwrap();
            seconds
        }
        other => panic!("{other:?}"),
    };
    let first = permit_join(&mut hub, "zb0", 200).await;
    assert_eq!(open(&mut rx), 200);
    assert_eq!(first.await.unwrap().unwrap().seconds, 200);
    let second = permit_join(&mut hub, "zb0", 30).await;
    let told = open(&mut rx);
    assert!((198..=200).contains(&told), "the radio was told {told} s");
    assert_eq!(second.await.unwrap().unwrap().seconds, told);
    // A longer one still extends it.
    let third = permit_join(&mut hub, "zb0", 250).await;
    assert_eq!(open(&mut rx), 250);
    assert_eq!(third.await.unwrap().unwrap().seconds, 250);
    drop(hub);
}
