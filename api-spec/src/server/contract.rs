//! What keeps the served API and its spec in agreement: the typed read-model [`documents`], the `Allow`
//! header of a 405 (the methods the spec lists for the path), and the test that walks the spec and
//! checks that every operation documents the statuses it can answer.

pub mod documents;
pub mod text;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use std::sync::OnceLock;

/// One path of the spec: its segments (`None` for a `{parameter}`) and its methods, uppercase.
struct SpecPath {
    segments: Vec<Option<String>>,
    methods: Vec<String>,
}

/// Every path of the spec, read once.
fn spec_paths() -> &'static [SpecPath] {
    static PATHS: OnceLock<Vec<SpecPath>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let spec: serde_json::Value = serde_json::from_str(&super::spec_json()).unwrap_or_default();
        let Some(paths) = spec["paths"].as_object() else {
            return Vec::new();
        };
        paths
            .iter()
            .map(|(path, operations)| SpecPath {
                segments: path
                    .split('/')
                    .map(|segment| (!segment.starts_with('{')).then(|| segment.to_owned()))
                    .collect(),
                methods: operations
                    .as_object()
                    .map(|ops| ops.keys().map(|m| m.to_uppercase()).collect())
                    .unwrap_or_default(),
            })
            .collect()
    })
}

/// The methods the spec lists for `path`, from the most specific template that matches it (literal
/// segments win over parameters, as the router matches); empty when no template matches.
fn allowed_methods(path: &str) -> Vec<String> {
    let segments: Vec<&str> = path.split('/').collect();
    spec_paths()
        .iter()
        .filter(|candidate| {
            candidate.segments.len() == segments.len()
                && candidate
                    .segments
                    .iter()
                    .zip(&segments)
                    .all(|(template, actual)| template.as_deref().is_none_or(|t| t == *actual))
        })
        .max_by_key(|candidate| candidate.segments.iter().filter(|s| s.is_some()).count())
        .map(|candidate| candidate.methods.clone())
        .unwrap_or_default()
}

/// Adds `Allow` (RFC 9110 §15.5.6) to a 405: the methods the route takes.
pub async fn allow_header<E: Endpoint>(next: E, request: Request) -> poem::Result<Response> {
    let path = request.uri().path().to_owned();
    let mut response = next.call(request).await?.into_response();
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::ALLOW)
    {
        let methods = allowed_methods(&path);
        if let Ok(value) = HeaderValue::from_str(&methods.join(", ")) {
            response.headers_mut().insert(header::ALLOW, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The operations whose handlers answer through a rate limit (`LimitedResult`, see `rate_limit.rs`).
    const RATE_LIMITED: [&str; 15] = [
        "POST /api/v1/auth/login",
        "POST /api/v1/agent/token",
        "POST /api/v1/auth/refresh",
        "POST /api/v1/device/code",
        "POST /api/v1/device/token",
        "POST /api/v1/agents/enroll",
        "GET /api/v1/events",
        "GET /api/v1/events/export",
        "GET /api/v1/rules/{id}/history",
        "GET /api/v1/teams/{id}/history",
        "GET /api/v1/change-requests/{id}/history",
        "GET /api/v1/users/{id}/history",
        "GET /api/v1/agents/{id}/history",
        "GET /api/v1/teams/{id}/ruleset",
        "GET /api/v1/agents/{id}/enforced",
    ];

    fn operations() -> Vec<(String, Value)> {
        let spec: Value = serde_json::from_str(&crate::server::spec_json()).unwrap();
        let mut operations = Vec::new();
        for (path, methods) in spec["paths"].as_object().unwrap() {
            for (method, operation) in methods.as_object().unwrap() {
                operations.push((
                    format!("{} {path}", method.to_uppercase()),
                    operation.clone(),
                ));
            }
        }
        operations
    }

    fn documents(operation: &Value, status: &str) -> bool {
        operation["responses"].get(status).is_some()
    }

    /// Whether a response documents header `name` (poem-openapi writes header names uppercase).
    fn has_header(response: &Value, name: &str) -> bool {
        response["headers"]
            .as_object()
            .is_some_and(|headers| headers.keys().any(|h| h.eq_ignore_ascii_case(name)))
    }

    #[test]
    fn every_operation_documents_the_statuses_it_can_answer() {
        let mut missing = Vec::new();
        for (name, operation) in operations() {
            let secured = operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            let takes_body = operation.get("requestBody").is_some();
            let mut expect = vec![];
            if secured {
                expect.push("401");
            }
            if takes_body {
                expect.extend(["400", "413", "415"]);
            }
            if RATE_LIMITED.contains(&name.as_str()) {
                expect.push("429");
            }
            if name.starts_with("GET /api/v1/") && !name.contains("export") {
                expect.push("503");
            }
            for status in expect {
                if !documents(&operation, status) {
                    missing.push(format!("{name}: {status}"));
                }
            }
            if let Some(limited) = operation["responses"].get("429") {
                assert!(
                    has_header(limited, "Retry-After"),
                    "{name}: 429 without Retry-After"
                );
            }
        }
        assert!(missing.is_empty(), "undocumented statuses: {missing:#?}");
    }

    #[test]
    fn every_single_resource_documents_its_etag_and_a_304() {
        let single = [
            "GET /api/v1/rules/{id}",
            "GET /api/v1/teams/{id}",
            "GET /api/v1/users/{id}",
            "GET /api/v1/users/me",
            "GET /api/v1/agents/{id}",
            "GET /api/v1/change-requests/{id}",
            "GET /api/v1/teams/{id}/ruleset",
        ];
        let operations = operations();
        for name in single {
            let (_, operation) = operations
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} is not in the spec"));
            for status in ["200", "304"] {
                assert!(
                    has_header(&operation["responses"][status], "ETag"),
                    "{name}: {status} without ETag"
                );
            }
            let takes_if_none_match = operation["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "If-None-Match"));
            assert!(takes_if_none_match, "{name}: If-None-Match undocumented");
        }
    }

    #[test]
    fn no_response_body_is_left_untyped() {
        let spec: Value = serde_json::from_str(&crate::server::spec_json()).unwrap();
        let schemas = &spec["components"]["schemas"];
        let mut untyped = Vec::new();
        for (name, operation) in operations() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                for (media, content) in response["content"].as_object().into_iter().flatten() {
                    let mut schema = &content["schema"];
                    if let Some(reference) = schema["$ref"].as_str() {
                        schema = &schemas[reference.rsplit('/').next().unwrap()];
                    }
                    let items = &schema["properties"]["items"]["items"];
                    let plain = media.starts_with("text/") || media.contains("ndjson");
                    if !plain
                        && (schema.as_object().is_none_or(|o| o.is_empty())
                            || items.as_object().is_some_and(|o| o.is_empty()))
                    {
                        untyped.push(format!("{name} {status} {media}"));
                    }
                }
            }
        }
        assert!(untyped.is_empty(), "untyped response bodies: {untyped:#?}");
    }

    #[test]
    fn allow_names_the_methods_of_the_most_specific_route() {
        assert_eq!(allowed_methods("/api/v1/users/me"), ["GET"]);
        let mut rule = allowed_methods("/api/v1/rules/0190");
        rule.sort();
        assert_eq!(rule, ["GET", "PUT"]);
        assert!(allowed_methods("/nowhere").is_empty());
    }
}
