//! Where verification keys come from: exactly one configured source per verifier.
//!
//! | setting | source | when read |
//! |---|---|---|
//! | `auth.jwks_url` | a JWKS document | fetched in the background / on first use, refreshed |
//! | `auth.discovery_url` | `<issuer>/.well-known/openid-configuration` → `jwks_uri` | same |
//! | `auth.public_key` (`https://…`) | a PEM public key or X.509 certificate | same |
//! | `auth.public_key` (a path) | a PEM public key or X.509 certificate | at startup |
//! | `auth.secret`, `auth.secret_file` | an HS256 secret (≥ 32 bytes) | at startup |
//!
//! Remote sources live in a [`KeyStore`] (caching, refresh, backoff,
//! stale-if-error, unknown-`kid` cooldown), fetched with one reused client: no redirects, no
//! proxy, a timeout (`auth.jwks.timeout_seconds`) and a body cap (`auth.jwks.max_body_bytes`).
//! URLs must be `https://`; plain `http://` is accepted only for a loopback host (`localhost`,
//! `127.0.0.0/8`, `::1`), which the local environment and the mock servers of the tests use.
//! No URL is ever taken from a token.

use std::net::IpAddr;
use std::sync::Arc;

use reqwest::Url;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::clock::Clock;
use crate::keys::{Alg, KeyError, KeyFamily, VerifyingKey};
use crate::settings::AuthSettings;
use crate::store::{KeyStore, Target};
use crate::verify::{AuthErrorKind, SetupError};

/// A set of verification keys, each parsed once.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
}

impl KeySet {
    /// A set of these keys.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Self {
            keys: keys.into_iter().map(Arc::new).collect(),
        }
    }

    /// Parses a JWKS document (RFC 7517 §5). Keys auth-core cannot use (symmetric, other
    /// curves, unsupported `alg`, `use` other than `sig`, malformed) are skipped and logged; a
    /// set without any usable key is an error.
    pub fn from_jwks(json: &[u8]) -> Result<Self, FetchError> {
        let (set, skipped) = Self::parse_jwks(json)?;
        log_skipped(None, &skipped);
        Ok(set)
    }

    /// Like [`KeySet::from_jwks`], returning the skipped keys instead of logging them.
    pub(crate) fn parse_jwks(json: &[u8]) -> Result<(Self, Vec<SkippedKey>), FetchError> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(json).map_err(FetchError::Json)?;
        let mut keys = Vec::with_capacity(doc.keys.len());
        let mut skipped = Vec::new();
        for value in doc.keys {
            let kid = value
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .map(|k| k.chars().take(80).collect::<String>());
            if let Some((reason, detail)) = unsupported(&value) {
                skipped.push(SkippedKey::new(kid, reason, detail));
                continue;
            }
            match serde_json::from_value(value)
                .map_err(|e| KeyError::Jwk(e.to_string()))
                .and_then(|jwk| VerifyingKey::from_jwk(&jwk))
            {
                Ok(key) => keys.push(key),
                Err(e) => skipped.push(SkippedKey::new(
                    kid,
                    match e {
                        KeyError::KeySize(_) => "key_size",
                        _ => "malformed",
                    },
                    e.to_string(),
                )),
            }
        }
        if keys.is_empty() {
            return Err(FetchError::NoKeys);
        }
        Ok((Self::new(keys), skipped))
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys.
    pub fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter().map(|k| &**k)
    }

    /// The key for a token's `kid` and `alg`.
    ///
    /// The `kid` is compared as an opaque string with each key's `kid` (or, for a key without
    /// one, its RFC 7638 thumbprint). A token without `kid` is accepted only when exactly one
    /// key fits its `alg`. A static key (`ignore_kid`) is used whatever the token's `kid`.
    ///
    /// A JWKS may publish several keys under one `kid`: this is the first of them that fits;
    /// [`KeySet::fitting`] gives them all, for a signature the first one refused.
    pub fn find(
        &self,
        kid: Option<&str>,
        alg: Alg,
        ignore_kid: bool,
    ) -> Result<Arc<VerifyingKey>, AuthErrorKind> {
        // Searched without collecting: this runs on every request.
        let mut fitting = self.fitting(kid, alg, ignore_kid);
        match (fitting.next(), fitting.next()) {
            (Some(key), None) => Ok(Arc::clone(key)),
            (Some(key), Some(_)) if kid.is_some() && !ignore_kid => Ok(Arc::clone(key)),
            (Some(_), Some(_)) => Err(AuthErrorKind::UnknownKid),
            (None, _) if self.keys.iter().any(|k| names(k, kid, ignore_kid)) => {
                Err(AuthErrorKind::Algorithm)
            }
            (None, _) => Err(AuthErrorKind::UnknownKid),
        }
    }

    /// The keys `kid` names that fit `alg`, in the set's order (every key when `kid` is `None`
    /// or ignored).
    pub fn fitting<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Alg,
        ignore_kid: bool,
    ) -> impl Iterator<Item = &'a Arc<VerifyingKey>> {
        self.keys
            .iter()
            .filter(move |k| names(k, kid, ignore_kid) && k.fits(alg))
    }
}

