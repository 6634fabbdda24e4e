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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodedFrame {
    pub frame: MtFrame,
    pub command: Option<ZnpCommand>,
    pub error: Option<String>,
    /// The ZCL inside AF_INCOMING_MSG / AF_DATA_REQUEST.
    pub zcl: Option<DecodedZcl>,
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
                ZnpCommand::AfDataRequestReq(r) => Some(describe_zcl(r.cluster_id, &r.data)),
                _ => None,
            };
            DecodedFrame {
                frame,
                command: Some(cmd),
                error: None,
                zcl,
            }
        }
        Err(e) => DecodedFrame {
            frame,
            command: None,
            error: Some(e.to_string()),
            zcl: None,
        },
    }
}

/// Decodes every MT frame in a captured byte stream (noise and bad frames are skipped and
/// counted in `parser`).
pub fn decode_mt_stream(bytes: &[u8]) -> DecodeReport {
    let mut parser = MtStreamParser::new();
    let frames = parser.feed(bytes).into_iter().map(describe_frame).collect();
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

    #[test]
    fn decode_cli_prints_json_and_refuses_noise() {
        let json = decode_to_json("FE 02 61 01 11 00 73", None).unwrap();
        assert!(json.contains("sys_ping_rsp"), "{json}");
        assert!(decode_to_json("00 11 22", None).is_err());
        let zcl = decode_to_json("18 10 0A 00 00 29 66 08", Some(0x0402)).unwrap();
        assert!(zcl.contains("temperature") && zcl.contains("21.5"), "{zcl}");
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
