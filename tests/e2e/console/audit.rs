//! The console's audit pages over HTTP, against the real `edict serve` with its chain writer: an
//! auditor reads the event log (filtered, escaped), an aggregate's history, a team's rule set and a
//! machine's enforcement at a past moment, the signed checkpoints (key id, signature verified), the
//! log verified against them, and downloads the export; no page offers a write control; a member gets
//! the 403 page everywhere, and a POST without the CSRF token is refused.

use super::Browser;
use crate::harness::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Store, TestApp, approved_rule, attach, eventually,
};
use ed25519_dalek::SigningKey;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

/// The seed the chain writer signs checkpoints with.
const SEED: [u8; 32] = [9; 32];

/// A deployment whose chain writer (in the main process) signs a checkpoint every two events.
async fn audited() -> TestApp {
    TestApp::spawn_setting(
        Store::Sqlite,
        &[
            ("EDICT_AUDIT_SIGNING_KEY", &hex::encode(SEED)),
            ("EDICT_AUDIT_CHECKPOINT_EVERY", "2"),
            ("EDICT_AUDIT_CHECKPOINT_SECS", "1"),
        ],
    )
    .await
}

#[tokio::test]
async fn an_auditor_reads_the_log_the_past_and_the_chain_and_changes_nothing() {
    let app = audited().await;
    let (admin, second) = app.admins().await;
    let team = app.team(&admin, "Ops <script>alert(1)</script>").await;
    let rule = approved_rule(&app, &admin, &second, "audited").await;
    attach(&app, &admin, &team, &rule).await;
    let (_, email, password) = app.account(&admin, "auditor", &["auditor"]).await;
    let mut auditor = Browser::new(&app);
    auditor.sign_in(&email, &password).await;

    // The log: every event, the user's text escaped, a link to the export, no write control.
    let log = auditor.get("/console/audit").await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.body);
    assert!(
        log.header("content-security-policy")
            .contains("script-src 'self'")
    );
    assert!(
        log.body.contains("<td>TeamCreated</td>")
            && log.body.contains("<td>RuleRevisionApproved</td>")
    );
    assert!(
        log.body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        log.body
    );
    assert!(!log.body.contains("<script>alert(1)"));
    assert!(
        log.body.contains(r#"href="/console/audit""#),
        "the nav has Audit"
    );
    assert!(log.body.contains("/console/audit/export?"));
    assert_eq!(
        log.body.matches(r#"method="post""#).count(),
        1,
        "only sign-out posts"
    );

    // Filtered by aggregate type: the team's events only.
    let teams = auditor.get("/console/audit?aggregate_type=Team").await;
    assert_eq!(teams.status, StatusCode::OK);
    assert!(
        teams.body.contains("<td>TeamCreated</td>")
            && !teams.body.contains("<td>RuleRevisionApproved</td>")
    );
    let bad = auditor.get("/console/audit?aggregate_type=Nothing").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("is not one of"), "{}", bad.body);
    let bad_time = auditor.get("/console/audit?since=yesterday").await;
    assert_eq!(bad_time.status, StatusCode::BAD_REQUEST);
    assert!(bad_time.body.contains("since: "), "{}", bad_time.body);
    let bad_cursor = auditor.get("/console/audit?after=12").await;
    assert_eq!(bad_cursor.status, StatusCode::BAD_REQUEST);
    // A time range the events are in, typed as a browser's datetime-local sends it.
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M");
    let ranged = auditor
        .get(&format!(
            "/console/audit?aggregate_type=Team&since={hour_ago}"
        ))
        .await;
    assert!(
        ranged.body.contains("<td>TeamCreated</td>"),
        "{}",
        ranged.body
    );
    let future = auditor.get("/console/audit?since=2999-01-01T00:00").await;
    assert!(future.body.contains("No event matches."), "{}", future.body);

    // The team's history: its events with the state after each.
    let history = auditor
        .get(&format!("/console/audit/history/team/{team}"))
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    assert!(history.body.contains("TeamCreated") && history.body.contains("State after it"));
    assert!(history.body.contains("&#60;script&#62;") && !history.body.contains("<script>"));

    // Time travel: now, the rule set holds the rule; before the team existed, it had none.
    // The form takes whole seconds: the next one, so that what committed in this second counts.
    let now = (chrono::Utc::now() + chrono::Duration::seconds(1))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let past = auditor
        .get(&format!("/console/audit/time-travel?at={now}&team={team}"))
        .await;
    assert_eq!(past.status, StatusCode::OK, "{}", past.body);
    assert!(past.body.contains("Always audited."), "{}", past.body);
    let before = auditor
        .get(&format!(
            "/console/audit/time-travel?position=1&team={team}"
        ))
        .await;
    assert!(
        before.body.contains("had no rule set at that moment"),
        "{}",
        before.body
    );
    let no_moment = auditor
        .get(&format!("/console/audit/time-travel?team={team}"))
        .await;
    assert_eq!(no_moment.status, StatusCode::BAD_REQUEST);

    // The chain: checkpoints signed by the configured key, each verified; the log verifies.
    let public = SigningKey::from_bytes(&SEED).verifying_key();
    let key_id = edict_api::ruleset::key_id_of(&public);
    let chain = eventually(Duration::from_secs(30), || async {
        let page = auditor.clone().get("/console/audit/chain").await;
        page.body.contains(&key_id).then_some(page)
    })
    .await
    .expect("a signed checkpoint shows up");
    assert_eq!(chain.status, StatusCode::OK);
    assert!(chain.body.contains(&hex::encode(public.to_bytes())));
    assert!(
        chain.body.contains("status-current\">verified"),
        "{}",
        chain.body
    );
    assert!(
        chain.body.contains("Every checkpoint's signature verifies"),
        "{}",
        chain.body
    );
    let verified = auditor.get("/console/audit/chain?verify=1").await;
    assert_eq!(verified.status, StatusCode::OK);
    assert!(
        verified.body.contains("The log verifies"),
        "{}",
        verified.body
    );

    // The export: a download of JSON lines, each event with its chain hash once chained.
    let export = auditor.get("/console/audit/export").await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.header("content-type"), "application/x-ndjson");
    assert!(
        export
            .header("content-disposition")
            .starts_with("attachment;")
    );
    let lines: Vec<Value> = export
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["event_type"] == "TeamCreated"));
    assert!(lines.iter().any(|l| l["hash"].is_string()));

    // An org_admin may read it too.
    let mut admin_browser = Browser::new(&app);
    admin_browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(
        admin_browser.get("/console/audit").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_member_gets_the_403_page_and_a_post_without_csrf_is_refused() {
    let app = audited().await;
    let admin = app.admin().await;
    let (_, email, password) = app.account(&admin, "dev", &["member"]).await;
    let mut member = Browser::new(&app);
    member.sign_in(&email, &password).await;
    let home = member.get("/").await;
    assert!(
        !home.body.contains(r#"href="/console/audit""#),
        "no Audit in a member's nav"
    );
    let id = uuid::Uuid::new_v4();
    for path in [
        "/console/audit".to_owned(),
        "/console/audit?aggregate_type=Team".to_owned(),
        format!("/console/audit/history/user/{id}"),
        "/console/audit/time-travel".to_owned(),
        "/console/audit/chain".to_owned(),
        "/console/audit/chain?verify=1".to_owned(),
        "/console/audit/export".to_owned(),
    ] {
        let page = member.get(&path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.body);
        assert!(page.body.contains("Not allowed"), "{path}: {}", page.body);
        assert!(!page.body.contains("TeamCreated") && !page.body.contains("UserRegistered"));
    }
    // A signed-out visitor is sent to sign in.
    let visitor = Browser::new(&app).get("/console/audit/chain").await;
    assert_eq!(visitor.status, StatusCode::SEE_OTHER);

    // The audit pages take no POST; without the CSRF token it is refused before anything runs.
    let mut auditor = Browser::new(&app);
    let (_, email, password) = app.account(&admin, "auditor", &["auditor"]).await;
    auditor.sign_in(&email, &password).await;
    let refused = auditor
        .post("/console/audit/chain", &[("verify", "1")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("Form refused"), "{}", refused.body);
}
