//! The authenticated caller of a request, as the request log line records it.
//!
//! The serving loop puts an empty [`CallerSlot`] into every request's extensions; the auth
//! filters fill it with the verified `sub`; the access log reads it once the response is ready.
//! Only the `sub` is kept: never a token.

use std::sync::{Arc, OnceLock};

/// Where the auth filters leave the verified caller's `sub` for the request log.
#[derive(Debug, Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<String>>);

impl CallerSlot {
    /// Records the caller's subject (first write wins).
    pub fn set(&self, sub: &str) {
        let _ = self.0.set(sub.to_owned());
    }

    /// The recorded subject, if any.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}
