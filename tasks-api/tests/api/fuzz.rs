//! Property-based fuzzing of tasks-api's untrusted input over real HTTP: JSON bodies on every
//! write route and list query strings. Never a 5xx; every rejection a documented status.

use proptest::prelude::*;
use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

struct Fixture {
    rt: tokio::runtime::Runtime,
    t: TestApp,
    alice: String,
    task_path: String,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let rt = testkit::fuzz::runtime();
        let t = rt.block_on(spawn_app());
        let alice = t.token("alice", &["user"]);
        let task = rt.block_on(t.create(&alice, json!({"title": "fuzzed"})));
        let task_path = format!("/tasks/{}", task["id"]);
        Fixture {
            rt,
            t,
            alice,
            task_path,
        }
    })
}

const FIELDS: &str = "(title|description|due|done|owner|id|[a-z]{1,6})";

proptest! {
    #![proptest_config(ProptestConfig { cases: testkit::fuzz::cases(32), ..ProptestConfig::default() })]

    #[test]
    fn fuzz_task_bodies(body in prop_oneof![
        testkit::fuzz::body(FIELDS),
        (".{0,250}", ".{0,40}", any::<Option<bool>>()).prop_map(|(t, d, done)| json!({"title": t, "due": d, "done": done}).to_string().into_bytes()),
    ], method in prop_oneof![Just("POST"), Just("PUT"), Just("PATCH")]) {
        let f = fixture();
        let path = if method == "POST" { "/tasks" } else { f.task_path.as_str() };
        let status = f.rt.block_on(async {
            f.t.app.client.request(method.parse().unwrap(), format!("{}{path}", f.t.app.address))
                .bearer_auth(&f.alice).header("content-type", "application/json").body(body)
                .send().await.expect("the connection survives").status().as_u16()
        });
        prop_assert!(matches!(status, 200 | 201 | 400 | 413), "{} {}: {}", method, path, status);
    }

    #[test]
    fn fuzz_task_queries(query in prop_oneof![
        "[ -~]{0,200}",
        "(limit=-?[0-9]{0,4}|cursor=[A-Za-z0-9_=-]{0,30}|done=[a-z]{0,5}|due_before=[0-9TZ:+-]{0,25}|owner=[a-z*]{0,5})(&(limit=[0-9]{0,3}|due_before=[0-9TZ:.-]{0,25}|owner=[a-z*]{0,4})){0,3}",
        // Valid RFC 3339 on the last day of year 9999, often past it in UTC.
        "due_before=9999-12-31T(1[0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](Z|-(0[1-9]|1[0-9]|2[0-3]):[0-5][0-9])",
    ]) {
        let f = fixture();
        let res = f.rt.block_on(async {
            f.t.app.client.get(format!("{}/tasks?{query}", f.t.app.address)).bearer_auth(&f.alice).send().await
        });
        match res {
            Ok(res) => {
                let status = res.status().as_u16();
                prop_assert!(matches!(status, 200 | 400 | 403 | 404 | 414), "status {} for {:?}", status, query);
            }
            // Only a URL the client will not build goes unsent; a failed connection fails.
            Err(e) => prop_assert!(e.is_builder(), "no answer for {:?}: {}", query, e),
        }
    }
}
