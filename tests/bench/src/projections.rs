//! `edict-bench rebuild` and `edict-bench lag`: what the read models cost.
//!
//! - [`rebuild`]: how fast the `team_rulesets` projection folds a long, realistic history, on the live path
//!   (catch-up in batched transactions) and as a rebuild (replay in memory, bulk writes, swap), and that
//!   both produce the same read model (content hashes).
//! - [`lag`]: how long after a command's response its event is in each read model, with Edict running as
//!   `edict serve` runs it on PostgreSQL and NATS (API, relay, the five projectors) under a fixed offered
//!   load.

use super::{Fleet, ScratchPostgres, Step, bench_settings, emit, short_id, step};
use anyhow::{Context, Result, bail};
use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use edict::app;
use edict::output::{self, OutputFormat};
use edict_domain::rule::{
    ApprovalQuorum, Category, Description, PathGlob, RuleCommand, RuleContent, RuleName, RuleSpec,
    Tag, WorkingState,
};
use edict_domain::team::{TeamCommand, TeamName, TeamRole};
use edict_domain::{Enforcement, Layer, Reason, Rule, RuleId, Team, TeamId, UserId};
use edict_infrastructure::nats::{self, Nats, NatsRelay, NatsSettings, RelaySettings};
use edict_infrastructure::projection::{ProjectionRunner, RebuildPhase, RebuildProgress};
use edict_infrastructure::store::Database;
use edict_test_kit::seed::{SeedEvent, seed_events};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

/// The rebuild rate `edict-bench rebuild` aims for, events per second (at 1,000,000 events).
const REBUILD_GOAL_PER_SEC: f64 = 50_000.0;
/// The lag `edict-bench lag` aims for at the 99th percentile, milliseconds (at 500 commands/s).
const LAG_GOAL_P99_MS: f64 = 50.0;
/// How often the lag sampler reads `projection_state`.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);
/// How long the lag bench waits, after the load stops, for the read models to apply the last commands.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often long phases log their progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------
// edict-bench rebuild

/// The store `edict-bench rebuild` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A scratch PostgreSQL database (created and dropped).
    Postgres,
    /// A temporary SQLite file (deleted afterwards).
    Sqlite,
}

/// Options of `edict-bench rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Events to seed.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The store to seed and rebuild on.
    #[arg(long, value_enum, default_value = "postgres")]
    store: StoreKind,
    /// Where the scratch databases go.
    #[command(flatten)]
    scratch: ScratchPostgres,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: OutputFormat,
}

/// One way of folding the log, timed.
#[derive(Debug, Clone, Serialize)]
struct Fold {
    events: u64,
    seconds: f64,
    events_per_sec: f64,
}

impl Fold {
    fn new(events: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        Fold {
            events,
            seconds,
            events_per_sec: events as f64 / seconds.max(f64::EPSILON),
        }
    }
}

/// What `edict-bench rebuild` measured.
#[derive(Debug, Clone, Serialize)]
struct RebuildReport {
    store: &'static str,
    projection: &'static str,
    events: u64,
    seed_seconds: f64,
    history: HistoryShape,
    /// `catch_up()` from the start: batches of 500 events per transaction, documents loaded through SQL.
    live: Fold,
    /// `rebuild()`: replay in memory, bulk writes, swap.
    rebuild: Fold,
    rebuild_docs: u64,
    rebuild_generation: i64,
    /// The served generation after the live catch-up.
    live_hash: String,
    /// The rebuild's hash of its in-memory documents ([`RebuildReport::rebuild`]'s report).
    rebuilt_hash: String,
    /// The hash of the rebuilt generation as stored, read back after the swap.
    rebuilt_stored_hash: String,
    hashes_match: bool,
    goal_events_per_sec: f64,
    goal_met: bool,
}

/// Seeds a realistic history and measures the `team_rulesets` projection over it, live and rebuilt.
///
/// 1. In a scratch store (a fresh PostgreSQL database by default, or a temporary SQLite file), seeds
///    `--events` events of a generated organization: about 2,000 rules (most on the team layer, 15 % on
///    the project layer with path triggers, 2 % on the organization layer), 200 teams with 3 to 12
///    members each and 5 to 25 attached rules with varied enforcement, then the bulk: review cycles of
///    team and project rules (revise, edit, maybe more edits, submit, approve; a few rejected and
///    reworked), enforcement changes, attach and detach, membership changes, and, rarely, review cycles
///    and enforcement changes of organization rules (each of which recomputes every team).
///    Every event comes from a command handled by the real `Rule` and `Team` aggregates in memory and is
///    stored as cqrs-es stores it (payload, type, version, metadata), streamed into
///    `edict_test_kit::seed::seed_events` without holding the history in memory.
/// 2. Live path: a fresh `ProjectionRunner` for `team_rulesets` catches up from the start of the log,
///    as a projector that starts from scratch does (500 events per transaction, documents loaded
///    through SQL inside it); events per second.
/// 3. Rebuild: `rebuild()` of the same projection (a new generation, replayed in memory, written in
///    bulk, swapped in); events per second.
/// 4. Compares the content hash of the live generation with the rebuild's (its in-memory documents and
///    the documents it stored): they must be equal.
///
/// The scratch store is removed at the end, also on failure (best effort).
pub async fn rebuild(args: RebuildArgs) -> Result<()> {
    let (database, scratch) = Scratch::create(args.store, &args.scratch.postgres_url).await?;
    let result = measure_rebuild(&database, &args).await;
    database.close().await;
    scratch.remove().await;
    let report = result?;
    emit(args.output, &report, print_rebuild)?;
    if !report.hashes_match {
        bail!("the rebuilt read model differs from the live one");
    }
    Ok(())
}

/// A scratch store and how to remove it.
enum Scratch {
    Postgres { admin_url: String, url: String },
    Sqlite { dir: PathBuf },
}

impl Scratch {
    async fn create(kind: StoreKind, admin_url: &str) -> Result<(Database, Scratch)> {
        match kind {
            StoreKind::Postgres => {
                let (database, url) =
                    edict_test_kit::create_isolated_postgres(admin_url, "edict_bench_rebuild")
                        .await
                        .context("cannot create a scratch PostgreSQL database")?;
                Ok((
                    database,
                    Scratch::Postgres {
                        admin_url: admin_url.to_owned(),
                        url,
                    },
                ))
            }
            StoreKind::Sqlite => {
                let dir = std::env::temp_dir()
                    .join(format!("edict-bench-rebuild-{}", Uuid::new_v4().simple()));
                let url = format!("sqlite://{}", dir.join("edict.db").display());
                let scratch = Scratch::Sqlite { dir };
                let database = async {
                    let database = Database::connect(&url).await?;
                    database.migrate().await?;
                    anyhow::Ok(database)
                }
                .await;
                match database {
                    Ok(database) => Ok((database, scratch)),
                    Err(error) => {
                        scratch.remove().await;
                        Err(error.context("cannot create a scratch SQLite store"))
                    }
                }
            }
        }
    }

