//! `POST /token`: the password grant (seeds 001, 002).
//!
//! Accepts `application/x-www-form-urlencoded` or `application/json` with `username`,
//! `password`, and optionally `grant_type=password`, `client_id`, `scope`, `resource`
//! (RFC 8707) or `audience` (either may hold several space-separated values).
//!
//! - `aud`: the requested audiences, each of which must be in `token.allowed_audiences`
//!   (else 400 `invalid_target`); by default `token.audiences`, plus `token-service` (the
//!   audience of this service's own routes) for users with role `admin`. Any user may request
//!   `audience=token-service` to call `GET /users/me` and `PUT /users/me/password`.
//! - `scope`: by default every scope the user's roles allow (`token.role_scopes`); a requested
//!   scope outside them is 400 `invalid_scope`.
//! - Unknown user, wrong password and disabled user: the same 401 `invalid_grant` body, after a
//!   password verification in every case (a dummy hash for an unknown user).
//! - Throttled (see [`crate::throttle`]): 429 with `Retry-After`.

use std::net::{IpAddr, SocketAddr};

use auth_core::ApiError;
use auth_core::service::body::shorten;
use http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};

use crate::audit;
use crate::passwords::HashError;
use crate::startup::State;
use crate::throttle::Refused;

/// The token request (form or JSON).
#[derive(Default, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    /// `password` (the only grant), optional.
    pub grant_type: Option<String>,
    /// The user name.
    pub username: Option<String>,
    /// The password.
    pub password: Option<String>,
    /// The client's id (`client_id` claim); default `token.default_client_id`.
    pub client_id: Option<String>,
    /// Space-separated scopes requested.
    pub scope: Option<String>,
    /// RFC 8707 resource indicator(s): the audience(s) asked for.
    pub resource: Option<String>,
    /// Audience(s) asked for (same as `resource`).
    pub audience: Option<String>,
}

/// The token response (RFC 6749 §5.1). Its `Debug` shows everything but the token.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The signed JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until `exp`.
    pub expires_in: u64,
    /// The scopes granted, space separated.
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token_bytes", &self.access_token.len())
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The claims of an issued access token (RFC 9068).
#[derive(Debug, Serialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// The user's stable id.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// The client.
    pub client_id: String,
    /// Expiry.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Random token id.
    pub jti: String,
    /// User name.
    pub username: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Granted scopes.
    pub scope: String,
    /// URL paths granted (seed 003), when configured for the user or a role.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<String>,
}

/// Every `X-Forwarded-For` line, joined in order: a proxy may add a line of its own rather than
/// append to the client's (HAProxy's `option forwardfor`), and the right-most addresses, the
/// ones a trusted proxy vouches for, are then on the last line. A line is read as text even
/// when part of it is not (invalid UTF-8 replaced): a proxy appends the client's address to the
/// client's own line (`é, 203.0.113.7`), so a bad hop must spoil only itself; a line read as one
/// bad hop would put the client's failures on the proxy's address.
fn forwarded_for()
-> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned().map(|headers: http::HeaderMap| {
        let lines: Vec<String> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        (!lines.is_empty()).then(|| lines.join(","))
    })
}

/// The route.
pub fn route(state: State) -> BoxedFilter<(Response,)> {
    warp::path!("token")
        .and(warp::post())
        .and(warp::header::optional::<String>("content-type"))
        .and(auth_core::service::body::bytes(16 * 1024))
        .and(auth_core::service::server::peer_addr())
        .and(forwarded_for())
        .and(warp::any().map(move || state.clone()))
        .then(
            |ct: Option<String>,
             body: bytes::Bytes,
             peer: Option<SocketAddr>,
             xff: Option<String>,
             state: State| async move {
                let res = match issue_token(ct, body, peer, xff, state).await {
                    Ok(r) => r,
                    Err(e) => e.into_response(),
                };
                no_store(res)
            },
        )
        .boxed()
}

