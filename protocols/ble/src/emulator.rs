//! A device-side emulator: the advertisements a room of BLE sensors and beacons (and,
//! optionally, a busy street) puts on air, in emulated time. Pure: no clock, no IO. The
//! caller asks for each tick's advertisements ([`Scene::tick`]) and paces the ticks
//! itself (the daemon's `sim://ble` backend streams them; `fieldgate emulate ble` prints
//! them).
//!
//! The room: a BTHome v2 thermometer (plaintext), a BTHome v2 encrypted sensor (the
//! bthome.io spec vector's address and key, so anyone can check it), a trigger-based
//! BTHome button, a Xiaomi thermometer on pvvx firmware, a Ruuvi tag (RAWv2) and an
//! iBeacon. With faults on, the encrypted sensor's airspace also carries what an attacker
//! would send: an old advertisement replayed, one with a forged MIC and a plaintext
//! advertisement with its address (a downgrade). The street adds `street` random
//! addresses: mostly phones (Apple "Nearby" manufacturer data, a format no decoder knows)
//! and some BTHome and iBeacon devices passing by.

use crate::advert::{Address, AddressType, Advertisement};
use crate::bthome::{self, BindKey};
use crate::encode::{
    bthome_objects, bthome_service_data, ibeacon, pvvx, ruuvi_rawv2, BtHomeObject, BtHomeOptions,
    RuuviRaw,
};
use crate::samples::Rng;

/// Emulated time per tick.
pub const TICK_MS: u64 = 100;

/// The encrypted sensor's address and bindkey: the bthome.io encryption example.
pub const ENCRYPTED_ADDRESS: Address = [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5];
pub const ENCRYPTED_BINDKEY_HEX: &str = "231d39c1d7cc1ab1aee224cd096db932";

/// What a scene holds.
#[derive(Debug, Clone)]
pub struct SceneOptions {
    /// Random addresses passing by besides the room's devices (0: none).
    pub street: usize,
    /// Send the replayed, forged and downgraded advertisements.
    pub faults: bool,
    /// Same seed, same scene.
    pub seed: u64,
    /// The room's iBeacon (a visitor's badge) leaves at the first tick and comes back
    /// at the second: silent in between, its signal fading over the last 20 ticks
    /// before it goes.
    pub beacon_away: Option<(u64, u64)>,
    /// Where the encrypted sensor's BTHome counter starts, in ticks; it then goes up by
    /// one per tick. `None`: a fixed start (same seed, same bytes). A start taken from
    /// the wall clock ([`counter_from_clock`]) keeps the counter rising across restarts
    /// of the emulator, as a real sensor's does, so a receiver that remembers it does
    /// not take a restarted emulator for a replay.
    pub counter_base: Option<u32>,
}

/// A counter start from the wall clock: 100 ms ticks since 2023-11-14 (wrapping; fits
/// 32 bits until 2037). An emulator run faster than real time runs ahead of it.
pub fn counter_from_clock() -> u32 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let ticks = ms.saturating_sub(1_700_000_000_000) / u128::from(TICK_MS);
    (ticks % (1u128 << 32)) as u32
}

impl Default for SceneOptions {
    fn default() -> Self {
        SceneOptions {
            street: 0,
            faults: true,
            seed: 1,
            beacon_away: None,
            counter_base: None,
        }
    }
}

/// What an emulated device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    BtHomePlain,
    BtHomeEncrypted,
    BtHomeButton,
    XiaomiPvvx,
    Ruuvi,
    IBeacon,
    /// A phone: manufacturer data in no format the decoders know.
    Phone,
}

/// One emulated advertiser.
#[derive(Debug, Clone)]
pub struct EmulatedDevice {
    pub name: &'static str,
    pub address: Address,
    pub kind: DeviceKind,
    /// Advertising interval in ticks.
    pub interval: u64,
    phase: u64,
    /// Counts advertisements sent (packet ids, counters, sequence numbers).
    sent: u32,
}

/// The room (and street) in emulated time.
#[derive(Debug, Clone)]
pub struct Scene {
    devices: Vec<EmulatedDevice>,
    key: BindKey,
    faults: bool,
    beacon_away: Option<(u64, u64)>,
    tick: u64,
    rng: Rng,
    counter_base: Option<u32>,
    /// The encrypted sensor's first advertisement, replayed later.
    recorded: Option<Advertisement>,
}

