//! What a machine enforced at a past time: the append-only history of `applied` acknowledgements the
//! gateway records beside `agent_convergence`, on both stores (a fresh PostgreSQL database, an SQLite
//! file).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use chrono::{DateTime, Duration, Utc};
use edict_application::read_models::{ConvergenceReads, Enforcement};
use edict_infrastructure::store::ConvergenceStore;
use edict_infrastructure::store::Database;
use edict_test_kit::{create_isolated_postgres, drop_isolated_postgres, test_database_url};

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::milliseconds(seconds * 1000)
}

fn revisions(enforced: &[Enforcement]) -> Vec<(&str, u64, &str)> {
    enforced
        .iter()
        .map(|e| (e.team_id.as_str(), e.revision, e.hash.as_str()))
        .collect()
}

async fn the_past_of_an_agent_is_answered_from_its_acknowledgements(db: Database) {
    let store = ConvergenceStore::new(db);
    store
        .record("agent-1", "team-a", 1, "h1", at(10))
        .await
        .unwrap();
    // A repeated ack of the same revision is not a change.
    store
        .record("agent-1", "team-a", 1, "h1", at(15))
        .await
        .unwrap();
    store
        .record("agent-1", "team-b", 7, "b7", at(20))
        .await
        .unwrap();
    store
        .record("agent-1", "team-a", 2, "h2", at(30))
        .await
        .unwrap();
    // Another agent never shows.
    store
        .record("agent-2", "team-a", 9, "x9", at(5))
        .await
        .unwrap();

    let as_of = |t| {
        let store = store.clone();
        async move { store.by_agent_as_of("agent-1", at(t)).await.unwrap() }
    };
    assert!(as_of(9).await.is_empty(), "nothing applied yet");
    let first = as_of(10).await;
    assert_eq!(revisions(&first), [("team-a", 1, "h1")]);
    assert_eq!(first[0].applied_at, at(10), "the first ack of a revision");
    assert_eq!(
        revisions(&as_of(25).await),
        [("team-a", 1, "h1"), ("team-b", 7, "b7")]
    );
    assert_eq!(
        revisions(&as_of(30).await),
        [("team-a", 2, "h2"), ("team-b", 7, "b7")]
    );
    // The present agrees with the latest-only table.
    let now = store.by_agent("agent-1").await.unwrap();
    assert_eq!(revisions(&now), revisions(&as_of(1000).await));
    // Going back to an older revision (a rule set rolled back) is a change too.
    store
        .record("agent-1", "team-a", 1, "h1", at(40))
        .await
        .unwrap();
    assert_eq!(revisions(&as_of(35).await)[0], ("team-a", 2, "h2"));
    assert_eq!(revisions(&as_of(40).await)[0], ("team-a", 1, "h1"));
}

#[tokio::test]
async fn on_postgres() {
    let admin = test_database_url();
    let (db, url) = create_isolated_postgres(&admin, "convergence_history")
        .await
        .unwrap();
    the_past_of_an_agent_is_answered_from_its_acknowledgements(db.clone()).await;
    db.close().await;
    drop_isolated_postgres(&admin, &url).await.unwrap();
}

#[tokio::test]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("edict.db").display());
    let db = Database::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    the_past_of_an_agent_is_answered_from_its_acknowledgements(db).await;
}
