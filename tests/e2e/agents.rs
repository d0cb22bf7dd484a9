//! Rules reach machines: the real `edict serve` (with its gateway) and the real `edict-agent run`
//! processes, with a temporary HOME and organization file; `edict-agent doctor` checks such a machine.

use crate::harness::{
    Layout, Machine, Store, TestApp, approve, approved_rule, attach, attach_with, eventually,
    rule_spec, team_with_member, temporary, two_gateways,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

impl Machine {
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
                    let (status, request) = app
                        .get(&format!("/api/v1/device/requests/{code}"), approver)
                        .await;
                    assert_eq!(status, StatusCode::OK, "{request}");
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

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn wait_for_file(
    path: &Path,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<String> {
    eventually(timeout, || async {
        let text = read(path);
        pred(&text).then_some(text)
    })
    .await
}

/// An approved team rule attached to a new team whose member is `dev`; answers (team, rule).
async fn team_with_rule(
    app: &TestApp,
    admin: &str,
    second: &str,
    dev_id: &str,
    name: &str,
    enforcement: Value,
) -> (String, String) {
    let team = team_with_member(app, admin, &format!("team of {name}"), dev_id).await;
    let rule = approved_rule(app, admin, second, name).await;
    attach_with(app, admin, &team, &rule, enforcement).await;
    (team, rule)
}

/// The pending change requests of `team`.
async fn pending_change_requests(app: &TestApp, admin: &str, team: &str) -> Vec<Value> {
    let path = format!("/api/v1/change-requests?team={team}&status=pending");
    let (_, page) = app.get(&path, admin).await;
    page["items"].as_array().cloned().unwrap_or_default()
}

/// Sets the enforcement mode of `rule` on `team` to `mode`.
async fn set_mode(app: &TestApp, admin: &str, team: &str, rule: &str, mode: &str) {
    let path = format!("/api/v1/teams/{team}/rules/{rule}");
    let body = Some(json!({"mode": mode}));
    let (status, body) = app.call(Method::PATCH, &path, Some(admin), body).await;
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
    let admin = app.admin().await;
    let (_, second) = app.user(&admin, "second", &["org_admin"]).await;
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    let (_, _other_dev) = app.user(&admin, "other", &["member"]).await;
    // The developer enrolls the machine by device code, approving it themselves.
    let mut machine = Machine::new();
    let agent_id = machine.enroll_by_device(&app, &dev).await;
    machine.run();

    // The user's own text is there before Edict writes anything.
    std::fs::write(machine.team_file(), "# My notes\nkeep me\n").unwrap();

    // 1. A block rule attached to the developer's team reaches the file within 2 s (plus propagation).
    let (team, _) = team_with_rule(
        &app,
        &admin,
        &second,
        &dev_id,
        "run the tests",
        json!({"mode": "block"}),
    )
    .await;
    // A rule of a team the developer is not in never arrives.
    let other_team = app.team(&admin, "not yours").await;
    let mut secret = rule_spec("secret rule", "team");
    secret["content"] = json!("Team B only.");
    let secret = approve(&app, &admin, &second, secret).await;
    attach(&app, &admin, &other_team, &secret).await;

    let written = wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        t.contains("Always run the tests.")
    })
    .await;
    let written = written.expect("the managed section reaches the team file");
    assert!(
        written.contains("# My notes\nkeep me\n"),
        "user text kept: {written}"
    );
    assert!(
        !written.contains("Team B only"),
        "another team's rules never arrive"
    );
    // `sync` makes the running agent reconnect and reconcile, and waits until it is connected again.
    let sync = machine
        .command()
        .args(["sync", "--output", "json"])
        .stdout(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(sync.status.success(), "edict-agent sync");
    let synced: Value = serde_json::from_slice(&sync.stdout).unwrap();
    assert_eq!(synced["connected"], true, "{synced}");

    // Convergence: the server knows which revision this machine enforces.
    let converged = eventually(Duration::from_secs(10), || async {
        let view = app.convergence(&admin, &team).await;
        (view["converged"] == 1).then_some(view)
    })
    .await;
    assert!(
        converged.is_some(),
        "the agent's applied revision is recorded"
    );
    let (status, enforced) = app
        .get(&format!("/api/v1/agents/{agent_id}/enforced"), &dev)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(enforced[0]["current"], true, "{enforced}");

    // 2 + 5. Editing the managed section: restored, user text kept, reported to the server.
    let version_before = agent_version(&app, &admin, &agent_id).await;
    std::fs::write(machine.team_file(), tamper(&written, "I know better.")).unwrap();
    let restored = wait_for_file(&machine.team_file(), Duration::from_secs(5), |t| {
        t == written
    })
    .await;
    assert!(
        restored.is_some(),
        "the block section is restored exactly: {}",
        read(&machine.team_file())
    );
    let reported = eventually(Duration::from_secs(10), || async {
        (agent_version(&app, &admin, &agent_id).await > version_before).then_some(())
    })
    .await;
    assert!(
        reported.is_some(),
        "the revert is recorded as an event of the agent"
    );

    // 6. Server down: an edit is still reverted from the snapshot; the report is delivered after.
    let status = app.stop().await;
    assert!(status.success());
    let version_offline = agent_version_from_store(&app, &agent_id).await;
    std::fs::write(machine.team_file(), tamper(&written, "offline edit")).unwrap();
    let restored = wait_for_file(&machine.team_file(), Duration::from_secs(5), |t| {
        t == written
    })
    .await;
    assert!(restored.is_some(), "reverted offline from the snapshot");
    app.start().await;
    let delivered = eventually(Duration::from_secs(30), || async {
        (agent_version_from_store(&app, &agent_id).await == version_offline + 1).then_some(())
    })
    .await;
    assert!(
        delivered.is_some(),
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
    std::fs::write(machine.team_file(), tamper(&written, "online edit")).unwrap();
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
    let admin = app.admin().await;
    let (_, second) = app.user(&admin, "second", &["org_admin"]).await;
    let (dev_id, _) = app.user(&admin, "dev", &["member"]).await;
    // An unattended install: an org_admin's enrollment token for the developer.
    let body = json!({"user_id": dev_id, "note": "laptop image"});
    let (mut machine, agent_id) = Machine::enrolled(&app, &admin, body).await;
    machine.run();

    // 4. Warning: the edit is kept (and reported).
    let (_, _) = team_with_rule(
        &app,
        &admin,
        &second,
        &dev_id,
        "write docs",
        json!({"mode": "warning"}),
    )
    .await;
    let written = wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        t.contains("Always write docs.")
    })
    .await;
    let written = written.expect("warning section written");
    let edited = tamper(&written, "docs are optional");
    let version_before = agent_version(&app, &admin, &agent_id).await;
    std::fs::write(machine.team_file(), &edited).unwrap();
    // The agent handled the edit once its warning report is recorded as an event of the agent.
    let reported = eventually(Duration::from_secs(15), || async {
        (agent_version(&app, &admin, &agent_id).await > version_before).then_some(())
    })
    .await;
    assert!(
        reported.is_some(),
        "the warning-mode edit is reported to the server"
    );
    assert_eq!(
        read(&machine.team_file()),
        edited,
        "a warning-mode edit is kept"
    );

    // 3. Temporary: an edit opens a change request; rejected → reverted; approved → kept.
    let (team, _) = team_with_rule(
        &app,
        &admin,
        &second,
        &dev_id,
        "review diffs",
        temporary(3600),
    )
    .await;
    let written = wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        t.contains("Always review diffs.")
    })
    .await;
    let written = written.expect("temporary section written");
    let pending = |nth: usize| {
        let app = &app;
        let admin = &admin;
        let team = team.clone();
        async move {
            eventually(Duration::from_secs(15), || async {
                let items = pending_change_requests(app, admin, &team).await;
                (items.len() == nth).then(|| items[0]["id"].as_str().unwrap_or_default().to_owned())
            })
            .await
            .expect("the change opens a change request")
        }
    };
    let edited = tamper(&written, "review diffs, sometimes");
    std::fs::write(machine.team_file(), &edited).unwrap();
    let cr = pending(1).await;
    assert_eq!(
        read(&machine.team_file()),
        edited,
        "a temporary change stands while undecided"
    );
    app.ok(
        &format!("/api/v1/change-requests/{cr}/reject"),
        &admin,
        json!({"reason": "keep reviewing"}),
    )
    .await;
    let reverted = wait_for_file(&machine.team_file(), Duration::from_secs(15), |t| {
        !t.contains("sometimes") && t.contains("Always review diffs.")
    })
    .await;
    assert!(
        reverted.is_some(),
        "a rejected change is reverted: {}",
        read(&machine.team_file())
    );
    // The developer appeals from the machine: an exception is requested on that change request.
    let appeal = machine
        .command()
        .args(["appeal", &cr, "--reason", "we review in pairs instead"])
        .output()
        .await
        .unwrap();
    assert!(appeal.status.success(), "edict-agent appeal");
    let (_, change) = app
        .get(&format!("/api/v1/change-requests/{cr}"), &admin)
        .await;
    assert_eq!(change["status"], "exception_requested", "{change}");

    let edited = tamper(&read(&machine.team_file()), "review diffs after lunch");
    std::fs::write(machine.team_file(), &edited).unwrap();
    let cr = pending(1).await;
    app.ok(
        &format!("/api/v1/change-requests/{cr}/approve"),
        &admin,
        json!({}),
    )
    .await;
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
        read(&machine.team_file()).contains("after lunch"),
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
    let layout = Layout {
        roles: Some("api,relay,projector".into()),
        ..Layout::distributed()
    };
    let mut app = TestApp::spawn_with_env(
        Store::Postgres,
        layout,
        vec![("EDICT_GATEWAY_PUBLIC_URLS".into(), urls)],
    )
    .await;
    let mut gateway = [
        app.spawn_extra_with("gateway", &[("EDICT_GATEWAY_LISTEN", &gateways[0])]),
        app.spawn_extra_with("gateway", &[("EDICT_GATEWAY_LISTEN", &gateways[1])]),
    ];
    let admin = app.admin().await;
    let (_, second) = app.user(&admin, "second", &["org_admin"]).await;
    let (dev_id, _) = app.user(&admin, "dev", &["member"]).await;
    let token = app
        .enrollment_token(&admin, json!({"user_id": dev_id, "uses": 3}))
        .await;
    let mut machines = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..3 {
        let mut machine = Machine::new();
        agents.push(machine.enroll_with_token(&app.base, &token).await);
        machine.run();
        machines.push(machine);
    }
    let (team, first_rule) = team_with_rule(
        &app,
        &admin,
        &second,
        &dev_id,
        "pin dependencies",
        json!({"mode": "block"}),
    )
    .await;
    let first = eventually(Duration::from_secs(30), || {
        converged(&app, &admin, &team, &agents)
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
        let rule_id = approved_rule(&app, &admin, &second, &rule).await;
        expected.push(rule);
        attach(&app, &admin, &team, &rule_id).await;
        let before = latest;
        latest = eventually(Duration::from_secs(30), || async {
            converged(&app, &admin, &team, &agents)
                .await
                .filter(|revision| Some(*revision) > before)
        })
        .await;
        assert!(
            latest.is_some(),
            "round {round}: every agent converged on the surviving gateway"
        );
        for machine in &machines {
            let text = read(&machine.team_file());
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
        set_mode(&app, &admin, &team, &first_rule, mode).await;
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
        converged(&app, &admin, &team, &agents)
            .await
            .filter(|revision| Some(*revision) >= target)
    })
    .await;
    let status = machines[0].status().await;
    if latest.is_none() {
        let convergence = app.convergence(&admin, &team).await;
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
    let output = machine
        .command()
        .arg("changes")
        .stdout(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "edict-agent changes");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Two org_admins (the admin and `second`), a developer, and the developer's machine enrolled with a
/// token and running: answers `(admin, second, developer id, machine)`.
async fn running_developer_machine(app: &TestApp) -> (String, String, String, Machine) {
    let admin = app.admin().await;
    let (_, second) = app.user(&admin, "second", &["org_admin"]).await;
    let (dev_id, _) = app.user(&admin, "dev", &["member"]).await;
    let body = json!({"user_id": dev_id, "note": "laptop"});
    let (mut machine, _) = Machine::enrolled(app, &admin, body).await;
    machine.run();
    (admin, second, dev_id, machine)
}

/// Issue 14, item 3: change request 1 rejected (reverted), a later edit of the same rule (change
/// request 2) approved, then `edict-agent sync`: the gateway sends every decision again, and the
/// rejection of change request 1 must not revert the approved text of change request 2.
#[tokio::test]
async fn a_replayed_rejection_never_reverts_a_later_approved_change() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (admin, second, dev_id, mut machine) = running_developer_machine(&app).await;
    let (team, rule) = team_with_rule(
        &app,
        &admin,
        &second,
        &dev_id,
        "keep changelogs",
        temporary(3600),
    )
    .await;
    let written = wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        t.contains("Always keep changelogs.")
    })
    .await
    .expect("temporary section written");
    assert!(
        written.contains(&format!("<!-- edict:rule id={rule} revision=1 -->")),
        "{written}"
    );
    let pending = || async {
        eventually(Duration::from_secs(20), || async {
            let items = pending_change_requests(&app, &admin, &team).await;
            (items.len() == 1).then(|| {
                assert_eq!(items[0]["rule"], json!(rule), "{}", items[0]);
                items[0]["id"].as_str().unwrap_or_default().to_owned()
            })
        })
        .await
        .expect("the change opens a change request")
    };

    // Change request 1: rejected, so reverted.
    std::fs::write(
        machine.team_file(),
        written.replace("Always keep changelogs.", "Changelogs are optional."),
    )
    .unwrap();
    let first = pending().await;
    app.ok(
        &format!("/api/v1/change-requests/{first}/reject"),
        &admin,
        json!({"reason": "we ship changelogs"}),
    )
    .await;
    wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        t.contains("Always keep changelogs.")
    })
    .await
    .expect("the rejected change is reverted");

    // Change request 2: a later edit of the same rule, approved and kept.
    std::fs::write(
        machine.team_file(),
        read(&machine.team_file()).replace("Always keep changelogs.", "Keep changelogs weekly."),
    )
    .unwrap();
    let approved = pending().await;
    assert_ne!(approved, first);
    app.ok(
        &format!("/api/v1/change-requests/{approved}/approve"),
        &admin,
        json!({}),
    )
    .await;
    let kept = eventually(Duration::from_secs(20), || async {
        let changes = kept_changes(&machine).await;
        (changes.contains("Kept") && changes.contains(&approved)).then_some(changes)
    })
    .await;
    assert!(kept.is_some(), "the agent applies the approval");

    // A reconnect: every decided change request is sent again. The agent must see the old rejection
    // (it records `decision_ignored`) and leave the approved text alone.
    let sync = machine
        .command()
        .args(["sync", "--timeout-secs", "20"])
        .output()
        .await
        .unwrap();
    assert!(sync.status.success(), "edict-agent sync");
    let outcome = eventually(Duration::from_secs(20), || async {
        let text = read(&machine.team_file());
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
    assert!(read(&machine.team_file()).contains("Keep changelogs weekly."));
    machine.stop().await;
}

/// Issue 14, item 5: a temporary change nobody decides is reverted by the agent itself once its timeout
/// has passed, with the server down, and the revert is reported once the agent is back.
#[tokio::test]
async fn a_temporary_change_times_out_offline_and_is_reported_when_back() {
    let mut app = TestApp::spawn(Store::Sqlite).await;
    let admin = app.admin().await;
    let (_, second) = app.user(&admin, "second", &["org_admin"]).await;
    let (dev_id, _) = app.user(&admin, "dev", &["member"]).await;
    let body = json!({"user_id": dev_id, "note": "laptop"});
    let (mut machine, agent_id) = Machine::enrolled(&app, &admin, body).await;
    machine.daemon = Some(
        machine
            .command()
            .args(["run", "--audit-interval-secs", "1"])
            .spawn()
            .unwrap(),
    );
    let (team, _) =
        team_with_rule(&app, &admin, &second, &dev_id, "tag releases", temporary(8)).await;
    let written = wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        t.contains("Always tag releases.")
    })
    .await
    .expect("temporary section written");
    std::fs::write(
        machine.team_file(),
        written.replace("Always tag releases.", "Tag releases if you remember."),
    )
    .unwrap();
    let opened = eventually(Duration::from_secs(20), || async {
        let items = pending_change_requests(&app, &admin, &team).await;
        (items.len() == 1).then_some(())
    })
    .await;
    assert!(opened.is_some(), "the change opens a change request");

    // Server down before the timeout: no decision can come; the agent reverts on its own.
    let status = app.stop().await;
    assert!(status.success());
    let version_offline = agent_version_from_store(&app, &agent_id).await;
    let reverted = wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        *t == written
    })
    .await;
    assert!(
        reverted.is_some(),
        "not reverted offline after its timeout: {}",
        read(&machine.team_file())
    );
    app.start().await;
    let reported = eventually(Duration::from_secs(30), || async {
        (agent_version_from_store(&app, &agent_id).await > version_offline).then_some(())
    })
    .await;
    assert!(
        reported.is_some(),
        "the revert is reported once the agent is back"
    );
    machine.stop().await;
}

