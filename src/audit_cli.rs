//! `edict audit`: prove the history was not tampered with.
//!
//! `edict audit verify` has two modes:
//!
//! - against the database (default; `--database-url`, or the embedded store in `--data-dir`, like
//!   `edict projections`): recomputes every chain hash from the raw events table, checks every chain
//!   row and every checkpoint's signature and hash (see `edict_infrastructure::audit::verify`);
//! - against a file (`--file export.ndjson`, from `edict events export` or `GET /api/v1/events/export`):
//!   recomputes each line's hash from its `previous_hash`, checks that the lines link, and matches them
//!   with signed checkpoints from `--checkpoints FILE` (the JSON of `GET /api/v1/audit/checkpoints`, or
//!   an array of its items) or fetched from `--server URL --token TOKEN`.
//!
//! Checkpoints are checked against a trusted public key when there is one: `--public-key`, else the
//! key of `EDICT_AUDIT_SIGNING_KEY`, else (database mode) the key kept in the store, which proves less
//! (whoever rewrites the database can read it). Either mode names the first broken link and exits with
//! a failure status; `--output json` prints the whole report. Database mode also says what it did not
//! verify: events after the last checkpoint (chained, not signed) and events not yet chained
//! (`unchained_events`), which fail the command with `--strict`.

use crate::output::{self, OutputFormat};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use edict_application::audit::ExportedEvent;
use edict_application::audit::chain::ChainHash;
use edict_application::audit::checkpoint::SignedCheckpoint;
use edict_application::audit::offline::{OfflineSummary, OfflineVerifier};
use edict_infrastructure::audit::{self, VerifyOptions, VerifyProgress, VerifyReport};
use edict_infrastructure::store::Database;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the store is (as for `edict serve`).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Directory of the embedded store.
    #[arg(long, env = "EDICT_DATA_DIR", default_value_os_t = crate::default_data_dir())]
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL instead of the embedded SQLite store.
    #[arg(long, env = "EDICT_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// Opens (and migrates) the store `args` name.
///
/// # Errors
/// When it cannot be opened or migrated.
pub async fn open_store(args: &StoreArgs) -> Result<Database> {
    crate::open_store_at(&args.data_dir, args.database_url.as_deref()).await
}

/// `edict audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain and the checkpoint signatures; name the first broken link.
    Verify(VerifyArgs),
    /// The signed checkpoints of the hash chain, through a running API
    /// (`GET /api/v1/audit/checkpoints`); as the admin commands, signed in or with `EDICT_SERVER`
    /// and `EDICT_TOKEN`.
    Checkpoints(crate::admin::log::CheckpointsArgs),
}

/// Arguments of `edict audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Start at this chain index (database mode; the chain row before it is taken as given).
    #[arg(long, default_value_t = 1)]
    from: i64,
    /// Verify this export (NDJSON) instead of the database.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Signed checkpoints for `--file`: the JSON of `GET /api/v1/audit/checkpoints` or an array of its
    /// items.
    #[arg(long, conflicts_with = "server")]
    checkpoints: Option<PathBuf>,
    /// Fetch the signed checkpoints for `--file` from this Edict API (`http://host:port`).
    #[arg(long, requires = "token")]
    server: Option<String>,
    /// An auditor's or org_admin's access token for `--server`.
    #[arg(long, env = "EDICT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: crate::api_client::ServerArgs,
    /// The ed25519 public key (hex) checkpoints must be signed with.
    #[arg(long)]
    public_key: Option<String>,
    /// Threads that hash (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    output: OutputFormat,
    /// Database mode: fail when events of the log are not chained yet (not verified), as after the
    /// audit role was killed; without it they are reported (`unchained_events`) and the chain that
    /// exists decides the exit status.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs one `edict audit` command.
pub async fn run(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify(args) => match args.file.clone() {
            Some(file) => verify_file(&args, &file).await,
            None => verify_database(&args).await,
        },
        AuditCommand::Checkpoints(args) => crate::admin::log::checkpoints(args).await,
    }
}

/// The trusted key: `--public-key`, else the key of `EDICT_AUDIT_SIGNING_KEY`.
fn configured_key(args: &VerifyArgs) -> Result<Option<([u8; 32], &'static str)>> {
    if let Some(text) = &args.public_key {
        let mut key = [0_u8; 32];
        hex::decode_to_slice(text.trim(), &mut key)
            .map_err(|_| anyhow!("--public-key must be 64 hex characters"))?;
        return Ok(Some((key, "--public-key")));
    }
    if let Some(seed) = std::env::var("EDICT_AUDIT_SIGNING_KEY")
        .ok()
        .filter(|s| !s.is_empty())
    {
        let seed = audit::parse_seed(&seed)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        return Ok(Some((
            key.verifying_key().to_bytes(),
            "EDICT_AUDIT_SIGNING_KEY",
        )));
    }
    Ok(None)
}

