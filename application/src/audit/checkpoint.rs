//! Signed checkpoints: an ed25519 signature over the chain's head at one point.
//!
//! A checkpoint is numbered (1, 2, …) and names the chain index, the global position of the event there
//! and the chain hash after it. Its signature covers exactly these bytes (UTF-8, each line ending in
//! `\n`, numbers in decimal, the hash in lowercase hex, the time as in
//! [`canonical_time`](super::chain::canonical_time)):
//!
//! ```text
//! edict audit checkpoint v1
//! number=7
//! chain_index=7000
//! global_position=7012
//! hash=3f1c…(64 hex)
//! signed_at=2026-11-22T02:52:12.123456Z
//! ```
//!
//! Anyone holding the public key can check that the history up to that event is the one the signer saw;
//! changing any chained event changes every later hash, so it no longer matches the signed one.

use super::chain::{ChainHash, canonical_time};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// The first line of the signed bytes.
const DOMAIN: &str = "edict audit checkpoint v1";

/// A checkpoint and its signature, as stored and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// 1 for the first checkpoint, then 2, …
    pub number: i64,
    /// The chain index of the event it covers (1 for the first event of the log).
    pub chain_index: i64,
    /// That event's global position.
    pub global_position: i64,
    /// The chain hash after that event.
    pub hash: ChainHash,
    /// When it was signed (microseconds).
    pub signed_at: DateTime<Utc>,
    /// The ed25519 public key that verifies it.
    pub public_key: [u8; 32],
    /// The ed25519 signature over [`signed_bytes`].
    pub signature: [u8; 64],
}

/// What a checkpoint's signature covers (see the module documentation).
pub fn signed_bytes(
    number: i64,
    chain_index: i64,
    global_position: i64,
    hash: &ChainHash,
    signed_at: DateTime<Utc>,
) -> Vec<u8> {
    format!(
        "{DOMAIN}\nnumber={number}\nchain_index={chain_index}\nglobal_position={global_position}\n\
         hash={}\nsigned_at={}\n",
        hash.to_hex(),
        canonical_time(signed_at)
    )
    .into_bytes()
}

/// Why a checkpoint does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The stored public key is not a valid ed25519 point.
    #[error("its public key is not a valid ed25519 key")]
    BadPublicKey,
    /// The signature does not match the checkpoint's content and key.
    #[error("its signature does not verify")]
    BadSignature,
    /// It was signed by another key than the one trusted.
    #[error("it was signed by key {found}, not by the trusted key {trusted}")]
    UntrustedKey {
        /// The key in the checkpoint (hex).
        found: String,
        /// The key trusted (hex).
        trusted: String,
    },
}

impl SignedCheckpoint {
    /// Signs the chain head `(chain_index, global_position, hash)` as checkpoint `number`, now.
    pub fn sign(
        key: &SigningKey,
        number: i64,
        chain_index: i64,
        global_position: i64,
        hash: ChainHash,
        signed_at: DateTime<Utc>,
    ) -> SignedCheckpoint {
        // Only microseconds are signed; keep no more, so the stored time verifies.
        let signed_at = truncate_to_micros(signed_at);
        let message = signed_bytes(number, chain_index, global_position, &hash, signed_at);
        SignedCheckpoint {
            number,
            chain_index,
            global_position,
            hash,
            signed_at,
            public_key: key.verifying_key().to_bytes(),
            signature: key.sign(&message).to_bytes(),
        }
    }

    /// Checks the signature against the checkpoint's own public key, and that key against `trusted`
    /// when given.
    ///
    /// # Errors
    /// [`CheckpointError`] naming what is wrong.
    pub fn verify(&self, trusted: Option<&[u8; 32]>) -> Result<(), CheckpointError> {
        if let Some(trusted) = trusted
            && trusted != &self.public_key
        {
            return Err(CheckpointError::UntrustedKey {
                found: hex::encode(self.public_key),
                trusted: hex::encode(trusted),
            });
        }
        let key = VerifyingKey::from_bytes(&self.public_key)
            .map_err(|_| CheckpointError::BadPublicKey)?;
        let message = signed_bytes(
            self.number,
            self.chain_index,
            self.global_position,
            &self.hash,
            self.signed_at,
        );
        key.verify_strict(&message, &Signature::from_bytes(&self.signature))
            .map_err(|_| CheckpointError::BadSignature)
    }
}

/// A sentence naming checkpoint `number` and what is wrong with it.
pub fn describe_failure(number: i64, error: &CheckpointError) -> String {
    match error {
        CheckpointError::BadSignature | CheckpointError::BadPublicKey => {
            format!("checkpoint {number} has an invalid signature")
        }
        CheckpointError::UntrustedKey { found, trusted } => format!(
            "checkpoint {number} was signed by key {found}, not by the trusted key {trusted}"
        ),
    }
}

/// `time` without its sub-microsecond part.
pub fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn checkpoint() -> SignedCheckpoint {
        SignedCheckpoint::sign(&key(7), 3, 3000, 3012, ChainHash([9; 32]), Utc::now())
    }

    #[test]
    fn a_signed_checkpoint_verifies() {
        let signed = checkpoint();
        assert_eq!(signed.verify(None), Ok(()));
        assert_eq!(
            signed.verify(Some(&key(7).verifying_key().to_bytes())),
            Ok(())
        );
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let signed = checkpoint();
        let mut changed = vec![signed.clone(); 5];
        changed[0].number += 1;
        changed[1].chain_index += 1;
        changed[2].global_position += 1;
        changed[3].hash = ChainHash([8; 32]);
        changed[4].signed_at += chrono::Duration::microseconds(1);
        for c in changed {
            assert_eq!(c.verify(None), Err(CheckpointError::BadSignature), "{c:?}");
        }
    }

    #[test]
    fn another_key_is_not_trusted() {
        let signed = checkpoint();
        let other = key(8).verifying_key().to_bytes();
        assert!(matches!(
            signed.verify(Some(&other)),
            Err(CheckpointError::UntrustedKey { .. })
        ));
        let mut resigned = signed.clone();
        resigned.public_key = other;
        assert_eq!(resigned.verify(None), Err(CheckpointError::BadSignature));
    }

    #[test]
    fn the_signed_bytes_are_the_documented_text() {
        let time = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        let text = String::from_utf8(signed_bytes(1, 2, 3, &ChainHash([0xab; 32]), time));
        assert_eq!(
            text.unwrap_or_default(),
            format!(
                "edict audit checkpoint v1\nnumber=1\nchain_index=2\nglobal_position=3\nhash={}\n\
                 signed_at=2023-11-14T22:13:20.123456Z\n",
                "ab".repeat(32)
            )
        );
    }
}
