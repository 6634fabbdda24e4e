//! Parsing and validating one request: size limit, UTF-8, JSON, a correlation id,
//! strict schemas with unknown fields rejected, and the checks on each field, into a
//! [`Request`] or a [`Rejection`]. Pure: no IO, never panics, and never echoes a
//! secret (a key or an install code) in a refusal.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Rejection;
use crate::hub::{MAX_PERMIT_JOIN_SECONDS, MAX_REQUEST_TTL_S};
use crate::model::DeviceId;
use crate::upstream::topics::response_level;

/// Largest request payload accepted (larger ones get `payload_too_large`).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// The limit for `rotate_client_cert`, which carries a certificate chain and key.
pub const MAX_ROTATION_REQUEST_BYTES: usize = 64 * 1024;
const MAX_CORRELATION_ID: usize = 128;
const MAX_CLIENT_ID: usize = 64;

/// The operations the gateway answers.
pub const OPERATIONS: [&str; 17] = [
    "permit_join",
    "remove",
    "readmit",
    "adopt",
    "rotate_bindkey",
    "set",
    "get",
    "policy",
    "health_check",
    "info",
    "rotate_client_cert",
    "install_code",
    "rotate_network_key",
    "devices",
    "device",
    "rename",
    "lora_device",
];

/// Most devices in one `devices` page, and the default.
pub const MAX_PAGE: u64 = 100;
const DEFAULT_PAGE: u64 = 50;

/// How a device named by its friendly name is carried until it is looked up
/// (`name` is no protocol, so this never collides with a real id).
pub const NAME_REF: &str = "name:";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    lifecycle: Option<String>,
}

/// A field that may be `null` but must be there: present (`null` or not) is `Some`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    device: String,
    /// The new friendly name; `null` removes it. Required: a request that forgot it
    /// must not remove the name.
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
}
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PermitJoinBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    radio: String,
    seconds: u32,
}

/// `remove`: a device, and whether to put it on the denylist as well.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    device: String,
    #[serde(default)]
    block: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    device: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    device: String,
    state: Map<String, Value>,
    /// Seconds to hold the request for a sleeping device.
    #[serde(default)]
    ttl_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    device: String,
    #[serde(default)]
    attributes: Option<Vec<String>>,
    #[serde(default)]
    ttl_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    version: u64,
    document: Map<String, Value>,
    /// Hex ed25519 signature over the canonical JSON of `document`.
    #[serde(default)]
    signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    cert_pem: String,
    key_pem: String,
}

/// A PEM private key: compared and cloned like a string, never printed.
#[derive(Clone, PartialEq)]
pub struct SecretPem(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem(<redacted>)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallCodeBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    action: InstallCodeAction,
    device: String,
    /// Hex digits of the code and its CRC (`add` only); never echoed.
    #[serde(default)]
    code: Option<String>,
}

/// `lora_device`: a LoRaWAN device's keys (OTAA or ABP); never echoed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoraDeviceBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    device: String,
    #[serde(default)]
    join_eui: Option<String>,
    #[serde(default)]
    app_key: Option<String>,
    #[serde(default)]
    dev_addr: Option<String>,
    #[serde(default)]
    nwk_s_key: Option<String>,
    #[serde(default)]
    app_s_key: Option<String>,
    #[serde(default)]
    decoder: Option<String>,
}

impl Drop for LoraDeviceBody {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for k in [&mut self.app_key, &mut self.nwk_s_key, &mut self.app_s_key]
            .into_iter()
            .flatten()
        {
            k.zeroize();
        }
    }
}

/// `adopt`: a discovered device, with its BTHome bindkey when it has one; never echoed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdoptBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    device: String,
    #[serde(default)]
    bindkey: Option<String>,
}

/// The body's bindkey, checked (32 hex digits) and lowercased; taken out of the body.
fn bindkey_of(b: &mut AdoptBody) -> Result<Option<SecretCode>, Rejection> {
    match b.bindkey.take().map(zeroize::Zeroizing::new) {
        None => Ok(None),
        Some(k) if k.len() == 32 && k.bytes().all(|c| c.is_ascii_hexdigit()) => Ok(Some(
            SecretCode(zeroize::Zeroizing::new(k.to_ascii_lowercase().into_bytes())),
        )),
        Some(_) => Err(Rejection::new(
            "invalid_bindkey",
            "a BTHome bindkey is 16 bytes: 32 hex digits",
        )),
    }
}

