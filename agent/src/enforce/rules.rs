//! Enforcing each rule of a managed section by its own mode.
//!
//! The body the agent wrote and the body found are split at their rule markers
//! ([`split_rules`](crate::ruleset::split_rules)). When both split, name the same rules in the same order
//! and hold the same text between the rules (category headings, blank lines), every difference lies
//! inside one rule's text and is handled by that rule's mode; otherwise ([`Paired::of`] answers `None`)
//! the edit cannot be tied to one rule and the section falls back to the strictest mode of its rules.

use super::{Enforcer, Outcome, Result, expired, now_rfc3339};
use crate::ruleset::{Mode, RuleSpan, between_rules, split_rules};
use crate::section::hash_body;
use crate::snapshot::{ChangeEntry, ChangeState, FileRecord, RuleMark};
use edict_api::protocol::{Report, ReportKind};
use std::path::{Path, PathBuf};

/// Separates a file from a rule id in the key of a rule's change entry (a path never ends like it).
const RULE_KEY_SEP: &str = "#edict-rule=";

/// The key of a change entry: the file for a change of the whole section, the file and the rule for a
/// change of one rule's text.
pub(super) fn change_key(path: &Path, rule: Option<&str>) -> PathBuf {
    match rule {
        None => path.to_path_buf(),
        Some(rule) => {
            let mut key = path.as_os_str().to_owned();
            key.push(RULE_KEY_SEP);
            key.push(rule);
            PathBuf::from(key)
        }
    }
}

/// The file a change entry key is about, and its rule (for `edict-agent changes`).
pub fn split_change_key(key: &Path) -> (PathBuf, Option<String>) {
    let text = key.to_string_lossy();
    match text.rfind(RULE_KEY_SEP) {
        Some(at) => (
            PathBuf::from(&text[..at]),
            Some(text[at + RULE_KEY_SEP.len()..].to_owned()),
        ),
        None => (key.to_path_buf(), None),
    }
}

/// Whether a change first reported at `opened_at` has outlived `timeout_secs`.
pub(super) fn timed_out(opened_at: Option<&str>, timeout_secs: Option<u64>) -> bool {
    let (Some(opened_at), Some(timeout)) = (opened_at, timeout_secs) else {
        return false;
    };
    let Ok(opened_at) = chrono::DateTime::parse_from_rfc3339(opened_at) else {
        // An unreadable time is treated as passed: the rules win.
        return true;
    };
    let timeout = chrono::Duration::seconds(i64::try_from(timeout).unwrap_or(i64::MAX));
    opened_at
        .checked_add_signed(timeout)
        .is_some_and(|end| end <= chrono::Utc::now())
}

/// The written and the found body of a section, split into the same rules.
pub(super) struct Paired<'a> {
    written: &'a str,
    found: &'a str,
    written_spans: Vec<RuleSpan>,
    found_spans: Vec<RuleSpan>,
}

impl<'a> Paired<'a> {
    /// `None` when the found body cannot be tied rule by rule to the written one (or the written body
    /// has no rule markers: a section an older agent wrote).
    pub(super) fn of(written: &'a str, found: &'a str) -> Option<Self> {
        let written_spans = split_rules(written)?;
        let found_spans = split_rules(found)?;
        let same_rules = !written_spans.is_empty()
            && written_spans.len() == found_spans.len()
            && written_spans
                .iter()
                .zip(&found_spans)
                .all(|(w, f)| w.rule_id == f.rule_id && w.revision == f.revision);
        if !same_rules
            || between_rules(written, &written_spans) != between_rules(found, &found_spans)
        {
            return None;
        }
        Some(Paired {
            written,
            found,
            written_spans,
            found_spans,
        })
    }

    /// The rule ids, each once, in order.
    pub(super) fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for span in &self.written_spans {
            if !ids.contains(&span.rule_id) {
                ids.push(span.rule_id.clone());
            }
        }
        ids
    }

    fn text(body: &str, spans: &[RuleSpan], id: &str) -> String {
        spans
            .iter()
            .filter(|s| s.rule_id == id)
            .map(|s| &body[s.start..s.end])
            .collect()
    }

    /// The rule's text as written (all its places, when several teams include it).
    pub(super) fn written_text(&self, id: &str) -> String {
        Self::text(self.written, &self.written_spans, id)
    }

    /// The rule's text as found.
    pub(super) fn found_text(&self, id: &str) -> String {
        Self::text(self.found, &self.found_spans, id)
    }

    /// The found body with the text of the rules `ids` restored as written.
    pub(super) fn restore(&self, ids: &[String]) -> String {
        let mut out = String::with_capacity(self.written.len().max(self.found.len()));
        let mut at = 0;
        for (w, f) in self.written_spans.iter().zip(&self.found_spans) {
            out.push_str(&self.found[at..f.start]);
            if ids.contains(&f.rule_id) {
                out.push_str(&self.written[w.start..w.end]);
            } else {
                out.push_str(&self.found[f.start..f.end]);
            }
            at = f.end;
        }
        out.push_str(&self.found[at..]);
        out
    }
}

