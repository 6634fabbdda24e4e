//! `sim://lora`: an emulated packet forwarder with two end devices, talking real GWMP over
//! UDP to the driver's socket (loopback). The OTAA device joins (its Join-Accept answered
//! by the driver, at the forwarder's `tmst` + 5 s), then both devices send Cayenne LPP
//! uplinks, every fourth one confirmed. Their keys are public test keys ([`OTAA_APP_KEY`],
//! [`ABP_NWK_S_KEY`], [`ABP_APP_S_KEY`]); `sim://lora` provisions them in the driver's
//! memory only (never in the store), as a technician would with `fieldgate lora add`.
//!
//! The forwarder's clock (`tmst`) runs in real time; a downlink timed before "now" is
//! answered TOO_LATE in its TX_ACK like a real forwarder does.

use std::net::SocketAddr;
use std::time::Duration;

use fieldgate_lora::emulator::{EmulatedDevice, Forwarder, Heard};
use fieldgate_lora::gwmp::TxAckError;
use fieldgate_lora::lorawan::SessionKeys;
use fieldgate_lora::{DevAddr, Eui64};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::sessions::{AbpCredential, OtaaCredential, Sessions};

pub const GATEWAY_EUI: u64 = 0x0016_c001_ff10_0001;
pub const OTAA_DEV_EUI: &str = "70b3d57ed0000001";
pub const OTAA_JOIN_EUI: &str = "70b3d57ed0000000";
pub const OTAA_APP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
pub const ABP_DEV_EUI: &str = "70b3d57ed0000002";
pub const ABP_DEV_ADDR: &str = "26011bda";
pub const ABP_NWK_S_KEY: &str = "44024241ed4ce9a68c6a8bc055233fd3";
pub const ABP_APP_S_KEY: &str = "ec925802ae430ca77fd3dd73cb2cc588";

/// Gives the driver the emulated devices' keys; returns how many.
pub fn provision(sessions: &mut Sessions) -> usize {
    let otaa = OtaaCredential {
        join_eui: OTAA_JOIN_EUI.into(),
        app_key: OTAA_APP_KEY.into(),
        decoder: None,
    };
    let abp = AbpCredential {
        dev_addr: ABP_DEV_ADDR.into(),
        nwk_s_key: ABP_NWK_S_KEY.into(),
        app_s_key: ABP_APP_S_KEY.into(),
        decoder: None,
    };
    let mut n = 0;
    if let Ok(eui) = OTAA_DEV_EUI.parse() {
        n += usize::from(sessions.provision_otaa(eui, &otaa).is_ok());
    }
    if let Ok(eui) = ABP_DEV_EUI.parse() {
        n += usize::from(sessions.provision_abp(eui, &abp).is_ok());
    }
    n
}

/// The most extra ABP devices a forwarder emulates ([`extra_abp`]).
pub const MAX_EXTRA_DEVICES: u32 = 10_000;

/// The keys of the `index`th extra ABP device (0-based, below [`MAX_EXTRA_DEVICES`]),
/// as hex text: DevEUI `70b3d57ed1` + the index in 6 digits, DevAddr `2602` + 4
/// digits, and the two session keys of [`ABP_NWK_S_KEY`] and [`ABP_APP_S_KEY`] with
/// their last 4 bytes replaced by the index. Public test keys, for load on a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraAbp {
    pub dev_eui: String,
    pub dev_addr: String,
    pub nwk_s_key: String,
    pub app_s_key: String,
}

pub fn extra_abp(index: u32) -> ExtraAbp {
    ExtraAbp {
        dev_eui: format!("70b3d57ed1{index:06x}"),
        dev_addr: format!("2602{:04x}", index & 0xffff),
        nwk_s_key: format!("{}{index:08x}", &ABP_NWK_S_KEY[..24]),
        app_s_key: format!("{}{index:08x}", &ABP_APP_S_KEY[..24]),
    }
}

impl ExtraAbp {
    /// The emulated device these keys are.
    pub fn device(&self) -> Option<EmulatedDevice> {
        Some(EmulatedDevice::abp(
            self.dev_eui.parse().ok()?,
            self.dev_addr.parse::<DevAddr>().ok()?,
            SessionKeys {
                nwk_s_key: self.nwk_s_key.parse().ok()?,
                app_s_key: self.app_s_key.parse().ok()?,
            },
        ))
    }
}

