//! Zigbee Cluster Library frames: [`ZclHeader`], global ("foundation") commands and the
//! cluster-specific commands a gateway handles, as [`ZclFrame`].
//!
//! Header layout: ZH `src/zspec/zcl/zclHeader.ts`; global command payloads: ZH
//! `src/zspec/zcl/definition/foundation.ts` and ZP `zigpy/zcl/foundation.py`. Cluster meaning
//! (names, units, scaling) lives in [`clusters`], the mapping of values and commands to
//! readings in [`readings`]; value encoding in [`types`].
//! Anything not modelled decodes to [`ZclCommand::Raw`] instead of failing.

pub mod clusters;
pub mod green_power;
pub mod manufacturer;
pub mod readings;
pub mod types;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};
pub use types::{DataType, ZclBytes, ZclValue};

/// Global command ids (ZH `foundation.ts`).
pub mod global {
    pub const READ_ATTRIBUTES: u8 = 0x00;
    pub const READ_ATTRIBUTES_RSP: u8 = 0x01;
    pub const WRITE_ATTRIBUTES: u8 = 0x02;
    pub const WRITE_ATTRIBUTES_UNDIVIDED: u8 = 0x03;
    pub const WRITE_ATTRIBUTES_RSP: u8 = 0x04;
    pub const WRITE_ATTRIBUTES_NO_RSP: u8 = 0x05;
    pub const CONFIGURE_REPORTING: u8 = 0x06;
    pub const CONFIGURE_REPORTING_RSP: u8 = 0x07;
    pub const REPORT_ATTRIBUTES: u8 = 0x0A;
    pub const DEFAULT_RSP: u8 = 0x0B;
    pub const DISCOVER_ATTRIBUTES: u8 = 0x0C;
    pub const DISCOVER_ATTRIBUTES_RSP: u8 = 0x0D;
}

/// ZCL status codes (ZH `definition/status.ts`).
pub mod status {
    pub const SUCCESS: u8 = 0x00;
    pub const FAILURE: u8 = 0x01;
    pub const MALFORMED_COMMAND: u8 = 0x80;
    pub const UNSUP_COMMAND: u8 = 0x81;
    pub const UNSUPPORTED_ATTRIBUTE: u8 = 0x86;
    pub const INVALID_VALUE: u8 = 0x87;
    pub const READ_ONLY: u8 = 0x88;
    pub const UNREPORTABLE_ATTRIBUTE: u8 = 0x8C;
    pub const ABORT: u8 = 0x95;
    pub const INVALID_IMAGE: u8 = 0x96;
    pub const WAIT_FOR_DATA: u8 = 0x97;
    pub const NO_IMAGE_AVAILABLE: u8 = 0x98;
    pub const REQUIRE_MORE_IMAGE: u8 = 0x99;
}

/// Frame type, frame-control bits 0–1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameType {
    /// Foundation command, valid on every cluster.
    Global,
    ClusterSpecific,
    Reserved(u8),
}

/// Direction, frame-control bit 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the client (e.g. the gateway reading a sensor) to the server (the sensor).
    ClientToServer,
    /// From the server side, e.g. a device's attribute report.
    ServerToClient,
}

/// ZCL frame header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZclHeader {
    pub frame_type: FrameType,
    /// Present iff frame-control bit 2 (manufacturer specific) is set.
    pub manufacturer_code: Option<u16>,
    pub direction: Direction,
    pub disable_default_response: bool,
    /// Transaction sequence number.
    pub tsn: u8,
    pub command_id: u8,
}

impl ZclHeader {
    /// A global command header.
    pub fn global(
        direction: Direction,
        disable_default_response: bool,
        tsn: u8,
        command_id: u8,
    ) -> Self {
        Self {
            frame_type: FrameType::Global,
            manufacturer_code: None,
            direction,
            disable_default_response,
            tsn,
            command_id,
        }
    }

    /// A cluster-specific command header.
    pub fn cluster(
        direction: Direction,
        disable_default_response: bool,
        tsn: u8,
        command_id: u8,
    ) -> Self {
        Self {
            frame_type: FrameType::ClusterSpecific,
            ..Self::global(direction, disable_default_response, tsn, command_id)
        }
    }

