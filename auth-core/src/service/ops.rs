//! The unauthenticated operational routes every service answers:
//! `GET /health` (liveness), `GET /ready` (readiness), `GET /metrics` (Prometheus text),
//! `GET /openapi.json` (OpenAPI 3.1, generated from the code).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::{self, Either};
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
///
/// One filter reads the path's first segment once and dispatches on it: every request of a
/// service's own routes passes through here first (`App::new` puts these in front), and four
/// `path!` filters tried in turn cost each of those requests four segment splits and three
/// combined rejections.
pub fn routes(
    checks: Vec<ReadyCheck>,
    openapi: utoipa::openapi::OpenApi,
) -> BoxedFilter<(Response,)> {
    let openapi = Arc::new(serde_json::to_value(&openapi).unwrap_or_default());
    let checks = Arc::new(Probes {
        checks: Arc::new(checks),
        in_flight: std::sync::Mutex::new(None),
    });
    warp::path::param::<Op>()
        .and(warp::path::end())
        .and(warp::get())
        .then(move |op| {
            // Only `/ready` waits; the others answer at once and share nothing.
            let answer = |response| Either::Left(future::ready(response));
            match op {
                Op::Health => answer(health()),
                Op::Ready => Either::Right(ready(Arc::clone(&checks))),
                Op::Metrics => answer(metrics()),
                Op::OpenApi => answer(warp::reply::json(openapi.as_ref()).into_response()),
            }
        })
        .boxed()
}

/// An operational route, by its one path segment; any other segment is not one (a 404 here,
/// so the service's own routes are tried next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Health,
    Ready,
    Metrics,
    OpenApi,
}

impl std::str::FromStr for Op {
    type Err = ();

    fn from_str(segment: &str) -> Result<Self, ()> {
        match segment {
            "health" => Ok(Op::Health),
            "ready" => Ok(Op::Ready),
            "metrics" => Ok(Op::Metrics),
            "openapi.json" => Ok(Op::OpenApi),
            _ => Err(()),
        }
    }
}

/// Liveness: the process serves.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub fn health() -> Response {
    warp::reply::json(&Health { status: "ok" }).into_response()
}

/// Set once the process received its stop signal ([`App::run_until_stopped`]): `/ready` is 503
/// from then on, while the service goes on serving for `server.shutdown_delay_seconds`. A
/// signal stops the whole process, so this is the process's, not one `App`'s.
///
/// [`App::run_until_stopped`]: super::app::App::run_until_stopped
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The process is stopping: `/ready` answers 503 `shutting down` from now on.
pub fn mark_stopping() {
    STOPPING.store(true, Ordering::Relaxed);
}

/// Whether the process received its stop signal.
fn is_stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// One run of `/ready`'s checks, shared by the probes that arrive while it runs.
type CheckRun = future::Shared<Pin<Box<dyn Future<Output = Result<(), String>> + Send>>>;

/// `/ready`'s checks and the run in flight. Probes that arrive while one runs await its outcome
/// instead of starting their own: a flood of unauthenticated probes holds at most one database
/// connection (and, on SQLite, takes the write lock once at a time), not one each. Nothing is
/// cached past the run: the next probe runs the checks again.
struct Probes {
    checks: Arc<Vec<ReadyCheck>>,
    in_flight: std::sync::Mutex<Option<CheckRun>>,
}

impl Probes {
    /// The run in flight, or a new one.
    fn run(&self) -> CheckRun {
        use futures_util::FutureExt as _;
        let mut slot = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(run) = slot.as_ref().filter(|run| run.peek().is_none()) {
            return run.clone();
        }
        let checks = Arc::clone(&self.checks);
        // A task of its own: it runs to its end (within its timeouts) whether or not a probe
        // still waits for it, so a check left half done never holds what it took (SQLite's
        // write lock, a pooled connection) until the next probe; and a check that panics is a
        // failed run, not a `Shared` poisoned for every later probe.
        let task = tokio::spawn(async move {
            for check in checks.iter() {
                match tokio::time::timeout(Duration::from_secs(2), check()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => return Err(reason),
                    Err(_) => return Err("readiness check timed out".to_owned()),
                }
            }
            Ok(())
        });
        let run: Pin<Box<dyn Future<Output = Result<(), String>> + Send>> = Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "a readiness check failed");
                Err("readiness check failed".to_owned())
            })
        });
        let run = run.shared();
        *slot = Some(run.clone());
        run
    }
}

