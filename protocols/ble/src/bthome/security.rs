//! BTHome encryption (AES-128-CCM, bthome.io `encryption.html`) and the receiver-side
//! checks the spec leaves to the receiver: **replay protection** (the counter of an
//! authentic advertisement must be above the last one accepted) and **downgrade
//! protection** (plaintext from a device that has a key is refused).
//!
//! Nothing here keeps state behind the caller's back: decoding reads keys from [`Keys`]
//! and the last accepted counters from a [`CounterStore`]; the caller persists the counter
//! of each report it accepts ([`Counters::accept`] for the in-memory store) so that the
//! protection survives a restart. Unlike bthome-ble, a counter that falls back below 100
//! is not let through: a device that really restarted its counter (some do on a battery
//! change) is let in again by resetting its counter ([`Counters::reset`]), an operator's
//! decision that belongs in the audit log.

use std::collections::BTreeMap;
use std::fmt;

use ccm::aead::generic_array::GenericArray;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U4};
use ccm::Ccm;

use crate::advert::{from_hex, Address};
use crate::error::{Error, Result};
use crate::report::Report;

/// AES-128-CCM with BTHome's 4-byte MIC and 13-byte nonce.
type BtHomeCcm = Ccm<aes::Aes128, U4, U13>;

/// BTHome's 16-bit service UUID, as it appears in the nonce (little-endian).
const UUID_LE: [u8; 2] = [0xD2, 0xFC];

/// A 16-byte BTHome bindkey. Its `Debug` does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct BindKey([u8; 16]);

impl BindKey {
    pub fn from_bytes(bytes: [u8; 16]) -> BindKey {
        BindKey(bytes)
    }

    /// Parses the 32 hex digits devices and Home Assistant show.
    pub fn from_hex(s: &str) -> Result<BindKey> {
        let bytes = from_hex(s.trim()).ok_or_else(|| Error::BadKey("not hex".into()))?;
        let bytes: [u8; 16] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| Error::BadKey(format!("{} bytes", b.len())))?;
        Ok(BindKey(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for BindKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BindKey(<redacted>)")
    }
}

/// BTHome bindkeys by device address (display order).
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: BTreeMap<Address, BindKey>,
}

impl Keys {
    pub const fn new() -> Keys {
        Keys {
            keys: BTreeMap::new(),
        }
    }

    pub fn insert(&mut self, address: Address, key: BindKey) -> Option<BindKey> {
        self.keys.insert(address, key)
    }

    pub fn remove(&mut self, address: &Address) -> Option<BindKey> {
        self.keys.remove(address)
    }

    pub fn get(&self, address: &Address) -> Option<&BindKey> {
        self.keys.get(address)
    }

    pub fn contains(&self, address: &Address) -> bool {
        self.keys.contains_key(address)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl FromIterator<(Address, BindKey)> for Keys {
    fn from_iter<I: IntoIterator<Item = (Address, BindKey)>>(iter: I) -> Keys {
        Keys {
            keys: iter.into_iter().collect(),
        }
    }
}

/// Where decoding looks up the last encryption counter accepted from a device. The
/// caller owns the store and persists it; decoding only reads it.
pub trait CounterStore {
    fn last_counter(&self, address: &Address) -> Option<u32>;
}

/// No counters known (first start, or tests).
impl CounterStore for () {
    fn last_counter(&self, _: &Address) -> Option<u32> {
        None
    }
}

/// A plain map works as a store.
impl CounterStore for BTreeMap<Address, u32> {
    fn last_counter(&self, address: &Address) -> Option<u32> {
        self.get(address).copied()
    }
}

impl CounterStore for std::collections::HashMap<Address, u32> {
    fn last_counter(&self, address: &Address) -> Option<u32> {
        self.get(address).copied()
    }
}

/// An in-memory counter store: load it from the database at start, [`Counters::accept`]
/// each report once it is stored, write [`Counters::iter`] (or just the changed entry) back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    last: BTreeMap<Address, u32>,
}

impl Counters {
    pub fn new() -> Counters {
        Counters::default()
    }

