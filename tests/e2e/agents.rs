//! Rules reach machines: the real `edict serve` (with its gateway) and the real `edict-agent run`
//! processes, with a temporary HOME and organization file.

use crate::harness::{Store, TestApp, eventually, rule_spec};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The `edict-agent` binary, built beside `edict` by a workspace build.
fn agent_binary() -> PathBuf {
    let edict = PathBuf::from(env!("CARGO_BIN_EXE_edict"));
    let agent = edict.with_file_name("edict-agent");
    assert!(
        agent.exists(),
        "{} is missing: build the workspace (`cargo build --workspace`, as scripts/test does)",
        agent.display()
    );
    agent
}

/// One machine: a temporary HOME, organization file and data directory, and its daemon.
struct Machine {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
}

impl Machine {
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn team_file(&self) -> PathBuf {
        self.home().join(".claude").join("CLAUDE.md")
    }

    fn command(&self) -> Command {
        let mut command = Command::new(agent_binary());
        command
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--home")
            .arg(self.home())
            .arg("--org-file")
            .arg(self.dir.path().join("etc").join("CLAUDE.md"))
            .env("EDICT_AGENT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command
    }

    /// Enrolls with `token` against the gateway `server` and starts `edict-agent run`.
    async fn start(server: &str, token: &str) -> Machine {
        let machine = Machine {
            dir: tempfile::tempdir().unwrap(),
            daemon: None,
        };
        std::fs::create_dir_all(machine.home().join(".claude")).unwrap();
        let status = machine
            .command()
            .args(["login", "--server", server, "--enrollment-token", token])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "edict-agent login");
        let mut machine = machine;
        machine.run();
        machine
    }

    fn run(&mut self) {
        self.daemon = Some(self.command().arg("run").spawn().unwrap());
    }

    async fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.start_kill().unwrap();
            daemon.wait().await.unwrap();
        }
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
    let team = app
        .ok(
            "/api/v1/teams",
            admin,
            json!({"name": format!("team of {name}")}),
        )
        .await;
    let team = team["id"].as_str().unwrap().to_owned();
    app.ok(
        &format!("/api/v1/teams/{team}/members"),
        admin,
        json!({"user_id": dev_id, "role": "member"}),
    )
    .await;
    let mut spec = rule_spec(name, "team");
    spec["content"] = json!(format!("Always {name}."));
    let rule = app.ok("/api/v1/rules", admin, spec).await;
    let rule = rule["id"].as_str().unwrap().to_owned();
    app.ok(&format!("/api/v1/rules/{rule}/submit"), admin, json!({}))
        .await;
    app.ok(&format!("/api/v1/rules/{rule}/approve"), second, json!({}))
        .await;
    app.ok(
        &format!("/api/v1/teams/{team}/rules"),
        admin,
        json!({"rule_id": rule, "enforcement": enforcement}),
    )
    .await;
    (team, rule)
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
    let enrolled = app
        .ok(
            "/api/v1/agents",
            &dev,
            json!({"machine_id": "laptop", "machine_name": "Laptop"}),
        )
        .await;
    let agent_id = enrolled["id"].as_str().unwrap().to_owned();
    let token = enrolled["token"].as_str().unwrap().to_owned();

    // The user's own text is there before Edict writes anything.
    let mut machine = Machine::start(&app.gateway, &token).await;
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
    let other_team = app
        .ok("/api/v1/teams", &admin, json!({"name": "not yours"}))
        .await;
    let other_team = other_team["id"].as_str().unwrap().to_owned();
    let mut secret = rule_spec("secret rule", "team");
    secret["content"] = json!("Team B only.");
    let secret = app.ok("/api/v1/rules", &admin, secret).await;
    let secret = secret["id"].as_str().unwrap().to_owned();
    app.ok(&format!("/api/v1/rules/{secret}/submit"), &admin, json!({}))
        .await;
    app.ok(
        &format!("/api/v1/rules/{secret}/approve"),
        &second,
        json!({}),
    )
    .await;
    app.ok(
        &format!("/api/v1/teams/{other_team}/rules"),
        &admin,
        json!({"rule_id": secret, "enforcement": {"mode": "block"}}),
    )
    .await;

    let written = wait_for_file(&machine.team_file(), Duration::from_secs(10), |t| {
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

    // Convergence: the server knows which revision this machine enforces.
    let converged = eventually(Duration::from_secs(10), || async {
        let (_, view) = app
            .call(
                Method::GET,
                &format!("/api/v1/teams/{team}/convergence"),
                Some(&admin),
                None,
            )
            .await;
        (view["converged"] == 1).then_some(view)
    })
    .await;
    assert!(
        converged.is_some(),
        "the agent's applied revision is recorded"
    );
    let (status, enforced) = app
        .call(
            Method::GET,
            &format!("/api/v1/agents/{agent_id}/enforced"),
            Some(&dev),
            None,
        )
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        agent_version_from_store(&app, &agent_id).await,
        version_offline + 1,
        "exactly once"
    );
    machine.stop().await;
}

async fn agent_version(app: &TestApp, admin: &str, agent: &str) -> u64 {
    let (_, view) = app
        .call(
            Method::GET,
            &format!("/api/v1/agents/{agent}"),
            Some(admin),
            None,
        )
        .await;
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
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    let enrolled = app
        .ok(
            "/api/v1/agents",
            &dev,
            json!({"machine_id": "laptop", "machine_name": "Laptop"}),
        )
        .await;
    let token = enrolled["token"].as_str().unwrap().to_owned();
    let mut machine = Machine::start(&app.gateway, &token).await;

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
    let written = wait_for_file(&machine.team_file(), Duration::from_secs(10), |t| {
        t.contains("Always write docs.")
    })
    .await;
    let written = written.expect("warning section written");
    let edited = tamper(&written, "docs are optional");
    std::fs::write(machine.team_file(), &edited).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
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
        json!({"mode": "temporary", "temporary_timeout_secs": 3600}),
    )
    .await;
    let written = wait_for_file(&machine.team_file(), Duration::from_secs(10), |t| {
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
                let (_, page) = app
                    .call(
                        Method::GET,
                        &format!("/api/v1/change-requests?team={team}&status=pending"),
                        Some(admin),
                        None,
                    )
                    .await;
                let items = page["items"].as_array().cloned().unwrap_or_default();
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

    let edited = tamper(&read(&machine.team_file()), "review diffs after lunch");
    std::fs::write(machine.team_file(), &edited).unwrap();
    let cr = pending(1).await;
    app.ok(
        &format!("/api/v1/change-requests/{cr}/approve"),
        &admin,
        json!({}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        read(&machine.team_file()).contains("after lunch"),
        "an approved change is kept"
    );
    machine.stop().await;
}
