//! The forms a team's page posts, each calling the use case `PUT|POST|PATCH|DELETE /api/v1/teams/...`
//! calls: rename, archive, add a member, change a member's role, remove a member, attach a rule with
//! its enforcement, change that enforcement, detach it. Each answers 303 back to the team's page; a
//! refusal (403) or a missing team (404) is a page of its own, any other refusal renders the team's
//! page again with the reason.

use super::{parse_enforcement, parse_id, team_page};
use crate::console::layout::Layout;
use crate::console::render::{Failure, describe, page, see_other};
use crate::console::rules::context;
use crate::console::session::Session;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::service::Outcome;
use edict_domain::team::{TeamName, TeamRole};
use edict_domain::{RuleId, UserId};
use poem::web::{Data, Form, Path};
use poem::{Request, Response, handler};
use serde::Deserialize;
use std::sync::Arc;

/// What any of the forms may carry.
#[derive(Debug, Default, Deserialize)]
pub struct TeamForm {
    /// The team's version the page showed (sent as `If-Match`).
    version: Option<u64>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    rule_id: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    minutes: String,
    /// The archive form's confirmation checkbox.
    #[serde(default)]
    confirm: String,
}

/// The user id a form names.
fn user_id(raw: &str) -> Result<UserId, AppError> {
    raw.trim().parse().map_err(|_| AppError::Invalid {
        field: "user".into(),
        message: "give a user's id (a UUID, as `edict user list` shows it)".into(),
    })
}

/// The rule id a form or path names.
fn rule_id(raw: &str) -> Result<RuleId, AppError> {
    raw.trim().parse().map_err(|_| AppError::Invalid {
        field: "rule".into(),
        message: "choose an approved rule".into(),
    })
}

/// A role from a form.
fn role(raw: &str) -> Result<TeamRole, AppError> {
    Ok(TeamRole::parse(raw.trim())?)
}

/// Answers a command's outcome: back to the team's page saying `done`, or the refusal.
async fn answer(
    edict: &Edict,
    session: &Session,
    id: &str,
    outcome: Result<Outcome, AppError>,
    done: &str,
) -> poem::Result<Response> {
    match outcome {
        Ok(_) => Ok(see_other(&format!("/console/teams/{id}?done={done}"))),
        Err(error @ (AppError::Forbidden(_) | AppError::NotFound(_))) => {
            Err(Failure::new(Layout::new(session, "/console/teams"), error).into())
        }
        Err(error) => {
            let (status, _, message) = describe(&error);
            let view = team_page(edict, session, id, None, Some(message)).await?;
            Ok(page(view, status))
        }
    }
}

/// `POST /console/teams/{id}/rename`: org_admins and the team's team_admins.
#[handler]
pub async fn rename(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Path(id): Path<String>,
    Form(form): Form<TeamForm>,
) -> poem::Result<Response> {
    let ctx = context(request, form.version);
    let outcome = async {
        let team = parse_id(&id)?;
        let name = TeamName::parse(form.name.trim())?;
        edict
            .rename_team(&session.principal, team, name, &ctx)
            .await
    }
    .await;
    answer(&edict, &session, &id, outcome, "renamed").await
}

/// `POST /console/teams/{id}/archive`: org_admins, after ticking the confirmation.
#[handler]
pub async fn archive(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Path(id): Path<String>,
    Form(form): Form<TeamForm>,
) -> poem::Result<Response> {
    let ctx = context(request, form.version);
    let outcome = async {
        let team = parse_id(&id)?;
        if form.confirm != "yes" {
            // The use case decides who may: a role that may not gets its 403 before this question.
            if !session.principal.is_org_admin() {
                return edict.archive_team(&session.principal, team, &ctx).await;
            }
            return Err(AppError::Invalid {
                field: "confirmation".into(),
                message: "tick the box to confirm that the team is to be archived".into(),
            });
        }
        edict.archive_team(&session.principal, team, &ctx).await
    }
    .await;
    answer(&edict, &session, &id, outcome, "archived").await
}

/// `POST /console/teams/{id}/members`: adds a member with a role.
#[handler]
pub async fn add_member(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Path(id): Path<String>,
    Form(form): Form<TeamForm>,
) -> poem::Result<Response> {
    let ctx = context(request, form.version);
    let outcome = async {
        let team = parse_id(&id)?;
        let user = user_id(&form.user_id)?;
        let role = if form.role.is_empty() {
            TeamRole::Member
        } else {
            role(&form.role)?
        };
        edict
            .add_member(&session.principal, team, user, role, &ctx)
            .await
    }
    .await;
    answer(&edict, &session, &id, outcome, "added").await
}

/// `POST /console/teams/{id}/members/{user}/role`.
#[handler]
pub async fn change_role(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Path((id, user)): Path<(String, String)>,
    Form(form): Form<TeamForm>,
) -> poem::Result<Response> {
    let ctx = context(request, form.version);
    let outcome = async {
        let team = parse_id(&id)?;
        let user = user_id(&user)?;
        let role = role(&form.role)?;
        edict
            .change_member_role(&session.principal, team, user, role, &ctx)
            .await
    }
    .await;
    answer(&edict, &session, &id, outcome, "role").await
}

/// `POST /console/teams/{id}/members/{user}/remove`.
#[handler]
pub async fn remove_member(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Path((id, user)): Path<(String, String)>,
    Form(form): Form<TeamForm>,
) -> poem::Result<Response> {
    let ctx = context(request, form.version);
    let outcome = async {
        let team = parse_id(&id)?;
        let user = user_id(&user)?;
        edict
            .remove_member(&session.principal, team, user, &ctx)
            .await
    }
    .await;
    answer(&edict, &session, &id, outcome, "removed").await
}

/// `POST /console/teams/{id}/rules`: attaches an approved rule with an enforcement mode.
#[handler]
pub async fn attach(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Path(id): Path<String>,
    Form(form): Form<TeamForm>,
) -> poem::Result<Response> {
    let ctx = context(request, form.version);
    let outcome = async {
        let team = parse_id(&id)?;
        let rule = rule_id(&form.rule_id)?;
        let enforcement = parse_enforcement(&form.mode, &form.minutes)?;
        edict
            .attach_rule(&session.principal, team, rule, enforcement, &ctx)
            .await
    }
    .await;
    answer(&edict, &session, &id, outcome, "attached").await
}

/// `POST /console/teams/{id}/rules/{rule}/mode`: changes how the team enforces an attached rule.
#[handler]
pub async fn change_mode(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Path((id, rule)): Path<(String, String)>,
    Form(form): Form<TeamForm>,
) -> poem::Result<Response> {
    let ctx = context(request, form.version);
    let outcome = async {
        let team = parse_id(&id)?;
        let rule = rule_id(&rule)?;
        let enforcement = parse_enforcement(&form.mode, &form.minutes)?;
        edict
            .change_enforcement(&session.principal, team, rule, enforcement, &ctx)
            .await
    }
    .await;
    answer(&edict, &session, &id, outcome, "mode").await
}

/// `POST /console/teams/{id}/rules/{rule}/detach`.
#[handler]
pub async fn detach(
    edict: Data<&Arc<Edict>>,
    session: Session,
    request: &Request,
    Path((id, rule)): Path<(String, String)>,
    Form(form): Form<TeamForm>,
) -> poem::Result<Response> {
    let ctx = context(request, form.version);
    let outcome = async {
        let team = parse_id(&id)?;
        let rule = rule_id(&rule)?;
        edict
            .detach_rule(&session.principal, team, rule, &ctx)
            .await
    }
    .await;
    answer(&edict, &session, &id, outcome, "detached").await
}
