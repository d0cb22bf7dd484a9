//! Every event carries its metadata: actor, request id, correlation id, source.

use crate::harness::{Store, TestApp, rule_spec};
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn events_record_actor_request_correlation_and_source() {
    let app = TestApp::spawn(Store::Postgres).await;
    let admin = app.admin().await;
    let response = app
        .send(
            Method::POST,
            "/api/v1/rules",
            Some(&admin),
            Some(rule_spec("traced", "organization")),
            &[("x-request-id", "req-42"), ("x-correlation-id", "corr-7")],
        )
        .await;
    assert!(response.status().is_success());
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    let output = tokio::process::Command::new("psql")
        .arg(&app.database_url)
        .args([
            "-Atc",
            &format!(
                "SELECT metadata::text FROM events WHERE aggregate_id = '{id}' ORDER BY sequence"
            ),
        ])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let rows: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // Drafting an organization rule records the draft and its default (block) enforcement.
    assert_eq!(rows.len(), 2, "{rows:?}");
    for metadata in rows {
        assert!(
            metadata["actor"].as_str().unwrap().starts_with("user:"),
            "{metadata}"
        );
        assert_eq!(metadata["request_id"], "req-42");
        assert_eq!(metadata["correlation_id"], "corr-7");
        assert_eq!(metadata["source"], "api");
    }
}
