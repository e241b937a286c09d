//! What a caller sees: RFC 6750 status, `WWW-Authenticate`, `Retry-After` and the JSON body.

use std::sync::Arc;

use auth_core::filters::{with_auth, with_role};
use auth_core::{AuthSettings, Claims, handle_rejection};
use serde_json::{Value, json};
use testkit::{MockIssuer, keys, mint};
use warp::Filter;

use crate::helpers::*;

async fn reply<F>(filter: F, header: Option<String>) -> (u16, Option<String>, Option<String>, Value)
where
    F: Filter<Extract = (Arc<Claims>,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
{
    let route = filter
        .map(|c: Arc<Claims>| c.subject().to_owned())
        .recover(handle_rejection);
    let mut req = warp::test::request().path("/todos");
    if let Some(h) = header {
        req = req.header("authorization", h);
    }
    let res = req.reply(&route).await;
    let h = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let body = serde_json::from_slice(res.body()).unwrap_or(Value::Null);
    (
        res.status().as_u16(),
        h("www-authenticate"),
        h("retry-after"),
        body,
    )
}

#[tokio::test]
async fn missing_token_is_401_with_the_realm_only() {
    let auth = auth(&pem_settings("ec-public.pem"));
    let (status, challenge, _, body) = reply(with_auth(&auth), None).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="todo-api""#));
    assert_eq!(
        body,
        json!({"status": 401, "error": "missing_token", "message": "missing token"})
    );
}

#[tokio::test]
async fn invalid_tokens_are_401_invalid_token() {
    let auth = auth(&pem_settings("ec-public.pem"));
    let cases = [
        (mint(&keys::ec()).claim("exp", 1).sign(), "token expired"),
        (
            mint(&keys::ec()).with_signature(&[0; 64]),
            "invalid signature",
        ),
        (
            mint(&keys::ec()).claim("iss", "https://evil.test").sign(),
            "token issuer not accepted",
        ),
        (
            mint(&keys::ec()).claim("aud", "other").sign(),
            "token audience not accepted",
        ),
        (
            mint(&keys::ec()).claim("nbf", testkit::NOW + 3600).sign(),
            "token not yet valid",
        ),
        (
            mint(&keys::ec()).header_field("typ", "JOSE").sign(),
            "token type not accepted",
        ),
        (
            mint(&keys::ec()).header_field("crit", json!(["x"])).sign(),
            "unsupported critical header parameter",
        ),
        (
            testkit::token("none").with_signature(b""),
            "token algorithm not accepted",
        ),
        ("garbage".to_owned(), "malformed token"),
    ];
    for (token, message) in cases {
        let (status, challenge, retry, body) =
            reply(with_auth(&auth), Some(format!("Bearer {token}"))).await;
        assert_eq!(status, 401, "{message}");
        assert_eq!(
            challenge.as_deref(),
            Some(format!(r#"Bearer realm="todo-api", error="invalid_token", error_description="{message}""#).as_str())
        );
        assert_eq!(retry, None);
        assert_eq!(
            body,
            json!({"status": 401, "error": "invalid_token", "message": message})
        );
    }
}

#[tokio::test]
async fn missing_role_is_403_insufficient_scope() {
    let auth = auth(&pem_settings("ec-public.pem"));
    let t = mint(&keys::ec()).sign();
    let (status, challenge, _, body) =
        reply(with_role(&auth, "admin"), Some(format!("Bearer {t}"))).await;
    assert_eq!(status, 403);
    assert_eq!(
        challenge.as_deref(),
        Some(
            r#"Bearer realm="todo-api", error="insufficient_scope", error_description="requires role admin""#
        )
    );
    assert_eq!(
        body,
        json!({"status": 403, "error": "insufficient_scope", "message": "requires role admin"})
    );
}

#[tokio::test]
async fn no_keys_is_503_with_retry_after() {
    let mut issuer = MockIssuer::start().await;
    let _down = issuer
        .server
        .mock("GET", "/jwks.json")
        .with_status(502)
        .create_async()
        .await;
    let auth = auth(&jwks_settings(&issuer));
    let t = mint(&keys::ec()).sign();
    let (status, challenge, retry, body) =
        reply(with_auth(&auth), Some(format!("Bearer {t}"))).await;
    assert_eq!(status, 503);
    assert_eq!(challenge, None);
    // The key store backs off 1 s after its first failed fetch (auth.jwks.backoff_initial_seconds).
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(
        body,
        json!({"status": 503, "error": "temporarily_unavailable", "message": "verification keys unavailable"})
    );
}

#[tokio::test]
async fn realm_is_quoted_safely() {
    let auth = auth_core::Auth::with_clock(&pem_settings("ec-public.pem"), "my \"api\"\n", clock())
        .unwrap();
    let (_, challenge, _, _) = reply(with_auth(&auth), None).await;
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="my \"api\"""#));
    let _ = AuthSettings::default();
}
