//! Rules reach machines: the real `edict serve` (with its gateway) and the real `edict-agent run`
//! processes, with a temporary HOME and organization file; `edict-agent doctor` checks such a machine.

use crate::harness::{
    Layout, Machine, Store, TestApp, approve, approved_rule, attach, attach_with, eventually, mode,
    rule_spec, team_with_member, temporary, two_gateways,
};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;

impl Machine {
    /// The team file once it reads `Always {rule}.`, within 20 s; panics with `what` otherwise.
    async fn holding(&self, rule: &str, what: &str) -> String {
        let line = format!("Always {rule}.");
        self.team_file_when(20, |t| t.contains(&line))
            .await
            .expect(what)
    }

    /// `edict-agent login` by device code: reads the code it prints, lets `approver` check what asks
    /// and approve it with explicit consent; answers the agent id once the login finished.
    async fn enroll_by_device(&self, app: &TestApp, approver: &str) -> String {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut login = self
            .command()
            .args(["login", "--server", &app.base, "--output", "json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(login.stdout.take().unwrap()).lines();
        // The first JSON document is the code; the second, after approval, the enrollment.
        let mut document = String::new();
        let mut documents = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            document.push_str(&line);
            if line == "}" {
                documents.push(serde_json::from_str::<Value>(&document).unwrap());
                document.clear();
                if documents.len() == 1 {
                    let code = documents[0]["user_code"].as_str().unwrap().to_owned();
                    assert!(
                        documents[0]["verification_uri"]
                            .as_str()
                            .unwrap()
                            .ends_with("/device")
                    );
                    let request = app
                        .fetch(&format!("/api/v1/device/requests/{code}"), approver)
                        .await;
                    assert_eq!(request["status"], "pending");
                    assert!(!request["machine_id"].as_str().unwrap().is_empty());
                    app.ok(
                        &format!("/api/v1/device/requests/{code}/approve"),
                        approver,
                        json!({"consent": true}),
                    )
                    .await;
                }
            }
        }
        assert!(login.wait().await.unwrap().success(), "edict-agent login");
        assert_eq!(documents.len(), 2, "{documents:?}");
        documents[1]["agent_id"].as_str().unwrap().to_owned()
    }
}

/// The people of these tests: the admin, a second org_admin who approves rules, and a developer.
struct Staff {
    admin: String,
    second: String,
    dev_id: String,
    dev: String,
}

impl Staff {
    async fn of(app: &TestApp) -> Staff {
        let (admin, second) = app.admins().await;
        let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
        Staff {
            admin,
            second,
            dev_id,
            dev,
        }
    }

    /// An approved rule `Always {name}.` attached with `enforcement` to a new team whose member is
    /// the developer; answers (team, rule).
    async fn team_with_rule(
        &self,
        app: &TestApp,
        name: &str,
        enforcement: Value,
    ) -> (String, String) {
        let team =
            team_with_member(app, &self.admin, &format!("team of {name}"), &self.dev_id).await;
        let rule = approved_rule(app, &self.admin, &self.second, name).await;
        attach_with(app, &self.admin, &team, &rule, enforcement).await;
        (team, rule)
    }

    /// [`Staff::team_with_rule`], once the rule is in `machine`'s team file: (team, rule, its text).
    async fn enforced(
        &self,
        app: &TestApp,
        machine: &Machine,
        name: &str,
        enforcement: Value,
    ) -> (String, String, String) {
        let (team, rule) = self.team_with_rule(app, name, enforcement).await;
        let written = machine
            .holding(name, "the rule reaches the team file")
            .await;
        (team, rule, written)
    }

    /// A machine of the developer enrolled with an enrollment token noted `note`, not running yet,
    /// and its agent id.
    async fn machine(&self, app: &TestApp, note: &str) -> (Machine, String) {
        let body = json!({"user_id": self.dev_id, "note": note});
        Machine::enrolled(app, &self.admin, body).await
    }
}

/// The one pending change request of `team` once the agent opened it, within `secs` seconds.
async fn opened_change_request(app: &TestApp, admin: &str, team: &str, secs: u64) -> Value {
    let path = format!("/api/v1/change-requests?team={team}&status=pending");
    eventually(Duration::from_secs(secs), || async {
        let (_, page) = app.get(&path, admin).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 1).then(|| items[0].clone())
    })
    .await
    .expect("the change opens a change request")
}

