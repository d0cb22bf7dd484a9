//! Authority that one person cannot stretch (issue 16, item 5) and the role check before validation
//! (item 6), against the real `edict serve`: a sock-puppet admin's approval does not count while the
//! bootstrap admins count at once; only org_admins make team_admins; auditors change nothing; agent
//! tokens do only what agents do; a caller whose role may never call a route gets 403 before any
//! 400/422 about the body.

use crate::harness::{self, Store, TestApp, attach_with, eventually, rule_spec, temporary};
use crate::on_both_stores;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let (status, body) = app.get(path, token).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// A submitted organization rule drafted by `author`; answers its id.
async fn pending_org_rule(app: &TestApp, author: &str, name: &str) -> String {
    let rule = app
        .ok("/api/v1/rules", author, rule_spec(name, "organization"))
        .await;
    let id = rule["id"].as_str().unwrap().to_owned();
    app.ok(&format!("/api/v1/rules/{id}/submit"), author, json!({}))
        .await;
    id
}

async fn approve(app: &TestApp, token: &str, rule: &str) -> (StatusCode, Value) {
    app.post(&format!("/api/v1/rules/{rule}/approve"), token, json!({}))
        .await
}

/// Asserts a 422 `approver_on_probation` that says why and until when.
fn assert_on_probation(status: StatusCode, problem: &Value, because: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["rule"], "approver_on_probation", "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(because) && detail.contains("from"),
        "{problem}"
    );
}

