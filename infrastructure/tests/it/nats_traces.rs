//! The trace context on the NATS path, against a real nats-server and PostgreSQL: an event committed
//! inside a span with a known trace id is published by the relay with that trace in its `traceparent`
//! header and with the request id in `Edict-Request-Id`, which is what the projector reads to open its
//! span for the message.
//!
//! The span's trace id comes from a thread-local subscriber with an OpenTelemetry layer (no exporter),
//! so nothing global is installed; the relay runs without the layer, as a relay with traces off does,
//! and so passes the stored context on unchanged.

// Tests state their expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edict_application::metadata::Metadata;
use edict_infrastructure::nats::headers::{self, REQUEST_ID_HEADER};
use edict_infrastructure::nats::{self, NatsRelay, NatsSettings, RelaySettings};
use edict_infrastructure::telemetry;
use edict_test_kit::nats::{delete_streams, fresh_prefix, test_nats_url};
use edict_test_kit::{
    create_isolated_postgres, drop_isolated_postgres, eventually, run_isolated, tally,
    test_database_url,
};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use tracing_subscriber::prelude::*;

/// A `traceparent` of a span opened under an OpenTelemetry layer, and its trace id.
fn traced_span_context() -> (String, String) {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("command");
        let traceparent = telemetry::traceparent_of(&span).expect("a span with a trace context");
        let trace_id = telemetry::context_of(&traceparent)
            .unwrap()
            .span()
            .span_context()
            .trace_id()
            .to_string();
        (traceparent, trace_id)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_carries_the_commands_trace_and_request_id_in_nats_headers() {
    let (traceparent, trace_id) = traced_span_context();
    let admin_url = test_database_url();
    let (db, url) = create_isolated_postgres(&admin_url, "edict_test_nats_traces")
        .await
        .expect("create an isolated PostgreSQL database");
    let settings = NatsSettings::new(test_nats_url(), &fresh_prefix()).unwrap();
    let nats = nats::connect(settings).await.expect("connect to nats");
    nats.ensure_streams().await.expect("ensure the streams");
    let case_db = db.clone();
    let case_nats = nats.clone();
    let case = async move {
        let mut metadata = Metadata::system("test");
        metadata.request_id = "req-trace-1".to_owned();
        metadata.traceparent = Some(traceparent.clone());
        tally::cqrs(&case_db)
            .execute_with_metadata("traced-1", 1, metadata.to_map())
            .await
            .unwrap();

        let relay = NatsRelay::new(case_db, case_nats.clone(), RelaySettings::default()).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(relay.run(async move {
            let _ = stopped.await;
        }));

        let stream_name = case_nats.prefix().events_stream();
        let stream = case_nats
            .jetstream()
            .get_stream(&stream_name)
            .await
            .unwrap();
        let message = eventually(Duration::from_secs(15), || {
            let stream = stream.clone();
            async move { stream.get_raw_message(1).await.ok() }
        })
        .await
        .expect("the relay publishes the event");

        let context = headers::trace_context(Some(&message.headers))
            .expect("the message carries a trace context");
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            trace_id,
            "the message belongs to the command's trace"
        );
        assert_eq!(
            message.headers.get("traceparent").map(|v| v.as_str()),
            Some(traceparent.as_str()),
            "a relay without traces passes the stored context on unchanged"
        );
        assert_eq!(
            headers::request_id(Some(&message.headers)),
            Some("req-trace-1")
        );
        assert!(message.headers.get(REQUEST_ID_HEADER).is_some());
        assert!(
            message.headers.get("Nats-Msg-Id").is_some(),
            "the deduplication id is still there"
        );

        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    };
    run_isolated(case, async {
        delete_streams(&nats).await;
        db.close().await;
        let _ = drop_isolated_postgres(&admin_url, &url).await;
    })
    .await;
}
