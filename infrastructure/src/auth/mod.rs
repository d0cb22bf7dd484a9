//! Authentication: who is calling.
//!
//! Passwords are hashed with argon2 and kept in a `credentials` table beside the event log, never in an
//! event (an event cannot be erased; a hash should be replaceable). A login opens a session: a short-lived
//! JWT access token names the session, and a refresh token (stored only as a hash) renews it. Every
//! request checks that its session is not revoked, so logout and deactivation take effect at once.
//! Agents authenticate with opaque agent tokens, also stored as hashes.

mod authenticator;
mod enrollment;
mod password;
mod sql;
mod token;

pub use authenticator::{AGENT_TOKEN_PREFIX, AgentTokenLifetime, LocalAuthenticator};
pub use enrollment::{DeviceRow, EnrollmentTokenRow};
pub use password::{
    HashPriority, PasswordError, hash_password, hash_password_in, verify_password,
    verify_password_in,
};
pub use sql::{AgentTokenRecord, AuthStore, AuthStoreError, NewAgentToken, Session};
pub use token::{AccessClaims, TokenError, TokenKeys, new_opaque_token, token_digest};
