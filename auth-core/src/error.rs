//! Errors as callers see them: RFC 6750 for authentication, one JSON body shape for everything,
//! and the one rejection handler every service uses.
//!
//! | situation | status | `error` | `WWW-Authenticate` |
//! |---|---|---|---|
//! | no token | 401 | `missing_token` | `Bearer realm="<service>"` |
//! | malformed, bad signature, expired, not yet valid, wrong iss/aud/typ, unknown kid | 401 | `invalid_token` | `Bearer realm, error="invalid_token", error_description` |
//! | valid token lacking a role, scope or access | 403 | `insufficient_scope` | `Bearer realm, error="insufficient_scope"` |
//! | no verification key can be had | 503 | `temporarily_unavailable` | — (`Retry-After` instead) |
//!
//! The body is always `{"status": 401, "error": "invalid_token", "message": "token expired"}`.

use std::convert::Infallible;

use http::StatusCode;
use serde::Serialize;
use warp::reject::Rejection;
use warp::reply::{Reply, Response};

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The HTTP status, repeated for clients that only see the body (seed 002).
    pub status: u16,
    /// A stable machine-readable code.
    pub error: &'a str,
    /// A message for the human reading it; leaks nothing about keys or internals.
    pub message: &'a str,
}

/// A JSON error response with `status`, a stable `code` and a `message`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        status: status.as_u16(),
        error: code,
        message,
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// An application error a handler or filter rejects with; [`handle_rejection`] renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine code (`invalid_request`, `not_found`, …).
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `Retry-After` seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 503 `temporarily_unavailable` with a `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                message,
            )
        }
    }
    /// 500 `internal_error`: a real server fault, logged by the caller, opaque to the client.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error",
        )
    }
    /// Sets `Retry-After`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl warp::reject::Reject for ApiError {}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let mut res = error_response(self.status, self.code, &self.message);
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        res
    }
}

/// Turns every rejection into a JSON error body. Every service ends its routes with
/// `.recover(auth_core::error::handle_rejection)`.
pub async fn handle_rejection(err: Rejection) -> Result<Response, Infallible> {
    Ok(rejection_response(&err))
}

/// The response for a rejection (see [`handle_rejection`]).
pub fn rejection_response(err: &Rejection) -> Response {
    if let Some(e) = err.find::<crate::AuthError>() {
        return e.to_response();
    }
    if let Some(e) = err.find::<ApiError>() {
        return e.clone().into_response();
    }
    if err.is_not_found() {
        return error_response(StatusCode::NOT_FOUND, "not_found", "no such route");
    }
    if let Some(refused) = err.find::<warp::filters::cors::CorsForbidden>() {
        // What was refused: the origin, the method or a header the preflight asked for.
        return error_response(
            StatusCode::FORBIDDEN,
            "cors_forbidden",
            &refused.to_string(),
        );
    }
    if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body too large",
        );
    }
    if err.find::<warp::reject::UnsupportedMediaType>().is_some() {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "unsupported content type",
        );
    }
    if let Some(e) = err.find::<warp::filters::body::BodyDeserializeError>() {
        let msg = format!("invalid body: {}", body_error_message(e));
        return error_response(StatusCode::BAD_REQUEST, "invalid_request", &msg);
    }
    if let Some(e) = err.find::<warp::reject::InvalidQuery>() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("invalid query string: {e}"),
        );
    }
    if err.find::<warp::reject::LengthRequired>().is_some() {
        return error_response(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "content-length required",
        );
    }
    if let Some(e) = err.find::<warp::reject::InvalidHeader>() {
        return error_response(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string());
    }
    if let Some(e) = err.find::<warp::reject::MissingHeader>() {
        return error_response(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string());
    }
    // Last of the 4xx, as warp ranks them: a rejection holds every route's, and a 405 from a
    // sibling route (GET /todos) must not hide why the route that took the method refused the
    // request (a header it cannot read on POST /todos).
    if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        );
    }
    tracing::error!(rejection = ?err, "unhandled rejection");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal server error",
    )
}

/// serde's message without the value it quotes: `invalid type: integer `5`, expected a string`
/// becomes `invalid type: integer, expected a string` (likewise `invalid value: …` and
/// `unknown variant …`). The field may be a password sent with the wrong type, and an error
/// body travels through proxies, gateways and tools that log it. Field names stay.
pub fn without_value(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: ", "unknown variant "] {
        if let Some(rest) = message.strip_prefix(lead)
            && let Some(at) = rest.rfind(", expected ")
        {
            // What serde calls the value's kind comes before its quoted text, if any.
            let kind = rest[..at].split(['`', '"']).next().unwrap_or("").trim_end();
            let lead = lead.trim_end();
            let sep = if kind.is_empty() { "" } else { " " };
            return format!("{lead}{sep}{kind}{}", &rest[at..]);
        }
    }
    message.to_owned()
}

/// serde's message names the field (`unknown field `owner``, `invalid type: … at line 1 column 9`);
/// keep it short and free of the input.
fn body_error_message(e: &warp::filters::body::BodyDeserializeError) -> String {
    use std::error::Error as _;
    let inner = e
        .source()
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.to_string());
    let inner = without_value(&inner);
    inner.chars().take(300).collect()
}
