//! Every denial is counted in `auth_denials_total{reason}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use auth_core::filters::with_role;
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
                .map(|c: Claims| c.subject().to_owned())
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
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counted, want);
}