/// The emulated devices, as the test and the sim build them.
pub fn devices() -> Option<(EmulatedDevice, EmulatedDevice)> {
    let otaa = EmulatedDevice::otaa(
        OTAA_DEV_EUI.parse().ok()?,
        OTAA_JOIN_EUI.parse().ok()?,
        OTAA_APP_KEY.parse().ok()?,
    );
    let abp = EmulatedDevice::abp(
        ABP_DEV_EUI.parse().ok()?,
        ABP_DEV_ADDR.parse::<DevAddr>().ok()?,
        SessionKeys {
            nwk_s_key: ABP_NWK_S_KEY.parse().ok()?,
            app_s_key: ABP_APP_S_KEY.parse().ok()?,
        },
    );
    Some((otaa, abp))
}

/// A fault the emulated devices commit once, after the OTAA device joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An uplink whose MIC does not match.
    BadMic,
    /// The last accepted uplink sent again.
    Replay,
    /// A Join-Request reusing the DevNonce of the last one.
    DevNonceReuse,
}

impl Fault {
    pub fn parse(s: &str) -> Option<Fault> {
        match s {
            "bad-mic" => Some(Fault::BadMic),
            "replay" => Some(Fault::Replay),
            "devnonce-reuse" => Some(Fault::DevNonceReuse),
            _ => None,
        }
    }
}

/// How the emulated forwarder behaves.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Time between two frames.
    pub interval: Duration,
    /// Sent in order, one per interval, once the OTAA device joined and sent an uplink.
    pub faults: Vec<Fault>,
    /// Stop after this many data uplinks (`None`: run until the server goes away).
    pub uplinks: Option<u32>,
    /// Further ABP devices ([`extra_abp`]), each sending an unconfirmed uplink once per
    /// `interval`, spread evenly over it, until the forwarder stops; `uplinks` does
    /// not count theirs.
    pub extra: Vec<EmulatedDevice>,
    /// Keep sending while the server's port is closed (a gateway restarting), as a
    /// real packet forwarder does, instead of stopping at the first refusal.
    pub keep_going: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            interval: Duration::from_secs(5),
            faults: Vec::new(),
            uplinks: None,
            extra: Vec::new(),
            keep_going: false,
        }
    }
}

/// A bounded run (`Plan::uplinks`) gives up after this many unanswered Join-Requests.
const MAX_JOIN_ATTEMPTS: u32 = 10;

/// A PULL_DATA keep-alive at least this often, whatever the frames' interval (the
/// packet forwarder's default `keepalive_interval`).
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Runs the forwarder against `server` until it stops answering.
pub async fn run(server: SocketAddr) {
    if let Err(e) = forward(server, Plan::default(), |_| {}).await {
        tracing::info!(error = %e, "sim://lora forwarder stopped");
    }
}

/// Whether the server's port answers, for a forwarder that keeps going without it.
struct Link {
    keep_going: bool,
    down: bool,
}

impl Link {
    /// A send or receive failed: a closed port (ICMP port unreachable) is said once and
    /// waited out when keeping going; anything else ends the forwarder.
    fn failed(&mut self, e: std::io::Error, say: &mut impl FnMut(String)) -> std::io::Result<()> {
        if !self.keep_going || e.kind() != std::io::ErrorKind::ConnectionRefused {
            return Err(e);
        }
        if !self.down {
            self.down = true;
            say("the gateway's port is closed (restarting?): still sending".into());
        }
        Ok(())
    }

    fn answered(&mut self, say: &mut impl FnMut(String)) {
        if std::mem::take(&mut self.down) {
            say("the gateway answers again".into());
        }
    }
}

/// Sends one datagram; a closed port is waited out as [`Link::failed`] says.
async fn send(
    sock: &UdpSocket,
    data: &[u8],
    link: &mut Link,
    say: &mut impl FnMut(String),
) -> std::io::Result<()> {
    match sock.send(data).await {
        Ok(_) => Ok(()),
        Err(e) => link.failed(e, say),
    }
}

