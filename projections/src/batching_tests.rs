//! Property tests over random, valid histories: commands run through the real aggregates' `handle`
//! (with the application's cross-aggregate checks simulated), the events of accepted commands recorded
//! as the log records them. Then:
//!
//! - folding the whole log in one cache equals folding it in batches, each with a fresh cache over the
//!   documents written so far (the live runner over its database): same [`content_hash`];
//! - every read model agrees with the aggregates the events came from;
//! - a team's rule set revision moves by exactly one when its hash changes, and only then.

use crate::decode::AggregateType;
use crate::directory::{TEAM_KIND, TeamDoc, USER_KIND, UserDoc};
use crate::rule_catalog::{RULE_KIND, RuleDoc};
use crate::ruleset::RuleSetDoc;
use crate::testkit::{Harness, Log, at};
use crate::{Docs, EmptyLoader, RULESET_KIND, RecordedEvent, content_hash, replay};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use edict_domain::agent::{AgentCommand, MachineId, MachineName};
use edict_domain::change_request::{ChangeRequestCommand, Diff, ExceptionKind, FilePath, ReportId};
use edict_domain::rule::{
    ApprovalQuorum, Category, Description, PathGlob, RuleCommand, RuleContent, RuleName, RuleSpec,
    Tag,
};
use edict_domain::team::{TeamCommand, TeamName, TeamRole};
use edict_domain::user::{Email, GlobalRole, PersonName, UserCommand};
use edict_domain::{
    Agent, AgentId, ChangeRequest, ChangeRequestId, Enforcement, ExceptionId, Layer, Reason, Rule,
    RuleId, Sha256Hex, Team, TeamId, User, UserId, Versioned,
};
use proptest::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

const USERS: usize = 4;
const RULES: usize = 4;
const TEAMS: usize = 3;
const AGENTS: usize = 2;
const CHANGES: usize = 2;

fn user_id(i: usize) -> UserId {
    UserId(Uuid::from_u128(0x100 + i as u128))
}
fn rule_id(i: usize) -> RuleId {
    RuleId(Uuid::from_u128(0x200 + i as u128))
}
fn team_id(i: usize) -> TeamId {
    TeamId(Uuid::from_u128(0x300 + i as u128))
}
fn agent_id(i: usize) -> AgentId {
    AgentId(Uuid::from_u128(0x400 + i as u128))
}
fn change_id(i: usize) -> ChangeRequestId {
    ChangeRequestId(Uuid::from_u128(0x500 + i as u128))
}

fn enforcement(i: usize) -> Enforcement {
    match i % 3 {
        0 => Enforcement::BLOCK,
        1 => Enforcement::WARNING,
        _ => Enforcement::temporary(3600).unwrap(),
    }
}

fn layer(i: usize) -> Layer {
    Layer::ALL[i % Layer::ALL.len()]
}

fn rule_spec(layer: Layer, variant: usize) -> RuleSpec {
    let names = ["No secrets", "Small commits", "Be kind", "Rust style"];
    let categories = [None, Some("Security"), Some("Style")];
    RuleSpec {
        name: RuleName::parse(names[variant % names.len()]).unwrap(),
        description: Description::parse(&format!("variant {variant}")).unwrap(),
        layer,
        content: RuleContent::parse(&format!("Content {variant}.\n")).unwrap(),
        category: categories[variant % categories.len()].map(|c| Category::parse(c).unwrap()),
        priority: (variant % 4) as i32,
        tags: [Tag::parse(["security", "style"][variant % 2]).unwrap()].into(),
        triggers: if layer == Layer::Project && variant.is_multiple_of(2) {
            vec![PathGlob::parse("src/**/*.rs").unwrap()]
        } else {
            Vec::new()
        },
    }
}

