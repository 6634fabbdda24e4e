//! Applying a policy document: version and signature checks, cache, audit.

use super::*;

impl Hub {
    pub(in crate::hub) async fn apply_policy(
        &mut self,
        document: &[u8],
        source: &str,
        actor: &str,
    ) -> Result<PolicyApplied, HubError> {
        let parsed = policy::parse_envelope(document).and_then(|env| {
            let p = policy::accept(&env, self.pinned_key.as_ref())?;
            Ok((env, p))
        });
        let current = self.policy.policy.version;
        let checked = parsed.map_err(|e| e.to_string()).and_then(|(env, p)| {
            if p.version <= current {
                Err(format!(
                    "version {} is not newer than the active version {current}",
                    p.version
                ))
            } else {
                Ok((env, p))
            }
        });
        let (env, p) = match checked {
            Ok(v) => v,
            Err(reason) => {
                self.audit(AuditEntry::new(
                    actor,
                    "policy.apply",
                    source,
                    Outcome::Refused,
                    json!({"error": reason}),
                ))
                .await?;
                return Err(HubError::PolicyRefused(reason));
            }
        };
        let gw = self.gateway_id.clone();
        // `signed` means verified: with no key pinned a signature is not checked (nor kept).
        let signed = env.signature.is_some() && self.pinned_key.is_some();
        let (version, rules) = (p.version, p.rules.len());
        let actor_s = actor.to_string();
        let source_s = source.to_string();
        let doc = env.policy.clone();
        // Kept only when verified, so that the cached policy reads as signed only then.
        let sig = env.signature.clone().filter(|_| signed);
        let stored = self
            .writer
            .write(move |c| {
                policies::activate(c, version, &doc, sig.as_deref(), &source_s)?;
                store::record_audit(
                    c,
                    &gw,
                    &AuditEntry::new(
                        &actor_s,
                        "policy.apply",
                        source_s.as_str(),
                        Outcome::Accepted,
                        json!({"version": version, "signed": signed, "rules": rules}),
                    ),
                )?;
                Ok(())
            })
            .await;
        if let Err(e) = stored {
            let reason = e.to_string();
            self.audit(AuditEntry::new(
                actor,
                "policy.apply",
                source,
                Outcome::Refused,
                json!({"error": reason}),
            ))
            .await?;
            return Err(HubError::PolicyRefused(reason));
        }
        let engine = PolicyEngine::new(p);
        self.rule_states = engine.new_states();
        self.policy = Arc::new(engine);
        tracing::info!(version, signed, rules, "policy applied");
        let (gw, engine) = (self.gateway_id.clone(), self.policy.clone());
        match self
            .writer
            .write(move |c| {
                let now = SystemTime::now();
                let admitted = admit_named_pending(c, &gw, &engine, now)?;
                let notices = recheck_firmware(c, &gw, &engine, now)?;
                Ok((admitted, notices))
            })
            .await
        {
            Ok((admitted, notices)) => {
                if !admitted.is_empty() {
                    tracing::info!(
                        devices = admitted.len(),
                        "pending discovered devices admitted by the new policy"
                    );
                }
                if !notices.is_empty() {
                    tracing::info!(
                        devices = notices.len(),
                        "devices quarantined or released by the new policy's firmware rules"
                    );
                }
                for n in notices {
                    self.notify(n);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "devices not re-evaluated against the new policy")
            }
        }
        self.announce_install_code_policy().await;
        self.notify(Notice::PolicyApplied { version });
        Ok(PolicyApplied {
            version,
            signed,
            rules,
        })
    }
}
