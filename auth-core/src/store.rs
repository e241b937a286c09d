//! The key store of a remote key source (JWKS, OIDC discovery, a PEM URL): one per verifier,
//! shared by every request.
//!
//! # State machine
//!
//! | state | meaning | a request needing a key | `/ready` |
//! |---|---|---|---|
//! | [`Unavailable`](StoreState::Unavailable) | nothing loaded yet, or the set is past `max_stale_seconds` | joins the fetch in flight or starts one (unless backing off); 503 + `Retry-After` (the rest of the backoff, at least 1 s) if still nothing | 503 |
//! | [`Loaded`](StoreState::Loaded) | a set younger than its TTL | verified from the set | 200 |
//! | [`Refreshing`](StoreState::Refreshing) | a fetch is in flight over a usable set | verified from the current set without waiting; a token naming an unknown `kid` waits for that fetch | 200 |
//! | [`Stale`](StoreState::Stale) | past its TTL, refreshes failing, within `max_stale_seconds` | verified from the set (`auth_jwks_stale_served_total`) | 200 |
//!
//! # Invariants
//!
//! - Readers never wait on a lock held across I/O: the current set is an `Arc` behind a
//!   `RwLock` held only to clone or swap it; fetches run in a spawned task.
//! - At most one fetch is in flight per store (single-flight); callers that need its result
//!   join it through a `watch` channel, bounded by the fetch timeout.
//! - A refresh is started by: the background task (at startup, ahead of expiry with jitter,
//!   and with exponential backoff after failures), a request when nothing usable is held
//!   (subject to the backoff), an unknown `kid` (which joins a fetch in flight, else starts one
//!   at most once per `unknown_kid_cooldown_seconds`, counted from the last fetch attempt of
//!   any kind), or
//!   [`KeyStore::refresh_now`].
//! - Fetch results land in the order the fetches started: a fetch its waiters gave up on
//!   that finishes after a newer fetch's set (or renewal) landed is discarded
//!   (`outcome="superseded"`), so an older set never replaces a newer one; its failure, after
//!   any newer outcome, starts no backoff. An older set after a newer *failure* still lands: it
//!   is the newest set there is.
//! - Time is read from the injected [`Clock`] only.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{AGE, CACHE_CONTROL, ETAG, HeaderMap, IF_NONE_MATCH};
use tokio::sync::watch;

use crate::cache::VerifiedCache;
use crate::clock::Clock;
use crate::keys::{Alg, VerifyingKey};
use crate::settings::JwksSettings;
use crate::source::{FetchError, KeySet};
use crate::verify::{AuthErrorKind, SetupError};

/// What a remote source fetches.
#[derive(Debug)]
pub(crate) enum Target {
    /// A JWKS document.
    Jwks(Url),
    /// An OIDC discovery document naming the `jwks_uri`; its `issuer` must be `issuer`.
    Discovery { url: Url, issuer: String },
    /// A PEM public key or certificate: one key, used whatever a token's `kid`.
    Pem(Url),
}

/// Where a [`KeyStore`] stands; see the [module docs](self) for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// Nothing usable: never loaded, or past maximum staleness.
    Unavailable,
    /// A set within its TTL, no fetch in flight.
    Loaded,
    /// A fetch is in flight; the current set keeps verifying.
    Refreshing,
    /// Past its TTL but within maximum staleness: the set keeps verifying.
    Stale,
}

/// A snapshot of a [`KeyStore`], for tests and operators.
#[derive(Debug, Clone)]
pub struct StoreStatus {
    /// The state.
    pub state: StoreState,
    /// Keys in the current set (0 when none was ever loaded).
    pub keys: usize,
    /// When the current set was fetched or last revalidated (a 304 renews it).
    pub fetched_at: Option<u64>,
    /// When the current set stops being fresh (`fetched_at` + the clamped `max-age`).
    pub expires_at: Option<u64>,
    /// When the set stops verifying (`expires_at` + `max_stale_seconds`).
    pub stale_until: Option<u64>,
    /// When the background refresh is due (ahead of `expires_at`, with jitter).
    pub refresh_at: Option<u64>,
    /// The `ETag` of the current set, sent as `If-None-Match`.
    pub etag: Option<String>,
    /// Failed fetches since the last success.
    pub failures: u32,
    /// No scheduled or request-triggered fetch starts before this instant (backoff).
    pub next_attempt_at: u64,
    /// Fetch attempts so far.
    pub attempts: u64,
}

/// How a fetch ended. Matches outside auth-core need a wildcard arm: a later version may tell
/// more endings apart (`Superseded` was such an addition).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FetchOutcome {
    /// A new set was loaded and swapped in.
    Loaded {
        /// Usable keys in the new set.
        keys: usize,
        /// Keys of the document skipped as unsupported.
        skipped: usize,
    },
    /// `304 Not Modified`: the set is kept and its age renewed (when it is still the set whose
    /// `ETag` the fetch sent).
    NotModified,
    /// The fetch failed; the previous set (if any) is kept.
    Failed(Arc<FetchError>),
    /// The fetch brought a set (or a renewal) after a newer fetch's set or renewal had landed
    /// (its waiters had given up on it): it was discarded, and the newer set is kept.
    Superseded,
}

impl FetchOutcome {
    /// Whether a set was loaded or revalidated (by this fetch, or by a newer one that
    /// superseded it).
    pub fn is_success(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }
}

/// A loaded key set and its freshness.
#[derive(Debug)]
struct Current {
    keys: Arc<KeySet>,
    fetched_at: u64,
    expires_at: u64,
    /// The freshness lifetime it was loaded with (clamped): a 304 without `Cache-Control`
    /// renews it for as long (RFC 9111 §4.3.4: the stored headers stay in force).
    ttl: u64,
    etag: Option<String>,
}

type Flight = watch::Receiver<Option<FetchOutcome>>;

/// A fetch as its own task sees it: the flight its callers join, and its place in the order
/// fetches started (`Control::attempts` when it started).
#[derive(Debug)]
struct Attempt {
    flight: Flight,
    generation: u64,
}