/// The emulated forwarder and devices against the GWMP server at `server`; `say` hears
/// what happens (one line each).
pub async fn forward(
    server: SocketAddr,
    plan: Plan,
    mut say: impl FnMut(String),
) -> std::io::Result<()> {
    let sock = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await?;
    sock.connect(server).await?;
    let Some((mut otaa, mut abp)) = devices() else {
        return Ok(());
    };
    let mut fwd = Forwarder::new(Eui64(GATEWAY_EUI));
    let mut link = Link {
        keep_going: plan.keep_going,
        down: false,
    };
    let start = Instant::now();
    let clock = |start: Instant| (start.elapsed().as_micros() as u32).wrapping_add(1_000_000);
    send(&sock, &fwd.pull_data(), &mut link, &mut say).await?;
    // The first frame a moment after start, once the gateway is listening (and, in the
    // demo, its join window is open).
    let mut tick = tokio::time::interval_at(Instant::now() + Duration::from_secs(2), plan.interval);
    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut extra = plan.extra;
    // One extra device's uplink per `spread`, in turn (never due when there are none).
    let spread = plan.interval / (extra.len().max(1) as u32);
    let mut extra_tick = tokio::time::interval_at(Instant::now() + Duration::from_secs(2), spread);
    let mut next_extra = 0usize;
    let mut extra_reports = 0u32;
    let mut faults = plan.faults.into_iter();
    let mut n: u32 = 0;
    let mut join_attempts: u32 = 0;
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                send(&sock, &fwd.pull_data(), &mut link, &mut say).await?;
            }
            _ = extra_tick.tick(), if !extra.is_empty() => {
                let count = extra.len();
                let dev = &mut extra[next_extra];
                next_extra = (next_extra + 1) % count;
                extra_reports = extra_reports.wrapping_add(1);
                let lpp = super::sim_forwarder::lpp_reading(extra_reports);
                if let Some(up) = dev.uplink(2, &lpp, false) {
                    send(&sock, &fwd.push_frame(&up, clock(start), 868_500_000, 7), &mut link, &mut say).await?;
                }
            }
            _ = tick.tick() => {
                send(&sock, &fwd.pull_data(), &mut link, &mut say).await?;
                let now = clock(start);
                if otaa.session.is_none() {
                    join_attempts += 1;
                    if plan.uplinks.is_some() && join_attempts > MAX_JOIN_ATTEMPTS {
                        return Err(std::io::Error::other(format!(
                            "no Join-Accept after {MAX_JOIN_ATTEMPTS} Join-Requests"
                        )));
                    }
                    if let Some(req) = otaa.join_request() {
                        say(format!("join-request from {}", otaa.dev_eui));
                        send(&sock, &fwd.push_frame(&req, now, 868_100_000, 7), &mut link, &mut say).await?;
                    }
                    continue;
                }
                // Faults once the OTAA device has an accepted uplink to replay.
                let fault = if otaa.fcnt_up > 0 { faults.next() } else { None };
                if let Some(fault) = fault {
                    let frame = match fault {
                        Fault::BadMic => otaa.uplink_bad_mic(2, &[0x01, 0x67, 0x00, 0xd2]),
                        Fault::Replay => otaa.replay_last(),
                        Fault::DevNonceReuse => otaa.join_request_reusing_nonce(),
                    };
                    if let Some(frame) = frame {
                        say(format!("fault {fault:?} from {}", otaa.dev_eui));
                        send(&sock, &fwd.push_frame(&frame, now, 868_100_000, 7), &mut link, &mut say).await?;
                    }
                    continue;
                }
                if plan.uplinks.is_some_and(|max| n >= max) {
                    return Ok(());
                }
                n += 1;
                let lpp = super::sim_forwarder::lpp_reading(n);
                let confirmed = n % 4 == 0;
                let dev = if n % 2 == 0 { &mut otaa } else { &mut abp };
                if let Some(up) = dev.uplink(2, &lpp, confirmed) {
                    say(format!("uplink from {} (fcnt {}, confirmed: {confirmed})", dev.dev_eui, dev.fcnt_up - 1));
                    send(&sock, &fwd.push_frame(&up, now, 868_300_000, 7), &mut link, &mut say).await?;
                }
            }
            got = sock.recv(&mut buf) => {
                let len = match got {
                    Ok(len) => len,
                    Err(e) => {
                        link.failed(e, &mut say)?;
                        continue;
                    }
                };
                link.answered(&mut say);
                let Some((token, resp)) = Forwarder::pull_resp(&buf[..len]) else { continue };
                let due = resp.txpk.tmst.unwrap_or(0);
                let now = clock(start);
                // Late when its time already passed (wrapping compare on the u32 clock).
                let late = due.wrapping_sub(now) > u32::MAX / 2;
                let err = late.then_some(TxAckError::TooLate);
                send(&sock, &fwd.tx_ack(token, err), &mut link, &mut say).await?;
                if late {
                    say(format!("downlink for tmst {due} refused: TOO_LATE"));
                    continue;
                }
                for dev in [&mut otaa, &mut abp] {
                    match dev.hear(&resp.txpk.data.0) {
                        Ok(Heard::Joined { dev_addr }) => {
                            say(format!("{} joined as {dev_addr} (join-accept at tmst {due})", dev.dev_eui));
                        }
                        Ok(Heard::Data(msg)) => {
                            say(format!("{} got a downlink (ack: {})", dev.dev_eui, msg.fctrl.ack));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
