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
    // The file is made before the radio is asked: an export is audited as the network
    // key leaving the gateway, so none is made for a file that cannot be written.
    let mut file = match out {
        Some(path) => {
            // A controller image comes with a description beside it (`FILE.json`).
            let mut sidecar = path.as_os_str().to_owned();
            sidecar.push(".json");
            if Path::new(&sidecar).exists() {
                return Err(anyhow!(
                    "{} exists (it would hold the backup's description; an existing file is never overwritten)",
                    Path::new(&sidecar).display()
                ));
            }
            Some(create_private(path)?)
        }
        None => None,
    };
    let answer = api
        .call(
            Method::GET,
            &format!("/v1/radios/{}/backup", segment("the radio name", radio)?),
            None,
        )
        .await;
    let v = match answer {
        Ok(v) => v,
        Err(e) => {
            if let Some(path) = out {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    let text = zeroize::Zeroizing::new(format!("{}\n", serde_json::to_string_pretty(&v)?));
    let (Some(out), Some(f)) = (out, file.as_mut()) else {
        crate::out!("{}", *text);
        return Ok(());
    };
    if let Some(image) = v.pointer("/nvm/hex").and_then(Value::as_str) {
        return write_image_backup(radio, out, f, image, &v);
    }
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
fn write_image_backup(
    radio: &str,
    out: &Path,
    out_file: &mut std::fs::File,
    image_hex: &str,
    doc: &Value,
) -> Result<()> {
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
        let _ = std::fs::remove_file(out);
        return Err(anyhow!(
            "{} exists (an existing file is never overwritten)",
            sidecar_path.display()
        ));
    }
    let mut sidecar_file = create_private(&sidecar_path)?;
    for (path, f, bytes) in [
        (out, out_file, image.to_vec()),
        (
            sidecar_path.as_path(),
            &mut sidecar_file,
            format!("{}\n", serde_json::to_string_pretty(&sidecar)?).into_bytes(),
        ),
    ] {
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

/// A new file with mode 0600 (never an existing one, nor through a link).
fn create_private(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "it exists, and an existing file is never overwritten".to_string()
            } else {
                e.to_string()
            };
            anyhow!("cannot create {}: {why}", path.display())
        })
}
