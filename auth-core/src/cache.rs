//! The verified-token cache: a token whose signature and claims verified is remembered, so the
//! next request carrying the same token skips the signature step.
//!
//! - **Keyed by a hash of the whole token** (header, payload and signature), and every hit
//!   compares the whole token byte for byte: a token that differs in any byte is another entry,
//!   whatever the hash. The hash is foldhash with a key drawn at random per cache, so a client
//!   cannot aim tokens at one bucket; it needs no cryptographic strength because it decides
//!   nothing on its own (Envoy's `jwt_authn` cache likewise keys by the token string). Entries
//!   hold the token, as the request that carried it did; it is never logged.
//! - **Bounded**: at most `auth.cache.max_entries` entries (default 10 000; `0` switches the
//!   cache off). When full, the oldest entry is evicted first.
//! - **Admitted on second sight** (a TinyLFU-style doorkeeper, as in Caffeine): a token is
//!   cached the second time it verifies, while a fixed table of one hash per slot (as many slots
//!   as entries, rounded up to a power of two) still remembers its first time. A token used once
//!   costs the cache one word written and evicts nothing, so a flood of single-use tokens (a
//!   load test, a scan, many one-shot clients) neither slows verification with cache upkeep nor
//!   pushes out the tokens that are in use. A token in real use pays one more full verification.
//! - **An entry never outlives its token**: it is dropped once `exp` has passed, checked on every
//!   hit against auth-core's [`Clock`](crate::clock::Clock); [`crate::Auth`] also re-runs the
//!   time, issuer and audience checks on the cached claims.
//! - **Tied to its key**: an entry records the thumbprint of the key that verified it. On a hit,
//!   [`crate::Auth`] asks the key source for the token's key again; when that key has left the
//!   key set (rotation, removal), the entry is dropped and the token verified afresh, which then
//!   fails. A remote key source's store also drops such entries as soon as it loads a set
//!   without their key ([`VerifiedCache::retain_keys`]), so they do not wait for a request.
//! - **Per verifier**: each [`crate::Auth`] has its own cache, so a token cached by one service
//!   is never accepted by another one with a different audience or issuer.
//! - **Counted**: `auth_cache_hits_total` and `auth_cache_misses_total`, and
//!   [`VerifiedCache::stats`].
//!
//! No lock is held across an `.await`: the map sits behind a short [`Mutex`].

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::claims::Claims;
use crate::keys::Alg;

/// The default bound of `auth.cache.max_entries`.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// The largest `auth.cache.max_entries` accepted: about a gigabyte of cached claims, and an
/// admission table allocated up front that fits in memory.
pub const MAX_MAX_ENTRIES: usize = 1_000_000;

/// The keyed 64-bit hash of a whole token: where its entry sits in the map. Two tokens may share
/// one; the entry's stored token tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenHash(u64);

/// A token and its hash, computed once per request ([`VerifiedCache::key`]) for every cache
/// operation that request makes. Its `Debug` shows neither.
#[derive(Clone, Copy)]
pub struct TokenKey<'a> {
    token: &'a [u8],
    hash: TokenHash,
}

impl std::fmt::Debug for TokenKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("token_bytes", &self.token.len())
            .finish_non_exhaustive()
    }
}

/// What is remembered of a verified token: its claims, and what is needed to find the key that
/// verified it again.
#[derive(Debug, Clone)]
pub struct CachedToken {
    /// The verified claims, shared with every request that presents the token.
    pub claims: Arc<Claims>,
    /// The token's `kid`, as the key source was asked with it.
    pub kid: Option<String>,
    /// The token's `alg`.
    pub alg: Alg,
    /// The RFC 7638 thumbprint (or secret fingerprint) of the key that verified the signature.
    pub thumbprint: String,
}

/// Hits, misses and size of a [`VerifiedCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache (no signature verification).
    pub hits: u64,
    /// Lookups that found nothing usable (the token is then verified in full).
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
}

