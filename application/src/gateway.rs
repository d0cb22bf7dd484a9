//! Use cases the agent gateway serves: recording an agent's enforcement report, and the facts a gateway
//! needs about a connected agent (its teams, its change requests).
//!
//! A report carries an id the agent generated and is recorded once per id, whatever its kind:
//! - `temporary_changed` opens a change request (its id derived from agent and report id), or amends the
//!   one the agent names;
//! - `block_reverted`, `warning_kept` and `revert_loop` become an `EnforcementReported` event of the
//!   agent, so the audit history shows them (the agent remembers the ids it recorded).
//!
//! The gateway answers `report_ack` only after the use case succeeded, so the agent keeps the report in
//! its outbox until it is recorded.

use crate::auth::AgentTokenCheck;
use crate::change_requests::ChangeReport;
use crate::error::AppError;
use crate::principal::Principal;
use crate::queries::names;
use crate::service::{Edict, Outcome, RequestContext};
use edict_domain::agent::{AgentCommand, EnforcementKind};
use edict_domain::change_request::{Diff, FilePath, ReportId};
use edict_domain::value::{Layer, Sha256Hex};
use edict_domain::{AgentId, ChangeRequestId, RuleId, TeamId};
use std::collections::BTreeSet;
use std::str::FromStr;

/// What an agent reports, as it arrives (text fields; the use case parses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// A block-mode section was edited and restored.
    BlockReverted,
    /// A temporary-mode section was edited and kept (opens or amends a change request).
    TemporaryChanged,
    /// A warning-mode section was edited and kept.
    WarningKept,
    /// The agent and an editor kept overwriting each other.
    RevertLoop,
}

/// An agent's report of an enforcement action, as the gateway received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    /// The agent's id of the report.
    pub report_id: String,
    /// What happened.
    pub kind: ReportKind,
    /// The team (a UUID).
    pub team: String,
    /// The rule (a UUID).
    pub rule: String,
    /// The file.
    pub file: String,
    /// `organization`, `team` or `project`.
    pub layer: String,
    /// SHA-256 (hex) of the section as written.
    pub original_hash: String,
    /// SHA-256 (hex) of the section as found.
    pub new_hash: String,
    /// The change, as a unified diff.
    pub diff: String,
    /// For an amendment: the change request an earlier report on the file opened.
    pub change_request: Option<String>,
}

/// What recording a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedReport {
    /// The change request the report opened or amended (temporary changes only).
    pub change_request: Option<ChangeRequestId>,
}

/// A rule set an agent refused because it could not trust it (ADR 0018), as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityReport {
    /// The team the rule set was sent as.
    pub team: String,
    /// The revision it claimed.
    pub revision: u64,
    /// A stable code (`unsigned`, `unknown_key`, `bad_signature`, …).
    pub reason: String,
    /// For a human.
    pub detail: String,
}

/// `text` cut to at most `max` characters: an agent's free text is kept bounded in the log.
fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn parse_id<T: FromStr>(field: &str, input: &str) -> Result<T, AppError> {
    input.trim().parse().map_err(|_| AppError::Invalid {
        field: field.to_owned(),
        message: format!("{field} must be a UUID"),
    })
}

impl Edict {
    /// Records that an agent refused an untrusted rule set (an `IntegrityFailureReported` event of the
    /// agent, which the fleet shows).
    ///
    /// # Errors
    /// 403 unless an agent; 404 / 409 for an unknown or revoked agent; 503 when the store fails.
    #[tracing::instrument(skip_all, fields(reason = %report.reason), err)]
    pub async fn record_integrity_failure(
        &self,
        principal: &Principal,
        report: IntegrityReport,
        request: &RequestContext,
    ) -> Result<(), AppError> {
        let Principal::Agent { id: agent, .. } = principal else {
            return Err(AppError::Forbidden("only agents report".into()));
        };
        let command = AgentCommand::RecordIntegrityFailure {
            team: clip(&report.team, 64),
            revision: report.revision,
            reason: clip(&report.reason, 40),
            detail: clip(&report.detail, 500),
            at: self.clock.now(),
        };
        self.record_for_agent(principal, request, agent, command)
            .await?;
        Ok(())
    }

