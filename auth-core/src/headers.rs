//! The JOSE headers a verifier has already read.
//!
//! The tokens of one issuer share a header (`alg`, `typ`, `kid` are the same in each), so an
//! [`crate::Auth`] remembers the last few headers it has read, by their exact base64url text. A
//! token whose header part is byte for byte one of them skips decoding and parsing it and takes
//! the `alg` and `kid` found the first time. What is remembered is only what the header checks
//! gave: the checks depend on nothing but those bytes and the verifier's own policy, which does
//! not change, so the answer is the same.
//!
//! - **Only authentic headers**: a header is remembered after a signature over it verified with
//!   a configured key, never before. A client without a signing key cannot put a header here,
//!   nor push out the ones in use.
//! - **Bounded**: [`SLOTS`] headers of at most [`MAX_PART`] bytes each; a new one replaces the
//!   oldest. A key rotation keeps two in use at once.
//! - No lock is held beyond one comparison of a few slots.

use std::sync::{Mutex, PoisonError};

use crate::keys::Alg;

/// How many headers are remembered.
pub(crate) const SLOTS: usize = 4;

/// A header part longer than this (base64url bytes) is never remembered.
pub(crate) const MAX_PART: usize = 512;

/// The headers already read by one verifier. See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct KnownHeaders {
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    known: [Option<Known>; SLOTS],
    /// The slot the next header goes to: the oldest.
    next: usize,
}

#[derive(Debug)]
struct Known {
    part: Box<[u8]>,
    alg: Alg,
    kid: Option<String>,
}

impl KnownHeaders {
    /// The `alg` and `kid` of `part`, when it is a header already read.
    pub(crate) fn get(&self, part: &[u8]) -> Option<(Alg, Option<String>)> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .known
            .iter()
            .flatten()
            .find(|known| *known.part == *part)
            .map(|known| (known.alg, known.kid.clone()))
    }

    /// Remembers `part`, a header whose checks gave `alg` and `kid` and over which a signature
    /// verified, in place of the oldest one.
    pub(crate) fn insert(&self, part: &[u8], alg: Alg, kid: Option<&str>) {
        if part.len() > MAX_PART {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots
            .known
            .iter()
            .flatten()
            .any(|known| *known.part == *part)
        {
            return;
        }
        let next = slots.next;
        slots.known[next] = Some(Known {
            part: part.into(),
            alg,
            kid: kid.map(str::to_owned),
        });
        slots.next = (next + 1) % SLOTS;
    }

    /// How many headers are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.known.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exact_parts_only() {
        let known = KnownHeaders::default();
        assert_eq!(known.get(b"eyJhbGciOiJIUzI1NiJ9"), None);
        known.insert(b"eyJhbGciOiJIUzI1NiJ9", Alg::HS256, Some("k1"));
        assert_eq!(
            known.get(b"eyJhbGciOiJIUzI1NiJ9"),
            Some((Alg::HS256, Some("k1".to_owned())))
        );
        // One byte more, one byte less, another byte: another header.
        assert_eq!(known.get(b"eyJhbGciOiJIUzI1NiJ9A"), None);
        assert_eq!(known.get(b"eyJhbGciOiJIUzI1NiJ"), None);
        assert_eq!(known.get(b"eyJhbGciOiJIUzI1NiJ8"), None);
        // A header met again is not stored twice.
        known.insert(b"eyJhbGciOiJIUzI1NiJ9", Alg::HS256, Some("k1"));
        assert_eq!(known.len(), 1);
    }

    #[test]
    fn bounded_oldest_out_first() {
        let known = KnownHeaders::default();
        let part = |i: usize| format!("header-{i}").into_bytes();
        for i in 0..SLOTS + 1 {
            known.insert(&part(i), Alg::RS256, None);
        }
        assert_eq!(known.len(), SLOTS);
        assert_eq!(known.get(&part(0)), None, "the oldest went");
        for i in 1..SLOTS + 1 {
            assert_eq!(known.get(&part(i)), Some((Alg::RS256, None)), "{i}");
        }
    }

    #[test]
    fn long_parts_are_not_remembered() {
        let known = KnownHeaders::default();
        let long = b"a".repeat(MAX_PART + 1);
        known.insert(&long, Alg::ES256, None);
        assert_eq!(known.get(&long), None);
        assert_eq!(known.len(), 0);
        let longest = b"a".repeat(MAX_PART);
        known.insert(&longest, Alg::ES256, None);
        assert_eq!(known.get(&longest), Some((Alg::ES256, None)));
    }
}
