use auth_core::service::testing::{self, assert_error};
use serde_json::{Value, json};

use crate::helpers::{TestApp, parts, spawn_app, spawn_on};

async fn ids(t: &TestApp, token: &str, query: &str) -> (u16, Vec<i64>, Value) {
    let (status, body) = parts(
        t.request("GET", &format!("/tasks{query}"), Some(token), None)
            .await,
    )
    .await;
    let ids = body["items"]
        .as_array()
        .map(|a| a.iter().map(|t| t["id"].as_i64().unwrap()).collect())
        .unwrap_or_default();
    (status, ids, body)
}

/// The ids of a list that must succeed: a 400 or 500 is a failure, not an empty list.
async fn listed(t: &TestApp, token: &str, query: &str) -> Vec<i64> {
    let (status, ids, body) = ids(t, token, query).await;
    assert_eq!(status, 200, "GET /tasks{query}: {body}");
    ids
}

/// Every page of a list, three at a time, following the cursor. `filter` is `""` or `name=value`.
async fn walk(t: &TestApp, token: &str, filter: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec!["limit=3".to_owned()];
        params.extend((!filter.is_empty()).then(|| filter.to_owned()));
        params.extend(cursor.as_ref().map(|c| format!("cursor={c}")));
        let path = format!("/tasks?{}", params.join("&"));
        let (status, body) = parts(t.request("GET", &path, Some(token), None).await).await;
        assert_eq!(status, 200, "{path}: {body}");
        items.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

async fn isolation(t: &TestApp) {
    let alice = t.token("alice", &["user"]);
    let bob = t.token("bob", &["user"]);
    let admin = t.token("root", &["admin"]);
    for i in 0..7 {
        t.create(&alice, json!({"title": format!("alice {i}")}))
            .await;
        t.create(&bob, json!({"title": format!("bob {i}")})).await;
    }
    // Every page of bob's list holds only bob's tasks, and all of them.
    let bobs = walk(t, &bob, "").await;
    assert_eq!(bobs.len(), 7);
    assert!(bobs.iter().all(|task| task["owner"] == "bob"), "{bobs:?}");
    let alices = walk(t, &alice, "").await;
    assert_eq!(alices.len(), 7);
    assert!(alices.iter().all(|task| task["owner"] == "alice"));
    // The admin lists anyone's with ?owner=, everyone's with ?owner=*, their own by default.
    let of_alice = walk(t, &admin, "owner=alice").await;
    assert_eq!(of_alice.len(), 7);
    assert!(of_alice.iter().all(|task| task["owner"] == "alice"));
    assert_eq!(walk(t, &admin, "owner=*").await.len(), 14);
    assert_eq!(walk(t, &admin, "").await.len(), 0);
    // A non-admin using ?owner= is refused, even for themselves.
    // Also before the rest of the query is validated.
    for q in [
        "?owner=alice",
        "?owner=*",
        "?owner=bob",
        "?owner=bob&bogus=1",
        "?limit=0&owner=x",
    ] {
        let res = t
            .request("GET", &format!("/tasks{q}"), Some(&bob), None)
            .await;
        assert_eq!(res.status(), 403, "{q}");
        let (_, body) = parts(res).await;
        assert_eq!(body["error"], "insufficient_scope");
    }
}

#[tokio::test]
async fn lists_are_isolated_per_owner_on_sqlite() {
    isolation(&spawn_app().await).await;
}

#[tokio::test]
async fn lists_are_isolated_per_owner_on_postgres() {
    let Some(url) = auth_core::service::storage::test_postgres_url("tasks-api isolation").await
    else {
        return;
    };
    isolation(&spawn_on(Some(url)).await).await;
}

#[tokio::test]
async fn an_owner_field_is_refused_in_every_body() {
    let t = spawn_app().await;
    let alice = t.token("alice", &["user"]);
    let admin = t.token("root", &["admin"]);
    let task = t.create(&alice, json!({"title": "mine"})).await;
    let path = format!("/tasks/{}", task["id"]);
    for (method, path, token) in [
        ("POST", "/tasks", &alice),
        ("PUT", path.as_str(), &alice),
        ("PATCH", path.as_str(), &alice),
        ("POST", "/tasks", &admin),
        ("PATCH", path.as_str(), &admin),
    ] {
        let res = t
            .request(
                method,
                path,
                Some(token),
                Some(json!({"title": "x", "owner": "bob"})),
            )
            .await;
        let (status, body) = parts(res).await;
        assert_eq!(status, 400, "{method} {path}");
        assert!(
            body["message"].as_str().unwrap().starts_with("owner:"),
            "{body}"
        );
        // `null` is a value of the refused field too.
        let res = t
            .request(
                method,
                path,
                Some(token),
                Some(json!({"title": "x", "owner": null})),
            )
            .await;
        let (status, body) = parts(res).await;
        assert_eq!(status, 400, "{method} {path} owner null: {body}");
    }
    for field in ["title", "done"] {
        let res = t
            .request("PATCH", &path, Some(&alice), Some(json!({field: null})))
            .await;
        let (status, body) = parts(res).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["message"], format!("{field}: must not be null"));
    }
    let (_, got) = parts(t.request("GET", &path, Some(&alice), None).await).await;
    assert_eq!(
        (got["owner"].as_str(), got["title"].as_str()),
        (Some("alice"), Some("mine"))
    );
}

