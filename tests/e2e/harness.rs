//! Starting and stopping `edict serve` for a test, and talking to it.

pub use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The first admin every test server starts with.
pub const ADMIN_EMAIL: &str = "admin@example.com";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-password-123";

/// Which store a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A fresh PostgreSQL database on the shared server.
    Postgres,
    /// An SQLite file in a temporary directory (the embedded default).
    Sqlite,
}

// The PostgreSQL server tests create their databases on, bounded polling, and the NATS server tests share
// (each test uses its own prefix): the test kit's, under the names the tests use.
pub use edict_test_kit::eventually;
pub use edict_test_kit::nats::test_nats_url as shared_nats_url;
pub use edict_test_kit::test_database_url as admin_database_url;

/// How a test deployment is laid out.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// `EDICT_NATS_URL` (None: the in-process bus).
    pub nats_url: Option<String>,
    /// `EDICT_NATS_PREFIX`.
    pub nats_prefix: Option<String>,
    /// `--roles` of the main process (None: all).
    pub roles: Option<String>,
}

impl Layout {
    /// PostgreSQL + NATS with a fresh prefix, all roles in the main process.
    pub fn distributed() -> Self {
        Layout {
            nats_url: Some(shared_nats_url()),
            nats_prefix: Some(format!(
                "t{}_",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            )),
            roles: None,
        }
    }

    /// [`Layout::distributed`] with only `roles` in the main process.
    pub fn distributed_with(roles: &str) -> Self {
        Layout {
            roles: Some(roles.into()),
            ..Layout::distributed()
        }
    }
}

/// A running `edict serve`.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `http://127.0.0.1:<port>` of the agents' gateway (its WebSocket is `/ws` there).
    pub gateway: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The store URL the server runs on (to restart on the same data).
    pub database_url: String,
    /// The deployment layout.
    pub layout: Layout,
    /// More environment for every process of this deployment.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    extra: Vec<Child>,
    data_dir: tempfile::TempDir,
    postgres_database: Option<String>,
}

