//! The warp filters, through `warp::test`, answered by the shared rejection handler.

use std::sync::Arc;

use auth_core::caller::CallerSlot;
use auth_core::filters::{
    optional_auth, with_access, with_all_roles, with_any_role, with_any_scope, with_auth,
    with_role, with_scope, within_scope,
};
use auth_core::{Auth, AuthSettings, Claims, handle_rejection};
use serde_json::json;
use testkit::{keys, mint};
use warp::Filter;
use warp::http::StatusCode;

use crate::helpers::*;

fn ec_auth() -> Auth {
    auth(&pem_settings("ec-public.pem"))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn status<F>(filter: &F, auth_header: Option<&str>, path: &str) -> StatusCode
where
    F: Filter<Extract = (Arc<Claims>,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
{
    let route = filter
        .clone()
        .map(|c: Arc<Claims>| c.subject().to_owned())
        .recover(handle_rejection);
    let mut req = warp::test::request().path(path);
    if let Some(h) = auth_header {
        req = req.header("authorization", h);
    }
    req.reply(&route).await.status()
}

#[tokio::test]
async fn with_auth_requires_a_valid_bearer_token() {
    let auth = ec_auth();
    let f = with_auth(&auth);
    let t = mint(&keys::ec()).sign();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(
            status(&f, Some(&format!("{scheme} {t}")), "/").await,
            StatusCode::OK,
            "{scheme}"
        );
    }
    assert_eq!(status(&f, None, "/").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(&f, Some(&format!("Basic {t}")), "/").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&f, Some(&format!("Token {t}")), "/").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&f, Some(&t), "/").await,
        StatusCode::UNAUTHORIZED,
        "no scheme"
    );
    assert_eq!(
        status(&f, Some("Bearer"), "/").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&f, Some("Bearer garbage"), "/").await,
        StatusCode::UNAUTHORIZED
    );
    let res = warp::test::request()
        .header(
            "authorization",
            warp::http::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .reply(
            &f.clone()
                .map(|c: Arc<Claims>| c.subject().to_owned())
                .recover(handle_rejection),
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "non-UTF-8 header is a 401, not a 400"
    );
}

#[tokio::test]
async fn handler_receives_the_claims_and_the_access_log_the_sub() {
    let auth = ec_auth();
    let route = with_auth(&auth).map(|c: Arc<Claims>| warp::reply::json(&*c));
    let slot = CallerSlot::default();
    let res = warp::test::request()
        .header("authorization", bearer(&mint(&keys::ec()).sign()))
        .extension(slot.clone())
        .reply(&route)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["roles"], json!(["user"]));
    assert_eq!(slot.get(), Some("alice"));
}

#[tokio::test]
async fn roles_and_scopes() {
    let auth = ec_auth();
    let user = bearer(
        &mint(&keys::ec())
            .claim("roles", json!(["user", "editor"]))
            .claim("scope", "read:todos")
            .sign(),
    );
    let admin = bearer(
        &mint(&keys::ec())
            .claim("roles", json!(["admin"]))
            .claim("scope", "read:todos write:todos")
            .sign(),
    );
    type Case<'a> = (
        warp::filters::BoxedFilter<(Arc<Claims>,)>,
        &'a str,
        StatusCode,
    );
    let cases: Vec<Case> = vec![
        (
            with_role(&auth, "admin").boxed(),
            &user,
            StatusCode::FORBIDDEN,
        ),
        (with_role(&auth, "admin").boxed(), &admin, StatusCode::OK),
        (
            with_any_role(&auth, &["admin", "editor"]).boxed(),
            &user,
            StatusCode::OK,
        ),
        (
            with_any_role(&auth, &["admin", "root"]).boxed(),
            &user,
            StatusCode::FORBIDDEN,
        ),
        (
            with_all_roles(&auth, &["user", "editor"]).boxed(),
            &user,
            StatusCode::OK,
        ),
        (
            with_all_roles(&auth, &["user", "admin"]).boxed(),
            &user,
            StatusCode::FORBIDDEN,
        ),
        (
            with_scope(&auth, "write:todos").boxed(),
            &admin,
            StatusCode::OK,
        ),
        (
            with_scope(&auth, "write:todos").boxed(),
            &user,
            StatusCode::FORBIDDEN,
        ),
        (
            with_scope(&auth, "write").boxed(),
            &admin,
            StatusCode::FORBIDDEN,
        ),
        (
            with_any_scope(&auth, &["write:todos", "read:todos"]).boxed(),
            &user,
            StatusCode::OK,
        ),
    ];
    for (i, (filter, header, want)) in cases.into_iter().enumerate() {
        assert_eq!(status(&filter, Some(header), "/").await, want, "case {i}");
    }
    // A bad token is a 401 before any role check.
    assert_eq!(
        status(&with_role(&auth, "admin"), None, "/").await,
        StatusCode::UNAUTHORIZED
    );
}

