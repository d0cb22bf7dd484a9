//! The HTTP client of the commands that talk to a running Edict API (`--server`): `events tail`,
//! `audit verify --file`, `keys`. A private PKI's CA bundle (`--ca-file`, PEM) is trusted besides the
//! system's roots; plain `http://` is refused off loopback, where a token would cross the network in
//! clear.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

/// Where the API is and how to trust it.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// A PEM bundle of CA certificates to trust for an `https://` `--server` (a private PKI).
    #[arg(long, env = "EDICT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// A client for `server` (checked: `https://`, or `http://` on loopback only).
///
/// # Errors
/// When the URL is not acceptable or the CA file cannot be read.
pub fn client(server: &str, args: &ServerArgs) -> Result<reqwest::Client> {
    let url = reqwest::Url::parse(server).with_context(|| format!("invalid --server {server}"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let host = url.host_str().unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!(
                    "--server {server} is plain http off loopback: the token would cross the \
                     network in clear; use https://"
                );
            }
        }
        other => bail!("--server must be http(s)://, not {other}://"),
    }
    let mut builder = reqwest::Client::builder();
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read --ca-file {}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-file {} holds no PEM certificate", path.display()))?;
        if certificates.is_empty() {
            bail!("--ca-file {} holds no PEM certificate", path.display());
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().context("cannot build the HTTP client")
}
