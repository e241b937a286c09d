//! Time, issuer and audience rules, on tokens whose signature is valid.

use auth_core::{AuthErrorKind, AuthSettings};
use serde_json::json;
use testkit::{NOW, keys, mint};

use crate::helpers::*;

fn ec_auth(settings: AuthSettings) -> auth_core::Auth {
    auth(&AuthSettings {
        public_key: pem_settings("ec-public.pem").public_key,
        ..settings
    })
}

#[tokio::test]
async fn valid_token_yields_its_claims() {
    let auth = ec_auth(settings());
    let claims = auth
        .verify(&mint(&keys::ec()).claim("tenant", "t9").sign())
        .await
        .unwrap();
    assert_eq!(claims.subject(), "alice");
    assert_eq!(claims.roles, vec!["user"]);
    assert_eq!(claims.exp, Some(NOW + 600));
    assert_eq!(claims.extra["tenant"], "t9");
}

#[tokio::test]
async fn exp_is_required_and_must_be_a_number() {
    let auth = ec_auth(settings());
    let t = mint(&keys::ec()).without_claim("exp").sign();
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::MissingExp);
    for exp in [
        json!("9999999999"),
        json!(null),
        json!(true),
        json!(-1),
        json!([NOW + 600]),
    ] {
        let t = mint(&keys::ec()).claim("exp", exp.clone()).sign();
        let kind = denied(&auth, &t).await;
        assert!(
            matches!(
                kind,
                AuthErrorKind::Malformed(_) | AuthErrorKind::MissingExp
            ),
            "{exp}: {kind:?}"
        );
    }
}

/// RFC 7519 §2: a NumericDate may have a fraction (PyJWT writes `time.time()` as it is). Read
/// as whole seconds on the stricter side: `exp` down, `nbf` and `iat` up.
#[tokio::test]
async fn numeric_dates_with_a_fraction_are_read_on_the_stricter_side() {
    let clock = clock();
    let strict = auth_with(
        &AuthSettings {
            leeway_seconds: 0,
            ..pem_settings("ec-public.pem")
        },
        &clock,
    );
    let t = mint(&keys::ec())
        .claim("exp", json!(NOW as f64 + 600.5))
        .claim("iat", json!(NOW as f64 - 0.25))
        .claim("nbf", json!(NOW as f64 - 0.75))
        .sign();
    let claims = strict.verify(&t).await.unwrap();
    assert_eq!(
        (claims.exp, claims.iat, claims.nbf),
        (Some(NOW + 600), Some(NOW), Some(NOW))
    );
    clock.set(NOW + 600);
    assert_eq!(denied(&strict, &t).await, AuthErrorKind::Expired);

    clock.set(NOW);
    let t = mint(&keys::ec())
        .claim("nbf", json!(NOW as f64 + 0.5))
        .sign();
    assert_eq!(denied(&strict, &t).await, AuthErrorKind::NotYetValid);
    let t = mint(&keys::ec())
        .claim("iat", json!(NOW as f64 + 0.5))
        .sign();
    assert_eq!(denied(&strict, &t).await, AuthErrorKind::IssuedInFuture);
    // An exponent is a number too; a fraction never makes a negative or huge value valid.
    let t = mint(&keys::ec()).claim("exp", json!(1.0e12)).sign();
    assert_eq!(
        strict.verify(&t).await.unwrap().exp,
        Some(1_000_000_000_000)
    );
    for exp in [json!(-0.5), json!(-1.0e3), json!(1.0e20), json!(f64::MAX)] {
        let t = mint(&keys::ec()).claim("exp", exp.clone()).sign();
        assert!(
            matches!(denied(&strict, &t).await, AuthErrorKind::Malformed(_)),
            "{exp}"
        );
    }
    let t = mint(&keys::ec()).claim("nbf", json!(-0.5)).sign();
    assert!(matches!(
        denied(&strict, &t).await,
        AuthErrorKind::Malformed(_)
    ));
}

