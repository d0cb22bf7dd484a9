//! The console's Teams and Fleet pages over HTTP against a real server: each role sees what the use
//! cases let it read (a member only their teams and machines), no write control it may not use, a
//! forced post gets the use case's 403, a post without the CSRF token changes nothing, user text is
//! escaped, and the forms do what they say (create, attach with a mode, add a member, archive, revoke).

use super::{Browser, signed_in_person};
use crate::harness::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Machine, Store, TestApp, approved_rule, attach, team_with_member,
};
use crate::on_both_stores;
use reqwest::StatusCode;
use serde_json::json;

on_both_stores!(
    teams_pages_follow_the_roles,
    fleet_pages_follow_the_roles,
    fleet_shows_where_a_machine_is_connected_until_it_stops
);

async fn teams_pages_follow_the_roles(store: Store) {
    let app = TestApp::spawn(store).await;
    let (admin, second) = app.admins().await;
    let (dev_id, _, mut dev) = signed_in_person(&app, &admin, "dev", &["member"]).await;
    let (other_id, _, _) = signed_in_person(&app, &admin, "other", &["member"]).await;
    let (lead_id, _, mut lead) = signed_in_person(&app, &admin, "lead", &["member"]).await;
    let (_, _, mut auditor) = signed_in_person(&app, &admin, "auditor", &["auditor"]).await;
    let mut root = Browser::signed_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    let ours = team_with_member(&app, &admin, "Core <script>x()</script>", &dev_id).await;
    let theirs = team_with_member(&app, &admin, "Theirs", &other_id).await;
    let rule = approved_rule(&app, &admin, &second, "review-diffs").await;

    // The org_admin sees every team, escaped, and may create one.
    let list = root.wait_for("/console/teams", "Theirs").await;
    assert!(list.contains("Core &#60;script&#62;x()"), "{list}");
    assert!(!list.contains("<script>x()"), "{list}");
    assert!(list.contains("Create team"), "{list}");
    let created = root.submit("/console/teams", &[("name", "Platform")]).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert!(
        created.location().starts_with("/console/teams/"),
        "{}",
        created.location()
    );
    let platform = created.location()["/console/teams/".len()..]
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let page = root.get(created.location()).await;
    assert!(page.body.contains("Team created."), "{}", page.body);
    assert!(page.body.contains("Archive team"), "{}", page.body);

    // Attaching with a temporary mode, appointing a team_admin: the page says so, and the rule set
    // shows the rule as agents will write it.
    let base = format!("/console/teams/{platform}");
    let attached = root
        .submit(
            &format!("{base}/rules"),
            &[("rule_id", &rule), ("mode", "temporary"), ("minutes", "30")],
        )
        .await;
    assert_eq!(attached.status, StatusCode::SEE_OTHER, "{}", attached.body);
    let added = root
        .submit(
            &format!("{base}/members"),
            &[("user_id", &lead_id), ("role", "team_admin")],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let page = root.wait_for(&base, "Always review-diffs.").await;
    assert!(page.contains("(30 min)"), "{page}");
    assert!(page.contains("team_admin"), "{page}");

    // A temporary mode without a time limit is refused with the reason, and nothing changes.
    let refused = root
        .submit(
            &format!("{base}/rules/{rule}/mode"),
            &[("mode", "temporary"), ("minutes", "")],
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert!(refused.body.contains("time limit"), "{}", refused.body);

    // A member sees only their team, without any write control; another team is a 403.
    let list = dev
        .wait_for("/console/teams", "Core &#60;script&#62;")
        .await;
    assert!(!list.contains("Theirs"), "{list}");
    assert!(!list.contains("Create team"), "{list}");
    let page = dev.get(&format!("/console/teams/{ours}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for control in [
        "Add member",
        "Attach rule",
        "Rename",
        "Archive team",
        "Detach",
    ] {
        assert!(!page.body.contains(control), "{control}: {}", page.body);
    }
    let foreign = dev.get(&format!("/console/teams/{theirs}")).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "{}", foreign.body);
    let forced = dev
        .submit(
            &format!("/console/teams/{ours}/rename"),
            &[("name", "Mine")],
        )
        .await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN, "{}", forced.body);
    assert!(forced.body.contains("Not allowed"), "{}", forced.body);

    // The team_admin manages members and rules of their team, but neither archives nor appoints.
    let page = lead.get(&base).await;
    assert!(page.body.contains("Add member"), "{}", page.body);
    assert!(page.body.contains("Detach"), "{}", page.body);
    assert!(!page.body.contains("Archive team"), "{}", page.body);
    let forced = lead
        .submit(&format!("{base}/archive"), &[("confirm", "yes")])
        .await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN, "{}", forced.body);

    // The auditor reads every team and changes nothing.
    let list = auditor.wait_for("/console/teams", "Platform").await;
    assert!(list.contains("Theirs"), "{list}");
    let page = auditor.get(&base).await;
    assert!(page.body.contains("Always review-diffs."), "{}", page.body);
    assert!(!page.body.contains("Add member"), "{}", page.body);
    let forced = auditor
        .submit(&format!("{base}/members"), &[("user_id", &dev_id)])
        .await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN, "{}", forced.body);

    // Without the CSRF token nothing changes, even for an org_admin.
    let no_token = root
        .post(&format!("{base}/rename"), &[("name", "Renamed")])
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN, "{}", no_token.body);
    let (_, team) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/teams/{platform}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(team["name"], "Platform", "{team}");

    // Archiving asks for the confirmation, then archives.
    let unconfirmed = root.submit(&format!("{base}/archive"), &[]).await;
    assert_eq!(
        unconfirmed.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unconfirmed.body
    );
    let archived = root
        .submit(&format!("{base}/archive"), &[("confirm", "yes")])
        .await;
    assert_eq!(archived.status, StatusCode::SEE_OTHER, "{}", archived.body);
    let page = root.get(&base).await;
    assert!(page.body.contains("status-archived"), "{}", page.body);
    assert!(!page.body.contains("Add member"), "{}", page.body);
}

