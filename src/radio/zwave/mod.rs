//! Z-Wave through a Serial API controller (500/700/800 series sticks, ser2net, the emulator):
//! start-up, node discovery, interviews that resume across wake-ups, inclusion and exclusion,
//! readings, commands with TX status, sleeping nodes, recovery, NVM backup.
//!
//! This module owns the driver loop: [`ZwaveDriver`] keeps what is known about nodes across
//! links, and one `Controller` per open link runs the conversation (commands from the hub,
//! frames from the controller, timers) one thing at a time. The codec (`fieldgate_zwave`)
//! owns every byte layout and this folder owns none. Rules it keeps:
//! - **one request in flight, one frame per write** (`transport`), ACK → response →
//!   callback with the spec's timeouts and retries; **one SendData in flight** until its
//!   callback;
//! - **interviews resume** (`nodes`, `interview`): a step a sleeping node did not answer is
//!   tried again on its next Wake Up Notification, never from the start;
//! - **sleeping nodes**: on a Wake Up Notification the hub is told the node spoke (it hands
//!   over the requests it held), they are sent, then Wake Up No More Information;
//! - **recovery**: requests failing at the controller (no ACK, no callback) in a row soft-
//!   reset it and start over (a controller quiet for `watchdog_interval` is asked for its
//!   version, so one that locked up while idle is found too); a controller that stays silent, or a broken link, returns
//!   `Err` and the supervisor re-opens the link with backoff;
//! - bad bytes cost a NAK, a counter and a resync, never a panic.
//!
//! The other files each hold one part of `impl Controller`: `options`, `nodes` (state, no
//! IO), `progress` (nodes kept across daemon restarts, in the radio's state directory),
//! `transport`, `startup`, `interview`, `inbound` (frames from nodes), `commands`,
//! `inclusion` and `backup`. Nothing here decides admission or policy: that is the hub's.

mod backup;
mod commands;
mod inbound;
mod inclusion;
mod interview;
mod nodes;
mod options;
mod progress;
mod spec;
mod startup;
mod transport;

pub use options::ZwaveOptions;
pub use spec::SPEC;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use fieldgate_zwave::cc::{Cc, WakeUp};
use fieldgate_zwave::message::{Callback, TransmitStatus};
use fieldgate_zwave::{CallbackIds, Request};
use tokio::time::Instant;

use self::inclusion::Window;
use self::nodes::Node;
use self::transport::{Answer, Failure, HostSession, Timeouts};
use super::link::Link;
use super::{Driver, DriverFuture, DriverIo, RadioCounters};
use crate::model::{DeviceEvent, DeviceEventKind, LinkMetrics, RadioState};

/// The format name of `fieldgate radio backup` for Z-Wave.
pub const BACKUP_FORMAT: &str = "zwave-nvm";

/// The Z-Wave driver. Node knowledge (interview progress included) outlives a link.
#[derive(Default)]
pub struct ZwaveDriver {
    nodes: BTreeMap<u8, Node>,
    /// The network the nodes belong to: a controller with another home id starts afresh.
    home_id: Option<u32>,
    /// What an earlier run of the daemon kept was read (once, at the first start).
    loaded: bool,
    /// When an exclusion was last started for each node (see `inclusion::remove`).
    exclusions: std::collections::HashMap<u8, tokio::time::Instant>,
}

impl ZwaveDriver {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Driver for ZwaveDriver {
    fn run<'a>(&'a mut self, link: Link, io: &'a mut DriverIo) -> DriverFuture<'a> {
        Box::pin(async move {
            let opts = ZwaveOptions::parse(&io.options)
                .with_context(|| format!("radio `{}`: invalid [radio.options]", io.radio))?;
            if !self.loaded {
                self.loaded = true;
                if let Some(dir) = &io.state_dir {
                    match progress::load(dir) {
                        Ok(Some((home_id, nodes))) => {
                            tracing::info!(radio = %io.radio, home_id = %format!("{home_id:08x}"), nodes = nodes.len(), "node knowledge and interview progress restored");
                            self.home_id = Some(home_id);
                            self.nodes = nodes;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(radio = %io.radio, "kept interview progress not used (interviews start afresh): {e:#}")
                        }
                    }
                }
            }
            let counters = io.counters.clone();
            let mut controller = Controller {
                link: HostSession::new(link, &io.radio, counters.clone()),
                io,
                opts,
                nodes: &mut self.nodes,
                exclusions: &mut self.exclusions,
                known_home_id: &mut self.home_id,
                counters,
                ids: CallbackIds::new(),
                home_id: 0,
                own_node_id: 1,
                chip: startup::ChipInfo::default(),
                failures: 0,
                window: None,
                inclusion_until: None,
                restart_needed: true,
                next_watchdog: None,
            };
            controller.run().await
        })
    }
}

/// The conversation with one controller over one open link.
struct Controller<'a> {
    link: HostSession,
    io: &'a mut DriverIo,
    opts: ZwaveOptions,
    nodes: &'a mut BTreeMap<u8, Node>,
    exclusions: &'a mut std::collections::HashMap<u8, tokio::time::Instant>,
    known_home_id: &'a mut Option<u32>,
    counters: Arc<RadioCounters>,
    ids: CallbackIds,
    home_id: u32,
    own_node_id: u8,
    chip: startup::ChipInfo,
    /// Requests in a row that failed at the controller (not at a node).
    failures: u32,
    /// An inclusion or exclusion in progress.
    window: Option<Window>,
    /// The end of the join window the hub asked for. The controller leaves inclusion
    /// mode after each node it adds (the spec's Stop); inclusion is started again while
    /// the window lasts, once the new node's interview has run.
    inclusion_until: Option<Instant>,
    restart_needed: bool,
    /// When the quiet controller is next asked whether it still runs (`None`: the
    /// check is off).
    next_watchdog: Option<Instant>,
}

