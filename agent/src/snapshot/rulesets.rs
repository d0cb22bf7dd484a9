//! The rule sets in force: stored only when a pinned organization key signed them and never replaced by
//! a lower revision (the refusals recorded and counted), verified again at start, the organization keys
//! and key chain they are verified against, and the floor of signed removals per team (ADR 0018, 0021,
//! 0024).

use super::*;
use crate::ruleset::{IntegrityError, KeyChain, KeySet, OrgKey, verify};
use edict_api::protocol::Holding;
use redb::ReadableTableMetadata;

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

impl Snapshot {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{Layers, RuleSetDoc};

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
}
