//! The agent's durable state, one redb file (`RedbSnapshot`): everything the agent needs to enforce
//! offline and to resume its conversation with a gateway.
//!
//! | table | key → value |
//! |---|---|
//! | `rulesets` | team → [`StoredRuleSet`] (JSON: revision, hash, document) |
//! | `files` | path → [`FileRecord`] (JSON: the section body last written and its hash) |
//! | `outbox` | sequence → [`Report`] (JSON), insertion order, until the gateway acknowledges it |
//! | `changes` | path → [`ChangeEntry`] (JSON: a kept change, its change request, state, until) |
//! | `identity` | key → value (agent token, server URL, agent id, connection status) |
//! | `watched` | project dir → `""` |
//! | `actions` | sequence → [`Action`] (JSON), the recent enforcement actions (the last [`MAX_ACTIONS`]) |
//! | `refusals` | sequence → [`RefusedDowngrade`] (JSON), the recent rule sets refused (the last [`MAX_REFUSALS`]) |
//! | `counters` | name → count (`refused_downgrades`: every refusal ever, not capped; `integrity_failures`) |
//! | `integrity` | sequence → [`IntegrityFailure`] (JSON), the recent rule sets refused as untrusted (the last [`MAX_REFUSALS`]) |
//!
//! Every rule set is verified against the organization keys pinned at login before it is stored
//! ([`Snapshot::accept_ruleset`]) and again when the daemon starts ([`Snapshot::verify_held`]): the stored
//! document keeps its signature, so a rule set edited inside this file is refused too (ADR 0018).
//!
//! A rule set is never replaced by a lower revision of its team ([`Snapshot::put_ruleset`]): a gateway
//! fed by a stale publisher could offer one, and a rollback on the server is always a new, higher
//! revision, so nothing legitimate is refused. The agent keeps enforcing what it holds and records the
//! refusal. The same revision with another hash is taken: the server re-renders a revision with a new
//! renderer when its read model is rebuilt (`projections/src/ruleset.rs`: the revisions are kept, the
//! hashes change), and refusing it would strand every agent on the old rendering.
//!
//! Every write is one durable transaction. The database is opened in redb's multi-writer mode so the
//! CLI (`watch`, `status`, …) can use it while `run` holds it.

