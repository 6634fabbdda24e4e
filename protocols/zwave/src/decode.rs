//! One-call decoding of a captured Serial API byte stream into a serializable report, for
//! the `fieldgate decode zwave HEX` CLI ([`decode_to_json`]) and for logs. Builds on the
//! other modules; adds no layouts.
//!
//! A capture may hold both directions. RES frames always come from the controller, and
//! ApplicationCommandHandler, its bridge variant, ApplicationUpdate and SerialApiStarted
//! only ever do; other REQ frames without a callback id are host requests. The REQ frames
//! of functions that have callbacks (SendData, AddNode, …) travel both ways with different
//! layouts: [`Sender::Auto`] tells them apart by their layout (a SendData request's length
//! byte accounts for the whole payload; an AddNode/RemoveNode request is two bytes) and
//! marks the frame `direction_guessed`; [`Sender::Host`] or [`Sender::Controller`] settles
//! it for a capture of one side of the line.

use serde::Serialize;

use crate::cc::Cc;
use crate::error::Error;
use crate::frame::{DataFrame, Frame, FrameType, ParseEvent, ParserStats, Rejection, SerialParser};
use crate::function::{self as func, has_callback};
use crate::message::{Callback, Inbound, NvmOperation, Request, Response, Unsolicited};
use crate::normalize::{normalize, Reading};

/// Which way a data frame travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    HostToController,
    ControllerToHost,
}

/// Who sent the REQ frames of a capture whose direction their layout leaves open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sender {
    /// Both directions may be in the capture: guess from the layout.
    #[default]
    Auto,
    /// A capture of what the host wrote.
    Host,
    /// A capture of what the controller wrote (what a driver reads).
    Controller,
}

/// What a data frame is in the host/controller dialogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageClass {
    /// Host to controller.
    Request,
    /// The controller's RES to a host request.
    Response,
    /// A controller REQ carrying the callback id of a host request.
    Callback,
    /// Any other controller REQ (node traffic, node info, restarts).
    Unsolicited,
}

/// A decoded message, whichever way it went (`message_class` says which).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Message {
    Request(Request),
    Response(Response),
    Callback(Callback),
    Unsolicited(Unsolicited),
}

/// The command class a frame carries, decoded, with the readings it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodedCc {
    /// The outer command class id (`None` when the bytes did not decode).
    pub cc_id: Option<u16>,
    pub command: Option<u8>,
    /// Supervision and Multi Channel encapsulation appear nested, as sent.
    pub cc: Option<Cc>,
    pub error: Option<String>,
    /// Source endpoint of the innermost command (0 = the root device).
    pub endpoint: u8,
    pub readings: Vec<Reading>,
}

/// One data frame and what it means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodedFrame {
    pub frame_type: FrameType,
    pub function: u8,
    pub function_name: Option<&'static str>,
    pub direction: Direction,
    /// The direction came from the frame's layout, not from its type or function.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub direction_guessed: bool,
    pub message_class: MessageClass,
    #[serde(serialize_with = "crate::wire::serde_hex")]
    pub payload: Vec<u8>,
    pub message: Option<Message>,
    /// Why the payload did not decode as its function's message.
    pub error: Option<String>,
    /// For ApplicationCommandHandler, BridgeApplicationCommand and SendData.
    pub command_class: Option<DecodedCc>,
    /// What was left out of `payload` and `message`, and why: NVM contents (a controller's
    /// NVM holds the network keys) are never printed.
    /// (data bytes, payload bytes) left out; shown as a sentence.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_redacted"
    )]
    pub redacted: Option<(u16, u16)>,
}

fn serialize_redacted<S: serde::Serializer>(
    v: &Option<(u16, u16)>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some((data, payload)) => s.serialize_str(&format!(
            "NVM contents not shown ({data} data bytes, {payload} payload bytes): a controller's NVM holds its network keys"
        )),
        None => s.serialize_none(),
    }
}

