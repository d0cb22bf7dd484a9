//! Bad input gets a clear problem+json answer and loses nothing; no client input produces a 500.

use crate::harness::{Store, TestApp, rule_spec};
use crate::on_both_stores;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn is_problem(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or_default() == "application/problem+json")
}

async fn malformed_bodies_are_400_problems(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let raw = |body: &'static str| {
        app.client
            .post(format!("{}/api/v1/rules", app.base))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "{",
        "[]",
        "{\"name\": 3}",
        "{\"layer\": \"team\"}",
        "null",
        "{\"name\":\"x\",\"layer\":\"galaxy\",\"content\":\"c\"}",
    ] {
        let response = raw(body).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "body {body}");
        assert!(is_problem(&response), "body {body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 400);
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:edict:problem:")
        );
    }
    let response = app
        .send(Method::GET, "/api/v1/nowhere", Some(&admin), None, &[])
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(is_problem(&response));
}

async fn invalid_values_name_their_field(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let mut spec = rule_spec("x", "team");
    spec["name"] = json!("n".repeat(201));
    let (status, problem) = app.post("/api/v1/rules", &admin, spec).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "name");
    assert_eq!(problem["rule"], "invalid_value");

    let mut spec = rule_spec("x", "team");
    spec["triggers"] = json!(["src/**/*.rs"]);
    let (status, problem) = app.post("/api/v1/rules", &admin, spec).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["rule"], "triggers_only_for_project_layer");

    let (status, problem) = app
        .call(
            Method::POST,
            &format!("/api/v1/rules/{}/submit", uuid::Uuid::new_v4()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, _) = app.get("/api/v1/rules/not-a-uuid", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn if_match_guards_against_lost_updates(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let created = app
        .ok("/api/v1/rules", &admin, rule_spec("guarded", "team"))
        .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["version"], 1);
    assert!(created["position"].as_i64().unwrap() > 0);

    let stale = app
        .send(
            Method::PUT,
            &format!("/api/v1/rules/{id}"),
            Some(&admin),
            Some(rule_spec("guarded 2", "team")),
            &[("if-match", "\"7\"")],
        )
        .await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let problem: Value = stale.json().await.unwrap();
    assert_eq!(problem["current_version"], 1);

    let fresh = app
        .send(
            Method::PUT,
            &format!("/api/v1/rules/{id}"),
            Some(&admin),
            Some(rule_spec("guarded 2", "team")),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(fresh.status(), StatusCode::OK);
    let (_, rule) = app.get(&format!("/api/v1/rules/{id}"), &admin).await;
    assert_eq!(rule["version"], 2);
    assert_eq!(rule["working"]["spec"]["name"], "guarded 2");

    let bad = app
        .send(
            Method::PUT,
            &format!("/api/v1/rules/{id}"),
            Some(&admin),
            Some(rule_spec("g", "team")),
            &[("if-match", "soon")],
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

async fn idempotency_key_makes_a_retry_safe(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let post = |key: &'static str, name: &'static str| {
        app.client
            .post(format!("{}/api/v1/rules", app.base))
            .bearer_auth(&admin)
            .header("idempotency-key", key)
            .json(&rule_spec(name, "team"))
            .send()
    };
    let first = post("key-1", "once").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let retry = post("key-1", "once").await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(
        first["id"], retry["id"],
        "the retry answers the first rule, it creates no second one"
    );

    let reused = post("key-1", "another body").await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let other = post("key-2", "once").await.unwrap();
    let other: Value = other.json().await.unwrap();
    assert_ne!(first["id"], other["id"], "another key is another request");
}

async fn garbage_never_produces_a_500(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let bodies = [
        json!({}),
        json!({"name": "", "layer": "team", "content": ""}),
        json!({"reason": ""}),
        json!({"reason": "x".repeat(3000)}),
        json!({"mode": "temporary"}),
        json!({"mode": "block", "temporary_timeout_secs": 5}),
        json!({"user_id": "nope", "role": "member"}),
        json!({"rule_id": uuid::Uuid::new_v4(), "enforcement": {"mode": "block"}}),
        json!({"email": "not-an-email", "name": "x", "password": "short", "roles": []}),
        json!({"machine_id": "", "machine_name": ""}),
        json!([1, 2, 3]),
        json!("string"),
    ];
    let id = uuid::Uuid::new_v4();
    let paths = [
        "/api/v1/rules".to_owned(),
        format!("/api/v1/rules/{id}/reject"),
        format!("/api/v1/rules/{id}/approve"),
        "/api/v1/teams".to_owned(),
        format!("/api/v1/teams/{id}/members"),
        format!("/api/v1/teams/{id}/rules"),
        format!("/api/v1/change-requests/{id}/reject"),
        format!("/api/v1/change-requests/{id}/exception"),
        "/api/v1/users".to_owned(),
        "/api/v1/agents".to_owned(),
    ];
    for path in &paths {
        for body in &bodies {
            let response = app
                .send(Method::POST, path, Some(&admin), Some(body.clone()), &[])
                .await;
            assert!(
                response.status().is_client_error() || response.status().is_success(),
                "POST {path} {body} answered {}",
                response.status()
            );
        }
    }
    // Existing resources with hostile bodies, and anonymous input to the sign-in endpoints.
    let rule = app
        .created("/api/v1/rules", &admin, rule_spec("target", "team"))
        .await;
    let hostile = [
        json!({"reason": "a\u{0}b"}),
        json!({"name": "n\u{0}", "layer": "team", "content": "c"}),
        json!({"name": "x".repeat(100_000), "layer": "team", "content": "c"}),
        json!({"mode": "temporary", "temporary_timeout_secs": u64::MAX}),
        json!({"priority": i64::MAX, "name": "x", "layer": "team", "content": "c"}),
    ];
    for body in &hostile {
        for path in [
            format!("/api/v1/rules/{rule}/reject"),
            format!("/api/v1/rules/{rule}/revisions"),
            "/api/v1/rules".into(),
        ] {
            let response = app
                .send(Method::POST, &path, Some(&admin), Some(body.clone()), &[])
                .await;
            assert!(
                response.status().is_client_error(),
                "POST {path} answered {}",
                response.status()
            );
        }
        let response = app
            .send(
                Method::PUT,
                &format!("/api/v1/rules/{rule}/enforcement"),
                Some(&admin),
                Some(body.clone()),
                &[],
            )
            .await;
        assert!(
            response.status().is_client_error(),
            "PUT enforcement answered {}",
            response.status()
        );
    }
    for body in [
        json!({"email": "a\u{0}@example.com", "password": "x"}),
        json!({"email": "admin@example.com", "password": "p\u{0}"}),
        json!({"email": "x".repeat(10_000), "password": "y".repeat(10_000)}),
        json!({"email": 3, "password": []}),
        json!({"refresh_token": "\u{0}"}),
    ] {
        for path in ["/api/v1/auth/login", "/api/v1/auth/refresh"] {
            let response = app
                .send(Method::POST, path, None, Some(body.clone()), &[])
                .await;
            assert!(
                response.status().is_client_error(),
                "POST {path} {body} answered {}",
                response.status()
            );
        }
    }
    // A body over the limit is refused from its announced length, before it is read. A client that
    // pushes megabytes may see the 413 or a reset, depending on how far it got when the server
    // answered; so the announced length is sent alone, and the answer read whole.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0_u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "an oversized body got: {answer}"
    );
    assert!(
        answer.contains("application/problem+json"),
        "an oversized body got: {answer}"
    );
}

async fn sigterm_lets_a_request_in_flight_finish(store: Store) {
    let mut app = TestApp::spawn(store).await;
    // A login is the slowest request (argon2): send it, then SIGTERM while it runs.
    let client = app.client.clone();
    let url = format!("{}/api/v1/auth/login", app.base);
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"email": crate::harness::ADMIN_EMAIL, "password": crate::harness::ADMIN_PASSWORD}))
            .send()
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let status = app.stop().await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(in_flight.await.unwrap().unwrap(), StatusCode::OK);
}

