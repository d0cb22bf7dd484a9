//! Traces end to end: with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a collector stub (a TCP listener
//! in the test that records the bodies POSTed to `/v1/traces`), a rule command on PostgreSQL + NATS
//! produces one trace holding the API's `request` span, the relay's `relay publish` span and the
//! projector's `project` span, all with the request's id.

use crate::harness::{Layout, Store, TestApp, eventually, rule_spec};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::Method;
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

#[tokio::test]
async fn a_rule_command_is_one_trace_from_the_api_through_the_relay_to_the_projector() {
    let (endpoint, received) = collector().await;
    let app = TestApp::spawn_with_env(
        Store::Postgres,
        Layout::distributed(),
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            // Export every 100 ms instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
    )
    .await;
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
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    let found = eventually(Duration::from_secs(20), || {
        let spans = spans(&received);
        let request_id = request_id.clone();
        async move {
            let request = spans.iter().find(|span| {
                span.name == "request" && attribute(span, "request_id") == Some(&request_id)
            })?;
            let in_trace = |name: &str| {
                spans.iter().any(|span| {
                    span.name == name
                        && span.trace_id == request.trace_id
                        && attribute(span, "request_id") == Some(&request_id)
                })
            };
            (in_trace("relay publish") && in_trace("project")).then_some(())
        }
    })
    .await;
    assert!(
        found.is_some(),
        "no trace holds the request, its relay publication and its projection: {:?}",
        spans(&received)
            .iter()
            .map(|span| (
                span.name.clone(),
                hex(&span.trace_id),
                attribute(span, "request_id").map(str::to_owned)
            ))
            .take(40)
            .collect::<Vec<_>>()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
