//! Verification-off mode (`auth.enabled = false`): a token is still required and decoded, but
//! neither signature nor time is checked.

use std::sync::Arc;

use auth_core::filters::with_role;
use auth_core::{AuthErrorKind, AuthSettings, Claims, handle_rejection};
use serde_json::json;
use testkit::{keys, token};
use warp::Filter;

use crate::helpers::*;

fn off() -> AuthSettings {
    AuthSettings {
        enabled: false,
        ..settings()
    }
}

#[tokio::test]
async fn unsigned_expired_token_is_decoded() {
    let auth = auth(&off());
    assert!(auth.is_verification_off());
    assert!(auth.is_ready());
    let t = token("none")
        .claim("exp", 1)
        .claim("roles", json!(["admin"]))
        .with_signature(b"");
    let claims = auth.verify(&t).await.unwrap();
    assert!(claims.has_role("admin"));
    let signed_elsewhere = token("RS256")
        .claim("iss", "whoever")
        .sign_with(&keys::rsa());
    assert!(auth.verify(&signed_elsewhere).await.is_ok());
    assert!(
        auth.verify(&token("none").signing_input()).await.is_ok(),
        "two parts"
    );
}

#[tokio::test]
async fn a_token_is_still_required_and_must_decode() {
    let auth = auth(&off());
    for garbage in ["", "garbage", "a.b.c", "a.b.c.d", "....", "eyJ9.eyJ9.x"] {
        assert!(
            matches!(denied(&auth, garbage).await, AuthErrorKind::Malformed(_)),
            "{garbage:?}"
        );
    }
    let route = with_role(&auth, "admin")
        .map(|c: Arc<Claims>| c.subject().to_owned())
        .recover(handle_rejection);
    assert_eq!(warp::test::request().reply(&route).await.status(), 401);
    let user = token("none").with_signature(b"");
    let res = warp::test::request()
        .header("authorization", format!("Bearer {user}"))
        .reply(&route)
        .await;
    assert_eq!(res.status(), 403, "role checks still apply");
    let too_large = format!("{}.{}.", "e".repeat(9000), "e");
    assert_eq!(denied(&auth, &too_large).await, AuthErrorKind::TooLarge);
}

#[test]
fn no_key_source_is_needed() {
    assert!(auth_core::Auth::new(&off(), REALM).is_ok());
}
