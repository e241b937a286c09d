//! The unauthenticated operational routes every service answers:
//! `GET /health` (liveness), `GET /ready` (readiness), `GET /metrics` (Prometheus text),
//! `GET /openapi.json` (OpenAPI 3.1, generated from the code).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};

/// One readiness condition: `Ok` when satisfied, else the reason shown in `/ready`'s body.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Makes a [`ReadyCheck`] from an async closure.
pub fn ready_check<F, Fut>(f: F) -> ReadyCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// `/ready`'s body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// Why not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `/health`'s body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves.
    pub status: &'static str,
}

/// The four operational routes. `checks` run in order for `/ready`, each bounded by 2 s.
pub fn routes(
    checks: Vec<ReadyCheck>,
    openapi: utoipa::openapi::OpenApi,
) -> BoxedFilter<(Response,)> {
    let openapi = Arc::new(serde_json::to_value(&openapi).unwrap_or_default());
    let checks = Arc::new(checks);
    let health = warp::path!("health").and(warp::get()).map(health);
    let ready = warp::path!("ready")
        .and(warp::get())
        .then(move || ready(checks.clone()));
    let metrics = warp::path!("metrics").and(warp::get()).map(metrics);
    let doc = warp::path!("openapi.json")
        .and(warp::get())
        .map(move || warp::reply::json(openapi.as_ref()).into_response());
    health
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(doc)
        .unify()
        .boxed()
}

/// Liveness: the process serves.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub fn health() -> Response {
    warp::reply::json(&Health { status: "ok" }).into_response()
}

/// Readiness: every check passes (database reachable, verification keys loaded).
#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn ready(checks: Arc<Vec<ReadyCheck>>) -> Response {
    for check in checks.iter() {
        let outcome = match tokio::time::timeout(Duration::from_secs(2), check()).await {
            Ok(r) => r,
            Err(_) => Err("readiness check timed out".to_owned()),
        };
        if let Err(reason) = outcome {
            let body = Readiness {
                status: "unavailable",
                reason: Some(reason),
            };
            return warp::reply::with_status(
                warp::reply::json(&body),
                StatusCode::SERVICE_UNAVAILABLE,
            )
            .into_response();
        }
    }
    warp::reply::json(&Readiness {
        status: "ready",
        reason: None,
    })
    .into_response()
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub fn metrics() -> Response {
    let body = super::telemetry::metrics_handle().render();
    warp::reply::with_header(
        body,
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    )
    .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
#[allow(dead_code)]
fn openapi_doc() {}

/// The OpenAPI description of the operational routes, merged into each service's document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(health, ready, metrics, openapi_doc),
    components(schemas(Health, Readiness))
)]
pub struct OpsApi;

/// The bearer security scheme every authenticated route names (`bearer_auth`).
pub struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_auth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `GET /whoami`'s body: the verified claims the handlers see.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmI<'a> {
    /// Subject.
    pub sub: Option<&'a str>,
    /// User name.
    pub username: Option<&'a str>,
    /// Roles.
    pub roles: &'a [String],
    /// Scopes, space separated.
    pub scope: Option<&'a str>,
    /// Audiences.
    pub aud: &'a [String],
    /// Issuer.
    pub iss: Option<&'a str>,
    /// Expiry, seconds since the epoch.
    pub exp: Option<u64>,
}

/// `GET /whoami` (authenticated, no database): the verified claims the handler sees. The
/// cheapest authenticated route, for engineers and benchmarks.
pub fn whoami(auth: &crate::verify::Auth) -> BoxedFilter<(Response,)> {
    warp::path!("whoami")
        .and(warp::get())
        .and(crate::filters::with_auth(auth))
        .map(|claims: std::sync::Arc<crate::Claims>| whoami_reply(&claims))
        .boxed()
}

/// The verified claims of the caller, serialised straight from the shared claims into one
/// buffer sized for them.
#[utoipa::path(get, path = "/whoami", tag = "auth", security(("bearer_auth" = [])), responses(
    (status = 200, body = WhoAmI),
    (status = 401, description = "missing or invalid token"),
    (status = 503, description = "verification keys unavailable")))]
fn whoami_reply(claims: &crate::Claims) -> Response {
    let body = WhoAmI {
        sub: claims.sub.as_deref(),
        username: claims.username.as_deref(),
        roles: &claims.roles,
        scope: claims.scope.as_deref(),
        aud: &claims.aud,
        iss: claims.iss.as_deref(),
        exp: claims.exp,
    };
    let mut bytes = Vec::with_capacity(256);
    match serde_json::to_writer(&mut bytes, &body) {
        Ok(()) => {
            let mut response = Response::new(bytes.into());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        // Not reached (strings and numbers always serialise); warp's reply logs and answers 500.
        Err(_) => warp::reply::json(&body).into_response(),
    }
}

/// The OpenAPI description of `/whoami`.
#[derive(utoipa::OpenApi)]
#[openapi(paths(whoami_reply), components(schemas(WhoAmI)))]
pub struct WhoAmIApi;
