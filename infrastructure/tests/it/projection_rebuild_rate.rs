//! Rebuild throughput, on PostgreSQL and SQLite. Ignored by default; run it with
//!
//! ```text
//! EDICT_BENCH_EVENTS=1000000 cargo test --release -p edict-infrastructure \
//!     --test it projection_rebuild_rate:: -- --ignored --nocapture
//! ```
//!
//! For each store it seeds `EDICT_BENCH_EVENTS` events (default 200,000) straight into the `events`
//! table with `edict_test_kit::seed::seed_events`, then rebuilds and prints events per second, for two
//! workloads:
//!
//! - `bench_tally`: counts events per counter (10,000) and per team (100); each event reads and writes
//!   two documents. It measures the runner and the store: paging, decoding, the cache, bulk writes.
//! - `team_rulesets`: the real projection over a generated organization history (600 rules, 200 teams,
//!   then a long tail of membership changes, rule reviews, new revisions, enforcement changes and
//!   re-attachments; see [`History`]). Its rate depends on that mix as much as on the runner.
//!
//! `EDICT_BENCH_WORKLOADS=tally,catch_up,team_rulesets` and `EDICT_BENCH_STORES=postgres,sqlite` pick
//! what runs (all by default).
//!
//! It also times a live catch-up (the per-batch path: 500 events per transaction, documents loaded
//! through the database) over the first 20,000 events of the tally workload.

// Benchmarks print their figures and state expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::DomainEvent;
use edict_application::event_log::{Checkpoint, EventLog};
use edict_domain::rule::{
    Category, Description, PathGlob, RuleContent, RuleEvent, RuleName, RuleSpec, Tag,
};
use edict_domain::team::{TeamEvent, TeamName, TeamRole};
use edict_domain::{Enforcement, Layer, RuleId, TeamId, UserId};
use edict_infrastructure::projection::ProjectionRunner;
use edict_infrastructure::store::Database;
use edict_projections::{DocMeta, Docs, Projection, ProjectionError, RecordedEvent};
use edict_test_kit::seed::{SeedEvent, seed_events};
use edict_test_kit::{create_isolated_postgres, drop_isolated_postgres, test_database_url};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

const DEFAULT_EVENTS: u64 = 200_000;
const COUNTERS: u64 = 10_000;
const TEAMS: u64 = 100;
const CATCH_UP_EVENTS: u64 = 20_000;
/// Events folded in memory to time the projection alone.
const IN_MEMORY_EVENTS: usize = 50_000;

