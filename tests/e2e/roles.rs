//! Every endpoint checks roles: no token is a 401, a wrong role a 403, the right role gets through.

use crate::harness::{Store, TestApp, approve, attach, attach_with, rule_spec};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// The callers of the table.
struct Callers {
    org_admin: String,
    second_admin: String,
    team_admin: String,
    member: String,
    outsider: String,
    auditor: String,
    agent: String,
}

impl Callers {
    fn token(&self, who: &str) -> &str {
        match who {
            "org_admin" => &self.org_admin,
            "second_admin" => &self.second_admin,
            "team_admin" => &self.team_admin,
            "member" => &self.member,
            "outsider" => &self.outsider,
            "auditor" => &self.auditor,
            "agent" => &self.agent,
            other => panic!("unknown caller {other}"),
        }
    }
}

/// One row: an endpoint, a body, a caller it must refuse (403) and one it must let through.
struct Row {
    method: Method,
    path: String,
    body: Option<Value>,
    wrong: &'static str,
    right: &'static str,
}

fn row(
    method: Method,
    path: String,
    body: Option<Value>,
    wrong: &'static str,
    right: &'static str,
) -> Row {
    Row {
        method,
        path,
        body,
        wrong,
        right,
    }
}

async fn approved_rule(app: &TestApp, admin: &str, second_admin: &str, name: &str) -> String {
    approve(app, admin, second_admin, rule_spec(name, "team")).await
}

