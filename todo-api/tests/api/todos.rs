use auth_core::service::testing::{self, assert_error};
use serde_json::{Value, json};

use crate::helpers::{TestApp, parts, spawn_app, spawn_with};

async fn crud_flow(t: &TestApp) {
    let editor = t.token("erin", &["editor"]);
    let admin = t.token("root", &["admin"]);
    let alice = t.token("alice", &["user"]);

    let res = t
        .request(
            "POST",
            "/todos",
            Some(&editor),
            Some(json!({"title": "  buy milk  "})),
        )
        .await;
    let (status, todo) = parts(res).await;
    assert_eq!(status, 201);
    assert_eq!(todo["title"], "buy milk", "stored trimmed");
    assert_eq!(todo["done"], false);
    assert_eq!(todo["created_by"], "erin");
    for field in ["created_at", "updated_at"] {
        let ts = todo[field].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}"
        );
    }
    let path = format!("/todos/{}", todo["id"]);

    // Anyone authenticated reads.
    let (status, got) = parts(t.request("GET", &path, Some(&alice), None).await).await;
    assert_eq!((status, &got), (200, &todo));
    // At one path only: `+1` and `01` are other spellings of the number, not of the todo.
    for other in [
        format!("/todos/+{}", todo["id"]),
        format!("/todos/0{}", todo["id"]),
    ] {
        for method in ["GET", "PATCH", "DELETE", "POST", "PUT"] {
            let body = matches!(method, "PATCH" | "POST" | "PUT").then(|| json!({"done": true}));
            let res = t.request(method, &other, Some(&admin), body).await;
            assert_eq!(res.status(), 404, "{method} {other}");
        }
    }

    // Editors and admins patch.
    let (status, patched) = parts(
        t.request("PATCH", &path, Some(&editor), Some(json!({"done": true})))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (patched["done"].as_bool(), patched["title"].as_str()),
        (Some(true), Some("buy milk"))
    );
    let (status, patched) = parts(
        t.request(
            "PATCH",
            &path,
            Some(&admin),
            Some(json!({"title": "buy oat milk"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (patched["done"].as_bool(), patched["title"].as_str()),
        (Some(true), Some("buy oat milk"))
    );

    // Only admins delete.
    let res = t.request("DELETE", &path, Some(&admin), None).await;
    assert_eq!(res.status(), 204);
    assert_eq!(
        t.request("GET", &path, Some(&alice), None).await.status(),
        404
    );
    assert_eq!(
        t.request("DELETE", &path, Some(&admin), None)
            .await
            .status(),
        404
    );
    assert_eq!(
        t.request("PATCH", &path, Some(&admin), Some(json!({"done": false})))
            .await
            .status(),
        404
    );

    // Text survives the database intact.
    let odd = "it's \"quoted\" -- ; DROP TABLE todos; \\x00 \u{1F600} ünïcödé \u{7f}";
    let todo = t.create(&editor, odd).await;
    let (_, got) = parts(
        t.request("GET", &format!("/todos/{}", todo["id"]), Some(&alice), None)
            .await,
    )
    .await;
    assert_eq!(got["title"], odd);

    // An editor whose `sub` holds a NUL records no creator: a 401 on every backend (the insert
    // failed on PostgreSQL, a 500).
    // Likewise one longer than OpenID Connect allows (255 bytes).
    for sub in ["er\u{0}in".to_owned(), "e".repeat(256)] {
        let bad = t.token(&sub, &["editor"]);
        let res = t
            .request("POST", "/todos", Some(&bad), Some(json!({"title": "x"})))
            .await;
        testing::assert_invalid_token(res, "POST /todos").await;
    }
}

#[tokio::test]
async fn crud_as_editor_and_admin_on_sqlite() {
    crud_flow(&spawn_app().await).await;
}

#[tokio::test]
async fn crud_as_editor_and_admin_on_postgres() {
    let Some(url) = auth_core::service::storage::test_postgres_url("todo-api crud").await else {
        return;
    };
    crud_flow(&spawn_with(|s| s.database.url = Some(url.into())).await).await;
}

/// Optimistic concurrency: every todo answer carries an `ETag`; a PATCH or DELETE with
/// `If-Match` goes ahead only from a version it names, else 412 and nothing changes.
async fn conditional_changes(t: &TestApp) {
    let (editor, admin) = (t.token("ed", &["editor"]), t.token("root", &["admin"]));
    let todo = t.create(&editor, "t").await;
    let path = format!("/todos/{}", todo["id"]);
    let res = t.request("GET", &path, Some(&editor), None).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    let conditional = |method: &str, token: &str, tag: &str, body: Option<Value>| {
        t.app
            .send_with(method, &path, token, ("if-match", tag), body)
    };
    let res = conditional("PATCH", &editor, "\"1\"", Some(json!({"done": true})))
        .await
        .unwrap();
    testing::assert_etag(&res, 200, "\"2\"", "");
    // A patch that changes nothing keeps the version.
    for body in [
        json!({}),
        json!({"done": true}),
        json!({"title": "t", "done": true}),
    ] {
        let res = conditional("PATCH", &editor, "\"2\"", Some(body.clone()))
            .await
            .unwrap();
        testing::assert_etag(&res, 200, "\"2\"", &body.to_string());
    }
    // From version 1 again: refused, and nothing changes.
    let (status, err) = parts(
        conditional("PATCH", &editor, "\"1\"", Some(json!({"title": "stale"})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (412, Some("precondition_failed")),
        "{err}"
    );
    let res = conditional("DELETE", &admin, "\"1\"", None).await.unwrap();
    assert_eq!(res.status(), 412);
    let (_, now) = parts(t.request("GET", &path, Some(&editor), None).await).await;
    assert_eq!(
        (now["title"].as_str(), now["done"].as_bool()),
        (Some("t"), Some(true))
    );
    // The current version goes ahead; unconditional changes still do too.
    let res = conditional("DELETE", &admin, "\"2\"", None).await.unwrap();
    assert_eq!(res.status(), 204);
    let res = conditional("DELETE", &admin, "*", None).await.unwrap();
    assert_eq!(res.status(), 404, "gone");
}

#[tokio::test]
async fn changes_with_if_match_are_conditional() {
    conditional_changes(&spawn_app().await).await;
}

/// RFC 9110 §13.1.2: a read whose `If-None-Match` names the current version (weakly) or is `*`
/// is a 304 with the `ETag` and no body; a change of a version it names is a 412 and changes
/// nothing; a malformed one is a 400 on a change and names nothing on a read.
#[tokio::test]
async fn if_none_match_answers_304_to_reads_and_412_to_changes() {
    let t = spawn_app().await;
    let (editor, admin) = (t.token("ed", &["editor"]), t.token("root", &["admin"]));
    let todo = t.create(&editor, "t").await;
    let path = format!("/todos/{}", todo["id"]);
    let send = |method: &str, token: &str, tag: &str, body: Option<Value>| {
        t.app
            .send_with(method, &path, token, ("if-none-match", tag), body)
    };
    for tag in ["\"1\"", "W/\"1\"", "*"] {
        let res = send("GET", &editor, tag, None).await.unwrap();
        assert_eq!(res.status(), 304, "{tag}");
        assert_eq!(res.headers()["etag"], "\"1\"", "{tag}");
        assert!(res.bytes().await.unwrap().is_empty(), "{tag}: no body");
    }
    let res = send("GET", &editor, "\"7\"", None).await.unwrap();
    assert_eq!(res.status(), 200);
    // Not the syntax, or an empty list: a read is answered in full (as nginx does), a
    // change is the 400.
    for tag in ["1", ""] {
        let res = send("GET", &editor, tag, None).await.unwrap();
        assert_eq!(res.status(), 200, "{tag:?}");
    }
    let res = send("PATCH", &editor, "1", Some(json!({"title": "x"})));
    assert_error(res.await.unwrap(), 400, "invalid_request", "PATCH").await;
    for (method, token, body) in [
        ("PATCH", &editor, Some(json!({"title": "x"}))),
        ("DELETE", &admin, None),
    ] {
        for tag in ["*", "\"1\""] {
            let res = send(method, token, tag, body.clone()).await.unwrap();
            assert_error(res, 412, "precondition_failed", &format!("{method} {tag}")).await;
        }
    }
    let (_, now) = parts(t.request("GET", &path, Some(&editor), None).await).await;
    assert_eq!(now["title"], "t", "nothing changed");
    let res = send("PATCH", &editor, "\"7\"", Some(json!({"title": "x"})))
        .await
        .unwrap();
    testing::assert_etag(&res, 200, "\"2\"", "");
}

#[tokio::test]
async fn changes_with_if_match_are_conditional_on_postgres() {
    let Some(url) = auth_core::service::storage::test_postgres_url("todo-api if-match").await
    else {
        return;
    };
    conditional_changes(&spawn_with(|s| s.database.url = Some(url.into())).await).await;
}

/// A todo records its creator's `sub`: a token without one (or with an empty one) creates
/// nothing, with a 401 `invalid_token`; it may still read.
#[tokio::test]
async fn a_token_without_a_subject_cannot_create() {
    let t = spawn_app().await;
    let no_sub = t.issuer.builder("todo-api").without_claim("sub");
    let empty_sub = t.issuer.builder("todo-api").claim("sub", "");
    for (token, title) in [(no_sub, "x"), (empty_sub, "   ")] {
        let token = token.claim("roles", json!(["editor"])).sign();
        // The token's fault answers before the body's (an invalid title is still a 401).
        let res = t
            .request(
                "POST",
                "/todos",
                Some(&token),
                Some(json!({"title": title})),
            )
            .await;
        let challenge = res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        let (status, err) = parts(res).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (401, Some("invalid_token")),
            "{err}"
        );
        assert!(
            err["message"].as_str().unwrap().contains("subject"),
            "{err}"
        );
        let (status, page) = parts(t.request("GET", "/todos", Some(&token), None).await).await;
        assert_eq!(
            (status, page["items"].as_array().map(Vec::len)),
            (200, Some(0)),
            "{page}"
        );
    }
}

#[tokio::test]
async fn validation_errors_are_400_naming_the_field() {
    let t = spawn_app().await;
    let editor = t.token("erin", &["editor"]);
    let long = "x".repeat(201);
    let cases = [
        (json!({"title": ""}), "title"),
        (json!({"title": "   "}), "title"),
        (json!({"title": long}), "title"),
        (json!({"title": 5}), "title"),
        (json!({"title": "ok", "done": "yes"}), "done"),
        (json!({"title": "ok", "owner": "bob"}), "owner"),
        (json!({"title": "nul\u{0}byte"}), "title"),
        (json!({"done": true}), "title"),
        (json!([1, 2]), "JSON object"),
        // The fields in order, as an array: serde would fill a struct from it.
        (json!(["buy milk", true]), "JSON object"),
        (json!(["buy milk"]), "JSON object"),
    ];
    for (body, field) in cases {
        let (status, err) = parts(
            t.request("POST", "/todos", Some(&editor), Some(body.clone()))
                .await,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(err["error"], "invalid_request", "{body}");
        assert!(
            err["message"].as_str().unwrap().contains(field),
            "{body}: {err}"
        );
    }
    let exactly_200 = "é".repeat(200);
    assert_eq!(
        t.request(
            "POST",
            "/todos",
            Some(&editor),
            Some(json!({"title": exactly_200}))
        )
        .await
        .status(),
        201
    );
    // Not JSON at all.
    let res = t
        .app
        .client
        .post(t.url("/todos"))
        .bearer_auth(&editor)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = t
        .app
        .client
        .post(t.url("/todos"))
        .bearer_auth(&editor)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    // A content type that is not text is the route's 400, not the 405 of `GET /todos` beside
    // it (which named POST in its `Allow`).
    let res = t
        .app
        .client
        .post(t.url("/todos"))
        .bearer_auth(&editor)
        .header(
            "content-type",
            reqwest::header::HeaderValue::from_bytes(b"application/json; charset=\xff").unwrap(),
        )
        .body(r#"{"title":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("allow").is_none());
    // PATCH validates too.
    let todo = t.create(&editor, "a").await;
    let path = format!("/todos/{}", todo["id"]);
    assert_eq!(
        t.request("PATCH", &path, Some(&editor), Some(json!({"title": ""})))
            .await
            .status(),
        400
    );
    assert_eq!(
        t.request("PATCH", &path, Some(&editor), Some(json!({"id": 9})))
            .await
            .status(),
        400
    );
    // `null` cannot clear a title or a done flag: a 400 naming the field, not "leave as is".
    for field in ["title", "done"] {
        let (status, err) = parts(
            t.request("PATCH", &path, Some(&editor), Some(json!({field: null})))
                .await,
        )
        .await;
        assert_eq!(status, 400, "{field}: {err}");
        assert_eq!(err["message"], format!("{field}: must not be null"));
    }
    // Two JSON values in one body: not one todo and something dropped.
    let res = t
        .app
        .client
        .post(t.url("/todos"))
        .bearer_auth(&editor)
        .header("content-type", "application/json")
        .body(r#"{"title":"a"}{"title":"b"}"#)
        .send()
        .await
        .unwrap();
    let (status, err) = parts(res).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["message"], "the body holds more than one JSON value");
}

#[tokio::test]
async fn bodies_over_16_kib_are_413_plain_and_chunked() {
    let t = spawn_app().await;
    let editor = t.token("erin", &["editor"]);
    let big = json!({"title": "x".repeat(17 * 1024)}).to_string();
    let res = t
        .app
        .client
        .post(t.url("/todos"))
        .bearer_auth(&editor)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    // Chunked: no Content-Length, the limit still holds (413, not 411).
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .into_bytes()
        .chunks(1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let res = t
        .app
        .client
        .post(t.url("/todos"))
        .bearer_auth(&editor)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let (_, body) = parts(res).await;
    assert_eq!(body["error"], "payload_too_large");
    // A small chunked body is fine.
    let small: Vec<Result<bytes::Bytes, std::io::Error>> =
        vec![Ok(bytes::Bytes::from_static(br#"{"title": "chunked"}"#))];
    let res = t
        .app
        .client
        .post(t.url("/todos"))
        .bearer_auth(&editor)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            small,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_whatever_the_token() {
    let t = spawn_app().await;
    let alice = t.token("alice", &["user"]);
    for token in [None, Some(alice.as_str()), Some("garbage")] {
        assert_eq!(t.request("GET", "/nope", token, None).await.status(), 404);
        let res = t.request("PUT", "/todos", token, None).await;
        assert_eq!(res.status(), 405);
        assert_eq!(
            res.headers()["allow"],
            "GET, HEAD, POST",
            "RFC 9110 requires Allow"
        );
        let res = t.request("POST", "/todos/1", token, None).await;
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers()["allow"], "GET, HEAD, PATCH, DELETE");
        let res = t.request("DELETE", "/health", token, None).await;
        assert_eq!(res.headers()["allow"], "GET, HEAD");
        // A malformed id matches no route.
        assert_eq!(
            t.request("GET", "/todos/abc", token, None).await.status(),
            404
        );
        assert_eq!(
            t.request("GET", "/todos/99999999999999999999", token, None)
                .await
                .status(),
            404
        );
    }
    assert_eq!(
        t.request("GET", "/todos/12345", Some(&alice), None)
            .await
            .status(),
        404
    );
}

async fn page(t: &TestApp, token: &str, query: &str) -> (Vec<i64>, Option<String>) {
    let (status, body) = parts(
        t.request("GET", &format!("/todos{query}"), Some(token), None)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{query}: {body}");
    let ids = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    (ids, body["next_cursor"].as_str().map(String::from))
}

#[tokio::test]
async fn pagination_walks_every_todo_once() {
    let t = spawn_app().await;
    let editor = t.token("erin", &["editor"]);
    let mut created = Vec::new();
    for i in 0..45 {
        let todo = t.create(&editor, &format!("todo {i}")).await;
        created.push(todo["id"].as_i64().unwrap());
        if i % 3 == 0 {
            t.request(
                "PATCH",
                &format!("/todos/{}", todo["id"]),
                Some(&editor),
                Some(json!({"done": true})),
            )
            .await;
        }
    }
    // Default page size 20: 20 + 20 + 5.
    let (first, cursor) = page(&t, &editor, "").await;
    assert_eq!(first.len(), 20);
    let mut seen = first;
    let mut cursor = cursor;
    while let Some(c) = cursor {
        let (ids, next) = page(&t, &editor, &format!("?cursor={c}")).await;
        seen.extend(ids);
        cursor = next;
    }
    assert_eq!(seen, created);
    // Boundaries: limit 1 and 100, exactly-full last page has no cursor.
    let (ids, next) = page(&t, &editor, "?limit=1").await;
    assert_eq!((ids.len(), next.is_some()), (1, true));
    let (ids, next) = page(&t, &editor, "?limit=100").await;
    assert_eq!((ids.len(), next), (45, None));
    let (ids, next) = page(&t, &editor, "?limit=45").await;
    assert_eq!((ids.len(), next), (45, None));
    // The done filter.
    let (done, _) = page(&t, &editor, "?done=true&limit=100").await;
    assert_eq!(done.len(), 15);
    let (open, _) = page(&t, &editor, "?done=false&limit=100").await;
    assert_eq!(open.len(), 30);
    // Bad parameters.
    for q in [
        "?limit=0",
        "?limit=101",
        "?limit=x",
        "?cursor=bogus",
        "?done=yes",
        "?owner=bob",
    ] {
        let (status, body) = parts(
            t.request("GET", &format!("/todos{q}"), Some(&editor), None)
                .await,
        )
        .await;
        assert_eq!(status, 400, "{q}: {body}");
    }
}

#[tokio::test]
async fn openapi_lists_every_route_with_security_and_schemas() {
    let t = spawn_app().await;
    let doc: Value = t.app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, method) in [
        ("/todos", "get"),
        ("/todos", "post"),
        ("/todos/{id}", "get"),
        ("/todos/{id}", "patch"),
        ("/todos/{id}", "delete"),
        ("/whoami", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert_eq!(
            op["security"],
            json!([{"bearer_auth": []}]),
            "{method} {path}"
        );
    }
    for path in ["/health", "/ready", "/metrics", "/openapi.json"] {
        assert!(
            doc["paths"][path]["get"]["security"].is_null(),
            "{path} is unauthenticated"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer_auth"]["scheme"],
        "bearer"
    );
    for schema in ["Todo", "NewTodo", "TodoPatch", "TodoPage", "WhoAmI"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    // Every answer the shared layers give is documented: a JSON body's 408, 413 and 415, a
    // bearer route's 503 (keys or database), a conditional change's 400 (malformed If-Match).
    for (path, method, statuses) in [
        (
            "/todos",
            "post",
            &["400", "401", "403", "408", "413", "415", "503"][..],
        ),
        ("/todos", "get", &["400", "401", "403", "503"][..]),
        (
            "/todos/{id}",
            "patch",
            &["400", "401", "404", "408", "412", "413", "415", "503"][..],
        ),
        (
            "/todos/{id}",
            "delete",
            &["400", "401", "404", "412", "503"][..],
        ),
    ] {
        let responses = doc["paths"][path][method]["responses"].as_object().unwrap();
        for status in statuses {
            assert!(
                responses.contains_key(*status),
                "{method} {path} {status}: {:?}",
                responses.keys().collect::<Vec<_>>()
            );
        }
    }
    assert!(
        doc["paths"]["/todos/{id}"]["get"]["responses"]
            .get("415")
            .is_none(),
        "no body, no 415"
    );
}