/// One random command, by target index; parameters are indices into small fixed sets.
#[derive(Debug, Clone)]
enum Op {
    CreateUser(usize),
    UserRole(usize, bool),
    Deactivate(usize, bool),
    Password(usize),
    DraftRule(usize, usize, usize, usize),
    EditRule(usize, usize, usize),
    SubmitRule(usize, usize),
    ApproveRule(usize, usize),
    RejectRule(usize, usize),
    ReviseRule(usize, usize, usize),
    OrgEnforcement(usize, usize),
    ArchiveRule(usize),
    CreateTeam(usize),
    RenameTeam(usize, usize),
    AddMember(usize, usize, bool),
    ChangeRole(usize, usize, bool),
    RemoveMember(usize, usize),
    Attach(usize, usize, usize),
    ChangeEnforcement(usize, usize, usize),
    Detach(usize, usize),
    ArchiveTeam(usize),
    Enroll(usize, usize),
    RevokeAgent(usize),
    OpenChange(usize, usize, usize, usize),
    DecideChange(usize, usize, usize),
    /// Moves rule `i` one step along its life (draft, edit or submit, approve or reject, revise or set
    /// its organization enforcement), so that random histories reach approved rules often.
    AdvanceRule(usize, usize, usize, usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..USERS;
    let r = 0..RULES;
    let t = 0..TEAMS;
    prop_oneof![
        2 => u.clone().prop_map(Op::CreateUser),
        1 => (u.clone(), any::<bool>()).prop_map(|(i, g)| Op::UserRole(i, g)),
        1 => (u.clone(), any::<bool>()).prop_map(|(i, d)| Op::Deactivate(i, d)),
        1 => u.clone().prop_map(Op::Password),
        4 => (r.clone(), 0..3usize, 0..8usize, u.clone()).prop_map(|(i, l, v, b)| Op::DraftRule(i, l, v, b)),
        2 => (r.clone(), 0..8usize, u.clone()).prop_map(|(i, v, b)| Op::EditRule(i, v, b)),
        4 => (r.clone(), u.clone()).prop_map(|(i, b)| Op::SubmitRule(i, b)),
        6 => (r.clone(), u.clone()).prop_map(|(i, b)| Op::ApproveRule(i, b)),
        1 => (r.clone(), u.clone()).prop_map(|(i, b)| Op::RejectRule(i, b)),
        3 => (r.clone(), 0..8usize, u.clone()).prop_map(|(i, v, b)| Op::ReviseRule(i, v, b)),
        2 => (r.clone(), 0..3usize).prop_map(|(i, e)| Op::OrgEnforcement(i, e)),
        1 => r.clone().prop_map(Op::ArchiveRule),
        3 => t.clone().prop_map(Op::CreateTeam),
        1 => (t.clone(), 0..3usize).prop_map(|(i, v)| Op::RenameTeam(i, v)),
        2 => (t.clone(), u.clone(), any::<bool>()).prop_map(|(i, m, a)| Op::AddMember(i, m, a)),
        1 => (t.clone(), u.clone(), any::<bool>()).prop_map(|(i, m, a)| Op::ChangeRole(i, m, a)),
        1 => (t.clone(), u.clone()).prop_map(|(i, m)| Op::RemoveMember(i, m)),
        5 => (t.clone(), r.clone(), 0..3usize).prop_map(|(i, x, e)| Op::Attach(i, x, e)),
        2 => (t.clone(), r.clone(), 0..3usize).prop_map(|(i, x, e)| Op::ChangeEnforcement(i, x, e)),
        1 => (t.clone(), r.clone()).prop_map(|(i, x)| Op::Detach(i, x)),
        1 => t.clone().prop_map(Op::ArchiveTeam),
        1 => (0..AGENTS, u.clone()).prop_map(|(i, m)| Op::Enroll(i, m)),
        1 => (0..AGENTS).prop_map(Op::RevokeAgent),
        2 => (0..CHANGES, t.clone(), r.clone(), u.clone()).prop_map(|(i, x, y, z)| Op::OpenChange(i, x, y, z)),
        3 => (0..CHANGES, 0..9usize, u.clone()).prop_map(|(i, d, b)| Op::DecideChange(i, d, b)),
        16 => (r.clone(), 0..60usize, 0..3usize, 0..8usize, u.clone())
            .prop_map(|(i, c, l, v, b)| Op::AdvanceRule(i, c, l, v, b)),
    ]
}

/// The aggregates, and the log of the events their accepted commands wrote.
#[derive(Default)]
struct World {
    users: [User; USERS],
    rules: [Rule; RULES],
    teams: [Team; TEAMS],
    agents: [Agent; AGENTS],
    changes: [ChangeRequest; CHANGES],
    log: Log,
    events: Vec<RecordedEvent>,
}

/// Runs `command` through `aggregate.handle`; on success keeps the new state and returns the events.
async fn run<A: Aggregate<Services = ()> + Clone>(
    aggregate: &mut A,
    command: A::Command,
) -> Vec<A::Event> {
    let mut next = aggregate.clone();
    let sink = EventSink::<A>::default();
    if next.handle(command, &(), &sink).await.is_err() {
        return Vec::new();
    }
    *aggregate = next;
    sink.collect().await
}

impl World {
    fn record<E: Serialize + DomainEvent>(&mut self, kind: AggregateType, events: Vec<E>) {
        for event in events {
            let recorded = self.log.record(kind, &event);
            self.events.push(recorded);
        }
    }

