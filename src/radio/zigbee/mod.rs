//! Zigbee through a TI Z-Stack 3 (ZNP) coordinator: start-up (resume or form), permit join,
//! joins, interviews, reporting set-up, IAS enrollment, readings, commands, removal, recovery.
//!
//! This module owns the driver loop: [`ZigbeeDriver`] keeps what is known about devices
//! across links, and one `Coordinator` per open link runs the conversation (commands from
//! the hub, indications from the coordinator, timers) one thing at a time. The codec
//! (`fieldgate_zigbee`) owns every byte layout and this folder owns none. Rules it keeps:
//! - **one outstanding SREQ** (`transport`, over the shared serial
//!   [`session`](crate::radio::session)), with a timeout; indications that arrive meanwhile
//!   are queued and handled in order afterwards;
//! - **interviews are state machines per device** (`interview`), driven by responses and
//!   timers, so several devices are interviewed at once and a sleepy device that stops
//!   answering keeps what was learnt and resumes the moment it next speaks;
//! - **recovery**: an unsolicited SYS_RESET_IND or two failed watchdog pings re-run start-up on
//!   the same link (a request that times out brings the next ping forward); a broken link returns `Err` and the supervisor re-opens it with backoff;
//! - bad bytes cost a counter and a resync (the codec's parser), never a panic.
//!
//! The other files each hold one part of `impl Coordinator`: `options`, `devices` (the
//! device model, no IO), `transport`, `nv`, `startup`, `security` (network key, install
//! codes, key rotation), `definitions` (device definitions: built-in and the site's),
//! `interview`, `indications`, `incoming_ext` (AF_INCOMING_MSG_EXT and
//! the payloads the coordinator holds back), `green_power`, `commands`, `timers` and
//! `backup`.
//! Nothing here decides admission or policy: that is the hub's.

mod backup;
mod commands;
pub mod definitions;
mod devices;
mod green_power;
mod incoming_ext;
mod indications;
mod interview;
mod nv;
mod options;
mod security;
mod spec;
mod startup;
mod timers;
mod transport;

pub use options::ZigbeeOptions;
pub use spec::SPEC;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use fieldgate_zigbee::mt::MtParserStats;
use fieldgate_zigbee::zcl::ZclFrame;
use fieldgate_zigbee::{IeeeAddr, ZnpCommand};
use tokio::time::Instant;

use self::commands::{PendingCommand, PendingRefresh};
use self::definitions::Catalog;
use self::devices::Device;
use self::security::PendingRotation;
use self::transport::{Inbound, ZnpSession};
use super::link::Link;
use super::{Driver, DriverFuture, DriverIo, RadioCounters};
use crate::model::{DeviceEvent, DeviceEventKind};

/// The coordinator's application endpoint.
const OUR_ENDPOINT: u8 = 1;
/// Credential kind of the network key (owner `radio:<name>`).
pub const NETWORK_KEY_KIND: &str = "zigbee_network_key";
/// Credential kind of a rotation's new network key until the switch (owner `radio:<name>`).
pub const PENDING_NETWORK_KEY_KIND: &str = "zigbee_network_key_pending";
/// Credential kind of a device's install code (owner: the device id, `zigbee:0x…`).
pub const INSTALL_CODE_KIND: &str = "zigbee_install_code";
/// Longest `key_switch_delay` accepted.
pub const MAX_KEY_SWITCH_DELAY: Duration = Duration::from_secs(300);

/// The Zigbee ZNP driver. Device knowledge (interview progress included) outlives a link.
#[derive(Default)]
pub struct ZigbeeDriver {
    devices: HashMap<IeeeAddr, Device>,
    /// The policy's "joins must use install codes", applied after every coordinator start.
    require_install_codes: bool,
}