fn progress_bar(output: OutputFormat, template: &str) -> ProgressBar {
    let bar = if output == OutputFormat::Text {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The JSON report of a database verification.
#[derive(Serialize)]
struct DatabaseReport<'a> {
    #[serde(flatten)]
    report: &'a VerifyReport,
    trusted_key: Option<String>,
    trusted_key_source: Option<&'static str>,
}

async fn verify_database(args: &VerifyArgs) -> Result<()> {
    let database = open_store(&args.store).await?;
    let trusted = match configured_key(args)? {
        Some(found) => Some(found),
        None => audit::key::stored_seed(&database, false)
            .await?
            .map(|seed| {
                let key = ed25519_dalek::SigningKey::from_bytes(&seed);
                (key.verifying_key().to_bytes(), "the key kept in the store")
            }),
    };
    let bar = progress_bar(
        args.output,
        "verifying [{bar:30}] {pos}/{len} events ({per_sec}) {elapsed}",
    );
    let progress_bar = bar.clone();
    let mut options = VerifyOptions {
        from: args.from,
        trusted_key: trusted.map(|(key, _)| key),
        ..VerifyOptions::default()
    };
    if let Some(threads) = args.threads {
        options.threads = threads;
    }
    let report = audit::verify_database(
        &database,
        options,
        Arc::new(move |p: VerifyProgress| {
            progress_bar.set_length(p.total);
            progress_bar.set_position(p.verified);
        }),
    )
    .await;
    bar.finish_and_clear();
    database.close().await;
    let report = report.context("cannot verify the chain")?;
    match args.output {
        OutputFormat::Json => output::json(&DatabaseReport {
            report: &report,
            trusted_key: trusted.map(|(key, _)| hex::encode(key)),
            trusted_key_source: trusted.map(|(_, source)| source),
        })?,
        OutputFormat::Text => {
            output::line(&format!(
                "verified {} events (chain index {} to {}) and {} checkpoints in {:.2} s ({:.0} events/s)",
                report.events_verified,
                report.from,
                report.last_chain_index,
                report.checkpoints_verified,
                report.seconds,
                report.events_per_sec
            ));
            if report.broken.is_none() {
                output::line(&format!("head hash {}", report.last_hash));
                output::line(&format!(
                    "{} events after the last checkpoint (chained, not yet signed)",
                    report.unsigned_events
                ));
                output::line(&format!(
                    "{} events not yet chained (in the log after the chain's head, not verified)",
                    report.unchained_events
                ));
            }
            match trusted {
                Some((key, source)) => output::line(&format!(
                    "checkpoints checked against {} ({source})",
                    hex::encode(key)
                )),
                None => output::line(&format!(
                    "no trusted key: checkpoints checked against their own keys {}",
                    report.public_keys.join(", ")
                )),
            }
        }
    }
    match report.broken {
        Some(broken) => bail!("{}", broken.message),
        None if args.strict && report.unchained_events > 0 => bail!(
            "{} events not yet chained: the audit role has not chained the log's tail (is it running?)",
            report.unchained_events
        ),
        None => Ok(()),
    }
}

/// A checkpoint as the API serves it.
#[derive(Debug, Deserialize)]
struct CheckpointWire {
    number: i64,
    chain_index: i64,
    global_position: i64,
    hash: String,
    signed_at: String,
    public_key: String,
    signature: String,
}

impl TryFrom<CheckpointWire> for SignedCheckpoint {
    type Error = anyhow::Error;

    fn try_from(wire: CheckpointWire) -> Result<Self> {
        let mut public_key = [0_u8; 32];
        hex::decode_to_slice(&wire.public_key, &mut public_key)
            .map_err(|_| anyhow!("checkpoint {}: public_key is not hex", wire.number))?;
        let mut signature = [0_u8; 64];
        hex::decode_to_slice(&wire.signature, &mut signature)
            .map_err(|_| anyhow!("checkpoint {}: signature is not hex", wire.number))?;
        Ok(SignedCheckpoint {
            number: wire.number,
            chain_index: wire.chain_index,
            global_position: wire.global_position,
            hash: ChainHash::parse(&wire.hash)
                .map_err(|_| anyhow!("checkpoint {}: hash is not hex", wire.number))?,
            signed_at: chrono::DateTime::parse_from_rfc3339(&wire.signed_at)
                .map_err(|_| anyhow!("checkpoint {}: signed_at is not a time", wire.number))?
                .with_timezone(&chrono::Utc),
            public_key,
            signature,
        })
    }
}

/// A page of checkpoints as the API serves it, or a bare list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CheckpointsWire {
    Page {
        items: Vec<CheckpointWire>,
        next: Option<String>,
    },
    List(Vec<CheckpointWire>),
}

