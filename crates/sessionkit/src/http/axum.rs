//! The axum extractor for [`Session`], and error responses for [`Error`].

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::error::Error;
use crate::session::Session;

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = (StatusCode, String);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Session>().cloned().ok_or_else(|| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                super::missing_layer("SessionLayer"),
            )
        })
    }
}

impl IntoResponse for Error {
    /// Store trouble is 503; a stored value of an unexpected type or a lost race is 409;
    /// anything else 500.
    fn into_response(self) -> Response {
        (super::report_error(&self), super::ERROR_BODY).into_response()
    }
}
