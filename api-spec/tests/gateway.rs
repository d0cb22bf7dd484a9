//! The agent gateway end to end: real WebSocket clients (tokio-tungstenite) against a [`Gateway`] over a
//! real Edict on a real store, PostgreSQL (its own fresh database per test) and SQLite (its own
//! temporary directory per test). Rule sets come from the projection runners through the in-process
//! [`WatchPublisher`] (the embedded mode's feed).
//!
//! Each case is an async function taking a [`Fixture`]; `both!` turns it into `postgres::<case>` and
//! `sqlite::<case>`. The fixture holds: an org_admin (and a second one to approve rules), a developer
//! member of team A (not of team B), a temporary-mode rule attached to A, a block-mode rule attached to
//! B, and an agent enrolled for the developer; the projections are caught up.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_es::persist::PersistedEventStore;
use edict_api::gateway::{Gateway, GatewaySettings};
use edict_api::protocol::{
    AgentMessage, DecisionAction, GatewayMessage, Holding, PROTOCOL_HEADER, PROTOCOL_VERSION,
    Report, ReportKind,
};
use edict_application::clock::SystemClock;
use edict_application::command::CommandService;
use edict_application::principal::Principal;
use edict_application::read_models::{
    ProjectionControl, ReadModelError, ReadModels, RebuildSummary,
};
use edict_application::service::Ports;
use edict_application::users::NewUser;
use edict_application::{Edict, NoHook, RequestContext};
use edict_domain::agent::{MachineId, MachineName};
use edict_domain::change_request::ReportId;
use edict_domain::rule::{ApprovalQuorum, Description, RuleContent, RuleName, RuleSpec};
use edict_domain::team::{TeamName, TeamRole};
use edict_domain::user::{Email, GlobalRole, PersonName};
use edict_domain::{AgentId, ChangeRequestId, Enforcement, EnforcementMode, Layer};
use edict_domain::{RuleId, TeamId, UserId};
use edict_infrastructure::auth::{AuthStore, LocalAuthenticator, TokenKeys};
use edict_infrastructure::idempotency::IdempotencyStore;
use edict_infrastructure::projection::{
    ProjectionRunner, SqlReadModels, WatchFeed, WatchPublisher,
};
use edict_infrastructure::store::{ConvergenceStore, Database};
use edict_projections::RulesetPublisher;
use edict_test_kit::store::{Backend, ScratchStore};
use edict_test_kit::{eventually, on_both_backends, run_isolated};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ---------------------------------------------------------------------------------------------------
// The composition.

/// Rebuilding is not exercised here.
struct NoRebuild;

#[async_trait]
impl ProjectionControl for NoRebuild {
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    async fn rebuild(&self, name: &str) -> Result<RebuildSummary, ReadModelError> {
        Err(ReadModelError::UnknownProjection(name.to_owned()))
    }
    async fn content_hash(&self, name: &str) -> Result<String, ReadModelError> {
        Err(ReadModelError::UnknownProjection(name.to_owned()))
    }
}

fn edict_over(db: &Database) -> Edict {
    fn store<A: cqrs_es::Aggregate>(
        db: &Database,
    ) -> PersistedEventStore<edict_infrastructure::store::EventRepository, A> {
        PersistedEventStore::new_event_store(db.event_repository())
    }
    let auth = LocalAuthenticator::new(
        AuthStore::new(db.clone()),
        TokenKeys::from_secret(b"gateway-test-secret-gateway-test-secret"),
        900,
        86_400,
    );
    Edict::new(Ports {
        rules: Arc::new(CommandService::new(store(db), ())),
        teams: Arc::new(CommandService::new(store(db), ())),
        change_requests: Arc::new(CommandService::new(store(db), ())),
        users: Arc::new(CommandService::new(store(db), ())),
        agents: Arc::new(CommandService::new(store(db), ())),
        auth: Arc::new(auth),
        idempotency: Arc::new(IdempotencyStore::new(db.clone())),
        log: Arc::new(db.clone()),
        clock: Arc::new(SystemClock),
        quorum: ApprovalQuorum::parse(1, 1, 1).unwrap(),
        read_models: Arc::new(SqlReadModels::new(db.clone())),
        projections: Arc::new(NoRebuild),
        on_commit: Arc::new(NoHook),
        convergence: Arc::new(edict_infrastructure::store::ConvergenceStore::new(
            db.clone(),
        )),
    })
}

