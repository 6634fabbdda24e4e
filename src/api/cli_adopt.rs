//! `fieldgate adopt ID [--bindkey HEX|-]`: adopt a discovered device. The bindkey goes
//! only into the request body (`-` reads it from standard input, keeping it out of the
//! shell history and the process list); it is never printed.

use anyhow::{Context, Result};
use hyper::Method;
use serde_json::{json, Value};

use super::client::{segment, ApiClient};

/// The key as given: `-` reads it from standard input.
fn read_key(bindkey: Option<&str>) -> Result<Option<zeroize::Zeroizing<String>>> {
    Ok(match bindkey {
        None => None,
        Some("-") => {
            let mut text = zeroize::Zeroizing::new(String::new());
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read the bindkey from standard input")?;
            Some(zeroize::Zeroizing::new(text.trim().to_string()))
        }
        Some(k) => Some(zeroize::Zeroizing::new(k.to_string())),
    })
}

/// `fieldgate rotate-bindkey ID --bindkey HEX|-`: replaces an adopted device's key.
pub async fn rotate_bindkey(api: &ApiClient, id: &str, bindkey: &str, as_json: bool) -> Result<()> {
    let key = read_key(Some(bindkey))?.unwrap_or_default();
    let v = api
        .call(
            Method::POST,
            &format!("/v1/devices/{}/bindkey", segment("the device id", id)?),
            Some(json!({"bindkey": key.as_str()})),
        )
        .await?;
    if as_json {
        crate::outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    crate::outln!(
        "{}: bindkey {} (stored encrypted); the old key no longer opens its advertisements",
        text(&v["device"]),
        if v["replaced"] == true {
            "rotated"
        } else {
            "set"
        }
    );
    print_radios(&v["coordinators"]);
    Ok(())
}

pub async fn adopt(api: &ApiClient, id: &str, bindkey: Option<&str>, as_json: bool) -> Result<()> {
    let key = read_key(bindkey)?;
    let body = match &key {
        Some(k) => json!({"bindkey": k.as_str()}),
        None => json!({}),
    };
    let v = api
        .call(
            Method::POST,
            &format!("/v1/devices/{}/adopt", segment("the device id", id)?),
            Some(body),
        )
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
    print_radios(&v["radios"]);
    Ok(())
}

/// One line per radio that took the key: `ok`, or `not yet` with the radio's detail.
fn print_radios(radios: &Value) {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    for r in radios.as_array().into_iter().flatten() {
        let mark = if r["ok"].as_bool() == Some(true) {
            "ok"
        } else {
            "not yet"
        };
        crate::outln!("  {}: {mark} — {}", text(&r["radio"]), text(&r["detail"]));
    }
}
