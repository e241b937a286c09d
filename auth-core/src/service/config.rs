//! Layered configuration: built-in defaults → the local environment's defaults (only when
//! `environment = "local"`) → a TOML file (`--config PATH`, or `config/<service>.toml`) →
//! environment variables with the service's prefix and `__` nesting (`TODO_API__AUTH__JWKS_URL`).
//!
//! A configuration error is one line naming the key; [`ConfigError`] displays as exactly that.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::keys::{VerifyingKey, dev};
use crate::settings::AuthSettings;

/// Where a service runs. The parse error lists the accepted values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Convenient defaults for an engineer's machine (the default).
    #[default]
    Local,
    /// Strict: every unsafe setting is refused at start.
    Production,
}

/// What the plumbing needs to know about a service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceInfo {
    /// The service's name: binary, realm, log field, `config/<name>.toml`.
    pub name: &'static str,
    /// Prefix of its environment variables, without the trailing `__` (`TODO_API`).
    pub env_prefix: &'static str,
    /// Default port.
    pub default_port: u16,
}

/// `server.*`: where and how the service listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// `server.host` (default 127.0.0.1).
    pub host: IpAddr,
    /// `server.port` (0 picks a free port).
    pub port: u16,
    /// `server.max_connections`: connections served at once; more wait in the backlog (default 1024).
    pub max_connections: usize,
    /// `server.header_read_timeout_seconds`: a client must send its headers within this (default 10).
    pub header_read_timeout_seconds: u64,
    /// `server.max_header_bytes`: request line and headers together (default 16384; at least 8192).
    pub max_header_bytes: usize,
    /// `server.shutdown_timeout_seconds`: how long in-flight requests may take after a stop signal (default 30).
    pub shutdown_timeout_seconds: u64,
    /// `server.shutdown_delay_seconds`: after a stop signal, how long the service goes on
    /// accepting and serving with `/ready` answering 503, so a load balancer takes it out of
    /// rotation before its listener closes (default 0: close at once).
    pub shutdown_delay_seconds: u64,
    /// `server.body_read_timeout_seconds`: a request body must arrive within this, counted from
    /// the first read (default 30; a slower body is a 408).
    pub body_read_timeout_seconds: u64,
    /// `server.max_query_bytes`: longer query strings are a 414 (default 4096).
    pub max_query_bytes: usize,
    /// `server.max_query_params`: more query parameters are a 400 (default 32).
    pub max_query_params: usize,
    /// `server.request_timeout_seconds`: a request (its body included) must be answered within
    /// this, else 503 `temporarily_unavailable` (default 60): a handler stuck on a database
    /// that stopped answering does not hold its client and its connection for ever.
    pub request_timeout_seconds: u64,
    /// `server.write_timeout_seconds`: a response the client takes none of for this long (it
    /// stopped reading: its window is shut) closes the connection (default 30), so a client
    /// that never reads cannot hold a connection slot for ever.
    pub write_timeout_seconds: u64,
}

impl ServerSettings {
    /// Every number within its range, or an error naming the key: a 0 would stop the service
    /// serving, a huge timeout would overflow the clock (a panic in every connection's task).
    pub fn check(&self) -> Result<(), ConfigError> {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        for (key, value, min, max) in [
            (
                "server.max_connections",
                count(self.max_connections),
                1,
                65_536,
            ),
            (
                "server.header_read_timeout_seconds",
                self.header_read_timeout_seconds,
                1,
                3_600,
            ),
            (
                "server.max_header_bytes",
                count(self.max_header_bytes),
                8_192,
                1_048_576,
            ),
            (
                "server.shutdown_timeout_seconds",
                self.shutdown_timeout_seconds,
                0,
                3_600,
            ),
            (
                "server.shutdown_delay_seconds",
                self.shutdown_delay_seconds,
                0,
                3_600,
            ),
            (
                "server.body_read_timeout_seconds",
                self.body_read_timeout_seconds,
                1,
                3_600,
            ),
            (
                "server.max_query_bytes",
                count(self.max_query_bytes),
                1,
                1_048_576,
            ),
            (
                "server.max_query_params",
                count(self.max_query_params),
                1,
                1_024,
            ),
            (
                "server.request_timeout_seconds",
                self.request_timeout_seconds,
                1,
                3_600,
            ),
            (
                "server.write_timeout_seconds",
                self.write_timeout_seconds,
                1,
                3_600,
            ),
        ] {
            check_range(key, value, min, max)?;
        }
        Ok(())
    }
}

/// `value` of `key` within `min..=max`, or an error naming the key and the range.
pub fn check_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::key(key, format!("must be {min} to {max}")))
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            max_connections: 1024,
            header_read_timeout_seconds: 10,
            max_header_bytes: 16 * 1024,
            shutdown_timeout_seconds: 30,
            shutdown_delay_seconds: 0,
            body_read_timeout_seconds: 30,
            max_query_bytes: 4096,
            max_query_params: 32,
            request_timeout_seconds: 60,
            write_timeout_seconds: 30,
        }
    }
}

/// `log.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `log.level`: an `EnvFilter` directive (default `info`); `RUST_LOG` overrides it.
    pub level: String,
    /// `log.format`: `pretty`, `json`, or `auto` (the default: pretty locally, JSON in production).
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty locally, JSON in production.
    Auto,
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `database.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `database.url`: `postgres://…` selects PostgreSQL; unset means a SQLite file
    /// `<data_dir>/<service>.db`. A `sqlite://` URL names another file.
    pub url: Option<SecretString>,
    /// `database.data_dir`: where the SQLite file lives, created if missing (default `data`).
    pub data_dir: PathBuf,
    /// `database.max_connections` (default 8).
    pub max_connections: u32,
    /// `database.acquire_timeout_seconds`: a request waits at most this for a connection (default 5).
    pub acquire_timeout_seconds: u64,
    /// `database.statement_timeout_seconds`: on PostgreSQL, the server cancels a statement that
    /// runs longer (its `statement_timeout`; default 30, under `server.request_timeout_seconds`,
    /// so a statement nobody waits for any more does not go on holding its connection and locks).
    /// 0 leaves the server's own setting; at most a day. Migrations run without it.
    pub statement_timeout_seconds: u64,
}

