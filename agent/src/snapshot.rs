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
//!
//! Every write is one durable transaction. The database is opened in redb's multi-writer mode so the
//! CLI (`watch`, `status`, …) can use it while `run` holds it.

use crate::ruleset::{Layer, Mode, RuleSetDoc};
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

/// How many recent actions the snapshot keeps.
pub const MAX_ACTIONS: usize = 50;

/// Identity keys.
pub mod keys {
    /// The agent token (bearer of the WebSocket upgrade).
    pub const TOKEN: &str = "agent_token";
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

    /// Stores a rule set in force (replacing the team's previous one).
    ///
    /// # Errors
    /// On a database failure.
    pub fn put_ruleset(&self, ruleset: &StoredRuleSet) -> Result<()> {
        self.put_str(RULESETS, &ruleset.team, &to_json(ruleset)?)
    }

    /// Forgets a team's rule set.
    ///
    /// # Errors
    /// On a database failure.
    pub fn remove_ruleset(&self, team: &str) -> Result<()> {
        self.remove_str(RULESETS, team)
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
