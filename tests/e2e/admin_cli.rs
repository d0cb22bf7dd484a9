//! The admin CLI against a real server: the real `edict` binary drives a rule's whole life with
//! `--output json` (sign in, draft, submit, approval by a second admin, a team, the attachment, the
//! team's rule set), and its exit statuses say what went wrong (4 not found, 5 conflict, 6 refused by
//! a rule, 3 signed out); `completions` prints a script.

use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Store, TestApp};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// What one run of `edict` did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The JSON it printed, asserting it succeeded.
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `edict args…` with the credentials in `config`, feeding `stdin`; only the variables given
/// here reach it (no EDICT_SERVER or EDICT_TOKEN from the test's environment).
async fn edict(config: &Path, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edict"))
        .args(args)
        .env_clear()
        .env("EDICT_CONFIG_DIR", config)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run edict");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("edict ends within 30 s")
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Signs in as `email` with the password on standard input.
async fn login(app: &TestApp, config: &Path, email: &str, password: &str) -> Value {
    let run = edict(
        config,
        &[
            "login",
            "--server",
            &app.base,
            "--email",
            email,
            "--password-stdin",
            "--output",
            "json",
        ],
        &format!("{password}\n"),
    )
    .await;
    run.json()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_cli_drives_a_rules_life_and_its_exit_codes_say_what_went_wrong() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let home = tempfile::tempdir().unwrap();
    let author = home.path().join("author");
    let reviewer = home.path().join("reviewer");

    // Signed in: the session is kept for the user only.
    let session = login(&app, &author, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let credentials = author.join("credentials.json");
    assert_eq!(session["email"], ADMIN_EMAIL);
    assert_eq!(mode(&credentials), 0o600);
    assert_eq!(mode(&author), 0o700);
    let stored: Value = serde_json::from_slice(&std::fs::read(&credentials).unwrap()).unwrap();
    assert!(
        stored["refresh_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    // A second org_admin, created through the CLI, signs in on their own.
    let created = edict(
        &author,
        &[
            "users",
            "create",
            "--email",
            "reviewer@example.com",
            "--name",
            "Reviewer",
            "--role",
            "org_admin",
            "--password-stdin",
            "--output",
            "json",
        ],
        "reviewer-password-123\n",
    )
    .await
    .json();
    assert!(created["id"].is_string(), "{created}");
    login(
        &app,
        &reviewer,
        "reviewer@example.com",
        "reviewer-password-123",
    )
    .await;

    // Draft (the content from standard input), submit, approve by the other admin.
    let rule = edict(
        &author,
        &[
            "rules",
            "create",
            "--name",
            "Run the tests",
            "--layer",
            "team",
            "--content-file",
            "-",
            "--tag",
            "testing",
            "--output",
            "json",
        ],
        "- Run the tests before every push.\n",
    )
    .await
    .json();
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    edict(
        &author,
        &["rules", "submit", &rule_id, "--output", "json"],
        "",
    )
    .await
    .json();
    edict(
        &reviewer,
        &["rules", "approve", &rule_id, "--output", "json"],
        "",
    )
    .await
    .json();
    let shown = edict(
        &author,
        &["rules", "show", &rule_id, "--output", "json"],
        "",
    )
    .await
    .json();
    assert_eq!(shown["status"], "approved", "{shown}");

    // A team with the rule attached: its rule set carries the rule's text.
    let team = edict(
        &author,
        &["teams", "create", "--name", "Platform", "--output", "json"],
        "",
    )
    .await
    .json();
    let team_id = team["id"].as_str().unwrap().to_owned();
    edict(
        &author,
        &[
            "teams",
            "attach-rule",
            &team_id,
            "--rule",
            &rule_id,
            "--mode",
            "block",
            "--output",
            "json",
        ],
        "",
    )
    .await
    .json();
    // The read waits for the attachment (the session's last position), no retry needed.
    let ruleset = edict(
        &author,
        &["teams", "ruleset", &team_id, "--output", "json"],
        "",
    )
    .await
    .json();
    assert_eq!(ruleset["team_id"], team_id.as_str());
    assert!(
        ruleset["layers"]["team"]["text"]
            .as_str()
            .is_some_and(|text| text.contains("Run the tests before every push.")),
        "{ruleset}"
    );
    assert!(ruleset["layers"]["team"].to_string().contains(&rule_id));

    // 4: no such rule.
    let missing = edict(
        &author,
        &["rules", "show", &uuid::Uuid::new_v4().to_string()],
        "",
    )
    .await;
    assert_eq!(missing.code, 4, "stderr: {}", missing.stderr);
    assert!(missing.stderr.contains("Not Found"), "{}", missing.stderr);

    // 5: an update sent for a version the draft has left.
    let draft = edict(
        &author,
        &[
            "rules",
            "create",
            "--name",
            "Draft",
            "--layer",
            "team",
            "--content",
            "- one",
            "--output",
            "json",
        ],
        "",
    )
    .await
    .json();
    let draft_id = draft["id"].as_str().unwrap().to_owned();
    let version = draft["version"].to_string();
    let update = |content: &'static str| {
        let (author, draft_id, version) = (author.clone(), draft_id.clone(), version.clone());
        async move {
            edict(
                &author,
                &[
                    "rules",
                    "update",
                    &draft_id,
                    "--name",
                    "Draft",
                    "--layer",
                    "team",
                    "--content",
                    content,
                    "--if-match",
                    &version,
                    "--output",
                    "json",
                ],
                "",
            )
            .await
        }
    };
    update("- two").await.json();
    let conflict = update("- three").await;
    assert_eq!(conflict.code, 5, "stderr: {}", conflict.stderr);

    // 6: the author approving their own revision is refused by a rule.
    edict(&author, &["rules", "submit", &draft_id], "").await;
    let own = edict(&author, &["rules", "approve", &draft_id], "").await;
    assert_eq!(own.code, 6, "stderr: {}", own.stderr);
    assert!(own.stderr.contains("self_approval"), "{}", own.stderr);

    // 3: signed out, the file is gone and commands say so.
    let out = edict(&author, &["logout", "--output", "json"], "")
        .await
        .json();
    assert_eq!(out["session_was_active"], true);
    assert!(!credentials.exists());
    let signed_out = edict(&author, &["rules", "list"], "").await;
    assert_eq!(signed_out.code, 3, "stderr: {}", signed_out.stderr);

    // Completions: a bash script that completes the admin commands.
    let script = edict(&author, &["completions", "bash"], "").await;
    assert_eq!(script.code, 0, "stderr: {}", script.stderr);
    assert!(
        script.stdout.contains("complete -F _edict"),
        "{}",
        script.stdout
    );
    assert!(script.stdout.contains("attach-rule"));
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_and_the_new_pair_stored() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let home = tempfile::tempdir().unwrap();
    login(&app, home.path(), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let path = home.path().join("credentials.json");
    let mut stored: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let old_refresh = stored["refresh_token"].clone();
    stored["expires_at"] = 0.into();
    std::fs::write(&path, serde_json::to_vec(&stored).unwrap()).unwrap();

    let me = edict(home.path(), &["users", "me", "--output", "json"], "")
        .await
        .json();
    assert_eq!(me["email"], ADMIN_EMAIL);
    let stored: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_ne!(
        stored["refresh_token"], old_refresh,
        "the pair was not renewed"
    );
    assert_eq!(mode(&path), 0o600);

    // A token the API refuses (401) is refreshed too, and the call made again.
    let mut stored = stored;
    stored["access_token"] = "not-a-token".into();
    std::fs::write(&path, serde_json::to_vec(&stored).unwrap()).unwrap();
    let me = edict(home.path(), &["users", "me", "--output", "json"], "")
        .await
        .json();
    assert_eq!(me["email"], ADMIN_EMAIL);

    // EDICT_TOKEN for scripts: a refused token is exit 3, never refreshed.
    let run = Command::new(env!("CARGO_BIN_EXE_edict"))
        .args(["users", "me"])
        .env_clear()
        .env("EDICT_CONFIG_DIR", home.path())
        .env("EDICT_SERVER", &app.base)
        .env("EDICT_TOKEN", "not-a-token")
        .output()
        .await
        .unwrap();
    assert_eq!(run.status.code(), Some(3));
}
