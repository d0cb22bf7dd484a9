//! What several NATS test modules share: a database-and-prefix fixture, the whole log, free ports and
//! nats-server processes of a test's own.

// Test support states its expectations with unwrap/expect: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use edict_application::event_log::{Checkpoint, EventLog, RecordedEvent};
use edict_infrastructure::nats::{self, Nats, NatsSettings};
use edict_infrastructure::store::Database;
use edict_test_kit::nats::{delete_streams, fresh_prefix, test_nats_url};
use edict_test_kit::{
    create_isolated_postgres, drop_isolated_postgres, eventually, run_isolated, test_database_url,
};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A database and a connection under a prefix of their own.
#[derive(Clone)]
pub(crate) struct Fixture {
    pub(crate) db: Database,
    pub(crate) nats: Nats,
}

/// Runs `case` with a fresh database (named after `db_name`) and prefix on the shared server.
pub(crate) async fn with_fixture<F, Fut>(db_name: &str, case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let settings = NatsSettings::new(test_nats_url(), &fresh_prefix()).unwrap();
    with_fixture_on(db_name, settings, case).await;
}

/// Runs `case` with a fresh database and the connection `settings` make; drops the database and deletes
/// the prefix's streams afterwards, also when the case panics.
pub(crate) async fn with_fixture_on<F, Fut>(db_name: &str, settings: NatsSettings, case: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Logs only when asked for (`RUST_LOG=edict_infrastructure=debug`, with `--nocapture`).
    if std::env::var_os("RUST_LOG").is_some() {
        edict_infrastructure::telemetry::init(false, "info");
    }
    let admin_url = test_database_url();
    let (db, url) = create_isolated_postgres(&admin_url, db_name)
        .await
        .expect("create an isolated PostgreSQL database");
    let nats = nats::connect(settings).await.expect("connect to nats");
    nats.ensure_streams().await.expect("ensure the streams");
    let fixture = Fixture {
        db: db.clone(),
        nats: nats.clone(),
    };
    run_isolated(case(fixture), async {
        delete_streams(&nats).await;
        db.close().await;
        let _ = drop_isolated_postgres(&admin_url, &url).await;
    })
    .await;
}

/// The whole log, in commit order.
pub(crate) async fn whole_log(db: &Database) -> Vec<RecordedEvent> {
    let mut log = Vec::new();
    let mut after = Checkpoint::START;
    loop {
        let page = db.read_all(after, 1000).await.unwrap();
        let Some(last) = page.last() else {
            return log;
        };
        after = last.checkpoint();
        log.extend(page);
    }
}

/// A port nothing listens on (just now).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `command` (a nats-server) with its stderr in `log` (or nowhere) and waits until it listens
/// on `port`; `what` and the log say what did not start.
pub(crate) async fn spawn_nats(
    command: &mut Command,
    port: u16,
    log: Option<&Path>,
    what: &str,
) -> Child {
    let stderr = log.map_or_else(Stdio::null, |log| {
        std::fs::File::create(log).unwrap().into()
    });
    let child = command
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("start nats-server");
    let up = eventually(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await;
    match log {
        Some(log) => assert!(
            up.is_some(),
            "{what}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
        None => assert!(up.is_some(), "{what}"),
    }
    child
}

/// Runs `case` with a fixture on a nats-server of its own, which goes away for `downtime` and comes back
/// when the case calls [`Restart::now`].
pub(crate) async fn with_restarting_server<F, Fut>(db_name: &str, downtime: Duration, case: F)
where
    F: FnOnce(Fixture, Restart) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut server = OwnServer::start();
    let settings = NatsSettings::new(server.url(), &fresh_prefix()).unwrap();
    let (restart_tx, restart_rx) = oneshot::channel::<oneshot::Sender<()>>();
    let case = with_fixture_on(db_name, settings, |fixture| {
        case(fixture, Restart(restart_tx))
    });
    let restarter = async {
        if let Ok(done) = restart_rx.await {
            server.restart(downtime).await;
            let _ = done.send(());
        }
    };
    tokio::join!(case, restarter);
}

/// The case's handle on its server's restart.
pub(crate) struct Restart(oneshot::Sender<oneshot::Sender<()>>);

impl Restart {
    /// Kills the server; the answer comes once it is back.
    pub(crate) fn now(self) -> oneshot::Receiver<()> {
        let (done_tx, done_rx) = oneshot::channel();
        self.0.send(done_tx).unwrap();
        done_rx
    }
}

/// A nats-server process of this test's own, on a free port, storing in `dir`.
struct OwnServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl OwnServer {
    fn start() -> OwnServer {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Self::spawn(port, &dir);
        OwnServer { port, dir, child }
    }

    fn spawn(port: u16, dir: &tempfile::TempDir) -> Child {
        Command::new("/usr/sbin/nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server")
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `kill -9`, `downtime` without a server (an intended outage, not a wait for a condition), then the
    /// same server again on the same store.
    async fn restart(&mut self, downtime: Duration) {
        self.child.kill().await.unwrap();
        tokio::time::sleep(downtime).await;
        self.child = Self::spawn(self.port, &self.dir);
    }
}
