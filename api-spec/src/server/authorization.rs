//! The authorization table: which kinds of caller may call each route of the API, and [`gate`], the
//! middleware that enforces it before a request's body is read.
//!
//! Every operation of the served spec has exactly one row ([`TABLE`], keyed by method and path
//! template); a test fails when a route has no row or a row no route, so a new route cannot be served
//! without deciding who may call it. `docs/authorization.md` is generated from the table (and checked
//! against it, as `api-spec/openapi.yaml` is against the code).
//!
//! The gate is the first check, not the only one: a caller kind the row does not name gets a 403
//! problem+json at once, before the body is read or validated (so a member posting an invalid body to
//! an org_admin route learns it may not, not what was wrong with the body); a caller it names goes on
//! to the endpoint, whose use case checks again and decides what the row marks "scoped" (the team a
//! team_admin administers, the machines and change requests that are a user's own, the teams an
//! agent's user belongs to).

use super::problem::ErrorResponse;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::principal::Principal;
use edict_domain::user::GlobalRole;
use poem::http::{Method, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use std::sync::Arc;

/// A kind of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Caller {
    /// Anyone, without credentials (the route authenticates otherwise, or not at all).
    Anonymous,
    /// An enrolled agent, with its agent token.
    Agent,
    /// A signed-in user acting for themself (not an auditor: auditors change nothing).
    Member,
    /// A user acting as the team_admin of a team (the application checks which team).
    TeamAdmin,
    /// A user with the auditor role: reads everything, changes nothing.
    Auditor,
    /// A user with the org_admin role.
    OrgAdmin,
}

impl Caller {
    /// Every kind, in the table's column order.
    pub const ALL: [Caller; 6] = [
        Caller::Anonymous,
        Caller::Agent,
        Caller::Member,
        Caller::TeamAdmin,
        Caller::Auditor,
        Caller::OrgAdmin,
    ];

    /// The kind's name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Agent => "agent",
            Caller::Member => "member",
            Caller::TeamAdmin => "team_admin",
            Caller::Auditor => "auditor",
            Caller::OrgAdmin => "org_admin",
        }
    }

    /// Whether the application narrows this kind to its own things on a scoped row (an org_admin and
    /// an auditor are never narrowed).
    fn narrowed(self) -> bool {
        matches!(self, Caller::Agent | Caller::Member | Caller::TeamAdmin)
    }
}

/// One route of the API and who may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The HTTP method (`GET`, `POST`, …).
    pub method: &'static str,
    /// The path template, as in the spec (`/api/v1/rules/{id}`).
    pub path: &'static str,
    /// The kinds of caller that may call it.
    pub callers: &'static [Caller],
    /// Whether the application narrows agents, members and team_admins to their own team, machines
    /// or change requests.
    pub scoped: bool,
}

impl Row {
    /// Whether `principal` is of a kind this row lets through.
    pub fn allows(&self, principal: &Principal) -> bool {
        kinds(principal)
            .iter()
            .any(|kind| self.callers.contains(kind))
    }

    /// Whether the row lets callers without credentials through.
    pub fn is_public(&self) -> bool {
        self.callers.contains(&Caller::Anonymous)
    }
}

/// The kinds `principal` is of. A user is a member and a possible team_admin unless they are an
/// auditor (an auditor who is also an org_admin acts as the org_admin).
pub fn kinds(principal: &Principal) -> Vec<Caller> {
    match principal {
        Principal::Agent { .. } => vec![Caller::Agent],
        Principal::User { roles, .. } => {
            let admin = roles.contains(&GlobalRole::OrgAdmin);
            let auditor = roles.contains(&GlobalRole::Auditor);
            let mut kinds = Vec::with_capacity(4);
            if admin || !auditor {
                kinds.extend([Caller::Member, Caller::TeamAdmin]);
            }
            if auditor {
                kinds.push(Caller::Auditor);
            }
            if admin {
                kinds.push(Caller::OrgAdmin);
            }
            kinds
        }
    }
}

