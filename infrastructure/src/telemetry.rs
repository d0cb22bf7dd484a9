//! The tracing subscriber: human-readable lines by default, JSON with `--log-json`, filtered by `RUST_LOG`
//! (default: `info` for servers, `warn` for one-shot commands); and, when an OTLP endpoint is configured,
//! the export of the spans to an OpenTelemetry collector.
//!
//! Traces are off by default. [`TraceExport::from_vars`] turns them on when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (the standard variable; `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` and the other `OTEL_EXPORTER_OTLP_*`
//! variables are honoured by the exporter as usual) or `EDICT_OTLP_ENDPOINT` (a base URL, as the standard
//! one) is set. Spans go out over OTLP/HTTP (protobuf, `<endpoint>/v1/traces`) in batches from a thread
//! of the SDK's own, with service name `edict` and the process's roles as `edict.roles`. The
//! [`TelemetryGuard`] `init_with_traces` returns flushes what is still buffered when the process ends.
//!
//! The trace context crosses processes as W3C `traceparent`: [`traceparent_of`] renders a span's context,
//! [`context_of`] reads one back (see `nats::headers` for the NATS side).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

/// The service name spans are exported under.
pub const SERVICE_NAME: &str = "edict";
/// The W3C trace context header (and metadata key).
pub const TRACEPARENT: &str = "traceparent";

/// Where and how spans are exported (OTLP over HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// `EDICT_OTLP_ENDPOINT` as given (a base URL such as `http://collector:4318`); `None` when only
    /// the standard `OTEL_EXPORTER_OTLP_*` variables configure the exporter.
    pub endpoint: Option<String>,
    /// The roles this process runs (resource attribute `edict.roles`), e.g. `api,relay`.
    pub roles: String,
}

impl TraceExport {
    /// The export `var` asks for: `None` (traces off) unless `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `EDICT_OTLP_ENDPOINT` is set and not empty.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, roles: &str) -> Option<TraceExport> {
        let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let endpoint = set("EDICT_OTLP_ENDPOINT");
        if endpoint.is_none()
            && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            return None;
        }
        Some(TraceExport {
            endpoint,
            roles: roles.to_owned(),
        })
    }

    /// The traces URL of `EDICT_OTLP_ENDPOINT` (`<base>/v1/traces`).
    fn traces_url(&self) -> Option<String> {
        self.endpoint
            .as_deref()
            .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

/// Flushes and stops the span export when the process ends ([`TelemetryGuard::shutdown`]).
#[derive(Debug, Default)]
#[must_use = "dropping the guard does not flush the spans; call shutdown"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still buffered and stops the exporter (blocks up to a few seconds: call it
    /// from a blocking context, e.g. `spawn_blocking`). Failures are logged, never fatal.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "cannot flush the last spans");
        }
    }
}

/// Installs the global subscriber, writing to stderr, with `default_level` unless `RUST_LOG` says
/// otherwise. Call once, from `main`.
pub fn init(json: bool, default_level: &str) {
    // Without an export nothing needs flushing.
    let _ = init_with_traces(json, default_level, None);
}

/// As [`init`], and exports the spans over OTLP when `traces` says so. A failure to build the
/// exporter is logged and leaves traces off (logs still work).
pub fn init_with_traces(
    json: bool,
    default_level: &str,
    traces: Option<TraceExport>,
) -> TelemetryGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let (provider, failure) = match traces.as_ref().map(provider) {
        None => (None, None),
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(error)) => (None, Some(error)),
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            .with_filter(span_filter())
            .boxed()
    });
    let fmt_layer = if json {
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    // `RUST_LOG` filters the log lines only: the exported spans have their own filter, so quiet logs
    // (`RUST_LOG=warn`) still leave the traces whole.
    // A second call (tests) keeps the first subscriber.
    let installed = tracing_subscriber::registry()
        .with(fmt_layer.with_filter(filter))
        .with(otel)
        .try_init()
        .is_ok();
    if let Some(error) = failure {
        tracing::error!(%error, "cannot set up the OTLP span export; traces stay off");
    }
    if installed
        && let Some(traces) = &traces
        && provider.is_some()
    {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing::info!(
            endpoint = traces
                .traces_url()
                .as_deref()
                .unwrap_or("(OTEL_EXPORTER_OTLP_*)"),
            "exporting traces over OTLP/HTTP"
        );
    }
    TelemetryGuard {
        provider: provider.filter(|_| installed),
    }
}

/// The spans (and the events inside them) exported: Edict's own at `info` and above, other crates'
/// at `warn`.
fn span_filter() -> Targets {
    Targets::new().with_default(LevelFilter::WARN).with_targets(
        [
            "edict",
            "edict_api",
            "edict_application",
            "edict_infrastructure",
            "edict_projections",
            "edict_domain",
        ]
        .map(|target| (target, LevelFilter::INFO)),
    )
}

/// The tracer provider exporting to `traces`.
fn provider(traces: &TraceExport) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig as _;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(url) = traces.traces_url() {
        exporter = exporter.with_endpoint(url);
    }
    let exporter = exporter.build().map_err(|error| error.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(SERVICE_NAME)
        .with_attribute(opentelemetry::KeyValue::new(
            "edict.roles",
            traces.roles.clone(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The W3C `traceparent` of `span` (`None` when it has no valid trace context: traces off, or a span
/// that is disabled).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The remote context a `traceparent` names (`None` when it is malformed).
pub fn context_of(traceparent: &str) -> Option<opentelemetry::Context> {
    context_from(&Single(traceparent))
}

/// The remote context in `carrier` (`None` when it holds no valid `traceparent`).
pub fn context_from(carrier: &dyn Extractor) -> Option<opentelemetry::Context> {
    let context = TraceContextPropagator::new().extract(carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// Writes `span`'s trace context into `carrier` (nothing when it has none).
pub fn inject(span: &tracing::Span, carrier: &mut dyn Injector) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, carrier);
    }
}

/// Makes `span` a child of the remote `traceparent` (a no-op when traces are off or it is malformed).
pub fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(context) = traceparent.and_then(context_of) {
        // Fails only when no OpenTelemetry layer is installed (traces off): nothing to link then.
        let _ = span.set_parent(context);
    }
}

/// A carrier holding one `traceparent`.
struct Single<'a>(&'a str);

impl Extractor for Single<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        assert_eq!(TraceExport::from_vars(|_| None, "api"), None);
        assert_eq!(
            TraceExport::from_vars(|_| Some(" ".into()), "api"),
            None,
            "an empty variable is not an endpoint"
        );
        let standard = TraceExport::from_vars(
            |name| (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://c:4318".into()),
            "api,relay",
        )
        .unwrap();
        assert_eq!(standard.endpoint, None);
        assert_eq!(standard.traces_url(), None);
        let ours = TraceExport::from_vars(
            |name| (name == "EDICT_OTLP_ENDPOINT").then(|| "http://c:4318/".into()),
            "api",
        )
        .unwrap();
        assert_eq!(
            ours.traces_url().as_deref(),
            Some("http://c:4318/v1/traces")
        );
    }

    #[test]
    fn a_traceparent_reads_back_as_the_same_trace() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = context_of(traceparent).unwrap();
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(context_of("garbage").is_none());
    }
}