/// Whether a token's `kid` names `key`: compared as an opaque string with the key's `kid`, or
/// its RFC 7638 thumbprint when it has none. Any key, without a `kid` or when it is ignored.
fn names(key: &VerifyingKey, kid: Option<&str>, ignore_kid: bool) -> bool {
    match kid {
        Some(kid) if !ignore_kid => match &key.kid {
            Some(own) => own == kid,
            None => key.thumbprint == kid,
        },
        _ => true,
    }
}

/// Keys held in memory by their owner and free to change at any time: token-service verifies
/// the tokens it issues with its own current public keys, which rotate, without any HTTP.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// The keys as of now. A token's `kid` is matched against them as in a JWKS.
    fn key_set(&self) -> Arc<KeySet>;
}

/// A key of a JWKS document that was skipped, and why.
#[derive(Debug, Clone)]
pub(crate) struct SkippedKey {
    /// The key's `kid`, if any (shortened).
    pub kid: Option<String>,
    /// The metric label: `kty`, `curve`, `alg`, `use` or `malformed`.
    pub reason: &'static str,
    /// What is wrong, for the log line (shortened: it may quote the document).
    pub detail: String,
}

impl SkippedKey {
    fn new(kid: Option<String>, reason: &'static str, detail: String) -> Self {
        const MAX_DETAIL: usize = 200;
        let detail = match detail.char_indices().nth(MAX_DETAIL) {
            Some((end, _)) => format!("{}…", &detail[..end]),
            None => detail,
        };
        Self {
            kid,
            reason,
            detail,
        }
    }
}

/// The skipped keys logged one line each: this many at most per document (whoever serves it
/// decides how many there are); the rest are counted in one more line.
const MAX_SKIP_LINES: usize = 10;

/// Logs the keys a key set document skipped (see [`MAX_SKIP_LINES`]) and counts each one in
/// `auth_jwks_keys_skipped_total{reason}`. `source` is the shown URL of a remote source.
pub(crate) fn log_skipped(source: Option<&str>, skipped: &[SkippedKey]) {
    for (i, skip) in skipped.iter().enumerate() {
        metrics::counter!(crate::store::metric::KEYS_SKIPPED, "reason" => skip.reason).increment(1);
        if i < MAX_SKIP_LINES {
            tracing::warn!(
                source,
                kid = skip.kid.as_deref(),
                reason = skip.reason,
                detail = %skip.detail,
                "skipping unusable key of the key set"
            );
        }
    }
    if let Some(not_listed) = skipped.len().checked_sub(MAX_SKIP_LINES).filter(|&n| n > 0) {
        tracing::warn!(
            source,
            not_listed,
            "skipping {not_listed} more unusable keys of the key set"
        );
    }
}

