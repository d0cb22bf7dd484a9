//! Traces end to end: with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a collector stub (a TCP listener
//! in the test that records the bodies POSTed to `/v1/traces`), a rule command on PostgreSQL + NATS
//! produces one trace holding the API's `request` span, the relay's `relay publish` span and the
//! projector's `project` span, all with the request's id; a change to a team's rule set also reaches
//! the gateway's `push` span.

use crate::harness::{
    Layout, Store, TestApp, approved_rule, eventually, rule_spec, team_with_member,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::Method;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The bodies POSTed to `/v1/traces`.
type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// Starts the collector stub; answers its base URL and what it receives.
async fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let store = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut socket = BufReader::new(socket);
                // One request after the other on a kept-alive connection.
                loop {
                    let mut request_line = String::new();
                    if socket.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if socket.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if request_line.starts_with("POST /v1/traces") {
                        store.lock().unwrap().push(body);
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if socket.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (base, received)
}

/// Every span received so far.
fn spans(received: &Received) -> Vec<Span> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter_map(|body| ExportTraceServiceRequest::decode(body.as_slice()).ok())
        .flat_map(|request| request.resource_spans)
        .flat_map(|resource| resource.scope_spans)
        .flat_map(|scope| scope.spans)
        .collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|value| match value {
            AnyValue::StringValue(text) => Some(text.as_str()),
            _ => None,
        })
}

/// A server on PostgreSQL + NATS exporting its spans to a fresh collector stub.
async fn traced_app() -> (TestApp, Received) {
    traced_app_with(Store::Postgres, Layout::distributed()).await
}

/// A server on `store` laid out as `layout`, exporting its spans to a fresh collector stub.
async fn traced_app_with(store: Store, layout: Layout) -> (TestApp, Received) {
    let (endpoint, received) = collector().await;
    let app = TestApp::spawn_with_env(
        store,
        layout,
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            // Export every 100 ms instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
    )
    .await;
    (app, received)
}

/// The id of the request `response` answered.
fn request_id_of(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Waits until one trace holds the API's `request` span of `request_id` and a span of each of
/// `names`, all with that request id; panics with the spans received otherwise.
async fn assert_one_trace(received: &Received, request_id: &str, names: &[&str]) {
    let found = eventually(Duration::from_secs(20), || {
        let spans = spans(received);
        async move {
            let request = spans.iter().find(|span| {
                span.name == "request" && attribute(span, "request_id") == Some(request_id)
            })?;
            let in_trace = |name: &str| {
                spans.iter().any(|span| {
                    span.name == name
                        && span.trace_id == request.trace_id
                        && attribute(span, "request_id") == Some(request_id)
                })
            };
            names.iter().all(|name| in_trace(name)).then_some(())
        }
    })
    .await;
    assert!(
        found.is_some(),
        "no trace holds the request {request_id} and its {names:?} spans: {:?}",
        spans(received)
            .iter()
            .map(|span| (
                span.name.clone(),
                hex(&span.trace_id),
                attribute(span, "request_id").map(str::to_owned)
            ))
            .filter(|span| span.0 != "read_all" && span.0 != "status")
            .take(80)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_rule_command_is_one_trace_from_the_api_through_the_relay_to_the_projector() {
    let (app, received) = traced_app().await;
    let admin = app.admin().await;
    let response = app
        .send(
            Method::POST,
            "/api/v1/rules",
            Some(&admin),
            Some(rule_spec("traced", "team")),
            &[],
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let request_id = request_id_of(&response);
    assert_one_trace(&received, &request_id, &["relay publish", "project"]).await;
}

/// Issue 18, item 2: a change to a team's rule set is followed to the gateways: the projector's
/// publication of the new revision carries the trace context to the gateway, whose `push` span is in
/// the request's trace with its id.
#[tokio::test]
async fn a_rule_set_change_is_one_trace_from_the_api_to_the_gateways_push() {
    let (app, received) = traced_app().await;
    let request_id = attach_a_rule(&app).await;
    assert_one_trace(
        &received,
        &request_id,
        &["relay publish", "project", "push"],
    )
    .await;
}

/// The embedded default (SQLite, in-process bus) has no relay: the gateway's push joins the trace the
/// event recorded.
#[tokio::test]
async fn on_the_embedded_default_the_gateways_push_is_in_the_commands_trace() {
    let (app, received) = traced_app_with(Store::Sqlite, Layout::default()).await;
    let request_id = attach_a_rule(&app).await;
    assert_one_trace(&received, &request_id, &["push"]).await;
}

/// Attaches an approved rule to a new team; answers the attach request's id.
async fn attach_a_rule(app: &TestApp) -> String {
    let admin = app.admin().await;
    let (member, _) = app.user(&admin, "member", &["member"]).await;
    let (_, second) = app.user(&admin, "second", &["org_admin"]).await;
    let rule = approved_rule(app, &admin, &second, "traced").await;
    let team = team_with_member(app, &admin, "traced", &member).await;
    let response = app
        .send(
            Method::POST,
            &format!("/api/v1/teams/{team}/rules"),
            Some(&admin),
            Some(json!({"rule_id": rule, "enforcement": {"mode": "block"}})),
            &[],
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    request_id_of(&response)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
