//! `edict-bench agents`: the gateway under N simulated agents, with the server in child processes.
//!
//! Layout: this file holds the run (deployment, setup, the three measurements, the report);
//! `agents/sim.rs` the simulated agents (the real protocol over tokio-tungstenite) and
//! `agents/revert.rs` the `edict-bench agent-revert` measurement of the real `edict-agent`.
//!
//! The deployment is two `edict serve` children of this process (the `edict` binary beside this one) on a scratch
//! PostgreSQL database and a fresh NATS prefix: `core` runs the API, the relay and the projectors;
//! `gateway` runs the gateway role alone, so its memory can be read from `/proc/<pid>/status` and it can
//! be killed and restarted. The simulated agents live in this process.

pub(super) mod revert;
mod sim;

use super::{
    ADMIN_EMAIL, ADMIN_PASSWORD, ScratchPostgres, emit, login, post_json, short_id, wait_live,
};
use anyhow::{Context, Result, bail};
use clap::Args;
use edict::output::{self, OutputFormat};
use edict_infrastructure::nats::{self, NatsSettings};
use hdrhistogram::Histogram;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::{Value, json};
use sim::{Sims, SimsConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The propagation goal at 10,000 agents, p99 in milliseconds.
const GOAL_PROPAGATION_P99_MS: f64 = 100.0;
/// The gateway memory goal per idle connection, bytes.
const GOAL_BYTES_PER_CONNECTION: f64 = 10_000.0;
/// The reconnect storm goal: every agent back on the latest revision within this.
const GOAL_STORM: Duration = Duration::from_secs(30);
/// How long one command may take to reach every agent before it counts as not converged.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Options of `edict-bench agents`.
#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 1_000)]
    count: usize,
    /// Teams; agent i belongs to a user who is a member of team i mod T, so a command reaches
    /// count / teams agents.
    #[arg(long, default_value_t = 1)]
    teams: usize,
    /// Rules attached to each team (the rule set's size).
    #[arg(long, default_value_t = 3)]
    rules: usize,
    /// Measured commands (enforcement changes, round-robin over the teams, one at a time).
    #[arg(long, default_value_t = 20)]
    commands: usize,
    /// Pause after a command has converged before the next one, milliseconds.
    #[arg(long, default_value_t = 500)]
    pause_ms: u64,
    /// Seconds the connections stay idle before the gateway's memory and CPU are read.
    #[arg(long, default_value_t = 20)]
    idle_seconds: u64,
    /// Connections opened at once while the fleet connects the first time.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Skip the reconnect storm.
    #[arg(long)]
    no_storm: bool,
    /// The NATS server (a fresh prefix `benchag<8 hex>_` is used and deleted).
    #[arg(long, default_value = nats::DEFAULT_NATS_URL)]
    nats_url: String,
    /// Where the scratch databases go.
    #[command(flatten)]
    scratch: ScratchPostgres,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: OutputFormat,
}

