//! The JWKS key store: loading once, single-flight, unknown-kid cooldown, rotation,
//! stale-if-error, max-age, ETag, unsupported keys, readiness, backoff.
//!
//! The background task is off (`auth.jwks.background_refresh = false`) except where it is the
//! subject: tests move the [`ManualClock`](auth_core::ManualClock) and drive the schedule with
//! `KeyStore::tick`, so no test sleeps.

use std::time::{Duration, Instant};

use auth_core::source::FetchError;
use auth_core::store::{FetchOutcome, KeyStore, StoreState};
use auth_core::{Auth, AuthErrorKind, AuthSettings, Clock, JwksSettings};
use mockito::Matcher;
use testkit::{
    Failure, Hang, MockIssuer, NOW, TestKey, TokenBuilder, jwks_json, keys, unsupported_jwks,
};

use crate::helpers::*;

/// A JWKS source at `url`, no background task, a 1 s fetch timeout.
pub fn store_settings(url: String) -> AuthSettings {
    AuthSettings {
        jwks_url: Some(url),
        jwks: JwksSettings {
            timeout_seconds: 1,
            background_refresh: false,
            ..JwksSettings::default()
        },
        ..settings()
    }
}

/// A token like `testkit::mint`'s that outlives every clock move of these tests.
pub fn long_lived(key: &TestKey) -> TokenBuilder {
    testkit::mint(key).claim("exp", NOW + 10_000_000)
}

pub fn store(auth: &Auth) -> &KeyStore {
    auth.key_store().expect("a remote key source")
}

fn failed(outcome: Option<FetchOutcome>) -> std::sync::Arc<FetchError> {
    match outcome {
        Some(FetchOutcome::Failed(e)) => e,
        other => panic!("expected a failed fetch, got {other:?}"),
    }
}

