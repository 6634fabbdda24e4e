//! Start-up on a freshly opened link (or after the controller restarted): what the
//! controller is (capabilities, version, home id and own node id, init data) and which
//! nodes it has (protocol info for each), reported to the hub as devices.
//!
//! Order as zwave-js' `Controller.ts` (`queryCapabilities`, `identify`, init data), each
//! request one at a time; optional functions only when the controller's 0x07 bitmask lists
//! them. Must not interview nodes (that is `interview.rs`, run from the loop).

use anyhow::{bail, Result};
use fieldgate_zwave::function as func;
use fieldgate_zwave::message::Response;
use fieldgate_zwave::Request;
use serde::Serialize;

use super::nodes::Node;
use super::transport::Answer;
use super::Controller;
use crate::model::{DeviceEventKind, RadioState};
use crate::radio::RadioCounters;

/// What the controller said about itself (kept for backups and logs).
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct ChipInfo {
    /// Serial API firmware version.
    pub firmware: String,
    pub manufacturer_id: u16,
    pub product_type: u16,
    pub product_id: u16,
    /// "Z-Wave 7.17".
    pub library_version: String,
    pub library_type: u8,
    /// Chip type and version from the init data (5 = 500 series, 7 = 700, 8 = 800).
    pub chip_type: Option<u8>,
    pub chip_version: Option<u8>,
    pub api_version: u8,
    #[serde(skip)]
    pub functions: Vec<u8>,
}

impl ChipInfo {
    pub(super) fn supports(&self, function: u8) -> bool {
        self.functions.contains(&function)
    }

    /// The chip family ("500", "700", "800"), by chip type: backups only restore within one.
    pub(super) fn family(&self) -> Option<&'static str> {
        match self.chip_type? {
            0x05 => Some("500"),
            0x07 => Some("700"),
            0x08 => Some("800"),
            _ => None,
        }
    }
}

impl Controller<'_> {
    pub(super) async fn startup(&mut self) -> Result<()> {
        let _ = self.io.state.send(RadioState::Starting);
        RadioCounters::count(&self.counters.startups);
        self.link.clear_unsolicited();
        self.window = None;
        // INS12350 §6.1: a NAK first, so a controller mid-frame starts over.
        self.link.send_unacknowledged_bytes(&[0x15]).await?;

        let caps = match self
            .must(&Request::GetSerialApiCapabilities)
            .await?
            .response
        {
            Some(Response::SerialApiCapabilities(c)) => c,
            other => bail!("unexpected answer to GetSerialApiCapabilities: {other:?}"),
        };
        let mut chip = ChipInfo {
            firmware: format!("{}.{}", caps.firmware_major, caps.firmware_minor),
            manufacturer_id: caps.manufacturer_id,
            product_type: caps.product_type,
            product_id: caps.product_id,
            functions: caps.supported_functions(),
            ..ChipInfo::default()
        };
        if let Some(Response::ControllerVersion {
            library_version,
            library_type,
        }) = self.must(&Request::GetControllerVersion).await?.response
        {
            chip.library_version = library_version;
            chip.library_type = library_type;
        }
        match self.must(&Request::MemoryGetId).await?.response {
            Some(Response::MemoryGetId { home_id, node_id }) => {
                self.home_id = home_id;
                self.own_node_id = node_id;
            }
            other => bail!("unexpected answer to GetControllerId: {other:?}"),
        }
        let init = match self.must(&Request::GetSerialApiInitData).await?.response {
            Some(Response::SerialApiInitData(d)) => d,
            other => bail!("unexpected answer to GetSerialApiInitData: {other:?}"),
        };
        chip.api_version = init.api_version;
        chip.chip_type = init.chip.map(|c| c.0);
        chip.chip_version = init.chip.map(|c| c.1);
        if chip.supports(func::GET_CONTROLLER_CAPABILITIES) {
            self.must(&Request::GetControllerCapabilities).await?;
        }
        tracing::info!(
            radio = %self.io.radio,
            home_id = %format!("{:08x}", self.home_id),
            node_id = self.own_node_id,
            library = %chip.library_version,
            firmware = %chip.firmware,
            chip_type = ?chip.chip_type,
            nodes = init.node_ids().len(),
            "Z-Wave controller started"
        );
        self.chip = chip;

        // Another network (a different stick, or one reset): what was known is not about it.
        if *self.known_home_id != Some(self.home_id) {
            self.nodes.clear();
            *self.known_home_id = Some(self.home_id);
        }
        let present = init.node_ids();
        let gone: Vec<u8> = self
            .nodes
            .keys()
            .copied()
            .filter(|n| !present.contains(n))
            .collect();
        for node in gone {
            self.nodes.remove(&node);
            self.emit(node, DeviceEventKind::Left).await?;
        }
        for node in present {
            if node == self.own_node_id {
                continue;
            }
            self.add_node(node).await?;
        }
        self.keep_progress();
        Ok(())
    }

    /// A request start-up cannot do without: a failure here fails the link.
    async fn must(&mut self, req: &Request) -> Result<Answer> {
        match self.link.execute(req, self.timeouts()).await? {
            Ok(a) => Ok(a),
            Err(why) => bail!(
                "controller start-up: function {:#04x}: {why}",
                req.function()
            ),
        }
    }

    /// Learns a node's protocol info and tells the hub what it is (a device the gateway
    /// knows is updated; an unknown one is ignored by the hub). Not a join: a node already
    /// on the controller's network is not "joining", and a join outside a window would be
    /// refused. Nodes join through an inclusion ([`Controller::announce`]).
    pub(super) async fn add_node(&mut self, node: u8) -> Result<()> {
        let info = match self
            .request(&Request::GetNodeProtocolInfo { node_id: node })
            .await?
        {
            Ok(Answer {
                response: Some(Response::NodeProtocolInfo(p)),
                ..
            }) => Some(p),
            _ => None,
        };
        let fresh = !self.nodes.contains_key(&node);
        let n = self.nodes.entry(node).or_insert_with(|| Node::new(node));
        if let Some(p) = info {
            n.device_class = Some(p.device_class);
            n.protocol = Some(p);
        }
        if fresh && !n.reported {
            // What is known so far (reachability first: it decides holding).
            let info = n.info();
            self.emit(node, DeviceEventKind::Interviewed(info)).await?;
        }
        Ok(())
    }

    /// Tells the hub node `node` joined (once per node and driver): after its inclusion, or
    /// when a join window opens for nodes the controller had before (adopting a network).
    pub(super) async fn announce(&mut self, node: u8) -> Result<()> {
        let Some(n) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        if n.announced {
            return Ok(());
        }
        n.announced = true;
        let info = n.info();
        self.emit(node, DeviceEventKind::Joined).await?;
        self.emit(node, DeviceEventKind::Interviewed(info)).await
    }
}