/// Why a JWK cannot be used, judged on its JSON before any parsing: an unsupported `kty`,
/// curve or `alg`, or a `use` other than `sig`.
fn unsupported(jwk: &serde_json::Value) -> Option<(&'static str, String)> {
    let member = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
    let family = match (member("kty"), member("crv")) {
        (Some("RSA"), _) => KeyFamily::Rsa,
        (Some("EC"), Some("P-256")) => KeyFamily::EcP256,
        (Some("OKP"), Some("Ed25519")) => KeyFamily::Ed25519,
        (Some("EC" | "OKP"), crv) => return Some(("curve", format!("unsupported curve {crv:?}"))),
        (kty, _) => return Some(("kty", format!("unsupported kty {kty:?}"))),
    };
    if let Some(u) = jwk.get("use")
        && u.as_str() != Some("sig")
    {
        return Some(("use", format!("use {u} is not sig")));
    }
    // RFC 7517 §4.3: a key whose `key_ops` are given is only for those operations.
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verify {
            return Some(("key_ops", format!("key_ops {ops} do not include verify")));
        }
    }
    if let Some(alg) = jwk.get("alg") {
        match alg.as_str().and_then(|a| a.parse::<Alg>().ok()) {
            Some(a) if a.family() == family => {}
            _ => return Some(("alg", format!("unsupported alg {alg} for this key"))),
        }
    }
    None
}

/// Why a remote key source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting, sending or reading failed (including the timeout).
    #[error("request failed: {0}")]
    Http(#[source] reqwest::Error),
    /// A status other than 2xx (redirects are not followed).
    #[error("unexpected status {0}")]
    Status(u16),
    /// The body exceeds `auth.jwks.max_body_bytes`.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The document is not the expected JSON.
    #[error("invalid document: {0}")]
    Json(serde_json::Error),
    /// The discovery document names another issuer.
    #[error("discovery document issuer {found:?} is not the configured issuer {expected:?}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The document's issuer.
        found: String,
    },
    /// A URL the discovery document names is not acceptable.
    #[error("jwks_uri: {0}")]
    Url(String),
    /// The key set holds no usable key.
    #[error("no usable key in the key set")]
    NoKeys,
    /// The PEM document is not a usable key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The fetch did not complete (no runtime to run it on, or the runtime is shutting down).
    #[error("the fetch was interrupted")]
    Interrupted,
}

/// The configured source of a verifier's keys.
#[derive(Debug)]
pub(crate) enum KeySource {
    /// Verification-off mode: no keys.
    Off,
    /// A PEM file or a shared secret, read at startup.
    Static(KeySet),
    /// A JWKS, discovery or PEM URL, behind the key store.
    Remote(Arc<KeyStore>),
    /// Keys the embedding service supplies (see [`KeyProvider`]).
    Provided(Arc<dyn KeyProvider>),
}

impl KeySource {
    /// Exactly one source of `settings`, or the [`SetupError`] naming the key to fix.
    pub(crate) fn from_settings(
        settings: &AuthSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SetupError> {
        let configured = settings.key_sources();
        let source = match configured.as_slice() {
            [] => {
                return Err(SetupError::new(
                    "auth.jwks_url",
                    "no key source configured: set one of auth.jwks_url, auth.discovery_url, \
                     auth.public_key, auth.secret, auth.secret_file",
                ));
            }
            [one] => *one,
            [first, rest @ ..] => {
                return Err(SetupError::new(
                    rest[0],
                    format!("only one key source may be set, and {first} is set too"),
                ));
            }
        };
        let hs256 = settings.algorithms.contains(&Alg::HS256);
        let asymmetric = settings
            .algorithms
            .iter()
            .any(|a| a.family() != KeyFamily::Hmac);
        let remote = |target| -> Result<Self, SetupError> {
            Ok(Self::Remote(KeyStore::new(
                target,
                &settings.jwks,
                clock.clone(),
            )?))
        };
        let this = match source {
            "auth.secret" | "auth.secret_file" => {
                if !hs256 {
                    return Err(SetupError::new(
                        "auth.algorithms",
                        format!("must list HS256 when {source} is set"),
                    ));
                }
                let key = if source == "auth.secret" {
                    let secret = settings
                        .secret
                        .as_ref()
                        .map(|s| s.expose_secret().as_bytes().to_vec());
                    VerifyingKey::from_secret(&secret.unwrap_or_default())
                } else {
                    let path = settings.secret_file.as_deref().unwrap_or_default();
                    // The path is not repeated: a secret pasted into this key by mistake
                    // would be printed.
                    let bytes = std::fs::read(path).map_err(|e| {
                        SetupError::new(source, format!("cannot read the file it names: {e}"))
                    })?;
                    VerifyingKey::from_secret(bytes.trim_ascii())
                };
                Self::Static(KeySet::new([
                    key.map_err(|e| SetupError::new(source, e.to_string()))?
                ]))
            }
            _ if !asymmetric => {
                return Err(SetupError::new(
                    "auth.algorithms",
                    format!("list RS256, ES256 or EdDSA to verify with {source}"),
                ));
            }
            "auth.jwks_url" => {
                let url = check_url(settings.jwks_url.as_deref().unwrap_or_default())
                    .map_err(|m| SetupError::new(source, m))?;
                remote(Target::Jwks(url))?
            }
            "auth.discovery_url" => {
                let raw = settings.discovery_url.as_deref().unwrap_or_default().trim();
                let base = raw.strip_suffix(WELL_KNOWN).unwrap_or(raw);
                let url = check_url(&format!("{}{WELL_KNOWN}", base.trim_end_matches('/')))
                    .map_err(|m| SetupError::new(source, m))?;
                let issuer = settings
                    .issuer
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| without_userinfo(base));
                remote(Target::Discovery { url, issuer })?
            }
            _ => {
                let value = settings.public_key.as_deref().unwrap_or_default().trim();
                // Schemes are case-insensitive (RFC 3986 §3.1): `HTTPS://` is a URL too, not
                // a file name to be read and printed in the error.
                let scheme = |s: &str| {
                    value
                        .get(..s.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(s))
                };
                if scheme("https://") || scheme("http://") {
                    let url = check_url(value).map_err(|m| SetupError::new(source, m))?;
                    remote(Target::Pem(url))?
                } else {
                    let pem = std::fs::read(value).map_err(|e| {
                        SetupError::new(source, format!("cannot read {value}: {e}"))
                    })?;
                    let key = VerifyingKey::from_pem(&pem)
                        .map_err(|e| SetupError::new(source, e.to_string()))?;
                    Self::Static(KeySet::new([key]))
                }
            }
        };
        Ok(this)
    }

