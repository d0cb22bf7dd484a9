//! Publishing rule sets: the runner hands every rule set document ([`RULESET_KIND`]) a commit wrote to its
//! [`RulesetPublisher`], and [`ProjectionRunner::republish_all`] sends them all again (at start, after a
//! rebuild).
//!
//! Publication is at-least-once from the read model (ADR 0014): the batch that commits a rule set
//! document records its revision as owed in `ruleset_publication`, in the same transaction; a publish
//! that succeeds marks it published. The runner's publication loop (`PublicationLoop`) looks for
//! revisions still owed (a put that failed after the commit, a process that died in between, another
//! replica's) and publishes the served document again, with backoff, until it succeeds. Publishers
//! compare and set on the revision, so a late or repeated publish never replaces a newer revision.
//!
//! The embedded mode's publisher, [`WatchPublisher`](super::WatchPublisher), is in
//! [`watch`](super::watch).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use edict_application::delivery::Origin;
use edict_projections::{DocKey, RULESET_KIND, RulesetPublisher, StoredDoc};
use serde_json::Value;

use super::RunnerError;
use super::runner::ProjectionRunner;
use super::sql;
use crate::store::Database;

/// How often the publication loop looks for owed rule sets while publishing succeeds (a row is owed
/// only between a commit and its publish, unless that publish failed or its process died).
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// The longest pause between passes while publishing fails (a put that times out adds its own 5 s).
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Owed rule sets read per query.
const OWED_PAGE: i64 = 100;

/// The revision of a rule set document (`None` without one, which orders below any revision).
pub(crate) fn revision_of(ruleset: &Value) -> Option<u64> {
    ruleset.get("revision").and_then(Value::as_u64)
}

/// Signs every rule set before handing it to the publisher it wraps (ADR 0018): the signature is added
/// where rule sets are published, so everything downstream (the KV bucket, the in-process channel,
/// gateways) carries it and none of them can change what it covers. The issue time is the revision's
/// own time (`updated_at`), so publishing the same revision again yields the same bytes (ed25519 is
/// deterministic) and wakes nobody.
pub struct SigningPublisher {
    inner: Arc<dyn RulesetPublisher>,
    key: Arc<dyn ActiveKey>,
}

/// Signs the decisions of change inbox documents a commit wrote (ADR 0022; the key ring).
#[async_trait]
pub trait DecisionSigner: Send + Sync {
    /// Signs the decision of each decided change request among `docs`; answers how many.
    ///
    /// # Errors
    /// When no key is held or the store fails (the key ring's sweep signs them later).
    async fn sign(&self, docs: &[&Value]) -> Result<usize, String>;

    /// Signs a removal for each agent of the user of every `MemberRemoved` among `events` (just
    /// committed by the directory, in log order), and withdraws those a `MemberAdded` makes
    /// stale (ADR 0024); answers how many were signed. None by default.
    ///
    /// # Errors
    /// When no key is held or the store fails.
    async fn sign_removals(
        &self,
        _events: &[edict_application::event_log::RecordedEvent],
    ) -> Result<usize, String> {
        Ok(0)
    }
}

/// The projection whose commits carry the membership events removals are signed from.
const MEMBERSHIP_PROJECTION: &str = "directory";

/// Where the key that signs rule sets now is read (the key ring, ADR 0021; a fixed key in tests).
pub trait ActiveKey: Send + Sync {
    /// The active signing key (`None` when this process does not hold it: publishing fails, and the
    /// publication loop retries).
    fn active(&self) -> Option<ed25519_dalek::SigningKey>;
}

impl ActiveKey for ed25519_dalek::SigningKey {
    fn active(&self) -> Option<ed25519_dalek::SigningKey> {
        Some(self.clone())
    }
}

impl std::fmt::Debug for SigningPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningPublisher")
            .field(
                "key_id",
                &self
                    .key
                    .active()
                    .map(|key| edict_api::ruleset::key_id_of(&key.verifying_key())),
            )
            .finish_non_exhaustive()
    }
}

impl SigningPublisher {
    /// Signs with the active key of `key`, then publishes to `inner`.
    pub fn new(inner: Arc<dyn RulesetPublisher>, key: Arc<dyn ActiveKey>) -> Self {
        SigningPublisher { inner, key }
    }

