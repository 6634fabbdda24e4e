//! Meter (0x32, v1-6): Get 01, Report 02, SupportedGet 03, SupportedReport 04, Reset 05.
//! Layouts: zwave-js `packages/cc/src/cc/MeterCC.ts` (`parseMeterValueAndInfo`, `parseScale`);
//! meter scales: zwave-js `packages/core/src/registries/Meters.ts`.
//!
//! Byte 0 of a report: bit7 = scale bit 2, bits 6-5 rate type, bits 4-0 meter type; then the
//! precision/scale/size byte (scale bits 1-0) and the value; v2+ add the delta time (u16 s) and,
//! when it is not 0, the previous value; v4+ send scale 7 as "more": the real scale is
//! 7 + a scale-2 byte at the end.

use super::value::ScaledValue;
use crate::error::{Error, Result};
use crate::wire::{parse_bitmask, Reader};
use serde::Serialize;

/// A meter type, rate type, scale and value: the shared part of Report and Reset (v6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct MeterValue {
    /// 1 electric, 2 gas, 3 water, 4 heating, 5 cooling (5 bits).
    pub meter_type: u8,
    /// 0 unspecified, 1 consumed (import), 2 produced (export).
    pub rate_type: u8,
    /// The full scale (0-6, or 7 + scale 2 for v4+ scales); see [`meter_scale_unit`].
    pub scale: u16,
    pub value: ScaledValue,
}

impl MeterValue {
    /// Reads byte 0 and the PSS byte + value; returns the value (with the 3-bit scale 1) and
    /// the PSS byte (the previous value reuses it).
    fn read(r: &mut Reader<'_>) -> Result<(Self, u8)> {
        let b0 = r.u8()?;
        let pss = r.u8()?;
        let value = ScaledValue::read_value(r, pss)?;
        Ok((
            Self {
                meter_type: b0 & 0x1F,
                rate_type: (b0 >> 5) & 0x03,
                scale: u16::from(((b0 >> 7) << 2) | ((pss >> 3) & 0x03)),
                value,
            },
            pss,
        ))
    }

    fn scale1(&self) -> u8 {
        self.scale.min(7) as u8
    }

    /// Writes byte 0, the PSS byte and the value.
    fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        self.value.check("meter value")?;
        let scale1 = self.scale1();
        out.push((self.meter_type & 0x1F) | ((self.rate_type & 0x03) << 5) | ((scale1 >> 2) << 7));
        out.push(self.value.pss(scale1 & 0x03));
        self.value.write_value(out);
        Ok(())
    }

    fn scale2(&self) -> Result<Option<u8>> {
        if self.scale < 7 {
            return Ok(None);
        }
        u8::try_from(self.scale - 7)
            .map(Some)
            .map_err(|_| Error::ValueOutOfRange {
                what: "meter scale",
                detail: format!("{} exceeds 7 + 255", self.scale),
            })
    }
}

