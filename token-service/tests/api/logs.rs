use auth_core::service::telemetry::LogCapture;

use crate::helpers::spawn_app;

#[tokio::test]
async fn logs_hold_neither_passwords_nor_tokens() {
    let capture = LogCapture::install();
    let t = spawn_app().await;
    let token = t.token("alice", &[("audience", "token-service")]).await;
    assert_eq!(t.get_auth("/users/me", &token).await.status(), 200);
    let tampered = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(t.get_auth("/users/me", &tampered).await.status(), 401);
    let res = t
        .form(&[("username", "alice"), ("password", "a-wrong-password-xyz")])
        .await;
    assert_eq!(res.status(), 401);
    // A password typed into the username field is not logged either.
    let res = t
        .form(&[
            ("username", "my-secret-password-in-the-wrong-field"),
            ("password", "x-wrong-password"),
        ])
        .await;
    assert_eq!(res.status(), 401);

    let logs = capture.contents();
    assert!(
        !logs.contains("my-secret-password-in-the-wrong-field"),
        "an unknown username was logged"
    );
    assert!(
        logs.contains("username_hmac"),
        "unknown names are logged as a keyed hash prefix"
    );
    // Not as a plain hash, which a log reader could test guessed passwords against.
    let plain = auth_core::keys::sha256_hex(b"my-secret-password-in-the-wrong-field");
    assert!(
        !logs.contains(&plain[..16]),
        "an unknown username was logged as its SHA-256"
    );
    assert!(logs.contains("sign_in"), "audit events are logged");
    assert!(logs.contains("audit"), "on the audit target");
    for secret in [
        "alice-dev-password",
        "a-wrong-password-xyz",
        &token,
        &tampered,
    ] {
        assert!(!logs.contains(secret), "logged: {secret}");
    }
    // Nor the signature alone.
    assert!(!logs.contains(token.rsplit('.').next().unwrap()));
}

/// In the local environment on a non-loopback host (Docker's 0.0.0.0), token-service starts, and
/// warns that the fixture users, whose passwords are published, can sign in from the network.
#[tokio::test]
async fn local_fixture_users_on_a_public_host_are_warned_about() {
    let capture = LogCapture::install();
    let _t = crate::helpers::spawn_with(|s| s.server.host = [0, 0, 0, 0].into()).await;
    let logs = capture.contents();
    assert!(
        logs.lines()
            .any(|l| l.contains("non-loopback server.host") && l.contains("0.0.0.0")),
        "{logs}"
    );
}
