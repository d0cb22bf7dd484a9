//! Configuration as values: `main` fills them from flags and the environment, tests build them directly
//! (never through `std::env::set_var`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A value that must not appear in logs: `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The first org_admin, created on a start that finds no user at all.
#[derive(Debug, Clone)]
pub struct BootstrapAdmin {
    /// Its email (`EDICT_ADMIN_EMAIL`).
    pub email: String,
    /// Its password (`EDICT_ADMIN_PASSWORD`).
    pub password: Secret<String>,
}

/// Approvals a rule revision needs, per layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumSettings {
    /// Organization-layer rules (default 2).
    pub organization: u32,
    /// Team-layer rules (default 1).
    pub team: u32,
    /// Project-layer rules (default 1).
    pub project: u32,
    /// Seconds an org_admin whom another admin created, granted the role, reactivated or gave a new
    /// password does not count towards a quorum (`EDICT_QUORUM_PROBATION_SECS`, default 7 days).
    pub probation_secs: u64,
}

impl Default for QuorumSettings {
    fn default() -> Self {
        Self {
            organization: 2,
            team: 1,
            project: 1,
            probation_secs: 7 * 24 * 3600,
        }
    }
}

/// The tamper-evidence chain's checkpoints (role `audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// The ed25519 seed that signs checkpoints, 32 bytes in hex or base64 (`EDICT_AUDIT_SIGNING_KEY`,
    /// environment only). Without it a key is generated and kept in the store's settings table.
    pub signing_key: Option<Secret<String>>,
    /// A checkpoint every this many chained events (`EDICT_AUDIT_CHECKPOINT_EVERY`, default 1000).
    pub checkpoint_every: u64,
    /// A checkpoint at least this often while the chain moves, seconds (`EDICT_AUDIT_CHECKPOINT_SECS`,
    /// default 60).
    pub checkpoint_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            signing_key: None,
            checkpoint_every: 1000,
            checkpoint_secs: 60,
        }
    }
}

/// Bounds on what clients may send and make the server do (issue 16); every one is configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest HTTP request body, on every transport (`EDICT_MAX_BODY_BYTES`, 1 MiB): a rule's
    /// content is at most 64 KiB, a change's diff 256 KiB.
    pub max_body_bytes: usize,
    /// The largest WebSocket message the gateway reads from an agent (`EDICT_WS_MAX_MESSAGE_BYTES`,
    /// 256 KiB). What an agent sends is small: `applied`, and reports whose diff the agent cuts at
    /// 64 KiB (JSON escaping can at most double ordinary text; the rest of a report is a few hundred
    /// bytes). What the gateway sends (whole rule sets) is not bounded by it.
    pub ws_max_message_bytes: usize,
    /// Gateway sockets that have not authenticated yet (upgrade requests being read or checked) at
    /// once (`EDICT_WS_MAX_UNAUTHENTICATED`, 256); more are answered 503 at once.
    pub ws_max_unauthenticated: usize,
    /// Gateway sockets one agent token may hold at once (`EDICT_WS_MAX_SOCKETS_PER_AGENT`, 4); another
    /// upgrade is answered 429.
    pub ws_max_sockets_per_agent: usize,
    /// Enrolled (not revoked) agents one user may own (`EDICT_MAX_AGENTS_PER_USER`, 20); another
    /// enrollment is refused with 422 `agent_limit`.
    pub max_agents_per_user: usize,
    /// How long a time-travel read (`as_of`) may replay the log, milliseconds (`EDICT_AS_OF_BUDGET_MS`,
    /// 2000); past it the read is refused with 422 `as_of_too_costly`.
    pub as_of_budget_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            ws_max_message_bytes: 256 * 1024,
            ws_max_unauthenticated: 256,
            ws_max_sockets_per_agent: 4,
            max_agents_per_user: 20,
            as_of_budget_ms: 2000,
        }
    }
}

/// Everything `edict serve` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen for HTTP.
    pub listen: SocketAddr,
    /// `postgres://…` or `sqlite://…`.
    pub database_url: String,
    /// The data directory of the embedded default.
    pub data_dir: PathBuf,
    /// The first admin, if configured.
    pub admin: Option<BootstrapAdmin>,
    /// Overrides the stored token-signing secret (all API processes must share it).
    pub jwt_secret: Option<Secret<String>>,
    /// Lifetime of access tokens, seconds.
    pub access_ttl_secs: u64,
    /// Lifetime of a session's refresh token, seconds.
    pub refresh_ttl_secs: u64,
    /// Lifetime of a new agent token, seconds (`EDICT_AGENT_TOKEN_TTL_SECS`, default 90 days; ADR 0025).
    pub agent_token_ttl_secs: u64,
    /// How long a renewed agent token keeps working after its renewal, seconds
    /// (`EDICT_AGENT_TOKEN_RENEWAL_GRACE_SECS`, default 10 minutes).
    pub agent_token_grace_secs: u64,
    /// Approval quorums.
    pub quorum: QuorumSettings,
    /// Checkpoints of the hash chain.
    pub audit: AuditSettings,
    /// The ed25519 seed that signs rule sets, 32 bytes in hex or base64, or the path of a file holding
    /// it (`EDICT_RULESET_SIGNING_KEY`, environment only). Without it a key is generated and kept in the
    /// store's settings table (ADR 0018).
    pub ruleset_signing_key: Option<Secret<String>>,
    /// The next rule set signing key (`EDICT_RULESET_SIGNING_KEY_NEXT`, the same forms), which a key
    /// rotation takes instead of generating one (ADR 0021).
    pub ruleset_signing_key_next: Option<Secret<String>>,
    /// Whether this process loads the rule set signing key: only processes that publish rule sets or
    /// answer logins do (a gateway-only process never holds it).
    pub holds_ruleset_key: bool,
    /// Bounds on input and work.
    pub limits: Limits,
}

impl Settings {
    /// The embedded default: SQLite under `data_dir`, listening on `listen`.
    pub fn embedded(data_dir: PathBuf, listen: SocketAddr) -> Self {
        let database_url = format!("sqlite://{}", data_dir.join("edict.db").display());
        Self {
            listen,
            database_url,
            data_dir,
            admin: None,
            jwt_secret: None,
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            agent_token_ttl_secs: 90 * 24 * 3600,
            agent_token_grace_secs: 600,
            quorum: QuorumSettings::default(),
            audit: AuditSettings::default(),
            ruleset_signing_key: None,
            ruleset_signing_key_next: None,
            holds_ruleset_key: true,
            limits: Limits::default(),
        }
    }
}

/// TLS on the API listener (`EDICT_TLS_CERT`, `EDICT_TLS_KEY`): PEM files, read again on SIGHUP and
/// when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}