#[tokio::test]
async fn expiry_uses_the_injected_clock_and_leeway() {
    let clock = clock();
    let auth = auth_with(&pem_settings("ec-public.pem"), &clock);
    let t = mint(&keys::ec()).sign(); // exp = NOW + 600, leeway 30
    assert!(auth.verify(&t).await.is_ok());
    clock.set(NOW + 629);
    assert!(auth.verify(&t).await.is_ok(), "within the leeway");
    clock.set(NOW + 630);
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::Expired);

    let strict = auth_with(
        &AuthSettings {
            leeway_seconds: 0,
            ..pem_settings("ec-public.pem")
        },
        &clock,
    );
    clock.set(NOW + 600);
    assert_eq!(
        denied(&strict, &t).await,
        AuthErrorKind::Expired,
        "exp is exclusive"
    );
    clock.set(NOW + 599);
    assert!(strict.verify(&t).await.is_ok());
}

#[tokio::test]
async fn nbf_and_iat_in_the_future_are_refused() {
    let auth = ec_auth(settings());
    let t = mint(&keys::ec()).claim("nbf", NOW + 31).sign();
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::NotYetValid);
    let t = mint(&keys::ec()).claim("nbf", NOW + 30).sign();
    assert!(auth.verify(&t).await.is_ok(), "nbf within the leeway");
    let t = mint(&keys::ec()).claim("iat", NOW + 31).sign();
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::IssuedInFuture);
    let t = mint(&keys::ec()).claim("nbf", "soon").sign();
    assert!(matches!(
        denied(&auth, &t).await,
        AuthErrorKind::Malformed(_)
    ));
}

#[tokio::test]
async fn maximum_lifetime() {
    let auth = ec_auth(AuthSettings {
        max_lifetime_seconds: Some(600),
        ..settings()
    });
    assert!(
        auth.verify(&mint(&keys::ec()).sign()).await.is_ok(),
        "exactly the maximum"
    );
    let t = mint(&keys::ec()).claim("exp", NOW + 601).sign();
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::Lifetime);
    let t = mint(&keys::ec())
        .without_claim("iat")
        .claim("exp", NOW + 3600)
        .sign();
    assert_eq!(
        denied(&auth, &t).await,
        AuthErrorKind::Lifetime,
        "no iat: measured from now"
    );
}

#[tokio::test]
async fn issuer_is_checked_when_configured() {
    let auth = ec_auth(settings());
    let t = mint(&keys::ec()).claim("iss", "https://evil.test").sign();
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::Issuer);
    let t = mint(&keys::ec()).without_claim("iss").sign();
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::Issuer);
    let t = mint(&keys::ec())
        .claim("iss", "https://issuer.test/")
        .sign();
    assert_eq!(
        denied(&auth, &t).await,
        AuthErrorKind::Issuer,
        "exact comparison"
    );
    let open = ec_auth(AuthSettings {
        issuer: None,
        ..settings()
    });
    assert!(
        open.verify(&mint(&keys::ec()).without_claim("iss").sign())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn audience_is_checked_when_configured() {
    let auth = ec_auth(AuthSettings {
        audience: vec!["todo-api".into(), "tasks-api".into()],
        ..settings()
    });
    for aud in [json!("tasks-api"), json!(["other", "todo-api"])] {
        let t = mint(&keys::ec()).claim("aud", aud.clone()).sign();
        assert!(auth.verify(&t).await.is_ok(), "{aud}");
    }
    for aud in [
        json!("other"),
        json!(["a", "b"]),
        json!([]),
        json!("TODO-API"),
    ] {
        let t = mint(&keys::ec()).claim("aud", aud.clone()).sign();
        assert_eq!(denied(&auth, &t).await, AuthErrorKind::Audience, "{aud}");
    }
    let t = mint(&keys::ec()).without_claim("aud").sign();
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::Audience);
}

#[tokio::test]
async fn sub_must_be_a_string() {
    let auth = ec_auth(settings());
    let t = mint(&keys::ec()).claim("sub", 42).sign();
    assert!(matches!(
        denied(&auth, &t).await,
        AuthErrorKind::Malformed(_)
    ));
}