#[derive(Clone)]
struct Fixture {
    db: Database,
    store: ScratchStore,
    edict: Arc<Edict>,
    runners: Arc<Vec<ProjectionRunner>>,
    convergence: ConvergenceStore,
    addr: SocketAddr,
    admin: Principal,
    admin2: Principal,
    dev: UserId,
    team_a: TeamId,
    team_b: TeamId,
    rule_a: RuleId,
    rule_b: RuleId,
    agent: AgentId,
    token: String,
}

fn org_admin() -> Principal {
    Principal::User {
        id: UserId::new(),
        roles: BTreeSet::from([GlobalRole::OrgAdmin]),
        session: "test-session".into(),
    }
}

fn ctx() -> RequestContext {
    RequestContext {
        request_id: uuid::Uuid::new_v4().to_string(),
        ..RequestContext::default()
    }
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let store = ScratchStore::new(backend, "gateway").await;
        let db = store.db.clone();
        let watch = WatchPublisher::new();
        let publisher: Arc<dyn RulesetPublisher> = Arc::new(watch.clone());
        // Decisions reach agents signed (ADR 0022): the change inbox's runner signs them with a key
        // of the store's key ring, and the gateway reads them from there.
        let (ring, _) = edict_infrastructure::signing::KeyRing::holding(db.clone(), None, None)
            .await
            .unwrap();
        let ring = Arc::new(ring);
        let runners: Vec<ProjectionRunner> = edict_projections::all()
            .into_iter()
            .map(|p| {
                ProjectionRunner::new(db.clone(), p, Some(publisher.clone()))
                    .with_decision_signer(ring.clone())
            })
            .collect();
        for runner in &runners {
            runner.ensure().await.unwrap();
        }
        let edict = Arc::new(edict_over(&db).with_org_keys(ring));
        let admin = org_admin();
        let admin2 = org_admin();
        let dev: UserId = edict
            .create_user(
                &admin,
                NewUser {
                    email: Email::parse("dev@example.com").unwrap(),
                    name: PersonName::parse("Dev").unwrap(),
                    password: "correct horse battery staple".into(),
                    roles: BTreeSet::from([GlobalRole::Member]),
                },
                &ctx(),
            )
            .await
            .unwrap()
            .id
            .parse()
            .unwrap();
        let team_a: TeamId = edict
            .create_team(&admin, TeamName::parse("alpha").unwrap(), &ctx())
            .await
            .unwrap()
            .id
            .parse()
            .unwrap();
        let team_b: TeamId = edict
            .create_team(&admin, TeamName::parse("bravo").unwrap(), &ctx())
            .await
            .unwrap()
            .id
            .parse()
            .unwrap();
        edict
            .add_member(&admin, team_a, dev, TeamRole::Member, &ctx())
            .await
            .unwrap();
        let mut fixture = Fixture {
            db: db.clone(),
            store,
            edict: edict.clone(),
            runners: Arc::new(runners),
            convergence: ConvergenceStore::new(db.clone()),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: admin.clone(),
            admin2,
            dev,
            team_a,
            team_b,
            rule_a: RuleId::new(),
            rule_b: RuleId::new(),
            agent: AgentId::new(),
            token: String::new(),
        };
        fixture.rule_a = fixture
            .attach("alpha-tabs", team_a, EnforcementMode::Temporary)
            .await;
        fixture.rule_b = fixture
            .attach("bravo-secret", team_b, EnforcementMode::Block)
            .await;
        let enrollment = edict
            .enroll_agent(
                &admin,
                Some(dev),
                MachineId::parse("machine-1").unwrap(),
                MachineName::parse("dev-laptop").unwrap(),
                &ctx(),
            )
            .await
            .unwrap();
        fixture.agent = enrollment.outcome.id.parse().unwrap();
        fixture.token = enrollment.token.token;
        fixture.catch_up().await;
        let settings = GatewaySettings {
            // Long enough that pushes in these tests come from the feed, not the refresh.
            refresh_interval: Duration::from_secs(60),
            decision_interval: Duration::from_millis(200),
            ..GatewaySettings::default()
        };
        let (gateway, addr) = Gateway::bind(
            fixture.addr,
            edict,
            Arc::new(WatchFeed(watch)),
            Arc::new(fixture.convergence.clone()),
            settings,
        )
        .await
        .unwrap();
        fixture.addr = addr;
        tokio::spawn(gateway.run(std::future::pending()));
        fixture
    }

    /// Drafts, approves and attaches a team-layer rule named `name` to `team` with `mode`.
    async fn attach(&self, name: &str, team: TeamId, mode: EnforcementMode) -> RuleId {
        let spec = RuleSpec {
            name: RuleName::parse(name).unwrap(),
            description: Description::parse("a rule").unwrap(),
            layer: Layer::Team,
            content: RuleContent::parse(&format!("Content of {name}.")).unwrap(),
            category: None,
            priority: 0,
            tags: BTreeSet::new(),
            triggers: Vec::new(),
        };
        let rule: RuleId = self
            .edict
            .draft_rule(&self.admin, spec, &ctx())
            .await
            .unwrap()
            .id
            .parse()
            .unwrap();
        self.edict
            .submit_rule(&self.admin, rule, &ctx())
            .await
            .unwrap();
        self.edict
            .approve_rule(&self.admin2, rule, &ctx())
            .await
            .unwrap();
        let timeout = (mode == EnforcementMode::Temporary).then_some(3600);
        self.edict
            .attach_rule(
                &self.admin,
                team,
                rule,
                Enforcement::parse(mode, timeout).unwrap(),
                &ctx(),
            )
            .await
            .unwrap();
        rule
    }

    /// Catches every projection up to the last event committed so far. On PostgreSQL a catch-up may
    /// stop short while transactions of other tests are open (the log's read horizon is cluster-wide),
    /// so it repeats until each projection covers the head.
    async fn catch_up(&self) {
        let head: i64 = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
            Database::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM events")
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
        };
        let read_models = SqlReadModels::new(self.db.clone());
        for runner in self.runners.iter() {
            let covered = eventually(WAIT, || async {
                runner.catch_up().await.unwrap();
                read_models
                    .covers(runner.name(), head)
                    .await
                    .unwrap()
                    .then_some(())
            })
            .await;
            assert!(covered.is_some(), "{} did not catch up", runner.name());
        }
    }

    async fn teardown(self) {
        self.store.teardown().await;
    }

    /// Opens `/ws` with `token` and `protocol`; the HTTP status when the upgrade is refused.
    async fn open(&self, token: Option<&str>, protocol: &str) -> Result<Ws, u16> {
        let mut request = format!("ws://{}/ws", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(token) = token {
            request.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        request
            .headers_mut()
            .insert(PROTOCOL_HEADER, HeaderValue::from_str(protocol).unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(ws),
            Err(WsError::Http(response)) => Err(response.status().as_u16()),
            Err(other) => panic!("unexpected connect error: {other}"),
        }
    }

    /// Connects as the agent and says hello with `holdings`.
    async fn hello(&self, holdings: Vec<Holding>) -> Ws {
        let mut ws = self
            .open(Some(&self.token), &PROTOCOL_VERSION.to_string())
            .await
            .expect("the agent is admitted");
        send(
            &mut ws,
            &AgentMessage::Hello {
                protocol: PROTOCOL_VERSION,
                agent_version: "test".into(),
                holdings,
                // The key set the fixture's ring starts with: no `keys` message to skip.
                key_sequence: 1,
            },
        )
        .await;
        ws
    }

    async fn ruleset_of(&self, team: TeamId) -> (u64, String) {
        let doc = self
            .edict
            .latest_ruleset(&team.to_string())
            .await
            .unwrap()
            .expect("the team has a rule set");
        (
            doc["revision"].as_u64().unwrap(),
            doc["hash"].as_str().unwrap().to_owned(),
        )
    }
}

async fn send(ws: &mut Ws, message: &AgentMessage) {
    ws.send(Message::Text(
        serde_json::to_string(message).unwrap().into(),
    ))
    .await
    .unwrap();
}

/// The next protocol message within `timeout` (pings skipped); `None` on timeout or close.
async fn next_within(ws: &mut Ws, timeout: Duration) -> Option<GatewayMessage> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return Some(serde_json::from_str(&text).expect("a protocol message"));
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            _ => return None,
        }
    }
}

