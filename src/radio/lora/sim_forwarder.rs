//! An emulated packet forwarder a test keeps a handle on while the GWMP driver talks to it
//! over real UDP (the radio's `udp://` port): its devices join, report and hear the
//! gateway's answers as in `sim://lora`, and the handle can ask whether a device is on the
//! network, restart the forwarder (a fresh socket and PULL_DATA, its concentrator clock
//! from zero) or cut its uplink for a while (nothing sent or received, keep-alives
//! included).
//!
//! "On the network" is what the device believes: it holds a session. LoRaWAN has no way
//! to tell a device to leave, so a device that sends confirmed uplinks gives its session
//! up after [`SimPlan::lost_acks`] of them go unacknowledged in a row and joins again
//! (OTAA; what end devices do when the network stops answering), which is how a removed
//! device comes to be off the network here.
//!
//! It never panics on what the gateway sends and shrugs off socket errors (the gateway's
//! port closed while its radio is re-opened answers with ICMP).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldgate_lora::emulator::{Activation, EmulatedDevice, Forwarder, Heard};
use fieldgate_lora::gwmp::TxAckError;
use fieldgate_lora::Eui64;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::sim::GATEWAY_EUI;

/// One emulated end device and how it reports.
#[derive(Debug, Clone)]
pub struct SimDevice {
    pub device: EmulatedDevice,
    /// Its uplinks ask for an ACK (and it leaves when they stop coming).
    pub confirmed: bool,
    /// It reports every this many ticks (1 = every tick).
    pub every: u32,
}

/// How the emulated forwarder runs.
#[derive(Debug, Clone)]
pub struct SimPlan {
    /// One tick: a PULL_DATA keep-alive and the devices' frames that are due.
    pub interval: Duration,
    /// Unacknowledged confirmed uplinks in a row after which a device gives up its session.
    pub lost_acks: u32,
}

impl Default for SimPlan {
    fn default() -> Self {
        SimPlan {
            interval: Duration::from_secs(1),
            lost_acks: 3,
        }
    }
}

#[derive(Debug)]
struct Device {
    sim: SimDevice,
    ticks: u32,
    reports: u32,
    /// A confirmed uplink is waiting for its ACK.
    awaiting_ack: bool,
    missed_acks: u32,
}

#[derive(Debug, Default)]
struct Shared {
    devices: Vec<Device>,
    restart: bool,
    silent_until: Option<Instant>,
}

