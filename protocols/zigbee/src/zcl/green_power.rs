//! Green Power (cluster 0x0021): the two commands a GP proxy sends the sink about a Green
//! Power device's frame (GPDF), GP Notification (0x00) and GP Commissioning Notification
//! (0x04), both client to server. A Z-Stack coordinator's own proxy hands them to the host on
//! the GP endpoint 242 (groupcast to [`GP_GROUP_ID`], or unicast while commissioning).
//!
//! Layout: Green Power Basic specification (14-0563) A.3.3.4.1 and A.3.3.4.3, as
//! zigbee-herdsman 11.1.1 reads them (`src/zspec/zcl/definition/cluster.ts greenPower`
//! `notification` / `commissioningNotification`). The GPD command payload is kept as bytes:
//! what it means depends on the GPD command id, and only a sink that commissioned the device
//! can decrypt it.

use serde::Serialize;

use crate::error::Result;
use crate::wire::{Reader, Writer};
use crate::IeeeAddr;

/// The Green Power cluster.
pub const CLUSTER: u16 = 0x0021;
/// The Green Power endpoint (ZH `zspec/consts.ts GP_ENDPOINT`).
pub const ENDPOINT: u8 = 242;
/// The Green Power profile (ZH `adapter/z-stack/adapter/endpoints.ts`, endpoint 242).
pub const PROFILE: u16 = 0xA1E0;
/// The group GP proxies send notifications to by default (ZH `zspec/consts.ts GP_GROUP_ID`).
pub const GP_GROUP_ID: u16 = 0x0B84;
/// GP Notification command id.
pub const NOTIFICATION: u8 = 0x00;
/// GP Commissioning Notification command id.
pub const COMMISSIONING_NOTIFICATION: u8 = 0x04;

/// Which Green Power device a notification is about (options bits 0–2, the application id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GpdId {
    /// Application id 0: a 32-bit GPD source id.
    SrcId { src_id: u32 },
    /// Application id 2: the GPD's IEEE address and endpoint.
    Ieee { ieee: IeeeAddr, endpoint: u8 },
    /// Any other application id: no address field follows.
    Other { application_id: u8 },
}

/// A GP Notification or GP Commissioning Notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpNotification {
    /// The options bitmap; its layout differs between the two commands (see the accessors).
    pub options: u16,
    pub gpd: GpdId,
    /// The GPD security frame counter.
    pub frame_counter: u32,
    /// The GPD command id (0x20 off, 0x21 on, 0x22 toggle, 0xE0 commissioning, ...).
    pub command_id: u8,
    /// The GPD command payload, as sent (possibly encrypted).
    #[serde(serialize_with = "crate::serde_hex")]
    pub payload: Vec<u8>,
    /// The proxy that heard the GPD and its link to it (GPP short address, GPP-GPD link:
    /// bits 0–5 RSSI, 6–7 link quality), when the proxy-info bit is set.
    pub proxy: Option<(u16, u8)>,
    /// The MIC of a frame whose security processing failed (commissioning notification
    /// with options bit 9).
    pub mic: Option<u32>,
}

impl GpNotification {
    /// The GPD application id (options bits 0–2).
    pub fn application_id(&self) -> u8 {
        (self.options & 0x07) as u8
    }

    /// The GPD's address as one number: its source id, or the IEEE address.
    pub fn gpd_address(&self) -> u64 {
        match self.gpd {
            GpdId::SrcId { src_id } => u64::from(src_id),
            GpdId::Ieee { ieee, .. } => ieee.0,
            GpdId::Other { .. } => 0,
        }
    }

    /// Reads a notification (`commissioning` for command 0x04) after the ZCL header.
    pub(crate) fn read(r: &mut Reader<'_>, commissioning: bool) -> Result<Self> {
        let options = r.u16()?;
        let gpd = match options & 0x07 {
            0 => GpdId::SrcId { src_id: r.u32()? },
            2 => GpdId::Ieee {
                ieee: r.ieee()?,
                endpoint: r.u8()?,
            },
            other => GpdId::Other {
                application_id: other as u8,
            },
        };
        let frame_counter = r.u32()?;
        let command_id = r.u8()?;
        let len = r.u8()?;
        let payload = r.bytes(usize::from(len))?.to_vec();
        let (proxy_bit, mic_bit) = Self::bits(commissioning);
        let proxy = if options & proxy_bit != 0 {
            Some((r.u16()?, r.u8()?))
        } else {
            None
        };
        let mic = match mic_bit {
            Some(bit) if options & bit != 0 => Some(r.u32()?),
            _ => None,
        };
        Ok(Self {
            options,
            gpd,
            frame_counter,
            command_id,
            payload,
            proxy,
            mic,
        })
    }

