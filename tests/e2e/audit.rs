//! Tamper evidence end to end: an `audit` process chains the log and signs checkpoints; `edict audit
//! verify` (the real binary) proves a clean history, and names the event or checkpoint someone edited,
//! deleted or forged directly in the database; an export verifies offline and its edits are named.

use crate::harness::{Layout, Signal, Store, TestApp, assert_ran, eventually, rule_spec, signal};
use crate::on_both_stores;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The seed the audit process signs with (tests pin its public key when verifying).
const SEED: &str = "0707070707070707070707070707070707070707070707070707070707070707";

/// A deployment whose chain writer runs in its own process with small checkpoint intervals.
struct Audited {
    app: TestApp,
    writer: Child,
    admin: String,
}

impl Audited {
    async fn start(store: Store) -> Audited {
        Audited::start_with(store, "4", "1").await
    }

    /// [`Audited::start`] with a checkpoint due every `every` events or `secs` seconds.
    async fn start_with(store: Store, every: &str, secs: &str) -> Audited {
        let app = TestApp::spawn_with(
            store,
            Layout {
                roles: Some("api,projector,gateway".into()),
                ..Layout::default()
            },
        )
        .await;
        let writer = app
            .command(Some("audit"), 0)
            .env("EDICT_AUDIT_SIGNING_KEY", SEED)
            .env("EDICT_AUDIT_CHECKPOINT_EVERY", every)
            .env("EDICT_AUDIT_CHECKPOINT_SECS", secs)
            .spawn()
            .expect("spawn the audit role");
        let admin = app.admin().await;
        Audited { app, writer, admin }
    }

    /// A deployment as [`Audited::start`] makes, its history chained and checkpointed and the writer
    /// stopped: answers it and the export.
    async fn settled_history(store: Store) -> (Audited, Vec<Value>) {
        let mut audited = Audited::start(store).await;
        audited.history().await;
        let export = audited.settled().await;
        (audited, export)
    }

    /// Makes some history: teams and a rule.
    async fn history(&self) {
        for name in ["Platform", "Mobile", "Data"] {
            self.app
                .ok("/api/v1/teams", &self.admin, json!({"name": name}))
                .await;
        }
        let rule = self
            .app
            .ok("/api/v1/rules", &self.admin, rule_spec("chained", "team"))
            .await;
        let id = rule["id"].as_str().unwrap();
        self.app
            .ok(
                &format!("/api/v1/rules/{id}/submit"),
                &self.admin,
                json!({}),
            )
            .await;
    }