#[tokio::test]
async fn first_request_loads_once_and_the_next_thousand_reuse_it() {
    let mut issuer = MockIssuer::start().await;
    let jwks = issuer
        .jwks_mock(&[&keys::ec()])
        .expect(1)
        .create_async()
        .await;
    let auth = auth(&store_settings(issuer.jwks_url()));
    assert!(!auth.is_ready());
    let t = long_lived(&keys::ec()).sign();
    assert!(auth.verify(&t).await.is_ok());
    let shared = auth.clone();
    for _ in 0..1000 {
        assert!(shared.verify(&t).await.is_ok());
    }
    jwks.assert_async().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_first_requests_make_exactly_one_fetch() {
    let mut issuer = MockIssuer::start().await;
    let (mock, hits) = issuer.counted_jwks_mock(&[&keys::ec()]);
    let jwks = mock.expect(1).create_async().await;
    let auth = auth(&store_settings(issuer.jwks_url()));
    let t = long_lived(&keys::ec()).sign();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (auth, t) = (auth.clone(), t.clone());
            tokio::spawn(async move { auth.verify(&t).await.map(|_| ()) })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(hits.get(), 1);
    jwks.assert_async().await;
}

/// One refresh for an unknown kid, then a cooldown in which unknown kids get 401 at once: the
/// endpoint is switched to one that hangs, so a request that waited on a fetch would take the
/// whole timeout (1 s).
#[tokio::test]
async fn unknown_kid_refreshes_once_then_cools_down_with_fast_401s() {
    let clock = clock();
    let hang = Hang::start();
    let mut issuer = MockIssuer::start().await;
    let iss = issuer.issuer();
    let discovery = issuer.discovery_mock(&iss).expect(2).create_async().await;
    let jwks = issuer
        .jwks_mock(&[&keys::ec()])
        .expect(2)
        .create_async()
        .await;
    let settings = AuthSettings {
        jwks_url: None,
        discovery_url: Some(issuer.url()),
        issuer: Some(iss.clone()),
        ..store_settings(String::new())
    };
    let auth = auth_with(&settings, &clock);
    let ec = long_lived(&keys::ec()).claim("iss", iss.clone()).sign();
    assert!(auth.verify(&ec).await.is_ok());

    // Within the cooldown of the first load: no refresh.
    let unknown = long_lived(&keys::ed()).claim("iss", iss.clone()).sign();
    assert_eq!(denied(&auth, &unknown).await, AuthErrorKind::UnknownKid);
    clock.advance(30);
    // Cooldown over: exactly one refresh (the kid is still unknown after it).
    assert_eq!(denied(&auth, &unknown).await, AuthErrorKind::UnknownKid);
    discovery.assert_async().await;
    jwks.assert_async().await;

    discovery.remove_async().await;
    let hanging = issuer
        .discovery_mock_with_jwks_uri(&iss, &hang.jwks_url())
        .expect(0)
        .create_async()
        .await;
    for i in 0..1000 {
        clock.set(NOW + 30 + i % 30);
        let random = long_lived(&keys::ed())
            .claim("iss", iss.clone())
            .kid(&format!("random-{i}"))
            .sign();
        // At once: answered on the first poll, waiting on nothing (no fetch, no limiter).
        let err = futures_util::FutureExt::now_or_never(auth.verify(&random))
            .expect("answered without waiting")
            .unwrap_err();
        assert_eq!(err.kind(), &AuthErrorKind::UnknownKid);
        assert_eq!(err.status(), 401);
    }
    assert!(auth.verify(&ec).await.is_ok(), "known keys keep working");
    hanging.assert_async().await;
}

/// `auth.discovery_url` without `auth.issuer`: tokens must carry the issuer the discovery
/// document was checked against (before, `iss` went unchecked; a multi-tenant issuer that shares
/// keys across tenants would have had every tenant's tokens accepted).
#[tokio::test]
async fn discovery_without_auth_issuer_checks_iss_against_the_discovered_one() {
    let mut issuer = MockIssuer::start().await;
    let iss = issuer.issuer();
    let _discovery = issuer.discovery_mock(&iss).create_async().await;
    let _jwks = issuer.jwks_mock(&[&keys::ed()]).create_async().await;
    let settings = AuthSettings {
        jwks_url: None,
        discovery_url: Some(issuer.url()),
        issuer: None,
        ..store_settings(String::new())
    };
    let auth = auth(&settings);
    let other = long_lived(&keys::ed())
        .claim("iss", "https://other-tenant.example")
        .sign();
    assert_eq!(denied(&auth, &other).await, AuthErrorKind::Issuer);
    let own = long_lived(&keys::ed()).claim("iss", iss).sign();
    assert!(auth.verify(&own).await.is_ok());
}

#[tokio::test]
async fn rotation_new_kid_after_one_refresh_removed_kid_at_once() {
    let clock = clock();
    let (ec, ed) = (keys::ec(), keys::ed());
    let mut issuer = MockIssuer::start().await;
    let first = issuer.jwks_mock(&[&ec]).expect(1).create_async().await;
    let auth = auth_with(&store_settings(issuer.jwks_url()), &clock);
    assert!(auth.verify(&long_lived(&ec).sign()).await.is_ok());
    first.assert_async().await;

    // The issuer publishes a new key: the first token naming it triggers the one refresh.
    first.remove_async().await;
    let both = issuer.jwks_mock(&[&ec, &ed]).expect(1).create_async().await;
    clock.advance(30);
    assert!(auth.verify(&long_lived(&ed).sign()).await.is_ok());
    assert!(auth.verify(&long_lived(&ec).sign()).await.is_ok());
    both.assert_async().await;

    // The issuer withdraws the old key: after the next (scheduled) refresh it stops at once.
    both.remove_async().await;
    let only_new = issuer.jwks_mock(&[&ed]).expect(1).create_async().await;
    clock.advance(600);
    assert!(matches!(
        store(&auth).tick().await,
        Some(FetchOutcome::Loaded { keys: 1, .. })
    ));
    assert_eq!(
        denied(&auth, &long_lived(&ec).sign()).await,
        AuthErrorKind::UnknownKid
    );
    assert!(auth.verify(&long_lived(&ed).sign()).await.is_ok());
    only_new.assert_async().await;
}

/// A store that loaded the `ec` key, whose issuer now serves `ec` and `ed` (expected to be
/// fetched once more).
async fn loaded_then_rotated(
    clock: &std::sync::Arc<auth_core::ManualClock>,
) -> (Auth, MockIssuer, mockito::Mock) {
    loaded_then_serving(clock, &keys::ec(), &[&keys::ec(), &keys::ed()]).await
}

/// A store that loaded `first` alone, whose issuer now serves `next` (expected to be fetched
/// once more).
async fn loaded_then_serving(
    clock: &std::sync::Arc<auth_core::ManualClock>,
    first: &TestKey,
    next: &[&TestKey],
) -> (Auth, MockIssuer, mockito::Mock) {
    let mut issuer = MockIssuer::start().await;
    let served = issuer.jwks_mock(&[first]).expect(1).create_async().await;
    let auth = auth_with(&store_settings(issuer.jwks_url()), clock);
    assert!(auth.verify(&long_lived(first).sign()).await.is_ok());
    served.assert_async().await;
    served.remove_async().await;
    let next = issuer.jwks_mock(next).expect(1).create_async().await;
    (auth, issuer, next)
}

/// Tokens naming a new kid while a refresh is in flight wait for that refresh instead of a 401
/// from the cooldown it started (at an issuer's rotation, every request with the new kid in the
/// round trip of the first one's refresh was refused).
#[tokio::test]
async fn new_kid_requests_during_a_refresh_join_it() {
    let clock = clock();
    let ed = keys::ed();
    let (auth, _issuer, both) = loaded_then_rotated(&clock).await;
    clock.advance(30);
    let token = long_lived(&ed).sign();
    let (a, b, c) = tokio::join!(
        auth.verify(&token),
        auth.verify(&token),
        auth.verify(&token)
    );
    assert!(a.is_ok() && b.is_ok() && c.is_ok(), "{a:?} {b:?} {c:?}");
    both.assert_async().await;
}

#[tokio::test]
async fn same_kid_with_new_key_material_is_picked_up() {
    let clock = clock();
    let old = TestKey::generate("ES256").with_kid("signing-key");
    let new = TestKey::generate("ES256").with_kid("signing-key");
    let (auth, _issuer, rekeyed) = loaded_then_serving(&clock, &old, &[&new]).await;
    assert_eq!(
        denied(&auth, &long_lived(&new).sign()).await,
        AuthErrorKind::Signature,
        "before the refresh"
    );
    clock.advance(600);
    assert!(store(&auth).tick().await.is_some_and(|o| o.is_success()));
    assert!(auth.verify(&long_lived(&new).sign()).await.is_ok());
    assert_eq!(
        denied(&auth, &long_lived(&old).sign()).await,
        AuthErrorKind::Signature
    );
    rekeyed.assert_async().await;
}

/// A kid the issuer re-keyed to another key type (RSA to EC): a token whose `alg` fits only the
/// new key finds no key in the held set, and starts a refresh as an unknown kid does (jose
/// reloads on any "no matching key"); within the cooldown another such token is refused at once.
#[tokio::test]
async fn a_kid_rekeyed_to_another_key_type_is_picked_up() {
    let clock = clock();
    let old = keys::rsa().with_kid("signing-key");
    let new = keys::ec().with_kid("signing-key");
    let (auth, _issuer, rekeyed) = loaded_then_serving(&clock, &old, &[&new]).await;
    clock.advance(30);
    assert!(
        auth.verify(&long_lived(&new).sign()).await.is_ok(),
        "one refresh brought the new key"
    );
    let ed = keys::ed().with_kid("signing-key");
    assert_eq!(
        denied(&auth, &long_lived(&ed).sign()).await,
        AuthErrorKind::Algorithm,
        "no second fetch within the cooldown"
    );
    rekeyed.assert_async().await;
}

/// A JWKS may publish two keys under one kid (jose and Envoy try each): a token signed by
/// either verifies, and once cached is answered from the cache; a signature neither key made is
/// refused, and no refetch is spent on it.
#[tokio::test]
async fn every_key_published_under_one_kid_is_tried() {
    let first = TestKey::generate("ES256").with_kid("shared");
    let second = TestKey::generate("ES256").with_kid("shared");
    let stranger = TestKey::generate("ES256").with_kid("shared");
    let mut issuer = MockIssuer::start().await;
    let jwks = issuer
        .jwks_mock(&[&first, &second])
        .expect(1)
        .create_async()
        .await;
    let auth = auth(&store_settings(issuer.jwks_url()));
    for key in [&first, &second] {
        let token = long_lived(key).sign();
        let hits = auth.cache_stats().unwrap().hits;
        // Seen once, seen twice (admitted), then hits that keep their entry.
        for _ in 0..4 {
            assert!(auth.verify(&token).await.is_ok());
        }
        assert_eq!(
            auth.cache_stats().unwrap().hits,
            hits + 2,
            "the token of {} answered from the cache",
            testkit::thumbprint(&key.jwk())
        );
    }
    assert_eq!(
        auth.cache_stats().unwrap().entries,
        2,
        "both tokens stay cached"
    );
    assert_eq!(
        denied(&auth, &long_lived(&stranger).sign()).await,
        AuthErrorKind::Signature
    );
    jwks.assert_async().await;
}

/// Each way the endpoint can fail: the cached set keeps verifying (stale), and the store
/// recovers once the endpoint does.
#[tokio::test]
async fn endpoint_failures_keep_the_cached_set_and_the_store_recovers() {
    type Expect = fn(&FetchError) -> bool;
    let cases: [(Failure, Expect); 6] = [
        (Failure::Status(500), |e| {
            matches!(e, FetchError::Status(500))
        }),
        (Failure::Garbage, |e| matches!(e, FetchError::Json(_))),
        (Failure::Oversize(8192), |e| {
            matches!(e, FetchError::TooLarge(4096))
        }),
        (Failure::OversizeChunked(8192), |e| {
            matches!(e, FetchError::TooLarge(4096))
        }),
        (Failure::Redirect, |e| matches!(e, FetchError::Status(302))),
        (Failure::Status(404), |e| {
            matches!(e, FetchError::Status(404))
        }),
    ];
    for (failure, expected) in cases {
        let clock = clock();
        let mut issuer = MockIssuer::start().await;
        let good = issuer
            .jwks_mock(&[&keys::ec()])
            .expect(1)
            .create_async()
            .await;
        let elsewhere = issuer
            .server
            .mock("GET", "/elsewhere.json")
            .expect(0)
            .create_async()
            .await;
        let mut settings = store_settings(issuer.jwks_url());
        settings.jwks.max_body_bytes = 4096;
        let auth = auth_with(&settings, &clock);
        let t = long_lived(&keys::ec()).sign();
        assert!(auth.verify(&t).await.is_ok(), "{failure:?}");
        good.assert_async().await;
        good.remove_async().await;

        let failing = issuer.failing_mock(failure).expect(1).create_async().await;
        clock.advance(600);
        let error = failed(store(&auth).tick().await);
        assert!(expected(&error), "{failure:?}: {error}");
        assert!(
            auth.verify(&t).await.is_ok(),
            "{failure:?}: stale set serves"
        );
        assert_eq!(store(&auth).status().state, StoreState::Stale);
        assert!(auth.is_ready());
        failing.assert_async().await;
        elsewhere.assert_async().await;

        failing.remove_async().await;
        let back = issuer
            .jwks_mock(&[&keys::ec()])
            .expect(1)
            .create_async()
            .await;
        assert!(store(&auth).tick().await.is_none(), "backing off");
        clock.advance(1);
        assert!(store(&auth).tick().await.is_some_and(|o| o.is_success()));
        assert_eq!(store(&auth).status().state, StoreState::Loaded);
        assert!(auth.verify(&t).await.is_ok());
        back.assert_async().await;
    }
}

/// A hanging endpoint (reached through discovery, so the set could be loaded first): the fetch
/// ends at its 1 s timeout, the cached set keeps verifying, and the store recovers.
#[tokio::test]
async fn hanging_endpoint_times_out_and_the_store_recovers() {
    let clock = clock();
    let hang = Hang::start();
    let mut issuer = MockIssuer::start().await;
    let iss = issuer.issuer();
    let discovery = issuer.discovery_mock(&iss).create_async().await;
    let _jwks = issuer.serve_jwks(&[&keys::ec()]).await;
    let settings = AuthSettings {
        jwks_url: None,
        discovery_url: Some(issuer.url()),
        issuer: Some(iss.clone()),
        ..store_settings(String::new())
    };
    let auth = auth_with(&settings, &clock);
    let t = long_lived(&keys::ec()).claim("iss", iss.clone()).sign();
    assert!(auth.verify(&t).await.is_ok());

    discovery.remove_async().await;
    let hanging = issuer
        .discovery_mock_with_jwks_uri(&iss, &hang.jwks_url())
        .create_async()
        .await;
    clock.advance(600);
    let started = Instant::now();
    let error = failed(store(&auth).tick().await);
    assert!(
        matches!(&*error, FetchError::Http(e) if e.is_timeout()),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(auth.verify(&t).await.is_ok());

    hanging.remove_async().await;
    let _discovery = issuer.discovery_mock(&iss).create_async().await;
    clock.advance(1);
    assert!(store(&auth).tick().await.is_some_and(|o| o.is_success()));
    assert_eq!(store(&auth).status().state, StoreState::Loaded);
}

/// A 503's `Retry-After` is the rest of the key store's backoff: a client that waits that long
/// finds a fetch allowed, and none that comes back sooner causes one.
#[tokio::test]
async fn retry_after_of_a_503_is_the_rest_of_the_backoff() {
    let t = long_lived(&keys::ec()).sign();
    let mut issuer = MockIssuer::start().await;
    let failing = issuer
        .failing_mock(Failure::Status(500))
        .expect(3)
        .create_async()
        .await;
    let clock = clock();
    let auth = auth_with(&store_settings(issuer.jwks_url()), &clock);
    let retry_after = |err: auth_core::AuthError| -> String {
        assert_eq!(err.kind(), &AuthErrorKind::Unavailable);
        let res = err.to_response();
        assert_eq!(res.status(), 503);
        res.headers()["retry-after"].to_str().unwrap().to_owned()
    };
    // Failure 1: backoff 1 s (auth.jwks.backoff_initial_seconds), doubled after each failure.
    assert_eq!(retry_after(auth.verify(&t).await.unwrap_err()), "1");
    clock.advance(1);
    assert_eq!(retry_after(auth.verify(&t).await.unwrap_err()), "2");
    clock.advance(2);
    assert_eq!(retry_after(auth.verify(&t).await.unwrap_err()), "4");
    // Inside the backoff: no fetch, and what is left of it.
    clock.advance(1);
    assert_eq!(retry_after(auth.verify(&t).await.unwrap_err()), "3");
    clock.advance(2);
    assert_eq!(retry_after(auth.verify(&t).await.unwrap_err()), "1");
    failing.assert_async().await;
    assert_eq!(store(&auth).status().attempts, 3);
}

#[tokio::test]
async fn nothing_cached_and_endpoint_down_is_503_never_a_hang() {
    let t = long_lived(&keys::ec()).sign();

    let mut issuer = MockIssuer::start().await;
    let failing = issuer
        .failing_mock(Failure::Status(500))
        .expect(1)
        .create_async()
        .await;
    let auth = auth(&store_settings(issuer.jwks_url()));
    let err = auth.verify(&t).await.unwrap_err();
    assert_eq!(err.kind(), &AuthErrorKind::Unavailable);
    let res = err.to_response();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    // Backing off: the next request gets 503 at once, without a fetch.
    assert_eq!(
        auth.verify(&t).await.unwrap_err().kind(),
        &AuthErrorKind::Unavailable
    );
    failing.assert_async().await;

    let hang = Hang::start();
    let auth = crate::helpers::auth(&store_settings(hang.jwks_url()));
    let started = Instant::now();
    let err = auth.verify(&t).await.unwrap_err();
    assert_eq!(err.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    let refused = crate::helpers::auth(&store_settings("http://127.0.0.1:9/jwks.json".into()));
    assert_eq!(refused.verify(&t).await.unwrap_err().status(), 503);
}

#[tokio::test]
async fn max_age_is_respected_and_clamped() {
    for (cache_control, ttl) in [
        (Some("public, max-age=120"), 120),
        (Some("max-age=5"), 60),
        (Some("max-age=9999999"), 86_400),
        (Some("no-store"), 60),
        (None, 600),
    ] {
        let clock = clock();
        let mut issuer = MockIssuer::start().await;
        let mut mock = issuer.jwks_mock(&[&keys::ec()]).expect(2);
        if let Some(value) = cache_control {
            mock = mock.with_header("cache-control", value);
        }
        let jwks = mock.create_async().await;
        let auth = auth_with(&store_settings(issuer.jwks_url()), &clock);
        assert!(auth.load_keys().await);
        let status = store(&auth).status();
        assert_eq!(status.expires_at, Some(NOW + ttl), "{cache_control:?}");
        // The refresh is due ahead of expiry (80–90 % of the TTL), not before.
        let refresh_at = status.refresh_at.unwrap();
        assert!(
            (NOW + ttl * 8 / 10..=NOW + ttl * 9 / 10).contains(&refresh_at),
            "{cache_control:?}: {refresh_at}"
        );
        clock.set(NOW + ttl * 3 / 4);
        assert!(store(&auth).tick().await.is_none(), "{cache_control:?}");
        clock.set(NOW + ttl * 9 / 10);
        assert!(store(&auth).tick().await.is_some(), "{cache_control:?}");
        jwks.assert_async().await;
    }
}

#[tokio::test]
async fn etag_revalidation_304_keeps_the_set_and_renews_its_age() {
    let clock = clock();
    let mut issuer = MockIssuer::start().await;
    let body = jwks_json(&[&keys::ec()]).to_string();
    let first = issuer
        .server
        .mock("GET", "/jwks.json")
        .match_header("if-none-match", Matcher::Missing)
        .with_header("etag", "\"v1\"")
        .with_header("cache-control", "max-age=300")
        .with_body(body)
        .expect(1)
        .create_async()
        .await;
    let revalidated = issuer
        .server
        .mock("GET", "/jwks.json")
        .match_header("if-none-match", "\"v1\"")
        .with_status(304)
        .with_header("cache-control", "max-age=300")
        .expect(1)
        .create_async()
        .await;
    let auth = auth_with(&store_settings(issuer.jwks_url()), &clock);
    let t = long_lived(&keys::ec()).sign();
    assert!(auth.verify(&t).await.is_ok());
    assert_eq!(store(&auth).status().etag.as_deref(), Some("\"v1\""));

    clock.advance(300);
    assert!(matches!(
        store(&auth).tick().await,
        Some(FetchOutcome::NotModified)
    ));
    let status = store(&auth).status();
    assert_eq!(status.state, StoreState::Loaded);
    assert_eq!(status.fetched_at, Some(NOW + 300));
    assert_eq!(status.expires_at, Some(NOW + 600));
    assert_eq!(status.keys, 1);
    assert!(auth.verify(&t).await.is_ok());
    first.assert_async().await;
    revalidated.assert_async().await;
}

/// A 304 without `Cache-Control` keeps the stored response's freshness (RFC 9111 §4.3.4):
/// the set loaded with `max-age=60` is renewed for 60 s, not for the 600 s default. Before, a
/// key the issuer withdrew kept verifying ten times longer than the issuer asked.
#[tokio::test]
async fn a_304_without_cache_control_renews_for_the_stored_max_age() {
    let clock = clock();
    let mut issuer = MockIssuer::start().await;
    let body = jwks_json(&[&keys::ec()]).to_string();
    let _first = issuer
        .server
        .mock("GET", "/jwks.json")
        .match_header("if-none-match", Matcher::Missing)
        .with_header("etag", "\"v1\"")
        .with_header("cache-control", "max-age=60")
        .with_body(body)
        .create_async()
        .await;
    let _revalidated = issuer
        .server
        .mock("GET", "/jwks.json")
        .match_header("if-none-match", "\"v1\"")
        .with_status(304)
        .create_async()
        .await;
    let auth = auth_with(&store_settings(issuer.jwks_url()), &clock);
    assert!(auth.verify(&long_lived(&keys::ec()).sign()).await.is_ok());
    let status = store(&auth).status();
    assert_eq!(status.expires_at, Some(NOW + 60));

    clock.advance(60);
    assert!(matches!(
        store(&auth).tick().await,
        Some(FetchOutcome::NotModified)
    ));
    let status = store(&auth).status();
    assert_eq!(status.fetched_at, Some(NOW + 60));
    assert_eq!(status.expires_at, Some(NOW + 120));
}

#[tokio::test]
async fn unsupported_keys_are_skipped_while_the_others_work() {
    let mut issuer = MockIssuer::start().await;
    let mut doc = jwks_json(&[&keys::ec(), &keys::ed()]);
    let list = doc["keys"].as_array_mut().unwrap();
    for (_, jwk) in unsupported_jwks() {
        list.insert(0, jwk);
    }
    let jwks = issuer.jwks_doc_mock(&doc).expect(1).create_async().await;
    let auth = auth(&store_settings(issuer.jwks_url()));
    assert!(matches!(
        store(&auth).refresh_now().await,
        FetchOutcome::Loaded {
            keys: 2,
            skipped: 7
        }
    ));
    assert!(auth.verify(&long_lived(&keys::ec()).sign()).await.is_ok());
    assert!(auth.verify(&long_lived(&keys::ed()).sign()).await.is_ok());
    let enc = long_lived(&keys::ec()).kid("enc-1").sign();
    assert_eq!(denied(&auth, &enc).await, AuthErrorKind::UnknownKid);
    jwks.assert_async().await;
}

#[tokio::test]
async fn token_without_kid_needs_exactly_one_fitting_key() {
    let mut issuer = MockIssuer::start().await;
    let other_ec = TestKey::generate("ES256");
    let jwks = issuer
        .jwks_mock(&[&keys::ec(), &keys::ed()])
        .expect(1)
        .create_async()
        .await;
    let auth = auth(&store_settings(issuer.jwks_url()));
    assert!(
        auth.verify(&long_lived(&keys::ec()).without_header("kid").sign())
            .await
            .is_ok()
    );
    jwks.assert_async().await;

    let mut issuer = MockIssuer::start().await;
    let jwks = issuer
        .jwks_mock(&[&keys::ec(), &other_ec])
        .expect(1)
        .create_async()
        .await;
    let auth = crate::helpers::auth(&store_settings(issuer.jwks_url()));
    let no_kid = long_lived(&keys::ec()).without_header("kid").sign();
    assert_eq!(denied(&auth, &no_kid).await, AuthErrorKind::UnknownKid);
    assert_eq!(denied(&auth, &no_kid).await, AuthErrorKind::UnknownKid);
    jwks.assert_async().await; // ambiguity is no reason to refresh
}

#[tokio::test]
async fn readiness_not_loaded_then_loaded_stale_and_past_max_staleness() {
    let clock = clock();
    let mut issuer = MockIssuer::start().await;
    let good = issuer
        .jwks_mock(&[&keys::ec()])
        .expect(1)
        .create_async()
        .await;
    let mut settings = store_settings(issuer.jwks_url());
    settings.jwks.max_stale_seconds = 3600;
    let auth = auth_with(&settings, &clock);
    let t = long_lived(&keys::ec()).sign();
    assert!(!auth.is_ready());
    assert_eq!(store(&auth).status().state, StoreState::Unavailable);

    assert!(auth.verify(&t).await.is_ok());
    assert!(auth.is_ready());
    assert_eq!(store(&auth).status().state, StoreState::Loaded);
    good.assert_async().await;
    good.remove_async().await;

    let _down = issuer
        .failing_mock(Failure::Status(503))
        .create_async()
        .await;
    clock.advance(600);
    assert!(store(&auth).tick().await.is_some_and(|o| !o.is_success()));
    assert!(auth.is_ready(), "stale but within max staleness");
    assert_eq!(store(&auth).status().state, StoreState::Stale);
    clock.set(NOW + 600 + 3599);
    assert!(auth.is_ready());
    assert!(
        auth.verify(&t).await.is_ok(),
        "the stale set still verifies"
    );

    clock.set(NOW + 600 + 3600);
    assert!(!auth.is_ready(), "past max staleness");
    assert_eq!(store(&auth).status().state, StoreState::Unavailable);
    let err = auth.verify(&t).await.unwrap_err();
    assert_eq!(err.kind(), &AuthErrorKind::Unavailable);
    assert_eq!(err.status(), 503);
}

#[tokio::test]
async fn failures_back_off_exponentially_capped_at_10_s_until_loaded() {
    let clock = clock();
    let mut issuer = MockIssuer::start().await;
    let failing = issuer
        .failing_mock(Failure::Status(500))
        .expect(7)
        .create_async()
        .await;
    let auth = auth_with(&store_settings(issuer.jwks_url()), &clock);
    let store = store(&auth);
    let mut waits = Vec::new();
    for _ in 0..7 {
        let before = clock.now();
        assert!(store.tick().await.is_some_and(|o| !o.is_success()));
        let next = store.status().next_attempt_at;
        waits.push(next - before);
        assert!(store.tick().await.is_none(), "backing off");
        clock.set(next);
    }
    assert_eq!(waits, [1, 2, 4, 8, 10, 10, 10]);
    failing.assert_async().await;

    // With a set held, the cap is auth.jwks.backoff_max_seconds (300).
    failing.remove_async().await;
    let good = issuer.serve_jwks(&[&keys::ec()]).await;
    assert!(store.tick().await.is_some_and(|o| o.is_success()));
    assert_eq!(store.status().failures, 0);
    good.remove_async().await;
    let _failing = issuer
        .failing_mock(Failure::Status(500))
        .create_async()
        .await;
    clock.advance(600);
    let mut waits = Vec::new();
    for _ in 0..11 {
        let before = clock.now();
        assert!(store.tick().await.is_some_and(|o| !o.is_success()));
        let next = store.status().next_attempt_at;
        waits.push(next - before);
        clock.set(next);
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
}

/// A backoff that grew to `auth.jwks.backoff_max_seconds` (300) while a set was held ends,
/// once the set is past maximum staleness, where the startup cap (10) would have ended it, and
/// a 503 says so: before, the service answered 503 with `Retry-After` of about five minutes,
/// and fetched nothing, however soon the issuer came back.
#[tokio::test]
async fn a_long_backoff_ends_once_the_set_is_past_max_staleness() {
    let clock = clock();
    let mut issuer = MockIssuer::start().await;
    let good = issuer.jwks_mock(&[&keys::ec()]).create_async().await;
    let mut settings = store_settings(issuer.jwks_url());
    settings.jwks.max_stale_seconds = 3600;
    let auth = auth_with(&settings, &clock);
    let t = long_lived(&keys::ec()).sign();
    assert!(auth.verify(&t).await.is_ok());
    let stale_until = store(&auth).status().stale_until.unwrap();
    good.remove_async().await;
    let down = issuer
        .failing_mock(Failure::Status(503))
        .create_async()
        .await;

    // Fail on schedule while the set is usable, until the next attempt lies past its end.
    clock.advance(600);
    let mut last_wait = 0;
    loop {
        let before = clock.now();
        assert!(store(&auth).tick().await.is_some_and(|o| !o.is_success()));
        let next = store(&auth).status().next_attempt_at;
        last_wait = last_wait.max(next - before);
        if next > stale_until {
            break;
        }
        clock.set(next);
    }
    assert_eq!(
        last_wait, 300,
        "the backoff reached its cap with a set held"
    );
    let failed_at = clock.now();
    assert!(failed_at < stale_until);

    // Past maximum staleness: the startup cap, counted from the failure.
    clock.set(stale_until);
    assert!(!auth.is_ready());
    assert_eq!(store(&auth).status().next_attempt_at, failed_at + 10);
    let err = auth.verify(&t).await.unwrap_err();
    assert_eq!(err.kind(), &AuthErrorKind::Unavailable);
    let retry_after: u64 = err.to_response().headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after <= 10, "Retry-After {retry_after}");

    // The issuer is back: the next request after that wait loads the set.
    down.remove_async().await;
    let _good = issuer.jwks_mock(&[&keys::ec()]).create_async().await;
    clock.advance(retry_after);
    assert!(auth.verify(&t).await.is_ok());
}

/// The background task loads the set at startup without any request, and retries after a
/// failure on the backoff schedule.
#[tokio::test]
async fn background_task_loads_at_startup_and_retries() {
    let clock = clock();
    let mut issuer = MockIssuer::start().await;
    let failing = issuer
        .failing_mock(Failure::Status(500))
        .expect(1)
        .create_async()
        .await;
    let mut settings = store_settings(issuer.jwks_url());
    settings.jwks.background_refresh = true;
    let auth = auth_with(&settings, &clock);
    let store = store(&auth);
    tokio::time::timeout(Duration::from_secs(5), store.wait_for_attempts(1))
        .await
        .expect("the background task fetches at startup");
    assert!(!auth.is_ready());
    failing.assert_async().await;
    failing.remove_async().await;
    let jwks = issuer
        .jwks_mock(&[&keys::ec()])
        .expect(1)
        .create_async()
        .await;
    clock.advance(1);
    tokio::time::timeout(Duration::from_secs(5), store.wait_for_attempts(2))
        .await
        .expect("the background task retries");
    assert!(auth.is_ready());
    jwks.assert_async().await;
}

/// The wall clock steps back an hour after a load (NTP corrects a clock that ran fast): a new
/// kid still gets its refresh, instead of the cooldown counted from the "future" load refusing
/// it for an hour. (Backoff and the scheduled refresh are reset by the same rule.)
#[tokio::test]
async fn a_clock_stepped_back_does_not_freeze_the_schedule() {
    let clock = clock();
    let ed = keys::ed();
    let (auth, _issuer, both) = loaded_then_rotated(&clock).await;
    clock.set(NOW - 3600);
    let token = long_lived(&ed).claim("iat", NOW - 3600).sign();
    assert!(auth.verify(&token).await.is_ok());
    both.assert_async().await;
}

/// A store built and loaded in one runtime, then served from another (the first one gone, and
/// its background task with it): the next request starts the background task again, and it
/// refreshes the set when due. Before, the store thought its task still ran, and a key the
/// issuer withdrew kept verifying until the set was past maximum staleness.
#[test]
fn the_background_task_restarts_in_the_runtime_that_serves() {
    let clock = clock();
    let first = tokio::runtime::Runtime::new().unwrap();
    let (auth, _issuer, _jwks) = first.block_on(async {
        let mut issuer = MockIssuer::start().await;
        let jwks = issuer.jwks_mock(&[&keys::ec()]).create_async().await;
        let mut settings = store_settings(issuer.jwks_url());
        settings.jwks.background_refresh = true;
        let auth = auth_with(&settings, &clock);
        assert!(auth.verify(&long_lived(&keys::ec()).sign()).await.is_ok());
        (auth, issuer, jwks)
    });
    drop(first);
    let attempts = store(&auth).status().attempts;
    clock.advance(700);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        assert!(auth.verify(&long_lived(&keys::ec()).sign()).await.is_ok());
        tokio::time::timeout(
            Duration::from_secs(5),
            store(&auth).wait_for_attempts(attempts + 1),
        )
        .await
        .expect("the restarted background task refreshes the set once it is due");
    });
}

/// Like the test above, but the first runtime is dropped before the background task it was
/// given ever ran (a current-thread runtime returns from `block_on` without polling the tasks
/// it queued): the task is still started again by the next request, and retries a failed fetch
/// on its own.
#[test]
fn a_background_task_dropped_before_its_first_poll_restarts() {
    let clock = clock();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (auth, _issuer, _failing) = first.block_on(async {
        let mut issuer = MockIssuer::start().await;
        let failing = issuer
            .failing_mock(Failure::Status(500))
            .create_async()
            .await;
        let mut settings = store_settings(issuer.jwks_url());
        settings.jwks.background_refresh = true;
        (auth_with(&settings, &clock), issuer, failing)
    });
    drop(first);
    assert_eq!(store(&auth).status().attempts, 0, "the task never ran");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let err = auth
            .verify(&long_lived(&keys::ec()).sign())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &AuthErrorKind::Unavailable);
        clock.advance(1);
        tokio::time::timeout(Duration::from_secs(5), store(&auth).wait_for_attempts(2))
            .await
            .expect("the restarted background task retries after the backoff");
    });
}