/// A token that carries `scope` is held to it on top of the route's role rule; one without the
/// claim is judged by the role rule alone.
#[tokio::test]
async fn within_scope_narrows_a_token_that_carries_scopes() {
    let auth = ec_auth();
    let admin = |scope: Option<&str>| {
        let builder = mint(&keys::ec()).claim("roles", json!(["admin"]));
        let builder = match scope {
            Some(scope) => builder.claim("scope", scope),
            None => builder.without_claim("scope"),
        };
        bearer(&builder.sign())
    };
    let route = || within_scope(&auth, "users:admin", with_role(&auth, "admin"));
    let message = |header: String| {
        let route = route()
            .map(|c: Arc<Claims>| c.subject().to_owned())
            .recover(handle_rejection);
        async move {
            let res = warp::test::request()
                .header("authorization", header)
                .reply(&route)
                .await;
            let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
            (
                res.status(),
                body["message"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    for (header, want) in [
        (admin(None), StatusCode::OK),
        (admin(Some("todos:read users:admin")), StatusCode::OK),
        (admin(Some("todos:read")), StatusCode::FORBIDDEN),
        (admin(Some("")), StatusCode::FORBIDDEN),
        (
            bearer(
                &mint(&keys::ec())
                    .claim("roles", json!(["admin"]))
                    .claim("scope", serde_json::Value::Null)
                    .sign(),
            ),
            StatusCode::FORBIDDEN,
        ),
        (admin(Some("users:admin:x")), StatusCode::FORBIDDEN),
    ] {
        assert_eq!(status(&route(), Some(&header), "/").await, want, "{header}");
    }
    let (status_code, text) = message(admin(Some("todos:read"))).await;
    assert_eq!(status_code, StatusCode::FORBIDDEN);
    assert!(text.contains("requires scope users:admin"), "{text}");
    // The challenge names the scope (RFC 6750 §3), so a client knows what to ask for.
    let res = warp::test::request()
        .header("authorization", admin(Some("todos:read")))
        .reply(&route().map(|_: Arc<Claims>| "ok").recover(handle_rejection))
        .await;
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"todo-api\", error=\"insufficient_scope\", error_description=\"requires scope users:admin\", scope=\"users:admin\""
    );
    // The role rule answers first: a user's token with the scope still lacks the role.
    let user = bearer(
        &mint(&keys::ec())
            .claim("roles", json!(["user"]))
            .claim("scope", "users:admin")
            .sign(),
    );
    let (status_code, text) = message(user).await;
    assert_eq!(status_code, StatusCode::FORBIDDEN);
    assert!(text.contains("requires role admin"), "{text}");
    assert_eq!(status(&route(), None, "/").await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn optional_auth_is_none_without_a_header_and_401_with_a_bad_one() {
    let auth = ec_auth();
    let route = optional_auth(&auth)
        .map(|c: Option<Arc<Claims>>| c.map_or("anonymous".to_owned(), |c| c.subject().to_owned()))
        .recover(handle_rejection);
    let res = warp::test::request().reply(&route).await;
    assert_eq!(
        (res.status(), res.body().as_ref()),
        (StatusCode::OK, b"anonymous".as_ref())
    );
    let res = warp::test::request()
        .header("authorization", bearer(&mint(&keys::ec()).sign()))
        .reply(&route)
        .await;
    assert_eq!(
        (res.status(), res.body().as_ref()),
        (StatusCode::OK, b"alice".as_ref())
    );
    for bad in [
        "Bearer nope".to_owned(),
        bearer(&mint(&keys::ec()).claim("exp", 1).sign()),
        "Basic YTpi".to_owned(),
    ] {
        let res = warp::test::request()
            .header("authorization", &bad)
            .reply(&route)
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
}

#[tokio::test]
async fn with_access_compares_normalised_paths() {
    let auth = ec_auth();
    let f = with_access(&auth);
    let h = bearer(
        &mint(&keys::ec())
            .claim("access", json!(["/todos/*", "/lists"]))
            .sign(),
    );
    for (path, want) in [
        ("/todos/7", StatusCode::OK),
        ("/todos/7/items?x=1", StatusCode::OK),
        ("/todos/7/", StatusCode::OK),
        ("/lists", StatusCode::OK),
        ("/lists/", StatusCode::OK),
        ("/lists?page=2", StatusCode::OK),
        // Never resolved: warp routes these as written, so no grant covers them.
        ("//todos//7", StatusCode::FORBIDDEN),
        ("/admin/../lists", StatusCode::FORBIDDEN),
        ("/todos/%2e", StatusCode::FORBIDDEN),
        ("/todos/./7", StatusCode::FORBIDDEN),
        ("/todos", StatusCode::FORBIDDEN),
        ("/todos-admin", StatusCode::FORBIDDEN),
        ("/todos/../admin", StatusCode::FORBIDDEN),
        ("/todos/%2e%2e/admin", StatusCode::FORBIDDEN),
        ("/lists/1", StatusCode::FORBIDDEN),
        ("/", StatusCode::FORBIDDEN),
    ] {
        assert_eq!(status(&f, Some(&h), path).await, want, "{path}");
    }
    let none = bearer(&mint(&keys::ec()).sign());
    assert_eq!(
        status(&f, Some(&none), "/todos/7").await,
        StatusCode::FORBIDDEN,
        "no access claim"
    );
}

#[tokio::test]
async fn require_access_makes_every_filter_check_the_path() {
    let auth = auth(&AuthSettings {
        require_access: true,
        ..pem_settings("ec-public.pem")
    });
    let granted = bearer(
        &mint(&keys::ec())
            .claim("access", json!(["/todos/*"]))
            .sign(),
    );
    assert_eq!(
        status(&with_auth(&auth), Some(&granted), "/todos/1").await,
        StatusCode::OK
    );
    assert_eq!(
        status(&with_auth(&auth), Some(&granted), "/tasks/1").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&with_role(&auth, "user"), Some(&granted), "/tasks/1").await,
        StatusCode::FORBIDDEN
    );
}