/// A port nothing listens on now.
/// A port free at the time of asking, chosen below the kernel's ephemeral range (32768 and up here): a port
/// the kernel hands out for `:0` is also the next one it may give an outgoing connection (to PostgreSQL, to
/// NATS, from any other test), which then holds it when the server binds ("Address already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Each test binary starts at its own offset so two binaries running at once seldom try the same ports.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let offset = std::process::id() % 22_000;
    for _ in 0..200 {
        let step = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = 10_000 + ((offset + step * 7) % 22_000) as u16;
        if claim(port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Claims `port` for this test process across every test process of the run (a file created only if
/// absent under the temporary directory; claims older than 15 minutes are stale and taken over): two
/// tests that both found the port free would otherwise start servers on it, and the loser could take
/// the winner's `/health/ready` for its own.
fn claim(port: u16) -> bool {
    let dir = std::env::temp_dir().join("edict-e2e-ports");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(port.to_string());
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .is_ok()
    };
    if create() {
        return true;
    }
    let stale = std::fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age > Duration::from_secs(15 * 60));
    stale && std::fs::remove_file(&path).is_ok() && create()
}

fn unique_name() -> String {
    format!("edict_e2e_{}", uuid::Uuid::new_v4().simple())
}

async fn psql(url: &str, sql: &str) {
    let status = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .stdout(Stdio::null())
        .status()
        .await
        .expect("run psql");
    assert!(status.success(), "psql failed: {sql}");
}

/// How a started server process came out of its start.
enum Ready {
    Yes,
    Exited(std::process::ExitStatus),
    TimedOut,
}

impl TestApp {
    /// Starts a server on a fresh store, with the in-process bus.
    pub async fn spawn(store: Store) -> TestApp {
        Self::spawn_with(store, Layout::default()).await
    }

    /// Starts a server on a fresh store with `layout`.
    pub async fn spawn_with(store: Store, layout: Layout) -> TestApp {
        Self::spawn_with_env(store, layout, Vec::new()).await
    }

    /// [`TestApp::spawn`] with more environment, as `(name, value)` pairs.
    pub async fn spawn_setting(store: Store, vars: &[(&str, &str)]) -> TestApp {
        Self::spawn_with_vars(store, Layout::default(), vars).await
    }

    /// [`TestApp::spawn_with_env`] with the environment as `(name, value)` pairs.
    pub async fn spawn_with_vars(store: Store, layout: Layout, vars: &[(&str, &str)]) -> TestApp {
        let env = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Self::spawn_with_env(store, layout, env.collect()).await
    }

    /// Starts a server on a fresh store with `layout` and more environment (for every process).
    pub async fn spawn_with_env(
        store: Store,
        layout: Layout,
        env: Vec<(String, String)>,
    ) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let (database_url, postgres_database) = match store {
            Store::Postgres => {
                let admin = admin_database_url();
                let name = unique_name();
                psql(&admin, &format!("CREATE DATABASE {name}")).await;
                let (prefix, _) = admin.rsplit_once('/').expect("database url has a path");
                (format!("{prefix}/{name}"), Some(name))
            }
            Store::Sqlite => (
                format!("sqlite://{}", data_dir.path().join("edict.db").display()),
                None,
            ),
        };
        let mut app = TestApp {
            base: String::new(),
            gateway: String::new(),
            client: reqwest::Client::new(),
            database_url,
            layout,
            env,
            child: None,
            extra: Vec::new(),
            data_dir,
            postgres_database,
        };
        app.start().await;
        app
    }

    /// Starts (or restarts) the server process on this app's store.
    /// A port taken between choosing it and binding it makes the server exit at once: it is started again on
    /// other ports (the gateway's too when this is the first start), up to three times.
    pub async fn start(&mut self) {
        let first_start = self.gateway.is_empty();
        for attempt in 1..=3 {
            let port = free_port();
            self.base = format!("http://127.0.0.1:{port}");
            // The gateway keeps its address across restarts: agents reconnect to where they enrolled.
            if first_start {
                self.gateway = format!("http://127.0.0.1:{}", free_port());
            }
            let roles = self.layout.roles.clone();
            let child = self
                .command(roles.as_deref(), port)
                .spawn()
                .expect("spawn edict serve");
            self.child = Some(child);
            match self.wait_ready().await {
                Ready::Yes => return,
                // Its stderr (inherited) says why; the next attempt takes other ports.
                Ready::Exited(_) if attempt < 3 => {}
                Ready::Exited(status) => {
                    panic!(
                        "edict serve exited before it was ready on {}: {status}",
                        self.base
                    )
                }
                Ready::TimedOut => break,
            }
        }
        panic!("edict serve did not become ready on {}", self.base);
    }

    /// Waits until the server answers ready, exits, or 30 s pass.
    async fn wait_ready(&mut self) -> Ready {
        let url = format!("{}/health/ready", self.base);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(&url).send().await
                && r.status().is_success()
            {
                return Ready::Yes;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Ready::Exited(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ready::TimedOut
    }

    /// The `edict serve` command of this deployment with `roles`, listening on `port`.
    pub fn command(&self, roles: Option<&str>, port: u16) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edict"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env(
                "EDICT_GATEWAY_LISTEN",
                self.gateway.trim_start_matches("http://"),
            )
            .env("EDICT_DATABASE_URL", &self.database_url)
            .env("EDICT_DATA_DIR", self.data_dir.path())
            .env("EDICT_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("EDICT_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("EDICT_SCHEDULER_INTERVAL_MS", "200")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(roles) = roles {
            command.args(["--roles", roles]);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        if let Some(url) = &self.layout.nats_url {
            command.env("EDICT_NATS_URL", url);
        }
        if let Some(prefix) = &self.layout.nats_prefix {
            command.env("EDICT_NATS_PREFIX", prefix);
        }
        command
    }

    /// The agents' WebSocket on the gateway: `ws://127.0.0.1:<port>/ws`.
    pub fn gateway_ws(&self) -> String {
        format!("{}/ws", self.gateway.replace("http://", "ws://"))
    }

    /// The process id of the main server process (to read its memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("server running")
    }

    /// The data directory of the embedded store.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Starts one more process of this deployment with `roles` (no HTTP API unless `api` is a role);
    /// answers its index for [`TestApp::kill_extra`].
    pub fn spawn_extra(&mut self, roles: &str) -> usize {
        let child = self
            .command(Some(roles), free_port())
            .spawn()
            .expect("spawn edict serve");
        self.extra.push(child);
        self.extra.len() - 1
    }

    /// Starts one more process with `roles` and more environment; answers its index.
    pub fn spawn_extra_with(&mut self, roles: &str, env: &[(&str, &str)]) -> usize {
        let mut command = self.command(Some(roles), free_port());
        for (name, value) in env {
            command.env(name, value);
        }
        self.extra.push(command.spawn().expect("spawn edict serve"));
        self.extra.len() - 1
    }

    /// kill -9 of an extra process.
    pub async fn kill_extra(&mut self, index: usize) {
        let child = &mut self.extra[index];
        child.start_kill().expect("kill -9");
        child.wait().await.expect("wait for the killed process");
    }

    /// Sends SIGTERM and waits for a clean exit; answers the exit status.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        signal(child.id().expect("pid"), Signal::SIGTERM);
        tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .expect("server exits within 15 s of SIGTERM")
            .expect("wait for server")
    }

    /// `POST /api/v1/auth/login` with `email` and `password`; answers status and body.
    pub async fn sign_in(&self, email: &str, password: &str) -> (StatusCode, Value) {
        let body = json!({"email": email, "password": password});
        let path = "/api/v1/auth/login";
        self.call(Method::POST, path, None, Some(body)).await
    }

    /// Signs in; answers the access token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let (status, body) = self.sign_in(email, password).await;
        assert_eq!(status, StatusCode::OK, "login as {email}: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// The first admin's access token.
    pub async fn admin(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// The first admin's access token and a second org_admin's (approvals need someone other than the
    /// author).
    pub async fn admins(&self) -> (String, String) {
        let admin = self.admin().await;
        let (_, second) = self.user(&admin, "second", &["org_admin"]).await;
        (admin, second)
    }

    /// Creates a user with `roles`; answers their (id, email, password).
    pub async fn account(
        &self,
        admin: &str,
        name: &str,
        roles: &[&str],
    ) -> (String, String, String) {
        let email = format!(
            "{name}-{}@example.com",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let password = format!("{name}-password-123");
        let body = json!({"email": email, "name": name, "password": password, "roles": roles});
        let (status, body) = self.post("/api/v1/users", admin, body).await;
        assert_eq!(status, StatusCode::OK, "create user {name}: {body}");
        let id = body["id"].as_str().expect("user id").to_owned();
        (id, email, password)
    }

    /// Creates a user with `roles` and signs them in; answers (user id, access token).
    pub async fn user(&self, admin: &str, name: &str, roles: &[&str]) -> (String, String) {
        let (id, email, password) = self.account(admin, name, roles).await;
        (id, self.login(&email, &password).await)
    }

    /// One request; answers status and JSON body (Null when empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let response = self.send(method, path, token, body, &[]).await;
        let status = response.status();
        let text = response.text().await.expect("response body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// One request with extra headers; answers the raw response.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("send request")
    }

    /// The convergence view of `team` (`GET /api/v1/teams/{team}/convergence`), whatever its status.
    pub async fn convergence(&self, token: &str, team: &str) -> Value {
        let path = format!("/api/v1/teams/{team}/convergence");
        self.call(Method::GET, &path, Some(token), None).await.1
    }

    /// POST helper asserting success; answers the body.
    pub async fn ok(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, response) = self.call(Method::POST, path, Some(token), Some(body)).await;
        assert!(status.is_success(), "POST {path}: {status} {response}");
        response
    }

    /// POST asserting success; answers the `id` of what it created.
    pub async fn created(&self, path: &str, token: &str, body: Value) -> String {
        let response = self.ok(path, token, body).await;
        response["id"].as_str().expect("an id").to_owned()
    }

    /// POST of `body` with `token`; answers status and JSON body, whatever the status.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// POST of `body` with no token; answers status and JSON body, whatever the status.
    pub async fn post_anonymous(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, None, Some(body)).await
    }

    /// Starts a device-code login for `machine_id` named `machine_name` (`POST /api/v1/device/code`).
    pub async fn device_code(&self, machine_id: &str, machine_name: &str) -> (StatusCode, Value) {
        let body = json!({"machine_id": machine_id, "machine_name": machine_name});
        self.post_anonymous("/api/v1/device/code", body).await
    }

    /// PUT of `body` with `token`; answers status and JSON body, whatever the status.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    /// PATCH of `body` with `token`; answers status and JSON body, whatever the status.
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    /// GET with `token`, asserting 200 OK; answers the JSON body.
    pub async fn fetch(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.get(path, token).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// DELETE with `token`; answers status and JSON body, whatever the status.
    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// GET with `token`; answers status and JSON body, whatever the status.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// A new team named `name`; answers its id.
    pub async fn team(&self, admin: &str, name: &str) -> String {
        self.created("/api/v1/teams", admin, json!({"name": name}))
            .await
    }

    /// Adds `user` (an id) to `team` with `role` (`member`, `team_admin`).
    pub async fn add_member(&self, admin: &str, team: &str, user: &str, role: &str) {
        let path = format!("/api/v1/teams/{team}/members");
        self.ok(&path, admin, json!({"user_id": user, "role": role}))
            .await;
    }

    /// Enrolls an agent of the user holding `token` for `machine_id` named `machine_name`
    /// (`POST /api/v1/agents`); answers the enrollment (`id`, `token`).
    pub async fn enroll_agent(&self, token: &str, machine_id: &str, machine_name: &str) -> Value {
        let body = json!({"machine_id": machine_id, "machine_name": machine_name});
        self.ok("/api/v1/agents", token, body).await
    }

    /// An enrollment token created with `body` (`{"user_id": …, "uses": …}`); answers the token.
    pub async fn enrollment_token(&self, admin: &str, body: Value) -> String {
        let created = self.ok("/api/v1/enrollment-tokens", admin, body).await;
        created["token"].as_str().expect("token").to_owned()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        for child in &mut self.extra {
            let _ = child.start_kill();
        }
        if let Some(name) = &self.postgres_database {
            // Best effort: a leftover database does not fail a test.
            let _ = std::process::Command::new("psql")
                .arg(admin_database_url())
                .args([
                    "-qAtc",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Generates one `#[tokio::test]` per store for a test function taking a [`Store`].
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::harness::Store::Postgres).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::harness::Store::Sqlite).await;
                }
            )*
        }
    };
}