// ---------------------------------------------------------------------------------------------------
// The tally workload.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Created {
        team: String,
        by: Uuid,
        at: DateTime<Utc>,
    },
    Bumped {
        value: u64,
        note: String,
        by: Uuid,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CounterDoc {
    id: String,
    team: String,
    events: u64,
    value: u64,
    last_by: Option<Uuid>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TeamDoc {
    team: String,
    events: u64,
    last_counter: String,
}

/// Counts events per counter and per team.
struct BenchTally(&'static str);

#[async_trait]
impl Projection for BenchTally {
    fn name(&self) -> &'static str {
        self.0
    }

    async fn apply(
        &self,
        event: &RecordedEvent,
        docs: &mut Docs<'_>,
    ) -> Result<(), ProjectionError> {
        let decoded: CounterEvent = serde_json::from_value(event.payload.clone())
            .map_err(|e| ProjectionError::Store(e.to_string()))?;
        let id = event.aggregate_id.as_str();
        let mut counter = match decoded {
            CounterEvent::Created { team, .. } => CounterDoc {
                id: id.to_owned(),
                team,
                ..CounterDoc::default()
            },
            CounterEvent::Bumped { value, by, .. } => {
                let mut counter: CounterDoc = docs.get("counter", id).await?.ok_or_else(|| {
                    ProjectionError::Inconsistent {
                        position: event.global_position,
                        reason: format!("unknown counter {id}"),
                    }
                })?;
                counter.value = value;
                counter.last_by = Some(by);
                counter
            }
        };
        counter.events += 1;
        let meta = DocMeta {
            team: Some(counter.team.clone()),
            status: None,
            sort_key: id.to_owned(),
        };
        docs.put("counter", id, meta, &counter)?;
        let mut team: TeamDoc = docs
            .get("team", &counter.team)
            .await?
            .unwrap_or_else(|| TeamDoc {
                team: counter.team.clone(),
                ..TeamDoc::default()
            });
        team.events += 1;
        team.last_counter = id.to_owned();
        let meta = DocMeta {
            team: Some(counter.team.clone()),
            status: None,
            sort_key: counter.team.clone(),
        };
        docs.put("team", &counter.team, meta, &team)
    }
}

fn metadata(rng: &mut StdRng) -> Value {
    json!({
        "actor": Uuid::from_u128(rng.r#gen()).to_string(),
        "request_id": Uuid::from_u128(rng.r#gen()).to_string(),
        "correlation_id": Uuid::from_u128(rng.r#gen()).to_string(),
        "source": "api",
    })
}

fn at(i: u64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(1_767_323_045 + i64::try_from(i).unwrap())
}

fn tally_event(rng: &mut StdRng, i: u64) -> SeedEvent {
    let counter = i % COUNTERS;
    let event = if i < COUNTERS {
        CounterEvent::Created {
            team: format!("team-{:03}", counter % TEAMS),
            by: Uuid::from_u128(rng.r#gen()),
            at: at(i),
        }
    } else {
        CounterEvent::Bumped {
            value: i / COUNTERS,
            note: "Bumped from the command line while checking the managed section of CLAUDE.md \
                   on a developer machine; nothing else changed."
                .to_owned(),
            by: Uuid::from_u128(rng.r#gen()),
            at: at(i),
        }
    };
    SeedEvent {
        aggregate_type: "Counter".into(),
        aggregate_id: format!("counter-{counter:05}"),
        event_type: match event {
            CounterEvent::Created { .. } => "CounterCreated",
            CounterEvent::Bumped { .. } => "CounterBumped",
        }
        .into(),
        event_version: "1.0".into(),
        payload: serde_json::to_value(&event).unwrap(),
        metadata: metadata(rng),
    }
}

// ---------------------------------------------------------------------------------------------------
// The team rule sets workload: a generated organization history.

const ORG_RULES: usize = 20;
const TEAM_RULES: usize = 400;
const PROJECT_RULES: usize = 180;
const HISTORY_TEAMS: usize = 200;
const ATTACHED_PER_TEAM: usize = 12;

struct RuleState {
    id: RuleId,
    layer: Layer,
    name: String,
    revision: u32,
}

struct TeamState {
    id: TeamId,
    attached: BTreeSet<usize>,
    members: Vec<UserId>,
}

/// Generates a plausible history, event by event: rules drafted and approved (organization rules get
/// their enforcement), teams created with members and attachments, then a long tail where, per 1,000
/// events, about 400 are membership changes, 300 review steps of revisions not in force yet, 150 new
/// approved revisions of team or project rules (each recomputes the teams attaching the rule), 100
/// enforcement changes, 49 detach/attach pairs and 1 new revision of an organization rule (which
/// recomputes every team).
struct History {
    rng: StdRng,
    rules: Vec<RuleState>,
    teams: Vec<TeamState>,
    pending: std::collections::VecDeque<(&'static str, String, Value)>,
    clock: u64,
}

fn spec(layer: Layer, name: &str, revision: u32) -> RuleSpec {
    RuleSpec {
        name: RuleName::parse(name).unwrap(),
        description: Description::parse("Keeps our assistants consistent across repositories").unwrap(),
        layer,
        content: RuleContent::parse(&format!(
            "## {name} (revision {revision})\n\nAlways run the formatter and the linter before committing. \
             Prefer small, reviewed changes; explain why in the commit message. Never commit secrets.\n"
        ))
        .unwrap(),
        category: Some(Category::parse("Practice").unwrap()),
        priority: 0,
        tags: [Tag::parse("practice").unwrap()].into(),
        triggers: if layer == Layer::Project {
            vec![PathGlob::parse("src/**").unwrap()]
        } else {
            Vec::new()
        },
    }
}

impl History {
    fn new() -> History {
        let mut rng = StdRng::seed_from_u64(7);
        let rules = (0..ORG_RULES + TEAM_RULES + PROJECT_RULES)
            .map(|i| RuleState {
                id: RuleId(Uuid::from_u128(rng.r#gen())),
                layer: if i < ORG_RULES {
                    Layer::Organization
                } else if i < ORG_RULES + TEAM_RULES {
                    Layer::Team
                } else {
                    Layer::Project
                },
                name: format!("Rule {i:04}"),
                revision: 1,
            })
            .collect();
        let teams = (0..HISTORY_TEAMS)
            .map(|_| TeamState {
                id: TeamId(Uuid::from_u128(rng.r#gen())),
                attached: BTreeSet::new(),
                members: Vec::new(),
            })
            .collect();
        let mut history = History {
            rng,
            rules,
            teams,
            pending: std::collections::VecDeque::new(),
            clock: 0,
        };
        for rule in 0..history.rules.len() {
            history.approve_rule(rule, true);
        }
        for team in 0..history.teams.len() {
            history.create_team(team);
        }
        history
    }

    fn now(&mut self) -> DateTime<Utc> {
        self.clock += 1;
        at(self.clock)
    }

    fn user(&mut self) -> UserId {
        UserId(Uuid::from_u128(self.rng.r#gen()))
    }

    fn rule(&mut self, event: RuleEvent, rule: usize) {
        let id = self.rules[rule].id.to_string();
        let payload = serde_json::to_value(&event).unwrap();
        self.pending.push_back(("Rule", id, payload));
    }

    /// `rule`'s `revision` submitted.
    fn submit(&mut self, rule: usize, revision: u32, by: UserId, at: DateTime<Utc>) {
        let rule_id = self.rules[rule].id;
        self.rule(
            RuleEvent::RuleSubmitted {
                rule_id,
                revision,
                by,
                at,
            },
            rule,
        );
    }

    fn team(&mut self, event: TeamEvent, team: usize) {
        let id = self.teams[team].id.to_string();
        let payload = serde_json::to_value(&event).unwrap();
        self.pending.push_back(("Team", id, payload));
    }

    fn approve_rule(&mut self, rule: usize, first: bool) {
        let (rule_id, layer) = (self.rules[rule].id, self.rules[rule].layer);
        if !first {
            self.rules[rule].revision += 1;
        }
        let revision = self.rules[rule].revision;
        let spec = spec(layer, &self.rules[rule].name.clone(), revision);
        let (by, approver) = (self.user(), self.user());
        let at = self.now();
        if first {
            self.rule(
                RuleEvent::RuleDrafted {
                    rule_id,
                    revision,
                    spec: spec.clone(),
                    by,
                    at,
                },
                rule,
            );
            if layer == Layer::Organization {
                let enforcement = Enforcement::BLOCK;
                self.rule(
                    RuleEvent::OrganizationEnforcementSet {
                        rule_id,
                        enforcement,
                        by,
                        at,
                    },
                    rule,
                );
            }
            self.submit(rule, revision, by, at);
            self.rule(
                RuleEvent::RuleApprovalRecorded {
                    rule_id,
                    revision,
                    approver,
                    approvals: 1,
                    quorum: 1,
                    at,
                },
                rule,
            );
        }
        self.rule(
            RuleEvent::RuleRevisionApproved {
                rule_id,
                revision,
                spec,
                approvers: vec![approver],
                at,
            },
            rule,
        );
    }

    fn create_team(&mut self, team: usize) {
        let team_id = self.teams[team].id;
        let by = self.user();
        let at = self.now();
        let name = TeamName::parse(&format!("Team {team:03}")).unwrap();
        self.team(
            TeamEvent::TeamCreated {
                team_id,
                name,
                by,
                at,
            },
            team,
        );
        for _ in 0..3 {
            self.add_member(team);
        }
        while self.teams[team].attached.len() < ATTACHED_PER_TEAM {
            self.attach_some(team);
        }
    }

    fn add_member(&mut self, team: usize) {
        let (team_id, user, by, at) = (self.teams[team].id, self.user(), self.user(), self.now());
        self.teams[team].members.push(user);
        self.team(
            TeamEvent::MemberAdded {
                team_id,
                user,
                role: TeamRole::Member,
                by,
                at,
            },
            team,
        );
    }

    fn attach_some(&mut self, team: usize) {
        let rule = self.rng.gen_range(ORG_RULES..self.rules.len());
        if !self.teams[team].attached.insert(rule) {
            return;
        }
        let (team_id, by, at) = (self.teams[team].id, self.user(), self.now());
        let (rule_id, rule_layer, rule_revision) = (
            self.rules[rule].id,
            self.rules[rule].layer,
            self.rules[rule].revision,
        );
        self.team(
            TeamEvent::RuleAttached {
                team_id,
                rule_id,
                rule_layer,
                rule_revision,
                enforcement: Enforcement::WARNING,
                by,
                at,
            },
            team,
        );
    }

    fn churn(&mut self) {
        let roll = self.rng.gen_range(0..1_000);
        let team = self.rng.gen_range(0..self.teams.len());
        let (team_id, by, at) = (self.teams[team].id, self.user(), self.now());
        match roll {
            0..400 => {
                if self.teams[team].members.len() > 3 && self.rng.gen_bool(0.5) {
                    let user = self.teams[team].members.remove(0);
                    self.team(
                        TeamEvent::MemberRemoved {
                            team_id,
                            user,
                            by,
                            at,
                        },
                        team,
                    );
                } else {
                    self.add_member(team);
                }
            }
            400..700 => {
                let rule = self.rng.gen_range(ORG_RULES..self.rules.len());
                self.submit(rule, self.rules[rule].revision + 1, by, at);
            }
            700..850 => {
                let rule = self.rng.gen_range(ORG_RULES..self.rules.len());
                self.approve_rule(rule, false);
            }
            850..950 => {
                let Some(&rule) = self.teams[team].attached.iter().next() else {
                    return;
                };
                let enforcement = if self.rng.gen_bool(0.5) {
                    Enforcement::BLOCK
                } else {
                    Enforcement::WARNING
                };
                let rule_id = self.rules[rule].id;
                self.team(
                    TeamEvent::EnforcementChanged {
                        team_id,
                        rule_id,
                        enforcement,
                        by,
                        at,
                    },
                    team,
                );
            }
            950..999 => {
                let Some(&rule) = self.teams[team].attached.iter().next() else {
                    return;
                };
                self.teams[team].attached.remove(&rule);
                let rule_id = self.rules[rule].id;
                self.team(
                    TeamEvent::RuleDetached {
                        team_id,
                        rule_id,
                        by,
                        at,
                    },
                    team,
                );
                while self.teams[team].attached.len() < ATTACHED_PER_TEAM {
                    self.attach_some(team);
                }
            }
            _ => {
                let rule = self.rng.gen_range(0..ORG_RULES);
                self.approve_rule(rule, false);
            }
        }
    }

    fn next(&mut self) -> SeedEvent {
        while self.pending.is_empty() {
            self.churn();
        }
        let (aggregate_type, aggregate_id, payload) = self.pending.pop_front().unwrap();
        let event_type = if aggregate_type == "Rule" {
            serde_json::from_value::<RuleEvent>(payload.clone())
                .unwrap()
                .event_type()
        } else {
            serde_json::from_value::<TeamEvent>(payload.clone())
                .unwrap()
                .event_type()
        };
        let metadata = metadata(&mut self.rng);
        SeedEvent {
            aggregate_type: aggregate_type.into(),
            aggregate_id,
            event_type,
            event_version: "1.0".into(),
            payload,
            metadata,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The benchmark.

async fn rebuild_rate(db: &Database, projection: Arc<dyn Projection>) -> (u64, f64, u64, Duration) {
    let runner = ProjectionRunner::new(db.clone(), projection, None);
    let report = runner.rebuild(&|_| {}).await.unwrap();
    (
        report.events,
        report.events_per_sec,
        report.docs,
        report.elapsed,
    )
}

async fn measure(kind: &str, db: &Database, events: u64) {
    let mut rng = StdRng::seed_from_u64(1);
    let started = Instant::now();
    seed_events(db, events, |i| tally_event(&mut rng, i))
        .await
        .unwrap();
    let seeded = started.elapsed();
    println!(
        "{kind}: seeded {events} tally events in {:.1} s ({:.0} events/s)",
        seeded.as_secs_f64(),
        events as f64 / seeded.as_secs_f64()
    );
    let (applied, rate, docs, elapsed) =
        rebuild_rate(db, Arc::new(BenchTally("bench_tally"))).await;
    println!(
        "{kind}: rebuild bench_tally: {applied} events, {docs} docs in {:.1} s = {rate:.0} events/s",
        elapsed.as_secs_f64()
    );
}

async fn measure_catch_up(kind: &str, db: &Database) {
    let mut rng = StdRng::seed_from_u64(2);
    seed_events(db, CATCH_UP_EVENTS, |i| tally_event(&mut rng, i))
        .await
        .unwrap();
    let runner = ProjectionRunner::new(db.clone(), Arc::new(BenchTally("bench_tally_live")), None);
    let started = Instant::now();
    let applied = runner.catch_up().await.unwrap();
    let elapsed = started.elapsed();
    println!(
        "{kind}: live catch-up (500 events per transaction, documents loaded from the database): \
         {applied} events in {:.1} s = {:.0} events/s",
        elapsed.as_secs_f64(),
        applied as f64 / elapsed.as_secs_f64()
    );
}

async fn measure_team_rulesets(kind: &str, db: &Database, events: u64) {
    let mut history = History::new();
    let started = Instant::now();
    seed_events(db, events, |_| history.next()).await.unwrap();
    println!(
        "{kind}: seeded {events} team/rule events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let projection = edict_projections::by_name("team_rulesets").unwrap();
    let (applied, rate, docs, elapsed) = rebuild_rate(db, Arc::clone(&projection)).await;
    println!(
        "{kind}: rebuild team_rulesets: {applied} events, {docs} docs in {:.1} s = {rate:.0} events/s",
        elapsed.as_secs_f64()
    );

    // The projection alone, without the store: the same fold in memory over the first events.
    let log = db
        .read_all(Checkpoint::START, IN_MEMORY_EVENTS)
        .await
        .unwrap();
    let started = Instant::now();
    edict_projections::replay(projection.as_ref(), &log)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    println!(
        "{kind}: team_rulesets in memory (edict_projections::replay, no store): {} events in {:.1} s \
         = {:.0} events/s",
        log.len(),
        elapsed.as_secs_f64(),
        log.len() as f64 / elapsed.as_secs_f64()
    );
}

fn events_from_env() -> u64 {
    std::env::var("EDICT_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(DEFAULT_EVENTS)
}

#[derive(Debug, Clone, Copy)]
enum Workload {
    Tally,
    CatchUp,
    TeamRulesets,
}

async fn run(kind: &str, db: &Database, workload: Workload, events: u64) {
    match workload {
        Workload::Tally => measure(kind, db, events).await,
        Workload::CatchUp => measure_catch_up(kind, db).await,
        Workload::TeamRulesets => measure_team_rulesets(kind, db, events).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture (and --release)"]
async fn projection_rebuild_rate() {
    let events = events_from_env();
    let admin_url = test_database_url();
    let wanted = |name: &str, var: &str| {
        std::env::var(var).map_or(true, |list| list.split(',').any(|item| item.trim() == name))
    };
    let workloads: Vec<Workload> = [
        ("tally", Workload::Tally),
        ("catch_up", Workload::CatchUp),
        ("team_rulesets", Workload::TeamRulesets),
    ]
    .into_iter()
    .filter(|(name, _)| wanted(name, "EDICT_BENCH_WORKLOADS"))
    .map(|(_, workload)| workload)
    .collect();
    let postgres = wanted("postgres", "EDICT_BENCH_STORES");
    let sqlite = wanted("sqlite", "EDICT_BENCH_STORES");

    for &workload in workloads.iter().filter(|_| postgres) {
        let (db, url) = create_isolated_postgres(&admin_url, "edict_bench_rebuild")
            .await
            .unwrap();
        run("postgres", &db, workload, events).await;
        db.close().await;
        drop_isolated_postgres(&admin_url, &url).await.unwrap();
    }
    for &workload in workloads.iter().filter(|_| sqlite) {
        let dir = std::env::temp_dir().join(format!("edict-bench-{}", Uuid::new_v4().simple()));
        let db = Database::connect(&format!("sqlite://{}/edict.db", dir.display()))
            .await
            .unwrap();
        db.migrate().await.unwrap();
        run("sqlite", &db, workload, events).await;
        db.close().await;
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
}