/// The schedule: never held across an `.await`.
#[derive(Debug, Default)]
struct Control {
    flight: Option<Flight>,
    failures: u32,
    /// No fetch starts before this, except [`Trigger::Force`] (the backoff, capped for the
    /// usability of the set held at the failure).
    next_attempt_at: u64,
    /// The same backoff capped at `auth.jwks.startup_backoff_max_seconds`: what applies once
    /// nothing usable is held, whatever was held at the failure ([`KeyStore::next_attempt`]).
    next_attempt_unusable: u64,
    last_attempt_at: Option<u64>,
    refresh_at: u64,
    attempts: u64,
    /// The generation of the newest fetch whose outcome landed, failures included: an older
    /// failure is not recorded.
    landed: u64,
    /// The generation of the newest fetch whose set or renewal landed: an older one is
    /// discarded.
    loaded: u64,
}

/// Why a fetch is wanted: each has its own gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The background schedule: nothing usable, or the refresh is due; not while backing off.
    Schedule,
    /// A caller needs a key and nothing usable is held; not while backing off.
    Unusable,
    /// A token named an unknown `kid`: once per cooldown, not while backing off.
    UnknownKid,
    /// Explicit: always (still single-flight).
    Force,
}

/// The key store of one remote key source. See the [module docs](self).
pub struct KeyStore {
    target: Target,
    client: reqwest::Client,
    settings: JwksSettings,
    clock: Arc<dyn Clock>,
    current: RwLock<Option<Arc<Current>>>,
    control: Mutex<Control>,
    background: AtomicBool,
    completed: watch::Sender<u64>,
    me: Weak<KeyStore>,
    /// The verified-token cache of the verifier this store serves: trimmed to the keys of each
    /// new set as it is loaded ([`KeyStore::watch`]).
    cache: OnceLock<Arc<VerifiedCache>>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("source", &crate::source::shown_url(self.url()))
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// Metric names, all prefixed `auth_jwks_`.
pub(crate) mod metric {
    pub const FETCHES: &str = "auth_jwks_fetches_total";
    pub const SECONDS_SINCE_REFRESH: &str = "auth_jwks_seconds_since_refresh";
    pub const KEYS_LOADED: &str = "auth_jwks_keys_loaded";
    pub const KEYS_SKIPPED: &str = "auth_jwks_keys_skipped_total";
    pub const STALE_SERVED: &str = "auth_jwks_stale_served_total";
    pub const UNKNOWN_KID: &str = "auth_jwks_unknown_kid_rejections_total";
    pub const REFRESH_SKIPPED: &str = "auth_jwks_refreshes_skipped_total";
}

/// The background task wakes at least this often (to update the age gauge and re-check).
const MAX_WAKE: u64 = 10;

impl KeyStore {
    pub(crate) fn new(
        target: Target,
        settings: &JwksSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, SetupError> {
        let timeout = Duration::from_secs(settings.timeout_seconds.max(1));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("auth-core/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                SetupError::new("auth.jwks", format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(Arc::new_cyclic(|me| Self {
            target,
            client,
            settings: settings.clone(),
            clock,
            current: RwLock::new(None),
            control: Mutex::new(Control::default()),
            background: AtomicBool::new(false),
            completed: watch::channel(0).0,
            me: me.clone(),
            cache: OnceLock::new(),
        }))
    }

    /// The URL fetched first (the JWKS, discovery document or PEM).
    pub fn url(&self) -> &Url {
        match &self.target {
            Target::Jwks(url) | Target::Pem(url) | Target::Discovery { url, .. } => url,
        }
    }

    /// The issuer a discovery document must name (`auth.issuer`, else the discovery URL's
    /// base); `None` for the other sources.
    pub fn discovery_issuer(&self) -> Option<&str> {
        match &self.target {
            Target::Discovery { issuer, .. } => Some(issuer),
            _ => None,
        }
    }

    /// Whether a usable set is held: loaded and not past maximum staleness (`/ready`).
    pub fn is_ready(&self) -> bool {
        self.usable(self.clock.now()).is_some()
    }

    /// A snapshot of the store.
    pub fn status(&self) -> StoreStatus {
        let now = self.clock.now();
        let current = self.current();
        let ctl = self.control();
        let stale_until = current
            .as_ref()
            .map(|c| c.expires_at.saturating_add(self.settings.max_stale_seconds));
        let state = match (&current, stale_until) {
            (Some(_), Some(until)) if now < until => {
                if ctl.flight.is_some() {
                    StoreState::Refreshing
                } else if current.as_ref().is_some_and(|c| now >= c.expires_at) {
                    StoreState::Stale
                } else {
                    StoreState::Loaded
                }
            }
            _ => StoreState::Unavailable,
        };
        StoreStatus {
            state,
            keys: current.as_ref().map_or(0, |c| c.keys.len()),
            fetched_at: current.as_ref().map(|c| c.fetched_at),
            expires_at: current.as_ref().map(|c| c.expires_at),
            stale_until,
            refresh_at: current.as_ref().map(|_| ctl.refresh_at),
            etag: current.as_ref().and_then(|c| c.etag.clone()),
            failures: ctl.failures,
            next_attempt_at: Self::next_attempt(&ctl, stale_until.is_some_and(|until| now < until)),
            attempts: ctl.attempts,
        }
    }

    /// One step of the background schedule, which the background task runs in a loop: joins
    /// the fetch in flight, or starts one when nothing usable is held or the refresh is due
    /// (and no backoff is running), and returns its outcome; `None` when nothing was due.
    ///
    /// Tests with a [`crate::clock::ManualClock`] and `auth.jwks.background_refresh = false`
    /// call it after moving the clock.
    pub async fn tick(&self) -> Option<FetchOutcome> {
        let now = self.clock.now();
        self.record_age(now);
        let flight = self.begin(Trigger::Schedule, now).ok()?;
        Some(self.wait(flight).await)
    }

    /// Fetches now (or joins the fetch in flight), whatever the schedule, and returns the
    /// outcome.
    pub async fn refresh_now(&self) -> FetchOutcome {
        let now = self.clock.now();
        match self.begin(Trigger::Force, now) {
            Ok(flight) => self.wait(flight).await,
            Err(_) => FetchOutcome::Failed(Arc::new(FetchError::Interrupted)),
        }
    }

