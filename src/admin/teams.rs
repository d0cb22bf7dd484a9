//! `edict teams …`: teams, their members and attached rules, their rule set (`/api/v1/teams`).

use super::client::Request;
use super::rules::{EnforcementArgs, Layer, Page};
use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::json;

/// `edict teams …`.
#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// Teams (all of them for org_admins and auditors, your own for others).
    List {
        /// `active` or `archived`.
        #[arg(long)]
        status: Option<String>,
        /// The page to list.
        #[command(flatten)]
        page: Page,
    },
    /// A team with its members and rules.
    Show {
        /// The team's id.
        id: String,
    },
    /// Creates a team.
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
    },
    /// Renames a team.
    Rename {
        /// The team's id.
        id: String,
        /// Its new name.
        #[arg(long)]
        name: String,
    },
    /// Archives a team.
    Archive {
        /// The team's id.
        id: String,
    },
    /// Adds a member.
    AddMember {
        /// The team's id.
        id: String,
        /// The user's id.
        #[arg(long)]
        user: String,
        /// Their role in the team.
        #[arg(long, default_value = "member")]
        role: TeamRole,
    },
    /// Changes a member's role.
    SetMemberRole {
        /// The team's id.
        id: String,
        /// The user's id.
        user: String,
        /// The role.
        #[arg(long)]
        role: TeamRole,
    },
    /// Removes a member.
    RemoveMember {
        /// The team's id.
        id: String,
        /// The user's id.
        user: String,
    },
    /// Attaches an approved rule with an enforcement mode.
    AttachRule {
        /// The team's id.
        id: String,
        /// The rule's id.
        #[arg(long)]
        rule: String,
        /// The enforcement.
        #[command(flatten)]
        enforcement: EnforcementArgs,
    },
    /// Changes how the team enforces an attached rule.
    SetEnforcement {
        /// The team's id.
        id: String,
        /// The rule's id.
        rule: String,
        /// The enforcement.
        #[command(flatten)]
        enforcement: EnforcementArgs,
    },
    /// Detaches a rule.
    DetachRule {
        /// The team's id.
        id: String,
        /// The rule's id.
        rule: String,
    },
    /// The team's effective rule set (organization rules plus its own, per layer).
    Ruleset {
        /// The team's id.
        id: String,
        /// The rule set as it was then: an RFC 3339 time or a global log position.
        #[arg(long)]
        as_of: Option<String>,
        /// Wait until the rule set shows this log position (default: your last command's).
        #[arg(long)]
        min_position: Option<i64>,
    },
    /// The rendered managed section of one layer, as Markdown.
    Rendered {
        /// The team's id.
        id: String,
        /// The layer.
        #[arg(long)]
        layer: Option<Layer>,
        /// Wait until the rule set shows this log position (default: your last command's).
        #[arg(long)]
        min_position: Option<i64>,
    },
    /// Which revision of the team's rule set each agent enforces.
    Convergence {
        /// The team's id.
        id: String,
    },
    /// Every event of the team, with its state after each.
    History {
        /// The team's id.
        id: String,
    },
}

/// A role in a team.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TeamRole {
    /// Manages the team's members and rules.
    #[value(name = "team_admin")]
    TeamAdmin,
    /// A developer of the team.
    Member,
}

impl TeamRole {
    fn name(self) -> &'static str {
        match self {
            TeamRole::TeamAdmin => "team_admin",
            TeamRole::Member => "member",
        }
    }
}

/// The request of a `teams` subcommand.
pub fn request(command: TeamsCommand) -> Request {
    match command {
        TeamsCommand::List { status, page } => {
            page.apply(Request::get(["teams"]).query("status", status))
        }
        TeamsCommand::Show { id } => Request::get(["teams", &id]),
        TeamsCommand::Create { name } => Request::post(["teams"], json!({"name": name})),
        TeamsCommand::Rename { id, name } => {
            Request::new(Method::PUT, ["teams", &id]).body(json!({"name": name}))
        }
        TeamsCommand::Archive { id } => Request::new(Method::POST, ["teams", &id, "archive"]),
        TeamsCommand::AddMember { id, user, role } => Request::post(
            ["teams", &id, "members"],
            json!({"user_id": user, "role": role.name()}),
        ),
        TeamsCommand::SetMemberRole { id, user, role } => {
            Request::new(Method::PUT, ["teams", &id, "members", &user])
                .body(json!({"role": role.name()}))
        }
        TeamsCommand::RemoveMember { id, user } => {
            Request::new(Method::DELETE, ["teams", &id, "members", &user])
        }
        TeamsCommand::AttachRule {
            id,
            rule,
            enforcement,
        } => Request::post(
            ["teams", &id, "rules"],
            json!({"rule_id": rule, "enforcement": enforcement.body()}),
        ),
        TeamsCommand::SetEnforcement {
            id,
            rule,
            enforcement,
        } => Request::new(Method::PATCH, ["teams", &id, "rules", &rule]).body(enforcement.body()),
        TeamsCommand::DetachRule { id, rule } => {
            Request::new(Method::DELETE, ["teams", &id, "rules", &rule])
        }
        TeamsCommand::Ruleset {
            id,
            as_of,
            min_position,
        } => Request::get(["teams", &id, "ruleset"])
            .query("as_of", as_of)
            .fresh(min_position),
        TeamsCommand::Rendered {
            id,
            layer,
            min_position,
        } => Request::get(["teams", &id, "ruleset", "rendered"])
            .query("layer", layer)
            .fresh(min_position),
        TeamsCommand::Convergence { id } => Request::get(["teams", &id, "convergence"]),
        TeamsCommand::History { id } => Request::get(["teams", &id, "history"]),
    }
}
