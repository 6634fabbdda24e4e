//! Encoders, the inverse of the decoders: for the device-side emulator, the round-trip
//! properties, the peer test and the benchmark. They build what a device would send and
//! check nothing beyond what the layout needs.

use crate::advert::{Address, Advertisement};
use crate::bthome::{self, object_spec, BindKey, ObjectKind};

/// One BTHome object: the id and its value bytes. For text and raw, `value` is the
/// content (the encoder adds the length byte); for a command, the opcode then the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtHomeObject {
    pub id: u8,
    pub value: Vec<u8>,
}

/// The object list as it goes on air (length bytes added where the spec has them).
pub fn bthome_objects(objects: &[BtHomeObject]) -> Vec<u8> {
    let mut out = Vec::new();
    for o in objects {
        out.push(o.id);
        match object_spec(o.id).map(|s| s.kind) {
            Some(ObjectKind::Text | ObjectKind::Raw) => out.push(o.value.len() as u8),
            Some(ObjectKind::Command) => out.push((o.value.len().saturating_sub(1) as u8) & 0x1F),
            _ => {}
        }
        out.extend_from_slice(&o.value);
    }
    out
}

/// How a BTHome device sends its objects.
#[derive(Debug, Clone, Default)]
pub struct BtHomeOptions {
    pub trigger_based: bool,
    /// Put the device MAC in the payload (device-info bit 1).
    pub include_mac: bool,
    /// Encrypt with this key and counter.
    pub encrypt: Option<(BindKey, u32)>,
}

/// BTHome service data (without the UUID) for a device with MAC `device` sending `payload`
/// (see [`bthome_objects`]).
pub fn bthome_service_data(device: &Address, payload: &[u8], opts: &BtHomeOptions) -> Vec<u8> {
    let mut info = bthome::VERSION_2;
    if opts.trigger_based {
        info |= bthome::FLAG_TRIGGER_BASED;
    }
    if opts.include_mac {
        info |= bthome::FLAG_MAC_INCLUDED;
    }
    if opts.encrypt.is_some() {
        info |= bthome::FLAG_ENCRYPTED;
    }
    let mut out = vec![info];
    if opts.include_mac {
        out.extend(device.iter().rev());
    }
    match &opts.encrypt {
        Some((key, counter)) => out.extend(bthome::encrypt(key, device, info, *counter, payload)),
        None => out.extend_from_slice(payload),
    }
    out
}

/// pvvx "custom" 0x181A service data (15 bytes).
pub fn pvvx(
    mac: &Address,
    temperature_centi: i16,
    humidity_centi: u16,
    battery_mv: u16,
    battery_pct: u8,
    counter: u8,
    flags: u8,
) -> Vec<u8> {
    let mut out: Vec<u8> = mac.iter().rev().copied().collect();
    out.extend(temperature_centi.to_le_bytes());
    out.extend(humidity_centi.to_le_bytes());
    out.extend(battery_mv.to_le_bytes());
    out.extend([battery_pct, counter, flags]);
    out
}

/// ATC1441 0x181A service data (13 bytes).
pub fn atc1441(
    mac: &Address,
    temperature_deci: i16,
    humidity_pct: u8,
    battery_pct: u8,
    battery_mv: u16,
    counter: u8,
) -> Vec<u8> {
    let mut out = mac.to_vec();
    out.extend(temperature_deci.to_be_bytes());
    out.extend([humidity_pct, battery_pct]);
    out.extend(battery_mv.to_be_bytes());
    out.push(counter);
    out
}

/// The raw fields of a Ruuvi RAWv2 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuuviRaw {
    pub temperature: i16,
    pub humidity: u16,
    pub pressure: u16,
    pub acceleration: [i16; 3],
    /// Battery mV above 1600 (11 bits).
    pub battery: u16,
    /// TX power code (5 bits): dBm = -40 + 2 × code.
    pub tx_power: u8,
    pub movement: u8,
    pub sequence: u16,
    pub mac: Address,
}

/// Ruuvi RAWv2 manufacturer data (24 bytes, company id not included).
pub fn ruuvi_rawv2(r: &RuuviRaw) -> Vec<u8> {
    let mut out = vec![5];
    out.extend(r.temperature.to_be_bytes());
    out.extend(r.humidity.to_be_bytes());
    out.extend(r.pressure.to_be_bytes());
    for a in r.acceleration {
        out.extend(a.to_be_bytes());
    }
    out.extend((((r.battery & 0x7FF) << 5) | u16::from(r.tx_power & 0x1F)).to_be_bytes());
    out.push(r.movement);
    out.extend(r.sequence.to_be_bytes());
    out.extend(r.mac);
    out
}

/// iBeacon manufacturer data (company id 0x004C not included).
pub fn ibeacon(uuid: &[u8; 16], major: u16, minor: u16, measured_power: i8) -> Vec<u8> {
    let mut out = vec![0x02, 0x15];
    out.extend(uuid);
    out.extend(major.to_be_bytes());
    out.extend(minor.to_be_bytes());
    out.push(measured_power as u8);
    out
}

/// Eddystone-UID service data.
pub fn eddystone_uid(tx_power: i8, namespace: &[u8; 10], instance: &[u8; 6]) -> Vec<u8> {
    let mut out = vec![0x00, tx_power as u8];
    out.extend(namespace);
    out.extend(instance);
    out.extend([0, 0]);
    out
}

/// Eddystone-TLM (version 0) service data.
pub fn eddystone_tlm(
    battery_mv: u16,
    temperature_8_8: i16,
    adv_count: u32,
    uptime_tenths: u32,
) -> Vec<u8> {
    let mut out = vec![0x20, 0x00];
    out.extend(battery_mv.to_be_bytes());
    out.extend(temperature_8_8.to_be_bytes());
    out.extend(adv_count.to_be_bytes());
    out.extend(uptime_tenths.to_be_bytes());
    out
}

/// The advertisement as AD structures (flags, complete local name, 16-bit service data,
/// manufacturer data), what a device puts on air and [`Advertisement::from_ad_bytes`]
/// reads back. Elements longer than an AD structure can hold (254 bytes) are left out.
pub fn ad_bytes(adv: &Advertisement) -> Vec<u8> {
    let mut out = vec![0x02, 0x01, 0x06];
    let mut element = |ad_type: u8, head: &[u8], data: &[u8]| {
        let len = 1 + head.len() + data.len();
        if len <= 255 {
            out.push(len as u8);
            out.push(ad_type);
            out.extend_from_slice(head);
            out.extend_from_slice(data);
        }
    };
    if let Some(name) = &adv.local_name {
        element(0x09, &[], name.as_bytes());
    }
    for (uuid, data) in &adv.service_data {
        if let Some(u) = uuid.as_u16() {
            element(0x16, &u.to_le_bytes(), data);
        } else {
            let mut le = uuid.0.to_be_bytes();
            le.reverse();
            element(0x21, &le, data);
        }
    }
    for (company, data) in &adv.manufacturer_data {
        element(0xFF, &company.to_le_bytes(), data);
    }
    out
}