    pub fn frame_control(&self) -> u8 {
        let ft = match self.frame_type {
            FrameType::Global => 0,
            FrameType::ClusterSpecific => 1,
            FrameType::Reserved(b) => b & 0x03,
        };
        ft | (u8::from(self.manufacturer_code.is_some()) << 2)
            | (u8::from(self.direction == Direction::ServerToClient) << 3)
            | (u8::from(self.disable_default_response) << 4)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let fc = r.u8()?;
        let manufacturer_code = if fc & 0x04 != 0 { Some(r.u16()?) } else { None };
        Ok(Self {
            frame_type: match fc & 0x03 {
                0 => FrameType::Global,
                1 => FrameType::ClusterSpecific,
                other => FrameType::Reserved(other),
            },
            manufacturer_code,
            direction: if fc & 0x08 != 0 {
                Direction::ServerToClient
            } else {
                Direction::ClientToServer
            },
            disable_default_response: fc & 0x10 != 0,
            tsn: r.u8()?,
            command_id: r.u8()?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.put_u8(self.frame_control());
        if let Some(m) = self.manufacturer_code {
            out.put_u16(m);
        }
        out.put_u8(self.tsn);
        out.put_u8(self.command_id);
    }
}

/// `attrId, dataType, value`: one record of a report or write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributeRecord {
    pub attribute_id: u16,
    pub value: ZclValue,
}

/// One record of a read-attributes response; `value` is present iff `status` is SUCCESS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadAttributeStatus {
    pub attribute_id: u16,
    pub status: u8,
    pub value: Option<ZclValue>,
}

/// A failed attribute of a write-attributes or configure-reporting response.
/// A response with a single SUCCESS status decodes to an empty list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeStatus {
    pub status: u8,
    /// Only in configure-reporting responses.
    pub direction: Option<u8>,
    pub attribute_id: u16,
}

/// One record of a configure-reporting command.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "direction", rename_all = "snake_case")]
pub enum ReportingConfig {
    /// Direction 0: the receiver will send reports of `attribute_id`.
    Send {
        attribute_id: u16,
        data_type: DataType,
        min_interval: u16,
        /// 0xFFFF stops reporting.
        max_interval: u16,
        /// Present for analog types only (same type as the attribute).
        reportable_change: Option<ZclValue>,
    },
    /// Direction 1: the receiver should expect reports within `timeout` seconds.
    Receive { attribute_id: u16, timeout: u16 },
}

/// A ZCL command payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ZclCommand {
    ReadAttributes {
        attribute_ids: Vec<u16>,
    },
    ReadAttributesRsp {
        records: Vec<ReadAttributeStatus>,
    },
    WriteAttributes {
        records: Vec<AttributeRecord>,
    },
    WriteAttributesUndivided {
        records: Vec<AttributeRecord>,
    },
    WriteAttributesNoRsp {
        records: Vec<AttributeRecord>,
    },
    /// Empty `failures` = every attribute written.
    WriteAttributesRsp {
        failures: Vec<AttributeStatus>,
    },
    ConfigureReporting {
        records: Vec<ReportingConfig>,
    },
    /// Empty `failures` = every attribute configured.
    ConfigureReportingRsp {
        failures: Vec<AttributeStatus>,
    },
    ReportAttributes {
        records: Vec<AttributeRecord>,
    },
    DefaultRsp {
        command_id: u8,
        status: u8,
    },
    DiscoverAttributes {
        start_attribute: u16,
        max_count: u8,
    },
    DiscoverAttributesRsp {
        complete: bool,
        attributes: Vec<(u16, DataType)>,
    },
    /// On/Off 0x0006 client→server 0x00 / 0x01 / 0x02.
    Off,
    On,
    Toggle,
    /// Level 0x0008 0x00 (`with_on_off` false) or 0x04 (true).
    MoveToLevel {
        with_on_off: bool,
        level: u8,
        /// Tenths of a second.
        transition_time: u16,
        /// Optional trailing options mask and override (ZCL 6+).
        options: Option<(u8, u8)>,
    },
    /// IAS Zone 0x0500 server→client 0x00.
    IasZoneStatusChangeNotification {
        zone_status: u16,
        extended_status: u8,
        /// Some older sensors stop after the extended status.
        zone_id: Option<u8>,
        /// Quarter seconds.
        delay: Option<u16>,
    },
    /// IAS Zone 0x0500 server→client 0x01.
    IasZoneEnrollRequest {
        zone_type: u16,
        manufacturer_code: u16,
    },
    /// IAS Zone 0x0500 client→server 0x00.
    IasZoneEnrollResponse {
        response_code: u8,
        zone_id: u8,
    },
    /// Green Power 0x0021 client→server 0x00: a GP proxy forwards a GPD's frame.
    GreenPowerNotification(green_power::GpNotification),
    /// Green Power 0x0021 client→server 0x04: the same while the proxy is commissioning.
    GreenPowerCommissioningNotification(green_power::GpNotification),
    /// Any other command; payload kept as bytes.
    Raw {
        #[serde(serialize_with = "crate::serde_hex")]
        payload: Vec<u8>,
    },
}

