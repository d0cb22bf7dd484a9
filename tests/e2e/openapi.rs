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
fn compose_file_is_valid_yaml_with_the_services() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose.yaml"))
        .expect("compose.yaml");
    let compose: serde_yaml::Value = serde_yaml::from_str(&text).expect("compose.yaml parses");
    for service in ["postgres", "nats", "edict"] {
        assert!(
            compose["services"][service].is_mapping(),
            "service {service} missing"
        );
    }
}