    /// Runs `command` on the reporting agent, whatever its version.
    async fn record_for_agent(
        &self,
        principal: &Principal,
        request: &RequestContext,
        agent: &AgentId,
        command: AgentCommand,
    ) -> Result<Outcome, AppError> {
        let request = request.unversioned();
        self.run_as(principal, &request, self.agents.as_ref(), agent, command)
            .await
    }

    /// Records an agent's report (idempotent per report id): a temporary change opens (or, naming a
    /// change request, amends) a change request; any other kind is recorded as an event of the agent.
    ///
    /// # Errors
    /// 403 unless an agent whose user belongs to the team; 422 for a malformed field or a change the
    /// rules refuse (see [`Edict::report_change`], [`Edict::amend_change`]); 503 when the store fails.
    #[tracing::instrument(skip_all, fields(report_id = %report.report_id, kind = ?report.kind), err)]
    pub async fn record_report(
        &self,
        principal: &Principal,
        report: AgentReport,
        request: &RequestContext,
    ) -> Result<RecordedReport, AppError> {
        let Principal::Agent { id: agent, user } = principal else {
            return Err(AppError::Forbidden("only agents report".into()));
        };
        let team: TeamId = parse_id("team", &report.team)?;
        let rule: RuleId = parse_id("rule", &report.rule)?;
        let report_id = ReportId::parse(&report.report_id)?;
        let file = FilePath::parse(&report.file)?;
        let layer = Layer::parse(&report.layer)?;
        let original_hash = Sha256Hex::parse("original_hash", &report.original_hash)?;
        let new_hash = Sha256Hex::parse("new_hash", &report.new_hash)?;
        let kind = match report.kind {
            ReportKind::TemporaryChanged => {
                let diff = Diff::parse(&report.diff)?;
                let id = match &report.change_request {
                    Some(id) => {
                        let id: ChangeRequestId = parse_id("change_request", id)?;
                        self.amend_once(principal, id, new_hash, diff, report_id, request)
                            .await?;
                        id
                    }
                    None => {
                        let outcome = self
                            .report_change(
                                principal,
                                ChangeReport {
                                    team,
                                    rule,
                                    file,
                                    layer,
                                    original_hash,
                                    new_hash,
                                    diff,
                                    report_id,
                                },
                                request,
                            )
                            .await?;
                        parse_id("change_request", &outcome.id)?
                    }
                };
                return Ok(RecordedReport {
                    change_request: Some(id),
                });
            }
            ReportKind::BlockReverted => EnforcementKind::BlockReverted,
            ReportKind::WarningKept => EnforcementKind::WarningKept,
            ReportKind::RevertLoop => EnforcementKind::RevertLoop,
        };
        let member = self.teams.load(&team.to_string()).await?.is_member(*user);
        if !member {
            return Err(AppError::Forbidden(
                "the agent's user is not a member of this team".into(),
            ));
        }
        let command = AgentCommand::RecordEnforcement {
            report_id,
            kind,
            team,
            rule,
            file,
            layer,
            original_hash,
            new_hash,
            at: self.clock.now(),
        };
        self.record_for_agent(principal, request, agent, command)
            .await?;
        Ok(RecordedReport {
            change_request: None,
        })
    }

    /// Amends a change request unless it already folded this report in (a redelivered amendment).
    async fn amend_once(
        &self,
        principal: &Principal,
        id: ChangeRequestId,
        new_hash: Sha256Hex,
        diff: Diff,
        report_id: ReportId,
        request: &RequestContext,
    ) -> Result<(), AppError> {
        // The aggregate, not the read model: a redelivery may come before the projection caught up.
        let known = self
            .change_requests
            .load(&id.to_string())
            .await?
            .report_ids()
            .contains(&report_id);
        if known {
            return Ok(());
        }
        self.amend_change(principal, id, new_hash, diff, report_id, request)
            .await
            .map(drop)
    }

