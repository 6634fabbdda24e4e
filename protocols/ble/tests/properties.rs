//! Properties: nothing panics on any input, and what the encoders build decodes back to
//! what they were given (plaintext or encrypted, with or without the MAC in the payload).

use fieldgate_ble::bthome::{object_spec, ObjectKind};
use fieldgate_ble::encode::{self, BtHomeObject, BtHomeOptions, RuuviRaw};
use fieldgate_ble::samples::{random_objects, Rng};
use fieldgate_ble::{
    decode, AddressType, Advertisement, BindKey, Context, Counters, Decoded, Error, Keys, Value,
};
use proptest::prelude::*;

fn known(adv: &Advertisement, ctx: &Context<'_>) -> fieldgate_ble::Report {
    match decode(adv, ctx) {
        Ok(Decoded::Known(r)) => r,
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Random bytes under every UUID and company id a decoder listens to, with and without
    /// a key: a report, Unknown or an error, never a panic.
    #[test]
    fn decode_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..64),
        which in 0usize..6,
        keyed in any::<bool>(),
        last in proptest::option::of(any::<u32>()),
    ) {
        let address = [1, 2, 3, 4, 5, 6];
        let adv = match which {
            0 => Advertisement::new(address).with_service_data(0xFCD2, data.clone()),
            1 => Advertisement::new(address).with_service_data(0x181A, data.clone()),
            2 => Advertisement::new(address).with_manufacturer_data(0x0499, data.clone()),
            3 => Advertisement::new(address).with_manufacturer_data(0x004C, data.clone()),
            4 => Advertisement::new(address).with_service_data(0xFEAA, data.clone()),
            _ => Advertisement::new(address).with_service_data(0x1234, data.clone()),
        };
        let keys: Keys = if keyed {
            [(address, BindKey::from_bytes([9; 16]))].into_iter().collect()
        } else {
            Keys::new()
        };
        let counters: Counters = last.map(|c| (address, c)).into_iter().collect();
        let _ = decode(&adv, &Context::new(&keys, &counters));
        // A BTHome payload that claims encryption and any MAC layout: same.
        let mut enc = data.clone();
        if let Some(first) = enc.first_mut() {
            *first = (*first & 0x07) | 0x40;
        }
        let adv = Advertisement::new(address).with_service_data(0xFCD2, enc);
        let _ = decode(&adv, &Context::new(&keys, &counters));
    }

    #[test]
    fn ad_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(adv) = Advertisement::from_ad_bytes([0; 6], AddressType::Random, Some(-70), &bytes) {
            let _ = decode(&adv, &Context::none());
        }
    }

    /// Random spec-conforming BTHome objects: encrypted with any key, counter and MAC
    /// layout, they decode to exactly what the same objects give in plaintext, and the
    /// counter, device address and trigger flag come through.
    #[test]
    fn bthome_encryption_round_trip(
        seed in any::<u64>(),
        key in any::<[u8; 16]>(),
        counter in any::<u32>(),
        advertiser in any::<[u8; 6]>(),
        device in any::<[u8; 6]>(),
        include_mac in any::<bool>(),
        trigger_based in any::<bool>(),
    ) {
        let objects = random_objects(&mut Rng::new(seed));
        let payload = encode::bthome_objects(&objects);
        let device = if include_mac { device } else { advertiser };
        let plain = encode::bthome_service_data(&device, &payload, &BtHomeOptions {
            trigger_based, include_mac, encrypt: None,
        });
        let key = BindKey::from_bytes(key);
        let sealed = encode::bthome_service_data(&device, &payload, &BtHomeOptions {
            trigger_based, include_mac, encrypt: Some((key.clone(), counter)),
        });
        let p = known(&Advertisement::new(advertiser).with_service_data(0xFCD2, plain), &Context::none());
        let keys: Keys = [(device, key)].into_iter().collect();
        let sealed_adv = Advertisement::new(advertiser).with_service_data(0xFCD2, sealed);
        let e = known(&sealed_adv, &Context::new(&keys, &()));
        prop_assert_eq!(&p.readings, &e.readings);
        prop_assert_eq!(&p.events, &e.events);
        prop_assert_eq!(e.meta.counter, Some(counter));
        prop_assert!(e.meta.encrypted && !p.meta.encrypted);
        prop_assert_eq!(e.meta.device_address, Some(device));
        prop_assert_eq!(e.meta.trigger_based, trigger_based);

        // Replay protection holds for every counter: the same one again is refused.
        let mut counters = Counters::new();
        counters.accept(&e);
        let again = decode(&sealed_adv, &Context::new(&keys, &counters));
        prop_assert_eq!(again, Err(Error::Replayed { counter, last: counter }));
    }

    /// Every numeric object: a raw value encoded little-endian decodes to raw × factor.
    #[test]
    fn bthome_numbers_round_trip(index in any::<prop::sample::Index>(), raw in any::<i64>()) {
        let numeric: Vec<_> = fieldgate_ble::bthome::OBJECTS
            .iter()
            .filter(|s| matches!(s.kind, ObjectKind::Number { .. }))
            .collect();
        let spec = numeric[index.index(numeric.len())];
        let ObjectKind::Number { len, signed, mul, decimals, unit } = spec.kind else { unreachable!() };
        let bits = 8 * u32::from(len);
        let raw = if signed {
            (raw << (64 - bits)) >> (64 - bits)
        } else {
            raw & ((1i64 << bits) - 1)
        };
        let value = raw.to_le_bytes()[..usize::from(len)].to_vec();
        let payload = encode::bthome_objects(&[BtHomeObject { id: spec.id, value }]);
        let sd = encode::bthome_service_data(&[0; 6], &payload, &BtHomeOptions::default());
        let r = known(&Advertisement::new([0; 6]).with_service_data(0xFCD2, sd), &Context::none());
        let expected = raw as f64 * f64::from(mul) / 10f64.powi(i32::from(decimals));
        prop_assert_eq!(&r.readings[0].value, &Value::Number(expected));
        prop_assert_eq!(r.readings[0].unit, unit);
        prop_assert_eq!(r.readings[0].name.as_str(), spec.name);
        prop_assert!(object_spec(spec.id).is_some());
    }

    #[test]
    fn ruuvi_round_trip(raw in any::<[u8; 18]>(), mac in any::<[u8; 6]>()) {
        let f = RuuviRaw {
            temperature: i16::from_be_bytes([raw[0], raw[1]]),
            humidity: u16::from_be_bytes([raw[2], raw[3]]),
            pressure: u16::from_be_bytes([raw[4], raw[5]]),
            acceleration: [
                i16::from_be_bytes([raw[6], raw[7]]),
                i16::from_be_bytes([raw[8], raw[9]]),
                i16::from_be_bytes([raw[10], raw[11]]),
            ],
            battery: u16::from_be_bytes([raw[12], raw[13]]) & 0x7FF,
            tx_power: raw[14] & 0x1F,
            movement: raw[15],
            sequence: u16::from_be_bytes([raw[16], raw[17]]),
            mac,
        };
        let adv = Advertisement::new([0; 6]).with_manufacturer_data(0x0499, encode::ruuvi_rawv2(&f));
        let r = known(&adv, &Context::none());
        let opt = |valid: bool, v: f64| valid.then_some(v);
        prop_assert_eq!(r.number("temperature"), opt(f.temperature != i16::MIN, f64::from(f.temperature) / 200.0));
        prop_assert_eq!(r.number("humidity"), opt(f.humidity != u16::MAX, f64::from(f.humidity) / 400.0));
        prop_assert_eq!(r.number("pressure"), opt(f.pressure != u16::MAX, (f64::from(f.pressure) + 50_000.0) / 100.0));
        prop_assert_eq!(r.number("acceleration_y"), opt(f.acceleration[1] != i16::MIN, f64::from(f.acceleration[1])));
        prop_assert_eq!(r.number("battery_voltage"), opt(f.battery != 0x7FF, (f64::from(f.battery) + 1600.0) / 1000.0));
        prop_assert_eq!(r.number("tx_power"), opt(f.tx_power != 0x1F, f64::from(f.tx_power) * 2.0 - 40.0));
        prop_assert_eq!(r.number("movement_counter"), opt(f.movement != 0xFF, f64::from(f.movement)));
        prop_assert_eq!(r.meta.packet_id, (f.sequence != u16::MAX).then_some(u32::from(f.sequence)));
        prop_assert_eq!(r.meta.device_address, (mac != [0xFF; 6]).then_some(mac));
    }

    #[test]
    fn xiaomi_and_beacons_round_trip(
        mac in any::<[u8; 6]>(),
        t in any::<i16>(), h in any::<u16>(), mv in any::<u16>(), b in any::<u8>(), c in any::<u8>(), fl in any::<u8>(),
        uuid in any::<[u8; 16]>(), major in any::<u16>(), minor in any::<u16>(), power in any::<i8>(),
        ns in any::<[u8; 10]>(), inst in any::<[u8; 6]>(), adv_count in any::<u32>(), up in any::<u32>(),
    ) {
        let pvvx = Advertisement::new(mac).with_service_data(0x181A, encode::pvvx(&mac, t, h, mv, b, c, fl));
        let r = known(&pvvx, &Context::none());
        prop_assert_eq!(r.number("temperature"), Some(f64::from(t) / 100.0));
        prop_assert_eq!(r.number("humidity"), Some(f64::from(h) / 100.0));
        prop_assert_eq!(r.number("battery_voltage"), Some(f64::from(mv) / 1000.0));
        prop_assert_eq!(r.boolean("reed_switch"), Some(fl & 1 != 0));
        prop_assert_eq!((r.meta.packet_id, r.meta.device_address), (Some(u32::from(c)), Some(mac)));

        let atc = Advertisement::new(mac).with_service_data(0x181A, encode::atc1441(&mac, t, b, c, mv, fl));
        let r = known(&atc, &Context::none());
        prop_assert_eq!(r.number("temperature"), Some(f64::from(t) / 10.0));
        prop_assert_eq!(r.number("humidity"), Some(f64::from(b)));
        prop_assert_eq!(r.number("battery"), Some(f64::from(c)));
        prop_assert_eq!(r.meta.packet_id, Some(u32::from(fl)));

        let ib = Advertisement::new(mac).with_manufacturer_data(0x004C, encode::ibeacon(&uuid, major, minor, power));
        let r = known(&ib, &Context::none());
        prop_assert_eq!(r.number("major"), Some(f64::from(major)));
        prop_assert_eq!(r.number("minor"), Some(f64::from(minor)));
        prop_assert_eq!(r.number("measured_power"), Some(f64::from(power)));

        let uid = Advertisement::new(mac).with_service_data(0xFEAA, encode::eddystone_uid(power, &ns, &inst));
        let r = known(&uid, &Context::none());
        let id = format!("{}:{}", fieldgate_ble::to_hex(&ns), fieldgate_ble::to_hex(&inst));
        prop_assert_eq!(r.meta.beacon_id, Some(id));

        let tlm = Advertisement::new(mac).with_service_data(0xFEAA, encode::eddystone_tlm(mv, t, adv_count, up));
        let r = known(&tlm, &Context::none());
        prop_assert_eq!(r.number("battery_voltage"), (mv != 0).then_some(f64::from(mv) / 1000.0));
        prop_assert_eq!(r.number("temperature"), (t != i16::MIN).then_some(f64::from(t) / 256.0));
        prop_assert_eq!(r.number("uptime"), Some(f64::from(up) / 10.0));
    }

    /// What a device puts on air reads back into the same advertisement.
    #[test]
    fn ad_bytes_round_trip(
        name in proptest::option::of("[a-zA-Z0-9 _-]{0,20}"),
        sd in proptest::collection::btree_map(any::<u16>(), proptest::collection::vec(any::<u8>(), 0..20), 0..3),
        md in proptest::collection::btree_map(any::<u16>(), proptest::collection::vec(any::<u8>(), 0..20), 0..3),
    ) {
        let mut adv = Advertisement::new([1, 2, 3, 4, 5, 6]);
        adv.local_name = name;
        for (u, d) in sd {
            adv = adv.with_service_data(u, d);
        }
        adv.manufacturer_data = md;
        let back = Advertisement::from_ad_bytes(adv.address, AddressType::Unknown, None, &encode::ad_bytes(&adv));
        prop_assert_eq!(back, Ok(adv));
    }
}
