//! Publication of team rule sets from the read model to NATS KV: compare-and-set on the revision (a
//! lower revision never replaces a higher one, whoever publishes it and in whatever order) and
//! at-least-once delivery (a put that fails is retried from the read model until it succeeds, with no
//! process restarted).
//!
//! The compare-and-set tests use the shared nats-server (`EDICT_TEST_NATS_URL`) with a prefix of their
//! own. The at-least-once test runs a nats-server of its own whose configuration denies, then allows
//! again, the publish to the bucket (a configuration reload, no restart), with a real PostgreSQL and
//! the real `ProjectionRunner`. Every wait is a bounded poll.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use edict_infrastructure::nats::{self, KvRulesetPublisher, Nats, NatsSettings};
use edict_projections::RulesetPublisher;
use serde_json::{Value, json};

fn nats_url() -> String {
    std::env::var("EDICT_TEST_NATS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| nats::DEFAULT_NATS_URL.to_owned())
}

fn fresh_prefix() -> String {
    format!("t{}_", uuid::Uuid::new_v4().simple())
}

async fn connect(url: &str, prefix: &str) -> Nats {
    nats::connect(NatsSettings::new(url, prefix).unwrap())
        .await
        .expect("connect to nats")
}

async fn delete_streams(nats: &Nats) {
    let js = nats.jetstream();
    let _ = js.delete_stream(nats.prefix().events_stream()).await;
    let _ = js
        .delete_stream(format!("KV_{}", nats.prefix().rulesets_bucket()))
        .await;
}

/// The rule set the bucket holds for `team`.
async fn held(nats: &Nats, team: &str) -> Option<Value> {
    let store = nats
        .jetstream()
        .get_key_value(nats.prefix().rulesets_bucket())
        .await
        .ok()?;
    let value = store.get(team).await.ok()??;
    serde_json::from_slice(&value).ok()
}

fn ruleset(team: &str, revision: u64) -> Value {
    json!({"team_id": team, "revision": revision, "hash": format!("h{revision}")})
}

/// Runs `case` on the shared server with a fresh prefix; deletes the prefix's streams afterwards, also
/// when the case panics.
async fn on_shared_nats<F, Fut>(case: F)
where
    F: FnOnce(Nats) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let nats = connect(&nats_url(), &fresh_prefix()).await;
    nats.ensure_streams().await.unwrap();
    let outcome = tokio::spawn(case(nats.clone())).await;
    delete_streams(&nats).await;
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("test task failed: {error}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Compare-and-set on the revision.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_revision_published_after_a_higher_one_is_ignored() {
    on_shared_nats(|nats| async move {
        let publisher = KvRulesetPublisher::open(&nats).await.unwrap();
        publisher
            .publish("team-1", &ruleset("team-1", 5))
            .await
            .unwrap();
        publisher
            .publish("team-1", &ruleset("team-1", 6))
            .await
            .unwrap();
        // A late publisher (a replica, a republish at start) still holding revision 5.
        publisher
            .publish("team-1", &ruleset("team-1", 5))
            .await
            .unwrap();
        assert_eq!(held(&nats, "team-1").await, Some(ruleset("team-1", 6)));
        // The same revision again changes nothing either; a higher one goes through.
        publisher
            .publish("team-1", &ruleset("team-1", 6))
            .await
            .unwrap();
        publisher
            .publish("team-1", &ruleset("team-1", 7))
            .await
            .unwrap();
        assert_eq!(held(&nats, "team-1").await, Some(ruleset("team-1", 7)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_publishers_racing_revisions_n_and_n_plus_1_always_leave_n_plus_1() {
    on_shared_nats(|nats| async move {
        // Two publishers on two connections, as two projector replicas would be.
        let other = connect(&nats_url(), nats.prefix().as_str()).await;
        let first = Arc::new(KvRulesetPublisher::open(&nats).await.unwrap());
        let second = Arc::new(KvRulesetPublisher::open(&other).await.unwrap());
        const ROUNDS: u64 = 60;
        let mut downgraded = Vec::new();
        for round in 0..ROUNDS {
            let team = format!("team-{}", round % 3);
            let n = 2 * round + 1;
            // Each publishes both revisions, in opposite orders, at the same time.
            let (a, b) = tokio::join!(
                {
                    let (publisher, team) = (Arc::clone(&first), team.clone());
                    async move {
                        publisher.publish(&team, &ruleset(&team, n + 1)).await?;
                        publisher.publish(&team, &ruleset(&team, n)).await
                    }
                },
                {
                    let (publisher, team) = (Arc::clone(&second), team.clone());
                    async move {
                        publisher.publish(&team, &ruleset(&team, n)).await?;
                        publisher.publish(&team, &ruleset(&team, n + 1)).await
                    }
                },
            );
            a.unwrap();
            b.unwrap();
            let now = held(&nats, &team).await.unwrap();
            if now["revision"] != json!(n + 1) {
                downgraded.push((round, now["revision"].clone()));
            }
        }
        assert!(
            downgraded.is_empty(),
            "rounds that ended below revision N+1 (round, revision held): {downgraded:?}"
        );
    })
    .await;
}
