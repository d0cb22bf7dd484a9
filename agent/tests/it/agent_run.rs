//! Runs the real `edict-agent run` process against a tiny fake gateway written here (a tokio-tungstenite
//! server on port 0 speaking protocol 1), with a temp home, organization file and data dir.

use crate::machine::{Agent, Env, eventually, read};
use edict_api::protocol::{
    AgentMessage, GatewayMessage, Holding, PROTOCOL_VERSION, Report, ReportKind,
};
use futures::{SinkExt, StreamExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

const TEAM: &str = "0190a0b0-0000-7000-8000-000000000001";
const TOKEN: &str = "agent-token-for-tests";
const RULE_TEXT: &str = "Never commit secrets.";
const PROJECT_TEXT: &str = "Use `?` for errors.";

/// What the fake gateway saw.
#[derive(Debug, Default)]
struct Seen {
    upgrades: Vec<(Option<String>, Option<String>)>,
    hellos: Vec<Vec<Holding>>,
    applied: Vec<Holding>,
    reports: Vec<Report>,
}

fn ruleset_doc() -> Box<edict_api::ruleset::RuleSetDoc> {
    let text = format!("## Security\n\n### No secrets\n\n{RULE_TEXT}\n");
    let doc = json!({
        "team_id": TEAM, "team_name": "Platform", "archived": false, "revision": 1, "hash": "hash-1",
        "updated_at": "2026-11-21T00:00:00Z", "position": 7,
        "layers": {
            "organization": {"rules": [], "text": ""},
            "team": {"rules": [{
                "rule_id": "0190a0b0-0000-7000-8000-0000000000aa", "revision": 1, "name": "No secrets",
                "category": "Security", "priority": 0, "mode": "block", "temporary_timeout_secs": null,
                "triggers": [], "content": RULE_TEXT
            }], "text": text},
            "project": {"rules": [{
                "rule_id": "0190a0b0-0000-7000-8000-0000000000bb", "revision": 1, "name": "Rust style",
                "category": null, "priority": 0, "mode": "warning", "temporary_timeout_secs": null,
                "triggers": ["**/*.rs"], "content": PROJECT_TEXT
            }], "text": "(rendered by the agent)"}
        }
    });
    match serde_json::from_value(doc) {
        Ok(doc) => Box::new(signed(doc)),
        Err(e) => panic!("the test document is a rule set: {e}"),
    }
}

/// The organization key these fake gateways sign with.
fn org_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9; 32])
}

/// `--org-key` for [`org_key`]: its public key in hex.
fn org_public_key() -> String {
    hex_encode(&org_key().verifying_key().to_bytes())
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `doc` with its hash computed and signed by [`org_key`], as the server publishes it.
fn signed(mut doc: edict_api::ruleset::RuleSetDoc) -> edict_api::ruleset::RuleSetDoc {
    doc.hash = doc.layers.hash();
    doc.signature = None;
    doc.signature = Some(edict_api::ruleset::sign(&doc, &org_key(), doc.updated_at));
    doc
}

/// The hash of [`ruleset_doc`].
fn hash_one() -> String {
    ruleset_doc().hash
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<()> {
    let seen_upgrade = seen.clone();
    // The callback's signature (and its large error type) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Ok(mut s) = seen_upgrade.lock() {
            s.upgrades
                .push((header("authorization"), header("edict-protocol")));
        }
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback).await?;
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let replies = match serde_json::from_str::<AgentMessage>(text.as_str())? {
            AgentMessage::Hello { holdings, .. } => {
                let current = holdings
                    .iter()
                    .any(|h| h.team == TEAM && h.revision == 1 && h.hash == hash_one());
                if let Ok(mut s) = seen.lock() {
                    s.hellos.push(holdings);
                }
                let welcome = GatewayMessage::Welcome {
                    protocol: PROTOCOL_VERSION,
                    agent_id: "agent-1".into(),
                    teams: vec![TEAM.into()],
                };
                let state = if current {
                    GatewayMessage::Current(Holding {
                        team: TEAM.into(),
                        revision: 1,
                        hash: hash_one(),
                    })
                } else {
                    GatewayMessage::RuleSet {
                        team: TEAM.into(),
                        revision: 1,
                        hash: hash_one(),
                        ruleset: ruleset_doc(),
                    }
                };
                vec![welcome, state]
            }
            AgentMessage::Applied(holding) => {
                if let Ok(mut s) = seen.lock() {
                    s.applied.push(holding);
                }
                vec![]
            }
            AgentMessage::Refused { .. } | AgentMessage::IntegrityFailure { .. } => vec![],
            AgentMessage::Report(report) => {
                let ack = GatewayMessage::ReportAck {
                    report_id: report.report_id.clone(),
                    change_request: None,
                };
                if let Ok(mut s) = seen.lock() {
                    s.reports.push(report);
                }
                vec![ack]
            }
        };
        for reply in replies {
            ws.send(Message::text(serde_json::to_string(&reply)?))
                .await?;
        }
    }
    Ok(())
}

