//! auth-core: strict JWT verification, key sources, warp filters and RFC 6750 errors,
//! shared by every service of this workspace.
//!
//! With the `service` feature it also carries the plumbing every service of the workspace runs on
//! (layered config, telemetry, the serving loop, operational routes, storage); a plain library
//! user leaves it off.
//!
//! # Protecting a warp route
//!
//! Build one [`Auth`] from the `[auth]` settings at startup (cheap to clone, shared by every
//! request), put a filter of [`filters`] *after* the path and method filters, and end the routes
//! with [`handle_rejection`]. Handlers receive the verified [`Claims`] as `Arc<Claims>` (a cache
//! hit hands out the same claims without copying them), never a token string.
//!
//! ```
//! use auth_core::filters::{with_auth, with_role};
//! use auth_core::{Alg, Auth, AuthSettings, Claims, handle_rejection};
//! use warp::Filter;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let settings = AuthSettings {
//!     issuer: Some("https://issuer.example".into()),
//!     audience: vec!["todo-api".into()],
//!     // One key source: here an HS256 secret; usually `jwks_url` or `discovery_url`.
//!     secret: Some("an example secret of at least 32 bytes!".into()),
//!     algorithms: vec![Alg::HS256],
//!     ..AuthSettings::default()
//! };
//! let auth = Auth::new(&settings, "todo-api").expect("valid [auth] settings");
//!
//! let whoami = warp::path!("whoami")
//!     .and(warp::get())
//!     .and(with_auth(&auth))
//!     .map(|claims: std::sync::Arc<Claims>| warp::reply::json(&*claims));
//! let admin = warp::path!("admin")
//!     .and(warp::get())
//!     .and(with_role(&auth, "admin"))
//!     .map(|claims: std::sync::Arc<Claims>| format!("hello {}", claims.subject()));
//! let routes = whoami.or(admin).recover(handle_rejection);
//!
//! let res = warp::test::request().path("/whoami").reply(&routes).await;
//! assert_eq!(res.status(), 401);
//! assert_eq!(res.headers()["www-authenticate"], r#"Bearer realm="todo-api""#);
//! # }
//! ```
//!
//! # Errors
//!
//! Every denial is an [`AuthError`] rejection; [`handle_rejection`] renders it (RFC 6750):
//!
//! | situation | status | `error` | `WWW-Authenticate` |
//! |---|---|---|---|
//! | no token, or a scheme other than `Bearer` | 401 | `missing_token` | `Bearer realm="<service>"` |
//! | malformed, bad signature, expired, not yet valid, wrong iss/aud/typ/alg, unknown kid, `crit` | 401 | `invalid_token` | `Bearer realm="…", error="invalid_token", error_description="…"` |
//! | valid token lacking a role, scope or access | 403 | `insufficient_scope` | `Bearer realm="…", error="insufficient_scope", error_description="…"`, and `scope="…"` when a scope is lacking |
//! | no verification key can be had | 503 | `temporarily_unavailable` | none; `Retry-After` instead |
//!
//! The body is always `{"status": 401, "error": "invalid_token", "message": "token expired"}`.
//! Each denial increments `auth_denials_total{reason}` (reasons: [`AuthErrorKind::reason`]) and
//! is logged at debug with the token's `kid` and `sub` when known; a token is never logged.
//!
//! # Modules
//!
//! - [`verify`]: [`Auth`], the verification order and policy, [`verify::verify_signature`];
//! - [`source`]: the key sources (JWKS, OIDC discovery, PEM file or URL, HS256 secret);
//! - [`store`]: the key store of a remote source (caching, refresh, stale-if-error, cooldown);
//! - [`filters`]: `with_auth`, `optional_auth`, roles, scopes, `with_access`;
//! - [`cache`]: the verified-token cache;
//! - [`keys`], [`claims`], [`clock`], [`settings`], [`error`], [`caller`].
//!
//! # Verification-off mode
//!
//! `auth.enabled = false` (local environment only): a token is still required and its payload
//! decoded, but neither signature nor time is checked. [`Auth::new`] warns loudly.
#![warn(missing_docs)]

pub mod cache;
pub mod caller;
pub mod claims;
pub mod clock;
pub mod error;
pub mod filters;
mod headers;
pub mod keys;
pub mod settings;
pub mod source;
pub mod store;
pub mod verify;

#[cfg(feature = "service")]
pub mod service;

pub use claims::Claims;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ApiError, handle_rejection};
pub use keys::{Alg, VerifyingKey};
pub use settings::{AuthSettings, CacheSettings, JwksSettings};
pub use verify::{Auth, AuthError, AuthErrorKind, SetupError};
