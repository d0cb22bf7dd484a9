//! `edict-bench`: measurements that print figures (the speed targets are met here, not in timed tests).
//! Not part of the product: a workspace crate of its own (`tests/bench`), built with
//! `cargo build --release -p edict -p edict-agent -p edict-bench`; the benches that run Edict as child
//! processes take the `edict` and `edict-agent` binaries beside this one.
//!
//! Layout: this file holds the command line, what the benches share (the scratch PostgreSQL server,
//! sign-in, the rule lifecycle `Fleet`) and `edict-bench commands`; `agents.rs` (with `agents/sim.rs`
//! and `agents/revert.rs`), `audit.rs`, `logins.rs`, `loopback.rs` and `projections.rs` the others.
//!
//! `edict-bench commands` starts Edict in this process on each store (a scratch PostgreSQL database and a
//! temporary SQLite file), drives its HTTP API with concurrent clients, measures raw appends at the
//! store, and runs pgbench with the same transaction shape as the ceiling.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use edict::app;
use edict::output::{self, OutputFormat};
use edict_infrastructure::settings::{BootstrapAdmin, Secret, Settings};
use edict_infrastructure::store::Database;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

mod agents;
mod appends;
mod audit;
mod logins;
mod loopback;
mod projections;

/// Measures Edict on this machine (see docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "edict-bench", version, about)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "EDICT_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: BenchCommand,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    edict_infrastructure::telemetry::init(cli.log_json, "info");
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error);
            std::process::ExitCode::FAILURE
        }
    }
}

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Command throughput and latency through the HTTP API, raw appends at the store, and the pgbench
    /// ceiling, on PostgreSQL and on SQLite.
    Commands(CommandsArgs),
    /// Live catch-up and rebuild rates of the team_rulesets projection over a generated history, and
    /// whether both produce the same read model.
    ///
    /// Seeds --events events made by the real Rule and Team aggregates (about 2,000 rules, 200 teams,
    /// then review cycles, enforcement changes, attach/detach) into a scratch store, times a fresh
    /// runner's catch_up() from the start and then rebuild(), and compares their content hashes.
    Rebuild(projections::RebuildArgs),
    /// Lag from a command's response to its event being applied by each read model, under a fixed
    /// offered load, with the API, the relay and the five projectors on PostgreSQL and NATS.
    ///
    /// A sampler reads projection_state every 2 ms; each command's lag in a projection is the first
    /// sample whose checkpoint covers the command's event, minus the instant its response arrived.
    Lag(projections::LagArgs),
    /// How fast the tamper-evidence chain is written, verified (goal: 1,000,000 events in at most
    /// 10 s) and exported, over --events seeded events.
    Verify(audit::VerifyArgs),
    /// Propagation latency from a command to N simulated agents' `applied`, gateway memory per idle
    /// connection, and a reconnect storm (kill and restart the gateway), with the server as child
    /// processes on PostgreSQL and NATS (see docs/benchmarks.md).
    Agents(agents::AgentsArgs),
    /// The real edict-agent: detect → revert latency of a block-mode section, idle RSS and CPU.
    AgentRevert(agents::revert::AgentRevertArgs),
    /// Good sign-ins' latency (p50/p99) alone and while bad sign-ins arrive at --attack-rate from
    /// other addresses (see docs/benchmarks.md).
    Logins(logins::LoginsArgs),
    /// The floor under `bench agents` on this machine: the same push (a frame to each of N loopback
    /// TCP connections, an answer from each) with nothing of Edict in it.
    Loopback(loopback::LoopbackArgs),
}

/// The PostgreSQL server a bench creates (and drops) its scratch databases on.
#[derive(Debug, Args)]
pub struct ScratchPostgres {
    /// Server of the scratch databases (one is created and dropped per run).
    #[arg(
        long,
        env = "EDICT_TEST_DATABASE_URL",
        default_value = edict_test_kit::DEFAULT_TEST_DATABASE_URL
    )]
    pub postgres_url: String,
}

impl ScratchPostgres {
    /// Creates a scratch database named after `name`: answers it (open and migrated) and its URL.
    pub async fn open(&self, name: &str) -> Result<(Database, String)> {
        edict_test_kit::create_isolated_postgres(&self.postgres_url, name)
            .await
            .context("cannot create a scratch PostgreSQL database")
    }

    /// Creates a scratch database named after `name` (closed again); answers its URL.
    pub async fn create(&self, name: &str) -> Result<String> {
        let (database, url) = self.open(name).await?;
        database.close().await;
        Ok(url)
    }