/// In production (`refuse_dev_keys`, set by the config layer), a fetched dev-only fixtures key is
/// skipped: a token it signed is refused while the issuer's real keys keep working.
#[tokio::test]
async fn production_never_trusts_a_fetched_fixtures_key() {
    let real = TestKey::generate("ES256");
    let mut issuer = MockIssuer::start().await;
    let both = issuer.serve_jwks(&[&keys::ec(), &real]).await;
    let mut settings = store_settings(issuer.jwks_url());
    settings.jwks.refuse_dev_keys = true;
    let auth = auth(&settings);
    assert!(auth.verify(&long_lived(&real).sign()).await.is_ok());
    assert!(
        auth.verify(&long_lived(&keys::ec()).sign()).await.is_err(),
        "a fixtures key verified in production"
    );
    // Locally the same set verifies both.
    let local =
        auth_core::Auth::with_clock(&store_settings(issuer.jwks_url()), REALM, clock()).unwrap();
    assert!(local.verify(&long_lived(&keys::ec()).sign()).await.is_ok());
    // A set of nothing but fixtures keys is a failed fetch: the last good set stays (it had
    // been swapped for an empty one, refusing every token while /ready said yes).
    let _fixtures_only = issuer.rotate(both, &[&keys::ec()]).await;
    let e = failed(Some(store(&auth).refresh_now().await));
    assert!(matches!(*e, FetchError::NoKeys), "{e:?}");
    assert!(auth.verify(&long_lived(&real).sign()).await.is_ok());
    assert!(auth.is_ready());
}

