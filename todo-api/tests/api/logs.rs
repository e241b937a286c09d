use auth_core::service::telemetry::LogCapture;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn tokens_never_reach_the_logs_at_any_level() {
    let logs = LogCapture::install();
    let t = spawn_app().await;
    let good = t.token("erin", &["editor"]);
    let expired = t
        .issuer
        .builder("todo-api")
        .valid_from(testkit::now() - 7200, 60)
        .sign();
    let forged = format!(
        "{}.{}",
        good.rsplit_once('.').unwrap().0,
        testkit::b64([1u8; 64])
    );
    assert_eq!(
        t.request(
            "POST",
            "/todos",
            Some(&good),
            Some(json!({"title": "logged?"}))
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        t.request("GET", "/todos?limit=5", Some(&good), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        t.request("GET", "/todos", Some(&expired), None)
            .await
            .status(),
        401
    );
    assert_eq!(
        t.request("GET", "/todos", Some(&forged), None)
            .await
            .status(),
        401
    );
    assert_eq!(
        t.request("GET", "/whoami", Some("not.a.token"), None)
            .await
            .status(),
        401
    );
    let text = logs.contents();
    // The capture works: the request lines are there, with the caller's sub.
    assert!(
        text.contains("path=/todos") && text.contains("status=201"),
        "no request log captured:\n{text}"
    );
    assert!(
        text.contains("sub=\"erin\"") || text.contains("sub=erin"),
        "sub missing from the request log"
    );
    for token in [&good, &expired, &forged] {
        for part in token.split('.') {
            assert!(!text.contains(part), "a token part was logged: {part}");
        }
    }
    assert!(!text.contains("not.a.token"));
    assert!(
        !text.to_ascii_lowercase().contains("bearer ey"),
        "an Authorization header was logged"
    );
}