/// Latency figures, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
struct Spread {
    samples: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Spread {
    fn of(histogram: &Histogram<u64>) -> Spread {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Spread {
            samples: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// Memory and CPU of a process over an idle window.
#[derive(Debug, Clone, Default, Serialize)]
struct Footprint {
    rss_before_kib: u64,
    rss_after_kib: u64,
    connections: usize,
    bytes_per_connection: f64,
    /// CPU time of the process over the idle window, percent of one core.
    idle_cpu_percent: f64,
    idle_seconds: u64,
}

/// The propagation of commands to every agent.
#[derive(Debug, Clone, Default, Serialize)]
struct Propagation {
    commands: usize,
    /// (agent, command) pairs expected, and how many applied the command's revision in time.
    expected: u64,
    converged: u64,
    /// From the command's response to each agent's `applied`.
    per_agent: Spread,
    /// From the command's response to the last agent's `applied`, per command.
    to_last_agent: Spread,
    command: Spread,
    /// CPU time per command over the whole phase (the pauses included): where the work goes.
    cpu_per_command: CpuPerCommand,
    /// The gateway's fan-out of each revision, from its log.
    fan_out: FanOut,
}

/// The gateway's fan-out of the revisions (its `rule set fanned out` log lines).
#[derive(Debug, Clone, Default, Serialize)]
struct FanOut {
    /// Revisions fanned out.
    revisions: u64,
    /// Time to offer one revision to every port of its team.
    duration: Spread,
    /// Offers written straight into the socket, queued for the connection's task, and refused
    /// (queue full or stalled: the connection closes with `too_slow`).
    written: u64,
    queued: u64,
    overflowed: u64,
}

impl FanOut {
    /// The `rule set fanned out` lines of a gateway's log (JSON lines) from line `from` on.
    fn read(log: &Path, from: usize) -> Result<FanOut> {
        let text = std::fs::read_to_string(log)
            .with_context(|| format!("cannot read {}", log.display()))?;
        let mut durations = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut fan_out = FanOut::default();
        for line in text
            .lines()
            .skip(from)
            .filter(|l| l.contains("rule set fanned out"))
        {
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let field = |name: &str| entry["fields"][name].as_u64().unwrap_or(0);
            fan_out.revisions += 1;
            let _ = durations.record(field("micros").max(1));
            fan_out.written += field("written");
            fan_out.queued += field("queued");
            fan_out.overflowed += field("overflowed");
        }
        fan_out.duration = Spread::of(&durations);
        Ok(fan_out)
    }
}

/// Lines in `log` so far (0 when it cannot be read).
fn lines_in(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |text| text.lines().count())
}

/// CPU time per command of each part, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
struct CpuPerCommand {
    gateway_ms: f64,
    /// The bench process: the simulated agents, almost all of it.
    agents_ms: f64,
    core_ms: f64,
    /// Every `postgres` process of the machine (the convergence writes, mostly).
    postgres_ms: f64,
}

/// CPU time of the gateway, the bench process, the core and PostgreSQL: so far, or over a window.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    gateway: Duration,
    bench: Duration,
    core: Duration,
    postgres: Duration,
}

impl CpuTimes {
    /// So far.
    fn now(deployment: &Deployment) -> Result<CpuTimes> {
        Ok(CpuTimes {
            gateway: cpu_time(deployment.gateway.pid)?,
            bench: cpu_time(std::process::id())?,
            core: cpu_time(deployment.core.pid)?,
            postgres: postgres_cpu_time(),
        })
    }

    /// From `earlier` to now.
    fn since(deployment: &Deployment, earlier: CpuTimes) -> Result<CpuTimes> {
        let now = CpuTimes::now(deployment)?;
        Ok(CpuTimes {
            gateway: now.gateway.saturating_sub(earlier.gateway),
            bench: now.bench.saturating_sub(earlier.bench),
            core: now.core.saturating_sub(earlier.core),
            postgres: now.postgres.saturating_sub(earlier.postgres),
        })
    }
}

/// The reconnect storm.
#[derive(Debug, Clone, Default, Serialize)]
struct Storm {
    agents: usize,
    /// From the kill to the new gateway listening.
    gateway_down_ms: f64,
    /// From the new gateway's start to every agent on the latest revision of its team.
    restart_to_converged_ms: Option<f64>,
    /// From the kill to every agent on the latest revision.
    kill_to_converged_ms: Option<f64>,
    /// Agents on the latest revision at the end.
    on_latest: usize,
    /// Rule sets received with a lower revision than the agent held (must be 0).
    regressions: u64,
    /// Connections the agents opened during the storm (including refused attempts).
    connect_attempts: u64,
    /// Payloads the new gateway built, per (team, revision), from its log.
    payloads_built: Vec<PayloadBuilds>,
    /// Whether every (team, revision) was built at most once.
    one_payload_per_revision: bool,
}

#[derive(Debug, Clone, Serialize)]
struct PayloadBuilds {
    team: String,
    revision: u64,
    builds: u64,
}

/// What `edict-bench agents` measured.
#[derive(Debug, Clone, Default, Serialize)]
struct AgentsReport {
    count: usize,
    teams: usize,
    rules_per_team: usize,
    /// The size of one `rule_set` message, bytes.
    payload_bytes: usize,
    enroll_seconds: f64,
    /// From the first connection to every agent holding its team's rule set.
    connect_seconds: f64,
    gateway: Footprint,
    core_idle_cpu_percent: f64,
    /// Every `postgres` process of the machine over the idle window (other users' included).
    postgres_idle_cpu_percent: f64,
    bench_rss_kib: u64,
    propagation: Propagation,
    storm: Option<Storm>,
    /// Frames the simulated agents could not parse, protocol errors and unexpected closes.
    agent_errors: u64,
    goal_propagation_p99_ms: f64,
    goal_bytes_per_connection: f64,
    goal_storm_seconds: f64,
}

/// Runs `edict-bench agents`.
pub async fn agents(args: AgentsArgs) -> Result<()> {
    if args.count == 0 || args.teams == 0 || args.teams > args.count {
        bail!("--count must be at least 1 and at least --teams (≥ 1)");
    }
    raise_fd_limit(args.count);
    let url = args.scratch.create("edict_bench_ag").await?;
    let id = short_id();
    let prefix = format!("benchag{id}_");
    let dir = std::env::temp_dir().join(format!("edict-bench-agents-{id}"));
    let result = async {
        std::fs::create_dir_all(&dir).context("cannot create the bench directory")?;
        let mut deployment = Deployment::start(&url, &args.nats_url, &prefix, &dir).await?;
        let report = measure(&mut deployment, &args).await;
        deployment.stop().await;
        report
    }
    .await;
    cleanup_nats(&args.nats_url, &prefix).await;
    args.scratch.drop(&url).await;
    let _ = std::fs::remove_dir_all(&dir);
    emit(args.output, &result?, print)
}

/// Raises the soft limit of open files to the hard limit (children inherit it): each agent is a
/// socket here and one in the gateway.
pub(super) fn raise_fd_limit(wanted: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted as u64 + 512 => tracing::warn!(
            limit,
            wanted,
            "the open-file limit is low for this many agents; connections may fail"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// Deletes the prefix's events stream and rule set bucket (best effort).
async fn cleanup_nats(url: &str, prefix: &str) {
    let Ok(settings) = NatsSettings::new(url.to_owned(), prefix) else {
        return;
    };
    let Ok(nats) = nats::connect(settings).await else {
        tracing::warn!("cannot connect to NATS to delete the bench streams");
        return;
    };
    let prefix = nats.prefix();
    for stream in [
        prefix.events_stream(),
        format!("KV_{}", prefix.rulesets_bucket()),
    ] {
        if let Err(error) = nats.jetstream().delete_stream(&stream).await {
            tracing::warn!(%error, stream, "cannot delete the NATS stream");
        }
    }
}

/// A free loopback port.
pub(super) fn free_port() -> Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?)
}

/// An `edict serve` child process, its stderr in a file.
pub(super) struct ServeChild {
    child: Child,
    pub(super) pid: u32,
    pub(super) log: PathBuf,
}

impl ServeChild {
    /// Starts `edict serve` with `args` and `env`, logging to `log`: the `edict` binary beside this one
    /// (same build), or the one `EDICT_BENCH_SERVER` names (to measure another build of the server under
    /// the same load generator).
    pub(super) fn spawn(args: &[String], env: &[(String, String)], log: &Path) -> Result<Self> {
        let exe = match std::env::var_os("EDICT_BENCH_SERVER") {
            Some(server) => PathBuf::from(server),
            None => std::env::current_exe()
                .context("cannot find this executable")?
                .with_file_name("edict"),
        };
        if !exe.exists() {
            bail!(
                "{} is missing: build it beside edict-bench (cargo build --release -p edict -p edict-bench)",
                exe.display()
            );
        }
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = command.spawn().context("cannot start edict serve")?;
        let pid = child.id().context("the child has no pid")?;
        Ok(ServeChild {
            child,
            pid,
            log: log.to_owned(),
        })
    }

    /// SIGKILL, and wait for the exit.
    pub(super) async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM (graceful), then SIGKILL after 10 s.
    pub(super) async fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }

    /// Whether it already exited.
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

/// Resident memory of `pid`, KiB (`VmRSS` of `/proc/<pid>/status`).
pub(super) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// User + system CPU time of `pid` (`/proc/<pid>/stat`, in clock ticks of 1/100 s, Linux's USER_HZ).
pub(super) fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("malformed /proc/<pid>/stat")
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// CPU time of every process named `postgres` (the server and its backends) so far.
fn postgres_cpu_time() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .filter_map(|pid| cpu_time(pid).ok())
        .sum()
}

/// The two children and how to reach them.
struct Deployment {
    core: ServeChild,
    gateway: ServeChild,
    api: SocketAddr,
    gateway_addr: SocketAddr,
    env: Vec<(String, String)>,
    dir: PathBuf,
    gateway_starts: u32,
}

impl Deployment {
    async fn start(url: &str, nats_url: &str, prefix: &str, dir: &Path) -> Result<Deployment> {
        let api = free_port()?;
        let gateway_addr = free_port()?;
        let env = vec![
            ("EDICT_DATABASE_URL".to_owned(), url.to_owned()),
            ("EDICT_NATS_URL".to_owned(), nats_url.to_owned()),
            ("EDICT_NATS_PREFIX".to_owned(), prefix.to_owned()),
            ("EDICT_ADMIN_EMAIL".to_owned(), ADMIN_EMAIL.to_owned()),
            ("EDICT_ADMIN_PASSWORD".to_owned(), ADMIN_PASSWORD.to_owned()),
            (
                "EDICT_DATA_DIR".to_owned(),
                dir.join("data").display().to_string(),
            ),
            (
                "RUST_LOG".to_owned(),
                "warn,edict_api::gateway::rulesets=info,edict_api::gateway::fanout=info,edict_api::gateway::feed=info"
                    .to_owned(),
            ),
            ("EDICT_LOG_JSON".to_owned(), "true".to_owned()),
        ];
        let core = ServeChild::spawn(
            &[
                "--roles".into(),
                "api,relay,projector".into(),
                "--listen".into(),
                api.to_string(),
            ],
            &env,
            &dir.join("core.log"),
        )?;
        let client = reqwest::Client::new();
        wait_live(&client, &format!("http://{api}"))
            .await
            .with_context(|| {
                format!(
                    "the core did not start; see {}",
                    dir.join("core.log").display()
                )
            })?;
        let mut deployment = Deployment {
            gateway: Self::spawn_gateway(&env, gateway_addr, dir, 0)?,
            core,
            api,
            gateway_addr,
            env,
            dir: dir.to_owned(),
            gateway_starts: 1,
        };
        deployment.wait_gateway().await?;
        Ok(deployment)
    }

