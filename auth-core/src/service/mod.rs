//! The plumbing every service of this workspace runs on (feature `service`).
//!
//! - [`config`]: layered configuration (defaults → TOML → environment) and the production rules;
//! - [`telemetry`]: tracing subscriber, request log, metrics recorder;
//! - [`server`]: the serving loop (hyper-util driving a warp filter) with the peer address and the
//!   caller slot in every request's extensions, connection cap, read timeouts, graceful shutdown;
//! - [`ops`]: `/health`, `/ready`, `/metrics`, `/openapi.json`;
//! - [`cors`]: exact-origin CORS answered before any auth check;
//! - [`allow`]: the `Allow` header of a 405, from the OpenAPI document;
//! - [`conditional`]: `ETag` and `If-Match` for a resource's versions (412);
//! - [`storage`]: sqlx pools on SQLite or PostgreSQL with per-backend migrations.
//!
//! None of it knows about todos, tasks or users: services bring their own routes and tables.

pub mod allow;
pub mod app;
pub mod body;
pub mod conditional;
pub mod config;
pub mod cors;
pub mod ops;
pub mod paging;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod testing;