    async fn step(&mut self, step: usize, op: Op) {
        let now = at(i64::try_from(step).unwrap() + 10);
        let admin = user_id(0);
        match op {
            Op::CreateUser(i) => {
                let roles: BTreeSet<_> = if i == 0 {
                    [GlobalRole::OrgAdmin].into()
                } else {
                    [GlobalRole::Member].into()
                };
                let command = UserCommand::CreateUser {
                    user_id: user_id(i),
                    email: Email::parse(&format!("user{i}@example.com")).unwrap(),
                    name: PersonName::parse(&format!("User {i}")).unwrap(),
                    roles,
                    by: None,
                    at: now,
                };
                let events = run(&mut self.users[i], command).await;
                self.record(AggregateType::User, events);
            }
            Op::UserRole(i, grant) => {
                let role = GlobalRole::Auditor;
                let command = if grant {
                    UserCommand::GrantRole {
                        role,
                        by: admin,
                        at: now,
                    }
                } else {
                    UserCommand::RevokeRole {
                        role,
                        by: admin,
                        at: now,
                    }
                };
                let events = run(&mut self.users[i], command).await;
                self.record(AggregateType::User, events);
            }
            Op::Deactivate(i, deactivate) => {
                let command = if deactivate {
                    UserCommand::DeactivateUser { by: admin, at: now }
                } else {
                    UserCommand::ReactivateUser { by: admin, at: now }
                };
                let events = run(&mut self.users[i], command).await;
                self.record(AggregateType::User, events);
            }
            Op::Password(i) => {
                let events = run(
                    &mut self.users[i],
                    UserCommand::ChangePassword {
                        by: user_id(i),
                        at: now,
                    },
                )
                .await;
                self.record(AggregateType::User, events);
            }
            Op::DraftRule(i, l, variant, by) => {
                let command = RuleCommand::DraftRule {
                    rule_id: rule_id(i),
                    spec: rule_spec(layer(l), variant),
                    by: user_id(by),
                    at: now,
                };
                let events = run(&mut self.rules[i], command).await;
                self.record(AggregateType::Rule, events);
            }
            Op::EditRule(i, variant, by) | Op::ReviseRule(i, variant, by) => {
                let spec = rule_spec(self.rules[i].layer().unwrap_or(Layer::Team), variant);
                let command = if matches!(op, Op::EditRule(..)) {
                    RuleCommand::EditDraft {
                        spec,
                        by: user_id(by),
                        at: now,
                    }
                } else {
                    RuleCommand::ReviseRule {
                        spec,
                        by: user_id(by),
                        at: now,
                    }
                };
                let events = run(&mut self.rules[i], command).await;
                self.record(AggregateType::Rule, events);
            }
            Op::SubmitRule(i, by) => {
                let events = run(
                    &mut self.rules[i],
                    RuleCommand::SubmitRule {
                        by: user_id(by),
                        at: now,
                    },
                )
                .await;
                self.record(AggregateType::Rule, events);
            }
            Op::ApproveRule(i, by) => {
                let quorum = ApprovalQuorum::default()
                    .for_layer(self.rules[i].layer().unwrap_or(Layer::Team));
                let command = RuleCommand::ApproveRule {
                    approver: user_id(by),
                    quorum,
                    at: now,
                };
                let events = run(&mut self.rules[i], command).await;
                self.record(AggregateType::Rule, events);
            }
            Op::RejectRule(i, by) => {
                let command = RuleCommand::RejectRule {
                    reviewer: user_id(by),
                    reason: Reason::parse("not yet").unwrap(),
                    at: now,
                };
                let events = run(&mut self.rules[i], command).await;
                self.record(AggregateType::Rule, events);
            }
            Op::OrgEnforcement(i, e) => {
                let command = RuleCommand::SetOrganizationEnforcement {
                    enforcement: enforcement(e),
                    by: admin,
                    at: now,
                };
                let events = run(&mut self.rules[i], command).await;
                self.record(AggregateType::Rule, events);
            }
            Op::ArchiveRule(i) => {
                let events = run(
                    &mut self.rules[i],
                    RuleCommand::ArchiveRule { by: admin, at: now },
                )
                .await;
                self.record(AggregateType::Rule, events);
            }
            Op::CreateTeam(i) => {
                let command = TeamCommand::CreateTeam {
                    team_id: team_id(i),
                    name: TeamName::parse(&format!("Team {i}")).unwrap(),
                    by: admin,
                    at: now,
                };
                let events = run(&mut self.teams[i], command).await;
                self.record(AggregateType::Team, events);
            }
            Op::RenameTeam(i, v) => {
                let command = TeamCommand::RenameTeam {
                    name: TeamName::parse(&format!("Team {i} v{v}")).unwrap(),
                    by: admin,
                    at: now,
                };
                let events = run(&mut self.teams[i], command).await;
                self.record(AggregateType::Team, events);
            }
            Op::AddMember(i, m, team_admin) | Op::ChangeRole(i, m, team_admin) => {
                // The application only adds users that exist.
                if !self.users[m].exists() {
                    return;
                }
                let role = if team_admin {
                    TeamRole::TeamAdmin
                } else {
                    TeamRole::Member
                };
                let command = if matches!(op, Op::AddMember(..)) {
                    TeamCommand::AddMember {
                        user: user_id(m),
                        role,
                        by: admin,
                        at: now,
                    }
                } else {
                    TeamCommand::ChangeMemberRole {
                        user: user_id(m),
                        role,
                        by: admin,
                        at: now,
                    }
                };
                let events = run(&mut self.teams[i], command).await;
                self.record(AggregateType::Team, events);
            }
            Op::RemoveMember(i, m) => {
                let events = run(
                    &mut self.teams[i],
                    TeamCommand::RemoveMember {
                        user: user_id(m),
                        by: admin,
                        at: now,
                    },
                )
                .await;
                self.record(AggregateType::Team, events);
            }
            Op::Attach(i, r, e) => {
                // The application attaches only approved, non-archived rules, with their layer and
                // approved revision.
                let rule = &self.rules[r];
                let (Some(approved), Some(rule_layer)) = (rule.approved(), rule.layer()) else {
                    return;
                };
                if rule.archived() {
                    return;
                }
                let command = TeamCommand::AttachRule {
                    rule_id: rule_id(r),
                    rule_layer,
                    rule_revision: approved.number(),
                    enforcement: enforcement(e),
                    by: admin,
                    at: now,
                };
                let events = run(&mut self.teams[i], command).await;
                self.record(AggregateType::Team, events);
            }
            Op::ChangeEnforcement(i, r, e) => {
                let command = TeamCommand::ChangeEnforcement {
                    rule_id: rule_id(r),
                    enforcement: enforcement(e),
                    by: admin,
                    at: now,
                };
                let events = run(&mut self.teams[i], command).await;
                self.record(AggregateType::Team, events);
            }
            Op::Detach(i, r) => {
                let events = run(
                    &mut self.teams[i],
                    TeamCommand::DetachRule {
                        rule_id: rule_id(r),
                        by: admin,
                        at: now,
                    },
                )
                .await;
                self.record(AggregateType::Team, events);
            }
            Op::ArchiveTeam(i) => {
                let events = run(
                    &mut self.teams[i],
                    TeamCommand::ArchiveTeam { by: admin, at: now },
                )
                .await;
                self.record(AggregateType::Team, events);
            }
            Op::Enroll(i, m) => {
                let command = AgentCommand::EnrollAgent {
                    agent_id: agent_id(i),
                    user: user_id(m),
                    machine_id: MachineId::parse(&format!("machine-{i}")).unwrap(),
                    machine_name: MachineName::parse("laptop").unwrap(),
                    at: now,
                };
                let events = run(&mut self.agents[i], command).await;
                self.record(AggregateType::Agent, events);
            }
            Op::RevokeAgent(i) => {
                let command = AgentCommand::RevokeAgent {
                    by: admin,
                    reason: Some(Reason::parse("lost").unwrap()),
                    at: now,
                };
                let events = run(&mut self.agents[i], command).await;
                self.record(AggregateType::Agent, events);
            }
            Op::OpenChange(i, t, r, m) => {
                let command = ChangeRequestCommand::OpenChangeRequest {
                    change_request_id: change_id(i),
                    agent: agent_id(0),
                    user: user_id(m),
                    team: team_id(t),
                    rule: rule_id(r),
                    file: FilePath::parse("/home/dev/.claude/CLAUDE.md").unwrap(),
                    layer: Layer::Team,
                    original_hash: Sha256Hex::parse("h", &"a".repeat(64)).unwrap(),
                    new_hash: Sha256Hex::parse("h", &"b".repeat(64)).unwrap(),
                    diff: Diff::parse("-a\n+b\n").unwrap(),
                    timeout_at: now + chrono::TimeDelta::hours(1),
                    report_id: ReportId::parse(&format!("report-{step}")).unwrap(),
                    at: now,
                };
                let events = run(&mut self.changes[i], command).await;
                self.record(AggregateType::ChangeRequest, events);
            }
            Op::AdvanceRule(i, choice, l, variant, by) => {
                self.advance_rule(step, i, choice, l, variant, by).await;
            }
            Op::DecideChange(i, decision, by) => {
                let by = user_id(by);
                let reason = Reason::parse("because").unwrap();
                let command = match decision {
                    0 => ChangeRequestCommand::AmendChangeRequest {
                        by: agent_id(0),
                        new_hash: Sha256Hex::parse("h", &"c".repeat(64)).unwrap(),
                        diff: Diff::parse("-a\n+c\n").unwrap(),
                        report_id: ReportId::parse(&format!("report-{step}")).unwrap(),
                        at: now,
                    },
                    1 => ChangeRequestCommand::ApproveChange { by, at: now },
                    2 => ChangeRequestCommand::RejectChange {
                        by,
                        reason,
                        at: now,
                    },
                    3 => ChangeRequestCommand::AutoRevert {
                        at: now + chrono::TimeDelta::hours(2),
                    },
                    4 => ChangeRequestCommand::RequestException {
                        exception_id: ExceptionId(Uuid::from_u128(0x600 + step as u128)),
                        by,
                        justification: reason,
                        kind: ExceptionKind::Permanent,
                        at: now,
                    },
                    5 => ChangeRequestCommand::GrantException {
                        by,
                        until: None,
                        at: now,
                    },
                    6 => ChangeRequestCommand::DenyException {
                        by,
                        reason,
                        at: now,
                    },
                    _ => ChangeRequestCommand::Withdraw { by, at: now },
                };
                let events = run(&mut self.changes[i], command).await;
                self.record(AggregateType::ChangeRequest, events);
            }
        }
    }