    fn spawn_gateway(
        env: &[(String, String)],
        addr: SocketAddr,
        dir: &Path,
        n: u32,
    ) -> Result<ServeChild> {
        ServeChild::spawn(
            &[
                "--roles".into(),
                "gateway".into(),
                "--gateway-listen".into(),
                addr.to_string(),
                // Its probes and metrics port (no API role): any free one.
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
            env,
            &dir.join(format!("gateway-{n}.log")),
        )
    }

    /// Waits until the gateway accepts TCP connections (30 s).
    async fn wait_gateway(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.gateway.exited() {
                bail!("the gateway exited; see {}", self.gateway.log.display());
            }
            if tokio::net::TcpStream::connect(self.gateway_addr)
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!("the gateway did not listen within 30 s")
    }

    /// Kills the gateway (SIGKILL), runs `while_down`, and starts a new one on the same address;
    /// answers when it was killed, when the new one started and when it listened.
    async fn restart_gateway_after(
        &mut self,
        while_down: impl std::future::Future<Output = ()>,
    ) -> Result<(Instant, Instant, Instant)> {
        let killed = Instant::now();
        self.gateway.kill().await;
        while_down.await;
        let n = self.gateway_starts;
        self.gateway_starts += 1;
        let started = Instant::now();
        self.gateway = Self::spawn_gateway(&self.env, self.gateway_addr, &self.dir, n)?;
        self.wait_gateway().await?;
        Ok((killed, started, Instant::now()))
    }

    async fn stop(&mut self) {
        self.gateway.stop().await;
        self.core.stop().await;
    }
}

/// The teams, users, rules and agents of the run, made through the API as an org_admin would.
struct Setup {
    client: reqwest::Client,
    base: String,
    admin: String,
    teams: Vec<String>,
    /// The first rule of each team: the measured commands change its enforcement.
    toggled: Vec<String>,
    /// The current mode of `toggled` per team (`block` or `warning`).
    modes: Vec<&'static str>,
    tokens: Vec<String>,
    team_of: Vec<usize>,
}

impl Setup {
    async fn post(&self, token: &str, path: &str, body: &Value) -> Result<Value> {
        post_json(&self.client, &self.base, token, path, body).await
    }