/// After a watchdog request the controller did not answer, the next one follows this soon,
/// so that a locked-up controller reaches `failures_before_reset` in seconds.
const WATCHDOG_RETRY: Duration = Duration::from_secs(1);

/// How a SendData ended, once the controller is done with it.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    /// The node acknowledged it.
    Delivered { rssi: Option<i8> },
    /// It did not reach the node (asleep, gone, out of range): the status says how.
    NotDelivered(String),
}

impl Controller<'_> {
    async fn run(&mut self) -> Result<()> {
        loop {
            if self.restart_needed {
                self.startup().await?;
                self.restart_needed = false;
                self.heard_from_controller();
                let _ = self.io.state.send(RadioState::Up);
                continue;
            }
            while let Some(frame) = self.link.pop_unsolicited() {
                self.heard_from_controller();
                self.on_frame(frame).await?;
            }
            if self.restart_needed {
                continue;
            }
            if let Some(node) = self.interview_due() {
                self.interview(node).await?;
                continue;
            }
            if self.inclusion_to_resume() {
                self.resume_inclusion().await?;
                continue;
            }
            let deadline = self.next_timer();
            tokio::select! {
                biased;
                cmd = self.io.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await?,
                    None => return Ok(()),
                },
                frame = self.link.next_unsolicited(deadline) => match frame? {
                    Some(frame) => {
                        self.heard_from_controller();
                        self.on_frame(frame).await?
                    }
                    None => self.on_timers().await?,
                },
            }
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            ack: self.opts.ack_timeout,
            response: self.opts.response_timeout,
            callback: self.opts.callback_timeout,
        }
    }

    /// The native address of node `node` (`<home id>-<node id>`, see `docs/api.md`).
    fn address(&self, node: u8) -> String {
        format!("{:08x}-{node}", self.home_id)
    }

    /// The node id in a native address of this network, if it is one.
    fn node_of(&self, native_address: &str) -> Option<u8> {
        let (home, node) = native_address.split_once('-')?;
        let home = u32::from_str_radix(home, 16).ok()?;
        let node: u8 = node.parse().ok()?;
        (home == self.home_id && (1..=232).contains(&node)).then_some(node)
    }

    /// The controller spoke: the watchdog waits a whole interval again.
    fn heard_from_controller(&mut self) {
        let interval = self.opts.watchdog_interval;
        self.next_watchdog = (!interval.is_zero()).then(|| Instant::now() + interval);
    }

    /// The earliest timer: the join window's end, an awake node's return to sleep, the
    /// watchdog.
    fn next_timer(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let window = self.window.as_ref().map(|w| w.until);
        let awake = self.nodes.values().filter_map(|n| n.awake_until).min();
        [Some(far), window, awake, self.next_watchdog]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far)
    }

    async fn on_timers(&mut self) -> Result<()> {
        let now = Instant::now();
        if self.next_watchdog.is_some_and(|t| now >= t) {
            // Quiet for a whole interval: a controller that locked up while idle is found
            // here, not at the next command. Its failures count towards the soft reset.
            if self.request(&Request::GetControllerVersion).await?.is_err() {
                tracing::warn!(radio = %self.io.radio, "the quiet controller did not answer the watchdog");
                self.next_watchdog = Some(Instant::now() + WATCHDOG_RETRY);
            }
            if self.restart_needed {
                return Ok(());
            }
        }
        if self.window.as_ref().is_some_and(|w| now >= w.until) {
            self.close_window().await?;
        }
        let due: Vec<u8> = self
            .nodes
            .values()
            .filter(|n| n.awake_until.is_some_and(|t| now >= t))
            .map(|n| n.id)
            .collect();
        for node in due {
            self.send_to_sleep(node).await?;
        }
        Ok(())
    }

    /// Wake Up No More Information: the node may sleep again.
    async fn send_to_sleep(&mut self, node: u8) -> Result<()> {
        let Some(n) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        n.awake_until = None;
        // A listening node kept "awake" after its inclusion has nothing to be told.
        if !(n.sleeps() && n.supports(fieldgate_zwave::cc::id::WAKE_UP)) {
            return Ok(());
        }
        let sent = self
            .send_cc(node, &Cc::WakeUp(WakeUp::NoMoreInformation))
            .await?;
        tracing::debug!(radio = %self.io.radio, node, ?sent, "node sent back to sleep");
        Ok(())
    }

    /// Writes what is known about the nodes to the radio's state directory, if it has one.
    /// A failure is logged, not fatal: the interviews then resume only within this run.
    fn keep_progress(&self) {
        let Some(dir) = &self.io.state_dir else {
            return;
        };
        if let Err(e) = progress::save(dir, self.home_id, self.nodes) {
            tracing::warn!(radio = %self.io.radio, "interview progress not kept: {e:#}");
        }
    }

    async fn emit(&mut self, node: u8, kind: DeviceEventKind) -> Result<()> {
        self.emit_with_link(node, kind, None).await
    }

    async fn emit_with_link(
        &mut self,
        node: u8,
        kind: DeviceEventKind,
        link: Option<LinkMetrics>,
    ) -> Result<()> {
        let ev = DeviceEvent {
            radio: self.io.radio.clone(),
            protocol: self.io.protocol,
            native_address: self.address(node),
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

    /// One request to the controller. A failure at the controller (no ACK, no answer)
    /// counts towards its recovery; `Err` only when the link or the recovery failed.
    async fn request(&mut self, req: &Request) -> Result<std::result::Result<Answer, Failure>> {
        let answer = self.link.execute(req, self.timeouts()).await?;
        // A node information frame that never comes is the node's silence, not the
        // controller's (it answered the request itself).
        let nodes_fault = matches!(req, Request::RequestNodeInfo { .. });
        match &answer {
            Ok(_) => {
                self.failures = 0;
                self.heard_from_controller();
            }
            Err(Failure::Undecodable) => {}
            Err(Failure::NoCallback) if nodes_fault => {}
            Err(why) => {
                self.failures += 1;
                tracing::warn!(radio = %self.io.radio, function = req.function(), failures = self.failures, "controller request failed: {why}");
                if self.failures >= self.opts.failures_before_reset {
                    self.recover().await?;
                }
            }
        }
        Ok(answer)
    }

    /// The controller failed requests in a row (jammed, or its firmware hung): soft-reset it
    /// and start over. One that does not come back is a failed link for the supervisor.
    async fn recover(&mut self) -> Result<()> {
        self.failures = 0;
        tracing::warn!(radio = %self.io.radio, "controller not answering; soft reset");
        let _ = self.io.state.send(RadioState::Down(
            "controller not answering; soft reset".into(),
        ));
        let t = Timeouts {
            callback: Duration::from_secs(5),
            ..self.timeouts()
        };
        match self.link.execute(&Request::SoftReset, t).await? {
            Ok(_) => {
                self.restart_needed = true;
                Ok(())
            }
            Err(why) => bail!("the controller did not come back after a soft reset: {why}"),
        }
    }

    /// Sends a command class to a node and waits for the controller's TX status, with the
    /// spec's retries: "not sent" (busy) 3× after 500 ms; jammed (Fail with no airtime) 5×
    /// after 1 s; no ACK from the node up to `send_attempts` for a node that listens.
    async fn send_cc(&mut self, node: u8, cc: &Cc) -> Result<Sent> {
        let payload = cc.encode().context("encoding a command class")?;
        let listens = self.nodes.get(&node).is_none_or(|n| !n.sleeps());
        let (mut busy, mut jammed, mut no_ack) = (0u32, 0u32, 0u32);
        loop {
            let req = Request::send_data(node, payload.clone(), self.ids.next());
            let answer = match self.request(&req).await? {
                Ok(a) => a,
                Err(Failure::NoCallback) => {
                    // The controller holds the frame: abort it before anything else goes.
                    self.link
                        .send_unacknowledged(&Request::SendDataAbort)
                        .await?;
                    return Ok(Sent::NotDelivered(
                        "the controller gave no TX status".into(),
                    ));
                }
                Err(why) => return Ok(Sent::NotDelivered(why.to_string())),
            };
            let (status, report) = match answer.callback {
                Some(Callback::SendData { status, report, .. }) => (status, report),
                _ => {
                    busy += 1;
                    if busy >= 3 {
                        return Ok(Sent::NotDelivered("the controller is busy".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            match status {
                TransmitStatus::Ok => {
                    return Ok(Sent::Delivered {
                        rssi: report.and_then(|r| fieldgate_zwave::message::rssi::dbm(r.ack_rssi)),
                    })
                }
                TransmitStatus::Fail if report.is_none_or(|r| r.tx_ticks == 0) => {
                    jammed += 1;
                    if jammed >= 5 {
                        // A transmitter stuck in "jammed" (700-series firmware bugs) is
                        // freed by a soft reset; the frame itself is reported as lost.
                        self.recover().await?;
                        return Ok(Sent::NotDelivered("the radio channel is jammed".into()));
                    }
                    tracing::warn!(radio = %self.io.radio, node, "controller reports a jammed channel; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                TransmitStatus::NoAck if listens && no_ack + 1 < self.opts.send_attempts => {
                    no_ack += 1;
                }
                other => {
                    return Ok(Sent::NotDelivered(format!(
                        "node {node} did not acknowledge ({other:?})"
                    )))
                }
            }
        }
    }
}
