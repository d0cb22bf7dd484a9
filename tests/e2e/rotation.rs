//! Rotating the organization's signing key end to end (ADR 0021): the real `edict serve` (PostgreSQL,
//! NATS, every role, `EDICT_RULESET_SIGNING_KEY` set) and real `edict-agent run`s. One agent is online
//! through the whole rotation, one is offline throughout and comes back after the old key was retired,
//! one logs in after it. Each ends up enforcing the rule set signed by the new key; none reports an
//! integrity failure; and a rule set signed by the retired key is refused afterwards.

use crate::harness::{Machine, TestApp, assert_ran, eventually};
use crate::signing::{SEED, SignedOrg, approved_rule, attach, forged, kv_get, kv_put};
use edict_api::ruleset::{key_id_of, sign};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// Seconds between the rotation's steps (announce → activate → retire).
const OVERLAP_SECS: u64 = 3;

/// Waits until the agent of `machine` holds key set `sequence`; answers its status.
async fn wait_for_key_set(machine: &Machine, sequence: u64) -> Value {
    let status = eventually(Duration::from_secs(30), || async {
        let status = machine.status().await;
        (status["key_sequence"].as_u64() >= Some(sequence)).then_some(status)
    })
    .await;
    status.unwrap_or_else(|| {
        panic!("the agent did not take key set {sequence}");
    })
}

async fn signing_keys(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.get("/api/v1/signing-keys", token).await
}

