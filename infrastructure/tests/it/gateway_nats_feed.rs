//! The distributed mode's rule set feed: rule sets put into the NATS KV bucket reach the gateway's
//! payload cache and broadcast, once per revision. Needs the NATS server of the other NATS tests
//! (`EDICT_TEST_NATS_URL`, else the default); each test has its own prefix and deletes its streams.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edict_test_kit::nats::{delete_streams, fresh_prefix, test_nats_url};
use edict_test_kit::resume_panic;
use std::sync::Arc;
use std::time::Duration;

use edict_api::gateway::Rulesets;
use edict_application::delivery::Origin;
use edict_infrastructure::nats::{self, KvRulesetPublisher, NatsFeed, NatsSettings};
use edict_projections::RulesetPublisher;
use serde_json::json;

/// Puts team-1's rule set of `revision` (hash `h<revision>`) into the bucket.
async fn publish(publisher: &KvRulesetPublisher, revision: u64) {
    let doc = json!({"team_id": "team-1", "revision": revision, "hash": format!("h{revision}")});
    publisher
        .publish("team-1", &doc, &Origin::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_sets_put_in_the_bucket_reach_the_gateway_once_per_revision() {
    let prefix = fresh_prefix();
    let nats = nats::connect(NatsSettings::new(test_nats_url(), &prefix).unwrap())
        .await
        .expect("connect to nats");
    nats.ensure_streams().await.unwrap();
    let publisher = KvRulesetPublisher::open(&nats).await.unwrap();
    // Published before the gateway starts: the watch starts with the current values.
    publish(&publisher, 1).await;

    let rulesets = Rulesets::new();
    let mut received = rulesets.subscribe();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn({
        let rulesets = rulesets.clone();
        let feed = Arc::new(NatsFeed(nats.clone()));
        async move { rulesets.follow(feed, stopped).await }
    });
    let outcome = tokio::spawn(async move {
        let wait = Duration::from_secs(10);
        let first = tokio::time::timeout(wait, received.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (&*first.team, first.revision, &*first.hash),
            ("team-1", 1, "h1")
        );

        publish(&publisher, 2).await;
        let second = tokio::time::timeout(wait, received.recv())
            .await
            .unwrap()
            .unwrap();
        // The stored document goes out as it is (this one is too small for a typed `RuleSetDoc`).
        let message: serde_json::Value = serde_json::from_slice(second.message()).unwrap();
        assert_eq!(
            (
                message["type"].as_str(),
                message["team"].as_str(),
                message["revision"].as_u64(),
                message["hash"].as_str()
            ),
            (Some("rule_set"), Some("team-1"), Some(2), Some("h2"))
        );
        assert_eq!(message["ruleset"]["revision"], 2);

        // The same revision again (a republish after a restart) is not broadcast again: the next
        // broadcast is revision 3, published after it through the same watch.
        publish(&publisher, 2).await;
        publish(&publisher, 3).await;
        let third = tokio::time::timeout(wait, received.recv())
            .await
            .expect("revision 3 is broadcast")
            .unwrap();
        assert_eq!(
            (&*third.team, third.revision, &*third.hash),
            ("team-1", 3, "h3"),
            "revision 2 was broadcast twice"
        );
    })
    .await;
    let _ = stop.send(true);
    let _ = follower.await;
    delete_streams(&nats).await;
    resume_panic(outcome);
}
