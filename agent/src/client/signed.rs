//! What a gateway sends that the agent acts on only once it verifies (ADRs 0018, 0022, 0024): rule
//! sets, decisions and removals, each signed by a trusted organization key; what does not verify is
//! recorded as an integrity failure and reported to the gateway.

use super::{blocking, resync, send};
use crate::daemon::Command;
use crate::enforce::Decision;
use crate::snapshot::{PutOutcome, Snapshot, StoredRuleSet, keys};
use edict_api::protocol::{AgentMessage, GatewayMessage, Holding};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use tokio_tungstenite::tungstenite::Message;

/// Stores a rule set a gateway sent once it verifies (ADR 0018), reconciles the files and answers
/// `applied`; answers `refused` for a lower revision than the one held, and reports an untrusted one.
/// One signed by a key not trusted yet waits in `awaiting_keys` for the next key set.
pub(super) async fn take_ruleset<S>(
    snapshot: &Arc<Snapshot>,
    engine: &Sender<Command>,
    sink: &mut S,
    stored: StoredRuleSet,
    awaiting_keys: &mut Vec<StoredRuleSet>,
) -> anyhow::Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let (team, revision, hash) = (stored.team.clone(), stored.revision, stored.hash.clone());
    let kept = stored.clone();
    // Durable first: `applied` promises the rule set survives a crash. A rule set older than the one
    // held is not stored (the snapshot records why). Verified against the trusted organization keys
    // before anything is stored: an untrusted rule set is recorded and reported, never applied.
    let outcome = blocking(snapshot, move |s| s.accept_ruleset(&stored)).await?;
    if let PutOutcome::Untrusted(failure) = &outcome {
        tracing::error!(
            team,
            revision,
            reason = failure.reason,
            detail = failure.detail,
            "refused an untrusted rule set; still enforcing the last good one"
        );
        if failure.reason == "unknown_key" {
            awaiting_keys.retain(|held| held.team != team);
            awaiting_keys.push(kept);
        }
        return report_integrity(snapshot, sink).await;
    }
    if let PutOutcome::Refused(refused) = outcome {
        tracing::warn!(
            team,
            offered_revision = revision,
            held_revision = refused.held_revision,
            "refused a rule set older than the one held; still enforcing the held one"
        );
        return send(
            sink,
            &AgentMessage::Refused {
                team,
                revision,
                hash,
                held_revision: refused.held_revision,
                held_hash: refused.held_hash,
            },
        )
        .await;
    }
    if let Err(e) = resync(engine).await {
        tracing::warn!(error = %e, team, "rule set stored; some files not written yet");
    }
    tracing::info!(team, revision, "rule set applied");
    send(
        sink,
        &AgentMessage::Applied(Holding {
            team,
            revision,
            hash,
        }),
    )
    .await
}

/// The decision `message` carries when it is signed by a trusted key for this agent (ADR 0022); else
/// `None`, the failure recorded (and reported by the caller): the change stays as it is.
pub(super) async fn trusted_decision(
    snapshot: &Arc<Snapshot>,
    message: &GatewayMessage,
) -> anyhow::Result<Option<Decision>> {
    let GatewayMessage::Decision {
        change_request,
        file,
        action,
        until,
        rule,
        content_hash,
        decision_id,
        signature,
        ..
    } = message
    else {
        return Ok(None);
    };
    let agent = blocking(snapshot, |s| s.identity(keys::AGENT_ID))
        .await?
        .unwrap_or_default();
    let keys = blocking(snapshot, Snapshot::org_keys).await?;
    let verdict = message
        .decision_statement()
        .map(|statement| statement.verify(&agent, signature.as_ref(), &keys));
    match verdict {
        Some(Ok(())) => Ok(Some(Decision {
            change_request: change_request.clone(),
            file: file.clone(),
            rule: rule.clone(),
            content_hash: content_hash.clone(),
            decision_id: decision_id.clone(),
            action: *action,
            until: until.clone(),
        })),
        Some(Err(error)) => {
            tracing::error!(
                change_request,
                reason = error.code(),
                %error,
                "refused an untrusted decision; the change stays as it is"
            );
            let failure = crate::snapshot::IntegrityFailure {
                team: "decision".to_owned(),
                revision: 0,
                hash: decision_id
                    .clone()
                    .unwrap_or_else(|| change_request.clone()),
                reason: error.code().to_owned(),
                detail: format!("decision on change request {change_request}: {error}"),
                at: chrono::Utc::now().to_rfc3339(),
                reported: false,
            };
            blocking(snapshot, move |s| s.record_integrity_failure(&failure)).await?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Drops a team's sections on a `removed` that verifies (ADR 0024): signed by a trusted key, for
/// this agent, and later in the log than any removal of the team taken before. Any other is not
/// acted on (the team's rules stay enforced), recorded as an integrity failure (team `removal`, hash =
/// the team) and reported.
pub(super) async fn take_removal<S>(
    snapshot: &Arc<Snapshot>,
    engine: &Sender<Command>,
    sink: &mut S,
    message: &GatewayMessage,
) -> anyhow::Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let Some(statement) = message.removal_statement() else {
        return Ok(());
    };
    let team = statement.team.to_owned();
    let t = team.clone();
    let (agent, keys, floor, held) = blocking(snapshot, move |s| {
        let held = s.holdings()?.iter().any(|holding| holding.team == t);
        Ok((
            s.identity(keys::AGENT_ID)?.unwrap_or_default(),
            s.org_keys()?,
            s.removal_floor(&t)?,
            held,
        ))
    })
    .await?;
    let signature = match message {
        GatewayMessage::Removed { signature, .. } => signature.as_ref(),
        _ => None,
    };
    match statement.verify(&agent, floor, signature, &keys) {
        Ok(()) => {
            let (t, position) = (team.clone(), statement.position);
            blocking(snapshot, move |s| s.take_removal(&t, position)).await?;
            if let Err(e) = resync(engine).await {
                tracing::warn!(error = %e, team, "removing the sections of a team");
            }
            tracing::info!(team, position, held, "team removed");
            Ok(())
        }
        Err(error) => {
            tracing::error!(
                team,
                reason = error.code(),
                %error,
                "refused an untrusted removal; still enforcing the team's rules"
            );
            let failure = crate::snapshot::IntegrityFailure {
                team: "removal".to_owned(),
                revision: statement.position,
                hash: team.clone(),
                reason: error.code().to_owned(),
                detail: format!("removal of team {team}: {error}"),
                at: chrono::Utc::now().to_rfc3339(),
                reported: false,
            };
            blocking(snapshot, move |s| s.record_integrity_failure(&failure)).await?;
            report_integrity(snapshot, sink).await
        }
    }
}

/// Sends every integrity failure no gateway was told of yet, and marks each told.
pub(super) async fn report_integrity<S>(
    snapshot: &Arc<Snapshot>,
    sink: &mut S,
) -> anyhow::Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let failures = blocking(snapshot, Snapshot::integrity_failures).await?;
    for (sequence, failure) in failures.into_iter().filter(|(_, f)| !f.reported) {
        send(
            sink,
            &AgentMessage::IntegrityFailure {
                team: failure.team,
                revision: failure.revision,
                hash: failure.hash,
                reason: failure.reason,
                detail: failure.detail,
            },
        )
        .await?;
        blocking(snapshot, move |s| s.mark_integrity_reported(sequence)).await?;
    }
    Ok(())
}
