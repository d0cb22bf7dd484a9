//! Transport security of the agent's connections: which URLs it may use and whom it trusts.
//!
//! The agent talks to the API (`login`, `appeal`) over HTTP and to a gateway over a WebSocket. Both
//! carry what ends up in the developer's `CLAUDE.md` files, so plain `http://` and `ws://` are refused
//! unless the host is loopback (a server on the same machine: nobody sits in between), or the agent was
//! started with `--insecure` (which `status` shows). `--ca-file` adds the certificates of a private PKI
//! to the public roots (webpki-roots) for both clients; both use rustls with ring.
//!
//! The policy is set once per process from the command line ([`set_policy`]); `run` and `login` also
//! record it in the snapshot ([`record`]) so that `edict-agent status` can say how the daemon connects.

use crate::snapshot::Snapshot;
use anyhow::{Context, anyhow, bail};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Snapshot keys of the policy the daemon runs with (shown by `status`).
pub mod keys {
    /// `true` when the agent was started with `--insecure`.
    pub const INSECURE: &str = "tls_insecure";
    /// The `--ca-file` in use (empty: none).
    pub const CA_FILE: &str = "tls_ca_file";
}

/// How this process connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// Plain `http://` and `ws://` allowed to any host, not only loopback.
    pub insecure: bool,
    /// A PEM bundle of extra trusted CA certificates.
    pub ca_file: Option<PathBuf>,
}

static POLICY: OnceLock<TlsPolicy> = OnceLock::new();

/// Sets this process's policy (the first call wins; the default is secure, public roots only).
pub fn set_policy(policy: TlsPolicy) {
    let _ = POLICY.set(policy);
}

/// This process's policy.
pub fn policy() -> &'static TlsPolicy {
    POLICY.get_or_init(TlsPolicy::default)
}

/// Records `policy` in the snapshot for `status`.
///
/// # Errors
/// When the snapshot cannot be written.
pub fn record(snapshot: &Snapshot, policy: &TlsPolicy) -> anyhow::Result<()> {
    snapshot.set_identity(
        keys::INSECURE,
        if policy.insecure { "true" } else { "false" },
    )?;
    let ca = policy
        .ca_file
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    snapshot.set_identity(keys::CA_FILE, &ca)?;
    Ok(())
}

/// The CA file recorded by an earlier `login` or `run` (so `run` need not repeat `--ca-file`).
///
/// # Errors
/// When the snapshot cannot be read.
pub fn recorded_ca_file(snapshot: &Snapshot) -> anyhow::Result<Option<PathBuf>> {
    Ok(snapshot
        .identity(keys::CA_FILE)?
        .filter(|path| !path.is_empty())
        .map(PathBuf::from))
}

/// Whether `host` (a name or an IP literal, brackets allowed) is this machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of `scheme://[user@]host[:port][/…]`.
fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(host, _)| host.trim_start_matches('['));
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

impl TlsPolicy {
    /// Refuses a plain-text URL to a host other than loopback, unless `--insecure`.
    ///
    /// # Errors
    /// When `url` is `http://` or `ws://` to another machine and the policy is not insecure, or has no
    /// scheme.
    pub fn check(&self, url: &str) -> anyhow::Result<()> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| anyhow!("URL {url:?} has no scheme"))?;
        let plain = matches!(scheme.to_ascii_lowercase().as_str(), "http" | "ws");
        if plain && !self.insecure && !is_loopback(host_of(rest)) {
            bail!(
                "refusing {url}: plain {scheme}:// to another machine lets anyone on the path read and \
                 rewrite the rules; use https:// or wss://, or start the agent with --insecure"
            );
        }
        Ok(())
    }

    /// The certificates of `--ca-file` (PEM).
    fn extra_roots(&self) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
        use rustls::pki_types::pem::PemObject;
        let Some(path) = &self.ca_file else {
            return Ok(Vec::new());
        };
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA file {}", path.display()))?;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| anyhow!("{}: {error}", path.display()))?;
        if certs.is_empty() {
            bail!("{} holds no certificate", path.display());
        }
        Ok(certs)
    }

    /// An HTTP client trusting the public roots and `--ca-file`.
    ///
    /// # Errors
    /// When the CA file cannot be read or parsed.
    pub fn http_client(&self, timeout: Duration) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        for cert in self.extra_roots()? {
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_der(&cert).context("a certificate of the CA file")?,
            );
        }
        builder.build().context("building the HTTP client")
    }

    /// The TLS connector of the WebSocket client: `None` (tokio-tungstenite's default, public roots)
    /// without `--ca-file`.
    ///
    /// # Errors
    /// When the CA file cannot be read or parsed.
    pub fn ws_connector(&self) -> anyhow::Result<Option<tokio_tungstenite::Connector>> {
        let extra = self.extra_roots()?;
        if extra.is_empty() {
            return Ok(None);
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra {
            roots
                .add(cert)
                .context("a certificate of the CA file is not a valid trust anchor")?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Some(tokio_tungstenite::Connector::Rustls(Arc::new(config))))
    }
}

/// `path` made absolute, so that a daemon started elsewhere finds it.
///
/// # Errors
/// When the file does not exist.
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("--ca-file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_refused_off_loopback_unless_insecure() {
        let secure = TlsPolicy::default();
        for url in [
            "http://127.0.0.1:8080",
            "ws://localhost:8081/ws",
            "ws://[::1]:8081/ws",
            "http://127.0.0.5",
            "https://edict.example.com",
            "wss://10.0.0.1/ws",
        ] {
            assert!(secure.check(url).is_ok(), "{url}");
        }
        for url in [
            "http://edict.example.com",
            "ws://10.0.0.1:8081/ws",
            "ws://[fd00::2]:8081/ws",
            "http://127.0.0.1.evil.example/",
            "ws://localhost@10.0.0.1/ws",
        ] {
            let error = secure.check(url).unwrap_err().to_string();
            assert!(error.contains("--insecure"), "{url}: {error}");
        }
        let insecure = TlsPolicy {
            insecure: true,
            ca_file: None,
        };
        assert!(insecure.check("ws://10.0.0.1:8081/ws").is_ok());
        assert!(secure.check("edict.example.com").is_err());
    }
}
