//! The policy document and its evaluation at the edge: admission, health
//! thresholds, firmware compliance, credential rotation and local rules.
//!
//! Pure and synchronous: the hub owns one [`PolicyEngine`] and asks it questions;
//! this module never touches the store, the radios or the network. A policy is
//! validated whole before it replaces the old one, and may be required to carry
//! an ed25519 signature over its canonical JSON (see `docs/policy.md`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::config::Protocol;
use crate::model::{DeviceId, PowerSource, Value};
use crate::store::audit::canonical_json;

/// Zigbee's own upper bound for a join window; no policy may exceed it.
pub const MAX_JOIN_WINDOW_S: u32 = 254;

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
}

/// What is known about a device when a question is asked.
#[derive(Debug, Clone, Default)]
pub struct DeviceFacts<'a> {
    pub protocol: Option<Protocol>,
    pub address: &'a str,
    pub manufacturer: Option<&'a str>,
    pub model: Option<&'a str>,
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
        Some(true)
    }

    fn is_empty(&self) -> bool {
        self.protocol.is_none()
            && self.address.is_none()
            && self.manufacturer.is_none()
            && self.model.is_none()
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
        if self.version == 0 {
            return Err(err("$.version", "must be at least 1"));
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

    /// Canonical bytes that a signature covers: sorted keys, no whitespace.
    pub fn canonical_bytes(document: &serde_json::Value) -> Vec<u8> {
        canonical_json(document).into_bytes()
    }
}

/// A policy as received: the document, and a signature if the sender signed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPolicy {
    pub policy: serde_json::Value,
    /// Hex ed25519 signature over the canonical JSON of `policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Accepts either a bare policy document or `{"policy": ..., "signature": ...}`.
pub fn parse_envelope(bytes: &[u8]) -> Result<SignedPolicy, PolicyError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| err("$", format!("not JSON: {e}")))?;
    if v.get("policy").is_some() {
        serde_json::from_value(v)
            .map_err(|e| err("$", format!("not a signed policy envelope: {e}")))
    } else {
        Ok(SignedPolicy {
            policy: v,
            signature: None,
        })
    }
}

/// Parses a hex ed25519 public key (64 hex characters).
pub fn parse_public_key(hex_text: &str) -> Result<VerifyingKey, PolicyError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_text.trim(), &mut bytes)
        .map_err(|_| err("key", "not 64 hex characters"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| err("key", "not an ed25519 public key"))
}

/// Validates an envelope against an optional pinned key; returns the policy.
pub fn accept(
    envelope: &SignedPolicy,
    pinned: Option<&VerifyingKey>,
) -> Result<Policy, PolicyError> {
    if let Some(key) = pinned {
        let sig_hex = envelope.signature.as_deref().ok_or_else(|| {
            err(
                "$.signature",
                "a signature is required: this gateway pins a policy key",
            )
        })?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(sig_hex.trim(), &mut sig)
            .map_err(|_| err("$.signature", "not 128 hex characters"))?;
        key.verify(
            &Policy::canonical_bytes(&envelope.policy),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| err("$.signature", "does not verify with the pinned key"))?;
    }
    let text = serde_json::to_vec(&envelope.policy).map_err(|e| err("$", e.to_string()))?;
    Policy::parse(&text)
}

/// Signs a policy document with a 32-byte ed25519 seed (for `fieldgate policy sign`).
pub fn sign(document: &serde_json::Value, seed: &[u8; 32]) -> SignedPolicy {
    let key = SigningKey::from_bytes(seed);
    let sig = key.sign(&Policy::canonical_bytes(document));
    SignedPolicy {
        policy: document.clone(),
        signature: Some(hex::encode(sig.to_bytes())),
    }
}

