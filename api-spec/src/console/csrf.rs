//! Cross-site request forgery: every state-changing request to the console must carry a token only
//! a page the console rendered for this session knows.
//!
//! The token is an HMAC-SHA-256, under a fixed label, of the session's id (stable across renewals of
//! its access token, so a form opened before a renewal still posts) or, before sign-in, of the
//! visitor cookie. It travels as the hidden form field `csrf` (or the `X-CSRF-Token` header of the
//! preview's fetch). The cookies it derives from are `HttpOnly` and `SameSite=Strict`, so another
//! site can neither read them nor make the browser send them. `Origin` and `Sec-Fetch-Site`, when the
//! browser sends them, must also say the request comes from this site. A request failing any of this
//! is refused (403) before its handler runs.

use super::session::Visitor;
use crate::server::PublicUrl;
use hmac::{Hmac, Mac};
use poem::Request;
use poem::http::header;
use sha2::Sha256;

/// The key of the HMAC: a fixed label (the secret is the cookie it is computed over).
const LABEL: &[u8] = b"edict console csrf v1";
/// The form field that carries the token.
pub const FIELD: &str = "csrf";
/// The header that carries it for a script's fetch.
pub const HEADER: &str = "x-csrf-token";

/// The token of `value` (a session id or a visitor cookie), `kind` naming which.
pub fn token(kind: &str, value: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(LABEL) else {
        // HMAC takes a key of any length.
        return String::new();
    };
    mac.update(kind.as_bytes());
    mac.update(b":");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a state-changing `request` may go on: same-site, and carrying `visitor`'s token. Reads
/// the body to find the form field, then puts it back for the handler.
pub(super) async fn check(request: &mut Request, visitor: &Visitor) -> bool {
    if !same_site(request) || visitor.csrf.is_empty() {
        return false;
    }
    if let Some(presented) = request.headers().get(HEADER).and_then(|v| v.to_str().ok()) {
        return equal(presented.as_bytes(), visitor.csrf.as_bytes());
    }
    let Ok(body) = request.take_body().into_bytes().await else {
        return false;
    };
    let presented = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|fields| {
            fields
                .into_iter()
                .find(|(name, _)| name == FIELD)
                .map(|(_, value)| value)
        });
    request.set_body(body);
    presented.is_some_and(|p| equal(p.as_bytes(), visitor.csrf.as_bytes()))
}

/// `Sec-Fetch-Site` and `Origin`, when present, say the request comes from this site.
fn same_site(request: &Request) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    // The public URL the server is known by (a proxy in front may rewrite `Host`).
    if request
        .data::<PublicUrl>()
        .is_some_and(|url| url.0.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, host)| host);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Compares in time independent of where the two differ.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_by_session_and_kind() {
        assert_eq!(token("session", "a"), token("session", "a"));
        assert_ne!(token("session", "a"), token("session", "b"));
        assert_ne!(token("session", "a"), token("visitor", "a"));
        assert_eq!(token("session", "a").len(), 64);
    }

    #[test]
    fn comparison_needs_the_same_bytes() {
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd"));
        assert!(!equal(b"abc", b"ab"));
    }
}
