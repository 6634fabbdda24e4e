//! Deterministic BTHome advertisements for the peer test and the benchmark: every object id
//! of the spec, repeated ids, the MAC-included and trigger-based flags, plaintext and
//! encrypted with random keys, MACs and counters, and the cases a receiver must refuse
//! (no key, wrong key, plaintext from a keyed device). Same seed, same set.

use crate::advert::{Address, Advertisement};
use crate::bthome::{self, BindKey, ObjectKind, OBJECTS};
use crate::encode::{bthome_objects, bthome_service_data, BtHomeObject, BtHomeOptions};

/// SplitMix64: small, fast and good enough to draw test data (no crate needed for that).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.iter_mut().for_each(|b| *b = self.byte());
        out
    }

    pub fn vec(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What the receiver of a sample is set up with, and so what it must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Plaintext, no key: decoded.
    Plain,
    /// Encrypted, right key: decrypted and decoded.
    Encrypted,
    /// Encrypted, no key: refused (missing key).
    NoKey,
    /// Encrypted, another key: refused (MIC).
    WrongKey,
    /// Plaintext from a device the receiver has a key for: refused (downgrade).
    Downgrade,
}

/// One generated advertisement and the receiver's key for its device.
#[derive(Debug, Clone)]
pub struct BtHomeSample {
    pub adv: Advertisement,
    /// The device MAC (the advertiser's address, or the one in the payload).
    pub device: Address,
    /// The key the receiver holds for `device`.
    pub key: Option<BindKey>,
    pub case: Case,
    pub objects: Vec<BtHomeObject>,
}

/// Two ids that name the same quantity in different units (mass kg/lb, distance mm/m,
/// volume L/mL) are not put in one packet: with both, bthome-ble files the two readings
/// under one key and one overwrites the other, while we number them (`mass_1`, `mass_2`),
/// so they cannot be compared value by value.
fn unit_clash(a: u8, b: u8) -> bool {
    let unit = |id| match bthome::object_spec(id).map(|s| (s.name, s.kind)) {
        Some((name, ObjectKind::Number { unit, .. })) => Some((name, unit)),
        _ => None,
    };
    matches!((unit(a), unit(b)), (Some((na, ua)), Some((nb, ub))) if na == nb && ua != ub)
}

fn random_value(rng: &mut Rng, kind: ObjectKind) -> Vec<u8> {
    match kind {
        ObjectKind::Number { len, .. } => rng.vec(usize::from(len)),
        ObjectKind::Binary => vec![if rng.chance(90) {
            rng.byte() & 1
        } else {
            rng.byte()
        }],
        ObjectKind::PacketId => vec![rng.byte()],
        ObjectKind::Timestamp => rng.vec(4),
        ObjectKind::Text => {
            let len = rng.below(12);
            match rng.below(10) {
                0 => rng.vec(len), // often not UTF-8
                1 => "°C ✓ é".as_bytes()[..len.min(9)].to_vec(),
                _ => (0..len).map(|_| 0x20 + rng.byte() % 0x5F).collect(),
            }
        }
        ObjectKind::Raw => {
            let len = rng.below(10);
            rng.vec(len)
        }
        ObjectKind::Button => vec![*rng.pick(&[0, 1, 2, 3, 4, 5, 6, 0x80, 0x81, 0x07, 0xFE])],
        ObjectKind::Dimmer => vec![*rng.pick(&[0u8, 1, 2, 3]), rng.byte()],
        ObjectKind::Command => {
            let mut v = vec![rng.byte() % 6];
            let args = rng.below(4);
            v.extend(rng.vec(args));
            v
        }
        ObjectKind::DeviceTypeId => rng.vec(2),
        ObjectKind::Firmware { len } => rng.vec(usize::from(len)),
    }
}

/// A random, spec-conforming object list (ascending ids; repeats allowed).
pub fn random_objects(rng: &mut Rng) -> Vec<BtHomeObject> {
    let count = 1 + rng.below(6);
    let mut ids: Vec<u8> = Vec::new();
    while ids.len() < count {
        let id = rng.pick(OBJECTS).id;
        let conflicts = ids.iter().any(|x| unit_clash(*x, id));
        // One packet id, one firmware version per packet.
        let single = matches!(id, 0x00 | 0xF0 | 0xF1 | 0xF2)
            && ids.iter().any(|x| *x == id || (id >= 0xF1 && *x >= 0xF1));
        if conflicts || single {
            continue;
        }
        let repeat = if !single && id != 0x00 && id < 0xF0 && rng.chance(20) {
            2 + rng.below(2)
        } else {
            1
        };
        ids.extend(std::iter::repeat_n(id, repeat));
    }
    ids.sort_unstable();
    ids.into_iter()
        .map(|id| {
            let kind = bthome::object_spec(id)
                .map(|s| s.kind)
                .unwrap_or(ObjectKind::Binary);
            BtHomeObject {
                id,
                value: random_value(rng, kind),
            }
        })
        .collect()
}

/// `n` advertisements from `seed`: ~60 % plaintext, ~25 % encrypted, ~5 % each of
/// no key, wrong key and downgrade.
pub fn bthome(seed: u64, n: usize) -> Vec<BtHomeSample> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let case = match rng.below(100) {
                0..=59 => Case::Plain,
                60..=84 => Case::Encrypted,
                85..=89 => Case::NoKey,
                90..=94 => Case::WrongKey,
                _ => Case::Downgrade,
            };
            let objects = random_objects(&mut rng);
            let advertiser: Address = rng.bytes();
            let include_mac = rng.chance(15);
            let device = if include_mac { rng.bytes() } else { advertiser };
            let key = BindKey::from_bytes(rng.bytes());
            let encrypt = matches!(case, Case::Encrypted | Case::NoKey | Case::WrongKey);
            let opts = BtHomeOptions {
                trigger_based: rng.chance(20),
                include_mac,
                encrypt: encrypt.then(|| (key.clone(), rng.next_u64() as u32)),
            };
            let data = bthome_service_data(&device, &bthome_objects(&objects), &opts);
            let mut adv = Advertisement::new(advertiser).with_service_data(bthome::UUID16, data);
            adv.rssi = Some(-40 - rng.below(60) as i16);
            let receiver_key = match case {
                Case::Plain | Case::NoKey => None,
                Case::Encrypted | Case::Downgrade => Some(key),
                Case::WrongKey => Some(BindKey::from_bytes(rng.bytes())),
            };
            BtHomeSample {
                adv,
                device,
                key: receiver_key,
                case,
                objects,
            }
        })
        .collect()
}
