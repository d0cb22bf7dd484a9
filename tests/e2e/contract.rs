//! The contract as a client sees it: single resources carry their version as a strong `ETag` and answer
//! 304 to an `If-None-Match` naming it; a 405 says which methods the route takes; a bad event-log cursor
//! is a 400; `min_position=0` (nothing to wait for) is answered at once; a JSON number or boolean is not
//! taken where the spec says string.

use crate::harness::{Store, TestApp, rule_spec};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn etag(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("etag")
        .expect("an ETag header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// GET `path` with `If-None-Match: tag`.
async fn if_none_match(app: &TestApp, token: &str, path: &str, tag: &str) -> reqwest::Response {
    let headers = [("if-none-match", tag)];
    app.send(Method::GET, path, Some(token), None, &headers)
        .await
}

/// GETs `path` and checks its `ETag` is `"version"`; then the same with `If-None-Match` is a 304 without
/// a body, and a stale `If-None-Match` is a 200.
async fn tagged(app: &TestApp, token: &str, path: &str, version: u64) {
    let response = app.send(Method::GET, path, Some(token), None, &[]).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    let tag = etag(&response);
    assert_eq!(tag, format!("\"{version}\""), "GET {path}");

    let response = if_none_match(app, token, path, &tag).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "GET {path}");
    assert_eq!(etag(&response), tag);
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "a 304 has no body"
    );

    let weak_list = format!("\"{}\", W/{tag}", version + 7);
    let response = if_none_match(app, token, path, &weak_list).await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_MODIFIED,
        "weak comparison, in a list"
    );

    let stale = format!("\"{}\"", version + 1);
    let response = if_none_match(app, token, path, &stale).await;
    assert_eq!(response.status(), StatusCode::OK, "a stale If-None-Match");
}

/// A server on SQLite, the admin's token, and what creating a team "Core" answered (`id`,
/// `position`).
async fn with_core_team() -> (TestApp, String, Value) {
    let app = TestApp::spawn(Store::Sqlite).await;
    let admin = app.admin().await;
    let team = app
        .ok("/api/v1/teams", &admin, json!({"name": "Core"}))
        .await;
    (app, admin, team)
}

#[tokio::test]
async fn single_resources_carry_their_version_as_etag() {
    let (app, admin, team) = with_core_team().await;
    let team_id = team["id"].as_str().unwrap();
    tagged(&app, &admin, &format!("/api/v1/teams/{team_id}"), 1).await;

    // The ETag is what If-Match takes: a write with it succeeds, a second one with the same is a 409.
    let rename = |name: &str| {
        let (path, body) = (format!("/api/v1/teams/{team_id}"), json!({"name": name}));
        let (app, admin) = (&app, &admin);
        async move {
            let headers = [("if-match", "\"1\"")];
            app.send(Method::PUT, &path, Some(admin), Some(body), &headers)
                .await
        }
    };
    let response = rename("Core platform").await;
    let status = response.status();
    let renamed = response.json::<Value>().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{renamed}");
    let response = rename("Core again").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    tagged(&app, &admin, &format!("/api/v1/teams/{team_id}"), 2).await;

    let rule = app
        .ok("/api/v1/rules", &admin, rule_spec("Run the tests", "team"))
        .await;
    let rule_id = rule["id"].as_str().unwrap();
    tagged(&app, &admin, &format!("/api/v1/rules/{rule_id}"), 1).await;

    let (user_id, user) = app.user(&admin, "dev", &["member"]).await;
    tagged(&app, &admin, &format!("/api/v1/users/{user_id}"), 1).await;
    tagged(&app, &user, "/api/v1/users/me", 1).await;

    let agent = app
        .ok("/api/v1/agents", &user, json!({"machine_id": "laptop-1"}))
        .await;
    let agent_id = agent["id"].as_str().unwrap();
    tagged(&app, &user, &format!("/api/v1/agents/{agent_id}"), 1).await;

    // The rule set's ETag is its revision (a new team's rule set is at revision 1).
    let position = team["position"].as_i64().unwrap();
    let path = format!("/api/v1/teams/{team_id}/ruleset?min_position={position}");
    let ruleset = app.fetch(&path, &admin).await;
    tagged(&app, &admin, &path, ruleset["revision"].as_u64().unwrap()).await;
}

#[tokio::test]
async fn a_method_a_route_does_not_take_is_a_405_naming_those_it_does() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let admin = app.admin().await;
    let response = app
        .send(Method::PATCH, "/api/v1/rules", Some(&admin), None, &[])
        .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response
        .headers()
        .get("allow")
        .expect("an Allow header")
        .to_str()
        .unwrap()
        .to_owned();
    let mut methods: Vec<&str> = allow.split(", ").collect();
    methods.sort_unstable();
    assert_eq!(methods, ["GET", "POST"]);
}

#[tokio::test]
async fn a_bad_event_log_cursor_is_a_400() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let admin = app.admin().await;
    for cursor in [
        "garbage",
        "1",
        "1.",
        ".1",
        "-1.5",
        "1.-5",
        "99999999999999999999.1",
        "1.99999999999999999999",
        "1.2.3",
    ] {
        let (status, problem) = app
            .get(&format!("/api/v1/events?after={cursor}"), &admin)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "after={cursor}: {problem}");
        assert_eq!(problem["field"], "after");
    }
}

#[tokio::test]
async fn min_position_zero_is_answered_at_once() {
    let (app, admin, team) = with_core_team().await;
    let team_id = team["id"].as_str().unwrap();
    let position = team["position"].as_i64().unwrap();
    let _ = app
        .fetch(
            &format!("/api/v1/teams/{team_id}/ruleset?min_position={position}"),
            &admin,
        )
        .await;
    for path in [
        "/api/v1/rules?min_position=0".to_owned(),
        "/api/v1/teams?min_position=0".to_owned(),
        format!("/api/v1/teams/{team_id}/ruleset?min_position=0"),
    ] {
        let started = Instant::now();
        let (status, body) = app.get(&path, &admin).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "GET {path} waited {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_number_or_boolean_is_not_taken_for_a_string() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let admin = app.admin().await;
    for body in [
        json!({"name": false}),
        json!({"name": 42}),
        json!({"name": ["Core"]}),
    ] {
        let (status, problem) = app.post("/api/v1/teams", &admin, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
    }
    let (status, problem) = app
        .post("/api/v1/agents", &admin, json!({"machine_id": true}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let page = app.fetch("/api/v1/teams?min_position=0", &admin).await;
    assert_eq!(page["items"], json!([]), "nothing was created");
}
