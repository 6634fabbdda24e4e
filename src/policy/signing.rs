//! Policy signatures: ed25519 over the canonical JSON of the document. Parses the
//! envelope a policy arrives in, checks it against a pinned key before the policy is
//! accepted, and signs documents for `fieldgate policy sign`. It never holds a
//! private key beyond the call that signs.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{err, Policy, PolicyError};
use crate::store::audit::canonical_json;

impl Policy {
    /// Canonical bytes that a signature covers: sorted keys, no whitespace.
    pub fn canonical_bytes(document: &serde_json::Value) -> Vec<u8> {
        canonical_json(document).into_bytes()
    }
}
/// A policy as received: the document, and a signature if the sender signed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPolicy {
    pub policy: serde_json::Value,
    /// Hex ed25519 signature over the canonical JSON of `policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Accepts either a bare policy document or `{"policy": ..., "signature": ...}`.
pub fn parse_envelope(bytes: &[u8]) -> Result<SignedPolicy, PolicyError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| err("$", format!("not JSON: {e}")))?;
    // serde keeps the last of two equal keys: what is signed, shown and applied must be
    // one reading of the document, so a key given twice is refused (as MQTT does).
    if let Some(key) = std::str::from_utf8(bytes)
        .ok()
        .and_then(crate::upstream::requests::duplicate_key)
    {
        let key: String = key.chars().take(32).collect();
        return Err(err(
            "$",
            format!("the key `{key}` appears more than once in one object"),
        ));
    }
    if v.get("policy").is_some() {
        serde_json::from_value(v)
            .map_err(|e| err("$", format!("not a signed policy envelope: {e}")))
    } else {
        Ok(SignedPolicy {
            policy: v,
            signature: None,
        })
    }
}

/// Parses a hex ed25519 public key (64 hex characters).
pub fn parse_public_key(hex_text: &str) -> Result<VerifyingKey, PolicyError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_text.trim(), &mut bytes)
        .map_err(|_| err("key", "not 64 hex characters"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| err("key", "not an ed25519 public key"))
}

/// Validates an envelope against an optional pinned key; returns the policy.
pub fn accept(
    envelope: &SignedPolicy,
    pinned: Option<&VerifyingKey>,
) -> Result<Policy, PolicyError> {
    // A signature is always well-formed, checked or not: garbage there is refused
    // rather than kept as if it were one.
    let signature = match envelope.signature.as_deref() {
        Some(sig_hex) => {
            let mut sig = [0u8; 64];
            hex::decode_to_slice(sig_hex.trim(), &mut sig)
                .map_err(|_| err("$.signature", "not 128 hex characters"))?;
            Some(sig)
        }
        None => None,
    };
    if let Some(key) = pinned {
        let sig = signature.ok_or_else(|| {
            err(
                "$.signature",
                "a signature is required: this gateway pins a policy key",
            )
        })?;
        key.verify(
            &Policy::canonical_bytes(&envelope.policy),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| err("$.signature", "does not verify with the pinned key"))?;
    }
    let text = serde_json::to_vec(&envelope.policy).map_err(|e| err("$", e.to_string()))?;
    Policy::parse(&text)
}

/// Signs a policy document with a 32-byte ed25519 seed (for `fieldgate policy sign`).
pub fn sign(document: &serde_json::Value, seed: &[u8; 32]) -> SignedPolicy {
    let key = SigningKey::from_bytes(seed);
    let sig = key.sign(&Policy::canonical_bytes(document));
    SignedPolicy {
        policy: document.clone(),
        signature: Some(hex::encode(sig.to_bytes())),
    }
}

pub fn public_key_hex(seed: &[u8; 32]) -> String {
    hex::encode(SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_given_twice_is_refused_wherever_it_is() {
        for doc in [
            r#"{"version": 2, "version": 3}"#,
            r#"{"policy": {"version": 2, "admission": {"mode": "open", "mode": "allowlist"}}, "signature": "00"}"#,
            r#"{"policy": {"version": 2}, "policy": {"version": 3}}"#,
        ] {
            let e = parse_envelope(doc.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("more than once"), "{doc}: {e}");
        }
        assert!(parse_envelope(br#"{"version": 2}"#).is_ok());
    }

    #[test]
    fn signatures_are_checked_against_the_pinned_key() {
        let seed = [42u8; 32];
        let key = parse_public_key(&public_key_hex(&seed)).unwrap();
        let doc = json!({"version": 5, "admission": {"max_join_window_s": 120}});
        let signed = sign(&doc, &seed);
        assert_eq!(accept(&signed, Some(&key)).unwrap().version, 5);
        // Unsigned: refused when a key is pinned, fine when none is.
        let bare = SignedPolicy {
            policy: doc.clone(),
            signature: None,
        };
        assert!(accept(&bare, Some(&key))
            .unwrap_err()
            .to_string()
            .contains("signature is required"));
        assert!(accept(&bare, None).is_ok());
        // With no key pinned a signature is not checked, but it must be one.
        assert!(accept(&signed, None).is_ok());
        for garbage in ["zz", "", "not a signature at all!", &"ab".repeat(63)] {
            let env = SignedPolicy {
                policy: doc.clone(),
                signature: Some(garbage.to_string()),
            };
            assert!(accept(&env, None).is_err(), "{garbage:?}");
        }
        // Tampered document or signature: refused.
        let mut tampered = signed.clone();
        tampered.policy["admission"]["max_join_window_s"] = json!(254);
        assert!(accept(&tampered, Some(&key))
            .unwrap_err()
            .to_string()
            .contains("does not verify"));
        let mut bad_sig = signed.clone();
        let mut s = bad_sig.signature.take().unwrap();
        s.replace_range(0..2, if &s[0..2] == "00" { "01" } else { "00" });
        bad_sig.signature = Some(s);
        assert!(accept(&bad_sig, Some(&key)).is_err());
        // Key order in the received JSON does not matter: the signature covers canonical JSON.
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{"admission": {"max_join_window_s": 120}, "version": 5}"#)
                .unwrap();
        let env = SignedPolicy {
            policy: reordered,
            signature: signed.signature.clone(),
        };
        assert!(accept(&env, Some(&key)).is_ok());
    }
}
