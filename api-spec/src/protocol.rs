//! The agent ↔ gateway protocol (WebSocket, JSON text frames), version [`PROTOCOL_VERSION`].
//!
//! # Connecting
//! The agent opens `GET /ws` on a gateway with `Authorization: Bearer <agent token>` and
//! `Edict-Protocol: 1`. An unknown, revoked or deactivated agent is refused with 401 before the upgrade;
//! an unsupported protocol version with 426. The gateway derives the agent's teams from Edict's own data
//! (the agent's user's memberships); a team an agent names is never trusted.
//!
//! # Order
//! 1. agent → [`AgentMessage::Hello`]: the protocol version and the rule sets it holds (`team → revision,
//!    hash`), from its local snapshot.
//! 2. gateway → [`GatewayMessage::Welcome`]: the agent id and its teams; then the organization key
//!    sets newer than the one the agent named ([`GatewayMessage::Keys`]); then, per team, either
//!    [`GatewayMessage::Current`] (the agent's revision and hash are the latest) or
//!    [`GatewayMessage::RuleSet`] (the full latest rule set); [`GatewayMessage::Removed`] for a team the
//!    agent holds but no longer belongs to (signed for the agent, ADR 0024: sent once signed).
//! 3. From then on the gateway pushes every new revision of the agent's teams as a `RuleSet`, in revision
//!    order, never skipping one silently: an agent too slow to take them is disconnected and resyncs with a
//!    new `Hello`.
//! 4. agent → [`AgentMessage::Applied`] after the rule set is durably committed to its snapshot. The server
//!    records which revision each agent enforces, and since when (convergence; written in batches, once a
//!    burst of acks is over: visible through the API within about a second). While a gateway writes a new
//!    revision to a team's connections it reads none of its connections: what agents send meanwhile
//!    (`Applied`, reports, pongs) waits in their sockets and is read once the revision is written to
//!    every connection (what that costs at scale: ADR 0013).
//!    A rule set of a lower revision than the agent holds is not stored: the agent answers
//!    [`AgentMessage::Refused`] instead of `Applied` (the same revision with another hash is stored: a
//!    rebuild with a new renderer keeps revisions and changes hashes).
//!    Before it stores a rule set the agent verifies its signature (`crate::ruleset::verify`, ADR 0018)
//!    against the organization keys it pinned at login; one it cannot trust is not stored and is
//!    answered with [`AgentMessage::IntegrityFailure`].
//! 5. agent → [`AgentMessage::Report`] for every enforcement action, with an id the agent generated; the
//!    gateway turns it into a command, idempotently, and answers [`GatewayMessage::ReportAck`]; only then
//!    does the agent drop the report from its outbox.
//! 6. gateway → [`GatewayMessage::Decision`] when a change request of this agent is decided (and, on each
//!    connection, every decided change request again: the agent applies a decision once, and only to the
//!    change it names while that change is on disk). Each decision is signed for its agent where it is
//!    projected (ADR 0022); the agent applies only one that verifies, and reports any other as an
//!    `integrity_failure`.
//!
//! The agent token has a lifetime (ADR 0025): a connection is closed with [`GatewayMessage::Error`]
//! code [`TOKEN_EXPIRED`] when its token expires (or, renewed, its grace ends), at the latest at the
//! gateway's next token re-check; code [`REVOKED`] when the token is revoked (the agent was revoked, its
//! user deactivated or their password changed). After `token_expired` the agent reconnects with its
//! renewed token; after `revoked` it must log in again.
//!
//! Either side may close; the agent reconnects with jittered exponential backoff and starts again at 1.
//! WebSocket pings keep the connection alive; a gateway closes a connection idle for longer than its idle
//! timeout. A malformed message is answered with [`GatewayMessage::Error`] and the connection is closed.

use crate::ruleset::RuleSetDoc;
use serde::{Deserialize, Serialize};

/// The protocol version both ends announce.
pub const PROTOCOL_VERSION: u32 = 1;

/// The HTTP header carrying the protocol version in the upgrade request.
pub const PROTOCOL_HEADER: &str = "Edict-Protocol";

/// The [`GatewayMessage::Error`] code of a connection closed because its agent token expired.
pub const TOKEN_EXPIRED: &str = "token_expired";

/// The [`GatewayMessage::Error`] code of a connection closed because its agent token was revoked.
pub const REVOKED: &str = "revoked";

/// A rule set the agent holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// The team.
    pub team: String,
    /// The revision the agent enforces.
    pub revision: u64,
    /// Its content hash.
    pub hash: String,
}