    pub(crate) fn is_ready(&self) -> bool {
        match self {
            Self::Off | Self::Static(_) => true,
            Self::Remote(store) => store.is_ready(),
            Self::Provided(p) => p.key_set().keys().next().is_some(),
        }
    }

    /// The key store of a remote source.
    pub(crate) fn store(&self) -> Option<&KeyStore> {
        match self {
            Self::Remote(store) => Some(store),
            _ => None,
        }
    }

    /// Starts the store's background loading and refresh (when a Tokio runtime is running).
    pub(crate) fn prefetch_in_background(&self) {
        if let Self::Remote(store) = self {
            store.ensure_background();
        }
    }

    pub(crate) async fn load(&self) {
        if let Self::Remote(store) = self {
            store.load().await;
        }
    }

    /// The key that verifies a token with this `kid` and `alg`.
    pub(crate) async fn key(
        &self,
        kid: Option<&str>,
        alg: Alg,
    ) -> Result<Arc<VerifyingKey>, AuthErrorKind> {
        match self {
            Self::Off => Err(AuthErrorKind::Unavailable),
            Self::Static(set) => set.find(kid, alg, true),
            Self::Remote(remote) => remote.key(kid, alg).await,
            Self::Provided(p) => p.key_set().find(kid, alg, false),
        }
    }

    /// Every key named `kid` that fits `alg`, for a token whose signature the first of them
    /// ([`KeySource::key`]) refused: a JWKS may publish several keys under one `kid`, and each is
    /// tried, as jose and Envoy do. Never fetches; none for a source that ignores the `kid` (a
    /// static key, a PEM URL).
    pub(crate) fn same_kid(&self, kid: &str, alg: Alg) -> Vec<Arc<VerifyingKey>> {
        match self {
            Self::Off | Self::Static(_) => Vec::new(),
            Self::Remote(store) => store.same_kid(kid, alg),
            Self::Provided(p) => p
                .key_set()
                .fitting(Some(kid), alg, false)
                .cloned()
                .collect(),
        }
    }
}

