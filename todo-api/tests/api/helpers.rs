use auth_core::service::config::Settings;
use auth_core::service::testing::{self, Spawned};
use auth_core::settings::AuthSettings;
use serde_json::{Value, json};
use testkit::LocalIssuer;

pub struct TestApp {
    pub app: Spawned,
    pub issuer: LocalIssuer,
    pub data_dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// The app with its settings adjusted (auth already pointing at the mock issuer).
pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let t = spawn_unready(adjust).await;
    t.app.wait_ready().await;
    t
}

/// The app with a JWKS URL nobody answers: verification keys never load.
pub async fn spawn_app_without_keys() -> TestApp {
    spawn_unready(|s| s.auth.jwks_url = Some("http://127.0.0.1:9/jwks.json".into())).await
}

/// The app, not waiting for `/ready`.
async fn spawn_unready(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let issuer = LocalIssuer::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let auth = AuthSettings {
        issuer: Some(issuer.issuer()),
        audience: vec!["todo-api".into()],
        jwks_url: Some(issuer.jwks_url()),
        ..AuthSettings::default()
    };
    let mut settings = testing::settings(data_dir.path(), None, auth);
    adjust(&mut settings);
    let app = todo_api::startup::build(settings).await.expect("build");
    let app = testing::spawn(app);
    TestApp {
        app,
        issuer,
        data_dir,
    }
}

impl TestApp {
    /// A valid token for `sub` with `roles`, audience todo-api.
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.issuer.token("todo-api", sub, roles)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.address)
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .app
            .client
            .request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request")
    }

    pub async fn create(&self, token: &str, title: &str) -> Value {
        let res = self
            .request("POST", "/todos", Some(token), Some(json!({"title": title})))
            .await;
        assert_eq!(res.status(), 201, "create {title}");
        // Where the new resource is (RFC 9110 §15.3.2).
        let location = res.headers().get("location").cloned();
        let created: Value = res.json().await.unwrap();
        assert_eq!(
            location.as_ref().map(|l| l.to_str().unwrap()),
            Some(format!("/todos/{}", created["id"]).as_str())
        );
        created
    }
}

/// Status and JSON body.
pub async fn parts(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
