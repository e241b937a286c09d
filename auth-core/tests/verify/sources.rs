//! Each key source: a valid token of each algorithm, and what happens when keys cannot be had.

use auth_core::keys::Alg;
use auth_core::{Auth, AuthErrorKind, AuthSettings};
use testkit::{MockIssuer, keys, mint};

use crate::helpers::*;

#[tokio::test]
async fn jwks_source_accepts_each_asymmetric_algorithm() {
    let mut issuer = MockIssuer::start().await;
    let jwks = issuer
        .jwks_mock(&[&keys::rsa(), &keys::ec(), &keys::ed()])
        .expect(1)
        .create_async()
        .await;
    let auth = auth(&jwks_settings(&issuer));
    for key in [keys::rsa(), keys::ec(), keys::ed()] {
        let claims = auth
            .verify(&mint(&key).sign())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", key.alg));
        assert_eq!(claims.subject(), "alice");
    }
    assert!(auth.is_ready());
    jwks.assert_async().await;
}

#[tokio::test]
async fn keys_are_loaded_without_a_request_and_readiness_follows() {
    let mut issuer = MockIssuer::start().await;
    let jwks = issuer
        .jwks_mock(&[&keys::ec()])
        .expect(1)
        .create_async()
        .await;
    let auth = auth(&jwks_settings(&issuer));
    assert!(auth.load_keys().await);
    assert!(auth.is_ready());
    assert!(auth.verify(&mint(&keys::ec()).sign()).await.is_ok());
    jwks.assert_async().await;
}

#[test]
fn construction_does_no_network_io() {
    // No runtime, a key source on a listener nobody serves: building succeeds, is not ready,
    // and never connected (a connection would wait in the listener's backlog).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let settings = AuthSettings {
        jwks_url: Some(format!(
            "http://{}/jwks.json",
            listener.local_addr().unwrap()
        )),
        ..settings()
    };
    let auth = Auth::new(&settings, REALM).unwrap();
    assert!(!auth.is_ready());
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "no connection was made"
    );
}

#[tokio::test]
async fn discovery_source() {
    let mut issuer = MockIssuer::start().await;
    let discovery = issuer.serve_discovery().await;
    let _jwks = issuer.serve_jwks(&[&keys::ed()]).await;
    let settings = AuthSettings {
        discovery_url: Some(issuer.url()),
        issuer: Some(issuer.issuer()),
        ..settings()
    };
    let auth = auth(&settings);
    let t = mint(&keys::ed()).claim("iss", issuer.issuer()).sign();
    assert!(auth.verify(&t).await.is_ok());
    assert!(discovery.matched_async().await);
}

#[tokio::test]
async fn discovery_issuer_mismatch_means_no_keys() {
    let mut issuer = MockIssuer::start().await;
    let _discovery = issuer
        .discovery_mock("https://someone-else.test")
        .create_async()
        .await;
    let jwks = issuer
        .jwks_mock(&[&keys::ed()])
        .expect(0)
        .create_async()
        .await;
    let settings = AuthSettings {
        discovery_url: Some(issuer.url()),
        issuer: Some(issuer.issuer()),
        ..settings()
    };
    let auth = auth(&settings);
    let t = mint(&keys::ed()).claim("iss", issuer.issuer()).sign();
    let err = auth.verify(&t).await.unwrap_err();
    assert_eq!(err.kind(), &AuthErrorKind::Unavailable);
    assert_eq!(err.status(), 503);
    jwks.assert_async().await;
}

#[tokio::test]
async fn static_pem_files_and_certificate() {
    for (file, key) in [
        ("rsa-public.pem", keys::rsa()),
        ("rsa-cert.pem", keys::rsa()),
        ("ec-public.pem", keys::ec()),
        ("ed25519-public.pem", keys::ed()),
    ] {
        let auth = auth(&pem_settings(file));
        assert!(auth.is_ready());
        assert!(auth.verify(&mint(&key).sign()).await.is_ok(), "{file}");
        // A static key verifies whatever the kid (it is the only key).
        assert!(
            auth.verify(&mint(&key).without_header("kid").sign())
                .await
                .is_ok(),
            "{file} without kid"
        );
    }
}

