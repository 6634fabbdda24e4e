//! The policy document and its evaluation at the edge: admission, health
//! thresholds, firmware compliance, credential rotation and local rules.
//!
//! Pure and synchronous: the hub owns one [`PolicyEngine`] and asks it questions;
//! this module never touches the store, the radios or the network. A policy is
//! validated whole before it replaces the old one, and may be required to carry
//! an ed25519 signature over its canonical JSON (see `docs/policy.md`).
//!
//! This file holds the document: its types, parsing and validation, and what its
//! device matches and version strings mean. `engine` answers the questions
//! (admission, firmware compliance, availability timeouts, local rules) and
//! `signing` checks and makes the signatures.

mod engine;
mod signing;

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Protocol;
use crate::model::{DeviceId, Value};

pub use engine::{Admit, Compliance, Firing, PolicyEngine, RuleStates};
pub use signing::{accept, parse_envelope, parse_public_key, public_key_hex, sign, SignedPolicy};

/// Zigbee's own upper bound for a join window; no policy may exceed it.
pub const MAX_JOIN_WINDOW_S: u32 = 254;
/// The largest version a policy may carry: 2^53 - 1, the largest integer every JSON
/// reader holds exactly (a JavaScript consumer would read a larger one as another
/// number), and inside the store's signed 64-bit column.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Increases with every new policy; an older or equal version is refused.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub admission: Admission,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub firmware: Vec<FirmwareRule>,
    #[serde(default)]
    pub credentials: CredentialPolicy,
    #[serde(default)]
    pub rules: Vec<LocalRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionMode {
    /// Anything that joins inside a window is admitted unless denylisted.
    #[default]
    Open,
    /// Only devices matching an `allow` entry are admitted.
    Allowlist,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admission {
    #[serde(default = "default_window")]
    pub max_join_window_s: u32,
    #[serde(default)]
    pub mode: AdmissionMode,
    #[serde(default)]
    pub allow: Vec<DeviceMatch>,
    #[serde(default)]
    pub deny: Vec<DeviceMatch>,
    /// Zigbee devices joining for the first time must have an install code registered
    /// (`fieldgate install-code add`); the coordinator is also told to accept only
    /// install-code link keys.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_install_code: bool,
}

fn default_window() -> u32 {
    MAX_JOIN_WINDOW_S
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_join_window_s: default_window(),
            mode: AdmissionMode::Open,
            allow: Vec::new(),
            deny: Vec::new(),
            require_install_code: false,
        }
    }
}

/// Matches devices; every field given must match (`*` is a wildcard in strings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Native address (IEEE address, DevEUI, MAC), case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The name a discovered device advertises (BLE local name), a `*` pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A service UUID the device advertises data for (BLE service data): 16-bit
    /// (`fcd2`), 32-bit or the full 128-bit form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// What is known about a device when a question is asked.
#[derive(Debug, Clone, Default)]
pub struct DeviceFacts<'a> {
    pub protocol: Option<Protocol>,
    pub address: &'a str,
    pub manufacturer: Option<&'a str>,
    pub model: Option<&'a str>,
    /// What its radio said it can do or advertises (`name:...`, `service:<uuid>`);
    /// empty until it is described.
    pub capabilities: &'a [String],
}

/// The Bluetooth base UUID's tail: a 16- or 32-bit UUID `xxxx` is
/// `0000xxxx-0000-1000-8000-00805f9b34fb`.
const BLUETOOTH_BASE_TAIL: &str = "-0000-1000-8000-00805f9b34fb";

/// A service UUID as a policy gives it (`fcd2`, `0xFCD2`, `0000fcd2`, or the full
/// 128-bit form) in the full lowercase form devices' capabilities carry; `None` when
/// it is no UUID.
pub fn full_service_uuid(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t)
        .to_ascii_lowercase();
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    match t.len() {
        4 if hex(&t) => Some(format!("0000{t}{BLUETOOTH_BASE_TAIL}")),
        8 if hex(&t) => Some(format!("{t}{BLUETOOTH_BASE_TAIL}")),
        36 => {
            let groups: Vec<&str> = t.split('-').collect();
            let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            (lens == [8, 4, 4, 4, 12] && groups.iter().all(|g| hex(g))).then_some(t)
        }
        _ => None,
    }
}

/// `*` matches any run of characters; comparison ignores ASCII case. Works on
/// bytes without allocating (it runs for every list entry on every join).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

