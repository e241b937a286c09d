//! token-service's configuration: the sections every service shares (`environment`, `server`,
//! `log`, `database`, `cors`, `auth`) plus its own (`token`, `signing`, `users`, `throttle`).
//!
//! Layering is auth-core's ([`auth_core::service::config::load`]): built-in defaults → the local
//! environment's defaults (fixture keys and users, issuer `http://127.0.0.1:4000`) → TOML file →
//! `TOKEN_SERVICE__…` environment variables. Every error is one line naming the key.
//!
//! `auth.*` configures how token-service verifies the tokens on its own routes (`/users…`): it
//! always verifies with its own current signing keys, in-process, so `auth`'s key-source keys are
//! not needed; `auth.issuer` defaults to `token.issuer` and `auth.audience` to `token-service`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use auth_core::keys::Alg;
use auth_core::service::config::{
    self, ConfigError, CorsSettings, DatabaseSettings, Environment, LogSettings, ServerSettings,
};
use auth_core::settings::{AuthSettings, one_or_many};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::INFO;

/// The most failed sign-ins per username (and per client IP) in a throttle window that
/// production allows (`throttle.max_failures`).
pub const MAX_PRODUCTION_FAILURES: u32 = 100;

/// The shortest throttle window production allows (`throttle.window_seconds`): with
/// [`MAX_PRODUCTION_FAILURES`], at most 100 guesses a minute at one account.
pub const MIN_PRODUCTION_WINDOW_SECONDS: u64 = 60;

/// The smallest throttle table production allows (`throttle.max_entries`): a tiny one lets a
/// guesser alternate names so that each evicts the other's count.
pub const MIN_PRODUCTION_ENTRIES: usize = 1_000;

/// The audience of token-service's own routes (`/users…`): a token must carry it in `aud`.
pub const SELF_AUDIENCE: &str = "token-service";

/// Everything token-service reads from its configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `environment`: `local` (default) or `production`.
    pub environment: Environment,
    /// `server.*` (default port 4000).
    pub server: ServerSettings,
    /// `log.*`.
    pub log: LogSettings,
    /// `database.*` (SQLite `data/token-service.db` by default).
    pub database: DatabaseSettings,
    /// `cors.*`.
    pub cors: CorsSettings,
    /// `auth.*`: verification of the tokens presented to `/users…`.
    pub auth: AuthSettings,
    /// `token.*`: what the issued tokens say.
    pub token: TokenSettings,
    /// `signing.*`: the signing keys.
    pub signing: SigningSettings,
    /// `users.*`: password hashing and fixture users.
    pub users: UsersSettings,
    /// `throttle.*`: brute-force protection of `POST /token`.
    pub throttle: ThrottleSettings,
}

/// `token.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// `token.issuer`: the `iss` of every token and the discovery document's `issuer`
    /// (local: `http://127.0.0.1:4000`; required in production).
    pub issuer: Option<String>,
    /// `token.audiences`: the `aud` of a token when none is requested (local: `todo-api`,
    /// `tasks-api`; required in production). A string (comma separated) or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub audiences: Vec<String>,
    /// `token.allowed_audiences`: what a client may request with `audience` / `resource`
    /// (default: `token.audiences` plus `token-service`).
    #[serde(deserialize_with = "one_or_many")]
    pub allowed_audiences: Vec<String>,
    /// `token.lifetime_seconds`: `exp - iat` (default 900).
    pub lifetime_seconds: u64,
    /// `token.default_client_id`: the `client_id` claim when the request names none (default `default`).
    pub default_client_id: String,
    /// `token.role_scopes`: role → the scopes it allows (see [`TokenSettings::default`]). A
    /// role configured here is added to the default ones, or replaces one of the same name
    /// (`user = []` gives `user` no scope).
    pub role_scopes: BTreeMap<String, Vec<String>>,
    /// `token.role_access`: role → URL paths put in the `access` claim (seed 003; default none).
    pub role_access: BTreeMap<String, Vec<String>>,
}

