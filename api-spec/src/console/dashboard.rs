//! The dashboard at `/`: convergence at a glance, change requests waiting, projection and relay lag.
//! A visitor who is not signed in gets the sign-in page there instead.

use super::layout::Layout;
use super::render::page;
use super::session::Visitor;
use askama::Template;
use askama_web::WebTemplate;
use poem::http::StatusCode;
use poem::{Response, handler};

/// The dashboard.
#[derive(Template, WebTemplate)]
#[template(path = "console/dashboard.html")]
pub struct DashboardPage {
    /// The frame.
    pub layout: Layout,
}

/// `GET /`: the dashboard, or the sign-in page.
#[handler]
pub async fn home(visitor: Visitor) -> Response {
    let Some(session) = &visitor.session else {
        return super::signin::sign_in_page(
            &visitor,
            "/".into(),
            String::new(),
            None,
            StatusCode::OK,
        );
    };
    page(
        DashboardPage {
            layout: Layout::new(session, "/"),
        },
        StatusCode::OK,
    )
}
