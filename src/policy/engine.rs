//! Evaluating a policy: admission of a joining device, firmware compliance, how
//! long a device may stay silent, and local rules fed one reading at a time (with
//! hysteresis and a rate limit). Pure and synchronous: [`PolicyEngine`] is immutable
//! and the state rules keep lives in [`RuleStates`], owned by the caller.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    version_lt, Admission, AdmissionMode, Condition, CredentialPolicy, DeviceFacts, Health, Op,
    Policy, QuarantineCommands,
};
use crate::model::{PowerSource, Value};

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
        if let Some(t) = self.availability_override(d) {
            return t;
        }
        match power {
            PowerSource::Mains => h.mains_timeout,
            PowerSource::Battery | PowerSource::Unknown => h.battery_timeout,
        }
    }

    /// The timeout of the first health override that matches the device, if any: an
    /// explicit override wins over what the device's radio learnt.
    pub fn availability_override(&self, d: &DeviceFacts<'_>) -> Option<Duration> {
        self.policy
            .health
            .overrides
            .iter()
            .find(|o| o.matcher.matches(d) == Some(true))
            .map(|o| o.timeout)
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
    use crate::config::Protocol;
    use crate::policy::PolicyError;
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
            capabilities: &[],
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
}