impl Default for TokenSettings {
    /// The default role → scope mapping:
    ///
    /// | role | scopes |
    /// |---|---|
    /// | `user` | `todos:read todos:write tasks:read tasks:write` |
    /// | `admin` | the same plus `users:admin` |
    fn default() -> Self {
        let user: Vec<String> = ["todos:read", "todos:write", "tasks:read", "tasks:write"]
            .map(String::from)
            .to_vec();
        let mut admin = user.clone();
        admin.push("users:admin".into());
        Self {
            issuer: None,
            audiences: Vec::new(),
            allowed_audiences: Vec::new(),
            lifetime_seconds: 900,
            default_client_id: "default".into(),
            role_scopes: BTreeMap::from([("user".into(), user), ("admin".into(), admin)]),
            role_access: BTreeMap::new(),
        }
    }
}

impl TokenSettings {
    /// The issuer (set after [`Settings::load`]).
    pub fn issuer(&self) -> &str {
        self.issuer.as_deref().unwrap_or_default()
    }

    /// Every scope some role allows (the discovery document's `scopes_supported`).
    pub fn all_scopes(&self) -> Vec<String> {
        let mut all: Vec<String> = self.role_scopes.values().flatten().cloned().collect();
        all.sort();
        all.dedup();
        all
    }
}

/// `signing.*`. Keys are PEM files: private keys (PKCS#8 EC P-256, Ed25519 or RSA, or PKCS#1
/// RSA) and, optionally, X.509 certificates, matched to their key by its public key. A key file
/// `NAME.pem` may have a sidecar `NAME.toml` (`created_at`, `activate_at`, `retire_at`, RFC 3339)
/// written by `token-service keys rotate`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningSettings {
    /// `signing.keys_dir`: every `*.pem` in it is read (`keys rotate` writes here).
    pub keys_dir: Option<PathBuf>,
    /// `signing.key_files`: more PEM files (local: the fixture keys and the RSA certificate).
    #[serde(deserialize_with = "one_or_many_paths")]
    pub key_files: Vec<PathBuf>,
    /// `signing.algorithm`: the algorithm `keys rotate` generates, and the preferred signer when
    /// several keys became active at the same time (default ES256).
    pub algorithm: Alg,
    /// `signing.secret`: an HS256 shared secret (≥ 32 bytes) instead of key files: tokens are
    /// then HS256 and no JWKS is published; resource services use the same secret.
    pub secret: Option<SecretString>,
    /// `signing.secret_file`: the same, from a file (trimmed).
    pub secret_file: Option<PathBuf>,
    /// `signing.propagation_delay_seconds`: a rotated-in key is published this long before it
    /// signs (default 600; at least `signing.jwks_max_age_seconds`).
    pub propagation_delay_seconds: u64,
    /// `signing.retire_after_seconds`: how long a replaced key stays published after its
    /// successor starts signing (default `token.lifetime_seconds + signing.jwks_max_age_seconds`).
    pub retire_after_seconds: Option<u64>,
    /// `signing.rescan_seconds`: how often the key files are re-read (default 60; also on SIGHUP).
    pub rescan_seconds: u64,
    /// `signing.jwks_max_age_seconds`: `Cache-Control: max-age` of the JWKS (default 300).
    pub jwks_max_age_seconds: u64,
}

impl std::fmt::Debug for SigningSettings {
    /// `secret_file` only as set, as `AuthSettings` shows it: a secret pasted into the key by
    /// mistake is not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so a new field is printed deliberately or not at all.
        let SigningSettings {
            keys_dir,
            key_files,
            algorithm,
            secret,
            secret_file,
            propagation_delay_seconds,
            retire_after_seconds,
            rescan_seconds,
            jwks_max_age_seconds,
        } = self;
        f.debug_struct("SigningSettings")
            .field("keys_dir", keys_dir)
            .field("key_files", key_files)
            .field("algorithm", algorithm)
            .field("secret", secret)
            .field("secret_file", &secret_file.as_ref().map(|_| "[set]"))
            .field("propagation_delay_seconds", propagation_delay_seconds)
            .field("retire_after_seconds", retire_after_seconds)
            .field("rescan_seconds", rescan_seconds)
            .field("jwks_max_age_seconds", jwks_max_age_seconds)
            .finish()
    }
}

