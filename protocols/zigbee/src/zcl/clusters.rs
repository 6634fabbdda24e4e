//! What ZCL attributes mean: cluster and attribute names, units and scaling for the clusters a
//! gateway needs, and the cluster-specific commands (On/Off, Level, IAS Zone). The mapping that
//! applies these tables to values ([`normalize`] into a [`Reading`]) is in
//! [`readings`](super::readings), re-exported here.
//!
//! Attribute ids and types: ZH `src/zspec/zcl/definition/cluster.ts`; scaling: ZHC
//! `src/lib/modernExtend.ts` / `converters/fromZigbee.ts` (see the per-attribute comments).
//! Unknown clusters and attributes are not errors: they normalize to a reading with no name
//! that carries the typed raw value.

use serde::Serialize;

use super::{green_power, Direction, ZclCommand, ZclFrame, ZclHeader};
use crate::error::Result;
use crate::wire::Reader;

// The mapping from attribute values to readings lives in `readings`; these names stay here
// for the callers that know them from this module.
pub use super::readings::{normalize, normalize_frame, Reading, ReadingValue, ScalingContext};

/// Cluster ids handled here.
pub mod id {
    pub const BASIC: u16 = 0x0000;
    pub const POWER_CONFIG: u16 = 0x0001;
    pub const GROUPS: u16 = 0x0004;
    pub const ON_OFF: u16 = 0x0006;
    pub const LEVEL_CONTROL: u16 = 0x0008;
    pub const OTA: u16 = 0x0019;
    pub const ILLUMINANCE: u16 = 0x0400;
    pub const TEMPERATURE: u16 = 0x0402;
    pub const PRESSURE: u16 = 0x0403;
    pub const HUMIDITY: u16 = 0x0405;
    pub const OCCUPANCY: u16 = 0x0406;
    pub const IAS_ZONE: u16 = 0x0500;
    pub const GREEN_POWER: u16 = super::green_power::CLUSTER;
    pub const METERING: u16 = 0x0702;
    pub const ELECTRICAL_MEASUREMENT: u16 = 0x0B04;
}

/// How a raw attribute value becomes a reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// The number as sent (integers, enums, bitmaps).
    Raw,
    /// Divide by the factor (e.g. 100 for 0.01 °C).
    Div(f64),
    /// Multiply by the factor (e.g. 0.1 for 100 mV units).
    Mul(f64),
    /// `10^((v − 1) / 10000)` lx; 0 means "too dark to measure" (0 lx).
    Illuminance,
    /// Bit 0 of a bitmap as a boolean (occupancy).
    Bit0,
    /// Boolean attribute.
    Bool,
    /// Character string.
    Text,
    /// `scaledValue × 10^(−scale) / 100` hPa, with `scale` from attribute 0x0014 (ZHC `pressure`).
    PressureScaled,
    /// Metering: `raw × multiplier / divisor` (kWh for summations).
    MeteringEnergy,
    /// Metering instantaneous demand: `raw × multiplier / divisor × 1000` W (ZHC `electricityMeter`).
    MeteringPower,
    /// Electrical measurement AC voltage pair 0x0600/0x0601.
    AcVoltage,
    /// Electrical measurement AC current pair 0x0602/0x0603.
    AcCurrent,
    /// Electrical measurement AC power pair 0x0604/0x0605.
    AcPower,
}

/// One known attribute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttributeDef {
    pub id: u16,
    pub name: &'static str,
    pub unit: Option<&'static str>,
    pub scale: Scale,
}

/// One known cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterDef {
    pub id: u16,
    pub name: &'static str,
    pub attributes: &'static [AttributeDef],
}

const fn a(id: u16, name: &'static str, unit: Option<&'static str>, scale: Scale) -> AttributeDef {
    AttributeDef {
        id,
        name,
        unit,
        scale,
    }
}

use Scale::*;

const BASIC: &[AttributeDef] = &[
    a(0x0000, "zcl_version", None, Raw),
    a(0x0001, "app_version", None, Raw),
    a(0x0002, "stack_version", None, Raw),
    a(0x0003, "hw_version", None, Raw),
    a(0x0004, "manufacturer_name", None, Text),
    a(0x0005, "model_id", None, Text),
    a(0x0006, "date_code", None, Text),
    a(0x0007, "power_source", None, Raw),
    a(0x4000, "sw_build_id", None, Text),
];