    /// `ruleset` with its signature.
    ///
    /// # Errors
    /// When `ruleset` is not a rule set document, or no signing key is held.
    pub fn sign(&self, ruleset: &Value) -> Result<Value, String> {
        let key = self
            .key
            .active()
            .ok_or("this process does not hold the active signing key")?;
        let mut doc: edict_api::ruleset::RuleSetDoc = serde_json::from_value(ruleset.clone())
            .map_err(|error| format!("not a rule set document: {error}"))?;
        doc.signature = None;
        doc.signature = Some(edict_api::ruleset::sign(&doc, &key, doc.updated_at));
        serde_json::to_value(&doc).map_err(|error| format!("cannot encode a rule set: {error}"))
    }
}

#[async_trait]
impl RulesetPublisher for SigningPublisher {
    async fn publish(&self, team: &str, ruleset: &Value, origin: &Origin) -> Result<(), String> {
        let signed = self.sign(ruleset)?;
        self.inner.publish(team, &signed, origin).await
    }
}

impl ProjectionRunner {
    /// Signs the decisions among the change request documents of `dirty` (just committed), when this
    /// runner has a signer; a failure is logged and left to the key ring's sweep.
    pub(super) async fn sign_decisions(&self, dirty: &[(DocKey, Option<StoredDoc>)]) {
        let Some(signer) = &self.decisions else {
            return;
        };
        let docs: Vec<&Value> = dirty
            .iter()
            .filter(|((kind, _), _)| kind == "change_request")
            .filter_map(|(_, doc)| doc.as_ref().map(|doc| &doc.doc))
            .collect();
        if docs.is_empty() {
            return;
        }
        if let Err(error) = signer.sign(&docs).await {
            tracing::warn!(projection = self.name(), %error, "cannot sign decisions; the sweep signs them");
        }
    }

    /// Signs the removals among `events` (just committed), when this runner is the directory's and
    /// has a signer (ADR 0024); a failure is logged (a rebuild of the directory signs them again).
    pub(super) async fn sign_removals(
        &self,
        events: &[edict_application::event_log::RecordedEvent],
    ) {
        let Some(signer) = &self.decisions else {
            return;
        };
        if self.name() != MEMBERSHIP_PROJECTION
            || !events
                .iter()
                .any(|event| matches!(event.event_type.as_str(), "MemberRemoved" | "MemberAdded"))
        {
            return;
        }
        if let Err(error) = signer.sign_removals(events).await {
            tracing::error!(
                projection = self.name(),
                %error,
                "cannot sign removals; agents keep the teams their users left until they are signed"
            );
        }
    }

    /// Hands the rule set documents among `dirty` (just committed) to the publisher. A publish that
    /// fails is logged and left to the publication loop, which retries it from the read model: the
    /// commit recorded the revision as owed (ADR 0014). `origin` is the command's, from the batch.
    pub(super) async fn publish(&self, dirty: &[(DocKey, Option<StoredDoc>)], origin: &Origin) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let mut rulesets = false;
        for ((kind, key), doc) in dirty {
            let Some(doc) = doc.as_ref().filter(|_| kind == RULESET_KIND) else {
                continue;
            };
            rulesets = true;
            let team = doc.meta.team.as_deref().unwrap_or(key);
            match publisher.publish(team, &doc.doc, origin).await {
                Ok(()) => self.published(key, team, &doc.doc).await,
                Err(error) => tracing::warn!(
                    projection = self.name(),
                    team,
                    %error,
                    "cannot publish a rule set; the publication loop retries it"
                ),
            }
        }
        if rulesets {
            self.publication.start(&self.db, self.name(), publisher);
        }
    }

    /// Records that the rule set `doc` of `key` was published (a failure only means the publication
    /// loop publishes it once more).
    async fn published(&self, key: &str, team: &str, doc: &Value) {
        let Some(revision) = stored_revision(doc) else {
            return;
        };
        let published = sql::Owed {
            key,
            team,
            revision,
        };
        if let Err(error) = sql::mark_published(&self.db, self.name(), &published).await {
            tracing::debug!(projection = self.name(), team, %error, "cannot record a publication");
        }
    }

    /// Publishes every rule set document of the served generation (at start, and after a rebuild), so
    /// a publisher that missed updates converges. Returns how many were published. Those that could
    /// not be are recorded as owed: the publication loop retries them.
    ///
    /// # Errors
    /// [`RunnerError::Store`] when the database fails or some rule sets could not be published (all
    /// are tried).
    #[tracing::instrument(skip_all, fields(projection = self.name()), err)]
    pub async fn republish_all(&self) -> Result<u64, RunnerError> {
        let Some(publisher) = &self.publisher else {
            return Ok(0);
        };
        let rulesets = sql::served_docs_of_kind(&self.db, self.name(), RULESET_KIND).await?;
        if !rulesets.is_empty() {
            self.publication.start(&self.db, self.name(), publisher);
        }
        let mut published = 0;
        let mut first_failure = None;
        for (key, team, doc) in &rulesets {
            let team = team.as_deref().unwrap_or(key);
            match publisher.publish(team, doc, &Origin::default()).await {
                Ok(()) => {
                    published += 1;
                    self.published(key, team, doc).await;
                }
                Err(error) => {
                    tracing::warn!(projection = self.name(), team, %error, "cannot publish a rule set");
                    if let Some(revision) = stored_revision(doc) {
                        let owed = sql::Owed {
                            key,
                            team,
                            revision,
                        };
                        sql::raise_owed(&self.db, self.name(), &owed).await?;
                    }
                    first_failure.get_or_insert(error);
                }
            }
        }
        match first_failure {
            None => Ok(published),
            Some(error) => Err(RunnerError::Store(format!(
                "{} of {} rule sets not published (the publication loop retries them): {error}",
                rulesets.len() as u64 - published,
                rulesets.len()
            ))),
        }
    }
}

