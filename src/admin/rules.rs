//! `edict rules …`: the rule library (`/api/v1/rules`), one subcommand per operation.

use super::client::Request;
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

/// `edict rules …`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// The rules, filtered, cursor-paginated.
    List {
        /// `draft`, `pending_review`, `approved`, `rejected` or `archived`.
        #[arg(long)]
        status: Option<String>,
        /// `organization`, `team` or `project`.
        #[arg(long)]
        layer: Option<Layer>,
        /// Only rules with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Text searched in the name, description and content.
        #[arg(long = "query", short = 'q')]
        text: Option<String>,
        /// The page to list.
        #[command(flatten)]
        page: Page,
    },
    /// A rule with its revision in force and its working revision.
    Show {
        /// The rule's id.
        id: String,
    },
    /// Drafts a rule (revision 1).
    Create(Spec),
    /// Replaces the spec of the draft or rejected revision.
    Update {
        /// The rule's id.
        id: String,
        /// The new spec.
        #[command(flatten)]
        spec: Spec,
    },
    /// Submits the working revision for review.
    Submit {
        /// The rule's id.
        id: String,
    },
    /// Approves the pending revision (never its author's or an editor's own).
    Approve {
        /// The rule's id.
        id: String,
    },
    /// Rejects the pending revision.
    Reject {
        /// The rule's id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Opens the next revision of an approved rule as a draft, with this spec.
    Revise {
        /// The rule's id.
        id: String,
        /// The new spec.
        #[command(flatten)]
        spec: Spec,
    },
    /// The rule's catalog entry with every revision.
    Revisions {
        /// The rule's id.
        id: String,
        /// Wait until the catalog shows this log position (default: your last command's).
        #[arg(long)]
        min_position: Option<i64>,
    },
    /// Sets how an organization-layer rule is enforced in every team.
    Enforcement {
        /// The rule's id.
        id: String,
        /// The enforcement.
        #[command(flatten)]
        enforcement: EnforcementArgs,
    },
    /// Archives a rule: it accepts no further change.
    Archive {
        /// The rule's id.
        id: String,
    },
    /// Every event of the rule, with its state after each.
    History {
        /// The rule's id.
        id: String,
    },
}

/// A managed section.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Layer {
    /// The organization's section.
    Organization,
    /// A team's section.
    Team,
    /// A project's section.
    Project,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layer::Organization => "organization",
            Layer::Team => "team",
            Layer::Project => "project",
        })
    }
}

/// What an author writes in one revision.
#[derive(Debug, Args)]
pub struct Spec {
    /// 1 to 200 characters.
    #[arg(long)]
    name: String,
    /// The managed section; fixed for the life of the rule.
    #[arg(long)]
    layer: Layer,
    /// The Markdown rendered into the section, from this file (`-`: standard input).
    #[arg(long, value_name = "PATH", required_unless_present = "content")]
    content_file: Option<PathBuf>,
    /// The Markdown rendered into the section (short texts; else `--content-file`).
    #[arg(long, conflicts_with = "content_file", allow_hyphen_values = true)]
    content: Option<String>,
    /// What the rule is for.
    #[arg(long)]
    description: Option<String>,
    /// The heading it is rendered under.
    #[arg(long)]
    category: Option<String>,
    /// Higher renders first within a category.
    #[arg(long)]
    priority: Option<i32>,
    /// A lowercase tag (repeat for several).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// A path glob a project-layer rule applies to (repeat for several).
    #[arg(long = "trigger")]
    triggers: Vec<String>,
}

impl Spec {
    /// The `RuleSpecDto` body.
    fn body(self) -> Result<Value> {
        let content = match (self.content, self.content_file) {
            (Some(content), _) => content,
            (None, Some(path)) => super::read_text(&path)?,
            (None, None) => anyhow::bail!("--content or --content-file is required"),
        };
        Ok(json!({
            "name": self.name,
            "layer": self.layer.to_string(),
            "content": content,
            "description": self.description,
            "category": self.category,
            "priority": self.priority,
            "tags": self.tags,
            "triggers": self.triggers,
        }))
    }
}

/// An enforcement mode (`EnforcementDto`).
#[derive(Debug, Args)]
pub struct EnforcementArgs {
    /// `block`, `temporary` or `warning`.
    #[arg(long)]
    mode: Mode,
    /// For `temporary`: the seconds a change may stand undecided (1 s to 30 days).
    #[arg(long, required_if_eq("mode", "temporary"))]
    timeout_secs: Option<u64>,
}

/// How a rule is enforced.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Changes are reverted at once.
    Block,
    /// Changes stand until an admin decides, at most the timeout.
    Temporary,
    /// Changes are reported only.
    Warning,
}

impl EnforcementArgs {
    /// The `EnforcementDto` body.
    pub fn body(&self) -> Value {
        let mode = match self.mode {
            Mode::Block => "block",
            Mode::Temporary => "temporary",
            Mode::Warning => "warning",
        };
        json!({"mode": mode, "temporary_timeout_secs": self.timeout_secs})
    }
}

/// The cursor of a list.
#[derive(Debug, Args)]
pub struct Page {
    /// Continue after this cursor (a page's `next`).
    #[arg(long)]
    after: Option<String>,
    /// At most this many items.
    #[arg(long)]
    limit: Option<u32>,
    /// Wait until the list shows this log position (default: your last command's).
    #[arg(long)]
    min_position: Option<i64>,
}

impl Page {
    /// Adds the cursor, limit and freshness to a list request.
    pub fn apply(self, request: Request) -> Request {
        request
            .query("after", self.after)
            .query("limit", self.limit)
            .fresh(self.min_position)
    }
}

/// The request of a `rules` subcommand.
///
/// # Errors
/// When the content file cannot be read.
pub fn request(command: RulesCommand) -> Result<Request> {
    let post = |id: &str, action: &str| Request::new(Method::POST, ["rules", id, action]);
    Ok(match command {
        RulesCommand::List {
            status,
            layer,
            tag,
            text,
            page,
        } => page.apply(
            Request::get(["rules"])
                .query("status", status)
                .query("layer", layer)
                .query("tag", tag)
                .query("q", text),
        ),
        RulesCommand::Show { id } => Request::get(["rules", &id]),
        RulesCommand::Create(spec) => Request::post(["rules"], spec.body()?),
        RulesCommand::Update { id, spec } => {
            Request::new(Method::PUT, ["rules", &id]).body(spec.body()?)
        }
        RulesCommand::Submit { id } => post(&id, "submit"),
        RulesCommand::Approve { id } => post(&id, "approve"),
        RulesCommand::Reject { id, reason } => post(&id, "reject").body(json!({"reason": reason})),
        RulesCommand::Revise { id, spec } => post(&id, "revisions").body(spec.body()?),
        RulesCommand::Revisions { id, min_position } => {
            Request::get(["rules", &id, "revisions"]).fresh(min_position)
        }
        RulesCommand::Enforcement { id, enforcement } => {
            Request::new(Method::PUT, ["rules", &id, "enforcement"]).body(enforcement.body())
        }
        RulesCommand::Archive { id } => post(&id, "archive"),
        RulesCommand::History { id } => Request::get(["rules", &id, "history"]),
    })
}
