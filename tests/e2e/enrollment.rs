//! How machines get agent tokens: the device code flow (explicit consent, one collection) and
//! enrollment tokens (uses, revocation), against the real `edict serve`.

use crate::harness::{Store, TestApp};
use crate::on_both_stores;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn problem_slug(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or_default()
        .rsplit(':')
        .next()
        .unwrap_or_default()
}

async fn poll(app: &TestApp, device_code: &str) -> (StatusCode, Value) {
    app.post_anonymous("/api/v1/device/token", json!({"device_code": device_code}))
        .await
}

async fn start(app: &TestApp) -> (String, String) {
    let (status, grant) = app.device_code("box-1", "Build box").await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    assert_eq!(grant["interval"], 2);
    let user_code = grant["user_code"].as_str().unwrap().to_owned();
    assert_eq!(user_code.len(), 9, "{user_code}");
    (grant["device_code"].as_str().unwrap().to_owned(), user_code)
}

async fn device_codes_need_explicit_consent_and_are_collected_once(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    let (_, auditor) = app.user(&admin, "auditor", &["auditor"]).await;
    let (device_code, user_code) = start(&app).await;

    // Nobody decided yet.
    let (status, body) = poll(&app, &device_code).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem_slug(&body), "authorization-pending", "{body}");
    // Polling again at once is too fast (times are in seconds: one of two quick polls may cross a
    // second boundary, not both).
    let mut slugs = Vec::new();
    for _ in 0..2 {
        let (status, body) = poll(&app, &device_code).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        slugs.push(problem_slug(&body).to_owned());
    }
    assert!(slugs.iter().any(|s| s == "slow-down"), "{slugs:?}");

    // The consent step needs a signed-in user, and shows what asks.
    let path = format!("/api/v1/device/requests/{}", user_code.to_lowercase());
    let (status, _) = app.call(Method::GET, &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let request = app.fetch(&path, &dev).await;
    assert_eq!(request["machine_name"], "Build box");
    assert_eq!(request["status"], "pending");

    // No approval without an explicit `consent: true`; auditors change nothing.
    let approve = format!("/api/v1/device/requests/{user_code}/approve");
    let (status, body) = app.post(&approve, &dev, json!({"consent": false})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "consent");
    let (status, _) = app.post(&approve, &dev, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.post(&approve, &auditor, json!({"consent": true})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The approval answers the agent, never its token.
    let approved = app.ok(&approve, &dev, json!({"consent": true})).await;
    assert!(approved.get("token").is_none(), "{approved}");
    let agent_id = approved["agent_id"].as_str().unwrap().to_owned();
    let (status, body) = app.post(&approve, &dev, json!({"consent": true})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["rule"], "device_request_not_pending");

    // The agent collects its token once; it is the approver's machine, and the token works.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (status, credentials) = poll(&app, &device_code).await;
    assert_eq!(status, StatusCode::OK, "{credentials}");
    assert_eq!(credentials["agent_id"], agent_id.as_str());
    assert!(
        credentials["token"].as_str().unwrap().starts_with("eda_"),
        "{credentials}"
    );
    assert!(
        credentials["gateway_urls"][0]
            .as_str()
            .unwrap()
            .starts_with("ws://")
    );
    let agent = app.fetch(&format!("/api/v1/agents/{agent_id}"), &dev).await;
    assert_eq!(agent["user_id"], dev_id.as_str());
    assert_eq!(agent["machine_id"], "box-1");
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (status, body) = poll(&app, &device_code).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem_slug(&body), "expired-token", "{body}");

    // A denied request answers access-denied; an unknown code invalid-grant.
    let (device_code, user_code) = start(&app).await;
    app.ok(
        &format!("/api/v1/device/requests/{user_code}/deny"),
        &dev,
        json!({}),
    )
    .await;
    let (_, body) = poll(&app, &device_code).await;
    assert_eq!(problem_slug(&body), "access-denied", "{body}");
    let (_, body) = poll(&app, "edd_nothing").await;
    assert_eq!(problem_slug(&body), "invalid-grant", "{body}");

    // The approval page is served: a console page that signs in and asks for the code (the console's
    // tests drive it through consent).
    let page = app
        .client
        .get(format!("{}/device", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("Approve a device"), "{page}");
    assert!(page.contains(r#"name="code""#), "{page}");
}

async fn enrollment_tokens_have_uses_and_can_be_revoked(store: Store) {
    let app = TestApp::spawn(store).await;
    let admin = app.admin().await;
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    let create = json!({"user_id": dev_id, "uses": 2, "note": "CI runners"});

    // Only an org_admin creates one.
    let (status, _) = app
        .post("/api/v1/enrollment-tokens", &dev, create.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .post("/api/v1/enrollment-tokens", &admin, json!({"uses": 0}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "uses");
    let created = app.ok("/api/v1/enrollment-tokens", &admin, create).await;
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ede_"));
    let id = created["id"].as_str().unwrap().to_owned();

    let enroll = |machine: &str| json!({"enrollment_token": token, "machine_id": machine, "machine_name": machine});
    for machine in ["runner-1", "runner-2"] {
        let (status, credentials) = app
            .post_anonymous("/api/v1/agents/enroll", enroll(machine))
            .await;
        assert_eq!(status, StatusCode::OK, "{credentials}");
        let agent = credentials["agent_id"].as_str().unwrap();
        let (_, agent) = app.get(&format!("/api/v1/agents/{agent}"), &admin).await;
        assert_eq!(agent["user_id"], dev_id.as_str());
    }
    // Used up.
    let (status, body) = app
        .post_anonymous("/api/v1/agents/enroll", enroll("runner-3"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Listed without its secret; a revoked one enrolls nothing more.
    let listed = app.fetch("/api/v1/enrollment-tokens", &admin).await;
    assert_eq!(listed[0]["uses_left"], 0);
    assert!(listed[0].get("token").is_none(), "{listed}");
    let second = app
        .ok(
            "/api/v1/enrollment-tokens",
            &admin,
            json!({"uses": 5, "expires_in_secs": 3600}),
        )
        .await;
    let revoked = app
        .ok(
            &format!(
                "/api/v1/enrollment-tokens/{}/revoke",
                second["id"].as_str().unwrap()
            ),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(revoked["revoked"], true);
    let (status, _) = app
        .post_anonymous(
            "/api/v1/agents/enroll",
            json!({"enrollment_token": second["token"], "machine_id": "m"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            &format!("/api/v1/enrollment-tokens/{id}x/revoke"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

on_both_stores!(
    device_codes_need_explicit_consent_and_are_collected_once,
    enrollment_tokens_have_uses_and_can_be_revoked,
);