#[tokio::test]
async fn a_key_rotation_reaches_online_offline_and_new_agents_and_retires_the_old_key() {
    let SignedOrg {
        app,
        admin,
        second,
        dev_id,
        dev,
        team,
    } = SignedOrg::start(&[("EDICT_GATEWAY_POLL_MS", "300")]).await;
    let old_key = ed25519_dalek::SigningKey::from_bytes(&SEED);
    let old_id = key_id_of(&old_key.verifying_key());
    let one = approved_rule(&app, &admin, &second, "rule one").await;
    attach(&app, &admin, &team, &one).await;

    let (status, keys) = signing_keys(&app, &admin).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    assert_eq!(keys["sequence"], json!(1), "{keys}");
    assert_eq!(
        keys["keys"],
        json!([{"key_id": old_id, "public_key": hex::encode(old_key.verifying_key().to_bytes()), "state": "active"}])
    );

    let token = app
        .ok(
            "/api/v1/enrollment-tokens",
            &admin,
            json!({"user_id": dev_id, "uses": 3}),
        )
        .await;
    let token = token["token"].as_str().unwrap().to_owned();
    let mut online = Machine::new();
    let (ok, answer) = online.login(&app.base, &token, &old_id).await;
    assert!(ok, "{answer}");
    let mut offline = Machine::new();
    let (ok, answer) = offline.login(&app.base, &token, &old_id).await;
    assert!(ok, "{answer}");
    online.run();
    offline.run();
    for machine in [&online, &offline] {
        assert!(
            machine.team_file_with("Always rule one.").await.is_some(),
            "the first rule set reaches both machines"
        );
    }
    // The second machine goes offline for the whole rotation.
    offline.stop().await;

    // Only an org_admin rotates; one rotation at a time.
    let rotate = json!({"overlap_secs": OVERLAP_SECS});
    let (status, _) = app
        .post("/api/v1/signing-keys/rotate", &dev, rotate.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Started with the CLI, as an operator would.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_edict"))
        .args(["keys", "rotate", "--server", &app.base, "--output", "json"])
        .args(["--overlap", &format!("{OVERLAP_SECS}s")])
        .env("EDICT_TOKEN", &admin)
        .output()
        .await
        .unwrap();
    assert_ran(&output, "edict keys rotate");
    let started: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(started["sequence"], json!(2), "{started}");
    let new_id = started["rotation"]["next_key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_id, old_id);
    let states: Vec<(&str, &str)> = started["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key_id"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [(old_id.as_str(), "active"), (new_id.as_str(), "next")]
    );
    let (status, again) = app
        .post("/api/v1/signing-keys/rotate", &admin, rotate)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{again}");
    assert_eq!(again["rule"], json!("rotation_in_progress"));

    // The online agent takes the announcement, then the activation, then the retirement.
    let status = wait_for_key_set(&online, 2).await;
    if status["key_sequence"] != json!(4) {
        // Announced (or active): both keys trusted meanwhile.
        let trusted = status["org_keys"].to_string();
        assert!(
            trusted.contains(&old_id) && trusted.contains(&new_id),
            "{status}"
        );
    }
    let retired = eventually(Duration::from_secs(30), || async {
        let (_, keys) = signing_keys(&app, &admin).await;
        (keys["sequence"] == json!(4)).then_some(keys)
    })
    .await
    .expect("the rotation ends with the old key retired (key set 4)");
    assert_eq!(
        retired["keys"],
        json!([{"key_id": new_id, "public_key": retired["keys"][0]["public_key"], "state": "active"}]),
        "{retired}"
    );
    assert!(retired.get("rotation").is_none(), "{retired}");
    let status = wait_for_key_set(&online, 4).await;
    assert_eq!(status["org_keys"], json!([new_id]), "{status}");
    assert_eq!(status["retired_keys"], json!([old_id]), "{status}");

    // Every rule set was signed again with the new key.
    let resigned = eventually(Duration::from_secs(20), || async {
        let doc = kv_get(&app, &team, 1).await;
        (doc.signature.as_ref()?.key_id == new_id).then_some(doc)
    })
    .await
    .expect("the bucket holds the rule set signed by the new key");

    // The online agent still holds the copy signed by the old key: restarted, it keeps enforcing it.
    online.stop().await;
    online.run();
    eventually(Duration::from_secs(20), || async {
        (online.status().await["connected"] == json!(true)).then_some(())
    })
    .await
    .expect("the restarted agent reconnects");
    assert!(online.team_text().contains("Always rule one."));

    // A machine that logs in now pins the new key only and gets the re-signed rule set.
    let mut newcomer = Machine::new();
    let (ok, answer) = newcomer.login(&app.base, &token, &new_id).await;
    assert!(ok, "{answer}");
    assert_eq!(answer["org_keys"][0]["key_id"], json!(new_id), "{answer}");
    newcomer.run();
    assert!(
        newcomer.team_file_with("Always rule one.").await.is_some(),
        "the re-signed rule set reaches a machine that only trusts the new key"
    );

    // A new revision, signed by the new key, reaches the online agent and the newcomer.
    let two = approved_rule(&app, &admin, &second, "rule two").await;
    attach(&app, &admin, &team, &two).await;
    for machine in [&online, &newcomer] {
        assert!(
            machine.team_file_with("Always rule two.").await.is_some(),
            "the revision signed by the new key reaches the machine"
        );
    }

    // The machine that was offline throughout comes back: it walks the key sets from the one it
    // holds (each signed by a key it trusts by then) and takes the new revision.
    offline.run();
    assert!(
        offline.team_file_with("Always rule two.").await.is_some(),
        "the agent offline throughout the rotation gets the revision signed by the new key"
    );
    let status = wait_for_key_set(&offline, 4).await;
    assert_eq!(status["org_keys"], json!([new_id]), "{status}");
    for machine in [&online, &offline, &newcomer] {
        let status = machine.status().await;
        assert_eq!(status["integrity_failures_total"], json!(0), "{status}");
    }

    // The retired key signs nothing any more: a rule set it signed, written into the bucket, is
    // refused and reported.
    let current = kv_get(&app, &team, resigned.revision + 1).await;
    let mut stale = forged(&current, current.revision + 1);
    stale.signature = Some(sign(&stale, &old_key, stale.updated_at));
    kv_put(&app, &team, &stale).await;
    let reported = online.wait_for_failures(1).await;
    assert_eq!(reported, vec!["unknown_key"]);
    assert!(online.team_text().contains("Always rule two."));
}