    /// Records the counter of an accepted encrypted BTHome report; returns the
    /// `(address, counter)` to persist, or `None` when the report carries no counter.
    pub fn accept(&mut self, report: &Report) -> Option<(Address, u32)> {
        let counter = report.meta.counter?;
        let address = report.meta.device_address?;
        self.record(address, counter);
        Some((address, counter))
    }

    /// Records `counter` as the last accepted from `address` (never moves backwards).
    pub fn record(&mut self, address: Address, counter: u32) {
        let last = self.last.entry(address).or_insert(counter);
        *last = (*last).max(counter);
    }

    /// Forgets the device's counter, so its next authentic advertisement is accepted
    /// whatever its counter (a device whose counter restarted).
    pub fn reset(&mut self, address: &Address) {
        self.last.remove(address);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Address, &u32)> {
        self.last.iter()
    }
}

impl CounterStore for Counters {
    fn last_counter(&self, address: &Address) -> Option<u32> {
        self.last.get(address).copied()
    }
}

impl FromIterator<(Address, u32)> for Counters {
    fn from_iter<I: IntoIterator<Item = (Address, u32)>>(iter: I) -> Counters {
        Counters {
            last: iter.into_iter().collect(),
        }
    }
}

/// What decoding needs besides the advertisement: keys and last counters.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub keys: &'a Keys,
    pub counters: &'a dyn CounterStore,
}

static NO_KEYS: Keys = Keys::new();

impl Context<'static> {
    /// No keys, no counters: plaintext only (encrypted BTHome is [`Error::MissingKey`]).
    pub fn none() -> Context<'static> {
        Context {
            keys: &NO_KEYS,
            counters: &(),
        }
    }
}