impl DeviceMatch {
    /// `None` when a field it tests is not known yet (e.g. model before the interview).
    pub fn matches(&self, d: &DeviceFacts<'_>) -> Option<bool> {
        if let Some(p) = self.protocol {
            if d.protocol.is_some_and(|dp| dp != p) {
                return Some(false);
            }
        }
        if let Some(a) = &self.address {
            if !glob_match(a, d.address) {
                return Some(false);
            }
        }
        for (want, have) in [(&self.manufacturer, d.manufacturer), (&self.model, d.model)] {
            if let Some(w) = want {
                match have {
                    None => return None,
                    Some(h) if !glob_match(w, h) => return Some(false),
                    Some(_) => {}
                }
            }
        }
        if self.name.is_none() && self.service.is_none() {
            return Some(true);
        }
        // Advertised names and services are known once the device is described.
        if d.capabilities.is_empty() {
            return None;
        }
        if let Some(pattern) = &self.name {
            let named = d
                .capabilities
                .iter()
                .filter_map(|c| c.strip_prefix("name:"))
                .any(|n| glob_match(pattern, n));
            if !named {
                return Some(false);
            }
        }
        if let Some(service) = &self.service {
            let Some(want) = full_service_uuid(service) else {
                return Some(false);
            };
            let serves = d
                .capabilities
                .iter()
                .filter_map(|c| c.strip_prefix("service:"))
                .any(|u| u.eq_ignore_ascii_case(&want));
            if !serves {
                return Some(false);
            }
        }
        Some(true)
    }

    fn is_empty(&self) -> bool {
        self.protocol.is_none()
            && self.address.is_none()
            && self.manufacturer.is_none()
            && self.model.is_none()
            && self.name.is_none()
            && self.service.is_none()
    }

