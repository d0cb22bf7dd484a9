//! The committed spec matches the code, and the server publishes it.

use crate::harness::{Store, TestApp};
use reqwest::{Method, StatusCode};

#[test]
fn committed_openapi_yaml_matches_the_code() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_edict"))
        .args(["openapi", "--format", "yaml"])
        .output()
        .expect("run edict openapi");
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).expect("utf-8 spec");
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/api-spec/openapi.yaml"
    ))
    .expect("api-spec/openapi.yaml is committed");
    assert!(
        generated == committed,
        "api-spec/openapi.yaml differs from the code: run `cargo run -- openapi > api-spec/openapi.yaml`"
    );
    let spec: serde_yaml::Value = serde_yaml::from_str(&generated).expect("spec is YAML");
    assert!(spec["paths"]["/api/v1/rules"].is_mapping());
}

#[tokio::test]
async fn the_server_serves_its_spec_and_swagger_ui() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (status, spec) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["paths"]["/api/v1/teams"].is_object());
    let docs = app.send(Method::GET, "/docs", None, None, &[]).await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.expect("body").contains("swagger"));
}

#[test]
fn compose_file_has_the_production_shape() {
    // The Compose Specification itself is checked by scripts/validate-deploy (run by the test command).
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose.yaml"))
        .expect("compose.yaml");
    let mut compose: serde_yaml::Value = serde_yaml::from_str(&text).expect("compose.yaml parses");
    compose.apply_merge().expect("the merge keys resolve");
    let roles = [
        ("api-1", "api"),
        ("api-2", "api"),
        ("relay-1", "relay"),
        ("relay-2", "relay"),
        ("projector", "projector"),
        ("gateway-1", "gateway"),
        ("gateway-2", "gateway"),
        ("audit", "audit"),
    ];
    for (service, role) in roles {
        let service = &compose["services"][service];
        assert!(service.is_mapping(), "{service:?}");
        let command: Vec<&str> = service["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(serde_yaml::Value::as_str)
            .collect();
        assert_eq!(command, ["serve", "--roles", role]);
        assert_eq!(service["restart"], "unless-stopped");
        assert!(service["healthcheck"]["test"].is_sequence());
        assert_eq!(
            service["env_file"][0]["path"], ".env",
            "secrets from the env file"
        );
    }
    for service in ["postgres", "nats"] {
        assert!(
            compose["services"][service]["healthcheck"].is_mapping(),
            "{service}"
        );
    }
    // No secret is written in the file itself: every password is a variable.
    for line in text.lines().filter(|line| line.contains("PASSWORD")) {
        assert!(
            !line.contains(": ") || line.contains("${") || line.trim_start().starts_with('#'),
            "a secret in compose.yaml: {line}"
        );
    }
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    // `edict openapi | head -1`: the reader goes away after one line.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edict"))
        .args(["openapi", "--format", "yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run edict openapi");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}
