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
    /// Records the caller's subject (first write wins), its first
    /// [`MAX_SUBJECT_BYTES`](crate::claims::MAX_SUBJECT_BYTES) characters: every subject a
    /// service stores, whole; a longer one (a token may carry kilobytes) shortened, so a log
    /// line stays a line.
    pub fn set(&self, sub: &str) {
        const MAX: usize = crate::claims::MAX_SUBJECT_BYTES;
        // No more bytes than that: no more characters (the usual subject, not walked).
        let shown = if sub.len() <= MAX {
            sub
        } else {
            sub.char_indices()
                .nth(MAX)
                .map_or(sub, |(end, _)| &sub[..end])
        };
        let _ = self.0.set(shown.to_owned());
    }

    /// The recorded subject, if any.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_a_subject_of_up_to_255_characters_whole_and_a_longer_one_shortened() {
        let slot = CallerSlot::default();
        slot.set(&"é".repeat(255));
        assert_eq!(slot.get(), Some("é".repeat(255).as_str()));
        let slot = CallerSlot::default();
        slot.set(&"s".repeat(8_000));
        assert_eq!(slot.get(), Some("s".repeat(255).as_str()));
        slot.set("other");
        assert_eq!(slot.get().map(str::len), Some(255), "first write wins");
    }
}
