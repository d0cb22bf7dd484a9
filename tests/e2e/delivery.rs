//! Delivery survives a failed publish: the real `edict serve` (PostgreSQL, NATS, every role) and a real
//! `edict-agent run`, with a nats-server of the test's own whose configuration denies the put into the
//! rule set bucket while a change is projected, then allows it again (a configuration reload: no
//! process restarts, NATS included). The agent's file must carry the change within 10 s of the put
//! being allowed again.

use crate::harness::{
    Layout, Machine, Store, TestApp, approved_rule, attach, eventually, team_with_member,
};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

async fn wait_for_file(path: &Path, timeout: Duration, needle: &str) -> Option<String> {
    eventually(timeout, || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.contains(needle).then_some(text)
    })
    .await
}

/// A nats-server of this test's own whose configuration denies the publish to one subject, or not,
/// changed by a configuration reload. Connections without credentials are its one user
/// (`no_auth_user`), so Edict needs none.
struct GuardedNats {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    reloads: usize,
    guarded: String,
}

impl GuardedNats {
    async fn start(guarded: String) -> GuardedNats {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::harness::free_port();
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, Self::config(dir.path(), port, &guarded, false)).unwrap();
        let args = [std::ffi::OsStr::new("-c"), config.as_os_str()];
        let child = crate::harness::nats_server(args, port).await;
        GuardedNats {
            dir,
            port,
            child,
            reloads: 0,
            guarded,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    fn config(dir: &Path, port: u16, guarded: &str, deny: bool) -> String {
        let publish = if deny {
            format!(r#"{{ allow: [">"], deny: ["{guarded}"] }}"#)
        } else {
            r#"{ allow: [">"] }"#.to_owned()
        };
        format!(
            r#"
listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{store}" }}
log_file: "{log}"
authorization {{
  users: [ {{ user: "edict", password: "edict", permissions: {{ publish: {publish}, subscribe: ">" }} }} ]
}}
no_auth_user: "edict"
"#,
            store = dir.join("js").display(),
            log = dir.join("nats.log").display(),
        )
    }

    /// Denies (or allows again) the publish to the guarded subject; returns once the server logged
    /// the reload.
    async fn deny(&mut self, deny: bool) {
        std::fs::write(
            self.dir.path().join("nats.conf"),
            Self::config(self.dir.path(), self.port, &self.guarded, deny),
        )
        .unwrap();
        let pid = self.child.id().expect("nats-server runs");
        let status = Command::new("/usr/sbin/nats-server")
            .arg("--signal")
            .arg(format!("reload={pid}"))
            .status()
            .await
            .unwrap();
        assert!(status.success(), "signal the reload");
        self.reloads += 1;
        let reloads = self.reloads;
        let log = self.dir.path().join("nats.log");
        let reloaded = eventually(Duration::from_secs(10), || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                (text.matches("Reloaded server configuration").count() >= reloads).then_some(())
            }
        })
        .await;
        assert!(reloaded.is_some(), "nats-server reloaded its configuration");
    }
}

#[tokio::test]
async fn a_rule_whose_kv_put_was_denied_reaches_the_agent_once_allowed_without_restarts() {
    let prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut nats = GuardedNats::start(format!("$KV.{prefix}rulesets.>")).await;
    let layout = Layout {
        nats_url: Some(nats.url()),
        nats_prefix: Some(prefix.clone()),
        roles: None,
    };
    let app = TestApp::spawn_with(Store::Postgres, layout).await;
    let (admin, second) = app.admins().await;
    let (dev_id, _) = app.user(&admin, "dev", &["member"]).await;
    let team = team_with_member(&app, &admin, "delivery", &dev_id).await;
    let first = approved_rule(&app, &admin, &second, "rule one").await;
    attach(&app, &admin, &team, &first).await;
    let (mut machine, _) =
        Machine::enrolled(&app, &admin, json!({"user_id": dev_id, "uses": 1})).await;
    machine.run();
    assert!(
        wait_for_file(
            &machine.team_file(),
            Duration::from_secs(20),
            "Always rule one."
        )
        .await
        .is_some(),
        "the first rule reaches the machine"
    );

    // The bucket refuses the put of the team's next revision.
    nats.deny(true).await;
    let second_rule = approved_rule(&app, &admin, &second, "rule two").await;
    attach(&app, &admin, &team, &second_rule).await;
    // The projector tried to put it and was refused (the server logs the violation).
    let refused = eventually(Duration::from_secs(30), || async {
        let log = nats.log();
        log.lines()
            .any(|line| line.contains("Publish Violation") && line.contains(&team))
            .then_some(())
    })
    .await;
    assert!(refused.is_some(), "the put of the new revision was refused");

    // Allowed again: nothing restarted, nothing else changed.
    nats.deny(false).await;
    let allowed = Instant::now();
    let delivered = wait_for_file(
        &machine.team_file(),
        Duration::from_secs(10),
        "Always rule two.",
    )
    .await;
    assert!(
        delivered.is_some(),
        "the rule whose put failed reached the agent's file within 10 s of the put being allowed \
         again; the file holds: {}",
        std::fs::read_to_string(machine.team_file()).unwrap_or_default()
    );
    eprintln!(
        "rule two on the machine {:?} after the put was allowed again",
        allowed.elapsed()
    );
}
