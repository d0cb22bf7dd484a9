//! Restoring managed text: the whole section or some rules' text, guarded against a revert loop (an
//! editor fighting the agent).

use super::{Enforcer, Outcome, Result, io};
use crate::files;
use crate::section;
use crate::snapshot::FileRecord;
use edict_api::protocol::{Report, ReportKind};
use std::path::Path;
use std::time::Instant;

impl Enforcer {
    pub(super) fn revert_block(
        &mut self,
        path: &Path,
        record: &FileRecord,
        text: Option<&[u8]>,
        found_body: &str,
        found_hash: &str,
    ) -> Result<Outcome> {
        let loop_report = self.report(
            ReportKind::RevertLoop,
            path,
            record,
            found_body,
            found_hash,
            None,
        );
        if let Some(looping) = self.loop_guard(path, loop_report)? {
            return Ok(looping);
        }
        if !self.restore(path, record, text)? {
            return Ok(Outcome::Raced);
        }
        self.reverted(path);
        let report = self.report(
            ReportKind::BlockReverted,
            path,
            record,
            found_body,
            found_hash,
            None,
        );
        self.queue(&report, path)?;
        Ok(Outcome::Restored)
    }

    /// Before a revert: `Some(Looping)` when the file is in a revert loop (the first time, the
    /// `revert_loop` report is queued), `None` when the revert may go ahead.
    pub(super) fn loop_guard(&mut self, path: &Path, report: Report) -> Result<Option<Outcome>> {
        let now = Instant::now();
        let window = self.config.loop_window;
        if let Some(last) = self.looping.get_mut(path) {
            if now.duration_since(*last) < window {
                *last = now;
                return Ok(Some(Outcome::Looping));
            }
            // Quiet for a window: try again.
            self.looping.remove(path);
            self.reverts.remove(path);
        }
        let recent = {
            let times = self.reverts.entry(path.to_path_buf()).or_default();
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                times.pop_front();
            }
            times.len()
        };
        if recent >= self.config.loop_threshold {
            self.looping.insert(path.to_path_buf(), now);
            self.queue(&report, path)?;
            tracing::warn!(file = %path.display(), "revert loop: no longer reverting this file for now");
            return Ok(Some(Outcome::Looping));
        }
        Ok(None)
    }

    /// Counts a revert of `path` for the loop detection.
    pub(super) fn reverted(&mut self, path: &Path) {
        self.reverts
            .entry(path.to_path_buf())
            .or_default()
            .push_back(Instant::now());
    }

    /// Rewrites the section of `text` (the file as read) as written; `false` when the file changed
    /// since.
    pub(super) fn restore(
        &self,
        path: &Path,
        record: &FileRecord,
        text: Option<&[u8]>,
    ) -> Result<bool> {
        self.write_body(path, record, text, &record.body)
    }

    /// Puts `body` in the section of `text` (the file as read); `false` when the file changed since.
    pub(super) fn write_body(
        &self,
        path: &Path,
        record: &FileRecord,
        text: Option<&[u8]>,
        body: &str,
    ) -> Result<bool> {
        let merged = section::merge(text.unwrap_or_default(), record.layer.as_str(), body);
        let written = files::write_atomic_if_unchanged(path, text, &merged).map_err(io(path))?;
        if written {
            tracing::info!(file = %path.display(), "managed section restored");
        } else {
            tracing::debug!(file = %path.display(), "changed while restoring; checked again");
        }
        Ok(written)
    }
}