const POWER_CONFIG: &[AttributeDef] = &[
    // Mains voltage and battery voltage are in 100 mV units (ZHC: batteryVoltage * 100 mV).
    a(0x0000, "mains_voltage", Some("V"), Mul(0.1)),
    a(0x0020, "battery_voltage", Some("V"), Mul(0.1)),
    // 0.5 % units, 200 = 100 % (ZHC: / 2).
    a(0x0021, "battery_percentage", Some("%"), Div(2.0)),
    a(0x003E, "battery_alarm_state", None, Raw),
];

const ON_OFF: &[AttributeDef] = &[
    a(0x0000, "on_off", None, Bool),
    a(0x4001, "on_time", Some("s"), Div(10.0)),
    a(0x4002, "off_wait_time", Some("s"), Div(10.0)),
    a(0x4003, "start_up_on_off", None, Raw),
];

const LEVEL: &[AttributeDef] = &[
    a(0x0000, "current_level", None, Raw),
    a(0x0001, "remaining_time", Some("s"), Div(10.0)),
    a(0x0010, "on_off_transition_time", Some("s"), Div(10.0)),
    a(0x0011, "on_level", None, Raw),
    a(0x4000, "start_up_current_level", None, Raw),
];

const ILLUMINANCE: &[AttributeDef] = &[
    a(0x0000, "illuminance", Some("lx"), Illuminance),
    a(0x0001, "illuminance_min", Some("lx"), Illuminance),
    a(0x0002, "illuminance_max", Some("lx"), Illuminance),
    a(0x0003, "illuminance_tolerance", None, Raw),
    a(0x0004, "light_sensor_type", None, Raw),
];

const TEMPERATURE: &[AttributeDef] = &[
    a(0x0000, "temperature", Some("°C"), Div(100.0)),
    a(0x0001, "temperature_min", Some("°C"), Div(100.0)),
    a(0x0002, "temperature_max", Some("°C"), Div(100.0)),
    a(0x0003, "temperature_tolerance", Some("°C"), Div(100.0)),
];

const PRESSURE: &[AttributeDef] = &[
    // MeasuredValue = 10 × kPa = hPa.
    a(0x0000, "pressure", Some("hPa"), Raw),
    a(0x0001, "pressure_min", Some("hPa"), Raw),
    a(0x0002, "pressure_max", Some("hPa"), Raw),
    a(0x0003, "pressure_tolerance", Some("hPa"), Raw),
    a(0x0010, "pressure_scaled", Some("hPa"), PressureScaled),
    a(0x0011, "pressure_scaled_min", Some("hPa"), PressureScaled),
    a(0x0012, "pressure_scaled_max", Some("hPa"), PressureScaled),
    a(0x0013, "pressure_scaled_tolerance", None, Raw),
    a(0x0014, "pressure_scale", None, Raw),
];

const HUMIDITY: &[AttributeDef] = &[
    a(0x0000, "humidity", Some("%"), Div(100.0)),
    a(0x0001, "humidity_min", Some("%"), Div(100.0)),
    a(0x0002, "humidity_max", Some("%"), Div(100.0)),
    a(0x0003, "humidity_tolerance", Some("%"), Div(100.0)),
];

const OCCUPANCY: &[AttributeDef] = &[
    a(0x0000, "occupancy", None, Bit0),
    a(0x0001, "occupancy_sensor_type", None, Raw),
    a(0x0010, "pir_o_to_u_delay", Some("s"), Raw),
];

const IAS_ZONE: &[AttributeDef] = &[
    a(0x0000, "zone_state", None, Raw),
    a(0x0001, "zone_type", None, Raw),
    a(0x0002, "zone_status", None, Raw),
    a(0x0010, "ias_cie_address", None, Raw),
    a(0x0011, "zone_id", None, Raw),
];

const METERING: &[AttributeDef] = &[
    a(0x0000, "energy", Some("kWh"), MeteringEnergy),
    a(0x0001, "produced_energy", Some("kWh"), MeteringEnergy),
    a(0x0300, "unit_of_measure", None, Raw),
    a(0x0301, "multiplier", None, Raw),
    a(0x0302, "divisor", None, Raw),
    a(0x0303, "summation_formatting", None, Raw),
    a(0x0400, "power", Some("W"), MeteringPower),
];

