//! The chain writer (role `audit`): tails the global log and appends one chain row per event, in commit
//! order, with a signed checkpoint every N events or T seconds.
//!
//! Each step reads a page of the log after the chain's head (`read_all` from the last row's
//! `(transaction_id, global_position)`), hashes it onto the head's hash, and inserts the rows, with the
//! checkpoint that falls on the page's last event if one does, in one transaction. The head is the only
//! state, and it is in the table: a writer killed at any point resumes from the last row committed, and
//! a page that was not committed is simply read again. Pages stop at multiples of N, so checkpoints
//! land on chain indexes N, 2N, … while the writer catches up; a quiet log still gets a checkpoint over
//! its head T seconds after the last one, when the chain has moved since.
//!
//! On shutdown the writer chains what the log holds before it stops ([`ChainWriter::run`]: the tail up to
//! the read horizon, and a checkpoint over the head, within [`ChainWriterSettings::drain_timeout`]), so a
//! clean stop leaves nothing unchained for `edict audit verify` to report; after a kill the next writer
//! resumes from the head.
//!
//! One writer per database: on PostgreSQL the leader holds a session advisory lock (the relay's
//! leadership, on a key of its own), standbys retry every second; on SQLite the single process writes.
//! Should two writers ever race, the second insert of a chain index fails on its primary key and that
//! writer reloads its head.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use ed25519_dalek::SigningKey;
use edict_application::audit::AuditError;
use edict_application::audit::chain::{ChainHasher, GENESIS};
use edict_application::audit::checkpoint::SignedCheckpoint;
use edict_application::event_log::{Checkpoint, EventLog};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{AuditStore, ChainRow};
use crate::nats::backoff;
use crate::nats::relay::leadership::Candidate;
use crate::store::Database;

/// How the chain writer paces itself.
#[derive(Debug, Clone)]
pub struct ChainWriterSettings {
    /// Events read, hashed and inserted per step (default 1000).
    pub page_size: usize,
    /// The pause after a step that found nothing new (default 200 ms).
    pub poll_interval: Duration,
    /// A checkpoint every this many events (default 1000).
    pub checkpoint_every: u64,
    /// A checkpoint at least this often while the chain moves (default 60 s).
    pub checkpoint_interval: Duration,
    /// How often a standby tries the leadership lock (default 1 s).
    pub standby_retry: Duration,
    /// How often a leader checks its lock connection (default 500 ms).
    pub lock_check_interval: Duration,
    /// The longest pause between retries after a failure (default 2 s).
    pub max_backoff: Duration,
    /// How long the writer may spend chaining the tail when asked to stop (default 5 s).
    pub drain_timeout: Duration,
}

