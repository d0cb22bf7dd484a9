//! Calls to the API on behalf of the admin CLI: who is signed in (the stored session, or
//! `--server`/`EDICT_SERVER` and `EDICT_TOKEN`), refreshing the session when its access token has
//! expired or a call answers 401, and turning problem answers (RFC 9457) into [`CliError`]s (see
//! [`super::error`]) that carry the exit status.

use super::credentials::{Credentials, Store};
pub use super::error::CliError;
use crate::api_client::{self, ServerArgs};
use anyhow::{Context, Result};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Seconds before its expiry that an access token is refreshed rather than sent.
const REFRESH_MARGIN_SECS: i64 = 10;

/// Where the API is, who calls it and how the answer is printed (every admin command takes these,
/// before or after its action).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Session")]
pub struct SessionArgs {
    /// The Edict API; overrides the signed-in server (whose session is used only for that server).
    #[arg(long, env = "EDICT_SERVER", global = true)]
    pub server: Option<String>,
    /// An access token to use instead of the signed-in session (CI scripts); never refreshed.
    #[arg(long, env = "EDICT_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM bundle of CA certificates to trust for an `https://` server (default: the one given at
    /// login).
    #[arg(long, env = "EDICT_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// `table` (aligned columns for lists, `key: value` for one object) or `json` (the API's
    /// answer, pretty).
    #[arg(long, global = true, value_enum, default_value_t)]
    pub output: super::render::Format,
    /// Send a command only if the resource is still at this version (a `version` or `ETag` from an
    /// earlier answer); a 409 (exit 5) otherwise.
    #[arg(long, global = true, value_name = "VERSION")]
    pub if_match: Option<u64>,
}

/// One call: a method, the path below `/api/v1/` as segments (each escaped), query and body.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    body: Option<Value>,
    /// The read takes `min_position`: default it to the session's last command.
    fresh: bool,
}

impl Request {
    /// A request of `method` to `/api/v1/<segments…>`.
    pub fn new<S: ToString>(method: Method, segments: impl IntoIterator<Item = S>) -> Self {
        Request {
            method,
            segments: segments.into_iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
            fresh: false,
        }
    }

    /// A GET.
    pub fn get<S: ToString>(segments: impl IntoIterator<Item = S>) -> Self {
        Self::new(Method::GET, segments)
    }

    /// A POST with a JSON body.
    pub fn post<S: ToString>(segments: impl IntoIterator<Item = S>, body: Value) -> Self {
        Self::new(Method::POST, segments).body(body)
    }

    /// Sets the JSON body.
    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Adds a query parameter when it has a value.
    pub fn query(mut self, name: &str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name.to_owned(), value.to_string()));
        }
        self
    }

    /// A read that takes `min_position`: `explicit`, else the last command this session sent.
    pub fn fresh(mut self, explicit: Option<i64>) -> Self {
        self.fresh = explicit.is_none();
        self.query("min_position", explicit)
    }

    fn is_command(&self) -> bool {
        self.method != Method::GET
    }
}

/// How calls are authenticated.
enum Auth {
    /// `EDICT_TOKEN`: sent as it is.
    Token(String),
    /// The stored session, refreshed as needed.
    Stored(Store, Credentials),
}

/// A signed-in connection to the API.
pub struct Api {
    client: reqwest::Client,
    base: reqwest::Url,
    auth: Auth,
    if_match: Option<u64>,
}

impl Api {
    /// The API and credentials `args` and the stored session name.
    ///
    /// # Errors
    /// [`CliError::NotSignedIn`] without a server or credentials for it; when the URL or CA file is
    /// not acceptable.
    pub fn open(args: &SessionArgs) -> Result<Api> {
        let store = Store::from_env()?;
        let stored = store.load()?;
        let server = match (&args.server, &stored) {
            (Some(server), _) => server.clone(),
            (None, Some(credentials)) => credentials.server.clone(),
            (None, None) => return Err(CliError::NotSignedIn(String::new()).into()),
        };
        let same_server =
            |c: &Credentials| c.server.trim_end_matches('/') == server.trim_end_matches('/');
        let ca_file = args.ca_file.clone().or_else(|| {
            stored
                .as_ref()
                .filter(|c| same_server(c))
                .and_then(|c| c.ca_file.clone())
        });
        let auth = match (&args.token, stored) {
            (Some(token), _) => Auth::Token(token.clone()),
            // A session is sent only to the server it was opened on.
            (None, Some(credentials)) if same_server(&credentials) => {
                Auth::Stored(store, credentials)
            }
            (None, _) => return Err(CliError::NotSignedIn(format!(" to {server}")).into()),
        };
        Ok(Api {
            client: api_client::client(&server, &ServerArgs { ca_file })?,
            base: base_url(&server)?,
            auth,
            if_match: args.if_match,
        })
    }

