//! The verified-token cache's hits and misses reach `/metrics`, counted exactly. A test binary
//! of its own: the counters are process-wide, and beside the other API tests (their requests
//! moving them too) only growth could be asserted, which another test's hit could satisfy.

#[path = "api/helpers.rs"]
#[allow(dead_code)] // the helpers of the api tests, of which this binary uses a few
mod helpers;

use helpers::spawn_app;

#[tokio::test]
async fn cache_hits_and_misses_are_exported() {
    let t = spawn_app().await;
    let read = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    let metrics = || async {
        let res = t.request("GET", "/metrics", None, None).await;
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    };
    let before = metrics().await;
    let token = t.token("mia", &["user"]);
    // A miss, a miss that admits the token (a token is cached the second time it verifies),
    // then a hit.
    for _ in 0..3 {
        let res = t.request("GET", "/whoami", Some(&token), None).await;
        assert_eq!(res.status(), 200);
    }
    let after = metrics().await;
    for (name, grew_by) in [
        ("auth_cache_misses_total", 2.0),
        ("auth_cache_hits_total", 1.0),
    ] {
        let grew = read(&after, name) - read(&before, name);
        assert_eq!(grew, grew_by, "{name}:\n{after}");
    }
}