/// A username not (yet) known to be a user's, as the audit log shows it: the first 16 hex digits
/// of its HMAC-SHA-256 under a key drawn at random once per process (at its first use). Enough to
/// correlate attempts in one process's log, never the text (it may be a password), and not a
/// plain hash, which anyone reading the log could test guessed passwords against.
fn unverified(username: &str) -> String {
    use aws_lc_rs::hmac;
    static KEY: std::sync::LazyLock<Option<hmac::Key>> = std::sync::LazyLock::new(|| {
        hmac::Key::generate(hmac::HMAC_SHA256, &aws_lc_rs::rand::SystemRandom::new()).ok()
    });
    match &*KEY {
        Some(key) => hmac::sign(key, username.as_bytes()).as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        // The system's random source failed: nothing of the name at all.
        None => "unavailable".to_owned(),
    }
}

fn no_store(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::PRAGMA,
        http::HeaderValue::from_static("no-cache"),
    );
    res
}

fn oauth(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn invalid_grant() -> ApiError {
    oauth(
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
        "invalid username or password",
    )
}

fn parse(ct: Option<&str>, body: &[u8]) -> Result<TokenRequest, ApiError> {
    let media = ct
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let parsed = match media.as_str() {
        "application/x-www-form-urlencoded" => {
            serde_urlencoded::from_bytes::<TokenRequest>(body).map_err(|e| e.to_string())
        }
        "application/json" if !auth_core::service::body::is_object(body) => {
            Err(auth_core::service::body::not_an_object(body).to_owned())
        }
        "application/json" => {
            serde_json::from_slice::<TokenRequest>(body).map_err(|e| e.to_string())
        }
        _ => {
            return Err(ApiError::bad_request(
                "content-type must be application/x-www-form-urlencoded or application/json",
            ));
        }
    };
    parsed.map_err(|e| {
        // Never the value: a password sent as a number would be echoed.
        let e = auth_core::service::body::without_value(&e);
        // Nor where it ended: serde_json's " at line 1 column N" would tell its length.
        let e = e.split(" at line ").next().unwrap_or_default();
        let e: String = e.chars().take(200).collect();
        ApiError::bad_request(format!("malformed request body: {e}"))
    })
}

/// The space-separated words of `s`, each once, in their first order (`dedup` alone only drops
/// neighbours: `a b a` kept both `a`s).
fn words(s: &Option<String>) -> Vec<String> {
    unique(
        s.as_deref()
            .unwrap_or("")
            .split_ascii_whitespace()
            .map(String::from),
    )
}

/// Each item once, in its first order. In linear time: a 16 KiB `audience` holds thousands of
/// words, and it is read before any throttle (a list searched for each word made every such
/// request millions of comparisons).
fn unique(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

/// A fresh hash (current `users.argon2_*`) for a user whose password just verified against an
/// outdated one. The sign-in goes on either way: a failure is logged and the old hash stays,
/// and a hash changed meanwhile (a password change) is left as it is.
async fn rehash(state: &State, user: &crate::users::User, password: &SecretString) {
    let fresh = match state.passwords.hash(password).await {
        Ok(fresh) => fresh,
        // Under load the next sign-in rehashes.
        Err(HashError::Busy(_)) => return,
        Err(e) => {
            tracing::warn!(error = %e, "rehashing a password with the current parameters failed");
            return;
        }
    };
    match state
        .users
        .upgrade_password_hash(&user.id, &user.password_hash, &fresh)
        .await
    {
        Ok(true) => {
            audit!(event = "password_rehash", outcome = "success", username = ?user.username);
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "storing a rehashed password failed"),
    }
}

#[utoipa::path(post, path = "/token", tag = "token",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded",
        description = "Also accepted as application/json with the same fields"),
    responses(
        (status = 200, body = TokenResponse, description = "Signed access token; Cache-Control: no-store"),
        (status = 400, description = "invalid_request, unsupported_grant_type, invalid_scope or invalid_target"),
        (status = 401, description = "invalid_grant: unknown user, wrong password or disabled user (one body)"),
        (status = 429, description = "Too many failed sign-ins, or too many sign-ins in flight from one address; see Retry-After"),
        (status = 503, description = "temporarily_unavailable: users.max_queued_hashes sign-ins already wait for a password check, or the database is unavailable; see Retry-After"),
    ))]
