//! The BTHome v2 object table: every object id of the spec (bthome.io `format.html`) with
//! its length, type, factor and unit, and the reading name it gets.
//!
//! Names are bthome-ble's keys (its `const.py::MEAS_TYPES`, the names Home Assistant shows)
//! so that a gateway and Home Assistant agree, except where bthome-ble gives a binary
//! sensor the same key as a sensor (`battery`, `power`, `moisture`, `gas`): in one flat
//! list of readings those must differ, so the binary ones are `battery_low`, `power_on`,
//! `moisture_detected` and `gas_detected`. Units are the spec's (`hPa` where bthome-ble
//! says `mbar`, the same unit).

/// How an object's bytes turn into a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// Little-endian integer of `len` bytes; value = raw × `mul` / 10^`decimals`.
    Number {
        len: u8,
        signed: bool,
        mul: u32,
        decimals: u8,
        unit: Option<&'static str>,
    },
    /// One byte, 0 = off, anything else = on.
    Binary,
    /// 0x00 packet id (uint8): goes to `Meta::packet_id`, not to the readings.
    PacketId,
    /// 0x50: uint32 seconds since 1970-01-01 UTC.
    Timestamp,
    /// 0x53: length byte, then UTF-8 text.
    Text,
    /// 0x54: length byte, then bytes (reported as lower-case hex).
    Raw,
    /// 0x3A: one byte, the button event.
    Button,
    /// 0x3C: event byte, steps byte.
    Dimmer,
    /// 0x3B: length byte (low 5 bits = argument bytes), opcode, arguments.
    Command,
    /// 0xF0: uint16 device type id, to `Meta::device_type_id`.
    DeviceTypeId,
    /// 0xF1 (4 bytes) / 0xF2 (3 bytes): firmware version, least significant part first.
    Firmware { len: u8 },
}

/// One BTHome object id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectSpec {
    pub id: u8,
    /// The reading or event name, before any `_1`, `_2` postfix.
    pub name: &'static str,
    pub kind: ObjectKind,
}

impl ObjectSpec {
    /// The fixed number of value bytes after the id, or `None` for the length-prefixed
    /// objects (text, raw, command).
    pub fn fixed_len(&self) -> Option<usize> {
        Some(match self.kind {
            ObjectKind::Number { len, .. } => usize::from(len),
            ObjectKind::Binary | ObjectKind::PacketId | ObjectKind::Button => 1,
            ObjectKind::Dimmer | ObjectKind::DeviceTypeId => 2,
            ObjectKind::Timestamp => 4,
            ObjectKind::Firmware { len } => usize::from(len),
            ObjectKind::Text | ObjectKind::Raw | ObjectKind::Command => return None,
        })
    }
}

const fn num(
    id: u8,
    name: &'static str,
    len: u8,
    signed: bool,
    decimals: u8,
    unit: Option<&'static str>,
) -> ObjectSpec {
    ObjectSpec {
        id,
        name,
        kind: ObjectKind::Number {
            len,
            signed,
            mul: 1,
            decimals,
            unit,
        },
    }
}

const fn bin(id: u8, name: &'static str) -> ObjectSpec {
    ObjectSpec {
        id,
        name,
        kind: ObjectKind::Binary,
    }
}

const fn other(id: u8, name: &'static str, kind: ObjectKind) -> ObjectSpec {
    ObjectSpec { id, name, kind }
}

const U: bool = false;
const S: bool = true;
const C: Option<&str> = Some("°C");
const PCT: Option<&str> = Some("%");
const NONE: Option<&str> = None;