/// A bounded cache of verified tokens. See the [module docs](self).
///
/// Its `Debug` shows the bound and the counts of [`VerifiedCache::stats`], never an entry: entries hold whole
/// bearer tokens, and a verifier printed with `{:?}` must not put them in a log.
pub struct VerifiedCache {
    max_entries: usize,
    hasher: foldhash::quality::RandomState,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// `auth_cache_{hits,misses}_total`, looked up in the metrics registry on first use (the
    /// process's recorder is installed by then) rather than on every request.
    exported: OnceLock<(metrics::Counter, metrics::Counter)>,
}

#[derive(Default)]
struct State {
    map: HashMap<TokenHash, Entry, PrehashedState>,
    /// Insertion order, for eviction: each entry's hash and insertion number. May name entries
    /// already gone (expired, removed) or since inserted again (a later number): those are
    /// skipped, and it is compacted when it grows past twice the bound.
    order: VecDeque<(TokenHash, u64)>,
    /// The next insertion number.
    inserted: u64,
    /// The doorkeeper: per slot, the hash (low bit set, so 0 is empty) of the last token seen
    /// verified once and not yet admitted.
    seen: Vec<u64>,
}

struct Entry {
    /// The whole token, compared on every hit.
    raw: Box<[u8]>,
    token: Arc<CachedToken>,
    exp: u64,
    /// Its insertion number (see `State::order`).
    seq: u64,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `try_lock`: printing never waits on (or deadlocks with) the cache's own lock.
        let entries = self.state.try_lock().ok().map(|state| state.map.len());
        f.debug_struct("VerifiedCache")
            .field("max_entries", &self.max_entries)
            .field("entries", &entries)
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl VerifiedCache {
    /// A cache of at most `max_entries` tokens; `None` when `max_entries` is 0 (cache off).
    pub fn new(max_entries: usize) -> Option<Self> {
        (max_entries > 0).then(|| Self {
            max_entries,
            hasher: foldhash::quality::RandomState::default(),
            state: Mutex::new(State {
                seen: vec![0; max_entries.next_power_of_two()],
                ..State::default()
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            exported: OnceLock::new(),
        })
    }

    /// The bound.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The cache key of `token` (as the request carried it: `&str` or bytes): hashed here, once.
    pub fn key<'a>(&self, token: &'a (impl AsRef<[u8]> + ?Sized)) -> TokenKey<'a> {
        let token = token.as_ref();
        TokenKey {
            token,
            hash: TokenHash(self.hasher.hash_one(token)),
        }
    }

    /// The entry of `token` if there is one and `now` is before its `exp`; an expired entry is
    /// dropped. Counts a hit or a miss.
    pub fn get(&self, key: &TokenKey<'_>, now: u64) -> Option<Arc<CachedToken>> {
        let TokenKey { token, hash } = *key;
        let found = {
            let mut state = self.lock();
            match state.map.get(&hash) {
                Some(entry) if *entry.raw != *token => None,
                Some(entry) if now < entry.exp => Some(Arc::clone(&entry.token)),
                Some(_) => {
                    state.map.remove(&hash);
                    None
                }
                None => None,
            }
        };
        let (hits, misses) = self.exported.get_or_init(|| {
            (
                metrics::counter!("auth_cache_hits_total"),
                metrics::counter!("auth_cache_misses_total"),
            )
        });
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            hits.increment(1);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            misses.increment(1);
        }
        found
    }

    /// Whether a token that just verified in full should be cached: `true` the second time in a
    /// row its slot of the doorkeeper sees it, else it is remembered there (replacing whatever
    /// other token held the slot) and `false`.
    pub fn admit(&self, key: &TokenKey<'_>) -> bool {
        let hash = key.hash.0;
        let tag = hash | 1;
        let mut state = self.lock();
        let slot = (hash >> 32) as usize & (state.seen.len() - 1);
        if state.seen[slot] == tag {
            state.seen[slot] = 0;
            true
        } else {
            state.seen[slot] = tag;
            false
        }
    }