    /// The teams `user` belongs to, as the directory read model knows them (empty for an unknown user).
    ///
    /// # Errors
    /// 503 when the read model cannot be read.
    pub async fn teams_of(&self, user: edict_domain::UserId) -> Result<BTreeSet<TeamId>, AppError> {
        let doc = self
            .read_models
            .get(names::DIRECTORY, "user", &user.to_string())
            .await?;
        Ok(doc
            .as_ref()
            .and_then(|doc| doc["teams"].as_object())
            .map(|teams| teams.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default())
    }
}

impl Edict {
    /// The latest rule set document of `team` (kind `ruleset` of the `team_rulesets` read model), as
    /// the gateway sends it to the team's agents.
    ///
    /// # Errors
    /// 503 when the read model cannot be read.
    pub async fn latest_ruleset(&self, team: &str) -> Result<Option<serde_json::Value>, AppError> {
        Ok(self
            .read_models
            .get(names::TEAM_RULESETS, "ruleset", team)
            .await?)
    }

    /// The change requests `agent` opened in `teams`, as the change inbox shows them (the gateway
    /// follows their decisions), in opening order per team. It reads every change request of those
    /// teams, so callers poll it sparingly.
    ///
    /// # Errors
    /// 503 when the read model cannot be read.
    pub async fn agent_change_requests(
        &self,
        agent: edict_domain::AgentId,
        teams: &BTreeSet<TeamId>,
    ) -> Result<Vec<serde_json::Value>, AppError> {
        let agent = agent.to_string();
        let mut found = Vec::new();
        for team in teams {
            found.extend(
                self.team_change_requests(*team)
                    .await?
                    .into_iter()
                    .filter(|doc| doc["agent"].as_str() == Some(agent.as_str())),
            );
        }
        Ok(found)
    }

    /// Every change request of `team`, as the change inbox shows them, in opening order (a gateway
    /// reads them once per team for all of its connections).
    ///
    /// # Errors
    /// 503 when the read model cannot be read.
    pub async fn team_change_requests(
        &self,
        team: TeamId,
    ) -> Result<Vec<serde_json::Value>, AppError> {
        let filter = crate::read_models::DocFilter {
            team: Some(team.to_string()),
            ..crate::read_models::DocFilter::default()
        };
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .read_models
                .list(
                    names::CHANGE_INBOX,
                    "change_request",
                    &filter,
                    after.as_deref(),
                    crate::queries::MAX_PAGE,
                )
                .await?;
            found.extend(page.docs.into_iter().map(|listed| listed.doc));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(found)
    }
}

impl Edict {
    /// Whether a connected agent may stay connected: its token is still unrevoked and unexpired and
    /// stands for `principal`, and its user is still active; if so, until when its token lasts.
    /// Cheaper than [`Edict::authenticate`] (it does not replay the agent's events), so a gateway can
    /// ask it every second per connection. Revoking an agent revokes its tokens right after recording
    /// the revocation, so this sees it.
    ///
    /// # Errors
    /// 503 when the store cannot be read.
    pub async fn agent_still_admitted(
        &self,
        principal: &Principal,
        bearer: &str,
    ) -> Result<AgentAdmission, AppError> {
        let Principal::Agent { id, user } = principal else {
            return Ok(AgentAdmission::Refused);
        };
        let expires_at = match self.auth.verify_agent_token(bearer).await? {
            AgentTokenCheck::Valid {
                agent,
                user: owner,
                expires_at,
            } if agent == *id && owner == *user => expires_at,
            AgentTokenCheck::Expired => return Ok(AgentAdmission::Expired),
            _ => return Ok(AgentAdmission::Refused),
        };
        let owner = self.users.load(&user.to_string()).await?;
        Ok(if owner.exists() && owner.active() {
            AgentAdmission::Admitted { expires_at }
        } else {
            AgentAdmission::Refused
        })
    }
}

/// Whether a connected agent may stay connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAdmission {
    /// Yes, until its token expires (seconds since the epoch).
    Admitted {
        /// When the token stops working.
        expires_at: i64,
    },
    /// Its token expired (or its renewal grace is over): the agent should use its renewed token.
    Expired,
    /// Its token was revoked, the agent or its user is gone.
    Refused,
}

