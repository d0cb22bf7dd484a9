//! The failures of the admin CLI that have their own exit status, and how a problem answer
//! (RFC 9457) reads on stderr.

use reqwest::StatusCode;
use serde_json::Value;

/// A failure with its own exit status (anything else exits 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No stored session for the server, and no `EDICT_TOKEN`.
    #[error(
        "not signed in{0}: run `edict login --server URL --email EMAIL` (or set EDICT_SERVER and \
         EDICT_TOKEN)"
    )]
    NotSignedIn(String),
    /// The token was refused and could not be refreshed.
    #[error("the session has expired or was ended: sign in again with `edict login`")]
    SessionExpired,
    /// The API answered a problem.
    #[error("{}", problem_text(*.status, .problem))]
    Api {
        /// The HTTP status.
        status: u16,
        /// The problem document (or whatever the body was).
        problem: Value,
    },
}

impl CliError {
    /// `body` when `status` is a success; the problem the API answered otherwise.
    ///
    /// # Errors
    /// [`CliError::Api`] when `status` is not a success.
    pub fn check(status: StatusCode, body: Value) -> anyhow::Result<Value> {
        if status.is_success() {
            Ok(body)
        } else {
            Err(CliError::Api {
                status: status.as_u16(),
                problem: body,
            }
            .into())
        }
    }

    /// The process's exit status for this failure (see [`super::EXIT_CODES`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotSignedIn(_) | CliError::SessionExpired => 3,
            CliError::Api { status, problem } => match *status {
                401 => 3,
                404 => 4,
                409 | 412 => 5,
                403 => 6,
                422 if problem["type"] == "urn:edict:problem:domain-rule" => 6,
                429 => 7,
                _ => 1,
            },
        }
    }
}

/// `title: detail (rule …)` of a problem, for stderr.
fn problem_text(status: u16, problem: &Value) -> String {
    let title = problem["title"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason().map(str::to_owned))
        })
        .unwrap_or_else(|| format!("HTTP {status}"));
    let mut text = format!("{title} ({status})");
    if let Some(detail) = problem["detail"].as_str() {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(rule) = problem["rule"].as_str() {
        text.push_str(&format!(" [rule {rule}]"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api(status: u16, problem: Value) -> CliError {
        CliError::Api { status, problem }
    }

    #[test]
    fn problems_map_to_their_exit_codes() {
        assert_eq!(CliError::SessionExpired.exit_code(), 3);
        assert_eq!(api(401, Value::Null).exit_code(), 3);
        assert_eq!(api(404, Value::Null).exit_code(), 4);
        assert_eq!(api(409, Value::Null).exit_code(), 5);
        assert_eq!(api(403, Value::Null).exit_code(), 6);
        let refused = json!({"type": "urn:edict:problem:domain-rule", "rule": "self_approval"});
        assert_eq!(api(422, refused).exit_code(), 6);
        let invalid = json!({"type": "urn:edict:problem:invalid-value"});
        assert_eq!(api(422, invalid).exit_code(), 1);
        assert_eq!(api(429, Value::Null).exit_code(), 7);
        assert_eq!(api(500, Value::Null).exit_code(), 1);
    }

    #[test]
    fn a_problem_reads_as_title_detail_and_rule() {
        let problem =
            json!({"title": "Unprocessable Entity", "detail": "no", "rule": "self_approval"});
        assert_eq!(
            api(422, problem).to_string(),
            "Unprocessable Entity (422): no [rule self_approval]"
        );
        assert_eq!(api(404, Value::Null).to_string(), "Not Found (404)");
    }
}
