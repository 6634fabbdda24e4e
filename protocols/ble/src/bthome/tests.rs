//! BTHome vectors. Unless named otherwise, each comes from the BTHome spec's tables
//! (bthome.io `format.html`: the "Example" and "Result" columns).

use super::*;
use crate::advert::from_hex;

/// The whole advertisement, as the crate's `decode` hands it to this module.
fn decode(a: &Advertisement, ctx: &Context<'_>) -> Result<Report> {
    super::decode(a, a.service_data_16(UUID16).unwrap_or(&[]), ctx)
}

const MAC: Address = [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5];

fn adv(service_data_hex: &str) -> Advertisement {
    Advertisement::new(MAC).with_service_data(UUID16, from_hex(service_data_hex).unwrap())
}

fn plain(objects_hex: &str) -> Report {
    decode(&adv(&format!("40{objects_hex}")), &Context::none()).unwrap()
}

fn one_value(objects_hex: &str) -> (String, Value, Option<&'static str>) {
    let r = plain(objects_hex);
    assert_eq!(r.readings.len(), 1, "{objects_hex}: {r:?}");
    let x = &r.readings[0];
    (x.name.clone(), x.value.clone(), x.unit)
}

#[test]
fn spec_sensor_examples() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, f64, Option<&str>)] = &[
        ("518756", "acceleration", 22.151, Some("m/s²")),
        ("630057D0FF", "acceleration", -3.123456, Some("m/s²")),
        ("0161", "battery", 97.0, Some("%")),
        ("6001", "channel", 1.0, None),
        ("12E204", "carbon_dioxide", 1250.0, Some("ppm")),
        ("56E803", "conductivity", 1000.0, Some("µS/cm")),
        ("0960", "count", 96.0, None),
        ("3D0960", "count", 24585.0, None),
        ("3E2A2C0960", "count", 1611213866.0, None),
        ("59EA", "count", -22.0, None),
        ("5AEAEA", "count", -5398.0, None),
        ("5BEA0234EA", "count", -365690134.0, None),
        ("434E34", "current", 13.39, Some("A")),
        ("5D02EA", "current", -5.63, Some("A")),
        ("08CA06", "dew_point", 17.38, Some("°C")),
        ("5E9F8C", "direction", 359.99, Some("°")),
        ("400C00", "distance", 12.0, Some("mm")),
        ("414E00", "distance", 7.8, Some("m")),
        ("424E3400", "duration", 13.39, Some("s")),
        ("4D12138A14", "energy", 344593.17, Some("kWh")),
        ("0A138A14", "energy", 1346.067, Some("kWh")),
        ("4B138A14", "gas", 1346.067, Some("m³")),
        ("4C41018A01", "gas", 25821.505, Some("m³")),
        ("528756", "gyroscope", 22.151, Some("°/s")),
        ("03BF13", "humidity", 50.55, Some("%")),
        ("2E23", "humidity", 35.0, Some("%")),
        ("05138A14", "illuminance", 13460.67, Some("lx")),
        ("6402", "light_level", 2.0, None),
        ("065E1F", "mass", 80.3, Some("kg")),
        ("073E1D", "mass", 74.86, Some("lb")),
        ("14020C", "moisture", 30.74, Some("%")),
        ("2F23", "moisture", 35.0, Some("%")),
        ("0D120C", "pm25", 3090.0, Some("µg/m³")),
        ("0E021C", "pm10", 7170.0, Some("µg/m³")),
        ("0B021B00", "power", 69.14, Some("W")),
        ("5C02FBFFFF", "power", -12.78, Some("W")),
        ("5FA00F", "precipitation", 400.0, Some("mm")),
        ("04138A01", "pressure", 1008.83, Some("hPa")),
        ("3F020C", "rotation", 307.4, Some("°")),
        ("61AC0D", "rotational_speed", 3500.0, Some("rpm")),
        ("6503", "settings_revision", 3.0, None),
        ("444E34", "speed", 133.90, Some("m/s")),
        ("624099DFFF", "speed", -2.123456, Some("m/s")),
        ("57EA", "temperature", -22.0, Some("°C")),
        ("58EA", "temperature", -7.7, Some("°C")),
        ("451101", "temperature", 27.3, Some("°C")),
        ("02CA09", "temperature", 25.06, Some("°C")),
        ("505d396164", "timestamp", 1684093277.0, None),
        ("133301", "volatile_organic_compounds", 307.0, Some("µg/m³")),
        ("0C020C", "voltage", 3.074, Some("V")),
        ("4A020C", "voltage", 307.4, Some("V")),
        ("4E87562A01", "volume", 19551.879, Some("L")),
        ("478756", "volume", 2215.1, Some("L")),
        ("48DC87", "volume", 34780.0, Some("mL")),
        ("5587562A01", "volume_storage", 19551.879, Some("L")),
        ("49DC87", "volume_flow_rate", 34.78, Some("m³/h")),
        ("4632", "uv_index", 5.0, None),
        ("4F87562A01", "water", 19551.879, Some("L")),
    ];
    for (hex, name, value, unit) in cases {
        let (n, v, u) = one_value(hex);
        assert_eq!(
            (n.as_str(), v, u),
            (*name, Value::Number(*value), *unit),
            "{hex}"
        );
    }
}

