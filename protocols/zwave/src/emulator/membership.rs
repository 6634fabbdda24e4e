//! Who is in the network: inclusion (AddNodeToNetwork), exclusion (RemoveNodeFromNetwork)
//! and failed nodes (IsFailedNode, RemoveFailedNode), with the status callbacks a
//! controller sends (zwave-js `serialapi/network-mgmt/AddNodeToNetworkRequest.ts`,
//! `RemoveNodeFromNetworkRequest.ts`, `RemoveFailedNodeMessages.ts`).
//!
//! Inclusion: `mode | flags, callback` with mode 1-3 starts it: Ready (1); if a node is
//! waiting ([`super::EmulatorConfig::pending`]), NodeFound (2), AddingSlave (3, with the
//! node's id and NIF), ProtocolDone (5); the host then sends Stop (mode 5) and gets Done
//! (6, node id) with the Stop's callback id. Stop while still looking gets Done with node
//! 0; Stop in the middle of the protocol gets Failed (7) and the node keeps waiting.
//!
//! Exclusion: Ready (1); when a node's button is pressed, NodeFound (2), RemovingSlave (3,
//! node id and NIF), Done (6, node id): the node is out of the network, back to factory
//! state, and waits to be included again. Nobody presses: nothing more comes, and the host
//! times out and stops (Done with node 0).

use std::time::Duration;

use super::{Action, Emulator};
use crate::frame::DataFrame;
use crate::function as func;

/// Between exclusion starting and a configured node's button being pressed.
pub const BUTTON_DELAY: Duration = Duration::from_millis(1000);
/// Between inclusion starting and the waiting node being found.
pub const FIND_DELAY: Duration = Duration::from_millis(800);

pub const STATUS_READY: u8 = 0x01;
pub const STATUS_NODE_FOUND: u8 = 0x02;
pub const STATUS_ADDING_OR_REMOVING_SLAVE: u8 = 0x03;
pub const STATUS_PROTOCOL_DONE: u8 = 0x05;
pub const STATUS_DONE: u8 = 0x06;
pub const STATUS_FAILED: u8 = 0x07;