    /// Drops the scratch database at `url` (best effort: a warning when it cannot).
    pub async fn drop(&self, url: &str) {
        if let Err(error) = edict_test_kit::drop_isolated_postgres(&self.postgres_url, url).await {
            tracing::warn!(%error, "cannot drop the scratch database");
        }
    }
}

/// The first admin of every Edict a bench starts.
const ADMIN_EMAIL: &str = "bench-admin@example.com";
const ADMIN_PASSWORD: &str = "bench-password-1";

/// Settings of an Edict on a free loopback port with its data under `data_dir` and the bench's first
/// admin.
fn bench_settings(data_dir: std::path::PathBuf) -> Result<Settings> {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut settings = Settings::embedded(data_dir, listen);
    settings.admin = Some(BootstrapAdmin {
        email: ADMIN_EMAIL.into(),
        password: Secret::new(ADMIN_PASSWORD.into()),
    });
    Ok(settings)
}

/// Serves `endpoint` on `listen` until the sender answered is used or dropped (then 5 s to drain).
fn serve_until_stopped(
    listen: SocketAddr,
    endpoint: impl poem::Endpoint + 'static,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        poem::Server::new(poem::listener::TcpListener::bind(listen))
            .run_with_graceful_shutdown(
                endpoint,
                async {
                    let _ = stopped.await;
                },
                Some(Duration::from_secs(5)),
            )
            .await
    });
    (stop, task)
}

/// Eight hex digits naming what one run creates.
fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Prints `report` as JSON, or as text with `print`.
fn emit<T: Serialize>(format: OutputFormat, report: &T, print: impl FnOnce(&T)) -> Result<()> {
    match format {
        OutputFormat::Json => output::json(report)?,
        OutputFormat::Text => print(report),
    }
    Ok(())
}

/// POSTs `body` to `{base}{path}` with `token`; answers the JSON body, or fails naming the status.
async fn post_json(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: &Value,
) -> Result<Value> {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{path}: {status} {body}");
    }
    Ok(body)
}

/// Options of `edict-bench commands`.
#[derive(Debug, Args)]
pub struct CommandsArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Offered load of the latency measurement, commands per second.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Where the scratch databases go.
    #[command(flatten)]
    scratch: ScratchPostgres,
    /// Which stores to measure.
    #[arg(long, value_delimiter = ',', default_value = "postgres,sqlite")]
    stores: Vec<String>,
    /// Skip pgbench.
    #[arg(long)]
    no_pgbench: bool,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: OutputFormat,
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    count: u64,
    errors: u64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// One store's figures.
#[derive(Debug, Clone, Serialize)]
struct StoreReport {
    store: String,
    /// As many commands as 32 clients can push (closed loop).
    api_saturated: Latency,
    /// Commands offered at a fixed rate (open loop): the latency a user sees at that load.
    api_at_rate: Latency,
    offered_rate: u64,
    appends_per_sec: f64,
    append_p50_ms: f64,
    append_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    clients: usize,
    seconds: u64,
    stores: Vec<StoreReport>,
    pgbench_inserts_per_sec: Option<f64>,
}

/// Runs a bench command.
pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Commands(args) => commands(args).await,
        BenchCommand::Rebuild(args) => projections::rebuild(args).await,
        BenchCommand::Lag(args) => projections::lag(args).await,
        BenchCommand::Verify(args) => audit::verify(args).await,
        BenchCommand::Agents(args) => agents::agents(args).await,
        BenchCommand::AgentRevert(args) => agents::revert::agent_revert(args).await,
        BenchCommand::Loopback(args) => loopback::loopback(args).await,
        BenchCommand::Logins(args) => logins::logins(args).await,
    }
}