#[test]
fn spec_text_and_raw_examples() {
    assert_eq!(
        one_value("530C48656C6C6F20576F726C6421").1,
        Value::Text("Hello World!".into())
    );
    assert_eq!(
        one_value("540C48656C6C6F20576F726C6421").1,
        Value::Text("48656c6c6f20576f726c6421".into())
    );
}

#[test]
fn spec_binary_sensor_examples() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, bool)] = &[
        ("1501", "battery_low", true), ("1601", "battery_charging", true),
        ("1700", "carbon_monoxide", false), ("1801", "cold", true),
        ("1900", "connectivity", false), ("1A00", "door", false),
        ("1B01", "garage_door", true), ("1C01", "gas_detected", true),
        ("0F01", "generic", true), ("1D00", "heat", false), ("1E01", "light", true),
        ("1F01", "lock", true), ("2001", "moisture_detected", true), ("2100", "motion", false),
        ("2201", "moving", true), ("2301", "occupancy", true), ("1100", "opening", false),
        ("2400", "plug", false), ("1001", "power_on", true), ("2500", "presence", false),
        ("2601", "problem", true), ("2701", "running", true), ("2800", "safety", false),
        ("2901", "smoke", true), ("2A00", "sound", false), ("2B00", "tamper", false),
        ("2C01", "vibration", true), ("2D01", "window", true),
    ];
    for (hex, name, on) in cases {
        let (n, v, _) = one_value(hex);
        assert_eq!((n.as_str(), v), (*name, Value::Bool(*on)), "{hex}");
    }
}

#[test]
fn spec_event_examples() {
    let ev = |hex: &str| plain(hex).events;
    assert!(ev("3A00").is_empty());
    for (hex, t) in [
        ("3A01", "press"),
        ("3A02", "double_press"),
        ("3A03", "triple_press"),
        ("3A04", "long_press"),
        ("3A05", "long_double_press"),
        ("3A06", "long_triple_press"),
        ("3A80", "hold_press"),
        ("3B0000", "off"),
        ("3B0001", "on"),
        ("3B0002", "toggle"),
    ] {
        let e = ev(hex);
        assert_eq!(e.len(), 1, "{hex}");
        assert_eq!(e[0].event_type, t, "{hex}");
    }
    let step = ev("3B010305");
    assert_eq!(
        (step[0].event_type, step[0].args.as_slice()),
        ("step_up", &[5u8][..])
    );
    assert_eq!(ev("3B010405")[0].event_type, "step_down");
    assert!(ev("3C0000").is_empty());
    let left = &ev("3C0103")[0];
    assert_eq!((left.event_type, left.steps), ("rotate_left", Some(3)));
    let right = &ev("3C020A")[0];
    assert_eq!((right.event_type, right.steps), ("rotate_right", Some(10)));
    // "An event 3A003A01 will send no event for the first button, and an event press for
    // the 2nd button": the 2nd button keeps its number.
    let two = ev("3A003A01");
    assert_eq!(two.len(), 1);
    assert_eq!(
        (two[0].name.as_str(), two[0].event_type),
        ("button_2", "press")
    );
}