/// Readiness: every check passes (database reachable, verification keys loaded), and the
/// process is not stopping.
#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn ready(probes: Arc<Probes>) -> Response {
    let stopping = is_stopping().then(|| "shutting down".to_owned());
    if let Some(reason) = stopping {
        return unavailable(reason);
    }
    match probes.run().await {
        Ok(()) => warp::reply::json(&Readiness {
            status: "ready",
            reason: None,
        })
        .into_response(),
        Err(reason) => unavailable(reason),
    }
}

/// `/ready`'s 503 with its reason.
fn unavailable(reason: String) -> Response {
    let body = Readiness {
        status: "unavailable",
        reason: Some(reason),
    };
    warp::reply::with_status(warp::reply::json(&body), StatusCode::SERVICE_UNAVAILABLE)
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

/// Adds to every operation of `doc` the answers the shared layers give it, where the operation
/// does not document them itself: a route with a body, the body reader's 408 (not received in
/// time) and 413 (too large), and 415 when it takes JSON only ([`super::body::json`]); a bearer
/// route, 401 and 503 (the verification keys or the database unavailable); a conditional
/// change (one documenting 412), the 400 of a malformed `If-Match` or `If-None-Match`.
pub fn document_shared_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, ResponseBuilder, path::Operation};
    fn add(op: &mut Operation, status: &str, description: &str) {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
    }
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            if let Some(body) = &op.request_body {
                let json_only = !body.content.is_empty()
                    && body.content.keys().all(|ctype| super::body::is_json(ctype));
                add(
                    op,
                    "408",
                    "request_timeout: the body was not received in time",
                );
                add(op, "413", "payload_too_large: the body is over the limit");
                if json_only {
                    add(
                        op,
                        "415",
                        "unsupported_media_type: the body must be application/json",
                    );
                }
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add(op, "401", "missing or invalid token");
                add(
                    op,
                    "503",
                    "the verification keys or the database unavailable; see Retry-After",
                );
            }
            if op.responses.responses.contains_key("412") {
                add(
                    op,
                    "400",
                    "invalid_request: a malformed If-Match or If-None-Match",
                );
            }
        }
    }
}

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

/// The verified claims of the caller, written straight from the shared claims into one buffer
/// (see [`WhoAmI::to_json`]).
#[utoipa::path(get, path = "/whoami", tag = "auth", security(("bearer_auth" = [])), responses(
    (status = 200, body = WhoAmI),
    (status = 401, description = "missing or invalid token"),
    (status = 503, description = "verification keys unavailable")))]
