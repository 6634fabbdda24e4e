//! Beacons: Apple iBeacon and Google Eddystone. They carry identities more than
//! measurements; the identity goes to `Meta::beacon_id` (beacons often rotate their
//! address, the identity stays), the few values to readings.
//!
//! - iBeacon: manufacturer data 0x004C, `02 15 | UUID(16) | major(2, BE) | minor(2, BE) |
//!   measured power at 1 m (i8)`. Other Apple data (AirDrop, Find My, ...) is `Ok(None)`.
//! - Eddystone (google/eddystone `protocol-specification.md`): service data 0xFEAA, frame
//!   type in byte 0, fields big-endian. UID `00 | tx power at 0 m | namespace(10) |
//!   instance(6) | RFU(2, optional)`; URL `10 | tx | scheme | encoded URL`; TLM
//!   `20 | version 00 | battery mV (0 = n/a) | temperature 8.8 fixed (0x8000 = n/a) |
//!   advertisement count(4) | uptime in 0.1 s(4)`; eTLM (version 01) is encrypted and only
//!   recognized; EID `30 | tx | EID(8)`.

use crate::advert::to_hex;
use crate::error::{Error, Result};
use crate::report::{Format, Reading, Report};

/// Apple's Bluetooth company id.
pub const APPLE_COMPANY_ID: u16 = 0x004C;
/// Eddystone's 16-bit service UUID.
pub const EDDYSTONE_UUID16: u16 = 0xFEAA;

/// Decodes Apple manufacturer data (company id removed) as an iBeacon, or `Ok(None)`
/// when it is another kind of Apple advertisement.
pub fn decode_ibeacon(d: &[u8]) -> Result<Option<Report>> {
    if d.len() < 2 || d[0] != 0x02 || d[1] != 0x15 {
        return Ok(None);
    }
    if d.len() < 23 {
        return Err(Error::Truncated {
            what: "iBeacon",
            need: 23 - d.len(),
            have: d.len(),
        });
    }
    let uuid = uuid_text(&d[2..18]);
    let major = u16::from_be_bytes([d[18], d[19]]);
    let minor = u16::from_be_bytes([d[20], d[21]]);
    let power = d[22] as i8;
    let mut r = Report::new(Format::IBeacon);
    r.meta.beacon_id = Some(format!("{uuid}:{major}:{minor}"));
    r.readings = vec![
        Reading::text("uuid", uuid),
        Reading::number("major", f64::from(major), None),
        Reading::number("minor", f64::from(minor), None),
        Reading::number("measured_power", f64::from(power), Some("dBm")),
    ];
    Ok(Some(r))
}

