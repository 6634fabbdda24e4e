//! `POST /v1/lora/devices`: a technician gives the gateway a LoRaWAN device's keys, OTAA
//! (JoinEUI + AppKey) or ABP (DevAddr + NwkSKey + AppSKey). The keys travel only in this
//! body; they are validated here, sealed by the hub as the device's credential (audited,
//! never the keys) and handed to the LoRa radios. Sending keys again replaces them (a key
//! rotation for the device).

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{parse_json, ApiError, ApiResult, ApiState, PeerCred};
use crate::config::Protocol;
use crate::model::{CredentialKind, DeviceId};
use crate::radio::lora::{AbpCredential, Decoder, OtaaCredential};
use crate::secrets::Secret;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoraDeviceBody {
    dev_eui: String,
    #[serde(default)]
    join_eui: Option<String>,
    #[serde(default)]
    app_key: Option<String>,
    #[serde(default)]
    dev_addr: Option<String>,
    #[serde(default)]
    nwk_s_key: Option<String>,
    #[serde(default)]
    app_s_key: Option<String>,
    #[serde(default)]
    decoder: Option<String>,
}

impl Drop for LoraDeviceBody {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for k in [&mut self.app_key, &mut self.nwk_s_key, &mut self.app_s_key]
            .into_iter()
            .flatten()
        {
            k.zeroize();
        }
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn hex_field<T: std::str::FromStr>(name: &str, v: &str, digits: usize) -> Result<T, ApiError> {
    v.parse::<T>().map_err(|_| {
        bad(
            "invalid_lorawan_key",
            format!("`{name}` must be {digits} hex digits"),
        )
    })
}

/// The device id and the credential the body describes. Never puts a key in an error.
pub(super) fn credential(
    b: &LoraDeviceBody,
) -> Result<(DeviceId, CredentialKind, Secret), ApiError> {
    let raw = b.dev_eui.strip_prefix("lora:").unwrap_or(&b.dev_eui);
    let eui: fieldgate_lora::Eui64 = hex_field("dev_eui", raw, 16)?;
    let id = DeviceId::new(Protocol::Lora, &eui.to_string());
    let decoder = match &b.decoder {
        None => None,
        Some(d) => Some(
            Decoder::parse(d)
                .ok_or_else(|| bad("invalid_decoder", "`decoder` must be \"lpp\" or \"raw\""))?,
        ),
    };
    let otaa = (&b.join_eui, &b.app_key);
    let abp = (&b.dev_addr, &b.nwk_s_key, &b.app_s_key);
    let (kind, json) = match (otaa, abp) {
        ((Some(join_eui), Some(app_key)), (None, None, None)) => {
            let je: fieldgate_lora::Eui64 = hex_field("join_eui", join_eui, 16)?;
            let k: fieldgate_lora::AesKey = hex_field("app_key", app_key, 32)?;
            let c = OtaaCredential {
                join_eui: je.to_string(),
                app_key: fieldgate_lora::types::hex_encode(k.as_bytes()),
                decoder,
            };
            (CredentialKind::LorawanOtaa, serde_json::to_vec(&c))
        }
        ((None, None), (Some(addr), Some(nwk), Some(app))) => {
            let a: fieldgate_lora::DevAddr = hex_field("dev_addr", addr, 8)?;
            let n: fieldgate_lora::AesKey = hex_field("nwk_s_key", nwk, 32)?;
            let s: fieldgate_lora::AesKey = hex_field("app_s_key", app, 32)?;
            let c = AbpCredential {
                dev_addr: a.to_string(),
                nwk_s_key: fieldgate_lora::types::hex_encode(n.as_bytes()),
                app_s_key: fieldgate_lora::types::hex_encode(s.as_bytes()),
                decoder,
            };
            (CredentialKind::LorawanAbp, serde_json::to_vec(&c))
        }
        _ => {
            return Err(bad(
                "invalid_lorawan_keys",
                "give either `join_eui` and `app_key` (OTAA) or `dev_addr`, `nwk_s_key` and `app_s_key` (ABP)",
            ))
        }
    };
    let json = json.map_err(|e| bad("invalid_lorawan_keys", e.to_string()))?;
    Ok((id, kind, Secret::new(json)))
}

pub(super) async fn add_lora_device(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Bytes,
) -> ApiResult<crate::hub::InstallCodeAdded> {
    let b: LoraDeviceBody = parse_json(&body)?;
    let (id, kind, secret) = credential(&b)?;
    Ok(Json(
        s.hub.add_credential(id, kind, secret, peer.actor()).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> LoraDeviceBody {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn otaa_or_abp_keys_are_validated_and_never_echoed() {
        let (id, kind, secret) = credential(&body(
            r#"{"dev_eui":"70B3D57ED0000001","join_eui":"70b3d57ed0000000","app_key":"2b7e151628aed2a6abf7158809cf4f3c"}"#,
        ))
        .unwrap();
        assert_eq!(id.as_str(), "lora:70b3d57ed0000001");
        assert_eq!(kind, CredentialKind::LorawanOtaa);
        let c: OtaaCredential = serde_json::from_slice(secret.expose()).unwrap();
        assert_eq!(c.app_key, "2b7e151628aed2a6abf7158809cf4f3c");
        let (_, kind, _) = credential(&body(
            r#"{"dev_eui":"lora:70b3d57ed0000002","dev_addr":"26011bda","nwk_s_key":"44024241ed4ce9a68c6a8bc055233fd3","app_s_key":"ec925802ae430ca77fd3dd73cb2cc588","decoder":"raw"}"#,
        ))
        .unwrap();
        assert_eq!(kind, CredentialKind::LorawanAbp);
        let secret_key = "2b7e151628aed2a6abf7158809cf4fzz";
        let e = credential(&body(&format!(
            r#"{{"dev_eui":"70b3d57ed0000001","join_eui":"70b3d57ed0000000","app_key":"{secret_key}"}}"#
        )))
        .unwrap_err();
        assert_eq!(e.code, "invalid_lorawan_key");
        assert!(!e.message.contains(secret_key));
        let mixed = credential(&body(
            r#"{"dev_eui":"70b3d57ed0000001","join_eui":"70b3d57ed0000000","dev_addr":"26011bda"}"#,
        ))
        .unwrap_err();
        assert_eq!(mixed.code, "invalid_lorawan_keys");
    }
}