    /// If nothing usable is held: joins or starts a fetch (unless backing off) and waits for it.
    /// Returns [`KeyStore::is_ready`].
    pub async fn load(&self) -> bool {
        let now = self.clock.now();
        if self.usable(now).is_none()
            && let Ok(flight) = self.begin(Trigger::Unusable, now)
        {
            self.wait(flight).await;
        }
        self.is_ready()
    }

    /// Waits until at least `n` fetch attempts have completed (whoever started them): lets a
    /// test await the background task instead of sleeping.
    pub async fn wait_for_attempts(&self, n: u64) {
        let mut completed = self.completed.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we borrow it.
        let _ = completed.wait_for(|done| *done >= n).await;
    }

    /// Starts the background task once, when enabled and a Tokio runtime is running.
    pub(crate) fn ensure_background(&self) {
        if !self.settings.background_refresh || self.background.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        // The guard is made before the task is spawned, and moved into it: a task dropped
        // before its first poll (its runtime shut down at once) still clears the flag.
        let running = Running(self.me.clone());
        let me = self.me.clone();
        runtime.spawn(async move {
            let _running = running;
            run_background(me).await;
        });
    }

    /// The key that verifies a token with this `kid` and `alg`.
    pub(crate) async fn key(
        &self,
        kid: Option<&str>,
        alg: Alg,
    ) -> Result<Arc<VerifyingKey>, AuthErrorKind> {
        self.ensure_background();
        let ignore_kid = matches!(self.target, Target::Pem(_));
        let now = self.clock.now();
        let set = match self.usable(now) {
            Some(set) => set,
            None => {
                // Nothing usable: join or start a fetch, bounded by the fetch timeout. `begin`
                // starts none when a set has arrived since this look (it looks again under its
                // lock): a thousand first requests make one fetch, however they interleave.
                if let Ok(flight) = self.begin(Trigger::Unusable, now) {
                    self.wait(flight).await;
                }
                self.usable(self.clock.now())
                    .ok_or(AuthErrorKind::Unavailable)?
            }
        };
        let refreshable = kid.is_some() && !ignore_kid;
        match self.find(&set, kid, alg, ignore_kid, !refreshable) {
            // No key of that kid, or none that fits `alg` (the issuer may have re-keyed the
            // kid to another key type): a refresh may bring it. jose reloads on any "no
            // matching key"; a signature that fails is not that, and starts nothing.
            Err(AuthErrorKind::UnknownKid | AuthErrorKind::Algorithm) if refreshable => {}
            found => return found,
        }
        // Read again: the look above may have waited on a fetch, and a refresh started now
        // must start its cooldown now.
        self.unknown_kid(&set, kid, alg, self.clock.now()).await
    }

    /// A `kid` that `set` does not hold (or holds with no key that fits `alg`): join the fetch in
    /// flight, or start one refresh per cooldown; within the cooldown, with no fetch in flight,
    /// 401 at once (negative cache), unless a fetch that finished after `set` was read has
    /// brought the kid.
    async fn unknown_kid(
        &self,
        set: &Arc<Current>,
        kid: Option<&str>,
        alg: Alg,
        now: u64,
    ) -> Result<Arc<VerifyingKey>, AuthErrorKind> {
        // A set swapped in since `set` was read (the refresh of a rotation, finishing while
        // this request decoded its token) may hold the kid: no fetch is needed for it, even
        // past a cooldown shorter than that refresh took.
        if let Some(latest) = self.usable(now).filter(|latest| !Arc::ptr_eq(latest, set)) {
            match self.find(&latest, kid, alg, false, false) {
                Err(AuthErrorKind::UnknownKid | AuthErrorKind::Algorithm) => {}
                found => return found,
            }
        }
        match self.begin(Trigger::UnknownKid, now) {
            Ok(flight) => {
                self.wait(flight).await;
            }
            Err(reason) => {
                metrics::counter!(metric::REFRESH_SKIPPED, "reason" => reason).increment(1);
                // The refresh that started the cooldown may have swapped its set in between
                // this request's look and `begin`: a rotation's new kid must not be refused
                // for that.
                let latest = self.usable(self.clock.now());
                return self.find(latest.as_ref().unwrap_or(set), kid, alg, false, true);
            }
        }
        let set = self
            .usable(self.clock.now())
            .ok_or(AuthErrorKind::Unavailable)?;
        self.find(&set, kid, alg, false, true)
    }

    /// Every key of the usable set named `kid` that fits `alg` (see [`KeySet::fitting`]); none
    /// for a PEM URL, whose one key answers whatever the `kid`.
    pub(crate) fn same_kid(&self, kid: &str, alg: Alg) -> Vec<Arc<VerifyingKey>> {
        if matches!(self.target, Target::Pem(_)) {
            return Vec::new();
        }
        self.usable(self.clock.now())
            .map(|set| set.keys.fitting(Some(kid), alg, false).cloned().collect())
            .unwrap_or_default()
    }

    /// Looks a key up in `set`, counting stale sets served and (when `count_unknown`: the
    /// answer is final) unknown-kid rejections.
    fn find(
        &self,
        set: &Current,
        kid: Option<&str>,
        alg: Alg,
        ignore_kid: bool,
        count_unknown: bool,
    ) -> Result<Arc<VerifyingKey>, AuthErrorKind> {
        let found = set.keys.find(kid, alg, ignore_kid);
        match &found {
            Ok(_) if self.clock.now() >= set.expires_at => {
                metrics::counter!(metric::STALE_SERVED).increment(1);
            }
            Err(AuthErrorKind::UnknownKid) if count_unknown => {
                metrics::counter!(metric::UNKNOWN_KID).increment(1);
            }
            _ => {}
        }
        found
    }

