//! The enforcement decisions: reconciling the managed files with the rule sets in force, and acting on a
//! managed section that changed.
//!
//! The baseline of a file is what the agent last wrote ([`FileRecord`]). Each rule's text in the section
//! sits between rule markers naming the rule and its revision (`edict_api::ruleset`), so a changed
//! section is handled rule by rule ([`rules`]), each changed rule by its own mode:
//! - block: that rule's text is restored at once (the other rules' kept edits and the user's text
//!   outside the markers stay), a `block_reverted` report naming the rule queued; more than
//!   [`EnforceConfig::loop_threshold`] reverts of one file within [`EnforceConfig::loop_window`] mean an
//!   editor is fighting the agent: it stops reverting that file, queues one `revert_loop` report and
//!   tries again once the file has been quiet for a window;
//! - temporary: kept, a `temporary_changed` report naming the rule queued (which opens a change request
//!   for that rule; an amendment carrying the change request when one is known); the same content is not
//!   reported twice. A change that outlives the rule's `temporary_timeout_secs` without a decision is
//!   restored by the agent itself (offline too) and reported (`block_reverted`, naming the change
//!   request) once the agent is back;
//! - warning: kept, a `warning_kept` report naming the rule queued, once per content.
//!
//! Raising a rule to block restores its standing edits (kept as warnings or pending) at once; lowering
//! it keeps them. An edit that cannot be tied to one rule (a rule marker broken, removed or added, text
//! changed between the rules, a section written by an older agent) falls back to the strictest mode
//! among the section's rules, applied to the whole section as above.
//!
//! A decision ([`decide`]) acts only on the change it names: the change request the agent recorded for
//! that file (and rule), and only while the disk still holds that change's content; decisions are
//! idempotent by id. `revert` restores that rule's text (or the section); `keep` accepts the current
//! content until `until`, after which the audit restores it. A missing file or a missing section is a
//! change like any other.
//!
//! A new revision rewrites the section, but the standing edits (kept by a decision, warned, pending) of
//! rules it leaves as they were (same rule and revision, not raised to block unless a decision keeps
//! them) are carried into the new section, with their change state.

use crate::files::{self, Desired, Paths, Target};
use crate::ruleset::Mode;
use crate::section::{self, hash_body, sanitize_body};
use crate::snapshot::{Action, ChangeEntry, ChangeState, FileRecord, Snapshot, SnapshotError};
use edict_api::protocol::{Report, ReportKind};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The largest diff a report carries; longer diffs are cut.
const MAX_DIFF: usize = 64 * 1024;

pub mod decide;
mod revert;
mod rules;

pub use decide::Decision;
pub use rules::split_change_key;
use rules::timed_out;

/// An enforcement failure.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// The snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A managed file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, EnforceError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EnforceError + '_ {
    move |source| EnforceError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// Revert-loop detection settings.
#[derive(Debug, Clone, Copy)]
pub struct EnforceConfig {
    /// How many reverts of one file within the window are allowed; one more is a loop.
    pub loop_threshold: usize,
    /// The window.
    pub loop_window: Duration,
    /// How long to wait before trusting a file found empty (an editor truncates, then writes).
    pub settle: Duration,
}

impl Default for EnforceConfig {
    fn default() -> Self {
        EnforceConfig {
            loop_threshold: 5,
            loop_window: Duration::from_secs(10),
            settle: Duration::from_millis(100),
        }
    }
}

/// What a check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file is not managed.
    NotManaged,
    /// The section is as written (or as accepted).
    Unchanged,
    /// The section was written from a new rule set.
    Written,
    /// The section was removed (no rule applies any more).
    Removed,
    /// The section was restored.
    Restored,
    /// A change was kept and reported.
    Reported(ReportKind),
    /// The file is in a revert loop; not reverted.
    Looping,
    /// The file changed again while the agent was acting; it is checked again on that change's event.
    Raced,
}