impl DatabaseSettings {
    /// Every number within its range, or an error naming the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (key, value, min, max) in [
            (
                "database.max_connections",
                u64::from(self.max_connections),
                1,
                1_024,
            ),
            (
                "database.acquire_timeout_seconds",
                self.acquire_timeout_seconds,
                1,
                300,
            ),
            (
                "database.statement_timeout_seconds",
                self.statement_timeout_seconds,
                0,
                86_400,
            ),
        ] {
            check_range(key, value, min, max)?;
        }
        Ok(())
    }

    /// One database wait must fit within `server`'s request timeout: past that timeout the
    /// client is answered 503 "try again" while the database may still carry out its write, so
    /// a retried `POST` would create the row twice. SQLite: a connection's wait, then the file
    /// lock's (`busy_timeout`, the same length). PostgreSQL: a connection's wait, then the
    /// statement's (`statement_timeout`; 0 leaves the server's own, which this cannot see).
    /// A partial guard: a body sent slowly, or a request of several statements, can still
    /// outlast the request timeout.
    pub fn check_within(&self, server: &ServerSettings) -> Result<(), ConfigError> {
        let request = server.request_timeout_seconds;
        let acquire = self.acquire_timeout_seconds;
        let postgres = self.url.as_ref().is_some_and(|u| {
            let u = u.expose_secret();
            u.starts_with("postgres://") || u.starts_with("postgresql://")
        });
        let why = "else a write may land after its client was answered 503 and told to retry";
        if !postgres && acquire.saturating_mul(2) >= request {
            return Err(ConfigError::key(
                "database.acquire_timeout_seconds",
                format!(
                    "twice it (a connection's wait, then the SQLite file lock's) must be under \
                     server.request_timeout_seconds ({request}): {why}"
                ),
            ));
        }
        let statement = self.statement_timeout_seconds;
        if postgres && statement > 0 && acquire.saturating_add(statement) >= request {
            return Err(ConfigError::key(
                "database.statement_timeout_seconds",
                format!(
                    "with database.acquire_timeout_seconds ({acquire}) it must be under \
                     server.request_timeout_seconds ({request}): {why}"
                ),
            ));
        }
        Ok(())
    }

    /// Production: a PostgreSQL server beyond loopback is reached over TLS that verifies it
    /// and its name (`sslmode=verify-full`). sqlx's default, `prefer`, falls back to plain TCP,
    /// where the rows, and a password the server asks for in clear, cross the network readable
    /// and alterable; its `verify-ca` ignores the name, and trusts Mozilla's roots besides any
    /// `sslrootcert`, so any holder of a public certificate could pose as the server. The host
    /// and mode are judged as sqlx reads them: the URL, then its `host`/`hostaddr`/`sslmode`
    /// parameters, and for what the URL leaves out `PGHOSTADDR`, `PGHOST` and `PGSSLMODE`. The
    /// message never shows the URL.
    pub fn check_for_production(&self) -> Result<(), ConfigError> {
        self.check_for_production_with(&|name| std::env::var(name).ok())
    }

    /// [`DatabaseSettings::check_for_production`] with `env` for the process environment (a test
    /// must not set `PGSSLMODE` for the PostgreSQL tests running beside it).
    fn check_for_production_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let url = url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Ok(());
        }
        // One that does not parse is refused by sqlx, naming no part of it.
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return Ok(());
        };
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        // A socket path in the URL's host is percent-encoded (`%2Frun%2Fpostgresql`).
        let mut host = match parsed.host_str().filter(|h| !h.is_empty()) {
            Some(h) => percent_encoding::percent_decode_str(h)
                .decode_utf8_lossy()
                .into_owned(),
            None => env("PGHOSTADDR")
                .or_else(|| env("PGHOST"))
                .unwrap_or_default(),
        };
        let mut sslmode = env("PGSSLMODE").unwrap_or_default().to_ascii_lowercase();
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "host" | "hostaddr" => host = value.into_owned(),
                "sslmode" | "ssl-mode" => sslmode = value.to_ascii_lowercase(),
                _ => {}
            }
        }
        let socket = host.starts_with('/');
        // No host at all: sqlx's default, a local socket or `localhost`.
        let loopback = host.is_empty()
            || host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if socket || loopback || sslmode == "verify-full" {
            return Ok(());
        }
        Err(ConfigError::key(
            "database.url",
            "a PostgreSQL server beyond loopback needs sslmode=verify-full in production: \
             otherwise its rows and password may cross the network in clear, or to an impostor",
        ))
    }

    /// `statement_timeout_seconds` as the pool applies it: `None` for 0, at most a day.
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        (self.statement_timeout_seconds > 0)
            .then(|| std::time::Duration::from_secs(self.statement_timeout_seconds.min(86_400)))
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            data_dir: PathBuf::from("data"),
            max_connections: 8,
            acquire_timeout_seconds: 5,
            statement_timeout_seconds: 30,
        }
    }
}

/// `cors.*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// `cors.allowed_origins`: exact origins (`https://app.example.com`). None by default in
    /// production; the local stack's loopback origins locally.
    pub allowed_origins: Vec<String>,
}