use crate::ruleset::{IntegrityError, KeyChain, KeySet, Layer, Mode, OrgKey, RuleSetDoc, verify};
use edict_api::protocol::{Holding, Report};
use redb::{
    Builder, ConcurrencyMode, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const RULESETS: TableDefinition<&str, &str> = TableDefinition::new("rulesets");
const FILES: TableDefinition<&str, &str> = TableDefinition::new("files");
const OUTBOX: TableDefinition<u64, &str> = TableDefinition::new("outbox");
const CHANGES: TableDefinition<&str, &str> = TableDefinition::new("changes");
const IDENTITY: TableDefinition<&str, &str> = TableDefinition::new("identity");
const WATCHED: TableDefinition<&str, &str> = TableDefinition::new("watched");
const ACTIONS: TableDefinition<u64, &str> = TableDefinition::new("actions");
const REFUSALS: TableDefinition<u64, &str> = TableDefinition::new("refusals");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const REFUSED_COUNT: &str = "refused_downgrades";
const INTEGRITY: TableDefinition<u64, &str> = TableDefinition::new("integrity");
/// Per team, the log position of the last signed removal the agent took (ADR 0024): a removal at or
/// before it is a replay.
const REMOVALS: TableDefinition<&str, u64> = TableDefinition::new("removals");
const INTEGRITY_COUNT: &str = "integrity_failures";

/// How many recent actions the snapshot keeps.
pub const MAX_ACTIONS: usize = 50;
/// How many recent refused rule sets the snapshot keeps (the count covers every one).
pub const MAX_REFUSALS: usize = 100;

/// Identity keys.
pub mod keys {
    /// The agent token (bearer of the WebSocket upgrade).
    pub const TOKEN: &str = "agent_token";
    /// When the agent token expires, as the server said (RFC 3339; empty or absent: unknown).
    pub const TOKEN_EXPIRES_AT: &str = "agent_token_expires_at";
    /// When the agent renews its token (seconds since the epoch on this machine's clock: the token's
    /// half-life from when it was received; empty or absent: at the first chance).
    pub const TOKEN_RENEW_AT: &str = "agent_token_renew_at";
    /// The gateway URLs to connect to, one per line, in order.
    pub const SERVER: &str = "server_url";
    /// The API URL the agent logged in with.
    pub const API: &str = "api_url";
    /// This machine's id as the agent sent it at login.
    pub const MACHINE_ID: &str = "machine_id";
    /// The process id of the running daemon (`sync` signals it).
    pub const DAEMON_PID: &str = "daemon_pid";
    /// The agent id the gateway announced.
    pub const AGENT_ID: &str = "agent_id";
    /// `true` while `run` is connected to a gateway.
    pub const CONNECTED: &str = "connected";
    /// When the connection state last changed (RFC 3339).
    pub const CONNECTED_SINCE: &str = "connected_since";
    /// The organization keys pinned at login (JSON list of `OrgKey`), for a snapshot written before
    /// key rotation; [`KEY_CHAIN`] replaces it.
    pub const ORG_KEYS: &str = "org_keys";
    /// The organization keys trusted now, the key set they come from and the keys retired since
    /// (JSON `KeyChain`, ADR 0021).
    pub const KEY_CHAIN: &str = "key_chain";
}

/// Whether `ruleset` is what a pinned key signed for its team, revision and hash.
fn check(ruleset: &StoredRuleSet, keys: &[OrgKey]) -> std::result::Result<(), IntegrityError> {
    verify(&ruleset.doc, &ruleset.team, keys)?;
    if ruleset.doc.revision != ruleset.revision || ruleset.doc.hash != ruleset.hash {
        return Err(IntegrityError::Misaddressed {
            sent_team: ruleset.team.clone(),
            sent_revision: ruleset.revision,
            team: ruleset.doc.team_id.to_string(),
            revision: ruleset.doc.revision,
        });
    }
    Ok(())
}

/// A snapshot failure.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The database failed.
    #[error("snapshot database: {0}")]
    Db(#[from] redb::Error),
    /// A stored value is not valid JSON for its type.
    #[error("snapshot value: {0}")]
    Json(#[from] serde_json::Error),
    /// The data directory could not be created.
    #[error("snapshot directory: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for SnapshotError {
            fn from(e: $t) -> Self {
                SnapshotError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

type Result<T> = std::result::Result<T, SnapshotError>;

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

/// What [`Snapshot::put_ruleset`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored: the team was not held, or held at this revision or a lower one.
    Stored,
    /// Not stored: the team is held at a higher revision.
    Refused(RefusedDowngrade),
    /// Not stored: not signed by a pinned organization key, or not for the team it was sent as
    /// ([`Snapshot::accept_ruleset`]).
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

/// The agent's redb snapshot.
pub struct Snapshot {
    db: Database,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string(value)?)
}

impl Snapshot {
    /// The snapshot file inside a data directory.
    pub fn file_in(data_dir: &Path) -> PathBuf {
        data_dir.join("agent.redb")
    }

    /// Opens (or creates) the snapshot in `data_dir`, creating the directory.
    ///
    /// # Errors
    /// When the directory cannot be created or the database not opened.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let fresh = !data_dir.exists();
        std::fs::create_dir_all(data_dir)?;
        let file = Self::file_in(data_dir);
        let fresh_file = !file.exists();
        let mut builder = Builder::new();
        builder.set_concurrency_mode(ConcurrencyMode::MultiWriter);
        let db = builder.create(&file)?;
        // The snapshot holds the agent token: only its user may read it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if fresh {
                std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
            }
            if fresh_file {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        let txn = db.begin_write()?;
        txn.open_table(RULESETS)?;
        txn.open_table(FILES)?;
        txn.open_table(OUTBOX)?;
        txn.open_table(CHANGES)?;
        txn.open_table(IDENTITY)?;
        txn.open_table(WATCHED)?;
        txn.open_table(ACTIONS)?;
        txn.open_table(REFUSALS)?;
        txn.open_table(COUNTERS)?;
        txn.open_table(INTEGRITY)?;
        txn.open_table(REMOVALS)?;
        txn.commit()?;
        Ok(Snapshot { db })
    }

    fn put_str(&self, table: TableDefinition<&str, &str>, key: &str, value: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(table)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    fn remove_str(&self, table: TableDefinition<&str, &str>, key: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(table)?.remove(key)?;
        txn.commit()?;
        Ok(())
    }

    fn get_str(&self, table: TableDefinition<&str, &str>, key: &str) -> Result<Option<String>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(table)?;
        Ok(table.get(key)?.map(|v| v.value().to_owned()))
    }

    fn all_str(&self, table: TableDefinition<&str, &str>) -> Result<Vec<(String, String)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(table)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_owned(), v.value().to_owned()));
        }
        Ok(out)
    }

    // --- rule sets ---

    /// Stores a rule set in force, replacing the team's previous one unless that one is newer: a lower
    /// revision is refused (the refusal recorded and counted in the same transaction) and the held one
    /// stays in force. The same revision is stored (a resend, or a re-rendering after a rebuild).
    ///
    /// # Errors
    /// On a database failure or a corrupt stored value.
    pub fn put_ruleset(&self, ruleset: &StoredRuleSet) -> Result<PutOutcome> {
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut table = txn.open_table(RULESETS)?;
            let held: Option<StoredRuleSet> = table
                .get(ruleset.team.as_str())?
                .map(|v| serde_json::from_str(v.value()))
                .transpose()?;
            match held {
                Some(held) if held.revision > ruleset.revision => {
                    let refused = RefusedDowngrade {
                        team: ruleset.team.clone(),
                        offered_revision: ruleset.revision,
                        offered_hash: ruleset.hash.clone(),
                        held_revision: held.revision,
                        held_hash: held.hash,
                        at: chrono::Utc::now().to_rfc3339(),
                    };
                    let mut refusals = txn.open_table(REFUSALS)?;
                    let next = refusals.last()?.map_or(0, |(k, _)| k.value() + 1);
                    refusals.insert(next, to_json(&refused)?.as_str())?;
                    while refusals.len()? > MAX_REFUSALS as u64 {
                        if refusals.pop_first()?.is_none() {
                            break;
                        }
                    }
                    let mut counters = txn.open_table(COUNTERS)?;
                    let count = counters.get(REFUSED_COUNT)?.map_or(0, |v| v.value());
                    counters.insert(REFUSED_COUNT, count + 1)?;
                    PutOutcome::Refused(refused)
                }
                _ => {
                    table.insert(ruleset.team.as_str(), to_json(ruleset)?.as_str())?;
                    PutOutcome::Stored
                }
            }
        };
        txn.commit()?;
        Ok(outcome)
    }

    /// The organization keys trusted now (empty for an agent enrolled before rule sets were
    /// signed: it trusts no rule set until it logs in again).
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn org_keys(&self) -> Result<Vec<OrgKey>> {
        Ok(self.key_chain()?.trusted)
    }

    /// What the agent trusts: the keys pinned at login, advanced by every key set taken since.
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn key_chain(&self) -> Result<KeyChain> {
        if let Some(text) = self.identity(keys::KEY_CHAIN)?.filter(|t| !t.is_empty()) {
            return Ok(serde_json::from_str(&text)?);
        }
        // Pinned before key sets existed: those keys, at no key set.
        let trusted = match self.identity(keys::ORG_KEYS)? {
            Some(text) if !text.is_empty() => serde_json::from_str(&text)?,
            _ => Vec::new(),
        };
        Ok(KeyChain {
            sequence: 0,
            trusted,
            retired: Vec::new(),
        })
    }

    /// Pins the organization keys at login: `org_keys`, from key set `sequence` (0 when the keys
    /// were pinned out of band or the server did not say). Forgets any key retired before.
    ///
    /// # Errors
    /// On a database failure.
    pub fn set_org_keys(&self, org_keys: &[OrgKey], sequence: u64) -> Result<()> {
        let chain = KeyChain {
            sequence,
            trusted: org_keys.to_vec(),
            retired: Vec::new(),
        };
        self.set_identity(keys::KEY_CHAIN, &to_json(&chain)?)
    }

    /// Takes the key sets of `keysets` that verify with the keys trusted at that point, in order
    /// ([`KeyChain::advance`]); records each one refused as an integrity failure (team `keys`, the
    /// key set's sequence as revision). Answers whether the key set held changed, and the failures.
    ///
    /// # Errors
    /// On a database failure or a corrupt stored value.
    pub fn accept_keysets(&self, keysets: &[KeySet]) -> Result<(bool, Vec<IntegrityFailure>)> {
        let mut chain = self.key_chain()?;
        let before = chain.sequence;
        let refused = chain.advance(keysets);
        let advanced = chain.sequence != before;
        if advanced {
            self.set_identity(keys::KEY_CHAIN, &to_json(&chain)?)?;
        }
        let mut failures = Vec::with_capacity(refused.len());
        // Keys pinned out of band (no key set held) meet the organization's older key sets, signed by
        // keys retired long ago: not a failure, only history.
        let refused = refused
            .into_iter()
            .filter(|r| !(before == 0 && matches!(r.error, IntegrityError::UnknownKey(_))));
        for refusal in refused {
            let failure = IntegrityFailure {
                team: "keys".to_owned(),
                revision: refusal.sequence,
                hash: String::new(),
                reason: refusal.error.code().to_owned(),
                detail: format!("key set {}: {}", refusal.sequence, refusal.error),
                at: chrono::Utc::now().to_rfc3339(),
                reported: false,
            };
            self.record_integrity_failure(&failure)?;
            failures.push(failure);
        }
        Ok((advanced, failures))
    }

    /// Stores `ruleset` as [`Self::put_ruleset`] does, once it verifies against the pinned keys: sent
    /// as its own team, revision and hash, and signed by a pinned key over everything it holds. A rule
    /// set that does not verify is not stored; the failure is recorded (and counted) instead.
    ///
    /// # Errors
    /// On a database failure or a corrupt stored value.
    pub fn accept_ruleset(&self, ruleset: &StoredRuleSet) -> Result<PutOutcome> {
        let keys = self.org_keys()?;
        match check(ruleset, &keys) {
            Ok(()) => self.put_ruleset(ruleset),
            Err(error) => {
                let failure = IntegrityFailure {
                    team: ruleset.team.clone(),
                    revision: ruleset.revision,
                    hash: ruleset.hash.clone(),
                    reason: error.code().to_owned(),
                    detail: error.to_string(),
                    at: chrono::Utc::now().to_rfc3339(),
                    reported: false,
                };
                self.record_integrity_failure(&failure)?;
                Ok(PutOutcome::Untrusted(failure))
            }
        }
    }

    /// Verifies every rule set held against the pinned keys and forgets those that do not verify (a
    /// rule set edited inside this file), recording each: the agent then neither enforces nor
    /// announces them, and a gateway sends the team's signed rule set again. Returns the failures.
    ///
    /// # Errors
    /// On a database failure.
    pub fn verify_held(&self) -> Result<Vec<IntegrityFailure>> {
        // A rule set held was verified when it arrived; one signed by a key retired since (whose
        // re-signed copy has not arrived yet) still verifies with it.
        let keys = self.key_chain()?.for_held();
        let mut failures = Vec::new();
        for (team, text) in self.all_str(RULESETS)? {
            let verdict = serde_json::from_str::<StoredRuleSet>(&text)
                .map_err(|e| e.to_string())
                .and_then(|held| {
                    if held.team != team {
                        return Err(format!("stored under team {team} but is {}", held.team));
                    }
                    check(&held, &keys)
                        .map(|()| held)
                        .map_err(|e| e.to_string())
                });
            let Err(detail) = verdict else {
                continue;
            };
            let held: Option<StoredRuleSet> = serde_json::from_str(&text).ok();
            let failure = IntegrityFailure {
                team: team.clone(),
                revision: held.as_ref().map_or(0, |h| h.revision),
                hash: held.map(|h| h.hash).unwrap_or_default(),
                reason: "tampered_snapshot".to_owned(),
                detail: format!("the stored rule set does not verify: {detail}"),
                at: chrono::Utc::now().to_rfc3339(),
                reported: false,
            };
            self.remove_str(RULESETS, &team)?;
            self.record_integrity_failure(&failure)?;
            failures.push(failure);
        }
        Ok(failures)
    }

    /// Records (and counts) a failure: a rule set, key set or decision refused as untrusted.
    ///
    /// # Errors
    /// On a database failure.
    pub fn record_integrity_failure(&self, failure: &IntegrityFailure) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(INTEGRITY)?;
            let next = table.last()?.map_or(0, |(k, _)| k.value() + 1);
            table.insert(next, to_json(failure)?.as_str())?;
            while table.len()? > MAX_REFUSALS as u64 {
                if table.pop_first()?.is_none() {
                    break;
                }
            }
            let mut counters = txn.open_table(COUNTERS)?;
            let count = counters.get(INTEGRITY_COUNT)?.map_or(0, |v| v.value());
            counters.insert(INTEGRITY_COUNT, count + 1)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The recent rule sets refused as untrusted, oldest first (the last [`MAX_REFUSALS`]), with their
    /// sequence numbers.
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn integrity_failures(&self) -> Result<Vec<(u64, IntegrityFailure)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INTEGRITY)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value(), serde_json::from_str(v.value())?));
        }
        Ok(out)
    }

    /// How many rule sets were ever refused as untrusted (not capped).
    ///
    /// # Errors
    /// On a database failure.
    pub fn integrity_failure_count(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(COUNTERS)?;
        Ok(table.get(INTEGRITY_COUNT)?.map_or(0, |v| v.value()))
    }

    /// Marks the integrity failure `sequence` as told to a gateway.
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn mark_integrity_reported(&self, sequence: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(INTEGRITY)?;
            let failure: Option<IntegrityFailure> = table
                .get(sequence)?
                .map(|v| serde_json::from_str(v.value()))
                .transpose()?;
            if let Some(mut failure) = failure {
                failure.reported = true;
                table.insert(sequence, to_json(&failure)?.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The recent refused rule sets, oldest first (the last [`MAX_REFUSALS`]).
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn refused_downgrades(&self) -> Result<Vec<RefusedDowngrade>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REFUSALS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(serde_json::from_str(v.value())?);
        }
        Ok(out)
    }

    /// How many rule sets were ever refused (not capped).
    ///
    /// # Errors
    /// On a database failure.
    pub fn refused_downgrade_count(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(COUNTERS)?;
        Ok(table.get(REFUSED_COUNT)?.map_or(0, |v| v.value()))
    }

    /// Forgets a team's rule set.
    ///
    /// # Errors
    /// On a database failure.
    pub fn remove_ruleset(&self, team: &str) -> Result<()> {
        self.remove_str(RULESETS, team)
    }

    /// The log position of the last signed removal of `team` the agent took (0 for none).
    ///
    /// # Errors
    /// On a database failure.
    pub fn removal_floor(&self, team: &str) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REMOVALS)?;
        Ok(table.get(team)?.map_or(0, |v| v.value()))
    }

    /// Takes a verified removal of `team` at log position `position` (ADR 0024): forgets its rule set
    /// and raises the team's removal floor to `position`, in one transaction, so the same removal
    /// is never taken twice (not even after a restart).
    ///
    /// # Errors
    /// On a database failure.
    pub fn take_removal(&self, team: &str, position: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(RULESETS)?.remove(team)?;
        {
            let mut floors = txn.open_table(REMOVALS)?;
            let floor = floors.get(team)?.map_or(0, |v| v.value());
            floors.insert(team, floor.max(position))?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The rule sets in force, by team id.
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn rulesets(&self) -> Result<Vec<StoredRuleSet>> {
        self.all_str(RULESETS)?
            .iter()
            .map(|(_, v)| Ok(serde_json::from_str(v)?))
            .collect()
    }

    /// What the agent holds, for `Hello`.
    ///
    /// # Errors
    /// As [`Self::rulesets`].
    pub fn holdings(&self) -> Result<Vec<Holding>> {
        Ok(self
            .rulesets()?
            .into_iter()
            .map(|r| Holding {
                team: r.team,
                revision: r.revision,
                hash: r.hash,
            })
            .collect())
    }

    // --- files ---

    /// Records what was written to `path`.
    ///
    /// # Errors
    /// On a database failure.
    pub fn put_file(&self, path: &Path, record: &FileRecord) -> Result<()> {
        self.put_str(FILES, &path.to_string_lossy(), &to_json(record)?)
    }

    /// Forgets `path`.
    ///
    /// # Errors
    /// On a database failure.
    pub fn remove_file(&self, path: &Path) -> Result<()> {
        self.remove_str(FILES, &path.to_string_lossy())
    }

    /// What was last written to `path`.
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn file(&self, path: &Path) -> Result<Option<FileRecord>> {
        self.get_str(FILES, &path.to_string_lossy())?
            .map(|v| Ok(serde_json::from_str(&v)?))
            .transpose()
    }

    /// Every file written.
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn files(&self) -> Result<Vec<(PathBuf, FileRecord)>> {
        self.all_str(FILES)?
            .into_iter()
            .map(|(k, v)| Ok((PathBuf::from(k), serde_json::from_str(&v)?)))
            .collect()
    }

    // --- outbox ---

    /// Appends a report to the outbox and records the action, in one transaction.
    ///
    /// # Errors
    /// On a database failure.
    pub fn queue_report(&self, report: &Report, action: &Action) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut outbox = txn.open_table(OUTBOX)?;
            let next = outbox.last()?.map_or(0, |(k, _)| k.value() + 1);
            outbox.insert(next, to_json(report)?.as_str())?;
            Self::push_action(&txn, action)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The unacknowledged reports, oldest first.
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn outbox(&self) -> Result<Vec<Report>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(serde_json::from_str(v.value())?);
        }
        Ok(out)
    }

    /// Drops an acknowledged report; returns it (`None` when it was not there).
    ///
    /// # Errors
    /// On a database failure.
    pub fn ack_report(&self, report_id: &str) -> Result<Option<Report>> {
        let txn = self.db.begin_write()?;
        let mut found = None;
        {
            let mut outbox = txn.open_table(OUTBOX)?;
            let mut key = None;
            for entry in outbox.iter()? {
                let (k, v) = entry?;
                let report: Report = serde_json::from_str(v.value())?;
                if report.report_id == report_id {
                    key = Some(k.value());
                    found = Some(report);
                    break;
                }
            }
            if let Some(key) = key {
                outbox.remove(key)?;
            }
        }
        txn.commit()?;
        Ok(found)
    }

    // --- change requests ---

    /// Records the change kept for `path`.
    ///
    /// # Errors
    /// On a database failure.
    pub fn put_change(&self, path: &Path, entry: &ChangeEntry) -> Result<()> {
        self.put_str(CHANGES, &path.to_string_lossy(), &to_json(entry)?)
    }

    /// Forgets the change kept for `path`.
    ///
    /// # Errors
    /// On a database failure.
    pub fn remove_change(&self, path: &Path) -> Result<()> {
        self.remove_str(CHANGES, &path.to_string_lossy())
    }

    /// The change kept for `path`.
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn change(&self, path: &Path) -> Result<Option<ChangeEntry>> {
        self.get_str(CHANGES, &path.to_string_lossy())?
            .map(|v| Ok(serde_json::from_str(&v)?))
            .transpose()
    }

    /// Every change kept.
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn changes(&self) -> Result<Vec<(PathBuf, ChangeEntry)>> {
        self.all_str(CHANGES)?
            .into_iter()
            .map(|(k, v)| Ok((PathBuf::from(k), serde_json::from_str(&v)?)))
            .collect()
    }

    // --- identity ---

    /// Sets an identity value ([`keys`]).
    ///
    /// # Errors
    /// On a database failure.
    pub fn set_identity(&self, key: &str, value: &str) -> Result<()> {
        self.put_str(IDENTITY, key, value)
    }

    /// Stores a new agent token with its expiry and renewal time, in one transaction, provided the
    /// token held is still `previous` (when given): a renewal never overwrites the token of a login
    /// that happened meanwhile. Whether it was stored.
    ///
    /// # Errors
    /// On a database failure.
    pub fn replace_token(
        &self,
        previous: Option<&str>,
        token: &str,
        expires_at: &str,
        renew_at: &str,
    ) -> Result<bool> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(IDENTITY)?;
            if let Some(previous) = previous {
                let held = table.get(keys::TOKEN)?.map(|v| v.value().to_owned());
                if held.as_deref() != Some(previous) {
                    return Ok(false);
                }
            }
            table.insert(keys::TOKEN, token)?;
            table.insert(keys::TOKEN_EXPIRES_AT, expires_at)?;
            table.insert(keys::TOKEN_RENEW_AT, renew_at)?;
        }
        txn.commit()?;
        Ok(true)
    }

    /// An identity value ([`keys`]).
    ///
    /// # Errors
    /// On a database failure.
    pub fn identity(&self, key: &str) -> Result<Option<String>> {
        self.get_str(IDENTITY, key)
    }

    // --- watched dirs ---

    /// Adds a project dir.
    ///
    /// # Errors
    /// On a database failure.
    pub fn watch(&self, dir: &Path) -> Result<()> {
        self.put_str(WATCHED, &dir.to_string_lossy(), "")
    }

    /// Removes a project dir; whether it was watched.
    ///
    /// # Errors
    /// On a database failure.
    pub fn unwatch(&self, dir: &Path) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let was = txn
            .open_table(WATCHED)?
            .remove(dir.to_string_lossy().as_ref())?
            .is_some();
        txn.commit()?;
        Ok(was)
    }

    /// The watched project dirs.
    ///
    /// # Errors
    /// On a database failure.
    pub fn watched(&self) -> Result<Vec<PathBuf>> {
        Ok(self
            .all_str(WATCHED)?
            .into_iter()
            .map(|(k, _)| PathBuf::from(k))
            .collect())
    }

    // --- actions ---

    fn push_action(txn: &redb::WriteTransaction, action: &Action) -> Result<()> {
        let mut actions = txn.open_table(ACTIONS)?;
        let next = actions.last()?.map_or(0, |(k, _)| k.value() + 1);
        actions.insert(next, to_json(action)?.as_str())?;
        while actions.len()? > MAX_ACTIONS as u64 {
            if actions.pop_first()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Records an action that sends no report.
    ///
    /// # Errors
    /// On a database failure.
    pub fn record_action(&self, action: &Action) -> Result<()> {
        let txn = self.db.begin_write()?;
        Self::push_action(&txn, action)?;
        txn.commit()?;
        Ok(())
    }

    /// The recent actions, oldest first.
    ///
    /// # Errors
    /// On a database failure or a corrupt value.
    pub fn actions(&self) -> Result<Vec<Action>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ACTIONS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(serde_json::from_str(v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_token_replaces_the_one_it_renewed_and_never_a_newer_login() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let snapshot = Snapshot::open(dir.path())?;
        assert!(snapshot.replace_token(None, "eda_first", "", "")?);
        assert!(snapshot.replace_token(
            Some("eda_first"),
            "eda_second",
            "2027-01-01T00:00:00Z",
            "42"
        )?);
        assert_eq!(
            snapshot.identity(keys::TOKEN)?.as_deref(),
            Some("eda_second")
        );
        assert_eq!(
            snapshot.identity(keys::TOKEN_RENEW_AT)?.as_deref(),
            Some("42")
        );
        // A renewal of the first token, answered after a login stored the second: not stored.
        assert!(!snapshot.replace_token(Some("eda_first"), "eda_late", "", "")?);
        assert_eq!(
            snapshot.identity(keys::TOKEN)?.as_deref(),
            Some("eda_second")
        );
        Ok(())
    }
    use crate::ruleset::Layers;
    use edict_api::protocol::ReportKind;

    fn report(id: &str) -> Report {
        Report {
            report_id: id.to_owned(),
            kind: ReportKind::BlockReverted,
            team: "t".into(),
            rule: "r".into(),
            file: "/f".into(),
            layer: "team".into(),
            original_hash: "a".into(),
            new_hash: "b".into(),
            diff: String::new(),
            change_request: None,
        }
    }

    fn action() -> Action {
        Action {
            at: "now".into(),
            what: "block_reverted".into(),
            file: "/f".into(),
        }
    }

    #[test]
    fn everything_written_is_there_after_reopening() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let doc = RuleSetDoc {
            team_id: uuid::Uuid::from_u128(1),
            team_name: "T".into(),
            archived: false,
            revision: 2,
            hash: "h".into(),
            updated_at: chrono::DateTime::default(),
            position: 1,
            layers: Layers::default(),
            signature: None,
        };
        let record = FileRecord {
            layer: Layer::Team,
            body: "b\n".into(),
            hash: "hb".into(),
            mode: Mode::Block,
            team: "t".into(),
            rule: "r".into(),
            temporary_timeout_secs: None,
            rules: Vec::new(),
        };
        let change = ChangeEntry {
            change_request: Some("cr".into()),
            report_id: "r1".into(),
            state: ChangeState::Pending,
            until: None,
            seen_hash: "x".into(),
            rule: None,
            opened_at: None,
        };
        {
            let snap = Snapshot::open(dir.path())?;
            snap.put_ruleset(&StoredRuleSet {
                team: "t".into(),
                revision: 2,
                hash: "h".into(),
                doc,
            })?;
            snap.put_file(Path::new("/f"), &record)?;
            snap.queue_report(&report("r1"), &action())?;
            snap.queue_report(&report("r2"), &action())?;
            snap.put_change(Path::new("/f"), &change)?;
            snap.set_identity(keys::TOKEN, "tok")?;
            snap.watch(Path::new("/proj"))?;
        }
        let snap = Snapshot::open(dir.path())?;
        assert_eq!(
            snap.holdings()?,
            vec![Holding {
                team: "t".into(),
                revision: 2,
                hash: "h".into()
            }]
        );
        assert_eq!(snap.file(Path::new("/f"))?, Some(record));
        let ids: Vec<String> = snap.outbox()?.into_iter().map(|r| r.report_id).collect();
        assert_eq!(ids, vec!["r1", "r2"]);
        assert_eq!(snap.change(Path::new("/f"))?, Some(change));
        assert_eq!(snap.identity(keys::TOKEN)?.as_deref(), Some("tok"));
        assert_eq!(snap.watched()?, vec![PathBuf::from("/proj")]);
        assert_eq!(snap.actions()?.len(), 2);
        Ok(())
    }

    #[test]
    fn a_taken_removal_drops_the_team_and_its_floor_survives_reopening_and_never_lowers()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let doc = RuleSetDoc {
            team_id: uuid::Uuid::from_u128(1),
            team_name: "T".into(),
            archived: false,
            revision: 2,
            hash: "h".into(),
            updated_at: chrono::DateTime::default(),
            position: 1,
            layers: Layers::default(),
            signature: None,
        };
        {
            let snap = Snapshot::open(dir.path())?;
            snap.put_ruleset(&StoredRuleSet {
                team: "t".into(),
                revision: 2,
                hash: "h".into(),
                doc,
            })?;
            assert_eq!(snap.removal_floor("t")?, 0);
            snap.take_removal("t", 42)?;
            assert!(snap.holdings()?.is_empty());
        }
        let snap = Snapshot::open(dir.path())?;
        assert_eq!(snap.removal_floor("t")?, 42);
        assert_eq!(snap.removal_floor("other")?, 0);
        // An older removal taken somehow never lowers the floor.
        snap.take_removal("t", 7)?;
        assert_eq!(snap.removal_floor("t")?, 42);
        Ok(())
    }

    #[test]
    fn an_acknowledged_report_leaves_the_outbox_and_order_is_kept() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let snap = Snapshot::open(dir.path())?;
        for id in ["a", "b", "c"] {
            snap.queue_report(&report(id), &action())?;
        }
        assert!(snap.ack_report("b")?.is_some());
        assert!(snap.ack_report("b")?.is_none());
        snap.queue_report(&report("d"), &action())?;
        let ids: Vec<String> = snap.outbox()?.into_iter().map(|r| r.report_id).collect();
        assert_eq!(ids, vec!["a", "c", "d"]);
        Ok(())
    }

    #[test]
    fn actions_are_capped() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let snap = Snapshot::open(dir.path())?;
        for _ in 0..MAX_ACTIONS + 5 {
            snap.record_action(&action())?;
        }
        assert_eq!(snap.actions()?.len(), MAX_ACTIONS);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn a_new_snapshot_is_private_to_its_user() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        Snapshot::open(&data)?;
        assert_eq!(
            std::fs::metadata(&data)?.permissions().mode() & 0o777,
            0o700
        );
        let file = Snapshot::file_in(&data);
        assert_eq!(
            std::fs::metadata(&file)?.permissions().mode() & 0o777,
            0o600
        );
        Ok(())
    }

    fn stored(team: &str, revision: u64, hash: &str) -> StoredRuleSet {
        StoredRuleSet {
            team: team.into(),
            revision,
            hash: hash.into(),
            doc: RuleSetDoc {
                // The team names of these tests stand for distinct team ids.
                team_id: uuid::Uuid::from_u128(
                    team.bytes().fold(0, |id, b| id * 257 + u128::from(b)),
                ),
                team_name: team.into(),
                archived: false,
                revision,
                hash: hash.into(),
                updated_at: chrono::Utc::now(),
                position: 1,
                layers: Layers::default(),
                signature: None,
            },
        }
    }

    #[test]
    fn a_lower_revision_is_refused_and_counted_and_a_re_rendered_one_is_taken() -> anyhow::Result<()>
    {
        let dir = tempfile::tempdir()?;
        {
            let snap = Snapshot::open(dir.path())?;
            assert_eq!(snap.put_ruleset(&stored("t", 5, "h5"))?, PutOutcome::Stored);
            // The same rule set again (a gateway resending it) is not a downgrade.
            assert_eq!(snap.put_ruleset(&stored("t", 5, "h5"))?, PutOutcome::Stored);
            let PutOutcome::Refused(refused) = snap.put_ruleset(&stored("t", 4, "h4"))? else {
                anyhow::bail!("revision 4 stored over 5");
            };
            assert_eq!((refused.offered_revision, refused.held_revision), (4, 5));
            // The same revision re-rendered (a rebuild with a new renderer keeps revisions).
            assert_eq!(
                snap.put_ruleset(&stored("t", 5, "re-rendered"))?,
                PutOutcome::Stored
            );
            assert!(matches!(
                snap.put_ruleset(&stored("t", 3, "h3"))?,
                PutOutcome::Refused(_)
            ));
            // Another team is independent; a higher revision is stored.
            assert_eq!(snap.put_ruleset(&stored("u", 1, "u1"))?, PutOutcome::Stored);
            assert_eq!(snap.put_ruleset(&stored("t", 6, "h6"))?, PutOutcome::Stored);
        }
        let snap = Snapshot::open(dir.path())?;
        let held: Vec<(String, u64)> = snap
            .holdings()?
            .into_iter()
            .map(|h| (h.team, h.revision))
            .collect();
        assert_eq!(held, vec![("t".to_owned(), 6), ("u".to_owned(), 1)]);
        assert_eq!(snap.refused_downgrade_count()?, 2);
        let refused = snap.refused_downgrades()?;
        assert_eq!(refused.len(), 2);
        assert_eq!(
            (
                refused[1].offered_revision,
                refused[1].offered_hash.as_str(),
                refused[1].held_revision,
                refused[1].held_hash.as_str()
            ),
            (3, "h3", 5, "re-rendered")
        );
        Ok(())
    }

    #[test]
    fn the_refusal_list_is_capped_but_the_count_is_not() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let snap = Snapshot::open(dir.path())?;
        snap.put_ruleset(&stored("t", 9, "h9"))?;
        for _ in 0..MAX_REFUSALS + 3 {
            snap.put_ruleset(&stored("t", 1, "h1"))?;
        }
        assert_eq!(snap.refused_downgrades()?.len(), MAX_REFUSALS);
        assert_eq!(snap.refused_downgrade_count()?, MAX_REFUSALS as u64 + 3);
        Ok(())
    }

    #[test]
    fn unwatch_says_whether_the_dir_was_watched() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let snap = Snapshot::open(dir.path())?;
        snap.watch(Path::new("/p"))?;
        assert!(snap.unwatch(Path::new("/p"))?);
        assert!(!snap.unwatch(Path::new("/p"))?);
        Ok(())
    }
}
