//! The domain's workflows through the API: rule review with quorum and revisions, teams and their rules,
//! change requests and exceptions.

use crate::harness::{Store, TestApp, approve, attach_with, rule_spec, temporary};
use crate::on_both_stores;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn refused(app: &TestApp, token: &str, path: &str, body: Value, rule: &str) {
    let (status, problem) = app.post(path, token, body).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "POST {path}: {problem}"
    );
    assert_eq!(problem["rule"], rule, "POST {path}: {problem}");
}

async fn organization_rules_need_two_approvals_and_revisions_keep_the_approved_one(store: Store) {
    let app = TestApp::spawn(store).await;
    let author = app.admin().await;
    let (_, second) = app.user(&author, "second", &["org_admin"]).await;
    let (_, third) = app.user(&author, "third", &["org_admin"]).await;

    let rule = app
        .ok(
            "/api/v1/rules",
            &author,
            rule_spec("no secrets in prompts", "organization"),
        )
        .await;
    let id = rule["id"].as_str().unwrap();
    let rule_path = format!("/api/v1/rules/{id}");
    let path = |action: &str| format!("{rule_path}/{action}");
    assert_eq!(app.fetch(&rule_path, &author).await["status"], "draft");

    refused(&app, &second, &path("approve"), json!({}), "not_pending").await;
    app.ok(&path("submit"), &author, json!({})).await;
    refused(&app, &author, &path("approve"), json!({}), "self_approval").await;
    app.ok(&path("approve"), &second, json!({})).await;
    refused(
        &app,
        &second,
        &path("approve"),
        json!({}),
        "already_approved_by",
    )
    .await;
    let rule = app.fetch(&rule_path, &author).await;
    assert_eq!(rule["status"], "pending", "one approval of two: {rule}");
    assert_eq!(rule["working"]["approvals"].as_array().unwrap().len(), 1);

    app.ok(&path("approve"), &third, json!({})).await;
    let rule = app.fetch(&rule_path, &author).await;
    assert_eq!(rule["status"], "approved", "{rule}");
    assert_eq!(rule["approved"]["number"], 1);
    assert_eq!(
        rule["organization_enforcement"]["mode"], "block",
        "org rules default to block"
    );

    // Approved revisions are immutable: editing needs a new revision, and the approved one stays in force.
    let (status, problem) = app
        .put(
            &format!("/api/v1/rules/{id}"),
            &author,
            rule_spec("changed", "organization"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["rule"], "not_editable");
    app.ok(
        &path("revisions"),
        &author,
        rule_spec("no secrets, ever", "organization"),
    )
    .await;
    let rule = app.fetch(&rule_path, &author).await;
    assert_eq!(rule["approved"]["number"], 1);
    assert_eq!(rule["approved"]["spec"]["name"], "no secrets in prompts");
    assert_eq!(rule["working"]["number"], 2);
    assert_eq!(rule["working"]["state"], "draft");
    refused(
        &app,
        &author,
        &path("revisions"),
        rule_spec("again", "organization"),
        "revision_already_open",
    )
    .await;

    // A rejection needs a reason; a rejected revision can be edited and submitted again.
    app.ok(&path("submit"), &author, json!({})).await;
    let (status, problem) = app
        .post(&path("reject"), &second, json!({"reason": "  "}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "reason");
    app.ok(&path("reject"), &second, json!({"reason": "too vague"}))
        .await;
    let rule = app.fetch(&rule_path, &author).await;
    assert_eq!(rule["working"]["state"], "rejected");
    assert_eq!(rule["working"]["rejection_reason"], "too vague");
    let (status, _) = app
        .put(
            &format!("/api/v1/rules/{id}"),
            &author,
            rule_spec("clearer", "organization"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = app
        .put(&path("enforcement"), &author, json!({"mode": "warning"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.ok(&path("archive"), &author, json!({})).await;
    refused(&app, &author, &path("submit"), json!({}), "archived").await;
    assert_eq!(app.fetch(&rule_path, &author).await["status"], "archived");
}

async fn teams_attach_approved_rules_with_a_mode(store: Store) {
    let app = TestApp::spawn(store).await;
    let (admin, second) = app.admins().await;
    let (lead_id, lead) = app.user(&admin, "lead", &["member"]).await;

    let team = app.team(&admin, "Payments").await;
    app.add_member(&admin, &team, &lead_id, "team_admin").await;
    refused(
        &app,
        &lead,
        &format!("/api/v1/teams/{team}/members"),
        json!({"user_id": lead_id, "role": "member"}),
        "already_member",
    )
    .await;

    let draft = app
        .ok("/api/v1/rules", &admin, rule_spec("draft only", "team"))
        .await;
    refused(
        &app,
        &lead,
        &format!("/api/v1/teams/{team}/rules"),
        json!({"rule_id": draft["id"], "enforcement": {"mode": "block"}}),
        "rule_not_approved",
    )
    .await;

    let spec = rule_spec("review before merge", "team");
    let rule = approve(&app, &admin, &second, spec).await;

    let (status, problem) = app
        .post(
            &format!("/api/v1/teams/{team}/rules"),
            &lead,
            json!({"rule_id": rule, "enforcement": {"mode": "temporary"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "temporary_timeout_secs");
    attach_with(&app, &lead, &team, &rule, temporary(7200)).await;
    let (status, _) = app
        .patch(
            &format!("/api/v1/teams/{team}/rules/{rule}"),
            &lead,
            json!({"mode": "warning"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let view = app.fetch(&format!("/api/v1/teams/{team}"), &lead).await;
    assert_eq!(view["rules"][0]["enforcement"]["mode"], "warning", "{view}");
    assert_eq!(view["rules"][0]["rule_revision"], 1);

    let org = approve(&app, &admin, &second, rule_spec("org wide", "organization")).await;
    let (_, third) = app.user(&admin, "third", &["org_admin"]).await;
    app.ok(&format!("/api/v1/rules/{org}/approve"), &third, json!({}))
        .await;
    refused(
        &app,
        &lead,
        &format!("/api/v1/teams/{team}/rules"),
        json!({"rule_id": org, "enforcement": {"mode": "block"}}),
        "organization_rules_apply_to_all_teams",
    )
    .await;

    let attached = format!("/api/v1/teams/{team}/rules/{rule}");
    let (status, _) = app.delete(&attached, &lead).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = app.delete(&attached, &lead).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["rule"], "not_attached");
    app.ok(&format!("/api/v1/teams/{team}/archive"), &admin, json!({}))
        .await;
    assert_eq!(
        app.fetch(&format!("/api/v1/teams/{team}"), &admin).await["archived"],
        true
    );
}

async fn change_requests_flow_from_report_to_exception(store: Store) {
    let app = TestApp::spawn(store).await;
    let (admin, second) = app.admins().await;
    let (lead_id, lead) = app.user(&admin, "lead", &["member"]).await;
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    let team = app.team(&admin, "Search").await;
    app.add_member(&admin, &team, &lead_id, "team_admin").await;
    app.add_member(&admin, &team, &dev_id, "member").await;
    let rule = approve(&app, &admin, &second, rule_spec("explain diffs", "team")).await;
    attach_with(&app, &lead, &team, &rule, temporary(3600)).await;
    let enrolled = app.enroll_agent(&dev, "dev-laptop", "Dev laptop").await;
    let agent = enrolled["token"].as_str().unwrap().to_owned();
    assert!(agent.starts_with("eda_"));

    let report = |report_id: &str, new_hash: char| {
        json!({
            "team_id": team, "rule_id": rule, "file": "/home/dev/.claude/CLAUDE.md", "layer": "team",
            "original_hash": "a".repeat(64), "new_hash": new_hash.to_string().repeat(64),
            "diff": "-old\n+new\n", "report_id": report_id,
        })
    };
    let opened = app
        .ok("/api/v1/change-requests", &agent, report("report-1", 'b'))
        .await;
    let cr = opened["id"].as_str().unwrap().to_owned();
    let cr_path = format!("/api/v1/change-requests/{cr}");
    let change = |action: &str| format!("{cr_path}/{action}");
    let again = app
        .ok("/api/v1/change-requests", &agent, report("report-1", 'b'))
        .await;
    assert_eq!(
        again["id"], opened["id"],
        "a report delivered twice opens one change request"
    );
    let view = app.fetch(&cr_path, &dev).await;
    assert_eq!(view["status"], "pending", "{view}");
    assert_eq!(view["team_id"], team.as_str());
    assert!(view["timeout_at"].is_string());

    let amended = app
        .ok(
            &change("amend"),
            &agent,
            json!({"new_hash": "c".repeat(64), "diff": "-old\n+newer\n", "report_id": "report-2"}),
        )
        .await;
    assert_eq!(amended["version"], 2);
    refused(
        &app,
        &lead,
        &change("reject"),
        json!({"reason": ""}),
        "invalid_value",
    )
    .await;
    app.ok(&change("reject"), &lead, json!({"reason": "keep the rule"}))
        .await;
    refused(&app, &lead, &change("approve"), json!({}), "not_pending").await;

    app.ok(
        &change("exception"),
        &dev,
        json!({"justification": "the release needs it", "kind": "time_limited", "until": "2099-01-01T00:00:00Z"}),
    )
    .await;
    refused(
        &app,
        &dev,
        &change("exception"),
        json!({"justification": "again", "kind": "permanent"}),
        "exception_already_requested",
    )
    .await;
    app.ok(
        &change("exception/grant"),
        &lead,
        json!({"until": "2099-01-01T00:00:00Z"}),
    )
    .await;
    let view = app.fetch(&cr_path, &admin).await;
    assert_eq!(view["status"], "exception_granted", "{view}");

    // Two more reports: one the lead approves, one its developer withdraws.
    let decisions = [
        ("report-3", 'd', &lead, "approve", "approved"),
        ("report-4", 'e', &dev, "withdraw", "withdrawn"),
    ];
    for (report_id, hash, token, action, status) in decisions {
        let report = report(report_id, hash);
        let opened = app.created("/api/v1/change-requests", &agent, report).await;
        let path = format!("/api/v1/change-requests/{opened}");
        app.ok(&format!("{path}/{action}"), token, json!({})).await;
        assert_eq!(app.fetch(&path, token).await["status"], status);
    }
}

async fn agents_are_enrolled_and_revoked(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    let enrolled = app.enroll_agent(&dev, "m-1", "Laptop").await;
    let id = enrolled["id"].as_str().unwrap().to_owned();
    let token = enrolled["token"].as_str().unwrap().to_owned();
    let view = app.fetch(&format!("/api/v1/agents/{id}"), &dev).await;
    assert_eq!(view["user_id"], dev_id.as_str());
    assert_eq!(view["revoked"], false);
    // The agent token authenticates the agent (it may not read user endpoints).
    let (status, _) = app.get("/api/v1/users/me", &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.ok(
        &format!("/api/v1/agents/{id}/revoke"),
        &admin,
        json!({"reason": "laptop lost"}),
    )
    .await;
    let (status, _) = app.get("/api/v1/users/me", &token).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked agent token is refused at once"
    );
    assert_eq!(
        app.fetch(&format!("/api/v1/agents/{id}"), &admin).await["revoked"],
        true
    );
}

on_both_stores!(
    organization_rules_need_two_approvals_and_revisions_keep_the_approved_one,
    teams_attach_approved_rules_with_a_mode,
    change_requests_flow_from_report_to_exception,
    agents_are_enrolled_and_revoked,
);