impl Drop for AdoptBody {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(k) = &mut self.bindkey {
            k.zeroize();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallCodeAction {
    Add,
    Remove,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RadioBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
    radio: String,
}

/// A validated install code (code + CRC bytes): compared and cloned, never printed.
#[derive(Clone, PartialEq)]
pub struct SecretCode(pub zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SecretCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCode(<redacted>)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {
    #[allow(dead_code)]
    correlation_id: String,
    #[allow(dead_code)]
    #[serde(default)]
    client_id: Option<String>,
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    PermitJoin {
        radio: String,
        seconds: u32,
    },
    Remove {
        device: DeviceId,
        /// Also on the denylist (`remove --block`).
        block: bool,
    },
    Readmit {
        device: DeviceId,
    },
    /// Adopts a discovered device; `bindkey` holds 32 lowercase hex digits.
    Adopt {
        device: DeviceId,
        bindkey: Option<SecretCode>,
    },
    /// Replaces an adopted device's bindkey (32 lowercase hex digits).
    RotateBindkey {
        device: DeviceId,
        bindkey: SecretCode,
    },
    Set {
        device: DeviceId,
        state: Map<String, Value>,
        ttl_s: Option<u64>,
    },
    Get {
        device: DeviceId,
        attributes: Vec<String>,
        ttl_s: Option<u64>,
    },
    Policy {
        version: u64,
        document: Map<String, Value>,
        signature: Option<String>,
    },
    HealthCheck,
    Info,
    RotateClientCert {
        cert_pem: String,
        key_pem: SecretPem,
    },
    AddInstallCode {
        device: DeviceId,
        code: SecretCode,
    },
    RemoveInstallCode {
        device: DeviceId,
    },
    /// A LoRaWAN device's keys, as the sealed credential document of `kind`.
    AddLoraDevice {
        device: DeviceId,
        kind: crate::model::CredentialKind,
        keys: SecretCode,
    },
    RotateNetworkKey {
        radio: String,
    },
    /// One page of the registry.
    Devices {
        offset: u64,
        limit: u64,
        lifecycle: Option<String>,
    },
    /// One device.
    Device {
        device: DeviceId,
    },
    /// Sets or clears a device's friendly name.
    Rename {
        device: DeviceId,
        name: Option<String>,
    },
}

impl Request {
    /// The device the request is about, if any (to resolve a friendly name).
    pub(super) fn device_mut(&mut self) -> Option<&mut DeviceId> {
        match self {
            Request::Remove { device, .. }
            | Request::Readmit { device }
            | Request::Adopt { device, .. }
            | Request::RotateBindkey { device, .. }
            | Request::Set { device, .. }
            | Request::Get { device, .. }
            | Request::Device { device }
            | Request::Rename { device, .. } => Some(device),
            _ => None,
        }
    }

    pub(super) fn target(&self, gateway_id: &str) -> String {
        match self {
            Request::PermitJoin { radio, .. } | Request::RotateNetworkKey { radio } => {
                radio.clone()
            }
            Request::Remove { device, .. }
            | Request::Readmit { device }
            | Request::Adopt { device, .. }
            | Request::RotateBindkey { device, .. }
            | Request::Set { device, .. }
            | Request::Get { device, .. }
            | Request::AddInstallCode { device, .. }
            | Request::RemoveInstallCode { device }
            | Request::Device { device }
            | Request::Rename { device, .. }
            | Request::AddLoraDevice { device, .. } => device.to_string(),
            Request::Devices { .. }
            | Request::Policy { .. }
            | Request::HealthCheck
            | Request::Info
            | Request::RotateClientCert { .. } => gateway_id.to_string(),
        }
    }
}

/// A request as parsed: who asked, with which correlation id, and what (or why not).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub correlation_id: Option<String>,
    pub client_id: Option<String>,
    pub request: Result<Request, Rejection>,
}

fn is_word(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

fn typed<T: DeserializeOwned>(v: Value) -> Result<T, Rejection> {
    serde_json::from_value(v).map_err(|e| Rejection::new("invalid_request", e.to_string()))
}

fn ttl(ttl_s: Option<u64>) -> Result<Option<u64>, Rejection> {
    match ttl_s {
        Some(t) if t == 0 || t > MAX_REQUEST_TTL_S => Err(Rejection::new(
            "invalid_request",
            format!("`ttl_s` must be between 1 and {MAX_REQUEST_TTL_S} seconds"),
        )),
        t => Ok(t),
    }
}

/// Like [`typed`], for bodies that carry a secret: serde's type errors quote the
/// offending value, so only the errors that name a field alone are passed on.
fn typed_secret<T: DeserializeOwned>(v: Value, schema: &str) -> Result<T, Rejection> {
    serde_json::from_value(v).map_err(|e| {
        let text = e.to_string();
        let message = if text.starts_with("unknown field") || text.starts_with("missing field") {
            format!("{text}; {schema}")
        } else {
            schema.to_string()
        };
        Rejection::new("invalid_request", message)
    })
}

/// A Zigbee device id with a real IEEE address (`zigbee:0x00124b0001abcdef`).
fn zigbee_device_id(raw: &str) -> Result<DeviceId, Rejection> {
    let ieee = raw
        .strip_prefix("zigbee:")
        .and_then(|a| a.parse::<fieldgate_zigbee::IeeeAddr>().ok())
        .ok_or_else(|| {
            Rejection::new(
                "bad_device_id",
                "`device` is not a Zigbee device id (expected zigbee:<IEEE address>, e.g. zigbee:0x00124b0001abcdef)",
            )
        })?;
    Ok(DeviceId::new(
        crate::config::Protocol::Zigbee,
        &ieee.to_string(),
    ))
}

/// A device id, or a friendly name carried as `name:<name>` until it is looked up.
fn device_id(raw: &str) -> Result<DeviceId, Rejection> {
    if let Some(id) = DeviceId::parse(raw) {
        return Ok(id);
    }
    if crate::store::names::valid(raw) {
        return Ok(DeviceId(format!("{NAME_REF}{raw}")));
    }
    Err(Rejection::new(
        "bad_device_id",
        "`device` is neither a device id (<protocol>:<address>, e.g. zigbee:0x00124b0001abcdef) nor a friendly name",
    ))
}

/// Bidirectional formatting characters (embeddings, overrides, isolates, marks):
/// they reorder how text around them is shown, so a correlation id carrying one
/// could make a log line or a console lie.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show nothing: white space, and the invisible format characters
/// (zero-width space and joiners, soft hyphen, word joiner, byte order mark, line and
/// paragraph separators).
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00ad}' | '\u{180e}' | '\u{200b}'..='\u{200d}' | '\u{2060}'..='\u{2064}' | '\u{feff}'
        )
}