fn uuid_text(b: &[u8]) -> String {
    let h = to_hex(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Decodes Eddystone service data (UUID removed), or `Ok(None)` for a frame type this
/// crate does not know.
pub fn decode_eddystone(d: &[u8]) -> Result<Option<Report>> {
    let Some(&frame) = d.first() else {
        return Ok(None);
    };
    let need = |n: usize, what: &'static str| -> Result<()> {
        if d.len() < n {
            Err(Error::Truncated {
                what,
                need: n - d.len(),
                have: d.len(),
            })
        } else {
            Ok(())
        }
    };
    let tx = |r: &mut Report| {
        r.readings.push(Reading::number(
            "tx_power",
            f64::from(d[1] as i8),
            Some("dBm"),
        ))
    };
    let r = match frame {
        0x00 => {
            need(18, "Eddystone-UID")?;
            let mut r = Report::new(Format::EddystoneUid);
            tx(&mut r);
            let (namespace, instance) = (to_hex(&d[2..12]), to_hex(&d[12..18]));
            r.meta.beacon_id = Some(format!("{namespace}:{instance}"));
            r.readings.push(Reading::text("namespace", namespace));
            r.readings.push(Reading::text("instance", instance));
            r
        }
        0x10 => {
            need(3, "Eddystone-URL")?;
            let mut r = Report::new(Format::EddystoneUrl);
            tx(&mut r);
            let url = decode_url(d[2], &d[3..])?;
            r.readings.push(Reading::text("url", url));
            r
        }
        0x20 => {
            need(2, "Eddystone-TLM")?;
            match d[1] {
                0x00 => {
                    need(14, "Eddystone-TLM")?;
                    let mut r = Report::new(Format::EddystoneTlm);
                    let mv = u16::from_be_bytes([d[2], d[3]]);
                    if mv != 0 {
                        r.readings.push(Reading::number(
                            "battery_voltage",
                            f64::from(mv) / 1000.0,
                            Some("V"),
                        ));
                    }
                    let temp = i16::from_be_bytes([d[4], d[5]]);
                    if temp != i16::MIN {
                        r.readings.push(Reading::number(
                            "temperature",
                            f64::from(temp) / 256.0,
                            Some("°C"),
                        ));
                    }
                    let adv = u32::from_be_bytes([d[6], d[7], d[8], d[9]]);
                    let secs = u32::from_be_bytes([d[10], d[11], d[12], d[13]]);
                    r.readings
                        .push(Reading::number("advertisement_count", f64::from(adv), None));
                    r.readings
                        .push(Reading::number("uptime", f64::from(secs) / 10.0, Some("s")));
                    r
                }
                0x01 => {
                    let mut r = Report::new(Format::EddystoneEtlm);
                    r.meta.encrypted = true;
                    r
                }
                v => {
                    return Err(Error::Invalid {
                        what: "Eddystone-TLM version",
                        detail: format!("{v:#04x}"),
                    })
                }
            }
        }
        0x30 => {
            need(10, "Eddystone-EID")?;
            let mut r = Report::new(Format::EddystoneEid);
            tx(&mut r);
            r.meta.beacon_id = Some(to_hex(&d[2..10]));
            r
        }
        _ => return Ok(None),
    };
    Ok(Some(r))
}

const SCHEMES: [&str; 4] = ["http://www.", "https://www.", "http://", "https://"];
const EXPANSIONS: [&str; 14] = [
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu", ".net",
    ".info", ".biz", ".gov",
];

/// Expands an Eddystone-URL: scheme prefix byte, then printable ASCII with the spec's
/// one-byte expansions (0x00-0x0D). Reserved bytes are an error.
pub fn decode_url(scheme: u8, encoded: &[u8]) -> Result<String> {
    let mut url = SCHEMES
        .get(usize::from(scheme))
        .ok_or_else(|| Error::Invalid {
            what: "Eddystone-URL scheme",
            detail: format!("{scheme:#04x}"),
        })?
        .to_string();
    for &b in encoded {
        match b {
            0x00..=0x0D => url.push_str(EXPANSIONS[usize::from(b)]),
            0x21..=0x7E => url.push(char::from(b)),
            _ => {
                return Err(Error::Invalid {
                    what: "Eddystone-URL byte",
                    detail: format!("{b:#04x}"),
                })
            }
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::from_hex;

    /// An iBeacon laid out as Apple's "Proximity Beacon Specification" gives it; UUID
    /// E2C56DB5-DFFB-48D2-B060-D0F5A71096E0 (Apple's AirLocate sample UUID), major 1,
    /// minor 2, -59 dBm at 1 m.
    #[test]
    fn ibeacon() {
        let d = from_hex("0215e2c56db5dffb48d2b060d0f5a71096e000010002c5").unwrap();
        let r = decode_ibeacon(&d).unwrap().unwrap();
        assert_eq!(r.text("uuid"), Some("e2c56db5-dffb-48d2-b060-d0f5a71096e0"));
        assert_eq!(r.number("major"), Some(1.0));
        assert_eq!(r.number("minor"), Some(2.0));
        assert_eq!(r.number("measured_power"), Some(-59.0));
        assert_eq!(
            r.meta.beacon_id.as_deref(),
            Some("e2c56db5-dffb-48d2-b060-d0f5a71096e0:1:2")
        );
        assert_eq!(decode_ibeacon(&[0x10, 0x05, 1, 2]), Ok(None));
        assert!(matches!(
            decode_ibeacon(&d[..10]),
            Err(Error::Truncated { .. })
        ));
    }

    /// Frames laid out field by field from the Eddystone specification (google/eddystone
    /// `protocol-specification.md` and the per-frame pages it links).
    #[test]
    fn eddystone_frames() {
        // UID: tx -20 dBm, namespace 00..09, instance a0..a5, RFU.
        let uid = from_hex("00ec00010203040506070809a0a1a2a3a4a50000").unwrap();
        let r = decode_eddystone(&uid).unwrap().unwrap();
        assert_eq!(r.format, Format::EddystoneUid);
        assert_eq!(r.number("tx_power"), Some(-20.0));
        assert_eq!(
            r.meta.beacon_id.as_deref(),
            Some("00010203040506070809:a0a1a2a3a4a5")
        );
        // The RFU bytes are optional.
        assert!(decode_eddystone(&uid[..18]).unwrap().is_some());

        // URL: https://www. + "example" + .com/ + "x"
        let url = from_hex("10eb016578616d706c650078").unwrap();
        let r = decode_eddystone(&url).unwrap().unwrap();
        assert_eq!(r.text("url"), Some("https://www.example.com/x"));
        assert!(matches!(
            decode_eddystone(&from_hex("10eb0441").unwrap()),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            decode_eddystone(&from_hex("10eb0220").unwrap()),
            Err(Error::Invalid { .. })
        ));

        // TLM: 3000 mV, 23.5 °C (0x1780), 1000 advertisements, 360.0 s up.
        let tlm = from_hex("20000bb81780000003e800000e10").unwrap();
        let r = decode_eddystone(&tlm).unwrap().unwrap();
        assert_eq!(r.number("battery_voltage"), Some(3.0));
        assert_eq!(r.number("temperature"), Some(23.5));
        assert_eq!(r.number("advertisement_count"), Some(1000.0));
        assert_eq!(r.number("uptime"), Some(360.0));
        // Not supported battery / temperature: absent.
        let tlm = from_hex("200000008000000003e800000e10").unwrap();
        let r = decode_eddystone(&tlm).unwrap().unwrap();
        assert_eq!(r.number("battery_voltage"), None);
        assert_eq!(r.number("temperature"), None);
        // eTLM: recognized, encrypted, no readings.
        let r = decode_eddystone(&from_hex("2001aabbccdd").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!((r.format, r.meta.encrypted), (Format::EddystoneEtlm, true));

        // EID.
        let r = decode_eddystone(&from_hex("30f40102030405060708").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(r.meta.beacon_id.as_deref(), Some("0102030405060708"));

        assert_eq!(decode_eddystone(&[0x50, 1]), Ok(None));
        assert_eq!(decode_eddystone(&[]), Ok(None));
        assert!(matches!(
            decode_eddystone(&[0x00, 1, 2]),
            Err(Error::Truncated { .. })
        ));
    }
}