#[test]
fn spec_device_information_and_packet_id() {
    assert_eq!(plain("F00100").meta.device_type_id, Some(1));
    assert_eq!(
        plain("F100010204").meta.firmware.as_deref(),
        Some("4.2.1.0")
    );
    assert_eq!(plain("F2000106").meta.firmware.as_deref(), Some("6.1.0"));
    let r = plain("0009");
    assert_eq!(r.meta.packet_id, Some(9));
    assert!(r.readings.is_empty());
}

/// The format page's worked example: `D2FC 40 02C409 03BF13` -> 25.00 °C, 50.55 %.
#[test]
fn spec_worked_example() {
    let r = plain("02C40903BF13");
    assert_eq!(r.number("temperature"), Some(25.0));
    assert_eq!(r.number("humidity"), Some(50.55));
    assert!(!r.meta.encrypted && !r.meta.trigger_based);
    assert_eq!(r.meta.device_address, Some(MAC));
}

/// Outputs of bthome-ble 3.25.0 for these payloads (run against it; reference notes §2).
#[test]
fn bthome_ble_checked_examples() {
    let r = decode(&adv("44000101643a01"), &Context::none()).unwrap();
    assert_eq!(r.meta.packet_id, Some(1));
    assert_eq!(r.number("battery"), Some(100.0));
    assert_eq!(r.events[0].event_type, "press");
    assert!(r.meta.trigger_based);
    let r = plain("0cb80b2d01");
    assert_eq!(r.number("voltage"), Some(3.0));
    assert_eq!(r.boolean("window"), Some(true));
}

/// The encryption example of the spec (bthome.io `encryption.html`): key
/// 231d39c1d7cc1ab1aee224cd096db932, MAC 54:48:E6:8F:80:A5, counter 0x00112233.
#[test]
fn spec_encryption_example_decodes() {
    let key = BindKey::from_hex("231d39c1d7cc1ab1aee224cd096db932").unwrap();
    let keys: Keys = [(MAC, key)].into_iter().collect();
    let a = adv("41e445f3c9962b332211006c7c4519");
    let r = decode(&a, &Context::new(&keys, &())).unwrap();
    assert_eq!(r.number("temperature"), Some(25.06));
    assert_eq!(r.number("humidity"), Some(50.55));
    assert!(r.meta.encrypted);
    assert_eq!(r.meta.counter, Some(0x0011_2233));

    // Replay: the same packet once its counter is recorded, or an older one.
    let mut counters = Counters::new();
    assert_eq!(counters.accept(&r), Some((MAC, 0x0011_2233)));
    let again = decode(&a, &Context::new(&keys, &counters)).unwrap_err();
    assert_eq!(
        again,
        Error::Replayed {
            counter: 0x0011_2233,
            last: 0x0011_2233
        }
    );
    assert!(again.is_repeat() && again.is_security());

    // No key: a typed error, not garbage readings.
    assert_eq!(decode(&a, &Context::none()), Err(Error::MissingKey(MAC)));

    // Wrong key or a flipped bit: BadMic.
    let other: Keys = [(MAC, BindKey::from_bytes([7; 16]))].into_iter().collect();
    assert_eq!(decode(&a, &Context::new(&other, &())), Err(Error::BadMic));
    let flipped = adv("41e445f3c9962a332211006c7c4519");
    assert_eq!(
        decode(&flipped, &Context::new(&keys, &())),
        Err(Error::BadMic)
    );

    // Downgrade: plaintext from the keyed address is refused.
    let downgrade = adv("4002ca0903bf13");
    assert_eq!(
        decode(&downgrade, &Context::new(&keys, &())),
        Err(Error::PlaintextRefused(MAC))
    );
}

