//! Property-based fuzzing of `POST /token` over real HTTP: form and JSON bodies of any shape.
//! Never a 5xx; every answer a documented status (200, 400, 401, 413, 415, 429).

use proptest::prelude::*;

use crate::helpers::{TestApp, spawn_with};

struct Fixture {
    rt: tokio::runtime::Runtime,
    t: TestApp,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let rt = testkit::fuzz::runtime();
        // Throttling would turn most cases into 429s: raise it so parsing is what gets fuzzed.
        let t = rt.block_on(spawn_with(|s| s.throttle.max_failures = 1_000_000));
        Fixture { rt, t }
    })
}

const FIELDS: &str = "(username|password|grant_type|client_id|scope|resource|audience|[a-z]{1,6})";

proptest! {
    #![proptest_config(ProptestConfig { cases: testkit::fuzz::cases(32), ..ProptestConfig::default() })]

    #[test]
    fn fuzz_token_bodies(
        body in prop_oneof![
            testkit::fuzz::body(FIELDS),
            "((username|password|grant_type|scope|audience|resource|client_id)=[ -~]{0,40}&?){0,6}".prop_map(String::into_bytes),
        ],
        content_type in prop_oneof![
            Just("application/x-www-form-urlencoded".to_owned()),
            Just("application/json".to_owned()),
            Just("text/plain".to_owned()),
            "[ -~]{0,30}",
        ],
    ) {
        let f = fixture();
        let status = f.rt.block_on(async {
            let mut req = f.t.app.client.post(f.t.url("/token")).body(body);
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&content_type) {
                req = req.header("content-type", value);
            }
            req.send().await.expect("the connection survives").status().as_u16()
        });
        prop_assert!(matches!(status, 200 | 400 | 401 | 413 | 415 | 429), "status {} for {:?}", status, content_type);
    }
}
