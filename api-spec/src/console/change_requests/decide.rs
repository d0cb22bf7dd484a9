//! The decisions posted from a change request's page, one to one with the API's change-request
//! commands a person makes: approve, reject (with a reason), withdraw (its developer), ask for an
//! exception (its developer), grant it (until a time or for good) or deny it (with a reason). Each
//! calls the use case the API's handler calls, with the version the page showed as `If-Match`; a
//! refused one shows the page again with the reason and what was typed, a forbidden one the 403 page.

use super::INBOX;
use super::detail::{change_page, parse_id};
use crate::console::command::Posted;
use chrono::{DateTime, NaiveDateTime, Utc};
use edict_application::error::AppError;
use edict_domain::change_request::ExceptionKind;
use edict_domain::value::Reason;
use poem::{Response, handler};
use serde::Deserialize;

/// A decision's form: the version the page showed, and the fields of the decision that has them.
#[derive(Debug, Default, Deserialize)]
pub struct DecisionForm {
    version: Option<u64>,
    /// Why (a rejection, a denial) or the justification (an exception request).
    #[serde(default)]
    reason: String,
    /// `permanent` or `time_limited` (an exception request).
    #[serde(default)]
    kind: String,
    /// Until when (`YYYY-MM-DDTHH:MM`, UTC): an exception asked for or granted.
    #[serde(default)]
    until: String,
}

/// Which command a form posts.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Approve,
    Reject,
    Withdraw,
    RequestException,
    Grant,
    Deny,
}

impl Verdict {
    /// What the page says after it (`?done=`).
    fn done(self) -> &'static str {
        match self {
            Verdict::Approve => "approved",
            Verdict::Reject => "rejected",
            Verdict::Withdraw => "withdrawn",
            Verdict::RequestException => "requested",
            Verdict::Grant => "granted",
            Verdict::Deny => "denied",
        }
    }
}

/// A time typed in a `datetime-local` field (read as UTC), or an RFC 3339 time.
fn parse_until(input: &str) -> Result<Option<DateTime<Utc>>, AppError> {
    let input = input.trim();
    if input.is_empty() {
        return Ok(None);
    }
    let parsed = DateTime::parse_from_rfc3339(input)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(input, "%Y-%m-%dT%H:%M").map(|t| t.and_utc()))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(input, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc())
        });
    parsed.map(Some).map_err(|_| AppError::Invalid {
        field: "until".into(),
        message: format!("{input:?} is not a date and time such as 2026-12-31T18:00"),
    })
}

fn reason(text: &str) -> Result<Reason, AppError> {
    Reason::parse(text).map_err(AppError::from)
}

async fn run(post: &Posted<'_, DecisionForm>, verdict: Verdict) -> Result<(), AppError> {
    let change = parse_id(&post.id)?;
    let (edict, principal, form) = (post.edict, post.by(), &post.form);
    let context = post.context(form.version);
    match verdict {
        Verdict::Approve => edict.approve_change(principal, change, &context).await,
        Verdict::Reject => {
            edict
                .reject_change(principal, change, reason(&form.reason)?, &context)
                .await
        }
        Verdict::Withdraw => edict.withdraw_change(principal, change, &context).await,
        Verdict::RequestException => {
            let justification = reason(&form.reason)?;
            let kind = match (form.kind.as_str(), parse_until(&form.until)?) {
                ("permanent", _) => ExceptionKind::Permanent,
                ("time_limited", Some(until)) => ExceptionKind::TimeLimited { until },
                ("time_limited", None) => {
                    return Err(AppError::Invalid {
                        field: "until".into(),
                        message: "a time-limited exception needs the time it ends".into(),
                    });
                }
                _ => {
                    return Err(AppError::Invalid {
                        field: "kind".into(),
                        message: "choose a time-limited or a permanent exception".into(),
                    });
                }
            };
            edict
                .request_exception(principal, change, justification, kind, &context)
                .await
        }
        Verdict::Grant => {
            let until = parse_until(&form.until)?;
            edict
                .grant_exception(principal, change, until, &context)
                .await
        }
        Verdict::Deny => {
            edict
                .deny_exception(principal, change, reason(&form.reason)?, &context)
                .await
        }
    }
    .map(|_| ())
}

async fn decide(post: Posted<'_, DecisionForm>, verdict: Verdict) -> poem::Result<Response> {
    let outcome = run(&post, verdict).await;
    let (edict, session, typed) = (post.edict, &post.session, &post.form.reason);
    let again =
        async |message| change_page(edict, session, &post.id, None, Some(message), typed).await;
    post.answer(INBOX, outcome, verdict.done(), again).await
}

/// `POST /console/change-requests/{id}/approve`: the developer keeps the change.
#[handler]
pub async fn approve(post: Posted<'_, DecisionForm>) -> poem::Result<Response> {
    decide(post, Verdict::Approve).await
}

/// `POST /console/change-requests/{id}/reject`: the agent reverts the change.
#[handler]
pub async fn reject(post: Posted<'_, DecisionForm>) -> poem::Result<Response> {
    decide(post, Verdict::Reject).await
}

/// `POST /console/change-requests/{id}/withdraw`: its developer takes it back.
#[handler]
pub async fn withdraw(post: Posted<'_, DecisionForm>) -> poem::Result<Response> {
    decide(post, Verdict::Withdraw).await
}

/// `POST /console/change-requests/{id}/exception`: its developer asks to keep a reverted change.
#[handler]
pub async fn request_exception(post: Posted<'_, DecisionForm>) -> poem::Result<Response> {
    decide(post, Verdict::RequestException).await
}

/// `POST /console/change-requests/{id}/exception/grant`.
#[handler]
pub async fn grant_exception(post: Posted<'_, DecisionForm>) -> poem::Result<Response> {
    decide(post, Verdict::Grant).await
}

/// `POST /console/change-requests/{id}/exception/deny`.
#[handler]
pub async fn deny_exception(post: Posted<'_, DecisionForm>) -> poem::Result<Response> {
    decide(post, Verdict::Deny).await
}

#[cfg(test)]
mod tests {
    use super::parse_until;

    #[test]
    fn a_local_time_is_read_as_utc() {
        let until = parse_until("2026-12-31T18:00").unwrap().unwrap();
        assert_eq!(until.to_rfc3339(), "2026-12-31T18:00:00+00:00");
        assert_eq!(parse_until("  ").unwrap(), None);
        assert!(parse_until("tomorrow").is_err());
    }
}
