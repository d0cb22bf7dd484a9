//! Connecting to a NATS server that demands credentials and TLS: user and password (in the settings and
//! in the URL), token, nkey, a `.creds` file of a server in operator mode, TLS against a private CA (with
//! and without a client certificate), and the errors of wrong credentials and an unknown CA.
//!
//! Each test starts its own `/usr/sbin/nats-server -js` on a free port with its own store directory and a
//! configuration file written here; the certificates come from `rcgen`, the nkeys from `nkeys`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::Stream as JsStream;
use edict_infrastructure::nats::{
    self, Nats, NatsAuth, NatsError, NatsRelay, NatsSettings, NatsTls, RelaySettings,
};
use edict_infrastructure::settings::Secret;
use edict_test_kit::nats::fresh_prefix;
use edict_test_kit::{
    create_isolated_postgres, drop_isolated_postgres, eventually, test_database_url,
};
use tokio::process::{Child, Command};

use crate::support::{free_port, spawn_nats};
use edict_test_kit::tally;

const PASSWORD: &str = "pw-5f1e0c9a-never-logged";
const TOKEN: &str = "tok-93b2d1c4-never-logged";

/// A private nats-server with JetStream and the given extra configuration (authorization, tls).
struct Server {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Server {
    async fn start(extra: &str) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), extra).await
    }

    /// Starts the server in `dir` (files the configuration refers to are already there).
    async fn start_in(dir: tempfile::TempDir, extra: &str) -> Server {
        let port = free_port();
        let store = dir.path().join("store");
        let config = format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {store:?} }}\n{extra}\n",
            store = store.display().to_string()
        );
        std::fs::write(dir.path().join("nats.conf"), config).unwrap();
        let child = Server::spawn(dir.path(), port).await;
        Server {
            port,
            dir,
            child: Some(child),
        }
    }

    /// Runs nats-server on `dir`'s configuration and waits until it listens on `port`.
    async fn spawn(dir: &Path, port: u16) -> Child {
        let log = dir.join("nats.log");
        let mut command = Command::new("/usr/sbin/nats-server");
        command.arg("-c").arg(dir.join("nats.conf"));
        spawn_nats(
            &mut command,
            port,
            Some(&log),
            &format!("nats-server listens on {port}"),
        )
        .await
    }

    /// `kill -9`, then the same server (configuration, port, store) again.
    async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
        self.child = Some(Server::spawn(self.dir.path(), self.port).await);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn settings(url: &str, auth: NatsAuth, tls: NatsTls) -> NatsSettings {
    NatsSettings::new(url, &fresh_prefix())
        .unwrap()
        .with_security(auth, tls)
        .unwrap()
}

fn user_password(user: &str, password: &str) -> NatsAuth {
    NatsAuth::UserPassword {
        user: user.to_owned(),
        password: Secret::new(password.to_owned()),
    }
}

const USERS: &str =
    r#"authorization { users = [ { user: edict, password: "pw-5f1e0c9a-never-logged" } ] }"#;

/// What Edict does with NATS works on this connection: the streams are made, the rule set bucket takes
/// and returns a value, an event published to the stream is acknowledged.
async fn assert_jetstream_works(nats: &Nats) {
    nats.ensure_streams().await.expect("ensure the streams");
    let store = nats
        .jetstream()
        .get_key_value(nats.prefix().rulesets_bucket())
        .await
        .unwrap();
    store
        .put("team-a", "{\"hash\":\"a1\"}".into())
        .await
        .unwrap();
    let value = store.get("team-a").await.unwrap().unwrap();
    assert_eq!(&value[..], b"{\"hash\":\"a1\"}");
    nats.jetstream()
        .publish(nats.prefix().event_subject("Rule", "r1"), "{}".into())
        .await
        .unwrap()
        .await
        .expect("the events stream acknowledges");
}