async fn a_sock_puppet_admins_approval_does_not_count(store: Store) {
    let app = TestApp::spawn(store).await;
    let first = app.admin().await;
    // The installation's bootstrap admins (the first one, and the two an organization rule needs).
    let (_, second) = app.user(&first, "second", &["org_admin"]).await;
    let (_, third) = app.user(&first, "third", &["org_admin"]).await;
    // The attack: an admin creates another admin (an address they read) and approves with it.
    let (_, puppet) = app.user(&first, "puppet", &["org_admin"]).await;
    let rule = pending_org_rule(&app, &second, "no secrets in prompts").await;

    let (status, problem) = approve(&app, &puppet, &rule).await;
    assert_on_probation(status, &problem, "was created by another admin");
    let (status, body) = approve(&app, &first, &rule).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let state = get(&app, &first, &format!("/api/v1/rules/{rule}")).await;
    assert_eq!(
        state["status"], "pending",
        "the puppet's approval is not recorded: {state}"
    );
    assert_eq!(state["working"]["approvals"].as_array().unwrap().len(), 1);

    // A member made org_admin is a new admin too; so is an admin whose password another admin reset
    // (the resetter can sign in as them).
    let (member_id, _) = app.user(&first, "member", &["member"]).await;
    app.ok(
        &format!("/api/v1/users/{member_id}/roles"),
        &first,
        json!({"role": "org_admin"}),
    )
    .await;
    let member = {
        // Sign in again: the role is read at each request, but the password is the harness's.
        let body = get(&app, &first, &format!("/api/v1/users/{member_id}")).await;
        app.login(body["email"].as_str().unwrap(), "member-password-123")
            .await
    };
    let (status, problem) = approve(&app, &member, &rule).await;
    assert_on_probation(status, &problem, "was granted org_admin");

    let third_id = get(&app, &third, "/api/v1/users/me").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .put(
            &format!("/api/v1/users/{third_id}/password"),
            &first,
            json!({"new_password": "taken-over-by-first-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let email = get(&app, &first, &format!("/api/v1/users/{third_id}")).await["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let taken_over = app.login(&email, "taken-over-by-first-1").await;
    let (status, problem) = approve(&app, &taken_over, &rule).await;
    assert_on_probation(status, &problem, "had the password reset by another admin");
    assert_eq!(
        get(&app, &first, &format!("/api/v1/rules/{rule}")).await["status"],
        "pending"
    );
}

async fn the_bootstrap_admins_count_at_once(store: Store) {
    // With one approval per organization rule, the second admin a fresh installation creates counts
    // at once (the first writes, the second approves), and the third does not.
    let app = TestApp::spawn_with_vars(
        store,
        Default::default(),
        &[("EDICT_QUORUM_ORGANIZATION", "1")],
    )
    .await;
    let first = app.admin().await;
    let (_, second) = app.user(&first, "second", &["org_admin"]).await;
    let rule = pending_org_rule(&app, &first, "first rule, first day").await;
    let (status, body) = approve(&app, &second, &rule).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        get(&app, &first, &format!("/api/v1/rules/{rule}")).await["status"],
        "approved"
    );
    let (_, third) = app.user(&first, "third", &["org_admin"]).await;
    let rule = pending_org_rule(&app, &first, "second rule").await;
    let (status, problem) = approve(&app, &third, &rule).await;
    assert_on_probation(status, &problem, "was created by another admin");
}

on_both_stores!(
    a_sock_puppet_admins_approval_does_not_count,
    the_bootstrap_admins_count_at_once
);

#[tokio::test]
async fn the_probation_is_configurable_and_zero_turns_it_off() {
    let app =
        TestApp::spawn_setting(Store::Postgres, &[("EDICT_QUORUM_PROBATION_SECS", "0")]).await;
    let first = app.admin().await;
    let (_, second) = app.user(&first, "second", &["org_admin"]).await;
    let (_, _third) = app.user(&first, "third", &["org_admin"]).await;
    let (_, fourth) = app.user(&first, "fourth", &["org_admin"]).await;
    let rule = pending_org_rule(&app, &first, "r").await;
    for token in [&second, &fourth] {
        let (status, body) = approve(&app, token, &rule).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// A team with an org_admin-appointed team_admin `lead`, a second one `peer` and a member.
struct Team {
    id: String,
    lead: String,
    lead_id: String,
    peer_id: String,
    member_id: String,
    outsider_id: String,
}

async fn team(app: &TestApp, admin: &str) -> Team {
    let id = app
        .ok("/api/v1/teams", admin, json!({"name": "Platform"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (lead_id, lead) = app.user(admin, "lead", &["member"]).await;
    let (peer_id, _) = app.user(admin, "peer", &["member"]).await;
    let (member_id, _) = app.user(admin, "member", &["member"]).await;
    let (outsider_id, _) = app.user(admin, "outsider", &["member"]).await;
    for (user, role) in [
        (&lead_id, "team_admin"),
        (&peer_id, "team_admin"),
        (&member_id, "member"),
    ] {
        app.add_member(admin, &id, user, role).await;
    }
    Team {
        id,
        lead,
        lead_id,
        peer_id,
        member_id,
        outsider_id,
    }
}

/// The role of `user` in a team document.
fn role_in<'a>(team: &'a Value, user: &str) -> &'a str {
    team["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == user)
        .and_then(|m| m["role"].as_str())
        .unwrap_or("none")
}

#[tokio::test]
async fn a_team_admin_cannot_make_team_admins_nor_demote_one_an_org_admin_appointed() {
    let app = TestApp::spawn(Store::Postgres).await;
    let admin = app.admin().await;
    let t = team(&app, &admin).await;
    let members = format!("/api/v1/teams/{}/members", t.id);
    let refusals = [
        (
            Method::POST,
            members.clone(),
            Some(json!({"user_id": t.outsider_id, "role": "team_admin"})),
        ),
        (
            Method::PUT,
            format!("{members}/{}", t.member_id),
            Some(json!({"role": "team_admin"})),
        ),
        (
            Method::PUT,
            format!("{members}/{}", t.peer_id),
            Some(json!({"role": "member"})),
        ),
        (Method::DELETE, format!("{members}/{}", t.peer_id), None),
    ];
    for (method, path, body) in refusals {
        let (status, problem) = app
            .call(method.clone(), &path, Some(&t.lead), body.clone())
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {path} {body:?}: {problem}"
        );
    }
    let team = get(&app, &admin, &format!("/api/v1/teams/{}", t.id)).await;
    assert_eq!(role_in(&team, &t.peer_id), "team_admin", "{team}");
    assert_eq!(role_in(&team, &t.member_id), "member", "{team}");

    // What a team admin still does: members in and out, and stepping down themself.
    app.ok(
        &members,
        &t.lead,
        json!({"user_id": t.outsider_id, "role": "member"}),
    )
    .await;
    let (status, body) = app
        .delete(&format!("{members}/{}", t.outsider_id), &t.lead)
        .await;
    assert!(status.is_success(), "{body}");
    // The org_admin appoints.
    let (status, body) = app
        .put(
            &format!("{members}/{}", t.member_id),
            &admin,
            json!({"role": "team_admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .put(
            &format!("{members}/{}", t.lead_id),
            &t.lead,
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "stepping down: {body}");
}

#[tokio::test]
async fn auditors_change_nothing() {
    let app = TestApp::spawn(Store::Postgres).await;
    let admin = app.admin().await;
    let (auditor_id, auditor) = app.user(&admin, "auditor", &["auditor"]).await;

    // No device-code denial (approval was refused already).
    let (status, grant) = app.device_code("box-1", "Build box").await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let code = grant["user_code"].as_str().unwrap();
    let (status, problem) = app
        .call(
            Method::POST,
            &format!("/api/v1/device/requests/{code}/deny"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let request = get(&app, &admin, &format!("/api/v1/device/requests/{code}")).await;
    assert_eq!(request["status"], "pending", "{request}");

    // No agents owned through enrollment tokens: none is made for an auditor, and one made for a
    // member who became an auditor enrolls nothing.
    let (status, problem) = app
        .post(
            "/api/v1/enrollment-tokens",
            &admin,
            json!({"user_id": auditor_id, "uses": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (later_id, _) = app.user(&admin, "later-auditor", &["member"]).await;
    let token = app
        .ok(
            "/api/v1/enrollment-tokens",
            &admin,
            json!({"user_id": later_id, "uses": 1}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ok(
        &format!("/api/v1/users/{later_id}/roles"),
        &admin,
        json!({"role": "auditor"}),
    )
    .await;
    let (status, problem) = app
        .post_anonymous(
            "/api/v1/agents/enroll",
            json!({"enrollment_token": token, "machine_id": "m-1", "machine_name": "M1"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    // Nor enrolled by an org_admin for them.
    let (status, problem) = app
        .post(
            "/api/v1/agents",
            &admin,
            json!({"user_id": auditor_id, "machine_id": "m-2", "machine_name": "M2"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");

    // No team roles: an auditor is not made team_admin, and one who was (before the role) acts as
    // nothing.
    let t = team(&app, &admin).await;
    let (status, problem) = app
        .post(
            &format!("/api/v1/teams/{}/members", t.id),
            &admin,
            json!({"user_id": auditor_id, "role": "team_admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["rule"], "auditors_change_nothing", "{problem}");
    app.ok(
        &format!("/api/v1/users/{}/roles", t.lead_id),
        &admin,
        json!({"role": "auditor"}),
    )
    .await;
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/api/v1/teams/{}/members/{}", t.id, t.member_id),
            json!({"role": "member"}),
        ),
        (
            Method::POST,
            format!("/api/v1/teams/{}/members", t.id),
            json!({"user_id": t.outsider_id, "role": "member"}),
        ),
        (
            Method::PUT,
            format!("/api/v1/teams/{}", t.id),
            json!({"name": "Renamed by an auditor"}),
        ),
    ] {
        let (status, problem) = app
            .call(method.clone(), &path, Some(&t.lead), Some(body))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {problem}");
    }
}

#[tokio::test]
async fn agent_tokens_only_do_what_agents_do() {
    let app = TestApp::spawn(Store::Postgres).await;
    let (admin, second) = app.admins().await;
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    let team = app
        .ok("/api/v1/teams", &admin, json!({"name": "Platform"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.add_member(&admin, &team, &dev_id, "member").await;
    let rule = harness::approve(&app, &admin, &second, rule_spec("temporary", "team")).await;
    attach_with(&app, &admin, &team, &rule, temporary(3600)).await;
    let agent = app.enroll_agent(&dev, "laptop", "Laptop").await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // What agents do: report a change, appeal a decision.
    let change = app
        .ok(
            "/api/v1/change-requests",
            &agent,
            json!({
                "team_id": team, "rule_id": rule, "file": "/home/dev/.claude/CLAUDE.md", "layer": "team",
                "original_hash": HASH_A, "new_hash": HASH_B, "diff": "-a\n+b\n", "report_id": "r-1",
            }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ok(
        &format!("/api/v1/change-requests/{change}/reject"),
        &admin,
        json!({"reason": "no"}),
    )
    .await;
    app.ok(
        &format!("/api/v1/change-requests/{change}/exception"),
        &agent,
        json!({"justification": "we pair instead", "kind": "permanent"}),
    )
    .await;

    // What its user does, it does not: read rule sets, change requests, anything else.
    for path in [
        format!("/api/v1/teams/{team}/ruleset"),
        format!("/api/v1/teams/{team}/ruleset/rendered?layer=team"),
        format!("/api/v1/teams/{team}/convergence"),
        format!("/api/v1/change-requests/{change}"),
        "/api/v1/change-requests".to_owned(),
        format!("/api/v1/teams/{team}"),
        "/api/v1/agents".to_owned(),
    ] {
        let (status, problem) = app.get(&path, &agent).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "GET {path}: {problem}");
        assert_eq!(problem["status"], 403, "problem+json: {problem}");
    }
    let (status, problem) = app
        .post(
            &format!("/api/v1/change-requests/{change}/withdraw"),
            &agent,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    // Its user still reads them (the rule set once its projection has caught up with the attachment).
    let path = format!("/api/v1/teams/{team}/ruleset");
    let read = eventually(Duration::from_secs(10), || async {
        let (status, _) = app.get(&path, &dev).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(read.is_some(), "the member reads the team's rule set");
    get(&app, &dev, &format!("/api/v1/change-requests/{change}")).await;
}

#[tokio::test]
async fn a_role_that_may_never_call_a_route_gets_403_before_any_body_validation() {
    let app = TestApp::spawn(Store::Postgres).await;
    let admin = app.admin().await;
    let (member_id, member) = app.user(&admin, "member", &["member"]).await;
    let (_, auditor) = app.user(&admin, "auditor", &["auditor"]).await;
    let invalid = [
        ("/api/v1/rules", json!({"name": 5})),
        ("/api/v1/users", json!({"email": "not an email"})),
        ("/api/v1/teams", json!({"name": ""})),
        ("/api/v1/enrollment-tokens", json!({"uses": 0})),
        (
            &*format!("/api/v1/users/{member_id}/roles"),
            json!({"role": "emperor"}),
        ),
    ];
    for (path, body) in &invalid {
        for (who, token) in [("member", &member), ("auditor", &auditor)] {
            let (status, problem) = app.post(path, token, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{who} POST {path}: {problem}"
            );
            assert_eq!(problem["type"], "urn:edict:problem:forbidden", "{problem}");
        }
        // Not malformed JSON either.
        let response = app
            .send(
                Method::POST,
                path,
                Some(&member),
                None,
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "empty body {path}"
        );
        // The org_admin gets the validation answer.
        let (status, problem) = app.post(path, &admin, body.clone()).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "org_admin POST {path}: {status} {problem}"
        );
    }
    // The body is not even read: a request announcing a body past the limit, and sending none of it, is
    // answered at once, a 403 for the member (an org_admin gets the 413). Sending the body instead would
    // race the server's early answer and close (a broken pipe on the client).
    let announced = 2 * 1024 * 1024;
    assert_eq!(
        status_before_the_body(&app.base, &member, announced).await,
        403
    );
    assert_eq!(
        status_before_the_body(&app.base, &admin, announced).await,
        413
    );
    // Without a token: 401 before validation too.
    let (status, problem) = app
        .post_anonymous("/api/v1/rules", json!({"name": 5}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
}

/// The status `POST /api/v1/rules` answers to a request head announcing `length` bytes of body, none of
/// them sent: an answer within 10 s shows the server did not wait for the body.
async fn status_before_the_body(base: &str, token: &str, length: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/rules HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    let mut answer = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .expect("read the answer");
    let line = String::from_utf8_lossy(&answer[..read]);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {line}"))
}