async fn next(ws: &mut Ws) -> GatewayMessage {
    next_within(ws, WAIT).await.expect("a message in time")
}

fn report(fixture: &Fixture, id: &str, kind: ReportKind) -> Report {
    Report {
        report_id: id.into(),
        kind,
        team: fixture.team_a.to_string(),
        rule: fixture.rule_a.to_string(),
        file: "/home/dev/.claude/CLAUDE.md".into(),
        layer: "team".into(),
        original_hash: "a".repeat(64),
        new_hash: "b".repeat(64),
        diff: "-Content\n+Changed".into(),
        change_request: None,
    }
}

// ---------------------------------------------------------------------------------------------------
// The cases.

/// Unknown, missing, user and revoked tokens get 401 before the upgrade; a wrong protocol version 426.
async fn unknown_tokens_get_401_and_other_protocols_426(fixture: Fixture) {
    assert_eq!(
        fixture.open(Some("eda_unknown"), "1").await.err(),
        Some(401)
    );
    assert_eq!(fixture.open(None, "1").await.err(), Some(401));
    // A user's access token is not an agent token.
    let user = fixture
        .edict
        .login("dev@example.com", "correct horse battery staple")
        .await
        .unwrap();
    assert_eq!(
        fixture.open(Some(&user.access_token), "1").await.err(),
        Some(401)
    );
    assert_eq!(
        fixture.open(Some(&fixture.token), "2").await.err(),
        Some(426)
    );
    // A revoked agent's token: 401.
    fixture
        .edict
        .revoke_agent(&fixture.admin, fixture.agent, None, &ctx())
        .await
        .unwrap();
    assert_eq!(
        fixture.open(Some(&fixture.token), "1").await.err(),
        Some(401)
    );
}

