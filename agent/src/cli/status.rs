//! `edict-agent status`: what the snapshot says about the connection, the rule sets in force, the
//! reports pending and the recent actions.

use super::Format;
use crate::files::Paths;
use crate::output;
use crate::snapshot::{Snapshot, keys};
use serde_json::json;

pub(super) fn status(snapshot: &Snapshot, paths: &Paths, format: Format) -> anyhow::Result<()> {
    let connected = snapshot.identity(keys::CONNECTED)?.as_deref() == Some("true");
    let since = snapshot.identity(keys::CONNECTED_SINCE)?;
    let server = snapshot.identity(keys::SERVER)?;
    let api = snapshot.identity(keys::API)?;
    let agent_id = snapshot.identity(keys::AGENT_ID)?;
    let rulesets = snapshot.rulesets()?;
    let outbox = snapshot.outbox()?;
    let actions = snapshot.actions()?;
    let chain = snapshot.key_chain()?;
    let value = json!({
        "server": api,
        "gateways": server.as_deref().map(|s| s.lines().collect::<Vec<_>>()).unwrap_or_default(),
        "agent_id": agent_id,
        "logged_in": snapshot.identity(keys::TOKEN)?.is_some(),
        "token_expires_at": snapshot.identity(keys::TOKEN_EXPIRES_AT)?.filter(|at| !at.is_empty()),
        "connected": connected,
        "connection_changed_at": since,
        "rulesets": rulesets.iter().map(|r| json!({
            "team": r.team, "team_name": r.doc.team_name, "revision": r.revision, "hash": r.hash,
        })).collect::<Vec<_>>(),
        "pending_reports": outbox.len(),
        "watched": snapshot.watched()?,
        "recent_actions": actions.iter().rev().take(10).collect::<Vec<_>>(),
        "refused_downgrades": snapshot.refused_downgrades()?,
        "refused_downgrades_total": snapshot.refused_downgrade_count()?,
        "org_keys": snapshot.org_keys()?.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
        "key_sequence": chain.sequence,
        "retired_keys": chain.retired.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
        "integrity_failures": snapshot.integrity_failures()?.into_iter().map(|(_, f)| f).collect::<Vec<_>>(),
        "integrity_failures_total": snapshot.integrity_failure_count()?,
        "refused_files": crate::files::refused(paths, &snapshot.watched()?),
        "insecure": snapshot.identity(crate::tls::keys::INSECURE)?.as_deref() == Some("true"),
        "ca_file": crate::tls::recorded_ca_file(snapshot)?,
    });
    if format == Format::Json {
        output::json(&value);
        return Ok(());
    }
    output::line(&format!(
        "server:     {}",
        api.as_deref().unwrap_or("(not logged in)")
    ));
    if let Some(server) = &server {
        output::line(&format!(
            "gateways:   {}",
            server.lines().collect::<Vec<_>>().join(", ")
        ));
    }
    if snapshot.identity(crate::tls::keys::INSECURE)?.as_deref() == Some("true") {
        output::line("insecure:   yes (started with --insecure: plain http:// and ws:// allowed)");
    }
    output::line(&format!(
        "connected:  {}{}",
        if connected { "yes" } else { "no" },
        since.map(|s| format!(" (since {s})")).unwrap_or_default()
    ));
    if rulesets.is_empty() {
        output::line("rule sets:  none");
    }
    for r in &rulesets {
        output::line(&format!(
            "rule set:   {} ({}) revision {} hash {}",
            r.doc.team_name, r.team, r.revision, r.hash
        ));
    }
    output::line(&format!("pending reports: {}", outbox.len()));
    output::line(&format!(
        "refused downgrades: {}",
        snapshot.refused_downgrade_count()?
    ));
    let org_keys = snapshot.org_keys()?;
    output::line(&format!(
        "org keys:   {}",
        if org_keys.is_empty() {
            "none pinned: no rule set is trusted; run `edict-agent login` again".to_owned()
        } else {
            format!(
                "{} (key set {})",
                crate::login::fingerprints(&org_keys),
                chain.sequence
            )
        }
    ));
    output::line(&format!(
        "untrusted rule sets refused: {}",
        snapshot.integrity_failure_count()?
    ));
    for r in crate::files::refused(paths, &snapshot.watched()?) {
        output::line(&format!("left alone: {} ({})", r.file.display(), r.reason));
    }
    for a in actions.iter().rev().take(10) {
        output::line(&format!("  {}  {}  {}", a.at, a.what, a.file));
    }
    Ok(())
}