/// Issue 14, item 4: a block rule and a warning rule in one section, each enforced by its own mode;
/// raising the warning rule to block reverts its standing edit at once.
#[tokio::test]
async fn each_rule_of_a_section_is_enforced_by_its_own_mode() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (admin, second, dev_id, mut machine) = running_developer_machine(&app).await;
    let (team, _) = team_with_rule(
        &app,
        &admin,
        &second,
        &dev_id,
        "sign commits",
        json!({"mode": "block"}),
    )
    .await;
    let docs = approved_rule(&app, &admin, &second, "write docs").await;
    attach_with(&app, &admin, &team, &docs, json!({"mode": "warning"})).await;
    let written = wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        t.contains("Always sign commits.") && t.contains("Always write docs.")
    })
    .await
    .expect("both rules written");

    // The warning rule's text edited: kept and reported, although a block rule shares the section.
    std::fs::write(
        machine.team_file(),
        written.replace("Always write docs.", "Docs are optional."),
    )
    .unwrap();
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
        read(&machine.team_file()).contains("Docs are optional."),
        "a warning rule's edit is kept: {}",
        read(&machine.team_file())
    );

    // The block rule's text edited: that text only is restored.
    std::fs::write(
        machine.team_file(),
        read(&machine.team_file()).replace("Always sign commits.", "Sign if you like."),
    )
    .unwrap();
    let restored = wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        t.contains("Always sign commits.")
    })
    .await
    .expect("the block rule's text is restored");
    assert!(restored.contains("Docs are optional."), "{restored}");

    // Raised to block: the standing edit of the warning rule is reverted at once.
    set_mode(&app, &admin, &team, &docs, "block").await;
    let reverted = wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        t.contains("Always write docs.") && t.contains("Always sign commits.")
    })
    .await;
    assert!(
        reverted.is_some(),
        "raising the rule to block reverts its edit: {}",
        read(&machine.team_file())
    );
    machine.stop().await;
}

/// `edict-agent doctor --output json`: its exit success and its checks by name.
async fn doctor(machine: &Machine) -> (bool, Vec<Value>) {
    let output = machine
        .command()
        .args(["doctor", "--output", "json"])
        .stdout(Stdio::piped())
        .output()
        .await
        .unwrap();
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
    let admin = app.admin().await;
    let (_, second) = app.user(&admin, "second", &["org_admin"]).await;
    let (dev_id, _) = app.user(&admin, "dev", &["member"]).await;
    let body = json!({"user_id": dev_id, "note": "doctor"});
    let (mut machine, _) = Machine::enrolled(&app, &admin, body).await;
    team_with_rule(
        &app,
        &admin,
        &second,
        &dev_id,
        "check the machine",
        json!({"mode": "block"}),
    )
    .await;
    machine.run();
    wait_for_file(&machine.team_file(), Duration::from_secs(20), |t| {
        t.contains("Always check the machine.")
    })
    .await
    .expect("the team file is written");

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
