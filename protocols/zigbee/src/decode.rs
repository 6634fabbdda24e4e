//! One-call decoding of captured bytes into a serializable report, for the
//! `fieldgate decode zigbee HEX` CLI and for logs. Builds on the other modules; adds no layouts.

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
