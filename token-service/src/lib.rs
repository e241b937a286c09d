//! token-service: users sign in (`POST /token`) and get signed JWTs; the service publishes its
//! public keys (JWKS, discovery) and rotates them. `main` is a shell around [`startup::build`]; tests build the same app.

pub mod startup;

use auth_core::service::config::ServiceInfo;

/// Name, environment prefix (`TOKEN_SERVICE__…`) and default port (4000).
pub const INFO: ServiceInfo = ServiceInfo {
    name: "token-service",
    env_prefix: "TOKEN_SERVICE",
    default_port: 4000,
};

/// The local environment's `auth` defaults, for the service's own admin routes: it verifies the
/// tokens it issues, audience `token-service`.
pub fn local_auth() -> serde_json::Value {
    serde_json::json!({
        "issuer": "http://127.0.0.1:4000",
        "audience": ["token-service"],
        "public_key": "fixtures/keys/ec-public.pem",
    })
}
