//! `edict users …`: users, their global roles and passwords (`/api/v1/users`).

use super::client::Request;
use super::rules::Page;
use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::json;

/// `edict users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Users with their roles and teams.
    List {
        /// `active` or `deactivated`.
        #[arg(long)]
        status: Option<String>,
        /// The page to list.
        #[command(flatten)]
        page: Page,
    },
    /// The signed-in user.
    Me,
    /// A user.
    Show {
        /// The user's id.
        id: String,
    },
    /// Creates a user; the password is asked for (or read from standard input).
    Create {
        /// Their email (they sign in with it).
        #[arg(long)]
        email: String,
        /// Their name.
        #[arg(long)]
        name: String,
        /// A global role (repeat for several).
        #[arg(long = "role")]
        roles: Vec<GlobalRole>,
        /// Read the password from the first line of standard input instead of asking for it.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Grants a global role.
    AddRole {
        /// The user's id.
        id: String,
        /// The role.
        role: GlobalRole,
    },
    /// Revokes a global role.
    RemoveRole {
        /// The user's id.
        id: String,
        /// The role.
        role: GlobalRole,
    },
    /// Deactivates a user: their sessions close at once.
    Deactivate {
        /// The user's id.
        id: String,
    },
    /// Reactivates a user.
    Reactivate {
        /// The user's id.
        id: String,
    },
    /// Changes a password: your own (with the current one), or anyone's as org_admin. Asked for,
    /// or read from standard input: the new password, then the current one when `--current`.
    SetPassword {
        /// The user's id.
        id: String,
        /// Also ask for the current password (changing your own).
        #[arg(long)]
        current: bool,
        /// Read the passwords from standard input, one a line, instead of asking for them.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Every event of the user, with its state after each (credentials are not events).
    History {
        /// The user's id.
        id: String,
    },
}

/// A global role.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GlobalRole {
    /// Administers the organization.
    #[value(name = "org_admin")]
    OrgAdmin,
    /// Reads everything, changes nothing.
    Auditor,
    /// A developer.
    Member,
}

impl std::fmt::Display for GlobalRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GlobalRole::OrgAdmin => "org_admin",
            GlobalRole::Auditor => "auditor",
            GlobalRole::Member => "member",
        })
    }
}

/// The request of a `users` subcommand.
///
/// # Errors
/// When a password cannot be read.
pub fn request(command: UsersCommand) -> Result<Request> {
    Ok(match command {
        UsersCommand::List { status, page } => {
            page.apply(Request::get(["users"]).query("status", status))
        }
        UsersCommand::Me => Request::get(["users", "me"]),
        UsersCommand::Show { id } => Request::get(["users", &id]),
        UsersCommand::Create {
            email,
            name,
            roles,
            password_stdin,
        } => {
            let password = super::read_password(password_stdin, "their password: ")?;
            let roles: Vec<String> = roles.iter().map(ToString::to_string).collect();
            Request::post(
                ["users"],
                json!({"email": email, "name": name, "password": password, "roles": roles}),
            )
        }
        UsersCommand::AddRole { id, role } => {
            Request::post(["users", &id, "roles"], json!({"role": role.to_string()}))
        }
        UsersCommand::RemoveRole { id, role } => Request::new(
            Method::DELETE,
            ["users".to_owned(), id, "roles".to_owned(), role.to_string()],
        ),
        UsersCommand::Deactivate { id } => Request::new(Method::POST, ["users", &id, "deactivate"]),
        UsersCommand::Reactivate { id } => Request::new(Method::POST, ["users", &id, "reactivate"]),
        UsersCommand::SetPassword {
            id,
            current,
            password_stdin,
        } => {
            let new_password = super::read_password(password_stdin, "new password: ")?;
            let current_password = current
                .then(|| super::read_password(password_stdin, "current password: "))
                .transpose()?;
            Request::new(Method::PUT, ["users", &id, "password"])
                .body(json!({"new_password": new_password, "current_password": current_password}))
        }
        UsersCommand::History { id } => Request::get(["users", &id, "history"]),
    })
}
