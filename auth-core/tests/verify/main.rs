//! auth-core's integration tests: one binary, one module per concern.
//!
//! Time is a [`auth_core::ManualClock`] pinned to `testkit::NOW`; key servers are mockito
//! servers on 127.0.0.1 (loopback `http://` is the one plain-HTTP form auth-core accepts).

mod attacks;
mod cache;
mod claims;
mod filters;
mod helpers;
mod logs;
mod metrics;
mod off_mode;
mod responses;
mod sources;
mod store;
mod wycheproof;