async fn fetch_checkpoints(
    server: &str,
    token: &str,
    tls: &crate::api_client::ServerArgs,
) -> Result<Vec<SignedCheckpoint>> {
    let client = crate::api_client::client(server, tls)?;
    let base = server.trim_end_matches('/');
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut request = client
            .get(format!("{base}/api/v1/audit/checkpoints"))
            .bearer_auth(token)
            .query(&[("limit", "500")]);
        if let Some(after) = &after {
            request = request.query(&[("after", after.as_str())]);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {base}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("GET /api/v1/audit/checkpoints answered {status}: {body}");
        }
        let page: CheckpointsWire = response
            .json()
            .await
            .context("unexpected checkpoints response")?;
        let (items, next) = match page {
            CheckpointsWire::Page { items, next } => (items, next),
            CheckpointsWire::List(items) => (items, None),
        };
        for item in items {
            all.push(SignedCheckpoint::try_from(item)?);
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

fn read_checkpoints(path: &PathBuf) -> Result<Vec<SignedCheckpoint>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let wire: CheckpointsWire = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a list of checkpoints", path.display()))?;
    let items = match wire {
        CheckpointsWire::Page { items, .. } | CheckpointsWire::List(items) => items,
    };
    items.into_iter().map(SignedCheckpoint::try_from).collect()
}

/// The JSON report of a file verification.
#[derive(Serialize)]
struct FileReport {
    ok: bool,
    file: String,
    #[serde(flatten)]
    summary: OfflineSummary,
    checkpoints_known: usize,
    trusted_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broken: Option<String>,
    seconds: f64,
    events_per_sec: f64,
}

async fn verify_file(args: &VerifyArgs, path: &PathBuf) -> Result<()> {
    let checkpoints = match (&args.checkpoints, &args.server, &args.token) {
        (Some(file), _, _) => read_checkpoints(file)?,
        (None, Some(server), Some(token)) => fetch_checkpoints(server, token, &args.tls).await?,
        _ => Vec::new(),
    };
    let trusted = configured_key(args)?;
    let known = checkpoints.len();
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let bar = progress_bar(
        args.output,
        "verifying [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}) {elapsed}",
    );
    bar.set_length(size);
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let started = Instant::now();
    let progress = bar.clone();
    let trusted_key = trusted.map(|(key, _)| key);
    let (summary, broken) = tokio::task::spawn_blocking(move || {
        let mut verifier = OfflineVerifier::new(checkpoints, trusted_key);
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut line = String::new();
        let mut number = 0_u64;
        let mut read = 0_u64;
        loop {
            line.clear();
            let n = match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) => return (verifier.summary(), Some(format!("cannot read: {error}"))),
            };
            number += 1;
            read += n as u64;
            if number.is_multiple_of(4096) {
                progress.set_position(read);
            }
            if line.trim().is_empty() {
                continue;
            }
            let exported: ExportedEvent = match serde_json::from_str(&line) {
                Ok(exported) => exported,
                Err(error) => {
                    return (
                        verifier.summary(),
                        Some(format!("line {number} is not an exported event: {error}")),
                    );
                }
            };
            if let Err(broken) = verifier.check(number, &exported) {
                return (verifier.summary(), Some(broken));
            }
        }
        (verifier.summary(), None)
    })
    .await
    .context("the verifier stopped")?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let report = FileReport {
        ok: broken.is_none(),
        file: path.display().to_string(),
        checkpoints_known: known,
        trusted_key: trusted.map(|(key, _)| hex::encode(key)),
        broken: broken.clone(),
        seconds,
        events_per_sec: summary.lines as f64 / seconds.max(1e-9),
        summary,
    };
    match args.output {
        OutputFormat::Json => output::json(&report)?,
        OutputFormat::Text => {
            let s = &report.summary;
            output::line(&format!(
                "verified {} lines ({} chained, chain index {} to {}) in {:.2} s",
                s.lines,
                s.hashed_lines,
                s.first_chain_index.unwrap_or(0),
                s.last_chain_index.unwrap_or(0),
                report.seconds
            ));
            output::line(&format!(
                "{} of {} known checkpoints matched{}; {} lines after the last one are consistent but not signed",
                s.checkpoints_matched,
                known,
                s.last_checkpoint
                    .map(|n| format!(" (the last: {n})"))
                    .unwrap_or_default(),
                s.unanchored_lines
            ));
            if known == 0 {
                output::line(
                    "no checkpoints given (--checkpoints or --server): the file is only consistent with itself",
                );
            }
            if let Some((key, source)) = trusted {
                output::line(&format!(
                    "checkpoints checked against {} ({source})",
                    hex::encode(key)
                ));
            }
        }
    }
    match broken {
        Some(broken) => bail!("{broken}"),
        None => Ok(()),
    }
}
