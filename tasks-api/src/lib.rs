//! tasks-api: personal tasks with owner checks (seed 002): a user sees and changes only their
//! own. `main` is a shell around [`startup::build`]; tests build the same app.

pub mod startup;
pub mod tasks;

use auth_core::service::config::ServiceInfo;

/// Name, environment prefix (`TASKS_API__…`) and default port (3001).
pub const INFO: ServiceInfo = ServiceInfo {
    name: "tasks-api",
    env_prefix: "TASKS_API",
    default_port: 3001,
};

/// The local environment's `auth` defaults: token-service on 127.0.0.1:4000, audience `tasks-api`.
pub fn local_auth() -> serde_json::Value {
    serde_json::json!({
        "issuer": "http://127.0.0.1:4000",
        "audience": ["tasks-api"],
        "jwks_url": "http://127.0.0.1:4000/.well-known/jwks.json",
    })
}