const MODE_STOP: u8 = 0x05;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddStage {
    Ready,
    Found,
    Adding(u8),
    Added(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    NodeFound { cb: u8 },
    AddingSlave { cb: u8 },
    ProtocolDone { cb: u8 },
    Removed { cb: u8, id: u8 },
}

/// Inclusion / exclusion state (controller RAM).
#[derive(Debug, Clone, Default)]
pub struct Membership {
    adding: Option<(u8, AddStage)>,
    removing: Option<u8>,
}

impl Membership {
    pub fn including(&self) -> bool {
        self.adding.is_some()
    }

    pub fn excluding(&self) -> bool {
        self.removing.is_some()
    }
}

fn status(cb: u8, status: u8, id: u8) -> Vec<u8> {
    vec![cb, status, id, 0x00]
}

impl Emulator {
    fn with_nif(&self, cb: u8, status: u8, id: u8, kind: super::NodeKind) -> Vec<u8> {
        let nif = kind.node_info();
        let mut out = vec![cb, status, id, nif.len() as u8];
        out.extend(nif);
        out
    }

    pub(super) fn add_node(&mut self, now: Duration, p: &[u8]) {
        let f = func::ADD_NODE_TO_NETWORK;
        let Some(&mode) = p.first() else {
            return self.malformed();
        };
        let cb = p.get(1).copied().unwrap_or_default();
        match mode & 0x0F {
            1..=3 => {
                self.timers
                    .retain(|_, a| !matches!(a, Action::Membership(s) if !matches!(s, Step::Removed { .. })));
                self.membership.adding = Some((cb, AddStage::Ready));
                self.callback(
                    now + Duration::from_millis(10),
                    f,
                    status(cb, STATUS_READY, 0),
                );
                if !self.pending.is_empty() {
                    self.schedule(now + FIND_DELAY, Action::Membership(Step::NodeFound { cb }));
                }
            }
            MODE_STOP => {
                let stage = self.membership.adding.take().map(|(_, s)| s);
                self.timers
                    .retain(|_, a| !matches!(a, Action::Membership(s) if !matches!(s, Step::Removed { .. })));
                let answer = match stage {
                    Some(AddStage::Added(id)) => status(cb, STATUS_DONE, id),
                    Some(AddStage::Found | AddStage::Adding(_)) => status(cb, STATUS_FAILED, 0),
                    Some(AddStage::Ready) | None => status(cb, STATUS_DONE, 0),
                };
                self.callback(now + Duration::from_millis(10), f, answer);
            }
            // SmartStart listening / DSK inclusion: accepted, no SmartStart node here.
            8 | 9 => {}
            _ => self.malformed(),
        }
    }

    pub(super) fn remove_node(&mut self, now: Duration, p: &[u8]) {
        let f = func::REMOVE_NODE_FROM_NETWORK;
        let Some(&mode) = p.first() else {
            return self.malformed();
        };
        let cb = p.get(1).copied().unwrap_or_default();
        match mode & 0x0F {
            1..=3 => {
                self.membership.removing = Some(cb);
                self.callback(
                    now + Duration::from_millis(10),
                    f,
                    status(cb, STATUS_READY, 0),
                );
                let presser = self
                    .cfg
                    .exclusion_presses
                    .iter()
                    .copied()
                    .find(|id| self.nodes.contains_key(id));
                if let Some(id) = presser {
                    self.schedule(now + BUTTON_DELAY, Action::Press(id));
                }
            }
            MODE_STOP => {
                self.membership.removing = None;
                self.timers.retain(|_, a| !matches!(a, Action::Press(_)));
                self.callback(
                    now + Duration::from_millis(10),
                    f,
                    status(cb, STATUS_DONE, 0),
                );
            }
            _ => self.malformed(),
        }
    }

    /// A button press while excluding: the node leaves. Returns whether it did.
    pub(super) fn exclusion_press(&mut self, now: Duration, id: u8) -> bool {
        let Some(cb) = self.membership.removing else {
            return false;
        };
        let Some(node) = self.nodes.get(&id) else {
            return false;
        };
        let f = func::REMOVE_NODE_FROM_NETWORK;
        let removing = self.with_nif(cb, STATUS_ADDING_OR_REMOVING_SLAVE, id, node.kind);
        self.membership.removing = None;
        self.callback(
            now + Duration::from_millis(10),
            f,
            status(cb, STATUS_NODE_FOUND, 0),
        );
        self.callback(now + Duration::from_millis(100), f, removing);
        self.schedule(
            now + Duration::from_millis(600),
            Action::Membership(Step::Removed { cb, id }),
        );
        true
    }

    pub(super) fn membership_step(&mut self, now: Duration, step: Step) {
        let f = func::ADD_NODE_TO_NETWORK;
        match step {
            Step::NodeFound { cb } => {
                if self.membership.adding != Some((cb, AddStage::Ready)) || self.pending.is_empty()
                {
                    return;
                }
                self.membership.adding = Some((cb, AddStage::Found));
                self.callback(now, f, status(cb, STATUS_NODE_FOUND, 0));
                self.schedule(
                    now + Duration::from_millis(100),
                    Action::Membership(Step::AddingSlave { cb }),
                );
            }
            Step::AddingSlave { cb } => {
                let (Some(kind), Some(id)) = (self.pending.front().map(|n| n.kind), self.free_id())
                else {
                    self.membership.adding = None;
                    return self.callback(now, f, status(cb, STATUS_FAILED, 0));
                };
                self.membership.adding = Some((cb, AddStage::Adding(id)));
                let frame = self.with_nif(cb, STATUS_ADDING_OR_REMOVING_SLAVE, id, kind);
                self.callback(now, f, frame);
                self.schedule(
                    now + Duration::from_millis(600),
                    Action::Membership(Step::ProtocolDone { cb }),
                );
            }
            Step::ProtocolDone { cb } => {
                let Some((_, AddStage::Adding(id))) = self.membership.adding else {
                    return;
                };
                let Some(mut node) = self.pending.pop_front() else {
                    return;
                };
                node.id = id;
                self.nodes.insert(id, node);
                self.last_node_id = id;
                let stagger = u32::from(id);
                self.start_node(now, id, stagger % 8);
                self.membership.adding = Some((cb, AddStage::Added(id)));
                self.callback(now, f, status(cb, STATUS_PROTOCOL_DONE, id));
            }
            Step::Removed { cb, id } => {
                let Some(mut node) = self.nodes.remove(&id) else {
                    return;
                };
                self.failed.remove(&id);
                self.awake.remove(&id);
                self.held.remove(&id);
                self.dead.remove(&id);
                self.timers.retain(|_, a| {
                    !matches!(a, Action::Report(n) | Action::Wake(n) | Action::Sleep(n) if *n == id)
                });
                node.factory_reset();
                self.pending.push_back(node);
                self.callback(
                    now,
                    func::REMOVE_NODE_FROM_NETWORK,
                    status(cb, STATUS_DONE, id),
                );
            }
        }
    }

    /// The id a new node gets: the next after the last one assigned, wrapping, skipping
    /// ids in use (controllers do not reuse a freed id at once).
    fn free_id(&self) -> Option<u8> {
        (1..=231u16)
            .map(|i| ((u16::from(self.last_node_id) - 1 + i) % 232 + 1) as u8)
            .find(|id| *id != super::CONTROLLER_NODE_ID && !self.nodes.contains_key(id))
    }

    /// RemoveFailedNode: `node, callback` → RES 0 (started) or 0x08 (not in the failed
    /// list), then callback `callback, status`: 0 node OK (it answered), 1 removed.
    pub(super) fn remove_failed_node(&mut self, now: Duration, p: &[u8]) {
        let f = func::REMOVE_FAILED_NODE;
        let (Some(&id), Some(&cb)) = (p.first(), p.get(1)) else {
            return self.malformed();
        };
        if !self.failed.contains(&id) {
            return self.emit(now, DataFrame::response(f, vec![0x08]));
        }
        self.emit(now, DataFrame::response(f, vec![0x00]));
        let answer = if self.reachable(id) {
            self.failed.remove(&id);
            vec![cb, 0x00]
        } else {
            self.failed.remove(&id);
            self.nodes.remove(&id);
            self.dead.remove(&id);
            self.timers.retain(|_, a| {
                !matches!(a, Action::Report(n) | Action::Wake(n) | Action::Sleep(n) if *n == id)
            });
            vec![cb, 0x01]
        };
        self.callback(now + Duration::from_millis(200), f, answer);
    }
}
