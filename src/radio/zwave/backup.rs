//! `fieldgate radio backup` for Z-Wave: the controller's NVM image (700/800 series:
//! NVM_BACKUP_RESTORE 0x2E open / read / close; 500 series: NVM_EXT_READ_LONG_BUFFER 0x2A
//! after GetNvmId 0x29 for its size) with what a restore must check: the home id, the node
//! list, the controller's library and firmware versions and its chip family (an image only
//! restores onto the same family: a 700-series NVM is not an 800-series one, the cause of
//! many failed stick migrations).
//!
//! The image holds the network keys: it goes only to the technician who asked (the hub
//! and the API see to that) and is never logged.
//!
//! Restore writes such an image back (700/800 series: NVM_BACKUP_RESTORE open / write /
//! close, then a soft reset and a fresh start-up, as zwave-js's `restoreNVMRaw` does). It
//! is refused before anything is written when the image comes from another chip family,
//! when its size is not the controller's NVM size, or on a 500-series controller (its
//! external NVM has no restore function this driver drives).

use anyhow::Result;
use fieldgate_zwave::function as func;
use fieldgate_zwave::message::{NvmOperation, NvmStatus, Response};
use fieldgate_zwave::Request;
use serde_json::{json, Value};

use super::transport::Answer;
use super::Controller;
use crate::model::RadioError;

/// Bytes per NVM read (what fits one Serial API frame comfortably on every controller).
const CHUNK: u16 = 48;
/// Bytes per NVM write (zwave-js writes 48-byte chunks as well).
const WRITE_CHUNK: usize = 48;
/// Largest image read (the 800 series' NVM is 48 KiB; 500-series external NVMs up to 256 KiB).
const MAX_IMAGE: usize = 512 * 1024;