const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// The `jwks_uri` of the OIDC discovery document fetched from `discovery`, whose `issuer` must
/// equal `issuer` exactly. The URL must be `https://` (OIDC Discovery §3, RFC 8414 §2); a
/// loopback `http://` one only when `discovery` itself is one (a local issuer). A remote
/// document never sends the service to a plain-HTTP port on its own host.
pub fn jwks_uri_from_discovery(
    doc: &[u8],
    issuer: &str,
    discovery: &Url,
) -> Result<Url, FetchError> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let doc: Discovery = serde_json::from_slice(doc).map_err(FetchError::Json)?;
    if doc.issuer != issuer {
        return Err(FetchError::IssuerMismatch {
            expected: issuer.to_owned(),
            // From the document: shortened, it goes into a log line.
            found: doc.issuer.chars().take(200).collect(),
        });
    }
    let url = check_url(&doc.jwks_uri).map_err(FetchError::Url)?;
    if url.scheme() != "https" && discovery.scheme() == "https" {
        return Err(FetchError::Url(
            "the discovery document's jwks_uri must be an https:// URL".to_owned(),
        ));
    }
    Ok(url)
}

/// reqwest's errors name the URL, userinfo and query included: the log names the source once,
/// as [`shown_url`] shows it.
impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e.without_url())
    }
}

/// A key source's URL as logs and `Debug` show it: without userinfo, query or fragment. A
/// JWKS URL may carry a password (reqwest sends it as Basic credentials) or an API key.
pub(crate) fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.into()
}

/// A configured key location as it may be printed: a URL without userinfo, query and fragment
/// ([`shown_url`]); text that looks like a URL but does not parse as one (a bad port, a space,
/// `https:user:pw@host`: a scheme before any `/`), which may still hold credentials, as a
/// placeholder; anything else (a file path) as it is.
pub(crate) fn shown_location(location: &str) -> String {
    let scheme_like = location
        .trim()
        .split('/')
        .next()
        .is_some_and(|first| first.contains(':'));
    match Url::parse(location.trim()) {
        Ok(url) if url.has_host() => shown_url(&url),
        _ if scheme_like || location.contains('@') => "[a URL that does not parse]".to_owned(),
        _ => location.to_owned(),
    }
}

/// The issuer a discovery URL implies: the URL as given, less any userinfo (which no issuer
/// carries, and which would otherwise be printed in every issuer-mismatch error).
/// Cut from the text as written, so the issuer keeps its form (a trailing `/` or none).
fn without_userinfo(base: &str) -> String {
    let Some(start) = base.find("://").map(|i| i + 3) else {
        return base.to_owned();
    };
    let authority_end = base[start..]
        .find(['/', '?', '#'])
        .map_or(base.len(), |i| start + i);
    match base[start..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &base[..start], &base[start + at + 1..]),
        None => base.to_owned(),
    }
}

