//! Verifying an exported file offline: each line's hash recomputed from its `previous_hash`, lines
//! linked to each other, and the hashes at signed checkpoints matched and their signatures checked.
//!
//! Feed the lines in file order to [`OfflineVerifier::check`]; the first error names the broken line.
//! A file proves as much as its checkpoints do: lines up to the last checkpoint it covers are the
//! signed history; lines after it are only consistent with each other (anyone could have written
//! them), and [`OfflineSummary::unanchored_lines`] says how many there are.

use super::ExportedEvent;
use super::chain::{ChainHash, ChainHasher};
use super::checkpoint::{SignedCheckpoint, describe_failure};
use std::collections::BTreeMap;

/// What a verified file held.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OfflineSummary {
    /// Lines read.
    pub lines: u64,
    /// Lines with chain hashes, each recomputed.
    pub hashed_lines: u64,
    /// The chain index of the first hashed line.
    pub first_chain_index: Option<i64>,
    /// The chain index of the last hashed line.
    pub last_chain_index: Option<i64>,
    /// Checkpoints the file covers, each matched and verified.
    pub checkpoints_matched: u64,
    /// The last of them.
    pub last_checkpoint: Option<i64>,
    /// Lines after the last matched checkpoint (consistent, but not proven by a signature).
    pub unanchored_lines: u64,
}

/// Checks an export line by line.
#[derive(Debug)]
pub struct OfflineVerifier {
    checkpoints: BTreeMap<i64, SignedCheckpoint>,
    trusted: Option<[u8; 32]>,
    hasher: ChainHasher,
    previous: Option<(i64, ChainHash)>,
    unhashed_since: Option<u64>,
    summary: OfflineSummary,
}

impl OfflineVerifier {
    /// A verifier against `checkpoints`, whose signatures must come from `trusted` when given.
    pub fn new(checkpoints: Vec<SignedCheckpoint>, trusted: Option<[u8; 32]>) -> OfflineVerifier {
        OfflineVerifier {
            checkpoints: checkpoints
                .into_iter()
                .map(|c| (c.chain_index, c))
                .collect(),
            trusted,
            hasher: ChainHasher::default(),
            previous: None,
            unhashed_since: None,
            summary: OfflineSummary::default(),
        }
    }

    /// Checks line `line` (1-based) of the file.
    ///
    /// # Errors
    /// A message naming the line and what is wrong with it.
    pub fn check(&mut self, line: u64, exported: &ExportedEvent) -> Result<(), String> {
        self.summary.lines += 1;
        let event = &exported.event;
        let ellipsis = if event.aggregate_id.chars().count() > 8 {
            "…"
        } else {
            ""
        };
        let what = format!(
            "line {line} (event at position {}, {} {}{ellipsis}/{})",
            event.global_position,
            event.aggregate_type,
            event.aggregate_id.chars().take(8).collect::<String>(),
            event.sequence
        );
        let (Some(index), Some(previous), Some(hash)) = (
            exported.chain_index,
            exported.previous_hash.as_deref(),
            exported.hash.as_deref(),
        ) else {
            if exported.hash.is_some() || exported.previous_hash.is_some() {
                return Err(format!(
                    "{what} has a partial chain link (chain_index, previous_hash and hash go together)"
                ));
            }
            // Not chained yet: only the tail of a file may be.
            self.unhashed_since.get_or_insert(line);
            self.summary.unanchored_lines += 1;
            return Ok(());
        };
        if let Some(since) = self.unhashed_since {
            return Err(format!(
                "{what} has chain hashes, but line {since} before it has none: the lines are out of order"
            ));
        }
        let previous = ChainHash::parse(previous)
            .map_err(|_| format!("{what}: previous_hash is not a SHA-256 hash"))?;
        let recorded =
            ChainHash::parse(hash).map_err(|_| format!("{what}: hash is not a SHA-256 hash"))?;
        if let Some((previous_index, previous_hash)) = self.previous {
            if index != previous_index + 1 {
                return Err(format!(
                    "{what} does not follow line {}: chain index {index} after {previous_index}",
                    line - 1
                ));
            }
            if previous != previous_hash {
                return Err(format!(
                    "{what} does not link to line {}: its previous_hash is not that line's hash",
                    line - 1
                ));
            }
        }
        let computed = self.hasher.next(&previous, event);
        if computed != recorded {
            return Err(format!(
                "{what} does not match its hash: its content changed since it was chained"
            ));
        }
        self.summary.hashed_lines += 1;
        self.summary.first_chain_index.get_or_insert(index);
        self.summary.last_chain_index = Some(index);
        self.summary.unanchored_lines += 1;
        if let Some(checkpoint) = self.checkpoints.get(&index) {
            checkpoint
                .verify(self.trusted.as_ref())
                .map_err(|error| describe_failure(checkpoint.number, &error))?;
            if checkpoint.hash != computed || checkpoint.global_position != event.global_position {
                return Err(format!(
                    "{what} does not match signed checkpoint {}: the history up to it differs from the signed one",
                    checkpoint.number
                ));
            }
            self.summary.checkpoints_matched += 1;
            self.summary.last_checkpoint = Some(checkpoint.number);
            self.summary.unanchored_lines = 0;
        }
        self.previous = Some((index, computed));
        Ok(())
    }

