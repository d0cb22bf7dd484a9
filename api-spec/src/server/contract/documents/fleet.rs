//! The agent fleet's documents: an agent and the integrity failures it reported.

use super::Timestamp;
use poem_openapi::Object;

/// A rule set an agent refused as untrusted.
#[derive(Debug, Clone, Object)]
pub struct IntegrityFailureEntry {
    /// The team whose rule set it was.
    pub team: String,
    /// Its revision.
    pub revision: u64,
    /// Why it was refused (a stable slug).
    pub reason: String,
    /// More detail.
    pub detail: String,
    /// When.
    pub at: Timestamp,
}

/// An enrolled agent as the fleet lists it.
#[derive(Debug, Clone, Object)]
pub struct AgentEntry {
    /// The agent.
    pub id: String,
    /// The user it acts for.
    pub user: String,
    /// The machine's stable id.
    pub machine_id: String,
    /// The machine's name (may be empty).
    pub machine_name: String,
    /// When it was enrolled.
    pub enrolled_at: Timestamp,
    /// Whether it was revoked (its token no longer works).
    pub revoked: bool,
    /// When it was revoked.
    #[oai(nullable)]
    pub revoked_at: Option<Timestamp>,
    /// Who revoked it.
    #[oai(nullable)]
    pub revoked_by: Option<String>,
    /// Why, if a reason was given.
    #[oai(nullable)]
    pub revoke_reason: Option<String>,
    /// How many untrusted rule sets the agent reported refusing.
    #[oai(default)]
    pub integrity_failures: u64,
    /// The last one.
    #[oai(default, nullable)]
    pub last_integrity_failure: Option<IntegrityFailureEntry>,
    /// The agent's version (send as `If-Match`).
    pub version: u64,
}
