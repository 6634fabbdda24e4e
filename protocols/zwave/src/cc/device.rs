//! What a device says about itself: Battery (0x80), Wake Up (0x84), Manufacturer Specific
//! (0x72), Version (0x86) and Z-Wave Plus Info (0x5E).
//! Layouts: zwave-js `packages/cc/src/cc/{Battery,WakeUp,ManufacturerSpecific,Version,
//! ZWavePlus}CC.ts`.

use super::value::ScaledValue;
use crate::error::{Error, Result};
use crate::wire::Reader;
use serde::Serialize;

/// Battery (0x80): Get 02 / Report 03, HealthGet 04 / HealthReport 05.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Battery {
    Get,
    /// `level` 0-100 %, or 0xFF = low-battery warning. v2 adds two flag bytes
    /// (charging status bits 7-6, rechargeable, backup, overheating, low fluid,
    /// replace now / soon; low temperature, disconnected).
    Report {
        level: u8,
        flags: Option<[u8; 2]>,
    },
    HealthGet,
    /// Maximum capacity (0xFF unknown) and, when sent, the battery temperature and its scale.
    HealthReport {
        max_capacity: u8,
        temperature: Option<(ScaledValue, u8)>,
    },
}

impl Battery {
    /// The low-battery warning level.
    pub const LOW: u8 = 0xFF;

    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Get => 0x02,
            Self::Report { .. } => 0x03,
            Self::HealthGet => 0x04,
            Self::HealthReport { .. } => 0x05,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x02 => Self::Get,
            0x03 => {
                let level = r.u8()?;
                let flags = match (r.opt_u8(), r.opt_u8()) {
                    (Some(a), Some(b)) => Some([a, b]),
                    _ => None,
                };
                Self::Report { level, flags }
            }
            0x04 => Self::HealthGet,
            0x05 => {
                let max_capacity = r.u8()?;
                let pss = r.u8()?;
                let temperature = if pss & 0x07 == 0 {
                    None
                } else {
                    Some((ScaledValue::read_value(r, pss)?, (pss >> 3) & 0x03))
                };
                Self::HealthReport {
                    max_capacity,
                    temperature,
                }
            }
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Get | Self::HealthGet => {}
            Self::Report { level, flags } => {
                out.push(*level);
                if let Some(f) = flags {
                    out.extend_from_slice(f);
                }
            }
            Self::HealthReport {
                max_capacity,
                temperature,
            } => {
                out.push(*max_capacity);
                match temperature {
                    None => out.push(0),
                    Some((v, scale)) => {
                        v.check("battery temperature")?;
                        out.push(v.pss(*scale));
                        v.write_value(out);
                    }
                }
            }
        }
        Ok(())
    }

    /// Battery percentage of a report level (`None` for the 0xFF warning or invalid levels).
    pub fn percent(level: u8) -> Option<u8> {
        (level <= 100).then_some(level)
    }
}

/// Wake Up (0x84): IntervalSet 04, IntervalGet 05 / IntervalReport 06, Notification 07,
/// NoMoreInformation 08, IntervalCapabilitiesGet 09 / IntervalCapabilitiesReport 0A.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WakeUp {
    /// `seconds` is 24 bits; `node_id` is who the node notifies on wake-up.
    IntervalSet {
        seconds: u32,
        node_id: u8,
    },
    IntervalGet,
    IntervalReport {
        seconds: u32,
        node_id: u8,
    },
    /// The node is awake: flush its queue, then send NoMoreInformation.
    Notification,
    NoMoreInformation,
    IntervalCapabilitiesGet,
    IntervalCapabilitiesReport {
        min_seconds: u32,
        max_seconds: u32,
        default_seconds: u32,
        step_seconds: u32,
        /// v3+: wake up on demand supported.
        on_demand: Option<bool>,
    },
}

fn put_u24(out: &mut Vec<u8>, v: u32) -> Result<()> {
    if v > 0xFF_FFFF {
        return Err(Error::ValueOutOfRange {
            what: "wake-up interval",
            detail: format!("{v} exceeds 24 bits"),
        });
    }
    out.extend_from_slice(&v.to_be_bytes()[1..]);
    Ok(())
}