/// An empty hello gets welcome and the rule set of each team; a hello holding the latest gets current.
async fn hello_gets_welcome_then_rule_sets_or_current(fixture: Fixture) {
    let team_a = fixture.team_a.to_string();
    let mut ws = fixture.hello(vec![]).await;
    assert_eq!(
        next(&mut ws).await,
        GatewayMessage::Welcome {
            protocol: PROTOCOL_VERSION,
            agent_id: fixture.agent.to_string(),
            teams: vec![team_a.clone()],
        }
    );
    let (revision, hash) = fixture.ruleset_of(fixture.team_a).await;
    match next(&mut ws).await {
        GatewayMessage::RuleSet {
            team,
            revision: r,
            hash: h,
            ruleset,
        } => {
            assert_eq!(
                (team.as_str(), r, h.as_str()),
                (team_a.as_str(), revision, hash.as_str())
            );
            assert!(
                serde_json::to_string(&ruleset)
                    .unwrap()
                    .contains(&fixture.rule_a.to_string())
            );
        }
        other => panic!("expected a rule set, got {other:?}"),
    }
    drop(ws);

    let holding = Holding {
        team: team_a.clone(),
        revision,
        hash: hash.clone(),
    };
    let mut ws = fixture.hello(vec![holding.clone()]).await;
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::Welcome { .. }
    ));
    assert_eq!(next(&mut ws).await, GatewayMessage::Current(holding));
}

/// A new revision of the agent's team is pushed to the connected agent.
async fn a_new_revision_is_pushed(fixture: Fixture) {
    let mut ws = fixture.hello(vec![]).await;
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::Welcome { .. }
    ));
    let first = match next(&mut ws).await {
        GatewayMessage::RuleSet { revision, .. } => revision,
        other => panic!("expected a rule set, got {other:?}"),
    };
    let rule = fixture
        .attach("alpha-more", fixture.team_a, EnforcementMode::Warning)
        .await;
    fixture.catch_up().await;
    match next(&mut ws).await {
        GatewayMessage::RuleSet {
            team,
            revision,
            ruleset,
            ..
        } => {
            assert_eq!(team, fixture.team_a.to_string());
            assert_eq!(revision, first + 1);
            assert!(
                serde_json::to_string(&ruleset)
                    .unwrap()
                    .contains(&rule.to_string())
            );
        }
        other => panic!("expected the new revision, got {other:?}"),
    }
}