    fn current(&self) -> Option<Arc<Current>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        let mut ctl = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        // The wall clock stepped back past the last fetch attempt (NTP correcting a clock that
        // ran fast): the times the schedule holds are later than they mean. Waiting them out
        // would stop every fetch (backoff, cooldown, refresh) for as long as the step; they
        // are forgotten instead, and the refresh is due.
        let now = self.clock.now();
        if ctl.last_attempt_at.is_some_and(|t| t > now) {
            ctl.last_attempt_at = None;
            ctl.next_attempt_at = now;
            ctl.next_attempt_unusable = now;
            ctl.refresh_at = now;
        }
        ctl
    }

    /// The current set, unless none was loaded or it is past maximum staleness.
    fn usable(&self, now: u64) -> Option<Arc<Current>> {
        self.current()
            .filter(|c| now < c.expires_at.saturating_add(self.settings.max_stale_seconds))
    }

    /// The fetch in flight to join, or a new one when `trigger`'s gate allows it; else the
    /// reason it was skipped (the metric label).
    fn begin(&self, trigger: Trigger, now: u64) -> Result<Flight, &'static str> {
        let mut ctl = self.control();
        // Looked at under the lock, not before it: a fetch swaps its set in before it clears
        // `flight` (under this lock), so no flight here and no usable set means none arrived.
        let usable = self.usable(now).is_some();
        let backing_off = now < Self::next_attempt(&ctl, usable);
        match trigger {
            // A fetch in flight may bring the kid: join it whatever the cooldown (which only
            // stops a new fetch).
            Trigger::UnknownKid if ctl.flight.is_some() => {}
            Trigger::UnknownKid => {
                let cooling = ctl.last_attempt_at.is_some_and(|t| {
                    now < t.saturating_add(self.settings.unknown_kid_cooldown_seconds)
                });
                if cooling {
                    return Err("cooldown");
                }
                if backing_off {
                    return Err("backoff");
                }
            }
            _ if ctl.flight.is_some() => {}
            // A set arrived since the caller found none.
            Trigger::Unusable if usable => return Err("loaded"),
            Trigger::Unusable if backing_off => return Err("backoff"),
            Trigger::Schedule if backing_off || (usable && now < ctl.refresh_at) => {
                return Err("not_due");
            }
            _ => {}
        }
        if let Some(flight) = &ctl.flight {
            return Ok(flight.clone());
        }
        Ok(self.start(&mut ctl, now))
    }

    /// Starts a fetch in a spawned task (so no caller's cancellation stops it).
    fn start(&self, ctl: &mut Control, now: u64) -> Flight {
        let (tx, rx) = watch::channel(None);
        ctl.last_attempt_at = Some(now);
        ctl.attempts += 1;
        let (Some(me), Ok(runtime)) = (self.me.upgrade(), tokio::runtime::Handle::try_current())
        else {
            let _ = tx.send(Some(FetchOutcome::Failed(Arc::new(
                FetchError::Interrupted,
            ))));
            return rx;
        };
        ctl.flight = Some(rx.clone());
        let etag = self.current().and_then(|c| c.etag.clone());
        let mine = Attempt {
            flight: rx.clone(),
            generation: ctl.attempts,
        };
        runtime.spawn(async move {
            let outcome = me.fetch_and_apply(etag, &mine).await;
            let _ = tx.send(Some(outcome));
        });
        rx
    }

    /// Waits for a fetch's outcome, never longer than its own timeouts allow.
    async fn wait(&self, mut flight: Flight) -> FetchOutcome {
        // Discovery makes two requests, each bounded by the client's total timeout.
        let limit = Duration::from_secs(self.settings.timeout_seconds.max(1) * 2 + 1);
        let outcome = match tokio::time::timeout(limit, flight.wait_for(Option::is_some)).await {
            Ok(Ok(outcome)) => outcome.clone(),
            _ => None,
        };
        outcome.unwrap_or_else(|| {
            // The task is gone (runtime shutting down) or stuck: let the next caller start anew.
            Self::land(&mut self.control(), &flight);
            FetchOutcome::Failed(Arc::new(FetchError::Interrupted))
        })
    }

    /// One fetch attempt: swaps the set in (or renews it), updates the schedule, logs one line
    /// and counts the outcome.
    async fn fetch_and_apply(&self, etag: Option<String>, mine: &Attempt) -> FetchOutcome {
        let result = self.fetch(etag.as_deref()).await;
        let now = self.clock.now();
        let source = crate::source::shown_url(self.url());
        let outcome = self.apply(result, now, &source, mine);
        self.completed.send_modify(|n| *n += 1);
        outcome
    }

    /// Applies the result of the fetch `mine`, then ends its flight; discards it instead when
    /// a newer fetch's result has landed.
    fn apply(
        &self,
        result: Result<Fetched, FetchError>,
        now: u64,
        source: &str,
        mine: &Attempt,
    ) -> FetchOutcome {
        // One hold of the schedule's lock from the order check to the swap: no newer fetch can
        // land in between. The flight ends in the same hold, so `begin` (which looks at the set
        // under this lock) never sees it ended before the set is in, whichever comes first here.
        let mut ctl = self.control();
        Self::land(&mut ctl, &mine.flight);
        let newer_landed = match &result {
            Ok(_) => mine.generation < ctl.loaded,
            Err(_) => mine.generation < ctl.landed,
        };
        if newer_landed {
            drop(ctl);
            metrics::counter!(metric::FETCHES, "outcome" => "superseded").increment(1);
            return match result {
                Ok(_) => {
                    tracing::warn!(
                        source,
                        outcome = "superseded",
                        "key set fetch: finished after a newer fetch's set had landed; its result is discarded"
                    );
                    FetchOutcome::Superseded
                }
                // Still this fetch's outcome, only not the schedule's: a newer outcome stands.
                Err(error) => {
                    tracing::warn!(
                        source,
                        outcome = "superseded",
                        error = %error,
                        "key set fetch: failed after a newer fetch's outcome had landed; no backoff for it"
                    );
                    FetchOutcome::Failed(Arc::new(error))
                }
            };
        }
        ctl.landed = ctl.landed.max(mine.generation);
        if result.is_ok() {
            ctl.loaded = mine.generation;
        }
        let outcome = match result {
            Ok(Fetched::Set {
                keys,
                skipped,
                etag,
                ttl,
            }) => {
                let count = keys.len();
                if let Some(cache) = self.cache.get() {
                    let kept: Vec<&str> = keys.keys().map(|k| k.thumbprint.as_str()).collect();
                    // Only when a key left: the same set again (every 200 from an issuer
                    // without ETags) walks no cache under its lock. A hit checks its key anyway.
                    let left = self.current().is_some_and(|current| {
                        current
                            .keys
                            .keys()
                            .any(|k| !kept.contains(&k.thumbprint.as_str()))
                    });
                    if left {
                        cache.retain_keys(&kept);
                    }
                }
                self.swap(Current {
                    keys: Arc::new(keys),
                    fetched_at: now,
                    expires_at: now.saturating_add(ttl),
                    ttl,
                    etag,
                });
                Self::succeeded(&mut ctl, now, ttl);
                drop(ctl);
                crate::source::log_skipped(Some(source), &skipped);
                tracing::info!(
                    source,
                    outcome = "ok",
                    keys = count,
                    skipped = skipped.len(),
                    ttl_seconds = ttl,
                    "key set fetch: loaded"
                );
                metrics::gauge!(metric::KEYS_LOADED).set(count as f64);
                FetchOutcome::Loaded {
                    keys: count,
                    skipped: skipped.len(),
                }
            }
            Ok(Fetched::NotModified { ttl, etag }) => {
                // Only the set the 304 vouches for is renewed: an older fetch may have landed
                // another since this one sent its `If-None-Match` (it keeps its own age).
                let vouched = self.current().filter(|old| old.etag == etag);
                let renewed = vouched.is_some();
                // Without a `max-age` of its own, the 304 renews the set for the lifetime it
                // was loaded with, not the default.
                let ttl = ttl
                    .or(vouched.as_ref().map(|old| old.ttl))
                    .unwrap_or_else(|| self.ttl(None));
                if let Some(old) = vouched {
                    self.swap(Current {
                        keys: Arc::clone(&old.keys),
                        fetched_at: now,
                        expires_at: now.saturating_add(ttl),
                        ttl,
                        etag: old.etag.clone(),
                    });
                }
                Self::succeeded(&mut ctl, now, ttl);
                if !renewed {
                    // The issuer answered, but for a set that is no longer the current one:
                    // nothing vouches for the current set, so its refresh stays due (else it
                    // would be served past its expiry until the next scheduled refresh).
                    ctl.refresh_at = now;
                }
                drop(ctl);
                tracing::info!(
                    source,
                    outcome = "not_modified",
                    ttl_seconds = ttl,
                    renewed,
                    "key set fetch: not modified (renewed: whether the set it vouches for is still the current one)"
                );
                FetchOutcome::NotModified
            }
            Err(error) => {
                let usable = self.usable(now).is_some();
                let (failures, retry_in) = self.failed(&mut ctl, usable, now);
                drop(ctl);
                let label = outcome_label(&error);
                if usable {
                    tracing::warn!(source, outcome = label, error = %error, failures, retry_in_seconds = retry_in,
                        "key set fetch: failed, keeping the last good set");
                } else {
                    tracing::error!(source, outcome = label, error = %error, failures, retry_in_seconds = retry_in,
                        "key set fetch: failed, no usable key set");
                }
                metrics::counter!(metric::FETCHES, "outcome" => label).increment(1);
                return FetchOutcome::Failed(Arc::new(error));
            }
        };
        let label = if matches!(outcome, FetchOutcome::NotModified) {
            "not_modified"
        } else {
            "ok"
        };
        metrics::counter!(metric::FETCHES, "outcome" => label).increment(1);
        metrics::gauge!(metric::SECONDS_SINCE_REFRESH).set(0.0);
        outcome
    }

    /// Ends the flight `mine`, unless it is no longer the one in flight: its waiters gave up on
    /// it (in [`KeyStore::wait`]) and a newer fetch runs, which callers must go on joining.
    fn land(ctl: &mut Control, mine: &Flight) {
        if ctl.flight.as_ref().is_some_and(|f| f.same_channel(mine)) {
            ctl.flight = None;
        }
    }

    /// From now on, each newly loaded key set drops the entries of `cache` verified by keys
    /// no longer in it (rotation, removal, new material under an old `kid`), without waiting
    /// for the next request that presents one. Set once, by [`crate::Auth`].
    pub(crate) fn watch(&self, cache: Arc<VerifiedCache>) {
        let _ = self.cache.set(cache);
    }

    fn swap(&self, current: Current) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(current));
    }

    fn succeeded(ctl: &mut Control, now: u64, ttl: u64) {
        ctl.failures = 0;
        ctl.next_attempt_at = 0;
        ctl.next_attempt_unusable = 0;
        ctl.refresh_at = now.saturating_add(refresh_delay(ttl));
    }

    /// Seconds until the next fetch may start, at least 1: the `Retry-After` of a 503 while no
    /// usable key set is held. While backing off, the rest of the backoff; otherwise (a fetch
    /// is in flight, or may start at once) 1.
    pub fn retry_after(&self) -> u64 {
        let now = self.clock.now();
        let usable = self.usable(now).is_some();
        Self::next_attempt(&self.control(), usable)
            .saturating_sub(now)
            .max(1)
    }

    /// When the backoff ends, for a store that holds a usable set or not: a backoff that grew
    /// to `auth.jwks.backoff_max_seconds` while a set was held ends, once that set is past
    /// maximum staleness, where `auth.jwks.startup_backoff_max_seconds` would have ended it.
    /// Otherwise a service would answer 503 for minutes after its issuer came back.
    fn next_attempt(ctl: &Control, usable: bool) -> u64 {
        if usable {
            ctl.next_attempt_at
        } else {
            ctl.next_attempt_at.min(ctl.next_attempt_unusable)
        }
    }

    /// Records a failure (`usable`: a usable set is held, so the longer backoff cap applies);
    /// returns the failure count and the backoff in seconds.
    fn failed(&self, ctl: &mut Control, usable: bool, now: u64) -> (u32, u64) {
        let cap = if usable {
            self.settings.backoff_max_seconds
        } else {
            self.settings.startup_backoff_max_seconds
        };
        ctl.failures = ctl.failures.saturating_add(1);
        let exponent = ctl.failures.saturating_sub(1).min(32);
        let uncapped = self
            .settings
            .backoff_initial_seconds
            .max(1)
            .saturating_mul(1u64 << exponent);
        let backoff = uncapped.min(cap.max(1));
        ctl.next_attempt_at = now.saturating_add(backoff);
        ctl.next_attempt_unusable =
            now.saturating_add(uncapped.min(self.settings.startup_backoff_max_seconds.max(1)));
        (ctl.failures, backoff)
    }

    /// Sets the age gauge.
    fn record_age(&self, now: u64) {
        if let Some(current) = self.current() {
            metrics::gauge!(metric::SECONDS_SINCE_REFRESH)
                .set(now.saturating_sub(current.fetched_at) as f64);
        }
    }

    /// How long the background task may sleep before the schedule needs it.
    fn wake_delay(&self) -> Duration {
        let now = self.clock.now();
        let usable = self.usable(now).is_some();
        let ctl = self.control();
        let due = if usable {
            ctl.refresh_at.max(ctl.next_attempt_at)
        } else {
            Self::next_attempt(&ctl, false)
        };
        Duration::from_secs(due.saturating_sub(now).clamp(1, MAX_WAKE))
    }

    async fn fetch(&self, etag: Option<&str>) -> Result<Fetched, FetchError> {
        let (url, etag) = match &self.target {
            Target::Jwks(url) | Target::Pem(url) => (url.clone(), etag),
            Target::Discovery { url, issuer } => {
                let Body::Full { bytes, .. } = self.get(url, None).await? else {
                    return Err(FetchError::Status(304));
                };
                (
                    crate::source::jwks_uri_from_discovery(&bytes, issuer, url)?,
                    etag,
                )
            }
        };
        match self.get(&url, etag).await? {
            Body::NotModified { max_age } => Ok(Fetched::NotModified {
                ttl: max_age.map(|m| self.ttl(Some(m))),
                etag: etag.map(str::to_owned),
            }),
            Body::Full {
                bytes,
                etag,
                max_age,
            } => {
                let (keys, mut skipped) = if matches!(self.target, Target::Pem(_)) {
                    (KeySet::new([VerifyingKey::from_pem(&bytes)?]), Vec::new())
                } else {
                    KeySet::parse_jwks(&bytes)?
                };
                let keys = if self.settings.refuse_dev_keys {
                    let (dev, kept): (Vec<_>, Vec<_>) = keys
                        .keys()
                        .cloned()
                        .partition(|k| crate::keys::dev::is_dev_key(&k.thumbprint));
                    // A set of nothing but fixtures keys is no set: the fetch fails and the last
                    // good set stays, as for any set without a usable key.
                    if kept.is_empty() {
                        tracing::warn!(
                            dev_keys = dev.len(),
                            "key set fetch: every key is a dev-only fixtures key, refused in production and on a server.host beyond loopback"
                        );
                        return Err(FetchError::NoKeys);
                    }
                    for k in &dev {
                        skipped.push(crate::source::SkippedKey {
                            kid: k.kid.clone(),
                            reason: "dev_key",
                            detail:
                                "a dev-only fixtures key, refused in production and beyond loopback"
                                    .into(),
                        });
                    }
                    KeySet::new(kept)
                } else {
                    keys
                };
                Ok(Fetched::Set {
                    keys,
                    skipped,
                    etag,
                    ttl: self.ttl(max_age),
                })
            }
        }
    }

    /// `max-age` (or the default) clamped to `[min_ttl_seconds, max_ttl_seconds]`.
    fn ttl(&self, max_age: Option<u64>) -> u64 {
        let s = &self.settings;
        max_age
            .unwrap_or(s.default_ttl_seconds)
            .max(s.min_ttl_seconds)
            .min(s.max_ttl_seconds)
    }

    /// A GET with the client's timeouts, no redirects, and the body counted while streaming.
    async fn get(&self, url: &Url, etag: Option<&str>) -> Result<Body, FetchError> {
        let max = self.settings.max_body_bytes;
        let mut request = self.client.get(url.clone());
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let mut res = request.send().await?;
        let max_age = max_age(res.headers());
        if res.status() == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Body::NotModified { max_age });
        }
        if !res.status().is_success() {
            return Err(FetchError::Status(res.status().as_u16()));
        }
        if res.content_length().is_some_and(|len| len > max as u64) {
            return Err(FetchError::TooLarge(max));
        }
        let etag = res
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = res.chunk().await? {
            if bytes.len() + chunk.len() > max {
                return Err(FetchError::TooLarge(max));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Body::Full {
            bytes,
            etag,
            max_age,
        })
    }
}