impl Default for SigningSettings {
    fn default() -> Self {
        Self {
            keys_dir: None,
            key_files: Vec::new(),
            algorithm: Alg::ES256,
            secret: None,
            secret_file: None,
            propagation_delay_seconds: 600,
            retire_after_seconds: None,
            rescan_seconds: 60,
            jwks_max_age_seconds: 300,
        }
    }
}

impl SigningSettings {
    /// Whether tokens are HS256 with a shared secret.
    pub fn uses_secret(&self) -> bool {
        self.secret.is_some() || self.secret_file.is_some()
    }
}

/// `users.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsersSettings {
    /// `users.fixtures_file`: users loaded at start when absent (local: `fixtures/users.toml`;
    /// refused in production).
    pub fixtures_file: Option<PathBuf>,
    /// `users.argon2_memory_kib` (default 19456, OWASP's minimum for argon2id).
    pub argon2_memory_kib: u32,
    /// `users.argon2_iterations` (default 2).
    pub argon2_iterations: u32,
    /// `users.argon2_parallelism` (default 1).
    pub argon2_parallelism: u32,
    /// `users.max_concurrent_hashes`: argon2 computations at once; more wait (default 1: each
    /// one keeps a working buffer of `argon2_memory_kib`, 19 MiB by default, for reuse, so one
    /// keeps token-service under 40 MiB; raise it for more sign-ins per second, up to the
    /// number of CPUs).
    pub max_concurrent_hashes: usize,
    /// `users.max_queued_hashes`: requests that may wait for one of those computations (default
    /// 128, a few seconds of sign-ins at the default cost); one more is refused at once with 503
    /// `temporarily_unavailable` and `Retry-After: 1`, so a flood of sign-ins from many
    /// addresses sheds load instead of holding connections for minutes. 0: never wait.
    pub max_queued_hashes: usize,
}

impl Default for UsersSettings {
    fn default() -> Self {
        Self {
            fixtures_file: None,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            max_concurrent_hashes: 1,
            max_queued_hashes: 128,
        }
    }
}

/// `throttle.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// `throttle.max_failures`: failed sign-ins per username, and per client IP, within a window
    /// before further attempts get 429 (default 5).
    pub max_failures: u32,
    /// `throttle.window_seconds` (default 300; production: at least 60).
    pub window_seconds: u64,
    /// `throttle.trusted_proxies`: peers whose `X-Forwarded-For` is believed (default none):
    /// IP addresses (`10.0.0.9`) or CIDR ranges (`10.0.0.0/8`, `fd00::/8`).
    #[serde(deserialize_with = "one_or_many")]
    pub trusted_proxies: Vec<String>,
    /// `throttle.max_entries`: counters kept per kind (username, IP); the oldest that are not
    /// running lockouts are dropped beyond it (default 10000; production: at least 1000).
    pub max_entries: usize,
    /// `throttle.max_in_flight_per_address`: sign-ins from one client IP (IPv6: /64) in flight
    /// at once; more get 429 with `Retry-After: 1` before they count against any username
    /// (default 16). Bounds how many accounts one address can put at risk of a lockout, and how
    /// much of the hashing queue it can hold, with guesses that have not failed yet.
    pub max_in_flight_per_address: u32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window_seconds: 300,
            trusted_proxies: Vec::new(),
            max_entries: 10_000,
            max_in_flight_per_address: 16,
        }
    }
}

impl ThrottleSettings {
    /// The trusted proxies, parsed (validated by [`Settings::load`]); an address is the range
    /// of that one address.
    pub fn proxies(&self) -> Vec<IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|p| proxy_range(p))
            .collect()
    }
}

/// One `throttle.trusted_proxies` entry: a CIDR range, or an address (a range of one). A range
/// must be written at its network address (`10.0.0.0/8`, not `10.1.2.3/8`): host bits set are
/// more often a typo than a wish. An IPv4-mapped entry (`::ffff:10.0.0.9`, `::ffff:10.0.0.0/104`,
/// as a dual-stack listener logs an IPv4 peer) is the IPv4 range it maps, as peers are compared.
fn proxy_range(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    let net = match entry.parse::<IpNet>() {
        Ok(net) if net == net.trunc() => net,
        Ok(_) => return None,
        Err(_) => IpNet::from(entry.parse::<IpAddr>().ok()?),
    };
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .ok()
                .map(IpNet::V4),
            None => Some(net),
        },
        _ => Some(net),
    }
}