/// A fake gateway; dropping it (or [`FakeGateway::kill`]) closes the listener and every connection.
struct FakeGateway {
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Seen>>,
}

impl FakeGateway {
    async fn start(port: u16) -> anyhow::Result<(Self, u16)> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve_connection(stream, shared.clone()));
            }
        });
        Ok((FakeGateway { task, seen }, port))
    }

    fn kill(self) {
        self.task.abort();
    }

    /// What it has seen so far.
    fn seen(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Seen>> {
        self.seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))
    }

    fn reports(&self) -> Vec<Report> {
        self.seen
            .lock()
            .map(|s| s.reports.clone())
            .unwrap_or_default()
    }
}

/// `edict-agent login` against the gateway on `port`, with the test's token and organization key.
fn login(env: &Env, port: u16) -> anyhow::Result<()> {
    let login = env
        .command()
        .args(["login", "--server", &format!("http://127.0.0.1:{port}")])
        .args(["--agent-token", TOKEN])
        .args(["--org-key", &org_public_key()])
        .args(["--gateway", &format!("ws://127.0.0.1:{port}/ws")])
        .output()?;
    assert!(login.status.success(), "login failed: {login:?}");
    Ok(())
}

/// A machine logged in to a fresh [`FakeGateway`], and the gateway's port.
async fn logged_in() -> anyhow::Result<(Env, FakeGateway, u16)> {
    let env = Env::new()?;
    let (gateway, port) = FakeGateway::start(0).await?;
    login(&env, port)?;
    Ok((env, gateway, port))
}

/// `edict-agent run`, its stderr shown with the test's.
fn run(env: &Env) -> anyhow::Result<Agent> {
    Ok(Agent(
        env.command()
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    ))
}

/// Edits the rule's text in place (truncate and write, as `echo >` does).
fn edit_section(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    anyhow::ensure!(text.contains(RULE_TEXT), "the section is not there: {text}");
    std::fs::write(path, text.replace(RULE_TEXT, "Secrets are fine in tests."))?;
    Ok(())
}