use Caller::{Agent, Anonymous, Auditor, Member, OrgAdmin, TeamAdmin};

/// Anyone: no credentials needed. (A team_admin is a member too: rows for members name both.)
const PUBLIC: &[Caller] = &[Anonymous];
/// Every signed-in user.
const USERS: &[Caller] = &[Member, TeamAdmin, Auditor, OrgAdmin];
/// org_admins only.
const ORG: &[Caller] = &[OrgAdmin];
/// Readers of everything: auditors and org_admins.
const AUDIT: &[Caller] = &[Auditor, OrgAdmin];
/// A team's admins and org_admins.
const TEAM: &[Caller] = &[TeamAdmin, OrgAdmin];
/// A user's own things (not auditors, who change nothing).
const OWN: &[Caller] = &[Member, TeamAdmin, OrgAdmin];
/// What a team's admin or a user reads of their own, auditors and org_admins everything.
const INBOX: &[Caller] = &[Member, TeamAdmin, Auditor, OrgAdmin];
/// Agents only.
const AGENT: &[Caller] = &[Agent];
/// The developer of a change: signed in, or through the agent of the machine (an appeal).
const APPEAL: &[Caller] = &[Agent, Member, TeamAdmin, OrgAdmin];

const fn row(
    method: &'static str,
    path: &'static str,
    callers: &'static [Caller],
    scoped: bool,
) -> Row {
    Row {
        method,
        path,
        callers,
        scoped,
    }
}

