//! Frames the controller sends on its own: commands from nodes (reports become readings, a
//! Wake Up Notification opens the node's awake window), node information, the controller's
//! own restart, and the callbacks of an inclusion or exclusion in progress.
//!
//! Frames it cannot use are counted (`undecodable`; S0/S2-encapsulated frames, which are
//! not decrypted here, in `not_decrypted` with a log line saying so) and dropped.

use anyhow::Result;
use fieldgate_zwave::cc::{Cc, WakeUp};
use fieldgate_zwave::message::{ApplicationUpdate, Inbound as Decoded, Unsolicited};
use fieldgate_zwave::DataFrame;
use tokio::time::Instant;

use super::interview::node_command;
use super::Controller;
use crate::model::{DeviceEventKind, LinkMetrics, Reading, Value};
use crate::radio::RadioCounters;

impl Controller<'_> {
    pub(super) async fn on_frame(&mut self, frame: DataFrame) -> Result<()> {
        let decoded = match Decoded::decode(&frame) {
            Ok(d) => d,
            Err(e) => {
                RadioCounters::count(&self.counters.undecodable);
                tracing::debug!(radio = %self.io.radio, function = frame.function, error = %e, "controller frame not decodable");
                return Ok(());
            }
        };
        match decoded {
            Decoded::Callback(cb) => self.on_window_callback(cb).await,
            Decoded::Unsolicited(Unsolicited::SerialApiStarted(s)) => {
                tracing::warn!(radio = %self.io.radio, reason = ?s.wake_up_reason, "the controller restarted; starting over");
                self.restart_needed = true;
                Ok(())
            }
            Decoded::Unsolicited(Unsolicited::ApplicationUpdate(u)) => match u {
                ApplicationUpdate::NodeInfoReceived(info) => {
                    let node = info.node_id;
                    if !self.nodes.contains_key(&node) {
                        self.add_node(node).await?;
                    }
                    self.learn_nif(node, &info);
                    Ok(())
                }
                ApplicationUpdate::NodeAdded(info) => {
                    // Included by another controller of the network: a join the hub judges.
                    self.add_node(info.node_id).await?;
                    self.announce(info.node_id).await
                }
                ApplicationUpdate::NodeRemoved { node_id } => self.node_left(node_id).await,
                _ => Ok(()),
            },
            Decoded::Unsolicited(Unsolicited::ApplicationCommand(_))
            | Decoded::Unsolicited(Unsolicited::BridgeApplicationCommand(_)) => {
                let Some((node, payload, rssi)) = node_command(&frame) else {
                    return Ok(());
                };
                match Cc::decode(&payload) {
                    Ok(cc) => self.on_node_cc(node, &cc, rssi).await,
                    Err(e) => {
                        RadioCounters::count(&self.counters.undecodable);
                        tracing::debug!(radio = %self.io.radio, node, error = %e, "command class not decodable");
                        Ok(())
                    }
                }
            }
            Decoded::Unsolicited(_) | Decoded::Response(_) => {
                RadioCounters::count(&self.counters.unhandled);
                Ok(())
            }
        }
    }

    /// A command class from node `node`.
    pub(super) async fn on_node_cc(&mut self, node: u8, cc: &Cc, rssi: Option<i8>) -> Result<()> {
        if node == 0 || node == self.own_node_id {
            return Ok(());
        }
        // Classic Z-Wave nodes are 1-232; 233-255 are reserved or broadcast, never a
        // device's source (a corrupted or forged frame): counted, not learnt.
        if node > 232 {
            RadioCounters::count(&self.counters.unhandled);
            tracing::debug!(radio = %self.io.radio, node, "a frame from a node id no device can have: ignored");
            return Ok(());
        }
        if !self.nodes.contains_key(&node) {
            // A node this driver has not met (included by another controller, or before a
            // restart of the daemon): learn it now.
            self.add_node(node).await?;
        }
        let (inner, _endpoint) = cc.innermost();
        if let Cc::Secure(s) = inner {
            RadioCounters::count(&self.counters.not_decrypted);
            tracing::info!(radio = %self.io.radio, node, scheme = ?s.scheme, "S0/S2-encapsulated frame not decrypted (security is not supported by this driver)");
            return Ok(());
        }
        let link = rssi
            .and_then(fieldgate_zwave::message::rssi::dbm)
            .map(|dbm| LinkMetrics {
                rssi_dbm: Some(f64::from(dbm)),
                ..LinkMetrics::default()
            });
        if let Cc::WakeUp(WakeUp::Notification) = inner {
            return self.woke_up(node, link).await;
        }
        let readings: Vec<Reading> = fieldgate_zwave::normalize(cc)
            .into_iter()
            .map(|r| Reading {
                name: r.name.to_string(),
                value: match r.value {
                    fieldgate_zwave::ReadingValue::Number(n) => Value::Number(n),
                    fieldgate_zwave::ReadingValue::Bool(b) => Value::Bool(b),
                },
                unit: r.unit.map(str::to_string),
            })
            .flat_map(crate::model::vocabulary::normalize)
            .collect();
        if let Some(on) = readings
            .iter()
            .find_map(|r| match (r.name.as_str(), &r.value) {
                ("on", Value::Bool(b)) => Some(*b),
                _ => None,
            })
        {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.on = Some(on);
            }
        }
        if readings.is_empty() {
            tracing::debug!(radio = %self.io.radio, node, cc = cc.cc_id(), command = ?cc.command(), "command with no reading");
            return Ok(());
        }
        self.emit_with_link(node, DeviceEventKind::Readings(readings), link)
            .await
    }

    /// A sleeping node woke up: tell the hub it spoke (it hands over what it held for the
    /// node), keep it awake for `wake_up_hold` (longer while requests keep coming), continue
    /// its interview, then send it back to sleep (`on_timers`).
    ///
    /// The hub learns it spoke from its battery level, asked now (a fresh value each
    /// wake-up); a node that gives none, or is still being interviewed, is reported with no
    /// readings.
    async fn woke_up(&mut self, node: u8, link: Option<LinkMetrics>) -> Result<()> {
        tracing::debug!(radio = %self.io.radio, node, "wake up notification");
        let until = Instant::now() + self.opts.wake_up_hold;
        let battery = match self.nodes.get_mut(&node) {
            Some(n) => {
                n.awake_until = Some(until);
                n.reported && n.supports(fieldgate_zwave::cc::id::BATTERY)
            }
            None => false,
        };
        if battery {
            let get = Cc::Battery(fieldgate_zwave::cc::Battery::Get);
            if self.ask(node, get).await?.is_some() {
                return Ok(());
            }
        }
        self.emit_with_link(node, DeviceEventKind::Readings(Vec::new()), link)
            .await
    }

    /// Node `node` is no longer in the network.
    pub(super) async fn node_left(&mut self, node: u8) -> Result<()> {
        if self.nodes.remove(&node).is_some() {
            self.keep_progress();
            self.emit(node, DeviceEventKind::Left).await?;
        }
        Ok(())
    }
}
