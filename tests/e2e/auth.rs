//! Sign in, refresh, sign out, deactivation: tokens stop working at once.

use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Store, TestApp};
use crate::on_both_stores;
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn login_refresh_and_logout(store: Store) {
    let app = TestApp::spawn(store).await;
    let (status, tokens) = app.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["expires_in"].as_u64().unwrap() > 0);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    let me = app.fetch("/api/v1/users/me", &access).await;
    assert_eq!(me["email"], ADMIN_EMAIL);

    // A refresh token works once; the old one is then refused.
    let (status, renewed) = app
        .post_anonymous("/api/v1/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let (status, _) = app
        .post_anonymous("/api/v1/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Presenting the exchanged refresh token again ended that session (tests/e2e/secrets.rs): sign in
    // anew. Logout closes the session: its access token and refresh token stop working.
    let (status, renewed) = app.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let new_access = renewed["access_token"].as_str().unwrap();
    let (status, _) = app
        .call(Method::POST, "/api/v1/auth/logout", Some(new_access), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = app.get("/api/v1/users/me", new_access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert_eq!(problem["status"], 401);
    let (status, _) = app
        .post_anonymous(
            "/api/v1/auth/refresh",
            json!({"refresh_token": renewed["refresh_token"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn wrong_credentials_are_one_401(store: Store) {
    let app = TestApp::spawn(store).await;
    for (email, password) in [
        (ADMIN_EMAIL, "not-the-password"),
        ("nobody@example.com", ADMIN_PASSWORD),
    ] {
        let response = app
            .send(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
                &[],
            )
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
    }
}

async fn deactivating_a_user_revokes_their_tokens_at_once(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (user_id, token) = app.user(&admin, "dora", &["member"]).await;
    let _ = app.fetch("/api/v1/users/me", &token).await;

    for (action, why) in [
        ("deactivate", "a deactivated user's token must stop working"),
        (
            "reactivate",
            "deactivation closed the old sessions for good",
        ),
    ] {
        let path = format!("/api/v1/users/{user_id}/{action}");
        app.ok(&path, &admin, json!({})).await;
        let (status, _) = app.get("/api/v1/users/me", &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
    }
}

async fn no_user_is_seeded_with_a_known_password(store: Store) {
    let app = TestApp::spawn(store).await;
    for (email, password) in [
        ("admin@edict.local", "admin"),
        ("admin@example.com", "admin"),
        ("admin@example.com", "password"),
    ] {
        let (status, _) = app.sign_in(email, password).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}

async fn changing_a_password_keeps_the_old_one_out(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (user_id, token) = app.user(&admin, "pat", &["member"]).await;
    let (_, me) = app.get("/api/v1/users/me", &token).await;
    let email = me["email"].as_str().unwrap().to_owned();
    let other_session = app.login(&email, "pat-password-123").await;
    let (status, body) = app.put(&format!("/api/v1/users/{user_id}/password"), &token, json!({"current_password": "pat-password-123", "new_password": "a-brand-new-passphrase"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app.get("/api/v1/users/me", &token).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the session that changed it stays open"
    );
    let (status, _) = app.get("/api/v1/users/me", &other_session).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "every other session is closed"
    );
    let (status, _) = app.sign_in(&email, "pat-password-123").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old password no longer works"
    );
    app.login(&email, "a-brand-new-passphrase").await;
    let (status, body) = app.put(&format!("/api/v1/users/{user_id}/password"), &token, json!({"current_password": "wrong-password-123", "new_password": "another-new-passphrase"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

on_both_stores!(
    login_refresh_and_logout,
    wrong_credentials_are_one_401,
    deactivating_a_user_revokes_their_tokens_at_once,
    no_user_is_seeded_with_a_known_password,
    changing_a_password_keeps_the_old_one_out,
);