/// The rule set revisions a batch's documents owe the gateways (rule set documents with a revision).
pub(super) fn owed_by(dirty: &[(DocKey, Option<StoredDoc>)]) -> Vec<sql::Owed<'_>> {
    dirty
        .iter()
        .filter_map(|((kind, key), doc)| {
            let doc = doc.as_ref().filter(|_| kind == RULESET_KIND)?;
            Some(sql::Owed {
                key,
                team: doc.meta.team.as_deref().unwrap_or(key),
                revision: stored_revision(&doc.doc)?,
            })
        })
        .collect()
}

/// A rule set's revision as stored (BIGINT).
fn stored_revision(doc: &Value) -> Option<i64> {
    revision_of(doc).and_then(|revision| i64::try_from(revision).ok())
}

/// A runner's publication loop: publishes, from the read model, every rule set revision committed
/// but not confirmed published (a publish that failed, a process that died between its commit and its
/// publish, a replica's), with backoff, until it succeeds.
///
/// Started by the runner the first time it publishes a rule set (only a projection of rule sets
/// needs one; a task needs the runtime the publishing code runs on) and aborted when the runner is
/// dropped, so the loop lives exactly as long as its runner.
#[derive(Debug, Default)]
pub(super) struct PublicationLoop(Mutex<Option<tokio::task::JoinHandle<()>>>);

impl PublicationLoop {
    /// Starts the loop unless it runs.
    fn start(
        &self,
        db: &Database,
        projection: &'static str,
        publisher: &Arc<dyn RulesetPublisher>,
    ) {
        let mut task = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        *task = Some(tokio::spawn(publish_owed(
            db.clone(),
            projection,
            Arc::clone(publisher),
        )));
    }
}

impl Drop for PublicationLoop {
    fn drop(&mut self) {
        let task = self.0.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.take() {
            task.abort();
        }
    }
}

/// What one pass over the owed rule sets did.
enum Pass {
    /// Nothing (more) is owed.
    Settled,
    /// A page was published; more may be owed.
    More,
}