    /// Remembers a verified token until `exp` (not at all when `now` is already past it),
    /// evicting the oldest entries beyond the bound.
    ///
    /// Another token of the same hash, if cached, gives way to this one.
    pub fn insert(&self, key: &TokenKey<'_>, verified: CachedToken, exp: u64, now: u64) {
        if now >= exp {
            return;
        }
        let TokenKey { token, hash } = *key;
        // Built before the lock every request's lookup takes; numbered under it.
        let mut entry = Entry {
            raw: token.into(),
            token: Arc::new(verified),
            exp,
            seq: 0,
        };
        let mut state = self.lock();
        let seq = state.inserted;
        state.inserted += 1;
        entry.seq = seq;
        let replaced = state.map.insert(hash, entry).is_some();
        state.order.push_back((hash, seq));
        if !replaced {
            while state.map.len() > self.max_entries {
                let Some((oldest, seq)) = state.order.pop_front() else {
                    break;
                };
                // Only the position of the entry as it is now: a hash removed and inserted
                // again has a later one, and is not the oldest.
                if state.map.get(&oldest).is_some_and(|e| e.seq == seq) {
                    state.map.remove(&oldest);
                }
            }
        }
        if state.order.len() > self.max_entries.saturating_mul(2) {
            let State { map, order, .. } = &mut *state;
            order.retain(|(h, seq)| map.get(h).is_some_and(|e| e.seq == *seq));
        }
    }

    /// Drops the entry of `token` (e.g. its key has left the key set).
    pub fn remove(&self, key: &TokenKey<'_>) {
        let TokenKey { token, hash } = *key;
        let mut state = self.lock();
        if state.map.get(&hash).is_some_and(|e| *e.raw == *token) {
            state.map.remove(&hash);
        }
    }

    /// Keeps only the entries verified by one of these keys (RFC 7638 thumbprints): for a key
    /// store to call when its key set changes.
    pub fn retain_keys(&self, thumbprints: &[&str]) {
        self.lock()
            .map
            .retain(|_, e| thumbprints.contains(&e.token.thumbprint.as_str()));
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.map.clear();
        state.order.clear();
        state.seen.fill(0);
    }

    /// Hits, misses and the number of entries.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.lock().map.len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The map's hasher: the key already is a keyed hash of the token, so it is used as it is (no
/// second hashing per lookup).
#[derive(Debug, Clone, Copy, Default)]
struct PrehashedState;

impl BuildHasher for PrehashedState {
    type Hasher = Prehashed;

