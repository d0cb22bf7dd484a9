//! Team rule sets to gateways: the KV bucket `<prefix>rulesets`, key = team id, value = the rule set JSON
//! the `team_rulesets` projection stored.
//!
//! Writes are a compare-and-set on the rule set revision ([`KvRulesetPublisher`]): the bucket never goes
//! from revision N+1 back to N.
//!
//! Gateways read the bucket through [`NatsFeed`], their [`RulesetFeed`]: a watch of the bucket
//! ([`watch_rulesets`]) and its current values ([`current_rulesets`]).
//!
//! Each put carries the publication's [`Origin`] in its message headers (`traceparent`,
//! `Edict-Request-Id`, as on the event stream). A KV watch hands out values without headers, so a
//! gateway reads a live update's headers back by its sequence (one request per new revision, none for
//! the values a watch starts with): its push is then in the command's trace, its log lines name the
//! request.
//!
//! The bucket keeps one revision per key. Its stream is created by [`Nats::ensure_streams`] (by hand:
//! `create_key_value` fails on nats-server 2.9); here it is only opened with `get_key_value`.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_trait::async_trait;
use edict_application::delivery::{FeedError, Origin, RulesetFeed, RulesetUpdate};
use edict_projections::RulesetPublisher;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::headers::{self, REQUEST_ID_HEADER};
use super::{Nats, NatsError};
use crate::projection::publisher::revision_of;

