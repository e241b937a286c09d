//! CORS for browser clients: exact allowed origins only. A preflight `OPTIONS` is answered by the
//! CORS layer itself, before any route or auth filter runs (a preflight carries no token).

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};

use super::config::CorsSettings;
use super::server::Routes;

/// Not CORS-safelisted, so hidden from a page's script unless exposed: the challenge of a 401/403,
/// the wait of a 429/503, the methods of a 405, the new resource of a 201, and a resource's
/// version (`ETag`), which a page sends back in `If-Match` or `If-None-Match`.
const EXPOSED: [&str; 5] = [
    "www-authenticate",
    "retry-after",
    "allow",
    "location",
    "etag",
];

/// [`EXPOSED`] as one header value, for the responses the serving loop writes itself.
const EXPOSED_VALUE: &str = "www-authenticate, retry-after, allow, location, etag";

/// `routes` as the serving loop serves them: with no origin allowed, as they are (no CORS
/// headers are sent and browsers keep cross-origin pages out); else with `Vary: Origin` on every
/// response, and a second copy behind warp's CORS layer for the requests that layer is for.
///
/// Only a preflight and a request from a listed `Origin` go through the layer
/// ([`for_the_cors_layer`], decided by the loop). Any other request (no `Origin`; a same-origin
/// page's write, which browsers send with one; another site's) is routed as it is and answered
/// without CORS headers: its browser keeps a page of an origin not listed from reading the
/// answer, and a request that needs no CORS gets its 404, 405, 401 or 201 rather than the
/// layer's blanket 403.
pub fn wrap(
    routes: BoxedFilter<(Response,)>,
    settings: &CorsSettings,
) -> Routes<BoxedFilter<(Response,)>> {
    if settings.allowed_origins.is_empty() {
        return Routes::plain(routes);
    }
    let cors = warp::cors()
        .allow_origins(settings.allowed_origins.iter().map(String::as_str))
        .allow_methods(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allow_headers(["authorization", "content-type", "if-match", "if-none-match"])
        .expose_headers(EXPOSED)
        .max_age(600);
    let cross_origin = routes
        .clone()
        .with(cors)
        .map(Reply::into_response)
        .recover(crate::error::handle_rejection)
        .unify()
        .map(vary_on_origin)
        .boxed();
    Routes {
        plain: routes.map(vary_on_origin).boxed(),
        cross_origin: Some(cross_origin),
    }
}

/// Whether a request is for the CORS layer: a preflight (`OPTIONS` with an `Origin` and
/// `Access-Control-Request-Method`), or a request whose `Origin` is listed.
pub(crate) fn for_the_cors_layer<B>(req: &http::Request<B>, settings: &CorsSettings) -> bool {
    let Some(origin) = req.headers().get(http::header::ORIGIN) else {
        return false;
    };
    (req.method() == http::Method::OPTIONS
        && req
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD))
        || is_listed(origin, settings)
}

/// Whether `origin` is one of `cors.allowed_origins`, byte for byte.
fn is_listed(origin: &http::HeaderValue, settings: &CorsSettings) -> bool {
    settings
        .allowed_origins
        .iter()
        .any(|allowed| allowed.as_bytes() == origin.as_bytes())
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
    if is_listed(origin, settings) {
        let headers = res.headers_mut();
        headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            http::HeaderValue::from_static(EXPOSED_VALUE),
        );
    }
    add_vary(res);
}

/// `Vary: Origin`, on every response while CORS is on (with an `Origin` or without).
pub(crate) fn add_vary(res: &mut Response) {
    res.headers_mut()
        .append(http::header::VARY, http::HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_exposes_what_the_layer_exposes() {
        assert_eq!(EXPOSED_VALUE, EXPOSED.join(", "));
    }
}
