//! Removals are signed for their agent (ADR 0024): the real `edict serve` (PostgreSQL, NATS, every
//! role) and a real `edict-agent run` connected through a WebSocket proxy on loopback that records
//! the `removed` messages the gateway sends and can inject messages of its own. A genuine removal
//! still drops the team's section; a forged one (unsigned, or signed by another key) for a team the
//! user is still in is refused and reported, and the file keeps the team's rules; a genuine removal
//! replayed after the user rejoined the team is refused too.

use crate::harness::{Machine, TestApp, eventually, logged_in, relay_ends};
use crate::proxy::{Acceptor, forward};
use crate::signing::{SEED, SignedOrg, approved_rule, attach, read};
use edict_api::ruleset::{RemovalStatement, key_id_of};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket proxy in front of the gateway at `upstream`: forwards every message both ways, keeps
/// a copy of each `removed` the gateway sends, and sends what is injected to the agent.
struct RemovalProxy {
    acceptor: Acceptor,
    removals: Arc<Mutex<Vec<String>>>,
    inject: broadcast::Sender<String>,
}

impl RemovalProxy {
    async fn start(upstream: String) -> RemovalProxy {
        let removals = Arc::new(Mutex::new(Vec::new()));
        let (inject, _) = broadcast::channel(16);
        let (kept, injected) = (removals.clone(), inject.clone());
        let acceptor = Acceptor::start(move |stream| {
            Self::relay(stream, upstream.clone(), kept.clone(), injected.subscribe())
        })
        .await;
        RemovalProxy {
            acceptor,
            removals,
            inject,
        }
    }

    fn url(&self) -> String {
        self.acceptor.ws_url()
    }

    /// The `removed` messages the gateway sent so far.
    fn removals(&self) -> Vec<String> {
        self.removals.lock().unwrap().clone()
    }

    /// Sends `message` to the agent on every open connection.
    fn inject(&self, message: &Value) {
        self.inject.send(message.to_string()).unwrap();
    }

