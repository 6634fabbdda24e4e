//! BTHome v2 (service data UUID 0xFCD2): the device-info byte, the objects, encryption.
//! Spec: bthome.io `format.html` and `encryption.html`; behaviour checked against
//! bthome-ble (PyPI), the parser Home Assistant uses (see the peer test).
//!
//! Service data layout (after the UUID):
//! `device_info | [MAC, 6 bytes reversed, if bit 1] | objects` or, when encrypted (bit 0),
//! `device_info | [MAC] | ciphertext | counter (4, LE) | MIC (4)`.
//!
//! Device info: bit 0 encryption, bit 1 MAC included (reserved in the spec, used by
//! bthome-ble and several devices), bit 2 trigger-based device, bits 5-7 version (2).
//! Objects are `id | value`, fixed length per id, except text (0x53) and raw (0x54) with a
//! length byte, and command (0x3B) whose length byte's low 5 bits count the argument bytes
//! after the opcode. Parsing stops at the first unknown id (the spec's rule: its length is
//! unknowable); a known object cut short is [`Error::Truncated`].
//!
//! Repeated measurements are numbered as bthome-ble numbers them: when a packet has two
//! or more readings of one name, they become `name_1`, `name_2`, ... in packet order
//! (all of them, the first too); a single one keeps the bare name.

mod objects;
mod security;

pub use objects::{object_spec, ObjectKind, ObjectSpec, OBJECTS};
pub use security::{decrypt, encrypt, nonce, BindKey, Context, CounterStore, Counters, Keys};

use crate::advert::{to_hex, Address, Advertisement};
use crate::error::{take, Error, Result};
use crate::report::{Event, Format, Reading, Report, Value};

/// BTHome's 16-bit service UUID.
pub const UUID16: u16 = 0xFCD2;

/// Device-info bits.
pub const FLAG_ENCRYPTED: u8 = 0x01;
pub const FLAG_MAC_INCLUDED: u8 = 0x02;
pub const FLAG_TRIGGER_BASED: u8 = 0x04;
/// Version 2 in bits 5-7.
pub const VERSION_2: u8 = 0x40;

const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// Decodes BTHome service data `data` (UUID removed) received in `adv`.
pub fn decode(adv: &Advertisement, data: &[u8], ctx: &Context<'_>) -> Result<Report> {
    let mut rest = data;
    let info = take(&mut rest, 1, "BTHome device info")?[0];
    let version = info >> 5;
    if version != 2 {
        return Err(Error::UnsupportedVersion(version));
    }
    let device_address: Address = if info & FLAG_MAC_INCLUDED != 0 {
        let m = take(&mut rest, 6, "BTHome MAC")?;
        [m[5], m[4], m[3], m[2], m[1], m[0]]
    } else {
        adv.address
    };
    let mut report = Report::new(Format::BtHome);
    report.meta.trigger_based = info & FLAG_TRIGGER_BASED != 0;
    report.meta.device_address = Some(device_address);

    if info & FLAG_ENCRYPTED != 0 {
        let key = ctx
            .keys
            .get(&device_address)
            .or_else(|| ctx.keys.get(&adv.address))
            .ok_or(Error::MissingKey(device_address))?;
        if rest.len() < 8 {
            return Err(Error::Truncated {
                what: "BTHome counter and MIC",
                need: 8 - rest.len(),
                have: rest.len(),
            });
        }
        let (ciphertext, trailer) = rest.split_at(rest.len() - 8);
        let counter = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let mic = [trailer[4], trailer[5], trailer[6], trailer[7]];
        let plaintext = decrypt(key, &device_address, info, counter, ciphertext, &mic)?;
        // Only an authentic packet's counter says anything: check it after the MIC.
        security::check_counter(ctx.counters, &device_address, counter)?;
        report.meta.encrypted = true;
        report.meta.counter = Some(counter);
        parse_objects(&plaintext, &mut report)?;
    } else {
        security::check_plaintext_allowed(ctx.keys, &[&device_address, &adv.address])?;
        parse_objects(rest, &mut report)?;
    }
    Ok(report)
}