/// A valid rule spec.
pub fn rule_spec(name: &str, layer: &str) -> Value {
    json!({
        "name": name,
        "description": "a rule written by a test",
        "layer": layer,
        "content": format!("- {name}: always run the tests.\n"),
        "category": "testing",
        "priority": 1,
        "tags": ["test"],
        "triggers": [],
    })
}

/// Drafts `spec`, submits it and has `second` approve it; answers the rule's id.
pub async fn approve(app: &TestApp, admin: &str, second: &str, spec: Value) -> String {
    let rule = app.created("/api/v1/rules", admin, spec).await;
    app.ok(&format!("/api/v1/rules/{rule}/submit"), admin, json!({}))
        .await;
    app.ok(&format!("/api/v1/rules/{rule}/approve"), second, json!({}))
        .await;
    rule
}

/// An approved team-layer rule whose content is `Always {name}.`; answers its id.
pub async fn approved_rule(app: &TestApp, admin: &str, second: &str, name: &str) -> String {
    let mut spec = rule_spec(name, "team");
    spec["content"] = json!(format!("Always {name}."));
    approve(app, admin, second, spec).await
}

/// Attaches `rule` to `team` with `enforcement` (`{"mode": "block"}`, say).
pub async fn attach_with(app: &TestApp, admin: &str, team: &str, rule: &str, enforcement: Value) {
    app.ok(
        &format!("/api/v1/teams/{team}/rules"),
        admin,
        json!({"rule_id": rule, "enforcement": enforcement}),
    )
    .await;
}