const ELECTRICAL: &[AttributeDef] = &[
    a(0x0000, "measurement_type", None, Raw),
    a(0x0300, "ac_frequency", Some("Hz"), Raw),
    a(0x0505, "voltage", Some("V"), AcVoltage),
    a(0x0508, "current", Some("A"), AcCurrent),
    a(0x050B, "power", Some("W"), AcPower),
    a(0x050E, "reactive_power", Some("VAr"), AcPower),
    a(0x050F, "apparent_power", Some("VA"), AcPower),
    a(0x0510, "power_factor", None, Raw),
    a(0x0600, "ac_voltage_multiplier", None, Raw),
    a(0x0601, "ac_voltage_divisor", None, Raw),
    a(0x0602, "ac_current_multiplier", None, Raw),
    a(0x0603, "ac_current_divisor", None, Raw),
    a(0x0604, "ac_power_multiplier", None, Raw),
    a(0x0605, "ac_power_divisor", None, Raw),
];

/// Every cluster this module knows.
pub const CLUSTERS: &[ClusterDef] = &[
    ClusterDef {
        id: id::BASIC,
        name: "basic",
        attributes: BASIC,
    },
    ClusterDef {
        id: id::POWER_CONFIG,
        name: "power_config",
        attributes: POWER_CONFIG,
    },
    ClusterDef {
        id: id::ON_OFF,
        name: "on_off",
        attributes: ON_OFF,
    },
    ClusterDef {
        id: id::LEVEL_CONTROL,
        name: "level_control",
        attributes: LEVEL,
    },
    ClusterDef {
        id: id::ILLUMINANCE,
        name: "illuminance_measurement",
        attributes: ILLUMINANCE,
    },
    ClusterDef {
        id: id::TEMPERATURE,
        name: "temperature_measurement",
        attributes: TEMPERATURE,
    },
    ClusterDef {
        id: id::PRESSURE,
        name: "pressure_measurement",
        attributes: PRESSURE,
    },
    ClusterDef {
        id: id::HUMIDITY,
        name: "relative_humidity",
        attributes: HUMIDITY,
    },
    ClusterDef {
        id: id::OCCUPANCY,
        name: "occupancy_sensing",
        attributes: OCCUPANCY,
    },
    ClusterDef {
        id: id::IAS_ZONE,
        name: "ias_zone",
        attributes: IAS_ZONE,
    },
    ClusterDef {
        id: id::METERING,
        name: "metering",
        attributes: METERING,
    },
    ClusterDef {
        id: id::ELECTRICAL_MEASUREMENT,
        name: "electrical_measurement",
        attributes: ELECTRICAL,
    },
];

/// The definition of a known cluster.
pub fn cluster(cluster_id: u16) -> Option<&'static ClusterDef> {
    CLUSTERS.iter().find(|c| c.id == cluster_id)
}

/// The definition of a known attribute.
pub fn attribute(cluster_id: u16, attribute_id: u16) -> Option<&'static AttributeDef> {
    cluster(cluster_id)?
        .attributes
        .iter()
        .find(|a| a.id == attribute_id)
}

/// IAS Zone zoneStatus bits (ZHC `ias_*_alarm` converters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IasZoneStatus {
    pub raw: u16,
    pub alarm1: bool,
    pub alarm2: bool,
    pub tamper: bool,
    pub battery_low: bool,
    pub supervision_reports: bool,
    pub restore_reports: bool,
    pub trouble: bool,
    pub ac_mains_fault: bool,
    pub test: bool,
    pub battery_defect: bool,
}

impl From<u16> for IasZoneStatus {
    fn from(raw: u16) -> Self {
        let bit = |n: u16| raw & (1 << n) != 0;
        Self {
            raw,
            alarm1: bit(0),
            alarm2: bit(1),
            tamper: bit(2),
            battery_low: bit(3),
            supervision_reports: bit(4),
            restore_reports: bit(5),
            trouble: bit(6),
            ac_mains_fault: bit(7),
            test: bit(8),
            battery_defect: bit(9),
        }
    }
}

/// On/Off cluster command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOffCommand {
    Off,
    On,
    Toggle,
}

