//! The frame every console page shares (`templates/console/layout.html`): the skip link, the nav with
//! the pages the signed-in role may see, who is signed in and the sign-out form. And [`can`]: whether
//! a principal may do an action, so a page shows only the controls its role may use (the use case
//! still decides: forcing a hidden control gets 403).

use super::assets;
use super::session::{Session, Visitor};
use edict_application::principal::Principal;

/// What the console may offer a principal. The answers follow the use cases' own checks (the
/// application's `Principal` methods), never a second policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the rule library (every signed-in user).
    ReadRules,
    /// Draft, edit, submit, approve and reject rules (org_admins).
    WriteRules,
    /// Read the organization's operations: projections, every team's convergence (org_admins and
    /// auditors).
    ReadOperations,
    /// Read teams: every team for org_admins and auditors, one's own for others (the use cases
    /// filter).
    ReadTeams,
    /// Create and archive teams, and appoint team_admins (org_admins; a team_admin manages the members
    /// and rules of their own team, which `teams` checks against the team).
    WriteTeams,
    /// Read the fleet: every machine for org_admins and auditors, one's own for others.
    ReadFleet,
    /// Read the audit pages: the event log, histories, time travel, the chain, the export
    /// (org_admins and auditors).
    ReadAudit,
    /// Read the change-request inbox (every signed-in user: all of it for org_admins and auditors, a
    /// team's for its team_admins, one's own otherwise).
    ReadChangeRequests,
    /// Decide on any change request and its exceptions (org_admins; a team_admin decides those of
    /// their team, which the page checks against the team).
    DecideChangeRequests,
}

/// Whether `principal` may do `action`.
pub fn can(principal: &Principal, action: Action) -> bool {
    match action {
        Action::ReadRules => principal.is_user(),
        Action::WriteRules => principal.is_org_admin(),
        Action::ReadOperations => principal.can_read_all(),
        Action::ReadTeams | Action::ReadFleet => principal.is_user(),
        Action::WriteTeams => principal.is_org_admin(),
        Action::ReadAudit => principal.can_read_all(),
        Action::ReadChangeRequests => principal.is_user(),
        Action::DecideChangeRequests => principal.is_org_admin(),
    }
}

/// One entry of the nav.
#[derive(Debug, Clone)]
pub struct NavItem {
    /// Where it leads.
    pub href: &'static str,
    /// What it says.
    pub label: &'static str,
    /// Whether it is the page shown (`aria-current="page"`).
    pub current: bool,
}

/// The top-level pages, each with what lets a principal see it (None: every signed-in user).
const PAGES: &[(&str, &str, Option<Action>)] = &[
    ("/", "Dashboard", None),
    ("/console/rules", "Rules", Some(Action::ReadRules)),
    (
        "/console/change-requests",
        "Change requests",
        Some(Action::ReadChangeRequests),
    ),
    ("/console/teams", "Teams", Some(Action::ReadTeams)),
    ("/console/fleet", "Fleet", Some(Action::ReadFleet)),
    ("/console/audit", "Audit", Some(Action::ReadAudit)),
];

/// What the layout template shows around a page.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Who is signed in (None: a visitor; no nav, no sign-out).
    pub email: Option<String>,
    /// The CSRF token of the sign-out form (and of the page's own forms).
    pub csrf: String,
    /// The pages the role may see.
    pub nav: Vec<NavItem>,
    /// The stylesheet's URL (versioned by its content, so it can be cached long).
    pub stylesheet: String,
    /// The script's URL, for pages that load it.
    pub script: String,
}

impl Layout {
    /// The frame of a signed-in page; `current` is the nav entry's href it belongs to.
    pub fn new(session: &Session, current: &str) -> Layout {
        let nav = PAGES
            .iter()
            .filter(|(_, _, action)| action.is_none_or(|a| can(&session.principal, a)))
            .map(|(href, label, _)| NavItem {
                href,
                label,
                current: *href == current,
            })
            .collect();
        Layout {
            email: Some(session.email.clone()),
            csrf: session.csrf.clone(),
            nav,
            stylesheet: assets::href("console.css"),
            script: assets::href("console.js"),
        }
    }

    /// The frame of a page a visitor may see too (signed in or not).
    pub fn for_visitor(visitor: &Visitor, current: &str) -> Layout {
        match &visitor.session {
            Some(session) => Layout::new(session, current),
            None => Layout {
                email: None,
                csrf: visitor.csrf.clone(),
                nav: Vec::new(),
                stylesheet: assets::href("console.css"),
                script: assets::href("console.js"),
            },
        }
    }
}
