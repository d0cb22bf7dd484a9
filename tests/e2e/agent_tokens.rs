//! Agent tokens have a lifetime, are renewed by the running agent, are revoked with their owner's
//! password or deactivation, and are listed to their owner (ADR 0025).

use crate::harness::{
    Layout, Machine, Store, TestApp, approved_rule, attach_with, eventually, gateway_request,
    hello, team_with_member,
};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A server whose agent tokens live `ttl` seconds and keep working `grace` seconds after a renewal.
async fn spawn(store: Store, ttl: u64, grace: u64) -> TestApp {
    TestApp::spawn_with_vars(
        store,
        Layout::default(),
        &[
            ("EDICT_AGENT_TOKEN_TTL_SECS", &ttl.to_string()),
            ("EDICT_AGENT_TOKEN_RENEWAL_GRACE_SECS", &grace.to_string()),
        ],
    )
    .await
}

/// What the API makes of `token` on a route agents may not call: 403 while the token stands (it
/// authenticates, then is forbidden), 401 once it does not.
async fn probe(app: &TestApp, token: &str) -> StatusCode {
    app.get("/api/v1/agents", token).await.0
}

/// A gateway upgrade with `token`: the socket, or the refusal's status.
async fn upgrade(
    app: &TestApp,
    token: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    let request = gateway_request(app, token);
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("upgrade failed: {error}"),
    }
}

/// Enrolls a machine for `user` through `POST /api/v1/agents` (as `admin`); answers the body.
async fn enroll(app: &TestApp, admin: &str, user: &str, machine: &str) -> Value {
    app.ok(
        "/api/v1/agents",
        admin,
        json!({"machine_id": machine, "machine_name": format!("{machine} laptop"), "user_id": user}),
    )
    .await
}

async fn tokens(app: &TestApp, caller: &str, user: Option<&str>) -> (StatusCode, Value) {
    let path = match user {
        Some(user) => format!("/api/v1/agent-tokens?user_id={user}"),
        None => "/api/v1/agent-tokens".to_owned(),
    };
    app.get(&path, caller).await
}

