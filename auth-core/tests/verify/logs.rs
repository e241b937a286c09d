//! Denials are logged at debug with `kid` and `sub`; a token never appears in any log line.

use std::io::Write;
use std::sync::{Arc, Mutex};

use auth_core::AuthSettings;
use testkit::{keys, mint};

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

/// The test binary's one global subscriber (a scoped one misses events that other threads'
/// tests register first), writing everything at TRACE into one buffer.
fn capture() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            captured
        })
        .clone()
}

#[tokio::test]
async fn denial_is_logged_with_kid_and_sub_but_never_the_token() {
    let captured = capture();
    // A subject no other test uses, to find this test's lines among everyone's.
    let sub = "log-test-subject";
    let expired = mint(&keys::ec()).claim("sub", sub).claim("exp", 1).sign();
    let forged = mint(&keys::ec()).claim("sub", sub).with_signature(&[7; 64]);
    let auth = auth(&pem_settings("ec-public.pem"));
    assert!(auth.verify(&expired).await.is_err());
    assert!(auth.verify(&forged).await.is_err());
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let kid = keys::ec().kid.unwrap();
    let expired_line = logs
        .lines()
        .find(|l| l.contains("reason=\"expired\"") && l.contains(sub))
        .expect(&logs);
    assert!(expired_line.contains("DEBUG"), "{expired_line}");
    assert!(expired_line.contains(&kid), "{expired_line}");
    // A forged token's claims are not trusted enough to log its sub; its kid is logged.
    assert!(
        logs.lines()
            .any(|l| l.contains("reason=\"signature\"") && l.contains(&kid)),
        "{logs}"
    );
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("reason=\"signature\"") && l.contains(sub)),
        "a forged token's sub was logged: {logs}"
    );
    for token in [&expired, &forged] {
        for part in token.split('.').filter(|p| !p.is_empty()) {
            assert!(!logs.contains(part), "a token part was logged: {logs}");
        }
    }
}

/// A key source URL may carry credentials (userinfo, which reqwest sends as Basic auth) or an
/// API key in its query: the store's log lines and its `Debug` name the source without them,
/// whether the fetch succeeds or fails (reqwest's own errors named the whole URL).
#[tokio::test]
async fn a_key_source_urls_credentials_are_never_logged() {
    let captured = capture();
    let mut issuer = testkit::MockIssuer::start().await;
    issuer
        .jwks_mock(&[&keys::ec()])
        .match_query(mockito::Matcher::Any)
        .create_async()
        .await;
    let with_secrets = |base: &str| {
        base.replacen("http://", "http://svc-user:Url-Pa55word@", 1)
            + "/jwks.json?api_key=Url-Api-K3y"
    };
    let served = with_secrets(&issuer.url());
    // A port nothing listens on: the fetch fails with reqwest's connection error.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    let refused = with_secrets(&closed);
    for url in [&served, &refused] {
        let configured = AuthSettings {
            jwks_url: Some(url.clone()),
            discovery_url: Some(url.clone()),
            public_key: Some(url.to_uppercase().replacen("HTTP://", "http://", 1)),
            secret_file: Some("Url-Pa55word".into()),
            ..settings()
        };
        // The settings themselves print no credentials either (a service may log its config),
        // a URL that does not parse (an invalid port) included.
        for broken in [
            "https://svc:Url-Pa55word@host:99999/jwks",
            "https:svc:Url-Pa55word@host:99999/jwks",
        ] {
            let unparsed = AuthSettings {
                jwks_url: Some(broken.into()),
                ..settings()
            };
            let printed = format!("{unparsed:?}");
            assert!(!printed.contains("Url-Pa55word"), "{printed}");
        }
        let printed = format!("{configured:?}");
        assert!(
            !printed.to_lowercase().contains("url-pa55word")
                && !printed.to_lowercase().contains("url-api-k3y"),
            "{printed}"
        );
        assert!(
            printed.contains("jwks_url: Some(\"http://127.0.0.1:"),
            "{printed}"
        );
        let auth = auth(&AuthSettings {
            jwks_url: Some(url.clone()),
            ..settings()
        });
        let loaded = auth.load_keys().await;
        assert_eq!(loaded, url == &served, "{url}");
        let printed = format!("{auth:?}");
        assert!(
            !printed.contains("Url-Pa55word") && !printed.contains("Url-Api-K3y"),
            "{printed}"
        );
    }
    // A discovery URL with userinfo and no `auth.issuer`: the issuer it implies is the URL
    // without them (it named the password in every mismatch error, and never matched).
    issuer.serve_discovery().await;
    let auth = auth(&AuthSettings {
        discovery_url: Some(
            issuer
                .url()
                .replacen("http://", "http://svc-user:Url-Pa55word@", 1),
        ),
        issuer: None,
        ..settings()
    });
    assert!(
        auth.load_keys().await,
        "the document's issuer is the URL without userinfo"
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let port = |url: &str| url.rsplit(':').next().unwrap().to_owned();
    for base in [issuer.url(), closed] {
        assert!(
            logs.lines()
                .any(|l| l.contains(&format!("127.0.0.1:{}/jwks.json", port(&base)))),
            "no line names the source {base}: {logs}"
        );
    }
    for secret in ["Url-Pa55word", "svc-user", "Url-Api-K3y"] {
        assert!(!logs.contains(secret), "logged: {secret}: {logs}");
    }
}

/// Whoever serves the key set cannot flood the log: a document of many unusable keys gives a
/// few lines and a count, and a skipped key's detail is shortened like its `kid`.
#[tokio::test]
async fn a_key_set_of_many_unusable_keys_logs_a_few_short_lines() {
    let captured = capture();
    let mut issuer = testkit::MockIssuer::start().await;
    let mut keys_json = vec![testkit::jwks_json(&[&keys::ec()])["keys"][0].clone()];
    let huge = "v".repeat(5_000);
    for i in 0..50 {
        keys_json.push(serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": format!("flood-kid-{i}"),
            "use": {"huge": huge},
        }));
    }
    let _jwks = issuer
        .jwks_doc_mock(&serde_json::json!({ "keys": keys_json }))
        .create_async()
        .await;
    let settings = crate::store::store_settings(issuer.jwks_url());
    let auth = auth(&settings);
    let token = crate::store::long_lived(&keys::ec()).sign();
    assert!(auth.verify(&token).await.is_ok());
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let flood: Vec<&str> = logs.lines().filter(|l| l.contains("flood-kid-")).collect();
    assert!(!flood.is_empty(), "{logs}");
    assert!(flood.len() <= 10, "{} lines", flood.len());
    assert!(flood.iter().all(|l| l.len() < 1_000), "{flood:?}");
    assert!(
        logs.lines()
            .any(|l| l.contains("more unusable keys") && l.contains("not_listed=40")),
        "{logs}"
    );
}
