//! Helpers for the integration tests of services: spawn the real app on port 0, check the
//! operational routes, run a service binary and read its one-line config error. No mocks here:
//! tests drive the same `App` that `main` runs.

use std::path::Path;
use std::process::Command;

use tokio::sync::oneshot;

use super::app::App;
use super::config::{DatabaseSettings, Settings};

/// A running app on 127.0.0.1 and a client for it. Dropping it stops the app.
pub struct Spawned {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The bound port.
    pub port: u16,
    /// A client that follows no redirects.
    pub client: reqwest::Client,
    /// The app's database, for tests that take it away.
    pub db: Option<super::storage::Database>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Spawned {
    /// Stops the app gracefully and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }

    /// Waits until `/ready` answers 200 (verification keys load in the background), polling
    /// with a deadline of 10 s.
    pub async fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if self.get("/ready").await.status() == 200 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never became ready",
                self.address
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// `method {address}{path}` with `token` as its bearer, one more header (`name: value`: a
    /// precondition, say) and `body` as JSON; the request is made at once, so the future
    /// borrows nothing.
    pub fn send_with(
        &self,
        method: &str,
        path: &str,
        token: &str,
        (name, value): (&str, &str),
        body: Option<serde_json::Value>,
    ) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
        let mut req = self
            .client
            .request(
                method.parse().expect("an HTTP method"),
                format!("{}{path}", self.address),
            )
            .bearer_auth(token)
            .header(name, value);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    }

    /// `GET {address}{path}`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request failed")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `app` in the background.
pub fn spawn(app: App) -> Spawned {
    let port = app.port();
    let db = app.database().cloned();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client");
    Spawned {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client,
        db,
        stop: Some(tx),
        handle: Some(handle),
    }
}

/// Local-environment settings for a test: port 0, the SQLite file in `data_dir` (or the
/// PostgreSQL database `database_url`), the `auth` section given.
pub fn settings(
    data_dir: &Path,
    database_url: Option<String>,
    auth: crate::settings::AuthSettings,
) -> Settings {
    Settings {
        database: DatabaseSettings {
            data_dir: data_dir.to_path_buf(),
            url: database_url.map(Into::into),
            ..DatabaseSettings::default()
        },
        auth,
        cors: super::config::CorsSettings {
            allowed_origins: super::config::local_cors_origins(),
        },
        ..Settings::default()
    }
}

/// Asserts the four operational routes answer as documented: `/health` 200, `/ready` 200,
/// `/metrics` valid Prometheus text with `build_info`, `/openapi.json` OpenAPI 3.1.
pub async fn assert_operational_routes(app: &Spawned) {
    app.wait_ready().await;
    let health = app.get("/health").await;
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );

    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );

    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert_prometheus_text(&text);
    assert!(
        text.lines().any(|l| l.starts_with("build_info{")),
        "build_info gauge missing:\n{text}"
    );

    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status(), 200);
    let doc: serde_json::Value = doc.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3.1"),
        "not OpenAPI 3.1: {}",
        doc["openapi"]
    );
    for path in ["/health", "/ready", "/metrics", "/openapi.json"] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
}

/// Asserts `text` is valid Prometheus text exposition: every line a comment (`# HELP`/`# TYPE`
/// with a metric name) or `name{labels} value` with a numeric value.
pub fn assert_prometheus_text(text: &str) {
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            assert!(matches!(kind, "HELP" | "TYPE"), "bad comment line: {line}");
            assert!(valid_name(name), "bad metric name in: {line}");
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = series.split('{').next().unwrap_or("");
        assert!(valid_name(name), "bad metric name in: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels: {line}"
            );
        }
        assert!(
            value.parse::<f64>().is_ok() || matches!(value, "+Inf" | "-Inf" | "NaN"),
            "bad value in: {line}"
        );
    }
}

/// Runs a service binary with `env` (and nothing inherited from the caller's service
/// variables) in `dir`, expecting it to refuse to start: returns its stderr, asserting a
/// non-zero exit and exactly one line. A binary still running after 30 s has accepted the
/// config: it is killed and the test fails (instead of waiting for it forever).
pub fn expect_config_error(exe: &Path, dir: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(exe);
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.contains("__") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run the service binary");
    // Read on a thread, so a talkative binary never blocks on a full pipe.
    let mut pipe = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the service binary") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = reader.join().unwrap_or_default();
            panic!("the service started with {env:?}, a config it should refuse; stderr: {stderr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stderr = reader.join().expect("stderr reader");
    assert!(
        !status.success(),
        "expected a non-zero exit, stderr: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line on stderr, got: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.trim_end().to_owned()
}

/// Asserts a service binary refuses to start in production with nothing else configured, with
/// verification off, and with a fixtures key copied to another path: each one line naming the key.
/// `issuer_key` is the key a missing issuer is named by (token-service documents `token.issuer`).
pub fn assert_production_refusals(exe: &Path, env_prefix: &str, issuer_key: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let var = |k: &str| format!("{env_prefix}__{k}");
    let (environment, issuer, audience) = (
        var("ENVIRONMENT"),
        var("AUTH__ISSUER"),
        var("AUTH__AUDIENCE"),
    );
    let (enabled, jwks, public_key) = (
        var("AUTH__ENABLED"),
        var("AUTH__JWKS_URL"),
        var("AUTH__PUBLIC_KEY"),
    );

    let e = expect_config_error(exe, dir.path(), &[(&environment, "production")]);
    assert_eq!(
        e,
        format!("config error: {issuer_key}: required in production")
    );

    let base = [
        (environment.as_str(), "production"),
        (issuer.as_str(), "https://id.example.com"),
        (audience.as_str(), "api"),
    ];
    let mut env = base.to_vec();
    env.extend([
        (jwks.as_str(), "https://id.example.com/jwks.json"),
        (enabled.as_str(), "false"),
    ]);
    let e = expect_config_error(exe, dir.path(), &env);
    assert!(e.starts_with("config error: auth.enabled:"), "{e}");

    let copy = dir.path().join("not-a-fixture.pem");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/keys/rsa-cert.pem"),
        &copy,
    )
    .expect("copy");
    let copy = copy.display().to_string();
    let mut env = base.to_vec();
    env.push((public_key.as_str(), &copy));
    let e = expect_config_error(exe, dir.path(), &env);
    assert!(
        e.starts_with("config error: auth.public_key:") && e.contains("dev-only"),
        "{e}"
    );

    let mut env = base.to_vec();
    env.push((jwks.as_str(), "http://id.example.com/jwks.json"));
    let e = expect_config_error(exe, dir.path(), &env);
    assert!(
        e.starts_with("config error: auth.jwks_url: must be https://"),
        "{e}"
    );
}

/// Asserts `res` has `status` and the entity tag `etag` (`"2"`); `context` names the request
/// in a failure.
pub fn assert_etag(res: &reqwest::Response, status: u16, etag: &str, context: &str) {
    let got = res.headers().get("etag").and_then(|v| v.to_str().ok());
    assert_eq!(
        (res.status().as_u16(), got),
        (status, Some(etag)),
        "{context}"
    );
}

/// Asserts `res` is the JSON error `status` with the stable `code`; `context` names the request
/// in a failure.
pub async fn assert_error(res: reqwest::Response, status: u16, code: &str, context: &str) {
    let got = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(code)),
        "{context}: {text}"
    );
}