/// Joining and leaving a team reach a connected agent within seconds, though the periodic refresh here
/// is a minute away: the gateway reads membership changes from the log. Meanwhile, in two teams, the
/// agent gets the new revisions of both.
async fn membership_changes_reach_the_agent_at_once(fixture: Fixture) {
    let team_b = fixture.team_b.to_string();
    let mut ws = fixture.hello(vec![]).await;
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::Welcome { .. }
    ));
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::RuleSet { .. }
    ));
    fixture
        .edict
        .add_member(
            &fixture.admin,
            fixture.team_b,
            fixture.dev,
            TeamRole::Member,
            &ctx(),
        )
        .await
        .unwrap();
    fixture.catch_up().await;
    let joined = match next_within(&mut ws, Duration::from_secs(10)).await {
        Some(GatewayMessage::RuleSet { team, revision, .. }) => {
            assert_eq!(team, team_b);
            revision
        }
        other => panic!("expected team B's rule set after joining it, got {other:?}"),
    };
    // In two teams now: a new revision of either is pushed.
    for (name, team) in [
        ("bravo-later", fixture.team_b),
        ("alpha-later", fixture.team_a),
    ] {
        fixture.attach(name, team, EnforcementMode::Warning).await;
        fixture.catch_up().await;
        match next_within(&mut ws, Duration::from_secs(10)).await {
            Some(GatewayMessage::RuleSet {
                team: pushed,
                revision,
                ..
            }) => {
                assert_eq!(pushed, team.to_string());
                if team == fixture.team_b {
                    assert_eq!(revision, joined + 1);
                }
            }
            other => panic!("expected the new revision of {name}'s team, got {other:?}"),
        }
    }
    fixture
        .edict
        .remove_member(&fixture.admin, fixture.team_b, fixture.dev, &ctx())
        .await
        .unwrap();
    fixture.catch_up().await;
    match next_within(&mut ws, Duration::from_secs(10)).await {
        Some(GatewayMessage::Removed {
            team, signature, ..
        }) => {
            assert_eq!(team, team_b);
            assert!(signature.is_some(), "a removal is signed (ADR 0024)");
        }
        other => panic!("expected team B removed after leaving it, got {other:?}"),
    }
}

/// An agent of team A never gets team B's rules, even when its hello names team B.
async fn an_agent_never_gets_another_teams_rules(fixture: Fixture) {
    let team_b = fixture.team_b.to_string();
    let (revision_b, hash_b) = fixture.ruleset_of(fixture.team_b).await;
    let mut ws = fixture
        .hello(vec![Holding {
            team: team_b.clone(),
            revision: revision_b.saturating_sub(1),
            hash: "stale".into(),
        }])
        .await;
    let mut received = Vec::new();
    match next(&mut ws).await {
        GatewayMessage::Welcome { teams, .. } => {
            assert_eq!(teams, vec![fixture.team_a.to_string()]);
        }
        other => panic!("expected welcome, got {other:?}"),
    }
    received.push(next(&mut ws).await);
    // No removal of team B either: its user never left it, so the organization signed none (ADR
    // 0024), and a gateway sends no unsigned one.
    // A new revision of team B is not pushed.
    fixture
        .attach("bravo-more", fixture.team_b, EnforcementMode::Warning)
        .await;
    fixture.catch_up().await;
    assert_ne!(fixture.ruleset_of(fixture.team_b).await.1, hash_b);
    // Then a new revision of team A, which must be pushed: the gateway fans revisions out in the
    // order they were published, so a leak of team B's would arrive before it.
    fixture
        .attach("alpha-after", fixture.team_a, EnforcementMode::Warning)
        .await;
    fixture.catch_up().await;
    let team_a = fixture.team_a.to_string();
    loop {
        let message = next_within(&mut ws, WAIT)
            .await
            .expect("team A's new revision is pushed after team B's change");
        let done = matches!(&message, GatewayMessage::RuleSet { team, .. } if *team == team_a);
        received.push(message);
        if done {
            break;
        }
    }
    for message in &received {
        assert!(
            !matches!(message, GatewayMessage::Removed { .. }),
            "an unsigned removal was sent: {message:?}"
        );
        let text = serde_json::to_string(message).unwrap();
        assert!(
            !text.contains(&fixture.rule_b.to_string()),
            "team B's rule leaked: {text}"
        );
        assert!(
            !matches!(message, GatewayMessage::RuleSet { team, .. } | GatewayMessage::Current(Holding { team, .. }) if *team == team_b),
            "team B's rule set leaked: {text}"
        );
    }
}

