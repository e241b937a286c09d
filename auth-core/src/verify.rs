//! Token verification: one [`Auth`] per service, strict by default (RFC 8725).
//!
//! A token is checked in this order, and the first failure decides the answer:
//!
//! 1. size (`auth.max_token_bytes`), before any decoding;
//! 2. compact JWS shape (three parts, two dots), header base64url and a JSON object (steps 2–5 are
//!    answered from memory for a header part equal byte for byte to one this verifier has read
//!    before and over which a signature then verified: `crate::headers`);
//! 3. `alg`: exactly one of the configured `auth.algorithms` (`none` is no algorithm, in any spelling);
//! 4. `crit`: auth-core implements no JWS extension, so any `crit` header is refused;
//! 5. `typ`: case-insensitive, optional `application/` prefix; `at+jwt`, `JWT` or absent
//!    (only `at+jwt` with `auth.require_at_jwt`);
//! 6. the key: chosen by `kid` (an opaque string) from the configured source only; header
//!    members `jwk`, `jku`, `x5u`, `x5c` are never read; the key's type must fit `alg`;
//! 7. the signature (base64url), by [`verify_signature`] over the exact `header.payload` bytes;
//! 8. the claims (base64url), deserialised once: `exp` required (a number; a fraction rounds
//!    down), `nbf` and `iat` (a fraction rounds up) not in the future, optional maximum lifetime,
//!    all with `auth.leeway_seconds` and the injected [`Clock`];
//!    then `iss` and `aud` whenever configured (the claim must then be present).
//!
//! Every denial is counted in `auth_denials_total{reason}` and logged at debug with the `kid`
//! and `sub` when known. A token string is never logged.

use std::borrow::Cow;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::Arc;

use aws_lc_rs::hmac;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use warp::reply::Response;

use crate::cache::{CacheStats, CachedToken, TokenKey, VerifiedCache};
use crate::claims::Claims;
use crate::clock::{Clock, SystemClock};
use crate::headers::KnownHeaders;
use crate::keys::{Alg, Material, VerifyingKey};
use crate::settings::AuthSettings;
use crate::source::KeySource;

/// Why a request was not authenticated or authorised: the kind of an [`AuthError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header with a scheme other than `Bearer`.
    Scheme,
    /// The token is longer than `auth.max_token_bytes`.
    TooLarge,
    /// The token is not a well-formed compact JWS, or its header or claims are not valid JSON
    /// of the expected shape (e.g. `exp` as a string).
    Malformed(&'static str),
    /// `alg` is `none`, unknown, not configured, or does not fit the key.
    Algorithm,
    /// A `crit` header parameter (auth-core implements no extension).
    Crit,
    /// `typ` is not accepted.
    Type,
    /// The signature does not verify.
    Signature,
    /// No configured key has the token's `kid`.
    UnknownKid,
    /// The token has no `exp`.
    MissingExp,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// `exp` is further from `iat` than `auth.max_lifetime_seconds`.
    Lifetime,
    /// `iss` is missing or not the configured issuer.
    Issuer,
    /// `aud` is missing or names none of the configured audiences.
    Audience,
    /// A token that verifies but whose subject may no longer act (a disabled or deleted
    /// account, as the service that owns the accounts knows); the message says which.
    Revoked(&'static str),
    /// A valid token lacking a role or an access grant; the message says what is required.
    InsufficientScope(String),
    /// A valid token whose `scope` claim lacks `scope`: as [`AuthErrorKind::InsufficientScope`],
    /// and its challenge names the scope (RFC 6750 §3's `scope` attribute), so a client can ask
    /// for a token that carries it.
    MissingScope {
        /// The scope required.
        scope: String,
        /// "requires scope …".
        message: String,
    },
    /// No verification key can be had (the key source is unreachable and nothing is cached).
    Unavailable,
}

impl AuthErrorKind {
    /// The metric label of `auth_denials_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Scheme => "scheme",
            Self::TooLarge => "too_large",
            Self::Malformed(_) => "malformed",
            Self::Algorithm => "algorithm",
            Self::Crit => "crit",
            Self::Type => "type",
            Self::Signature => "signature",
            Self::UnknownKid => "unknown_kid",
            Self::MissingExp => "malformed",
            Self::Expired => "expired",
            Self::NotYetValid | Self::IssuedInFuture => "not_yet_valid",
            Self::Lifetime => "lifetime",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Revoked(_) => "revoked",
            Self::InsufficientScope(_) | Self::MissingScope { .. } => "insufficient_scope",
            Self::Unavailable => "unavailable",
        }
    }

    /// The message the caller sees: helpful, and silent about keys and internals.
    pub fn message(&self) -> &str {
        match self {
            Self::Missing => "missing token",
            Self::Scheme => "authorization scheme must be Bearer",
            Self::TooLarge => "token too large",
            Self::Malformed(m) => m,
            Self::Algorithm => "token algorithm not accepted",
            Self::Crit => "unsupported critical header parameter",
            Self::Type => "token type not accepted",
            Self::Signature => "invalid signature",
            Self::UnknownKid => "unknown key id",
            Self::MissingExp => "token has no expiry",
            Self::Expired => "token expired",
            Self::NotYetValid => "token not yet valid",
            Self::IssuedInFuture => "token issued in the future",
            Self::Lifetime => "token lifetime too long",
            Self::Issuer => "token issuer not accepted",
            Self::Audience => "token audience not accepted",
            Self::Revoked(m) => m,
            Self::InsufficientScope(m) => m,
            Self::MissingScope { message, .. } => message,
            Self::Unavailable => "verification keys unavailable",
        }
    }
}

impl fmt::Display for AuthErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A denial, as a warp rejection: its kind plus the realm its RFC 6750 response names.
///
/// | kind | status | `error` | `WWW-Authenticate` |
/// |---|---|---|---|
/// | [`Missing`](AuthErrorKind::Missing), [`Scheme`](AuthErrorKind::Scheme) | 401 | `missing_token` | `Bearer realm="…"` |
/// | [`InsufficientScope`](AuthErrorKind::InsufficientScope) | 403 | `insufficient_scope` | `Bearer realm="…", error="insufficient_scope", error_description="…"` |
/// | [`MissingScope`](AuthErrorKind::MissingScope) | 403 | `insufficient_scope` | the same, and `scope="…"` |
/// | [`Unavailable`](AuthErrorKind::Unavailable) | 503 | `temporarily_unavailable` | none; `Retry-After`: from a key store, the rest of its backoff (≥ 1); else `auth.jwks.unknown_kid_cooldown_seconds` |
/// | any other | 401 | `invalid_token` | `Bearer realm="…", error="invalid_token", error_description="…"` |
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}")]
pub struct AuthError {
    kind: AuthErrorKind,
    realm: Arc<str>,
    retry_after: u64,
}