/// 1 to 128 characters, none a control or bidirectional formatting character, and at
/// least one that shows (an id of blanks or zero-width characters cannot be read back
/// from a log or a console).
fn valid_correlation_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= MAX_CORRELATION_ID
        && !s.chars().any(|c| c.is_control() || is_bidi(c))
        && !s.chars().all(is_invisible)
}

/// At most `max` characters of `s`, with control and bidirectional-formatting
/// characters shown as `?`, so a refusal never carries them into a log or a response.
pub(crate) fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() || is_bidi(c) { '?' } else { c })
        .collect()
}

/// The first key that appears twice in one JSON object of `text`, anywhere in it.
/// `serde_json` keeps the last of duplicates silently; the strict schema refuses them.
/// Only called on text that already parsed as JSON (so within its depth limit).
pub fn duplicate_key(text: &str) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Walk;
    impl<'de> DeserializeSeed<'de> for Walk {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(Walk)
        }
    }
    impl<'de> Visitor<'de> for Walk {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Walk)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(DUPLICATE_MARK.to_string() + &key));
                }
                map.next_value_seed(Walk)?;
            }
            Ok(())
        }
    }
    const DUPLICATE_MARK: &str = "\u{0}duplicate:";
    let mut de = serde_json::Deserializer::from_str(text);
    match Walk.deserialize(&mut de) {
        Ok(()) => None,
        Err(e) => {
            let text = e.to_string();
            let rest = text.split_once(DUPLICATE_MARK)?.1;
            // serde_json appends " at line L column C".
            let key = rest.rsplit_once(" at line ").map_or(rest, |(k, _)| k);
            Some(key.to_string())
        }
    }
}

/// The `correlation_id` of a payload whose other values do not parse as numbers (the
/// rest is skipped without being converted), when it is a valid one.
fn correlation_id_only(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Only {
        correlation_id: Option<String>,
    }
    serde_json::from_str::<Only>(text)
        .ok()?
        .correlation_id
        .filter(|c| valid_correlation_id(c))
}

/// Parses and validates one request. Pure: no IO, never panics.
pub fn parse(operation: &str, payload: &[u8]) -> Parsed {
    parse_for(operation, payload, None)
}

