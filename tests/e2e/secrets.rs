//! Secrets kept secret: token responses never stored by the idempotency layer (the store's bytes are
//! searched for them), access tokens bound to their session's end, and a reused refresh token
//! revoking its whole session.

use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Layout, Store, TestApp, eventually};
use crate::on_both_stores;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Every byte of the store as text: a `pg_dump` of the database, or the SQLite file and its WAL.
async fn store_bytes(app: &TestApp) -> String {
    let url = &app.database_url;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let mut bytes = std::fs::read(path).unwrap();
        for suffix in ["-wal", "-journal"] {
            if let Ok(more) = std::fs::read(format!("{path}{suffix}")) {
                bytes.extend(more);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        let output = tokio::process::Command::new("pg_dump")
            .args(["--data-only", url])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "pg_dump failed");
        String::from_utf8(output.stdout).unwrap()
    }
}

/// A POST with an `Idempotency-Key`; answers status and body.
async fn post_once(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    key: &str,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = app
        .send(
            Method::POST,
            path,
            token,
            Some(body),
            &[("idempotency-key", key)],
        )
        .await;
    let status = response.status();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn token_responses_are_never_kept_by_the_idempotency_layer(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let mut secrets = Vec::new();
    let mut cache_controls = Vec::new();

    // Sign-in, without and with credentials of another session.
    let credentials = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    for bearer in [None, Some(admin.as_str())] {
        let (status, headers, tokens) = post_once(
            &app,
            "/api/v1/auth/login",
            bearer,
            "login-1",
            credentials.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        cache_controls.push(headers.get("cache-control").cloned());
        secrets.push(tokens["access_token"].as_str().unwrap().to_owned());
        secrets.push(tokens["refresh_token"].as_str().unwrap().to_owned());
    }

    // An enrollment token, an agent token, an agent token traded for the enrollment token.
    let me = app.get("/api/v1/users/me", &admin).await.1;
    let enroll_once = || {
        let body = json!({"user_id": me["id"], "uses": 2});
        post_once(
            &app,
            "/api/v1/enrollment-tokens",
            Some(&admin),
            "enroll-token-1",
            body,
        )
    };
    let (status, headers, created) = enroll_once().await;
    assert_eq!(status, StatusCode::OK, "{created}");
    cache_controls.push(headers.get("cache-control").cloned());
    let enrollment_token = created["token"].as_str().unwrap().to_owned();
    secrets.push(enrollment_token.clone());
    let (status, _, agent) = post_once(
        &app,
        "/api/v1/agents",
        Some(&admin),
        "agent-1",
        json!({"machine_id": "m-secret-1", "machine_name": "one"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{agent}");
    secrets.push(agent["token"].as_str().unwrap().to_owned());
    let (status, _, enrolled) = post_once(
        &app,
        "/api/v1/agents/enroll",
        Some(&admin),
        "agent-2",
        json!({"enrollment_token": enrollment_token, "machine_id": "m-secret-2"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{enrolled}");
    secrets.push(enrolled["token"].as_str().unwrap().to_owned());

    // The idempotency layer did remember the keys it handled (the search below searches the right
    // place)...
    let dump = store_bytes(&app).await;
    assert!(
        dump.contains("enroll-token-1"),
        "the idempotency keys are in the store"
    );
    // ...and no secret is anywhere in the store.
    for secret in &secrets {
        assert!(
            !dump.contains(secret.as_str()),
            "a secret is stored in plain text: {}…",
            &secret[..12]
        );
    }

    // A retry is not run again (no second token) and does not get the secret: it is told why.
    let (status, _, replay) = enroll_once().await;
    assert_eq!(status, StatusCode::CONFLICT, "{replay}");
    assert_eq!(
        replay["type"],
        "urn:edict:problem:idempotency-response-withheld"
    );
    let listed = app.get("/api/v1/enrollment-tokens", &admin).await.1;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    // Token responses tell caches not to keep them either (RFC 6749 §5.1).
    for value in cache_controls {
        assert_eq!(value.unwrap(), "no-store");
    }
}

async fn an_access_token_stops_working_when_its_session_ends(store: Store) {
    let app =
        TestApp::spawn_with_vars(store, Layout::default(), &[("EDICT_SESSION_TTL_SECS", "4")])
            .await;
    let started = Instant::now();
    let (status, tokens) = app.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let _ = app.fetch("/api/v1/users/me", &access).await;
    let ended = eventually(Duration::from_secs(15), || {
        let app = &app;
        let access = access.clone();
        async move {
            let (status, _) = app.get("/api/v1/users/me", &access).await;
            (status == StatusCode::UNAUTHORIZED).then_some(())
        }
    })
    .await;
    assert!(
        ended.is_some(),
        "the access token still works after its 4 s session ended"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "ended too early: {elapsed:?}"
    );
    // The session's refresh token ended with it.
    let (status, _) = app
        .post_anonymous(
            "/api/v1/auth/refresh",
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn reusing_a_rotated_refresh_token_revokes_the_session(store: Store) {
    let app = TestApp::spawn(store).await;
    let (_, first) = app.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let refresh = |token: Value| {
        let app = &app;
        async move {
            app.post_anonymous("/api/v1/auth/refresh", json!({"refresh_token": token}))
                .await
        }
    };
    let me = |token: Value| {
        let app = &app;
        async move {
            app.call(Method::GET, "/api/v1/users/me", token.as_str(), None)
                .await
                .0
        }
    };
    let (status, second) = refresh(first["refresh_token"].clone()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(me(first["access_token"].clone()).await, StatusCode::OK);
    assert_eq!(me(second["access_token"].clone()).await, StatusCode::OK);
    // Another session of the same user is not concerned.
    let other = app.admin().await;

    // The first refresh token again: someone holds a copy. Refused, and the session ends.
    let (status, _) = refresh(first["refresh_token"].clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        me(second["access_token"].clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me(first["access_token"].clone()).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = refresh(second["refresh_token"].clone()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the current refresh token ended too"
    );
    assert_eq!(me(Value::from(other)).await, StatusCode::OK);
}

on_both_stores!(
    token_responses_are_never_kept_by_the_idempotency_layer,
    an_access_token_stops_working_when_its_session_ends,
    reusing_a_rotated_refresh_token_revokes_the_session,
);
