//! The projection's own throughput, in memory, over a generated organization history (the shape of the
//! `team_rulesets` workload of `edict-infrastructure`'s `projection_rebuild_rate` benchmark). Ignored by
//! default; run it with
//!
//! ```text
//! EDICT_BENCH_EVENTS=500000 cargo test --release -p edict-projections rebuild_rate -- --ignored --nocapture
//! ```
//!
//! It prints the rate of a single-pass fold ([`crate::replay`], what a rebuild computes) and of a batched
//! fold (fresh cache per 500 events over the documents written so far, what the live runner computes),
//! and the content hash of both, which must be equal (`EDICT_BENCH_BATCHED=0` skips the batched fold).

#![allow(clippy::print_stdout)]

use crate::decode::AggregateType;
use crate::testkit::{Log, at};
use crate::{
    DocKey, DocLoader, Docs, Projection, ProjectionError, RecordedEvent, StoredDoc, content_hash,
    replay,
};
use edict_domain::rule::{
    Category, Description, PathGlob, RuleContent, RuleEvent, RuleName, RuleSpec, Tag,
};
use edict_domain::team::{TeamEvent, TeamName, TeamRole};
use edict_domain::{Enforcement, Layer, RuleId, TeamId, UserId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use uuid::Uuid;

const ORG_RULES: usize = 20;
const TEAM_RULES: usize = 400;
const PROJECT_RULES: usize = 180;
const TEAMS: usize = 200;
const ATTACHED_PER_TEAM: usize = 12;
const LIVE_BATCH: usize = 500;

/// A small deterministic generator (xorshift64*), so the history is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, from: usize, to: usize) -> usize {
        from + self.below(to - from)
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_u128((u128::from(self.next()) << 64) | u128::from(self.next()))
    }
}

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

struct History {
    rng: Rng,
    rules: Vec<RuleState>,
    teams: Vec<TeamState>,
    log: Log,
    out: Vec<RecordedEvent>,
}