impl CorsSettings {
    /// Every origin exactly as a browser sends it (`scheme://host[:port]`, lowercase, no path),
    /// or an error naming the key and the offending entry (warp's CORS layer panics on one).
    pub fn check(&self) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            // The origin a browser would send for this URL, if it has one.
            let sent = reqwest::Url::parse(origin)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .map(|u| u.origin().ascii_serialization());
            if sent.as_ref() != Some(origin) {
                let hint = sent
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                // A user and password in the entry are not printed.
                let shown = match reqwest::Url::parse(origin) {
                    Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
                        let _ = url.set_username("");
                        let _ = url.set_password(None);
                        format!("{:?} (its user and password left out)", url.as_str())
                    }
                    _ => format!("{origin:?}"),
                };
                return Err(ConfigError::key(
                    "cors.allowed_origins",
                    format!(
                        "{shown} is not an origin: scheme://host[:port], as browsers send it{hint}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The settings of a resource service: the sections every service shares. A service with more
/// (token-service) embeds these sections in its own type.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `environment`: `local` (the default) or `production`.
    pub environment: Environment,
    /// `server.*`.
    pub server: ServerSettings,
    /// `log.*`.
    pub log: LogSettings,
    /// `database.*`.
    pub database: DatabaseSettings,
    /// `cors.*`.
    pub cors: CorsSettings,
    /// `auth.*`.
    pub auth: AuthSettings,
}

impl Settings {
    /// Loads a resource service's settings (see [`load`]) and applies the production rules.
    /// `local_auth` holds the local environment's `auth` defaults (issuer, audience, key URL).
    pub fn load(
        info: &ServiceInfo,
        config_path: Option<&Path>,
        local_auth: serde_json::Value,
    ) -> Result<Self, ConfigError> {
        let defaults = serde_json::json!({ "server": { "port": info.default_port } });
        let local_jwks_url = local_auth["jwks_url"].as_str().map(str::to_owned);
        let local = serde_json::json!({
            "auth": local_auth,
            "cors": { "allowed_origins": local_cors_origins() },
        });
        let mut settings: Settings = load(info, config_path, defaults, local)?;
        // The local default key URL gives way to another key source the engineer sets (the
        // fixtures secret for `dev-token --alg HS256`, a PEM file): "only one key source" was
        // otherwise an error about a setting they never made. One they set themselves stays.
        let auth = &mut settings.auth;
        let other_source = auth.key_sources().iter().any(|k| *k != "auth.jwks_url");
        if settings.environment == Environment::Local
            && other_source
            && auth.jwks_url.is_some()
            && auth.jwks_url == local_jwks_url
        {
            auth.jwks_url = None;
        }
        settings.server.check()?;
        settings.database.check()?;
        settings.database.check_within(&settings.server)?;
        settings.cors.check()?;
        // Verification-off mode takes any token that decodes: a development convenience that
        // must not be reachable from other machines, in any environment.
        if !settings.auth.enabled && !settings.server.host.is_loopback() {
            return Err(ConfigError::key(
                "auth.enabled",
                format!(
                    "verification-off mode listens on a loopback server.host only (it is {})",
                    settings.server.host
                ),
            ));
        }
        if settings.environment == Environment::Production {
            check_auth_for_production(&settings.auth)?;
            settings.database.check_for_production()?;
        }
        // The dev-only fixtures keys' private halves are committed: a service other machines
        // can reach refuses them in any environment, as verification-off mode is refused there.
        if settings.environment == Environment::Production || !settings.server.host.is_loopback() {
            refuse_dev_key_sources(&settings.auth)?;
            settings.auth.jwks.refuse_dev_keys = true;
        }
        Ok(settings)
    }
}

/// A configuration error: one line, naming the key.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about `key`.
    pub fn key(key: &str, message: impl fmt::Display) -> Self {
        Self(format!("config error: {key}: {message}"))
    }
}

impl From<figment::Error> for ConfigError {
    /// The first error only, on one line, naming the key, and never the value: a mistyped
    /// `database.url` or secret would otherwise be printed (figment quotes the value it found,
    /// and the TOML parser quotes the whole source line of a syntax error).
    fn from(e: figment::Error) -> Self {
        use figment::error::Kind;
        let key = e.path.join(".");
        let kind = match &e.kind {
            Kind::InvalidType(actual, expected) => {
                format!(
                    "invalid type: found {}, expected {expected}",
                    kind_of(actual)
                )
            }
            Kind::InvalidValue(actual, expected) => {
                format!(
                    "invalid value: found {}, expected {expected}",
                    kind_of(actual)
                )
            }
            Kind::Unsupported(actual) => format!("unsupported {}", kind_of(actual)),
            Kind::UnsupportedKey(actual, _) => format!("unsupported key: {}", kind_of(actual)),
            // A provider's message (the TOML parser's: "TOML parse error at line 2, column 7",
            // then the source line and a caret): its first line.
            Kind::Message(message) => message.lines().next().unwrap_or_default().to_owned(),
            Kind::UnknownVariant(_, expected) => {
                format!("unknown variant, expected one of {}", expected.join(", "))
            }
            other => other.to_string(),
        };
        let mut kind: String = kind.chars().filter(|c| *c != '\n').take(300).collect();
        if let Some(figment::Source::File(path)) =
            e.metadata.as_ref().and_then(|m| m.source.as_ref())
        {
            kind = format!("{kind} (in {})", path.display());
        }
        if key.is_empty() {
            Self(format!("config error: {kind}"))
        } else {
            Self::key(&key, kind)
        }
    }
}

/// What kind of value figment found, without the value.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "an empty value",
        Actual::Seq => "an array",
        Actual::Map => "a table",
        _ => "another kind of value",
    }
}

/// Loads a service's settings: `defaults` (the service's built-in defaults, complete),
/// `local_defaults` (merged over them only in the local environment), the TOML file, then the
/// environment.
pub fn load<T: DeserializeOwned>(
    info: &ServiceInfo,
    config_path: Option<&Path>,
    defaults: impl Serialize,
    local_defaults: impl Serialize,
) -> Result<T, ConfigError> {
    let file = match config_path {
        Some(path) if !path.exists() => {
            return Err(ConfigError(format!(
                "config error: --config {}: no such file",
                path.display()
            )));
        }
        Some(path) => Some(path.to_path_buf()),
        None => {
            let default = PathBuf::from(format!("config/{}.toml", info.name));
            default.exists().then_some(default)
        }
    };
    let user = |fig: Figment| {
        let fig = match &file {
            Some(path) => fig.merge(Toml::file_exact(path)),
            None => fig,
        };
        fig.merge(
            Env::prefixed(&format!("{}__", info.env_prefix))
                .split("__")
                .lowercase(true),
        )
    };

    // `TODO_API_ENVIRONMENT=production` (one underscore) would be ignored and the service would
    // start in the local environment with its fixtures: refused. Only that name: other
    // single-underscore names are someone else's (Kubernetes' service links set
    // `TODO_API_PORT`, `TODO_API_SERVICE_HOST` for a Service named todo-api).
    let near = format!("{}_ENVIRONMENT", info.env_prefix);
    if std::env::var_os(&near).is_some() {
        return Err(ConfigError(format!(
            "config error: {near}: not a setting; the environment is {}__ENVIRONMENT (two underscores)",
            info.env_prefix
        )));
    }

    #[derive(Deserialize)]
    struct Env0 {
        #[serde(default)]
        environment: Environment,
    }
    let env: Env0 = user(Figment::new()).extract()?;

    let mut fig = Figment::from(Serialized::defaults(defaults));
    if env.environment == Environment::Local {
        fig = fig.merge(Serialized::defaults(local_defaults));
    }
    Ok(user(fig).extract()?)
}

