//! TLS and the agent's transport policy, against the real binaries: `edict serve` with a certificate
//! from a test CA (made with rcgen) serves HTTPS only and reloads its certificate on a file change and
//! on SIGHUP; the device approval page is named from `EDICT_PUBLIC_URL`, never from a forged Host
//! header; `edict-agent` refuses plain `ws://` to another machine unless `--insecure`, and logs in over
//! HTTPS and connects to the gateway over `wss://` with `--ca-file`.

use crate::harness::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Layout, Signal, Store, TestApp, agent_binary, assert_ran,
    eventually, free_port, ready_over_https, serve_on_sqlite, signal,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A test CA and the files of the server certificate it signs.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Edict test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub(crate) fn cert_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub(crate) fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// A new server certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM, DER).
    fn issue(&self, name: &str) -> (String, String, Vec<u8>) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// Issues a certificate and puts it in place (each file replaced by a rename, as a deployment
    /// tool does, so the server never reads half a file); answers its DER.
    pub(crate) fn install(&self, name: &str) -> Vec<u8> {
        let (cert, key, der) = self.issue(name);
        replace(&self.key_file(), key.as_bytes(), None);
        replace(&self.cert_file(), cert.as_bytes(), None);
        der
    }

    /// A trusted HTTPS client.
    pub(crate) fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.ca_file()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// The leaf certificate the server at `port` presents now (DER).
    async fn served(&self, port: u16) -> Option<Vec<u8>> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(self.ca_file()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .ok()?;
        let (_, connection) = tls.get_ref();
        Some(connection.peer_certificates()?.first()?.to_vec())
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename; with `mtime`, the new file carries
/// that modification time already when it appears.
fn replace(path: &Path, bytes: &[u8], mtime: Option<std::time::SystemTime>) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, bytes).unwrap();
    if let Some(mtime) = mtime {
        std::fs::File::options()
            .write(true)
            .open(&temporary)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    std::fs::rename(&temporary, path).unwrap();
}

/// `edict serve` on the embedded store with TLS on the API and the gateway, and a client trusting it.
pub(crate) struct TlsServer {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) gateway_port: u16,
    client: reqwest::Client,
    _data: tempfile::TempDir,
}

impl TlsServer {
    pub(crate) async fn start(pki: &Pki) -> TlsServer {
        Self::start_with(pki, &[]).await
    }

    /// Starts it with more environment.
    pub(crate) async fn start_with(pki: &Pki, env: &[(&str, String)]) -> TlsServer {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let gateway_port = free_port();
        let mut command = serve_on_sqlite(data.path(), port, gateway_port);
        command
            .env("EDICT_TLS_CERT", pki.cert_file())
            .env("EDICT_TLS_KEY", pki.key_file());
        for (name, value) in env {
            command.env(name, value);
        }
        let server = TlsServer {
            child: command.spawn().unwrap(),
            port,
            gateway_port,
            client: pki.client(),
            _data: data,
        };
        ready_over_https(&server.client, &server.base()).await;
        server
    }

