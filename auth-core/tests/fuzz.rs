//! Property-based fuzzing of everything auth-core parses from untrusted bytes: the
//! `Authorization` header, the token, JWKS documents. Properties: never a panic, never a 5xx,
//! every rejection is the documented status (401). `cargo xtask fuzz --minutes N` runs these
//! with many more cases (`PROPTEST_CASES`).

use std::sync::Arc;

use auth_core::filters::with_auth;
use auth_core::keys::Alg;
use auth_core::source::KeySet;
use auth_core::{Auth, AuthSettings, ManualClock};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use testkit::{AUDIENCE, ISSUER, NOW, keys};

fn auth() -> Auth {
    let settings = AuthSettings {
        issuer: Some(ISSUER.into()),
        audience: vec![AUDIENCE.into()],
        public_key: Some(keys::path("ec-public.pem").display().to_string()),
        ..AuthSettings::default()
    };
    Auth::with_clock(&settings, "fuzz", Arc::new(ManualClock::new(NOW))).expect("auth")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A compact JWS of three base64url segments around arbitrary header and claims bytes.
fn token_like() -> impl Strategy<Value = String> {
    let json_ish = prop_oneof![
        any::<Vec<u8>>(),
        "\\{\"alg\":\"(ES256|none|HS256|RS256|EdDSA|)\"(,\"kid\":\"[a-zA-Z0-9./_-]{0,40}\")?(,\"crit\":\\[\"exp\"\\])?\\}".prop_map(String::into_bytes),
        "\\{\"sub\":\"[a-z]{0,8}\",\"exp\":(-?[0-9]{0,20}|\"x\"|null|1e999),\"aud\":(\"todo-api\"|\\[\\]|7)\\}".prop_map(String::into_bytes),
    ];
    (json_ish.clone(), json_ish, any::<Vec<u8>>()).prop_map(|(h, c, s)| {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(c),
            URL_SAFE_NO_PAD.encode(s)
        )
    })
}

proptest! {
    #[test]
    fn fuzz_authorization_header_is_always_a_clean_401(header in prop_oneof![
        any::<String>(),
        "[Bb][Ee][Aa][Rr][Ee][Rr] [ -~]{0,300}",
        token_like().prop_map(|t| format!("Bearer {t}")),
    ]) {
        let rt = runtime();
        let filter = with_auth(&auth());
        let res = rt.block_on(async {
            let mut req = warp::test::request().path("/");
            if let Ok(value) = http::HeaderValue::from_str(&header) {
                req = req.header("authorization", value);
            }
            req.reply(&warp::Filter::recover(warp::Filter::map(filter, |_| "ok"), auth_core::handle_rejection)).await
        });
        prop_assert_eq!(res.status().as_u16(), 401, "{:?}", header);
        let body: serde_json::Value = serde_json::from_slice(res.body()).expect("a JSON error body");
        prop_assert_eq!(body["status"].as_u64(), Some(401));
    }

    #[test]
    fn fuzz_token_bytes_never_verify_and_never_panic(token in prop_oneof![token_like(), any::<String>()]) {
        let rt = runtime();
        let result = rt.block_on(auth().verify(&token));
        prop_assert!(result.is_err());
        prop_assert_eq!(result.unwrap_err().status().as_u16(), 401);
    }

    #[test]
    fn fuzz_jwks_documents_never_panic(doc in prop_oneof![
        any::<Vec<u8>>(),
        "\\{\"keys\":\\[(\\{\"kty\":\"(EC|RSA|OKP|oct|)\",\"crv\":\"(P-256|Ed25519|P-384|)\",\"x\":\"[A-Za-z0-9_-]{0,60}\",\"y\":\"[A-Za-z0-9_-]{0,60}\",\"n\":\"[A-Za-z0-9_-]{0,400}\",\"e\":\"(AQAB|)\",\"use\":\"(sig|enc)\",\"kid\":\"[ -~]{0,20}\"\\},?){0,4}\\]\\}".prop_map(String::into_bytes),
    ]) {
        // Ok or Err, but a verdict: no panic, and whatever loads holds only usable keys: no
        // more than the document's entries of a signing key type marked `use: sig`, each a
        // public key for RS256, ES256 or EdDSA, never an HMAC secret.
        if let Ok(set) = KeySet::from_jwks(&doc) {
            let entries: Vec<serde_json::Value> = serde_json::from_slice::<serde_json::Value>(&doc)
                .ok()
                .and_then(|d| d["keys"].as_array().cloned())
                .unwrap_or_default();
            let candidates = entries
                .iter()
                .filter(|k| matches!(k["kty"].as_str(), Some("EC" | "RSA" | "OKP")))
                .filter(|k| k.get("use").is_none_or(|u| u == "sig"))
                .count();
            prop_assert!(set.keys().count() <= candidates, "{} keys", set.keys().count());
            for key in set.keys() {
                prop_assert!(!key.fits(Alg::HS256));
                prop_assert!([Alg::RS256, Alg::ES256, Alg::EdDSA].iter().any(|a| key.fits(*a)));
            }
        }
    }
}

proptest! {
    #[test]
    fn fuzz_discovery_documents_never_panic(doc in prop_oneof![
        any::<Vec<u8>>(),
        "\\{\"issuer\":\"(https://id\\.example|http://127\\.0\\.0\\.1:4000|[ -~]{0,20})\",\"jwks_uri\":\"(https://|http://|file://|ftp://|)[ -~]{0,40}\"(,\"[a-z_]{1,10}\":[0-9]{1,3})?\\}".prop_map(String::into_bytes),
    ]) {
        // A verdict, never a panic; an accepted document names an https URL (its discovery
        // URL is https) and the exact issuer.
        let discovery = reqwest::Url::parse("https://id.example/.well-known/openid-configuration").unwrap();
        if let Ok(url) = auth_core::source::jwks_uri_from_discovery(&doc, "https://id.example", &discovery) {
            prop_assert!(url.scheme() == "https", "{}", url);
            let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
            prop_assert_eq!(v["issuer"].as_str(), Some("https://id.example"));
        }
    }
}

proptest! {
    /// The verifier decodes token parts with base64-simd, on the stack or (past 1 KiB) the
    /// heap: it must accept and refuse exactly what the strict scalar decoder (`base64`,
    /// URL-safe, no padding, canonical trailing bits) does, on base64url-looking text and on
    /// anything else.
    #[test]
    fn fuzz_simd_base64url_agrees_with_the_scalar_decoder(text in prop_oneof![
        "[A-Za-z0-9_-]{0,700}",
        "[A-Za-z0-9_-]{1360,1370}",
        "[A-Za-z0-9_=+/. -]{0,80}",
        any::<String>(),
        any::<Vec<u8>>().prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
    ]) {
        let scalar = URL_SAFE_NO_PAD.decode(&text).ok();
        let simd = auth_core::verify::decode_part(&text);
        prop_assert_eq!(scalar, simd, "{:?}", text);
    }
}