// 1. User and password.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_and_password_from_the_settings_open_jetstream() {
    let server = Server::start(USERS).await;
    let nats = nats::connect(settings(
        &server.url(),
        user_password("edict", PASSWORD),
        NatsTls::default(),
    ))
    .await
    .expect("connect with user and password");
    assert_jetstream_works(&nats).await;
}

/// async-nats ignores `user:password@` in the URL; Edict moves it into the options, and keeps the
/// password out of the URL it logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_and_password_in_the_url_are_used_and_taken_out_of_it() {
    let server = Server::start(USERS).await;
    let url = format!("nats://edict:{PASSWORD}@127.0.0.1:{}", server.port);
    let settings = NatsSettings::new(url, &fresh_prefix()).unwrap();
    assert!(
        !format!("{settings:?}").contains(PASSWORD),
        "the settings never show the password: {settings:?}"
    );
    let nats = tokio::time::timeout(Duration::from_secs(20), nats::connect(settings))
        .await
        .expect("connects within 20 s")
        .expect("connect with the URL's user and password");
    assert_jetstream_works(&nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_once_naming_nats_authorization_and_no_secret() {
    let server = Server::start(USERS).await;
    let wrong = "wrong-7c1d-never-logged";
    let started = Instant::now();
    let error = nats::connect(settings(
        &server.url(),
        user_password("edict", wrong),
        NatsTls::default(),
    ))
    .await
    .expect_err("a wrong password is refused");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused credentials are not retried for 30 s ({:?})",
        started.elapsed()
    );
    assert!(
        matches!(error, NatsError::Authorization { .. }),
        "{error:?}"
    );
    let message = error_chain(&error);
    assert!(
        message.contains("NATS authorization failed") && message.contains("\"edict\""),
        "{message}"
    );
    assert!(
        !message.contains(wrong) && !format!("{error:?}").contains(wrong),
        "{message}"
    );

    let error = nats::connect(settings(&server.url(), NatsAuth::None, NatsTls::default()))
        .await
        .expect_err("no credentials are refused");
    assert!(
        matches!(error, NatsError::Authorization { .. }),
        "{error:?}"
    );
}

// 2. Token.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_opens_jetstream_and_a_wrong_one_is_an_authorization_error() {
    let server = Server::start(r#"authorization { token: "tok-93b2d1c4-never-logged" }"#).await;
    let nats = nats::connect(settings(
        &server.url(),
        NatsAuth::Token(Secret::new(TOKEN.to_owned())),
        NatsTls::default(),
    ))
    .await
    .expect("connect with the token");
    assert_jetstream_works(&nats).await;

    let error = nats::connect(settings(
        &server.url(),
        NatsAuth::Token(Secret::new("not-the-token".to_owned())),
        NatsTls::default(),
    ))
    .await
    .expect_err("a wrong token is refused");
    let message = error_chain(&error);
    assert!(message.contains("NATS authorization failed"), "{message}");
    assert!(!message.contains("not-the-token"), "{message}");
}

/// The client reconnects after a server restart with the same credentials (async-nats keeps the options).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_the_connection_comes_back_with_its_token() {
    let mut server = Server::start(r#"authorization { token: "tok-93b2d1c4-never-logged" }"#).await;
    let nats = nats::connect(settings(
        &server.url(),
        NatsAuth::Token(Secret::new(TOKEN.to_owned())),
        NatsTls::default(),
    ))
    .await
    .expect("connect with the token");
    assert_jetstream_works(&nats).await;
    server.restart().await;
    let back = eventually(Duration::from_secs(20), || {
        let nats = nats.clone();
        async move {
            let ack = nats
                .jetstream()
                .publish(nats.prefix().event_subject("Rule", "r2"), "{}".into())
                .await
                .ok()?;
            ack.await.ok()
        }
    })
    .await;
    assert!(
        back.is_some(),
        "a publish is acknowledged after the restart"
    );
}