/// The `id` of `item`.
fn id(item: &Value) -> String {
    item["id"].as_str().unwrap_or_default().to_owned()
}

/// `admin` decides the change request `cr` (`approve`, `reject`) with `body`.
async fn decide(app: &TestApp, admin: &str, cr: &str, decision: &str, body: Value) {
    let path = format!("/api/v1/change-requests/{cr}/{decision}");
    app.ok(&path, admin, body).await;
}

/// Sets the enforcement mode of `rule` on `team` to `mode`.
async fn set_mode(app: &TestApp, admin: &str, team: &str, rule: &str, mode: &str) {
    let path = format!("/api/v1/teams/{team}/rules/{rule}");
    let (status, body) = app.patch(&path, admin, json!({"mode": mode})).await;
    assert!(status.is_success(), "{status} {body}");
}

/// Replaces the managed section's body in `text` with `body`, keeping the markers.
fn tamper(text: &str, body: &str) -> String {
    let begin = text.find("<!-- edict:begin").unwrap();
    let begin_end = begin + text[begin..].find('\n').unwrap() + 1;
    let end = text.find("<!-- edict:end -->").unwrap();
    format!("{}{}\n{}", &text[..begin_end], body, &text[end..])
}

#[tokio::test]
async fn block_rules_reach_the_machine_and_edits_are_reverted_even_offline() {
    let mut app = TestApp::spawn(Store::Sqlite).await;
    let staff = Staff::of(&app).await;
    let Staff {
        admin, second, dev, ..
    } = &staff;
    let (_, _other_dev) = app.user(admin, "other", &["member"]).await;
    // The developer enrolls the machine by device code, approving it themselves.
    let mut machine = Machine::new();
    let agent_id = machine.enroll_by_device(&app, dev).await;
    machine.run();

    // The user's own text is there before Edict writes anything.
    machine.write_team("# My notes\nkeep me\n");

    // 1. A block rule attached to the developer's team reaches the file within 2 s (plus propagation).
    let (team, _) = staff
        .team_with_rule(&app, "run the tests", mode("block"))
        .await;
    // A rule of a team the developer is not in never arrives.
    let other_team = app.team(admin, "not yours").await;
    let mut secret = rule_spec("secret rule", "team");
    secret["content"] = json!("Team B only.");
    let secret = approve(&app, admin, second, secret).await;
    attach(&app, admin, &other_team, &secret).await;

    let written = machine
        .holding("run the tests", "the managed section reaches the team file")
        .await;
    assert!(
        written.contains("# My notes\nkeep me\n"),
        "user text kept: {written}"
    );
    assert!(
        !written.contains("Team B only"),
        "another team's rules never arrive"
    );
    // `sync` makes the running agent reconnect and reconcile, and waits until it is connected again.
    let sync = machine.output(&["sync", "--output", "json"]).await;
    assert!(sync.status.success(), "edict-agent sync");
    let synced: Value = serde_json::from_slice(&sync.stdout).unwrap();
    assert_eq!(synced["connected"], true, "{synced}");

    // Convergence: the server knows which revision this machine enforces.
    let converged = eventually(Duration::from_secs(10), || async {
        let view = app.convergence(admin, &team).await;
        (view["converged"] == 1).then_some(view)
    })
    .await;
    assert!(
        converged.is_some(),
        "the agent's applied revision is recorded"
    );
    let enforced = app
        .fetch(&format!("/api/v1/agents/{agent_id}/enforced"), dev)
        .await;
    assert_eq!(enforced[0]["current"], true, "{enforced}");

    // 2 + 5. Editing the managed section: restored, user text kept, reported to the server.
    let version_before = agent_version(&app, admin, &agent_id).await;
    machine.write_team(tamper(&written, "I know better."));
    let restored = machine.team_file_when(5, |t| t == written).await;
    assert!(
        restored.is_some(),
        "the block section is restored exactly: {}",
        machine.team_text()
    );
    assert!(
        version_passes(&app, admin, &agent_id, version_before, 10).await,
        "the revert is recorded as an event of the agent"
    );

    // 6. Server down: an edit is still reverted from the snapshot; the report is delivered after.
    let status = app.stop().await;
    assert!(status.success());
    let version_offline = agent_version_from_store(&app, &agent_id).await;
    machine.write_team(tamper(&written, "offline edit"));
    let restored = machine.team_file_when(5, |t| t == written).await;
    assert!(restored.is_some(), "reverted offline from the snapshot");
    app.start().await;
    assert!(
        stored_version(&app, &agent_id, 30, |v| v == version_offline + 1).await,
        "the queued report is delivered once after reconnecting"
    );
    // Exactly once: a later report must land right after it. The agent sends its outbox in order,
    // so a duplicate of the first one would be counted before the second arrives.
    let drained = eventually(Duration::from_secs(10), || async {
        (machine.status().await["pending_reports"] == 0).then_some(())
    })
    .await;
    assert!(
        drained.is_some(),
        "the agent's outbox drains once acknowledged"
    );
    machine.write_team(tamper(&written, "online edit"));
    let second = eventually(Duration::from_secs(15), || async {
        let version = agent_version_from_store(&app, &agent_id).await;
        (version >= version_offline + 2 && machine.status().await["pending_reports"] == 0)
            .then_some(version)
    })
    .await;
    assert_eq!(
        second,
        Some(version_offline + 2),
        "exactly once: the queued report, then the later one, and no duplicate"
    );
    machine.stop().await;
}