/// A whole ZCL frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZclFrame {
    pub header: ZclHeader,
    pub command: ZclCommand,
}

fn read_records(r: &mut Reader<'_>) -> Result<Vec<AttributeRecord>> {
    let mut out = Vec::new();
    while !r.is_empty() {
        let attribute_id = r.u16()?;
        let dt = DataType(r.u8()?);
        out.push(AttributeRecord {
            attribute_id,
            value: ZclValue::read(dt, r, 0)?,
        });
    }
    Ok(out)
}

fn write_records(out: &mut Vec<u8>, records: &[AttributeRecord]) -> Result<()> {
    for rec in records {
        out.put_u16(rec.attribute_id);
        out.put_u8(rec.value.data_type().0);
        rec.value.write(out)?;
    }
    Ok(())
}

fn read_status_list(r: &mut Reader<'_>, with_direction: bool) -> Result<Vec<AttributeStatus>> {
    // A lone status byte means "all succeeded" (or a blanket failure with no attribute).
    if r.remaining() == 1 {
        let status = r.u8()?;
        return Ok(if status == status::SUCCESS {
            Vec::new()
        } else {
            vec![AttributeStatus {
                status,
                direction: None,
                attribute_id: 0xFFFF,
            }]
        });
    }
    let mut out = Vec::new();
    while !r.is_empty() {
        let status = r.u8()?;
        let direction = if with_direction { Some(r.u8()?) } else { None };
        let attribute_id = r.u16()?;
        out.push(AttributeStatus {
            status,
            direction,
            attribute_id,
        });
    }
    Ok(out)
}

fn write_status_list(out: &mut Vec<u8>, list: &[AttributeStatus], with_direction: bool) {
    if list.is_empty() {
        out.put_u8(status::SUCCESS);
        return;
    }
    for s in list {
        out.put_u8(s.status);
        if with_direction {
            out.put_u8(s.direction.unwrap_or(0));
        }
        out.put_u16(s.attribute_id);
    }
}