/// Edits the rule's text as many editors save: a new file renamed over the old one.
fn edit_section_by_rename(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    anyhow::ensure!(text.contains(RULE_TEXT), "the section is not there: {text}");
    let tmp = path.with_extension("md~");
    std::fs::write(&tmp, text.replace(RULE_TEXT, "Secrets are fine offline."))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_enforces_a_block_rule_online_and_offline_and_delivers_reports_once()
-> anyhow::Result<()> {
    let (env, gateway, port) = logged_in().await?;

    let team_file = env.team_file();
    std::fs::create_dir_all(team_file.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&team_file, "# My own notes\n\nKeep this.\n")?;

    let mut agent = run(&env)?;

    // The rule set arrives and the team file carries the managed section, user text first.
    assert!(
        comes_to_contain(&team_file, RULE_TEXT, 2).await,
        "no managed section: {:?}",
        read(&team_file)
    );
    let enforced = read(&team_file);
    assert!(
        enforced.starts_with("# My own notes\n\nKeep this.\n\n<!-- edict:begin layer=team -->\n")
    );
    assert!(enforced.ends_with("<!-- edict:end -->\n"));
    assert!(
        eventually(Duration::from_secs(2), || {
            gateway
                .seen
                .lock()
                .map(|s| s.applied.len() == 1)
                .unwrap_or(false)
        })
        .await,
        "no applied"
    );
    {
        let seen = gateway.seen()?;
        assert_eq!(
            seen.upgrades[0],
            (Some(format!("Bearer {TOKEN}")), Some("1".to_owned()))
        );
        assert_eq!(seen.hellos[0], Vec::<Holding>::new());
        assert_eq!(seen.applied[0].revision, 1);
    }

    // An edit of the section is reverted (user text kept) and reported.
    edit_section(&team_file)?;
    assert_restored(&team_file, &enforced, "").await;
    assert!(
        eventually(Duration::from_secs(2), || gateway.reports().len() == 1).await,
        "no report"
    );
    let first = gateway.reports().remove(0);
    assert_eq!(first.kind, ReportKind::BlockReverted);
    assert_eq!(first.team, TEAM);
    assert_eq!(first.layer, "team");
    assert!(first.diff.contains("+Secrets are fine in tests."));
    assert!(
        outbox_holds(&env, 0).await,
        "the acknowledged report stays in the outbox"
    );

    // Offline: the gateway is gone; the snapshot still enforces and the report waits in the outbox.
    gateway.kill();
    edit_section_by_rename(&team_file)?;
    assert_restored(&team_file, &enforced, " offline").await;
    assert!(
        outbox_holds(&env, 1).await,
        "the offline report is not in the outbox"
    );

    // The gateway is back: the report is delivered, once, and acknowledged.
    let (gateway, _) = FakeGateway::start(port).await?;
    assert!(
        eventually(Duration::from_secs(20), || !gateway.reports().is_empty()).await,
        "the queued report never arrived"
    );
    assert!(
        outbox_holds(&env, 0).await,
        "the delivered report stays in the outbox"
    );
    let reports = gateway.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].kind, ReportKind::BlockReverted);
    assert_ne!(reports[0].report_id, first.report_id);
    {
        let seen = gateway.seen()?;
        assert_eq!(
            seen.hellos[0],
            vec![Holding {
                team: TEAM.into(),
                revision: 1,
                hash: hash_one()
            }]
        );
        assert!(seen.applied.is_empty(), "a current agent applied again");
    }

    // A project watched from the CLI while the agent runs gets its section (its rule's trigger matches).
    let project = env.home.join("project");
    std::fs::create_dir_all(project.join("src"))?;
    std::fs::write(project.join("src/lib.rs"), "")?;
    let watch = env.command().arg("watch").arg(&project).output()?;
    assert!(watch.status.success(), "watch failed: {watch:?}");
    let project_file = project.join("CLAUDE.md");
    assert!(
        comes_to_contain(&project_file, PROJECT_TEXT, 5).await,
        "the project file has no section: {:?}",
        read(&project_file)
    );
    assert!(read(&project_file).contains("Applies to: `**/*.rs`"));

    stop(&mut agent).await?;

    // Offline start: no gateway, an edit made while the agent was down is restored from the snapshot.
    gateway.kill();
    edit_section(&team_file)?;
    let mut agent = run(&env)?;
    assert_restored(&team_file, &enforced, " on an offline start").await;
    assert!(
        outbox_holds(&env, 1).await,
        "the report of the offline start is not in the outbox"
    );
    stop(&mut agent).await?;
    Ok(())
}

/// Whether `path` comes to contain `text` within `secs` seconds.
async fn comes_to_contain(path: &Path, text: &str, secs: u64) -> bool {
    eventually(Duration::from_secs(secs), || read(path).contains(text)).await
}

