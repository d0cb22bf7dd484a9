//! `edict-bench agent-revert`: the real `edict-agent run` (the binary beside this one) against a real
//! server, timing how fast it restores a block-mode managed section after an edit, then its idle
//! footprint.
//!
//! 1. Starts `edict serve` as a child on its embedded store (SQLite in a temporary directory: every
//!    role, the gateway included, in one process), creates a team, a member, an approved team rule
//!    attached in block mode, and enrolls an agent for the member.
//! 2. Runs `edict-agent login` then `edict-agent run` with a temporary HOME, organization file and data
//!    directory, and waits for the team file (`HOME/.claude/CLAUDE.md`) to carry the managed section.
//! 3. `--edits` times, `--spacing-ms` apart: rewrites the file in place with one more line inside the
//!    managed section (as an editor that writes in place does), and polls the file every 100 µs from a
//!    blocking thread until it reads exactly as before the edit. The latency is from just before the
//!    write to the first read of the restored file. The spacing must stay above the agent's revert-loop
//!    threshold (5 reverts of a file within 10 s is a loop, which it stops fighting), hence 2.1 s.
//! 4. Leaves the agent alone for 5 s, then reads its RSS (`/proc/<pid>/status`) every second and its
//!    CPU time (`/proc/<pid>/stat`) over `--idle-seconds`.

use super::{ServeChild, cpu_time, free_port, rss_kib};
use crate::{ADMIN_EMAIL, ADMIN_PASSWORD, login, wait_live};
use anyhow::{Context, Result, bail};
use clap::Args;
use edict::output::{self, OutputFormat};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The goals: detect → revert p99, idle RSS.
const GOAL_REVERT_P99_MS: f64 = 100.0;
const GOAL_IDLE_RSS_KIB: u64 = 20 * 1024;

/// Options of `edict-bench agent-revert`.
#[derive(Debug, Args)]
pub struct AgentRevertArgs {
    /// Edits of the managed section.
    #[arg(long, default_value_t = 200)]
    edits: usize,
    /// Milliseconds between two edits (above the revert-loop threshold of 5 reverts in 10 s).
    #[arg(long, default_value_t = 2_100)]
    spacing_ms: u64,
    /// Seconds the idle agent is observed.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: OutputFormat,
}

#[derive(Debug, Clone, Default, Serialize)]
struct RevertReport {
    edits: usize,
    restored: usize,
    /// Edits not restored within 5 s.
    not_restored: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    min_ms: f64,
    idle_seconds: u64,
    idle_rss_kib: u64,
    idle_rss_max_kib: u64,
    idle_cpu_percent: f64,
    goal_p99_ms: f64,
    goal_idle_rss_kib: u64,
    /// Every edit's latency in order (`null`: not restored within 5 s).
    samples_ms: Vec<Option<f64>>,
}

/// Runs `edict-bench agent-revert`.
pub async fn agent_revert(args: AgentRevertArgs) -> Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!("edict-bench-revert-{}", &id[..8]));
    std::fs::create_dir_all(&dir).context("cannot create the bench directory")?;
    let result = run(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    crate::emit(args.output, &result?, print)
}

