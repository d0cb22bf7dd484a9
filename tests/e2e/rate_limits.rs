//! Rate limits on a real server: 429 with `Retry-After` and a problem body past a limit, other
//! addresses and accounts unaffected, the budget back after the wait the server named; the
//! `X-Forwarded-For` header believed only from a trusted proxy; the agents' reports limited on the
//! gateway (not acknowledged, so the agent sends them again).
//!
//! Other client addresses are real: on loopback, a client socket bound to 127.0.0.2 is another peer.
//! Rate limits do not depend on the store, so these tests run on SQLite only.

use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Layout, Store, TestApp, gateway_request, hello};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

async fn spawn(env: &[(&str, &str)]) -> TestApp {
    TestApp::spawn_with_env(
        Store::Sqlite,
        Layout::default(),
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
    .await
}

/// An HTTP client whose connections come from `address` (any 127.0.0.0/8 address is loopback).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// A POST of `body` to `path` from `client`, with more headers; answers status, `Retry-After` and
/// the body.
async fn post(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<u64>, Value) {
    let mut request = client.post(format!("{}{path}", app.base)).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json")
        );
    }
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn login(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> (StatusCode, Option<u64>, Value) {
    post(
        app,
        client,
        "/api/v1/auth/login",
        json!({"email": email, "password": password}),
        &[],
    )
    .await
}

fn assert_limited(outcome: &(StatusCode, Option<u64>, Value), what: &str) -> u64 {
    let (status, retry_after, body) = outcome;
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{what}: {body}");
    assert_eq!(body["type"], "urn:edict:problem:rate-limited", "{body}");
    assert_eq!(body["status"], 429);
    let retry_after = retry_after.unwrap_or_else(|| panic!("{what}: no Retry-After"));
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    retry_after
}

/// Sign-in: 3 attempts per account and 6 per address a minute (one back every 20 s and 10 s).
#[tokio::test]
async fn sign_ins_are_limited_per_account_and_per_address() {
    let app = spawn(&[
        ("EDICT_RATE_LOGIN_PER_ACCOUNT", "3"),
        ("EDICT_RATE_LOGIN_PER_ADDRESS", "6"),
    ])
    .await;
    let admin = app.admin().await; // account 1/3, address 1/6
    let (_, _, user) = post(
        &app,
        &app.client,
        "/api/v1/users",
        json!({"email": "other@example.com", "name": "Other", "password": "other-password-123",
               "roles": []}),
        &[("authorization", &format!("Bearer {admin}"))],
    )
    .await;
    assert!(user["id"].is_string(), "{user}");
    let here = client_from("127.0.0.1");
    let elsewhere = client_from("127.0.0.2");

    for attempt in 2..=3 {
        let (status, _, body) = login(&app, &here, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "attempt {attempt}: {body}");
    }
    // The account's fourth attempt in the minute: refused, right password or not, from any address.
    let started = Instant::now();
    let refused = login(&app, &here, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let retry_after = assert_limited(&refused, "4th sign-in to the account");
    assert!(
        refused.2["detail"]
            .as_str()
            .unwrap()
            .contains("for this account")
    );
    assert_limited(
        &login(&app, &elsewhere, ADMIN_EMAIL, "wrong-password-123").await,
        "the account from another address",
    );
    // Another account from the same address still signs in (address 5/6).
    let (status, _, body) = login(&app, &here, "other@example.com", "other-password-123").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Address 6/6, then the address is out of attempts, whatever the account.
    let (status, _, _) = login(&app, &here, "nobody-1@example.com", "wrong-password-123").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let refused = login(&app, &here, "nobody-2@example.com", "wrong-password-123").await;
    assert_limited(&refused, "7th sign-in from one address");
    assert!(
        refused.2["detail"]
            .as_str()
            .unwrap()
            .contains("from this address")
    );
    // Another address is not affected.
    let (status, _, body) = login(&app, &elsewhere, "nobody-3@example.com", "wrong-pw-123").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // After the wait the server named, the account signs in again.
    tokio::time::sleep(Duration::from_secs(retry_after).saturating_sub(started.elapsed())).await;
    let (status, _, body) = login(&app, &elsewhere, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "after Retry-After: {body}");
}

/// `X-Forwarded-For` names the client only when the peer is a trusted proxy.
#[tokio::test]
async fn the_forwarded_address_counts_only_from_a_trusted_proxy() {
    let app = spawn(&[
        ("EDICT_RATE_LOGIN_PER_ADDRESS", "2"),
        ("EDICT_RATE_LOGIN_PER_ACCOUNT", "100"),
        ("EDICT_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let proxy = client_from("127.0.0.1");
    let attempt = |client: reqwest::Client, n: u32, forwarded: &'static str| {
        let app = &app;
        async move {
            post(
                app,
                &client,
                "/api/v1/auth/login",
                json!({"email": format!("n{n}@example.com"), "password": "wrong-password-123"}),
                &[("x-forwarded-for", forwarded)],
            )
            .await
        }
    };
    // Behind the trusted proxy, each forwarded client has its own budget.
    assert_eq!(
        attempt(proxy.clone(), 1, "198.51.100.1").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt(proxy.clone(), 2, "198.51.100.1").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_limited(&attempt(proxy.clone(), 3, "198.51.100.1").await, "third");
    // A client cannot escape by writing its own entry in front: the proxy's entry is the right-most.
    assert_limited(
        &attempt(proxy.clone(), 4, "203.0.113.50, 198.51.100.1").await,
        "spoofed left-most entry",
    );
    assert_eq!(
        attempt(proxy.clone(), 5, "198.51.100.2").await.0,
        StatusCode::UNAUTHORIZED
    );
    // From an untrusted peer the header is ignored: a fresh value each time does not help.
    let direct = client_from("127.0.0.3");
    assert_eq!(
        attempt(direct.clone(), 6, "192.0.2.1").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt(direct.clone(), 7, "192.0.2.2").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_limited(&attempt(direct, 8, "192.0.2.3").await, "untrusted peer");
}

/// Refresh, device codes, device polls and enrollment: per address, refused before any work.
#[tokio::test]
async fn token_endpoints_without_credentials_are_limited_per_address() {
    let app = spawn(&[
        ("EDICT_RATE_REFRESH_PER_ADDRESS", "2"),
        ("EDICT_RATE_DEVICE_CODE_PER_ADDRESS", "2"),
        ("EDICT_RATE_DEVICE_POLL_PER_ADDRESS", "2"),
        ("EDICT_RATE_ENROLL_PER_ADDRESS", "2"),
    ])
    .await;
    let cases = [
        (
            "/api/v1/auth/refresh",
            json!({"refresh_token": "edr_0000"}),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "/api/v1/device/code",
            json!({"machine_id": "m-1", "machine_name": "laptop"}),
            StatusCode::OK,
        ),
        (
            "/api/v1/device/token",
            json!({"device_code": "nope"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/agents/enroll",
            json!({"enrollment_token": "ede_nope", "machine_id": "m-1"}),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    let here = client_from("127.0.0.1");
    let elsewhere = client_from("127.0.0.2");
    for (path, body, usual) in cases {
        for _ in 0..2 {
            let (status, _, answer) = post(&app, &here, path, body.clone(), &[]).await;
            assert_eq!(status, usual, "{path}: {answer}");
        }
        assert_limited(&post(&app, &here, path, body.clone(), &[]).await, path);
        let (status, _, answer) = post(&app, &elsewhere, path, body.clone(), &[]).await;
        assert_eq!(status, usual, "{path} from another address: {answer}");
    }
}

/// Costly reads (`as_of`, filtered event pages, histories, exports) share a budget per principal;
/// a plain page of the log does not count.
#[tokio::test]
async fn costly_reads_have_a_budget_per_principal() {
    let app = spawn(&[("EDICT_RATE_COSTLY_READS_PER_PRINCIPAL", "3")]).await;
    let admin = app.admin().await;
    let (_, auditor) = app.user(&admin, "auditor", &["auditor"]).await;
    let me = app.get("/api/v1/users/me", &admin).await.1;
    let user = me["id"].as_str().unwrap().to_owned();
    let reads = [
        format!("/api/v1/users/{user}/history"),
        "/api/v1/events?aggregate_type=User".to_owned(),
        "/api/v1/events/export".to_owned(),
    ];
    for path in &reads {
        let (status, body) = app.get(path, &admin).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    // Unfiltered pages of the log are not costly.
    for _ in 0..5 {
        let (status, _) = app.get("/api/v1/events?limit=10", &admin).await;
        assert_eq!(status, StatusCode::OK);
    }
    let response = app
        .send(
            Method::GET,
            "/api/v1/teams/00000000-0000-0000-0000-000000000000/ruleset?as_of=1",
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:edict:problem:rate-limited");
    // Another principal has its own budget.
    app.fetch(&reads[0], &auditor).await;
}

fn report(id: &str) -> String {
    json!({
        "type": "report",
        "report_id": id,
        "kind": "warning_kept",
        "team": "00000000-0000-0000-0000-000000000000",
        "rule": "00000000-0000-0000-0000-000000000000",
        "file": "/home/dev/CLAUDE.md",
        "layer": "team",
        "original_hash": "00",
        "new_hash": "11",
        "diff": "-a\n+b\n",
    })
    .to_string()
}

/// The report ids acknowledged on `socket` until `last` is.
async fn acks_until<S>(socket: &mut S, last: &str) -> Vec<String>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !acked.iter().any(|id| id == last) {
        let message = tokio::time::timeout_at(deadline.into(), socket.next())
            .await
            .unwrap_or_else(|_| panic!("no ack of {last}; acked so far {acked:?}"))
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let message: Value = serde_json::from_str(&text).unwrap();
            if message["type"] == "report_ack" {
                acked.push(message["report_id"].as_str().unwrap().to_owned());
            }
        }
    }
    acked
}

/// Reports past an agent's budget are not acknowledged (the agent keeps them and sends them again);
/// once the budget refills they are.
#[tokio::test]
async fn agent_reports_past_the_budget_are_not_acknowledged() {
    // 3 a minute: a burst of 3, then one more every 20 s.
    let app = spawn(&[("EDICT_RATE_REPORTS_PER_AGENT", "3")]).await;
    let admin = app.admin().await;
    let agent = app.enroll_agent(&admin, "rate-limited", "laptop").await;
    let token = agent["token"].as_str().unwrap();
    let request = gateway_request(&app, token);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    hello(&mut socket).await;
    let started = Instant::now();
    for id in ["r1", "r2", "r3", "r4"] {
        socket.send(Message::text(report(id))).await.unwrap();
    }
    let acked = acks_until(&mut socket, "r3").await;
    assert_eq!(acked, ["r1", "r2", "r3"]);
    // One report fits again 20 s after the burst; the gateway answers in order, so had `r4` been
    // acknowledged, its ack would come before the one of the report sent after it.
    tokio::time::sleep(Duration::from_secs(21).saturating_sub(started.elapsed())).await;
    socket.send(Message::text(report("r5"))).await.unwrap();
    let acked = acks_until(&mut socket, "r5").await;
    assert_eq!(
        acked,
        ["r5"],
        "r4 was over the budget and must not be acknowledged"
    );
}

/// Token renewals have a budget per agent, shared by the tokens it renews into (a stolen token
/// cannot churn tokens, nor load the store, faster than the budget); another agent has its own.
#[tokio::test]
async fn agent_token_renewals_are_limited_per_agent() {
    let app = spawn(&[("EDICT_RATE_TOKEN_RENEWALS_PER_AGENT", "2")]).await;
    let admin = app.admin().await;
    let (dev_id, _) = app.user(&admin, "dev", &["member"]).await;
    let enroll = |machine: &'static str| {
        let (app, admin, dev_id) = (&app, admin.clone(), dev_id.clone());
        async move {
            app.ok(
                "/api/v1/agents",
                &admin,
                json!({"machine_id": machine, "machine_name": machine, "user_id": dev_id}),
            )
            .await["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let renew = |token: String| {
        let app = &app;
        async move {
            let response = app
                .send(
                    Method::POST,
                    "/api/v1/agent/token",
                    Some(&token),
                    Some(json!({})),
                    &[],
                )
                .await;
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            (status, retry_after, response.json::<Value>().await.unwrap())
        }
    };
    let mut token = enroll("renewing").await;
    for _ in 0..2 {
        let (status, _, body) = renew(token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        token = body["token"].as_str().unwrap().to_owned();
    }
    assert_limited(&renew(token.clone()).await, "third renewal by one agent");
    // The refused renewal changed nothing: the newest token still works.
    let (status, body) = app.get("/api/v1/users/me", &token).await;
    assert_ne!(status, StatusCode::UNAUTHORIZED, "{body}");
    let other = enroll("other").await;
    let (status, _, body) = renew(other).await;
    assert_eq!(status, StatusCode::OK, "another agent: {body}");
}