/// Asserts that `path` comes to read `text` within 2 s; `when` says when in the message.
async fn assert_restored(path: &Path, text: &str, when: &str) {
    let restored = eventually(Duration::from_secs(2), || read(path) == text).await;
    assert!(restored, "not restored{when}: {:?}", read(path));
}

/// Whether the outbox comes to hold `count` reports within 2 s.
async fn outbox_holds(env: &Env, count: u64) -> bool {
    eventually(Duration::from_secs(2), || {
        env.pending_reports().ok() == Some(count)
    })
    .await
}

/// Sends SIGTERM and waits (bounded) for a clean exit.
async fn stop(agent: &mut Agent) -> anyhow::Result<()> {
    let pid = Pid::from_raw(i32::try_from(agent.0.id())?);
    kill(pid, Signal::SIGTERM)?;
    let mut exited = None;
    let done = eventually(Duration::from_secs(5), || {
        exited = agent.0.try_wait().ok().flatten();
        exited.is_some()
    })
    .await;
    anyhow::ensure!(done, "the agent did not stop on SIGTERM");
    anyhow::ensure!(
        exited.map(|s| s.success()) == Some(true),
        "exit status {exited:?}"
    );
    Ok(())
}

/// A team-layer rule set of `revision` whose one block rule says `content`.
fn revision_doc(revision: u64, hash: &str, content: &str) -> Box<edict_api::ruleset::RuleSetDoc> {
    use edict_api::ruleset::{Layer, render_layer};
    let mut doc = ruleset_doc();
    doc.revision = revision;
    doc.hash = hash.into();
    doc.layers.team.rules[0].content = content.into();
    doc.layers.team.text = render_layer(Layer::Team, &doc.layers.team.rules);
    doc.layers.project.rules.clear();
    Box::new(signed(*doc))
}

/// The hash of the team rule set whose one rule says `content` ([`revision_doc`]).
fn hash_of(content: &str) -> String {
    revision_doc(1, "", content).hash
}