/// The largest `auth.leeway_seconds` production accepts: five minutes of clock skew (Envoy's
/// `jwt_authn` allows 60 s by default, Kerberos 5 minutes).
pub const MAX_PRODUCTION_LEEWAY_SECONDS: u64 = 300;

/// The longest a key set may be held in production (`auth.jwks.*_ttl_seconds`): a day.
pub const MAX_PRODUCTION_TTL_SECONDS: u64 = 86_400;

/// The production rules for the `auth` section: verification on, issuer and audience set, a key
/// source that is not a fixtures key and is fetched over https (or loopback). Returns the first
/// offending key.
pub fn check_auth_for_production(auth: &AuthSettings) -> Result<(), ConfigError> {
    if !auth.enabled {
        return Err(ConfigError::key(
            "auth.enabled",
            "verification-off mode is not allowed in production",
        ));
    }
    if auth.issuer.as_deref().is_none_or(str::is_empty) {
        return Err(ConfigError::key("auth.issuer", "required in production"));
    }
    if auth.audience.is_empty() {
        return Err(ConfigError::key("auth.audience", "required in production"));
    }
    if auth.leeway_seconds > MAX_PRODUCTION_LEEWAY_SECONDS {
        return Err(ConfigError::key(
            "auth.leeway_seconds",
            format!(
                "at most {MAX_PRODUCTION_LEEWAY_SECONDS} in production: every expired token is accepted for that long"
            ),
        ));
    }
    // A key set is held up to its TTL (the issuer's `max-age` between the minimum and the
    // maximum): a key the issuer withdraws verifies that long. Up to 30 days is allowed for
    // trials; production holds a set a day at most.
    for (key, ttl) in [
        ("auth.jwks.min_ttl_seconds", auth.jwks.min_ttl_seconds),
        (
            "auth.jwks.default_ttl_seconds",
            auth.jwks.default_ttl_seconds,
        ),
        ("auth.jwks.max_ttl_seconds", auth.jwks.max_ttl_seconds),
    ] {
        if ttl > MAX_PRODUCTION_TTL_SECONDS {
            return Err(ConfigError::key(
                key,
                format!(
                    "at most {MAX_PRODUCTION_TTL_SECONDS} in production: a key the issuer withdraws keeps verifying for as long as a key set is held"
                ),
            ));
        }
    }
    if !auth.jwks.background_refresh {
        return Err(ConfigError::key(
            "auth.jwks.background_refresh",
            "must be true in production: without it a fetched key set is never refreshed when \
             due, and a key the issuer withdraws keeps verifying until the set is past \
             auth.jwks.max_stale_seconds",
        ));
    }
    // Read as the key source reads them: a blank value (`TODO_API__AUTH__SECRET_FILE=`) is
    // unset, not a file named "" that cannot be read.
    let auth = &auth.set_sources();
    if auth.key_sources().is_empty() {
        return Err(ConfigError::key(
            "auth.jwks_url",
            "a key source is required in production (auth.jwks_url, auth.discovery_url, auth.public_key or auth.secret)",
        ));
    }
    for (key, url) in [
        ("auth.jwks_url", &auth.jwks_url),
        ("auth.discovery_url", &auth.discovery_url),
    ] {
        if let Some(url) = url {
            check_url_for_production(key, url)?;
        }
    }
    if let Some(pk) = &auth.public_key
        && pk.contains("://")
    {
        check_url_for_production("auth.public_key", pk)?;
    }
    if let Some(path) = &auth.secret_file {
        check_private_file("auth.secret_file", Path::new(path))?;
    }
    refuse_dev_key_sources(auth)
}

/// Refuses a static key source that is one of the dev-only fixtures (`auth.public_key` as a
/// file, `auth.secret`, `auth.secret_file`), whose private halves are committed: in production,
/// and on a `server.host` other machines can reach. Fetched key sets are judged as they load
/// (`auth.jwks.refuse_dev_keys`).
pub fn refuse_dev_key_sources(auth: &AuthSettings) -> Result<(), ConfigError> {
    let auth = &auth.set_sources();
    if let Some(pk) = &auth.public_key
        && !pk.contains("://")
    {
        check_not_dev_public_key("auth.public_key", Path::new(pk))?;
    }
    if let Some(secret) = &auth.secret {
        check_not_dev_secret("auth.secret", secret.expose_secret().as_bytes())?;
    }
    if let Some(path) = &auth.secret_file {
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::key(
                "auth.secret_file",
                format!("cannot read the file it names: {e}"),
            )
        })?;
        check_not_dev_secret("auth.secret_file", bytes.trim_ascii())?;
    }
    Ok(())
}

/// Refuses a secret or private key file that group or others may read (production): it must be
/// `chmod 600`. The message names the key, never the path: a secret pasted into a `*_file` key
/// by mistake would be printed.
pub fn check_private_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| ConfigError::key(key, format!("cannot read the file it names: {e}")))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(ConfigError::key(
                key,
                format!(
                    "the file it names is readable by group or others (mode {:o}); chmod 600 it",
                    mode & 0o777
                ),
            ));
        }
    }
    Ok(())
}

/// `https://`, or `http://` to a loopback host only.
pub fn check_url_for_production(key: &str, url: &str) -> Result<(), ConfigError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| ConfigError::key(key, format!("not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err(ConfigError::key(
            key,
            "must be https:// in production (http:// only to a loopback address)",
        )),
        other => Err(ConfigError::key(
            key,
            format!("unsupported scheme {other:?}"),
        )),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a PEM public key or certificate that is one of the fixtures keys, wherever it lives.