    /// A field that can never match, with its path below the match.
    fn check(&self) -> Result<(), (&'static str, String)> {
        match &self.service {
            Some(s) if full_service_uuid(s).is_none() => Err((
                "service",
                format!(
                    "`{s}` is no service UUID: give 4 or 8 hex digits (`fcd2`) or the 128-bit form"
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// A mains-powered device silent this long is offline (zigbee2mqtt's default: 10 min).
    #[serde(default = "default_mains", with = "humantime_serde")]
    pub mains_timeout: Duration,
    /// A battery device silent this long is offline (zigbee2mqtt's default: 25 h).
    #[serde(default = "default_battery", with = "humantime_serde")]
    pub battery_timeout: Duration,
    #[serde(default)]
    pub overrides: Vec<HealthOverride>,
    /// Battery percentage below which a device is flagged.
    #[serde(default = "default_battery_low")]
    pub battery_low_pct: f64,
    /// Link quality below which a device is flagged (Zigbee LQI 0-255).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weak_lqi: Option<u8>,
    /// RSSI below which a device is flagged (dBm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weak_rssi: Option<i16>,
}

fn default_mains() -> Duration {
    Duration::from_secs(600)
}
fn default_battery() -> Duration {
    Duration::from_secs(25 * 3600)
}
fn default_battery_low() -> f64 {
    20.0
}

impl Default for Health {
    fn default() -> Self {
        Health {
            mains_timeout: default_mains(),
            battery_timeout: default_battery(),
            overrides: Vec::new(),
            battery_low_pct: default_battery_low(),
            weak_lqi: None,
            weak_rssi: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthOverride {
    #[serde(rename = "match")]
    pub matcher: DeviceMatch,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineCommands {
    /// Commands to a quarantined device are refused (default).
    #[default]
    Refuse,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareRule {
    #[serde(rename = "match")]
    pub matcher: DeviceMatch,
    pub min_version: String,
    #[serde(default)]
    pub commands: QuarantineCommands,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialPolicy {
    /// Credentials older than this are flagged as due for rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_after_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub device: String,
    pub reading: String,
    pub op: Op,
    pub value: Value,
    /// For numeric thresholds: how far back across the threshold the value must
    /// go before the rule can fire again.
    #[serde(default)]
    pub hysteresis: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleAction {
    pub device: String,
    /// The command for the target device, e.g. `{"state": "off"}`.
    pub command: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRule {
    pub id: String,
    pub when: Condition,
    pub then: RuleAction,
    /// At most one firing per this interval; crossings inside it are suppressed.
    #[serde(default, with = "humantime_serde")]
    pub min_interval: Duration,
}

/// Why a policy was refused; `path` points into the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PolicyError {
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        path: path.into(),
        message: message.into(),
    }
}

impl Policy {
    /// Parses and validates a policy document (JSON).
    pub fn parse(text: &[u8]) -> Result<Policy, PolicyError> {
        let p: Policy = serde_json::from_slice(text)
            .map_err(|e| err("$", format!("not a valid policy document: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.version == 0 || self.version > MAX_VERSION {
            return Err(err(
                "$.version",
                format!("must be between 1 and {MAX_VERSION}"),
            ));
        }
        let a = &self.admission;
        if a.max_join_window_s == 0 || a.max_join_window_s > MAX_JOIN_WINDOW_S {
            return Err(err(
                "$.admission.max_join_window_s",
                format!("must be between 1 and {MAX_JOIN_WINDOW_S}"),
            ));
        }
        for (list, name) in [(&a.allow, "allow"), (&a.deny, "deny")] {
            for (i, m) in list.iter().enumerate() {
                if m.is_empty() {
                    return Err(err(
                        format!("$.admission.{name}[{i}]"),
                        "an empty match would match every device",
                    ));
                }
                if let Err((field, message)) = m.check() {
                    return Err(err(format!("$.admission.{name}[{i}].{field}"), message));
                }
            }
        }
        if a.mode == AdmissionMode::Allowlist && a.allow.is_empty() {
            return Err(err(
                "$.admission.allow",
                "allowlist mode with an empty allowlist would refuse every device",
            ));
        }
        let h = &self.health;
        if !(0.0..=100.0).contains(&h.battery_low_pct) {
            return Err(err("$.health.battery_low_pct", "must be between 0 and 100"));
        }
        for (name, d) in [
            ("mains_timeout", h.mains_timeout),
            ("battery_timeout", h.battery_timeout),
        ] {
            if d < Duration::from_secs(10) {
                return Err(err(format!("$.health.{name}"), "must be at least 10s"));
            }
        }
        for (i, o) in h.overrides.iter().enumerate() {
            if o.matcher.is_empty() {
                return Err(err(
                    format!("$.health.overrides[{i}].match"),
                    "must name at least one field",
                ));
            }
            if let Err((field, message)) = o.matcher.check() {
                return Err(err(
                    format!("$.health.overrides[{i}].match.{field}"),
                    message,
                ));
            }
            if o.timeout < Duration::from_secs(10) {
                return Err(err(
                    format!("$.health.overrides[{i}].timeout"),
                    "must be at least 10s",
                ));
            }
        }
        for (i, f) in self.firmware.iter().enumerate() {
            if f.matcher.is_empty() {
                return Err(err(
                    format!("$.firmware[{i}].match"),
                    "must name at least one field",
                ));
            }
            if version_parts(&f.min_version).is_empty() {
                return Err(err(
                    format!("$.firmware[{i}].min_version"),
                    "is not a version",
                ));
            }
        }
        if self.credentials.rotate_after_days == Some(0) {
            return Err(err("$.credentials.rotate_after_days", "must be at least 1"));
        }
        let mut ids = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = |f: &str| format!("$.rules[{i}].{f}");
            if r.id.is_empty() || r.id.len() > 64 {
                return Err(err(at("id"), "must be 1 to 64 characters"));
            }
            if !ids.insert(r.id.as_str()) {
                return Err(err(at("id"), format!("duplicate rule id `{}`", r.id)));
            }
            if DeviceId::parse(&r.when.device).is_none() {
                return Err(err(
                    at("when.device"),
                    format!("`{}` is not a device id", r.when.device),
                ));
            }
            if DeviceId::parse(&r.then.device).is_none() {
                return Err(err(
                    at("then.device"),
                    format!("`{}` is not a device id", r.then.device),
                ));
            }
            if r.when.reading.is_empty() {
                return Err(err(at("when.reading"), "must not be empty"));
            }
            if !(r.when.hysteresis >= 0.0 && r.when.hysteresis.is_finite()) {
                return Err(err(at("when.hysteresis"), "must be a non-negative number"));
            }
            let numeric_op = matches!(r.when.op, Op::Gt | Op::Ge | Op::Lt | Op::Le);
            match &r.when.value {
                Value::Number(n) if !n.is_finite() => {
                    return Err(err(at("when.value"), "must be finite"))
                }
                Value::Number(_) => {}
                _ if numeric_op => {
                    return Err(err(at("when.op"), "ordering needs a numeric value"))
                }
                _ if r.when.hysteresis > 0.0 => {
                    return Err(err(
                        at("when.hysteresis"),
                        "only applies to numeric thresholds",
                    ))
                }
                _ => {}
            }
            if !r.then.command.is_object() {
                return Err(err(at("then.command"), "must be a JSON object"));
            }
        }
        Ok(())
    }
}

/// Numeric and textual parts of a version string, for ordering: `1.2.10` > `1.2.9`.
fn version_parts(v: &str) -> Vec<VersionPart> {
    v.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<u64>() {
            Ok(n) => VersionPart::Num(n),
            Err(_) => VersionPart::Text(s.to_ascii_lowercase()),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum VersionPart {
    Num(u64),
    Text(String),
}

/// `a < b` in version order (missing parts count as zero).
pub fn version_lt(a: &str, b: &str) -> bool {
    let (pa, pb) = (version_parts(a), version_parts(b));
    let n = pa.len().max(pb.len());
    for i in 0..n {
        let x = pa.get(i).cloned().unwrap_or(VersionPart::Num(0));
        let y = pb.get(i).cloned().unwrap_or(VersionPart::Num(0));
        if x != y {
            return x < y;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> Result<Policy, PolicyError> {
        Policy::parse(v.to_string().as_bytes())
    }

    #[test]
    fn globs() {
        assert!(glob_match("lumi.*", "LUMI.weather"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c", "abd"));
        assert!(glob_match("0x00124b*", "0x00124B0001ABCDEF"));
    }

    #[test]
    fn discovered_devices_match_by_advertised_name_and_service() {
        let caps: Vec<String> = [
            "format:bthome",
            "name:SBBT-002C",
            "service:0000fcd2-0000-1000-8000-00805f9b34fb",
        ]
        .map(String::from)
        .to_vec();
        let facts = DeviceFacts {
            protocol: Some(Protocol::Ble),
            address: "3c:2e:f5:00:00:01",
            capabilities: &caps,
            ..Default::default()
        };
        let m = |v: serde_json::Value| -> DeviceMatch { serde_json::from_value(v).unwrap() };
        assert_eq!(m(json!({"name": "sbbt-*"})).matches(&facts), Some(true));
        assert_eq!(m(json!({"name": "ATC_*"})).matches(&facts), Some(false));
        for uuid in [
            "fcd2",
            "0xFCD2",
            "0000fcd2",
            "0000FCD2-0000-1000-8000-00805F9B34FB",
        ] {
            assert_eq!(
                m(json!({"service": uuid})).matches(&facts),
                Some(true),
                "{uuid}"
            );
        }
        assert_eq!(m(json!({"service": "181a"})).matches(&facts), Some(false));
        // Both given: both must hold.
        assert_eq!(
            m(json!({"protocol": "ble", "name": "SBBT*", "service": "181a"})).matches(&facts),
            Some(false)
        );
        // Not described yet: undecided, not refused.
        let bare = DeviceFacts {
            capabilities: &[],
            ..facts.clone()
        };
        assert_eq!(m(json!({"name": "SBBT*"})).matches(&bare), None);
        // A UUID that is none is refused with its path.
        let e = policy(json!({"version": 1, "admission": {"allow": [{"service": "fcd"}]}}))
            .unwrap_err();
        assert_eq!(e.path, "$.admission.allow[0].service");
        assert!(policy(json!({"version": 1, "admission": {"allow": [{"name": "ATC_*"}]}})).is_ok());
        assert_eq!(full_service_uuid("zzzz"), None);
    }

    #[test]
    fn versions_order_numerically() {
        assert!(version_lt("1.2.9", "1.2.10"));
        assert!(!version_lt("1.2.10", "1.2.9"));
        assert!(!version_lt("2.0", "2.0.0"));
        assert!(version_lt("0x1001", "0x1002"));
        assert!(version_lt("20200101", "20230101"));
    }

    #[test]
    fn bad_policies_are_refused_with_a_path() {
        let cases = [
            (json!({"version": 0}), "$.version"),
            (json!({"version": 9007199254740992u64}), "$.version"),
            (json!({"version": 18446744073709551615u64}), "$.version"),
            (
                json!({"version": 1, "admission": {"max_join_window_s": 600}}),
                "max_join_window_s",
            ),
            (
                json!({"version": 1, "admission": {"mode": "allowlist"}}),
                "$.admission.allow",
            ),
            (
                json!({"version": 1, "admission": {"deny": [{}]}}),
                "deny[0]",
            ),
            (
                json!({"version": 1, "health": {"battery_low_pct": 150}}),
                "battery_low_pct",
            ),
            (
                json!({"version": 1, "firmware": [{"match": {"model": "x"}, "min_version": "..."}]}),
                "min_version",
            ),
            (json!({"version": 1, "surprise": true}), "unknown field"),
            (
                json!({"version": 1, "rules": [{"id": "r", "when": {"device": "nope", "reading": "t", "op": ">", "value": 1}, "then": {"device": "zigbee:0x1", "command": {}}}]}),
                "when.device",
            ),
            (
                json!({"version": 1, "rules": [{"id": "r", "when": {"device": "zigbee:0x1", "reading": "leak", "op": ">", "value": true}, "then": {"device": "zigbee:0x2", "command": {}}}]}),
                "when.op",
            ),
        ];
        for (doc, want) in cases {
            let e = policy(doc.clone()).unwrap_err();
            assert!(e.to_string().contains(want), "{doc}: {e}");
        }
    }
}
