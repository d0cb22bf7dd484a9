//! From events to read models, end to end: live read models equal a rebuild from the log, whatever
//! happens to the processes and the transport; queries read them with freshness and read-your-writes.

use crate::harness::{
    Layout, PrivateNats, Store, TestApp, approve, attach_with, eventually, rule_spec,
    team_with_member, temporary,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// The five projections.
pub const PROJECTIONS: [&str; 5] = [
    "rule_catalog",
    "team_rulesets",
    "change_inbox",
    "directory",
    "agent_fleet",
];

/// Waits until every projection has applied everything committed (lag 0, no error).
pub async fn caught_up(app: &TestApp, admin: &str) {
    let done = eventually(Duration::from_secs(60), || async {
        let (status, body) = app.get("/api/v1/admin/projections", admin).await;
        if status != StatusCode::OK {
            return None;
        }
        let all = body.as_array()?;
        for p in all {
            assert!(p["error"].is_null(), "projection stopped: {p}");
        }
        (all.len() == PROJECTIONS.len() && all.iter().all(|p| p["lag"] == 0)).then_some(())
    })
    .await;
    assert!(done.is_some(), "projections did not catch up within 60 s");
}

/// For every projection, the served read model's content hash equals a rebuild's from the log.
pub async fn live_equals_rebuild(app: &TestApp, admin: &str) {
    caught_up(app, admin).await;
    for name in PROJECTIONS {
        let live = app
            .fetch(&format!("/api/v1/admin/projections/{name}/hash"), admin)
            .await;
        let (status, rebuilt) = app
            .call(
                Method::POST,
                &format!("/api/v1/admin/projections/{name}/rebuild"),
                Some(admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{rebuilt}");
        assert_eq!(
            live["content_hash"], rebuilt["content_hash"],
            "projection {name}: the live read model differs from a rebuild ({} events)",
            rebuilt["events"]
        );
        assert!(rebuilt["events"].as_u64().unwrap() > 0);
    }
}

/// One random command.
#[derive(Debug, Clone)]
enum Op {
    DraftRule(u8),
    Submit(u8),
    Approve(u8),
    Reject(u8),
    Revise(u8),
    Archive(u8),
    OrgEnforcement(u8, u8),
    CreateTeam,
    AddMember(u8, u8, bool),
    RemoveMember(u8, u8),
    Attach(u8, u8, u8),
    ChangeEnforcement(u8, u8, u8),
    Detach(u8, u8),
    ArchiveTeam(u8),
    CreateUser,
    Deactivate(u8),
    Reactivate(u8),
    Enroll(u8),
    Revoke(u8),
    Report(u8, u8, u8),
    Decide(u8, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let i = || 0u8..6;
    prop_oneof![
        3 => (0u8..3).prop_map(Op::DraftRule),
        2 => i().prop_map(Op::Submit),
        3 => i().prop_map(Op::Approve),
        1 => i().prop_map(Op::Reject),
        1 => i().prop_map(Op::Revise),
        1 => i().prop_map(Op::Archive),
        1 => (i(), 0u8..3).prop_map(|(a, b)| Op::OrgEnforcement(a, b)),
        2 => Just(Op::CreateTeam),
        3 => (i(), i(), any::<bool>()).prop_map(|(a, b, c)| Op::AddMember(a, b, c)),
        1 => (i(), i()).prop_map(|(a, b)| Op::RemoveMember(a, b)),
        3 => (i(), i(), 0u8..3).prop_map(|(a, b, c)| Op::Attach(a, b, c)),
        1 => (i(), i(), 0u8..3).prop_map(|(a, b, c)| Op::ChangeEnforcement(a, b, c)),
        1 => (i(), i()).prop_map(|(a, b)| Op::Detach(a, b)),
        1 => i().prop_map(Op::ArchiveTeam),
        2 => Just(Op::CreateUser),
        1 => i().prop_map(Op::Deactivate),
        1 => i().prop_map(Op::Reactivate),
        2 => i().prop_map(Op::Enroll),
        1 => i().prop_map(Op::Revoke),
        3 => (i(), i(), i()).prop_map(|(a, b, c)| Op::Report(a, b, c)),
        2 => (i(), any::<bool>()).prop_map(|(a, b)| Op::Decide(a, b)),
    ]
}

/// What the workload has created so far.
#[derive(Default)]
pub struct World {
    admin: String,
    second: String,
    third: String,
    rules: Vec<String>,
    teams: Vec<String>,
    users: Vec<String>,
    agents: Vec<(String, String)>,
    changes: Vec<String>,
    reports: u64,
}

fn pick<T: Clone>(items: &[T], i: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(i) % items.len()].clone())
}

fn enforcement(mode: u8) -> Value {
    match mode % 3 {
        0 => json!({"mode": "block"}),
        1 => temporary(3600),
        _ => json!({"mode": "warning"}),
    }
}

impl World {
    /// Two more org_admins (approvals need someone other than the author).
    pub async fn new(app: &TestApp) -> World {
        let (admin, second) = app.admins().await;
        let (_, third) = app.user(&admin, "third", &["org_admin"]).await;
        World {
            admin,
            second,
            third,
            ..World::default()
        }
    }

    async fn post(&self, app: &TestApp, token: &str, path: &str, body: Value) -> Option<Value> {
        let (status, body) = app.post(path, token, body).await;
        assert!(!status.is_server_error(), "POST {path}: {status} {body}");
        status.is_success().then_some(body)
    }

    /// POSTs `body` with `token` to `/api/v1/{kind}/{id}/{action}`, `id` the `i`th of what the
    /// workload has of `kind` (nothing when it has none).
    async fn on(
        &self,
        app: &TestApp,
        token: &str,
        (kind, i, action): (&str, u8, &str),
        body: Value,
    ) {
        let items = match kind {
            "rules" => &self.rules,
            "teams" => &self.teams,
            "users" => &self.users,
            _ => &self.changes,
        };
        if let Some(id) = pick(items, i) {
            let path = format!("/api/v1/{kind}/{id}/{action}");
            self.post(app, token, &path, body).await;
        }
    }

    /// [`World::on`] as the admin, with an empty body.
    async fn act(&self, app: &TestApp, kind: &str, i: u8, action: &str) {
        self.on(app, &self.admin, (kind, i, action), json!({}))
            .await;
    }

    /// POSTs `body` with `token` to `path`; answers the `id` of what it created, if it did.
    async fn create(&self, app: &TestApp, token: &str, path: &str, body: Value) -> Option<String> {
        let created = self.post(app, token, path, body).await?;
        Some(created["id"].as_str().unwrap().to_owned())
    }

    /// Runs one command (many random ones are refused with a 4xx, which is fine: they change nothing).
    async fn run(&mut self, app: &TestApp, op: &Op) {
        let admin = self.admin.clone();
        let no = || json!({"reason": "no"});
        match op.clone() {
            Op::DraftRule(layer) => {
                let layer = ["organization", "team", "project"][usize::from(layer) % 3];
                let spec = rule_spec(&format!("rule {}", self.rules.len()), layer);
                let rule = self.create(app, &admin, "/api/v1/rules", spec).await;
                self.rules.extend(rule);
            }
            Op::Submit(i) => self.act(app, "rules", i, "submit").await,
            Op::Approve(i) => {
                for approver in [&self.second, &self.third] {
                    self.on(app, approver, ("rules", i, "approve"), json!({}))
                        .await;
                }
            }
            Op::Reject(i) => {
                let second = &self.second;
                self.on(app, second, ("rules", i, "reject"), no()).await;
            }
            Op::Revise(i) => {
                if let Some(r) = pick(&self.rules, i) {
                    let (_, rule) = app.get(&format!("/api/v1/rules/{r}"), &admin).await;
                    if let Some(layer) = rule["layer"].as_str() {
                        let spec = rule_spec(&format!("revised {r}"), layer);
                        self.on(app, &admin, ("rules", i, "revisions"), spec).await;
                    }
                }
            }
            Op::Archive(i) => self.act(app, "rules", i, "archive").await,
            Op::OrgEnforcement(i, mode) => {
                if let Some(r) = pick(&self.rules, i) {
                    let path = format!("/api/v1/rules/{r}/enforcement");
                    app.put(&path, &admin, enforcement(mode)).await;
                }
            }
            Op::CreateTeam => {
                let name = format!("team {}", self.teams.len());
                let team = self.create(app, &admin, "/api/v1/teams", json!({"name": name}));
                self.teams.extend(team.await);
            }
            Op::AddMember(t, u, lead) => {
                if let (Some(t), Some(u)) = (pick(&self.teams, t), pick(&self.users, u)) {
                    let role = if lead { "team_admin" } else { "member" };
                    let body = json!({"user_id": u, "role": role});
                    let path = format!("/api/v1/teams/{t}/members");
                    self.post(app, &admin, &path, body).await;
                }
            }
            Op::RemoveMember(t, u) => {
                if let (Some(t), Some(u)) = (pick(&self.teams, t), pick(&self.users, u)) {
                    app.delete(&format!("/api/v1/teams/{t}/members/{u}"), &admin)
                        .await;
                }
            }
            Op::Attach(t, r, mode) => {
                if let (Some(t), Some(r)) = (pick(&self.teams, t), pick(&self.rules, r)) {
                    let body = json!({"rule_id": r, "enforcement": enforcement(mode)});
                    self.post(app, &admin, &format!("/api/v1/teams/{t}/rules"), body)
                        .await;
                }
            }
            Op::ChangeEnforcement(t, r, mode) => {
                if let (Some(t), Some(r)) = (pick(&self.teams, t), pick(&self.rules, r)) {
                    let path = format!("/api/v1/teams/{t}/rules/{r}");
                    app.patch(&path, &admin, enforcement(mode)).await;
                }
            }
            Op::Detach(t, r) => {
                if let (Some(t), Some(r)) = (pick(&self.teams, t), pick(&self.rules, r)) {
                    app.delete(&format!("/api/v1/teams/{t}/rules/{r}"), &admin)
                        .await;
                }
            }
            Op::ArchiveTeam(t) => self.act(app, "teams", t, "archive").await,
            Op::CreateUser => {
                let n = self.users.len();
                let body = json!({
                    "email": format!("user{n}-{}@example.com", &uuid::Uuid::new_v4().simple().to_string()[..6]),
                    "name": format!("User {n}"), "password": "user-password-123", "roles": ["member"],
                });
                let user = self.create(app, &admin, "/api/v1/users", body).await;
                self.users.extend(user);
            }
            Op::Deactivate(u) => self.act(app, "users", u, "deactivate").await,
            Op::Enroll(u) => {
                if let Some(u) = pick(&self.users, u) {
                    let n = self.agents.len();
                    let body =
                        json!({"machine_id": format!("m-{n}"), "machine_name": "M", "user_id": u});
                    if let Some(body) = self.post(app, &admin, "/api/v1/agents", body).await {
                        self.agents.push((
                            body["id"].as_str().unwrap().to_owned(),
                            body["token"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
            Op::Revoke(a) => {
                if let Some((a, _)) = pick(&self.agents, a) {
                    let path = format!("/api/v1/agents/{a}/revoke");
                    self.post(app, &admin, &path, json!({})).await;
                }
            }
            Op::Reactivate(u) => self.act(app, "users", u, "reactivate").await,
            Op::Report(a, t, r) => {
                if let (Some((_, token)), Some(t), Some(r)) = (
                    pick(&self.agents, a),
                    pick(&self.teams, t),
                    pick(&self.rules, r),
                ) {
                    self.reports += 1;
                    let body = json!({
                        "team_id": t, "rule_id": r, "file": "/home/u/.claude/CLAUDE.md", "layer": "team",
                        "original_hash": "a".repeat(64), "new_hash": "b".repeat(64), "diff": "-a\n+b\n",
                        "report_id": format!("report-{}", self.reports),
                    });
                    let path = "/api/v1/change-requests";
                    let change = self.create(app, &token, path, body).await;
                    self.changes.extend(change);
                }
            }
            Op::Decide(c, approve) => {
                let (action, body) = if approve {
                    ("approve", json!({}))
                } else {
                    ("reject", no())
                };
                self.on(app, &admin, ("change-requests", c, action), body)
                    .await;
            }
        }
    }

    /// A deterministic mix that touches every projection: used where randomness is not the point.
    pub async fn steady(&mut self, app: &TestApp, round: usize) {
        let ops = [
            Op::CreateUser,
            Op::CreateTeam,
            Op::DraftRule((round % 3) as u8),
            Op::Submit(round as u8),
            Op::Approve(round as u8),
            Op::AddMember(round as u8, round as u8, round.is_multiple_of(2)),
            Op::Attach(round as u8, round as u8, (round % 3) as u8),
            Op::Enroll(round as u8),
            Op::Report(round as u8, round as u8, round as u8),
            Op::Decide(round as u8, round.is_multiple_of(2)),
        ];
        for op in &ops {
            self.run(app, op).await;
        }
    }

    /// [`World::steady`] for each of `rounds`.
    async fn steady_rounds(&mut self, app: &TestApp, rounds: std::ops::Range<usize>) {
        for round in rounds {
            self.steady(app, round).await;
        }
    }

    /// Once live read models equal a rebuild, how many items the admin's `list` has
    /// (`/api/v1/{list}?limit=200`).
    async fn settled_count(&self, app: &TestApp, list: &str) -> usize {
        live_equals_rebuild(app, &self.admin).await;
        let (_, page) = app
            .get(&format!("/api/v1/{list}?limit=200"), &self.admin)
            .await;
        page["items"].as_array().unwrap().len()
    }
}

fn random_sequences_keep_live_equal_to_rebuild(store: Store, layout: Layout) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(TestApp::spawn_with(store, layout));
    let world = std::cell::RefCell::new(runtime.block_on(World::new(&app)));
    let mut runner = TestRunner::new(Config {
        cases: 6,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 20..60), |ops| {
            let mut world = world.borrow_mut();
            runtime.block_on(async {
                for op in &ops {
                    world.run(&app, op).await;
                }
                let admin = world.admin.clone();
                live_equals_rebuild(&app, &admin).await;
            });
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_commands_live_read_models_equal_a_rebuild_postgres_nats() {
    random_sequences_keep_live_equal_to_rebuild(Store::Postgres, Layout::distributed());
}

#[test]
fn random_commands_live_read_models_equal_a_rebuild_embedded() {
    random_sequences_keep_live_equal_to_rebuild(Store::Sqlite, Layout::default());
}

/// A distributed app with `roles` in its main process and `extra` in a process of its own (answered
/// by its index), and a workload on it.
async fn split(roles: &str, extra: &str) -> (TestApp, usize, World) {
    let layout = Layout::distributed_with(roles);
    let mut app = TestApp::spawn_with(Store::Postgres, layout).await;
    let process = app.spawn_extra(extra);
    let world = World::new(&app).await;
    (app, process, world)
}

#[tokio::test]
async fn killing_the_projector_loses_and_duplicates_nothing() {
    let (mut app, projector, mut world) = split("api,relay", "projector").await;
    world.steady_rounds(&app, 0..4).await;
    app.kill_extra(projector).await;
    world.steady_rounds(&app, 4..8).await;
    app.spawn_extra("projector");
    world.steady_rounds(&app, 8..10).await;
    assert_eq!(
        world.settled_count(&app, "rules").await,
        world.rules.len(),
        "every rule is in the catalog once"
    );
}

#[tokio::test]
async fn killing_the_relay_hands_over_to_the_standby() {
    let (mut app, leader, mut world) = split("api,projector", "relay").await;
    world.steady(&app, 0).await;
    caught_up(&app, &world.admin.clone()).await;
    let _standby = app.spawn_extra("relay");
    world.steady_rounds(&app, 1..4).await;
    app.kill_extra(leader).await;
    world.steady_rounds(&app, 4..8).await;
    assert_eq!(
        world.settled_count(&app, "users").await,
        world.users.len() + 3
    );
}

#[tokio::test]
async fn restarting_nats_mid_stream_converges() {
    let mut nats = PrivateNats::start().await;
    let mut layout = Layout::distributed();
    layout.nats_url = Some(nats.url());
    let app = TestApp::spawn_with(Store::Postgres, layout).await;
    let mut world = World::new(&app).await;
    world.steady_rounds(&app, 0..3).await;
    nats.kill().await;
    nats.restart().await;
    world.steady_rounds(&app, 3..6).await;
    live_equals_rebuild(&app, &world.admin).await;
}

#[tokio::test]
async fn queries_filter_page_and_read_their_own_writes() {
    let app = TestApp::spawn_with(Store::Postgres, Layout::distributed()).await;
    let (admin, second) = app.admins().await;
    let mut ids = Vec::new();
    for (i, layer) in ["team", "project", "team", "organization", "team"]
        .iter()
        .enumerate()
    {
        let mut spec = rule_spec(&format!("rule {i}"), layer);
        if i == 2 {
            spec["tags"] = json!(["security"]);
            spec["content"] = json!("Never paste credentials.");
        }
        let created = app.ok("/api/v1/rules", &admin, spec).await;
        ids.push((
            created["id"].as_str().unwrap().to_owned(),
            created["position"].as_i64().unwrap(),
        ));
    }
    // Read your own write: wait for the last command's position.
    let position = ids.last().unwrap().1;
    let page = app
        .fetch(
            &format!("/api/v1/rules?limit=2&min_position={position}"),
            &admin,
        )
        .await;
    assert!(page["freshness"]["position"].as_i64().unwrap() >= position);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let ids_of = |page: &Value| -> Vec<String> {
        let items = page["items"].as_array().unwrap().iter();
        items
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut seen = ids_of(&page);
    let mut next = page["next"].as_str().map(str::to_owned);
    while let Some(cursor) = next {
        let (_, page) = app
            .get(&format!("/api/v1/rules?limit=2&after={cursor}"), &admin)
            .await;
        seen.extend(ids_of(&page));
        next = page["next"].as_str().map(str::to_owned);
    }
    let expected: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        seen, expected,
        "pages cover every rule once, in creation order"
    );

    let (_, teams) = app.get("/api/v1/rules?layer=team", &admin).await;
    assert_eq!(teams["items"].as_array().unwrap().len(), 3);
    let (_, tagged) = app.get("/api/v1/rules?tag=security", &admin).await;
    assert_eq!(tagged["items"].as_array().unwrap().len(), 1);
    let (_, text) = app.get("/api/v1/rules?q=CREDENTIALS", &admin).await;
    assert_eq!(text["items"].as_array().unwrap().len(), 1);

    // A team with an attached rule and the organization rule: the rule set and its rendered text.
    let (team_rule, _) = ids[0].clone();
    let (org_rule, _) = ids[3].clone();
    for rule in [&team_rule, &org_rule] {
        app.ok(&format!("/api/v1/rules/{rule}/submit"), &admin, json!({}))
            .await;
        app.ok(&format!("/api/v1/rules/{rule}/approve"), &second, json!({}))
            .await;
    }
    let (_, third) = app.user(&admin, "third", &["org_admin"]).await;
    app.ok(
        &format!("/api/v1/rules/{org_rule}/approve"),
        &third,
        json!({}),
    )
    .await;
    let team = app.team(&admin, "Core").await;
    let attached = app
        .ok(
            &format!("/api/v1/teams/{team}/rules"),
            &admin,
            json!({"rule_id": team_rule, "enforcement": {"mode": "warning"}}),
        )
        .await;
    let position = attached["position"].as_i64().unwrap();
    let path = format!("/api/v1/teams/{team}/ruleset?min_position={position}");
    let ruleset = app.fetch(&path, &admin).await;
    assert!(ruleset["revision"].as_u64().unwrap() >= 1);
    assert_eq!(ruleset["hash"].as_str().unwrap().len(), 64);
    assert_eq!(
        ruleset["layers"]["organization"]["rules"][0]["mode"], "block",
        "{ruleset}"
    );
    assert_eq!(
        ruleset["layers"]["team"]["rules"][0]["mode"], "warning",
        "{ruleset}"
    );
    let response = app
        .send(
            Method::GET,
            &format!("/api/v1/teams/{team}/ruleset/rendered?layer=team"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    assert_eq!(
        response.headers()["x-edict-ruleset-revision"]
            .to_str()
            .unwrap(),
        ruleset["revision"].to_string()
    );
    assert!(response.text().await.unwrap().contains("rule 0"));

    // A position past the head of the log can never be reached: a 400 at once (issue 16).
    let (status, problem) = app
        .get("/api/v1/rules?min_position=999999999", &admin)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

#[tokio::test]
async fn temporary_changes_past_their_timeout_are_auto_reverted() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (admin, second) = app.admins().await;
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    let team = team_with_member(&app, &admin, "T", &dev_id).await;
    let rule = approve(&app, &admin, &second, rule_spec("short fuse", "team")).await;
    attach_with(&app, &admin, &team, &rule, temporary(1)).await;
    let agent = app.enroll_agent(&dev, "m", "M").await;
    let token = agent["token"].as_str().unwrap().to_owned();
    let cr = app
        .ok(
            "/api/v1/change-requests",
            &token,
            json!({"team_id": team, "rule_id": rule, "file": "/f", "layer": "team", "original_hash": "a".repeat(64),
                   "new_hash": "b".repeat(64), "diff": "", "report_id": "r-1"}),
        )
        .await;
    let cr = cr["id"].as_str().unwrap().to_owned();
    let reverted = eventually(Duration::from_secs(15), || async {
        let (_, view) = app
            .get(&format!("/api/v1/change-requests/{cr}"), &admin)
            .await;
        (view["status"] == "auto_reverted").then_some(view)
    })
    .await;
    assert!(
        reverted.is_some(),
        "the scheduler reverts a change past its timeout"
    );
    eventually(Duration::from_secs(5), || async {
        let (_, inbox) = app
            .get(
                &format!("/api/v1/change-requests?team={team}&status=auto_reverted"),
                &admin,
            )
            .await;
        (inbox["items"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await
    .expect("the inbox lists the reverted change");
}

/// The status of projection `name` as `GET /api/v1/admin/projections` shows it.
async fn projection_status(app: &TestApp, admin: &str, name: &str) -> Option<Value> {
    let (status, body) = app.get("/api/v1/admin/projections", admin).await;
    if status != StatusCode::OK {
        return None;
    }
    body.as_array()?.iter().find(|p| p["name"] == name).cloned()
}

/// Issue 14, item 6: in NATS mode a projection stopped at an event it cannot apply ends its projector;
/// once rebuilt over the API, the projector (started again by the process's supervisor) applies what
/// comes next: its lag returns to 0. Meanwhile the admin view and readiness show the projector
/// restarting, with why.
#[tokio::test]
async fn a_stopped_projection_comes_back_after_a_rebuild() {
    let app = TestApp::spawn_with_vars(
        Store::Postgres,
        Layout::distributed(),
        &[("EDICT_SUPERVISOR_MAX_BACKOFF_MS", "500")],
    )
    .await;
    let admin = app.admin().await;
    app.user(&admin, "before", &["member"]).await;
    caught_up(&app, &admin).await;
    // Poisoned: the projection is stopped as an event it cannot apply stops it.
    let status = tokio::process::Command::new("psql")
        .arg(&app.database_url)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            "UPDATE projection_state SET error = 'poisoned by the test', error_position = position \
             WHERE name = 'directory'",
        ])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    // The next event meets the stop: the projector ends.
    app.user(&admin, "during", &["member"]).await;
    let restarting = eventually(Duration::from_secs(30), || async {
        let p = projection_status(&app, &admin, "directory").await?;
        (p["projector"]["state"] == "restarting").then_some(p)
    })
    .await
    .expect("the directory's projector is shown restarting");
    assert!(
        restarting["projector"]["last_error"]
            .as_str()
            .unwrap()
            .contains("poisoned by the test"),
        "{restarting}"
    );
    // Not ready for as long as the projection is stopped, also in the moments the projector runs
    // again before it meets the stop (it is started again every few hundred milliseconds here).
    let watched = tokio::time::Instant::now();
    let mut probes = 0;
    while watched.elapsed() < Duration::from_secs(3) {
        let (status, ready) = app.call(Method::GET, "/health/ready", None, None).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "probe {probes}: {ready}"
        );
        assert!(
            ready["detail"]
                .as_str()
                .unwrap()
                .contains("role:projector:directory"),
            "{ready}"
        );
        probes += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Rebuilt through the API, then an event: applied by the projector started again.
    let (status, rebuilt) = app
        .call(
            Method::POST,
            "/api/v1/admin/projections/directory/rebuild",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rebuilt}");
    let (after, _) = app.user(&admin, "after", &["member"]).await;
    let back = eventually(Duration::from_secs(30), || async {
        let p = projection_status(&app, &admin, "directory").await?;
        (p["lag"] == 0 && p["error"].is_null()).then_some(p)
    })
    .await;
    let last = projection_status(&app, &admin, "directory").await;
    let back = back.unwrap_or_else(|| panic!("the directory's lag never returned to 0: {last:?}"));
    assert!(back["generation"].as_i64().unwrap() > 1, "{back}");
    let (_, users) = app.get("/api/v1/users?limit=200", &admin).await;
    assert!(
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|user| user["id"] == after.as_str()),
        "the user created after the rebuild is in the directory: {users}"
    );
    let running = eventually(Duration::from_secs(10), || async {
        let p = projection_status(&app, &admin, "directory").await?;
        (p["projector"]["state"] == "running").then_some(p)
    })
    .await
    .expect("the directory's projector runs again");
    assert!(
        running["projector"]["restarts"].as_u64().unwrap() >= 1,
        "{running}"
    );
    let (status, ready) = app.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
}
