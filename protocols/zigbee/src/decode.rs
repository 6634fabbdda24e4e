//! One-call decoding of captured bytes into a serializable report, for the
//! `fieldgate decode zigbee HEX` CLI ([`decode_to_json`]) and for logs. Builds on the other
//! modules; adds no layouts.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::mt::{MtFrame, MtParserStats, MtStreamParser};
use crate::zcl::clusters::{self, Reading, ScalingContext};
use crate::zcl::ZclFrame;
use crate::znp::ZnpCommand;

/// A ZCL payload decoded in the context of its cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodedZcl {
    pub cluster_id: u16,
    pub cluster: Option<&'static str>,
    pub frame: Option<ZclFrame>,
    pub error: Option<String>,
    pub readings: Vec<Reading>,
}

/// One MT frame and what it means.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedFrame {
    pub frame: MtFrame,
    pub command: Option<ZnpCommand>,
    pub error: Option<String>,
    /// The ZCL inside AF_INCOMING_MSG / AF_INCOMING_MSG_EXT / AF_DATA_REQUEST; for an
    /// AF_INCOMING_MSG_EXT whose payload the coordinator held back, an error saying so.
    pub zcl: Option<DecodedZcl>,
    /// The frame carries key material (an install code, a network key, an NV key item):
    /// its raw payload and value fields are shown as their length only.
    pub secret: bool,
}

impl Serialize for DecodedFrame {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut v = serde_json::json!({
            "frame": self.frame,
            "command": self.command,
            "error": self.error,
            "zcl": self.zcl,
        });
        if self.secret {
            v["frame"]["payload"] = redacted(self.frame.payload.len());
            if let Some(cmd) = v["command"].as_object_mut() {
                for field in ["value", "init_value"] {
                    if let Some(serde_json::Value::String(hex)) = cmd.get(field) {
                        let n = hex.len() / 2;
                        cmd.insert(field.into(), redacted(n));
                    }
                }
            }
        }
        v.serialize(s)
    }
}

fn redacted(n: usize) -> serde_json::Value {
    serde_json::Value::String(format!("<{n} bytes redacted>"))
}

/// NV items that hold keys: the network key (pre-configured, active, alternate, Z-Stack
/// 1.2's), the security material, the TC link key seed and tables, the APS link keys.
pub fn is_key_nv_item(id: u16) -> bool {
    use crate::znp::nv;
    matches!(
        id,
        nv::PRECFGKEY
            | nv::NWK_ACTIVE_KEY_INFO
            | nv::NWK_ALTERN_KEY_INFO
            | nv::NWKKEY
            | nv::TCLK_SEED
    ) || (nv::LEGACY_NWK_SEC_MATERIAL_TABLE_START
        ..nv::LEGACY_NWK_SEC_MATERIAL_TABLE_START + nv::LEGACY_NWK_SEC_MATERIAL_TABLE_LEN)
        .contains(&id)
        || (nv::LEGACY_TCLK_TABLE_START..nv::LEGACY_TCLK_TABLE_START + nv::LEGACY_TCLK_TABLE_LEN)
            .contains(&id)
        || (nv::APS_LINK_KEY_DATA_START
            ..nv::APS_LINK_KEY_DATA_START.saturating_add(nv::LEGACY_APS_LINK_KEY_DATA_LEN))
            .contains(&id)
}

/// Extended-NV (SimpleLink) items that hold keys.
fn is_key_ex_item(sys_id: u8, item_id: u16) -> bool {
    use crate::znp::nv;
    sys_id == nv::SYSTEM_ZSTACK
        && matches!(
            item_id,
            nv::EX_TCLK_TABLE | nv::EX_APS_KEY_DATA_TABLE | nv::EX_NWK_SEC_MATERIAL_TABLE
        )
}

/// Which frames of a stream carry key material. A read response is judged by the read
/// request before it; one with no request in the capture is taken as secret.
#[derive(Debug, Default)]
struct SecretTracker {
    /// Whether the last NV read asked for a key item (`None`: no read seen).
    last_read_was_key: Option<bool>,
}