async fn fleet_pages_follow_the_roles(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (_, dev_token, mut dev) = signed_in_person(&app, &admin, "dev", &["member"]).await;
    let (_, other_token, _) = signed_in_person(&app, &admin, "other", &["member"]).await;
    let (_, _, mut auditor) = signed_in_person(&app, &admin, "auditor", &["auditor"]).await;
    let enroll = |machine: &str, name: &str| json!({"machine_id": machine, "machine_name": name});
    let mine = app
        .ok(
            "/api/v1/agents",
            &dev_token,
            enroll("m-dev", "<i>laptop</i>"),
        )
        .await;
    let mine = mine["id"].as_str().unwrap().to_owned();
    let theirs = app
        .created("/api/v1/agents", &other_token, enroll("m-other", "desktop"))
        .await;

    // A member sees only their machine, escaped, and may revoke it; another's is a 403.
    let list = dev.wait_for("/console/fleet", "m-dev").await;
    assert!(list.contains("&#60;i&#62;laptop&#60;"), "{list}");
    assert!(!list.contains("<i>laptop"), "{list}");
    assert!(!list.contains("m-other"), "{list}");
    let page = dev.get(&format!("/console/fleet/{mine}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Revoke machine"), "{}", page.body);
    let foreign = dev.get(&format!("/console/fleet/{theirs}")).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "{}", foreign.body);

    // The auditor sees every machine and its reports, and revokes none.
    let list = auditor.wait_for("/console/fleet", "m-other").await;
    assert!(list.contains("m-dev"), "{list}");
    let filtered = auditor.get("/console/fleet?q=desk").await;
    assert!(filtered.body.contains("m-other"), "{}", filtered.body);
    assert!(!filtered.body.contains("m-dev"), "{}", filtered.body);
    let page = auditor.get(&format!("/console/fleet/{mine}")).await;
    assert!(
        page.body.contains("No report from this machine."),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Revoke machine"), "{}", page.body);
    let forced = auditor
        .submit(
            &format!("/console/fleet/{mine}/revoke"),
            &[("confirm", "yes")],
        )
        .await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN, "{}", forced.body);

    // Revoking: not without the CSRF token, not without the confirmation; then it is revoked.
    let path = format!("/console/fleet/{mine}/revoke");
    let no_token = dev.post(&path, &[("confirm", "yes")]).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN, "{}", no_token.body);
    let unconfirmed = dev.submit(&path, &[("reason", "lost it")]).await;
    assert_eq!(
        unconfirmed.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unconfirmed.body
    );
    assert!(unconfirmed.body.contains("lost it"), "{}", unconfirmed.body);
    let (_, agent) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/agents/{mine}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(agent["revoked"], false, "{agent}");
    let revoked = dev
        .submit(&path, &[("reason", "lost it"), ("confirm", "yes")])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    let page = dev.get(revoked.location()).await;
    assert!(page.body.contains("Machine revoked"), "{}", page.body);
    assert!(!page.body.contains("Revoke machine"), "{}", page.body);
    let (_, agent) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/agents/{mine}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(agent["revoked"], true, "{agent}");
}