impl Default for ChainWriterSettings {
    fn default() -> Self {
        ChainWriterSettings {
            page_size: 1000,
            poll_interval: Duration::from_millis(200),
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            standby_retry: Duration::from_secs(1),
            lock_check_interval: Duration::from_millis(500),
            max_backoff: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// The advisory lock key of the chain writer: the first 8 bytes of SHA-256 over a fixed label (one
/// chain per database).
fn lock_key() -> i64 {
    let digest = Sha256::digest(b"edict audit chain writer");
    let mut bytes = [0_u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// What the writer knows between steps (reloaded from the tables after any failure).
#[derive(Debug, Clone)]
struct State {
    head: Option<ChainRow>,
    last_checkpoint: Option<SignedCheckpoint>,
    /// When the last checkpoint was signed (the writer's start when there is none).
    last_checkpoint_at: chrono::DateTime<Utc>,
}

/// Appends the hash chain and signs checkpoints; one active per database.
#[derive(Debug)]
pub struct ChainWriter {
    db: Database,
    store: AuditStore,
    key: SigningKey,
    settings: ChainWriterSettings,
    leading: watch::Sender<bool>,
}

enum Outcome {
    Shutdown,
    LockLost(String),
}

impl ChainWriter {
    /// A writer over `db`'s log and chain tables, signing with `key`.
    pub fn new(db: Database, key: SigningKey, settings: ChainWriterSettings) -> ChainWriter {
        ChainWriter {
            store: AuditStore::new(db.clone()),
            db,
            key,
            settings,
            leading: watch::channel(false).0,
        }
    }

    /// Whether this writer leads (for tests and health).
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Runs until `shutdown` resolves: on PostgreSQL stands by until it holds the lock, then writes
    /// until it loses the lock or shuts down; on SQLite writes at once. A leader that is asked to stop
    /// chains the tail of the log (and signs a checkpoint over it) before it returns, bounded by
    /// [`ChainWriterSettings::drain_timeout`].
    #[tracing::instrument(skip_all, fields(store = self.db.kind()))]
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let pool = match &self.db {
            Database::Postgres(pool) => pool.clone(),
            Database::Sqlite(_) => {
                self.leading.send_replace(true);
                tokio::select! {
                    () = &mut shutdown => {}
                    never = self.lead() => match never {},
                }
                self.drain().await;
                self.leading.send_replace(false);
                return;
            }
        };
        let key = lock_key();
        let mut candidate = Candidate::new((*pool.connect_options()).clone(), key);
        loop {
            let mut leadership = tokio::select! {
                () = &mut shutdown => return,
                leadership = candidate.acquire(self.settings.standby_retry) => leadership,
            };
            tracing::info!(key, "audit chain lock acquired; writing the chain");
            self.leading.send_replace(true);
            let outcome = tokio::select! {
                () = &mut shutdown => Outcome::Shutdown,
                reason = leadership.lost(self.settings.lock_check_interval) => Outcome::LockLost(reason),
                never = self.lead() => match never {},
            };
            match outcome {
                Outcome::Shutdown => {
                    // Still the leader (the lock is held until released below).
                    self.drain().await;
                    self.leading.send_replace(false);
                    leadership.release().await;
                    tracing::info!("audit chain writer stopped; lock released");
                    return;
                }
                Outcome::LockLost(reason) => {
                    self.leading.send_replace(false);
                    tracing::error!(%reason, "audit chain lock lost; standing by");
                }
            }
        }
    }

    /// Chains the tail before stopping: whatever the log holds now, and a checkpoint over it. A step
    /// cut short by the shutdown committed nothing, so this resumes from the head in the table.
    async fn drain(&self) {
        match tokio::time::timeout(self.settings.drain_timeout, self.catch_up()).await {
            Ok(Ok(chained)) => {
                tracing::info!(chained, "audit chain writer: tail chained before stopping");
            }
            Ok(Err(error)) => tracing::warn!(
                %error,
                "audit chain writer: cannot chain the tail before stopping; the next writer will"
            ),
            Err(_) => tracing::warn!(
                timeout = ?self.settings.drain_timeout,
                "audit chain writer: chaining the tail took too long; the next writer resumes from the head"
            ),
        }
    }

    /// Chains page after page, forever (the caller stops it by dropping the future).
    async fn lead(&self) -> Infallible {
        let mut state = None;
        let mut failures = 0;
        loop {
            match self.step(&mut state).await {
                Ok(chained) => {
                    failures = 0;
                    if chained == 0 {
                        tokio::time::sleep(self.settings.poll_interval).await;
                    }
                }
                Err(error) => {
                    let delay = backoff::jittered(failures, self.settings.max_backoff);
                    tracing::warn!(%error, retry_in = ?delay, "audit chain step failed; reloading the head");
                    failures += 1;
                    state = None;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Chains everything the log has now, then signs a checkpoint over the head if the chain moved since
    /// the last one. Answers how many events it chained (benchmarks and tests; `run` is the live path).
    ///
    /// # Errors
    /// [`AuditError`] when the log or the tables cannot be read or written.
    pub async fn catch_up(&self) -> Result<u64, AuditError> {
        let mut state = None;
        let mut total = 0;
        loop {
            let chained = self.step(&mut state).await?;
            if chained == 0 {
                break;
            }
            total += chained as u64;
        }
        if let Some(state) = &mut state {
            self.checkpoint_head(state).await?;
        }
        Ok(total)
    }

    async fn load(&self) -> Result<State, AuditError> {
        let head = self.store.head().await?;
        let last_checkpoint = self.store.last_checkpoint().await?;
        let last_checkpoint_at = last_checkpoint
            .as_ref()
            .map_or_else(Utc::now, |c| c.signed_at);
        Ok(State {
            head,
            last_checkpoint,
            last_checkpoint_at,
        })
    }

    /// Chains one page (and signs the checkpoint due with it); answers how many events it chained.
    async fn step(&self, state: &mut Option<State>) -> Result<usize, AuditError> {
        let current = match state.take() {
            Some(current) => current,
            None => self.load().await?,
        };
        let mut current = current;
        let every = i64::try_from(self.settings.checkpoint_every.max(1)).unwrap_or(i64::MAX);
        let head_index = current.head.map_or(0, |h| h.chain_index);
        let checkpointed = current
            .last_checkpoint
            .as_ref()
            .map_or(0, |c| c.chain_index);
        let unsigned = head_index - checkpointed;
        if unsigned >= every {
            // The setting shrank, or a crash fell between two transactions: sign the head first.
            self.checkpoint_head(&mut current).await?;
            *state = Some(current);
            return Ok(0);
        }
        let room = usize::try_from(every - unsigned).unwrap_or(usize::MAX);
        let limit = self.settings.page_size.max(1).min(room);
        let after = current.head.map_or(Checkpoint::START, |h| h.checkpoint());
        let page = self.db.read_all(after, limit).await?;
        if page.is_empty() {
            let due = Utc::now() - current.last_checkpoint_at
                >= chrono::Duration::from_std(self.settings.checkpoint_interval)
                    .unwrap_or(chrono::TimeDelta::MAX);
            if unsigned > 0 && due {
                self.checkpoint_head(&mut current).await?;
            }
            *state = Some(current);
            return Ok(0);
        }
        let count = page.len();
        let mut hasher = ChainHasher::default();
        let mut previous = current.head.map_or(GENESIS, |h| h.hash);
        let mut rows = Vec::with_capacity(count);
        for (offset, event) in page.iter().enumerate() {
            let hash = hasher.next(&previous, event);
            rows.push(ChainRow {
                chain_index: head_index + 1 + offset as i64,
                global_position: event.global_position,
                transaction_id: event.transaction_id,
                hash,
            });
            previous = hash;
        }
        let new_head = rows.last().copied();
        let now = Utc::now();
        let due_by_time = now - current.last_checkpoint_at
            >= chrono::Duration::from_std(self.settings.checkpoint_interval)
                .unwrap_or(chrono::TimeDelta::MAX);
        let checkpoint = match new_head {
            Some(head) if unsigned + count as i64 >= every || due_by_time => {
                Some(SignedCheckpoint::sign(
                    &self.key,
                    current.last_checkpoint.as_ref().map_or(0, |c| c.number) + 1,
                    head.chain_index,
                    head.global_position,
                    head.hash,
                    now,
                ))
            }
            _ => None,
        };
        self.store.append(&rows, checkpoint.as_ref()).await?;
        current.head = new_head;
        if let Some(checkpoint) = checkpoint {
            tracing::debug!(
                number = checkpoint.number,
                chain_index = checkpoint.chain_index,
                "audit checkpoint signed"
            );
            current.last_checkpoint_at = checkpoint.signed_at;
            current.last_checkpoint = Some(checkpoint);
        }
        *state = Some(current);
        Ok(count)
    }

    /// Signs a checkpoint over the head when the chain moved since the last one.
    async fn checkpoint_head(&self, state: &mut State) -> Result<(), AuditError> {
        let Some(head) = state.head else {
            return Ok(());
        };
        let checkpointed = state.last_checkpoint.as_ref().map_or(0, |c| c.chain_index);
        if head.chain_index <= checkpointed {
            return Ok(());
        }
        let checkpoint = SignedCheckpoint::sign(
            &self.key,
            state.last_checkpoint.as_ref().map_or(0, |c| c.number) + 1,
            head.chain_index,
            head.global_position,
            head.hash,
            Utc::now(),
        );
        self.store.append(&[], Some(&checkpoint)).await?;
        state.last_checkpoint_at = checkpoint.signed_at;
        state.last_checkpoint = Some(checkpoint);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_key_is_not_the_relays() {
        let relay = crate::nats::relay::leadership::lock_key(&crate::nats::NatsPrefix::default());
        assert_ne!(lock_key(), relay);
        assert_eq!(lock_key(), lock_key());
    }
}
