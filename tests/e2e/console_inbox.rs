//! The console's change-request inbox and live pages over HTTP, against a real server: who sees the
//! inbox and a change request's page, which decisions each role is offered, that a forced or
//! forged POST is refused (403) and changes nothing, that the developer's text is escaped, the
//! decisions one to one with the API's, and that `/console/events` sends a new version when what the
//! inbox shows changed.

use crate::harness::{self, ADMIN_EMAIL, ADMIN_PASSWORD, Store, TestApp, eventually, rule_spec};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::time::Duration;

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A person signed in to the console: the session cookie and the CSRF token of their forms.
struct Person {
    client: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

/// The value of the first `name="csrf"` field of `page`.
fn csrf_of(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

/// `name=value` of each `Set-Cookie` of `response`.
fn cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect()
}

impl Person {
    async fn sign_in(app: &TestApp, email: &str, password: &str) -> Person {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let form = client
            .get(format!("{}/console/sign-in", app.base))
            .send()
            .await
            .unwrap();
        let visitor = cookies(&form).join("; ");
        let csrf = csrf_of(&form.text().await.unwrap());
        let signed = client
            .post(format!("{}/console/sign-in", app.base))
            .header(header::COOKIE, &visitor)
            .form(&[("email", email), ("password", password), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status(), StatusCode::SEE_OTHER, "sign in as {email}");
        let cookie = cookies(&signed)
            .into_iter()
            .find(|c| c.starts_with("edict_session="))
            .expect("a session cookie");
        let mut person = Person {
            client,
            base: app.base.clone(),
            cookie,
            csrf: String::new(),
        };
        let (status, home) = person.get("/").await;
        assert_eq!(status, StatusCode::OK);
        person.csrf = csrf_of(&home);
        person
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Posts `fields` with the person's CSRF token (`with_csrf`) or without it.
    async fn post(&self, path: &str, fields: &[(&str, &str)], with_csrf: bool) -> StatusCode {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        if with_csrf {
            form.push(("csrf", &self.csrf));
        }
        self.client
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn events(&self, query: &str) -> reqwest::Response {
        let response = self
            .client
            .get(format!("{}/console/events?{query}", self.base))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        response
    }
}

/// The data of the next `version` event on `stream` (`seen` keeps what was read past it).
async fn next_version(stream: &mut reqwest::Response, seen: &mut String) -> String {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            while let Some(end) = seen.find("\n\n") {
                let event: String = seen.drain(..end + 2).collect();
                if event.contains("event: version\n") {
                    let data = event.lines().find_map(|l| l.strip_prefix("data: "));
                    return data.expect("a version's data").to_owned();
                }
            }
            let chunk = stream.chunk().await.unwrap().expect("the stream goes on");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("a version event within 20 s")
}

async fn user(app: &TestApp, admin: &str, name: &str, roles: &[&str]) -> (String, String) {
    let email = format!("{name}@example.com");
    let body = json!({"email": email, "name": name, "password": "a-password-123", "roles": roles});
    let created = app.ok("/api/v1/users", admin, body).await;
    (created["id"].as_str().unwrap().to_owned(), email)
}

async fn change_status(app: &TestApp, admin: &str, change: &str) -> Value {
    let path = format!("/api/v1/change-requests/{change}");
    app.call(Method::GET, &path, Some(admin), None).await.1["status"].clone()
}

#[tokio::test]
async fn console_inbox_decides_change_requests_and_streams_changes() {
    let app = TestApp::spawn(Store::Sqlite).await;
    let admin = app.admin().await;
    let (_, second) = app.user(&admin, "second", &["org_admin"]).await;
    let (lead_id, lead_email) = user(&app, &admin, "lead", &["member"]).await;
    let (dev_id, dev_email) = user(&app, &admin, "dev", &["member"]).await;
    let (_, auditor_email) = user(&app, &admin, "auditor", &["auditor"]).await;
    let team = harness::team_with_member(&app, &admin, "Platform <team>", &dev_id).await;
    app.ok(
        &format!("/api/v1/teams/{team}/members"),
        &admin,
        json!({"user_id": lead_id, "role": "team_admin"}),
    )
    .await;
    let mut spec = rule_spec("Reviewed <rule>", "team");
    spec["content"] = json!("Always review <b>twice</b>.");
    let rule = harness::approve(&app, &admin, &second, spec).await;
    let temporary = json!({"mode": "temporary", "temporary_timeout_secs": 3600});
    harness::attach_with(&app, &admin, &team, &rule, temporary).await;
    let dev = app.login(&dev_email, "a-password-123").await;
    let agent = app
        .ok(
            "/api/v1/agents",
            &dev,
            json!({"machine_id": "laptop-7", "machine_name": "Dev laptop"}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let report = |report: &str, file: &str| {
        json!({
            "team_id": team, "rule_id": rule, "file": file, "layer": "team",
            "original_hash": HASH_A, "new_hash": HASH_B,
            "diff": "@@ -1 +1 @@\n-Always review twice.\n+<script>alert(1)</script>\n", "report_id": report,
        })
    };
    let change = app
        .ok(
            "/api/v1/change-requests",
            &agent,
            report("r-1", "/home/dev/CLAUDE.md"),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The team_admin's inbox lists it once the inbox read model has it, filtered by team and status.
    let lead = Person::sign_in(&app, &lead_email, "a-password-123").await;
    let inbox = format!("/console/change-requests?team={team}&status=pending");
    let listed = eventually(Duration::from_secs(10), || async {
        let (status, page) = lead.get(&inbox).await;
        assert_eq!(status, StatusCode::OK);
        page.contains(&change).then_some(page)
    })
    .await
    .expect("the inbox lists the change request");
    assert!(listed.contains("/home/dev/CLAUDE.md"), "{listed}");
    assert!(listed.contains("Platform &#60;team&#62;"), "{listed}");
    assert!(listed.contains(r#"data-live="inbox""#), "{listed}");
    assert!(
        listed.contains(r#"href="/console/change-requests""#),
        "nav entry"
    );
    let (_, approved_only) = lead
        .get(&format!(
            "/console/change-requests?team={team}&status=approved"
        ))
        .await;
    assert!(!approved_only.contains(&change), "{approved_only}");

    // Its page: the developer's diff (escaped), the rule in force, who, where; the decisions.
    let page_path = format!("/console/change-requests/{change}");
    let (status, page) = lead.get(&page_path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "the diff is escaped");
    assert!(
        page.contains("Always review &#60;b&#62;twice&#60;/b&#62;."),
        "{page}"
    );
    assert!(page.contains("Reviewed &#60;rule&#62;"), "{page}");
    assert!(page.contains(&format!("{change}/approve")), "{page}");
    assert!(page.contains(&format!("{change}/reject")), "{page}");

    // An auditor reads it but is offered no decision, and a forced one is refused.
    let auditor = Person::sign_in(&app, &auditor_email, "a-password-123").await;
    let (status, seen) = auditor.get(&page_path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!seen.contains(&format!("{change}/approve")), "{seen}");
    let forced = auditor
        .post(&format!("{page_path}/approve"), &[("version", "1")], true)
        .await;
    assert_eq!(forced, StatusCode::FORBIDDEN);
    // The developer is offered to withdraw, not to decide; a decision forced by them is refused.
    let developer = Person::sign_in(&app, &dev_email, "a-password-123").await;
    let (_, own) = developer.get(&page_path).await;
    assert!(own.contains(&format!("{change}/withdraw")), "{own}");
    assert!(!own.contains(&format!("{change}/approve")), "{own}");
    let forced = developer
        .post(&format!("{page_path}/approve"), &[], true)
        .await;
    assert_eq!(forced, StatusCode::FORBIDDEN);
    // A POST without the CSRF token is refused before anything happens.
    let forged = lead.post(&format!("{page_path}/approve"), &[], false).await;
    assert_eq!(forged, StatusCode::FORBIDDEN);
    assert_eq!(change_status(&app, &admin, &change).await, "pending");

    // The live stream of the inbox: its first version, then a new one once the inbox changed.
    let mut stream = lead
        .events(&format!("topic=inbox&team={team}&status=pending"))
        .await;
    let mut seen = String::new();
    let first = next_version(&mut stream, &mut seen).await;
    let rendered = listed
        .split(r#"data-live-version=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    assert_eq!(first, rendered, "the page carries the version it shows");
    let second_change = app
        .ok(
            "/api/v1/change-requests",
            &agent,
            report("r-2", "/home/dev/project/CLAUDE.md"),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let changed = next_version(&mut stream, &mut seen).await;
    assert_ne!(changed, first, "a new change request is a new version");
    let (_, refreshed) = lead.get(&inbox).await;
    assert!(refreshed.contains(&second_change), "{refreshed}");

    // Reject with a reason; the developer asks for an exception; the team_admin grants it.
    let rejected = lead
        .post(
            &format!("{page_path}/reject"),
            &[("reason", "keep the <team> rule")],
            true,
        )
        .await;
    assert_eq!(rejected, StatusCode::SEE_OTHER);
    let after_reject = next_version(&mut stream, &mut seen).await;
    assert_ne!(
        after_reject, changed,
        "a decided change leaves the pending inbox"
    );
    let (_, decided) = developer.get(&page_path).await;
    assert!(
        decided.contains("keep the &#60;team&#62; rule"),
        "{decided}"
    );
    assert!(
        decided.contains(&format!("{change}/exception")),
        "{decided}"
    );
    // A time-limited exception needs its end: the page says so and keeps the justification.
    let status = developer
        .post(
            &format!("{page_path}/exception"),
            &[("reason", "we pair instead"), ("kind", "time_limited")],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let asked = developer
        .post(
            &format!("{page_path}/exception"),
            &[("reason", "we pair instead"), ("kind", "permanent")],
            true,
        )
        .await;
    assert_eq!(asked, StatusCode::SEE_OTHER);
    assert_eq!(
        change_status(&app, &admin, &change).await,
        "exception_requested"
    );
    let (_, to_resolve) = lead.get(&page_path).await;
    assert!(to_resolve.contains("exception/grant"), "{to_resolve}");
    assert!(to_resolve.contains("we pair instead"), "{to_resolve}");
    let granted = lead
        .post(
            &format!("{page_path}/exception/grant"),
            &[("until", "")],
            true,
        )
        .await;
    assert_eq!(granted, StatusCode::SEE_OTHER);
    assert_eq!(
        change_status(&app, &admin, &change).await,
        "exception_granted"
    );

    // The developer withdraws the second one.
    let withdrawn = developer
        .post(
            &format!("/console/change-requests/{second_change}/withdraw"),
            &[],
            true,
        )
        .await;
    assert_eq!(withdrawn, StatusCode::SEE_OTHER);
    assert_eq!(
        change_status(&app, &admin, &second_change).await,
        "withdrawn"
    );

    // The dashboard is a live page too; a stream for it starts with its version.
    let admin_person = Person::sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (_, dashboard) = admin_person.get("/").await;
    assert!(
        dashboard.contains(r#"data-live="dashboard""#),
        "{dashboard}"
    );
    let mut stream = admin_person.events("topic=dashboard").await;
    let mut seen = String::new();
    assert_eq!(next_version(&mut stream, &mut seen).await.len(), 16);
    // An unknown topic is a 400; a visitor without a session is sent to sign in.
    let (status, _) = admin_person.get("/console/events?topic=nothing").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let visitor = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/console/events?topic=inbox", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(visitor.status(), StatusCode::SEE_OTHER);
}
