//! The web console over HTTP, against the real `edict serve`: its session cookie, CSRF protection,
//! security headers, escaping, and that it enforces the same authorization as the API. (Browser tests
//! with Chromium live elsewhere.)
//!
//! Layout: this module holds [`Browser`], a cookie-keeping HTTP client that follows no redirect (with
//! the session's CSRF token for its forms and [`EventStream`] for the live pages' server-sent events),
//! and the users the tests sign in as; `session` tests signing in and out and the headers;
//! `dashboard` the dashboard; `rules` the rule library pages; `device` the device approval page;
//! `teams` the Teams and Fleet pages; `audit` the audit pages; `inbox` the change-request inbox and
//! the live stream.

mod audit;
mod dashboard;
mod device;
mod inbox;
mod rules;
mod session;
mod teams;

use crate::harness::TestApp;
use reqwest::header::{CONTENT_TYPE, HeaderMap, SET_COOKIE};
use reqwest::{Method, StatusCode};
use std::collections::BTreeMap;
use std::time::Duration;

/// The console's Content-Security-Policy, exactly.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' \
     data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A page as the browser got it.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// The CSRF token of the page's first form.
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no csrf field in the page: {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }

    /// The `Location` of a redirect.
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Every `Set-Cookie` line.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The header `name`.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A browser without script: keeps cookies, follows no redirect (tests look at each answer). A clone
/// carries the same cookies (for a probe that polls a page).
#[derive(Clone)]
pub struct Browser {
    base: String,
    client: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    /// The CSRF token of the session's forms, once [`Browser::signed_in`] read it ([`Browser::submit`]
    /// adds it).
    pub csrf: String,
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
        Browser {
            base: app.base.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            csrf: String::new(),
        }
    }

    /// A browser signed in as `email` through the sign-in page, holding the CSRF token of the
    /// session's forms (read from the home page).
    pub async fn signed_in(app: &TestApp, email: &str, password: &str) -> Browser {
        let mut browser = Browser::new(app);
        browser.sign_in(email, password).await;
        let home = browser.get("/").await;
        assert_eq!(home.status, StatusCode::OK, "{}", home.body);
        browser.csrf = home.csrf();
        browser
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Sends `request` with the cookies, keeps the ones it sets; answers the response unread.
    async fn respond(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let mut request = request;
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        let response = request.send().await.expect("send request");
        for line in response.headers().get_all(SET_COOKIE) {
            let line = line.to_str().unwrap_or_default();
            let pair = line.split(';').next().unwrap_or_default();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || line.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        response
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let response = self.respond(request).await;
        Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// A form post, with extra headers.
    pub async fn post_with(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self
            .client
            .request(Method::POST, format!("{}{path}", self.base))
            .form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// A form post as a browser sends it from a page of the console.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post_with(
            path,
            form,
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await
    }

    /// A form post with the session's CSRF token added, as the page's form sends it.
    pub async fn submit(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        assert!(
            !self.csrf.is_empty(),
            "no CSRF token: sign in with Browser::signed_in"
        );
        let csrf = self.csrf.clone();
        let mut form = fields.to_vec();
        form.push(("csrf", &csrf));
        self.post(path, &form).await
    }

    /// The body of the page at `path` once it answers 200 and contains `text` (read models catch up
    /// by themselves); panics after 20 s.
    pub async fn wait_for(&mut self, path: &str, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let page = self.get(path).await;
            if page.status == StatusCode::OK && page.body.contains(text) {
                return page.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never showed {text:?}: {} {}",
                page.status,
                page.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens the live pages' stream `/console/events?{query}`; panics unless it is a 200 event stream.
    pub async fn events(&mut self, query: &str) -> EventStream {
        let request = self
            .client
            .get(format!("{}/console/events?{query}", self.base));
        let response = self.respond(request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
        EventStream {
            response,
            seen: String::new(),
        }
    }

    /// Signs in through the sign-in page; panics unless it redirects on.
    pub async fn sign_in(&mut self, email: &str, password: &str) {
        let form = self.get("/console/sign-in").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let csrf = form.csrf();
        let signed_in = self
            .post(
                "/console/sign-in",
                &[
                    ("csrf", &csrf),
                    ("email", email),
                    ("password", password),
                    ("next", "/"),
                ],
            )
            .await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "sign in as {email}: {}",
            signed_in.body
        );
    }

    /// The access token in the session cookie (to check the session against the API).
    pub fn access_token(&self) -> Option<String> {
        self.cookies
            .get("edict_session")
            .and_then(|v| v.split_once('~'))
            .map(|(access, _)| access.to_owned())
    }
}

/// A server-sent events stream of the console, read event by event.
pub struct EventStream {
    response: reqwest::Response,
    /// What was read past the last event answered.
    seen: String,
}

impl EventStream {
    /// The data of the next `version` event; panics unless one comes within 20 s.
    pub async fn next_version(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                while let Some(end) = self.seen.find("\n\n") {
                    let event: String = self.seen.drain(..end + 2).collect();
                    if event.contains("event: version\n") {
                        let data = event.lines().find_map(|l| l.strip_prefix("data: "));
                        return data.expect("a version's data").to_owned();
                    }
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream goes on");
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("a version event within 20 s")
    }
}

/// Creates a user with `roles` and signs them in to the console; answers their id, API token and
/// browser.
pub async fn signed_in_person(
    app: &TestApp,
    admin: &str,
    name: &str,
    roles: &[&str],
) -> (String, String, Browser) {
    let (id, email, password) = app.account(admin, name, roles).await;
    let token = app.login(&email, &password).await;
    let browser = Browser::signed_in(app, &email, &password).await;
    (id, token, browser)
}
