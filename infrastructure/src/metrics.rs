//! The Prometheus side of Edict's metrics: [`install`] sets the process's recorder (the exporter
//! starts no listener; the API and gateway ports serve [`Exposition`] at `/metrics`), and [`sample`]
//! sets, on a timer, the gauges read from the store: the application's (log head, projection lag,
//! convergence per team) and those of the adapters here (the relay's lag in positions and seconds,
//! the audit chain's lag). Every process that reaches the store reports them, so a stalled relay or
//! audit writer shows in the metrics of the processes that still run.
//!
//! [`MetricsAccess`] is who may read the page: loopback by default, or the networks
//! `EDICT_METRICS_ALLOW` lists (`any` for everyone).

use crate::audit::AuditStore;
use crate::nats::{NatsPrefix, relay_checkpoint};
use crate::store::Database;
use edict_application::Edict;
use edict_application::event_log::EventLog;
use edict_application::metrics::{Exposition, names};
use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// Buckets of the latency histograms, in seconds (1 ms to 10 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the same handle) and
/// describes every metric.
///
/// # Errors
/// When another recorder was installed first.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|error| error.to_string())?
        .install_recorder()
        .map_err(|error| error.to_string())?;
    edict_application::metrics::describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Loopback clients only (the default).
    #[default]
    Loopback,
    /// Loopback clients and these networks.
    Networks(Vec<ipnet::IpNet>),
    /// Everyone (behind a network that already restricts it).
    Any,
    /// Nobody: for a port whose peers are all relayed from loopback (the gateway behind its TLS
    /// bridge), where loopback says nothing about the client.
    Nobody,
}

impl MetricsAccess {
    /// Parses `EDICT_METRICS_ALLOW`: empty or `loopback`, `any`, or comma-separated addresses and
    /// CIDR networks.
    ///
    /// # Errors
    /// A message naming the entry that is neither.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("loopback") {
            return Ok(MetricsAccess::Loopback);
        }
        if value.eq_ignore_ascii_case("any") {
            return Ok(MetricsAccess::Any);
        }
        value
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!(
                            "EDICT_METRICS_ALLOW: {entry:?} is not an address or a network \
                             (expected e.g. 10.0.0.0/8, or `any`, or `loopback`)"
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(MetricsAccess::Networks)
    }

    /// The access of a port whose every peer is relayed from loopback: [`MetricsAccess::Any`] stays,
    /// anything else becomes [`MetricsAccess::Nobody`].
    #[must_use]
    pub fn behind_relay(&self) -> Self {
        match self {
            MetricsAccess::Any => MetricsAccess::Any,
            _ => MetricsAccess::Nobody,
        }
    }

    /// Whether `client` may read the page.
    pub fn allows(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        match self {
            MetricsAccess::Any => true,
            MetricsAccess::Nobody => false,
            MetricsAccess::Loopback => client.is_loopback(),
            MetricsAccess::Networks(networks) => {
                client.is_loopback() || networks.iter().any(|network| network.contains(&client))
            }
        }
    }
}

/// The metrics page of `handle`, for the clients `access` allows.
pub fn exposition(handle: PrometheusHandle, access: MetricsAccess) -> Exposition {
    Exposition::new(move || handle.render(), move |client| access.allows(client))
}

/// What [`sample`] reads besides the application's gauges.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The store.
    pub database: Database,
    /// The NATS prefix of the relay whose lag to report (with PostgreSQL and NATS).
    pub relay: Option<NatsPrefix>,
}

/// Samples the gauges every `interval` until `stopped` resolves, and runs the recorder's upkeep.
pub async fn sample(
    edict: std::sync::Arc<Edict>,
    handle: PrometheusHandle,
    sources: Sources,
    interval: Duration,
    stopped: impl std::future::Future<Output = ()>,
) {
    let mut stopped = std::pin::pin!(stopped);
    loop {
        handle.run_upkeep();
        edict.sample_gauges().await;
        sample_adapters(&sources).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = &mut stopped => return,
        }
    }
}

async fn sample_adapters(sources: &Sources) {
    let head = match sources.database.last_position().await {
        Ok(head) => head.unwrap_or(0),
        Err(error) => {
            tracing::debug!(%error, "metrics: cannot read the log's head");
            return;
        }
    };
    match AuditStore::new(sources.database.clone()).head().await {
        Ok(chained) => {
            let chained = chained.map_or(0, |row| row.global_position);
            gauge!(names::AUDIT_CHAIN_LAG).set((head - chained).max(0) as f64);
        }
        Err(error) => tracing::debug!(%error, "metrics: cannot read the audit chain's head"),
    }
    if let Some(prefix) = &sources.relay {
        match relay_checkpoint(&sources.database, prefix).await {
            Ok(state) => {
                let behind = (head - state.checkpoint.position).max(0);
                gauge!(names::RELAY_LAG_POSITIONS).set(behind as f64);
                let age = if behind == 0 {
                    0.0
                } else {
                    match sources.database.read_all(state.checkpoint, 1).await {
                        Ok(next) => next.first().map_or(0.0, |event| {
                            (chrono::Utc::now() - event.recorded_at)
                                .to_std()
                                .unwrap_or_default()
                                .as_secs_f64()
                        }),
                        Err(_) => return,
                    }
                };
                gauge!(names::RELAY_LAG_SECONDS).set(age);
            }
            Err(error) => tracing::debug!(%error, "metrics: cannot read the relay's checkpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MetricsAccess;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_is_the_default_and_networks_add_to_it() {
        let default = MetricsAccess::parse("").unwrap();
        assert!(default.allows(ip("127.0.0.1")));
        assert!(default.allows(ip("::1")));
        assert!(default.allows(ip("::ffff:127.0.0.1")));
        assert!(!default.allows(ip("10.1.2.3")));
        let networks = MetricsAccess::parse("10.0.0.0/8, 192.168.1.7").unwrap();
        assert!(networks.allows(ip("10.1.2.3")));
        assert!(networks.allows(ip("192.168.1.7")));
        assert!(!networks.allows(ip("192.168.1.8")));
        assert!(networks.allows(ip("127.0.0.1")));
        assert!(
            MetricsAccess::parse("any")
                .unwrap()
                .allows(ip("203.0.113.9"))
        );
    }

    #[test]
    fn a_bad_entry_is_named() {
        let error = MetricsAccess::parse("10.0.0.0/8,nonsense").unwrap_err();
        assert!(error.contains("nonsense"), "{error}");
    }
}