#[tokio::test]
async fn put_replaces_and_patch_merges() {
    put_and_patch(&spawn_app().await).await;
}

/// PATCH merges in one SQL statement, whose parameter types PostgreSQL infers for itself.
#[tokio::test]
async fn put_replaces_and_patch_merges_on_postgres() {
    let Some(url) = auth_core::service::storage::test_postgres_url("tasks-api patch").await else {
        return;
    };
    put_and_patch(&spawn_on(Some(url)).await).await;
}

/// Optimistic concurrency (RFC 9110 §13.1.1): every task answer carries an `ETag`; a change
/// with `If-Match` goes ahead only from that version, else 412 and nothing changes. Without
/// `If-Match` changes go ahead as before.
async fn conditional_changes(t: &TestApp) {
    let alice = t.token("alice", &["user"]);
    let res = t
        .request("POST", "/tasks", Some(&alice), Some(json!({"title": "t"})))
        .await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    let task: Value = res.json().await.unwrap();
    let path = format!("/tasks/{}", task["id"]);
    let res = t.request("GET", &path, Some(&alice), None).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    let conditional = |method: &str, tag: &str, body: Option<Value>| {
        t.app
            .send_with(method, &path, &alice, ("if-match", tag), body)
    };
    // Two clients read version 1; the first change lands and makes version 2.
    let res = conditional("PATCH", "\"1\"", Some(json!({"done": true})))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    // The second, from version 1, would put back what the first changed: refused.
    for (method, body) in [
        ("PUT", Some(json!({"title": "stale"}))),
        ("PATCH", Some(json!({"title": "stale"}))),
        ("DELETE", None),
    ] {
        let (status, err) = parts(conditional(method, "\"1\"", body).await.unwrap()).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (412, Some("precondition_failed")),
            "{method}: {err}"
        );
    }
    let (status, now) = parts(t.request("GET", &path, Some(&alice), None).await).await;
    assert_eq!(
        (status, now["title"].as_str(), now["done"].as_bool()),
        (200, Some("t"), Some(true))
    );
    // The current version, or any, goes ahead; a weak tag never matches.
    let res = conditional("PATCH", "W/\"2\"", Some(json!({"title": "x"})))
        .await
        .unwrap();
    assert_eq!(res.status(), 412);
    let res = conditional("PUT", "\"7\", \"2\"", Some(json!({"title": "u"})))
        .await
        .unwrap();
    testing::assert_etag(&res, 200, "\"3\"", "");
    // A change that changes nothing keeps the version (`{}`, a field as stored, the same
    // replacement again); a real one still makes the next.
    for (method, body, tag) in [
        ("PATCH", json!({}), "\"3\""),
        ("PATCH", json!({"title": "u", "due": null}), "\"3\""),
        ("PUT", json!({"title": "u"}), "\"3\""),
        ("PATCH", json!({"description": "d"}), "\"4\""),
    ] {
        let res = conditional(method, "\"3\"", Some(body)).await.unwrap();
        testing::assert_etag(&res, 200, tag, method);
    }
    // Not the field's syntax (unquoted, `*` beside a tag): a 400, not a 412 for ever, nor
    // `*` unpinning the version; another user still gets the 404 first.
    for tag in ["3", "\"7\", *"] {
        let (status, err) = parts(
            conditional("PATCH", tag, Some(json!({"title": "y"})))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some("invalid_request")),
            "{tag}: {err}"
        );
        let bob = t.token("bob", &["user"]);
        let res = t
            .app
            .send_with(
                "PATCH",
                &path,
                &bob,
                ("if-match", tag),
                Some(json!({"title": "y"})),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{tag}");
    }
    let res = conditional("DELETE", "*", None).await.unwrap();
    assert_eq!(res.status(), 204);
    // Gone: no version matches any more.
    let res = conditional("DELETE", "*", None).await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn changes_with_if_match_are_conditional() {
    conditional_changes(&spawn_app().await).await;
}