impl Scene {
    pub fn new(opts: &SceneOptions) -> Scene {
        let mut rng = Rng::new(opts.seed);
        let room = |name, address, kind, interval| EmulatedDevice {
            name,
            address,
            kind,
            interval,
            phase: 0,
            sent: 0,
        };
        let mut devices = vec![
            room(
                "bthome-thermometer",
                [0xA4, 0xC1, 0x38, 0x10, 0x20, 0x30],
                DeviceKind::BtHomePlain,
                10,
            ),
            room(
                "bthome-encrypted",
                ENCRYPTED_ADDRESS,
                DeviceKind::BtHomeEncrypted,
                10,
            ),
            room(
                "bthome-button",
                [0x3C, 0x2E, 0xF5, 0x00, 0x00, 0x01],
                DeviceKind::BtHomeButton,
                70,
            ),
            room(
                "xiaomi-pvvx",
                [0xA4, 0xC1, 0x38, 0x5A, 0x6B, 0x7C],
                DeviceKind::XiaomiPvvx,
                15,
            ),
            room(
                "ruuvi",
                [0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F],
                DeviceKind::Ruuvi,
                10,
            ),
            room(
                "ibeacon",
                [0xF0, 0x0D, 0xBE, 0xAC, 0x00, 0x01],
                DeviceKind::IBeacon,
                5,
            ),
        ];
        for (i, d) in devices.iter_mut().enumerate() {
            d.phase = i as u64 % d.interval;
        }
        for _ in 0..opts.street {
            let mut address: Address = rng.bytes();
            // Static random address: the two top bits set.
            address[0] |= 0xC0;
            let kind = match rng.below(10) {
                0 => DeviceKind::BtHomePlain,
                1 => DeviceKind::IBeacon,
                _ => DeviceKind::Phone,
            };
            let interval = 10 + rng.below(20) as u64;
            devices.push(EmulatedDevice {
                name: "street",
                address,
                kind,
                interval,
                phase: rng.below(interval as usize) as u64,
                sent: 0,
            });
        }
        let key = BindKey::from_hex(ENCRYPTED_BINDKEY_HEX).unwrap_or(BindKey::from_bytes([0; 16]));
        Scene {
            devices,
            key,
            faults: opts.faults,
            beacon_away: opts.beacon_away,
            tick: 0,
            rng,
            counter_base: opts.counter_base,
            recorded: None,
        }
    }

    pub fn devices(&self) -> &[EmulatedDevice] {
        &self.devices
    }

    /// The bindkey of the encrypted sensor (at [`ENCRYPTED_ADDRESS`]).
    pub fn bindkey(&self) -> &BindKey {
        &self.key
    }

    /// Ticks elapsed.
    pub fn now(&self) -> u64 {
        self.tick
    }

    /// The advertisements sent during the next tick.
    pub fn tick(&mut self) -> Vec<Advertisement> {
        let t = self.tick;
        self.tick += 1;
        let mut out = Vec::new();
        for i in 0..self.devices.len() {
            let d = &self.devices[i];
            if t % d.interval != d.phase {
                continue;
            }
            let mut fade = 0;
            if let (DeviceKind::IBeacon, "ibeacon", Some((leave, back))) =
                (d.kind, d.name, self.beacon_away)
            {
                if (leave..back).contains(&t) {
                    continue;
                }
                if t < leave && leave - t <= 20 {
                    fade = 40;
                }
            }
            let mut adv = self.advertise(i);
            adv.rssi = adv.rssi.map(|r| r - fade);
            out.push(adv);
        }
        if self.faults {
            out.extend(self.faults_at(t));
        }
        out
    }