/// A rule's text to restore, and what to say about it.
struct Revert {
    rule: String,
    /// The report to queue once restored (with its change request).
    report: Option<(ReportKind, Option<String>)>,
    /// The action to record once restored.
    action: &'static str,
}

impl Enforcer {
    /// A pending change an older agent recorded has no start: its timeout runs from now.
    pub(super) fn start_timeout(&self, key: &Path, entry: &ChangeEntry) -> Result<()> {
        if entry.state == ChangeState::Pending && entry.opened_at.is_none() {
            let mut entry = entry.clone();
            entry.opened_at = Some(now_rfc3339());
            self.snapshot.put_change(key, &entry)?;
        }
        Ok(())
    }

    /// The body to write for a new revision (`new`) over the section written as `old` and found in
    /// `text`: the new body, with the found text of every rule whose change stands (kept by a
    /// decision, a warning, or pending) and that the new revision leaves as it was (same rule, same
    /// revision, once in the section; not raised to block unless a decision keeps it). Answers the keys
    /// of the changes carried over.
    pub(super) fn carry_over(
        &self,
        path: &Path,
        old: &FileRecord,
        new: &FileRecord,
        text: &[u8],
    ) -> Result<(String, Vec<PathBuf>)> {
        let plain = (new.body.clone(), Vec::new());
        let Some(found) = crate::section::extract(text).map(|s| s.body) else {
            return Ok(plain);
        };
        let (Some(paired), Some(new_spans)) =
            (Paired::of(&old.body, &found), split_rules(&new.body))
        else {
            return Ok(plain);
        };
        let once =
            |spans: &[RuleSpan], id: &str| spans.iter().filter(|s| s.rule_id == id).count() == 1;
        let mut replace: Vec<(usize, String)> = Vec::new();
        let mut carried = Vec::new();
        for id in paired.ids() {
            let found_text = paired.found_text(&id);
            if found_text == paired.written_text(&id) {
                continue;
            }
            let key = change_key(path, Some(&id));
            let Some(entry) = self.snapshot.change(&key)? else {
                continue;
            };
            let stands = entry.seen_hash == hash_body(&found_text)
                && match entry.state {
                    ChangeState::Kept => !expired(entry.until.as_deref()),
                    ChangeState::Warned | ChangeState::Pending => {
                        Self::mark(new, &id).mode != Mode::Block
                    }
                };
            let old_span = paired.written_spans.iter().find(|s| s.rule_id == id);
            let new_at = new_spans.iter().position(|s| s.rule_id == id);
            if let (true, Some(old_span), Some(new_at)) = (stands, old_span, new_at)
                && once(&paired.written_spans, &id)
                && once(&new_spans, &id)
                && new_spans[new_at].revision == old_span.revision
            {
                replace.push((new_at, found_text));
                carried.push(key);
            }
        }
        if replace.is_empty() {
            return Ok(plain);
        }
        let mut body = String::with_capacity(new.body.len());
        let mut at = 0;
        for (i, span) in new_spans.iter().enumerate() {
            body.push_str(&new.body[at..span.start]);
            match replace.iter().find(|(j, _)| *j == i) {
                Some((_, text)) => body.push_str(text),
                None => body.push_str(&new.body[span.start..span.end]),
            }
            at = span.end;
        }
        body.push_str(&new.body[at..]);
        Ok((body, carried))
    }

    /// The mark of a rule of `record` (a rule the record does not know takes the section's).
    fn mark(record: &FileRecord, id: &str) -> RuleMark {
        record
            .rules
            .iter()
            .find(|m| m.rule == id)
            .cloned()
            .unwrap_or_else(|| RuleMark {
                rule: id.to_owned(),
                team: record.team.clone(),
                mode: record.mode,
                temporary_timeout_secs: record.temporary_timeout_secs,
            })
    }

    /// A report about one rule's text.
    fn rule_report(
        kind: ReportKind,
        path: &Path,
        record: &FileRecord,
        mark: &RuleMark,
        written: &str,
        found: &str,
        change_request: Option<String>,
    ) -> Report {
        Report {
            report_id: uuid::Uuid::now_v7().to_string(),
            kind,
            team: mark.team.clone(),
            rule: mark.rule.clone(),
            file: path.to_string_lossy().into_owned(),
            layer: record.layer.as_str().to_owned(),
            original_hash: hash_body(written),
            new_hash: hash_body(found),
            diff: super::diff(written, found),
            change_request,
        }
    }

