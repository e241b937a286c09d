//! Every known way to make a verifier accept a forged token: each one must be a 401.

use auth_core::keys::Alg;
use auth_core::{Auth, AuthErrorKind, AuthSettings};
use base64::Engine as _;
use serde_json::json;
use testkit::{MockIssuer, TestKey, b64, keys, mint, token};

use crate::helpers::*;

#[tokio::test]
async fn alg_none_in_any_spelling_is_refused() {
    let auth = auth(&pem_settings("rsa-public.pem"));
    let rsa = keys::rsa();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let unsigned = token(alg).with_signature(b"");
        assert_eq!(
            denied(&auth, &unsigned).await,
            AuthErrorKind::Algorithm,
            "{alg}"
        );
        let two_parts = token(alg).signing_input();
        assert!(
            auth.verify(&two_parts).await.is_err(),
            "{alg}: two-part token"
        );
        // Even with a valid signature over the same input.
        let signed = token(alg).sign_with(&rsa);
        assert_eq!(
            denied(&auth, &signed).await,
            AuthErrorKind::Algorithm,
            "{alg} signed"
        );
    }
}

#[tokio::test]
async fn alg_must_be_configured_and_fit_the_key() {
    let auth = auth(&AuthSettings {
        algorithms: vec![Alg::RS256],
        ..pem_settings("ec-public.pem")
    });
    let es = mint(&keys::ec()).sign();
    assert_eq!(
        denied(&auth, &es).await,
        AuthErrorKind::Algorithm,
        "ES256 not configured"
    );

    let auth = crate::helpers::auth(&pem_settings("ec-public.pem"));
    let rs = mint(&keys::rsa()).sign();
    assert_eq!(
        denied(&auth, &rs).await,
        AuthErrorKind::Algorithm,
        "RS256 does not fit a P-256 key"
    );
    for alg in ["HS512", "RS512", "PS256", "ES384", "rs256", "", "EdDSA "] {
        let t = mint(&keys::ec()).alg(alg).sign();
        assert_eq!(denied(&auth, &t).await, AuthErrorKind::Algorithm, "{alg:?}");
    }
}

/// RS256 → HS256: the RSA public key (in every encoding an attacker might guess) as the HMAC
/// secret, even with HS256 in the configured list.
#[tokio::test]
async fn public_key_is_never_an_hmac_secret() {
    let pem_text = keys::read("rsa-public.pem");
    let pem_str = String::from_utf8(pem_text.clone()).unwrap();
    let der = pem::parse(&pem_text).unwrap().into_contents();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("PEM", pem_text.clone()),
        (
            "PEM without trailing newline",
            pem_str.trim_end().as_bytes().to_vec(),
        ),
        (
            "PEM without any newline",
            pem_str.replace('\n', "").into_bytes(),
        ),
        ("DER", der.clone()),
        ("JWK JSON", keys::rsa().jwk().to_string().into_bytes()),
        (
            "public JWK JSON",
            keys::rsa().public_jwk.to_string().into_bytes(),
        ),
    ];
    let mut issuer = MockIssuer::start().await;
    let _jwks = issuer.serve_jwks(&[&keys::rsa()]).await;
    let with_hs = |s: AuthSettings| AuthSettings {
        algorithms: vec![Alg::RS256, Alg::HS256],
        ..s
    };
    for settings in [
        with_hs(pem_settings("rsa-public.pem")),
        with_hs(pem_settings("rsa-cert.pem")),
        with_hs(jwks_settings(&issuer)),
    ] {
        let auth = auth(&settings);
        for (what, secret) in &secrets {
            let forged = mint(&keys::rsa()).alg("HS256").sign_hmac(secret);
            assert_eq!(
                denied(&auth, &forged).await,
                AuthErrorKind::Algorithm,
                "{what}"
            );
        }
    }
    // A verifier with only HS256 cannot be built on a public key at all.
    let only_hs = AuthSettings {
        algorithms: vec![Alg::HS256],
        ..pem_settings("rsa-public.pem")
    };
    let err = Auth::new(&only_hs, REALM).unwrap_err();
    assert_eq!(err.key, "auth.algorithms");
}

