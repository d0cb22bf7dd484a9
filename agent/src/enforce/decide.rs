//! Applying a decision on a change request: only to the change it names, only while that change is
//! what the disk holds, and once per decision id.
//!
//! A decision names a change request, the file and (from a server that knows it) the rule and the
//! hash of the change's content. The agent looks for the change it recorded for that file (and rule)
//! under that change request: a decision about an older change request of the same file, or a change
//! the user edited again since, finds nothing to act on and is ignored. A decision applied is remembered
//! by its id (the gateway sends every decided change request again on each connection).

use super::rules::{Paired, change_key};
use super::{Enforcer, Outcome, Result, io};
use crate::files;
use crate::section::{self, hash_body};
use crate::snapshot::{ChangeEntry, ChangeState};
use edict_api::protocol::DecisionAction;
use std::path::{Path, PathBuf};

/// The identity key prefix under which applied decision ids are remembered.
const APPLIED_PREFIX: &str = "decision_applied:";

/// A decision on a change request, as the gateway sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The change request.
    pub change_request: String,
    /// The file it is about.
    pub file: String,
    /// The rule whose text changed, when the server names it.
    pub rule: Option<String>,
    /// SHA-256 of the change's content (the section, or the rule's text) the decision is about.
    pub content_hash: Option<String>,
    /// The decision's id: the same decision sent again is applied once.
    pub decision_id: Option<String>,
    /// Keep or revert.
    pub action: DecisionAction,
    /// For a time-limited exception: revert after this time (RFC 3339).
    pub until: Option<String>,
}

impl Enforcer {
    /// Records (once per decision since the start) that a decision did not apply, so `status` shows
    /// the agent saw it.
    fn ignore(&mut self, decision: &Decision, path: &Path, why: &str) -> Result<Outcome> {
        tracing::info!(
            file = decision.file,
            change_request = decision.change_request,
            "{why}; decision ignored"
        );
        let id = decision
            .decision_id
            .clone()
            .unwrap_or_else(|| format!("{}:{:?}", decision.change_request, decision.action));
        if self.ignored.insert(id) {
            self.action("decision_ignored", path)?;
        }
        Ok(Outcome::Unchanged)
    }

    /// Whether the managed section of `path` differs from what the agent wrote.
    fn section_differs(&self, path: &Path) -> Result<bool> {
        let Some(record) = self.snapshot.file(path)? else {
            return Ok(false);
        };
        let text = files::read(path).map_err(io(path))?;
        let found = text.as_deref().and_then(section::extract).map(|s| s.body);
        Ok(found.as_deref() != Some(record.body.as_str()))
    }

    /// The recorded change `decision` names, with its key.
    fn named_change(
        &self,
        path: &Path,
        decision: &Decision,
    ) -> Result<Option<(PathBuf, ChangeEntry)>> {
        let names = |entry: &ChangeEntry| {
            entry.change_request.as_deref() == Some(decision.change_request.as_str())
                && (decision.rule.is_none() || entry.rule.is_none() || entry.rule == decision.rule)
        };
        if let Some(rule) = &decision.rule {
            let key = change_key(path, Some(rule));
            if let Some(entry) = self.snapshot.change(&key)?.filter(|e| names(e)) {
                return Ok(Some((key, entry)));
            }
        }
        Ok(self.changes_of(path)?.into_iter().find(|(_, e)| names(e)))
    }

    /// Applies a decision on a change request about `decision.file` (see the module docs).
    ///
    /// # Errors
    /// On a snapshot or file failure.
    pub fn decide(&mut self, decision: &Decision) -> Result<Outcome> {
        let applied_key = decision
            .decision_id
            .as_ref()
            .map(|id| format!("{APPLIED_PREFIX}{id}"));
        let path = PathBuf::from(&decision.file);
        if let Some(key) = &applied_key
            && self.snapshot.identity(key)?.is_some()
        {
            // Applied already (sent again on a reconnect). A revert that would now undo something
            // else on disk is recorded as ignored, so `status` shows the agent declined it.
            if decision.action == DecisionAction::Revert && self.section_differs(&path)? {
                return self.ignore(decision, &path, "applied already");
            }
            return Ok(Outcome::Unchanged);
        }
        let Some(record) = self.snapshot.file(&path)? else {
            tracing::warn!(
                file = decision.file,
                change_request = decision.change_request,
                "decision about a file the agent does not manage"
            );
            return Ok(Outcome::NotManaged);
        };
        let Some((key, mut entry)) = self.named_change(&path, decision)? else {
            return self.ignore(
                decision,
                &path,
                "no change of this machine is under that change request",
            );
        };
        let text = files::read(&path).map_err(io(&path))?;
        let found = text.as_deref().and_then(section::extract).map(|s| s.body);
        let paired = match (&entry.rule, found.as_deref()) {
            (Some(_), Some(found)) => Paired::of(&record.body, found),
            _ => None,
        };
        let current = match (&entry.rule, &paired) {
            (Some(rule), Some(paired)) => Some(hash_body(&paired.found_text(rule))),
            (Some(_), None) => None,
            (None, _) => Some(hash_body(found.as_deref().unwrap_or(""))),
        };
        let on_disk = current.as_deref() == Some(entry.seen_hash.as_str())
            && decision
                .content_hash
                .as_deref()
                .is_none_or(|h| Some(h) == current.as_deref());
        if !on_disk {
            return self.ignore(decision, &path, "the change it names is no longer on disk");
        }
        let outcome = match decision.action {
            DecisionAction::Revert => {
                let body = match (&entry.rule, &paired) {
                    (Some(rule), Some(paired)) => paired.restore(std::slice::from_ref(rule)),
                    _ => record.body.clone(),
                };
                if !self.write_body(&path, &record, text.as_deref(), &body)? {
                    // Changed meanwhile: the change's own event checks the file again, and the
                    // decision, not remembered, is applied when it comes again.
                    return Ok(Outcome::Raced);
                }
                self.snapshot.remove_change(&key)?;
                self.action("decision_revert", &path)?;
                Outcome::Restored
            }
            DecisionAction::Keep => {
                entry.state = ChangeState::Kept;
                entry.until.clone_from(&decision.until);
                self.snapshot.put_change(&key, &entry)?;
                self.action("decision_keep", &path)?;
                Outcome::Unchanged
            }
        };
        if let Some(key) = &applied_key {
            self.snapshot.set_identity(key, &super::now_rfc3339())?;
        }
        Ok(outcome)
    }
}
