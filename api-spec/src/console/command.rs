//! A command a page's form posts: [`Posted`] (who posts it, to which page, with what) and its
//! answer ([`Posted::answer`]: back to the page saying what was done, or the refusal).

use super::layout::Layout;
use super::render::{Failure, describe, page, see_other};
use super::session::Session;
use edict_application::Edict;
use edict_application::error::AppError;
use edict_application::principal::Principal;
use edict_application::service::RequestContext;
use poem::error::ParsePathError;
use poem::web::{Data, Form};
use poem::{FromRequest, IntoResponse, Request, RequestBody, Response};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The request context of a console command: the API's, with the version the page showed as
/// `If-Match`.
pub fn context(request: &Request, version: Option<u64>) -> RequestContext {
    let mut context = crate::server::common::context(request).unwrap_or_else(|_| RequestContext {
        request_id: String::new(),
        correlation_id: None,
        expected_version: None,
        traceparent: None,
    });
    context.expected_version = version;
    context
}

/// A form `F` posted to `/console/{section}/{id}/…` by a signed-in session.
pub struct Posted<'a, F> {
    /// The application.
    pub edict: &'a Edict,
    /// Who posts it.
    pub session: Session,
    /// The page's `id` (as the path has it).
    pub id: String,
    /// The form.
    pub form: F,
    request: &'a Request,
}

impl<F> Posted<'_, F> {
    /// The principal who posts it.
    pub fn by(&self) -> &Principal {
        &self.session.principal
    }

    /// Another segment of the path (`user`, `rule`); empty when the route has none.
    pub fn segment(&self, name: &str) -> &str {
        self.request.raw_path_param(name).unwrap_or_default()
    }

    /// The command's context, with `version` (the one the page showed) as `If-Match`.
    pub fn context(&self, version: Option<u64>) -> RequestContext {
        context(self.request, version)
    }

    /// Answers a command's outcome: a 303 back to `{section}/{id}?done={done}`; a refusal that is a 403
    /// or a 404 as a page of its own; any other as the page `again` renders with the reason.
    pub async fn answer<T: IntoResponse, O>(
        &self,
        section: &str,
        outcome: Result<O, AppError>,
        done: &str,
        again: impl AsyncFnOnce(String) -> Result<T, Failure>,
    ) -> poem::Result<Response> {
        match outcome {
            Ok(_) => Ok(see_other(&format!("{section}/{}?done={done}", self.id))),
            Err(error @ (AppError::Forbidden(_) | AppError::NotFound(_))) => {
                Err(Failure::new(Layout::new(&self.session, section), error).into())
            }
            Err(error) => {
                let (status, _, message) = describe(&error);
                Ok(page(again(message).await?, status))
            }
        }
    }
}

impl<'a, F: DeserializeOwned> FromRequest<'a> for Posted<'a, F> {
    async fn from_request(request: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        let Data(edict) = Data::<&'a Arc<Edict>>::from_request(request, body).await?;
        let session = Session::from_request(request, body).await?;
        let id = request.raw_path_param("id").ok_or(ParsePathError)?;
        let Form(form) = Form::<F>::from_request(request, body).await?;
        Ok(Posted {
            edict,
            session,
            id: id.to_owned(),
            form,
            request,
        })
    }
}