/// A change in the log that ends live agent connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionChange {
    /// The agent was revoked.
    AgentRevoked(edict_domain::AgentId),
    /// The user was deactivated (all their agents are refused).
    UserDeactivated(edict_domain::UserId),
    /// The user's password changed: their agent tokens were revoked before the event was written, so
    /// their connections re-check their tokens at once.
    PasswordChanged(edict_domain::UserId),
    /// The user joined or left a team: their agents' teams are read again. Sent once the directory
    /// read model shows it (or after a bounded wait).
    MembershipChanged(edict_domain::UserId),
    /// The team was archived: the agents of its members read their teams again.
    TeamArchived(TeamId),
}

impl Edict {
    /// Where a gateway starts watching the log for revocations: the `agent_fleet` projection's
    /// checkpoint (recent, and it covers every revocation the projection knows), else the start (when
    /// the status cannot be read; logged).
    pub async fn admission_watch_start(&self) -> crate::event_log::Checkpoint {
        match self.read_models.status(names::AGENT_FLEET).await {
            Ok(status) => status.checkpoint,
            Err(error) => {
                tracing::warn!(%error, "cannot read the agent_fleet checkpoint; watching the log from its start");
                crate::event_log::Checkpoint::START
            }
        }
    }

    /// Whether the directory read model (the agents' teams) has applied the event at `position`.
    ///
    /// # Errors
    /// 503 when the read model cannot be read.
    pub async fn directory_covers(&self, position: i64) -> Result<bool, AppError> {
        Ok(self.read_models.covers(names::DIRECTORY, position).await?)
    }

    /// The revocations, deactivations and membership changes among the next `limit` events of the log
    /// after `after`, the checkpoint to resume from, and how many events were read.
    ///
    /// # Errors
    /// 503 when the log cannot be read.
    pub async fn admission_changes(
        &self,
        after: crate::event_log::Checkpoint,
        limit: usize,
    ) -> Result<(Vec<AdmissionChange>, crate::event_log::Checkpoint, usize), AppError> {
        let events = self.log.read_all(after, limit).await?;
        let next = events.last().map_or(after, |event| event.checkpoint());
        let changes = events
            .iter()
            .filter_map(
                |event| match (event.aggregate_type.as_str(), event.event_type.as_str()) {
                    ("Agent", "AgentRevoked") => event
                        .aggregate_id
                        .parse()
                        .ok()
                        .map(AdmissionChange::AgentRevoked),
                    ("User", "UserDeactivated") => event
                        .aggregate_id
                        .parse()
                        .ok()
                        .map(AdmissionChange::UserDeactivated),
                    ("User", "PasswordChanged") => event
                        .aggregate_id
                        .parse()
                        .ok()
                        .map(AdmissionChange::PasswordChanged),
                    ("Team", "MemberAdded" | "MemberRemoved") => event
                        .payload
                        .get(&event.event_type)
                        .and_then(|member| member.get("user"))
                        .and_then(|user| serde_json::from_value(user.clone()).ok())
                        .map(AdmissionChange::MembershipChanged),
                    ("Team", "TeamArchived") => event
                        .aggregate_id
                        .parse()
                        .ok()
                        .map(AdmissionChange::TeamArchived),
                    _ => None,
                },
            )
            .collect();
        Ok((changes, next, events.len()))
    }
}