async fn agent_version(app: &TestApp, admin: &str, agent: &str) -> u64 {
    let (_, view) = app.get(&format!("/api/v1/agents/{agent}"), admin).await;
    view["version"].as_u64().unwrap_or_default()
}

/// Whether the agent's version, as the API shows it, passes `before` within `secs` seconds.
async fn version_passes(app: &TestApp, admin: &str, agent: &str, before: u64, secs: u64) -> bool {
    eventually(Duration::from_secs(secs), || async {
        (agent_version(app, admin, agent).await > before).then_some(())
    })
    .await
    .is_some()
}

/// Whether the agent's version in the store satisfies `pred` within `secs` seconds.
async fn stored_version(app: &TestApp, agent: &str, secs: u64, pred: impl Fn(u64) -> bool) -> bool {
    eventually(Duration::from_secs(secs), || async {
        pred(agent_version_from_store(app, agent).await).then_some(())
    })
    .await
    .is_some()
}

/// The agent's version straight from its events (works while no server runs).
async fn agent_version_from_store(app: &TestApp, agent: &str) -> u64 {
    let path = app.database_url.trim_start_matches("sqlite://");
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3;print(sqlite3.connect('{path}').execute(\"select count(*) from events where aggregate_type='Agent' and aggregate_id='{agent}'\").fetchone()[0])"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_default()
}

#[tokio::test]
async fn warning_edits_are_kept_and_temporary_ones_are_decided() {
    let app = TestApp::spawn(Store::Postgres).await;
    let staff = Staff::of(&app).await;
    let admin = &staff.admin;
    // An unattended install: an org_admin's enrollment token for the developer.
    let (mut machine, agent_id) = staff.machine(&app, "laptop image").await;
    machine.run();

    // 4. Warning: the edit is kept (and reported).
    let (_, _, written) = staff
        .enforced(&app, &machine, "write docs", mode("warning"))
        .await;
    let edited = tamper(&written, "docs are optional");
    let version_before = agent_version(&app, admin, &agent_id).await;
    machine.write_team(&edited);
    // The agent handled the edit once its warning report is recorded as an event of the agent.
    assert!(
        version_passes(&app, admin, &agent_id, version_before, 15).await,
        "the warning-mode edit is reported to the server"
    );
    assert_eq!(machine.team_text(), edited, "a warning-mode edit is kept");

    // 3. Temporary: an edit opens a change request; rejected → reverted; approved → kept.
    let (team, _, written) = staff
        .enforced(&app, &machine, "review diffs", temporary(3600))
        .await;
    let pending = || async { id(&opened_change_request(&app, admin, &team, 15).await) };
    let edited = tamper(&written, "review diffs, sometimes");
    machine.write_team(&edited);
    let cr = pending().await;
    assert_eq!(
        machine.team_text(),
        edited,
        "a temporary change stands while undecided"
    );
    decide(
        &app,
        admin,
        &cr,
        "reject",
        json!({"reason": "keep reviewing"}),
    )
    .await;
    let reverted = machine
        .team_file_when(15, |t| {
            !t.contains("sometimes") && t.contains("Always review diffs.")
        })
        .await;
    assert!(
        reverted.is_some(),
        "a rejected change is reverted: {}",
        machine.team_text()
    );
    // The developer appeals from the machine: an exception is requested on that change request.
    let appeal = machine
        .output(&["appeal", &cr, "--reason", "we review in pairs instead"])
        .await;
    assert!(appeal.status.success(), "edict-agent appeal");
    let (_, change) = app
        .get(&format!("/api/v1/change-requests/{cr}"), admin)
        .await;
    assert_eq!(change["status"], "exception_requested", "{change}");

    let edited = tamper(&machine.team_text(), "review diffs after lunch");
    machine.write_team(&edited);
    let cr = pending().await;
    decide(&app, admin, &cr, "approve", json!({})).await;
    // The agent applied the approval once it records the keep decision.
    let kept = eventually(Duration::from_secs(15), || async {
        let status = machine.status().await;
        status["recent_actions"]
            .as_array()
            .is_some_and(|actions| actions.iter().any(|a| a["what"] == "decision_keep"))
            .then_some(())
    })
    .await;
    assert!(kept.is_some(), "the agent applies the approval");
    assert!(
        machine.team_text().contains("after lunch"),
        "an approved change is kept"
    );
    machine.stop().await;
}

/// The team's latest rule-set revision, and whether every one of `agents` enforces it.
async fn converged(app: &TestApp, admin: &str, team: &str, agents: &[String]) -> Option<u64> {
    let convergence = app.convergence(admin, team).await;
    let latest = convergence["latest_revision"].as_u64()?;
    let rows = convergence["agents"].as_array()?;
    agents
        .iter()
        .all(|agent| {
            rows.iter().any(|row| {
                row["agent_id"] == agent.as_str()
                    && row["revision"].as_u64() == Some(latest)
                    && row["hash"] == convergence["latest_hash"]
            })
        })
        .then_some(latest)
}

/// Tests 7 and 8: two gateways, agents fail over when either dies; an agent killed (-9) while rule
/// sets arrive restarts on an intact snapshot and converges. Real PostgreSQL, NATS and processes.
#[tokio::test]
async fn agents_fail_over_between_gateways_and_survive_kill_9() {
    let (gateways, urls) = two_gateways();
    let layout = Layout::distributed_with("api,relay,projector");
    let mut app = TestApp::spawn_with_vars(
        Store::Postgres,
        layout,
        &[("EDICT_GATEWAY_PUBLIC_URLS", &urls)],
    )
    .await;
    let mut gateway = [
        app.spawn_extra_with("gateway", &[("EDICT_GATEWAY_LISTEN", &gateways[0])]),
        app.spawn_extra_with("gateway", &[("EDICT_GATEWAY_LISTEN", &gateways[1])]),
    ];
    let staff = Staff::of(&app).await;
    let Staff {
        admin,
        second,
        dev_id,
        ..
    } = &staff;
    let token = app
        .enrollment_token(admin, json!({"user_id": dev_id, "uses": 3}))
        .await;
    let mut machines = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..3 {
        let mut machine = Machine::new();
        agents.push(machine.enroll_with_token(&app.base, &token).await);
        machine.run();
        machines.push(machine);
    }
    let (team, first_rule) = staff
        .team_with_rule(&app, "pin dependencies", mode("block"))
        .await;
    let first = eventually(Duration::from_secs(30), || {
        converged(&app, admin, &team, &agents)
    })
    .await;
    assert!(first.is_some(), "every agent enforces the first revision");
    let mut latest = first;

    // Kill each gateway in turn (restarting the other first): every agent loses its gateway at least
    // once, reconnects to the other, and receives the revisions made meanwhile.
    let mut expected = Vec::new();
    for (round, dead) in [0, 1].into_iter().enumerate() {
        app.kill_extra(gateway[dead]).await;
        let rule = format!("round {round} rule");
        let rule_id = approved_rule(&app, admin, second, &rule).await;
        expected.push(rule);
        attach(&app, admin, &team, &rule_id).await;
        let before = latest;
        latest = eventually(Duration::from_secs(30), || async {
            converged(&app, admin, &team, &agents)
                .await
                .filter(|revision| Some(*revision) > before)
        })
        .await;
        assert!(
            latest.is_some(),
            "round {round}: every agent converged on the surviving gateway"
        );
        for machine in &machines {
            let text = machine.team_text();
            for rule in &expected {
                assert!(text.contains(&format!("Always {rule}.")), "{text}");
            }
        }
        gateway[dead] =
            app.spawn_extra_with("gateway", &[("EDICT_GATEWAY_LISTEN", &gateways[dead])]);
    }

    // kill -9 one agent at varied moments while new revisions arrive: each restart opens an intact
    // snapshot and the agent ends on the latest revision.
    for (round, delay_ms) in [0_u64, 30, 90, 200].into_iter().enumerate() {
        let mode = if round % 2 == 0 { "warning" } else { "block" };
        set_mode(&app, admin, &team, &first_rule, mode).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        machines[0].stop().await;
        let status = machines[0].status().await;
        assert!(
            status["rulesets"].as_array().is_some_and(|r| !r.is_empty()),
            "round {round}: the snapshot opens and holds the rule set: {status}"
        );
        machines[0].run();
    }
    // Four enforcement changes: four revisions past the last one seen.
    let target = latest.map(|revision| revision + 4);
    let latest = eventually(Duration::from_secs(30), || async {
        converged(&app, admin, &team, &agents)
            .await
            .filter(|revision| Some(*revision) >= target)
    })
    .await;
    let status = machines[0].status().await;
    if latest.is_none() {
        let convergence = app.convergence(admin, &team).await;
        panic!("not every agent ends on revision {target:?}: {convergence}\nagent 0: {status}");
    }
    let held = status["rulesets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["team"] == team.as_str())
        .cloned()
        .unwrap();
    assert_eq!(held["revision"].as_u64(), latest, "{status}");
    for machine in &mut machines {
        machine.stop().await;
    }
}

/// `edict-agent changes`: one line per change the agent keeps.
async fn kept_changes(machine: &Machine) -> String {
    let output = machine.output(&["changes"]).await;
    assert!(output.status.success(), "edict-agent changes");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The staff, and the developer's machine enrolled with a token and running.
async fn running_developer_machine(app: &TestApp) -> (Staff, Machine) {
    let staff = Staff::of(app).await;
    let (mut machine, _) = staff.machine(app, "laptop").await;
    machine.run();
    (staff, machine)
}

/// Issue 14, item 3: change request 1 rejected (reverted), a later edit of the same rule (change
/// request 2) approved, then `edict-agent sync`: the gateway sends every decision again, and the
/// rejection of change request 1 must not revert the approved text of change request 2.
#[tokio::test]
async fn a_replayed_rejection_never_reverts_a_later_approved_change() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (staff, mut machine) = running_developer_machine(&app).await;
    let admin = &staff.admin;
    let (team, rule, written) = staff
        .enforced(&app, &machine, "keep changelogs", temporary(3600))
        .await;
    assert!(
        written.contains(&format!("<!-- edict:rule id={rule} revision=1 -->")),
        "{written}"
    );
    let pending = || async {
        let opened = opened_change_request(&app, admin, &team, 20).await;
        assert_eq!(opened["rule"], json!(rule), "{opened}");
        id(&opened)
    };

    // Change request 1: rejected, so reverted.
    machine.write_team(written.replace("Always keep changelogs.", "Changelogs are optional."));
    let first = pending().await;
    decide(
        &app,
        admin,
        &first,
        "reject",
        json!({"reason": "we ship changelogs"}),
    )
    .await;
    machine
        .holding("keep changelogs", "the rejected change is reverted")
        .await;

    // Change request 2: a later edit of the same rule, approved and kept.
    machine.write_team(
        machine
            .team_text()
            .replace("Always keep changelogs.", "Keep changelogs weekly."),
    );
    let approved = pending().await;
    assert_ne!(approved, first);
    decide(&app, admin, &approved, "approve", json!({})).await;
    let kept = eventually(Duration::from_secs(20), || async {
        let changes = kept_changes(&machine).await;
        (changes.contains("Kept") && changes.contains(&approved)).then_some(changes)
    })
    .await;
    assert!(kept.is_some(), "the agent applies the approval");

    // A reconnect: every decided change request is sent again. The agent must see the old rejection
    // (it records `decision_ignored`) and leave the approved text alone.
    let sync = machine.output(&["sync", "--timeout-secs", "20"]).await;
    assert!(sync.status.success(), "edict-agent sync");
    let outcome = eventually(Duration::from_secs(20), || async {
        let text = machine.team_text();
        if !text.contains("Keep changelogs weekly.") {
            return Some(Err(text));
        }
        let status = machine.status().await;
        let ignored = status["recent_actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["what"] == "decision_ignored"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        ignored.then_some(Ok(()))
    })
    .await;
    match outcome {
        Some(Ok(())) => {}
        Some(Err(text)) => panic!("the replayed rejection reverted the approved change:\n{text}"),
        None => panic!("the agent never saw the replayed rejection"),
    }
    assert!(machine.team_text().contains("Keep changelogs weekly."));
    machine.stop().await;
}

/// Issue 14, item 5: a temporary change nobody decides is reverted by the agent itself once its timeout
/// has passed, with the server down, and the revert is reported once the agent is back.
#[tokio::test]
async fn a_temporary_change_times_out_offline_and_is_reported_when_back() {
    let mut app = TestApp::spawn(Store::Sqlite).await;
    let staff = Staff::of(&app).await;
    let admin = &staff.admin;
    let (mut machine, agent_id) = staff.machine(&app, "laptop").await;
    machine.run_with(&["--audit-interval-secs", "1"]);
    let (team, _, written) = staff
        .enforced(&app, &machine, "tag releases", temporary(8))
        .await;
    machine.write_team(written.replace("Always tag releases.", "Tag releases if you remember."));
    opened_change_request(&app, admin, &team, 20).await;

    // Server down before the timeout: no decision can come; the agent reverts on its own.
    let status = app.stop().await;
    assert!(status.success());
    let version_offline = agent_version_from_store(&app, &agent_id).await;
    let reverted = machine.team_file_when(20, |t| *t == written).await;
    assert!(
        reverted.is_some(),
        "not reverted offline after its timeout: {}",
        machine.team_text()
    );
    app.start().await;
    assert!(
        stored_version(&app, &agent_id, 30, |v| v > version_offline).await,
        "the revert is reported once the agent is back"
    );
    machine.stop().await;
}

/// Issue 14, item 4: a block rule and a warning rule in one section, each enforced by its own mode;
/// raising the warning rule to block reverts its standing edit at once.
#[tokio::test]
async fn each_rule_of_a_section_is_enforced_by_its_own_mode() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (staff, mut machine) = running_developer_machine(&app).await;
    let admin = &staff.admin;
    let (team, _) = staff
        .team_with_rule(&app, "sign commits", mode("block"))
        .await;
    let docs = approved_rule(&app, admin, &staff.second, "write docs").await;
    attach_with(&app, admin, &team, &docs, mode("warning")).await;
    let written = machine
        .team_file_when(20, |t| {
            t.contains("Always sign commits.") && t.contains("Always write docs.")
        })
        .await
        .expect("both rules written");

    // The warning rule's text edited: kept and reported, although a block rule shares the section.
    machine.write_team(written.replace("Always write docs.", "Docs are optional."));
    let reported = eventually(Duration::from_secs(20), || async {
        let status = machine.status().await;
        let actions = status["recent_actions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(100)).await;
        actions
            .iter()
            .any(|a| a["what"] == "warning_kept" || a["what"] == "block_reverted")
            .then_some(actions)
    })
    .await
    .expect("the agent acts on the edit");
    assert!(
        reported.iter().all(|a| a["what"] != "block_reverted"),
        "{reported:?}"
    );
    assert!(
        machine.team_text().contains("Docs are optional."),
        "a warning rule's edit is kept: {}",
        machine.team_text()
    );

    // The block rule's text edited: that text only is restored.
    machine.write_team(
        machine
            .team_text()
            .replace("Always sign commits.", "Sign if you like."),
    );
    let restored = machine
        .holding("sign commits", "the block rule's text is restored")
        .await;
    assert!(restored.contains("Docs are optional."), "{restored}");

    // Raised to block: the standing edit of the warning rule is reverted at once.
    set_mode(&app, admin, &team, &docs, "block").await;
    let reverted = machine
        .team_file_when(20, |t| {
            t.contains("Always write docs.") && t.contains("Always sign commits.")
        })
        .await;
    assert!(
        reverted.is_some(),
        "raising the rule to block reverts its edit: {}",
        machine.team_text()
    );
    machine.stop().await;
}

/// `edict-agent doctor --output json`: its exit success and its checks by name.
async fn doctor(machine: &Machine) -> (bool, Vec<Value>) {
    let output = machine.output(&["doctor", "--output", "json"]).await;
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], output.status.success(), "{report}");
    (
        output.status.success(),
        report["checks"].as_array().unwrap().clone(),
    )
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

#[tokio::test]
async fn doctor_passes_a_healthy_machine_and_fails_a_group_writable_file_and_an_unreachable_server()
{
    use std::os::unix::fs::PermissionsExt;
    let mut app = TestApp::spawn(Store::Sqlite).await;
    let staff = Staff::of(&app).await;
    let (mut machine, _) = staff.machine(&app, "doctor").await;
    staff
        .team_with_rule(&app, "check the machine", mode("block"))
        .await;
    machine.run();
    machine
        .holding("check the machine", "the team file is written")
        .await;

    // Healthy, while the daemon holds the snapshot: every check passes.
    let (ok, checks) = doctor(&machine).await;
    assert!(ok, "{checks:#?}");
    assert!(
        checks.iter().all(|c| c["level"] == "ok"),
        "every check ok: {checks:#?}"
    );
    for name in [
        "data dir", "login", "server", "clock", "gateway ", "org key",
    ] {
        check(&checks, name);
    }
    let team_file = format!("file {}", machine.team_file().display());
    assert!(
        check(&checks, "org key")["reason"]
            .as_str()
            .unwrap()
            .contains("which this agent trusts")
    );

    // A team file the group may write: the rules could be rewritten under the agent.
    std::fs::set_permissions(machine.team_file(), std::fs::Permissions::from_mode(0o664)).unwrap();
    let (ok, checks) = doctor(&machine).await;
    assert!(!ok, "a failed check fails doctor: {checks:#?}");
    let file = check(&checks, &team_file);
    assert_eq!(file["level"], "fail", "{file}");
    assert!(file["hint"].as_str().unwrap().contains("chmod go-w"));
    assert_eq!(check(&checks, "server")["level"], "ok");
    std::fs::set_permissions(machine.team_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(doctor(&machine).await.0, "fixed, it passes again");

    // The server stopped: neither the server nor its gateway answers.
    machine.stop().await;
    app.stop().await;
    let (ok, checks) = doctor(&machine).await;
    assert!(!ok, "{checks:#?}");
    let server = check(&checks, "server");
    assert_eq!(server["level"], "fail", "{server}");
    assert!(server["reason"].as_str().unwrap().contains("cannot reach"));
    assert_eq!(check(&checks, "gateway ")["level"], "fail");
    assert_eq!(check(&checks, &team_file)["level"], "ok");
}