    /// Best effort: a failure is logged.
    async fn remove(self) {
        match self {
            Scratch::Postgres { admin_url, url } => {
                if let Err(error) = edict_test_kit::drop_isolated_postgres(&admin_url, &url).await {
                    tracing::warn!(%error, "cannot drop the scratch database");
                }
            }
            Scratch::Sqlite { dir } => {
                if let Err(error) = tokio::fs::remove_dir_all(&dir).await {
                    tracing::warn!(%error, dir = %dir.display(), "cannot delete the scratch store");
                }
            }
        }
    }
}

async fn measure_rebuild(database: &Database, args: &RebuildArgs) -> Result<RebuildReport> {
    const PROJECTION: &str = "team_rulesets";
    tracing::info!(
        events = args.events,
        store = database.kind(),
        "seeding a generated history"
    );
    let mut history = History::new(0x0ed1c7)?;
    let started = Instant::now();
    let mut last_log = Instant::now();
    let seeded = seed_events(database, args.events, |i| {
        if last_log.elapsed() >= PROGRESS_EVERY {
            last_log = Instant::now();
            tracing::info!(events = i, "seeding");
        }
        history.next_event()
    })
    .await
    .context("cannot seed the events")?;
    let seed_elapsed = started.elapsed();
    let shape = history.shape();
    if shape.refused_commands > 0 {
        tracing::warn!(
            refused = shape.refused_commands,
            first = history.first_refusal.as_deref().unwrap_or(""),
            "the generator issued commands the aggregates refused (they wrote no event)"
        );
    }
    drop(history);
    tracing::info!(
        events = seeded,
        seconds = seed_elapsed.as_secs_f64(),
        "seeded"
    );

    let projection = edict_projections::by_name(PROJECTION)
        .with_context(|| format!("no projection named {PROJECTION}"))?;
    let runner = ProjectionRunner::new(database.clone(), projection, None);
    runner.ensure().await?;

    tracing::info!("live path: catching up from the start of the log");
    let started = Instant::now();
    let applied = {
        let catch_up = runner.catch_up();
        tokio::pin!(catch_up);
        let mut ticks = tokio::time::interval(PROGRESS_EVERY);
        ticks.tick().await;
        loop {
            tokio::select! {
                applied = &mut catch_up => break applied?,
                _ = ticks.tick() => {
                    if let Ok(status) = runner.status().await {
                        tracing::info!(events = status.events_applied, "catching up");
                    }
                }
            }
        }
    };
    let live = Fold::new(applied, started.elapsed());
    let live_hash = runner.content_hash(None).await?;
    tracing::info!(
        events = live.events,
        per_sec = live.events_per_sec,
        "caught up"
    );

    tracing::info!("rebuilding");
    let last_report = std::sync::Mutex::new(Instant::now());
    let progress = |p: RebuildProgress| {
        let due = match last_report.lock() {
            Ok(mut last)
                if last.elapsed() >= PROGRESS_EVERY || p.phase != RebuildPhase::Replaying =>
            {
                *last = Instant::now();
                true
            }
            _ => false,
        };
        if due {
            tracing::info!(
                phase = ?p.phase,
                events = p.events,
                of = p.total_estimate,
                per_sec = p.events_per_sec,
                "rebuilding"
            );
        }
    };
    let report = runner.rebuild(&progress).await?;
    let rebuilt_stored_hash = runner.content_hash(None).await?;
    let hashes_match = live_hash == report.content_hash && live_hash == rebuilt_stored_hash;
    let rebuild = Fold::new(report.events, report.elapsed);
    Ok(RebuildReport {
        store: database.kind(),
        projection: PROJECTION,
        events: seeded,
        seed_seconds: seed_elapsed.as_secs_f64(),
        history: shape,
        live,
        goal_met: rebuild.events_per_sec >= REBUILD_GOAL_PER_SEC,
        rebuild,
        rebuild_docs: report.docs,
        rebuild_generation: report.generation,
        live_hash,
        rebuilt_hash: report.content_hash,
        rebuilt_stored_hash,
        hashes_match,
        goal_events_per_sec: REBUILD_GOAL_PER_SEC,
    })
}

