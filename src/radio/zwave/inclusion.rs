//! Inclusion and exclusion: the hub's permit-join opens an inclusion window (AddNode), its
//! remove of a device starts an exclusion (RemoveNode) or, for a node the controller
//! already marks failed, RemoveFailedNode. A window ends on its deadline with the Stop the
//! spec requires, so the controller never stays in a mode nobody watches (the "inclusion
//! hangs" Z-Wave JS users see).
//!
//! Exclusion cannot be done from the gateway alone: the technician presses the device's
//! button (or the sequence its manual gives) while the window is open. The log says so.

use std::time::Duration;

use anyhow::Result;
use fieldgate_zwave::message::{
    add_node_flags, AddNodeMode, AddNodeStatus, Callback, RemoveFailedStatus, RemoveNodeMode,
    RemoveNodeStatus, Response,
};
use fieldgate_zwave::Request;
use tokio::time::Instant;

use super::transport::{Answer, Timeouts};
use super::Controller;
use crate::model::RadioError;

/// How long an exclusion waits for the technician.
pub(super) const EXCLUSION_WINDOW: Duration = Duration::from_secs(60);
/// How long the controller may take to finish adding or removing a node it found.
const NODE_FOUND_GRACE: Duration = Duration::from_secs(60);
/// A node asked to leave again (still heard after its exclusion window passed
/// unpressed) gets another exclusion at most this often: each one closes an inclusion
/// window a technician may have open.
const EXCLUSION_AGAIN_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WindowKind {
    Inclusion,
    Exclusion,
}

/// An inclusion or exclusion in progress.
#[derive(Debug, Clone)]
pub(super) struct Window {
    pub kind: WindowKind,
    pub callback_id: u8,
    pub until: Instant,
    /// The node being added or removed, once the controller says which.
    pub node: Option<u8>,
}

