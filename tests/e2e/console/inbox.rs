//! The console's change-request inbox and live pages over HTTP, against a real server: who sees the
//! inbox and a change request's page, which decisions each role is offered, that a forced or
//! forged POST is refused (403) and changes nothing, that the developer's text is escaped, the
//! decisions one to one with the API's, and that `/console/events` sends a new version when what the
//! inbox shows changed.

use super::Browser;
use crate::harness::{
    self, ADMIN_EMAIL, ADMIN_PASSWORD, Store, TestApp, eventually, rule_spec, temporary,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

async fn change_status(app: &TestApp, admin: &str, change: &str) -> Value {
    let path = format!("/api/v1/change-requests/{change}");
    app.get(&path, admin).await.1["status"].clone()
}

#[tokio::test]
async fn console_inbox_decides_change_requests_and_streams_changes() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (admin, second) = app.admins().await;
    let (lead_id, lead_email, lead_password) = app.account(&admin, "lead", &["member"]).await;
    let (dev_id, dev_email, dev_password) = app.account(&admin, "dev", &["member"]).await;
    let (_, auditor_email, auditor_password) = app.account(&admin, "auditor", &["auditor"]).await;
    let team = harness::team_with_member(&app, &admin, "Platform <team>", &dev_id).await;
    app.add_member(&admin, &team, &lead_id, "team_admin").await;
    let mut spec = rule_spec("Reviewed <rule>", "team");
    spec["content"] = json!("Always review <b>twice</b>.");
    let rule = harness::approve(&app, &admin, &second, spec).await;
    harness::attach_with(&app, &admin, &team, &rule, temporary(3600)).await;
    let dev = app.login(&dev_email, &dev_password).await;
    let agent = app.enroll_agent(&dev, "laptop-7", "Dev laptop").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let report = |report: &str, file: &str| {
        json!({
            "team_id": team, "rule_id": rule, "file": file, "layer": "team",
            "original_hash": HASH_A, "new_hash": HASH_B,
            "diff": "@@ -1 +1 @@\n-Always review twice.\n+<script>alert(1)</script>\n", "report_id": report,
        })
    };
    let change = app
        .ok(
            "/api/v1/change-requests",
            &agent,
            report("r-1", "/home/dev/CLAUDE.md"),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The team_admin's inbox lists it once the inbox read model has it, filtered by team and status.
    let mut lead = Browser::signed_in(&app, &lead_email, &lead_password).await;
    let inbox = format!("/console/change-requests?team={team}&status=pending");
    let listed = eventually(Duration::from_secs(10), || async {
        let page = lead.clone().get(&inbox).await;
        assert_eq!(page.status, StatusCode::OK);
        page.body.contains(&change).then_some(page.body)
    })
    .await
    .expect("the inbox lists the change request");
    assert!(listed.contains("/home/dev/CLAUDE.md"), "{listed}");
    assert!(listed.contains("Platform &#60;team&#62;"), "{listed}");
    assert!(listed.contains(r#"data-live="inbox""#), "{listed}");
    assert!(
        listed.contains(r#"href="/console/change-requests""#),
        "nav entry"
    );
    let approved_only = lead
        .get(&format!(
            "/console/change-requests?team={team}&status=approved"
        ))
        .await
        .body;
    assert!(!approved_only.contains(&change), "{approved_only}");

    // Its page: the developer's diff (escaped), the rule in force, who, where; the decisions.
    let page_path = format!("/console/change-requests/{change}");
    let page = lead.get(&page_path).await;
    assert_eq!(page.status, StatusCode::OK);
    let page = page.body;
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "the diff is escaped");
    assert!(
        page.contains("Always review &#60;b&#62;twice&#60;/b&#62;."),
        "{page}"
    );
    assert!(page.contains("Reviewed &#60;rule&#62;"), "{page}");
    assert!(page.contains(&format!("{change}/approve")), "{page}");
    assert!(page.contains(&format!("{change}/reject")), "{page}");

    // An auditor reads it but is offered no decision, and a forced one is refused.
    let mut auditor = Browser::signed_in(&app, &auditor_email, &auditor_password).await;
    let seen = auditor.get(&page_path).await;
    assert_eq!(seen.status, StatusCode::OK);
    let seen = seen.body;
    assert!(!seen.contains(&format!("{change}/approve")), "{seen}");
    let forced = auditor
        .submit(&format!("{page_path}/approve"), &[("version", "1")])
        .await
        .status;
    assert_eq!(forced, StatusCode::FORBIDDEN);
    // The developer is offered to withdraw, not to decide; a decision forced by them is refused.
    let mut developer = Browser::signed_in(&app, &dev_email, &dev_password).await;
    let own = developer.get(&page_path).await.body;
    assert!(own.contains(&format!("{change}/withdraw")), "{own}");
    assert!(!own.contains(&format!("{change}/approve")), "{own}");
    let forced = developer
        .submit(&format!("{page_path}/approve"), &[])
        .await
        .status;
    assert_eq!(forced, StatusCode::FORBIDDEN);
    // A POST without the CSRF token is refused before anything happens.
    let forged = lead.post(&format!("{page_path}/approve"), &[]).await.status;
    assert_eq!(forged, StatusCode::FORBIDDEN);
    assert_eq!(change_status(&app, &admin, &change).await, "pending");

    // The live stream of the inbox: its first version, then a new one once the inbox changed.
    let mut stream = lead
        .events(&format!("topic=inbox&team={team}&status=pending"))
        .await;
    let first = stream.next_version().await;
    let rendered = listed
        .split(r#"data-live-version=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    assert_eq!(first, rendered, "the page carries the version it shows");
    let second_change = app
        .ok(
            "/api/v1/change-requests",
            &agent,
            report("r-2", "/home/dev/project/CLAUDE.md"),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let changed = stream.next_version().await;
    assert_ne!(changed, first, "a new change request is a new version");
    let refreshed = lead.get(&inbox).await.body;
    assert!(refreshed.contains(&second_change), "{refreshed}");

    // Reject with a reason; the developer asks for an exception; the team_admin grants it.
    let rejected = lead
        .submit(
            &format!("{page_path}/reject"),
            &[("reason", "keep the <team> rule")],
        )
        .await
        .status;
    assert_eq!(rejected, StatusCode::SEE_OTHER);
    let after_reject = stream.next_version().await;
    assert_ne!(
        after_reject, changed,
        "a decided change leaves the pending inbox"
    );
    let decided = developer.get(&page_path).await.body;
    assert!(
        decided.contains("keep the &#60;team&#62; rule"),
        "{decided}"
    );
    assert!(
        decided.contains(&format!("{change}/exception")),
        "{decided}"
    );
    // A time-limited exception needs its end: the page says so and keeps the justification.
    let status = developer
        .submit(
            &format!("{page_path}/exception"),
            &[("reason", "we pair instead"), ("kind", "time_limited")],
        )
        .await
        .status;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let asked = developer
        .submit(
            &format!("{page_path}/exception"),
            &[("reason", "we pair instead"), ("kind", "permanent")],
        )
        .await
        .status;
    assert_eq!(asked, StatusCode::SEE_OTHER);
    assert_eq!(
        change_status(&app, &admin, &change).await,
        "exception_requested"
    );
    let to_resolve = lead.get(&page_path).await.body;
    assert!(to_resolve.contains("exception/grant"), "{to_resolve}");
    assert!(to_resolve.contains("we pair instead"), "{to_resolve}");
    let granted = lead
        .submit(&format!("{page_path}/exception/grant"), &[("until", "")])
        .await
        .status;
    assert_eq!(granted, StatusCode::SEE_OTHER);
    assert_eq!(
        change_status(&app, &admin, &change).await,
        "exception_granted"
    );

    // The developer withdraws the second one.
    let withdrawn = developer
        .submit(
            &format!("/console/change-requests/{second_change}/withdraw"),
            &[],
        )
        .await
        .status;
    assert_eq!(withdrawn, StatusCode::SEE_OTHER);
    assert_eq!(
        change_status(&app, &admin, &second_change).await,
        "withdrawn"
    );

    // The dashboard is a live page too; a stream for it starts with its version.
    let mut admin_person = Browser::signed_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let dashboard = admin_person.get("/").await.body;
    assert!(
        dashboard.contains(r#"data-live="dashboard""#),
        "{dashboard}"
    );
    let mut stream = admin_person.events("topic=dashboard").await;
    assert_eq!(stream.next_version().await.len(), 16);
    // An unknown topic is a 400; a visitor without a session is sent to sign in.
    let unknown = admin_person.get("/console/events?topic=nothing").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let visitor = Browser::new(&app).get("/console/events?topic=inbox").await;
    assert_eq!(visitor.status, StatusCode::SEE_OTHER);
}
