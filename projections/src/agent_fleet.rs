//! The agent fleet: one [`AgentDoc`] per enrolled machine (kind `agent`, key = agent id; meta: no team,
//! status `enrolled|revoked`, sort key = the agent id, UUID v7 so enrolment order).

use crate::Applied;
use crate::decode::AnyEvent;
use crate::{DocMeta, Docs, ProjectionError, RecordedEvent, inconsistent, version_of};
use chrono::{DateTime, Utc};
use edict_domain::agent::{AgentEvent, IntegrityFailure};
use edict_domain::{AgentId, UserId};
use serde::{Deserialize, Serialize};

/// The document kind of an agent.
pub const AGENT_KIND: &str = "agent";

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDoc {
    /// The agent.
    pub id: AgentId,
    /// The user it acts for.
    pub user: UserId,
    /// The machine's stable id.
    pub machine_id: String,
    /// The machine's name (may be empty).
    pub machine_name: String,
    /// When it was enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// Whether it was revoked (its token no longer works).
    pub revoked: bool,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who revoked it.
    pub revoked_by: Option<UserId>,
    /// Why, if a reason was given.
    pub revoke_reason: Option<String>,
    /// How many untrusted rule sets the agent reported refusing (ADR 0018).
    #[serde(default)]
    pub integrity_failures: u64,
    /// The last one.
    #[serde(default)]
    pub last_integrity_failure: Option<IntegrityFailure>,
    /// The agent aggregate's version: the sequence of the last event applied.
    pub version: u64,
}

projection! {
    /// The agent fleet projection (`agent_fleet`).
    AgentFleet, "agent_fleet", [Agent], apply
}

/// Applies `event`, `decoded` when it is about an aggregate this projection follows.
async fn apply(decoded: Option<AnyEvent>, event: &RecordedEvent, docs: &mut Docs<'_>) -> Applied {
    let Some(AnyEvent::Agent(agent_event)) = decoded else {
        return Ok(());
    };
    let mut doc = match agent_event {
        AgentEvent::AgentEnrolled {
            agent_id,
            user,
            machine_id,
            machine_name,
            at,
        } => {
            if docs
                .get::<AgentDoc>(AGENT_KIND, &agent_id.to_string())
                .await?
                .is_some()
            {
                return Err(inconsistent(
                    event,
                    format!("agent {agent_id} enrolled twice"),
                ));
            }
            AgentDoc {
                id: agent_id,
                user,
                machine_id: machine_id.as_str().to_owned(),
                machine_name: machine_name.as_str().to_owned(),
                enrolled_at: at,
                revoked: false,
                revoked_at: None,
                revoked_by: None,
                revoke_reason: None,
                integrity_failures: 0,
                last_integrity_failure: None,
                version: 0,
            }
        }
        AgentEvent::AgentRevoked {
            agent_id,
            by,
            reason,
            at,
        } => {
            let mut doc = in_fleet(docs, event, agent_id).await?;
            doc.revoked = true;
            doc.revoked_at = Some(at);
            doc.revoked_by = Some(by);
            doc.revoke_reason = reason.map(|r| r.as_str().to_owned());
            doc
        }
        AgentEvent::IntegrityFailureReported {
            agent_id,
            team,
            revision,
            reason,
            detail,
            at,
        } => {
            let mut doc = in_fleet(docs, event, agent_id).await?;
            doc.integrity_failures += 1;
            doc.last_integrity_failure = Some(IntegrityFailure {
                team,
                revision,
                reason,
                detail,
                at,
            });
            doc
        }
        // An enforcement report changes nothing the fleet shows but the agent's version.
        AgentEvent::EnforcementReported { agent_id, .. } => in_fleet(docs, event, agent_id).await?,
    };
    doc.version = version_of(event);
    let key = doc.id.to_string();
    let meta = DocMeta {
        team: None,
        status: Some(if doc.revoked { "revoked" } else { "enrolled" }.to_owned()),
        sort_key: key.clone(),
    };
    docs.put(AGENT_KIND, &key, meta, &doc)
}

/// The fleet's document of `agent_id`; inconsistent when it never enrolled.
async fn in_fleet(
    docs: &mut Docs<'_>,
    event: &RecordedEvent,
    agent_id: AgentId,
) -> Result<AgentDoc, ProjectionError> {
    docs.get::<AgentDoc>(AGENT_KIND, &agent_id.to_string())
        .await?
        .ok_or_else(|| inconsistent(event, format!("agent {agent_id} is not in the fleet")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::AggregateType;
    use crate::testkit::{ALICE, BOB, Harness, Log, at};
    use edict_domain::Reason;
    use edict_domain::agent::{MachineId, MachineName};
    use uuid::Uuid;

    const AGENT: AgentId = AgentId(Uuid::from_u128(0xa9));

    #[tokio::test]
    async fn an_agent_is_enrolled_then_revoked() {
        let mut log = Log::default();
        let events = [
            log.record(
                AggregateType::Agent,
                &AgentEvent::AgentEnrolled {
                    agent_id: AGENT,
                    user: ALICE,
                    machine_id: MachineId::parse("m-1").unwrap(),
                    machine_name: MachineName::parse("laptop").unwrap(),
                    at: at(0),
                },
            ),
            log.record(
                AggregateType::Agent,
                &AgentEvent::AgentRevoked {
                    agent_id: AGENT,
                    by: BOB,
                    reason: Some(Reason::parse("stolen").unwrap()),
                    at: at(1),
                },
            ),
        ];
        let mut h = Harness::new();
        h.batch(&AgentFleet, &events[..1]).await;
        assert_eq!(
            h.meta(AGENT_KIND, AGENT).unwrap().status.as_deref(),
            Some("enrolled")
        );
        h.batch(&AgentFleet, &events[1..]).await;
        let doc: AgentDoc = h.doc(AGENT_KIND, AGENT).unwrap();
        assert!(doc.revoked);
        assert_eq!(doc.revoked_by, Some(BOB));
        assert_eq!(doc.revoke_reason.as_deref(), Some("stolen"));
        assert_eq!(doc.machine_name, "laptop");
        assert_eq!(doc.version, 2);
        assert_eq!(
            h.meta(AGENT_KIND, AGENT).unwrap(),
            DocMeta {
                team: None,
                status: Some("revoked".into()),
                sort_key: AGENT.to_string()
            }
        );
    }

    #[tokio::test]
    async fn events_of_other_aggregates_are_ignored() {
        let mut log = Log::default();
        let event = log.team(crate::testkit::team_created(
            crate::testkit::TEAM_A,
            "Platform",
        ));
        assert!(
            crate::replay(&AgentFleet, &[event])
                .await
                .unwrap()
                .is_empty()
        );
    }
}
