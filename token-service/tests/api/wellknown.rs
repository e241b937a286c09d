use auth_core::settings::AuthSettings;
use auth_core::{Alg, Auth};
use serde_json::Value;

use crate::helpers::{TestApp, decode, fixture, spawn_app, spawn_with};

#[tokio::test]
async fn jwks_publishes_public_members_of_every_fixture_key() {
    let t = spawn_app().await;
    let res = t.app.get("/.well-known/jwks.json").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=300");
    let jwks: Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let mut algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    algs.sort_unstable();
    assert_eq!(algs, ["ES256", "EdDSA", "RS256"]);
    for key in keys {
        for member in ["kty", "kid", "alg"] {
            assert!(key[member].is_string(), "{member} in {key}");
        }
        assert_eq!(key["use"], "sig");
        assert!(auth_core::keys::dev::is_dev_key(
            key["kid"].as_str().unwrap()
        ));
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(key.get(private).is_none(), "{private} published in {key}");
        }
    }
    let rsa = keys.iter().find(|k| k["kty"] == "RSA").unwrap();
    assert!(rsa["x5c"][0].is_string() && rsa["x5t#S256"].is_string());
    let ec = keys.iter().find(|k| k["kty"] == "EC").unwrap();
    assert!(ec.get("x5c").is_none());

    let kid = rsa["kid"].as_str().unwrap();
    let res = t.app.get(&format!("/.well-known/certs/{kid}.pem")).await;
    assert_eq!(res.status(), 200);
    let pem = res.text().await.unwrap();
    let fixture_pem = std::fs::read_to_string(fixture("keys/rsa-cert.pem")).unwrap();
    let strip = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(strip(&pem), strip(&fixture_pem));
    let ec_kid = ec["kid"].as_str().unwrap();
    assert_eq!(
        t.app
            .get(&format!("/.well-known/certs/{ec_kid}.pem"))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn jwks_etag_gives_304() {
    let t = spawn_app().await;
    let res = t.app.get("/.well-known/jwks.json").await;
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
    ] {
        let res = t
            .app
            .client
            .get(t.url("/.well-known/jwks.json"))
            .header("if-none-match", inm)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 304);
        assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
        assert!(res.bytes().await.unwrap().is_empty());
    }
    // If-None-Match is a list, which a client may split over several lines.
    let res = t
        .app
        .client
        .get(t.url("/.well-known/jwks.json"))
        .header("if-none-match", "\"other\"")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    // A HEAD's 304 carries no Content-Length (RFC 9110 §8.6: it would have to be the 200's).
    let res = t
        .app
        .client
        .head(t.url("/.well-known/jwks.json"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers().get("content-length"), None);
    let res = t
        .app
        .client
        .get(t.url("/.well-known/jwks.json"))
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn metadata(t: &TestApp, path: &str) -> Value {
    let res = t.app.get(path).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn discovery_documents() {
    let t = spawn_app().await;
    let a = metadata(&t, "/.well-known/oauth-authorization-server").await;
    let b = metadata(&t, "/.well-known/openid-configuration").await;
    assert_eq!(a, b);
    assert_eq!(a["issuer"], "http://127.0.0.1:4000");
    assert_eq!(a["jwks_uri"], "http://127.0.0.1:4000/.well-known/jwks.json");
    assert_eq!(a["token_endpoint"], "http://127.0.0.1:4000/token");
    assert_eq!(a["grant_types_supported"], serde_json::json!(["password"]));
    for member in [
        "token_endpoint_auth_methods_supported",
        "scopes_supported",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ] {
        assert!(a[member].is_array(), "{member}");
    }
    assert!(a.get("authorization_endpoint").is_none());
    assert_eq!(
        a["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256", "EdDSA", "RS256"])
    );
    // The issuer is the tokens' iss.
    let token = t.token("bob", &[]).await;
    assert_eq!(decode(&token).1["iss"], a["issuer"]);
}

#[tokio::test]
async fn hs256_with_a_shared_secret_publishes_no_jwks() {
    let secret = "a-shared-secret-of-more-than-32-bytes-for-tests";
    let t = spawn_with(|s| {
        s.signing.key_files.clear();
        s.signing.secret = Some(secret.into());
        s.signing.algorithm = Alg::HS256;
    })
    .await;
    assert_eq!(t.app.get("/.well-known/jwks.json").await.status(), 404);
    let doc = metadata(&t, "/.well-known/openid-configuration").await;
    assert!(doc.get("jwks_uri").is_none());
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["HS256"])
    );
    let token = t.token("admin", &[]).await;
    assert_eq!(decode(&token).0["alg"], "HS256");
    let auth = Auth::new(
        &AuthSettings {
            issuer: Some("http://127.0.0.1:4000".into()),
            audience: vec!["tasks-api".into()],
            secret: Some(secret.into()),
            algorithms: vec![Alg::HS256],
            ..AuthSettings::default()
        },
        "tasks-api",
    )
    .unwrap();
    auth.verify(&token)
        .await
        .expect("a resource service with the secret verifies it");
    assert_eq!(t.get_auth("/users", &token).await.status(), 200);
}

