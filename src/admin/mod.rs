//! The admin CLI: `edict login`/`logout`, then one subcommand per API operation an admin uses,
//! grouped by resource (`edict rules|teams|users|agents|change-requests|enrollment-tokens …`, plus
//! `edict events list` and `edict audit checkpoints` beside the store-side commands there), and
//! `edict completions`.
//!
//! Layout: [`credentials`] keeps the session on disk, [`client`] calls the API (refreshing the
//! session; [`error`] maps problems to exit codes), [`render`] prints answers; one module per resource
//! group turns its subcommands into [`client::Request`]s. The operations an agent makes with its own
//! token (enrollment, the device flow's polling, change reports) are the agent's, not here.

pub mod agents;
pub mod auth;
pub mod change_requests;
pub mod client;
pub mod credentials;
pub mod enrollment_tokens;
pub mod error;
pub mod log;
pub mod render;
pub mod rules;
pub mod teams;
pub mod users;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use client::{Api, CliError, Request, SessionArgs};
use std::io::Read;
use std::path::Path;

/// The exit statuses, for `edict --help` (and the README).
pub const EXIT_CODES: &str = "\
Exit status:
  0  ok
  1  any other error (unreachable server, invalid input, server error)
  2  usage: the command line is wrong
  3  not signed in, or the session expired or was ended (sign in again)
  4  not found (404)
  5  conflict: the resource changed (409; retry with its current version)
  6  refused: forbidden for your role (403) or by a domain rule (422, e.g. self_approval)
  7  rate limited (429): retry later";

/// The admin subcommands, flattened into `edict`'s.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Sign in to an Edict API; the session is kept for you only (`$EDICT_CONFIG_DIR`, else
    /// `$XDG_CONFIG_HOME/edict`, else `~/.config/edict`).
    Login(auth::LoginArgs),
    /// End the session at the API and forget it.
    Logout(SessionArgs),
    /// The rule library: draft, review, revise, enforce, archive.
    Rules(Group<rules::RulesCommand>),
    /// Teams: members, attached rules, their rule set and its convergence.
    Teams(Group<teams::TeamsCommand>),
    /// Users and their global roles.
    Users(Group<users::UsersCommand>),
    /// Enrolled agents, their tokens, and device code approvals.
    Agents(Group<agents::AgentsCommand>),
    /// Changes developers made to temporary-mode sections, and their exceptions.
    ChangeRequests(Group<change_requests::ChangeRequestsCommand>),
    /// Tokens for unattended agent installs.
    EnrollmentTokens(Group<enrollment_tokens::EnrollmentTokensCommand>),
    /// Print a completion script for a shell (`source <(edict completions bash)`).
    Completions {
        /// `bash`, `zsh`, `fish`, `elvish` or `powershell`.
        shell: clap_complete::Shell,
    },
}

/// A resource group: the session arguments (accepted before or after the action) and the action.
#[derive(Debug, Args)]
pub struct Group<C: Subcommand> {
    #[command(flatten)]
    session: SessionArgs,
    #[command(subcommand)]
    command: C,
}

/// Runs an admin command; `root` builds the whole command line (for completions).
///
/// # Errors
/// A [`CliError`] for what has its own exit status; anything else exits 1.
pub async fn run(command: AdminCommand, root: fn() -> clap::Command) -> Result<()> {
    match command {
        AdminCommand::Login(args) => auth::login(args).await,
        AdminCommand::Logout(session) => auth::logout(&session).await,
        AdminCommand::Rules(group) => execute(&group.session, rules::request(group.command)?).await,
        AdminCommand::Teams(group) => execute(&group.session, teams::request(group.command)).await,
        AdminCommand::Users(group) => execute(&group.session, users::request(group.command)?).await,
        AdminCommand::Agents(group) => {
            execute(&group.session, agents::request(group.command)).await
        }
        AdminCommand::ChangeRequests(group) => {
            execute(&group.session, change_requests::request(group.command)).await
        }
        AdminCommand::EnrollmentTokens(group) => {
            execute(&group.session, enrollment_tokens::request(group.command)).await
        }
        AdminCommand::Completions { shell } => {
            let mut command = root();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "edict", &mut script);
            use std::io::Write;
            match crate::output::raw_stdout().write_all(&script) {
                Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(error).context("cannot write the script")
                }
                _ => Ok(()),
            }
        }
    }
}

/// Sends `request` as the session says and prints the answer.
///
/// # Errors
/// See [`Api::send`].
pub async fn execute(session: &SessionArgs, request: Request) -> Result<()> {
    let mut api = Api::open(session)?;
    let answer = api.send(request).await?;
    render::print(&answer, session.output)
}

/// The exit status of a failed command: a [`CliError`]'s own, else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error
        .downcast_ref::<CliError>()
        .map_or(1, CliError::exit_code)
}

/// The text of `path`, or of standard input for `-`.
///
/// # Errors
/// When it cannot be read or is not UTF-8.
pub fn read_text(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// A password: the first line of standard input (`--password-stdin`), else asked for without echo.
///
/// # Errors
/// When neither can be read, or it is empty.
pub fn read_password(from_stdin: bool, prompt: &str) -> Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        rpassword::prompt_password(prompt)
            .context("cannot ask for the password (no terminal? use --password-stdin)")?
    };
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    Ok(password)
}