/// A JWKS never yields an HMAC key, even if it publishes one.
#[tokio::test]
async fn symmetric_jwk_in_a_key_set_is_ignored() {
    let mut issuer = MockIssuer::start().await;
    let secret = b"0123456789abcdef0123456789abcdef";
    let body = json!({"keys": [
        {"kty": "oct", "k": b64(secret), "kid": "sym", "alg": "HS256"},
        keys::ec().jwk(),
    ]});
    let _m = issuer.serve("/jwks.json", body.to_string()).await;
    let auth = auth(&AuthSettings {
        algorithms: vec![Alg::ES256, Alg::HS256],
        ..jwks_settings(&issuer)
    });
    let forged = token("HS256").kid("sym").sign_hmac(secret);
    assert_eq!(denied(&auth, &forged).await, AuthErrorKind::UnknownKid);
    assert!(
        auth.verify(&mint(&keys::ec()).sign()).await.is_ok(),
        "the EC key of the set still works"
    );
}

#[tokio::test]
async fn embedded_jwk_is_never_used() {
    let mut issuer = MockIssuer::start().await;
    let _jwks = issuer.serve_jwks(&[&keys::ec()]).await;
    let auth = auth(&jwks_settings(&issuer));
    let attacker = TestKey::generate("ES256");
    let own_kid = mint(&attacker).header_field("jwk", attacker.jwk()).sign();
    assert_eq!(denied(&auth, &own_kid).await, AuthErrorKind::UnknownKid);
    let legit_kid = mint(&attacker)
        .kid(keys::ec().kid.as_deref().unwrap())
        .header_field("jwk", attacker.jwk())
        .sign();
    assert_eq!(denied(&auth, &legit_kid).await, AuthErrorKind::Signature);
    let no_kid = mint(&attacker)
        .without_header("kid")
        .header_field("jwk", attacker.jwk())
        .sign();
    assert_eq!(denied(&auth, &no_kid).await, AuthErrorKind::Signature);
}

/// `jku` and `x5u` point at a server that would serve the attacker's keys: it sees no request.
#[tokio::test]
async fn jku_and_x5u_are_never_fetched() {
    let attacker = TestKey::generate("ES256");
    let mut evil = MockIssuer::start().await;
    let evil_jwks = evil.jwks_mock(&[&attacker]).expect(0).create_async().await;
    let evil_cert = evil
        .server
        .mock("GET", "/cert.pem")
        .with_body(keys::read("attacker/attacker-ec-cert.pem"))
        .expect(0)
        .create_async()
        .await;
    let mut issuer = MockIssuer::start().await;
    let legit = issuer
        .jwks_mock(&[&keys::ec()])
        .expect(1)
        .create_async()
        .await;
    let auth = auth(&jwks_settings(&issuer));
    let ec_kid = keys::ec().kid.unwrap();
    for (member, url) in [
        ("jku", evil.jwks_url()),
        ("x5u", format!("{}/cert.pem", evil.url())),
    ] {
        for kid in [attacker.kid.clone().unwrap(), ec_kid.clone()] {
            let t = mint(&attacker)
                .kid(&kid)
                .header_field(member, url.clone())
                .sign();
            assert!(auth.verify(&t).await.is_err(), "{member} with kid {kid}");
        }
    }
    // The same with a static key source.
    let pem_auth = crate::helpers::auth(&pem_settings("ec-public.pem"));
    let t = mint(&attacker).header_field("jku", evil.jwks_url()).sign();
    assert_eq!(denied(&pem_auth, &t).await, AuthErrorKind::Signature);
    evil_jwks.assert_async().await;
    evil_cert.assert_async().await;
    legit.assert_async().await;
}

#[tokio::test]
async fn x5c_with_a_self_signed_attacker_certificate_is_ignored() {
    let attacker =
        TestKey::from_pkcs8_pem("ES256", &keys::read("attacker/attacker-ec-private.pem"));
    let cert_der = pem::parse(keys::read("attacker/attacker-ec-cert.pem"))
        .unwrap()
        .into_contents();
    let x5c = json!([base64::engine::general_purpose::STANDARD.encode(&cert_der)]);
    let mut issuer = MockIssuer::start().await;
    let _jwks = issuer.serve_jwks(&[&keys::ec(), &keys::rsa()]).await;
    let auth = auth(&jwks_settings(&issuer));
    let no_kid = mint(&attacker)
        .without_header("kid")
        .header_field("x5c", x5c.clone())
        .sign();
    assert_eq!(denied(&auth, &no_kid).await, AuthErrorKind::Signature);
    let own_kid = mint(&attacker).header_field("x5c", x5c.clone()).sign();
    assert_eq!(denied(&auth, &own_kid).await, AuthErrorKind::UnknownKid);
    let pem_auth = crate::helpers::auth(&pem_settings("ec-public.pem"));
    assert_eq!(denied(&pem_auth, &no_kid).await, AuthErrorKind::Signature);
}

