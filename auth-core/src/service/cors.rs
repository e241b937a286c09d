//! CORS for browser clients: exact allowed origins only. A preflight `OPTIONS` is answered by the
//! CORS layer itself, before any route or auth filter runs (a preflight carries no token).

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};

use super::config::CorsSettings;

/// Not CORS-safelisted, so hidden from a page's script unless exposed: the challenge of a 401/403
/// and the wait of a 429/503.
const EXPOSED: [&str; 2] = ["www-authenticate", "retry-after"];

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
        .expose_headers(EXPOSED)
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

/// The CORS headers of a response the serving loop writes itself (a refused query string or
/// `Authorization`, a handler's panic or timeout), which warp's CORS layer never sees: for an
/// allowed `origin`, what that layer sends on an actual request (`Access-Control-Allow-Origin`
/// and `-Expose-Headers`), so a page's script reads the error instead of a network failure;
/// `Vary: Origin` whenever CORS is on.
pub(crate) fn add_to_loop_response(
    res: &mut Response,
    origin: &http::HeaderValue,
    settings: &CorsSettings,
) {
    if settings.allowed_origins.is_empty() {
        return;
    }
    if settings
        .allowed_origins
        .iter()
        .any(|allowed| allowed.as_bytes() == origin.as_bytes())
    {
        let headers = res.headers_mut();
        headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            http::HeaderValue::from_static("www-authenticate, retry-after"),
        );
    }
    res.headers_mut()
        .append(http::header::VARY, http::HeaderValue::from_static("origin"));
}