// 3. Nkey.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_opens_jetstream() {
    let user = nkeys::KeyPair::new_user();
    let server = Server::start(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}",
        user.public_key()
    ))
    .await;
    let seed = user.seed().unwrap();
    let nats = nats::connect(settings(
        &server.url(),
        NatsAuth::Nkey(Secret::new(seed)),
        NatsTls::default(),
    ))
    .await
    .expect("connect with the nkey");
    assert_jetstream_works(&nats).await;

    let other = nkeys::KeyPair::new_user();
    let error = nats::connect(settings(
        &server.url(),
        NatsAuth::Nkey(Secret::new(other.seed().unwrap())),
        NatsTls::default(),
    ))
    .await
    .expect_err("an unknown nkey is refused");
    assert!(
        matches!(error, NatsError::Authorization { .. }),
        "{error:?}"
    );
}

// 4. A `.creds` file of a server in operator mode (JWTs signed here, as `nsc` would).

fn jwt(signer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": 1_700_000_000,
        "iss": signer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let payload = encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{payload}");
    let signature = signer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", encode(&signature))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_opens_jetstream_on_a_server_in_operator_mode() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    // JetStream needs a system account, and may not be enabled on it.
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "edict",
        serde_json::json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
            },
            "type": "account",
            "version": 2
        }),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({
            "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                       "wildcards": true, "conn": -1, "leaf": -1},
            "type": "account",
            "version": 2
        }),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "edict",
        serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("operator.jwt"), &operator_jwt).unwrap();
    let creds = dir.path().join("edict.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let server = Server::start_in(
        dir,
        &format!(
            "operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\n\
             resolver_preload: {{ {account}: {account_jwt}, {system}: {system_jwt} }}\n",
            account = account.public_key(),
            system = system.public_key()
        ),
    )
    .await;
    let nats = nats::connect(settings(
        &server.url(),
        NatsAuth::CredsFile(creds),
        NatsTls::default(),
    ))
    .await
    .expect("connect with the creds file");
    assert_jetstream_works(&nats).await;

    let error = nats::connect(settings(
        &server.url(),
        NatsAuth::CredsFile(server.path("missing.creds")),
        NatsTls::default(),
    ))
    .await
    .expect_err("a missing creds file");
    assert!(
        matches!(&error, NatsError::Settings(message) if message.contains("missing.creds")),
        "{error:?}"
    );
}

// 5. TLS against a private CA.