/// What an agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// A block-mode managed section was edited; the agent restored it.
    BlockReverted,
    /// A temporary-mode managed section was edited; the agent kept it (opens or amends a change request).
    TemporaryChanged,
    /// A warning-mode managed section was edited; the agent kept it.
    WarningKept,
    /// The agent and an editor keep overwriting each other; the agent stopped fighting and flags it.
    RevertLoop,
}

/// A report of an enforcement action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Generated by the agent; the same report sent again is recognised.
    pub report_id: String,
    /// What happened.
    pub kind: ReportKind,
    /// The team whose rule set the section belongs to.
    pub team: String,
    /// The rule whose text changed (for a change that could not be tied to one rule, a rule of the
    /// section's strictest mode).
    pub rule: String,
    /// The file.
    pub file: String,
    /// `organization`, `team` or `project`.
    pub layer: String,
    /// SHA-256 (hex) of the rule's text (between and including its rule markers) as the agent wrote it;
    /// of the whole managed section body for a change not tied to one rule.
    pub original_hash: String,
    /// SHA-256 (hex) of the same text as found.
    pub new_hash: String,
    /// A unified diff of the change.
    pub diff: String,
    /// For an amendment: the change request the earlier report on this file opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_request: Option<String>,
}

/// Agent → gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// The first message: what the agent holds.
    Hello {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The agent's software version.
        agent_version: String,
        /// The rule sets it holds.
        holdings: Vec<Holding>,
        /// The sequence of the organization key set it holds (0: only the keys pinned at login):
        /// the gateway sends the key sets after it ([`GatewayMessage::Keys`]).
        #[serde(default)]
        key_sequence: u64,
    },
    /// A rule set is durably applied.
    Applied(Holding),
    /// An enforcement action.
    Report(Report),
    /// A rule set the agent did not store: it holds a higher revision of the team. It keeps enforcing
    /// what it holds (`held_revision`, `held_hash`); a rollback on the
    /// server is always a new, higher revision, so this means a stale carrier (the gateway logs it).
    Refused {
        /// The team.
        team: String,
        /// The revision offered.
        revision: u64,
        /// Its hash.
        hash: String,
        /// The revision the agent holds and enforces.
        held_revision: u64,
        /// Its hash.
        held_hash: String,
    },
    /// A rule set the agent did not store because it could not trust it: unsigned, signed by a key it
    /// has not pinned, a signature that does not match, or signed for another team (or a rule set held
    /// in its snapshot that no longer verifies at start). It keeps enforcing its last good snapshot.
    /// Sent once per failure, on the connection it happened on or the next one.
    IntegrityFailure {
        /// The team the rule set was sent as.
        team: String,
        /// The revision it claimed.
        revision: u64,
        /// The hash it claimed.
        hash: String,
        /// A stable code: `unsigned`, `unknown_key`, `bad_signature`, `hash_mismatch`,
        /// `misaddressed`, `no_pinned_key`, `tampered_snapshot`, `replayed`.
        reason: String,
        /// For a human.
        detail: String,
    },
}

/// What to do with a decided change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionAction {
    /// Keep the change (approved, or an exception granted until `until`).
    Keep,
    /// Restore the managed section (rejected, timed out, exception expired or denied).
    Revert,
}

/// Gateway → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GatewayMessage {
    /// The answer to `Hello`.
    Welcome {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The agent's id.
        agent_id: String,
        /// The teams whose rule sets it receives.
        teams: Vec<String>,
    },
    /// The organization's key sets the agent does not hold yet, oldest first (ADR 0021): right after
    /// `welcome` when its `hello` named an older key set, and whenever a new one is issued. Each is
    /// signed by the key active when it was issued; the agent takes each one that verifies with the
    /// keys it trusts at that point ([`crate::ruleset::KeyChain::advance`]).
    Keys {
        /// The key sets.
        keysets: Vec<crate::ruleset::KeySet>,
    },
    /// The agent holds the latest revision of this team.
    Current(Holding),
    /// A rule set: the whole document of the `team_rulesets` projection (`team_id`, `revision`, `hash`,
    /// `layers` with rules and rendered text; see [`crate::ruleset`]).
    RuleSet {
        /// The team.
        team: String,
        /// Its revision.
        revision: u64,
        /// Its hash.
        hash: String,
        /// The document.
        ruleset: Box<RuleSetDoc>,
    },
    /// The agent's user left this team: remove its sections. Signed for the agent where it is
    /// projected (ADR 0024, [`crate::ruleset::RemovalStatement`]); the agent drops the team only on a
    /// removal that verifies for itself and is later than any removal of the team it took, and
    /// reports any other as an `integrity_failure`.
    Removed {
        /// The team.
        team: String,
        /// The agent it is for (inside the signature).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// The global log position of the leave (inside the signature): a removal at or before one
        /// the agent took already is refused, so an old removal cannot be replayed after a rejoin.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<u64>,
        /// The organization's signature over the above.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<crate::ruleset::RuleSetSignature>,
    },
    /// A report was recorded.
    ReportAck {
        /// The report.
        report_id: String,
        /// The change request it opened or amended, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change_request: Option<String>,
    },
    /// A change request of this agent was decided. The agent applies it only to the change it names
    /// (the change request it recorded for that file and rule) and only while the disk still holds
    /// `content_hash`; it applies a `decision_id` once.
    Decision {
        /// The change request.
        change_request: String,
        /// The file it is about.
        file: String,
        /// Keep or revert.
        action: DecisionAction,
        /// For a time-limited exception: revert after this time (RFC 3339).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        /// The rule whose text the change is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        /// SHA-256 (hex) of the changed content the decision is about: the report's `new_hash` (of
        /// the rule's text, or of the section for a change not tied to one rule), as last amended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_hash: Option<String>,
        /// Identifies this decision (`<change request>:<its version>`): the same decision sent again
        /// (on every connection) is applied once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decision_id: Option<String>,
        /// The agent it is for (inside the signature).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// The organization's signature over all of the above ([`GatewayMessage::decision_statement`],
        /// ADR 0022): the agent applies only a decision signed by a key it trusts, for itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<crate::ruleset::RuleSetSignature>,
    },
    /// A protocol error; the gateway closes the connection after it.
    Error {
        /// A stable code (`malformed`, `unsupported_protocol`, `too_slow`, `revoked`,
        /// `token_expired`, …).
        code: String,
        /// For a human.
        message: String,
    },
}

