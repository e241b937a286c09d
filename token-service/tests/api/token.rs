use std::sync::Arc;
use std::sync::atomic::Ordering;

use auth_core::settings::AuthSettings;
use auth_core::{Auth, Claims};
use serde_json::{Value, json};

use crate::helpers::{decode, spawn_app, spawn_with};

#[tokio::test]
async fn every_fixture_user_signs_in_with_a_form_and_with_json() {
    let t = spawn_app().await;
    for (user, role) in [("alice", "user"), ("bob", "user"), ("admin", "admin")] {
        let password = format!("{user}-dev-password");
        let form = t
            .form(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", &password),
            ])
            .await;
        let json = t
            .json(json!({"username": user, "password": password}))
            .await;
        for res in [form, json] {
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["cache-control"], "no-store");
            assert_eq!(res.headers()["pragma"], "no-cache");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["token_type"], "Bearer");
            assert_eq!(body["expires_in"], 900);
            assert!(body["scope"].as_str().unwrap().contains("todos:read"));
            let (header, claims) = decode(body["access_token"].as_str().unwrap());
            assert_eq!(header["typ"], "at+jwt");
            assert_eq!(header["alg"], "ES256");
            assert!(header["kid"].is_string());
            assert_eq!(claims["iss"], "http://127.0.0.1:4000");
            assert_eq!(claims["username"], user);
            assert_eq!(claims["roles"], json!([role]));
            assert_eq!(claims["client_id"], "default");
            assert_eq!(claims["scope"], body["scope"]);
            assert!(claims["sub"].is_string() && claims["jti"].is_string());
            assert_eq!(
                claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
                900
            );
            assert_eq!(claims["nbf"], claims["iat"]);
            let aud = claims["aud"].as_array().unwrap();
            assert!(aud.contains(&json!("todo-api")) && aud.contains(&json!("tasks-api")));
            assert_eq!(aud.contains(&json!("token-service")), role == "admin");
        }
    }
}

#[tokio::test]
async fn tokens_verify_with_auth_core_against_the_published_jwks() {
    let t = spawn_app().await;
    let token = t.token("alice", &[("client_id", "my-cli")]).await;
    let auth = Auth::new(
        &AuthSettings {
            issuer: Some("http://127.0.0.1:4000".into()),
            audience: vec!["todo-api".into()],
            jwks_url: Some(t.url("/.well-known/jwks.json")),
            require_at_jwt: true,
            ..AuthSettings::default()
        },
        "todo-api",
    )
    .unwrap();
    let claims: std::sync::Arc<Claims> = auth.verify(&token).await.expect("verifies");
    assert_eq!(claims.username.as_deref(), Some("alice"));
    assert_eq!(claims.client_id.as_deref(), Some("my-cli"));
    assert!(
        claims.extra.is_empty(),
        "every claim token-service issues is typed"
    );
}