/// How long a gateway waits for a live update's headers before it pushes the update without them.
const ORIGIN_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Compare-and-set rounds before a publish gives up (each lost round means another publisher wrote
/// the key meanwhile; the publication is retried later from the read model anyway).
const CAS_ATTEMPTS: usize = 20;

/// Publishes rule sets to the KV bucket (the distributed deployment's [`RulesetPublisher`]).
#[derive(Debug, Clone)]
pub struct KvRulesetPublisher {
    nats: Nats,
    store: kv::Store,
}

impl KvRulesetPublisher {
    /// Opens the bucket `<prefix>rulesets`, creating its stream when missing.
    ///
    /// # Errors
    /// [`NatsError::JetStream`] when the stream cannot be ensured or the bucket opened.
    pub async fn open(nats: &Nats) -> Result<KvRulesetPublisher, NatsError> {
        Ok(KvRulesetPublisher {
            nats: nats.clone(),
            store: open_bucket(nats).await?,
        })
    }

    /// The compare-and-set rounds of [`RulesetPublisher::publish`].
    async fn compare_and_set(
        &self,
        team: &str,
        ruleset: &serde_json::Value,
        origin: &Origin,
    ) -> Result<(), String> {
        // What `Store::update` allows: the key becomes a subject token.
        if team.is_empty()
            || team.starts_with('.')
            || team.ends_with('.')
            || !team
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
        {
            return Err(format!("put rule set of team {team:?}: not a valid key"));
        }
        let value = serde_json::to_vec(ruleset).map_err(|error| error.to_string())?;
        let ours = revision_of(ruleset);
        for _ in 0..CAS_ATTEMPTS {
            let entry = self
                .store
                .entry(team)
                .await
                .map_err(|error| format!("read rule set of team {team}: {error}"))?;
            // The KV revision (stream sequence) the update expects: 0 = only if the key never was.
            let expected = entry.as_ref().map_or(0, |entry| entry.revision);
            if let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) {
                let held = serde_json::from_slice::<serde_json::Value>(&entry.value).ok();
                let held_revision = held.as_ref().and_then(revision_of);
                if held_revision > ours || held.as_ref() == Some(ruleset) {
                    tracing::debug!(
                        ?held_revision,
                        ?ours,
                        "the bucket holds this or a newer revision"
                    );
                    return Ok(());
                }
            }
            match self.put(team, value.clone(), expected, origin).await {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    // Someone wrote the key since it was read: compare again.
                    continue;
                }
                Err(error) => return Err(format!("put rule set of team {team}: {error}")),
            }
        }
        Err(format!(
            "put rule set of team {team}: still contended after {CAS_ATTEMPTS} compare-and-set attempts"
        ))
    }

    /// A KV update (`Store::update`: a put only if the key's last sequence is `expected`) that also
    /// carries `origin` in its headers.
    async fn put(
        &self,
        team: &str,
        value: Vec<u8>,
        expected: u64,
        origin: &Origin,
    ) -> Result<(), async_nats::jetstream::context::PublishError> {
        let prefix = self.store.put_prefix.as_ref().unwrap_or(&self.store.prefix);
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        if let Some(traceparent) = &origin.traceparent {
            headers.insert("traceparent", traceparent.as_str());
        }
        if let Some(request_id) = &origin.request_id {
            headers.insert(REQUEST_ID_HEADER, request_id.as_str());
        }
        self.nats
            .jetstream()
            .publish_with_headers(format!("{prefix}{team}"), headers, value.into())
            .await?
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl RulesetPublisher for KvRulesetPublisher {
    /// Writes `ruleset` under `team` unless the bucket holds a higher revision (or this very rule
    /// set): a compare-and-set on the key's KV revision, read just before, retried when another
    /// publisher wrote in between. So two publishers (projector replicas, a republish at start racing
    /// a live commit) can never leave revision N after N+1.
    ///
    /// The same revision with other content (a rebuild with a changed renderer keeps the revisions
    /// and changes the hashes) replaces the held one. When the publish fails because the bucket's
    /// stream is gone (deleted), the stream is created again and the publish tried once more.
    #[tracing::instrument(skip_all, fields(team = team), err)]
    async fn publish(
        &self,
        team: &str,
        ruleset: &serde_json::Value,
        origin: &Origin,
    ) -> Result<(), String> {
        let error = match self.compare_and_set(team, ruleset, origin).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        // Only a missing stream is worth another try now; anything else (a denied or timed out
        // put) is the publication loop's to retry, which keeps its pauses short.
        let stream = format!("KV_{}", self.nats.prefix().rulesets_bucket());
        if self.nats.jetstream().get_stream(&stream).await.is_ok() {
            return Err(error);
        }
        if let Err(ensure) = self.nats.ensure_streams().await {
            return Err(format!("{error}; {ensure}"));
        }
        tracing::warn!(%error, "the rule set bucket was missing: created again");
        self.compare_and_set(team, ruleset, origin).await
    }
}

/// Every team's current rule set, then each new one as it is published, as the embedded mode's
/// [`WatchPublisher`](crate::projection::WatchPublisher) hands them out. Deleted keys and values that are
/// not JSON are skipped (the latter with a warning).
///
/// # Errors
/// [`NatsError::JetStream`] when the bucket cannot be opened or watched; an item is an error when the
/// watch fails (the gateway then opens a new watch, which starts with the current values again).
pub async fn watch_rulesets(
    nats: &Nats,
) -> Result<impl Stream<Item = Result<RulesetUpdate, NatsError>> + Send + use<>, NatsError> {
    let store = open_bucket(nats).await?;
    let watch = store
        .watch_with_history(">")
        .await
        .map_err(|error| NatsError::jetstream("watch rule sets", error))?;
    let stream = store.stream.clone();
    Ok(watch.filter_map(move |entry| {
        let stream = stream.clone();
        async move {
            match entry {
                Err(error) => Some(Err(NatsError::jetstream("watch rule sets", error))),
                Ok(entry) if entry.operation != kv::Operation::Put => None,
                Ok(entry) => match serde_json::from_slice(&entry.value) {
                    Ok(ruleset) => Some(Ok(RulesetUpdate {
                        origin: if entry.seen_current {
                            origin_of(&stream, entry.revision).await
                        } else {
                            Origin::default()
                        },
                        team: entry.key,
                        ruleset: Arc::new(ruleset),
                    })),
                    Err(error) => {
                        tracing::warn!(team = entry.key, %error, "rule set is not JSON; skipped");
                        None
                    }
                },
            }
        }
    }))
}

/// The origin the put at `sequence` carried (empty when it carried none or cannot be read in time:
/// the update is pushed all the same, only without its trace).
async fn origin_of(stream: &async_nats::jetstream::stream::Stream, sequence: u64) -> Origin {
    let message =
        match tokio::time::timeout(ORIGIN_READ_TIMEOUT, stream.get_raw_message(sequence)).await {
            Ok(Ok(message)) => message,
            Ok(Err(error)) => {
                tracing::debug!(sequence, %error, "cannot read a rule set update's headers");
                return Origin::default();
            }
            Err(_) => {
                tracing::debug!(sequence, "no answer for a rule set update's headers");
                return Origin::default();
            }
        };
    let headers = Some(&message.headers);
    Origin {
        traceparent: headers::trace_context(headers)
            .and(message.headers.get("traceparent"))
            .map(|value| value.as_str().to_owned()),
        request_id: headers::request_id(headers).map(str::to_owned),
    }
}

/// The rule set the bucket holds for each of `teams` (teams without one, or whose value is not JSON,
/// are left out).
///
/// # Errors
/// [`NatsError::JetStream`] when the bucket cannot be opened or read.
pub async fn current_rulesets(
    nats: &Nats,
    teams: &[String],
) -> Result<Vec<RulesetUpdate>, NatsError> {
    // Opened without ensuring the streams: a missing bucket is an error here, not a reason to create it.
    let bucket = nats.prefix().rulesets_bucket();
    let store = nats
        .jetstream()
        .get_key_value(bucket.as_str())
        .await
        .map_err(|error| NatsError::jetstream(format!("open bucket {bucket}"), error))?;
    let mut current = Vec::with_capacity(teams.len());
    for team in teams {
        let value = store.get(team).await.map_err(|error| {
            NatsError::jetstream(format!("read rule set of team {team}"), error)
        })?;
        if let Some(ruleset) = value.and_then(|value| serde_json::from_slice(&value).ok()) {
            current.push(RulesetUpdate {
                team: team.clone(),
                ruleset: Arc::new(ruleset),
                origin: Origin::default(),
            });
        }
    }
    Ok(current)
}

async fn open_bucket(nats: &Nats) -> Result<kv::Store, NatsError> {
    nats.ensure_streams().await?;
    let bucket = nats.prefix().rulesets_bucket();
    nats.jetstream()
        .get_key_value(bucket.as_str())
        .await
        .map_err(|error| NatsError::jetstream(format!("open bucket {bucket}"), error))
}

/// The distributed mode's feed: a watch of the `<prefix>rulesets` KV bucket.
#[derive(Debug, Clone)]
pub struct NatsFeed(pub Nats);

#[async_trait]
impl RulesetFeed for NatsFeed {
    async fn open(
        &self,
    ) -> Result<BoxStream<'static, Result<RulesetUpdate, FeedError>>, FeedError> {
        let watch = watch_rulesets(&self.0)
            .await
            .map_err(|e| FeedError::Unavailable(e.to_string()))?;
        Ok(watch
            .map(|item| item.map_err(|e| FeedError::Unavailable(e.to_string())))
            .boxed())
    }

    async fn current(&self, teams: &[String]) -> Result<Vec<RulesetUpdate>, FeedError> {
        current_rulesets(&self.0, teams)
            .await
            .map_err(|e| FeedError::Unavailable(e.to_string()))
    }
}