/// Leaves out the NVM contents an NVM frame carries (network keys among them): the data
/// field of its message and the raw payload. Says how many bytes were left out.
fn redact_nvm(payload: &mut Vec<u8>, message: &mut Option<Message>) -> (u16, u16) {
    let carried = match message {
        Some(Message::Request(Request::NvmBackupRestore(NvmOperation::Write { data, .. })))
        | Some(Message::Response(Response::NvmBackupRestore { data, .. }))
        | Some(Message::Response(Response::NvmExtReadLongBuffer { data })) => {
            std::mem::take(data).len()
        }
        _ => 0,
    };
    let left_out = std::mem::take(payload).len();
    // A frame's payload is at most 255 bytes.
    let small = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    (small(carried), small(left_out))
}

/// One thing found on the line, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecodedEvent {
    Ack,
    Nak,
    Can,
    Data(Box<DecodedFrame>),
    /// A candidate data frame thrown away (a host answers it with NAK).
    Rejected {
        reason: Rejection,
        error: String,
    },
}

/// Everything found in a captured byte stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodeReport {
    pub frames: Vec<DecodedEvent>,
    /// Counters, including the noise bytes skipped between frames.
    pub parser: ParserStats,
    /// Bytes at the end that did not complete a frame (they are also reported as a
    /// `stalled` rejection).
    pub incomplete_bytes: usize,
}

