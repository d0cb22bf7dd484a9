//! The console's static assets, embedded in the binary: one stylesheet and one small script, served at
//! `/console/static/<name>` with their content type and a year-long cache. Pages link them with a
//! `?v=<digest>` of their content ([`href`]), so a new build is fetched at once despite the cache.

use poem::http::{HeaderValue, StatusCode, header};
use poem::web::Path;
use poem::{Response, Route, get, handler};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// Each asset: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("static/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/console.js"),
    ),
];

/// The digest of every asset together (12 hex digits), computed once.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hasher = Sha256::new();
    for (name, _, bytes) in ASSETS {
        hasher.update(name.as_bytes());
        hasher.update(bytes);
    }
    hex::encode(hasher.finalize())[..12].to_owned()
});

/// The URL of asset `name`, versioned by content.
pub fn href(name: &str) -> String {
    format!("/console/static/{name}?v={}", *VERSION)
}

/// The routes under `/console/static`.
pub fn routes() -> Route {
    Route::new().at("/:name", get(asset))
}

#[handler]
fn asset(Path(name): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .content_type("text/plain; charset=utf-8")
            .body("no such asset");
    };
    let mut response = Response::builder()
        .content_type(*content_type)
        .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
        .body(*bytes);
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
