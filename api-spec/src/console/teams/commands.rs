//! The forms a team's page posts, each calling the use case `PUT|POST|PATCH|DELETE /api/v1/teams/...`
//! calls: rename, archive, add a member, change a member's role, remove a member, attach a rule with
//! its enforcement, change that enforcement, detach it. Each answers 303 back to the team's page; a
//! refusal (403) or a missing team (404) is a page of its own, any other refusal renders the team's
//! page again with the reason.

use super::{TEAMS, parse_enforcement, parse_id, team_page};
use crate::console::command::Posted;
use edict_application::error::AppError;
use edict_application::service::{Outcome, RequestContext};
use edict_domain::team::{TeamName, TeamRole};
use edict_domain::{RuleId, TeamId, UserId};
use poem::{Response, handler};
use serde::Deserialize;

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

/// Runs a command on the team the path names, with the version the page showed, and answers it: back
/// to the team's page saying `done`, or the refusal.
async fn run(
    post: &Posted<'_, TeamForm>,
    done: &str,
    command: impl AsyncFnOnce(TeamId, &RequestContext) -> Result<Outcome, AppError>,
) -> poem::Result<Response> {
    let ctx = post.context(post.form.version);
    let outcome = async { command(parse_id(&post.id)?, &ctx).await }.await;
    let again = async |message: String| {
        team_page(post.edict, &post.session, &post.id, None, Some(message)).await
    };
    post.answer(TEAMS, outcome, done, again).await
}

/// `POST /console/teams/{id}/rename`: org_admins and the team's team_admins.
#[handler]
pub async fn rename(post: Posted<'_, TeamForm>) -> poem::Result<Response> {
    run(&post, "renamed", async |team, ctx| {
        let name = TeamName::parse(post.form.name.trim())?;
        post.edict.rename_team(post.by(), team, name, ctx).await
    })
    .await
}

/// `POST /console/teams/{id}/archive`: org_admins, after ticking the confirmation.
#[handler]
pub async fn archive(post: Posted<'_, TeamForm>) -> poem::Result<Response> {
    run(&post, "archived", async |team, ctx| {
        // The use case decides who may: a role that may not gets its 403 before the confirmation.
        if post.form.confirm != "yes" && post.by().is_org_admin() {
            return Err(AppError::Invalid {
                field: "confirmation".into(),
                message: "tick the box to confirm that the team is to be archived".into(),
            });
        }
        post.edict.archive_team(post.by(), team, ctx).await
    })
    .await
}

/// `POST /console/teams/{id}/members`: adds a member with a role.
#[handler]
pub async fn add_member(post: Posted<'_, TeamForm>) -> poem::Result<Response> {
    run(&post, "added", async |team, ctx| {
        let user = user_id(&post.form.user_id)?;
        let role = match post.form.role.as_str() {
            "" => TeamRole::Member,
            raw => role(raw)?,
        };
        post.edict
            .add_member(post.by(), team, user, role, ctx)
            .await
    })
    .await
}

/// `POST /console/teams/{id}/members/{user}/role`.
#[handler]
pub async fn change_role(post: Posted<'_, TeamForm>) -> poem::Result<Response> {
    run(&post, "role", async |team, ctx| {
        let (user, role) = (user_id(post.segment("user"))?, role(&post.form.role)?);
        post.edict
            .change_member_role(post.by(), team, user, role, ctx)
            .await
    })
    .await
}

/// `POST /console/teams/{id}/members/{user}/remove`.
#[handler]
pub async fn remove_member(post: Posted<'_, TeamForm>) -> poem::Result<Response> {
    run(&post, "removed", async |team, ctx| {
        let user = user_id(post.segment("user"))?;
        post.edict.remove_member(post.by(), team, user, ctx).await
    })
    .await
}

/// `POST /console/teams/{id}/rules`: attaches an approved rule with an enforcement mode.
#[handler]
pub async fn attach(post: Posted<'_, TeamForm>) -> poem::Result<Response> {
    let form = &post.form;
    run(&post, "attached", async |team, ctx| {
        let rule = rule_id(&form.rule_id)?;
        let enforcement = parse_enforcement(&form.mode, &form.minutes)?;
        post.edict
            .attach_rule(post.by(), team, rule, enforcement, ctx)
            .await
    })
    .await
}

/// `POST /console/teams/{id}/rules/{rule}/mode`: changes how the team enforces an attached rule.
#[handler]
pub async fn change_mode(post: Posted<'_, TeamForm>) -> poem::Result<Response> {
    let form = &post.form;
    run(&post, "mode", async |team, ctx| {
        let rule = rule_id(post.segment("rule"))?;
        let enforcement = parse_enforcement(&form.mode, &form.minutes)?;
        let edict = post.edict;
        edict
            .change_enforcement(post.by(), team, rule, enforcement, ctx)
            .await
    })
    .await
}

/// `POST /console/teams/{id}/rules/{rule}/detach`.
#[handler]
pub async fn detach(post: Posted<'_, TeamForm>) -> poem::Result<Response> {
    run(&post, "detached", async |team, ctx| {
        let rule = rule_id(post.segment("rule"))?;
        post.edict.detach_rule(post.by(), team, rule, ctx).await
    })
    .await
}
