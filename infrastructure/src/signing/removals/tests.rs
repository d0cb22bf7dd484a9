//! The removals signed for the agents of a user who leaves a team, and withdrawn when they rejoin.

use super::*;
use edict_api::protocol::GatewayMessage;
use edict_api::ruleset::OrgKey;
use edict_api::ruleset::RemovalStatement;
use edict_application::event_log::RecordedEvent;
use edict_application::signing::OrgKeys;
use serde_json::json;

const USER: &str = "00000000-0000-0000-0000-00000000000b";
const TEAM: &str = "00000000-0000-0000-0000-000000000002";

fn membership(event_type: &str, position: i64) -> RecordedEvent {
    RecordedEvent {
        global_position: position,
        transaction_id: 0,
        aggregate_type: "Team".into(),
        aggregate_id: TEAM.into(),
        sequence: position,
        event_type: event_type.into(),
        event_version: "1.0".into(),
        payload: json!({ event_type: {"team_id": TEAM, "user": USER, "by": USER,
                                      "role": "member", "at": "2026-12-05T06:00:00Z"} }),
        metadata: json!({}),
        recorded_at: Utc::now(),
    }
}

async fn ring() -> (KeyRing, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/edict.db", dir.path().display());
    let db = Database::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    for (agent, user) in [("agent-1", USER), ("agent-2", USER), ("agent-3", TEAM)] {
        let payload = json!({"AgentEnrolled": {"agent_id": agent, "user": user}});
        on_pool!(&db, |pool| sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) VALUES ('Agent', $1, 1, 'AgentEnrolled', '1.0', $2, '{}')"
        )
        .bind(agent)
        .bind(payload.to_string())
        .execute(pool)
        .await
        .map(drop))
        .unwrap();
    }
    let (ring, _) = KeyRing::holding(db, None, None).await.unwrap();
    (ring, dir)
}

async fn removals(ring: &KeyRing, agent: &str) -> Vec<GatewayMessage> {
    ring.agent_removals(agent)
        .await
        .unwrap()
        .into_iter()
        .map(|doc| serde_json::from_value(doc).unwrap())
        .collect()
}

#[tokio::test]
async fn a_leave_is_signed_for_each_agent_of_the_user_and_a_rejoin_withdraws_it() {
    let (ring, _dir) = ring().await;
    let keys = [OrgKey::of(&ring.active().unwrap().verifying_key())];
    assert_eq!(
        ring.sign_removals_of(&[membership("MemberRemoved", 10)])
            .await
            .unwrap(),
        2
    );
    for agent in ["agent-1", "agent-2"] {
        let sent = removals(&ring, agent).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        let GatewayMessage::Removed { signature, .. } = &sent[0] else {
            panic!("{sent:?}");
        };
        let statement = sent[0].removal_statement().unwrap();
        assert_eq!(
            statement,
            RemovalStatement {
                agent,
                team: TEAM,
                position: 10
            }
        );
        assert_eq!(
            statement.verify(agent, 0, signature.as_ref(), &keys),
            Ok(())
        );
    }
    // Another user's agent gets nothing.
    assert!(removals(&ring, "agent-3").await.is_empty());
    // An older leave replayed through the runner (a rebuild's batches) never replaces a later one.
    ring.sign_removals_of(&[membership("MemberRemoved", 4)])
        .await
        .unwrap();
    assert_eq!(
        removals(&ring, "agent-1").await[0]
            .removal_statement()
            .unwrap()
            .position,
        10
    );
    // The user rejoins: no removal is left to send.
    ring.sign_removals_of(&[membership("MemberAdded", 12)])
        .await
        .unwrap();
    assert!(removals(&ring, "agent-1").await.is_empty());
    assert!(removals(&ring, "agent-2").await.is_empty());
}
