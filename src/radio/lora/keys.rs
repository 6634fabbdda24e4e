//! A LoRaWAN device's keys as a technician or the cloud gives them (hex text), checked and
//! turned into the device id and the credential the LoRa radios take. Shared by the local
//! API and the MQTT request; no error ever repeats a key.

use super::options::Decoder;
use super::sessions::{AbpCredential, OtaaCredential};
use crate::config::Protocol;
use crate::model::{CredentialKind, DeviceId};
use crate::secrets::Secret;
use fieldgate_lora::types::hex_encode;
use fieldgate_lora::{AesKey, DevAddr, Eui64};

/// The key fields of a request, as text.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyFields<'a> {
    pub dev_eui: &'a str,
    pub join_eui: Option<&'a str>,
    pub app_key: Option<&'a str>,
    pub dev_addr: Option<&'a str>,
    pub nwk_s_key: Option<&'a str>,
    pub app_s_key: Option<&'a str>,
    pub decoder: Option<&'a str>,
}

/// Why the fields are not a key set: a stable code and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub code: &'static str,
    pub message: String,
}

fn hex_field<T: std::str::FromStr>(name: &str, v: &str, digits: usize) -> Result<T, KeyError> {
    v.parse::<T>().map_err(|_| KeyError {
        code: if name == "dev_eui" {
            "bad_device_id"
        } else {
            "invalid_lorawan_key"
        },
        message: format!("`{name}` must be {digits} hex digits"),
    })
}

/// The device (`lora:<DevEUI>`), the credential kind (OTAA or ABP) and its sealed-to-be
/// document.
pub fn credential(f: &KeyFields<'_>) -> Result<(DeviceId, CredentialKind, Secret), KeyError> {
    let raw = f.dev_eui.strip_prefix("lora:").unwrap_or(f.dev_eui);
    let eui: Eui64 = hex_field("dev_eui", raw, 16)?;
    let id = DeviceId::new(Protocol::Lora, &eui.to_string());
    let decoder = match f.decoder {
        None => None,
        Some(d) => Some(Decoder::parse(d).ok_or_else(|| KeyError {
            code: "invalid_decoder",
            message: "`decoder` must be \"lpp\" or \"raw\"".into(),
        })?),
    };
    let json = match (
        (f.join_eui, f.app_key),
        (f.dev_addr, f.nwk_s_key, f.app_s_key),
    ) {
        ((Some(join_eui), Some(app_key)), (None, None, None)) => {
            let je: Eui64 = hex_field("join_eui", join_eui, 16)?;
            let k: AesKey = hex_field("app_key", app_key, 32)?;
            let c = OtaaCredential {
                join_eui: je.to_string(),
                app_key: hex_encode(k.as_bytes()),
                decoder,
            };
            serde_json::to_vec(&c).map(|j| (CredentialKind::LorawanOtaa, j))
        }
        ((None, None), (Some(addr), Some(nwk), Some(app))) => {
            let a: DevAddr = hex_field("dev_addr", addr, 8)?;
            let n: AesKey = hex_field("nwk_s_key", nwk, 32)?;
            let s: AesKey = hex_field("app_s_key", app, 32)?;
            let c = AbpCredential {
                dev_addr: a.to_string(),
                nwk_s_key: hex_encode(n.as_bytes()),
                app_s_key: hex_encode(s.as_bytes()),
                decoder,
            };
            serde_json::to_vec(&c).map(|j| (CredentialKind::LorawanAbp, j))
        }
        _ => {
            return Err(KeyError {
                code: "invalid_lorawan_keys",
                message: "give either `join_eui` and `app_key` (OTAA) or `dev_addr`, `nwk_s_key` and `app_s_key` (ABP)".into(),
            })
        }
    };
    let (kind, json) = json.map_err(|e| KeyError {
        code: "invalid_lorawan_keys",
        message: e.to_string(),
    })?;
    Ok((id, kind, Secret::new(json)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otaa_or_abp_keys_are_validated_and_never_echoed() {
        let (id, kind, secret) = credential(&KeyFields {
            dev_eui: "70B3D57ED0000001",
            join_eui: Some("70b3d57ed0000000"),
            app_key: Some("2b7e151628aed2a6abf7158809cf4f3c"),
            ..KeyFields::default()
        })
        .unwrap();
        assert_eq!(id.as_str(), "lora:70b3d57ed0000001");
        assert_eq!(kind, CredentialKind::LorawanOtaa);
        let c: OtaaCredential = serde_json::from_slice(secret.expose()).unwrap();
        assert_eq!(c.app_key, "2b7e151628aed2a6abf7158809cf4f3c");
        let (_, kind, _) = credential(&KeyFields {
            dev_eui: "lora:70b3d57ed0000002",
            dev_addr: Some("26011bda"),
            nwk_s_key: Some("44024241ed4ce9a68c6a8bc055233fd3"),
            app_s_key: Some("ec925802ae430ca77fd3dd73cb2cc588"),
            decoder: Some("raw"),
            ..KeyFields::default()
        })
        .unwrap();
        assert_eq!(kind, CredentialKind::LorawanAbp);
        let secret_key = "2b7e151628aed2a6abf7158809cf4fzz";
        let e = credential(&KeyFields {
            dev_eui: "70b3d57ed0000001",
            join_eui: Some("70b3d57ed0000000"),
            app_key: Some(secret_key),
            ..KeyFields::default()
        })
        .unwrap_err();
        assert_eq!(e.code, "invalid_lorawan_key");
        assert!(!e.message.contains(secret_key));
        let mixed = credential(&KeyFields {
            dev_eui: "70b3d57ed0000001",
            join_eui: Some("70b3d57ed0000000"),
            dev_addr: Some("26011bda"),
            ..KeyFields::default()
        })
        .unwrap_err();
        assert_eq!(mixed.code, "invalid_lorawan_keys");
        let bad_id = credential(&KeyFields {
            dev_eui: "zigbee:0x1",
            ..KeyFields::default()
        })
        .unwrap_err();
        assert_eq!(bad_id.code, "bad_device_id");
    }
}