    /// What the file held (after its last line).
    pub fn summary(&self) -> OfflineSummary {
        self.summary.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{GENESIS, chain_hash};
    use crate::event_log::RecordedEvent;
    use chrono::Utc;
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    fn event(position: i64) -> RecordedEvent {
        RecordedEvent {
            global_position: position,
            transaction_id: 7,
            aggregate_type: "Rule".into(),
            aggregate_id: format!("rule-{position}"),
            sequence: 1,
            event_type: "RuleDrafted".into(),
            event_version: "1.0".into(),
            payload: json!({"RuleDrafted": {"name": format!("r{position}")}}),
            metadata: json!({"actor": "user:1"}),
            recorded_at: Utc::now(),
        }
    }

    /// An export of `count` chained events and a checkpoint at every `every`.
    fn export(count: i64, every: i64) -> (Vec<ExportedEvent>, Vec<SignedCheckpoint>) {
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut previous = GENESIS;
        let mut lines = Vec::new();
        let mut checkpoints = Vec::new();
        for index in 1..=count {
            let e = event(index * 10);
            let hash = chain_hash(&previous, &e);
            if index % every == 0 {
                checkpoints.push(SignedCheckpoint::sign(
                    &key,
                    index / every,
                    index,
                    e.global_position,
                    hash,
                    Utc::now(),
                ));
            }
            lines.push(ExportedEvent {
                event: e,
                chain_index: Some(index),
                previous_hash: Some(previous.to_hex()),
                hash: Some(hash.to_hex()),
            });
            previous = hash;
        }
        (lines, checkpoints)
    }

    fn run(
        lines: &[ExportedEvent],
        checkpoints: Vec<SignedCheckpoint>,
    ) -> Result<OfflineSummary, String> {
        let mut verifier = OfflineVerifier::new(checkpoints, None);
        for (n, line) in lines.iter().enumerate() {
            verifier.check(n as u64 + 1, line)?;
        }
        Ok(verifier.summary())
    }

    #[test]
    fn an_untouched_export_verifies_up_to_its_last_checkpoint() {
        let (lines, checkpoints) = export(10, 4);
        let summary = run(&lines, checkpoints);
        assert_eq!(
            summary.map(|s| (s.hashed_lines, s.checkpoints_matched, s.unanchored_lines)),
            Ok((10, 2, 2))
        );
    }

    #[test]
    fn an_edited_payload_names_its_line() {
        let (mut lines, checkpoints) = export(10, 4);
        lines[5].event.payload = json!({"RuleDrafted": {"name": "forged"}});
        let error = run(&lines, checkpoints).err().unwrap_or_default();
        assert!(error.starts_with("line 6 (event at position 60"), "{error}");
        assert!(error.contains("content changed"), "{error}");
    }

    #[test]
    fn a_removed_line_breaks_the_link() {
        let (mut lines, checkpoints) = export(10, 4);
        lines.remove(3);
        let error = run(&lines, checkpoints).err().unwrap_or_default();
        assert!(error.starts_with("line 4 "), "{error}");
        assert!(error.contains("does not follow line 3"), "{error}");
    }

    #[test]
    fn a_rehashed_forgery_fails_at_the_signed_checkpoint() {
        let (mut lines, checkpoints) = export(10, 4);
        // Rewrite line 2 and recompute every hash after it: internally consistent, but not signed.
        lines[1].event.payload = json!({"forged": true});
        let mut previous = GENESIS;
        for line in &mut lines {
            let hash = chain_hash(&previous, &line.event);
            line.previous_hash = Some(previous.to_hex());
            line.hash = Some(hash.to_hex());
            previous = hash;
        }
        let error = run(&lines, checkpoints).err().unwrap_or_default();
        assert!(
            error.starts_with("line 4 ") && error.contains("signed checkpoint 1"),
            "{error}"
        );
    }

    #[test]
    fn a_tampered_signature_is_named() {
        let (lines, mut checkpoints) = export(8, 4);
        checkpoints[1].signature[0] ^= 1;
        let error = run(&lines, checkpoints).err().unwrap_or_default();
        assert_eq!(error, "checkpoint 2 has an invalid signature");
    }

    #[test]
    fn unchained_lines_may_only_end_the_file() {
        let (mut lines, checkpoints) = export(6, 3);
        lines[2].chain_index = None;
        lines[2].previous_hash = None;
        lines[2].hash = None;
        let error = run(&lines, checkpoints).err().unwrap_or_default();
        assert!(error.contains("out of order"), "{error}");
    }
}
