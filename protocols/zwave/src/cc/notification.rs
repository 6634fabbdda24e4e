//! Notification (0x71, v3-8; v1-2 "Alarm"): EventSupportedGet 01 / EventSupportedReport 02,
//! Get 04, Report 05, Set 06, SupportedGet 07 / SupportedReport 08.
//! Layouts: zwave-js `packages/cc/src/cc/NotificationCC.ts`; types and events: zwave-js
//! `packages/core/src/registries/Notifications.ts`.

use crate::error::Result;
use crate::wire::{encode_bitmask, parse_bitmask, Reader};
use serde::Serialize;

/// The v2+ part of a Notification Report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct NotificationEvent {
    /// Byte 2 (Zensor Net source node in v2-3, reserved later), kept as sent.
    pub reserved: u8,
    /// 0x00 notifications off, 0xFF on, 0xFE "pull" queue empty.
    pub status: u8,
    /// 0x01 smoke, 0x05 water, 0x06 access control, 0x07 home security, 0x08 power, …
    pub notification_type: u8,
    /// The event within the type; 0x00 = idle (the parameters name the event that ended).
    pub event: u8,
    /// Up to 31 bytes; their meaning depends on type and event.
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub parameters: Vec<u8>,
    /// v3+ sequence number, when flagged.
    pub sequence: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notification {
    EventSupportedGet {
        notification_type: u8,
    },
    EventSupportedReport {
        notification_type: u8,
        events: Vec<u8>,
    },
    /// v1: the alarm type only; v2+: `notification_type`, and from v3 an `event`.
    Get {
        alarm_type: u8,
        notification_type: Option<u8>,
        event: Option<u8>,
    },
    /// Fewer than 7 bytes is a v1 alarm report (`event` is `None`).
    Report {
        alarm_type: u8,
        alarm_level: u8,
        event: Option<NotificationEvent>,
    },
    /// Turns reports of a type on (0xFF) or off (0x00).
    Set {
        notification_type: u8,
        status: u8,
    },
    SupportedGet,
    /// `v1_alarm`: the device also sends v1 alarm type/level.
    SupportedReport {
        v1_alarm: bool,
        types: Vec<u8>,
    },
}

impl Notification {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::EventSupportedGet { .. } => 0x01,
            Self::EventSupportedReport { .. } => 0x02,
            Self::Get { .. } => 0x04,
            Self::Report { .. } => 0x05,
            Self::Set { .. } => 0x06,
            Self::SupportedGet => 0x07,
            Self::SupportedReport { .. } => 0x08,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        let to_u8s = |v: Vec<u16>| v.into_iter().filter_map(|x| u8::try_from(x).ok()).collect();
        Ok(Some(match cmd {
            0x01 => Self::EventSupportedGet {
                notification_type: r.u8()?,
            },
            0x02 => {
                let notification_type = r.u8()?;
                let n = usize::from(r.opt_u8().unwrap_or(0) & 0x1F);
                Self::EventSupportedReport {
                    notification_type,
                    events: to_u8s(parse_bitmask(r.take(n)?, 0)),
                }
            }
            0x04 => {
                let alarm_type = r.u8()?;
                let notification_type = r.opt_u8();
                let event = match notification_type {
                    Some(t) if t != 0xFF => r.opt_u8(),
                    _ => None,
                };
                Self::Get {
                    alarm_type,
                    notification_type,
                    event,
                }
            }
            0x05 => {
                let alarm_type = r.u8()?;
                let alarm_level = r.u8()?;
                if r.remaining() < 5 {
                    return Ok(Some(Self::Report {
                        alarm_type,
                        alarm_level,
                        event: None,
                    }));
                }
                let reserved = r.u8()?;
                let status = r.u8()?;
                let notification_type = r.u8()?;
                let event = r.u8()?;
                let b = r.u8()?;
                let parameters = r.take(usize::from(b & 0x1F))?.to_vec();
                let sequence = if b & 0x80 != 0 { Some(r.u8()?) } else { None };
                Self::Report {
                    alarm_type,
                    alarm_level,
                    event: Some(NotificationEvent {
                        reserved,
                        status,
                        notification_type,
                        event,
                        parameters,
                        sequence,
                    }),
                }
            }
            0x06 => Self::Set {
                notification_type: r.u8()?,
                status: r.u8()?,
            },
            0x07 => Self::SupportedGet,
            0x08 => {
                let b = r.u8()?;
                let n = usize::from(b & 0x1F);
                if n == 0 {
                    // zwave-js requires at least one mask byte.
                    r.take(1)?;
                }
                Self::SupportedReport {
                    v1_alarm: b & 0x80 != 0,
                    types: to_u8s(parse_bitmask(r.take(n)?, 0)),
                }
            }
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let mask = |values: &[u8]| {
            let ids: Vec<u16> = values.iter().map(|&v| u16::from(v)).collect();
            encode_bitmask(&ids, 0, 1)
        };
        match self {
            Self::EventSupportedGet { notification_type } => out.push(*notification_type),
            Self::EventSupportedReport {
                notification_type,
                events,
            } => {
                let m = mask(events);
                out.extend_from_slice(&[*notification_type, (m.len() as u8) & 0x1F]);
                out.extend_from_slice(&m);
            }
            Self::Get {
                alarm_type,
                notification_type,
                event,
            } => {
                out.push(*alarm_type);
                if let Some(t) = notification_type {
                    out.push(*t);
                    if *t != 0xFF {
                        out.extend(*event);
                    }
                }
            }
            Self::Report {
                alarm_type,
                alarm_level,
                event,
            } => {
                out.extend_from_slice(&[*alarm_type, *alarm_level]);
                if let Some(e) = event {
                    let n = super::len_u8("event parameters", e.parameters.len())?;
                    if n > 0x1F {
                        return Err(crate::Error::TooLong {
                            what: "event parameters",
                            len: e.parameters.len(),
                            max: 31,
                        });
                    }
                    out.extend_from_slice(&[
                        e.reserved,
                        e.status,
                        e.notification_type,
                        e.event,
                        n | if e.sequence.is_some() { 0x80 } else { 0 },
                    ]);
                    out.extend_from_slice(&e.parameters);
                    out.extend(e.sequence);
                }
            }
            Self::Set {
                notification_type,
                status,
            } => out.extend_from_slice(&[*notification_type, *status]),
            Self::SupportedGet => {}
            Self::SupportedReport { v1_alarm, types } => {
                let m = mask(types);
                out.push(((m.len() as u8) & 0x1F) | if *v1_alarm { 0x80 } else { 0 });
                out.extend_from_slice(&m);
            }
        }
        Ok(())
    }
}
