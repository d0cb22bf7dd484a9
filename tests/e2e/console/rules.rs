//! The rule library pages: what each role is shown, that a forced request gets the use case's 403,
//! the review with its diff, and that what users typed is escaped.

use super::Browser;
use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Store, TestApp, eventually, rule_spec};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn console_auditors_see_no_review_controls_and_a_forced_approval_is_forbidden() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let admin = app.admin().await;
    // A pending team rule, drafted and submitted by the first admin through the API.
    let rule = app
        .created("/api/v1/rules", &admin, rule_spec("Review me", "team"))
        .await;
    app.ok(&format!("/api/v1/rules/{rule}/submit"), &admin, json!({}))
        .await;
    let page = format!("/console/rules/{rule}");

    // The auditor reads the rule and the diff, and is offered nothing to do.
    let (_, email, password) = app.account(&admin, "auditor", &["auditor"]).await;
    let mut auditor = Browser::new(&app);
    auditor.sign_in(&email, &password).await;
    let seen = auditor.get(&page).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    assert!(seen.body.contains("<h1>Review me</h1>"), "{}", seen.body);
    assert!(
        seen.body.contains("+ ### Review me"),
        "the diff: {}",
        seen.body
    );
    for control in [
        "/approve\"",
        "/reject\"",
        "/submit\"",
        "/edit\"",
        "New rule",
    ] {
        assert!(
            !seen.body.contains(control),
            "{control} shown to an auditor"
        );
    }
    let list = auditor.get("/console/rules").await;
    assert!(!list.body.contains("/console/rules/new"));

    // Forcing the approval with a valid form: the use case's 403, rendered as a page.
    let csrf = seen.csrf();
    let forced = auditor
        .post(
            &format!("{page}/approve"),
            &[("csrf", &csrf), ("version", "2")],
        )
        .await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN, "{}", forced.body);
    assert!(forced.body.contains("Not allowed"), "{}", forced.body);
    let forced_form = auditor.get("/console/rules/new").await;
    assert_eq!(forced_form.status, StatusCode::FORBIDDEN);
    // Nothing was approved (the aggregate, read at once).
    let (_, state) = app.get(&format!("/api/v1/rules/{rule}"), &admin).await;
    assert_eq!(state["status"], "pending", "{state}");
    assert_eq!(state["working"]["approvals"], json!([]), "{state}");

    // Its author is told another org_admin must approve it, gets no approve button, and may send it
    // back.
    let mut author = Browser::new(&app);
    author.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let own = author.get(&page).await;
    assert!(
        own.body.contains("another org_admin must approve it"),
        "{}",
        own.body
    );
    assert!(!own.body.contains("/approve\""));
    assert!(own.body.contains("/reject\""));

    // A second org_admin approves it from the page (a team rule needs one approval).
    let (_, email, password) = app.account(&admin, "reviewer", &["org_admin"]).await;
    let mut reviewer = Browser::new(&app);
    reviewer.sign_in(&email, &password).await;
    let review = reviewer.get(&page).await;
    assert!(
        review.body.contains(&format!(r#"action="{page}/approve""#)),
        "{}",
        review.body
    );
    assert!(review.body.contains(r#"<label for="reason">"#));
    // A stale version (the page of another moment) is a conflict, not an approval.
    let csrf = review.csrf();
    let stale = reviewer
        .post(
            &format!("{page}/approve"),
            &[("csrf", &csrf), ("version", "1")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    let approved = reviewer
        .post(
            &format!("{page}/approve"),
            &[("csrf", &csrf), ("version", "2")],
        )
        .await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    assert_eq!(approved.location(), format!("{page}?done=approved"));
    let (_, state) = app.get(&format!("/api/v1/rules/{rule}"), &admin).await;
    assert_eq!(state["status"], "approved", "{state}");
    let after = reviewer.get(approved.location()).await;
    assert!(after.body.contains("Approval recorded."));
    assert!(
        after.body.contains("In force: revision 1"),
        "{}",
        after.body
    );
}

#[tokio::test]
async fn console_escapes_what_users_typed_and_reviews_a_revision_against_the_one_in_force() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let admin = app.admin().await;
    let mut browser = Browser::new(&app);
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let csrf = browser.get("/console/rules/new").await.csrf();
    let name = "<script>alert('x')</script> Escaped";

    // A refused draft comes back with what was typed (escaped) and why.
    let refused = browser
        .post(
            "/console/rules/new",
            &[
                ("csrf", &csrf),
                ("name", name),
                ("layer", "team"),
                ("content", ""),
                ("intent", "save"),
            ],
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert!(refused.body.contains("content"), "{}", refused.body);
    assert!(
        refused
            .body
            .contains("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62; Escaped")
    );
    assert!(!refused.body.contains("<script>alert"));

    let drafted = browser
        .post(
            "/console/rules/new",
            &[
                ("csrf", &csrf),
                ("name", name),
                ("layer", "team"),
                ("content", "- Quote <b>carefully</b>."),
                ("category", "Safety"),
                ("intent", "save"),
            ],
        )
        .await;
    assert_eq!(drafted.status, StatusCode::SEE_OTHER, "{}", drafted.body);
    let page = drafted.location().split('?').next().unwrap().to_owned();
    let rule = page.rsplit('/').next().unwrap().to_owned();
    let shown = browser.get(&page).await;
    assert!(
        shown
            .body
            .contains("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62; Escaped")
    );
    assert!(
        shown
            .body
            .contains("Quote &#60;b&#62;carefully&#60;/b&#62;.")
    );
    assert!(!shown.body.contains("<script>alert"), "{}", shown.body);
    assert!(!shown.body.contains("<b>carefully"));

    // The list, once the catalog has it, escapes it too.
    let listed = eventually(Duration::from_secs(10), || async {
        let mut b = Browser {
            cookies: browser.cookies.clone(),
            ..Browser::new(&app)
        };
        let list = b.get("/console/rules?q=Escaped").await;
        list.body.contains(&rule).then_some(list.body)
    })
    .await
    .expect("the list shows the draft");
    assert!(listed.contains("&#60;script&#62;alert"));
    assert!(!listed.contains("<script>alert"));

    // Submitted and approved, then revised: the page diffs the new revision against the one in force.
    let submit_csrf = shown.csrf();
    let submitted = browser
        .post(
            &format!("{page}/submit"),
            &[("csrf", &submit_csrf), ("version", "1")],
        )
        .await;
    assert_eq!(
        submitted.status,
        StatusCode::SEE_OTHER,
        "{}",
        submitted.body
    );
    let (_, second) = app.user(&admin, "second", &["org_admin"]).await;
    app.ok(&format!("/api/v1/rules/{rule}/approve"), &second, json!({}))
        .await;
    let form = browser.get(&format!("{page}/edit")).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.body.contains("New revision of"));
    assert!(form.body.contains(r#"<pre id="preview""#));
    let version = form
        .body
        .split(r#"name="version" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let revised = browser
        .post(
            &format!("{page}/edit"),
            &[
                ("csrf", &form.csrf()),
                ("version", &version),
                ("name", name),
                ("layer", "team"),
                ("content", "- Quote everything."),
                ("category", "Safety"),
                ("intent", "save"),
            ],
        )
        .await;
    assert_eq!(revised.status, StatusCode::SEE_OTHER, "{}", revised.body);
    let review = browser.get(&page).await;
    assert!(
        review.body.contains("Revision 2 (draft)"),
        "{}",
        review.body
    );
    assert!(
        review
            .body
            .contains("- - Quote &#60;b&#62;carefully&#60;/b&#62;."),
        "{}",
        review.body
    );
    assert!(
        review.body.contains("+ - Quote everything."),
        "{}",
        review.body
    );
    assert!(review.body.contains("In force: revision 1"));

    // The history lists both revisions and, for an org_admin, the events.
    let history = browser.get(&format!("{page}/history")).await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    assert!(
        history.body.contains("RuleRevisionApproved"),
        "{}",
        history.body
    );
}
