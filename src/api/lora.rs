//! `POST /v1/lora/devices`: a technician gives the gateway a LoRaWAN device's keys, OTAA
//! (JoinEUI + AppKey) or ABP (DevAddr + NwkSKey + AppSKey). The keys travel only in this
//! body; they are validated (`radio::lora::keys`), sealed by the hub as the device's
//! credential (audited, never the keys) and handed to the LoRa radios. Sending keys again
//! replaces them (a key rotation for the device).

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{parse_json, ApiError, ApiResult, ApiState, PeerCred};
use crate::radio::lora::keys::{credential, KeyFields};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoraDeviceBody {
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

pub(super) async fn add_lora_device(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    body: Bytes,
) -> ApiResult<crate::hub::InstallCodeAdded> {
    let b: LoraDeviceBody = parse_json(&body)?;
    let (id, kind, secret) = credential(&KeyFields {
        dev_eui: &b.dev_eui,
        join_eui: b.join_eui.as_deref(),
        app_key: b.app_key.as_deref(),
        dev_addr: b.dev_addr.as_deref(),
        nwk_s_key: b.nwk_s_key.as_deref(),
        app_s_key: b.app_s_key.as_deref(),
        decoder: b.decoder.as_deref(),
    })
    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message))?;
    Ok(Json(
        s.hub.add_credential(id, kind, secret, peer.actor()).await?,
    ))
}
