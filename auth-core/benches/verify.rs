//! What verification costs, per algorithm, next to its physical limit.
//!
//! - `full/<alg>`: [`Auth::verify`] with a static key source, a fixed clock and the cache off:
//!   everything a request pays for its token;
//! - `signature/<alg>`: [`verify_signature`] alone with a key parsed once: the limit;
//! - `signature_distinct/<alg>`: the same over 64 distinct signatures in turn: the limit for
//!   distinct tokens (ECDSA's table look-ups and branches depend on the signature);
//! - `signature_cold/<alg>`: the `signature` step after a write sweep over 1 MiB, more than a
//!   core's L2 here (512 KiB): the step as it runs after other work evicted what it had cached.
//!   A diagnostic, not a limit; `cargo xtask bench` leaves it out;
//! - `cache_hit/<alg>`: [`Auth::verify`] of a token already in the verified-token cache;
//! - `cache_miss/<alg>`: [`Auth::verify`] with the cache on and every token new to it (cycled
//!   through far more tokens than its doorkeeper remembers): full verification plus the cache's
//!   own work on a miss (lookup, doorkeeper).
//! - `request/<alg>`: a `GET /whoami`-like request through [`auth_core::filters::with_auth`] and a
//!   JSON reply of the claims in warp's test harness (no network), distinct tokens, cache on as in
//!   `cache_miss`; `request/baseline`: the same harness with no auth (a small JSON reply). Their
//!   difference minus `cache_miss` is what the filter chain and the reply add in-process.
//!
//! `cargo bench -p auth-core --bench verify`; `cargo xtask bench` runs the `signature` group
//! too, to compare a service's cost per request with the limit measured on the same machine.

use std::hint::black_box;
use std::sync::Arc;

