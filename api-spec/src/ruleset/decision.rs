//! The organization's signature on a decision sent to an agent (ADR 0022): keep or revert a change
//! it reported. Signed where it is projected (a process that holds the signing key), so a gateway or
//! anyone between it and the agent cannot keep a change the organization rejected, or revert one it
//! approved. The agent's id is inside the signature: a decision for one machine is not valid on
//! another.

use super::signature::{
    IntegrityError, OrgKey, RuleSetSignature, check_signature, pinned_key, signed,
};
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use std::fmt::Write as _;

/// The first line of every signed decision.
const DOMAIN: &str = "edict-decision-signature-v1";

/// What a decision says, as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionStatement<'a> {
    /// The agent it is for.
    pub agent: &'a str,
    /// The change request.
    pub change_request: &'a str,
    /// The file.
    pub file: &'a str,
    /// `keep` or `revert`.
    pub action: &'a str,
    /// Revert after this time (RFC 3339), for a time-limited exception.
    pub until: Option<&'a str>,
    /// The rule the change is about.
    pub rule: Option<&'a str>,
    /// The hash of the changed content the decision is about.
    pub content_hash: Option<&'a str>,
    /// The decision's id.
    pub decision_id: Option<&'a str>,
}

impl DecisionStatement<'_> {
    /// The signed message.
    fn bytes(&self, key_id: &str, issued_at: DateTime<Utc>) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        let optional = |value: Option<&str>| value.map_or_else(|| "-".to_owned(), hex_of);
        // Writing to a String cannot fail. Free text is hex-encoded: no field can spill into another.
        let _ = writeln!(out, "{DOMAIN}");
        let _ = writeln!(out, "agent {}", hex_of(self.agent));
        let _ = writeln!(out, "change_request {}", hex_of(self.change_request));
        let _ = writeln!(out, "file {}", hex_of(self.file));
        let _ = writeln!(out, "action {}", hex_of(self.action));
        let _ = writeln!(out, "until {}", optional(self.until));
        let _ = writeln!(out, "rule {}", optional(self.rule));
        let _ = writeln!(out, "content_hash {}", optional(self.content_hash));
        let _ = writeln!(out, "decision_id {}", optional(self.decision_id));
        let _ = writeln!(out, "issued_at {}", issued_at.timestamp_micros());
        let _ = writeln!(out, "key_id {key_id}");
        out.into_bytes()
    }

    /// Its signature by `key`.
    pub fn sign(&self, key: &SigningKey, issued_at: DateTime<Utc>) -> RuleSetSignature {
        signed(key, issued_at, |key_id| self.bytes(key_id, issued_at))
    }

    /// Checks `signature` against `keys`, for the agent `agent`.
    ///
    /// # Errors
    /// [`IntegrityError::Misaddressed`] for another agent's decision; unsigned, unknown key or a
    /// signature that does not match.
    pub fn verify(
        &self,
        agent: &str,
        signature: Option<&RuleSetSignature>,
        keys: &[OrgKey],
    ) -> Result<(), IntegrityError> {
        if keys.is_empty() {
            return Err(IntegrityError::NoPinnedKey);
        }
        if self.agent != agent {
            return Err(IntegrityError::Misaddressed {
                sent_team: agent.to_owned(),
                sent_revision: 0,
                team: self.agent.to_owned(),
                revision: 0,
            });
        }
        let signature = signature.ok_or(IntegrityError::Unsigned)?;
        let key = pinned_key(keys, &signature.key_id)?;
        let message = self.bytes(&signature.key_id, signature.issued_at);
        check_signature(&key, &message, &signature.sig)
    }
}

fn hex_of(text: &str) -> String {
    hex::encode(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(action: &str) -> DecisionStatement<'_> {
        DecisionStatement {
            agent: "agent-1",
            change_request: "cr-1",
            file: "/home/dev/.claude/CLAUDE.md",
            action,
            until: None,
            rule: Some("rule-1"),
            content_hash: Some("abc"),
            decision_id: Some("cr-1:3"),
        }
    }

    #[test]
    fn a_signed_decision_verifies_for_its_agent_only_and_as_it_was_signed() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let keys = [OrgKey::of(&key.verifying_key())];
        let at = Utc::now();
        let revert = statement("revert");
        let signature = revert.sign(&key, at);
        assert_eq!(revert.verify("agent-1", Some(&signature), &keys), Ok(()));
        assert!(matches!(
            revert.verify("agent-2", Some(&signature), &keys),
            Err(IntegrityError::Misaddressed { .. })
        ));
        assert_eq!(
            revert.verify("agent-1", None, &keys),
            Err(IntegrityError::Unsigned)
        );
        // Turned into a keep, or given an exception end, on the way: refused.
        assert_eq!(
            statement("keep").verify("agent-1", Some(&signature), &keys),
            Err(IntegrityError::BadSignature)
        );
        let mut until = statement("revert");
        until.until = Some("2999-01-01T00:00:00Z");
        assert_eq!(
            until.verify("agent-1", Some(&signature), &keys),
            Err(IntegrityError::BadSignature)
        );
        let other = SigningKey::from_bytes(&[2; 32]);
        assert!(matches!(
            revert.verify("agent-1", Some(&revert.sign(&other, at)), &keys),
            Err(IntegrityError::UnknownKey(_))
        ));
    }
}
