//! Ruuvi data format 5 (RAWv2), manufacturer data under company id 0x0499. Spec:
//! ruuvi/ruuvi-sensor-protocols `dataformat_05.md` (docs.ruuvi.com). All fields big-endian:
//!
//! `05 | temperature i16 ×0.005 °C | humidity u16 ×0.0025 % | pressure u16 + 50 000 Pa |
//! acceleration X, Y, Z i16 mG | power u16 (bits 15-5 battery mV − 1600, bits 4-0 TX power
//! (dBm + 40) / 2) | movement counter u8 | measurement sequence u16 | MAC[6]`
//!
//! "Not available" is the largest value of an unsigned field, the smallest of a signed
//! one and all ones for the MAC; such a field gives no reading (it is absent, not zero).
//! Other Ruuvi formats (3, 6, E1) are not decoded here: `Ok(None)`.

use crate::error::{Error, Result};
use crate::report::{Format, Reading, Report};

/// Ruuvi Innovations' Bluetooth company id.
pub const COMPANY_ID: u16 = 0x0499;

/// Decodes Ruuvi manufacturer data (company id removed), or `Ok(None)` for a format
/// other than 5.
pub fn decode(d: &[u8]) -> Result<Option<Report>> {
    if d.first() != Some(&5) {
        return Ok(None);
    }
    if d.len() < 18 {
        return Err(Error::Truncated {
            what: "Ruuvi RAWv2 data",
            need: 18 - d.len(),
            have: d.len(),
        });
    }
    let be16 = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
    let mut r = Report::new(Format::RuuviRawV2);
    let temp = be16(1) as i16;
    if temp != i16::MIN {
        r.readings.push(Reading::number(
            "temperature",
            f64::from(temp) / 200.0,
            Some("°C"),
        ));
    }
    let hum = be16(3);
    if hum != u16::MAX {
        r.readings.push(Reading::number(
            "humidity",
            f64::from(hum) / 400.0,
            Some("%"),
        ));
    }
    let pres = be16(5);
    if pres != u16::MAX {
        r.readings.push(Reading::number(
            "pressure",
            (f64::from(pres) + 50_000.0) / 100.0,
            Some("hPa"),
        ));
    }
    for (i, name) in [
        (7, "acceleration_x"),
        (9, "acceleration_y"),
        (11, "acceleration_z"),
    ] {
        let a = be16(i) as i16;
        if a != i16::MIN {
            r.readings
                .push(Reading::number(name, f64::from(a), Some("mG")));
        }
    }
    let power = be16(13);
    let (mv, tx) = (power >> 5, power & 0x1F);
    if mv != 0x7FF {
        r.readings.push(Reading::number(
            "battery_voltage",
            (f64::from(mv) + 1600.0) / 1000.0,
            Some("V"),
        ));
    }
    if tx != 0x1F {
        r.readings.push(Reading::number(
            "tx_power",
            -40.0 + 2.0 * f64::from(tx),
            Some("dBm"),
        ));
    }
    if d[15] != 0xFF {
        r.readings
            .push(Reading::number("movement_counter", f64::from(d[15]), None));
    }
    let seq = be16(16);
    if seq != u16::MAX {
        r.meta.packet_id = Some(u32::from(seq));
    }
    if d.len() >= 24 {
        let mac = [d[18], d[19], d[20], d[21], d[22], d[23]];
        if mac != [0xFF; 6] {
            r.meta.device_address = Some(mac);
        }
    }
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::from_hex;

    const MAC: [u8; 6] = [0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F];

    fn dec(hex: &str) -> Report {
        decode(&from_hex(hex).unwrap()).unwrap().unwrap()
    }

    /// Test vectors of dataformat_05.md (ruuvi/ruuvi-sensor-protocols), "Case: valid data".
    #[test]
    fn official_valid_data() {
        let r = dec("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F");
        assert_eq!(r.number("temperature"), Some(24.3));
        assert_eq!(r.number("humidity"), Some(53.49));
        assert_eq!(r.number("pressure"), Some(1000.44)); // 100044 Pa
        assert_eq!(r.number("acceleration_x"), Some(4.0)); // 0.004 G
        assert_eq!(r.number("acceleration_y"), Some(-4.0));
        assert_eq!(r.number("acceleration_z"), Some(1036.0));
        assert_eq!(r.number("tx_power"), Some(4.0));
        assert_eq!(r.number("battery_voltage"), Some(2.977));
        assert_eq!(r.number("movement_counter"), Some(66.0));
        assert_eq!(r.meta.packet_id, Some(205));
        assert_eq!(r.meta.device_address, Some(MAC));
    }

    /// dataformat_05.md, "Case: maximum values".
    #[test]
    fn official_maximum_values() {
        let r = dec("057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F");
        assert_eq!(r.number("temperature"), Some(163.835));
        assert_eq!(r.number("humidity"), Some(163.835));
        assert_eq!(r.number("pressure"), Some(1155.34));
        for axis in ["x", "y", "z"] {
            assert_eq!(r.number(&format!("acceleration_{axis}")), Some(32767.0));
        }
        assert_eq!(r.number("tx_power"), Some(20.0));
        assert_eq!(r.number("battery_voltage"), Some(3.646));
        assert_eq!(r.number("movement_counter"), Some(254.0));
        assert_eq!(r.meta.packet_id, Some(65534));
        assert_eq!(r.meta.device_address, Some(MAC));
    }

    /// dataformat_05.md, "Case: minimum values".
    #[test]
    fn official_minimum_values() {
        let r = dec("058001000000008001800180010000000000CBB8334C884F");
        assert_eq!(r.number("temperature"), Some(-163.835));
        assert_eq!(r.number("humidity"), Some(0.0));
        assert_eq!(r.number("pressure"), Some(500.0));
        for axis in ["x", "y", "z"] {
            assert_eq!(r.number(&format!("acceleration_{axis}")), Some(-32767.0));
        }
        assert_eq!(r.number("tx_power"), Some(-40.0));
        assert_eq!(r.number("battery_voltage"), Some(1.6));
        assert_eq!(r.number("movement_counter"), Some(0.0));
        assert_eq!(r.meta.packet_id, Some(0));
    }

    /// dataformat_05.md, "Case: Invalid values": every field "not available" -> no readings.
    #[test]
    fn official_invalid_values() {
        let r = dec("058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF");
        assert!(r.readings.is_empty(), "{:?}", r.readings);
        assert_eq!(r.meta.packet_id, None);
        assert_eq!(r.meta.device_address, None);
    }

    #[test]
    fn short_or_other_formats() {
        assert!(matches!(
            decode(&[5, 0x12, 0xFC]),
            Err(Error::Truncated { .. })
        ));
        assert_eq!(decode(&[3, 0, 0]), Ok(None));
        assert_eq!(decode(&[]), Ok(None));
    }
}
