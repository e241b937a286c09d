//! Password hashing: argon2id (parameters from `users.argon2_*`, OWASP's minimum by default),
//! at most `users.max_concurrent_hashes` computations at once (a semaphore), each on the
//! blocking pool, and at most `users.max_queued_hashes` requests waiting for a turn (more are
//! refused at once with [`Busy`]). Passwords live in [`SecretString`]s and are never logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::settings::UsersSettings;

/// Shortest password, in characters.
pub const MIN_CHARS: usize = 12;
/// Longest password, in bytes: longer inputs are refused before any hashing.
pub const MAX_BYTES: usize = 256;

/// Hashes and verifies passwords (PHC strings). Injected in tests to observe the calls.
pub trait Hasher: Send + Sync + std::fmt::Debug {
    /// A PHC string for `password`.
    fn hash(&self, password: &[u8]) -> anyhow::Result<String>;
    /// Whether `password` matches `phc`.
    fn verify(&self, password: &[u8], phc: &str) -> bool;
    /// A hash no password is known to match, verified in place of an unknown user's so that
    /// sign-in takes as long either way. By default the hash of a random password.
    fn dummy(&self) -> anyhow::Result<String> {
        self.hash(uuid::Uuid::new_v4().to_string().as_bytes())
    }
    /// Whether `phc` was made otherwise than [`Hasher::hash`] makes hashes now (other
    /// parameters): a user who signs in with it then gets a fresh hash. By default never.
    fn outdated(&self, _phc: &str) -> bool {
        false
    }
}

/// argon2id with the configured parameters.
/// argon2id with its working memory reused: each computation borrows a block buffer from a
/// small pool instead of allocating `m_cost` KiB afresh, so a stream of sign-ins does not make the
/// allocator hold on to many freed 19 MiB regions (RSS stays at about
/// `max_concurrent_hashes × m_cost` above the base).
#[derive(Clone)]
pub struct Argon2id {
    params: Params,
    memory: Arc<std::sync::Mutex<Vec<Vec<Block>>>>,
}

/// The parameters only: the pooled working memory holds the last computation's blocks, from
/// which the hash of the last password checked can be recomputed.
impl std::fmt::Debug for Argon2id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Argon2id")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Argon2id {
    /// argon2id with the configured parameters.
    pub fn new(settings: &UsersSettings) -> anyhow::Result<Self> {
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.argon2_parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("users.argon2_*: {e}"))?;
        Ok(Self {
            params,
            memory: Arc::default(),
        })
    }

    /// Runs argon2id with `params` over `password` and `salt` into `out`, on pooled memory.
    fn compute(
        &self,
        params: &Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let blocks = params.block_count();
        // Only buffers of the configured size are pooled; a hash made with other parameters
        // borrows a one-off buffer.
        let pooled = blocks == self.params.block_count();
        let reused = if pooled {
            self.memory.lock().unwrap_or_else(|e| e.into_inner()).pop()
        } else {
            None
        };
        let mut memory = reused.unwrap_or_else(|| vec![Block::new(); blocks]);
        let result = argon2.hash_password_into_with_memory(password, salt, out, &mut memory);
        if pooled {
            self.memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(memory);
        }
        result
    }

    /// The PHC string of `out` under the configured parameters and `salt`.
    fn phc(&self, salt: &SaltString, out: &[u8]) -> anyhow::Result<String> {
        let output = Output::new(out).map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params)
                .map_err(|e| anyhow::anyhow!("parameters: {e}"))?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }
}