/// `applied` records convergence; a temporary change opens one change request however often it is
/// reported; a reverted block is recorded once as an agent event.
async fn applied_and_reports_are_recorded_once(fixture: Fixture) {
    let mut ws = fixture.hello(vec![]).await;
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::Welcome { .. }
    ));
    let (revision, hash) = match next(&mut ws).await {
        GatewayMessage::RuleSet { revision, hash, .. } => (revision, hash),
        other => panic!("expected a rule set, got {other:?}"),
    };
    send(
        &mut ws,
        &AgentMessage::Applied(Holding {
            team: fixture.team_a.to_string(),
            revision,
            hash: hash.clone(),
        }),
    )
    .await;
    let team_a = fixture.team_a.to_string();
    let rows = eventually(WAIT, || async {
        let rows = fixture.convergence.convergence(&team_a).await.unwrap();
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .expect("a convergence row");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].agent_id, fixture.agent.to_string());
    assert_eq!(
        (rows[0].revision, rows[0].hash.as_str()),
        (revision, hash.as_str())
    );
    let enforced = fixture
        .convergence
        .agent_enforced(&fixture.agent.to_string())
        .await
        .unwrap();
    assert_eq!(enforced, rows);

    // A temporary change, twice: one change request.
    let temporary = report(&fixture, "report-temp-1", ReportKind::TemporaryChanged);
    let mut acks = Vec::new();
    for _ in 0..2 {
        send(&mut ws, &AgentMessage::Report(temporary.clone())).await;
        match next(&mut ws).await {
            GatewayMessage::ReportAck {
                report_id,
                change_request,
            } => {
                assert_eq!(report_id, "report-temp-1");
                acks.push(change_request.expect("the change request"));
            }
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    assert_eq!(acks[0], acks[1]);
    let id: ChangeRequestId = acks[0].parse().unwrap();
    let change = fixture
        .edict
        .change_request(&fixture.admin, id)
        .await
        .unwrap();
    assert_eq!(edict_domain::Versioned::version(&change), 1, "opened once");

    // A reverted block, twice: one agent event.
    let block = Report {
        report_id: "report-block-1".into(),
        kind: ReportKind::BlockReverted,
        ..report(&fixture, "", ReportKind::BlockReverted)
    };
    for _ in 0..2 {
        send(&mut ws, &AgentMessage::Report(block.clone())).await;
        assert_eq!(
            next(&mut ws).await,
            GatewayMessage::ReportAck {
                report_id: "report-block-1".into(),
                change_request: None,
            }
        );
    }
    let agent = fixture
        .edict
        .agent(&fixture.admin, fixture.agent)
        .await
        .unwrap();
    assert!(agent.has_recorded(&ReportId::parse("report-block-1").unwrap()));
    assert_eq!(
        edict_domain::Versioned::version(&agent),
        2,
        "enrolled, then one report"
    );
    // The projections take the new event.
    fixture.catch_up().await;
}

/// Approving the change request an agent's report opened reaches the agent as `keep`; rejecting
/// another as `revert`.
async fn decisions_reach_the_agent(fixture: Fixture) {
    let mut ws = fixture.hello(vec![]).await;
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::Welcome { .. }
    ));
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::RuleSet { .. }
    ));
    let mut opened = Vec::new();
    for id in ["report-keep", "report-revert"] {
        send(
            &mut ws,
            &AgentMessage::Report(report(&fixture, id, ReportKind::TemporaryChanged)),
        )
        .await;
        match next(&mut ws).await {
            GatewayMessage::ReportAck {
                change_request: Some(id),
                ..
            } => opened.push(id.parse::<ChangeRequestId>().unwrap()),
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    fixture
        .edict
        .approve_change(&fixture.admin, opened[0], &ctx())
        .await
        .unwrap();
    fixture
        .edict
        .reject_change(
            &fixture.admin,
            opened[1],
            edict_domain::Reason::parse("not this time").unwrap(),
            &ctx(),
        )
        .await
        .unwrap();
    fixture.catch_up().await;
    let mut decisions = Vec::new();
    while decisions.len() < 2 {
        match next(&mut ws).await {
            GatewayMessage::Decision {
                change_request,
                file,
                action,
                until,
                ..
            } => {
                assert_eq!(file, "/home/dev/.claude/CLAUDE.md");
                assert_eq!(until, None);
                decisions.push((change_request, action));
            }
            other => panic!("expected a decision, got {other:?}"),
        }
    }
    decisions.sort_by_key(|(id, _)| opened.iter().position(|o| o.to_string() == *id));
    assert_eq!(
        decisions,
        vec![
            (opened[0].to_string(), DecisionAction::Keep),
            (opened[1].to_string(), DecisionAction::Revert),
        ]
    );
    // Nothing is sent twice.
    assert_eq!(next_within(&mut ws, Duration::from_millis(800)).await, None);
}

/// Waits for the server to close `ws`; answers how long it took from `started` and the last message.
async fn closed_after(ws: &mut Ws, started: Instant) -> (Duration, Option<GatewayMessage>) {
    let mut last = None;
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                last = Some(serde_json::from_str::<GatewayMessage>(&text).unwrap());
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(_) => break,
            Err(_) => panic!("the connection stayed open"),
        }
    }
    (started.elapsed(), last)
}

