//! Basic (0x20), Binary Switch (0x25, v1-2) and Multilevel Switch (0x26, v1-4).
//! Layouts: zwave-js `packages/cc/src/cc/{Basic,BinarySwitch,MultilevelSwitch}CC.ts`.

use super::value::{Duration, Transition};
use crate::error::Result;
use crate::wire::Reader;
use serde::Serialize;

fn read_transition(r: &mut Reader<'_>) -> Option<Transition> {
    // Target and duration come together (v2+); zwave-js reads them only when both are there.
    if r.remaining() >= 2 {
        let target = r.opt_u8()?;
        let duration = Duration(r.opt_u8()?);
        Some(Transition { target, duration })
    } else {
        None
    }
}

fn write_transition(out: &mut Vec<u8>, t: &Option<Transition>) {
    if let Some(t) = t {
        out.extend_from_slice(&[t.target, t.duration.0]);
    }
}

/// Basic (0x20): Set 01 / Get 02 / Report 03.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basic {
    /// 0-99, or 0xFF for "on / last level".
    Set {
        value: u8,
    },
    Get,
    /// `current` as sent (0-99, 0xFE unknown, 0xFF legacy 99); see [`super::level_percent`].
    Report {
        current: u8,
        transition: Option<Transition>,
    },
}

impl Basic {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Set { .. } => 0x01,
            Self::Get => 0x02,
            Self::Report { .. } => 0x03,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x01 => Self::Set { value: r.u8()? },
            0x02 => Self::Get,
            0x03 => Self::Report {
                current: r.u8()?,
                transition: read_transition(r),
            },
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Set { value } => out.push(*value),
            Self::Get => {}
            Self::Report {
                current,
                transition,
            } => {
                out.push(*current);
                write_transition(out, transition);
            }
        }
        Ok(())
    }
}

/// Binary Switch (0x25): Set 01 / Get 02 / Report 03.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BinarySwitch {
    /// `value` 0x00 off / 0xFF on; `duration` from v2.
    Set {
        value: u8,
        duration: Option<Duration>,
    },
    Get,
    /// `current` 0x00 off / 0xFF on / 0xFE unknown; see [`super::switch_on`].
    Report {
        current: u8,
        transition: Option<Transition>,
    },
}

impl BinarySwitch {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Set { .. } => 0x01,
            Self::Get => 0x02,
            Self::Report { .. } => 0x03,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x01 => Self::Set {
                value: r.u8()?,
                duration: r.opt_u8().map(Duration),
            },
            0x02 => Self::Get,
            0x03 => Self::Report {
                current: r.u8()?,
                transition: read_transition(r),
            },
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Set { value, duration } => {
                out.push(*value);
                out.extend(duration.map(|d| d.0));
            }
            Self::Get => {}
            Self::Report {
                current,
                transition,
            } => {
                out.push(*current);
                write_transition(out, transition);
            }
        }
        Ok(())
    }
}

/// Multilevel Switch (0x26): Set 01, Get 02, Report 03, StartLevelChange 04,
/// StopLevelChange 05, SupportedGet 06, SupportedReport 07.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MultilevelSwitch {
    /// `value` 0-99 or 0xFF (last level); `duration` from v2.
    Set {
        value: u8,
        duration: Option<Duration>,
    },
    Get,
    /// `current` as sent (0xFF is legacy for 99; 0xFE unknown).
    Report {
        current: u8,
        transition: Option<Transition>,
    },
    /// `flags`: bit6 down, bit5 ignore start level (bits 4-3 v3 secondary switch, kept).
    StartLevelChange {
        flags: u8,
        start_level: u8,
        duration: Option<Duration>,
    },
    StopLevelChange,
    SupportedGet,
    /// Primary switch type (low 5 bits) and, when sent, the secondary byte.
    SupportedReport {
        primary_type: u8,
        secondary_type: Option<u8>,
    },
}

impl MultilevelSwitch {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Set { .. } => 0x01,
            Self::Get => 0x02,
            Self::Report { .. } => 0x03,
            Self::StartLevelChange { .. } => 0x04,
            Self::StopLevelChange => 0x05,
            Self::SupportedGet => 0x06,
            Self::SupportedReport { .. } => 0x07,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x01 => Self::Set {
                value: r.u8()?,
                duration: r.opt_u8().map(Duration),
            },
            0x02 => Self::Get,
            0x03 => Self::Report {
                current: r.u8()?,
                transition: read_transition(r),
            },
            0x04 => Self::StartLevelChange {
                flags: r.u8()?,
                start_level: r.u8()?,
                duration: r.opt_u8().map(Duration),
            },
            0x05 => Self::StopLevelChange,
            0x06 => Self::SupportedGet,
            0x07 => Self::SupportedReport {
                primary_type: r.u8()?,
                secondary_type: r.opt_u8(),
            },
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Set { value, duration } => {
                out.push(*value);
                out.extend(duration.map(|d| d.0));
            }
            Self::Get | Self::StopLevelChange | Self::SupportedGet => {}
            Self::Report {
                current,
                transition,
            } => {
                out.push(*current);
                write_transition(out, transition);
            }
            Self::StartLevelChange {
                flags,
                start_level,
                duration,
            } => {
                out.extend_from_slice(&[*flags, *start_level]);
                out.extend(duration.map(|d| d.0));
            }
            Self::SupportedReport {
                primary_type,
                secondary_type,
            } => {
                out.push(*primary_type);
                out.extend(*secondary_type);
            }
        }
        Ok(())
    }

    /// Whether a StartLevelChange goes down.
    pub fn is_down(flags: u8) -> bool {
        flags & 0x40 != 0
    }

    /// Whether a StartLevelChange ignores its start level.
    pub fn ignores_start_level(flags: u8) -> bool {
        flags & 0x20 != 0
    }
}