/// A PEM over HTTP: `https://` in production; loopback `http://` (the mock) is accepted too.
#[tokio::test]
async fn pem_url_source() {
    let mut issuer = MockIssuer::start().await;
    let pem = issuer
        .server
        .mock("GET", "/cert.pem")
        .with_body(keys::read("rsa-cert.pem"))
        .expect(1)
        .create_async()
        .await;
    let settings = AuthSettings {
        public_key: Some(format!("{}/cert.pem", issuer.url())),
        ..settings()
    };
    let auth = auth(&settings);
    assert!(auth.verify(&mint(&keys::rsa()).sign()).await.is_ok());
    assert!(auth.verify(&mint(&keys::rsa()).sign()).await.is_ok());
    pem.assert_async().await;
}

#[tokio::test]
async fn secret_and_secret_file_sources() {
    let auth = auth(&secret_settings());
    let claims = auth.verify(&mint(&keys::hs_secret()).sign()).await.unwrap();
    assert_eq!(claims.subject(), "alice");
    let from_file = AuthSettings {
        secret: None,
        secret_file: Some(keys::path("hs256-secret.txt").display().to_string()),
        ..secret_settings()
    };
    let auth = crate::helpers::auth(&from_file);
    assert!(auth.verify(&mint(&keys::hs_secret()).sign()).await.is_ok());
}

#[tokio::test]
async fn unreachable_source_is_unavailable_then_recovers() {
    let clock = clock();
    let mut issuer = MockIssuer::start().await;
    let failing = issuer
        .server
        .mock("GET", "/jwks.json")
        .with_status(500)
        .expect(1)
        .create_async()
        .await;
    let auth = auth_with(&jwks_settings(&issuer), &clock);
    let t = mint(&keys::ec()).sign();
    for _ in 0..3 {
        let err = auth.verify(&t).await.unwrap_err();
        assert_eq!(err.kind(), &AuthErrorKind::Unavailable);
        assert_eq!(err.status(), 503);
    }
    assert!(!auth.is_ready());
    failing.assert_async().await; // one fetch per cooldown, not one per request
    failing.remove_async().await;
    let jwks = issuer
        .jwks_mock(&[&keys::ec()])
        .expect(1)
        .create_async()
        .await;
    clock.advance(30);
    assert!(auth.verify(&t).await.is_ok());
    jwks.assert_async().await;

    let nobody = AuthSettings {
        jwks_url: Some("http://127.0.0.1:9/jwks.json".into()),
        ..settings()
    };
    let err = crate::helpers::auth(&nobody).verify(&t).await.unwrap_err();
    assert_eq!(err.kind(), &AuthErrorKind::Unavailable);
}

#[tokio::test]
async fn rotated_key_is_found_after_the_cooldown() {
    let clock = clock();
    let mut issuer = MockIssuer::start().await;
    let first = issuer.serve_jwks(&[&keys::ec()]).await;
    let auth = auth_with(&jwks_settings(&issuer), &clock);
    assert!(auth.verify(&mint(&keys::ec()).sign()).await.is_ok());
    first.remove_async().await;
    let rotated = issuer
        .jwks_mock(&[&keys::ec(), &keys::ed()])
        .expect(1)
        .create_async()
        .await;
    let t = mint(&keys::ed()).sign();
    assert_eq!(
        denied(&auth, &t).await,
        AuthErrorKind::UnknownKid,
        "within the cooldown"
    );
    clock.advance(30);
    assert!(auth.verify(&t).await.is_ok());
    for _ in 0..5 {
        let unknown = mint(&keys::ed()).kid("nope").sign();
        assert_eq!(denied(&auth, &unknown).await, AuthErrorKind::UnknownKid);
    }
    rotated.assert_async().await;
}

#[test]
fn exactly_one_source_must_be_configured() {
    let none = Auth::new(&settings(), REALM).unwrap_err();
    assert_eq!(none.key, "auth.jwks_url");
    assert!(
        none.to_string()
            .starts_with("auth.jwks_url: no key source configured"),
        "{none}"
    );

    let two = AuthSettings {
        jwks_url: Some("https://a.test/jwks.json".into()),
        ..pem_settings("ec-public.pem")
    };
    let err = Auth::new(&two, REALM).unwrap_err();
    assert_eq!(err.key, "auth.public_key");
    assert!(err.message.contains("auth.jwks_url"), "{err}");
}

