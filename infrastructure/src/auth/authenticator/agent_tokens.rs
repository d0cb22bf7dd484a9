//! Agent tokens (ADR 0025): their lifetime, and issuing, checking, renewing and listing them.

#[cfg(test)]
mod tests;

use super::{LocalAuthenticator, now, parse_agent, parse_user};
use crate::auth::{
    AGENT_TOKEN_PREFIX, AgentTokenRecord, NewAgentToken, new_opaque_token, token_digest,
};
use edict_application::auth::{
    AgentTokenCheck, AgentTokenInfo, AgentTokenRenewal, AgentTokenState, AuthError,
    IssuedAgentToken,
};
use edict_domain::{AgentId, UserId};
use uuid::Uuid;

/// How long agent tokens live (ADR 0025).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTokenLifetime {
    /// The lifetime of a new token, seconds (`EDICT_AGENT_TOKEN_TTL_SECS`, default 90 days).
    pub ttl_secs: i64,
    /// How long a renewed token keeps working after its renewal, seconds
    /// (`EDICT_AGENT_TOKEN_RENEWAL_GRACE_SECS`, default 10 minutes).
    pub grace_secs: i64,
}

impl Default for AgentTokenLifetime {
    fn default() -> Self {
        Self {
            ttl_secs: 90 * 24 * 3600,
            grace_secs: 600,
        }
    }
}

impl AgentTokenLifetime {
    /// When `record` stops working: its stored expiry, or (a row written by an older server) its
    /// creation plus the lifetime.
    fn expires_at(&self, record: &AgentTokenRecord) -> i64 {
        record
            .expires_at
            .unwrap_or_else(|| record.created_at.saturating_add(self.ttl_secs))
    }

    /// Where `record` stands at `now`.
    fn state(&self, record: &AgentTokenRecord, now: i64) -> AgentTokenState {
        if record.revoked_at.is_some() {
            AgentTokenState::Revoked
        } else if self.expires_at(record) <= now {
            AgentTokenState::Expired
        } else if record.replaced_at.is_some() {
            AgentTokenState::Renewed
        } else {
            AgentTokenState::Active
        }
    }
}

impl LocalAuthenticator {
    /// A new agent token row's secret and lifetime.
    fn new_agent_token(&self) -> (IssuedAgentToken, String) {
        let token = new_opaque_token(AGENT_TOKEN_PREFIX);
        let issued_at = now();
        let issued = IssuedAgentToken {
            token,
            issued_at,
            expires_at: issued_at.saturating_add(self.agent_tokens.ttl_secs.max(1)),
        };
        (issued, Uuid::now_v7().to_string())
    }

    /// A new agent token for `agent` of `user`, stored as its digest.
    pub(super) async fn store_new_agent_token(
        &self,
        agent: AgentId,
        user: UserId,
    ) -> Result<IssuedAgentToken, AuthError> {
        let (issued, id) = self.new_agent_token();
        self.store
            .put_agent_token(NewAgentToken {
                id: &id,
                digest: &token_digest(&issued.token),
                agent_id: &agent.to_string(),
                user_id: &user.to_string(),
                now: issued.issued_at,
                expires_at: issued.expires_at,
            })
            .await?;
        Ok(issued)
    }

    /// Whether `token` is a working agent token, and whose.
    pub(super) async fn check_agent_token(
        &self,
        token: &str,
    ) -> Result<AgentTokenCheck, AuthError> {
        let Some(record) = self.store.agent_token(&token_digest(token)).await? else {
            return Ok(AgentTokenCheck::Refused);
        };
        match self.agent_tokens.state(&record, now()) {
            AgentTokenState::Revoked => return Ok(AgentTokenCheck::Refused),
            AgentTokenState::Expired => return Ok(AgentTokenCheck::Expired),
            AgentTokenState::Active | AgentTokenState::Renewed => {}
        }
        Ok(AgentTokenCheck::Valid {
            agent: parse_agent(&record.agent_id)?,
            user: parse_user(&record.user_id)?,
            expires_at: self.agent_tokens.expires_at(&record),
        })
    }

    /// A new token in place of `token`, which keeps working for the renewal grace.
    pub(super) async fn replace_agent_token(
        &self,
        token: &str,
    ) -> Result<Option<AgentTokenRenewal>, AuthError> {
        let digest = token_digest(token);
        let Some(record) = self.store.agent_token(&digest).await? else {
            return Ok(None);
        };
        if !matches!(
            self.agent_tokens.state(&record, now()),
            AgentTokenState::Active | AgentTokenState::Renewed
        ) {
            return Ok(None);
        }
        let (issued, id) = self.new_agent_token();
        let grace_until = issued
            .issued_at
            .saturating_add(self.agent_tokens.grace_secs.max(0));
        self.store
            .renew_agent_token(
                &digest,
                NewAgentToken {
                    id: &id,
                    digest: &token_digest(&issued.token),
                    agent_id: &record.agent_id,
                    user_id: &record.user_id,
                    now: issued.issued_at,
                    expires_at: issued.expires_at,
                },
                grace_until,
            )
            .await?;
        Ok(Some(AgentTokenRenewal {
            previous_expires_at: self.agent_tokens.expires_at(&record).min(grace_until),
            issued,
        }))
    }

    /// The latest `limit` agent tokens of `user`'s agents, with where each stands now.
    pub(super) async fn list_agent_tokens(
        &self,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<AgentTokenInfo>, AuthError> {
        let now = now();
        self.store
            .agent_tokens_of(&user.to_string(), i64::from(limit))
            .await?
            .into_iter()
            .map(|record| {
                Ok(AgentTokenInfo {
                    state: self.agent_tokens.state(&record, now),
                    expires_at: self.agent_tokens.expires_at(&record),
                    id: record.id.unwrap_or_default(),
                    agent: parse_agent(&record.agent_id)?,
                    user: parse_user(&record.user_id)?,
                    issued_at: record.created_at,
                    from_renewal: record.renewed_from.is_some(),
                    renewed_at: record.replaced_at,
                    revoked_at: record.revoked_at,
                })
            })
            .collect()
    }
}
