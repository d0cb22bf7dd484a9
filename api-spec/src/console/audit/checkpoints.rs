//! The audit chain (`/console/audit/chain`): the signed checkpoints of the hash chain, newest first,
//! each with its key id and whether its signature verifies, and the state of the chain they show
//! (numbering without holes, keys seen, the newest signed point). With `verify=1` the log itself is
//! verified as `edict audit verify --file` verifies an export: every exported event's hash recomputed
//! and linked, and matched with the signed checkpoints (`OfflineVerifier` over `export_events`).
//!
//! Checkpoints come from `audit_checkpoints` (the use case of `GET /api/v1/audit/checkpoints`).

use super::{costly, exact, frame};
use crate::console::layout::Layout;
use crate::console::render::{Failure, page};
use crate::console::session::Session;
use crate::server::rate_limit::RateLimits;
use askama::Template;
use askama_web::WebTemplate;
use edict_application::Edict;
use edict_application::audit::checkpoint::{SignedCheckpoint, describe_failure};
use edict_application::audit::links::missing_checkpoint;
use edict_application::audit::offline::{OfflineSummary, OfflineVerifier};
use edict_application::audit::{ExportRange, MAX_CHECKPOINT_PAGE};
use edict_application::error::AppError;
use edict_application::principal::Principal;
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{Response, handler};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Checkpoints per page.
const SHOWN: usize = 50;
/// The most checkpoints the page reads (and checks) in one request.
const READ_MAX: usize = 20_000;

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub struct ChainQuery {
    /// Show the checkpoints numbered below this one (the older page).
    #[serde(default)]
    before: Option<i64>,
    /// `1`: verify the log against the checkpoints.
    #[serde(default)]
    verify: String,
}

/// A checkpoint as the page shows it.
pub struct CheckpointRow {
    number: i64,
    chain_index: i64,
    position: i64,
    hash: String,
    signed_at: String,
    key_id: String,
    public_key: String,
    /// `verified`, or why not.
    status: String,
    ok: bool,
}

/// What the checkpoints say of the chain.
pub struct ChainState {
    count: usize,
    /// The newest checkpoint, in words.
    newest: String,
    /// The key ids that signed, oldest first.
    keys: Vec<String>,
    /// The problems found (a hole in the numbers, a signature that does not verify, …).
    problems: Vec<String>,
    /// Whether more checkpoints exist than were read.
    partial: bool,
}

/// The outcome of verifying the log.
pub struct Verification {
    ok: bool,
    summary: OfflineSummary,
    broken: Option<String>,
    seconds: String,
}

/// The chain page.
#[derive(Template, WebTemplate)]
#[template(path = "console/audit_chain.html")]
pub struct ChainPage {
    layout: Layout,
    state: ChainState,
    rows: Vec<CheckpointRow>,
    /// The `before` of the older page.
    older: Option<i64>,
    /// Whether this is not the newest page.
    newer: bool,
    verification: Option<Verification>,
}

/// `GET /console/audit/chain`.
#[handler]
pub async fn chain(
    edict: Data<&Arc<Edict>>,
    limits: Data<&Arc<RateLimits>>,
    session: Session,
    Query(query): Query<ChainQuery>,
) -> poem::Result<Response> {
    let layout = frame(&session)?;
    let fail = |e| Failure::new(layout.clone(), e);
    let (checkpoints, partial) = all_checkpoints(&edict, &session.principal)
        .await
        .map_err(fail)?;
    let verification = if query.verify == "1" {
        if let Some(throttled) = costly(&limits, &session, &layout) {
            return Ok(throttled);
        }
        Some(
            verify_log(&edict, &session.principal, checkpoints.clone())
                .await
                .map_err(fail)?,
        )
    } else {
        None
    };
    let rows: Vec<CheckpointRow> = checkpoints.iter().map(row).collect();
    let state = state(&checkpoints, &rows, partial);
    let shown: Vec<CheckpointRow> = rows
        .into_iter()
        .rev()
        .filter(|r| query.before.is_none_or(|before| r.number < before))
        .take(SHOWN + 1)
        .collect();
    let older = (shown.len() > SHOWN).then(|| shown[SHOWN - 1].number);
    Ok(page(
        ChainPage {
            layout,
            state,
            rows: shown.into_iter().take(SHOWN).collect(),
            older,
            newer: query.before.is_some(),
            verification,
        },
        StatusCode::OK,
    ))
}