    /// Handles a changed section rule by rule; `None` when the change cannot be tied to the rules
    /// (the caller falls back to the strictest mode).
    pub(super) fn check_rules(
        &mut self,
        path: &Path,
        record: &FileRecord,
        text: Option<&[u8]>,
        found: &str,
    ) -> Result<Option<Outcome>> {
        if record.rules.is_empty() {
            return Ok(None);
        }
        let Some(paired) = Paired::of(&record.body, found) else {
            return Ok(None);
        };
        let mut outcome = Outcome::Unchanged;
        let mut reverts: Vec<Revert> = Vec::new();
        for id in paired.ids() {
            let key = change_key(path, Some(&id));
            let entry = self.snapshot.change(&key)?;
            let written = paired.written_text(&id);
            let found_text = paired.found_text(&id);
            let mark = Self::mark(record, &id);
            if written == found_text {
                if entry.as_ref().is_some_and(|c| {
                    c.state == ChangeState::Warned
                        || (c.state == ChangeState::Kept && expired(c.until.as_deref()))
                }) {
                    self.snapshot.remove_change(&key)?;
                }
                continue;
            }
            let found_hash = hash_body(&found_text);
            if let Some(c) = entry.as_ref().filter(|c| c.seen_hash == found_hash) {
                // A change already handled: it stands unless its rule now blocks it (a decision's
                // exception aside), its exception ended, or its temporary time ran out.
                let kept = c.state == ChangeState::Kept;
                self.start_timeout(&key, c)?;
                if kept && expired(c.until.as_deref()) {
                    reverts.push(Revert {
                        rule: id,
                        report: None,
                        action: "exception_expired_restored",
                    });
                } else if !kept && mark.mode == Mode::Block {
                    reverts.push(Revert {
                        rule: id,
                        report: Some((ReportKind::BlockReverted, c.change_request.clone())),
                        action: "raised_to_block_restored",
                    });
                } else if c.state == ChangeState::Pending
                    && mark.mode == Mode::Temporary
                    && timed_out(c.opened_at.as_deref(), mark.temporary_timeout_secs)
                {
                    reverts.push(Revert {
                        rule: id,
                        report: Some((ReportKind::BlockReverted, c.change_request.clone())),
                        action: "temporary_timed_out_restored",
                    });
                }
                continue;
            }
            match mark.mode {
                Mode::Block => reverts.push(Revert {
                    rule: id,
                    report: Some((ReportKind::BlockReverted, None)),
                    action: "block_restored",
                }),
                Mode::Temporary | Mode::Warning => {
                    let (kind, state) = if mark.mode == Mode::Temporary {
                        (ReportKind::TemporaryChanged, ChangeState::Pending)
                    } else {
                        (ReportKind::WarningKept, ChangeState::Warned)
                    };
                    // An amendment keeps its change request and its start (the timeout runs from the
                    // first report, as the server's does).
                    let (change_request, opened_at) = match &entry {
                        Some(c) if mark.mode == Mode::Temporary => {
                            (c.change_request.clone(), c.opened_at.clone())
                        }
                        _ => (None, None),
                    };
                    let report = Self::rule_report(
                        kind,
                        path,
                        record,
                        &mark,
                        &written,
                        &found_text,
                        change_request.clone(),
                    );
                    self.queue(&report, path)?;
                    self.snapshot.put_change(
                        &key,
                        &ChangeEntry {
                            change_request,
                            report_id: report.report_id,
                            state,
                            until: None,
                            seen_hash: found_hash,
                            rule: Some(id),
                            opened_at: Some(opened_at.unwrap_or_else(now_rfc3339)),
                        },
                    )?;
                    outcome = Outcome::Reported(kind);
                }
            }
        }
        if reverts.is_empty() {
            return Ok(Some(outcome));
        }
        let first = &reverts[0].rule;
        let loop_report = Self::rule_report(
            ReportKind::RevertLoop,
            path,
            record,
            &Self::mark(record, first),
            &paired.written_text(first),
            &paired.found_text(first),
            None,
        );
        if let Some(looping) = self.loop_guard(path, loop_report)? {
            return Ok(Some(looping));
        }
        let ids: Vec<String> = reverts.iter().map(|r| r.rule.clone()).collect();
        if !self.write_body(path, record, text, &paired.restore(&ids))? {
            return Ok(Some(Outcome::Raced));
        }
        self.reverted(path);
        for revert in reverts {
            self.snapshot
                .remove_change(&change_key(path, Some(&revert.rule)))?;
            if revert.action != "block_restored" {
                self.action(revert.action, path)?;
            }
            if let Some((kind, change_request)) = revert.report {
                let mark = Self::mark(record, &revert.rule);
                let report = Self::rule_report(
                    kind,
                    path,
                    record,
                    &mark,
                    &paired.written_text(&revert.rule),
                    &paired.found_text(&revert.rule),
                    change_request,
                );
                self.queue(&report, path)?;
            }
        }
        Ok(Some(Outcome::Restored))
    }
}