#[tokio::test]
async fn every_endpoint_checks_roles() {
    let app = TestApp::spawn(Store::Postgres).await;
    let admin = app.admin().await;
    let (_, second_admin) = app.user(&admin, "second-admin", &["org_admin"]).await;
    let (team_admin_id, team_admin) = app.user(&admin, "team-admin", &["member"]).await;
    let (member_id, member) = app.user(&admin, "member", &["member"]).await;
    let (other_id, outsider) = app.user(&admin, "outsider", &["member"]).await;
    let (_, auditor) = app.user(&admin, "auditor", &["auditor"]).await;

    let team = app.team(&admin, "Platform").await;
    app.add_member(&admin, &team, &team_admin_id, "team_admin")
        .await;
    app.add_member(&admin, &team, &member_id, "member").await;

    let attached = approved_rule(&app, &admin, &second_admin, "attached").await;
    let temporary = approved_rule(&app, &admin, &second_admin, "temporary").await;
    let to_attach = approved_rule(&app, &admin, &second_admin, "to attach").await;
    attach(&app, &admin, &team, &attached).await;
    attach_with(
        &app,
        &admin,
        &team,
        &temporary,
        crate::harness::temporary(3600),
    )
    .await;
    let draft = app
        .created("/api/v1/rules", &admin, rule_spec("draft", "team"))
        .await;
    let to_archive = app
        .created("/api/v1/rules", &admin, rule_spec("to archive", "team"))
        .await;
    let to_reject = app
        .created("/api/v1/rules", &admin, rule_spec("to reject", "team"))
        .await;
    app.ok(
        &format!("/api/v1/rules/{to_reject}/submit"),
        &admin,
        json!({}),
    )
    .await;
    let org_rule = app
        .created("/api/v1/rules", &admin, rule_spec("org", "organization"))
        .await;
    app.ok(
        &format!("/api/v1/rules/{org_rule}/submit"),
        &admin,
        json!({}),
    )
    .await;
    app.ok(
        &format!("/api/v1/rules/{org_rule}/approve"),
        &second_admin,
        json!({}),
    )
    .await;
    let (_, third_admin) = app.user(&admin, "third-admin", &["org_admin"]).await;
    app.ok(
        &format!("/api/v1/rules/{org_rule}/approve"),
        &third_admin,
        json!({}),
    )
    .await;
    let other_team = app.team(&admin, "Other").await;

    let enrolled = app.enroll_agent(&member, "laptop-1", "Laptop").await;
    let agent_id = enrolled["id"].as_str().unwrap().to_owned();
    let agent = enrolled["token"].as_str().unwrap().to_owned();
    let report = |report_id: &str| {
        json!({
            "team_id": team, "rule_id": temporary, "file": "/home/m/.claude/CLAUDE.md", "layer": "team",
            "original_hash": HASH_A, "new_hash": HASH_B, "diff": "-a\n+b\n", "report_id": report_id,
        })
    };
    let cr = app
        .created("/api/v1/change-requests", &agent, report("r-1"))
        .await;
    let mut pending = Vec::new();
    for n in 0..3 {
        let opened = app
            .ok("/api/v1/change-requests", &agent, report(&format!("p-{n}")))
            .await;
        pending.push(opened["id"].as_str().unwrap().to_owned());
    }
    let (cr_reject, cr_withdraw, cr_amend) =
        (pending[0].clone(), pending[1].clone(), pending[2].clone());
    let rejected = app
        .created("/api/v1/change-requests", &agent, report("r-2"))
        .await;
    app.ok(
        &format!("/api/v1/change-requests/{rejected}/reject"),
        &team_admin,
        json!({"reason": "no"}),
    )
    .await;
    let excepted = app
        .created("/api/v1/change-requests", &agent, report("r-3"))
        .await;
    app.ok(
        &format!("/api/v1/change-requests/{excepted}/reject"),
        &team_admin,
        json!({"reason": "no"}),
    )
    .await;
    app.ok(
        &format!("/api/v1/change-requests/{excepted}/exception"),
        &member,
        json!({"justification": "needed for the release", "kind": "permanent"}),
    )
    .await;

    let denied = app
        .created("/api/v1/change-requests", &agent, report("r-5"))
        .await;
    app.ok(
        &format!("/api/v1/change-requests/{denied}/reject"),
        &team_admin,
        json!({"reason": "no"}),
    )
    .await;
    app.ok(
        &format!("/api/v1/change-requests/{denied}/exception"),
        &member,
        json!({"justification": "needed", "kind": "permanent"}),
    )
    .await;

    let callers = Callers {
        org_admin: admin.clone(),
        second_admin: second_admin.clone(),
        team_admin,
        member,
        outsider,
        auditor,
        agent,
    };
    let spec = rule_spec("edited", "team");
    let as_of = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // Device authorizations to look up, approve and deny, and an enrollment token to revoke.
    let mut user_codes = Vec::new();
    for machine in ["device-1", "device-2"] {
        let (_, grant) = app
            .post_anonymous("/api/v1/device/code", json!({"machine_id": machine}))
            .await;
        user_codes.push(grant["user_code"].as_str().unwrap().to_owned());
    }
    let enrollment_token = app
        .created("/api/v1/enrollment-tokens", &admin, json!({}))
        .await;
    let rows = vec![
        row(
            Method::POST,
            "/api/v1/rules".into(),
            Some(rule_spec("new", "team")),
            "team_admin",
            "org_admin",
        ),
        row(
            Method::GET,
            format!("/api/v1/rules/{draft}"),
            None,
            "agent",
            "member",
        ),
        row(
            Method::PUT,
            format!("/api/v1/rules/{draft}"),
            Some(spec.clone()),
            "auditor",
            "org_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/rules/{draft}/submit"),
            None,
            "member",
            "org_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/rules/{draft}/approve"),
            None,
            "team_admin",
            "second_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/rules/{to_reject}/reject"),
            Some(json!({"reason": "r"})),
            "auditor",
            "org_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/rules/{attached}/revisions"),
            Some(spec.clone()),
            "member",
            "org_admin",
        ),
        row(
            Method::PUT,
            format!("/api/v1/rules/{org_rule}/enforcement"),
            Some(json!({"mode": "warning"})),
            "team_admin",
            "org_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/rules/{to_archive}/archive"),
            None,
            "auditor",
            "org_admin",
        ),
        row(
            Method::POST,
            "/api/v1/teams".into(),
            Some(json!({"name": "T2"})),
            "team_admin",
            "org_admin",
        ),
        row(
            Method::GET,
            format!("/api/v1/teams/{team}"),
            None,
            "outsider",
            "member",
        ),
        row(
            Method::PUT,
            format!("/api/v1/teams/{team}"),
            Some(json!({"name": "Platform 2"})),
            "member",
            "team_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/teams/{team}/members"),
            Some(json!({"user_id": other_id, "role": "member"})),
            "member",
            "team_admin",
        ),
        row(
            Method::PUT,
            format!("/api/v1/teams/{team}/members/{other_id}"),
            Some(json!({"role": "member"})),
            "auditor",
            "team_admin",
        ),
        row(
            Method::DELETE,
            format!("/api/v1/teams/{team}/members/{other_id}"),
            None,
            "member",
            "team_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/teams/{team}/rules"),
            Some(json!({"rule_id": to_attach, "enforcement": {"mode": "warning"}})),
            "member",
            "team_admin",
        ),
        row(
            Method::PATCH,
            format!("/api/v1/teams/{team}/rules/{attached}"),
            Some(json!({"mode": "warning"})),
            "auditor",
            "team_admin",
        ),
        row(
            Method::DELETE,
            format!("/api/v1/teams/{team}/rules/{to_attach}"),
            None,
            "member",
            "team_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/teams/{other_team}/archive"),
            None,
            "team_admin",
            "org_admin",
        ),
        row(
            Method::POST,
            "/api/v1/change-requests".into(),
            Some(report("r-4")),
            "org_admin",
            "agent",
        ),
        row(
            Method::GET,
            format!("/api/v1/change-requests/{cr}"),
            None,
            "outsider",
            "member",
        ),
        row(
            Method::POST,
            format!("/api/v1/change-requests/{cr}/approve"),
            None,
            "member",
            "team_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/change-requests/{cr_reject}/reject"),
            Some(json!({"reason": "no"})),
            "auditor",
            "team_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/change-requests/{cr_withdraw}/withdraw"),
            None,
            "auditor",
            "member",
        ),
        row(
            Method::POST,
            format!("/api/v1/change-requests/{cr_amend}/amend"),
            Some(json!({"new_hash": "c".repeat(64), "diff": "", "report_id": "amend-1"})),
            "member",
            "agent",
        ),
        row(
            Method::POST,
            format!("/api/v1/change-requests/{rejected}/exception"),
            Some(json!({"justification": "j", "kind": "permanent"})),
            "auditor",
            "member",
        ),
        row(
            Method::POST,
            format!("/api/v1/change-requests/{excepted}/exception/grant"),
            Some(json!({})),
            "member",
            "team_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/change-requests/{denied}/exception/deny"),
            Some(json!({"reason": "no"})),
            "member",
            "team_admin",
        ),
        row(
            Method::POST,
            "/api/v1/users".into(),
            Some(
                json!({"email": "new@example.com", "name": "New", "password": "new-password-123", "roles": ["member"]}),
            ),
            "team_admin",
            "org_admin",
        ),
        row(
            Method::GET,
            format!("/api/v1/users/{member_id}"),
            None,
            "outsider",
            "auditor",
        ),
        row(
            Method::GET,
            "/api/v1/users/me".into(),
            None,
            "agent",
            "auditor",
        ),
        row(
            Method::POST,
            format!("/api/v1/users/{other_id}/roles"),
            Some(json!({"role": "auditor"})),
            "auditor",
            "org_admin",
        ),
        row(
            Method::DELETE,
            format!("/api/v1/users/{other_id}/roles/auditor"),
            None,
            "member",
            "org_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/users/{other_id}/deactivate"),
            None,
            "team_admin",
            "org_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/users/{other_id}/reactivate"),
            None,
            "auditor",
            "org_admin",
        ),
        row(Method::GET, "/api/v1/rules".into(), None, "agent", "member"),
        row(
            Method::GET,
            format!("/api/v1/rules/{attached}/revisions"),
            None,
            "agent",
            "member",
        ),
        row(Method::GET, "/api/v1/teams".into(), None, "agent", "member"),
        row(
            Method::GET,
            format!("/api/v1/teams/{team}/ruleset"),
            None,
            "outsider",
            "member",
        ),
        row(
            Method::GET,
            format!("/api/v1/teams/{team}/ruleset/rendered?layer=team"),
            None,
            "outsider",
            "member",
        ),
        row(
            Method::GET,
            "/api/v1/change-requests".into(),
            None,
            "agent",
            "member",
        ),
        row(
            Method::GET,
            "/api/v1/users".into(),
            None,
            "member",
            "auditor",
        ),
        row(
            Method::GET,
            "/api/v1/agents".into(),
            None,
            "agent",
            "member",
        ),
        row(
            Method::GET,
            "/api/v1/admin/projections".into(),
            None,
            "member",
            "auditor",
        ),
        row(
            Method::GET,
            "/api/v1/admin/projections/rule_catalog/hash".into(),
            None,
            "team_admin",
            "auditor",
        ),
        row(
            Method::POST,
            "/api/v1/admin/projections/agent_fleet/rebuild".into(),
            None,
            "auditor",
            "org_admin",
        ),
        // The history: auditors and org_admins; time travel as the live view.
        row(
            Method::GET,
            "/api/v1/events?aggregate_type=Rule".into(),
            None,
            "member",
            "auditor",
        ),
        row(
            Method::GET,
            format!("/api/v1/rules/{attached}/history"),
            None,
            "team_admin",
            "auditor",
        ),
        row(
            Method::GET,
            format!("/api/v1/teams/{team}/history"),
            None,
            "member",
            "org_admin",
        ),
        row(
            Method::GET,
            format!("/api/v1/change-requests/{cr}/history"),
            None,
            "member",
            "auditor",
        ),
        row(
            Method::GET,
            format!("/api/v1/users/{member_id}/history"),
            None,
            "outsider",
            "auditor",
        ),
        row(
            Method::GET,
            format!("/api/v1/agents/{agent_id}/history"),
            None,
            "member",
            "auditor",
        ),
        row(
            Method::GET,
            format!("/api/v1/teams/{team}/ruleset?as_of={as_of}"),
            None,
            "outsider",
            "member",
        ),
        row(
            Method::GET,
            format!("/api/v1/agents/{agent_id}/enforced?as_of={as_of}"),
            None,
            "outsider",
            "auditor",
        ),
        row(
            Method::POST,
            "/api/v1/agents".into(),
            Some(json!({"machine_id": "m-2", "machine_name": "M2"})),
            "auditor",
            "member",
        ),
        row(
            Method::GET,
            format!("/api/v1/agents/{agent_id}"),
            None,
            "outsider",
            "auditor",
        ),
        row(
            Method::POST,
            format!("/api/v1/agents/{agent_id}/revoke"),
            Some(json!({})),
            "auditor",
            "member",
        ),
        row(
            Method::GET,
            "/api/v1/audit/checkpoints".into(),
            None,
            "member",
            "auditor",
        ),
        row(
            Method::GET,
            "/api/v1/events/export".into(),
            None,
            "team_admin",
            "auditor",
        ),
        row(
            Method::POST,
            "/api/v1/auth/logout".into(),
            None,
            "agent",
            "auditor",
        ),
        row(
            Method::GET,
            format!("/api/v1/device/requests/{}", user_codes[0]),
            None,
            "agent",
            "member",
        ),
        row(
            Method::POST,
            format!("/api/v1/device/requests/{}/approve", user_codes[0]),
            Some(json!({"consent": true})),
            "auditor",
            "member",
        ),
        row(
            Method::POST,
            format!("/api/v1/device/requests/{}/deny", user_codes[1]),
            None,
            "agent",
            "member",
        ),
        row(
            Method::POST,
            "/api/v1/enrollment-tokens".into(),
            Some(json!({"note": "table"})),
            "team_admin",
            "org_admin",
        ),
        row(
            Method::GET,
            "/api/v1/enrollment-tokens".into(),
            None,
            "auditor",
            "org_admin",
        ),
        row(
            Method::POST,
            format!("/api/v1/enrollment-tokens/{enrollment_token}/revoke"),
            None,
            "member",
            "org_admin",
        ),
        // Last: an admin's reset closes every session of its user.
        row(
            Method::PUT,
            format!("/api/v1/users/{other_id}/password"),
            Some(json!({"new_password": "reset-by-admin-123"})),
            "member",
            "org_admin",
        ),
    ];
    let mut failures = Vec::new();
    for row in &rows {
        let (status, body) = app
            .call(row.method.clone(), &row.path, None, row.body.clone())
            .await;
        if status != StatusCode::UNAUTHORIZED {
            failures.push(format!(
                "{} {} without a token: {status} {body}",
                row.method, row.path
            ));
        }
        let (status, body) = app
            .call(
                row.method.clone(),
                &row.path,
                Some(callers.token(row.wrong)),
                row.body.clone(),
            )
            .await;
        if status != StatusCode::FORBIDDEN {
            failures.push(format!(
                "{} {} as {}: {status} {body}",
                row.method, row.path, row.wrong
            ));
        }
    }
    // The right roles last: some of them change state the refusals above must not have changed.
    for row in &rows {
        let (status, body) = app
            .call(
                row.method.clone(),
                &row.path,
                Some(callers.token(row.right)),
                row.body.clone(),
            )
            .await;
        if status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || status.is_server_error()
        {
            failures.push(format!(
                "{} {} as {}: {status} {body}",
                row.method, row.path, row.right
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "role checks failed:\n{}",
        failures.join("\n")
    );
}