    /// The next step of rule `i`'s life, picked by `choice`.
    async fn advance_rule(
        &mut self,
        step: usize,
        i: usize,
        choice: usize,
        l: usize,
        variant: usize,
        by: usize,
    ) {
        use edict_domain::rule::WorkingState;
        let rule = &self.rules[i];
        let op = if !rule.exists() {
            Op::DraftRule(i, l, variant, by)
        } else {
            match rule.working().map(|w| w.state()) {
                Some(WorkingState::Draft | WorkingState::Rejected { .. })
                    if choice.is_multiple_of(4) =>
                {
                    Op::EditRule(i, variant, by)
                }
                Some(WorkingState::Draft | WorkingState::Rejected { .. }) => Op::SubmitRule(i, by),
                Some(WorkingState::Pending { .. }) if choice.is_multiple_of(8) => {
                    Op::RejectRule(i, by)
                }
                Some(WorkingState::Pending { .. }) => {
                    // The first user who may approve, starting from `by`.
                    let working = rule
                        .working()
                        .map(|w| (w.author(), w.editors().clone(), w.approvals().to_vec()));
                    let Some((author, editors, approvals)) = working else {
                        return;
                    };
                    let approver = (0..USERS).map(|k| (by + k) % USERS).find(|&k| {
                        let u = user_id(k);
                        u != author && !editors.contains(&u) && approvals.iter().all(|a| a.by != u)
                    });
                    match approver {
                        Some(k) => Op::ApproveRule(i, k),
                        None => return,
                    }
                }
                None if choice.is_multiple_of(3) && rule.layer() == Some(Layer::Organization) => {
                    Op::OrgEnforcement(i, choice)
                }
                None if choice % 3 == 1 => Op::ReviseRule(i, variant, by),
                None if choice == 59 => Op::ArchiveRule(i),
                None => return,
            }
        };
        Box::pin(self.step(step, op)).await;
    }