impl WakeUp {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::IntervalSet { .. } => 0x04,
            Self::IntervalGet => 0x05,
            Self::IntervalReport { .. } => 0x06,
            Self::Notification => 0x07,
            Self::NoMoreInformation => 0x08,
            Self::IntervalCapabilitiesGet => 0x09,
            Self::IntervalCapabilitiesReport { .. } => 0x0A,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x04 => Self::IntervalSet {
                seconds: r.u24()?,
                node_id: r.u8()?,
            },
            0x05 => Self::IntervalGet,
            0x06 => Self::IntervalReport {
                seconds: r.u24()?,
                node_id: r.u8()?,
            },
            0x07 => Self::Notification,
            0x08 => Self::NoMoreInformation,
            0x09 => Self::IntervalCapabilitiesGet,
            0x0A => Self::IntervalCapabilitiesReport {
                min_seconds: r.u24()?,
                max_seconds: r.u24()?,
                default_seconds: r.u24()?,
                step_seconds: r.u24()?,
                on_demand: r.opt_u8().map(|b| b & 0x01 != 0),
            },
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::IntervalSet { seconds, node_id } | Self::IntervalReport { seconds, node_id } => {
                put_u24(out, *seconds)?;
                out.push(*node_id);
            }
            Self::IntervalGet
            | Self::Notification
            | Self::NoMoreInformation
            | Self::IntervalCapabilitiesGet => {}
            Self::IntervalCapabilitiesReport {
                min_seconds,
                max_seconds,
                default_seconds,
                step_seconds,
                on_demand,
            } => {
                for v in [min_seconds, max_seconds, default_seconds, step_seconds] {
                    put_u24(out, *v)?;
                }
                out.extend(on_demand.map(u8::from));
            }
        }
        Ok(())
    }
}

/// Manufacturer Specific (0x72): Get 04 / Report 05, DeviceSpecificGet 06 / Report 07.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ManufacturerSpecific {
    Get,
    Report {
        manufacturer_id: u16,
        product_type: u16,
        product_id: u16,
    },
    /// `id_type`: 0 factory default, 1 serial number, 2 pseudo-random.
    DeviceSpecificGet {
        id_type: u8,
    },
    /// `format` 0 UTF-8, 1 binary.
    DeviceSpecificReport {
        id_type: u8,
        format: u8,
        #[serde(serialize_with = "crate::wire::serde_hex")]
        data: Vec<u8>,
    },
}

impl ManufacturerSpecific {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Get => 0x04,
            Self::Report { .. } => 0x05,
            Self::DeviceSpecificGet { .. } => 0x06,
            Self::DeviceSpecificReport { .. } => 0x07,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x04 => Self::Get,
            0x05 => Self::Report {
                manufacturer_id: r.u16()?,
                product_type: r.u16()?,
                product_id: r.u16()?,
            },
            0x06 => Self::DeviceSpecificGet {
                id_type: r.u8()? & 0x07,
            },
            0x07 => {
                let id_type = r.u8()? & 0x07;
                let b = r.u8()?;
                Self::DeviceSpecificReport {
                    id_type,
                    format: b >> 5,
                    data: r.take(usize::from(b & 0x1F))?.to_vec(),
                }
            }
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Get => {}
            Self::Report {
                manufacturer_id,
                product_type,
                product_id,
            } => {
                for v in [manufacturer_id, product_type, product_id] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Self::DeviceSpecificGet { id_type } => out.push(id_type & 0x07),
            Self::DeviceSpecificReport {
                id_type,
                format,
                data,
            } => {
                if data.len() > 0x1F {
                    return Err(Error::TooLong {
                        what: "device id",
                        len: data.len(),
                        max: 31,
                    });
                }
                out.extend_from_slice(&[id_type & 0x07, ((format & 0x07) << 5) | data.len() as u8]);
                out.extend_from_slice(data);
            }
        }
        Ok(())
    }
}