impl ZclFrame {
    /// Decodes a ZCL frame received on `cluster_id`. Unknown commands (or unknown clusters'
    /// specific commands) decode to [`ZclCommand::Raw`]; malformed known ones are errors.
    pub fn decode(cluster_id: u16, bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "ZCL frame");
        let header = ZclHeader::read(&mut r)?;
        let command = decode_command(cluster_id, &header, &mut r)?;
        Ok(Self { header, command })
    }

    /// Encodes the frame. Fails only if a value does not fit its type (e.g. a 300-byte string).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.header.write(&mut out);
        encode_command(&self.command, &mut out)?;
        Ok(out)
    }

    /// Attribute values carried by a report, read response or write, as (attribute id, value).
    pub fn attribute_values(&self) -> Vec<(u16, &ZclValue)> {
        match &self.command {
            ZclCommand::ReportAttributes { records }
            | ZclCommand::WriteAttributes { records }
            | ZclCommand::WriteAttributesUndivided { records }
            | ZclCommand::WriteAttributesNoRsp { records } => {
                records.iter().map(|r| (r.attribute_id, &r.value)).collect()
            }
            ZclCommand::ReadAttributesRsp { records } => records
                .iter()
                .filter_map(|r| r.value.as_ref().map(|v| (r.attribute_id, v)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Global read-attributes request from the gateway (FC 0x10 when `disable_default_response`).
    pub fn read_attributes(tsn: u8, attribute_ids: Vec<u16>) -> Self {
        Self {
            header: ZclHeader::global(
                Direction::ClientToServer,
                true,
                tsn,
                global::READ_ATTRIBUTES,
            ),
            command: ZclCommand::ReadAttributes { attribute_ids },
        }
    }

    /// Global write-attributes request from the gateway.
    pub fn write_attributes(tsn: u8, records: Vec<AttributeRecord>) -> Self {
        Self {
            header: ZclHeader::global(
                Direction::ClientToServer,
                true,
                tsn,
                global::WRITE_ATTRIBUTES,
            ),
            command: ZclCommand::WriteAttributes { records },
        }
    }

    /// Global configure-reporting request from the gateway.
    pub fn configure_reporting(tsn: u8, records: Vec<ReportingConfig>) -> Self {
        Self {
            header: ZclHeader::global(
                Direction::ClientToServer,
                true,
                tsn,
                global::CONFIGURE_REPORTING,
            ),
            command: ZclCommand::ConfigureReporting { records },
        }
    }

    /// Default response to a received frame (same direction flip and tsn).
    pub fn default_response(to: &ZclHeader, status: u8) -> Self {
        let direction = match to.direction {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        };
        Self {
            header: ZclHeader {
                manufacturer_code: to.manufacturer_code,
                ..ZclHeader::global(direction, true, to.tsn, global::DEFAULT_RSP)
            },
            command: ZclCommand::DefaultRsp {
                command_id: to.command_id,
                status,
            },
        }
    }
}

fn decode_command(cluster_id: u16, h: &ZclHeader, r: &mut Reader<'_>) -> Result<ZclCommand> {
    use global::*;
    if h.manufacturer_code.is_some() && h.frame_type != FrameType::Global {
        // Manufacturer-specific cluster commands have manufacturer-defined payloads.
        return Ok(ZclCommand::Raw {
            payload: r.rest().to_vec(),
        });
    }
    Ok(match h.frame_type {
        FrameType::Global => match h.command_id {
            READ_ATTRIBUTES => {
                let mut ids = Vec::new();
                while !r.is_empty() {
                    ids.push(r.u16()?);
                }
                ZclCommand::ReadAttributes { attribute_ids: ids }
            }
            READ_ATTRIBUTES_RSP => {
                let mut records = Vec::new();
                while !r.is_empty() {
                    let attribute_id = r.u16()?;
                    let st = r.u8()?;
                    let value = if st == status::SUCCESS {
                        let dt = DataType(r.u8()?);
                        Some(ZclValue::read(dt, r, 0)?)
                    } else {
                        None
                    };
                    records.push(ReadAttributeStatus {
                        attribute_id,
                        status: st,
                        value,
                    });
                }
                ZclCommand::ReadAttributesRsp { records }
            }
            WRITE_ATTRIBUTES => ZclCommand::WriteAttributes {
                records: read_records(r)?,
            },
            WRITE_ATTRIBUTES_UNDIVIDED => ZclCommand::WriteAttributesUndivided {
                records: read_records(r)?,
            },
            WRITE_ATTRIBUTES_NO_RSP => ZclCommand::WriteAttributesNoRsp {
                records: read_records(r)?,
            },
            REPORT_ATTRIBUTES => ZclCommand::ReportAttributes {
                records: read_records(r)?,
            },
            WRITE_ATTRIBUTES_RSP => ZclCommand::WriteAttributesRsp {
                failures: read_status_list(r, false)?,
            },
            CONFIGURE_REPORTING_RSP => ZclCommand::ConfigureReportingRsp {
                failures: read_status_list(r, true)?,
            },
            CONFIGURE_REPORTING => {
                let mut records = Vec::new();
                while !r.is_empty() {
                    let direction = r.u8()?;
                    let attribute_id = r.u16()?;
                    if direction == 0 {
                        let data_type = DataType(r.u8()?);
                        let min_interval = r.u16()?;
                        let max_interval = r.u16()?;
                        let reportable_change = if data_type.is_analog() {
                            Some(ZclValue::read(data_type, r, 0)?)
                        } else {
                            None
                        };
                        records.push(ReportingConfig::Send {
                            attribute_id,
                            data_type,
                            min_interval,
                            max_interval,
                            reportable_change,
                        });
                    } else {
                        records.push(ReportingConfig::Receive {
                            attribute_id,
                            timeout: r.u16()?,
                        });
                    }
                }
                ZclCommand::ConfigureReporting { records }
            }
            DEFAULT_RSP => ZclCommand::DefaultRsp {
                command_id: r.u8()?,
                status: r.u8()?,
            },
            DISCOVER_ATTRIBUTES => ZclCommand::DiscoverAttributes {
                start_attribute: r.u16()?,
                max_count: r.u8()?,
            },
            DISCOVER_ATTRIBUTES_RSP => {
                let complete = r.u8()? != 0;
                let mut attributes = Vec::new();
                while !r.is_empty() {
                    attributes.push((r.u16()?, DataType(r.u8()?)));
                }
                ZclCommand::DiscoverAttributesRsp {
                    complete,
                    attributes,
                }
            }
            _ => ZclCommand::Raw {
                payload: r.rest().to_vec(),
            },
        },
        FrameType::ClusterSpecific => {
            match clusters::decode_cluster_command(cluster_id, h.direction, h.command_id, r)? {
                Some(cmd) => cmd,
                None => ZclCommand::Raw {
                    payload: r.rest().to_vec(),
                },
            }
        }
        FrameType::Reserved(_) => ZclCommand::Raw {
            payload: r.rest().to_vec(),
        },
    })
}

fn encode_command(cmd: &ZclCommand, out: &mut Vec<u8>) -> Result<()> {
    match cmd {
        ZclCommand::ReadAttributes { attribute_ids } => {
            for id in attribute_ids {
                out.put_u16(*id);
            }
        }
        ZclCommand::ReadAttributesRsp { records } => {
            for rec in records {
                out.put_u16(rec.attribute_id);
                match (&rec.value, rec.status) {
                    (Some(v), status::SUCCESS) => {
                        out.put_u8(status::SUCCESS);
                        out.put_u8(v.data_type().0);
                        v.write(out)?;
                    }
                    (None, st) if st != status::SUCCESS => out.put_u8(st),
                    _ => {
                        return Err(Error::ValueOutOfRange {
                            what: "read attributes response record",
                            detail: "a value must be present exactly when status is SUCCESS".into(),
                        })
                    }
                }
            }
        }
        ZclCommand::WriteAttributes { records }
        | ZclCommand::WriteAttributesUndivided { records }
        | ZclCommand::WriteAttributesNoRsp { records }
        | ZclCommand::ReportAttributes { records } => write_records(out, records)?,
        ZclCommand::WriteAttributesRsp { failures } => write_status_list(out, failures, false),
        ZclCommand::ConfigureReportingRsp { failures } => write_status_list(out, failures, true),
        ZclCommand::ConfigureReporting { records } => {
            for rec in records {
                match rec {
                    ReportingConfig::Send {
                        attribute_id,
                        data_type,
                        min_interval,
                        max_interval,
                        reportable_change,
                    } => {
                        out.put_u8(0);
                        out.put_u16(*attribute_id);
                        out.put_u8(data_type.0);
                        out.put_u16(*min_interval);
                        out.put_u16(*max_interval);
                        match (data_type.is_analog(), reportable_change) {
                            (true, Some(v)) if v.data_type() == *data_type => v.write(out)?,
                            (false, None) => {}
                            _ => {
                                return Err(Error::ValueOutOfRange {
                                    what: "reportable change",
                                    detail: format!(
                                        "must be present, of type {}, exactly for analog types",
                                        data_type.name()
                                    ),
                                })
                            }
                        }
                    }
                    ReportingConfig::Receive {
                        attribute_id,
                        timeout,
                    } => {
                        out.put_u8(1);
                        out.put_u16(*attribute_id);
                        out.put_u16(*timeout);
                    }
                }
            }
        }
        ZclCommand::DefaultRsp { command_id, status } => {
            out.put_u8(*command_id);
            out.put_u8(*status);
        }
        ZclCommand::DiscoverAttributes {
            start_attribute,
            max_count,
        } => {
            out.put_u16(*start_attribute);
            out.put_u8(*max_count);
        }
        ZclCommand::DiscoverAttributesRsp {
            complete,
            attributes,
        } => {
            out.put_u8(u8::from(*complete));
            for (id, dt) in attributes {
                out.put_u16(*id);
                out.put_u8(dt.0);
            }
        }
        ZclCommand::Off | ZclCommand::On | ZclCommand::Toggle => {}
        ZclCommand::MoveToLevel {
            level,
            transition_time,
            options,
            ..
        } => {
            out.put_u8(*level);
            out.put_u16(*transition_time);
            if let Some((mask, over)) = options {
                out.put_u8(*mask);
                out.put_u8(*over);
            }
        }
        ZclCommand::IasZoneStatusChangeNotification {
            zone_status,
            extended_status,
            zone_id,
            delay,
        } => {
            out.put_u16(*zone_status);
            out.put_u8(*extended_status);
            if let Some(id) = zone_id {
                out.put_u8(*id);
                if let Some(d) = delay {
                    out.put_u16(*d);
                }
            }
        }
        ZclCommand::IasZoneEnrollRequest {
            zone_type,
            manufacturer_code,
        } => {
            out.put_u16(*zone_type);
            out.put_u16(*manufacturer_code);
        }
        ZclCommand::IasZoneEnrollResponse {
            response_code,
            zone_id,
        } => {
            out.put_u8(*response_code);
            out.put_u8(*zone_id);
        }
        ZclCommand::GreenPowerNotification(n) => n.write(out, false)?,
        ZclCommand::GreenPowerCommissioningNotification(n) => n.write(out, true)?,
        ZclCommand::Raw { payload } => out.extend_from_slice(payload),
    }
    Ok(())
}
