//! AF_INCOMING_MSG_EXT: frames whose source Z-Stack gives by IEEE address, frames from
//! another PAN, and payloads too long for AF_INCOMING_MSG, which the coordinator holds back
//! until the driver reads them with AF_DATA_RETRIEVE. Once whole, and with the source's
//! network address known, an EXT message is handled like any incoming frame
//! (`indications::on_incoming`).
//!
//! Owns the retrieval, done as zigbee-herdsman's zstack adapter does it (`dataRetrieveAll`):
//! chunks of 240 bytes from index 0, each answer checked for its status and length, then a
//! zero-length retrieve that frees the coordinator's buffer, after a failure too. Owns the
//! lookup of an unknown IEEE source's network address (ZDO NWK_addr_req). Must not interpret
//! the ZCL inside.

use anyhow::Result;
use fieldgate_zigbee::zcl::green_power;
use fieldgate_zigbee::znp::{self, retrieve_plan, AfIncomingMsgExt};
use fieldgate_zigbee::{IeeeAddr, ZnpCommand};
use tokio::time::Instant;

use super::indications::UNRESOLVED_BUFFER;
use super::Coordinator;
use crate::radio::RadioCounters;

impl Coordinator<'_> {
    pub(super) async fn on_incoming_ext(&mut self, m: AfIncomingMsgExt) -> Result<()> {
        let m = if m.is_complete() {
            m
        } else {
            match self.retrieve_payload(&m).await? {
                Some(payload) => m.with_payload(payload),
                None => return Ok(()),
            }
        };
        if m.cluster_id == green_power::CLUSTER && m.dst_endpoint == green_power::ENDPOINT {
            self.on_green_power(&m.data);
            return Ok(());
        }
        let nwk = match (m.src_nwk(), m.src_ieee()) {
            (Some(nwk), _) => nwk,
            (None, Some(ieee)) => match self.devices.get(&ieee) {
                Some(dev) => dev.nwk,
                None => return self.resolve_ieee(ieee, m).await,
            },
            (None, None) => return Ok(()),
        };
        self.on_incoming(znp::AfIncomingMsg {
            group_id: m.group_id,
            cluster_id: m.cluster_id,
            src_addr: nwk,
            src_endpoint: m.src_endpoint,
            dst_endpoint: m.dst_endpoint,
            was_broadcast: m.was_broadcast,
            link_quality: m.link_quality,
            security_use: m.security_use,
            timestamp: m.timestamp,
            trans_seq_num: m.trans_seq_num,
            data: m.data,
            mac_src_addr: m.mac_src_addr,
            msg_result_radius: m.msg_result_radius,
        })
        .await
    }

    /// Reads the payload the coordinator held back for `m`, then frees it. `None` (counted
    /// in `incomplete` and logged) when any chunk fails: the message is lost, as with any
    /// frame that does not arrive whole.
    async fn retrieve_payload(&mut self, m: &AfIncomingMsgExt) -> Result<Option<Vec<u8>>> {
        let mut payload = Vec::with_capacity(usize::from(m.len));
        let mut failure = None;
        for (index, length) in retrieve_plan(m.len) {
            if length == 0 {
                break;
            }
            let req = ZnpCommand::AfDataRetrieveReq {
                timestamp: m.timestamp,
                index,
                length,
            };
            match self.request(&req).await? {
                Ok(ZnpCommand::AfDataRetrieveRsp { status: 0, data })
                    if data.len() == usize::from(length) =>
                {
                    payload.extend_from_slice(&data);
                }
                Ok(ZnpCommand::AfDataRetrieveRsp { status, data }) => {
                    failure = Some(format!(
                        "status {status:#04x} with {} of {length} byte(s) at index {index}",
                        data.len()
                    ));
                    break;
                }
                Ok(other) => {
                    failure = Some(format!("answered with {} at index {index}", other.name()));
                    break;
                }
                Err(f) => {
                    failure = Some(format!("{f} at index {index}"));
                    break;
                }
            }
        }
        // Length 0 frees the coordinator's copy; it also expires by itself (~15 s).
        let free = ZnpCommand::AfDataRetrieveReq {
            timestamp: m.timestamp,
            index: 0,
            length: 0,
        };
        if let Err(f) = self.request(&free).await? {
            tracing::debug!(radio = %self.io.radio, timestamp = m.timestamp, error = %f, "held payload not freed");
        }
        match failure {
            None => {
                tracing::debug!(radio = %self.io.radio, cluster = m.cluster_id, bytes = payload.len(), "held-back payload retrieved");
                Ok(Some(payload))
            }
            Some(why) => {
                RadioCounters::count(&self.stats.incomplete);
                tracing::warn!(radio = %self.io.radio, cluster = m.cluster_id, src_endpoint = m.src_endpoint, bytes = m.len, timestamp = m.timestamp, reason = %why, "a payload the coordinator held back could not be retrieved; the message is lost");
                Ok(None)
            }
        }
    }

    /// A whole message from a device known only by its IEEE address: kept while its network
    /// address is asked for (NWK_addr_req), then handled again.
    async fn resolve_ieee(&mut self, ieee: IeeeAddr, m: AfIncomingMsgExt) -> Result<()> {
        let frame = ZnpCommand::AfIncomingMsgExt(m);
        match self.unresolved_ieee.get_mut(&ieee) {
            Some((_, frames)) => {
                if frames.len() < UNRESOLVED_BUFFER {
                    frames.push(frame);
                }
            }
            None => {
                tracing::debug!(radio = %self.io.radio, device = %ieee, "frame from an IEEE address with no known network address: asking for it");
                self.unresolved_ieee
                    .insert(ieee, (Instant::now(), vec![frame]));
                let _ = self
                    .request(&ZnpCommand::ZdoNwkAddrReq {
                        ieee,
                        req_type: 0,
                        start_index: 0,
                    })
                    .await?;
            }
        }
        Ok(())
    }
}