pub fn public_key_hex(seed: &[u8; 32]) -> String {
    hex::encode(SigningKey::from_bytes(seed).verifying_key().to_bytes())
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Admit {
    Admit,
    Deny {
        reason: String,
    },
    /// Needs facts not known yet (e.g. the model, before the interview).
    Undecided,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Compliance {
    Compliant,
    /// Below the minimum: quarantined.
    Below {
        min_version: String,
        commands_allowed: bool,
    },
    /// No rule applies, or the firmware is not known.
    Unregulated,
}

/// A rule firing: send `command` to `device`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Firing {
    pub rule: String,
    pub device: String,
    pub command: serde_json::Value,
    pub trigger_value: Value,
}

#[derive(Debug, Clone, Copy, Default)]
struct RuleState {
    /// The condition held at the last reading (so only a crossing fires).
    active: bool,
    last_fired: Option<Instant>,
    suppressed: u64,
}

/// The policy, indexed for evaluation. Immutable, so it can be shared with the
/// store writer; the state rules keep between readings lives in [`RuleStates`].
pub struct PolicyEngine {
    pub policy: Policy,
    /// Rule indexes by device id, then reading name (looked up without allocating).
    index: HashMap<String, HashMap<String, Vec<usize>>>,
}

/// Per-rule state (armed or not, last firing), owned by whoever feeds readings.
#[derive(Debug, Clone, Default)]
pub struct RuleStates(Vec<RuleState>);

impl PolicyEngine {
    pub fn new(policy: Policy) -> PolicyEngine {
        let mut index: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
        for (i, r) in policy.rules.iter().enumerate() {
            let device = r.when.device.to_ascii_lowercase();
            index
                .entry(device)
                .or_default()
                .entry(r.when.reading.clone())
                .or_default()
                .push(i);
        }
        PolicyEngine { policy, index }
    }

    /// Fresh state for this policy's rules (all disarmed).
    pub fn new_states(&self) -> RuleStates {
        RuleStates(vec![RuleState::default(); self.policy.rules.len()])
    }

    /// The policy in force before any is received: open admission, default health.
    pub fn default_policy() -> Policy {
        Policy {
            version: 0,
            description: Some("built-in default".into()),
            admission: Admission::default(),
            health: Health::default(),
            firmware: Vec::new(),
            credentials: CredentialPolicy::default(),
            rules: Vec::new(),
        }
    }

    pub fn admit(&self, d: &DeviceFacts<'_>) -> Admit {
        let a = &self.policy.admission;
        let mut undecided = false;
        for (i, m) in a.deny.iter().enumerate() {
            match m.matches(d) {
                Some(true) => {
                    return Admit::Deny {
                        reason: format!("matches admission.deny[{i}]"),
                    }
                }
                None => undecided = true,
                Some(false) => {}
            }
        }
        if a.mode == AdmissionMode::Allowlist {
            let mut any_unknown = false;
            for m in &a.allow {
                match m.matches(d) {
                    Some(true) if !undecided => return Admit::Admit,
                    Some(true) => return Admit::Undecided,
                    None => any_unknown = true,
                    Some(false) => {}
                }
            }
            if any_unknown {
                return Admit::Undecided;
            }
            return Admit::Deny {
                reason: "not on the allowlist".into(),
            };
        }
        if undecided {
            Admit::Undecided
        } else {
            Admit::Admit
        }
    }

    pub fn firmware(&self, d: &DeviceFacts<'_>, firmware: Option<&str>) -> Compliance {
        let Some(fw) = firmware else {
            return Compliance::Unregulated;
        };
        for rule in &self.policy.firmware {
            if rule.matcher.matches(d) == Some(true) {
                return if version_lt(fw, &rule.min_version) {
                    Compliance::Below {
                        min_version: rule.min_version.clone(),
                        commands_allowed: rule.commands == QuarantineCommands::Allow,
                    }
                } else {
                    Compliance::Compliant
                };
            }
        }
        Compliance::Unregulated
    }

    /// How long a device may stay silent before it counts as offline.
    pub fn availability_timeout(&self, d: &DeviceFacts<'_>, power: PowerSource) -> Duration {
        let h = &self.policy.health;
        for o in &h.overrides {
            if o.matcher.matches(d) == Some(true) {
                return o.timeout;
            }
        }
        match power {
            PowerSource::Mains => h.mains_timeout,
            PowerSource::Battery | PowerSource::Unknown => h.battery_timeout,
        }
    }

    /// Feeds one reading; returns the rules that fire on this crossing.
    pub fn on_reading(
        &self,
        states: &mut RuleStates,
        device: &str,
        reading: &str,
        value: &Value,
        now: Instant,
    ) -> Vec<Firing> {
        let Some(rules) = self
            .index
            .get(device)
            .and_then(|by_reading| by_reading.get(reading))
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for &i in rules {
            let rule = &self.policy.rules[i];
            let Some(state) = states.0.get_mut(i) else {
                continue;
            };
            let holds = condition_holds(&rule.when, value, state.active);
            let Some(holds) = holds else { continue };
            let crossed = holds && !state.active;
            state.active = holds;
            if !crossed {
                continue;
            }
            if let Some(last) = state.last_fired {
                if now.duration_since(last) < rule.min_interval {
                    state.suppressed += 1;
                    continue;
                }
            }
            state.last_fired = Some(now);
            out.push(Firing {
                rule: rule.id.clone(),
                device: rule.then.device.clone(),
                command: rule.then.command.clone(),
                trigger_value: value.clone(),
            });
        }
        out
    }

    /// Crossings suppressed by `min_interval`, per rule id.
    pub fn suppressed(&self, states: &RuleStates) -> Vec<(String, u64)> {
        self.policy
            .rules
            .iter()
            .zip(&states.0)
            .map(|(r, s)| (r.id.clone(), s.suppressed))
            .collect()
    }
}

/// Whether the condition holds for `value`, given whether it held before (for
/// hysteresis). `None` when the value's type cannot be compared.
fn condition_holds(c: &Condition, value: &Value, was_active: bool) -> Option<bool> {
    match (&c.value, value) {
        (Value::Number(t), Value::Number(v)) => {
            let (t, v, h) = (*t, *v, c.hysteresis);
            // While active, the threshold moves back by the hysteresis, so noise
            // around the threshold does not re-arm the rule.
            Some(match c.op {
                Op::Gt => {
                    if was_active {
                        v > t - h
                    } else {
                        v > t
                    }
                }
                Op::Ge => {
                    if was_active {
                        v >= t - h
                    } else {
                        v >= t
                    }
                }
                Op::Lt => {
                    if was_active {
                        v < t + h
                    } else {
                        v < t
                    }
                }
                Op::Le => {
                    if was_active {
                        v <= t + h
                    } else {
                        v <= t
                    }
                }
                Op::Eq => {
                    if was_active {
                        (v - t).abs() <= h
                    } else {
                        v == t
                    }
                }
                Op::Ne => {
                    if was_active {
                        (v - t).abs() > h
                    } else {
                        v != t
                    }
                }
            })
        }
        (Value::Bool(t), Value::Bool(v)) => match c.op {
            Op::Eq => Some(v == t),
            Op::Ne => Some(v != t),
            _ => None,
        },
        (Value::Text(t), Value::Text(v)) => match c.op {
            Op::Eq => Some(v == t),
            Op::Ne => Some(v != t),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: serde_json::Value) -> Result<Policy, PolicyError> {
        Policy::parse(v.to_string().as_bytes())
    }

    fn facts<'a>(addr: &'a str, manu: Option<&'a str>, model: Option<&'a str>) -> DeviceFacts<'a> {
        DeviceFacts {
            protocol: Some(Protocol::Zigbee),
            address: addr,
            manufacturer: manu,
            model,
        }
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

    #[test]
    fn admission_deny_allow_and_undecided() {
        let p = policy(json!({"version": 1, "admission": {"mode": "allowlist",
            "allow": [{"manufacturer": "LUMI", "model": "lumi.*"}],
            "deny": [{"address": "0x00124b00000000ff"}]}}))
        .unwrap();
        let e = PolicyEngine::new(p);
        assert!(matches!(
            e.admit(&facts("0x00124b00000000ff", None, None)),
            Admit::Deny { .. }
        ));
        assert_eq!(e.admit(&facts("0x1", None, None)), Admit::Undecided);
        assert_eq!(
            e.admit(&facts("0x1", Some("LUMI"), Some("lumi.weather"))),
            Admit::Admit
        );
        assert!(matches!(
            e.admit(&facts("0x1", Some("IKEA"), Some("TRADFRI"))),
            Admit::Deny { .. }
        ));
        let open = PolicyEngine::new(PolicyEngine::default_policy());
        assert_eq!(open.admit(&facts("0x1", None, None)), Admit::Admit);
    }

    #[test]
    fn firmware_and_health() {
        let p = policy(json!({"version": 2,
            "firmware": [{"match": {"model": "plug*"}, "min_version": "1.4.0", "commands": "allow"}],
            "health": {"overrides": [{"match": {"model": "sleepy*"}, "timeout": "3days"}]}}))
        .unwrap();
        let e = PolicyEngine::new(p);
        let plug = facts("0x1", Some("ACME"), Some("plug-2"));
        assert_eq!(
            e.firmware(&plug, Some("1.3.9")),
            Compliance::Below {
                min_version: "1.4.0".into(),
                commands_allowed: true
            }
        );
        assert_eq!(e.firmware(&plug, Some("1.10.0")), Compliance::Compliant);
        assert_eq!(
            e.firmware(&facts("0x1", None, Some("other")), Some("0.1")),
            Compliance::Unregulated
        );
        assert_eq!(
            e.availability_timeout(&plug, PowerSource::Mains),
            Duration::from_secs(600)
        );
        assert_eq!(
            e.availability_timeout(&plug, PowerSource::Battery),
            Duration::from_secs(90_000)
        );
        assert_eq!(
            e.availability_timeout(&facts("0x2", None, Some("sleepy-1")), PowerSource::Battery),
            Duration::from_secs(3 * 86_400)
        );
    }

    #[test]
    fn rules_fire_once_per_crossing_with_hysteresis_and_rate_limit() {
        let p = policy(json!({"version": 3, "rules": [
            {"id": "hot", "when": {"device": "zigbee:0x1", "reading": "temperature", "op": ">", "value": 30.0, "hysteresis": 1.0},
             "then": {"device": "zigbee:0x2", "command": {"state": "on"}}, "min_interval": "10s"},
            {"id": "leak", "when": {"device": "zigbee:0x3", "reading": "water_leak", "op": "==", "value": true},
             "then": {"device": "zigbee:0x4", "command": {"state": "off"}}}]}))
        .unwrap();
        let e = PolicyEngine::new(p);
        let mut st = e.new_states();
        let t0 = Instant::now();
        let n = |v: f64| Value::Number(v);
        let fire = |st: &mut RuleStates, v: f64, s: u64| {
            e.on_reading(
                st,
                "zigbee:0x1",
                "temperature",
                &n(v),
                t0 + Duration::from_secs(s),
            )
            .len()
        };
        assert_eq!(fire(&mut st, 29.0, 0), 0);
        assert_eq!(fire(&mut st, 30.5, 1), 1); // crossing
        assert_eq!(fire(&mut st, 31.0, 2), 0); // still above: no new crossing
        assert_eq!(fire(&mut st, 29.5, 3), 0); // within hysteresis: stays active
        assert_eq!(fire(&mut st, 30.6, 4), 0);
        assert_eq!(fire(&mut st, 28.9, 5), 0); // re-armed below 29
        assert_eq!(fire(&mut st, 30.2, 6), 0); // crossing inside min_interval: suppressed
        assert_eq!(fire(&mut st, 28.0, 20), 0);
        assert_eq!(fire(&mut st, 31.0, 21), 1); // next crossing after the interval
        assert_eq!(e.suppressed(&st)[0], ("hot".to_string(), 1));
        let leak = |st: &mut RuleStates, v: bool| {
            e.on_reading(st, "zigbee:0x3", "water_leak", &Value::Bool(v), t0)
        };
        assert!(leak(&mut st, false).is_empty());
        let f = leak(&mut st, true);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].device, "zigbee:0x4");
        assert!(leak(&mut st, true).is_empty());
        // A value of the wrong type neither fires nor disarms.
        assert!(e
            .on_reading(
                &mut st,
                "zigbee:0x3",
                "water_leak",
                &Value::Text("wet".into()),
                t0
            )
            .is_empty());
    }

    #[test]
    fn signatures_are_checked_against_the_pinned_key() {
        let seed = [42u8; 32];
        let key = parse_public_key(&public_key_hex(&seed)).unwrap();
        let doc = json!({"version": 5, "admission": {"max_join_window_s": 120}});
        let signed = sign(&doc, &seed);
        assert_eq!(accept(&signed, Some(&key)).unwrap().version, 5);
        // Unsigned: refused when a key is pinned, fine when none is.
        let bare = SignedPolicy {
            policy: doc.clone(),
            signature: None,
        };
        assert!(accept(&bare, Some(&key))
            .unwrap_err()
            .to_string()
            .contains("signature is required"));
        assert!(accept(&bare, None).is_ok());
        // Tampered document or signature: refused.
        let mut tampered = signed.clone();
        tampered.policy["admission"]["max_join_window_s"] = json!(254);
        assert!(accept(&tampered, Some(&key))
            .unwrap_err()
            .to_string()
            .contains("does not verify"));
        let mut bad_sig = signed.clone();
        let mut s = bad_sig.signature.take().unwrap();
        s.replace_range(0..2, if &s[0..2] == "00" { "01" } else { "00" });
        bad_sig.signature = Some(s);
        assert!(accept(&bad_sig, Some(&key)).is_err());
        // Key order in the received JSON does not matter: the signature covers canonical JSON.
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{"admission": {"max_join_window_s": 120}, "version": 5}"#)
                .unwrap();
        let env = SignedPolicy {
            policy: reordered,
            signature: signed.signature.clone(),
        };
        assert!(accept(&env, Some(&key)).is_ok());
    }
}
