//! The chaos test of issue 14: the whole delivery loop loses nothing while its parts are killed.
//!
//! One deployment of real processes: the `edict` binary as an api process, a relay, a projector and
//! two gateways (each its own process, on a private PostgreSQL database), a PRIVATE nats-server with
//! JetStream (so it can be restarted), and 20 `edict-agent run` daemons of 6 users spread over 3 teams,
//! each machine with its own home, organization file and snapshot, and text of the user's own outside
//! the markers. A seeded schedule of 60 operations mixes every kind of rule change (attach, detach,
//! mode change, a new approved revision, a member moved between teams) with kill -9 of the relay, the
//! projector, a gateway and agents (each restarted after a short random delay) and one or two NATS
//! restarts. Meanwhile a poller reads every agent's `status --output json` and records any revision
//! that went down. At the end (bounded wait): every agent holds exactly its teams at their latest
//! revisions, its files hold the rendered text of those teams with the user's bytes intact, and the
//! convergence API shows every agent at the latest revision of each of its teams.
//!
//! `EDICT_CHAOS_SEED=N` replays a schedule (the seed is printed at start and on failure):
//! `EDICT_CHAOS_SEED=42 cargo test -p edict --test e2e chaos -- --nocapture`. Process logs go to a
//! directory kept when the test fails or `EDICT_CHAOS_KEEP_LOGS` is set (its path is printed with the
//! seed).
// The seed and the summary are the test's output, for replaying a failure.
#![allow(clippy::print_stderr)]

use crate::harness::{
    Layout, PrivateNats, Store, TestApp, agent_binary, assert_ran, free_port, rule_spec,
    two_gateways,
};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const TEAMS: usize = 3;
const USERS: usize = 6;
const AGENTS: usize = 20;
const OPERATIONS: usize = 60;
/// How long the end state may take to settle once every process runs again.
const SETTLE: Duration = Duration::from_secs(60);
/// The whole test, set-up to verdict (CI allows 3 minutes).
const BUDGET: Duration = Duration::from_secs(175);

const BEGIN_TEAM: &str = "<!-- edict:begin layer=team -->\n";
const BEGIN_ORG: &str = "<!-- edict:begin layer=organization -->\n";
const END: &str = "<!-- edict:end -->\n";

/// splitmix64: small, good enough, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low + 1))
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Prints the seed (and where the logs are) when the test fails, whichever assertion failed.
struct SeedGuard {
    seed: u64,
    logs: PathBuf,
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::env::var_os("EDICT_CHAOS_KEEP_LOGS").is_some() && !std::thread::panicking() {
            eprintln!("chaos: process logs kept in {}", self.logs.display());
        } else if std::thread::panicking() {
            eprintln!(
                "chaos: FAILED with EDICT_CHAOS_SEED={} (process logs kept in {})",
                self.seed,
                self.logs.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("open a log file");
    Stdio::from(file)
}

/// One developer machine: its directories, the user's own text, and its daemon.
struct Machine {
    dir: tempfile::TempDir,
    logs: PathBuf,
    index: usize,
    user: usize,
    agent_id: String,
    daemon: Option<Child>,
}

impl Machine {
    fn new(index: usize, user: usize, logs: &Path) -> Machine {
        let machine = Machine {
            dir: tempfile::tempdir().expect("machine dir"),
            logs: logs.to_path_buf(),
            index,
            user,
            agent_id: String::new(),
            daemon: None,
        };
        std::fs::create_dir_all(machine.team_file().parent().unwrap()).unwrap();
        std::fs::create_dir_all(machine.org_file().parent().unwrap()).unwrap();
        // The user's bytes, outside any marker, before Edict writes anything.
        std::fs::write(machine.team_file(), machine.team_text()).unwrap();
        std::fs::write(machine.org_file(), machine.org_text()).unwrap();
        machine
    }

    fn team_file(&self) -> PathBuf {
        self.dir
            .path()
            .join("home")
            .join(".claude")
            .join("CLAUDE.md")
    }

    fn org_file(&self) -> PathBuf {
        self.dir.path().join("etc").join("CLAUDE.md")
    }

    fn team_text(&self) -> String {
        format!(
            "# Notes of machine {}\n\nMy own rules: tabs, not spaces — ünïcödé ✓\n  trailing spaces  \n",
            self.index
        )
    }

    fn org_text(&self) -> String {
        format!(
            "<!-- not a marker -->\norganization notes of machine {}\n",
            self.index
        )
    }

    fn command(&self) -> Command {
        command_for(self.dir.path())
    }

    async fn enroll(&mut self, api: &str, token: &str) {
        let output = self
            .command()
            .args(["login", "--server", api, "--output", "json"])
            .args(["--enrollment-token", token])
            .stdout(Stdio::piped())
            .stderr(log_file(&self.logs, &format!("agent-{}", self.index)))
            .output()
            .await
            .unwrap();
        let what = format!("edict-agent login of machine {}", self.index);
        assert_ran(&output, &what);
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
        self.agent_id = answer["agent_id"].as_str().unwrap().to_owned();
    }

    fn run(&mut self) {
        assert!(self.daemon.is_none());
        let daemon = self
            .command()
            .arg("run")
            .stderr(log_file(&self.logs, &format!("agent-{}", self.index)))
            .spawn()
            .unwrap();
        self.daemon = Some(daemon);
    }

    async fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.start_kill().unwrap();
            daemon.wait().await.unwrap();
        }
    }
}