async fn issue_token(
    ct: Option<String>,
    body: bytes::Bytes,
    peer: Option<SocketAddr>,
    xff: Option<String>,
    state: State,
) -> Result<Response, ApiError> {
    let req = parse(ct.as_deref(), &body)?;
    match req.grant_type.as_deref() {
        None | Some("password") => {}
        Some(_) => {
            return Err(oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=password is supported",
            ));
        }
    }
    let username = match req.username.as_deref().map(str::trim) {
        // No stored name holds a NUL (PostgreSQL's TEXT cannot), so the lookup is not even tried.
        Some(u) if u.contains('\0') => {
            return Err(ApiError::bad_request(
                "username: must not contain NUL characters",
            ));
        }
        Some(u) if !u.is_empty() && u.len() <= 256 => u.to_owned(),
        Some(u) if !u.is_empty() => return Err(ApiError::bad_request("username: too long")),
        _ => return Err(ApiError::bad_request("missing field: username")),
    };
    let password = match req.password {
        Some(p) if !p.is_empty() => SecretString::from(p),
        _ => return Err(ApiError::bad_request("missing field: password")),
    };
    if secrecy::ExposeSecret::expose_secret(&password).len() > crate::passwords::MAX_BYTES {
        return Err(ApiError::bad_request(format!(
            "password: at most {} bytes",
            crate::passwords::MAX_BYTES
        )));
    }
    let settings = &state.settings;
    let client_id = match req.client_id.as_deref() {
        None | Some("") => settings.token.default_client_id.clone(),
        Some(c) if c.len() <= 128 && c.chars().all(|c| c.is_ascii_graphic()) => c.to_owned(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "client_id: 1 to 128 visible ASCII characters",
            ));
        }
    };
    let requested_aud = unique(words(&req.audience).into_iter().chain(words(&req.resource)));
    if let Some(bad) = requested_aud
        .iter()
        .find(|a| !settings.token.allowed_audiences.contains(a))
    {
        return Err(oauth(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            format!("audience {:?} is not allowed", shorten(bad, 64)),
        ));
    }

    let ip: Option<IpAddr> =
        crate::throttle::client_ip(peer, xff.as_deref(), &state.trusted_proxies);
    let ip_text = ip.map(|i| i.to_string()).unwrap_or_default();
    let throttled = |retry: u64, reason: &str, message: &str| {
        audit!(event = "sign_in", outcome = "throttled", reason, username_hmac = %unverified(&username), client_ip = %ip_text);
        oauth(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message).with_retry_after(retry)
    };
    const FAILED: &str = "too many failed sign-ins; try again later";
    let mut attempt = state.throttle.begin(&username, ip).map_err(|refused| {
        let message = match refused {
            Refused::Locked { .. } => FAILED,
            Refused::Busy { .. } => {
                "too many sign-ins in flight from this address; try again in a moment"
            }
        };
        throttled(refused.retry(), refused.reason(), message)
    })?;

    let user = match state.users.by_username(&username).await {
        Ok(user) => user,
        Err(e) => {
            attempt.abandoned();
            return Err(e.to_api_error());
        }
    };
    let permit = match state.passwords.permit().await {
        Ok(permit) => permit,
        Err(busy) => {
            // Shed before any password was checked: not a guess, counted against nothing.
            attempt.shed();
            audit!(event = "sign_in", outcome = "shed", reason = "hash_queue_full", username_hmac = %unverified(&username), client_ip = %ip_text);
            return Err(busy.into());
        }
    };
    attempt.hashing();
    let Some(verified) = state
        .passwords
        .verify_with(
            permit,
            &password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await
    else {
        // The computation failed (a panic in the hasher): a fault of ours, not a wrong password.
        attempt.abandoned();
        tracing::error!("password verification failed");
        return Err(ApiError::internal());
    };
    let right = matches!(&user, Some(u) if verified && !u.disabled);
    if let Err(retry) = attempt.finish(right) {
        // Other guesses from this address failed while this one ran, enough to lock it: it is
        // answered as if it had come a moment later, so its outcome stays unknown to the
        // client. The audit line says whether its credentials were right: a spray that found
        // a password shows.
        return Err(throttled(
            retry,
            if right {
                "overtaken_right_credentials"
            } else {
                "overtaken"
            },
            FAILED,
        ));
    }
    let user = match user {
        Some(u) if right => u,
        other => {
            // The attempt counts against the username (since it began) and the address.
            let reason = match other {
                None => "unknown_user",
                Some(u) if u.disabled => "disabled",
                Some(_) => "bad_password",
            };
            // A name that matches no user may be a password typed in the wrong field: only its
            // hash prefix is logged. A known user's name is logged escaped.
            if reason == "unknown_user" {
                audit!(event = "sign_in", outcome = "failure", reason, username_hmac = %unverified(&username), client_ip = %ip_text);
            } else {
                audit!(event = "sign_in", outcome = "failure", reason, username = ?username, client_ip = %ip_text);
            }
            return Err(invalid_grant());
        }
    };
    // The credentials are right: whatever this request asks for next (a scope or audience it
    // may not have), it is not a guess, and it does not count towards the user's lock (its
    // `finish` forgot the count).
    if state.passwords.outdated(&user.password_hash) {
        rehash(&state, &user, &password).await;
    }

    let allowed: Vec<String> = {
        let mut all: Vec<String> = user
            .roles
            .iter()
            .filter_map(|r| settings.token.role_scopes.get(r))
            .flatten()
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    };
    let requested = words(&req.scope);
    let scopes = if requested.is_empty() {
        allowed
    } else {
        if let Some(bad) = requested.iter().find(|s| !allowed.contains(s)) {
            audit!(event = "sign_in", outcome = "invalid_scope", username = ?username, client_ip = %ip_text);
            return Err(oauth(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope {:?} is not allowed for this user", shorten(bad, 64)),
            ));
        }
        requested
    };
    let aud = if requested_aud.is_empty() {
        let mut aud = settings.token.audiences.clone();
        if user.roles.iter().any(|r| r == "admin") {
            for a in &settings.auth.audience {
                if !aud.contains(a) {
                    aud.push(a.clone());
                }
            }
        }
        aud
    } else {
        requested_aud
    };
    let mut access = user.access.clone();
    for r in &user.roles {
        if let Some(paths) = settings.token.role_access.get(r) {
            access.extend(paths.iter().cloned());
        }
    }
    access.sort();
    access.dedup();

    // One reading of the clock chooses the key and stamps the token, so the key signs before
    // its retirement and the lifetime below is at least a second.
    let now = state.clock.now();
    let Some(key) = state.keys.signer_at(now) else {
        tracing::error!("no signing key is active");
        return Err(ApiError::unavailable("no signing key is active", 30));
    };
    // Never past the signing key's retirement: from then on no verifier can check the token.
    // That happens only when its successor is missing from the ring (a rolled-back rotation).
    let lifetime = match key.meta.retire_at {
        Some(retire) => settings
            .token
            .lifetime_seconds
            .min(retire.saturating_sub(now)),
        None => settings.token.lifetime_seconds,
    };
    let claims = AccessClaims {
        iss: settings.token.issuer().to_owned(),
        sub: user.id.clone(),
        aud,
        client_id: client_id.clone(),
        exp: now.saturating_add(lifetime),
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        username: user.username.clone(),
        roles: user.roles.clone(),
        scope: scopes.join(" "),
        access,
    };
    let token = key.sign(&claims).map_err(|e| {
        tracing::error!(error = %e, kid = %key.kid, "signing failed");
        ApiError::internal()
    })?;
    audit!(event = "sign_in", outcome = "success", username = %username, client_ip = %ip_text,
        sub = %user.id, client_id = %client_id, kid = %key.kid);
    let body = TokenResponse {
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: lifetime,
        scope: claims.scope,
    };
    Ok(warp::reply::json(&body).into_response())
}

/// For the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(issue_token), components(schemas(TokenRequest, TokenResponse)))]
pub struct TokenApi;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_each_kept_once_in_their_first_order() {
        let words = words(&Some(" b a\tb  c a ".to_owned()));
        assert_eq!(words, ["b", "a", "c"]);
        let many: Vec<String> = (0..5000).map(|i| format!("w{i}")).collect();
        assert_eq!(unique(many.iter().cloned().chain(many.clone())), many);
    }

    #[test]
    fn a_printed_token_response_shows_no_token() {
        let response = TokenResponse {
            access_token: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl".to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: 900,
            scope: "todos:read".to_owned(),
        };
        let printed = format!("{response:?}");
        assert!(!printed.contains("eyJ"), "{printed}");
        assert!(
            printed.contains("todos:read") && printed.contains("900"),
            "{printed}"
        );
    }
}