impl Hasher for Argon2id {
    fn hash(&self, password: &[u8]) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt
            .decode_b64(&mut salt_bytes)
            .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        let mut out = [0u8; 32];
        self.compute(&self.params, password, salt_bytes, &mut out)
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
        self.phc(&salt, &out)
    }

    /// A random salt and a random output under the configured parameters: verifying against it
    /// costs exactly a real verification, and making it costs no argon2 run (so no working
    /// memory is held from startup until the first sign-in).
    fn dummy(&self) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut OsRng);
        let mut out = [0u8; 32];
        OsRng.fill_bytes(&mut out);
        self.phc(&salt, &out)
    }

    fn verify(&self, password: &[u8], phc: &str) -> bool {
        // The parameters of the stored hash apply (hashes made with older parameters still verify).
        let Ok(hash) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
            return false;
        };
        if hash.algorithm != argon2::ARGON2ID_IDENT {
            return false;
        }
        let Ok(params) = Params::try_from(&hash) else {
            return false;
        };
        let mut salt_bytes = [0u8; 64];
        let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        if self
            .compute(&params, password, salt_bytes, &mut out)
            .is_err()
        {
            return false;
        }
        // `Output`'s equality is constant-time.
        Output::new(&out).is_ok_and(|computed| computed == expected)
    }

    /// Another algorithm or version, other `m`, `t` or `p`, or another output length than
    /// the configured argon2id's (an unreadable string too: it verifies nothing anyway).
    fn outdated(&self, phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return true;
        };
        let same = hash.algorithm == argon2::ARGON2ID_IDENT
            && hash.version == Some(Version::V0x13.into())
            && hash.hash.is_some_and(|h| h.len() == 32)
            && Params::try_from(&hash).is_ok_and(|p| {
                (p.m_cost(), p.t_cost(), p.p_cost())
                    == (
                        self.params.m_cost(),
                        self.params.t_cost(),
                        self.params.p_cost(),
                    )
            });
        !same
    }
}

#[derive(Debug, Clone)]
pub struct Passwords {
    hasher: Arc<dyn Hasher>,
    permits: Arc<Semaphore>,
    queue: Arc<Queue>,
    dummy: Arc<str>,
}

/// Requests waiting for a turn to hash, and how many may: past the bound a request is refused at
/// once ([`Busy`]) instead of joining a queue it could wait in for minutes (Envoy's
/// `max_pending_requests` overflow).
#[derive(Debug)]
struct Queue {
    waiting: AtomicUsize,
    max: usize,
}

/// Every turn to hash is taken and `users.max_queued_hashes` requests already wait for one: the
/// caller answers 503 with `Retry-After` (a turn frees when one hash ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks are waiting (users.max_queued_hashes)")]
pub struct Busy;

impl From<Busy> for auth_core::error::ApiError {
    fn from(_: Busy) -> Self {
        Self::unavailable(
            "too many password checks are waiting; try again in a moment",
            1,
        )
    }
}

/// Why [`Passwords::hash`] gave no hash.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error("hashing a password failed: {0}")]
    Failed(#[from] anyhow::Error),
}

impl Passwords {
    /// `max_concurrent` hashes at once, at most `max_queued` requests waiting for a turn, and
    /// the dummy hash an unknown user's sign-in is verified against.
    pub fn new(
        hasher: Arc<dyn Hasher>,
        max_concurrent: usize,
        max_queued: usize,
    ) -> anyhow::Result<Self> {
        let dummy = hasher.dummy()?;
        Ok(Self {
            hasher,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            queue: Arc::new(Queue {
                waiting: AtomicUsize::new(0),
                max: max_queued,
            }),
            dummy: dummy.into(),
        })
    }