#[tokio::test]
async fn unknown_user_bad_password_and_disabled_user_get_the_same_body() {
    let t = spawn_app().await;
    let admin = t.token("admin", &[]).await;
    let bob_id = {
        let users: Value = t.get_auth("/users", &admin).await.json().await.unwrap();
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "bob")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let res = t
        .app
        .client
        .delete(t.url(&format!("/users/{bob_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);

    let mut bodies = Vec::new();
    for (user, password) in [
        ("nobody", "whatever-password"),
        ("alice", "wrong-password!!"),
        ("bob", "bob-dev-password"),
    ] {
        let res = t.form(&[("username", user), ("password", password)]).await;
        assert_eq!(res.status(), 401, "{user}");
        assert_eq!(res.headers()["cache-control"], "no-store");
        bodies.push(res.bytes().await.unwrap());
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[1], bodies[2]);
    let body: Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn an_unknown_user_still_costs_a_password_verification() {
    let t = spawn_app().await;
    let before = t.hasher.verifies.load(Ordering::SeqCst);
    let res = t
        .form(&[("username", "nobody"), ("password", "some-long-password")])
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(t.hasher.verifies.load(Ordering::SeqCst), before + 1);
}

/// After `users.argon2_*` change, an account made before keeps a hash with the old cost until
/// its user signs in: then it is rehashed with the current parameters (once), so its sign-ins
/// cost what an unknown user's dummy verification costs. A wrong password rehashes nothing.
#[tokio::test]
async fn a_sign_in_rehashes_a_password_made_with_other_parameters() {
    use token_service::passwords::{Argon2id, Hasher};
    let t = spawn_app().await;
    let older = Argon2id::new(&token_service::settings::UsersSettings {
        argon2_memory_kib: 8192,
        argon2_iterations: 1,
        ..Default::default()
    })
    .unwrap();
    let old_hash = older.hash(b"carol-old-params-pw").unwrap();
    t.state
        .users
        .create("carol", &old_hash, &["user".into()], &[])
        .await
        .unwrap();
    let stored = || async {
        t.state
            .users
            .by_username("carol")
            .await
            .unwrap()
            .unwrap()
            .password_hash
    };

    let res = t
        .form(&[("username", "carol"), ("password", "wrong-password-123")])
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(stored().await, old_hash, "a failed sign-in changes nothing");

    let res = t
        .form(&[("username", "carol"), ("password", "carol-old-params-pw")])
        .await;
    assert_eq!(res.status(), 200);
    let fresh = stored().await;
    assert!(fresh.contains("m=19456,t=2,p=1"), "{fresh}");
    assert!(!t.state.passwords.outdated(&fresh));
    let res = t
        .form(&[("username", "carol"), ("password", "carol-old-params-pw")])
        .await;
    assert_eq!(res.status(), 200, "the new hash verifies");
    assert_eq!(stored().await, fresh, "rehashed once");
}

/// The database gone (here: its pool closed) is an outage the client may retry, 503 with
/// `Retry-After`, on sign-in and on the user routes, as on the other services; it was a 500.
#[tokio::test]
async fn the_database_unavailable_is_503_with_retry_after() {
    let t = spawn_app().await;
    let admin = t.token("admin", &[]).await;
    t.app.db.as_ref().expect("a database").close().await;
    let sign_in = t
        .form(&[("username", "alice"), ("password", "alice-dev-password")])
        .await;
    let listing = t.get_auth("/users", &admin).await;
    for res in [sign_in, listing] {
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "5");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"], "temporarily_unavailable", "{err}");
    }
    // A sign-in the database could not answer checked no password: retried through the
    // outage, as `Retry-After` asks, it does not lock the user out.
    let max_failures = t.state.settings.throttle.max_failures;
    for _ in 0..max_failures {
        let res = t
            .form(&[("username", "alice"), ("password", "alice-dev-password")])
            .await;
        assert_eq!(res.status(), 503);
    }
    assert!(
        t.state.throttle.begin("alice", None).is_ok(),
        "503s counted as failed sign-ins"
    );
}

#[tokio::test]
async fn malformed_requests_are_invalid_request() {
    let t = spawn_app().await;
    let cases: Vec<(Option<&str>, &str, &str)> = vec![
        (None, "username=alice&password=x", "invalid_request"),
        (Some("text/plain"), "username=alice", "invalid_request"),
        (Some("application/json"), "{not json", "invalid_request"),
        (
            Some("application/json"),
            r#"{"username": 5, "password": "x"}"#,
            "invalid_request",
        ),
        // The fields in order, as an array: a sign-in that would succeed as an object.
        (
            Some("application/json"),
            r#"["password", "alice", "alice-dev-password", null, null, null, null]"#,
            "invalid_request",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "password=alice-dev-password",
            "invalid_request",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "username=alice",
            "invalid_request",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "username=alice&username=bob&password=alice-dev-password",
            "invalid_request",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "grant_type=client_credentials&username=alice&password=alice-dev-password",
            "unsupported_grant_type",
        ),
    ];
    for (ct, body, code) in cases {
        let mut req = t.app.client.post(t.url("/token")).body(body.to_owned());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let json: Value = res.json().await.unwrap();
        assert_eq!(json["error"], code, "{body}: {json}");
    }
    // A value named in an error is cut short (it was echoed whole, escaped: 5 000 control
    // bytes made a 35 KB message).
    let res = t
        .form(&[
            ("username", "alice"),
            ("password", "alice-dev-password"),
            ("audience", &"\u{1}".repeat(5_000)),
        ])
        .await;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"], "invalid_target", "{err}");
    assert!(err["message"].as_str().unwrap().len() < 1_000, "{err}");
    let long = "x".repeat(257);
    let res = t.form(&[("username", "alice"), ("password", &long)]).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("password"));
    // A password sent as a number is not echoed: the error names its kind, never its value.
    let res = t
        .app
        .client
        .post(t.url("/token"))
        .header("content-type", "application/json")
        .body(r#"{"username": "alice", "password": 123456789012}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    let message = err["message"].as_str().unwrap();
    assert!(!message.contains("123456789012"), "{err}");
    // Nor where it ended (serde_json's column would give its length).
    assert!(!message.contains("column"), "{err}");
    assert!(message.contains("invalid type: integer"), "{err}");
}

/// A NUL in the username is a 400 on both databases; on PostgreSQL, whose TEXT cannot hold
/// one, the lookup used to fail with a 500.
async fn a_nul_in_the_username_is_invalid_request(t: &crate::helpers::TestApp) {
    let form = t
        .app
        .client
        .post(t.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=al%00ice&password=alice-dev-password")
        .send()
        .await
        .unwrap();
    let json = t
        .json(json!({"username": "al\u{0}ice", "password": "alice-dev-password"}))
        .await;
    for res in [form, json] {
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{body}");
        assert_eq!(
            body["message"], "username: must not contain NUL characters",
            "{body}"
        );
    }
    // The user exists and still signs in.
    t.token("alice", &[]).await;
}

#[tokio::test]
async fn a_nul_in_the_username_is_invalid_request_on_sqlite() {
    a_nul_in_the_username_is_invalid_request(&spawn_app().await).await;
}

#[tokio::test]
async fn a_nul_in_the_username_is_invalid_request_on_postgres() {
    let Some(url) =
        auth_core::service::storage::test_postgres_url("token-service nul username").await
    else {
        return;
    };
    let t = spawn_with(|s| s.database.url = Some(url.into())).await;
    a_nul_in_the_username_is_invalid_request(&t).await;
}

#[tokio::test]
async fn scope_and_audience_requests() {
    let t = spawn_app().await;
    let token = t.token("alice", &[("scope", "todos:read")]).await;
    assert_eq!(decode(&token).1["scope"], "todos:read");

    let res = t
        .form(&[
            ("username", "alice"),
            ("password", "alice-dev-password"),
            ("scope", "users:admin"),
        ])
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_scope");
    let token = t
        .token("admin", &[("scope", "users:admin todos:read")])
        .await;
    assert_eq!(decode(&token).1["scope"], "users:admin todos:read");

    let token = t.token("alice", &[("audience", "tasks-api")]).await;
    assert_eq!(decode(&token).1["aud"], json!(["tasks-api"]));
    // Each audience and scope once, in the order asked, however often repeated.
    let token = t
        .token(
            "alice",
            &[
                ("audience", "todo-api tasks-api todo-api"),
                ("resource", "tasks-api"),
                ("scope", "todos:read todos:write todos:read"),
            ],
        )
        .await;
    assert_eq!(decode(&token).1["aud"], json!(["todo-api", "tasks-api"]));
    assert_eq!(decode(&token).1["scope"], "todos:read todos:write");
    let token = t.token("alice", &[("resource", "todo-api")]).await;
    assert_eq!(decode(&token).1["aud"], json!(["todo-api"]));
    let res = t
        .form(&[
            ("username", "alice"),
            ("password", "alice-dev-password"),
            ("audience", "billing-api"),
        ])
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid_target"
    );
}

/// Right credentials with a scope the user may not have are a 400 each time, never a step
/// towards the lock that wrong passwords earn.
#[tokio::test]
async fn a_refused_scope_with_the_right_password_does_not_lock_the_user() {
    let t = spawn_with(|s| s.throttle.max_failures = 3).await;
    for _ in 0..5 {
        let res = t
            .form(&[
                ("username", "alice"),
                ("password", "alice-dev-password"),
                ("scope", "users:admin"),
            ])
            .await;
        assert_eq!(res.status(), 400);
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_scope");
    }
    t.token("alice", &[]).await;
    // Wrong passwords still lock: the throttle is on.
    for _ in 0..3 {
        assert_eq!(fail(&t, "alice", "203.0.113.9").await.status(), 401);
    }
    assert_eq!(fail(&t, "alice", "203.0.113.10").await.status(), 429);
}

#[tokio::test]
async fn access_claim_when_configured_for_a_role() {
    let t = spawn_with(|s| {
        s.token
            .role_access
            .insert("user".into(), vec!["/todos/*".into()]);
    })
    .await;
    assert_eq!(
        decode(&t.token("alice", &[]).await).1["access"],
        json!(["/todos/*"])
    );
    assert!(
        decode(&t.token("admin", &[]).await)
            .1
            .get("access")
            .is_none()
    );
}

async fn fail(t: &crate::helpers::TestApp, user: &str, xff: &str) -> reqwest::Response {
    t.app
        .client
        .post(t.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-for", xff)
        .body(format!("username={user}&password=wrong-password-123"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn throttling_per_username_and_per_ip_independently() {
    let t = spawn_with(|s| {
        s.throttle.max_failures = 3;
        s.throttle.window_seconds = 60;
        // A range: the test client connects from 127.0.0.1.
        s.throttle.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    // alice is attacked from three addresses (through the trusted proxy).
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        assert_eq!(fail(&t, "alice", ip).await.status(), 401);
    }
    let res = fail(&t, "alice", "10.0.0.4").await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "60");
    // Even the right password waits.
    let res = t
        .app
        .client
        .post(t.url("/token"))
        .header("x-forwarded-for", "10.0.0.9")
        .form(&[("username", "alice"), ("password", "alice-dev-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    // bob, from another address, is unaffected.
    let res = t
        .app
        .client
        .post(t.url("/token"))
        .header("x-forwarded-for", "10.0.0.5")
        .form(&[("username", "bob"), ("password", "bob-dev-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // One address failing for many users is locked out for everyone.
    for user in ["u1", "u2", "u3"] {
        assert_eq!(fail(&t, user, "10.0.0.7").await.status(), 401);
    }
    assert_eq!(fail(&t, "u4", "10.0.0.7").await.status(), 429);
    // The window ends.
    t.clock.advance(60);
    assert_eq!(t.token("alice", &[]).await.split('.').count(), 3);
}

#[tokio::test]
async fn a_proxy_line_of_its_own_is_read_with_the_clients() {
    // The trusted proxy added its own X-Forwarded-For line after the client's forged one: the
    // address it vouches for is on the last line, and that is what is throttled.
    let t = spawn_with(|s| {
        s.throttle.max_failures = 2;
        s.throttle.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let fail_via_proxy = |user: &'static str, forged: &'static str| {
        t.app
            .client
            .post(t.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", forged)
            .header("x-forwarded-for", "10.0.0.50")
            .body(format!("username={user}&password=wrong-password-123"))
            .send()
    };
    assert_eq!(fail_via_proxy("u1", "6.6.6.1").await.unwrap().status(), 401);
    assert_eq!(fail_via_proxy("u2", "6.6.6.2").await.unwrap().status(), 401);
    assert_eq!(fail_via_proxy("u3", "6.6.6.3").await.unwrap().status(), 429);
    // What was locked is 10.0.0.50, not the proxy: another client behind it, with its own
    // line appended the same way, signs in.
    let res = t
        .app
        .client
        .post(t.url("/token"))
        .header("x-forwarded-for", "6.6.6.4")
        .header("x-forwarded-for", "10.0.0.51")
        .form(&[("username", "bob"), ("password", "bob-dev-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// A client's non-ASCII bytes on the line its proxy appends to cost that hop only: the address
/// the proxy vouches for is still what is throttled, not the proxy's own.
#[tokio::test]
async fn non_ascii_in_the_clients_forwarded_for_stays_the_clients() {
    let t = spawn_with(|s| {
        s.throttle.max_failures = 2;
        s.throttle.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let line = |client: &str| {
        let mut bytes = b"\xc3\xa9, ".to_vec();
        bytes.extend_from_slice(client.as_bytes());
        reqwest::header::HeaderValue::from_bytes(&bytes).unwrap()
    };
    let sign_in = |user: &'static str, password: &'static str, client: &str| {
        t.app
            .client
            .post(t.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", line(client))
            .body(format!("username={user}&password={password}"))
            .send()
    };
    for user in ["u1", "u2"] {
        let res = sign_in(user, "wrong-password-123", "10.0.0.50")
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    // 10.0.0.50 is locked; another client behind the same proxy is not.
    let res = sign_in("u3", "wrong-password-123", "10.0.0.50")
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let res = sign_in("bob", "bob-dev-password", "10.0.0.51")
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let t = spawn_with(|s| s.throttle.max_failures = 2).await;
    assert_eq!(fail(&t, "u1", "10.0.0.1").await.status(), 401);
    assert_eq!(fail(&t, "u2", "10.0.0.2").await.status(), 401);
    // The peer (127.0.0.1) is what counted, whatever the header said.
    assert_eq!(fail(&t, "u3", "10.0.0.3").await.status(), 429);
}

#[tokio::test]
async fn throttle_memory_is_bounded() {
    let t = spawn_with(|s| {
        s.throttle.max_entries = 5;
        s.throttle.max_failures = 100;
    })
    .await;
    for i in 0..12 {
        t.clock.advance(1);
        let res = t
            .form(&[
                ("username", &format!("user{i}")),
                ("password", "wrong-password-123"),
            ])
            .await;
        assert_eq!(res.status(), 401);
    }
    assert_eq!(t.state.throttle.len(), (5, 1));
    let _ = Arc::clone(&t.state.throttle);
}