/// [`parse`], for a request on a per-device topic (`device/<device>/set`): the
/// device comes from the topic and may not be in the body too.
pub fn parse_for(operation: &str, payload: &[u8], topic_device: Option<&str>) -> Parsed {
    let fail = |c: Option<String>, client: Option<String>, r: Rejection| Parsed {
        correlation_id: c,
        client_id: client,
        request: Err(r),
    };
    let max = if operation == "rotate_client_cert" {
        MAX_ROTATION_REQUEST_BYTES
    } else {
        MAX_REQUEST_BYTES
    };
    if payload.len() > max {
        return fail(
            None,
            None,
            Rejection::new(
                "payload_too_large",
                format!(
                    "{} bytes: `{}` requests are at most {max} bytes",
                    payload.len(),
                    response_level(operation),
                ),
            ),
        );
    }
    if payload.is_empty() {
        return fail(
            None,
            None,
            Rejection::new(
                "empty_payload",
                "the request has no payload: a JSON object is required",
            ),
        );
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        return fail(
            None,
            None,
            Rejection::new(
                "not_utf8",
                "the payload is not UTF-8 text: a JSON object is required",
            ),
        );
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        // Valid JSON (RFC 8259 sets no limit on a number's size) with a number no
        // 64-bit float holds: a value out of range, answered under its correlation id.
        Err(e) if e.to_string().starts_with("number out of range") => {
            return fail(
                correlation_id_only(text),
                None,
                Rejection::new(
                    "invalid_request",
                    format!("a number in the request is out of range: {e}"),
                ),
            )
        }
        Err(e) => {
            return fail(
                None,
                None,
                Rejection::new("bad_json", format!("the payload is not valid JSON: {e}")),
            )
        }
    };
    if let Some(key) = duplicate_key(text) {
        let cid = match &value {
            Value::Object(o) if key != "correlation_id" => o
                .get("correlation_id")
                .and_then(Value::as_str)
                .filter(|s| valid_correlation_id(s))
                .map(str::to_string),
            _ => None,
        };
        return fail(
            cid,
            None,
            Rejection::new(
                "invalid_request",
                format!(
                    "the key `{}` appears more than once in one object",
                    printable(&key, 32)
                ),
            ),
        );
    }
    let Value::Object(obj) = &value else {
        return fail(
            None,
            None,
            Rejection::new("not_an_object", "the payload must be a JSON object"),
        );
    };
    let correlation_id = match obj.get("correlation_id") {
        None | Some(Value::Null) => {
            return fail(None, None, Rejection::new("missing_correlation_id", "`correlation_id` is required"))
        }
        Some(Value::String(s)) if valid_correlation_id(s) => {
            s.clone()
        }
        Some(_) => {
            return fail(
                None,
                None,
                Rejection::new(
                    "invalid_correlation_id",
                    format!("`correlation_id` must be a string of 1 to {MAX_CORRELATION_ID} printable characters"),
                ),
            )
        }
    };
    let cid = Some(correlation_id.clone());
    let client_id = match obj.get("client_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_word(s, MAX_CLIENT_ID) => Some(s.clone()),
        Some(_) => {
            return fail(
                cid,
                None,
                Rejection::new(
                    "invalid_request",
                    format!(
                    "`client_id` must be 1 to {MAX_CLIENT_ID} characters of A-Z a-z 0-9 _ - . :"
                ),
                ),
            )
        }
    };
    let mut value = value;
    if let (Some(device), Value::Object(obj)) = (topic_device, &mut value) {
        if obj.contains_key("device") {
            return fail(
                cid,
                client_id,
                Rejection::new(
                    "invalid_request",
                    "the device is named by the topic: leave `device` out of the body",
                ),
            );
        }
        obj.insert("device".into(), Value::String(device.to_string()));
    }
    let request = parse_operation(operation, value);
    Parsed {
        correlation_id: cid,
        client_id,
        request,
    }
}

