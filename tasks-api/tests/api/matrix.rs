//! The access matrix: callers × methods × targets, each with the exact status and body.

use serde_json::json;

use crate::helpers::{TestApp, raw, spawn_app};

const NOT_FOUND: &str = r#"{"status":404,"error":"not_found","message":"no such task"}"#;

#[derive(Clone, Copy, Debug)]
enum Caller {
    Alice,
    Bob,
    Admin,
    NoToken,
    Expired,
}

fn token(t: &TestApp, caller: Caller) -> Option<String> {
    match caller {
        Caller::Alice => Some(t.token("alice", &["user"])),
        Caller::Bob => Some(t.token("bob", &["user"])),
        Caller::Admin => Some(t.token("root", &["admin"])),
        Caller::NoToken => None,
        Caller::Expired => Some(
            t.issuer
                .builder("tasks-api")
                .claim("sub", "alice")
                .valid_from(testkit::now() - 7200, 600)
                .sign(),
        ),
    }
}

#[tokio::test]
async fn every_caller_method_and_target_gets_exactly_its_answer() {
    let t = spawn_app().await;
    let alice = t.token("alice", &["user"]);
    let body = json!({"title": "renamed", "done": true});
    let missing_401 = r#"{"status":401,"error":"missing_token","message":"missing token"}"#;

    for caller in [
        Caller::Alice,
        Caller::Bob,
        Caller::Admin,
        Caller::NoToken,
        Caller::Expired,
    ] {
        for method in ["GET", "PUT", "PATCH", "DELETE"] {
            // A fresh task of alice's per cell, so a DELETE does not change the next cell.
            let task = t.create(&alice, json!({"title": "alice's"})).await;
            let id = task["id"].as_i64().unwrap();
            let targets = [
                ("alice's task", format!("/tasks/{id}")),
                ("no such id", "/tasks/987654".into()),
                ("malformed id", "/tasks/x'%20OR%201=1".into()),
            ];
            for (target, path) in targets {
                let send_body = matches!(method, "PUT" | "PATCH").then(|| body.clone());
                let res = t
                    .request(method, &path, token(&t, caller).as_deref(), send_body)
                    .await;
                let www = res
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap().to_owned());
                let (status, text) = raw(res).await;
                let cell = format!("{caller:?} {method} {target}");
                match (caller, target) {
                    (Caller::NoToken, _) => {
                        assert_eq!(status, 401, "{cell}");
                        assert_eq!(text, missing_401, "{cell}");
                        assert_eq!(www.as_deref(), Some("Bearer realm=\"tasks-api\""), "{cell}");
                    }
                    (Caller::Expired, _) => {
                        assert_eq!(status, 401, "{cell}");
                        assert_eq!(
                            text,
                            r#"{"status":401,"error":"invalid_token","message":"token expired"}"#,
                            "{cell}"
                        );
                    }
                    (Caller::Alice | Caller::Admin, "alice's task") => {
                        let expected = if method == "DELETE" { 204 } else { 200 };
                        assert_eq!(status, expected, "{cell}: {text}");
                        if method != "DELETE" {
                            let got: serde_json::Value = serde_json::from_str(&text).unwrap();
                            assert_eq!(got["owner"], "alice", "{cell}: the owner never changes");
                        }
                    }
                    // Bob on alice's task, and anyone on a missing or malformed id: the one 404.
                    _ => {
                        assert_eq!(status, 404, "{cell}");
                        assert_eq!(text, NOT_FOUND, "{cell}");
                    }
                }
            }
            // Whatever bob tried, alice's task is untouched (unless alice or admin changed it).
            if matches!(caller, Caller::Bob | Caller::NoToken | Caller::Expired) {
                let res = t
                    .request("GET", &format!("/tasks/{id}"), Some(&alice), None)
                    .await;
                let (status, text) = raw(res).await;
                assert_eq!(status, 200, "{caller:?} {method}: {text}");
                let got: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    (got["title"].as_str(), got["done"].as_bool()),
                    (Some("alice's"), Some(false)),
                    "{caller:?} {method}"
                );
            }
        }
    }
}