/// Who may call every route of the API.
pub const TABLE: &[Row] = &[
    row("GET", "/health/live", PUBLIC, false),
    row("GET", "/health/ready", PUBLIC, false),
    row("POST", "/api/v1/auth/login", PUBLIC, false),
    row("POST", "/api/v1/auth/refresh", PUBLIC, false),
    row("POST", "/api/v1/auth/logout", USERS, false),
    // The rule library: the organization's; everybody signed in reads it.
    row("POST", "/api/v1/rules", ORG, false),
    row("GET", "/api/v1/rules", USERS, false),
    row("GET", "/api/v1/rules/{id}", USERS, false),
    row("PUT", "/api/v1/rules/{id}", ORG, false),
    row("POST", "/api/v1/rules/{id}/submit", ORG, false),
    row("POST", "/api/v1/rules/{id}/approve", ORG, false),
    row("POST", "/api/v1/rules/{id}/reject", ORG, false),
    row("POST", "/api/v1/rules/{id}/revisions", ORG, false),
    row("GET", "/api/v1/rules/{id}/revisions", USERS, false),
    row("PUT", "/api/v1/rules/{id}/enforcement", ORG, false),
    row("POST", "/api/v1/rules/{id}/archive", ORG, false),
    // Teams: members read theirs, team_admins manage theirs (never appointing team_admins).
    row("POST", "/api/v1/teams", ORG, false),
    row("GET", "/api/v1/teams", USERS, true),
    row("GET", "/api/v1/teams/{id}", USERS, true),
    row("PUT", "/api/v1/teams/{id}", TEAM, true),
    row("POST", "/api/v1/teams/{id}/archive", ORG, false),
    row("POST", "/api/v1/teams/{id}/members", TEAM, true),
    row("PUT", "/api/v1/teams/{id}/members/{user_id}", TEAM, true),
    row("DELETE", "/api/v1/teams/{id}/members/{user_id}", TEAM, true),
    row("POST", "/api/v1/teams/{id}/rules", TEAM, true),
    row("PATCH", "/api/v1/teams/{id}/rules/{rule_id}", TEAM, true),
    row("DELETE", "/api/v1/teams/{id}/rules/{rule_id}", TEAM, true),
    row("GET", "/api/v1/teams/{id}/ruleset", USERS, true),
    row("GET", "/api/v1/teams/{id}/ruleset/rendered", USERS, true),
    row("GET", "/api/v1/teams/{id}/convergence", USERS, true),
    // Change requests: agents report and appeal; developers, team_admins and readers read.
    row("POST", "/api/v1/change-requests", AGENT, true),
    row("GET", "/api/v1/change-requests", INBOX, true),
    row("GET", "/api/v1/change-requests/{id}", INBOX, true),
    row("POST", "/api/v1/change-requests/{id}/amend", AGENT, true),
    row("POST", "/api/v1/change-requests/{id}/approve", TEAM, true),
    row("POST", "/api/v1/change-requests/{id}/reject", TEAM, true),
    row("POST", "/api/v1/change-requests/{id}/withdraw", OWN, true),
    row(
        "POST",
        "/api/v1/change-requests/{id}/exception",
        APPEAL,
        true,
    ),
    row(
        "POST",
        "/api/v1/change-requests/{id}/exception/grant",
        TEAM,
        true,
    ),
    row(
        "POST",
        "/api/v1/change-requests/{id}/exception/deny",
        TEAM,
        true,
    ),
    // Users: org_admins manage them; a user reads themself and changes their own password.
    row("POST", "/api/v1/users", ORG, false),
    row("GET", "/api/v1/users", AUDIT, false),
    row("GET", "/api/v1/users/me", USERS, false),
    row("GET", "/api/v1/users/{id}", USERS, true),
    row("POST", "/api/v1/users/{id}/roles", ORG, false),
    row("DELETE", "/api/v1/users/{id}/roles/{role}", ORG, false),
    row("POST", "/api/v1/users/{id}/deactivate", ORG, false),
    row("POST", "/api/v1/users/{id}/reactivate", ORG, false),
    row("PUT", "/api/v1/users/{id}/password", USERS, true),
    // Agents: a user's own machines (an org_admin's for anyone); auditors own none.
    row("POST", "/api/v1/agents", OWN, true),
    row("GET", "/api/v1/agents", USERS, true),
    row("GET", "/api/v1/agents/{id}", USERS, true),
    row("POST", "/api/v1/agents/{id}/revoke", OWN, true),
    row("GET", "/api/v1/agents/{id}/enforced", USERS, true),
    // Agent tokens: an agent renews its own; a user lists their machines' (an org_admin anyone's).
    row("POST", "/api/v1/agent/token", AGENT, false),
    row("GET", "/api/v1/agent-tokens", OWN, true),
    // History and the audit trail.
    row("GET", "/api/v1/events", AUDIT, false),
    row("GET", "/api/v1/rules/{id}/history", AUDIT, false),
    row("GET", "/api/v1/teams/{id}/history", AUDIT, false),
    row("GET", "/api/v1/change-requests/{id}/history", AUDIT, false),
    row("GET", "/api/v1/users/{id}/history", AUDIT, false),
    row("GET", "/api/v1/agents/{id}/history", AUDIT, false),
    row("GET", "/api/v1/audit/checkpoints", AUDIT, false),
    row("GET", "/api/v1/events/export", AUDIT, false),
    // Enrollment: the device code and the enrollment token are the agent's credentials.
    row("POST", "/api/v1/device/code", PUBLIC, false),
    row("POST", "/api/v1/device/token", PUBLIC, false),
    row("GET", "/api/v1/device/requests/{user_code}", USERS, false),
    row(
        "POST",
        "/api/v1/device/requests/{user_code}/approve",
        OWN,
        false,
    ),
    row(
        "POST",
        "/api/v1/device/requests/{user_code}/deny",
        OWN,
        false,
    ),
    row("POST", "/api/v1/enrollment-tokens", ORG, false),
    row("GET", "/api/v1/enrollment-tokens", ORG, false),
    row("POST", "/api/v1/enrollment-tokens/{id}/revoke", ORG, false),
    row("POST", "/api/v1/agents/enroll", PUBLIC, false),
    // Operations.
    row("GET", "/api/v1/admin/projections", AUDIT, false),
    row("GET", "/api/v1/admin/projections/{name}/hash", AUDIT, false),
    row(
        "POST",
        "/api/v1/admin/projections/{name}/rebuild",
        ORG,
        false,
    ),
    row("GET", "/api/v1/signing-keys", AUDIT, false),
    row("POST", "/api/v1/signing-keys/rotate", ORG, false),
];