    /// Sends `request`; answers the JSON body (`null` when empty). A command's `position` is kept
    /// for the session's next reads.
    ///
    /// # Errors
    /// A [`CliError`] for a problem answer or a refused session; when the API cannot be reached.
    pub async fn send(&mut self, mut request: Request) -> Result<Value> {
        if let Auth::Stored(_, credentials) = &self.auth
            && credentials.expires_soon(chrono::Utc::now().timestamp(), REFRESH_MARGIN_SECS)
        {
            self.refresh().await?;
        }
        if request.fresh
            && let Auth::Stored(_, credentials) = &self.auth
            && let Some(position) = credentials.last_position
        {
            request = request.query("min_position", Some(position));
        }
        let mut response = self.attempt(&request).await?;
        if response.status() == StatusCode::UNAUTHORIZED && matches!(self.auth, Auth::Stored(..)) {
            self.refresh().await?;
            response = self.attempt(&request).await?;
        }
        let status = response.status();
        let json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let text = response.text().await.context("cannot read the answer")?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else if json {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        let body = CliError::check(status, body)?;
        if request.is_command()
            && let Some(position) = body.get("position").and_then(Value::as_i64)
            && let Auth::Stored(store, credentials) = &mut self.auth
        {
            credentials.last_position = Some(position.max(credentials.last_position.unwrap_or(0)));
            store.save(credentials)?;
        }
        Ok(body)
    }

    async fn attempt(&self, request: &Request) -> Result<reqwest::Response> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("the server URL cannot take a path"))?
            .extend(&request.segments);
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        let token = match &self.auth {
            Auth::Token(token) => token,
            Auth::Stored(_, credentials) => &credentials.access_token,
        };
        let mut builder = self
            .client
            .request(request.method.clone(), url)
            .bearer_auth(token);
        if request.is_command()
            && let Some(version) = self.if_match
        {
            builder = builder.header("if-match", format!("\"{version}\""));
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        builder
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))
    }

    /// Exchanges the refresh token for a new pair, under the lock, unless another process already
    /// did (then its pair is taken).
    async fn refresh(&mut self) -> Result<()> {
        let Auth::Stored(store, credentials) = &mut self.auth else {
            return Err(CliError::SessionExpired.into());
        };
        let _lock = store.lock()?;
        match store.load()? {
            Some(current) if current.access_token != credentials.access_token => {
                *credentials = current;
                return Ok(());
            }
            Some(_) => {}
            None => return Err(CliError::NotSignedIn(String::new()).into()),
        }
        let mut url = self.base.clone();
        url.set_path(&format!("{}/auth/refresh", self.base.path()));
        let response = self
            .client
            .post(url)
            .json(&json!({"refresh_token": credentials.refresh_token}))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST {
            return Err(CliError::SessionExpired.into());
        }
        let body = CliError::check(status, response.json().await.unwrap_or(Value::Null))?;
        apply_tokens(credentials, &body)?;
        store.save(credentials)
    }

    /// The stored session and its store (`None` with `EDICT_TOKEN`).
    pub fn session(&self) -> Option<(&Store, &Credentials)> {
        match &self.auth {
            Auth::Stored(store, credentials) => Some((store, credentials)),
            Auth::Token(_) => None,
        }
    }
}

/// `<server>/api/v1`.
///
/// # Errors
/// When `server` is not a URL.
pub fn base_url(server: &str) -> Result<reqwest::Url> {
    let mut url =
        reqwest::Url::parse(server).with_context(|| format!("invalid server URL {server}"))?;
    let path = format!("{}/api/v1", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    Ok(url)
}

/// Takes the tokens of a login or refresh answer (`access_token`, `refresh_token`, `expires_in`).
///
/// # Errors
/// When the answer lacks them.
pub fn apply_tokens(credentials: &mut Credentials, answer: &Value) -> Result<()> {
    let text = |name: &str| {
        answer[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the API's answer has no {name}"))
    };
    credentials.access_token = text("access_token")?;
    credentials.refresh_token = text("refresh_token")?;
    let expires_in = answer["expires_in"].as_i64().unwrap_or(0);
    credentials.expires_at = chrono::Utc::now().timestamp().saturating_add(expires_in);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_is_below_the_servers_path() {
        assert_eq!(
            base_url("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080/api/v1"
        );
        assert_eq!(
            base_url("https://h/edict/").unwrap().as_str(),
            "https://h/edict/api/v1"
        );
    }
}
