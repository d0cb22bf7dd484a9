//! The `idempotency_keys` table on both stores (a real PostgreSQL database of its own, a real SQLite
//! file): expired keys are purged, live ones kept; a response that held a secret is remembered as
//! withheld, without its body.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edict_application::auth::IdempotencyClaim;
use edict_infrastructure::idempotency::{IdempotencyStore, KEY_LIFETIME_SECS};
use edict_infrastructure::store::Database;
use edict_test_kit::store::{Backend, ScratchStore};

/// Runs `case` on a fresh PostgreSQL database and on a fresh SQLite file.
async fn on_both<F, Fut>(case: F)
where
    F: Fn(Database) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let store = ScratchStore::new(backend, "idempotency").await;
        case(store.db.clone()).await;
        store.teardown().await;
    }
}

async fn rows(db: &Database) -> i64 {
    match db {
        Database::Postgres(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(pool)
            .await
            .unwrap(),
        Database::Sqlite(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(pool)
            .await
            .unwrap(),
    }
}

#[tokio::test]
async fn expired_keys_are_purged_and_live_ones_kept() {
    on_both(|db| async move {
        let store = IdempotencyStore::new(db.clone());
        let now = 1_900_000_000;
        // A day and a bit ago, an hour ago, and a claim whose request died ten minutes ago.
        let old = now - KEY_LIFETIME_SECS - 60;
        store.claim_at("user:a", "old", "h", old).await.unwrap();
        store.remember("user:a", "old", 200, "{}").await.unwrap();
        store
            .claim_at("user:a", "recent", "h", now - 3600)
            .await
            .unwrap();
        store.remember("user:a", "recent", 200, "{}").await.unwrap();
        store
            .claim_at("user:b", "died", "h", now - 600)
            .await
            .unwrap();
        assert_eq!(rows(&db).await, 3);

        assert_eq!(store.purge_expired_at(now).await.unwrap(), 2);
        assert_eq!(rows(&db).await, 1);
        let kept = store.claim_at("user:a", "recent", "h", now).await.unwrap();
        assert_eq!(
            kept,
            IdempotencyClaim::Replay {
                status: 200,
                body: "{}".into()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn a_withheld_response_is_remembered_without_its_body() {
    on_both(|db| async move {
        let store = IdempotencyStore::new(db.clone());
        let now = 1_900_000_000;
        assert_eq!(
            store.claim_at("user:a", "k", "h", now).await.unwrap(),
            IdempotencyClaim::Fresh
        );
        store.remember_withheld("user:a", "k", 200).await.unwrap();
        assert_eq!(
            store.claim_at("user:a", "k", "h", now + 1).await.unwrap(),
            IdempotencyClaim::Withheld { status: 200 }
        );
        assert_eq!(
            store
                .claim_at("user:a", "k", "other", now + 1)
                .await
                .unwrap(),
            IdempotencyClaim::Mismatch
        );
    })
    .await;
}
