//! The `auth` section of a service's configuration: plain data with documented defaults.
//!
//! Strict by default: verification on, `exp` required, `iss`/`aud` checked whenever set, the
//! algorithm list pinned. A service's config layer fills in the local environment's convenient
//! defaults (issuer, audience, key URL) and refuses unsafe values in production; this type only
//! describes what was configured.

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::keys::Alg;

/// How a verifier is configured (`[auth]` in a service's TOML, `<PREFIX>__AUTH__*` in the environment).
/// Printed ([`std::fmt::Debug`]) without what may be secret: key URLs without their userinfo
/// and query, `secret_file`'s path as set or not (a secret pasted there by mistake).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `auth.enabled` (default `true`). `false` is verification-off mode: tokens are still
    /// required and decoded, but neither signature nor time is checked. Local environment only.
    pub enabled: bool,
    /// `auth.issuer`: the `iss` every token must carry. Required in production.
    pub issuer: Option<String>,
    /// `auth.audience`: a token's `aud` must contain one of these. A string or a list.
    /// Required in production.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// `auth.jwks_url`: key source, a JWKS document.
    pub jwks_url: Option<String>,
    /// `auth.discovery_url`: key source, an issuer whose `/.well-known/openid-configuration`
    /// names the `jwks_uri`. The document's `issuer` must equal `auth.issuer`; without
    /// `auth.issuer`, it must equal this URL (less the well-known suffix), and so must every
    /// token's `iss`.
    pub discovery_url: Option<String>,
    /// `auth.public_key`: key source, a PEM public key or X.509 certificate, as a file path or an
    /// `https://` URL (seed 003).
    pub public_key: Option<String>,
    /// `auth.secret`: key source, an HS256 shared secret of at least 32 bytes.
    pub secret: Option<SecretString>,
    /// `auth.secret_file`: key source, a file holding the HS256 shared secret (trimmed).
    pub secret_file: Option<String>,
    /// `auth.algorithms`: the algorithms this verifier accepts (default ES256, EdDSA, RS256;
    /// HS256 only when a secret is configured and listed).
    pub algorithms: Vec<Alg>,
    /// `auth.leeway_seconds`: clock skew allowed on `exp`, `nbf`, `iat` (default 30).
    pub leeway_seconds: u64,
    /// `auth.max_lifetime_seconds`: when set, `exp - iat` may not exceed it.
    pub max_lifetime_seconds: Option<u64>,
    /// `auth.require_at_jwt`: require `typ: at+jwt` (RFC 9068); default accepts `at+jwt`, `JWT` or none.
    pub require_at_jwt: bool,
    /// `auth.max_token_bytes`: longer tokens are refused before any decoding (default 8192).
    pub max_token_bytes: usize,
    /// `auth.require_access`: a route also needs the `access` claim to grant its path (seed 003).
    pub require_access: bool,
    /// `auth.jwks`: the key store's fetching and caching.
    pub jwks: JwksSettings,
    /// `auth.cache`: the cache of verified tokens.
    pub cache: CacheSettings,
}

impl AuthSettings {
    /// The key sources set, by key (`auth.jwks_url`, …), in the order they are documented; a
    /// blank value is unset. Exactly one must be set (verification-off mode aside).
    pub fn key_sources(&self) -> Vec<&'static str> {
        let set = self.set_sources();
        [
            ("auth.jwks_url", set.jwks_url.is_some()),
            ("auth.discovery_url", set.discovery_url.is_some()),
            ("auth.public_key", set.public_key.is_some()),
            ("auth.secret", set.secret.is_some()),
            ("auth.secret_file", set.secret_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, on)| on.then_some(key))
        .collect()
    }

    /// These settings with every blank key source (`""`, spaces; an empty secret) unset: how
    /// the key source, and every check of key sources, reads them.
    pub fn set_sources(&self) -> AuthSettings {
        use secrecy::ExposeSecret;
        let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        AuthSettings {
            jwks_url: set(&self.jwks_url),
            discovery_url: set(&self.discovery_url),
            public_key: set(&self.public_key),
            secret: self
                .secret
                .clone()
                .filter(|s| !s.expose_secret().is_empty()),
            secret_file: set(&self.secret_file),
            ..self.clone()
        }
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so a new field is printed deliberately or not at all.
        let AuthSettings {
            enabled,
            issuer,
            audience,
            jwks_url,
            discovery_url,
            public_key,
            secret,
            secret_file,
            algorithms,
            leeway_seconds,
            max_lifetime_seconds,
            require_at_jwt,
            max_token_bytes,
            require_access,
            jwks,
            cache,
        } = self;
        let url = |u: &Option<String>| u.as_deref().map(crate::source::shown_location);
        f.debug_struct("AuthSettings")
            .field("enabled", enabled)
            .field("issuer", issuer)
            .field("audience", audience)
            .field("jwks_url", &url(jwks_url))
            .field("discovery_url", &url(discovery_url))
            .field("public_key", &url(public_key))
            .field("secret", secret)
            .field("secret_file", &secret_file.as_ref().map(|_| "[set]"))
            .field("algorithms", algorithms)
            .field("leeway_seconds", leeway_seconds)
            .field("max_lifetime_seconds", max_lifetime_seconds)
            .field("require_at_jwt", require_at_jwt)
            .field("max_token_bytes", max_token_bytes)
            .field("require_access", require_access)
            .field("jwks", jwks)
            .field("cache", cache)
            .finish()
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            issuer: None,
            audience: Vec::new(),
            jwks_url: None,
            discovery_url: None,
            public_key: None,
            secret: None,
            secret_file: None,
            algorithms: vec![Alg::ES256, Alg::EdDSA, Alg::RS256],
            leeway_seconds: 30,
            max_lifetime_seconds: None,
            require_at_jwt: false,
            max_token_bytes: 8 * 1024,
            require_access: false,
            jwks: JwksSettings::default(),
            cache: CacheSettings::default(),
        }
    }
}

