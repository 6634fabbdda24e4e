//! `POST /v1/devices/{id}/adopt`: a technician adopts a discovered (`pending`) device,
//! optionally with its BTHome bindkey (`{"bindkey": "<32 hex digits>"}`; no body or `{}`
//! for a device without one). The key travels only in this body; the hub seals it as the
//! device's credential, audits the adoption (never the key) and provisions the radios.
//! The answer never holds the key.
//!
//! `POST /v1/devices/{id}/bindkey` (`{"bindkey": "..."}`) rotates the key of an adopted
//! device: the new one replaces the old (sealed, audited as `device.bindkey.rotate`,
//! never the key), the radios drop the old key and start the device's counter afresh.

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path as UrlPath, State};
use axum::Json;
use serde::Deserialize;

use super::{device_id, parse_json, ApiResult, ApiState, PeerCred};
use crate::secrets::Secret;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AdoptBody {
    #[serde(default)]
    bindkey: Option<String>,
}

impl Drop for AdoptBody {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(k) = &mut self.bindkey {
            k.zeroize();
        }
    }
}

pub(super) async fn adopt_device(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(raw): UrlPath<String>,
    body: Bytes,
) -> ApiResult<crate::hub::Adopted> {
    let id = device_id(&s, &raw).await?;
    let mut b: AdoptBody = if body.iter().all(u8::is_ascii_whitespace) {
        AdoptBody::default()
    } else {
        parse_json(&body)?
    };
    let bindkey = b
        .bindkey
        .take()
        .map(zeroize::Zeroizing::new)
        .map(|k| Secret::new(k.trim().to_ascii_lowercase().into_bytes()));
    Ok(Json(s.hub.adopt(id, bindkey, peer.actor()).await?))
}

pub(super) async fn rotate_bindkey(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(raw): UrlPath<String>,
    body: Bytes,
) -> ApiResult<crate::hub::InstallCodeAdded> {
    let id = device_id(&s, &raw).await?;
    let mut b: AdoptBody = parse_json(&body)?;
    let Some(key) = b.bindkey.take().map(zeroize::Zeroizing::new) else {
        return Err(super::ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request",
            "give the new key: {\"bindkey\": \"<32 hex digits>\"}",
        ));
    };
    let secret = Secret::new(key.trim().to_ascii_lowercase().into_bytes());
    Ok(Json(
        s.hub
            .add_credential(
                id,
                crate::model::CredentialKind::BthomeBindkey,
                secret,
                peer.actor(),
            )
            .await?,
    ))
}
