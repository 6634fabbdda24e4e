//! The driver conformance suite: what every radio driver must do for the hub,
//! written once against the driver contract and run against each driver's emulator
//! through the real supervisor, hub and store.
//!
//! The walk: the radio comes up -> a join window opens -> a device joins, is
//! interviewed and reports -> a command reaches an actuator and comes back
//! confirmed -> a request for a device that cannot hear now is held and delivered
//! when it next speaks -> a removed device leaves, and one that tries again is
//! refused and told to leave until it is re-admitted -> the radio resets on its own
//! and recovers -> the link drops and the radio is re-opened. An emulator takes part through [`Emulated`];
//! each driver adds one implementation and one `#[tokio::test]` below.
//!
//! Steps that do not apply are declared, not skipped silently: a radio whose devices are
//! discovered rather than joined (its capabilities have no join window: BLE, LoRa P2P) has its
//! reporter adopted instead of joined, and its removed devices, which keep
//! transmitting, are refused by having nothing they send recorded; a radio whose devices
//! come back under a new address after they leave (Z-Wave: a node included again gets a
//! new node id) declares it (`stable_identity_on_rejoin`), and the walk checks that such
//! a device comes back as a new one while the removed one's record stays decommissioned,
//! instead of its being refused; an emulator with no actuator, no sleeping device, or no
//! way to reset its radio or cut its link says so (`None`, `false`).
//!
//! LoRaWAN (the GWMP packet-forwarder driver) declares three more: its devices are not
//! interviewed (`interviewed`: the gateway describes a device from its join, and the walk
//! waits for it to be admitted rather than for a model); their keys are destroyed with
//! them when they are removed (`credential`: the walk gives the keys, as a technician does
//! with `fieldgate lora add`, before the join and again after a re-admission); and a
//! packet forwarder restarting on a fresh socket is no reset the radio can see
//! (`reset_is_silent`: the walk checks only that the radio stays up and devices carry
//! on). A removed LoRaWAN device cannot be told to leave: it drops its session when its
//! confirmed uplinks stop being acknowledged, and its Join-Requests are then refused
//! (no Join-Accept) and audited. With no actuator, "devices carry on" after a reset or a
//! link loss is the sleeping device's next reading.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fieldgate::config::{Config, Protocol};
use fieldgate::hub::{DeviceAction, DeviceAnswer, DeviceRequest, HubHandle, Notice, RequestOrigin};
use fieldgate::model::{CredentialKind, DeviceCommand, DeviceId, RadioState, Value};
use fieldgate::radio::zigbee_sim::SimEmulator;
use fieldgate::secrets::Secret;
use fieldgate::store::registry;
use fieldgate_zigbee::emulator::{DeviceKind, DeviceTiming, EmulatorConfig, Fault};
use tokio::net::TcpListener;

use crate::gateway_support::TestGateway;

/// What the suite needs from a radio's emulator. Addresses are native addresses
/// as the driver reports them.
trait Emulated: Send + Sync {
    fn protocol(&self) -> Protocol;
    /// The `[[radio]]` table's `port` and, if any, its `[radio.options]` body.
    fn port(&self) -> String;
    fn options(&self) -> String;
    /// A device that reports on its own, and a reading name it reports.
    fn reporter(&self) -> (String, &'static str);
    /// A device that takes on/off and reports its state as `on` (the vocabulary's name);
    /// `None` when the radio's devices take no commands.
    fn actuator(&self) -> Option<String>;
    /// A device that cannot hear between its wake-ups (requests for it are held).
    fn sleeper(&self) -> Option<String>;
    /// Whether the emulated network still has this device.
    fn on_network(&self, native: &str) -> bool;
    /// The device tries to join again while a join window is open (as a removed
    /// device that kept its keys would); an emulator whose devices do that by
    /// themselves does nothing here.
    fn rejoin(&self, native: &str);
    /// Whether a device that left the network and joins again is known by the native
    /// address it had. Where it is not (a Z-Wave node is given a new node id each time it
    /// is included), the radio cannot tell it from a new device, so "refused until
    /// re-admitted" cannot apply: the walk checks instead that it comes back as a new
    /// device while the removed one's record stays decommissioned, and that blocking
    /// still takes it off the network.
    fn stable_identity_on_rejoin(&self) -> bool {
        true
    }
    /// Whether a device that joined is interviewed (its model learnt). Where it is not
    /// (LoRaWAN has no interview), the walk waits for the device to be admitted instead.
    fn interviewed(&self) -> bool {
        true
    }
    /// The credential a technician gives for the device before it can join, and gives
    /// again after a re-admission where removing a device destroys its keys (LoRaWAN's
    /// OTAA and ABP keys); `None` when the radio needs none.
    fn credential(&self, _native: &str) -> Option<(CredentialKind, Secret)> {
        None
    }
    /// Whether the radio restarting (`reset_radio`) goes unseen by the driver, so that the
    /// radio's state does not change (a packet forwarder that restarts on a fresh socket
    /// just sends PULL_DATA again): the walk then checks only that devices carry on.
    fn reset_is_silent(&self) -> bool {
        false
    }
    /// The radio resets on its own (watchdog, brown-out) and says so; `false` when
    /// the emulator cannot make it.
    fn reset_radio(&self) -> bool;
    /// The link to the radio drops (the cable, the network, ser2net); `false` when
    /// the emulator cannot make it.
    fn cut_link(&self) -> bool;
}

// ---------------------------------------------------------------------------------
// Serial emulators are served over TCP (as through ser2net): one connection at a
// time, a new one replacing the old, and the current one dropped to cut the link.

struct TcpServed {
    port: u16,
    connection: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl TcpServed {
    async fn start<F, Fut>(serve: F) -> TcpServed
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connection = Arc::new(Mutex::new(None));
        let current = connection.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let task = tokio::spawn(serve(stream));
                if let Some(old) = current.lock().unwrap().replace(task) {
                    old.abort();
                }
            }
        });
        TcpServed {
            port,
            connection,
            _accept: accept,
        }
    }

    /// Drops the current connection, as a pulled cable or a dead ser2net would.
    fn cut(&self) -> bool {
        if let Some(task) = self.connection.lock().unwrap().take() {
            task.abort();
        }
        true
    }
}