#[tokio::test]
async fn an_expired_token_is_refused_by_http_and_the_gateway_closes_its_connection() {
    let app = spawn(Store::Sqlite, 4, 1).await;
    let admin = app.admin().await;
    let (dev_id, _) = app.user(&admin, "dev", &["member"]).await;
    let enrolled = enroll(&app, &admin, &dev_id, "expiring").await;
    let token = enrolled["token"].as_str().unwrap().to_owned();
    let expires_at: chrono::DateTime<chrono::Utc> =
        enrolled["expires_at"].as_str().unwrap().parse().unwrap();
    let issued_at: chrono::DateTime<chrono::Utc> =
        enrolled["issued_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((expires_at - issued_at).num_seconds(), 4, "{enrolled}");

    assert_eq!(probe(&app, &token).await, StatusCode::FORBIDDEN);
    let mut socket = upgrade(&app, &token)
        .await
        .expect("the upgrade is accepted");
    hello(&mut socket).await;
    // The connection ends at the token's expiry, with the reason: not at the next 5-minute re-check.
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                if value["type"] == "error" {
                    return Some(value);
                }
            }
        }
        None
    })
    .await
    .expect("the gateway closes the connection of an expired token in time");
    let closed = closed.expect("an error message before the close");
    assert_eq!(closed["code"], "token_expired", "{closed}");
    assert!(
        chrono::Utc::now() >= expires_at,
        "closed at the expiry, not before"
    );

    assert_eq!(probe(&app, &token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(upgrade(&app, &token).await.err(), Some(401));
    let (_, listed) = tokens(&app, &admin, Some(&dev_id)).await;
    assert_eq!(listed["items"][0]["state"], "expired", "{listed}");
    // An expired token renews nothing.
    let (status, _) = app.post("/api/v1/agent/token", &token, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_owner_lists_their_tokens_without_secrets_and_others_cannot() {
    let app = spawn(Store::Postgres, 3600, 60).await;
    let admin = app.admin().await;
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    let (_, other) = app.user(&admin, "other", &["member"]).await;
    let enrolled = enroll(&app, &admin, &dev_id, "listed").await;
    let token = enrolled["token"].as_str().unwrap();
    // A renewal by the agent: the old token is listed as renewed, the new one as active.
    let renewed = app.post("/api/v1/agent/token", token, json!({})).await;
    assert_eq!(renewed.0, StatusCode::OK, "{}", renewed.1);
    assert_ne!(renewed.1["token"], enrolled["token"]);
    // Users cannot renew: only an agent, with its token.
    let (status, _) = app.post("/api/v1/agent/token", &dev, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, listed) = tokens(&app, &dev, None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed}");
    assert_eq!(items[0]["state"], "active");
    assert_eq!(items[0]["from_renewal"], true);
    assert_eq!(items[1]["state"], "renewed");
    assert!(items[1]["renewed_at"].is_string(), "{listed}");
    for item in items {
        assert_eq!(item["agent_id"], enrolled["id"]);
        assert_eq!(item["machine_name"], "listed laptop");
        assert_eq!(item["user_id"], json!(dev_id));
        let text = item.to_string();
        assert!(!text.contains("eda_"), "no secret is listed: {text}");
        assert!(item.get("token").is_none() && item.get("token_digest").is_none());
    }
    // Another member lists none of them; the org_admin lists them.
    let (status, _) = tokens(&app, &other, Some(&dev_id)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, mine) = tokens(&app, &other, None).await;
    assert_eq!(mine["items"], json!([]));
    let (status, listed_by_admin) = tokens(&app, &admin, Some(&dev_id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed_by_admin["items"].as_array().unwrap().len(), 2);
    // The renewal answer is a secret: a retry with its Idempotency-Key does not get it again.
    let new_token = renewed.1["token"].as_str().unwrap();
    let first = app
        .send(
            Method::POST,
            "/api/v1/agent/token",
            Some(new_token),
            Some(json!({})),
            &[("idempotency-key", "renew-1")],
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let again = app
        .send(
            Method::POST,
            "/api/v1/agent/token",
            Some(new_token),
            Some(json!({})),
            &[("idempotency-key", "renew-1")],
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().await.unwrap();
    assert!(!body.to_string().contains("eda_"), "{body}");

    // A renewal asked again with the same token (its answer was lost) revokes the lost answer's
    // token: one renewal is live at a time.
    let first_answer: Value = first.json().await.unwrap();
    let lost = first_answer["token"].as_str().unwrap().to_owned();
    assert_eq!(probe(&app, &lost).await, StatusCode::FORBIDDEN);
    let (status, retried) = app.post("/api/v1/agent/token", new_token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(probe(&app, &lost).await, StatusCode::UNAUTHORIZED);
    let retried = retried["token"].as_str().unwrap();
    assert_eq!(probe(&app, retried).await, StatusCode::FORBIDDEN);
    let (_, listed) = tokens(&app, &dev, None).await;
    let states: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["active", "revoked", "renewed", "renewed"],
        "{listed}"
    );
}

/// The organization's active public key (64 hex digits), for `login --agent-token --org-key`.
async fn org_public_key(app: &TestApp, admin: &str) -> String {
    let (_, keys) = app.get("/api/v1/signing-keys", admin).await;
    keys["keys"][0]["public_key"].as_str().unwrap().to_owned()
}

/// An approved team-layer rule whose content is `Always {name}.`, attached to `team`.
async fn attach_rule(app: &TestApp, admin: &str, second: &str, team: &str, name: &str) {
    let rule = approved_rule(app, admin, second, name).await;
    attach_with(app, admin, team, &rule, json!({"mode": "block"})).await;
}

async fn team_file_contains(machine: &Machine, text: &str, timeout: Duration) -> bool {
    eventually(timeout, || async {
        std::fs::read_to_string(machine.team_file())
            .unwrap_or_default()
            .contains(text)
            .then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
async fn a_running_agent_renews_its_token_and_keeps_receiving_rule_sets() {
    // Tokens live 8 s: the agent renews every 4 s; a renewed token works 2 s more.
    let app = spawn(Store::Sqlite, 8, 2).await;
    let (admin, second) = app.admins().await;
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    let team = team_with_member(&app, &admin, "renewers", &dev_id).await;
    attach_rule(&app, &admin, &second, &team, "renew one").await;

    // The token is given to the agent as is: its expiry unknown, it is renewed at the first chance.
    let enrolled = enroll(&app, &admin, &dev_id, "renewing").await;
    let first = enrolled["token"].as_str().unwrap().to_owned();
    let key = org_public_key(&app, &admin).await;
    let mut machine = Machine::new();
    let output = machine
        .command()
        .args(["login", "--server", &app.base, "--output", "json"])
        .args(["--agent-token", &first, "--org-key", &key])
        .args(["--gateway", &app.gateway])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "edict-agent login --agent-token");
    machine.run();
    assert!(
        team_file_contains(&machine, "Always renew one.", Duration::from_secs(20)).await,
        "the rule reaches the machine; status: {}",
        machine.status().await
    );

    // The agent renewed on its own (the listing shows the renewals), and the first token, past its
    // grace, is refused.
    let renewals = eventually(Duration::from_secs(20), || async {
        let (_, listed) = tokens(&app, &dev, None).await;
        let items = listed["items"].as_array().cloned().unwrap_or_default();
        let renewed = items.iter().filter(|t| t["from_renewal"] == true).count();
        (renewed >= 2).then_some(listed)
    })
    .await;
    assert!(
        renewals.is_some(),
        "the agent renews its token twice within 20 s"
    );
    let refused = eventually(Duration::from_secs(10), || async {
        (probe(&app, &first).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "the renewed token is refused after its grace"
    );
    assert_eq!(upgrade(&app, &first).await.err(), Some(401));
    let status = machine.status().await;
    assert!(status["token_expires_at"].is_string(), "{status}");

    // After the renewals, the agent still takes new rule sets (with the token it renewed last).
    attach_rule(&app, &admin, &second, &team, "renew two").await;
    assert!(
        team_file_contains(&machine, "Always renew two.", Duration::from_secs(20)).await,
        "a rule attached after several renewals reaches the machine; status: {}",
        machine.status().await
    );
    let (_, listed) = tokens(&app, &dev, None).await;
    let active = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "active")
        .count();
    assert_eq!(active, 1, "one live token at a time: {listed}");
    machine.stop().await;
}

/// Starts an agent for `user` enrolled with an enrollment token; waits until it is connected.
async fn running_agent(app: &TestApp, admin: &str, user: &str) -> (Machine, String) {
    let (mut machine, agent) = Machine::enrolled(
        app,
        admin,
        json!({"user_id": user, "note": "revocation test"}),
    )
    .await;
    machine.run();
    let connected = eventually(Duration::from_secs(20), || async {
        (machine.status().await["connected"] == true).then_some(())
    })
    .await;
    assert!(connected.is_some(), "the agent connects");
    (machine, agent)
}

async fn disconnected(machine: &Machine) -> bool {
    eventually(Duration::from_secs(15), || async {
        (machine.status().await["connected"] == false).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
async fn a_password_change_and_a_deactivation_revoke_the_tokens_and_disconnect_the_agent() {
    let app = spawn(Store::Postgres, 3600, 60).await;
    let admin = app.admin().await;
    let (dev_id, dev) = app.user(&admin, "dev", &["member"]).await;
    // A second token of the user, held elsewhere: revoked too.
    let spare = enroll(&app, &admin, &dev_id, "spare").await;
    let spare = spare["token"].as_str().unwrap().to_owned();

    // 1. The user changes their own password: every agent token goes, the agent is disconnected.
    let (mut machine, _) = running_agent(&app, &admin, &dev_id).await;
    let email = app.get(&format!("/api/v1/users/{dev_id}"), &dev).await.1["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = app
        .put(
            &format!("/api/v1/users/{dev_id}/password"),
            &dev,
            json!({"current_password": "dev-password-123", "new_password": "a-new-password-456"}),
        )
        .await;
    assert!(status.is_success(), "password change: {status} {body}");
    assert!(
        disconnected(&machine).await,
        "the running agent is disconnected when its user's password changes"
    );
    assert_eq!(probe(&app, &spare).await, StatusCode::UNAUTHORIZED);
    let dev = app.login(&email, "a-new-password-456").await;
    let (_, listed) = tokens(&app, &dev, None).await;
    let items = listed["items"].as_array().unwrap();
    assert!(
        items.len() >= 2 && items.iter().all(|t| t["state"] == "revoked"),
        "{listed}"
    );
    machine.stop().await;

    // 2. An org_admin deactivates the user: the new machine's token goes the same way, and a
    //    reactivation does not bring it back.
    let (mut machine, _) = running_agent(&app, &admin, &dev_id).await;
    app.ok(
        &format!("/api/v1/users/{dev_id}/deactivate"),
        &admin,
        json!({}),
    )
    .await;
    assert!(
        disconnected(&machine).await,
        "the running agent is disconnected when its user is deactivated"
    );
    app.ok(
        &format!("/api/v1/users/{dev_id}/reactivate"),
        &admin,
        json!({}),
    )
    .await;
    // The reactivated user's tokens stay revoked: the machine logs in again.
    let (_, listed) = tokens(&app, &admin, Some(&dev_id)).await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "revoked"),
        "{listed}"
    );
    machine.stop().await;

    // 3. An org_admin's reset of the password revokes too.
    let (mut machine, _) = running_agent(&app, &admin, &dev_id).await;
    let (status, body) = app
        .put(
            &format!("/api/v1/users/{dev_id}/password"),
            &admin,
            json!({"new_password": "a-reset-password-789"}),
        )
        .await;
    assert!(status.is_success(), "password reset: {status} {body}");
    assert!(
        disconnected(&machine).await,
        "the running agent is disconnected when an org_admin resets its user's password"
    );
    machine.stop().await;
}
