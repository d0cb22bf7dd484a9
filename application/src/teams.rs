//! Use cases of teams: create and archive (org_admin); rename, members and attached rules (org_admin or
//! a team_admin of that team); read (org_admin, auditor, the team's members).
//!
//! Authority is not stretched through teams: only an org_admin appoints a team_admin, and a team_admin
//! neither demotes nor removes another team_admin (they were appointed by an org_admin; a team_admin
//! may step down themself). Auditors change nothing: one is never appointed team_admin, and one who
//! holds a team role acts as nothing through it.

use crate::error::{AppError, DomainFailure};
use crate::principal::Principal;
use crate::service::{Edict, Outcome, RequestContext};
use chrono::{DateTime, Utc};
use edict_domain::rule::Rule;
use edict_domain::team::{Team, TeamCommand, TeamError, TeamName, TeamRole};
use edict_domain::user::GlobalRole;
use edict_domain::value::Enforcement;
use edict_domain::{RuleId, TeamId, UserId};

impl DomainFailure for TeamError {
    fn is_not_found(&self) -> bool {
        matches!(self, TeamError::NotFound)
    }
}

/// Who may run a team command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Only an org_admin.
    OrgAdmin,
    /// An org_admin or a team_admin of the team.
    TeamAdmin,
}

impl Edict {
    /// Creates a team.
    ///
    /// # Errors
    /// 403 unless org_admin.
    pub async fn create_team(
        &self,
        principal: &Principal,
        name: TeamName,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        if !principal.is_org_admin() {
            return Err(AppError::Forbidden(
                "only an org_admin may create teams".into(),
            ));
        }
        let team_id = TeamId::new();
        let command = TeamCommand::CreateTeam {
            team_id,
            name,
            by: principal.user(),
            at: self.clock.now(),
        };
        self.run_as(
            principal,
            &request.unversioned(),
            self.teams.as_ref(),
            team_id,
            command,
        )
        .await
    }

    /// Checks `gate` for `principal` on team `id` (loading the team for team-admin checks).
    async fn authorize_team(
        &self,
        principal: &Principal,
        id: TeamId,
        gate: Gate,
        action: &str,
    ) -> Result<Option<u64>, AppError> {
        if principal.is_org_admin() {
            return Ok(None);
        }
        if principal.has_role(GlobalRole::Auditor) {
            return Err(AppError::Forbidden(format!(
                "auditors change nothing: an auditor may not {action}"
            )));
        }
        if gate == Gate::TeamAdmin && principal.is_user() {
            let team = Self::existing(self.teams.as_ref(), id, "team", Team::exists).await?;
            if team.is_team_admin(principal.user()) {
                // The command must be decided on the state that granted it: if the team changes in
                // between (the caller demoted, say), the command is a 409, not a success.
                return Ok(Some(edict_domain::Versioned::version(&team)));
            }
        }
        let who = match gate {
            Gate::OrgAdmin => "an org_admin",
            Gate::TeamAdmin => "an org_admin or a team_admin of this team",
        };
        Err(AppError::Forbidden(format!("only {who} may {action}")))
    }

    async fn team_command(
        &self,
        principal: &Principal,
        id: TeamId,
        gate: Gate,
        action: &str,
        request: &RequestContext,
        build: impl FnOnce(UserId, DateTime<Utc>) -> TeamCommand,
    ) -> Result<Outcome, AppError> {
        let granted = self.authorize_team(principal, id, gate, action).await?;
        self.decide_team(principal, id, granted, request, build)
            .await
    }

    /// Runs a team command already authorized against version `granted` (for team admins).
    async fn decide_team(
        &self,
        principal: &Principal,
        id: TeamId,
        granted: Option<u64>,
        request: &RequestContext,
        build: impl FnOnce(UserId, DateTime<Utc>) -> TeamCommand,
    ) -> Result<Outcome, AppError> {
        let command = build(principal.user(), self.clock.now());
        let metadata = Self::metadata(principal, request);
        let expected = request.expected_version.or(granted);
        self.run(
            self.teams.as_ref(),
            id.to_string(),
            command,
            expected,
            &metadata,
        )
        .await
    }

    /// Renames a team.
    ///
    /// # Errors
    /// 403, 404, 409, 422.
    pub async fn rename_team(
        &self,
        principal: &Principal,
        id: TeamId,
        name: TeamName,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.team_command(
            principal,
            id,
            Gate::TeamAdmin,
            "rename the team",
            request,
            |by, at| TeamCommand::RenameTeam { name, by, at },
        )
        .await
    }

    /// Archives a team.
    ///
    /// # Errors
    /// 403, 404, 409, 422.
    pub async fn archive_team(
        &self,
        principal: &Principal,
        id: TeamId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.team_command(
            principal,
            id,
            Gate::OrgAdmin,
            "archive teams",
            request,
            |by, at| TeamCommand::ArchiveTeam { by, at },
        )
        .await
    }

    /// Adds a member with a role.
    ///
    /// # Errors
    /// 403, 404 (team or user), 409, 422 (`already_member`).
    pub async fn add_member(
        &self,
        principal: &Principal,
        id: TeamId,
        user: UserId,
        role: TeamRole,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        let granted = self
            .authorize_team(principal, id, Gate::TeamAdmin, "add members")
            .await?;
        if role == TeamRole::TeamAdmin {
            Self::require_appointer(principal)?;
        }
        let target = self.users.load(&user.to_string()).await?;
        if !target.exists() {
            return Err(AppError::NotFound("user".into()));
        }
        if !target.active() {
            return Err(AppError::Rule {
                rule: "user_deactivated".into(),
                message: "a deactivated user cannot join a team".into(),
            });
        }
        if role == TeamRole::TeamAdmin {
            Self::refuse_auditor_appointment(&target)?;
        }
        self.decide_team(principal, id, granted, request, |by, at| {
            TeamCommand::AddMember { user, role, by, at }
        })
        .await
    }

