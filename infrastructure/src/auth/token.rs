//! Access tokens (HS256 JWTs naming a session) and opaque tokens (refresh and agent tokens).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The issuer written into and required from every access token.
const ISSUER: &str = "edict";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// The session id; the session must still be open for the token to be accepted.
    pub sid: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
    /// Always `edict`.
    pub iss: String,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, wrong issuer, expired or not a JWT at all.
    #[error("invalid access token: {0}")]
    Invalid(String),
    /// Signing failed.
    #[error("cannot sign access token: {0}")]
    Signing(String),
}

/// The keys that sign and check access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys from a shared secret (at least 32 bytes of entropy expected).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Signs an access token for `user` in `session`, valid for `ttl_secs` from `now`.
    ///
    /// # Errors
    /// [`TokenError::Signing`] when encoding fails.
    pub fn issue(
        &self,
        user: &str,
        session: &str,
        now: u64,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        let claims = AccessClaims {
            sub: user.to_owned(),
            sid: session.to_owned(),
            iat: now,
            exp: now + ttl_secs,
            iss: ISSUER.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Checks the signature, issuer and expiry of `token`.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] for any token that is not a valid, unexpired Edict access token.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

/// A fresh random token with a readable `prefix` (`edr_` refresh, `eda_` agent): 32 random bytes in hex.
pub fn new_opaque_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The SHA-256 digest (hex) under which an opaque token is stored; the token itself never is.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let keys = TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        let now = jsonwebtoken::get_current_timestamp();
        let token = keys.issue("user-1", "session-1", now, 60).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.sid, "session-1");
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let ours = TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        let theirs = TokenKeys::from_secret(b"fedcba9876543210fedcba9876543210");
        let now = jsonwebtoken::get_current_timestamp();
        let token = theirs.issue("user-1", "s", now, 60).unwrap();
        assert!(ours.verify(&token).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        let now = jsonwebtoken::get_current_timestamp();
        let token = keys.issue("user-1", "s", now - 3600, 60).unwrap();
        assert!(keys.verify(&token).is_err());
    }

    #[test]
    fn opaque_tokens_are_unique_and_digests_stable() {
        let a = new_opaque_token("edr_");
        let b = new_opaque_token("edr_");
        assert_ne!(a, b);
        assert!(a.starts_with("edr_") && a.len() == 4 + 64);
        assert_eq!(token_digest(&a), token_digest(&a));
        assert_ne!(token_digest(&a), token_digest(&b));
    }
}