/// Every checkpoint in number order (at most [`READ_MAX`]; `true` when there are more).
async fn all_checkpoints(
    edict: &Edict,
    principal: &Principal,
) -> Result<(Vec<SignedCheckpoint>, bool), AppError> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = edict
            .audit_checkpoints(principal, after.as_deref(), Some(MAX_CHECKPOINT_PAGE))
            .await?;
        all.extend(page.items);
        match page.next {
            Some(next) if all.len() < READ_MAX => after = Some(next),
            Some(_) => return Ok((all, true)),
            None => return Ok((all, false)),
        }
    }
}

/// A key id: the first 16 hex digits of the SHA-256 of the public key (as the signing keys').
fn key_id(public_key: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(public_key))[..16].to_owned()
}

fn row(checkpoint: &SignedCheckpoint) -> CheckpointRow {
    let verified = checkpoint.verify(None);
    CheckpointRow {
        number: checkpoint.number,
        chain_index: checkpoint.chain_index,
        position: checkpoint.global_position,
        hash: checkpoint.hash.to_hex(),
        signed_at: exact(checkpoint.signed_at),
        key_id: key_id(&checkpoint.public_key),
        public_key: hex::encode(checkpoint.public_key),
        ok: verified.is_ok(),
        status: match verified {
            Ok(()) => "verified".into(),
            Err(error) => error.to_string(),
        },
    }
}

fn state(checkpoints: &[SignedCheckpoint], rows: &[CheckpointRow], partial: bool) -> ChainState {
    let mut problems = Vec::new();
    if let Some(hole) = missing_checkpoint(checkpoints) {
        problems.push(hole.message);
    }
    for (checkpoint, row) in checkpoints.iter().zip(rows) {
        if !row.ok
            && let Err(error) = checkpoint.verify(None)
        {
            problems.push(describe_failure(checkpoint.number, &error));
        }
    }
    if let Some(pair) = checkpoints
        .windows(2)
        .find(|w| w[1].chain_index <= w[0].chain_index)
    {
        problems.push(format!(
            "checkpoint {} covers chain index {}, not after checkpoint {}'s {}",
            pair[1].number, pair[1].chain_index, pair[0].number, pair[0].chain_index
        ));
    }
    let mut keys: Vec<String> = Vec::new();
    for row in rows {
        if !keys.contains(&row.key_id) {
            keys.push(row.key_id.clone());
        }
    }
    ChainState {
        count: checkpoints.len(),
        newest: checkpoints
            .last()
            .map(|c| {
                format!(
                    "checkpoint {}, signed {}, covers the first {} events of the chain (through position {})",
                    c.number,
                    exact(c.signed_at),
                    c.chain_index,
                    c.global_position
                )
            })
            .unwrap_or_default(),
        keys,
        problems,
        partial,
    }
}

/// Verifies the whole log as exported against `checkpoints`: the first broken line, or the summary.
async fn verify_log(
    edict: &Edict,
    principal: &Principal,
    checkpoints: Vec<SignedCheckpoint>,
) -> Result<Verification, AppError> {
    let started = std::time::Instant::now();
    let mut reader = edict.export_events(principal, ExportRange::default())?;
    let mut verifier = OfflineVerifier::new(checkpoints, None);
    let mut line = 0_u64;
    let mut broken = None;
    'pages: while let Some(events) = reader.next_page().await.map_err(AppError::from)? {
        for event in &events {
            line += 1;
            if let Err(message) = verifier.check(line, event) {
                broken = Some(message);
                break 'pages;
            }
        }
    }
    Ok(Verification {
        ok: broken.is_none(),
        summary: verifier.summary(),
        broken,
        seconds: format!("{:.1}", started.elapsed().as_secs_f64()),
    })
}