/// `https://`, or `http://` to a loopback host.
pub(crate) fn check_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err("must be an https:// URL (http:// only for a loopback host)".to_owned()),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document's issuer goes into a logged error: a long one is shortened there.
    #[test]
    fn a_mismatched_discovery_issuer_is_shortened_in_the_error() {
        let long = format!("https://{}.example.com", "x".repeat(5_000));
        let doc = serde_json::json!({"issuer": long, "jwks_uri": "https://idp.example.com/jwks"});
        let discovery =
            Url::parse("https://idp.example.com/.well-known/openid-configuration").unwrap();
        let error = jwks_uri_from_discovery(
            doc.to_string().as_bytes(),
            "https://idp.example.com",
            &discovery,
        )
        .unwrap_err();
        let FetchError::IssuerMismatch { found, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(found.chars().count(), 200);
        assert!(long.starts_with(found.as_str()));
        assert!(error.to_string().len() < 400, "{error}");
    }

    #[test]
    fn the_issuer_a_discovery_url_implies_has_no_userinfo() {
        for (base, issuer) in [
            ("https://u:p@idp.example.com", "https://idp.example.com"),
            (
                "https://u@idp.example.com/realms/a/",
                "https://idp.example.com/realms/a/",
            ),
            ("https://idp.example.com/a@b", "https://idp.example.com/a@b"),
            ("https://idp.example.com", "https://idp.example.com"),
        ] {
            assert_eq!(without_userinfo(base), issuer);
        }
    }

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        assert!(check_url("https://issuer.example/jwks.json").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks.json").is_ok());
        assert!(check_url("http://localhost/jwks.json").is_ok());
        assert!(check_url("http://[::1]:9/jwks.json").is_ok());
        assert!(check_url("http://issuer.example/jwks.json").is_err());
        assert!(check_url("http://127.0.0.1.nip.io/jwks.json").is_err());
        assert!(check_url("file:///etc/passwd").is_err());
        assert!(check_url("jwks.json").is_err());
    }

    #[test]
    fn a_remote_discovery_document_cannot_name_a_loopback_http_jwks_uri() {
        let doc = |jwks_uri: &str| {
            format!(r#"{{"issuer":"https://id.example","jwks_uri":"{jwks_uri}"}}"#)
        };
        let remote = Url::parse("https://id.example/.well-known/openid-configuration").unwrap();
        let local = Url::parse("http://127.0.0.1:4000/.well-known/openid-configuration").unwrap();
        let from = |doc: &str, discovery: &Url| {
            jwks_uri_from_discovery(doc.as_bytes(), "https://id.example", discovery)
        };
        for loopback in [
            "http://127.0.0.1:6379/x",
            "http://localhost/jwks",
            "http://[::1]:9/",
        ] {
            assert!(
                matches!(from(&doc(loopback), &remote), Err(FetchError::Url(_))),
                "{loopback}"
            );
            assert!(from(&doc(loopback), &local).is_ok(), "{loopback}");
        }
        assert!(from(&doc("https://keys.example/jwks"), &remote).is_ok());
        assert!(from(&doc("http://keys.example/jwks"), &local).is_err());
    }

    /// The fixtures' Ed25519 key as a JWK, with extra members.
    fn ed_jwk(extra: &str) -> String {
        format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"reS_83W_4y14lXJiLutaNZQbZugaPSspGfgfb5AjGGs"{extra}}}"#
        )
    }

    #[test]
    fn a_key_whose_key_ops_exclude_verify_is_skipped() {
        let doc = format!(
            r#"{{"keys":[{},{}]}}"#,
            ed_jwk(r#","kid":"wraps","key_ops":["wrapKey","encrypt"]"#),
            ed_jwk(r#","kid":"verifies","key_ops":["verify"]"#)
        );
        let (set, skipped) = KeySet::parse_jwks(doc.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.keys().next().unwrap().kid.as_deref(), Some("verifies"));
        assert_eq!(skipped.len(), 1);
        assert_eq!(
            (skipped[0].kid.as_deref(), skipped[0].reason),
            (Some("wraps"), "key_ops")
        );
        let not_a_list = format!(r#"{{"keys":[{}]}}"#, ed_jwk(r#","key_ops":"verify""#));
        assert!(matches!(
            KeySet::parse_jwks(not_a_list.as_bytes()),
            Err(FetchError::NoKeys)
        ));
    }

    /// aws-lc-rs parses an RSA key under 2048 bits and only refuses it when verifying: such a
    /// key is skipped when the set is read, and a set of only such keys is a failed fetch.
    #[test]
    fn an_rsa_key_under_2048_bits_is_skipped() {
        let doc = r#"{"keys":[{"kty":"RSA","kid":"weak","e":"AQAB","n":"zpDklznbos_G7ozD1EUUKxvpzd6bVRtWdWNLqfAxOSo-V1FQhCJqc5m63APCVDSzY1Vqu5oChg9B_gn6YH6J3mMvpa0gLwl5ao27sUwr1MireVKz1963sJ7XY2VE7hO4B1EEc3qbqvEauBqFkVHQ3znG5OhkzX9ko1WGuVV9tEs"}]}"#;
        assert!(matches!(
            KeySet::parse_jwks(doc.as_bytes()),
            Err(FetchError::NoKeys)
        ));
        let both = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"weak","e":"AQAB","n":"zpDklznbos_G7ozD1EUUKxvpzd6bVRtWdWNLqfAxOSo-V1FQhCJqc5m63APCVDSzY1Vqu5oChg9B_gn6YH6J3mMvpa0gLwl5ao27sUwr1MireVKz1963sJ7XY2VE7hO4B1EEc3qbqvEauBqFkVHQ3znG5OhkzX9ko1WGuVV9tEs"}},{}]}}"#,
            ed_jwk("")
        );
        let (set, skipped) = KeySet::parse_jwks(both.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(skipped[0].reason, "key_size");
        assert!(
            skipped[0].detail.contains("1024 bits"),
            "{}",
            skipped[0].detail
        );
    }
}