/// The background task: [`KeyStore::tick`] in a loop, sleeping until the schedule needs it
/// (between 1 and 10 s). It ends when the store is dropped.
/// Clears the store's "background task running" flag when the task ends however it ends (its
/// runtime shut down, before or after its first poll; a panic): the next request then starts
/// it again, on the runtime serving it. A store built in one runtime and served from another
/// would otherwise never refresh again.
struct Running(Weak<KeyStore>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(store) = self.0.upgrade() {
            store.background.store(false, Ordering::Release);
        }
    }
}

async fn run_background(store: Weak<KeyStore>) {
    loop {
        let delay = {
            let Some(store) = store.upgrade() else {
                return;
            };
            store.tick().await;
            store.wake_delay()
        };
        tokio::time::sleep(delay).await;
    }
}

/// When the background refresh is due: between 80 % and 90 % of the TTL (jitter spreads the
/// refreshes of many instances).
fn refresh_delay(ttl: u64) -> u64 {
    let mut random = [0u8; 2];
    let jitter = if aws_lc_rs::rand::fill(&mut random).is_ok() {
        u64::from(u16::from_le_bytes(random)) % 1001
    } else {
        500
    };
    // ttl * (0.8 + 0.1 * jitter / 1000)
    ttl.saturating_mul(8_000 + jitter) / 10_000
}