fn spec(layer: Layer, name: &str, revision: u32, variant: usize) -> RuleSpec {
    let categories = [Some("Practice"), Some("Security"), None, Some("style")];
    RuleSpec {
        name: RuleName::parse(name).unwrap(),
        description: Description::parse("Keeps our assistants consistent across repositories")
            .unwrap(),
        layer,
        content: RuleContent::parse(&format!(
            "## {name} (revision {revision})\n\nAlways run the formatter and the linter before \
             committing. Prefer small, reviewed changes; explain why in the commit message. Never \
             commit secrets.\n"
        ))
        .unwrap(),
        category: categories[variant % categories.len()].map(|c| Category::parse(c).unwrap()),
        priority: (variant % 3) as i32,
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
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let rules = (0..ORG_RULES + TEAM_RULES + PROJECT_RULES)
            .map(|i| RuleState {
                id: RuleId(rng.uuid()),
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
        let teams = (0..TEAMS)
            .map(|_| TeamState {
                id: TeamId(rng.uuid()),
                attached: BTreeSet::new(),
                members: Vec::new(),
            })
            .collect();
        let mut history = History {
            rng,
            rules,
            teams,
            log: Log::default(),
            out: Vec::new(),
        };
        for rule in 0..history.rules.len() {
            history.approve_rule(rule, true);
        }
        for team in 0..history.teams.len() {
            history.create_team(team);
        }
        history
    }

    fn user(&mut self) -> UserId {
        UserId(self.rng.uuid())
    }

    fn rule(&mut self, event: RuleEvent) {
        let recorded = self.log.record(AggregateType::Rule, &event);
        self.out.push(recorded);
    }

    fn team(&mut self, event: TeamEvent) {
        let recorded = self.log.record(AggregateType::Team, &event);
        self.out.push(recorded);
    }

    fn approve_rule(&mut self, rule: usize, first: bool) {
        let (rule_id, layer) = (self.rules[rule].id, self.rules[rule].layer);
        if !first {
            self.rules[rule].revision += 1;
        }
        let revision = self.rules[rule].revision;
        let variant = rule + revision as usize / 3;
        let spec = spec(layer, &self.rules[rule].name.clone(), revision, variant);
        let (by, approver) = (self.user(), self.user());
        let at = at(1);
        if first {
            self.rule(RuleEvent::RuleDrafted {
                rule_id,
                revision,
                spec: spec.clone(),
                by,
                at,
            });
            if layer == Layer::Organization {
                self.rule(RuleEvent::OrganizationEnforcementSet {
                    rule_id,
                    enforcement: Enforcement::BLOCK,
                    by,
                    at,
                });
            }
            self.rule(RuleEvent::RuleSubmitted {
                rule_id,
                revision,
                by,
                at,
            });
            self.rule(RuleEvent::RuleApprovalRecorded {
                rule_id,
                revision,
                approver,
                approvals: 1,
                quorum: 1,
                at,
            });
        }
        self.rule(RuleEvent::RuleRevisionApproved {
            rule_id,
            revision,
            spec,
            approvers: vec![approver],
            at,
        });
    }

    fn create_team(&mut self, team: usize) {
        let team_id = self.teams[team].id;
        let by = self.user();
        self.team(TeamEvent::TeamCreated {
            team_id,
            name: TeamName::parse(&format!("Team {team:03}")).unwrap(),
            by,
            at: at(2),
        });
        for _ in 0..3 {
            self.add_member(team);
        }
        while self.teams[team].attached.len() < ATTACHED_PER_TEAM {
            self.attach_some(team);
        }
    }

    fn add_member(&mut self, team: usize) {
        let (team_id, user, by) = (self.teams[team].id, self.user(), self.user());
        self.teams[team].members.push(user);
        self.team(TeamEvent::MemberAdded {
            team_id,
            user,
            role: TeamRole::Member,
            by,
            at: at(3),
        });
    }

    fn attach_some(&mut self, team: usize) {
        let rule = self.rng.range(ORG_RULES, self.rules.len());
        if !self.teams[team].attached.insert(rule) {
            return;
        }
        let (team_id, by) = (self.teams[team].id, self.user());
        let enforcement = if self.rng.below(4) == 0 {
            Enforcement::temporary(3600).unwrap()
        } else {
            Enforcement::WARNING
        };
        self.team(TeamEvent::RuleAttached {
            team_id,
            rule_id: self.rules[rule].id,
            rule_layer: self.rules[rule].layer,
            rule_revision: self.rules[rule].revision,
            enforcement,
            by,
            at: at(4),
        });
    }

    /// One step of the long tail: per 1,000 steps about 400 membership changes, 300 review steps of
    /// revisions not in force yet, 150 approvals of team or project rules, 100 enforcement changes, 45
    /// detach/attach pairs, 4 renames and 1 approval of an organization rule.
    fn churn(&mut self) {
        let roll = self.rng.below(1_000);
        let team = self.rng.below(self.teams.len());
        let (team_id, by, at) = (self.teams[team].id, self.user(), at(5));
        match roll {
            0..400 => {
                if self.teams[team].members.len() > 3 && self.rng.below(2) == 0 {
                    let user = self.teams[team].members.remove(0);
                    self.team(TeamEvent::MemberRemoved {
                        team_id,
                        user,
                        by,
                        at,
                    });
                } else {
                    self.add_member(team);
                }
            }
            400..700 => {
                let rule = self.rng.range(ORG_RULES, self.rules.len());
                let (rule_id, revision) = (self.rules[rule].id, self.rules[rule].revision + 1);
                self.rule(RuleEvent::RuleSubmitted {
                    rule_id,
                    revision,
                    by,
                    at,
                });
            }
            700..850 => {
                let rule = self.rng.range(ORG_RULES, self.rules.len());
                self.approve_rule(rule, false);
            }
            850..950 => {
                let Some(&rule) = self.teams[team].attached.iter().next() else {
                    return;
                };
                let enforcement = if self.rng.below(2) == 0 {
                    Enforcement::BLOCK
                } else {
                    Enforcement::WARNING
                };
                self.team(TeamEvent::EnforcementChanged {
                    team_id,
                    rule_id: self.rules[rule].id,
                    enforcement,
                    by,
                    at,
                });
            }
            950..995 => {
                let Some(&rule) = self.teams[team].attached.iter().next() else {
                    return;
                };
                self.teams[team].attached.remove(&rule);
                self.team(TeamEvent::RuleDetached {
                    team_id,
                    rule_id: self.rules[rule].id,
                    by,
                    at,
                });
                while self.teams[team].attached.len() < ATTACHED_PER_TEAM {
                    self.attach_some(team);
                }
            }
            995..999 => {
                let name = TeamName::parse(&format!("Team {team:03} v{roll}")).unwrap();
                self.team(TeamEvent::TeamRenamed {
                    team_id,
                    name,
                    by,
                    at,
                });
            }
            _ => {
                let rule = self.rng.below(ORG_RULES);
                self.approve_rule(rule, false);
            }
        }
    }

    fn events(count: usize) -> Vec<RecordedEvent> {
        let mut history = History::new();
        while history.out.len() < count {
            history.churn();
        }
        history.out.truncate(count);
        history.out
    }
}

fn events_from_env() -> usize {
    std::env::var("EDICT_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(200_000)
}

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture (and --release)"]
async fn rebuild_rate() {
    let events = History::events(events_from_env());
    let projection = super::TeamRulesets;

    let started = Instant::now();
    let rebuilt = replay(&projection, &events).await.unwrap();
    let elapsed = started.elapsed();
    println!(
        "team_rulesets in memory, one pass: {} events, {} docs in {:.2} s = {:.0} events/s",
        events.len(),
        rebuilt.len(),
        elapsed.as_secs_f64(),
        events.len() as f64 / elapsed.as_secs_f64()
    );
    let rebuilt_hash = content_hash(rebuilt.iter().map(|(k, d)| (k, d)));
    println!("content hash (one pass): {rebuilt_hash}");

    if std::env::var("EDICT_BENCH_BATCHED").is_ok_and(|v| v == "0") {
        return;
    }
    let mut store = BTreeMap::new();
    let started = Instant::now();
    for batch in events.chunks(LIVE_BATCH) {
        let mut loader = Borrowed(&store);
        let mut docs = Docs::new(&mut loader);
        for event in batch {
            projection.apply(event, &mut docs).await.unwrap();
        }
        let dirty = docs.take_dirty().unwrap();
        for (key, doc) in dirty {
            match doc {
                Some(doc) => store.insert(key, doc),
                None => store.remove(&key),
            };
        }
    }
    let elapsed = started.elapsed();
    println!(
        "team_rulesets in memory, batches of {LIVE_BATCH} over a map store: {:.2} s = {:.0} events/s",
        elapsed.as_secs_f64(),
        events.len() as f64 / elapsed.as_secs_f64()
    );
    let live_hash = content_hash(store.iter());
    println!("content hash (batched): {live_hash}");
    assert_eq!(live_hash, rebuilt_hash);
}

/// Loads from a map of documents, as the runner loads from its database.
struct Borrowed<'s>(&'s BTreeMap<DocKey, StoredDoc>);

#[async_trait::async_trait]
impl DocLoader for Borrowed<'_> {
    async fn load(&mut self, kind: &str, key: &str) -> Result<Option<StoredDoc>, ProjectionError> {
        Ok(self.0.get(&(kind.to_owned(), key.to_owned())).cloned())
    }
}

/// The generated history as a log (for [`crate::as_of::document_as_of`]).
struct MemoryLog(Vec<RecordedEvent>);

#[async_trait::async_trait]
impl edict_application::event_log::EventLog for MemoryLog {
    async fn read_all(
        &self,
        after: edict_application::event_log::Checkpoint,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, edict_application::event_log::EventLogError> {
        let start = self.0.partition_point(|e| e.checkpoint() <= after);
        Ok(self.0[start..].iter().take(limit).cloned().collect())
    }

    async fn position_of(
        &self,
        _: &str,
        _: &str,
        _: i64,
    ) -> Result<Option<i64>, edict_application::event_log::EventLogError> {
        Ok(None)
    }

    async fn event_at(
        &self,
        position: i64,
    ) -> Result<Option<RecordedEvent>, edict_application::event_log::EventLogError> {
        Ok(self
            .0
            .iter()
            .find(|e| e.global_position == position)
            .cloned())
    }
}

/// Time travel: one team's rule set as of the middle and the end of the generated history, replayed
/// through the log port (the in-memory log's default filtered reader), as `?as_of=` computes it.
#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture (and --release)"]
async fn time_travel_rate() {
    use edict_application::event_log::LogBound;
    let events = History::events(events_from_env());
    let team = events
        .iter()
        .find(|e| e.aggregate_type == "Team")
        .map(|e| e.aggregate_id.clone())
        .unwrap();
    let log = MemoryLog(events);
    for share in [2, 1] {
        let through = log.0[log.0.len() / share - 1].checkpoint();
        let started = Instant::now();
        let past = crate::as_of::document_as_of(
            &log,
            &super::TeamRulesets,
            crate::RULESET_KIND,
            &team,
            LogBound::Through(through),
        )
        .await
        .unwrap();
        let elapsed = started.elapsed();
        assert!(past.doc.is_some());
        println!(
            "team rule set as of position {}: {} events replayed in {:.3} s = {:.0} events/s",
            through.position,
            past.events,
            elapsed.as_secs_f64(),
            past.events as f64 / elapsed.as_secs_f64()
        );
    }
}