impl Controller<'_> {
    /// Opens (or extends) the inclusion window. The inner error is the controller's
    /// refusal; the outer one a failed link.
    pub(super) async fn permit_join(
        &mut self,
        seconds: u32,
    ) -> Result<std::result::Result<(), RadioError>> {
        let until = Instant::now() + Duration::from_secs(u64::from(seconds));
        match &mut self.window {
            _ if seconds == 0 => {
                self.inclusion_until = None;
                return self.close_window().await.map(Ok);
            }
            Some(w) if w.kind == WindowKind::Inclusion => {
                w.until = until;
                self.inclusion_until = Some(until);
                return Ok(Ok(()));
            }
            // A device being removed waits for its button: closing the exclusion to
            // include would leave it on the controller's network, unsaid.
            Some(w) => {
                let left = w.until.saturating_duration_since(Instant::now()).as_secs() + 1;
                return Ok(Err(RadioError::Refused(format!(
                    "an exclusion is in progress (a device being removed waits for its button press): open the join window once it ends, within {left} s"
                ))));
            }
            None => {}
        }
        let opened = self.open_window(WindowKind::Inclusion, until, true).await?;
        if opened.is_ok() {
            self.inclusion_until = Some(until);
        }
        Ok(opened)
    }

    /// Whether the hub's join window lasts (by a second or more) while the controller
    /// is out of inclusion mode, after adding a node or failing to.
    pub(super) fn inclusion_to_resume(&self) -> bool {
        self.window.is_none()
            && self
                .inclusion_until
                .is_some_and(|t| t > Instant::now() + Duration::from_secs(1))
    }

    /// Starts inclusion again for the rest of the hub's join window, so that every
    /// device a technician includes in it joins, not only the first.
    pub(super) async fn resume_inclusion(&mut self) -> Result<()> {
        let Some(until) = self.inclusion_until.take() else {
            return Ok(());
        };
        match self
            .open_window(WindowKind::Inclusion, until, false)
            .await?
        {
            Ok(()) => {
                self.inclusion_until = Some(until);
                tracing::info!(radio = %self.io.radio, left_s = until.saturating_duration_since(Instant::now()).as_secs(), "inclusion resumed for the rest of the join window");
            }
            Err(e) => {
                tracing::warn!(radio = %self.io.radio, error = %e, "inclusion not resumed: the join window ends early");
            }
        }
        Ok(())
    }

    /// Opens an inclusion or exclusion window; `announce_known`: the nodes the
    /// controller has are announced to the hub (a technician's new window).
    async fn open_window(
        &mut self,
        kind: WindowKind,
        until: Instant,
        announce_known: bool,
    ) -> Result<std::result::Result<(), RadioError>> {
        let callback_id = self.ids.next();
        let flags = add_node_flags::HIGH_POWER | add_node_flags::NETWORK_WIDE;
        let req = match kind {
            WindowKind::Inclusion => Request::AddNodeToNetwork {
                mode: AddNodeMode::Any,
                flags,
                callback_id,
            },
            WindowKind::Exclusion => Request::RemoveNodeFromNetwork {
                mode: RemoveNodeMode::Any,
                flags,
                callback_id,
            },
        };
        let answer = self.request(&req).await?;
        let ready = matches!(
            &answer,
            Ok(Answer {
                callback: Some(
                    Callback::AddNode {
                        status: AddNodeStatus::Ready,
                        ..
                    } | Callback::RemoveNode {
                        status: RemoveNodeStatus::Ready,
                        ..
                    }
                ),
                ..
            })
        );
        if !ready {
            tracing::warn!(radio = %self.io.radio, ?kind, ?answer, "the controller did not open the window");
            self.window = Some(Window {
                kind,
                callback_id,
                until,
                node: None,
            });
            self.close_window().await?;
            let why = match &answer {
                Ok(a) => match &a.callback {
                    Some(cb) => format!("it answered {cb:?}"),
                    None => "it did not call back".to_string(),
                },
                Err(f) => f.to_string(),
            };
            return Ok(Err(RadioError::Refused(format!(
                "the controller did not open the {} window: {why}",
                match kind {
                    WindowKind::Inclusion => "inclusion",
                    WindowKind::Exclusion => "exclusion",
                }
            ))));
        }
        tracing::info!(radio = %self.io.radio, ?kind, "window open");
        self.window = Some(Window {
            kind,
            callback_id,
            until,
            node: None,
        });
        if kind == WindowKind::Inclusion && announce_known {
            // Nodes the controller had before the gateway met them (a stick moved from
            // another system) join now, while the technician's window is open.
            let before: Vec<u8> = self.nodes.keys().copied().collect();
            for node in before {
                self.announce(node).await?;
            }
        }
        Ok(Ok(()))
    }

    /// Stops the inclusion or exclusion in progress (the spec's Stop), finishing the
    /// node the controller reports done with it.
    pub(super) async fn close_window(&mut self) -> Result<()> {
        let Some(w) = self.window.take() else {
            return Ok(());
        };
        let callback_id = self.ids.next();
        let req = match w.kind {
            WindowKind::Inclusion => Request::AddNodeToNetwork {
                mode: AddNodeMode::Stop,
                flags: 0,
                callback_id,
            },
            WindowKind::Exclusion => Request::RemoveNodeFromNetwork {
                mode: RemoveNodeMode::Stop,
                flags: 0,
                callback_id,
            },
        };
        // Not every controller answers a Stop with a callback: a short wait, not counted
        // against the controller.
        let t = Timeouts {
            callback: Duration::from_secs(2),
            ..self.timeouts()
        };
        let answer = self.link.execute(&req, t).await?;
        tracing::info!(radio = %self.io.radio, kind = ?w.kind, "window closed");
        if let Ok(Answer {
            callback: Some(cb), ..
        }) = answer
        {
            // Boxed: progress may close the window again (a Done after a Failed).
            Box::pin(self.window_progress(w.kind, w.node, cb)).await?;
        }
        Ok(())
    }

    /// A callback that arrived with no request waiting: an open window's progress.
    pub(super) async fn on_window_callback(&mut self, cb: Callback) -> Result<()> {
        let Some(w) = self.window.clone() else {
            tracing::debug!(radio = %self.io.radio, function = cb.function(), "callback with nothing waiting for it");
            return Ok(());
        };
        if cb.callback_id() != w.callback_id {
            return Ok(());
        }
        self.window_progress(w.kind, w.node, cb).await
    }

    async fn window_progress(
        &mut self,
        kind: WindowKind,
        known: Option<u8>,
        cb: Callback,
    ) -> Result<()> {
        match cb {
            Callback::AddNode { status, .. } => match status {
                AddNodeStatus::NodeFound => {
                    tracing::info!(radio = %self.io.radio, "inclusion: node found");
                    self.extend_window(NODE_FOUND_GRACE);
                }
                AddNodeStatus::AddingEndNode(info) | AddNodeStatus::AddingController(info) => {
                    tracing::info!(radio = %self.io.radio, node = info.node_id, "inclusion: adding node");
                    if let Some(w) = &mut self.window {
                        w.node = Some(info.node_id);
                    }
                    self.add_node(info.node_id).await?;
                    if !info.command_classes.supported.is_empty() {
                        self.learn_nif(info.node_id, &info);
                    }
                    self.announce(info.node_id).await?;
                    // Just included, it is awake: interview it now, sleeping or not.
                    let awake = Instant::now() + Duration::from_secs(30);
                    if let Some(n) = self.nodes.get_mut(&info.node_id) {
                        n.awake_until = Some(awake);
                    }
                }
                AddNodeStatus::ProtocolDone => {
                    // The spec: Stop now; the controller answers Done with the Stop's id.
                    self.close_window().await?;
                }
                AddNodeStatus::Done { node_id } => {
                    self.window = None;
                    tracing::info!(radio = %self.io.radio, node = node_id, "inclusion done");
                    if node_id != 0 {
                        // Read its protocol info again: asked while it was being added,
                        // before the controller had stored it, the answer may be empty
                        // (not listening), and a listening node would then be taken for
                        // one that sleeps and its interview put off to a wake-up that
                        // never comes.
                        self.add_node(node_id).await?;
                        self.announce(node_id).await?;
                    }
                }
                AddNodeStatus::Failed if self.window.is_none() => {
                    // The answer to a Stop with no node on the way.
                    tracing::info!(radio = %self.io.radio, "inclusion window closed; no node joined");
                }
                AddNodeStatus::Failed => {
                    tracing::warn!(radio = %self.io.radio, ?known, "inclusion failed");
                    if kind == WindowKind::Inclusion && self.window.is_some() {
                        self.close_window().await?;
                    }
                }
                _ => {}
            },
            Callback::RemoveNode { status, .. } => match status {
                RemoveNodeStatus::NodeFound => self.extend_window(NODE_FOUND_GRACE),
                RemoveNodeStatus::RemovingEndNode { node_id }
                | RemoveNodeStatus::RemovingController { node_id } => {
                    if let Some(w) = &mut self.window {
                        w.node = Some(node_id);
                    }
                }
                RemoveNodeStatus::Done { node_id } => {
                    let node = node_id
                        .filter(|n| *n != 0)
                        .or(known)
                        .or(self.window.as_ref().and_then(|w| w.node));
                    tracing::info!(radio = %self.io.radio, ?node, "exclusion done");
                    let was_open = self.window.is_some();
                    if let Some(node) = node {
                        self.node_left(node).await?;
                    }
                    if was_open {
                        self.close_window().await?;
                    }
                }
                RemoveNodeStatus::Failed if self.window.is_none() => {
                    tracing::info!(radio = %self.io.radio, "exclusion window closed");
                }
                RemoveNodeStatus::Failed => {
                    tracing::warn!(radio = %self.io.radio, "exclusion failed");
                    if self.window.is_some() {
                        self.close_window().await?;
                    }
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn extend_window(&mut self, by: Duration) {
        if let Some(w) = &mut self.window {
            w.until = w.until.max(Instant::now() + by);
        }
    }

    /// Node `node` was re-admitted: an exclusion started for it and still waiting for
    /// its button is closed (a join window may open at once), it is not excluded
    /// again when next heard, and the next join window announces it again (it never
    /// left the network, so it will not be included anew).
    pub(super) async fn keep(&mut self, node: u8) -> Result<()> {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.announced = false;
        }
        // The exclusion open now, if any, is the one started last.
        let last = self
            .exclusions
            .iter()
            .max_by_key(|(_, at)| **at)
            .map(|(n, _)| *n);
        if self.exclusions.remove(&node).is_none() {
            return Ok(());
        }
        let waiting = last == Some(node)
            && self
                .window
                .as_ref()
                .is_some_and(|w| w.kind == WindowKind::Exclusion && w.node.is_none());
        if waiting {
            tracing::info!(radio = %self.io.radio, node, "the node was re-admitted: its exclusion is closed");
            self.close_window().await?;
        }
        Ok(())
    }

    /// The hub removes node `node`: a node the controller marks failed is removed at once
    /// (RemoveFailedNode); a live one needs its button pressed during an exclusion window.
    pub(super) async fn remove(&mut self, node: u8) -> Result<()> {
        let failed = self
            .chip
            .supports(fieldgate_zwave::function::IS_FAILED_NODE)
            && matches!(
                self.request(&Request::IsFailedNode { node_id: node })
                    .await?,
                Ok(Answer {
                    response: Some(Response::IsFailedNode { failed: true }),
                    ..
                })
            );
        if failed {
            let callback_id = self.ids.next();
            let req = Request::RemoveFailedNode {
                node_id: node,
                callback_id,
            };
            match self.request(&req).await? {
                Ok(Answer {
                    callback:
                        Some(Callback::RemoveFailedNode {
                            status: RemoveFailedStatus::NodeRemoved,
                            ..
                        }),
                    ..
                }) => {
                    tracing::info!(radio = %self.io.radio, node, "failed node removed from the controller");
                    return self.node_left(node).await;
                }
                other => {
                    tracing::warn!(radio = %self.io.radio, node, ?other, "the controller did not remove the failed node; trying exclusion");
                }
            }
        }
        if self
            .window
            .as_ref()
            .is_some_and(|w| w.kind == WindowKind::Exclusion)
        {
            tracing::debug!(radio = %self.io.radio, node, "an exclusion is open already: the node leaves when its button is pressed");
            return Ok(());
        }
        if let Some(at) = self.exclusions.get(&node) {
            if at.elapsed() < EXCLUSION_AGAIN_AFTER {
                tracing::debug!(radio = %self.io.radio, node, "asked to leave again: its last exclusion was less than 10 min ago");
                return Ok(());
            }
        }
        if self.window.is_some() {
            self.close_window().await?;
        }
        tracing::warn!(
            radio = %self.io.radio,
            node,
            seconds = EXCLUSION_WINDOW.as_secs(),
            "exclusion started: press the device's button (its exclusion sequence) now"
        );
        self.exclusions.insert(node, Instant::now());
        // The exclusion takes the controller out of inclusion: the join window ends.
        self.inclusion_until = None;
        let until = Instant::now() + EXCLUSION_WINDOW;
        if let Err(e) = self
            .open_window(WindowKind::Exclusion, until, false)
            .await?
        {
            tracing::warn!(radio = %self.io.radio, node, error = %e, "exclusion not started");
            return Ok(());
        }
        // Not `w.node`: that is the node the controller says it removes. An exclusion
        // that ends with no node removed (no press) is not this node leaving.
        Ok(())
    }
}
