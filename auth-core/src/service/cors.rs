//! CORS for browser clients: exact allowed origins only. A preflight `OPTIONS` is answered by the
//! CORS layer itself, before any route or auth filter runs (a preflight carries no token).

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};

use super::config::CorsSettings;

/// Wraps `routes` with CORS when any origin is allowed; with none, no CORS headers are sent and
/// browsers keep cross-origin pages out.
pub fn wrap(routes: BoxedFilter<(Response,)>, settings: &CorsSettings) -> BoxedFilter<(Response,)> {
    if settings.allowed_origins.is_empty() {
        return routes;
    }
    let cors = warp::cors()
        .allow_origins(settings.allowed_origins.iter().map(String::as_str))
        .allow_methods(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allow_headers(["authorization", "content-type"])
        // Not CORS-safelisted, so hidden from a page's script unless exposed: the challenge of a
        // 401/403 and the wait of a 429/503.
        .expose_headers(["www-authenticate", "retry-after"])
        .max_age(600);
    routes
        .with(cors)
        .map(Reply::into_response)
        .recover(crate::error::handle_rejection)
        .unify()
        .map(vary_on_origin)
        .boxed()
}

/// `Vary: Origin` on every response (the Fetch standard's "CORS protocol and HTTP caches"):
/// the CORS headers depend on the request's `Origin`, and warp's CORS layer does not say so, so
/// a shared cache could hand one origin's answer (or a no-origin one, without the headers) to
/// another. Added to any `Vary` already there.
fn vary_on_origin(mut res: Response) -> Response {
    res.headers_mut()
        .append(http::header::VARY, http::HeaderValue::from_static("origin"));
    res
}