impl warp::reject::Reject for AuthError {}

impl AuthError {
    /// A denial of `kind` in `realm`, made by a service's own rule (an owner check, an account
    /// that may no longer act): counted in `auth_denials_total` as [`Auth::verify`]'s are.
    pub fn new(kind: AuthErrorKind, realm: &str) -> Self {
        metrics::counter!("auth_denials_total", "reason" => kind.reason()).increment(1);
        Self {
            kind,
            realm: Arc::from(realm),
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> &AuthErrorKind {
        &self.kind
    }

    /// The realm the response names.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The metric label (`auth_denials_total{reason}`).
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            AuthErrorKind::InsufficientScope(_) | AuthErrorKind::MissingScope { .. } => {
                StatusCode::FORBIDDEN
            }
            AuthErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 response: status, `WWW-Authenticate` (or `Retry-After` for 503) and the
    /// JSON error body.
    pub fn to_response(&self) -> Response {
        let status = self.status();
        let realm = quoted(&self.realm);
        let message = self.kind.message();
        let (code, challenge) = match self.kind {
            AuthErrorKind::Missing | AuthErrorKind::Scheme => {
                ("missing_token", Some(format!("Bearer realm=\"{realm}\"")))
            }
            AuthErrorKind::Unavailable => ("temporarily_unavailable", None),
            AuthErrorKind::InsufficientScope(_) => (
                "insufficient_scope",
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{}\"",
                    description(message)
                )),
            ),
            AuthErrorKind::MissingScope { ref scope, .. } => (
                "insufficient_scope",
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{}\", scope=\"{}\"",
                    description(message),
                    quoted(scope)
                )),
            ),
            _ => (
                "invalid_token",
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                    description(message)
                )),
            ),
        };
        let mut res = crate::error::error_response(status, code, message);
        if let Some(challenge) = challenge
            && let Ok(value) = HeaderValue::from_str(&challenge)
        {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        }
        res
    }
}

/// The largest `auth.leeway_seconds` accepted anywhere: an hour of clock skew. A service in
/// production allows at most 300 (`service::config::MAX_PRODUCTION_LEEWAY_SECONDS`).
pub const MAX_LEEWAY_SECONDS: u64 = 3_600;

/// The largest `auth.jwks.max_body_bytes` accepted: 16 MiB, thousands of keys.
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// `Retry-After` of a 503 when keys cannot be had.
const DEFAULT_RETRY_AFTER: u64 = 5;

/// A `realm` for a quoted-string (RFC 7235 §2.1): printable ASCII, `"` and `\\` escaped;
/// anything else is dropped.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .flat_map(|c| {
            if c == '"' || c == '\\' {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// An `error_description` as RFC 6750 §3 allows it: %x20-21 / %x23-5B / %x5D-7E, so no `"` or
/// `\\` even escaped (`"` becomes `'`); anything else is dropped.
fn description(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '\\')
        .map(|c| if c == '"' { '\'' } else { c })
        .collect()
}