/// Reads the scale-2 byte when scale 1 says 7.
fn finish_scale(v: &mut MeterValue, r: &mut Reader<'_>) -> Result<()> {
    if v.scale == 7 {
        v.scale = 7 + u16::from(r.u8()?);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Meter {
    /// v1: no payload; v2+: rate type and scale (scale >= 7 adds a scale-2 byte, v4+).
    Get {
        selector: Option<(u8, u16)>,
    },
    Report {
        reading: MeterValue,
        /// Seconds since the previous value (v2+); 0xFFFF = unknown.
        delta_time: Option<u16>,
        /// Present when `delta_time` is set and not 0.
        previous: Option<ScaledValue>,
    },
    SupportedGet,
    SupportedReport {
        meter_type: u8,
        supports_reset: bool,
        /// v4+: bit0 consumed, bit1 produced.
        rate_types: u8,
        scales: Vec<u16>,
    },
    /// v2-5: reset all; v6: set one accumulated value.
    Reset {
        target: Option<MeterValue>,
    },
}

impl Meter {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::Get { .. } => 0x01,
            Self::Report { .. } => 0x02,
            Self::SupportedGet => 0x03,
            Self::SupportedReport { .. } => 0x04,
            Self::Reset { .. } => 0x05,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x01 => {
                let selector = match r.opt_u8() {
                    None => None,
                    Some(b) => {
                        let rate = b >> 6;
                        let mut scale = u16::from((b >> 3) & 0x07);
                        if scale == 7 {
                            scale += u16::from(r.u8()?);
                        }
                        Some((rate, scale))
                    }
                };
                Self::Get { selector }
            }
            0x02 => {
                let (mut reading, pss) = MeterValue::read(r)?;
                let mut delta_time = None;
                let mut previous = None;
                if r.remaining() >= 2 {
                    let dt = r.u16()?;
                    delta_time = Some(dt);
                    // The scale-2 byte (scale 1 = 7) comes last; leave room for it, so that a
                    // report without a previous value is not misread (zwave-js would take the
                    // scale-2 byte as a 1-byte previous value and then reject the report).
                    let scale2 = usize::from(reading.scale == 7);
                    if dt != 0 && r.remaining() >= usize::from(reading.value.size) + scale2 {
                        previous = Some(ScaledValue::read_value(r, pss)?);
                    }
                }
                finish_scale(&mut reading, r)?;
                Self::Report {
                    reading,
                    delta_time,
                    previous,
                }
            }
            0x03 => Self::SupportedGet,
            0x04 => {
                let b0 = r.u8()?;
                let b1 = r.u8()?;
                let scales = if b1 & 0x80 != 0 {
                    let n = usize::from(r.u8()?);
                    let mut mask = vec![b1 & 0x7F];
                    mask.extend_from_slice(r.take(n)?);
                    parse_bitmask(&mask, 0)
                        .into_iter()
                        .map(|s| if s >= 8 { s - 1 } else { s })
                        .collect()
                } else {
                    parse_bitmask(&[b1], 0)
                };
                Self::SupportedReport {
                    meter_type: b0 & 0x1F,
                    supports_reset: b0 & 0x80 != 0,
                    rate_types: (b0 >> 5) & 0x03,
                    scales,
                }
            }
            0x05 => {
                if r.is_empty() {
                    Self::Reset { target: None }
                } else {
                    let (mut v, _) = MeterValue::read(r)?;
                    finish_scale(&mut v, r)?;
                    Self::Reset { target: Some(v) }
                }
            }
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::Get { selector } => {
                if let Some((rate, scale)) = selector {
                    let scale1 = (*scale).min(7) as u8;
                    out.push(((rate & 0x03) << 6) | (scale1 << 3));
                    if *scale >= 7 {
                        out.push(u8::try_from(scale - 7).map_err(|_| Error::ValueOutOfRange {
                            what: "meter scale",
                            detail: scale.to_string(),
                        })?);
                    }
                }
            }
            Self::Report {
                reading,
                delta_time,
                previous,
            } => {
                reading.write(out)?;
                if let Some(dt) = delta_time {
                    out.extend_from_slice(&dt.to_be_bytes());
                    if let Some(prev) = previous.filter(|_| *dt != 0) {
                        let prev = ScaledValue {
                            precision: reading.value.precision,
                            size: reading.value.size,
                            ..prev
                        };
                        prev.check("previous meter value")?;
                        prev.write_value(out);
                    }
                }
                out.extend(reading.scale2()?);
            }
            Self::SupportedGet => {}
            Self::SupportedReport {
                meter_type,
                supports_reset,
                rate_types,
                scales,
            } => {
                out.push(
                    (meter_type & 0x1F)
                        | ((rate_types & 0x03) << 5)
                        | (u8::from(*supports_reset) << 7),
                );
                // Bits 0-6 of byte 1 are scales 0-6; scale s >= 7 is bit s + 1 of the
                // following bytes (bit 7 of byte 1 means "more").
                let bits: Vec<u16> = scales
                    .iter()
                    .map(|&s| if s >= 7 { s + 1 } else { s })
                    .collect();
                let mask = crate::wire::encode_bitmask(&bits, 0, 1);
                if mask.len() > 1 {
                    out.push(mask[0] | 0x80);
                    out.push(super::len_u8("meter scale mask", mask.len() - 1)?);
                    out.extend_from_slice(&mask[1..]);
                } else {
                    out.push(mask[0] & 0x7F);
                }
            }
            Self::Reset { target } => {
                if let Some(v) = target {
                    v.write(out)?;
                    out.extend(v.scale2()?);
                }
            }
        }
        Ok(())
    }
}

/// The meter type's name.
pub fn meter_type_name(meter_type: u8) -> Option<&'static str> {
    Some(match meter_type {
        0x01 => "Electric",
        0x02 => "Gas",
        0x03 => "Water",
        0x04 => "Heating",
        0x05 => "Cooling",
        _ => return None,
    })
}

/// The unit of a meter scale (zwave-js `Meters.ts`).
pub fn meter_scale_unit(meter_type: u8, scale: u16) -> Option<&'static str> {
    Some(match (meter_type, scale) {
        (0x01, 0) => "kWh",
        (0x01, 1) => "kVAh",
        (0x01, 2) => "W",
        (0x01, 3) => "pulses",
        (0x01, 4) => "V",
        (0x01, 5) => "A",
        (0x01, 6) => "Power Factor",
        (0x01, 7) => "kVar",
        (0x01, 8) => "kVarh",
        (0x02, 0) | (0x03, 0) => "m³",
        (0x02, 1) | (0x03, 1) => "ft³",
        (0x03, 2) => "US gallons",
        (0x02, 3) | (0x03, 3) => "pulses",
        (0x04, 0) | (0x05, 0) => "kWh",
        _ => return None,
    })
}
