//! The agent fleet's documents: an agent, the integrity failures it reported and where it is connected.

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
    /// Where it is (or was last) connected; absent when it never connected.
    #[oai(skip_serializing_if_is_none)]
    pub presence: Option<PresenceEntry>,
    /// The agent's version (send as `If-Match`).
    pub version: u64,
}

/// Where an agent is (or was last) connected, as its gateway recorded it.
#[derive(Debug, Clone, Object)]
pub struct PresenceEntry {
    /// The gateway of its last connection.
    pub gateway: String,
    /// When that connection began.
    pub connected_at: Timestamp,
    /// When the gateway last heard from it (at least once a minute while connected).
    pub last_seen_at: Timestamp,
    /// When that connection ended; absent while it is open (or its gateway stopped without saying).
    #[oai(skip_serializing_if_is_none)]
    pub disconnected_at: Option<Timestamp>,
}
