//! The audit chain on both stores: the writer chains the log in commit order, lands checkpoints on
//! multiples of N and resumes after a restart; verify proves a clean chain and names an inserted event
//! and a chain rewritten without the signing key.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use edict_application::audit::AuditTrail;
use edict_application::audit::chain::{GENESIS, chain_hash};
use edict_application::event_log::{Checkpoint, EventLog, RecordedEvent};
use edict_infrastructure::audit::verify::BreakKind;
use edict_infrastructure::audit::{
    AuditStore, ChainWriter, ChainWriterSettings, VerifyOptions, VerifyReport, verify_database,
};
use edict_infrastructure::store::Database;
use edict_test_kit::eventually;
use edict_test_kit::seed::{SeedEvent, seed_events};
use edict_test_kit::store::{Backend, ScratchStore};
use serde_json::json;

/// A fresh migrated store and how to drop it.
struct Scratch {
    db: Database,
    store: ScratchStore,
}

impl Scratch {
    async fn new(kind: &str) -> Scratch {
        let backend = if kind == "postgres" {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let store = ScratchStore::new(backend, "audit").await;
        Scratch {
            db: store.db.clone(),
            store,
        }
    }

    async fn drop(self) {
        self.store.teardown().await;
    }

    async fn execute(&self, sql: &str) {
        match &self.db {
            Database::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            Database::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
        .unwrap();
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn writer(db: &Database) -> ChainWriter {
    ChainWriter::new(
        db.clone(),
        key(),
        ChainWriterSettings {
            page_size: 300,
            checkpoint_every: 1000,
            ..ChainWriterSettings::default()
        },
    )
}

async fn seed(db: &Database, from: u64, count: u64) {
    seed_events(db, count, |i| SeedEvent {
        aggregate_type: "Team".into(),
        aggregate_id: format!("team-{}", from + i),
        event_type: "TeamCreated".into(),
        event_version: "1.0".into(),
        payload: json!({"TeamCreated": {"name": format!("Team {}", from + i)}}),
        metadata: json!({"actor": "user:1", "source": "api"}),
    })
    .await
    .unwrap();
}

/// Chains until the chain's head is at `head`: on the shared PostgreSQL server another test's open
/// transaction can hold the log's read horizon back for a moment.
async fn chain_all(db: &Database, head: i64) {
    let store = AuditStore::new(db.clone());
    let done = eventually(Duration::from_secs(30), || {
        let (writer, store) = (writer(db), store.clone());
        async move {
            writer.catch_up().await.unwrap();
            let at = store.head().await.unwrap().map_or(0, |h| h.chain_index);
            (at >= head).then_some(at)
        }
    })
    .await;
    assert_eq!(done, Some(head));
}

/// The whole log once `expected` events are readable.
async fn whole_log(db: &Database, expected: usize) -> Vec<RecordedEvent> {
    eventually(Duration::from_secs(30), || async {
        let log = db.read_all(Checkpoint::START, 100_000).await.unwrap();
        (log.len() == expected).then_some(log)
    })
    .await
    .expect("the whole log")
}

async fn verify(db: &Database) -> VerifyReport {
    verify_database(
        db,
        VerifyOptions {
            trusted_key: Some(key().verifying_key().to_bytes()),
            ..VerifyOptions::default()
        },
        Arc::new(|_| {}),
    )
    .await
    .unwrap()
}

async fn the_writer_chains_the_log_and_resumes(kind: &str) {
    let scratch = Scratch::new(kind).await;
    let db = &scratch.db;
    seed(db, 0, 2500).await;
    chain_all(db, 2500).await;
    let store = AuditStore::new(db.clone());
    let checkpoints: Vec<i64> = store
        .checkpoints(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.chain_index)
        .collect();
    // On multiples of 1000 while catching up, and over the head at the end.
    assert!(
        checkpoints.contains(&1000) && checkpoints.contains(&2000),
        "{checkpoints:?}"
    );
    assert_eq!(checkpoints.last(), Some(&2500));

    // A restarted writer picks up where the table says.
    seed(db, 2500, 10).await;
    chain_all(db, 2510).await;
    assert_eq!(writer(db).catch_up().await.unwrap(), 0);

    // The chain follows the log's order, hash after hash.
    let log = whole_log(db, 2510).await;
    let positions: Vec<i64> = log.iter().map(|e| e.global_position).collect();
    let mut links = store.links(&positions).await.unwrap();
    links.sort_by_key(|l| l.chain_index);
    let mut previous = GENESIS;
    for (n, (event, link)) in log.iter().zip(&links).enumerate() {
        assert_eq!(link.chain_index, n as i64 + 1);
        assert_eq!(link.global_position, event.global_position);
        assert_eq!(link.previous_hash, previous);
        previous = chain_hash(&previous, event);
        assert_eq!(link.hash, previous);
    }
    assert_eq!(links.len(), 2510);

    let report = verify(db).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_verified, 2510);
    assert_eq!(report.checkpoints_verified as usize, checkpoints.len() + 1);
    assert_eq!(report.unsigned_events, 0);
    scratch.drop().await;
}

async fn verify_names_an_inserted_event(kind: &str) {
    let scratch = Scratch::new(kind).await;
    seed(&scratch.db, 0, 50).await;
    chain_all(&scratch.db, 50).await;
    // An event slipped in below the chain's head, where the writer will never look again.
    scratch
        .execute(if kind == "postgres" {
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata, global_position, transaction_id) OVERRIDING SYSTEM VALUE \
             VALUES ('Team', 'forged', 1, 'TeamCreated', '1.0', '{}', '{}', 0, '3'::xid8)"
        } else {
            "INSERT INTO events (rowid, aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) \
             VALUES (0, 'Team', 'forged', 1, 'TeamCreated', '1.0', '{}', '{}')"
        })
        .await;
    let report = verify(&scratch.db).await;
    let broken = report.broken.expect("a break");
    assert_eq!(broken.kind, BreakKind::UnchainedEvent, "{broken:?}");
    assert_eq!(broken.global_position, Some(0));
    assert!(
        broken
            .message
            .starts_with("event at position 0 (Team forged/1) is not in the chain"),
        "{}",
        broken.message
    );
    scratch.drop().await;
}

async fn a_chain_rewritten_without_the_key_fails_at_its_checkpoint(kind: &str) {
    let scratch = Scratch::new(kind).await;
    seed(&scratch.db, 0, 1200).await;
    chain_all(&scratch.db, 1200).await;
    // Edit event 10 and recompute every chain row from it: consistent, but not what was signed.
    let log = whole_log(&scratch.db, 1200).await;
    let edited = &log[9];
    let payload = r#"{"TeamCreated":{"name":"Forged"}}"#;
    scratch
        .execute(&format!(
            "UPDATE events SET payload = '{payload}' WHERE {} = {}",
            if kind == "postgres" {
                "global_position"
            } else {
                "rowid"
            },
            edited.global_position
        ))
        .await;
    let mut previous = GENESIS;
    for (n, event) in log.iter().enumerate() {
        let mut event = event.clone();
        if n == 9 {
            event.payload = serde_json::from_str(payload).unwrap();
        }
        previous = chain_hash(&previous, &event);
        if n >= 9 {
            scratch
                .execute(&format!(
                    "UPDATE audit_chain SET hash = '{}' WHERE chain_index = {}",
                    previous.to_hex(),
                    n + 1
                ))
                .await;
        }
    }
    let report = verify(&scratch.db).await;
    let broken = report.broken.expect("a break");
    assert_eq!(broken.kind, BreakKind::CheckpointMismatch, "{broken:?}");
    assert_eq!(broken.checkpoint, Some(1));
    assert_eq!(broken.chain_index, Some(1000));
    assert_eq!(report.events_verified, 999);
    scratch.drop().await;
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("postgres").await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("sqlite").await;
                }
            )*
        }
    };
}

on_both_stores!(
    the_writer_chains_the_log_and_resumes,
    verify_names_an_inserted_event,
    a_chain_rewritten_without_the_key_fails_at_its_checkpoint,
);