#[tokio::test]
async fn kid_is_an_opaque_string() {
    let mut issuer = MockIssuer::start().await;
    let jwks = issuer
        .jwks_mock(&[&keys::ec()])
        .expect(1)
        .create_async()
        .await;
    let auth = auth(&jwks_settings(&issuer));
    for kid in [
        "../../dev/null",
        "' OR '1'='1' --",
        "x; DROP TABLE keys",
        "/etc/passwd",
        "?kid=a&b",
        "",
    ] {
        let t = mint(&keys::ec()).kid(kid).sign();
        assert_eq!(
            denied(&auth, &t).await,
            AuthErrorKind::UnknownKid,
            "{kid:?}"
        );
    }
    jwks.assert_async().await;
}

/// CVE-2022-21449 ("psychic signatures") and the DER form JWS does not use.
#[tokio::test]
async fn ecdsa_zero_and_der_signatures_are_refused() {
    let auth = auth(&pem_settings("ec-public.pem"));
    let builder = mint(&keys::ec());
    assert_eq!(
        denied(&auth, &builder.with_signature(&[0; 64])).await,
        AuthErrorKind::Signature
    );
    let good = builder.sign();
    assert!(auth.verify(&good).await.is_ok());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(good.rsplit('.').next().unwrap())
        .unwrap();
    let der = der_signature(&raw[..32], &raw[32..]);
    assert_eq!(
        denied(&auth, &builder.with_signature(&der)).await,
        AuthErrorKind::Signature
    );
    // r || s with an extra byte, truncated, and with r and s swapped.
    let mut long = raw.clone();
    long.push(0);
    assert_eq!(
        denied(&auth, &builder.with_signature(&long)).await,
        AuthErrorKind::Signature
    );
    assert_eq!(
        denied(&auth, &builder.with_signature(&raw[..63])).await,
        AuthErrorKind::Signature
    );
    let swapped = [&raw[32..], &raw[..32]].concat();
    assert_eq!(
        denied(&auth, &builder.with_signature(&swapped)).await,
        AuthErrorKind::Signature
    );
}

fn der_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    let int = |v: &[u8]| {
        let v = &v[v.iter().take_while(|b| **b == 0).count()..];
        let mut out = vec![0x02];
        let pad = v[0] & 0x80 != 0;
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    };
    let body = [int(r), int(s)].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

#[tokio::test]
async fn null_signature_is_refused() {
    for (file, key) in [
        ("rsa-public.pem", keys::rsa()),
        ("ec-public.pem", keys::ec()),
        ("ed25519-public.pem", keys::ed()),
    ] {
        let auth = auth(&pem_settings(file));
        let t = mint(&key).with_signature(b"");
        assert_eq!(denied(&auth, &t).await, AuthErrorKind::Signature, "{file}");
    }
    let auth = auth(&secret_settings());
    let t = mint(&keys::hs_secret()).with_signature(b"");
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::Signature);
}

#[tokio::test]
async fn hs256_with_an_empty_or_wrong_secret_is_refused() {
    let auth = auth(&secret_settings());
    let t = mint(&keys::hs_secret()).sign_hmac(b"");
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::Signature);
    let t = mint(&keys::hs_secret()).sign_hmac(&[b'x'; 64]);
    assert_eq!(denied(&auth, &t).await, AuthErrorKind::Signature);
    // A truncated tag is not a shorter valid tag.
    let good = mint(&keys::hs_secret()).sign();
    for cut in [1, 4, 12] {
        denied(&auth, &good[..good.len() - cut]).await;
    }
}

#[tokio::test]
async fn unknown_crit_is_refused() {
    let auth = auth(&pem_settings("ec-public.pem"));
    for crit in [
        json!(["exp"]),
        json!(["b64"]),
        json!(["http://example.com/ext"]),
        json!([]),
        json!("exp"),
        json!(null),
        json!({}),
    ] {
        let t = mint(&keys::ec())
            .header_field("crit", crit.clone())
            .header_field("exp", 1)
            .sign();
        assert_eq!(denied(&auth, &t).await, AuthErrorKind::Crit, "{crit}");
    }
}