impl Controller<'_> {
    /// The backup document, or why there is none. `Err` only when the link failed.
    pub(super) async fn backup(&mut self) -> Result<std::result::Result<Value, RadioError>> {
        let image = if self.chip.supports(func::NVM_BACKUP_RESTORE) {
            self.read_nvm_700().await?
        } else if self.chip.supports(func::NVM_EXT_READ_LONG_BUFFER)
            && self.chip.supports(func::GET_NVM_ID)
        {
            self.read_nvm_500().await?
        } else {
            return Ok(Err(RadioError::NotSupported(
                "this controller offers no NVM backup function (neither 0x2E nor 0x2A)".into(),
            )));
        };
        let image = match image {
            Ok(i) => i,
            Err(why) => return Ok(Err(why)),
        };
        let nodes: Vec<Value> = self
            .nodes
            .values()
            .map(|n| {
                json!({
                    "node_id": n.id,
                    "device_id": format!("zwave:{}", self.address(n.id)),
                    "listening": !n.sleeps(),
                })
            })
            .collect();
        Ok(Ok(json!({
            "format": super::BACKUP_FORMAT,
            "home_id": format!("{:08x}", self.home_id),
            "controller_node_id": self.own_node_id,
            "nodes": nodes,
            "controller": {
                "library_version": self.chip.library_version,
                "library_type": self.chip.library_type,
                "firmware": self.chip.firmware,
                "manufacturer_id": self.chip.manufacturer_id,
                "product_type": self.chip.product_type,
                "product_id": self.chip.product_id,
                "chip_type": self.chip.chip_type,
                "chip_version": self.chip.chip_version,
                "chip_family": self.chip.family(),
            },
            "nvm": {
                "size": image.len(),
                "hex": hex::encode(&image),
            },
        })))
    }

    async fn nvm(
        &mut self,
        op: NvmOperation,
    ) -> Result<std::result::Result<(NvmStatus, u16, Vec<u8>), RadioError>> {
        Ok(match self.request(&Request::NvmBackupRestore(op)).await? {
            Ok(Answer {
                response:
                    Some(Response::NvmBackupRestore {
                        status,
                        offset_or_size,
                        data,
                    }),
                ..
            }) => Ok((status, offset_or_size, data)),
            Ok(_) => Err(RadioError::Refused(
                "unexpected answer to an NVM request".into(),
            )),
            Err(why) => Err(RadioError::Timeout(why.to_string())),
        })
    }

    async fn read_nvm_700(&mut self) -> Result<std::result::Result<Vec<u8>, RadioError>> {
        let size = match self.nvm(NvmOperation::Open).await? {
            Ok((NvmStatus::Ok, size, _)) if size > 0 => usize::from(size),
            Ok((status, ..)) => {
                return Ok(Err(RadioError::Refused(format!(
                    "the controller refused to open its NVM ({status:?})"
                ))))
            }
            Err(e) => return Ok(Err(e)),
        };
        let mut image = Vec::with_capacity(size);
        let mut failure = None;
        while image.len() < size {
            let offset = u16::try_from(image.len()).unwrap_or(u16::MAX);
            let length =
                u8::try_from(CHUNK.min(u16::try_from(size - image.len()).unwrap_or(CHUNK)))
                    .unwrap_or(48);
            match self.nvm(NvmOperation::Read { length, offset }).await? {
                Ok((NvmStatus::Ok | NvmStatus::EndOfFile, _, data)) if !data.is_empty() => {
                    image.extend_from_slice(&data);
                }
                Ok((NvmStatus::EndOfFile, ..)) => break,
                Ok((status, ..)) => {
                    failure = Some(RadioError::Refused(format!(
                        "NVM read at {offset} failed ({status:?})"
                    )));
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Always closed, or the controller stays in backup mode.
        self.nvm(NvmOperation::Close).await?.ok();
        image.truncate(size);
        Ok(match failure {
            Some(e) => Err(e),
            None => Ok(image),
        })
    }

    async fn read_nvm_500(&mut self) -> Result<std::result::Result<Vec<u8>, RadioError>> {
        let size = match self.request(&Request::GetNvmId).await? {
            Ok(Answer {
                response: Some(Response::NvmId { memory_size, .. }),
                ..
            }) if (0x0E..=0x12).contains(&memory_size) => 1usize << memory_size,
            other => {
                return Ok(Err(RadioError::Refused(format!(
                    "the controller's NVM size is unknown ({:?})",
                    other.err()
                ))))
            }
        };
        let size = size.min(MAX_IMAGE);
        let mut image = Vec::with_capacity(size);
        while image.len() < size {
            let offset = u32::try_from(image.len()).unwrap_or(u32::MAX);
            let length = u16::try_from(size - image.len())
                .unwrap_or(CHUNK)
                .min(CHUNK);
            match self
                .request(&Request::NvmExtReadLongBuffer { offset, length })
                .await?
            {
                Ok(Answer {
                    response: Some(Response::NvmExtReadLongBuffer { data }),
                    ..
                }) if !data.is_empty() => image.extend_from_slice(&data),
                other => {
                    return Ok(Err(RadioError::Refused(format!(
                        "NVM read at {offset} failed ({:?})",
                        other.err()
                    ))))
                }
            }
        }
        image.truncate(size);
        Ok(Ok(image))
    }

    /// Writes a backup document's NVM image back onto the controller, then soft-resets it
    /// and starts over. Answers what was restored, or why nothing was written; `Err` only
    /// when the link failed.
    pub(super) async fn restore(
        &mut self,
        doc: &Value,
    ) -> Result<std::result::Result<Value, RadioError>> {
        let image = match restorable(doc, self.chip.family()) {
            Ok(image) => image,
            Err(why) => return Ok(Err(why)),
        };
        if !self.chip.supports(func::NVM_BACKUP_RESTORE) {
            return Ok(Err(RadioError::NotSupported(
                "this controller has no NVM restore function (0x2E); a 500-series NVM is restored with the vendor's tools".into(),
            )));
        }
        let size = match self.nvm(NvmOperation::Open).await? {
            Ok((NvmStatus::Ok, size, _)) => usize::from(size),
            Ok((status, ..)) => {
                return Ok(Err(RadioError::Refused(format!(
                    "the controller refused to open its NVM ({status:?})"
                ))))
            }
            Err(e) => return Ok(Err(e)),
        };
        if size != image.len() {
            self.nvm(NvmOperation::Close).await?.ok();
            return Ok(Err(RadioError::Refused(format!(
                "the image is {} bytes, this controller's NVM {size}: not written",
                image.len()
            ))));
        }
        tracing::warn!(radio = %self.io.radio, bytes = size, "restoring the controller's NVM");
        let mut failure = None;
        for (i, chunk) in image.chunks(WRITE_CHUNK).enumerate() {
            let offset = u16::try_from(i * WRITE_CHUNK).unwrap_or(u16::MAX);
            let write = NvmOperation::Write {
                offset,
                data: chunk.to_vec(),
            };
            match self.nvm(write).await? {
                Ok((NvmStatus::Ok | NvmStatus::EndOfFile, ..)) => {}
                Ok((status, ..)) => {
                    failure = Some(RadioError::Refused(format!(
                        "NVM write at {offset} failed ({status:?}); the controller's memory is now partly written: restore again"
                    )));
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        self.nvm(NvmOperation::Close).await?.ok();
        if let Some(e) = failure {
            return Ok(Err(e));
        }
        // The controller reads its memory only when it starts: restart it, then learn the
        // restored network from scratch.
        let t = super::Timeouts {
            callback: std::time::Duration::from_secs(5),
            ..self.timeouts()
        };
        if let Err(why) = self.link.execute(&Request::SoftReset, t).await? {
            tracing::warn!(radio = %self.io.radio, error = %why, "no answer to the soft reset after a restore");
        }
        self.restart_needed = true;
        Ok(Ok(json!({
            "bytes": size,
            "home_id": doc["home_id"],
            "chip_family": self.chip.family(),
            "nodes": doc["nodes"].as_array().map_or(0, Vec::len),
        })))
    }
}

/// The NVM image of a backup document, if it may go onto a controller of `family`.
fn restorable(doc: &Value, family: Option<&str>) -> std::result::Result<Vec<u8>, RadioError> {
    if doc["format"] != super::BACKUP_FORMAT {
        return Err(RadioError::Invalid(format!(
            "not a Z-Wave NVM backup (format `{}`)",
            doc["format"].as_str().unwrap_or("none")
        )));
    }
    let theirs = doc
        .pointer("/controller/chip_family")
        .and_then(Value::as_str);
    match (theirs, family) {
        (Some(a), Some(b)) if a == b => {}
        (a, b) => {
            return Err(RadioError::Refused(format!(
                "the image is from a {}-series controller and this one is {}-series: an NVM image only restores onto the same chip family (convert it first, e.g. with zwave-js's nvmedit)",
                a.unwrap_or("unknown"),
                b.unwrap_or("unknown")
            )))
        }
    }
    let hex = doc
        .pointer("/nvm/hex")
        .and_then(Value::as_str)
        .ok_or_else(|| RadioError::Invalid("the backup carries no NVM image (`nvm.hex`)".into()))?;
    let image =
        hex::decode(hex).map_err(|_| RadioError::Invalid("the NVM image is not hex".into()))?;
    if image.is_empty()
        || doc.pointer("/nvm/size").and_then(Value::as_u64) != Some(image.len() as u64)
    {
        return Err(RadioError::Invalid(
            "the NVM image's length is not the size its description gives".into(),
        ));
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(family: &str, image: &[u8]) -> Value {
        json!({
            "format": super::super::BACKUP_FORMAT,
            "controller": {"chip_family": family},
            "nvm": {"size": image.len(), "hex": hex::encode(image)},
        })
    }

    #[test]
    fn an_image_restores_only_onto_its_own_chip_family() {
        assert_eq!(
            restorable(&doc("700", &[1, 2]), Some("700")).unwrap(),
            [1, 2]
        );
        let e = restorable(&doc("700", &[1, 2]), Some("800")).unwrap_err();
        assert!(e.to_string().contains("700-series"), "{e}");
        assert!(restorable(&doc("700", &[1, 2]), None).is_err());
        let mut other = doc("700", &[1, 2]);
        other["format"] = json!("open-coordinator-backup");
        assert!(restorable(&other, Some("700")).is_err());
        let mut short = doc("700", &[1, 2]);
        short["nvm"]["size"] = json!(3);
        assert!(restorable(&short, Some("700")).is_err());
        let mut bad = doc("700", &[1, 2]);
        bad["nvm"]["hex"] = json!("zz");
        assert!(restorable(&bad, Some("700")).is_err());
    }
}