/// Why an [`Auth`] could not be built from its settings.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SetupError {
    /// The config key at fault (`auth.public_key`).
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SetupError {
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// The checks of a verifier, from its settings.
#[derive(Debug)]
struct Policy {
    enabled: bool,
    algorithms: Vec<Alg>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: u64,
    max_lifetime: Option<u64>,
    require_at_jwt: bool,
    max_token_bytes: usize,
    require_access: bool,
}

#[derive(Debug)]
struct Inner {
    realm: Arc<str>,
    policy: Policy,
    source: KeySource,
    clock: Arc<dyn Clock>,
    retry_after: u64,
    /// Shared with the key store of a remote source, which trims it as key sets change.
    cache: Option<Arc<VerifiedCache>>,
    headers: KnownHeaders,
}

/// A configured verifier, cheap to clone and shared by every request.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

/// The JOSE header members auth-core reads. `jwk`, `jku`, `x5u`, `x5c` are deliberately absent:
/// they are never used.
///
/// Strings borrow from the decoded header when they hold no escape.
#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    typ: Option<Cow<'a, str>>,
    #[serde(default)]
    kid: Option<String>,
    /// Whether the member is there at all, whatever its value: auth-core implements no
    /// extension, so any `crit` (even `null`, which is not the array RFC 7515 §4.1.11 asks for)
    /// is refused.
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// `true` for a member that is present, with any value (skipped unread).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// What is known about a token when it is denied, for the debug log line.
#[derive(Default)]
struct Seen {
    kid: Option<String>,
    sub: Option<String>,
}

impl Auth {
    /// Builds the verifier a service's `auth` settings describe, reading the system clock.
    ///
    /// No network I/O happens here: a remote key source (JWKS, discovery, an `https://` PEM) is
    /// fetched in the background when a Tokio runtime is running, else on first use. A PEM or
    /// secret file is read now.
    pub fn new(settings: &AuthSettings, realm: &str) -> Result<Self, SetupError> {
        Self::with_clock(settings, realm, Arc::new(SystemClock))
    }

    /// Like [`Auth::new`], with an injected clock (tests use [`crate::clock::ManualClock`]).
    pub fn with_clock(
        settings: &AuthSettings,
        realm: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SetupError> {
        Self::check_policy(settings)?;
        let source = if settings.enabled {
            KeySource::from_settings(settings, clock.clone())?
        } else {
            tracing::warn!(
                realm,
                "VERIFICATION-OFF MODE (auth.enabled = false): token signatures and expiry are NOT \
                 checked; any decodable token is accepted. Local exploration only, never in production"
            );
            KeySource::Off
        };
        Ok(Self::assemble(settings, realm, clock, source))
    }

    /// A verifier whose keys come from `provider` instead of the key source of `settings`
    /// (whose `jwks_url`, `public_key`, `secret`… are ignored): for a service that verifies
    /// tokens signed with its own, rotating, keys. Everything else (`issuer`, `audience`,
    /// `algorithms`, leeway, limits) applies as configured; verification is always on.
    pub fn from_key_provider(
        settings: &AuthSettings,
        realm: &str,
        clock: Arc<dyn Clock>,
        provider: Arc<dyn crate::source::KeyProvider>,
    ) -> Result<Self, SetupError> {
        Self::check_policy(settings)?;
        let settings = AuthSettings {
            enabled: true,
            ..settings.clone()
        };
        Ok(Self::assemble(
            &settings,
            realm,
            clock,
            KeySource::Provided(provider),
        ))
    }

    fn check_policy(settings: &AuthSettings) -> Result<(), SetupError> {
        if settings.algorithms.is_empty() {
            return Err(SetupError::new(
                "auth.algorithms",
                "list at least one algorithm",
            ));
        }
        if settings.cache.max_entries > crate::cache::MAX_MAX_ENTRIES {
            return Err(SetupError::new(
                "auth.cache.max_entries",
                format!(
                    "at most {} (0 switches the cache off)",
                    crate::cache::MAX_MAX_ENTRIES
                ),
            ));
        }
        let jwks = &settings.jwks;
        let bounded = [
            // Up to 64 KiB (Envoy's default limit on a request's headers is 60 KiB): a larger
            // limit would have megabyte tokens decoded, and cached whole when they verify.
            (
                "auth.max_token_bytes",
                u64::try_from(settings.max_token_bytes).unwrap_or(u64::MAX),
                256,
                64 * 1024,
            ),
            (
                "auth.leeway_seconds",
                settings.leeway_seconds,
                0,
                MAX_LEEWAY_SECONDS,
            ),
            ("auth.jwks.timeout_seconds", jwks.timeout_seconds, 1, 300),
            (
                "auth.jwks.unknown_kid_cooldown_seconds",
                jwks.unknown_kid_cooldown_seconds,
                1,
                86_400,
            ),
            (
                "auth.jwks.min_ttl_seconds",
                jwks.min_ttl_seconds,
                1,
                86_400 * 30,
            ),
            (
                "auth.jwks.max_ttl_seconds",
                jwks.max_ttl_seconds,
                1,
                86_400 * 30,
            ),
            (
                "auth.jwks.default_ttl_seconds",
                jwks.default_ttl_seconds,
                1,
                86_400 * 30,
            ),
            (
                "auth.jwks.max_stale_seconds",
                jwks.max_stale_seconds,
                0,
                86_400 * 30,
            ),
            (
                "auth.jwks.max_body_bytes",
                u64::try_from(jwks.max_body_bytes).unwrap_or(u64::MAX),
                1_024,
                MAX_BODY_BYTES,
            ),
            (
                "auth.jwks.backoff_initial_seconds",
                jwks.backoff_initial_seconds,
                1,
                3_600,
            ),
            (
                "auth.jwks.backoff_max_seconds",
                jwks.backoff_max_seconds,
                1,
                86_400,
            ),
            (
                "auth.jwks.startup_backoff_max_seconds",
                jwks.startup_backoff_max_seconds,
                1,
                3_600,
            ),
        ];
        if let Some((key, _, min, max)) = bounded
            .into_iter()
            .find(|(_, v, min, max)| !(min..=max).contains(&v))
        {
            return Err(SetupError::new(key, format!("from {min} to {max}")));
        }
        // Named by the maximum: lowering it below the default minimum (60) is the usual way in.
        if jwks.min_ttl_seconds > jwks.max_ttl_seconds {
            return Err(SetupError::new(
                "auth.jwks.max_ttl_seconds",
                format!(
                    "at least auth.jwks.min_ttl_seconds ({}); lower that too",
                    jwks.min_ttl_seconds
                ),
            ));
        }
        Ok(())
    }

    fn assemble(
        settings: &AuthSettings,
        realm: &str,
        clock: Arc<dyn Clock>,
        source: KeySource,
    ) -> Self {
        let retry_after = settings.jwks.unknown_kid_cooldown_seconds.max(1);
        let cache = VerifiedCache::new(settings.cache.max_entries)
            .filter(|_| settings.enabled)
            .map(Arc::new);
        if let (Some(cache), Some(store)) = (&cache, source.store()) {
            store.watch(Arc::clone(cache));
        }
        let inner = Inner {
            realm: Arc::from(realm),
            policy: Policy {
                enabled: settings.enabled,
                algorithms: settings.algorithms.clone(),
                // With discovery and no `auth.issuer`, tokens must carry the issuer the
                // discovery document was checked against: its keys are that issuer's (and some
                // issuers share keys across tenants, so `iss` is what tells them apart).
                issuer: settings
                    .issuer
                    .clone()
                    .filter(|s| !s.is_empty())
                    .or_else(|| {
                        source
                            .store()
                            .and_then(|s| s.discovery_issuer())
                            .map(str::to_owned)
                    }),
                audience: settings.audience.clone(),
                leeway: settings.leeway_seconds,
                max_lifetime: settings.max_lifetime_seconds,
                require_at_jwt: settings.require_at_jwt,
                max_token_bytes: settings.max_token_bytes,
                require_access: settings.require_access,
            },
            source,
            clock,
            retry_after,
            cache,
            headers: KnownHeaders::default(),
        };
        let auth = Self {
            inner: Arc::new(inner),
        };
        auth.inner.source.prefetch_in_background();
        auth
    }

    /// The realm of `WWW-Authenticate`.
    pub fn realm(&self) -> &str {
        &self.inner.realm
    }

    /// Whether verification keys are available (for `/ready`). Always true for a static key or
    /// secret and in verification-off mode.
    pub fn is_ready(&self) -> bool {
        self.inner.source.is_ready()
    }

    /// The key store of a remote key source (JWKS, discovery, a PEM URL); `None` for a static
    /// key or secret and in verification-off mode.
    pub fn key_store(&self) -> Option<&crate::store::KeyStore> {
        self.inner.source.store()
    }

    /// Fetches the keys of a remote source now if none are held (a service may await this at
    /// startup). Returns [`Auth::is_ready`].
    pub async fn load_keys(&self) -> bool {
        self.inner.source.load().await;
        self.is_ready()
    }

    /// Whether `auth.require_access` is set: every authenticated route also needs the `access`
    /// claim to grant its path (the filters enforce it).
    pub fn requires_access(&self) -> bool {
        self.inner.policy.require_access
    }

    /// The verified-token cache ([`crate::cache`]); `None` when `auth.cache.max_entries` is 0
    /// or in verification-off mode.
    pub fn cache(&self) -> Option<&VerifiedCache> {
        self.inner.cache.as_deref()
    }

    /// Hits, misses and entries of the verified-token cache, when it is on.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache().map(VerifiedCache::stats)
    }

    /// Whether this is verification-off mode (`auth.enabled = false`).
    pub fn is_verification_off(&self) -> bool {
        !self.inner.policy.enabled
    }

    /// Verifies a compact JWS and returns its claims, or the denial (already counted and logged).
    pub async fn verify(
        &self,
        token: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<Arc<Claims>, AuthError> {
        let mut seen = Seen::default();
        match self.check(token.as_ref(), &mut seen).await {
            Ok(claims) => Ok(claims),
            Err(kind) => Err(self.deny(kind, seen.kid.as_deref(), seen.sub.as_deref())),
        }
    }

    /// Counts, logs and wraps a denial.
    pub(crate) fn deny(
        &self,
        kind: AuthErrorKind,
        kid: Option<&str>,
        sub: Option<&str>,
    ) -> AuthError {
        let reason = kind.reason();
        metrics::counter!("auth_denials_total", "reason" => reason).increment(1);
        // kid and sub come from the token: shorten them so a log line stays a line.
        let kid = kid.map(|k| k.chars().take(80).collect::<String>());
        let sub = sub.map(|s| s.chars().take(80).collect::<String>());
        tracing::debug!(realm = %self.inner.realm, reason, kid, sub, "auth denied: {}", kind.message());
        // A key store knows when it will next try to fetch: the client should not come back
        // sooner. Other sources have no schedule: the configured cooldown.
        let retry_after = match (&kind, self.inner.source.store()) {
            (AuthErrorKind::Unavailable, Some(store)) => store.retry_after(),
            _ => self.inner.retry_after,
        };
        AuthError {
            kind,
            realm: self.inner.realm.clone(),
            retry_after,
        }
    }

    async fn check(&self, token: &[u8], seen: &mut Seen) -> Result<Arc<Claims>, AuthErrorKind> {
        let policy = &self.inner.policy;
        if token.len() > policy.max_token_bytes {
            return Err(AuthErrorKind::TooLarge);
        }
        if !policy.enabled {
            return decode_unverified(token, seen).map(Arc::new);
        }
        // One hash of the token serves the whole request, and one reading of the clock unless
        // the request waits for a key (`key_at`).
        let mut now = self.inner.clock.now();
        let cache_key = self.inner.cache.as_ref().map(|cache| cache.key(token));
        if let Some(claims) = self.cached(cache_key.as_ref(), &mut now, seen).await? {
            return Ok(claims);
        }
        let parts = Parts::split(token)?;
        // A header already read (and signed) answers as it did then; see `crate::headers`.
        let known = self.inner.headers.get(parts.header);
        let remembered = known.is_some();
        let (alg, kid) = match known {
            Some(known) => known,
            None => read_header(parts.header, policy)?,
        };
        // Moved, not cloned: read back below for the cache entry.
        seen.kid = kid;
        let (key, now) = self.key_at(seen.kid.as_deref(), alg, now).await;
        let key = key?;
        let (other, claims) = verified_claims(
            &key,
            alg,
            &parts,
            || self.other_keys(seen.kid.as_deref(), alg, &key),
            || {
                if !remembered {
                    self.inner
                        .headers
                        .insert(parts.header, alg, seen.kid.as_deref());
                }
            },
        )?;
        let key = other.unwrap_or(key);
        if let Err(kind) = check_claims(&claims, policy, now) {
            seen.sub.clone_from(&claims.sub);
            return Err(kind);
        }
        let claims = Arc::new(claims);
        if let (Some(cache), Some(cache_key), Some(exp)) =
            (&self.inner.cache, &cache_key, claims.exp)
            && cache.admit(cache_key)
        {
            let cached = CachedToken {
                claims: Arc::clone(&claims),
                kid: seen.kid.take(),
                alg,
                thumbprint: key.thumbprint.clone(),
            };
            cache.insert(cache_key, cached, exp, now);
        }
        Ok(claims)
    }

    /// A verified-cache hit: the cached claims, when the key that verified the token is still
    /// the key the source gives for its `kid` and `alg`, re-checked for time, issuer and audience.
    /// `None` sends the token through full verification (an entry whose key left is dropped).
    /// `now` moves on when the key lookup waited (see `key_at`), for the rest of the request too.
    async fn cached(
        &self,
        key: Option<&TokenKey<'_>>,
        now: &mut u64,
        seen: &mut Seen,
    ) -> Result<Option<Arc<Claims>>, AuthErrorKind> {
        let (Some(cache), Some(key)) = (&self.inner.cache, key) else {
            return Ok(None);
        };
        let Some(hit) = cache.get(key, *now) else {
            return Ok(None);
        };
        let current;
        (current, *now) = self.key_at(hit.kid.as_deref(), hit.alg, *now).await;
        match current {
            Ok(key) if key.thumbprint == hit.thumbprint => {}
            // Verified by another key published under the same kid (see `verified_claims`).
            Ok(key)
                if self
                    .other_keys(hit.kid.as_deref(), hit.alg, &key)
                    .iter()
                    .any(|k| k.thumbprint == hit.thumbprint) => {}
            _ => {
                cache.remove(key);
                return Ok(None);
            }
        }
        if let Err(kind) = check_claims(&hit.claims, &self.inner.policy, *now) {
            seen.kid.clone_from(&hit.kid);
            seen.sub.clone_from(&hit.claims.sub);
            return Err(kind);
        }
        Ok(Some(Arc::clone(&hit.claims)))
    }

    /// The key for `kid` and `alg`, and the time to judge the token at: `now` when the key was
    /// at hand, else the clock read again once the key source answered. A wait (a JWKS fetch)
    /// may take seconds: the time checks use the time at which the token is accepted, never
    /// one from before a wait. Polled by hand to tell the two apart, so the usual request (keys
    /// at hand) reads the clock once.
    async fn key_at(
        &self,
        kid: Option<&str>,
        alg: Alg,
        now: u64,
    ) -> (Result<Arc<VerifyingKey>, AuthErrorKind>, u64) {
        let mut key = std::pin::pin!(self.inner.source.key(kid, alg));
        let mut waited = false;
        let key = std::future::poll_fn(|cx| {
            let poll = key.as_mut().poll(cx);
            waited |= poll.is_pending();
            poll
        })
        .await;
        let now = if waited { self.inner.clock.now() } else { now };
        (key, now)
    }

    /// The keys other than `first` that a token's `kid` names and `alg` fits: a JWKS may publish
    /// several under one `kid`. Only read once `first` has refused a signature (or a cached
    /// token's key), so the usual request never collects them.
    fn other_keys(
        &self,
        kid: Option<&str>,
        alg: Alg,
        first: &VerifyingKey,
    ) -> Vec<Arc<VerifyingKey>> {
        let Some(kid) = kid else {
            return Vec::new();
        };
        let mut keys = self.inner.source.same_kid(kid, alg);
        keys.retain(|k| k.thumbprint != first.thumbprint);
        keys
    }
}

/// Verification-off mode: the payload of `header.payload[.signature]`, decoded without any
/// check of the signature or the claims. Its header and signature are not decoded, so their
/// bytes are checked here: every byte of an accepted token is base64url or `.`, as in
/// verifying mode.
fn decode_unverified(token: &[u8], seen: &mut Seen) -> Result<Claims, AuthErrorKind> {
    let base64url_or_dot = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !token.iter().all(base64url_or_dot) {
        return Err(AuthErrorKind::Malformed("malformed token"));
    }
    let mut parts = token.split(|&b| b == b'.');
    let (Some(_), Some(p), None) = (parts.next(), parts.next(), parts.nth(1)) else {
        return Err(AuthErrorKind::Malformed("malformed token"));
    };
    let (mut stack, mut heap) = buffers();
    let claims: Claims = json(b64_into(p, &mut stack, &mut heap)?)
        .ok_or(AuthErrorKind::Malformed("malformed token claims"))?;
    seen.sub.clone_from(&claims.sub);
    Ok(claims)
}

/// The three parts of a compact JWS, `header.payload.signature`, still base64url.
struct Parts<'t> {
    header: &'t [u8],
    payload: &'t [u8],
    signature: &'t [u8],
    /// `header.payload`: what the signature covers.
    signing_input: &'t [u8],
}

impl<'t> Parts<'t> {
    /// Exactly two dots, found with a vectorised search (a token is up to several KiB).
    fn split(token: &'t [u8]) -> Result<Self, AuthErrorKind> {
        let malformed = || AuthErrorKind::Malformed("malformed token");
        let mut dots = memchr::memchr_iter(b'.', token);
        let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
            return Err(malformed());
        };
        Ok(Self {
            header: &token[..first],
            payload: &token[first + 1..second],
            signature: &token[second + 1..],
            signing_input: &token[..second],
        })
    }
}

