//! `fieldgate radio backup` and `fieldgate radio restore`: a radio's network to files the
//! technician keeps (mode 0600: they hold the network keys) and back onto the radio.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use hyper::Method;
use serde_json::Value;

use super::client::{segment, ApiClient};

/// `fieldgate radio backup NAME [--out FILE]`: the radio's network as
/// open-coordinator-backup JSON, printed or written to a new file with mode 0600 (it holds
/// the network key).
pub async fn radio_backup(api: &ApiClient, radio: &str, out: Option<&Path>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let v = api
        .call(
            Method::GET,
            &format!("/v1/radios/{}/backup", segment("the radio name", radio)?),
            None,
        )
        .await?;
    let text = zeroize::Zeroizing::new(format!("{}\n", serde_json::to_string_pretty(&v)?));
    let Some(out) = out else {
        crate::out!("{}", *text);
        return Ok(());
    };
    if let Some(image) = v.pointer("/nvm/hex").and_then(Value::as_str) {
        return write_image_backup(radio, out, image, &v);
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| {
            format!(
                "cannot create {} (an existing file is never overwritten)",
                out.display()
            )
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "backup of radio {radio} written to {} (mode 0600; it contains the network key)",
        out.display()
    );
    Ok(())
}

/// `fieldgate radio restore NAME --in FILE --yes`: the backup `radio backup --out FILE`
/// wrote, sent back to the radio. An image file is joined with its description
/// (`FILE.json`) into the document the radio exported; a JSON file is sent as it is.
pub async fn radio_restore(
    api: &ApiClient,
    radio: &str,
    input: &Path,
    yes: bool,
    json: bool,
) -> Result<()> {
    let document = restore_document(input)?;
    if !yes {
        return Err(anyhow!(
            "restoring replaces radio {radio}'s network with the one in {} (format {}): add --yes to go ahead",
            input.display(),
            document["format"]
                .as_str()
                .or_else(|| document["metadata"]["format"].as_str())
                .unwrap_or("unknown")
        ));
    }
    eprintln!("restoring radio {radio} from {} ...", input.display());
    let v = api
        .call(
            Method::POST,
            &format!("/v1/radios/{}/restore", segment("the radio name", radio)?),
            Some(document),
        )
        .await?;
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        crate::outln!(
            "radio {radio} restored ({} bytes); it restarts with the restored network",
            v["bytes"]
        );
    }
    Ok(())
}

/// The backup document in `input`: JSON as it is, or an image with its `.json` description.
fn restore_document(input: &Path) -> Result<Value> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?,
    );
    if let Ok(doc) = serde_json::from_slice::<Value>(&bytes) {
        if doc.is_object() {
            return Ok(doc);
        }
    }
    let sidecar_path = {
        let mut p = input.as_os_str().to_owned();
        p.push(".json");
        std::path::PathBuf::from(p)
    };
    let text = std::fs::read(&sidecar_path).with_context(|| {
        format!(
            "{} is an image: its description {} is needed next to it",
            input.display(),
            sidecar_path.display()
        )
    })?;
    let mut doc: Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not JSON", sidecar_path.display()))?;
    let nvm = doc
        .get_mut("nvm")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("{} describes no image (`nvm`)", sidecar_path.display()))?;
    nvm.remove("image");
    nvm.insert("hex".into(), Value::String(hex::encode(&*bytes)));
    Ok(doc)
}

/// A backup that is a controller's memory image (Z-Wave NVM): the image itself to `out` and
/// what describes it (home id, nodes, controller and chip family) to `<out>.json`, both new
/// files with mode 0600 (the image holds the network keys).
fn write_image_backup(radio: &str, out: &Path, image_hex: &str, doc: &Value) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let image = zeroize::Zeroizing::new(
        hex::decode(image_hex).context("the radio sent a backup image that is not hex")?,
    );
    let mut sidecar = doc.clone();
    if let Some(nvm) = sidecar.get_mut("nvm").and_then(Value::as_object_mut) {
        nvm.remove("hex");
        nvm.insert(
            "image".into(),
            Value::String(
                out.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        );
    }
    let sidecar_path = {
        let mut p = out.as_os_str().to_owned();
        p.push(".json");
        std::path::PathBuf::from(p)
    };
    if sidecar_path.exists() {
        return Err(anyhow!(
            "{} exists (an existing file is never overwritten)",
            sidecar_path.display()
        ));
    }
    for (path, bytes) in [
        (out, image.to_vec()),
        (
            sidecar_path.as_path(),
            format!("{}\n", serde_json::to_string_pretty(&sidecar)?).into_bytes(),
        ),
    ] {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot create {} (an existing file is never overwritten)",
                    path.display()
                )
            })?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "backup of radio {radio}: image ({} bytes) in {}, its description in {} (mode 0600; the image contains the network keys)",
        image.len(),
        out.display(),
        sidecar_path.display()
    );
    Ok(())
}