/// How long the answer may be held, by its `Cache-Control` (RFC 9111): `no-cache` or
/// `no-store` anywhere count as 0, whatever `max-age` says (the field-named form
/// `no-cache="…"` too: on the safe side); else the first `max-age=N` that parses, less
/// the `Age` a cache in between already held it for. Then clamped to the TTL bounds.
fn max_age(headers: &HeaderMap) -> Option<u64> {
    let mut max_age = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
            let name = name.trim().to_ascii_lowercase();
            if name == "no-cache" || name == "no-store" {
                return Some(0);
            }
            if name == "max-age" && max_age.is_none() {
                max_age = arg.trim().trim_matches('"').parse::<u64>().ok();
            }
        }
    }
    let age = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    max_age.map(|n| n.saturating_sub(age))
}

/// The `auth_jwks_fetches_total{outcome}` label of a failure.
fn outcome_label(error: &FetchError) -> &'static str {
    match error {
        FetchError::Http(e) if e.is_timeout() => "timeout",
        FetchError::Http(_) => "network",
        FetchError::Status(_) => "status",
        FetchError::TooLarge(_) => "too_large",
        FetchError::Json(_) | FetchError::NoKeys | FetchError::Key(_) => "invalid",
        FetchError::IssuerMismatch { .. } | FetchError::Url(_) => "discovery",
        FetchError::Interrupted => "interrupted",
    }
}