// ---------------------------------------------------------------------------------
// Zigbee: the ZNP coordinator emulator served over TCP (as through ser2net).

struct ZigbeeEmulator {
    sim: SimEmulator,
    link: TcpServed,
}

impl ZigbeeEmulator {
    async fn start() -> ZigbeeEmulator {
        let sim = SimEmulator::new(EmulatorConfig {
            timing: DeviceTiming {
                report_interval: Duration::from_secs(1),
                sleepy_wake_interval: Duration::from_secs(3),
                sleepy_awake_window: Duration::from_millis(1000),
                sleepy_answers_after_join: 2,
            },
            join_spacing: Duration::from_millis(150),
            ..Default::default()
        });
        let served = sim.clone();
        let link = TcpServed::start(move |stream| {
            let sim = served.clone();
            async move {
                let _ = sim.serve(stream).await;
            }
        })
        .await;
        ZigbeeEmulator { sim, link }
    }

    fn ieee(native: &str) -> fieldgate_zigbee::IeeeAddr {
        native.parse().expect("an IEEE address")
    }
}

impl Emulated for ZigbeeEmulator {
    fn protocol(&self) -> Protocol {
        Protocol::Zigbee
    }
    fn port(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.link.port)
    }
    fn options(&self) -> String {
        "sreq_timeout = \"2s\"\nresponse_timeout = \"700ms\"\ninterview_attempts = 2\nwatchdog_interval = \"1s\"\n".into()
    }
    fn reporter(&self) -> (String, &'static str) {
        (
            DeviceKind::TempHumidity.default_ieee().to_string(),
            "temperature",
        )
    }
    fn actuator(&self) -> Option<String> {
        Some(DeviceKind::SmartPlug.default_ieee().to_string())
    }
    fn sleeper(&self) -> Option<String> {
        Some(DeviceKind::SleepySensor.default_ieee().to_string())
    }
    fn on_network(&self, native: &str) -> bool {
        let ieee = Self::ieee(native);
        self.sim
            .with(|e, _| e.device(ieee).is_some_and(|d| d.nwk.is_some()))
    }
    fn rejoin(&self, _native: &str) {
        // Every virtual device not on the network joins while a window is open.
    }
    fn reset_radio(&self) -> bool {
        self.sim.inject(Fault::Reset);
        true
    }
    fn cut_link(&self) -> bool {
        self.link.cut()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zigbee_driver_conforms() {
    let emulator = ZigbeeEmulator::start().await;
    conformance(&emulator).await;
}

// ---------------------------------------------------------------------------------
// BLE: the scanner on the in-process emulator (`sim://ble`). Its devices advertise
// whatever the gateway does: they are discovered (then adopted), take no commands,
// and are reached only right after they transmit.

struct BleEmulator;

impl Emulated for BleEmulator {
    fn protocol(&self) -> Protocol {
        Protocol::Ble
    }
    fn port(&self) -> String {
        "sim://ble".into()
    }
    fn options(&self) -> String {
        "min_interval = \"1s\"\nsim_speed = 5\nsim_faults = false\n".into()
    }
    fn reporter(&self) -> (String, &'static str) {
        // The Ruuvi tag.
        ("cb:b8:33:4c:88:4f".into(), "temperature")
    }
    fn actuator(&self) -> Option<String> {
        None
    }
    fn sleeper(&self) -> Option<String> {
        // An advertiser hears only right after it transmits: requests for it are held.
        Some("a4:c1:38:5a:6b:7c".into())
    }
    fn on_network(&self, _native: &str) -> bool {
        // There is no network to leave: it keeps advertising.
        true
    }
    fn rejoin(&self, _native: &str) {
        // It never stopped advertising.
    }
    fn reset_radio(&self) -> bool {
        false
    }
    fn cut_link(&self) -> bool {
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ble_driver_conforms() {
    conformance(&BleEmulator).await;
}

// ---------------------------------------------------------------------------------
// Z-Wave: the Serial API controller emulator served over TCP (as through ser2net).
// The reporter is a multisensor waiting to be included, so it joins through the
// inclusion window; the plug (node 2) and the sleeping battery sensor (node 5) are in
// the network already and are announced when the window opens. The technician presses
// the reporter's button whenever an exclusion starts.

/// The node id the waiting multisensor is given, and the one it gets when included again.
const ZWAVE_REPORTER: u8 = 7;
const ZWAVE_REPORTER_AGAIN: u8 = 8;

struct ZwaveEmulator {
    sim: fieldgate::radio::zwave_sim::SimEmulator,
    link: TcpServed,
}

impl ZwaveEmulator {
    async fn start() -> ZwaveEmulator {
        use fieldgate_zwave::emulator::{default_nodes, EmulatorConfig, NodeKind};
        let sim = fieldgate::radio::zwave_sim::SimEmulator::new(EmulatorConfig {
            nodes: default_nodes(),
            pending: vec![NodeKind::Multisensor],
            report_interval: Duration::from_secs(2),
            wake_interval: Duration::from_secs(3),
            awake_time: Duration::from_secs(10),
            exclusion_presses: vec![ZWAVE_REPORTER, ZWAVE_REPORTER_AGAIN],
            ..EmulatorConfig::default()
        });
        let served = sim.clone();
        let link = TcpServed::start(move |stream| {
            let sim = served.clone();
            async move {
                let _ = sim.serve(stream).await;
            }
        })
        .await;
        ZwaveEmulator { sim, link }
    }

    fn address(node: u8) -> String {
        format!("{:08x}-{node}", fieldgate_zwave::emulator::HOME_ID)
    }

    fn node(native: &str) -> u8 {
        native
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse().ok())
            .expect("a Z-Wave native address")
    }
}

impl Emulated for ZwaveEmulator {
    fn protocol(&self) -> Protocol {
        Protocol::Zwave
    }
    fn port(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.link.port)
    }
    fn options(&self) -> String {
        "callback_timeout = \"2s\"\nresponse_timeout = \"2s\"\nreport_timeout = \"1s\"\nwake_up_hold = \"1s\"\n".into()
    }
    fn reporter(&self) -> (String, &'static str) {
        (Self::address(ZWAVE_REPORTER), "temperature")
    }
    fn actuator(&self) -> Option<String> {
        // The plug: Binary Switch.
        Some(Self::address(2))
    }
    fn sleeper(&self) -> Option<String> {
        // The battery sensor: hears only while awake after its Wake Up Notification.
        Some(Self::address(5))
    }
    fn on_network(&self, native: &str) -> bool {
        let node = Self::node(native);
        self.sim.with(|e, _| e.node(node).is_some())
    }
    fn rejoin(&self, _native: &str) {
        // An excluded node waits to be included again and joins in the next window.
    }
    fn stable_identity_on_rejoin(&self) -> bool {
        // Included again, a node is given the controller's next free node id, and the
        // driver knows a node only by home id and node id.
        false
    }
    fn reset_radio(&self) -> bool {
        self.sim.inject(fieldgate_zwave::emulator::Fault::Reset);
        true
    }
    fn cut_link(&self) -> bool {
        self.link.cut()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zwave_driver_conforms() {
    let emulator = ZwaveEmulator::start().await;
    conformance(&emulator).await;
}

// ---------------------------------------------------------------------------------
// LoRaWAN: the GWMP driver on a real UDP port, and an emulated packet forwarder
// (`SimForwarder`) sending to it. The reporter is the OTAA device: it joins (its
// Join-Accept answered by the gateway) and sends confirmed uplinks, so it notices when the
// gateway stops acknowledging them (removed) and joins again. The sleeper is the ABP
// device: class A, it hears only right after its own uplinks.

struct LoraGwmpEmulator {
    sim: fieldgate::radio::lora::sim_forwarder::SimForwarder,
    port: u16,
}

impl LoraGwmpEmulator {
    fn start() -> LoraGwmpEmulator {
        use fieldgate::radio::lora::sim;
        use fieldgate::radio::lora::sim_forwarder::{SimDevice, SimForwarder, SimPlan};
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free UDP port")
            .port();
        let (otaa, abp) = sim::devices().expect("the emulated devices");
        let devices = vec![
            SimDevice {
                device: otaa,
                confirmed: true,
                every: 1,
            },
            SimDevice {
                device: abp,
                confirmed: false,
                every: 2,
            },
        ];
        let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        LoraGwmpEmulator {
            sim: SimForwarder::start(server, devices, SimPlan::default()),
            port,
        }
    }
}

impl Emulated for LoraGwmpEmulator {
    fn protocol(&self) -> Protocol {
        Protocol::Lora
    }
    fn port(&self) -> String {
        format!("udp://127.0.0.1:{}", self.port)
    }
    fn options(&self) -> String {
        // The emulated forwarder keeps alive every second.
        "region = \"EU868\"\nforwarder_timeout = \"3s\"\n".into()
    }
    fn reporter(&self) -> (String, &'static str) {
        (
            fieldgate::radio::lora::sim::OTAA_DEV_EUI.into(),
            "temperature",
        )
    }
    fn actuator(&self) -> Option<String> {
        // The gateway sends its devices no application downlinks (no set): a class A
        // device would hear one only right after its own uplink, and none of the
        // emulated ones takes on/off.
        None
    }
    fn sleeper(&self) -> Option<String> {
        Some(fieldgate::radio::lora::sim::ABP_DEV_EUI.into())
    }
    fn on_network(&self, native: &str) -> bool {
        self.sim.on_network(native.parse().expect("a DevEUI"))
    }
    fn rejoin(&self, _native: &str) {
        // A device with no session sends a Join-Request on every tick.
    }
    fn interviewed(&self) -> bool {
        false
    }
    fn credential(&self, native: &str) -> Option<(CredentialKind, Secret)> {
        use fieldgate::radio::lora::{sim, AbpCredential, OtaaCredential};
        let (kind, json) = if native == sim::OTAA_DEV_EUI {
            let c = OtaaCredential {
                join_eui: sim::OTAA_JOIN_EUI.into(),
                app_key: sim::OTAA_APP_KEY.into(),
                decoder: None,
            };
            (CredentialKind::LorawanOtaa, serde_json::to_vec(&c))
        } else {
            let c = AbpCredential {
                dev_addr: sim::ABP_DEV_ADDR.into(),
                nwk_s_key: sim::ABP_NWK_S_KEY.into(),
                app_s_key: sim::ABP_APP_S_KEY.into(),
                decoder: None,
            };
            (CredentialKind::LorawanAbp, serde_json::to_vec(&c))
        };
        Some((kind, Secret::new(json.expect("JSON"))))
    }
    fn reset_radio(&self) -> bool {
        self.sim.restart();
        true
    }
    fn reset_is_silent(&self) -> bool {
        true
    }
    fn cut_link(&self) -> bool {
        // Silent for twice the driver's `forwarder_timeout`, then back.
        self.sim.cut(Duration::from_secs(6));
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_gwmp_driver_conforms() {
    let emulator = LoraGwmpEmulator::start();
    conformance(&emulator).await;
}

// ---------------------------------------------------------------------------------
// LoRa P2P: the RAK3172 modem emulator served over TCP (as through ser2net), with two
// private LPP senders on the driver's channel. Like BLE advertisers, they are discovered
// (then adopted) rather than joined, take no commands, keep sending after they are
// removed, and are reached only right after they send.

struct LoraP2pEmulator {
    sim: fieldgate::radio::lora_p2p::sim::SimModem,
    link: TcpServed,
}

/// The P2P senders' ids (their native addresses, as 4 bytes of hex).
const P2P_REPORTER: u32 = 0x0a0b_0c01;
const P2P_SLEEPER: u32 = 0x0a0b_0c02;

impl LoraP2pEmulator {
    async fn start() -> LoraP2pEmulator {
        use fieldgate::radio::lora_p2p::sim::{sim_config, SimModem};
        let mut config = sim_config();
        for s in &mut config.sensors {
            s.interval = Duration::from_millis(if s.id == P2P_REPORTER { 1000 } else { 1500 });
        }
        let sim = SimModem::new(config);
        let served = sim.clone();
        let link = TcpServed::start(move |stream| {
            let sim = served.clone();
            async move {
                let _ = sim.serve(stream).await;
            }
        })
        .await;
        LoraP2pEmulator { sim, link }
    }
}

impl Emulated for LoraP2pEmulator {
    fn protocol(&self) -> Protocol {
        Protocol::LoraP2p
    }
    fn port(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.link.port)
    }
    fn options(&self) -> String {
        String::new()
    }
    fn reporter(&self) -> (String, &'static str) {
        (format!("{P2P_REPORTER:08x}"), "temperature")
    }
    fn actuator(&self) -> Option<String> {
        // The driver can transmit a command byte, but no emulated sender listens for one
        // or reports an on/off state.
        None
    }
    fn sleeper(&self) -> Option<String> {
        // A sender hears, if at all, right after it sent: requests for it are held.
        Some(format!("{P2P_SLEEPER:08x}"))
    }
    fn on_network(&self, _native: &str) -> bool {
        // There is no network to leave: it keeps sending.
        true
    }
    fn rejoin(&self, _native: &str) {
        // It never stopped sending.
    }
    fn reset_radio(&self) -> bool {
        self.sim
            .inject(fieldgate_lora::rak3172::emulator::Fault::Reset);
        true
    }
    fn cut_link(&self) -> bool {
        self.link.cut()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_p2p_driver_conforms() {
    let emulator = LoraP2pEmulator::start().await;
    conformance(&emulator).await;
}

// ---------------------------------------------------------------------------------
// The suite.

struct Walk {
    gw: Option<TestGateway>,
    notices: Arc<Mutex<Vec<(Instant, Notice)>>>,
    protocol: Protocol,
    _dir: tempfile::TempDir,
}

impl Drop for Walk {
    fn drop(&mut self) {
        // A failed step unwinds with the hub still holding writer handles: stop it,
        // and leave the store to the process rather than hang joining its writer.
        if let Some(gw) = &mut self.gw {
            let _ = gw.shutdown.send(true);
            if let Some(store) = gw.store.take() {
                std::mem::forget(store);
            }
        }
    }
}

impl Walk {
    fn gw(&self) -> &TestGateway {
        self.gw.as_ref().expect("running")
    }

    fn hub(&self) -> &HubHandle {
        &self.gw().hub
    }

    fn id(&self, native: &str) -> DeviceId {
        DeviceId::new(self.protocol, native)
    }

    fn device(&self, native: &str) -> Option<registry::Device> {
        let r = self.gw().store.as_ref().expect("store").reader().unwrap();
        registry::get(&r, &self.id(native)).unwrap()
    }

    fn devices(&self) -> Vec<registry::Device> {
        let r = self.gw().store.as_ref().expect("store").reader().unwrap();
        registry::list(&r, &registry::DeviceFilter::default()).unwrap()
    }

    fn audit(&self) -> Vec<fieldgate::store::audit::AuditRecord> {
        let r = self.gw().store.as_ref().expect("store").reader().unwrap();
        fieldgate::store::audit::tail(&r, 10_000, Some(0)).unwrap()
    }

    fn state(&self) -> RadioState {
        self.gw().radios[0].state.borrow().clone()
    }

    async fn until<T>(&self, what: &str, secs: u64, f: impl Fn(&Walk) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "conformance: {what} did not happen within {secs} s (radio {:?}; devices {:?})",
                self.state(),
                self.devices()
                    .iter()
                    .map(|d| (&d.native_address, &d.model, &d.lifecycle))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn noticed(&self, since: Instant, f: impl Fn(&Notice) -> bool) -> bool {
        self.notices
            .lock()
            .unwrap()
            .iter()
            .any(|(t, n)| *t >= since && f(n))
    }

    /// The last value of `reading` recorded after `since`, from the hub's notices.
    fn reading_since(&self, native: &str, reading: &str, since: Instant) -> Option<Value> {
        let want = self.id(native).to_string();
        self.notices
            .lock()
            .unwrap()
            .iter()
            .rev()
            .filter(|(t, _)| *t >= since)
            .find_map(|(_, n)| match n {
                Notice::Readings {
                    device, readings, ..
                } if *device == want => readings
                    .iter()
                    .find(|r| r.name == reading)
                    .map(|r| r.value.clone()),
                _ => None,
            })
    }
}

async fn conformance(emulated: &dyn Emulated) {
    let protocol = emulated.protocol();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[gateway]\nid = \"conformance\"\nstate_dir = \"{}\"\n\n[api]\nsocket = \"{}\"\n\n[[radio]]\nname = \"r0\"\nprotocol = \"{protocol}\"\nport = \"{}\"\n\n[radio.options]\n{}",
        dir.path().join("state").display(),
        dir.path().join("api.sock").display(),
        emulated.port(),
        emulated.options(),
    );
    let config = Config::parse(std::path::Path::new("<conformance>"), &text).expect("config");
    let gw = TestGateway::builder(config).start();
    let notices = Arc::new(Mutex::new(Vec::new()));
    let mut rx = gw.hub.subscribe();
    let log = notices.clone();
    tokio::spawn(async move {
        while let Ok(n) = rx.recv().await {
            log.lock().unwrap().push((Instant::now(), n));
        }
    });
    let mut walk = Walk {
        gw: Some(gw),
        notices,
        protocol,
        _dir: dir,
    };

    // The radio comes up.
    walk.until("the radio coming up", 20, |w| {
        (w.state() == RadioState::Up).then_some(())
    })
    .await;

    // Join -> interview -> reading (discovered devices: pending -> adopted).
    let discovered = fieldgate::radio::capabilities(protocol)
        .expect("a driver for the protocol")
        .max_join_window
        .is_none();
    let (reporter, reading) = emulated.reporter();
    if discovered {
        walk.until("the reporter discovered and described, pending", 30, |w| {
            w.device(&reporter)
                .filter(|d| d.model.is_some() && d.lifecycle == "pending")
        })
        .await;
        adopt(&walk, &reporter).await;
    } else {
        walk.hub()
            .permit_join("r0".into(), 60, "conformance".into())
            .await
            .expect("a join window opens");
        let devices = [
            Some(reporter.clone()),
            emulated.sleeper(),
            emulated.actuator(),
        ];
        for native in devices.iter().flatten() {
            give_credential(&walk, emulated, native).await;
        }
    }
    let interviewed = emulated.interviewed();
    walk.until("the reporter joining and being interviewed", 30, |w| {
        w.device(&reporter)
            .filter(|d| (d.model.is_some() || !interviewed) && d.lifecycle == "active")
    })
    .await;
    let t0 = Instant::now();
    walk.until("a reading from the reporter", 20, |w| {
        w.reading_since(&reporter, reading, t0)
    })
    .await;

    // Set: the command reaches the actuator and its new state comes back.
    if let Some(actuator) = emulated.actuator() {
        commands(&walk, &actuator).await;
    }

    // A request for a device that cannot hear now is held, then delivered when it
    // next speaks.
    if let Some(sleeper) = emulated.sleeper() {
        held_request(&walk, &sleeper, emulated.interviewed()).await;
    }

    // Remove: the device leaves; when it tries again it is refused and told to leave.
    let removed = walk
        .hub()
        .decommission(walk.id(&reporter), "conformance".into())
        .await
        .expect("decommission");
    assert_eq!(removed.radio_removal, "requested");
    let want = walk.id(&reporter).to_string();
    let stable = emulated.stable_identity_on_rejoin();
    if !discovered && !stable {
        walk.until("the removed device leaving the network", 10, |w| {
            (!emulated.on_network(&reporter) && w.device(&reporter).is_some()).then_some(())
        })
        .await;
        assert_eq!(
            walk.device(&reporter)
                .expect("kept for the record")
                .lifecycle,
            "decommissioned"
        );
        rejoins_as_new_device(&walk, emulated, &reporter, reading).await;
    } else if discovered {
        // Nothing to leave: it keeps transmitting, and nothing it sends is recorded.
        not_recorded(&walk, &reporter, reading).await;
    } else {
        walk.until("the removed device leaving the network", 10, |w| {
            (!emulated.on_network(&reporter) && w.device(&reporter).is_some()).then_some(())
        })
        .await;
        let retried = Instant::now();
        walk.hub()
            .permit_join("r0".into(), 5, "conformance".into())
            .await
            .expect("a join window opens");
        emulated.rejoin(&reporter);
        walk.until("the removed device being refused", 10, |w| {
            w.noticed(
                retried,
                |n| matches!(n, Notice::Denied { device, .. } if *device == want),
            )
            .then_some(())
        })
        .await;
        walk.until("the refused device being told to leave", 10, |_| {
            (!emulated.on_network(&reporter)).then_some(())
        })
        .await;
    }
    if discovered || stable {
        assert_eq!(
            walk.device(&reporter)
                .expect("kept for the record")
                .lifecycle,
            "decommissioned"
        );
        // Until a technician re-admits it: then it joins again like a new device.
        if !discovered {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        walk.hub()
            .readmit(walk.id(&reporter), "conformance".into())
            .await
            .expect("re-admitted");
        assert_eq!(walk.device(&reporter).unwrap().lifecycle, "pending");
        if discovered {
            adopt(&walk, &reporter).await;
        } else {
            walk.hub()
                .permit_join("r0".into(), 30, "conformance".into())
                .await
                .expect("a join window opens");
            give_credential(&walk, emulated, &reporter).await;
        }
        walk.until("the re-admitted device active again", 30, |w| {
            w.device(&reporter).filter(|d| d.lifecycle == "active")
        })
        .await;
        let t3 = Instant::now();
        walk.until("readings from the re-admitted device", 20, |w| {
            w.reading_since(&reporter, reading, t3)
        })
        .await;

        // Remove and block in one step: decommissioned, told to leave, and refused even
        // inside a join window until re-admitted, which also takes it off the denylist.
        let blocked = walk
            .hub()
            .block(walk.id(&reporter), "conformance".into())
            .await
            .expect("block");
        assert!(blocked.decommissioned.is_some() && blocked.newly_blocked);
        if discovered {
            not_recorded(&walk, &reporter, reading).await;
        } else {
            refused_while_blocked(&walk, emulated, &reporter).await;
        }
        let r = walk
            .hub()
            .readmit(walk.id(&reporter), "conformance".into())
            .await
            .expect("re-admitted");
        assert_eq!(r.lifecycle.as_deref(), Some("pending"));
        if discovered {
            // Off the denylist: heard and recorded again (pending until adopted).
            let t4 = Instant::now();
            walk.until("readings after the block is lifted", 20, |w| {
                w.reading_since(&reporter, reading, t4)
            })
            .await;
        }
    }

    // The radio resets on its own: it comes back and devices carry on (the actuator
    // takes commands, or else the sleeping device reports the reporter's reading).
    let carrier = match (emulated.actuator(), emulated.sleeper()) {
        (Some(actuator), _) => Some(Carrier::Actuator(actuator)),
        (None, Some(sleeper)) => Some(Carrier::Reporter(sleeper, reading)),
        (None, None) => None,
    };
    if let Some(carrier) = carrier {
        resets_and_link_loss(&walk, emulated, &carrier).await;
    } else {
        assert!(
            !emulated.reset_radio() && !emulated.cut_link(),
            "conformance: an emulator that resets its radio needs a device to check it with"
        );
    }

    let gw = walk.gw.take().expect("running");
    drop(walk);
    gw.stop().await;
}

/// A removed device whose identity does not survive leaving joins again as a new device
/// (the record of the removed one stays decommissioned, and re-admitting it only makes it
/// pending); blocking the new one decommissions it and takes it off the network.
async fn rejoins_as_new_device(
    walk: &Walk,
    emulated: &dyn Emulated,
    reporter: &str,
    reading: &str,
) {
    let model = walk.device(reporter).and_then(|d| d.model);
    let before: std::collections::HashSet<String> = walk
        .devices()
        .into_iter()
        .map(|d| d.native_address)
        .collect();
    walk.hub()
        .permit_join("r0".into(), 30, "conformance".into())
        .await
        .expect("a join window opens");
    emulated.rejoin(reporter);
    let again = walk
        .until(
            "the removed device joining again as a new device",
            30,
            |w| {
                w.devices()
                    .into_iter()
                    .find(|d| {
                        !before.contains(&d.native_address)
                            && d.model.is_some()
                            && d.model == model
                            && d.lifecycle == "active"
                    })
                    .map(|d| d.native_address)
            },
        )
        .await;
    assert_ne!(again, reporter);
    assert_eq!(
        walk.device(reporter)
            .expect("kept for the record")
            .lifecycle,
        "decommissioned"
    );
    let t = Instant::now();
    walk.until("readings from the device joined again", 20, |w| {
        w.reading_since(&again, reading, t)
    })
    .await;
    let r = walk
        .hub()
        .readmit(walk.id(reporter), "conformance".into())
        .await
        .expect("re-admitted");
    assert_eq!(r.lifecycle.as_deref(), Some("pending"));

    // Remove and block in one step: decommissioned and told to leave.
    let blocked = walk
        .hub()
        .block(walk.id(&again), "conformance".into())
        .await
        .expect("block");
    assert!(blocked.decommissioned.is_some() && blocked.newly_blocked);
    walk.until("the blocked device leaving the network", 10, |_| {
        (!emulated.on_network(&again)).then_some(())
    })
    .await;
    assert_eq!(
        walk.device(&again).expect("kept").lifecycle,
        "decommissioned"
    );
    let r = walk
        .hub()
        .readmit(walk.id(&again), "conformance".into())
        .await
        .expect("re-admitted");
    assert_eq!(r.lifecycle.as_deref(), Some("pending"));
}

/// A technician gives the device's credential (LoRaWAN keys), when its radio needs one.
async fn give_credential(walk: &Walk, emulated: &dyn Emulated, native: &str) {
    if let Some((kind, secret)) = emulated.credential(native) {
        walk.hub()
            .add_credential(walk.id(native), kind, secret, "conformance".into())
            .await
            .expect("the credential is taken");
    }
}

/// A technician adopts a discovered device.
async fn adopt(walk: &Walk, native: &str) {
    let a = walk
        .hub()
        .adopt(walk.id(native), None, "conformance".into())
        .await
        .expect("adopted");
    assert_eq!(a.lifecycle, "active");
}

/// A removed device that keeps transmitting: nothing it sends is recorded.
async fn not_recorded(walk: &Walk, native: &str, reading: &str) {
    let since = Instant::now();
    let seen = walk.device(native).expect("kept").last_seen;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(walk.reading_since(native, reading, since), None);
    assert_eq!(walk.device(native).expect("kept").last_seen, seen);
}

/// Commands reach the actuator and its new state comes back.
async fn commands(walk: &Walk, actuator: &str) {
    let actuator = actuator.to_string();
    walk.until("the actuator being interviewed", 30, |w| {
        w.device(&actuator).filter(|d| d.model.is_some())
    })
    .await;
    for (command, want) in [(DeviceCommand::On, true), (DeviceCommand::Off, false)] {
        let t = Instant::now();
        walk.hub()
            .command(walk.id(&actuator), command, "conformance".into())
            .await
            .expect("the command is sent");
        walk.until("the actuator confirming its state", 10, |w| {
            (w.reading_since(&actuator, "on", t) == Some(Value::Bool(want))).then_some(())
        })
        .await;
    }
}

/// A request for a device that cannot hear now is held, then delivered when it next
/// speaks.
async fn held_request(walk: &Walk, sleeper: &str, interviewed: bool) {
    let sleeper = sleeper.to_string();
    walk.until("the sleeping device being interviewed", 40, |w| {
        w.device(&sleeper).filter(|d| {
            if interviewed {
                d.model.is_some()
            } else {
                d.lifecycle == "active" && d.reachability.is_some()
            }
        })
    })
    .await;
    let answer = walk
        .hub()
        .device_request(DeviceRequest {
            device: walk.id(&sleeper),
            action: DeviceAction::Get {
                attributes: Vec::new(),
            },
            actor: "conformance".into(),
            origin: RequestOrigin::Api,
            correlation_id: None,
            ttl: Some(Duration::from_secs(60)),
            reply_to: None,
            wait_result: false,
        })
        .await
        .expect("the request is taken");
    let DeviceAnswer::Queued { queued, .. } = answer else {
        panic!("conformance: a request for a sleeping device must be held");
    };
    assert_eq!(queued.status, "queued");
    walk.until("the held request being delivered on wake-up", 30, |w| {
        w.audit().into_iter().find(|r| {
            r.action == "device.request"
                && r.details["request_id"] == queued.request_id
                && r.details["status"] == "delivered"
        })
    })
    .await;
}

/// A blocked device is refused even inside a join window, audited, and told to leave.
async fn refused_while_blocked(walk: &Walk, emulated: &dyn Emulated, reporter: &str) {
    let want = walk.id(reporter).to_string();
    walk.until("the blocked device leaving the network", 10, |_| {
        (!emulated.on_network(reporter)).then_some(())
    })
    .await;
    let retried = Instant::now();
    walk.hub()
        .permit_join("r0".into(), 5, "conformance".into())
        .await
        .expect("a join window opens");
    emulated.rejoin(reporter);
    walk.until("the blocked device being refused", 10, |w| {
        w.noticed(retried, |n| {
            matches!(n, Notice::Denied { device, reason } if *device == want && reason.starts_with("blocked"))
        })
        .then_some(())
    })
    .await;
    walk.until("the blocked device refusal being audited", 10, |w| {
        w.audit().into_iter().find(|r| {
            r.action == "device.join"
                && r.outcome == "refused"
                && r.target == want
                && r.details["reason"]
                    .as_str()
                    .is_some_and(|x| x.starts_with("blocked"))
        })
    })
    .await;
    walk.until("the blocked device told to leave", 10, |_| {
        (!emulated.on_network(reporter)).then_some(())
    })
    .await;
}

/// What shows that devices carry on after a reset or a link loss.
enum Carrier {
    /// An actuator takes a command and confirms its state.
    Actuator(String),
    /// A device that reports on its own: a reading named so comes again.
    Reporter(String, &'static str),
}

impl Carrier {
    /// Checks that the device carries on; `on` is the state an actuator is set to.
    async fn carries_on(&self, walk: &Walk, what: &str, on: bool) {
        let t = Instant::now();
        match self {
            Carrier::Actuator(actuator) => {
                let command = if on {
                    DeviceCommand::On
                } else {
                    DeviceCommand::Off
                };
                walk.hub()
                    .command(walk.id(actuator), command, "conformance".into())
                    .await
                    .expect("commands work");
                walk.until(what, 10, |w| {
                    (w.reading_since(actuator, "on", t) == Some(Value::Bool(on))).then_some(())
                })
                .await;
            }
            Carrier::Reporter(device, reading) => {
                walk.until(what, 10, |w| w.reading_since(device, reading, t))
                    .await;
            }
        }
    }
}

/// The radio resets on its own, then its link drops: each time it comes back and
/// devices carry on (each step where the emulator can make it).
async fn resets_and_link_loss(walk: &Walk, emulated: &dyn Emulated, carrier: &Carrier) {
    let mut state = walk.gw().radios[0].state.clone();
    state.borrow_and_update();
    if !emulated.reset_radio() {
        // Cannot be made here.
    } else if emulated.reset_is_silent() {
        // Nothing for the radio to notice: it stays up and follows the restarted radio.
        carrier
            .carries_on(walk, "devices carrying on after the silent reset", true)
            .await;
        assert_eq!(walk.state(), RadioState::Up);
    } else {
        tokio::time::timeout(Duration::from_secs(10), state.changed())
            .await
            .expect("the reset is noticed")
            .unwrap();
        walk.until("the radio up after its reset", 20, |w| {
            (w.state() == RadioState::Up).then_some(())
        })
        .await;
        carrier
            .carries_on(walk, "the actuator answering after the reset", true)
            .await;
    }

    // Link loss: down with a reason, re-opened with backoff, devices carry on.
    if !emulated.cut_link() {
        return;
    }
    walk.until("the radio down after the link dropped", 10, |w| {
        matches!(w.state(), RadioState::Down(_)).then_some(())
    })
    .await;
    walk.until("the radio re-opened", 20, |w| {
        (w.state() == RadioState::Up).then_some(())
    })
    .await;
    carrier
        .carries_on(
            walk,
            "the actuator answering after the link came back",
            false,
        )
        .await;
}