impl OnOffCommand {
    pub fn command_id(self) -> u8 {
        match self {
            Self::Off => 0x00,
            Self::On => 0x01,
            Self::Toggle => 0x02,
        }
    }
}

/// On/Off cluster command frame from the gateway (cluster 0x0006, client→server).
pub fn on_off(cmd: OnOffCommand, tsn: u8) -> ZclFrame {
    ZclFrame {
        header: ZclHeader::cluster(Direction::ClientToServer, false, tsn, cmd.command_id()),
        command: match cmd {
            OnOffCommand::Off => ZclCommand::Off,
            OnOffCommand::On => ZclCommand::On,
            OnOffCommand::Toggle => ZclCommand::Toggle,
        },
    }
}

/// Level Control "move to level" (0x00) frame; `transition_time` in tenths of a second.
pub fn move_to_level(level: u8, transition_time: u16, tsn: u8) -> ZclFrame {
    level_frame(false, level, transition_time, tsn)
}

/// Level Control "move to level with on/off" (0x04) frame.
pub fn move_to_level_with_on_off(level: u8, transition_time: u16, tsn: u8) -> ZclFrame {
    level_frame(true, level, transition_time, tsn)
}

fn level_frame(with_on_off: bool, level: u8, transition_time: u16, tsn: u8) -> ZclFrame {
    ZclFrame {
        header: ZclHeader::cluster(
            Direction::ClientToServer,
            false,
            tsn,
            if with_on_off { 0x04 } else { 0x00 },
        ),
        command: ZclCommand::MoveToLevel {
            with_on_off,
            level,
            transition_time,
            options: None,
        },
    }
}

/// IAS Zone enroll response (CIE → device, 0x00); `response_code` 0 = success.
pub fn ias_enroll_response(response_code: u8, zone_id: u8, tsn: u8) -> ZclFrame {
    ZclFrame {
        header: ZclHeader::cluster(Direction::ClientToServer, true, tsn, 0x00),
        command: ZclCommand::IasZoneEnrollResponse {
            response_code,
            zone_id,
        },
    }
}

/// Cluster-specific commands of the clusters above; `Ok(None)` when not modelled.
pub(crate) fn decode_cluster_command(
    cluster_id: u16,
    direction: Direction,
    command_id: u8,
    r: &mut Reader<'_>,
) -> Result<Option<ZclCommand>> {
    use Direction::{ClientToServer as C2S, ServerToClient as S2C};
    Ok(Some(match (cluster_id, direction, command_id) {
        (id::ON_OFF, C2S, 0x00) => ZclCommand::Off,
        (id::ON_OFF, C2S, 0x01) => ZclCommand::On,
        (id::ON_OFF, C2S, 0x02) => ZclCommand::Toggle,
        (id::LEVEL_CONTROL, C2S, 0x00 | 0x04) => {
            let level = r.u8()?;
            let transition_time = r.u16()?;
            let options = match (r.opt_u8(), r.opt_u8()) {
                (Some(m), Some(o)) => Some((m, o)),
                _ => None,
            };
            ZclCommand::MoveToLevel {
                with_on_off: command_id == 0x04,
                level,
                transition_time,
                options,
            }
        }
        (id::IAS_ZONE, S2C, 0x00) => ZclCommand::IasZoneStatusChangeNotification {
            zone_status: r.u16()?,
            extended_status: r.u8()?,
            zone_id: r.opt_u8(),
            delay: r.u16().ok(),
        },
        (id::IAS_ZONE, S2C, 0x01) => ZclCommand::IasZoneEnrollRequest {
            zone_type: r.u16()?,
            manufacturer_code: r.u16()?,
        },
        (id::IAS_ZONE, C2S, 0x00) => ZclCommand::IasZoneEnrollResponse {
            response_code: r.u8()?,
            zone_id: r.u8()?,
        },
        (green_power::CLUSTER, C2S, green_power::NOTIFICATION) => {
            ZclCommand::GreenPowerNotification(green_power::GpNotification::read(r, false)?)
        }
        (green_power::CLUSTER, C2S, green_power::COMMISSIONING_NOTIFICATION) => {
            ZclCommand::GreenPowerCommissioningNotification(green_power::GpNotification::read(
                r, true,
            )?)
        }
        _ => return Ok(None),
    }))
}
