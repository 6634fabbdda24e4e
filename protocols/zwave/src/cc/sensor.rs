//! Multilevel Sensor (0x31): GetSupportedSensor 01 / SupportedSensorReport 02,
//! GetSupportedScale 03 / SupportedScaleReport 06, Get 04 / Report 05.
//! Layouts: zwave-js `packages/cc/src/cc/MultilevelSensorCC.ts`; sensor types and scales:
//! zwave-js `packages/core/src/registries/Sensors.ts` (the Z-Wave Alliance sensor table).

use super::value::ScaledValue;
use crate::error::Result;
use crate::wire::{encode_bitmask, parse_bitmask, Reader};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MultilevelSensor {
    GetSupportedSensor,
    /// Supported sensor types (bit 0 of the mask = type 1).
    SupportedSensorReport {
        sensor_types: Vec<u8>,
    },
    GetSupportedScale {
        sensor_type: u8,
    },
    /// Supported scales 0-3 of a sensor type.
    SupportedScaleReport {
        sensor_type: u8,
        scales: Vec<u8>,
    },
    /// v1-4: no payload; v5+: a sensor type and scale.
    Get {
        sensor: Option<(u8, u8)>,
    },
    /// `scale` is 0-3; see [`sensor_type_name`] and [`sensor_scale_unit`].
    Report {
        sensor_type: u8,
        scale: u8,
        value: ScaledValue,
    },
}

impl MultilevelSensor {
    pub(crate) fn command(&self) -> u8 {
        match self {
            Self::GetSupportedSensor => 0x01,
            Self::SupportedSensorReport { .. } => 0x02,
            Self::GetSupportedScale { .. } => 0x03,
            Self::SupportedScaleReport { .. } => 0x06,
            Self::Get { .. } => 0x04,
            Self::Report { .. } => 0x05,
        }
    }

    pub(crate) fn decode(cmd: u8, r: &mut Reader<'_>) -> Result<Option<Self>> {
        Ok(Some(match cmd {
            0x01 => Self::GetSupportedSensor,
            0x02 => {
                let mask = r.rest();
                if mask.is_empty() {
                    r.u8()?;
                }
                Self::SupportedSensorReport {
                    sensor_types: parse_bitmask(mask, 1)
                        .into_iter()
                        .filter_map(|t| u8::try_from(t).ok())
                        .collect(),
                }
            }
            0x03 => Self::GetSupportedScale {
                sensor_type: r.u8()?,
            },
            0x06 => {
                let sensor_type = r.u8()?;
                let mask = r.u8()? & 0x0F;
                Self::SupportedScaleReport {
                    sensor_type,
                    scales: (0..4).filter(|s| mask & (1 << s) != 0).collect(),
                }
            }
            0x04 => {
                let sensor = match (r.opt_u8(), r.opt_u8()) {
                    (Some(t), Some(s)) => Some((t, (s >> 3) & 0x03)),
                    _ => None,
                };
                Self::Get { sensor }
            }
            0x05 => {
                let sensor_type = r.u8()?;
                let (value, scale) = ScaledValue::read_with_scale(r)?;
                Self::Report {
                    sensor_type,
                    scale,
                    value,
                }
            }
            _ => return Ok(None),
        }))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::GetSupportedSensor => {}
            Self::SupportedSensorReport { sensor_types } => {
                let ids: Vec<u16> = sensor_types.iter().map(|&t| u16::from(t)).collect();
                out.extend(encode_bitmask(&ids, 1, 1));
            }
            Self::GetSupportedScale { sensor_type } => out.push(*sensor_type),
            Self::SupportedScaleReport {
                sensor_type,
                scales,
            } => {
                let mask = scales
                    .iter()
                    .filter(|&&s| s < 4)
                    .fold(0u8, |m, &s| m | (1 << s));
                out.extend_from_slice(&[*sensor_type, mask]);
            }
            Self::Get { sensor } => {
                if let Some((t, s)) = sensor {
                    out.extend_from_slice(&[*t, (s & 0x03) << 3]);
                }
            }
            Self::Report {
                sensor_type,
                scale,
                value,
            } => {
                value.check("sensor value")?;
                out.extend_from_slice(&[*sensor_type, value.pss(*scale)]);
                value.write_value(out);
            }
        }
        Ok(())
    }
}