    async fn create(base: String, args: &AgentsArgs) -> Result<Setup> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        let admin = login(&client, &base, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        let mut setup = Setup {
            client,
            base,
            admin,
            teams: Vec::new(),
            toggled: Vec::new(),
            modes: Vec::new(),
            tokens: Vec::new(),
            team_of: Vec::new(),
        };
        let approver_password = "bench-password-2";
        setup
            .post(
                &setup.admin,
                "/api/v1/users",
                &json!({"email": "bench-approver@example.com", "name": "Approver",
                        "password": approver_password, "roles": ["org_admin"]}),
            )
            .await?;
        let approver = login(
            &setup.client,
            &setup.base,
            "bench-approver@example.com",
            approver_password,
        )
        .await?;
        let mut rules = Vec::new();
        for r in 0..args.rules.max(1) {
            let spec = json!({
                "name": format!("bench rule {r}"),
                "description": "a rule of edict bench agents",
                "layer": "team",
                "content": format!(
                    "## Rule {r}\n\n- Run the formatter, the linter and the tests before every push.\n\
                     - Never commit secrets; use the vault.\n- Keep pull requests under 400 lines.\n"
                ),
                "category": "engineering",
                "priority": 1,
                "tags": ["bench"],
                "triggers": [],
            });
            let rule = setup.post(&setup.admin, "/api/v1/rules", &spec).await?;
            let rule = rule["id"].as_str().context("rule id")?.to_owned();
            setup
                .post(
                    &setup.admin,
                    &format!("/api/v1/rules/{rule}/submit"),
                    &json!({}),
                )
                .await?;
            setup
                .post(
                    &approver,
                    &format!("/api/v1/rules/{rule}/approve"),
                    &json!({}),
                )
                .await?;
            rules.push(rule);
        }
        let mut users = Vec::new();
        for t in 0..args.teams {
            let team = setup
                .post(
                    &setup.admin,
                    "/api/v1/teams",
                    &json!({"name": format!("bench team {t}")}),
                )
                .await?;
            let team = team["id"].as_str().context("team id")?.to_owned();
            let user = setup
                .post(
                    &setup.admin,
                    "/api/v1/users",
                    &json!({"email": format!("dev{t}@example.com"), "name": format!("Dev {t}"),
                            "password": "bench-password-3", "roles": ["member"]}),
                )
                .await?;
            let user = user["id"].as_str().context("user id")?.to_owned();
            setup
                .post(
                    &setup.admin,
                    &format!("/api/v1/teams/{team}/members"),
                    &json!({"user_id": user, "role": "member"}),
                )
                .await?;
            for rule in &rules {
                setup
                    .post(
                        &setup.admin,
                        &format!("/api/v1/teams/{team}/rules"),
                        &json!({"rule_id": rule, "enforcement": {"mode": "block"}}),
                    )
                    .await?;
            }
            setup.teams.push(team);
            setup.toggled.push(rules[0].clone());
            setup.modes.push("block");
            users.push(user);
        }
        setup.team_of = (0..args.count).map(|i| i % args.teams).collect();
        setup.tokens = enroll(&setup, &users, args.count).await?;
        Ok(setup)
    }

