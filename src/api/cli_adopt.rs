//! `fieldgate adopt ID [--bindkey HEX|-]`: adopt a discovered device. The bindkey goes
//! only into the request body (`-` reads it from standard input, keeping it out of the
//! shell history and the process list); it is never printed.

use anyhow::{Context, Result};
use hyper::Method;
use serde_json::{json, Value};

use super::client::ApiClient;

pub async fn adopt(api: &ApiClient, id: &str, bindkey: Option<&str>, as_json: bool) -> Result<()> {
    let key = match bindkey {
        None => None,
        Some("-") => {
            let mut text = zeroize::Zeroizing::new(String::new());
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read the bindkey from standard input")?;
            Some(zeroize::Zeroizing::new(text.trim().to_string()))
        }
        Some(k) => Some(zeroize::Zeroizing::new(k.to_string())),
    };
    let body = match &key {
        Some(k) => json!({"bindkey": k.as_str()}),
        None => json!({}),
    };
    let v = api
        .call(Method::POST, &format!("/v1/devices/{id}/adopt"), Some(body))
        .await?;
    if as_json {
        crate::outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    crate::outln!(
        "{} adopted ({}): its readings now go upstream; bindkey: {}",
        text(&v["device"]),
        text(&v["lifecycle"]),
        text(&v["bindkey"])
    );
    for r in v["radios"].as_array().cloned().unwrap_or_default() {
        let mark = if r["ok"].as_bool() == Some(true) {
            "ok"
        } else {
            "not yet"
        };
        crate::outln!("  {}: {mark} — {}", text(&r["radio"]), text(&r["detail"]));
    }
    Ok(())
}