    pub(crate) fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// POST over HTTPS, asserting success; answers the body.
    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Value {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base()))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json::<Value>().await.unwrap_or(Value::Null)
    }

    /// Signs in; answers the access token.
    pub(crate) async fn login(&self, email: &str, password: &str) -> String {
        let body = json!({"email": email, "password": password});
        let tokens = self.post("/api/v1/auth/login", None, body).await;
        tokens["access_token"].as_str().unwrap().to_owned()
    }

    /// Creates a user `name@example.com`; answers their id.
    pub(crate) async fn user(&self, admin: &str, name: &str, roles: &[&str]) -> String {
        let body = json!({"email": format!("{name}@example.com"), "name": name,
                          "password": format!("{name}-password-123"), "roles": roles});
        let user = self.post("/api/v1/users", Some(admin), body).await;
        user["id"].as_str().unwrap().to_owned()
    }

    /// An enrollment token for a new member, made over HTTPS.
    async fn enrollment_token(&self) -> String {
        let admin = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let user = self.user(&admin, "dev", &["member"]).await;
        let body = json!({"user_id": user, "uses": 5});
        let token = self
            .post("/api/v1/enrollment-tokens", Some(&admin), body)
            .await;
        token["token"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn the_api_serves_https_only_and_reloads_its_certificate() {
    let pki = Pki::new();
    let first = pki.install("first");
    let mut server = TlsServer::start(&pki).await;

    // HTTPS with the test CA works; plain HTTP on the same port gets no answer.
    let response = pki
        .client()
        .get(format!("{}/health/live", server.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health/live", server.port))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP was answered: {plain:?}"
    );
    assert_eq!(pki.served(server.port).await.as_deref(), Some(&first[..]));

    // Files replaced: new connections get the new certificate, with no restart.
    let second = pki.install("second");
    let served = eventually(Duration::from_secs(15), || async {
        (pki.served(server.port).await.as_deref() == Some(&second[..])).then_some(())
    })
    .await;
    assert!(served.is_some(), "the replaced certificate was not served");
    // The gateway's TLS listener takes it too.
    let served = eventually(Duration::from_secs(15), || async {
        (pki.served(server.gateway_port).await.as_deref() == Some(&second[..])).then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "the gateway did not serve the replaced certificate"
    );

    // SIGHUP: a certificate put in place without any change the file watch could see (same sizes,
    // same modification times) is served after the signal.
    let stamp = |path: &Path| {
        let metadata = std::fs::metadata(path).unwrap();
        (metadata.len(), metadata.modified().unwrap())
    };
    let (cert_len, cert_mtime) = stamp(&pki.cert_file());
    let (key_len, key_mtime) = stamp(&pki.key_file());
    let (cert, key, third) = (0..200)
        .map(|_| pki.issue("third"))
        .find(|(cert, key, _)| cert.len() as u64 == cert_len && key.len() as u64 == key_len)
        .expect("a certificate of the same size");
    replace(&pki.key_file(), key.as_bytes(), Some(key_mtime));
    replace(&pki.cert_file(), cert.as_bytes(), Some(cert_mtime));
    assert_eq!(stamp(&pki.cert_file()), (cert_len, cert_mtime));
    let pid = server.child.id().unwrap();
    signal(pid, Signal::SIGHUP);
    let served = eventually(Duration::from_secs(15), || async {
        (pki.served(server.port).await.as_deref() == Some(&third[..])).then_some(())
    })
    .await;
    assert!(served.is_some(), "SIGHUP did not reload the certificate");
    // The server is still up (SIGHUP did not end it).
    let response = pki
        .client()
        .get(format!("{}/health/live", server.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // A broken replacement is not taken: the last good certificate stays in force (every handshake
    // meanwhile succeeds), and the next good one is taken after it.
    replace(&pki.cert_file(), b"not a certificate", None);
    signal(pid, Signal::SIGHUP);
    let fourth = pki.install("fourth");
    let served = eventually(Duration::from_secs(15), || async {
        let served = pki.served(server.port).await;
        assert!(
            served.as_deref() == Some(&third[..]) || served.as_deref() == Some(&fourth[..]),
            "a handshake failed or served another certificate after a broken file"
        );
        (served.as_deref() == Some(&fourth[..])).then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "the certificate after a broken one was not served"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server ended"
    );
}

#[tokio::test]
async fn verification_uri_comes_from_configuration_not_the_host_header() {
    for (env, expected) in [
        (
            vec![(
                "EDICT_PUBLIC_URL".to_owned(),
                "https://edict.example.com/".to_owned(),
            )],
            Some("https://edict.example.com/device"),
        ),
        (Vec::new(), None),
    ] {
        let app = TestApp::spawn_with_env(Store::Sqlite, Layout::default(), env).await;
        let response = app
            .send(
                Method::POST,
                "/api/v1/device/code",
                None,
                Some(json!({"machine_id": "box-1", "machine_name": "Build box"})),
                &[("host", "evil.example")],
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let grant: Value = response.json().await.unwrap();
        let uri = grant["verification_uri"].as_str().unwrap();
        // Without EDICT_PUBLIC_URL: the listener's own address.
        let expected = expected.map_or_else(|| format!("{}/device", app.base), str::to_owned);
        assert_eq!(uri, expected, "{grant}");
        assert!(!uri.contains("evil.example"), "{uri}");
    }
}

/// An agent machine: its directories and the `edict-agent` command line for them.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let machine = Machine {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(machine.dir.path().join("home").join(".claude")).unwrap();
        machine
    }

    fn command(&self) -> Command {
        let mut command = Command::new(agent_binary());
        command
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--home")
            .arg(self.dir.path().join("home"))
            .arg("--org-file")
            .arg(self.dir.path().join("etc").join("CLAUDE.md"))
            .env("EDICT_AGENT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn login(&self, args: &[&str]) -> std::process::Output {
        self.command()
            .arg("login")
            .args(args)
            .args(["--output", "json"])
            .output()
            .await
            .unwrap()
    }

    async fn status(&self) -> Value {
        let output = self
            .command()
            .args(["status", "--output", "json"])
            .output()
            .await
            .unwrap();
        assert!(output.status.success());
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

/// This machine's address that is not loopback (the test needs one to reach a gateway "elsewhere").
fn outside_address() -> Option<std::net::IpAddr> {
    // A UDP "connection" picks the outgoing interface without sending anything.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("203.0.113.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn the_agent_refuses_plain_ws_to_another_machine_unless_insecure() {
    let Some(outside) = outside_address() else {
        panic!("this test needs a non-loopback address on this machine");
    };
    let gateway_port = free_port();
    let app = TestApp::spawn_with_env(
        Store::Sqlite,
        Layout::default(),
        vec![(
            "EDICT_GATEWAY_LISTEN".to_owned(),
            format!("0.0.0.0:{gateway_port}"),
        )],
    )
    .await;
    let admin = app.admin().await;
    let (user, _) = app.user(&admin, "dev", &["member"]).await;
    let token = app
        .ok(
            "/api/v1/enrollment-tokens",
            &admin,
            json!({"user_id": user, "uses": 5}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let gateway = format!("ws://{outside}:{gateway_port}/ws");
    let machine = Machine::new();

    // Refused, with a clear reason, before anything is sent.
    let output = machine
        .login(&[
            "--server",
            &app.base,
            "--enrollment-token",
            &token,
            "--gateway",
            &gateway,
        ])
        .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("refusing {gateway}")) && stderr.contains("--insecure"),
        "{stderr}"
    );

    // Accepted with --insecure, and the daemon started with it connects; status says so.
    let output = machine
        .login(&[
            "--insecure",
            "--server",
            &app.base,
            "--enrollment-token",
            &token,
            "--gateway",
            &gateway,
        ])
        .await;
    assert_ran(&output, "edict-agent login --insecure");
    let mut daemon = machine
        .command()
        .args(["run", "--insecure"])
        .spawn()
        .unwrap();
    let connected = eventually(Duration::from_secs(20), || async {
        let status = machine.status().await;
        (status["connected"] == true).then_some(status)
    })
    .await
    .expect("the agent connected over ws:// with --insecure");
    assert_eq!(connected["insecure"], true, "{connected}");
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();

    // The same daemon started without --insecure refuses the gateway and says why.
    let mut daemon = machine.command().arg("run").spawn().unwrap();
    let mut lines = BufReader::new(daemon.stderr.take().unwrap()).lines();
    let refused = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(&format!("refusing {gateway}")) {
                return Some(line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    assert!(refused.is_some(), "no refusal logged");
    assert_eq!(machine.status().await["insecure"], false);
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn an_agent_with_a_ca_file_logs_in_over_https() {
    let pki = Pki::new();
    pki.install("edict");
    let server = TlsServer::start(&pki).await;
    let token = server.enrollment_token().await;
    let machine = Machine::new();

    // The private CA is not trusted by default.
    let output = machine
        .login(&["--server", &server.base(), "--enrollment-token", &token])
        .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach"), "{stderr}");

    // With --ca-file it is, and the login goes through.
    let ca = pki.ca_file();
    let output = machine
        .login(&[
            "--ca-file",
            ca.to_str().unwrap(),
            "--server",
            &server.base(),
            "--enrollment-token",
            &token,
        ])
        .await;
    assert_ran(&output, "edict-agent login --ca-file");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(answer["agent_id"].as_str().is_some_and(|id| !id.is_empty()));
    // With TLS configured the gateway is announced (and served) as wss://.
    assert_eq!(
        answer["gateway_urls"][0],
        format!("wss://127.0.0.1:{}/ws", server.gateway_port)
    );
    let status = machine.status().await;
    assert_eq!(status["server"], server.base());
    assert_eq!(
        status["ca_file"],
        std::fs::canonicalize(&ca).unwrap().display().to_string()
    );
    assert_eq!(status["insecure"], false);

    // The daemon (no flag: the CA file recorded at login) connects over wss:// and is welcomed.
    let mut daemon = machine.command().arg("run").spawn().unwrap();
    let connected = eventually(Duration::from_secs(20), || async {
        (machine.status().await["connected"] == true).then_some(())
    })
    .await;
    assert!(connected.is_some(), "the agent did not connect over wss://");
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();

    // Plain ws:// on the gateway's port gets no WebSocket.
    let plain =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", server.gateway_port))
            .await;
    assert!(plain.is_err(), "a plain WebSocket was accepted");
}