    /// Hashes `password` (policy already checked).
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let permit = self.permit().await?;
        Ok(self.hash_with(permit, password).await?)
    }

    /// [`Passwords::hash`] in a turn already taken (which it ends).
    pub async fn hash_with(
        &self,
        permit: HashPermit,
        password: &SecretString,
    ) -> anyhow::Result<String> {
        let hasher = self.hasher.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || {
            // The turn ends with the computation, even when the request was dropped meanwhile.
            let _permit = permit;
            hasher.hash(password.expose_secret().as_bytes())
        })
        .await?
    }

    /// Whether a user whose password verified against `phc` should get a fresh hash (the
    /// `users.argon2_*` settings changed since it was made): else sign-ins of old accounts would
    /// keep the old cost, and take a measurably different time than an unknown user's, whose
    /// dummy hash has the current parameters.
    pub fn outdated(&self, phc: &str) -> bool {
        self.hasher.outdated(phc)
    }

    /// A turn to hash: at once if one of `users.max_concurrent_hashes` is free; else after a
    /// wait, if fewer than `users.max_queued_hashes` requests already wait; else [`Busy`] at
    /// once. A wait given up (the request dropped) leaves the queue.
    pub async fn permit(&self) -> Result<HashPermit, Busy> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(HashPermit(permit));
        }
        let queue = &self.queue;
        queue
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < queue.max).then_some(n + 1)
            })
            .map_err(|_| {
                metrics::counter!("password_checks_shed_total").increment(1);
                Busy
            })?;
        metrics::gauge!("password_checks_waiting").increment(1.0);
        let _place = Place(queue);
        // The semaphore is never closed.
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map(HashPermit)
            .map_err(|_| Busy)
    }

    /// Requests waiting for a turn to hash now (for tests and operators).
    pub fn waiting(&self) -> usize {
        self.queue.waiting.load(Ordering::Acquire)
    }

    /// Whether `password` matches `phc`, in a turn taken with [`Passwords::permit`] (which it
    /// ends). Without a hash (unknown user) a dummy hash is verified anyway, so both cases take
    /// comparable time, and the answer is `false`. `None` when the computation failed (a panic
    /// in the hasher): a fault of the service, not a wrong password.
    pub async fn verify_with(
        &self,
        permit: HashPermit,
        password: &SecretString,
        phc: Option<&str>,
    ) -> Option<bool> {
        self.verify_keeping(permit, password, phc)
            .await
            .map(|(right, _)| right)
    }

    /// [`Passwords::verify_with`] that hands the turn back, for a hash that must follow in the
    /// same turn (a password change: never refused as [`Busy`] after its old password was
    /// checked).
    pub async fn verify_keeping(
        &self,
        permit: HashPermit,
        password: &SecretString,
        phc: Option<&str>,
    ) -> Option<(bool, HashPermit)> {
        let hasher = self.hasher.clone();
        let password = password.clone();
        let (phc, real) = match phc {
            Some(p) => (Arc::<str>::from(p), true),
            None => (self.dummy.clone(), false),
        };
        // The permit moves into the computation: a request dropped mid-hash does not free its
        // turn while argon2 still runs (else hang-ups could run more than
        // `max_concurrent_hashes` at once, each with its working memory).
        let (right, permit) = tokio::task::spawn_blocking(move || {
            let right = hasher.verify(password.expose_secret().as_bytes(), &phc);
            (right, permit)
        })
        .await
        .ok()?;
        Some((right && real, permit))
    }
}

/// A place in the queue for a turn to hash, given back however the wait ends.
struct Place<'a>(&'a Queue);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("password_checks_waiting").decrement(1.0);
    }
}