/// A 405 names the methods the path has (RFC 9110), from the OpenAPI document.
#[tokio::test]
async fn a_wrong_method_is_405_with_allow() {
    let t = spawn_app().await;
    let send = |method: &str, path: &str| {
        t.app
            .client
            .request(method.parse().unwrap(), t.url(path))
            .send()
    };
    for (method, path, allow) in [
        ("GET", "/token", "POST"),
        ("PUT", "/users", "GET, HEAD, POST"),
        ("POST", "/.well-known/jwks.json", "GET, HEAD"),
        ("POST", "/.well-known/certs/k1.pem", "GET, HEAD"),
    ] {
        let res = send(method, path).await.unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
    }
    // A path the certificate route's filter takes but no documented route has: 404 for every
    // method, as for GET (it was a 405 without the `Allow` a 405 must carry).
    for path in ["/.well-known/certs/x.txt", "/.well-known/certs/.pem"] {
        for method in ["GET", "POST", "DELETE"] {
            let res = send(method, path).await.unwrap();
            assert_eq!(res.status(), 404, "{method} {path}");
            assert!(res.headers().get("allow").is_none(), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let t = spawn_app().await;
    auth_core::service::testing::assert_operational_routes(&t.app).await;
    let doc: Value = t.app.get("/openapi.json").await.json().await.unwrap();
    for (path, method) in [
        ("/token", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/.well-known/certs/{kid}.pem", "get"),
        ("/.well-known/oauth-authorization-server", "get"),
        ("/.well-known/openid-configuration", "get"),
        ("/users", "post"),
        ("/users", "get"),
        ("/users/{id}", "delete"),
        ("/users/me", "get"),
        ("/users/me/password", "put"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        let secured = op["security"][0].get("bearer_auth").is_some();
        assert_eq!(
            secured,
            path.starts_with("/users"),
            "{method} {path} security"
        );
    }
    // The shared layers' answers: a body's 408 and 413 (no 415: `/token` takes a form, and
    // another content type is RFC 6749's 400); a bearer route's 503.
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let responses = doc["paths"][path][method]["responses"].as_object().unwrap();
        responses.keys().cloned().collect()
    };
    let token = statuses("/token", "post");
    for status in ["408", "413", "429", "503"] {
        assert!(
            token.contains(&status.to_owned()),
            "/token {status}: {token:?}"
        );
    }
    assert!(!token.contains(&"415".to_owned()), "{token:?}");
    let create = statuses("/users", "post");
    for status in ["401", "408", "413", "415", "503"] {
        assert!(
            create.contains(&status.to_owned()),
            "POST /users {status}: {create:?}"
        );
    }
}
