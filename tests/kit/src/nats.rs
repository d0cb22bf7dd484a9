//! The NATS server tests share: each test works under a prefix of its own (streams, subjects, consumers
//! and buckets all carry it) and deletes its streams at the end.

use edict_infrastructure::nats::Nats;

/// The test NATS server: `EDICT_TEST_NATS_URL` if set and not blank, else the default local server
/// ([`edict_infrastructure::nats::DEFAULT_NATS_URL`]).
pub fn test_nats_url() -> String {
    std::env::var("EDICT_TEST_NATS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| edict_infrastructure::nats::DEFAULT_NATS_URL.to_owned())
}

/// A prefix no other test uses: `t<uuid>_`.
pub fn fresh_prefix() -> String {
    format!("t{}_", uuid::Uuid::new_v4().simple())
}

/// Deletes the prefix's events stream and rule sets bucket (best effort: the test's streams go away
/// with it).
pub async fn delete_streams(nats: &Nats) {
    let js = nats.jetstream();
    let _ = js.delete_stream(nats.prefix().events_stream()).await;
    let _ = js
        .delete_stream(format!("KV_{}", nats.prefix().rulesets_bucket()))
        .await;
}
