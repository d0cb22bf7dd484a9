//! The agent's durable state, one redb file (`RedbSnapshot`): everything the agent needs to enforce
//! offline and to resume its conversation with a gateway.
//!
//! | table | key → value |
//! |---|---|
//! | `rulesets` | team → [`StoredRuleSet`] (JSON: revision, hash, document) |
//! | `files` | path → [`FileRecord`] (JSON: the section body last written and its hash) |
//! | `outbox` | sequence → [`Report`](edict_api::protocol::Report) (JSON), insertion order, until the gateway acknowledges it |
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
//!
//! Layout: this file holds the tables, the identity keys, the error, [`Snapshot::open`] and the
//! identity and watched directories; `records` the stored value types; `rulesets` the rule sets with
//! their verification, refusals and removals; `enforcement` the managed files, the outbox of reports,
//! the kept changes and the recent actions.

mod enforcement;
mod records;
mod rulesets;

pub use records::{
    Action, ChangeEntry, ChangeState, FileRecord, IntegrityFailure, PutOutcome, RefusedDowngrade,
    RuleMark, StoredRuleSet,
};

use redb::{Builder, ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{Layer, Mode, RuleSetDoc};
    use edict_api::protocol::{Holding, Report};

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

    pub(super) fn report(id: &str) -> Report {
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

    pub(super) fn action() -> Action {
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
