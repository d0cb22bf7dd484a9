//! The values the snapshot stores (as JSON) and what storing a rule set answers.

use crate::ruleset::{Layer, Mode, RuleSetDoc};
use serde::{Deserialize, Serialize};

/// A rule set in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRuleSet {
    /// The team.
    pub team: String,
    /// The revision.
    pub revision: u64,
    /// The hash.
    pub hash: String,
    /// The document.
    pub doc: RuleSetDoc,
}

/// What the agent last wrote to a managed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The layer of the file's section.
    pub layer: Layer,
    /// The section body written.
    pub body: String,
    /// Its SHA-256.
    pub hash: String,
    /// The strictest mode among the section's rules.
    pub mode: Mode,
    /// The team of the section's first rule.
    pub team: String,
    /// The section's first rule.
    pub rule: String,
    /// For temporary rules: how long a change may stand.
    #[serde(default)]
    pub temporary_timeout_secs: Option<u64>,
    /// Each rule of the section (once per rule id, with its strictest mode when several teams
    /// include it): how an edit of that rule's text is enforced. Empty in a record an older agent
    /// wrote (its section is enforced by `mode` as a whole).
    #[serde(default)]
    pub rules: Vec<RuleMark>,
}

/// How one rule of a managed section is enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMark {
    /// The rule id (as its marker names it).
    pub rule: String,
    /// The team whose rule set includes it (the first, in team id order, with its mode).
    pub team: String,
    /// Its enforcement mode.
    pub mode: Mode,
    /// For a temporary rule: how long a change may stand without a decision.
    #[serde(default)]
    pub temporary_timeout_secs: Option<u64>,
}

/// Where a reported change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    /// Reported (temporary: awaiting a decision).
    Pending,
    /// A warning-mode change, reported and kept.
    Warned,
    /// Kept by a decision, until `until` if set.
    Kept,
}

/// A change the agent reported and keeps for now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEntry {
    /// The change request the gateway opened for it, once acknowledged.
    pub change_request: Option<String>,
    /// The last report about it.
    pub report_id: String,
    /// Where it stands.
    pub state: ChangeState,
    /// For a kept change: restore after this time (RFC 3339).
    pub until: Option<String>,
    /// The hash of the section (or, for a rule's change, of that rule's text) as reported or accepted:
    /// the same content is not reported again.
    pub seen_hash: String,
    /// The rule whose text changed; `None` for a change of the section that could not be tied to one
    /// rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// When the change was first reported (RFC 3339): a temporary change reverts itself once its
    /// rule's timeout has passed since then without a decision.
    #[serde(default)]
    pub opened_at: Option<String>,
}

/// An enforcement action, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// When (RFC 3339).
    pub at: String,
    /// What (`block_reverted`, `restored`, `written`, …).
    pub what: String,
    /// The file.
    pub file: String,
}

/// A rule set the agent refused because it holds a higher revision of the team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedDowngrade {
    /// The team.
    pub team: String,
    /// The revision offered.
    pub offered_revision: u64,
    /// Its hash.
    pub offered_hash: String,
    /// The revision held (and still enforced).
    pub held_revision: u64,
    /// Its hash.
    pub held_hash: String,
    /// When (RFC 3339).
    pub at: String,
}

/// What [`Snapshot::put_ruleset`](super::Snapshot::put_ruleset) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored: the team was not held, or held at this revision or a lower one.
    Stored,
    /// Not stored: the team is held at a higher revision.
    Refused(RefusedDowngrade),
    /// Not stored: not signed by a pinned organization key, or not for the team it was sent as
    /// ([`Snapshot::accept_ruleset`](super::Snapshot::accept_ruleset)).
    Untrusted(IntegrityFailure),
}

/// A rule set the agent refused because it could not trust it (ADR 0018).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityFailure {
    /// The team it was sent as.
    pub team: String,
    /// The revision it claimed.
    pub revision: u64,
    /// The hash it claimed.
    pub hash: String,
    /// Why ([`IntegrityError::code`](edict_api::ruleset::IntegrityError::code), or `tampered_snapshot`
    /// for a stored rule set that no longer verifies at start).
    pub reason: String,
    /// For a human.
    pub detail: String,
    /// When (RFC 3339).
    pub at: String,
    /// Whether a gateway was told.
    #[serde(default)]
    pub reported: bool,
}
