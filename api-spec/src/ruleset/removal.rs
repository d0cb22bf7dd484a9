//! The organization's signature on a removal (ADR 0024): "this agent's user left this team, at this
//! position of the event log". An agent drops a team's managed sections only on a removal that
//! verifies for itself, so a gateway or anyone between it and the agent cannot make a machine stop
//! enforcing a team's rules while its user is still a member.
//!
//! Signed where it is projected (a process that holds the signing key; gateways hold none), one
//! statement per agent of the user and team left. The global log position of the `MemberRemoved`
//! event is inside the signature: the agent keeps, per team, the position of the last removal it
//! took, and refuses any removal at or before it. So a removal taken once and replayed after the user
//! rejoined (a later position of the log, a new statement) is refused (`replayed`).

use super::signature::{
    IntegrityError, OrgKey, RuleSetSignature, check_signature, pinned_key, signed,
};
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use std::fmt::Write as _;

/// The first line of every signed removal: a signature made for anything else (a rule set, a
/// decision) never verifies as a removal.
const DOMAIN: &str = "edict-removal-signature-v1";

/// What a removal says, as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalStatement<'a> {
    /// The agent it is for (one of the user's agents).
    pub agent: &'a str,
    /// The team the user left.
    pub team: &'a str,
    /// The global log position of the `MemberRemoved` event.
    pub position: u64,
}

impl RemovalStatement<'_> {
    /// The signed message: one field a line, the free text hex-encoded so that no field can spill
    /// into another.
    pub fn bytes(&self, key_id: &str, issued_at: DateTime<Utc>) -> Vec<u8> {
        let mut out = String::with_capacity(160);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{DOMAIN}");
        let _ = writeln!(out, "agent {}", hex::encode(self.agent.as_bytes()));
        let _ = writeln!(out, "team {}", hex::encode(self.team.as_bytes()));
        let _ = writeln!(out, "position {}", self.position);
        let _ = writeln!(out, "issued_at {}", issued_at.timestamp_micros());
        let _ = writeln!(out, "key_id {key_id}");
        out.into_bytes()
    }

    /// Its signature by `key`, issued at `issued_at` (the time of the leave, so signing the same
    /// removal again yields the same bytes).
    pub fn sign(&self, key: &SigningKey, issued_at: DateTime<Utc>) -> RuleSetSignature {
        signed(key, issued_at, |key_id| self.bytes(key_id, issued_at))
    }

    /// Checks `signature` against `keys`, for the agent `agent`, which took a removal of this team
    /// at position `floor` last (0 for none).
    ///
    /// # Errors
    /// [`IntegrityError::Misaddressed`] for another agent's removal; [`IntegrityError::Replayed`] for
    /// one at or before `floor`; unsigned, unknown key or a signature that does not match.
    pub fn verify(
        &self,
        agent: &str,
        floor: u64,
        signature: Option<&RuleSetSignature>,
        keys: &[OrgKey],
    ) -> Result<(), IntegrityError> {
        if keys.is_empty() {
            return Err(IntegrityError::NoPinnedKey);
        }
        let signature = signature.ok_or(IntegrityError::Unsigned)?;
        let key = pinned_key(keys, &signature.key_id)?;
        let message = self.bytes(&signature.key_id, signature.issued_at);
        check_signature(&key, &message, &signature.sig)?;
        // Checked once the signature holds: the reason names what the organization really said.
        if self.agent != agent {
            return Err(IntegrityError::Misaddressed {
                sent_team: agent.to_owned(),
                sent_revision: 0,
                team: self.agent.to_owned(),
                revision: self.position,
            });
        }
        if self.position <= floor {
            return Err(IntegrityError::Replayed {
                position: self.position,
                floor,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn statement(position: u64) -> RemovalStatement<'static> {
        RemovalStatement {
            agent: "agent-1",
            team: "team-1",
            position,
        }
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 5, 6, 0, 0).single().unwrap()
    }

    #[test]
    fn the_signed_bytes_name_every_field_one_a_line() {
        let bytes = statement(42).bytes("0123456789abcdef", at());
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                "edict-removal-signature-v1\nagent {}\nteam {}\nposition 42\nissued_at {}\nkey_id 0123456789abcdef\n",
                hex::encode("agent-1"),
                hex::encode("team-1"),
                at().timestamp_micros()
            )
        );
        // Free text cannot forge a line: a team holding a newline is hex too.
        let odd = RemovalStatement {
            agent: "a",
            team: "t\nposition 99",
            position: 1,
        };
        let text = String::from_utf8(odd.bytes("k", at())).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("position")).count(),
            1
        );
    }

    #[test]
    fn a_signed_removal_verifies_for_its_agent_team_and_position_only() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let keys = [OrgKey::of(&key.verifying_key())];
        let signature = statement(42).sign(&key, at());
        assert_eq!(
            statement(42).verify("agent-1", 0, Some(&signature), &keys),
            Ok(())
        );
        // Signing again gives the same bytes (the issue time is the leave's).
        assert_eq!(statement(42).sign(&key, at()), signature);
        assert!(matches!(
            statement(42).verify("agent-2", 0, Some(&signature), &keys),
            Err(IntegrityError::Misaddressed { .. })
        ));
        // Another team, or another position, under the same signature: refused.
        let other_team = RemovalStatement {
            team: "team-2",
            ..statement(42)
        };
        assert_eq!(
            other_team.verify("agent-1", 0, Some(&signature), &keys),
            Err(IntegrityError::BadSignature)
        );
        assert_eq!(
            statement(43).verify("agent-1", 0, Some(&signature), &keys),
            Err(IntegrityError::BadSignature)
        );
        assert_eq!(
            statement(42).verify("agent-1", 0, None, &keys),
            Err(IntegrityError::Unsigned)
        );
        assert_eq!(
            statement(42).verify("agent-1", 0, Some(&signature), &[]),
            Err(IntegrityError::NoPinnedKey)
        );
        let other = SigningKey::from_bytes(&[2; 32]);
        assert!(matches!(
            statement(42).verify("agent-1", 0, Some(&statement(42).sign(&other, at())), &keys),
            Err(IntegrityError::UnknownKey(_))
        ));
        // A decision's signature is no removal's.
        let decision = crate::ruleset::DecisionStatement {
            agent: "agent-1",
            change_request: "team-1",
            file: "f",
            action: "revert",
            until: None,
            rule: None,
            content_hash: None,
            decision_id: None,
        }
        .sign(&key, at());
        assert_eq!(
            statement(42).verify("agent-1", 0, Some(&decision), &keys),
            Err(IntegrityError::BadSignature)
        );
    }

    #[test]
    fn a_removal_replayed_after_a_later_one_was_taken_is_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let keys = [OrgKey::of(&key.verifying_key())];
        let first = statement(42).sign(&key, at());
        // Taken once: the agent's floor for the team is now 42. The user rejoins (position 50) and
        // the old removal comes again.
        assert_eq!(
            statement(42).verify("agent-1", 42, Some(&first), &keys),
            Err(IntegrityError::Replayed {
                position: 42,
                floor: 42
            })
        );
        // The user leaves again, later in the log: a new removal, taken.
        let second = statement(57).sign(&key, at());
        assert_eq!(
            statement(57).verify("agent-1", 42, Some(&second), &keys),
            Ok(())
        );
    }
}