/// A turn to hash (see [`Passwords::permit`]).
#[derive(Debug)]
pub struct HashPermit(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

/// The password policy: at least [`MIN_CHARS`] characters, at most [`MAX_BYTES`] bytes, not the
/// username. The message names the field.
pub fn check_policy(field: &str, username: &str, password: &str) -> Result<(), String> {
    if password.len() > MAX_BYTES {
        return Err(format!("{field}: at most {MAX_BYTES} bytes"));
    }
    if password.chars().count() < MIN_CHARS {
        return Err(format!("{field}: at least {MIN_CHARS} characters"));
    }
    if password == username {
        return Err(format!("{field}: must not equal the username"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Printing the hasher shows its parameters, never the pooled blocks of the last hash.
    #[test]
    fn a_printed_hasher_shows_no_working_memory() {
        let hasher = Argon2id::new(&UsersSettings {
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            ..UsersSettings::default()
        })
        .unwrap();
        let salt = [7u8; 16];
        let mut out = [0u8; 32];
        hasher
            .compute(&hasher.params.clone(), b"hunter2", &salt, &mut out)
            .unwrap();
        let printed = format!("{hasher:?}");
        assert!(
            printed.starts_with("Argon2id { params: Params"),
            "{printed}"
        );
        assert!(printed.len() < 500, "{printed}");
    }

    #[test]
    fn policy() {
        assert!(check_policy("password", "alice", "short").is_err());
        assert!(check_policy("password", "alice-dev-pass", "alice-dev-pass").is_err());
        assert!(check_policy("password", "alice", &"x".repeat(257)).is_err());
        assert!(check_policy("password", "alice", &"x".repeat(256)).is_ok());
        assert!(check_policy("password", "alice", "twelve chars").is_ok());
        let e = check_policy("new_password", "a", "x").unwrap_err();
        assert!(e.starts_with("new_password:"), "{e}");
    }

    #[test]
    fn a_hash_with_other_parameters_is_outdated() {
        let settings = |m: u32, t: u32| UsersSettings {
            argon2_memory_kib: m,
            argon2_iterations: t,
            ..UsersSettings::default()
        };
        let current = Argon2id::new(&settings(8192, 2)).unwrap();
        let weaker = Argon2id::new(&settings(4096, 1)).unwrap();
        let mine = current.hash(b"a password").unwrap();
        assert!(!current.outdated(&mine));
        assert!(current.outdated(&weaker.hash(b"a password").unwrap()));
        assert!(
            current.outdated(
                &Argon2id::new(&settings(8192, 1))
                    .unwrap()
                    .hash(b"x")
                    .unwrap()
            )
        );
        assert!(current.outdated(&mine.replace("argon2id", "argon2i")));
        assert!(current.outdated("not a hash"));
        assert!(!current.outdated(&current.dummy().unwrap()));
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let p = Passwords::new(
            Arc::new(Argon2id::new(&UsersSettings::default()).unwrap()),
            2,
            0,
        )
        .unwrap();
        let pw = SecretString::from("correct horse battery");
        let phc = p.hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let verify = async |pw: &SecretString, phc: Option<&str>| {
            p.verify_with(p.permit().await.unwrap(), pw, phc).await
        };
        assert_eq!(verify(&pw, Some(&phc)).await, Some(true));
        assert_eq!(
            verify(&SecretString::from("wrong password!"), Some(&phc)).await,
            Some(false)
        );
        assert_eq!(verify(&pw, None).await, Some(false), "no user: never true");
    }

    /// Past `max_queued` waiting requests the next is refused at once, and a wait given up
    /// (its request dropped) frees its place. The waits are polled by hand: no time passes.
    #[tokio::test]
    async fn the_queue_for_a_turn_to_hash_is_bounded() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let p = Passwords::new(
            Arc::new(Argon2id::new(&UsersSettings::default()).unwrap()),
            1,
            2,
        )
        .unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let running = p.permit().await.expect("a free turn is taken at once");
        let mut first = Box::pin(p.permit());
        let mut second = Box::pin(p.permit());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert_eq!(p.waiting(), 2);
        assert_eq!(p.permit().await.err(), Some(Busy), "a third may not wait");
        let pw = SecretString::from("correct horse battery");
        assert!(matches!(p.hash(&pw).await, Err(HashError::Busy(Busy))));
        drop(second);
        assert_eq!(p.waiting(), 1, "a dropped wait leaves the queue");
        let mut third = Box::pin(p.permit());
        assert!(third.as_mut().poll(&mut cx).is_pending());
        drop(running);
        assert!(matches!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
        assert_eq!(p.waiting(), 1, "a wait that ends leaves the queue");
        drop(first);
        assert!(matches!(third.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
        assert_eq!(p.waiting(), 0);
        drop(third);
        let none = Passwords::new(
            Arc::new(Argon2id::new(&UsersSettings::default()).unwrap()),
            1,
            0,
        )
        .unwrap();
        let held = none.permit().await.unwrap();
        assert_eq!(none.permit().await.err(), Some(Busy), "0: never wait");
        drop(held);
        assert!(none.permit().await.is_ok());
    }

    /// A hasher whose verifications wait until opened.
    #[derive(Debug, Default)]
    struct Held {
        open: std::sync::Mutex<bool>,
        changed: std::sync::Condvar,
        entered: AtomicUsize,
    }

    impl Hasher for Held {
        fn hash(&self, _: &[u8]) -> anyhow::Result<String> {
            Ok("$held$".into())
        }
        fn verify(&self, _: &[u8], _: &str) -> bool {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let open = self.open.lock().unwrap();
            drop(self.changed.wait_while(open, |open| !*open).unwrap());
            false
        }
    }

    /// A request dropped mid-hash (the client hung up) keeps its turn until the computation
    /// ends: else hang-ups could run more than `max_concurrent_hashes` at once.
    #[tokio::test]
    async fn a_dropped_request_keeps_its_turn_until_its_hash_ends() {
        use std::future::Future;
        use std::task::{Context, Waker};
        let held = Arc::new(Held::default());
        let p = Passwords::new(held.clone(), 1, 4).unwrap();
        let pw = SecretString::from("correct horse battery");
        let mut cx = Context::from_waker(Waker::noop());
        let mut check =
            Box::pin(async { p.verify_with(p.permit().await.unwrap(), &pw, None).await });
        assert!(check.as_mut().poll(&mut cx).is_pending());
        let entered = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while held.entered.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(entered.is_ok(), "the verification never began");
        drop(check);
        let free_while_running = p.permits.available_permits();
        let mut next = Box::pin(p.permit());
        let next_waited = next.as_mut().poll(&mut cx).is_pending();
        // Open before asserting: a blocked computation would hold the runtime's shutdown.
        *held.open.lock().unwrap() = true;
        held.changed.notify_all();
        assert_eq!(
            free_while_running, 0,
            "the turn stays with the running hash"
        );
        assert!(next_waited);
        assert!(next.await.is_ok(), "the turn is free once the hash ends");
    }

    /// Counters and gauges by name, for one test (`metrics::with_local_recorder`).
    #[derive(Default, Clone)]
    struct Recorded(Arc<std::sync::Mutex<std::collections::BTreeMap<String, f64>>>);

    struct Slot(Recorded, String);

    impl Recorded {
        fn get(&self, name: &str) -> f64 {
            self.0.lock().unwrap().get(name).copied().unwrap_or(0.0)
        }
        fn update(&self, name: &str, f: impl FnOnce(&mut f64)) {
            f(self.0.lock().unwrap().entry(name.to_owned()).or_default());
        }
    }

    impl metrics::CounterFn for Slot {
        fn increment(&self, value: u64) {
            self.0.update(&self.1, |v| *v += value as f64);
        }
        fn absolute(&self, value: u64) {
            self.0.update(&self.1, |v| *v = value as f64);
        }
    }

    impl metrics::GaugeFn for Slot {
        fn increment(&self, value: f64) {
            self.0.update(&self.1, |v| *v += value);
        }
        fn decrement(&self, value: f64) {
            self.0.update(&self.1, |v| *v -= value);
        }
        fn set(&self, value: f64) {
            self.0.update(&self.1, |v| *v = value);
        }
    }

    impl metrics::Recorder for Recorded {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::from_arc(Arc::new(Slot(self.clone(), key.name().to_owned())))
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::from_arc(Arc::new(Slot(self.clone(), key.name().to_owned())))
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    /// `password_checks_waiting` follows the queue, back to 0 however a wait ends, and
    /// `password_checks_shed_total` counts the requests refused for a full queue.
    #[test]
    fn the_queue_is_on_the_metrics() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let recorded = Recorded::default();
        metrics::with_local_recorder(&recorded, || {
            let p = Passwords::new(Arc::new(Held::default()), 1, 2).unwrap();
            let mut cx = Context::from_waker(Waker::noop());
            let Poll::Ready(Ok(running)) = Box::pin(p.permit()).as_mut().poll(&mut cx) else {
                panic!("a free turn is taken at once");
            };
            let mut served = Box::pin(p.permit());
            let mut given_up = Box::pin(p.permit());
            assert!(served.as_mut().poll(&mut cx).is_pending());
            assert!(given_up.as_mut().poll(&mut cx).is_pending());
            assert_eq!(recorded.get("password_checks_waiting"), 2.0);
            assert!(matches!(
                Box::pin(p.permit()).as_mut().poll(&mut cx),
                Poll::Ready(Err(Busy))
            ));
            drop(given_up);
            assert_eq!(recorded.get("password_checks_waiting"), 1.0);
            drop(running);
            assert!(matches!(served.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
        });
        assert_eq!(recorded.get("password_checks_waiting"), 0.0);
        assert_eq!(recorded.get("password_checks_shed_total"), 1.0);
    }

    /// The pooled-memory implementation agrees with the argon2 crate's own, both ways.
    #[test]
    fn interoperates_with_the_reference_implementation() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = Argon2id::new(&UsersSettings::default()).unwrap();
        let reference = Argon2::default();
        let phc = ours.hash(b"correct horse battery").unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(
            reference
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        assert!(
            reference
                .verify_password(b"wrong horse battery", &parsed)
                .is_err()
        );
        let salt = SaltString::generate(&mut OsRng);
        let theirs = reference
            .hash_password(b"another password!", &salt)
            .unwrap()
            .to_string();
        assert!(ours.verify(b"another password!", &theirs));
        assert!(!ours.verify(b"another password?", &theirs));
        // Other parameters than the configured ones still verify (a one-off buffer).
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        );
        let old = small
            .hash_password(b"an older hash here", &salt)
            .unwrap()
            .to_string();
        assert!(ours.verify(b"an older hash here", &old));
        assert!(!ours.verify(
            b"an older hash here",
            "$argon2i$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaA"
        ));
        assert_eq!(
            ours.memory.lock().unwrap().len(),
            1,
            "one pooled buffer after sequential use"
        );
    }

    /// The dummy hash costs no argon2 run to make (idle memory), yet verifying against it is a
    /// full run under the configured parameters, and no password matches it.
    #[tokio::test]
    async fn the_dummy_hash_is_made_without_hashing_and_verifies_like_a_real_one() {
        let argon = Arc::new(Argon2id::new(&UsersSettings::default()).unwrap());
        let p = Passwords::new(argon.clone(), 1, 0).unwrap();
        assert_eq!(
            argon.memory.lock().unwrap().len(),
            0,
            "no working memory at startup"
        );
        let parsed = PasswordHash::new(&p.dummy).unwrap();
        assert_eq!(parsed.algorithm, argon2::ARGON2ID_IDENT);
        let params = Params::try_from(&parsed).unwrap();
        assert_eq!(params.block_count(), argon.params.block_count());
        assert_eq!(
            (params.t_cost(), params.p_cost()),
            (argon.params.t_cost(), argon.params.p_cost())
        );
        assert_eq!(parsed.hash.unwrap().len(), 32);
        assert_ne!(argon.dummy().unwrap(), *p.dummy, "random each time");
        assert_eq!(
            p.verify_with(
                p.permit().await.unwrap(),
                &SecretString::from("correct horse battery"),
                None
            )
            .await,
            Some(false)
        );
        assert_eq!(
            argon.memory.lock().unwrap().len(),
            1,
            "the unknown-user path ran argon2 with the configured parameters"
        );
    }
}