/// The row of a request: the route whose template matches `path` with `method`; where several match
/// (`/api/v1/users/me` and `/api/v1/users/{id}`), the one with a literal segment first wins.
pub fn route(method: &Method, path: &str) -> Option<&'static Row> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    TABLE
        .iter()
        .filter(|row| row.method == method.as_str())
        .filter_map(|row| {
            let template: Vec<&str> = row.path.split('/').collect();
            if template.len() != segments.len() {
                return None;
            }
            let mut literals = Vec::with_capacity(template.len());
            for (t, s) in template.iter().zip(&segments) {
                let parameter = t.starts_with('{') && t.ends_with('}');
                if parameter {
                    if s.is_empty() {
                        return None;
                    }
                } else if t != s {
                    return None;
                }
                literals.push(!parameter);
            }
            Some((literals, row))
        })
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, row)| row)
}

/// The principal the gate authenticated, kept for the endpoint's security scheme (so a request
/// authenticates once).
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The bearer token it was authenticated from.
    pub token: String,
    /// Who it is.
    pub principal: Principal,
}

/// The first gate of every request: answers 401 to a route that needs credentials and got none or bad
/// ones, and 403 problem+json to a caller whose kind the route's row does not name, before the body is
/// read. Requests outside the table (Swagger UI, the spec, the device page, unknown routes) pass.
pub async fn gate<E: Endpoint>(next: E, mut request: Request) -> poem::Result<Response> {
    let Some(row) = route(request.method(), request.uri().path()) else {
        return next.call(request).await.map(IntoResponse::into_response);
    };
    let edict = request.data::<Arc<Edict>>().cloned();
    let (false, Some(edict)) = (row.is_public(), edict) else {
        return next.call(request).await.map(IntoResponse::into_response);
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|v| v.trim().to_owned());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(ErrorResponse::from(AppError::Unauthenticated).into_response());
    };
    let principal = match edict.authenticate(&token).await {
        Ok(principal) => principal,
        Err(error) => return Ok(ErrorResponse::from(error).into_response()),
    };
    if !row.allows(&principal) {
        let who = kinds(&principal)
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let allowed = row
            .callers
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Ok(ErrorResponse::from(AppError::Forbidden(format!(
            "{} {} is for {allowed}; the caller is {who}",
            row.method, row.path
        )))
        .into_response());
    }
    request
        .extensions_mut()
        .insert(Authenticated { token, principal });
    next.call(request).await.map(IntoResponse::into_response)
}

