//! token-service: users sign in (`POST /token`) and get signed JWTs; the service publishes its
//! public keys (JWKS, discovery) and rotates them. `main` is a shell around [`cli::run`]; tests
//! build the same app with [`startup::build`].

pub mod keys;
pub mod settings;
pub mod startup;

use auth_core::service::config::ServiceInfo;

/// Name, environment prefix (`TOKEN_SERVICE__…`) and default port (4000).
pub const INFO: ServiceInfo = ServiceInfo {
    name: "token-service",
    env_prefix: "TOKEN_SERVICE",
    default_port: 4000,
};