struct Pki {
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, written into `dir`.
fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "edict test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server_params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let client_params = CertificateParams::new(vec!["edict".to_owned()]).unwrap();
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    write("server.pem", server.pem());
    write("server-key.pem", server_key.serialize_pem());
    Pki {
        ca: write("ca.pem", ca.pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_ca_file_and_a_password_opens_jetstream_and_an_unknown_ca_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let tls_block = format!(
        "tls {{ cert_file: {:?}, key_file: {:?} }}\n{USERS}",
        dir.path().join("server.pem").display().to_string(),
        dir.path().join("server-key.pem").display().to_string(),
    );
    let server = Server::start_in(dir, &tls_block).await;
    let tls = NatsTls {
        ca: Some(pki.ca.clone()),
        ..NatsTls::default()
    };
    let nats = nats::connect(settings(
        &server.url(),
        user_password("edict", PASSWORD),
        tls,
    ))
    .await
    .expect("connect over TLS");
    assert_jetstream_works(&nats).await;

    // A CA that did not sign the server's certificate: refused at once, and the error says TLS.
    let other = tempfile::tempdir().unwrap();
    let other_pki = make_pki(other.path());
    let started = Instant::now();
    let error = nats::connect(settings(
        &server.url(),
        user_password("edict", PASSWORD),
        NatsTls {
            ca: Some(other_pki.ca),
            ..NatsTls::default()
        },
    ))
    .await
    .expect_err("an unknown CA is refused");
    assert!(started.elapsed() < Duration::from_secs(10), "not retried");
    let message = error_chain(&error);
    assert!(
        matches!(error, NatsError::Tls { .. }) && message.contains("TLS with NATS"),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_verifies_clients_takes_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let tls_block = format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}",
        dir.path().join("server.pem").display().to_string(),
        dir.path().join("server-key.pem").display().to_string(),
        pki.ca.display().to_string(),
    );
    let server = Server::start_in(dir, &tls_block).await;
    let nats = nats::connect(settings(
        &server.url(),
        NatsAuth::None,
        NatsTls {
            ca: Some(pki.ca.clone()),
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(pki.client_key.clone()),
            required: true,
        },
    ))
    .await
    .expect("connect with the client certificate");
    assert_jetstream_works(&nats).await;
}

// 6. The relay, the role that needs NATS most, publishes through an authenticated TLS connection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_the_log_over_tls_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let tls_block = format!(
        "tls {{ cert_file: {:?}, key_file: {:?} }}\n{USERS}",
        dir.path().join("server.pem").display().to_string(),
        dir.path().join("server-key.pem").display().to_string(),
    );
    let server = Server::start_in(dir, &tls_block).await;
    let nats = nats::connect(settings(
        &server.url(),
        user_password("edict", PASSWORD),
        NatsTls {
            ca: Some(pki.ca.clone()),
            ..NatsTls::default()
        },
    ))
    .await
    .expect("connect over TLS");
    nats.ensure_streams().await.unwrap();
    let admin_url = test_database_url();
    let (db, url) = create_isolated_postgres(&admin_url, "edict_test_nats_auth")
        .await
        .expect("create an isolated PostgreSQL database");
    let events = tally::append_over(&db, "auth", 20, 3).await;
    let relay = NatsRelay::new(db.clone(), nats.clone(), RelaySettings::default()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    let stored = eventually(Duration::from_secs(30), || {
        let nats = nats.clone();
        async move {
            let mut stream: JsStream = nats
                .jetstream()
                .get_stream(nats.prefix().events_stream())
                .await
                .ok()?;
            let messages = stream.info().await.ok()?.state.messages;
            (messages == events).then_some(messages)
        }
    })
    .await;
    let _ = stop.send(());
    let _ = task.await;
    db.close().await;
    let _ = drop_isolated_postgres(&admin_url, &url).await;
    assert_eq!(
        stored,
        Some(events),
        "the relay published all {events} events"
    );
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(source) = current {
        text.push_str(": ");
        text.push_str(&source.to_string());
        current = source.source();
    }
    text
}

// 7. The NATS configuration compose.yaml mounts.

/// `deploy/nats.conf` (store and port overridden by flags) takes the user `edict` with the password from
/// `EDICT_NATS_PASSWORD` in the documented form (`edict-$(openssl rand -hex 32)`: nats-server parses a
/// variable's value as a configuration value, so a bare hex string starting with a digit is not read as
/// a string and the server refuses to start), gives it JetStream, and refuses others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_nats_configuration_takes_edict_with_the_password_from_its_environment() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nats.conf");
    for password in [
        "edict-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "edict-8e3f0c1a9b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new("/usr/sbin/nats-server");
        command
            .arg("-c")
            .arg(config)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path().join("store"))
            .env("EDICT_NATS_PASSWORD", password);
        let log = dir.path().join("nats.log");
        let _child = spawn_nats(
            &mut command,
            port,
            Some(&log),
            "nats-server with deploy/nats.conf",
        )
        .await;
        let url = format!("nats://127.0.0.1:{port}");
        let nats = nats::connect(settings(
            &url,
            user_password("edict", password),
            NatsTls::default(),
        ))
        .await
        .expect("edict connects with the password of the environment");
        assert_jetstream_works(&nats).await;
        let error = nats::connect(settings(&url, NatsAuth::None, NatsTls::default()))
            .await
            .expect_err("anonymous connections are refused");
        assert!(
            matches!(error, NatsError::Authorization { .. }),
            "{error:?}"
        );
    }
}