fn whoami_reply(claims: &crate::Claims) -> Response {
    let mut response = Response::new(WhoAmI::of(claims).to_json().into());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

impl<'a> WhoAmI<'a> {
    /// The body for `claims`, borrowed from them.
    pub fn of(claims: &'a crate::Claims) -> Self {
        WhoAmI {
            sub: claims.sub.as_deref(),
            username: claims.username.as_deref(),
            roles: &claims.roles,
            scope: claims.scope.as_deref(),
            aud: &claims.aud,
            iss: claims.iss.as_deref(),
            exp: claims.exp,
        }
    }

    /// Exactly `serde_json::to_vec(self)` (a property test holds the two together), but a
    /// string with nothing to escape, the usual case, is copied in one piece instead of being
    /// scanned byte by byte through serde_json's escaper: this route is the benchmark of auth's
    /// cost, and the escaper was about a twentieth of its instructions.
    pub fn to_json(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            if plain(s.as_bytes()) {
                out.push(b'"');
                out.extend_from_slice(s.as_bytes());
                out.push(b'"');
            } else {
                // Strings always serialise.
                let _ = serde_json::to_writer(&mut *out, s);
            }
        }
        /// Whether no byte of `s` needs escaping in JSON (a control character, `"` or `\\`):
        /// eight bytes at a time, with the bit trick serde_json's reader uses.
        fn plain(s: &[u8]) -> bool {
            const ONES: u64 = u64::MAX / 255;
            let flagged = |x: u64| {
                let quote = x ^ (ONES * u64::from(b'"'));
                let backslash = x ^ (ONES * u64::from(b'\\'));
                (x.wrapping_sub(ONES * 0x20) & !x)
                    | (quote.wrapping_sub(ONES) & !quote)
                    | (backslash.wrapping_sub(ONES) & !backslash)
            };
            let mut chunks = s.chunks_exact(8);
            let mut found = 0u64;
            for chunk in &mut chunks {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                found |= flagged(u64::from_le_bytes(word));
            }
            // The tail, padded with a byte that needs no escape: no byte-by-byte loop.
            let rest = chunks.remainder();
            let mut word = [b'a'; 8];
            word[..rest.len()].copy_from_slice(rest);
            found |= flagged(u64::from_le_bytes(word));
            found & (ONES << 7) == 0
        }
        fn optional(out: &mut Vec<u8>, s: Option<&str>) {
            match s {
                Some(s) => string(out, s),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn list(out: &mut Vec<u8>, items: &[String]) {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, item);
            }
            out.push(b']');
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"sub\":");
        optional(&mut out, self.sub);
        out.extend_from_slice(b",\"username\":");
        optional(&mut out, self.username);
        out.extend_from_slice(b",\"roles\":");
        list(&mut out, self.roles);
        out.extend_from_slice(b",\"scope\":");
        optional(&mut out, self.scope);
        out.extend_from_slice(b",\"aud\":");
        list(&mut out, self.aud);
        out.extend_from_slice(b",\"iss\":");
        optional(&mut out, self.iss);
        out.extend_from_slice(b",\"exp\":");
        match self.exp {
            Some(exp) => out.extend_from_slice(itoa::Buffer::new().format(exp).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        out
    }
}

/// The OpenAPI description of `/whoami`.
#[derive(utoipa::OpenApi)]
#[openapi(paths(whoami_reply), components(schemas(WhoAmI)))]
pub struct WhoAmIApi;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claims(strings: &[String], exp: Option<u64>, some: bool) -> crate::Claims {
        let pick = |i: usize| some.then(|| strings[i % strings.len()].clone());
        crate::Claims {
            sub: pick(0),
            username: pick(1),
            scope: pick(2),
            iss: pick(3),
            roles: strings.to_vec(),
            aud: strings.iter().rev().cloned().collect(),
            exp,
            ..serde_json::from_str("{}").unwrap()
        }
    }

    proptest! {
        /// `/whoami`'s hand-laid body is byte for byte what serde_json writes, escapes included.
        #[test]
        fn whoami_json_is_serde_jsons(
            strings in prop::collection::vec(
                prop_oneof![
                    any::<String>(),
                    "[a-z:/.0-9 ]{0,40}",
                    "[\"\\\\\u{0}-\u{1f}\u{7f}é]{0,8}",
                    "[a-z]{0,20}[\"\\\\\u{0}-\u{1f}][a-z]{0,20}",
                ],
                1..4,
            ),
            exp in any::<Option<u64>>(),
            some in any::<bool>(),
        ) {
            let claims = claims(&strings, exp, some);
            let body = WhoAmI::of(&claims);
            prop_assert_eq!(
                String::from_utf8(body.to_json()).unwrap(),
                serde_json::to_string(&body).unwrap()
            );
        }
    }

    /// The one dispatching filter answers exactly the four paths, for GET only, and leaves any
    /// other path to the routes behind it (a 404 rejection, not an answer).
    #[tokio::test]
    async fn operational_routes_answer_their_paths_only() {
        let ops = routes(
            vec![ready_check(|| async { Ok(()) })],
            utoipa::openapi::OpenApiBuilder::new().build(),
        );
        for path in ["/health", "/ready", "/metrics", "/openapi.json"] {
            let res = warp::test::request().path(path).reply(&ops).await;
            assert_eq!(res.status(), 200, "{path}");
        }
        let health = warp::test::request().path("/health").reply(&ops).await;
        assert_eq!(health.body().as_ref(), br#"{"status":"ok"}"#);
        let ready = warp::test::request().path("/ready").reply(&ops).await;
        assert_eq!(ready.body().as_ref(), br#"{"status":"ready"}"#);
        let down = routes(
            vec![ready_check(|| async { Err("database down".to_owned()) })],
            utoipa::openapi::OpenApiBuilder::new().build(),
        );
        let res = warp::test::request().path("/ready").reply(&down).await;
        assert_eq!(res.status(), 503);
        for path in [
            "/whoami",
            "/healthz",
            "/health/x",
            "/ready/x",
            "/",
            "/todos/1",
        ] {
            let rejection = warp::test::request().path(path).filter(&ops).await.err();
            assert!(
                rejection.is_some_and(|r| r.is_not_found()),
                "{path} must fall through"
            );
        }
        let res = warp::test::request()
            .method("POST")
            .path("/health")
            .reply(&ops)
            .await;
        assert_eq!(res.status(), 405);
    }

    /// Probes that arrive while a run of the checks is in flight share it; the next probe
    /// after it runs them again (nothing is cached past the run).
    #[tokio::test]
    async fn concurrent_ready_probes_share_one_run_of_the_checks() {
        use std::sync::atomic::AtomicUsize;
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (counted, gated) = (runs.clone(), gate.clone());
        let ops = routes(
            vec![ready_check(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let gated = gated.clone();
                async move {
                    gated.acquire().await.unwrap().forget();
                    Ok(())
                }
            })],
            utoipa::openapi::OpenApiBuilder::new().build(),
        );
        let release = async {
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
            assert_eq!(runs.load(Ordering::SeqCst), 1, "each probe ran the checks");
            gate.add_permits(2);
        };
        let (a, b, ()) = tokio::join!(
            warp::test::request().path("/ready").reply(&ops),
            warp::test::request().path("/ready").reply(&ops),
            release
        );
        assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
        let c = warp::test::request().path("/ready").reply(&ops).await;
        assert_eq!(c.status(), 200);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the next probe runs them again"
        );
    }

    /// A run whose probe went away still runs to its end (what a check took is given back at
    /// once, not at the next probe); a check that panics fails its run, and the next probe
    /// runs the checks again.
    #[tokio::test]
    async fn a_ready_run_ends_without_its_probe_and_survives_a_panic() {
        let finished = Arc::new(tokio::sync::Notify::new());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (done, gated) = (finished.clone(), gate.clone());
        let ops = routes(
            vec![ready_check(move || {
                let (done, gated) = (done.clone(), gated.clone());
                async move {
                    gated.acquire().await.unwrap().forget();
                    done.notify_one();
                    Ok(())
                }
            })],
            utoipa::openapi::OpenApiBuilder::new().build(),
        );
        // The probe is polled once (its run starts and waits) and dropped; the run goes on.
        let probe = warp::test::request().path("/ready").reply(&ops);
        assert!(futures_util::FutureExt::now_or_never(probe).is_none());
        gate.add_permits(1);
        tokio::time::timeout(Duration::from_secs(10), finished.notified())
            .await
            .expect("the run finished without its probe");

        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let ops = routes(
            vec![ready_check(move || {
                let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    assert!(!first, "a check's bug");
                    Ok(())
                }
            })],
            utoipa::openapi::OpenApiBuilder::new().build(),
        );
        let res = warp::test::request().path("/ready").reply(&ops).await;
        assert_eq!(res.status(), 503);
        let res = warp::test::request().path("/ready").reply(&ops).await;
        assert_eq!(res.status(), 200, "the next probe runs the checks again");
    }

    #[test]
    fn whoami_json_of_empty_claims() {
        let empty: crate::Claims = serde_json::from_str("{}").unwrap();
        assert_eq!(
            String::from_utf8(WhoAmI::of(&empty).to_json()).unwrap(),
            r#"{"sub":null,"username":null,"roles":[],"scope":null,"aud":[],"iss":null,"exp":null}"#
        );
    }
}