impl SecretTracker {
    fn judge(&mut self, cmd: &ZnpCommand) -> bool {
        match cmd {
            ZnpCommand::SysOsalNvWriteReq { id, .. }
            | ZnpCommand::SysOsalNvItemInitReq { id, .. } => is_key_nv_item(*id),
            ZnpCommand::SysOsalNvReadReq { id, .. }
            | ZnpCommand::SysOsalNvReadExtReq { id, .. } => {
                self.last_read_was_key = Some(is_key_nv_item(*id));
                false
            }
            ZnpCommand::SysNvReadReq {
                sys_id, item_id, ..
            } => {
                self.last_read_was_key = Some(is_key_ex_item(*sys_id, *item_id));
                false
            }
            ZnpCommand::SysOsalNvReadRsp { .. }
            | ZnpCommand::SysOsalNvReadExtRsp { .. }
            | ZnpCommand::SysNvReadRsp { .. } => self.last_read_was_key.take().unwrap_or(true),
            // Commands with a SecretBytes field (install codes, network keys) say so when
            // serialized; the raw payload must follow.
            other => serde_json::to_string(other).is_ok_and(|t| t.contains("bytes redacted>")),
        }
    }
}

/// Everything found in a captured byte stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodeReport {
    pub frames: Vec<DecodedFrame>,
    pub parser: MtParserStats,
    /// Bytes at the end that did not complete a frame.
    pub incomplete_bytes: usize,
}

impl DecodeReport {
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl DecodedZcl {
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Decodes a ZCL frame received on `cluster_id` and normalizes the attribute values in it
/// (with default scaling, since a single frame carries no multiplier/divisor context).
pub fn describe_zcl(cluster_id: u16, bytes: &[u8]) -> DecodedZcl {
    let cluster = clusters::cluster(cluster_id).map(|c| c.name);
    match ZclFrame::decode(cluster_id, bytes) {
        Ok(frame) => DecodedZcl {
            cluster_id,
            cluster,
            readings: clusters::normalize_frame(cluster_id, &frame, &ScalingContext::default()),
            frame: Some(frame),
            error: None,
        },
        Err(e) => DecodedZcl {
            cluster_id,
            cluster,
            frame: None,
            error: Some(e.to_string()),
            readings: Vec::new(),
        },
    }
}

/// Decodes one MT frame down to ZCL where there is some.
pub fn describe_frame(frame: MtFrame) -> DecodedFrame {
    match ZnpCommand::decode(&frame) {
        Ok(cmd) => {
            let zcl = match &cmd {
                ZnpCommand::AfIncomingMsg(m) => Some(describe_zcl(m.cluster_id, &m.data)),
                ZnpCommand::AfIncomingMsgExt(m) if m.is_complete() => {
                    Some(describe_zcl(m.cluster_id, &m.data))
                }
                ZnpCommand::AfIncomingMsgExt(m) => Some(DecodedZcl {
                    cluster_id: m.cluster_id,
                    cluster: clusters::cluster(m.cluster_id).map(|c| c.name),
                    frame: None,
                    error: Some(format!(
                        "payload held back by the coordinator: {} of {} bytes in this frame (a host reads it with AF_DATA_RETRIEVE, timestamp {})",
                        m.data.len(),
                        m.len,
                        m.timestamp
                    )),
                    readings: Vec::new(),
                }),
                ZnpCommand::AfDataRequestReq(r) => Some(describe_zcl(r.cluster_id, &r.data)),
                _ => None,
            };
            let secret = SecretTracker::default().judge(&cmd);
            DecodedFrame {
                frame,
                command: Some(cmd),
                error: None,
                zcl,
                secret,
            }
        }
        Err(e) => DecodedFrame {
            frame,
            command: None,
            error: Some(e.to_string()),
            zcl: None,
            secret: false,
        },
    }
}

/// Decodes every MT frame in a captured byte stream (noise and bad frames are skipped and
/// counted in `parser`).
pub fn decode_mt_stream(bytes: &[u8]) -> DecodeReport {
    let mut parser = MtStreamParser::new();
    let mut secrets = SecretTracker::default();
    let frames = parser
        .feed(bytes)
        .into_iter()
        .map(|f| {
            let mut d = describe_frame(f);
            // In a stream, a read response is judged by the request before it.
            d.secret = match &d.command {
                Some(cmd) => secrets.judge(cmd),
                None => false,
            };
            d
        })
        .collect();
    DecodeReport {
        frames,
        parser: parser.stats(),
        incomplete_bytes: parser.buffered(),
    }
}

/// Parses hex text, ignoring whitespace, `:`/`-`/`,` separators and `0x` prefixes.
pub fn parse_hex(text: &str) -> Result<Vec<u8>> {
    let cleaned: String = text
        .split(|c: char| c.is_whitespace() || matches!(c, ':' | '-' | ','))
        .map(|tok| {
            tok.strip_prefix("0x")
                .or_else(|| tok.strip_prefix("0X"))
                .unwrap_or(tok)
        })
        .collect();
    if cleaned.len() % 2 != 0 {
        return Err(Error::BadHex("odd number of hex digits".into()));
    }
    let digits = cleaned.as_bytes();
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    Error::BadHex(format!("not hex: {:?}", String::from_utf8_lossy(pair)))
                })
        })
        .collect()
}