/// `auth.jwks.*`: how the JWKS key store fetches and caches. Each number is bounded (a timeout
/// of 1 to 300 s, a cooldown of at least 1 s, TTLs and backoffs of at least 1 s and at most days):
/// [`crate::Auth::new`] refuses a value outside its range with an error naming the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwksSettings {
    /// `auth.jwks.timeout_seconds`: connect and total timeout of a fetch (default 5).
    pub timeout_seconds: u64,
    /// `auth.jwks.max_body_bytes`: larger documents are refused (default 512 KiB).
    pub max_body_bytes: usize,
    /// `auth.jwks.min_ttl_seconds`: lower clamp of `Cache-Control: max-age` (default 60).
    pub min_ttl_seconds: u64,
    /// `auth.jwks.max_ttl_seconds`: upper clamp of `Cache-Control: max-age` (default 86400).
    pub max_ttl_seconds: u64,
    /// `auth.jwks.default_ttl_seconds`: freshness when the response has no max-age (default 600).
    pub default_ttl_seconds: u64,
    /// `auth.jwks.max_stale_seconds`: how long the last good set keeps verifying while refreshes
    /// fail (default 86400).
    pub max_stale_seconds: u64,
    /// `auth.jwks.unknown_kid_cooldown_seconds`: at most one refresh per this many seconds is
    /// triggered by unknown `kid`s; during the cooldown unknown `kid`s get 401 at once (default 30).
    pub unknown_kid_cooldown_seconds: u64,
    /// `auth.jwks.backoff_initial_seconds`: wait after the first failed fetch; doubled after each
    /// further failure (default 1).
    pub backoff_initial_seconds: u64,
    /// `auth.jwks.backoff_max_seconds`: longest wait between failed fetches while a set is held
    /// (default 300).
    pub backoff_max_seconds: u64,
    /// `auth.jwks.startup_backoff_max_seconds`: longest wait between failed fetches while no
    /// usable set is held, e.g. at startup (default 10).
    pub startup_backoff_max_seconds: u64,
    /// Not configurable: set by the service's config layer in production and on a `server.host`
    /// beyond loopback, where a fetched key that is one of the dev-only fixtures keys is skipped
    /// (reason `dev_key`), never trusted.
    #[serde(skip)]
    pub refuse_dev_keys: bool,
    /// `auth.jwks.background_refresh`: a background task loads the set at startup and refreshes
    /// it ahead of expiry (default `true`). Off, fetches happen only when a request needs one
    /// (nothing usable held, an unknown `kid`) or on [`crate::store::KeyStore::tick`]; tests
    /// turn it off to drive refreshes themselves.
    pub background_refresh: bool,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            timeout_seconds: 5,
            max_body_bytes: 512 * 1024,
            min_ttl_seconds: 60,
            max_ttl_seconds: 86_400,
            default_ttl_seconds: 600,
            max_stale_seconds: 86_400,
            unknown_kid_cooldown_seconds: 30,
            backoff_initial_seconds: 1,
            backoff_max_seconds: 300,
            startup_backoff_max_seconds: 10,
            background_refresh: true,
            refuse_dev_keys: false,
        }
    }
}

/// `auth.cache.*`: the cache of verified tokens ([`crate::cache`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// `auth.cache.max_entries`: at most this many verified tokens are remembered (default
    /// 10 000, at most 1 000 000); `0` switches the cache off, so every request verifies its
    /// signature.
    pub max_entries: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_entries: crate::cache::DEFAULT_MAX_ENTRIES,
        }
    }
}

/// A list setting given as an array, or as one string with commas (how an environment variable
/// gives it: `TODO_API__AUTH__AUDIENCE=a,b`).
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}