impl DecodeReport {
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Decodes an encoded command class and normalizes the readings in it.
pub fn describe_cc(bytes: &[u8]) -> DecodedCc {
    match Cc::decode(bytes) {
        Ok(cc) => DecodedCc {
            cc_id: Some(cc.cc_id()),
            command: cc.command(),
            endpoint: cc.innermost().1,
            readings: normalize(&cc),
            cc: Some(cc),
            error: None,
        },
        Err(e) => DecodedCc {
            cc_id: None,
            command: None,
            cc: None,
            error: Some(e.to_string()),
            endpoint: 0,
            readings: Vec::new(),
        },
    }
}

/// The direction of a data frame, and whether its layout decided it.
pub fn direction_of(frame: &DataFrame, sender: Sender) -> (Direction, bool) {
    use Direction::*;
    if frame.frame_type == FrameType::Response {
        return (ControllerToHost, false);
    }
    match frame.function {
        func::APPLICATION_COMMAND_HANDLER
        | func::BRIDGE_APPLICATION_COMMAND
        | func::APPLICATION_UPDATE
        | func::SERIAL_API_STARTED => return (ControllerToHost, false),
        f if !has_callback(f) => return (HostToController, false),
        _ => {}
    }
    match sender {
        Sender::Host => (HostToController, false),
        Sender::Controller => (ControllerToHost, false),
        Sender::Auto if looks_like_host_request(frame) => (HostToController, true),
        Sender::Auto => (ControllerToHost, true),
    }
}

/// For REQ frames of callback functions: whether the payload has a host request's layout
/// rather than a callback's (`callback id, status, …`).
fn looks_like_host_request(frame: &DataFrame) -> bool {
    let p = &frame.payload;
    match frame.function {
        // nodeId, len, CC…, txOptions, callbackId: len accounts for everything.
        func::SEND_DATA => p.len() >= 4 && usize::from(p[1]) + 4 == p.len(),
        // mode | flags, callbackId. Controllers' callbacks carry a node id and a length too.
        func::ADD_NODE_TO_NETWORK | func::REMOVE_NODE_FROM_NETWORK => p.len() == 2,
        // nodeId, callbackId vs callbackId, status (0-2).
        func::REMOVE_FAILED_NODE => p.len() == 2 && p[1] > 2,
        _ => false,
    }
}

/// Decodes one data frame down to its command class where it carries one.
pub fn describe_frame(frame: DataFrame, sender: Sender) -> DecodedFrame {
    let (direction, direction_guessed) = direction_of(&frame, sender);
    let decoded: Result<(MessageClass, Message), Error> = match direction {
        Direction::HostToController => {
            Request::decode(&frame).map(|r| (MessageClass::Request, Message::Request(r)))
        }
        Direction::ControllerToHost => Inbound::decode(&frame).map(|i| match i {
            Inbound::Response(r) => (MessageClass::Response, Message::Response(r)),
            Inbound::Callback(c) => (MessageClass::Callback, Message::Callback(c)),
            Inbound::Unsolicited(u) => (MessageClass::Unsolicited, Message::Unsolicited(u)),
        }),
    };
    let fallback_class = match (direction, frame.frame_type) {
        (Direction::HostToController, _) => MessageClass::Request,
        (_, FrameType::Response) => MessageClass::Response,
        _ if has_callback(frame.function) => MessageClass::Callback,
        _ => MessageClass::Unsolicited,
    };
    let (message_class, message, error) = match decoded {
        Ok((class, message)) => (class, Some(message), None),
        Err(e) => (fallback_class, None, Some(e.to_string())),
    };
    let command_class = match &message {
        Some(Message::Unsolicited(u)) => u.command_class().map(describe_cc),
        Some(Message::Request(Request::SendData(s))) => Some(describe_cc(&s.payload)),
        _ => None,
    };
    let mut payload = frame.payload;
    let mut message = message;
    let redacted = if matches!(
        frame.function,
        func::NVM_BACKUP_RESTORE | func::NVM_EXT_READ_LONG_BUFFER | func::NVM_EXT_WRITE_LONG_BUFFER
    ) {
        Some(redact_nvm(&mut payload, &mut message))
    } else {
        None
    };
    DecodedFrame {
        frame_type: frame.frame_type,
        function: frame.function,
        function_name: func::name(frame.function),
        direction,
        direction_guessed,
        message_class,
        payload,
        message,
        error,
        command_class,
        redacted,
    }
}

/// Why a candidate frame was dropped, in words.
pub fn describe_rejection(r: &Rejection) -> String {
    match *r {
        Rejection::BadChecksum { expected, found } => {
            format!("bad checksum: expected {expected:#04x}, found {found:#04x}")
        }
        Rejection::BadLength(len) => format!("length {len} is below the minimum of 3"),
        Rejection::Oversize(len) => format!("length {len} is over the parser's limit"),
        Rejection::Stalled { bytes } => {
            format!("{bytes} byte(s) at the end do not complete a frame")
        }
    }
}

fn event_of(e: ParseEvent, sender: Sender) -> DecodedEvent {
    match e {
        ParseEvent::Frame(Frame::Ack) => DecodedEvent::Ack,
        ParseEvent::Frame(Frame::Nak) => DecodedEvent::Nak,
        ParseEvent::Frame(Frame::Can) => DecodedEvent::Can,
        ParseEvent::Frame(Frame::Data(d)) => {
            DecodedEvent::Data(Box::new(describe_frame(d, sender)))
        }
        ParseEvent::Rejected(reason) => DecodedEvent::Rejected {
            error: describe_rejection(&reason),
            reason,
        },
    }
}

/// Decodes every frame in a captured byte stream, in order: ACK/NAK/CAN, data frames, and
/// rejected candidates (bad checksum, bad length, a frame cut off at the end). Noise between
/// frames is skipped and counted in `parser.dropped_bytes`.
pub fn decode_stream(bytes: &[u8], sender: Sender) -> DecodeReport {
    let mut parser = SerialParser::new();
    parser.push(bytes);
    let mut frames = Vec::new();
    let mut incomplete_bytes = 0;
    loop {
        while let Some(e) = parser.next_event() {
            frames.push(event_of(e, sender));
        }
        // The capture is over: what is left is a frame that never completed. Dropping it
        // may uncover a complete frame behind a false SOF, so parsing goes on after it.
        incomplete_bytes += parser.buffered();
        match parser.flush_stalled() {
            Some(r) => frames.push(event_of(ParseEvent::Rejected(r), sender)),
            None => break,
        }
    }
    DecodeReport {
        frames,
        parser: parser.stats(),
        incomplete_bytes,
    }
}

/// Parses hex text, ignoring whitespace, `:`/`-`/`,` separators and `0x` prefixes.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, DecodeFailure> {
    let cleaned: String = text
        .split(|c: char| c.is_whitespace() || matches!(c, ':' | '-' | ','))
        .map(|tok| {
            tok.strip_prefix("0x")
                .or_else(|| tok.strip_prefix("0X"))
                .unwrap_or(tok)
        })
        .collect();
    if let Some(bad) = cleaned.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(DecodeFailure::BadHex(format!("{bad:?} is not a hex digit")));
    }
    if cleaned.len() % 2 != 0 {
        return Err(DecodeFailure::BadHex(format!(
            "odd number of hex digits ({})",
            cleaned.len()
        )));
    }
    Ok(crate::wire::from_hex(&cleaned).unwrap_or_default())
}