impl ZigbeeDriver {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Driver for ZigbeeDriver {
    fn run<'a>(&'a mut self, link: Link, io: &'a mut DriverIo) -> DriverFuture<'a> {
        Box::pin(async move {
            let options = ZigbeeOptions::parse(&io.options)
                .with_context(|| format!("radio `{}`: invalid [radio.options]", io.radio))?;
            let counters = io.counters.clone();
            let (catalog, errors) = Catalog::load(&options.definitions_dir);
            for e in &errors {
                tracing::error!(radio = %io.radio, error = %e, "device definitions file not used");
            }
            tracing::info!(radio = %io.radio, devices = catalog.devices().len(), dir = %options.definitions_dir.display(), "device definitions loaded");
            let mut coordinator = Coordinator {
                catalog: Arc::new(catalog),
                link: transport::session(link, &io.radio, counters.clone()),
                io,
                opts: options,
                devices: &mut self.devices,
                stats: counters,
                require_install_codes: &mut self.require_install_codes,
                rotation: None,
                line_stats_reported: MtParserStats::default(),
                coordinator_ieee: IeeeAddr(0),
                tsn: 0,
                trans_id: 0,
                commands: HashMap::new(),
                refreshes: Vec::new(),
                unresolved: HashMap::new(),
                unresolved_ieee: HashMap::new(),
                gpd_seen: Default::default(),
                next_watchdog: Instant::now(),
                join_open_until: None,
                ping_failures: 0,
                restart_needed: true,
            };
            coordinator.run().await
        })
    }
}

/// The conversation with one coordinator over one open link: the parts that live as long
/// as the link, and borrows of what the driver keeps across links.
struct Coordinator<'a> {
    /// The serial session with the coordinator: one SREQ in flight, indications queued.
    link: ZnpSession,
    io: &'a mut DriverIo,
    opts: ZigbeeOptions,
    /// Built-in and site device definitions, as loaded when the link opened.
    catalog: Arc<Catalog>,
    devices: &'a mut HashMap<IeeeAddr, Device>,
    stats: std::sync::Arc<RadioCounters>,
    require_install_codes: &'a mut bool,
    rotation: Option<PendingRotation>,
    /// The MT parser's counters as last logged.
    line_stats_reported: MtParserStats,
    /// The coordinator's own IEEE address.
    coordinator_ieee: IeeeAddr,
    tsn: u8,
    trans_id: u8,
    commands: HashMap<u8, PendingCommand>,
    refreshes: Vec<PendingRefresh>,
    /// Frames from network addresses not mapped to an IEEE address yet.
    unresolved: HashMap<u16, (Instant, Vec<ZnpCommand>)>,
    /// Frames from IEEE addresses whose network address is being asked for.
    unresolved_ieee: HashMap<IeeeAddr, (Instant, Vec<ZnpCommand>)>,
    /// Green Power devices already logged on this link.
    gpd_seen: green_power::GpdSeen,
    next_watchdog: Instant,
    /// Until when the join window this link opened is open (closed at shutdown).
    join_open_until: Option<Instant>,
    ping_failures: u32,
    restart_needed: bool,
}

impl Coordinator<'_> {
    async fn run(&mut self) -> Result<()> {
        loop {
            if self.restart_needed {
                self.startup().await?;
                continue;
            }
            while let Some(cmd) = self.next_queued_indication() {
                self.on_indication(cmd).await?;
                if self.restart_needed {
                    break;
                }
            }
            if self.restart_needed {
                continue;
            }
            let deadline = self.next_timer();
            tokio::select! {
                biased;
                cmd = self.io.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await?,
                    None => return Ok(()),
                },
                frame = self.link.next_unsolicited(deadline) => {
                    self.count_line_errors();
                    match frame? {
                        Some(Inbound::Indication(cmd)) => self.on_indication(cmd).await?,
                        // Replies are never unsolicited: the session drops those nobody
                        // waits for.
                        Some(Inbound::Srsp(_)) => {}
                        None => self.on_timers().await?,
                    }
                }
            }
        }
    }

    fn next_tsn(&mut self) -> u8 {
        self.tsn = self.tsn.wrapping_add(1);
        self.tsn
    }

    fn next_trans_id(&mut self) -> u8 {
        self.trans_id = self.trans_id.wrapping_add(1);
        self.trans_id
    }

    async fn emit(&mut self, native_address: String, kind: DeviceEventKind) -> Result<()> {
        self.emit_with_link(native_address, kind, None).await
    }

    /// Like `emit`, with how the frame behind the event was received.
    async fn emit_with_link(
        &mut self,
        native_address: String,
        kind: DeviceEventKind,
        link: Option<crate::model::LinkMetrics>,
    ) -> Result<()> {
        let ev = DeviceEvent {
            radio: self.io.radio.clone(),
            protocol: self.io.protocol,
            native_address,
            received_at: SystemTime::now(),
            kind,
            link,
        };
        self.io
            .events
            .send(ev)
            .await
            .map_err(|_| anyhow!("the hub stopped taking events"))
    }

    fn zcl_request(
        &mut self,
        nwk: u16,
        ep: u8,
        cluster: u16,
        frame: ZclFrame,
    ) -> Result<ZnpCommand> {
        let data = frame.encode().context("encoding a ZCL frame")?;
        let trans_id = self.next_trans_id();
        Ok(ZnpCommand::af_data_request(
            nwk,
            ep,
            OUR_ENDPOINT,
            cluster,
            trans_id,
            data,
        ))
    }
}