fn parse_operation(operation: &str, value: Value) -> Result<Request, Rejection> {
    match operation {
        "permit_join" => {
            let b: PermitJoinBody = typed(value)?;
            if b.seconds == 0 || b.seconds > MAX_PERMIT_JOIN_SECONDS {
                return Err(Rejection::new(
                    "invalid_request",
                    format!("`seconds` must be between 1 and {MAX_PERMIT_JOIN_SECONDS}"),
                ));
            }
            if !is_word(&b.radio, 32) {
                return Err(Rejection::new(
                    "unknown_radio",
                    "`radio` is not a radio name",
                ));
            }
            Ok(Request::PermitJoin {
                radio: b.radio,
                seconds: b.seconds,
            })
        }
        "remove" => {
            let b: RemoveBody = typed(value)?;
            let device = device_id(&b.device)?;
            // A block may name a device never seen: a mistyped address would block nothing.
            if b.block && !device.0.starts_with(NAME_REF) && !device.well_formed() {
                return Err(Rejection::new(
                    "bad_device_id",
                    "`device` is not an address a device of its protocol can have",
                ));
            }
            Ok(Request::Remove {
                device,
                block: b.block,
            })
        }
        "readmit" => {
            let b: DeviceBody = typed(value)?;
            Ok(Request::Readmit {
                device: device_id(&b.device)?,
            })
        }
        "adopt" => {
            let mut b: AdoptBody = typed_secret(
                value,
                "`adopt` takes `device` and optionally `bindkey` (32 hex digits)",
            )?;
            let device = device_id(&b.device)?;
            let bindkey = bindkey_of(&mut b)?;
            Ok(Request::Adopt { device, bindkey })
        }
        "rotate_bindkey" => {
            let mut b: AdoptBody = typed_secret(
                value,
                "`rotate_bindkey` takes `device` and `bindkey` (32 hex digits)",
            )?;
            let device = device_id(&b.device)?;
            let Some(bindkey) = bindkey_of(&mut b)? else {
                return Err(Rejection::new(
                    "invalid_bindkey",
                    "`rotate_bindkey` needs the new `bindkey` (32 hex digits)",
                ));
            };
            Ok(Request::RotateBindkey { device, bindkey })
        }
        "set" => {
            let b: SetBody = typed(value)?;
            let device = device_id(&b.device)?;
            if b.state.is_empty() || b.state.len() > 16 {
                return Err(Rejection::new(
                    "invalid_request",
                    "`state` must have 1 to 16 attributes",
                ));
            }
            for (k, v) in &b.state {
                let scalar = match v {
                    Value::Bool(_) | Value::Number(_) => true,
                    Value::String(s) => s.len() <= 64,
                    _ => false,
                };
                if !is_word(k, 32) || !scalar {
                    return Err(Rejection::new(
                        "invalid_request",
                        format!("`state.{}`: attribute names are short words and values are booleans, numbers or short strings", printable(k, 32)),
                    ));
                }
            }
            crate::model::vocabulary::desired_state(&b.state)
                .map_err(|e| Rejection::new(e.code(), e.to_string()))?;
            Ok(Request::Set {
                device,
                state: b.state,
                ttl_s: ttl(b.ttl_s)?,
            })
        }
        "get" => {
            let b: GetBody = typed(value)?;
            let device = device_id(&b.device)?;
            let attributes = b.attributes.unwrap_or_default();
            if attributes.len() > 32 || !attributes.iter().all(|a| is_word(a, 32)) {
                return Err(Rejection::new(
                    "invalid_request",
                    "`attributes` must be at most 32 short attribute names",
                ));
            }
            Ok(Request::Get {
                device,
                attributes,
                ttl_s: ttl(b.ttl_s)?,
            })
        }
        "policy" => {
            let b: PolicyBody = typed(value)?;
            if b.version == 0 {
                return Err(Rejection::new(
                    "invalid_request",
                    "`version` must be at least 1",
                ));
            }
            if b.document.get("version").and_then(Value::as_u64) != Some(b.version) {
                return Err(Rejection::new(
                    "invalid_request",
                    "`version` must equal the document's own `version`",
                ));
            }
            Ok(Request::Policy {
                version: b.version,
                document: b.document,
                signature: b.signature,
            })
        }
        "health_check" => {
            typed::<EmptyBody>(value)?;
            Ok(Request::HealthCheck)
        }
        "info" => {
            typed::<EmptyBody>(value)?;
            Ok(Request::Info)
        }
        "rotate_client_cert" => {
            let b: RotateBody = typed_secret(
                value,
                "expected {\"correlation_id\", \"cert_pem\": string, \"key_pem\": string}",
            )?;
            if b.cert_pem.is_empty() || b.key_pem.is_empty() {
                return Err(Rejection::new(
                    "invalid_request",
                    "`cert_pem` and `key_pem` must not be empty",
                ));
            }
            Ok(Request::RotateClientCert {
                cert_pem: b.cert_pem,
                key_pem: SecretPem(zeroize::Zeroizing::new(b.key_pem)),
            })
        }
        "install_code" => {
            let b: InstallCodeBody = typed_secret(
                value,
                "`install_code` takes `action` (\"add\" or \"remove\"), `device` (zigbee:<IEEE address>) and, for `add`, `code` (a string of hex digits)",
            )?;
            let device = zigbee_device_id(&b.device)?;
            match (b.action, b.code) {
                (InstallCodeAction::Add, Some(text)) => {
                    let text = zeroize::Zeroizing::new(text);
                    let code = fieldgate_zigbee::install_code::InstallCode::parse(&text)
                        .map_err(|e| Rejection::new("invalid_install_code", e.to_string()))?;
                    Ok(Request::AddInstallCode {
                        device,
                        code: SecretCode(zeroize::Zeroizing::new(code.as_bytes().to_vec())),
                    })
                }
                (InstallCodeAction::Add, None) => {
                    Err(Rejection::new("invalid_request", "`add` needs `code`"))
                }
                (InstallCodeAction::Remove, None) => Ok(Request::RemoveInstallCode { device }),
                (InstallCodeAction::Remove, Some(_)) => Err(Rejection::new(
                    "invalid_request",
                    "`remove` takes no `code`",
                )),
            }
        }
        "lora_device" => {
            let b: LoraDeviceBody = typed_secret(
                value,
                "`lora_device` takes `device` (lora:<DevEUI>) and either `join_eui` and `app_key` (OTAA) or `dev_addr`, `nwk_s_key` and `app_s_key` (ABP), and optionally `decoder` (\"lpp\" or \"raw\")",
            )?;
            let (device, kind, secret) =
                crate::radio::lora::keys::credential(&crate::radio::lora::keys::KeyFields {
                    dev_eui: &b.device,
                    join_eui: b.join_eui.as_deref(),
                    app_key: b.app_key.as_deref(),
                    dev_addr: b.dev_addr.as_deref(),
                    nwk_s_key: b.nwk_s_key.as_deref(),
                    app_s_key: b.app_s_key.as_deref(),
                    decoder: b.decoder.as_deref(),
                })
                .map_err(|e| Rejection::new(e.code, e.message))?;
            Ok(Request::AddLoraDevice {
                device,
                kind,
                keys: SecretCode(zeroize::Zeroizing::new(secret.expose().to_vec())),
            })
        }
        "rotate_network_key" => {
            let b: RadioBody = typed(value)?;
            if !is_word(&b.radio, 32) {
                return Err(Rejection::new(
                    "unknown_radio",
                    "`radio` is not a radio name",
                ));
            }
            Ok(Request::RotateNetworkKey { radio: b.radio })
        }
        "devices" => {
            let b: DevicesBody = typed(value)?;
            let limit = b.limit.unwrap_or(DEFAULT_PAGE);
            if limit == 0 || limit > MAX_PAGE {
                return Err(Rejection::new(
                    "invalid_request",
                    format!("`limit` must be between 1 and {MAX_PAGE}"),
                ));
            }
            if let Some(l) = &b.lifecycle {
                if crate::model::Lifecycle::parse(l).is_none() {
                    return Err(Rejection::new(
                        "invalid_request",
                        "`lifecycle` is one of pending, active, quarantined, decommissioned",
                    ));
                }
            }
            Ok(Request::Devices {
                offset: b.offset.unwrap_or(0),
                limit,
                lifecycle: b.lifecycle,
            })
        }
        "device" => {
            let b: DeviceBody = typed(value)?;
            Ok(Request::Device {
                device: device_id(&b.device)?,
            })
        }
        "rename" => {
            let b: RenameBody = typed(value)?;
            let Some(name) = b.name else {
                return Err(Rejection::new(
                    "invalid_request",
                    "`name` is required (null removes the device's name)",
                ));
            };
            if let Some(n) = &name {
                if !crate::store::names::valid(n) {
                    return Err(Rejection::new(
                        "invalid_request",
                        format!(
                            "`name` must be 1 to {} of A-Z a-z 0-9 space _ - . (no leading or trailing space), or null",
                            crate::store::names::MAX_NAME
                        ),
                    ));
                }
            }
            Ok(Request::Rename {
                device: device_id(&b.device)?,
                name,
            })
        }
        other => Err(Rejection::new(
            "unknown_operation",
            format!(
                "unknown operation `{}`: one of {}",
                printable(other, 32),
                OPERATIONS.join(", ")
            ),
        )),
    }
}
#[cfg(test)]
mod tests;