#[test]
fn setup_errors_name_the_key() {
    let cases: Vec<(AuthSettings, &str)> = vec![
        (
            AuthSettings {
                public_key: Some("/nonexistent/key.pem".into()),
                ..settings()
            },
            "auth.public_key",
        ),
        (
            AuthSettings {
                public_key: Some(keys::path("hs256-secret.txt").display().to_string()),
                ..settings()
            },
            "auth.public_key",
        ),
        (
            AuthSettings {
                public_key: Some("http://keys.example/key.pem".into()),
                ..settings()
            },
            "auth.public_key",
        ),
        (
            AuthSettings {
                jwks_url: Some("http://issuer.example/jwks.json".into()),
                ..settings()
            },
            "auth.jwks_url",
        ),
        (
            AuthSettings {
                jwks_url: Some("not a url".into()),
                ..settings()
            },
            "auth.jwks_url",
        ),
        (
            AuthSettings {
                discovery_url: Some("ftp://issuer.example".into()),
                ..settings()
            },
            "auth.discovery_url",
        ),
        (
            AuthSettings {
                secret: Some("too short".into()),
                ..secret_settings()
            },
            "auth.secret",
        ),
        (
            AuthSettings {
                secret_file: Some("/nonexistent".into()),
                secret: None,
                ..secret_settings()
            },
            "auth.secret_file",
        ),
        (
            AuthSettings {
                algorithms: vec![Alg::RS256],
                ..secret_settings()
            },
            "auth.algorithms",
        ),
        (
            AuthSettings {
                algorithms: vec![],
                ..pem_settings("ec-public.pem")
            },
            "auth.algorithms",
        ),
    ];
    let mut cases = cases;
    let mut huge_cache = pem_settings("ec-public.pem");
    huge_cache.cache.max_entries = usize::MAX;
    cases.push((huge_cache, "auth.cache.max_entries"));
    let mut no_cooldown = pem_settings("ec-public.pem");
    no_cooldown.jwks.unknown_kid_cooldown_seconds = 0;
    cases.push((no_cooldown, "auth.jwks.unknown_kid_cooldown_seconds"));
    let mut huge_timeout = pem_settings("ec-public.pem");
    huge_timeout.jwks.timeout_seconds = u64::MAX;
    cases.push((huge_timeout, "auth.jwks.timeout_seconds"));
    let mut huge_leeway = pem_settings("ec-public.pem");
    huge_leeway.leeway_seconds = 3_601;
    cases.push((huge_leeway, "auth.leeway_seconds"));
    let mut no_ttl = pem_settings("ec-public.pem");
    no_ttl.jwks.min_ttl_seconds = 0;
    cases.push((no_ttl, "auth.jwks.min_ttl_seconds"));
    let mut crossed_ttls = pem_settings("ec-public.pem");
    crossed_ttls.jwks.max_ttl_seconds = 30;
    cases.push((crossed_ttls, "auth.jwks.max_ttl_seconds"));
    for bytes in [0, 255, 64 * 1024 + 1, usize::MAX] {
        let mut token = pem_settings("ec-public.pem");
        token.max_token_bytes = bytes;
        cases.push((token, "auth.max_token_bytes"));
    }
    for bytes in [0, 1_023, 16 * 1024 * 1024 + 1, usize::MAX] {
        let mut body = pem_settings("ec-public.pem");
        body.jwks.max_body_bytes = bytes;
        cases.push((body, "auth.jwks.max_body_bytes"));
    }
    // A secret pasted into the file key by mistake is not printed back.
    cases.push((
        AuthSettings {
            secret_file: Some("Leak-Me-0123456789abcdef0123456789abcdef".into()),
            secret: None,
            ..secret_settings()
        },
        "auth.secret_file",
    ));
    for (settings, key) in cases {
        let err = Auth::new(&settings, REALM).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.to_string().starts_with(&format!("{key}: ")), "{err}");
        assert!(!err.to_string().contains("Leak-Me"), "{err}");
    }
    // A URL's scheme is case-insensitive: `HTTPS://` is fetched (lazily: construction does no
    // I/O), not read as a file name and printed with its credentials.
    let upper = AuthSettings {
        public_key: Some("HTTPS://svc:Leak-Me@127.0.0.1:9/k.pem".into()),
        ..settings()
    };
    if let Err(err) = Auth::new(&upper, REALM) {
        panic!("{err}");
    }
    let exactly_32 = AuthSettings {
        secret: Some("x".repeat(32).into()),
        ..secret_settings()
    };
    assert!(Auth::new(&exactly_32, REALM).is_ok());
    for bytes in [256, 64 * 1024] {
        let mut token = pem_settings("ec-public.pem");
        token.max_token_bytes = bytes;
        assert!(Auth::new(&token, REALM).is_ok(), "{bytes}");
    }
    let hour_of_leeway = AuthSettings {
        leeway_seconds: 3_600,
        ..pem_settings("ec-public.pem")
    };
    assert!(Auth::new(&hour_of_leeway, REALM).is_ok());
}