/// [`parse_hex`] then [`decode_mt_stream`].
pub fn decode_hex(text: &str) -> Result<DecodeReport> {
    Ok(decode_mt_stream(&parse_hex(text)?))
}

/// Why [`decode_to_json`] has nothing to print but an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeFailure {
    /// The input is not hex.
    #[error(transparent)]
    Input(#[from] Error),
    /// Not one complete MT frame in the bytes.
    #[error("no complete MT frame found ({dropped_bytes} byte(s) dropped, {bad_fcs} bad FCS, {incomplete_bytes} incomplete)")]
    NoFrame {
        dropped_bytes: u64,
        bad_fcs: u64,
        incomplete_bytes: usize,
    },
    /// The ZCL payload does not decode: the report (pretty JSON) says where.
    #[error("{0}")]
    Zcl(String),
}

/// `fieldgate decode zigbee`: captured MT bytes (or, with `zcl_cluster`, a bare ZCL payload
/// received on that cluster) as pretty JSON.
pub fn decode_to_json(hex: &str, zcl_cluster: Option<u16>) -> Result<String, DecodeFailure> {
    match zcl_cluster {
        Some(cluster) => {
            let report = describe_zcl(cluster, &parse_hex(hex)?);
            let text = report.to_json_pretty();
            match report.error {
                None => Ok(text),
                Some(_) => Err(DecodeFailure::Zcl(text)),
            }
        }
        None => {
            let report = decode_hex(hex)?;
            if report.frames.is_empty() {
                return Err(DecodeFailure::NoFrame {
                    dropped_bytes: report.parser.dropped_bytes,
                    bad_fcs: report.parser.bad_fcs,
                    incomplete_bytes: report.incomplete_bytes,
                });
            }
            Ok(report.to_json_pretty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(cmds: &[ZnpCommand]) -> String {
        cmds.iter()
            .flat_map(|c| c.to_bytes().unwrap())
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// No key byte reaches the output: not in `command`, not in the raw `frame.payload`.
    #[test]
    fn key_material_is_redacted_everywhere() {
        use crate::znp::{nv, SecretBytes};
        use crate::IeeeAddr;
        let code: Vec<u8> = (0xA0..0xB2).collect();
        let key: Vec<u8> = (0xC0..0xD0).collect();
        let seed: Vec<u8> = (0x30..0x40).collect();
        let frames = [
            ZnpCommand::BdbAddInstallCodeReq {
                format: 1,
                ieee: IeeeAddr(0x00124b0001abcdef),
                code: SecretBytes(code.clone()),
            },
            ZnpCommand::SysOsalNvWriteReq {
                id: nv::PRECFGKEY,
                offset: 0,
                value: key.clone(),
            },
            ZnpCommand::SysOsalNvReadReq {
                id: nv::TCLK_SEED,
                offset: 0,
            },
            ZnpCommand::SysOsalNvReadRsp {
                status: 0,
                value: seed.clone(),
            },
            ZnpCommand::SysOsalNvReadReq {
                id: nv::PANID,
                offset: 0,
            },
            ZnpCommand::SysOsalNvReadRsp {
                status: 0,
                value: vec![0x62, 0x1a],
            },
        ];
        let json = decode_to_json(&hex_of(&frames), None).unwrap();
        for secret in [&code, &key, &seed] {
            let h: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            // Any 4 consecutive key bytes would be too many.
            for w in h.as_bytes().chunks(8) {
                let w = std::str::from_utf8(w).unwrap();
                assert!(!json.to_ascii_lowercase().contains(w), "{w} in {json}");
            }
        }
        assert!(json.contains("<16 bytes redacted>"), "{json}");
        // What is not a key stays readable.
        assert!(json.contains("621a"), "{json}");
        // A read response with no request in the capture is kept secret.
        let lone = decode_to_json(&hex_of(&frames[3..4]), None).unwrap();
        assert!(
            lone.contains("redacted") && !lone.contains("30313233"),
            "{lone}"
        );
    }

    #[test]
    fn decode_cli_prints_json_and_refuses_noise() {
        let json = decode_to_json("FE 02 61 01 11 00 73", None).unwrap();
        assert!(json.contains("sys_ping_rsp"), "{json}");
        assert!(decode_to_json("00 11 22", None).is_err());
        let zcl = decode_to_json("18 10 0A 00 00 29 66 08", Some(0x0402)).unwrap();
        assert!(zcl.contains("temperature") && zcl.contains("21.5"), "{zcl}");
    }

    #[test]
    fn decode_cli_prints_the_zcl_of_an_ext_message_or_says_it_was_held_back() {
        use crate::znp::{AfIncomingMsgExt, AF_ADDR_MODE_64BIT};
        let m = AfIncomingMsgExt {
            group_id: 0,
            cluster_id: 0x0402,
            src_addr_mode: AF_ADDR_MODE_64BIT,
            src_addr: 0x00124B00_0A000001,
            src_endpoint: 1,
            src_pan_id: 0x1A62,
            dst_endpoint: 1,
            was_broadcast: false,
            link_quality: 120,
            security_use: false,
            timestamp: 77,
            trans_seq_num: 0,
            len: 8,
            data: vec![0x18, 0x10, 0x0A, 0x00, 0x00, 0x29, 0x66, 0x08],
            mac_src_addr: Some(0x1A01),
            msg_result_radius: Some(0x1D),
        };
        let hex = crate::to_hex(&ZnpCommand::AfIncomingMsgExt(m.clone()).to_bytes().unwrap());
        let json: serde_json::Value =
            serde_json::from_str(&decode_to_json(&hex, None).unwrap()).unwrap();
        let frame = &json["frames"][0];
        assert_eq!(frame["command"]["command"], "af_incoming_msg_ext", "{json}");
        assert_eq!(frame["command"]["src_addr"], "0x00124b000a000001", "{json}");
        assert_eq!(
            frame["zcl"]["frame"]["command"]["command"],
            "report_attributes"
        );
        assert_eq!(frame["zcl"]["readings"][0]["name"], "temperature", "{json}");
        assert_eq!(frame["zcl"]["readings"][0]["value"], 21.5, "{json}");

        let held = AfIncomingMsgExt {
            len: 300,
            data: Vec::new(),
            ..m
        };
        let hex = crate::to_hex(&ZnpCommand::AfIncomingMsgExt(held).to_bytes().unwrap());
        let json: serde_json::Value =
            serde_json::from_str(&decode_to_json(&hex, None).unwrap()).unwrap();
        let zcl = &json["frames"][0]["zcl"];
        assert!(zcl["frame"].is_null(), "{json}");
        let error = zcl["error"].as_str().unwrap();
        assert!(
            error.contains("held back") && error.contains("0 of 300"),
            "{error}"
        );
    }

    #[test]
    fn decode_cli_errors_say_what_was_wrong() {
        assert_eq!(
            decode_to_json("00 11 22", None).unwrap_err().to_string(),
            "no complete MT frame found (3 byte(s) dropped, 0 bad FCS, 0 incomplete)"
        );
        assert!(decode_to_json("zz", None)
            .unwrap_err()
            .to_string()
            .starts_with("invalid hex input"));
        // A ZCL payload cut short: the error is the report, which names the problem.
        let e = decode_to_json("18 10 0A 00 00 29 66", Some(0x0402)).unwrap_err();
        let report: serde_json::Value = serde_json::from_str(&e.to_string()).unwrap();
        assert!(
            report["error"].as_str().unwrap().contains("truncated"),
            "{report}"
        );
    }
}
