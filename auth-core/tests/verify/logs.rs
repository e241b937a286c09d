//! Denials are logged at debug with `kid` and `sub`; a token never appears in any log line.

use std::io::Write;
use std::sync::{Arc, Mutex};

use testkit::{Failure, MockIssuer, keys, mint};

use crate::helpers::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `test` on a current-thread runtime with a TRACE subscriber capturing every line.
fn capture<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // tracing-core caches each callsite's interest globally. With a single scoped subscriber
    // registered, a callsite first hit on another test's thread is judged by that thread's
    // (absent) subscriber alone and cached as "never": keep a second dispatcher registered so
    // every registration consults all of them, and recompute what was cached before.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        runtime.block_on(test())
    });
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn denial_is_logged_with_kid_and_sub_but_never_the_token() {
    let expired = mint(&keys::ec()).claim("exp", 1).sign();
    let forged = mint(&keys::ec()).with_signature(&[7; 64]);
    let logs = capture(|| async {
        let auth = auth(&pem_settings("ec-public.pem"));
        assert!(auth.verify(&expired).await.is_err());
        assert!(auth.verify(&forged).await.is_err());
    });
    let kid = keys::ec().kid.unwrap();
    let expired_line = logs
        .lines()
        .find(|l| l.contains("reason=\"expired\""))
        .expect(&logs);
    assert!(expired_line.contains("DEBUG"), "{expired_line}");
    assert!(expired_line.contains(&kid), "{expired_line}");
    assert!(expired_line.contains("alice"), "{expired_line}");
    let forged_line = logs
        .lines()
        .find(|l| l.contains("reason=\"signature\""))
        .expect(&logs);
    assert!(forged_line.contains(&kid), "{forged_line}");
    for token in [&expired, &forged] {
        for part in token.split('.').filter(|p| !p.is_empty()) {
            assert!(!logs.contains(part), "a token part was logged: {logs}");
        }
    }
}

/// One line per fetch attempt, with its outcome: loaded, not modified, failed.
#[test]
fn each_fetch_attempt_logs_one_line_with_its_outcome() {
    let logs = capture(|| async {
        let clock = clock();
        let mut issuer = MockIssuer::start().await;
        let good = issuer
            .jwks_mock(&[&keys::ec()])
            .with_header("etag", "\"v1\"")
            .create_async()
            .await;
        let auth = auth_with(&crate::store::store_settings(issuer.jwks_url()), &clock);
        let store = crate::store::store(&auth);
        assert!(store.refresh_now().await.is_success());
        good.remove_async().await;
        let _not_modified = issuer
            .server
            .mock("GET", "/jwks.json")
            .match_header("if-none-match", "\"v1\"")
            .with_status(304)
            .create_async()
            .await;
        assert!(store.refresh_now().await.is_success());
        _not_modified.remove_async().await;
        let _down = issuer
            .failing_mock(Failure::Status(500))
            .create_async()
            .await;
        assert!(!store.refresh_now().await.is_success());
    });
    let attempts: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("key set fetch"))
        .collect();
    assert_eq!(attempts.len(), 3, "{logs}");
    assert!(
        attempts[0].contains("INFO") && attempts[0].contains("outcome=\"ok\""),
        "{}",
        attempts[0]
    );
    assert!(attempts[0].contains("keys=1"), "{}", attempts[0]);
    assert!(
        attempts[1].contains("outcome=\"not_modified\""),
        "{}",
        attempts[1]
    );
    assert!(
        attempts[2].contains("WARN") && attempts[2].contains("outcome=\"status\""),
        "{}",
        attempts[2]
    );
    assert!(
        attempts[2].contains("unexpected status 500"),
        "{}",
        attempts[2]
    );
}
