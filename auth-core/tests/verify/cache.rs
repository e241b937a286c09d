//! The verified-token cache through `Auth::verify`: hits skip the signature, never outlive `exp`
//! or the key, stay bounded, and belong to one verifier.

use auth_core::cache::CacheStats;
use auth_core::store::FetchOutcome;
use auth_core::{AuthErrorKind, AuthSettings, CacheSettings};
use testkit::{MockIssuer, NOW, TestKey, keys, mint};

use crate::helpers::*;
use crate::store::{long_lived, store, store_settings};

fn with_entries(settings: AuthSettings, max_entries: usize) -> AuthSettings {
    AuthSettings {
        cache: CacheSettings { max_entries },
        ..settings
    }
}

#[tokio::test]
async fn a_hit_skips_signature_work() {
    let auth = auth(&pem_settings("ec-public.pem"));
    let token = mint(&keys::ec()).sign();
    let first = auth.verify(&token).await.unwrap();
    // Every miss, and only a miss, goes on to the signature check. A token is admitted the
    // second time it verifies (the doorkeeper), so the second request misses too.
    assert_eq!(auth.cache_stats().unwrap().misses, 1);
    assert_eq!(auth.cache_stats().unwrap().entries, 0, "seen once: not yet");
    let cached = auth.verify(&token).await.unwrap();
    assert_eq!(cached, first);
    assert_eq!(auth.cache_stats().unwrap().entries, 1, "seen twice: cached");
    for _ in 0..3 {
        let hit = auth.verify(&token).await.unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&hit, &cached),
            "a hit shares the claims"
        );
    }
    assert_eq!(
        auth.cache_stats().unwrap(),
        CacheStats {
            hits: 3,
            misses: 2,
            entries: 1
        }
    );
}

#[tokio::test]
async fn the_cache_is_on_by_default_and_can_be_switched_off() {
    assert_eq!(
        AuthSettings::default().cache.max_entries,
        auth_core::cache::DEFAULT_MAX_ENTRIES
    );
    let auth = auth(&with_entries(pem_settings("ec-public.pem"), 0));
    assert!(auth.cache_stats().is_none());
    let token = mint(&keys::ec()).sign();
    assert!(auth.verify(&token).await.is_ok());
    assert!(auth.verify(&token).await.is_ok());
}

#[tokio::test]
async fn an_expired_cached_token_is_rejected() {
    let clock = clock();
    let auth = auth_with(&secret_settings(), &clock);
    let token = mint(&keys::hs_secret()).valid_from(NOW, 60).sign();
    for _ in 0..3 {
        assert!(auth.verify(&token).await.is_ok());
    }
    assert_eq!(auth.cache_stats().unwrap().hits, 1);
    // Past exp plus the leeway (30 s): the cached entry must not answer.
    clock.advance(60 + 30);
    assert_eq!(denied(&auth, &token).await, AuthErrorKind::Expired);
    assert_eq!(auth.cache_stats().unwrap().entries, 0);
}

#[tokio::test]
async fn a_cached_entry_never_answers_past_exp() {
    let clock = clock();
    let auth = auth_with(&secret_settings(), &clock);
    let token = mint(&keys::hs_secret()).valid_from(NOW, 60).sign();
    assert!(auth.verify(&token).await.is_ok());
    // Within the leeway after exp the token is still accepted, but by full verification.
    clock.advance(60);
    let before = auth.cache_stats().unwrap();
    assert!(auth.verify(&token).await.is_ok());
    let after = auth.cache_stats().unwrap();
    assert_eq!(after.hits, before.hits);
    assert_eq!(after.misses, before.misses + 1);
    assert_eq!(after.entries, 0, "not cached again past exp");
}

#[tokio::test]
async fn a_token_whose_key_was_removed_is_rejected_on_the_next_request() {
    let clock = clock();
    let (ec, ed) = (keys::ec(), keys::ed());
    let mut issuer = MockIssuer::start().await;
    let both = issuer.serve_jwks(&[&ec, &ed]).await;
    let auth = auth_with(&store_settings(issuer.jwks_url()), &clock);
    let token = long_lived(&ec).sign();
    for _ in 0..3 {
        assert!(auth.verify(&token).await.is_ok());
    }
    assert_eq!(auth.cache_stats().unwrap().hits, 1);

    // The issuer withdraws the EC key; the store's next scheduled refresh drops it.
    both.remove_async().await;
    let _only_ed = issuer.serve_jwks(&[&ed]).await;
    clock.advance(600);
    assert!(store(&auth).tick().await.is_some_and(|o| o.is_success()));
    assert_eq!(
        auth.cache_stats().unwrap().entries,
        0,
        "dropped as the set without its key loaded, before any request"
    );
    assert_eq!(denied(&auth, &token).await, AuthErrorKind::UnknownKid);
    assert_eq!(auth.cache_stats().unwrap().entries, 0);
    assert!(auth.verify(&long_lived(&ed).sign()).await.is_ok());
}