/// Parses the (plaintext) object list into `report`.
pub fn parse_objects(payload: &[u8], report: &mut Report) -> Result<()> {
    // Pass 1: split into objects (borrowing the payload).
    let mut objects: Vec<(&'static ObjectSpec, &[u8])> = Vec::with_capacity(8);
    let mut rest = payload;
    while let Some(&id) = rest.first() {
        let Some(spec) = object_spec(id) else {
            report.meta.stopped_at_object = Some(id);
            break;
        };
        rest = &rest[1..];
        let len = match spec.fixed_len() {
            Some(n) => n,
            None => {
                let l = take(&mut rest, 1, "BTHome object length")?[0];
                if spec.kind == ObjectKind::Command {
                    1 + usize::from(l & 0x1F)
                } else {
                    usize::from(l)
                }
            }
        };
        let value = take(&mut rest, len, "BTHome object value")?;
        // bthome-ble skips empty text/raw objects entirely (they take no name slot).
        if len > 0 {
            objects.push((spec, value));
        }
    }

    // Pass 2: how many of each name, for the `_1`, `_2` postfixes.
    let mut counts: Vec<(&'static str, u16, u16)> = Vec::new(); // name, total, seen so far
    for (spec, _) in &objects {
        if !is_named(spec) {
            continue;
        }
        match counts.iter_mut().find(|c| c.0 == spec.name) {
            Some(c) => c.1 += 1,
            None => counts.push((spec.name, 1, 0)),
        }
    }

    // Pass 3: values.
    for (spec, value) in objects {
        let name = if is_named(spec) {
            match counts.iter_mut().find(|c| c.0 == spec.name) {
                Some(c) if c.1 > 1 => {
                    c.2 += 1;
                    format!("{}_{}", spec.name, c.2)
                }
                _ => spec.name.to_string(),
            }
        } else {
            String::new()
        };
        match spec.kind {
            ObjectKind::Number {
                signed,
                mul,
                decimals,
                unit,
                ..
            } => {
                let raw = le_int(value, signed);
                let v = raw as f64 * f64::from(mul) / POW10[usize::from(decimals)];
                report.readings.push(Reading::number(name, v, unit));
            }
            ObjectKind::Binary => report.readings.push(Reading::boolean(name, value[0] != 0)),
            ObjectKind::PacketId => {
                report.meta.packet_id.get_or_insert(u32::from(value[0]));
            }
            ObjectKind::Timestamp => {
                report
                    .readings
                    .push(Reading::number(name, le_int(value, false) as f64, None));
            }
            ObjectKind::Text => {
                // Not UTF-8: no reading (as bthome-ble), the name slot is still used.
                if let Ok(s) = std::str::from_utf8(value) {
                    report.readings.push(Reading::text(name, s));
                }
            }
            ObjectKind::Raw => report.readings.push(Reading {
                name,
                value: Value::Text(to_hex(value)),
                unit: None,
            }),
            ObjectKind::Button => {
                if let Some(event_type) = objects::button_event(value[0]) {
                    report.events.push(Event {
                        name,
                        event_type,
                        steps: None,
                        args: Vec::new(),
                    });
                }
            }
            ObjectKind::Dimmer => {
                if let Some(event_type) = objects::dimmer_event(value[0]) {
                    report.events.push(Event {
                        name,
                        event_type,
                        steps: Some(value[1]),
                        args: Vec::new(),
                    });
                }
            }
            ObjectKind::Command => {
                if let Some(event_type) = objects::command_event(value[0]) {
                    report.events.push(Event {
                        name,
                        event_type,
                        steps: None,
                        args: value[1..].to_vec(),
                    });
                }
            }
            ObjectKind::DeviceTypeId => {
                report.meta.device_type_id = Some(u16::from_le_bytes([value[0], value[1]]));
            }
            ObjectKind::Firmware { .. } => {
                let parts: Vec<String> = value.iter().rev().map(u8::to_string).collect();
                report.meta.firmware = Some(parts.join("."));
            }
        }
    }
    Ok(())
}

/// Objects that become a named reading or event (the others go to `Meta`).
fn is_named(spec: &ObjectSpec) -> bool {
    !matches!(
        spec.kind,
        ObjectKind::PacketId | ObjectKind::DeviceTypeId | ObjectKind::Firmware { .. }
    )
}

/// Little-endian integer of 1 to 4 bytes.
fn le_int(bytes: &[u8], signed: bool) -> i64 {
    let mut v: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    let bits = 8 * bytes.len() as u32;
    if signed && bits > 0 && bits < 64 && v >> (bits - 1) & 1 == 1 {
        (v | (u64::MAX << bits)) as i64
    } else {
        v as i64
    }
}

#[cfg(test)]
mod tests;