/// A gateway that replays a stale carrier: on `hello` it sends revision 2 of the team; once the agent
/// applied it, revision 1 (stale) and revision 3; once it applied 3, revision 2 (stale) and revision 3
/// re-rendered (same revision, another hash, as after a rebuild with a new renderer). Every agent
/// message is kept.
async fn downgrading_gateway(
    listener: TcpListener,
    seen: Arc<Mutex<Vec<AgentMessage>>>,
) -> anyhow::Result<()> {
    // The agent also calls the HTTP API on this port (it renews a token of unknown expiry at once):
    // only a WebSocket upgrade is served, anything else is dropped and the next connection taken.
    let mut ws = loop {
        let (stream, _) = listener.accept().await?;
        if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
            break ws;
        }
    };
    let rule_set = |revision: u64, _label: &str, content: &str| {
        let doc = revision_doc(revision, "", content);
        GatewayMessage::RuleSet {
            team: TEAM.into(),
            revision,
            hash: doc.hash.clone(),
            ruleset: doc,
        }
    };
    let mut applied_three = 0;
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let message = serde_json::from_str::<AgentMessage>(text.as_str())?;
        if let Ok(mut s) = seen.lock() {
            s.push(message.clone());
        }
        let replies = match message {
            AgentMessage::Hello { .. } => vec![
                GatewayMessage::Welcome {
                    protocol: PROTOCOL_VERSION,
                    agent_id: "agent-1".into(),
                    teams: vec![TEAM.into()],
                },
                rule_set(2, "hash-2", "Revision two."),
            ],
            AgentMessage::Applied(h) if h.revision == 2 => vec![
                rule_set(1, "hash-1", "Revision one."),
                rule_set(3, "hash-3", "Revision three."),
            ],
            AgentMessage::Applied(h) if h.revision == 3 && applied_three == 0 => {
                applied_three += 1;
                vec![
                    rule_set(2, "hash-2", "Revision two."),
                    rule_set(3, "hash-3-re-rendered", "Revision three, re-rendered."),
                ]
            }
            _ => vec![],
        };
        for reply in replies {
            ws.send(Message::text(serde_json::to_string(&reply)?))
                .await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_a_lower_revision_keeps_enforcing_the_held_one_and_reports_it()
-> anyhow::Result<()> {
    let env = Env::new()?;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let seen: Arc<Mutex<Vec<AgentMessage>>> = Arc::default();
    let gateway = tokio::spawn(downgrading_gateway(listener, seen.clone()));
    login(&env, port)?;
    let mut agent = run(&env)?;
    // The agent answers all five rule sets (a dead agent fails here).
    let answered = eventually(Duration::from_secs(10), || {
        seen.lock()
            .map(|s| {
                s.iter()
                    .filter(|m| !matches!(m, AgentMessage::Hello { .. }))
                    .count()
                    >= 5
            })
            .unwrap_or(false)
    })
    .await;
    let messages = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        answered,
        "the agent did not answer every rule set: {messages:?}"
    );
    let applied: Vec<(u64, String)> = messages
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Applied(h) => Some((h.revision, h.hash.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        applied,
        vec![
            (2, hash_of("Revision two.")),
            (3, hash_of("Revision three.")),
            (3, hash_of("Revision three, re-rendered."))
        ],
        "the agent applied rule sets older than the one it held: {messages:?}"
    );
    let status = env
        .command()
        .args(["status", "--output", "json"])
        .output()?;
    assert!(status.status.success(), "status failed: {status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(
        (
            status["rulesets"][0]["revision"].as_u64(),
            status["rulesets"][0]["hash"].as_str()
        ),
        (
            Some(3),
            Some(hash_of("Revision three, re-rendered.").as_str())
        ),
        "the agent stored a rule set older than the one it held: {status}"
    );
    let team_file = env.team_file();
    let text = read(&team_file);
    assert!(
        text.contains("Revision three, re-rendered.")
            && !text.contains("Revision one.")
            && !text.contains("Revision two."),
        "{text}"
    );
    let refused: Vec<AgentMessage> = messages
        .iter()
        .filter(|m| matches!(m, AgentMessage::Refused { .. }))
        .cloned()
        .collect();
    assert_eq!(
        refused,
        vec![
            AgentMessage::Refused {
                team: TEAM.into(),
                revision: 1,
                hash: hash_of("Revision one."),
                held_revision: 2,
                held_hash: hash_of("Revision two."),
            },
            AgentMessage::Refused {
                team: TEAM.into(),
                revision: 2,
                hash: hash_of("Revision two."),
                held_revision: 3,
                held_hash: hash_of("Revision three."),
            }
        ]
    );
    assert_eq!(
        status["refused_downgrades_total"].as_u64(),
        Some(2),
        "{status}"
    );
    let listed = &status["refused_downgrades"];
    assert_eq!(
        (
            listed[0]["team"].as_str(),
            listed[0]["offered_revision"].as_u64(),
            listed[0]["held_revision"].as_u64(),
            listed[1]["offered_revision"].as_u64(),
            listed[1]["held_revision"].as_u64(),
        ),
        (Some(TEAM), Some(1), Some(2), Some(2), Some(3)),
        "{status}"
    );
    assert!(listed[0]["at"].is_string(), "{status}");
    // Still enforced: an edit of the held revision's text is restored.
    std::fs::write(
        &team_file,
        text.replace("Revision three, re-rendered.", "Anything goes."),
    )?;
    assert!(
        eventually(Duration::from_secs(5), || read(&team_file) == text).await,
        "the held revision is no longer enforced: {}",
        read(&team_file)
    );
    stop(&mut agent).await?;
    gateway.abort();
    Ok(())
}

const PRIVATE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-bytes-for-tests\n";

/// Every regular file under `dir` (links not followed) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                out.push(path);
            }
        }
    }
    out
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_md_linked_to_a_private_key_is_left_alone_and_a_link_to_an_instruction_file_is_managed_through()
-> anyhow::Result<()> {
    use std::os::unix::fs::symlink;
    let (env, gateway, _) = logged_in().await?;

    let home = std::fs::canonicalize(&env.home)?;
    let key = home.join(".ssh/id_ed25519");
    std::fs::create_dir_all(home.join(".ssh"))?;
    std::fs::write(&key, PRIVATE_KEY)?;
    // The user keeps the team file in a dotfiles repository.
    let dotfiles = home.join("dotfiles/CLAUDE.md");
    std::fs::create_dir_all(home.join("dotfiles"))?;
    std::fs::create_dir_all(home.join(".claude"))?;
    std::fs::write(&dotfiles, "# From my dotfiles\n")?;
    let team_file = env.team_file();
    symlink(&dotfiles, &team_file)?;
    // A repository ships `CLAUDE.md -> ~/.ssh/id_ed25519`; another links to its docs.
    let evil = home.join("evil");
    let good = home.join("good");
    for project in [&evil, &good] {
        std::fs::create_dir_all(project.join("src"))?;
        std::fs::write(project.join("src/lib.rs"), "")?;
    }
    symlink(&key, evil.join("CLAUDE.md"))?;
    std::fs::create_dir_all(good.join("docs"))?;
    std::fs::write(good.join("docs/CLAUDE.md"), "# Project docs\n")?;
    symlink("docs/CLAUDE.md", good.join("CLAUDE.md"))?;
    for project in [&evil, &good] {
        let watch = env.command().arg("watch").arg(project).output()?;
        assert!(watch.status.success(), "watch failed: {watch:?}");
    }

    let mut agent = Agent(
        env.command()
            .args(["run", "--audit-interval-secs", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    // Both sections are in place (read through the links): the agent went through every file.
    assert!(
        eventually(Duration::from_secs(5), || read(&team_file)
            .contains(RULE_TEXT)
            && read(&good.join("CLAUDE.md")).contains(PROJECT_TEXT))
        .await,
        "no sections: {:?} {:?}",
        read(&team_file),
        read(&good.join("CLAUDE.md"))
    );
    // The key's bytes are nowhere but in the key (not in a project file, a temp file, the snapshot).
    assert_eq!(
        files_containing(env.root(), b"secret-key-bytes-for-tests"),
        vec![key.clone()]
    );
    assert_eq!(std::fs::read_link(evil.join("CLAUDE.md"))?, key);
    assert_eq!(std::fs::read_to_string(&key)?, PRIVATE_KEY);
    assert_eq!(
        std::fs::read_dir(&evil)?.count(),
        2,
        "a temp file next to the link"
    );

    // The links stay links; their targets carry the sections, the user's text first.
    assert_eq!(std::fs::read_link(&team_file)?, dotfiles);
    assert!(
        std::fs::symlink_metadata(good.join("CLAUDE.md"))?
            .file_type()
            .is_symlink()
    );
    assert!(
        read(&dotfiles).starts_with("# From my dotfiles\n") && read(&dotfiles).contains(RULE_TEXT)
    );
    assert!(read(&good.join("docs/CLAUDE.md")).starts_with("# Project docs\n"));

    // The refusal is in the status.
    let status = env
        .command()
        .args(["status", "--output", "json"])
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    let refused = status["refused_files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(refused.len(), 1, "{status}");
    assert_eq!(
        refused[0]["file"].as_str(),
        evil.join("CLAUDE.md").to_str(),
        "{status}"
    );
    assert!(
        refused[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not an instruction file")),
        "{status}"
    );

    // The section behind the link is enforced: an edit through the link is reverted.
    let enforced = read(&dotfiles);
    std::fs::write(&team_file, enforced.replace(RULE_TEXT, "Secrets are fine."))?;
    assert!(
        eventually(Duration::from_secs(5), || read(&dotfiles) == enforced).await,
        "not restored through the link: {:?}",
        read(&dotfiles)
    );
    assert_eq!(std::fs::read_link(&team_file)?, dotfiles);
    stop(&mut agent).await?;
    gateway.kill();
    Ok(())
}
