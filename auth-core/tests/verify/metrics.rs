//! Every denial is counted in `auth_denials_total{reason}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use auth_core::filters::with_role;
use auth_core::verify::AuthErrorKind;
use auth_core::{Claims, handle_rejection};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use testkit::{keys, mint};
use warp::Filter;

use crate::helpers::*;

/// Counts `auth_denials_total` increments by their `reason` label.
#[derive(Default, Clone)]
struct Denials(Arc<Mutex<BTreeMap<String, u64>>>);

struct Handle(Denials, String);

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
    }
    fn absolute(&self, _: u64) {}
}

impl Recorder for Denials {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() != "auth_denials_total" {
            return Counter::noop();
        }
        let reason = key
            .labels()
            .find(|l| l.key() == "reason")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        Counter::from_arc(Arc::new(Handle(self.clone(), reason)))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn every_denial_is_counted_by_reason() {
    let denials = Denials::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&denials, || {
        runtime.block_on(async {
            let auth = auth(&pem_settings("ec-public.pem"));
            let admin = with_role(&auth, "admin")
                .map(|c: Arc<Claims>| c.subject().to_owned())
                .recover(handle_rejection);
            let send = |h: Option<String>| {
                let mut r = warp::test::request();
                if let Some(h) = h {
                    r = r.header("authorization", h);
                }
                r
            };
            send(None).reply(&admin).await;
            send(Some(format!(
                "Bearer {}",
                mint(&keys::ec()).claim("exp", 1).sign()
            )))
            .reply(&admin)
            .await;
            send(Some(format!(
                "Bearer {}",
                mint(&keys::ec()).with_signature(&[0; 64])
            )))
            .reply(&admin)
            .await;
            send(Some(format!("Bearer {}", mint(&keys::ec()).sign())))
                .reply(&admin)
                .await;
            send(Some("Basic YTpi".into())).reply(&admin).await;
            assert!(auth.verify("garbage").await.is_err());
            assert!(
                auth.verify(&mint(&keys::ec()).claim("aud", "x").sign())
                    .await
                    .is_err()
            );
            // A service's own rule (token-service's disabled account) counts too.
            let _ = auth_core::verify::AuthError::new(
                AuthErrorKind::Revoked("the account is disabled"),
                "demo",
            );
        })
    });
    let counted = denials.0.lock().unwrap().clone();
    let want: BTreeMap<String, u64> = [
        ("missing", 1),
        ("expired", 1),
        ("signature", 1),
        ("insufficient_scope", 1),
        ("scheme", 1),
        ("malformed", 1),
        ("audience", 1),
        ("revoked", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counted, want);
}

/// Every counter and gauge, by name and sorted `label=value` pairs.
#[derive(Default, Clone)]
struct Recorded {
    counters: Arc<Mutex<BTreeMap<String, u64>>>,
    gauges: Arc<Mutex<BTreeMap<String, f64>>>,
}

fn series(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

struct CounterHandle(Arc<Mutex<BTreeMap<String, u64>>>, String);

impl CounterFn for CounterHandle {
    fn increment(&self, value: u64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.0.lock().unwrap().insert(self.1.clone(), value);
    }
}

struct GaugeHandle(Arc<Mutex<BTreeMap<String, f64>>>, String);

impl metrics::GaugeFn for GaugeHandle {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.0.lock().unwrap().insert(self.1.clone(), value);
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(CounterHandle(self.counters.clone(), series(key))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(GaugeHandle(self.gauges.clone(), series(key))))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The key store's metrics: fetches by outcome, age, keys loaded and skipped, stale sets
/// served, unknown-kid rejections, refreshes skipped by the cooldown.
#[test]
fn key_store_metrics() {
    use auth_core::Clock as _;
    use testkit::{Failure, MockIssuer, NOW, jwks_json, unsupported_jwks};

    use crate::store::{long_lived, store, store_settings};

    let recorded = Recorded::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorded, || {
        runtime.block_on(async {
            let clock = clock();
            let mut issuer = MockIssuer::start().await;
            let mut doc = jwks_json(&[&keys::ec(), &keys::ed()]);
            for (_, jwk) in unsupported_jwks() {
                doc["keys"].as_array_mut().unwrap().push(jwk);
            }
            let good = issuer.jwks_doc_mock(&doc).create_async().await;
            let auth = auth_with(&store_settings(issuer.jwks_url()), &clock);
            assert!(auth.verify(&long_lived(&keys::ec()).sign()).await.is_ok());
            // An unknown kid within the cooldown of that load: 401 at once, no refresh.
            let unknown = long_lived(&keys::ec()).kid("rotated-away").sign();
            assert!(auth.verify(&unknown).await.is_err());
            good.remove_async().await;

            let _down = issuer
                .failing_mock(Failure::Status(500))
                .create_async()
                .await;
            clock.advance(600);
            assert!(store(&auth).tick().await.is_some_and(|o| !o.is_success()));
            assert!(auth.verify(&long_lived(&keys::ed()).sign()).await.is_ok());
            clock.advance(100);
            assert!(store(&auth).tick().await.is_some_and(|o| !o.is_success()));
            assert_eq!(clock.now(), NOW + 700);
        })
    });
    let counters = recorded.counters.lock().unwrap().clone();
    let gauges = recorded.gauges.lock().unwrap().clone();
    let count = |name: &str| counters.get(name).copied().unwrap_or_default();
    assert_eq!(
        count("auth_jwks_fetches_total{outcome=ok}"),
        1,
        "{counters:?}"
    );
    assert_eq!(
        count("auth_jwks_fetches_total{outcome=status}"),
        2,
        "{counters:?}"
    );
    assert_eq!(
        count("auth_jwks_keys_skipped_total{reason=kty}"),
        2,
        "{counters:?}"
    );
    assert_eq!(
        count("auth_jwks_keys_skipped_total{reason=curve}"),
        2,
        "{counters:?}"
    );
    assert_eq!(
        count("auth_jwks_keys_skipped_total{reason=alg}"),
        2,
        "{counters:?}"
    );
    assert_eq!(
        count("auth_jwks_keys_skipped_total{reason=use}"),
        1,
        "{counters:?}"
    );
    assert_eq!(
        count("auth_jwks_unknown_kid_rejections_total"),
        1,
        "{counters:?}"
    );
    assert_eq!(
        count("auth_jwks_refreshes_skipped_total{reason=cooldown}"),
        1,
        "{counters:?}"
    );
    assert_eq!(count("auth_jwks_stale_served_total"), 1, "{counters:?}");
    assert_eq!(
        gauges.get("auth_jwks_keys_loaded"),
        Some(&2.0),
        "{gauges:?}"
    );
    assert_eq!(
        gauges.get("auth_jwks_seconds_since_refresh"),
        Some(&700.0),
        "{gauges:?}"
    );
}