/// The publication loop: a pass every [`SWEEP_INTERVAL`] while nothing fails, at once while pages
/// fill, after a growing pause (up to [`MAX_RETRY_PAUSE`]) while publishing fails.
#[tracing::instrument(skip_all, fields(projection))]
async fn publish_owed(
    db: Database,
    projection: &'static str,
    publisher: Arc<dyn RulesetPublisher>,
) {
    let mut after = String::new();
    let mut failures = 0u32;
    loop {
        let pause = match publish_owed_page(&db, projection, publisher.as_ref(), &mut after).await {
            Ok(Pass::Settled) => {
                if failures > 0 {
                    tracing::info!(projection, failures, "every owed rule set is published");
                }
                failures = 0;
                SWEEP_INTERVAL
            }
            Ok(Pass::More) => Duration::ZERO,
            Err(error) => {
                failures = failures.saturating_add(1);
                let pause = retry_pause(failures);
                tracing::warn!(
                    projection,
                    %error,
                    failures,
                    retry_in = ?pause,
                    "cannot publish an owed rule set; retrying"
                );
                pause
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Publishes up to [`OWED_PAGE`] owed rule sets, starting after `after` (and wrapping around), and
/// marks each published. Stops at the first failure, leaving `after` on the rule set that failed, so
/// the next pass starts with the others: one rule set that cannot be published never holds back the
/// rest.
async fn publish_owed_page(
    db: &Database,
    projection: &'static str,
    publisher: &dyn RulesetPublisher,
    after: &mut String,
) -> Result<Pass, String> {
    let store = |error: sqlx::Error| format!("read model: {error}");
    let mut owed = sql::owed(db, projection, after, OWED_PAGE)
        .await
        .map_err(store)?;
    if owed.is_empty() && !after.is_empty() {
        after.clear();
        owed = sql::owed(db, projection, after, OWED_PAGE)
            .await
            .map_err(store)?;
    }
    let full = owed.len() as i64 == OWED_PAGE;
    for (key, owed_revision) in owed {
        after.clone_from(&key);
        let Some((team, doc)) = sql::served_doc(db, projection, RULESET_KIND, &key)
            .await
            .map_err(store)?
        else {
            // The document is gone (the team with it): nothing left to publish.
            sql::forget_owed(db, projection, &key)
                .await
                .map_err(store)?;
            continue;
        };
        let team = team.as_deref().unwrap_or(&key);
        publisher
            .publish(team, &doc, &Origin::default())
            .await
            .map_err(|error| format!("team {team}: {error}"))?;
        // The served document is at least the owed revision (both are written by one commit); a
        // lower one (a rebuild that numbered revisions anew) leaves nothing else to publish either.
        let revision = stored_revision(&doc)
            .unwrap_or(owed_revision)
            .max(owed_revision);
        let published = sql::Owed {
            key: &key,
            team,
            revision,
        };
        sql::mark_published(db, projection, &published)
            .await
            .map_err(store)?;
        tracing::info!(projection, team, revision, "owed rule set published");
    }
    if !full {
        after.clear();
    }
    Ok(if full { Pass::More } else { Pass::Settled })
}

/// The pause after `failures` failed passes in a row: 250 ms, doubling, at most [`MAX_RETRY_PAUSE`].
fn retry_pause(failures: u32) -> Duration {
    edict_backoff::Backoff::exact(Duration::from_millis(250), MAX_RETRY_PAUSE)
        .delay(failures.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::WatchPublisher;

    #[tokio::test]
    async fn the_signing_publisher_publishes_verifiable_rule_sets_and_the_same_bytes_again() {
        use edict_api::ruleset::{Layers, OrgKey, RuleSetDoc, verify};
        let team = uuid::Uuid::from_u128(1);
        let layers = Layers::default();
        let doc = RuleSetDoc {
            team_id: team,
            team_name: "t".into(),
            archived: false,
            revision: 2,
            hash: layers.hash(),
            updated_at: chrono::Utc::now(),
            position: 1,
            layers,
            signature: None,
        };
        let value = serde_json::to_value(&doc).unwrap_or_default();
        let watch = WatchPublisher::new();
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let keys = [OrgKey::of(&key.verifying_key())];
        let signing = SigningPublisher::new(Arc::new(watch.clone()), Arc::new(key));
        let team = team.to_string();
        assert_eq!(
            signing.publish(&team, &value, &Origin::default()).await,
            Ok(())
        );
        let published = watch.current(&team).map(|v| (*v).clone());
        let published: Option<RuleSetDoc> = published.and_then(|v| serde_json::from_value(v).ok());
        assert!(published.is_some_and(|doc| verify(&doc, &team, &keys).is_ok()));
        let mut updates = watch.subscribe();
        assert_eq!(
            signing.publish(&team, &value, &Origin::default()).await,
            Ok(())
        );
        assert!(updates.try_recv().is_err(), "republishing wakes nobody");
    }
}