    fn build_hasher(&self) -> Prehashed {
        Prehashed(0)
    }
}

struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `TokenHash`'s u64 is ever hashed (`write_u64`); fold anything else anyway.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(thumbprint: &str, sub: &str) -> CachedToken {
        CachedToken {
            claims: Arc::new(Claims {
                sub: Some(sub.into()),
                ..serde_json::from_str("{}").unwrap()
            }),
            kid: None,
            alg: Alg::ES256,
            thumbprint: thumbprint.into(),
        }
    }

    fn cache(max: usize) -> VerifiedCache {
        VerifiedCache::new(max).unwrap()
    }

    #[test]
    fn zero_entries_is_off() {
        assert!(VerifiedCache::new(0).is_none());
        assert_eq!(
            VerifiedCache::new(DEFAULT_MAX_ENTRIES)
                .unwrap()
                .max_entries(),
            10_000
        );
    }

    #[test]
    fn a_hit_needs_the_whole_token_to_match() {
        let c = cache(10);
        c.insert(&c.key("a.b.c"), cached("k", "alice"), 1_000, 1);
        assert!(c.get(&c.key("a.b.c"), 2).is_some());
        assert!(c.get(&c.key("a.b.d"), 2).is_none());
        assert!(c.get(&c.key("a.b.c."), 2).is_none());
        // Two tokens forced into one slot: each is found only as itself, the later one wins.
        let hash = c.key("a.b.c").hash;
        let mut state = c.lock();
        let entry = state.map.remove(&hash).unwrap();
        state.map.insert(
            hash,
            Entry {
                raw: b"x.y.z"[..].into(),
                ..entry
            },
        );
        drop(state);
        assert!(
            c.get(&c.key("a.b.c"), 2).is_none(),
            "same slot, other token: a miss"
        );
        c.remove(&c.key("a.b.c"));
        assert_eq!(c.stats().entries, 1, "remove leaves another token's entry");
    }

    #[test]
    fn admitted_on_second_sight() {
        let c = cache(4);
        assert!(
            !c.admit(&c.key("a.b.c")),
            "first time: remembered, not admitted"
        );
        assert!(c.admit(&c.key("a.b.c")), "second time: admitted");
        assert!(!c.admit(&c.key("a.b.c")), "the slot was freed on admission");
        // A flood of other tokens forgets a first sighting (4 slots).
        assert!(!c.admit(&c.key("x")));
        for i in 0..64 {
            c.admit(&c.key(&format!("t{i}")));
        }
        // (every one of the 64 missing x's slot: (3/4)^64, about 1e-8)
        assert!(
            !c.admit(&c.key("x")),
            "64 other tokens over 4 slots displaced it"
        );
        c.clear();
        assert!(!c.admit(&c.key("a.b.c")), "clear forgets sightings too");
    }

    #[test]
    fn hit_until_exp_then_gone() {
        let c = cache(10);
        let h = "t";
        assert!(c.get(&c.key(h), 100).is_none());
        c.insert(&c.key(h), cached("k", "alice"), 200, 100);
        assert_eq!(c.get(&c.key(h), 199).unwrap().claims.subject(), "alice");
        assert!(c.get(&c.key(h), 200).is_none(), "exp reached: gone");
        assert!(
            c.get(&c.key(h), 150).is_none(),
            "an expired entry is dropped, not kept"
        );
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 1,
                misses: 3,
                entries: 0
            }
        );
    }

    /// An entry dropped and inserted again is as new as its last insertion: eviction takes the
    /// oldest other entry, not it (its first position in the order is stale).
    #[test]
    fn a_token_inserted_again_is_not_evicted_by_its_old_position() {
        let c = cache(3);
        c.insert(&c.key("a"), cached("k", "a"), 1_000, 1);
        c.remove(&c.key("a"));
        for t in ["b", "c"] {
            c.insert(&c.key(t), cached("k", t), 1_000, 1);
        }
        c.insert(&c.key("a"), cached("k", "a"), 1_000, 1);
        c.insert(&c.key("d"), cached("k", "d"), 1_000, 1);
        assert!(c.get(&c.key("a"), 2).is_some(), "the newest but one stays");
        assert!(c.get(&c.key("b"), 2).is_none(), "the oldest went");
        assert_eq!(c.stats().entries, 3);
        // A token inserted over itself (same hash) also moves to the back.
        c.insert(&c.key("c"), cached("k", "c"), 1_000, 1);
        c.insert(&c.key("e"), cached("k", "e"), 1_000, 1);
        assert!(c.get(&c.key("c"), 2).is_some());
        assert!(c.get(&c.key("a"), 2).is_none());
    }

    #[test]
    fn already_expired_is_not_inserted() {
        let c = cache(10);
        let h = "t";
        c.insert(&c.key(h), cached("k", "alice"), 100, 100);
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn bound_holds_under_a_flood_and_oldest_go_first() {
        let c = cache(100);
        for i in 0..10_000 {
            c.insert(&c.key(&format!("t{i}")), cached("k", "x"), 1_000, 1);
            assert!(c.stats().entries <= 100);
        }
        assert_eq!(c.stats().entries, 100);
        assert!(c.lock().order.len() <= 200);
        assert!(c.get(&c.key("t0"), 2).is_none());
        assert!(c.get(&c.key("t9999"), 2).is_some());
    }

    #[test]
    fn order_stays_bounded_when_entries_leave_early() {
        let c = cache(10);
        for i in 0..1_000 {
            let h = format!("t{i}");
            c.insert(&c.key(&h), cached("k", "x"), 1_000, 1);
            c.remove(&c.key(&h));
        }
        assert_eq!(c.stats().entries, 0);
        assert!(c.lock().order.len() <= 20);
    }

    #[test]
    fn retain_keys_drops_entries_of_removed_keys() {
        let c = cache(10);
        let (a, b) = ("a", "b");
        c.insert(&c.key(a), cached("key-a", "alice"), 1_000, 1);
        c.insert(&c.key(b), cached("key-b", "bob"), 1_000, 1);
        c.retain_keys(&["key-b"]);
        assert!(c.get(&c.key(a), 2).is_none());
        assert!(c.get(&c.key(b), 2).is_some());
        c.clear();
        assert!(c.get(&c.key(b), 2).is_none());
    }
}
