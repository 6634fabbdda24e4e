//! `fieldgate demo`: the daemon on emulated radios with a throwaway state
//! directory, narrating what happens so a newcomer sees the whole pipeline with
//! no hardware and no broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{Config, Protocol};
use crate::daemon::{self, Daemon};
use crate::hub::Notice;
use crate::model::RadioState;
use crate::radio::{link::emulator_for, spec};
use crate::store::{self, outbox};

/// The demo's config: one emulated radio per protocol.
pub fn demo_config(state_dir: &std::path::Path) -> Result<Config> {
    demo_config_with_mqtt(state_dir, None)
}

/// The demo's config, synced to the broker at `mqtt` (`mqtt://127.0.0.1:1883`)
/// when given.
pub fn demo_config_with_mqtt(state_dir: &std::path::Path, mqtt: Option<&str>) -> Result<Config> {
    let mut text = format!(
        "[gateway]\nid = \"demo-gateway\"\nstate_dir = \"{}\"\nlog_level = \"warn\"\n\n[api]\nsocket = \"{}\"\n",
        state_dir.display(),
        state_dir.join("api.sock").display()
    );
    for p in Protocol::ALL {
        text.push_str(&format!(
            "\n[[radio]]\nname = \"{p}0\"\nprotocol = \"{p}\"\nport = \"sim://{p}\"\n"
        ));
    }
    if let Some(url) = mqtt {
        let url = serde_json::to_string(url).context("demo broker URL")?;
        text.push_str(&format!("\n[upstream]\nurl = {url}\n"));
    }
    Config::parse(std::path::Path::new("<demo>"), &text).map_err(|e| match e.key.as_deref() {
        // The only value taken from the command line: say so in its terms, not the
        // generated config's line and column.
        Some(k) if k.starts_with("upstream") => anyhow::anyhow!("--mqtt: {}", e.message),
        _ => anyhow::Error::new(e).context("demo config"),
    })
}

/// Adopts the emulator's encrypted BTHome sensor with its bindkey through the hub, the
/// way `fieldgate adopt ID --bindkey -` does, and says how it went.
fn adopt_in_background(hub: crate::hub::HubHandle, id: crate::model::DeviceId) {
    tokio::spawn(async move {
        let key = crate::secrets::Secret::new(
            fieldgate_ble::emulator::ENCRYPTED_BINDKEY_HEX
                .as_bytes()
                .to_vec(),
        );
        match hub.adopt(id.clone(), Some(key), "demo".into()).await {
            Ok(a) => say(format!(
                "+ {} adopted (bindkey {}): its readings now go upstream",
                a.device, a.bindkey
            )),
            Err(e) => say(format!("! {id} not adopted: {e}")),
        }
    });
}

/// Set once stdout is gone (`fieldgate demo | head`): the demo then stops the
/// daemon cleanly instead of narrating to no one.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

fn say(line: impl AsRef<str>) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    if crate::output::try_line(format_args!("{}", line.as_ref())).is_err() {
        STDOUT_GONE.store(true, Ordering::Relaxed);
    }
}

pub async fn run(duration: Option<Duration>) -> Result<()> {
    run_with_mqtt(duration, None).await
}

