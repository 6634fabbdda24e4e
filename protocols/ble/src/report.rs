//! What the decoders return: normalized readings and events plus what the format says about
//! the packet (its id, whether it was encrypted, ...). The vocabulary mirrors the daemon's
//! `model::Reading` (name, bool/number/text value, unit) so a driver maps it one to one.

use serde::Serialize;

use crate::advert::{format_address, Address};

/// A measured or reported value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// One normalized reading, e.g. `temperature = 25.06 °C`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// `temperature`, or `temperature_1`, `temperature_2` when a packet carries several.
    pub name: String,
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
}

impl Reading {
    pub(crate) fn number(name: impl Into<String>, value: f64, unit: Option<&'static str>) -> Self {
        Reading {
            name: name.into(),
            value: Value::Number(value),
            unit,
        }
    }

    pub(crate) fn boolean(name: impl Into<String>, value: bool) -> Self {
        Reading {
            name: name.into(),
            value: Value::Bool(value),
            unit: None,
        }
    }

    pub(crate) fn text(name: impl Into<String>, value: impl Into<String>) -> Self {
        Reading {
            name: name.into(),
            value: Value::Text(value.into()),
            unit: None,
        }
    }
}

/// Something that happened (a button press, a dimmer turn, a command), as opposed to a
/// state: BTHome objects 0x3A, 0x3B and 0x3C.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `button`, `dimmer`, `command`; numbered like readings when repeated (`button_2`).
    pub name: String,
    /// `press`, `double_press`, ..., `rotate_left`, `on`, `step_up`, ...
    pub event_type: &'static str,
    /// Dimmer steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<u8>,
    /// A command's argument bytes (opcode- and manufacturer-specific).
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "hex_bytes")]
    pub args: Vec<u8>,
}

fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::advert::to_hex(b))
}

/// The advertisement format a report was decoded from. Serialized as [`Format::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// BTHome v2, service data 0xFCD2.
    BtHome,
    /// pvvx custom firmware's "custom" format, service data 0x181A (15 bytes).
    XiaomiPvvx,
    /// ATC1441 custom firmware's format, service data 0x181A (13 bytes).
    XiaomiAtc1441,
    /// Ruuvi data format 5 (RAWv2), manufacturer data 0x0499.
    RuuviRawV2,
    /// Apple iBeacon, manufacturer data 0x004C type 0x02.
    IBeacon,
    /// Eddystone-UID, service data 0xFEAA frame 0x00.
    EddystoneUid,
    /// Eddystone-URL, frame 0x10.
    EddystoneUrl,
    /// Eddystone-TLM (plain, version 0x00), frame 0x20.
    EddystoneTlm,
    /// Eddystone-eTLM (encrypted TLM, version 0x01): recognized, not decrypted.
    EddystoneEtlm,
    /// Eddystone-EID, frame 0x30.
    EddystoneEid,
}

impl Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::BtHome => "bthome",
            Format::XiaomiPvvx => "xiaomi_pvvx",
            Format::XiaomiAtc1441 => "xiaomi_atc1441",
            Format::RuuviRawV2 => "ruuvi_rawv2",
            Format::IBeacon => "ibeacon",
            Format::EddystoneUid => "eddystone_uid",
            Format::EddystoneUrl => "eddystone_url",
            Format::EddystoneTlm => "eddystone_tlm",
            Format::EddystoneEtlm => "eddystone_etlm",
            Format::EddystoneEid => "eddystone_eid",
        }
    }
}

/// What the format says about the packet, beside its readings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Meta {
    /// The packet id for de-duplication: BTHome object 0x00, the pvvx/ATC frame counter,
    /// Ruuvi's measurement sequence number. See [`crate::PacketIdFilter`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_id: Option<u32>,
    /// The payload was encrypted (and, for BTHome, verified and decrypted).
    pub encrypted: bool,
    /// The verified BTHome encryption counter. The caller persists it once it has accepted
    /// the report, and hands it back through [`crate::CounterStore`] (replay protection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<u32>,
    /// BTHome "trigger based device": it advertises on events only, at irregular
    /// intervals, so silence is no sign of it being gone.
    pub trigger_based: bool,
    /// The device's address as the payload gives it (BTHome's MAC-included flag, pvvx/ATC,
    /// Ruuvi), or the advertiser's address for BTHome. Key, counter and identity follow it.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_address"
    )]
    pub device_address: Option<Address>,
    /// Firmware version (BTHome 0xF1/0xF2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// BTHome device type id (0xF0), manufacturer-specific.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type_id: Option<u16>,
    /// A beacon's identity: iBeacon `uuid:major:minor`, Eddystone `namespace:instance`
    /// or the EID. Beacons often rotate their address; this is what stays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beacon_id: Option<String>,
    /// The BTHome object id parsing stopped at because it is not known (the spec: a
    /// receiver stops at the first unknown id, since it cannot know its length).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at_object: Option<u8>,
}

fn opt_address<S: serde::Serializer>(a: &Option<Address>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.serialize_str(&format_address(a)),
        None => s.serialize_none(),
    }
}

/// A decoded advertisement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub format: Format,
    pub readings: Vec<Reading>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    pub meta: Meta,
}

impl Report {
    pub(crate) fn new(format: Format) -> Report {
        Report {
            format,
            readings: Vec::new(),
            events: Vec::new(),
            meta: Meta::default(),
        }
    }

    /// The reading called `name`, if any.
    pub fn reading(&self, name: &str) -> Option<&Reading> {
        self.readings.iter().find(|r| r.name == name)
    }

    /// The numeric value of the reading called `name`, if it is a number.
    pub fn number(&self, name: &str) -> Option<f64> {
        match self.reading(name)?.value {
            Value::Number(v) => Some(v),
            _ => None,
        }
    }

    /// The boolean value of the reading called `name`, if it is one.
    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.reading(name)?.value {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The text value of the reading called `name`, if it is text.
    pub fn text(&self, name: &str) -> Option<&str> {
        match &self.reading(name)?.value {
            Value::Text(v) => Some(v),
            _ => None,
        }
    }
}

/// The result of [`crate::decode`]: a report, or "no format this crate knows" (which the
/// caller counts; it is not an error).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decoded {
    Known(Report),
    Unknown,
}

impl Decoded {
    /// The report, when the format was known.
    pub fn report(&self) -> Option<&Report> {
        match self {
            Decoded::Known(r) => Some(r),
            Decoded::Unknown => None,
        }
    }

    /// The report, when the format was known.
    pub fn into_report(self) -> Option<Report> {
        match self {
            Decoded::Known(r) => Some(r),
            Decoded::Unknown => None,
        }
    }
}
