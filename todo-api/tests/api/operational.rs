use auth_core::service::testing;

use crate::helpers::{spawn_app, spawn_app_without_keys};

#[tokio::test]
async fn answers_the_operational_routes_with_default_settings() {
    let t = spawn_app().await;
    testing::assert_operational_routes(&t.app).await;
}

#[tokio::test]
async fn health_at_once_ready_503_while_the_keys_cannot_load() {
    let t = spawn_app_without_keys().await;
    testing::assert_ready_waits_for_the_keys(&t.app).await;
}

#[tokio::test]
async fn ready_is_503_without_the_database() {
    let t = spawn_app().await;
    testing::assert_ready_fails_without_the_database(&t.app).await;
}

#[test]
fn verifier_settings_are_refused_before_the_port_is_taken() {
    testing::assert_verifier_settings_refused_first(
        env!("CARGO_BIN_EXE_todo-api").as_ref(),
        todo_api::INFO.env_prefix,
    );
}

#[test]
fn production_refuses_unsafe_config_with_one_line() {
    testing::assert_production_refusals(
        env!("CARGO_BIN_EXE_todo-api").as_ref(),
        todo_api::INFO.env_prefix,
        "auth.issuer",
    );
}

/// `GET /todos` with two `Authorization` lines (from `origin`, when given): a refusal the
/// serving loop writes itself.
async fn twice_authorized(t: &crate::helpers::TestApp, origin: Option<&str>) -> reqwest::Response {
    let mut req = t
        .app
        .client
        .get(format!("{}/todos", t.app.address))
        .header("authorization", "Bearer a")
        .header("authorization", "Bearer b");
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    req.send().await.unwrap()
}

/// The answers the serving loop writes before any route (a query string over the limits, a
/// repeated `Authorization`) carry the CORS headers a route's answer would: a page reads the
/// error instead of a network failure. Before, they had none.
#[tokio::test]
async fn refusals_before_any_route_carry_cors_headers() {
    let t = spawn_app().await;
    let long_query = format!("{}/todos?q={}", t.app.address, "x".repeat(5000));
    let send = |origin: &'static str| {
        t.app
            .client
            .get(&long_query)
            .header("origin", origin)
            .send()
    };
    let res = send("http://localhost:3001").await.unwrap();
    assert_eq!(res.status(), 414);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:3001"
    );
    assert!(res.headers()["vary"].to_str().unwrap().contains("origin"));
    // An origin that is not allowed gets no CORS grant.
    let res = send("https://evil.example").await.unwrap();
    assert_eq!(res.status(), 414);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    // A repeated Authorization line: the 400 and its challenge are readable too.
    let res = twice_authorized(&t, Some("http://localhost:3001")).await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:3001"
    );
    assert!(
        res.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("www-authenticate")
    );
}

#[tokio::test]
async fn cors_preflight_is_answered_before_any_auth_check() {
    let t = spawn_app().await;
    let preflight = |origin: &'static str| {
        t.app
            .client
            .request(reqwest::Method::OPTIONS, format!("{}/todos", t.app.address))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, if-match, if-none-match",
            )
            .send()
    };
    // A preflight carries no token; it is answered for an allowed local origin.
    let res = preflight("http://127.0.0.1:3000").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://127.0.0.1:3000"
    );
    let methods = res.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    // An origin that is not listed is refused with a JSON error.
    let res = preflight("https://evil.example").await.unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "cors_forbidden");
    // A simple request from an allowed origin gets the header too.
    let res = t
        .app
        .client
        .get(format!("{}/health", t.app.address))
        .header("origin", "http://localhost:3001")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:3001"
    );
    // The answer depends on the Origin, and says so to caches, with an Origin or without.
    let varies = |res: &reqwest::Response| {
        res.headers()
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
    };
    assert!(varies(&res), "{:?}", res.headers());
    assert!(varies(&t.app.get("/health").await));
    // So do the answers the serving loop writes itself (a query string too long, repeated
    // `Authorization`), which a cache could otherwise serve to a listed page without its
    // `Access-Control-Allow-Origin`.
    let long_query = format!("/todos?q={}", "a".repeat(5_000));
    let res = t.app.get(&long_query).await;
    assert_eq!(res.status(), 414);
    assert!(varies(&res), "{:?}", res.headers());
    let res = twice_authorized(&t, None).await;
    assert_eq!(res.status(), 400);
    assert!(varies(&res), "{:?}", res.headers());
    // A page's script can read a 401's challenge (and a 429/503's Retry-After).
    let res = t
        .app
        .client
        .get(format!("{}/todos", t.app.address))
        .header("origin", "http://localhost:3001")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:3001"
    );
    let exposed = res.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        [
            "www-authenticate",
            "retry-after",
            "allow",
            "location",
            "etag"
        ]
        .iter()
        .all(|h| exposed.contains(h)),
        "{exposed}"
    );
}

/// A request from an origin not listed that is not a preflight is routed as any other and
/// answered without CORS headers (its browser keeps the page from reading it): a same-origin
/// page's write, which browsers send with an `Origin`, is not refused for it. Before, every
/// such request was a 403 `cors_forbidden`, before routing and auth.
#[tokio::test]
async fn a_request_from_an_origin_not_listed_is_routed_without_cors_headers() {
    let t = spawn_app().await;
    let editor = t.token("erin", &["editor"]);
    let send = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut req = t
            .app
            .client
            .request(method, format!("{}{path}", t.app.address))
            .header("origin", "https://todo.example.com");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req
    };
    let cases = [
        (send(reqwest::Method::GET, "/nope", None), 404),
        (send(reqwest::Method::DELETE, "/todos", None), 405),
        (send(reqwest::Method::GET, "/todos", None), 401),
        (
            send(reqwest::Method::POST, "/todos", Some(&editor))
                .json(&serde_json::json!({"title": "x"})),
            201,
        ),
    ];
    for (req, want) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), want, "{:?}", res.headers());
        assert!(res.headers().get("access-control-allow-origin").is_none());
        assert!(
            res.headers()
                .get_all("vary")
                .iter()
                .any(|v| v.to_str().unwrap().contains("origin"))
        );
        if want == 401 {
            assert!(res.headers().contains_key("www-authenticate"));
        }
    }
    // A preflight asking for a header not allowed says so (not "origin not allowed").
    let res = t
        .app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/todos", t.app.address))
        .header("origin", "http://localhost:3001")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-request-id")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body["message"], "CORS request forbidden: header not allowed",
        "{body}"
    );
}
