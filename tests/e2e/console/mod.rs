//! The web console over HTTP, against the real `edict serve`: its session cookie, CSRF protection,
//! security headers, escaping, and that it enforces the same authorization as the API. (Browser tests
//! with Chromium live elsewhere.)
//!
//! Layout: this module holds [`Browser`], a cookie-keeping HTTP client that follows no redirect, and
//! the users the tests sign in as; `session` tests signing in and out and the headers; `dashboard` the dashboard; `rules` the
//! rule library pages; `device` the device approval page.

mod dashboard;
mod device;
mod rules;
mod session;

use crate::harness::TestApp;
use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::collections::BTreeMap;

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

/// A browser without script: keeps cookies, follows no redirect (tests look at each answer).
pub struct Browser {
    base: String,
    client: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
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
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let mut request = request;
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        let response = request.send().await.expect("send request");
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        };
        for line in page.set_cookies() {
            let pair = line.split(';').next().unwrap_or_default();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || line.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        page
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

    /// Signs in through the sign-in page; panics unless it redirects on.
    pub async fn sign_in(&mut self, email: &str, password: &str) {
        let form = self.get("/console/sign-in").await;
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

/// Creates a user with `roles` through the API; answers their (id, email, password).
pub async fn person(
    app: &TestApp,
    admin: &str,
    name: &str,
    roles: &[&str],
) -> (String, String, String) {
    let email = format!(
        "{name}-{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let password = format!("{name}-password-123");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(admin),
            Some(json!({"email": email, "name": name, "password": password, "roles": roles})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "create user {name}: {body}");
    (body["id"].as_str().unwrap().to_owned(), email, password)
}