/// RFC 9110 §13.1.2: a read whose `If-None-Match` names the current version (weakly) or is `*`
/// is a 304 with the `ETag` and no body; a change of a version it names is a 412 and changes
/// nothing; a malformed one is a 400 on a change and names nothing on a read; another user
/// still gets the one 404 first.
#[tokio::test]
async fn if_none_match_answers_304_to_reads_and_412_to_changes() {
    let t = spawn_app().await;
    let (alice, bob) = (t.token("alice", &["user"]), t.token("bob", &["user"]));
    let task = t.create(&alice, json!({"title": "t"})).await;
    let path = format!("/tasks/{}", task["id"]);
    let send = |method: &str, token: &str, tag: &str, body: Option<Value>| {
        t.app
            .send_with(method, &path, token, ("if-none-match", tag), body)
    };
    for tag in ["\"1\"", "W/\"1\"", "*", "\"7\", \"1\""] {
        let res = send("GET", &alice, tag, None).await.unwrap();
        assert_eq!(res.status(), 304, "{tag}");
        assert_eq!(res.headers()["etag"], "\"1\"", "{tag}");
        assert!(res.bytes().await.unwrap().is_empty(), "{tag}: no body");
    }
    let res = send("GET", &alice, "\"7\"", None).await.unwrap();
    assert_eq!(res.status(), 200, "another version: the task");
    // Not the syntax, or an empty list: a read is answered in full (as nginx does), a
    // change is the 400.
    for tag in ["1", ""] {
        let res = send("GET", &alice, tag, None).await.unwrap();
        assert_eq!(res.status(), 200, "{tag:?}");
    }
    let res = send("PATCH", &alice, "1", Some(json!({"title": "x"})));
    assert_error(res.await.unwrap(), 400, "invalid_request", "PATCH").await;
    let res = send("GET", &bob, "\"1\"", None).await.unwrap();
    assert_eq!(res.status(), 404, "another user's task: the one 404");
    for tag in ["*", "\"1\"", "W/\"1\""] {
        for (method, body) in [
            ("PUT", Some(json!({"title": "x"}))),
            ("PATCH", Some(json!({"title": "x"}))),
            ("DELETE", None),
        ] {
            let res = send(method, &alice, tag, body).await.unwrap();
            assert_error(res, 412, "precondition_failed", &format!("{method} {tag}")).await;
        }
    }
    let (status, now) = parts(t.request("GET", &path, Some(&alice), None).await).await;
    assert_eq!(
        (status, now["title"].as_str()),
        (200, Some("t")),
        "nothing changed"
    );
    let res = send("PATCH", &alice, "\"7\"", Some(json!({"title": "x"})))
        .await
        .unwrap();
    testing::assert_etag(
        &res,
        200,
        "\"2\"",
        "not at a named version: the change goes ahead",
    );
}

#[tokio::test]
async fn changes_with_if_match_are_conditional_on_postgres() {
    let Some(url) = auth_core::service::storage::test_postgres_url(
        "changes_with_if_match_are_conditional_on_postgres",
    )
    .await
    else {
        return;
    };
    conditional_changes(&spawn_on(Some(url)).await).await;
}