/// Revoking the agent closes its live connection within about a second (through the gateway's log
/// watch: the per-connection re-check runs only every 30 s here).
async fn revoking_the_agent_closes_its_connection(fixture: Fixture) {
    let mut ws = fixture.hello(vec![]).await;
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::Welcome { .. }
    ));
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::RuleSet { .. }
    ));
    let started = Instant::now();
    fixture
        .edict
        .revoke_agent(&fixture.admin, fixture.agent, None, &ctx())
        .await
        .unwrap();
    let (elapsed, last) = closed_after(&mut ws, started).await;
    assert!(
        elapsed < Duration::from_millis(1200),
        "closed after {elapsed:?}"
    );
    assert!(matches!(last, Some(GatewayMessage::Error { code, .. }) if code == "revoked"));
}

/// Deactivating the agent's user closes its connection too.
async fn deactivating_the_user_closes_its_agents_connection(fixture: Fixture) {
    let mut ws = fixture.hello(vec![]).await;
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::Welcome { .. }
    ));
    let started = Instant::now();
    fixture
        .edict
        .deactivate_user(&fixture.admin, fixture.dev, &ctx())
        .await
        .unwrap();
    let (elapsed, last) = closed_after(&mut ws, started).await;
    assert!(
        elapsed < Duration::from_millis(1200),
        "closed after {elapsed:?}"
    );
    assert!(matches!(last, Some(GatewayMessage::Error { code, .. }) if code == "revoked"));
}

// ---------------------------------------------------------------------------------------------------
// Running each case on both stores.

async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fixture = Fixture::new(backend).await;
    run_isolated(case(fixture.clone()), fixture.teardown()).await;
}

on_both_backends!(
    unknown_tokens_get_401_and_other_protocols_426,
    hello_gets_welcome_then_rule_sets_or_current,
    a_new_revision_is_pushed,
    an_agent_never_gets_another_teams_rules,
    membership_changes_reach_the_agent_at_once,
    applied_and_reports_are_recorded_once,
    revoking_the_agent_closes_its_connection,
    deactivating_the_user_closes_its_agents_connection,
    decisions_reach_the_agent,
    a_hello_holding_a_newer_revision_gets_current,
    a_removed_team_sends_nothing_after_removed,
);

// ---------------------------------------------------------------------------------------------------
// A measurement, not a check: `cargo test -p edict-api --release --test gateway
// -- --ignored --nocapture idle_connection_memory`.

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Opens idle agent connections (hello answered, then nothing) and reports the process's resident
/// memory per connection. Client and server live in this process, both with 4 KiB read buffers, so
/// the figure is an upper bound for the gateway side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run explicitly"]
async fn idle_connection_memory() {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    const CONNECTIONS: usize = 2_000;
    let fixture = Fixture::new(Backend::Sqlite).await;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20);
    let open = || async {
        let mut request = format!("ws://{}/ws", fixture.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {}", fixture.token)).unwrap(),
        );
        request
            .headers_mut()
            .insert(PROTOCOL_HEADER, HeaderValue::from_static("1"));
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), false)
                .await
                .unwrap();
        send(
            &mut ws,
            &AgentMessage::Hello {
                protocol: PROTOCOL_VERSION,
                agent_version: "test".into(),
                holdings: vec![],
                // The key set the fixture's ring starts with: no `keys` message to skip.
                key_sequence: 1,
            },
        )
        .await;
        assert!(matches!(
            next(&mut ws).await,
            GatewayMessage::Welcome { .. }
        ));
        assert!(matches!(
            next(&mut ws).await,
            GatewayMessage::RuleSet { .. }
        ));
        ws
    };
    // Warm up the allocator, the pools and the payload cache.
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(open().await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    for _ in 0..CONNECTIONS {
        held.push(open().await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();
    eprintln!(
        "{CONNECTIONS} idle connections: RSS {before} KiB -> {after} KiB, {:.1} KiB per connection (both ends)",
        (after.saturating_sub(before)) as f64 / CONNECTIONS as f64
    );
    drop(held);
    fixture.teardown().await;
}

// ---------------------------------------------------------------------------------------------------
// Issue 14: never a downgrade (the gateway's part), and leaving a team.

/// An agent holding a newer revision of its team than the gateway has (another gateway or a replica
/// published it first) gets `current`, never the gateway's older rule set.
async fn a_hello_holding_a_newer_revision_gets_current(fixture: Fixture) {
    let team_a = fixture.team_a.to_string();
    let (revision, _) = fixture.ruleset_of(fixture.team_a).await;
    let newer = Holding {
        team: team_a.clone(),
        revision: revision + 5,
        hash: "a-newer-hash".into(),
    };
    let mut ws = fixture.hello(vec![newer.clone()]).await;
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::Welcome { .. }
    ));
    assert_eq!(next(&mut ws).await, GatewayMessage::Current(newer));
}