/// Why [`decode_to_json`] has nothing to print but an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeFailure {
    #[error("invalid hex input: {0}")]
    BadHex(String),
    #[error("no input bytes")]
    Empty,
    /// Nothing but noise: no frame, no control byte, no candidate frame.
    #[error("no Serial API frame found ({dropped_bytes} byte(s) of noise)")]
    NoFrame { dropped_bytes: u64 },
}

/// `fieldgate decode zwave`: a captured Serial API byte stream (hex) as pretty JSON. Bad
/// checksums, cut-off frames and noise are reported in the output, not as errors; only
/// input that is not hex, or holds nothing that looks like Serial API traffic, is.
pub fn decode_to_json(hex: &str, sender: Sender) -> Result<String, DecodeFailure> {
    let bytes = parse_hex(hex)?;
    if bytes.is_empty() {
        return Err(DecodeFailure::Empty);
    }
    let report = decode_stream(&bytes, sender);
    if report.frames.is_empty() {
        return Err(DecodeFailure::NoFrame {
            dropped_bytes: report.parser.dropped_bytes,
        });
    }
    Ok(report.to_json_pretty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn json(hex: &str, sender: Sender) -> Value {
        serde_json::from_str(&decode_to_json(hex, sender).unwrap()).unwrap()
    }

    #[test]
    fn a_controller_stream_with_a_sensor_report() {
        // The crate docs' stream: ACK, then node 3's Multilevel Sensor Report (21.5 °C).
        let v = json("06 01 0C 00 04 00 03 06 31 05 01 22 00 D7 32", Sender::Auto);
        assert_eq!(v["frames"][0]["kind"], "ack");
        let f = &v["frames"][1];
        assert_eq!(f["kind"], "data");
        assert_eq!(f["function_name"], "ApplicationCommandHandler");
        assert_eq!(f["direction"], "controller_to_host");
        assert_eq!(f["message_class"], "unsolicited");
        assert_eq!(f["message"]["application_command"]["source"], 3);
        let cc = &f["command_class"];
        assert_eq!(cc["cc_id"], 0x31);
        assert_eq!(
            cc["cc"]["multilevel_sensor"]["report"]["value"]["value"],
            21.5
        );
        assert_eq!(cc["readings"][0]["name"], "temperature");
        assert_eq!(cc["readings"][0]["value"], 21.5);
        assert_eq!(cc["readings"][0]["unit"], "°C");
    }

    #[test]
    fn send_data_both_ways() {
        // zwave-js#7815: SendData to node 52 (Binary Switch Set off), its RES, a callback.
        let v = json(
            "010b0013340425010 0ff2588a1 06 0104011301e8 010500130100e8",
            Sender::Auto,
        );
        let req = &v["frames"][0];
        assert_eq!(req["direction"], "host_to_controller");
        assert_eq!(req["direction_guessed"], true);
        assert_eq!(req["message"]["send_data"]["node_id"], 52);
        assert_eq!(
            req["command_class"]["cc"]["binary_switch"]["set"]["value"],
            0
        );
        assert_eq!(v["frames"][2]["message"]["send_data"]["was_sent"], true);
        assert_eq!(v["frames"][2]["message_class"], "response");
        let cb = &v["frames"][3];
        assert_eq!(cb["message_class"], "callback");
        assert_eq!(cb["message"]["send_data"]["status"], "ok");
        // The same callback read as a host request when the capture says so: it does not fit.
        let v = json("010500130100e8", Sender::Host);
        assert_eq!(v["frames"][0]["message_class"], "request");
        assert!(v["frames"][0]["error"]
            .as_str()
            .unwrap()
            .contains("truncated"));
    }

    #[test]
    fn nested_encapsulation_keeps_its_shape() {
        // Multi Channel from endpoint 2 around a door-open notification.
        let cc = describe_cc(&crate::from_hex("600d02017105000000ff061600").unwrap());
        let v = serde_json::to_value(&cc).unwrap();
        assert_eq!(v["endpoint"], 2);
        let inner = &v["cc"]["multi_channel"]["encapsulation"]["encapsulated"];
        assert_eq!(inner["notification"]["report"]["event"]["event"], 0x16);
        assert_eq!(v["readings"][0]["name"], "contact");
        assert_eq!(v["readings"][0]["value"], false);
    }

    #[test]
    fn bad_checksums_and_noise_are_reported_not_fatal() {
        // Noise, a frame with a broken checksum, a good ACK, then half a frame.
        let v = json("AA BB 01 03 01 13 00 06 01 09 00", Sender::Auto);
        assert_eq!(v["frames"][0]["kind"], "rejected");
        assert_eq!(v["frames"][0]["reason"]["bad_checksum"]["found"], 0x00);
        assert_eq!(v["frames"][1]["kind"], "ack");
        assert_eq!(v["frames"][2]["kind"], "rejected");
        assert!(v["frames"][2]["reason"]["stalled"].is_object());
        assert!(v["parser"]["dropped_bytes"].as_u64().unwrap() >= 2);
        assert_eq!(v["incomplete_bytes"], 3);
    }

    #[test]
    fn errors_say_what_was_wrong() {
        assert_eq!(
            decode_to_json("AA BB", Sender::Auto)
                .unwrap_err()
                .to_string(),
            "no Serial API frame found (2 byte(s) of noise)"
        );
        assert!(decode_to_json("0z", Sender::Auto)
            .unwrap_err()
            .to_string()
            .starts_with("invalid hex input"));
        assert!(decode_to_json("061", Sender::Auto).is_err());
        assert_eq!(decode_to_json(" ", Sender::Auto), Err(DecodeFailure::Empty));
    }

    #[test]
    fn nvm_contents_are_never_printed() {
        // NVM_BACKUP_RESTORE read response carrying 01 02 03 04, and a write request.
        let out =
            decode_to_json("01 0b 01 2e 00 04 00 00 01 02 03 04 db", Sender::Controller).unwrap();
        assert!(!out.contains("01020304"), "{out}");
        assert!(
            out.contains("NVM contents not shown (4 data bytes"),
            "{out}"
        );
        let write = Request::NvmBackupRestore(NvmOperation::Write {
            offset: 0x10,
            data: vec![0xaa, 0xbb, 0xcc, 0xdd, 0xee],
        });
        let bytes = write.to_frame().unwrap().to_bytes().unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let out = decode_to_json(&hex, Sender::Host).unwrap();
        assert!(!out.contains("aabbccddee"), "{out}");
        assert!(
            out.contains("NVM contents not shown (5 data bytes"),
            "{out}"
        );
    }
}