/// Asserts `res` is a 401 `invalid_token` (RFC 6750): the status, the challenge and the JSON
/// body's code; `context` names the request in a failure.
pub async fn assert_invalid_token(res: reqwest::Response, context: &str) {
    assert_eq!(res.status(), 401, "{context}");
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{context}: {challenge}"
    );
    let err: serde_json::Value = res.json().await.expect("a JSON error body");
    assert_eq!(err["error"], "invalid_token", "{context}: {err}");
}

/// Asserts `res` is the 403 `insufficient_scope` of a token whose `scope` claim lacks `scope`,
/// its message naming the scope.
pub async fn assert_needs_scope(res: reqwest::Response, scope: &str) {
    assert_eq!(res.status(), 403, "{:?}", res.headers());
    let err: serde_json::Value = res.json().await.expect("a JSON error body");
    assert_eq!(err["error"], "insufficient_scope", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("requires scope {scope}"))),
        "{err}"
    );
}

/// Asserts that `auth` settings the verifier refuses (here `auth.jwks.timeout_seconds = 0`) are
/// a one-line config error naming the key, given before the port is taken: the service's port
/// is held by another socket, and the error is still the key's, not the bind's.
pub fn assert_verifier_settings_refused_first(exe: &Path, env_prefix: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let (timeout, server_port) = (
        format!("{env_prefix}__AUTH__JWKS__TIMEOUT_SECONDS"),
        format!("{env_prefix}__SERVER__PORT"),
    );
    let e = expect_config_error(exe, dir.path(), &[(&timeout, "0"), (&server_port, &port)]);
    assert!(
        e.starts_with("config error: auth.jwks.timeout_seconds:"),
        "{e}"
    );
}

/// Asserts `/ready` is 200, then 503 with a JSON reason once the service's database is
/// unavailable (its pool closed under it).
pub async fn assert_ready_fails_without_the_database(app: &Spawned) {
    app.wait_ready().await;
    assert_eq!(app.get("/ready").await.status(), 200);
    app.db
        .as_ref()
        .expect("the app has a database")
        .close()
        .await;
    let res = app.get("/ready").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["reason"], "database unreachable");
}

/// A TCP proxy a test can cut and restore, between a service and its database: the way to make
/// a shared PostgreSQL server unavailable to one service without stopping it.
pub struct TcpProxy {
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    open: tokio::sync::watch::Sender<bool>,
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<port>` to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (open, state) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut state = state.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if !*state.borrow() {
                        return; // dropped at once: the connection fails mid-handshake
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {},
                        _ = tokio::io::copy(&mut sr, &mut cw) => {},
                        _ = state.wait_for(|open| !*open) => {},
                    }
                });
            }
        });
        TcpProxy { port, open }
    }

    /// A PostgreSQL URL like `url`, going through this proxy.
    pub fn proxied_url(&self, url: &str) -> String {
        let parsed = reqwest::Url::parse(url).expect("database URL");
        let upstream = format!(
            "{}:{}",
            parsed.host_str().unwrap_or("127.0.0.1"),
            parsed.port().unwrap_or(5432)
        );
        url.replacen(&upstream, &format!("127.0.0.1:{}", self.port), 1)
    }

    /// The `host:port` a database URL points at.
    pub fn upstream_of(url: &str) -> String {
        let parsed = reqwest::Url::parse(url).expect("database URL");
        format!(
            "{}:{}",
            parsed.host_str().unwrap_or("127.0.0.1"),
            parsed.port().unwrap_or(5432)
        )
    }

    /// Cuts every connection, and refuses new ones, until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

/// Asserts a service whose verification keys cannot be loaded still serves at once:
/// `/health` 200, `/ready` 503 naming the keys (issue 4: the key store loads in the background).
/// The other half, `/ready` 200 once they load, is every other test's start
/// ([`Spawned::wait_ready`]).
pub async fn assert_ready_waits_for_the_keys(app: &Spawned) {
    assert_eq!(app.get("/health").await.status(), 200);
    let res = app.get("/ready").await;
    assert_eq!(res.status(), 503);
    let body = res.text().await.unwrap();
    assert!(body.contains("verification keys not loaded"), "{body}");
}