/// A temporary enforcement decided within `secs` seconds.
pub fn temporary(secs: u64) -> Value {
    json!({"mode": "temporary", "temporary_timeout_secs": secs})
}

/// The enforcement `{"mode": mode}` (`block`, `warning`).
pub fn mode(mode: &str) -> Value {
    json!({"mode": mode})
}

/// Attaches `rule` to `team`, blocking.
pub async fn attach(app: &TestApp, admin: &str, team: &str, rule: &str) {
    attach_with(app, admin, team, rule, mode("block")).await;
}

/// A new team named `name` with `member` (a user id) as its member; answers the team's id.
pub async fn team_with_member(app: &TestApp, admin: &str, name: &str, member: &str) -> String {
    let team = app.team(admin, name).await;
    app.add_member(admin, &team, member, "member").await;
    team
}

/// Two free gateway addresses on loopback, and the gateway URLs an agent is given for them
/// (`ws://…/ws`, comma separated).
pub fn two_gateways() -> ([String; 2], String) {
    let gateways = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let urls = gateways
        .iter()
        .map(|g| format!("ws://{g}/ws"))
        .collect::<Vec<_>>()
        .join(",");
    (gateways, urls)
}

/// The upgrade request of an agent holding `token` to `app`'s gateway.
pub fn gateway_request(
    app: &TestApp,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.gateway_ws().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
        .headers_mut()
        .insert("edict-protocol", "1".parse().unwrap());
    request
}