async fn put_and_patch(t: &TestApp) {
    let alice = t.token("alice", &["user"]);
    let task = t.create(&alice, json!({"title": "t", "description": "d", "due": "2030-01-02T03:04:05+01:00", "done": true})).await;
    assert_eq!(task["due"], "2030-01-02T02:04:05Z", "normalised to UTC");
    assert_eq!(task["owner"], "alice");
    let path = format!("/tasks/{}", task["id"]);
    // At one path only: `+1` and `01` are other spellings of the number, not of the task.
    for other in [
        format!("/tasks/+{}", task["id"]),
        format!("/tasks/0{}", task["id"]),
    ] {
        // POST too: no route takes it at `/tasks/{id}`, but no task is at this path either
        // (a 405 would say one is).
        for method in ["GET", "PATCH", "PUT", "DELETE", "POST"] {
            let body = matches!(method, "PATCH" | "PUT" | "POST").then(|| json!({"title": "x"}));
            let res = t.request(method, &other, Some(&alice), body).await;
            assert_eq!(res.status(), 404, "{method} {other}");
        }
    }
    for (at, status) in [
        (path.as_str(), 405),
        ("/tasks/abc", 404),
        ("/tasks/1.0", 404),
    ] {
        let res = t
            .request("POST", at, Some(&alice), Some(json!({"title": "x"})))
            .await;
        assert_eq!(res.status(), status, "POST {at}");
        if status == 405 {
            assert_eq!(res.headers()["allow"], "GET, HEAD, PUT, PATCH, DELETE");
        }
    }
    let (status, patched) = parts(
        t.request("PATCH", &path, Some(&alice), Some(json!({"title": "t2"})))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            patched["title"].as_str(),
            patched["description"].as_str(),
            patched["done"].as_bool()
        ),
        (Some("t2"), Some("d"), Some(true))
    );
    let (_, patched) = parts(
        t.request("PATCH", &path, Some(&alice), Some(json!({"due": null})))
            .await,
    )
    .await;
    assert!(patched["due"].is_null(), "null clears");
    assert_eq!(patched["description"], "d");
    let (_, patched) = parts(
        t.request(
            "PATCH",
            &path,
            Some(&alice),
            Some(json!({"description": null, "due": "2031-01-01T00:00:00Z", "done": false})),
        )
        .await,
    )
    .await;
    assert_eq!(
        (
            patched["title"].as_str(),
            patched["description"].is_null(),
            patched["due"].as_str(),
            patched["done"].as_bool()
        ),
        (Some("t2"), true, Some("2031-01-01T00:00:00Z"), Some(false))
    );
    let (status, replaced) = parts(
        t.request("PUT", &path, Some(&alice), Some(json!({"title": "fresh"})))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(replaced["title"], "fresh");
    assert!(
        replaced["description"].is_null() && replaced["due"].is_null(),
        "PUT resets absent fields"
    );
    assert_eq!(replaced["done"], false);
    assert_eq!(
        t.request("PUT", &path, Some(&alice), Some(json!({"done": true})))
            .await
            .status(),
        400,
        "PUT needs a title"
    );
    // The fields in order, as an array, are not a body: a short one would have been a full
    // replacement that clears the rest.
    for (method, body) in [
        ("PUT", json!(["new"])),
        ("PATCH", json!([])),
        ("POST", json!(["t"])),
    ] {
        let path = if method == "POST" { "/tasks" } else { &path };
        let (status, err) = parts(t.request(method, path, Some(&alice), Some(body)).await).await;
        assert_eq!(status, 400, "{method}: {err}");
        assert_eq!(err["message"], "the body must be a JSON object", "{err}");
    }
    let (_, kept) = parts(t.request("GET", &path, Some(&alice), None).await).await;
    assert_eq!(kept["title"], "fresh");
}

