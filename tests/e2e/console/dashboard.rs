//! The dashboard: what each role is shown.

use super::Browser;
use crate::harness::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Store, TestApp, approved_rule, attach, team_with_member,
};
use reqwest::StatusCode;

#[tokio::test]
async fn console_dashboard_shows_convergence_to_members_and_operations_to_admins_only() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (admin, second) = app.admins().await;
    let (member_id, email, password) = app.account(&admin, "dev", &["member"]).await;
    let team = team_with_member(&app, &admin, "Platform <core>", &member_id).await;
    let rule = approved_rule(&app, &admin, &second, "lint").await;
    attach(&app, &admin, &team, &rule).await;

    // The member: their team's convergence (no machine yet), no operations section.
    let mut member = Browser::new(&app);
    member.sign_in(&email, &password).await;
    let seen = crate::harness::eventually(std::time::Duration::from_secs(10), || async {
        let mut b = Browser {
            cookies: member.cookies.clone(),
            ..Browser::new(&app)
        };
        let page = b.get("/").await;
        page.body
            .contains("Platform &#60;core&#62;")
            .then_some(page)
    })
    .await
    .expect("the member's team on the dashboard");
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.body.contains("0 of 0"), "{}", seen.body);
    assert!(!seen.body.contains("Read models and relay"));
    assert!(!seen.body.contains("rule_catalog"));

    // The org_admin: the same team, and the projections with their lag.
    let mut org = Browser::new(&app);
    org.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let page = org.get("/").await;
    assert!(
        page.body.contains("Platform &#60;core&#62;"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Read models and relay"));
    assert!(page.body.contains("<td>team_rulesets</td>"));
}