/// Decoded parts no longer than this are decoded on the stack (a header, an RSA-8192 signature,
/// ordinary claims); longer ones on the heap.
const STACK_PART: usize = 1024;

/// A base64url part of a token decoded into `stack` when it fits, else into `heap`.
/// The buffers are left uninitialised: the decoder writes every byte it returns.
fn b64_into<'b>(
    part: &[u8],
    stack: &'b mut [MaybeUninit<u8>; STACK_PART],
    heap: &'b mut Vec<u8>,
) -> Result<&'b [u8], AuthErrorKind> {
    let engine = base64_simd::URL_SAFE_NO_PAD;
    let malformed = |_| AuthErrorKind::Malformed("malformed token");
    let len = engine.decoded_length(part).map_err(malformed)?;
    let out = if len <= STACK_PART {
        &mut stack[..len]
    } else {
        heap.reserve_exact(len);
        &mut heap.spare_capacity_mut()[..len]
    };
    let decoded = engine
        .decode(part, base64_simd::Out::from_uninit_slice(out))
        .map_err(malformed)?;
    Ok(decoded)
}

/// Fresh buffers for [`b64_into`].
fn buffers() -> ([MaybeUninit<u8>; STACK_PART], Vec<u8>) {
    ([MaybeUninit::uninit(); STACK_PART], Vec::new())
}