/// A valid RFC 3339 time whose UTC reading falls past year 9999 is a 400 naming the field on
/// every route that takes one (the conversion to UTC used to panic and drop the connection).
#[tokio::test]
async fn a_due_date_past_year_9999_in_utc_is_a_400() {
    let t = spawn_app().await;
    let alice = t.token("alice", &["user"]);
    let task = t.create(&alice, json!({"title": "t"})).await;
    let path = format!("/tasks/{}", task["id"]);
    let late = "9999-12-31T23:59:59-01:00";
    for (method, path, body) in [
        ("POST", "/tasks", json!({"title": "x", "due": late})),
        ("PUT", path.as_str(), json!({"title": "x", "due": late})),
        ("PATCH", path.as_str(), json!({"due": late})),
    ] {
        let (status, err) = parts(
            t.request(method, path, Some(&alice), Some(body.clone()))
                .await,
        )
        .await;
        assert_eq!(status, 400, "{method} {body}: {err}");
        assert_eq!(err["error"], "invalid_request", "{err}");
        assert!(err["message"].as_str().unwrap().contains("due"), "{err}");
    }
    let (status, _, err) = ids(&t, &alice, "?due_before=9999-12-31T23:59:59-23:59").await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("due_before"),
        "{err}"
    );
    // The last second that still fits, from either side of UTC, is accepted.
    let edge = t
        .create(
            &alice,
            json!({"title": "edge", "due": "9999-12-31T23:59:59Z"}),
        )
        .await;
    assert_eq!(edge["due"], "9999-12-31T23:59:59Z");
    let early = t
        .create(
            &alice,
            json!({"title": "early", "due": "0000-01-01T00:00:00-01:00"}),
        )
        .await;
    assert_eq!(early["due"], "0000-01-01T01:00:00Z");
}

/// A valid token without a `sub` owns nothing: a 401 `invalid_token`, not a 403 that would
/// suggest more scope could help.
#[tokio::test]
async fn a_token_without_a_subject_is_401() {
    let t = spawn_app().await;
    let no_sub = t
        .issuer
        .builder("tasks-api")
        .without_claim("sub")
        .claim("roles", json!(["user"]))
        .sign();
    // The token's fault answers before the request's: an invalid title, an unknown query
    // parameter and a malformed id are still 401s.
    for (method, path, title) in [
        ("GET", "/tasks", ""),
        ("GET", "/tasks?bogus=1", ""),
        ("POST", "/tasks", "x"),
        ("POST", "/tasks", "   "),
        ("GET", "/tasks/1", ""),
        ("GET", "/tasks/abc", ""),
    ] {
        let body = (method == "POST").then(|| json!({"title": title}));
        let res = t.request(method, path, Some(&no_sub), body).await;
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token"),
            "{method} {path}"
        );
        let (status, err) = parts(res).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (401, Some("invalid_token")),
            "{method} {path}: {err}"
        );
    }
}

