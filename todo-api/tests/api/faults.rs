//! The database goes away: requests get 503 (never a hang, never a 500), `/ready` turns false,
//! and the service recovers on its own when the database returns.

use std::time::Duration;

use auth_core::service::testing::TcpProxy;
use serde_json::json;
use sqlx::{Connection, Executor};

use crate::helpers::{TestApp, parts, spawn_with};

async fn eventually_ok(t: &TestApp, token: &str) {
    for _ in 0..50 {
        if t.request("GET", "/todos", Some(token), None).await.status() == 200
            && t.app.get("/ready").await.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service did not recover after the database came back");
}

#[tokio::test]
async fn a_locked_sqlite_file_is_503_then_recovers() {
    let t = spawn_with(|s| s.database.acquire_timeout_seconds = 1).await;
    let editor = t.token("erin", &["editor"]);
    t.create(&editor, "before").await;
    // Another process-like connection holds the write lock.
    let file = t.data_dir.path().join("todo-api.db");
    let mut locker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    locker.execute("BEGIN EXCLUSIVE").await.unwrap();

    let res = t
        .request(
            "POST",
            "/todos",
            Some(&editor),
            Some(json!({"title": "during"})),
        )
        .await;
    assert_eq!(
        res.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned())
            .as_deref(),
        Some("5")
    );
    let (status, body) = parts(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    let (status, body) = parts(t.app.get("/ready").await).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (503, Some("database unreachable"))
    );

    locker.execute("ROLLBACK").await.unwrap();
    locker.close().await.unwrap();
    eventually_ok(&t, &editor).await;
    t.create(&editor, "after").await;
}

/// `/ready` gives up on a locked SQLite file after 2 s while its `BEGIN IMMEDIATE` still waits
/// for the lock (for `busy_timeout`, the 5 s of `database.acquire_timeout_seconds`). When the
/// lock frees, that BEGIN must not stay open on the pooled connection: before, the next write
/// ran inside it, was answered 201, and was lost.
#[tokio::test]
async fn a_readiness_check_given_up_leaves_no_transaction_open() {
    let t = spawn_with(|s| s.database.max_connections = 1).await;
    let editor = t.token("erin", &["editor"]);
    let file = t.data_dir.path().join("todo-api.db");
    let url = format!("sqlite://{}", file.display());
    let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    locker.execute("BEGIN EXCLUSIVE").await.unwrap();
    let (status, body) = parts(t.app.get("/ready").await).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (503, Some("readiness check timed out"))
    );
    locker.execute("ROLLBACK").await.unwrap();
    locker.close().await.unwrap();

    t.create(&editor, "acknowledged").await;
    let mut reader = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM todos WHERE title = 'acknowledged'")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(stored, 1, "an acknowledged write is in the file");
    eventually_ok(&t, &editor).await;
}

#[tokio::test]
async fn a_cut_postgres_connection_is_503_then_recovers() {
    let Some(url) = auth_core::service::storage::test_postgres_url("todo-api outage").await else {
        return;
    };
    let proxy = TcpProxy::start(TcpProxy::upstream_of(&url)).await;
    let proxied = proxy.proxied_url(&url);
    let t = spawn_with(|s| {
        s.database.url = Some(proxied.into());
        s.database.acquire_timeout_seconds = 1;
    })
    .await;
    let editor = t.token("erin", &["editor"]);
    t.create(&editor, "before").await;

    proxy.cut();
    let res = t.request("GET", "/todos", Some(&editor), None).await;
    assert_eq!(res.status(), 503);
    let res = t
        .request(
            "POST",
            "/todos",
            Some(&editor),
            Some(json!({"title": "during"})),
        )
        .await;
    assert_eq!(res.status(), 503);
    assert_eq!(t.app.get("/ready").await.status(), 503);

    proxy.restore();
    eventually_ok(&t, &editor).await;
    let (status, body) = parts(t.request("GET", "/todos", Some(&editor), None).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["items"][0]["title"], "before",
        "nothing acknowledged was lost"
    );
}