    fn advertise(&mut self, i: usize) -> Advertisement {
        let rssi = -45 - self.rng.below(40) as i16;
        let d = &mut self.devices[i];
        d.sent = d.sent.wrapping_add(1);
        let n = d.sent;
        let wobble = (n % 7) as i16;
        let mut adv = Advertisement::new(d.address);
        adv.address_type = if d.name == "street" {
            AddressType::Random
        } else {
            AddressType::Public
        };
        adv.rssi = Some(rssi);
        match d.kind {
            DeviceKind::BtHomePlain => {
                let payload = bthome_objects(&[
                    obj(0x00, vec![n as u8]),
                    obj(0x01, vec![90]),
                    obj(0x02, (2150 + wobble * 5).to_le_bytes().to_vec()),
                    obj(0x03, 4830u16.to_le_bytes().to_vec()),
                ]);
                let data = bthome_service_data(&d.address, &payload, &BtHomeOptions::default());
                adv = adv.with_service_data(bthome::UUID16, data);
                adv.local_name = Some("BTHome Thermo".into());
            }
            DeviceKind::BtHomeEncrypted => {
                let payload = bthome_objects(&[
                    obj(0x02, (2506 + wobble).to_le_bytes().to_vec()),
                    obj(0x03, 5055u16.to_le_bytes().to_vec()),
                ]);
                let counter = match self.counter_base {
                    Some(base) => base.wrapping_add(self.tick as u32),
                    None => 0x0011_2233 + n,
                };
                let opts = BtHomeOptions {
                    encrypt: Some((self.key.clone(), counter)),
                    ..Default::default()
                };
                let data = bthome_service_data(&d.address, &payload, &opts);
                adv = adv.with_service_data(bthome::UUID16, data);
                adv.local_name = Some("DIY-sensor".into());
                if self.recorded.is_none() {
                    self.recorded = Some(adv.clone());
                }
            }
            DeviceKind::BtHomeButton => {
                let payload = bthome_objects(&[
                    obj(0x00, vec![n as u8]),
                    obj(0x01, vec![100]),
                    obj(0x3A, vec![if n % 3 == 0 { 2 } else { 1 }]),
                ]);
                let opts = BtHomeOptions {
                    trigger_based: true,
                    ..Default::default()
                };
                let data = bthome_service_data(&d.address, &payload, &opts);
                adv = adv.with_service_data(bthome::UUID16, data);
                adv.local_name = Some("SBBT-002C".into());
            }
            DeviceKind::XiaomiPvvx => {
                let data = pvvx(&d.address, 2231 + wobble, 4412, 2950, 87, n as u8, 0x04);
                adv = adv.with_service_data(crate::xiaomi::UUID16, data);
                adv.local_name = Some("ATC_5A6B7C".into());
            }
            DeviceKind::Ruuvi => {
                let data = ruuvi_rawv2(&RuuviRaw {
                    temperature: 4860 + wobble,
                    humidity: 21396,
                    pressure: 50044,
                    acceleration: [4, -4, 1036],
                    battery: 1377,
                    tx_power: 22,
                    movement: 66,
                    sequence: n as u16,
                    mac: d.address,
                });
                adv = adv.with_manufacturer_data(crate::ruuvi::COMPANY_ID, data);
                adv.local_name = Some("Ruuvi 884F".into());
            }
            DeviceKind::IBeacon => {
                let mut uuid = [0u8; 16];
                uuid[..6].copy_from_slice(&d.address);
                let data = ibeacon(&uuid, 1, u16::from(d.address[5]), -59);
                adv = adv.with_manufacturer_data(crate::beacon::APPLE_COMPANY_ID, data);
            }
            DeviceKind::Phone => {
                // Apple "Nearby Info" (type 0x10): not a beacon, not a sensor.
                let mut data = vec![0x10, 0x05, 0x01];
                data.extend(self.rng.bytes::<4>());
                adv = adv.with_manufacturer_data(crate::beacon::APPLE_COMPANY_ID, data);
            }
        }
        adv
    }

    /// Every 5 s of emulated time, once the encrypted sensor has been heard: a replay
    /// of its first advertisement, a forged MIC and a plaintext downgrade.
    fn faults_at(&mut self, t: u64) -> Vec<Advertisement> {
        let Some(recorded) = self.recorded.clone() else {
            return Vec::new();
        };
        match t % 50 {
            // Its first advertisement again, byte for byte (an older counter).
            17 if t > 50 => vec![recorded],
            33 => {
                let mut forged = recorded;
                if let Some(data) = forged
                    .service_data
                    .get_mut(&crate::advert::BleUuid::from_u16(bthome::UUID16))
                {
                    // Raise the counter (so it is no replay) without the key: the MIC
                    // cannot match.
                    let n = data.len();
                    if n >= 8 {
                        data[n - 5] = data[n - 5].wrapping_add(0x40);
                    }
                }
                vec![forged]
            }
            41 => {
                let payload = bthome_objects(&[obj(0x02, (-4000i16).to_le_bytes().to_vec())]);
                let data =
                    bthome_service_data(&ENCRYPTED_ADDRESS, &payload, &BtHomeOptions::default());
                vec![Advertisement::new(ENCRYPTED_ADDRESS).with_service_data(bthome::UUID16, data)]
            }
            _ => Vec::new(),
        }
    }
}

