//! auth-core: strict JWT verification, a JWKS key store, warp filters and RFC 6750 errors,
//! shared by every service of this workspace.
//!
//! With the `service` feature it also carries the plumbing every service of the workspace runs on
//! (layered config, telemetry, the serving loop, operational routes, storage); a plain library
//! user leaves it off.
#![warn(missing_docs)]

pub mod caller;
pub mod claims;
pub mod clock;
pub mod error;
pub mod filters;
pub mod keys;
pub mod settings;
pub mod source;
pub mod verify;

#[cfg(feature = "service")]
pub mod service;

pub use claims::Claims;
pub use error::{ApiError, handle_rejection};
pub use keys::Alg;
pub use settings::{AuthSettings, JwksSettings};
pub use clock::{Clock, ManualClock, SystemClock};
pub use verify::{Auth, AuthError, AuthErrorKind, SetupError};