/// A member removed from a team while revisions of that team are being pushed gets `removed`, and no
/// rule set of the team after it: a revision the fan-out offers after the connection left the team is
/// refused. Observed up to a later push of the agent's other team (so a dead connection cannot pass).
async fn a_removed_team_sends_nothing_after_removed(fixture: Fixture) {
    let team_b = fixture.team_b.to_string();
    fixture
        .edict
        .add_member(
            &fixture.admin,
            fixture.team_b,
            fixture.dev,
            TeamRole::Member,
            &ctx(),
        )
        .await
        .unwrap();
    fixture.catch_up().await;
    let mut ws = fixture.hello(vec![]).await;
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::Welcome { .. }
    ));
    // Team B's revisions, projected as fast as they come, while the developer leaves team B.
    let pushing = {
        let fixture = fixture.clone();
        tokio::spawn(async move {
            for i in 0..6 {
                fixture
                    .attach(
                        &format!("bravo-push-{i}"),
                        fixture.team_b,
                        EnforcementMode::Warning,
                    )
                    .await;
                for runner in fixture.runners.iter() {
                    runner.catch_up().await.unwrap();
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    fixture
        .edict
        .remove_member(&fixture.admin, fixture.team_b, fixture.dev, &ctx())
        .await
        .unwrap();
    // Until `removed` (team B's pushes before it are expected); the removal reaches the gateway once
    // the directory read model shows it, so the projections are caught up meanwhile.
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no removed within {WAIT:?}");
        match next_within(&mut ws, Duration::from_millis(300)).await {
            Some(GatewayMessage::Removed { team, .. }) if team == team_b => break,
            Some(_) => {}
            None => fixture.catch_up().await,
        }
    }
    pushing.await.unwrap();
    fixture.catch_up().await;
    // The marker: a new revision of team A, after every revision of team B.
    let marker = fixture
        .attach("alpha-marker", fixture.team_a, EnforcementMode::Warning)
        .await;
    fixture.catch_up().await;
    loop {
        let message = next(&mut ws).await;
        match &message {
            GatewayMessage::RuleSet { team, .. }
            | GatewayMessage::Current(Holding { team, .. })
                if *team == team_b =>
            {
                panic!("team B's rule set after removed: {message:?}");
            }
            GatewayMessage::RuleSet { team, ruleset, .. }
                if *team == fixture.team_a.to_string()
                    && ruleset
                        .layers
                        .team
                        .rules
                        .iter()
                        .any(|rule| rule.rule_id.to_string() == marker.to_string()) =>
            {
                break;
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// `refused`: the agent holds a newer revision than the one it was sent.

/// A `refused` is logged by the gateway, not a protocol error: the connection goes on (a report sent
/// after it is acknowledged, which a closed connection would not do).
async fn a_refused_rule_set_keeps_the_connection(fixture: Fixture) {
    let mut ws = fixture.hello(vec![]).await;
    assert!(matches!(
        next(&mut ws).await,
        GatewayMessage::Welcome { .. }
    ));
    let (revision, hash) = match next(&mut ws).await {
        GatewayMessage::RuleSet { revision, hash, .. } => (revision, hash),
        other => panic!("expected a rule set, got {other:?}"),
    };
    send(
        &mut ws,
        &AgentMessage::Refused {
            team: fixture.team_a.to_string(),
            revision,
            hash,
            held_revision: revision + 1,
            held_hash: "c".repeat(64),
        },
    )
    .await;
    let block = report(&fixture, "report-after-refused", ReportKind::BlockReverted);
    send(&mut ws, &AgentMessage::Report(block)).await;
    assert_eq!(
        next(&mut ws).await,
        GatewayMessage::ReportAck {
            report_id: "report-after-refused".into(),
            change_request: None,
        }
    );
    fixture.catch_up().await;
}

mod refused {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_rule_set_keeps_the_connection_postgres() {
        super::run(
            super::Backend::Postgres,
            super::a_refused_rule_set_keeps_the_connection,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_rule_set_keeps_the_connection_sqlite() {
        super::run(
            super::Backend::Sqlite,
            super::a_refused_rule_set_keeps_the_connection,
        )
        .await;
    }
}