    /// Writes the command payload. The fields written follow `options` (the application id,
    /// the proxy-info and security-failed bits), as a receiver reads them.
    pub(crate) fn write(&self, out: &mut Vec<u8>, commissioning: bool) -> Result<()> {
        out.put_u16(self.options);
        match (self.options & 0x07, self.gpd) {
            (0, GpdId::SrcId { src_id }) => out.put_u32(src_id),
            (2, GpdId::Ieee { ieee, endpoint }) => {
                out.put_ieee(ieee);
                out.put_u8(endpoint);
            }
            (id, GpdId::Other { application_id }) if id != 0 && id != 2 => {
                let _ = application_id;
            }
            _ => {
                return Err(mismatch(
                    "the GPD id does not match the options' application id",
                ))
            }
        }
        out.put_u32(self.frame_counter);
        out.put_u8(self.command_id);
        let len = u8::try_from(self.payload.len())
            .map_err(|_| mismatch("a GPD command payload is at most 255 bytes"))?;
        out.put_u8(len);
        out.extend_from_slice(&self.payload);
        let (proxy_bit, mic_bit) = Self::bits(commissioning);
        match (self.options & proxy_bit != 0, self.proxy) {
            (true, Some((addr, link))) => {
                out.put_u16(addr);
                out.put_u8(link);
            }
            (false, None) => {}
            _ => {
                return Err(mismatch(
                    "proxy info must be present exactly when its bit is set",
                ))
            }
        }
        let mic_set = mic_bit.is_some_and(|bit| self.options & bit != 0);
        match (mic_set, self.mic) {
            (true, Some(mic)) => out.put_u32(mic),
            (false, None) => {}
            _ => {
                return Err(mismatch(
                    "a MIC must be present exactly when security failed",
                ))
            }
        }
        Ok(())
    }

    /// (proxy-info bit, security-processing-failed bit) of each command's options.
    fn bits(commissioning: bool) -> (u16, Option<u16>) {
        if commissioning {
            (0x0800, Some(0x0200))
        } else {
            (0x4000, None)
        }
    }
}

fn mismatch(detail: &str) -> crate::Error {
    crate::Error::ValueOutOfRange {
        what: "GP notification",
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zcl::{Direction, FrameType, ZclCommand, ZclFrame};

    #[test]
    fn a_notification_of_a_toggle_with_proxy_info() {
        // Frame control 0x11 (cluster specific, client to server, no default response),
        // TSN 5, GP Notification: options 0x4000 (app id 0, proxy info), source id
        // 0x0155F47A, frame counter 0x1234, GPD command 0x22 (toggle), no payload, proxy
        // 0x0000 with link 0xD8.
        let bytes = [
            0x11, 0x05, 0x00, 0x00, 0x40, 0x7A, 0xF4, 0x55, 0x01, 0x34, 0x12, 0x00, 0x00, 0x22,
            0x00, 0x00, 0x00, 0xD8,
        ];
        let f = ZclFrame::decode(CLUSTER, &bytes).unwrap();
        assert_eq!(f.header.frame_type, FrameType::ClusterSpecific);
        assert_eq!(f.header.direction, Direction::ClientToServer);
        let ZclCommand::GreenPowerNotification(n) = &f.command else {
            panic!("{:?}", f.command);
        };
        assert_eq!(
            n,
            &GpNotification {
                options: 0x4000,
                gpd: GpdId::SrcId {
                    src_id: 0x0155_F47A
                },
                frame_counter: 0x1234,
                command_id: 0x22,
                payload: Vec::new(),
                proxy: Some((0x0000, 0xD8)),
                mic: None,
            }
        );
        assert_eq!(n.gpd_address(), 0x0155_F47A);
        assert_eq!(f.encode().unwrap(), bytes);
    }

    #[test]
    fn a_commissioning_notification_by_ieee_with_a_failed_mic() {
        let n = GpNotification {
            // App id 2, security level 2 (bits 4-5), security failed (bit 9), proxy info (11).
            options: 0x0A22,
            gpd: GpdId::Ieee {
                ieee: IeeeAddr(0x0011_2233_4455_6677),
                endpoint: 1,
            },
            frame_counter: 7,
            command_id: 0xE0,
            payload: vec![0x02, 0x85, 0xF2],
            proxy: Some((0x1A01, 0x40)),
            mic: Some(0xDEAD_BEEF),
        };
        let f = ZclFrame {
            header: crate::zcl::ZclHeader::cluster(
                Direction::ClientToServer,
                true,
                9,
                COMMISSIONING_NOTIFICATION,
            ),
            command: ZclCommand::GreenPowerCommissioningNotification(n.clone()),
        };
        let bytes = f.encode().unwrap();
        assert_eq!(bytes.len(), 3 + 2 + 9 + 4 + 1 + 1 + 3 + 3 + 4);
        assert_eq!(ZclFrame::decode(CLUSTER, &bytes).unwrap(), f);
        assert_eq!(n.application_id(), 2);
    }

    #[test]
    fn fields_that_disagree_with_the_options_are_refused() {
        let mut n = GpNotification {
            options: 0x0000,
            gpd: GpdId::SrcId { src_id: 1 },
            frame_counter: 0,
            command_id: 0x20,
            payload: Vec::new(),
            proxy: Some((1, 2)),
            mic: None,
        };
        assert!(n.write(&mut Vec::new(), false).is_err());
        n.proxy = None;
        assert!(n.write(&mut Vec::new(), false).is_ok());
        n.options = 0x0002;
        assert!(n.write(&mut Vec::new(), false).is_err());
    }

    #[test]
    fn a_truncated_notification_is_an_error() {
        let bytes = [0x11, 0x05, 0x00, 0x00, 0x40, 0x7A, 0xF4, 0x55, 0x01, 0x34];
        assert!(ZclFrame::decode(CLUSTER, &bytes).is_err());
    }
}
