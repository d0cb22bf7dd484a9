//! `edict login` and `edict logout`: open a session (`POST /api/v1/auth/login`) and keep it in the
//! credentials file; end it (`POST /api/v1/auth/logout`) and delete the file.

use super::client::{self, Api, CliError, Request, SessionArgs};
use super::credentials::{Credentials, Store};
use super::render::{self, Format};
use crate::api_client::{self, ServerArgs};
use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};
use std::path::PathBuf;

/// Arguments of `edict login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The Edict API (`https://edict.example.com`, or `http://127.0.0.1:8080` on this machine).
    #[arg(long, env = "EDICT_SERVER")]
    server: String,
    /// Your email.
    #[arg(long)]
    email: String,
    /// Read the password from the first line of standard input instead of asking for it.
    #[arg(long)]
    password_stdin: bool,
    /// A PEM bundle of CA certificates to trust for an `https://` server (a private PKI); kept with
    /// the session.
    #[arg(long, env = "EDICT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// `table` or `json`.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Signs in and stores the session.
///
/// # Errors
/// A [`CliError`] when the API refuses (401 wrong email or password: exit 3); when the file cannot
/// be written.
pub async fn login(args: LoginArgs) -> Result<()> {
    let store = Store::from_env()?;
    // Kept absolute: later commands may run from another directory.
    let ca_file = args
        .ca_file
        .as_ref()
        .map(|path| {
            std::fs::canonicalize(path)
                .with_context(|| format!("cannot read --ca-file {}", path.display()))
        })
        .transpose()?;
    let password = super::read_password(args.password_stdin, "password: ")?;
    let http = api_client::client(
        &args.server,
        &ServerArgs {
            ca_file: ca_file.clone(),
        },
    )?;
    let mut url = client::base_url(&args.server)?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("the server URL cannot take a path"))?
        .extend(["auth", "login"]);
    let response = http
        .post(url)
        .json(&json!({"email": args.email, "password": password}))
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.server))?;
    let status = response.status();
    let body = CliError::check(status, response.json().await.unwrap_or(Value::Null))?;
    let mut credentials = Credentials {
        server: args.server.trim_end_matches('/').to_owned(),
        email: args.email.clone(),
        access_token: String::new(),
        refresh_token: String::new(),
        expires_at: 0,
        ca_file,
        last_position: None,
    };
    client::apply_tokens(&mut credentials, &body)?;
    store.save(&credentials)?;
    let summary = json!({
        "server": credentials.server,
        "email": credentials.email,
        "credentials": store.path(),
        "access_token_expires_at": chrono::DateTime::from_timestamp(credentials.expires_at, 0),
    });
    match args.output {
        Format::Json => render::print(&summary, Format::Json),
        Format::Table => {
            crate::output::line(&format!(
                "signed in to {} as {} (session kept in {})",
                credentials.server,
                credentials.email,
                store.path().display()
            ));
            Ok(())
        }
    }
}

/// Ends the session at the API (a session already ended there is fine) and deletes the file.
///
/// # Errors
/// [`CliError::NotSignedIn`] without a session; when the API cannot be reached (the file is kept, so
/// the session can still be ended).
pub async fn logout(session: &SessionArgs) -> Result<()> {
    let mut api = Api::open(session)?;
    let ended = match api
        .send(Request::new(reqwest::Method::POST, ["auth", "logout"]))
        .await
    {
        Ok(_) => true,
        Err(error) if super::exit_code(&error) == 3 => false,
        Err(error) => return Err(error),
    };
    let store = api.session().map(|(store, _)| store.clone());
    if let Some(store) = &store {
        store.delete()?;
    }
    let summary = json!({"signed_out": true, "session_was_active": ended});
    match session.output {
        Format::Json => render::print(&summary, Format::Json),
        Format::Table => {
            crate::output::line(if ended {
                "signed out"
            } else {
                "signed out (the session had already ended)"
            });
            Ok(())
        }
    }
}