#[tokio::test]
async fn a_refreshed_set_that_keeps_the_key_keeps_its_entries() {
    let clock = clock();
    let (ec, ed) = (keys::ec(), keys::ed());
    let mut issuer = MockIssuer::start().await;
    let first = issuer.serve_jwks(&[&ec]).await;
    let auth = auth_with(&store_settings(issuer.jwks_url()), &clock);
    let token = long_lived(&ec).sign();
    assert!(auth.verify(&token).await.is_ok());
    assert!(auth.verify(&token).await.is_ok());
    assert_eq!(auth.cache_stats().unwrap().entries, 1);

    // A new set (a key added beside it) is loaded: the entry of the key still there stays.
    first.remove_async().await;
    let _both = issuer.serve_jwks(&[&ec, &ed]).await;
    clock.advance(600);
    assert!(matches!(
        store(&auth).tick().await,
        Some(FetchOutcome::Loaded { keys: 2, .. })
    ));
    assert_eq!(auth.cache_stats().unwrap().entries, 1);
    let hits = auth.cache_stats().unwrap().hits;
    assert!(auth.verify(&token).await.is_ok());
    assert_eq!(auth.cache_stats().unwrap().hits, hits + 1, "still a hit");
}

#[tokio::test]
async fn a_cached_token_of_a_rekeyed_kid_is_verified_again() {
    let clock = clock();
    let old = TestKey::generate("ES256").with_kid("signing-key");
    let new = TestKey::generate("ES256").with_kid("signing-key");
    let mut issuer = MockIssuer::start().await;
    let first = issuer.serve_jwks(&[&old]).await;
    let auth = auth_with(&store_settings(issuer.jwks_url()), &clock);
    let token = long_lived(&old).sign();
    assert!(auth.verify(&token).await.is_ok());
    assert!(auth.verify(&token).await.is_ok());
    assert_eq!(auth.cache_stats().unwrap().entries, 1);

    // Same kid, new material: the entry's key thumbprint no longer matches, so no hit.
    first.remove_async().await;
    let _rekeyed = issuer.serve_jwks(&[&new]).await;
    clock.advance(600);
    assert!(store(&auth).tick().await.is_some_and(|o| o.is_success()));
    assert_eq!(
        auth.cache_stats().unwrap().entries,
        0,
        "the old material's entry dropped as the new set loaded"
    );
    assert_eq!(denied(&auth, &token).await, AuthErrorKind::Signature);
    assert!(auth.verify(&long_lived(&new).sign()).await.is_ok());
}

#[tokio::test]
async fn retain_keys_drops_entries_of_keys_that_left() {
    let auth = auth(&pem_settings("ec-public.pem"));
    let token = mint(&keys::ec()).sign();
    assert!(auth.verify(&token).await.is_ok());
    assert!(auth.verify(&token).await.is_ok());
    let cache = auth.cache().unwrap();
    assert_eq!(cache.stats().entries, 1);
    cache.retain_keys(&[keys::ed().kid.as_deref().unwrap()]);
    assert_eq!(cache.stats().entries, 0);
    cache.retain_keys(&[]);
    assert!(auth.verify(&token).await.is_ok());
    assert!(auth.verify(&token).await.is_ok());
    cache.retain_keys(&[keys::ec().kid.as_deref().unwrap()]);
    assert_eq!(cache.stats().entries, 1);
}

#[tokio::test]
async fn the_bound_holds_under_a_flood_of_distinct_tokens() {
    let auth = auth(&with_entries(secret_settings(), 64));
    for i in 0..1_000 {
        let token = mint(&keys::hs_secret())
            .claim("jti", format!("t{i}"))
            .sign();
        // Twice each, so that every one is admitted.
        assert!(auth.verify(&token).await.is_ok());
        assert!(auth.verify(&token).await.is_ok());
        assert!(auth.cache_stats().unwrap().entries <= 64);
    }
    let stats = auth.cache_stats().unwrap();
    assert_eq!((stats.entries, stats.hits, stats.misses), (64, 0, 2_000));
}

#[tokio::test]
async fn a_flood_of_single_use_tokens_leaves_the_cached_ones_in_place() {
    let auth = auth(&with_entries(secret_settings(), 64));
    let in_use = mint(&keys::hs_secret()).claim("jti", "in-use").sign();
    assert!(auth.verify(&in_use).await.is_ok());
    assert!(auth.verify(&in_use).await.is_ok());
    for i in 0..1_000 {
        let once = mint(&keys::hs_secret())
            .claim("jti", format!("once-{i}"))
            .sign();
        assert!(auth.verify(&once).await.is_ok());
    }
    assert_eq!(
        auth.cache_stats().unwrap().entries,
        1,
        "none of them admitted"
    );
    let hits = auth.cache_stats().unwrap().hits;
    assert!(auth.verify(&in_use).await.is_ok());
    assert_eq!(auth.cache_stats().unwrap().hits, hits + 1, "still cached");
}

#[tokio::test]
async fn a_cached_token_is_not_accepted_by_a_service_with_another_audience() {
    let todo = auth(&pem_settings("ed25519-public.pem"));
    let tasks_settings = AuthSettings {
        audience: vec!["tasks-api".into()],
        ..pem_settings("ed25519-public.pem")
    };
    let tasks = auth(&tasks_settings);
    let token = mint(&keys::ed()).sign();
    assert!(todo.verify(&token).await.is_ok());
    assert!(todo.verify(&token).await.is_ok());
    assert_eq!(denied(&tasks, &token).await, AuthErrorKind::Audience);
    assert_eq!(denied(&tasks, &token).await, AuthErrorKind::Audience);
    assert_eq!(tasks.cache_stats().unwrap().entries, 0);
}