/// A fixtures RSA key published with its modulus padded by a zero byte (as Java's
/// `BigInteger.toByteArray` writes it) is the same key: production still never trusts it.
/// Before, its thumbprint was taken from the padded text and missed `dev::THUMBPRINTS`.
#[tokio::test]
async fn a_fixtures_key_with_a_padded_modulus_is_still_a_fixtures_key() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut doc = jwks_json(&[&keys::rsa()]);
    let n = doc["keys"][0]["n"].as_str().unwrap().to_owned();
    let padded = [&[0u8][..], &URL_SAFE_NO_PAD.decode(n).unwrap()].concat();
    doc["keys"][0]["n"] = URL_SAFE_NO_PAD.encode(padded).into();
    let token = long_lived(&keys::rsa()).sign();
    // Locally the padded key verifies: it is the fixtures key. Production skips it, as it does
    // the unpadded one.
    assert!(verifies_locally(&doc, auth_core::Alg::RS256, &token).await);
    production_trusts_no_key_of(&doc, auth_core::Alg::RS256, &token).await;
}

/// Whether a local verifier of `alg` with the key set `doc` accepts `token`.
async fn verifies_locally(doc: &serde_json::Value, alg: auth_core::Alg, token: &str) -> bool {
    let mut issuer = MockIssuer::start().await;
    let _doc = issuer.jwks_doc_mock(doc).create_async().await;
    let mut settings = store_settings(issuer.jwks_url());
    settings.algorithms = vec![alg];
    auth(&settings).verify(token).await.is_ok()
}

