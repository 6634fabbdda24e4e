//! Configuration (0x70) and Association (0x85).
//! Layouts: zwave-js `packages/cc/src/cc/{Configuration,Association}CC.ts`.

use super::value::{check_sized_int, read_sized_int};
use crate::error::Result;
use crate::wire::write_int_be;
use crate::wire::Reader;
use serde::Serialize;

/// Configuration (0x70): Set 04, Get 05, Report 06 (v1-4 parameter numbers are one byte).
/// Values are signed big-endian of 1, 2 or 4 bytes, as the spec says; a device that means
/// them unsigned says so in its Properties Report (v3+), not here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Configuration {
    /// `reset_to_default` (bit 7 of the size byte) asks the device to restore the default;
    /// the value is then ignored by the device but still sent.
    Set {
        parameter: u8,
        reset_to_default: bool,
        size: u8,
        value: i32,
    },
    Get {
        parameter: u8,
    },
    Report {
        parameter: u8,
        size: u8,
        value: i32,
    },
}

impl Configuration {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Set { .. } => 0x04,
            Self::Get { .. } => 0x05,
            Self::Report { .. } => 0x06,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x04 => {
                let parameter = r.u8()?;
                let b = r.u8()?;
                let size = b & 0x07;
                Self::Set {
                    parameter,
                    reset_to_default: b & 0x80 != 0,
                    size,
                    value: read_sized_int(r, size)?,
                }
            }
            0x05 => Self::Get { parameter: r.u8()? },
            0x06 => {
                let parameter = r.u8()?;
                let size = r.u8()? & 0x07;
                Self::Report {
                    parameter,
                    size,
                    value: read_sized_int(r, size)?,
                }
            }
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Set {
                parameter,
                reset_to_default,
                size,
                value,
            } => {
                check_sized_int(*value, *size, "configuration value")?;
                out.extend_from_slice(&[
                    *parameter,
                    size | if *reset_to_default { 0x80 } else { 0 },
                ]);
                write_int_be(out, *value, *size);
            }
            Self::Get { parameter } => out.push(*parameter),
            Self::Report {
                parameter,
                size,
                value,
            } => {
                check_sized_int(*value, *size, "configuration value")?;
                out.extend_from_slice(&[*parameter, *size]);
                write_int_be(out, *value, *size);
            }
        }
        Ok(())
    }
}

/// Association (0x85): Set 01, Get 02 / Report 03, Remove 04, SupportedGroupingsGet 05 /
/// Report 06, SpecificGroupGet 0B / Report 0C. Group 1 is the lifeline: point it at the
/// controller or reports never arrive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Association {
    Set {
        group: u8,
        node_ids: Vec<u8>,
    },
    Get {
        group: u8,
    },
    Report {
        group: u8,
        max_nodes: u8,
        reports_to_follow: u8,
        node_ids: Vec<u8>,
    },
    /// Group 0 = all groups; no node ids = all nodes.
    Remove {
        group: u8,
        node_ids: Vec<u8>,
    },
    SupportedGroupingsGet,
    SupportedGroupingsReport {
        groups: u8,
    },
    SpecificGroupGet,
    SpecificGroupReport {
        group: u8,
    },
}

impl Association {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Set { .. } => 0x01,
            Self::Get { .. } => 0x02,
            Self::Report { .. } => 0x03,
            Self::Remove { .. } => 0x04,
            Self::SupportedGroupingsGet => 0x05,
            Self::SupportedGroupingsReport { .. } => 0x06,
            Self::SpecificGroupGet => 0x0B,
            Self::SpecificGroupReport { .. } => 0x0C,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x01 => Self::Set {
                group: r.u8()?,
                node_ids: r.rest().to_vec(),
            },
            0x02 => Self::Get { group: r.u8()? },
            0x03 => Self::Report {
                group: r.u8()?,
                max_nodes: r.u8()?,
                reports_to_follow: r.u8()?,
                node_ids: r.rest().to_vec(),
            },
            0x04 => Self::Remove {
                group: r.u8()?,
                node_ids: r.rest().to_vec(),
            },
            0x05 => Self::SupportedGroupingsGet,
            0x06 => Self::SupportedGroupingsReport { groups: r.u8()? },
            0x0B => Self::SpecificGroupGet,
            0x0C => Self::SpecificGroupReport { group: r.u8()? },
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Set { group, node_ids } | Self::Remove { group, node_ids } => {
                out.push(*group);
                out.extend_from_slice(node_ids);
            }
            Self::Get { group } | Self::SpecificGroupReport { group } => out.push(*group),
            Self::Report {
                group,
                max_nodes,
                reports_to_follow,
                node_ids,
            } => {
                out.extend_from_slice(&[*group, *max_nodes, *reports_to_follow]);
                out.extend_from_slice(node_ids);
            }
            Self::SupportedGroupingsGet | Self::SpecificGroupGet => {}
            Self::SupportedGroupingsReport { groups } => out.push(*groups),
        }
        Ok(())
    }
}
