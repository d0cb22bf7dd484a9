//! Where an agent token stands at a given time: active, renewed, expired or revoked.

use super::AgentTokenLifetime;
use crate::auth::AgentTokenRecord;
use edict_application::auth::AgentTokenState;

fn record(expires_at: Option<i64>) -> AgentTokenRecord {
    AgentTokenRecord {
        id: Some("t".into()),
        agent_id: "a".into(),
        user_id: "u".into(),
        created_at: 1_000,
        expires_at,
        renewed_from: None,
        replaced_at: None,
        revoked_at: None,
    }
}

const LIFETIME: AgentTokenLifetime = AgentTokenLifetime {
    ttl_secs: 100,
    grace_secs: 10,
};

#[test]
fn a_token_works_until_its_expiry_and_not_at_it() {
    let token = record(Some(2_000));
    assert_eq!(LIFETIME.state(&token, 1_999), AgentTokenState::Active);
    assert_eq!(LIFETIME.state(&token, 2_000), AgentTokenState::Expired);
}

#[test]
fn a_row_without_expiry_lives_the_lifetime_from_its_creation() {
    let token = record(None);
    assert_eq!(LIFETIME.expires_at(&token), 1_100);
    assert_eq!(LIFETIME.state(&token, 1_099), AgentTokenState::Active);
    assert_eq!(LIFETIME.state(&token, 1_100), AgentTokenState::Expired);
}

#[test]
fn a_renewed_token_is_renewed_until_its_grace_ends_and_revocation_wins_over_all() {
    let mut token = record(Some(1_510));
    token.replaced_at = Some(1_500);
    assert_eq!(LIFETIME.state(&token, 1_505), AgentTokenState::Renewed);
    assert_eq!(LIFETIME.state(&token, 1_510), AgentTokenState::Expired);
    token.revoked_at = Some(1_501);
    assert_eq!(LIFETIME.state(&token, 1_505), AgentTokenState::Revoked);
}