/// A token that carries `scope` gets no more than it names: narrowed to `tasks:read`, its owner
/// reads her tasks and changes none. Without the claim, the owner rule alone decides.
#[tokio::test]
async fn a_token_narrowed_by_scope_is_held_to_it() {
    let t = spawn_app().await;
    let alice = t.token("alice", &["user"]);
    let task = t.create(&alice, json!({"title": "t"})).await;
    let path = format!("/tasks/{}", task["id"]);
    let narrowed = |scope| t.issuer.scoped("tasks-api", "alice", &["user"], scope);
    let reader = narrowed(Some("tasks:read todos:write"));
    assert_eq!(
        t.request("GET", "/tasks", Some(&reader), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        t.request("GET", &path, Some(&reader), None).await.status(),
        200
    );
    for (method, target, body) in [
        ("POST", "/tasks", Some(json!({"title": "x"}))),
        ("PUT", path.as_str(), Some(json!({"title": "x"}))),
        ("PATCH", path.as_str(), Some(json!({"done": true}))),
        ("DELETE", path.as_str(), None),
    ] {
        let res = t.request(method, target, Some(&reader), body).await;
        auth_core::service::testing::assert_needs_scope(res, "tasks:write").await;
    }
    let writer = narrowed(Some("tasks:write"));
    assert_eq!(
        t.request("GET", "/tasks", Some(&writer), None)
            .await
            .status(),
        403
    );
    let roles_only = narrowed(None);
    assert_eq!(
        t.request("DELETE", &path, Some(&roles_only), None)
            .await
            .status(),
        204
    );
}

/// An admin token without a `sub` may list by an explicit `owner`, but its own tasks (the
/// default) are nobody's: a 400 naming `owner`, not every user's tasks. It creates nothing.
#[tokio::test]
async fn an_admin_without_a_subject_must_name_the_owner() {
    let t = spawn_app().await;
    let alice = t.token("alice", &["user"]);
    t.create(&alice, json!({"title": "alice's"})).await;
    let admin = t
        .issuer
        .builder("tasks-api")
        .without_claim("sub")
        .claim("roles", json!(["admin"]))
        .sign();
    // Creating: no field names an owner, so the token is at fault (401), as for anyone.
    let res = t
        .request("POST", "/tasks", Some(&admin), Some(json!({"title": "x"})))
        .await;
    testing::assert_invalid_token(res, "POST /tasks").await;
    let (status, err) = parts(t.request("GET", "/tasks", Some(&admin), None).await).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"].as_str().unwrap().starts_with("owner:"),
        "{err}"
    );
    for q in ["?owner=*", "?owner=alice"] {
        let (status, page) = parts(
            t.request("GET", &format!("/tasks{q}"), Some(&admin), None)
                .await,
        )
        .await;
        assert_eq!(
            (status, page["items"].as_array().unwrap().len()),
            (200, 1),
            "{q}"
        );
    }
    // An empty owner names nobody: a 400, not a silently empty page.
    let (status, err) = parts(t.request("GET", "/tasks?owner=", Some(&admin), None).await).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_request")),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().starts_with("owner:"),
        "{err}"
    );
}

#[tokio::test]
async fn filters_and_validation() {
    let t = spawn_app().await;
    let alice = t.token("alice", &["user"]);
    t.create(
        &alice,
        json!({"title": "soon", "due": "2026-01-01T00:00:00Z"}),
    )
    .await;
    t.create(
        &alice,
        json!({"title": "later", "due": "2031-01-01T00:00:00Z", "done": true}),
    )
    .await;
    t.create(&alice, json!({"title": "whenever"})).await;
    let found = listed(&t, &alice, "?due_before=2027-01-01T00:00:00Z").await;
    assert_eq!(found.len(), 1);
    // Dues are whole seconds: a bound with a fraction is rounded up, not down past them.
    let found = listed(&t, &alice, "?due_before=2026-01-01T00:00:00.5Z").await;
    assert_eq!(found.len(), 1, "due at 00:00:00 is before 00:00:00.5");
    let found = listed(&t, &alice, "?due_before=2026-01-01T00:00:00Z").await;
    assert_eq!(found.len(), 0);
    let found = listed(&t, &alice, "?done=true").await;
    assert_eq!(found.len(), 1);
    for q in [
        "?due_before=tomorrow",
        "?done=maybe",
        "?limit=0",
        "?limit=101",
        "?cursor=nope",
        "?colour=red",
        "?limit=5&limit=100",
        "?done=true&done=false",
    ] {
        let (status, _, body) = ids(&t, &alice, q).await;
        assert_eq!(status, 400, "{q}: {body}");
    }
    for (body, field) in [
        (json!({"title": ""}), "title"),
        (json!({"title": "x".repeat(201)}), "title"),
        (json!({"title": "x", "due": "next week"}), "due"),
        (
            json!({"title": "x", "description": "d".repeat(2001)}),
            "description",
        ),
        (json!({"title": "x", "done": 1}), "done"),
        (json!({"title": "x", "priority": 1}), "priority"),
    ] {
        let (status, err) = parts(
            t.request("POST", "/tasks", Some(&alice), Some(body.clone()))
                .await,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            err["message"].as_str().unwrap().contains(field),
            "{body}: {err}"
        );
    }
    assert_eq!(
        t.request("PUT", "/tasks", Some(&alice), None)
            .await
            .status(),
        405
    );
    assert_eq!(
        t.request("GET", "/task", Some(&alice), None).await.status(),
        404
    );
    let big = json!({"title": "x".repeat(33 * 1024)});
    assert_eq!(
        t.request("POST", "/tasks", Some(&alice), Some(big))
            .await
            .status(),
        413
    );
    // The longest task the fields allow, written as a client may write it: every character a
    // `\uXXXX` escape, an emoji two of them (Python's `json.dumps` does so by default). The
    // limit in bytes must not refuse what the limits in characters accept.
    let escaped = |n: usize| "\\ud83d\\ude00".repeat(n);
    let body = format!(
        r#"{{"title":"{}","description":"{}","due":"2030-01-01T00:00:00Z","done":false}}"#,
        escaped(200),
        escaped(2000)
    );
    let res = t
        .app
        .client
        .post(format!("{}/tasks", t.app.address))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, task) = parts(res).await;
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["description"].as_str().unwrap().chars().count(), 2000);
}