/// Enforces the managed files; owned by one thread.
pub struct Enforcer {
    snapshot: Arc<Snapshot>,
    paths: Paths,
    config: EnforceConfig,
    reverts: HashMap<PathBuf, VecDeque<Instant>>,
    /// Files in a revert loop, with when a change was last seen.
    looping: HashMap<PathBuf, Instant>,
    /// The decisions found not to apply since the start (each is recorded as an action once).
    ignored: HashSet<String>,
    outbox: Arc<Notify>,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("paths", &self.paths)
            .finish()
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339()
}

fn expired(until: Option<&str>) -> bool {
    match until {
        None => false,
        // An unreadable time limit is treated as passed: the rules win.
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t <= chrono::Utc::now())
            .unwrap_or(true),
    }
}

fn diff(old: &str, new: &str) -> String {
    let mut text = similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .header("managed section (as written)", "managed section (as found)")
        .to_string();
    if text.len() > MAX_DIFF {
        let mut cut = MAX_DIFF;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (diff cut)\n");
    }
    text
}

impl Enforcer {
    /// An enforcer over `snapshot`; `outbox` is notified whenever a report is queued.
    pub fn new(
        snapshot: Arc<Snapshot>,
        paths: Paths,
        config: EnforceConfig,
        outbox: Arc<Notify>,
    ) -> Self {
        Enforcer {
            snapshot,
            paths,
            config,
            reverts: HashMap::new(),
            looping: HashMap::new(),
            ignored: HashSet::new(),
            outbox,
        }
    }

    /// The watched project dirs (from the snapshot).
    ///
    /// # Errors
    /// On a snapshot failure.
    pub fn watched(&self) -> Result<Vec<PathBuf>> {
        Ok(self.snapshot.watched()?)
    }

    /// Every managed file (the watched dirs are read from the snapshot).
    ///
    /// # Errors
    /// On a snapshot failure.
    pub fn targets(&self) -> Result<Vec<Target>> {
        Ok(files::targets(&self.paths, &self.snapshot.watched()?))
    }