    /// Changes a member's role.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_a_member`).
    pub async fn change_member_role(
        &self,
        principal: &Principal,
        id: TeamId,
        user: UserId,
        role: TeamRole,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        let granted = self
            .authorize_team(principal, id, Gate::TeamAdmin, "change member roles")
            .await?;
        if role == TeamRole::TeamAdmin {
            Self::require_appointer(principal)?;
            let target = self.users.load(&user.to_string()).await?;
            Self::refuse_auditor_appointment(&target)?;
        }
        self.refuse_demoting_a_team_admin(principal, id, user, "change the role of")
            .await?;
        self.decide_team(principal, id, granted, request, |by, at| {
            TeamCommand::ChangeMemberRole { user, role, by, at }
        })
        .await
    }

    /// Removes a member.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_a_member`).
    pub async fn remove_member(
        &self,
        principal: &Principal,
        id: TeamId,
        user: UserId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        let granted = self
            .authorize_team(principal, id, Gate::TeamAdmin, "remove members")
            .await?;
        self.refuse_demoting_a_team_admin(principal, id, user, "remove")
            .await?;
        self.decide_team(principal, id, granted, request, |by, at| {
            TeamCommand::RemoveMember { user, by, at }
        })
        .await
    }

    /// Only an org_admin appoints a team_admin.
    fn require_appointer(principal: &Principal) -> Result<(), AppError> {
        if principal.is_org_admin() {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "only an org_admin may appoint a team_admin".into(),
            ))
        }
    }

    /// An auditor is never appointed team_admin (auditors change nothing).
    fn refuse_auditor_appointment(target: &edict_domain::user::User) -> Result<(), AppError> {
        if target.has_role(GlobalRole::Auditor) && !target.has_role(GlobalRole::OrgAdmin) {
            return Err(AppError::Rule {
                rule: "auditors_change_nothing".into(),
                message: "an auditor cannot be a team_admin".into(),
            });
        }
        Ok(())
    }

    /// A team_admin (not an org_admin) may not demote or remove another team_admin: team_admins are
    /// appointed by org_admins, and only they undo it. Stepping down oneself is allowed.
    async fn refuse_demoting_a_team_admin(
        &self,
        principal: &Principal,
        id: TeamId,
        user: UserId,
        action: &str,
    ) -> Result<(), AppError> {
        if principal.is_org_admin() || user == principal.user() {
            return Ok(());
        }
        let team = self.teams.load(&id.to_string()).await?;
        if team.is_team_admin(user) {
            return Err(AppError::Forbidden(format!(
                "only an org_admin may {action} a team_admin"
            )));
        }
        Ok(())
    }

    /// Attaches an approved rule with an enforcement.
    ///
    /// # Errors
    /// 403, 404 (team or rule), 409, 422 (`rule_not_approved`, `rule_archived`,
    /// `organization_rules_apply_to_all_teams`, `already_attached`).
    pub async fn attach_rule(
        &self,
        principal: &Principal,
        id: TeamId,
        rule_id: RuleId,
        enforcement: Enforcement,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        let granted = self
            .authorize_team(principal, id, Gate::TeamAdmin, "attach rules")
            .await?;
        let rule = Self::existing(self.rules.as_ref(), rule_id, "rule", Rule::exists).await?;
        if rule.archived() {
            return Err(AppError::Rule {
                rule: "rule_archived".into(),
                message: "an archived rule cannot be attached".into(),
            });
        }
        let (Some(approved), Some(layer)) = (rule.approved(), rule.layer()) else {
            return Err(AppError::Rule {
                rule: "rule_not_approved".into(),
                message: "only a rule with an approved revision can be attached".into(),
            });
        };
        let rule_revision = approved.number();
        self.decide_team(principal, id, granted, request, |by, at| {
            TeamCommand::AttachRule {
                rule_id,
                rule_layer: layer,
                rule_revision,
                enforcement,
                by,
                at,
            }
        })
        .await
    }

    /// Changes how an attached rule is enforced.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_attached`).
    pub async fn change_enforcement(
        &self,
        principal: &Principal,
        id: TeamId,
        rule_id: RuleId,
        enforcement: Enforcement,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.team_command(
            principal,
            id,
            Gate::TeamAdmin,
            "change enforcement",
            request,
            |by, at| TeamCommand::ChangeEnforcement {
                rule_id,
                enforcement,
                by,
                at,
            },
        )
        .await
    }

    /// Detaches a rule.
    ///
    /// # Errors
    /// 403, 404, 409, 422 (`not_attached`).
    pub async fn detach_rule(
        &self,
        principal: &Principal,
        id: TeamId,
        rule_id: RuleId,
        request: &RequestContext,
    ) -> Result<Outcome, AppError> {
        self.team_command(
            principal,
            id,
            Gate::TeamAdmin,
            "detach rules",
            request,
            |by, at| TeamCommand::DetachRule { rule_id, by, at },
        )
        .await
    }

    /// A team, rebuilt from its events.
    ///
    /// # Errors
    /// 403 unless org_admin, auditor or a member of the team; 404.
    pub async fn team(&self, principal: &Principal, id: TeamId) -> Result<Team, AppError> {
        if !principal.is_user() {
            return Err(AppError::Forbidden("agents cannot read teams".into()));
        }
        let team = Self::existing(self.teams.as_ref(), id, "team", Team::exists).await?;
        if principal.can_read_all() || team.is_member(principal.user()) {
            Ok(team)
        } else {
            Err(AppError::Forbidden(
                "only the team's members, auditors and org_admins may read it".into(),
            ))
        }
    }
}