/// RFC 7515 §4: the header is a JSON object. serde's derived structs also read an array, by
/// position: `["ES256"]` read as `alg` ES256, validly signed, was accepted.
#[tokio::test]
async fn a_header_that_is_not_an_object_is_refused() {
    let auth = auth(&pem_settings("ec-public.pem"));
    let key = keys::ec();
    let payload = mint(&key).signing_input();
    let payload = payload.split_once('.').unwrap().1;
    for header in [
        r#"["ES256"]"#,
        r#" ["ES256", null, null, false]"#,
        "\"ES256\"",
        "null",
    ] {
        let input = format!("{}.{payload}", b64(header));
        let token = format!("{input}.{}", b64(key.sign(input.as_bytes())));
        assert!(
            matches!(denied(&auth, &token).await, AuthErrorKind::Malformed(_)),
            "{header}"
        );
    }
    // The same header as an object, with whitespace before it, is fine.
    let input = format!("{}.{payload}", b64(r#" {"alg":"ES256"}"#));
    let token = format!("{input}.{}", b64(key.sign(input.as_bytes())));
    assert!(auth.verify(&token).await.is_ok());
}

#[tokio::test]
async fn typ_is_checked() {
    let auth = auth(&pem_settings("ec-public.pem"));
    for typ in ["at+jwt", "JWT", "application/at+JWT", "jwt"] {
        let t = mint(&keys::ec()).header_field("typ", typ).sign();
        assert!(auth.verify(&t).await.is_ok(), "{typ}");
    }
    assert!(
        auth.verify(&mint(&keys::ec()).without_header("typ").sign())
            .await
            .is_ok()
    );
    for typ in [
        json!("JOSE"),
        json!("dpop+jwt"),
        json!("secevent+jwt"),
        json!(""),
        json!(1),
    ] {
        let t = mint(&keys::ec()).header_field("typ", typ.clone()).sign();
        assert!(auth.verify(&t).await.is_err(), "{typ}");
    }
    let strict = crate::helpers::auth(&AuthSettings {
        require_at_jwt: true,
        ..pem_settings("ec-public.pem")
    });
    assert!(strict.verify(&mint(&keys::ec()).sign()).await.is_ok());
    for t in [
        mint(&keys::ec()).header_field("typ", "JWT").sign(),
        mint(&keys::ec()).without_header("typ").sign(),
    ] {
        assert_eq!(denied(&strict, &t).await, AuthErrorKind::Type);
    }
}

#[tokio::test]
async fn huge_tokens_are_refused_before_decoding_and_garbage_is_a_401() {
    let auth = auth(&pem_settings("ec-public.pem"));
    let huge = format!(
        "{}.{}.{}",
        "e".repeat(32 * 1024),
        "e".repeat(32 * 1024),
        "e".repeat(10)
    );
    assert_eq!(denied(&auth, &huge).await, AuthErrorKind::TooLarge);
    // A token that would verify, refused for its size alone: the size is checked before any
    // decoding or signature work.
    let valid_but_huge = mint(&keys::ec()).claim("pad", "x".repeat(40 * 1024)).sign();
    assert_eq!(
        denied(&auth, &valid_but_huge).await,
        AuthErrorKind::TooLarge
    );
    let big_enough = AuthSettings {
        max_token_bytes: valid_but_huge.len(),
        ..pem_settings("ec-public.pem")
    };
    assert!(
        crate::helpers::auth(&big_enough)
            .verify(&valid_but_huge)
            .await
            .is_ok()
    );
    let header = b64(r#"{"alg":"ES256"}"#);
    for garbage in [
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "a.b.c.d",
        "a.b.c.d.e",
        "💥.💥.💥",
        "eyJ.eyJ.",
        "null.null.null",
        &format!("{}.{}.", b64("[]"), b64("{}")),
        &format!("{}.{}.", b64("null"), b64("{}")),
        &format!("{}.{}.", b64(r#"{"alg":null}"#), b64("{}")),
        &format!("{}.{}.", b64(r#"{"alg":"ES256","alg":"none"}"#), b64("{}")),
        &format!("{header}=.{}.AAAA", b64("{}")),
        &format!("{header}.{}.{}", b64("{}"), "A".repeat(86)),
        &format!("{header}.{}.!!!!", b64("{}")),
    ] {
        assert!(auth.verify(garbage).await.is_err(), "{garbage:?}");
    }
}