async fn an_idempotency_key_belongs_to_its_user(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (_, other) = app.user(&admin, "other-admin", &["org_admin"]).await;
    let post = |token: String| {
        app.client
            .post(format!("{}/api/v1/rules", app.base))
            .bearer_auth(token)
            .header("idempotency-key", "shared-key")
            .json(&rule_spec("same", "team"))
            .send()
    };
    let first: Value = post(admin.clone()).await.unwrap().json().await.unwrap();
    let response = post(other.clone()).await.unwrap();
    assert!(
        response.headers().get("idempotent-replayed").is_none(),
        "another user's key is never replayed"
    );
    let second: Value = response.json().await.unwrap();
    assert_ne!(first["id"], second["id"]);
    // Responses carrying secrets are never stored for replay.
    let enroll = |key: &'static str| {
        app.client
            .post(format!("{}/api/v1/agents", app.base))
            .bearer_auth(&admin)
            .header("idempotency-key", key)
            .json(&json!({"machine_id": "m", "machine_name": "M"}))
            .send()
    };
    let a: Value = enroll("enroll").await.unwrap().json().await.unwrap();
    let b: Value = enroll("enroll").await.unwrap().json().await.unwrap();
    assert_ne!(a["token"], b["token"]);
}

async fn a_second_start_on_the_same_data_loses_nothing(store: Store) {
    let mut app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let created = app
        .ok("/api/v1/rules", &admin, rule_spec("durable", "team"))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let status = app.stop().await;
    assert!(status.success(), "SIGTERM ends edict cleanly, got {status}");
    app.start().await;
    let admin = app.admin().await;
    let rule = app.fetch(&format!("/api/v1/rules/{id}"), &admin).await;
    assert_eq!(rule["working"]["spec"]["name"], "durable");
}

on_both_stores!(
    malformed_bodies_are_400_problems,
    invalid_values_name_their_field,
    if_match_guards_against_lost_updates,
    idempotency_key_makes_a_retry_safe,
    garbage_never_produces_a_500,
    sigterm_lets_a_request_in_flight_finish,
    an_idempotency_key_belongs_to_its_user,
    a_second_start_on_the_same_data_loses_nothing,
);
