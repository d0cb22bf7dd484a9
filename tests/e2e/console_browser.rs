//! The browser harness (`browser.rs`) against pages the server has without the console: a person
//! approves a device on `/device` in a real Chromium, at a desktop and a phone width, and Swagger UI at
//! `/docs` renders the spec. Each test starts its own server and its own Chromium.

use crate::browser::Browser;
use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Store, TestApp};
use fantoccini::key::Key;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::Path;

/// The width and height in pixels of the PNG at `path` (from its IHDR chunk, which PNG puts first).
fn png_size(path: &Path) -> (u32, u32) {
    let png = std::fs::read(path).unwrap();
    assert_eq!(
        &png[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is a PNG",
        path.display()
    );
    let number = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (number(16), number(20))
}

#[tokio::test]
async fn browser_harness_opens_the_device_page() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let (status, grant) = app
        .call(
            Method::POST,
            "/api/v1/device/code",
            None,
            Some(json!({"machine_id": "box-1", "machine_name": "Build box"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let user_code = grant["user_code"].as_str().unwrap();

    let browser = Browser::open(&app.base).await;
    browser.goto("/device").await;
    browser.wait_for_text("Approve a device").await;
    let email = browser.field("Email").await;
    assert_eq!(email.attr("type").await.unwrap().as_deref(), Some("email"));
    browser.assert_clean_console().await;
    for width in [1280, 420] {
        browser.set_width(width).await;
        let shot = browser.screenshot(&format!("device-{width}")).await;
        assert_eq!(png_size(&shot).0, width, "{}", shot.display());
    }

    // A wrong code: signed in, the page says the code is unknown.
    browser.fill("Email", ADMIN_EMAIL).await;
    browser.fill("Password", ADMIN_PASSWORD).await;
    browser.fill("Code", "WXYZ-2345").await;
    browser.click_button("Sign in and look it up").await;
    browser
        .wait_for_text("No device login has this code; check it and try again.")
        .await;
    let error = browser.text("p.error").await;
    assert!(!error.is_empty(), "the page explains the unknown code");
    // Answered as a 404, which Chromium logs: the console check sees it (and reading drains it).
    let logged = browser.console_errors().await;
    assert!(
        logged.iter().any(|line| line.contains("404")),
        "the unknown code's 404 is a console error: {logged:?}"
    );

    // The right code: consent, then approval.
    browser.fill("Code", user_code).await;
    browser.click_button("Look it up").await;
    browser.wait_for_text("Build box").await;
    browser
        .field("This is my machine, and I started this login.")
        .await
        .click()
        .await
        .unwrap();
    browser.click_button("Approve").await;
    browser
        .wait_for_text("Approved: the agent finishes its login by itself.")
        .await;
    browser.assert_clean_console().await;
    browser.close().await;

    let admin = app.admin().await;
    let (status, request) = app
        .call(
            Method::GET,
            &format!("/api/v1/device/requests/{user_code}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{request}");
    assert_eq!(request["status"], "approved", "{request}");
}

#[tokio::test]
async fn browser_harness_renders_swagger_ui() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let browser = Browser::open(&app.base).await;
    browser.goto("/docs").await;
    // Swagger UI builds the page from /openapi.json with its script: the title and an operation show.
    browser.wait_for(".swagger-ui .info .title").await;
    browser.wait_for_text("/api/v1/auth/login").await;
    browser.assert_clean_console().await;
    // A screenshot holds the whole page, not only the viewport: the list of operations is far longer.
    browser.set_width(420).await;
    let viewport = browser
        .client()
        .execute("return window.innerHeight;", vec![])
        .await
        .unwrap();
    let (width, height) = png_size(&browser.screenshot("swagger-ui-420").await);
    assert_eq!(width, 420);
    assert!(
        u64::from(height) > viewport.as_u64().unwrap() * 3,
        "a {height} px high screenshot of a {viewport} px viewport"
    );
    browser.close().await;
}

/// Presses Tab until the focus reaches an element whose text is `text`, at most `limit` times; answers
/// what the focus passed through, and fails when any of it was drawn without a focus outline.
async fn tab_to(browser: &Browser, text: &str, limit: usize) -> Vec<String> {
    let mut passed = Vec::new();
    for _ in 0..limit {
        browser.press(&Key::Tab).await;
        let focused = browser.focused().await;
        assert!(
            focused.outlined,
            "{focused:?} has the focus but no visible outline"
        );
        passed.push(focused.text.clone());
        if focused.text == text {
            return passed;
        }
    }
    panic!("{limit} presses of Tab never reached {text:?}; the focus went through {passed:?}");
}

/// The console from the keyboard alone: Tab reaches the skip link first, which moves the focus to the
/// page's content; a person signs in by typing, Tab and Enter; every link of the navigation is reached
/// in reading order; whatever has the focus is outlined.
#[tokio::test]
async fn console_keyboard_signs_in_and_reaches_every_navigation_link_with_a_visible_focus() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let browser = Browser::open(&app.base).await;
    browser.goto("/console/sign-in").await;
    browser.wait_for_text("Sign in").await;

    let first = tab_to(&browser, "Skip to content", 1).await;
    assert_eq!(first, ["Skip to content"], "the skip link comes first");
    tab_to(&browser, "Email", 3).await;
    browser.press(ADMIN_EMAIL).await;
    browser.press(&Key::Tab).await;
    assert_eq!(browser.focused().await.text, "Password");
    browser.press(ADMIN_PASSWORD).await;
    browser.press(&Key::Enter).await;
    browser.wait_for_text("Convergence").await;

    // On the dashboard: the skip link, then the brand, each nav link in order, then sign-out.
    tab_to(&browser, "Skip to content", 1).await;
    browser.press(&Key::Enter).await;
    let main = browser.focused().await;
    assert_eq!(
        main.tag, "main",
        "the skip link moves the focus to the content"
    );
    browser.goto("/console/").await;
    browser.wait_for_text("Convergence").await;
    let passed = tab_to(&browser, "Sign out", 12).await;
    let nav: Vec<&str> = passed
        .iter()
        .map(String::as_str)
        .filter(|text| {
            [
                "Dashboard",
                "Rules",
                "Change requests",
                "Teams",
                "Fleet",
                "Audit",
            ]
            .contains(text)
        })
        .collect();
    assert_eq!(
        nav,
        [
            "Dashboard",
            "Rules",
            "Change requests",
            "Teams",
            "Fleet",
            "Audit"
        ],
        "the navigation's links in reading order (the focus went through {passed:?})"
    );
    browser.assert_clean_console().await;
    browser.close().await;
}