/// The demo, optionally syncing to an MQTT broker (`fieldgate demo --mqtt URL`).
pub async fn run_with_mqtt(duration: Option<Duration>, mqtt: Option<String>) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("fieldgate-demo-")
        .tempdir()
        .context("cannot create a temporary state directory")?;
    let config = demo_config_with_mqtt(dir.path(), mqtt.as_deref())?;
    daemon::init_logging(config.gateway.log_level.get_ref());
    say(format!("fieldgate demo: state in {}", dir.path().display()));
    say(format!(
        "  local API: {}  (try: fieldgate --socket {} status)",
        config.socket_path().display(),
        config.socket_path().display()
    ));

    let emulated: Vec<Protocol> = Protocol::ALL
        .into_iter()
        .filter(|p| spec(*p).is_some() && emulator_for(*p).is_some())
        .collect();
    if emulated.is_empty() {
        say("  no protocol driver is in this build yet: the radios below stay unavailable,");
        say("  but the store, audit log, outbox and local API run for real.");
    }

    let broker = config.upstream.as_ref().map(|u| u.url.get_ref().clone());
    let mut signals = daemon::StopSignals::install()?;
    let daemon = Daemon::start(config).await?;
    match &broker {
        Some(url) => say(format!(
            "  syncing to {url}: watch with  mosquitto_sub -v -t 'fieldgate/demo-gateway/#'"
        )),
        None => say(
            "  no broker (add --mqtt mqtt://127.0.0.1:1883 to sync): showing what would be sent",
        ),
    }
    let upstream = daemon.upstream_status();
    let mut notices = daemon.hub.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in daemon.radios.iter() {
        let state = r.state.borrow().clone();
        let shown = match state {
            RadioState::Up => "up".to_string(),
            RadioState::Starting => "starting".to_string(),
            RadioState::Down(why) => format!("down: {why}"),
            RadioState::Unavailable(why) => format!("unavailable: {why}"),
        };
        say(format!(
            "  radio {:<8} {:<7} {:<14} {shown}",
            r.name,
            r.protocol.as_str(),
            r.port.to_string()
        ));
    }
    for r in daemon.radios.iter() {
        if r.commands.is_some() {
            let _ = daemon
                .hub
                .permit_join(r.name.clone(), 60, "demo".into())
                .await;
        }
    }

    // BLE devices are discovered, not joined: the demo adopts the encrypted sensor with
    // its bindkey (the emulator's public test key), as a technician would.
    let adopt_id = crate::model::DeviceId::new(
        Protocol::Ble,
        &fieldgate_ble::format_address(&fieldgate_ble::emulator::ENCRYPTED_ADDRESS),
    );
    let ble_emulated = daemon
        .radios
        .iter()
        .any(|r| r.protocol == Protocol::Ble && r.commands.is_some());
    let mut adopting = false;

    let db = daemon.db_path();
    // A signal ends the demo whether or not it has a duration.
    let stop = async {
        match duration {
            Some(d) => tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = signals.wait() => {}
            },
            None => signals.wait().await,
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::pin!(stop);
    let mut summary = tokio::time::interval(Duration::from_secs(5));
    summary.tick().await;
    loop {
        if STDOUT_GONE.load(Ordering::Relaxed) {
            tracing::info!("stdout closed: stopping the demo");
            break;
        }
        tokio::select! {
            r = &mut stop => { r?; break; }
            n = notices.recv() => {
                if let Ok(Notice::DeviceJoined { device, .. } | Notice::DeviceInterviewed { device, .. } | Notice::Readings { device, .. }) = &n {
                    if ble_emulated && !adopting && device == adopt_id.as_str() {
                        adopting = true;
                        adopt_in_background(daemon.hub.clone(), adopt_id.clone());
                    }
                }
                match n {
                Ok(Notice::DeviceJoined { device, radio, new }) => say(format!("+ {device} joined via {radio}{}", if new { " (new)" } else { "" })),
                Ok(Notice::DeviceInterviewed { device, manufacturer, model }) => {
                    let what: Vec<String> = [manufacturer, model].into_iter().flatten().filter(|s| !s.is_empty()).collect();
                    let what = if what.is_empty() { "described (no manufacturer or model given)".to_string() } else { what.join(" ") };
                    say(format!("  {device} is {what}"))
                }
                Ok(Notice::Readings { device, readings, outbox_seq }) => {
                    let text: Vec<String> = readings.iter().map(|r| format!("{}={}{}", r.name, serde_json::to_string(&r.value).unwrap_or_default(), r.unit.as_deref().map(|u| format!(" {u}")).unwrap_or_default())).collect();
                    let queued = match outbox_seq {
                        Some(seq) => format!("outbox #{seq}"),
                        None => "not queued (a pending discovered device, or the outbox is full)".to_string(),
                    };
                    say(format!("  {device}: {}  -> {queued}", text.join(", ")));
                }
                Ok(Notice::DeviceLeft { device }) => say(format!("- {device} left")),
                Ok(Notice::PermitJoin { radio, seconds }) => say(format!("  join window open on {radio} for {seconds} s")),
                Ok(Notice::Decommissioned { device }) => say(format!("- {device} decommissioned")),
                Ok(Notice::Denied { device, reason }) => say(format!("! {device} denied: {reason}")),
                Ok(Notice::Quarantined { device, firmware, min_version }) => say(format!("! {device} quarantined: firmware {} below {min_version}", firmware.unwrap_or_default())),
                Ok(Notice::Released { device }) => say(format!("  {device} released from quarantine")),
                Ok(Notice::Health { device, flag, raised }) => say(format!("{} {device} {flag}", if raised { "!" } else { " " })),
                Ok(Notice::RuleFired { rule, target, sent }) => say(format!("  rule {rule} fired -> {target}{}", if sent { "" } else { " (not delivered)" })),
                Ok(Notice::PolicyApplied { version }) => say(format!("  policy version {version} applied")),
                Err(_) => {}
            }},
            _ = summary.tick() => {
                let db = db.clone();
                let stats = tokio::task::spawn_blocking(move || -> store::StoreResult<_> {
                    let c = store::open_reader(&db)?;
                    Ok((outbox::stats(&c)?, outbox::recent(&c, 3)?))
                }).await?;
                if let Some(up) = &upstream {
                    let u = up.snapshot();
                    say(format!(
                        "  uplink {:?} to {}: {} delivered ({:.1}/s){}",
                        u.state, u.broker, u.delivered, u.delivered_per_s,
                        u.last_error.map(|e| format!(", last error: {e}")).unwrap_or_default()
                    ));
                }
                if let Ok((s, recent)) = stats {
                    let why = if upstream.is_some() { "waiting for PUBACK" } else { "no broker in the demo" };
                    say(format!("  queued for upstream ({why}): {} message(s), {} bytes", s.depth, s.bytes));
                    for m in recent {
                        say(format!("    #{:<5} {:<12} {}", m.seq, m.kind, m.topic));
                    }
                }
            }
        }
    }
    daemon.stop().await?;
    say("demo stopped");
    Ok(())
}
