//! Bounded work on lists (issue 16): every filter of a list (status, team, owner, membership, a rule's
//! layer, tag and text) runs in the read-model query, on PostgreSQL and SQLite alike, and pages by
//! sort key; a list filtered to a few documents among many comes back promptly.
//!
//! Each test makes its own database and writes the documents with SQL, as a projection would have.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use edict_application::read_models::{DocFilter, ReadModels};
use edict_infrastructure::projection::SqlReadModels;
use edict_infrastructure::store::Database;
use edict_test_kit::{create_isolated_postgres, drop_isolated_postgres, test_database_url};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Agents of other users.
const BULK: i64 = 20_000;

async fn exec(db: &Database, sql: &str) {
    match db {
        Database::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        Database::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
    }
    .unwrap();
}

async fn put(db: &Database, projection: &str, kind: &str, key: &str, status: &str, doc: Value) {
    let sql =
        "INSERT INTO read_docs (projection, generation, kind, key, team, status, sort_key, doc)
               VALUES ($1, 1, $2, $3, $4, $5, $3, $6)";
    let team = doc["team"].as_str().map(str::to_owned);
    let doc = doc.to_string();
    match db {
        Database::Postgres(pool) => sqlx::query(sql)
            .bind(projection)
            .bind(kind)
            .bind(key)
            .bind(team)
            .bind(status)
            .bind(doc)
            .execute(pool)
            .await
            .map(drop),
        Database::Sqlite(pool) => sqlx::query(sql)
            .bind(projection)
            .bind(kind)
            .bind(key)
            .bind(team)
            .bind(status)
            .bind(doc)
            .execute(pool)
            .await
            .map(drop),
    }
    .unwrap();
}

async fn keys(
    models: &SqlReadModels,
    projection: &str,
    kind: &str,
    filter: DocFilter,
) -> Vec<String> {
    let page = models
        .list(projection, kind, &filter, None, 50)
        .await
        .unwrap();
    page.docs.into_iter().map(|d| d.sort_key).collect()
}