pub fn check_not_dev_public_key(key: &str, path: &Path) -> Result<(), ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::key(key, format!("cannot read {}: {e}", path.display())))?;
    if let Ok(k) = VerifyingKey::from_pem(&pem)
        && dev::is_dev_key(&k.thumbprint)
    {
        return Err(ConfigError::key(
            key,
            format!(
                "{} is a dev-only fixtures key (its private half is committed), refused in production and on a server.host beyond loopback",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses the fixtures HS256 secret.
pub fn check_not_dev_secret(key: &str, secret: &[u8]) -> Result<(), ConfigError> {
    if dev::is_dev_key(&crate::keys::secret_fingerprint(secret)) {
        return Err(ConfigError::key(
            key,
            "the dev-only fixtures secret is refused in production and on a server.host beyond loopback",
        ));
    }
    Ok(())
}

/// The loopback origins of the local stack (the three services and common dev front-end ports).
pub fn local_cors_origins() -> Vec<String> {
    let mut v = Vec::new();
    for port in [3000, 3001, 4000, 5173, 8080] {
        v.push(format!("http://127.0.0.1:{port}"));
        v.push(format!("http://localhost:{port}"));
    }
    v
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own error type
mod tests {
    use figment::Jail;

    use super::*;

    const INFO: ServiceInfo = ServiceInfo {
        name: "demo-api",
        env_prefix: "DEMO_API",
        default_port: 3999,
    };

    fn local_auth() -> serde_json::Value {
        serde_json::json!({
            "issuer": "http://127.0.0.1:4000",
            "audience": ["demo-api"],
            "jwks_url": "http://127.0.0.1:4000/.well-known/jwks.json",
        })
    }

    fn load_err(jail: &Jail) -> String {
        let _ = jail;
        Settings::load(&INFO, None, local_auth())
            .unwrap_err()
            .to_string()
    }

    fn fixture(name: &str) -> String {
        format!("{}/../fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn a_single_underscore_variable_is_refused_not_ignored() {
        Jail::expect_with(|jail| {
            // Kubernetes' service links for a Service named demo-api: not ours, accepted.
            jail.set_env("DEMO_API_PORT", "tcp://10.0.0.7:80");
            jail.set_env("DEMO_API_SERVICE_HOST", "10.0.0.7");
            Settings::load(&INFO, None, local_auth()).unwrap();
            jail.set_env("DEMO_API_ENVIRONMENT", "production");
            let e = load_err(jail);
            assert!(
                e.starts_with("config error: DEMO_API_ENVIRONMENT: not a setting"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        for bad in [
            "https://app.example.com/",
            "*",
            "app.example.com",
            "https://App.example.com",
            "https://app.example.com:443",
            "ftp://app.example.com",
            "https://app.example.com/path",
            "https://u:hunter2@app.example.com",
        ] {
            let e = CorsSettings {
                allowed_origins: vec![bad.into()],
            }
            .check()
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with("config error: cors.allowed_origins:"),
                "{bad}: {e}"
            );
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = CorsSettings {
            allowed_origins: vec!["https://app.example.com/".into()],
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("did you mean \"https://app.example.com\""),
            "{e}"
        );
        CorsSettings {
            allowed_origins: local_cors_origins()
                .into_iter()
                .chain(["https://app.example.com".into(), "http://[::1]:8080".into()])
                .collect(),
        }
        .check()
        .unwrap();
    }

    #[test]
    fn no_config_gives_the_local_defaults() {
        Jail::expect_with(|_| {
            let s = Settings::load(&INFO, None, local_auth()).unwrap();
            assert_eq!(s.environment, Environment::Local);
            assert_eq!(s.server.port, 3999);
            assert_eq!(s.server.host.to_string(), "127.0.0.1");
            assert_eq!(s.auth.issuer.as_deref(), Some("http://127.0.0.1:4000"));
            assert_eq!(s.auth.audience, vec!["demo-api"]);
            assert!(s.auth.enabled);
            assert_eq!(s.auth.leeway_seconds, 30);
            assert!(
                s.cors
                    .allowed_origins
                    .contains(&"http://127.0.0.1:3000".to_owned())
            );
            Ok(())
        });
    }

    #[test]
    fn file_then_environment_override_defaults() {
        Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file(
                "config/demo-api.toml",
                "[server]\nport = 1234\n[auth]\nleeway_seconds = 5\n",
            )?;
            jail.set_env("DEMO_API__AUTH__JWKS_URL", "http://127.0.0.1:9/jwks.json");
            jail.set_env("DEMO_API__AUTH__AUDIENCE", "a,b");
            let s = Settings::load(&INFO, None, local_auth()).unwrap();
            assert_eq!(s.server.port, 1234);
            assert_eq!(s.auth.leeway_seconds, 5);
            assert_eq!(
                s.auth.jwks_url.as_deref(),
                Some("http://127.0.0.1:9/jwks.json")
            );
            assert_eq!(s.auth.audience, vec!["a", "b"]);
            Ok(())
        });
    }

    #[test]
    fn explicit_config_path_must_exist() {
        Jail::expect_with(|_| {
            let e = Settings::load(&INFO, Some(Path::new("nope.toml")), local_auth()).unwrap_err();
            assert_eq!(
                e.to_string(),
                "config error: --config nope.toml: no such file"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key_on_one_line() {
        Jail::expect_with(|jail| {
            jail.set_env("DEMO_API__ENVIRONMENT", "staging");
            let e = load_err(jail);
            assert!(e.starts_with("config error: environment:"), "{e}");
            assert!(
                e.contains("local") && e.contains("production"),
                "lists accepted values: {e}"
            );
            assert!(!e.contains('\n'));
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("DEMO_API__AUTH__LEEWAY_SECONDS", "soon");
            assert!(load_err(jail).starts_with("config error: auth.leeway_seconds:"));
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("DEMO_API__AUTH__NO_SUCH_KEY", "1");
            let e = load_err(jail);
            assert!(e.contains("no_such_key"), "{e}");
            Ok(())
        });
    }

    /// A database wait longer than the request's timeout would have the client told "503, try
    /// again" while its write may still land: such settings are refused, naming the key.
    #[test]
    fn database_waits_fit_within_the_request_timeout() {
        let pg = "postgres://app@db/app";
        for (url, acquire, statement, request, refused) in [
            (None, "5", "30", "60", None),
            (
                None,
                "30",
                "30",
                "60",
                Some("database.acquire_timeout_seconds"),
            ),
            (None, "29", "300", "60", None),
            (Some(pg), "5", "30", "60", None),
            (
                Some(pg),
                "30",
                "30",
                "60",
                Some("database.statement_timeout_seconds"),
            ),
            (
                Some(pg),
                "5",
                "55",
                "60",
                Some("database.statement_timeout_seconds"),
            ),
            (Some(pg), "5", "0", "60", None),
            (
                Some(pg),
                "5",
                "30",
                "30",
                Some("database.statement_timeout_seconds"),
            ),
        ] {
            Jail::expect_with(|jail| {
                if let Some(url) = url {
                    jail.set_env("DEMO_API__DATABASE__URL", url);
                }
                jail.set_env("DEMO_API__DATABASE__ACQUIRE_TIMEOUT_SECONDS", acquire);
                jail.set_env("DEMO_API__DATABASE__STATEMENT_TIMEOUT_SECONDS", statement);
                jail.set_env("DEMO_API__SERVER__REQUEST_TIMEOUT_SECONDS", request);
                let loaded = Settings::load(&INFO, None, local_auth());
                let case = format!("{url:?} {acquire} {statement} {request}");
                match refused {
                    Some(key) => {
                        let e = loaded.unwrap_err().to_string();
                        assert!(
                            e.starts_with(&format!("config error: {key}: ")),
                            "{case}: {e}"
                        );
                        assert!(e.contains("server.request_timeout_seconds"), "{e}");
                    }
                    None => assert!(loaded.is_ok(), "{case}"),
                }
                Ok(())
            });
        }
    }

    /// A number out of its range is refused naming the key, not clamped or left to panic.
    #[test]
    fn server_and_database_numbers_are_bounded() {
        for (var, value, key) in [
            (
                "SERVER__HEADER_READ_TIMEOUT_SECONDS",
                "18446744073709551615",
                "server.header_read_timeout_seconds",
            ),
            ("SERVER__MAX_CONNECTIONS", "0", "server.max_connections"),
            (
                "SERVER__MAX_CONNECTIONS",
                "4611686018427387904",
                "server.max_connections",
            ),
            ("SERVER__MAX_HEADER_BYTES", "100", "server.max_header_bytes"),
            (
                "SERVER__REQUEST_TIMEOUT_SECONDS",
                "0",
                "server.request_timeout_seconds",
            ),
            (
                "SERVER__WRITE_TIMEOUT_SECONDS",
                "0",
                "server.write_timeout_seconds",
            ),
            (
                "SERVER__WRITE_TIMEOUT_SECONDS",
                "3601",
                "server.write_timeout_seconds",
            ),
            (
                "SERVER__SHUTDOWN_DELAY_SECONDS",
                "3601",
                "server.shutdown_delay_seconds",
            ),
            (
                "DATABASE__ACQUIRE_TIMEOUT_SECONDS",
                "18446744073709551615",
                "database.acquire_timeout_seconds",
            ),
            ("DATABASE__MAX_CONNECTIONS", "0", "database.max_connections"),
            (
                "DATABASE__STATEMENT_TIMEOUT_SECONDS",
                "86401",
                "database.statement_timeout_seconds",
            ),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env(format!("DEMO_API__{var}"), value);
                let e = load_err(jail);
                assert!(
                    e.starts_with(&format!("config error: {key}: must be ")),
                    "{var}={value}: {e}"
                );
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            jail.set_env("DEMO_API__DATABASE__STATEMENT_TIMEOUT_SECONDS", "0");
            jail.set_env("DEMO_API__SERVER__SHUTDOWN_TIMEOUT_SECONDS", "0");
            jail.set_env("DEMO_API__SERVER__SHUTDOWN_DELAY_SECONDS", "0");
            let s = Settings::load(&INFO, None, local_auth()).unwrap();
            assert_eq!(s.database.statement_timeout(), None);
            Ok(())
        });
    }

    /// A mistyped secret is not printed: figment quotes the value it found, and the TOML
    /// parser the source line of a syntax error.
    #[test]
    fn config_errors_never_print_the_value() {
        Jail::expect_with(|jail| {
            jail.create_dir("config")?;
            jail.create_file(
                "config/demo-api.toml",
                "[database]\nurl = postgres://app:hunter2@db/app\n",
            )?;
            let e = load_err(jail);
            assert!(!e.contains("hunter2"), "{e}");
            assert!(
                e.starts_with("config error: TOML parse error at line 2"),
                "{e}"
            );
            assert!(e.contains("demo-api.toml"), "names the file: {e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("DEMO_API__DATABASE", "postgres://app:hunter2@db/app");
            let e = load_err(jail);
            assert!(!e.contains("hunter2"), "{e}");
            assert!(
                e.starts_with("config error: database: invalid type: found a string"),
                "{e}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("DEMO_API__LOG__FORMAT", "hunter2");
            let e = load_err(jail);
            assert!(!e.contains("hunter2"), "{e}");
            assert!(
                e.starts_with("config error: log.format: unknown variant, expected one of"),
                "{e}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("DEMO_API__AUTH__LEEWAY_SECONDS", "hunter2");
            let e = load_err(jail);
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.starts_with("config error: auth.leeway_seconds:"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn production_with_nothing_else_names_the_first_missing_key() {
        Jail::expect_with(|jail| {
            jail.set_env("DEMO_API__ENVIRONMENT", "production");
            assert_eq!(
                load_err(jail),
                "config error: auth.issuer: required in production"
            );
            jail.set_env("DEMO_API__AUTH__ISSUER", "https://id.example.com");
            assert_eq!(
                load_err(jail),
                "config error: auth.audience: required in production"
            );
            jail.set_env("DEMO_API__AUTH__AUDIENCE", "demo-api");
            assert!(
                load_err(jail).starts_with("config error: auth.jwks_url: a key source is required")
            );
            jail.set_env(
                "DEMO_API__AUTH__JWKS_URL",
                "https://id.example.com/jwks.json",
            );
            let s = Settings::load(&INFO, None, local_auth()).unwrap();
            assert!(
                s.cors.allowed_origins.is_empty(),
                "no CORS origins by default in production"
            );
            Ok(())
        });
    }

    fn production(jail: &mut Jail) {
        jail.set_env("DEMO_API__ENVIRONMENT", "production");
        jail.set_env("DEMO_API__AUTH__ISSUER", "https://id.example.com");
        jail.set_env("DEMO_API__AUTH__AUDIENCE", "demo-api");
    }

    /// [`production`] with a key source that passes its checks.
    fn production_with_jwks(jail: &mut Jail) {
        production(jail);
        jail.set_env(
            "DEMO_API__AUTH__JWKS_URL",
            "https://id.example.com/jwks.json",
        );
    }

    /// Verification-off mode is local and loopback only: on `0.0.0.0` any machine could send
    /// it a token of its own making.
    #[test]
    fn verification_off_mode_listens_on_loopback_only() {
        for (host, refused) in [
            ("0.0.0.0", true),
            ("::", true),
            ("10.1.2.3", true),
            ("127.0.0.1", false),
            ("::1", false),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env("DEMO_API__AUTH__ENABLED", "false");
                jail.set_env("DEMO_API__SERVER__HOST", host);
                let loaded = Settings::load(&INFO, None, local_auth());
                if refused {
                    let e = loaded.unwrap_err().to_string();
                    assert!(
                        e.starts_with("config error: auth.enabled: verification-off mode listens on a loopback"),
                        "{host}: {e}"
                    );
                } else {
                    assert!(!loaded.unwrap().auth.enabled, "{host}");
                }
                Ok(())
            });
        }
    }

    /// Locally, a key source the engineer sets replaces the default JWKS URL instead of
    /// clashing with it; a JWKS URL they set themselves still clashes.
    #[test]
    fn a_local_key_source_replaces_the_default_jwks_url() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "DEMO_API__AUTH__SECRET_FILE",
                "fixtures/keys/hs256-secret.txt",
            );
            let loaded = Settings::load(&INFO, None, local_auth()).unwrap();
            assert_eq!(loaded.auth.jwks_url, None);
            assert!(loaded.auth.secret_file.is_some());
            jail.set_env(
                "DEMO_API__AUTH__JWKS_URL",
                "http://127.0.0.1:4100/jwks.json",
            );
            let loaded = Settings::load(&INFO, None, local_auth()).unwrap();
            assert_eq!(
                loaded.auth.jwks_url.as_deref(),
                Some("http://127.0.0.1:4100/jwks.json")
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            let loaded = Settings::load(&INFO, None, local_auth()).unwrap();
            assert!(loaded.auth.jwks_url.is_some(), "the default stays alone");
            // A blank value is unset, as the key source reads it: the default stays.
            jail.set_env("DEMO_API__AUTH__PUBLIC_KEY", "");
            let loaded = Settings::load(&INFO, None, local_auth()).unwrap();
            assert!(loaded.auth.jwks_url.is_some(), "a blank key source is none");
            Ok(())
        });
    }

    /// A service other machines can reach refuses the dev-only fixtures keys in the local
    /// environment too: anyone holding the repository could sign its tokens.
    #[test]
    fn the_fixtures_keys_are_refused_beyond_loopback() {
        let ec = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/keys/ec-public.pem"
        );
        for (host, refused) in [("0.0.0.0", true), ("10.1.2.3", true), ("127.0.0.1", false)] {
            Jail::expect_with(|jail| {
                jail.set_env("DEMO_API__SERVER__HOST", host);
                let loaded = Settings::load(&INFO, None, local_auth()).unwrap();
                assert_eq!(loaded.auth.jwks.refuse_dev_keys, refused, "{host}");
                jail.set_env("DEMO_API__AUTH__PUBLIC_KEY", ec);
                let loaded = Settings::load(&INFO, None, local_auth());
                if refused {
                    let e = loaded.unwrap_err().to_string();
                    assert!(
                        e.starts_with("config error: auth.public_key:") && e.contains("dev-only"),
                        "{host}: {e}"
                    );
                } else {
                    assert!(loaded.is_ok(), "{host}");
                }
                Ok(())
            });
        }
    }

    #[test]
    fn production_refuses_unsafe_settings() {
        // A secret pasted into the file key is not printed back.
        Jail::expect_with(|jail| {
            production(jail);
            jail.set_env(
                "DEMO_API__AUTH__SECRET_FILE",
                "Leak-Me-0123456789abcdef0123456789",
            );
            let e = load_err(jail);
            assert!(
                e.starts_with("config error: auth.secret_file: cannot read the file it names"),
                "{e}"
            );
            assert!(!e.contains("Leak-Me"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            production_with_jwks(jail);
            jail.set_env("DEMO_API__AUTH__ENABLED", "false");
            assert!(
                load_err(jail).starts_with("config error: auth.enabled: verification-off mode")
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            production_with_jwks(jail);
            jail.set_env("DEMO_API__AUTH__LEEWAY_SECONDS", "301");
            assert!(
                load_err(jail).starts_with("config error: auth.leeway_seconds: at most 300"),
                "{}",
                load_err(jail)
            );
            jail.set_env("DEMO_API__AUTH__LEEWAY_SECONDS", "300");
            assert!(Settings::load(&INFO, None, local_auth()).is_ok());
            Ok(())
        });
        // Wired into production's checks (the query's sslmode wins over any PGSSLMODE).
        Jail::expect_with(|jail| {
            production_with_jwks(jail);
            jail.set_env(
                "DEMO_API__DATABASE__URL",
                "postgres://app:Leak-Me@db.internal/app?sslmode=require",
            );
            let e = load_err(jail);
            assert!(
                e.starts_with("config error: database.url: a PostgreSQL server beyond loopback needs sslmode=verify-full"),
                "{e}"
            );
            assert!(!e.contains("Leak-Me") && !e.contains("db.internal"), "{e}");
            Ok(())
        });
    }

    /// Production's PostgreSQL rule, judged as sqlx reads the URL and, for what it leaves out,
    /// libpq's variables (given here, never set in the process: the PostgreSQL tests beside
    /// this one would read them).
    #[test]
    fn production_postgres_needs_verify_full_beyond_loopback() {
        let check = |url: &str, pghost: Option<&str>, pgsslmode: Option<&str>| {
            let settings = DatabaseSettings {
                url: Some(url.to_owned().into()),
                ..DatabaseSettings::default()
            };
            let env = |name: &str| match name {
                "PGHOST" => pghost.map(str::to_owned),
                "PGSSLMODE" => pgsslmode.map(str::to_owned),
                _ => None,
            };
            settings.check_for_production_with(&env)
        };
        for (url, refused) in [
            ("postgres://app:Leak-Me@db.internal/app", true),
            (
                "postgres://app:Leak-Me@db.internal/app?sslmode=require",
                true,
            ),
            (
                "postgresql://app:Leak-Me@10.0.0.5:5432/app?sslmode=prefer",
                true,
            ),
            ("postgres://app@127.0.0.1/app?host=db.internal", true),
            (
                "postgres://app:Leak-Me@db.internal/app?sslmode=verify-full",
                false,
            ),
            (
                "postgres://app@db.internal/app?sslmode=verify-ca&sslrootcert=/ca.pem",
                true,
            ),
            (
                "postgres://app@db.internal/app?sslmode=verify-full&sslrootcert=/ca.pem",
                false,
            ),
            ("postgres://app:Leak-Me@127.0.0.1:5432/app", false),
            ("postgres://app@[::1]/app", false),
            ("postgres://app@localhost/app", false),
            ("postgres://%2Fvar%2Frun%2Fpostgresql/app", false),
            ("postgres:///app?host=/run/postgresql", false),
            ("sqlite:///tmp/a.db", false),
        ] {
            match check(url, None, None) {
                Err(e) if refused => {
                    let e = e.to_string();
                    assert!(
                        e.starts_with("config error: database.url: a PostgreSQL server beyond loopback needs sslmode=verify-full"),
                        "{url}: {e}"
                    );
                    assert!(!e.contains("Leak-Me") && !e.contains("db.internal"), "{e}");
                }
                Ok(()) if !refused => {}
                other => panic!("{url}: {other:?}"),
            }
        }
        // What the URL leaves out, sqlx reads from libpq's variables.
        for (url, pghost, pgsslmode, refused) in [
            ("postgres:///app", Some("db.internal"), None, true),
            (
                "postgres:///app",
                Some("db.internal"),
                Some("verify-full"),
                false,
            ),
            ("postgres:///app", Some("/run/postgresql"), None, false),
            (
                "postgres://db.internal/app",
                None,
                Some("verify-full"),
                false,
            ),
            ("postgres://db.internal/app", None, Some("require"), true),
            (
                "postgres://db.internal/app?sslmode=prefer",
                None,
                Some("verify-full"),
                true,
            ),
            ("postgres://127.0.0.1/app", Some("db.internal"), None, false),
        ] {
            let case = format!("{url} PGHOST={pghost:?} PGSSLMODE={pgsslmode:?}");
            assert_eq!(check(url, pghost, pgsslmode).is_err(), refused, "{case}");
        }
    }

    /// A blank key source (an env var set empty) is unset in production and beyond loopback
    /// too, as the key source reads it: not a file named "" that cannot be read, nor a URL
    /// that does not parse.
    #[test]
    fn a_blank_key_source_is_unset_wherever_sources_are_checked() {
        for key in ["PUBLIC_KEY", "SECRET", "SECRET_FILE", "DISCOVERY_URL"] {
            Jail::expect_with(|jail| {
                production_with_jwks(jail);
                jail.set_env(format!("DEMO_API__AUTH__{key}"), "");
                assert!(
                    Settings::load(&INFO, None, local_auth()).is_ok(),
                    "production, {key}"
                );
                Ok(())
            });
            Jail::expect_with(|jail| {
                jail.set_env("DEMO_API__SERVER__HOST", "0.0.0.0");
                jail.set_env(format!("DEMO_API__AUTH__{key}"), "");
                assert!(
                    Settings::load(&INFO, None, local_auth()).is_ok(),
                    "0.0.0.0, {key}"
                );
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            production_with_jwks(jail);
            jail.set_env("DEMO_API__AUTH__JWKS_URL", "");
            let e = load_err(jail);
            assert!(
                e.starts_with("config error: auth.jwks_url: a key source is required"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn production_refuses_unsafe_key_settings() {
        for key in ["MIN_TTL_SECONDS", "DEFAULT_TTL_SECONDS", "MAX_TTL_SECONDS"] {
            Jail::expect_with(|jail| {
                production_with_jwks(jail);
                // Both ends moved together, so only the production rule refuses.
                jail.set_env("DEMO_API__AUTH__JWKS__MAX_TTL_SECONDS", "172800");
                jail.set_env(format!("DEMO_API__AUTH__JWKS__{key}"), "172800");
                let e = load_err(jail);
                let name = format!("auth.jwks.{}", key.to_lowercase());
                let expected = format!("config error: {name}: at most 86400 in production");
                assert!(e.starts_with(&expected), "{e}");
                jail.set_env("DEMO_API__AUTH__JWKS__MAX_TTL_SECONDS", "86400");
                jail.set_env(format!("DEMO_API__AUTH__JWKS__{key}"), "86400");
                assert!(Settings::load(&INFO, None, local_auth()).is_ok());
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            production_with_jwks(jail);
            jail.set_env("DEMO_API__AUTH__JWKS__BACKGROUND_REFRESH", "false");
            assert!(
                load_err(jail)
                    .starts_with("config error: auth.jwks.background_refresh: must be true"),
                "{}",
                load_err(jail)
            );
            jail.set_env("DEMO_API__AUTH__JWKS__BACKGROUND_REFRESH", "true");
            assert!(Settings::load(&INFO, None, local_auth()).is_ok());
            Ok(())
        });
        Jail::expect_with(|jail| {
            production(jail);
            jail.set_env(
                "DEMO_API__AUTH__JWKS_URL",
                "http://id.example.com/jwks.json",
            );
            assert!(load_err(jail).starts_with("config error: auth.jwks_url: must be https://"));
            jail.set_env(
                "DEMO_API__AUTH__JWKS_URL",
                "http://127.0.0.1:4000/jwks.json",
            );
            assert!(
                Settings::load(&INFO, None, local_auth()).is_ok(),
                "loopback http is allowed"
            );
            Ok(())
        });
        for file in [
            "rsa-cert.pem",
            "rsa-public.pem",
            "ec-public.pem",
            "ed25519-public.pem",
        ] {
            Jail::expect_with(|jail| {
                production(jail);
                // A copy elsewhere is recognised by its thumbprint, not its path.
                let copy = jail.directory().join("innocent.pem");
                std::fs::copy(fixture(file), &copy).unwrap();
                jail.set_env("DEMO_API__AUTH__PUBLIC_KEY", copy.display());
                let e = load_err(jail);
                assert!(
                    e.starts_with("config error: auth.public_key:") && e.contains("dev-only"),
                    "{file}: {e}"
                );
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            production(jail);
            let secret = std::fs::read_to_string(fixture("hs256-secret.txt")).unwrap();
            jail.set_env("DEMO_API__AUTH__SECRET", secret.trim());
            assert!(
                load_err(jail)
                    .starts_with("config error: auth.secret: the dev-only fixtures secret")
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            production(jail);
            let copy = jail.directory().join("s.txt");
            std::fs::copy(fixture("hs256-secret.txt"), &copy).unwrap();
            jail.set_env("DEMO_API__AUTH__SECRET_FILE", copy.display());
            // Readable by others: refused for that first.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = load_err(jail);
            assert!(
                e.starts_with("config error: auth.secret_file:") && e.contains("chmod 600"),
                "{e}"
            );
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(
                load_err(jail)
                    .starts_with("config error: auth.secret_file: the dev-only fixtures secret")
            );
            Ok(())
        });
    }
}