    /// Flips the enforcement of the team's first rule (block ↔ warning): a new revision of its rule
    /// set. Answers when the response arrived.
    async fn change(&mut self, team: usize) -> Result<Instant> {
        let mode = if self.modes[team] == "block" {
            "warning"
        } else {
            "block"
        };
        let response = self
            .client
            .patch(format!(
                "{}/api/v1/teams/{}/rules/{}",
                self.base, self.teams[team], self.toggled[team]
            ))
            .bearer_auth(&self.admin)
            .json(&json!({"mode": mode}))
            .send()
            .await?;
        let at = Instant::now();
        if !response.status().is_success() {
            bail!(
                "change enforcement: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        self.modes[team] = mode;
        Ok(at)
    }

    /// The team's rule set as the API's read model has it: (revision, message size).
    async fn ruleset(&self, team: usize) -> Result<Option<(u64, usize)>> {
        let response = self
            .client
            .get(format!(
                "{}/api/v1/teams/{}/ruleset",
                self.base, self.teams[team]
            ))
            .bearer_auth(&self.admin)
            .send()
            .await?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let doc: Value = response.json().await?;
        let Some(revision) = doc["revision"].as_u64() else {
            return Ok(None);
        };
        Ok(Some((revision, doc.to_string().len())))
    }

    /// Waits until the read model holds at least `revision` of every team; answers each team's.
    async fn wait_revisions(&self, at_least: &[u64]) -> Result<Vec<u64>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut revisions = Vec::new();
            for t in 0..self.teams.len() {
                revisions.push(self.ruleset(t).await?.map_or(0, |(r, _)| r));
            }
            if revisions.iter().zip(at_least).all(|(r, want)| r >= want) {
                return Ok(revisions);
            }
            if Instant::now() > deadline {
                bail!(
                    "the team rule sets did not reach {at_least:?} within 30 s (at {revisions:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Enrolls `count` agents, agent i for user i mod T, 32 requests at a time; answers their tokens.
async fn enroll(setup: &Setup, users: &[String], count: usize) -> Result<Vec<String>> {
    use futures::StreamExt;
    let tokens: Vec<Result<String>> = futures::stream::iter(0..count)
        .map(|i| {
            let user = &users[i % users.len()];
            async move {
                let body = setup
                    .post(
                        &setup.admin,
                        "/api/v1/agents",
                        &json!({"machine_id": format!("bench-machine-{i}"),
                                "machine_name": format!("Bench {i}"), "user_id": user}),
                    )
                    .await?;
                body["token"]
                    .as_str()
                    .map(str::to_owned)
                    .context("enrollment answered without a token")
            }
        })
        .buffered(32)
        .collect()
        .await;
    tokens.into_iter().collect()
}

async fn measure(deployment: &mut Deployment, args: &AgentsArgs) -> Result<AgentsReport> {
    let base = format!("http://{}", deployment.api);
    let started = Instant::now();
    let mut setup = Setup::create(base, args).await?;
    let enroll_seconds = started.elapsed().as_secs_f64();
    let initial = setup.wait_revisions(&vec![1; args.teams]).await?;
    let payload_bytes = setup.ruleset(0).await?.map_or(0, |(_, size)| size);
    tracing::info!(
        agents = args.count,
        seconds = enroll_seconds,
        "enrolled; connecting the simulated agents"
    );

    // Idle gateway, before any agent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_kib(deployment.gateway.pid)?;
    let sims = Sims::start(SimsConfig {
        url: format!("ws://{}/ws", deployment.gateway_addr),
        tokens: setup.tokens.clone(),
        team_of: setup.team_of.clone(),
        teams: setup.teams.clone(),
        connect_concurrency: args.connect_concurrency,
    });
    let connect_started = Instant::now();
    let converged = sims.wait_all(&initial, Duration::from_secs(120)).await;
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    if !converged {
        tracing::warn!(
            on_latest = sims.on_latest(&initial),
            "not every agent received its team's rule set within 120 s"
        );
    }
    sims.end_ramp();

    // Idle: memory and CPU of both children over the window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_start = CpuTimes::now(deployment)?;
    let idle = Duration::from_secs(args.idle_seconds.max(1));
    tokio::time::sleep(idle).await;
    let idle_cpu = CpuTimes::since(deployment, idle_start)?;
    let rss_after = rss_kib(deployment.gateway.pid)?;
    let connections = sims.connected();
    let gateway = Footprint {
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        connections,
        bytes_per_connection: rss_after.saturating_sub(rss_before) as f64 * 1024.0
            / connections.max(1) as f64,
        idle_cpu_percent: idle_cpu.gateway.as_secs_f64() * 100.0 / idle.as_secs_f64(),
        idle_seconds: idle.as_secs(),
    };
    let core_idle_cpu_percent = idle_cpu.core.as_secs_f64() * 100.0 / idle.as_secs_f64();
    let postgres_idle_cpu_percent = idle_cpu.postgres.as_secs_f64() * 100.0 / idle.as_secs_f64();

    let propagation = propagate(&mut setup, &sims, args, deployment).await?;

    let storm = if args.no_storm {
        None
    } else {
        Some(storm(deployment, &mut setup, &sims).await?)
    };
    let bench_rss_kib = rss_kib(std::process::id()).unwrap_or(0);
    let agent_errors = sims.errors();
    sims.stop().await;
    Ok(AgentsReport {
        count: args.count,
        teams: args.teams,
        rules_per_team: args.rules.max(1),
        payload_bytes,
        enroll_seconds,
        connect_seconds,
        gateway,
        core_idle_cpu_percent,
        postgres_idle_cpu_percent,
        bench_rss_kib,
        propagation,
        storm,
        agent_errors,
        goal_propagation_p99_ms: GOAL_PROPAGATION_P99_MS,
        goal_bytes_per_connection: GOAL_BYTES_PER_CONNECTION,
        goal_storm_seconds: GOAL_STORM.as_secs_f64(),
    })
}

/// `--commands` enforcement changes, one at a time, each waited for at every agent of its team.
async fn propagate(
    setup: &mut Setup,
    sims: &Sims,
    args: &AgentsArgs,
    deployment: &Deployment,
) -> Result<Propagation> {
    let start = CpuTimes::now(deployment)?;
    let log_start = lines_in(&deployment.gateway.log);
    let histogram = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3);
    let mut per_agent = histogram()?;
    let mut to_last = histogram()?;
    let mut command = histogram()?;
    let mut expected = 0;
    let mut converged = 0;
    for k in 0..args.commands {
        let team = k % args.teams;
        let base = sims.team_floor(team);
        let sent = Instant::now();
        let answered = setup.change(team).await?;
        let _ = command.record(micros(answered - sent).max(1));
        let done = sims.wait_team_above(team, base, CONVERGE_TIMEOUT).await;
        let applied = sims.applied_after(team, base, answered);
        expected += sims.team_size(team) as u64;
        converged += applied.len() as u64;
        let mut last = Duration::ZERO;
        for latency in applied {
            let _ = per_agent.record(micros(latency).max(1));
            last = last.max(latency);
        }
        let _ = to_last.record(micros(last).max(1));
        if !done {
            tracing::warn!(
                command = k,
                "not every agent applied the command within the timeout"
            );
        }
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    let used = CpuTimes::since(deployment, start)?;
    let per_command = |cpu: Duration| cpu.as_secs_f64() * 1000.0 / args.commands.max(1) as f64;
    Ok(Propagation {
        commands: args.commands,
        expected,
        converged,
        per_agent: Spread::of(&per_agent),
        to_last_agent: Spread::of(&to_last),
        command: Spread::of(&command),
        cpu_per_command: CpuPerCommand {
            gateway_ms: per_command(used.gateway),
            agents_ms: per_command(used.bench),
            core_ms: per_command(used.core),
            postgres_ms: per_command(used.postgres),
        },
        fan_out: FanOut::read(&deployment.gateway.log, log_start)?,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Kills the gateway with every agent connected, changes every team's rule set while it is down and
/// once more one second after the new gateway started, and waits for every agent to hold the latest
/// revision of its team.
async fn storm(deployment: &mut Deployment, setup: &mut Setup, sims: &Sims) -> Result<Storm> {
    let teams = setup.teams.len();
    let before: Vec<u64> = (0..teams).map(|t| sims.team_floor(t)).collect();
    let attempts_before = sims.connect_attempts();
    let regressions_before = sims.regressions();
    let mut change_error = None;
    let (killed, started, listening) = deployment
        .restart_gateway_after(async {
            for t in 0..teams {
                if let Err(error) = setup.change(t).await {
                    change_error = Some(error);
                }
            }
        })
        .await?;
    if let Some(error) = change_error {
        return Err(error);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for t in 0..teams {
        setup.change(t).await?;
    }
    let wanted: Vec<u64> = before.iter().map(|r| r + 2).collect();
    let latest = setup.wait_revisions(&wanted).await?;
    let converged = sims.wait_all(&latest, GOAL_STORM * 2).await;
    let restart_to_converged = converged.then(|| started.elapsed());
    let kill_to_converged = converged.then(|| killed.elapsed());
    // Let the log reach the file.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let payloads_built = payload_builds(&deployment.gateway.log)?;
    let one_payload_per_revision = payloads_built.iter().all(|p| p.builds <= 1);
    Ok(Storm {
        agents: sims.len(),
        gateway_down_ms: (listening - killed).as_secs_f64() * 1000.0,
        restart_to_converged_ms: restart_to_converged.map(|d| d.as_secs_f64() * 1000.0),
        kill_to_converged_ms: kill_to_converged.map(|d| d.as_secs_f64() * 1000.0),
        on_latest: sims.on_latest(&latest),
        regressions: sims.regressions() - regressions_before,
        connect_attempts: sims.connect_attempts() - attempts_before,
        payloads_built,
        one_payload_per_revision,
    })
}

/// The `rule set payload built` lines of a gateway's log (JSON lines), counted per (team, revision).
fn payload_builds(log: &Path) -> Result<Vec<PayloadBuilds>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("cannot read {}", log.display()))?;
    let mut counts: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.contains("rule set payload built"))
    {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let fields = &entry["fields"];
        let (Some(team), Some(revision)) = (fields["team"].as_str(), fields["revision"].as_u64())
        else {
            continue;
        };
        *counts.entry((team.to_owned(), revision)).or_default() += 1;
    }
    Ok(counts
        .into_iter()
        .map(|((team, revision), builds)| PayloadBuilds {
            team,
            revision,
            builds,
        })
        .collect())
}

fn print(report: &AgentsReport) {
    let line = |s: String| output::line(&s);
    line(format!(
        "agents and gateway: {} simulated agents in {} team(s), {} rule(s) per team ({} bytes per rule set)",
        report.count, report.teams, report.rules_per_team, report.payload_bytes
    ));
    line(format!(
        "  enrolled in {:.1} s; connected and holding their rule set in {:.1} s",
        report.enroll_seconds, report.connect_seconds
    ));
    let g = &report.gateway;
    line(format!(
        "  gateway RSS: {} KiB idle → {} KiB with {} idle connections = {:.0} bytes per connection (goal ≤ {:.0})",
        g.rss_before_kib,
        g.rss_after_kib,
        g.connections,
        g.bytes_per_connection,
        report.goal_bytes_per_connection
    ));
    line(format!(
        "  CPU while idle for {} s: gateway {:.1} %, core (api, relay, projectors) {:.1} %, postgres {:.1} % of one core",
        g.idle_seconds,
        g.idle_cpu_percent,
        report.core_idle_cpu_percent,
        report.postgres_idle_cpu_percent
    ));
    let p = &report.propagation;
    line(format!(
        "  propagation, {} commands: {} of {} (agent, command) applied in time",
        p.commands, p.converged, p.expected
    ));
    line(format!(
        "    response → applied, per agent: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 ≤ {:.0} ms)",
        p.per_agent.p50_ms, p.per_agent.p99_ms, p.per_agent.max_ms, report.goal_propagation_p99_ms
    ));
    line(format!(
        "    response → last agent's applied, per command: p50 {:.1} ms, max {:.1} ms; command p50 {:.1} ms",
        p.to_last_agent.p50_ms, p.to_last_agent.max_ms, p.command.p50_ms
    ));
    let c = &p.cpu_per_command;
    line(format!(
        "    CPU per command (pauses included): gateway {:.0} ms, simulated agents {:.0} ms, core {:.0} ms, postgres {:.0} ms",
        c.gateway_ms, c.agents_ms, c.core_ms, c.postgres_ms
    ));
    let f = &p.fan_out;
    line(format!(
        "    gateway fan-out, {} revisions: p50 {:.1} ms, max {:.1} ms per revision; {} written at once, {} queued for the connection, {} overflowed",
        f.revisions, f.duration.p50_ms, f.duration.max_ms, f.written, f.queued, f.overflowed
    ));
    if let Some(s) = &report.storm {
        let fmt = |v: Option<f64>| {
            v.map_or("not converged".to_owned(), |ms| {
                format!("{:.1} s", ms / 1000.0)
            })
        };
        line(format!(
            "  reconnect storm ({} agents): gateway down {:.0} ms; all on the latest revision {} after the restart, {} after the kill (goal ≤ {:.0} s)",
            s.agents,
            s.gateway_down_ms,
            fmt(s.restart_to_converged_ms),
            fmt(s.kill_to_converged_ms),
            report.goal_storm_seconds
        ));
        line(format!(
            "    on latest: {} / {}; regressions: {}; connection attempts: {}",
            s.on_latest, s.agents, s.regressions, s.connect_attempts
        ));
        let builds: Vec<String> = s
            .payloads_built
            .iter()
            .map(|p| {
                format!(
                    "{}…#{}×{}",
                    &p.team[..8.min(p.team.len())],
                    p.revision,
                    p.builds
                )
            })
            .collect();
        line(format!(
            "    payloads built by the new gateway: {} ({})",
            builds.join(", "),
            if s.one_payload_per_revision {
                "one per (team, revision)"
            } else {
                "MORE than one per (team, revision)"
            }
        ));
    }
    line(format!(
        "  simulated agents' errors: {}; bench process RSS {} KiB",
        report.agent_errors, report.bench_rss_kib
    ));
}