/// Every object id of the spec, in id order.
pub const OBJECTS: &[ObjectSpec] = &[
    other(0x00, "packet_id", ObjectKind::PacketId),
    num(0x01, "battery", 1, U, 0, PCT),
    num(0x02, "temperature", 2, S, 2, C),
    num(0x03, "humidity", 2, U, 2, PCT),
    num(0x04, "pressure", 3, U, 2, Some("hPa")),
    num(0x05, "illuminance", 3, U, 2, Some("lx")),
    num(0x06, "mass", 2, U, 2, Some("kg")),
    num(0x07, "mass", 2, U, 2, Some("lb")),
    num(0x08, "dew_point", 2, S, 2, C),
    num(0x09, "count", 1, U, 0, NONE),
    num(0x0A, "energy", 3, U, 3, Some("kWh")),
    num(0x0B, "power", 3, U, 2, Some("W")),
    num(0x0C, "voltage", 2, U, 3, Some("V")),
    num(0x0D, "pm25", 2, U, 0, Some("µg/m³")),
    num(0x0E, "pm10", 2, U, 0, Some("µg/m³")),
    bin(0x0F, "generic"),
    bin(0x10, "power_on"),
    bin(0x11, "opening"),
    num(0x12, "carbon_dioxide", 2, U, 0, Some("ppm")),
    num(0x13, "volatile_organic_compounds", 2, U, 0, Some("µg/m³")),
    num(0x14, "moisture", 2, U, 2, PCT),
    bin(0x15, "battery_low"),
    bin(0x16, "battery_charging"),
    bin(0x17, "carbon_monoxide"),
    bin(0x18, "cold"),
    bin(0x19, "connectivity"),
    bin(0x1A, "door"),
    bin(0x1B, "garage_door"),
    bin(0x1C, "gas_detected"),
    bin(0x1D, "heat"),
    bin(0x1E, "light"),
    bin(0x1F, "lock"),
    bin(0x20, "moisture_detected"),
    bin(0x21, "motion"),
    bin(0x22, "moving"),
    bin(0x23, "occupancy"),
    bin(0x24, "plug"),
    bin(0x25, "presence"),
    bin(0x26, "problem"),
    bin(0x27, "running"),
    bin(0x28, "safety"),
    bin(0x29, "smoke"),
    bin(0x2A, "sound"),
    bin(0x2B, "tamper"),
    bin(0x2C, "vibration"),
    bin(0x2D, "window"),
    num(0x2E, "humidity", 1, U, 0, PCT),
    num(0x2F, "moisture", 1, U, 0, PCT),
    other(0x3A, "button", ObjectKind::Button),
    other(0x3B, "command", ObjectKind::Command),
    other(0x3C, "dimmer", ObjectKind::Dimmer),
    num(0x3D, "count", 2, U, 0, NONE),
    num(0x3E, "count", 4, U, 0, NONE),
    num(0x3F, "rotation", 2, S, 1, Some("°")),
    num(0x40, "distance", 2, U, 0, Some("mm")),
    num(0x41, "distance", 2, U, 1, Some("m")),
    num(0x42, "duration", 3, U, 3, Some("s")),
    num(0x43, "current", 2, U, 3, Some("A")),
    num(0x44, "speed", 2, U, 2, Some("m/s")),
    num(0x45, "temperature", 2, S, 1, C),
    num(0x46, "uv_index", 1, U, 1, NONE),
    num(0x47, "volume", 2, U, 1, Some("L")),
    num(0x48, "volume", 2, U, 0, Some("mL")),
    num(0x49, "volume_flow_rate", 2, U, 3, Some("m³/h")),
    num(0x4A, "voltage", 2, U, 1, Some("V")),
    num(0x4B, "gas", 3, U, 3, Some("m³")),
    num(0x4C, "gas", 4, U, 3, Some("m³")),
    num(0x4D, "energy", 4, U, 3, Some("kWh")),
    num(0x4E, "volume", 4, U, 3, Some("L")),
    num(0x4F, "water", 4, U, 3, Some("L")),
    other(0x50, "timestamp", ObjectKind::Timestamp),
    num(0x51, "acceleration", 2, U, 3, Some("m/s²")),
    num(0x52, "gyroscope", 2, U, 3, Some("°/s")),
    other(0x53, "text", ObjectKind::Text),
    other(0x54, "raw", ObjectKind::Raw),
    num(0x55, "volume_storage", 4, U, 3, Some("L")),
    num(0x56, "conductivity", 2, U, 0, Some("µS/cm")),
    num(0x57, "temperature", 1, S, 0, C),
    ObjectSpec {
        id: 0x58,
        name: "temperature",
        kind: ObjectKind::Number {
            len: 1,
            signed: S,
            mul: 35,
            decimals: 2,
            unit: C,
        },
    },
    num(0x59, "count", 1, S, 0, NONE),
    num(0x5A, "count", 2, S, 0, NONE),
    num(0x5B, "count", 4, S, 0, NONE),
    num(0x5C, "power", 4, S, 2, Some("W")),
    num(0x5D, "current", 2, S, 3, Some("A")),
    num(0x5E, "direction", 2, U, 2, Some("°")),
    num(0x5F, "precipitation", 2, U, 1, Some("mm")),
    num(0x60, "channel", 1, U, 0, NONE),
    num(0x61, "rotational_speed", 2, U, 0, Some("rpm")),
    num(0x62, "speed", 4, S, 6, Some("m/s")),
    num(0x63, "acceleration", 4, S, 6, Some("m/s²")),
    num(0x64, "light_level", 1, U, 0, NONE),
    num(0x65, "settings_revision", 1, U, 0, NONE),
    other(0xF0, "device_type_id", ObjectKind::DeviceTypeId),
    other(0xF1, "firmware", ObjectKind::Firmware { len: 4 }),
    other(0xF2, "firmware", ObjectKind::Firmware { len: 3 }),
];

/// id -> index into [`OBJECTS`] (255 = unknown), built at compile time.
const INDEX: [u8; 256] = {
    let mut index = [255u8; 256];
    let mut i = 0;
    while i < OBJECTS.len() {
        index[OBJECTS[i].id as usize] = i as u8;
        i += 1;
    }
    index
};

/// The spec of object `id`, or `None` when the id is not known.
pub fn object_spec(id: u8) -> Option<&'static ObjectSpec> {
    OBJECTS.get(usize::from(INDEX[usize::from(id)]))
}

/// Button event names (0x3A), from the spec; 0x81 `hold_release` is bthome-ble's.
pub(crate) fn button_event(v: u8) -> Option<&'static str> {
    Some(match v {
        0x01 => "press",
        0x02 => "double_press",
        0x03 => "triple_press",
        0x04 => "long_press",
        0x05 => "long_double_press",
        0x06 => "long_triple_press",
        0x80 => "hold_press",
        0x81 => "hold_release",
        _ => return None,
    })
}

/// Dimmer event names (0x3C).
pub(crate) fn dimmer_event(v: u8) -> Option<&'static str> {
    match v {
        0x01 => Some("rotate_left"),
        0x02 => Some("rotate_right"),
        _ => None,
    }
}

/// Command opcodes (0x3B).
pub(crate) fn command_event(v: u8) -> Option<&'static str> {
    Some(match v {
        0x00 => "off",
        0x01 => "on",
        0x02 => "toggle",
        0x03 => "step_up",
        0x04 => "step_down",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_indexed() {
        for w in OBJECTS.windows(2) {
            assert!(
                w[0].id < w[1].id,
                "{:#04x} before {:#04x}",
                w[0].id,
                w[1].id
            );
        }
        for spec in OBJECTS {
            assert_eq!(object_spec(spec.id), Some(spec));
        }
        assert_eq!(object_spec(0x30), None);
        assert_eq!(object_spec(0xFF), None);
        assert_eq!(OBJECTS.len(), 95);
    }
}