/// `edict-agent` on the machine whose directories are under `dir`.
fn command_for(dir: &Path) -> Command {
    let mut command = Command::new(agent_binary());
    command
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--home")
        .arg(dir.join("home"))
        .arg("--org-file")
        .arg(dir.join("etc").join("CLAUDE.md"))
        // `info` logs each rule set the agent stores: the complete history the downgrade check reads.
        .env("EDICT_AGENT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// `edict-agent status --output json` of the machine under `dir`; None when it fails.
async fn status_of(dir: &Path) -> Result<Value, String> {
    let output = command_for(dir)
        .args(["status", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
}

/// The revisions per team in a status document.
fn held(status: &Value) -> BTreeMap<String, (u64, String)> {
    status["rulesets"]
        .as_array()
        .map(|sets| {
            sets.iter()
                .filter_map(|r| {
                    Some((
                        r["team"].as_str()?.to_owned(),
                        (r["revision"].as_u64()?, r["hash"].as_str()?.to_owned()),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Refused downgrades an agent reports (a count, or a list of them), once the agent has the field.
fn refused(status: &Value) -> Option<u64> {
    match &status["refused_downgrades"] {
        Value::Number(n) => n.as_u64(),
        Value::Array(items) => Some(items.len() as u64),
        _ => None,
    }
}

/// `text` without ANSI colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `name=` on a log line, unquoted.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let value = line[start..].split_whitespace().next()?;
    Some(value.trim_matches('"'))
}

/// Whether `user` was added to `team` again after the removal the agent learnt of at `removed`, and
/// before `stored`.
fn rejoined(
    model: &Model,
    user: usize,
    team: usize,
    removed: chrono::DateTime<chrono::Utc>,
    stored: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(removal) = model
        .memberships
        .iter()
        .filter(|(at, u, t, joined)| *u == user && *t == team && !joined && *at <= removed)
        .map(|(at, ..)| *at)
        .max()
    else {
        // No removal by the schedule before it: not a case this check can judge.
        return true;
    };
    model.memberships.iter().any(|(at, u, t, joined)| {
        *u == user && *t == team && *joined && *at > removal && *at <= stored
    })
}

/// What a machine's log shows (it has every store; the poller only samples): how many rule sets it
/// stored, every one stored at a lower revision than one it stored before for the same team, and
/// every one stored for a team it was told it left, without having joined it again.
fn history_problems(
    logs: &Path,
    machine: &Machine,
    model: &Model,
) -> (usize, Vec<String>, Vec<String>) {
    let index = machine.index;
    let text = std::fs::read_to_string(logs.join(format!("agent-{index}.log"))).unwrap_or_default();
    let mut highest: HashMap<String, u64> = HashMap::new();
    let mut removed_at: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut stored = 0;
    let mut downgrades = Vec::new();
    let mut after_removal = Vec::new();
    for line in plain(&text).lines() {
        let at = line
            .split_whitespace()
            .next()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        if line.contains("team removed") {
            if let (Some(team), Some(at)) = (field(line, "team"), at) {
                removed_at.insert(team.to_owned(), at);
            }
            continue;
        }
        if !line.contains("rule set applied") {
            continue;
        }
        if let (Some(team), Some(at)) = (field(line, "team"), at)
            && let Some(removed) = removed_at.remove(team)
            && let Some(t) = model.teams.iter().position(|id| id == team)
            && !rejoined(model, machine.user, t, removed, at)
        {
            after_removal.push(format!(
                "machine {index} stored a rule set of team {team} at {at}, after it was told at {removed} that it left the team (not added again)"
            ));
        }
        let (Some(team), Some(revision)) = (
            field(line, "team"),
            field(line, "revision").and_then(|r| r.parse::<u64>().ok()),
        ) else {
            continue;
        };
        stored += 1;
        let before = highest.entry(team.to_owned()).or_insert(0);
        if revision < *before {
            downgrades.push(format!(
                "machine {index} stored revision {revision} of team {team} after {before} (its log)"
            ));
        }
        *before = (*before).max(revision);
    }
    (stored, downgrades, after_removal)
}

/// What the poller saw while the schedule ran.
#[derive(Default)]
struct Watch {
    /// Highest revision per (machine, team) seen so far.
    highest: HashMap<(usize, String), u64>,
    /// Every time a machine was seen holding a lower revision than it held before.
    downgrades: Vec<String>,
    /// Refused downgrades per machine (the latest count reported).
    refused: BTreeMap<usize, u64>,
    /// Status reads that failed (while a daemon is killed mid-write, for instance).
    failed_reads: Vec<String>,
    rounds: u64,
}

impl Watch {
    fn observe(&mut self, machine: usize, status: &Value) {
        for (team, (revision, _)) in held(status) {
            let highest = self.highest.entry((machine, team.clone())).or_insert(0);
            if revision < *highest {
                self.downgrades.push(format!(
                    "machine {machine} held revision {highest} of team {team}, then stored {revision}"
                ));
            }
            *highest = (*highest).max(revision);
        }
        if let Some(count) = refused(status) {
            self.refused.insert(machine, count);
        }
    }
}

/// Polls every machine's status until `stop`.
fn spawn_poller(
    dirs: Vec<PathBuf>,
    watch: Arc<Mutex<Watch>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !*stop.borrow() {
            for (machine, dir) in dirs.iter().enumerate() {
                match status_of(dir).await {
                    Ok(status) => watch.lock().unwrap().observe(machine, &status),
                    Err(error) => watch
                        .lock()
                        .unwrap()
                        .failed_reads
                        .push(format!("machine {machine}: {}", error.trim())),
                }
            }
            watch.lock().unwrap().rounds += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The server processes other than the api process, each restartable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Relay,
    Projector,
    Gateway(usize),
}

impl Role {
    fn name(self) -> String {
        match self {
            Role::Relay => "relay".into(),
            Role::Projector => "projector".into(),
            Role::Gateway(n) => format!("gateway-{n}"),
        }
    }
}

/// Something killed, to start again at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Down {
    Server(Role),
    Agent(usize),
    Nats,
}

struct Deployment {
    app: TestApp,
    gateways: [String; 2],
    servers: BTreeMap<Role, Child>,
    nats: PrivateNats,
    logs: PathBuf,
}

impl Deployment {
    fn start(&mut self, role: Role) {
        assert!(!self.servers.contains_key(&role));
        let (roles, env) = match role {
            Role::Relay => ("relay", None),
            Role::Projector => ("projector", None),
            Role::Gateway(n) => ("gateway", Some(self.gateways[n].clone())),
        };
        let mut command = self.app.command(Some(roles), free_port());
        if let Some(listen) = env {
            command.env("EDICT_GATEWAY_LISTEN", listen);
        }
        command.stderr(log_file(&self.logs, &role.name()));
        self.servers
            .insert(role, command.spawn().expect("spawn edict serve"));
    }

    async fn kill(&mut self, role: Role) {
        if let Some(mut child) = self.servers.remove(&role) {
            child.start_kill().expect("kill -9");
            child.wait().await.expect("wait for the killed process");
        }
    }
}

/// A rule of the library as the schedule changed it.
struct RuleModel {
    id: String,
    name: String,
    revisions: u32,
    /// Team index → enforcement mode.
    attached: BTreeMap<usize, &'static str>,
}

/// The organization as the schedule changed it (the test's own model, so the schedule depends on the
/// seed only, not on timing).
struct Model {
    teams: Vec<String>,
    users: Vec<String>,
    user_teams: Vec<BTreeSet<usize>>,
    rules: Vec<RuleModel>,
    /// Every membership change (wall clock just before its request, user, team, joined or left),
    /// to tell a rule set stored after a removal from one stored after joining again.
    memberships: Vec<(chrono::DateTime<chrono::Utc>, usize, usize, bool)>,
}

const MODES: [&str; 3] = ["block", "warning", "temporary"];

fn enforcement(mode: &str) -> Value {
    if mode == "temporary" {
        json!({"mode": mode, "temporary_timeout_secs": 3600})
    } else {
        json!({"mode": mode})
    }
}

/// One API request that must succeed; retried while the server answers 5xx or 409 (a dependency
/// restarting), for at most 20 s.
async fn must(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, answer) = app
            .call(method.clone(), path, Some(token), body.clone())
            .await;
        if status.is_success() {
            return answer;
        }
        let retry = status.is_server_error() || status == reqwest::StatusCode::CONFLICT;
        assert!(
            retry && Instant::now() < deadline,
            "{method} {path}: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Drafts, submits and approves a team-layer rule; answers its id.
async fn approved_rule(app: &TestApp, admin: &str, second: &str, name: &str) -> String {
    let rule = must(
        app,
        Method::POST,
        "/api/v1/rules",
        admin,
        Some(rule_spec(name, "team")),
    )
    .await;
    let rule = rule["id"].as_str().unwrap().to_owned();
    must(
        app,
        Method::POST,
        &format!("/api/v1/rules/{rule}/submit"),
        admin,
        Some(json!({})),
    )
    .await;
    must(
        app,
        Method::POST,
        &format!("/api/v1/rules/{rule}/approve"),
        second,
        Some(json!({})),
    )
    .await;
    rule
}

/// Changes how team `t` enforces rule `r` to another mode; answers what it did.
async fn change_mode(
    app: &TestApp,
    admin: &str,
    model: &mut Model,
    rng: &mut Rng,
    r: usize,
    t: usize,
) -> String {
    let old = model.rules[r].attached[&t];
    let choices: Vec<&'static str> = MODES.iter().copied().filter(|m| *m != old).collect();
    let mode = rng.pick(&choices);
    model.rules[r].attached.insert(t, mode);
    let path = format!(
        "/api/v1/teams/{}/rules/{}",
        model.teams[t], model.rules[r].id
    );
    must(app, Method::PATCH, &path, admin, Some(enforcement(mode))).await;
    format!("rule {r} in team {t}: {old} -> {mode}")
}

/// Everything that is not as it should be at the end; empty when the loop converged.
async fn end_state_problems(
    app: &TestApp,
    admin: &str,
    model: &Model,
    machines: &[Machine],
) -> Vec<String> {
    let mut problems = Vec::new();
    // The latest revision of each team, its hash, its rendered layers, and who enforces what.
    let mut latest = BTreeMap::new();
    let mut convergence = BTreeMap::new();
    for team in &model.teams {
        let (status, doc) = app
            .get(&format!("/api/v1/teams/{team}/ruleset"), admin)
            .await;
        let (Some(revision), Some(hash)) = (doc["revision"].as_u64(), doc["hash"].as_str()) else {
            problems.push(format!(
                "team {team}: no rule set from the API ({status} {doc})"
            ));
            continue;
        };
        latest.insert(team.clone(), (revision, hash.to_owned(), doc.clone()));
        let view = app.convergence(admin, team).await;
        if view["latest_revision"].as_u64() != Some(revision) {
            problems.push(format!(
                "team {team}: convergence says latest revision {}, the rule set is at {revision}",
                view["latest_revision"]
            ));
        }
        let rows: HashMap<String, (Option<u64>, String)> = view["agents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|row| {
                (
                    row["agent_id"].as_str().unwrap_or_default().to_owned(),
                    (
                        row["revision"].as_u64(),
                        row["hash"].as_str().unwrap_or_default().to_owned(),
                    ),
                )
            })
            .collect();
        convergence.insert(team.clone(), rows);
    }
    // The test's own model agrees with the server (else a failure below would be the test's).
    for (t, team) in model.teams.iter().enumerate() {
        let (_, view) = app.get(&format!("/api/v1/teams/{team}"), admin).await;
        let members: BTreeSet<&str> = view["members"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["user_id"].as_str()).collect())
            .unwrap_or_default();
        let expected: BTreeSet<&str> = (0..model.users.len())
            .filter(|u| model.user_teams[*u].contains(&t))
            .map(|u| model.users[u].as_str())
            .collect();
        let rules: BTreeSet<&str> = view["rules"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["rule_id"].as_str()).collect())
            .unwrap_or_default();
        let attached: BTreeSet<&str> = model
            .rules
            .iter()
            .filter(|r| r.attached.contains_key(&t))
            .map(|r| r.id.as_str())
            .collect();
        if members != expected || rules != attached {
            problems.push(format!(
                "TEST BUG: the model of team {t} differs from the server: members {members:?} vs {expected:?}, rules {rules:?} vs {attached:?}"
            ));
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    for machine in machines {
        let teams: BTreeSet<&String> = model.user_teams[machine.user]
            .iter()
            .map(|t| &model.teams[*t])
            .collect();
        let name = format!("machine {} (agent {})", machine.index, machine.agent_id);
        // Convergence: the server knows this agent enforces the latest revision of each of its teams.
        for team in &teams {
            let (revision, hash, _) = &latest[*team];
            match convergence[*team].get(&machine.agent_id) {
                Some((Some(r), h)) if r == revision && h == hash => {}
                other => problems.push(format!(
                    "{name}: convergence of team {team} shows {other:?}, latest is {revision}"
                )),
            }
        }
        // The agent holds exactly its teams, each at the latest revision.
        match status_of(machine.dir.path()).await {
            Ok(status) => {
                let held = held(&status);
                let held_teams: BTreeSet<&String> = held.keys().collect();
                if held_teams != teams {
                    problems.push(format!(
                        "{name}: holds teams {held_teams:?}, is a member of {teams:?}"
                    ));
                }
                for team in &teams {
                    let (revision, hash, _) = &latest[*team];
                    if let Some((r, h)) = held.get(*team)
                        && (r != revision || h != hash)
                    {
                        problems.push(format!(
                            "{name}: holds revision {r} of team {team}, latest is {revision}"
                        ));
                    }
                }
            }
            Err(error) => problems.push(format!("{name}: status failed: {error}")),
        }
        // The files: the rendered layers of its teams (distinct texts in team id order, as the agent
        // composes them), the user's bytes intact around them.
        for (path, user_text, begin, layer) in [
            (machine.team_file(), machine.team_text(), BEGIN_TEAM, "team"),
            (
                machine.org_file(),
                machine.org_text(),
                BEGIN_ORG,
                "organization",
            ),
        ] {
            let mut texts: Vec<String> = Vec::new();
            for team in &teams {
                let text = latest[*team].2["layers"][layer]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if !text.is_empty() && !texts.contains(&text) {
                    texts.push(text);
                }
            }
            let mut body = texts.join("\n");
            if !body.is_empty() && !body.ends_with('\n') {
                body.push('\n');
            }
            let found = std::fs::read(&path).unwrap_or_default();
            let expected: Vec<Vec<u8>> = if body.is_empty() {
                // Never written, or written and removed (the separating blank line stays).
                vec![
                    user_text.clone().into_bytes(),
                    format!("{user_text}\n").into_bytes(),
                ]
            } else {
                vec![format!("{user_text}\n{begin}{body}{END}").into_bytes()]
            };
            if !expected.contains(&found) {
                problems.push(format!(
                    "{name}: {} differs from the rendered latest revisions.\n--- expected ---\n{}\n--- found ---\n{}",
                    path.display(),
                    String::from_utf8_lossy(&expected[0]),
                    String::from_utf8_lossy(&found)
                ));
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_loop_loses_nothing_under_chaos() {
    let seed = std::env::var("EDICT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let logs = std::env::temp_dir().join(format!("edict-chaos-{seed}-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    eprintln!(
        "chaos: EDICT_CHAOS_SEED={seed} (logs in {})",
        logs.display()
    );
    let _guard = SeedGuard {
        seed,
        logs: logs.clone(),
    };
    let outcome = tokio::time::timeout(BUDGET, chaos(seed, logs)).await;
    assert!(
        outcome.is_ok(),
        "the chaos test did not finish within {BUDGET:?}"
    );
}

async fn chaos(seed: u64, logs: PathBuf) {
    let started = Instant::now();
    let mut rng = Rng(seed);

    // The deployment: private NATS, the api process, relay, projector, two gateways.
    let nats = PrivateNats::start().await;
    let (gateways, urls) = two_gateways();
    let layout = Layout {
        nats_url: Some(nats.url()),
        roles: Some("api".into()),
        ..Layout::distributed()
    };
    let app = TestApp::spawn_with_vars(
        Store::Postgres,
        layout,
        &[("EDICT_GATEWAY_PUBLIC_URLS", &urls)],
    )
    .await;
    let mut deployment = Deployment {
        app,
        gateways,
        servers: BTreeMap::new(),
        nats,
        logs: logs.clone(),
    };
    for role in [
        Role::Relay,
        Role::Projector,
        Role::Gateway(0),
        Role::Gateway(1),
    ] {
        deployment.start(role);
    }
    let app = &deployment.app;
    let (admin, second) = app.admins().await;

    // The organization: 3 teams, 6 users (2 per team), a first rule attached to each team.
    let mut model = Model {
        teams: Vec::new(),
        users: Vec::new(),
        user_teams: Vec::new(),
        rules: Vec::new(),
        memberships: Vec::new(),
    };
    for t in 0..TEAMS {
        let team = must(
            app,
            Method::POST,
            "/api/v1/teams",
            &admin,
            Some(json!({"name": format!("chaos team {t}")})),
        )
        .await;
        model.teams.push(team["id"].as_str().unwrap().to_owned());
    }
    for u in 0..USERS {
        let (id, _) = app.user(&admin, &format!("dev{u}"), &["member"]).await;
        let team = u % TEAMS;
        must(
            app,
            Method::POST,
            &format!("/api/v1/teams/{}/members", model.teams[team]),
            &admin,
            Some(json!({"user_id": id, "role": "member"})),
        )
        .await;
        model.users.push(id);
        model.user_teams.push(BTreeSet::from([team]));
    }
    for t in 0..TEAMS {
        let name = format!("chaos rule {}", model.rules.len());
        let id = approved_rule(app, &admin, &second, &name).await;
        let mode = MODES[t % MODES.len()];
        must(
            app,
            Method::POST,
            &format!("/api/v1/teams/{}/rules", model.teams[t]),
            &admin,
            Some(json!({"rule_id": id, "enforcement": enforcement(mode)})),
        )
        .await;
        model.rules.push(RuleModel {
            id,
            name,
            revisions: 1,
            attached: BTreeMap::from([(t, mode)]),
        });
    }

    // 20 machines, enrolled with their user's enrollment token, then started.
    let mut machines: Vec<Machine> = (0..AGENTS)
        .map(|i| Machine::new(i, i % USERS, &logs))
        .collect();
    let mut tokens = Vec::new();
    for u in 0..USERS {
        let token = must(
            app,
            Method::POST,
            "/api/v1/enrollment-tokens",
            &admin,
            Some(json!({"user_id": model.users[u], "uses": AGENTS})),
        )
        .await;
        tokens.push(token["token"].as_str().unwrap().to_owned());
    }
    futures::future::join_all(machines.iter_mut().map(|m| {
        let token = tokens[m.user].clone();
        let base = app.base.clone();
        async move { m.enroll(&base, &token).await }
    }))
    .await;
    for machine in &mut machines {
        machine.run();
    }
    let watch = Arc::new(Mutex::new(Watch::default()));
    let (stop_poller, stopped) = tokio::sync::watch::channel(false);
    let poller = spawn_poller(
        machines
            .iter()
            .map(|m| m.dir.path().to_path_buf())
            .collect(),
        watch.clone(),
        stopped,
    );
    eprintln!("chaos: set up in {:?}", started.elapsed());

    // The schedule.
    // One or two NATS restarts; the last one late, when a lost publication has little chance to be
    // covered by a later change of the same team.
    let mut nats_restarts = BTreeSet::from([OPERATIONS - 15 + rng.below(13)]);
    if rng.below(2) == 0 {
        nats_restarts.insert(5 + rng.below(OPERATIONS / 2));
    }
    let mut pending: Vec<(Instant, Down)> = Vec::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for step in 0..OPERATIONS {
        // Start again what is due.
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(at, _)| *at <= now);
        pending = later;
        for (_, down) in due {
            revive(&mut deployment, &mut machines, down).await;
        }
        let app = &deployment.app;
        let kind = if nats_restarts.contains(&step) {
            "nats_restart"
        } else {
            let roll = rng.below(100);
            match roll {
                0..=17 => "attach",
                18..=29 => "detach",
                30..=43 => "mode",
                44..=55 => "revision",
                56..=65 => "membership",
                66..=70 => "kill_relay",
                71..=75 => "kill_projector",
                76..=83 => "kill_gateway",
                _ => "kill_agent",
            }
        };
        let attached: Vec<(usize, usize)> = model
            .rules
            .iter()
            .enumerate()
            .flat_map(|(r, rule)| rule.attached.keys().map(move |t| (r, *t)))
            .collect();
        // A change that has nothing to act on becomes an attach.
        let kind = match kind {
            "detach" | "mode" if attached.is_empty() => "attach",
            other => other,
        };
        *counts.entry(kind).or_default() += 1;
        let what = match kind {
            "attach" => {
                let t = rng.below(TEAMS);
                let candidates: Vec<usize> = (0..model.rules.len())
                    .filter(|r| !model.rules[*r].attached.contains_key(&t))
                    .collect();
                let r = if candidates.is_empty() || rng.below(100) < 40 {
                    let name = format!("chaos rule {}", model.rules.len());
                    let id = approved_rule(app, &admin, &second, &name).await;
                    model.rules.push(RuleModel {
                        id,
                        name,
                        revisions: 1,
                        attached: BTreeMap::new(),
                    });
                    model.rules.len() - 1
                } else {
                    rng.pick(&candidates)
                };
                let mode = rng.pick(&MODES);
                must(
                    app,
                    Method::POST,
                    &format!("/api/v1/teams/{}/rules", model.teams[t]),
                    &admin,
                    Some(json!({"rule_id": model.rules[r].id, "enforcement": enforcement(mode)})),
                )
                .await;
                model.rules[r].attached.insert(t, mode);
                format!("attach rule {r} to team {t} ({mode})")
            }
            "detach" => {
                let (r, t) = rng.pick(&attached);
                must(
                    app,
                    Method::DELETE,
                    &format!(
                        "/api/v1/teams/{}/rules/{}",
                        model.teams[t], model.rules[r].id
                    ),
                    &admin,
                    None,
                )
                .await;
                model.rules[r].attached.remove(&t);
                format!("detach rule {r} from team {t}")
            }
            "mode" => {
                let (r, t) = rng.pick(&attached);
                change_mode(app, &admin, &mut model, &mut rng, r, t).await
            }
            "revision" => {
                let r = if attached.is_empty() {
                    rng.below(model.rules.len())
                } else {
                    rng.pick(&attached).0
                };
                let rule = &mut model.rules[r];
                rule.revisions += 1;
                let mut spec = rule_spec(&rule.name, "team");
                spec["content"] = json!(format!(
                    "- {}: revision {} says run the tests twice.\n",
                    rule.name, rule.revisions
                ));
                let id = rule.id.clone();
                must(
                    app,
                    Method::POST,
                    &format!("/api/v1/rules/{id}/revisions"),
                    &admin,
                    Some(spec),
                )
                .await;
                must(
                    app,
                    Method::POST,
                    &format!("/api/v1/rules/{id}/submit"),
                    &admin,
                    Some(json!({})),
                )
                .await;
                must(
                    app,
                    Method::POST,
                    &format!("/api/v1/rules/{id}/approve"),
                    &second,
                    Some(json!({})),
                )
                .await;
                format!("rule {r}: revision {} approved", model.rules[r].revisions)
            }
            "membership" => {
                let u = rng.below(USERS);
                let outside: Vec<usize> = (0..TEAMS)
                    .filter(|t| !model.user_teams[u].contains(t))
                    .collect();
                // Joins a team it is not in (unless in all of them), and most often leaves one of
                // its other teams: a move. It stays in one team at least.
                let mut joined = None;
                if !outside.is_empty() {
                    let to = rng.pick(&outside);
                    model.memberships.push((chrono::Utc::now(), u, to, true));
                    must(
                        app,
                        Method::POST,
                        &format!("/api/v1/teams/{}/members", model.teams[to]),
                        &admin,
                        Some(json!({"user_id": model.users[u], "role": "member"})),
                    )
                    .await;
                    model.user_teams[u].insert(to);
                    joined = Some(to);
                }
                let others: Vec<usize> = model.user_teams[u]
                    .iter()
                    .copied()
                    .filter(|t| Some(*t) != joined)
                    .collect();
                let leaves = joined.is_none() || rng.below(100) < 70;
                let mut left = None;
                let mut during = String::new();
                if leaves && model.user_teams[u].len() > 1 && !others.is_empty() {
                    let from = rng.pick(&others);
                    let path = format!(
                        "/api/v1/teams/{}/members/{}",
                        model.teams[from], model.users[u]
                    );
                    model.memberships.push((chrono::Utc::now(), u, from, false));
                    let leave = must(app, Method::DELETE, &path, &admin, None);
                    // Half the time the team it leaves changes at the same moment: a push racing
                    // the removal.
                    let in_team: Vec<usize> = (0..model.rules.len())
                        .filter(|r| model.rules[*r].attached.contains_key(&from))
                        .collect();
                    if !in_team.is_empty() && rng.below(2) == 0 {
                        let r = rng.pick(&in_team);
                        let (_, change) = tokio::join!(
                            leave,
                            change_mode(app, &admin, &mut model, &mut rng, r, from)
                        );
                        during = format!(" while {change}");
                    } else {
                        leave.await;
                    }
                    model.user_teams[u].remove(&from);
                    left = Some(from);
                }
                format!("user {u}: joined team {joined:?}, left team {left:?}{during}")
            }
            "kill_relay" | "kill_projector" | "kill_gateway" => {
                let role = match kind {
                    "kill_relay" => Role::Relay,
                    "kill_projector" => Role::Projector,
                    _ => Role::Gateway(rng.below(2)),
                };
                let delay = rng.millis(200, 3000);
                if deployment.servers.contains_key(&role) {
                    deployment.kill(role).await;
                    pending.push((Instant::now() + delay, Down::Server(role)));
                }
                format!("kill -9 {} (back in {delay:?})", role.name())
            }
            "kill_agent" => {
                let m = rng.below(AGENTS);
                let delay = rng.millis(100, 2000);
                if machines[m].daemon.is_some() {
                    machines[m].kill().await;
                    pending.push((Instant::now() + delay, Down::Agent(m)));
                }
                format!("kill -9 agent {m} (back in {delay:?})")
            }
            _ => {
                // Right after a burst of changes of every team, so that NATS dies while the
                // projector is busy with them: some rule set is between its commit and its put, and
                // it may be the last change of its team.
                let mut changes = Vec::new();
                for _ in 0..2 + rng.below(5) {
                    if !attached.is_empty() {
                        let (r, t) = rng.pick(&attached);
                        changes.push(change_mode(app, &admin, &mut model, &mut rng, r, t).await);
                    }
                }
                tokio::time::sleep(rng.millis(0, 60)).await;
                // The late restart is a long outage: longer than a client's publish timeout, so a
                // put in flight fails instead of waiting for the server to come back.
                let delay =
                    if step + 1 == OPERATIONS || nats_restarts.range(step + 1..).next().is_none() {
                        rng.millis(5000, 8000)
                    } else {
                        rng.millis(300, 2000)
                    };
                if deployment.nats.is_running() {
                    deployment.nats.kill().await;
                    pending.push((Instant::now() + delay, Down::Nats));
                }
                format!(
                    "{}, then kill -9 nats-server (back in {delay:?})",
                    changes.join(", ")
                )
            }
        };
        eprintln!("chaos: {:>6.1?} op {step:>2}: {what}", started.elapsed());
        tokio::time::sleep(rng.millis(0, 400)).await;
    }
    // Everything killed runs again.
    pending.sort();
    for (at, down) in pending {
        tokio::time::sleep_until(at.into()).await;
        revive(&mut deployment, &mut machines, down).await;
    }
    let schedule_done = started.elapsed();
    eprintln!("chaos: schedule done at {schedule_done:?} ({counts:?})");

    // The end: every agent converged, its files as rendered, the user's bytes intact.
    let app = &deployment.app;
    let deadline = Instant::now() + SETTLE;
    let mut shown_slow = false;
    let (settled, problems) = loop {
        let problems = end_state_problems(app, &admin, &model, &machines).await;
        if problems.is_empty() || Instant::now() >= deadline {
            break (problems.is_empty().then_some(()), problems);
        }
        // What is still missing after a while says what is slow to heal.
        if !shown_slow && Instant::now() + SETTLE - Duration::from_secs(5) >= deadline {
            shown_slow = true;
            eprintln!(
                "chaos: still settling 5 s after the schedule ({} problems), e.g.:\n{}",
                problems.len(),
                problems
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = stop_poller.send(true);
    let _ = poller.await;
    let watch = std::mem::take(&mut *watch.lock().unwrap());
    let mut stored = 0;
    let mut logged_downgrades = Vec::new();
    let mut after_removal = Vec::new();
    for machine in &machines {
        let (count, downgrades, removed) = history_problems(&logs, machine, &model);
        stored += count;
        logged_downgrades.extend(downgrades);
        after_removal.extend(removed);
    }
    let refused_total: u64 = watch.refused.values().sum();
    eprintln!(
        "chaos: settled {} in {:?} after the schedule; {stored} rule sets stored by agents, {} downgrades and {} stores after removal in their logs; {} status rounds, {} failed status reads, {} downgrades seen, refused downgrades reported: {} ({})",
        if settled.is_some() { "ok" } else { "NOT" },
        started.elapsed() - schedule_done,
        logged_downgrades.len(),
        after_removal.len(),
        watch.rounds,
        watch.failed_reads.len(),
        watch.downgrades.len(),
        refused_total,
        if watch.refused.is_empty() {
            "the agents do not report refused_downgrades yet".to_owned()
        } else {
            format!("per machine {:?}", watch.refused)
        },
    );
    for failed in watch.failed_reads.iter().take(5) {
        eprintln!("chaos: failed status read: {failed}");
    }
    assert!(
        stored > 0,
        "the agents' logs show no rule set stored: the log format changed?"
    );
    assert!(
        after_removal.is_empty(),
        "agents stored rule sets of teams they had left:\n{}",
        after_removal.join("\n")
    );
    assert!(
        logged_downgrades.is_empty(),
        "agents stored a lower revision than one they held:\n{}",
        logged_downgrades.join("\n")
    );
    assert!(
        watch.downgrades.is_empty(),
        "agents stored a lower revision than one they held:\n{}",
        watch.downgrades.join("\n")
    );
    assert!(
        settled.is_some(),
        "not converged {SETTLE:?} after the schedule ({} problems):\n{}",
        problems.len(),
        problems
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("chaos: passed in {:?}", started.elapsed());
    for machine in &mut machines {
        machine.kill().await;
    }
    for role in deployment.servers.keys().copied().collect::<Vec<_>>() {
        deployment.kill(role).await;
    }
}

/// Starts again what was killed.
async fn revive(deployment: &mut Deployment, machines: &mut [Machine], down: Down) {
    match down {
        Down::Server(role) => deployment.start(role),
        Down::Agent(m) => machines[m].run(),
        Down::Nats => deployment.nats.restart().await,
    }
}

/// The log checks read the agent's real log format (lines copied from a run), and judge a store
/// after a removal by the schedule's membership changes.
#[test]
fn the_history_checks_find_downgrades_and_stores_after_removal() {
    let logs = tempfile::tempdir().unwrap();
    let team = "01a241c6-5f87-7593-af20-3a81f6a10bf7";
    let model = Model {
        teams: vec![team.to_owned()],
        users: vec!["user".into()],
        user_teams: vec![BTreeSet::new()],
        rules: Vec::new(),
        memberships: vec![(
            chrono::DateTime::parse_from_rfc3339("2026-12-04T15:57:53.000000Z")
                .unwrap()
                .with_timezone(&chrono::Utc),
            0,
            0,
            false,
        )],
    };
    let machine = Machine::new(0, 0, logs.path());
    let line = |at: &str, what: &str| {
        format!(
            "\u{1b}[2m2026-12-04T{at}Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2medict_agent::client\u{1b}[0m\u{1b}[2m:\u{1b}[0m {what}\n"
        )
    };
    let log = [
        line(
            "15:57:49.538536",
            &format!("rule set applied team=\"{team}\" revision=9"),
        ),
        line(
            "15:57:49.644707",
            &format!("rule set applied team=\"{team}\" revision=8"),
        ),
        line("15:57:53.833989", &format!("team removed team=\"{team}\"")),
        line(
            "15:57:53.894020",
            &format!("rule set applied team=\"{team}\" revision=10"),
        ),
    ]
    .concat();
    std::fs::write(logs.path().join("agent-0.log"), &log).unwrap();
    let (stored, downgrades, after_removal) = history_problems(logs.path(), &machine, &model);
    assert_eq!(stored, 3);
    assert_eq!(downgrades.len(), 1, "{downgrades:?}");
    assert_eq!(after_removal.len(), 1, "{after_removal:?}");

    // Added again before the store: legitimate.
    let mut model = model;
    model.memberships.push((
        chrono::DateTime::parse_from_rfc3339("2026-12-04T15:57:53.850000Z")
            .unwrap()
            .with_timezone(&chrono::Utc),
        0,
        0,
        true,
    ));
    let (_, _, after_removal) = history_problems(logs.path(), &machine, &model);
    assert!(after_removal.is_empty(), "{after_removal:?}");
}
