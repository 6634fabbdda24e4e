//! `fieldgate remove ID --block`: decommission and denylist in one step.

use anyhow::Result;
use hyper::Method;
use serde_json::Value;

use super::client::{segment, ApiClient};

pub async fn remove_and_block(api: &ApiClient, id: &str, as_json: bool) -> Result<()> {
    let v = api
        .call(
            Method::POST,
            &format!("/v1/devices/{}/block", segment("the device id", id)?),
            None,
        )
        .await?;
    if as_json {
        crate::outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let d = &v["decommissioned"];
    if d.is_object() {
        crate::outln!(
            "{} decommissioned and blocked: {} credential(s) destroyed; radio: {}",
            text(&v["device"]),
            d["credentials_destroyed"].as_u64().unwrap_or(0),
            text(&d["radio_removal"])
        );
        super::cli::say_device_action(d);
    } else {
        crate::outln!(
            "{} blocked ({}): refused whenever it tries to join, until `fieldgate readmit {}`",
            text(&v["device"]),
            if v["known"].as_bool() == Some(true) {
                "already decommissioned"
            } else {
                "not seen here yet"
            },
            text(&v["device"])
        );
    }
    Ok(())
}
