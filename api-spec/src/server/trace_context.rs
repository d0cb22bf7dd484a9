//! The W3C trace context of requests: a client's `traceparent` header makes the request's span its
//! child, and the request span's own context is what commands store in their events' metadata (see
//! `RequestContext::traceparent`). Both need the OpenTelemetry layer the composition root installs
//! when traces are exported; without it, nothing is read or written.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::trace::TRACEPARENT;

/// The `traceparent` of the current span (`None` when traces are off).
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Carrier::default();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    carrier.0.remove(TRACEPARENT)
}

/// Makes `span` a child of the trace context in `headers` (a client's `traceparent`), if any.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &poem::http::HeaderMap) {
    if let Some(traceparent) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        crate::trace::set_remote_parent(span, traceparent);
    }
}

#[derive(Default)]
struct Carrier(HashMap<String, String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