    /// Brings every managed file in line with the rule sets in force: writes new sections, removes the
    /// sections no rule backs any more, and checks the others ([`Self::check_file`]). Failures of one
    /// file do not stop the others; the first is returned.
    ///
    /// # Errors
    /// The first failure.
    pub fn sync_all(&mut self) -> Result<()> {
        let rulesets = self.snapshot.rulesets()?;
        let targets = self.targets()?;
        let mut first_error = None;
        let mut seen = Vec::new();
        for target in &targets {
            seen.push(target.path.clone());
            let desired = files::desired(target, &rulesets);
            if let Err(e) = self.sync_target(target, &desired) {
                tracing::warn!(file = %target.path.display(), error = %e, "cannot enforce");
                first_error.get_or_insert(e);
            }
        }
        // Files written earlier that are no longer managed (an unwatched project): forget them, and
        // leave their text alone.
        for (path, _) in self.snapshot.files()? {
            if !seen.contains(&path) {
                self.snapshot.remove_file(&path)?;
                self.clear_changes(&path)?;
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn sync_target(&mut self, target: &Target, desired: &Desired) -> Result<Outcome> {
        let path = &target.path;
        let record = self.snapshot.file(path)?;
        if desired.body.is_empty() {
            if record.is_none() {
                return Ok(Outcome::NotManaged);
            }
            if let Some(text) = files::read(path).map_err(io(path))?
                && section::extract(&text).is_some()
                && !files::write_atomic_if_unchanged(path, Some(&text), &section::remove(&text))
                    .map_err(io(path))?
            {
                return Ok(Outcome::Raced);
            }
            self.snapshot.remove_file(path)?;
            self.clear_changes(path)?;
            self.action("removed", path)?;
            return Ok(Outcome::Removed);
        }
        let body = sanitize_body(&desired.body);
        let new_record = FileRecord {
            layer: target.layer,
            hash: hash_body(&body),
            body,
            mode: desired.mode,
            team: desired.team.clone(),
            rule: desired.rule.clone(),
            temporary_timeout_secs: desired.temporary_timeout_secs,
            rules: desired.rules.clone(),
        };
        match record {
            Some(old) if old.body == new_record.body => {
                if old != new_record {
                    self.snapshot.put_file(path, &new_record)?;
                }
                self.check_file(path)
            }
            old => {
                let found = files::read(path).map_err(io(path))?;
                let text = found.as_deref().unwrap_or_default();
                // The kept edits of rules the new revision leaves as they were stay in place.
                let (body, carried) = match &old {
                    Some(old) => self.carry_over(path, old, &new_record, text)?,
                    None => (new_record.body.clone(), Vec::new()),
                };
                let merged = section::merge(text, target.layer.as_str(), &body);
                if merged != text
                    && !files::write_atomic_if_unchanged(path, found.as_deref(), &merged)
                        .map_err(io(path))?
                {
                    return Ok(Outcome::Raced);
                }
                // Recorded after the write: a crash in between rewrites the file on the next start
                // instead of mistaking the old section for an edit.
                self.snapshot.put_file(path, &new_record)?;
                for (key, _) in self.changes_of(path)? {
                    if !carried.contains(&key) {
                        self.snapshot.remove_change(&key)?;
                    }
                }
                self.reverts.remove(path);
                self.looping.remove(path);
                self.action("written", path)?;
                Ok(Outcome::Written)
            }
        }
    }

    /// Every change entry of a file: the section's and its rules', with their keys.
    fn changes_of(&self, path: &Path) -> Result<Vec<(PathBuf, ChangeEntry)>> {
        Ok(self
            .snapshot
            .changes()?
            .into_iter()
            .filter(|(key, _)| key == path || rules::split_change_key(key).0 == path)
            .collect())
    }

    /// Forgets every change of a file (its section was rewritten or is no longer managed).
    fn clear_changes(&self, path: &Path) -> Result<()> {
        for (key, _) in self.changes_of(path)? {
            self.snapshot.remove_change(&key)?;
        }
        Ok(())
    }

    fn action(&self, what: &str, path: &Path) -> Result<()> {
        self.snapshot.record_action(&Action {
            at: now_rfc3339(),
            what: what.to_owned(),
            file: path.to_string_lossy().into_owned(),
        })?;
        Ok(())
    }

    /// Checks one managed file against what the agent wrote and acts by mode.
    ///
    /// # Errors
    /// On a snapshot or file failure.
    pub fn check_file(&mut self, path: &Path) -> Result<Outcome> {
        let Some(record) = self.snapshot.file(path)? else {
            return Ok(Outcome::NotManaged);
        };
        let mut text = files::read(path).map_err(io(path))?;
        if text.as_deref().is_some_and(<[u8]>::is_empty) {
            // Possibly caught between an editor's truncate and its write: look again.
            std::thread::sleep(self.config.settle);
            text = files::read(path).map_err(io(path))?;
        }
        let found = text.as_deref().and_then(section::extract).map(|s| s.body);
        let found_hash = hash_body(found.as_deref().unwrap_or(""));
        if found.is_some() && found_hash == record.hash {
            for (key, c) in self.changes_of(path)? {
                if c.state == ChangeState::Warned
                    || (c.state == ChangeState::Kept && expired(c.until.as_deref()))
                {
                    self.snapshot.remove_change(&key)?;
                }
            }
            self.looping.remove(path);
            return Ok(Outcome::Unchanged);
        }
        if let Some(found) = found.as_deref()
            && let Some(outcome) = self.check_rules(path, &record, text.as_deref(), found)?
        {
            return Ok(outcome);
        }
        // Not tied to one rule: the whole section, by the strictest mode of its rules.
        let change = self.snapshot.change(path)?;
        if let Some(c) = &change
            && c.seen_hash == found_hash
        {
            let kept = c.state == ChangeState::Kept;
            self.start_timeout(path, c)?;
            let restore = if kept && expired(c.until.as_deref()) {
                Some(("exception_expired_restored", None))
            } else if !kept && record.mode == Mode::Block {
                Some(("raised_to_block_restored", Some(c.change_request.clone())))
            } else if c.state == ChangeState::Pending
                && record.mode == Mode::Temporary
                && timed_out(c.opened_at.as_deref(), record.temporary_timeout_secs)
            {
                Some((
                    "temporary_timed_out_restored",
                    Some(c.change_request.clone()),
                ))
            } else {
                None
            };
            let Some((what, report)) = restore else {
                return Ok(Outcome::Unchanged);
            };
            if !self.restore(path, &record, text.as_deref())? {
                return Ok(Outcome::Raced);
            }
            self.snapshot.remove_change(path)?;
            self.action(what, path)?;
            if let Some(change_request) = report {
                let found_body = found.unwrap_or_default();
                let report = self.report(
                    ReportKind::BlockReverted,
                    path,
                    &record,
                    &found_body,
                    &found_hash,
                    change_request,
                );
                self.queue(&report, path)?;
            }
            return Ok(Outcome::Restored);
        }
        let found_body = found.unwrap_or_default();
        match record.mode {
            Mode::Block => {
                self.revert_block(path, &record, text.as_deref(), &found_body, &found_hash)
            }
            Mode::Temporary | Mode::Warning => {
                let (kind, state) = if record.mode == Mode::Temporary {
                    (ReportKind::TemporaryChanged, ChangeState::Pending)
                } else {
                    (ReportKind::WarningKept, ChangeState::Warned)
                };
                let (change_request, opened_at) = match (record.mode, change) {
                    (Mode::Temporary, Some(c)) => (c.change_request, c.opened_at),
                    _ => (None, None),
                };
                let report = self.report(
                    kind,
                    path,
                    &record,
                    &found_body,
                    &found_hash,
                    change_request.clone(),
                );
                self.queue(&report, path)?;
                self.snapshot.put_change(
                    path,
                    &ChangeEntry {
                        change_request,
                        report_id: report.report_id,
                        state,
                        until: None,
                        seen_hash: found_hash,
                        rule: None,
                        opened_at: Some(opened_at.unwrap_or_else(now_rfc3339)),
                    },
                )?;
                Ok(Outcome::Reported(kind))
            }
        }
    }

    fn report(
        &self,
        kind: ReportKind,
        path: &Path,
        record: &FileRecord,
        found_body: &str,
        found_hash: &str,
        change_request: Option<String>,
    ) -> Report {
        Report {
            report_id: uuid::Uuid::now_v7().to_string(),
            kind,
            team: record.team.clone(),
            rule: record.rule.clone(),
            file: path.to_string_lossy().into_owned(),
            layer: record.layer.as_str().to_owned(),
            original_hash: record.hash.clone(),
            new_hash: found_hash.to_owned(),
            diff: diff(&record.body, found_body),
            change_request,
        }
    }

    fn queue(&self, report: &Report, path: &Path) -> Result<()> {
        let what = serde_json::to_value(report.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.snapshot.queue_report(
            report,
            &Action {
                at: now_rfc3339(),
                what,
                file: path.to_string_lossy().into_owned(),
            },
        )?;
        self.outbox.notify_one();
        Ok(())
    }

    /// A report was acknowledged: drops it from the outbox and remembers the change request it opened
    /// on the change it reported.
    ///
    /// # Errors
    /// On a snapshot failure.
    pub fn acknowledged(&mut self, report_id: &str, change_request: Option<String>) -> Result<()> {
        let report = self.snapshot.ack_report(report_id)?;
        if let (Some(report), Some(cr)) = (report, change_request) {
            for (key, mut entry) in self.changes_of(Path::new(&report.file))? {
                if entry.report_id == report_id {
                    entry.change_request = Some(cr.clone());
                    self.snapshot.put_change(&key, &entry)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