/// A running agent's page shows the revision of its team's rule set it enforces, as current.
#[tokio::test]
async fn a_machine_page_shows_the_revision_it_enforces() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (admin, second) = app.admins().await;
    let (dev_id, _, mut dev) = signed_in_person(&app, &admin, "dev", &["member"]).await;
    let team = team_with_member(&app, &admin, "Enforcers", &dev_id).await;
    let rule = approved_rule(&app, &admin, &second, "sign-commits").await;
    attach(&app, &admin, &team, &rule).await;
    let (mut machine, agent) = Machine::enrolled(
        &app,
        &admin,
        json!({"user_id": dev_id, "note": "console test"}),
    )
    .await;
    machine.run();
    let page = dev
        .wait_for(&format!("/console/fleet/{agent}"), "status-current")
        .await;
    assert!(page.contains("Enforcers"), "{page}");
    assert!(page.contains(&format!("/console/teams/{team}")), "{page}");
    machine.stop().await;
}

/// The fleet shows a running agent online through its gateway (named by host and port), in the list,
/// on its page and in the API's list; once the agent stops, offline with the time last seen.
async fn fleet_shows_where_a_machine_is_connected_until_it_stops(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (dev_id, dev_token, mut dev) = signed_in_person(&app, &admin, "dev", &["member"]).await;
    let enrollment = app
        .ok(
            "/api/v1/enrollment-tokens",
            &admin,
            json!({"user_id": dev_id, "note": "presence test"}),
        )
        .await;
    let mut machine = Machine::new();
    let agent = machine
        .enroll_with_token(&app.base, enrollment["token"].as_str().unwrap())
        .await;
    let page = dev.get(&format!("/console/fleet/{agent}")).await;
    assert!(page.body.contains("never connected"), "{}", page.body);

    machine.run();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let port = app.gateway.rsplit(':').next().unwrap();
    let gateway = format!("{host}:{port}");
    let page = dev
        .wait_for(&format!("/console/fleet/{agent}"), "status-online")
        .await;
    assert!(
        page.contains(&format!("via <code>{gateway}</code>")),
        "{page}"
    );
    // The list is a read model: it shows the machine once the enrollment is projected.
    dev.wait_for("/console/fleet", "status-online").await;
    let listed = app.fetch("/api/v1/agents", &dev_token).await;
    let presence = &listed["items"][0]["presence"];
    assert_eq!(presence["gateway"], gateway.as_str(), "{listed}");
    assert!(presence["last_seen_at"].is_string(), "{listed}");
    assert!(presence.get("disconnected_at").is_none(), "{listed}");

    machine.stop().await;
    let page = dev
        .wait_for(&format!("/console/fleet/{agent}"), "status-offline")
        .await;
    assert!(page.contains("last seen"), "{page}");
    let listed = app.fetch("/api/v1/agents", &dev_token).await;
    assert!(
        listed["items"][0]["presence"]["disconnected_at"].is_string(),
        "{listed}"
    );
}

/// The fleet's filters look past the first page of machines: a machine enrolled after 200 others is
/// found by its name (the filter once ran over the first 200 only, and found nothing).
#[tokio::test]
async fn fleet_filters_find_a_machine_past_the_first_page() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let admin = app.admin().await;
    // Twenty machines per person at most: eleven people enroll 201 machines.
    let mut owner = String::new();
    for n in 0..201 {
        if n % 20 == 0 {
            owner = app.user(&admin, &format!("owner{n}"), &["member"]).await.1;
        }
        app.ok(
            "/api/v1/agents",
            &owner,
            json!({"machine_id": format!("m-{n:03}"), "machine_name": format!("box {n}")}),
        )
        .await;
    }
    app.ok(
        "/api/v1/agents",
        &owner,
        json!({"machine_id": "m-last", "machine_name": "needle"}),
    )
    .await;
    let mut root = Browser::signed_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    root.wait_for("/console/fleet?status=enrolled&q=box+200", "m-200")
        .await;
    let found = root.wait_for("/console/fleet?q=needle", "m-last").await;
    assert!(!found.contains("m-000"), "{found}");
}