/// Version (0x86): Get 11 / Report 12, CommandClassGet 13 / CommandClassReport 14,
/// CapabilitiesGet 15 / CapabilitiesReport 16.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Version {
    Get,
    /// `firmware[0]` is firmware 0 (the Z-Wave chip); v2 adds `hardware` and more targets.
    Report {
        library_type: u8,
        protocol: (u8, u8),
        firmware: Vec<(u8, u8)>,
        hardware: Option<u8>,
    },
    CommandClassGet {
        cc: u8,
    },
    /// Version 0 = not supported.
    CommandClassReport {
        cc: u8,
        version: u8,
    },
    CapabilitiesGet,
    /// bit0 Version, bit1 CommandClass, bit2 Z-Wave Software Get supported.
    CapabilitiesReport {
        capabilities: u8,
    },
}

impl Version {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Get => 0x11,
            Self::Report { .. } => 0x12,
            Self::CommandClassGet { .. } => 0x13,
            Self::CommandClassReport { .. } => 0x14,
            Self::CapabilitiesGet => 0x15,
            Self::CapabilitiesReport { .. } => 0x16,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x11 => Self::Get,
            0x12 => {
                let library_type = r.u8()?;
                let protocol = (r.u8()?, r.u8()?);
                let mut firmware = vec![(r.u8()?, r.u8()?)];
                let mut hardware = None;
                if r.remaining() >= 2 {
                    hardware = Some(r.u8()?);
                    let n = r.u8()?;
                    for _ in 0..n {
                        firmware.push((r.u8()?, r.u8()?));
                    }
                }
                Self::Report {
                    library_type,
                    protocol,
                    firmware,
                    hardware,
                }
            }
            0x13 => Self::CommandClassGet { cc: r.u8()? },
            0x14 => Self::CommandClassReport {
                cc: r.u8()?,
                version: r.u8()?,
            },
            0x15 => Self::CapabilitiesGet,
            0x16 => Self::CapabilitiesReport {
                capabilities: r.u8()?,
            },
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Get | Self::CapabilitiesGet => {}
            Self::Report {
                library_type,
                protocol,
                firmware,
                hardware,
            } => {
                let (first, more) = firmware.split_first().unwrap_or((&(0, 0), &[]));
                out.extend_from_slice(&[*library_type, protocol.0, protocol.1, first.0, first.1]);
                if let Some(hw) = hardware {
                    out.extend_from_slice(&[*hw, super::len_u8("firmware targets", more.len())?]);
                    for (major, minor) in more {
                        out.extend_from_slice(&[*major, *minor]);
                    }
                }
            }
            Self::CommandClassGet { cc } => out.push(*cc),
            Self::CommandClassReport { cc, version } => out.extend_from_slice(&[*cc, *version]),
            Self::CapabilitiesReport { capabilities } => out.push(*capabilities),
        }
        Ok(())
    }
}

/// Z-Wave Plus Info (0x5E): Get 01 / Report 02.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZwavePlusInfo {
    Get,
    /// `role_type`: 0 central static controller … 5 end node always on, 6 sleeping reporting,
    /// 7 sleeping listening; `node_type`: 0 node, 2 IP gateway.
    Report {
        version: u8,
        role_type: u8,
        node_type: u8,
        installer_icon: u16,
        user_icon: u16,
    },
}

impl ZwavePlusInfo {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Get => 0x01,
            Self::Report { .. } => 0x02,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x01 => Self::Get,
            0x02 => Self::Report {
                version: r.u8()?,
                role_type: r.u8()?,
                node_type: r.u8()?,
                installer_icon: r.u16()?,
                user_icon: r.u16()?,
            },
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        if let Self::Report {
            version,
            role_type,
            node_type,
            installer_icon,
            user_icon,
        } = self
        {
            out.extend_from_slice(&[*version, *role_type, *node_type]);
            out.extend_from_slice(&installer_icon.to_be_bytes());
            out.extend_from_slice(&user_icon.to_be_bytes());
        }
        Ok(())
    }
}