/// Steps 2–5 on the header: its `alg` (configured), no `crit`, an accepted `typ`; and its `kid`.
fn read_header(part: &[u8], policy: &Policy) -> Result<(Alg, Option<String>), AuthErrorKind> {
    let malformed = || AuthErrorKind::Malformed("malformed token header");
    let (mut stack, mut heap) = buffers();
    let bytes = b64_into(part, &mut stack, &mut heap)?;
    // RFC 7515 §4: a JSON object. The derived `JoseHeader` would also read an array, by
    // position (`["ES256"]` as `alg`).
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(malformed());
    }
    let header: JoseHeader = json(bytes).ok_or_else(malformed)?;
    let alg: Alg = header.alg.parse().map_err(|_| AuthErrorKind::Algorithm)?;
    if !policy.algorithms.contains(&alg) {
        return Err(AuthErrorKind::Algorithm);
    }
    if header.crit {
        return Err(AuthErrorKind::Crit);
    }
    if !typ_accepted(header.typ.as_deref(), policy.require_at_jwt) {
        return Err(AuthErrorKind::Type);
    }
    Ok((alg, header.kid))
}

/// Steps 7 and 8's parsing: the signature over `header.payload` with `key`, or when `key`
/// refuses it, with each of `others` in turn (the other keys under the token's `kid`); then
/// (once one has verified: `signed`) the claims, with the other key that verified, if one did.
/// Synchronous, so its stack buffers never live in a request's future.
fn verified_claims(
    key: &VerifyingKey,
    alg: Alg,
    parts: &Parts<'_>,
    others: impl FnOnce() -> Vec<Arc<VerifyingKey>>,
    signed: impl FnOnce(),
) -> Result<(Option<Arc<VerifyingKey>>, Claims), AuthErrorKind> {
    let (mut stack, mut heap) = buffers();
    let signature = b64_into(parts.signature, &mut stack, &mut heap)?;
    let verify = |key: &VerifyingKey| verify_signature(key, alg, parts.signing_input, signature);
    let other = match verify(key) {
        Ok(()) => None,
        Err(AuthErrorKind::Signature) => Some(
            others()
                .into_iter()
                .find(|k| verify(k).is_ok())
                .ok_or(AuthErrorKind::Signature)?,
        ),
        Err(kind) => return Err(kind),
    };
    signed();
    let (mut stack, mut heap) = buffers();
    let claims = json(b64_into(parts.payload, &mut stack, &mut heap)?)
        .ok_or(AuthErrorKind::Malformed("malformed token claims"))?;
    Ok((other, claims))
}