use auth_core::keys::Alg;
use auth_core::verify::verify_signature;
use auth_core::{Auth, AuthSettings, CacheSettings, ManualClock, VerifyingKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use testkit::{AUDIENCE, ISSUER, NOW, TestKey, keys, mint};
use warp::Filter as _;

struct Case {
    alg: Alg,
    key: TestKey,
    settings: AuthSettings,
    verifying_key: VerifyingKey,
}

fn cases() -> Vec<Case> {
    let base = AuthSettings {
        issuer: Some(ISSUER.into()),
        audience: vec![AUDIENCE.into()],
        ..AuthSettings::default()
    };
    let pem = |file: &str| AuthSettings {
        public_key: Some(keys::path(file).display().to_string()),
        ..base.clone()
    };
    let pem_key = |file: &str| VerifyingKey::from_pem(&keys::read(file)).expect("fixture key");
    let secret = keys::hs_secret_bytes();
    vec![
        Case {
            alg: Alg::RS256,
            key: keys::rsa(),
            settings: pem("rsa-public.pem"),
            verifying_key: pem_key("rsa-public.pem"),
        },
        Case {
            alg: Alg::ES256,
            key: keys::ec(),
            settings: pem("ec-public.pem"),
            verifying_key: pem_key("ec-public.pem"),
        },
        Case {
            alg: Alg::EdDSA,
            key: keys::ed(),
            settings: pem("ed25519-public.pem"),
            verifying_key: pem_key("ed25519-public.pem"),
        },
        Case {
            alg: Alg::HS256,
            key: keys::hs_secret(),
            settings: AuthSettings {
                secret: Some(String::from_utf8(secret.clone()).expect("utf-8").into()),
                algorithms: vec![Alg::HS256],
                ..base.clone()
            },
            verifying_key: VerifyingKey::from_secret(&secret).expect("fixture secret"),
        },
    ]
}

fn verifier(settings: &AuthSettings, max_entries: usize) -> Auth {
    let settings = AuthSettings {
        cache: CacheSettings { max_entries },
        ..settings.clone()
    };
    Auth::with_clock(&settings, "bench", Arc::new(ManualClock::new(NOW))).expect("settings")
}

/// A compact JWS as the signature step sees it: the signing input and the decoded signature.
fn signed(token: &str) -> (String, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').expect("compact JWS");
    (
        input.to_owned(),
        URL_SAFE_NO_PAD.decode(sig).expect("base64url"),
    )
}

/// The signature step alone, with the case's key parsed once: the limit.
fn check_signature(case: &Case, input: &str, sig: &[u8]) {
    verify_signature(
        &case.verifying_key,
        case.alg,
        black_box(input.as_bytes()),
        black_box(sig),
    )
    .expect("valid signature")
}

/// A static key source never waits: the future completes on its first poll.
fn verify_now(auth: &Auth, token: &str) {
    let claims = auth
        .verify(token)
        .now_or_never()
        .expect("static key source is ready")
        .expect("valid token");
    black_box(claims);
}

fn bench(c: &mut Criterion) {
    let cases = cases();

    let mut full = c.benchmark_group("full");
    for case in &cases {
        let auth = verifier(&case.settings, 0);
        let token = mint(&case.key).sign();
        full.bench_function(case.alg.as_str(), |b| {
            b.iter(|| verify_now(&auth, black_box(&token)))
        });
    }
    full.finish();

    let mut signature = c.benchmark_group("signature");
    for case in &cases {
        let (input, sig) = signed(&mint(&case.key).sign());
        signature.bench_function(case.alg.as_str(), |b| {
            b.iter(|| check_signature(case, &input, &sig))
        });
    }
    signature.finish();

    // What the signature step costs once other work has evicted its code and data from L2, as
    // a server's kernel, runtime and HTTP work between two tokens does in part. The sweep is
    // setup, not measured.
    const SWEEP: usize = 1 << 20;
    let mut cold = c.benchmark_group("signature_cold");
    let mut sweep = vec![0u8; SWEEP];
    for case in &cases {
        let (input, sig) = signed(&mint(&case.key).sign());
        cold.bench_function(case.alg.as_str(), |b| {
            b.iter_batched(
                || {
                    for line in sweep.chunks_mut(64) {
                        line[0] = line[0].wrapping_add(1);
                    }
                },
                |()| check_signature(case, &input, &sig),
                criterion::BatchSize::PerIteration,
            )
        });
    }
    cold.finish();

    // The same step over distinct signatures, as a server sees them: the limit of the distinct
    // mode. For ECDSA it costs more than one signature verified over and over, whose precomputed
    // base-point table entries and data-dependent branches stay hot in the caches and the branch
    // predictor. 64 pairs spread over the whole table and defeat the predictor, yet stay in L2, so
    // no fetch from memory is added.
    let mut distinct = c.benchmark_group("signature_distinct");
    for case in &cases {
        let pairs: Vec<(String, Vec<u8>)> = (0..SIGNATURES)
            .map(|i| signed(&mint(&case.key).claim("jti", format!("t{i}")).sign()))
            .collect();
        let mut next = 0;
        distinct.bench_function(case.alg.as_str(), |b| {
            b.iter(|| {
                next = (next + 1) % pairs.len();
                let (input, sig) = &pairs[next];
                check_signature(case, input, sig)
            })
        });
    }
    distinct.finish();

    let mut hit = c.benchmark_group("cache_hit");
    for case in &cases {
        let auth = verifier(&case.settings, auth_core::cache::DEFAULT_MAX_ENTRIES);
        let token = mint(&case.key).sign();
        verify_now(&auth, &token);
        hit.bench_function(case.alg.as_str(), |b| {
            b.iter(|| verify_now(&auth, black_box(&token)))
        });
    }
    hit.finish();

    let mut miss = c.benchmark_group("cache_miss");
    for case in &cases {
        let auth = verifier(&case.settings, MISS_CACHE);
        let tokens: Vec<String> = (0..MISS_TOKENS)
            .map(|i| mint(&case.key).claim("jti", format!("t{i}")).sign())
            .collect();
        let mut next = 0;
        miss.bench_function(case.alg.as_str(), |b| {
            b.iter(|| {
                next = (next + 1) % tokens.len();
                verify_now(&auth, black_box(&tokens[next]))
            })
        });
    }
    miss.finish();

    // A request through the auth filter (warp's test harness, no network): distinct tokens with
    // the cache on, as the server's "distinct" mode, next to the same request without auth.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut request = c.benchmark_group("request");
    let plain =
        warp::path("health").map(|| warp::reply::json(&serde_json::json!({"status": "ok"})));
    request.bench_function("baseline", |b| {
        b.iter(|| {
            let res = rt.block_on(warp::test::request().path("/health").reply(&plain));
            black_box(res);
        })
    });
    for case in &cases {
        let auth = verifier(&case.settings, MISS_CACHE);
        let filter = warp::path("whoami")
            .and(auth_core::filters::with_auth(&auth))
            .map(|claims: std::sync::Arc<auth_core::Claims>| warp::reply::json(&*claims));
        let tokens: Vec<String> = (0..MISS_TOKENS)
            .map(|i| {
                format!(
                    "Bearer {}",
                    mint(&case.key).claim("jti", format!("t{i}")).sign()
                )
            })
            .collect();
        let mut next = 0;
        request.bench_function(case.alg.as_str(), |b| {
            b.iter(|| {
                next = (next + 1) % tokens.len();
                let res = rt.block_on(
                    warp::test::request()
                        .path("/whoami")
                        .header("authorization", &tokens[next])
                        .reply(&filter),
                );
                assert_eq!(res.status(), 200);
                black_box(res);
            })
        });
    }
    request.finish();
}

/// Distinct signatures cycled by `signature_distinct`.
const SIGNATURES: usize = 64;

/// The cache bound of the `cache_miss` and `request` groups: its doorkeeper has as many slots.
const MISS_CACHE: usize = 64;

/// Tokens cycled by those groups: so many more than the doorkeeper's slots that a token's first
/// sighting is always forgotten before its next (kept with probability e^(-2000/64) ≈ 3e-14),
/// so none is ever admitted and every verification is a miss, as for a server's new tokens.
const MISS_TOKENS: usize = 2_000;

criterion_group!(benches, bench);
criterion_main!(benches);
