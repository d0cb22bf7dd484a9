//! Answering as the console: a page (a template with a status), a redirect after a form (303), and a
//! failure of a use case as a page saying what went wrong (403, 404, 409, 422, 503), never a raw error.

use super::layout::Layout;
use super::session::Visitor;
use askama::Template;
use askama_web::WebTemplate;
use edict_application::error::AppError;
use poem::http::{StatusCode, header};
use poem::{IntoResponse, Request, Response};

/// `template` rendered, answered with `status`.
pub fn page<T: IntoResponse>(template: T, status: StatusCode) -> Response {
    template.with_status(status).into_response()
}

/// A `303 See Other` to `location` (where a form's post sends the browser back).
pub fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .finish()
}

/// The redirect to the sign-in page, which comes back to the page `request` asked for (a GET's own
/// URL; after a POST, the page it came from is unknown: the dashboard).
pub fn to_sign_in(request: &Request) -> Response {
    let back = if request.method() == poem::http::Method::GET {
        request
            .original_uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned()
    } else {
        "/".to_owned()
    };
    let query = serde_urlencoded::to_string([("next", back.as_str())]).unwrap_or_default();
    see_other(&format!("/console/sign-in?{query}"))
}

/// Where to go after signing in: `next` when it is a path of this site, else the dashboard.
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(next) if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') => {
            next.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The page of a failure.
#[derive(Template, WebTemplate)]
#[template(path = "console/error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    heading: String,
    message: String,
}

/// A use case's refusal or failure, answered as a page inside the layout.
pub struct Failure(Box<(Layout, AppError)>);

impl Failure {
    /// The failure of `error` within `layout`.
    pub fn new(layout: Layout, error: AppError) -> Failure {
        Failure(Box::new((layout, error)))
    }
}

/// The status and heading of an error, and what the page says of it.
pub fn describe(error: &AppError) -> (StatusCode, &'static str, String) {
    match error {
        AppError::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "Signed out",
            "Your session ended; sign in again.".into(),
        ),
        AppError::Forbidden(why) => (
            StatusCode::FORBIDDEN,
            "Not allowed",
            format!("Your role does not allow this ({why})."),
        ),
        AppError::NotFound(what) => (
            StatusCode::NOT_FOUND,
            "Not found",
            format!("There is no such {what}."),
        ),
        AppError::Conflict { current } => (
            StatusCode::CONFLICT,
            "Changed meanwhile",
            format!(
                "Someone changed this while you looked at it (it is at version {current} now); \
                 reload and try again."
            ),
        ),
        AppError::Rule { message, .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "Refused", message.clone())
        }
        AppError::Invalid { field, message } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not valid",
            format!("{field}: {message}"),
        ),
        AppError::BadParameter { parameter, message } => (
            StatusCode::BAD_REQUEST,
            "Not valid",
            format!("{parameter}: {message}"),
        ),
        AppError::NotYetConsistent { .. } | AppError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Edict cannot answer this now; try again in a moment.".into(),
        ),
        AppError::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The server's log has the details.".into(),
        ),
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (layout, error) = *self.0;
        if let AppError::Internal(detail) = &error {
            tracing::error!(%detail, "console page failed");
        }
        let (status, heading, message) = describe(&error);
        page(
            ErrorPage {
                layout,
                status: status.as_u16(),
                heading: heading.into(),
                message,
            },
            status,
        )
    }
}

impl From<Failure> for poem::Error {
    fn from(failure: Failure) -> Self {
        poem::Error::from_response(failure.into_response())
    }
}

/// The 403 of a state-changing request without the right CSRF token: nothing was changed.
pub(super) fn forbidden_form(visitor: &Visitor) -> Response {
    page(
        ErrorPage {
            layout: Layout::for_visitor(visitor, ""),
            status: 403,
            heading: "Form refused".into(),
            message: "This form was not sent from a page of this console for your session, so \
                      nothing was changed. Go back, reload the page and send it again."
                .into(),
        },
        StatusCode::FORBIDDEN,
    )
}

/// A time as pages show it: `2026-12-06 03:30 UTC`.
pub fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// What a form's redirect says happened (`?done=`), read by the page it lands on.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Done {
    #[serde(default)]
    done: String,
}

impl Done {
    /// The notice `notices` gives for what happened (`None` for nothing, or an unknown word).
    pub fn notice(&self, notices: &[(&str, &'static str)]) -> Option<&'static str> {
        notices
            .iter()
            .find(|(done, _)| *done == self.done)
            .map(|(_, notice)| *notice)
    }
}