/// A decoded JSON part: UTF-8 checked once over the whole of it (vectorised), then parsed from
/// `&str`, so serde_json does not check every string again. Invalid UTF-8 anywhere is refused,
/// as serde_json refuses it in a string (outside strings JSON is ASCII).
fn json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    serde_json::from_str(std::str::from_utf8(bytes).ok()?).ok()
}

/// A base64url part of a token decoded as requests decode it (no padding, canonical trailing
/// bits: one encoding per byte string), for the property test that holds base64-simd to the
/// scalar `base64` decoder's answers. Not part of the API.
#[doc(hidden)]
pub fn decode_part(part: &str) -> Option<Vec<u8>> {
    let (mut stack, mut heap) = buffers();
    b64_into(part.as_bytes(), &mut stack, &mut heap)
        .ok()
        .map(<[u8]>::to_vec)
}

/// `typ`: compared case-insensitively with an optional `application/` prefix (RFC 7515 §4.1.9).
fn typ_accepted(typ: Option<&str>, require_at_jwt: bool) -> bool {
    let Some(typ) = typ else {
        return !require_at_jwt;
    };
    const PREFIX: &str = "application/";
    let typ = match typ.get(..PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(PREFIX) => &typ[PREFIX.len()..],
        _ => typ,
    };
    typ.eq_ignore_ascii_case("at+jwt") || (!require_at_jwt && typ.eq_ignore_ascii_case("jwt"))
}

/// The time, issuer and audience checks, on claims whose signature verified.
fn check_claims(claims: &Claims, policy: &Policy, now: u64) -> Result<(), AuthErrorKind> {
    let leeway = policy.leeway;
    let exp = claims.exp.ok_or(AuthErrorKind::MissingExp)?;
    // RFC 7519 §4.1.4: the current time must be before `exp`.
    if now >= exp.saturating_add(leeway) {
        return Err(AuthErrorKind::Expired);
    }
    if let Some(nbf) = claims.nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err(AuthErrorKind::NotYetValid);
    }
    if let Some(iat) = claims.iat
        && iat > now.saturating_add(leeway)
    {
        return Err(AuthErrorKind::IssuedInFuture);
    }
    if let Some(max) = policy.max_lifetime {
        // Without `iat` (or `nbf`) the lifetime is measured from now: a far-future `exp` fails.
        let start = claims.iat.or(claims.nbf).unwrap_or(now);
        if exp.saturating_sub(start) > max {
            return Err(AuthErrorKind::Lifetime);
        }
    }
    if let Some(issuer) = &policy.issuer
        && claims.iss.as_deref() != Some(issuer.as_str())
    {
        return Err(AuthErrorKind::Issuer);
    }
    if !policy.audience.is_empty() && !claims.aud.iter().any(|a| policy.audience.contains(a)) {
        return Err(AuthErrorKind::Audience);
    }
    Ok(())
}