    async fn relay(
        stream: TcpStream,
        upstream: String,
        removals: Arc<Mutex<Vec<String>>>,
        mut inject: broadcast::Receiver<String>,
    ) {
        let Some((agent, gateway)) = relay_ends(stream, upstream).await else {
            return;
        };
        let (mut agent_tx, agent_rx) = agent.split();
        let (gateway_tx, mut gateway_rx) = gateway.split();
        let up = forward(agent_rx, gateway_tx);
        let down = async {
            loop {
                let message = tokio::select! {
                    message = gateway_rx.next() => match message {
                        Some(Ok(message)) => message,
                        _ => break,
                    },
                    injected = inject.recv() => match injected {
                        Ok(text) => Message::text(text),
                        Err(_) => continue,
                    },
                };
                if let Message::Text(text) = &message
                    && serde_json::from_str::<Value>(text.as_str())
                        .is_ok_and(|value| value["type"] == json!("removed"))
                {
                    removals.lock().unwrap().push(text.as_str().to_owned());
                }
                if agent_tx.send(message).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = up => {}
            () = down => {}
        }
    }
}

/// The set-up of every test: an approved rule attached to the team, a machine of `dev` logged in
/// with the organization's key pinned, running through a [`RemovalProxy`], its file holding the
/// rule. Answers the proxy, the machine and its agent id.
async fn connected(org: &SignedOrg) -> (RemovalProxy, Machine, String) {
    let SignedOrg {
        app,
        admin,
        second,
        dev_id,
        team,
        ..
    } = org;
    let rule = approved_rule(app, admin, second, "rule one").await;
    attach(app, admin, team, &rule).await;
    let proxy = RemovalProxy::start(app.gateway_ws()).await;
    let token = app
        .enrollment_token(admin, json!({"user_id": dev_id, "uses": 1}))
        .await;
    let fingerprint = key_id_of(&ed25519_dalek::SigningKey::from_bytes(&SEED).verifying_key());
    let mut machine = Machine::new();
    let mut login = machine.command();
    login
        .args(["login", "--server", &app.base, "--output", "json"])
        .args(["--enrollment-token", &token, "--org-key", &fingerprint])
        .args(["--gateway", &proxy.url()]);
    let agent_id = logged_in(login).await;
    machine.run();
    assert!(
        machine.team_file_with("Always rule one.").await.is_some(),
        "the rule reaches the machine through the proxy; status: {}",
        machine.status().await
    );
    (proxy, machine, agent_id)
}

async fn remove_member(app: &TestApp, admin: &str, team: &str, user: &str) {
    let (status, body) = app
        .delete(&format!("/api/v1/teams/{team}/members/{user}"), admin)
        .await;
    assert!(status.is_success(), "remove member: {status} {body}");
}

/// Whether the agent's status lists a rule set of `team`.
async fn holds(machine: &Machine, team: &str) -> bool {
    machine.status().await["rulesets"]
        .as_array()
        .is_some_and(|held| held.iter().any(|r| r["team"] == json!(team)))
}

/// Waits until the section of the team is gone from the file and the agent holds no rule set of it.
async fn wait_for_removal(machine: &Machine, team: &str) {
    let file = machine.team_file();
    let gone = eventually(Duration::from_secs(30), || async {
        (!read(&file).contains("Always rule one.") && !holds(machine, team).await).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the team's section is removed: {}; status: {}",
        read(&file),
        machine.status().await
    );
}

/// Waits until the fleet API shows `count` integrity failures of the agent; answers the agent.
async fn fleet_shows(app: &TestApp, admin: &str, agent_id: &str, count: u64) -> Value {
    let agent = eventually(Duration::from_secs(20), || async {
        let (status, agent) = app.get(&format!("/api/v1/agents/{agent_id}"), admin).await;
        (status == StatusCode::OK && agent["integrity_failures"] == json!(count)).then_some(agent)
    })
    .await;
    agent.unwrap_or_else(|| panic!("GET /api/v1/agents/{agent_id} shows {count} failures"))
}

#[tokio::test]
async fn a_genuine_removal_drops_the_teams_section() {
    let org = SignedOrg::start(&[("EDICT_GATEWAY_POLL_MS", "300")]).await;
    let (proxy, mut machine, agent_id) = connected(&org).await;

    remove_member(&org.app, &org.admin, &org.team, &org.dev_id).await;
    wait_for_removal(&machine, &org.team).await;

    // What removed it is the organization's signed statement, for this agent.
    let removals = proxy.removals();
    assert_eq!(removals.len(), 1, "{removals:?}");
    let removal: Value = serde_json::from_str(&removals[0]).unwrap();
    assert_eq!(removal["team"], json!(org.team));
    assert_eq!(removal["agent"], json!(agent_id));
    assert!(
        removal["position"].as_u64().is_some_and(|p| p > 0),
        "{removal}"
    );
    assert!(removal["signature"]["sig"].is_string(), "{removal}");
    assert!(machine.reported_failures().await.is_empty());
    machine.stop().await;
}

#[tokio::test]
async fn a_forged_removal_is_refused_and_the_team_stays_enforced() {
    let org = SignedOrg::start(&[("EDICT_GATEWAY_POLL_MS", "300")]).await;
    let (proxy, mut machine, agent_id) = connected(&org).await;

    // The user is still in the team. The proxy says otherwise: unsigned, then signed by a key that
    // is not the organization's.
    proxy.inject(&json!({"type": "removed", "team": org.team}));
    let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let statement = RemovalStatement {
        agent: &agent_id,
        team: &org.team,
        position: 1_000_000,
    };
    let signature = statement.sign(&other, chrono::Utc::now());
    proxy.inject(&json!({
        "type": "removed", "team": org.team, "agent": agent_id, "position": 1_000_000,
        "signature": signature,
    }));
    let reported = machine.wait_for_failures(2).await;
    assert_eq!(reported, vec!["unsigned", "unknown_key"]);
    let status = machine.status().await;
    assert_eq!(
        status["integrity_failures"][0]["team"],
        json!("removal"),
        "{status}"
    );
    assert!(holds(&machine, &org.team).await, "{status}");
    assert!(
        machine.team_text().contains("Always rule one."),
        "the team's rules stay in the file"
    );

    // The fleet API shows the refusals.
    let agent = fleet_shows(&org.app, &org.admin, &agent_id, 2).await;
    assert_eq!(
        agent["last_integrity_failure"]["reason"],
        json!("unknown_key"),
        "{agent}"
    );
    assert_eq!(agent["last_integrity_failure"]["team"], json!("removal"));
    machine.stop().await;
}

#[tokio::test]
async fn an_old_removal_replayed_after_the_user_rejoined_is_refused() {
    let org = SignedOrg::start(&[("EDICT_GATEWAY_POLL_MS", "300")]).await;
    let (proxy, mut machine, agent_id) = connected(&org).await;

    // A genuine removal, recorded by the proxy on its way.
    remove_member(&org.app, &org.admin, &org.team, &org.dev_id).await;
    wait_for_removal(&machine, &org.team).await;
    let removals = proxy.removals();
    assert_eq!(removals.len(), 1, "{removals:?}");
    let old: Value = serde_json::from_str(&removals[0]).unwrap();

    // The user rejoins: the team's rules come back.
    org.app
        .ok(
            &format!("/api/v1/teams/{}/members", org.team),
            &org.admin,
            json!({"user_id": org.dev_id, "role": "member"}),
        )
        .await;
    assert!(
        machine.team_file_with("Always rule one.").await.is_some(),
        "the rules come back after the rejoin; status: {}",
        machine.status().await
    );

    // The old removal, replayed as it was signed: refused.
    proxy.inject(&old);
    let reported = machine.wait_for_failures(1).await;
    assert_eq!(reported, vec!["replayed"]);
    assert!(holds(&machine, &org.team).await);
    assert!(machine.team_text().contains("Always rule one."));
    let agent = fleet_shows(&org.app, &org.admin, &agent_id, 1).await;
    assert_eq!(agent["last_integrity_failure"]["reason"], json!("replayed"));
    machine.stop().await;
}
