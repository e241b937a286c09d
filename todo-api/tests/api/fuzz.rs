//! Property-based fuzzing of todo-api's untrusted input over real HTTP: JSON bodies and query
//! strings. Never a 5xx, never a dropped connection; every rejection a documented status.

use proptest::prelude::*;
use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

struct Fixture {
    rt: tokio::runtime::Runtime,
    t: TestApp,
    editor: String,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let rt = testkit::fuzz::runtime();
        let t = rt.block_on(spawn_app());
        let editor = t.token("erin", &["editor"]);
        Fixture { rt, t, editor }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: testkit::fuzz::cases(48), ..ProptestConfig::default() })]

    #[test]
    fn fuzz_todo_bodies(body in prop_oneof![
        testkit::fuzz::body("(title|done|owner|id|[a-z]{1,6})"),
        (".{0,250}", any::<Option<bool>>()).prop_map(|(t, d)| json!({"title": t, "done": d}).to_string().into_bytes()),
    ]) {
        let f = fixture();
        let status = f.rt.block_on(async {
            f.t.app.client.post(f.t.url("/todos")).bearer_auth(&f.editor).header("content-type", "application/json")
                .body(body).send().await.expect("the connection survives").status().as_u16()
        });
        prop_assert!(matches!(status, 201 | 400 | 413), "status {}", status);
    }

    #[test]
    fn fuzz_todo_queries(query in prop_oneof![
        "[ -~]{0,200}",
        "(limit=-?[0-9]{0,4}|cursor=[A-Za-z0-9_=-]{0,30}|done=(true|false|x)|[a-z]{1,5}=[a-z]{0,5})(&(limit=[0-9]{0,3}|cursor=[A-Za-z0-9_-]{0,20}|done=[a-z]{0,5})){0,3}",
    ]) {
        let f = fixture();
        let res = f.rt.block_on(async {
            f.t.app.client.get(format!("{}/todos?{query}", f.t.app.address)).bearer_auth(&f.editor).send().await
        });
        // A query that is not even a valid URL never leaves the client; anything sent is answered.
        match res {
            Ok(res) => {
                let status = res.status().as_u16();
                prop_assert!(matches!(status, 200 | 400 | 404 | 414), "status {} for {:?}", status, query);
            }
            // Only a URL the client will not build goes unsent; a failed connection fails.
            Err(e) => prop_assert!(e.is_builder(), "no answer for {:?}: {}", query, e),
        }
    }
}
