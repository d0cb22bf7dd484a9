//! Use cases of the rule library: draft, edit, submit, approve, reject, revise, set the organization
//! enforcement, archive, read.
//!
//! The library is the organization's: only org_admins write it (team admins choose which approved rules
//! their team enforces, see `teams`). Everybody signed in may read it; agents may not.

use crate::error::{AppError, DomainFailure};
use crate::principal::Principal;
use crate::service::{Edict, Outcome, RequestContext};
use edict_domain::RuleId;
use edict_domain::rule::{Rule, RuleCommand, RuleError, RuleSpec};
use edict_domain::value::{Enforcement, Reason};

impl DomainFailure for RuleError {
    fn is_not_found(&self) -> bool {
        matches!(self, RuleError::NotFound)
    }
}

impl Edict {
    /// Drafts a new rule (revision 1).
    ///
    /// # Errors
    /// 403 unless org_admin; 422 when a domain rule refuses.
    pub async fn draft_rule(
        &self,
        principal: &Principal,
        spec: RuleSpec,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        principal.require_org_admin("draft rules")?;
        let rule_id = RuleId::new();
        let command = RuleCommand::DraftRule {
            rule_id,
            spec,
            by: principal.user(),
            at: self.clock.now(),
        };
        self.run_as(
            principal,
            &request.unversioned(),
            self.rules.as_ref(),
            rule_id,
            command,
        )
        .await
    }

    /// Runs one rule command built from the caller and the time.
    async fn rule_command(
        &self,
        principal: &Principal,
        id: RuleId,
        action: &str,
        request: &RequestContext,
        build: impl FnOnce(edict_domain::UserId, chrono::DateTime<chrono::Utc>) -> RuleCommand,
    ) -> Result<Outcome, AppError> {
        principal.require_org_admin(action)?;
        let command = build(principal.user(), self.clock.now());
        self.run_as(principal, request, self.rules.as_ref(), id, command)
            .await
    }

    /// Replaces the spec of the rule's draft or rejected revision.
    ///
    /// # Errors
    /// 403, 404, 409 (If-Match), 422 (`not_editable`, `layer_changed`, …).
    pub async fn edit_rule(
        &self,
        principal: &Principal,
        id: RuleId,
        spec: RuleSpec,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.rule_command(principal, id, "edit rules", request, |by, at| {
            RuleCommand::EditDraft { spec, by, at }
        })
        .await
    }

    /// Submits the working revision for review.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_submittable`).
    pub async fn submit_rule(
        &self,
        principal: &Principal,
        id: RuleId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.rule_command(principal, id, "submit rules", request, |by, at| {
            RuleCommand::SubmitRule { by, at }
        })
        .await
    }

    /// Records an approval; the revision comes into force when the layer's quorum is reached.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_pending`, `self_approval`, `already_approved_by`,
    /// `approver_on_probation`: an org_admin another admin created, granted the role, reactivated or
    /// gave a new password within the probation does not count, see [`crate::probation`]).
    pub async fn approve_rule(
        &self,
        principal: &Principal,
        id: RuleId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        principal.require_org_admin("approve rules")?;
        let rule = Self::existing(self.rules.as_ref(), id, "rule", Rule::exists).await?;
        let Some(layer) = rule.layer() else {
            return Err(AppError::NotFound("rule".into()));
        };
        let quorum = self.quorum.for_layer(layer);
        // An approval counts only from an org_admin in standing: a sock puppet on probation is refused
        // (docs/adr/0023-quorum-one-person-cannot-stretch.md).
        self.check_standing(principal.user()).await?;
        self.rule_command(principal, id, "approve rules", request, |approver, at| {
            RuleCommand::ApproveRule {
                approver,
                quorum,
                at,
            }
        })
        .await
    }

    /// Rejects the pending revision, with a reason.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_pending`).
    pub async fn reject_rule(
        &self,
        principal: &Principal,
        id: RuleId,
        reason: Reason,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.rule_command(principal, id, "reject rules", request, |reviewer, at| {
            RuleCommand::RejectRule {
                reviewer,
                reason,
                at,
            }
        })
        .await
    }

    /// Opens the next revision of an approved rule as a draft; the approved one stays in force.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`revision_already_open`, `layer_changed`).
    pub async fn revise_rule(
        &self,
        principal: &Principal,
        id: RuleId,
        spec: RuleSpec,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.rule_command(principal, id, "revise rules", request, |by, at| {
            RuleCommand::ReviseRule { spec, by, at }
        })
        .await
    }

    /// Sets how an organization-layer rule is enforced in every team.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_organization_layer`).
    pub async fn set_organization_enforcement(
        &self,
        principal: &Principal,
        id: RuleId,
        enforcement: Enforcement,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.rule_command(
            principal,
            id,
            "set the organization enforcement",
            request,
            |by, at| RuleCommand::SetOrganizationEnforcement {
                enforcement,
                by,
                at,
            },
        )
        .await
    }

    /// Archives a rule: it accepts no further command.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`archived`).
    pub async fn archive_rule(
        &self,
        principal: &Principal,
        id: RuleId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.rule_command(principal, id, "archive rules", request, |by, at| {
            RuleCommand::ArchiveRule { by, at }
        })
        .await
    }

    /// A rule, rebuilt from its events.
    ///
    /// # Errors
    /// 403 for agents, 404 when it does not exist.
    pub async fn rule(&self, principal: &Principal, id: RuleId) -> Result<Rule, AppError> {
        if !principal.is_user() {
            return Err(AppError::Forbidden(
                "agents cannot read the rule library".into(),
            ));
        }
        Self::existing(self.rules.as_ref(), id, "rule", Rule::exists).await
    }
}