#[test]
fn mac_included_flag_sets_the_device_address_and_the_nonce() {
    // MAC-included, encrypted: the nonce uses the MAC from the payload, not the sender's.
    let key = BindKey::from_bytes([0x11; 16]);
    let device = [0xA4, 0xC1, 0x38, 0x01, 0x02, 0x03];
    let info = VERSION_2 | FLAG_ENCRYPTED | FLAG_MAC_INCLUDED;
    let mut sd = vec![info];
    sd.extend(device.iter().rev());
    sd.extend(encrypt(&key, &device, info, 7, &[0x02, 0xCA, 0x09]));
    let a = Advertisement::new([0xDE, 0xAD, 0, 0, 0, 1]).with_service_data(UUID16, sd);
    let keys: Keys = [(device, key)].into_iter().collect();
    let r = decode(&a, &Context::new(&keys, &())).unwrap();
    assert_eq!(r.meta.device_address, Some(device));
    assert_eq!(r.number("temperature"), Some(25.06));

    // Plaintext with an included MAC that has a key: refused as well.
    let mut sd = vec![VERSION_2 | FLAG_MAC_INCLUDED];
    sd.extend(device.iter().rev());
    sd.extend([0x02, 0xCA, 0x09]);
    let a = Advertisement::new([0xDE, 0xAD, 0, 0, 0, 1]).with_service_data(UUID16, sd);
    assert_eq!(
        decode(&a, &Context::new(&keys, &())),
        Err(Error::PlaintextRefused(device))
    );
}

#[test]
fn repeated_measurements_are_numbered_like_bthome_ble() {
    let r = plain("02CA0902CB09451101");
    let names: Vec<_> = r.readings.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["temperature_1", "temperature_2", "temperature_3"]);
    assert_eq!(r.number("temperature_3"), Some(27.3));
    // Different names are numbered separately; a single one keeps the bare name.
    let r = plain("0161 02CA09 02CB09".replace(' ', "").as_str());
    let names: Vec<_> = r.readings.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["battery", "temperature_1", "temperature_2"]);
    // Binary sensors that bthome-ble keys like a sensor get their own name.
    let r = plain("01641501");
    assert_eq!(r.number("battery"), Some(100.0));
    assert_eq!(r.boolean("battery_low"), Some(true));
}

#[test]
fn unknown_object_stops_parsing_and_truncation_is_an_error() {
    let r = plain("02CA09300102CB09");
    assert_eq!(r.readings.len(), 1);
    assert_eq!(r.meta.stopped_at_object, Some(0x30));
    assert!(matches!(
        decode(&adv("4002CA"), &Context::none()),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        decode(&adv("4053"), &Context::none()),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        decode(&adv(""), &Context::none()),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        decode(
            &adv("41010203"),
            &Context::new(
                &[(MAC, BindKey::from_bytes([0; 16]))].into_iter().collect(),
                &()
            )
        ),
        Err(Error::Truncated { .. })
    ));
    // Version bits other than 2 (v1 lived on other UUIDs).
    assert_eq!(
        decode(&adv("2002CA09"), &Context::none()),
        Err(Error::UnsupportedVersion(1))
    );
    // Reserved bits 3-4 are ignored (mask, never compare the byte).
    assert_eq!(plain("02CA09").readings, {
        let r = decode(&adv("5802CA09"), &Context::none()).unwrap();
        r.readings
    });
}

#[test]
fn empty_text_takes_no_name_and_bad_utf8_takes_one() {
    let r = plain("5300530141");
    assert_eq!(r.text("text"), Some("A"));
    let r = plain("5301FF530141");
    assert_eq!(r.readings.len(), 1);
    assert_eq!(r.text("text_2"), Some("A"));
}