impl<'a> Context<'a> {
    pub fn new(keys: &'a Keys, counters: &'a dyn CounterStore) -> Context<'a> {
        Context { keys, counters }
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The 13-byte nonce: device MAC (display order) | UUID 0xFCD2 (LE) | device info | counter (LE).
pub fn nonce(mac: &Address, device_info: u8, counter: u32) -> [u8; 13] {
    let mut n = [0u8; 13];
    n[..6].copy_from_slice(mac);
    n[6..8].copy_from_slice(&UUID_LE);
    n[8] = device_info;
    n[9..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// Decrypts `ciphertext` and checks its MIC; [`Error::BadMic`] when it does not verify.
pub fn decrypt(
    key: &BindKey,
    mac: &Address,
    device_info: u8,
    counter: u32,
    ciphertext: &[u8],
    mic: &[u8; 4],
) -> Result<Vec<u8>> {
    let cipher = BtHomeCcm::new(GenericArray::from_slice(&key.0));
    let nonce = nonce(mac, device_info, counter);
    let mut buf = ciphertext.to_vec();
    cipher
        .decrypt_in_place_detached(
            GenericArray::from_slice(&nonce),
            &[],
            &mut buf,
            GenericArray::from_slice(mic),
        )
        .map_err(|_| Error::BadMic)?;
    Ok(buf)
}

/// Encrypts `plaintext`; returns `ciphertext | counter (LE) | MIC`, what follows the
/// device-info byte (and the MAC, if included) in the service data. For the emulator and tests.
pub fn encrypt(
    key: &BindKey,
    mac: &Address,
    device_info: u8,
    counter: u32,
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = BtHomeCcm::new(GenericArray::from_slice(&key.0));
    let nonce = nonce(mac, device_info, counter);
    let mut buf = plaintext.to_vec();
    // Encryption only fails for messages longer than CCM's length field allows (2^64).
    let tag = cipher
        .encrypt_in_place_detached(GenericArray::from_slice(&nonce), &[], &mut buf)
        .unwrap_or_default();
    buf.extend_from_slice(&counter.to_le_bytes());
    buf.extend_from_slice(&tag);
    buf
}

/// Checks a verified counter against the last accepted one.
pub(crate) fn check_counter(
    counters: &dyn CounterStore,
    address: &Address,
    counter: u32,
) -> Result<()> {
    match counters.last_counter(address) {
        Some(last) if counter <= last => Err(Error::Replayed { counter, last }),
        _ => Ok(()),
    }
}

/// Downgrade protection: plaintext from an address that has a key is refused.
pub(crate) fn check_plaintext_allowed(keys: &Keys, addresses: &[&Address]) -> Result<()> {
    match addresses.iter().find(|a| keys.contains(a)) {
        Some(a) => Err(Error::PlaintextRefused(**a)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::to_hex;

    /// The encryption example of the BTHome spec (bthome.io, `encryption.html`).
    #[test]
    fn spec_encryption_example() {
        let key = BindKey::from_hex("231d39c1d7cc1ab1aee224cd096db932").unwrap();
        let mac = [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5];
        assert_eq!(
            to_hex(&nonce(&mac, 0x41, 0x0011_2233)),
            "5448e68f80a5d2fc4133221100"
        );
        let sealed = encrypt(
            &key,
            &mac,
            0x41,
            0x0011_2233,
            &[0x02, 0xCA, 0x09, 0x03, 0xBF, 0x13],
        );
        assert_eq!(to_hex(&sealed), "e445f3c9962b332211006c7c4519");
        let plain = decrypt(
            &key,
            &mac,
            0x41,
            0x0011_2233,
            &sealed[..6],
            &[0x6C, 0x7C, 0x45, 0x19],
        )
        .unwrap();
        assert_eq!(to_hex(&plain), "02ca0903bf13");
        // One bit off in the MIC, the counter or the device info: refused.
        assert_eq!(
            decrypt(
                &key,
                &mac,
                0x41,
                0x0011_2233,
                &sealed[..6],
                &[0x6C, 0x7C, 0x45, 0x18]
            ),
            Err(Error::BadMic)
        );
        assert_eq!(
            decrypt(
                &key,
                &mac,
                0x41,
                0x0011_2234,
                &sealed[..6],
                &[0x6C, 0x7C, 0x45, 0x19]
            ),
            Err(Error::BadMic)
        );
        assert_eq!(
            decrypt(
                &key,
                &mac,
                0x45,
                0x0011_2233,
                &sealed[..6],
                &[0x6C, 0x7C, 0x45, 0x19]
            ),
            Err(Error::BadMic)
        );
    }

    #[test]
    fn keys_are_not_printed_and_must_be_16_bytes() {
        let key = BindKey::from_hex("231d39c1d7cc1ab1aee224cd096db932").unwrap();
        assert!(!format!("{key:?}").contains("231d"));
        assert!(matches!(BindKey::from_hex("231d"), Err(Error::BadKey(_))));
        assert!(matches!(BindKey::from_hex("zz"), Err(Error::BadKey(_))));
    }

    #[test]
    fn counters_only_move_forward() {
        let mut c = Counters::new();
        let a = [1, 2, 3, 4, 5, 6];
        assert_eq!(check_counter(&c, &a, 0), Ok(()));
        c.record(a, 10);
        c.record(a, 5);
        assert_eq!(c.last_counter(&a), Some(10));
        assert_eq!(
            check_counter(&c, &a, 10),
            Err(Error::Replayed {
                counter: 10,
                last: 10
            })
        );
        assert!(check_counter(&c, &a, 10).unwrap_err().is_repeat());
        assert!(!check_counter(&c, &a, 9).unwrap_err().is_repeat());
        assert_eq!(check_counter(&c, &a, 11), Ok(()));
        c.reset(&a);
        assert_eq!(check_counter(&c, &a, 0), Ok(()));
    }
}