/// A response body, or 304.
enum Body {
    Full {
        bytes: Vec<u8>,
        etag: Option<String>,
        max_age: Option<u64>,
    },
    NotModified {
        max_age: Option<u64>,
    },
}

/// A fetched set, or 304.
enum Fetched {
    Set {
        keys: KeySet,
        skipped: Vec<crate::source::SkippedKey>,
        etag: Option<String>,
        ttl: u64,
    },
    NotModified {
        /// From the 304's own `max-age`, if it has one.
        ttl: Option<u64>,
        /// The `ETag` sent in `If-None-Match`: the set the 304 vouches for.
        etag: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(CACHE_CONTROL, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn max_age_is_parsed() {
        assert_eq!(max_age(&headers(&["public, max-age=120"])), Some(120));
        assert_eq!(
            max_age(&headers(&["Max-Age = 7, must-revalidate"])),
            Some(7)
        );
        assert_eq!(max_age(&headers(&["max-age=\"9\""])), Some(9));
        assert_eq!(max_age(&headers(&["no-store"])), Some(0));
        // no-store and no-cache win over a max-age, wherever they are.
        assert_eq!(max_age(&headers(&["no-cache", "max-age=30"])), Some(0));
        assert_eq!(max_age(&headers(&["max-age=30, no-store"])), Some(0));
        // A cache in between held it for Age seconds already.
        let mut aged = headers(&["max-age=300"]);
        aged.insert(AGE, "100".parse().unwrap());
        assert_eq!(max_age(&aged), Some(200));
        aged.insert(AGE, "1000".parse().unwrap());
        assert_eq!(max_age(&aged), Some(0));
        aged.insert(AGE, "soon".parse().unwrap());
        assert_eq!(max_age(&aged), Some(300));
        assert_eq!(max_age(&headers(&["public"])), None);
        assert_eq!(max_age(&headers(&["max-age=-1"])), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }

    const NOW: u64 = 1_800_000_000;

    /// A store whose endpoint is never reached (no background task; a fetch it started would
    /// count an attempt).
    fn store() -> Arc<KeyStore> {
        let settings = JwksSettings {
            background_refresh: false,
            ..JwksSettings::default()
        };
        let url = Url::parse("http://127.0.0.1:9/jwks.json").unwrap();
        let clock = Arc::new(crate::clock::ManualClock::new(NOW));
        KeyStore::new(Target::Jwks(url), &settings, clock).unwrap()
    }

    /// A loaded set holding one HS256 key named `kid`.
    fn set_of(kid: &str) -> Current {
        let key = VerifyingKey::from_secret(&[7; 32])
            .unwrap()
            .with_kid(Some(kid.to_owned()));
        Current {
            keys: Arc::new(KeySet::new([key])),
            fetched_at: NOW,
            expires_at: NOW + 600,
            ttl: 600,
            etag: None,
        }
    }

    /// The race of a thousand first requests: one found nothing, the fetch finished (set
    /// swapped in, flight cleared), then it asks for a fetch. It must start none.
    #[test]
    fn a_set_that_arrived_since_the_caller_looked_starts_no_fetch() {
        let store = store();
        store.swap(set_of("a"));
        assert_eq!(store.begin(Trigger::Unusable, NOW).err(), Some("loaded"));
        assert_eq!(store.control().attempts, 0);
        // With nothing usable it still starts one (here without a runtime: it fails at once).
        let empty = self::store();
        assert!(empty.begin(Trigger::Unusable, NOW).is_ok());
        assert_eq!(empty.control().attempts, 1);
    }

    /// A rotation's new kid, read by a request just before the refresh that brings it swaps
    /// its set in: within the cooldown that refresh started, the kid is found, not refused.
    #[tokio::test]
    async fn a_kid_brought_by_the_refresh_that_started_the_cooldown_is_found() {
        let store = store();
        let before = Arc::new(set_of("old"));
        store.swap(set_of("new"));
        store.control().last_attempt_at = Some(NOW);
        let key = store
            .unknown_kid(&before, Some("new"), Alg::HS256, NOW)
            .await
            .unwrap();
        assert_eq!(key.kid.as_deref(), Some("new"));
        assert!(matches!(
            store
                .unknown_kid(&before, Some("other"), Alg::HS256, NOW)
                .await,
            Err(AuthErrorKind::UnknownKid)
        ));
        // The set it read is the latest: refused at once, as before.
        let latest = store.current().unwrap();
        assert!(matches!(
            store.unknown_kid(&latest, Some("x"), Alg::HS256, NOW).await,
            Err(AuthErrorKind::UnknownKid)
        ));
        assert_eq!(store.control().attempts, 0, "no fetch within the cooldown");
        // Past the cooldown (a refresh that took longer than it), the kid the refresh brought
        // is found without a fetch.
        store.control().last_attempt_at = Some(NOW - 3600);
        let key = store
            .unknown_kid(&before, Some("new"), Alg::HS256, NOW)
            .await
            .unwrap();
        assert_eq!(key.kid.as_deref(), Some("new"));
        assert_eq!(
            store.control().attempts,
            0,
            "no fetch for a kid already held"
        );
    }

    /// A fetch's own view of itself, as `start` makes it.
    fn attempt(generation: u64) -> Attempt {
        Attempt {
            flight: watch::channel(None).1,
            generation,
        }
    }

    fn fetched(kid: &str) -> Result<Fetched, FetchError> {
        Ok(Fetched::Set {
            keys: Arc::unwrap_or_clone(set_of(kid).keys),
            skipped: Vec::new(),
            etag: None,
            ttl: 600,
        })
    }

    fn kids(store: &KeyStore) -> Vec<String> {
        let current = store.current().unwrap();
        let mut kids: Vec<String> = current.keys.keys().filter_map(|k| k.kid.clone()).collect();
        kids.sort();
        kids
    }

    /// A fetch whose waiters gave up on it (its flight cleared, a newer fetch started) that
    /// finishes after all: the newer fetch stays the one to join, so no third starts beside it.
    #[test]
    fn a_fetch_given_up_on_does_not_end_the_newer_ones_flight() {
        let store = store();
        let abandoned = attempt(1);
        let newer = attempt(2);
        store.control().flight = Some(newer.flight.clone());
        assert!(
            store
                .apply(fetched("a"), NOW, "test", &abandoned)
                .is_success()
        );
        let in_flight = store.control().flight.clone();
        assert!(in_flight.is_some_and(|f| f.same_channel(&newer.flight)));
        store.apply(Err(FetchError::Interrupted), NOW, "test", &abandoned);
        let in_flight = store.control().flight.clone();
        assert!(in_flight.is_some_and(|f| f.same_channel(&newer.flight)));
        // Its own flight it ends.
        store.apply(Err(FetchError::Interrupted), NOW, "test", &newer);
        assert!(store.control().flight.is_none());
    }

    /// The same abandoned fetch, finishing after the newer one's set landed: it neither swaps
    /// its older set back in, nor renews it, nor backs the store off for its failure.
    #[test]
    fn a_fetch_finishing_after_a_newer_ones_set_is_discarded() {
        let store = store();
        let abandoned = attempt(1);
        let newer = attempt(2);
        store.control().flight = Some(newer.flight.clone());
        assert!(matches!(
            store.apply(fetched("new"), NOW, "test", &newer),
            FetchOutcome::Loaded { keys: 1, .. }
        ));
        assert!(store.control().flight.is_none());
        assert!(matches!(
            store.apply(fetched("old"), NOW + 1, "test", &abandoned),
            FetchOutcome::Superseded
        ));
        assert_eq!(kids(&store), ["new"]);
        assert_eq!(store.current().unwrap().fetched_at, NOW);
        assert!(matches!(
            store.apply(
                Ok(Fetched::NotModified {
                    ttl: Some(5),
                    etag: None,
                }),
                NOW + 1,
                "test",
                &abandoned
            ),
            FetchOutcome::Superseded
        ));
        assert_eq!(store.current().unwrap().expires_at, NOW + 600);
        // Its failure is still its outcome, but not the schedule's.
        assert!(matches!(
            store.apply(Err(FetchError::Interrupted), NOW + 1, "test", &abandoned),
            FetchOutcome::Failed(_)
        ));
        let ctl = store.control();
        assert_eq!((ctl.failures, ctl.next_attempt_at), (0, 0));
        drop(ctl);
        // A fetch newer than both still lands.
        store.apply(fetched("newest"), NOW + 2, "test", &attempt(3));
        assert_eq!(kids(&store), ["newest"]);
        // In the order they started (the usual case), each lands.
        let fresh = self::store();
        fresh.apply(fetched("x"), NOW, "test", &attempt(1));
        fresh.apply(fetched("y"), NOW, "test", &attempt(2));
        assert_eq!(kids(&fresh), ["y"]);
    }

    /// An abandoned fetch that brings a set after a newer fetch *failed*: its set is the newest
    /// there is, so it lands (at startup it is the only one), and it ends the backoff.
    #[test]
    fn a_late_set_after_a_newer_failure_lands() {
        let store = store();
        store.apply(Err(FetchError::Interrupted), NOW, "test", &attempt(2));
        assert_eq!(store.control().failures, 1);
        assert!(store.current().is_none());
        assert!(matches!(
            store.apply(fetched("late"), NOW + 1, "test", &attempt(1)),
            FetchOutcome::Loaded { keys: 1, .. }
        ));
        assert_eq!(kids(&store), ["late"]);
        let ctl = store.control();
        assert_eq!((ctl.failures, ctl.next_attempt_at), (0, 0));
        drop(ctl);
        // An older failure still after both is not recorded.
        store.apply(Err(FetchError::Interrupted), NOW + 2, "test", &attempt(1));
        assert_eq!(store.control().failures, 0);
    }

    /// A 304 renews the set whose `ETag` its fetch sent, not another that an older fetch
    /// landed meanwhile.
    #[test]
    fn a_304_renews_only_the_set_it_vouches_for() {
        let store = store();
        let tagged = |etag: &str| Current {
            etag: Some(etag.to_owned()),
            ..set_of("k")
        };
        let not_modified = |etag: &str| {
            Ok(Fetched::NotModified {
                ttl: Some(900),
                etag: Some(etag.to_owned()),
            })
        };
        store.swap(tagged("\"v2\""));
        store.apply(not_modified("\"v1\""), NOW + 10, "test", &attempt(1));
        assert_eq!(
            store.current().unwrap().expires_at,
            NOW + 600,
            "not renewed"
        );
        // Nothing vouched for the current set: its refresh stays due, not pushed a TTL away.
        assert_eq!(store.control().refresh_at, NOW + 10, "refresh still due");
        store.apply(not_modified("\"v2\""), NOW + 10, "test", &attempt(2));
        assert_eq!(store.current().unwrap().expires_at, NOW + 910, "renewed");
        assert_eq!(store.current().unwrap().etag.as_deref(), Some("\"v2\""));
    }

    #[test]
    fn refresh_is_due_between_80_and_90_percent_of_the_ttl() {
        for _ in 0..200 {
            let d = refresh_delay(600);
            assert!((480..=540).contains(&d), "{d}");
        }
        assert_eq!(refresh_delay(0), 0);
    }
}
