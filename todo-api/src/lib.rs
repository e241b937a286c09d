//! todo-api: a team todo list behind JWKS verification, with verification-off mode for
//! engineers (seed 000). `main` is a shell around [`startup::build`]; tests build the same app.

pub mod startup;
pub mod todos;

use auth_core::service::config::ServiceInfo;

/// Name, environment prefix (`TODO_API__…`) and default port (3000).
pub const INFO: ServiceInfo = ServiceInfo {
    name: "todo-api",
    env_prefix: "TODO_API",
    default_port: 3000,
};

/// The local environment's `auth` defaults: token-service on 127.0.0.1:4000, audience `todo-api`.
pub fn local_auth() -> serde_json::Value {
    serde_json::json!({
        "issuer": "http://127.0.0.1:4000",
        "audience": ["todo-api"],
        "jwks_url": "http://127.0.0.1:4000/.well-known/jwks.json",
    })
}