async fn commands(args: CommandsArgs) -> Result<()> {
    let mut stores = Vec::new();
    for store in &args.stores {
        let report = match store.as_str() {
            "postgres" => {
                let url = args.scratch.create("edict_bench").await?;
                let report = bench_store("postgres", url.clone(), &args).await;
                args.scratch.drop(&url).await;
                report?
            }
            "sqlite" => {
                let dir = std::env::temp_dir()
                    .join(format!("edict-bench-{}", uuid::Uuid::new_v4().simple()));
                let url = format!("sqlite://{}", dir.join("edict.db").display());
                let report = bench_store("sqlite", url, &args).await;
                let _ = tokio::fs::remove_dir_all(&dir).await;
                report?
            }
            other => bail!("unknown store {other:?} (expected postgres or sqlite)"),
        };
        if args.output == OutputFormat::Text {
            print_store(&report);
        }
        stores.push(report);
    }
    let pgbench = if args.no_pgbench {
        None
    } else {
        let tps = appends::pgbench_ceiling(&args.scratch.postgres_url, args.clients, args.seconds)
            .await
            .context("cannot run pgbench")?;
        Some(tps)
    };
    let report = Report {
        clients: args.clients,
        seconds: args.seconds,
        stores,
        pgbench_inserts_per_sec: pgbench,
    };
    match args.output {
        OutputFormat::Json => output::json(&report)?,
        OutputFormat::Text => {
            if let Some(tps) = report.pgbench_inserts_per_sec {
                output::line(&format!(
                    "pgbench ceiling: {tps:.0} single-row insert transactions/s with {} clients",
                    report.clients
                ));
                for store in &report.stores {
                    if store.store == "postgres" {
                        output::line(&format!(
                            "  postgres appends/s as a share of the ceiling: {:.0} %",
                            100.0 * store.appends_per_sec / tps
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn print_store(report: &StoreReport) {
    let l = |name: &str, l: &Latency| {
        format!(
            "  {name}: {:.0} commands/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} ok, {} errors)",
            l.per_sec, l.p50_ms, l.p99_ms, l.max_ms, l.count, l.errors
        )
    };
    output::line(&format!("store {}", report.store));
    output::line(&l("HTTP API, saturated", &report.api_saturated));
    output::line(&l(
        &format!("HTTP API at {} commands/s offered", report.offered_rate),
        &report.api_at_rate,
    ));
    output::line(&format!(
        "  raw appends: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        report.appends_per_sec, report.append_p50_ms, report.append_p99_ms
    ));
}

async fn bench_store(kind: &str, url: String, args: &CommandsArgs) -> Result<StoreReport> {
    let mut settings = bench_settings(std::env::temp_dir())?;
    settings.database_url = url.clone();
    let listen = settings.listen;
    let built = app::build(&settings, None).await?;
    let endpoint = edict_api::server::app(
        built.edict.clone(),
        edict_api::server::GatewayUrls::default(),
    );
    let (stop, server) = serve_until_stopped(listen, endpoint);
    let fleet = Fleet::ready(listen, args.clients).await?;
    let duration = Duration::from_secs(args.seconds);
    tracing::info!(store = kind, "measuring the HTTP API, saturated");
    let saturated = drive(&fleet, args.clients, duration, None).await?;
    tracing::info!(
        store = kind,
        rate = args.rate,
        "measuring the HTTP API at a fixed rate"
    );
    let at_rate = drive(&fleet, args.clients, duration, Some(args.rate)).await?;
    let _ = stop.send(());
    let _ = server.await;
    built.database.close().await;

    tracing::info!(store = kind, "measuring raw appends");
    let database = edict_infrastructure::store::Database::connect(&url).await?;
    let appends = appends::bench_appends(&database, args.clients, duration).await;
    database.close().await;
    Ok(StoreReport {
        store: kind.to_owned(),
        api_saturated: saturated,
        api_at_rate: at_rate,
        offered_rate: args.rate,
        appends_per_sec: appends.per_sec,
        append_p50_ms: appends.p50.as_secs_f64() * 1000.0,
        append_p99_ms: appends.p99.as_secs_f64() * 1000.0,
    })
}

async fn wait_live(client: &reqwest::Client, base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{base}/health/ready")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the server did not become ready within 30 s")
}

/// Two signed-in org_admins: rules drafted by one are approved by the other (nobody approves their own).
struct Fleet {
    client: reqwest::Client,
    base: String,
    author: String,
    approver: String,
}

impl Fleet {
    /// Waits until the API on `listen` is ready and signs the fleet in, with connections for
    /// `clients` concurrent clients.
    async fn ready(listen: SocketAddr, clients: usize) -> Result<Self> {
        let base = format!("http://{listen}");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients * 2)
            .build()?;
        wait_live(&client, &base).await?;
        Fleet::enroll(&client, &base).await
    }

    async fn enroll(client: &reqwest::Client, base: &str) -> Result<Self> {
        let author = login(client, base, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        let response = client
            .post(format!("{base}/api/v1/users"))
            .bearer_auth(&author)
            .json(&json!({
                "email": "bench-approver@example.com",
                "name": "Bench Approver",
                "password": "bench-password-2",
                "roles": ["org_admin"],
            }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("cannot create the approver: {}", response.text().await?);
        }
        let approver = login(
            client,
            base,
            "bench-approver@example.com",
            "bench-password-2",
        )
        .await?;
        Ok(Fleet {
            client: client.clone(),
            base: base.to_owned(),
            author,
            approver,
        })
    }

    /// One command; returns whether it succeeded.
    async fn post(&self, token: &str, path: &str, body: &Value) -> Result<Value> {
        post_json(&self.client, &self.base, token, path, body).await
    }
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> Result<String> {
    let response = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("cannot log in as {email}: {}", response.text().await?);
    }
    let body: Value = response.json().await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("login answered without an access token")
}

/// The next step of one client's rule lifecycle: draft, edit, submit, approve, then a new rule.
enum Step {
    Draft,
    Edit(String),
    Submit(String),
    Approve(String),
}

async fn step(fleet: &Fleet, client: usize, n: u64, current: Step) -> (Result<Value>, Step) {
    let spec = |n: u64| {
        json!({
            "name": format!("bench rule {client}-{n}"),
            "description": "written by edict bench commands",
            "layer": "team",
            "content": format!("- Always run the tests before pushing ({n}).\n"),
            "category": "testing",
            "priority": 1,
            "tags": ["bench"],
            "triggers": [],
        })
    };
    match current {
        Step::Draft => {
            let result = fleet.post(&fleet.author, "/api/v1/rules", &spec(n)).await;
            let next = match result.as_ref().ok().and_then(|v| v["id"].as_str()) {
                Some(id) => Step::Edit(id.to_owned()),
                None => Step::Draft,
            };
            (result, next)
        }
        Step::Edit(id) => {
            let response = fleet
                .client
                .put(format!("{}/api/v1/rules/{id}", fleet.base))
                .bearer_auth(&fleet.author)
                .json(&spec(n))
                .send()
                .await;
            let result = match response {
                Ok(r) if r.status().is_success() => r.json().await.map_err(Into::into),
                Ok(r) => Err(anyhow::anyhow!("edit: {}", r.status())),
                Err(e) => Err(e.into()),
            };
            (result, Step::Submit(id))
        }
        Step::Submit(id) => {
            let result = fleet
                .post(
                    &fleet.author,
                    &format!("/api/v1/rules/{id}/submit"),
                    &json!({}),
                )
                .await;
            (result, Step::Approve(id))
        }
        Step::Approve(id) => {
            let result = fleet
                .post(
                    &fleet.approver,
                    &format!("/api/v1/rules/{id}/approve"),
                    &json!({}),
                )
                .await;
            (result, Step::Draft)
        }
    }
}

/// Drives `clients` concurrent clients for `duration`: as fast as they can (`rate` None) or together
/// at `rate` commands per second, each command timed from its scheduled start (so queueing counts).
async fn drive(
    fleet: &Fleet,
    clients: usize,
    duration: Duration,
    rate: Option<u64>,
) -> Result<Latency> {
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("cannot build a histogram")?,
    ));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r.max(1) as f64));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let histogram = histogram.clone();
        let errors = errors.clone();
        let fleet = Fleet {
            client: fleet.client.clone(),
            base: fleet.base.clone(),
            author: fleet.author.clone(),
            approver: fleet.approver.clone(),
        };
        tasks.push(tokio::spawn(async move {
            let mut current = Step::Draft;
            let mut n = 0u64;
            // Spread the clients' schedules evenly over one interval.
            let offset = interval.map_or(Duration::ZERO, |i| {
                i.mul_f64(client as f64 / clients as f64)
            });
            let mut scheduled = started + offset;
            while started.elapsed() < duration {
                if interval.is_some() {
                    tokio::time::sleep_until(scheduled.into()).await;
                } else {
                    scheduled = Instant::now();
                }
                n += 1;
                let (result, next) = step(&fleet, client, n, current).await;
                current = next;
                let micros = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
                match result {
                    Ok(_) => {
                        let _ = histogram.lock().await.record(micros.max(1));
                    }
                    Err(error) => {
                        tracing::debug!(%error, "bench command failed");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(interval) = interval {
                    scheduled += interval;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let histogram = histogram.lock().await;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Latency {
        count: histogram.len(),
        errors: errors.load(Ordering::Relaxed),
        per_sec: histogram.len() as f64 / elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
    })
}