/// The handle: cheap to clone; the forwarder stops when the last handle is dropped.
#[derive(Clone)]
pub struct SimForwarder {
    shared: Arc<Mutex<Shared>>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SimForwarder {
    /// Starts forwarding to the GWMP server at `server` with `devices`.
    pub fn start(server: SocketAddr, devices: Vec<SimDevice>, plan: SimPlan) -> SimForwarder {
        let shared = Arc::new(Mutex::new(Shared {
            devices: devices
                .into_iter()
                .map(|sim| Device {
                    sim,
                    ticks: 0,
                    reports: 0,
                    awaiting_ack: false,
                    missed_acks: 0,
                })
                .collect(),
            ..Shared::default()
        }));
        let task = tokio::spawn(serve(server, shared.clone(), plan));
        SimForwarder {
            shared,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the device holds a session (it believes it is on the network).
    pub fn on_network(&self, dev_eui: Eui64) -> bool {
        self.lock()
            .devices
            .iter()
            .any(|d| d.sim.device.dev_eui == dev_eui && d.sim.device.session.is_some())
    }

    /// The forwarder restarts: a fresh socket, PULL_DATA again, its clock from zero.
    pub fn restart(&self) {
        self.lock().restart = true;
    }

    /// The forwarder's uplink is cut for `how_long`: nothing goes out or comes in.
    pub fn cut(&self, how_long: Duration) {
        self.lock().silent_until = Some(Instant::now() + how_long);
    }
}

async fn fresh_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await?;
    sock.connect(server).await?;
    Ok(sock)
}

/// Cayenne LPP: temperature (ch 1, 0.1 °C) and humidity (ch 2, 0.5 %), varying with `n`.
pub fn lpp_reading(n: u32) -> [u8; 7] {
    let t = 200 + (n % 20) as i16;
    let [hi, lo] = t.to_be_bytes();
    [0x01, 0x67, hi, lo, 0x02, 0x68, 0x64 + (n % 8) as u8]
}

/// The concentrator clock (µs since `start`, from 1 s, wrapping like the real one).
fn clock(start: Instant) -> u32 {
    (start.elapsed().as_micros() as u32).wrapping_add(1_000_000)
}

/// The frames due this tick (the lock held only here, never across a send).
fn due_frames(shared: &Mutex<Shared>, plan: &SimPlan) -> Vec<Vec<u8>> {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let mut frames = Vec::new();
    for d in &mut s.devices {
        d.ticks = d.ticks.wrapping_add(1);
        let dev = &mut d.sim.device;
        if dev.session.is_none() {
            // An OTAA device with no session tries to join on every tick.
            frames.extend(dev.join_request());
            continue;
        }
        if d.ticks % d.sim.every.max(1) != 0 {
            continue;
        }
        if d.sim.confirmed && d.awaiting_ack {
            d.missed_acks += 1;
            if d.missed_acks >= plan.lost_acks && matches!(dev.activation, Activation::Otaa { .. })
            {
                // The network stopped answering: give the session up and join again.
                dev.session = None;
                d.awaiting_ack = false;
                d.missed_acks = 0;
                continue;
            }
        }
        d.reports = d.reports.wrapping_add(1);
        if let Some(up) = dev.uplink(2, &lpp_reading(d.reports), d.sim.confirmed) {
            d.awaiting_ack = d.sim.confirmed;
            frames.push(up);
        }
    }
    frames
}

/// What the devices make of a downlink.
fn hear(shared: &Mutex<Shared>, phy: &[u8]) {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    for d in &mut s.devices {
        match d.sim.device.hear(phy) {
            Ok(Heard::Joined { .. }) => {
                d.awaiting_ack = false;
                d.missed_acks = 0;
            }
            Ok(Heard::Data(msg)) if msg.fctrl.ack => {
                d.awaiting_ack = false;
                d.missed_acks = 0;
            }
            _ => {}
        }
    }
}

async fn serve(server: SocketAddr, shared: Arc<Mutex<Shared>>, plan: SimPlan) {
    let Ok(mut sock) = fresh_socket(server).await else {
        tracing::warn!(%server, "emulated packet forwarder: no socket");
        return;
    };
    let mut fwd = Forwarder::new(Eui64(GATEWAY_EUI));
    let mut start = Instant::now();
    let mut tick = tokio::time::interval(plan.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (restart, silent) = {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    let silent = s.silent_until.is_some_and(|t| Instant::now() < t);
                    (std::mem::take(&mut s.restart), silent)
                };
                if silent {
                    continue;
                }
                if restart {
                    match fresh_socket(server).await {
                        Ok(s) => sock = s,
                        Err(e) => tracing::warn!(error = %e, "emulated packet forwarder: no fresh socket"),
                    }
                    fwd = Forwarder::new(Eui64(GATEWAY_EUI));
                    start = Instant::now();
                }
                let _ = sock.send(&fwd.pull_data()).await;
                for frame in due_frames(&shared, &plan) {
                    let push = fwd.push_frame(&frame, clock(start), 868_100_000, 7);
                    let _ = sock.send(&push).await;
                }
            }
            got = sock.recv(&mut buf) => {
                // Errors are the gateway's port closed for a moment (ICMP): carry on.
                let Ok(len) = got else { continue };
                let silent = shared
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .silent_until
                    .is_some_and(|t| Instant::now() < t);
                if silent {
                    continue;
                }
                let Some((token, resp)) = Forwarder::pull_resp(&buf[..len]) else { continue };
                let due = resp.txpk.tmst.unwrap_or(0);
                let late = due.wrapping_sub(clock(start)) > u32::MAX / 2;
                let _ = sock.send(&fwd.tx_ack(token, late.then_some(TxAckError::TooLate))).await;
                if !late {
                    hear(&shared, &resp.txpk.data.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldgate_lora::lorawan::{PhyPayload, SessionKeys};
    use fieldgate_lora::{AesKey, DevAddr};

    fn shared(confirmed: bool) -> Mutex<Shared> {
        let (mut otaa, _) = super::super::sim::devices().unwrap();
        let keys = SessionKeys {
            nwk_s_key: AesKey([1; 16]),
            app_s_key: AesKey([2; 16]),
        };
        otaa.session = Some((DevAddr(0x2600_0001), keys));
        Mutex::new(Shared {
            devices: vec![Device {
                sim: SimDevice {
                    device: otaa,
                    confirmed,
                    every: 1,
                },
                ticks: 0,
                reports: 0,
                awaiting_ack: false,
                missed_acks: 0,
            }],
            ..Shared::default()
        })
    }

    fn kinds(frames: &[Vec<u8>]) -> Vec<&'static str> {
        frames
            .iter()
            .map(|f| match PhyPayload::parse(f).unwrap() {
                PhyPayload::JoinRequest(_) => "join",
                PhyPayload::Data(_) => "data",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn a_device_whose_confirmed_uplinks_go_unanswered_gives_its_session_up_and_joins_again() {
        let plan = SimPlan::default();
        let s = shared(true);
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.extend(kinds(&due_frames(&s, &plan)));
        }
        // Three uplinks go unanswered; on the next tick it gives the session up, and on
        // the one after it sends a Join-Request.
        assert_eq!(seen, ["data", "data", "data", "join"]);
        assert!(s.lock().unwrap().devices[0].sim.device.session.is_none());
    }

    #[test]
    fn unconfirmed_uplinks_expect_nothing_and_keep_the_session() {
        let plan = SimPlan::default();
        let s = shared(false);
        for _ in 0..6 {
            assert_eq!(kinds(&due_frames(&s, &plan)), ["data"]);
        }
    }
}
