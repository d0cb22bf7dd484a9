//! The ed25519 key that signs checkpoints.
//!
//! `EDICT_AUDIT_SIGNING_KEY` holds its 32-byte seed, in hex (64 characters) or base64 (standard or
//! URL-safe alphabet, padded or not). Without it a seed is generated on first use and kept in the
//! `settings` table (`audit_signing_key`), like the JWT secret, so every process of a deployment signs
//! with the same key. That is a convenience, not a protection: whoever can write the database can read
//! that key and re-sign a forged history. Production keeps the seed outside the database and verifiers
//! pin its public key (`edict audit verify --public-key`).

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use edict_application::audit::AuditError;
use rand::RngCore;

use crate::settings::Secret;
use crate::store::Database;

/// Where the signing key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `EDICT_AUDIT_SIGNING_KEY`.
    Configured,
    /// The store's settings table (generated on first use).
    Stored,
}

/// Why a configured seed is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EDICT_AUDIT_SIGNING_KEY must be a 32-byte ed25519 seed in hex (64 characters) or base64")]
pub struct BadSeed;

/// Parses a 32-byte seed written in hex or base64.
///
/// # Errors
/// [`BadSeed`] when the text is neither, or not 32 bytes.
pub fn parse_seed(text: &str) -> Result<[u8; 32], BadSeed> {
    let text = text.trim();
    let mut seed = [0_u8; 32];
    if text.len() == 64 && hex::decode_to_slice(text, &mut seed).is_ok() {
        return Ok(seed);
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for engine in engines {
        if let Ok(bytes) = engine.decode(text)
            && let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            return Ok(bytes);
        }
    }
    Err(BadSeed)
}

/// The signing key: the configured seed, else the one kept in `db`'s settings table (generated and
/// stored on first use).
///
/// # Errors
/// [`AuditError::Corrupt`] for a configured or stored seed that does not parse,
/// [`AuditError::Unavailable`] when the settings table cannot be read or written.
pub async fn signing_key(
    db: &Database,
    configured: Option<&Secret<String>>,
) -> Result<(SigningKey, KeyOrigin), AuditError> {
    if let Some(configured) = configured {
        let seed =
            parse_seed(configured.expose()).map_err(|e| AuditError::Corrupt(e.to_string()))?;
        return Ok((SigningKey::from_bytes(&seed), KeyOrigin::Configured));
    }
    let seed = stored_seed(db, true).await?.ok_or_else(|| {
        AuditError::Unavailable("the stored audit signing key vanished".to_owned())
    })?;
    Ok((SigningKey::from_bytes(&seed), KeyOrigin::Stored))
}

/// The seed kept in `db`'s settings table; with `create`, one is generated and stored when there is
/// none.
///
/// # Errors
/// As [`signing_key`].
pub async fn stored_seed(db: &Database, create: bool) -> Result<Option<[u8; 32]>, AuditError> {
    stored_setting(db, "audit_signing_key", create)
        .await?
        .map(|text| {
            parse_seed(&text).map_err(|_| {
                AuditError::Corrupt("the stored audit signing key is not a seed".to_owned())
            })
        })
        .transpose()
}

/// The seed kept in `db`'s settings table under `key`; when `create`, a fresh one is stored first unless
/// one is there.
async fn stored_setting(
    db: &Database,
    key: &str,
    create: bool,
) -> Result<Option<String>, AuditError> {
    let unavailable = |error: sqlx::Error| AuditError::Unavailable(error.to_string());
    if create {
        let mut fresh = [0_u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        let fresh = hex::encode(fresh);
        on_pool!(db, |pool| sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
        )
        .bind(key)
        .bind(&fresh)
        .execute(pool)
        .await
        .map(drop))
        .map_err(unavailable)?;
    }
    on_pool!(db, |pool| sqlx::query_scalar(
        "SELECT value FROM settings WHERE key = $1"
    )
    .bind(key)
    .fetch_optional(pool)
    .await)
    .map_err(unavailable)
}

/// The key that signs rule sets (ADR 0018): `EDICT_RULESET_SIGNING_KEY`'s seed (the value, or the path
/// of a file holding it), else the one kept in `db`'s settings table (`ruleset_signing_key`, generated
/// and stored on first use; the caller warns).
///
/// # Errors
/// [`AuditError::Corrupt`] for a configured or stored seed that does not parse (or a file that cannot be
/// read), [`AuditError::Unavailable`] when the settings table cannot be read or written.
pub async fn ruleset_signing_key(
    db: &Database,
    configured: Option<&Secret<String>>,
) -> Result<(SigningKey, KeyOrigin), AuditError> {
    if let Some(configured) = configured {
        let seed = ruleset_seed(configured.expose())?;
        return Ok((SigningKey::from_bytes(&seed), KeyOrigin::Configured));
    }
    let stored = stored_setting(db, "ruleset_signing_key", true).await?;
    let stored = stored.ok_or_else(|| {
        AuditError::Unavailable("the stored rule set signing key vanished".to_owned())
    })?;
    let seed = parse_seed(&stored).map_err(|_| {
        AuditError::Corrupt("the stored rule set signing key is not a seed".to_owned())
    })?;
    Ok((SigningKey::from_bytes(&seed), KeyOrigin::Stored))
}

/// `EDICT_RULESET_SIGNING_KEY`'s seed: the value itself when it parses, else the contents of the file it
/// names.
///
/// # Errors
/// [`AuditError::Corrupt`] when neither gives a 32-byte seed.
pub fn ruleset_seed(configured: &str) -> Result<[u8; 32], AuditError> {
    if let Ok(seed) = parse_seed(configured) {
        return Ok(seed);
    }
    let bad = || {
        AuditError::Corrupt(
            "EDICT_RULESET_SIGNING_KEY must be a 32-byte ed25519 seed in hex or base64, or the path \
             of a file holding one"
                .to_owned(),
        )
    };
    let text = std::fs::read_to_string(configured.trim()).map_err(|_| bad())?;
    parse_seed(&text).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_from_hex_and_base64() {
        let seed = [7_u8; 32];
        let hex = hex::encode(seed);
        assert_eq!(parse_seed(&hex), Ok(seed));
        assert_eq!(parse_seed(&hex.to_uppercase()), Ok(seed));
        let b64 = base64::engine::general_purpose::STANDARD.encode(seed);
        assert_eq!(parse_seed(&b64), Ok(seed));
        assert_eq!(parse_seed(b64.trim_end_matches('=')), Ok(seed));
        let url = base64::engine::general_purpose::URL_SAFE.encode([0xfb_u8; 32]);
        assert_eq!(parse_seed(&url), Ok([0xfb; 32]));
    }

    #[test]
    fn other_lengths_are_refused() {
        assert_eq!(parse_seed(&hex::encode([1_u8; 31])), Err(BadSeed));
        assert_eq!(parse_seed("not a key"), Err(BadSeed));
        assert_eq!(parse_seed(""), Err(BadSeed));
    }
}