fn obj(id: u8, value: Vec<u8>) -> BtHomeObject {
    BtHomeObject { id, value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, Context, Counters, Decoded, Error, Keys};

    #[test]
    fn the_room_decodes_and_the_faults_are_refused() {
        let mut scene = Scene::new(&SceneOptions::default());
        let keys: Keys = [(ENCRYPTED_ADDRESS, scene.bindkey().clone())]
            .into_iter()
            .collect();
        let mut counters = Counters::new();
        let (mut known, mut replayed, mut mic, mut downgrade) = (0, 0, 0, 0);
        for _ in 0..200 {
            for adv in scene.tick() {
                match decode(&adv, &Context::new(&keys, &counters)) {
                    Ok(Decoded::Known(r)) => {
                        known += 1;
                        counters.accept(&r);
                    }
                    Ok(Decoded::Unknown) => panic!("room device in no format: {adv:?}"),
                    Err(Error::Replayed { .. }) => replayed += 1,
                    Err(Error::BadMic) => mic += 1,
                    Err(Error::PlaintextRefused(_)) => downgrade += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert!(known > 100, "{known}");
        assert_eq!((replayed, mic, downgrade), (3, 4, 4));
    }

    #[test]
    fn the_beacon_fades_leaves_and_comes_back() {
        let mut scene = Scene::new(&SceneOptions {
            faults: false,
            beacon_away: Some((100, 200)),
            ..Default::default()
        });
        let beacon = [0xF0, 0x0D, 0xBE, 0xAC, 0x00, 0x01];
        let heard: Vec<(u64, i16)> = (0..300)
            .flat_map(|_| {
                let t = scene.now();
                scene
                    .tick()
                    .into_iter()
                    .filter(|a| a.address == beacon)
                    .map(move |a| (t, a.rssi.unwrap_or(0)))
            })
            .collect();
        assert!(heard.iter().all(|(t, _)| !(100..200).contains(t)));
        assert!(heard.iter().any(|(t, _)| *t < 100) && heard.iter().any(|(t, _)| *t >= 200));
        assert!(heard
            .iter()
            .filter(|(t, _)| (80..100).contains(t))
            .all(|(_, r)| *r <= -85));
    }

    #[test]
    fn a_counter_from_the_clock_is_above_one_taken_earlier() {
        let scene = |base| {
            Scene::new(&SceneOptions {
                counter_base: Some(base),
                faults: false,
                ..Default::default()
            })
        };
        let (mut first, mut later) = (scene(1_000), scene(1_000 + 600));
        let keys: Keys = [(ENCRYPTED_ADDRESS, first.bindkey().clone())]
            .into_iter()
            .collect();
        let mut counters = Counters::new();
        for _ in 0..300 {
            for adv in first.tick() {
                if let Ok(Decoded::Known(r)) = decode(&adv, &Context::new(&keys, &counters)) {
                    counters.accept(&r);
                }
            }
        }
        // Restarted a minute later (600 ticks on): its encrypted readings are taken.
        let mut taken = 0;
        for _ in 0..20 {
            for adv in later.tick() {
                if adv.address != ENCRYPTED_ADDRESS {
                    continue;
                }
                match decode(&adv, &Context::new(&keys, &counters)) {
                    Ok(Decoded::Known(r)) => {
                        taken += 1;
                        counters.accept(&r);
                    }
                    other => panic!("the restarted sensor was refused: {other:?}"),
                }
            }
        }
        assert!(taken > 0);
    }

    #[test]
    fn the_street_is_mostly_unknown_and_deterministic() {
        let opts = SceneOptions {
            street: 500,
            faults: false,
            seed: 7,
            beacon_away: None,
            counter_base: None,
        };
        let a: Vec<_> = (0..30).flat_map(|_| Scene::new(&opts).tick()).collect();
        let b: Vec<_> = (0..30).flat_map(|_| Scene::new(&opts).tick()).collect();
        assert_eq!(a, b);
        let mut scene = Scene::new(&opts);
        let advs: Vec<_> = (0..30).flat_map(|_| scene.tick()).collect();
        let unknown = advs
            .iter()
            .filter(|a| matches!(decode(a, &Context::none()), Ok(Decoded::Unknown)))
            .count();
        assert!(unknown * 10 > advs.len() * 6, "{unknown} of {}", advs.len());
        assert_eq!(scene.devices().len(), 506);
    }
}
