//! The published, unauthenticated endpoints:
//!
//! - `GET /.well-known/jwks.json`: the public members of every published key (`kty`, `kid`,
//!   `use: sig`, `alg`, the key's public parameters, `x5c`/`x5t#S256` when it has a
//!   certificate); `Cache-Control: public, max-age=<signing.jwks_max_age_seconds>`, an `ETag`,
//!   304 on a matching `If-None-Match`. With an HS256 secret there is no JWKS: 404.
//! - `GET /.well-known/certs/{kid}.pem`: the X.509 certificate of a published key, PEM.
//! - `GET /.well-known/oauth-authorization-server` (RFC 8414) and
//!   `GET /.well-known/openid-configuration`: the same metadata document. No
//!   `authorization_endpoint`: no grant uses one.

use auth_core::ApiError;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use sha2::{Digest, Sha256};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};

use crate::startup::State;

/// The authorization server metadata (RFC 8414).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Metadata {
    /// Equals every token's `iss`.
    pub issuer: String,
    /// The JWKS URL (absent with an HS256 secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// `POST /token`.
    pub token_endpoint: String,
    /// `["password"]`.
    pub grant_types_supported: Vec<&'static str>,
    /// `["none"]`: clients are public and identified by `client_id` only.
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    /// Every scope a role allows.
    pub scopes_supported: Vec<String>,
    /// Empty: there is no authorization endpoint to send a response type to.
    pub response_types_supported: Vec<&'static str>,
    /// `["public"]`.
    pub subject_types_supported: Vec<&'static str>,
    /// The algorithms of the published keys.
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
}

/// The routes.
pub fn routes(state: State) -> BoxedFilter<(Response,)> {
    let s = state.clone();
    let jwks_route = warp::path!(".well-known" / "jwks.json")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .map(move |headers: http::HeaderMap| {
            // A list field (RFC 9110 §5.3): a client may split it over several lines.
            let lines: Vec<&str> = headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let inm = (!lines.is_empty()).then(|| lines.join(","));
            jwks(&s, inm.as_deref())
        });
    let s = state.clone();
    let cert = warp::path!(".well-known" / "certs" / String)
        .and(warp::get())
        .and_then(move |file: String| {
            let s = s.clone();
            async move { certificate(&s, &file).map_err(warp::reject::custom) }
        });
    let s = state.clone();
    let oauth = warp::path!(".well-known" / "oauth-authorization-server")
        .and(warp::get())
        .map(move || metadata(&s));
    let s = state;
    let oidc = warp::path!(".well-known" / "openid-configuration")
        .and(warp::get())
        .map(move || openid_configuration(&s));
    jwks_route
        .or(cert)
        .unify()
        .or(oauth)
        .unify()
        .or(oidc)
        .unify()
        .boxed()
}

/// The published keys.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "published",
    params(("If-None-Match" = Option<String>, Header, description = "A previous ETag")),
    responses(
        (status = 200, description = "JWKS (RFC 7517), public members only; Cache-Control max-age and ETag"),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No JWKS: tokens are HS256 with a shared secret"),
    ))]
fn jwks(state: &State, if_none_match: Option<&str>) -> Response {
    if state.keys.uses_secret() {
        return ApiError::not_found("no JWKS: tokens are signed with a shared secret (HS256)")
            .into_response();
    }
    let body = serde_json::to_vec(&state.keys.jwks()).unwrap_or_default();
    let digest = Sha256::digest(&body);
    let etag = format!(
        "\"{}\"",
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let matches = if_none_match.is_some_and(|v| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag)
    });
    let mut res = if matches {
        let mut r = Response::new(Vec::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(body.into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "public, max-age={}",
        state.settings.signing.jwks_max_age_seconds
    )) {
        h.insert(header::CACHE_CONTROL, v);
    }
    res
}

/// The certificate of a published key.
#[utoipa::path(get, path = "/.well-known/certs/{kid}.pem", tag = "published",
    params(("kid" = String, Path, description = "The key id")),
    responses(
        (status = 200, description = "X.509 certificate, PEM", content_type = "application/x-pem-file"),
        (status = 404, description = "No such published key, or it has no certificate"),
    ))]
fn certificate(state: &State, file: &str) -> Result<Response, ApiError> {
    let kid = file
        .strip_suffix(".pem")
        .ok_or_else(|| ApiError::not_found("no such certificate"))?;
    let pem = state
        .keys
        .certificate(kid)
        .ok_or_else(|| ApiError::not_found("no such certificate"))?;
    Ok(warp::reply::with_header(pem, "content-type", "application/x-pem-file").into_response())
}

fn document(state: &State) -> Metadata {
    let issuer = state
        .settings
        .token
        .issuer()
        .trim_end_matches('/')
        .to_owned();
    Metadata {
        jwks_uri: (!state.keys.uses_secret()).then(|| format!("{issuer}/.well-known/jwks.json")),
        token_endpoint: format!("{issuer}/token"),
        issuer: state.settings.token.issuer().to_owned(),
        grant_types_supported: vec!["password"],
        token_endpoint_auth_methods_supported: vec!["none"],
        scopes_supported: state.settings.token.all_scopes(),
        response_types_supported: vec![],
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: state.keys.algorithms(),
    }
}

fn cached_json(state: &State, doc: &Metadata) -> Response {
    let mut res = warp::reply::json(doc).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "public, max-age={}",
        state.settings.signing.jwks_max_age_seconds
    )) {
        res.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    res
}

/// Authorization server metadata (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "published",
    responses((status = 200, body = Metadata)))]
fn metadata(state: &State) -> Response {
    cached_json(state, &document(state))
}

/// The same metadata, where OpenID Connect clients look.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "published",
    responses((status = 200, body = Metadata)))]
fn openid_configuration(state: &State) -> Response {
    cached_json(state, &document(state))
}

/// For the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(jwks, certificate, metadata, openid_configuration),
    components(schemas(Metadata))
)]
pub struct WellKnownApi;
