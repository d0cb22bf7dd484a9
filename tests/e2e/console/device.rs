//! The device approval page: sign in with the code, read which machine asks, approve only with the
//! consent box ticked.

use super::Browser;
use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Store, TestApp};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn console_device_page_approves_a_machine_only_with_explicit_consent() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (status, grant) = app.device_code("box-7", "Build <box>").await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let code = grant["user_code"].as_str().unwrap().to_owned();
    let device_code = grant["device_code"].as_str().unwrap().to_owned();
    assert!(
        grant["verification_uri"]
            .as_str()
            .unwrap()
            .ends_with("/device")
    );

    // A visitor signs in on the page itself, with the code.
    let mut browser = Browser::new(&app);
    let page = browser.get("/device").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"<label for="code">"#), "{}", page.body);
    let csrf = page.csrf();
    let signed_in = browser
        .post(
            "/device",
            &[
                ("csrf", &csrf),
                ("intent", "sign-in"),
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let asking = browser.get(signed_in.location()).await;
    assert!(
        asking.body.contains("Build &#60;box&#62;"),
        "{}",
        asking.body
    );
    assert!(asking.body.contains("box-7"));
    assert!(
        asking
            .body
            .contains(r#"<label class="check" for="consent">"#)
    );

    // Approving without the consent box: refused, still pending.
    let csrf = asking.csrf();
    let no_consent = browser
        .post(
            "/device",
            &[("csrf", &csrf), ("code", &code), ("intent", "approve")],
        )
        .await;
    assert_eq!(no_consent.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(no_consent.body.contains("Tick the box"));
    let token = app.admin().await;
    let (_, request) = app
        .get(&format!("/api/v1/device/requests/{code}"), &token)
        .await;
    assert_eq!(request["status"], "pending", "{request}");

    // With it: approved, and the agent collects its token.
    let approved = browser
        .post(
            "/device",
            &[
                ("csrf", &csrf),
                ("code", &code),
                ("intent", "approve"),
                ("consent", "on"),
            ],
        )
        .await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    let done = browser.get(approved.location()).await;
    assert!(
        done.body
            .contains("Approved: the agent finishes its login by itself.")
    );
    let (status, credentials) = app
        .post_anonymous("/api/v1/device/token", json!({"device_code": device_code}))
        .await;
    assert_eq!(status, StatusCode::OK, "{credentials}");
    assert!(credentials["token"].is_string(), "{credentials}");
}
