//! Token verification (placeholder until the verification issue lands: see ARCHITECTURE.md).

use http::StatusCode;
use warp::reply::Response;

use crate::settings::AuthSettings;

/// Why a request was not authenticated or authorised.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("missing token")]
    Missing,
    /// No verification key can be had.
    #[error("verification keys unavailable")]
    Unavailable,
}

impl warp::reject::Reject for AuthError {}

impl AuthError {
    /// The RFC 6750 response.
    pub fn to_response(&self) -> Response {
        match self {
            AuthError::Missing => crate::error::error_response(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "missing token",
            ),
            AuthError::Unavailable => crate::error::error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "verification keys unavailable",
            ),
        }
    }
}

/// Why an [`Auth`] could not be built from its settings.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SetupError {
    /// The config key at fault (`auth.public_key`).
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// A configured verifier, cheap to clone and shared by every request.
#[derive(Debug, Clone)]
pub struct Auth {
    realm: String,
}

impl Auth {
    /// Builds the verifier a service's `auth` settings describe.
    pub fn new(_settings: &AuthSettings, realm: &str) -> Result<Self, SetupError> {
        Ok(Self {
            realm: realm.to_owned(),
        })
    }
    /// The realm of `WWW-Authenticate`.
    pub fn realm(&self) -> &str {
        &self.realm
    }
    /// Whether verification keys are loaded (for `/ready`).
    pub fn is_ready(&self) -> bool {
        true
    }
}
