//! `edict agents …`: enrolled agents, their tokens, and the consent step of the device code flow
//! (`/api/v1/agents`, `/api/v1/agent-tokens`, `/api/v1/device/requests`).

use super::client::Request;
use super::rules::Page;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

/// `edict agents …`.
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Enrolled agents (org_admins and auditors see all, others their own).
    List {
        /// `enrolled` or `revoked`.
        #[arg(long)]
        status: Option<String>,
        /// The page to list.
        #[command(flatten)]
        page: Page,
    },
    /// An agent.
    Show {
        /// The agent's id.
        id: String,
    },
    /// Enrolls a machine and prints its agent token (shown once).
    Enroll {
        /// The machine's stable id.
        #[arg(long)]
        machine_id: String,
        /// A name for people.
        #[arg(long)]
        machine_name: Option<String>,
        /// Whose machine it is (default: yours; another's as org_admin).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revokes an agent: its token is refused at once.
    Revoke {
        /// The agent's id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// The rule sets the agent enforces: per team, the revision it applied and since when.
    Enforced {
        /// The agent's id.
        id: String,
        /// What it had applied then: an RFC 3339 time or a global log position.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Every event of the agent, with its state after each.
    History {
        /// The agent's id.
        id: String,
    },
    /// The agent tokens of a user's machines, newest first (never a secret).
    Tokens {
        /// Whose (default: yours).
        #[arg(long)]
        user: Option<String>,
    },
    /// What asks for access under a device code (the code an agent's `login` prints).
    Device {
        /// The user code.
        code: String,
    },
    /// Approves a device code: the machine is enrolled as yours.
    ApproveDevice {
        /// The user code.
        code: String,
    },
    /// Denies a device code: the agent's poll answers `access-denied`.
    DenyDevice {
        /// The user code.
        code: String,
    },
}

/// The request of an `agents` subcommand.
pub fn request(command: AgentsCommand) -> Request {
    match command {
        AgentsCommand::List { status, page } => {
            page.apply(Request::get(["agents"]).query("status", status))
        }
        AgentsCommand::Show { id } => Request::get(["agents", &id]),
        AgentsCommand::Enroll {
            machine_id,
            machine_name,
            user,
        } => Request::post(
            ["agents"],
            json!({"machine_id": machine_id, "machine_name": machine_name, "user_id": user}),
        ),
        AgentsCommand::Revoke { id, reason } => {
            Request::post(["agents", &id, "revoke"], json!({"reason": reason}))
        }
        AgentsCommand::Enforced { id, as_of } => {
            Request::get(["agents", &id, "enforced"]).query("as_of", as_of)
        }
        AgentsCommand::History { id } => Request::get(["agents", &id, "history"]),
        AgentsCommand::Tokens { user } => Request::get(["agent-tokens"]).query("user_id", user),
        AgentsCommand::Device { code } => Request::get(["device", "requests", &code]),
        AgentsCommand::ApproveDevice { code } => Request::post(
            ["device", "requests", &code, "approve"],
            json!({"consent": true}),
        ),
        AgentsCommand::DenyDevice { code } => {
            Request::new(Method::POST, ["device", "requests", &code, "deny"])
        }
    }
}
