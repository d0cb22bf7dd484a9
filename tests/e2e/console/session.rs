//! Signing in and out of the console, the session cookie's attributes, the security headers, and
//! the CSRF check of every form.

use super::{Browser, CSP};
use crate::harness::{ADMIN_EMAIL, ADMIN_PASSWORD, Store, TestApp, eventually};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn console_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let mut browser = Browser::new(&app);

    // A visitor gets the sign-in page at /, with the console's headers.
    let home = browser.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(
        home.body.contains(r#"action="/console/sign-in""#),
        "{}",
        home.body
    );
    assert!(home.body.contains(r#"<label for="email">"#));
    assert_eq!(home.header("content-security-policy"), CSP);
    assert_eq!(home.header("x-content-type-options"), "nosniff");
    assert_eq!(home.header("referrer-policy"), "same-origin");
    assert_eq!(home.header("cache-control"), "no-store");
    assert!(!home.body.contains("<script>"), "no inline script");
    assert!(!home.body.contains("style="), "no inline style");

    // A wrong password: 401, the email kept, no session.
    let csrf = home.csrf();
    let wrong = browser
        .post(
            "/console/sign-in",
            &[
                ("csrf", &csrf),
                ("email", ADMIN_EMAIL),
                ("password", "not-the-password"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("The email or the password is wrong"),
        "{}",
        wrong.body
    );
    assert!(wrong.body.contains(&format!(r#"value="{ADMIN_EMAIL}""#)));
    assert!(!browser.cookies.contains_key("edict_session"));

    // The right one: the session cookie is HttpOnly, SameSite=Strict, for the whole site (and not
    // Secure over plain HTTP, or the browser would drop it).
    let signed_in = browser
        .post(
            "/console/sign-in",
            &[
                ("csrf", &csrf),
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("next", "/console/rules"),
            ],
        )
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.location(), "/console/rules");
    let cookie = signed_in
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("edict_session="))
        .expect("a session cookie");
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).skip(1).collect();
    assert!(attributes.contains(&"HttpOnly"), "{cookie}");
    assert!(attributes.contains(&"SameSite=Strict"), "{cookie}");
    assert!(attributes.contains(&"Path=/"), "{cookie}");
    assert!(!attributes.contains(&"Secure"), "{cookie}");

    // Signed in, / is the dashboard, naming who is signed in.
    let dashboard = browser.get("/").await;
    assert_eq!(dashboard.status, StatusCode::OK);
    assert!(
        dashboard.body.contains("<h1>Dashboard</h1>"),
        "{}",
        dashboard.body
    );
    assert!(dashboard.body.contains(ADMIN_EMAIL));
    assert!(dashboard.body.contains(r##"class="skip" href="#main""##));
    assert!(dashboard.body.contains(r#"<main id="main""#));
    assert!(
        dashboard.body.contains("rule_catalog"),
        "an org_admin sees the projections"
    );

    // The session is the API's: its access token works there until sign-out.
    let access = browser.access_token().expect("access token in the cookie");
    let me = app.fetch("/api/v1/users/me", &access).await;
    assert_eq!(me["email"], ADMIN_EMAIL);

    // Signing out without the form's token is refused and keeps the session.
    let refused = browser.post("/console/sign-out", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let (status, _) = app.get("/api/v1/users/me", &access).await;
    assert_eq!(status, StatusCode::OK);

    // With it: the session is closed (the API refuses its token) and the cookie cleared.
    let csrf = dashboard.csrf();
    let out = browser.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.set_cookies()
            .iter()
            .any(|c| c.starts_with("edict_session=;"))
    );
    let (status, _) = app.get("/api/v1/users/me", &access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The old cookie, replayed, is no session either: the sign-in page, and the cookie cleared.
    browser
        .cookies
        .insert("edict_session".into(), format!("{access}~edr_nothing"));
    let replayed = browser.get("/").await;
    assert!(replayed.body.contains(r#"action="/console/sign-in""#));
    assert!(!browser.cookies.contains_key("edict_session"));

    // A page that needs a session sends a visitor to sign in, and back afterwards.
    let rules = browser.get("/console/rules?layer=team").await;
    assert_eq!(rules.status, StatusCode::SEE_OTHER);
    assert_eq!(
        rules.location(),
        "/console/sign-in?next=%2Fconsole%2Frules%3Flayer%3Dteam"
    );

    // The assets: their content types and a long cache.
    let css = browser.get("/console/static/console.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header("content-type"), "text/css; charset=utf-8");
    assert!(css.header("cache-control").contains("max-age=31536000"));
    let js = browser.get("/console/static/console.js").await;
    assert_eq!(js.header("content-type"), "text/javascript; charset=utf-8");
}

/// The drafts `app`'s catalog lists under `name`, once it has applied the draft named `marker`
/// (drafted after any other: once it shows, every earlier draft would show too).
async fn drafts_named(app: &TestApp, admin: &str, name: &str, marker: &str) -> Vec<Value> {
    let marker_query = format!("/api/v1/rules?q={marker}");
    eventually(Duration::from_secs(10), || async {
        let (_, page) = app.get(&marker_query, admin).await;
        (page["items"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await
    .expect("the catalog lists the accepted draft");
    let query = format!("/api/v1/rules?q={name}");
    let (_, page) = app.get(&query, admin).await;
    page["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn console_posts_without_the_csrf_token_are_refused_and_change_nothing() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let admin = app.admin().await;
    let mut browser = Browser::new(&app);
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let form = browser.get("/console/rules/new").await;
    assert_eq!(form.status, StatusCode::OK);
    let csrf = form.csrf();
    let draft = |name: &'static str| {
        vec![
            ("name", name),
            ("layer", "team"),
            ("content", "- Never push on Fridays."),
            ("intent", "save"),
        ]
    };

    // No token, a wrong token, another session's token: 403, before anything runs.
    let mut other = Browser::new(&app);
    let (_, email, password) = app.account(&admin, "second", &["org_admin"]).await;
    other.sign_in(&email, &password).await;
    let other_csrf = other.get("/console/rules/new").await.csrf();
    for token in [None, Some("0".repeat(64)), Some(other_csrf)] {
        let mut fields = draft("Forged");
        if let Some(token) = &token {
            fields.push(("csrf", token.as_str()));
        }
        let refused = browser.post("/console/rules/new", &fields).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "token {token:?}");
        assert!(
            refused.body.contains("nothing was changed"),
            "{}",
            refused.body
        );
        assert_eq!(refused.header("content-security-policy"), CSP);
    }
    // The right token from another site (a cross-site form the browser labels): 403 as well.
    let mut fields = draft("Forged");
    fields.push(("csrf", &csrf));
    let origin = browser
        .post_with(
            "/console/rules/new",
            &fields,
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(origin.status, StatusCode::FORBIDDEN);
    let site = browser
        .post_with(
            "/console/rules/new",
            &fields,
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(site.status, StatusCode::FORBIDDEN);

    // The right token from this site: drafted.
    let mut fields = draft("Accepted");
    fields.push(("csrf", &csrf));
    let accepted = browser.post("/console/rules/new", &fields).await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    assert!(accepted.location().starts_with("/console/rules/"));

    // Once the catalog shows the accepted draft, it would show a forged one drafted before it.
    assert!(
        drafts_named(&app, &admin, "Forged", "Accepted")
            .await
            .is_empty()
    );

    // The preview's fetch carries the token as a header; without it, 403.
    let preview_fields = [
        ("name", "Previewed"),
        ("layer", "team"),
        ("content", "- Keep it short."),
    ];
    let preview = browser
        .post_with(
            "/console/rules/preview",
            &preview_fields,
            &[("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK);
    assert!(
        preview.body.contains("### Previewed\n\n- Keep it short."),
        "{}",
        preview.body
    );
    let no_token = browser
        .post("/console/rules/preview", &preview_fields)
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn console_renews_an_expired_access_token_and_marks_cookies_secure_behind_https() {
    // TLS ends at a proxy in front (the public URL is https): cookies must be Secure.
    let app = TestApp::spawn_setting(
        Store::Sqlite,
        &[
            ("EDICT_ACCESS_TTL_SECS", "1"),
            ("EDICT_PUBLIC_URL", "https://edict.example"),
        ],
    )
    .await;
    let mut browser = Browser::new(&app);
    let visitor = browser.get("/console/sign-in").await;
    assert!(
        visitor
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("edict_visitor=") && c.ends_with("; Secure")),
        "{:?}",
        visitor.set_cookies()
    );
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let first = browser.access_token().unwrap();
    let dashboard = browser.get("/").await;
    let csrf = dashboard.csrf();

    // Once the API refuses the access token, the console renews it from the refresh token.
    eventually(Duration::from_secs(10), || async {
        let (status, _) = app.get("/api/v1/users/me", &first).await;
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await
    .expect("the access token expires");
    let renewed = browser.get("/").await;
    assert_eq!(renewed.status, StatusCode::OK);
    assert!(
        renewed.body.contains("<h1>Dashboard</h1>"),
        "{}",
        renewed.body
    );
    let cookie = renewed
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("edict_session="))
        .expect("the renewed session's cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let second = browser.access_token().unwrap();
    assert_ne!(first, second);

    // The session is the same: a form rendered before the renewal still posts.
    let out = browser.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    let (status, _) = app.get("/api/v1/users/me", &second).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
