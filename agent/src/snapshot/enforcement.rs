//! What the agent did and owes: the managed files as last written, the outbox of reports until a
//! gateway acknowledges them, the changes kept for now, and the recent enforcement actions (the last
//! [`MAX_ACTIONS`]).

use super::*;
use edict_api::protocol::Report;
use redb::ReadableTableMetadata;

impl Snapshot {
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
    use super::super::tests::{action, report};
    use super::*;

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
}
