//! Readiness tells the truth (issue 14, item 10): `/health/ready` answers 503, as problem+json naming
//! what failed, while the store is unreachable or NATS is down, and 200 again once they are back.

use crate::harness::{Layout, PrivateNats, Store, TestApp, admin_database_url, eventually};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

/// Readiness as the server answers it: the status and the body.
async fn readiness(app: &TestApp) -> Option<(u16, Value)> {
    let response = app
        .client
        .get(format!("{}/health/ready", app.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let retry_after = response.headers().get("retry-after").is_some();
    let body: Value = response.json().await.ok()?;
    if status == 503 {
        assert!(
            content_type.starts_with("application/problem+json"),
            "{content_type}"
        );
        assert!(retry_after, "a 503 says when to retry");
    }
    Some((status, body))
}

/// Waits until readiness answers `status` with a body `accept` takes; answers that body.
async fn ready_becomes(app: &TestApp, status: u16, accept: impl Fn(&Value) -> bool) -> Value {
    let found = eventually(Duration::from_secs(45), || async {
        match readiness(app).await {
            Some((got, body)) if got == status && accept(&body) => Some(body),
            _ => None,
        }
    })
    .await;
    match found {
        Some(body) => body,
        None => panic!(
            "readiness did not become {status}; last: {:?}",
            readiness(app).await
        ),
    }
}

/// Whether the failed checks of a 503 name `what` (in `detail` and in `checks`).
fn names(body: &Value, what: &str) -> bool {
    let in_detail = body["detail"]
        .as_str()
        .is_some_and(|detail| detail.contains(what));
    let in_checks = body["checks"].as_array().is_some_and(|checks| {
        checks
            .iter()
            .any(|check| check["name"] == what && check["status"] == "failed")
    });
    in_detail && in_checks
}

fn psql(sql: &str) {
    let status = std::process::Command::new("psql")
        .arg(admin_database_url())
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .stdout(Stdio::null())
        .status()
        .expect("run psql");
    assert!(status.success(), "psql failed: {sql}");
}

/// The name of the server's database (the last segment of its URL).
fn database_name(app: &TestApp) -> String {
    app.database_url
        .rsplit('/')
        .next()
        .expect("a database name")
        .to_owned()
}

#[tokio::test]
async fn an_unreachable_store_makes_the_process_unready_and_names_the_store() {
    let app = TestApp::spawn_setting(
        Store::Postgres,
        &[("EDICT_SUPERVISOR_MAX_BACKOFF_MS", "1000")],
    )
    .await;
    ready_becomes(&app, 200, |_| true).await;
    // The store becomes unreachable: no new connection is allowed, the open ones are cut.
    let name = database_name(&app);
    psql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
    psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ));
    let body = ready_becomes(&app, 503, |body| names(body, "store")).await;
    assert_eq!(body["status"], 503);
    assert_eq!(body["type"], "urn:edict:problem:not_ready");
    // Back: ready again.
    psql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    let body = ready_becomes(&app, 200, |_| true).await;
    assert_eq!(body["status"], "ok");
    for check in [
        "store",
        "role:api",
        "role:gateway",
        "role:audit",
        "role:scheduler",
    ] {
        assert!(
            body["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == check && c["status"] == "ok"),
            "{check}: {body}"
        );
    }
}

#[tokio::test]
async fn a_stopped_nats_server_makes_the_process_unready_and_names_nats() {
    let mut nats = PrivateNats::start().await;
    let mut layout = Layout::distributed();
    layout.nats_url = Some(nats.url());
    let app = TestApp::spawn_with_vars(
        Store::Postgres,
        layout,
        &[("EDICT_SUPERVISOR_MAX_BACKOFF_MS", "1000")],
    )
    .await;
    ready_becomes(&app, 200, |_| true).await;
    nats.kill().await;
    let body = ready_becomes(&app, 503, |body| names(body, "nats")).await;
    assert!(!names(&body, "store"), "the store is fine: {body}");
    nats.restart().await;
    let body = ready_becomes(&app, 200, |_| true).await;
    assert!(
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|check| check["name"] == "nats" && check["status"] == "ok"),
        "{body}"
    );
}
