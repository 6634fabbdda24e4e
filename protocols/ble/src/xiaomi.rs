//! Xiaomi thermometers (LYWSD03MMC and kin) running custom firmware, service data 0x181A
//! (Environmental Sensing). The length tells the layout:
//!
//! - 15 bytes, pvvx "custom" format (pvvx/ATC_MiThermometer README, "Custom format (all
//!   data little-endian)"): `MAC[6] (LSB first) | temperature i16 ×0.01 °C | humidity
//!   u16 ×0.01 % | battery u16 mV | battery u8 % | counter u8 | flags u8` (flags: bit 0
//!   reed switch input, bit 1 GPIO_TRG output, bit 3 temperature trigger, bit 4 humidity
//!   trigger);
//! - 13 bytes, ATC1441 format (atc1441/ATC_MiThermometer README; big-endian):
//!   `MAC[6] (MSB first) | temperature i16 ×0.1 °C | humidity u8 % | battery u8 % |
//!   battery u16 mV | counter u8`.
//!
//! Other lengths on 0x181A are other devices (b-parasite) or the encrypted variants of
//! these formats, which this crate does not decode: `Ok(None)`, not an error.
//! Devices running pvvx's BTHome mode are decoded by [`crate::bthome`].

use crate::report::{Format, Reading, Report};

/// Environmental Sensing service UUID.
pub const UUID16: u16 = 0x181A;

/// Decodes 0x181A service data, or `Ok(None)` when its length is neither layout.
pub fn decode(data: &[u8]) -> crate::Result<Option<Report>> {
    Ok(match data.len() {
        15 => Some(pvvx(data)),
        13 => Some(atc1441(data)),
        _ => None,
    })
}

fn pvvx(d: &[u8]) -> Report {
    let mut r = Report::new(Format::XiaomiPvvx);
    r.meta.device_address = Some([d[5], d[4], d[3], d[2], d[1], d[0]]);
    let temp = i16::from_le_bytes([d[6], d[7]]);
    let hum = u16::from_le_bytes([d[8], d[9]]);
    let mv = u16::from_le_bytes([d[10], d[11]]);
    let flags = d[14];
    r.readings = vec![
        Reading::number("temperature", f64::from(temp) / 100.0, Some("°C")),
        Reading::number("humidity", f64::from(hum) / 100.0, Some("%")),
        Reading::number("battery_voltage", f64::from(mv) / 1000.0, Some("V")),
        Reading::number("battery", f64::from(d[12]), Some("%")),
        Reading::boolean("reed_switch", flags & 0x01 != 0),
        Reading::boolean("trigger_output", flags & 0x02 != 0),
        Reading::boolean("temperature_trigger", flags & 0x08 != 0),
        Reading::boolean("humidity_trigger", flags & 0x10 != 0),
    ];
    r.meta.packet_id = Some(u32::from(d[13]));
    r
}

fn atc1441(d: &[u8]) -> Report {
    let mut r = Report::new(Format::XiaomiAtc1441);
    r.meta.device_address = Some([d[0], d[1], d[2], d[3], d[4], d[5]]);
    let temp = i16::from_be_bytes([d[6], d[7]]);
    let mv = u16::from_be_bytes([d[10], d[11]]);
    r.readings = vec![
        Reading::number("temperature", f64::from(temp) / 10.0, Some("°C")),
        Reading::number("humidity", f64::from(d[8]), Some("%")),
        Reading::number("battery", f64::from(d[9]), Some("%")),
        Reading::number("battery_voltage", f64::from(mv) / 1000.0, Some("V")),
    ];
    r.meta.packet_id = Some(u32::from(d[12]));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::from_hex;

    /// pvvx custom format, laid out field by field from the pvvx README's struct:
    /// MAC A4:C1:38:11:22:33 LSB first, 21.34 °C, 45.67 %, 2950 mV, 87 %, counter 12,
    /// flags 0x03 (reed switch on, trigger output on).
    #[test]
    fn pvvx_custom() {
        let d = from_hex(concat!(
            "332211", "38c1a4", "5608", "d711", "860b", "57", "0c", "03"
        ))
        .unwrap();
        let r = decode(&d).unwrap().unwrap();
        assert_eq!(r.format, Format::XiaomiPvvx);
        assert_eq!(
            r.meta.device_address,
            Some([0xA4, 0xC1, 0x38, 0x11, 0x22, 0x33])
        );
        assert_eq!(r.number("temperature"), Some(21.34));
        assert_eq!(r.number("humidity"), Some(45.67));
        assert_eq!(r.number("battery_voltage"), Some(2.95));
        assert_eq!(r.number("battery"), Some(87.0));
        assert_eq!(r.boolean("reed_switch"), Some(true));
        assert_eq!(r.boolean("trigger_output"), Some(true));
        assert_eq!(r.boolean("temperature_trigger"), Some(false));
        assert_eq!(r.meta.packet_id, Some(12));
    }

    /// ATC1441 format, from the atc1441 README's byte list: MAC in order, temperature
    /// int16 (big-endian, 0.1 °C), humidity %, battery %, battery mV, frame counter.
    #[test]
    fn atc1441() {
        let d = from_hex("a4c138112233ff9c3c5a0bb807").unwrap();
        let r = decode(&d).unwrap().unwrap();
        assert_eq!(r.format, Format::XiaomiAtc1441);
        assert_eq!(
            r.meta.device_address,
            Some([0xA4, 0xC1, 0x38, 0x11, 0x22, 0x33])
        );
        assert_eq!(r.number("temperature"), Some(-10.0));
        assert_eq!(r.number("humidity"), Some(60.0));
        assert_eq!(r.number("battery"), Some(90.0));
        assert_eq!(r.number("battery_voltage"), Some(3.0));
        assert_eq!(r.meta.packet_id, Some(7));
    }

    #[test]
    fn other_lengths_are_not_this_format() {
        assert_eq!(decode(&[0; 16]), Ok(None));
        assert_eq!(decode(&[]), Ok(None));
    }
}