/// Runs `login` (an `edict-agent login … --output json` command), asserting it succeeds; answers the
/// agent id it enrolled.
pub async fn logged_in(mut login: Command) -> String {
    let output = login.stdout(Stdio::piped()).output().await.unwrap();
    assert!(output.status.success(), "edict-agent login");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    answer["agent_id"].as_str().unwrap().to_owned()
}

/// Sends a `hello` with no holdings (protocol 1) on an agent's socket.
pub async fn hello<S>(socket: &mut S)
where
    S: futures::Sink<tokio_tungstenite::tungstenite::Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    use futures::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            json!({"type": "hello", "protocol": 1, "agent_version": "test", "holdings": []})
                .to_string(),
        ))
        .await
        .unwrap();
}

/// The two ends of a relay between an agent and a gateway: the agent's connection accepted on
/// `stream`, and one opened to `upstream` with the agent's upgrade headers (its bearer token, the
/// protocol version) passed on. `None` when either end fails.
pub async fn relay_ends(
    stream: tokio::net::TcpStream,
    upstream: String,
) -> Option<(
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let mut headers = None;
    // The handshake callback's error type (an HTTP response) is tungstenite's, not ours.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        headers = Some(request.headers().clone());
        Ok(response)
    };
    let agent = tokio_tungstenite::accept_hdr_async(stream, callback)
        .await
        .ok()?;
    let mut request = upstream.into_client_request().unwrap();
    for (name, value) in headers.iter().flatten() {
        if !name.as_str().starts_with("sec-websocket")
            && !matches!(name.as_str(), "host" | "upgrade" | "connection")
        {
            request.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let (gateway, _) = tokio_tungstenite::connect_async(request).await.ok()?;
    Some((agent, gateway))
}

/// `edict serve` on an embedded store in `data`, its API on `port` and its gateway on `gateway_port`,
/// with the first admin and quiet logs: what a test that starts its own server (TLS, keys) adds to.
pub fn serve_on_sqlite(data: &std::path::Path, port: u16, gateway_port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edict"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("EDICT_GATEWAY_LISTEN", format!("127.0.0.1:{gateway_port}"))
        .env(
            "EDICT_DATABASE_URL",
            format!("sqlite://{}", data.join("edict.db").display()),
        )
        .env("EDICT_DATA_DIR", data)
        .env("EDICT_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("EDICT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// Asserts the finished command `what` succeeded, showing its stderr if not.
pub fn assert_ran(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits up to 30 s until `base` (an `https://` server) answers ready through `client`; panics if not.
pub async fn ready_over_https(client: &reqwest::Client, base: &str) {
    let url = format!("{base}/health/ready");
    let ready = eventually(Duration::from_secs(30), || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(
        ready.is_some(),
        "edict serve did not become ready over HTTPS"
    );
}

/// The `edict-agent` binary, built beside `edict` by a workspace build.
pub fn agent_binary() -> std::path::PathBuf {
    let edict = std::path::PathBuf::from(env!("CARGO_BIN_EXE_edict"));
    let agent = edict.with_file_name("edict-agent");
    assert!(
        agent.exists(),
        "{} is missing: build the workspace (`cargo build --workspace`, as scripts/test does)",
        agent.display()
    );
    agent
}

/// A nats-server with JetStream of one test, on a free port with its own store directory, so the test
/// can kill and restart it without touching the shared one.
pub struct PrivateNats {
    /// Its port on 127.0.0.1.
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateNats {
    /// Starts it and waits until it accepts connections.
    pub async fn start() -> PrivateNats {
        let mut nats = PrivateNats {
            port: free_port(),
            store: tempfile::tempdir().expect("nats store dir"),
            child: None,
        };
        nats.restart().await;
        nats
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether it runs (started and not killed since).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// kill -9.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("kill -9 nats-server");
            child.wait().await.expect("wait for nats-server");
        }
    }

    /// Starts it again on the same port and store (after [`PrivateNats::kill`]), and waits until it
    /// accepts connections.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server already runs");
        let port = self.port.to_string();
        let args = ["-js", "-a", "127.0.0.1", "-p", &port, "-sd"];
        let store = self.store.path().as_os_str();
        let args = args.iter().map(std::ffi::OsStr::new).chain([store]);
        self.child = Some(nats_server(args, self.port).await);
    }
}

/// `/usr/sbin/nats-server ARGS`, once it accepts connections on `port` (within 15 s).
pub async fn nats_server<I, S>(args: I, port: u16) -> Child
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let child = Command::new("/usr/sbin/nats-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn /usr/sbin/nats-server");
    let up = eventually(Duration::from_secs(15), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await;
    assert!(up.is_some(), "nats-server listens on {port}");
    child
}

/// One machine of the end-to-end tests: a temporary HOME, organization file and data directory for a real
/// `edict-agent`, and its daemon once started.
pub struct Machine {
    /// The machine's directory (`home/`, `etc/CLAUDE.md`, `data/`).
    pub dir: tempfile::TempDir,
    /// The running `edict-agent run`, if started.
    pub daemon: Option<Child>,
}

impl Machine {
    /// A machine with its directories, not enrolled yet.
    pub fn new() -> Machine {
        let machine = Machine {
            dir: tempfile::tempdir().unwrap(),
            daemon: None,
        };
        std::fs::create_dir_all(machine.home().join(".claude")).unwrap();
        machine
    }

    /// Its HOME.
    pub fn home(&self) -> std::path::PathBuf {
        self.dir.path().join("home")
    }

    /// The team layer's file, `~/.claude/CLAUDE.md`.
    pub fn team_file(&self) -> std::path::PathBuf {
        self.home().join(".claude").join("CLAUDE.md")
    }

    /// The team file's text (empty while there is none).
    pub fn team_text(&self) -> String {
        std::fs::read_to_string(self.team_file()).unwrap_or_default()
    }

    /// Writes `text` over the team file, as a user editing it would.
    pub fn write_team(&self, text: impl AsRef<[u8]>) {
        std::fs::write(self.team_file(), text).unwrap();
    }

    /// The team file's text once `pred` holds of it, within `secs` seconds.
    pub async fn team_file_when(&self, secs: u64, pred: impl Fn(&str) -> bool) -> Option<String> {
        eventually(Duration::from_secs(secs), || async {
            let text = self.team_text();
            pred(&text).then_some(text)
        })
        .await
    }

    /// The team file's text once it contains `needle`, within 20 s.
    pub async fn team_file_with(&self, needle: &str) -> Option<String> {
        self.team_file_when(20, |text| text.contains(needle)).await
    }

    /// `edict-agent` with this machine's directories.
    pub fn command(&self) -> Command {
        let mut command = Command::new(agent_binary());
        command
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--home")
            .arg(self.home())
            .arg("--org-file")
            .arg(self.dir.path().join("etc").join("CLAUDE.md"))
            .env("EDICT_AGENT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command
    }

    /// `edict-agent login --enrollment-token` against the API at `api`; answers the agent id.
    pub async fn enroll_with_token(&self, api: &str, token: &str) -> String {
        let mut login = self.command();
        login
            .args(["login", "--server", api, "--output", "json"])
            .args(["--enrollment-token", token]);
        logged_in(login).await
    }

    /// A new machine enrolled with an enrollment token `admin` creates with `body`; answers it (not
    /// running yet) and its agent id.
    pub async fn enrolled(app: &TestApp, admin: &str, body: Value) -> (Machine, String) {
        let machine = Machine::new();
        let token = app.enrollment_token(admin, body).await;
        let agent = machine.enroll_with_token(&app.base, &token).await;
        (machine, agent)
    }

    /// Starts `edict-agent run`.
    pub fn run(&mut self) {
        self.run_with(&[]);
    }

    /// Starts `edict-agent run` with `args`.
    pub fn run_with(&mut self, args: &[&str]) {
        self.daemon = Some(self.command().arg("run").args(args).spawn().unwrap());
    }

    /// Runs `edict-agent` with `args` to its end, capturing its stdout.
    pub async fn output(&self, args: &[&str]) -> std::process::Output {
        let mut command = self.command();
        command.args(args).stdout(Stdio::piped());
        command.output().await.unwrap()
    }

    /// `edict-agent status --output json`.
    pub async fn status(&self) -> Value {
        let output = self.output(&["status", "--output", "json"]).await;
        assert!(output.status.success(), "edict-agent status");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// kill -9 of the daemon.
    pub async fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.start_kill().unwrap();
            daemon.wait().await.unwrap();
        }
    }
}

/// Sends `signal` to the process `pid` (one the test started); panics when it cannot.
pub fn signal(pid: u32, signal: Signal) {
    let raw = i32::try_from(pid).expect("a pid fits an i32");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal)
        .unwrap_or_else(|error| panic!("{signal} to {pid}: {error}"));
}