fn print_rebuild(report: &RebuildReport) {
    let shape = &report.history;
    output::line(&format!(
        "{} rebuild on {}: {} events seeded in {:.1} s ({:.0} events/s)",
        report.projection,
        report.store,
        report.events,
        report.seed_seconds,
        report.events as f64 / report.seed_seconds.max(f64::EPSILON)
    ));
    output::line(&format!(
        "  history: {} rules ({} organization, {} team, {} project), {} teams, {} members, {} attachments \
         at the end; {} commands ({} refused)",
        shape.rules,
        shape.organization_rules,
        shape.team_rules,
        shape.project_rules,
        shape.teams,
        shape.members,
        shape.attachments,
        shape.commands,
        shape.refused_commands
    ));
    let mix: Vec<String> = shape
        .event_types
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    output::line(&format!("  events: {}", mix.join(", ")));
    let fold = |name: &str, f: &Fold| {
        format!(
            "  {name}: {} events in {:.2} s = {:.0} events/s",
            f.events, f.seconds, f.events_per_sec
        )
    };
    output::line(&fold(
        "live path (catch_up, 500 events per transaction)",
        &report.live,
    ));
    output::line(&format!(
        "{} ({} documents, generation {})",
        fold("rebuild", &report.rebuild),
        report.rebuild_docs,
        report.rebuild_generation
    ));
    output::line(&format!(
        "  content hash: live {}, rebuilt {}, rebuilt as stored {}: {}",
        short(&report.live_hash),
        short(&report.rebuilt_hash),
        short(&report.rebuilt_stored_hash),
        if report.hashes_match {
            "equal"
        } else {
            "DIFFERENT"
        }
    ));
    output::line(&format!(
        "  goal: rebuild >= {:.0} events/s: {}",
        report.goal_events_per_sec,
        if report.goal_met { "met" } else { "not met" }
    ));
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

// ---------------------------------------------------------------------------------------------------
// The generated history.

/// Rules in the library.
const RULES: usize = 2_000;
/// Of which on the organization layer (the first ones).
const ORGANIZATION_RULES: usize = 40;
/// Of which on the project layer (the last ones).
const PROJECT_RULES: usize = 300;
/// Teams.
const TEAMS: usize = 200;
/// The org_admins who write, edit, submit and review rules and run the teams.
const ADMINS: usize = 8;

const TOPICS: &[&str] = &[
    "Testing",
    "Security",
    "Code style",
    "Reviews",
    "Dependencies",
    "Documentation",
    "Performance",
    "Logging",
    "Error handling",
    "Git hygiene",
    "Continuous integration",
    "Accessibility",
    "Databases",
    "Observability",
];
const CATEGORIES: &[&str] = &[
    "General",
    "Testing",
    "Security",
    "Style",
    "Process",
    "Architecture",
    "Operations",
    "Documentation",
];
const TAGS: &[&str] = &[
    "testing", "security", "style", "review", "deps", "docs", "perf", "logging", "errors", "git",
    "ci", "a11y", "sql", "ops",
];
const GLOBS: &[&str] = &[
    "src/**/*.rs",
    "**/*.ts",
    "**/*.tsx",
    "migrations/**",
    "docs/**/*.md",
    "Cargo.toml",
    "**/Dockerfile",
    "tests/**",
    "scripts/*.sh",
    ".github/workflows/*.yml",
];
const GUIDELINES: &[&str] = &[
    "- Run the full test suite before pushing; never push a red build.",
    "- Write a failing test first when fixing a bug, and keep it.",
    "- Never commit secrets, tokens or credentials; use the secret store.",
    "- Keep functions short and give every public item a doc comment.",
    "- Prefer small, reviewed changes; explain *why* in the commit message.",
    "- Pin new dependencies and check their licence before adding them.",
    "- Log with structured fields; never log personal data.",
    "- Return typed errors; do not panic in library code.",
    "- Keep migrations backwards compatible for one release.",
    "- Measure before optimizing, and keep the benchmark with the change.",
    "- Every user-facing string goes through the translation layer.",
    "- Use the formatter and the linter of the repository, with its settings.",
    "- Ask before deleting or renaming public APIs.",
    "- Prefer the standard library over new dependencies for small things.",
    "- Add an entry to the changelog for every user-visible change.",
    "- Check accessibility (labels, contrast, keyboard) of every new screen.",
];
const REASONS: &[&str] = &[
    "Needs a concrete example",
    "Too vague to enforce",
    "Conflicts with the security baseline",
    "Please split into two rules",
];
const TEAM_WORDS: &[&str] = &[
    "Platform",
    "Payments",
    "Search",
    "Mobile",
    "Data",
    "Identity",
    "Growth",
    "Infra",
    "Billing",
    "Support tools",
];

/// A small, fast, seeded generator (SplitMix64): the history is the same for a given seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True `per_10k` times in 10,000.
    fn chance(&mut self, per_10k: u64) -> bool {
        self.next() % 10_000 < per_10k
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A random (version 4) UUID.
    fn uuid(&mut self) -> Uuid {
        let bytes = (u128::from(self.next()) << 64 | u128::from(self.next())).to_le_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// One rule of the generated library.
struct RuleSlot {
    id: RuleId,
    layer: Layer,
    name: String,
    category: Option<Category>,
    tags: Vec<Tag>,
    triggers: Vec<PathGlob>,
    aggregate: Rule,
    /// Edits of the working revision so far.
    edits: u32,
}

/// One team of the generated organization.
struct TeamSlot {
    id: TeamId,
    aggregate: Team,
    /// Members it grows to during setup (and hovers around afterwards).
    target_members: usize,
    /// Attachments it grows to during setup (and hovers around afterwards).
    target_attachments: usize,
}

/// The shape of the generated history, as reported.
#[derive(Debug, Clone, Serialize)]
struct HistoryShape {
    rules: usize,
    organization_rules: usize,
    team_rules: usize,
    project_rules: usize,
    teams: usize,
    members: usize,
    attachments: usize,
    commands: u64,
    refused_commands: u64,
    event_types: BTreeMap<String, u64>,
}

/// Generates a valid organization history one command at a time, through the real aggregates: the
/// setup (every rule drafted, submitted and approved; every team created, staffed and given its rules),
/// then the bulk (see [`History::bulk_step`]). Holds the aggregates (a few thousand) and the events of
/// the last command, never the history.
struct History {
    rng: SplitMix,
    admins: Vec<UserId>,
    quorum: ApprovalQuorum,
    rules: Vec<RuleSlot>,
    teams: Vec<TeamSlot>,
    /// Indexes of the team- and project-layer rules, and of the organization rules.
    attachable: Vec<usize>,
    organization: Vec<usize>,
    /// The next rule and team the setup works on.
    setup_rule: usize,
    setup_team: usize,
    queue: VecDeque<SeedEvent>,
    clock: i64,
    guidelines: Vec<String>,
    reasons: Vec<Reason>,
    description: Description,
    commands: u64,
    refused: u64,
    first_refusal: Option<String>,
    event_types: BTreeMap<String, u64>,
}

/// Runs `command` through `aggregate.handle` with an [`EventSink`], as cqrs-es does; returns the events
/// (already applied to `aggregate`). The aggregates decide before they write, so a refused command
/// leaves `aggregate` unchanged.
fn execute<A: Aggregate<Services = ()>>(
    aggregate: &mut A,
    command: A::Command,
) -> Result<Vec<A::Event>, A::Error> {
    // The futures are ready at once (no I/O; an uncontended tokio mutex in the sink). `unconstrained`
    // keeps tokio's cooperative budget, which the surrounding task may have spent, out of it.
    futures::executor::block_on(tokio::task::unconstrained(async move {
        let sink = EventSink::<A>::default();
        aggregate.handle(command, &(), &sink).await?;
        Ok(sink.collect().await)
    }))
}

impl History {
    fn new(seed: u64) -> Result<History> {
        let mut rng = SplitMix(seed);
        let admins = (0..ADMINS).map(|_| UserId(rng.uuid())).collect();
        let mut rules = Vec::with_capacity(RULES);
        for i in 0..RULES {
            let layer = if i < ORGANIZATION_RULES {
                Layer::Organization
            } else if i >= RULES - PROJECT_RULES {
                Layer::Project
            } else {
                Layer::Team
            };
            let topic = rng.pick(TOPICS);
            let category = if rng.chance(1_500) {
                None
            } else {
                Some(Category::parse(rng.pick(CATEGORIES))?)
            };
            let mut tags = Vec::new();
            for _ in 0..1 + rng.below(3) {
                tags.push(Tag::parse(rng.pick(TAGS))?);
            }
            let mut triggers = Vec::new();
            if layer == Layer::Project {
                for _ in 0..1 + rng.below(3) {
                    triggers.push(PathGlob::parse(rng.pick(GLOBS))?);
                }
            }
            rules.push(RuleSlot {
                id: RuleId(rng.uuid()),
                layer,
                name: format!("{topic} rule {i:04}"),
                category,
                tags,
                triggers,
                aggregate: Rule::default(),
                edits: 0,
            });
        }
        let teams = (0..TEAMS)
            .map(|_| TeamSlot {
                id: TeamId(rng.uuid()),
                aggregate: Team::default(),
                target_members: 3 + rng.below(10),
                target_attachments: 5 + rng.below(21),
            })
            .collect();
        let reasons = REASONS
            .iter()
            .map(|r| Reason::parse(r))
            .collect::<Result<_, _>>()?;
        Ok(History {
            rng,
            admins,
            quorum: ApprovalQuorum::default(),
            attachable: (ORGANIZATION_RULES..RULES).collect(),
            organization: (0..ORGANIZATION_RULES).collect(),
            rules,
            teams,
            setup_rule: 0,
            setup_team: 0,
            queue: VecDeque::new(),
            // 2024-01-01T00:00:00Z
            clock: 1_704_067_200,
            guidelines: GUIDELINES.iter().map(|g| (*g).to_owned()).collect(),
            reasons,
            description: Description::parse(
                "Keeps our coding assistants consistent across repositories",
            )?,
            commands: 0,
            refused: 0,
            first_refusal: None,
            event_types: BTreeMap::new(),
        })
    }

    /// The next event of the history.
    fn next_event(&mut self) -> SeedEvent {
        let mut idle = 0u32;
        loop {
            if let Some(event) = self.queue.pop_front() {
                return event;
            }
            if idle >= 1_000 {
                // Never expected: the steps keep producing events. A fresh rule always can.
                self.draft_extra_rule();
            } else {
                self.step();
            }
            idle += 1;
        }
    }

    fn shape(&self) -> HistoryShape {
        let count = |layer: Layer| self.rules.iter().filter(|r| r.layer == layer).count();
        HistoryShape {
            rules: self.rules.len(),
            organization_rules: count(Layer::Organization),
            team_rules: count(Layer::Team),
            project_rules: count(Layer::Project),
            teams: self.teams.iter().filter(|t| t.aggregate.exists()).count(),
            members: self.teams.iter().map(|t| t.aggregate.members().len()).sum(),
            attachments: self
                .teams
                .iter()
                .map(|t| t.aggregate.attachments().len())
                .sum(),
            commands: self.commands,
            refused_commands: self.refused,
            event_types: self.event_types.clone(),
        }
    }

    fn now(&mut self) -> DateTime<Utc> {
        self.clock += 1 + self.rng.below(90) as i64;
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(self.clock)
    }

    fn admin(&mut self) -> UserId {
        self.admins[self.rng.below(self.admins.len())]
    }

    /// One setup or bulk command (or none, when a setup item is complete).
    fn step(&mut self) {
        if self.setup_rule < self.rules.len() {
            let i = self.setup_rule;
            let rule = &self.rules[i].aggregate;
            if !rule.exists() {
                self.draft(i);
            } else if rule.working().is_none() {
                self.setup_rule += 1;
            } else {
                self.advance(i, false);
            }
        } else if self.setup_team < self.teams.len() {
            let t = self.setup_team;
            let team = &self.teams[t];
            if !team.aggregate.exists() {
                self.create_team(t);
            } else if team.aggregate.members().len() < team.target_members {
                self.add_member(t);
            } else if team.aggregate.attachments().len() < team.target_attachments {
                self.attach(t);
            } else {
                self.setup_team += 1;
            }
        } else {
            self.bulk_step();
        }
    }

    /// One command of the bulk, per 10,000: 6,000 steps of team and project rule reviews, 1,500
    /// enforcement changes, 1,000 attach or detach, 1,475 membership changes, 20 steps of organization
    /// rule reviews and 5 organization enforcement changes.
    fn bulk_step(&mut self) {
        let roll = self.rng.below(10_000);
        match roll {
            0..6_000 => {
                let i = self.rng.pick(&self.attachable);
                self.advance(i, true);
            }
            6_000..7_500 => {
                let t = self.rng.below(self.teams.len());
                self.change_enforcement(t);
            }
            7_500..8_500 => {
                let t = self.rng.below(self.teams.len());
                let team = &self.teams[t];
                let attached = team.aggregate.attachments().len();
                let detach = if attached + 5 < team.target_attachments {
                    false
                } else if attached > team.target_attachments + 5 {
                    true
                } else {
                    self.rng.chance(5_000)
                };
                if detach {
                    self.detach(t);
                } else {
                    self.attach(t);
                }
            }
            8_500..9_975 => {
                let t = self.rng.below(self.teams.len());
                self.membership(t);
            }
            9_975..9_995 => {
                let i = self.rng.pick(&self.organization);
                self.advance(i, true);
            }
            _ => {
                let i = self.rng.pick(&self.organization);
                self.set_organization_enforcement(i);
            }
        }
    }

    fn enforcement(&mut self) -> Enforcement {
        match self.rng.below(5) {
            0 | 1 => Enforcement::WARNING,
            2 => Enforcement::BLOCK,
            3 => Enforcement::temporary(3_600).unwrap_or(Enforcement::WARNING),
            _ => Enforcement::temporary(7 * 86_400).unwrap_or(Enforcement::WARNING),
        }
    }

    /// A spec for rule `i`'s revision `revision` (its content rewritten each time).
    fn spec(&mut self, i: usize, revision: u32) -> Result<RuleSpec> {
        let lines = 2 + self.rng.below(4);
        let mut content = String::new();
        for _ in 0..lines {
            content.push_str(&self.guidelines[self.rng.below(self.guidelines.len())]);
            content.push('\n');
        }
        let edit = self.rules[i].edits;
        content.push_str(&format!("\n_Revision {revision}, draft {edit}._\n"));
        let priority = self.rng.below(11) as i32;
        let rule = &self.rules[i];
        Ok(RuleSpec {
            name: RuleName::parse(&rule.name)?,
            description: self.description.clone(),
            layer: rule.layer,
            content: RuleContent::parse(&content)?,
            category: rule.category.clone(),
            priority,
            tags: rule.tags.iter().cloned().collect(),
            triggers: rule.triggers.clone(),
        })
    }

    /// Moves rule `i` one step through review: revise (bulk only), edit (bulk: at least once after a
    /// revise, sometimes more), submit, approve (or, sometimes in the bulk, reject; then edit again).
    fn advance(&mut self, i: usize, bulk: bool) {
        let Some(working) = self.rules[i].aggregate.working() else {
            if bulk {
                self.revise(i);
            }
            return;
        };
        match working.state() {
            WorkingState::Draft => {
                let edits = self.rules[i].edits;
                if bulk && (edits == 0 || (edits < 3 && self.rng.chance(3_000))) {
                    self.edit(i);
                } else {
                    self.submit(i);
                }
            }
            WorkingState::Rejected { .. } => self.edit(i),
            WorkingState::Pending { .. } => {
                if bulk && self.rng.chance(500) {
                    self.reject(i);
                } else {
                    self.approve(i);
                }
            }
        }
    }

    fn draft(&mut self, i: usize) {
        let (by, at) = (self.admin(), self.now());
        self.rules[i].edits = 0;
        match self.spec(i, 1) {
            Ok(spec) => {
                let rule_id = self.rules[i].id;
                self.run_rule(
                    i,
                    by,
                    RuleCommand::DraftRule {
                        rule_id,
                        spec,
                        by,
                        at,
                    },
                );
            }
            Err(error) => self.refuse(error.to_string()),
        }
    }

    fn draft_extra_rule(&mut self) {
        let i = self.rules.len();
        let id = RuleId(self.rng.uuid());
        self.rules.push(RuleSlot {
            id,
            layer: Layer::Team,
            name: format!("Extra rule {i:04}"),
            category: None,
            tags: Vec::new(),
            triggers: Vec::new(),
            aggregate: Rule::default(),
            edits: 0,
        });
        self.draft(i);
    }

    fn revise(&mut self, i: usize) {
        let Some(number) = self.rules[i].aggregate.approved().map(|a| a.number()) else {
            return;
        };
        let (by, at) = (self.admin(), self.now());
        self.rules[i].edits = 0;
        match self.spec(i, number + 1) {
            Ok(spec) => self.run_rule(i, by, RuleCommand::ReviseRule { spec, by, at }),
            Err(error) => self.refuse(error.to_string()),
        }
    }

    fn edit(&mut self, i: usize) {
        let Some((number, author)) = self.rules[i]
            .aggregate
            .working()
            .map(|w| (w.number(), w.author()))
        else {
            return;
        };
        // Mostly the author; sometimes a colleague (who then may not approve this revision).
        let by = if self.rng.chance(8_000) {
            author
        } else {
            self.admin()
        };
        let at = self.now();
        self.rules[i].edits += 1;
        match self.spec(i, number) {
            Ok(spec) => self.run_rule(i, by, RuleCommand::EditDraft { spec, by, at }),
            Err(error) => self.refuse(error.to_string()),
        }
    }

    fn submit(&mut self, i: usize) {
        let Some(by) = self.rules[i].aggregate.working().map(|w| w.author()) else {
            return;
        };
        let at = self.now();
        self.run_rule(i, by, RuleCommand::SubmitRule { by, at });
    }

    /// A reviewer who did not write the working revision and has not approved it yet.
    fn reviewer(&mut self, i: usize) -> Option<UserId> {
        let working = self.rules[i].aggregate.working()?;
        let start = self.rng.below(self.admins.len());
        (0..self.admins.len())
            .map(|k| self.admins[(start + k) % self.admins.len()])
            .find(|&admin| {
                !working.is_written_by(admin) && working.approvals().iter().all(|a| a.by != admin)
            })
    }

    fn approve(&mut self, i: usize) {
        let Some(approver) = self.reviewer(i) else {
            self.refuse("no eligible approver".to_owned());
            return;
        };
        let quorum = self.quorum.for_layer(self.rules[i].layer);
        let at = self.now();
        self.run_rule(
            i,
            approver,
            RuleCommand::ApproveRule {
                approver,
                quorum,
                at,
            },
        );
    }

    fn reject(&mut self, i: usize) {
        let Some(reviewer) = self.reviewer(i) else {
            self.refuse("no eligible reviewer".to_owned());
            return;
        };
        let reason = self.reasons[self.rng.below(self.reasons.len())].clone();
        let at = self.now();
        self.run_rule(
            i,
            reviewer,
            RuleCommand::RejectRule {
                reviewer,
                reason,
                at,
            },
        );
    }

    fn set_organization_enforcement(&mut self, i: usize) {
        let (enforcement, by, at) = (self.enforcement(), self.admin(), self.now());
        self.run_rule(
            i,
            by,
            RuleCommand::SetOrganizationEnforcement {
                enforcement,
                by,
                at,
            },
        );
    }

    fn create_team(&mut self, t: usize) {
        let word = self.rng.pick(TEAM_WORDS);
        let (by, at) = (self.admin(), self.now());
        match TeamName::parse(&format!("{word} {t:03}")) {
            Ok(name) => {
                let team_id = self.teams[t].id;
                self.run_team(
                    t,
                    by,
                    TeamCommand::CreateTeam {
                        team_id,
                        name,
                        by,
                        at,
                    },
                );
            }
            Err(error) => self.refuse(error.to_string()),
        }
    }

    fn add_member(&mut self, t: usize) {
        let members = self.teams[t].aggregate.members();
        let role = if members.is_empty() || self.rng.chance(1_000) {
            TeamRole::TeamAdmin
        } else {
            TeamRole::Member
        };
        let (user, by, at) = (UserId(self.rng.uuid()), self.admin(), self.now());
        self.run_team(t, by, TeamCommand::AddMember { user, role, by, at });
    }

    /// Adds, removes or promotes or demotes a member (always keeping a team admin).
    fn membership(&mut self, t: usize) {
        let team = &self.teams[t];
        let members = team.aggregate.members();
        let admins = members
            .values()
            .filter(|r| **r == TeamRole::TeamAdmin)
            .count();
        let grow = members.len() + 2 < team.target_members
            || (members.len() < team.target_members + 2 && self.rng.chance(5_000));
        if grow || members.is_empty() {
            self.add_member(t);
            return;
        }
        let k = self.rng.below(members.len());
        let Some((&user, &role)) = members.iter().nth(k) else {
            return;
        };
        let (by, at) = (self.admin(), self.now());
        let command = if role == TeamRole::TeamAdmin && admins <= 1 {
            // The last team admin stays; someone else joins.
            self.add_member(t);
            return;
        } else if self.rng.chance(8_000) {
            TeamCommand::RemoveMember { user, by, at }
        } else {
            let role = if role == TeamRole::TeamAdmin {
                TeamRole::Member
            } else {
                TeamRole::TeamAdmin
            };
            TeamCommand::ChangeMemberRole { user, role, by, at }
        };
        self.run_team(t, by, command);
    }

    /// Attaches an approved team- or project-layer rule the team does not have yet.
    fn attach(&mut self, t: usize) {
        for _ in 0..50 {
            let i = self.rng.pick(&self.attachable);
            let rule = &self.rules[i];
            let Some(revision) = rule.aggregate.approved().map(|a| a.number()) else {
                continue;
            };
            if rule.aggregate.archived() || self.teams[t].aggregate.attachment(rule.id).is_some() {
                continue;
            }
            let (rule_id, rule_layer) = (rule.id, rule.layer);
            let (enforcement, by, at) = (self.enforcement(), self.admin(), self.now());
            self.run_team(
                t,
                by,
                TeamCommand::AttachRule {
                    rule_id,
                    rule_layer,
                    rule_revision: revision,
                    enforcement,
                    by,
                    at,
                },
            );
            return;
        }
    }

    /// A random attached rule of team `t`.
    fn attached_rule(&mut self, t: usize) -> Option<RuleId> {
        let attachments = self.teams[t].aggregate.attachments();
        if attachments.is_empty() {
            return None;
        }
        let k = self.rng.below(attachments.len());
        attachments.keys().nth(k).copied()
    }

    fn detach(&mut self, t: usize) {
        let Some(rule_id) = self.attached_rule(t) else {
            return;
        };
        let (by, at) = (self.admin(), self.now());
        self.run_team(t, by, TeamCommand::DetachRule { rule_id, by, at });
    }

    fn change_enforcement(&mut self, t: usize) {
        let Some(rule_id) = self.attached_rule(t) else {
            return;
        };
        let (enforcement, by, at) = (self.enforcement(), self.admin(), self.now());
        self.run_team(
            t,
            by,
            TeamCommand::ChangeEnforcement {
                rule_id,
                enforcement,
                by,
                at,
            },
        );
    }

    fn run_rule(&mut self, i: usize, by: UserId, command: RuleCommand) {
        self.commands += 1;
        let slot = &mut self.rules[i];
        let id = slot.id.to_string();
        match execute(&mut slot.aggregate, command) {
            Ok(events) => self.emit::<Rule>(&id, events, by),
            Err(error) => self.refuse(format!("rule {id}: {error}")),
        }
    }

    fn run_team(&mut self, t: usize, by: UserId, command: TeamCommand) {
        self.commands += 1;
        let slot = &mut self.teams[t];
        let id = slot.id.to_string();
        match execute(&mut slot.aggregate, command) {
            Ok(events) => self.emit::<Team>(&id, events, by),
            Err(error) => self.refuse(format!("team {id}: {error}")),
        }
    }

    fn refuse(&mut self, reason: String) {
        self.refused += 1;
        self.first_refusal.get_or_insert(reason);
    }

    /// Queues `events` of one command as cqrs-es stores them: the payload is `serde_json::to_value` of
    /// the event, with its type and version, and the command's metadata on each.
    fn emit<A: Aggregate>(&mut self, id: &str, events: Vec<A::Event>, by: UserId) {
        let request_id = self.rng.uuid().to_string();
        let metadata = json!({
            "actor": format!("user:{by}"),
            "request_id": request_id,
            "correlation_id": request_id,
            "source": "api",
        });
        for event in events {
            let event_type = event.event_type();
            match serde_json::to_value(&event) {
                Ok(payload) => {
                    *self.event_types.entry(event_type.clone()).or_default() += 1;
                    self.queue.push_back(SeedEvent {
                        aggregate_type: A::TYPE.to_owned(),
                        aggregate_id: id.to_owned(),
                        event_type,
                        event_version: event.event_version(),
                        payload,
                        metadata: metadata.clone(),
                    });
                }
                Err(error) => self.refuse(format!("cannot serialize {event_type}: {error}")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// edict-bench lag

/// Options of `edict-bench lag`.
#[derive(Debug, Args)]
pub struct LagArgs {
    /// Offered load, commands per second (all clients together, on a fixed schedule).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// The NATS server (a fresh prefix `bench<8 hex>_` is used and deleted).
    #[arg(long, default_value = nats::DEFAULT_NATS_URL)]
    nats_url: String,
    /// Where the scratch databases go.
    #[command(flatten)]
    scratch: ScratchPostgres,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: OutputFormat,
}

/// One projection's lag behind the commands' responses.
#[derive(Debug, Clone, Serialize)]
struct ProjectionLag {
    projection: String,
    /// Commands whose event the projection applied within the run.
    covered: u64,
    /// Commands whose event it had not applied when the run ended.
    missing: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// What `edict-bench lag` measured.
#[derive(Debug, Clone, Serialize)]
struct LagReport {
    offered_rate: u64,
    seconds: u64,
    clients: usize,
    /// Successful commands (each a lag sample per projection).
    commands: u64,
    errors: u64,
    /// Successful commands whose answer carried no position (they changed nothing).
    without_position: u64,
    commands_per_sec: f64,
    command_p50_ms: f64,
    command_p99_ms: f64,
    /// Reads of `projection_state` by the sampler, and their mean spacing.
    sampler_polls: u64,
    sampler_interval_ms: f64,
    projections: Vec<ProjectionLag>,
    goal_p99_ms: f64,
    goal_met: bool,
}

/// Measures how long after a command's response each read model has applied the command's event.
///
/// 1. Creates a scratch PostgreSQL database and uses a fresh NATS prefix (`bench<8 hex>_`), and starts
///    Edict in this process as `edict serve` with PostgreSQL and NATS does: the HTTP API on a loopback
///    port, the relay, the five projectors (NATS consumers) and the timeout scheduler.
/// 2. Enrolls two org_admins and waits until every projection has applied the log so far.
/// 3. Meanwhile a sampler reads `SELECT name, transaction_id, position FROM projection_state` every
///    2 ms on its own connection, and records for each projection when its checkpoint moved (the
///    instant the answer arrived, so a sample is late rather than early by up to one read).
/// 4. `--clients` clients offer `--rate` commands per second for `--seconds` on a fixed schedule (the
///    rule lifecycle of `edict-bench commands`: draft, edit, submit, approve by the other admin). For
///    each successful command it records when the response arrived and the `position` in its body.
/// 5. After the load, it waits (up to 10 s) until every projection has passed the last command, then
///    looks up the transaction id of every recorded position in one query. A command's lag in a
///    projection is the first sampled instant at which that projection's checkpoint
///    `(transaction_id, position)` was at or past the event's, minus the response instant (0 if the
///    projection was faster than the response). Commands a projection never covered are reported as
///    missing.
/// 6. Prints p50 / p99 / max per projection; stops the roles, drops the database and deletes the
///    prefix's NATS streams (best effort).
pub async fn lag(args: LagArgs) -> Result<()> {
    let url = args.scratch.create("edict_bench_lag").await?;
    let id = short_id();
    let prefix = format!("bench{id}_");
    let result = async {
        let settings =
            NatsSettings::new(args.nats_url.clone(), &prefix).context("invalid NATS settings")?;
        let nats = nats::connect(settings)
            .await
            .context("cannot connect to NATS")?;
        let result = async {
            nats.ensure_streams()
                .await
                .context("cannot create the NATS streams")?;
            measure_lag(&url, &nats, &args).await
        }
        .await;
        delete_streams(&nats).await;
        result
    }
    .await;
    args.scratch.drop(&url).await;
    emit(args.output, &result?, print_lag)
}

/// Deletes the events stream and the rule set bucket of the prefix (their consumers go with them).
async fn delete_streams(nats: &Nats) {
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

/// The roles of `edict serve` running in this process.
struct Roles {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Roles {
    /// Starts the API on `listen`, the relay, one NATS projector per projection and the timeout
    /// scheduler, as `edict serve` does with NATS.
    fn start(built: &app::Built, nats: &Nats, listen: SocketAddr) -> Result<Roles> {
        let (stop, stopped) = watch::channel(false);
        let shutdown = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let mut tasks = JoinSet::new();
        let relay = NatsRelay::new(
            built.database.clone(),
            nats.clone(),
            RelaySettings::default(),
        )
        .context("cannot start the relay")?;
        tasks.spawn(relay.run(shutdown(stopped.clone())));
        for runner in built.projections.runners() {
            let name = runner.name();
            let nats = nats.clone();
            let shutdown = shutdown(stopped.clone());
            tasks.spawn(async move {
                if let Err(error) = nats::run_projector(
                    nats,
                    Arc::new(runner),
                    nats::ProjectorSettings::default(),
                    shutdown,
                )
                .await
                {
                    tracing::error!(projection = name, %error, "projector stopped");
                }
            });
        }
        let edict = built.edict.clone();
        let mut scheduler_stopped = stopped.clone();
        tasks.spawn(async move {
            loop {
                if let Err(error) = edict.auto_revert_due().await {
                    tracing::warn!(%error, "the timeout scheduler failed; retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = scheduler_stopped.wait_for(|stop| *stop) => break,
                }
            }
        });
        let endpoint = edict_api::server::app(
            built.edict.clone(),
            edict_api::server::GatewayUrls::default(),
        );
        let server_stopped = shutdown(stopped);
        tasks.spawn(async move {
            if let Err(error) = poem::Server::new(poem::listener::TcpListener::bind(listen))
                .run_with_graceful_shutdown(endpoint, server_stopped, Some(Duration::from_secs(5)))
                .await
            {
                tracing::error!(%error, "the API stopped");
            }
        });
        Ok(Roles { stop, tasks })
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("roles did not stop in time");
            self.tasks.abort_all();
        }
    }
}

async fn measure_lag(url: &str, nats: &Nats, args: &LagArgs) -> Result<LagReport> {
    let mut settings = bench_settings(std::env::temp_dir())?;
    settings.database_url = url.to_owned();
    let listen = settings.listen;
    let built = app::build(&settings, Some(nats)).await?;
    let roles = Roles::start(&built, nats, listen)?;
    let result = drive_and_sample(url, listen, args).await;
    roles.stop().await;
    built.database.close().await;
    result
}

/// A checkpoint as `(transaction_id, position)`, ordered as the log is.
type Point = (u64, i64);

/// A successful command: when its response arrived and the position of its last event.
struct Done {
    at: Instant,
    position: i64,
}

/// When a projection's checkpoint was first seen at `point`.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    point: Point,
}

async fn drive_and_sample(url: &str, listen: SocketAddr, args: &LagArgs) -> Result<LagReport> {
    let fleet = Fleet::ready(listen, args.clients).await?;
    let mut db = PgConnection::connect(url)
        .await
        .context("cannot connect to the scratch database")?;
    wait_caught_up(&mut db, Duration::from_secs(30)).await?;

    let (stop_sampler, sampler_stopped) = watch::channel(false);
    let (latest_tx, mut latest) = watch::channel(BTreeMap::<String, Point>::new());
    let sampler = tokio::spawn(sample(url.to_owned(), sampler_stopped, latest_tx));
    // Start the load once the sampler has its first reading.
    if latest.wait_for(|l| !l.is_empty()).await.is_err() {
        return match sampler.await {
            Ok(Err(error)) => Err(error),
            _ => bail!("the sampler stopped before its first reading"),
        };
    }

    tracing::info!(
        rate = args.rate,
        seconds = args.seconds,
        clients = args.clients,
        "offering load"
    );
    let driven = drive_recording(
        &fleet,
        args.clients,
        Duration::from_secs(args.seconds),
        args.rate,
    )
    .await?;

    // Each position's transaction id, in one query.
    let positions: Vec<i64> = driven.done.iter().map(|d| d.position).collect();
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT global_position, transaction_id::text FROM events WHERE global_position = ANY($1)",
    )
    .bind(&positions)
    .fetch_all(&mut db)
    .await
    .context("cannot look the commands' events up")?;
    let mut transactions = HashMap::with_capacity(rows.len());
    for (position, tx) in rows {
        transactions.insert(position, tx.parse::<u64>().context("malformed xid8")?);
    }
    let commands: Vec<(Instant, Point)> = driven
        .done
        .iter()
        .filter_map(|d| {
            transactions
                .get(&d.position)
                .map(|tx| (d.at, (*tx, d.position)))
        })
        .collect();
    let unknown = driven.done.len() - commands.len();
    if unknown > 0 {
        tracing::warn!(unknown, "positions not found in the events table");
    }

    // Let the read models apply the last commands.
    let last = commands.iter().map(|(_, p)| *p).max().unwrap_or_default();
    let names: Vec<String> = edict_projections::all()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    let drained = tokio::time::timeout(
        DRAIN_TIMEOUT,
        latest.wait_for(|l| names.iter().all(|n| l.get(n).is_some_and(|p| *p >= last))),
    )
    .await;
    if !matches!(drained, Ok(Ok(_))) {
        tracing::warn!("not every projection applied the last command within the drain timeout");
    }
    let _ = stop_sampler.send(true);
    let sampled = match sampler.await {
        Ok(result) => result?,
        Err(error) => bail!("the sampler failed: {error}"),
    };
    let _ = db.close().await;

    let mut projections = Vec::new();
    for name in &names {
        let timeline = sampled
            .timelines
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        projections.push(projection_lag(name, timeline, &commands)?);
    }
    let goal_met = projections
        .iter()
        .all(|p| p.missing == 0 && p.p99_ms <= LAG_GOAL_P99_MS);
    let latency = &driven.latency;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(LagReport {
        offered_rate: args.rate,
        seconds: args.seconds,
        clients: args.clients,
        commands: driven.done.len() as u64 + driven.without_position,
        errors: driven.errors,
        without_position: driven.without_position,
        commands_per_sec: (driven.done.len() as u64 + driven.without_position) as f64
            / driven.elapsed.as_secs_f64().max(f64::EPSILON),
        command_p50_ms: ms(0.5),
        command_p99_ms: ms(0.99),
        sampler_polls: sampled.polls,
        sampler_interval_ms: sampled.elapsed.as_secs_f64() * 1000.0 / sampled.polls.max(1) as f64,
        projections,
        goal_p99_ms: LAG_GOAL_P99_MS,
        goal_met,
    })
}

/// Waits until every projection has applied the last event of the log.
async fn wait_caught_up(db: &mut PgConnection, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let expected = edict_projections::all().len();
    loop {
        let head: Option<(String, i64)> = sqlx::query_as(
            "SELECT transaction_id::text, global_position FROM events \
             ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
        )
        .fetch_optional(&mut *db)
        .await?;
        let head: Point = match head {
            Some((tx, position)) => (tx.parse().context("malformed xid8")?, position),
            None => (0, 0),
        };
        let states: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT name, transaction_id, position FROM projection_state")
                .fetch_all(&mut *db)
                .await?;
        let caught_up = states
            .iter()
            .filter(|(_, tx, position)| (u64::try_from(*tx).unwrap_or(0), *position) >= head)
            .count();
        if caught_up >= expected {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the projections did not catch up with the log within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sampler's record.
struct Sampled {
    /// Per projection, each checkpoint it was seen at first, in order (strictly increasing).
    timelines: BTreeMap<String, Vec<Sample>>,
    polls: u64,
    elapsed: Duration,
}

/// Reads `projection_state` every [`SAMPLE_EVERY`] until `stopped`, on its own connection.
async fn sample(
    url: String,
    mut stopped: watch::Receiver<bool>,
    latest: watch::Sender<BTreeMap<String, Point>>,
) -> Result<Sampled> {
    let mut db = PgConnection::connect(&url)
        .await
        .context("the sampler cannot connect")?;
    let mut timelines: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut polls = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT name, transaction_id, position FROM projection_state")
                .fetch_all(&mut db)
                .await
                .context("the sampler cannot read projection_state")?;
        let at = Instant::now();
        polls += 1;
        let mut moved = false;
        for (name, tx, position) in rows {
            let point = (u64::try_from(tx).unwrap_or(0), position);
            let timeline = timelines.entry(name).or_default();
            if timeline.last().is_none_or(|last| point > last.point) {
                timeline.push(Sample { at, point });
                moved = true;
            }
        }
        if moved || polls == 1 {
            latest.send_replace(
                timelines
                    .iter()
                    .filter_map(|(name, t)| t.last().map(|s| (name.clone(), s.point)))
                    .collect(),
            );
        }
    }
    let _ = db.close().await;
    Ok(Sampled {
        timelines,
        polls,
        elapsed: started.elapsed(),
    })
}

/// The lag of every command in one projection: the first sample at or past the command's event,
/// minus the response instant.
fn projection_lag(
    name: &str,
    timeline: &[Sample],
    commands: &[(Instant, Point)],
) -> Result<ProjectionLag> {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("cannot build a histogram")?;
    let mut missing = 0;
    for (answered, point) in commands {
        let first = timeline.partition_point(|s| s.point < *point);
        match timeline.get(first) {
            Some(sample) => {
                let micros = sample.at.saturating_duration_since(*answered).as_micros();
                let _ = histogram.record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
            }
            None => missing += 1,
        }
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(ProjectionLag {
        projection: name.to_owned(),
        covered: histogram.len(),
        missing,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
    })
}

/// What the clients did.
struct Driven {
    done: Vec<Done>,
    without_position: u64,
    errors: u64,
    /// Command latency from the scheduled start, microseconds.
    latency: Histogram<u64>,
    elapsed: Duration,
}

/// Like `drive` of `edict-bench commands` at a fixed rate, but records each successful command's
/// response instant and position.
async fn drive_recording(
    fleet: &Fleet,
    clients: usize,
    duration: Duration,
    rate: u64,
) -> Result<Driven> {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(clients as f64 / rate.max(1) as f64);
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let fleet = Fleet {
            client: fleet.client.clone(),
            base: fleet.base.clone(),
            author: fleet.author.clone(),
            approver: fleet.approver.clone(),
        };
        tasks.spawn(async move {
            let mut done = Vec::new();
            let mut latency = Vec::new();
            let (mut errors, mut without_position) = (0u64, 0u64);
            let mut current = Step::Draft;
            let mut n = 0u64;
            // Spread the clients' schedules evenly over one interval.
            let mut scheduled = started + interval.mul_f64(client as f64 / clients as f64);
            while started.elapsed() < duration {
                tokio::time::sleep_until(scheduled.into()).await;
                n += 1;
                let (result, next) = step(&fleet, client, n, current).await;
                let at = Instant::now();
                current = next;
                match result {
                    Ok(body) => {
                        latency.push(at.saturating_duration_since(scheduled));
                        match body["position"].as_i64() {
                            Some(position) => done.push(Done { at, position }),
                            None => without_position += 1,
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "bench command failed");
                        errors += 1;
                    }
                }
                scheduled += interval;
            }
            (done, latency, errors, without_position)
        });
    }
    let mut driven = Driven {
        done: Vec::new(),
        without_position: 0,
        errors: 0,
        latency: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .context("cannot build a histogram")?,
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = tasks.join_next().await {
        let (done, latency, errors, without_position) = joined.context("a client failed")?;
        driven.done.extend(done);
        for l in latency {
            let micros = u64::try_from(l.as_micros()).unwrap_or(u64::MAX);
            let _ = driven.latency.record(micros.max(1));
        }
        driven.errors += errors;
        driven.without_position += without_position;
    }
    driven.elapsed = started.elapsed();
    Ok(driven)
}

fn print_lag(report: &LagReport) {
    output::line(&format!(
        "read model lag (PostgreSQL + NATS; API, relay and {} projectors in this process)",
        report.projections.len()
    ));
    output::line(&format!(
        "  load: {} commands/s offered by {} clients for {} s: {} ok ({:.0}/s), {} errors; command p50 \
         {:.2} ms, p99 {:.2} ms",
        report.offered_rate,
        report.clients,
        report.seconds,
        report.commands,
        report.commands_per_sec,
        report.errors,
        report.command_p50_ms,
        report.command_p99_ms
    ));
    output::line(&format!(
        "  sampler: {} reads of projection_state, one every {:.2} ms",
        report.sampler_polls, report.sampler_interval_ms
    ));
    output::line("  lag from the command's response to its event being applied:");
    for p in &report.projections {
        output::line(&format!(
            "    {:<14} p50 {:6.2} ms, p99 {:6.2} ms, max {:7.2} ms ({} commands{})",
            p.projection,
            p.p50_ms,
            p.p99_ms,
            p.max_ms,
            p.covered,
            if p.missing > 0 {
                format!(", {} MISSING", p.missing)
            } else {
                String::new()
            }
        ));
    }
    output::line(&format!(
        "  goal: p99 <= {:.0} ms at {} commands/s: {}",
        report.goal_p99_ms,
        report.offered_rate,
        if report.goal_met { "met" } else { "not met" }
    ));
}
