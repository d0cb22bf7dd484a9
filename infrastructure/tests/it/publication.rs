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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use edict_api::gateway::Rulesets;
use edict_application::delivery::Origin;
use edict_application::event_log::RecordedEvent;
use edict_infrastructure::nats::{self, KvRulesetPublisher, Nats, NatsFeed, NatsSettings};
use edict_infrastructure::projection::{ProjectionRunner, WatchFeed, WatchPublisher};
use edict_infrastructure::store::Database;
use edict_projections::{
    DocMeta, Docs, Projection, ProjectionError, RULESET_KIND, RulesetPublisher,
};
use edict_test_kit::nats::{delete_streams, fresh_prefix, test_nats_url};
use edict_test_kit::{
    create_isolated_postgres, drop_isolated_postgres, eventually, run_isolated, test_database_url,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

async fn connect(url: &str, prefix: &str) -> Nats {
    nats::connect(NatsSettings::new(url, prefix).unwrap())
        .await
        .expect("connect to nats")
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
    let nats = connect(&test_nats_url(), &fresh_prefix()).await;
    nats.ensure_streams().await.unwrap();
    run_isolated(case(nats.clone()), async {
        delete_streams(&nats).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------------
// Compare-and-set on the revision.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_revision_published_after_a_higher_one_is_ignored() {
    on_shared_nats(|nats| async move {
        let publisher = KvRulesetPublisher::open(&nats).await.unwrap();
        publisher
            .publish("team-1", &ruleset("team-1", 5), &Origin::default())
            .await
            .unwrap();
        publisher
            .publish("team-1", &ruleset("team-1", 6), &Origin::default())
            .await
            .unwrap();
        // A late publisher (a replica, a republish at start) still holding revision 5.
        publisher
            .publish("team-1", &ruleset("team-1", 5), &Origin::default())
            .await
            .unwrap();
        assert_eq!(held(&nats, "team-1").await, Some(ruleset("team-1", 6)));
        // The same revision again changes nothing either; a higher one goes through.
        publisher
            .publish("team-1", &ruleset("team-1", 6), &Origin::default())
            .await
            .unwrap();
        publisher
            .publish("team-1", &ruleset("team-1", 7), &Origin::default())
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
        let other = connect(&test_nats_url(), nats.prefix().as_str()).await;
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
                        publisher
                            .publish(&team, &ruleset(&team, n + 1), &Origin::default())
                            .await?;
                        publisher
                            .publish(&team, &ruleset(&team, n), &Origin::default())
                            .await
                    }
                },
                {
                    let (publisher, team) = (Arc::clone(&second), team.clone());
                    async move {
                        publisher
                            .publish(&team, &ruleset(&team, n), &Origin::default())
                            .await?;
                        publisher
                            .publish(&team, &ruleset(&team, n + 1), &Origin::default())
                            .await
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

// ---------------------------------------------------------------------------------------------------
// At-least-once publication from the read model.

use crate::support::{free_port, spawn_nats};
use edict_test_kit::tally;

/// A projection of rule sets over the tally aggregate: aggregate `<team>` is a team whose rule set
/// revision is its event count.
struct TeamSets;

#[async_trait]
impl Projection for TeamSets {
    fn name(&self) -> &'static str {
        "team_sets"
    }

    async fn apply(
        &self,
        event: &RecordedEvent,
        docs: &mut Docs<'_>,
    ) -> Result<(), ProjectionError> {
        let team = event.aggregate_id.as_str();
        let meta = DocMeta {
            team: Some(team.to_owned()),
            status: None,
            sort_key: team.to_owned(),
        };
        let revision = u64::try_from(event.sequence).unwrap();
        docs.put(RULESET_KIND, team, meta, &ruleset(team, revision))
    }
}

/// Appends one event to `team` (its rule set's next revision).
async fn bump(db: &Database, team: &str) {
    tally::cqrs(db).execute(team, 1).await.unwrap();
}

/// The revision the served read model holds for `team`.
async fn projected(db: &Database, team: &str) -> Option<u64> {
    let models = edict_infrastructure::projection::SqlReadModels::new(db.clone());
    let doc: Value =
        edict_application::read_models::ReadModels::get(&models, "team_sets", RULESET_KIND, team)
            .await
            .ok()??;
    doc["revision"].as_u64()
}

/// Catches `runner` up to the head of the log (on PostgreSQL the read horizon is cluster-wide: other
/// tests' open transactions can hold a catch-up short, so it repeats until the log is covered).
async fn catch_up(runner: &ProjectionRunner, events: i64) {
    let covered = eventually(Duration::from_secs(30), || async {
        runner.catch_up().await.unwrap();
        let status = runner.status().await.unwrap();
        (status.events_applied >= events).then_some(())
    })
    .await;
    assert!(
        covered.is_some(),
        "the projection caught up with {events} events"
    );
}

/// A publisher that fails while switched off, else hands over to an in-process watch.
struct Switch {
    on: AtomicBool,
    watch: WatchPublisher,
}

#[async_trait]
impl RulesetPublisher for Switch {
    async fn publish(&self, team: &str, ruleset: &Value, origin: &Origin) -> Result<(), String> {
        if !self.on.load(Ordering::SeqCst) {
            return Err("switched off".to_owned());
        }
        self.watch.publish(team, ruleset, origin).await
    }
}

async fn a_failed_publish_is_retried_from_the_read_model(db: Database) {
    let switch = Arc::new(Switch {
        on: AtomicBool::new(true),
        watch: WatchPublisher::new(),
    });
    let runner = ProjectionRunner::new(db.clone(), Arc::new(TeamSets), Some(switch.clone()));
    runner.ensure().await.unwrap();
    bump(&db, "team-a").await;
    catch_up(&runner, 1).await;
    assert_eq!(
        switch.watch.current("team-a").as_deref(),
        Some(&ruleset("team-a", 1))
    );

    // The put fails after the commit: the read model moves on, the watch does not.
    switch.on.store(false, Ordering::SeqCst);
    bump(&db, "team-a").await;
    bump(&db, "team-b").await;
    catch_up(&runner, 3).await;
    assert_eq!(projected(&db, "team-a").await, Some(2));
    assert_eq!(
        switch.watch.current("team-a").as_deref(),
        Some(&ruleset("team-a", 1))
    );
    assert_eq!(switch.watch.current("team-b"), None);

    // Allowed again, with nothing else happening: both reach the watch.
    switch.on.store(true, Ordering::SeqCst);
    let delivered = eventually(Duration::from_secs(10), || async {
        (switch.watch.current("team-a").as_deref() == Some(&ruleset("team-a", 2))
            && switch.watch.current("team-b").as_deref() == Some(&ruleset("team-b", 1)))
        .then_some(())
    })
    .await;
    assert!(
        delivered.is_some(),
        "the rule sets whose publish failed reached the watch within 10 s: team-a {:?}, team-b {:?}",
        switch.watch.current("team-a"),
        switch.watch.current("team-b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_failed_publish_is_retried_from_the_read_model() {
    let admin_url = test_database_url();
    let (db, url) = create_isolated_postgres(&admin_url, "edict_test_publication")
        .await
        .expect("create an isolated PostgreSQL database");
    run_isolated(
        a_failed_publish_is_retried_from_the_read_model(db.clone()),
        async {
            db.close().await;
            let _ = drop_isolated_postgres(&admin_url, &url).await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_failed_publish_is_retried_from_the_read_model() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&format!("sqlite://{}/edict.db", dir.path().display()))
        .await
        .expect("open SQLite");
    db.migrate().await.expect("migrate SQLite");
    a_failed_publish_is_retried_from_the_read_model(db).await;
}

/// A nats-server of this test's own whose configuration denies the publish to one subject, or not,
/// changed by a configuration reload (no restart: the clients keep their connections). Connections
/// without credentials are its one user (`no_auth_user`), so Edict needs none.
struct GuardedNats {
    dir: tempfile::TempDir,
    port: u16,
    child: tokio::process::Child,
    reloads: usize,
    guarded: String,
}

impl GuardedNats {
    /// Starts it, allowing everything; `guarded` is the subject [`GuardedNats::deny`] denies.
    async fn start(guarded: String) -> GuardedNats {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, Self::config(dir.path(), port, &guarded, false)).unwrap();
        let mut command = tokio::process::Command::new("/usr/sbin/nats-server");
        command.arg("-c").arg(&config);
        let child = spawn_nats(
            &mut command,
            port,
            None,
            "private nats-server did not start",
        )
        .await;
        GuardedNats {
            dir,
            port,
            child,
            reloads: 0,
            guarded,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn config(dir: &std::path::Path, port: u16, guarded: &str, deny: bool) -> String {
        let publish = if deny {
            format!(r#"{{ allow: [">"], deny: ["{guarded}"] }}"#)
        } else {
            r#"{ allow: [">"] }"#.to_owned()
        };
        format!(
            r#"
listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{store}" }}
log_file: "{log}"
authorization {{
  users: [ {{ user: "edict", password: "edict", permissions: {{ publish: {publish}, subscribe: ">" }} }} ]
}}
no_auth_user: "edict"
"#,
            store = dir.join("js").display(),
            log = dir.join("nats.log").display(),
        )
    }

    /// Denies (or allows again) the publish to the guarded subject; returns once the server logged
    /// the reload.
    async fn deny(&mut self, deny: bool) {
        let config = self.dir.path().join("nats.conf");
        std::fs::write(
            &config,
            Self::config(self.dir.path(), self.port, &self.guarded, deny),
        )
        .unwrap();
        let pid = self.child.id().expect("nats-server runs");
        let status = tokio::process::Command::new("/usr/sbin/nats-server")
            .arg("--signal")
            .arg(format!("reload={pid}"))
            .status()
            .await
            .unwrap();
        assert!(status.success(), "signal the reload");
        self.reloads += 1;
        let log = self.dir.path().join("nats.log");
        let reloads = self.reloads;
        let reloaded = eventually(Duration::from_secs(10), || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                (text.matches("Reloaded server configuration").count() >= reloads).then_some(())
            }
        })
        .await;
        assert!(reloaded.is_some(), "nats-server reloaded its configuration");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_set_whose_kv_put_was_denied_reaches_kv_and_the_gateway_once_allowed_again() {
    let prefix = fresh_prefix();
    let mut server = GuardedNats::start(format!("$KV.{prefix}rulesets.>")).await;
    let nats = connect(&server.url(), &prefix).await;
    nats.ensure_streams().await.unwrap();
    let admin_url = test_database_url();
    let (db, url) = create_isolated_postgres(&admin_url, "edict_test_publication")
        .await
        .expect("create an isolated PostgreSQL database");
    let (deny_tx, mut deny_rx) = tokio::sync::mpsc::channel::<(bool, oneshot::Sender<()>)>(1);
    let case = {
        let (db, nats) = (db.clone(), nats.clone());
        tokio::spawn(async move {
            let publisher = Arc::new(KvRulesetPublisher::open(&nats).await.unwrap());
            let runner = ProjectionRunner::new(db.clone(), Arc::new(TeamSets), Some(publisher));
            runner.ensure().await.unwrap();
            // A gateway's rule set cache, following the bucket.
            let rulesets = Rulesets::new();
            let (_stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn({
                let (rulesets, feed) = (rulesets.clone(), Arc::new(NatsFeed(nats.clone())));
                async move { rulesets.follow(feed, stopped).await }
            });
            let gateway_has = |revision: u64| {
                let rulesets = rulesets.clone();
                async move {
                    rulesets
                        .cached("team-a")
                        .filter(|payload| payload.revision >= revision)
                        .map(drop)
                }
            };

            bump(&db, "team-a").await;
            catch_up(&runner, 1).await;
            assert_eq!(held(&nats, "team-a").await, Some(ruleset("team-a", 1)));
            assert!(
                eventually(Duration::from_secs(10), || gateway_has(1))
                    .await
                    .is_some()
            );

            // The bucket refuses the put while revision 2 is projected.
            let (done, denied) = oneshot::channel();
            deny_tx.send((true, done)).await.unwrap();
            denied.await.unwrap();
            bump(&db, "team-a").await;
            // Returns once the commit is done and its publish has failed (the put times out).
            catch_up(&runner, 2).await;
            assert_eq!(projected(&db, "team-a").await, Some(2));
            assert_eq!(held(&nats, "team-a").await, Some(ruleset("team-a", 1)));

            // Allowed again; nothing restarted, nothing else appended.
            let (done, allowed) = oneshot::channel();
            deny_tx.send((false, done)).await.unwrap();
            allowed.await.unwrap();
            let started = std::time::Instant::now();
            let in_kv = eventually(Duration::from_secs(10), || async {
                (held(&nats, "team-a").await == Some(ruleset("team-a", 2))).then_some(())
            })
            .await;
            assert!(
                in_kv.is_some(),
                "revision 2 reached the bucket within 10 s of the publish being allowed again \
                 (the bucket holds {:?})",
                held(&nats, "team-a").await
            );
            assert!(
                eventually(Duration::from_secs(10), || gateway_has(2))
                    .await
                    .is_some(),
                "the gateway's cache got revision 2"
            );
            eprintln!(
                "revision 2 in the bucket {:?} after the publish was allowed",
                started.elapsed()
            );
        })
    };
    let guard = async {
        while let Some((deny, done)) = deny_rx.recv().await {
            server.deny(deny).await;
            let _ = done.send(());
        }
    };
    let (outcome, ()) = tokio::join!(case, guard);
    db.close().await;
    let _ = drop_isolated_postgres(&admin_url, &url).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

// ---------------------------------------------------------------------------------------------------
// A gateway whose feed lagged reconciles its cache.

/// One thread: the burst below is published without the gateway's follower running in between, so
/// its receiver lags for real.
#[tokio::test(flavor = "current_thread")]
async fn a_gateway_whose_feed_lagged_gets_the_revision_it_missed() {
    let watch = WatchPublisher::new();
    let rulesets = Rulesets::new();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let (rulesets, feed) = (rulesets.clone(), Arc::new(WatchFeed(watch.clone())));
        async move { rulesets.follow(feed, stopped).await }
    });
    let has = |team: &'static str, revision: u64| {
        let rulesets = rulesets.clone();
        async move {
            rulesets
                .cached(team)
                .filter(|payload| payload.revision >= revision)
                .map(drop)
        }
    };
    // The follower subscribes when it first runs: publish revision 1 (each time another copy, which
    // the watch does not take for a repeat) until it has seen one.
    let attempt = std::sync::atomic::AtomicU64::new(0);
    let followed = eventually(Duration::from_secs(10), || {
        let watch = watch.clone();
        let copy = attempt.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut first = ruleset("team-x", 1);
            first["copy"] = json!(copy);
            watch
                .publish("team-x", &first, &Origin::default())
                .await
                .unwrap();
            has("team-x", 1).await
        }
    })
    .await;
    assert!(followed.is_some(), "the gateway follows the feed");

    // Revision 2 of team-x, then more updates of other teams than the feed buffers, in one go.
    watch
        .publish("team-x", &ruleset("team-x", 2), &Origin::default())
        .await
        .unwrap();
    for i in 0..1_500 {
        let team = format!("other-{i}");
        watch
            .publish(&team, &ruleset(&team, 1), &Origin::default())
            .await
            .unwrap();
    }
    let caught_up = eventually(Duration::from_secs(10), || has("team-x", 2)).await;
    assert!(
        caught_up.is_some(),
        "the gateway got team-x's revision 2 after its feed lagged (it holds {:?})",
        rulesets.cached("team-x").map(|payload| payload.revision)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reconciles_its_cache_with_the_bucket() {
    on_shared_nats(|nats| async move {
        let publisher = KvRulesetPublisher::open(&nats).await.unwrap();
        let rulesets = Rulesets::new();
        let feed = NatsFeed(nats.clone());
        // The gateway holds revision 1 of team-1, and nothing of team-2.
        rulesets.publish(&edict_application::delivery::RulesetUpdate {
            team: "team-1".to_owned(),
            ruleset: Arc::new(ruleset("team-1", 1)),
            origin: Origin::default(),
        });
        // Its stream missed revision 2 (the gateway is not following here).
        publisher
            .publish("team-1", &ruleset("team-1", 2), &Origin::default())
            .await
            .unwrap();
        publisher
            .publish("team-2", &ruleset("team-2", 1), &Origin::default())
            .await
            .unwrap();
        assert_eq!(rulesets.reconcile(&feed).await.unwrap(), 1);
        assert_eq!(rulesets.cached("team-1").map(|p| p.revision), Some(2));
        // Only the teams it serves or caches are read.
        assert!(rulesets.cached("team-2").is_none());
        assert_eq!(rulesets.reconcile(&feed).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_after_the_bucket_was_deleted_recreates_it() {
    on_shared_nats(|nats| async move {
        let publisher = KvRulesetPublisher::open(&nats).await.unwrap();
        publisher
            .publish("team-1", &ruleset("team-1", 1), &Origin::default())
            .await
            .unwrap();
        nats.jetstream()
            .delete_stream(format!("KV_{}", nats.prefix().rulesets_bucket()))
            .await
            .unwrap();
        publisher
            .publish("team-1", &ruleset("team-1", 2), &Origin::default())
            .await
            .unwrap();
        assert_eq!(held(&nats, "team-1").await, Some(ruleset("team-1", 2)));
    })
    .await;
}