async fn lists_filter_in_sql(db: Database, store: &str) {
    for name in ["agent_fleet", "directory", "rule_catalog", "change_inbox"] {
        exec(
            &db,
            &format!(
                "INSERT INTO projection_state (name, generation, transaction_id, position,
                                               events_applied, error, updated_at)
                 VALUES ('{name}', 1, 0, 0, 0, NULL, 0)"
            ),
        )
        .await;
    }
    // Agents: many of other users, three of `needle` (one revoked).
    match &db {
        Database::Postgres(_) => {
            exec(
                &db,
                &format!(
                    "INSERT INTO read_docs (projection, generation, kind, key, team, status, sort_key, doc)
                     SELECT 'agent_fleet', 1, 'agent', 'b-' || lpad(g::text, 6, '0'), NULL, 'enrolled',
                            'b-' || lpad(g::text, 6, '0'),
                            json_build_object('user', 'user-' || (g % 100))::text
                       FROM generate_series(1, {BULK}) g;
                     ANALYZE read_docs"
                ),
            )
            .await;
        }
        Database::Sqlite(_) => {
            exec(
                &db,
                &format!(
                    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {BULK})
                     INSERT INTO read_docs (projection, generation, kind, key, team, status, sort_key, doc)
                     SELECT 'agent_fleet', 1, 'agent', printf('b-%06d', n), NULL, 'enrolled',
                            printf('b-%06d', n), json_object('user', 'user-' || (n % 100))
                       FROM g;
                     ANALYZE"
                ),
            )
            .await;
        }
    }
    for (key, status) in [("a-1", "enrolled"), ("a-2", "revoked"), ("c-3", "enrolled")] {
        put(
            &db,
            "agent_fleet",
            "agent",
            key,
            status,
            json!({"user": "needle"}),
        )
        .await;
    }
    // Teams with members.
    put(
        &db,
        "directory",
        "team",
        "t-1",
        "active",
        json!({"team": "t-1", "members": {"needle": "member", "x": "team_admin"}}),
    )
    .await;
    put(
        &db,
        "directory",
        "team",
        "t-2",
        "active",
        json!({"team": "t-2", "members": {"x": "member"}}),
    )
    .await;
    put(
        &db,
        "directory",
        "team",
        "t-3",
        "archived",
        json!({"team": "t-3", "members": {"needle": "team_admin"}}),
    )
    .await;
    // Change requests of teams and users.
    put(
        &db,
        "change_inbox",
        "change_request",
        "cr-1",
        "pending",
        json!({"team": "t-1", "user": "needle"}),
    )
    .await;
    put(
        &db,
        "change_inbox",
        "change_request",
        "cr-2",
        "pending",
        json!({"team": "t-1", "user": "x"}),
    )
    .await;
    put(
        &db,
        "change_inbox",
        "change_request",
        "cr-3",
        "approved",
        json!({"team": "t-2", "user": "needle"}),
    )
    .await;
    // Rules.
    put(&db, "rule_catalog", "rule", "r-1", "approved", json!({"layer": "team", "tags": ["security"], "name": "No Secrets", "description": "", "content": "never paste keys"})).await;
    put(&db, "rule_catalog", "rule", "r-2", "draft", json!({"layer": "project", "tags": ["testing", "CI"], "name": "Run tests", "description": "before a push", "content": "- run them"})).await;
    put(&db, "rule_catalog", "rule", "r-3", "approved", json!({"layer": "organization", "tags": [], "name": "100% _literal_", "description": "", "content": ""})).await;

    let models = SqlReadModels::new(db.clone());
    let f = DocFilter::default;
    let agents = |filter| keys(&models, "agent_fleet", "agent", filter);
    assert_eq!(
        agents(DocFilter {
            owner: Some("needle".into()),
            ..f()
        })
        .await,
        ["a-1", "a-2", "c-3"],
        "{store}"
    );
    assert_eq!(
        agents(DocFilter {
            owner: Some("needle".into()),
            status: Some("enrolled".into()),
            ..f()
        })
        .await,
        ["a-1", "c-3"],
        "{store}"
    );
    // Pages by sort key, with the filter.
    let page = models
        .list(
            "agent_fleet",
            "agent",
            &DocFilter {
                owner: Some("needle".into()),
                ..f()
            },
            None,
            2,
        )
        .await
        .unwrap();
    assert_eq!(page.docs.len(), 2);
    assert_eq!(page.next.as_deref(), Some("a-2"));
    let rest = models
        .list(
            "agent_fleet",
            "agent",
            &DocFilter {
                owner: Some("needle".into()),
                ..f()
            },
            Some("a-2"),
            2,
        )
        .await
        .unwrap();
    assert_eq!((rest.docs.len(), rest.next), (1, None));

    let teams = |filter| keys(&models, "directory", "team", filter);
    assert_eq!(
        teams(DocFilter {
            member: Some("needle".into()),
            ..f()
        })
        .await,
        ["t-1", "t-3"]
    );
    assert_eq!(
        teams(DocFilter {
            member: Some("needle".into()),
            status: Some("active".into()),
            ..f()
        })
        .await,
        ["t-1"]
    );
    assert_eq!(
        teams(DocFilter {
            member: Some("nobody".into()),
            ..f()
        })
        .await,
        Vec::<String>::new()
    );

    let requests = |filter| keys(&models, "change_inbox", "change_request", filter);
    assert_eq!(
        requests(DocFilter {
            team: Some("t-1".into()),
            owner: Some("needle".into()),
            ..f()
        })
        .await,
        ["cr-1"]
    );
    assert_eq!(
        requests(DocFilter {
            owner: Some("needle".into()),
            ..f()
        })
        .await,
        ["cr-1", "cr-3"]
    );

    let rules = |filter| keys(&models, "rule_catalog", "rule", filter);
    assert_eq!(
        rules(DocFilter {
            layer: Some("team".into()),
            ..f()
        })
        .await,
        ["r-1"]
    );
    assert_eq!(
        rules(DocFilter {
            tag: Some("CI".into()),
            ..f()
        })
        .await,
        ["r-2"]
    );
    assert_eq!(
        rules(DocFilter {
            tag: Some("ci".into()),
            ..f()
        })
        .await,
        Vec::<String>::new()
    );
    // Text: name, description, content or a tag, ignoring case; `%` and `_` are plain characters.
    assert_eq!(
        rules(DocFilter {
            text: Some("SECRETS".into()),
            ..f()
        })
        .await,
        ["r-1"]
    );
    assert_eq!(
        rules(DocFilter {
            text: Some("Push".into()),
            ..f()
        })
        .await,
        ["r-2"]
    );
    assert_eq!(
        rules(DocFilter {
            text: Some("ci".into()),
            ..f()
        })
        .await,
        ["r-2"]
    );
    assert_eq!(
        rules(DocFilter {
            text: Some("paste".into()),
            ..f()
        })
        .await,
        ["r-1"]
    );
    assert_eq!(
        rules(DocFilter {
            text: Some("0% _l".into()),
            ..f()
        })
        .await,
        ["r-3"]
    );
    assert_eq!(
        rules(DocFilter {
            text: Some("%".into()),
            status: Some("draft".into()),
            ..f()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        rules(DocFilter {
            text: Some("t".into()),
            layer: Some("project".into()),
            status: Some("draft".into()),
            ..f()
        })
        .await,
        ["r-2"]
    );

    // A user's few agents among 20,000: one query, promptly (the median of five).
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let found = agents(DocFilter {
            owner: Some("needle".into()),
            status: Some("enrolled".into()),
            ..f()
        })
        .await;
        times.push(started.elapsed());
        assert_eq!(found.len(), 2);
    }
    times.sort();
    eprintln!("{store}: a user's agents among {BULK}: {:?}", times[2]);
    assert!(
        times[2] < Duration::from_millis(60),
        "{store}: {:?}",
        times[2]
    );
}

#[tokio::test]
async fn postgres_lists_filter_in_sql() {
    let admin = test_database_url();
    let (db, url) = create_isolated_postgres(&admin, "edict_test_bounds_lists")
        .await
        .expect("an isolated PostgreSQL database");
    let outcome = tokio::spawn(lists_filter_in_sql(db.clone(), "postgres")).await;
    db.close().await;
    let _ = drop_isolated_postgres(&admin, &url).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[tokio::test]
async fn sqlite_lists_filter_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("edict.db").display());
    let db = Database::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    lists_filter_in_sql(db, "sqlite").await;
}
