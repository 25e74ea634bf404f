//! The axum extractor for [`Session`], and error responses for [`Error`].

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::error::Error;
use crate::session::Session;

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Session>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "sessionkit: SessionLayer is missing from this route",
        ))
    }
}

impl IntoResponse for Error {
    /// Store trouble is 503; a stored value of an unexpected type or a lost race is 409;
    /// anything else 500.
    fn into_response(self) -> Response {
        let status = if self.is_unavailable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else if matches!(self, Error::Value { .. } | Error::Conflict) {
            StatusCode::CONFLICT
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        tracing::warn!(error = %self, "session error");
        (status, "session unavailable").into_response()
    }
}
