//! The driver's BTHome security state: bindkeys by device address and the last accepted
//! encryption counter of each device (replay protection that survives restarts).
//!
//! Bindkeys are device credentials (`bthome_bindkey`, owner `ble:<address>`), kept
//! sealed by the store and handed over at start and by `ProvisionCredential`. Counters are
//! kept sealed too, as one document per radio (`radio:<name>`, kind `bthome_counters`):
//! not secret, but sealing makes a tampered file refuse to open rather than reopen a
//! replay window. Never logs a key.

use std::collections::BTreeMap;

use fieldgate_ble::{format_address, parse_address, Address, BindKey, Counters, Keys};

use crate::model::CredentialKind;
use crate::radio::SecretSink;
use crate::secrets::Secret;

/// The credential kind under which the counters document is kept.
pub const COUNTERS_KIND: &str = "bthome_counters";

#[derive(Debug, Default)]
pub struct SecurityState {
    pub keys: Keys,
    pub counters: Counters,
}

/// A bindkey as a credential holds it: 16 bytes, or the 32 hex digits a technician typed.
pub fn bindkey_from_secret(secret: &Secret) -> Option<BindKey> {
    let bytes = secret.expose();
    if let Ok(raw) = <[u8; 16]>::try_from(bytes) {
        return Some(BindKey::from_bytes(raw));
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| BindKey::from_hex(s).ok())
}

/// The device address of a credential owner `ble:aa:bb:cc:dd:ee:ff`.
pub fn address_of_owner(owner: &str) -> Option<Address> {
    owner.strip_prefix("ble:").and_then(parse_address)
}

impl SecurityState {
    /// Loads every stored bindkey and this radio's counters. Keys that no longer open
    /// (another master key) are skipped and logged by count only.
    pub async fn load(sink: &SecretSink, radio: &str) -> anyhow::Result<SecurityState> {
        let mut state = SecurityState::default();
        let (keys, unreadable) = sink
            .all_of_kind(CredentialKind::BthomeBindkey.as_str())
            .await?;
        if unreadable > 0 {
            tracing::warn!(
                radio,
                unreadable,
                "some BTHome bindkeys no longer open with the master key"
            );
        }
        for (owner, secret) in keys {
            match (address_of_owner(&owner), bindkey_from_secret(&secret)) {
                (Some(address), Some(key)) => {
                    state.keys.insert(address, key);
                }
                _ => tracing::warn!(radio, owner, "stored BTHome bindkey is not usable"),
            }
        }
        let own = SecretSink::owner(radio);
        let (docs, _) = sink.all_of_kind(COUNTERS_KIND).await?;
        if let Some((_, doc)) = docs.into_iter().find(|(o, _)| *o == own) {
            let map: BTreeMap<String, u32> =
                serde_json::from_slice(doc.expose()).unwrap_or_default();
            state.counters = map
                .iter()
                .filter_map(|(a, c)| Some((parse_address(a)?, *c)))
                .collect();
        }
        Ok(state)
    }

    /// Writes the counters back (after an accepted encrypted advertisement).
    pub async fn save_counters(&self, sink: &SecretSink, radio: &str) -> anyhow::Result<()> {
        let map: BTreeMap<String, u32> = self
            .counters
            .iter()
            .map(|(a, c)| (format_address(a), *c))
            .collect();
        let doc = serde_json::to_vec(&map)?;
        sink.keep(radio, COUNTERS_KIND, Secret::new(doc)).await?;
        Ok(())
    }

    /// A bindkey for `address` (new or replacing one). A new key starts a new security
    /// association: the device's counter starts over (a re-flashed device restarts it).
    pub fn set_key(&mut self, address: Address, key: BindKey) {
        if self.keys.get(&address) != Some(&key) {
            self.counters.reset(&address);
        }
        self.keys.insert(address, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindkeys_from_raw_bytes_or_hex() {
        let hex = "231d39c1d7cc1ab1aee224cd096db932";
        let from_hex = bindkey_from_secret(&Secret::new(hex.as_bytes().to_vec())).unwrap();
        let raw = bindkey_from_secret(&Secret::new(from_hex.as_bytes().to_vec())).unwrap();
        assert_eq!(from_hex, raw);
        assert!(bindkey_from_secret(&Secret::new(b"short".to_vec())).is_none());
        assert_eq!(
            address_of_owner("ble:54:48:e6:8f:80:a5"),
            Some([0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5])
        );
        assert_eq!(address_of_owner("zigbee:0x1"), None);
    }

    #[test]
    fn a_new_key_starts_the_counter_over() {
        let mut s = SecurityState::default();
        let a = [1; 6];
        s.set_key(a, BindKey::from_bytes([1; 16]));
        s.counters.record(a, 500);
        s.set_key(a, BindKey::from_bytes([1; 16]));
        assert_eq!(
            fieldgate_ble::CounterStore::last_counter(&s.counters, &a),
            Some(500)
        );
        s.set_key(a, BindKey::from_bytes([2; 16]));
        assert_eq!(
            fieldgate_ble::CounterStore::last_counter(&s.counters, &a),
            None
        );
    }
}