/// Verifies a JWS signature: `signature` over `signing_input` (the ASCII `header.payload`) with
/// `key`, for the header's `alg`.
///
/// This is the one signature check requests go through (and the Wycheproof tests call).
/// `alg` must fit the key ([`VerifyingKey::fits`]), else [`AuthErrorKind::Algorithm`]: a public
/// key is never an HMAC secret. RS256 is RSASSA-PKCS1-v1_5 with SHA-256 and a 2048–8192-bit
/// modulus; ES256 takes exactly the 64-byte `r || s` of JWS (RFC 7518 §3.4; DER is refused);
/// EdDSA is Ed25519; HS256 compares the HMAC-SHA-256 tag in constant time.
pub fn verify_signature(
    key: &VerifyingKey,
    alg: Alg,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<(), AuthErrorKind> {
    if !key.fits(alg) {
        return Err(AuthErrorKind::Algorithm);
    }
    if alg == Alg::ES256 && signature.len() != 64 {
        return Err(AuthErrorKind::Signature);
    }
    let verified = match &key.material {
        Material::Public(public) => public.verify_sig(signing_input, signature).is_ok(),
        Material::Secret(secret) => hmac::verify(secret, signing_input, signature).is_ok(),
    };
    if verified {
        Ok(())
    } else {
        Err(AuthErrorKind::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_rules() {
        for ok in [
            None,
            Some("JWT"),
            Some("jwt"),
            Some("at+jwt"),
            Some("AT+JWT"),
            Some("application/at+jwt"),
            Some("Application/JWT"),
        ] {
            assert!(typ_accepted(ok, false), "{ok:?}");
        }
        for bad in [
            Some(""),
            Some("JOSE"),
            Some("dpop+jwt"),
            Some("application/application/jwt"),
            Some("at+jwt "),
        ] {
            assert!(!typ_accepted(bad, false), "{bad:?}");
        }
        assert!(typ_accepted(Some("application/AT+JWT"), true));
        assert!(!typ_accepted(Some("JWT"), true));
        assert!(!typ_accepted(None, true));
    }

    #[test]
    fn realms_are_escaped_descriptions_hold_only_what_rfc_6750_allows() {
        assert_eq!(quoted(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(quoted("a\nbé"), "ab");
        assert_eq!(description(r#"a"b\c"#), "a'bc");
        assert!(
            description(&(0u8..=127).map(char::from).collect::<String>())
                .bytes()
                .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        );
        assert_eq!(description("a\nbé"), "ab");
    }

    #[test]
    fn reasons_are_stable_labels() {
        assert_eq!(AuthErrorKind::Expired.reason(), "expired");
        assert_eq!(AuthErrorKind::UnknownKid.reason(), "unknown_kid");
        assert_eq!(
            AuthErrorKind::InsufficientScope("x".into()).reason(),
            "insufficient_scope"
        );
        assert_eq!(AuthErrorKind::Unavailable.reason(), "unavailable");
    }

    #[derive(Debug)]
    struct Swappable(std::sync::RwLock<Arc<crate::source::KeySet>>);

    impl crate::source::KeyProvider for Swappable {
        fn key_set(&self) -> Arc<crate::source::KeySet> {
            self.0.read().unwrap().clone()
        }
    }

    fn hs256(secret: &[u8], kid: &str, now: u64) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        let claims = serde_json::json!({
            "iss": "https://id.example.com", "aud": "svc", "sub": "1",
            "iat": now, "exp": now + 60,
        });
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    /// A key set of one HS256 secret under `kid`.
    fn secret_set(secret: &[u8], kid: &str) -> Arc<crate::source::KeySet> {
        Arc::new(crate::source::KeySet::new([VerifyingKey::from_secret(
            secret,
        )
        .unwrap()
        .with_kid(Some(kid.to_owned()))]))
    }

    /// An HS256 verifier whose keys come from a provider that starts with `set`, at
    /// 1 000 000 s.
    fn provided(set: Arc<crate::source::KeySet>, settings: AuthSettings) -> (Auth, Arc<Swappable>) {
        let provider = Arc::new(Swappable(std::sync::RwLock::new(set)));
        let settings = AuthSettings {
            issuer: Some("https://id.example.com".into()),
            audience: vec!["svc".into()],
            algorithms: vec![Alg::HS256],
            ..settings
        };
        let clock = Arc::new(crate::clock::ManualClock::new(1_000_000));
        let auth = Auth::from_key_provider(&settings, "svc", clock, provider.clone()).unwrap();
        (auth, provider)
    }

    fn hs256_auth(secret: &[u8], kid: &str) -> Auth {
        provided(secret_set(secret, kid), AuthSettings::default()).0
    }

    /// `header.payload.signature` with the signature's last character changed.
    fn forged(token: &str) -> String {
        let mut forged = token.to_owned();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'Q' } else { 'A' });
        forged
    }

    #[tokio::test]
    async fn a_header_is_remembered_only_once_a_signature_over_it_verified() {
        let secret = [7u8; 32];
        let auth = hs256_auth(&secret, "k");
        let token = hs256(&secret, "k", 1_000_000);
        // A forged signature under a header never seen: not remembered.
        let err = auth.verify(&forged(&token)).await.unwrap_err();
        assert_eq!(err.kind(), &AuthErrorKind::Signature);
        assert_eq!(auth.inner.headers.len(), 0);
        // Signed by another key: not remembered either.
        let other = hs256(&[8u8; 32], "k", 1_000_000);
        assert!(auth.verify(&other).await.is_err());
        assert_eq!(auth.inner.headers.len(), 0);
        // Valid: remembered.
        assert!(auth.verify(&token).await.is_ok());
        assert_eq!(auth.inner.headers.len(), 1);
    }

    #[tokio::test]
    async fn a_remembered_header_skips_no_other_check() {
        let secret = [7u8; 32];
        let auth = hs256_auth(&secret, "k");
        let first = hs256(&secret, "k", 1_000_000);
        assert!(auth.verify(&first).await.is_ok());
        assert!(
            auth.inner
                .headers
                .get(first.split('.').next().unwrap().as_bytes())
                .is_some()
        );

        // Same header from here on: the signature, time and claims are still checked.
        let second = hs256(&secret, "k", 1_000_001);
        assert_eq!(second.split('.').next(), first.split('.').next());
        assert!(auth.verify(&second).await.is_ok());
        let err = auth.verify(&forged(&second)).await.unwrap_err();
        assert_eq!(err.kind(), &AuthErrorKind::Signature);
        let other_key = hs256(&[8u8; 32], "k", 1_000_000);
        let err = auth.verify(&other_key).await.unwrap_err();
        assert_eq!(err.kind(), &AuthErrorKind::Signature);
        let expired = hs256(&secret, "k", 1_000_000 - 3_600);
        let err = auth.verify(&expired).await.unwrap_err();
        assert_eq!(err.kind(), &AuthErrorKind::Expired);
        let mut parts = second.split('.');
        let (header, _, signature) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
        let err = auth
            .verify(&format!("{header}.!!.{signature}"))
            .await
            .unwrap_err();
        assert!(matches!(
            err.kind(),
            AuthErrorKind::Malformed(_) | AuthErrorKind::Signature
        ));
        assert_eq!(auth.inner.headers.len(), 1);
    }

    /// A verifier printed with `{:?}` (a `tracing` field, a panic message) shows neither the
    /// tokens its cache holds nor its HMAC secret.
    #[tokio::test]
    async fn a_printed_verifier_shows_no_token_and_no_secret() {
        let secret = *b"0123456789abcdefghijklmnopqrstuv";
        let auth = hs256_auth(&secret, "k");
        let token = hs256(&secret, "k", 1_000_000);
        // Twice: the second sight admits it to the cache.
        auth.verify(&token).await.unwrap();
        auth.verify(&token).await.unwrap();
        assert_eq!(auth.cache_stats().unwrap().entries, 1);

        // The header part may show (the verifier remembers headers; they hold no secret), the
        // payload and the signature may not, as text or as bytes.
        let printed = format!("{auth:?}");
        let mut parts = token.split('.').skip(1);
        let (payload, signature) = (parts.next().unwrap(), parts.next().unwrap());
        // As a derived `Debug` prints a byte slice: `[.., 101, 121, 74, ..]`.
        let bytes = |b: &[u8]| {
            let eight: Vec<String> = b[..8].iter().map(u8::to_string).collect();
            format!(", {}, ", eight.join(", "))
        };
        for needle in [
            payload.to_owned(),
            signature.to_owned(),
            bytes(payload.as_bytes()),
            bytes(signature.as_bytes()),
            "0123456789abcdef".to_owned(),
            bytes(&secret),
        ] {
            assert!(!printed.contains(&needle), "{needle} in {printed}");
        }
        assert!(printed.contains("VerifiedCache"), "{printed}");
    }

    /// A secret longer than SHA-256's 64-byte block is hashed by HMAC before use, so its
    /// SHA-256 signs as well as the secret does. Nothing a printed verifier shows (its key's
    /// fingerprint, the cached token's key) may be such a key: every 64-hex-digit run in the
    /// output is tried as an HS256 key, and none signs.
    #[tokio::test]
    async fn a_printed_verifier_shows_nothing_that_signs() {
        let secret: Vec<u8> = (0..100u8).collect();
        let auth = hs256_auth(&secret, "k");
        let token = hs256(&secret, "k", 1_000_000);
        auth.verify(&token).await.unwrap();
        auth.verify(&token).await.unwrap();
        assert_eq!(auth.cache_stats().unwrap().entries, 1);
        let decode = |hex: &str| -> Vec<u8> {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        };
        // The premise: the secret's plain SHA-256 signs tokens this verifier accepts.
        let digest = decode(&crate::keys::sha256_hex(&secret));
        assert!(auth.verify(&hs256(&digest, "k", 1_000_001)).await.is_ok());

        let printed = format!("{auth:?}");
        let hex_runs: Vec<&str> = printed
            .split(|c: char| !c.is_ascii_hexdigit())
            .filter(|run| run.len() == 64)
            .collect();
        assert!(
            hex_runs.contains(&crate::keys::secret_fingerprint(&secret).as_str()),
            "the fingerprint is shown: {printed}"
        );
        for run in hex_runs {
            let forged = hs256(&decode(run), "k", 1_000_002);
            let err = auth.verify(&forged).await.unwrap_err();
            assert_eq!(err.kind(), &AuthErrorKind::Signature, "{run} signs");
        }
    }

    /// Requests hand `verify` the header's bytes unchecked: a byte outside base64url and `.`
    /// anywhere in a token is refused, whether or not it is valid UTF-8. In the header or the
    /// signature its part's decoding refuses it (the header is remembered and the token cached,
    /// so neither lets it through by a byte-for-byte match); in the payload the signature does,
    /// since it covers the bytes as sent.
    #[tokio::test]
    async fn a_byte_outside_base64url_anywhere_is_refused() {
        let secret = [7u8; 32];
        let auth = hs256_auth(&secret, "k");
        let token = hs256(&secret, "k", 1_000_000).into_bytes();
        // The header is remembered at once, the token cached on its second verification.
        for _ in 0..3 {
            assert!(auth.verify(&token[..]).await.is_ok());
        }
        assert_eq!(auth.cache_stats().unwrap().entries, 1);
        assert_eq!(auth.cache_stats().unwrap().hits, 1);
        assert_eq!(auth.inner.headers.len(), 1);
        let dots: Vec<usize> = memchr::memchr_iter(b'.', &token).collect();
        for bad in [&b"\xff"[..], "é".as_bytes(), b" ", b"=", b"+", b"/", b"\0"] {
            for at in (0..token.len()).filter(|i| !dots.contains(i)) {
                let mut t = token.clone();
                t.splice(at..=at, bad.iter().copied());
                let kind = auth.verify(&t[..]).await.unwrap_err().kind().clone();
                let in_payload = at > dots[0] && at < dots[1];
                if in_payload {
                    assert_eq!(kind, AuthErrorKind::Signature, "{bad:?} at {at}");
                } else {
                    assert!(
                        matches!(kind, AuthErrorKind::Malformed(_)),
                        "{bad:?} at {at}: {kind:?}"
                    );
                }
            }
        }
        assert!(auth.verify(&token[..]).await.is_ok());
    }

    /// Verification-off mode decodes only the payload; a foreign byte in the header or the
    /// signature is refused all the same.
    #[tokio::test]
    async fn verification_off_refuses_a_byte_outside_base64url() {
        let secret = [7u8; 32];
        let settings = AuthSettings {
            enabled: false,
            ..AuthSettings::default()
        };
        let clock = Arc::new(crate::clock::ManualClock::new(1_000_000));
        let auth = Auth::with_clock(&settings, "svc", clock).unwrap();
        assert!(auth.is_verification_off());
        let token = hs256(&secret, "k", 1_000_000);
        assert_eq!(auth.verify(&token).await.unwrap().subject(), "1");
        let mut parts = token.split('.');
        let (header, payload, signature) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        for bad in [
            format!("\u{ff}{header}.{payload}.{signature}").into_bytes(),
            [header.as_bytes(), b".", payload.as_bytes(), b".\xfe"].concat(),
            format!("{header}.{payload}.{signature}+").into_bytes(),
            format!("{header} .{payload}").into_bytes(),
        ] {
            let err = auth.verify(&bad[..]).await.unwrap_err();
            assert!(
                matches!(err.kind(), AuthErrorKind::Malformed(_)),
                "{:?}: {:?}",
                String::from_utf8_lossy(&bad),
                err.kind()
            );
        }
        // Without a signature, or with an empty one, as before.
        assert!(auth.verify(&format!("{header}.{payload}")).await.is_ok());
        assert!(auth.verify(&format!("{header}.{payload}.")).await.is_ok());
    }

    #[tokio::test]
    async fn a_remembered_header_whose_key_left_is_refused() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let (auth, provider) = provided(secret_set(&a, "a"), AuthSettings::default());
        assert!(auth.verify(&hs256(&a, "a", 1_000_000)).await.is_ok());
        *provider.0.write().unwrap() = secret_set(&b, "b");
        let err = auth.verify(&hs256(&a, "a", 1_000_001)).await.unwrap_err();
        assert_eq!(err.kind(), &AuthErrorKind::UnknownKid);
    }

    #[tokio::test]
    async fn a_key_provider_supplies_keys_that_may_change() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let settings = AuthSettings {
            // ignored: the provider is the only key source
            jwks_url: Some("https://elsewhere.example.com/jwks.json".into()),
            ..AuthSettings::default()
        };
        let (auth, provider) = provided(secret_set(&a, "a"), settings);
        assert!(auth.is_ready());
        assert!(auth.verify(&hs256(&a, "a", 1_000_000)).await.is_ok());
        let err = auth.verify(&hs256(&b, "b", 1_000_000)).await.unwrap_err();
        assert_eq!(err.kind(), &AuthErrorKind::UnknownKid);

        *provider.0.write().unwrap() = secret_set(&b, "b");
        assert!(auth.verify(&hs256(&b, "b", 1_000_000)).await.is_ok());
        assert!(auth.verify(&hs256(&a, "a", 1_000_000)).await.is_err());

        *provider.0.write().unwrap() = Arc::new(crate::source::KeySet::default());
        assert!(!auth.is_ready(), "no key: not ready");
    }
}