impl DecisionAction {
    /// `keep` or `revert`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionAction::Keep => "keep",
            DecisionAction::Revert => "revert",
        }
    }
}

impl GatewayMessage {
    /// What a `removed` says, as its signature covers it (`None` for any other message; an agent of
    /// `""` and position 0 for a removal that names none, which no agent's check accepts).
    pub fn removal_statement(&self) -> Option<crate::ruleset::RemovalStatement<'_>> {
        let GatewayMessage::Removed {
            team,
            agent,
            position,
            ..
        } = self
        else {
            return None;
        };
        Some(crate::ruleset::RemovalStatement {
            agent: agent.as_deref().unwrap_or_default(),
            team,
            position: position.unwrap_or_default(),
        })
    }

    /// What a `decision` says, as its signature covers it (`None` for any other message; an agent of
    /// `""` for a decision that names none, which no agent's check accepts).
    pub fn decision_statement(&self) -> Option<crate::ruleset::DecisionStatement<'_>> {
        let GatewayMessage::Decision {
            change_request,
            file,
            action,
            until,
            rule,
            content_hash,
            decision_id,
            agent,
            ..
        } = self
        else {
            return None;
        };
        Some(crate::ruleset::DecisionStatement {
            agent: agent.as_deref().unwrap_or_default(),
            change_request,
            file,
            action: action.as_str(),
            until: until.as_deref(),
            rule: rule.as_deref(),
            content_hash: content_hash.as_deref(),
            decision_id: decision_id.as_deref(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_stable_json() {
        let hello = AgentMessage::Hello {
            protocol: 1,
            agent_version: "0.1.0".into(),
            holdings: vec![Holding {
                team: "t".into(),
                revision: 3,
                hash: "h".into(),
            }],
            key_sequence: 0,
        };
        assert_eq!(
            serde_json::to_string(&hello).unwrap(),
            r#"{"type":"hello","protocol":1,"agent_version":"0.1.0","holdings":[{"team":"t","revision":3,"hash":"h"}],"key_sequence":0}"#
        );
        let current = GatewayMessage::Current(Holding {
            team: "t".into(),
            revision: 3,
            hash: "h".into(),
        });
        assert_eq!(
            serde_json::to_string(&current).unwrap(),
            r#"{"type":"current","team":"t","revision":3,"hash":"h"}"#
        );
        let back: GatewayMessage =
            serde_json::from_str(&serde_json::to_string(&current).unwrap()).unwrap();
        assert_eq!(back, current);
    }

    #[test]
    fn a_refused_rule_set_has_stable_json() {
        let refused = AgentMessage::Refused {
            team: "t".into(),
            revision: 3,
            hash: "h3".into(),
            held_revision: 4,
            held_hash: "h4".into(),
        };
        let text = serde_json::to_string(&refused).unwrap();
        assert_eq!(
            text,
            r#"{"type":"refused","team":"t","revision":3,"hash":"h3","held_revision":4,"held_hash":"h4"}"#
        );
        assert_eq!(
            serde_json::from_str::<AgentMessage>(&text).unwrap(),
            refused
        );
    }
}