    async fn build(ops: Vec<Op>) -> World {
        let mut world = World::default();
        // Everyone exists from the start, and one team; the other teams come and go at random (so
        // some are created after organization rules are approved).
        let setup = (0..USERS).map(Op::CreateUser).chain([Op::CreateTeam(0)]);
        for (step, op) in setup.chain(ops).enumerate() {
            world.step(step, op).await;
        }
        world
    }
}

/// Splits `events` into consecutive batches whose sizes cycle through `sizes`.
fn batches<'e>(events: &'e [RecordedEvent], sizes: &[usize]) -> Vec<&'e [RecordedEvent]> {
    let mut out = Vec::new();
    let mut rest = events;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

type Received = BTreeSet<(RuleId, u32, edict_domain::EnforcementMode, Option<u64>)>;

/// The `(rule id, revision, mode, timeout)` a team should receive on `layer`, straight from the
/// aggregates.
fn expected_layer(world: &World, team: &Team, layer: Layer) -> Received {
    if team.archived() {
        return BTreeSet::new();
    }
    world
        .rules
        .iter()
        .filter(|rule| rule.layer() == Some(layer) && !rule.archived())
        .filter_map(|rule| {
            let approved = rule.approved()?;
            let id = rule.id()?;
            let enforcement = if layer == Layer::Organization {
                rule.organization_enforcement()?
            } else {
                team.attachment(id)?.enforcement()
            };
            Some((
                id,
                approved.number(),
                enforcement.mode(),
                enforcement.temporary_timeout_secs(),
            ))
        })
        .collect()
}

