//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes), off the async threads.
//!
//! Hashes wait in one of three lanes ([`HashPriority`]), each with its own number of hashes running
//! at once:
//!
//! - *known*: a sign-in from an address that signed in to the same account lately, with no failure
//!   since, and the hashes of callers already signed in (a user created, a password changed); as many
//!   hashes as cores. A stranger cannot put a hash in this lane, so a flood of first
//!   guesses from new addresses does not queue in front of the people who sign in every day.
//! - *normal*: anyone else with no recent failure (a new user, a new address, a first guess); one core
//!   fewer than there are (at least one), so the known lane always has a core to share.
//! - *suspect*: a client that failed lately or has several sign-ins running (a guesser, or someone who
//!   mistyped); one at a time, so guesses queue behind each other and take at most one core.
//!
//! Under a flood the three lanes run at most `cores + 1` hashes, and a known sign-in shares the CPU
//! with at most the other two lanes' few, instead of waiting behind every guess.

use argon2::Argon2;
pub use edict_application::auth::HashPriority;
use std::sync::LazyLock;
use tokio::sync::Semaphore;

/// The cores hashes may use (19 MiB and a core each for tens of milliseconds).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Hashes running at once in the known lane.
static KNOWN_HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(cores()));
/// Hashes running at once in the normal lane: a burst of first sign-ins queues here instead of
/// exhausting memory or the cores.
static HASHING: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(cores().saturating_sub(1).max(1)));
/// Hashes running at once in the suspect lane.
static SUSPECT_HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(1));

fn lane(priority: HashPriority) -> &'static Semaphore {
    match priority {
        HashPriority::Known => &KNOWN_HASHING,
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

/// Hashes `password` with a fresh salt, returning a PHC string (in the known lane: for callers already
/// signed in, never for a sign-in).
///
/// # Errors
/// [`PasswordError::Hashing`] when argon2 fails (it does not for sane inputs).
pub async fn hash_password(password: String) -> Result<String, PasswordError> {
    hash_password_in(HashPriority::Known, password).await
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

/// Whether `password` matches the PHC string `hash` (in the known lane: for callers already signed in).
///
/// # Errors
/// [`PasswordError::Malformed`] when `hash` is not a PHC string.
pub async fn verify_password(password: String, hash: String) -> Result<bool, PasswordError> {
    verify_password_in(HashPriority::Known, password, hash).await
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
    async fn a_known_client_is_hashed_while_strangers_and_suspects_fill_their_lanes() {
        let strangers = u32::try_from(HASHING.available_permits()).unwrap();
        let _strangers = HASHING.acquire_many(strangers).await.unwrap();
        let _suspect = SUSPECT_HASHING.acquire().await.unwrap();
        let stranger = tokio::spawn(hash_password_in(HashPriority::Normal, "stranger".into()));
        let known = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            hash_password_in(HashPriority::Known, "known".into()),
        )
        .await
        .expect("a known client's hash waits for no other lane")
        .unwrap();
        assert!(known.starts_with("$argon2id$"));
        assert!(!stranger.is_finished(), "the normal lane was full");
        stranger.abort();
    }

    #[tokio::test]
    async fn a_malformed_hash_is_an_error_not_a_mismatch() {
        let result = verify_password("x".into(), "not-a-hash".into()).await;
        assert!(matches!(result, Err(PasswordError::Malformed(_))));
    }
}