/// The table as Markdown (committed as `docs/authorization.md`).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Authorization\n\n\
         Generated from `api-spec/src/server/authorization.rs` (a test fails when this file differs; \
         regenerate with `EDICT_BLESS=1 cargo test -p edict-api authorization`).\n\n\
         Who may call each route. The server checks this table first, before it reads a request's \
         body: a caller of a kind marked `no` gets 403 problem+json (and one without valid \
         credentials 401; `anonymous` routes need none, so everyone may call them), never a 400 or 422 about the body. The use cases check again. `scoped`: \
         the kind may call the route, and the application narrows it to its own things: a member to \
         their teams, machines, change requests and user; a team_admin to the teams they administer \
         (they never appoint, demote or remove a team_admin: org_admins do); an agent to its user's \
         teams and change requests. Auditors change nothing; an org_admin's approval of a rule counts \
         only outside the probation (`docs/adr/0023-quorum-one-person-cannot-stretch.md`).\n\n",
    );
    out.push_str("| method | path |");
    for kind in Caller::ALL {
        out.push_str(&format!(" {} |", kind.as_str()));
    }
    out.push_str("\n|---|---|");
    for _ in Caller::ALL {
        out.push_str("---|");
    }
    out.push('\n');
    for row in TABLE {
        out.push_str(&format!("| {} | `{}` |", row.method, row.path));
        for kind in Caller::ALL {
            let cell = if row.is_public() {
                "yes"
            } else if !row.callers.contains(&kind) {
                "no"
            } else if row.scoped && kind.narrowed() {
                "scoped"
            } else {
                "yes"
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn spec_routes() -> BTreeSet<(String, String)> {
        let spec: serde_json::Value =
            serde_json::from_str(&super::super::spec_json()).expect("the spec is JSON");
        let mut routes = BTreeSet::new();
        for (path, operations) in spec["paths"].as_object().expect("paths") {
            for method in operations.as_object().expect("operations").keys() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
        routes
    }

    #[test]
    fn every_served_route_has_a_row_and_every_row_a_route() {
        let served = spec_routes();
        let table: BTreeSet<(String, String)> = TABLE
            .iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(table.len(), TABLE.len(), "a route has two rows");
        let without_row: Vec<_> = served.difference(&table).collect();
        let without_route: Vec<_> = table.difference(&served).collect();
        assert!(
            without_row.is_empty(),
            "routes without a row in api-spec/src/server/authorization.rs (decide who may call \
             them): {without_row:?}"
        );
        assert!(
            without_route.is_empty(),
            "rows without a served route: {without_route:?}"
        );
    }

    #[test]
    fn every_row_names_a_caller() {
        for row in TABLE {
            assert!(!row.callers.is_empty(), "{} {}", row.method, row.path);
        }
    }

    #[test]
    fn the_committed_markdown_is_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/authorization.md");
        let generated = markdown();
        if std::env::var_os("EDICT_BLESS").is_some() {
            std::fs::write(path, &generated).expect("write docs/authorization.md");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/authorization.md differs from the table: run \
             `EDICT_BLESS=1 cargo test -p edict-api authorization` and commit it"
        );
    }

    #[test]
    fn a_literal_segment_wins_over_a_parameter() {
        let me = route(&Method::GET, "/api/v1/users/me").unwrap();
        assert_eq!(me.path, "/api/v1/users/me");
        let other = route(&Method::GET, "/api/v1/users/0190").unwrap();
        assert_eq!(other.path, "/api/v1/users/{id}");
        let enroll = route(&Method::POST, "/api/v1/agents/enroll").unwrap();
        assert!(enroll.is_public());
        assert!(route(&Method::GET, "/docs").is_none());
        assert!(route(&Method::DELETE, "/api/v1/rules").is_none());
        assert!(route(&Method::GET, "/api/v1/rules//revisions").is_none());
    }

    fn user(roles: &[GlobalRole]) -> Principal {
        Principal::User {
            id: edict_domain::UserId::new(),
            roles: roles.iter().copied().collect(),
            session: "s".into(),
        }
    }

    #[test]
    fn an_auditor_is_no_member_and_an_agent_is_only_an_agent() {
        let agent = Principal::Agent {
            id: edict_domain::AgentId::new(),
            user: edict_domain::UserId::new(),
        };
        let approve = route(&Method::POST, "/api/v1/device/requests/ABCD-EFGH/deny").unwrap();
        assert!(!approve.allows(&user(&[GlobalRole::Auditor])));
        assert!(approve.allows(&user(&[GlobalRole::Member])));
        assert!(approve.allows(&user(&[GlobalRole::Auditor, GlobalRole::OrgAdmin])));
        assert!(!approve.allows(&agent));
        let ruleset = route(&Method::GET, "/api/v1/teams/t/ruleset").unwrap();
        assert!(!ruleset.allows(&agent));
        assert!(ruleset.allows(&user(&[GlobalRole::Auditor])));
        let report = route(&Method::POST, "/api/v1/change-requests").unwrap();
        assert!(report.allows(&agent));
        assert!(!report.allows(&user(&[GlobalRole::OrgAdmin])));
        let create = route(&Method::POST, "/api/v1/rules").unwrap();
        assert!(!create.allows(&user(&[GlobalRole::Member])));
        assert!(create.allows(&user(&[GlobalRole::OrgAdmin])));
    }
}
