//! The trace context and the request id in NATS message headers.
//!
//! The relay writes, on every event it publishes, `traceparent` (W3C trace context: its own span's when
//! traces are exported, else the one stored in the event's metadata) and `Edict-Request-Id` (the request
//! that committed the event); the projector reads them back to open its span for the message under the
//! same trace. NATS header names are case-sensitive: these are written and read exactly so.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};

/// The header carrying the id of the request that committed the event.
pub const REQUEST_ID_HEADER: &str = "Edict-Request-Id";

/// Writes trace context fields into a NATS [`HeaderMap`].
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Reads trace context fields from a NATS [`HeaderMap`].
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// The request id a message carries.
pub fn request_id(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?
        .get(REQUEST_ID_HEADER)
        .map(|value| value.as_str())
        .filter(|id| !id.is_empty())
}

/// The remote trace context a message carries (`None` without a valid `traceparent`).
pub fn trace_context(headers: Option<&HeaderMap>) -> Option<opentelemetry::Context> {
    crate::telemetry::context_from(&HeaderExtractor(headers?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn the_trace_context_survives_a_round_trip_through_nats_headers() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = crate::telemetry::context_of(traceparent).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "Rule:1:1");
        opentelemetry::propagation::TextMapPropagator::inject_context(
            &opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            &context,
            &mut HeaderInjector(&mut headers),
        );
        headers.insert(REQUEST_ID_HEADER, "req-1");
        assert_eq!(
            headers.get("traceparent").map(|v| v.as_str()),
            Some(traceparent),
            "written under the exact lowercase W3C name"
        );
        let read = trace_context(Some(&headers)).unwrap();
        assert_eq!(
            read.span().span_context().trace_id(),
            context.span().span_context().trace_id()
        );
        assert_eq!(
            read.span().span_context().span_id(),
            context.span().span_context().span_id()
        );
        assert_eq!(request_id(Some(&headers)), Some("req-1"));
        assert!(
            HeaderExtractor(&headers).keys().contains(&"traceparent"),
            "the extractor lists the keys"
        );
    }

    #[test]
    fn a_message_without_headers_has_no_context() {
        assert!(trace_context(None).is_none());
        assert!(trace_context(Some(&HeaderMap::new())).is_none());
        assert_eq!(request_id(None), None);
    }
}
