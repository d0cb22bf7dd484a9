//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes), off the async threads.
//!
//! Hashes wait in one of two lanes ([`HashPriority`]): sign-ins from clients with no recent failure
//! take the normal lane; those from a client that failed lately (a guesser, or someone who mistyped)
//! take the suspect lane, which runs one hash at a time. A flood of bad sign-ins then queues behind
//! itself, not in front of the legitimate ones, and takes at most one core.

use argon2::Argon2;
pub use edict_application::auth::HashPriority;
use std::sync::LazyLock;
use tokio::sync::Semaphore;

/// Hashes running at once in the normal lane: each takes 19 MiB and a core for tens of milliseconds,
/// so a burst of logins queues here instead of exhausting memory.
static HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(4));
/// Hashes running at once in the suspect lane.
static SUSPECT_HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(1));

fn lane(priority: HashPriority) -> &'static Semaphore {
    match priority {
        HashPriority::Normal => &HASHING,
        HashPriority::Suspect => &SUSPECT_HASHING,
    }
}
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core,
};

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The stored hash is not a valid PHC string.
    #[error("stored password hash is malformed: {0}")]
    Malformed(String),
    /// Hashing failed or the blocking task died.
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Hashes `password` with a fresh salt, returning a PHC string.
///
/// # Errors
/// [`PasswordError::Hashing`] when argon2 fails (it does not for sane inputs).
pub async fn hash_password(password: String) -> Result<String, PasswordError> {
    hash_password_in(HashPriority::Normal, password).await
}

/// [`hash_password`] in the lane of `priority`.
///
/// # Errors
/// [`PasswordError::Hashing`].
pub async fn hash_password_in(
    priority: HashPriority,
    password: String,
) -> Result<String, PasswordError> {
    let _permit = lane(priority)
        .acquire()
        .await
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand_core::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| PasswordError::Hashing(e.to_string()))
    })
    .await
    .map_err(|e| PasswordError::Hashing(e.to_string()))?
}

/// Whether `password` matches the PHC string `hash`.
///
/// # Errors
/// [`PasswordError::Malformed`] when `hash` is not a PHC string.
pub async fn verify_password(password: String, hash: String) -> Result<bool, PasswordError> {
    verify_password_in(HashPriority::Normal, password, hash).await
}

/// [`verify_password`] in the lane of `priority`.
///
/// # Errors
/// [`PasswordError::Malformed`] when `hash` is not a PHC string.
pub async fn verify_password_in(
    priority: HashPriority,
    password: String,
    hash: String,
) -> Result<bool, PasswordError> {
    let _permit = lane(priority)
        .acquire()
        .await
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let parsed =
            PasswordHash::new(&hash).map_err(|e| PasswordError::Malformed(e.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| PasswordError::Hashing(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hashed_password_verifies_and_another_does_not() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password("correct horse".into(), hash.clone())
                .await
                .unwrap()
        );
        assert!(!verify_password("wrong horse".into(), hash).await.unwrap());
    }

    #[tokio::test]
    async fn a_malformed_hash_is_an_error_not_a_mismatch() {
        let result = verify_password("x".into(), "not-a-hash".into()).await;
        assert!(matches!(result, Err(PasswordError::Malformed(_))));
    }
}
