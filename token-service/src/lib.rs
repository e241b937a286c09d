//! token-service: users sign in (`POST /token`) and get signed JWTs; the service publishes its
//! public keys (JWKS, discovery) and rotates them. `main` is a shell around [`cli::main`]; tests
//! build the same app with [`startup::build_with`].
//!
//! Routes: `POST /token` ([`token`]); `GET /.well-known/jwks.json`,
//! `GET /.well-known/certs/{kid}.pem`, `GET /.well-known/oauth-authorization-server`,
//! `GET /.well-known/openid-configuration` ([`wellknown`]); `POST /users`, `GET /users`,
//! `DELETE /users/{id}`, `GET /users/me`, `PUT /users/me/password` ([`users_api`]); and the
//! operational routes of auth-core.

pub mod audit;
pub mod cli;
pub mod keys;
pub mod passwords;
pub mod settings;
pub mod startup;
pub mod throttle;
pub mod token;
pub mod users;
pub mod users_api;
pub mod wellknown;

use auth_core::service::config::ServiceInfo;

/// Name, environment prefix (`TOKEN_SERVICE__…`) and default port (4000).
pub const INFO: ServiceInfo = ServiceInfo {
    name: "token-service",
    env_prefix: "TOKEN_SERVICE",
    default_port: 4000,
};