/// Asserts a production verifier of `alg` with the key set `doc` refuses `token` and keeps no
/// key of `doc`.
async fn production_trusts_no_key_of(doc: &serde_json::Value, alg: auth_core::Alg, token: &str) {
    let mut issuer = MockIssuer::start().await;
    let _doc = issuer.jwks_doc_mock(doc).create_async().await;
    let mut settings = store_settings(issuer.jwks_url());
    settings.algorithms = vec![alg];
    settings.jwks.refuse_dev_keys = true;
    let production = auth(&settings);
    assert!(production.verify(token).await.is_err());
    let e = failed(Some(store(&production).refresh_now().await));
    assert!(matches!(*e, FetchError::NoKeys), "{e:?}");
}

/// The fixtures P-256 key with its coordinates split otherwise (`x` = X‖Y, `y` empty) makes
/// the same point for jsonwebtoken, which joins them unchecked, under another thumbprint: it
/// verified in production, past the dev-key refusal. A coordinate of any length but 32 bytes is
/// refused (RFC 7518 §6.2.1.2–3), everywhere.
#[tokio::test]
async fn a_fixtures_key_with_its_coordinates_split_otherwise_is_refused() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = long_lived(&keys::ec()).sign();
    let coordinate = |doc: &serde_json::Value, c: &str| {
        URL_SAFE_NO_PAD
            .decode(doc["keys"][0][c].as_str().unwrap())
            .unwrap()
    };
    let whole = jwks_json(&[&keys::ec()]);
    let (x, y) = (coordinate(&whole, "x"), coordinate(&whole, "y"));
    for (sx, sy) in [
        ([x.clone(), y.clone()].concat(), Vec::new()),
        ([x.clone(), y[..1].to_vec()].concat(), y[1..].to_vec()),
    ] {
        let mut doc = whole.clone();
        doc["keys"][0]["x"] = URL_SAFE_NO_PAD.encode(&sx).into();
        doc["keys"][0]["y"] = URL_SAFE_NO_PAD.encode(&sy).into();
        production_trusts_no_key_of(&doc, auth_core::Alg::ES256, &token).await;
    }
}

/// RFC 7519 §4.1.4: a token is accepted only before its `exp`, at the time it is accepted. A
/// request that waits for a JWKS fetch (here the first load, which takes 120 s of the clock)
/// is judged at the end of that wait, not at its start.
#[tokio::test]
async fn time_checks_use_the_clock_after_a_wait_for_keys() {
    let clock = clock();
    let mut issuer = MockIssuer::start().await;
    let during_fetch = clock.clone();
    let _jwks = issuer
        .jwks_mock_with(&[&keys::ec()], move || during_fetch.advance(120))
        .create_async()
        .await;
    let settings = AuthSettings {
        leeway_seconds: 30,
        ..store_settings(issuer.jwks_url())
    };
    let auth = auth_with(&settings, &clock);
    // Valid when the request starts (exp = NOW + 60, leeway 30), expired once the keys came.
    let token = testkit::mint(&keys::ec())
        .claim("iat", NOW)
        .claim("exp", NOW + 60)
        .sign();
    assert_eq!(denied(&auth, &token).await, AuthErrorKind::Expired);
    assert_eq!(clock.now(), NOW + 120);
}
