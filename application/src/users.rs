//! Use cases of users: created by an org_admin (there is no self-registration), roles granted and
//! revoked, deactivated (which closes their sessions at once), passwords changed. A deactivation and a
//! password change also revoke every agent token of the user (ADR 0025).

use crate::error::AppError;
use crate::principal::Principal;
use crate::service::{Edict, Outcome, RequestContext};
use crate::sessions::check_password_policy;
use chrono::{DateTime, Utc};
use edict_domain::UserId;
use edict_domain::user::{Email, GlobalRole, PersonName, User, UserCommand};
use std::collections::BTreeSet;

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Their email (unique).
    pub email: Email,
    /// Their name.
    pub name: PersonName,
    /// Their first password.
    pub password: String,
    /// Their global roles.
    pub roles: BTreeSet<GlobalRole>,
}

impl Edict {
    /// Creates a user with credentials.
    ///
    /// # Errors
    /// 403 unless org_admin; 422 (`email_taken`, a password outside the policy).
    pub async fn create_user(
        &self,
        principal: &Principal,
        new: NewUser,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        principal.require_org_admin("create users")?;
        check_password_policy(&new.password)?;
        let user = UserId::new();
        self.auth
            .register(user, new.email.as_str(), &new.password)
            .await?;
        let command = UserCommand::CreateUser {
            user_id: user,
            email: new.email,
            name: new.name,
            roles: new.roles,
            by: Some(principal.user()),
            at: self.clock.now(),
        };
        let result = self
            .run_as(
                principal,
                &request.unversioned(),
                self.users.as_ref(),
                user,
                command,
            )
            .await;
        if result.is_err() {
            // Nothing was recorded: free the email again.
            self.forget_registration(user).await;
        }
        result
    }

    async fn user_command(
        &self,
        principal: &Principal,
        id: UserId,
        request: &RequestContext,
        build: impl FnOnce(UserId, DateTime<Utc>) -> UserCommand,
    ) -> Result<Outcome, AppError> {
        let command = build(principal.user(), self.clock.now());
        self.run_as(principal, request, self.users.as_ref(), id, command)
            .await
    }

    /// Grants a global role.
    ///
    /// # Errors
    /// 403 unless org_admin; 404; 409; 422 (`role_already_granted`).
    pub async fn grant_role(
        &self,
        principal: &Principal,
        id: UserId,
        role: GlobalRole,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        principal.require_org_admin("grant roles")?;
        self.user_command(principal, id, request, |by, at| UserCommand::GrantRole {
            role,
            by,
            at,
        })
        .await
    }

    /// Revokes a global role. An org_admin cannot revoke their own org_admin role (so the organization
    /// is never left without one by accident).
    ///
    /// # Errors
    /// 403; 404; 409; 422 (`role_not_granted`, `cannot_demote_self`).
    pub async fn revoke_role(
        &self,
        principal: &Principal,
        id: UserId,
        role: GlobalRole,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        principal.require_org_admin("revoke roles")?;
        if id == principal.user() && role == GlobalRole::OrgAdmin {
            return Err(AppError::Rule {
                rule: "cannot_demote_self".into(),
                message: "an org_admin cannot revoke their own org_admin role".into(),
            });
        }
        self.user_command(principal, id, request, |by, at| UserCommand::RevokeRole {
            role,
            by,
            at,
        })
        .await
    }

    /// Deactivates a user: their sessions close at once, they cannot sign in, and their agents'
    /// tokens are revoked.
    ///
    /// # Errors
    /// 403; 404; 409; 422 (`deactivated`, `cannot_deactivate_self`).
    pub async fn deactivate_user(
        &self,
        principal: &Principal,
        id: UserId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        principal.require_org_admin("deactivate users")?;
        if id == principal.user() {
            return Err(AppError::Rule {
                rule: "cannot_deactivate_self".into(),
                message: "an org_admin cannot deactivate themselves".into(),
            });
        }
        let outcome = self
            .user_command(principal, id, request, |by, at| {
                UserCommand::DeactivateUser { by, at }
            })
            .await?;
        // Their agents' tokens are revoked too (ADR 0025): a reactivation does not bring them back, the
        // machines enroll again. Until the revocation lands, the agents are refused anyway (their owner
        // is inactive); gateways close their connections on the event.
        self.auth.close_user_sessions(id, None).await?;
        self.auth.revoke_user_agent_tokens(id).await?;
        Ok(outcome)
    }

    /// Reactivates a user (they sign in again; old sessions and agent tokens stay revoked).
    ///
    /// # Errors
    /// 403; 404; 409; 422 (`not_deactivated`).
    pub async fn reactivate_user(
        &self,
        principal: &Principal,
        id: UserId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        principal.require_org_admin("reactivate users")?;
        self.user_command(principal, id, request, |by, at| {
            UserCommand::ReactivateUser { by, at }
        })
        .await
    }

    /// Changes a password: a user their own (with the current password), an org_admin anyone else's.
    /// Every agent token of the user is revoked (their machines enroll again).
    ///
    /// # Errors
    /// 403 (someone else's password, or a wrong current password); 404; 422 (policy).
    pub async fn change_password(
        &self,
        principal: &Principal,
        id: UserId,
        current: Option<&str>,
        new: &str,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        if !principal.is_user() {
            return Err(AppError::Forbidden("agents cannot change passwords".into()));
        }
        if id == principal.user() {
            let Some(current) = current else {
                return Err(AppError::Forbidden(
                    "changing your own password needs the current one".into(),
                ));
            };
            if !self.auth.check_user_password(id, current).await? {
                return Err(AppError::Forbidden("the current password is wrong".into()));
            }
        } else {
            principal.require_org_admin("reset another user's password")?;
        }
        check_password_policy(new)?;
        Self::existing(self.users.as_ref(), id, "user", User::exists).await?;
        // The hash first: the event then records a change that happened. Every other session closes (a
        // stolen one does not survive); the session that changed its own password stays open.
        self.auth.set_password(id, new).await?;
        // Every agent token of the user goes with the old password (ADR 0025), before the event: a
        // gateway that reads the event re-checks its connections' tokens and finds them revoked.
        self.auth.revoke_user_agent_tokens(id).await?;
        let outcome = self
            .user_command(principal, id, request, |by, at| {
                UserCommand::ChangePassword { by, at }
            })
            .await?;
        let keep = match principal {
            Principal::User {
                id: me, session, ..
            } if *me == id => Some(session.as_str()),
            _ => None,
        };
        self.auth.close_user_sessions(id, keep).await?;
        Ok(outcome)
    }

    /// A user, rebuilt from their events.
    ///
    /// # Errors
    /// 403 unless org_admin, auditor or the user themself; 404.
    pub async fn user(&self, principal: &Principal, id: UserId) -> Result<User, AppError> {
        if !principal.is_user() {
            return Err(AppError::Forbidden("agents cannot read users".into()));
        }
        if !(principal.can_read_all() || principal.user() == id) {
            return Err(AppError::Forbidden(
                "only org_admins, auditors and the user may read a user".into(),
            ));
        }
        Self::existing(self.users.as_ref(), id, "user", User::exists).await
    }
}