/// (type, name, units by scale) for the sensor types a gateway meets most.
const SENSORS: &[(u8, &str, &[&str])] = &[
    (0x01, "Air temperature", &["°C", "°F"]),
    (0x02, "General purpose", &["%", ""]),
    (0x03, "Illuminance", &["%", "lx"]),
    (0x04, "Power", &["W", "Btu/h"]),
    (0x05, "Humidity", &["%", "g/m³"]),
    (0x06, "Velocity", &["m/s", "mph"]),
    (0x07, "Direction", &["°"]),
    (0x08, "Atmospheric pressure", &["kPa", "inHg"]),
    (0x09, "Barometric pressure", &["kPa", "inHg"]),
    (0x0A, "Solar radiation", &["W/m²"]),
    (0x0B, "Dew point", &["°C", "°F"]),
    (0x0C, "Rain rate", &["mm/h", "in/h"]),
    (0x0D, "Tide level", &["m", "ft"]),
    (0x0E, "Weight", &["kg", "lb"]),
    (0x0F, "Voltage", &["V", "mV"]),
    (0x10, "Current", &["A", "mA"]),
    (0x11, "Carbon dioxide (CO₂) level", &["ppm"]),
    (0x12, "Air flow", &["m³/h", "cfm"]),
    (0x13, "Tank capacity", &["l", "cbm", "gal"]),
    (0x14, "Distance", &["m", "cm", "ft"]),
    (0x15, "Angle position", &["%", "° N", "° S"]),
    (0x16, "Rotation", &["rpm", "Hz"]),
    (0x17, "Water temperature", &["°C", "°F"]),
    (0x18, "Soil temperature", &["°C", "°F"]),
    (0x19, "Seismic Intensity", &["", "", "", ""]),
    (0x1A, "Seismic magnitude", &["", "", "", ""]),
    (0x1B, "Ultraviolet", &["UV index"]),
    (0x1C, "Electrical resistivity", &["Ω·m"]),
    (0x1D, "Electrical conductivity", &["S/m"]),
    (0x1E, "Loudness", &["dB", "dBA"]),
    (0x1F, "Moisture", &["%", "m³/m³", "kΩ", "aw"]),
    (0x20, "Frequency", &["Hz", "kHz"]),
    (0x21, "Time", &["s"]),
    (0x22, "Target temperature", &["°C", "°F"]),
    (0x23, "Particulate Matter 2.5", &["mol/m³", "µg/m³"]),
    (0x24, "Formaldehyde (CH₂O) level", &["mol/m³"]),
    (0x25, "Radon concentration", &["bq/m³", "pCi/l"]),
    (0x26, "Methane (CH₄) density", &["mol/m³"]),
    (0x27, "Volatile Organic Compound level", &["mol/m³", "ppm"]),
    (0x28, "Carbon monoxide (CO) level", &["mol/m³", "ppm"]),
    (0x29, "Soil humidity", &["%"]),
    (0x2A, "Soil reactivity", &["pH"]),
    (0x2B, "Soil salinity", &["mol/m³"]),
    (0x2C, "Heart rate", &["bpm"]),
    (0x2D, "Blood pressure", &["mmHg", "mmHg"]),
    (0x2E, "Muscle mass", &["kg"]),
    (0x2F, "Fat mass", &["kg"]),
    (0x30, "Bone mass", &["kg"]),
    (0x31, "Total body water (TBW)", &["kg"]),
    (0x32, "Basis metabolic rate (BMR)", &["J"]),
    (0x33, "Body Mass Index (BMI)", &[""]),
    (0x40, "Water Chlorine level", &["mg/l"]),
    (0x41, "Water acidity", &["pH"]),
    (0x42, "Water Oxidation reduction potential", &["mV"]),
    (0x43, "Heart Rate LF/HF ratio", &[""]),
    (0x44, "Motion Direction", &["°"]),
    (0x45, "Applied force on the sensor", &["N"]),
    (0x46, "Return Air temperature", &["°C", "°F"]),
    (0x47, "Supply Air temperature", &["°C", "°F"]),
    (0x48, "Condenser Coil temperature", &["°C", "°F"]),
    (0x49, "Evaporator Coil temperature", &["°C", "°F"]),
    (0x4A, "Liquid Line temperature", &["°C", "°F"]),
    (0x4B, "Discharge Line temperature", &["°C", "°F"]),
    (0x4C, "Suction Pressure", &["kPa", "psi"]),
    (0x4D, "Discharge Pressure", &["kPa", "psi"]),
    (0x4E, "Defrost temperature", &["°C", "°F"]),
    (0x4F, "Ozone", &["µg/m³"]),
    (0x50, "Sulfur dioxide", &["µg/m³"]),
    (0x51, "Nitrogen dioxide", &["µg/m³"]),
    (0x52, "Ammonia", &["µg/m³"]),
    (0x53, "Lead", &["µg/m³"]),
    (0x54, "Particulate Matter 1", &["µg/m³"]),
    (0x55, "Person counter (entering)", &[""]),
    (0x56, "Person counter (exiting)", &[""]),
];

/// The sensor type's name, as in the Z-Wave Alliance table (`None` if not listed here).
pub fn sensor_type_name(sensor_type: u8) -> Option<&'static str> {
    SENSORS
        .iter()
        .find(|(t, ..)| *t == sensor_type)
        .map(|(_, name, _)| *name)
}

/// The unit of a sensor type's scale (`Some("")` for dimensionless scales).
pub fn sensor_scale_unit(sensor_type: u8, scale: u8) -> Option<&'static str> {
    SENSORS
        .iter()
        .find(|(t, ..)| *t == sensor_type)
        .and_then(|(_, _, units)| units.get(usize::from(scale)).copied())
}