    /// The exported log, one JSON value per event.
    async fn export(&self) -> Vec<Value> {
        let response = self
            .app
            .send(
                Method::GET,
                "/api/v1/events/export",
                Some(&self.admin),
                None,
                &[],
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "application/x-ndjson"
        );
        let text = response.text().await.unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Waits until every event is chained and covered by a checkpoint, then stops the writer so the
    /// chain stays as it is. Answers the export.
    async fn settled(&mut self) -> Vec<Value> {
        let settled = eventually(Duration::from_secs(30), || async {
            let export = self.export().await;
            // The last event the test wrote is in the log: everything before it is too (commit order),
            // whatever transaction elsewhere on the shared server held the read horizon back.
            let complete = export.iter().any(|e| e["event_type"] == "RuleSubmitted");
            let all_hashed = complete && export.iter().all(|e| e["hash"].is_string());
            let (_, page) = self
                .app
                .get("/api/v1/audit/checkpoints?limit=500", &self.admin)
                .await;
            let last = page["items"].as_array()?.last()?["chain_index"].as_i64()?;
            (all_hashed && last == export.len() as i64).then_some(export)
        })
        .await
        .expect("the chain and a checkpoint cover every event");
        self.writer.start_kill().unwrap();
        self.writer.wait().await.unwrap();
        settled
    }

    /// `edict audit verify ARGS --output json` on this deployment's store: (success, report, stderr).
    async fn verify(&self, args: &[&str]) -> (bool, Value, String) {
        outcome(
            &self
                .run_verify(&[&["--output", "json"], args].concat())
                .await,
        )
    }

    /// `edict audit verify ARGS` on this deployment's store.
    async fn run_verify(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_edict"))
            .args(["audit", "verify"])
            .args(args)
            .env("EDICT_DATABASE_URL", &self.app.database_url)
            .env("EDICT_AUDIT_SIGNING_KEY", SEED)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run edict audit verify")
    }

    /// `verify` with no arguments, failing on a break of `kind`: answers the report and stderr.
    async fn broken(&self, kind: &str) -> (Value, String) {
        let (ok, report, stderr) = self.verify(&[]).await;
        assert!(!ok, "{report}");
        assert_eq!(report["broken"]["kind"], kind, "{report}");
        (report, stderr)
    }

    async fn sql(&self, statement: &str) {
        let pool = sqlx::PgPool::connect(&self.app.database_url).await.unwrap();
        let done = sqlx::query(statement).execute(&pool).await.unwrap();
        assert!(done.rows_affected() >= 1, "{statement} changed nothing");
        pool.close().await;
    }
}

/// An `edict audit verify --output json`'s (success, report, stderr).
fn outcome(output: &std::process::Output) -> (bool, Value, String) {
    (
        output.status.success(),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The position of the first event of `event_type` in an export.
fn position_of(export: &[Value], event_type: &str) -> i64 {
    export
        .iter()
        .find(|e| e["event_type"] == event_type)
        .and_then(|e| e["global_position"].as_i64())
        .expect("an event of that type")
}

async fn a_clean_history_verifies(store: Store) {
    let (audited, export) = Audited::settled_history(store).await;

    let (ok, report, stderr) = audited.verify(&[]).await;
    assert!(ok, "{report} {stderr}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["events_verified"], export.len() as u64);
    assert!(
        report["checkpoints_verified"].as_u64().unwrap() >= 2,
        "{report}"
    );
    assert_eq!(report["unsigned_events"], 0);
    assert_eq!(report["trusted_key_source"], "EDICT_AUDIT_SIGNING_KEY");
    assert_eq!(report["last_hash"], export.last().unwrap()["hash"]);

    // Starting part-way recomputes only the rest.
    let (ok, report, _) = audited.verify(&["--from", "3"]).await;
    assert!(ok, "{report}");
    assert_eq!(report["events_verified"], export.len() as u64 - 2);

    // Checkpoints signed by another key than the one pinned are refused.
    let other = "1".repeat(64);
    let (ok, report, stderr) = audited.verify(&["--public-key", &other]).await;
    assert!(!ok);
    assert_eq!(report["broken"]["kind"], "invalid_signature", "{report}");
    assert!(stderr.contains("not by the trusted key"), "{stderr}");
}

on_both_stores!(a_clean_history_verifies);

#[tokio::test]
async fn an_edited_payload_is_named() {
    let (audited, export) = Audited::settled_history(Store::Postgres).await;
    let position = position_of(&export, "TeamCreated");
    audited
        .sql(&format!(
            "UPDATE events SET payload = replace(payload::text, 'Platform', 'Forged')::json \
             WHERE global_position = {position}"
        ))
        .await;

    let (report, stderr) = audited.broken("content_changed").await;
    assert_eq!(report["broken"]["global_position"], position);
    assert!(
        stderr.contains(&format!("event at position {position} (Team "))
            && stderr.contains("its content changed since it was chained"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_deleted_event_is_named() {
    let (audited, export) = Audited::settled_history(Store::Postgres).await;
    let position = position_of(&export, "RuleSubmitted");
    let delete = format!("DELETE FROM events WHERE global_position = {position}");
    audited.sql(&delete).await;

    let (_, stderr) = audited.broken("missing_event").await;
    assert!(
        stderr.contains(&format!(
            "event at position {position} is missing: the chain recorded it"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_tampered_checkpoint_signature_is_named() {
    let (audited, _) = Audited::settled_history(Store::Postgres).await;
    audited
        .sql(
            "UPDATE audit_checkpoints \
             SET signature = translate(signature, '0123456789abcdef', '123456789abcdef0') \
             WHERE number = 2",
        )
        .await;

    let (report, stderr) = audited.broken("invalid_signature").await;
    assert_eq!(report["broken"]["checkpoint"], 2);
    assert!(
        stderr.contains("checkpoint 2 has an invalid signature"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_truncated_tail_is_caught_by_its_checkpoint() {
    let (audited, export) = Audited::settled_history(Store::Postgres).await;
    let last = export.last().unwrap();
    // Remove the last event and its chain row together: the chain is consistent, the checkpoint is not.
    audited
        .sql(&format!(
            "DELETE FROM events WHERE global_position = {}",
            last["global_position"]
        ))
        .await;
    audited
        .sql(&format!(
            "DELETE FROM audit_chain WHERE chain_index = {}",
            last["chain_index"]
        ))
        .await;

    let (_, stderr) = audited.broken("truncated_chain").await;
    assert!(stderr.contains("its tail was removed"), "{stderr}");
}

#[tokio::test]
async fn an_export_verifies_offline_and_names_an_edited_line() {
    let (audited, _) = Audited::settled_history(Store::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.ndjson");
    let exported = Command::new(env!("CARGO_BIN_EXE_edict"))
        .args(["events", "export", "--output"])
        .arg(&file)
        .env("EDICT_DATABASE_URL", &audited.app.database_url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert_ran(&exported, "edict events export");
    let base = audited.app.base.clone();
    let admin = audited.admin.clone();
    let offline = |path: std::path::PathBuf| {
        let (base, admin) = (base.clone(), admin.clone());
        async move {
            let output = Command::new(env!("CARGO_BIN_EXE_edict"))
                .args(["audit", "verify", "--output", "json", "--file"])
                .arg(path)
                .args(["--server", &base, "--token", &admin])
                .args(["--public-key", &public_key()])
                .output()
                .await
                .unwrap();
            outcome(&output)
        }
    };
    let (ok, report, stderr) = offline(file.clone()).await;
    assert!(ok, "{report} {stderr}");
    assert!(
        report["checkpoints_matched"].as_u64().unwrap() >= 2,
        "{report}"
    );
    assert_eq!(report["unanchored_lines"], 0);

    let text = std::fs::read_to_string(&file).unwrap();
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(n, line)| {
            if n == 2 {
                line.replacen("\"TeamCreated\"", "\"TeamCreatd\"", 1)
                    .replacen("\"name\":\"", "\"name\":\"X", 1)
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_ne!(edited.join("\n"), text.trim_end());
    let forged = dir.path().join("forged.ndjson");
    std::fs::write(&forged, edited.join("\n")).unwrap();
    let (ok, report, stderr) = offline(forged).await;
    assert!(!ok, "{report}");
    assert!(
        stderr.contains("line 3 (event at position") && stderr.contains("does not match its hash"),
        "{stderr}"
    );
}

/// The public key of [`SEED`].
fn public_key() -> String {
    let mut seed = [0_u8; 32];
    hex::decode_to_slice(SEED, &mut seed).unwrap();
    hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    )
}

impl Audited {
    /// Creates teams named `names` and waits until the export shows every one (committed and below
    /// the read horizon); answers the export.
    async fn teams_in_log(&self, names: &[&str]) -> Vec<Value> {
        for name in names {
            self.app
                .ok("/api/v1/teams", &self.admin, json!({"name": name}))
                .await;
        }
        eventually(Duration::from_secs(30), || async {
            let export = self.export().await;
            names
                .iter()
                .all(|name| {
                    export.iter().any(|e| {
                        e["event_type"] == "TeamCreated" && e["payload"].to_string().contains(name)
                    })
                })
                .then_some(export)
        })
        .await
        .expect("the new teams are in the log")
    }

    /// `edict audit verify ARGS` in text mode: (success, stdout, stderr).
    async fn verify_text(&self, args: &[&str]) -> (bool, String, String) {
        let output = self.run_verify(args).await;
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

#[tokio::test]
async fn events_a_killed_writer_left_unchained_are_reported_and_fail_strict() {
    // Everything so far chained and signed, then the writer is killed (SIGKILL).
    let (audited, chained) = Audited::settled_history(Store::Postgres).await;
    let export = audited
        .teams_in_log(&["Late one", "Late two", "Late three"])
        .await;
    let unchained = (export.len() - chained.len()) as u64;
    assert!(unchained >= 3, "{unchained}");

    let (ok, report, stderr) = audited.verify(&[]).await;
    assert!(ok, "{report} {stderr}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_verified"], chained.len() as u64, "{report}");
    assert_eq!(report["unchained_events"], unchained, "{report}");

    let (ok, stdout, _) = audited.verify_text(&[]).await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(&format!("{unchained} events not yet chained")),
        "{stdout}"
    );

    let (ok, report, stderr) = audited.verify(&["--strict"]).await;
    assert!(!ok, "--strict passed with unchained events: {report}");
    assert_eq!(report["unchained_events"], unchained, "{report}");
    assert!(
        stderr.contains(&format!("{unchained} events not yet chained")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_writer_stopped_with_sigterm_chains_and_signs_the_tail_before_it_exits() {
    // No checkpoint falls due while the test runs: only a drain on shutdown signs one.
    let mut audited = Audited::start_with(Store::Postgres, "100000", "3600").await;
    audited.history().await;
    eventually(Duration::from_secs(30), || async {
        let export = audited.export().await;
        (export.iter().any(|e| e["event_type"] == "RuleSubmitted")
            && export.iter().all(|e| e["hash"].is_string()))
        .then_some(())
    })
    .await
    .expect("the writer chains the history");

    // Frozen, the writer cannot chain what comes next; it is asked to stop before it runs again.
    let pid = audited.writer.id().expect("the writer runs");
    signal(pid, Signal::SIGSTOP);
    let export = audited
        .teams_in_log(&["Tail one", "Tail two", "Tail three"])
        .await;
    assert!(
        export.iter().any(|e| !e["hash"].is_string()),
        "the frozen writer chained events"
    );
    signal(pid, Signal::SIGTERM);
    signal(pid, Signal::SIGCONT);
    let status = tokio::time::timeout(Duration::from_secs(20), audited.writer.wait())
        .await
        .expect("the writer stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");

    let (ok, report, stderr) = audited.verify(&["--strict"]).await;
    assert!(ok, "{report} {stderr}");
    assert_eq!(report["unchained_events"], 0, "{report}");
    assert_eq!(report["events_verified"], export.len() as u64, "{report}");
    assert_eq!(
        report["unsigned_events"], 0,
        "the tail was not signed before the writer stopped: {report}"
    );
}
