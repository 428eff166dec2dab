//! How an endpoint says no: Consul answers an error with a status and a
//! plain-text reason, and these are the reasons every endpoint shares.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::acl::{ACL_DISABLED, ACL_NOT_FOUND, PERMISSION_DENIED};
use crate::server::Answer;

/// An API error: Consul answers with a status and a plain-text reason.
#[derive(Debug)]
pub struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// A failure of the agent itself (500).
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A method the endpoint does not take (405).
pub(crate) fn method_not_allowed() -> ApiError {
    ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
}

/// A request the caller must fix (400).
pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// An answer of the wrong kind: a bug between agent and server.
pub(crate) fn unexpected(a: Answer) -> ApiError {
    internal(format!("unexpected answer {a:?}"))
}

/// A refusal as Consul's HTTP API gives it: 403 for a denied permission
/// or an unknown token, 401 when ACLs are off.
pub(crate) fn refusal(why: String) -> ApiError {
    let status = if why == ACL_DISABLED {
        StatusCode::UNAUTHORIZED
    } else if why.starts_with(ACL_NOT_FOUND) || why.starts_with(PERMISSION_DENIED) {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    ApiError(status, why)
}