fn fixture(name: &str) -> String {
    format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The longest `token.lifetime_seconds` accepted: 30 days (Auth0's cap for API access tokens).
pub const MAX_TOKEN_LIFETIME: u64 = 30 * 24 * 3600;

impl Settings {
    /// Loads the settings (see the module docs), fills in the derived defaults, validates, and
    /// in production applies the production rules.
    pub fn load(config_path: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with(config_path, true)
    }

    /// Like [`Settings::load`]; `check_keys = false` skips the production rules about the
    /// signing key files (for `keys rotate`, which creates the first key).
    pub fn load_with(
        config_path: Option<&Path>,
        check_keys: bool,
    ) -> Result<Settings, ConfigError> {
        // The role mapping is a layer of its own (not only `Default`), so a file or the
        // environment that adds a role merges with `user` and `admin` instead of replacing them.
        let defaults = serde_json::json!({
            "server": { "port": INFO.default_port },
            "token": { "role_scopes": TokenSettings::default().role_scopes },
        });
        let local = serde_json::json!({
            "cors": { "allowed_origins": config::local_cors_origins() },
            "token": {
                "issuer": "http://127.0.0.1:4000",
                "audiences": ["todo-api", "tasks-api"],
            },
            "signing": {
                "key_files": [
                    fixture("keys/ec-private.pem"),
                    fixture("keys/ed25519-private.pem"),
                    fixture("keys/rsa-private.pem"),
                    fixture("keys/rsa-cert.pem"),
                ],
            },
            "users": { "fixtures_file": fixture("users.toml") },
        });
        let settings: Settings = config::load(&INFO, config_path, defaults, local)?;
        settings.finish_with(check_keys)
    }

    /// Derived defaults and validation (also used by tests that build settings in code).
    pub fn finish(self) -> Result<Settings, ConfigError> {
        self.finish_with(true)
    }

    fn finish_with(mut self, check_keys: bool) -> Result<Settings, ConfigError> {
        // A blank secret source (an environment variable set empty) is unset, as auth-core
        // reads its key sources: not an HS256 secret from a file named "".
        if self
            .signing
            .secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().is_empty())
        {
            self.signing.secret = None;
        }
        if self
            .signing
            .secret_file
            .as_ref()
            .is_some_and(|p| p.to_string_lossy().trim().is_empty())
        {
            self.signing.secret_file = None;
        }
        // One issuer: token.issuer and auth.issuer default to each other and must agree.
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        // Errors about the issuer name the key the operator set: `token.issuer`, the one
        // documented, unless only `auth.issuer` was.
        let issuer_key = match (nonempty(&self.token.issuer), nonempty(&self.auth.issuer)) {
            (None, Some(_)) => "auth.issuer",
            _ => "token.issuer",
        };
        match (nonempty(&self.token.issuer), nonempty(&self.auth.issuer)) {
            (Some(t), Some(a)) if t != a => {
                return Err(ConfigError::key(
                    "auth.issuer",
                    format!("must equal token.issuer ({t}): token-service verifies its own tokens"),
                ));
            }
            (t, a) => {
                let issuer = t.or(a);
                self.token.issuer = issuer.clone();
                self.auth.issuer = issuer;
            }
        }
        if self.auth.audience.is_empty() {
            self.auth.audience = vec![SELF_AUDIENCE.to_owned()];
        }
        if self.token.allowed_audiences.is_empty() {
            let mut allowed = self.token.audiences.clone();
            allowed.extend(self.auth.audience.iter().cloned());
            allowed.dedup();
            self.token.allowed_audiences = allowed;
        }
        if self.signing.uses_secret() {
            self.auth.algorithms = vec![Alg::HS256];
        }
        self.validate()?;
        self.server.check()?;
        self.database.check()?;
        self.database.check_within(&self.server)?;
        self.cors.check()?;
        if self.environment == Environment::Production {
            self.check_production(check_keys, issuer_key)?;
        }
        Ok(self)
    }

    /// How long a replaced key stays published after its successor signs.
    pub fn retire_after(&self) -> u64 {
        self.signing.retire_after_seconds.unwrap_or(
            self.token
                .lifetime_seconds
                .saturating_add(self.signing.jwks_max_age_seconds),
        )
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (role, grants) in &self.token.role_access {
            if let Some(bad) = grants.iter().find(|g| !auth_core::filters::valid_grant(g)) {
                return Err(ConfigError::key(
                    "token.role_access",
                    format!(
                        "role {role:?}: {bad:?} is not a path written as the services compare it \
                         (starting with '/', no query, trailing '/', empty or dot segment; '/*' \
                         at the end for everything below)"
                    ),
                ));
            }
        }
        if self.token.lifetime_seconds == 0 || self.token.lifetime_seconds > MAX_TOKEN_LIFETIME {
            return Err(ConfigError::key(
                "token.lifetime_seconds",
                format!("must be 1 to {MAX_TOKEN_LIFETIME} (30 days)"),
            ));
        }
        // A replaced key must outlive every token it signed, and verifiers' cached copies of
        // the set that still lists it.
        let alive = self
            .token
            .lifetime_seconds
            .saturating_add(self.signing.jwks_max_age_seconds);
        if let Some(retire) = self.signing.retire_after_seconds
            && retire < alive
        {
            return Err(ConfigError::key(
                "signing.retire_after_seconds",
                format!(
                    "must be at least token.lifetime_seconds + signing.jwks_max_age_seconds ({alive}), \
                     or tokens the replaced key signed are refused before they expire"
                ),
            ));
        }
        if self.token.default_client_id.trim().is_empty() {
            return Err(ConfigError::key(
                "token.default_client_id",
                "must not be empty",
            ));
        }
        for aud in &self.token.audiences {
            if !self.token.allowed_audiences.contains(aud) {
                return Err(ConfigError::key(
                    "token.allowed_audiences",
                    format!("must include every default audience (missing {aud})"),
                ));
            }
        }
        if self.signing.propagation_delay_seconds < self.signing.jwks_max_age_seconds {
            return Err(ConfigError::key(
                "signing.propagation_delay_seconds",
                format!(
                    "must be at least signing.jwks_max_age_seconds ({}), so verifiers' caches hold a new key before it signs",
                    self.signing.jwks_max_age_seconds
                ),
            ));
        }
        if self.signing.secret.is_some() && self.signing.secret_file.is_some() {
            return Err(ConfigError::key(
                "signing.secret_file",
                "set signing.secret or signing.secret_file, not both",
            ));
        }
        if self.signing.uses_secret() && self.signing.algorithm != Alg::HS256 {
            return Err(ConfigError::key(
                "signing.algorithm",
                "must be HS256 when signing.secret or signing.secret_file is set",
            ));
        }
        if !self.signing.uses_secret() && self.signing.algorithm == Alg::HS256 {
            return Err(ConfigError::key(
                "signing.secret",
                "HS256 needs signing.secret or signing.secret_file",
            ));
        }
        // Each time is bounded (a day or 30 days), so the arithmetic on key phases cannot
        // overflow and every time a sidecar holds can be written and read back.
        const DAY: u64 = 86_400;
        for (key, value, max) in [
            (
                "signing.propagation_delay_seconds",
                self.signing.propagation_delay_seconds,
                30 * DAY,
            ),
            (
                "signing.retire_after_seconds",
                self.signing.retire_after_seconds.unwrap_or(0),
                60 * DAY,
            ),
            ("signing.rescan_seconds", self.signing.rescan_seconds, DAY),
            (
                "signing.jwks_max_age_seconds",
                self.signing.jwks_max_age_seconds,
                DAY,
            ),
        ] {
            if value > max {
                return Err(ConfigError::key(key, format!("at most {max}")));
            }
        }
        if self.signing.rescan_seconds == 0 {
            return Err(ConfigError::key(
                "signing.rescan_seconds",
                "must be greater than 0",
            ));
        }
        // A running service sees a rotation only at its next rescan (or SIGHUP): a new key must
        // still be published a whole JWKS max-age before it signs, counted from that rescan.
        let seen_by = self.signing.rescan_seconds + self.signing.jwks_max_age_seconds;
        if !self.signing.uses_secret() && self.signing.propagation_delay_seconds < seen_by {
            return Err(ConfigError::key(
                "signing.propagation_delay_seconds",
                format!(
                    "must be at least signing.rescan_seconds + signing.jwks_max_age_seconds ({seen_by}): \
                     a rotation is seen at the next rescan, and verifiers' caches must hold the new key \
                     before it signs"
                ),
            ));
        }
        let u = &self.users;
        argon2::Params::new(
            u.argon2_memory_kib,
            u.argon2_iterations,
            u.argon2_parallelism,
            None,
        )
        .map_err(|e| {
            use argon2::Error as E;
            let key = match e {
                E::TimeTooSmall => "users.argon2_iterations",
                E::ThreadsTooFew | E::ThreadsTooMany => "users.argon2_parallelism",
                _ => "users.argon2_memory_kib",
            };
            ConfigError::key(key, e)
        })?;
        // Locally a weaker hash is allowed (fast tests); production refuses it (see
        // `check_production`). The warning is printed, not logged: settings load before logging.
        if self.environment != Environment::Production && self.weak_argon2().is_some() {
            eprintln!("warning: users.argon2_*: below OWASP's minimum for argon2id (m=19456, t=2)");
        }
        // Each hash keeps a buffer of argon2_memory_kib: bounded, as the memory is.
        auth_core::service::config::check_range(
            "users.max_concurrent_hashes",
            u64::try_from(u.max_concurrent_hashes).unwrap_or(u64::MAX),
            1,
            1_024,
        )?;
        auth_core::service::config::check_range(
            "users.argon2_memory_kib",
            u64::from(u.argon2_memory_kib),
            8,
            1_048_576,
        )?;
        let t = &self.throttle;
        let zero = [
            ("throttle.max_failures", u64::from(t.max_failures)),
            ("throttle.window_seconds", t.window_seconds),
            ("throttle.max_entries", t.max_entries as u64),
            (
                "throttle.max_in_flight_per_address",
                u64::from(t.max_in_flight_per_address),
            ),
        ]
        .into_iter()
        .find(|(_, value)| *value == 0);
        if let Some((key, _)) = zero {
            return Err(ConfigError::key(key, "must be greater than 0"));
        }
        // A lockout's end is `since + window`: a day at most keeps that far from overflowing.
        if t.window_seconds > 86_400 {
            return Err(ConfigError::key(
                "throttle.window_seconds",
                "must be 1 to 86400 (a day)",
            ));
        }
        for p in &t.trusted_proxies {
            proxy_range(p).ok_or_else(|| {
                ConfigError::key(
                    "throttle.trusted_proxies",
                    format!(
                        "not an IP address or a CIDR range at its network address \
                         (10.0.0.9, 10.0.0.0/8, fd00::/8): {p:?}"
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// Production: everything auth-core refuses for an `auth` section, then token-service's own
    /// rules (no proxy range that trusts every peer, audiences, a signing key that is neither a
    /// fixture nor readable by others, no fixture users).
    /// The first argon2 setting below OWASP's minimum for argon2id (m = 19 456 KiB, t = 2).
    fn weak_argon2(&self) -> Option<&'static str> {
        if self.users.argon2_memory_kib < 19_456 {
            Some("users.argon2_memory_kib")
        } else if self.users.argon2_iterations < 2 {
            Some("users.argon2_iterations")
        } else {
            None
        }
    }

    fn check_production(&self, check_keys: bool, issuer_key: &str) -> Result<(), ConfigError> {
        if self
            .token
            .issuer
            .as_deref()
            .is_none_or(|i| i.trim().is_empty())
        {
            return Err(ConfigError::key(issuer_key, "required in production"));
        }
        if let Some(key) = self.weak_argon2() {
            return Err(ConfigError::key(
                key,
                "below OWASP's minimum for argon2id (argon2_memory_kib 19456, argon2_iterations 2)",
            ));
        }
        self.database.check_for_production()?;
        if self.throttle.max_failures > MAX_PRODUCTION_FAILURES {
            return Err(ConfigError::key(
                "throttle.max_failures",
                format!(
                    "at most {MAX_PRODUCTION_FAILURES} in production: more failed sign-ins per \
                     window leave a password open to guessing"
                ),
            ));
        }
        if self.throttle.window_seconds < MIN_PRODUCTION_WINDOW_SECONDS {
            return Err(ConfigError::key(
                "throttle.window_seconds",
                format!(
                    "at least {MIN_PRODUCTION_WINDOW_SECONDS} in production: a shorter window \
                     lets guessing resume sooner"
                ),
            ));
        }
        if self.throttle.max_entries < MIN_PRODUCTION_ENTRIES {
            return Err(ConfigError::key(
                "throttle.max_entries",
                format!(
                    "at least {MIN_PRODUCTION_ENTRIES} in production: a small table lets a \
                     guesser's other names evict an account's count"
                ),
            ));
        }
        // Merged first: `0.0.0.0/1` and `128.0.0.0/1` together trust every IPv4 peer too.
        let merged = IpNet::aggregate(&self.throttle.proxies());
        if let Some(all) = merged.iter().find(|net| net.prefix_len() == 0) {
            return Err(ConfigError::key(
                "throttle.trusted_proxies",
                format!(
                    "{all} trusts every peer, so any client could choose the address it is \
                     throttled by; list your proxies' addresses or ranges"
                ),
            ));
        }
        if let Some(secret) = &self.signing.secret {
            config::check_not_dev_secret("signing.secret", secret.expose_secret().as_bytes())?;
        }
        if let Some(path) = &self.signing.secret_file {
            let bytes = std::fs::read(path).map_err(|e| {
                // Not the path: a secret pasted into this key by mistake would be printed.
                ConfigError::key(
                    "signing.secret_file",
                    format!("cannot read the file it names: {e}"),
                )
            })?;
            config::check_not_dev_secret("signing.secret_file", bytes.trim_ascii())?;
            // Before the `auth` checks below, which would name `auth.secret_file`, a key the
            // operator never set, for the same file.
            config::check_private_file("signing.secret_file", path)?;
        }
        let mut auth = self.auth.set_sources();
        let has_source = !auth.key_sources().is_empty();
        if !has_source && let Some(issuer) = &auth.issuer {
            // token-service's own keys are what it verifies with: judge them by the URL that
            // publishes them.
            auth.jwks_url = Some(format!(
                "{}/.well-known/jwks.json",
                issuer.trim_end_matches('/')
            ));
        }
        if self.signing.uses_secret() && !has_source {
            auth.jwks_url = None;
            auth.secret = self.signing.secret.clone();
            auth.secret_file = self
                .signing
                .secret_file
                .as_ref()
                .map(|p| p.display().to_string());
        }
        config::check_url_for_production(issuer_key, self.token.issuer())?;
        config::check_auth_for_production(&auth)?;
        if self.token.audiences.is_empty() {
            return Err(ConfigError::key(
                "token.audiences",
                "required in production",
            ));
        }
        if self.users.fixtures_file.is_some() {
            return Err(ConfigError::key(
                "users.fixtures_file",
                "fixture users are never loaded in production (create the first admin with `token-service users add --admin`)",
            ));
        }
        if check_keys && !self.signing.uses_secret() {
            crate::keys::check_for_production(&self.signing)?;
        }
        Ok(())
    }
}

fn one_or_many_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(one_or_many(d)?.into_iter().map(PathBuf::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service may log its settings: a secret pasted into `signing.secret_file` (or
    /// `signing.secret`) by mistake is not printed.
    #[test]
    fn signing_settings_print_no_secret() {
        let signing = SigningSettings {
            secret: Some(SecretString::from("Pasted-S3cret-value")),
            secret_file: Some("Pasted-S3cret-file".into()),
            ..SigningSettings::default()
        };
        let printed = format!("{signing:?}");
        assert!(
            !printed.contains("Pasted-S3cret") && printed.contains("secret_file: Some(\"[set]\")"),
            "{printed}"
        );
    }
}
