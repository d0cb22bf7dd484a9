//! Joining a remote trace: both edges make one of their spans the child of a W3C `traceparent` they
//! were given (the API from a client's header, the gateway from a rule set publication's origin). It
//! needs the OpenTelemetry layer the composition root installs when traces are exported; without it,
//! nothing is linked.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header (and metadata key) of the W3C trace context.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// Makes `span` a child of the remote `traceparent` (a no-op when it is malformed or traces are off).
pub(crate) fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Single(traceparent))
    });
    if context.span().span_context().is_valid() {
        // Fails only without an OpenTelemetry layer (traces off).
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