async fn odd_text_round_trips(t: &TestApp) {
    let alice = t.token("alice", &["user"]);
    let long = "ü".repeat(2000);
    for (title, description) in [
        (
            "it's \"quoted\" -- ; DROP TABLE tasks; --",
            "'; DELETE FROM tasks WHERE '1'='1",
        ),
        (
            "\\x00 \\u0000 %00 \u{7f}\u{1b}[31m",
            "\u{FEFF}\u{202E}right-to-left\u{200B}",
        ),
        ("\u{1F600}\u{1F9D1}\u{200D}\u{1F4BB}", long.as_str()),
        (
            "\u{FFFD}\u{FFFD} looks like broken UTF-8 \u{D7FF}",
            "back\\slash \\\\ and $1 $2 ? ?",
        ),
        // A description is kept as sent, its indentation and blank lines too.
        ("code", "\n    fn main() {}\n\n  "),
        ("blank", "   "),
    ] {
        let task = t
            .create(&alice, json!({"title": title, "description": description}))
            .await;
        let (status, got) = parts(
            t.request("GET", &format!("/tasks/{}", task["id"]), Some(&alice), None)
                .await,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            (got["title"].as_str(), got["description"].as_str()),
            (Some(title), Some(description))
        );
    }
    let (status, err) = parts(
        t.request(
            "POST",
            "/tasks",
            Some(&alice),
            Some(json!({"title": "a\u{0}b"})),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["message"].as_str()),
        (400, Some("title: must not contain NUL characters"))
    );
    // An admin's `owner` filter reaches the query: on PostgreSQL a NUL failed it (a 500).
    let admin = t.token("root", &["admin"]);
    let (status, _, err) = ids(t, &admin, "?owner=al%00ice").await;
    assert_eq!(
        (status, err["message"].as_str()),
        (400, Some("owner: must not contain NUL characters")),
        "{err}"
    );
    let (status, _, err) = ids(t, &admin, "?owner=alice").await;
    assert_eq!(status, 200, "{err}");
    // A token whose `sub` holds a NUL owns nothing anywhere: a 401, not a failed query (a 500
    // on PostgreSQL), an admin's too.
    // Nor does one longer than OpenID Connect allows (255 bytes), which PostgreSQL's index on
    // the owner refused (a 500) where SQLite stored it.
    let long = "s".repeat(256);
    for roles in [["user"], ["admin"]] {
        for sub in ["al\u{0}ice", &long] {
            let bad = t.token(sub, &roles);
            for (method, body) in [("GET", None), ("POST", Some(json!({"title": "x"})))] {
                let res = t.request(method, "/tasks", Some(&bad), body).await;
                testing::assert_invalid_token(res, &format!("{roles:?} {method}")).await;
            }
        }
    }
    let longest = t.token(&long[..255], &["user"]);
    let (status, err) = parts(
        t.request(
            "POST",
            "/tasks",
            Some(&longest),
            Some(json!({"title": "x"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{err}");
}

#[tokio::test]
async fn odd_text_round_trips_on_sqlite() {
    odd_text_round_trips(&spawn_app().await).await;
}

#[tokio::test]
async fn odd_text_round_trips_on_postgres() {
    let Some(url) = auth_core::service::storage::test_postgres_url("tasks-api odd text").await
    else {
        return;
    };
    odd_text_round_trips(&spawn_on(Some(url)).await).await;
}
