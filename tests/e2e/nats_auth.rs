//! `edict serve` on a NATS server that demands a user, a password and TLS: configured through
//! `EDICT_NATS_USER`, `EDICT_NATS_PASSWORD` and `EDICT_NATS_CA`, every role connects and the relay
//! publishes; with a wrong password the process stops with an error naming NATS authorization and not
//! the password.

use crate::harness::{Layout, Store, TestApp, eventually, free_port};
use edict_infrastructure::nats::{self, NatsAuth, NatsSettings, NatsTls};
use edict_infrastructure::settings::Secret;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Child;

const PASSWORD: &str = "e2e-pw-4b7f1a2e-never-logged";

/// A nats-server with JetStream, TLS (a CA made here) and one user.
struct SecureNats {
    port: u16,
    dir: tempfile::TempDir,
    _child: Child,
}

impl SecureNats {
    async fn start() -> SecureNats {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let server = params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path("server.pem"), server.pem()).unwrap();
        std::fs::write(path("server-key.pem"), server_key.serialize_pem()).unwrap();
        let port = free_port();
        let config = format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n\
             tls {{ cert_file: {:?}, key_file: {:?} }}\n\
             authorization {{ users = [ {{ user: edict, password: {PASSWORD:?} }} ] }}\n",
            path("store"),
            path("server.pem"),
            path("server-key.pem"),
        );
        std::fs::write(path("nats.conf"), config).unwrap();
        let config = path("nats.conf");
        let child =
            crate::harness::nats_server([std::ffi::OsStr::new("-c"), config.as_ref()], port).await;
        SecureNats {
            port,
            dir,
            _child: child,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_connects_to_nats_with_a_password_over_tls_and_a_wrong_one_is_named() {
    let server = SecureNats::start().await;
    let prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let env = vec![
        ("EDICT_NATS_USER".to_owned(), "edict".to_owned()),
        ("EDICT_NATS_PASSWORD".to_owned(), PASSWORD.to_owned()),
        ("EDICT_NATS_CA".to_owned(), server.ca()),
    ];
    let layout = Layout {
        nats_url: Some(server.url()),
        nats_prefix: Some(prefix.clone()),
        roles: None,
    };
    // All roles, the relay among them; ready means every role started.
    let mut app = TestApp::spawn_with_env(Store::Postgres, layout, env).await;

    // The bootstrap admin's events went through the relay onto the secured server.
    let settings = NatsSettings::new(server.url(), &prefix)
        .unwrap()
        .with_security(
            NatsAuth::UserPassword {
                user: "edict".to_owned(),
                password: Secret::new(PASSWORD.to_owned()),
            },
            NatsTls {
                ca: Some(server.ca().into()),
                ..NatsTls::default()
            },
        )
        .unwrap();
    let client = nats::connect(settings)
        .await
        .expect("the test connects too");
    let relayed = eventually(Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let mut stream = client
                .jetstream()
                .get_stream(client.prefix().events_stream())
                .await
                .ok()?;
            let messages = stream.info().await.ok()?.state.messages;
            (messages > 0).then_some(messages)
        }
    })
    .await;
    assert!(
        relayed.is_some(),
        "the relay published over TLS with the password"
    );

    // The same deployment with a wrong password: the process ends, naming NATS authorization.
    let wrong = "wrong-e2e-9d3c-never-logged";
    let output = tokio::time::timeout(
        Duration::from_secs(25),
        app.command(Some("projector"), free_port())
            .env("EDICT_NATS_PASSWORD", wrong)
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("edict serve gives up on refused credentials well before its 30 s connect timeout")
    .expect("run edict serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("NATS authorization failed") && stderr.contains("\"edict\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains(wrong) && !stderr.contains(PASSWORD),
        "{stderr}"
    );
    app.stop().await;
}

#[test]
fn compose_gives_nats_a_password_and_edict_the_same_one() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/compose.yaml")).expect("compose.yaml");
    let mut compose: serde_yaml::Value = serde_yaml::from_str(&text).expect("compose.yaml parses");
    compose.apply_merge().expect("the merge keys resolve");
    let nats = &compose["services"]["nats"];
    let mounts: Vec<&str> = nats["volumes"]
        .as_sequence()
        .expect("nats volumes")
        .iter()
        .filter_map(|volume| volume.as_str())
        .collect();
    assert!(
        mounts.contains(&"./deploy/nats.conf:/etc/nats/nats.conf:ro"),
        "{mounts:?}"
    );
    let config = std::fs::read_to_string(format!("{root}/deploy/nats.conf")).expect("nats.conf");
    assert!(
        config.contains("password: $EDICT_NATS_PASSWORD"),
        "{config}"
    );
    let edict = &compose["services"]["relay-1"]["environment"];
    assert_eq!(edict["EDICT_NATS_USER"].as_str(), Some("edict"));
    let password = edict["EDICT_NATS_PASSWORD"].as_str().expect("a password");
    assert_eq!(
        Some(password),
        nats["environment"]["EDICT_NATS_PASSWORD"].as_str(),
        "both services read the same variable"
    );
    assert!(
        password.starts_with("${EDICT_NATS_PASSWORD:?"),
        "required, from the env file"
    );
}
