//! The organization's key sets, passed on to agents (ADR 0021).
//!
//! A gateway holds no private key; it reads the signed key sets from the store (one read per
//! `fresh_for` for all its connections) and sends each agent those newer than the one it named in its
//! `hello`: right after `welcome`, and at each decisions poll when a new one was issued (a rotation
//! announces its next key, makes it active, retires the old one). The agent checks each against the
//! keys it already trusts, so a gateway can withhold a key set but never forge one.

use super::connection::{Flow, Session, encoded};
use crate::protocol::GatewayMessage;
use crate::ruleset::KeySet;
use edict_application::Edict;
use edict_application::error::AppError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Every key set, as last read.
type Read = (Instant, Arc<Vec<KeySet>>);

/// The key sets, read at most once per `fresh_for` for all of a gateway's connections.
#[derive(Debug)]
pub(crate) struct KeySets {
    fresh_for: Duration,
    read: Mutex<Option<Read>>,
    loading: tokio::sync::Mutex<()>,
}

impl KeySets {
    /// Reads are kept `fresh_for`.
    pub(crate) fn new(fresh_for: Duration) -> Self {
        KeySets {
            fresh_for,
            read: Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<Arc<Vec<KeySet>>> {
        let read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        read.as_ref()
            .filter(|(at, _)| at.elapsed() < self.fresh_for)
            .map(|(_, keysets)| keysets.clone())
    }

    /// Every key set issued, oldest first (read again when the last read is older than
    /// `fresh_for`). A stored key set that does not parse is left out (and logged): the agent would
    /// refuse it anyway.
    pub(crate) async fn all(&self, edict: &Edict) -> Result<Arc<Vec<KeySet>>, AppError> {
        if let Some(keysets) = self.fresh() {
            return Ok(keysets);
        }
        let _loading = self.loading.lock().await;
        if let Some(keysets) = self.fresh() {
            return Ok(keysets);
        }
        let keysets: Vec<KeySet> = edict
            .org_keysets()
            .await?
            .into_iter()
            .filter_map(|value| match serde_json::from_value(value) {
                Ok(keyset) => Some(keyset),
                Err(error) => {
                    tracing::error!(%error, "a stored key set does not parse; not sent");
                    None
                }
            })
            .collect();
        let keysets = Arc::new(keysets);
        *self.read.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), keysets.clone()));
        Ok(keysets)
    }
}

impl Session {
    /// Sends the key sets of `keysets` newer than the one the agent holds (as far as this connection
    /// knows), in one `keys` message.
    pub(super) async fn send_keys(&mut self, keysets: &[KeySet]) -> Flow {
        let newer: Vec<KeySet> = keysets
            .iter()
            .filter(|keyset| keyset.sequence > self.key_sequence)
            .cloned()
            .collect();
        let Some(latest) = newer.iter().map(|keyset| keyset.sequence).max() else {
            return Flow::Continue;
        };
        self.key_sequence = latest;
        self.reply(encoded(&GatewayMessage::Keys { keysets: newer }))
            .await
    }
}