async fn run(args: &AgentRevertArgs, dir: &Path) -> Result<RevertReport> {
    let api = free_port()?;
    let gateway = free_port()?;
    let env = vec![
        (
            "EDICT_DATA_DIR".to_owned(),
            dir.join("server").display().to_string(),
        ),
        ("EDICT_ADMIN_EMAIL".to_owned(), ADMIN_EMAIL.to_owned()),
        ("EDICT_ADMIN_PASSWORD".to_owned(), ADMIN_PASSWORD.to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    let mut server = ServeChild::spawn(
        &[
            "--listen".into(),
            api.to_string(),
            "--gateway-listen".into(),
            gateway.to_string(),
        ],
        &env,
        &dir.join("server.log"),
    )?;
    let result = async {
        let base = format!("http://{api}");
        let client = reqwest::Client::new();
        wait_live(&client, &base).await?;
        let (token, server) = setup(&client, &base, &format!("http://{gateway}")).await?;
        let machine = Machine::new(dir);
        machine.login(&server, &token).await?;
        let mut daemon = machine.run()?;
        let result = measure(args, &machine, &daemon).await;
        let _ = daemon.kill().await;
        result
    }
    .await;
    server.stop().await;
    result
}

/// A team with one approved team rule in block mode, and what its member's agent logs in with:
/// an enrollment token and the API's URL, or (a server without enrollment tokens) an agent token and
/// the gateway's URL.
async fn setup(client: &reqwest::Client, base: &str, gateway: &str) -> Result<(String, String)> {
    let admin = login(client, base, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let post = |token: String, path: String, body: Value| async move {
        crate::post_json(client, base, &token, &path, &body).await
    };
    let id = |v: &Value| v["id"].as_str().map(str::to_owned).context("no id");
    post(
        admin.clone(),
        "/api/v1/users".into(),
        json!({"email": "approver@example.com", "name": "Approver",
               "password": "bench-password-2", "roles": ["org_admin"]}),
    )
    .await?;
    let approver = login(client, base, "approver@example.com", "bench-password-2").await?;
    let dev = id(&post(
        admin.clone(),
        "/api/v1/users".into(),
        json!({"email": "dev@example.com", "name": "Dev",
               "password": "bench-password-3", "roles": ["member"]}),
    )
    .await?)?;
    let team = id(&post(
        admin.clone(),
        "/api/v1/teams".into(),
        json!({"name": "bench"}),
    )
    .await?)?;
    post(
        admin.clone(),
        format!("/api/v1/teams/{team}/members"),
        json!({"user_id": dev, "role": "member"}),
    )
    .await?;
    let rule = id(&post(
        admin.clone(),
        "/api/v1/rules".into(),
        json!({"name": "Run the tests", "description": "edict bench agent-revert",
               "layer": "team", "content": "- Run the tests before every push.\n",
               "category": "testing", "priority": 1, "tags": ["bench"], "triggers": []}),
    )
    .await?)?;
    post(
        admin.clone(),
        format!("/api/v1/rules/{rule}/submit"),
        json!({}),
    )
    .await?;
    post(approver, format!("/api/v1/rules/{rule}/approve"), json!({})).await?;
    post(
        admin.clone(),
        format!("/api/v1/teams/{team}/rules"),
        json!({"rule_id": rule, "enforcement": {"mode": "block"}}),
    )
    .await?;
    let response = client
        .post(format!("{base}/api/v1/enrollment-tokens"))
        .bearer_auth(&admin)
        .json(&json!({"user_id": dev, "note": "edict bench agent-revert"}))
        .send()
        .await?;
    if response.status() != reqwest::StatusCode::NOT_FOUND {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("/api/v1/enrollment-tokens: {status} {body}");
        }
        let token = body["token"]
            .as_str()
            .context("the enrollment token was not answered")?;
        return Ok((token.to_owned(), base.to_owned()));
    }
    let enrolled = post(
        admin,
        "/api/v1/agents".into(),
        json!({"machine_id": "bench-laptop", "machine_name": "Bench laptop", "user_id": dev}),
    )
    .await?;
    let token = enrolled["token"]
        .as_str()
        .context("enrollment answered without a token")?;
    Ok((token.to_owned(), gateway.to_owned()))
}

/// The agent's temporary machine.
struct Machine {
    dir: PathBuf,
}

impl Machine {
    fn new(dir: &Path) -> Machine {
        Machine {
            dir: dir.join("machine"),
        }
    }

    fn team_file(&self) -> PathBuf {
        self.dir.join("home/.claude/CLAUDE.md")
    }

    fn command(&self) -> Result<Command> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let agent = exe.with_file_name("edict-agent");
        if !agent.exists() {
            bail!(
                "{} is missing: build it beside edict-bench (cargo build --release -p edict -p edict-agent -p edict-bench)",
                agent.display()
            );
        }
        std::fs::create_dir_all(self.dir.join("home/.claude"))?;
        let mut command = Command::new(agent);
        command
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--home")
            .arg(self.dir.join("home"))
            .arg("--org-file")
            .arg(self.dir.join("etc/CLAUDE.md"))
            .env("EDICT_AGENT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        Ok(command)
    }

    async fn login(&self, server: &str, token: &str) -> Result<()> {
        let status = self
            .command()?
            .args(["login", "--server", server, "--enrollment-token", token])
            .status()
            .await
            .context("cannot run edict-agent login")?;
        if !status.success() {
            bail!("edict-agent login failed: {status}");
        }
        Ok(())
    }

    fn run(&self) -> Result<Child> {
        let log = std::fs::File::create(self.dir.join("agent.log"))?;
        self.command()?
            .arg("run")
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start edict-agent run")
    }
}

fn managed(text: &str) -> bool {
    text.contains("<!-- edict:begin") && text.contains("<!-- edict:end")
}

/// `text` with one more line right after the begin marker's line.
fn tampered(text: &str, n: usize) -> Option<String> {
    let begin = text.find("<!-- edict:begin")?;
    let line_end = begin + text[begin..].find('\n')? + 1;
    Some(format!(
        "{}- tampered {n}: skip the tests\n{}",
        &text[..line_end],
        &text[line_end..]
    ))
}

async fn measure(
    args: &AgentRevertArgs,
    machine: &Machine,
    daemon: &Child,
) -> Result<RevertReport> {
    let pid = daemon.id().context("the agent has no pid")?;
    let file = machine.team_file();
    let deadline = Instant::now() + Duration::from_secs(30);
    let original = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if managed(&text) {
            break text;
        }
        if Instant::now() > deadline {
            bail!("the agent did not write the managed section within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Let the first write and its watcher events settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let edits = args.edits;
    let spacing = Duration::from_millis(args.spacing_ms);
    let latencies =
        tokio::task::spawn_blocking(move || edit_and_time(&file, &original, edits, spacing))
            .await
            .context("the edit loop panicked")??;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut not_restored = 0;
    for latency in &latencies {
        match latency {
            Some(d) => {
                let _ = histogram.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
            }
            None => not_restored += 1,
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu0 = cpu_time(pid)?;
    let started = Instant::now();
    let mut rss_max = 0;
    let mut rss = 0;
    while started.elapsed() < Duration::from_secs(args.idle_seconds.max(1)) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss = rss_kib(pid)?;
        rss_max = rss_max.max(rss);
    }
    let cpu = cpu_time(pid)?.saturating_sub(cpu0);
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(RevertReport {
        edits,
        restored: usize::try_from(histogram.len()).unwrap_or(usize::MAX),
        not_restored,
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
        min_ms: ms(histogram.min()),
        idle_seconds: args.idle_seconds.max(1),
        idle_rss_kib: rss,
        idle_rss_max_kib: rss_max,
        idle_cpu_percent: cpu.as_secs_f64() * 100.0 / started.elapsed().as_secs_f64(),
        goal_p99_ms: GOAL_REVERT_P99_MS,
        goal_idle_rss_kib: GOAL_IDLE_RSS_KIB,
        samples_ms: latencies
            .iter()
            .map(|l| l.map(|d| d.as_secs_f64() * 1000.0))
            .collect(),
    })
}

/// The edit loop, on a blocking thread: edit, poll every 100 µs until restored (5 s at most), wait.
fn edit_and_time(
    file: &Path,
    original: &str,
    edits: usize,
    spacing: Duration,
) -> Result<Vec<Option<Duration>>> {
    let mut latencies = Vec::with_capacity(edits);
    for n in 0..edits {
        let next = Instant::now() + spacing;
        let edited = tampered(original, n).context("the managed section disappeared")?;
        let written = Instant::now();
        std::fs::write(file, &edited)
            .with_context(|| format!("cannot write {}", file.display()))?;
        let mut restored = None;
        while written.elapsed() < Duration::from_secs(5) {
            if std::fs::read_to_string(file).is_ok_and(|text| text == original) {
                restored = Some(written.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        if restored.is_none() {
            tracing::warn!(edit = n, "the managed section was not restored within 5 s");
            // Put it back so the next edit starts from the agent's content.
            std::fs::write(file, original)?;
        }
        latencies.push(restored);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(latencies)
}

fn print(report: &RevertReport) {
    output::line(&format!(
        "edict-agent detect → revert ({} in-place edits of a block-mode section): {} restored, {} not within 5 s",
        report.edits, report.restored, report.not_restored
    ));
    output::line(&format!(
        "  write → restored: min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 ≤ {:.0} ms)",
        report.min_ms, report.p50_ms, report.p99_ms, report.max_ms, report.goal_p99_ms
    ));
    output::line(&format!(
        "  idle for {} s: RSS {} KiB (max {} KiB; goal < {} KiB), CPU {:.2} % of one core",
        report.idle_seconds,
        report.idle_rss_kib,
        report.idle_rss_max_kib,
        report.goal_idle_rss_kib,
        report.idle_cpu_percent
    ));
}
