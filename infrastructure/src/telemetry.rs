//! The tracing subscriber: human-readable lines by default, JSON with `--log-json`, filtered by `RUST_LOG`
//! (default: `info` for servers, `warn` for one-shot commands).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber, writing to stderr, with `default_level` unless `RUST_LOG` says
/// otherwise. Call once, from `main`.
pub fn init(json: bool, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter);
    // A second call (tests) keeps the first subscriber.
    let _ = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
}