fn check_against_aggregates(world: &World, h: &Harness) -> Result<(), TestCaseError> {
    for rule in world.rules.iter().filter(|r| r.exists()) {
        let id = rule.id().unwrap();
        let doc: RuleDoc = h.doc(RULE_KIND, id).unwrap();
        prop_assert_eq!(Some(doc.status), rule.status());
        prop_assert_eq!(doc.version, rule.version());
        prop_assert_eq!(doc.approved_revision, rule.approved().map(|a| a.number()));
        prop_assert_eq!(doc.working_revision, rule.working().map(|w| w.number()));
        prop_assert_eq!(
            doc.organization_enforcement,
            rule.organization_enforcement()
        );
        let current = rule
            .working()
            .map(|w| w.spec())
            .or(rule.approved().map(|a| a.spec()))
            .unwrap();
        prop_assert_eq!(&doc.content, current.content.as_str());
    }
    for team in world.teams.iter().filter(|t| t.exists()) {
        let id = team.id().unwrap();
        let doc: RuleSetDoc = h.doc(RULESET_KIND, id).unwrap();
        prop_assert_eq!(doc.archived, team.archived());
        prop_assert_eq!(&doc.team_name, team.name().unwrap().as_str());
        prop_assert_eq!(&doc.hash, &doc.layers.hash());
        for layer in Layer::ALL {
            let got: Received = doc
                .layers
                .layer(crate::ruleset::layer_of(*layer))
                .rules
                .iter()
                .map(|r| {
                    (
                        RuleId(r.rule_id),
                        r.revision,
                        crate::ruleset::enforcement_mode(r.mode),
                        r.temporary_timeout_secs,
                    )
                })
                .collect();
            prop_assert_eq!(
                got,
                expected_layer(world, team, *layer),
                "team {} layer {}",
                id,
                layer
            );
        }
        let team_doc: TeamDoc = h.doc(TEAM_KIND, id).unwrap();
        prop_assert_eq!(&team_doc.members, team.members());
        prop_assert_eq!(team_doc.version, team.version());
    }
    for user in world.users.iter().filter(|u| u.exists()) {
        let id = user.id().unwrap();
        let doc: UserDoc = h.doc(USER_KIND, id).unwrap();
        prop_assert_eq!(doc.version, user.version());
        let teams: BTreeMap<TeamId, TeamRole> = world
            .teams
            .iter()
            .filter_map(|t| Some((t.id()?, t.role_of(id)?)))
            .collect();
        prop_assert_eq!(doc.teams, teams);
    }
    for change in world.changes.iter().filter(|c| c.exists()) {
        let id = change.id().unwrap();
        let doc: crate::change_inbox::ChangeRequestDoc =
            h.doc(crate::change_inbox::CHANGE_REQUEST_KIND, id).unwrap();
        prop_assert_eq!(Some(doc.status), change.status());
        prop_assert_eq!(doc.version, change.version());
        prop_assert_eq!(doc.decision.as_ref(), change.decision());
        prop_assert_eq!(doc.exceptions.as_slice(), change.exceptions());
    }
    for agent in world.agents.iter().filter(|a| a.exists()) {
        let id = agent.id().unwrap();
        let doc: crate::agent_fleet::AgentDoc = h.doc(crate::agent_fleet::AGENT_KIND, id).unwrap();
        prop_assert_eq!(doc.revoked, agent.revoked());
        prop_assert_eq!(doc.version, agent.version());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn batched_application_equals_one_pass_and_matches_the_aggregates(
        ops in prop::collection::vec(op(), 0..200),
        sizes in prop::collection::vec(1usize..12, 1..8),
    ) {
        runtime().block_on(async {
            let world = World::build(ops).await;
            let mut live = Harness::new();
            for projection in crate::all() {
                let rebuilt = replay(projection.as_ref(), &world.events).await.unwrap();
                let rebuilt_hash = content_hash(rebuilt.iter().map(|(k, d)| (k, d)));
                let mut batched = Harness::new();
                for batch in batches(&world.events, &sizes) {
                    batched.batch(projection.as_ref(), batch).await;
                    live.batch(projection.as_ref(), batch).await;
                }
                let batched_docs: Vec<_> = batched.store.0.clone().into_iter().collect();
                prop_assert_eq!(&batched_docs, &rebuilt, "{}", projection.name());
                prop_assert_eq!(content_hash(batched.store.0.iter()), rebuilt_hash);
            }
            check_against_aggregates(&world, &live)
        })?;
    }

    #[test]
    fn a_rule_set_revision_moves_by_one_exactly_when_its_hash_changes(
        ops in prop::collection::vec(op(), 0..200),
    ) {
        runtime().block_on(async {
            let world = World::build(ops).await;
            let mut loader = EmptyLoader;
            let mut docs = Docs::new(&mut loader);
            let mut seen: BTreeMap<String, RuleSetDoc> = BTreeMap::new();
            let projection = crate::team_rulesets::TeamRulesets;
            for event in &world.events {
                crate::Projection::apply(&projection, event, &mut docs).await.unwrap();
                for ((kind, key), stored) in docs.take_dirty().unwrap() {
                    if kind != RULESET_KIND {
                        continue;
                    }
                    let doc: RuleSetDoc = serde_json::from_value(stored.unwrap().doc).unwrap();
                    match seen.get(&key) {
                        None => prop_assert_eq!(doc.revision, 1),
                        Some(before) if before.hash != doc.hash => {
                            prop_assert_eq!(doc.revision, before.revision + 1);
                            prop_assert_eq!(doc.position, event.global_position);
                        }
                        Some(before) => {
                            prop_assert_eq!(doc.revision, before.revision);
                            prop_assert_ne!(before, &doc, "a rule set is written only when it changed");
                        }
                    }
                    seen.insert(key, doc);
                }
            }
            Ok(())
        })?;
    }
}
